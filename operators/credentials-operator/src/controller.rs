//! The CredentialsRequest controller (OpenShift's cloud-credential-operator loop, AWS).
//!
//! Triggers: request changes (generation, deletion, finalizers — not the operator's own status
//! writes), events of the Secrets it wrote (label-selected, mapped by their annotation), the
//! appearance of a missing target namespace, any change of the root credentials Secret (every
//! request), and a periodic re-sync.
//!
//! Crash safety: the IAM user and policy names are written to `status.providerStatus` before
//! either is created, and creation is idempotent by name, so a restart at any point adopts
//! what an earlier attempt created instead of minting a second identity.

use operon_manifests::Rule;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use futures::{StreamExt, future};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use operon_runtime::admin::Readiness;
use operon_runtime::controller::{self, Action, Controller, Gates, ReadyWhenSynced};
use operon_runtime::events::Events;
use operon_runtime::finalizers;
use operon_runtime::metrics::ControllerMetrics;
use operon_runtime::operator::Leading;
use parking_lot::Mutex;
use serde_json::json;

use crate::api::{
    AWS_PROVIDER_STATUS, AwsProviderStatus, CredentialsRequest, CredentialsRequestCondition,
    CredentialsRequestStatus, PROVIDER_API_VERSION, condition,
};
use crate::iam::{self, CloudError, Endpoint, Iam};
use crate::mint::{self, FINALIZER};

/// Exactly the API calls this controller makes, for its ClusterRole: requests watched, their
/// finalizer patched and status server-side applied; Secrets watched (its own, by label; the root Secret by
/// name), read, created, replaced and deleted (only those annotated as written for a request —
/// they live in the requests' target namespaces, so no ownerReference can clean them up);
/// Namespaces watched (metadata only) for missing target namespaces.
pub fn rules() -> Vec<Rule> {
    vec![
        Rule::new(
            "cloudcredential.openshift.io",
            &["credentialsrequests"],
            &["list", "watch", "patch"],
        ),
        Rule::new(
            "cloudcredential.openshift.io",
            &["credentialsrequests/status"],
            &["patch"],
        ),
        Rule::new(
            "",
            &["secrets"],
            &["get", "list", "watch", "create", "update", "delete"],
        ),
        Rule::new("", &["namespaces"], &["list", "watch"]),
    ]
}

/// Field manager and Event reporter.
pub const MANAGER: &str = "credentials-operator";
/// Longest requeue (the re-sync period is usually shorter).
const MAX_REQUEUE: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Cloud(#[from] CloudError),
    #[error("root credentials: {0}")]
    RootCredentials(String),
    #[error("{0}")]
    ForeignSecret(String),
    #[error("root creds are not sufficient: they may not {0:?}")]
    InsufficientRoot(Vec<String>),
    #[error("error validating whether root creds are good enough: {0}")]
    Simulation(CloudError),
    #[error("{0}")]
    NeedsRoot(String),
    #[error("{0} has no namespace")]
    NoNamespace(String),
}

impl operon_runtime::reconciler::Cause for Error {
    /// Label for metrics (`controller_runtime_reconcile_errors_total` by cause).
    fn cause(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Cloud(_) => "cloud",
            Error::RootCredentials(_) => "root_credentials",
            Error::ForeignSecret(_) => "foreign_secret",
            Error::InsufficientRoot(_) => "insufficient_root",
            Error::Simulation(_) => "simulation",
            Error::NeedsRoot(_) => "needs_root",
            Error::NoNamespace(_) => "no_namespace",
        }
    }
}

/// How requests are satisfied (OpenShift's credentials modes).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// A new IAM user per request, with exactly the requested permissions.
    #[default]
    Mint,
    /// The root credentials are copied, after checking they allow the requested actions.
    Passthrough,
    /// Nothing: an administrator provides the Secrets.
    Manual,
}

/// How the operator runs.
#[derive(Clone)]
pub struct Settings {
    /// Namespaces whose requests are served; empty means all.
    pub namespaces: Vec<String>,
    /// `--mode`: overrides the root Secret's [`mint::MODE_ANNOTATION`]. `None`: the annotation
    /// decides, mint when it is absent. An explicit passthrough trusts the root credentials
    /// (no simulation), as OpenShift's explicit passthrough mode does.
    pub mode: Option<Mode>,
    /// Tags of every minted user besides `kubernetes.io/cluster/<cluster_id>=owned` (OpenShift's
    /// user-defined resource tags); repaired on every sync.
    pub resource_tags: Vec<(String, String)>,
    /// The root credentials Secret (`aws_access_key_id`, `aws_secret_access_key`).
    pub root_secret_namespace: String,
    pub root_secret_name: String,
    /// Cluster identifier: the prefix of user names and the `kubernetes.io/cluster/<id>` tag.
    pub cluster_id: String,
    /// IAM endpoint and region overrides (the SDK's environment variables otherwise).
    pub endpoint: Endpoint,
    /// A request synced less than this ago, unchanged, is not synced again.
    pub resync_period: Duration,
    /// Replace access keys older than this.
    pub key_rotation: Option<Duration>,
    pub concurrency: u16,
    pub instance: Option<String>,
    pub metrics: Arc<ControllerMetrics>,
    pub readiness: Option<Readiness>,
    /// Reconcile only once this resolves (leadership); the caches fill before. `None`: at once.
    pub leading: Option<Leading>,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            namespaces: Vec::new(),
            mode: None,
            resource_tags: Vec::new(),
            root_secret_namespace: "kube-system".into(),
            root_secret_name: "aws-creds".into(),
            cluster_id: "operon".into(),
            endpoint: Endpoint::default(),
            resync_period: Duration::from_secs(3600),
            key_rotation: None,
            concurrency: 10,
            instance: None,
            metrics: Arc::default(),
            readiness: None,
            leading: None,
        }
    }
}

