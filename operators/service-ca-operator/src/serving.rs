//! Pure Service/Secret logic of the serving-certificate controller: which Secret a Service asks
//! for, what that Secret must look like, whether an existing one can be kept, and the error
//! annotations written back to the Service. No API calls here.

use std::collections::BTreeMap;
use std::time::Duration;

use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::{Secret, Service};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::pki::{self, Reason, ServingCert, ServingCertRequest, SigningCa};
use crate::{
    ALPHA_EXPIRY, ALPHA_ORIGINATING_SERVICE_NAME, ALPHA_ORIGINATING_SERVICE_UID,
    ALPHA_SERVING_CERT_GENERATION_ERROR, ALPHA_SERVING_CERT_GENERATION_ERROR_NUM,
    ALPHA_SERVING_CERT_SECRET_NAME, DESCRIPTION, EXPIRY, MANAGED_BY, MANAGED_BY_LABEL,
    MAX_GENERATION_ERRORS, ORIGINATING_SERVICE_NAME, ORIGINATING_SERVICE_UID, OWNING_COMPONENT,
    OWNING_COMPONENT_NAME, SERVING_CERT_GENERATION_ERROR, SERVING_CERT_GENERATION_ERROR_NUM,
    SERVING_CERT_SECRET_NAME, TLS_CERT_KEY, TLS_KEY_KEY,
};

/// `type` of the serving Secret.
pub const TLS_SECRET_TYPE: &str = "kubernetes.io/tls";

/// Secret annotations this operator owns (replaced by [`merged_secret`]).
const OWN_SECRET_ANNOTATIONS: [&str; 6] = [
    ORIGINATING_SERVICE_UID,
    ALPHA_ORIGINATING_SERVICE_UID,
    ORIGINATING_SERVICE_NAME,
    ALPHA_ORIGINATING_SERVICE_NAME,
    EXPIRY,
    ALPHA_EXPIRY,
];

fn annotation<'a>(meta: &'a ObjectMeta, key: &str) -> Option<&'a str> {
    meta.annotations
        .as_ref()?
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
}

/// The Secret name a Service asks for: [`SERVING_CERT_SECRET_NAME`] wins over
/// [`ALPHA_SERVING_CERT_SECRET_NAME`]; empty values count as absent.
pub fn requested_secret_name(svc: &Service) -> Option<String> {
    annotation(&svc.metadata, SERVING_CERT_SECRET_NAME)
        .or_else(|| annotation(&svc.metadata, ALPHA_SERVING_CERT_SECRET_NAME))
        .map(str::to_owned)
}

/// `spec.clusterIP: None`: the certificate also gets the wildcard names.
pub fn is_headless(svc: &Service) -> bool {
    svc.spec
        .as_ref()
        .and_then(|s| s.cluster_ip.as_deref())
        .is_some_and(|ip| ip == "None")
}

/// RFC 3339 (whole seconds, UTC) as written into the expiry annotations.
fn rfc3339(t: OffsetDateTime) -> String {
    let t = t.to_offset(time::UtcOffset::UTC);
    let t = t.replace_nanosecond(0).unwrap_or(t);
    t.format(&Rfc3339).unwrap_or_default()
}

fn owner_reference(svc: &Service) -> OwnerReference {
    OwnerReference {
        api_version: "v1".to_owned(),
        kind: "Service".to_owned(),
        name: svc.metadata.name.clone().unwrap_or_default(),
        uid: svc.metadata.uid.clone().unwrap_or_default(),
        // Like OpenShift: an owner for garbage collection, not a controller.
        controller: None,
        block_owner_deletion: None,
    }
}

fn is_our_owner_ref(r: &OwnerReference, svc_uid: &str) -> bool {
    !svc_uid.is_empty() && r.uid == svc_uid && r.kind == "Service" && r.api_version == "v1"
}

fn has_our_owner_ref(secret: &Secret, svc_uid: &str) -> bool {
    secret
        .metadata
        .owner_references
        .iter()
        .flatten()
        .any(|r| is_our_owner_ref(r, svc_uid))
}

