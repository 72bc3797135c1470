//! What a failing reconcile shows a user, besides the operator's log: a Warning Event on the
//! object, and for controllers that ask for it ([`Controller::ready_condition`]) a
//! `Ready=False` condition in its status with the error, cleared by the next success.
//!
//! Reported at most once per object for the same message within [`REPEAT_AFTER`]: retries
//! back off from milliseconds, and each must not become an API write. A condition is written
//! with a JSON patch whose `test` operations hold it to what the cache showed, so it never
//! overwrites a status the reconcile (or anyone) changed meanwhile; a refused patch is retried
//! with the next failure.
//!
//! [`Controller::ready_condition`]: super::Controller::ready_condition

use std::collections::HashMap;
use std::time::{Duration, Instant};

use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ApiResource, DynamicObject, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::{Client, Resource};
use parking_lot::Mutex;
use serde_json::{Value, json};

use crate::events::Events;

/// The error side of a reconcile: each controller's error names its cause, a short fixed label
/// of `operon_reconcile_errors_by_cause_total` (controller-runtime's
/// `controller_runtime_reconcile_errors_total` has no cause label) and of the retry's log line.
pub trait Cause: std::fmt::Display {
    /// A short, fixed label such as `kube` or `invalid_spec`.
    fn cause(&self) -> &'static str;
}

/// The condition type a failing reconcile sets to False.
pub const READY: &str = "Ready";
/// Its reason, and the Warning Event's.
pub const REASON: &str = "ReconcileError";
/// The same failure is reported again after this long.
pub const REPEAT_AFTER: Duration = Duration::from_secs(300);

/// Turns a cached object into JSON (only for controllers with a Ready condition).
pub(crate) type ToJson<K> = Box<dyn Fn(&K) -> Option<Value> + Send + Sync>;

/// The reporter of one controller.
pub(crate) struct Failures<K: Resource<DynamicType = ()>> {
    events: Events,
    client: Client,
    field_manager: String,
    /// Set when the controller's objects carry a `Ready` condition.
    ready: Option<ToJson<K>>,
    reported: Mutex<HashMap<ObjectRef<K>, Reported>>,
}

struct Reported {
    message: String,
    at: Instant,
    /// Whether this reporter set `Ready=False`.
    condition: bool,
}

