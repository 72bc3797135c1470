//! `service-ca-operator`: OpenShift-compatible serving certificates for Services.
//!
//! What this operator will be (behaviour follows `openshift/service-ca-operator`):
//!
//! - **Serving certificates.** A Service annotated with
//!   [`SERVING_CERT_SECRET_NAME`] (or the alpha form [`ALPHA_SERVING_CERT_SECRET_NAME`]; beta
//!   wins) gets a `kubernetes.io/tls` Secret of that name in its namespace: `tls.crt` is the leaf
//!   followed by the signing CA, `tls.key` its key. The leaf names `<svc>.<ns>.svc` and
//!   `<svc>.<ns>.svc.cluster.local` (plus the wildcards for headless Services) and carries the
//!   Service UID in a private extension. The Secret is owned by the Service.
//! - **CA bundle injection.** ConfigMaps, APIServices, CRDs (conversion webhooks) and webhook
//!   configurations annotated with [`INJECT_CABUNDLE`] receive the CA bundle.
//! - **Rotation.** Leaves are re-issued when they are unparseable, signed by another CA, name the
//!   wrong hosts or come close to expiry; the signing CA itself is rotated with an overlap period.
//!
//! Layout: the certificate core in [`pki`], the pure Service/Secret rules in [`serving`], the
//! pure injection rules in [`inject`] (all unit-tested without a cluster); the controllers that
//! apply them in [`controller`]; what a deployment needs in [`deploy`].

pub mod controller;
pub mod deploy;
pub mod inject;
pub mod pki;
pub mod serving;

/// Service annotation naming the Secret to write the serving certificate to.
pub const SERVING_CERT_SECRET_NAME: &str = "service.beta.openshift.io/serving-cert-secret-name";
/// Alpha form of [`SERVING_CERT_SECRET_NAME`], still honoured (the beta one wins).
pub const ALPHA_SERVING_CERT_SECRET_NAME: &str =
    "service.alpha.openshift.io/serving-cert-secret-name";
/// Service annotation set on success to the CN of the signing CA.
pub const SERVING_CERT_SIGNED_BY: &str = "service.beta.openshift.io/serving-cert-signed-by";
/// Alpha form of [`SERVING_CERT_SIGNED_BY`].
pub const ALPHA_SERVING_CERT_SIGNED_BY: &str = "service.alpha.openshift.io/serving-cert-signed-by";
/// Service annotation holding the last generation error.
pub const SERVING_CERT_GENERATION_ERROR: &str =
    "service.beta.openshift.io/serving-cert-generation-error";
/// Alpha form of [`SERVING_CERT_GENERATION_ERROR`].
pub const ALPHA_SERVING_CERT_GENERATION_ERROR: &str =
    "service.alpha.openshift.io/serving-cert-generation-error";
/// Service annotation counting consecutive generation errors.
pub const SERVING_CERT_GENERATION_ERROR_NUM: &str =
    "service.beta.openshift.io/serving-cert-generation-error-num";
/// Alpha form of [`SERVING_CERT_GENERATION_ERROR_NUM`].
pub const ALPHA_SERVING_CERT_GENERATION_ERROR_NUM: &str =
    "service.alpha.openshift.io/serving-cert-generation-error-num";
/// After this many consecutive failures generation stops until the error annotations are cleared.
pub const MAX_GENERATION_ERRORS: u32 = 10;

/// Secret annotation: UID of the Service the certificate was issued for.
pub const ORIGINATING_SERVICE_UID: &str = "service.beta.openshift.io/originating-service-uid";
/// Alpha form of [`ORIGINATING_SERVICE_UID`].
pub const ALPHA_ORIGINATING_SERVICE_UID: &str =
    "service.alpha.openshift.io/originating-service-uid";
/// Secret annotation: name of the Service the certificate was issued for.
pub const ORIGINATING_SERVICE_NAME: &str = "service.beta.openshift.io/originating-service-name";
/// Alpha form of [`ORIGINATING_SERVICE_NAME`].
pub const ALPHA_ORIGINATING_SERVICE_NAME: &str =
    "service.alpha.openshift.io/originating-service-name";
