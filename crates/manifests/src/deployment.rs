//! Deployment objects generated from what an operator declares: its CRDs, the API rules its code
//! uses, the resources users work with. Every operator of this repository is deployed the same
//! way, with the same least-privilege split:
//!
//! - `<name>-manager-role` (ClusterRole): exactly the rules the operator declares;
//! - `<name>-leader-election-role` (Role in the operator's namespace): the Lease it elects on;
//! - `<name>-namespace-role` (Role in the operator's namespace, only when declared): what the
//!   operator needs in its own namespace alone (e.g. creating its own ConfigMap);
//! - `<name>-metrics-auth-role` (ClusterRole): TokenReviews and SubjectAccessReviews, to protect
//!   `/metrics`; `<name>-metrics-reader` (ClusterRole) for scrapers;
//! - `<kind>-viewer|editor|admin-role` (ClusterRoles) aggregated into the built-in `view`,
//!   `edit` and `admin` roles, so namespace users get the custom resources with their usual roles;
//! - a ServiceAccount, a restricted-Pod-Security namespace, a Deployment (two replicas, leader
//!   election, probes, resources, read-only root filesystem), the metrics Service, a
//!   NetworkPolicy, a ServiceMonitor and a PrometheusRule.
//!
//! [`OperatorManifests::files`] lays them out kustomize-style (crd, rbac, manager,
//! network-policy, prometheus, samples, default).

use operon_runtime::rbac;
use serde_json::{Value, json};

/// A custom resource users work with (for the aggregated roles).
#[derive(Debug, Clone)]
pub struct UserResource {
    pub group: String,
    pub plural: String,
    pub kind: String,
}

/// One API rule (`rbac.authorization.k8s.io/v1` PolicyRule).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    pub group: &'static str,
    /// Resources, or URL paths for a [`non_resource`](Rule::non_resource) rule.
    pub resources: Vec<&'static str>,
    pub verbs: Vec<&'static str>,
    /// `resources` are non-resource URLs (`/metrics`).
    pub non_resource: bool,
}

impl Rule {
    pub fn new(group: &'static str, resources: &[&'static str], verbs: &[&'static str]) -> Self {
        Rule {
            group,
            resources: resources.to_vec(),
            verbs: verbs.to_vec(),
            non_resource: false,
        }
    }

    /// A rule on non-resource URLs (`/metrics`), for an operator that grants them to others.
    pub fn non_resource(urls: &[&'static str], verbs: &[&'static str]) -> Self {
        Rule {
            group: "",
            resources: urls.to_vec(),
            verbs: verbs.to_vec(),
            non_resource: true,
        }
    }

    fn to_json(&self) -> Value {
        if self.non_resource {
            return json!({ "nonResourceURLs": self.resources, "verbs": self.verbs });
        }
        json!({ "apiGroups": [self.group], "resources": self.resources, "verbs": self.verbs })
    }

    fn allows(&self, group: &str, resource: &str, verb: &str) -> bool {
        !self.non_resource
            && self.group == group
            && self.resources.contains(&resource)
            && self.verbs.contains(&verb)
    }
}

/// A rule the runtime declares ([`operon_runtime::rbac`]).
impl From<rbac::Rule> for Rule {
    fn from(rule: rbac::Rule) -> Self {
        Rule::new(rule.group, rule.resources, rule.verbs)
    }
}

/// Rules the shared runtime itself needs of every operator wherever its controllers work, as
/// the runtime declares them ([`operon_runtime::rbac`]): Events about the objects it reconciles.
pub fn runtime_rules() -> Vec<Rule> {
    vec![rbac::EVENTS.into()]
}

