//! pod-operator against the real control plane: each test names a behaviour and fails when it
//! breaks.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::{Fixture, TIMEOUT};
use futures::{StreamExt, TryStreamExt, stream};
use k8s_openapi::api::core::v1::{Namespace, Pod, ResourceQuota};
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use operon_cluster::wait;
use pod_operator::api::{PodRequest, PodRequestSpec};
use serde_json::json;

fn request(ns: &str, name: &str, image: &str) -> PodRequest {
    let mut pr = PodRequest::new(
        name,
        PodRequestSpec {
            name: "main".into(),
            image: image.into(),
            command: vec!["sleep".into(), "3600".into()],
        },
    );
    pr.metadata.namespace = Some(ns.to_string());
    pr
}

fn owner_uid(pod: &Pod) -> Option<String> {
    pod.owner_references()
        .iter()
        .find(|o| o.controller == Some(true) && o.kind == "PodRequest")
        .map(|o| o.uid.clone())
}

async fn wait_pod<F>(f: &Fixture, what: &str, check: F) -> Result<Pod>
where
    F: Fn(&Pod) -> bool,
{
    let pods = f.pods();
    Ok(wait::until(what, TIMEOUT, || async {
        match pods.get_opt("busybox").await {
            Ok(Some(p)) if check(&p) => Ok(p),
            Ok(p) => Err(format!(
                "{:?}",
                p.map(|p| (p.metadata.uid, p.status.and_then(|s| s.phase)))
            )),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?)
}

#[tokio::test]
async fn talk_sample_gets_an_owned_labelled_running_pod() -> Result<()> {
    let f = Fixture::new("sample").await?;
    let op = f.operator().await?;
    let sample = f.sample()?;
    let pr = f.requests().create(&PostParams::default(), &sample).await?;

    let pr_ready = f.wait_ready("busybox").await?;
    let pod = f.pods().get("busybox").await?;
    let spec = pod.spec.clone().context("pod without spec")?;
    let [container] = spec.containers.as_slice() else {
        anyhow::bail!("expected one container, got {:?}", spec.containers);
    };
    assert_eq!(container.name, "busybox");
    assert_eq!(container.image.as_deref(), Some("busybox"));
    assert_eq!(
        container.command.clone().unwrap_or_default(),
        [
            "/bin/sh",
            "-ec",
            "while :; do echo 'Hello DevConf.CZ 2020!'; sleep 5; done"
        ]
    );
    assert_eq!(pod.labels().get("app").map(String::as_str), Some("busybox"));
    let owner = pod
        .owner_references()
        .first()
        .cloned()
        .context("pod without ownerReference")?;
    assert_eq!(Some(owner.uid), pr.metadata.uid);
    assert_eq!(owner.controller, Some(true));
    assert_eq!(owner.block_owner_deletion, Some(true));
    assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Running"));

    let status = pr_ready.status.context("no status")?;
    assert_eq!(status.pod_name.as_deref(), Some("busybox"));
    assert_eq!(status.pod_phase.as_deref(), Some("Running"));
    assert_eq!(status.observed_generation, pr_ready.metadata.generation);
    let degraded =
        operon_runtime::conditions::get(&status.conditions, "Degraded").context("no Degraded")?;
    assert_eq!(
        (degraded.status.as_str(), degraded.reason.as_str()),
        ("False", "AsExpected")
    );
    f.wait_event("busybox", "Created", "busybox").await?;
    // Exactly one Pod create, no conflict retries.
    assert_eq!(op.requests().get("create", "pods"), 1, "{}", op.requests());
    Ok(op.stop().await?)
}

#[tokio::test]
async fn deleted_pod_is_recreated_and_deleting_the_request_removes_it() -> Result<()> {
    let f = Fixture::new("ensure").await?;
    let op = f.operator().await?;
    f.requests()
        .create(&PostParams::default(), &f.sample()?)
        .await?;
    f.wait_ready("busybox").await?;
    let first = f.pods().get("busybox").await?.metadata.uid;

    f.pods().delete("busybox", &DeleteParams::default()).await?;
    let second = wait_pod(&f, "Pod recreated", |p| {
        p.metadata.uid != first && p.metadata.deletion_timestamp.is_none()
    })
    .await?;
    ensure!(owner_uid(&second).is_some(), "recreated pod is not owned");
    f.wait_ready("busybox").await?;

    f.requests()
        .delete("busybox", &DeleteParams::default())
        .await?;
    let pods = f.pods();
    wait::until("Pods with app=busybox gone", TIMEOUT, || async {
        let left = pods
            .list(&ListParams::default().labels("app=busybox"))
            .await
            .map_err(|e| e.to_string())?;
        if left.items.is_empty() {
            Ok(())
        } else {
            Err(format!("{} left", left.items.len()))
        }
    })
    .await?;
    Ok(op.stop().await?)
}

#[tokio::test]
async fn editing_the_image_replaces_the_pod_and_status_follows() -> Result<()> {
    let f = Fixture::new("replace").await?;
    let op = f.operator().await?;
    f.requests()
        .create(&PostParams::default(), &f.sample()?)
        .await?;
    let before = f.wait_ready("busybox").await?;
    let old_uid = f.pods().get("busybox").await?.metadata.uid;

    let edited = f
        .requests()
        .patch(
            "busybox",
            &PatchParams::default(),
            &Patch::Merge(json!({"spec": {"image": "busybox:1.36"}})),
        )
        .await?;
    ensure!(edited.metadata.generation > before.metadata.generation);
    let pod = wait_pod(&f, "replacement Pod with the new image", |p| {
        p.metadata.uid != old_uid
            && p.spec
                .as_ref()
                .and_then(|s| s.containers.first())
                .and_then(|c| c.image.as_deref())
                == Some("busybox:1.36")
    })
    .await?;
    ensure!(owner_uid(&pod).is_some());
    let after = f.wait_ready("busybox").await?;
    assert_eq!(
        after.status.as_ref().and_then(|s| s.observed_generation),
        edited.metadata.generation
    );
    f.wait_event("busybox", "Replaced", "").await?;
    // Delete once, create twice (original and replacement). A create that races the old Pod's
    // removal gets AlreadyExists, which the operator answers with one GET before it waits: each
    // such GET allows one more create attempt, never more.
    let requests = op.requests();
    assert_eq!(requests.get("delete", "pods"), 1, "{requests}");
    let conflicts = requests.get("get", "pods");
    assert!(conflicts <= 1, "{requests}");
    assert_eq!(requests.get("create", "pods"), 2 + conflicts, "{requests}");
    Ok(op.stop().await?)
}

#[tokio::test]
async fn a_foreign_pod_is_never_touched_and_the_request_recovers() -> Result<()> {
    let f = Fixture::new("conflict").await?;
    let foreign: Pod = serde_json::from_value(json!({
        "metadata": { "name": "busybox", "labels": { "owner": "someone-else" } },
        "spec": { "containers": [{ "name": "other", "image": "nginx" }] },
    }))?;
    f.pods().create(&PostParams::default(), &foreign).await?;
    // Let the scheduler and kwok finish with it, so that any later change would be ours.
    let foreign = wait_pod(&f, "foreign Pod Running", |p| {
        p.status.as_ref().and_then(|s| s.phase.as_deref()) == Some("Running")
    })
    .await?;
    let op = f.operator().await?;
    f.requests()
        .create(&PostParams::default(), &f.sample()?)
        .await?;

    let pr = f
        .wait_condition("busybox", "Degraded", "True", "PodConflict")
        .await?;
    let ready =
        operon_runtime::conditions::get(&pr.status.clone().unwrap_or_default().conditions, "Ready")
            .cloned();
    ensure!(ready.is_some_and(|c| c.status == "False" && c.message.contains("left untouched")));
    f.wait_event("busybox", "PodConflict", "").await?;
    let now = f.pods().get("busybox").await?;
    assert_eq!(
        now.metadata.resource_version, foreign.metadata.resource_version,
        "foreign Pod was modified"
    );
    assert!(now.owner_references().is_empty(), "foreign Pod was adopted");
    let managers: Vec<_> = now
        .managed_fields()
        .iter()
        .filter_map(|m| m.manager.clone())
        .collect();
    assert!(
        !managers.iter().any(|m| m == "pod-operator"),
        "pod-operator wrote to it: {managers:?}"
    );
    let requests = op.requests();
    assert_eq!(
        requests.get("delete", "pods")
            + requests.get("patch", "pods")
            + requests.get("update", "pods"),
        0,
        "{requests}"
    );

    f.pods()
        .delete("busybox", &DeleteParams::default().grace_period(0))
        .await?;
    let ours = wait_pod(&f, "the request's own Pod", |p| owner_uid(p).is_some()).await?;
    assert_eq!(
        ours.spec
            .and_then(|s| s.containers.first().cloned())
            .map(|c| c.name),
        Some("busybox".into())
    );
    f.wait_ready("busybox").await?;
    f.wait_condition("busybox", "Degraded", "False", "AsExpected")
        .await?;
    Ok(op.stop().await?)
}

#[tokio::test]
async fn restricted_pod_security_denial_is_reported_and_backed_off() -> Result<()> {
    let f = Fixture::new("restricted").await?;
    let namespaces: kube::Api<Namespace> = kube::Api::all(f.client.clone());
    namespaces
        .patch(
            &f.ns,
            &PatchParams::default(),
            &Patch::Merge(json!({"metadata": {"labels": {"pod-security.kubernetes.io/enforce": "restricted"}}})),
        )
        .await?;
    let op = f.operator().await?;
    f.requests()
        .create(&PostParams::default(), &f.sample()?)
        .await?;
    let pr = f
        .wait_condition("busybox", "Degraded", "True", "AdmissionDenied")
        .await?;
    let degraded = operon_runtime::conditions::get(
        &pr.status.clone().unwrap_or_default().conditions,
        "Degraded",
    )
    .cloned();
    ensure!(
        degraded.is_some_and(|c| c.message.contains("PodSecurity")),
        "message should say why"
    );
    f.wait_event("busybox", "FailedCreate", "restricted")
        .await?;

    // Exponential backoff from 5 ms: the 9th attempt comes no sooner than 5+10+…+640 ms after
    // the first. A hot loop makes 9 attempts within milliseconds.
    let t0 = Instant::now();
    let first = op.requests().get("create", "pods");
    wait::until("9 more attempts", TIMEOUT, || async {
        let n = op.requests().get("create", "pods") - first;
        if n >= 9 {
            Ok(())
        } else {
            Err(format!("{n} attempts"))
        }
    })
    .await?;
    let floor = Duration::from_millis(5 * ((1 << 8) - 1));
    ensure!(
        t0.elapsed() >= floor / 2,
        "9 attempts in {:?}: not backing off",
        t0.elapsed()
    );
    ensure!(f.pods().get_opt("busybox").await?.is_none());
    Ok(op.stop().await?)
}

#[tokio::test]
async fn exceeded_quota_is_reported_and_recovers_when_lifted() -> Result<()> {
    let f = Fixture::new("quota").await?;
    let quotas: kube::Api<ResourceQuota> = kube::Api::namespaced(f.client.clone(), &f.ns);
    let quota: ResourceQuota = serde_json::from_value(json!({
        "metadata": { "name": "no-pods" },
        "spec": { "hard": { "pods": "0" } },
    }))?;
    quotas.create(&PostParams::default(), &quota).await?;
    // Quota admission needs the quota controller's usage first.
    wait::until("quota status computed", TIMEOUT, || async {
        let q = quotas.get("no-pods").await.map_err(|e| e.to_string())?;
        if q.status.and_then(|s| s.used).is_some() {
            Ok(())
        } else {
            Err("no status".into())
        }
    })
    .await?;
    let op = f.operator().await?;
    f.requests()
        .create(&PostParams::default(), &f.sample()?)
        .await?;
    f.wait_condition("busybox", "Degraded", "True", "QuotaExceeded")
        .await?;
    quotas.delete("no-pods", &DeleteParams::default()).await?;
    f.wait_ready("busybox").await?;
    f.wait_condition("busybox", "Degraded", "False", "AsExpected")
        .await?;
    Ok(op.stop().await?)
}

#[tokio::test]
async fn two_hundred_requests_converge_without_duplicates() -> Result<()> {
    const N: usize = 200;
    let f = Fixture::new("scale").await?;
    let op = f.operator().await?;
    let api = f.requests();
    let t0 = Instant::now();
    stream::iter(0..N)
        .map(|i| {
            let api = api.clone();
            let pr = request(&f.ns, &format!("req-{i:03}"), "busybox");
            async move { api.create(&PostParams::default(), &pr).await }
        })
        .buffer_unordered(20)
        .try_collect::<Vec<_>>()
        .await?;
    f.assert_converged(N).await?;
    eprintln!("{N} PodRequests Ready in {:?}", t0.elapsed());
    let requests = op.requests();
    assert_eq!(
        requests.get("create", "pods"),
        N as u64,
        "duplicate creates: {requests}"
    );
    ensure!(
        requests.get("patch", "podrequests.pod.jewzaam.org/status") <= 2 * N as u64,
        "more than 2 status writes per request: {requests}"
    );
    Ok(op.stop().await?)
}

/// Resource versions of every PodRequest and Pod in the namespace.
async fn versions(f: &Fixture) -> Result<BTreeMap<String, String>> {
    let mut out = BTreeMap::new();
    for pr in f.requests().list(&ListParams::default()).await? {
        out.insert(
            format!("podrequest/{}", pr.name_any()),
            pr.resource_version().unwrap_or_default(),
        );
    }
    for pod in f.pods().list(&ListParams::default()).await? {
        out.insert(
            format!("pod/{}", pod.name_any()),
            format!(
                "{}@{}",
                pod.resource_version().unwrap_or_default(),
                pod.metadata.uid.unwrap_or_default()
            ),
        );
    }
    Ok(out)
}

/// Fails if any PodRequest in the namespace changes within `window` (a watch from the current
/// resourceVersion must deliver nothing).
async fn assert_no_changes(f: &Fixture, window: Duration) -> Result<()> {
    let api = f.requests();
    let rv = api
        .list_metadata(&ListParams::default())
        .await?
        .metadata
        .resource_version
        .unwrap_or_default();
    let mut events = api
        .watch(&kube::api::WatchParams::default(), &rv)
        .await?
        .boxed();
    loop {
        match tokio::time::timeout(window, events.try_next()).await {
            Err(_elapsed) => return Ok(()),
            Ok(Ok(Some(kube::api::WatchEvent::Bookmark(_)))) => continue,
            Ok(Ok(Some(event))) => anyhow::bail!("PodRequest changed while idle: {event:?}"),
            Ok(Ok(None)) => return Ok(()),
            Ok(Err(e)) => return Err(e.into()),
        }
    }
}

#[tokio::test]
async fn idle_operator_and_restarted_operator_write_nothing() -> Result<()> {
    const N: usize = 5;
    let f = Fixture::new("quiet").await?;
    let op = f.operator().await?;
    for i in 0..N {
        f.requests()
            .create(
                &PostParams::default(),
                &request(&f.ns, &format!("quiet-{i}"), "busybox"),
            )
            .await?;
    }
    for i in 0..N {
        f.wait_ready(&format!("quiet-{i}")).await?;
    }
    let before = versions(&f).await?;
    let counts = op.requests();
    // Idle: nothing changes for a while; the operator makes no request at all (no writes, no
    // uncached GETs, no relists).
    assert_no_changes(&f, Duration::from_secs(5)).await?;
    let idle = op.requests().since(&counts);
    assert_eq!(idle.writes(), 0, "writes while idle: {idle}");
    assert_eq!(
        idle.verb("get") + idle.verb("list"),
        0,
        "reads while idle: {idle}"
    );
    assert_eq!(versions(&f).await?, before);

    // Restart: the new operator reconciles every request once and writes nothing.
    op.stop().await?;
    let op = f.operator().await?;
    wait::until("initial reconciles", TIMEOUT, || async {
        let n = op.metrics.reconciles();
        if n >= N as u64 {
            Ok(())
        } else {
            Err(format!("{n} reconciles"))
        }
    })
    .await?;
    assert_no_changes(&f, Duration::from_secs(2)).await?;
    let requests = op.requests();
    assert_eq!(requests.writes(), 0, "writes after restart: {requests}");
    assert_eq!(op.metrics.errors(), 0);
    assert_eq!(
        versions(&f).await?,
        before,
        "objects changed across the restart"
    );
    Ok(op.stop().await?)
}
