//! The peers: our pod-operator, the controller-runtime peer (scaffold-style and tuned) and a
//! plain kube-rs peer as processes (so that memory and CPU are each process's own, read the same
//! way from `/proc`), and the direct baseline, which has no process.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;

use parking_lot::Mutex;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use serde::{Deserialize, Serialize};
use tokio::process::{Child, Command};

use crate::cluster::SYSTEM_NAMESPACE;
use operon_cluster::wait;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum PeerKind {
    /// Pods created directly by the benchmark client: the apiserver's own limit.
    Direct,
    /// Our pod-operator (kube-rs + operon-runtime).
    Operon,
    /// The controller-runtime peer (bench/go-peer) as kubebuilder scaffolds a controller.
    Go,
    /// The same peer as a Go expert tunes it (`--tuned`: status merge patch, no Pending write,
    /// a predicate on owned Pods, warmup, a memory limit).
    #[value(name = "go-tuned")]
    #[serde(rename = "go-tuned")]
    GoTuned,
    /// Plain kube-rs, without operon-runtime (bench/kube-rs-peer).
    #[value(name = "kube-rs")]
    #[serde(rename = "kube-rs")]
    KubeRs,
    /// Our pod-operator built with mimalloc instead of glibc's allocator (the allocator
    /// comparison; its heap isn't measured: the heap metric reads glibc's counters).
    #[value(name = "operon-mimalloc")]
    #[serde(rename = "operon-mimalloc")]
    OperonMimalloc,
}

impl PeerKind {
    pub fn name(self) -> &'static str {
        match self {
            PeerKind::Direct => "direct",
            PeerKind::Operon => "operon",
            PeerKind::Go => "go",
            PeerKind::GoTuned => "go-tuned",
            PeerKind::KubeRs => "kube-rs",
            PeerKind::OperonMimalloc => "operon-mimalloc",
        }
    }

    pub fn is_operator(self) -> bool {
        self != PeerKind::Direct
    }

    /// Whether it elects a leader (plain kube-rs has no leader election, so no failover).
    pub fn elects_leader(self) -> bool {
        self.is_operator() && self != PeerKind::KubeRs
    }
}

/// How the operator peers are started; the same settings for both.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct PeerSettings {
    pub operon_binary: PathBuf,
    #[serde(default)]
    pub operon_mimalloc_binary: Option<PathBuf>,
    pub go_binary: Option<PathBuf>,
    pub kube_rs_binary: Option<PathBuf>,
    pub concurrency: u16,
    pub logs: PathBuf,
}

/// A running operator process.
pub struct Process {
    child: Child,
    pid: u32,
    metrics_port: u16,
    /// Where `/readyz` is served (operon's admin port; the Go peer's health probe port).
    probe_port: u16,
    pub started: Instant,
}

fn free_port() -> Result<u16> {
    let listener = std::net::TcpListener::bind("127.0.0.1:0")?;
    Ok(listener.local_addr()?.port())
}

