//! Chaos, bounded in time: each scenario breaks something real clusters break, then checks the
//! invariant — every PodRequest Ready with exactly one Pod it controls, and no other Pod.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::{Fixture, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT};
use futures::{StreamExt, TryStreamExt, stream};
use kube::api::{ListParams, PostParams};
use operon_cluster::wait;
use pod_operator::api::{PodRequest, PodRequestSpec};
use serde_json::json;

fn request(ns: &str, name: &str) -> PodRequest {
    let mut pr = PodRequest::new(
        name,
        PodRequestSpec {
            name: "busybox".into(),
            image: "busybox".into(),
            command: vec!["sleep".into(), "3600".into()],
        },
    );
    pr.metadata.namespace = Some(ns.into());
    pr
}

async fn create_many(f: &Fixture, prefix: &str, n: usize) -> Result<()> {
    let api = f.requests();
    stream::iter(0..n)
        .map(|i| {
            let api = api.clone();
            let pr = request(&f.ns, &format!("{prefix}-{i}"));
            async move { api.create(&PostParams::default(), &pr).await }
        })
        .buffer_unordered(20)
        .try_collect::<Vec<_>>()
        .await?;
    Ok(())
}

#[tokio::test]
async fn a_crash_in_the_middle_of_a_burst_converges_without_duplicates() -> Result<()> {
    let f = Fixture::new("chaos-crash").await?;
    let op = f.operator().await?;
    let creating = {
        let f = &f;
        async move { create_many(f, "burst", 300).await }
    };
    // Crash once some Pods exist but the burst isn't done.
    let pods = f.pods();
    let crash_point = async {
        wait::until("some Pods created", Duration::from_secs(120), || async {
            let n = pods
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?
                .items
                .len();
            if n >= 30 {
                Ok(n)
            } else {
                Err(format!("{n} Pods"))
            }
        })
        .await
    };
    let (created, crashed_at) = futures::join!(creating, crash_point);
    let crashed_at = crashed_at?;
    op.crash();
    created?;
    let before_restart = f.pods().list(&ListParams::default()).await?.items.len();
    eprintln!("chaos: crashed with {crashed_at} Pods, {before_restart} when restarting");
    ensure!(before_restart < 300, "the crash must leave work undone");
    let _op = f.operator().await?;
    f.assert_converged(300).await?;
    Ok(())
}

#[tokio::test]
async fn a_squeezed_api_priority_level_is_backed_off_and_converges() -> Result<()> {
    let f = Fixture::new("chaos-apf").await?;
    // The operator's ServiceAccount gets a priority level with about one seat and no queue.
    let level = format!("{}-squeezed", f.ns);
    let objects = [
        json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "PriorityLevelConfiguration",
            "metadata": { "name": level },
            "spec": { "type": "Limited", "limited": {
                "nominalConcurrencyShares": 1,
                "lendablePercent": 0,
                "limitResponse": { "type": "Queue", "queuing": { "queues": 1, "handSize": 1, "queueLengthLimit": 1 } },
            }},
        }),
        json!({
            "apiVersion": "flowcontrol.apiserver.k8s.io/v1", "kind": "FlowSchema",
            "metadata": { "name": level },
            "spec": {
                "priorityLevelConfiguration": { "name": level },
                "matchingPrecedence": 100,
                "distinguisherMethod": { "type": "ByUser" },
                "rules": [{
                    "subjects": [{ "kind": "ServiceAccount", "serviceAccount": {
                        "namespace": OPERATOR_NAMESPACE, "name": OPERATOR_SERVICE_ACCOUNT,
                    }}],
                    "resourceRules": [{
                        "verbs": ["*"], "apiGroups": ["*"], "resources": ["*"],
                        "namespaces": ["*"], "clusterScope": true,
                    }],
                }],
            },
        }),
    ];
    for obj in &objects {
        operon_cluster::apply::apply(&f.client, obj, "pod-operator-tests").await?;
    }
    let op = f.operator().await?;
    create_many(&f, "squeezed", 150).await?;
    f.assert_converged(150).await?;
    ensure!(op.is_alive(), "the operator must stay up");

    // The squeeze was real: the API server rejected some of the operator's requests.
    let metrics = f
        .client
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    let rejected: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_flowcontrol_rejected_requests_total")
                && l.contains(&format!("priority_level=\"{level}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    let dispatched: f64 = metrics
        .lines()
        .filter(|l| {
            l.starts_with("apiserver_flowcontrol_dispatched_requests_total")
                && l.contains(&format!("priority_level=\"{level}\""))
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum();
    eprintln!("chaos: priority level {level}: {dispatched} dispatched, {rejected} rejected (429)");
    ensure!(
        dispatched > 0.0,
        "the operator's requests must go through the squeezed level"
    );
    ensure!(
        rejected > 0.0,
        "the squeeze must have rejected some requests"
    );
    // The squeeze stays until this test binary's control plane goes: nothing else runs as
    // the operator here.
    Ok(())
}