/// What an operator declares; everything else is derived.
#[derive(Debug, Clone)]
pub struct OperatorManifests {
    /// `pod-operator`.
    pub name: String,
    /// Namespace the operator runs in, e.g. `pod-operator-system`.
    pub namespace: String,
    /// Container image.
    pub image: String,
    /// Its CRDs (as JSON objects).
    pub crds: Vec<Value>,
    /// Rules its controllers use, cluster-wide.
    pub rules: Vec<Rule>,
    /// Rules its controllers use in the operator's own namespace only.
    pub namespace_rules: Vec<Rule>,
    /// Admission checks that keep users from gaining, through the operator, what they may not
    /// do themselves (`config/<name>/policy/`).
    pub admission: Vec<crate::admission::DelegationCheck>,
    /// Custom resources users create, for the aggregated roles.
    pub user_resources: Vec<UserResource>,
    pub replicas: i32,
    /// Port of the admin server's probes (`/healthz`, `/readyz`; plain HTTP for the kubelet).
    /// `/metrics` is served apart, over HTTPS on [`METRICS_PORT`].
    pub admin_port: u16,
    /// Alerts on the operator's own metrics, beside the common ones of
    /// [`rule_groups`](crate::alerts::rule_groups).
    pub alerts: Vec<crate::alerts::Alert>,
    /// The Pod Security level its namespace enforces: `restricted`, or `privileged` for an
    /// operator that runs host agents there (monitoring-operator's node_exporter).
    pub pod_security: &'static str,
}

/// Port the admin server's probes listen on in a cluster (controller-runtime's
/// `--health-probe-bind-address` default).
pub const ADMIN_PORT: u16 = 8081;

/// Port `/metrics` is served on over HTTPS in a cluster (controller-runtime's secure metrics
/// default).
pub const METRICS_PORT: u16 = 8443;

/// Where the metrics server's certificate is mounted (kubebuilder's path).
pub const METRICS_CERT_PATH: &str = "/tmp/k8s-metrics-server/metrics-certs";

impl OperatorManifests {
    /// The Secret the metrics Service asks service-ca-operator to write its serving certificate
    /// into; mounted optionally, so the operator serves a self-signed one without service-ca.
    pub fn metrics_cert_secret(&self) -> String {
        format!("{}-metrics-cert", self.name)
    }
}

impl OperatorManifests {
    fn labels(&self) -> Value {
        json!({
            "app.kubernetes.io/name": self.name,
            "app.kubernetes.io/part-of": "operon",
            "app.kubernetes.io/managed-by": "kustomize",
        })
    }

    fn selector(&self) -> Value {
        json!({ "app.kubernetes.io/name": self.name, "control-plane": "controller-manager" })
    }

    fn meta(&self, name: &str, namespaced: bool) -> Value {
        let mut meta = json!({ "name": name, "labels": self.labels() });
        if namespaced {
            meta["namespace"] = json!(self.namespace);
        }
        meta
    }

    pub fn service_account_name(&self) -> String {
        format!("{}-controller-manager", self.name)
    }

    fn sa_subject(&self) -> Value {
        json!([{ "kind": "ServiceAccount", "name": self.service_account_name(), "namespace": self.namespace }])
    }

    pub fn namespace_object(&self) -> Value {
        let mut labels = self.labels();
        for mode in ["enforce", "audit", "warn"] {
            labels[format!("pod-security.kubernetes.io/{mode}")] = json!(self.pod_security);
        }
        labels["metrics"] = json!("enabled");
        json!({
            "apiVersion": "v1", "kind": "Namespace",
            "metadata": { "name": self.namespace, "labels": labels },
        })
    }

    pub fn service_account(&self) -> Value {
        json!({
            "apiVersion": "v1", "kind": "ServiceAccount",
            "metadata": self.meta(&self.service_account_name(), true),
        })
    }

    /// Whether the operator's ServiceAccount is meant to be allowed `verb` on `group`/`resource`
    /// (`resource/subresource` for subresources): by its cluster-wide rules anywhere, by its
    /// namespace rules only in its own namespace. What RBAC tests compare the authorizer with.
    pub fn allows(&self, namespace: &str, group: &str, resource: &str, verb: &str) -> bool {
        let matches = |r: &Rule| r.allows(group, resource, verb);
        self.manager_rules().iter().any(matches)
            || (namespace == self.namespace
                && (self.namespace_rules.iter().any(matches)
                    || matches(&rbac::LEADER_ELECTION.into())))
    }

    /// The operator's own rules plus the runtime's.
    pub fn manager_rules(&self) -> Vec<Rule> {
        let mut rules = self.rules.clone();
        rules.extend(runtime_rules());
        rules
    }

