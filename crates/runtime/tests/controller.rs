//! The controller engine against the real API server: every object is reconciled, never twice
//! at once, a change during a reconcile runs it once more, errors and panics are retried, a
//! standby syncs its caches but reconciles only once it leads, and stopping lets in-flight
//! reconciles finish.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use futures::StreamExt as _;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, Patch, PatchParams, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use operon_cluster::wait;
use operon_runtime::controller::Cause;
use operon_runtime::controller::{self, Action, Controller, Gates};
use operon_runtime::metrics::ControllerMetrics;
use serde_json::json;
use tokio::sync::{Notify, oneshot};

#[derive(Debug)]
struct Failure(&'static str);

impl std::fmt::Display for Failure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

impl Cause for Failure {
    fn cause(&self) -> &'static str {
        "test"
    }
}

/// What the test's reconciles saw.
#[derive(Default)]
struct Seen {
    /// Reconciles per object name.
    runs: Mutex<HashMap<String, usize>>,
    /// Names being reconciled now.
    running: Mutex<HashSet<String>>,
    /// A second reconcile of a name that was running.
    overlapped: AtomicBool,
    /// The most reconciles at once.
    most_at_once: AtomicUsize,
    /// Names whose next reconciles fail (the count), or panic when `panic` is set.
    fail: Mutex<HashMap<String, usize>>,
    panic: AtomicBool,
    /// Reconciles of "slow" wait for this.
    release_slow: Notify,
    /// The last `data.v` handed to the controller, per name.
    delivered: Mutex<HashMap<String, String>>,
    /// Names in the order their reconciles started.
    order: Mutex<Vec<String>>,
}

impl Seen {
    fn delivered(&self, name: &str) -> Option<String> {
        self.delivered
            .lock()
            .ok()
            .and_then(|d| d.get(name).cloned())
    }

    fn runs(&self, name: &str) -> usize {
        self.runs
            .lock()
            .map(|r| r.get(name).copied().unwrap_or(0))
            .unwrap_or(0)
    }
}

