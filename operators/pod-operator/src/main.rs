use std::path::PathBuf;

use anyhow::Context as _;
use clap::{Parser, Subcommand};
use operon_runtime::client::{RequestCounter, counted_client};
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
    Run(RunArgs),
    /// Prints the PodRequest CustomResourceDefinition (YAML).
    Crd,
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
    /// Reconciles running at once.
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

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Crd => {
            print!("{}", pod_operator::crd_yaml()?);
            Ok(())
        }
        Command::Run(args) => {
            telemetry::init(args.log_format, &args.log_level);
            let config = client_config(args.kubeconfig.as_ref()).await?;
            let counter = RequestCounter::default();
            let client = counted_client(config, &counter).context("building the client")?;
            let settings = Settings {
                namespaces: args.namespaces,
                concurrency: args.concurrency,
                instance: std::env::var("POD_NAME").ok(),
                ..Settings::default()
            };
            controller::run(client, settings, operon_runtime::shutdown::signal()).await;
            tracing::info!(requests = %counter.snapshot(), "stopped");
            Ok(())
        }
    }
}
