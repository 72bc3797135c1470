//! An OLM bundle (format `registry+v1`) generated from the same declaration as the kustomize
//! tree ([`OperatorManifests`]), so that both deploy exactly the same operator:
//!
//! - `manifests/<name>.clusterserviceversion.yaml`: the ClusterServiceVersion. Its install
//!   strategy carries the Deployment's spec verbatim, the manager and metrics-auth rules as
//!   `clusterPermissions` and the leader-election rules as `permissions`, all for the
//!   operator's ServiceAccount (OLM creates the ServiceAccount, the Roles and their bindings).
//!   Owned CRDs get display names and spec/status descriptors taken from their OpenAPI schema;
//!   the samples become `alm-examples`.
//! - `manifests/<group>_<plural>.yaml`: each CRD, unchanged.
//! - the metrics Service and the metrics-reader ClusterRole (OLM installs namespaced extra
//!   objects into the operator's namespace, so theirs is dropped).
//! - `metadata/annotations.yaml`: the bundle annotations (media type, package, channels, and
//!   where the scorecard tests are).
//! - `tests/scorecard/config.yaml`: operator-sdk's default scorecard configuration (the basic
//!   spec check and the OLM tests).
//! - `bundle.Dockerfile`: the bundle image as `operator-sdk generate bundle` writes it, `FROM
//!   scratch`, its labels the annotations of `metadata/annotations.yaml`; built from the
//!   bundle's directory.
//!
//! Left out on purpose: the Namespace (OLM installs into an OperatorGroup's namespace), the
//! aggregated viewer/editor/admin roles (OLM generates its own for owned CRDs), the
//! NetworkPolicy and the Prometheus objects (not installable kinds for every OLM release, and
//! the latter need the Prometheus Operator's CRDs).

use serde_json::{Map, Value, json};

use crate::OperatorManifests;

/// What a bundle says about an operator beyond its deployment objects.
#[derive(Debug, Clone)]
pub struct BundleInfo {
    /// Semantic version of this bundle, e.g. `0.1.0` (the CSV is named `<name>.v<version>`).
    pub version: String,
    /// E.g. `Pod Operator`.
    pub display_name: String,
    /// Long description (Markdown), shown on the operator's page.
    pub description: String,
    /// Example custom resources (`alm-examples`); their `metadata.namespace` is dropped, as the
    /// console creates them in the namespace the user is in.
    pub samples: Vec<Value>,
    /// Channel of this bundle, also the default channel, e.g. `candidate` (OLM's naming
    /// convention: `candidate`, `fast` or `stable`, optionally with a version suffix).
    pub channel: String,
    /// Oldest supported Kubernetes, e.g. `1.29.0`.
    pub min_kube_version: String,
    /// Kinds of the objects the operator creates for its custom resources, as `(kind, version)`,
    /// e.g. `("Pod", "v1")`: the `resources` of every owned CRD.
    pub owned_resource_kinds: Vec<(String, String)>,
    /// `planning`, `pre-alpha`, `alpha`, `beta`, `stable`, `mature`, …
    pub maturity: String,
    /// Provider name, e.g. `Operon`.
    pub provider: String,
    pub keywords: Vec<String>,
    /// `(name, url)`, e.g. `("Source", "https://github.com/…")`.
    pub links: Vec<(String, String)>,
}

/// Condition lists get the console's conditions table.
const CONDITIONS_DESCRIPTOR: &str = "urn:alm:descriptor:io.kubernetes.conditions";

/// The bundle's files: `(path relative to bundle/<name>/, object)`.
pub fn bundle(m: &OperatorManifests, info: &BundleInfo) -> Vec<(String, Value)> {
    let mut files = vec![(
        format!("manifests/{}.clusterserviceversion.yaml", m.name),
        csv(m, info),
    )];
    for crd in &m.crds {
        files.push((format!("manifests/{}", crd_file_name(crd)), crd.clone()));
    }
    for extra in [m.metrics_service(), m.metrics_reader_role()] {
        let mut extra = extra;
        if let Some(meta) = extra["metadata"].as_object_mut() {
            meta.remove("namespace");
        }
        files.push((format!("manifests/{}", extra_file_name(&extra)), extra));
    }
    files.push((
        "metadata/annotations.yaml".to_string(),
        annotations(m, info),
    ));
    files.push((
        "tests/scorecard/config.yaml".to_string(),
        scorecard_config(),
    ));
    files
}

