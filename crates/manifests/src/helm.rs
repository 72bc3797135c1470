//! A Helm chart (apiVersion v2) generated from the same declaration as the kustomize tree
//! ([`OperatorManifests`]), written the way `helm create` writes charts: its templates are the
//! objects of `config/<name>/default`, serialized to YAML, with these parts templated:
//!
//! - names: every object (CRDs aside) is named `<fullname>-<suffix>` through `_helpers.tpl`'s
//!   `<chart>.fullname` (release name, `nameOverride`, `fullnameOverride`), and so is every
//!   reference to one (role refs, binding subjects, policy bindings, the metrics Secret);
//!   cluster-scoped objects (ClusterRoles, ClusterRoleBindings, admission policies and their
//!   bindings) are so per release, and two releases in two namespaces do not collide;
//! - labels: Helm's (`<chart>.labels`: `helm.sh/chart`, `app.kubernetes.io/name`,
//!   `app.kubernetes.io/instance`, `app.kubernetes.io/version`,
//!   `app.kubernetes.io/managed-by: Helm`) instead of kustomize's; selectors use
//!   `<chart>.selectorLabels`;
//! - every namespace becomes `{{ .Release.Namespace }}`; the Namespace object is dropped, and a
//!   `pre-install,pre-upgrade` hook Job (the operator's own image, `label-namespace`) gives the
//!   release namespace the Pod Security labels config/ gives it, so that
//!   `helm install --create-namespace` (which creates an unlabeled namespace) enforces them too;
//! - the Deployment: `image.*`, `imagePullSecrets`, `replicaCount`, `resources`,
//!   `podAnnotations`, `podLabels`, `podSecurityContext`, `securityContext`, `nodeSelector`,
//!   `tolerations`, `affinity`, the ServiceAccount (`serviceAccount.*`), and `--leader-elect` /
//!   `--metrics-auth` from `leaderElection` / `metricsAuth`, which also guard the RBAC they
//!   need.
//!
//! CRDs are templates (under `templates/crd/`) guarded by `crds.install` rather than files
//! under Helm's `crds/` directory, so that `helm upgrade` updates them. They are shared by every
//! release: the release that installs a CRD owns it, and a later release leaves it alone (the
//! template looks the CRD up and renders it only when it is missing or already this release's).
//! They carry `helm.sh/resource-policy: keep`: uninstalling keeps them and every custom resource.
//!
//! With the default values the rendered objects equal those of `config/<name>/default` up to
//! names (the release prefix), labels (Helm's for kustomize's) and the namespace.

use std::collections::BTreeMap;

use serde_json::{Map, Value, json};

use crate::OperatorManifests;

/// Placeholders put into the objects before serializing them, then replaced with template
/// expressions: plain upper-case words, which YAML never quotes.
const NAMESPACE: &str = "OPERON_HELM_NAMESPACE";
const IMAGE: &str = "OPERON_HELM_IMAGE";
const REPLICAS: &str = "OPERON_HELM_REPLICAS";
const LEADER_ELECT: &str = "OPERON_HELM_LEADER_ELECT";
const METRICS_AUTH: &str = "OPERON_HELM_METRICS_AUTH";
const SERVICE_ACCOUNT: &str = "OPERON_HELM_SERVICE_ACCOUNT";
/// `imagePullPolicy: <this>`: the line becomes `.Values.image.pullPolicy`, when set.
const PULL_POLICY: &str = "OPERON_HELM_PULL_POLICY";
/// `OPERON_HELM_NAME_<i>_END`: the i-th name, prefixed with the release's fullname.
const NAME: &str = "OPERON_HELM_NAME_";
const NAME_END: &str = "_END";
/// Map keys whose whole line becomes a block of template lines at the key's indentation.
const BLOCK: &str = "OPERON_HELM_BLOCK_";

/// Annotation keeping CRDs (and so the custom resources) when a release is uninstalled.
pub const KEEP: (&str, &str) = ("helm.sh/resource-policy", "keep");

