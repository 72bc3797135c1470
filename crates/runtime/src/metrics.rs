//! Controller metrics, named after controller-runtime's so that the dashboards and alerts written
//! for Go operators apply unchanged.
//!
//! One [`Metrics`] per process owns a Prometheus registry; each controller gets its
//! [`ControllerMetrics`] from [`Metrics::controller`], which its work queue and workers
//! ([`crate::controller`]) report to:
//!
//! | call | series |
//! | --- | --- |
//! | [`ControllerMetrics::queue_added`] | `workqueue_adds_total`, `workqueue_depth` |
//! | [`ControllerMetrics::queue_retried`] | `workqueue_retries_total` |
//! | [`ControllerMetrics::queue_got`] | `workqueue_queue_duration_seconds`, `workqueue_depth` |
//! | [`ControllerMetrics::begin`] | `controller_runtime_active_workers`, `workqueue_unfinished_work_seconds`, `workqueue_longest_running_processor_seconds` |
//! | [`ControllerMetrics::finished`] | `controller_runtime_reconcile_total`, `controller_runtime_reconcile_errors_total`, `controller_runtime_reconcile_time_seconds`, `workqueue_work_duration_seconds` |
//!
//! [`Metrics::set_leader`] sets `leader_election_master_status`, and [`Metrics::render`] adds the
//! process metrics of Go's client (`process_cpu_seconds_total`, `process_resident_memory_bytes`,
//! …), read from `/proc/self` at each scrape.
//!
//! Workqueue series carry both `name` and `controller` labels (set to the controller's name), as
//! controller-runtime ≥ 0.19 does; queries that select on `name` alone keep working.

use std::collections::HashMap;
use std::fmt;
use std::sync::Arc;
use std::time::{Duration, Instant};

use parking_lot::Mutex;
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{
    DescriptorEncoder, EncodeLabelSet, EncodeMetric, prometheus_text,
};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
/// The gauge [`Metrics::gauge`] returns.
pub use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use crate::client::RequestCounter;

/// `Content-Type` of [`Metrics::render`]'s output: Prometheus text format 0.0.4.
pub const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// controller-runtime's `controller_runtime_reconcile_time_seconds` buckets.
const RECONCILE_TIME_BUCKETS: [f64; 40] = [
    0.005, 0.01, 0.025, 0.05, 0.1, 0.15, 0.2, 0.25, 0.3, 0.35, 0.4, 0.45, 0.5, 0.6, 0.7, 0.8, 0.9,
    1.0, 1.25, 1.5, 1.75, 2.0, 2.5, 3.0, 3.5, 4.0, 4.5, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0, 15.0, 20.0,
    25.0, 30.0, 40.0, 50.0, 60.0,
];

/// controller-runtime's workqueue buckets, `ExponentialBuckets(10e-9, 10, 12)`: 10 ns … 1000 s.
const WORKQUEUE_BUCKETS: [f64; 12] = [
    1e-8, 1e-7, 1e-6, 1e-5, 1e-4, 1e-3, 1e-2, 1e-1, 1.0, 10.0, 100.0, 1000.0,
];

fn reconcile_time_histogram() -> Histogram {
    Histogram::new(RECONCILE_TIME_BUCKETS)
}

