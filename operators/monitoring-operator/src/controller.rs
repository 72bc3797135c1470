//! Watch the configuration and the stack, install the Prometheus Operator's CRDs, make the
//! stack what the configuration says, report in the `monitoring` ClusterOperator.
//!
//! Two controllers: `crds` keeps the CRDs installed (the stack's caches of monitoring.coreos.com
//! kinds can only list once they exist), and `monitoring` reconciles the one ClusterOperator,
//! which owns every object of the stack: a change of the ConfigMap or of any child (deleted,
//! edited, its status moving) reconciles it.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{ConfigMap, Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use operon_runtime::controller::{self, Action, Controller};
use operon_runtime::events::Events;
use operon_runtime::manager::Manager;
use operon_runtime::owned::{self, Children};
use serde_json::json;

use crate::api::{
    ClusterOperator, ClusterOperatorCondition, ClusterOperatorSpec, ClusterOperatorStatus,
    OperandVersion, RelatedObject,
};
use crate::config::{CONFIG_KEY, CONFIG_MAP, Config, Invalid};
use crate::crds;
use crate::resources::{Alertmanager, Prometheus, PrometheusRule, ServiceMonitor};
use crate::stack::{self, Images, MANAGED_BY_SELECTOR, Stack};

/// The ClusterOperator monitoring-operator reports in (and which owns the stack).
pub const CLUSTER_OPERATOR: &str = "monitoring";
/// Annotation on the ClusterOperator holding the last configuration that was valid: what the
/// stack keeps running while the ConfigMap is invalid, across restarts.
pub const LAST_GOOD: &str = "monitoring.operon.dev/last-good-config";
/// How often everything is checked again without a change.
const RESYNC: Duration = Duration::from_secs(600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Crds(#[from] crds::Error),
    #[error(transparent)]
    Children(#[from] owned::Error),
    #[error("building the stack: {0}")]
    Stack(#[from] serde_json::Error),
}

impl operon_runtime::controller::Cause for Error {
    /// The `cause` label of `operon_reconcile_errors_by_cause_total`.
    fn cause(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Crds(_) => "crds",
            Error::Children(_) => "children",
            Error::Stack(_) => "stack",
        }
    }
}

/// How the operator runs.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The stack's namespace: the operator's own (`openshift-monitoring`).
    pub namespace: String,
    /// Where the Prometheus Operator's CRDs are.
    pub crds_dir: PathBuf,
    pub images: Images,
    /// Prometheus's scrape and rule evaluation interval.
    pub interval: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            namespace: crate::deploy::NAMESPACE.into(),
            crds_dir: PathBuf::from("/crds"),
            images: Images::default(),
            interval: "30s".into(),
        }
    }
}

/// The stack's children, one cache per kind, limited to the stack's namespace (namespaced
/// kinds) and to objects labelled as the stack's.
struct Kids {
    service_accounts: Children<ServiceAccount>,
    services: Children<Service>,
    deployments: Children<Deployment>,
    daemon_sets: Children<DaemonSet>,
    roles: Children<Role>,
    role_bindings: Children<RoleBinding>,
    cluster_roles: Children<ClusterRole>,
    cluster_role_bindings: Children<ClusterRoleBinding>,
    service_monitors: Children<ServiceMonitor>,
    prometheus_rules: Children<PrometheusRule>,
    prometheuses: Children<Prometheus>,
    alertmanagers: Children<Alertmanager>,
}

struct Context {
    client: Client,
    settings: Settings,
    events: Events,
    config_maps: Store<ConfigMap>,
    kids: Kids,
}

struct CrdContext {
    client: Client,
    field_manager: String,
    crds: Vec<CustomResourceDefinition>,
    installed: Store<CustomResourceDefinition>,
}

fn selected() -> watcher::Config {
    watcher::Config::default().labels(MANAGED_BY_SELECTOR)
}

