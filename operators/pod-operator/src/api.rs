//! `pod.jewzaam.org/v1alpha1` `PodRequest`: the talk's API (slide 68), validated.
//!
//! The spec is exactly the talk's `{name, image, command}`, so its `podrequest.yaml` applies
//! unchanged. What OpenAPI can express is in the schema (lengths, item bounds, unknown fields
//! pruned); what it can't, or can't say clearly, is a CEL rule with a message for people.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition;
use kube::{CustomResource, KubeSchema};
use serde::{Deserialize, Serialize};

/// A request for one Pod, kept in existence while the request exists.
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "pod.jewzaam.org",
    version = "v1alpha1",
    kind = "PodRequest",
    plural = "podrequests",
    singular = "podrequest",
    shortname = "pr",
    category = "all",
    namespaced,
    status = "PodRequestStatus",
    derive = "PartialEq",
    doc = "PodRequest asks for one Pod running `command` in `image`. The Pod is named after the request, labelled app=<request name>, recreated when deleted, replaced when the spec changes, and removed with the request.",
    printcolumn(name = "Pod", type_ = "string", json_path = ".status.podName"),
    printcolumn(name = "Phase", type_ = "string", json_path = ".status.podPhase"),
    printcolumn(name = "Ready", type_ = "string", json_path = ".status.conditions[?(@.type==\"Ready\")].status"),
    printcolumn(name = "Age", type_ = "date", json_path = ".metadata.creationTimestamp"),
    validation = Rule::new("self.metadata.name.size() <= 63").message("metadata.name must be at most 63 characters: it is also the Pod's app label value")
)]
pub struct PodRequestSpec {
    /// Name of the Pod's container: a DNS-1123 label (lowercase letters, digits and '-').
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("must be a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit (it names the container)"))]
    pub name: String,

    /// Container image reference, e.g. `busybox`, `busybox:1.36` or
    /// `registry.example.com/team/app@sha256:<digest>`.
    #[schemars(length(min = 1, max = 512))]
    #[x_kube(validation = Rule::new("self.matches('^[A-Za-z0-9][A-Za-z0-9._/:@-]*$') && !self.contains('//') && !self.endsWith(':') && !self.endsWith('/')").message("must be a container image reference such as busybox, busybox:1.36 or registry.example.com/team/app@sha256:<digest> (no spaces, no upper-case scheme, no trailing ':' or '/')"))]
    pub image: String,

    /// The command the container runs: the executable, then its arguments (at most 65536
    /// characters together).
    #[schemars(length(min = 1, max = 256))]
    #[x_kube(validation = Rule::new("self.all(arg, arg.size() <= 32768)").message("each command argument must be at most 32768 characters"))]
    // A bound on the whole, so that the largest request the schema admits stays far below
    // etcd's 1.5 MiB object limit (a bigger object gets a 500 from the API server).
    #[x_kube(validation = Rule::new("self.map(arg, arg.size()).sum() <= 65536").message("the command's arguments together must be at most 65536 characters"))]
    #[x_kube(validation = Rule::new("self.size() == 0 || self[0] != ''").message("the first element (the executable) must not be empty"))]
    pub command: Vec<String>,
}

/// What the operator observed and did.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct PodRequestStatus {
    /// The `metadata.generation` this status describes.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
    /// Name of the Pod this request controls.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 253))]
    pub pod_name: Option<String>,
    /// The Pod's phase (Pending, Running, Succeeded, Failed, Unknown).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 64))]
    pub pod_phase: Option<String>,
    /// `Ready`: the Pod is running and ready. `Degraded`: why the operator can't make the Pod
    /// exist (conflict with a foreign Pod, admission denied, quota exceeded, …).
    // Times and bounds the operator can read back: see `operon_manifests::schema`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(schema_with = "operon_manifests::schema::conditions")]
    pub conditions: Vec<Condition>,
}

/// Condition types.
pub mod condition {
    pub const READY: &str = "Ready";
    pub const DEGRADED: &str = "Degraded";
}
