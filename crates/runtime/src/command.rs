//! The `run` command every operator binary shares: flags, client, admin server, leader election
//! on a Lease, graceful shutdown, and the [`Manager`] its controllers register with. An
//! operator supplies only its controllers:
//!
//! ```ignore
//! #[derive(clap::Parser)]
//! struct Cli { #[command(flatten)] run: operon_runtime::command::RunArgs }
//! operon_runtime::command::run("pod-operator", &cli.run, |manager| {
//!     controller::register(manager, &settings)
//! }).await?;
//! ```
//!
//! Serving: `--admin-bind-address` (alias `--health-probe-bind-address`) answers `/healthz` and
//! `/readyz` over plain HTTP for the kubelet, and `/metrics` too unless `--metrics-bind-address`
//! is given; then `/metrics` is served there only, over HTTPS unless `--metrics-secure=false`, with
//! the certificate in `--metrics-cert-path` (reloaded as it changes; self-signed until it exists),
//! as controller-runtime's secure metrics server does.
//!
//! Lifecycle: the admin server (`/healthz`, `/readyz`, `/metrics`) starts first; the controllers
//! start at once, leader or not — their caches fill and they are ready once synced, but they
//! reconcile only once this replica leads (a warm standby, controller-runtime's
//! warmup: taking over costs a resync, not a cold list). On SIGTERM the controllers stop taking
//! work, in-flight reconciles get `--shutdown-timeout`, then the Lease is released so a standby
//! takes over at once. A leader that loses its Lease stops with [`Error::LeadershipLost`] so that
//! it is restarted as a standby, as controller-runtime does.

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::pin::Pin;
use std::time::Duration;

use clap::ArgAction;
use futures::FutureExt;

