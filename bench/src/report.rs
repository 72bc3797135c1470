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
    pub memory_objects: usize,
    pub idle_seconds: f64,
    pub quick: bool,
    pub profile: String,
    pub peers: Vec<PeerKind>,
    /// What both operators were configured with, in words.
    pub operator_config: Vec<String>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct PeerRun {
    pub peer: PeerKind,
    pub control_plane_startup_s: f64,
    /// Process start to leading, with nothing to reconcile.
    pub startup_empty_s: Option<f64>,
    pub idle_rss_mb: Option<f64>,
    pub idle: Option<Idle>,
    pub phases: Vec<Phase>,
    pub restart: Option<Restart>,
    pub failover: Option<Failover>,
    pub memory: Vec<Sample>,
}

#[derive(Debug, Serialize, Deserialize)]
pub struct Phase {
    pub name: String,
    /// `burst` (concurrency-bound) or `rate` (fixed arrival rate).
    pub kind: String,
    pub n: usize,
    pub rate: Option<f64>,
    /// First create sent → last create returned.
    pub create_s: f64,
    /// First create sent → last object Ready.
    pub converge_s: f64,
    pub latency: Latency,
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
    /// Objects in the operator's caches after the phase (requests + Pods).
    pub cached_objects: usize,
    pub idle: Option<Idle>,
    pub rss_after_mb: Option<f64>,
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

impl Report {
    fn peer(&self, kind: PeerKind) -> Option<&PeerRun> {
        self.peers.iter().find(|p| p.peer == kind)
    }

