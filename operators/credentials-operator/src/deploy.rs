//! What credentials-operator needs to be deployed; the shared runtime derives the manifests.

use kube::CustomResourceExt;
use operon_runtime::admission::DelegationCheck;
use operon_runtime::manifests::{ADMIN_PORT, OperatorManifests, Rule, UserResource};

use crate::api::CredentialsRequest;

/// The talk's CredentialsRequest (slide 43), verbatim.
pub const SAMPLE: &str = include_str!("../samples/credentialsrequest.yaml");

/// Namespace the operator is deployed to.
pub const NAMESPACE: &str = "credentials-operator-system";

/// Exactly the API calls the controller makes (see controller.rs): requests watched, their
/// finalizer patched and status applied; Secrets watched (its own, by label; the root Secret by
/// name), read, created, replaced and deleted (only those annotated as written for a request —
/// they live in the requests' target namespaces, so no ownerReference can clean them up);
/// Namespaces watched (metadata only) for missing target namespaces.
pub fn rules() -> Vec<Rule> {
    vec![
        Rule::new(
            "cloudcredential.openshift.io",
            &["credentialsrequests"],
            &["list", "watch", "patch"],
        ),
        Rule::new(
            "cloudcredential.openshift.io",
            &["credentialsrequests/status"],
            &["patch"],
        ),
        Rule::new(
            "",
            &["secrets"],
            &["get", "list", "watch", "create", "update", "delete"],
        ),
        Rule::new("", &["namespaces"], &["list", "watch"]),
    ]
}

/// A CredentialsRequest makes the operator write its Secret: only users who may create that
/// Secret themselves may create or update one (no escalation through the operator).
pub fn admission() -> DelegationCheck {
    DelegationCheck {
        name: "credentialsrequests-require-secret-create.cloudcredential.openshift.io".into(),
        group: "cloudcredential.openshift.io".into(),
        resource: "credentialsrequests".into(),
        variables: Vec::new(),
        applies_when: None,
        check: "authorizer.group('').resource('secrets').namespace(object.spec.secretRef.namespace).name(object.spec.secretRef.name).check('create')"
            .into(),
        message: "'a CredentialsRequest makes credentials-operator write Secret ' + object.spec.secretRef.namespace + '/' + object.spec.secretRef.name + ', and ' + request.userInfo.username + ' may not create it'"
            .into(),
    }
}

pub fn manifests(image: &str) -> anyhow::Result<OperatorManifests> {
    Ok(OperatorManifests {
        name: "credentials-operator".into(),
        namespace: NAMESPACE.into(),
        image: image.into(),
        crds: vec![serde_json::to_value(CredentialsRequest::crd())?],
        rules: rules(),
        namespace_rules: Vec::new(),
        admission: vec![admission()],
        user_resources: vec![UserResource {
            group: "cloudcredential.openshift.io".into(),
            plural: "credentialsrequests".into(),
            kind: "CredentialsRequest".into(),
        }],
        replicas: 2,
        admin_port: ADMIN_PORT,
    })
}

/// What credentials-operator's OLM bundle says about it (`bundle/credentials-operator/`).
pub fn bundle_info() -> anyhow::Result<operon_runtime::olm::BundleInfo> {
    Ok(operon_runtime::olm::BundleInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        display_name: "Credentials Operator".into(),
        description: "Mints least-privilege AWS IAM credentials for each CredentialsRequest \
                      (OpenShift's cloud-credential-operator API) into a Secret, and removes \
                      the IAM user with the request."
            .into(),
        samples: vec![serde_saphyr::from_str(SAMPLE)?],
        channel: "alpha".into(),
        min_kube_version: "1.29.0".into(),
        owned_resource_kinds: vec![("Secret".into(), "v1".into())],
        maturity: "alpha".into(),
        provider: "Operon".into(),
        keywords: vec![
            "aws".into(),
            "iam".into(),
            "credentials".into(),
            "operon".into(),
        ],
        links: vec![(
            "Source".into(),
            "https://github.com/operon-dev/operon".into(),
        )],
    })
}
