use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Parser, Subcommand};
use futures::FutureExt;
use operon_runtime::admin::{AdminServer, Readiness};
use operon_runtime::client::{RequestCounter, counted_client};
use operon_runtime::lease::{LeaderElector, LeaseConfig};
use operon_runtime::metrics::Metrics;
use operon_runtime::telemetry::{self, LogFormat};
use pod_operator::controller::{self, Settings};

#[derive(Parser)]
#[command(
    name = "pod-operator",
    version,
    about = "PodRequest operator: a Pod for each request"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the controller (out-of-cluster with a kubeconfig, or in-cluster).
    Run(Box<RunArgs>),
    /// Prints the PodRequest CustomResourceDefinition (YAML).
    Crd,
}

fn duration(s: &str) -> Result<Duration, String> {
    let (number, unit) = s
        .find(|c: char| !c.is_ascii_digit() && c != '.')
        .map(|i| s.split_at(i))
        .unwrap_or((s, "s"));
    let n: f64 = number
        .parse()
        .map_err(|_| format!("invalid duration {s:?}"))?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "s" => n,
        "m" => n * 60.0,
        _ => return Err(format!("invalid duration unit in {s:?} (use ms, s or m)")),
    };
    Duration::try_from_secs_f64(secs).map_err(|e| format!("invalid duration {s:?}: {e}"))
}

#[derive(clap::Args)]
struct RunArgs {
    /// Namespace to serve (repeatable); all namespaces when absent.
    #[arg(
        long = "namespace",
        short = 'n',
        env = "WATCH_NAMESPACE",
        value_delimiter = ','
    )]
    namespaces: Vec<String>,
    /// Reconciles running at once (one at a time per object).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    /// kubeconfig file (default: $KUBECONFIG, ~/.kube/config, then in-cluster).
    #[arg(long, env = "KUBECONFIG")]
    kubeconfig: Option<PathBuf>,
    /// Log format: text or json.
    #[arg(long, default_value = "text", env = "LOG_FORMAT")]
    log_format: LogFormat,
    /// Log level or filter (RUST_LOG overrides).
    #[arg(long, default_value = "info")]
    log_level: String,
    /// Elect a leader on a Lease so that only one replica reconciles.
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    leader_elect: bool,
    /// Name of the Lease.
    #[arg(long, default_value = "pod-operator-leader")]
    leader_election_id: String,
    /// Namespace of the Lease (default: the Pod's namespace, else the kubeconfig's).
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// How long a Lease is valid without renewal.
    #[arg(long, default_value = "15s", value_parser = duration)]
    leader_elect_lease_duration: Duration,
    /// A leader that could not renew for this long stops reconciling.
    #[arg(long, default_value = "10s", value_parser = duration)]
    leader_elect_renew_deadline: Duration,
    /// Interval between acquire and renew attempts.
    #[arg(long, default_value = "2s", value_parser = duration)]
    leader_elect_retry_period: Duration,
    /// Address of the admin server (/healthz, /readyz, /metrics).
    #[arg(long, default_value = "127.0.0.1:8080")]
    admin_bind_address: SocketAddr,
    /// Require a bearer token allowed to GET /metrics (TokenReview + SubjectAccessReview).
    /// Default: on in a cluster, off outside.
    #[arg(long, action = ArgAction::Set)]
    metrics_auth: Option<bool>,
    /// How long in-flight reconciles may take to finish on shutdown.
    #[arg(long, default_value = "30s", value_parser = duration)]
    shutdown_timeout: Duration,
}

async fn client_config(kubeconfig: Option<&PathBuf>) -> anyhow::Result<kube::Config> {
    match kubeconfig.filter(|p| !p.as_os_str().is_empty()) {
        Some(path) => {
            let kc = kube::config::Kubeconfig::read_from(path)
                .with_context(|| format!("reading kubeconfig {}", path.display()))?;
            Ok(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)
        }
        None => Ok(kube::Config::infer()
            .await
            .context("no kubeconfig and not in a cluster")?),
    }
}

fn identity() -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| "pod-operator".into());
        format!("{host}-{}", std::process::id())
    })
}

