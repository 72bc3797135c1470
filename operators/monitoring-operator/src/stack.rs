//! The stack as objects: what should exist for a configuration. Pure; the controller applies it.
//!
//! Names follow OpenShift's cluster-monitoring-operator (`prometheus-k8s`, `alertmanager-main`,
//! `prometheus-operator`, `kube-state-metrics`, `node-exporter`), so its docs and habits carry
//! over. Every object carries [`MANAGED_BY`] and is owned by the `monitoring` ClusterOperator.

use std::collections::BTreeMap;

use k8s_openapi::api::apps::v1::{DaemonSet, Deployment};
use k8s_openapi::api::core::v1::{Service, ServiceAccount};
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, Role, RoleBinding};
use serde::de::DeserializeOwned;
use serde_json::{Value, json};

use crate::config::{Config, Resources, Toleration};
use crate::platform;
use crate::resources::{Alertmanager, Prometheus, PrometheusRule, ServiceMonitor};

/// Label every object of the stack carries (and the caches select on).
pub const MANAGED_BY: (&str, &str) = ("app.kubernetes.io/managed-by", "monitoring-operator");
/// The label selector of [`MANAGED_BY`].
pub const MANAGED_BY_SELECTOR: &str = "app.kubernetes.io/managed-by=monitoring-operator";

/// The images the stack runs and the versions the Prometheus Operator is told.
#[derive(Clone, Debug, PartialEq)]
pub struct Images {
    pub prometheus_operator: String,
    pub config_reloader: String,
    pub kube_state_metrics: String,
    pub prometheus: String,
    pub prometheus_version: String,
    pub alertmanager: String,
    pub alertmanager_version: String,
    pub node_exporter: String,
}

impl Default for Images {
    /// The images `cargo xtask deploy` builds and pushes to the local registry.
    fn default() -> Self {
        Images {
            prometheus_operator: operon_assets::PROMETHEUS_OPERATOR_IMAGE.into(),
            config_reloader: operon_assets::PROMETHEUS_CONFIG_RELOADER_IMAGE.into(),
            kube_state_metrics: operon_assets::KUBE_STATE_METRICS_IMAGE.into(),
            prometheus: operon_assets::PROMETHEUS_IMAGE.into(),
            prometheus_version: operon_assets::PROMETHEUS_VERSION.into(),
            alertmanager: operon_assets::ALERTMANAGER_IMAGE.into(),
            alertmanager_version: operon_assets::ALERTMANAGER_VERSION.into(),
            node_exporter: operon_assets::NODE_EXPORTER_IMAGE.into(),
        }
    }
}

/// What does not come from the ConfigMap.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Where the stack runs (the operator's own namespace, `openshift-monitoring`).
    pub namespace: String,
    pub images: Images,
    /// How often Prometheus scrapes and evaluates rules.
    pub interval: String,
}

/// Every object of the stack, by kind.
#[derive(Clone, Debug, Default)]
pub struct Stack {
    pub service_accounts: Vec<ServiceAccount>,
    pub services: Vec<Service>,
    pub deployments: Vec<Deployment>,
    pub daemon_sets: Vec<DaemonSet>,
    pub roles: Vec<Role>,
    pub role_bindings: Vec<RoleBinding>,
    pub cluster_roles: Vec<ClusterRole>,
    pub cluster_role_bindings: Vec<ClusterRoleBinding>,
    pub service_monitors: Vec<ServiceMonitor>,
    pub prometheus_rules: Vec<PrometheusRule>,
    pub prometheuses: Vec<Prometheus>,
    pub alertmanagers: Vec<Alertmanager>,
}

/// A built-in object from JSON (the shapes here are fixed, so only a bug fails).
fn typed<K: DeserializeOwned>(value: Value) -> Result<K, serde_json::Error> {
    serde_json::from_value(value)
}

fn labels(component: &str) -> Value {
    json!({
        MANAGED_BY.0: MANAGED_BY.1,
        "app.kubernetes.io/part-of": "openshift-monitoring",
        "app.kubernetes.io/name": component,
    })
}

fn meta(name: &str, namespace: Option<&str>, component: &str) -> Value {
    let mut meta = json!({ "name": name, "labels": labels(component) });
    if let Some(ns) = namespace {
        meta["namespace"] = json!(ns);
    }
    meta
}