    pub fn manager_role(&self) -> Value {
        let rules: Vec<Value> = self.manager_rules().iter().map(Rule::to_json).collect();
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": self.meta(&format!("{}-manager-role", self.name), false),
            "rules": rules,
        })
    }

    fn cluster_binding(&self, name: &str, role: &str) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRoleBinding",
            "metadata": self.meta(name, false),
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": role },
            "subjects": self.sa_subject(),
        })
    }

    pub fn manager_role_binding(&self) -> Value {
        self.cluster_binding(
            &format!("{}-manager-rolebinding", self.name),
            &format!("{}-manager-role", self.name),
        )
    }

    /// Leases in the operator's namespace only, as the runtime's leader election declares them
    /// ([`operon_runtime::rbac::LEADER_ELECTION`]).
    pub fn leader_election_role(&self) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": self.meta(&format!("{}-leader-election-role", self.name), true),
            "rules": [Rule::from(rbac::LEADER_ELECTION).to_json()],
        })
    }

    pub fn leader_election_role_binding(&self) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": self.meta(&format!("{}-leader-election-rolebinding", self.name), true),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                "name": format!("{}-leader-election-role", self.name),
            },
            "subjects": self.sa_subject(),
        })
    }

    /// The declared [`namespace_rules`](Self::namespace_rules), in the operator's namespace;
    /// `None` when there are none.
    pub fn namespace_role(&self) -> Option<Value> {
        if self.namespace_rules.is_empty() {
            return None;
        }
        let rules: Vec<Value> = self.namespace_rules.iter().map(Rule::to_json).collect();
        Some(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "Role",
            "metadata": self.meta(&format!("{}-namespace-role", self.name), true),
            "rules": rules,
        }))
    }

    pub fn namespace_role_binding(&self) -> Option<Value> {
        self.namespace_role()?;
        Some(json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
            "metadata": self.meta(&format!("{}-namespace-rolebinding", self.name), true),
            "roleRef": {
                "apiGroup": "rbac.authorization.k8s.io", "kind": "Role",
                "name": format!("{}-namespace-role", self.name),
            },
            "subjects": self.sa_subject(),
        }))
    }

    /// Every RBAC object of the operator itself (not the user-facing aggregated roles), in
    /// the order to apply them.
    pub fn operator_rbac(&self) -> Vec<Value> {
        let mut objects = vec![
            self.service_account(),
            self.manager_role(),
            self.manager_role_binding(),
            self.leader_election_role(),
            self.leader_election_role_binding(),
        ];
        objects.extend(self.namespace_role());
        objects.extend(self.namespace_role_binding());
        objects.extend([
            self.metrics_auth_role(),
            self.metrics_auth_role_binding(),
            self.metrics_reader_role(),
        ]);
        objects
    }

    /// TokenReviews and SubjectAccessReviews, as the runtime's admin server declares them
    /// ([`operon_runtime::rbac::METRICS_AUTH`]).
    pub fn metrics_auth_role(&self) -> Value {
        let rules: Vec<Value> = rbac::METRICS_AUTH
            .into_iter()
            .map(|rule| Rule::from(rule).to_json())
            .collect();
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": self.meta(&format!("{}-metrics-auth-role", self.name), false),
            "rules": rules,
        })
    }

    pub fn metrics_auth_role_binding(&self) -> Value {
        self.cluster_binding(
            &format!("{}-metrics-auth-rolebinding", self.name),
            &format!("{}-metrics-auth-role", self.name),
        )
    }

    /// For Prometheus: bind it to the scraper's ServiceAccount.
    pub fn metrics_reader_role(&self) -> Value {
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
            "metadata": self.meta(&format!("{}-metrics-reader", self.name), false),
            "rules": [{ "nonResourceURLs": ["/metrics"], "verbs": ["get"] }],
        })
    }

    /// `(file stem, ClusterRole)` for viewer, editor and admin of each user resource.
    pub fn user_roles(&self) -> Vec<(String, Value)> {
        let mut out = Vec::new();
        for r in &self.user_resources {
            let kind = r.kind.to_lowercase();
            let levels: [(&str, &str, Vec<&str>); 3] = [
                ("viewer", "view", vec!["get", "list", "watch"]),
                (
                    "editor",
                    "edit",
                    vec![
                        "create",
                        "delete",
                        "deletecollection",
                        "get",
                        "list",
                        "patch",
                        "update",
                        "watch",
                    ],
                ),
                (
                    "admin",
                    "admin",
                    vec![
                        "create",
                        "delete",
                        "deletecollection",
                        "get",
                        "list",
                        "patch",
                        "update",
                        "watch",
                    ],
                ),
            ];
            for (level, aggregate, verbs) in levels {
                let name = format!("{kind}-{level}-role");
                let mut meta = self.meta(&name, false);
                meta["labels"][format!("rbac.authorization.k8s.io/aggregate-to-{aggregate}")] =
                    json!("true");
                out.push((
                    format!("{kind}_{level}_role"),
                    json!({
                        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "ClusterRole",
                        "metadata": meta,
                        "rules": [
                            { "apiGroups": [r.group], "resources": [r.plural], "verbs": verbs },
                            { "apiGroups": [r.group], "resources": [format!("{}/status", r.plural)], "verbs": ["get"] },
                        ],
                    }),
                ));
            }
        }
        out
    }

    pub fn deployment(&self) -> Value {
        let port = self.admin_port;
        let probe = |path: &str, initial: u32| {
            json!({
                "httpGet": { "path": path, "port": "health" },
                "initialDelaySeconds": initial, "periodSeconds": 10,
            })
        };
        let selector = self.selector();
        let mut pod_labels = self.labels();
        for (k, v) in selector.as_object().into_iter().flatten() {
            pod_labels[k] = v.clone();
        }
        json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": self.meta(&format!("{}-controller-manager", self.name), true),
            "spec": {
                "replicas": self.replicas,
                "selector": { "matchLabels": selector },
                "template": {
                    "metadata": {
                        "labels": pod_labels,
                        "annotations": { "kubectl.kubernetes.io/default-container": "manager" },
                    },
                    "spec": {
                        "serviceAccountName": self.service_account_name(),
                        "terminationGracePeriodSeconds": 30,
                        "securityContext": {
                            "runAsNonRoot": true,
                            "runAsUser": 65532,
                            "runAsGroup": 65532,
                            "seccompProfile": { "type": "RuntimeDefault" },
                        },
                        "containers": [{
                            "name": "manager",
                            "image": self.image,
                            "args": [
                                "run",
                                "--leader-elect=true",
                                format!("--health-probe-bind-address=:{port}"),
                                format!("--metrics-bind-address=:{METRICS_PORT}"),
                                format!("--metrics-cert-path={METRICS_CERT_PATH}"),
                                "--metrics-auth=true",
                                "--zap-encoder=json",
                            ],
                            "env": [
                                { "name": "POD_NAME", "valueFrom": { "fieldRef": { "fieldPath": "metadata.name" } } },
                                { "name": "POD_NAMESPACE", "valueFrom": { "fieldRef": { "fieldPath": "metadata.namespace" } } },
                            ],
                            "ports": [
                                { "name": "health", "containerPort": port, "protocol": "TCP" },
                                { "name": "https", "containerPort": METRICS_PORT, "protocol": "TCP" },
                            ],
                            "volumeMounts": [{
                                "name": "metrics-certs", "mountPath": METRICS_CERT_PATH, "readOnly": true,
                            }],
                            "livenessProbe": probe("/healthz", 15),
                            "readinessProbe": probe("/readyz", 5),
                            "resources": {
                                "requests": { "cpu": "10m", "memory": "32Mi" },
                                "limits": { "cpu": "500m", "memory": "256Mi" },
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "readOnlyRootFilesystem": true,
                                "capabilities": { "drop": ["ALL"] },
                            },
                        }],
                        "volumes": [{
                            "name": "metrics-certs",
                            "secret": { "secretName": self.metrics_cert_secret(), "optional": true },
                        }],
                    },
                },
            },
        })
    }

    /// Labelled with the Pods' selector labels too, which the ServiceMonitor selects it by.
    /// Annotated for a serving certificate from service-ca-operator (where it runs), which the
    /// Deployment mounts for the metrics server.
    pub fn metrics_service(&self) -> Value {
        let mut meta = self.meta(&format!("{}-metrics", self.name), true);
        for (k, v) in self.selector().as_object().into_iter().flatten() {
            meta["labels"][k] = v.clone();
        }
        meta["annotations"] = json!({
            "service.beta.openshift.io/serving-cert-secret-name": self.metrics_cert_secret(),
        });
        json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": meta,
            "spec": {
                "selector": self.selector(),
                "ports": [{ "name": "https", "port": METRICS_PORT, "targetPort": "https", "protocol": "TCP" }],
            },
        })
    }

    /// Only namespaces labelled `metrics: enabled` may reach the metrics port.
    pub fn network_policy(&self) -> Value {
        json!({
            "apiVersion": "networking.k8s.io/v1", "kind": "NetworkPolicy",
            "metadata": self.meta(&format!("{}-allow-metrics-traffic", self.name), true),
            "spec": {
                "podSelector": { "matchLabels": self.selector() },
                "policyTypes": ["Ingress"],
                "ingress": [{
                    "from": [{ "namespaceSelector": { "matchLabels": { "metrics": "enabled" } } }],
                    "ports": [{ "port": METRICS_PORT, "protocol": "TCP" }],
                }],
            },
        })
    }

    pub fn service_monitor(&self) -> Value {
        json!({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "ServiceMonitor",
            "metadata": self.meta(&format!("{}-metrics-monitor", self.name), true),
            "spec": {
                // Like kubebuilder's default: the certificate is self-signed where service-ca
                // doesn't run, so it isn't verified; TLS still keeps the token off the wire.
                "endpoints": [{
                    "path": "/metrics", "port": "https", "scheme": "https",
                    "bearerTokenFile": "/var/run/secrets/kubernetes.io/serviceaccount/token",
                    "tlsConfig": {
                        "insecureSkipVerify": true,
                        "serverName": format!("{}-metrics.{}.svc", self.name, self.namespace),
                    },
                }],
                "selector": { "matchLabels": self.selector() },
            },
        })
    }

    /// A PrometheusRule with the given rule groups.
    pub fn prometheus_rule(&self, groups: Value) -> Value {
        json!({
            "apiVersion": "monitoring.coreos.com/v1", "kind": "PrometheusRule",
            "metadata": self.meta(&format!("{}-alerts", self.name), true),
            "spec": { "groups": groups },
        })
    }

    /// The kustomize tree: `(path relative to config/<name>/, object or kustomization)`.
    pub fn files(&self, alert_groups: Value) -> Vec<(String, Value)> {
        let mut files: Vec<(String, Value)> = Vec::new();
        let mut dir = |dir: &str, entries: Vec<(String, Value)>| {
            let names: Vec<String> = entries.iter().map(|(f, _)| f.clone()).collect();
            for (file, obj) in entries {
                files.push((format!("{dir}/{file}"), obj));
            }
            files.push((format!("{dir}/kustomization.yaml"), kustomization(&names)));
        };
        let crds = self
            .crds
            .iter()
            .map(|crd| {
                let name = crd["metadata"]["name"].as_str().unwrap_or("crd");
                let (plural, group) = name.split_once('.').unwrap_or((name, ""));
                (format!("bases/{group}_{plural}.yaml"), crd.clone())
            })
            .collect();
        dir("crd", crds);
        let mut rbac = vec![
            ("service_account.yaml".to_string(), self.service_account()),
            ("role.yaml".to_string(), self.manager_role()),
            ("role_binding.yaml".to_string(), self.manager_role_binding()),
            (
                "leader_election_role.yaml".to_string(),
                self.leader_election_role(),
            ),
            (
                "leader_election_role_binding.yaml".to_string(),
                self.leader_election_role_binding(),
            ),
        ];
        if let (Some(role), Some(binding)) = (self.namespace_role(), self.namespace_role_binding())
        {
            rbac.push(("namespace_role.yaml".to_string(), role));
            rbac.push(("namespace_role_binding.yaml".to_string(), binding));
        }
        rbac.extend([
            (
                "metrics_auth_role.yaml".to_string(),
                self.metrics_auth_role(),
            ),
            (
                "metrics_auth_role_binding.yaml".to_string(),
                self.metrics_auth_role_binding(),
            ),
            (
                "metrics_reader_role.yaml".to_string(),
                self.metrics_reader_role(),
            ),
        ]);
        rbac.extend(
            self.user_roles()
                .into_iter()
                .map(|(stem, role)| (format!("{stem}.yaml"), role)),
        );
        dir("rbac", rbac);
        dir(
            "manager",
            vec![
                ("namespace.yaml".to_string(), self.namespace_object()),
                ("manager.yaml".to_string(), self.deployment()),
                ("metrics_service.yaml".to_string(), self.metrics_service()),
            ],
        );
        let policies: Vec<(String, Value)> = self
            .admission
            .iter()
            .flat_map(|check| check.objects(&self.labels()))
            .map(|obj| {
                let kind = obj["kind"].as_str().unwrap_or_default().to_lowercase();
                let name = obj["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned();
                (format!("{name}.{kind}.yaml"), obj)
            })
            .collect();
        let has_policies = !policies.is_empty();
        if has_policies {
            dir("policy", policies);
        }
        dir(
            "network-policy",
            vec![(
                "allow-metrics-traffic.yaml".to_string(),
                self.network_policy(),
            )],
        );
        dir(
            "prometheus",
            vec![
                ("monitor.yaml".to_string(), self.service_monitor()),
                ("rules.yaml".to_string(), self.prometheus_rule(alert_groups)),
            ],
        );
        let mut resources = vec!["../crd", "../rbac", "../manager", "../network-policy"];
        if has_policies {
            resources.push("../policy");
        }
        files.push((
            "default/kustomization.yaml".to_string(),
            json!({
                "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
                // prometheus/ needs the Prometheus Operator's CRDs; add it where they exist.
                "resources": resources,
            }),
        ));
        files
    }
}

