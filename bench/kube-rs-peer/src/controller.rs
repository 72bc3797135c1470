//! The PodRequest controller: a Pod named after each request, owned by it, and the request's
//! status telling whether that Pod is ready.

use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams, Preconditions};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder};
use kube::runtime::reflector::{ObjectRef, Store};
use kube::{Client, Resource, ResourceExt};
use pod_operator::api::{PodRequest, PodRequestStatus, condition};
use serde_json::json;

use crate::metrics::Metrics;

/// Field manager and event reporter: pod-operator's, whose Pod (`PodRequest::desired_pod`) this
/// peer creates too.
pub use pod_operator::controller::MANAGER;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("PodRequest {0} has no namespace")]
    NoNamespace(String),
    #[error("the Pod cache stopped before its first list")]
    PodCache(#[from] tokio::sync::watch::error::RecvError),
}

pub struct Context {
    pub client: Client,
    /// Every Pod, managedFields stripped; fed by the watch that also triggers reconciles.
    pub pods: Store<Pod>,
    /// True once `pods` has its first list. `Store::wait_until_ready` wakes only one of several
    /// concurrent waiters, so one task waits on it (see main.rs) and reconciles watch this.
    pub pods_synced: tokio::sync::watch::Receiver<bool>,
    pub recorder: Recorder,
    pub metrics: Arc<Metrics>,
}

pub async fn reconcile(pr: Arc<PodRequest>, ctx: Arc<Context>) -> Result<Action, Error> {
    let result = apply(&pr, &ctx).await;
    ctx.metrics.reconciled(result.is_ok());
    result
}

pub fn error_policy(pr: Arc<PodRequest>, error: &Error, _ctx: Arc<Context>) -> Action {
    tracing::warn!(podrequest = %pr.name_any(), %error, "reconcile failed");
    Action::requeue(Duration::from_secs(5))
}

/// What the request's Pod is to this request.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Observed {
    /// Controlled by the request and as its spec asks (or on its way out).
    Owned,
    /// Controlled by the request but for an older spec: deleted, to be created anew.
    Replacing,
    /// Someone else's Pod has the name.
    Conflict,
}

async fn apply(pr: &PodRequest, ctx: &Context) -> Result<Action, Error> {
    if pr.meta().deletion_timestamp.is_some() {
        // The Pod goes with the request through its ownerReference.
        return Ok(Action::await_change());
    }
    let ns = pr
        .namespace()
        .ok_or_else(|| Error::NoNamespace(pr.name_any()))?;
    let name = pr.name_any();
    let pods: Api<Pod> = Api::namespaced(ctx.client.clone(), &ns);

    // Until the Pod cache has its first list, "not cached" doesn't mean "doesn't exist".
    ctx.pods_synced.clone().wait_for(|synced| *synced).await?;
    let pod = match ctx.pods.get(&ObjectRef::new(&name).within(&ns)) {
        Some(pod) => pod,
        None => Arc::new(create_pod(pr, &pods, ctx).await?),
    };

    let observed = if !owns(pr, &pod) {
        if !degraded_by(pr, "PodConflict") {
            let note =
                format!("Pod {name} already exists and is not controlled by this PodRequest");
            publish(ctx, pr, EventType::Warning, "PodConflict", "Create", note).await;
        }
        Observed::Conflict
    } else if pod.metadata.deletion_timestamp.is_none() && !matches_spec(pr, &pod) {
        let dp = DeleteParams {
            preconditions: Some(Preconditions {
                uid: pod.metadata.uid.clone(),
                resource_version: None,
            }),
            ..Default::default()
        };
        match pods.delete(&name, &dp).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 404 || s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
        let note = format!("Deleted Pod {name} to apply the new spec");
        publish(ctx, pr, EventType::Normal, "Replaced", "Delete", note).await;
        Observed::Replacing
    } else {
        Observed::Owned
    };

    let status = desired_status(pr, &pod, observed, Timestamp::now());
    if pr.status.as_ref() != Some(&status) {
        let patch = json!({ "status": {
            "observedGeneration": status.observed_generation,
            "podName": status.pod_name,
            "podPhase": status.pod_phase,
            "conditions": status.conditions,
        }});
        Api::<PodRequest>::namespaced(ctx.client.clone(), &ns)
            .patch_status(
                &name,
                &PatchParams {
                    field_manager: Some(MANAGER.to_string()),
                    ..Default::default()
                },
                &Patch::Merge(&patch),
            )
            .await?;
    }
    Ok(Action::await_change())
}

