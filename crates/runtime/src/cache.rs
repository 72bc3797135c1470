//! Waiting for a reflector cache's initial list, from many reconciles at once.
//!
//! `Store::wait_until_ready` keeps a single waker (a oneshot receiver underneath), so when
//! several tasks wait at the same time only the last one is woken and the others hang until
//! something else polls them. A shared future wakes every waiter.

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use kube::Resource;
use kube::runtime::reflector::Store;

/// Resolves to `true` once the store has its initial list (`false` if its writer is gone).
/// Clone it into every task that needs to wait.
pub type Ready = Shared<BoxFuture<'static, bool>>;

/// A readiness future for `store` that any number of tasks can await.
pub fn ready<K>(store: &Store<K>) -> Ready
where
    K: Resource + Clone + Send + Sync + 'static,
    K::DynamicType: Eq + std::hash::Hash + Clone + Send + Sync,
{
    let store = store.clone();
    async move { store.wait_until_ready().await.is_ok() }
        .boxed()
        .shared()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::runtime::reflector::store;
    use kube::runtime::watcher::Event;

    #[tokio::test]
    async fn every_concurrent_waiter_is_woken() {
        let (reader, mut writer) = store::<ConfigMap>();
        let gate = ready(&reader);
        let waiters: Vec<_> = (0..8).map(|_| tokio::spawn(gate.clone())).collect();
        tokio::task::yield_now().await;
        writer.apply_watcher_event(&Event::Init);
        writer.apply_watcher_event(&Event::InitDone);
        let woke = tokio::time::timeout(
            std::time::Duration::from_secs(5),
            futures::future::join_all(waiters),
        )
        .await
        .map(|results| {
            results
                .into_iter()
                .filter(|r| matches!(r, Ok(true)))
                .count()
        });
        assert_eq!(woke.ok(), Some(8));
    }
}
