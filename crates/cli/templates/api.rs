//! `{{group}}/{{version}}` `{{Kind}}`: its spec is what users ask for, its status what the
//! operator observed and did.
//!
//! Add your fields to [`{{Kind}}Spec`]; what the schema can check (types, lengths, patterns,
//! CEL rules with `#[x_kube(validation = …)]`) is rejected by the API server with a message,
//! before the operator sees it.

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, CustomResourceExt, KubeSchema};
use operon_manifests::UserResource;
use serde::{Deserialize, Serialize};

/// The desired state of a {{Kind}}.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "{{group}}",
    version = "{{version}}",
    kind = "{{Kind}}",
    plural = "{{plural}}",{{namespaced}}
    status = "{{Kind}}Status",
    derive = "PartialEq",
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp")
)]
#[serde(rename_all = "camelCase")]
pub struct {{Kind}}Spec {
    /// An example field: replace it with your API's fields. A field's doc comment is its
    /// description in the CRD (`kubectl explain {{kind_lower}}.spec`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub foo: Option<String>,
}

/// What the operator observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct {{Kind}}Status {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// `Ready`: everything this {{Kind}} asks for exists as asked (else the reason why not).
    // A list map keyed by type, with bounds and times the operator can always read back (the
    // API server's own `date-time` check admits times a Rust client can't read).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "operon_manifests::schema::conditions")]
    pub conditions: Vec<Condition>,
}

/// Condition types of the status.
pub mod condition {
    pub const READY: &str = "Ready";
    /// Every type the controller sets (others are dropped from the status it writes).
    pub const ALL: &[&str] = &[READY];
}

/// The CustomResourceDefinition.
pub fn crd() -> CustomResourceDefinition {
    {{Kind}}::crd()
}

/// The resource as users see it (for the aggregated roles).
pub fn user_resource() -> UserResource {
    UserResource {
        group: "{{group}}".into(),
        plural: "{{plural}}".into(),
        kind: "{{Kind}}".into(),
    }
}
