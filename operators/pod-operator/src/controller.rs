//! The PodRequest controller: make the requested Pod exist, keep it, replace it when the spec
//! changes, and never touch a Pod it doesn't control.
//!
//! Triggers: PodRequest spec changes (generation; the operator's own status writes don't
//! trigger), and every Pod event mapped to the PodRequest of the same name — owned Pods and
//! foreign ones alike, so a conflicting Pod's deletion wakes its PodRequest at once.

use std::hash::{Hash, Hasher};
use std::sync::Arc;

use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use operon_manifests::Rule;
use operon_runtime::cache::Writes;
use operon_runtime::client::is_status;
use operon_runtime::conditions::{self, Desired};
use operon_runtime::controller::{self, Action, Controller};
use operon_runtime::events::Events;
use operon_runtime::manager::Manager;
use serde_json::json;

use crate::api::{PodRequest, PodRequestStatus, condition};
use crate::cached_pod::CachedPod;

/// Field manager for everything the operator writes.
pub const MANAGER: &str = "pod-operator";
/// How long after creating a Pod its request's status may wait for the Pod to settle.
pub const CREATED_STATUS_DELAY: std::time::Duration = std::time::Duration::from_secs(1);
/// Label every Pod the operator creates carries, besides the talk's `app=<name>`.
pub const MANAGED_BY_LABEL: &str = "app.kubernetes.io/managed-by";

/// Exactly the API calls this controller makes, for its ClusterRole: watches of PodRequests and
/// Pods, PodRequest status merge patches, Pod create and delete, and the Pod read after a
/// create conflict. Events come from the runtime's rules.
pub fn rules() -> Vec<Rule> {
    vec![
        Rule::new("pod.jewzaam.org", &["podrequests"], &["list", "watch"]),
        Rule::new("pod.jewzaam.org", &["podrequests/status"], &["patch"]),
        Rule::new("", &["pods"], &["get", "list", "watch", "create", "delete"]),
    ]
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("the apiserver rejected Pod {pod}: {message}")]
    PodRejected { pod: String, message: String },
    #[error("PodRequest {0} has no namespace")]
    NoNamespace(String),
}

impl operon_runtime::controller::Cause for Error {
    /// The `cause` label of `operon_reconcile_errors_by_cause_total`.
    fn cause(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::PodRejected { .. } => "pod_rejected",
            Error::NoNamespace(_) => "no_namespace",
        }
    }
}

/// How the operator runs (the namespaces it serves, metrics, readiness and leadership are the
/// [`Manager`]'s).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Reconciles running at once (each object is reconciled by one at a time).
    pub concurrency: u16,
}

impl Default for Settings {
    fn default() -> Self {
        Settings { concurrency: 10 }
    }
}

/// What a reconcile needs.
pub struct Context {
    client: Client,
    pods: Store<CachedPod>,
    events: Events,
    /// A fingerprint of the status last written per PodRequest UID, for as long as the cache
    /// shows the version that write replaced: a lagging cache doesn't cause a second, identical
    /// write. (A hash, not the status: it is kept for every request.)
    written: Writes<String, u64>,
    requests: Store<PodRequest>,
}

/// The talk's slide: watch PodRequests (their spec) and Pods, map a Pod to the PodRequest of
/// its name (a foreign Pod of that name matters too), reconcile — in each namespace the
/// operator serves.
pub fn register(manager: &mut Manager, settings: &Settings) {
    for scope in manager.scopes() {
        let requests = manager.reflect(
            scope.api::<PodRequest>(manager.client()),
            watcher::Config::default(),
            controller::trim_managed_fields,
        );
        let pods = manager
            .reflect(
                scope.api::<CachedPod>(manager.client()),
                watcher::Config::default(),
                keep_whole_pod,
            )
            .only_changed(pod_fingerprint);
        let ctx = Arc::new(Context {
            client: manager.client(),
            pods: pods.store.clone(),
            events: manager.events(),
            written: Writes::default(),
            requests: requests.store.clone(),
        });
        let by_name = {
            let requests = requests.store.clone();
            move |pod: CachedPod| {
                let key = ObjectRef::<PodRequest>::new(&pod.name_any()).within(&pod.namespace()?);
                requests.get(&key).map(|_| key)
            }
        };
        let controller = Controller::new("podrequest", requests)
            .filter(|pr: &PodRequest| pr.meta().generation.unwrap_or_default() as u64)
            .watches(pods, by_name)
            .workers(settings.concurrency.into())
            .ready_condition();
        manager.add(controller, ctx, reconcile);
    }
}