struct Context {
    client: Client,
    settings: Settings,
    sdk: aws_config::SdkConfig,
    secrets: Store<Secret>,
    namespaces: Store<PartialObjectMeta<Namespace>>,
    events: Events,
    /// IAM client for the root credentials, by the root Secret's resourceVersion.
    root: Mutex<Option<(String, Iam)>>,
}

fn request_fingerprint(cr: &CredentialsRequest) -> u64 {
    let mut h = DefaultHasher::new();
    cr.metadata.generation.hash(&mut h);
    cr.metadata.deletion_timestamp.is_some().hash(&mut h);
    cr.finalizers().hash(&mut h);
    h.finish()
}

fn now() -> Time {
    Time(Timestamp::now())
}

/// OpenShift's condition rules: a True condition is added or updated; a False one only
/// updates an existing entry. `lastTransitionTime` moves when the status does.
pub fn set_condition(
    conditions: &mut Vec<CredentialsRequestCondition>,
    type_: &str,
    status: bool,
    reason: &str,
    message: &str,
) {
    let status_str = if status { "True" } else { "False" };
    match conditions.iter_mut().find(|c| c.type_ == type_) {
        Some(c) => {
            if c.status != status_str {
                c.last_transition_time = Some(now());
            }
            c.status = status_str.to_owned();
            c.reason = Some(reason.to_owned());
            c.message = Some(message.to_owned());
            c.last_probe_time = Some(now());
        }
        None if status => conditions.push(CredentialsRequestCondition {
            type_: type_.to_owned(),
            status: status_str.to_owned(),
            last_probe_time: Some(now()),
            last_transition_time: Some(now()),
            reason: Some(reason.to_owned()),
            message: Some(message.to_owned()),
        }),
        None => {}
    }
}

fn is_condition_true(status: &CredentialsRequestStatus, type_: &str) -> bool {
    status
        .conditions
        .iter()
        .any(|c| c.type_ == type_ && c.status == "True")
}

/// Equal but for the probe and transition times.
fn same_status(a: &CredentialsRequestStatus, b: &CredentialsRequestStatus) -> bool {
    let strip = |s: &CredentialsRequestStatus| {
        let mut s = s.clone();
        for c in &mut s.conditions {
            c.last_probe_time = None;
            c.last_transition_time = None;
        }
        s
    };
    strip(a) == strip(b)
}