use crate::admin::{self, AdminServer, Readiness, Routes};
use crate::client::counted_client;
use crate::kubeconfig;
use crate::lease::{self, LeaderElector, LeaseConfig};
use crate::manager::Manager;
use crate::metrics::Metrics;
use crate::serving_cert::{CertFiles, ServingCert};
use crate::telemetry::{self, LogFormat, LogOptions, TimeEncoding};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Kubeconfig(#[from] kubeconfig::Error),
    #[error("connecting to the cluster at {url} ({source_name}): {error}")]
    Unreachable {
        url: String,
        source_name: String,
        error: String,
    },
    #[error("building the client: {0}")]
    Client(#[from] kube::Error),
    #[error("starting the admin server: {0}")]
    Admin(#[from] admin::Error),
    #[error("the metrics server's certificate: {0}")]
    MetricsCert(#[from] crate::serving_cert::Error),
    #[error("leader election settings: {0}")]
    Lease(#[from] lease::Error),
    #[error("leadership lost; exiting so that a standby takes over")]
    LeadershipLost,
    #[error("{0}")]
    Register(#[source] Box<dyn std::error::Error + Send + Sync>),
}

/// Parses a duration as Go users type it: `500ms`, `30s`, `2m`, `1h30m`, `36h`, `7d`
/// (humantime's units, spaces allowed: `1h 30m`); a bare number is seconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<u64>() {
        return Ok(Duration::from_secs(secs));
    }
    humantime::parse_duration(s)
        .map_err(|e| format!("invalid duration {s:?}: {e} (examples: 500ms, 30s, 1h30m, 7d)"))
}

/// A listen address that may be off (`0`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BindAddress(pub Option<SocketAddr>);

/// Parses a listen address as controller-runtime's flags take it: `host:port`, `:port` (every
/// interface), or `0` for "don't serve".
pub fn parse_bind_address(s: &str) -> Result<BindAddress, String> {
    parse_optional_address(s).map(BindAddress)
}

fn parse_optional_address(s: &str) -> Result<Option<SocketAddr>, String> {
    let s = s.trim();
    if s == "0" {
        return Ok(None);
    }
    let full = match s.strip_prefix(':') {
        Some(port) => format!("0.0.0.0:{port}"),
        None => s.to_string(),
    };
    full.parse()
        .map(Some)
        .map_err(|e| format!("invalid address {s:?}: {e} (examples: :8443, 127.0.0.1:8080, 0)"))
}

fn parse_required_bind_address(s: &str) -> Result<SocketAddr, String> {
    parse_optional_address(s)?.ok_or_else(|| "this server can't be turned off".to_string())
}

/// controller-runtime's probe port, on loopback: an operator run from a shell answers only
/// there, and never on 8080, kubectl's default server, where a forgotten `KUBECONFIG` would
/// make kubectl talk to the operator.
pub const DEFAULT_PROBE_ADDRESS: &str = "127.0.0.1:8081";
/// kubebuilder's metrics port (HTTPS), on loopback for the same reason.
pub const DEFAULT_METRICS_ADDRESS: &str = "127.0.0.1:8443";

/// Flags of every operator's `run` command.
#[derive(clap::Args, Debug, Clone)]
pub struct RunArgs {
    /// Namespace to serve (repeatable, or comma-separated); all namespaces when absent.
    #[arg(
        long = "namespace",
        short = 'n',
        env = "WATCH_NAMESPACE",
        value_delimiter = ','
    )]
    pub namespaces: Vec<String>,
    /// kubeconfig file, or a list of files merged as kubectl merges them (`a:b`, the first
    /// file winning per name); default: $KUBECONFIG, ~/.kube/config, then in-cluster.
    #[arg(long, env = "KUBECONFIG")]
    pub kubeconfig: Option<PathBuf>,
    /// The kubeconfig context to use (default: its current-context).
    #[arg(long)]
    pub context: Option<String>,
    /// Log encoder: json or console (alias text). Default: console.
    #[arg(long = "zap-encoder", alias = "log-format", env = "LOG_FORMAT")]
    pub log_format: Option<LogFormat>,
    /// Log level: debug, info, error, panic, a verbosity (0 = info, 1 = debug, 2+ = trace) or
    /// a tracing filter (`pod_operator=debug,kube=warn`). RUST_LOG, when set, overrides it.
    /// Default: info (debug with --zap-devel).
    #[arg(long = "zap-log-level", alias = "log-level", value_parser = telemetry::parse_level)]
    pub log_level: Option<String>,
    /// Development defaults: console encoder and debug level (explicit flags win).
    #[arg(long, default_value_t = false, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub zap_devel: bool,
    /// How `ts` is written: epoch, millis, nano, iso8601, rfc3339 or rfc3339nano.
    #[arg(long, default_value = "rfc3339")]
    pub zap_time_encoding: TimeEncoding,
    /// Elect a leader on a Lease so that only one replica reconciles (`--leader-elect` alone
    /// is `true`).
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub leader_elect: bool,
    /// Name of the Lease (default: `<operator>-leader`).
    #[arg(long)]
    pub leader_election_id: Option<String>,
    /// Namespace of the Lease (default: the Pod's namespace, else the kubeconfig's).
    #[arg(long, env = "POD_NAMESPACE")]
    pub leader_election_namespace: Option<String>,
    /// How long a Lease is valid without renewal.
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    pub leader_elect_lease_duration: Duration,
    /// A leader that could not renew for this long stops reconciling.
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    pub leader_elect_renew_deadline: Duration,
    /// Interval between acquire and renew attempts.
    #[arg(long, default_value = "2s", value_parser = parse_duration)]
    pub leader_elect_retry_period: Duration,
    /// Address of the probes (/healthz, /readyz; plain HTTP), and of /metrics too when
    /// --metrics-bind-address is `0`. The loopback default keeps a local run private; the
    /// manifests pass `:8081`.
    #[arg(
        long = "health-probe-bind-address",
        alias = "admin-bind-address",
        default_value = DEFAULT_PROBE_ADDRESS,
        value_parser = parse_required_bind_address
    )]
    pub admin_bind_address: SocketAddr,
    /// Serve /metrics on this address only (the manifests pass `:8443`; `0`: with the probes
    /// on --health-probe-bind-address).
    #[arg(long, value_parser = parse_bind_address, default_value = DEFAULT_METRICS_ADDRESS)]
    pub metrics_bind_address: BindAddress,
    /// Serve --metrics-bind-address over HTTPS.
    #[arg(long, default_value_t = true, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub metrics_secure: bool,
    /// Directory with the metrics server's certificate and key (e.g. a mounted Secret); a
    /// self-signed certificate is served until they exist.
    #[arg(long)]
    pub metrics_cert_path: Option<PathBuf>,
    /// File name of the certificate in --metrics-cert-path.
    #[arg(long, default_value = "tls.crt")]
    pub metrics_cert_name: String,
    /// File name of the key in --metrics-cert-path.
    #[arg(long, default_value = "tls.key")]
    pub metrics_cert_key: String,
    /// Require a bearer token allowed to GET /metrics (TokenReview + SubjectAccessReview).
    /// Default: on in a cluster, off outside.
    #[arg(long, num_args = 0..=1, default_missing_value = "true", action = ArgAction::Set)]
    pub metrics_auth: Option<bool>,
    /// How long in-flight reconciles may take to finish on shutdown.
    #[arg(long, default_value = "30s", value_parser = parse_duration)]
    pub shutdown_timeout: Duration,
}

