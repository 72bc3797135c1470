//! Hostile input at scale, generated: 1000 PodRequest documents with random names, images and
//! commands (valid and not, huge strings, unicode, control characters, wrong types, deep
//! nesting, unknown fields; a few at and beyond the schema's size bounds), then 300 updates
//! (merge patches and replacements of their specs and labels) and 300 status writes (hostile
//! conditions and timestamps, up to the bound on conditions and past it) — all sent raw, 12 at
//! a time, by a user granted edit rights on PodRequests and their status, not the operator,
//! while pod-operator runs. Every answer is an acceptance or a refusal naming a field (never a
//! server error); every stored object stays readable by the operator's type; the operator
//! survives, serves a well-formed request afterwards, gives every request a verdict after a
//! restart, goes quiet once done, and touches nothing that isn't its own.

mod common;

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use common::Fixture;
use k8s_openapi::api::core::v1::{ConfigMap, Pod};
use kube::ResourceExt;
use kube::api::{ListParams, PostParams};
use operon_envtest::hostile::{
    Body, CONCURRENCY, Call, Verb, condition, nested, sample, storm, text, timestamp,
};
use operon_harness::{assert_readable, wait_idle};
use operon_runtime::conditions;
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Documents created: the "at least 1000 per CRD".
const CREATES: usize = 1000;
/// Updates and status writes, spread over the accepted requests.
const UPDATES: usize = 300;
const STATUS_WRITES: usize = 300;
/// The user who sends them: edit rights on PodRequests and their status, nothing else.
const USER: &str = "hostile-editor";
/// Where refusals may point (`ObjectMeta.labels`, `ObjectMeta.annotations`: how the API
/// server's JSON decoder names metadata of the wrong type, in a 400 without causes).
const ROOTS: [&str; 4] = ["spec", "status", "metadata", "ObjectMeta."];
/// The reasons pod-operator gives its `Ready` condition.
const READY_REASONS: [&str; 12] = [
    "AdmissionDenied",
    "QuotaExceeded",
    "PodReady",
    "PodPending",
    "PodNotReady",
    "PodSucceeded",
    "PodFailed",
    "PodUnknown",
    "PodTerminating",
    "Replacing",
    "PodConflict",
    "InvalidPod",
];

/// A spec (or part of one, for merge patches): mostly plausible values, so that many documents
/// pass and get reconciled; the rest hostile.
fn spec() -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        6 => "[a-z]([-a-z0-9]{0,10}[a-z0-9])?".prop_map(Value::from),
        1 => text().prop_map(Value::from),
    ];
    let image = prop_oneof![
        6 => "(busybox|registry\\.example\\.com/team/app)(:[0-9]{1,2}\\.[0-9]{1,2})?".prop_map(Value::from),
        1 => text().prop_map(Value::from),
    ];
    let command = prop_oneof![
        6 => prop::collection::vec("[a-z0-9 ./-]{1,12}", 1..4).prop_map(Value::from),
        1 => prop::collection::vec(text(), 0..6).prop_map(Value::from),
        1 => text().prop_map(Value::from),
        1 => Just(json!([1, 2, 3])),
    ];
    let field = |s: BoxedStrategy<Value>| prop::option::weighted(0.95, s);
    (
        field(name.boxed()),
        field(image.boxed()),
        field(command.boxed()),
        prop::option::weighted(0.2, nested(5)),
    )
        .prop_map(|(name, image, command, extra)| {
            let mut spec = Map::new();
            for (k, v) in [
                ("name", name),
                ("image", image),
                ("command", command),
                ("extra", extra),
            ] {
                if let Some(v) = v {
                    spec.insert(k.into(), v);
                }
            }
            Value::Object(spec)
        })
}

fn any_spec() -> impl Strategy<Value = Value> {
    prop_oneof![
        8 => spec(),
        1 => nested(3),
        1 => Just(Value::Null),
    ]
}

fn document() -> impl Strategy<Value = Value> {
    (any_spec(), prop::option::weighted(0.2, nested(2))).prop_map(|(spec, labels)| {
        let mut doc = json!({
            "apiVersion": "pod.jewzaam.org/v1alpha1", "kind": "PodRequest",
            "metadata": { "generateName": "hostile-" },
            "spec": spec,
        });
        if let Some(labels) = labels {
            doc["metadata"]["labels"] = labels;
        }
        doc
    })
}