fn workqueue_histogram() -> Histogram {
    Histogram::new(WORKQUEUE_BUCKETS)
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ControllerLabels {
    controller: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct ResultLabels {
    controller: String,
    result: &'static str,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct CauseLabels {
    cause: String,
    controller: String,
}

/// Workqueue labels; fields in Go's (alphabetical) order so the text matches a Go operator's.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct QueueLabels {
    controller: String,
    name: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NameLabels {
    name: String,
}

type HistogramFamily<L> = Family<L, Histogram, fn() -> Histogram>;
type FloatGauge = Gauge<f64, std::sync::atomic::AtomicU64>;

/// Every labelled family, shared between the registry and the controllers' handles.
#[derive(Clone, Debug)]
struct Families {
    reconcile_total: Family<ResultLabels, Counter>,
    reconcile_errors: Family<ControllerLabels, Counter>,
    errors_by_cause: Family<CauseLabels, Counter>,
    reconcile_time: HistogramFamily<ControllerLabels>,
    active_workers: Family<ControllerLabels, Gauge>,
    depth: Family<QueueLabels, Gauge>,
    adds: Family<QueueLabels, Counter>,
    retries: Family<QueueLabels, Counter>,
    queue_duration: HistogramFamily<QueueLabels>,
    work_duration: HistogramFamily<QueueLabels>,
    unfinished_work: Family<QueueLabels, FloatGauge>,
    longest_running: Family<QueueLabels, FloatGauge>,
}

impl Families {
    fn new() -> Self {
        Families {
            reconcile_total: Family::default(),
            reconcile_errors: Family::default(),
            errors_by_cause: Family::default(),
            reconcile_time: Family::new_with_constructor(reconcile_time_histogram),
            active_workers: Family::default(),
            depth: Family::default(),
            adds: Family::default(),
            retries: Family::default(),
            queue_duration: Family::new_with_constructor(workqueue_histogram),
            work_duration: Family::new_with_constructor(workqueue_histogram),
            unfinished_work: Family::default(),
            longest_running: Family::default(),
        }
    }

    /// Counter names are given without `_total`: prometheus-client appends it.
    fn register(&self, r: &mut Registry) {
        r.register(
            "controller_runtime_reconcile",
            "Total number of reconciliations per controller",
            self.reconcile_total.clone(),
        );
        r.register(
            "controller_runtime_reconcile_errors",
            "Total number of reconciliation errors per controller",
            self.reconcile_errors.clone(),
        );
        r.register(
            "operon_reconcile_errors_by_cause",
            "Total number of reconciliation errors per controller and cause",
            self.errors_by_cause.clone(),
        );
        r.register(
            "controller_runtime_reconcile_time_seconds",
            "Length of time per reconciliation per controller",
            self.reconcile_time.clone(),
        );
        r.register(
            "controller_runtime_active_workers",
            "Number of currently used workers per controller",
            self.active_workers.clone(),
        );
        r.register(
            "workqueue_depth",
            "Current depth of workqueue",
            self.depth.clone(),
        );
        r.register(
            "workqueue_adds",
            "Total number of adds handled by workqueue",
            self.adds.clone(),
        );
        r.register(
            "workqueue_retries",
            "Total number of retries handled by workqueue",
            self.retries.clone(),
        );
        r.register(
            "workqueue_queue_duration_seconds",
            "How long in seconds an item stays in workqueue before being requested",
            self.queue_duration.clone(),
        );
        r.register(
            "workqueue_work_duration_seconds",
            "How long in seconds processing an item from workqueue takes",
            self.work_duration.clone(),
        );
        r.register(
            "workqueue_unfinished_work_seconds",
            "How many seconds of work has been done that is in progress and hasn't been observed \
             by work_duration. Large values indicate stuck threads. One can deduce the number of \
             stuck threads by observing the rate at which this increases",
            self.unfinished_work.clone(),
        );
        r.register(
            "workqueue_longest_running_processor_seconds",
            "How many seconds has the longest running processor for workqueue been running",
            self.longest_running.clone(),
        );
    }
}

/// The metrics of one process: a Prometheus registry with the controllers' families, leader
/// election status and process metrics.
#[derive(Debug)]
pub struct Metrics {
    /// Behind a lock so that operators can add their own gauges after the fact ([`Self::gauge`]).
    registry: Mutex<Registry>,
    gauges: Mutex<HashMap<String, Gauge>>,
    families: Families,
    leader: Family<NameLabels, Gauge>,
    controllers: Mutex<HashMap<String, Arc<ControllerMetrics>>>,
    requests: RequestCounter,
}

impl Metrics {
    pub fn new() -> Arc<Metrics> {
        let mut registry = Registry::default();
        let families = Families::new();
        families.register(&mut registry);
        let leader = Family::<NameLabels, Gauge>::default();
        registry.register(
            "leader_election_master_status",
            "Gauge of if the reporting system is master of the relevant lease, 0 indicates \
             backup, 1 indicates master. 'name' is the string used to identify the lease. Please \
             make sure to group by name",
            leader.clone(),
        );
        registry.register_collector(Box::new(ProcessCollector));
        let requests = RequestCounter::default();
        registry.register_collector(Box::new(RequestCollector(requests.clone())));
        Arc::new(Metrics {
            registry: Mutex::new(registry),
            gauges: Mutex::new(HashMap::new()),
            families,
            leader,
            controllers: Mutex::new(HashMap::new()),
            requests,
        })
    }

    /// The counter behind `rest_client_requests_total`: layer the operator's client with it
    /// ([`crate::client::counted_client`]).
    pub fn request_counter(&self) -> RequestCounter {
        self.requests.clone()
    }

    /// The metrics of controller `name` (label `controller=<name>`, workqueue `name=<name>`);
    /// the same `Arc` for the same name. Its series appear at 0 from this call on, so rates and
    /// absence alerts work before the first reconcile.
    pub fn controller(self: &Arc<Self>, name: &str) -> Arc<ControllerMetrics> {
        self.controllers
            .lock()
            .entry(name.to_string())
            .or_insert_with(|| Arc::new(ControllerMetrics::with_families(&self.families, name)))
            .clone()
    }

    /// An operator's own gauge `name` (no labels), registered on first use; the same gauge for
    /// the same name, so building a controller twice doesn't register it twice.
    pub fn gauge(&self, name: &str, help: &str) -> Gauge {
        self.gauges
            .lock()
            .entry(name.to_owned())
            .or_insert_with(|| {
                let gauge = Gauge::default();
                self.registry.lock().register(name, help, gauge.clone());
                gauge
            })
            .clone()
    }

    /// `leader_election_master_status{name}`: 1 while this process holds lease `name`, else 0.
    pub fn set_leader(&self, name: &str, leading: bool) {
        self.leader
            .get_or_create(&NameLabels {
                name: name.to_string(),
            })
            .set(i64::from(leading));
    }

    /// The Prometheus text exposition ([`CONTENT_TYPE`]) of every metric, process metrics
    /// included.
    pub fn render(&self) -> String {
        let controllers: Vec<_> = self.controllers.lock().values().cloned().collect();
        for c in controllers {
            c.update_in_flight_gauges();
        }
        let mut out = String::new();
        if let Err(e) = prometheus_text::encode(&mut out, &self.registry.lock()) {
            // Only a collector can fail; what was written before it is still worth serving.
            tracing::warn!(error = %e, "encoding metrics");
        }
        out
    }
}

/// One controller's metrics, from [`Metrics::controller`].
///
/// [`Default`] makes a standalone instance, registered nowhere: its counters work (tests read
/// them with [`reconciles`](Self::reconciles) and [`errors`](Self::errors)) but no scrape shows
/// them.
pub struct ControllerMetrics {
    name: String,
    reconcile_success: Counter,
    reconcile_error: Counter,
    reconcile_errors: Counter,
    errors_by_cause: Family<CauseLabels, Counter>,
    reconcile_time: Histogram,
    active_workers: Gauge,
    depth: Gauge,
    adds: Counter,
    retries: Counter,
    queue_duration: Histogram,
    work_duration: Histogram,
    unfinished_work: FloatGauge,
    longest_running: FloatGauge,
    in_flight: Arc<Mutex<InFlight>>,
}

#[derive(Debug, Default)]
struct InFlight {
    next: u64,
    started: HashMap<u64, Instant>,
}

impl Default for ControllerMetrics {
    fn default() -> Self {
        ControllerMetrics::with_families(&Families::new(), "")
    }
}

impl fmt::Debug for ControllerMetrics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ControllerMetrics")
            .field("name", &self.name)
            .field("reconciles", &self.reconciles())
            .field("errors", &self.errors())
            .field("depth", &self.depth())
            .field("active_workers", &self.active_workers())
            .finish_non_exhaustive()
    }
}