/// The serving Secret for `svc` holding `cert`: `kubernetes.io/tls`, in the Service's namespace,
/// named as [`requested_secret_name`] says (empty if the Service asks for none), `data` exactly
/// `tls.crt`/`tls.key`, the originating-service annotations (beta, or alpha for a Service that
/// asks with the alpha annotation only, as OpenShift writes them), both expiry annotations,
/// OpenShift's owning-component and description, the managed-by label and a non-controller
/// ownerReference to the Service. The signer is recorded on the Service
/// (`serving-cert-signed-by`), not here, as OpenShift does.
pub fn desired_secret(svc: &Service, cert: &ServingCert) -> Secret {
    let uid = svc.metadata.uid.clone().unwrap_or_default();
    let name = svc.metadata.name.clone().unwrap_or_default();
    let namespace = svc.metadata.namespace.clone().unwrap_or_default();
    let expiry = rfc3339(cert.not_after);
    let (uid_key, name_key, asked_with) =
        if annotation(&svc.metadata, SERVING_CERT_SECRET_NAME).is_some() {
            (
                ORIGINATING_SERVICE_UID,
                ORIGINATING_SERVICE_NAME,
                SERVING_CERT_SECRET_NAME,
            )
        } else {
            (
                ALPHA_ORIGINATING_SERVICE_UID,
                ALPHA_ORIGINATING_SERVICE_NAME,
                ALPHA_SERVING_CERT_SECRET_NAME,
            )
        };
    let description = format!(
        "Serving certificate and key for service/{name} ({name}.{namespace}.svc), issued by \
         service-ca-operator because the Service's {asked_with} annotation names this Secret; \
         re-issued before it expires."
    );
    let annotations = BTreeMap::from([
        (uid_key.to_owned(), uid),
        (name_key.to_owned(), name),
        (ALPHA_EXPIRY.to_owned(), expiry.clone()),
        (EXPIRY.to_owned(), expiry),
        (
            OWNING_COMPONENT.to_owned(),
            OWNING_COMPONENT_NAME.to_owned(),
        ),
        (DESCRIPTION.to_owned(), description),
    ]);
    Secret {
        metadata: ObjectMeta {
            name: requested_secret_name(svc),
            namespace: svc.metadata.namespace.clone(),
            annotations: Some(annotations),
            labels: Some(BTreeMap::from([(
                MANAGED_BY_LABEL.to_owned(),
                MANAGED_BY.to_owned(),
            )])),
            owner_references: Some(vec![owner_reference(svc)]),
            ..ObjectMeta::default()
        },
        type_: Some(TLS_SECRET_TYPE.to_owned()),
        data: Some(BTreeMap::from([
            (
                TLS_CERT_KEY.to_owned(),
                ByteString(cert.cert_pem.clone().into_bytes()),
            ),
            (
                TLS_KEY_KEY.to_owned(),
                ByteString(cert.key_pem.clone().into_bytes()),
            ),
        ])),
        ..Secret::default()
    }
}

/// Why a serving Secret has to be re-issued.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Why {
    /// The Secret is ours (UID annotation matches) but lacks the ownerReference to the Service.
    MissingOwnerRef,
    /// Neither expiry annotation is present.
    MissingExpiry,
    /// The expiry annotation is not RFC 3339.
    UnparseableExpiry,
    /// What [`pki::needs_regeneration`] found (or [`Reason::Expiring`] from the annotation).
    Cert(Reason),
}

/// Verdict on an existing serving Secret.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SecretCheck {
    /// Not ours: the UID annotation (beta, else alpha) is missing or names another Service,
    /// whatever the ownerReferences say. Never modified; report an error on the Service.
    Foreign,
    /// Ours, but the certificate must be re-issued.
    Regenerate(Why),
    /// Valid, but `data` carries keys other than `tls.crt`/`tls.key` (sorted): strip them.
    Clean { extra_keys: Vec<String> },
    /// Valid and clean.
    Ok,
}

