//! The soak: the operators, deployed in a cluster on its real node, under steady load for a
//! while — PodRequests created, edited (a spec change: the Pod is replaced) and deleted at a
//! fixed rate with a bounded number alive, and a few annotated Services (service-ca-operator)
//! and CredentialsRequests (credentials-operator) replaced now and then — while each operator
//! Pod's resident memory and open file descriptors are sampled from `/proc` (the node's
//! containers are processes of this host).
//!
//! The verdict ([`Report::failures`]): after warm-up, no operator Pod's memory grows faster
//! than a threshold ([`max_slope_for`]; least-squares slope, MiB per hour); once the load
//! stops and the operators converge, every live PodRequest has exactly one Pod, owned by it and
//! running its last spec, no Pod of a deleted request is left, every live Service has its
//! serving Secret and every live CredentialsRequest its credentials, and nothing of a deleted
//! one is left; and no operator container restarted. `cargo xtask soak` runs it for an hour,
//! the in-cluster tests for a few minutes (docs/soak.md).

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{Pod, Secret, Service};
use kube::api::{
    Api, ApiResource, DeleteParams, DynamicObject, GroupVersionKind, ListParams, Patch,
    PatchParams, PostParams,
};
use kube::{Client, ResourceExt};
use operon_cluster::wait;
use operon_plot::{RGBColor, Series};
use parking_lot::Mutex;
use pod_operator::api::{PodRequest, PodRequestSpec};
use serde::Serialize;
use serde_json::json;
use tokio::time::Instant as TokioInstant;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Json(#[from] serde_json::Error),
    #[error("{what}: {source}")]
    Io {
        what: String,
        #[source]
        source: std::io::Error,
    },
    #[error(transparent)]
    Plot(#[from] operon_plot::Error),
    #[error("{0}")]
    Setup(String),
}

fn io(what: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let what = what.into();
    move |source| Error::Io { what, source }
}

/// The largest RSS slope after warm-up that passes a run of `duration`, in MiB per hour:
/// [`RSS_ALLOWANCE_MIB`] across the part of the run that is fitted (all but the first fifth),
/// but never less than [`LONG_RUN_SLOPE`] (which a run of 75 minutes or more gets). See
/// docs/soak.md for why.
pub fn max_slope_for(duration: Duration) -> f64 {
    let fitted_hours = duration.as_secs_f64() * (1.0 - WARMUP_FRACTION) / 3600.0;
    if fitted_hours <= 0.0 {
        return f64::INFINITY;
    }
    (RSS_ALLOWANCE_MIB / fitted_hours).max(LONG_RUN_SLOPE)
}

/// What the fitted part of a run may grow by, in MiB: allocator noise (a size class touched
/// for the first time, a buffer grown once), which decides a short run's verdict.
pub const RSS_ALLOWANCE_MIB: f64 = 1.0;
/// The threshold of an hour's run, in MiB per hour: at that rate an operator's RSS (about
/// 20 MiB) reaches its 256 MiB memory limit after more than a week.
pub const LONG_RUN_SLOPE: f64 = 1.0;
/// The first part of the run that is not fitted: caches filling, the live set growing to its
/// bound, the allocator reaching its working set.
pub const WARMUP_FRACTION: f64 = 0.2;

/// Operations of the load at most in flight at once; a tick beyond it is skipped (and
/// counted), so that a stalled API server doesn't pile up requests without bound.
const MAX_IN_FLIGHT: usize = 64;
/// How often service-ca-operator's or credentials-operator's objects are replaced (in turn).
const SIDE_EVERY: Duration = Duration::from_secs(10);
/// Annotated Services alive at once.
const SIDE_SERVICES: usize = 3;
/// CredentialsRequests alive at once.
const SIDE_CREDENTIALS: usize = 2;
/// The annotation service-ca-operator issues a serving certificate for.
const SERVING_CERT_ANNOTATION: &str = "service.beta.openshift.io/serving-cert-secret-name";
/// Whoever writes the load's objects.
const MANAGER: &str = "operon-soak";
/// The container's script: sleeps in short steps and exits on SIGTERM, so that a deleted or
/// replaced Pod goes within a second instead of its 30 s grace period (a shell as PID 1
/// ignores signals it has no handler for).
const SCRIPT: &str = "trap 'exit 0' TERM; while sleep 1; do :; done";

/// What the soak does and for how long.
#[derive(Debug, Clone)]
pub struct Options {
    pub duration: Duration,
    /// PodRequest operations (create, edit, delete) per second.
    pub rate: f64,
    /// PodRequests alive at once, at most.
    pub live: usize,
    pub sample_every: Duration,
    /// The first part of the run, left out of the fit.
    pub warmup: Duration,
    pub max_slope_mib_per_hour: f64,
    /// How long the operators may take, once the load stops, to match every object.
    pub converge_within: Duration,
    /// The image of the requested Pods.
    pub image: String,
}

impl Options {
    /// The defaults for a run of `duration` at `rate` operations per second with at most `live`
    /// requests: 300 samples or one every 2 s, whichever is fewer (one every 10 s at most), a
    /// fifth of the run as warm-up, and [`max_slope_for`] the run's length.
    pub fn new(duration: Duration, rate: f64, live: usize) -> Options {
        Options {
            duration,
            rate,
            live,
            sample_every: (duration / 300).clamp(Duration::from_secs(2), Duration::from_secs(10)),
            warmup: duration.mul_f64(WARMUP_FRACTION),
            max_slope_mib_per_hour: max_slope_for(duration),
            converge_within: Duration::from_secs(180),
            image: "busybox".into(),
        }
    }
}

/// One reading of an operator Pod's container.
#[derive(Debug, Clone, Serialize)]
pub struct Sample {
    /// Seconds since the load started.
    pub t: f64,
    pub rss_mib: f64,
    pub fds: usize,
}

/// The readings of one operator Pod.
#[derive(Debug, Clone, Serialize)]
pub struct PodSeries {
    pub operator: String,
    pub pod: String,
    /// Whether it held its operator's leader election Lease when the load stopped.
    pub leader: bool,
    pub samples: Vec<Sample>,
    /// Least-squares slope of the RSS after warm-up, MiB per hour (none with fewer than three
    /// samples after warm-up).
    pub rss_slope_mib_per_hour: Option<f64>,
    /// The same for open file descriptors, per hour.
    pub fds_slope_per_hour: Option<f64>,
}

impl PodSeries {
    fn after(&self, warmup: f64) -> impl Iterator<Item = &Sample> {
        self.samples.iter().filter(move |s| s.t >= warmup)
    }

    fn fit(&mut self, warmup: f64) {
        let hours = |s: &Sample| s.t / 3600.0;
        let rss: Vec<(f64, f64)> = self.after(warmup).map(|s| (hours(s), s.rss_mib)).collect();
        let fds: Vec<(f64, f64)> = self
            .after(warmup)
            .map(|s| (hours(s), s.fds as f64))
            .collect();
        self.rss_slope_mib_per_hour = slope(&rss);
        self.fds_slope_per_hour = slope(&fds);
    }
}

/// The least-squares slope of `points`; none for fewer than three or a single x.
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    if points.len() < 3 {
        return None;
    }
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (sxx > 0.0).then(|| sxy / sxx)
}

