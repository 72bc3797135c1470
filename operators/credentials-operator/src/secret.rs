//! The Secrets around a request: the root credentials read from theirs; whether the Secret at a
//! request's `secretRef` is the request's to change, and which request a written Secret belongs
//! to; what a write leaves of an existing Secret. The Secret a request gets is
//! [`mint::desired_secret`]'s. No API calls here.

use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::runtime::reflector::ObjectRef;

use crate::api::CredentialsRequest;
use crate::mint;

/// The root credentials: the Secret's resourceVersion, its keys, and the mode annotation.
pub struct RootCredentials {
    pub resource_version: String,
    pub access_key_id: String,
    pub secret_access_key: String,
    /// [`mint::MODE_ANNOTATION`], when set.
    pub mode: Option<String>,
}

impl std::fmt::Debug for RootCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RootCredentials")
            .field("resource_version", &self.resource_version)
            .field("mode", &self.mode)
            .finish_non_exhaustive()
    }
}

/// The root credentials in `secret`, root Secret `ns/name` (`None`: it doesn't exist); the
/// error says what is missing.
pub fn root_credentials(
    secret: Option<&Secret>,
    ns: &str,
    name: &str,
) -> Result<RootCredentials, String> {
    let secret = secret.ok_or_else(|| format!("Secret {ns}/{name} not found"))?;
    let value = |key: &str| {
        mint::secret_value(secret, key).ok_or_else(|| format!("Secret {ns}/{name} has no {key}"))
    };
    Ok(RootCredentials {
        resource_version: secret.resource_version().unwrap_or_default(),
        access_key_id: value(mint::ACCESS_KEY_ID)?,
        secret_access_key: value(mint::SECRET_ACCESS_KEY)?,
        mode: secret.annotations().get(mint::MODE_ANNOTATION).cloned(),
    })
}

/// The Secret at `cr`'s `secretRef`, if it exists and is `cr`'s to change; an error, saying
/// what to do, if it exists and was not written for `cr` (it is never modified).
pub fn owned(existing: Option<Secret>, cr: &CredentialsRequest) -> Result<Option<Secret>, String> {
    match existing {
        Some(s) if !mint::is_for(&s, cr) => {
            let r = &cr.spec.secret_ref;
            Err(format!(
                "Secret {}/{} exists and was not written for this request; it is left untouched. \
                 Delete it, point secretRef at another name, or hand it over by annotating it \
                 {}={}",
                r.namespace,
                r.name,
                mint::SECRET_ANNOTATION,
                mint::request_key(cr)
            ))
        }
        other => Ok(other),
    }
}

/// The request a Secret written by this operator belongs to, by its annotation.
pub fn request_of(secret: &Secret) -> Option<ObjectRef<CredentialsRequest>> {
    let key = secret.annotations().get(mint::SECRET_ANNOTATION)?;
    let (ns, name) = key.split_once('/')?;
    Some(ObjectRef::new(name).within(ns))
}

/// `desired` written over `existing`: its type and data replace the existing ones; its labels
/// and annotations are added to the existing ones (a user's stay).
pub fn merged(mut existing: Secret, desired: &Secret) -> Secret {
    existing.metadata.managed_fields = None;
    existing
        .labels_mut()
        .extend(desired.metadata.labels.clone().unwrap_or_default());
    existing
        .annotations_mut()
        .extend(desired.metadata.annotations.clone().unwrap_or_default());
    existing.type_ = desired.type_.clone();
    existing.data = desired.data.clone();
    existing.string_data = None;
    existing
}

/// `existing` recording `document` as the policy last applied, unless it already does.
pub fn recording_policy(existing: &Secret, document: &str) -> Option<Secret> {
    let recorded = existing.annotations().get(mint::POLICY_ANNOTATION);
    if recorded.map(String::as_str) == Some(document) {
        return None;
    }
    let mut updated = existing.clone();
    updated
        .annotations_mut()
        .insert(mint::POLICY_ANNOTATION.to_owned(), document.to_owned());
    Some(updated)
}