async fn create_pod(pr: &PodRequest, pods: &Api<Pod>, ctx: &Context) -> Result<Pod, Error> {
    let pp = PostParams {
        field_manager: Some(MANAGER.to_string()),
        ..Default::default()
    };
    match pods.create(&pp, &pr.desired_pod()).await {
        Ok(pod) => {
            let note = format!("Created Pod {}", pod.name_any());
            publish(ctx, pr, EventType::Normal, "Created", "Create", note).await;
            Ok(pod)
        }
        // Not in the cache yet, but there: read it.
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(pods.get(&pr.name_any()).await?),
        Err(e) => Err(e.into()),
    }
}

async fn publish(
    ctx: &Context,
    pr: &PodRequest,
    type_: EventType,
    reason: &str,
    action: &str,
    note: String,
) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note),
        action: action.into(),
        secondary: None,
    };
    if let Err(error) = ctx.recorder.publish(&event, &pr.object_ref(&())).await {
        tracing::warn!(podrequest = %pr.name_any(), %error, reason, "publishing an Event");
    }
}

fn owns(pr: &PodRequest, pod: &Pod) -> bool {
    let uid = pr.metadata.uid.as_deref();
    pod.owner_references()
        .iter()
        .any(|o| o.controller == Some(true) && Some(o.uid.as_str()) == uid)
}

fn matches_spec(pr: &PodRequest, pod: &Pod) -> bool {
    match pod.spec.as_ref().map(|s| s.containers.as_slice()) {
        Some([c]) => {
            c.name == pr.spec.name
                && c.image.as_deref() == Some(pr.spec.image.as_str())
                && c.command.as_deref() == Some(pr.spec.command.as_slice())
        }
        _ => false,
    }
}

fn degraded_by(pr: &PodRequest, reason: &str) -> bool {
    pr.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == condition::DEGRADED && c.status == "True" && c.reason == reason)
    })
}

/// The status a request should have. Conditions keep their `lastTransitionTime` while their
/// status stays, so an unchanged situation gives the status the request already has.
fn desired_status(
    pr: &PodRequest,
    pod: &Pod,
    observed: Observed,
    now: Timestamp,
) -> PodRequestStatus {
    let name = pod.name_any();
    let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
    let (ready, reason, message) = match observed {
        Observed::Conflict => (
            false,
            "PodConflict",
            format!("Pod {name} already exists and is not controlled by this PodRequest"),
        ),
        Observed::Replacing => (false, "Replacing", format!("Replacing Pod {name}")),
        Observed::Owned => pod_readiness(pod),
    };
    let generation = pr.metadata.generation;
    let condition = |type_: &str, status: bool, reason: &str, message: String| {
        let status = if status { "True" } else { "False" };
        let previous = pr
            .status
            .as_ref()
            .and_then(|s| s.conditions.iter().find(|c| c.type_ == type_))
            .filter(|c| c.status == status);
        Condition {
            type_: type_.to_string(),
            status: status.to_string(),
            reason: reason.to_string(),
            message,
            observed_generation: generation,
            last_transition_time: previous.map_or(Time(now), |c| c.last_transition_time.clone()),
        }
    };
    let conflict = observed == Observed::Conflict;
    let degraded = if conflict {
        condition(condition::DEGRADED, true, reason, message.clone())
    } else {
        condition(condition::DEGRADED, false, "AsExpected", String::new())
    };
    PodRequestStatus {
        observed_generation: generation,
        pod_name: (!conflict).then_some(name),
        pod_phase: if conflict { None } else { phase },
        conditions: vec![
            condition(condition::READY, ready, reason, message),
            degraded,
        ],
    }
}