/// A [`CachedPod`] holds only what reconciles read already.
fn keep_whole_pod(_: &mut CachedPod) {}

async fn reconcile(request: Arc<PodRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    request.reconcile(&ctx).await
}

/// What a reconcile found, as the status and Events should tell it.
enum Observed {
    /// The Pod is ours and matches the spec.
    Current(CachedPod),
    /// Just created.
    Created(CachedPod),
    /// Ours but being deleted (replacement or someone deleted it).
    Terminating(CachedPod),
    /// Ours but for an older spec: deleted, a new one follows once it is gone.
    Replacing(CachedPod),
    /// Someone else's Pod has the name.
    Conflict(CachedPod),
    /// The apiserver refused the Pod.
    Rejected {
        reason: &'static str,
        message: String,
    },
}

impl PodRequest {
    async fn reconcile(&self, ctx: &Context) -> Result<Action, Error> {
        if self.metadata.deletion_timestamp.is_some() {
            // The Pod goes with the request through its ownerReference.
            return Ok(Action::await_change());
        }
        let ns = self
            .namespace()
            .ok_or_else(|| Error::NoNamespace(self.name_any()))?;
        let name = self.name_any();
        let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);

        // The workers start once the Pod cache has its initial list: "not cached" means
        // "doesn't exist".
        let cached = ctx.pods.get(&ObjectRef::new(&name).within(&ns));
        let observed = match cached {
            None => self.create_pod(&pods, ctx).await?,
            Some(pod) => self.classify(&pods, (*pod).clone(), ctx).await?,
        };