/// What the load did.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Operations {
    pub creates: u64,
    pub edits: u64,
    pub deletes: u64,
    /// Ticks that found [`MAX_IN_FLIGHT`] operations still running, or no request to edit or
    /// delete that wasn't busy.
    pub skipped: u64,
    /// API calls of the load that failed (it can't tell then what the operators should show).
    pub errors: Vec<String>,
    pub services_created: u64,
    pub services_deleted: u64,
    pub credentials_created: u64,
    pub credentials_deleted: u64,
}

/// What doesn't match, once the load has stopped.
#[derive(Debug, Clone, Default, Serialize)]
pub struct Discrepancies {
    /// Live PodRequests that are gone or have no Pod.
    pub lost: Vec<String>,
    /// PodRequests with more than one Pod, and PodRequests there that the load deleted or
    /// never created.
    pub duplicated: Vec<String>,
    /// Pods of deleted PodRequests (or of none).
    pub orphaned: Vec<String>,
    /// Pods not running their request's last spec.
    pub stale: Vec<String>,
    /// service-ca-operator's and credentials-operator's objects: missing for a live object, or
    /// left of a deleted one.
    pub others: Vec<String>,
}

impl Discrepancies {
    fn is_empty(&self) -> bool {
        self.lost.is_empty()
            && self.duplicated.is_empty()
            && self.orphaned.is_empty()
            && self.stale.is_empty()
            && self.others.is_empty()
    }

    fn summary(&self) -> String {
        let part = |what: &str, items: &[String]| {
            let first: Vec<&str> = items.iter().take(5).map(String::as_str).collect();
            format!("{} {what} ({})", items.len(), first.join("; "))
        };
        [
            ("lost", &self.lost),
            ("duplicated", &self.duplicated),
            ("orphaned", &self.orphaned),
            ("stale", &self.stale),
            ("other objects wrong", &self.others),
        ]
        .into_iter()
        .filter(|(_, items)| !items.is_empty())
        .map(|(what, items)| part(what, items))
        .collect::<Vec<_>>()
        .join(", ")
    }
}

/// A soak's samples and verdict.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub duration_s: f64,
    pub rate_per_s: f64,
    pub live: usize,
    pub sample_every_s: f64,
    pub warmup_s: f64,
    pub max_slope_mib_per_hour: f64,
    /// How long the operators had to match every object once the load stopped.
    pub converge_within_s: f64,
    pub operations: Operations,
    pub pods: Vec<PodSeries>,
    /// Seconds from the end of the load until everything matched; none if it never did.
    pub converged_in_s: Option<f64>,
    pub discrepancies: Discrepancies,
    /// Operator containers restarted, and operator Pods gone or added, during the soak.
    pub restarts: Vec<String>,
    /// Readings that failed (a container whose processes couldn't be found or read).
    pub sampling_errors: Vec<String>,
    /// Why the soak failed; empty when it passed.
    pub failures: Vec<String>,
}