impl Process {
    /// Starts replica `replica` of `kind` against `kubeconfig`, logging to the logs directory.
    pub fn start(
        kind: PeerKind,
        settings: &PeerSettings,
        kubeconfig: &Path,
        replica: usize,
    ) -> Result<Process> {
        let metrics_port = free_port()?;
        let mut probe_port = metrics_port;
        let log = settings.logs.join(format!("{}-{replica}.log", kind.name()));
        let out = std::fs::File::create(&log).with_context(|| format!("{}", log.display()))?;
        let err = out.try_clone()?;
        let concurrency = settings.concurrency.to_string();
        let metrics = format!("127.0.0.1:{metrics_port}");
        let mut cmd = match kind {
            PeerKind::Direct => bail!("the direct baseline has no process"),
            PeerKind::Operon | PeerKind::OperonMimalloc => {
                let binary = match kind {
                    PeerKind::OperonMimalloc => settings
                        .operon_mimalloc_binary
                        .as_ref()
                        .context("no mimalloc pod-operator (build it with cargo xtask bench)")?,
                    _ => &settings.operon_binary,
                };
                let mut cmd = Command::new(binary);
                cmd.arg("run")
                    .arg("--kubeconfig")
                    .arg(kubeconfig)
                    .args(["--admin-bind-address", &metrics])
                    // /metrics beside the probes, where the bench scrapes it.
                    .args(["--metrics-bind-address", "0"])
                    .args(["--leader-elect", "true"])
                    .args(["--leader-election-namespace", SYSTEM_NAMESPACE])
                    .args(["--concurrency", &concurrency])
                    .args(["--log-level", "warn"])
                    .env_remove("RUST_LOG");
                cmd
            }
            PeerKind::KubeRs => {
                let binary = settings
                    .kube_rs_binary
                    .as_ref()
                    .context("no kube-rs peer binary (build it with cargo xtask bench)")?;
                let mut cmd = Command::new(binary);
                cmd.arg("--kubeconfig")
                    .arg(kubeconfig)
                    .args(["--metrics-bind-address", &metrics])
                    .args(["--concurrency", &concurrency])
                    .env_remove("RUST_LOG");
                cmd
            }
            PeerKind::Go | PeerKind::GoTuned => {
                let binary = settings
                    .go_binary
                    .as_ref()
                    .context("no Go peer binary (build it with cargo xtask bench)")?;
                probe_port = free_port()?;
                let probes = format!("127.0.0.1:{probe_port}");
                let mut cmd = Command::new(binary);
                cmd.arg("--kubeconfig")
                    .arg(kubeconfig)
                    .args(["--metrics-bind-address", &metrics])
                    .args(["--health-probe-bind-address", &probes])
                    .arg("--leader-elect=true")
                    .args(["--leader-election-namespace", SYSTEM_NAMESPACE])
                    .args(["--concurrency", &concurrency])
                    // No client-side rate limit, like kube-rs.
                    .args(["--qps", "-1"])
                    // managedFields stripped from the caches, and Pods cached with only what
                    // the reconciler reads, like ours.
                    .arg("--strip-managed-fields=true")
                    .arg("--trim-pods=true")
                    .arg(format!("--tuned={}", kind == PeerKind::GoTuned));
                cmd
            }
        };
        cmd.env_remove("KUBECONFIG")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .kill_on_drop(true);
        let started = Instant::now();
        let child = cmd
            .spawn()
            .with_context(|| format!("starting the {} peer", kind.name()))?;
        let pid = child.id().context("the peer exited at once")?;
        Ok(Process {
            child,
            pid,
            metrics_port,
            probe_port,
            started,
        })
    }

    pub fn pid(&self) -> u32 {
        self.pid
    }

    pub fn signal(&self, signal: Signal) -> Result<()> {
        kill(Pid::from_raw(self.pid as i32), signal)?;
        Ok(())
    }

    /// Waits for the process to exit (after a signal), at most `timeout`.
    pub async fn wait(&mut self, timeout: Duration) -> Result<()> {
        match tokio::time::timeout(timeout, self.child.wait()).await {
            Ok(status) => {
                status?;
                Ok(())
            }
            Err(_) => {
                self.child.kill().await.ok();
                bail!("peer {} did not exit within {timeout:?}", self.pid)
            }
        }
    }

    /// `/metrics`, or `None` while the server is not up.
    pub async fn metrics(&self) -> Option<Metrics> {
        scrape(self.metrics_port).await.ok().map(Metrics)
    }

