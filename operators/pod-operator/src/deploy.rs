//! What pod-operator needs to be deployed; the shared runtime derives the manifests.

use kube::CustomResourceExt;
use operon_runtime::admission::DelegationCheck;
use operon_runtime::manifests::{ADMIN_PORT, OperatorManifests, Rule, UserResource};

use crate::api::PodRequest;

/// The talk's PodRequest (slide 72), verbatim.
pub const SAMPLE: &str = include_str!("../samples/podrequest.yaml");

/// Namespace the operator is deployed to.
pub const NAMESPACE: &str = "pod-operator-system";

/// Exactly the API calls the controller makes (see controller.rs): watches of PodRequests and
/// Pods, status patches (server-side apply), Pod create/delete, and the Pod read after a
/// create conflict. Events come from the runtime's rules.
pub fn rules() -> Vec<Rule> {
    vec![
        Rule::new("pod.jewzaam.org", &["podrequests"], &["list", "watch"]),
        Rule::new("pod.jewzaam.org", &["podrequests/status"], &["patch"]),
        Rule::new("", &["pods"], &["get", "list", "watch", "create", "delete"]),
    ]
}

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
        rules: rules(),
        namespace_rules: Vec::new(),
        admission: vec![admission()],
        user_resources: vec![UserResource {
            group: "pod.jewzaam.org".into(),
            plural: "podrequests".into(),
            kind: "PodRequest".into(),
        }],
        replicas: 2,
        admin_port: ADMIN_PORT,
    })
}

/// What pod-operator's OLM bundle says about it (`bundle/pod-operator/`).
pub fn bundle_info() -> anyhow::Result<operon_runtime::olm::BundleInfo> {
    Ok(operon_runtime::olm::BundleInfo {
        version: env!("CARGO_PKG_VERSION").into(),
        display_name: "Pod Operator".into(),
        description: "Keeps one Pod in existence for each PodRequest: named after the request, \
                      recreated when deleted, replaced when the spec changes, removed with the \
                      request."
            .into(),
        samples: vec![serde_saphyr::from_str(SAMPLE)?],
        channel: "alpha".into(),
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
