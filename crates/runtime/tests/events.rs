//! Events against the real apiserver: more Events at once than may wait to be written are all
//! written, none dropped; the reconciles that record them wait for room instead.

use std::time::Duration;

use anyhow::{Result, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, ObjectMeta, PostParams};
use operon_cluster::wait;
use operon_runtime::events::{Events, MAX_PENDING};

#[tokio::test]
async fn a_flood_of_events_is_written_whole() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("events-flood").await?;
    let client = env.client().await?;
    let cm = Api::<ConfigMap>::namespaced(client.clone(), &ns)
        .create(
            &PostParams::default(),
            &ConfigMap {
                metadata: ObjectMeta {
                    name: Some("subject".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;
    let events = Events::new(client.clone(), "events-test", None);
    let total = MAX_PENDING + 200;
    // Distinct reasons, so that no two fold into one series.
    for i in 0..total {
        events
            .normal(&cm, &format!("Flood{i}"), "Test", format!("event {i}"))
            .await;
    }
    let api = Api::<Event>::namespaced(client, &ns);
    wait::until("every Event written", Duration::from_secs(120), || async {
        let written = api
            .list(&ListParams::default())
            .await
            .map_err(|e| e.to_string())?
            .items
            .iter()
            .filter(|e| e.reporting_controller.as_deref() == Some("events-test"))
            .count();
        if written == total {
            Ok(())
        } else {
            Err(format!("{written} of {total}"))
        }
    })
    .await?;
    ensure!(total > MAX_PENDING);
    Ok(())
}