/// A status a user might write: plausible fields with hostile values, conditions from
/// [`condition`], unknown fields, wrong types.
fn status() -> impl Strategy<Value = Value> {
    let fields = (
        prop::option::weighted(0.5, any::<i64>().prop_map(Value::from)),
        prop::option::weighted(0.5, text().prop_map(Value::from)),
        prop::option::weighted(0.5, text().prop_map(Value::from)),
        prop::option::weighted(0.9, prop::collection::vec(condition(), 0..4)),
        prop::option::weighted(0.1, nested(2)),
    )
        .prop_map(|(generation, pod, phase, conditions, extra)| {
            let mut s = Map::new();
            for (k, v) in [
                ("observedGeneration", generation),
                ("podName", pod),
                ("podPhase", phase),
                ("conditions", conditions.map(Value::from)),
                ("extra", extra),
            ] {
                if let Some(v) = v {
                    s.insert(k.into(), v);
                }
            }
            Value::Object(s)
        });
    prop_oneof![
        8 => fields,
        1 => nested(3),
        1 => prop::collection::vec(condition(), 1..3)
            .prop_map(|c| json!({ "conditions": c, "observedGeneration": 1 })),
    ]
}

/// An update: a merge patch of part of the spec and the labels, or a replacement of the
/// whole spec (read, change, PUT), or hostile annotations.
fn update() -> impl Strategy<Value = (u8, Value)> {
    prop_oneof![
        (Just(0u8), spec()),
        (Just(1u8), any_spec()),
        (
            Just(2u8),
            (nested(2), text())
                .prop_map(|(labels, a)| json!({ "labels": labels, "annotations": { "note": a } }))
        ),
    ]
}

/// A status write: a merge patch or a replacement of `/status`, with a hostile time too.
fn status_write() -> impl Strategy<Value = (bool, Value, Value)> {
    (prop::bool::ANY, status(), timestamp())
}

/// Documents at the schema's size bounds and beyond, below the API server's 3 MiB request limit:
/// the largest command admitted (65536 characters, in characters JSON escapes as six bytes
/// each), and two and forty times that, which the schema must refuse by name — before the bound
/// on the whole command, the 2.6 MB one reached etcd, whose 1.5 MiB limit made it a 500.
fn largest() -> Vec<Value> {
    let doc = |name: &str, command: Vec<String>| {
        json!({
            "apiVersion": "pod.jewzaam.org/v1alpha1", "kind": "PodRequest",
            "metadata": { "name": name },
            "spec": { "name": "main", "image": "busybox", "command": command },
        })
    };
    let args = |n: usize, c: char| vec![c.to_string().repeat(32768); n];
    vec![
        doc("largest", args(2, 'a')),
        doc("largest-escaped", args(2, '\u{1}')),
        doc("too-large", args(4, 'a')),
        doc("far-too-large", args(80, 'a')),
    ]
}

/// Statuses at the conditions' bounds: 16 conditions with 4096-character messages of
/// characters JSON escapes as six bytes (admitted), and 17 (refused).
fn largest_statuses() -> Vec<Value> {
    let conditions = |n: usize| {
        (0..n)
            .map(|i| {
                json!({
                    "type": format!("Type{i}"), "status": "True", "reason": "Big",
                    "message": "\u{1}".repeat(4096),
                    "lastTransitionTime": "2024-05-01T12:00:00Z",
                })
            })
            .collect::<Vec<_>>()
    };
    vec![
        json!({ "conditions": conditions(16) }),
        json!({ "conditions": conditions(17) }),
    ]
}