    /// Live heap in bytes, after a forced collection: the Go peers' `/live-heap` (`None` for a
    /// peer without it).
    pub async fn live_heap_bytes(&self) -> Option<f64> {
        get(self.metrics_port, "/live-heap")
            .await
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    /// Polls `/metrics` until `done` holds, at most `timeout`.
    pub async fn wait_metrics(
        &self,
        timeout: Duration,
        what: &str,
        mut done: impl FnMut(&Metrics) -> bool,
    ) -> Result<Metrics> {
        let what = format!("peer {}: {what}", self.pid);
        let every = wait::Backoff::every(Duration::from_millis(20));
        let done = Mutex::new(&mut done);
        let metrics = wait::until_every(&what, timeout, every, || {
            let metrics = self.metrics();
            let done = &done;
            async move {
                match metrics.await {
                    Some(m) if (done.lock())(&m) => Ok(m),
                    Some(_) => Err("not yet in /metrics".into()),
                    None => Err("no /metrics answer".into()),
                }
            }
        })
        .await?;
        Ok(metrics)
    }

    /// Polls `/readyz` until it answers 200, at most `timeout`: what a rollout waits for before
    /// it stops the previous replica.
    pub async fn wait_ready(&self, timeout: Duration, what: &str) -> Result<()> {
        let what = format!("peer {}: {what} ready", self.pid);
        let every = wait::Backoff::every(Duration::from_millis(20));
        wait::until_every(&what, timeout, every, || async {
            get(self.probe_port, "/readyz")
                .await
                .map(|_| ())
                .map_err(|e| format!("/readyz: {e}"))
        })
        .await?;
        Ok(())
    }

    /// Resident memory and CPU seconds so far, from `/proc`.
    pub fn usage(&self) -> Option<Usage> {
        Usage::read(self.pid)
    }
}

async fn scrape(port: u16) -> Result<String> {
    get(port, "/metrics").await
}

/// The body of a 200 answer to `GET path`, else an error.
async fn get(port: u16, path: &str) -> Result<String> {
    let response = operon_cluster::plain_http::request(
        &format!("127.0.0.1:{port}"),
        "GET",
        path,
        &[("Accept", "text/plain")],
        "",
        Duration::from_secs(5),
    )
    .await?;
    if response.status != 200 {
        bail!("GET {path} answered {}", response.status);
    }
    Ok(response.text())
}

/// A Prometheus text exposition.
pub struct Metrics(String);

impl Metrics {
    pub fn text(&self) -> &str {
        &self.0
    }

    /// The sum of every series of `name` whose labels contain all of `labels` (`k="v"`).
    pub fn sum(&self, name: &str, labels: &[&str]) -> f64 {
        self.0
            .lines()
            .filter(|l| !l.starts_with('#'))
            .filter_map(|l| {
                let (series, value) = l.rsplit_once(' ')?;
                let (metric, rest) = match series.split_once('{') {
                    Some((m, rest)) => (m, rest),
                    None => (series, ""),
                };
                (metric == name && labels.iter().all(|want| rest.contains(want)))
                    .then(|| value.parse::<f64>().ok())
                    .flatten()
            })
            .sum()
    }

    pub fn reconciles(&self) -> u64 {
        self.sum(
            "controller_runtime_reconcile_total",
            &["controller=\"podrequest\""],
        ) as u64
    }

    pub fn reconcile_errors(&self) -> u64 {
        self.sum(
            "controller_runtime_reconcile_errors_total",
            &["controller=\"podrequest\""],
        ) as u64
    }

    pub fn depth(&self) -> f64 {
        self.sum("workqueue_depth", &["name=\"podrequest\""])
    }

    /// `workqueue_adds_total`: keys that entered the queue (not counting ones already waiting).
    pub fn queue_adds(&self) -> u64 {
        self.sum("workqueue_adds_total", &["name=\"podrequest\""]) as u64
    }

    pub fn queue_retries(&self) -> u64 {
        self.sum("workqueue_retries_total", &["name=\"podrequest\""]) as u64
    }

    /// Bytes of heap in use: Go's `go_memstats_heap_inuse_bytes`, or the allocator's count of
    /// bytes in use that operon-runtime exports (`operon_heap_inuse_bytes`).
    pub fn heap_inuse_bytes(&self) -> Option<f64> {
        ["go_memstats_heap_inuse_bytes", "operon_heap_inuse_bytes"]
            .iter()
            .find(|m| self.has(m))
            .map(|m| self.sum(m, &[]))
    }