impl Report {
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }

    /// The largest RSS slope after warm-up, with its Pod.
    pub fn max_slope(&self) -> Option<(&str, f64)> {
        self.pods
            .iter()
            .filter_map(|p| Some((p.pod.as_str(), p.rss_slope_mib_per_hour?)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }

    fn verdict(&self) -> Vec<String> {
        let mut failures = Vec::new();
        for operator in xtask::OPERATORS {
            let fitted = self
                .pods
                .iter()
                .any(|p| p.operator == operator && p.rss_slope_mib_per_hour.is_some());
            if !fitted {
                failures.push(format!(
                    "{operator}: fewer than three samples after warm-up; nothing to fit"
                ));
            }
        }
        for pod in &self.pods {
            if let Some(s) = pod.rss_slope_mib_per_hour
                && s > self.max_slope_mib_per_hour
            {
                failures.push(format!(
                    "{}: RSS grew {s:.2} MiB/hour after warm-up (threshold {:.2})",
                    pod.pod, self.max_slope_mib_per_hour
                ));
            }
        }
        if !self.discrepancies.is_empty() {
            failures.push(format!(
                "not converged {:.0} s after the load stopped: {}",
                self.converge_within_s,
                self.discrepancies.summary()
            ));
        }
        if !self.restarts.is_empty() {
            failures.push(format!("operators restarted: {}", self.restarts.join("; ")));
        }
        if !self.operations.errors.is_empty() {
            failures.push(format!(
                "{} of the load's API calls failed, first: {}",
                self.operations.errors.len(),
                self.operations.errors[0]
            ));
        }
        if !self.sampling_errors.is_empty() {
            failures.push(format!(
                "{} readings failed, first: {}",
                self.sampling_errors.len(),
                self.sampling_errors[0]
            ));
        }
        failures
    }

    /// A few lines for a person: the load, each Pod's memory and files, the verdict.
    pub fn summary(&self) -> String {
        let ops = &self.operations;
        let mut out = format!(
            "soak: {:.0} s at {} PodRequest operations/s (at most {} alive): {} creates, {} \
             edits, {} deletes, {} ticks skipped; {} Services and {} CredentialsRequests \
             replaced\n",
            self.duration_s,
            self.rate_per_s,
            self.live,
            ops.creates,
            ops.edits,
            ops.deletes,
            ops.skipped,
            ops.services_deleted,
            ops.credentials_deleted,
        );
        out += &format!(
            "soak: RSS slope after the first {:.0} s (threshold {:.2} MiB/hour); samples every \
             {:.0} s\n",
            self.warmup_s, self.max_slope_mib_per_hour, self.sample_every_s
        );
        for pod in &self.pods {
            let rss: Vec<f64> = pod.after(self.warmup_s).map(|s| s.rss_mib).collect();
            let fds: Vec<usize> = pod.after(self.warmup_s).map(|s| s.fds).collect();
            let range = |v: &[f64]| {
                let min = v.iter().copied().fold(f64::INFINITY, f64::min);
                let max = v.iter().copied().fold(f64::NEG_INFINITY, f64::max);
                format!("{min:.1}–{max:.1}")
            };
            out += &format!(
                "soak:   {:<55} {} samples, RSS {} MiB, slope {}; fds {}–{}, slope {}\n",
                format!("{}{}", pod.pod, if pod.leader { " (leader)" } else { "" }),
                pod.samples.len(),
                range(&rss),
                pod.rss_slope_mib_per_hour
                    .map_or("-".into(), |s| format!("{s:+.2} MiB/hour")),
                fds.iter().min().copied().unwrap_or_default(),
                fds.iter().max().copied().unwrap_or_default(),
                pod.fds_slope_per_hour
                    .map_or("-".into(), |s| format!("{s:+.1}/hour")),
            );
        }
        out += &match self.converged_in_s {
            Some(s) => format!(
                "soak: converged {s:.1} s after the load stopped: nothing lost, duplicated or \
                 left over\n"
            ),
            None => format!("soak: never converged: {}\n", self.discrepancies.summary()),
        };
        out += &match self.restarts.is_empty() {
            true => "soak: no operator restarted\n".to_string(),
            false => format!("soak: restarts: {}\n", self.restarts.join("; ")),
        };
        out += &match self.failures.is_empty() {
            true => "soak: passed".to_string(),
            false => format!("soak: FAILED:\n  {}", self.failures.join("\n  ")),
        };
        out
    }

    /// Writes `soak.json` (the samples and the verdict) and the plots `soak-rss.svg` and
    /// `soak-fds.svg` into `dir`; returns the files.
    pub fn write(&self, dir: &Path) -> Result<Vec<PathBuf>, Error> {
        std::fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
        let json = dir.join("soak.json");
        std::fs::write(&json, serde_json::to_vec_pretty(self)?)
            .map_err(io(format!("writing {}", json.display())))?;
        let minutes = |s: &Sample| s.t / 60.0;
        let series = |value: &dyn Fn(&Sample) -> f64| -> Vec<Series> {
            self.pods
                .iter()
                .map(|p| {
                    let points = p.samples.iter().map(|s| (minutes(s), value(s))).collect();
                    (label(p), color(p, &self.pods), points)
                })
                .collect()
        };
        let rss = dir.join("soak-rss.svg");
        operon_plot::lines(
            &rss,
            &format!(
                "Operator RSS under steady load (max slope after warm-up {})",
                self.max_slope()
                    .map_or("-".into(), |(_, s)| format!("{s:+.2} MiB/hour"))
            ),
            "minutes since the load started",
            "RSS (MiB)",
            &series(&|s| s.rss_mib),
            false,
        )?;
        let fds = dir.join("soak-fds.svg");
        operon_plot::lines(
            &fds,
            "Operator open file descriptors under steady load",
            "minutes since the load started",
            "open file descriptors",
            &series(&|s| s.fds as f64),
            false,
        )?;
        Ok(vec![json, rss, fds])
    }
}

/// `<operator> …<pod suffix>`, `(leader)` for the one holding the Lease.
fn label(pod: &PodSeries) -> String {
    let suffix = pod.pod.rsplit('-').next().unwrap_or(&pod.pod);
    format!(
        "{} {suffix}{}",
        pod.operator,
        if pod.leader { " (leader)" } else { "" }
    )
}

/// One hue per operator, the leader's full and the others' lighter.
fn color(pod: &PodSeries, all: &[PodSeries]) -> RGBColor {
    let hues = [(206, 66, 43), (0, 125, 156), (225, 150, 20), (90, 90, 90)];
    let index = xtask::OPERATORS
        .iter()
        .position(|o| *o == pod.operator)
        .unwrap_or(hues.len() - 1);
    let (r, g, b) = hues[index.min(hues.len() - 1)];
    let replicas = all.iter().filter(|p| p.operator == pod.operator).count();
    if pod.leader || replicas == 1 {
        RGBColor(r, g, b)
    } else {
        let light = |c: u8| ((c as u16 + 2 * 255) / 3) as u8;
        RGBColor(light(r), light(g), light(b))
    }
}

/// The namespace and label selector of an operator's Pods, as config/ deploys them.
fn operator_pods_of(operator: &str) -> (String, String) {
    (
        format!("{operator}-system"),
        format!("app.kubernetes.io/name={operator}"),
    )
}

fn restart_count(pod: &Pod) -> i32 {
    pod.status
        .as_ref()
        .and_then(|s| s.container_statuses.as_ref())
        .map_or(0, |cs| cs.iter().map(|c| c.restart_count).sum())
}

/// The ID of the Pod's running container (`containerd://…`); the operators' Pods have one.
fn running_container(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .iter()
        .find(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()))?
        .container_id
        .clone()
}