/// Runs the controller until `shutdown` resolves; in-flight reconciles finish first. One
/// controller per served namespace (or one for all), so caches and watches stay in scope.
pub async fn run(
    client: Client,
    settings: Settings,
    shutdown: impl std::future::Future<Output = ()> + Send + Sync + 'static,
) {
    let sdk = iam::load_sdk_config().await;
    let scopes: Vec<Option<String>> = if settings.namespaces.is_empty() {
        vec![None]
    } else {
        settings.namespaces.iter().cloned().map(Some).collect()
    };
    let shutdown = future::FutureExt::shared(Box::pin(shutdown));
    let ready = ReadyWhenSynced::new(settings.readiness.clone(), scopes.len());
    let controllers = scopes.into_iter().map(|scope| {
        let requests_api: Api<CredentialsRequest> = match scope.as_deref() {
            Some(ns) => Api::namespaced(client.clone(), ns),
            None => Api::all(client.clone()),
        };
        // Requests by generation, deletion and finalizers (not the operator's status writes).
        let requests = controller::reflect(
            requests_api,
            watcher::Config::default(),
            controller::trim_managed_fields,
        );
        // Only the Secrets this operator wrote, mapped back by their annotation.
        let secrets = controller::reflect(
            Api::<Secret>::all(client.clone()),
            watcher::Config::default().labels(&format!("{}=true", mint::SECRET_LABEL)),
            controller::trim_managed_fields,
        );
        // A missing target namespace appearing wakes the requests waiting for it.
        let namespaces = controller::reflect(
            Api::<PartialObjectMeta<Namespace>>::all(client.clone()),
            watcher::Config::default(),
            |_: &mut PartialObjectMeta<Namespace>| {},
        );
        // Any change of the root credentials: every request.
        let root_changes = kube::runtime::watcher(
            Api::<Secret>::namespaced(client.clone(), &settings.root_secret_namespace),
            watcher::Config::default()
                .fields(&format!("metadata.name={}", settings.root_secret_name)),
        )
        .default_backoff()
        .filter_map(|event| {
            future::ready(matches!(event, Ok(watcher::Event::Apply(_) | watcher::Event::Delete(_))).then_some(()))
        });
        let secret_mapper = {
            let requests = requests.store.clone();
            move |secret: Secret| {
                let key = secret.annotations().get(mint::SECRET_ANNOTATION)?.clone();
                let (ns, name) = key.split_once('/')?;
                let r = ObjectRef::<CredentialsRequest>::new(name).within(ns);
                requests.get(&r).map(|_| r)
            }
        };
        let namespace_mapper = {
            let requests = requests.store.clone();
            move |ns: PartialObjectMeta<Namespace>| {
                let name = ns.name_any();
                requests
                    .state()
                    .into_iter()
                    .filter(|cr| cr.spec.secret_ref.namespace == name)
                    .map(|cr| ObjectRef::from_obj(cr.as_ref()))
                    .collect::<Vec<_>>()
            }
        };
        let ctx = Arc::new(Context {
            client: client.clone(),
            events: Events::new(client.clone(), MANAGER, settings.instance.clone()),
            settings: settings.clone(),
            sdk: sdk.clone(),
            secrets: secrets.store.clone(),
            namespaces: namespaces.store.clone(),
            root: Mutex::new(None),
        });
        // Ready once every scope's caches have their initial lists.
        let gates = ready.count(Gates::new(shutdown.clone()).leading_opt(settings.leading.clone()));
        tracing::info!(mode = ?settings.mode, namespace = scope.as_deref().unwrap_or("<all>"), "starting CredentialsRequest controller");
        Controller::new("credentialsrequest", requests, settings.metrics.clone())
            .filter(request_fingerprint)
            .watches(secrets.changes, secret_mapper)
            .waits_for(secrets.synced)
            .watches(namespaces.changes, namespace_mapper)
            .waits_for(namespaces.synced)
            .reconcile_all_on(root_changes)
            .workers(settings.concurrency.into())
            .run(ctx, reconcile, gates)
    });
    future::join_all(controllers).await;
}

async fn reconcile(cr: Arc<CredentialsRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    ctx.reconcile(&cr).await
}

/// Root credentials: resourceVersion, keys, and the mode annotation.
struct RootCredentials {
    resource_version: String,
    access_key_id: String,
    secret_access_key: String,
    /// [`mint::MODE_ANNOTATION`], when set.
    mode: Option<String>,
}

/// What to do with a request, from `--mode` or the root Secret's annotation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Plan {
    Mint,
    /// `simulate`: check the root credentials allow the requested actions first (passthrough
    /// chosen by the annotation; an explicit `--mode passthrough` trusts them).
    Passthrough {
        simulate: bool,
    },
}

/// The failure conditions, cleared (set False where present) when a request is ignored.
const FAILURE_CONDITIONS: [&str; 4] = [
    condition::PROVISION_FAILURE,
    condition::DEPROVISION_FAILURE,
    condition::INSUFFICIENT_CLOUD_CREDS,
    condition::MISSING_TARGET_NAMESPACE,
];

impl Context {
    fn api(&self, cr: &CredentialsRequest) -> Result<Api<CredentialsRequest>, Error> {
        let ns = cr
            .namespace()
            .ok_or_else(|| Error::NoNamespace(cr.name_any()))?;
        Ok(Api::namespaced(self.client.clone(), &ns))
    }