/// Ready when the Pod is Running and its Ready condition is true; otherwise why not.
fn pod_readiness(pod: &Pod) -> (bool, &'static str, String) {
    let name = pod.name_any();
    if pod.metadata.deletion_timestamp.is_some() {
        return (
            false,
            "PodTerminating",
            format!("Pod {name} is terminating"),
        );
    }
    let status = pod.status.as_ref();
    let phase = status.and_then(|s| s.phase.as_deref()).unwrap_or("Pending");
    let ready = status
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"));
    match phase {
        "Running" if ready => (true, "PodReady", format!("Pod {name} is running and ready")),
        "Running" => (false, "PodNotReady", format!("Pod {name} is Running")),
        "Pending" => (false, "PodPending", format!("Pod {name} is Pending")),
        "Succeeded" => (false, "PodSucceeded", format!("Pod {name} is Succeeded")),
        "Failed" => (false, "PodFailed", format!("Pod {name} is Failed")),
        _ => (false, "PodUnknown", format!("Pod {name} is {phase}")),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pod_operator::controller::MANAGED_BY_LABEL;

    fn request() -> PodRequest {
        serde_json::from_value(json!({
            "apiVersion": "pod.jewzaam.org/v1alpha1", "kind": "PodRequest",
            "metadata": { "name": "p", "namespace": "ns", "uid": "r1", "generation": 2 },
            "spec": { "name": "main", "image": "busybox", "command": ["sleep", "1"] },
        }))
        .expect("a valid PodRequest")
    }

    fn pod(owner_uid: &str, phase: &str, ready: &str) -> Pod {
        serde_json::from_value(json!({
            "metadata": { "name": "p", "namespace": "ns", "uid": "p1",
                "ownerReferences": [{ "apiVersion": "pod.jewzaam.org/v1alpha1",
                    "kind": "PodRequest", "name": "p", "uid": owner_uid, "controller": true }] },
            "spec": { "containers": [{ "name": "main", "image": "busybox", "command": ["sleep", "1"] }] },
            "status": { "phase": phase, "conditions": [{ "type": "Ready", "status": ready }] },
        }))
        .expect("a valid Pod")
    }

    fn condition_of<'a>(status: &'a PodRequestStatus, type_: &str) -> (&'a str, &'a str) {
        let c = status
            .conditions
            .iter()
            .find(|c| c.type_ == type_)
            .expect("condition present");
        (c.status.as_str(), c.reason.as_str())
    }

    #[test]
    fn status_follows_the_pod_and_is_stable_once_written() {
        let mut pr = request();
        let t0 = Timestamp::from_second(1_000).expect("timestamp");
        let t1 = Timestamp::from_second(2_000).expect("timestamp");

        let pending = pod("r1", "Pending", "False");
        assert!(owns(&pr, &pending) && matches_spec(&pr, &pending));
        let status = desired_status(&pr, &pending, Observed::Owned, t0);
        assert_eq!(condition_of(&status, "Ready"), ("False", "PodPending"));
        assert_eq!(condition_of(&status, "Degraded"), ("False", "AsExpected"));
        assert_eq!(status.pod_phase.as_deref(), Some("Pending"));
        assert_eq!(status.observed_generation, Some(2));

        // Running but not yet ready is not Ready.
        let running = pod("r1", "Running", "False");
        let status = desired_status(&pr, &running, Observed::Owned, t0);
        assert_eq!(condition_of(&status, "Ready"), ("False", "PodNotReady"));

        let ready = pod("r1", "Running", "True");
        let status = desired_status(&pr, &ready, Observed::Owned, t0);
        assert_eq!(condition_of(&status, "Ready"), ("True", "PodReady"));
        assert_eq!(status.pod_name.as_deref(), Some("p"));

        // Once written, the same observation later asks for no write.
        pr.status = Some(status.clone());
        assert_eq!(desired_status(&pr, &ready, Observed::Owned, t1), status);

        // Someone else's Pod: Degraded, no Pod reported, and the transition is dated.
        let foreign = pod("other", "Running", "True");
        assert!(!owns(&pr, &foreign));
        let status = desired_status(&pr, &foreign, Observed::Conflict, t1);
        assert_eq!(condition_of(&status, "Ready"), ("False", "PodConflict"));
        assert_eq!(condition_of(&status, "Degraded"), ("True", "PodConflict"));
        assert_eq!(status.pod_name, None);
        assert!(
            status
                .conditions
                .iter()
                .all(|c| c.last_transition_time == Time(t1))
        );
    }

    #[test]
    fn the_pod_a_request_asks_for_is_its_own() {
        let pr = request();
        let pod = pr.desired_pod();
        assert!(owns(&pr, &pod) && matches_spec(&pr, &pod));
        let labels = pod.metadata.labels.unwrap_or_default();
        assert_eq!(labels.get("app").map(String::as_str), Some("p"));
        assert_eq!(
            labels.get(MANAGED_BY_LABEL).map(String::as_str),
            Some("pod-operator")
        );
    }
}