impl ControllerMetrics {
    fn with_families(f: &Families, name: &str) -> Self {
        let controller = ControllerLabels {
            controller: name.to_string(),
        };
        let queue = QueueLabels {
            controller: name.to_string(),
            name: name.to_string(),
        };
        let result = |result| ResultLabels {
            controller: name.to_string(),
            result,
        };
        ControllerMetrics {
            name: name.to_string(),
            reconcile_success: f.reconcile_total.get_or_create_owned(&result("success")),
            reconcile_error: f.reconcile_total.get_or_create_owned(&result("error")),
            reconcile_errors: f.reconcile_errors.get_or_create_owned(&controller),
            errors_by_cause: f.errors_by_cause.clone(),
            reconcile_time: f.reconcile_time.get_or_create_owned(&controller),
            active_workers: f.active_workers.get_or_create_owned(&controller),
            depth: f.depth.get_or_create_owned(&queue),
            adds: f.adds.get_or_create_owned(&queue),
            retries: f.retries.get_or_create_owned(&queue),
            queue_duration: f.queue_duration.get_or_create_owned(&queue),
            work_duration: f.work_duration.get_or_create_owned(&queue),
            unfinished_work: f.unfinished_work.get_or_create_owned(&queue),
            longest_running: f.longest_running.get_or_create_owned(&queue),
            in_flight: Arc::default(),
        }
    }

