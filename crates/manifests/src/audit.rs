//! Auditing an operator's ServiceAccount against its declaration: for every verb on a set of
//! resources, ask the API server's authorizer (SelfSubjectAccessReview, as the ServiceAccount)
//! and compare with [`OperatorManifests::allows`]. Any difference — a permission missing or one
//! too many — is reported. The operators' RBAC tests run it; an administrator can run it with
//! the ServiceAccount's token against a real cluster.

use k8s_openapi::api::authorization::v1::{
    ResourceAttributes, SelfSubjectAccessReview, SelfSubjectAccessReviewSpec,
};
use kube::Client;
use kube::api::{Api, PostParams};

use crate::OperatorManifests;

/// Every verb the matrix asks about.
pub const VERBS: [&str; 8] = [
    "get",
    "list",
    "watch",
    "create",
    "update",
    "patch",
    "delete",
    "deletecollection",
];

/// Resources worth asking about besides the declared ones: what an attacker would want.
pub const SENSITIVE: [(&str, &str); 10] = [
    ("", "pods"),
    ("", "secrets"),
    ("", "configmaps"),
    ("", "serviceaccounts"),
    ("", "serviceaccounts/token"),
    ("", "namespaces"),
    ("", "nodes"),
    ("apps", "deployments"),
    ("rbac.authorization.k8s.io", "clusterrolebindings"),
    ("rbac.authorization.k8s.io", "roles"),
];

/// One disagreement between the authorizer and the declaration.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub namespace: String,
    pub group: String,
    pub resource: String,
    pub verb: String,
    /// What the authorizer said (the declaration says the opposite).
    pub allowed: bool,
}

impl std::fmt::Display for Mismatch {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let group = if self.group.is_empty() {
            "core"
        } else {
            &self.group
        };
        write!(
            f,
            "{} {group}/{} in {}: authorizer says {}, declared {}",
            self.verb,
            self.resource,
            self.namespace,
            if self.allowed { "allowed" } else { "denied" },
            if self.allowed { "denied" } else { "allowed" },
        )
    }
}

/// Asks, as `client` (the operator's ServiceAccount), every verb of [`VERBS`] on the declared
/// resources and [`SENSITIVE`] ones in each of `namespaces`; returns the disagreements with
/// `manifests` and how many questions were asked.
pub async fn rbac_matrix(
    client: &Client,
    manifests: &OperatorManifests,
    namespaces: &[&str],
) -> Result<(Vec<Mismatch>, usize), kube::Error> {
    let mut resources: Vec<(String, String)> = SENSITIVE
        .iter()
        .map(|(g, r)| (g.to_string(), r.to_string()))
        .collect();
    for rule in manifests
        .manager_rules()
        .iter()
        .chain(&manifests.namespace_rules)
    {
        if rule.non_resource {
            continue;
        }
        for r in &rule.resources {
            let entry = (rule.group.to_string(), r.to_string());
            if !resources.contains(&entry) {
                resources.push(entry);
            }
        }
    }
    let api: Api<SelfSubjectAccessReview> = Api::all(client.clone());
    let mut mismatches = Vec::new();
    let mut asked = 0;
    for ns in namespaces {
        for (group, resource) in &resources {
            let (resource_name, sub) = match resource.split_once('/') {
                Some((r, s)) => (r.to_string(), Some(s.to_string())),
                None => (resource.clone(), None),
            };
            for verb in VERBS {
                let review = SelfSubjectAccessReview {
                    spec: SelfSubjectAccessReviewSpec {
                        resource_attributes: Some(ResourceAttributes {
                            namespace: Some(ns.to_string()),
                            group: Some(group.clone()),
                            resource: Some(resource_name.clone()),
                            subresource: sub.clone(),
                            verb: Some(verb.to_string()),
                            ..Default::default()
                        }),
                        ..Default::default()
                    },
                    ..Default::default()
                };
                let allowed = api
                    .create(&PostParams::default(), &review)
                    .await?
                    .status
                    .is_some_and(|s| s.allowed);
                asked += 1;
                if allowed != manifests.allows(ns, group, resource, verb) {
                    mismatches.push(Mismatch {
                        namespace: ns.to_string(),
                        group: group.clone(),
                        resource: resource.clone(),
                        verb: verb.to_string(),
                        allowed,
                    });
                }
            }
        }
    }
    Ok((mismatches, asked))
}
