//! What service-ca-operator needs to be deployed; the shared runtime derives the manifests.

use operon_runtime::admission::DelegationCheck;
use operon_runtime::manifests::{ADMIN_PORT, OperatorManifests, Rule};

/// The talk's annotated Service and ConfigMap (slides 48–50).
pub const SAMPLE: &str = include_str!("../samples/devconf.yaml");

/// Namespace the operator is deployed to; the signing CA lives there.
pub const NAMESPACE: &str = "service-ca-operator-system";

/// Exactly the API calls the controllers make (see `controller/`). Secrets: watched (the
/// operator's own, by label; the signing Secret by name), read after a create conflict, created
/// and replaced — never deleted (serving Secrets go with their Service through the
/// ownerReference). Services: watched and annotated. Injection targets: watched and patched.
/// ConfigMaps are created only in the operator's namespace (the published bundle).
pub fn rules() -> Vec<Rule> {
    vec![
        Rule::new(
            "",
            &["secrets"],
            &["get", "list", "watch", "create", "update"],
        ),
        Rule::new("", &["services"], &["list", "watch", "patch"]),
        Rule::new("", &["configmaps"], &["get", "list", "watch", "patch"]),
        Rule::new(
            "apiregistration.k8s.io",
            &["apiservices"],
            &["list", "watch", "patch"],
        ),
        Rule::new(
            "apiextensions.k8s.io",
            &["customresourcedefinitions"],
            &["list", "watch", "patch"],
        ),
        Rule::new(
            "admissionregistration.k8s.io",
            &[
                "mutatingwebhookconfigurations",
                "validatingwebhookconfigurations",
            ],
            &["list", "watch", "patch"],
        ),
    ]
}

/// Rules in the operator's namespace only: creating the bundle ConfigMap.
pub fn namespace_rules() -> Vec<Rule> {
    vec![Rule::new("", &["configmaps"], &["create"])]
}

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

pub fn manifests(image: &str) -> anyhow::Result<OperatorManifests> {
    Ok(OperatorManifests {
        name: "service-ca-operator".into(),
        namespace: NAMESPACE.into(),
        image: image.into(),
        crds: Vec::new(),
        rules: rules(),
        namespace_rules: namespace_rules(),
        admission: vec![admission()],
        user_resources: Vec::new(),
        replicas: 2,
        admin_port: ADMIN_PORT,
    })
}

/// What service-ca-operator's OLM bundle says about it (`bundle/service-ca-operator/`).
pub fn bundle_info() -> anyhow::Result<operon_runtime::olm::BundleInfo> {
    Ok(operon_runtime::olm::BundleInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        display_name: "Service CA Operator".into(),
        description: "Serving certificates for annotated Services and CA bundle injection into \
                      ConfigMaps, APIServices, CRDs and webhook configurations, with \
                      OpenShift's annotations and Secret layout; the signing CA rotates with \
                      a trust overlap."
            .into(),
        samples: Vec::new(),
        channel: "alpha".into(),
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
