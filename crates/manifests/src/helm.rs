//! A Helm chart (apiVersion v2) generated from the same declaration as the kustomize tree
//! ([`OperatorManifests`]): its templates are exactly the objects of `config/<name>/default`,
//! serialized to YAML with a few values replaced by template expressions:
//!
//! - every namespace of the operator (object namespaces, binding subjects) becomes
//!   `{{ .Release.Namespace }}`; the Namespace object is dropped (install with
//!   `--namespace <ns> --create-namespace`, and label that namespace for the restricted Pod
//!   Security level yourself if you want it enforced);
//! - the manager's image becomes `{{ .Values.image.repository }}:{{ .Values.image.tag }}`, the
//!   replicas `{{ .Values.replicaCount }}`, its resources `.Values.resources`;
//! - `--leader-elect` and `--metrics-auth` follow `.Values.leaderElection` and
//!   `.Values.metricsAuth`, which also guard the Role/RoleBinding for leader election and the
//!   ClusterRole/ClusterRoleBinding for metrics authentication.
//!
//! CRDs are templates (under `templates/crd/`) guarded by `.Values.crds.install` rather than
//! files under Helm's `crds/` directory, so that `helm upgrade` updates them (Helm never
//! upgrades `crds/`) and they can be left to another installer. They carry
//! `helm.sh/resource-policy: keep`: uninstalling the release keeps them and every custom
//! resource.
//!
//! Object names are not prefixed with the release name (they are the same as with kustomize),
//! so a cluster holds one release of a given operator. With the default values the rendered
//! objects equal those of `config/<name>/default` (apart from the namespace and that
//! annotation).

use std::collections::BTreeMap;

use serde_json::{Value, json};

use crate::OperatorManifests;

/// Placeholders put into the objects before serializing them, then replaced with template
/// expressions: plain upper-case words, which YAML never quotes.
const NAMESPACE: &str = "OPERON_HELM_NAMESPACE";
const IMAGE: &str = "OPERON_HELM_IMAGE";
const REPLICAS: &str = "OPERON_HELM_REPLICAS";
const RESOURCES: &str = "OPERON_HELM_RESOURCES";
const LEADER_ELECT: &str = "OPERON_HELM_LEADER_ELECT";
const METRICS_AUTH: &str = "OPERON_HELM_METRICS_AUTH";

/// Annotation keeping CRDs (and so the custom resources) when a release is uninstalled.
pub const KEEP: (&str, &str) = ("helm.sh/resource-policy", "keep");

/// The chart's files: `(path relative to charts/<name>/, text)`, in a stable order.
pub fn chart(m: &OperatorManifests, version: &str, app_version: &str) -> Vec<(String, String)> {
    let mut files = vec![
        (
            "Chart.yaml".to_string(),
            chart_yaml(m, version, app_version),
        ),
        ("values.yaml".to_string(), values_yaml(m)),
    ];
    for (path, object) in default_objects(m) {
        if object["kind"] == "Namespace" {
            continue;
        }
        files.push((format!("templates/{path}"), template(m, &path, object)));
    }
    files
}

/// `repository:tag` split at the last `:` after the last `/` (so `host:5000/app` has no tag,
/// and `app@sha256:…` splits into `app@sha256` and the digest, which joins back unchanged).
pub fn split_image(image: &str) -> (String, String) {
    let name_start = image.rfind('/').map_or(0, |i| i + 1);
    match image[name_start..].rfind(':') {
        Some(i) => (
            image[..name_start + i].to_string(),
            image[name_start + i + 1..].to_string(),
        ),
        None => (image.to_string(), "latest".to_string()),
    }
}

fn yaml(path: &str, value: &Value) -> String {
    // Serializing a JSON value cannot fail in practice; if it ever did, rendering fails loudly.
    serde_saphyr::to_string(value)
        .unwrap_or_else(|e| format!("{{{{ fail {} }}}}\n", json!(format!("{path}: {e}"))))
}

fn chart_yaml(m: &OperatorManifests, version: &str, app_version: &str) -> String {
    yaml(
        "Chart.yaml",
        &json!({
            "apiVersion": "v2",
            "name": m.name,
            "description": format!("{}, a Kubernetes operator built with Operon", m.name),
            "type": "application",
            "version": version,
            "appVersion": app_version,
        }),
    )
}

