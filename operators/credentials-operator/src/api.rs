//! `cloudcredential.openshift.io/v1` `CredentialsRequest`: OpenShift's cloud-credential-operator
//! API (the talk's slides 41–43), so its YAML applies unchanged on plain Kubernetes.
//!
//! What OpenAPI can express is in the schema (required fields, enums, item bounds); the rules it
//! can't say clearly are CEL rules with messages for people. `providerSpec` stays open
//! (`x-kubernetes-preserve-unknown-fields`) as in OpenShift, where it is a RawExtension selected
//! by `kind`: a request for another cloud is accepted and marked `Ignored`.

use std::collections::BTreeMap;

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use kube::{CustomResource, KubeSchema};
use schemars::{Schema, SchemaGenerator, json_schema};
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `kind` of an AWS provider spec.
pub const AWS_PROVIDER_SPEC: &str = "AWSProviderSpec";
/// `kind` of the AWS provider status.
pub const AWS_PROVIDER_STATUS: &str = "AWSProviderStatus";
/// `apiVersion` of provider specs and statuses.
pub const PROVIDER_API_VERSION: &str = "cloudcredential.openshift.io/v1";

/// A request for cloud credentials with exactly the listed permissions, written to a Secret.
// Each printcolumn repeats `type_`/`json_path`; clippy reads them as one attribute's duplicates.
#[allow(clippy::duplicated_attributes)]
#[derive(CustomResource, KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[kube(
    group = "cloudcredential.openshift.io",
    version = "v1",
    kind = "CredentialsRequest",
    plural = "credentialsrequests",
    singular = "credentialsrequest",
    namespaced,
    status = "CredentialsRequestStatus",
    derive = "PartialEq",
    doc = "CredentialsRequest asks for cloud credentials with exactly the permissions in providerSpec, stored in the Secret named by secretRef. The cloud identity is removed with the request.",
    printcolumn(name = "Secret", type_ = "string", json_path = ".spec.secretRef.name"),
    printcolumn(
        name = "Provisioned",
        type_ = "boolean",
        json_path = ".status.provisioned"
    ),
    printcolumn(
        name = "User",
        type_ = "string",
        json_path = ".status.providerStatus.user",
        priority = 1
    ),
    printcolumn(
        name = "Age",
        type_ = "date",
        json_path = ".metadata.creationTimestamp"
    )
)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRequestSpec {
    /// The Secret the credentials are written to (created or updated by the operator).
    pub secret_ref: SecretReference,
    /// The cloud-specific request; for AWS `kind: AWSProviderSpec` with `statementEntries`.
    pub provider_spec: ProviderSpec,
    /// ServiceAccounts that will use the credentials (informational on AWS in mint mode).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 64), inner(length(min = 1, max = 253)))]
    pub service_account_names: Vec<String>,
    /// Where the workload finds its projected service account token, for short-lived
    /// credentials (`providerSpec.stsIAMRoleARN` in manual mode); default
    /// `/var/run/secrets/kubernetes.io/serviceaccount/token`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(min = 1, max = 4096))]
    #[x_kube(validation = Rule::new("self.startsWith('/')").message("cloudTokenPath must be an absolute path, e.g. /var/run/secrets/openshift/serviceaccount/token"))]
    pub cloud_token_path: Option<String>,
}

/// Name and namespace of the target Secret (an `ObjectReference` in OpenShift; only these two
/// fields are used).
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
pub struct SecretReference {
    /// Name of the Secret: a DNS-1123 subdomain.
    #[schemars(length(min = 1, max = 253))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\\\\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$')").message("secretRef.name must be a valid Secret name: lowercase letters, digits, '-' and '.', starting and ending with a letter or digit"))]
    pub name: String,
    /// Namespace of the Secret: a DNS-1123 label. It need not exist yet.
    #[schemars(length(min = 1, max = 63))]
    #[x_kube(validation = Rule::new("self.matches('^[a-z0-9]([-a-z0-9]*[a-z0-9])?$')").message("secretRef.namespace must be a valid namespace name: lowercase letters, digits and '-', starting and ending with a letter or digit"))]
    pub namespace: String,
}

/// The provider-specific part of the request. Other clouds' fields are preserved.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq, Default)]
#[serde(rename_all = "camelCase")]
#[schemars(extend("x-kubernetes-preserve-unknown-fields" = true))]
#[x_kube(validation = Rule::new("self.kind != 'AWSProviderSpec' || (has(self.statementEntries) && size(self.statementEntries) > 0)").message("an AWSProviderSpec needs at least one entry in statementEntries"))]
pub struct ProviderSpec {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    /// `AWSProviderSpec`; other kinds are accepted and ignored by this operator.
    #[schemars(length(min = 1))]
    pub kind: String,
    /// The IAM policy statements to grant (AWS).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(length(max = 100))]
    pub statement_entries: Option<Vec<StatementEntry>>,
    /// The IAM role to assume with the service account token (AWS STS, manual mode): the
    /// Secret then holds a profile with `role_arn` and `web_identity_token_file` instead of
    /// keys.
    #[serde(
        default,
        rename = "stsIAMRoleARN",
        skip_serializing_if = "Option::is_none"
    )]
    #[schemars(length(min = 1, max = 2048))]
    #[x_kube(validation = Rule::new("self.matches('^arn:aws[a-z-]*:iam::[0-9]{12}:role/.+$')").message("stsIAMRoleARN must be an IAM role ARN, e.g. arn:aws:iam::123456789012:role/my-operator"))]
    pub sts_iam_role_arn: Option<String>,
    /// Fields of other providers' specs, kept as they are.
    #[serde(flatten)]
    #[schemars(skip)]
    pub other: BTreeMap<String, Value>,
}