        if matches!(observed, Observed::Created(_)) {
            // A new Pod is usually Ready within moments, and its readiness wakes this request:
            // one status write then, rather than "Pending" now and "Ready" right after. If it
            // isn't, the Pending status is written when this comes due.
            return Ok(Action::requeue(CREATED_STATUS_DELAY));
        }
        if let Observed::Current(pod) = &observed
            && let Some(left) = settling(pod, Timestamp::now())
        {
            // The new Pod's first events (added, scheduled) come within that second too: they
            // don't get a Pending status of their own either.
            return Ok(Action::requeue(left));
        }
        let status = self.desired_status(&observed);
        let key = self.metadata.uid.clone().unwrap_or_default();
        let already_written = ctx
            .written
            .newer_than_cache(&key, self.metadata.resource_version.as_deref())
            == Some(fingerprint(&status));
        if self.status.as_ref() != Some(&status) && !already_written {
            // A JSON merge patch of the whole status: no conflicts (only this controller writes
            // status), and cheaper for the apiserver than server-side apply, which matters when
            // it is the bottleneck (docs/performance.md).
            let patched = Api::<PodRequest>::namespaced(ctx.client.clone(), &ns)
                .patch_status(
                    &name,
                    &PatchParams {
                        field_manager: Some(MANAGER.to_string()),
                        ..Default::default()
                    },
                    &Patch::Merge(&status_patch(&status)),
                )
                .await;
            match patched {
                Ok(_) => {}
                // Deleted since the cache saw it: nothing left to report on.
                Err(e) if is_status(&e, 404) => return Ok(Action::await_change()),
                Err(e) => return Err(e.into()),
            }
            ctx.written.record(
                key,
                self.metadata.resource_version.clone(),
                fingerprint(&status),
            );
            ctx.written.forget_deleted(ctx.requests.len(), || {
                let live: std::collections::HashSet<String> = ctx
                    .requests
                    .state()
                    .iter()
                    .filter_map(|r| r.metadata.uid.clone())
                    .collect();
                move |uid: &String| live.contains(uid)
            });
        }
        match observed {
            Observed::Rejected { message, .. } => Err(Error::PodRejected { pod: name, message }),
            _ => Ok(Action::await_change()),
        }
    }

    fn owns(&self, pod: &CachedPod) -> bool {
        let uid = self.metadata.uid.as_deref();
        pod.owner_references()
            .iter()
            .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
    }

    /// The Pod's single container says what the spec says.
    fn matches_spec(&self, pod: &CachedPod) -> bool {
        match pod.containers.as_slice() {
            [c] => {
                c.name == self.spec.name
                    && c.image.as_deref() == Some(self.spec.image.as_str())
                    && c.command.as_deref() == Some(self.spec.command.as_slice())
            }
            _ => false,
        }
    }

    /// The Pod this request asks for (slide 69, plus ownership and a managed-by label).
    pub fn desired_pod(&self) -> Pod {
        let name = self.name_any();
        Pod {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                namespace: self.namespace(),
                labels: Some(
                    [
                        ("app".to_string(), name),
                        (MANAGED_BY_LABEL.to_string(), MANAGER.to_string()),
                    ]
                    .into(),
                ),
                owner_references: self.controller_owner_ref(&()).map(|mut o| {
                    // The Pod goes before its request when deletion is foreground.
                    o.block_owner_deletion = Some(true);
                    vec![o]
                }),
                ..Default::default()
            },
            spec: Some(PodSpec {
                containers: vec![Container {
                    name: self.spec.name.clone(),
                    image: Some(self.spec.image.clone()),
                    command: Some(self.spec.command.clone()),
                    ..Default::default()
                }],
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    async fn classify(
        &self,
        pods: &Api<Pod>,
        pod: CachedPod,
        ctx: &Context,
    ) -> Result<Observed, Error> {
        if !self.owns(&pod) {
            if !self.is_degraded_by("PodConflict") {
                ctx.events
                    .warning(self, "PodConflict", "Create", conflict_message(&pod))
                    .await;
            }
            return Ok(Observed::Conflict(pod));
        }
        if pod.metadata.deletion_timestamp.is_some() {
            // An old spec's Pod on its way out is the replacement in progress: the status
            // already says so.
            return Ok(match self.matches_spec(&pod) {
                true => Observed::Terminating(pod),
                false => Observed::Replacing(pod),
            });
        }
        if self.matches_spec(&pod) {
            return Ok(Observed::Current(pod));
        }
        // Image and command of a Pod are immutable: replace it. The precondition makes sure
        // only the Pod we looked at is deleted.
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match pods.delete(&pod.name_any(), &dp).await {
            Ok(_) => {}
            Err(e) if is_status(&e, 404) || is_status(&e, 409) => {}
            Err(e) => return Err(e.into()),
        }
        ctx.events
            .normal(
                self,
                "Replaced",
                "Delete",
                format!(
                    "Deleted Pod {} to apply spec generation {}; a new Pod follows once it is gone",
                    pod.name_any(),
                    self.metadata.generation.unwrap_or_default()
                ),
            )
            .await;
        Ok(Observed::Replacing(pod))
    }

    async fn create_pod(&self, pods: &Api<Pod>, ctx: &Context) -> Result<Observed, Error> {
        let pp = PostParams {
            field_manager: Some(MANAGER.to_string()),
            ..Default::default()
        };
        match pods.create(&pp, &self.desired_pod()).await {
            Ok(pod) => {
                ctx.events
                    .normal(
                        self,
                        "Created",
                        "Create",
                        format!("Created Pod {}", pod.name_any()),
                    )
                    .await;
                Ok(Observed::Created(pod.into()))
            }
            Err(e) if is_status(&e, 409) => {
                // Not in the cache, yet it exists: a foreign Pod, or ours not yet seen.
                match pods.get_opt(&self.name_any()).await? {
                    Some(pod) => self.classify(pods, pod.into(), ctx).await,
                    None => Err(e.into()),
                }
            }
            Err(kube::Error::Api(status)) if matches!(status.code, 403 | 422) => {
                let reason = if status.message.contains("exceeded quota") {
                    "QuotaExceeded"
                } else if status.code == 422 {
                    "InvalidPod"
                } else {
                    "AdmissionDenied"
                };
                ctx.events
                    .warning(self, "FailedCreate", "Create", status.message.clone())
                    .await;
                Ok(Observed::Rejected {
                    reason,
                    message: status.message,
                })
            }
            Err(e) => Err(e.into()),
        }
    }

    fn is_degraded_by(&self, reason: &str) -> bool {
        self.status
            .as_ref()
            .and_then(|s| conditions::get(&s.conditions, condition::DEGRADED))
            .is_some_and(|c| c.status == "True" && c.reason == reason)
    }

    fn desired_status(&self, observed: &Observed) -> PodRequestStatus {
        let mut status = self.status.clone().unwrap_or_default();
        // The status is this operator's report: conditions of other types (someone else wrote
        // them) go, also so that ours always fit the schema's bound on their number.
        status
            .conditions
            .retain(|c| c.type_ == condition::READY || c.type_ == condition::DEGRADED);
        let generation = self.metadata.generation;
        status.observed_generation = generation;
        let (ready, degraded) = match observed {
            Observed::Current(pod) | Observed::Created(pod) => {
                status.pod_name = pod.metadata.name.clone();
                status.pod_phase = pod_phase(pod);
                (pod_ready(pod), not_degraded())
            }
            Observed::Terminating(pod) => {
                status.pod_name = pod.metadata.name.clone();
                status.pod_phase = pod_phase(pod);
                let msg = format!(
                    "Pod {} is terminating; it will be recreated",
                    pod.name_any()
                );
                (
                    Desired::new(condition::READY, false, "PodTerminating", msg),
                    not_degraded(),
                )
            }
            Observed::Replacing(pod) => {
                status.pod_name = pod.metadata.name.clone();
                status.pod_phase = pod_phase(pod);
                let msg = format!(
                    "Replacing Pod {} to apply spec generation {}",
                    pod.name_any(),
                    generation.unwrap_or_default()
                );
                (
                    Desired::new(condition::READY, false, "Replacing", msg),
                    not_degraded(),
                )
            }
            Observed::Conflict(pod) => {
                status.pod_name = None;
                status.pod_phase = None;
                let msg = conflict_message(pod);
                (
                    Desired::new(condition::READY, false, "PodConflict", msg.clone()),
                    Desired::new(condition::DEGRADED, true, "PodConflict", msg),
                )
            }
            Observed::Rejected { reason, message } => {
                status.pod_name = None;
                status.pod_phase = None;
                let msg = format!("Pod {} was rejected: {message}", self.name_any());
                (
                    Desired::new(condition::READY, false, reason, msg.clone()),
                    Desired::new(condition::DEGRADED, true, reason, msg),
                )
            }
        };
        conditions::set(&mut status.conditions, ready, generation);
        conditions::set(&mut status.conditions, degraded, generation);
        status
    }
}

/// What a reconcile reads from a Pod: identity, owner, deletion, container, phase, readiness.
fn pod_fingerprint(pod: &CachedPod) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    pod.metadata.uid.hash(&mut hasher);
    pod.metadata.deletion_timestamp.is_some().hash(&mut hasher);
    for o in pod.owner_references() {
        (o.controller, &o.uid, &o.kind, &o.name).hash(&mut hasher);
    }
    pod.containers.hash(&mut hasher);
    pod.phase.hash(&mut hasher);
    pod.ready.hash(&mut hasher);
    hasher.finish()
}

/// A hash of `status` but for `lastTransitionTime`, which a status computed from a stale cache
/// resets: equal fingerprints mean the same status was written.
fn fingerprint(status: &PodRequestStatus) -> u64 {
    let mut s = status.clone();
    for c in &mut s.conditions {
        c.last_transition_time = Time(Timestamp::UNIX_EPOCH);
    }
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    serde_json::to_string(&s)
        .unwrap_or_default()
        .hash(&mut hasher);
    hasher.finish()
}

/// The merge patch that makes the status exactly `status`: fields it doesn't set are removed
/// (`null`), the conditions list is replaced as a whole.
fn status_patch(status: &PodRequestStatus) -> serde_json::Value {
    let mut value = serde_json::to_value(status).unwrap_or_else(|_| json!({}));
    if let Some(fields) = value.as_object_mut() {
        for key in ["observedGeneration", "podName", "podPhase"] {
            fields.entry(key).or_insert(serde_json::Value::Null);
        }
        fields.entry("conditions").or_insert_with(|| json!([]));
    }
    json!({ "status": value })
}

fn not_degraded() -> Desired<'static> {
    Desired::new(condition::DEGRADED, false, "AsExpected", "")
}

