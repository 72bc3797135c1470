//! What the operator keeps of a Pod: what a reconcile reads, nothing else.
//!
//! The Pod cache holds every Pod the operator can see, so its entry size is the operator's
//! memory. A `k8s_openapi` `Pod` is large even when trimmed: its spec and status are structs of
//! some sixty optional fields, and a running Pod has five conditions. `CachedPod` is
//! deserialized straight from the watch: the fields below are read, the rest of the JSON is
//! skipped without being allocated (less memory, and less CPU per event).

use std::borrow::Cow;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, OwnerReference, Time};
use kube::Resource;
use serde::Deserialize;

/// A Pod as the PodRequest controller reads it.
#[derive(Clone, Debug, Default, PartialEq, Deserialize)]
#[serde(from = "wire::Pod")]
pub struct CachedPod {
    /// Name, namespace, UID, resourceVersion, creation and deletion times, and the controller
    /// ownerReference (the others are dropped).
    pub metadata: ObjectMeta,
    pub containers: Vec<CachedContainer>,
    pub phase: Option<String>,
    /// The Pod's `Ready` condition is `True`.
    pub ready: bool,
}

/// The part of a container the PodRequest's spec decides.
#[derive(Clone, Debug, Default, PartialEq, Eq, Hash, Deserialize)]
pub struct CachedContainer {
    pub name: String,
    pub image: Option<String>,
    pub command: Option<Vec<String>>,
}

impl Resource for CachedPod {
    type DynamicType = ();
    type Scope = NamespaceResourceScope;

    fn kind(dt: &()) -> Cow<'_, str> {
        Pod::kind(dt)
    }
    fn group(dt: &()) -> Cow<'_, str> {
        Pod::group(dt)
    }
    fn version(dt: &()) -> Cow<'_, str> {
        Pod::version(dt)
    }
    fn plural(dt: &()) -> Cow<'_, str> {
        Pod::plural(dt)
    }
    fn meta(&self) -> &ObjectMeta {
        &self.metadata
    }
    fn meta_mut(&mut self) -> &mut ObjectMeta {
        &mut self.metadata
    }
}

impl CachedPod {
    fn new(
        meta: ObjectMeta,
        containers: Vec<CachedContainer>,
        phase: Option<String>,
        ready: bool,
    ) -> CachedPod {
        CachedPod {
            metadata: ObjectMeta {
                name: meta.name,
                namespace: meta.namespace,
                uid: meta.uid,
                resource_version: meta.resource_version,
                creation_timestamp: meta.creation_timestamp,
                deletion_timestamp: meta.deletion_timestamp,
                owner_references: controller_only(meta.owner_references.unwrap_or_default()),
                ..Default::default()
            },
            containers,
            phase,
            ready,
        }
    }
}

/// A Pod read with the API (a create's answer, an uncached GET).
impl From<Pod> for CachedPod {
    fn from(pod: Pod) -> CachedPod {
        let containers = pod
            .spec
            .map(|s| s.containers)
            .unwrap_or_default()
            .into_iter()
            .map(|c| CachedContainer {
                name: c.name,
                image: c.image,
                command: c.command,
            })
            .collect();
        let status = pod.status.unwrap_or_default();
        let ready = status
            .conditions
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        CachedPod::new(pod.metadata, containers, status.phase, ready)
    }
}

fn controller_only(refs: Vec<OwnerReference>) -> Option<Vec<OwnerReference>> {
    let kept: Vec<OwnerReference> = refs
        .into_iter()
        .filter(|o| o.controller == Some(true))
        .collect();
    (!kept.is_empty()).then_some(kept)
}

/// The JSON a watch delivers, reduced to the fields above; serde skips the others.
mod wire {
    use super::*;

    #[derive(Deserialize)]
    pub struct Pod {
        #[serde(default)]
        metadata: Meta,
        #[serde(default)]
        spec: Option<Spec>,
        #[serde(default)]
        status: Option<Status>,
    }

    #[derive(Deserialize, Default)]
    #[serde(rename_all = "camelCase", default)]
    struct Meta {
        name: Option<String>,
        namespace: Option<String>,
        uid: Option<String>,
        resource_version: Option<String>,
        creation_timestamp: Option<Time>,
        deletion_timestamp: Option<Time>,
        owner_references: Option<Vec<OwnerReference>>,
    }

    #[derive(Deserialize)]
    struct Spec {
        #[serde(default)]
        containers: Option<Vec<CachedContainer>>,
    }

    #[derive(Deserialize)]
    struct Status {
        #[serde(default)]
        phase: Option<String>,
        #[serde(default)]
        conditions: Option<Vec<Condition>>,
    }

