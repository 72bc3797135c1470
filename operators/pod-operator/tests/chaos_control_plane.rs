//! Chaos on the control plane itself, on a control plane of this test's own (the shared one
//! can't be broken under other tests): kube-apiserver restarted during a burst, with the watch
//! cache off and etcd compacted every 2 s so that resumed watches find their history gone (410)
//! and relist; then etcd stopped and started. The operator keeps running throughout, and after
//! each scenario every PodRequest is Ready with exactly one Pod it controls and no other Pod.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use futures::{StreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Pod};
use kube::api::{Api, ListParams, PostParams, WatchEvent, WatchParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use operon_cluster::{ControlPlane, wait};
use operon_runtime::manager::Manager;
use pod_operator::api::{PodRequest, PodRequestSpec};
use pod_operator::controller::{self, Settings};
use tokio::sync::oneshot;

const NS: &str = "chaos";

fn request(name: &str) -> PodRequest {
    let mut pr = PodRequest::new(
        name,
        PodRequestSpec {
            name: "busybox".into(),
            image: "busybox".into(),
            command: vec!["sleep".into(), "3600".into()],
        },
    );
    pr.metadata.namespace = Some(NS.into());
    pr
}

/// Creates `names`, 10 at a time, each retried until the API server takes it (it may be down).
async fn create_all(client: &Client, names: Vec<String>, created: Arc<AtomicUsize>) -> Result<()> {
    let api: Api<PodRequest> = Api::namespaced(client.clone(), NS);
    let results: Vec<Result<()>> = stream::iter(names)
        .map(|name| {
            let (api, created) = (api.clone(), created.clone());
            async move {
                wait::until(
                    &format!("create {name}"),
                    Duration::from_secs(120),
                    || async {
                        match api.create(&PostParams::default(), &request(&name)).await {
                            Ok(_) => Ok(()),
                            Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
                            Err(e) => Err(e.to_string()),
                        }
                    },
                )
                .await?;
                created.fetch_add(1, Ordering::SeqCst);
                Ok(())
            }
        })
        .buffer_unordered(10)
        .collect()
        .await;
    results.into_iter().collect()
}

/// Every PodRequest has its Pod (named in its status) and, when `ready`, is Ready. After an
/// etcd outage long enough for the node controller to mark the fake Node NotReady, existing
/// Pods can stay NotReady (kwok doesn't bring them back), which is not the operator's doing, so
/// there only the links are checked.
async fn assert_converged(client: &Client, expected: usize, ready: bool) -> Result<()> {
    let requests: Api<PodRequest> = Api::namespaced(client.clone(), NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), NS);
    wait::until(
        &format!("{expected} PodRequests converged"),
        Duration::from_secs(240),
        || async {
            let list = requests
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let done = list
                .items
                .iter()
                .filter(|pr| {
                    pr.status.as_ref().is_some_and(|s| {
                        s.pod_name.as_deref() == pr.metadata.name.as_deref()
                            && (!ready
                                || operon_runtime::conditions::is_true(&s.conditions, "Ready"))
                    })
                })
                .count();
            if done == expected && list.items.len() == expected {
                Ok(())
            } else {
                Err(format!("{done}/{expected} converged"))
            }
        },
    )
    .await?;
    let requests = requests.list(&ListParams::default()).await?.items;
    let pods = pods.list(&ListParams::default()).await?.items;
    ensure!(
        pods.len() == expected,
        "{} Pods for {expected} PodRequests",
        pods.len()
    );
    for pod in &pods {
        let owner = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        let request = requests.iter().find(|r| r.name_any() == pod.name_any());
        ensure!(
            request.is_some_and(|r| r.metadata.uid == owner),
            "Pod {} is not controlled by its PodRequest",
            pod.name_any()
        );
    }
    Ok(())
}