fn conflict_message(pod: &CachedPod) -> String {
    let owner = pod
        .owner_references()
        .iter()
        .find(|o| o.controller == Some(true))
        .map(|o| format!("controlled by {} {}", o.kind, o.name))
        .unwrap_or_else(|| "not controlled by this PodRequest".to_string());
    format!(
        "Pod {} already exists and is {owner}; it is left untouched. The Pod will be created once it is gone",
        pod.name_any()
    )
}

fn pod_phase(pod: &CachedPod) -> Option<String> {
    pod.phase.clone()
}

/// For a Pod younger than [`CREATED_STATUS_DELAY`] that is still starting (Pending, or Running
/// but not Ready): how long until it is that old.
fn settling(pod: &CachedPod, now: Timestamp) -> Option<std::time::Duration> {
    let phase = pod_phase(pod);
    if !matches!(phase.as_deref(), None | Some("Pending") | Some("Running"))
        || pod_ready(pod).status
    {
        return None;
    }
    let created = pod.metadata.creation_timestamp.as_ref()?.0;
    let age = std::time::Duration::try_from(now.duration_since(created)).ok()?;
    CREATED_STATUS_DELAY
        .checked_sub(age)
        .filter(|left| !left.is_zero())
}

fn pod_ready(pod: &CachedPod) -> Desired<'static> {
    let phase = pod_phase(pod).unwrap_or_else(|| "Pending".to_string());
    let ready = pod.ready;
    let name = pod.name_any();
    if phase == "Running" && ready {
        Desired::new(
            condition::READY,
            true,
            "PodReady",
            format!("Pod {name} is running and ready"),
        )
    } else {
        let reason = match phase.as_str() {
            "Pending" => "PodPending",
            "Running" => "PodNotReady",
            "Succeeded" => "PodSucceeded",
            "Failed" => "PodFailed",
            _ => "PodUnknown",
        };
        Desired::new(
            condition::READY,
            false,
            reason,
            format!("Pod {name} is {phase}"),
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_patch_removes_what_the_status_no_longer_says() {
        let status = PodRequestStatus {
            observed_generation: Some(2),
            ..Default::default()
        };
        let patch = status_patch(&status);
        assert_eq!(patch["status"]["observedGeneration"], json!(2));
        assert_eq!(patch["status"]["podName"], serde_json::Value::Null);
        assert_eq!(patch["status"]["podPhase"], serde_json::Value::Null);
        assert_eq!(patch["status"]["conditions"], json!([]));
    }

    #[tokio::test]
    async fn pod_changes_pass_when_they_change_what_a_reconcile_reads() {
        use futures::StreamExt;
        use operon_runtime::controller::Change;
        let pod = |phase: &str, node: &str| -> CachedPod {
            serde_json::from_value(json!({
                "metadata": { "name": "p", "uid": "u1" },
                "spec": { "nodeName": node, "containers": [{ "name": "main", "image": "busybox" }] },
                "status": { "phase": phase },
            }))
            .unwrap_or_default()
        };
        let changes = vec![
            Change::Applied(pod("Pending", "")),       // added
            Change::Applied(pod("Pending", "node-1")), // scheduled: nothing a reconcile reads
            Change::Applied(pod("Running", "node-1")), // phase
            Change::Deleted(pod("Running", "node-1")), // a deletion always passes
            Change::Applied(pod("Running", "node-1")), // re-added
        ];
        let passed: Vec<_> =
            controller::only_changed(futures::stream::iter(changes).boxed(), pod_fingerprint)
                .collect()
                .await;
        let kinds: Vec<&str> = passed
            .iter()
            .map(|c| match c {
                Change::Listed(_) => "listed",
                Change::Applied(p) => p.phase.as_deref().unwrap_or(""),
                Change::Deleted(_) => "deleted",
            })
            .collect();
        assert_eq!(kinds, ["Pending", "Running", "deleted", "Running"]);
    }

    #[test]
    fn a_starting_pod_settles_for_a_second_before_pending_is_written() {
        let pod = |phase: &str, ready: &str| -> CachedPod {
            serde_json::from_value(json!({
                "metadata": { "name": "p", "creationTimestamp": "2026-01-01T00:00:00Z" },
                "status": { "phase": phase, "conditions": [{ "type": "Ready", "status": ready }] },
            }))
            .unwrap_or_default()
        };
        let at = |s: &str| s.parse::<Timestamp>().unwrap_or(Timestamp::UNIX_EPOCH);
        let early = at("2026-01-01T00:00:00.250Z");
        assert_eq!(
            settling(&pod("Pending", "False"), early),
            Some(std::time::Duration::from_millis(750))
        );
        assert!(settling(&pod("Running", "False"), early).is_some());
        // Ready, finished, or old enough: the status is written now.
        assert_eq!(settling(&pod("Running", "True"), early), None);
        assert_eq!(settling(&pod("Failed", "False"), early), None);
        assert_eq!(
            settling(&pod("Pending", "False"), at("2026-01-01T00:00:01Z")),
            None
        );
        assert_eq!(
            settling(&pod("Pending", "False"), at("2026-01-01T00:00:05Z")),
            None
        );
        // A clock behind the apiserver's: written at once.
        assert_eq!(
            settling(&pod("Pending", "False"), at("2025-12-31T23:59:59Z")),
            None
        );
    }

    #[test]
    fn the_cached_pod_is_enough_to_tell_ownership_and_spec() {
        let pod: CachedPod = serde_json::from_value(json!({
            "metadata": {
                "name": "p", "uid": "u1", "labels": { "app": "p" },
                "ownerReferences": [{ "apiVersion": "pod.jewzaam.org/v1alpha1", "kind": "PodRequest",
                    "name": "p", "uid": "r1", "controller": true }],
            },
            "spec": {
                "nodeName": "n", "volumes": [{ "name": "v", "emptyDir": {} }],
                "containers": [{ "name": "main", "image": "busybox", "command": ["sleep", "1"],
                    "env": [{ "name": "A", "value": "1" }] }],
            },
            "status": { "phase": "Running", "podIP": "10.0.0.1",
                "conditions": [{ "type": "Ready", "status": "True" }] },
        }))
        .unwrap_or_default();
        let request = |uid: &str, image: &str| -> Option<PodRequest> {
            serde_json::from_value(json!({
                "apiVersion": "pod.jewzaam.org/v1alpha1", "kind": "PodRequest",
                "metadata": { "name": "p", "namespace": "ns", "uid": uid },
                "spec": { "name": "main", "image": image, "command": ["sleep", "1"] },
            }))
            .ok()
        };
        let ours = request("r1", "busybox");
        assert!(
            ours.as_ref()
                .is_some_and(|r| r.owns(&pod) && r.matches_spec(&pod))
        );
        let changed = request("r1", "busybox:1.37");
        assert!(
            changed
                .as_ref()
                .is_some_and(|r| r.owns(&pod) && !r.matches_spec(&pod))
        );
        let other = request("r2", "busybox");
        assert!(other.as_ref().is_some_and(|r| !r.owns(&pod)));
        assert!(pod_ready(&pod).status);
    }

    #[test]
    fn fingerprint_ignores_transition_times_only() {
        let condition =
            |at: i64, message: &str| k8s_openapi::apimachinery::pkg::apis::meta::v1::Condition {
                type_: "Ready".into(),
                status: "True".into(),
                reason: "PodReady".into(),
                message: message.into(),
                observed_generation: Some(1),
                last_transition_time: Time(
                    Timestamp::from_second(at).unwrap_or(Timestamp::UNIX_EPOCH),
                ),
            };
        let with = |c| PodRequestStatus {
            conditions: vec![c],
            ..Default::default()
        };
        assert_eq!(
            fingerprint(&with(condition(10, "a"))),
            fingerprint(&with(condition(20, "a")))
        );
        assert_ne!(
            fingerprint(&with(condition(10, "a"))),
            fingerprint(&with(condition(10, "b")))
        );
    }
}