/// RSS (MiB) and open file descriptors of `pids`, summed.
fn read(pids: &[i32]) -> Result<(f64, usize), String> {
    if pids.is_empty() {
        return Err("no process".into());
    }
    let (mut rss_kib, mut fds) = (0u64, 0usize);
    for &pid in pids {
        let process = procfs::process::Process::new(pid).map_err(|e| format!("pid {pid}: {e}"))?;
        let status = process
            .status()
            .map_err(|e| format!("/proc/{pid}/status: {e}"))?;
        rss_kib += status
            .vmrss
            .ok_or(format!("/proc/{pid}/status: no VmRSS"))?;
        fds += process.fd_count().map_err(|e| {
            format!("/proc/{pid}/fd: {e} (reading another user's process takes root)")
        })?;
    }
    Ok((rss_kib as f64 / 1024.0, fds))
}

/// Reads the operator Pods' containers, and tells which restarted.
struct Sampler {
    client: Client,
    /// Container ID → its processes.
    pids: HashMap<String, Vec<i32>>,
    /// By `namespace/pod`.
    series: BTreeMap<String, PodSeries>,
    /// `namespace/pod` → (uid, restarts) when the soak started.
    baseline: BTreeMap<String, (String, i32)>,
    errors: Vec<String>,
}

impl Sampler {
    /// Waits until every operator's Deployment has all its replicas running (a rollout or
    /// scale that another command began is done), and takes them as the baseline.
    async fn start(client: &Client) -> Result<Sampler, Error> {
        let settled = wait::until(
            "every operator's Deployment to run all its replicas",
            Duration::from_secs(180),
            || async {
                let all = Self::operator_pods(client)
                    .await
                    .map_err(|e| e.to_string())?;
                for (operator, pods) in &all {
                    let (namespace, _) = operator_pods_of(operator);
                    let deployment = Api::<Deployment>::namespaced(client.clone(), &namespace)
                        .get_opt(&format!("{operator}-controller-manager"))
                        .await
                        .map_err(|e| e.to_string())?
                        .ok_or_else(|| format!("{operator} is not deployed"))?;
                    let want = deployment.spec.and_then(|s| s.replicas).unwrap_or(1);
                    let running = pods.iter().filter(|p| running_container(p).is_some());
                    let running = running.count();
                    if want < 1 || pods.len() != want as usize || running != pods.len() {
                        return Err(format!(
                            "{operator}: {running} of {want} replicas running, {} Pods",
                            pods.len()
                        ));
                    }
                }
                Ok(all)
            },
        )
        .await
        .map_err(|e| Error::Setup(format!("{e} (deploy the operators first)")))?;
        let baseline = settled
            .into_iter()
            .flat_map(|(_, pods)| pods)
            .map(|pod| (key(&pod), (uid(&pod), restart_count(&pod))))
            .collect();
        Ok(Sampler {
            client: client.clone(),
            pids: HashMap::new(),
            series: BTreeMap::new(),
            baseline,
            errors: Vec::new(),
        })
    }

    /// Each operator's Pods that are not being deleted.
    async fn operator_pods(client: &Client) -> Result<Vec<(&'static str, Vec<Pod>)>, Error> {
        let mut all = Vec::new();
        for operator in xtask::OPERATORS {
            let (namespace, selector) = operator_pods_of(operator);
            let pods = Api::<Pod>::namespaced(client.clone(), &namespace)
                .list(&ListParams::default().labels(&selector))
                .await?
                .items
                .into_iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .collect();
            all.push((operator, pods));
        }
        Ok(all)
    }

    /// Reads every operator Pod's container; what can't be read is recorded, not fatal, so
    /// that one failed list doesn't end an hour's run.
    async fn sample(&mut self, t: f64) {
        let all = match Self::operator_pods(&self.client).await {
            Ok(all) => all,
            Err(e) => {
                self.errors
                    .push(format!("listing the operators' Pods at {t:.0} s: {e}"));
                return;
            }
        };
        for (operator, pods) in all {
            for pod in pods {
                let Some(container) = running_container(&pod) else {
                    continue;
                };
                let reading = match self.pids.get(&container).map(|pids| read(pids)) {
                    Some(Ok(reading)) => Ok(reading),
                    // Not looked up yet, or its processes changed: find them again.
                    _ => {
                        let id = container.clone();
                        let pids = tokio::task::spawn_blocking(move || {
                            operon_cluster::node::container_pids(&id)
                        })
                        .await
                        .unwrap_or_default();
                        let reading = read(&pids);
                        self.pids.insert(container.clone(), pids);
                        reading
                    }
                };
                match reading {
                    Ok((rss_mib, fds)) => self
                        .series
                        .entry(key(&pod))
                        .or_insert_with(|| PodSeries {
                            operator: operator.to_string(),
                            pod: pod.name_any(),
                            leader: false,
                            samples: Vec::new(),
                            rss_slope_mib_per_hour: None,
                            fds_slope_per_hour: None,
                        })
                        .samples
                        .push(Sample { t, rss_mib, fds }),
                    Err(e) => self.errors.push(format!(
                        "{} (container {container}) at {t:.0} s: {e}",
                        pod.name_any()
                    )),
                }
            }
        }
    }

