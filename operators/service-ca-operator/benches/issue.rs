//! Benchmark: serving certificates for N annotated Services, against creating N Secrets directly.
//!
//! Machines are noisy, so every figure that matters is a ratio against a baseline measured in the
//! same process on the same control plane:
//!
//! 1. signing throughput on one thread, in certificates per CPU-second of that thread (ECDSA
//!    P-256 and RSA 2048, each leaf signed by a CA of its own algorithm, as the operator does),
//!    measured before the control plane starts;
//! 2. baseline: N `kubernetes.io/tls` Secrets created directly by an admin client, C at a time,
//!    each the size of an issued one (a certificate chain and key issued once with `pki`);
//! 3. Services alone: the same N annotated Services, C at a time, where no operator looks;
//! 4. operator: service-ca-operator in-process (C reconciles at once), N annotated Services
//!    created C at a time; timed from the first create until all N serving Secrets exist.
//!
//! Printed besides: the CPU time of this process and of each control plane process per phase,
//! the operator's requests (writes per Service) and reconciles, and what counting cost.
//!
//! `cargo bench -p service-ca-operator --bench issue` (or `cargo xtask bench service-ca`);
//! `OPERON_BENCH_N` (default 1000) Services, `OPERON_BENCH_ECDSA_CERTS` (2000) and
//! `OPERON_BENCH_RSA_CERTS` (20) certificates, `OPERON_BENCH_KEY` the operator's key algorithm
//! (`ecdsa-p256`, its default, or `rsa-2048`). Without `--bench` (as `cargo test --all-targets`
//! runs it) it is a quick smoke run: 20 Services, 50 and 2 certificates.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, bail, ensure};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Secret, Service, ServicePort, ServiceSpec};
use k8s_openapi::api::networking::v1::{ServiceCIDR, ServiceCIDRSpec};
use kube::api::{Api, DeleteParams, ListParams, ObjectMeta, PostParams};
use kube::{Client, Resource, ResourceExt};
use nix::time::{ClockId, clock_gettime};
use operon_runtime::admin::Readiness;
use operon_runtime::client::{RequestCounter, RequestCounts, counted_client};
use operon_runtime::manager::Manager;
use operon_runtime::metrics::Metrics;
use service_ca_operator::controller::{self, Settings};
use service_ca_operator::pki::{
    DEFAULT_CA_LIFETIME, DEFAULT_CLUSTER_DOMAIN, DEFAULT_SERVING_CERT_LIFETIME, KeyAlgorithm,
    ServingCertRequest, SigningCa,
};
use service_ca_operator::{
    MANAGED_BY, MANAGED_BY_LABEL, ORIGINATING_SERVICE_NAME, SERVING_CERT_SECRET_NAME,
    SERVING_CERT_SIGNED_BY,
};
use time::OffsetDateTime;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

/// Requests in flight at once, for the baseline and the Service creation alike: the operator's
/// default `concurrency` (reconciles at once per controller).
const CONCURRENCY: usize = 10;
/// How often the Secrets (then the Service annotations) are counted.
const POLL: Duration = Duration::from_millis(200);
/// A run that takes longer than this has failed.
const DEADLINE: Duration = Duration::from_secs(600);
/// The operator's startup (CA generated, caches listed).
const STARTUP_DEADLINE: Duration = Duration::from_secs(120);
/// An extra Service range: the local control plane's own (`10.0.0.0/24`) holds 253 ClusterIPs.
const EXTRA_SERVICE_CIDR: &str = "10.96.0.0/16";
/// A Service UID for certificates issued outside the cluster (the value only fills the
/// certificate's extension and the Secret's annotation).
const SAMPLE_UID: &str = "6f1d3b0c-8a52-4c1e-9d7a-2b5e4f6a8c90";
const TAG: &str = "bench service-ca:";

struct Params {
    n: usize,
    /// The operator's key algorithm (`OPERON_BENCH_KEY`), for the leaves and its CA.
    key: KeyAlgorithm,
    ecdsa_certs: usize,
    rsa_certs: usize,
}

fn env_usize(name: &str, default: usize) -> Result<usize> {
    match std::env::var(name) {
        Ok(v) if !v.trim().is_empty() => v
            .trim()
            .parse()
            .with_context(|| format!("{name}={v:?} is not a number")),
        _ => Ok(default),
    }
}

