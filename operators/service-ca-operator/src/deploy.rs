//! What service-ca-operator needs to be deployed; `service-ca-operator manifests|bundle|chart`
//! derive the files from it (operon-manifests).

use operon_manifests::admission::DelegationCheck;
use operon_manifests::alerts::{self, Alert};
use operon_manifests::olm::BundleInfo;
use operon_manifests::{ADMIN_PORT, Declaration, OperatorManifests};

use crate::controller;

/// The talk's annotated Service and ConfigMap (slides 48–50).
pub const SAMPLE: &str = include_str!("../samples/devconf.yaml");

/// The image the generated Deployment runs (override with `bundle --image`, kustomize's
/// `images:` or the chart's values).
pub const IMAGE: &str = concat!(
    "localhost/operon/service-ca-operator:v",
    env!("CARGO_PKG_VERSION")
);

/// Namespace the operator is deployed to; the signing CA lives there.
pub const NAMESPACE: &str = "service-ca-operator-system";

/// Asking a Service for a serving certificate makes the operator write the named Secret: only
/// users who may create that Secret themselves may add or change the annotation.
pub fn admission() -> DelegationCheck {
    let beta = crate::SERVING_CERT_SECRET_NAME;
    let alpha = crate::ALPHA_SERVING_CERT_SECRET_NAME;
    // The requested name as the operator reads it: beta wins, empty when absent.
    let name = |o: &str| {
        format!(
            "{o} == null || !has({o}.metadata.annotations) ? '' : \
             '{beta}' in {o}.metadata.annotations ? {o}.metadata.annotations['{beta}'] : \
             '{alpha}' in {o}.metadata.annotations ? {o}.metadata.annotations['{alpha}'] : ''"
        )
    };
    DelegationCheck {
        name: "serving-cert-annotation-requires-secret-create.service.beta.openshift.io".into(),
        group: String::new(),
        resource: "services".into(),
        variables: vec![
            ("secretName".into(), name("object")),
            ("oldSecretName".into(), name("oldObject")),
        ],
        // Only when the annotation is added or changed.
        applies_when: Some(
            "variables.secretName != '' && variables.secretName != variables.oldSecretName".into(),
        ),
        check: "authorizer.group('').resource('secrets').namespace(request.namespace).name(variables.secretName).check('create')".into(),
        message: "'the serving-cert-secret-name annotation makes service-ca-operator write Secret ' + variables.secretName + ', and ' + request.userInfo.username + ' may not create it in namespace ' + request.namespace".into(),
    }
}

/// [`alerts`]' alert fires when the signing CA has less than this left.
pub const CA_EXPIRY_ALERT_DAYS: u64 = 30;

/// Alerts on the operator's own metrics: the signing CA about to expire. It rotates when
/// `--ca-rotation-margin` (395 days) remains, so this firing means rotations have failed for
/// about a year (the `ReconcileErrors` alert of the signer fires long before). Only the leader
/// reports the expiry (a standby's gauge is 0, filtered out).
pub fn alerts() -> Vec<Alert> {
    let name = "service-ca-operator";
    let selector = alerts::selector(name, NAMESPACE);
    let metric = crate::controller::signer::EXPIRY_METRIC;
    let seconds = CA_EXPIRY_ALERT_DAYS * 24 * 3600;
    vec![Alert {
        name: "SigningCAExpiresSoon".into(),
        expr: format!("min({metric}{selector} > 0) - time() < {seconds}"),
        for_: "1h".into(),
        severity: "critical".into(),
        summary: format!("{name}: the signing CA expires in less than {CA_EXPIRY_ALERT_DAYS} days"),
        description: format!(
            "The signing CA of Deployment {NAMESPACE}/{name} expires in {{{{ $value | \
             humanizeDuration }}}} and has not been rotated: when it expires, no client trusts \
             the serving certificates it signed. Look at the Events of Secret \
             {NAMESPACE}/signing-key and the signer's logs; annotating that Secret with \
             {}=<reason> rotates it now.",
            crate::FORCE_ROTATION_REASON
        ),
    }]
}

pub fn manifests(image: &str) -> anyhow::Result<OperatorManifests> {
    Ok(OperatorManifests {
        name: "service-ca-operator".into(),
        namespace: NAMESPACE.into(),
        image: image.into(),
        crds: Vec::new(),
        rules: controller::rules(),
        namespace_rules: controller::namespace_rules(),
        admission: vec![admission()],
        user_resources: Vec::new(),
        replicas: 2,
        admin_port: ADMIN_PORT,
        alerts: alerts(),
        pod_security: "restricted",
    })
}

/// What service-ca-operator's OLM bundle says about it (`bundle/service-ca-operator/`).
pub fn bundle_info() -> anyhow::Result<BundleInfo> {
    Ok(BundleInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        display_name: "Service CA Operator".into(),
        description: "Serving certificates for annotated Services and CA bundle injection into \
                      ConfigMaps, APIServices, CRDs and webhook configurations, with \
                      OpenShift's annotations and Secret layout; the signing CA rotates with \
                      a trust overlap."
            .into(),
        samples: Vec::new(),
        channel: "candidate".into(),
        min_kube_version: "1.29.0".into(),
        owned_resource_kinds: vec![("Secret".into(), "v1".into())],
        maturity: "alpha".into(),
        provider: "Operon".into(),
        keywords: vec!["certificates".into(), "tls".into(), "operon".into()],
        links: vec![(
            "Source".into(),
            "https://github.com/operon-dev/operon".into(),
        )],
    })
}

/// Everything the generation commands need.
pub fn declaration() -> anyhow::Result<Declaration> {
    Ok(Declaration {
        manifests: manifests(IMAGE)?,
        bundle: bundle_info()?,
        samples: vec![("devconf.yaml".into(), SAMPLE.into())],
    })
}
