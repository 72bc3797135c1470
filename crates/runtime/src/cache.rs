//! Knowing when a reflector cache has its initial list, from any number of tasks.
//!
//! kube-runtime's `Store::wait_until_ready` keeps a single waker (a oneshot receiver
//! underneath): when several tasks wait at once — the controller's own runner among them — only
//! the last one is woken and the others hang. That stalled reconciles after a restart, and could
//! keep the controller itself from starting. [`Synced`] is set from the watch stream instead
//! (after the event has reached the store) and wakes every waiter.

use kube::runtime::watcher;
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

#[cfg(test)]
mod tests {
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
