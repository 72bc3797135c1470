//! `operon-bench`: pod-operator against the controller-runtime peer (bench/go-peer, scaffold-style
//! and tuned), a plain kube-rs peer (bench/kube-rs-peer) and creating the same Pods directly,
//! each on a fresh local control plane, `--runs` times with the peers' order rotated. Writes
//! `<out>/<date>-<machine>.{json,md}` and SVG plots. `cargo xtask bench pod` builds what it
//! needs and runs it; see docs/performance.md for the method.

mod cluster;
mod peer;
mod plot;
mod report;
mod workload;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use clap::Parser;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use nix::sys::signal::Signal;
use pod_operator::api::PodRequest;

use crate::cluster::Cluster;
use crate::peer::{PeerKind, PeerSettings, Process, Sampler};
use crate::report::{
    ClientRequests, Failover, Idle, Latency, Machine, PeerRun, PerObject, Phase, Report, Restart,
    Settings, Versions,
};
use crate::workload::Recorder;

#[derive(Parser, Debug)]
#[command(name = "operon-bench", about = "PodRequest operators, side by side")]
struct Cli {
    /// Burst sizes: PodRequests created as fast as `--concurrency` allows, until all are Ready.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    sizes: Vec<usize>,
    /// Fixed arrival rates (per second) for the latency runs.
    #[arg(long, value_delimiter = ',', default_value = "50,200")]
    rates: Vec<f64>,
    /// How long each fixed-rate run creates.
    #[arg(long, default_value_t = 10.0)]
    rate_seconds: f64,
    /// Create calls in flight (the client's) and reconciles at once (the operators').
    #[arg(long, default_value_t = 10)]
    concurrency: u16,
    /// Requests (and Pods) in the cluster for the memory reading; topped up after the bursts.
    #[arg(long, default_value_t = 10_000)]
    memory_objects: usize,
    /// Length of each idle window (writes and GETs counted).
    #[arg(long, default_value_t = 10.0)]
    idle_seconds: f64,
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "direct,operon,go,go-tuned,kube-rs"
    )]
    peers: Vec<PeerKind>,
    /// Runs of every peer. Run r starts with the r-th peer of the list (then the others in
    /// order), so that no peer always runs first or last on a machine that drifts.
    #[arg(long, default_value_t = 3)]
    runs: usize,
    /// Skip the failover measurement.
    #[arg(long)]
    no_failover: bool,
    /// Skip the update, delete and recreate phases.
    #[arg(long)]
    no_churn: bool,
    /// Small run for CI: counts, not times. Fails when requests per PodRequest or idle writes
    /// regress.
    #[arg(long)]
    quick: bool,
    /// The pod-operator binary.
    #[arg(long, required_unless_present = "replot")]
    operator: Option<PathBuf>,
    /// The controller-runtime peer binary (both `go` and `go-tuned`).
    #[arg(long)]
    go_peer: Option<PathBuf>,
    /// The plain kube-rs peer binary.
    #[arg(long)]
    kube_rs_peer: Option<PathBuf>,
    /// pod-operator built with mimalloc (the `operon-mimalloc` peer).
    #[arg(long)]
    operator_mimalloc: Option<PathBuf>,
    /// Where the report goes.
    #[arg(long, default_value = "bench/results")]
    out: PathBuf,
    /// Build profile of the binaries (recorded in the report).
    #[arg(long, default_value = "release")]
    profile: String,
    /// Rewrite the Markdown report and the plots of an existing JSON report, and exit.
    #[arg(long, value_name = "JSON")]
    replot: Option<PathBuf>,
}

fn main() -> Result<()> {
    let mut cli = Cli::parse();
    if let Some(json) = &cli.replot {
        return replot(json);
    }
    if cli.quick {
        cli.sizes = vec![200];
        cli.runs = 1;
        cli.rates = Vec::new();
        cli.memory_objects = 0;
        cli.no_failover = true;
        cli.idle_seconds = cli.idle_seconds.min(5.0);
    }
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(cli))
}