impl<K> Failures<K>
where
    K: Resource<DynamicType = ()> + Send + Sync + 'static,
{
    pub(crate) fn new(
        events: Events,
        client: Client,
        field_manager: &str,
        ready: Option<ToJson<K>>,
    ) -> Self {
        Failures {
            events,
            client,
            field_manager: field_manager.to_owned(),
            ready,
            reported: Mutex::default(),
        }
    }

    pub(crate) fn with_ready(mut self, ready: ToJson<K>) -> Self {
        self.ready = Some(ready);
        self
    }

    /// A reconcile of `obj` failed with `message`.
    pub(crate) async fn failed(
        &self,
        key: &ObjectRef<K>,
        obj: Option<&K>,
        cause: &str,
        message: &str,
    ) {
        let Some(obj) = obj else { return };
        if obj.meta().deletion_timestamp.is_some() && self.ready.is_some() {
            // Finalizing: the status of an object on its way out is nobody's concern.
            return;
        }
        {
            let reported = self.reported.lock();
            if let Some(last) = reported.get(key)
                && last.message == message
                && last.at.elapsed() < REPEAT_AFTER
            {
                return;
            }
        }
        self.events
            .warning(
                obj,
                REASON,
                "Reconcile",
                format!("{message} (cause: {cause})"),
            )
            .await;
        let condition = match &self.ready {
            Some(to_json) => self.set_not_ready(obj, to_json, message).await,
            None => false,
        };
        self.reported.lock().insert(
            key.clone(),
            Reported {
                message: message.to_owned(),
                at: Instant::now(),
                condition,
            },
        );
    }

    /// A reconcile of `obj` succeeded: a `Ready=False` this reporter set, and the reconcile
    /// left, is removed.
    pub(crate) async fn succeeded(&self, key: &ObjectRef<K>, obj: Option<&K>) {
        let Some(last) = self.reported.lock().remove(key) else {
            return;
        };
        tracing::info!("reconciled after failing: {}", last.message);
        if let (true, Some(obj)) = (last.condition, obj) {
            self.clear(obj).await;
        }
    }

    /// Forget an object (deleted).
    pub(crate) fn forget(&self, key: &ObjectRef<K>) {
        self.reported.lock().remove(key);
    }

    fn api(&self, obj: &K) -> Api<DynamicObject> {
        let resource = ApiResource::erase::<K>(&());
        match obj.meta().namespace.as_deref() {
            Some(ns) => Api::namespaced_with(self.client.clone(), ns, &resource),
            None => Api::all_with(self.client.clone(), &resource),
        }
    }

    async fn patch(&self, obj: &K, ops: Value) -> bool {
        let Some(name) = obj.meta().name.as_deref() else {
            return false;
        };
        let patch: json_patch::Patch = match serde_json::from_value(ops) {
            Ok(patch) => patch,
            Err(e) => {
                tracing::warn!("building the Ready condition's patch: {e}");
                return false;
            }
        };
        let params = PatchParams {
            field_manager: Some(self.field_manager.clone()),
            ..PatchParams::default()
        };
        match self
            .api(obj)
            .patch_status(name, &params, &Patch::<()>::Json(patch))
            .await
        {
            Ok(_) => true,
            // A failed `test`: the status changed since the cache saw it; the next failure
            // tries again.
            Err(kube::Error::Api(s)) if s.code == 422 || s.code == 409 || s.code == 404 => false,
            Err(e) => {
                tracing::warn!("writing the Ready condition: {e}");
                false
            }
        }
    }

    async fn set_not_ready(&self, obj: &K, to_json: &ToJson<K>, message: &str) -> bool {
        let Some(value) = to_json(obj) else {
            return false;
        };
        let Some(ops) = not_ready_patch(&value, message, obj.meta().generation) else {
            return false;
        };
        self.patch(obj, ops).await
    }

    /// Reads the object's status now (the cache may not show the condition yet) and removes
    /// the condition if it is still ours.
    async fn clear(&self, obj: &K) {
        let Some(name) = obj.meta().name.as_deref() else {
            return;
        };
        let live = match self.api(obj).get_status(name).await {
            Ok(live) => live,
            Err(e) => {
                tracing::debug!("reading the status to clear the Ready condition: {e}");
                return;
            }
        };
        let Ok(value) = serde_json::to_value(&live) else {
            return;
        };
        if let Some(ops) = clear_patch(&value) {
            self.patch(obj, ops).await;
        }
    }
}

fn ready_index(conditions: &[Value]) -> Option<usize> {
    conditions
        .iter()
        .position(|c| c.get("type").and_then(Value::as_str) == Some(READY))
}

/// JSON patch setting `Ready=False` (reason [`REASON`], `message`) in `object`'s
/// `status.conditions`, tested against the conditions as `object` shows them. `None` when
/// it already says exactly that, or when `Ready` is already False for a reason of the
/// reconcile's own.
pub fn not_ready_patch(object: &Value, message: &str, generation: Option<i64>) -> Option<Value> {
    let now = Timestamp::now().to_string();
    let mut condition = json!({
        "type": READY,
        "status": "False",
        "reason": REASON,
        "message": crate::conditions::cut_message(message.to_owned()),
        "lastTransitionTime": now,
    });
    if let Some(generation) = generation {
        condition["observedGeneration"] = json!(generation);
    }
    let status = object.get("status").filter(|s| s.is_object());
    let conditions = status.and_then(|s| s.get("conditions"));
    let ops = match conditions.and_then(Value::as_array) {
        Some(list) => match ready_index(list) {
            Some(i) => {
                let current = &list[i];
                let same = |field: &str| current.get(field) == condition.get(field);
                if same("status") && same("reason") && same("message") {
                    return None;
                }
                if current.get("status").and_then(Value::as_str) == Some("False")
                    && current.get("reason").and_then(Value::as_str) != Some(REASON)
                {
                    // The reconcile told the failure itself: its account stands.
                    return None;
                }
                if current.get("status").and_then(Value::as_str) == Some("False")
                    && let Some(since) = current.get("lastTransitionTime")
                {
                    condition["lastTransitionTime"] = since.clone();
                }
                json!([
                    { "op": "test", "path": format!("/status/conditions/{i}"), "value": current },
                    { "op": "replace", "path": format!("/status/conditions/{i}"), "value": condition },
                ])
            }
            None => json!([
                { "op": "test", "path": "/status/conditions", "value": list },
                { "op": "add", "path": "/status/conditions/-", "value": condition },
            ]),
        },
        None if status.is_some() => json!([
            { "op": "add", "path": "/status/conditions", "value": [condition] },
        ]),
        None => json!([
            { "op": "add", "path": "/status", "value": { "conditions": [condition] } },
        ]),
    };
    Some(ops)
}