/// `metadata/annotations.yaml`.
pub fn annotations(m: &OperatorManifests, info: &BundleInfo) -> Value {
    json!({
        "annotations": {
            "operators.operatorframework.io.bundle.mediatype.v1": "registry+v1",
            "operators.operatorframework.io.bundle.manifests.v1": "manifests/",
            "operators.operatorframework.io.bundle.metadata.v1": "metadata/",
            "operators.operatorframework.io.bundle.package.v1": m.name,
            "operators.operatorframework.io.bundle.channels.v1": info.channel,
            "operators.operatorframework.io.bundle.channel.default.v1": info.channel,
            "operators.operatorframework.io.test.mediatype.v1": "scorecard+v1",
            "operators.operatorframework.io.test.config.v1": "tests/scorecard/",
        }
    })
}

/// The image operator-sdk's scaffolded scorecard configuration runs its built-in tests with.
pub const SCORECARD_IMAGE: &str = "quay.io/operator-framework/scorecard-test:v1.42.0";

/// The scorecard tests operator-sdk configures by default: `(entrypoint test, suite)`.
pub const SCORECARD_TESTS: [(&str, &str); 6] = [
    ("basic-check-spec", "basic"),
    ("olm-bundle-validation", "olm"),
    ("olm-crds-have-validation", "olm"),
    ("olm-crds-have-resources", "olm"),
    ("olm-spec-descriptors", "olm"),
    ("olm-status-descriptors", "olm"),
];

/// `tests/scorecard/config.yaml`.
pub fn scorecard_config() -> Value {
    let tests: Vec<Value> = SCORECARD_TESTS
        .iter()
        .map(|(test, suite)| {
            json!({
                "entrypoint": ["scorecard-test", test],
                "image": SCORECARD_IMAGE,
                "labels": { "suite": suite, "test": format!("{test}-test") },
            })
        })
        .collect();
    json!({
        "apiVersion": "scorecard.operatorframework.io/v1alpha3",
        "kind": "Configuration",
        "metadata": { "name": "config" },
        "stages": [{ "parallel": true, "tests": tests }],
        "storage": { "spec": { "mountPath": {} } },
    })
}

/// `bundle.Dockerfile`: one `LABEL` per bundle annotation, then the bundle's three directories.
pub fn dockerfile(m: &OperatorManifests, info: &BundleInfo) -> String {
    let annotations = annotations(m, info);
    let label = |key: &str| {
        let value = annotations["annotations"][key].as_str().unwrap_or_default();
        format!("LABEL {key}={value}\n")
    };
    let core: String = [
        "mediatype",
        "manifests",
        "metadata",
        "package",
        "channels",
        "channel.default",
    ]
    .iter()
    .map(|k| label(&format!("operators.operatorframework.io.bundle.{k}.v1")))
    .collect();
    let test: String = ["mediatype", "config"]
        .iter()
        .map(|k| label(&format!("operators.operatorframework.io.test.{k}.v1")))
        .collect();
    format!(
        "FROM scratch\n\n# Core bundle labels.\n{core}\n# Labels for testing.\n{test}\n\
         # Copy files to locations specified by labels.\n\
         COPY manifests /manifests/\nCOPY metadata /metadata/\nCOPY tests/scorecard /tests/scorecard/\n"
    )
}

/// The CSV's icon: the operator's gear on Operon's blue, in SVG.
const ICON: &str = r##"<svg xmlns="http://www.w3.org/2000/svg" viewBox="0 0 64 64"><rect width="64" height="64" rx="12" fill="#326ce5"/><circle cx="32" cy="32" r="14" fill="none" stroke="#fff" stroke-width="6"/><circle cx="32" cy="32" r="4" fill="#fff"/></svg>"##;

/// Standard base64 with padding.
fn base64(bytes: &[u8]) -> String {
    const ALPHABET: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(bytes.len().div_ceil(3) * 4);
    for chunk in bytes.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(char::from(ALPHABET[(n >> (18 - 6 * i)) as usize & 63]));
            } else {
                out.push('=');
            }
        }
    }
    out
}