    async fn reconcile(&self, cr: &CredentialsRequest) -> Result<Action, Error> {
        if cr.metadata.deletion_timestamp.is_some() {
            return self.finalize(cr).await;
        }
        let mut status = cr.status.clone().unwrap_or_default();
        let Some(statements) = cr.aws_statements() else {
            let message = format!(
                "providerSpec kind {:?} is not AWSProviderSpec: this operator provisions AWS credentials only",
                cr.spec.provider_spec.kind
            );
            set_condition(
                &mut status.conditions,
                condition::IGNORED,
                true,
                "InfrastructureMismatch",
                &message,
            );
            // An ignored request is nobody's failure (OpenShift clears them the same way).
            for type_ in FAILURE_CONDITIONS {
                set_condition(
                    &mut status.conditions,
                    type_,
                    false,
                    "InfrastructureMismatch",
                    &message,
                );
            }
            self.write_status(cr, &status).await?;
            return Ok(Action::await_change());
        };
        let sts_role = cr.spec.provider_spec.sts_iam_role_arn.clone();
        if self.settings.mode == Some(Mode::Manual) && sts_role.is_none() {
            // An administrator provides the Secret.
            return Ok(Action::await_change());
        }
        set_condition(
            &mut status.conditions,
            condition::IGNORED,
            false,
            "InfrastructureMatch",
            "",
        );

        // The finalizer first: no cloud call before the identity can be cleaned up.
        let api = self.api(cr)?;
        let cr = match finalizers::add(&api, cr, FINALIZER).await? {
            Some(updated) => updated,
            None => cr.clone(),
        };
        let cr = &cr;

        let target_ns = &cr.spec.secret_ref.namespace;
        if self.namespaces.get(&ObjectRef::new(target_ns)).is_none() {
            set_condition(
                &mut status.conditions,
                condition::MISSING_TARGET_NAMESPACE,
                true,
                "NamespaceMissing",
                &format!(
                    "target namespace {target_ns} does not exist; the credentials are provisioned once it does"
                ),
            );
            self.write_status(cr, &status).await?;
            return Ok(Action::await_change());
        }
        set_condition(
            &mut status.conditions,
            condition::MISSING_TARGET_NAMESPACE,
            false,
            "NamespaceExists",
            &format!("target namespace {target_ns} exists"),
        );

        if let Some(role) = sts_role.filter(|_| self.settings.mode == Some(Mode::Manual)) {
            // Short-lived credentials: no root credentials, no cloud call.
            let result = self.sts(cr, &role).await;
            let unchanged = status.provisioned
                && status.last_sync_generation == cr.metadata.generation.unwrap_or_default()
                && !is_condition_true(&status, condition::PROVISION_FAILURE);
            if matches!(result, Ok(false)) && unchanged {
                // Nothing written, nothing to record (a restart writes nothing).
                return Ok(Action::requeue(
                    self.settings.resync_period.min(MAX_REQUEUE),
                ));
            }
            return self.record(cr, status, result.map(|_| ()), None).await;
        }

        let root = match self.root_credentials().await {
            Ok(root) => root,
            Err(e) => return self.without_root(cr, status, statements, e).await,
        };
        let plan = match (self.settings.mode, root.mode.as_deref()) {
            (Some(Mode::Passthrough), _) => Plan::Passthrough { simulate: false },
            (Some(_), _) | (None, None | Some(mint::MODE_MINT)) => Plan::Mint,
            (None, Some(mint::MODE_PASSTHROUGH)) => Plan::Passthrough { simulate: true },
            (None, Some(mint::MODE_INSUFFICIENT)) => {
                // The administrator (or OpenShift's annotator) says these credentials can't
                // serve requests. Waits for the root Secret to change.
                let message = format!(
                    "cloud credentials insufficient to satisfy credentials request: Secret {}/{} is annotated {}={}",
                    self.settings.root_secret_namespace,
                    self.settings.root_secret_name,
                    mint::MODE_ANNOTATION,
                    mint::MODE_INSUFFICIENT
                );
                set_condition(
                    &mut status.conditions,
                    condition::INSUFFICIENT_CLOUD_CREDS,
                    true,
                    "CloudCredsInsufficient",
                    &message,
                );
                set_condition(
                    &mut status.conditions,
                    condition::PROVISION_FAILURE,
                    false,
                    "CredentialsProvisionSuccess",
                    "",
                );
                status.provisioned = false;
                self.write_status(cr, &status).await?;
                self.events
                    .warning(cr, "CloudCredsInsufficient", "Provision", message)
                    .await;
                return Ok(Action::await_change());
            }
            (None, Some(other)) => {
                let message = format!(
                    "unexpected value {other:?} of annotation {} on Secret {}/{}: use {}, {} or {}",
                    mint::MODE_ANNOTATION,
                    self.settings.root_secret_namespace,
                    self.settings.root_secret_name,
                    mint::MODE_MINT,
                    mint::MODE_PASSTHROUGH,
                    mint::MODE_INSUFFICIENT
                );
                set_condition(
                    &mut status.conditions,
                    condition::PROVISION_FAILURE,
                    true,
                    "CredentialsProvisionFailure",
                    &message,
                );
                status.provisioned = false;
                self.write_status(cr, &status).await?;
                self.events
                    .warning(cr, "CredentialsProvisionFailure", "Provision", message)
                    .await;
                return Ok(Action::await_change());
            }
        };
        if let Some(wait) = self.fresh(cr, &status, &root) {
            return Ok(Action::requeue(wait));
        }

        let result = match plan {
            Plan::Passthrough { simulate } => {
                self.passthrough(cr, statements, &root, simulate).await
            }
            Plan::Mint => self.mint(cr, &mut status, statements, &root).await,
        };
        self.record(cr, status, result, Some(&root)).await
    }

