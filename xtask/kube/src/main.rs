//! `xtask-kube`: the `cargo xtask` commands built on kube-rs and the operators' crates. The
//! front (`xtask`) checks the machine and runs the long builds first, then becomes this with
//! the same arguments.

mod bench;
mod bundle_image;
mod cluster;
mod demo;
mod deploy;
mod manifests;
mod soak_command;

use std::process::ExitCode;

use anyhow::{Result, bail};
use clap::Parser;
use xtask::cli::{Cli, ClusterCmd, Cmd, SnapshotCmd};
use xtask::{repo_root, report};

fn main() -> ExitCode {
    tracing_subscriber::fmt()
        .with_env_filter(
            // kube's client logs each failed readiness probe as an error; those are expected.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    let cli = Cli::parse();
    let verbose = cli.verbose;
    report::exit(dispatch(cli.command), verbose)
}

fn dispatch(command: Cmd) -> Result<()> {
    match command {
        Cmd::Cluster { command } => match command {
            ClusterCmd::Up { attach, shape } => cluster::up(attach, shape),
            ClusterCmd::Down => cluster::down(),
            ClusterCmd::Status => cluster::status(),
            ClusterCmd::Snapshot { command } => match command {
                SnapshotCmd::Save { file } => cluster::snapshot_save(&file),
                SnapshotCmd::Status { file } => cluster::snapshot_status(&file),
            },
            ClusterCmd::Restore { file } => cluster::restore(&file),
        },
        Cmd::Up(args) => demo::up(args),
        Cmd::Deploy {
            kubeconfig,
            monitoring,
            image_archives,
        } => {
            let kubeconfig = deploy::kubeconfig(kubeconfig)?;
            tokio::runtime::Runtime::new()?.block_on(deploy::deploy(
                &kubeconfig,
                monitoring,
                image_archives,
            ))
        }
        Cmd::Manifests => manifests::generate(false),
        Cmd::Image {
            operators,
            out,
            profile,
        } => {
            if out.is_some() && operators.len() != 1 {
                bail!("--out names one archive: give one operator");
            }
            let names: Vec<&str> = operators.iter().map(String::as_str).collect();
            operon_image::operator::build_many_with(
                &repo_root(),
                &names,
                out.map(|o| vec![o]),
                &profile,
                &deploy::with_runtime_files,
            )?;
            Ok(())
        }
        Cmd::BundleImage { operators, out } => bundle_image::build(&operators, out).map(|_| ()),
        Cmd::Bench { names, options } => bench::bench(&names, &options),
        Cmd::Soak(args) => soak_command::soak(args),
        other => bail!("`{other:?}` is a command of `cargo xtask` itself, not of xtask-kube"),
    }
}