/// What restricted Pod Security asks of a container.
fn restricted() -> Value {
    json!({
        "allowPrivilegeEscalation": false,
        "readOnlyRootFilesystem": true,
        "runAsNonRoot": true,
        "capabilities": { "drop": ["ALL"] },
        "seccompProfile": { "type": "RuntimeDefault" },
    })
}

fn resources(given: Option<&Resources>, cpu: &str, memory: &str) -> Value {
    match given {
        Some(r) => serde_json::to_value(r).unwrap_or_else(|_| json!({})),
        None => json!({ "requests": { "cpu": cpu, "memory": memory } }),
    }
}

fn tolerations(given: Option<&Vec<Toleration>>) -> Option<Value> {
    given.map(|t| serde_json::to_value(t).unwrap_or_else(|_| json!([])))
}

fn rule(groups: &[&str], resources: &[&str], verbs: &[&str]) -> Value {
    json!({ "apiGroups": groups, "resources": resources, "verbs": verbs })
}

const READ: &[&str] = &["get", "list", "watch"];
/// Every verb (the audit's list).
const ALL: &[&str] = &operon_manifests::audit::VERBS;

/// The Prometheus Operator's kinds (and subresources) it manages in its namespace.
pub const MONITORING_RESOURCES: &[&str] = &[
    "alertmanagers",
    "alertmanagers/finalizers",
    "alertmanagers/status",
    "alertmanagerconfigs",
    "prometheuses",
    "prometheuses/finalizers",
    "prometheuses/status",
    "prometheusagents",
    "prometheusagents/finalizers",
    "prometheusagents/status",
    "thanosrulers",
    "thanosrulers/finalizers",
    "thanosrulers/status",
    "scrapeconfigs",
    "servicemonitors",
    "podmonitors",
    "probes",
    "prometheusrules",
];

/// The Prometheus Operator's rights in the stack's namespace (upstream's ClusterRole, narrowed
/// to the one namespace it is told to manage).
pub fn prometheus_operator_namespace_rules() -> Vec<Value> {
    vec![
        rule(&["monitoring.coreos.com"], MONITORING_RESOURCES, ALL),
        rule(&["apps"], &["statefulsets", "daemonsets"], ALL),
        rule(&[""], &["configmaps", "secrets"], ALL),
        rule(&[""], &["pods"], &["list", "delete"]),
        rule(
            &[""],
            &["services", "services/finalizers", "endpoints"],
            &["get", "create", "update", "delete"],
        ),
        rule(
            &["discovery.k8s.io"],
            &["endpointslices"],
            &["get", "list", "create", "update", "delete"],
        ),
        rule(&[""], &["events"], &["create", "patch"]),
        rule(&["events.k8s.io"], &["events"], &["create", "patch"]),
        rule(&["networking.k8s.io"], &["ingresses"], READ),
    ]
}

/// What the Prometheus Operator reads cluster-wide: namespaces (its selectors) and storage
/// classes (volume claims).
pub fn prometheus_operator_cluster_rules() -> Vec<Value> {
    vec![
        rule(&[""], &["namespaces"], READ),
        rule(&["storage.k8s.io"], &["storageclasses"], &["get"]),
    ]
}

/// What Prometheus reads to find its targets anywhere, and the operators' protected
/// `/metrics`.
pub fn prometheus_cluster_rules() -> Vec<Value> {
    vec![
        rule(&[""], &["services", "endpoints", "pods", "nodes"], READ),
        rule(&["discovery.k8s.io"], &["endpointslices"], READ),
        json!({ "nonResourceURLs": ["/metrics"], "verbs": ["get"] }),
    ]
}

/// The kinds kube-state-metrics exports (its `--resources`), and so reads.
pub const KUBE_STATE_METRICS_RESOURCES: &[(&str, &str)] = &[
    ("", "nodes"),
    ("", "pods"),
    ("", "namespaces"),
    ("", "services"),
    ("apps", "deployments"),
    ("apps", "daemonsets"),
    ("apps", "statefulsets"),
    ("apps", "replicasets"),
    ("batch", "jobs"),
    ("batch", "cronjobs"),
];

pub fn kube_state_metrics_cluster_rules() -> Vec<Value> {
    let mut by_group: BTreeMap<&str, Vec<&str>> = BTreeMap::new();
    for (group, resource) in KUBE_STATE_METRICS_RESOURCES {
        by_group.entry(group).or_default().push(resource);
    }
    by_group
        .into_iter()
        .map(|(group, resources)| rule(&[group], &resources, &["list", "watch"]))
        .collect()
}

