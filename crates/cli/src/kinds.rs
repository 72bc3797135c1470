//! Kinds a controller can own: Kubernetes' built-in kinds (k8s-openapi types) and the
//! project's own kinds.

use anyhow::{Result, bail};

use crate::names;
use crate::project::Api;

/// A kind a controller creates and owns.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Owned {
    pub kind: String,
    /// API group (`""` for the core group).
    pub group: String,
    pub version: String,
    /// Resource name, e.g. `pods`.
    pub plural: String,
    /// The Rust type, e.g. `k8s_openapi::api::core::v1::Pod` or `crate::api::widget::Widget`.
    pub path: String,
}

/// `(kind, group, version, plural, module under k8s_openapi::api)`.
const BUILTIN: &[(&str, &str, &str, &str, &str)] = &[
    ("ConfigMap", "", "v1", "configmaps", "core::v1"),
    (
        "PersistentVolumeClaim",
        "",
        "v1",
        "persistentvolumeclaims",
        "core::v1",
    ),
    ("Pod", "", "v1", "pods", "core::v1"),
    ("Secret", "", "v1", "secrets", "core::v1"),
    ("Service", "", "v1", "services", "core::v1"),
    ("ServiceAccount", "", "v1", "serviceaccounts", "core::v1"),
    ("DaemonSet", "apps", "v1", "daemonsets", "apps::v1"),
    ("Deployment", "apps", "v1", "deployments", "apps::v1"),
    ("ReplicaSet", "apps", "v1", "replicasets", "apps::v1"),
    ("StatefulSet", "apps", "v1", "statefulsets", "apps::v1"),
    (
        "HorizontalPodAutoscaler",
        "autoscaling",
        "v2",
        "horizontalpodautoscalers",
        "autoscaling::v2",
    ),
    ("CronJob", "batch", "v1", "cronjobs", "batch::v1"),
    ("Job", "batch", "v1", "jobs", "batch::v1"),
    (
        "Ingress",
        "networking.k8s.io",
        "v1",
        "ingresses",
        "networking::v1",
    ),
    (
        "NetworkPolicy",
        "networking.k8s.io",
        "v1",
        "networkpolicies",
        "networking::v1",
    ),
    (
        "PodDisruptionBudget",
        "policy",
        "v1",
        "poddisruptionbudgets",
        "policy::v1",
    ),
    (
        "Role",
        "rbac.authorization.k8s.io",
        "v1",
        "roles",
        "rbac::v1",
    ),
    (
        "RoleBinding",
        "rbac.authorization.k8s.io",
        "v1",
        "rolebindings",
        "rbac::v1",
    ),
];

/// Resolves `kind` against the built-in kinds and the project's `apis`.
pub fn resolve(kind: &str, apis: &[Api]) -> Result<Owned> {
    if let Some(api) = apis.iter().find(|a| a.kind == kind) {
        return Ok(Owned {
            kind: api.kind.clone(),
            group: api.group.clone(),
            version: api.version.clone(),
            plural: api.plural.clone(),
            path: format!("crate::api::{}::{}", names::snake(&api.kind), api.kind),
        });
    }
    if let Some((kind, group, version, plural, module)) = BUILTIN.iter().find(|(k, ..)| *k == kind)
    {
        return Ok(Owned {
            kind: kind.to_string(),
            group: group.to_string(),
            version: version.to_string(),
            plural: plural.to_string(),
            path: format!("k8s_openapi::api::{module}::{kind}"),
        });
    }
    let mut known: Vec<&str> = BUILTIN.iter().map(|(k, ..)| *k).collect();
    known.extend(apis.iter().map(|a| a.kind.as_str()));
    known.sort_unstable();
    if let Some(near) = names::near_miss(kind, known.iter().copied()) {
        bail!("--owns {kind}: not a kind this project knows; did you mean {near}?");
    }
    bail!(
        "--owns {kind}: not a kind this project knows; use one of {} (or add it first with \
         `operon create api`)",
        known.join(", ")
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Scope;

    #[test]
    fn resolves_builtin_and_project_kinds() {
        let pod = resolve("Pod", &[]).expect("Pod");
        assert_eq!(pod.path, "k8s_openapi::api::core::v1::Pod");
        assert_eq!((pod.group.as_str(), pod.plural.as_str()), ("", "pods"));
        let apis = [Api {
            group: "shop.example.com".into(),
            version: "v1".into(),
            kind: "Widget".into(),
            plural: "widgets".into(),
            scope: Scope::Namespaced,
        }];
        let widget = resolve("Widget", &apis).expect("Widget");
        assert_eq!(widget.path, "crate::api::widget::Widget");
        let e = resolve("Gadget", &apis).expect_err("unknown").to_string();
        assert!(e.contains("Widget") && e.contains("Deployment"), "{e}");
        let e = resolve("Widgte", &apis).expect_err("near miss").to_string();
        assert!(e.contains("did you mean Widget?"), "{e}");
        assert!(!e.contains("operon create api"), "{e}");
    }

    #[test]
    fn builtin_plurals_follow_the_rule_kubernetes_uses() {
        for (kind, _, _, plural, _) in BUILTIN {
            assert_eq!(names::resource_plural(kind), *plural, "{kind}");
        }
    }
}
