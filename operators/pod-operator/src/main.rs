use clap::{Parser, Subcommand};
use operon_runtime::command::{self, RunArgs};
use pod_operator::controller::{self, Settings};

#[cfg(feature = "mimalloc")]
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

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
    Run(Box<Args>),
    #[command(flatten)]
    Generate(operon_manifests::Command),
}

#[derive(clap::Args)]
struct Args {
    /// Reconciles running at once (one at a time per object).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    #[command(flatten)]
    run: RunArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    match Cli::parse().command {
        Command::Generate(command) => {
            command.run(&pod_operator::deploy::declaration()?).await?;
            Ok(())
        }
        Command::Run(args) => {
            let settings = Settings {
                concurrency: args.concurrency,
            };
            command::run("pod-operator", &args.run, |manager| {
                controller::register(manager, &settings);
                Ok::<_, std::convert::Infallible>(())
            })
            .await?;
            Ok(())
        }
    }
}
