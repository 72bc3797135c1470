//! What monitoring-operator needs to be deployed; `monitoring-operator manifests|bundle|chart`
//! derive the files from it (operon-manifests).
//!
//! Its rights are what installing the stack takes. It may only grant what it holds, so it holds
//! what the Prometheus Operator, Prometheus and kube-state-metrics are given: docs/
//! monitoring-operator.md lists each broad right and why.

use kube::CustomResourceExt;
use operon_manifests::admission::DelegationCheck;
use operon_manifests::olm::BundleInfo;
use operon_manifests::{ADMIN_PORT, Declaration, OperatorManifests, Rule};

use crate::api::ClusterOperator;

/// The configuration sample (CMO's ConfigMap).
pub const SAMPLE: &str = include_str!("../samples/cluster-monitoring-config.yaml");

/// The image the generated Deployment runs.
pub const IMAGE: &str = concat!(
    "localhost/operon/monitoring-operator:v",
    env!("CARGO_PKG_VERSION")
);

/// Where the operator and the stack run, as in OpenShift.
pub const NAMESPACE: &str = "openshift-monitoring";

const READ: &[&str] = &["get", "list", "watch"];
const WRITE: &[&str] = &[
    "get", "list", "watch", "create", "update", "patch", "delete",
];
/// Every verb (the audit's list).
const ALL: &[&str] = &operon_manifests::audit::VERBS;

/// Cluster-wide rights.
pub fn rules() -> Vec<Rule> {
    vec![
        // Its status, and the owner of the stack.
        Rule::new(
            "config.openshift.io",
            &["clusteroperators"],
            &["get", "list", "watch", "create", "patch"],
        ),
        Rule::new(
            "config.openshift.io",
            &["clusteroperators/status"],
            &["patch"],
        ),
        // The Prometheus Operator's CRDs.
        Rule::new(
            "apiextensions.k8s.io",
            &["customresourcedefinitions"],
            &["get", "list", "watch", "create", "patch"],
        ),
        // The components' cluster roles and bindings.
        Rule::new(
            "rbac.authorization.k8s.io",
            &["clusterroles", "clusterrolebindings"],
            WRITE,
        ),
        // Granted to Prometheus (service discovery), kube-state-metrics (what it exports) and
        // the Prometheus Operator (namespaces, storage classes): held to be grantable.
        Rule::new(
            "",
            &["namespaces", "services", "endpoints", "pods", "nodes"],
            READ,
        ),
        Rule::new("discovery.k8s.io", &["endpointslices"], READ),
        Rule::new(
            "apps",
            &["deployments", "daemonsets", "statefulsets", "replicasets"],
            &["list", "watch"],
        ),
        Rule::new("batch", &["jobs", "cronjobs"], &["list", "watch"]),
        Rule::new("storage.k8s.io", &["storageclasses"], &["get"]),
        Rule::non_resource(&["/metrics"], &["get"]),
    ]
}

/// Rights in its own namespace, where the stack runs.
pub fn namespace_rules() -> Vec<Rule> {
    vec![
        Rule::new("", &["configmaps", "secrets"], ALL),
        Rule::new(
            "",
            &[
                "services",
                "services/finalizers",
                "endpoints",
                "serviceaccounts",
            ],
            ALL,
        ),
        Rule::new("", &["pods"], &["list", "delete"]),
        Rule::new("", &["events"], &["create", "patch"]),
        Rule::new("apps", &["deployments", "daemonsets", "statefulsets"], ALL),
        Rule::new(
            "rbac.authorization.k8s.io",
            &["roles", "rolebindings"],
            WRITE,
        ),
        Rule::new(
            "monitoring.coreos.com",
            crate::stack::MONITORING_RESOURCES,
            ALL,
        ),
        Rule::new(
            "discovery.k8s.io",
            &["endpointslices"],
            &["get", "list", "create", "update", "delete"],
        ),
        Rule::new("events.k8s.io", &["events"], &["create", "patch"]),
        Rule::new("networking.k8s.io", &["ingresses"], READ),
    ]
}

/// Writing `cluster-monitoring-config` makes monitoring-operator change the Prometheus and
/// Alertmanager it runs: only users who may update Prometheus objects in that namespace may.
pub fn admission() -> DelegationCheck {
    DelegationCheck {
        name: "cluster-monitoring-config-requires-prometheus-update.monitoring.operon.dev".into(),
        group: "".into(),
        resource: "configmaps".into(),
        variables: Vec::new(),
        applies_when: Some("object.metadata.name == 'cluster-monitoring-config'".into()),
        check: "authorizer.group('monitoring.coreos.com').resource('prometheuses').namespace(request.namespace).check('update')".into(),
        message: "'cluster-monitoring-config configures the monitoring stack through \
                  monitoring-operator, and ' + request.userInfo.username + ' may not update \
                  prometheuses in namespace ' + request.namespace"
            .into(),
    }
}

pub fn manifests(image: &str) -> anyhow::Result<OperatorManifests> {
    Ok(OperatorManifests {
        name: "monitoring-operator".into(),
        namespace: NAMESPACE.into(),
        image: image.into(),
        crds: vec![serde_json::to_value(ClusterOperator::crd())?],
        rules: rules(),
        namespace_rules: namespace_rules(),
        admission: vec![admission()],
        user_resources: Vec::new(),
        replicas: 2,
        admin_port: ADMIN_PORT,
        alerts: Vec::new(),
        // node_exporter reads the host (host network, PID namespace, filesystems).
        pod_security: "privileged",
    })
}

/// What monitoring-operator's OLM bundle says about it.
pub fn bundle_info() -> anyhow::Result<BundleInfo> {
    Ok(BundleInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        display_name: "Monitoring Operator".into(),
        description: "Installs and configures the platform's monitoring: the Prometheus \
                      Operator, Prometheus, Alertmanager, kube-state-metrics and node_exporter, \
                      configured by the cluster-monitoring-config ConfigMap."
            .into(),
        samples: vec![serde_saphyr::from_str(SAMPLE)?],
        channel: "candidate".into(),
        min_kube_version: "1.29.0".into(),
        owned_resource_kinds: vec![
            ("Deployment".into(), "v1".into()),
            ("DaemonSet".into(), "v1".into()),
        ],
        maturity: "alpha".into(),
        provider: "Operon".into(),
        keywords: vec!["monitoring".into(), "prometheus".into(), "operon".into()],
        links: vec![(
            "Source".into(),
            "https://github.com/operon-dev/operon".into(),
        )],
    })
}

/// Everything the generation commands need.
pub fn declaration() -> anyhow::Result<Declaration> {
    Ok(Declaration {
        manifests: manifests(IMAGE)?,
        bundle: bundle_info()?,
        samples: vec![("cluster-monitoring-config.yaml".into(), SAMPLE.into())],
    })
}
