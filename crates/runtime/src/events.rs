//! events.k8s.io Events about the objects an operator reconciles.
//!
//! Events are best effort: a failure to record one is logged and never fails a reconcile.
//! kube-runtime's recorder folds repeats of the same event into a series.
//!
//! Recording doesn't hold up the reconcile that reports: the write runs in the background, at
//! most [`IN_FLIGHT`] at once, and beyond [`MAX_PENDING`] waiting writes new Events are dropped
//! with a log line (client-go's broadcaster drops too when its queue is full). A reconcile's
//! latency is then its Pod and status writes alone.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};

use k8s_openapi::api::core::v1::ObjectReference;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::{Client, Resource};
use tokio::sync::Semaphore;

/// Event writes in flight at once.
pub const IN_FLIGHT: usize = 4;
/// Event writes waiting beyond which new ones are dropped.
pub const MAX_PENDING: usize = 1000;

#[derive(Clone)]
pub struct Events {
    recorder: Recorder,
    slots: Arc<Semaphore>,
    pending: Arc<AtomicUsize>,
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
            pending: Arc::new(AtomicUsize::new(0)),
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
        if self.pending.fetch_add(1, Ordering::SeqCst) >= MAX_PENDING {
            self.pending.fetch_sub(1, Ordering::SeqCst);
            tracing::warn!(
                object = ?reference.name,
                namespace = ?reference.namespace,
                reason,
                "dropped an Event: {MAX_PENDING} are waiting to be written"
            );
            return;
        }
        let (recorder, slots, pending) = (
            self.recorder.clone(),
            self.slots.clone(),
            self.pending.clone(),
        );
        tokio::spawn(async move {
            // The semaphore is never closed; without a permit the write still goes ahead.
            let _permit = slots.acquire().await.ok();
            if let Err(e) = recorder.publish(&event, &reference).await {
                tracing::warn!(
                    object = ?reference.name,
                    namespace = ?reference.namespace,
                    reason = %event.reason,
                    "failed to record an Event: {e}"
                );
            }
            pending.fetch_sub(1, Ordering::SeqCst);
        });
    }
}
