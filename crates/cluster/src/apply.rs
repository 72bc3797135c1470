//! Putting objects into a cluster the way `kubectl apply --server-side` does, and taking them
//! out again: `operon deploy`/`undeploy`, `operon run --local`, demos, benchmarks and tests.
//!
//! Each object's resource (plural, scope) comes from API discovery, so any kind the cluster
//! serves works, custom resources included. Namespaces are applied first, then the
//! CustomResourceDefinitions, which must become Established (and served) before the rest: RBAC,
//! workloads, Services, policies, and finally webhooks and objects of unknown kinds (custom
//! resources), in that order. Deletion goes the other way.

use std::collections::HashMap;
use std::time::Duration;

use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, DynamicObject, GroupVersionKind, Patch, PatchParams};
use kube::discovery::{self, ApiCapabilities, ApiResource, Scope};
use kube::error::DiscoveryError;
use kube::{Client, ResourceExt};
use serde_json::Value;

use crate::wait;

/// How long a CustomResourceDefinition may take to become Established and served.
pub const CRD_TIMEOUT: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ApplyError {
    #[error("{object} has no {field}")]
    Incomplete { object: String, field: &'static str },
    #[error("applying {object}: the cluster does not serve {kind} in {api_version}{hint}")]
    NotServed {
        object: String,
        kind: String,
        api_version: String,
        hint: &'static str,
    },
    #[error("{action} {object}: {message} ({reason}, HTTP {code})")]
    Refused {
        action: &'static str,
        object: String,
        message: String,
        reason: String,
        code: u16,
    },
    #[error("{action} {object}: {source}")]
    Request {
        action: &'static str,
        object: String,
        #[source]
        source: kube::Error,
    },
    #[error("serializing {what}: {source}")]
    Serialize {
        what: String,
        #[source]
        source: serde_json::Error,
    },
    #[error(transparent)]
    Wait(#[from] wait::Timeout),
    #[error("{} of {total} objects could not be deleted:\n  {}", .failed.len(), .failed.join("\n  "))]
    NotDeleted { failed: Vec<String>, total: usize },
}

/// `Kind namespace/name`, or `Kind name` for cluster-scoped objects.
pub fn describe(object: &Value) -> String {
    let kind = object["kind"].as_str().unwrap_or("?");
    let name = object["metadata"]["name"].as_str().unwrap_or("?");
    match object["metadata"]["namespace"].as_str() {
        Some(ns) if !ns.is_empty() => format!("{kind} {ns}/{name}"),
        _ => format!("{kind} {name}"),
    }
}

/// Server-side applies `objects` (field manager `manager`, forcing conflicts) in dependency
/// order, waiting for CustomResourceDefinitions to be Established and served before what comes
/// after them; reports each step to `progress`. Stops at the first failure.
pub async fn apply_all(
    client: &Client,
    objects: &[Value],
    manager: &str,
    progress: &mut dyn FnMut(String),
) -> Result<(), ApplyError> {
    let ordered = ordered(objects)?;
    let mut resolver = Resolver::new(client);
    let mut crds = Vec::new();
    for object in ordered {
        // Everything after the CRDs may be of their kinds, or be checked against them.
        if rank(kind(object)) > CRD_RANK {
            for crd in crds.drain(..) {
                wait_until_served(client, crd).await?;
                progress(format!("{} established", describe(crd)));
            }
        }
        let applied = apply_one(client, &mut resolver, object, manager).await?;
        progress(format!("applied {applied}"));
        if kind(object) == "CustomResourceDefinition" {
            crds.push(object);
        }
    }
    for crd in crds {
        wait_until_served(client, crd).await?;
        progress(format!("{} established", describe(crd)));
    }
    Ok(())
}

/// Server-side applies one object (a CustomResourceDefinition is awaited until served).
pub async fn apply(client: &Client, object: &Value, manager: &str) -> Result<(), ApplyError> {
    apply_all(client, std::slice::from_ref(object), manager, &mut |_| {}).await
}

/// Applies a CustomResourceDefinition and waits until it is Established and served.
pub async fn apply_crd(
    client: &Client,
    crd: &CustomResourceDefinition,
    manager: &str,
) -> Result<(), ApplyError> {
    let object = serde_json::to_value(crd).map_err(|source| ApplyError::Serialize {
        what: format!("CustomResourceDefinition {}", crd.name_any()),
        source,
    })?;
    apply(client, &object, manager).await
}

/// Deletes `objects` in the reverse of [`apply_all`]'s order (background propagation),
/// reporting each to `progress`; objects already gone are fine. Goes on after a failure and
/// reports all failures at the end. Does not wait for Namespaces and CRDs to finish terminating.
pub async fn delete_all(
    client: &Client,
    objects: &[Value],
    progress: &mut dyn FnMut(String),
) -> Result<(), ApplyError> {
    let mut ordered = ordered(objects)?;
    ordered.reverse();
    let mut resolver = Resolver::new(client);
    let mut failed = Vec::new();
    for object in ordered {
        match delete_one(client, &mut resolver, object).await {
            Ok(line) => progress(line),
            Err(e) => {
                progress(format!("failed: {e}"));
                failed.push(e.to_string());
            }
        }
    }
    if failed.is_empty() {
        Ok(())
    } else {
        Err(ApplyError::NotDeleted {
            failed,
            total: objects.len(),
        })
    }
}

fn kind(object: &Value) -> &str {
    object["kind"].as_str().unwrap_or_default()
}

/// `(apiVersion, kind, name)`, all required.
fn identity(object: &Value) -> Result<(&str, &str, &str), ApplyError> {
    Ok((
        required(object, &object["apiVersion"], "apiVersion")?,
        required(object, &object["kind"], "kind")?,
        required(object, &object["metadata"]["name"], "metadata.name")?,
    ))
}

fn required<'a>(
    object: &Value,
    value: &'a Value,
    field: &'static str,
) -> Result<&'a str, ApplyError> {
    value
        .as_str()
        .filter(|s| !s.is_empty())
        .ok_or_else(|| ApplyError::Incomplete {
            object: describe(object),
            field,
        })
}

