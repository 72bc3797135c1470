use clap::{Parser, Subcommand};
use operon_runtime::command::{self, RunArgs};
use {{crate}}::{controller, deploy};

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
    // `crds`, `manifests`, `bundle`, `chart`, `audit`: generated from `deploy::declaration`.
    #[command(flatten)]
    Generate(operon_manifests::Command),
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
            let settings = controller::Settings { concurrency };
            command::run("{{name}}", &run, |manager| {
                controller::register(manager, &settings);
                Ok::<_, std::convert::Infallible>(())
            })
            .await?;
        }
        Command::Generate(command) => command.run(&deploy::declaration()?).await?,
    }
    Ok(())
}