fn service_account(name: &str, ns: &str) -> Result<ServiceAccount, serde_json::Error> {
    typed(
        json!({ "apiVersion": "v1", "kind": "ServiceAccount", "metadata": meta(name, Some(ns), name) }),
    )
}

fn cluster_role(name: &str, rules: Vec<Value>) -> Result<ClusterRole, serde_json::Error> {
    typed(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
        "metadata": meta(name, None, name), "rules": rules,
    }))
}

fn cluster_role_binding(name: &str, ns: &str) -> Result<ClusterRoleBinding, serde_json::Error> {
    typed(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
        "metadata": meta(name, None, name),
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": name },
        "subjects": [{ "kind": "ServiceAccount", "name": name, "namespace": ns }],
    }))
}

fn service(
    name: &str,
    ns: &str,
    selector: Value,
    port: (&str, i32),
    headless: bool,
) -> Result<Service, serde_json::Error> {
    let mut spec = json!({
        "selector": selector,
        "ports": [{ "name": port.0, "port": port.1, "targetPort": port.0, "protocol": "TCP" }],
    });
    if headless {
        spec["clusterIP"] = json!("None");
    }
    typed(
        json!({ "apiVersion": "v1", "kind": "Service", "metadata": meta(name, Some(ns), name), "spec": spec }),
    )
}

fn service_monitor(name: &str, ns: &str, port: &str, authorized: bool) -> ServiceMonitor {
    let mut endpoint = json!({ "port": port, "interval": "30s" });
    if authorized {
        endpoint["bearerTokenFile"] = json!("/var/run/secrets/kubernetes.io/serviceaccount/token");
    }
    let mut monitor = ServiceMonitor::new(
        name,
        ns,
        json!({
            "selector": { "matchLabels": labels(name) },
            "endpoints": [endpoint],
        }),
    );
    monitor.metadata.labels = serde_json::from_value(labels(name)).ok();
    monitor
}