    fn has(&self, name: &str) -> bool {
        self.0.lines().any(|l| {
            !l.starts_with('#')
                && l.strip_prefix(name)
                    .is_some_and(|rest| rest.starts_with([' ', '{']))
        })
    }

    pub fn leading(&self) -> bool {
        self.sum("leader_election_master_status", &[]) >= 1.0
    }

    /// `rest_client_requests_total` by method (both clients label it so).
    pub fn client_requests(&self, method: &str) -> u64 {
        self.sum(
            "rest_client_requests_total",
            &[&format!("method=\"{method}\"")],
        ) as u64
    }
}

/// A process's resident memory and CPU time.
#[derive(Debug, Clone, Copy, Default, Serialize, Deserialize)]
pub struct Usage {
    pub rss_bytes: u64,
    pub cpu_seconds: f64,
}

impl Usage {
    pub fn read(pid: u32) -> Option<Usage> {
        let (rss_bytes, cpu_seconds) = operon_runtime::metrics::process_usage(pid)?;
        Some(Usage {
            rss_bytes,
            cpu_seconds,
        })
    }
}

/// The part of a process's RSS that maps files (its binary's code and data, shared
/// libraries), not memory it allocated: `RssFile` of `/proc/<pid>/status`.
pub fn rss_file_bytes(pid: u32) -> Option<u64> {
    let status = procfs::process::Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .status()
        .ok()?;
    status.rssfile.map(|kb| kb * 1024)
}

/// Memory over a whole peer run, sampled in the background.
#[derive(Clone, Default)]
pub struct Sampler {
    samples: Arc<Mutex<Vec<Sample>>>,
    pid: Arc<Mutex<Option<u32>>>,
}

#[derive(Debug, Clone, Copy, Serialize, Deserialize)]
pub struct Sample {
    /// Seconds since the peer run started.
    pub t: f64,
    pub rss_mb: f64,
}

impl Sampler {
    /// Samples every `period` whichever process [`Sampler::follow`] names.
    pub fn start(&self, origin: Instant, period: Duration) -> tokio::task::JoinHandle<()> {
        let this = self.clone();
        tokio::spawn(async move {
            let mut tick = tokio::time::interval(period);
            loop {
                tick.tick().await;
                let pid = *this.pid.lock();
                if let Some(usage) = pid.and_then(Usage::read) {
                    this.samples.lock().push(Sample {
                        t: origin.elapsed().as_secs_f64(),
                        rss_mb: usage.rss_bytes as f64 / 1e6,
                    });
                }
            }
        })
    }

    pub fn follow(&self, pid: Option<u32>) {
        *self.pid.lock() = pid;
    }

    pub fn samples(&self) -> Vec<Sample> {
        self.samples.lock().clone()
    }

    /// The highest RSS sampled after `since` (seconds on the run's clock).
    pub fn peak_since(&self, since: f64) -> f64 {
        self.samples()
            .iter()
            .filter(|s| s.t >= since)
            .map(|s| s.rss_mb)
            .fold(0.0, f64::max)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sums_series_by_labels() {
        let m = Metrics(
            "# HELP x\ncontroller_runtime_reconcile_total{controller=\"podrequest\",result=\"success\"} 7\n\
             controller_runtime_reconcile_total{controller=\"podrequest\",result=\"error\"} 2\n\
             controller_runtime_reconcile_total{controller=\"other\",result=\"success\"} 100\n\
             leader_election_master_status{name=\"x\"} 1\n"
                .into(),
        );
        assert_eq!(m.reconciles(), 9);
        assert!(m.leading());
        assert_eq!(m.sum("missing", &[]), 0.0);
    }

    #[test]
    fn reads_own_usage() {
        let usage = Usage::read(std::process::id());
        assert!(usage.is_some_and(|u| u.rss_bytes > 0));
    }
}