    /// The controller name of the labels (empty for a [`Default`] instance).
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Reconciles finished, successful or not.
    pub fn reconciles(&self) -> u64 {
        self.reconcile_success.get() + self.reconcile_error.get()
    }

    /// Reconciles finished with an error.
    pub fn errors(&self) -> u64 {
        self.reconcile_error.get()
    }

    /// Reconciles that failed with `cause` (the `cause` label of
    /// `operon_reconcile_errors_by_cause_total`; `"panic"` counts reconciles that panicked).
    /// Asking registers the series, at 0 when there was none.
    pub fn errors_of(&self, cause: &str) -> u64 {
        self.errors_by_cause
            .get_or_create(&CauseLabels {
                cause: cause.to_string(),
                controller: self.name.clone(),
            })
            .get()
    }

    /// A key entered a [`WorkQueue`](crate::controller::queue::WorkQueue), which now has
    /// `depth` keys waiting (`workqueue_adds_total`, `workqueue_depth`).
    pub fn queue_added(&self, depth: usize) {
        self.adds.inc();
        self.depth.set(gauge_value(depth));
    }

    /// `added` delayed keys became due and entered the queue: `depth` keys wait now.
    pub fn queue_added_many(&self, added: usize, depth: usize) {
        self.adds.inc_by(u64::try_from(added).unwrap_or(u64::MAX));
        self.depth.set(gauge_value(depth));
    }

    /// A worker took a key that waited `waited`; `depth` keys still wait
    /// (`workqueue_queue_duration_seconds`).
    pub fn queue_got(&self, waited: Duration, depth: usize) {
        self.queue_duration.observe(waited.as_secs_f64());
        self.depth.set(gauge_value(depth));
    }

    /// A key is requeued after an error (`workqueue_retries_total`; the add is counted when it
    /// is due).
    pub fn queue_retried(&self) {
        self.retries.inc();
    }

    /// A reconcile begins (of a key a work queue handed out, which observed the wait): the
    /// worker counts in `controller_runtime_active_workers` and the in-flight gauges until the
    /// timer is passed to [`finished`](Self::finished) or dropped.
    pub fn begin(&self) -> ReconcileTimer {
        let now = Instant::now();
        let id = {
            let mut in_flight = self.in_flight.lock();
            let id = in_flight.next;
            in_flight.next += 1;
            in_flight.started.insert(id, now);
            self.active_workers
                .set(gauge_value(in_flight.started.len()));
            id
        };
        ReconcileTimer {
            id,
            start: now,
            in_flight: self.in_flight.clone(),
            active_workers: self.active_workers.clone(),
        }
    }

    /// The reconcile timed by `timer` ended, with an error whose cause is `error` (a short,
    /// bounded label value such as `"conflict"` or `"quota"`: every distinct cause is a series of
    /// `operon_reconcile_errors_by_cause_total`).
    pub fn finished(&self, timer: ReconcileTimer, error: Option<&str>) {
        let took = timer.start.elapsed().as_secs_f64();
        self.reconcile_time.observe(took);
        self.work_duration.observe(took);
        match error {
            None => {
                self.reconcile_success.inc();
            }
            Some(cause) => {
                self.reconcile_error.inc();
                self.reconcile_errors.inc();
                self.errors_by_cause
                    .get_or_create(&CauseLabels {
                        cause: cause.to_string(),
                        controller: self.name.clone(),
                    })
                    .inc();
            }
        };
        drop(timer);
    }

    /// Distinct keys waiting (`workqueue_depth`).
    pub fn depth(&self) -> i64 {
        self.depth.get()
    }

    /// Reconciles running (`controller_runtime_active_workers`).
    pub fn active_workers(&self) -> i64 {
        self.active_workers.get()
    }