    /// Records the outcome of a sync in the status (and an Event on failure).
    async fn record(
        &self,
        cr: &CredentialsRequest,
        mut status: CredentialsRequestStatus,
        result: Result<(), Error>,
        root: Option<&RootCredentials>,
    ) -> Result<Action, Error> {
        match result {
            Ok(()) => {
                set_condition(
                    &mut status.conditions,
                    condition::PROVISION_FAILURE,
                    false,
                    "CredentialsProvisionSuccess",
                    "successfully granted credentials request",
                );
                set_condition(
                    &mut status.conditions,
                    condition::INSUFFICIENT_CLOUD_CREDS,
                    false,
                    "CloudCredsSufficient",
                    "",
                );
                status.provisioned = true;
                status.last_sync_timestamp = Some(now());
                status.last_sync_generation = cr.metadata.generation.unwrap_or_default();
                if let Some(root) = root {
                    status.last_sync_cloud_creds_secret_resource_version =
                        Some(root.resource_version.clone());
                }
                self.write_status(cr, &status).await?;
                Ok(Action::requeue(
                    self.settings.resync_period.min(MAX_REQUEUE),
                ))
            }
            Err(e) => {
                // Every failure to provision is CredentialsProvisionFailure, as in OpenShift
                // (InsufficientCloudCreds is the root Secret's `insufficient` annotation only).
                let reason = "CredentialsProvisionFailure";
                let message = iam::scrub(&format!("failed to grant creds: {e}"));
                set_condition(
                    &mut status.conditions,
                    condition::PROVISION_FAILURE,
                    true,
                    reason,
                    &message,
                );
                set_condition(
                    &mut status.conditions,
                    condition::INSUFFICIENT_CLOUD_CREDS,
                    false,
                    "CloudCredsSufficient",
                    "",
                );
                status.provisioned = false;
                self.write_status(cr, &status).await?;
                self.events.warning(cr, reason, "Provision", message).await;
                Err(e)
            }
        }
    }

    /// The root credentials are gone or unusable. OpenShift lets an administrator remove them
    /// after install in mint mode: a minted request stays healthy as long as nothing needs to
    /// change, which its own credentials tell ([`Self::check_with_minted`]); changing anything
    /// needs the root credentials back.
    async fn without_root(
        &self,
        cr: &CredentialsRequest,
        mut status: CredentialsRequestStatus,
        statements: &[crate::api::StatementEntry],
        missing: Error,
    ) -> Result<Action, Error> {
        let error = match self.check_with_minted(cr, &status, statements).await {
            Some(Ok(())) => {
                let note = format!(
                    "The root credentials are unavailable ({missing}); checked with the minted credentials: valid and up to date, so the root credentials are not needed until something changes"
                );
                set_condition(
                    &mut status.conditions,
                    condition::PROVISION_FAILURE,
                    false,
                    "CredentialsProvisionSuccess",
                    &note,
                );
                status.last_sync_timestamp = Some(now());
                self.write_status(cr, &status).await?;
                self.events
                    .normal(cr, "CheckedWithoutRootCredentials", "Check", note)
                    .await;
                return Ok(Action::requeue(
                    self.settings.resync_period.min(MAX_REQUEUE),
                ));
            }
            Some(Err(change)) => {
                Error::NeedsRoot(format!("{missing}; {change} needs the root credentials"))
            }
            None => missing,
        };
        self.record(cr, status, Err(error), None)
            .await
            .map(|_| Action::await_change())
    }

    /// Whether a minted request is still exactly as it should be, asked with its own
    /// credentials (they may read their own user: the policy grants `iam:GetUser` on it).
    /// `None` when it can't be told (not minted, not provisioned, no Secret); `Some(Err(what))`
    /// names what needs changing.
    async fn check_with_minted(
        &self,
        cr: &CredentialsRequest,
        status: &CredentialsRequestStatus,
        statements: &[crate::api::StatementEntry],
    ) -> Option<Result<(), String>> {
        if self.settings.mode.is_some_and(|m| m != Mode::Mint) || !status.provisioned {
            return None;
        }
        let user = cr.minted_user()?.to_owned();
        let secret_ref = &cr.spec.secret_ref;
        let secret = self
            .secrets
            .get(&ObjectRef::new(&secret_ref.name).within(&secret_ref.namespace))
            .filter(|s| mint::is_for(s, cr))?;
        let key_id = mint::secret_key_id(&secret)?;
        let secret_key = mint::secret_value(&secret, mint::SECRET_ACCESS_KEY)?;
        if status.last_sync_generation != cr.metadata.generation.unwrap_or_default() {
            return Some(Err("applying the changed spec".into()));
        }
        let minted = Iam::new(&self.sdk, &self.settings.endpoint, &key_id, &secret_key);
        let me = match minted.caller().await {
            Ok(me) => me,
            Err(e) => return Some(Err(format!("replacing the access key IAM refuses ({e})"))),
        };
        if me.name != user {
            return Some(Err(format!(
                "replacing the access key of another user ({})",
                me.name
            )));
        }
        let tags = self.user_tags();
        if let Some(tag) = tags.iter().find(|t| !me.tags.contains(t)) {
            return Some(Err(format!("tagging the user with {}={}", tag.0, tag.1)));
        }
        let document = mint::policy_document(statements, &me.arn);
        let recorded = secret.annotations().get(mint::POLICY_ANNOTATION);
        if !recorded.is_some_and(|r| mint::same_policy(r, &document)) {
            return Some(Err("putting the requested policy".into()));
        }
        Some(Ok(()))
    }