    fn phase(&self, kind: PeerKind, name: &str) -> Option<&Phase> {
        self.peer(kind)?.phases.iter().find(|p| p.name == name)
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

    /// Each target of the issue: (target, verdict, value).
    pub fn targets(&self) -> Vec<(String, Option<bool>, String)> {
        let mut out = Vec::new();
        let Some(big) = self.largest_burst() else {
            return out;
        };
        let ours = self.phase(PeerKind::Operon, &big);
        let go = self.phase(PeerKind::Go, &big);
        let direct = self.phase(PeerKind::Direct, &big);
        let fmt = |v: f64| format!("{v:.3}");
        if let (Some(o), Some(d)) = (ours, direct) {
            let e = d.converge_s / o.converge_s;
            out.push((
                format!("efficiency ≥ 0.9 of the direct limit ({big})"),
                Some(e >= 0.9),
                fmt(e),
            ));
        }
        let mut p99_checks = Vec::new();
        for phase in self
            .peer(PeerKind::Operon)
            .map(|p| p.phases.iter().collect::<Vec<_>>())
            .unwrap_or_default()
        {
            let o = phase.latency.p99_ms;
            if let Some(g) = self.phase(PeerKind::Go, &phase.name) {
                p99_checks.push((
                    format!("p99 CR→Pod ≤ Go peer's ({})", phase.name),
                    Some(o <= g.latency.p99_ms),
                    format!("{o:.1} ms vs {:.1} ms", g.latency.p99_ms),
                ));
            }
            if let Some(d) = self.phase(PeerKind::Direct, &phase.name) {
                p99_checks.push((
                    format!("p99 CR→Pod ≤ direct p99 + 10 ms ({})", phase.name),
                    Some(o <= d.latency.p99_ms + 10.0),
                    format!("{o:.1} ms vs {:.1} ms", d.latency.p99_ms),
                ));
            }
        }
        out.extend(p99_checks);
        if let Some(o) = ours {
            out.push((
                format!("exactly 1 Pod create per PodRequest ({big})"),
                Some((o.per_object.pod_creates - 1.0).abs() < 1e-9),
                fmt(o.per_object.pod_creates),
            ));
            out.push((
                format!("≤ 2 status writes per PodRequest ({big})"),
                Some(o.per_object.status_writes <= 2.0),
                fmt(o.per_object.status_writes),
            ));
        }
        if let Some(p) = self.peer(PeerKind::Operon) {
            let idles: Vec<&Idle> = p
                .idle
                .iter()
                .chain(p.phases.iter().filter_map(|ph| ph.idle.as_ref()))
                .collect();
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
            if let Some(rss) = p.idle_rss_mb {
                out.push((
                    "idle RSS ≤ 15 MB".into(),
                    Some(rss <= 15.0),
                    format!("{rss:.1} MB"),
                ));
            }
        }
        let (op, gp) = (self.peer(PeerKind::Operon), self.peer(PeerKind::Go));
        if let (Some(o), Some(g)) = (op, gp) {
            let most = |p: &PeerRun| {
                p.phases
                    .iter()
                    .filter(|ph| ph.rss_after_mb.is_some())
                    .max_by_key(|ph| ph.cached_objects)
                    .map(|ph| (ph.cached_objects, ph.rss_after_mb.unwrap_or(f64::NAN)))
            };
            if let (Some((n, ro)), Some((_, rg))) = (most(o), most(g)) {
                out.push((
                    format!("RSS at {n} cached objects ≤ 0.5× Go peer's"),
                    Some(ro <= 0.5 * rg),
                    format!("{ro:.1} MB vs {rg:.1} MB ({:.2}×)", ro / rg),
                ));
            }
            if let (Some(a), Some(b)) = (ours.and_then(cpu_per_1000), go.and_then(cpu_per_1000)) {
                out.push((
                    format!("CPU per reconcile ≤ 0.5× Go peer's ({big})"),
                    Some(a <= 0.5 * b),
                    format!("{a:.3} s vs {b:.3} s per 1000 ({:.2}×)", a / b),
                ));
            }
            if let (Some(a), Some(b)) = (&o.restart, &g.restart) {
                out.push((
                    format!("startup to drained with {} objects ≤ Go peer's", a.objects),
                    Some(a.to_drained_s <= b.to_drained_s),
                    format!("{:.2} s vs {:.2} s", a.to_drained_s, b.to_drained_s),
                ));
            }
        }
        if let Some(f) = op.and_then(|o| o.failover.as_ref()) {
            out.push((
                "graceful failover ≤ 3 s".into(),
                Some(f.sigterm_s <= 3.0),
                format!("{:.2} s", f.sigterm_s),
            ));
        }
        out
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
            "Run: bursts of {:?} objects at concurrency {}; fixed rates {:?}/s for {} s each; \
             memory at {} requests; idle windows of {} s. Each peer gets a fresh control plane.\n",
            s.sizes, s.concurrency, s.rates, s.rate_seconds, s.memory_objects, s.idle_seconds
        );
        for c in &s.operator_config {
            let _ = writeln!(md, "- {c}");
        }
        md.push('\n');

        let _ = writeln!(
            md,
            "## Targets\n\n| target | verdict | value |\n|---|---|---|"
        );
        for (target, ok, value) in self.targets() {
            let verdict = match ok {
                Some(true) => "met",
                Some(false) => "**missed**",
                None => "n/a",
            };
            let _ = writeln!(md, "| {target} | {verdict} | {value} |");
        }

        let peers: Vec<PeerKind> = self.peers.iter().map(|p| p.peer).collect();
        let header = |md: &mut String, first: &str| {
            let _ = write!(md, "\n| {first} |");
            for p in &peers {
                let _ = write!(md, " {} |", p.name());
            }
            let _ = write!(md, "\n|---|");
            for _ in &peers {
                md.push_str("---|");
            }
            md.push('\n');
        };

        let _ = writeln!(md, "\n## Convergence (first create → all Ready)");
        header(&mut md, "phase");
        let names: Vec<String> = self
            .peers
            .first()
            .map(|p| p.phases.iter().map(|ph| ph.name.clone()).collect())
            .unwrap_or_default();
        let all_names: Vec<String> = {
            let mut all = names.clone();
            for p in &self.peers {
                for ph in &p.phases {
                    if !all.contains(&ph.name) {
                        all.push(ph.name.clone());
                    }
                }
            }
            all
        };
        for name in &all_names {
            let _ = write!(md, "| {name} |");
            let direct = self.phase(PeerKind::Direct, name).map(|p| p.converge_s);
            for p in &peers {
                match self.phase(*p, name) {
                    Some(ph) => {
                        let eff = direct
                            .filter(|_| *p != PeerKind::Direct)
                            .map(|d| format!(" (efficiency {:.2})", d / ph.converge_s))
                            .unwrap_or_default();
                        let _ = write!(md, " {:.2} s{eff} |", ph.converge_s);
                    }
                    None => md.push_str(" – |"),
                }
            }
            md.push('\n');
        }

        let _ = writeln!(
            md,
            "\n## CR→Pod latency (create returned → Pod ADDED), p50 / p90 / p99 ms"
        );
        header(&mut md, "phase");
        for name in &all_names {
            let _ = write!(md, "| {name} |");
            for p in &peers {
                match self.phase(*p, name) {
                    Some(ph) => {
                        let l = &ph.latency;
                        let _ =
                            write!(md, " {:.1} / {:.1} / {:.1} |", l.p50_ms, l.p90_ms, l.p99_ms);
                    }
                    None => md.push_str(" – |"),
                }
            }
            md.push('\n');
        }

        if let Some(big) = self.largest_burst() {
            let _ = writeln!(
                md,
                "\n## Requests per object ({big}, as audited by the apiserver; the direct baseline \
                 makes exactly one Pod create per object)"
            );
            header(&mut md, "per object");
            type Row = (&'static str, fn(&PerObject) -> f64);
            let rows: [Row; 8] = [
                ("Pod creates", |p| p.pod_creates),
                ("status writes", |p| p.status_writes),
                ("Event writes", |p| p.event_writes),
                ("GETs (not Leases)", |p| p.gets),
                ("LISTs", |p| p.lists),
                ("writes (not Leases)", |p| p.writes),
                ("all requests", |p| p.requests),
                ("failed (4xx/5xx)", |p| p.failed),
            ];
            for (label, f) in rows {
                let _ = write!(md, "| {label} |");
                for p in &peers {
                    match self.phase(*p, &big) {
                        Some(ph) if p.is_operator() => {
                            let _ = write!(md, " {:.3} |", f(&ph.per_object));
                        }
                        _ => md.push_str(" – |"),
                    }
                }
                md.push('\n');
            }
            let _ = write!(md, "| reconciles |");
            for p in &peers {
                match self
                    .phase(*p, &big)
                    .and_then(|ph| ph.reconciles.map(|r| (r, ph.n)))
                {
                    Some((r, n)) => {
                        let _ = write!(md, " {:.2} per object |", r as f64 / n as f64);
                    }
                    None => md.push_str(" – |"),
                }
            }
            md.push('\n');
            let _ = write!(md, "| client's own count: POST / PUT / PATCH / GET |");
            for p in &peers {
                match self
                    .phase(*p, &big)
                    .and_then(|ph| ph.client_requests.as_ref())
                {
                    Some(c) => {
                        let _ = write!(md, " {} / {} / {} / {} |", c.post, c.put, c.patch, c.get);
                    }
                    None => md.push_str(" – |"),
                }
            }
            md.push('\n');
            let _ = write!(md, "| CPU s per 1000 reconciles |");
            for p in &peers {
                match self.phase(*p, &big).and_then(cpu_per_1000) {
                    Some(c) => {
                        let _ = write!(md, " {c:.3} |");
                    }
                    None => md.push_str(" – |"),
                }
            }
            md.push('\n');
            let _ = write!(md, "| CPU s per 1000 PodRequests |");
            for p in &peers {
                match self
                    .phase(*p, &big)
                    .and_then(|ph| ph.cpu_s.map(|c| 1000.0 * c / ph.n as f64))
                {
                    Some(c) => {
                        let _ = write!(md, " {c:.3} |");
                    }
                    None => md.push_str(" – |"),
                }
            }
            md.push('\n');
        }

        let _ = writeln!(md, "\n## Memory (RSS)");
        header(&mut md, "when");
        let _ = write!(md, "| idle, nothing cached |");
        for p in &peers {
            match self.peer(*p).and_then(|r| r.idle_rss_mb) {
                Some(v) => {
                    let _ = write!(md, " {v:.1} MB |");
                }
                None => md.push_str(" – |"),
            }
        }
        md.push('\n');
        for name in &all_names {
            let cached = self
                .peers
                .iter()
                .filter_map(|p| p.phases.iter().find(|ph| &ph.name == name))
                .find(|ph| ph.rss_after_mb.is_some())
                .map(|ph| ph.cached_objects);
            let Some(cached) = cached else { continue };
            let _ = write!(md, "| after {name}, {cached} objects cached |");
            for p in &peers {
                match self.phase(*p, name).and_then(|ph| ph.rss_after_mb) {
                    Some(v) => {
                        let _ = write!(md, " {v:.1} MB |");
                    }
                    None => md.push_str(" – |"),
                }
            }
            md.push('\n');
        }
        let _ = write!(md, "| peak during the initial list after a restart |");
        for p in &peers {
            match self.peer(*p).and_then(|r| r.restart.as_ref()) {
                Some(r) => {
                    let _ = write!(md, " {:.1} MB |", r.peak_rss_mb);
                }
                None => md.push_str(" – |"),
            }
        }
        md.push('\n');

        let _ = writeln!(md, "\n## Startup and failover");
        header(&mut md, "");
        type StartRow = (&'static str, fn(&PeerRun) -> Option<String>);
        let rows: [StartRow; 7] = [
            ("start → leading, empty cluster", |r| {
                r.startup_empty_s.map(|v| format!("{v:.2} s"))
            }),
            ("restart: objects existing", |r| {
                r.restart.as_ref().map(|x| x.objects.to_string())
            }),
            ("restart → leading", |r| {
                r.restart
                    .as_ref()
                    .map(|x| format!("{:.2} s", x.to_leader_s))
            }),
            ("restart → first reconcile (caches synced)", |r| {
                r.restart
                    .as_ref()
                    .map(|x| format!("{:.2} s", x.to_first_reconcile_s))
            }),
            ("restart → queue drained", |r| {
                r.restart.as_ref().map(|x| {
                    format!(
                        "{:.2} s ({} reconciles, {} writes, {} GETs)",
                        x.to_drained_s, x.reconciles, x.writes, x.gets
                    )
                })
            }),
            ("failover after SIGTERM", |r| {
                r.failover.as_ref().map(|f| format!("{:.2} s", f.sigterm_s))
            }),
            ("failover after SIGKILL", |r| {
                r.failover.as_ref().map(|f| format!("{:.2} s", f.sigkill_s))
            }),
        ];
        for (label, f) in rows {
            let _ = write!(md, "| {label} |");
            for p in &peers {
                let cell = self.peer(*p).and_then(f).unwrap_or_else(|| "–".into());
                let _ = write!(md, " {cell} |");
            }
            md.push('\n');
        }

        if !plots.is_empty() {
            let _ = writeln!(md, "\n## Plots\n");
            for (title, file) in plots {
                let _ = writeln!(md, "![{title}]({file})\n");
            }
        }
        md
    }
}

/// CPU seconds per 1000 reconciles in a phase.
pub fn cpu_per_1000(phase: &Phase) -> Option<f64> {
    let cpu = phase.cpu_s?;
    let r = phase.reconciles.filter(|r| *r > 0)?;
    Some(1000.0 * cpu / r as f64)
}