/// Secret annotation: the leaf's NotAfter, RFC 3339.
pub const EXPIRY: &str = "service.beta.openshift.io/expiry";
/// Alpha form of [`EXPIRY`].
pub const ALPHA_EXPIRY: &str = "service.alpha.openshift.io/expiry";

/// Annotation (value `"true"`, case-insensitive) asking for the CA bundle to be injected.
/// ConfigMaps and APIServices also honour [`ALPHA_INJECT_CABUNDLE`]; CRDs and webhook
/// configurations only this one.
pub const INJECT_CABUNDLE: &str = "service.beta.openshift.io/inject-cabundle";
/// Alpha form of [`INJECT_CABUNDLE`].
pub const ALPHA_INJECT_CABUNDLE: &str = "service.alpha.openshift.io/inject-cabundle";

/// Key of the serving certificate chain in the TLS Secret (and of the CA in the signing Secret).
pub const TLS_CERT_KEY: &str = "tls.crt";
/// Key of the private key in the TLS Secret (and of the CA key in the signing Secret).
pub const TLS_KEY_KEY: &str = "tls.key";
/// Name of the Secret holding the signing CA.
pub const SIGNING_SECRET_NAME: &str = "signing-key";
/// Signing Secret key holding the CA bundle after a rotation.
pub const CA_BUNDLE_KEY: &str = "ca-bundle.crt";
/// Signing Secret key holding the new CA signed by the old key after a rotation.
pub const INTERMEDIATE_CA_KEY: &str = "intermediate-ca.crt";
/// ConfigMap (next to [`SIGNING_SECRET_NAME`]) publishing the CA bundle under [`CA_BUNDLE_KEY`].
pub const SIGNING_BUNDLE_CONFIGMAP: &str = "signing-cabundle";
/// Annotation on the signing Secret asking for a rotation now; the value is the reason, and
/// each distinct reason rotates once.
pub const FORCE_ROTATION_REASON: &str = "service-ca.operon.dev/force-rotation-reason";
/// Annotation on the signing Secret recording the reason of the last forced rotation
/// (OpenShift's name).
pub const FORCED_ROTATION_REASON: &str = "service-ca.operators.openshift.io/forced-rotation-reason";
/// ConfigMap key the CA bundle is injected under.
pub const INJECTED_CA_BUNDLE_KEY: &str = "service-ca.crt";

/// OpenShift's annotation naming the component that owns an object: set to
/// [`OWNING_COMPONENT_NAME`] on the Secrets and ConfigMaps the operator creates and on the
/// ConfigMaps it injects, unless someone set it already.
pub const OWNING_COMPONENT: &str = "openshift.io/owning-component";
/// Value of [`OWNING_COMPONENT`] (OpenShift's component name for this operator).
pub const OWNING_COMPONENT_NAME: &str = "service-ca";
/// OpenShift's annotation describing an object, set with [`OWNING_COMPONENT`].
pub const DESCRIPTION: &str = "openshift.io/description";

/// ConfigMap annotation (value `"true"`) asking for the legacy bundle: the CA bundle followed by
/// the cluster's own CA (the service account token's `ca.crt`), what clusters migrated from
/// old OpenShift releases still read. Honoured only on the ConfigMap named
/// [`LEGACY_CABUNDLE_CONFIGMAP`], and only when it carries neither [`INJECT_CABUNDLE`] nor
/// [`ALPHA_INJECT_CABUNDLE`] (with either, the regular bundle wins).
pub const INJECT_VULNERABLE_LEGACY_CABUNDLE: &str =
    "service.alpha.openshift.io/inject-vulnerable-legacy-cabundle";
/// The one ConfigMap name [`INJECT_VULNERABLE_LEGACY_CABUNDLE`] is honoured on.
pub const LEGACY_CABUNDLE_CONFIGMAP: &str = "openshift-service-ca.crt";

/// Label set on every Secret this operator writes.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";
/// Value of [`MANAGED_BY_LABEL`].
pub const MANAGED_BY: &str = "service-ca-operator";