    /// The tags every minted user carries: the cluster's ownership tag, then the configured
    /// resource tags.
    fn user_tags(&self) -> Vec<(String, String)> {
        let mut tags = vec![(
            format!("kubernetes.io/cluster/{}", self.settings.cluster_id),
            "owned".to_owned(),
        )];
        tags.extend(self.settings.resource_tags.iter().cloned());
        tags
    }

    /// Manual mode with `stsIAMRoleARN`: the Secret holds a profile that assumes the role with
    /// the workload's service account token (no keys). Whether it had to be written.
    async fn sts(&self, cr: &CredentialsRequest, role: &str) -> Result<bool, Error> {
        let desired = mint::desired_sts_secret(cr, role);
        let what = format!("Wrote the profile assuming {role}");
        self.put_secret(cr, desired, "CredentialsWritten", &what)
            .await
    }

    /// Writes `desired` to the request's Secret unless it holds that data already, and says so
    /// in an Event (`<what> to Secret <ns>/<name>`). Whether it wrote.
    async fn put_secret(
        &self,
        cr: &CredentialsRequest,
        desired: Secret,
        reason: &str,
        what: &str,
    ) -> Result<bool, Error> {
        let existing = self.target_secret(cr).await?;
        if existing.as_ref().is_some_and(|s| s.data == desired.data) {
            return Ok(false);
        }
        self.write_secret(existing, desired).await?;
        let r = &cr.spec.secret_ref;
        let note = format!("{what} to Secret {}/{}", r.namespace, r.name);
        self.events.normal(cr, reason, "Provision", note).await;
        Ok(true)
    }

    /// `Some(wait)` when nothing changed since a recent successful sync (OpenShift's rule):
    /// same generation, synced within the re-sync period, same root credentials, the Secret
    /// present, no failure.
    fn fresh(
        &self,
        cr: &CredentialsRequest,
        status: &CredentialsRequestStatus,
        root: &RootCredentials,
    ) -> Option<Duration> {
        if !status.provisioned
            || status.last_sync_generation != cr.metadata.generation.unwrap_or_default()
            || status
                .last_sync_cloud_creds_secret_resource_version
                .as_deref()
                != Some(root.resource_version.as_str())
            || is_condition_true(status, condition::PROVISION_FAILURE)
            || is_condition_true(status, condition::INSUFFICIENT_CLOUD_CREDS)
        {
            return None;
        }
        let secret_ref = &cr.spec.secret_ref;
        let cached = self
            .secrets
            .get(&ObjectRef::new(&secret_ref.name).within(&secret_ref.namespace))?;
        if !mint::is_for(&cached, cr) || mint::secret_key_id(&cached).is_none() {
            return None;
        }
        let last = status.last_sync_timestamp.as_ref()?;
        let age = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .ok()?
            .checked_sub(Duration::from_secs(last.0.as_second().max(0) as u64))?;
        let key_due = self.settings.key_rotation.is_some_and(|p| age >= p);
        (age < self.settings.resync_period && !key_due).then(|| self.settings.resync_period - age)
    }

    async fn root_credentials(&self) -> Result<RootCredentials, Error> {
        let (ns, name) = (
            &self.settings.root_secret_namespace,
            &self.settings.root_secret_name,
        );
        let secret = Api::<Secret>::namespaced(self.client.clone(), ns)
            .get_opt(name)
            .await?
            .ok_or_else(|| Error::RootCredentials(format!("Secret {ns}/{name} not found")))?;
        let value = |key: &str| {
            secret
                .data
                .as_ref()
                .and_then(|d| d.get(key))
                .and_then(|b| std::str::from_utf8(&b.0).ok())
                .map(|s| s.trim().to_owned())
                .filter(|s| !s.is_empty())
                .ok_or_else(|| Error::RootCredentials(format!("Secret {ns}/{name} has no {key}")))
        };
        Ok(RootCredentials {
            resource_version: secret.resource_version().unwrap_or_default(),
            access_key_id: value(mint::ACCESS_KEY_ID)?,
            secret_access_key: value(mint::SECRET_ACCESS_KEY)?,
            mode: secret.annotations().get(mint::MODE_ANNOTATION).cloned(),
        })
    }

    fn iam(&self, root: &RootCredentials) -> Iam {
        let mut cached = self.root.lock();
        match cached.as_ref() {
            Some((rv, iam)) if *rv == root.resource_version => iam.clone(),
            _ => {
                let iam = Iam::new(
                    &self.sdk,
                    &self.settings.endpoint,
                    &root.access_key_id,
                    &root.secret_access_key,
                );
                *cached = Some((root.resource_version.clone(), iam.clone()));
                iam
            }
        }
    }