async fn run(args: RunArgs) -> anyhow::Result<()> {
    telemetry::init(args.log_format, &args.log_level);
    let config = client_config(args.kubeconfig.as_ref()).await?;
    let lease_namespace = args
        .leader_election_namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let counter = RequestCounter::default();
    let client = counted_client(config, &counter).context("building the client")?;

    let metrics = Metrics::new();
    let readiness = Readiness::new();
    let shutdown = operon_runtime::shutdown::signal().boxed().shared();
    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let mut admin = AdminServer::new(metrics.clone(), readiness.clone());
    if args.metrics_auth.unwrap_or(in_cluster) {
        admin = admin.with_metrics_auth(client.clone());
    }
    let (addr, serve) = admin
        .bind(args.admin_bind_address, shutdown.clone())
        .await
        .context("starting the admin server")?;
    tracing::info!(%addr, "admin server listening (/healthz, /readyz, /metrics)");
    let admin_task = tokio::spawn(serve);

    let settings = Settings {
        namespaces: args.namespaces.clone(),
        concurrency: args.concurrency,
        instance: std::env::var("POD_NAME").ok(),
        metrics: metrics.controller("podrequest"),
        readiness: Some(readiness.clone()),
    };

    let result = if args.leader_elect {
        let mut lease = LeaseConfig::new(&args.leader_election_id, &lease_namespace, identity());
        lease.lease_duration = args.leader_elect_lease_duration;
        lease.renew_deadline = args.leader_elect_renew_deadline;
        lease.retry_period = args.leader_elect_retry_period;
        lease.validate().context("leader election settings")?;
        tracing::info!(lease = %args.leader_election_id, namespace = %lease_namespace, identity = %lease.identity, "waiting for leadership");
        metrics.set_leader(&args.leader_election_id, false);
        // A standby serves probes and is ready: it only waits.
        readiness.set_ready(true);
        let leader = LeaderElector::new(client.clone(), lease).start();
        let acquired = tokio::select! {
            _ = leader.acquired() => true,
            _ = shutdown.clone() => false,
        };
        if !acquired {
            leader.release().await;
            Ok(())
        } else {
            tracing::info!("became leader");
            metrics.set_leader(&args.leader_election_id, true);
            readiness.set_not_ready("leader: waiting for caches");
            let mut leading = leader.subscribe();
            let lost = Box::pin(async move {
                while *leading.borrow_and_update() {
                    if leading.changed().await.is_err() {
                        break;
                    }
                }
            });
            let stop = futures::future::select(shutdown.clone(), lost)
                .map(|_| ())
                .shared();
            run_controllers(client, settings, stop, args.shutdown_timeout).await;
            metrics.set_leader(&args.leader_election_id, false);
            if shutdown.peek().is_some() {
                leader.release().await;
                tracing::info!("released leadership");
                Ok(())
            } else {
                // Another replica may already lead: stop here and let the Deployment restart us
                // as a standby, as controller-runtime does.
                Err(anyhow::anyhow!("leadership lost"))
            }
        }
    } else {
        run_controllers(client, settings, shutdown.clone(), args.shutdown_timeout).await;
        Ok(())
    };
    readiness.set_not_ready("shutting down");
    tracing::info!(requests = %counter.snapshot(), "stopped");
    admin_task.abort();
    result
}

/// Runs the controllers until `stop`; then gives in-flight reconciles `timeout` to finish.
async fn run_controllers(
    client: kube::Client,
    settings: Settings,
    stop: impl std::future::Future<Output = ()> + Clone + Send + Sync + 'static,
    timeout: Duration,
) {
    let controllers = controller::run(client, settings, stop.clone());
    tokio::pin!(controllers);
    tokio::select! {
        _ = &mut controllers => return,
        _ = stop => {}
    }
    if tokio::time::timeout(timeout, controllers).await.is_err() {
        tracing::warn!(?timeout, "in-flight reconciles did not finish in time");
    }
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", pod_operator::crd_yaml()?);
            Ok(())
        }
        Command::Run(args) => run(*args).await,
    }
}
