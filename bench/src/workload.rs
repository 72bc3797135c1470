//! What the benchmark client does: create PodRequests (or, for the direct baseline, the same
//! Pods) in bursts or at a fixed rate, change their spec, delete them; and record from watches
//! when each Pod appeared, when each object became Ready and when each Pod went away.

use std::collections::HashMap;
use std::fmt::Debug;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::core::v1::{Container, Pod, PodSpec};
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::runtime::watcher::{self, Event};
use kube::{Client, Resource};
use pod_operator::api::{PodRequest, PodRequestSpec};
use serde::de::DeserializeOwned;

use crate::peer::PeerKind;

/// The talk's PodRequest spec, for every object.
fn spec() -> PodRequestSpec {
    PodRequestSpec {
        name: "main".into(),
        image: "busybox".into(),
        command: vec!["sleep".into(), "3600".into()],
    }
}

/// The command the update phase changes every request to: its Pod must be replaced.
const UPDATED_COMMAND: [&str; 2] = ["sleep", "3601"];

/// The Pod the operators make for a request, made directly.
fn direct_pod(name: &str) -> Pod {
    let spec = spec();
    Pod {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some(
                [
                    ("app".to_string(), name.to_string()),
                    (
                        pod_operator::controller::MANAGED_BY_LABEL.to_string(),
                        "operon-bench".to_string(),
                    ),
                ]
                .into(),
            ),
            ..Default::default()
        },
        spec: Some(PodSpec {
            containers: vec![Container {
                name: spec.name,
                image: Some(spec.image),
                command: Some(spec.command),
                ..Default::default()
            }],
            ..Default::default()
        }),
        ..Default::default()
    }
}

/// When each object was seen first, seen Ready and seen deleted, by name.
#[derive(Default)]
pub struct Timeline {
    pub added: HashMap<String, Instant>,
    pub ready: HashMap<String, Instant>,
    pub deleted: HashMap<String, Instant>,
    /// Objects that exist now.
    pub live: std::collections::HashSet<String>,
}

/// Which watched objects a [`Recorder`] counts as added, and as Ready.
pub struct Rules<K> {
    pub counts: fn(&K) -> bool,
    pub ready: fn(&K) -> bool,
}

/// A watch on one kind in one namespace, filling a [`Timeline`].
pub struct Recorder {
    timeline: Arc<Mutex<Timeline>>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for Recorder {
    fn drop(&mut self) {
        self.task.abort();
    }
}

impl Recorder {
    /// Starts watching and returns once the initial list is in.
    pub async fn start<K>(api: Api<K>, rules: Rules<K>) -> Result<Recorder>
    where
        K: Resource + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
    {
        let timeline = Arc::new(Mutex::new(Timeline::default()));
        let (synced_tx, synced_rx) = tokio::sync::oneshot::channel();
        let task = {
            let timeline = timeline.clone();
            tokio::spawn(async move {
                let mut synced = Some(synced_tx);
                let mut stream = watcher::watcher(api, watcher::Config::default()).boxed();
                loop {
                    let event = match stream.try_next().await {
                        Ok(Some(e)) => e,
                        Ok(None) => return,
                        Err(e) => {
                            eprintln!("bench: watch error (retrying): {e}");
                            tokio::time::sleep(Duration::from_millis(200)).await;
                            continue;
                        }
                    };
                    let now = Instant::now();
                    match event {
                        Event::Apply(obj) | Event::InitApply(obj) if (rules.counts)(&obj) => {
                            let name = obj.meta().name.clone().unwrap_or_default();
                            let mut t = timeline.lock();
                            t.live.insert(name.clone());
                            t.added.entry(name.clone()).or_insert(now);
                            if (rules.ready)(&obj) {
                                t.ready.entry(name).or_insert(now);
                            }
                        }
                        Event::Delete(obj) => {
                            let name = obj.meta().name.clone().unwrap_or_default();
                            let mut t = timeline.lock();
                            t.live.remove(&name);
                            t.deleted.entry(name).or_insert(now);
                        }
                        Event::InitDone => {
                            if let Some(tx) = synced.take() {
                                tx.send(()).ok();
                            }
                        }
                        Event::Apply(obj) | Event::InitApply(obj) => {
                            let name = obj.meta().name.clone().unwrap_or_default();
                            let mut t = timeline.lock();
                            t.live.insert(name);
                        }
                        Event::Init => {}
                    }
                }
            })
        };
        match tokio::time::timeout(Duration::from_secs(60), synced_rx).await {
            Ok(Ok(())) => Ok(Recorder { timeline, task }),
            _ => bail!("watch did not list within 60 s"),
        }
    }