fn env_key() -> Result<KeyAlgorithm> {
    match std::env::var("OPERON_BENCH_KEY").unwrap_or_default().trim() {
        "" | "ecdsa-p256" => Ok(KeyAlgorithm::EcdsaP256),
        "rsa-2048" => Ok(KeyAlgorithm::Rsa2048),
        other => bail!("OPERON_BENCH_KEY={other:?}: use ecdsa-p256 (default) or rsa-2048"),
    }
}

fn main() -> Result<()> {
    // `cargo bench` passes `--bench`; `cargo test --all-targets` runs this without it.
    let full = std::env::args().any(|a| a == "--bench");
    let (n, ecdsa, rsa) = if full { (1000, 2000, 20) } else { (20, 50, 2) };
    let params = Params {
        n: env_usize("OPERON_BENCH_N", n)?,
        key: env_key()?,
        ecdsa_certs: env_usize("OPERON_BENCH_ECDSA_CERTS", ecdsa)?,
        rsa_certs: env_usize("OPERON_BENCH_RSA_CERTS", rsa)?,
    };
    ensure!(
        params.n > 0 && params.ecdsa_certs > 0 && params.rsa_certs > 0,
        "the counts must be positive"
    );
    if std::env::var_os("RUST_LOG").is_some() {
        operon_runtime::telemetry::init(operon_runtime::telemetry::LogFormat::Text, "info");
    }
    let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
    println!(
        "{TAG} {} run: N={} Services, C={CONCURRENCY}, operator keys {:?}, {cores} cores",
        if full { "full" } else { "smoke (no --bench)" },
        params.n,
        params.key
    );

    // Signing first, while nothing else runs on the machine.
    eprintln!(
        "{TAG} signing {} ECDSA P-256 certificates…",
        params.ecdsa_certs
    );
    let ecdsa = signing_rate(KeyAlgorithm::EcdsaP256, params.ecdsa_certs)?;
    eprintln!("{TAG} signing {} RSA 2048 certificates…", params.rsa_certs);
    let rsa = signing_rate(KeyAlgorithm::Rsa2048, params.rsa_certs)?;

    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let cluster = runtime.block_on(cluster(params.n, params.key))?;

    report(&params, &ecdsa, &rsa, &cluster);
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// Signing throughput

struct Rate {
    certs: usize,
    cpu: Duration,
    wall: Duration,
}

impl Rate {
    fn per_cpu_second(&self) -> f64 {
        self.certs as f64 / self.cpu.as_secs_f64().max(1e-9)
    }
}

fn thread_cpu() -> Result<Duration> {
    Ok(clock_gettime(ClockId::CLOCK_THREAD_CPUTIME_ID)?.into())
}

fn process_cpu() -> Result<Duration> {
    Ok(clock_gettime(ClockId::CLOCK_PROCESS_CPUTIME_ID)?.into())
}

fn request<'a>(
    service_name: &'a str,
    namespace: &'a str,
    key: KeyAlgorithm,
) -> ServingCertRequest<'a> {
    ServingCertRequest {
        service_name,
        namespace,
        service_uid: SAMPLE_UID,
        headless: false,
        cluster_domain: DEFAULT_CLUSTER_DOMAIN,
        lifetime: DEFAULT_SERVING_CERT_LIFETIME,
        key,
    }
}

/// Issues `count` serving certificates (fresh key, signed by a CA of the same algorithm) on this
/// thread, measuring this thread's CPU time.
fn signing_rate(key: KeyAlgorithm, count: usize) -> Result<Rate> {
    let now = OffsetDateTime::now_utc();
    let ca = SigningCa::generate_with(key, DEFAULT_CA_LIFETIME, now)?;
    let names: Vec<String> = (0..count).map(|i| format!("s{i}")).collect();
    // Warm-up: lazy initialisation in ring and rcgen stays out of the figure.
    std::hint::black_box(ca.issue(&request("warm-up", "bench", key), now)?);
    let (cpu0, t0) = (thread_cpu()?, Instant::now());
    for name in &names {
        std::hint::black_box(ca.issue(&request(name, "bench", key), now)?);
    }
    Ok(Rate {
        certs: count,
        cpu: thread_cpu()?.saturating_sub(cpu0),
        wall: t0.elapsed(),
    })
}

