//! Pure rules of mint mode (OpenShift's, see docs/credentials-operator.md): names, the policy
//! document, the Secret's contents. No API calls here.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use serde_json::{Value, json};

use crate::api::{CredentialsRequest, StatementEntry};

/// Secret key of the access key ID.
pub const ACCESS_KEY_ID: &str = "aws_access_key_id";
/// Secret key of the secret access key.
pub const SECRET_ACCESS_KEY: &str = "aws_secret_access_key";
/// Secret key of the INI credentials file (`[default]` profile).
pub const CREDENTIALS: &str = "credentials";
/// Label on every Secret the operator writes.
pub const SECRET_LABEL: &str = "cloudcredential.openshift.io/credentials-request";
/// Annotation on every Secret the operator writes: `<namespace>/<name>` of its request.
pub const SECRET_ANNOTATION: &str = "cloudcredential.openshift.io/credentials-request";
/// Annotation recording the policy last applied (OpenShift's).
pub const POLICY_ANNOTATION: &str = "cloudcredential.openshift.io/aws-policy-last-applied";
/// Annotation on the root credentials Secret saying how requests are served (OpenShift's secret
/// annotator writes it): [`MODE_MINT`], [`MODE_PASSTHROUGH`] or [`MODE_INSUFFICIENT`].
pub const MODE_ANNOTATION: &str = "cloudcredential.openshift.io/mode";
pub const MODE_MINT: &str = "mint";
pub const MODE_PASSTHROUGH: &str = "passthrough";
pub const MODE_INSUFFICIENT: &str = "insufficient";
/// Where a Pod's service account token is, when a request doesn't say (`spec.cloudTokenPath`).
pub const DEFAULT_TOKEN_PATH: &str = "/var/run/secrets/kubernetes.io/serviceaccount/token";
/// Finalizer that keeps a request until its cloud identity is gone.
pub const FINALIZER: &str = "cloudcredential.openshift.io/deprovision";
/// Tag on every minted IAM user: the UID of the request it was minted for. An existing user is
/// re-tagged, given a policy, re-keyed or deleted only when it carries this tag with the
/// request's UID: the identity in a request's status is only a name, and anyone who may write
/// the status could write another user's.
pub const REQUEST_TAG: &str = "credentials.operon.dev/request-uid";

/// Lowercase letters and digits, for user name suffixes.
const SUFFIX_ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

/// `<cluster[:20]>-<request[:37]>-<suffix>` (at most 64 characters, IAM's limit), with a
/// 5-character suffix drawn from `random` bytes.
pub fn user_name(cluster: &str, request: &str, random: [u8; 5]) -> String {
    let suffix: String = random
        .iter()
        .map(|b| SUFFIX_ALPHABET[*b as usize % SUFFIX_ALPHABET.len()] as char)
        .collect();
    format!("{}{suffix}", user_name_prefix(cluster, request))
}

/// `<cluster[:20]>-<request[:37]>-`: what every user name minted for `request` starts with.
pub fn user_name_prefix(cluster: &str, request: &str) -> String {
    format!("{}-{}-", truncate(cluster, 20), truncate(request, 37))
}

/// Whether `user` is a name [`user_name`] makes for `request` of `cluster`.
pub fn is_user_name(user: &str, cluster: &str, request: &str) -> bool {
    user.strip_prefix(&user_name_prefix(cluster, request))
        .is_some_and(|suffix| {
            suffix.len() == 5 && suffix.bytes().all(|b| SUFFIX_ALPHABET.contains(&b))
        })
}

/// A fresh random suffix source for [`user_name`].
pub fn random_suffix() -> [u8; 5] {
    let mut bytes = [0u8; 5];
    if ring::rand::SecureRandom::fill(&ring::rand::SystemRandom::new(), &mut bytes).is_err() {
        // Names need uniqueness, not secrecy: fall back on the clock.
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or_default();
        bytes = [
            nanos as u8,
            (nanos >> 8) as u8,
            (nanos >> 16) as u8,
            (nanos >> 24) as u8,
            std::process::id() as u8,
        ];
    }
    bytes
}

/// `<user>-policy`.
pub fn policy_name(user: &str) -> String {
    format!("{user}-policy")
}

/// The inline policy: the requested statements, then `iam:GetUser` on the user itself (so the
/// credentials can find out who they are).
pub fn policy_document(statements: &[StatementEntry], user_arn: &str) -> String {
    let mut entries: Vec<Value> = statements
        .iter()
        .map(|s| {
            let mut entry = json!({
                "Effect": s.effect.as_str(),
                "Action": s.action,
                "Resource": s.resource,
            });
            if let Some(condition) = &s.policy_condition {
                entry["Condition"] = json!(condition);
            }
            entry
        })
        .collect();
    entries.push(json!({
        "Effect": "Allow",
        "Action": ["iam:GetUser"],
        "Resource": user_arn,
    }));
    json!({ "Version": "2012-10-17", "Statement": entries }).to_string()
}