    /// Objects added, Ready, deleted.
    pub fn counts(&self) -> (usize, usize, usize) {
        let t = self.timeline.lock();
        (t.added.len(), t.ready.len(), t.deleted.len())
    }

    /// Objects that exist now.
    pub fn live(&self) -> usize {
        self.timeline.lock().live.len()
    }

    pub fn with<R>(&self, f: impl FnOnce(&Timeline) -> R) -> R {
        f(&self.timeline.lock())
    }
}

/// Every Pod, Ready when its condition says so.
pub const PODS: Rules<Pod> = Rules {
    counts: |_| true,
    ready: pod_ready,
};

/// Only the Pods made for the updated spec.
pub const UPDATED_PODS: Rules<Pod> = Rules {
    counts: pod_updated,
    ready: |pod| pod_updated(pod) && pod_ready(pod),
};

/// Every request, Ready when its status says so for its current spec.
pub const REQUESTS: Rules<PodRequest> = Rules {
    counts: |_| true,
    ready: request_ready,
};

/// Requests whose spec changed since creation, Ready for the new spec.
pub const UPDATED_REQUESTS: Rules<PodRequest> = Rules {
    counts: |_| true,
    ready: |pr| pr.metadata.generation.unwrap_or_default() > 1 && request_ready(pr),
};

fn pod_ready(pod: &Pod) -> bool {
    pod.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

fn pod_updated(pod: &Pod) -> bool {
    pod.spec
        .as_ref()
        .and_then(|s| s.containers.first())
        .and_then(|c| c.command.as_deref())
        .is_some_and(|c| c == UPDATED_COMMAND)
}

/// Ready, and for the spec's current generation (an updated request's old Ready doesn't count).
fn request_ready(pr: &PodRequest) -> bool {
    pr.status.as_ref().is_some_and(|s| {
        s.observed_generation == pr.metadata.generation
            && s.conditions
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True")
    })
}

/// One create call: when it was sent and when it returned.
#[derive(Debug, Clone)]
pub struct Created {
    pub name: String,
    pub sent: Instant,
    pub returned: Instant,
}

/// Creates the object `kind` creates for `name` in `namespace`: a PodRequest for the operators,
/// the Pod itself for the direct baseline. Retries what the apiserver asks to retry.
async fn create(client: &Client, kind: PeerKind, namespace: &str, name: &str) -> Result<Created> {
    let pp = PostParams::default();
    let sent = Instant::now();
    let mut attempt = 0;
    loop {
        let result = if kind.is_operator() {
            let pr = PodRequest::new(name, spec());
            Api::<PodRequest>::namespaced(client.clone(), namespace)
                .create(&pp, &pr)
                .await
                .map(drop)
        } else {
            Api::<Pod>::namespaced(client.clone(), namespace)
                .create(&pp, &direct_pod(name))
                .await
                .map(drop)
        };
        match result {
            Ok(()) => {
                return Ok(Created {
                    name: name.to_string(),
                    sent,
                    returned: Instant::now(),
                });
            }
            Err(kube::Error::Api(s)) if matches!(s.code, 429 | 500 | 503 | 504) && attempt < 10 => {
                attempt += 1;
                tokio::time::sleep(Duration::from_millis(50 << attempt.min(5))).await;
            }
            Err(e) => bail!("creating {namespace}/{name}: {e}"),
        }
    }
}

/// Creates `names` as fast as `concurrency` calls in flight allow.
pub async fn burst(
    client: &Client,
    kind: PeerKind,
    namespace: &str,
    names: Vec<String>,
    concurrency: usize,
) -> Result<Vec<Created>> {
    futures::stream::iter(names)
        .map(|name| async move { create(client, kind, namespace, &name).await })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// Runs `call` for each of `names`, `concurrency` in flight, and times each (sent → returned).
async fn timed_calls<F, Fut>(
    names: Vec<String>,
    concurrency: usize,
    call: F,
) -> Result<Vec<Created>>
where
    F: Fn(String) -> Fut,
    Fut: std::future::Future<Output = Result<()>>,
{
    futures::stream::iter(names)
        .map(|name| {
            let call = &call;
            async move {
                let sent = Instant::now();
                call(name.clone()).await?;
                Ok(Created {
                    name,
                    sent,
                    returned: Instant::now(),
                })
            }
        })
        .buffer_unordered(concurrency.max(1))
        .try_collect()
        .await
}

/// Changes the command of the requests `names` (operators only): each Pod must be replaced.
pub async fn update(
    client: &Client,
    namespace: &str,
    names: Vec<String>,
    concurrency: usize,
) -> Result<Vec<Created>> {
    let api = Api::<PodRequest>::namespaced(client.clone(), namespace);
    let patch = serde_json::json!({ "spec": { "command": UPDATED_COMMAND } });
    timed_calls(names, concurrency, |name| {
        let (api, patch) = (&api, &patch);
        async move {
            api.patch(&name, &PatchParams::default(), &Patch::Merge(patch))
                .await
                .map(drop)
                .map_err(|e| anyhow::anyhow!("updating {namespace}/{name}: {e}"))
        }
    })
    .await
}

/// Deletes what `kind` created for `names`: the PodRequests (their Pods go with them, by the
/// garbage collector), or the Pods themselves for the direct baseline.
pub async fn delete(
    client: &Client,
    kind: PeerKind,
    namespace: &str,
    names: Vec<String>,
    concurrency: usize,
) -> Result<Vec<Created>> {
    timed_calls(names, concurrency, |name| async move {
        let dp = DeleteParams::default();
        let result = if kind.is_operator() {
            Api::<PodRequest>::namespaced(client.clone(), namespace)
                .delete(&name, &dp)
                .await
                .map(drop)
        } else {
            Api::<Pod>::namespaced(client.clone(), namespace)
                .delete(&name, &dp)
                .await
                .map(drop)
        };
        result.map_err(|e| anyhow::anyhow!("deleting {namespace}/{name}: {e}"))
    })
    .await
}

/// Creates `names` at `rate` per second, open loop: each call is sent at its time whatever the
/// earlier ones are doing, so a slow API server or operator doesn't lower the offered rate (as
/// a closed loop would, hiding the queue it builds).
pub async fn at_rate(
    client: &Client,
    kind: PeerKind,
    namespace: &str,
    names: Vec<String>,
    rate: f64,
) -> Result<Vec<Created>> {
    let t0 = tokio::time::Instant::now();
    let mut calls = Vec::with_capacity(names.len());
    for (i, name) in names.into_iter().enumerate() {
        tokio::time::sleep_until(t0 + Duration::from_secs_f64(i as f64 / rate)).await;
        let client = client.clone();
        let namespace = namespace.to_string();
        calls.push(tokio::spawn(async move {
            create(&client, kind, &namespace, &name).await
        }));
    }
    let mut created = Vec::with_capacity(calls.len());
    for call in calls {
        created.push(call.await??);
    }
    Ok(created)
}

/// Names `<prefix>-00000`…
pub fn names(prefix: &str, n: usize) -> Vec<String> {
    (0..n).map(|i| format!("{prefix}-{i:05}")).collect()
}

/// Milliseconds from each call being sent to its object's watch event in `events` (the Pod's
/// name is the request's): the latency a client sees, the call's own time included, so that an
/// API server slowed by an operator's writes counts against that operator.
pub fn latencies_ms(created: &[Created], events: &HashMap<String, Instant>) -> Vec<f64> {
    let mut ms: Vec<f64> = created
        .iter()
        .filter_map(|c| {
            let seen = events.get(&c.name)?;
            Some(seen.saturating_duration_since(c.sent).as_secs_f64() * 1e3)
        })
        .collect();
    ms.sort_by(f64::total_cmp);
    ms
}

/// The `q` quantile (0..=1) of sorted values (nearest rank).
pub fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len());
    sorted[rank - 1]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nearest_rank_quantiles() {
        let v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&v, 0.5), 50.0);
        assert_eq!(quantile(&v, 0.99), 99.0);
        assert_eq!(quantile(&v, 1.0), 100.0);
        assert!(quantile(&[], 0.5).is_nan());
    }

    #[test]
    fn latency_is_from_the_create_sent_to_the_pod_event() {
        let t0 = Instant::now();
        let created = vec![
            Created {
                name: "a".into(),
                sent: t0,
                returned: t0 + Duration::from_millis(10),
            },
            Created {
                name: "b".into(),
                sent: t0,
                returned: t0 + Duration::from_millis(10),
            },
        ];
        let mut pods = Timeline::default();
        pods.added
            .insert("a".into(), t0 + Duration::from_millis(35));
        let ms = latencies_ms(&created, &pods.added);
        assert_eq!(ms.len(), 1, "b has no Pod yet");
        assert!((ms[0] - 35.0).abs() < 0.5, "{ms:?}");
    }
}