async fn reconcile(cm: Arc<ConfigMap>, seen: Arc<Seen>) -> Result<Action, Failure> {
    let name = cm.name_any();
    if let Ok(mut order) = seen.order.lock() {
        order.push(name.clone());
    }
    {
        let mut running = seen.running.lock().map_err(|_| Failure("poisoned"))?;
        if !running.insert(name.clone()) {
            seen.overlapped.store(true, Ordering::SeqCst);
        }
        seen.most_at_once.fetch_max(running.len(), Ordering::SeqCst);
    }
    if name == "slow" {
        seen.release_slow.notified().await;
    } else {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let failing = {
        let mut fail = seen.fail.lock().map_err(|_| Failure("poisoned"))?;
        match fail.get_mut(&name) {
            Some(n) if *n > 0 => {
                *n -= 1;
                true
            }
            _ => false,
        }
    };
    if let Ok(mut running) = seen.running.lock() {
        running.remove(&name);
    }
    if let Ok(mut runs) = seen.runs.lock() {
        *runs.entry(name.clone()).or_default() += 1;
    }
    if failing {
        if seen.panic.load(Ordering::SeqCst) {
            panic!("reconcile of {name} panics on purpose");
        }
        return Err(Failure("failing on purpose"));
    }
    Ok(Action::await_change())
}

struct Running {
    seen: Arc<Seen>,
    metrics: Arc<ControllerMetrics>,
    stop: Option<oneshot::Sender<()>>,
    lead: Option<oneshot::Sender<()>>,
    synced: Arc<AtomicBool>,
    task: tokio::task::JoinHandle<()>,
}

impl Running {
    async fn stop(mut self) -> Result<()> {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        tokio::time::timeout(Duration::from_secs(30), &mut self.task)
            .await
            .context("the controller did not stop")??;
        Ok(())
    }
}

/// A ConfigMap controller over namespace `ns` with `workers` workers; it leads once `lead` is
/// sent (at once when `standby` is false).
fn start(client: &Client, ns: &str, workers: usize, standby: bool) -> Running {
    let seen = Arc::new(Seen::default());
    let metrics = Arc::new(ControllerMetrics::default());
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let (lead_tx, lead_rx) = oneshot::channel::<()>();
    let synced = Arc::new(AtomicBool::new(false));
    let mut primary = controller::reflect(
        Api::<ConfigMap>::namespaced(client.clone(), ns),
        watcher::Config::default().labels("engine-test=true"),
        controller::trim_managed_fields,
    );
    // Records what reaches the controller; on this single-threaded runtime the controller queues
    // a change before anything else runs, so a recorded change is a queued one.
    primary.changes = {
        let seen = seen.clone();
        primary
            .changes
            .inspect(move |change| {
                let cm = change.object();
                let v = cm.data.as_ref().and_then(|d| d.get("v")).cloned();
                if let (Some(v), Ok(mut delivered)) = (v, seen.delivered.lock()) {
                    delivered.insert(cm.name_any(), v);
                }
            })
            .boxed()
    };
    let mut gates = Gates::new(async move {
        let _ = stop_rx.await;
    })
    .on_synced({
        let synced = synced.clone();
        move || synced.store(true, Ordering::SeqCst)
    });
    let lead = if standby {
        gates = gates.leading(async move {
            let _ = lead_rx.await;
        });
        Some(lead_tx)
    } else {
        None
    };
    let controller = Controller::new("engine-test", primary)
        .metrics(metrics.clone())
        .workers(workers);
    let task = tokio::spawn(controller.run(seen.clone(), reconcile, gates));
    Running {
        seen,
        metrics,
        stop: Some(stop_tx),
        lead,
        synced,
        task,
    }
}

async fn create(client: &Client, ns: &str, name: &str) -> Result<()> {
    let cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": name, "labels": { "engine-test": "true" } },
        "data": { "v": "0" },
    }))?;
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await?;
    Ok(())
}

async fn touch(client: &Client, ns: &str, name: &str, value: &str) -> Result<()> {
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .patch(
            name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "v": value } })),
        )
        .await?;
    Ok(())
}

#[tokio::test]
async fn every_object_is_reconciled_and_never_twice_at_once() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("engine-all").await?;
    let client = env.client().await?;
    let names: Vec<String> = (0..60).map(|i| format!("cm-{i}")).collect();
    for name in &names {
        create(&client, &ns, name).await?;
    }
    let running = start(&client, &ns, 4, false);
    // Changes while the first round runs: each object runs again, but never at once with itself.
    for name in names.iter().take(20) {
        touch(&client, &ns, name, "1").await?;
    }
    let seen = running.seen.clone();
    wait::until(
        "every ConfigMap reconciled",
        Duration::from_secs(60),
        || async {
            let done = names.iter().filter(|n| seen.runs(n) >= 1).count();
            if done == names.len() {
                Ok(())
            } else {
                Err(format!("{done} of {}", names.len()))
            }
        },
    )
    .await?;
    ensure!(
        !seen.overlapped.load(Ordering::SeqCst),
        "an object was reconciled twice at once"
    );
    let most = seen.most_at_once.load(Ordering::SeqCst);
    ensure!(
        (2..=4).contains(&most),
        "{most} reconciles at once with 4 workers"
    );
    // A burst of triggers for one object while it waits collapses into one reconcile.
    let metrics = running.metrics.clone();
    let before = seen.runs("cm-0");
    wait::until("the queue empty", Duration::from_secs(30), || async {
        if metrics.depth() == 0 && metrics.active_workers() == 0 {
            Ok(())
        } else {
            Err(format!("{metrics:?}"))
        }
    })
    .await?;
    running.stop().await?;
    ensure!(seen.runs("cm-0") >= before);
    ensure!(metrics.reconciles() >= names.len() as u64, "{metrics:?}");
    ensure!(metrics.errors() == 0, "{metrics:?}");
    Ok(())
}