const CRD_RANK: u8 = 1;
/// Kinds [`rank`] does not know: custom resources, mostly.
const OTHER_RANK: u8 = 16;

/// Where a kind goes in the apply order (deletion goes the other way): what others refer to
/// first; webhooks, which route API requests to the new Pods, and custom resources last.
fn rank(kind: &str) -> u8 {
    match kind {
        "Namespace" => 0,
        "CustomResourceDefinition" => CRD_RANK,
        "PriorityClass" | "ResourceQuota" | "LimitRange" => 2,
        "ServiceAccount" => 3,
        "Secret" | "ConfigMap" => 4,
        "StorageClass" | "PersistentVolume" | "PersistentVolumeClaim" => 5,
        "ClusterRole" => 6,
        "ClusterRoleBinding" => 7,
        "Role" => 8,
        "RoleBinding" => 9,
        "Service" => 10,
        "Pod"
        | "ReplicaSet"
        | "Deployment"
        | "StatefulSet"
        | "DaemonSet"
        | "Job"
        | "CronJob"
        | "HorizontalPodAutoscaler"
        | "PodDisruptionBudget" => 11,
        "NetworkPolicy" | "IngressClass" | "Ingress" => 12,
        "ValidatingAdmissionPolicy" | "MutatingAdmissionPolicy" => 13,
        "ValidatingAdmissionPolicyBinding" | "MutatingAdmissionPolicyBinding" => 14,
        "APIService" | "ValidatingWebhookConfiguration" | "MutatingWebhookConfiguration" => 15,
        _ => OTHER_RANK,
    }
}

/// `objects` in apply order (stable: the given order within a rank), each checked to have an
/// apiVersion, kind and name before anything is sent.
fn ordered(objects: &[Value]) -> Result<Vec<&Value>, ApplyError> {
    for object in objects {
        identity(object)?;
    }
    let mut ordered: Vec<&Value> = objects.iter().collect();
    ordered.sort_by_key(|o| rank(kind(o)));
    Ok(ordered)
}

/// Discovery results by `(apiVersion, kind)`.
struct Resolver {
    client: Client,
    found: HashMap<(String, String), (ApiResource, ApiCapabilities)>,
}

