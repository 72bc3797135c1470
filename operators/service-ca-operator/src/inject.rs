//! Pure CA bundle injection logic: which objects ask for the bundle ([`wants_injection`]) and
//! the JSON patch that writes it ([`injection_patch`]). Everything works on `serde_json::Value`
//! so one code path serves typed objects (serialised with `serde_json::to_value`) and dynamic
//! ones. No API calls here.
//!
//! Patches are RFC 6902 JSON patches (a `serde_json::Value` array), for every target:
//!
//! - the first op is `test /metadata/resourceVersion` (when the object carries one), so a patch
//!   computed from a stale copy fails instead of clobbering a concurrent change (this matters for
//!   webhook configurations, whose ops address `webhooks` by index);
//! - then `replace` (the field exists) or `add` (it does not; missing parent objects are added
//!   whole) ops for the fields to write.
//!
//! A JSON *merge* patch cannot express the ConfigMap case (it can't drop the other `data` keys),
//! hence the uniform JSON patch: for a ConfigMap the op replaces the whole `/data` with
//! `{"service-ca.crt": bundle}`. The controller must send it as a JSON patch
//! (`application/json-patch+json`, `kube::api::Patch::Json`), or apply it locally and update.

use std::collections::BTreeMap;

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use serde_json::{Map, Value, json};

use crate::{
    ALPHA_INJECT_CABUNDLE, DESCRIPTION, INJECT_CABUNDLE, INJECT_VULNERABLE_LEGACY_CABUNDLE,
    INJECTED_CA_BUNDLE_KEY, LEGACY_CABUNDLE_CONFIGMAP, OWNING_COMPONENT, OWNING_COMPONENT_NAME,
};

/// OpenShift's description annotation on an injected ConfigMap (set when absent).
pub const CONFIGMAP_DESCRIPTION: &str = "Holds, under service-ca.crt, the CA bundle that \
     verifies serving certificates signed by service-ca-operator; written because of its \
     inject-cabundle annotation.";

/// The kinds of object the CA bundle is injected into.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Target {
    /// `v1 ConfigMap`: `data` becomes `{service-ca.crt: bundle}`.
    ConfigMap,
    /// `apiregistration.k8s.io APIService`: `spec.caBundle`.
    ApiService,
    /// `apiextensions.k8s.io CustomResourceDefinition`:
    /// `spec.conversion.webhook.clientConfig.caBundle`, only with the `Webhook` strategy.
    Crd,
    /// `admissionregistration.k8s.io MutatingWebhookConfiguration`: every
    /// `webhooks[i].clientConfig.caBundle`.
    MutatingWebhook,
    /// `admissionregistration.k8s.io ValidatingWebhookConfiguration`: every
    /// `webhooks[i].clientConfig.caBundle`.
    ValidatingWebhook,
}

impl Target {
    /// The target for an object's `apiVersion` and `kind`; the version is not checked, only the
    /// group (core, `apiregistration.k8s.io`, `apiextensions.k8s.io`,
    /// `admissionregistration.k8s.io`).
    pub fn from_kind(api_version: &str, kind: &str) -> Option<Target> {
        let group = api_version
            .rsplit_once('/')
            .map_or("", |(group, _version)| group);
        match (group, kind) {
            ("", "ConfigMap") => Some(Target::ConfigMap),
            ("apiregistration.k8s.io", "APIService") => Some(Target::ApiService),
            ("apiextensions.k8s.io", "CustomResourceDefinition") => Some(Target::Crd),
            ("admissionregistration.k8s.io", "MutatingWebhookConfiguration") => {
                Some(Target::MutatingWebhook)
            }
            ("admissionregistration.k8s.io", "ValidatingWebhookConfiguration") => {
                Some(Target::ValidatingWebhook)
            }
            _ => None,
        }
    }

    /// The target of an object, from its `apiVersion` and `kind` fields.
    pub fn of(object: &Value) -> Option<Target> {
        let api_version = object.get("apiVersion")?.as_str()?;
        let kind = object.get("kind")?.as_str()?;
        Target::from_kind(api_version, kind)
    }