    /// Non-duplicate adds (`workqueue_adds_total`).
    pub fn adds(&self) -> u64 {
        self.adds.get()
    }

    /// Error requeues (`workqueue_retries_total`).
    pub fn retries(&self) -> u64 {
        self.retries.get()
    }

    /// Sets the gauges that depend on the time now: `workqueue_unfinished_work_seconds` (the
    /// sum of the running reconciles' ages) and `workqueue_longest_running_processor_seconds`.
    fn update_in_flight_gauges(&self) {
        let now = Instant::now();
        let in_flight = self.in_flight.lock();
        let ages = in_flight
            .started
            .values()
            .map(|s| now.saturating_duration_since(*s).as_secs_f64());
        let (sum, max) = ages.fold((0.0, 0.0), |(sum, max): (f64, f64), a| {
            (sum + a, max.max(a))
        });
        self.unfinished_work.set(sum);
        self.longest_running.set(max);
    }
}

fn gauge_value(n: usize) -> i64 {
    i64::try_from(n).unwrap_or(i64::MAX)
}

/// A running reconcile, from [`ControllerMetrics::started`]. Pass it to
/// [`ControllerMetrics::finished`]; dropped unfinished (a cancelled reconcile), it still stops
/// counting as an active worker, but no result or duration is recorded.
#[must_use = "pass the timer to ControllerMetrics::finished"]
pub struct ReconcileTimer {
    id: u64,
    start: Instant,
    in_flight: Arc<Mutex<InFlight>>,
    active_workers: Gauge,
}

impl ReconcileTimer {
    /// Time since the reconcile started.
    pub fn elapsed(&self) -> Duration {
        self.start.elapsed()
    }
}

impl fmt::Debug for ReconcileTimer {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("ReconcileTimer")
            .field("elapsed", &self.elapsed())
            .finish()
    }
}

impl Drop for ReconcileTimer {
    fn drop(&mut self) {
        let mut in_flight = self.in_flight.lock();
        in_flight.started.remove(&self.id);
        self.active_workers
            .set(gauge_value(in_flight.started.len()));
    }
}

/// The process metrics of Go's Prometheus client, read from `/proc/self` at each scrape
/// (`procfs`); on a system without procfs, or for a value that can't be read, the series is
/// left out.
#[derive(Debug)]
struct ProcessCollector;

#[derive(Debug, Default, PartialEq)]
struct ProcessStats {
    cpu_seconds: Option<f64>,
    virtual_memory_bytes: Option<u64>,
    resident_memory_bytes: Option<u64>,
    start_time_seconds: Option<f64>,
    open_fds: Option<u64>,
    max_fds: Option<u64>,
}

impl ProcessStats {
    #[cfg(target_os = "linux")]
    fn read() -> Self {
        use procfs::WithCurrentSystemInfo;
        use procfs::process::{LimitValue, Process};
        let mut stats = ProcessStats::default();
        let Ok(me) = Process::myself() else {
            return stats;
        };
        // USER_HZ as the kernel reports it (sysconf), not assumed.
        let ticks = procfs::ticks_per_second() as f64;
        if let Ok(stat) = me.stat() {
            stats.cpu_seconds = Some((stat.utime + stat.stime) as f64 / ticks);
            stats.virtual_memory_bytes = Some(stat.vsize);
            stats.resident_memory_bytes = Some(stat.rss_bytes().get());
            stats.start_time_seconds = procfs::boot_time_secs()
                .ok()
                .map(|boot| boot as f64 + stat.starttime as f64 / ticks);
        }
        if let Ok(limits) = me.limits() {
            stats.max_fds = match limits.max_open_files.soft_limit {
                LimitValue::Value(v) => Some(v),
                LimitValue::Unlimited => None,
            };
        }
        stats.open_fds = me.fd_count().ok().map(|n| n as u64);
        stats
    }

    #[cfg(not(target_os = "linux"))]
    fn read() -> Self {
        ProcessStats::default()
    }
}

/// Resident memory (bytes) and CPU time (user + system seconds) of process `pid`, read from
/// `/proc` as the process metrics are (benchmarks read other processes with it).
#[cfg(target_os = "linux")]
pub fn process_usage(pid: u32) -> Option<(u64, f64)> {
    use procfs::WithCurrentSystemInfo;
    let stat = procfs::process::Process::new(i32::try_from(pid).ok()?)
        .ok()?
        .stat()
        .ok()?;
    let cpu = (stat.utime + stat.stime) as f64 / procfs::ticks_per_second() as f64;
    Some((stat.rss_bytes().get(), cpu))
}