fn values_yaml(m: &OperatorManifests) -> String {
    let (repository, tag) = split_image(&m.image);
    let deployment = m.deployment();
    let resources = manager_container(&deployment)
        .map(|c| c["resources"].clone())
        .unwrap_or(json!({}));
    let resources: String = yaml("values.yaml", &resources)
        .lines()
        .map(|line| format!("  {line}\n"))
        .collect();
    let image = &m.image;
    // JSON strings are YAML double-quoted scalars.
    let (repository, tag) = (json!(repository), json!(tag));
    let replicas = m.replicas;
    format!(
        "\
image:
  # The manager's image is <repository>:<tag>, by default {image}.
  repository: {repository}
  tag: {tag}
# Replicas of the operator; one of them leads at a time (see leaderElection).
replicaCount: {replicas}
# The manager container's resources.
resources:
{resources}\
# Elect a leader among the replicas through a Lease in the release namespace (--leader-elect),
# with a Role and RoleBinding for it. Keep it on with more than one replica.
leaderElection: true
# Serve /metrics only to callers allowed to get it (--metrics-auth), with a ClusterRole and
# ClusterRoleBinding for TokenReviews and SubjectAccessReviews.
metricsAuth: true
crds:
  # Install and upgrade the CRDs with the release. Uninstalling the release keeps them, and so
  # the custom resources (helm.sh/resource-policy: keep).
  install: true
"
    )
}

fn manager_container(deployment: &Value) -> Option<&Value> {
    let containers = deployment["spec"]["template"]["spec"]["containers"].as_array()?;
    containers
        .iter()
        .find(|c| c["name"] == "manager")
        .or(containers.first())
}

/// The objects `config/<name>/default` deploys, found by following the kustomizations of
/// [`OperatorManifests::files`]: `(path relative to config/<name>/, object)`.
pub fn default_objects(m: &OperatorManifests) -> Vec<(String, Value)> {
    let files: BTreeMap<String, Value> = m.files(json!([])).into_iter().collect();
    let mut objects = Vec::new();
    collect(&files, "default", &mut objects);
    objects
}

fn collect(files: &BTreeMap<String, Value>, dir: &str, out: &mut Vec<(String, Value)>) {
    let Some(kustomization) = files.get(&format!("{dir}/kustomization.yaml")) else {
        return;
    };
    let resources = kustomization["resources"].as_array().into_iter().flatten();
    for resource in resources.filter_map(Value::as_str) {
        let path = normalize(&format!("{dir}/{resource}"));
        if files.contains_key(&format!("{path}/kustomization.yaml")) {
            collect(files, &path, out);
        } else if let Some(object) = files.get(&path) {
            out.push((path, object.clone()));
        }
    }
}

/// Resolves `.` and `..` in a relative path.
fn normalize(path: &str) -> String {
    let mut parts: Vec<&str> = Vec::new();
    for part in path.split('/') {
        match part {
            "" | "." => {}
            ".." => {
                parts.pop();
            }
            part => parts.push(part),
        }
    }
    parts.join("/")
}

