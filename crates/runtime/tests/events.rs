//! Events against the real apiserver: more Events at once than may wait to be written are all
//! written, none dropped; the reconciles that record them wait for room instead. Repeats fold
//! into one Event's series; a repeat of a deleted Event starts a new one; a cluster-scoped
//! object's Events go to `default`.

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

/// The Events of `controller` with `reason` in `namespace`.
async fn events_of(api: &Api<Event>, controller: &str, reason: &str) -> Result<Vec<Event>, String> {
    Ok(api
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?
        .items
        .into_iter()
        .filter(|e| e.reporting_controller.as_deref() == Some(controller))
        .filter(|e| e.reason.as_deref() == Some(reason))
        .collect())
}

/// Waits until `reason`'s Events are exactly one, with series count `count` (1: no series), and
/// returns its name.
async fn one_event(api: &Api<Event>, reason: &str, count: i32) -> Result<String> {
    let name = wait::until(
        &format!("one {reason} Event, count {count}"),
        Duration::from_secs(30),
        || async {
            let events = events_of(api, "series-test", reason).await?;
            let counts: Vec<i32> = events
                .iter()
                .map(|e| e.series.as_ref().map_or(1, |s| s.count))
                .collect();
            match events.as_slice() {
                [e] if counts == [count] => Ok(e.metadata.name.clone().unwrap_or_default()),
                _ => Err(format!("{} Events, counts {counts:?}", events.len())),
            }
        },
    )
    .await?;
    Ok(name)
}

#[tokio::test]
async fn repeats_fold_into_a_series_and_a_deleted_events_repeat_starts_anew() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("events-series").await?;
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
    let events = Events::new(client.clone(), "series-test", None);
    let api = Api::<Event>::namespaced(client.clone(), &ns);

    events.normal(&cm, "Repeated", "Test", "once").await;
    let first = one_event(&api, "Repeated", 1).await?;
    events.normal(&cm, "Repeated", "Test", "twice").await;
    ensure!(one_event(&api, "Repeated", 2).await? == first);
    events.normal(&cm, "Repeated", "Test", "thrice").await;
    ensure!(one_event(&api, "Repeated", 3).await? == first);
    ensure!(events.recent_series() == 1, "{}", events.recent_series());

    // Another reason is another Event.
    events.warning(&cm, "Other", "Test", "else").await;
    one_event(&api, "Other", 1).await?;

    // Someone deletes the Event: the next repeat is not lost, it starts a new one.
    api.delete(&first, &Default::default()).await?;
    events
        .normal(&cm, "Repeated", "Test", "after the deletion")
        .await;
    let again = one_event(&api, "Repeated", 1).await?;
    ensure!(again != first, "the deleted Event came back");
    events.normal(&cm, "Repeated", "Test", "and on").await;
    ensure!(one_event(&api, "Repeated", 2).await? == again);
    Ok(())
}

#[tokio::test]
async fn a_cluster_scoped_objects_events_go_to_default() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("events-cluster-scoped").await?;
    let client = env.client().await?;
    let namespace = Api::<k8s_openapi::api::core::v1::Namespace>::all(client.clone())
        .get(&ns)
        .await?;
    let events = Events::new(client.clone(), "series-test", Some("replica-0".into()));
    events
        .normal(&namespace, "Noticed", "Test", "a cluster-scoped subject")
        .await;
    let api = Api::<Event>::namespaced(client, "default");
    wait::until("the Event in default", Duration::from_secs(30), || async {
        let found = events_of(&api, "series-test", "Noticed")
            .await?
            .into_iter()
            .find(|e| e.regarding.as_ref().and_then(|r| r.name.as_deref()) == Some(&*ns));
        match found {
            Some(e) if e.reporting_instance.as_deref() == Some("replica-0") => Ok(()),
            Some(e) => Err(format!("reportingInstance {:?}", e.reporting_instance)),
            None => Err("not yet".into()),
        }
    })
    .await?;
    Ok(())
}