    #[derive(Deserialize)]
    struct Condition {
        #[serde(rename = "type")]
        type_: String,
        status: String,
    }

    impl From<Pod> for super::CachedPod {
        fn from(pod: Pod) -> super::CachedPod {
            let meta = ObjectMeta {
                name: pod.metadata.name,
                namespace: pod.metadata.namespace,
                uid: pod.metadata.uid,
                resource_version: pod.metadata.resource_version,
                creation_timestamp: pod.metadata.creation_timestamp,
                deletion_timestamp: pod.metadata.deletion_timestamp,
                owner_references: pod.metadata.owner_references,
                ..Default::default()
            };
            let (phase, conditions) = match pod.status {
                Some(s) => (s.phase, s.conditions.unwrap_or_default()),
                None => (None, Vec::new()),
            };
            let ready = conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            let containers = pod.spec.and_then(|s| s.containers).unwrap_or_default();
            super::CachedPod::new(meta, containers, phase, ready)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn running_pod() -> serde_json::Value {
        json!({
            "apiVersion": "v1",
            "kind": "Pod",
            "metadata": {
                "name": "busybox",
                "namespace": "default",
                "uid": "u-1",
                "resourceVersion": "42",
                "creationTimestamp": "2026-12-02T10:00:00Z",
                "labels": { "app": "busybox" },
                "annotations": { "a": "b" },
                "managedFields": [{ "manager": "kubelet", "operation": "Update", "fieldsType": "FieldsV1", "fieldsV1": { "f:status": {} } }],
                "ownerReferences": [
                    { "apiVersion": "pod.jewzaam.org/v1alpha1", "kind": "PodRequest", "name": "busybox", "uid": "pr-1", "controller": true, "blockOwnerDeletion": true },
                    { "apiVersion": "v1", "kind": "ConfigMap", "name": "other", "uid": "cm-1" }
                ]
            },
            "spec": {
                "nodeName": "node-1",
                "containers": [{ "name": "busybox", "image": "busybox", "command": ["sleep", "3600"], "resources": {} }],
                "volumes": [{ "name": "kube-api-access", "projected": { "sources": [] } }]
            },
            "status": {
                "phase": "Running",
                "podIP": "10.244.0.5",
                "conditions": [
                    { "type": "PodScheduled", "status": "True" },
                    { "type": "Ready", "status": "True", "lastTransitionTime": "2026-12-02T10:00:01Z" }
                ],
                "containerStatuses": [{ "name": "busybox", "ready": true, "restartCount": 0, "image": "busybox", "imageID": "", "state": { "running": {} } }]
            }
        })
    }

    #[test]
    fn a_watched_pod_keeps_what_a_reconcile_reads() -> Result<(), serde_json::Error> {
        let pod: CachedPod = serde_json::from_value(running_pod())?;
        assert_eq!(pod.metadata.name.as_deref(), Some("busybox"));
        assert_eq!(pod.metadata.namespace.as_deref(), Some("default"));
        assert_eq!(pod.metadata.uid.as_deref(), Some("u-1"));
        assert_eq!(pod.metadata.resource_version.as_deref(), Some("42"));
        assert!(pod.metadata.creation_timestamp.is_some());
        assert!(pod.metadata.deletion_timestamp.is_none());
        assert!(pod.metadata.labels.is_none() && pod.metadata.managed_fields.is_none());
        let owners = pod.metadata.owner_references.clone().unwrap_or_default();
        assert_eq!(owners.len(), 1, "only the controller reference is kept");
        assert_eq!(owners[0].uid, "pr-1");
        assert_eq!(
            pod.containers,
            [CachedContainer {
                name: "busybox".into(),
                image: Some("busybox".into()),
                command: Some(vec!["sleep".into(), "3600".into()]),
            }]
        );
        assert_eq!(pod.phase.as_deref(), Some("Running"));
        assert!(pod.ready);
        Ok(())
    }

    #[test]
    fn a_pod_read_with_the_api_gives_the_same_view() -> Result<(), serde_json::Error> {
        let full: Pod = serde_json::from_value(running_pod())?;
        let watched: CachedPod = serde_json::from_value(running_pod())?;
        assert_eq!(CachedPod::from(full), watched);
        Ok(())
    }

    #[test]
    fn a_new_pod_is_pending_and_not_ready() -> Result<(), serde_json::Error> {
        let pod: CachedPod = serde_json::from_value(json!({
            "metadata": { "name": "p", "namespace": "default" },
            "spec": { "containers": [{ "name": "main" }] },
        }))?;
        assert_eq!(pod.phase, None);
        assert!(!pod.ready);
        assert_eq!(pod.containers[0].image, None);
        assert!(pod.metadata.owner_references.is_none());
        Ok(())
    }
}