/// A kustomization listing `resources`.
pub fn kustomization(resources: &[String]) -> Value {
    json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1", "kind": "Kustomization",
        "resources": resources,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> OperatorManifests {
        OperatorManifests {
            name: "demo-operator".into(),
            namespace: "demo-system".into(),
            image: "operon/demo:0.1.0".into(),
            crds: vec![json!({ "metadata": { "name": "widgets.example.com" } })],
            rules: vec![Rule::new("", &["pods"], &["list", "watch"])],
            namespace_rules: Vec::new(),
            admission: Vec::new(),
            user_resources: vec![UserResource {
                group: "example.com".into(),
                plural: "widgets".into(),
                kind: "Widget".into(),
            }],
            replicas: 2,
            admin_port: ADMIN_PORT,
            alerts: Vec::new(),
            pod_security: "restricted",
        }
    }

    #[test]
    fn the_service_monitor_selects_the_metrics_service_and_its_port() {
        let m = sample();
        let (service, monitor) = (m.metrics_service(), m.service_monitor());
        let labels = service["metadata"]["labels"].as_object().cloned();
        let selector = monitor["spec"]["selector"]["matchLabels"]
            .as_object()
            .cloned();
        let (labels, selector) = (labels.unwrap_or_default(), selector.unwrap_or_default());
        assert!(!selector.is_empty());
        for (k, v) in &selector {
            assert_eq!(labels.get(k), Some(v), "the Service lacks {k}={v}");
        }
        assert_eq!(
            monitor["spec"]["endpoints"][0]["port"],
            service["spec"]["ports"][0]["name"]
        );
    }

    #[test]
    fn manager_role_is_the_declared_rules_plus_events() {
        let role = sample().manager_role();
        let rules = role["rules"].as_array().cloned().unwrap_or_default();
        assert_eq!(rules.len(), 2);
        assert_eq!(rules[0]["resources"], json!(["pods"]));
        assert_eq!(rules[1]["apiGroups"], json!(["events.k8s.io"]));
    }

    #[test]
    fn user_roles_aggregate_into_the_builtin_roles() {
        let roles = sample().user_roles();
        let labels: Vec<String> = roles
            .iter()
            .flat_map(|(_, r)| {
                r["metadata"]["labels"]
                    .as_object()
                    .cloned()
                    .unwrap_or_default()
            })
            .map(|(k, _)| k)
            .filter(|k| k.contains("aggregate-to"))
            .collect();
        assert_eq!(
            labels,
            [
                "rbac.authorization.k8s.io/aggregate-to-view",
                "rbac.authorization.k8s.io/aggregate-to-edit",
                "rbac.authorization.k8s.io/aggregate-to-admin"
            ]
        );
    }

    #[test]
    fn metrics_are_served_over_https_apart_from_the_probes() {
        let m = sample();
        let d = m.deployment();
        let pod = &d["spec"]["template"]["spec"];
        let c = &pod["containers"][0];
        let args: Vec<&str> = c["args"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(|a| a.as_str())
            .collect();
        assert!(args.contains(&"--metrics-bind-address=:8443"), "{args:?}");
        assert!(
            args.contains(&"--health-probe-bind-address=:8081"),
            "{args:?}"
        );
        assert!(!args.contains(&"--metrics-secure=false"), "{args:?}");
        // The runtime's own flags take them (after the `run` subcommand).
        #[derive(clap::Parser)]
        struct Cli {
            #[command(flatten)]
            run: operon_runtime::command::RunArgs,
        }
        let parsed = <Cli as clap::Parser>::try_parse_from(
            std::iter::once("operator").chain(args.iter().skip(1).copied()),
        )
        .expect("the Deployment's args parse");
        assert!(parsed.run.metrics_bind_address.0.is_some());
        assert_eq!(c["readinessProbe"]["httpGet"]["port"], "health");
        assert_eq!(
            pod["volumes"][0]["secret"]["secretName"],
            json!(m.metrics_cert_secret())
        );
        assert_eq!(pod["volumes"][0]["secret"]["optional"], true);
        let svc = m.metrics_service();
        assert_eq!(svc["spec"]["ports"][0]["port"], 8443);
        assert_eq!(
            svc["metadata"]["annotations"]["service.beta.openshift.io/serving-cert-secret-name"],
            json!(m.metrics_cert_secret())
        );
        let monitor = m.service_monitor();
        assert_eq!(monitor["spec"]["endpoints"][0]["scheme"], "https");
        assert_eq!(monitor["spec"]["endpoints"][0]["port"], "https");
        assert_eq!(
            m.network_policy()["spec"]["ingress"][0]["ports"][0]["port"],
            8443
        );
    }

    #[test]
    fn deployment_is_restricted_and_ha() {
        let d = sample().deployment();
        assert_eq!(d["spec"]["replicas"], 2);
        let c = &d["spec"]["template"]["spec"]["containers"][0];
        assert_eq!(c["securityContext"]["readOnlyRootFilesystem"], true);
        assert_eq!(c["securityContext"]["capabilities"]["drop"], json!(["ALL"]));
        assert!(
            c["args"]
                .as_array()
                .is_some_and(|a| a.contains(&json!("--leader-elect=true")))
        );
        assert_eq!(
            d["spec"]["template"]["spec"]["securityContext"]["runAsNonRoot"],
            true
        );
    }

    #[test]
    fn every_directory_has_a_kustomization_listing_its_files() {
        let files = sample().files(json!([]));
        let paths: Vec<&str> = files.iter().map(|(p, _)| p.as_str()).collect();
        for dir in [
            "crd",
            "rbac",
            "manager",
            "network-policy",
            "prometheus",
            "default",
        ] {
            assert!(
                paths.contains(&format!("{dir}/kustomization.yaml").as_str()),
                "{dir}"
            );
        }
        let rbac = files
            .iter()
            .find(|(p, _)| p == "rbac/kustomization.yaml")
            .map(|(_, k)| k["resources"].as_array().cloned().unwrap_or_default().len());
        assert_eq!(rbac, Some(11));
    }
}