/// Registers both controllers. Fails when the CRDs can't be read.
pub fn register(manager: &mut Manager, settings: &Settings) -> Result<(), crds::Error> {
    let client = manager.client();
    let ns = settings.namespace.clone();

    // The CRDs: every change of one of ours (deleted, edited) checks them all.
    let crds = crds::load(&settings.crds_dir)?;
    let installed = manager.reflect(
        Api::<CustomResourceDefinition>::all(client.clone()),
        selected(),
        controller::trim_managed_fields,
    );
    let anchor = ObjectRef::new(&crds[0].name_any());
    let crd_ctx = Arc::new(CrdContext {
        client: client.clone(),
        field_manager: manager.name().to_owned(),
        crds,
        installed: installed.store.clone(),
    });
    let crd_controller = Controller::new("crds", installed).always(anchor);
    manager.add_keyed(crd_controller, crd_ctx, reconcile_crds);

    // The stack.
    let operators = manager.reflect(
        Api::<ClusterOperator>::all(client.clone()),
        watcher::Config::default().fields(&format!("metadata.name={CLUSTER_OPERATOR}")),
        controller::trim_managed_fields,
    );
    let config_maps = manager.reflect(
        Api::<ConfigMap>::namespaced(client.clone(), &ns),
        watcher::Config::default().fields(&format!("metadata.name={CONFIG_MAP}")),
        controller::trim_managed_fields,
    );
    let config_store = config_maps.store.clone();
    let key = || ObjectRef::<ClusterOperator>::new(CLUSTER_OPERATOR);
    let mut controller = Controller::new("monitoring", operators)
        .always(key())
        .watches(config_maps, move |_: ConfigMap| Some(key()));

    macro_rules! kid {
        ($kind:ty, namespaced) => {{
            let (children, watch) = Children::<$kind>::watching(
                manager,
                Api::namespaced(client.clone(), &ns),
                selected(),
            );
            controller = controller.owns(watch);
            children.restoring_edits()
        }};
        ($kind:ty, cluster) => {{
            let (children, watch) =
                Children::<$kind>::watching(manager, Api::all(client.clone()), selected());
            controller = controller.owns(watch);
            children.restoring_edits()
        }};
    }
    let kids = Kids {
        service_accounts: kid!(ServiceAccount, namespaced),
        services: kid!(Service, namespaced),
        deployments: kid!(Deployment, namespaced),
        daemon_sets: kid!(DaemonSet, namespaced),
        roles: kid!(Role, namespaced),
        role_bindings: kid!(RoleBinding, namespaced),
        cluster_roles: kid!(ClusterRole, cluster),
        cluster_role_bindings: kid!(ClusterRoleBinding, cluster),
        service_monitors: kid!(ServiceMonitor, namespaced),
        prometheus_rules: kid!(PrometheusRule, namespaced),
        prometheuses: kid!(Prometheus, namespaced),
        alertmanagers: kid!(Alertmanager, namespaced),
    };
    let ctx = Arc::new(Context {
        client,
        settings: settings.clone(),
        events: manager.events(),
        config_maps: config_store,
        kids,
    });
    manager.add_keyed(controller, ctx, reconcile);
    Ok(())
}

async fn reconcile_crds(
    _key: ObjectRef<CustomResourceDefinition>,
    _obj: Option<Arc<CustomResourceDefinition>>,
    ctx: Arc<CrdContext>,
) -> Result<Action, Error> {
    let outcome = crds::ensure(&ctx.client, &ctx.field_manager, &ctx.crds, |name| {
        ctx.installed.get(&ObjectRef::new(name))
    })
    .await?;
    for name in &outcome.written {
        tracing::info!(crd = %name, "installed the Prometheus Operator's CRD");
    }
    for name in &outcome.foreign {
        tracing::warn!(crd = %name, "CRD exists and is not monitoring-operator's: used as it is");
    }
    Ok(Action::requeue(RESYNC))
}

/// What the ConfigMap says, and the configuration the stack runs with.
struct Configured {
    running: Config,
    problem: Option<Invalid>,
}

fn read_config(cm: Option<&ConfigMap>, last_good: Option<Config>) -> Configured {
    let parsed = match cm {
        None => Ok(Config::default()),
        Some(cm) => match cm.data.as_ref().and_then(|d| d.get(CONFIG_KEY)) {
            Some(text) => Config::parse(text),
            None => Err(Invalid {
                key: CONFIG_KEY.into(),
                message: format!("ConfigMap {CONFIG_MAP} has no key {CONFIG_KEY}"),
            }),
        },
    };
    match parsed {
        Ok(config) => Configured {
            running: config,
            problem: None,
        },
        Err(invalid) => Configured {
            running: last_good.unwrap_or_default(),
            problem: Some(invalid),
        },
    }
}

