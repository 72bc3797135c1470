//! events.k8s.io Events about the objects an operator reconciles.
//!
//! Events are best effort: a failure to record one is logged and never fails a reconcile.
//! Repeats of an Event (same object, type, reason and action, as client-go keys them) within
//! [`SERIES_TTL`] fold into a series: the first one is created, the next ones patch its
//! `series` (count, last seen).
//!
//! Recording doesn't hold up the reconcile that reports: the write runs in the background, at
//! most [`IN_FLIGHT`] at once. No Event is ever dropped (client-go's broadcaster drops when its
//! queue is full): with [`MAX_PENDING`] writes waiting, a reconcile that records one more waits
//! for room, which slows the controller down to what the API server takes instead of growing
//! memory without bound.
//!
//! What a series needs is remembered, not the Event: its name and count, some 100 bytes per
//! recent Event where kube-runtime's recorder keeps the whole object (over 1 kB) and scans all of
//! them on every publish. Entries older than [`SERIES_TTL`] are swept at most once a minute.

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Arc;
use std::time::Duration;

use k8s_openapi::api::core::v1::ObjectReference;
use k8s_openapi::api::events::v1::{Event, EventSeries};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::MicroTime;
use k8s_openapi::jiff::{SignedDuration, Timestamp};
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{Client, Resource};
use parking_lot::Mutex;
use serde_json::json;
use tokio::sync::Semaphore;

/// Event writes in flight at once.
pub const IN_FLIGHT: usize = 4;
/// Event writes waiting (in flight included) beyond which recording waits for room.
pub const MAX_PENDING: usize = 1000;
/// How long after its last occurrence an Event still takes repeats into its series (client-go's
/// and kube-runtime's: 6 minutes).
pub const SERIES_TTL: Duration = Duration::from_secs(6 * 60);
/// How often at most expired series are swept out.
const SWEEP_EVERY: Duration = Duration::from_secs(60);

/// Normal or Warning.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum EventType {
    Normal,
    Warning,
}

impl EventType {
    fn as_str(self) -> &'static str {
        match self {
            EventType::Normal => "Normal",
            EventType::Warning => "Warning",
        }
    }
}

/// A recent Event, as much as a repeat needs.
#[derive(Debug, Clone)]
struct Series {
    /// The Event's name (in the regarding object's namespace, or `default`).
    name: String,
    count: i32,
    last: Timestamp,
}

/// Recent Events by a hash of what makes a repeat.
#[derive(Debug)]
struct Recent {
    series: HashMap<u64, Series>,
    swept: Timestamp,
}

impl Recent {
    fn new(now: Timestamp) -> Self {
        Recent {
            series: HashMap::new(),
            swept: now,
        }
    }

    /// Forgets series last seen more than [`SERIES_TTL`] before `now`, if the last sweep was
    /// [`SWEEP_EVERY`] ago.
    fn sweep(&mut self, now: Timestamp) {
        if now.duration_since(self.swept) < signed(SWEEP_EVERY) {
            return;
        }
        self.swept = now;
        let ttl = signed(SERIES_TTL);
        self.series.retain(|_, s| now.duration_since(s.last) < ttl);
    }

    /// The series an occurrence of `key` at `now` continues, counted (at once, so that
    /// concurrent repeats count on); `None`: a new Event is to be created.
    fn occur(&mut self, key: u64, now: Timestamp) -> Option<Series> {
        self.sweep(now);
        let ttl = signed(SERIES_TTL);
        let s = self
            .series
            .get_mut(&key)
            .filter(|s| now.duration_since(s.last) < ttl)?;
        s.count += 1;
        s.last = now;
        Some(s.clone())
    }

    /// Event `name` was created for `key` at `at`: its repeats patch it. (Remembered once
    /// created: a repeat that comes while the create is in flight makes an Event of its own
    /// rather than patching one that may never exist.)
    fn created(&mut self, key: u64, name: &str, at: Timestamp) {
        self.series.insert(
            key,
            Series {
                name: name.to_string(),
                count: 1,
                last: at,
            },
        );
    }
}