#[tokio::test]
async fn the_operator_rides_out_apiserver_restarts_compaction_and_an_etcd_outage() -> Result<()> {
    let cp = ControlPlane::builder()
        .skip_from_env()
        .apiserver_arg("--watch-cache=false")
        .apiserver_arg("--etcd-compaction-interval=2s")
        .start()
        .await?;
    eprintln!("chaos: control plane in {}", cp.dir().display());
    let client = cp.client().await?;
    operon_cluster::apply::apply_crd(&client, &PodRequest::crd(), "chaos").await?;
    let ns: Namespace = serde_json::from_value(serde_json::json!({ "metadata": { "name": NS } }))?;
    Api::<Namespace>::all(client.clone())
        .create(&PostParams::default(), &ns)
        .await?;
    wait::until(
        "default ServiceAccount",
        Duration::from_secs(60),
        || async {
            Api::<k8s_openapi::api::core::v1::ServiceAccount>::namespaced(client.clone(), NS)
                .get_opt("default")
                .await
                .map_err(|e| e.to_string())?
                .map(|_| ())
                .ok_or_else(|| "absent".to_string())
        },
    )
    .await?;

    let (stop, stopped) = oneshot::channel::<()>();
    let mut manager = Manager::new(controller::MANAGER, client.clone())
        .namespaces([NS])
        .stop(async move {
            let _ = stopped.await;
        });
    controller::register(&mut manager, &Settings::default());
    let operator = tokio::spawn(manager.run());

    // 1. kube-apiserver restarted in the middle of a burst of 200.
    let created = Arc::new(AtomicUsize::new(0));
    let names: Vec<String> = (0..200).map(|i| format!("burst-{i}")).collect();
    let burst = create_all(&client, names, created.clone());
    let restart = async {
        wait::until("50 created", Duration::from_secs(120), || async {
            let n = created.load(Ordering::SeqCst);
            if n >= 50 { Ok(()) } else { Err(format!("{n}")) }
        })
        .await?;
        // What the operator's watches last saw is at most this revision.
        let seen = Api::<PodRequest>::namespaced(client.clone(), NS)
            .list(&ListParams::default())
            .await?
            .metadata
            .resource_version
            .context("no list resourceVersion")?;
        cp.stop_component("kube-apiserver", Duration::from_secs(5))?;
        // Down long enough for several compactions of what the operator last saw.
        let down_at = created.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_secs(5)).await;
        cp.start_component("kube-apiserver").await?;
        anyhow::Ok((down_at, seen))
    };
    let (burst, restarted) = futures::join!(burst, restart);
    burst?;
    let (down_at, seen) = restarted?;
    eprintln!("chaos: kube-apiserver restarted after {down_at} of 200 creates");
    // The history before the restart is compacted away: a watch resuming from it gets 410 Gone
    // and has to relist, as the operator's watches had to.
    let api: Api<PodRequest> = Api::namespaced(client.clone(), NS);
    wait::until(
        "the pre-restart history compacted (410 Gone)",
        Duration::from_secs(60),
        || async {
            let stream = match api.watch(&WatchParams::default().timeout(1), &seen).await {
                Ok(stream) => stream,
                Err(kube::Error::Api(s)) if s.code == 410 => return Ok(()),
                Err(e) => return Err(e.to_string()),
            };
            let mut stream = std::pin::pin!(stream);
            while let Some(event) = stream.next().await {
                match event {
                    Ok(WatchEvent::Error(e)) if e.code == 410 => return Ok(()),
                    Err(kube::Error::Api(s)) if s.code == 410 => return Ok(()),
                    _ => {}
                }
            }
            Err(format!("resourceVersion {seen} still watchable"))
        },
    )
    .await?;
    assert_converged(&client, 200, true)
        .await
        .context("after the kube-apiserver restart")?;
    ensure!(
        !operator.is_finished(),
        "the operator must survive the restart"
    );

    // 2. etcd stopped, then started: the API server and the operator recover on their own.
    cp.stop_component("etcd", Duration::from_secs(5))?;
    let failing: Api<PodRequest> = Api::namespaced(client.clone(), NS);
    let attempt = tokio::time::timeout(
        Duration::from_secs(10),
        failing.create(&PostParams::default(), &request("during-outage")),
    )
    .await;
    ensure!(
        !matches!(attempt, Ok(Ok(_))),
        "writes must fail while etcd is down"
    );
    cp.start_component("etcd").await?;
    let names: Vec<String> = (0..50).map(|i| format!("after-etcd-{i}")).collect();
    create_all(&client, names, Arc::new(AtomicUsize::new(0))).await?;
    assert_converged(&client, 250, false)
        .await
        .context("after the etcd outage")?;
    ensure!(
        !operator.is_finished(),
        "the operator must survive the etcd outage"
    );

    let _ = stop.send(());
    tokio::time::timeout(Duration::from_secs(60), operator).await??;
    Ok(())
}
