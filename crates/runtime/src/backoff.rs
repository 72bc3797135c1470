//! Per-object exponential backoff.
//!
//! kube-runtime's controller requeues on error after whatever the error policy returns; the
//! policy needs memory of how often each object failed in a row. This is that memory, with
//! controller-runtime's defaults: 5 ms doubling up to 1000 s, reset by a success.

use std::collections::HashMap;
use std::time::Duration;

use kube::Resource;
use kube::runtime::reflector::ObjectRef;
use parking_lot::Mutex;

/// Exponential backoff per object.
pub struct Backoff<K: Resource> {
    base: Duration,
    max: Duration,
    failures: Mutex<HashMap<ObjectRef<K>, u32>>,
}

impl<K> Default for Backoff<K>
where
    K: Resource<DynamicType = ()>,
{
    fn default() -> Self {
        Self::new(Duration::from_millis(5), Duration::from_secs(1000))
    }
}

impl<K> Backoff<K>
where
    K: Resource<DynamicType = ()>,
{
    pub fn new(base: Duration, max: Duration) -> Self {
        Backoff {
            base,
            max,
            failures: Mutex::new(HashMap::new()),
        }
    }

    /// Records a failure of `obj`; returns how long to wait before the next attempt.
    pub fn failed(&self, obj: &K) -> Duration {
        self.failed_key(&ObjectRef::from_obj(obj))
    }

    /// [`failed`](Self::failed) by key (the object may not exist).
    pub fn failed_key(&self, key: &ObjectRef<K>) -> Duration {
        let mut failures = self.failures.lock();
        let n = failures.entry(key.clone()).or_insert(0);
        let delay = self.delay(*n);
        *n = n.saturating_add(1);
        delay
    }

    /// Records a success of `obj`: the next failure starts from the base delay again.
    pub fn succeeded(&self, obj: &K) {
        self.succeeded_key(&ObjectRef::from_obj(obj));
    }

    /// [`succeeded`](Self::succeeded) by key.
    pub fn succeeded_key(&self, key: &ObjectRef<K>) {
        self.failures.lock().remove(key);
    }

    /// Consecutive failures of `obj` so far.
    pub fn failures(&self, obj: &K) -> u32 {
        let key = ObjectRef::from_obj(obj);
        self.failures.lock().get(&key).copied().unwrap_or(0)
    }

    fn delay(&self, failures: u32) -> Duration {
        let factor = 2u32.checked_pow(failures.min(31)).unwrap_or(u32::MAX);
        self.base
            .checked_mul(factor)
            .map_or(self.max, |d| d.min(self.max))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    fn cm(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn doubles_per_object_caps_and_resets() {
        let b = Backoff::<ConfigMap>::default();
        let (a, other) = (cm("a"), cm("b"));
        let delays: Vec<_> = (0..4).map(|_| b.failed(&a)).collect();
        assert_eq!(delays, [5, 10, 20, 40].map(Duration::from_millis));
        assert_eq!(
            b.failed(&other),
            Duration::from_millis(5),
            "objects are independent"
        );
        for _ in 0..40 {
            b.failed(&a);
        }
        assert_eq!(b.failed(&a), Duration::from_secs(1000));
        b.succeeded(&a);
        assert_eq!(b.failures(&a), 0);
        assert_eq!(b.failed(&a), Duration::from_millis(5));
    }
}
