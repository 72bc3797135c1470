//! `operon-bench`: pod-operator against the controller-runtime peer (bench/go-peer, scaffold-style
//! and tuned), a plain kube-rs peer (bench/kube-rs-peer) and creating the same Pods directly,
//! each on a fresh local control plane, `--runs` times with the peers' order rotated. Writes
//! `<out>/<date>-<machine>.{json,md}` and SVG plots. `cargo xtask bench pod` builds what it
//! needs and runs it; see docs/performance.md for the method.

mod checks;
mod cluster;
mod lifecycle;
mod machine;
mod peer;
mod phases;
mod plot;
mod report;
mod workload;

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result};
use clap::Parser;

use crate::checks::check_counts;
use crate::machine::{command_line, versions};
use crate::peer::{PeerKind, PeerSettings};
use crate::phases::run_peer;
use crate::report::{Report, Settings};

#[derive(Parser, Debug)]
#[command(name = "operon-bench", about = "PodRequest operators, side by side")]
struct Cli {
    /// Burst sizes: PodRequests created as fast as `--concurrency` allows, until all are Ready.
    #[arg(long, value_delimiter = ',', default_value = "1000,5000")]
    sizes: Vec<usize>,
    /// Offered rates (per second) of the open-loop runs: creates sent at that rate whatever
    /// the answers do; the highest should be above every peer's capacity.
    #[arg(long, value_delimiter = ',', default_value = "25,50,100,200,400")]
    rates: Vec<f64>,
    /// How long each fixed-rate run creates.
    #[arg(long, default_value_t = 10.0)]
    rate_seconds: f64,
    /// Create calls in flight (the client's) and reconciles at once (the operators').
    #[arg(long, default_value_t = 10)]
    concurrency: u16,
    /// Requests (and Pods) in the cluster for the memory readings: after the other phases,
    /// topped up to each in turn (the memory per cached object is the slope between them).
    #[arg(long, value_delimiter = ',', default_value = "10000")]
    memory_objects: Vec<usize>,
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
    #[arg(long, default_value_t = 5)]
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
        cli.memory_objects = Vec::new();
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
    let machine = machine::machine();
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
        memory_objects: cli.memory_objects.iter().copied().max().unwrap_or(0),
        memory_steps: cli.memory_objects.clone(),
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
                "kube-scheduler's client runs at {} requests/s (burst {}) instead of its default \
                 50 (burst 100), so that binding Pods doesn't bound the operators.",
                cluster::SCHEDULER_QPS,
                cluster::SCHEDULER_BURST
            ),
            format!(
                "The benchmark client creates with {} calls in flight (bursts) or open loop \
                 (rates: each create sent at its time, whatever the earlier ones are doing), and \
                 watches Pods and PodRequests to time them from when each create was sent.",
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