    /// The last RSS of each Pod, MiB, by operator: for progress lines.
    fn latest(&self) -> String {
        xtask::OPERATORS
            .iter()
            .map(|operator| {
                let rss: Vec<String> = self
                    .series
                    .values()
                    .filter(|p| p.operator == *operator)
                    .filter_map(|p| p.samples.last())
                    .map(|s| format!("{:.1}", s.rss_mib))
                    .collect();
                format!("{operator} {}", rss.join("/"))
            })
            .collect::<Vec<_>>()
            .join(", ")
    }

    /// Marks the Pods that hold their operator's leader election Lease now.
    async fn mark_leaders(&mut self) -> Result<(), Error> {
        let mut holders = BTreeSet::new();
        for operator in xtask::OPERATORS {
            let (namespace, _) = operator_pods_of(operator);
            let leases = Api::<Lease>::namespaced(self.client.clone(), &namespace)
                .list(&ListParams::default())
                .await?;
            holders.extend(
                leases
                    .items
                    .into_iter()
                    .filter_map(|l| l.spec?.holder_identity)
                    .map(|holder| format!("{namespace}/{holder}")),
            );
        }
        for (key, series) in &mut self.series {
            series.leader = holders.contains(key);
        }
        Ok(())
    }

    /// Restarted containers, and Pods gone or added, since [`Sampler::start`].
    async fn restarts(&self) -> Result<Vec<String>, Error> {
        let mut now = BTreeMap::new();
        for (_, pods) in Self::operator_pods(&self.client).await? {
            for pod in pods {
                now.insert(key(&pod), (uid(&pod), restart_count(&pod)));
            }
        }
        let mut restarts = Vec::new();
        for (pod, (uid, count)) in &self.baseline {
            match now.get(pod) {
                Some((u, c)) if u == uid && c > count => {
                    restarts.push(format!("{pod} restarted {} times", c - count))
                }
                Some((u, _)) if u == uid => {}
                _ => restarts.push(format!("{pod} is gone")),
            }
        }
        for pod in now.keys().filter(|p| !self.baseline.contains_key(*p)) {
            restarts.push(format!("{pod} is new"));
        }
        Ok(restarts)
    }
}

fn key(pod: &Pod) -> String {
    format!("{}/{}", pod.namespace().unwrap_or_default(), pod.name_any())
}

fn uid(object: &impl ResourceExt) -> String {
    object.uid().unwrap_or_default()
}

/// A PodRequest the load created and hasn't deleted.
struct Entry {
    uid: String,
    /// Edits so far: the spec's command ends with it.
    generation: u64,
    /// An edit or delete of it is in flight.
    busy: bool,
}

/// What the load did to PodRequests, and so what the operator must show.
#[derive(Default)]
struct Ledger {
    /// By sequence number (the name is `soak-<n>`).
    live: BTreeMap<u64, Entry>,
    /// uid → name of every request the load deleted.
    deleted: HashMap<String, String>,
    creating: usize,
    in_flight: usize,
    next: u64,
    turn: u64,
    edit_cursor: usize,
    ops: Operations,
}

enum Op {
    Create(u64),
    Edit(u64, u64),
    Delete(u64),
}

fn post() -> PostParams {
    PostParams {
        field_manager: Some(MANAGER.into()),
        ..Default::default()
    }
}

fn request_name(seq: u64) -> String {
    format!("soak-{seq}")
}

/// The container's command for a spec edited `generation` times: a changed argument makes the
/// operator replace the Pod.
fn command(generation: u64) -> Vec<String> {
    ["sh", "-c", SCRIPT, "soak", &generation.to_string()]
        .map(String::from)
        .to_vec()
}

impl Ledger {
    /// The next operation: a create while fewer than `live` requests exist, else an edit and a
    /// delete in turn (the oldest request is deleted; edits go round).
    fn next_op(&mut self, live: usize) -> Option<Op> {
        if self.in_flight >= MAX_IN_FLIGHT {
            self.ops.skipped += 1;
            return None;
        }
        if self.live.len() + self.creating < live {
            self.next += 1;
            self.creating += 1;
            self.in_flight += 1;
            return Some(Op::Create(self.next));
        }
        let idle: Vec<u64> = self
            .live
            .iter()
            .filter(|(_, e)| !e.busy)
            .map(|(seq, _)| *seq)
            .collect();
        let Some(&oldest) = idle.first() else {
            self.ops.skipped += 1;
            return None;
        };
        self.turn += 1;
        let op = if self.turn.is_multiple_of(2) {
            Op::Delete(oldest)
        } else {
            let seq = idle[self.edit_cursor % idle.len()];
            self.edit_cursor += 1;
            let generation = self.live.get(&seq).map_or(0, |e| e.generation) + 1;
            Op::Edit(seq, generation)
        };
        let (Op::Delete(seq) | Op::Edit(seq, _) | Op::Create(seq)) = op;
        if let Some(entry) = self.live.get_mut(&seq) {
            entry.busy = true;
        }
        self.in_flight += 1;
        Some(op)
    }
}

