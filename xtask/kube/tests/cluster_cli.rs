//! `cargo xtask cluster up | status | down` as a person uses it: kubectl works, nothing is left.

use std::path::Path;
use std::process::Command;

use anyhow::{Context, Result, ensure};
use nix::sys::signal::kill;
use nix::unistd::Pid;

fn xtask(state: &Path, args: &[&str]) -> Result<String> {
    let out = Command::new(env!("CARGO_BIN_EXE_xtask-kube"))
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
fn cluster_up_gives_a_real_and_a_kwok_node_and_down_leaves_nothing() -> Result<()> {
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
    // The control plane's 5, and the node's: its namespaces' holder, the registry,
    // containerd, kubelet and kube-proxy.
    ensure!(
        children.len() == 10,
        "expected 10 components, got {run_pids}"
    );
    let veth = up
        .lines()
        .find_map(|l| l.split("registry ").nth(1))
        .and_then(|r| r.split(':').next())
        .context("no registry address in the output")?
        .to_string();

    let kubectl = operon_cluster::default_bin_dir().join("kubectl");
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
    let ready: Vec<Vec<&str>> = nodes
        .lines()
        .map(|l| l.split_whitespace().take(2).collect())
        .collect();
    ensure!(
        ready == [vec!["kwok-node-0", "Ready"], vec!["operon-node", "Ready"]],
        "kubectl get nodes: {nodes}"
    );
    let status = status?;
    ensure!(status.contains("node kwok-node-0 Ready"), "{status}");
    ensure!(status.contains("node operon-node Ready"), "{status}");
    down?;

    for pid in std::iter::once(supervisor).chain(children) {
        ensure!(
            kill(Pid::from_raw(pid), None).is_err(),
            "pid {pid} survived cluster down"
        );
    }
    ensure!(!state.join("kubeconfig").exists() && !state.join("cluster").exists());
    let addresses = Command::new("ip").args(["-o", "addr", "show"]).output()?;
    let addresses = String::from_utf8_lossy(&addresses.stdout);
    ensure!(
        !addresses.contains(&format!("{veth}/")),
        "the node's link survived: {addresses}"
    );
    let again = xtask(state, &["cluster", "status"])?;
    ensure!(again.contains("not running"), "{again}");
    Ok(())
}

/// `cluster down` when dropped, so that a failed check leaves nothing running.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        if let Err(e) = xtask(self.0, &["cluster", "down"]) {
            eprintln!("cluster down: {e}");
        }
    }
}

fn kubectl(state: &Path, args: &[&str]) -> Result<std::process::Output> {
    Command::new(operon_cluster::default_bin_dir().join("kubectl"))
        .args(args)
        .env("KUBECONFIG", state.join("kubeconfig"))
        .output()
        .with_context(|| format!("kubectl {args:?}"))
}

#[test]
fn cluster_snapshot_save_and_restore_bring_back_what_the_snapshot_had() -> Result<()> {
    let state = tempfile::tempdir()?;
    let state = state.path();
    xtask(state, &["cluster", "up", "--kwok-only"])?;
    let _down = Down(state);
    let created = kubectl(
        state,
        &["create", "configmap", "kept", "--from-literal=at=snapshot"],
    )?;
    ensure!(created.status.success(), "{created:?}");

    let snapshot = state.join("snapshot.db");
    let path = snapshot
        .to_str()
        .context("a temporary path that is not UTF-8")?;
    let saved = xtask(state, &["cluster", "snapshot", "save", path])?;
    ensure!(
        saved.contains("etcdctl") && saved.contains("snapshot saved to"),
        "{saved}"
    );
    let status = xtask(state, &["cluster", "snapshot", "status", path])?;
    ensure!(
        status.contains("revision") && status.contains("keys"),
        "{status}"
    );

    let created = kubectl(
        state,
        &["create", "configmap", "lost", "--from-literal=at=later"],
    )?;
    ensure!(created.status.success(), "{created:?}");
    let restored = xtask(state, &["cluster", "restore", path])?;
    ensure!(restored.contains("restored in"), "{restored}");

    let kept = kubectl(
        state,
        &["get", "configmap", "kept", "-o", "jsonpath={.data.at}"],
    )?;
    ensure!(
        kept.status.success() && kept.stdout == b"snapshot",
        "ConfigMap kept after the restore: {kept:?}"
    );
    let lost = kubectl(state, &["get", "configmap", "lost"])?;
    ensure!(
        !lost.status.success() && String::from_utf8_lossy(&lost.stderr).contains("NotFound"),
        "ConfigMap lost, written after the snapshot, after the restore: {lost:?}"
    );
    // A file that is not a snapshot is refused before anything is destroyed.
    std::fs::write(state.join("junk.db"), "junk")?;
    let junk = state.join("junk.db");
    let refused = Command::new(env!("CARGO_BIN_EXE_xtask-kube"))
        .args(["cluster", "restore"])
        .arg(&junk)
        .env("OPERON_STATE_DIR", state)
        .output()?;
    ensure!(
        !refused.status.success()
            && String::from_utf8_lossy(&refused.stderr).contains("snapshot status"),
        "a junk snapshot: {refused:?}"
    );
    let kept = kubectl(state, &["get", "configmap", "kept"])?;
    ensure!(kept.status.success(), "after a refused restore: {kept:?}");
    Ok(())
}