    /// Whether [`ALPHA_INJECT_CABUNDLE`] is honoured besides [`INJECT_CABUNDLE`]: only for
    /// ConfigMaps and APIServices.
    pub fn honours_alpha(self) -> bool {
        matches!(self, Target::ConfigMap | Target::ApiService)
    }
}

fn is_true(annotations: &BTreeMap<String, String>, key: &str) -> bool {
    annotations
        .get(key)
        .is_some_and(|v| v.eq_ignore_ascii_case("true"))
}

/// Whether the annotations ask for injection: [`INJECT_CABUNDLE`] (or [`ALPHA_INJECT_CABUNDLE`]
/// where [`Target::honours_alpha`]) set to `"true"`, case-insensitive; any other value is false.
/// Either annotation being true is enough.
pub fn wants_injection(target: Target, annotations: &BTreeMap<String, String>) -> bool {
    is_true(annotations, INJECT_CABUNDLE)
        || (target.honours_alpha() && is_true(annotations, ALPHA_INJECT_CABUNDLE))
}

/// Whether a ConfigMap asks for the legacy bundle ([`INJECT_VULNERABLE_LEGACY_CABUNDLE`]): only
/// [`LEGACY_CABUNDLE_CONFIGMAP`], and only without either regular injection annotation (whatever
/// its value), so that the two never fight over the same ConfigMap.
pub fn wants_legacy_injection(name: &str, annotations: &BTreeMap<String, String>) -> bool {
    name == LEGACY_CABUNDLE_CONFIGMAP
        && is_true(annotations, INJECT_VULNERABLE_LEGACY_CABUNDLE)
        && !annotations.contains_key(INJECT_CABUNDLE)
        && !annotations.contains_key(ALPHA_INJECT_CABUNDLE)
}

/// The legacy bundle: the CA bundle, then the cluster's CA (`cluster_ca_pem`), then a newline,
/// as OpenShift builds it.
pub fn legacy_bundle(bundle_pem: &str, cluster_ca_pem: &str) -> String {
    format!("{bundle_pem}{cluster_ca_pem}\n")
}

/// PEM `CERTIFICATE` blocks of DER certificates (64 columns, LF, as OpenSSL writes them), one
/// after another without a blank line between them.
pub fn pem_certificates(ders: &[Vec<u8>]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    ders.iter()
        .map(|der| pem::encode_config(&pem::Pem::new("CERTIFICATE", der.as_slice()), config))
        .collect()
}

/// `metadata.annotations` of an object (string values only), for [`wants_injection`].
pub fn annotations(object: &Value) -> BTreeMap<String, String> {
    object
        .pointer("/metadata/annotations")
        .and_then(Value::as_object)
        .map(|m| {
            m.iter()
                .filter_map(|(k, v)| Some((k.clone(), v.as_str()?.to_owned())))
                .collect()
        })
        .unwrap_or_default()
}

/// Whether a base64 `caBundle` field already holds exactly `bundle`.
fn ca_bundle_equals(field: Option<&Value>, bundle: &[u8]) -> bool {
    field
        .and_then(Value::as_str)
        .and_then(|s| STANDARD.decode(s).ok())
        .is_some_and(|bytes| bytes == bundle)
}

/// Appends the op setting `segments` (under the object `base`, found at `base_path`) to `value`:
/// `replace` when the field exists, else `add` at the first missing level with the missing
/// parents built around `value`. A non-object parent on the way is overwritten the same way.
fn set_field(ops: &mut Vec<Value>, base_path: &str, base: &Value, segments: &[&str], value: Value) {
    let mut path = base_path.to_owned();
    let mut current = Some(base);
    for (i, segment) in segments.iter().enumerate() {
        path.push('/');
        path.push_str(segment);
        let is_last = i + 1 == segments.len();
        let next = current.and_then(|c| c.get(segment));
        match next {
            Some(_) if is_last => {
                ops.push(json!({"op": "replace", "path": path, "value": value}));
                return;
            }
            Some(v) if v.is_object() => current = Some(v),
            _ => {
                // Missing (or not an object): add it whole; `add` replaces an existing member.
                let nested = segments[i + 1..].iter().rev().fold(value, |inner, key| {
                    let mut m = Map::new();
                    m.insert((*key).to_owned(), inner);
                    Value::Object(m)
                });
                ops.push(json!({"op": "add", "path": path, "value": nested}));
                return;
            }
        }
    }
}