/// Builds a client configuration from `--kubeconfig` (a file or a list), `--context` and the
/// environment, as kubectl does (see [`kubeconfig::load`]).
pub async fn client_config(
    kubeconfig: Option<&PathBuf>,
    context: Option<&str>,
) -> Result<kubeconfig::Loaded, Error> {
    Ok(kubeconfig::load(kubeconfig.map(|p| p.as_os_str()), context).await?)
}

/// How long the first request may take before an unreachable cluster stops the operator.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(30);

/// Fails unless the cluster answers, naming where its address came from: watches would
/// otherwise retry a wrong context forever (controller-runtime fails its start the same way).
async fn check_reachable(client: &kube::Client, loaded: &kubeconfig::Loaded) -> Result<(), Error> {
    let error = match tokio::time::timeout(CONNECT_TIMEOUT, client.apiserver_version()).await {
        Ok(Ok(_)) => return Ok(()),
        Ok(Err(e)) => e.to_string(),
        Err(_) => format!("no answer in {CONNECT_TIMEOUT:?}"),
    };
    Err(Error::Unreachable {
        url: loaded.config.cluster_url.to_string(),
        source_name: loaded.source(),
        error,
    })
}

impl RunArgs {
    /// The logging the flags ask for: explicit flags, then --zap-devel's defaults, then
    /// console at info.
    pub fn log_options(&self) -> LogOptions {
        let devel_level = if self.zap_devel { "debug" } else { "info" };
        LogOptions {
            format: self.log_format.unwrap_or(LogFormat::Text),
            level: self
                .log_level
                .clone()
                .unwrap_or_else(|| devel_level.to_string()),
            time: self.zap_time_encoding,
        }
    }
}

fn identity(name: &str) -> String {
    std::env::var("POD_NAME").unwrap_or_else(|_| {
        let host = std::fs::read_to_string("/proc/sys/kernel/hostname")
            .map(|h| h.trim().to_string())
            .unwrap_or_else(|_| name.to_string());
        format!("{host}-{}", std::process::id())
    })
}