impl Resolver {
    fn new(client: &Client) -> Self {
        Resolver {
            client: client.clone(),
            found: HashMap::new(),
        }
    }

    /// The resource of `kind` in `api_version`, or `None` when the cluster does not serve it.
    async fn resolve(
        &mut self,
        api_version: &str,
        kind: &str,
    ) -> Result<Option<(ApiResource, ApiCapabilities)>, kube::Error> {
        let key = (api_version.to_string(), kind.to_string());
        if let Some(found) = self.found.get(&key) {
            return Ok(Some(found.clone()));
        }
        match discovery::pinned_kind(&self.client, &gvk(api_version, kind)).await {
            Ok(found) => {
                self.found.insert(key, found.clone());
                Ok(Some(found))
            }
            Err(kube::Error::Api(s)) if s.code == 404 => Ok(None),
            Err(kube::Error::Discovery(DiscoveryError::MissingKind(_))) => Ok(None),
            Err(e) => Err(e),
        }
    }
}

fn gvk(api_version: &str, kind: &str) -> GroupVersionKind {
    let (group, version) = api_version.split_once('/').unwrap_or(("", api_version));
    GroupVersionKind::gvk(group, version, kind)
}

/// `action object: …`, with the API server's own message for API errors (the error's own text
/// repeats the whole status).
fn failed(action: &'static str, object: &Value, e: kube::Error) -> ApplyError {
    match e {
        kube::Error::Api(s) => ApplyError::Refused {
            action,
            object: describe(object),
            message: s.message,
            reason: s.reason,
            code: s.code,
        },
        source => ApplyError::Request {
            action,
            object: describe(object),
            source,
        },
    }
}

/// The API of `object`'s resource and the object as sent: in its namespace (the client's
/// default when it names none) if the resource is namespaced, without one otherwise.
async fn target(
    client: &Client,
    resolver: &mut Resolver,
    object: &Value,
    action: &'static str,
) -> Result<Option<(Api<DynamicObject>, Value)>, ApplyError> {
    let (api_version, kind, _) = identity(object)?;
    let found = resolver
        .resolve(api_version, kind)
        .await
        .map_err(|e| failed(action, object, e))?;
    let Some((resource, capabilities)) = found else {
        return Ok(None);
    };
    let mut body = object.clone();
    let api = if capabilities.scope == Scope::Namespaced {
        let namespace = object["metadata"]["namespace"]
            .as_str()
            .filter(|ns| !ns.is_empty())
            .unwrap_or(client.default_namespace())
            .to_string();
        body["metadata"]["namespace"] = Value::String(namespace.clone());
        Api::namespaced_with(client.clone(), &namespace, &resource)
    } else {
        if let Some(meta) = body["metadata"].as_object_mut() {
            meta.remove("namespace");
        }
        Api::all_with(client.clone(), &resource)
    };
    Ok(Some((api, body)))
}

/// Applies one object; returns its description.
async fn apply_one(
    client: &Client,
    resolver: &mut Resolver,
    object: &Value,
    manager: &str,
) -> Result<String, ApplyError> {
    let (api_version, kind, name) = identity(object)?;
    let Some((api, body)) = target(client, resolver, object, "applying").await? else {
        return Err(ApplyError::NotServed {
            object: describe(object),
            kind: kind.to_string(),
            api_version: api_version.to_string(),
            hint: if rank(kind) == OTHER_RANK {
                " (is its CustomResourceDefinition installed?)"
            } else {
                ""
            },
        });
    };
    api.patch(
        name,
        &PatchParams::apply(manager).force(),
        &Patch::Apply(&body),
    )
    .await
    .map_err(|e| failed("applying", &body, e))?;
    Ok(describe(&body))
}

