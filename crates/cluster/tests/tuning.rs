//! What a benchmark sets and reads on a control plane: extra kube-scheduler flags reach the
//! scheduler, which still binds Pods with them; each etcd member's metrics address serves the
//! bytes its write-ahead log has taken, and they grow with a write.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::api::{Api, PostParams};
use operon_cluster::{ControlPlane, plain_http, wait};
use serde_json::json;

const TIMEOUT: Duration = Duration::from_secs(60);

/// The arguments process `pid` was started with.
fn cmdline(pid: u32) -> Result<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline"))?;
    Ok(raw
        .split(|b| *b == 0)
        .filter(|a| !a.is_empty())
        .map(|a| String::from_utf8_lossy(a).into_owned())
        .collect())
}

/// `etcd_disk_wal_write_bytes_total` of the member at `address`.
async fn wal_bytes(address: &str) -> Result<f64> {
    let response = plain_http::request(address, "GET", "/metrics", &[], "", TIMEOUT).await?;
    ensure!(response.status == 200, "etcd /metrics: {}", response.status);
    response
        .text()
        .lines()
        .find_map(|l| l.strip_prefix("etcd_disk_wal_write_bytes_total "))
        .context("no etcd_disk_wal_write_bytes_total in etcd's /metrics")?
        .trim()
        .parse()
        .context("etcd_disk_wal_write_bytes_total")
}

#[tokio::test]
async fn scheduler_flags_reach_it_and_etcd_counts_its_writes() -> Result<()> {
    let cp = ControlPlane::builder()
        .skip_from_env()
        .nodes(1)
        .scheduler_arg("--kube-api-qps=500")
        .scheduler_arg("--kube-api-burst=1000")
        .start()
        .await?;
    let client = cp.client().await?;

    // The scheduler runs with the flags, and binds a Pod with them.
    let (_, scheduler) = cp
        .pids()
        .into_iter()
        .find(|(name, _)| name == "kube-scheduler")
        .context("no kube-scheduler")?;
    let args = cmdline(scheduler)?;
    for flag in ["--kube-api-qps=500", "--kube-api-burst=1000"] {
        ensure!(args.iter().any(|a| a == flag), "{flag} not in {args:?}");
    }
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod: Pod = serde_json::from_value(json!({
        "metadata": { "name": "scheduled" },
        "spec": { "containers": [{ "name": "main", "image": "busybox" }] },
    }))?;
    wait::until("the default ServiceAccount", TIMEOUT, || async {
        pods.create(&PostParams::default(), &pod)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    })
    .await?;
    wait::until("the Pod bound to a Node", TIMEOUT, || async {
        let pod = pods.get("scheduled").await.map_err(|e| e.to_string())?;
        pod.spec
            .and_then(|s| s.node_name)
            .ok_or_else(|| "not bound yet".to_string())
    })
    .await?;
    ensure!(
        std::path::Path::new(&format!("/proc/{scheduler}")).exists(),
        "kube-scheduler exited"
    );

    // etcd's WAL bytes grow by at least a written object's size.
    let addresses = cp.etcd_metrics_addresses();
    ensure!(addresses.len() == 1, "etcd members: {addresses:?}");
    let before = wal_bytes(&addresses[0]).await?;
    let payload = "x".repeat(200_000);
    let cm = ConfigMap {
        metadata: kube::api::ObjectMeta {
            name: Some("payload".into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("data".to_string(), payload)])),
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client, "default")
        .create(&PostParams::default(), &cm)
        .await?;
    let after = wal_bytes(&addresses[0]).await?;
    ensure!(
        after - before >= 200_000.0,
        "etcd's WAL grew by {} bytes for a 200 kB ConfigMap",
        after - before
    );
    Ok(())
}