/// The labels of config/ that Helm's `<chart>.labels` replace.
pub const KUSTOMIZE_LABELS: [&str; 2] = ["app.kubernetes.io/managed-by", "app.kubernetes.io/name"];

/// The Pod Security labels the hook gives the release namespace.
pub const POD_SECURITY_LABELS: [&str; 3] = [
    "pod-security.kubernetes.io/enforce",
    "pod-security.kubernetes.io/audit",
    "pod-security.kubernetes.io/warn",
];

/// The blocks a `BLOCK` key expands to.
#[derive(Clone, Copy)]
enum Block {
    Labels,
    SelectorLabels,
    PodLabels,
    PodAnnotations,
    PodExtras,
    ServiceAccountAnnotations,
}

/// Every block, in the order of its discriminant.
const BLOCKS: [Block; 6] = [
    Block::Labels,
    Block::SelectorLabels,
    Block::PodLabels,
    Block::PodAnnotations,
    Block::PodExtras,
    Block::ServiceAccountAnnotations,
];

impl Block {
    fn key(self) -> String {
        format!("{BLOCK}{}{NAME_END}", self as u8)
    }

    /// The template lines at indentation `n`.
    fn lines(self, chart: &str, n: usize) -> String {
        let pad = " ".repeat(n);
        let include =
            |what: &str| format!("{pad}{{{{- include \"{chart}.{what}\" . | nindent {n} }}}}\n");
        let with = |value: &str, key: &str, inner: usize| {
            format!(
                "{pad}{{{{- with .Values.{value} }}}}\n{pad}{key}:\n{pad}  {{{{- toYaml . | nindent {inner} }}}}\n{pad}{{{{- end }}}}\n"
            )
        };
        match self {
            Block::Labels => include("labels"),
            Block::SelectorLabels => include("selectorLabels"),
            Block::PodLabels => format!(
                "{}{pad}{{{{- with .Values.podLabels }}}}\n{pad}{{{{- toYaml . | nindent {n} }}}}\n{pad}{{{{- end }}}}\n",
                include("labels")
            ),
            Block::PodAnnotations => format!(
                "{pad}{{{{- with .Values.podAnnotations }}}}\n{pad}{{{{- toYaml . | nindent {n} }}}}\n{pad}{{{{- end }}}}\n"
            ),
            Block::PodExtras => [
                with("imagePullSecrets", "imagePullSecrets", n + 2),
                with("nodeSelector", "nodeSelector", n + 2),
                with("affinity", "affinity", n + 2),
                with("tolerations", "tolerations", n + 2),
            ]
            .concat(),
            Block::ServiceAccountAnnotations => {
                with("serviceAccount.annotations", "annotations", n + 2)
            }
        }
    }
}

/// The values rendered with `toYaml` in place of a whole map: `(placeholder, value path)`.
const TO_YAML: [(&str, &str); 3] = [
    ("OPERON_HELM_TOYAML_RESOURCES", "resources"),
    (
        "OPERON_HELM_TOYAML_POD_SECURITY_CONTEXT",
        "podSecurityContext",
    ),
    ("OPERON_HELM_TOYAML_SECURITY_CONTEXT", "securityContext"),
];

/// The chart's files: `(path relative to charts/<name>/, text)`, in a stable order.
pub fn chart(m: &OperatorManifests, version: &str, app_version: &str) -> Vec<(String, String)> {
    let mut files = vec![
        (
            "Chart.yaml".to_string(),
            chart_yaml(m, version, app_version),
        ),
        ("values.yaml".to_string(), values_yaml(m)),
        ("templates/_helpers.tpl".to_string(), helpers(&m.name)),
        ("templates/NOTES.txt".to_string(), notes(m)),
        (
            "templates/hooks/namespace-labels.yaml".to_string(),
            namespace_labels_hook(&m.name),
        ),
    ];
    let objects = default_objects(m);
    let names = names(m, &objects);
    for (path, object) in objects {
        if object["kind"] == "Namespace" {
            continue;
        }
        files.push((
            format!("templates/{path}"),
            template(m, &names, &path, object),
        ));
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

/// The part of a config/ name that follows the release's fullname in the chart: the name
/// without the operator's name in front (`pod-operator-metrics` → `metrics`), else the whole
/// name (`podrequest-viewer-role`).
pub fn name_suffix<'a>(operator: &str, name: &'a str) -> &'a str {
    name.strip_prefix(operator)
        .and_then(|rest| rest.strip_prefix('-'))
        .unwrap_or(name)
}