/// JSON patch removing the `Ready` condition of `object` if it is still the one
/// [`not_ready_patch`] wrote; `None` when it isn't.
pub fn clear_patch(object: &Value) -> Option<Value> {
    let list = object.pointer("/status/conditions")?.as_array()?;
    let i = ready_index(list)?;
    let current = &list[i];
    let ours = current.get("reason").and_then(Value::as_str) == Some(REASON)
        && current.get("status").and_then(Value::as_str) == Some("False");
    ours.then(|| {
        json!([
            { "op": "test", "path": format!("/status/conditions/{i}"), "value": current },
            { "op": "remove", "path": format!("/status/conditions/{i}") },
        ])
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn apply(object: &Value, ops: Value) -> Result<Value, json_patch::PatchError> {
        let mut object = object.clone();
        let patch: json_patch::Patch = serde_json::from_value(ops).expect("a patch");
        json_patch::patch(&mut object, &patch)?;
        Ok(object)
    }

    #[test]
    fn sets_ready_false_wherever_the_status_is() {
        for object in [
            json!({"spec": {}}),
            json!({"status": {}}),
            json!({"status": {"conditions": []}}),
            json!({"status": {"conditions": [{"type": "Other", "status": "True"}]}}),
            json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "Fine"}]}}),
        ] {
            let ops = not_ready_patch(&object, "the apiserver said no", Some(3)).expect("a patch");
            let patched = apply(&object, ops).expect("applies");
            let list = patched["status"]["conditions"]
                .as_array()
                .expect("conditions");
            let ready = &list[ready_index(list).expect("Ready")];
            assert_eq!(ready["status"], "False");
            assert_eq!(ready["reason"], REASON);
            assert_eq!(ready["message"], "the apiserver said no");
            assert_eq!(ready["observedGeneration"], 3);
            // Other conditions are kept.
            let others = object
                .pointer("/status/conditions")
                .and_then(Value::as_array)
                .map_or(0, |l| l.iter().filter(|c| c["type"] != "Ready").count());
            assert_eq!(list.len(), others + 1);
        }
    }

    #[test]
    fn an_unchanged_failure_writes_nothing_and_keeps_its_transition_time() {
        let object = json!({"status": {"conditions": [{
            "type": "Ready", "status": "False", "reason": REASON, "message": "m",
            "lastTransitionTime": "2026-01-01T00:00:00Z",
        }]}});
        assert!(not_ready_patch(&object, "m", None).is_none());
        let ops = not_ready_patch(&object, "another", None).expect("a patch");
        let patched = apply(&object, ops).expect("applies");
        assert_eq!(
            patched["status"]["conditions"][0]["lastTransitionTime"],
            "2026-01-01T00:00:00Z"
        );
    }

    #[test]
    fn the_reconciles_own_ready_false_stands() {
        let object = json!({"status": {"conditions": [{
            "type": "Ready", "status": "False", "reason": "PodRejected", "message": "bad name",
        }]}});
        assert!(not_ready_patch(&object, "the apiserver rejected Pod x", None).is_none());
    }

    #[test]
    fn the_patch_fails_when_the_status_changed_since() {
        let seen = json!({"status": {"conditions": [{"type": "Ready", "status": "True"}]}});
        let ops = not_ready_patch(&seen, "m", None).expect("a patch");
        let now = json!({"status": {"conditions": [{"type": "Ready", "status": "True", "reason": "New"}]}});
        assert!(apply(&now, ops).is_err());
    }

    #[test]
    fn clearing_removes_only_our_condition() {
        let ours = json!({"status": {"conditions": [
            {"type": "Other", "status": "True"},
            {"type": "Ready", "status": "False", "reason": REASON, "message": "m"},
        ]}});
        let cleared = apply(&ours, clear_patch(&ours).expect("a patch")).expect("applies");
        assert_eq!(
            cleared["status"]["conditions"],
            json!([{"type": "Other", "status": "True"}])
        );
        // Someone (the reconcile) wrote Ready since: left alone.
        let theirs = json!({"status": {"conditions": [
            {"type": "Ready", "status": "True", "reason": "PodRunning"},
        ]}});
        assert!(clear_patch(&theirs).is_none());
        // The cache showed ours, the object has theirs: the test fails, nothing removed.
        assert!(apply(&theirs, clear_patch(&ours).expect("a patch")).is_err());
    }
}
