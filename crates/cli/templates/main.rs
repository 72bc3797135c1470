use std::path::PathBuf;

use clap::{Parser, Subcommand};
use operon_runtime::generate::{self, Writer};
use operon_runtime::operator::{self, RunArgs};
use {{crate}}::{api, controller, deploy};

#[derive(Parser)]
#[command(name = "{{name}}", version, about = "{{name}}: a microservice as a Kubernetes operator")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the controllers (out of the cluster with a kubeconfig, or in a Pod).
    Run(Box<RunCommand>),
    /// Prints the CustomResourceDefinitions (YAML).
    Crds,
    /// Writes the kustomize tree (CRDs, RBAC, Deployment, …) under `--dir`.
    Manifests {
        #[arg(long, default_value = "config")]
        dir: PathBuf,
    },
    /// Writes the OLM bundle (registry+v1) under `--dir`.
    Bundle {
        #[arg(long, default_value = "bundle")]
        dir: PathBuf,
        /// The image the ClusterServiceVersion's Deployment runs.
        #[arg(long, default_value = deploy::IMAGE)]
        image: String,
    },
}

#[derive(clap::Args)]
struct RunCommand {
    /// Reconciles running at once, per controller (one at a time per object).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    #[command(flatten)]
    run: RunArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Run(args) => {
            let RunCommand { concurrency, run } = *args;
            operator::run("{{name}}", &run, |rt| async move {
                let settings = controller::Settings {
                    client: rt.client,
                    concurrency,
                    metrics: rt.metrics,
                    instance: rt.instance,
                    stop: controller::stop_on(rt.stop),
                    leading: Some(rt.leading),
                };
                controller::run(settings, Some(rt.readiness)).await
            })
            .await?;
        }
        Command::Crds => {
            for crd in api::crds() {
                print!("---\n{}", serde_saphyr::to_string(&crd)?);
            }
        }
        Command::Manifests { dir } => {
            deploy::config(&mut Writer::new(deploy::GENERATED, &dir), &dir)?;
        }
        Command::Bundle { dir, image } => {
            let operator = deploy::manifests(&image)?;
            let mut writer = Writer::new(deploy::GENERATED, &dir);
            generate::bundle(&mut writer, &dir, &operator, &deploy::bundle_info()?)?;
            writer.remove_stale(&dir)?;
        }
    }
    Ok(())
}
