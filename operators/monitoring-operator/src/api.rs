//! `config.openshift.io/v1` `ClusterOperator`: where OpenShift's operators report their state
//! (`Available`, `Progressing`, `Degraded`, `Upgradeable`), and what `oc get clusteroperators`
//! lists. monitoring-operator reports in the one named `monitoring`, as CMO does, and makes it
//! the owner of the stack, so deleting it removes the stack.

use kube::CustomResource;
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

// The print columns repeat `type_ = "string"`, which the lint takes for a duplicate attribute.
#[allow(clippy::duplicated_attributes)]
/// The operator's state, as OpenShift's ClusterOperator has it (the fields monitoring-operator
/// writes; others are kept by the schema).
#[derive(CustomResource, Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[kube(
    group = "config.openshift.io",
    version = "v1",
    kind = "ClusterOperator",
    plural = "clusteroperators",
    singular = "clusteroperator",
    shortname = "co",
    status = "ClusterOperatorStatus",
    derive = "PartialEq",
    derive = "Default",
    doc = "ClusterOperator holds the status of a cluster operator: its conditions (Available, Progressing, Degraded, Upgradeable), the objects it manages and its versions.",
    printcolumn(
        name = "Version",
        type_ = "string",
        json_path = ".status.versions[?(@.name==\"operator\")].version"
    ),
    printcolumn(
        name = "Available",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Available\")].status"
    ),
    printcolumn(
        name = "Progressing",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Progressing\")].status"
    ),
    printcolumn(
        name = "Degraded",
        type_ = "string",
        json_path = ".status.conditions[?(@.type==\"Degraded\")].status"
    ),
    printcolumn(
        name = "Since",
        type_ = "date",
        json_path = ".status.conditions[?(@.type==\"Available\")].lastTransitionTime"
    )
)]
pub struct ClusterOperatorSpec {}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterOperatorStatus {
    /// Available, Progressing, Degraded and Upgradeable, as OpenShift defines them.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub conditions: Vec<ClusterOperatorCondition>,
    /// The objects to look at when something is wrong (what `oc adm inspect` collects).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub related_objects: Vec<RelatedObject>,
    /// The operator's and its operands' versions.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub versions: Vec<OperandVersion>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClusterOperatorCondition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_transition_time: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct RelatedObject {
    pub group: String,
    pub resource: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub namespace: Option<String>,
    pub name: String,
}

#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, JsonSchema)]
pub struct OperandVersion {
    pub name: String,
    pub version: String,
}

impl ClusterOperatorStatus {
    /// The condition of `type_`, if reported.
    pub fn condition(&self, type_: &str) -> Option<&ClusterOperatorCondition> {
        self.conditions.iter().find(|c| c.type_ == type_)
    }
}