/// Whether two policy documents say the same (IAM may reformat what it stores).
pub fn same_policy(a: &str, b: &str) -> bool {
    match (
        serde_json::from_str::<Value>(a),
        serde_json::from_str::<Value>(b),
    ) {
        (Ok(a), Ok(b)) => a == b,
        _ => a == b,
    }
}

/// The INI credentials file of the `[default]` profile.
pub fn credentials_file(access_key_id: &str, secret_access_key: &str) -> String {
    format!(
        "[default]\naws_access_key_id = {access_key_id}\naws_secret_access_key = {secret_access_key}\n"
    )
}

/// The INI credentials file of short-lived credentials (AWS STS): the `[default]` profile assumes
/// `role_arn` with the web identity token at `token_path`, through the regional STS endpoint, as
/// OpenShift writes it.
pub fn sts_credentials_file(role_arn: &str, token_path: &str) -> String {
    format!(
        "[default]\nsts_regional_endpoints = regional\nrole_arn = {role_arn}\nweb_identity_token_file = {token_path}\n"
    )
}

/// The Secret of a request for short-lived credentials: only the `credentials` profile of
/// [`sts_credentials_file`] (no keys), with the label and annotation of every Secret written
/// for a request.
pub fn desired_sts_secret(cr: &CredentialsRequest, role_arn: &str) -> Secret {
    let token_path = cr
        .spec
        .cloud_token_path
        .as_deref()
        .unwrap_or(DEFAULT_TOKEN_PATH);
    let mut secret = desired_secret(cr, "", "", None);
    secret.data = Some(BTreeMap::from([(
        CREDENTIALS.to_owned(),
        ByteString(sts_credentials_file(role_arn, token_path).into_bytes()),
    )]));
    secret
}

/// The text under `key` of a Secret, trimmed; `None` when absent or empty.
pub fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    let bytes = secret.data.as_ref()?.get(key)?;
    std::str::from_utf8(&bytes.0)
        .ok()
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(str::to_owned)
}

/// `<namespace>/<name>` of a request.
pub fn request_key(cr: &CredentialsRequest) -> String {
    format!(
        "{}/{}",
        cr.metadata.namespace.as_deref().unwrap_or_default(),
        cr.metadata.name.as_deref().unwrap_or_default()
    )
}

/// Whether `secret` was written for `cr` (by its annotation). Secrets that aren't are never
/// modified or deleted.
pub fn is_for(secret: &Secret, cr: &CredentialsRequest) -> bool {
    secret
        .metadata
        .annotations
        .as_ref()
        .and_then(|a| a.get(SECRET_ANNOTATION))
        .is_some_and(|v| *v == request_key(cr))
}

/// The Secret holding `access_key_id`/`secret_access_key` for `cr` (Opaque, label and
/// annotation; no ownerReference: it may live in another namespace, the finalizer removes it).
pub fn desired_secret(
    cr: &CredentialsRequest,
    access_key_id: &str,
    secret_access_key: &str,
    policy: Option<&str>,
) -> Secret {
    let mut annotations = BTreeMap::from([(SECRET_ANNOTATION.to_owned(), request_key(cr))]);
    if let Some(policy) = policy {
        annotations.insert(POLICY_ANNOTATION.to_owned(), policy.to_owned());
    }
    let value = |s: &str| ByteString(s.as_bytes().to_vec());
    Secret {
        metadata: ObjectMeta {
            name: Some(cr.spec.secret_ref.name.clone()),
            namespace: Some(cr.spec.secret_ref.namespace.clone()),
            labels: Some(BTreeMap::from([(
                SECRET_LABEL.to_owned(),
                "true".to_owned(),
            )])),
            annotations: Some(annotations),
            ..ObjectMeta::default()
        },
        type_: Some("Opaque".to_owned()),
        data: Some(BTreeMap::from([
            (ACCESS_KEY_ID.to_owned(), value(access_key_id)),
            (SECRET_ACCESS_KEY.to_owned(), value(secret_access_key)),
            (
                CREDENTIALS.to_owned(),
                value(&credentials_file(access_key_id, secret_access_key)),
            ),
        ])),
        ..Secret::default()
    }
}