/// Runs `op` and records its outcome.
async fn execute(api: Api<PodRequest>, ledger: Arc<Mutex<Ledger>>, op: Op, image: String) {
    match op {
        Op::Create(seq) => {
            let request = PodRequest::new(
                &request_name(seq),
                PodRequestSpec {
                    name: "soak".into(),
                    image,
                    command: command(0),
                },
            );
            let created = api.create(&post(), &request).await;
            let mut l = ledger.lock();
            l.in_flight -= 1;
            l.creating -= 1;
            match created {
                Ok(created) => {
                    l.live.insert(
                        seq,
                        Entry {
                            uid: uid(&created),
                            generation: 0,
                            busy: false,
                        },
                    );
                    l.ops.creates += 1;
                }
                Err(e) => l
                    .ops
                    .errors
                    .push(format!("create {}: {e}", request_name(seq))),
            }
        }
        Op::Edit(seq, generation) => {
            let patch = json!({ "spec": { "command": command(generation) } });
            let patched = api
                .patch(
                    &request_name(seq),
                    &PatchParams {
                        field_manager: Some(MANAGER.into()),
                        ..Default::default()
                    },
                    &Patch::Merge(&patch),
                )
                .await;
            let mut l = ledger.lock();
            l.in_flight -= 1;
            let ok = patched.is_ok();
            if let Some(entry) = l.live.get_mut(&seq) {
                entry.busy = false;
                if ok {
                    entry.generation = generation;
                }
            }
            match patched {
                Ok(_) => l.ops.edits += 1,
                Err(e) => l
                    .ops
                    .errors
                    .push(format!("edit {}: {e}", request_name(seq))),
            }
        }
        Op::Delete(seq) => {
            let deleted = api
                .delete(&request_name(seq), &DeleteParams::default())
                .await;
            let mut l = ledger.lock();
            l.in_flight -= 1;
            match deleted {
                Ok(_) => {
                    if let Some(entry) = l.live.remove(&seq) {
                        l.deleted.insert(entry.uid, request_name(seq));
                    }
                    l.ops.deletes += 1;
                }
                Err(e) => {
                    if let Some(entry) = l.live.get_mut(&seq) {
                        entry.busy = false;
                    }
                    l.ops
                        .errors
                        .push(format!("delete {}: {e}", request_name(seq)));
                }
            }
        }
    }
}

fn credentials_resource() -> ApiResource {
    ApiResource::from_gvk_with_plural(
        &GroupVersionKind::gvk("cloudcredential.openshift.io", "v1", "CredentialsRequest"),
        "credentialsrequests",
    )
}

/// The other two operators' objects: annotated Services and CredentialsRequests, `(name,
/// uid)`, oldest first.
#[derive(Default)]
struct Side {
    services: VecDeque<(String, String)>,
    deleted_services: Vec<(String, String)>,
    credentials: VecDeque<(String, String)>,
    deleted_credentials: Vec<(String, String)>,
    next: u64,
}

impl Side {
    /// Replaces the oldest Service (even `step`) or CredentialsRequest (odd) with a new one,
    /// once there are enough.
    async fn step(
        &mut self,
        client: &Client,
        namespace: &str,
        step: u64,
        ops: &mut Operations,
    ) -> Result<(), kube::Error> {
        self.next += 1;
        let name = format!(
            "soak-{}-{}",
            if step.is_multiple_of(2) {
                "svc"
            } else {
                "creds"
            },
            self.next
        );
        if step.is_multiple_of(2) {
            let api: Api<Service> = Api::namespaced(client.clone(), namespace);
            if self.services.len() >= SIDE_SERVICES
                && let Some((old, uid)) = self.services.pop_front()
            {
                api.delete(&old, &DeleteParams::default()).await?;
                self.deleted_services.push((old, uid));
                ops.services_deleted += 1;
            }
            let service: Service = serde_json::from_value(json!({
                "apiVersion": "v1", "kind": "Service",
                "metadata": {
                    "name": name,
                    "annotations": { SERVING_CERT_ANNOTATION: format!("{name}-tls") },
                },
                "spec": {
                    "selector": { "app": name },
                    "ports": [{ "name": "https", "port": 443, "targetPort": 8443 }],
                },
            }))
            .map_err(kube::Error::SerdeError)?;
            let created = api.create(&post(), &service).await?;
            self.services.push_back((name, uid(&created)));
            ops.services_created += 1;
        } else {
            let api: Api<DynamicObject> =
                Api::namespaced_with(client.clone(), namespace, &credentials_resource());
            if self.credentials.len() >= SIDE_CREDENTIALS
                && let Some((old, uid)) = self.credentials.pop_front()
            {
                api.delete(&old, &DeleteParams::default()).await?;
                self.deleted_credentials.push((old, uid));
                ops.credentials_deleted += 1;
            }
            let request: DynamicObject = serde_json::from_value(json!({
                "apiVersion": "cloudcredential.openshift.io/v1", "kind": "CredentialsRequest",
                "metadata": { "name": name },
                "spec": {
                    "secretRef": { "name": name, "namespace": namespace },
                    "providerSpec": {
                        "apiVersion": "cloudcredential.openshift.io/v1",
                        "kind": "AWSProviderSpec",
                        "statementEntries": [{
                            "effect": "Allow", "action": ["ec2:DescribeInstances"], "resource": "*",
                        }],
                    },
                },
            }))
            .map_err(kube::Error::SerdeError)?;
            let created = api.create(&post(), &request).await?;
            self.credentials.push_back((name, uid(&created)));
            ops.credentials_created += 1;
        }
        Ok(())
    }
}

