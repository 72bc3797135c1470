//! The bookkeeping around every reconcile, the same in every controller: time it, count its
//! outcome by error cause, reset the object's backoff when it succeeds; and, as the error
//! policy, count the retry, log the error with its cause and requeue the object after its next
//! backoff delay.
//!
//! ```ignore
//! async fn reconcile(obj: Arc<Widget>, ctx: Arc<Context>) -> Result<Action, Error> {
//!     ctx.tracker.track(obj.as_ref(), obj.reconcile(&ctx)).await
//! }
//! fn error_policy(obj: Arc<Widget>, error: &Error, ctx: Arc<Context>) -> Action {
//!     ctx.tracker.retry(obj.as_ref(), error)
//! }
//! ```

use std::future::Future;
use std::sync::Arc;

use kube::Resource;
use kube::runtime::controller::Action;
use kube::runtime::reflector::ObjectRef;

use crate::backoff::Backoff;
use crate::metrics::ControllerMetrics;

/// A controller's error: its cause labels `controller_runtime_reconcile_errors_total` and the
/// retry's log line.
pub trait Cause: std::fmt::Display {
    /// A short, fixed label such as `kube` or `invalid_spec`.
    fn cause(&self) -> &'static str;
}

/// Metrics and backoff of one controller's reconciles of `K`.
pub struct Tracker<K: Resource> {
    metrics: Arc<ControllerMetrics>,
    backoff: Backoff<K>,
}

impl<K> Tracker<K>
where
    K: Resource<DynamicType = ()>,
{
    /// With controller-runtime's backoff (5 ms doubling to 1000 s).
    pub fn new(metrics: Arc<ControllerMetrics>) -> Self {
        Self::with_backoff(metrics, Backoff::default())
    }

    pub fn with_backoff(metrics: Arc<ControllerMetrics>, backoff: Backoff<K>) -> Self {
        Tracker { metrics, backoff }
    }

    pub fn metrics(&self) -> &Arc<ControllerMetrics> {
        &self.metrics
    }

    pub fn backoff(&self) -> &Backoff<K> {
        &self.backoff
    }

    /// Runs `work`, the reconcile of `obj`: times it, counts its outcome, and resets `obj`'s
    /// backoff when it succeeds.
    pub async fn track<T, E: Cause>(
        &self,
        obj: &K,
        work: impl Future<Output = Result<T, E>>,
    ) -> Result<T, E> {
        let timer = self.metrics.started(&ObjectRef::from_obj(obj).to_string());
        let result = work.await;
        self.metrics
            .finished(timer, result.as_ref().err().map(Cause::cause));
        if result.is_ok() {
            self.backoff.succeeded(obj);
        }
        result
    }

    /// The error policy: counts the retry, logs `error` with its cause, and requeues `obj`
    /// after its next backoff delay.
    pub fn retry<E: Cause>(&self, obj: &K, error: &E) -> Action {
        let object = ObjectRef::from_obj(obj);
        let delay = self.backoff.failed(obj);
        self.metrics.retried(&object.to_string());
        tracing::warn!(%object, retry_in = ?delay, cause = error.cause(), "{error}");
        Action::requeue(delay)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;
    use std::time::Duration;

    #[derive(Debug)]
    struct Failed;

    impl std::fmt::Display for Failed {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("failed")
        }
    }

    impl Cause for Failed {
        fn cause(&self) -> &'static str {
            "test"
        }
    }

    fn object() -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some("a".into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn counts_outcomes_and_backs_off_until_a_success() {
        let tracker = Tracker::<ConfigMap>::new(Arc::default());
        let obj = object();
        let failed: Result<(), Failed> = tracker.track(&obj, async { Err(Failed) }).await;
        assert!(failed.is_err());
        let first = tracker.retry(&obj, &Failed);
        let second = tracker.retry(&obj, &Failed);
        assert_eq!(first, Action::requeue(Duration::from_millis(5)));
        assert_eq!(second, Action::requeue(Duration::from_millis(10)));
        assert_eq!(tracker.metrics().errors(), 1);
        assert_eq!(tracker.metrics().retries(), 2);

        let ok: Result<u8, Failed> = tracker.track(&obj, async { Ok(7) }).await;
        assert_eq!(ok.ok(), Some(7));
        assert_eq!(tracker.metrics().reconciles(), 2);
        assert_eq!(
            tracker.backoff().failures(&obj),
            0,
            "a success resets the backoff"
        );
        assert_eq!(
            tracker.retry(&obj, &Failed),
            Action::requeue(Duration::from_millis(5))
        );
    }
}