/// Runs operator `name` until SIGTERM/SIGINT: see the module docs. `register` adds the
/// operator's controllers to the [`Manager`] (its error, such as invalid settings, stops the
/// operator before anything starts).
pub async fn run<F, E>(name: &str, args: &RunArgs, register: F) -> Result<(), Error>
where
    F: FnOnce(&mut Manager) -> Result<(), E>,
    E: Into<Box<dyn std::error::Error + Send + Sync>>,
{
    telemetry::init_with(&args.log_options());
    let loaded = client_config(args.kubeconfig.as_ref(), args.context.as_deref()).await?;
    let config = loaded.config.clone();
    let namespace = args
        .leader_election_namespace
        .clone()
        .unwrap_or_else(|| config.default_namespace.clone());
    let metrics = Metrics::new();
    let counter = metrics.request_counter();
    let cluster_ca = config.root_cert.clone().unwrap_or_default();
    let client = counted_client(config, &counter)?;
    check_reachable(&client, &loaded).await?;
    tracing::info!(server = %loaded.config.cluster_url, source = %loaded.source(), "connected to the cluster");
    let readiness = Readiness::new();
    let signal: Pin<Box<dyn Future<Output = ()> + Send + Sync>> =
        Box::pin(crate::shutdown::signal());
    let shutdown = signal.shared();

    let mut manager = Manager::new(name, client.clone())
        .namespaces(args.namespaces.iter().cloned())
        .metrics(metrics.clone())
        .readiness(readiness.clone())
        .instance(std::env::var("POD_NAME").ok())
        .own_namespace(namespace.clone())
        .cluster_ca(cluster_ca);
    register(&mut manager).map_err(|e| Error::Register(e.into()))?;

    let in_cluster = std::env::var_os("KUBERNETES_SERVICE_HOST").is_some();
    let metrics_auth = args.metrics_auth.unwrap_or(in_cluster);
    let mut admin = AdminServer::new(metrics.clone(), readiness.clone());
    let mut metrics_task = None;
    if let BindAddress(Some(metrics_addr)) = args.metrics_bind_address {
        admin = admin.routes(Routes::Probes);
        let mut server =
            AdminServer::new(metrics.clone(), readiness.clone()).routes(Routes::Metrics);
        if args.metrics_secure {
            let files = args.metrics_cert_path.as_ref().map(|dir| CertFiles {
                dir: dir.clone(),
                cert_name: args.metrics_cert_name.clone(),
                key_name: args.metrics_cert_key.clone(),
            });
            let names = [
                format!("{name}-metrics.{namespace}.svc"),
                format!("{name}-metrics.{namespace}.svc.cluster.local"),
                "localhost".to_string(),
            ];
            server = server.with_tls(&ServingCert::new(files, &names)?)?;
        }
        if metrics_auth {
            server = server.with_metrics_auth(client.clone());
        }
        let (addr, serve) = server.bind(metrics_addr, shutdown.clone()).await?;
        tracing::info!(%addr, secure = args.metrics_secure, "metrics server listening (/metrics)");
        metrics_task = Some(tokio::spawn(serve));
    } else if metrics_auth {
        admin = admin.with_metrics_auth(client.clone());
    }
    let (addr, serve) = admin
        .bind(args.admin_bind_address, shutdown.clone())
        .await?;
    tracing::info!(%addr, "admin server listening");
    let admin_task = tokio::spawn(serve);

    let result = if args.leader_elect {
        let lease_name = args
            .leader_election_id
            .clone()
            .unwrap_or_else(|| format!("{name}-leader"));
        let mut lease = LeaseConfig::new(&lease_name, &namespace, identity(name));
        lease.lease_duration = args.leader_elect_lease_duration;
        lease.renew_deadline = args.leader_elect_renew_deadline;
        lease.retry_period = args.leader_elect_retry_period;
        lease.validate()?;
        tracing::info!(lease = %lease_name, %namespace, identity = %lease.identity, "waiting for leadership");
        metrics.set_leader(&lease_name, false);
        let leader = LeaderElector::new(client.clone(), lease).start();
        let leading: Pin<Box<dyn Future<Output = ()> + Send + Sync>> = {
            let mut rx = leader.subscribe();
            let (metrics, lease_name) = (metrics.clone(), lease_name.clone());
            Box::pin(async move {
                if rx.wait_for(|leading| *leading).await.is_ok() {
                    tracing::info!("became leader");
                    metrics.set_leader(&lease_name, true);
                } else {
                    // The elector is gone (shutting down): never lead.
                    futures::future::pending::<()>().await;
                }
            })
        };
        let leading = leading.shared();
        // Polled from the start, whether or not the controllers wait on it yet.
        tokio::spawn(leading.clone());
        // Having led, losing the Lease stops the controllers.
        let lost: Pin<Box<dyn Future<Output = ()> + Send + Sync>> = {
            let mut rx = leader.subscribe();
            Box::pin(async move {
                if rx.wait_for(|leading| *leading).await.is_ok() {
                    let _ = rx.wait_for(|leading| !*leading).await;
                }
            })
        };
        let stop: Pin<Box<dyn Future<Output = ()> + Send + Sync>> =
            Box::pin(futures::future::select(shutdown.clone(), lost).map(|_| ()));
        let stop = stop.shared();
        let manager = manager.leading(leading.clone()).stop(stop.clone());
        run_until(manager.run(), stop, args.shutdown_timeout).await;
        let led = leading.peek().is_some();
        metrics.set_leader(&lease_name, false);
        if shutdown.peek().is_some() || !led {
            leader.release().await;
            if led {
                tracing::info!("released leadership");
            }
            Ok(())
        } else {
            // Another replica may already lead: stop here and let the Deployment restart us
            // as a standby, as controller-runtime does.
            Err(Error::LeadershipLost)
        }
    } else {
        let manager = manager.stop(shutdown.clone());
        run_until(manager.run(), shutdown, args.shutdown_timeout).await;
        Ok(())
    };
    readiness.set_not_ready("shutting down");
    tracing::info!(requests = %counter.snapshot(), "stopped");
    admin_task.abort();
    if let Some(task) = metrics_task {
        task.abort();
    }
    result
}

