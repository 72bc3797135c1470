//! events.k8s.io Events about the objects an operator reconciles.
//!
//! Events are best effort: a failure to record one is logged and never fails a reconcile.
//! kube-runtime's recorder folds repeats of the same event into a series.
//!
//! Recording doesn't hold up the reconcile that reports: the write runs in the background, at
//! most [`IN_FLIGHT`] at once. No Event is ever dropped (client-go's broadcaster drops when its
//! queue is full): with [`MAX_PENDING`] writes waiting, a reconcile that records one more waits
//! for room, which slows the controller down to what the API server takes instead of growing
//! memory without bound.

use std::sync::Arc;

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tokio::sync::Semaphore;

/// Event writes in flight at once.
pub const IN_FLIGHT: usize = 4;
/// Event writes waiting (in flight included) beyond which recording waits for room.
pub const MAX_PENDING: usize = 1000;

#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
    slots: Arc<Semaphore>,
    pending: Arc<Semaphore>,
}

impl Events {
    /// `controller` is the reporting controller's name, `instance` the replica (Pod name).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        let reporter = Reporter {
            controller: controller.to_string(),
            instance,
        };
        Events {
            recorder: Recorder::new(client, reporter),
            slots: Arc::new(Semaphore::new(IN_FLIGHT)),
            pending: Arc::new(Semaphore::new(MAX_PENDING)),
        }
    }

    pub async fn normal<K>(&self, obj: &K, reason: &str, action: &str, note: impl Into<String>)
    where
        K: Resource<DynamicType = ()>,
    {
        self.publish(
            obj.object_ref(&()),
            EventType::Normal,
            reason,
            action,
            note.into(),
        )
        .await;
    }

    pub async fn warning<K>(&self, obj: &K, reason: &str, action: &str, note: impl Into<String>)
    where
        K: Resource<DynamicType = ()>,
    {
        self.publish(
            obj.object_ref(&()),
            EventType::Warning,
            reason,
            action,
            note.into(),
        )
        .await;
    }

    async fn publish(
        &self,
        reference: ObjectReference,
        type_: EventType,
        reason: &str,
        action: &str,
        mut note: String,
    ) {
        // The API caps an Event's note at 1 kB.
        if note.len() > 1000 {
            let mut cut = 1000;
            while !note.is_char_boundary(cut) {
                cut -= 1;
            }
            note.truncate(cut);
        }
        let event = Event {
            type_,
            reason: reason.to_string(),
            note: Some(note),
            action: action.to_string(),
            secondary: None,
        };
        // Neither semaphore is ever closed; without a permit the write still goes ahead.
        let room = self.pending.clone().acquire_owned().await.ok();
        let (recorder, slots) = (self.recorder.clone(), self.slots.clone());
        tokio::spawn(async move {
            let _room = room;
            let _permit = slots.acquire().await.ok();
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(
                    object = ?reference.name,
                    namespace = ?reference.namespace,
                    reason = %event.reason,
                    "failed to record an Event: {e}"
                );
            }
        });
    }
}