/// The stack for `config`.
pub fn desired(config: &Config, settings: &Settings) -> Result<Stack, serde_json::Error> {
    let ns = settings.namespace.as_str();
    let images = &settings.images;
    let mut stack = Stack::default();

    // The Prometheus Operator, managing this namespace only.
    let po = "prometheus-operator";
    stack.service_accounts.push(service_account(po, ns)?);
    stack
        .cluster_roles
        .push(cluster_role(po, prometheus_operator_cluster_rules())?);
    stack
        .cluster_role_bindings
        .push(cluster_role_binding(po, ns)?);
    stack.roles.push(typed(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
        "metadata": meta(po, Some(ns), po), "rules": prometheus_operator_namespace_rules(),
    }))?);
    stack.role_bindings.push(typed(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": meta(po, Some(ns), po),
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "Role", "name": po },
        "subjects": [{ "kind": "ServiceAccount", "name": po, "namespace": ns }],
    }))?);
    stack.deployments.push(typed(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(po, Some(ns), po),
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": labels(po) },
            "template": {
                "metadata": { "labels": labels(po) },
                "spec": {
                    "serviceAccountName": po,
                    "securityContext": { "runAsNonRoot": true, "runAsUser": 65534,
                                         "seccompProfile": { "type": "RuntimeDefault" } },
                    "containers": [{
                        "name": po,
                        "image": images.prometheus_operator,
                        "args": [
                            format!("--namespaces={ns}"),
                            format!("--prometheus-config-reloader={}", images.config_reloader),
                            "--web.listen-address=:8080",
                            "--log-level=info",
                        ],
                        "ports": [{ "name": "http", "containerPort": 8080, "protocol": "TCP" }],
                        "resources": { "requests": { "cpu": "10m", "memory": "64Mi" } },
                        "securityContext": restricted(),
                    }],
                },
            },
        },
    }))?);
    stack
        .services
        .push(service(po, ns, labels(po), ("http", 8080), false)?);
    stack
        .service_monitors
        .push(service_monitor(po, ns, "http", false));

    // Prometheus, run by the Prometheus Operator.
    let prom = config.prometheus();
    let sa = "prometheus-k8s";
    stack.service_accounts.push(service_account(sa, ns)?);
    stack
        .cluster_roles
        .push(cluster_role(sa, prometheus_cluster_rules())?);
    stack
        .cluster_role_bindings
        .push(cluster_role_binding(sa, ns)?);
    let mut spec = json!({
        "replicas": prom.replicas.unwrap_or(2),
        "image": images.prometheus,
        "version": images.prometheus_version,
        "serviceAccountName": sa,
        "retention": prom.retention.clone().unwrap_or_else(|| "15d".into()),
        "scrapeInterval": settings.interval,
        "evaluationInterval": settings.interval,
        "logLevel": prom.log_level.clone().unwrap_or_else(|| "info".into()),
        "resources": resources(prom.resources.as_ref(), "50m", "256Mi"),
        "serviceMonitorSelector": {},
        "podMonitorSelector": {},
        "probeSelector": {},
        "ruleSelector": {},
        "securityContext": { "runAsNonRoot": true, "runAsUser": 65534, "fsGroup": 65534,
                             "seccompProfile": { "type": "RuntimeDefault" } },
        "podMetadata": { "labels": labels(sa) },
    });
    if let Some(size) = &prom.retention_size {
        spec["retentionSize"] = json!(size);
    }
    if let Some(selector) = &prom.node_selector {
        spec["nodeSelector"] = json!(selector);
    }
    if let Some(t) = tolerations(prom.tolerations.as_ref()) {
        spec["tolerations"] = t;
    }
    let alertmanager = config.alertmanager();
    if alertmanager.is_some() {
        spec["alerting"] = json!({ "alertmanagers": [{
            "namespace": ns, "name": "alertmanager-main", "port": "web", "apiVersion": "v2",
        }]});
    }
    stack.prometheuses.push(Prometheus::new("k8s", ns, spec));
    stack.services.push(service(
        sa,
        ns,
        json!({ "prometheus": "k8s" }),
        ("web", 9090),
        false,
    )?);
    stack
        .service_monitors
        .push(service_monitor(sa, ns, "web", false));

    // Alertmanager.
    if let Some(am) = alertmanager {
        let sa = "alertmanager-main";
        stack.service_accounts.push(service_account(sa, ns)?);
        let mut spec = json!({
            "replicas": am.replicas.unwrap_or(2),
            "image": images.alertmanager,
            "version": images.alertmanager_version,
            "serviceAccountName": sa,
            "logLevel": am.log_level.clone().unwrap_or_else(|| "info".into()),
            "resources": resources(am.resources.as_ref(), "10m", "64Mi"),
            "securityContext": { "runAsNonRoot": true, "runAsUser": 65534, "fsGroup": 65534,
                                 "seccompProfile": { "type": "RuntimeDefault" } },
            "podMetadata": { "labels": labels(sa) },
        });
        if let Some(selector) = &am.node_selector {
            spec["nodeSelector"] = json!(selector);
        }
        if let Some(t) = tolerations(am.tolerations.as_ref()) {
            spec["tolerations"] = t;
        }
        stack
            .alertmanagers
            .push(Alertmanager::new("main", ns, spec));
        stack.services.push(service(
            sa,
            ns,
            json!({ "alertmanager": "main" }),
            ("web", 9093),
            false,
        )?);
        stack
            .service_monitors
            .push(service_monitor(sa, ns, "web", false));
    }

    // kube-state-metrics.
    let ksm = "kube-state-metrics";
    let ksm_config = config.kube_state_metrics.clone().unwrap_or_default();
    stack.service_accounts.push(service_account(ksm, ns)?);
    stack
        .cluster_roles
        .push(cluster_role(ksm, kube_state_metrics_cluster_rules())?);
    stack
        .cluster_role_bindings
        .push(cluster_role_binding(ksm, ns)?);
    let ksm_resources: Vec<&str> = KUBE_STATE_METRICS_RESOURCES
        .iter()
        .map(|(_, r)| *r)
        .collect();
    let mut pod = json!({
        "serviceAccountName": ksm,
        "securityContext": { "runAsNonRoot": true, "runAsUser": 65534,
                             "seccompProfile": { "type": "RuntimeDefault" } },
        "containers": [{
            "name": ksm,
            "image": images.kube_state_metrics,
            "args": [
                format!("--resources={}", ksm_resources.join(",")),
                "--port=8080",
                "--telemetry-port=8081",
            ],
            "ports": [
                { "name": "http-metrics", "containerPort": 8080, "protocol": "TCP" },
                { "name": "telemetry", "containerPort": 8081, "protocol": "TCP" },
            ],
            "resources": resources(ksm_config.resources.as_ref(), "10m", "64Mi"),
            "securityContext": restricted(),
        }],
    });
    if let Some(selector) = &ksm_config.node_selector {
        pod["nodeSelector"] = json!(selector);
    }
    if let Some(t) = tolerations(ksm_config.tolerations.as_ref()) {
        pod["tolerations"] = t;
    }
    stack.deployments.push(typed(json!({
        "apiVersion": "apps/v1", "kind": "Deployment",
        "metadata": meta(ksm, Some(ns), ksm),
        "spec": {
            "replicas": 1,
            "selector": { "matchLabels": labels(ksm) },
            "template": { "metadata": { "labels": labels(ksm) }, "spec": pod },
        },
    }))?);
    stack.services.push(service(
        ksm,
        ns,
        labels(ksm),
        ("http-metrics", 8080),
        false,
    )?);
    stack
        .service_monitors
        .push(service_monitor(ksm, ns, "http-metrics", false));

    // node_exporter on every node: the host's network, processes and filesystems, read-only.
    let ne = "node-exporter";
    let ne_config = config.node_exporter.clone().unwrap_or_default();
    stack.service_accounts.push(service_account(ne, ns)?);
    let collectors = ne_config.collectors.clone().unwrap_or_default();
    let mut args = vec![
        "--web.listen-address=:9100".to_string(),
        "--path.sysfs=/host/sys".into(),
        "--path.rootfs=/host/root".into(),
        "--no-collector.wifi".into(),
        "--no-collector.hwmon".into(),
        "--collector.filesystem.mount-points-exclude=^/(dev|proc|sys|run/k8s.io/.+|var/lib/kubelet/.+)($|/)".into(),
    ];
    for (name, switch, default) in [
        ("cpufreq", &collectors.cpufreq, true),
        ("tcpstat", &collectors.tcpstat, false),
        ("buddyinfo", &collectors.buddyinfo, false),
        ("mountstats", &collectors.mountstats, false),
        ("processes", &collectors.processes, false),
    ] {
        let on = switch.as_ref().map_or(default, |s| s.enabled);
        args.push(if on {
            format!("--collector.{name}")
        } else {
            format!("--no-collector.{name}")
        });
    }
    let host_path = |name: &str, path: &str| json!({ "name": name, "hostPath": { "path": path } });
    // With hostPID the container's own /proc is the host's. No mount propagation: containerd
    // requires the host's `/` to be a shared or slave mount for it, and a node's need not be
    // (mounts made after node_exporter starts show at its next restart).
    let mount =
        |name: &str, path: &str| json!({ "name": name, "mountPath": path, "readOnly": true });
    stack.daemon_sets.push(typed(json!({
        "apiVersion": "apps/v1", "kind": "DaemonSet",
        "metadata": meta(ne, Some(ns), ne),
        "spec": {
            "selector": { "matchLabels": labels(ne) },
            "template": {
                "metadata": { "labels": labels(ne) },
                "spec": {
                    "serviceAccountName": ne,
                    "hostNetwork": true,
                    "hostPID": true,
                    "tolerations": [{ "operator": "Exists" }],
                    // Every node but kwok's fake ones (they tolerate nothing real and run no
                    // containers): their `type: kwok` label is kwok's convention.
                    "affinity": { "nodeAffinity": { "requiredDuringSchedulingIgnoredDuringExecution": {
                        "nodeSelectorTerms": [{ "matchExpressions": [
                            { "key": "type", "operator": "NotIn", "values": ["kwok"] },
                        ]}],
                    }}},
                    "securityContext": { "runAsNonRoot": true, "runAsUser": 65534 },
                    "containers": [{
                        "name": ne,
                        "image": images.node_exporter,
                        "args": args,
                        "ports": [{ "name": "http-metrics", "containerPort": 9100, "hostPort": 9100, "protocol": "TCP" }],
                        "resources": resources(ne_config.resources.as_ref(), "10m", "32Mi"),
                        "securityContext": { "allowPrivilegeEscalation": false, "readOnlyRootFilesystem": true,
                                             "capabilities": { "drop": ["ALL"] } },
                        "volumeMounts": [mount("sys", "/host/sys"), mount("root", "/host/root")],
                    }],
                    "volumes": [host_path("sys", "/sys"), host_path("root", "/")],
                },
            },
        },
    }))?);
    stack
        .services
        .push(service(ne, ns, labels(ne), ("http-metrics", 9100), true)?);
    stack
        .service_monitors
        .push(service_monitor(ne, ns, "http-metrics", false));

    // The platform's rules and the operators' monitors.
    for monitor in platform::operator_monitors(ns)? {
        stack.service_monitors.push(monitor);
    }
    stack.prometheus_rules.extend(platform::rules(ns)?);
    for rule in &mut stack.prometheus_rules {
        let labels = rule.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    }
    for monitor in &mut stack.service_monitors {
        let labels = monitor.metadata.labels.get_or_insert_with(Default::default);
        labels.insert(MANAGED_BY.0.into(), MANAGED_BY.1.into());
    }
    for p in &mut stack.prometheuses {
        p.metadata.labels = serde_json::from_value(labels("prometheus")).ok();
    }
    for a in &mut stack.alertmanagers {
        a.metadata.labels = serde_json::from_value(labels("alertmanager")).ok();
    }
    Ok(stack)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn settings() -> Settings {
        Settings {
            namespace: "openshift-monitoring".into(),
            images: Images::default(),
            interval: "30s".into(),
        }
    }

    #[test]
    fn the_default_stack_has_every_component() -> Result<(), Box<dyn std::error::Error>> {
        let stack = desired(&Config::default(), &settings())?;
        assert_eq!(stack.prometheuses.len(), 1);
        assert_eq!(stack.alertmanagers.len(), 1);
        assert_eq!(stack.prometheuses[0].spec["replicas"], 2);
        assert_eq!(stack.alertmanagers[0].spec["replicas"], 2);
        assert_eq!(stack.deployments.len(), 2);
        assert_eq!(stack.daemon_sets.len(), 1);
        let names: Vec<_> = stack
            .service_monitors
            .iter()
            .filter_map(|m| m.metadata.name.clone())
            .collect();
        for expected in [
            "prometheus-operator",
            "prometheus-k8s",
            "alertmanager-main",
            "kube-state-metrics",
            "node-exporter",
            "pod-operator-metrics-monitor",
            "service-ca-operator-metrics-monitor",
            "credentials-operator-metrics-monitor",
        ] {
            assert!(
                names.iter().any(|n| n == expected),
                "{expected} in {names:?}"
            );
        }
        let rules: Vec<_> = stack
            .prometheus_rules
            .iter()
            .filter_map(|r| r.metadata.name.clone())
            .collect();
        assert!(
            rules.contains(&"sre-node-unschedulable".to_string()),
            "{rules:?}"
        );
        assert_eq!(rules.len(), 4, "{rules:?}");
        for m in &stack.service_monitors {
            assert_eq!(
                m.metadata.namespace.as_deref(),
                Some("openshift-monitoring")
            );
            assert_eq!(
                m.metadata
                    .labels
                    .as_ref()
                    .and_then(|l| l.get(MANAGED_BY.0))
                    .map(String::as_str),
                Some(MANAGED_BY.1)
            );
        }
        Ok(())
    }

    #[test]
    fn configuration_reaches_the_objects() -> Result<(), Box<dyn std::error::Error>> {
        let config = Config::parse(
            "prometheusK8s:\n  retention: 2d\n  replicas: 1\n  nodeSelector:\n    a: b\n\
             alertmanagerMain:\n  enabled: false\nnodeExporter:\n  collectors:\n    \
             tcpstat:\n      enabled: true\n    cpufreq:\n      enabled: false\n",
        )?;
        let stack = desired(&config, &settings())?;
        let spec = &stack.prometheuses[0].spec;
        assert_eq!(spec["retention"], "2d");
        assert_eq!(spec["replicas"], 1);
        assert_eq!(spec["nodeSelector"]["a"], "b");
        assert!(spec.get("alerting").is_none());
        assert!(stack.alertmanagers.is_empty());
        let args =
            serde_json::to_value(&stack.daemon_sets[0])?["spec"]["template"]["spec"]["containers"]
                [0]["args"]
                .clone();
        let args: Vec<String> = serde_json::from_value(args)?;
        assert!(
            args.contains(&"--collector.tcpstat".to_string()),
            "{args:?}"
        );
        assert!(
            args.contains(&"--no-collector.cpufreq".to_string()),
            "{args:?}"
        );
        Ok(())
    }
}
