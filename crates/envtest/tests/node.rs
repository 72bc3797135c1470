//! The real node: Pods run for real.

use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, LogParams, PostParams};
use operon_envtest::wait;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

#[tokio::test]
async fn the_talks_pod_runs_and_logs() -> Result {
    let env = operon_envtest::shared_with_node().await?;
    let ns = env.namespace("talk").await?;
    let client = env.client().await?;
    let pods: Api<Pod> = Api::namespaced(client, &ns);
    let pod: Pod = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "busybox" },
        "spec": { "containers": [{
            "name": "busybox", "image": "busybox",
            "command": ["/bin/sh", "-ec", "while :; do echo 'Hello DevConf.CZ 2020!'; sleep 5; done"],
        }]},
    }))?;
    pods.create(&PostParams::default(), &pod).await?;
    wait::until(
        "the greeting in the log",
        Duration::from_secs(60),
        || async {
            let log = pods
                .logs("busybox", &LogParams::default())
                .await
                .map_err(|e| e.to_string())?;
            if log.contains("Hello DevConf.CZ 2020!") {
                Ok(())
            } else {
                Err(format!("log: {log:?}"))
            }
        },
    )
    .await?;
    Ok(())
}