/// Ops adding OpenShift's owning-component and description annotations to a ConfigMap where
/// they are missing or empty (someone else's claim stays).
fn claim_configmap(ops: &mut Vec<Value>, object: &Value) {
    let current = object.pointer("/metadata/annotations");
    let missing: Map<String, Value> = [
        (OWNING_COMPONENT, OWNING_COMPONENT_NAME),
        (DESCRIPTION, CONFIGMAP_DESCRIPTION),
    ]
    .into_iter()
    .filter(|(key, _)| {
        current
            .and_then(|a| a.get(key))
            .and_then(Value::as_str)
            .is_none_or(str::is_empty)
    })
    .map(|(key, value)| (key.to_owned(), Value::String(value.to_owned())))
    .collect();
    if missing.is_empty() {
        return;
    }
    if current.is_some_and(Value::is_object) {
        for (key, value) in missing {
            // JSON pointer escaping: `~` → `~0`, `/` → `~1`.
            let key = key.replace('~', "~0").replace('/', "~1");
            ops.push(json!({"op": "add", "path": format!("/metadata/annotations/{key}"), "value": value}));
        }
    } else {
        ops.push(json!({"op": "add", "path": "/metadata/annotations", "value": missing}));
    }
}

/// The JSON patch injecting `bundle_pem` into `object` (a `target`), or `None` when there is
/// nothing to write: the object already holds exactly the bundle, or nothing applies (a CRD
/// whose `spec.conversion.strategy` isn't `Webhook`, a webhook configuration without webhooks).
///
/// See the module docs for the patch shape. Webhook configurations: only the webhooks whose
/// `clientConfig.caBundle` differs get an op; the others are left alone.
pub fn injection_patch(target: Target, object: &Value, bundle_pem: &str) -> Option<Value> {
    let bundle = bundle_pem.as_bytes();
    let encoded = Value::String(STANDARD.encode(bundle));
    let mut ops = Vec::new();
    match target {
        Target::ConfigMap => {
            let mut wanted = Map::new();
            wanted.insert(
                INJECTED_CA_BUNDLE_KEY.to_owned(),
                Value::String(bundle_pem.to_owned()),
            );
            let wanted = Value::Object(wanted);
            if object.get("data") == Some(&wanted) {
                return None;
            }
            set_field(&mut ops, "", object, &["data"], wanted);
            claim_configmap(&mut ops, object);
        }
        Target::ApiService => {
            if ca_bundle_equals(object.pointer("/spec/caBundle"), bundle) {
                return None;
            }
            set_field(&mut ops, "", object, &["spec", "caBundle"], encoded);
        }
        Target::Crd => {
            let strategy = object
                .pointer("/spec/conversion/strategy")
                .and_then(Value::as_str);
            if strategy != Some("Webhook") {
                return None;
            }
            let field = object.pointer("/spec/conversion/webhook/clientConfig/caBundle");
            if ca_bundle_equals(field, bundle) {
                return None;
            }
            set_field(
                &mut ops,
                "",
                object,
                &["spec", "conversion", "webhook", "clientConfig", "caBundle"],
                encoded,
            );
        }
        Target::MutatingWebhook | Target::ValidatingWebhook => {
            let webhooks = object.get("webhooks").and_then(Value::as_array)?;
            for (i, webhook) in webhooks.iter().enumerate() {
                if ca_bundle_equals(webhook.pointer("/clientConfig/caBundle"), bundle) {
                    continue;
                }
                set_field(
                    &mut ops,
                    &format!("/webhooks/{i}"),
                    webhook,
                    &["clientConfig", "caBundle"],
                    encoded.clone(),
                );
            }
        }
    }
    if ops.is_empty() {
        return None;
    }
    if let Some(rv) = object
        .pointer("/metadata/resourceVersion")
        .and_then(Value::as_str)
    {
        ops.insert(
            0,
            json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv}),
        );
    }
    Some(Value::Array(ops))
}