#[cfg(not(target_os = "linux"))]
pub fn process_usage(_pid: u32) -> Option<(u64, f64)> {
    None
}

/// Heap bytes in use, as glibc counts them: RSS also holds freed pages the allocator keeps, so
/// it can't tell a leak from fragmentation; this can.
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn heap_inuse_bytes() -> Option<u64> {
    // SAFETY: mallinfo2 takes no arguments, only reads the allocator's counters (under its
    // arena locks) and returns a plain struct by value.
    #[allow(unsafe_code)]
    let info = unsafe { libc::mallinfo2() };
    u64::try_from(info.uordblks + info.hblkhd).ok()
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn heap_inuse_bytes() -> Option<u64> {
    None
}

impl Collector for ProcessCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let stats = ProcessStats::read();
        if let Some(v) = stats.cpu_seconds {
            let m = ConstCounter::new(v);
            // Counter: the encoder appends `_total`.
            m.encode(encoder.encode_descriptor(
                "process_cpu_seconds",
                "Total user and system CPU time spent in seconds.",
                None,
                m.metric_type(),
            )?)?;
        }
        // Whole numbers print as such ("6", not "6.0"), like Go's client.
        let whole = [
            (
                "process_max_fds",
                "Maximum number of open file descriptors.",
                stats.max_fds,
            ),
            (
                "process_open_fds",
                "Number of open file descriptors.",
                stats.open_fds,
            ),
            (
                "process_resident_memory_bytes",
                "Resident memory size in bytes.",
                stats.resident_memory_bytes,
            ),
        ];
        for (name, help, value) in whole {
            if let Some(v) = value {
                let m = ConstGauge::new(v);
                m.encode(encoder.encode_descriptor(name, help, None, m.metric_type())?)?;
            }
        }
        if let Some(v) = heap_inuse_bytes() {
            let m = ConstGauge::new(v);
            m.encode(encoder.encode_descriptor(
                "operon_heap_inuse_bytes",
                "Bytes the allocator has handed out and not taken back (glibc's mallinfo2 \
                 uordblks + hblkhd), the counterpart of Go's go_memstats_heap_inuse_bytes.",
                None,
                m.metric_type(),
            )?)?;
        }
        if let Some(v) = stats.start_time_seconds {
            let m = ConstGauge::new(v);
            m.encode(encoder.encode_descriptor(
                "process_start_time_seconds",
                "Start time of the process since unix epoch in seconds.",
                None,
                m.metric_type(),
            )?)?;
        }
        if let Some(v) = stats.virtual_memory_bytes {
            let m = ConstGauge::new(v);
            m.encode(encoder.encode_descriptor(
                "process_virtual_memory_bytes",
                "Virtual memory size in bytes.",
                None,
                m.metric_type(),
            )?)?;
        }
        Ok(())
    }
}

/// `rest_client_requests_total{method,verb,resource}`: client-go's name and `method` label, so
/// `sum by (method)` queries work; `verb` and `resource` (the apiserver's) replace client-go's
/// `code` and `host`, which say less about what an operator does.
#[derive(Debug)]
struct RequestCollector(RequestCounter);

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct RequestLabels {
    method: &'static str,
    verb: String,
    resource: String,
}

impl Collector for RequestCollector {
    fn encode(&self, mut encoder: DescriptorEncoder) -> Result<(), fmt::Error> {
        let counts = self.0.snapshot();
        let family = Family::<RequestLabels, Counter>::default();
        for (verb, resource, n) in counts.iter() {
            let method = match verb {
                "create" => "POST",
                "update" => "PUT",
                "patch" => "PATCH",
                "delete" | "deletecollection" => "DELETE",
                _ => "GET",
            };
            family
                .get_or_create(&RequestLabels {
                    method,
                    verb: verb.to_string(),
                    resource: resource.to_string(),
                })
                .inc_by(n);
        }
        // Counter: the encoder appends `_total`.
        family.encode(encoder.encode_descriptor(
            "rest_client_requests",
            "Number of HTTP requests, partitioned by method, verb and resource.",
            None,
            family.metric_type(),
        )?)
    }
}