/// Whether `existing` already holds `desired`'s data (nothing to write).
pub fn holds(existing: Option<&Secret>, desired: &Secret) -> bool {
    existing.is_some_and(|s| s.data == desired.data)
}

/// The access key ID and secret access key a minted request's Secret holds.
pub fn minted_credentials(secret: &Secret) -> Option<(String, String)> {
    Some((
        mint::secret_key_id(secret)?,
        mint::secret_value(secret, mint::SECRET_ACCESS_KEY)?,
    ))
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;

    use k8s_openapi::ByteString;

    use super::*;
    use crate::api::{CredentialsRequestSpec, ProviderSpec, SecretReference};

    fn request(name: &str) -> CredentialsRequest {
        let mut cr = CredentialsRequest::new(
            name,
            CredentialsRequestSpec {
                secret_ref: SecretReference {
                    name: "creds".into(),
                    namespace: "target".into(),
                },
                provider_spec: ProviderSpec {
                    kind: "AWSProviderSpec".into(),
                    ..ProviderSpec::default()
                },
                service_account_names: Vec::new(),
                cloud_token_path: None,
            },
        );
        cr.metadata.namespace = Some("home".into());
        cr
    }

    fn secret(data: &[(&str, &str)]) -> Secret {
        let mut s = Secret {
            data: Some(
                data.iter()
                    .map(|(k, v)| (k.to_string(), ByteString(v.as_bytes().to_vec())))
                    .collect(),
            ),
            ..Secret::default()
        };
        s.metadata.resource_version = Some("12".into());
        s
    }

    #[test]
    fn root_credentials_need_both_keys() {
        let ok = secret(&[
            (mint::ACCESS_KEY_ID, " AKIDROOT \n"),
            (mint::SECRET_ACCESS_KEY, "root-secret"),
        ]);
        let root = root_credentials(Some(&ok), "kube-system", "aws-creds");
        let root = root.as_ref().map(|r| {
            (
                r.resource_version.as_str(),
                r.access_key_id.as_str(),
                r.secret_access_key.as_str(),
                r.mode.clone(),
            )
        });
        assert_eq!(root, Ok(("12", "AKIDROOT", "root-secret", None)));

        let mut annotated = ok.clone();
        annotated
            .annotations_mut()
            .insert(mint::MODE_ANNOTATION.into(), "passthrough".into());
        let mode = root_credentials(Some(&annotated), "ns", "n").map(|r| r.mode);
        assert_eq!(mode, Ok(Some("passthrough".into())));

        let missing = root_credentials(None, "kube-system", "aws-creds").map(|_| ());
        assert_eq!(
            missing,
            Err("Secret kube-system/aws-creds not found".into())
        );
        let no_secret = secret(&[(mint::ACCESS_KEY_ID, "AKIDROOT")]);
        let error = root_credentials(Some(&no_secret), "ns", "n").map(|_| ());
        assert_eq!(
            error,
            Err("Secret ns/n has no aws_secret_access_key".into())
        );
        let blank = secret(&[(mint::ACCESS_KEY_ID, "  "), (mint::SECRET_ACCESS_KEY, "s")]);
        let error = root_credentials(Some(&blank), "ns", "n").map(|_| ());
        assert_eq!(error, Err("Secret ns/n has no aws_access_key_id".into()));
    }

    #[test]
    fn root_credentials_never_show_their_keys() {
        let root = RootCredentials {
            resource_version: "1".into(),
            access_key_id: "AKIDROOT".into(),
            secret_access_key: "root-secret".into(),
            mode: None,
        };
        let shown = format!("{root:?}");
        assert!(
            !shown.contains("AKIDROOT") && !shown.contains("root-secret"),
            "{shown}"
        );
    }

    #[test]
    fn only_a_secret_written_for_the_request_is_its_to_change() {
        let cr = request("app");
        assert_eq!(owned(None, &cr), Ok(None));
        let ours = mint::desired_secret(&cr, "AKID", "s", None);
        assert_eq!(owned(Some(ours.clone()), &cr), Ok(Some(ours.clone())));
        let error = owned(Some(ours), &request("other"));
        assert_eq!(
            error,
            Err(
                "Secret target/creds exists and was not written for this request; it is left \
                 untouched. Delete it, point secretRef at another name, or hand it over by \
                 annotating it cloudcredential.openshift.io/credentials-request=home/other"
                    .into()
            )
        );
        let foreign = secret(&[]);
        assert!(owned(Some(foreign), &cr).is_err());
    }

    #[test]
    fn a_written_secret_maps_back_to_its_request() {
        let cr = request("app");
        let ours = mint::desired_secret(&cr, "AKID", "s", None);
        assert_eq!(
            request_of(&ours),
            Some(ObjectRef::new("app").within("home"))
        );
        assert_eq!(request_of(&secret(&[])), None);
        let mut malformed = secret(&[]);
        malformed
            .annotations_mut()
            .insert(mint::SECRET_ANNOTATION.into(), "no-slash".into());
        assert_eq!(request_of(&malformed), None);
    }

    #[test]
    fn a_write_keeps_the_users_labels_and_annotations_and_replaces_the_data() {
        let cr = request("app");
        let mut existing = secret(&[("stale", "x")]);
        existing.labels_mut().insert("team".into(), "a".into());
        existing
            .annotations_mut()
            .insert("note".into(), "mine".into());
        existing.string_data = Some(BTreeMap::from([("pending".into(), "y".into())]));
        existing.metadata.managed_fields = Some(Vec::new());
        let desired = mint::desired_secret(&cr, "AKID", "s", Some("{}"));
        let written = merged(existing, &desired);
        assert_eq!(written.labels().get("team").map(String::as_str), Some("a"));
        assert_eq!(
            written.labels().get(mint::SECRET_LABEL).map(String::as_str),
            Some("true")
        );
        assert_eq!(
            written.annotations().get("note").map(String::as_str),
            Some("mine")
        );
        assert!(mint::is_for(&written, &cr));
        assert_eq!(written.data, desired.data);
        assert_eq!(written.type_.as_deref(), Some("Opaque"));
        assert!(written.string_data.is_none());
        assert!(written.metadata.managed_fields.is_none());
        assert_eq!(written.metadata.resource_version.as_deref(), Some("12"));
        assert!(holds(Some(&written), &desired));
        assert!(!holds(None, &desired));
        assert!(!holds(Some(&secret(&[])), &desired));
    }

    #[test]
    fn the_policy_annotation_is_written_only_when_it_changed() {
        let cr = request("app");
        let existing = mint::desired_secret(&cr, "AKID", "s", Some("{\"a\":1}"));
        assert!(recording_policy(&existing, "{\"a\":1}").is_none());
        let updated = recording_policy(&existing, "{\"a\":2}");
        let recorded = updated
            .as_ref()
            .and_then(|s| s.annotations().get(mint::POLICY_ANNOTATION).cloned());
        assert_eq!(recorded.as_deref(), Some("{\"a\":2}"));
        assert_eq!(updated.map(|s| s.data), Some(existing.data.clone()));
        let unrecorded = mint::desired_secret(&cr, "AKID", "s", None);
        assert!(recording_policy(&unrecorded, "{}").is_some());
    }

    #[test]
    fn minted_credentials_need_both_keys() {
        let cr = request("app");
        let ours = mint::desired_secret(&cr, "AKID", "s3cret", None);
        assert_eq!(
            minted_credentials(&ours),
            Some(("AKID".into(), "s3cret".into()))
        );
        let sts = mint::desired_sts_secret(&cr, "arn:aws:iam::1:role/r");
        assert_eq!(minted_credentials(&sts), None);
    }
}
