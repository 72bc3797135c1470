//! One peer's run: start, idle windows, and each phase (bursts, rates, churn, fill).

use std::path::Path;
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use std::collections::HashSet;

use k8s_openapi::api::core::v1::Pod;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use nix::sys::signal::Signal;
use operon_cluster::wait;
use pod_operator::api::PodRequest;

use crate::Cli;
use crate::cluster::Cluster;
use crate::peer::{PeerKind, PeerSettings, Process, Sampler};
use crate::report::{ClientRequests, Idle, Latency, PeerRun, PerObject, Phase};
use crate::workload::{self, Recorder};

use crate::lifecycle::{failover, restart};

enum Mode {
    /// Create in a new namespace, closed loop at `--concurrency`.
    Burst(usize),
    /// Create in a new namespace at a fixed rate.
    Rate(f64),
    /// Change the spec of an earlier phase's requests (operators only).
    Update(Earlier),
    /// Delete an earlier phase's objects; done when their Pods are gone.
    Delete(Earlier),
    /// Create as many again, as a burst, in the namespace the delete phase emptied.
    Recreate(Earlier),
}

/// The objects an earlier phase created: its namespace and name prefix.
#[derive(Clone)]
struct Earlier {
    namespace: String,
    prefix: String,
}

impl Mode {
    fn kind(&self) -> &'static str {
        match self {
            Mode::Burst(_) => "burst",
            Mode::Rate(_) => "rate",
            Mode::Update(_) => "update",
            Mode::Delete(_) => "delete",
            Mode::Recreate(_) => "recreate",
        }
    }
}