async fn reconcile(
    _key: ObjectRef<ClusterOperator>,
    found: Option<Arc<ClusterOperator>>,
    ctx: Arc<Context>,
) -> Result<Action, Error> {
    let api: Api<ClusterOperator> = Api::all(ctx.client.clone());
    let owner = match found {
        Some(co) => co,
        None => Arc::new(create_cluster_operator(&api).await?),
    };
    // Only a valid configuration: anyone who may edit the ClusterOperator may write this.
    let last_good = owner
        .annotations()
        .get(LAST_GOOD)
        .and_then(|text| Config::from_recorded(text));
    let cm_key = ObjectRef::new(CONFIG_MAP).within(&ctx.settings.namespace);
    let configured = read_config(ctx.config_maps.get(&cm_key).as_deref(), last_good.clone());
    if configured.problem.is_none() && last_good.as_ref() != Some(&configured.running) {
        let text = serde_json::to_string(&configured.running)?;
        let patch = json!({ "metadata": { "annotations": { LAST_GOOD: text } } });
        api.patch(
            CLUSTER_OPERATOR,
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    }

    let stack = stack::desired(
        &configured.running,
        &stack::Settings {
            namespace: ctx.settings.namespace.clone(),
            images: ctx.settings.images.clone(),
            interval: ctx.settings.interval.clone(),
        },
    )?;
    let outcome = apply(&ctx.kids, owner.as_ref(), stack).await?;
    for what in &outcome.applied {
        tracing::info!(child = %what, "applied");
    }
    for what in &outcome.pruned {
        tracing::info!(child = %what, "removed: no longer part of the stack");
    }

    let available = availability(&ctx);
    let status = status(&owner, &configured, &outcome, &available, &ctx.settings);
    let old = owner.status.clone().unwrap_or_default();
    if let Some(invalid) = &configured.problem
        && old.condition("Degraded").and_then(|c| c.message.as_deref())
            != status
                .condition("Degraded")
                .and_then(|c| c.message.as_deref())
    {
        // Events fold into a series by reason and action, keeping the first note: the key in
        // the action makes each invalid key an Event of its own.
        ctx.events
            .warning(
                owner.as_ref(),
                "InvalidConfiguration",
                &format!("Validate {}", invalid.key),
                format!("{CONFIG_MAP} {invalid}; the stack keeps its last valid configuration"),
            )
            .await;
    }
    if !outcome.conflicts.is_empty()
        && old.condition("Degraded").and_then(|c| c.reason.as_deref()) != Some("ForeignObjects")
    {
        ctx.events
            .warning(
                owner.as_ref(),
                "ForeignObjects",
                "Install",
                format!(
                    "not managed by monitoring-operator, left alone: {}",
                    outcome.conflicts.join(", ")
                ),
            )
            .await;
    }
    if same_status(&old, &status) {
        return Ok(requeue(&available));
    }
    api.patch_status(
        CLUSTER_OPERATOR,
        &PatchParams::default(),
        &Patch::Merge(json!({ "status": status })),
    )
    .await?;
    Ok(requeue(&available))
}

fn requeue(available: &Available) -> Action {
    if available.missing.is_empty() {
        Action::requeue(RESYNC)
    } else {
        // Pods starting: their status reaches us through the children's caches too, but a
        // Prometheus StatefulSet's readiness only shows on the Prometheus object eventually.
        Action::requeue(Duration::from_secs(15))
    }
}

async fn create_cluster_operator(api: &Api<ClusterOperator>) -> Result<ClusterOperator, Error> {
    let co = ClusterOperator {
        metadata: ObjectMeta {
            name: Some(CLUSTER_OPERATOR.into()),
            ..Default::default()
        },
        spec: ClusterOperatorSpec {},
        status: None,
    };
    match api.create(&PostParams::default(), &co).await {
        Ok(created) => Ok(created),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(api.get(CLUSTER_OPERATOR).await?),
        Err(e) => Err(e.into()),
    }
}

async fn apply(
    kids: &Kids,
    owner: &ClusterOperator,
    stack: Stack,
) -> Result<owned::Outcome, Error> {
    let mut outcome = owned::Outcome::default();
    // Accounts and RBAC before the workloads that use them.
    outcome.merge(
        kids.service_accounts
            .reconcile(owner, stack.service_accounts)
            .await?,
    );
    outcome.merge(
        kids.cluster_roles
            .reconcile(owner, stack.cluster_roles)
            .await?,
    );
    outcome.merge(
        kids.cluster_role_bindings
            .reconcile(owner, stack.cluster_role_bindings)
            .await?,
    );
    outcome.merge(kids.roles.reconcile(owner, stack.roles).await?);
    outcome.merge(
        kids.role_bindings
            .reconcile(owner, stack.role_bindings)
            .await?,
    );
    outcome.merge(kids.services.reconcile(owner, stack.services).await?);
    outcome.merge(kids.deployments.reconcile(owner, stack.deployments).await?);
    outcome.merge(kids.daemon_sets.reconcile(owner, stack.daemon_sets).await?);
    outcome.merge(
        kids.prometheuses
            .reconcile(owner, stack.prometheuses)
            .await?,
    );
    outcome.merge(
        kids.alertmanagers
            .reconcile(owner, stack.alertmanagers)
            .await?,
    );
    outcome.merge(
        kids.service_monitors
            .reconcile(owner, stack.service_monitors)
            .await?,
    );
    outcome.merge(
        kids.prometheus_rules
            .reconcile(owner, stack.prometheus_rules)
            .await?,
    );
    Ok(outcome)
}

/// Which components are not serving yet.
struct Available {
    missing: Vec<String>,
}

fn replicas_ready(status: Option<&serde_json::Value>) -> bool {
    status
        .and_then(|s| s.get("availableReplicas"))
        .and_then(serde_json::Value::as_i64)
        .is_some_and(|n| n > 0)
}

fn availability(ctx: &Context) -> Available {
    let ns = &ctx.settings.namespace;
    let mut missing = Vec::new();
    for name in ["prometheus-operator", "kube-state-metrics"] {
        let ready = ctx
            .kids
            .deployments
            .store()
            .get(&ObjectRef::new(name).within(ns))
            .and_then(|d| d.status.as_ref()?.available_replicas)
            .is_some_and(|n| n > 0);
        if !ready {
            missing.push(format!("Deployment {name}"));
        }
    }
    let ne_ready = ctx
        .kids
        .daemon_sets
        .store()
        .get(&ObjectRef::new("node-exporter").within(ns))
        .and_then(|d| d.status.as_ref().map(|s| s.number_available.unwrap_or(0)))
        .is_some_and(|n| n > 0);
    if !ne_ready {
        missing.push("DaemonSet node-exporter".into());
    }
    for p in ctx.kids.prometheuses.store().state() {
        if !replicas_ready(p.status.as_ref()) {
            missing.push(format!("Prometheus {}", p.name_any()));
        }
    }
    for a in ctx.kids.alertmanagers.store().state() {
        if !replicas_ready(a.status.as_ref()) {
            missing.push(format!("Alertmanager {}", a.name_any()));
        }
    }
    Available { missing }
}

fn condition(type_: &str, status: bool, reason: &str, message: String) -> ClusterOperatorCondition {
    ClusterOperatorCondition {
        type_: type_.into(),
        status: if status { "True" } else { "False" }.into(),
        last_transition_time: None,
        reason: Some(reason.into()),
        message: Some(message),
    }
}

fn status(
    owner: &ClusterOperator,
    configured: &Configured,
    outcome: &owned::Outcome,
    available: &Available,
    settings: &Settings,
) -> ClusterOperatorStatus {
    let old = owner.status.clone().unwrap_or_default();
    let mut conditions = vec![
        if available.missing.is_empty() {
            condition(
                "Available",
                true,
                "AsExpected",
                "the monitoring stack is serving".into(),
            )
        } else {
            condition(
                "Available",
                false,
                "Starting",
                format!("not available yet: {}", available.missing.join(", ")),
            )
        },
        if !outcome.applied.is_empty() || !available.missing.is_empty() {
            condition(
                "Progressing",
                true,
                "RollingOut",
                if outcome.applied.is_empty() {
                    "waiting for the stack's Pods".into()
                } else {
                    format!("applied {} object(s)", outcome.applied.len())
                },
            )
        } else {
            condition(
                "Progressing",
                false,
                "AsExpected",
                "the stack is as configured".into(),
            )
        },
        match (&configured.problem, outcome.conflicts.is_empty()) {
            (Some(invalid), _) => condition(
                "Degraded",
                true,
                "InvalidConfiguration",
                format!(
                    "{CONFIG_MAP}: {invalid}; the stack keeps running with the last valid \
                     configuration"
                ),
            ),
            (None, false) => condition(
                "Degraded",
                true,
                "ForeignObjects",
                format!(
                    "objects of the stack's names exist and are not managed by \
                     monitoring-operator, so they are left alone: {}",
                    outcome.conflicts.join(", ")
                ),
            ),
            (None, true) => condition("Degraded", false, "AsExpected", "".into()),
        },
        condition("Upgradeable", true, "AsExpected", "".into()),
    ];
    let now = Timestamp::now().to_string();
    for c in &mut conditions {
        c.last_transition_time = match old.condition(&c.type_) {
            Some(prev) if prev.status == c.status => prev.last_transition_time.clone(),
            _ => Some(now.clone()),
        };
    }
    let ns = &settings.namespace;
    let related =
        |group: &str, resource: &str, namespace: Option<&str>, name: &str| RelatedObject {
            group: group.into(),
            resource: resource.into(),
            namespace: namespace.map(Into::into),
            name: name.into(),
        };
    ClusterOperatorStatus {
        conditions,
        related_objects: vec![
            related("", "namespaces", None, ns),
            related("", "configmaps", Some(ns), CONFIG_MAP),
            related("monitoring.coreos.com", "prometheuses", Some(ns), "k8s"),
            related("monitoring.coreos.com", "alertmanagers", Some(ns), "main"),
            related("apps", "deployments", Some(ns), "prometheus-operator"),
        ],
        versions: vec![
            OperandVersion {
                name: "operator".into(),
                version: env!("CARGO_PKG_VERSION").into(),
            },
            OperandVersion {
                name: "prometheus".into(),
                version: settings.images.prometheus_version.clone(),
            },
            OperandVersion {
                name: "alertmanager".into(),
                version: settings.images.alertmanager_version.clone(),
            },
            OperandVersion {
                name: "prometheus-operator".into(),
                version: operon_assets::PROMETHEUS_OPERATOR_VERSION.into(),
            },
        ],
    }
}

/// Equal but for transition times (which only move with a status change anyway).
fn same_status(a: &ClusterOperatorStatus, b: &ClusterOperatorStatus) -> bool {
    let strip = |s: &ClusterOperatorStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_transition_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    fn cm(text: Option<&str>) -> ConfigMap {
        ConfigMap {
            data: text.map(|t| BTreeMap::from([(CONFIG_KEY.to_string(), t.to_string())])),
            ..Default::default()
        }
    }

    #[test]
    fn an_invalid_configuration_keeps_the_last_good_one() -> Result<(), Invalid> {
        let good = Config::parse("prometheusK8s:\n  retention: 2d\n")?;
        let c = read_config(
            Some(&cm(Some("prometheusK8s:\n  retention: soon\n"))),
            Some(good.clone()),
        );
        assert_eq!(c.running, good);
        assert_eq!(
            c.problem.map(|p| p.key).as_deref(),
            Some("prometheusK8s.retention")
        );
        let missing = read_config(Some(&cm(None)), None);
        assert_eq!(missing.problem.map(|p| p.key).as_deref(), Some(CONFIG_KEY));
        assert_eq!(missing.running, Config::default());
        let absent = read_config(None, Some(good));
        assert!(absent.problem.is_none());
        assert_eq!(absent.running, Config::default());
        Ok(())
    }

    #[test]
    fn a_recorded_configuration_counts_only_when_valid() {
        let good = Config::from_recorded(r#"{"prometheusK8s":{"replicas":3}}"#);
        assert_eq!(
            good.and_then(|c| c.prometheus_k8s).and_then(|p| p.replicas),
            Some(3)
        );
        for bad in [
            r#"{"prometheusK8s":{"replicas":100000}}"#,
            r#"{"prometheusK8s":{"retention":"soon"}}"#,
            r#"{"enableUserWorkload":true}"#,
            r#"{"unknown":1}"#,
            "not json",
        ] {
            assert_eq!(Config::from_recorded(bad), None, "{bad}");
        }
    }
}