async fn run(cli: Cli) -> Result<()> {
    std::fs::create_dir_all(&cli.out)?;
    let date = command_line("date", &["-u", "+%Y-%m-%dT%H:%M:%SZ"]).unwrap_or_default();
    let machine = machine();
    let stem = format!(
        "{}-{}",
        date.split('T').next().unwrap_or("unknown"),
        machine.hostname
    );
    let logs = cli.out.join(format!("{stem}-logs"));
    std::fs::create_dir_all(&logs)?;
    let settings = PeerSettings {
        operon_binary: cli.operator.clone().context("--operator is required")?,
        go_binary: cli.go_peer.clone(),
        kube_rs_binary: cli.kube_rs_peer.clone(),
        operon_mimalloc_binary: cli.operator_mimalloc.clone(),
        concurrency: cli.concurrency,
        logs: logs.clone(),
    };
    let report_settings = Settings {
        sizes: cli.sizes.clone(),
        rates: cli.rates.clone(),
        rate_seconds: cli.rate_seconds,
        concurrency: cli.concurrency.into(),
        memory_objects: cli.memory_objects,
        idle_seconds: cli.idle_seconds,
        quick: cli.quick,
        profile: cli.profile.clone(),
        peers: cli.peers.clone(),
        runs: cli.runs,
        operator_config: vec![
            format!(
                "Every operator: {} reconciles at once, no client-side rate limit (kube-rs has none; \
                 the Go peer runs with QPS -1), managedFields stripped from their caches and Pods \
                 cached with only what the reconciler reads: the containers' name, image and \
                 command, phase, conditions (ours: whether Ready is True) and metadata (the Go \
                 peers by a cache transform; ours by a projection deserialized from the watch), leader election on a Lease (15 s / 10 s / 2 s) released on SIGTERM, all namespaces watched. \
                 The plain kube-rs peer differs on purpose: kube-runtime's controller with its \
                 own concurrency bound, managedFields stripped but whole Pods cached, no leader \
                 election (so no failover), no client-side rate limit.",
                cli.concurrency
            ),
            "All run as the same ServiceAccount (bound to cluster-admin), out of cluster, on the \
             same machine as the control plane; the apiserver's audit log counts their requests."
                .into(),
            format!(
                "The benchmark client creates with {} calls in flight (bursts) or open loop \
                 (rates), and watches Pods and PodRequests to time them.",
                cli.concurrency
            ),
        ],
    };
    let mut peers = Vec::new();
    for r in 0..cli.runs {
        for kind in rotated(&cli.peers, r) {
            eprintln!(
                "bench: ── run {} of {}: peer {} ──",
                r + 1,
                cli.runs,
                kind.name()
            );
            let t0 = Instant::now();
            let result = run_peer(kind, &cli, &settings).await;
            match result {
                Ok(mut run) => {
                    eprintln!("bench: peer {} done in {:.0?}", kind.name(), t0.elapsed());
                    run.run = r;
                    peers.push(run);
                }
                Err(e) => {
                    eprintln!(
                        "bench: peer {} failed after {:.0?}; logs in {}",
                        kind.name(),
                        t0.elapsed(),
                        logs.display()
                    );
                    return Err(e.context(format!("peer {} (run {})", kind.name(), r + 1)));
                }
            }
        }
    }
    let report = Report {
        date,
        machine,
        versions: versions(),
        settings: report_settings,
        peers,
    };
    let json = cli.out.join(format!("{stem}.json"));
    std::fs::write(&json, serde_json::to_vec_pretty(&report)?)?;
    let plots = plot::write(&report, &cli.out, &stem)?;
    let md = cli.out.join(format!("{stem}.md"));
    std::fs::write(&md, report.markdown(&plots))?;
    println!("{}", report.markdown(&[]));
    eprintln!("bench: wrote {} and {}", json.display(), md.display());
    if cli.quick {
        check_counts(&report)?;
    }
    Ok(())
}

/// `peers` starting at index `r` (modulo its length), then the rest in order.
fn rotated(peers: &[PeerKind], r: usize) -> Vec<PeerKind> {
    if peers.is_empty() {
        return Vec::new();
    }
    let k = r % peers.len();
    peers[k..].iter().chain(&peers[..k]).copied().collect()
}