/// Seconds since the Unix epoch now (for tests comparing `process_start_time_seconds`).
#[cfg(test)]
fn now_unix() -> f64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value of the series whose line starts with `series ` (name and labels exactly).
    fn value(text: &str, series: &str) -> Option<f64> {
        text.lines()
            .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
            .and_then(|v| v.parse().ok())
    }

    fn has_line(text: &str, line: &str) -> bool {
        text.lines().any(|l| l == line)
    }

    #[test]
    fn reads_a_process_usage_by_pid() {
        let usage = process_usage(std::process::id());
        assert!(
            usage.is_some_and(|(rss, cpu)| rss > 0 && cpu >= 0.0),
            "{usage:?}"
        );
        assert!(process_usage(u32::MAX).is_none());
    }

    #[test]
    fn an_operators_own_gauge_is_registered_once() {
        let metrics = Metrics::new();
        metrics
            .gauge("service_ca_expiry_time_seconds", "Expiry.")
            .set(42);
        // The same name again is the same gauge, not a second registration.
        metrics
            .gauge("service_ca_expiry_time_seconds", "Expiry.")
            .set(43);
        let text = metrics.render();
        assert_eq!(
            value(&text, "service_ca_expiry_time_seconds"),
            Some(43.0),
            "{text}"
        );
        assert_eq!(
            text.matches("# TYPE service_ca_expiry_time_seconds gauge")
                .count(),
            1,
            "{text}"
        );
    }

    #[test]
    fn client_requests_by_method_verb_and_resource() {
        let metrics = Metrics::new();
        let counter = metrics.request_counter();
        for (method, uri) in [
            (http::Method::POST, "/api/v1/namespaces/a/pods"),
            (http::Method::POST, "/api/v1/namespaces/b/pods"),
            (http::Method::GET, "/api/v1/pods?watch=true"),
        ] {
            let mut req = http::Request::new(());
            *req.method_mut() = method;
            *req.uri_mut() = uri.parse().unwrap_or_default();
            counter.record(&req);
        }
        let text = metrics.render();
        assert_eq!(
            value(
                &text,
                r#"rest_client_requests_total{method="POST",verb="create",resource="pods"}"#
            ),
            Some(2.0),
            "{text}"
        );
        assert_eq!(
            value(
                &text,
                r#"rest_client_requests_total{method="GET",verb="watch",resource="pods"}"#
            ),
            Some(1.0),
            "{text}"
        );
    }

    #[test]
    fn reconcile_counters_have_controller_runtime_names() {
        let metrics = Metrics::new();
        let c = metrics.controller("podrequest");
        for (depth, error) in [(2, None), (1, None), (0, Some("conflict"))] {
            c.queue_added(depth + 1);
            c.queue_got(Duration::from_millis(1), depth);
            let timer = c.begin();
            c.finished(timer, error);
        }
        let text = metrics.render();
        for line in [
            r#"controller_runtime_reconcile_total{controller="podrequest",result="success"} 2"#,
            r#"controller_runtime_reconcile_total{controller="podrequest",result="error"} 1"#,
            r#"controller_runtime_reconcile_errors_total{controller="podrequest"} 1"#,
            r#"operon_reconcile_errors_by_cause_total{cause="conflict",controller="podrequest"} 1"#,
            r#"controller_runtime_reconcile_time_seconds_count{controller="podrequest"} 3"#,
            r#"controller_runtime_reconcile_time_seconds_bucket{controller="podrequest",le="60"} 3"#,
            r#"controller_runtime_reconcile_time_seconds_bucket{controller="podrequest",le="+Inf"} 3"#,
            r#"controller_runtime_active_workers{controller="podrequest"} 0"#,
            r#"workqueue_adds_total{controller="podrequest",name="podrequest"} 3"#,
            r#"workqueue_depth{controller="podrequest",name="podrequest"} 0"#,
            r#"workqueue_retries_total{controller="podrequest",name="podrequest"} 0"#,
            r#"workqueue_queue_duration_seconds_count{controller="podrequest",name="podrequest"} 3"#,
            r#"workqueue_work_duration_seconds_count{controller="podrequest",name="podrequest"} 3"#,
            "# TYPE controller_runtime_reconcile_total counter",
            "# TYPE controller_runtime_reconcile_time_seconds histogram",
            "# TYPE workqueue_depth gauge",
        ] {
            assert!(
                has_line(&text, line),
                "missing {line:?} in:
{text}"
            );
        }
        assert!(!text.contains("_total_total"), "{text}");
        assert_eq!((c.reconciles(), c.errors()), (3, 1));
    }

    #[test]
    fn series_exist_at_zero_once_a_controller_is_known() {
        let metrics = Metrics::new();
        let _ = metrics.controller("idle");
        let text = metrics.render();
        for line in [
            r#"controller_runtime_reconcile_total{controller="idle",result="success"} 0"#,
            r#"controller_runtime_reconcile_total{controller="idle",result="error"} 0"#,
            r#"controller_runtime_reconcile_errors_total{controller="idle"} 0"#,
            r#"workqueue_depth{controller="idle",name="idle"} 0"#,
        ] {
            assert!(has_line(&text, line), "missing {line:?} in:\n{text}");
        }
    }

    #[test]
    fn the_same_name_is_the_same_controller() {
        let metrics = Metrics::new();
        let a = metrics.controller("x");
        let b = metrics.controller("x");
        assert!(Arc::ptr_eq(&a, &b));
        assert!(!Arc::ptr_eq(&a, &metrics.controller("y")));
    }

    #[test]
    fn in_flight_reconciles_show_as_unfinished_work() {
        let metrics = Metrics::new();
        let c = metrics.controller("slow");
        let timer = c.begin();
        std::thread::sleep(Duration::from_millis(10));
        let text = metrics.render();
        let labels = r#"{controller="slow",name="slow"}"#;
        let longest = value(
            &text,
            &format!("workqueue_longest_running_processor_seconds{labels}"),
        );
        assert!(longest.unwrap_or_default() >= 0.01, "{text}");
        assert!(has_line(
            &text,
            r#"controller_runtime_active_workers{controller="slow"} 1"#
        ));
        c.finished(timer, None);
        let text = metrics.render();
        assert_eq!(
            value(&text, &format!("workqueue_unfinished_work_seconds{labels}")),
            Some(0.0)
        );
    }

    #[test]
    fn leader_status() {
        let metrics = Metrics::new();
        metrics.set_leader("pod-operator", true);
        assert!(has_line(
            &metrics.render(),
            r#"leader_election_master_status{name="pod-operator"} 1"#
        ));
        metrics.set_leader("pod-operator", false);
        assert!(has_line(
            &metrics.render(),
            r#"leader_election_master_status{name="pod-operator"} 0"#
        ));
    }

    #[test]
    fn process_metrics_are_rendered() {
        if !std::path::Path::new("/proc/self/stat").exists() {
            return; // not Linux
        }
        let text = Metrics::new().render();
        for name in [
            "process_cpu_seconds_total",
            "process_resident_memory_bytes",
            "process_virtual_memory_bytes",
            "process_open_fds",
            "process_max_fds",
            "process_start_time_seconds",
        ] {
            let v = value(&text, name);
            assert!(v.is_some_and(|v| v >= 0.0), "{name} missing in:\n{text}");
            assert!(
                has_line(
                    &text,
                    &format!(
                        "# TYPE {name} {}",
                        if name.ends_with("_total") {
                            "counter"
                        } else {
                            "gauge"
                        }
                    )
                ),
                "{text}"
            );
        }
        assert!(value(&text, "process_resident_memory_bytes").unwrap_or_default() > 0.0);
        #[cfg(target_env = "gnu")]
        {
            // A live allocation moves the count by about its size. The other tests of this
            // process allocate and free meanwhile (kilobytes): allow them 4 MiB.
            let before = value(&Metrics::new().render(), "operon_heap_inuse_bytes");
            let block = vec![1u8; 64 << 20];
            let during = value(&Metrics::new().render(), "operon_heap_inuse_bytes");
            assert_eq!(block.len(), 64 << 20);
            let (before, during) = (before.unwrap_or_default(), during.unwrap_or_default());
            assert!(
                during - before >= 60.0 * 1024.0 * 1024.0,
                "{before} → {during}"
            );
        }
        let start = value(&text, "process_start_time_seconds").unwrap_or_default();
        assert!(
            start > 1.0e9 && start <= now_unix() + 1.0,
            "start time {start}"
        );
    }
}