// ---------------------------------------------------------------------------------------------
// On the control plane

/// CPU time of each control plane process (`/proc/<pid>/stat` utime + stime) by component;
/// `None` for an existing cluster (`USE_EXISTING_CLUSTER`).
fn control_plane_cpu(env: &operon_envtest::TestEnv) -> Option<BTreeMap<String, Duration>> {
    let tick = nix::unistd::sysconf(nix::unistd::SysconfVar::CLK_TCK)
        .ok()
        .flatten()
        .filter(|t| *t > 0)
        .unwrap_or(100) as f64;
    let cp = env.control_plane()?;
    let mut out = BTreeMap::new();
    for (component, pid) in cp.pids() {
        let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
            continue;
        };
        // After the command name (in parentheses, may hold spaces): state is field 3, utime 14,
        // stime 15.
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let ticks: u64 = [11, 12]
            .iter()
            .filter_map(|&i| fields.get(i).and_then(|f| f.parse::<u64>().ok()))
            .sum();
        *out.entry(component).or_default() += Duration::from_secs_f64(ticks as f64 / tick);
    }
    Some(out)
}

/// Process and control plane CPU at one moment, or spent between two.
#[derive(Clone)]
struct Cpu {
    process: Duration,
    control_plane: Option<BTreeMap<String, Duration>>,
}

impl Cpu {
    fn now(env: &operon_envtest::TestEnv) -> Result<Cpu> {
        Ok(Cpu {
            process: process_cpu()?,
            control_plane: control_plane_cpu(env),
        })
    }

    fn control_plane_total(&self) -> Option<Duration> {
        self.control_plane.as_ref().map(|c| c.values().sum())
    }

    fn since(self, earlier: &Cpu) -> Cpu {
        let control_plane =
            self.control_plane
                .zip(earlier.control_plane.as_ref())
                .map(|(now, before)| {
                    now.into_iter()
                        .map(|(c, t)| {
                            let t0 = before.get(&c).copied().unwrap_or_default();
                            (c, t.saturating_sub(t0))
                        })
                        .collect()
                });
        Cpu {
            process: self.process.saturating_sub(earlier.process),
            control_plane,
        }
    }
}

struct ClusterRun {
    baseline: Duration,
    baseline_cpu: Cpu,
    services_alone: Duration,
    services_alone_cpu: Cpu,
    secret_bytes: usize,
    startup: Duration,
    startup_requests: RequestCounts,
    services_created: Duration,
    /// Serving Secrets at the first count after the last Service was created.
    secrets_when_created: usize,
    secrets_ready: Duration,
    settled: Duration,
    operator_cpu: Cpu,
    requests: RequestCounts,
    reconciles: u64,
    /// Secret counts while waiting, and the control plane CPU of one count of all N.
    polls: usize,
    list_cpu: Option<Duration>,
}

/// Namespaces and cluster objects to remove at the end, whatever happened.
struct Cleanup {
    client: Client,
    namespaces: Vec<String>,
    service_cidr: Option<String>,
}

impl Cleanup {
    async fn run(self) {
        let dp = DeleteParams::background();
        let namespaces: Api<Namespace> = Api::all(self.client.clone());
        for ns in &self.namespaces {
            if let Err(e) = namespaces.delete(ns, &dp).await {
                eprintln!("{TAG} warning: deleting namespace {ns}: {e}");
            }
        }
        // Removed by the apiserver once the last ClusterIP in it is released.
        if let Some(name) = &self.service_cidr {
            let cidrs: Api<ServiceCIDR> = Api::all(self.client.clone());
            if let Err(e) = cidrs.delete(name, &dp).await {
                eprintln!("{TAG} warning: deleting ServiceCIDR {name}: {e}");
            }
        }
    }
}

async fn cluster(n: usize, key: KeyAlgorithm) -> Result<ClusterRun> {
    let env = operon_envtest::shared().await?;
    let admin = env.client().await?;
    let mut cleanup = Cleanup {
        client: admin.clone(),
        namespaces: Vec::new(),
        service_cidr: None,
    };
    let result = phases(env, &admin, n, key, &mut cleanup).await;
    cleanup.run().await;
    result
}