pub(crate) async fn run_peer(
    kind: PeerKind,
    cli: &Cli,
    settings: &PeerSettings,
) -> Result<PeerRun> {
    let rate_objects: Vec<usize> = cli
        .rates
        .iter()
        .map(|r| (r * cli.rate_seconds).round() as usize)
        .collect();
    let created_by_phases = cli.sizes.iter().sum::<usize>() + rate_objects.iter().sum::<usize>();
    // Memory steps: after the other phases, requests are topped up to each step in turn.
    let mut steps: Vec<usize> = if kind.is_operator() {
        cli.memory_objects.clone()
    } else {
        Vec::new()
    };
    steps.sort_unstable();
    steps.dedup();
    let fill = steps
        .last()
        .map_or(0, |top| top.saturating_sub(created_by_phases));
    let (cluster, startup) = Cluster::start(created_by_phases + fill + 20).await?;
    eprintln!("bench: control plane up in {startup:.1?}");
    let origin = Instant::now();
    let sampler = Sampler::default();
    let sampling = sampler.start(origin, Duration::from_millis(50));
    let mut run = PeerRun {
        peer: kind,
        run: 0,
        control_plane_startup_s: startup.as_secs_f64(),
        startup_empty_s: None,
        idle_rss_mb: None,
        idle_rss_file_mb: None,
        idle: None,
        phases: Vec::new(),
        restart: None,
        failover: None,
        memory: Vec::new(),
    };

    let mut leader = None;
    if kind.is_operator() {
        let p = Process::start(kind, settings, &cluster.peer_kubeconfig, 0)?;
        sampler.follow(Some(p.pid()));
        p.wait_metrics(Duration::from_secs(60), "leadership", |m| m.leading())
            .await?;
        run.startup_empty_s = Some(p.started.elapsed().as_secs_f64());
        run.idle = Some(idle_window(&cluster, &p, cli.idle_seconds).await?);
        run.idle_rss_mb = p.usage().map(|u| u.rss_bytes as f64 / 1e6);
        run.idle_rss_file_mb = crate::peer::rss_file_bytes(p.pid()).map(|b| b as f64 / 1e6);
        leader = Some(p);
    }

    // The first burst, then the fixed rates, then the other bursts: the first burst's memory
    // reading is taken with only its own objects cached.
    let mut plan: Vec<(String, Mode)> = Vec::new();
    let mut sizes = cli.sizes.iter();
    if let Some(n) = sizes.next() {
        plan.push((format!("burst-{n}"), Mode::Burst(*n)));
    }
    for r in &cli.rates {
        plan.push((format!("rate-{r}"), Mode::Rate(*r)));
    }
    // Churn on the first rate phase's requests (the first burst's in a quick run): a spec
    // change that replaces every Pod, then deletion, then as many created again.
    let churned = match (cli.rates.first(), cli.sizes.first()) {
        (Some(r), _) => Some((format!("rate-{r}"), (r * cli.rate_seconds).round() as usize)),
        (None, Some(n)) => Some((format!("burst-{n}"), *n)),
        (None, None) => None,
    };
    if let Some((source, n)) = churned.clone().filter(|_| !cli.no_churn) {
        let earlier = Earlier {
            namespace: phase_namespace(&source),
            prefix: name_prefix(&source).to_string(),
        };
        // Not in the quick run: on kwok's fake nodes a replaced Pod is often deleted again
        // (kwok deletes a terminating Pod by name, without a UID precondition, and may do so
        // after the replacement of the same name exists), so its counts aren't the operator's.
        if kind.is_operator() && !cli.quick {
            plan.push((format!("update-{n}"), Mode::Update(earlier.clone())));
        }
        plan.push((format!("delete-{n}"), Mode::Delete(earlier.clone())));
        plan.push((format!("recreate-{n}"), Mode::Recreate(earlier)));
    }
    for n in sizes {
        plan.push((format!("burst-{n}"), Mode::Burst(*n)));
    }
    let mut total = created_by_phases;
    for step in steps.into_iter().filter(|s| *s > created_by_phases) {
        plan.push((format!("fill-{step}"), Mode::Burst(step - total)));
        total = step;
    }
    let mut cached = 0;
    for (name, mode) in plan {
        let n = match &mode {
            Mode::Burst(n) => *n,
            Mode::Rate(r) => (r * cli.rate_seconds).round() as usize,
            Mode::Update(_) | Mode::Delete(_) | Mode::Recreate(_) => {
                churned.as_ref().map(|(_, n)| *n).unwrap_or_default()
            }
        };
        match mode {
            Mode::Burst(_) | Mode::Rate(_) | Mode::Recreate(_) => cached += 2 * n,
            Mode::Delete(_) => cached -= 2 * n,
            Mode::Update(_) => {}
        }
        let phase = phase(
            &cluster,
            kind,
            leader.as_ref(),
            &name,
            mode,
            n,
            cli,
            cached,
            &settings.logs,
        )
        .await
        .with_context(|| format!("phase {name}"))?;
        eprintln!(
            "bench: [{}] {name}: {n} done in {:.2} s, p99 {:.1} ms, {:.2} writes per object",
            kind.name(),
            phase.converge_s,
            phase.latency.p99_ms,
            phase.per_object.writes
        );
        run.phases.push(phase);
    }

    if let Some(p) = leader.take() {
        let objects = cached / 2;
        let (restart, p) = restart(&cluster, kind, settings, p, objects, &sampler, origin).await?;
        eprintln!(
            "bench: [{}] restart over {objects}: drained in {:.2} s, {} writes",
            kind.name(),
            restart.to_drained_s,
            restart.writes
        );
        run.restart = Some(restart);
        let p = if cli.no_failover || !kind.elects_leader() {
            p
        } else {
            let (failover, p) = failover(&cluster, kind, settings, p, &sampler).await?;
            eprintln!(
                "bench: [{}] failover: SIGTERM {:.2} s, SIGKILL {:.2} s",
                kind.name(),
                failover.sigterm_s,
                failover.sigkill_s
            );
            run.failover = Some(failover);
            p
        };
        stop(p).await;
    }
    sampling.abort();
    run.memory = sampler.samples();
    cluster.plane.stop();
    Ok(run)
}

async fn stop(mut p: Process) {
    if p.signal(Signal::SIGTERM).is_ok() {
        p.wait(Duration::from_secs(40)).await.ok();
    }
}