fn replot(json: &Path) -> Result<()> {
    let report: Report = serde_json::from_slice(
        &std::fs::read(json).with_context(|| format!("reading {}", json.display()))?,
    )
    .with_context(|| format!("parsing {}", json.display()))?;
    let dir = json.parent().unwrap_or(Path::new("."));
    let stem = json
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_default();
    let plots = plot::write(&report, dir, &stem)?;
    std::fs::write(dir.join(format!("{stem}.md")), report.markdown(&plots))?;
    eprintln!("bench: rewrote {stem}.md and {} plots", plots.len());
    Ok(())
}

/// The regression check of `--quick`: counts, which don't depend on the machine's speed.
fn check_counts(report: &Report) -> Result<()> {
    let Some(ours) = report.peers.iter().find(|p| p.peer == PeerKind::Operon) else {
        return Ok(());
    };
    let mut failures = Vec::new();
    for phase in &ours.phases {
        let p = &phase.per_object;
        // A deletion is the garbage collector's work: the operator creates nothing.
        let creates = if phase.kind == "delete" { 0.0 } else { 1.0 };
        if (p.pod_creates - creates).abs() > 1e-9 {
            failures.push(format!(
                "{}: {:.3} Pod creates per PodRequest (want exactly {creates})",
                phase.name, p.pod_creates
            ));
        }
        if phase.kind == "delete" && p.status_writes > 0.0 {
            failures.push(format!(
                "{}: {:.3} status writes per deleted PodRequest (want 0)",
                phase.name, p.status_writes
            ));
        }
        if p.status_writes > 2.0 {
            failures.push(format!(
                "{}: {:.3} status writes per PodRequest (want ≤ 2)",
                phase.name, p.status_writes
            ));
        }
        if p.gets > 0.0 {
            failures.push(format!(
                "{}: {:.3} GETs per PodRequest (want 0: reads come from the caches)",
                phase.name, p.gets
            ));
        }
        // The queue's own count: a bounded number of keys per request, not work that grows
        // with the backlog, and every reconcile one of those keys.
        if let (Some(adds), Some(reconciles)) = (phase.queue_adds, phase.reconciles) {
            let per_request = match phase.kind.as_str() {
                "update" => QUEUE_ADDS_PER_UPDATE,
                "delete" => QUEUE_ADDS_PER_DELETE,
                _ => QUEUE_ADDS_PER_REQUEST,
            };
            let bound = per_request * phase.n as u64 + 10;
            if adds > bound {
                failures.push(format!(
                    "{}: {adds} keys queued for {} PodRequests (want ≤ {bound})",
                    phase.name, phase.n
                ));
            }
            if reconciles > adds {
                failures.push(format!(
                    "{}: {reconciles} reconciles from {adds} queued keys (want ≤)",
                    phase.name
                ));
            }
        }
        if let Some(retries) = phase.queue_retries.filter(|r| *r > 0) {
            failures.push(format!(
                "{}: {retries} retries (want 0: nothing fails on a healthy cluster)",
                phase.name
            ));
        }
    }
    let idles = ours
        .idle
        .iter()
        .chain(ours.phases.iter().filter_map(|p| p.idle.as_ref()));
    for idle in idles {
        if idle.writes > 0 || idle.gets > 0 {
            failures.push(format!(
                "idle for {} s: {} writes and {} GETs (want 0 and 0)",
                idle.seconds, idle.writes, idle.gets
            ));
        }
    }
    if let Some(r) = &ours.restart
        && r.writes > 0
    {
        failures.push(format!(
            "restart over {} existing requests made {} writes (want 0)",
            r.objects, r.writes
        ));
    }
    if failures.is_empty() {
        eprintln!("bench: quick check passed (request counts and idle writes)");
        Ok(())
    } else {
        bail!("request counts regressed:\n  {}", failures.join("\n  "))
    }
}

/// Keys queued per PodRequest at most: its creation, its Pod's creation, its Pod's running and
/// readiness (one change or two), and a requeue when the Pod isn't ready within a second.
const QUEUE_ADDS_PER_REQUEST: u64 = 5;
/// Per spec change: the change, the old Pod's deletion (marked, then gone), and then what a
/// new request gets.
const QUEUE_ADDS_PER_UPDATE: u64 = 3 + QUEUE_ADDS_PER_REQUEST;
/// Per deleted request: its deletion, its Pod's (marked, then gone).
const QUEUE_ADDS_PER_DELETE: u64 = 3;

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