async fn phases(
    env: &'static operon_envtest::TestEnv,
    admin: &Client,
    n: usize,
    key: KeyAlgorithm,
    cleanup: &mut Cleanup,
) -> Result<ClusterRun> {
    let ns_baseline = env.namespace("bench-sca-baseline").await?.name().to_owned();
    cleanup.namespaces.push(ns_baseline.clone());
    let ns_services = env.namespace("bench-sca-services").await?.name().to_owned();
    cleanup.namespaces.push(ns_services.clone());
    let ns_signer = env.namespace("bench-sca-signer").await?.name().to_owned();
    cleanup.namespaces.push(ns_signer.clone());
    let ns_plain = env.namespace("bench-sca-plain").await?.name().to_owned();
    cleanup.namespaces.push(ns_plain.clone());
    if env.control_plane().is_some() {
        cleanup.service_cidr = Some(extra_service_range(admin, &ns_services).await?);
    }

    // Baseline: N Secrets the size of the operator's, created directly.
    let template = secret_template(&ns_services, key)?;
    let secret_bytes = serde_json::to_vec(&template)?.len();
    let secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns_baseline);
    // Warm-up (connections, the apiserver's first writes of the kind), not timed.
    create_all(
        &secrets,
        (0..CONCURRENCY).map(|i| named_secret(&template, &format!("warm-up{i}"))),
    )
    .await?;
    eprintln!("{TAG} baseline: creating {n} Secrets…");
    let cpu0 = Cpu::now(env)?;
    let t0 = Instant::now();
    create_all(
        &secrets,
        (0..n).map(|i| named_secret(&template, &format!("s{i}"))),
    )
    .await?;
    let baseline = t0.elapsed();
    let baseline_cpu = Cpu::now(env)?.since(&cpu0);

    // The same N annotated Services in a namespace no operator serves: what creating them costs.
    let plain: Api<Service> = Api::namespaced(admin.clone(), &ns_plain);
    create_all(&plain, (n..n + CONCURRENCY).map(annotated_service)).await?;
    eprintln!("{TAG} creating {n} annotated Services without the operator…");
    let cpu0 = Cpu::now(env)?;
    let t0 = Instant::now();
    create_all(&plain, (0..n).map(annotated_service)).await?;
    let services_alone = t0.elapsed();
    let services_alone_cpu = Cpu::now(env)?.since(&cpu0);

    // The operator, in this process, serving only the Services' namespace.
    let counter = RequestCounter::default();
    let client = counted_client(env.config().await?, &counter)?;
    let readiness = Readiness::new();
    let metrics = Metrics::new();
    let settings = Settings {
        namespace: ns_signer.clone(),
        inject_cluster_scoped: false,
        concurrency: CONCURRENCY as u16,
        key_algorithm: key,
        ..Settings::default()
    };
    let manager = Manager::new(controller::MANAGER, client)
        .namespaces([ns_services.clone()])
        .instance(Some("bench".into()))
        .metrics(metrics.clone())
        .readiness(readiness.clone());
    let t_start = Instant::now();
    let operator = OperatorTask::start(manager, settings);
    // Ready: the CA is generated and stored, and every cache has its initial list.
    poll_until(
        "the operator's CA and caches",
        STARTUP_DEADLINE,
        async || {
            operator.check()?;
            Ok(readiness.is_ready().then_some(()))
        },
    )
    .await?;
    let startup = t_start.elapsed();
    let startup_requests = counter.snapshot();

    eprintln!("{TAG} operator: creating {n} annotated Services…");
    let services: Api<Service> = Api::namespaced(admin.clone(), &ns_services);
    let service_secrets: Api<Secret> = Api::namespaced(admin.clone(), &ns_services);
    let cpu0 = Cpu::now(env)?;
    let t0 = Instant::now();
    let creator: JoinHandle<Result<Duration>> = tokio::spawn({
        let services = services.clone();
        async move {
            create_all(&services, (0..n).map(annotated_service)).await?;
            Ok(t0.elapsed())
        }
    });
    let managed = ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}"));
    // How many Secrets existed when the last Service had been created: whether signing kept up.
    let mut at_created = None;
    let mut polls = 0usize;
    let secrets_ready = poll_until(&format!("{n} serving Secrets"), DEADLINE, async || {
        operator.check()?;
        polls += 1;
        let count = service_secrets.list_metadata(&managed).await?.items.len();
        if at_created.is_none() && creator.is_finished() {
            at_created = Some(count);
        }
        Ok((count >= n).then_some(count))
    })
    .await?;
    let secrets_ready_at = t0.elapsed();
    let services_created = creator.await.context("the Service creator panicked")??;
    let secrets_when_created = at_created.unwrap_or(n);
    eprintln!(
        "{TAG} {secrets_ready} Secrets after {:.2} s; waiting for the Services' signed-by annotations…",
        secrets_ready_at.as_secs_f64()
    );
    // Settled: the operator has also recorded the signer on every Service (its last write).
    poll_until("the signed-by annotations", DEADLINE, async || {
        operator.check()?;
        let signed = services
            .list_metadata(&ListParams::default())
            .await?
            .items
            .iter()
            .filter(|s| s.annotations().contains_key(SERVING_CERT_SIGNED_BY))
            .count();
        Ok((signed >= n).then_some(()))
    })
    .await?;
    let settled = t0.elapsed();
    let operator_cpu = Cpu::now(env)?.since(&cpu0);
    let requests = counter.snapshot().since(&startup_requests);
    let reconciles = metrics.controller("service").reconciles();
    operator.stop().await?;

    // What counting cost the control plane: the same list, now of all N Secrets.
    const LISTS: u32 = 10;
    let cpu0 = Cpu::now(env)?;
    for _ in 0..LISTS {
        service_secrets.list_metadata(&managed).await?;
    }
    let list_cpu = Cpu::now(env)?
        .since(&cpu0)
        .control_plane_total()
        .map(|t| t / LISTS);

    Ok(ClusterRun {
        baseline,
        baseline_cpu,
        services_alone,
        services_alone_cpu,
        secret_bytes,
        startup,
        startup_requests,
        services_created,
        secrets_when_created,
        secrets_ready: secrets_ready_at,
        settled,
        operator_cpu,
        requests,
        reconciles,
        polls,
        list_cpu,
    })
}