fn yaml(path: &str, value: &Value) -> String {
    // Serializing a JSON value cannot fail in practice; if it ever did, rendering fails loudly.
    crate::generate::to_yaml(value)
        .unwrap_or_else(|e| format!("{{{{ fail {} }}}}\n", json!(format!("{path}: {e}"))))
}

/// `value` as YAML lines indented by `n` spaces.
fn indented(path: &str, value: &Value, n: usize) -> String {
    let pad = " ".repeat(n);
    yaml(path, value)
        .lines()
        .map(|line| format!("{pad}{line}\n"))
        .collect()
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
            "keywords": ["operator", "operon"],
        }),
    )
}

fn values_yaml(m: &OperatorManifests) -> String {
    let (repository, tag) = split_image(&m.image);
    let deployment = m.deployment();
    let container = manager_container(&deployment);
    let field = |key: &str| container.map(|c| c[key].clone()).unwrap_or(json!({}));
    let resources = indented("values.yaml", &field("resources"), 2);
    let security_context = indented("values.yaml", &field("securityContext"), 2);
    let pod_security_context = indented(
        "values.yaml",
        &deployment["spec"]["template"]["spec"]["securityContext"],
        2,
    );
    let image = &m.image;
    // JSON strings are YAML double-quoted scalars.
    let (repository, tag) = (json!(repository), json!(tag));
    let replicas = m.replicas;
    let level = m.pod_security;
    format!(
        "\
# Replace the chart's name in object names and labels (nameOverride), or the whole
# `<release>-<chart>` prefix of object names (fullnameOverride).
nameOverride: \"\"
fullnameOverride: \"\"
image:
  # The manager's image is <repository>:<tag>, by default {image}.
  repository: {repository}
  tag: {tag}
  # Empty: Kubernetes' default (IfNotPresent, Always for a :latest tag).
  pullPolicy: \"\"
# Secrets to pull the image with: [{{name: <secret>}}].
imagePullSecrets: []
serviceAccount:
  # Create the operator's ServiceAccount (<fullname>-controller-manager unless named below);
  # if false, `name` must be an existing ServiceAccount (default: `default`).
  create: true
  annotations: {{}}
  name: \"\"
# Replicas of the operator; one of them leads at a time (see leaderElection).
replicaCount: {replicas}
podAnnotations: {{}}
podLabels: {{}}
# The operator's Pod and container satisfy the restricted Pod Security level.
podSecurityContext:
{pod_security_context}\
securityContext:
{security_context}\
# The manager container's resources.
resources:
{resources}\
nodeSelector: {{}}
tolerations: []
affinity: {{}}
# Elect a leader among the replicas through a Lease in the release namespace (--leader-elect),
# with a Role and RoleBinding for it. Keep it on with more than one replica.
leaderElection: true
# Serve /metrics only to callers allowed to get it (--metrics-auth), with a ClusterRole and
# ClusterRoleBinding for TokenReviews and SubjectAccessReviews.
metricsAuth: true
crds:
  # Install and upgrade the CRDs with the release (the first release that installs one owns
  # it; later releases leave it alone). Uninstalling keeps them, and so the custom resources
  # (helm.sh/resource-policy: keep).
  install: true
podSecurity:
  # Label the release namespace pod-security.kubernetes.io/enforce, audit and warn = level,
  # from a pre-install/pre-upgrade hook Job (the operator's image, with a ServiceAccount
  # allowed to patch only that namespace), so that `--create-namespace` gets the labels too.
  # Set false to label the namespace yourself.
  labelNamespace: true
  level: {level}
"
    )
}