#[tokio::test]
async fn a_change_during_a_reconcile_runs_it_once_more_after() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("engine-again").await?;
    let client = env.client().await?;
    create(&client, &ns, "slow").await?;
    let running = start(&client, &ns, 4, false);
    let seen = running.seen.clone();
    wait::until(
        "the slow reconcile running",
        Duration::from_secs(30),
        || async {
            let running = seen
                .running
                .lock()
                .map(|r| r.contains("slow"))
                .unwrap_or(false);
            if running {
                Ok(())
            } else {
                Err("not yet".to_string())
            }
        },
    )
    .await?;
    // Three changes while it runs: the other workers must not take it; one more run after.
    for v in ["1", "2", "3"] {
        touch(&client, &ns, "slow", v).await?;
    }
    let metrics = running.metrics.clone();
    wait::until(
        "the changes queued behind the running reconcile",
        Duration::from_secs(30),
        || async {
            match (seen.delivered("slow"), metrics.depth()) {
                (Some(v), 1) if v == "3" => Ok(()),
                (v, depth) => Err(format!("last change {v:?}, depth {depth}")),
            }
        },
    )
    .await?;
    seen.release_slow.notify_one();
    wait::until("the second run", Duration::from_secs(30), || async {
        match seen.runs("slow") {
            1 => {
                seen.release_slow.notify_one();
                Err("1 run".to_string())
            }
            2 => Ok(()),
            n => Err(format!("{n} runs")),
        }
    })
    .await?;
    ensure!(!seen.overlapped.load(Ordering::SeqCst));
    running.stop().await?;
    ensure!(
        seen.runs("slow") == 2,
        "{} runs: changes during a run collapse into one",
        seen.runs("slow")
    );
    Ok(())
}

#[tokio::test]
async fn errors_and_panics_are_retried_with_backoff() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("engine-retry").await?;
    let client = env.client().await?;
    for panics in [false, true] {
        let name = if panics { "panics" } else { "fails" };
        create(&client, &ns, name).await?;
        let running = start(&client, &ns, 2, false);
        running.seen.panic.store(panics, Ordering::SeqCst);
        running
            .seen
            .fail
            .lock()
            .map_err(|_| anyhow::anyhow!("poisoned"))?
            .insert(name.to_string(), 3);
        let (seen, metrics) = (running.seen.clone(), running.metrics.clone());
        // 3 failures (5, 10, 20 ms of backoff), then a success.
        wait::until(
            "retried until it succeeds",
            Duration::from_secs(30),
            || async {
                let left = seen
                    .fail
                    .lock()
                    .map(|f| f.get(name).copied().unwrap_or(0))
                    .unwrap_or(0);
                if left == 0 && metrics.reconciles() >= 4 {
                    Ok(())
                } else {
                    Err(format!("{metrics:?}"))
                }
            },
        )
        .await?;
        ensure!(metrics.retries() >= 3, "{metrics:?}");
        ensure!(metrics.errors() >= 3, "{metrics:?}");
        running.stop().await?;
        Api::<ConfigMap>::namespaced(client.clone(), &ns)
            .delete(name, &Default::default())
            .await?;
    }
    Ok(())
}

