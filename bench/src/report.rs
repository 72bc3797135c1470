//! The results: JSON for machines, Markdown for people, each target checked against the run.

use std::fmt::Write as _;

use serde::{Deserialize, Serialize};

use crate::cluster::Audit;
use crate::peer::{PeerKind, Sample};

#[derive(Debug, Serialize, Deserialize)]
pub struct Report {
    pub date: String,
    pub machine: Machine,
    pub versions: Versions,
    pub settings: Settings,
    pub peers: Vec<PeerRun>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Machine {
    pub hostname: String,
    pub cpus: usize,
    pub cpu_model: String,
    pub memory_gib: f64,
    pub kernel: String,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Versions {
    pub kubernetes: String,
    pub rustc: String,
    pub kube_rs: String,
    pub go: String,
    pub controller_runtime: String,
    pub client_go: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Settings {
    pub sizes: Vec<usize>,
    pub rates: Vec<f64>,
    pub rate_seconds: f64,
    pub concurrency: usize,
    /// The largest memory step.
    pub memory_objects: usize,
    /// Requests in the cluster at each memory reading.
    #[serde(default)]
    pub memory_steps: Vec<usize>,
    pub idle_seconds: f64,
    pub quick: bool,
    pub profile: String,
    pub peers: Vec<PeerKind>,
    /// Runs of every peer, interleaved (see `rotated` in main.rs).
    #[serde(default = "one")]
    pub runs: usize,
    /// What the operators were configured with, in words.
    pub operator_config: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PeerRun {
    pub peer: PeerKind,
    /// Which run (0-based) of the peer this is.
    #[serde(default)]
    pub run: usize,
    pub control_plane_startup_s: f64,
    /// Process start to leading, with nothing to reconcile.
    pub startup_empty_s: Option<f64>,
    pub idle_rss_mb: Option<f64>,
    /// Of the idle RSS, what maps files (the binary's code, shared libraries).
    #[serde(default)]
    pub idle_rss_file_mb: Option<f64>,
    pub idle: Option<Idle>,
    pub phases: Vec<Phase>,
    pub restart: Option<Restart>,
    pub failover: Option<Failover>,
    pub memory: Vec<Sample>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    /// `burst` (concurrency-bound), `rate` (fixed arrival rate), `fill`, or the churn on an
    /// earlier phase's objects: `update`, `delete`, `recreate`.
    pub kind: String,
    pub n: usize,
    pub rate: Option<f64>,
    /// First create sent → last create returned.
    pub create_s: f64,
    /// First create sent → last object Ready.
    pub converge_s: f64,
    /// Per object, the call sent → its Pod's watch event (ADDED, or gone for a delete phase).
    pub latency: Latency,
    /// Per object, the call sent → the object Ready (the request's status for the operators,
    /// the Pod's condition for direct). Not for delete phases.
    #[serde(default)]
    pub ready_latency: Option<Latency>,
    /// How long the create calls themselves took (sent → returned).
    pub create_call: Latency,
    /// Sorted CR→Pod latencies (at most 2000, evenly spaced ranks).
    pub latencies_ms: Vec<f64>,
    /// (seconds since the first create, objects Ready).
    pub curve: Vec<(f64, usize)>,
    /// The peer's requests as the apiserver audited them, from the first create to convergence.
    pub audit: Audit,
    /// The same, per object created.
    pub per_object: PerObject,
    /// The operator's own count (`rest_client_requests_total` by method).
    pub client_requests: Option<ClientRequests>,
    pub reconciles: Option<u64>,
    pub reconcile_errors: Option<u64>,
    pub cpu_s: Option<f64>,
    /// CPU seconds kube-apiserver and etcd used over the phase.
    #[serde(default)]
    pub control_plane_cpu_s: Option<f64>,
    /// Bytes etcd wrote to its write-ahead log over the phase.
    #[serde(default)]
    pub etcd_wal_bytes: Option<f64>,
    /// Keys that entered the operator's work queue (`workqueue_adds_total`).
    #[serde(default)]
    pub queue_adds: Option<u64>,
    #[serde(default)]
    pub queue_retries: Option<u64>,
    /// Objects in the operator's caches after the phase (requests + Pods).
    pub cached_objects: usize,
    pub idle: Option<Idle>,
    pub rss_after_mb: Option<f64>,
    /// Heap in use after the phase (Go's `go_memstats_heap_inuse_bytes`, ours from the
    /// allocator).
    #[serde(default)]
    pub heap_after_mb: Option<f64>,
    /// Live heap after the phase, like for like: Go's `HeapAlloc` right after `runtime.GC()`,
    /// ours the allocator's bytes in use (freed memory is never counted).
    #[serde(default)]
    pub live_heap_after_mb: Option<f64>,
    /// Requests of a creating phase that have a `Created` Event.
    #[serde(default)]
    pub created_events: Option<usize>,
}

fn one() -> usize {
    1
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Latency {
    pub count: usize,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct PerObject {
    pub pod_creates: f64,
    pub status_writes: f64,
    pub event_writes: f64,
    pub gets: f64,
    pub lists: f64,
    pub writes: f64,
    pub requests: f64,
    pub failed: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct ClientRequests {
    pub get: u64,
    pub post: u64,
    pub put: u64,
    pub patch: u64,
    pub delete: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Idle {
    pub seconds: f64,
    /// Writes other than Lease renewals.
    pub writes: u64,
    /// GETs of single objects other than Leases.
    pub gets: u64,
    pub lists: u64,
    pub lease_requests: u64,
    pub reconciles: u64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Restart {
    pub objects: usize,
    pub to_leader_s: f64,
    pub to_first_reconcile_s: f64,
    pub to_drained_s: f64,
    /// Writes (other than Lease) from the restart until drained and idle.
    pub writes: u64,
    pub gets: u64,
    pub reconciles: u64,
    pub peak_rss_mb: f64,
    pub rss_after_mb: f64,
}

#[derive(Debug, Default, Serialize, Deserialize)]
pub struct Failover {
    /// Leader SIGTERM → a request created at that moment has its Pod.
    pub sigterm_s: f64,
    /// Leader SIGKILL → the same.
    pub sigkill_s: f64,
}

impl Latency {
    pub fn of(sorted: &[f64]) -> Latency {
        use crate::workload::quantile;
        Latency {
            count: sorted.len(),
            p50_ms: quantile(sorted, 0.5),
            p90_ms: quantile(sorted, 0.9),
            p99_ms: quantile(sorted, 0.99),
            max_ms: sorted.last().copied().unwrap_or(f64::NAN),
        }
    }
}

impl PerObject {
    pub fn of(audit: &Audit, n: usize) -> PerObject {
        let per = |v: u64| v as f64 / n.max(1) as f64;
        PerObject {
            pod_creates: per(audit.count("create", "pods")),
            status_writes: per(audit.count("update", "podrequests/status")
                + audit.count("patch", "podrequests/status")),
            event_writes: per(audit.count("create", "events")
                + audit.count("patch", "events")
                + audit.count("update", "events")),
            gets: per(audit.gets_except_leases()),
            lists: per(audit.verb("list")),
            writes: per(audit.writes_except_leases()),
            requests: per(audit.total()),
            failed: per(audit.failed),
        }
    }
}

/// The median and the spread of one measure over a peer's runs.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Spread {
    pub median: f64,
    pub min: f64,
    pub max: f64,
    pub runs: usize,
}

impl Spread {
    /// Of the finite values; `None` when there are none. An even count takes the mean of the
    /// middle two.
    pub fn of(values: impl IntoIterator<Item = f64>) -> Option<Spread> {
        let mut v: Vec<f64> = values.into_iter().filter(|v| v.is_finite()).collect();
        if v.is_empty() {
            return None;
        }
        v.sort_by(f64::total_cmp);
        let n = v.len();
        let median = if n % 2 == 1 {
            v[n / 2]
        } else {
            (v[n / 2 - 1] + v[n / 2]) / 2.0
        };
        Some(Spread {
            median,
            min: v[0],
            max: v[n - 1],
            runs: n,
        })
    }

    /// Whether every run of `self` is below every run of `other` (ranges that don't overlap; a
    /// single run each never counts).
    pub fn entirely_below(&self, other: &Spread) -> bool {
        self.runs > 1 && other.runs > 1 && self.max < other.min
    }

    /// `median (min–max)`, or the value alone for a single run.
    fn show(&self, f: impl Fn(f64) -> String) -> String {
        if self.runs == 1 {
            f(self.median)
        } else {
            format!("{} ({}–{})", f(self.median), f(self.min), f(self.max))
        }
    }
}

fn show(s: Option<Spread>, f: impl Fn(f64) -> String) -> String {
    s.map(|s| s.show(f)).unwrap_or_else(|| "–".into())
}

fn secs(v: f64) -> String {
    format!("{v:.2} s")
}

fn mb(v: f64) -> String {
    format!("{v:.1} MB")
}

fn ms(v: f64) -> String {
    format!("{v:.0}")
}

fn ms_unit(v: f64) -> String {
    format!("{v:.0} ms")
}

fn per_s(v: f64) -> String {
    format!("{v:.0}/s")
}

/// The p99 CR→Ready (from the create sent) under which an offered rate counts as sustained.
pub const CAPACITY_P99_MS: f64 = 5000.0;

/// Operator + API server + etcd CPU seconds per 1000 objects of a phase.
pub fn whole_cluster_per_1000(phase: &Phase) -> Option<f64> {
    let cpu = phase.cpu_s.unwrap_or(0.0) + phase.control_plane_cpu_s?;
    Some(1000.0 * cpu / phase.n.max(1) as f64)
}

/// A target: what, met or not (`None`: not measured), the values behind the verdict.
pub type Target = (String, Option<bool>, String);

impl Report {
    /// The peers in the order of the settings (then any others found).
    pub fn kinds(&self) -> Vec<PeerKind> {
        let mut kinds = self.settings.peers.clone();
        for p in &self.peers {
            if !kinds.contains(&p.peer) {
                kinds.push(p.peer);
            }
        }
        kinds.retain(|k| self.peers.iter().any(|p| p.peer == *k));
        kinds
    }

    fn runs(&self, kind: PeerKind) -> impl Iterator<Item = &PeerRun> {
        self.peers.iter().filter(move |p| p.peer == kind)
    }

    /// A measure of a peer over its runs.
    fn over_runs(&self, kind: PeerKind, f: impl Fn(&PeerRun) -> Option<f64>) -> Option<Spread> {
        Spread::of(self.runs(kind).filter_map(f))
    }

    /// A measure of phase `name` over a peer's runs.
    pub fn over_phase(
        &self,
        kind: PeerKind,
        name: &str,
        f: impl Fn(&Phase) -> Option<f64>,
    ) -> Option<Spread> {
        Spread::of(
            self.runs(kind)
                .filter_map(|r| r.phases.iter().find(|p| p.name == name))
                .filter_map(f),
        )
    }

    /// Of the Go peers measured, the one with the lowest median.
    fn best_go(&self, f: impl Fn(PeerKind) -> Option<Spread>) -> Option<(PeerKind, Spread)> {
        [PeerKind::Go, PeerKind::GoTuned]
            .into_iter()
            .filter_map(|k| f(k).map(|s| (k, s)))
            .min_by(|a, b| a.1.median.total_cmp(&b.1.median))
    }

    /// Phase names in the order they ran.
    fn phase_names(&self) -> Vec<String> {
        let mut all: Vec<String> = Vec::new();
        for p in &self.peers {
            for ph in &p.phases {
                if !all.contains(&ph.name) {
                    all.push(ph.name.clone());
                }
            }
        }
        all
    }

    /// The burst phase with the most objects (where efficiency and costs are read).
    fn largest_burst(&self) -> Option<String> {
        self.peers
            .iter()
            .flat_map(|p| &p.phases)
            .filter(|p| p.kind == "burst")
            .max_by_key(|p| p.n)
            .map(|p| p.name.clone())
    }

    /// Ours against the best Go peer on a lower-is-better measure: `ours ≤ factor × Go's`, and,
    /// when `significant`, also every run of ours below every run of theirs.
    fn ratio_target(
        &self,
        what: String,
        factor: f64,
        significant: bool,
        f: impl Fn(PeerKind) -> Option<Spread>,
        unit: fn(f64) -> String,
    ) -> Option<Target> {
        let ours = f(PeerKind::Operon)?;
        let (go, theirs) = self.best_go(&f)?;
        let below = ours.entirely_below(&theirs);
        let met = ours.median <= factor * theirs.median && (below || !significant);
        Some((
            what,
            Some(met),
            format!(
                "{} vs {} {} ({:.2}×; {})",
                ours.show(unit),
                go.name(),
                theirs.show(unit),
                ours.median / theirs.median,
                if below {
                    "significant: ours lower in every run"
                } else if theirs.entirely_below(&ours) {
                    "significant: theirs lower in every run"
                } else {
                    "the ranges overlap"
                }
            ),
        ))
    }

    /// Per run, kB of `f` (MB after a phase) per PodRequest cached (with its Pod), as the slope
    /// over the memory steps (the `fill-N` phases).
    fn memory_slope(&self, kind: PeerKind, f: fn(&Phase) -> Option<f64>) -> Option<Spread> {
        Spread::of(self.runs(kind).filter_map(|r| {
            let points: Vec<(f64, f64)> = r
                .phases
                .iter()
                .filter(|p| p.kind == "fill")
                .filter_map(|p| Some(((p.cached_objects / 2) as f64, f(p)?)))
                .collect();
            slope(&points).map(|mb| mb * 1e3)
        }))
    }

    /// Per run, the highest offered rate whose p99 CR→Ready (from the create sent) stayed
    /// under [`CAPACITY_P99_MS`].
    fn capacity(&self, kind: PeerKind) -> Option<Spread> {
        Spread::of(
            self.runs(kind)
                .filter(|r| r.phases.iter().any(|p| p.kind == "rate"))
                .map(|r| {
                    r.phases
                        .iter()
                        .filter(|p| p.kind == "rate")
                        .filter(|p| {
                            p.ready_latency
                                .as_ref()
                                .is_some_and(|l| l.p99_ms < CAPACITY_P99_MS)
                        })
                        .filter_map(|p| p.rate)
                        .fold(0.0, f64::max)
                }),
        )
    }

    /// The Go peer with the highest median capacity, and that capacity.
    fn go_capacity(&self) -> Option<(PeerKind, Spread)> {
        [PeerKind::Go, PeerKind::GoTuned]
            .into_iter()
            .filter_map(|k| self.capacity(k).map(|s| (k, s)))
            .max_by(|a, b| a.1.median.total_cmp(&b.1.median))
    }

    /// The rate phases, by offered rate.
    pub fn rate_phases(&self) -> Vec<(String, f64)> {
        let mut rates: Vec<(String, f64)> = Vec::new();
        for p in self.peers.iter().flat_map(|p| &p.phases) {
            if let Some(r) = p.rate.filter(|_| p.kind == "rate")
                && !rates.iter().any(|(n, _)| *n == p.name)
            {
                rates.push((p.name.clone(), r));
            }
        }
        rates.sort_by(|a, b| a.1.total_cmp(&b.1));
        rates
    }

    /// Each target of the issue, on medians against the best Go peer.
    pub fn targets(&self) -> Vec<Target> {
        let mut out = Vec::new();
        let ours = PeerKind::Operon;
        let names = self.phase_names();
        let per_1000 = |ph: &Phase| ph.cpu_s.map(|c| 1000.0 * c / ph.n as f64);
        let s_per_1000 = |v: f64| format!("{v:.2} s/1000");
        // Open loop: capacity, and the cost and latency below it.
        let go_capacity = self.go_capacity();
        if let (Some(ours), Some((go, theirs))) = (self.capacity(ours), go_capacity) {
            out.push((
                format!(
                    "capacity (p99 CR→Ready < {:.0} s) ≥ Go's",
                    CAPACITY_P99_MS / 1e3
                ),
                Some(ours.median >= theirs.median),
                format!(
                    "{} vs {} {}",
                    ours.show(per_s),
                    go.name(),
                    theirs.show(per_s)
                ),
            ));
        }
        let capacity = go_capacity.map(|(_, c)| c.median).unwrap_or(f64::INFINITY);
        for (name, _) in self.rate_phases().iter().filter(|(_, r)| *r < capacity) {
            out.extend(self.ratio_target(
                format!("whole-cluster CPU per PodRequest ≤ 0.9× ({name})"),
                0.9,
                false,
                |k| self.over_phase(k, name, whole_cluster_per_1000),
                s_per_1000,
            ));
            out.extend(self.ratio_target(
                format!("operator CPU per PodRequest ≤ 0.5× ({name})"),
                0.5,
                false,
                |k| self.over_phase(k, name, per_1000),
                s_per_1000,
            ));
        }
        if let Some((name, rate)) = self
            .rate_phases()
            .into_iter()
            .rev()
            .find(|(_, r)| *r <= 0.8 * capacity)
            .filter(|_| capacity.is_finite())
        {
            out.extend(self.ratio_target(
                format!(
                    "p99 CR→Ready ≤ 0.8× at {rate:.0}/s (≤ 80 % of Go's capacity), significant"
                ),
                0.8,
                true,
                |k| self.over_phase(k, &name, |p| p.ready_latency.as_ref().map(|l| l.p99_ms)),
                ms_unit,
            ));
        }
        for name in names.iter().filter(|n| !n.starts_with("rate")) {
            out.extend(self.ratio_target(
                format!("operator CPU per PodRequest ≤ 0.5× ({name})"),
                0.5,
                false,
                |k| self.over_phase(k, name, per_1000),
                s_per_1000,
            ));
        }
        let most_cached = self
            .runs(ours)
            .flat_map(|r| &r.phases)
            .filter(|p| p.rss_after_mb.is_some())
            .max_by_key(|p| p.cached_objects)
            .map(|p| (p.name.clone(), p.cached_objects));
        if let Some((name, n)) = most_cached {
            out.extend(self.ratio_target(
                format!("RSS at {n} cached objects ≤ 0.5×"),
                0.5,
                false,
                |k| self.over_phase(k, &name, |p| p.rss_after_mb),
                mb,
            ));
            out.extend(self.ratio_target(
                format!("live heap at {n} cached objects ≤ 0.5×"),
                0.5,
                false,
                |k| self.over_phase(k, &name, |p| p.live_heap_after_mb),
                mb,
            ));
        }
        let kb = |v: f64| format!("{v:.2} kB");
        out.extend(self.ratio_target(
            "live heap per cached PodRequest and Pod (slope over the memory steps) ≤ 0.5×".into(),
            0.5,
            false,
            |k| self.memory_slope(k, |p| p.live_heap_after_mb),
            kb,
        ));
        out.extend(self.ratio_target(
            "RSS per cached PodRequest and Pod (slope over the memory steps) ≤ 0.5×".into(),
            0.5,
            false,
            |k| self.memory_slope(k, |p| p.rss_after_mb),
            kb,
        ));
        if let Some(idle) = self.over_runs(ours, |r| r.idle_rss_mb) {
            out.push((
                "idle RSS ≤ 12 MB".into(),
                Some(idle.median <= 12.0),
                mb(idle.median),
            ));
        }
        let restart = |k| self.over_runs(k, |r| r.restart.as_ref().map(|x| x.to_drained_s));
        if let Some(objects) = self
            .runs(ours)
            .find_map(|r| r.restart.as_ref().map(|x| x.objects))
        {
            out.extend(self.ratio_target(
                format!("startup to drained with {objects} objects ≤ 0.5×"),
                0.5,
                false,
                restart,
                secs,
            ));
            if let Some(s) = restart(ours) {
                out.push((
                    format!("startup to drained with {objects} objects ≤ 2 s"),
                    Some(s.median <= 2.0),
                    secs(s.median),
                ));
            }
        }
        let failover =
            |f: fn(&Failover) -> f64| self.over_runs(ours, move |r| r.failover.as_ref().map(f));
        if let Some(s) = failover(|f| f.sigterm_s) {
            out.push((
                "graceful failover ≤ 1 s".into(),
                Some(s.median <= 1.0),
                secs(s.median),
            ));
        }
        if let Some(s) = failover(|f| f.sigkill_s) {
            out.push((
                "SIGKILL failover ≤ lease duration + 1 s (16 s)".into(),
                Some(s.median <= 16.0),
                secs(s.median),
            ));
        }
        if let Some(big) = self.largest_burst() {
            let converge = |k| self.over_phase(k, &big, |p| Some(p.converge_s));
            if let (Some(o), Some(d)) = (converge(ours), converge(PeerKind::Direct)) {
                let e = d.median / o.median;
                out.push((
                    format!("efficiency ≥ 0.9 of the direct limit ({big})"),
                    Some(e >= 0.9),
                    format!("{e:.2}"),
                ));
            }
        }
        // Counts: every phase of every run; creates and status writes in the phases that
        // create (a deletion creates nothing, and on kwok an update's counts include kwok's
        // late deletions: docs/performance.md).
        let phases: Vec<&Phase> = self.runs(ours).flat_map(|r| &r.phases).collect();
        let creating: Vec<&Phase> = phases
            .iter()
            .copied()
            .filter(|p| !matches!(p.kind.as_str(), "update" | "delete"))
            .collect();
        if !phases.is_empty() {
            let over = |set: &[&Phase], f: fn(&PerObject) -> f64, max: bool| {
                set.iter()
                    .map(|p| f(&p.per_object))
                    .fold(f64::NAN, if max { f64::max } else { f64::min })
            };
            let worst = |f: fn(&PerObject) -> f64| over(&creating, f, true);
            let least = |f: fn(&PerObject) -> f64| over(&creating, f, false);
            let creates = (least(|p| p.pod_creates), worst(|p| p.pod_creates));
            out.push((
                "exactly 1 Pod create per PodRequest (every creating phase and run)".into(),
                Some((creates.0 - 1.0).abs() < 1e-9 && (creates.1 - 1.0).abs() < 1e-9),
                format!("{:.3}–{:.3}", creates.0, creates.1),
            ));
            let status = worst(|p| p.status_writes);
            out.push((
                "≤ 2 status writes per PodRequest".into(),
                Some(status <= 2.0),
                format!("at most {status:.3}"),
            ));
            let gets = over(&phases, |p| p.gets, true);
            out.push((
                "0 GETs per PodRequest".into(),
                Some(gets == 0.0),
                format!("at most {gets:.3}"),
            ));
            let with_events: Vec<(usize, usize)> = phases
                .iter()
                .filter_map(|p| p.created_events.map(|e| (e, p.n)))
                .collect();
            if !with_events.is_empty() {
                let missing: usize = with_events.iter().map(|(e, n)| n.saturating_sub(*e)).sum();
                let all: usize = with_events.iter().map(|(_, n)| n).sum();
                out.push((
                    "every Pod created has its own Created Event".into(),
                    Some(missing == 0),
                    format!("{missing} of {all} requests without one"),
                ));
            }
        }
        let idles: Vec<&Idle> = self
            .runs(ours)
            .flat_map(|p| {
                p.idle
                    .iter()
                    .chain(p.phases.iter().filter_map(|ph| ph.idle.as_ref()))
            })
            .collect();
        if !idles.is_empty() {
            let writes: u64 = idles.iter().map(|i| i.writes).sum();
            let gets: u64 = idles.iter().map(|i| i.gets).sum();
            out.push((
                "0 writes and 0 uncached GETs while idle".into(),
                Some(writes == 0 && gets == 0),
                format!(
                    "{writes} writes, {gets} GETs in {} idle windows",
                    idles.len()
                ),
            ));
        }
        let restarts: Vec<&Restart> = self.runs(ours).filter_map(|r| r.restart.as_ref()).collect();
        if !restarts.is_empty() {
            let writes: u64 = restarts.iter().map(|r| r.writes).sum();
            out.push((
                "0 writes on restart".into(),
                Some(writes == 0),
                format!("{writes} writes in {} restarts", restarts.len()),
            ));
        }
        out
    }

    /// A table: a header row of peers, then one row per (label, cell per peer).
    fn table(&self, md: &mut String, first: &str, rows: Vec<(String, Vec<String>)>) {
        let kinds = self.kinds();
        let _ = write!(md, "\n| {first} |");
        for k in &kinds {
            let _ = write!(md, " {} |", k.name());
        }
        let _ = write!(md, "\n|---|");
        for _ in &kinds {
            md.push_str("---|");
        }
        md.push('\n');
        for (label, cells) in rows {
            let _ = writeln!(md, "| {label} | {} |", cells.join(" | "));
        }
    }

    /// A row of one measure per peer.
    fn row(
        &self,
        label: impl Into<String>,
        cell: impl Fn(PeerKind) -> String,
    ) -> (String, Vec<String>) {
        (label.into(), self.kinds().into_iter().map(cell).collect())
    }

    /// The headline: what the whole cluster pays per request (operator + API server + etcd
    /// CPU, etcd's bytes, the operator's API requests by verb), the operator's own CPU after.
    fn cluster_cost(&self, md: &mut String, names: &[String]) {
        let _ = writeln!(
            md,
            "\n## What the cluster pays per 1000 PodRequests\n\n\
             CPU seconds of the operator, kube-apiserver and etcd together, from the first create \
             until all are Ready (the direct baseline: API server and etcd only); the operator's \
             own CPU; kB etcd wrote to its write-ahead log."
        );
        let mut rows = Vec::new();
        for name in names {
            rows.push(self.row(format!("{name}: whole cluster"), |k| {
                show(self.over_phase(k, name, whole_cluster_per_1000), |v| {
                    format!("{v:.2} s")
                })
            }));
            rows.push(self.row(format!("{name}: operator"), |k| {
                show(
                    self.over_phase(k, name, |p| p.cpu_s.map(|c| 1000.0 * c / p.n as f64)),
                    |v| format!("{v:.2} s"),
                )
            }));
            rows.push(self.row(format!("{name}: etcd WAL"), |k| {
                show(
                    self.over_phase(k, name, |p| {
                        p.etcd_wal_bytes.map(|b| b / 1e3 * 1000.0 / p.n as f64)
                    }),
                    |v| format!("{v:.0} kB"),
                )
            }));
        }
        self.table(md, "phase", rows);
        let _ = writeln!(
            md,
            "\nThe operator's API requests per PodRequest by verb, as audited (all phases that \
             create; median over runs):"
        );
        let creating: Vec<&String> = names
            .iter()
            .filter(|n| !n.starts_with("update") && !n.starts_with("delete"))
            .collect();
        let mut rows = Vec::new();
        for verb in [
            "create", "patch", "update", "delete", "get", "list", "watch",
        ] {
            rows.push(self.row(verb, |k| {
                if !k.is_operator() {
                    return "–".into();
                }
                show(
                    Spread::of(self.runs(k).filter_map(|r| {
                        let (requests, n) = r
                            .phases
                            .iter()
                            .filter(|p| creating.contains(&&p.name))
                            .fold((0, 0), |(q, n), p| (q + p.audit.verb(verb), n + p.n));
                        (n > 0).then(|| requests as f64 / n as f64)
                    })),
                    |v| format!("{v:.3}"),
                )
            }));
        }
        self.table(md, "verb", rows);
    }

    /// Open loop: per offered rate, the rate achieved (objects ÷ first create sent to last
    /// Ready) and p50 / p99 CR→Ready; then each peer's capacity.
    fn capacity_table(&self, md: &mut String) {
        let rates = self.rate_phases();
        if rates.is_empty() {
            return;
        }
        let _ = writeln!(
            md,
            "\n## Open loop: rate achieved; p50 / p99 CR→Ready (from the create sent)\n\n\
             Creates are sent at the offered rate whatever the answers do. A rate is sustained \
             while p99 CR→Ready stays under {:.0} s; capacity is the highest sustained rate.",
            CAPACITY_P99_MS / 1e3
        );
        let mut rows: Vec<_> = rates
            .iter()
            .map(|(name, rate)| {
                self.row(format!("{rate:.0}/s offered"), |k| {
                    let achieved = self.over_phase(k, name, |p| Some(p.n as f64 / p.converge_s));
                    let p50 =
                        self.over_phase(k, name, |p| p.ready_latency.as_ref().map(|l| l.p50_ms));
                    let p99 =
                        self.over_phase(k, name, |p| p.ready_latency.as_ref().map(|l| l.p99_ms));
                    match (achieved, p50, p99) {
                        (Some(a), Some(p50), Some(p99)) => {
                            format!("{}; {} / {}", per_s(a.median), ms(p50.median), p99.show(ms))
                        }
                        _ => "–".into(),
                    }
                })
            })
            .collect();
        rows.push(self.row("capacity", |k| show(self.capacity(k), per_s)));
        self.table(md, "rate", rows);
    }

    pub fn markdown(&self, plots: &[(String, String)]) -> String {
        let mut md = String::new();
        let s = &self.settings;
        let v = &self.versions;
        let m = &self.machine;
        let _ = writeln!(md, "# PodRequest benchmark, {}\n", self.date);
        let _ = writeln!(
            md,
            "Machine: {} ({} CPUs, {}, {:.0} GiB, Linux {}). Profile: {}{}.\n",
            m.hostname,
            m.cpus,
            m.cpu_model,
            m.memory_gib,
            m.kernel,
            s.profile,
            if s.quick { ", quick run" } else { "" }
        );
        let _ = writeln!(
            md,
            "Versions: Kubernetes {}, {}, kube-rs {}, {}, controller-runtime {}, client-go {}.\n",
            v.kubernetes, v.rustc, v.kube_rs, v.go, v.controller_runtime, v.client_go
        );
        let _ = writeln!(
            md,
            "Run: bursts of {:?} objects at concurrency {}; open-loop rates {:?}/s for {} s \
             each; memory at {} requests; idle windows of {} s. Each peer gets a fresh control \
             plane. {} run(s) of every peer, interleaved: run r starts with the r-th peer. Cells \
             show the median over the runs and, in brackets, the lowest and highest; a \
             comparison is significant only where the ranges don't overlap.\n",
            s.sizes,
            s.concurrency,
            s.rates,
            s.rate_seconds,
            if s.memory_steps.is_empty() {
                format!("{:?}", [s.memory_objects])
            } else {
                format!("{:?}", s.memory_steps)
            },
            s.idle_seconds,
            s.runs
        );
        for c in &s.operator_config {
            let _ = writeln!(md, "- {c}");
        }
        md.push('\n');

        let _ = writeln!(
            md,
            "## Targets (ours against the best Go peer, medians)\n\n| target | verdict | value |\n|---|---|---|"
        );
        for (target, ok, value) in self.targets() {
            let verdict = match ok {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "n/a",
            };
            let _ = writeln!(md, "| {target} | {verdict} | {value} |");
        }

        let names = self.phase_names();
        self.cluster_cost(&mut md, &names);
        self.capacity_table(&mut md);
        let _ = writeln!(
            md,
            "\n## Convergence (first create → all Ready), and efficiency (direct's median ÷ the peer's)"
        );
        let rows = names
            .iter()
            .map(|name| {
                let direct = self.over_phase(PeerKind::Direct, name, |p| Some(p.converge_s));
                self.row(name.clone(), |k| {
                    let c = self.over_phase(k, name, |p| Some(p.converge_s));
                    let eff = match (direct, c) {
                        (Some(d), Some(c)) if k != PeerKind::Direct => {
                            format!(", {:.2}", d.median / c.median)
                        }
                        _ => String::new(),
                    };
                    format!("{}{eff}", show(c, secs))
                })
            })
            .collect();
        self.table(&mut md, "phase", rows);
        let _ = writeln!(
            md,
            "\nOffered rate (objects ÷ first create to last create returned; the bursts are \
             closed-loop at the concurrency above, so a slower API server offers less):"
        );
        let rows = names
            .iter()
            .map(|name| {
                self.row(name.clone(), |k| {
                    show(
                        self.over_phase(k, name, |p| Some(p.n as f64 / p.create_s)),
                        |v| format!("{v:.0}/s"),
                    )
                })
            })
            .collect();
        self.table(&mut md, "phase", rows);

        let _ = writeln!(
            md,
            "\n## Latency per object: p50 ms / p99 ms (p99's lowest–highest)\n\n\
             From the call sent to the watch event: a create to its Pod ADDED (CR→Pod); a \
             spec change (update-N) to its new Pod ADDED; a delete (delete-N) to its Pod gone."
        );
        let rows = names
            .iter()
            .map(|name| {
                self.row(name.clone(), |k| {
                    let p50 = self.over_phase(k, name, |p| Some(p.latency.p50_ms));
                    let p99 = self.over_phase(k, name, |p| Some(p.latency.p99_ms));
                    match (p50, p99) {
                        (Some(a), Some(b)) => format!("{} / {}", ms(a.median), b.show(ms)),
                        _ => "–".into(),
                    }
                })
            })
            .collect();
        self.table(&mut md, "phase", rows);

        let _ = writeln!(
            md,
            "\n## CR→Ready per object: p50 ms / p99 ms (p99's lowest–highest)\n\n\
             From the create (or spec change) sent to the object Ready: the PodRequest's \
             status for the operators, the Pod's condition for direct."
        );
        let rows = names
            .iter()
            .filter(|name| !name.starts_with("delete"))
            .map(|name| {
                self.row(name.clone(), |k| {
                    let p50 =
                        self.over_phase(k, name, |p| p.ready_latency.as_ref().map(|l| l.p50_ms));
                    let p99 =
                        self.over_phase(k, name, |p| p.ready_latency.as_ref().map(|l| l.p99_ms));
                    match (p50, p99) {
                        (Some(a), Some(b)) => format!("{} / {}", ms(a.median), b.show(ms)),
                        _ => "–".into(),
                    }
                })
            })
            .collect();
        self.table(&mut md, "phase", rows);

        if let Some(big) = self.largest_burst() {
            let _ = writeln!(
                md,
                "\n## Requests per object ({big}, as audited by the apiserver; the direct baseline \
                 makes exactly one Pod create per object)"
            );
            type Row = (&'static str, fn(&PerObject) -> f64);
            let counts: [Row; 8] = [
                ("Pod creates", |p| p.pod_creates),
                ("status writes", |p| p.status_writes),
                ("Event writes", |p| p.event_writes),
                ("GETs (not Leases)", |p| p.gets),
                ("LISTs", |p| p.lists),
                ("writes (not Leases)", |p| p.writes),
                ("all requests", |p| p.requests),
                ("failed (4xx/5xx)", |p| p.failed),
            ];
            let mut rows: Vec<_> = counts
                .iter()
                .map(|(label, f)| {
                    self.row(*label, |k| {
                        if !k.is_operator() {
                            return "–".into();
                        }
                        show(self.over_phase(k, &big, |p| Some(f(&p.per_object))), |v| {
                            format!("{v:.3}")
                        })
                    })
                })
                .collect();
            rows.push(self.row("reconciles", |k| {
                show(
                    self.over_phase(k, &big, |p| p.reconciles.map(|r| r as f64 / p.n as f64)),
                    |v| format!("{v:.2}"),
                )
            }));
            rows.push(self.row("keys queued (workqueue_adds_total)", |k| {
                show(
                    self.over_phase(k, &big, |p| p.queue_adds.map(|r| r as f64 / p.n as f64)),
                    |v| format!("{v:.2}"),
                )
            }));
            rows.push(self.row("CPU s per 1000 reconciles", |k| {
                show(self.over_phase(k, &big, cpu_per_1000), |v| {
                    format!("{v:.3}")
                })
            }));
            self.table(&mut md, "per object", rows);
        }

        let _ = writeln!(
            md,
            "\n## Memory (RSS; heap in use; live heap: Go's after `runtime.GC()`, ours the \
             allocator's bytes in use)"
        );
        let mut rows = vec![self.row("idle, nothing cached", |k| {
            show(self.over_runs(k, |r| r.idle_rss_mb), mb)
        })];
        if self.peers.iter().any(|p| p.idle_rss_file_mb.is_some()) {
            rows.push(self.row("… of which maps files (code, libraries)", |k| {
                show(self.over_runs(k, |r| r.idle_rss_file_mb), mb)
            }));
        }
        for name in &names {
            let cached = self
                .peers
                .iter()
                .filter_map(|p| p.phases.iter().find(|ph| &ph.name == name))
                .find(|ph| ph.rss_after_mb.is_some())
                .map(|ph| ph.cached_objects);
            let Some(cached) = cached else { continue };
            rows.push(
                self.row(format!("after {name}, {cached} objects cached"), |k| {
                    let rss = self.over_phase(k, name, |p| p.rss_after_mb);
                    let heap = self.over_phase(k, name, |p| p.heap_after_mb);
                    let live = self.over_phase(k, name, |p| p.live_heap_after_mb);
                    match (rss, heap, live) {
                        (Some(r), Some(h), Some(l)) => {
                            format!("{}; {}; {}", r.show(mb), h.show(mb), l.show(mb))
                        }
                        (Some(r), Some(h), None) => format!("{}; {}", r.show(mb), h.show(mb)),
                        (r, _, _) => show(r, mb),
                    }
                }),
            );
        }
        rows.push(self.row(
            "per cached PodRequest + Pod: RSS; live heap (slopes)",
            |k| {
                let rss = self.memory_slope(k, |p| p.rss_after_mb);
                let live = self.memory_slope(k, |p| p.live_heap_after_mb);
                let kb = |v: f64| format!("{v:.2} kB");
                format!("{}; {}", show(rss, kb), show(live, kb))
            },
        ));
        rows.push(
            self.row("peak during the initial list after a restart", |k| {
                show(
                    self.over_runs(k, |r| r.restart.as_ref().map(|x| x.peak_rss_mb)),
                    mb,
                )
            }),
        );
        self.table(&mut md, "when", rows);

        let _ = writeln!(md, "\n## Startup and failover");
        type StartRow = (&'static str, fn(&PeerRun) -> Option<f64>);
        let starts: [StartRow; 6] = [
            ("start → leading, empty cluster", |r| r.startup_empty_s),
            ("restart → leading", |r| {
                r.restart.as_ref().map(|x| x.to_leader_s)
            }),
            ("restart → first reconcile (caches synced)", |r| {
                r.restart.as_ref().map(|x| x.to_first_reconcile_s)
            }),
            ("restart → queue drained", |r| {
                r.restart.as_ref().map(|x| x.to_drained_s)
            }),
            ("failover after SIGTERM", |r| {
                r.failover.as_ref().map(|f| f.sigterm_s)
            }),
            ("failover after SIGKILL", |r| {
                r.failover.as_ref().map(|f| f.sigkill_s)
            }),
        ];
        let mut rows: Vec<_> = starts
            .iter()
            .map(|(label, f)| self.row(*label, |k| show(self.over_runs(k, f), secs)))
            .collect();
        rows.insert(
            1,
            self.row("restart: objects existing", |k| {
                self.runs(k)
                    .find_map(|r| r.restart.as_ref().map(|x| x.objects.to_string()))
                    .unwrap_or_else(|| "–".into())
            }),
        );
        rows.push(
            self.row("restart: reconciles, writes, GETs (all runs)", |k| {
                let r: Vec<&Restart> = self.runs(k).filter_map(|r| r.restart.as_ref()).collect();
                if r.is_empty() {
                    return "–".into();
                }
                let reconciles: Vec<String> = r.iter().map(|x| x.reconciles.to_string()).collect();
                format!(
                    "{}; {}; {}",
                    reconciles.join("/"),
                    r.iter().map(|x| x.writes).sum::<u64>(),
                    r.iter().map(|x| x.gets).sum::<u64>()
                )
            }),
        );
        self.table(&mut md, "", rows);

        if !plots.is_empty() {
            let _ = writeln!(md, "\n## Plots (first run)\n");
            for (title, file) in plots {
                let _ = writeln!(md, "![{title}]({file})\n");
            }
        }
        md
    }
}

/// Least-squares slope of `y` over `x` (`None` with fewer than two distinct `x`).
pub fn slope(points: &[(f64, f64)]) -> Option<f64> {
    let n = points.len() as f64;
    let mx = points.iter().map(|p| p.0).sum::<f64>() / n;
    let my = points.iter().map(|p| p.1).sum::<f64>() / n;
    let sxx: f64 = points.iter().map(|p| (p.0 - mx).powi(2)).sum();
    let sxy: f64 = points.iter().map(|p| (p.0 - mx) * (p.1 - my)).sum();
    (points.len() >= 2 && sxx > 0.0).then(|| sxy / sxx)
}

/// CPU seconds per 1000 reconciles in a phase.
pub fn cpu_per_1000(phase: &Phase) -> Option<f64> {
    let cpu = phase.cpu_s?;
    let r = phase.reconciles.filter(|r| *r > 0)?;
    Some(1000.0 * cpu / r as f64)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_spread_of_runs() {
        let s = Spread::of([3.0, 1.0, f64::NAN, 2.0]);
        assert_eq!(
            s,
            Some(Spread {
                median: 2.0,
                min: 1.0,
                max: 3.0,
                runs: 3
            })
        );
        assert_eq!(Spread::of([4.0, 1.0]).map(|s| s.median), Some(2.5));
        assert_eq!(Spread::of([]), None);
        assert_eq!(show(Spread::of([1.5]), secs), "1.50 s");
        assert_eq!(
            show(Spread::of([1.0, 2.0, 4.0]), secs),
            "2.00 s (1.00 s–4.00 s)"
        );
    }

    #[test]
    fn significance_needs_ranges_that_do_not_overlap() {
        let a = Spread::of([1.0, 2.0, 3.0]).expect("values");
        let b = Spread::of([3.5, 4.0, 9.0]).expect("values");
        let c = Spread::of([2.5, 5.0, 6.0]).expect("values");
        assert!(a.entirely_below(&b));
        assert!(!a.entirely_below(&c), "3.0 > 2.5: overlap");
        assert!(!b.entirely_below(&a));
        let one = Spread::of([0.5]).expect("value");
        assert!(!one.entirely_below(&b), "a single run is never significant");
    }

    #[test]
    fn slope_of_memory_over_objects() {
        let points = [(5000.0, 20.0), (10000.0, 30.0), (20000.0, 50.0)];
        let s = slope(&points).expect("three points");
        assert!((s - 0.002).abs() < 1e-12, "{s}");
        assert_eq!(slope(&[(1.0, 2.0)]), None);
        assert_eq!(slope(&[(1.0, 2.0), (1.0, 3.0)]), None, "one x only");
    }
}