/// Counts what an operator does over `seconds` with nothing to do.
async fn idle_window(cluster: &Cluster, p: &Process, seconds: f64) -> Result<Idle> {
    let before = p.metrics().await.map(|m| m.reconciles()).unwrap_or(0);
    let mark = cluster.audit_mark()?;
    // A measurement window, not a wait for a condition: its length is the measurement.
    tokio::time::sleep(Duration::from_secs_f64(seconds)).await;
    let audit = cluster.audit_since(mark)?;
    let after = p.metrics().await.map(|m| m.reconciles()).unwrap_or(before);
    Ok(Idle {
        seconds,
        writes: audit.writes_except_leases(),
        gets: audit.gets_except_leases(),
        lists: audit.verb("list"),
        lease_requests: audit.count("get", "leases")
            + audit.count("update", "leases")
            + audit.count("patch", "leases"),
        reconciles: after.saturating_sub(before),
    })
}

#[allow(clippy::too_many_arguments)]
async fn phase(
    cluster: &Cluster,
    kind: PeerKind,
    operator: Option<&Process>,
    name: &str,
    mode: Mode,
    n: usize,
    cli: &Cli,
    cached: usize,
    logs: &Path,
) -> Result<Phase> {
    let (ns, prefix) = match &mode {
        Mode::Burst(_) | Mode::Rate(_) => {
            let ns = phase_namespace(name);
            cluster.namespace(&ns).await?;
            (ns, name_prefix(name).to_string())
        }
        Mode::Update(e) | Mode::Delete(e) => (e.namespace.clone(), e.prefix.clone()),
        // New names: kwok's fake kubelet may still send a deletion for an old Pod after it
        // is gone, by name, and would take a new Pod of the same name with it.
        Mode::Recreate(e) => (e.namespace.clone(), format!("re-{}", e.prefix)),
    };
    let deleting = matches!(mode, Mode::Delete(_));
    let pods = Recorder::start(
        Api::<Pod>::namespaced(cluster.admin.clone(), &ns),
        match mode {
            Mode::Update(_) => workload::UPDATED_PODS,
            _ => workload::PODS,
        },
    )
    .await?;
    let requests = if kind.is_operator() && !deleting {
        Some(
            Recorder::start(
                Api::<PodRequest>::namespaced(cluster.admin.clone(), &ns),
                match mode {
                    Mode::Update(_) => workload::UPDATED_REQUESTS,
                    _ => workload::REQUESTS,
                },
            )
            .await?,
        )
    } else {
        None
    };
    // Done: Ready (the requests' status for the operators), or gone for the delete phase.
    let done_of = || match &requests {
        _ if deleting => n.saturating_sub(pods.live()),
        Some(r) => r.counts().1,
        None => pods.counts().1,
    };
    let m0 = match operator {
        Some(p) => p.metrics().await,
        None => None,
    };
    let u0 = operator.and_then(Process::usage);
    let plane0 = cluster.control_plane_cpu();
    let wal0 = cluster.etcd_wal_bytes().await;
    let mark = cluster.audit_mark()?;
    let names = workload::names(&prefix, n);

    let t0 = Instant::now();
    let concurrency = cli.concurrency.into();
    let create = async {
        match &mode {
            Mode::Burst(_) | Mode::Recreate(_) => {
                workload::burst(&cluster.admin, kind, &ns, names, concurrency).await
            }
            Mode::Rate(r) => workload::at_rate(&cluster.admin, kind, &ns, names, *r).await,
            Mode::Update(_) => workload::update(&cluster.admin, &ns, names, concurrency).await,
            Mode::Delete(_) => {
                workload::delete(&cluster.admin, kind, &ns, names, concurrency).await
            }
        }
    };
    let print_progress = || {
        let (added, ready, deleted) = pods.counts();
        eprintln!(
            "bench: [{}] {name}: {:5.1} s  Pods {added}/{n}  Ready {}/{n}  deleted {deleted}",
            kind.name(),
            t0.elapsed().as_secs_f64(),
            if deleting { ready } else { done_of() },
        );
    };
    let progress = async {
        loop {
            tokio::time::sleep(Duration::from_secs(5)).await;
            print_progress();
        }
    };
    let created = tokio::select! {
        c = create => c?,
        _ = progress => unreachable_progress(),
    };
    let create_s = t0.elapsed().as_secs_f64();
    // Generous: a 2-core machine under a 5000-object burst takes minutes.
    let mut last_print = Instant::now();
    wait::until_every(
        &format!("{name}: all {n} done"),
        Duration::from_secs(120 + n as u64 / 5),
        wait::Backoff::every(Duration::from_millis(20)),
        || {
            let done = done_of();
            if done < n && last_print.elapsed() > Duration::from_secs(5) {
                print_progress();
                last_print = Instant::now();
            }
            std::future::ready(if done >= n {
                Ok(())
            } else {
                Err(format!(
                    "only {done} of {n} done (Pods {:?})",
                    pods.counts()
                ))
            })
        },
    )
    .await?;
    let audit = cluster.audit_since(mark)?;
    let m1 = match operator {
        Some(p) => p.metrics().await,
        None => None,
    };
    let u1 = operator.and_then(Process::usage);
    let plane1 = cluster.control_plane_cpu();
    let wal1 = cluster.etcd_wal_bytes().await;
    if let Some(m) = &m1 {
        // Kept with the logs: histograms behind the numbers (reconcile and queue times).
        let file = logs.join(format!("{}-{}.metrics", kind.name(), name));
        std::fs::write(file, m.text()).ok();
    }
    let ready_times = |t: &workload::Timeline| {
        let mut v: Vec<f64> = if deleting { &t.deleted } else { &t.ready }
            .values()
            .map(|i| i.duration_since(t0).as_secs_f64())
            .collect();
        v.sort_by(f64::total_cmp);
        v
    };
    let ready = match &requests {
        Some(r) => r.with(ready_times),
        None => pods.with(ready_times),
    };
    let converge_s = ready.last().copied().unwrap_or(f64::NAN);
    let step = (ready.len() / 500).max(1);
    let mut curve = vec![(0.0, 0)];
    curve.extend(
        ready
            .iter()
            .enumerate()
            .filter(|(i, _)| i % step == 0 || i + 1 == ready.len())
            .map(|(i, t)| (*t, i + 1)),
    );
    let latencies = pods
        .with(|t| workload::latencies_ms(&created, if deleting { &t.deleted } else { &t.added }));
    let ready_latency = (!deleting).then(|| {
        let ready = |t: &workload::Timeline| workload::latencies_ms(&created, &t.ready);
        Latency::of(&match &requests {
            Some(r) => r.with(ready),
            None => pods.with(ready),
        })
    });
    let stride = (latencies.len() / 2000).max(1);
    let kept: Vec<f64> = latencies
        .iter()
        .enumerate()
        .filter(|(i, _)| i % stride == 0 || i + 1 == latencies.len())
        .map(|(_, v)| (v * 1000.0).round() / 1000.0)
        .collect();
    let (queue_adds, queue_retries) = match (&m0, &m1) {
        (Some(a), Some(b)) if kind != PeerKind::KubeRs => (
            Some(b.queue_adds().saturating_sub(a.queue_adds())),
            Some(b.queue_retries().saturating_sub(a.queue_retries())),
        ),
        _ => (None, None),
    };
    let (client_requests, reconciles, reconcile_errors) = match (&m0, &m1) {
        (Some(a), Some(b)) => {
            let d = |m: &str| b.client_requests(m).saturating_sub(a.client_requests(m));
            (
                Some(ClientRequests {
                    get: d("GET"),
                    post: d("POST"),
                    put: d("PUT"),
                    patch: d("PATCH"),
                    delete: d("DELETE"),
                }),
                Some(b.reconciles().saturating_sub(a.reconciles())),
                Some(b.reconcile_errors().saturating_sub(a.reconcile_errors())),
            )
        }
        _ => (None, None, None),
    };
    let cpu_s = u0.zip(u1).map(|(a, b)| b.cpu_seconds - a.cpu_seconds);
    // Idle windows after the phases that create (the churn phases are short: theirs would
    // lengthen the run without telling anything new).
    let creates = matches!(mode, Mode::Burst(_) | Mode::Rate(_));
    // Every Pod created has its Event: distinct requests with a `Created` Event (a series patch
    // or a replaced Event doesn't stand in for a missing one). Events are written in the
    // background, so they may trail the statuses a little.
    let created_events = match (&mode, kind.is_operator()) {
        (Mode::Burst(_) | Mode::Rate(_) | Mode::Recreate(_), true) => {
            Some(created_events(cluster, &ns, &prefix, n).await)
        }
        _ => None,
    };
    let (idle, rss_after_mb, heap_after_mb) = match operator {
        Some(p) => (
            match creates {
                true => Some(idle_window(cluster, p, cli.idle_seconds).await?),
                false => None,
            },
            p.usage().map(|u| u.rss_bytes as f64 / 1e6),
            match kind {
                // The heap metric reads glibc's counters, which don't see mimalloc's heap.
                PeerKind::OperonMimalloc => None,
                _ => p
                    .metrics()
                    .await
                    .and_then(|m| m.heap_inuse_bytes())
                    .map(|b| b / 1e6),
            },
        ),
        None => (None, None, None),
    };
    let live_heap_after_mb = match (operator, kind) {
        (Some(p), PeerKind::Go | PeerKind::GoTuned) => p.live_heap_bytes().await.map(|b| b / 1e6),
        // glibc's count of bytes allocated and not freed: live by definition.
        (Some(_), PeerKind::Operon | PeerKind::KubeRs) => heap_after_mb,
        _ => None,
    };
    Ok(Phase {
        name: name.to_string(),
        kind: match &mode {
            Mode::Burst(_) if name.starts_with("fill") => "fill".into(),
            _ => mode.kind().into(),
        },
        n,
        rate: match &mode {
            Mode::Rate(r) => Some(*r),
            _ => None,
        },
        create_s,
        converge_s,
        latency: Latency::of(&latencies),
        ready_latency,
        create_call: Latency::of(&{
            let mut v: Vec<f64> = created
                .iter()
                .map(|c| c.returned.duration_since(c.sent).as_secs_f64() * 1e3)
                .collect();
            v.sort_by(f64::total_cmp);
            v
        }),
        latencies_ms: kept,
        curve,
        per_object: PerObject::of(&audit, n),
        audit,
        client_requests,
        reconciles,
        reconcile_errors,
        cpu_s,
        control_plane_cpu_s: plane0.zip(plane1).map(|(a, b)| b - a),
        etcd_wal_bytes: wal0.zip(wal1).map(|(a, b)| b - a),
        queue_adds,
        queue_retries,
        cached_objects: cached,
        idle,
        rss_after_mb,
        heap_after_mb,
        live_heap_after_mb,
        created_events,
    })
}