/// The access key ID a Secret holds, if any.
pub fn secret_key_id(secret: &Secret) -> Option<String> {
    secret_value(secret, ACCESS_KEY_ID)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::api::{
        CredentialsRequestSpec, Effect, ProviderSpec, SecretReference, StatementEntry,
    };

    fn statement() -> StatementEntry {
        StatementEntry {
            effect: Effect::Allow,
            action: vec!["ec2:DescribeInstances".into()],
            resource: "*".into(),
            policy_condition: None,
        }
    }

    fn request() -> CredentialsRequest {
        let mut cr = CredentialsRequest::new(
            "aws-creds-to-describe-all-instances",
            CredentialsRequestSpec {
                secret_ref: SecretReference {
                    name: "secret-to-store-credentials".into(),
                    namespace: "devconf".into(),
                },
                provider_spec: ProviderSpec {
                    kind: "AWSProviderSpec".into(),
                    statement_entries: Some(vec![statement()]),
                    ..ProviderSpec::default()
                },
                service_account_names: Vec::new(),
                cloud_token_path: None,
            },
        );
        cr.metadata.namespace = Some("devconf".into());
        cr
    }

    #[test]
    fn an_sts_secret_holds_the_role_and_the_token_path_only() {
        let mut cr = request();
        let role = "arn:aws:iam::123456789012:role/describer";
        let secret = desired_sts_secret(&cr, role);
        let data = secret.data.clone().unwrap_or_default();
        assert_eq!(data.keys().collect::<Vec<_>>(), ["credentials"]);
        assert_eq!(
            secret_value(&secret, CREDENTIALS).as_deref(),
            Some(
                "[default]\nsts_regional_endpoints = regional\nrole_arn = arn:aws:iam::123456789012:role/describer\nweb_identity_token_file = /var/run/secrets/kubernetes.io/serviceaccount/token"
            )
        );
        assert!(is_for(&secret, &cr));
        cr.spec.cloud_token_path = Some("/var/run/secrets/openshift/serviceaccount/token".into());
        let secret = desired_sts_secret(&cr, role);
        assert!(
            secret_value(&secret, CREDENTIALS)
                .is_some_and(|c| c.ends_with("= /var/run/secrets/openshift/serviceaccount/token"))
        );
    }

    #[test]
    fn user_names_are_truncated_to_iams_limit() {
        let name = user_name(
            "a-very-long-cluster-identifier-indeed",
            "a-credentials-request-name-that-goes-on-and-on-and-on",
            [0, 1, 2, 35, 36],
        );
        assert_eq!(
            name,
            "a-very-long-cluster--a-credentials-request-name-that-goes--abc9a"
        );
        assert_eq!(name.len(), 64);
        let short = user_name("c", "r", [0; 5]);
        assert_eq!(short, "c-r-aaaaa");
        // Multi-byte characters are cut on character boundaries.
        assert_eq!(user_name("ééé", "x", [1; 5]), "ééé-x-bbbbb");
    }

    #[test]
    fn policy_has_the_statements_then_get_user_on_itself() -> Result<(), serde_json::Error> {
        let mut with_condition = statement();
        with_condition.effect = Effect::Deny;
        with_condition.policy_condition = Some(BTreeMap::from([(
            "StringEquals".to_string(),
            BTreeMap::from([("aws:RequestedRegion".to_string(), json!("us-east-1"))]),
        )]));
        let doc = policy_document(
            &[statement(), with_condition],
            "arn:aws:iam::123456789012:user/u",
        );
        let value: Value = serde_json::from_str(&doc)?;
        assert_eq!(
            value,
            json!({
                "Version": "2012-10-17",
                "Statement": [
                    { "Effect": "Allow", "Action": ["ec2:DescribeInstances"], "Resource": "*" },
                    { "Effect": "Deny", "Action": ["ec2:DescribeInstances"], "Resource": "*",
                      "Condition": { "StringEquals": { "aws:RequestedRegion": "us-east-1" } } },
                    { "Effect": "Allow", "Action": ["iam:GetUser"],
                      "Resource": "arn:aws:iam::123456789012:user/u" },
                ],
            })
        );
        assert!(same_policy(&doc, &value.to_string()));
        assert!(!same_policy(&doc, "{}"));
        Ok(())
    }

    #[test]
    fn secret_layout() {
        let cr = request();
        let secret = desired_secret(&cr, "AKIDEXAMPLE", "SECRET", Some("{}"));
        assert_eq!(
            secret.metadata.name.as_deref(),
            Some("secret-to-store-credentials")
        );
        assert_eq!(secret.metadata.namespace.as_deref(), Some("devconf"));
        assert_eq!(secret.type_.as_deref(), Some("Opaque"));
        let data = secret.data.clone().unwrap_or_default();
        let text = |k: &str| String::from_utf8(data[k].0.clone()).unwrap_or_default();
        assert_eq!(text(ACCESS_KEY_ID), "AKIDEXAMPLE");
        assert_eq!(text(SECRET_ACCESS_KEY), "SECRET");
        assert_eq!(
            text(CREDENTIALS),
            "[default]\naws_access_key_id = AKIDEXAMPLE\naws_secret_access_key = SECRET\n"
        );
        assert!(is_for(&secret, &cr));
        assert_eq!(secret_key_id(&secret).as_deref(), Some("AKIDEXAMPLE"));
        assert!(secret.metadata.owner_references.is_none());
        let mut other = cr.clone();
        other.metadata.name = Some("other".into());
        assert!(!is_for(&secret, &other));
    }
}