fn helpers(chart: &str) -> String {
    format!(
        r#"{{{{/*
The chart's name, or nameOverride.
*/}}}}
{{{{- define "{chart}.name" -}}}}
{{{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}}}
{{{{- end }}}}

{{{{/*
The prefix of every object's name: fullnameOverride, else the release name (when it contains
the chart's name), else <release>-<chart>. Truncated at 63 characters (DNS label names).
*/}}}}
{{{{- define "{chart}.fullname" -}}}}
{{{{- if .Values.fullnameOverride }}}}
{{{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}}}
{{{{- else }}}}
{{{{- $name := default .Chart.Name .Values.nameOverride }}}}
{{{{- if contains $name .Release.Name }}}}
{{{{- .Release.Name | trunc 63 | trimSuffix "-" }}}}
{{{{- else }}}}
{{{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}}}
{{{{- end }}}}
{{{{- end }}}}
{{{{- end }}}}

{{{{/*
The chart's name and version, for the helm.sh/chart label.
*/}}}}
{{{{- define "{chart}.chart" -}}}}
{{{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}}}
{{{{- end }}}}

{{{{/*
Common labels.
*/}}}}
{{{{- define "{chart}.labels" -}}}}
helm.sh/chart: {{{{ include "{chart}.chart" . }}}}
{{{{ include "{chart}.selectorLabels" . }}}}
{{{{- if .Chart.AppVersion }}}}
app.kubernetes.io/version: {{{{ .Chart.AppVersion | quote }}}}
{{{{- end }}}}
app.kubernetes.io/managed-by: {{{{ .Release.Service }}}}
{{{{- end }}}}

{{{{/*
Selector labels.
*/}}}}
{{{{- define "{chart}.selectorLabels" -}}}}
app.kubernetes.io/name: {{{{ include "{chart}.name" . }}}}
app.kubernetes.io/instance: {{{{ .Release.Name }}}}
{{{{- end }}}}

{{{{/*
The operator's ServiceAccount.
*/}}}}
{{{{- define "{chart}.serviceAccountName" -}}}}
{{{{- if .Values.serviceAccount.create }}}}
{{{{- default (printf "%s-controller-manager" (include "{chart}.fullname" .)) .Values.serviceAccount.name }}}}
{{{{- else }}}}
{{{{- default "default" .Values.serviceAccount.name }}}}
{{{{- end }}}}
{{{{- end }}}}
"#
    )
}

fn notes(m: &OperatorManifests) -> String {
    let chart = &m.name;
    let crds: Vec<&str> = m
        .crds
        .iter()
        .filter_map(|crd| crd["metadata"]["name"].as_str())
        .collect();
    let crds = crds.join(", ");
    let labels: Vec<String> = POD_SECURITY_LABELS
        .iter()
        .map(|l| format!("{l}={{{{ .Values.podSecurity.level }}}}"))
        .collect();
    let labels = labels.join(" ");
    format!(
        r#"{chart} is installed as release {{{{ .Release.Name }}}} in namespace {{{{ .Release.Namespace }}}}.

Its Deployment, {{{{ include "{chart}.fullname" . }}}}-controller-manager ({{{{ .Values.replicaCount }}}} replicas):

  kubectl --namespace {{{{ .Release.Namespace }}}} rollout status deployment/{{{{ include "{chart}.fullname" . }}}}-controller-manager
{{{{- if .Values.podSecurity.labelNamespace }}}}

Namespace {{{{ .Release.Namespace }}}} was labelled for the {{{{ .Values.podSecurity.level }}}} Pod Security level
by the chart's pre-install hook.
{{{{- else }}}}

Label namespace {{{{ .Release.Namespace }}}} for the {{{{ .Values.podSecurity.level }}}} Pod Security level (podSecurity.labelNamespace is false):

  kubectl label --overwrite namespace {{{{ .Release.Namespace }}}} {labels}
{{{{- end }}}}
{{{{- if .Values.crds.install }}}}

CRDs ({crds}) are shared by every release of the chart and kept when it is uninstalled.
{{{{- end }}}}
"#
    )
}