/// How many of the requests `<prefix>-…` in `namespace` have a `Created` Event, once all `n`
/// have or 30 s have passed.
async fn created_events(cluster: &Cluster, namespace: &str, prefix: &str, n: usize) -> usize {
    let api: &Api<Event> = &Api::namespaced(cluster.admin.clone(), namespace);
    let prefix: &str = &format!("{prefix}-");
    let seen = &std::cell::Cell::new(0);
    let all = wait::until_every(
        "a Created Event for every request",
        Duration::from_secs(30),
        wait::Backoff::every(Duration::from_millis(500)),
        move || async move {
            let events = api
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let named: HashSet<String> = events
                .items
                .into_iter()
                .filter(|e| e.reason.as_deref() == Some("Created"))
                .filter_map(|e| e.regarding.and_then(|r| r.name))
                .filter(|name| name.starts_with(prefix))
                .collect();
            seen.set(named.len());
            if named.len() >= n {
                Ok(named.len())
            } else {
                Err(format!("{} of {n}", named.len()))
            }
        },
    )
    .await;
    all.unwrap_or(seen.get())
}

/// The namespace a creating phase makes its objects in.
fn phase_namespace(phase: &str) -> String {
    format!("bench-{}", phase.replace('.', "-"))
}

/// The prefix of a creating phase's object names.
fn name_prefix(phase: &str) -> &str {
    phase.split('-').next().unwrap_or("pr")
}

fn unreachable_progress() -> Vec<workload::Created> {
    // The progress loop never ends; select! needs a value of the same type.
    Vec::new()
}