#[cfg(test)]
mod tests {
    use super::*;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const BUNDLE: &str = "-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n";
    const OTHER: &str = "-----BEGIN CERTIFICATE-----\nOLD\n-----END CERTIFICATE-----\n";
    const ALL: [Target; 5] = [
        Target::ConfigMap,
        Target::ApiService,
        Target::Crd,
        Target::MutatingWebhook,
        Target::ValidatingWebhook,
    ];

    fn b64(s: &str) -> String {
        STANDARD.encode(s.as_bytes())
    }

    fn ann(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
            .collect()
    }

    fn test_rv(rv: &str) -> Value {
        json!({"op": "test", "path": "/metadata/resourceVersion", "value": rv})
    }

    fn webhook_config(kind: &str, bundles: &[Option<&str>]) -> Value {
        let webhooks: Vec<Value> = bundles
            .iter()
            .enumerate()
            .map(|(i, b)| {
                let mut client = json!({"service": {"namespace": "ns", "name": format!("w{i}")}});
                if let (Some(b), Some(m)) = (b, client.as_object_mut()) {
                    m.insert("caBundle".to_owned(), Value::String(b64(b)));
                }
                json!({"name": format!("w{i}.example.com"), "clientConfig": client})
            })
            .collect();
        json!({
            "apiVersion": "admissionregistration.k8s.io/v1",
            "kind": kind,
            "metadata": {"name": "hooks", "resourceVersion": "7"},
            "webhooks": webhooks,
        })
    }

    #[test]
    fn from_kind_maps_groups_and_kinds() {
        assert_eq!(
            Target::from_kind("v1", "ConfigMap"),
            Some(Target::ConfigMap)
        );
        assert_eq!(
            Target::from_kind("apiregistration.k8s.io/v1", "APIService"),
            Some(Target::ApiService)
        );
        assert_eq!(
            Target::from_kind("apiextensions.k8s.io/v1", "CustomResourceDefinition"),
            Some(Target::Crd)
        );
        assert_eq!(
            Target::from_kind(
                "admissionregistration.k8s.io/v1",
                "MutatingWebhookConfiguration"
            ),
            Some(Target::MutatingWebhook)
        );
        assert_eq!(
            Target::from_kind(
                "admissionregistration.k8s.io/v1",
                "ValidatingWebhookConfiguration"
            ),
            Some(Target::ValidatingWebhook)
        );
        assert_eq!(Target::from_kind("v1", "Secret"), None);
        assert_eq!(Target::from_kind("example.com/v1", "ConfigMap"), None);
        assert_eq!(
            Target::of(&json!({"apiVersion": "v1", "kind": "ConfigMap"})),
            Some(Target::ConfigMap)
        );
        assert_eq!(Target::of(&json!({"kind": "ConfigMap"})), None);
    }

    #[test]
    fn wants_injection_beta_for_every_target() {
        for target in ALL {
            assert!(wants_injection(target, &ann(&[(INJECT_CABUNDLE, "true")])));
            assert!(wants_injection(target, &ann(&[(INJECT_CABUNDLE, "TRUE")])));
            assert!(wants_injection(target, &ann(&[(INJECT_CABUNDLE, "True")])));
            assert!(!wants_injection(
                target,
                &ann(&[(INJECT_CABUNDLE, "false")])
            ));
            assert!(!wants_injection(target, &ann(&[(INJECT_CABUNDLE, "yes")])));
            assert!(!wants_injection(target, &ann(&[(INJECT_CABUNDLE, "")])));
            assert!(!wants_injection(target, &ann(&[])));
            assert!(!wants_injection(target, &ann(&[("other", "true")])));
        }
    }

    #[test]
    fn wants_injection_alpha_only_where_honoured() {
        for target in ALL {
            let alpha = ann(&[(ALPHA_INJECT_CABUNDLE, "TRUE")]);
            let honoured = matches!(target, Target::ConfigMap | Target::ApiService);
            assert_eq!(target.honours_alpha(), honoured, "{target:?}");
            assert_eq!(wants_injection(target, &alpha), honoured, "{target:?}");
            let alpha_false = ann(&[(ALPHA_INJECT_CABUNDLE, "false")]);
            assert!(!wants_injection(target, &alpha_false), "{target:?}");
        }
    }