fn signed(d: Duration) -> SignedDuration {
    SignedDuration::try_from(d).unwrap_or(SignedDuration::MAX)
}

/// Records Events about objects; cheap to clone (clones share the queue and the series).
#[derive(Clone)]
pub struct Events {
    client: Client,
    controller: Arc<str>,
    /// `reportingInstance`: the replica, else the controller's name (as kube-runtime does).
    instance: Arc<str>,
    recent: Arc<Mutex<Recent>>,
    slots: Arc<Semaphore>,
    pending: Arc<Semaphore>,
}

impl Events {
    /// `controller` is the reporting controller's name, `instance` the replica (Pod name).
    pub fn new(client: Client, controller: &str, instance: Option<String>) -> Self {
        Events {
            client,
            controller: controller.into(),
            instance: instance.as_deref().unwrap_or(controller).into(),
            recent: Arc::new(Mutex::new(Recent::new(Timestamp::now()))),
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

    /// Series remembered now (for tests and metrics).
    pub fn recent_series(&self) -> usize {
        self.recent.lock().series.len()
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
        let now = Timestamp::now();
        // Cluster-scoped objects' Events go to `default`, as kube-runtime and client-go put them.
        let namespace = reference
            .namespace
            .clone()
            .unwrap_or_else(|| "default".into());
        let name = format!(
            "{}.{:x}",
            reference.name.as_deref().unwrap_or(&self.controller),
            now.as_nanosecond()
        );
        let key = series_key(&reference, type_, reason, action);
        let repeat = self.recent.lock().occur(key, now);
        let event = Event {
            metadata: ObjectMeta {
                namespace: Some(namespace),
                name: Some(name),
                ..Default::default()
            },
            action: Some(action.to_string()),
            reason: Some(reason.to_string()),
            note: Some(note),
            type_: Some(type_.as_str().to_string()),
            event_time: Some(MicroTime(now)),
            regarding: Some(reference),
            reporting_controller: Some(self.controller.to_string()),
            reporting_instance: Some(self.instance.to_string()),
            ..Default::default()
        };
        // Neither semaphore is ever closed; without a permit the write still goes ahead.
        let room = self.pending.clone().acquire_owned().await.ok();
        let (client, slots, recent) =
            (self.client.clone(), self.slots.clone(), self.recent.clone());
        tokio::spawn(async move {
            let _room = room;
            let _permit = slots.acquire().await.ok();
            if let Err(e) = write(&client, &recent, key, repeat, &event).await {
                recent.lock().series.remove(&key);
                tracing::warn!(reason = ?event.reason, "failed to record an Event: {e}");
            }
        });
    }
}

/// Patches the series of a repeat, or creates `event`: for a new one, and for a repeat whose
/// first Event is gone (deleted, or expired by the API server), which starts a new series.
async fn write(
    client: &Client,
    recent: &Mutex<Recent>,
    key: u64,
    repeat: Option<Series>,
    event: &Event,
) -> Result<(), kube::Error> {
    let namespace = event.metadata.namespace.as_deref().unwrap_or("default");
    let api = Api::<Event>::namespaced(client.clone(), namespace);
    if let Some(s) = repeat {
        let series = EventSeries {
            count: s.count,
            last_observed_time: MicroTime(s.last),
        };
        let patch = json!({ "series": series });
        match api
            .patch(&s.name, &PatchParams::default(), &Patch::Merge(patch))
            .await
        {
            Err(kube::Error::Api(status)) if status.code == 404 => {}
            other => return other.map(drop),
        }
    }
    api.create(&PostParams::default(), event).await?;
    if let (Some(name), Some(at)) = (&event.metadata.name, &event.event_time) {
        recent.lock().created(key, name, at.0);
    }
    Ok(())
}

/// What makes two Events one series: the object, type, reason and action (client-go's key; the
/// reporting controller and instance are this recorder's own).
fn series_key(reference: &ObjectReference, type_: EventType, reason: &str, action: &str) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    (
        &reference.api_version,
        &reference.kind,
        &reference.namespace,
        &reference.name,
        &reference.uid,
    )
        .hash(&mut h);
    (type_, reason, action).hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(seconds: i64) -> Timestamp {
        Timestamp::UNIX_EPOCH + SignedDuration::from_secs(1_000_000 + seconds)
    }

    /// An occurrence as `publish` and `write` handle it: continues a series, else creates.
    fn seen(recent: &mut Recent, key: u64, t: Timestamp, name: &str) -> Option<(String, i32)> {
        match recent.occur(key, t) {
            Some(s) => Some((s.name, s.count)),
            None => {
                recent.created(key, name, t);
                None
            }
        }
    }

    #[test]
    fn a_repeat_within_the_ttl_counts_into_the_first_events_series() {
        let mut recent = Recent::new(at(0));
        assert_eq!(seen(&mut recent, 1, at(0), "a.1"), None, "first: created");
        let a1 = |count| Some(("a.1".to_string(), count));
        assert_eq!(
            seen(&mut recent, 1, at(10), "a.2"),
            a1(2),
            "patches the first"
        );
        assert_eq!(seen(&mut recent, 1, at(20), "a.3"), a1(3));
        assert_eq!(seen(&mut recent, 2, at(20), "b.1"), None, "another key");
        // The TTL runs from the last occurrence.
        let late = at(20 + SERIES_TTL.as_secs() as i64 + 1);
        assert_eq!(
            seen(&mut recent, 1, late, "a.4"),
            None,
            "expired: a new Event"
        );
        assert_eq!(
            seen(&mut recent, 1, late, "a.5"),
            Some(("a.4".to_string(), 2))
        );
    }

    #[test]
    fn expired_series_are_swept_at_most_once_a_minute() {
        let ttl = SERIES_TTL.as_secs() as i64;
        let mut recent = Recent::new(at(0));
        for key in 0..100 {
            seen(&mut recent, key, at(0), "e");
        }
        seen(&mut recent, 100, at(100), "f");
        assert_eq!(recent.series.len(), 101, "swept, but none expired");
        seen(&mut recent, 101, at(ttl + 50), "g");
        assert_eq!(recent.series.len(), 2, "the 100 expired ones swept");
        // Key 100 expires at ttl + 100; 55 s after the last sweep it is still there.
        seen(&mut recent, 102, at(ttl + 105), "h");
        assert_eq!(recent.series.len(), 3);
        seen(&mut recent, 103, at(ttl + 111), "i");
        assert_eq!(recent.series.len(), 3, "a minute on: key 100 swept");
        assert!(!recent.series.contains_key(&100));
    }

    #[test]
    fn the_series_key_is_the_object_type_reason_and_action() {
        let r = |name: &str| ObjectReference {
            kind: Some("ConfigMap".into()),
            namespace: Some("ns".into()),
            name: Some(name.into()),
            uid: Some("u".into()),
            ..Default::default()
        };
        let k = series_key(&r("a"), EventType::Normal, "Created", "Create");
        assert_eq!(
            k,
            series_key(&r("a"), EventType::Normal, "Created", "Create")
        );
        assert_ne!(
            k,
            series_key(&r("b"), EventType::Normal, "Created", "Create")
        );
        assert_ne!(
            k,
            series_key(&r("a"), EventType::Warning, "Created", "Create")
        );
        assert_ne!(
            k,
            series_key(&r("a"), EventType::Normal, "Failed", "Create")
        );
        assert_ne!(
            k,
            series_key(&r("a"), EventType::Normal, "Created", "Delete")
        );
    }
}
