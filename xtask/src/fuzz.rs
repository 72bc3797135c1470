//! `cargo xtask fuzz`: the cargo-fuzz targets under `fuzz/` (libFuzzer), on the stable
//! toolchain. cargo-fuzz asks for nightly only for sanitizers; the project forbids `unsafe`, so
//! what fuzzing looks for is panics, and `-s none` with `RUSTC_BOOTSTRAP=1` (for the
//! `-Z`-free but nightly-gated flags cargo-fuzz passes) is enough.

use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};

use crate::{elapsed, repo_root};

/// The targets of `fuzz/Cargo.toml`.
pub const TARGETS: [&str; 1] = ["certificates"];

fn ensure_cargo_fuzz() -> Result<()> {
    let installed = Command::new("cargo")
        .args(["fuzz", "--version"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !installed {
        println!("fuzz: installing cargo-fuzz from crates.io");
        let status = Command::new("cargo")
            .args(["install", "cargo-fuzz", "--locked"])
            .status()
            .context("running cargo install cargo-fuzz")?;
        ensure!(
            status.success(),
            "cargo install cargo-fuzz failed ({status})"
        );
    }
    Ok(())
}

/// Runs each of `targets` (all when empty) for `seconds`.
pub fn run(targets: &[String], seconds: u64) -> Result<()> {
    ensure_cargo_fuzz()?;
    let targets: Vec<String> = if targets.is_empty() {
        TARGETS.iter().map(|t| t.to_string()).collect()
    } else {
        targets.to_vec()
    };
    for target in targets {
        ensure!(
            TARGETS.contains(&target.as_str()),
            "unknown fuzz target {target:?} (known: {})",
            TARGETS.join(", ")
        );
        let t0 = Instant::now();
        let status = Command::new("cargo")
            .current_dir(repo_root().join("fuzz"))
            .env("RUSTC_BOOTSTRAP", "1")
            .args(["fuzz", "run", "-s", "none", &target, "--"])
            .arg(format!("-max_total_time={seconds}"))
            .status()
            .with_context(|| format!("running cargo fuzz run {target}"))?;
        ensure!(
            status.success(),
            "fuzz target {target} failed ({status}): see fuzz/artifacts/{target}"
        );
        println!(
            "fuzz: {target} ran {seconds} s without a failure ({} in all)",
            elapsed(t0)
        );
    }
    Ok(())
}