/// Adds a Service range for the ClusterIPs of N Services and waits until it is ready.
async fn extra_service_range(admin: &Client, suffix_from: &str) -> Result<String> {
    let name = format!(
        "operon-bench-{}",
        suffix_from.rsplit('-').next().unwrap_or("sca")
    );
    let api: Api<ServiceCIDR> = Api::all(admin.clone());
    let cidr = ServiceCIDR {
        metadata: ObjectMeta {
            name: Some(name.clone()),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceCIDRSpec {
            cidrs: Some(vec![EXTRA_SERVICE_CIDR.to_owned()]),
        }),
        ..ServiceCIDR::default()
    };
    api.create(&PostParams::default(), &cidr)
        .await
        .with_context(|| format!("creating ServiceCIDR {name} ({EXTRA_SERVICE_CIDR})"))?;
    poll_until(
        &format!("ServiceCIDR {name} Ready"),
        STARTUP_DEADLINE,
        async || {
            let cidr = api.get(&name).await?;
            let ready = cidr
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            Ok(ready.then_some(()))
        },
    )
    .await?;
    Ok(name)
}

/// A serving Secret as the operator writes it (chain and key issued once), without the
/// ownerReference: its Service does not exist, and the garbage collector would remove it.
fn secret_template(namespace: &str, key: KeyAlgorithm) -> Result<Secret> {
    let now = OffsetDateTime::now_utc();
    let ca = SigningCa::generate_with(key, DEFAULT_CA_LIFETIME, now)?;
    let cert = ca.issue(&request("s0", namespace, key), now)?;
    let svc = Service {
        metadata: ObjectMeta {
            name: Some("s0".into()),
            namespace: Some(namespace.into()),
            uid: Some(SAMPLE_UID.into()),
            ..ObjectMeta::default()
        },
        ..Service::default()
    };
    let mut secret = service_ca_operator::serving::desired_secret(&svc, &cert);
    secret.metadata.owner_references = None;
    secret.metadata.namespace = None;
    Ok(secret)
}