/// One IAM policy statement.
#[derive(KubeSchema, Serialize, Deserialize, Clone, Debug, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct StatementEntry {
    /// `Allow` or `Deny`.
    pub effect: Effect,
    /// IAM actions, e.g. `ec2:DescribeInstances`, `s3:Get*`, or `*`.
    #[schemars(length(min = 1, max = 100), inner(length(min = 1, max = 128)))]
    #[x_kube(validation = Rule::new("self.all(a, a == '*' || a.matches('^[A-Za-z0-9-]+:[A-Za-z0-9*?]+$'))").message("each action must look like service:Action (e.g. ec2:DescribeInstances, s3:Get*) or be '*'"))]
    pub action: Vec<String>,
    /// The resource ARN the statement applies to, or `*`.
    #[schemars(length(min = 1, max = 2048))]
    pub resource: String,
    /// IAM condition block: operator → key → value(s), e.g.
    /// `{"StringEquals": {"aws:RequestedRegion": "us-east-1"}}`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "policy_condition_schema")]
    pub policy_condition: Option<BTreeMap<String, BTreeMap<String, Value>>>,
}

fn policy_condition_schema(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "description": "IAM condition block: operator -> key -> value(s).",
        "additionalProperties": {
            "type": "object",
            "additionalProperties": { "x-kubernetes-preserve-unknown-fields": true },
        },
    })
}

/// Effect of a statement.
#[derive(Serialize, Deserialize, Clone, Copy, Debug, PartialEq, Eq, schemars::JsonSchema)]
pub enum Effect {
    Allow,
    Deny,
}

impl Effect {
    pub fn as_str(self) -> &'static str {
        match self {
            Effect::Allow => "Allow",
            Effect::Deny => "Deny",
        }
    }
}

/// What the operator observed and did (OpenShift's fields).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRequestStatus {
    /// The credentials exist and the Secret holds them.
    #[serde(default)]
    pub provisioned: bool,
    /// When the cloud was last synced.
    // Times the operator can read back: see `operon_manifests::schema`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "operon_manifests::schema::optional_time")]
    pub last_sync_timestamp: Option<Time>,
    /// The `metadata.generation` last synced.
    #[serde(default)]
    pub last_sync_generation: i64,
    /// resourceVersion of the root credentials Secret at the last sync.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_cloud_creds_secret_resource_version: Option<String>,
    /// OpenShift's resourceVersion of its `Infrastructure` resource at the last sync. Plain
    /// Kubernetes has none, so this operator never sets it; it is in the schema so that a
    /// status copied from OpenShift keeps it.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_sync_infrastructure_resource_version: Option<String>,
    /// The cloud identity: recorded before it is created, so a crash never orphans one.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub provider_status: Option<AwsProviderStatus>,
    /// Only conditions that were true at some point are present (OpenShift's convention).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<CredentialsRequestCondition>,
}

/// The IAM user and inline policy minted for a request.
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AwsProviderStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub api_version: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub kind: Option<String>,
    /// IAM user name.
    #[serde(default)]
    pub user: String,
    /// Inline policy name.
    #[serde(default)]
    pub policy: String,
}

/// OpenShift's condition shape (with `lastProbeTime`, without `observedGeneration`).
#[derive(Serialize, Deserialize, Clone, Debug, Default, PartialEq, schemars::JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct CredentialsRequestCondition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "operon_manifests::schema::optional_time")]
    pub last_probe_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(schema_with = "operon_manifests::schema::optional_time")]
    pub last_transition_time: Option<Time>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub reason: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub message: Option<String>,
}

/// Condition types and their reasons (OpenShift's names).
pub mod condition {
    pub const INSUFFICIENT_CLOUD_CREDS: &str = "InsufficientCloudCreds";
    pub const MISSING_TARGET_NAMESPACE: &str = "MissingTargetNamespace";
    pub const PROVISION_FAILURE: &str = "CredentialsProvisionFailure";
    pub const DEPROVISION_FAILURE: &str = "CredentialsDeprovisionFailure";
    pub const IGNORED: &str = "Ignored";
}

impl CredentialsRequest {
    /// The IAM user minted for this request, as recorded in its status.
    pub fn minted_user(&self) -> Option<&str> {
        self.status
            .as_ref()?
            .provider_status
            .as_ref()
            .map(|p| p.user.as_str())
            .filter(|u| !u.is_empty())
    }

    /// The AWS statements, when this is an AWS request.
    pub fn aws_statements(&self) -> Option<&[StatementEntry]> {
        (self.spec.provider_spec.kind == AWS_PROVIDER_SPEC)
            .then_some(self.spec.provider_spec.statement_entries.as_deref())
            .flatten()
    }
}