    async fn write_status(
        &self,
        cr: &CredentialsRequest,
        status: &CredentialsRequestStatus,
    ) -> Result<(), Error> {
        if cr.status.as_ref().is_some_and(|s| same_status(s, status)) {
            return Ok(());
        }
        let patch = json!({
            "apiVersion": CredentialsRequest::api_version(&()),
            "kind": CredentialsRequest::kind(&()),
            "status": status,
        });
        self.api(cr)?
            .patch_status(
                &cr.name_any(),
                &PatchParams::apply(MANAGER).force(),
                &Patch::Apply(&patch),
            )
            .await?;
        Ok(())
    }

    /// The target Secret, if it exists; an error if it exists and isn't ours.
    async fn target_secret(&self, cr: &CredentialsRequest) -> Result<Option<Secret>, Error> {
        let r = &cr.spec.secret_ref;
        let existing = Api::<Secret>::namespaced(self.client.clone(), &r.namespace)
            .get_opt(&r.name)
            .await?;
        match existing {
            Some(s) if !mint::is_for(&s, cr) => Err(Error::ForeignSecret(format!(
                "Secret {}/{} exists and was not written for this request; it is left untouched. \
                 Delete it, point secretRef at another name, or hand it over by annotating it \
                 {}={}",
                r.namespace,
                r.name,
                mint::SECRET_ANNOTATION,
                mint::request_key(cr)
            ))),
            other => Ok(other),
        }
    }

    /// Writes `desired` over `existing` (keeping the user's labels and annotations) or creates it.
    async fn write_secret(&self, existing: Option<Secret>, desired: Secret) -> Result<(), Error> {
        let r_ns = desired.metadata.namespace.clone().unwrap_or_default();
        let name = desired.metadata.name.clone().unwrap_or_default();
        let api = Api::<Secret>::namespaced(self.client.clone(), &r_ns);
        let pp = PostParams {
            field_manager: Some(MANAGER.to_owned()),
            ..PostParams::default()
        };
        match existing {
            None => {
                api.create(&pp, &desired).await?;
            }
            Some(mut s) => {
                s.metadata.managed_fields = None;
                s.labels_mut()
                    .extend(desired.metadata.labels.clone().unwrap_or_default());
                s.annotations_mut()
                    .extend(desired.metadata.annotations.clone().unwrap_or_default());
                s.type_ = desired.type_.clone();
                s.data = desired.data.clone();
                s.string_data = None;
                api.replace(&name, &pp, &s).await?;
            }
        }
        Ok(())
    }

    async fn mint(
        &self,
        cr: &CredentialsRequest,
        status: &mut CredentialsRequestStatus,
        statements: &[crate::api::StatementEntry],
        root: &RootCredentials,
    ) -> Result<(), Error> {
        let iam = self.iam(root);
        // Names first, persisted before anything exists in the cloud.
        let provider = match status
            .provider_status
            .clone()
            .filter(|p| !p.user.is_empty())
        {
            Some(p) => p,
            None => {
                let user = mint::user_name(
                    &self.settings.cluster_id,
                    &cr.name_any(),
                    mint::random_suffix(),
                );
                let provider = AwsProviderStatus {
                    api_version: Some(PROVIDER_API_VERSION.to_owned()),
                    kind: Some(AWS_PROVIDER_STATUS.to_owned()),
                    policy: mint::policy_name(&user),
                    user,
                };
                status.provider_status = Some(provider.clone());
                self.write_status(cr, status).await?;
                provider
            }
        };
        let (user, policy) = (&provider.user, &provider.policy);
        let tags = self.user_tags();
        let arn = match iam.user_arn(user).await? {
            Some(arn) => {
                if iam.ensure_tags(user, &tags).await? {
                    tracing::info!(request = %mint::request_key(cr), %user, "repaired the IAM user's tags");
                }
                arn
            }
            None => {
                // Minted users get the root user's permissions boundary, so that they can
                // never exceed it (OpenShift does the same).
                let root_user = iam.caller().await?;
                let boundary = root_user.permissions_boundary.as_deref();
                let arn = iam.create_user(user, &tags, boundary).await?;
                tracing::info!(request = %mint::request_key(cr), %user, ?boundary, "created IAM user");
                arn
            }
        };
        let document = mint::policy_document(statements, &arn);
        let current = iam.user_policy(user, policy).await?;
        if !current
            .as_deref()
            .is_some_and(|c| mint::same_policy(c, &document))
        {
            iam.put_user_policy(user, policy, &document).await?;
            tracing::info!(request = %mint::request_key(cr), %user, "put the user policy");
        }

        let existing = self.target_secret(cr).await?;
        let keys = iam.list_access_keys(user).await?;
        let in_secret = existing.as_ref().and_then(mint::secret_key_id);
        let current_key = keys.iter().find(|k| Some(&k.id) == in_secret.as_ref());
        let expired = |k: &iam::AccessKey| {
            self.settings.key_rotation.is_some_and(|period| {
                k.created
                    .and_then(|c| SystemTime::now().duration_since(c).ok())
                    .is_some_and(|age| age >= period)
            })
        };
        match current_key {
            Some(k) if !expired(k) => {
                // Valid key: only the recorded policy may need an update.
                let recorded = existing
                    .as_ref()
                    .and_then(|s| s.annotations().get(mint::POLICY_ANNOTATION).cloned());
                if recorded.as_deref() != Some(document.as_str())
                    && let Some(secret) = existing
                {
                    let mut updated = secret.clone();
                    updated
                        .annotations_mut()
                        .insert(mint::POLICY_ANNOTATION.to_owned(), document);
                    self.write_secret(Some(secret), updated).await?;
                }
                Ok(())
            }
            _ => {
                // The Secret is missing, holds no key, a key IAM no longer has, or one past its
                // rotation period: start over with exactly one key.
                for k in &keys {
                    iam.delete_access_key(user, &k.id).await?;
                }
                let key = iam.create_access_key(user).await?;
                let desired = mint::desired_secret(cr, &key.id, &key.secret, Some(&document));
                let rotated = in_secret.is_some();
                self.write_secret(existing, desired).await?;
                let (reason, note) = if rotated {
                    (
                        "AccessKeyReplaced",
                        format!(
                            "Replaced the access key of IAM user {user} in Secret {}/{}",
                            cr.spec.secret_ref.namespace, cr.spec.secret_ref.name
                        ),
                    )
                } else {
                    (
                        "CredentialsMinted",
                        format!(
                            "Minted IAM user {user} and stored its access key in Secret {}/{}",
                            cr.spec.secret_ref.namespace, cr.spec.secret_ref.name
                        ),
                    )
                };
                self.events.normal(cr, reason, "Provision", note).await;
                Ok(())
            }
        }
    }