/// Checks an existing serving Secret for `svc`, in OpenShift's order: foreign; `tls.crt`
/// unparseable, issued by another CA, wrong SANs; ownerReference missing; expiry annotation
/// missing or unparseable; `now + margin` past the expiry (annotation or certificate); then
/// extra data keys.
pub fn check_secret(
    secret: &Secret,
    svc: &Service,
    ca: &SigningCa,
    req: &ServingCertRequest<'_>,
    now: OffsetDateTime,
    margin: Duration,
) -> SecretCheck {
    let svc_uid = svc.metadata.uid.as_deref().unwrap_or_default();
    let owned = has_our_owner_ref(secret, svc_uid);
    let uid_annotation = annotation(&secret.metadata, ORIGINATING_SERVICE_UID)
        .or_else(|| annotation(&secret.metadata, ALPHA_ORIGINATING_SERVICE_UID));
    // The UID annotation is what makes a Secret ours, as in OpenShift: an ownerReference
    // alone can be added by anyone who may edit the Secret.
    if uid_annotation != Some(svc_uid) || svc_uid.is_empty() {
        return SecretCheck::Foreign;
    }

    let data = secret.data.as_ref();
    let cert_pem = data
        .and_then(|d| d.get(TLS_CERT_KEY))
        .and_then(|b| std::str::from_utf8(&b.0).ok())
        .unwrap_or_default();
    let cert_reason = pki::needs_regeneration(cert_pem, ca, req, now, margin);
    if let Some(reason) = cert_reason.filter(|r| *r != Reason::Expiring) {
        return SecretCheck::Regenerate(Why::Cert(reason));
    }
    if data.is_none_or(|d| !d.contains_key(TLS_KEY_KEY)) {
        // A certificate without its key is as good as none.
        return SecretCheck::Regenerate(Why::Cert(Reason::Unparseable));
    }
    if !owned {
        return SecretCheck::Regenerate(Why::MissingOwnerRef);
    }
    let Some(expiry) =
        annotation(&secret.metadata, EXPIRY).or_else(|| annotation(&secret.metadata, ALPHA_EXPIRY))
    else {
        return SecretCheck::Regenerate(Why::MissingExpiry);
    };
    let Ok(expiry) = OffsetDateTime::parse(expiry, &Rfc3339) else {
        return SecretCheck::Regenerate(Why::UnparseableExpiry);
    };
    let annotation_expiring = time::Duration::try_from(margin)
        .ok()
        .and_then(|m| now.checked_add(m))
        .is_none_or(|deadline| deadline > expiry);
    if annotation_expiring || cert_reason.is_some() {
        return SecretCheck::Regenerate(Why::Cert(Reason::Expiring));
    }

    let extra_keys: Vec<String> = data
        .into_iter()
        .flat_map(|d| d.keys())
        .filter(|k| *k != TLS_CERT_KEY && *k != TLS_KEY_KEY)
        .cloned()
        .collect();
    if extra_keys.is_empty() {
        SecretCheck::Ok
    } else {
        SecretCheck::Clean { extra_keys }
    }
}

/// `existing` updated to `desired`: keeps its identity (name, resourceVersion, …), the user's
/// labels, annotations (an owning-component or description already set included) and other
/// ownerReferences; replaces our annotations, our label, our ownerReference, the type and `data`
/// (dropping `stringData`).
pub fn merged_secret(existing: &Secret, desired: &Secret) -> Secret {
    let mut merged = existing.clone();
    let meta = &mut merged.metadata;

    let mut annotations = meta.annotations.take().unwrap_or_default();
    let claimed: Vec<(String, String)> = [OWNING_COMPONENT, DESCRIPTION]
        .into_iter()
        .filter_map(|k| {
            Some((
                k.to_owned(),
                annotations.get(k).filter(|v| !v.is_empty())?.clone(),
            ))
        })
        .collect();
    annotations.retain(|k, _| !OWN_SECRET_ANNOTATIONS.contains(&k.as_str()));
    annotations.extend(desired.metadata.annotations.clone().unwrap_or_default());
    annotations.extend(claimed);
    meta.annotations = Some(annotations).filter(|a| !a.is_empty());

    let mut labels = meta.labels.take().unwrap_or_default();
    labels.extend(desired.metadata.labels.clone().unwrap_or_default());
    meta.labels = Some(labels).filter(|l| !l.is_empty());

    let desired_refs = desired
        .metadata
        .owner_references
        .clone()
        .unwrap_or_default();
    let mut refs = meta.owner_references.take().unwrap_or_default();
    refs.retain(|r| !desired_refs.iter().any(|d| d.uid == r.uid));
    refs.extend(desired_refs);
    meta.owner_references = Some(refs).filter(|r| !r.is_empty());

    merged.type_ = desired.type_.clone();
    merged.data = desired.data.clone();
    merged.string_data = None;
    merged
}

