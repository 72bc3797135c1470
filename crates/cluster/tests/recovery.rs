//! The restore's mechanics on a control plane of this test's own (kwok Nodes, no real node;
//! `xtask/kube/tests/disaster_recovery.rs` is the drill with the operators and a real node):
//! what the snapshot had is back with the same UID and resourceVersion, what came after is
//! gone, a watch resuming from before the restore is told its history is gone (410), the
//! restored etcd is a new cluster whose revisions start past the bump, and a file that is not a
//! snapshot is refused before anything is destroyed.

use std::os::unix::fs::PermissionsExt;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use futures::StreamExt;
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, PostParams, WatchEvent, WatchParams};
use operon_cluster::{ControlPlane, Error, REVISION_BUMP};
use serde_json::json;

fn config_map(name: &str) -> Result<ConfigMap> {
    Ok(serde_json::from_value(json!({
        "metadata": { "name": name },
        "data": { "written": name },
    }))?)
}

/// etcd's cluster ID, from its maintenance status.
async fn cluster_id(cp: &ControlPlane) -> Result<String> {
    let status = cp
        .etcd_request("/v3/maintenance/status", &json!({}))
        .await?;
    status["header"]["cluster_id"]
        .as_str()
        .map(str::to_owned)
        .with_context(|| format!("no cluster_id in {status}"))
}

fn resource_version(cm: &ConfigMap) -> Result<i64> {
    cm.metadata
        .resource_version
        .as_deref()
        .context("no resourceVersion")?
        .parse()
        .context("resourceVersion is not a number")
}

#[tokio::test]
async fn a_restore_brings_back_the_snapshot_and_nothing_after_it() -> Result<()> {
    let cp = ControlPlane::builder().skip_from_env().start().await?;
    eprintln!("recovery: control plane in {}", cp.dir().display());
    let client = cp.client().await?;
    let cms: Api<ConfigMap> = Api::namespaced(client, "default");
    let kept = cms
        .create(&PostParams::default(), &config_map("kept")?)
        .await?;
    let cluster_before = cluster_id(&cp).await?;

    let dir = tempfile::tempdir()?;
    let snapshot = dir.path().join("snapshot.db");
    let status = cp.snapshot(&snapshot).await?;
    eprintln!("recovery: snapshot {status}");
    let mode = std::fs::metadata(&snapshot)?.permissions().mode() & 0o777;
    ensure!(
        mode == 0o600,
        "the snapshot holds Secrets, yet its mode is {mode:o}"
    );
    ensure!(
        status.revision >= resource_version(&kept)?,
        "snapshot at revision {} before ConfigMap kept ({:?})",
        status.revision,
        kept.metadata.resource_version
    );

    let lost = cms
        .create(&PostParams::default(), &config_map("lost")?)
        .await?;
    let seen = lost
        .metadata
        .resource_version
        .clone()
        .context("no resourceVersion")?;

    // Not a snapshot: refused, and the control plane keeps running on its data.
    let etcd_pid = |cp: &ControlPlane| cp.pids().into_iter().find(|(n, _)| n == "etcd");
    let before = etcd_pid(&cp);
    let junk = dir.path().join("junk.db");
    std::fs::write(&junk, "not a snapshot")?;
    match cp.restore(&junk).await {
        Err(Error::Command { what, .. }) if what.contains("snapshot status") => {}
        other => bail!("a junk file was not refused by its status check: {other:?}"),
    }
    ensure!(
        etcd_pid(&cp) == before,
        "etcd was touched by a refused restore"
    );
    ensure!(cms.get_opt("lost").await?.is_some());

    let times = cp.restore(&snapshot).await?;
    eprintln!("recovery: restored: {times}");
    ensure!(etcd_pid(&cp) != before, "etcd was not restarted");
    ensure!(
        cluster_id(&cp).await? != cluster_before,
        "the restored etcd kept the lost one's cluster ID"
    );

    let cms: Api<ConfigMap> = Api::namespaced(cp.client().await?, "default");
    let back = cms.get("kept").await?;
    ensure!(
        back.metadata.uid == kept.metadata.uid
            && back.metadata.resource_version == kept.metadata.resource_version,
        "ConfigMap kept came back changed: {:?} {:?}, was {:?} {:?}",
        back.metadata.uid,
        back.metadata.resource_version,
        kept.metadata.uid,
        kept.metadata.resource_version
    );
    ensure!(
        cms.get_opt("lost").await?.is_none(),
        "ConfigMap lost, written after the snapshot, survived the restore"
    );

    // A watch resuming from a revision seen before the restore must list again.
    match cms.watch(&WatchParams::default().timeout(5), &seen).await {
        Err(kube::Error::Api(s)) if s.code == 410 => {}
        Err(e) => bail!("watch from {seen}: {e}"),
        Ok(stream) => {
            let mut stream = stream.boxed();
            match stream.next().await {
                Some(Ok(WatchEvent::Error(status))) if status.code == 410 => {}
                other => bail!("a watch from {seen} (before the restore) got {other:?}"),
            }
        }
    }
    let after = cms
        .create(&PostParams::default(), &config_map("after")?)
        .await?;
    let revision = resource_version(&after)?;
    ensure!(
        revision > REVISION_BUMP as i64,
        "a write after the restore got revision {revision}, not past the bump"
    );
    ensure!(
        times.total < Duration::from_secs(120),
        "restore took {:?}",
        times.total
    );
    Ok(())
}