#[tokio::test]
async fn a_thousand_hostile_documents_updates_and_status_writes() -> Result<()> {
    let t0 = Instant::now();
    let f = Fixture::new("hostile").await?;
    let collection = format!(
        "/apis/pod.jewzaam.org/v1alpha1/namespaces/{}/podrequests",
        f.ns
    );
    // Bystanders: a Pod and a ConfigMap nobody asked the operator about; a request of the
    // foreign Pod's name is sent too.
    let foreign_pod: Pod = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "bystander", "labels": { "app": "bystander" } },
        "spec": { "containers": [{ "name": "c", "image": "busybox" }] },
    }))?;
    let foreign_pod = f
        .pods()
        .create(&PostParams::default(), &foreign_pod)
        .await?;
    let configmaps = f.api::<ConfigMap>();
    let foreign_cm: ConfigMap = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "ConfigMap",
        "metadata": { "name": "bystander" }, "data": { "keep": "me" },
    }))?;
    let foreign_cm = configmaps
        .create(&PostParams::default(), &foreign_cm)
        .await?;
    // Pods of this namespace stay unscheduled (every container requests a million CPUs): a Pod
    // that no node runs is deleted at once when replaced. On kwok's nodes a replaced Pod is
    // deleted again by name after its successor of the same name exists (docs/performance.md),
    // which the operator answers with a new Pod, for minutes after a storm of spec updates.
    let unschedulable = json!({
        "apiVersion": "v1", "kind": "LimitRange",
        "metadata": { "name": "unschedulable", "namespace": f.ns },
        "spec": { "limits": [{ "type": "Container",
            "default": { "cpu": "1M" }, "defaultRequest": { "cpu": "1M" } }] },
    });
    operon_cluster::apply::apply(&f.client, &unschedulable, "hostile-test").await?;

    let op = f.operator().await?;
    operon_envtest::grant(
        &f.client,
        &f.ns,
        USER,
        "hostile-editor",
        json!([
            { "apiGroups": ["pod.jewzaam.org"], "resources": ["podrequests"],
              "verbs": ["create", "get", "list", "watch", "update", "patch"] },
            { "apiGroups": ["pod.jewzaam.org"], "resources": ["podrequests/status"],
              "verbs": ["get", "update", "patch"] },
        ]),
    )
    .await?;
    let user = f.env.impersonating(USER, &["system:authenticated"]).await?;
    let setup = t0.elapsed();

    // 1. Creates.
    let mut creates: Vec<Call> = sample(&document(), CREATES)?
        .into_iter()
        .map(|doc| Call {
            verb: Verb::Create,
            path: collection.clone(),
            body: Body::Create(doc),
        })
        .collect();
    let mut conflicting = f.sample()?;
    conflicting.metadata.name = Some("bystander".into());
    conflicting.metadata.namespace = None;
    creates.push(Call {
        verb: Verb::Create,
        path: collection.clone(),
        body: Body::Create(serde_json::to_value(&conflicting)?),
    });
    creates.extend(largest().into_iter().map(|doc| Call {
        verb: Verb::Create,
        path: collection.clone(),
        body: Body::Create(doc),
    }));
    let created = storm(&user, &creates, CONCURRENCY).await?;
    let tallies = created.check(&ROOTS, (CREATES / 5, CREATES / 5))?;
    let names: Vec<String> = created
        .accepted(Verb::Create)
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    ensure!(names.iter().any(|n| n == "bystander"));

    // 2. Updates and status writes, interleaved, over the accepted requests.
    let updates = sample(&update(), UPDATES)?;
    let writes = sample(&status_write(), STATUS_WRITES)?;
    let mut changes = Vec::new();
    for i in 0..UPDATES.max(STATUS_WRITES) {
        let name = &names[(i * 7) % names.len()];
        let object = format!("{collection}/{name}");
        if let Some((kind, value)) = updates.get(i) {
            let body = match kind {
                0 => Body::MergePatch(json!({ "spec": value })),
                1 => Body::Replace(Map::from_iter([("spec".to_owned(), value.clone())])),
                _ => Body::MergePatch(json!({ "metadata": value })),
            };
            changes.push(Call {
                verb: Verb::Update,
                path: object.clone(),
                body,
            });
        }
        if let Some((replace, status, time)) = writes.get(i) {
            let mut status = status.clone();
            if let Some(Value::Array(conditions)) = status.get_mut("conditions")
                && let Some(Value::Object(first)) = conditions.first_mut()
            {
                first.insert("lastTransitionTime".into(), time.clone());
            }
            let body = match replace {
                true => Body::Replace(Map::from_iter([("status".to_owned(), status)])),
                false => Body::MergePatch(json!({ "status": status })),
            };
            changes.push(Call {
                verb: Verb::Status,
                path: format!("{object}/status"),
                body,
            });
        }
    }
    for (i, status) in largest_statuses().into_iter().enumerate() {
        changes.push(Call {
            verb: Verb::Status,
            path: format!("{collection}/{}/status", names[i]),
            body: Body::MergePatch(json!({ "status": status })),
        });
    }
    let changed = storm(&user, &changes, CONCURRENCY).await?;
    let more = changed.check(&ROOTS, (UPDATES / 10, UPDATES / 10))?;

    // 3. Every stored object is readable by the operator's type (else its cache would stop at
    // the next relist), and the operator lives.
    let stored = assert_readable(&f.requests()).await?;
    ensure!(op.is_alive(), "the operator must survive every input");

    // 4. A well-formed request after the storm is served by the operator that lived through it,
    // which then goes idle; no reconcile panicked.
    let t1 = Instant::now();
    let mut after = f.sample()?;
    after.metadata.name = Some("after-storm".into());
    f.requests().create(&PostParams::default(), &after).await?;
    f.wait_condition("after-storm", "Ready", "False", "PodPending")
        .await?;
    let metrics = op.metrics.clone();
    wait_idle(&metrics, Duration::from_secs(2), Duration::from_secs(180))
        .await
        .with_context(|| format!("requests so far: {}", op.requests()))?;
    let served = t1.elapsed();
    let first = op.requests();
    let first_reconciles = metrics.reconciles();
    ensure!(metrics.errors_of("panic") == 0, "a reconcile panicked");
    op.stop().await.context("the operator must stop cleanly")?;

    // 5. A restart (its caches list every object again): every request gets a verdict written
    // by the operator, forged statuses included.
    let t2 = Instant::now();
    let op = f.operator().await?;
    let metrics = op.metrics.clone();
    let reconciles = wait_idle(&metrics, Duration::from_secs(2), Duration::from_secs(180)).await?;
    let restarted = t2.elapsed();
    let requests = f.requests().list(&ListParams::default()).await?.items;
    let without_verdict: Vec<String> = requests
        .iter()
        .filter(|pr| {
            let status = pr.status.clone().unwrap_or_default();
            let ready = conditions::get(&status.conditions, "Ready");
            status.observed_generation != pr.metadata.generation
                || !ready.is_some_and(|c| READY_REASONS.contains(&c.reason.as_str()))
        })
        .map(|pr| format!("{}: {:?}", pr.name_any(), pr.status))
        .collect();
    ensure!(
        without_verdict.is_empty(),
        "{} requests without the operator's verdict: {:?}",
        without_verdict.len(),
        &without_verdict[..without_verdict.len().min(3)]
    );

    // 6. Quiet once done: nothing written in 5 s, hardly a reconcile (a hot loop would write
    // or reconcile many times a second).
    let before = op.requests();
    let before_reconciles = metrics.reconciles();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let quiet = op.requests().since(&before);
    let quiet_reconciles = metrics.reconciles() - before_reconciles;
    ensure!(
        quiet.writes() == 0 && quiet_reconciles <= 5,
        "not quiet: {quiet_reconciles} reconciles, requests {quiet}"
    );

    // 7. Nothing that isn't the operator's was touched: the foreign Pod is there, unowned; the
    // ConfigMap unchanged; every other Pod is controlled by the request of its name.
    let pod = f.pods().get("bystander").await?;
    ensure!(
        pod.uid() == foreign_pod.uid()
            && pod.owner_references().is_empty()
            && pod.metadata.deletion_timestamp.is_none(),
        "the foreign Pod was touched: {:?}",
        pod.metadata
    );
    ensure!(
        configmaps.get("bystander").await?.resource_version() == foreign_cm.resource_version(),
        "the foreign ConfigMap was modified"
    );
    let uids: std::collections::BTreeMap<String, String> = requests
        .iter()
        .map(|pr| (pr.name_any(), pr.uid().unwrap_or_default()))
        .collect();
    for pod in f.pods().list(&ListParams::default()).await? {
        if pod.name_any() == "bystander" {
            continue;
        }
        let owner = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        ensure!(
            owner.is_some() && owner.as_ref() == uids.get(&pod.name_any()),
            "Pod {} is not controlled by its request",
            pod.name_any()
        );
    }
    ensure!(op.is_alive(), "the restarted operator must survive");
    ensure!(metrics.errors_of("panic") == 0, "a reconcile panicked");
    op.stop().await?;

    // Bounded work through the storm. Each accepted create costs the operator a Pod create, an
    // Event and a status patch; each accepted spec update a Pod delete and create, two Events
    // and two status patches; status writes and label changes nothing (they leave the
    // generation alone). Twice that, with room for Event series: a loop would cost thousands.
    let (creates, updates) = (
        tallies[&Verb::Create].accepted,
        more[&Verb::Update].accepted,
    );
    let bound = 2 * (3 * creates + 6 * updates) as u64 + 50;
    ensure!(
        first.writes() <= bound,
        "{} writes for {creates} creates and {updates} updates accepted (at most {bound}): {first}",
        first.writes()
    );
    eprintln!(
        "hostile: {stored} requests stored. Setup {:.1} s, creates {:.1} s, updates and status \
         writes {:.1} s, served and idle {:.1} s, restarted and idle {:.1} s ({reconciles} \
         reconciles), quiet 5 s, total {:.1} s. Through the storm the operator made \
         {first_reconciles} reconciles and {} writes (bound {bound}): {first}",
        setup.as_secs_f64(),
        created.took.as_secs_f64(),
        changed.took.as_secs_f64(),
        served.as_secs_f64(),
        restarted.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        first.writes(),
    );
    Ok(())
}
