//! What pod-operator needs to be deployed; `pod-operator manifests|bundle|chart` derive the
//! files from it (operon-manifests).

use kube::CustomResourceExt;
use operon_manifests::admission::DelegationCheck;
use operon_manifests::olm::BundleInfo;
use operon_manifests::{ADMIN_PORT, Declaration, OperatorManifests, UserResource};

use crate::api::PodRequest;
use crate::controller;

/// The talk's PodRequest (slide 72), verbatim.
pub const SAMPLE: &str = include_str!("../samples/podrequest.yaml");

/// The image the generated Deployment runs (override with `bundle --image`, kustomize's
/// `images:` or the chart's values).
pub const IMAGE: &str = concat!("localhost/operon/pod-operator:v", env!("CARGO_PKG_VERSION"));

/// Namespace the operator is deployed to.
pub const NAMESPACE: &str = "pod-operator-system";

/// Creating or updating a PodRequest makes the operator create a Pod: only users who may
/// create Pods in that namespace themselves may do it (no escalation through the operator).
pub fn admission() -> DelegationCheck {
    DelegationCheck {
        name: "podrequests-require-pod-create.pod.jewzaam.org".into(),
        group: "pod.jewzaam.org".into(),
        resource: "podrequests".into(),
        variables: Vec::new(),
        applies_when: None,
        check: "authorizer.group('').resource('pods').namespace(request.namespace).check('create')"
            .into(),
        message:
            "'a PodRequest makes pod-operator create a Pod, and ' + request.userInfo.username + \
                  ' may not create pods in namespace ' + request.namespace"
                .into(),
    }
}

pub fn manifests(image: &str) -> anyhow::Result<OperatorManifests> {
    Ok(OperatorManifests {
        name: "pod-operator".into(),
        namespace: NAMESPACE.into(),
        image: image.into(),
        crds: vec![serde_json::to_value(PodRequest::crd())?],
        rules: controller::rules(),
        namespace_rules: Vec::new(),
        admission: vec![admission()],
        user_resources: vec![UserResource {
            group: "pod.jewzaam.org".into(),
            plural: "podrequests".into(),
            kind: "PodRequest".into(),
        }],
        replicas: 2,
        admin_port: ADMIN_PORT,
        alerts: Vec::new(),
        pod_security: "restricted",
    })
}

/// What pod-operator's OLM bundle says about it (`bundle/pod-operator/`).
pub fn bundle_info() -> anyhow::Result<BundleInfo> {
    Ok(BundleInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        display_name: "Pod Operator".into(),
        description: "Keeps one Pod in existence for each PodRequest: named after the request, \
                      recreated when deleted, replaced when the spec changes, removed with the \
                      request."
            .into(),
        samples: vec![serde_saphyr::from_str(SAMPLE)?],
        channel: "candidate".into(),
        min_kube_version: "1.29.0".into(),
        owned_resource_kinds: vec![("Pod".into(), "v1".into())],
        maturity: "alpha".into(),
        provider: "Operon".into(),
        keywords: vec!["pods".into(), "operon".into()],
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
        samples: vec![("podrequest.yaml".into(), SAMPLE.into())],
    })
}