fn named_secret(template: &Secret, service: &str) -> Secret {
    let mut secret = template.clone();
    secret.metadata.name = Some(format!("{service}-tls"));
    secret
        .annotations_mut()
        .insert(ORIGINATING_SERVICE_NAME.into(), service.into());
    secret
}

fn annotated_service(i: usize) -> Service {
    Service {
        metadata: ObjectMeta {
            name: Some(format!("s{i}")),
            annotations: Some(BTreeMap::from([(
                SERVING_CERT_SECRET_NAME.to_owned(),
                format!("s{i}-tls"),
            )])),
            ..ObjectMeta::default()
        },
        spec: Some(ServiceSpec {
            ports: Some(vec![ServicePort {
                port: 443,
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    }
}

/// Creates `objects`, [`CONCURRENCY`] requests in flight at a time.
async fn create_all<K>(api: &Api<K>, objects: impl Iterator<Item = K>) -> Result<()>
where
    K: Resource + Clone + serde::Serialize + serde::de::DeserializeOwned + std::fmt::Debug,
{
    let pp = PostParams::default();
    stream::iter(objects)
        .map(|obj| {
            let pp = &pp;
            async move {
                let name = obj.meta().name.clone().unwrap_or_default();
                api.create(pp, &obj)
                    .await
                    .map(drop)
                    .with_context(|| format!("creating {name}"))
            }
        })
        .buffer_unordered(CONCURRENCY)
        .try_for_each(|()| async { Ok(()) })
        .await
}

/// Calls `check` every [`POLL`] until it returns `Some`; fails after `deadline` (with the last
/// error, if the last call failed: transient API errors don't end the wait).
async fn poll_until<T>(
    what: &str,
    deadline: Duration,
    mut check: impl AsyncFnMut() -> Result<Option<T>>,
) -> Result<T> {
    let t0 = Instant::now();
    let mut tick = tokio::time::interval(POLL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tick.tick().await;
        let last = match check().await {
            Ok(Some(v)) => return Ok(v),
            Ok(None) => None,
            Err(e) if e.is::<Fatal>() => return Err(e),
            Err(e) => Some(e),
        };
        if t0.elapsed() >= deadline {
            let why = last
                .map(|e| format!(" (last error: {e:#})"))
                .unwrap_or_default();
            bail!("timed out after {deadline:?} waiting for {what}{why}");
        }
    }
}

/// An error that ends a [`poll_until`] at once.
#[derive(Debug, thiserror::Error)]
#[error("{0}")]
struct Fatal(String);

/// The operator's task; aborted when dropped (an error path), stopped gracefully by `stop`.
struct OperatorTask {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), controller::Error>>,
}

impl OperatorTask {
    fn start(manager: Manager, settings: Settings) -> OperatorTask {
        let (tx, rx) = oneshot::channel::<()>();
        let mut manager = manager.stop(async move {
            let _ = rx.await;
        });
        let task = tokio::spawn(async move {
            controller::register(&mut manager, &settings)?;
            manager.run().await;
            Ok(())
        });
        OperatorTask {
            stop: Some(tx),
            task,
        }
    }

    /// Fails (fatally) if the operator stopped on its own.
    fn check(&self) -> Result<()> {
        if self.task.is_finished() {
            return Err(Fatal("the operator stopped unexpectedly".into()).into());
        }
        Ok(())
    }

    async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(Duration::from_secs(60), &mut self.task)
            .await
            .context("the operator did not stop")?
            .context("the operator panicked")??;
        Ok(())
    }
}

impl Drop for OperatorTask {
    fn drop(&mut self) {
        self.task.abort();
    }
}

// ---------------------------------------------------------------------------------------------
// Report

fn secs(d: Duration) -> String {
    format!("{:.2} s", d.as_secs_f64())
}

fn cpu_line(cpu: &Cpu) -> String {
    let cp = match &cpu.control_plane {
        Some(components) => {
            let total: Duration = components.values().sum();
            let each: Vec<String> = components
                .iter()
                .map(|(c, t)| format!("{c} {:.2}", t.as_secs_f64()))
                .collect();
            format!("{} ({})", secs(total), each.join(", "))
        }
        None => "n/a".to_owned(),
    };
    format!("this process {}, control plane {cp}", secs(cpu.process))
}

fn ratio(a: Duration, b: Duration) -> f64 {
    a.as_secs_f64() / b.as_secs_f64().max(1e-9)
}

fn report(p: &Params, ecdsa: &Rate, rsa: &Rate, c: &ClusterRun) {
    let n = p.n;
    let nf = n as f64;
    println!();
    println!(
        "{TAG} baseline {n} Secrets created in {} (C={CONCURRENCY}, {} bytes each as JSON; {:.0}/s)",
        secs(c.baseline),
        c.secret_bytes,
        nf / c.baseline.as_secs_f64().max(1e-9)
    );
    println!("{TAG}   CPU: {}", cpu_line(&c.baseline_cpu));
    println!(
        "{TAG} {n} annotated Services created without the operator in {} (C={CONCURRENCY}; ratio to baseline {:.2})",
        secs(c.services_alone),
        ratio(c.services_alone, c.baseline)
    );
    println!("{TAG}   CPU: {}", cpu_line(&c.services_alone_cpu));
    println!(
        "{TAG} operator ready (CA generated and stored, caches listed) in {} with {} requests",
        secs(c.startup),
        c.startup_requests.total()
    );
    println!(
        "{TAG} {n} Services -> {n} serving Secrets in {} ({:.0} certs/s); creating the Services took {}, {} Secrets existed by then; signed-by on every Service after {}",
        secs(c.secrets_ready),
        nf / c.secrets_ready.as_secs_f64().max(1e-9),
        secs(c.services_created),
        c.secrets_when_created,
        secs(c.settled)
    );
    println!("{TAG}   CPU: {}", cpu_line(&c.operator_cpu));
    println!(
        "{TAG} ratio operator/baseline = {:.2}",
        ratio(c.secrets_ready, c.baseline)
    );
    println!(
        "{TAG} ratio operator/Services alone = {:.2}",
        ratio(c.secrets_ready, c.services_alone)
    );
    // This process ran the operator and the Services' creator; the creator alone is measured.
    let operator_cpu = c
        .operator_cpu
        .process
        .saturating_sub(c.services_alone_cpu.process);
    println!(
        "{TAG} operator CPU ~ {} (this process, minus creating the Services alone) = {:.2} ms per Service = {:.0} certs per CPU-second end to end",
        secs(operator_cpu),
        operator_cpu.as_secs_f64() * 1e3 / nf,
        nf / operator_cpu.as_secs_f64().max(1e-9)
    );
    let writes = c.requests.writes();
    println!(
        "{TAG} operator requests after startup: {writes} writes = {:.2} per Service, {} in all = {:.2} per Service; {} reconciles = {:.2} per Service",
        writes as f64 / nf,
        c.requests.total(),
        c.requests.total() as f64 / nf,
        c.reconciles,
        c.reconciles as f64 / nf
    );
    println!("{TAG}   {}", c.requests);
    if let Some(list) = c.list_cpu {
        // The Secrets grow from 0 to N during the run: on average a count lists N/2.
        println!(
            "{TAG} counting the Secrets ({} metadata lists every {} ms): {:.1} ms control plane CPU per list of {n}, ~{} in all (included in the operator run)",
            c.polls,
            POLL.as_millis(),
            list.as_secs_f64() * 1e3,
            secs(list * c.polls as u32 / 2)
        );
    }
    for (name, r) in [("ECDSA P-256", ecdsa), ("RSA 2048", rsa)] {
        let rate = r.per_cpu_second();
        let prec = if rate < 100.0 { 2 } else { 0 };
        println!(
            "{TAG} {name} {rate:.prec$} certs per CPU-second ({} certs, {} thread CPU, {} wall)",
            r.certs,
            secs(r.cpu),
            secs(r.wall)
        );
    }
    println!(
        "{TAG} ratio ECDSA/RSA certs per CPU-second = {:.0}",
        ecdsa.per_cpu_second() / rsa.per_cpu_second().max(1e-9)
    );
}
