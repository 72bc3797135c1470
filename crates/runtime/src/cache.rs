//! Caches: knowing when a reflector has its initial list ([`Synced`]), from any number of
//! tasks; and reading one's own writes through a cache that lags behind them ([`Writes`]).
//!
//! kube-runtime's `Store::wait_until_ready` keeps a single waker (a oneshot receiver
//! underneath): when several tasks wait at once — the controller's own runner among them — only
//! the last one is woken and the others hang. That stalled reconciles after a restart, and could
//! keep the controller itself from starting. [`Synced`] is set from the watch stream instead
//! (after the event has reached the store) and wakes every waiter.

use std::collections::HashMap;
use std::hash::Hash;

use kube::runtime::watcher;
use parking_lot::Mutex;
use tokio::sync::watch;

/// Set once the cache has applied its initial list; cheap to clone, any number of waiters.
#[derive(Clone, Debug)]
pub struct Synced {
    tx: std::sync::Arc<watch::Sender<bool>>,
}

impl Default for Synced {
    fn default() -> Self {
        Synced {
            tx: std::sync::Arc::new(watch::channel(false).0),
        }
    }
}

impl Synced {
    pub fn new() -> Self {
        Self::default()
    }

    /// Marks the cache synced.
    pub fn mark(&self) {
        self.tx.send_replace(true);
    }

    pub fn is_synced(&self) -> bool {
        *self.tx.borrow()
    }

    /// Resolves once synced (at once if it already is).
    pub async fn wait(&self) {
        let mut rx = self.tx.subscribe();
        // The sender lives as long as `self`, so this only ends when synced.
        let _ = rx.wait_for(|synced| *synced).await;
    }

    /// For `.inspect_ok(...)` on a reflected watch stream: marks synced at `InitDone`. Place it
    /// after `.reflect(writer)`, which applies each event to the store before passing it on.
    pub fn on_event<K>(&self) -> impl Fn(&watcher::Event<K>) + use<K> {
        let synced = self.clone();
        move |event| {
            if matches!(event, watcher::Event::InitDone) {
                synced.mark();
            }
        }
    }
}

/// Whether a cached object at resourceVersion `cached` still predates a write that replaced
/// version `replaced`: the cache hasn't caught up with it. resourceVersions are opaque (API
/// conventions), so they are only compared for equality: any other version is newer.
pub fn lags(cached: Option<&str>, replaced: Option<&str>) -> bool {
    cached.is_some() && cached == replaced
}

/// What a controller last wrote per object, and the resourceVersion each write replaced: the
/// cache lags behind a controller's own writes, and a reconcile that reads an older copy must
/// not act on it (write the same thing again, or undo its own write).
pub struct Writes<Key, T> {
    written: Mutex<HashMap<Key, (Option<String>, T)>>,
}

impl<Key, T> Default for Writes<Key, T> {
    fn default() -> Self {
        Writes {
            written: Mutex::new(HashMap::new()),
        }
    }
}

impl<Key: Eq + Hash, T: Clone> Writes<Key, T> {
    /// `value` was written over the object's version `replaced` (`None`: created).
    pub fn record(&self, key: Key, replaced: Option<String>, value: T) {
        self.written.lock().insert(key, (replaced, value));
    }

    /// What was last written, if the cached copy at `cached` predates that write.
    pub fn newer_than_cache(&self, key: &Key, cached: Option<&str>) -> Option<T> {
        let written = self.written.lock();
        let (replaced, value) = written.get(key)?;
        lags(cached, replaced.as_deref()).then(|| value.clone())
    }

    pub fn forget(&self, key: &Key) {
        self.written.lock().remove(key);
    }

    /// Forgets the writes of deleted objects once remembered writes outnumber twice the `live`
    /// objects plus 16: memory stays proportional to what exists (a soak that replaces objects
    /// would see it grow otherwise), and each sweep is paid for by as many writes as it keeps.
    /// `is_live` is asked for only when sweeping: it may be costly to build (e.g. a set of the
    /// cached UIDs).
    pub fn forget_deleted<F: Fn(&Key) -> bool>(&self, live: usize, is_live: impl FnOnce() -> F) {
        let mut written = self.written.lock();
        if written.len() > 2 * live + 16 {
            let is_live = is_live();
            written.retain(|key, _| is_live(key));
        }
    }

    pub fn len(&self) -> usize {
        self.written.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_cache_lags_only_while_it_shows_the_replaced_version() {
        assert!(lags(Some("9"), Some("9")));
        assert!(!lags(Some("10"), Some("9")));
        // Opaque: a "smaller" version is just another version.
        assert!(!lags(Some("8"), Some("9")));
        assert!(!lags(None, Some("9")));
        assert!(!lags(None, None));
    }

    #[test]
    fn a_write_counts_until_the_cache_shows_a_newer_version() {
        let writes = Writes::<&str, u64>::default();
        assert_eq!(writes.newer_than_cache(&"a", Some("1")), None);
        writes.record("a", Some("1".into()), 7);
        assert_eq!(writes.newer_than_cache(&"a", Some("1")), Some(7));
        assert_eq!(writes.newer_than_cache(&"a", Some("2")), None);
        assert_eq!(writes.len(), 1);
    }

    #[test]
    fn deleted_objects_writes_are_swept_past_twice_the_live_ones_plus_16() {
        let writes = Writes::<u32, ()>::default();
        // 10 live objects (0..10) allow 36 entries: the deleted ones (10..) stay until then.
        for key in 0..36 {
            writes.record(key, None, ());
            writes.forget_deleted(10, || |k: &u32| *k < 10);
        }
        assert_eq!(writes.len(), 36);
        writes.record(36, None, ());
        writes.forget_deleted(10, || |k: &u32| *k < 10);
        assert_eq!(writes.len(), 10, "only the live objects' writes are kept");
        // Asked for the live set only when sweeping.
        writes.forget_deleted(10, || -> fn(&u32) -> bool { panic!("no sweep due") });
    }

    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;

    #[tokio::test]
    async fn every_concurrent_waiter_is_woken_by_init_done() {
        let synced = Synced::new();
        let waiters: Vec<_> = (0..8)
            .map(|_| {
                let s = synced.clone();
                tokio::spawn(async move { s.wait().await })
            })
            .collect();
        tokio::task::yield_now().await;
        let on_event = synced.on_event::<ConfigMap>();
        on_event(&watcher::Event::Init);
        assert!(!synced.is_synced());
        on_event(&watcher::Event::InitDone);
        let woke = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            futures::future::join_all(waiters),
        )
        .await
        .map(|results| results.into_iter().filter(Result::is_ok).count());
        assert_eq!(woke.ok(), Some(8));
        // Late waiters return at once.
        tokio::time::timeout(std::time::Duration::from_secs(1), synced.wait())
            .await
            .ok();
        assert!(synced.is_synced());
    }
}
