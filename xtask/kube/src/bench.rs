//! `cargo xtask bench`: the benchmarks.
//!
//! - `pod`: `operon-bench` (bench/) runs pod-operator, the controller-runtime peer
//!   (bench/go-peer, built here with Go; scaffold-style and tuned), a plain kube-rs peer
//!   (bench/kube-rs-peer) and direct Pod creation side by side, each on a fresh control plane,
//!   three runs each, interleaved, and writes `bench/results/<date>-<machine>.{json,md}` plus SVG plots
//!   (docs/performance.md). `--quick` is a small run of pod-operator and the direct baseline
//!   that fails when requests per PodRequest or idle writes regress: CI runs it.
//! - `service-ca`: a `harness = false` bench target that runs its own baseline in the same
//!   process and prints ratios against it (docs/benchmarks.md).

use std::path::PathBuf;
use std::time::Instant;

use anyhow::{Result, bail};

use crate::demo;
use xtask::cli::BenchOptions as Options;
use xtask::{cargo, elapsed, k8s, repo_root, run};

/// Every benchmark, in the order a plain `cargo xtask bench` runs them.
pub const BENCHES: &[&str] = &["pod", "service-ca"];

/// Runs the benchmarks called `names` (all when empty).
pub fn bench(names: &[String], options: &Options) -> Result<()> {
    let mut selected: Vec<&str> = Vec::new();
    for name in names {
        match BENCHES.iter().find(|b| *b == name) {
            Some(b) => selected.push(b),
            None => bail!("unknown benchmark {name:?}; known: {}", BENCHES.join(", ")),
        }
    }
    if selected.is_empty() {
        if options.quick {
            selected.push("pod");
        } else {
            selected.extend(BENCHES);
        }
    }
    let t0 = Instant::now();
    // The benchmarks run on the local control plane.
    let bin = k8s::ensure_built(false)?;
    for b in selected {
        match b {
            "pod" => pod(options, &bin)?,
            _ => {
                let mut cmd = cargo();
                cmd.args(["bench", "-p", "service-ca-operator", "--bench", "issue"])
                    .env("KUBEBUILDER_ASSETS", &bin);
                if let Some(n) = options.n {
                    cmd.env("OPERON_BENCH_N", n.to_string());
                }
                run("bench service-ca", &mut cmd)?;
            }
        }
    }
    println!("xtask: benchmarks done in {}", elapsed(t0));
    Ok(())
}

/// Builds the controller-runtime peer into `<target>/go-peer/go-peer`.
pub fn build_go_peer() -> Result<PathBuf> {
    let go = xtask::go::go()?;
    let out = demo::target_dir()?.join("go-peer").join("go-peer");
    let mut cmd = std::process::Command::new(go);
    cmd.current_dir(repo_root().join("bench").join("go-peer"))
        .args(["build", "-trimpath", "-o"])
        .arg(&out)
        .arg(".")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0");
    run("go build (bench/go-peer)", &mut cmd)?;
    Ok(out)
}

fn pod(options: &Options, k8s_bin: &std::path::Path) -> Result<()> {
    // Counts don't depend on optimization: the quick run reuses the test profile's build.
    let (profile, dir) = if options.quick {
        ("dev", "debug")
    } else {
        ("release", "release")
    };
    let target = demo::target_dir()?;
    let peers: Vec<String> = if !options.peers.is_empty() {
        options.peers.clone()
    } else if options.quick {
        vec!["direct".into(), "operon".into()]
    } else {
        ["direct", "operon", "go", "go-tuned", "kube-rs"]
            .map(String::from)
            .to_vec()
    };
    // The allocator comparison's pod-operator, built first: the plain build below replaces the
    // binary of the same name.
    let mimalloc = peers.iter().any(|p| p == "operon-mimalloc");
    let mimalloc_binary = target.join(dir).join("pod-operator-mimalloc");
    if mimalloc {
        let mut variant = cargo();
        variant.args(["build", "-p", "pod-operator", "--features", "mimalloc"]);
        if !options.quick {
            variant.arg("--release");
        }
        run(
            &format!("cargo build ({profile}: pod-operator with mimalloc)"),
            &mut variant,
        )?;
        std::fs::copy(target.join(dir).join("pod-operator"), &mimalloc_binary)?;
    }
    let mut build = cargo();
    build.args(["build", "-p", "pod-operator", "-p", "operon-bench"]);
    let kube_rs = peers.iter().any(|p| p == "kube-rs");
    if kube_rs {
        build.args(["-p", "kube-rs-peer"]);
    }
    if !options.quick {
        build.arg("--release");
    }
    run(
        &format!(
            "cargo build ({profile}: pod-operator, operon-bench{})",
            if kube_rs { ", kube-rs-peer" } else { "" }
        ),
        &mut build,
    )?;
    let go_peer = if peers.iter().any(|p| p.starts_with("go")) {
        Some(build_go_peer()?)
    } else {
        None
    };
    let out = match &options.out {
        Some(out) => out.clone(),
        None if options.quick => target.join("bench-quick"),
        None => repo_root().join("bench").join("results"),
    };
    let mut cmd = std::process::Command::new(target.join(dir).join("operon-bench"));
    cmd.current_dir(repo_root())
        .env("KUBEBUILDER_ASSETS", k8s_bin)
        .arg("--operator")
        .arg(target.join(dir).join("pod-operator"))
        .args(["--profile", profile, "--peers", &peers.join(",")])
        .arg("--out")
        .arg(&out);
    if let Some(go) = go_peer {
        cmd.arg("--go-peer").arg(go);
    }
    if kube_rs {
        cmd.arg("--kube-rs-peer")
            .arg(target.join(dir).join("kube-rs-peer"));
    }
    if mimalloc {
        cmd.arg("--operator-mimalloc").arg(&mimalloc_binary);
    }
    if options.quick {
        cmd.arg("--quick");
    }
    let list = |v: &[String]| v.join(",");
    if !options.sizes.is_empty() {
        cmd.args([
            "--sizes",
            &list(
                &options
                    .sizes
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            ),
        ]);
    }
    if !options.rates.is_empty() {
        cmd.args([
            "--rates",
            &list(
                &options
                    .rates
                    .iter()
                    .map(|s| s.to_string())
                    .collect::<Vec<_>>(),
            ),
        ]);
    }
    if let Some(c) = options.concurrency {
        cmd.args(["--concurrency", &c.to_string()]);
    }
    if !options.memory_objects.is_empty() {
        let steps: Vec<String> = options
            .memory_objects
            .iter()
            .map(|s| s.to_string())
            .collect();
        cmd.args(["--memory-objects", &list(&steps)]);
    }
    if let Some(r) = options.runs {
        cmd.args(["--runs", &r.to_string()]);
    }
    if options.no_failover {
        cmd.arg("--no-failover");
    }
    if options.no_churn {
        cmd.arg("--no-churn");
    }
    run("bench pod", &mut cmd)
}