/// Replaces every `namespace: <the operator's namespace>` (metadata, binding subjects).
fn template_namespaces(value: &mut Value, namespace: &str) {
    match value {
        Value::Object(map) => {
            for (key, v) in map.iter_mut() {
                if key == "namespace" && v.as_str() == Some(namespace) {
                    *v = json!(NAMESPACE);
                } else {
                    template_namespaces(v, namespace);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| template_namespaces(v, namespace)),
        _ => {}
    }
}

fn template(m: &OperatorManifests, path: &str, mut object: Value) -> String {
    template_namespaces(&mut object, &m.namespace);
    let (kind, name) = (object["kind"].clone(), object["metadata"]["name"].clone());
    let is = |other: Value| other["kind"] == kind && other["metadata"]["name"] == name;
    let guard = if object["kind"] == "CustomResourceDefinition" {
        Some(".Values.crds.install")
    } else if is(m.leader_election_role()) || is(m.leader_election_role_binding()) {
        Some(".Values.leaderElection")
    } else if is(m.metrics_auth_role()) || is(m.metrics_auth_role_binding()) {
        Some(".Values.metricsAuth")
    } else {
        None
    };
    if object["kind"] == "CustomResourceDefinition" {
        object["metadata"]["annotations"][KEEP.0] = json!(KEEP.1);
    }
    if is(m.deployment()) {
        object["spec"]["replicas"] = json!(REPLICAS);
        let containers = object["spec"]["template"]["spec"]["containers"].as_array_mut();
        for container in containers.into_iter().flatten() {
            if container["image"] == m.image {
                container["image"] = json!(IMAGE);
            }
            if container["name"] == "manager" {
                container["resources"] = json!(RESOURCES);
            }
            for arg in container["args"].as_array_mut().into_iter().flatten() {
                let text = arg.as_str().unwrap_or_default();
                if text.starts_with("--leader-elect=") {
                    *arg = json!(format!("--leader-elect={LEADER_ELECT}"));
                } else if text.starts_with("--metrics-auth=") {
                    *arg = json!(format!("--metrics-auth={METRICS_AUTH}"));
                }
            }
        }
    }
    // Text of the objects is data: a `{{` in, say, a schema description must stay literal.
    let mut text = match serde_saphyr::to_string(&object) {
        Ok(text) => text.replace("{{", "{{ \"{{\" }}"),
        Err(_) => yaml(path, &object),
    };
    for (placeholder, expression) in [
        (NAMESPACE, "{{ .Release.Namespace }}"),
        (
            IMAGE,
            "\"{{ .Values.image.repository }}:{{ .Values.image.tag }}\"",
        ),
        (REPLICAS, "{{ .Values.replicaCount }}"),
        (LEADER_ELECT, "{{ .Values.leaderElection }}"),
        (METRICS_AUTH, "{{ .Values.metricsAuth }}"),
    ] {
        text = text
            .replace(&format!("\"{placeholder}\""), expression)
            .replace(&format!("'{placeholder}'"), expression)
            .replace(placeholder, expression);
    }
    text = text
        .lines()
        .map(|line| match line.find(&format!("resources: {RESOURCES}")) {
            // The `{{-` eats the space after the colon; nindent starts the map on the next line.
            Some(column) => format!(
                "{}resources: {{{{- toYaml .Values.resources | nindent {} }}}}\n",
                &line[..column],
                column + 2
            ),
            None => format!("{line}\n"),
        })
        .collect();
    match guard {
        Some(condition) => format!("{{{{- if {condition} }}}}\n{text}{{{{- end }}}}\n"),
        None => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{ADMIN_PORT, Rule};

    fn sample() -> OperatorManifests {
        OperatorManifests {
            name: "demo-operator".into(),
            namespace: "demo-system".into(),
            image: "registry.example.com:5000/demo:0.1.0".into(),
            crds: vec![json!({
                "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
                "metadata": { "name": "widgets.example.com" },
            })],
            rules: vec![Rule::new("", &["pods"], &["list", "watch"])],
            namespace_rules: Vec::new(),
            admission: Vec::new(),
            user_resources: vec![],
            replicas: 2,
            admin_port: ADMIN_PORT,
            alerts: Vec::new(),
            pod_security: "restricted",
        }
    }

    #[test]
    fn images_split_into_repository_and_tag() {
        let split = split_image;
        assert_eq!(split("busybox"), ("busybox".into(), "latest".into()));
        assert_eq!(
            split("host:5000/app:v1"),
            ("host:5000/app".into(), "v1".into())
        );
        assert_eq!(
            split("host:5000/app"),
            ("host:5000/app".into(), "latest".into())
        );
        let (repository, digest) = split("app@sha256:abc");
        assert_eq!(format!("{repository}:{digest}"), "app@sha256:abc");
    }

    #[test]
    fn templates_have_no_placeholder_left_and_no_namespace_object() {
        let files = chart(&sample(), "0.1.0", "v0.1.0");
        for (path, text) in &files {
            assert!(!text.contains("OPERON_HELM_"), "{path}:\n{text}");
            assert!(!text.contains("demo-system"), "{path}:\n{text}");
            assert!(!text.contains("kind: Namespace"), "{path}");
        }
        let manager = files
            .iter()
            .find(|(p, _)| p == "templates/manager/manager.yaml");
        let manager = manager.map(|(_, t)| t.as_str()).unwrap_or_default();
        assert!(
            manager.contains("replicas: {{ .Values.replicaCount }}\n"),
            "{manager}"
        );
        assert!(
            manager.contains("- --leader-elect={{ .Values.leaderElection }}\n"),
            "{manager}"
        );
        assert!(
            manager.contains("resources: {{- toYaml .Values.resources | nindent "),
            "{manager}"
        );
        let crd = files.iter().find(|(p, _)| p.starts_with("templates/crd/"));
        assert!(crd.is_some_and(|(_, t)| t.starts_with("{{- if .Values.crds.install }}\n")));
    }

    #[test]
    fn braces_in_objects_stay_literal() {
        let mut m = sample();
        m.crds[0]["spec"] = json!({ "description": "a {{ .Values.x }} b" });
        let files = chart(&m, "0.1.0", "v0.1.0");
        let crd = files.iter().find(|(p, _)| p.starts_with("templates/crd/"));
        let crd = crd.map(|(_, t)| t.as_str()).unwrap_or_default();
        assert!(crd.contains(r#"a {{ "{{" }} .Values.x }} b"#), "{crd}");
    }

    #[test]
    fn kustomize_paths_are_normalized() {
        assert_eq!(normalize("default/../crd"), "crd");
        assert_eq!(normalize("a/./b/../c.yaml"), "a/c.yaml");
    }
}
