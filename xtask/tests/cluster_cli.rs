//! `cargo xtask cluster up | status | down` as a person uses it: kubectl works, nothing is left.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use nix::sys::signal::kill;
use nix::unistd::Pid;

fn xtask(state: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask"))
        .args(args)
        .env("OPERON_STATE_DIR", state)
        .output()
        .with_context(|| format!("running xtask {args:?}"))?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    ensure!(
        out.status.success(),
        "xtask {args:?} failed: {stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(stdout)
}

#[test]
fn cluster_up_gives_a_ready_kwok_node_and_down_leaves_no_process() -> Result<()> {
    let state = tempfile::tempdir()?;
    let state = state.path();
    let up = xtask(state, &["cluster", "up"])?;
    ensure!(up.contains("export KUBECONFIG="), "{up}");

    let info: serde_json::Value =
        serde_json::from_slice(&std::fs::read(state.join("cluster.json"))?)?;
    let supervisor = info["pid"].as_u64().context("no pid")? as i32;
    let run_pids = std::fs::read_to_string(state.join("cluster").join("children.pids"))?;
    let children: Vec<i32> = run_pids
        .lines()
        .filter_map(|l| l.split_whitespace().next()?.parse().ok())
        .collect();
    ensure!(children.len() == 5, "expected 5 components, got {run_pids}");

    let kubectl = operon_envtest::default_bin_dir().join("kubectl");
    let out = Command::new(kubectl)
        .args(["get", "nodes", "--no-headers"])
        .env("KUBECONFIG", state.join("kubeconfig"))
        .output()?;
    let nodes = String::from_utf8_lossy(&out.stdout);
    let status = xtask(state, &["cluster", "status"]);
    let down = xtask(state, &["cluster", "down"]);
    ensure!(
        out.status.success(),
        "kubectl failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    ensure!(
        nodes.split_whitespace().take(2).collect::<Vec<_>>() == ["kwok-node-0", "Ready"],
        "kubectl get nodes: {nodes}"
    );
    ensure!(status?.contains("node kwok-node-0 Ready"));
    down?;

    for pid in std::iter::once(supervisor).chain(children) {
        ensure!(
            kill(Pid::from_raw(pid), None).is_err(),
            "pid {pid} survived cluster down"
        );
    }
    ensure!(!state.join("kubeconfig").exists() && !state.join("cluster").exists());
    let again = xtask(state, &["cluster", "status"])?;
    ensure!(again.contains("not running"), "{again}");
    Ok(())
}