/// `alm-examples`: the samples of owned kinds (OLM's validators reject an example of a kind
/// the bundle does not provide), and a bare example of each owned kind without a sample.
fn examples(m: &OperatorManifests, samples: Vec<Value>) -> Vec<Value> {
    let owned: Vec<(String, String)> = m
        .crds
        .iter()
        .flat_map(|crd| {
            let group = crd["spec"]["group"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            let kind = crd["spec"]["names"]["kind"]
                .as_str()
                .unwrap_or_default()
                .to_string();
            crd["spec"]["versions"]
                .as_array()
                .into_iter()
                .flatten()
                .filter_map(move |v| {
                    Some((format!("{group}/{}", v["name"].as_str()?), kind.clone()))
                })
        })
        .collect();
    let is_owned = |api_version: &Value, kind: &Value| {
        owned
            .iter()
            .any(|(a, k)| api_version.as_str() == Some(a) && kind.as_str() == Some(k))
    };
    let mut examples: Vec<Value> = samples
        .into_iter()
        .filter(|s| is_owned(&s["apiVersion"], &s["kind"]))
        .collect();
    for crd in &m.crds {
        let kind = &crd["spec"]["names"]["kind"];
        if examples.iter().any(|e| &e["kind"] == kind) {
            continue;
        }
        let versions = crd["spec"]["versions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        let Some(version) = versions.iter().find(|v| v["storage"] == true) else {
            continue;
        };
        examples.push(json!({
            "apiVersion": format!("{}/{}", crd["spec"]["group"].as_str().unwrap_or_default(),
                                  version["name"].as_str().unwrap_or_default()),
            "kind": kind,
            "metadata": { "name": "example" },
            "spec": {},
        }));
    }
    examples
}

/// The ClusterServiceVersion.
pub fn csv(m: &OperatorManifests, info: &BundleInfo) -> Value {
    let samples: Vec<Value> = info
        .samples
        .iter()
        .map(|sample| {
            let mut sample = sample.clone();
            if let Some(meta) = sample["metadata"].as_object_mut() {
                meta.remove("namespace");
            }
            sample
        })
        .collect();
    let samples = examples(m, samples);
    let alm_examples = serde_json::to_string_pretty(&samples).unwrap_or_else(|_| "[]".to_string());
    let deployment = m.deployment();
    let service_account = deployment["spec"]["template"]["spec"]["serviceAccountName"].clone();
    let rules_of = |role: Value| role["rules"].as_array().cloned().unwrap_or_default();
    let mut cluster_rules = rules_of(m.manager_role());
    cluster_rules.extend(rules_of(m.metrics_auth_role()));
    let mut namespace_rules = rules_of(m.leader_election_role());
    namespace_rules.extend(m.namespace_role().map(rules_of).unwrap_or_default());
    let install_modes: Vec<Value> = [
        ("OwnNamespace", true),
        ("SingleNamespace", true),
        ("MultiNamespace", false),
        ("AllNamespaces", true),
    ]
    .iter()
    .map(|(mode, supported)| json!({ "type": mode, "supported": supported }))
    .collect();
    let links: Vec<Value> = info
        .links
        .iter()
        .map(|(name, url)| json!({ "name": name, "url": url }))
        .collect();
    json!({
        "apiVersion": "operators.coreos.com/v1alpha1",
        "kind": "ClusterServiceVersion",
        "metadata": {
            "name": format!("{}.v{}", m.name, info.version),
            "annotations": {
                "alm-examples": alm_examples,
                "capabilities": "Basic Install",
                "containerImage": m.image,
                "operators.operatorframework.io/suggested-namespace": m.namespace,
            },
        },
        "spec": {
            "displayName": info.display_name,
            "description": info.description,
            "icon": [{ "base64data": base64(ICON.as_bytes()), "mediatype": "image/svg+xml" }],
            "version": info.version,
            "minKubeVersion": info.min_kube_version,
            "maturity": info.maturity,
            "provider": { "name": info.provider },
            "keywords": info.keywords,
            "links": links,
            "installModes": install_modes,
            "customresourcedefinitions": { "owned": owned_crds(m, info) },
            "install": {
                "strategy": "deployment",
                "spec": {
                    "clusterPermissions": [{
                        "serviceAccountName": service_account,
                        "rules": cluster_rules,
                    }],
                    "permissions": [{
                        "serviceAccountName": service_account,
                        "rules": namespace_rules,
                    }],
                    "deployments": [{
                        "name": deployment["metadata"]["name"],
                        "label": deployment["metadata"]["labels"],
                        "spec": deployment["spec"],
                    }],
                },
            },
        },
    })
}

/// One `owned` entry per served version of each CRD.
fn owned_crds(m: &OperatorManifests, info: &BundleInfo) -> Vec<Value> {
    let resources: Vec<Value> = info
        .owned_resource_kinds
        .iter()
        // `name` is the plural of a custom resource, empty for built-in kinds.
        .map(|(kind, version)| json!({ "kind": kind, "name": "", "version": version }))
        .collect();
    let mut owned = Vec::new();
    for crd in &m.crds {
        let kind = crd["spec"]["names"]["kind"].as_str().unwrap_or_default();
        let versions = crd["spec"]["versions"]
            .as_array()
            .cloned()
            .unwrap_or_default();
        for version in versions
            .iter()
            .filter(|v| v["served"].as_bool().unwrap_or(true))
        {
            let schema = &version["schema"]["openAPIV3Schema"];
            let mut entry = json!({
                "name": crd["metadata"]["name"],
                "version": version["name"],
                "kind": kind,
                "displayName": words(kind),
                "description": one_line(schema["description"].as_str().unwrap_or(kind)),
                "resources": resources,
                "specDescriptors": descriptors(&schema["properties"]["spec"], false),
                "statusDescriptors": descriptors(&schema["properties"]["status"], true),
            });
            if let Some(entry) = entry.as_object_mut() {
                // Empty lists are noise in the CSV.
                entry.retain(|_, v| v.as_array().is_none_or(|a| !a.is_empty()));
            }
            owned.push(entry);
        }
    }
    owned
}

/// A descriptor for each property of an object schema (`spec` or `status`).
fn descriptors(schema: &Value, status: bool) -> Vec<Value> {
    let empty = Map::new();
    let properties = schema["properties"].as_object().unwrap_or(&empty);
    properties
        .iter()
        .map(|(path, property)| {
            let mut descriptor = json!({ "path": path, "displayName": words(path) });
            if let Some(description) = property["description"].as_str() {
                descriptor["description"] = json!(one_line(description));
            }
            let x_descriptor = match (status, property["type"].as_str()) {
                (true, Some("array")) if path == "conditions" => Some(CONDITIONS_DESCRIPTOR),
                (false, Some("string")) => Some("urn:alm:descriptor:com.tectonic.ui:text"),
                (false, Some("integer" | "number")) => {
                    Some("urn:alm:descriptor:com.tectonic.ui:number")
                }
                (false, Some("boolean")) => {
                    Some("urn:alm:descriptor:com.tectonic.ui:booleanSwitch")
                }
                _ => None,
            };
            if let Some(x) = x_descriptor {
                descriptor["x-descriptors"] = json!([x]);
            }
            descriptor
        })
        .collect()
}

/// `podName` → `Pod Name`, `PodRequest` → `Pod Request`, `HTTPRoute` → `HTTP Route`.
pub fn words(name: &str) -> String {
    let chars: Vec<char> = name.chars().collect();
    let mut out = String::new();
    for (i, &c) in chars.iter().enumerate() {
        if i == 0 {
            out.extend(c.to_uppercase());
            continue;
        }
        let previous = chars[i - 1];
        let next_is_lower = chars.get(i + 1).is_some_and(|n| n.is_lowercase());
        if c.is_uppercase()
            && (previous.is_lowercase()
                || previous.is_ascii_digit()
                || (previous.is_uppercase() && next_is_lower))
        {
            out.push(' ');
        }
        if c == '_' || c == '-' {
            out.push(' ');
        } else {
            out.push(c);
        }
    }
    out
}

/// Schema descriptions are wrapped for source code; the console wraps them itself.
fn one_line(text: &str) -> String {
    text.split_whitespace().collect::<Vec<_>>().join(" ")
}

/// `<group>_<plural>.yaml`, as under config/<name>/crd/bases/.
fn crd_file_name(crd: &Value) -> String {
    let name = crd["metadata"]["name"].as_str().unwrap_or("crd");
    let (plural, group) = name.split_once('.').unwrap_or((name, ""));
    format!("{group}_{plural}.yaml")
}

/// operator-sdk's names for extra bundle objects: `<name>_<group>_<version>_<kind>.yaml`.
fn extra_file_name(object: &Value) -> String {
    let name = object["metadata"]["name"].as_str().unwrap_or("object");
    let api_version = object["apiVersion"]
        .as_str()
        .unwrap_or("v1")
        .replace('/', "_");
    let kind = object["kind"].as_str().unwrap_or("object").to_lowercase();
    format!("{name}_{api_version}_{kind}.yaml")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn base64_pads() {
        assert_eq!(base64(b""), "");
        assert_eq!(base64(b"f"), "Zg==");
        assert_eq!(base64(b"fo"), "Zm8=");
        assert_eq!(base64(b"foo"), "Zm9v");
        assert_eq!(base64(b"foob"), "Zm9vYg==");
    }

    #[test]
    fn words_split_camel_case_and_acronyms() {
        assert_eq!(words("podName"), "Pod Name");
        assert_eq!(words("PodRequest"), "Pod Request");
        assert_eq!(words("HTTPRoute"), "HTTP Route");
        assert_eq!(words("observedGeneration"), "Observed Generation");
        assert_eq!(words("image"), "Image");
        assert_eq!(words("ipv4Address"), "Ipv4 Address");
    }

    #[test]
    fn descriptors_mark_conditions_and_scalar_inputs() {
        let status = json!({ "properties": {
            "conditions": { "type": "array", "description": "Ready or\n  not." },
            "podName": { "type": "string" },
        }});
        let d = descriptors(&status, true);
        assert_eq!(d[0]["x-descriptors"], json!([CONDITIONS_DESCRIPTOR]));
        assert_eq!(d[0]["description"], "Ready or not.");
        assert!(d[1].get("x-descriptors").is_none());
        let spec = json!({ "properties": { "replicas": { "type": "integer" } } });
        assert_eq!(
            descriptors(&spec, false)[0]["x-descriptors"],
            json!(["urn:alm:descriptor:com.tectonic.ui:number"])
        );
    }
}
