//! `cargo xtask`: project automation, in the spirit of operator-sdk's Makefile targets.
//!
//! The `xtask` binary is the front: it starts in seconds (its only dependencies are clap,
//! anyhow, serde and `operon-assets`), checks the machine for everything the command will need
//! and installs what is missing ([`prereq`]), runs the Go and Python builds ([`k8s`], [`helm`],
//! [`bundle_validate`], [`moto`]) and the test and lint runs. Commands built on kube-rs and the operators' crates
//! (cluster, up, deploy, image, manifests, bench, soak) run in `xtask-kube` (`xtask/kube`), which
//! the front builds, with cargo's progress showing, and then runs.

pub mod bundle_validate;
pub mod cli;
pub mod disk;
pub mod fuzz;
pub mod go;
pub mod helm;
pub mod k8s;
pub mod moto;
pub mod prereq;
pub mod report;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};

/// The repository's operators that `config/default` deploys.
pub const OPERATORS: [&str; 3] = [
    "credentials-operator",
    "pod-operator",
    "service-ca-operator",
];

/// Operators deployed on their own (`config/<operator>/default`): monitoring-operator brings a
/// whole monitoring stack, which the default deployment doesn't wait for.
pub const ADD_ON_OPERATORS: [&str; 1] = ["monitoring-operator"];

/// The workspace root (xtask lives one level below it).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

pub fn elapsed(since: Instant) -> String {
    let secs = since.elapsed().as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", since.elapsed().as_secs_f64())
    }
}

/// `cargo` (the one running this, when there is one) in the workspace root.
pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(repo_root());
    cmd
}

pub fn run(what: &str, cmd: &mut Command) -> Result<()> {
    let t0 = Instant::now();
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    ensure!(status.success(), "{what} failed ({status})");
    println!("xtask: {what} passed in {}", elapsed(t0));
    Ok(())
}