/// Drives `controllers` until `stop`, then gives in-flight work `timeout` to finish.
async fn run_until(
    controllers: impl Future<Output = ()>,
    stop: impl Future<Output = ()>,
    timeout: Duration,
) {
    tokio::pin!(controllers);
    tokio::select! {
        _ = &mut controllers => return,
        _ = stop => {}
    }
    if tokio::time::timeout(timeout, controllers).await.is_err() {
        tracing::warn!(?timeout, "in-flight reconciles did not finish in time");
    }
}

#[cfg(test)]
mod tests {
    use super::{BindAddress, RunArgs, parse_bind_address, parse_duration};
    use crate::telemetry::{LogFormat, TimeEncoding};
    use clap::Parser;

    #[derive(Parser)]
    struct Cli {
        #[command(flatten)]
        run: RunArgs,
    }

    #[test]
    fn metrics_flags_parse() {
        let cli = Cli::try_parse_from([
            "op",
            "--health-probe-bind-address=:8081",
            "--metrics-bind-address=:8443",
            "--metrics-cert-path=/certs",
            "--metrics-secure=false",
        ])
        .expect("parse");
        assert_eq!(
            cli.run.admin_bind_address,
            "0.0.0.0:8081".parse().expect("addr")
        );
        assert_eq!(
            cli.run.metrics_bind_address,
            BindAddress(Some("0.0.0.0:8443".parse().expect("addr")))
        );
        assert!(!cli.run.metrics_secure);
        let defaults = Cli::try_parse_from(["op"]).expect("parse");
        assert_eq!(
            defaults.run.metrics_bind_address,
            BindAddress(Some("127.0.0.1:8443".parse().expect("addr")))
        );
        assert_eq!(
            defaults.run.admin_bind_address,
            "127.0.0.1:8081".parse().expect("addr")
        );
        assert!(defaults.run.metrics_secure);
        assert!(Cli::try_parse_from(["op", "--health-probe-bind-address=0"]).is_err());
    }
    use std::time::Duration;

    fn parse(args: &[&str]) -> RunArgs {
        let mut argv = vec!["op"];
        argv.extend_from_slice(args);
        match Cli::try_parse_from(argv) {
            Ok(cli) => cli.run,
            Err(e) => panic!("{args:?}: {e}"),
        }
    }

    #[test]
    fn leader_elect_as_a_go_bool_flag() {
        assert!(parse(&[]).leader_elect);
        assert!(parse(&["--leader-elect"]).leader_elect);
        assert!(parse(&["--leader-elect", "--namespace=a"]).leader_elect);
        assert!(!parse(&["--leader-elect=false"]).leader_elect);
        assert!(parse(&["--leader-elect=true"]).leader_elect);
        assert!(!parse(&["--leader-elect", "false"]).leader_elect);
        assert!(Cli::try_parse_from(["op", "--leader-elect=maybe"]).is_err());
        assert!(parse(&["--metrics-secure"]).metrics_secure);
        assert!(!parse(&["--metrics-secure=false"]).metrics_secure);
        assert_eq!(parse(&["--metrics-auth"]).metrics_auth, Some(true));
        assert_eq!(parse(&[]).metrics_auth, None);
    }