/// The hook that labels the release namespace for Pod Security: a ServiceAccount allowed to
/// get and patch that one Namespace, and a Job running the operator's image's
/// `label-namespace` command as it. Removed once it succeeded.
fn namespace_labels_hook(chart: &str) -> String {
    let meta = |kind_weight: &str, namespaced: bool| {
        let namespace = if namespaced {
            "  namespace: {{ .Release.Namespace }}\n"
        } else {
            ""
        };
        format!(
            "metadata:\n  name: {{{{ include \"{chart}.fullname\" . }}}}-namespace-labels\n{namespace}  labels:\n    {{{{- include \"{chart}.labels\" . | nindent 4 }}}}\n  annotations:\n    helm.sh/hook: pre-install,pre-upgrade\n    helm.sh/hook-weight: \"{kind_weight}\"\n    helm.sh/hook-delete-policy: before-hook-creation,hook-succeeded\n"
        )
    };
    let (sa_meta, role_meta, binding_meta, job_meta) = (
        meta("-10", true),
        meta("-10", false),
        meta("-5", false),
        meta("0", true),
    );
    let pod_extras = Block::PodExtras.lines(chart, 6);
    let pull_policy = pull_policy(8);
    format!(
        r#"{{{{- if .Values.podSecurity.labelNamespace }}}}
apiVersion: v1
kind: ServiceAccount
{sa_meta}---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRole
{role_meta}rules:
- apiGroups:
  - ""
  resources:
  - namespaces
  resourceNames:
  - {{{{ .Release.Namespace | quote }}}}
  verbs:
  - get
  - patch
---
apiVersion: rbac.authorization.k8s.io/v1
kind: ClusterRoleBinding
{binding_meta}roleRef:
  apiGroup: rbac.authorization.k8s.io
  kind: ClusterRole
  name: {{{{ include "{chart}.fullname" . }}}}-namespace-labels
subjects:
- kind: ServiceAccount
  name: {{{{ include "{chart}.fullname" . }}}}-namespace-labels
  namespace: {{{{ .Release.Namespace }}}}
---
apiVersion: batch/v1
kind: Job
{job_meta}spec:
  backoffLimit: 3
  activeDeadlineSeconds: 240
  template:
    metadata:
      labels:
        {{{{- include "{chart}.labels" . | nindent 8 }}}}
    spec:
      restartPolicy: Never
      serviceAccountName: {{{{ include "{chart}.fullname" . }}}}-namespace-labels
{pod_extras}      securityContext: {{{{- toYaml .Values.podSecurityContext | nindent 8 }}}}
      containers:
      - name: label-namespace
        image: "{{{{ .Values.image.repository }}}}:{{{{ .Values.image.tag }}}}"
{pull_policy}        args:
        - label-namespace
        - --namespace={{{{ .Release.Namespace }}}}
        - --pod-security={{{{ .Values.podSecurity.level }}}}
        securityContext: {{{{- toYaml .Values.securityContext | nindent 10 }}}}
        resources: {{{{- toYaml .Values.resources | nindent 10 }}}}
{{{{- end }}}}
"#
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

/// The names the chart prefixes with the release's fullname: every object's but the CRDs', and
/// the metrics Secret's.
fn names(m: &OperatorManifests, objects: &[(String, Value)]) -> Vec<String> {
    let mut names: Vec<String> = objects
        .iter()
        .filter(|(_, o)| o["kind"] != "CustomResourceDefinition" && o["kind"] != "Namespace")
        .filter_map(|(_, o)| o["metadata"]["name"].as_str().map(str::to_string))
        .collect();
    names.push(m.metrics_cert_secret());
    names.sort();
    names.dedup();
    names
}

/// Replaces every `namespace: <the operator's namespace>` (metadata, binding subjects), every
/// string that is one of `names` or the ServiceAccount's name, and kustomize's labels and the
/// selectors on them.
fn template_fields(m: &OperatorManifests, names: &[String], value: &mut Value, path: &[&str]) {
    match value {
        Value::Object(map) => {
            let key = path.last().copied().unwrap_or_default();
            let selects =
                map.get("app.kubernetes.io/name").and_then(Value::as_str) == Some(&m.name);
            if key == "labels" {
                for label in KUSTOMIZE_LABELS {
                    map.remove(label);
                }
                let block = if path.contains(&"template") {
                    Block::PodLabels
                } else {
                    Block::Labels
                };
                map.insert(block.key(), Value::Null);
                return;
            }
            if selects {
                map.remove("app.kubernetes.io/name");
                map.insert(Block::SelectorLabels.key(), Value::Null);
            }
            // A binding's subject; the Deployment shares the ServiceAccount's name.
            if map.get("kind").and_then(Value::as_str) == Some("ServiceAccount")
                && map.get("name").and_then(Value::as_str) == Some(&m.service_account_name())
            {
                map.insert("name".into(), json!(SERVICE_ACCOUNT));
            }
            for (key, v) in map.iter_mut() {
                if key == "namespace" && v.as_str() == Some(&m.namespace) {
                    *v = json!(NAMESPACE);
                } else {
                    let mut path = path.to_vec();
                    path.push(key);
                    template_fields(m, names, v, &path);
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|v| template_fields(m, names, v, path)),
        Value::String(text) => {
            let key = path.last().copied().unwrap_or_default();
            if key == "serviceAccountName" && *text == m.service_account_name() {
                *value = json!(SERVICE_ACCOUNT);
            } else if let Some(i) = names.iter().position(|n| n == text) {
                *value = json!(format!("{NAME}{i}{NAME_END}"));
            }
        }
        _ => {}
    }
}

fn insert(map: Option<&mut Map<String, Value>>, key: String, value: Value) {
    if let Some(map) = map {
        map.insert(key, value);
    }
}

fn template(m: &OperatorManifests, names: &[String], path: &str, mut object: Value) -> String {
    let chart = &m.name;
    let (kind, name) = (object["kind"].clone(), object["metadata"]["name"].clone());
    let is = |other: Value| other["kind"] == kind && other["metadata"]["name"] == name;
    let is_crd = object["kind"] == "CustomResourceDefinition";
    let guard = if is_crd {
        let crd = name.as_str().unwrap_or_default();
        // Shared by every release: rendered when missing or already this release's.
        Some((
            format!(
                "{{{{- if .Values.crds.install }}}}\n\
                 {{{{- $crd := lookup \"apiextensions.k8s.io/v1\" \"CustomResourceDefinition\" \"\" \"{crd}\" }}}}\n\
                 {{{{- $owner := dig \"metadata\" \"annotations\" \"meta.helm.sh/release-name\" \"\" $crd }}}}\n\
                 {{{{- $ownerNamespace := dig \"metadata\" \"annotations\" \"meta.helm.sh/release-namespace\" \"\" $crd }}}}\n\
                 {{{{- if or (not $crd) (and (eq $owner .Release.Name) (eq $ownerNamespace .Release.Namespace)) }}}}\n"
            ),
            "{{- end }}\n{{- end }}\n",
        ))
    } else if is(m.service_account()) {
        Some((
            "{{- if .Values.serviceAccount.create }}\n".to_string(),
            "{{- end }}\n",
        ))
    } else if is(m.leader_election_role()) || is(m.leader_election_role_binding()) {
        Some((
            "{{- if .Values.leaderElection }}\n".to_string(),
            "{{- end }}\n",
        ))
    } else if is(m.metrics_auth_role()) || is(m.metrics_auth_role_binding()) {
        Some((
            "{{- if .Values.metricsAuth }}\n".to_string(),
            "{{- end }}\n",
        ))
    } else {
        None
    };
    if is_crd {
        object["metadata"]["annotations"][KEEP.0] = json!(KEEP.1);
        // Only the labels: a CRD's name is its API's, and its schema is data.
        if let Some(labels) = object["metadata"].get_mut("labels") {
            template_fields(m, &[], labels, &["metadata", "labels"]);
        }
    } else {
        template_fields(m, names, &mut object, &[]);
    }
    if is(m.service_account()) {
        object["metadata"]["name"] = json!(SERVICE_ACCOUNT);
        insert(
            object["metadata"].as_object_mut(),
            Block::ServiceAccountAnnotations.key(),
            Value::Null,
        );
    }
    if is(m.deployment()) {
        object["spec"]["replicas"] = json!(REPLICAS);
        let pod = &mut object["spec"]["template"];
        insert(
            pod["metadata"]["annotations"].as_object_mut(),
            Block::PodAnnotations.key(),
            Value::Null,
        );
        let spec = &mut pod["spec"];
        if spec.get("securityContext").is_some() {
            spec["securityContext"] = json!(TO_YAML[1].0);
        }
        insert(spec.as_object_mut(), Block::PodExtras.key(), Value::Null);
        let containers = spec["containers"].as_array_mut();
        for container in containers.into_iter().flatten() {
            if container["image"] == m.image {
                container["image"] = json!(IMAGE);
                container["imagePullPolicy"] = json!(PULL_POLICY);
            }
            if container["name"] == "manager" {
                container["resources"] = json!(TO_YAML[0].0);
                if container.get("securityContext").is_some() {
                    container["securityContext"] = json!(TO_YAML[2].0);
                }
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
    let mut text = match crate::generate::to_yaml(&object) {
        Ok(text) => text.replace("{{", "{{ \"{{\" }}"),
        Err(_) => yaml(path, &object),
    };
    let fullname = format!("{{{{ include \"{chart}.fullname\" . }}}}");
    let mut replacements: Vec<(String, String)> = names
        .iter()
        .enumerate()
        .map(|(i, name)| {
            let expression = match name_suffix(chart, name) {
                suffix if suffix == name && name == chart => fullname.clone(),
                suffix => format!("{fullname}-{suffix}"),
            };
            (format!("{NAME}{i}{NAME_END}"), expression)
        })
        .collect();
    for (placeholder, expression) in [
        (NAMESPACE, "{{ .Release.Namespace }}".to_string()),
        (
            IMAGE,
            "\"{{ .Values.image.repository }}:{{ .Values.image.tag }}\"".to_string(),
        ),
        (REPLICAS, "{{ .Values.replicaCount }}".to_string()),
        (LEADER_ELECT, "{{ .Values.leaderElection }}".to_string()),
        (METRICS_AUTH, "{{ .Values.metricsAuth }}".to_string()),
        (
            SERVICE_ACCOUNT,
            format!("{{{{ include \"{chart}.serviceAccountName\" . }}}}"),
        ),
    ] {
        replacements.push((placeholder.to_string(), expression));
    }
    for (placeholder, expression) in &replacements {
        text = text
            .replace(&format!("\"{placeholder}\""), expression)
            .replace(&format!("'{placeholder}'"), expression)
            .replace(placeholder, expression);
    }
    text = text.lines().map(|line| expand_line(chart, line)).collect();
    match guard {
        Some((open, close)) => format!("{open}{text}{close}"),
        None => text,
    }
}

/// `imagePullPolicy` at indentation `n`, only when `image.pullPolicy` is set.
fn pull_policy(n: usize) -> String {
    let pad = " ".repeat(n);
    format!(
        "{pad}{{{{- with .Values.image.pullPolicy }}}}\n{pad}imagePullPolicy: {{{{ . }}}}\n{pad}{{{{- end }}}}\n"
    )
}

/// A line with a block key becomes the block; `key: <toYaml placeholder>` becomes the value's
/// YAML; any other line stays.
fn expand_line(chart: &str, line: &str) -> String {
    let trimmed = line.trim_start();
    let column = line.len() - trimmed.len();
    if let Some(block) = trimmed
        .strip_prefix(BLOCK)
        .and_then(|r| r.split(NAME_END).next())
        .and_then(|i| i.parse::<usize>().ok())
        .and_then(|i| BLOCKS.get(i))
    {
        return block.lines(chart, column);
    }
    if trimmed == format!("imagePullPolicy: {PULL_POLICY}") {
        return pull_policy(column);
    }
    for (placeholder, value) in TO_YAML {
        if let Some(key) = trimmed.strip_suffix(&format!(": {placeholder}")) {
            // The `{{-` eats the space after the colon; nindent starts the map on the next line.
            return format!(
                "{}{key}: {{{{- toYaml .Values.{value} | nindent {} }}}}\n",
                &line[..column],
                column + 2
            );
        }
    }
    format!("{line}\n")
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

    fn file<'a>(files: &'a [(String, String)], path: &str) -> &'a str {
        files
            .iter()
            .find(|(p, _)| p == path)
            .map(|(_, t)| t.as_str())
            .unwrap_or_default()
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
            assert!(!text.contains("kustomize"), "{path}:\n{text}");
        }
        let manager = file(&files, "templates/manager/manager.yaml");
        for expected in [
            "replicas: {{ .Values.replicaCount }}\n",
            "- --leader-elect={{ .Values.leaderElection }}\n",
            "resources: {{- toYaml .Values.resources | nindent ",
            "securityContext: {{- toYaml .Values.podSecurityContext | nindent 8 }}\n",
            "serviceAccountName: {{ include \"demo-operator.serviceAccountName\" . }}\n",
            "name: {{ include \"demo-operator.fullname\" . }}-controller-manager\n",
            "{{- include \"demo-operator.selectorLabels\" . | nindent 6 }}\n",
            "{{- with .Values.tolerations }}\n",
        ] {
            assert!(manager.contains(expected), "{expected}\n{manager}");
        }
        let crd = file(&files, "templates/crd/bases/widgets.example.com.yaml");
        let crd = if crd.is_empty() {
            files
                .iter()
                .find(|(p, _)| p.starts_with("templates/crd/"))
                .map(|(_, t)| t.as_str())
                .unwrap_or_default()
        } else {
            crd
        };
        assert!(crd.starts_with("{{- if .Values.crds.install }}\n"), "{crd}");
        assert!(crd.contains("name: widgets.example.com\n"), "{crd}");
        assert!(
            file(&files, "templates/_helpers.tpl").contains("define \"demo-operator.fullname\"")
        );
        assert!(
            file(&files, "templates/NOTES.txt").contains("kubectl label --overwrite namespace")
        );
    }

    #[test]
    fn cluster_scoped_names_are_per_release() {
        let files = chart(&sample(), "0.1.0", "v0.1.0");
        let fullname = "{{ include \"demo-operator.fullname\" . }}";
        let binding = file(&files, "templates/rbac/role_binding.yaml");
        assert!(
            binding.contains(&format!("  name: {fullname}-manager-rolebinding\n")),
            "{binding}"
        );
        assert!(
            binding.contains(&format!("  name: {fullname}-manager-role\n")),
            "{binding}"
        );
        assert!(
            binding.contains("  name: {{ include \"demo-operator.serviceAccountName\" . }}\n"),
            "{binding}"
        );
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
    fn name_suffixes_drop_the_operator_name() {
        assert_eq!(name_suffix("op", "op-metrics"), "metrics");
        assert_eq!(name_suffix("op", "opx-metrics"), "opx-metrics");
        assert_eq!(
            name_suffix("op", "widget-viewer-role"),
            "widget-viewer-role"
        );
    }

    #[test]
    fn kustomize_paths_are_normalized() {
        assert_eq!(normalize("default/../crd"), "crd");
        assert_eq!(normalize("a/./b/../c.yaml"), "a/c.yaml");
    }
}