async fn run_peer(kind: PeerKind, cli: &Cli, settings: &PeerSettings) -> Result<PeerRun> {
    let rate_objects: Vec<usize> = cli
        .rates
        .iter()
        .map(|r| (r * cli.rate_seconds).round() as usize)
        .collect();
    let created_by_phases = cli.sizes.iter().sum::<usize>() + rate_objects.iter().sum::<usize>();
    let fill = if kind.is_operator() {
        cli.memory_objects.saturating_sub(created_by_phases)
    } else {
        0
    };
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
    if fill > 0 {
        plan.push((format!("fill-{}", cli.memory_objects), Mode::Burst(fill)));
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
    let deadline = Instant::now() + Duration::from_secs(120 + n as u64 / 5);
    let mut last_print = Instant::now();
    while done_of() < n {
        if Instant::now() > deadline {
            bail!(
                "{name}: only {} of {n} done by the deadline (Pods {:?})",
                done_of(),
                pods.counts()
            );
        }
        if last_print.elapsed() > Duration::from_secs(5) {
            print_progress();
            last_print = Instant::now();
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let audit = cluster.audit_since(mark)?;
    let m1 = match operator {
        Some(p) => p.metrics().await,
        None => None,
    };
    let u1 = operator.and_then(Process::usage);
    let plane1 = cluster.control_plane_cpu();
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
        queue_adds,
        queue_retries,
        cached_objects: cached,
        idle,
        rss_after_mb,
        heap_after_mb,
    })
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

/// Stops the leader and starts it again over `objects` existing requests: time to leading, to
/// the first reconcile, to a drained queue; writes made; peak memory.
async fn restart(
    cluster: &Cluster,
    kind: PeerKind,
    settings: &PeerSettings,
    mut old: Process,
    objects: usize,
    sampler: &Sampler,
    origin: Instant,
) -> Result<(Restart, Process)> {
    old.signal(Signal::SIGTERM)?;
    old.wait(Duration::from_secs(40)).await?;
    let mark = cluster.audit_mark()?;
    let since = origin.elapsed().as_secs_f64();
    let p = Process::start(kind, settings, &cluster.peer_kubeconfig, 0)?;
    sampler.follow(Some(p.pid()));
    p.wait_metrics(Duration::from_secs(60), "leadership", |m| m.leading())
        .await?;
    let to_leader_s = p.started.elapsed().as_secs_f64();
    p.wait_metrics(Duration::from_secs(120), "a first reconcile", |m| {
        m.reconciles() > 0
    })
    .await?;
    let to_first_reconcile_s = p.started.elapsed().as_secs_f64();
    let drained = p
        .wait_metrics(Duration::from_secs(300), "a drained queue", |m| {
            m.reconciles() >= objects as u64 && m.depth() == 0.0
        })
        .await?;
    let to_drained_s = p.started.elapsed().as_secs_f64();
    let peak_rss_mb = sampler.peak_since(since);
    let audit = cluster.audit_since(mark)?;
    let rss_after_mb = p.usage().map(|u| u.rss_bytes as f64 / 1e6).unwrap_or(0.0);
    Ok((
        Restart {
            objects,
            to_leader_s,
            to_first_reconcile_s,
            to_drained_s,
            writes: audit.writes_except_leases(),
            gets: audit.gets_except_leases(),
            reconciles: drained.reconciles(),
            peak_rss_mb,
            rss_after_mb,
        },
        p,
    ))
}

/// With a standby waiting, stops the leader (SIGTERM, then SIGKILL) and times how long a
/// request created at that moment waits for its Pod.
async fn failover(
    cluster: &Cluster,
    kind: PeerKind,
    settings: &PeerSettings,
    leader: Process,
    sampler: &Sampler,
) -> Result<(Failover, Process)> {
    let ns = "bench-failover";
    cluster.namespace(ns).await?;
    let pods = Recorder::start(
        Api::<Pod>::namespaced(cluster.admin.clone(), ns),
        workload::PODS,
    )
    .await?;
    let mut times = Vec::new();
    let mut leader = leader;
    for (i, signal) in [Signal::SIGTERM, Signal::SIGKILL].into_iter().enumerate() {
        let standby = Process::start(kind, settings, &cluster.peer_kubeconfig, i + 1)?;
        // As a rolling update does: the old leader stops once the new replica is ready (for a
        // warm standby, its caches are synced; the scaffold-style Go peer is ready at once and
        // fills its caches only after it wins).
        standby
            .wait_ready(Duration::from_secs(60), "the standby")
            .await?;
        standby
            .wait_metrics(Duration::from_secs(60), "the standby's metrics", |_| true)
            .await?;
        // The standby must be trying for the Lease: its first attempt comes at start.
        let standby_m = standby.metrics().await;
        if standby_m.is_some_and(|m| m.leading()) {
            bail!("the standby leads while the leader runs");
        }
        let name = format!("failover-{}", i);
        let t0 = Instant::now();
        leader.signal(signal)?;
        workload::burst(&cluster.admin, kind, ns, vec![name.clone()], 1).await?;
        let deadline = t0 + Duration::from_secs(90);
        while !pods.with(|t| t.added.contains_key(&name)) {
            if Instant::now() > deadline {
                bail!("no Pod for {name} within 90 s of the leader's {signal}");
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        times.push(t0.elapsed().as_secs_f64());
        leader.wait(Duration::from_secs(40)).await.ok();
        sampler.follow(Some(standby.pid()));
        leader = standby;
    }
    Ok((
        Failover {
            sigterm_s: times.first().copied().unwrap_or(f64::NAN),
            sigkill_s: times.get(1).copied().unwrap_or(f64::NAN),
        },
        leader,
    ))
}

fn command_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

fn machine() -> Machine {
    let meminfo = read("/proc/meminfo");
    let mem_kb: f64 = meminfo
        .lines()
        .find_map(|l| l.strip_prefix("MemTotal:"))
        .and_then(|v| v.split_whitespace().next()?.parse().ok())
        .unwrap_or(0.0);
    Machine {
        hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model: read("/proc/cpuinfo")
            .lines()
            .find_map(|l| l.strip_prefix("model name"))
            .map(|v| v.trim_start_matches([' ', '\t', ':']).to_string())
            .unwrap_or_default(),
        memory_gib: mem_kb / 1024.0 / 1024.0,
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
    }
}

/// The version of `name` in a Cargo.lock or go.mod text.
fn locked_version(lock: &str, name: &str) -> String {
    let cargo = format!("name = \"{name}\"\nversion = \"");
    if let Some(i) = lock.find(&cargo) {
        let rest = &lock[i + cargo.len()..];
        return rest.split('"').next().unwrap_or_default().to_string();
    }
    lock.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
        .unwrap_or_else(|| "unknown".into())
}

fn versions() -> Versions {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let lock = std::fs::read_to_string(root.join("Cargo.lock")).unwrap_or_default();
    let gomod = std::fs::read_to_string(root.join("bench/go-peer/go.mod")).unwrap_or_default();
    let apiserver = std::env::var_os("KUBEBUILDER_ASSETS")
        .map(|d| PathBuf::from(d).join("kube-apiserver"))
        .and_then(|p| command_line(&p.to_string_lossy(), &["--version"]))
        .unwrap_or_else(|| "unknown".into());
    Versions {
        kubernetes: apiserver.trim_start_matches("Kubernetes ").to_string(),
        rustc: command_line("rustc", &["--version"]).unwrap_or_default(),
        kube_rs: locked_version(&lock, "kube"),
        go: command_line("go", &["version"]).unwrap_or_default(),
        controller_runtime: locked_version(&gomod, "sigs.k8s.io/controller-runtime"),
        client_go: locked_version(&gomod, "k8s.io/client-go"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_versions_from_lock_files() {
        let lock = "[[package]]\nname = \"kube\"\nversion = \"5.0.0\"\n";
        assert_eq!(locked_version(lock, "kube"), "5.0.0");
        let gomod =
            "require (\n\tk8s.io/client-go v0.36.1\n\tsigs.k8s.io/controller-runtime v0.25.2\n)\n";
        assert_eq!(
            locked_version(gomod, "sigs.k8s.io/controller-runtime"),
            "v0.25.2"
        );
        assert_eq!(locked_version(gomod, "k8s.io/client-go"), "v0.36.1");
        assert_eq!(locked_version(gomod, "missing"), "unknown");
    }
}
