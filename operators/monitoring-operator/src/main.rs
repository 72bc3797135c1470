use std::path::PathBuf;

use clap::{Parser, Subcommand};
use monitoring_operator::controller::{self, Settings};
use monitoring_operator::stack::Images;
use operon_runtime::command::{self, RunArgs};

#[derive(Parser)]
#[command(
    name = "monitoring-operator",
    version,
    about = "Installs and configures the monitoring stack (the talk's cluster-monitoring)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the controller (out-of-cluster with a kubeconfig, or in-cluster).
    Run(Box<Args>),
    #[command(flatten)]
    Generate(operon_manifests::Command),
}

#[derive(clap::Args)]
struct Args {
    /// Namespace of the stack and of `cluster-monitoring-config`.
    #[arg(long, env = "MONITORING_NAMESPACE", default_value = monitoring_operator::deploy::NAMESPACE)]
    stack_namespace: String,
    /// Directory with the Prometheus Operator's CRDs (`monitoring.coreos.com_*.yaml`).
    #[arg(long, env = "PROMETHEUS_OPERATOR_CRDS", default_value = "/crds")]
    crds_dir: PathBuf,
    /// Prometheus's scrape and rule evaluation interval.
    #[arg(long, default_value = "30s")]
    interval: String,
    #[arg(long, env = "PROMETHEUS_OPERATOR_IMAGE", default_value = operon_assets::PROMETHEUS_OPERATOR_IMAGE)]
    prometheus_operator_image: String,
    #[arg(long, env = "PROMETHEUS_CONFIG_RELOADER_IMAGE", default_value = operon_assets::PROMETHEUS_CONFIG_RELOADER_IMAGE)]
    config_reloader_image: String,
    #[arg(long, env = "KUBE_STATE_METRICS_IMAGE", default_value = operon_assets::KUBE_STATE_METRICS_IMAGE)]
    kube_state_metrics_image: String,
    #[arg(long, env = "PROMETHEUS_IMAGE", default_value = operon_assets::PROMETHEUS_IMAGE)]
    prometheus_image: String,
    /// The version the Prometheus image runs (the Prometheus Operator picks flags by it).
    #[arg(long, default_value = operon_assets::PROMETHEUS_VERSION)]
    prometheus_version: String,
    #[arg(long, env = "ALERTMANAGER_IMAGE", default_value = operon_assets::ALERTMANAGER_IMAGE)]
    alertmanager_image: String,
    #[arg(long, default_value = operon_assets::ALERTMANAGER_VERSION)]
    alertmanager_version: String,
    #[arg(long, env = "NODE_EXPORTER_IMAGE", default_value = operon_assets::NODE_EXPORTER_IMAGE)]
    node_exporter_image: String,
    #[command(flatten)]
    run: RunArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Generate(command) => {
            command
                .run(&monitoring_operator::deploy::declaration()?)
                .await?;
            Ok(())
        }
        Command::Run(args) => {
            let settings = Settings {
                namespace: args.stack_namespace,
                crds_dir: args.crds_dir,
                interval: args.interval,
                images: Images {
                    prometheus_operator: args.prometheus_operator_image,
                    config_reloader: args.config_reloader_image,
                    kube_state_metrics: args.kube_state_metrics_image,
                    prometheus: args.prometheus_image,
                    prometheus_version: args.prometheus_version,
                    alertmanager: args.alertmanager_image,
                    alertmanager_version: args.alertmanager_version,
                    node_exporter: args.node_exporter_image,
                },
            };
            command::run("monitoring-operator", &args.run, |manager| {
                controller::register(manager, &settings)
            })
            .await?;
            Ok(())
        }
    }
}