    #[test]
    fn probe_address_and_its_alias() {
        let local = "127.0.0.1:9000".parse().expect("addr");
        assert_eq!(
            parse(&["--admin-bind-address=127.0.0.1:9000"]).admin_bind_address,
            local
        );
        assert_eq!(
            parse(&["--health-probe-bind-address", "127.0.0.1:9000"]).admin_bind_address,
            local
        );
        assert_eq!(
            parse(&["--metrics-bind-address=0"]).metrics_bind_address,
            BindAddress(None)
        );
    }

    #[test]
    fn zap_flags_and_their_aliases() {
        let defaults = parse(&[]).log_options();
        assert_eq!(defaults.format, LogFormat::Text);
        assert_eq!(defaults.level, "info");
        assert_eq!(defaults.time, TimeEncoding::Rfc3339);

        assert_eq!(
            parse(&["--zap-encoder=json"]).log_options().format,
            LogFormat::Json
        );
        assert_eq!(
            parse(&["--log-format=json"]).log_options().format,
            LogFormat::Json
        );
        assert_eq!(
            parse(&["--log-format", "text"]).log_options().format,
            LogFormat::Text
        );
        assert_eq!(
            parse(&["--zap-encoder=console"]).log_options().format,
            LogFormat::Text
        );
        assert!(Cli::try_parse_from(["op", "--zap-encoder=yaml"]).is_err());

        assert_eq!(
            parse(&["--zap-log-level=debug"]).log_options().level,
            "debug"
        );
        assert_eq!(parse(&["--log-level=warn"]).log_options().level, "warn");
        assert_eq!(parse(&["--zap-log-level=1"]).log_options().level, "debug");
        assert_eq!(parse(&["--zap-log-level=3"]).log_options().level, "trace");
        assert_eq!(parse(&["--zap-log-level=panic"]).log_options().level, "off");
        assert!(Cli::try_parse_from(["op", "--zap-log-level=-2"]).is_err());

        let devel = parse(&["--zap-devel"]).log_options();
        assert_eq!(
            (devel.format, devel.level.as_str()),
            (LogFormat::Text, "debug")
        );
        let explicit =
            parse(&["--zap-devel", "--zap-log-level=error", "--zap-encoder=json"]).log_options();
        assert_eq!(
            (explicit.format, explicit.level.as_str()),
            (LogFormat::Json, "error")
        );
        assert_eq!(parse(&["--zap-devel=false"]).log_options().level, "info");

        assert_eq!(
            parse(&["--zap-time-encoding=epoch"]).log_options().time,
            TimeEncoding::Epoch
        );
        assert!(Cli::try_parse_from(["op", "--zap-time-encoding=unix"]).is_err());
    }

    #[test]
    fn context_flag() {
        assert_eq!(parse(&["--context=good"]).context.as_deref(), Some("good"));
        assert_eq!(parse(&[]).context, None);
    }

    #[test]
    fn bind_addresses() {
        assert_eq!(
            parse_bind_address(":8443"),
            Ok(BindAddress(Some("0.0.0.0:8443".parse().expect("addr"))))
        );
        assert_eq!(
            parse_bind_address("127.0.0.1:8080"),
            Ok(BindAddress(Some("127.0.0.1:8080".parse().expect("addr"))))
        );
        assert_eq!(parse_bind_address("0"), Ok(BindAddress(None)));
        assert!(parse_bind_address("8443").is_err_and(|e| e.contains(":8443")));
        assert!(parse_bind_address(":http").is_err());
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("15"), Ok(Duration::from_secs(15)));
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("2m"), Ok(Duration::from_secs(120)));
        assert_eq!(parse_duration("36h"), Ok(Duration::from_secs(36 * 3600)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        // Go's time.ParseDuration style, and with spaces.
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("1h 30m 5s"), Ok(Duration::from_secs(5405)));
        assert!(parse_duration("abc").is_err_and(|e| e.contains("1h30m")));
        assert!(parse_duration("-1s").is_err());
        assert!(parse_duration("5 parsecs").is_err());
    }
}
