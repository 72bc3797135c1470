//! What credentials-operator needs to be deployed; `credentials-operator manifests|bundle|chart`
//! derive the files from it (operon-manifests).

use kube::CustomResourceExt;
use operon_manifests::admission::DelegationCheck;
use operon_manifests::olm::BundleInfo;
use operon_manifests::{ADMIN_PORT, Declaration, OperatorManifests, UserResource};

use crate::api::CredentialsRequest;
use crate::controller;

/// The talk's CredentialsRequest (slide 43), verbatim.
pub const SAMPLE: &str = include_str!("../samples/credentialsrequest.yaml");

/// The image the generated Deployment runs (override with `bundle --image`, kustomize's
/// `images:` or the chart's values).
pub const IMAGE: &str = concat!(
    "localhost/operon/credentials-operator:v",
    env!("CARGO_PKG_VERSION")
);

/// Namespace the operator is deployed to.
pub const NAMESPACE: &str = "credentials-operator-system";

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
        rules: controller::rules(),
        namespace_rules: Vec::new(),
        admission: vec![admission()],
        user_resources: vec![UserResource {
            group: "cloudcredential.openshift.io".into(),
            plural: "credentialsrequests".into(),
            kind: "CredentialsRequest".into(),
        }],
        replicas: 2,
        admin_port: ADMIN_PORT,
        alerts: Vec::new(),
        pod_security: "restricted",
    })
}

/// What credentials-operator's OLM bundle says about it (`bundle/credentials-operator/`).
pub fn bundle_info() -> anyhow::Result<BundleInfo> {
    Ok(BundleInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        display_name: "Credentials Operator".into(),
        description: "Mints least-privilege AWS IAM credentials for each CredentialsRequest \
                      (OpenShift's cloud-credential-operator API) into a Secret, and removes \
                      the IAM user with the request."
            .into(),
        samples: vec![serde_saphyr::from_str(SAMPLE)?],
        channel: "candidate".into(),
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

/// Everything the generation commands need.
pub fn declaration() -> anyhow::Result<Declaration> {
    Ok(Declaration {
        manifests: manifests(IMAGE)?,
        bundle: bundle_info()?,
        samples: vec![("credentialsrequest.yaml".into(), SAMPLE.into())],
    })
}