    async fn passthrough(
        &self,
        cr: &CredentialsRequest,
        statements: &[crate::api::StatementEntry],
        root: &RootCredentials,
        simulate: bool,
    ) -> Result<(), Error> {
        if simulate {
            let iam = self.iam(root);
            let wanted: Vec<String> = statements
                .iter()
                .filter(|s| s.effect == crate::api::Effect::Allow)
                .flat_map(|s| s.action.iter().cloned())
                .collect();
            let region = self
                .settings
                .endpoint
                .region
                .clone()
                .or_else(|| self.sdk.region().map(|r| r.to_string()));
            let denied = iam
                .denied_actions(&wanted, region.as_deref())
                .await
                .map_err(Error::Simulation)?;
            if !denied.is_empty() {
                return Err(Error::InsufficientRoot(denied));
            }
        }
        let desired = mint::desired_secret(cr, &root.access_key_id, &root.secret_access_key, None);
        self.put_secret(
            cr,
            desired,
            "CredentialsCopied",
            "Copied the root credentials",
        )
        .await?;
        Ok(())
    }

    /// Deletion: the cloud identity, then the Secret, then the finalizer.
    async fn finalize(&self, cr: &CredentialsRequest) -> Result<Action, Error> {
        if !finalizers::has(cr, FINALIZER) {
            return Ok(Action::await_change());
        }
        match self.deprovision(cr).await {
            Ok(()) => {
                finalizers::remove(&self.api(cr)?, cr, FINALIZER).await?;
                tracing::info!(request = %mint::request_key(cr), "deprovisioned");
                Ok(Action::await_change())
            }
            Err(e) => {
                let mut status = cr.status.clone().unwrap_or_default();
                let message = iam::scrub(&format!("failed to deprovision: {e}"));
                set_condition(
                    &mut status.conditions,
                    condition::DEPROVISION_FAILURE,
                    true,
                    "CloudCredDeprovisionFailure",
                    &message,
                );
                self.write_status(cr, &status).await?;
                self.events
                    .warning(cr, "CloudCredDeprovisionFailure", "Deprovision", message)
                    .await;
                Err(e)
            }
        }
    }

    async fn deprovision(&self, cr: &CredentialsRequest) -> Result<(), Error> {
        let user = cr
            .status
            .as_ref()
            .and_then(|s| s.provider_status.clone())
            .filter(|p| !p.user.is_empty());
        // Whatever the mode now: a user minted before a switch away from mint goes too.
        if let Some(provider) = user {
            let root = self.root_credentials().await?;
            let iam = self.iam(&root);
            iam.delete_user_policy(&provider.user, &provider.policy)
                .await?;
            for key in iam.list_access_keys(&provider.user).await.or_else(|e| {
                if e.is_no_such_entity() {
                    Ok(Vec::new())
                } else {
                    Err(e)
                }
            })? {
                iam.delete_access_key(&provider.user, &key.id).await?;
            }
            iam.delete_user(&provider.user).await?;
        }
        let r = &cr.spec.secret_ref;
        let api = Api::<Secret>::namespaced(self.client.clone(), &r.namespace);
        if let Some(secret) = api.get_opt(&r.name).await?
            && mint::is_for(&secret, cr)
        {
            let dp = DeleteParams {
                preconditions: Some(Preconditions {
                    uid: secret.uid(),
                    resource_version: None,
                }),
                ..DeleteParams::default()
            };
            match api.delete(&r.name, &dp).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
                Err(e) => return Err(e.into()),
            }
        }
        Ok(())
    }
}