/// Service annotations recording a failed generation: the message under
/// [`SERVING_CERT_GENERATION_ERROR`] and the count (`current_num + 1`, an unparseable count is 0)
/// under [`SERVING_CERT_GENERATION_ERROR_NUM`], alpha and beta forms. `None` once `current_num`
/// reached [`MAX_GENERATION_ERRORS`]: give up until the annotations are cleared.
pub fn error_annotations(
    current_num: Option<&str>,
    message: &str,
) -> Option<BTreeMap<String, String>> {
    let current = current_num
        .and_then(|n| n.trim().parse::<u32>().ok())
        .unwrap_or(0);
    if current >= MAX_GENERATION_ERRORS {
        return None;
    }
    let next = (current + 1).to_string();
    Some(BTreeMap::from([
        (SERVING_CERT_GENERATION_ERROR.to_owned(), message.to_owned()),
        (
            ALPHA_SERVING_CERT_GENERATION_ERROR.to_owned(),
            message.to_owned(),
        ),
        (SERVING_CERT_GENERATION_ERROR_NUM.to_owned(), next.clone()),
        (ALPHA_SERVING_CERT_GENERATION_ERROR_NUM.to_owned(), next),
    ]))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pki::{DEFAULT_CA_LIFETIME, DEFAULT_CLUSTER_DOMAIN, DEFAULT_SERVING_CERT_LIFETIME};
    use serde_json::json;

    type TestResult = Result<(), Box<dyn std::error::Error>>;

    const UID: &str = "5d2c1f0e-8a4b-4c3d-9e2f-1a2b3c4d5e6f";
    const OTHER_UID: &str = "11111111-2222-3333-4444-555555555555";
    const HOUR: Duration = Duration::from_secs(3600);
    const DAY: Duration = Duration::from_secs(24 * 3600);

    fn now() -> OffsetDateTime {
        // 2026-01-02T03:04:05Z.
        OffsetDateTime::from_unix_timestamp(1_767_323_045).unwrap_or(OffsetDateTime::UNIX_EPOCH)
    }

    fn service(annotations: serde_json::Value) -> Result<Service, serde_json::Error> {
        serde_json::from_value(json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": {
                "name": "api",
                "namespace": "shop",
                "uid": UID,
                "annotations": annotations,
            },
            "spec": { "clusterIP": "10.0.0.1", "ports": [{ "port": 443 }] },
        }))
    }

    fn api_service() -> Result<Service, serde_json::Error> {
        service(json!({ SERVING_CERT_SECRET_NAME: "api-tls" }))
    }

    fn request(service_name: &str) -> ServingCertRequest<'_> {
        ServingCertRequest {
            service_name,
            namespace: "shop",
            service_uid: UID,
            headless: false,
            cluster_domain: DEFAULT_CLUSTER_DOMAIN,
            lifetime: DEFAULT_SERVING_CERT_LIFETIME,
            key: pki::KeyAlgorithm::EcdsaP256,
        }
    }

    struct Fixture {
        svc: Service,
        ca: SigningCa,
        cert: ServingCert,
        secret: Secret,
    }

    fn fixture() -> Result<Fixture, Box<dyn std::error::Error>> {
        let svc = api_service()?;
        let ca = SigningCa::generate(DEFAULT_CA_LIFETIME, now())?;
        let cert = ca.issue(&request("api"), now())?;
        let secret = desired_secret(&svc, &cert);
        Ok(Fixture {
            svc,
            ca,
            cert,
            secret,
        })
    }

    fn check(f: &Fixture, secret: &Secret) -> SecretCheck {
        check_secret(secret, &f.svc, &f.ca, &request("api"), now(), HOUR)
    }

    fn annotations_mut(secret: &mut Secret) -> &mut BTreeMap<String, String> {
        secret
            .metadata
            .annotations
            .get_or_insert_with(BTreeMap::new)
    }

    fn data_mut(secret: &mut Secret) -> &mut BTreeMap<String, ByteString> {
        secret.data.get_or_insert_with(BTreeMap::new)
    }

    #[test]
    fn requested_secret_name_beta_wins_and_empty_is_ignored() -> TestResult {
        let both = service(json!({
            SERVING_CERT_SECRET_NAME: "beta-tls",
            ALPHA_SERVING_CERT_SECRET_NAME: "alpha-tls",
        }))?;
        assert_eq!(requested_secret_name(&both).as_deref(), Some("beta-tls"));
        let alpha = service(json!({ ALPHA_SERVING_CERT_SECRET_NAME: "alpha-tls" }))?;
        assert_eq!(requested_secret_name(&alpha).as_deref(), Some("alpha-tls"));
        let empty_beta = service(json!({
            SERVING_CERT_SECRET_NAME: "",
            ALPHA_SERVING_CERT_SECRET_NAME: "alpha-tls",
        }))?;
        assert_eq!(
            requested_secret_name(&empty_beta).as_deref(),
            Some("alpha-tls")
        );
        let all_empty = service(json!({
            SERVING_CERT_SECRET_NAME: "",
            ALPHA_SERVING_CERT_SECRET_NAME: "",
        }))?;
        assert_eq!(requested_secret_name(&all_empty), None);
        assert_eq!(requested_secret_name(&service(json!({ "x": "y" }))?), None);
        assert_eq!(requested_secret_name(&Service::default()), None);
        Ok(())
    }

    #[test]
    fn headless_only_for_cluster_ip_none() -> TestResult {
        let headless: Service = serde_json::from_value(json!({
            "metadata": { "name": "db" },
            "spec": { "clusterIP": "None" },
        }))?;
        assert!(is_headless(&headless));
        assert!(!is_headless(&api_service()?));
        assert!(!is_headless(&Service::default()));
        let unset: Service = serde_json::from_value(json!({ "spec": { "type": "ClusterIP" } }))?;
        assert!(!is_headless(&unset));
        Ok(())
    }

    #[test]
    fn desired_secret_shape() -> TestResult {
        let f = fixture()?;
        let s = &f.secret;
        assert_eq!(s.metadata.name.as_deref(), Some("api-tls"));
        assert_eq!(s.metadata.namespace.as_deref(), Some("shop"));
        assert_eq!(s.type_.as_deref(), Some("kubernetes.io/tls"));
        let data = s.data.clone().unwrap_or_default();
        assert_eq!(
            data.keys().map(String::as_str).collect::<Vec<_>>(),
            ["tls.crt", "tls.key"]
        );
        assert_eq!(
            data.get("tls.crt").map(|b| b.0.as_slice()),
            Some(f.cert.cert_pem.as_bytes())
        );
        assert_eq!(
            data.get("tls.key").map(|b| b.0.as_slice()),
            Some(f.cert.key_pem.as_bytes())
        );
        assert_eq!(s.string_data, None);

        let expiry = rfc3339(f.cert.not_after);
        assert_eq!(expiry, "2028-01-02T03:04:05Z");
        let expected = BTreeMap::from([
            (ORIGINATING_SERVICE_UID.to_owned(), UID.to_owned()),
            (ORIGINATING_SERVICE_NAME.to_owned(), "api".to_owned()),
            (
                "service.alpha.openshift.io/expiry".to_owned(),
                expiry.clone(),
            ),
            (
                "service.beta.openshift.io/expiry".to_owned(),
                expiry.clone(),
            ),
            (
                "openshift.io/owning-component".to_owned(),
                "service-ca".to_owned(),
            ),
            (
                "openshift.io/description".to_owned(),
                "Serving certificate and key for service/api (api.shop.svc), issued by \
                 service-ca-operator because the Service's \
                 service.beta.openshift.io/serving-cert-secret-name annotation names this \
                 Secret; re-issued before it expires."
                    .to_owned(),
            ),
        ]);
        assert_eq!(s.metadata.annotations.as_ref(), Some(&expected));

        // A Service asking with the alpha annotation only gets the alpha originating ones.
        let alpha = service(json!({ ALPHA_SERVING_CERT_SECRET_NAME: "api-tls" }))?;
        let a = desired_secret(&alpha, &f.cert);
        let keys: Vec<&str> = a
            .metadata
            .annotations
            .iter()
            .flatten()
            .map(|(k, _)| k.as_str())
            .filter(|k| k.contains("originating"))
            .collect();
        assert_eq!(
            keys,
            [
                "service.alpha.openshift.io/originating-service-name",
                "service.alpha.openshift.io/originating-service-uid"
            ]
        );
        // An owning component someone else set stays theirs on a re-issue.
        let mut claimed = f.secret.clone();
        annotations_mut(&mut claimed).insert(OWNING_COMPONENT.into(), "my-team".into());
        let merged = merged_secret(&claimed, &f.secret);
        assert_eq!(
            merged
                .metadata
                .annotations
                .as_ref()
                .and_then(|a| a.get(OWNING_COMPONENT)),
            Some(&"my-team".to_owned())
        );
        assert_eq!(
            s.metadata.labels.as_ref(),
            Some(&BTreeMap::from([(
                "app.kubernetes.io/managed-by".to_owned(),
                "service-ca-operator".to_owned()
            )]))
        );

        let refs = serde_json::to_value(&s.metadata.owner_references)?;
        assert_eq!(
            refs,
            json!([{ "apiVersion": "v1", "kind": "Service", "name": "api", "uid": UID }])
        );
        Ok(())
    }

    #[test]
    fn fresh_secret_is_ok() -> TestResult {
        let f = fixture()?;
        assert_eq!(check(&f, &f.secret), SecretCheck::Ok);
        // Still fine at the edge of the margin.
        let late = f.cert.not_after - time::Duration::hours(1);
        assert_eq!(
            check_secret(&f.secret, &f.svc, &f.ca, &request("api"), late, HOUR),
            SecretCheck::Ok
        );
        Ok(())
    }

    #[test]
    fn foreign_secrets() -> TestResult {
        let f = fixture()?;
        // UID annotation naming another Service, even with our ownerRef.
        let mut other = f.secret.clone();
        annotations_mut(&mut other).insert(ORIGINATING_SERVICE_UID.to_owned(), OTHER_UID.into());
        assert_eq!(check(&f, &other), SecretCheck::Foreign);
        // Same through the alpha annotation only.
        let mut alpha = f.secret.clone();
        annotations_mut(&mut alpha).remove(ORIGINATING_SERVICE_UID);
        annotations_mut(&mut alpha)
            .insert(ALPHA_ORIGINATING_SERVICE_UID.to_owned(), OTHER_UID.into());
        assert_eq!(check(&f, &alpha), SecretCheck::Foreign);
        // No UID annotation and no ownerRef to this Service: a user's Secret.
        let user: Secret = serde_json::from_value(json!({
            "metadata": {
                "name": "api-tls",
                "namespace": "shop",
                "ownerReferences": [{
                    "apiVersion": "v1", "kind": "Service", "name": "api", "uid": OTHER_UID
                }],
            },
            "type": "kubernetes.io/tls",
            "data": { "tls.crt": "", "tls.key": "" },
        }))?;
        assert_eq!(check(&f, &user), SecretCheck::Foreign);
        Ok(())
    }

    #[test]
    fn an_owner_reference_without_the_uid_annotation_is_not_ours() -> TestResult {
        let f = fixture()?;
        let mut s = f.secret.clone();
        annotations_mut(&mut s).remove(ORIGINATING_SERVICE_UID);
        assert!(has_our_owner_ref(&s, UID));
        assert_eq!(check(&f, &s), SecretCheck::Foreign);
        // The alpha annotation alone is enough (what alpha-only Services get).
        annotations_mut(&mut s).insert(ALPHA_ORIGINATING_SERVICE_UID.to_owned(), UID.into());
        assert_eq!(check(&f, &s), SecretCheck::Ok);
        Ok(())
    }

    #[test]
    fn regenerate_on_certificate_problems() -> TestResult {
        let f = fixture()?;
        let mut garbage = f.secret.clone();
        data_mut(&mut garbage).insert(TLS_CERT_KEY.into(), ByteString(b"not a cert".to_vec()));
        assert_eq!(
            check(&f, &garbage),
            SecretCheck::Regenerate(Why::Cert(Reason::Unparseable))
        );
        let mut no_cert = f.secret.clone();
        data_mut(&mut no_cert).remove(TLS_CERT_KEY);
        assert_eq!(
            check(&f, &no_cert),
            SecretCheck::Regenerate(Why::Cert(Reason::Unparseable))
        );
        let mut no_key = f.secret.clone();
        data_mut(&mut no_key).remove(TLS_KEY_KEY);
        assert_eq!(
            check(&f, &no_key),
            SecretCheck::Regenerate(Why::Cert(Reason::Unparseable))
        );

        let other_ca = SigningCa::generate(DEFAULT_CA_LIFETIME, now())?;
        let foreign_cert = other_ca.issue(&request("api"), now())?;
        let wrong_issuer = desired_secret(&f.svc, &foreign_cert);
        assert_eq!(
            check(&f, &wrong_issuer),
            SecretCheck::Regenerate(Why::Cert(Reason::WrongIssuer))
        );

        let other_name = f.ca.issue(&request("web"), now())?;
        let wrong_sans = desired_secret(&f.svc, &other_name);
        assert_eq!(
            check(&f, &wrong_sans),
            SecretCheck::Regenerate(Why::Cert(Reason::SanMismatch))
        );
        Ok(())
    }

    #[test]
    fn regenerate_on_metadata_problems() -> TestResult {
        let f = fixture()?;
        let mut no_owner = f.secret.clone();
        no_owner.metadata.owner_references = None;
        assert_eq!(
            check(&f, &no_owner),
            SecretCheck::Regenerate(Why::MissingOwnerRef)
        );

        let mut no_expiry = f.secret.clone();
        annotations_mut(&mut no_expiry).remove(EXPIRY);
        annotations_mut(&mut no_expiry).remove(ALPHA_EXPIRY);
        assert_eq!(
            check(&f, &no_expiry),
            SecretCheck::Regenerate(Why::MissingExpiry)
        );
        // One of the two is enough.
        let mut alpha_only = f.secret.clone();
        annotations_mut(&mut alpha_only).remove(EXPIRY);
        assert_eq!(check(&f, &alpha_only), SecretCheck::Ok);

        let mut bad_expiry = f.secret.clone();
        annotations_mut(&mut bad_expiry).insert(EXPIRY.into(), "next tuesday".into());
        assert_eq!(
            check(&f, &bad_expiry),
            SecretCheck::Regenerate(Why::UnparseableExpiry)
        );
        Ok(())
    }

    #[test]
    fn regenerate_when_expiring() -> TestResult {
        let f = fixture()?;
        // The annotation says it expires in 30 minutes (margin 1 h).
        let mut soon = f.secret.clone();
        let in_half_hour = rfc3339(now() + time::Duration::minutes(30));
        annotations_mut(&mut soon).insert(EXPIRY.into(), in_half_hour);
        assert_eq!(
            check(&f, &soon),
            SecretCheck::Regenerate(Why::Cert(Reason::Expiring))
        );
        // The certificate itself is close to its NotAfter.
        let late = f.cert.not_after - time::Duration::minutes(30);
        assert_eq!(
            check_secret(&f.secret, &f.svc, &f.ca, &request("api"), late, HOUR),
            SecretCheck::Regenerate(Why::Cert(Reason::Expiring))
        );
        // A margin of a year makes a two-year certificate issued a year and a half ago expiring.
        let later = now() + time::Duration::days(548);
        assert_eq!(
            check_secret(&f.secret, &f.svc, &f.ca, &request("api"), later, 365 * DAY),
            SecretCheck::Regenerate(Why::Cert(Reason::Expiring))
        );
        Ok(())
    }

    #[test]
    fn check_order_follows_openshift() -> TestResult {
        let f = fixture()?;
        // Foreign beats everything.
        let mut foreign = f.secret.clone();
        annotations_mut(&mut foreign).insert(ORIGINATING_SERVICE_UID.into(), OTHER_UID.into());
        data_mut(&mut foreign).insert(TLS_CERT_KEY.into(), ByteString(b"junk".to_vec()));
        assert_eq!(check(&f, &foreign), SecretCheck::Foreign);
        // Certificate problems before the ownerRef and the expiry annotation.
        let mut both = f.secret.clone();
        both.metadata.owner_references = None;
        annotations_mut(&mut both).remove(EXPIRY);
        annotations_mut(&mut both).remove(ALPHA_EXPIRY);
        data_mut(&mut both).insert(TLS_CERT_KEY.into(), ByteString(b"junk".to_vec()));
        assert_eq!(
            check(&f, &both),
            SecretCheck::Regenerate(Why::Cert(Reason::Unparseable))
        );
        // ownerRef before the expiry annotation.
        let mut meta = f.secret.clone();
        meta.metadata.owner_references = None;
        annotations_mut(&mut meta).insert(EXPIRY.into(), "bad".into());
        assert_eq!(
            check(&f, &meta),
            SecretCheck::Regenerate(Why::MissingOwnerRef)
        );
        // A missing expiry annotation before the certificate's own expiry.
        let mut no_expiry = f.secret.clone();
        annotations_mut(&mut no_expiry).remove(EXPIRY);
        annotations_mut(&mut no_expiry).remove(ALPHA_EXPIRY);
        let late = f.cert.not_after - time::Duration::minutes(30);
        assert_eq!(
            check_secret(&no_expiry, &f.svc, &f.ca, &request("api"), late, HOUR),
            SecretCheck::Regenerate(Why::MissingExpiry)
        );
        // Regeneration beats cleaning.
        data_mut(&mut meta).insert("extra".into(), ByteString(b"x".to_vec()));
        assert_eq!(
            check(&f, &meta),
            SecretCheck::Regenerate(Why::MissingOwnerRef)
        );
        Ok(())
    }

    #[test]
    fn extra_keys_are_cleaned() -> TestResult {
        let f = fixture()?;
        let mut s = f.secret.clone();
        data_mut(&mut s).insert("z.pem".into(), ByteString(b"x".to_vec()));
        data_mut(&mut s).insert("ca.crt".into(), ByteString(b"y".to_vec()));
        assert_eq!(
            check(&f, &s),
            SecretCheck::Clean {
                extra_keys: vec!["ca.crt".to_owned(), "z.pem".to_owned()]
            }
        );
        Ok(())
    }

    #[test]
    fn merged_secret_keeps_user_metadata() -> TestResult {
        let f = fixture()?;
        let existing: Secret = serde_json::from_value(json!({
            "metadata": {
                "name": "api-tls",
                "namespace": "shop",
                "resourceVersion": "42",
                "uid": "secret-uid",
                "labels": { "team": "payments", MANAGED_BY_LABEL: "someone-else" },
                "annotations": {
                    "note": "keep me",
                    ORIGINATING_SERVICE_UID: OTHER_UID,
                    ALPHA_ORIGINATING_SERVICE_UID: OTHER_UID,
                    ALPHA_ORIGINATING_SERVICE_NAME: "old",
                    EXPIRY: "2000-01-01T00:00:00Z",
                },
                "ownerReferences": [
                    { "apiVersion": "v1", "kind": "Service", "name": "api", "uid": UID,
                      "controller": true },
                    { "apiVersion": "v1", "kind": "ConfigMap", "name": "anchor", "uid": "cm-uid" },
                ],
            },
            "type": "Opaque",
            "data": { "tls.crt": "b2xk", "tls.key": "b2xk", "extra": "eA==" },
            "stringData": { "more": "x" },
        }))?;
        let merged = merged_secret(&existing, &f.secret);
        assert_eq!(merged.metadata.resource_version.as_deref(), Some("42"));
        assert_eq!(merged.metadata.uid.as_deref(), Some("secret-uid"));
        assert_eq!(merged.metadata.name.as_deref(), Some("api-tls"));
        assert_eq!(merged.type_.as_deref(), Some("kubernetes.io/tls"));
        assert_eq!(merged.data, f.secret.data);
        assert_eq!(merged.string_data, None);

        let mut expected_annotations = f.secret.metadata.annotations.clone().unwrap_or_default();
        expected_annotations.insert("note".into(), "keep me".into());
        assert_eq!(merged.metadata.annotations, Some(expected_annotations));
        assert_eq!(
            merged.metadata.labels,
            Some(BTreeMap::from([
                (MANAGED_BY_LABEL.to_owned(), MANAGED_BY.to_owned()),
                ("team".to_owned(), "payments".to_owned()),
            ]))
        );
        let refs = serde_json::to_value(&merged.metadata.owner_references)?;
        assert_eq!(
            refs,
            json!([
                { "apiVersion": "v1", "kind": "ConfigMap", "name": "anchor", "uid": "cm-uid" },
                { "apiVersion": "v1", "kind": "Service", "name": "api", "uid": UID },
            ])
        );
        // The merged Secret passes the check.
        assert_eq!(check(&f, &merged), SecretCheck::Ok);
        Ok(())
    }

    #[test]
    fn error_annotations_count_up_to_the_limit() {
        let first = error_annotations(None, "boom");
        assert_eq!(
            first,
            Some(BTreeMap::from([
                (SERVING_CERT_GENERATION_ERROR.to_owned(), "boom".to_owned()),
                (
                    ALPHA_SERVING_CERT_GENERATION_ERROR.to_owned(),
                    "boom".to_owned()
                ),
                (SERVING_CERT_GENERATION_ERROR_NUM.to_owned(), "1".to_owned()),
                (
                    ALPHA_SERVING_CERT_GENERATION_ERROR_NUM.to_owned(),
                    "1".to_owned()
                ),
            ]))
        );
        let num = |current: Option<&str>| {
            error_annotations(current, "boom")
                .and_then(|a| a.get(SERVING_CERT_GENERATION_ERROR_NUM).cloned())
        };
        assert_eq!(num(Some("3")).as_deref(), Some("4"));
        assert_eq!(num(Some("9")).as_deref(), Some("10"));
        assert_eq!(num(Some("not a number")).as_deref(), Some("1"));
        assert_eq!(error_annotations(Some("10"), "boom"), None);
        assert_eq!(error_annotations(Some("11"), "boom"), None);
    }
}