#[tokio::test]
async fn a_standby_syncs_its_caches_and_reconciles_only_once_it_leads() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("engine-standby").await?;
    let client = env.client().await?;
    for i in 0..10 {
        create(&client, &ns, &format!("cm-{i}")).await?;
    }
    let mut running = start(&client, &ns, 2, true);
    let synced = running.synced.clone();
    wait::until(
        "caches synced while standing by",
        Duration::from_secs(30),
        || async {
            if synced.load(Ordering::SeqCst) {
                Ok(())
            } else {
                Err("not synced".to_string())
            }
        },
    )
    .await?;
    // Keys queue up, nothing runs.
    let metrics = running.metrics.clone();
    wait::until("keys queued", Duration::from_secs(30), || async {
        if metrics.depth() == 10 {
            Ok(())
        } else {
            Err(format!("depth {}", metrics.depth()))
        }
    })
    .await?;
    ensure!(
        metrics.reconciles() == 0,
        "a standby reconciled: {metrics:?}"
    );
    // Leadership: the queued keys (the resync) run at once, no list needed.
    let t0 = std::time::Instant::now();
    if let Some(lead) = running.lead.take() {
        let _ = lead.send(());
    }
    wait::until(
        "every object reconciled after taking over",
        Duration::from_secs(30),
        || async {
            if metrics.reconciles() >= 10 {
                Ok(())
            } else {
                Err(format!("{metrics:?}"))
            }
        },
    )
    .await?;
    ensure!(
        t0.elapsed() < Duration::from_secs(5),
        "took {:?}",
        t0.elapsed()
    );
    running.stop().await
}

#[tokio::test]
async fn on_taking_over_a_change_runs_before_the_resync() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("engine-priority").await?;
    let client = env.client().await?;
    for i in 0..30 {
        create(&client, &ns, &format!("cm-{i:02}")).await?;
    }
    let mut running = start(&client, &ns, 1, true);
    let metrics = running.metrics.clone();
    let depth = |want: i64| {
        let metrics = metrics.clone();
        move || {
            let metrics = metrics.clone();
            async move {
                match metrics.depth() {
                    d if d == want => Ok(()),
                    d => Err(format!("depth {d}")),
                }
            }
        }
    };
    wait::until("the listing queued", Duration::from_secs(30), depth(30)).await?;
    // Created while standing by: a change, not part of the listing.
    create(&client, &ns, "fresh").await?;
    wait::until("the change queued", Duration::from_secs(30), depth(31)).await?;
    if let Some(lead) = running.lead.take() {
        let _ = lead.send(());
    }
    wait::until("all reconciled", Duration::from_secs(30), || async {
        match metrics.reconciles() {
            n if n >= 31 => Ok(()),
            n => Err(format!("{n} reconciles")),
        }
    })
    .await?;
    let order = running
        .seen
        .order
        .lock()
        .map(|o| o.clone())
        .unwrap_or_default();
    ensure!(
        order.first().map(String::as_str) == Some("fresh"),
        "the change waited behind the resync: {order:?}"
    );
    running.stop().await
}

#[tokio::test]
async fn stopping_lets_the_running_reconcile_finish_and_takes_no_more() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("engine-stop").await?;
    let client = env.client().await?;
    create(&client, &ns, "slow").await?;
    let mut running = start(&client, &ns, 1, false);
    let seen = running.seen.clone();
    wait::until(
        "the slow reconcile running",
        Duration::from_secs(30),
        || async {
            if seen
                .running
                .lock()
                .map(|r| r.contains("slow"))
                .unwrap_or(false)
            {
                Ok(())
            } else {
                Err("no".to_string())
            }
        },
    )
    .await?;
    for i in 0..5 {
        create(&client, &ns, &format!("later-{i}")).await?;
    }
    if let Some(stop) = running.stop.take() {
        let _ = stop.send(());
    }
    // Still running: it waits for the slow reconcile.
    tokio::time::sleep(Duration::from_millis(200)).await;
    ensure!(
        !running.task.is_finished(),
        "stopped before the in-flight reconcile finished"
    );
    seen.release_slow.notify_one();
    tokio::time::timeout(Duration::from_secs(30), &mut running.task).await??;
    ensure!(seen.runs("slow") == 1);
    let later: usize = (0..5).map(|i| seen.runs(&format!("later-{i}"))).sum();
    ensure!(later == 0, "{later} reconciles started after stop");
    Ok(())
}