/// What differs between what the load did and what is there now.
async fn discrepancies(
    client: &Client,
    namespace: &str,
    ledger: &Ledger,
    side: &Side,
) -> Result<Discrepancies, kube::Error> {
    let mut d = Discrepancies::default();
    let requests = Api::<PodRequest>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items;
    let pods = Api::<Pod>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items;
    let live: HashMap<&str, (String, u64)> = ledger
        .live
        .iter()
        .map(|(seq, e)| (e.uid.as_str(), (request_name(*seq), e.generation)))
        .collect();
    let there: BTreeSet<String> = requests.iter().map(uid).collect();
    for request in &requests {
        if !live.contains_key(uid(request).as_str()) {
            let why = match ledger.deleted.contains_key(&uid(request)) {
                true => "deleted",
                false => "never created",
            };
            d.duplicated.push(format!(
                "PodRequest {} ({}), which the soak {why}",
                request.name_any(),
                uid(request)
            ));
        }
    }
    let controller = |pod: &Pod| {
        pod.owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone())
    };
    for (request_uid, (name, generation)) in &live {
        if !there.contains(*request_uid) {
            d.lost.push(format!("PodRequest {name} is gone"));
            continue;
        }
        let owned: Vec<&Pod> = pods
            .iter()
            .filter(|p| controller(p).as_deref() == Some(*request_uid))
            .collect();
        match owned.as_slice() {
            [] => d.lost.push(format!("PodRequest {name} has no Pod")),
            [pod] => {
                let spec_command = pod
                    .spec
                    .as_ref()
                    .and_then(|s| s.containers.first())
                    .and_then(|c| c.command.clone());
                let phase = pod.status.as_ref().and_then(|s| s.phase.clone());
                if spec_command != Some(command(*generation)) {
                    d.stale.push(format!(
                        "Pod {name} runs an older spec than generation {generation}"
                    ));
                } else if pod.metadata.deletion_timestamp.is_some() {
                    d.stale.push(format!("Pod {name} is being deleted"));
                } else if phase.as_deref() != Some("Running") {
                    d.stale.push(format!("Pod {name} is {phase:?}"));
                }
            }
            many => d
                .duplicated
                .push(format!("PodRequest {name} has {} Pods", many.len())),
        }
    }
    for pod in &pods {
        if !controller(pod).is_some_and(|u| live.contains_key(u.as_str())) {
            d.orphaned.push(format!(
                "Pod {}{}",
                pod.name_any(),
                match controller(pod).and_then(|u| ledger.deleted.get(&u)) {
                    Some(_) => " of a deleted PodRequest",
                    None => " owned by no PodRequest of the soak",
                }
            ));
        }
    }

    let secrets = Api::<Secret>::namespaced(client.clone(), namespace)
        .list(&ListParams::default())
        .await?
        .items;
    let secret = |name: &str| secrets.iter().find(|s| s.name_any() == name);
    for (name, service_uid) in &side.services {
        let tls = format!("{name}-tls");
        let owned = secret(&tls)
            .is_some_and(|s| s.owner_references().iter().any(|o| &o.uid == service_uid));
        if !owned {
            d.others.push(format!(
                "Service {name} has no serving Secret {tls} of its own"
            ));
        }
    }
    for (name, _) in &side.deleted_services {
        if secret(&format!("{name}-tls")).is_some() {
            d.others.push(format!(
                "the serving Secret of deleted Service {name} is left"
            ));
        }
    }
    let credentials =
        Api::<DynamicObject>::namespaced_with(client.clone(), namespace, &credentials_resource())
            .list(&ListParams::default())
            .await?
            .items;
    for (name, _) in &side.credentials {
        let provisioned = credentials
            .iter()
            .find(|c| c.name_any() == *name)
            .is_some_and(|c| c.data["status"]["provisioned"] == json!(true));
        if !provisioned || secret(name).is_none() {
            d.others.push(format!(
                "CredentialsRequest {name}: provisioned {provisioned}, Secret {}",
                if secret(name).is_some() {
                    "there"
                } else {
                    "missing"
                }
            ));
        }
    }
    for (name, _) in &side.deleted_credentials {
        if credentials.iter().any(|c| c.name_any() == *name) {
            d.others
                .push(format!("deleted CredentialsRequest {name} is still there"));
        }
        if secret(name).is_some() {
            d.others.push(format!(
                "the Secret of deleted CredentialsRequest {name} is left"
            ));
        }
    }
    Ok(d)
}