    #[test]
    fn annotations_reads_string_values() {
        let obj = json!({"metadata": {"annotations": {INJECT_CABUNDLE: "true", "n": 1}}});
        assert_eq!(annotations(&obj), ann(&[(INJECT_CABUNDLE, "true")]));
        assert!(annotations(&json!({})).is_empty());
    }

    #[test]
    fn configmap_data_replaced_with_only_the_bundle() -> TestResult {
        let cm = json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": "ca", "namespace": "ns", "resourceVersion": "42"},
            "data": {"other": "x", INJECTED_CA_BUNDLE_KEY: OTHER},
        });
        let patch = injection_patch(Target::ConfigMap, &cm, BUNDLE).ok_or("no patch")?;
        assert_eq!(
            patch,
            json!([
                test_rv("42"),
                {"op": "replace", "path": "/data", "value": {INJECTED_CA_BUNDLE_KEY: BUNDLE}},
                {"op": "add", "path": "/metadata/annotations", "value": {
                    OWNING_COMPONENT: OWNING_COMPONENT_NAME,
                    DESCRIPTION: CONFIGMAP_DESCRIPTION,
                }},
            ])
        );
        // Applying it leaves only the bundle.
        let mut applied = cm.clone();
        if let Some(m) = applied.as_object_mut() {
            m.insert("data".to_owned(), json!({INJECTED_CA_BUNDLE_KEY: BUNDLE}));
        }
        assert_eq!(injection_patch(Target::ConfigMap, &applied, BUNDLE), None);
        Ok(())
    }

    #[test]
    fn configmap_without_data_gets_add() -> TestResult {
        let cm = json!({"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "ca"}});
        let patch = injection_patch(Target::ConfigMap, &cm, BUNDLE).ok_or("no patch")?;
        // No resourceVersion, no test op.
        assert_eq!(
            patch,
            json!([
                {"op": "add", "path": "/data", "value": {INJECTED_CA_BUNDLE_KEY: BUNDLE}},
                {"op": "add", "path": "/metadata/annotations", "value": {
                    OWNING_COMPONENT: OWNING_COMPONENT_NAME,
                    DESCRIPTION: CONFIGMAP_DESCRIPTION,
                }},
            ])
        );
        Ok(())
    }

    #[test]
    fn configmap_annotations_are_claimed_only_where_unset() -> TestResult {
        let cm = json!({
            "metadata": {"name": "ca", "annotations": {
                INJECT_CABUNDLE: "true",
                OWNING_COMPONENT: "my-team",
                DESCRIPTION: "",
            }},
        });
        let patch = injection_patch(Target::ConfigMap, &cm, BUNDLE).ok_or("no patch")?;
        assert_eq!(
            patch,
            json!([
                {"op": "add", "path": "/data", "value": {INJECTED_CA_BUNDLE_KEY: BUNDLE}},
                {"op": "add", "path": "/metadata/annotations/openshift.io~1description",
                 "value": CONFIGMAP_DESCRIPTION},
            ])
        );
        // Applied, it is a valid JSON patch that keeps the other team's claim.
        let patch: json_patch::Patch = serde_json::from_value(patch)?;
        let mut applied = cm.clone();
        json_patch::patch(&mut applied, &patch)?;
        assert_eq!(
            applied["metadata"]["annotations"][OWNING_COMPONENT],
            "my-team"
        );
        assert_eq!(
            applied["metadata"]["annotations"][DESCRIPTION],
            CONFIGMAP_DESCRIPTION
        );
        Ok(())
    }

    #[test]
    fn the_legacy_bundle_only_for_its_configmap_and_only_alone() {
        let legacy = ann(&[(INJECT_VULNERABLE_LEGACY_CABUNDLE, "True")]);
        assert!(wants_legacy_injection(LEGACY_CABUNDLE_CONFIGMAP, &legacy));
        assert!(!wants_legacy_injection("other", &legacy));
        let off = ann(&[(INJECT_VULNERABLE_LEGACY_CABUNDLE, "false")]);
        assert!(!wants_legacy_injection(LEGACY_CABUNDLE_CONFIGMAP, &off));
        // Either regular annotation, even "false", makes the legacy injector stand down.
        for key in [INJECT_CABUNDLE, ALPHA_INJECT_CABUNDLE] {
            let both = ann(&[(INJECT_VULNERABLE_LEGACY_CABUNDLE, "true"), (key, "false")]);
            assert!(
                !wants_legacy_injection(LEGACY_CABUNDLE_CONFIGMAP, &both),
                "{key}"
            );
        }
        assert_eq!(legacy_bundle("A\n", "B\n"), "A\nB\n\n");
    }

    #[test]
    fn pem_certificates_round_trip() -> TestResult {
        let der = vec![0x30, 0x03, 0x02, 0x01, 0x01];
        let long = vec![7u8; 100];
        let pem = pem_certificates(&[der.clone(), long.clone()]);
        let blocks: Vec<Vec<u8>> = x509_parser::pem::Pem::iter_from_buffer(pem.as_bytes())
            .map(|p| p.map(|p| p.contents))
            .collect::<Result<_, _>>()?;
        assert_eq!(blocks, [der.clone(), long]);
        assert!(pem.lines().all(|l| l.len() <= 64 || l.starts_with("-----")));
        // LF only, and the blocks follow each other directly, as before.
        assert!(!pem.contains('\r') && !pem.contains("\n\n"), "{pem}");
        assert_eq!(
            pem_certificates(&[der]),
            "-----BEGIN CERTIFICATE-----\nMAMCAQE=\n-----END CERTIFICATE-----\n"
        );
        Ok(())
    }

    #[test]
    fn configmap_with_bundle_plus_other_keys_is_rewritten() {
        let cm = json!({"data": {INJECTED_CA_BUNDLE_KEY: BUNDLE, "other": "x"}});
        assert!(injection_patch(Target::ConfigMap, &cm, BUNDLE).is_some());
    }

    #[test]
    fn apiservice_ca_bundle_is_base64() -> TestResult {
        let svc = json!({
            "apiVersion": "apiregistration.k8s.io/v1",
            "kind": "APIService",
            "metadata": {"name": "v1.metrics.k8s.io", "resourceVersion": "3"},
            "spec": {"group": "metrics.k8s.io", "version": "v1"},
        });
        let patch = injection_patch(Target::ApiService, &svc, BUNDLE).ok_or("no patch")?;
        assert_eq!(
            patch,
            json!([
                test_rv("3"),
                {"op": "add", "path": "/spec/caBundle", "value": b64(BUNDLE)},
            ])
        );

        let stale = json!({"metadata": {"resourceVersion": "4"}, "spec": {"caBundle": b64(OTHER)}});
        let patch = injection_patch(Target::ApiService, &stale, BUNDLE).ok_or("no patch")?;
        assert_eq!(
            patch,
            json!([
                test_rv("4"),
                {"op": "replace", "path": "/spec/caBundle", "value": b64(BUNDLE)},
            ])
        );

        let equal = json!({"spec": {"caBundle": b64(BUNDLE)}});
        assert_eq!(injection_patch(Target::ApiService, &equal, BUNDLE), None);
        Ok(())
    }

    #[test]
    fn crd_only_with_webhook_strategy() -> TestResult {
        let crd = |strategy: &str, conversion_extra: Value| {
            let mut conversion = json!({"strategy": strategy});
            if let (Some(m), Value::Object(extra)) = (conversion.as_object_mut(), conversion_extra)
            {
                m.extend(extra);
            }
            json!({
                "apiVersion": "apiextensions.k8s.io/v1",
                "kind": "CustomResourceDefinition",
                "metadata": {"name": "widgets.example.com", "resourceVersion": "9"},
                "spec": {"group": "example.com", "conversion": conversion},
            })
        };
        let client = json!({"service": {"namespace": "ns", "name": "conv"}});
        let webhook =
            json!({"webhook": {"clientConfig": client, "conversionReviewVersions": ["v1"]}});

        let obj = crd("Webhook", webhook);
        let patch = injection_patch(Target::Crd, &obj, BUNDLE).ok_or("no patch")?;
        assert_eq!(
            patch,
            json!([
                test_rv("9"),
                {
                    "op": "add",
                    "path": "/spec/conversion/webhook/clientConfig/caBundle",
                    "value": b64(BUNDLE),
                },
            ])
        );

        let equal = json!({"webhook": {"clientConfig": {"caBundle": b64(BUNDLE)}}});
        assert_eq!(
            injection_patch(Target::Crd, &crd("Webhook", equal), BUNDLE),
            None
        );
        let stale = json!({"webhook": {"clientConfig": {"caBundle": b64(OTHER)}}});
        let patch =
            injection_patch(Target::Crd, &crd("Webhook", stale), BUNDLE).ok_or("no patch")?;
        assert_eq!(
            patch.pointer("/1/op"),
            Some(&Value::String("replace".to_owned()))
        );

        // Missing webhook section: added whole.
        let patch =
            injection_patch(Target::Crd, &crd("Webhook", json!({})), BUNDLE).ok_or("no patch")?;
        assert_eq!(
            patch,
            json!([
                test_rv("9"),
                {
                    "op": "add",
                    "path": "/spec/conversion/webhook",
                    "value": {"clientConfig": {"caBundle": b64(BUNDLE)}},
                },
            ])
        );

        assert_eq!(
            injection_patch(Target::Crd, &crd("None", json!({})), BUNDLE),
            None
        );
        let no_conversion = json!({"spec": {"group": "example.com"}});
        assert_eq!(injection_patch(Target::Crd, &no_conversion, BUNDLE), None);
        Ok(())
    }

    #[test]
    fn webhook_configs_set_every_webhook() -> TestResult {
        for (target, kind) in [
            (Target::MutatingWebhook, "MutatingWebhookConfiguration"),
            (Target::ValidatingWebhook, "ValidatingWebhookConfiguration"),
        ] {
            let obj = webhook_config(kind, &[None, None]);
            let patch = injection_patch(target, &obj, BUNDLE).ok_or("no patch")?;
            assert_eq!(
                patch,
                json!([
                    test_rv("7"),
                    {"op": "add", "path": "/webhooks/0/clientConfig/caBundle", "value": b64(BUNDLE)},
                    {"op": "add", "path": "/webhooks/1/clientConfig/caBundle", "value": b64(BUNDLE)},
                ]),
                "{kind}"
            );
        }
        Ok(())
    }

    #[test]
    fn webhook_configs_patch_only_the_differing_webhook() -> TestResult {
        let obj = webhook_config("MutatingWebhookConfiguration", &[Some(BUNDLE), Some(OTHER)]);
        let patch = injection_patch(Target::MutatingWebhook, &obj, BUNDLE).ok_or("no patch")?;
        assert_eq!(
            patch,
            json!([
                test_rv("7"),
                {"op": "replace", "path": "/webhooks/1/clientConfig/caBundle", "value": b64(BUNDLE)},
            ])
        );

        let equal = webhook_config(
            "MutatingWebhookConfiguration",
            &[Some(BUNDLE), Some(BUNDLE)],
        );
        assert_eq!(
            injection_patch(Target::MutatingWebhook, &equal, BUNDLE),
            None
        );
        Ok(())
    }

    #[test]
    fn webhook_configs_without_webhooks_need_nothing() {
        let empty = webhook_config("ValidatingWebhookConfiguration", &[]);
        assert_eq!(
            injection_patch(Target::ValidatingWebhook, &empty, BUNDLE),
            None
        );
        let absent = json!({"metadata": {"name": "hooks"}});
        assert_eq!(
            injection_patch(Target::ValidatingWebhook, &absent, BUNDLE),
            None
        );
    }

    #[test]
    fn webhook_without_client_config_gets_it_added() -> TestResult {
        let obj = json!({"webhooks": [{"name": "a"}]});
        let patch = injection_patch(Target::ValidatingWebhook, &obj, BUNDLE).ok_or("no patch")?;
        assert_eq!(
            patch,
            json!([{
                "op": "add",
                "path": "/webhooks/0/clientConfig",
                "value": {"caBundle": b64(BUNDLE)},
            }])
        );
        Ok(())
    }
}