/// Deletes one object; returns what happened.
async fn delete_one(
    client: &Client,
    resolver: &mut Resolver,
    object: &Value,
) -> Result<String, ApplyError> {
    let (api_version, kind, name) = identity(object)?;
    let Some((api, body)) = target(client, resolver, object, "deleting").await? else {
        // No resource, no objects of it (e.g. custom resources once their CRD is gone).
        return Ok(format!(
            "{} not found ({kind} is not served in {api_version})",
            describe(object)
        ));
    };
    let what = describe(&body);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(format!("deleted {what}")),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(format!("{what} not found")),
        // A Namespace that is terminating already refuses a second deletion.
        Err(kube::Error::Api(s)) if s.code == 409 => {
            let terminating = api
                .get_opt(name)
                .await
                .map_err(|e| failed("deleting", &body, e))?
                .is_none_or(|o| o.metadata.deletion_timestamp.is_some());
            if terminating {
                Ok(format!("{what} is already being deleted"))
            } else {
                Err(failed("deleting", &body, kube::Error::Api(s)))
            }
        }
        Err(e) => Err(failed("deleting", &body, e)),
    }
}

/// Waits until the CustomResourceDefinition `crd` is Established and each of its served
/// versions is in API discovery (Established can precede discovery by a moment).
async fn wait_until_served(client: &Client, crd: &Value) -> Result<(), ApplyError> {
    let name = crd["metadata"]["name"].as_str().unwrap_or_default();
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    let spec = wait::until(
        &format!("CustomResourceDefinition {name} to be Established"),
        CRD_TIMEOUT,
        || async {
            let crd = crds
                .get(name)
                .await
                .map_err(|e| failed("reading", crd, e).to_string())?;
            let conditions = crd.status.and_then(|s| s.conditions).unwrap_or_default();
            if conditions
                .iter()
                .any(|c| c.type_ == "Established" && c.status == "True")
            {
                return Ok(crd.spec);
            }
            // NamesAccepted=False (a name taken by another CRD) is the usual reason.
            let observed: Vec<String> = conditions
                .iter()
                .map(|c| {
                    let detail = c.message.as_deref().unwrap_or_default();
                    format!("{}={} {detail}", c.type_, c.status)
                        .trim()
                        .to_string()
                })
                .collect();
            Err(if observed.is_empty() {
                "no conditions yet".to_string()
            } else {
                observed.join("; ")
            })
        },
    )
    .await?;
    for version in spec.versions.iter().filter(|v| v.served) {
        let gvk = GroupVersionKind::gvk(&spec.group, &version.name, &spec.names.kind);
        wait::until(
            &format!(
                "{}/{} {} to be served",
                spec.group, version.name, spec.names.kind
            ),
            CRD_TIMEOUT,
            || async {
                discovery::pinned_kind(client, &gvk)
                    .await
                    .map(|_| ())
                    .map_err(|e| failed("discovering", crd, e).to_string())
            },
        )
        .await?;
    }
    Ok(())
}

/// `kubectl` (the one built with the control plane) against `kubeconfig`.
pub fn kubectl(kubeconfig: &std::path::Path) -> std::process::Command {
    let mut cmd = std::process::Command::new(crate::default_bin_dir().join("kubectl"));
    cmd.env("KUBECONFIG", kubeconfig);
    cmd
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn object(kind: &str, name: &str) -> Value {
        json!({ "apiVersion": "v1", "kind": kind, "metadata": { "name": name } })
    }

    #[test]
    fn applies_in_dependency_order_keeping_the_given_order_within_a_kind() {
        let objects = [
            object("Widget", "w"),
            object("Deployment", "d"),
            object("ValidatingAdmissionPolicyBinding", "b"),
            object("ClusterRole", "r2"),
            object("ValidatingAdmissionPolicy", "p"),
            object("ServiceAccount", "sa"),
            object("CustomResourceDefinition", "c"),
            object("ClusterRole", "r1"),
            object("RoleBinding", "rb"),
            object("Namespace", "n"),
            object("Service", "s"),
        ];
        let names: Vec<&str> = ordered(&objects)
            .expect("ordered")
            .iter()
            .map(|o| o["metadata"]["name"].as_str().unwrap_or_default())
            .collect();
        assert_eq!(
            names,
            ["n", "c", "sa", "r2", "r1", "rb", "s", "d", "p", "b", "w"]
        );
    }

    #[test]
    fn objects_without_identity_are_refused_before_anything_is_sent() {
        let e = ordered(&[json!({ "apiVersion": "v1", "kind": "ConfigMap", "metadata": {} })])
            .expect_err("no name");
        assert!(e.to_string().contains("no metadata.name"), "{e}");
    }
}