/// Runs the soak in `namespace` (which it fills with its objects) against operators already
/// deployed in the cluster on its real node; the report says whether it passed. Errors are
/// what kept it from running or judging at all.
pub async fn run(client: &Client, namespace: &str, options: &Options) -> Result<Report, Error> {
    let mut sampler = Sampler::start(client).await?;
    let ledger = Arc::new(Mutex::new(Ledger::default()));
    let requests: Api<PodRequest> = Api::namespaced(client.clone(), namespace);
    let t0 = Instant::now();
    let deadline = TokioInstant::now() + options.duration;
    eprintln!(
        "soak: {:.0?} at {}/s, at most {} PodRequests alive, in namespace {namespace}",
        options.duration, options.rate, options.live
    );

    let load = async {
        let mut tasks = tokio::task::JoinSet::new();
        let mut tick = tokio::time::interval(Duration::from_secs_f64(1.0 / options.rate));
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tick.tick() => {
                    let op = ledger.lock().next_op(options.live);
                    if let Some(op) = op {
                        tasks.spawn(execute(
                            requests.clone(),
                            ledger.clone(),
                            op,
                            options.image.clone(),
                        ));
                    }
                }
                Some(_) = tasks.join_next(), if !tasks.is_empty() => {}
            }
        }
        // The calls still in flight finish: their outcome is what the operators must show.
        while tasks.join_next().await.is_some() {}
    };
    let others = async {
        let (mut side, mut ops, mut errors) = (Side::default(), Operations::default(), Vec::new());
        let mut tick = tokio::time::interval(SIDE_EVERY);
        let mut step = 0;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tick.tick() => {
                    if let Err(e) = side.step(client, namespace, step, &mut ops).await {
                        errors.push(format!("step {step}: {e}"));
                    }
                    step += 1;
                }
            }
        }
        (side, ops, errors)
    };
    let sampling = async {
        let mut tick = tokio::time::interval(options.sample_every);
        let mut report = tokio::time::interval(Duration::from_secs(60));
        report.tick().await;
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(deadline) => break,
                _ = tick.tick() => sampler.sample(t0.elapsed().as_secs_f64()).await,
                _ = report.tick() => {
                    let l = ledger.lock();
                    eprintln!(
                        "soak: {:.0} s: {} creates, {} edits, {} deletes, {} alive, {} errors; \
                         RSS (MiB) {}",
                        t0.elapsed().as_secs_f64(),
                        l.ops.creates,
                        l.ops.edits,
                        l.ops.deletes,
                        l.live.len(),
                        l.ops.errors.len(),
                        sampler.latest(),
                    );
                }
            }
        }
    };
    let ((), (side, side_ops, side_errors), ()) = tokio::join!(load, others, sampling);
    sampler.mark_leaders().await?;
    let duration_s = t0.elapsed().as_secs_f64();

    // The load has stopped: the operators catch up, then everything must match.
    let stopped = Instant::now();
    let ledger = std::mem::take(&mut *ledger.lock());
    let converged = wait::until_every(
        "the operators to match every object of the soak",
        options.converge_within,
        wait::Backoff::every(Duration::from_secs(2)),
        || async {
            let d = discrepancies(client, namespace, &ledger, &side)
                .await
                .map_err(|e| e.to_string())?;
            match d.is_empty() {
                true => Ok(()),
                false => Err(d.summary()),
            }
        },
    )
    .await;
    let (converged_in_s, discrepancies) = match converged {
        Ok(()) => (
            Some(stopped.elapsed().as_secs_f64()),
            Discrepancies::default(),
        ),
        Err(_) => (
            None,
            discrepancies(client, namespace, &ledger, &side).await?,
        ),
    };
    let restarts = sampler.restarts().await?;

    let mut operations = ledger.ops;
    operations.services_created = side_ops.services_created;
    operations.services_deleted = side_ops.services_deleted;
    operations.credentials_created = side_ops.credentials_created;
    operations.credentials_deleted = side_ops.credentials_deleted;
    operations.errors.extend(side_errors);
    let warmup_s = options.warmup.as_secs_f64();
    let mut pods: Vec<PodSeries> = sampler.series.into_values().collect();
    for pod in &mut pods {
        pod.fit(warmup_s);
    }
    let mut report = Report {
        duration_s,
        rate_per_s: options.rate,
        live: options.live,
        sample_every_s: options.sample_every.as_secs_f64(),
        warmup_s,
        max_slope_mib_per_hour: options.max_slope_mib_per_hour,
        converge_within_s: options.converge_within.as_secs_f64(),
        operations,
        pods,
        converged_in_s,
        discrepancies,
        restarts,
        sampling_errors: sampler.errors,
        failures: Vec::new(),
    };
    report.failures = report.verdict();
    Ok(report)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_slope_is_the_least_squares_fit() {
        assert_eq!(slope(&[(0.0, 1.0), (1.0, 1.0)]), None);
        assert_eq!(slope(&[(1.0, 1.0), (1.0, 2.0), (1.0, 3.0)]), None);
        let flat = slope(&[(0.0, 5.0), (1.0, 5.0), (2.0, 5.0)]);
        assert_eq!(flat, Some(0.0));
        let noisy = slope(&[(0.0, 1.0), (1.0, 3.0), (2.0, 2.0), (3.0, 4.0)]).unwrap_or(f64::NAN);
        assert!((noisy - 0.8).abs() < 1e-9, "{noisy}");
    }

    #[test]
    fn short_runs_are_allowed_noise_and_long_ones_a_week_to_the_limit() {
        let minutes = |m: u64| max_slope_for(Duration::from_secs(m * 60));
        // 1 MiB over the 2 fitted minutes of a 150 s run.
        assert!((max_slope_for(Duration::from_secs(150)) - 30.0).abs() < 1e-9);
        assert!((minutes(15) - 5.0).abs() < 1e-9);
        assert!((minutes(60) - 1.25).abs() < 1e-9);
        assert_eq!(minutes(75), LONG_RUN_SLOPE);
        assert_eq!(minutes(600), LONG_RUN_SLOPE);
    }

    #[test]
    fn the_load_fills_the_live_set_then_edits_and_deletes_in_turn() {
        let mut ledger = Ledger::default();
        let mut kinds = String::new();
        for _ in 0..12 {
            let Some(op) = ledger.next_op(3) else {
                kinds.push('-');
                continue;
            };
            ledger.in_flight -= 1;
            match op {
                Op::Create(seq) => {
                    ledger.creating -= 1;
                    ledger.live.insert(
                        seq,
                        Entry {
                            uid: seq.to_string(),
                            generation: 0,
                            busy: false,
                        },
                    );
                    kinds.push('c');
                }
                Op::Edit(seq, generation) => {
                    let entry = ledger.live.get_mut(&seq).map(|e| {
                        e.busy = false;
                        e.generation = generation;
                    });
                    assert!(entry.is_some());
                    kinds.push('e');
                }
                Op::Delete(seq) => {
                    // The oldest goes.
                    assert_eq!(ledger.live.keys().next(), Some(&seq));
                    ledger.live.remove(&seq);
                    kinds.push('d');
                }
            }
        }
        assert_eq!(kinds, "cccedcedcedc");
        assert!(ledger.live.len() <= 3);
    }

    #[test]
    fn a_busy_request_is_left_alone_and_a_full_pipeline_skips() {
        let mut ledger = Ledger::default();
        ledger.live.insert(
            1,
            Entry {
                uid: "a".into(),
                generation: 0,
                busy: true,
            },
        );
        assert!(ledger.next_op(1).is_none());
        assert_eq!(ledger.ops.skipped, 1);
        ledger.in_flight = MAX_IN_FLIGHT;
        assert!(ledger.next_op(5).is_none());
        assert_eq!(ledger.ops.skipped, 2);
    }
}
