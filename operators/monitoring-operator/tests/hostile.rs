//! Hostile input at scale, generated: 1000 ClusterOperator documents (random labels and
//! annotations, specs of every type, statuses with hostile conditions, related objects and
//! versions), then 300 updates (labels, specs, and the operator's own last-good-configuration
//! annotation set to hostile JSON) and 300 status writes, half of each on the `monitoring`
//! ClusterOperator the operator reports in — all sent raw, 12 at a time, by a user granted
//! edit rights on ClusterOperators and their status, not the operator, while monitoring-operator
//! runs with an invalid configuration (so that the last good one is what the stack runs).
//! Every answer is an acceptance or a refusal naming a field (never a server error); every
//! stored object stays readable by the operator's type; the operator never runs a
//! configuration that isn't valid, survives, takes a valid configuration afterwards, reports
//! its own status after a restart, goes quiet once done, and touches no other ClusterOperator.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};
use monitoring_operator::api::ClusterOperator;
use monitoring_operator::config::{CONFIG_KEY, CONFIG_MAP};
use monitoring_operator::controller::{self, CLUSTER_OPERATOR, LAST_GOOD, Settings};
use monitoring_operator::resources::Prometheus;
use operon_envtest::hostile::{
    Body, CONCURRENCY, Call, Verb, abbreviate, condition, nested, sample, storm, text,
};
use operon_harness::{Fixture, InProcess, assert_readable, wait_idle};
use operon_runtime::manager::Manager;
use operon_runtime::metrics::{ControllerMetrics, Metrics};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

const NS: &str = monitoring_operator::deploy::NAMESPACE;
const COLLECTION: &str = "/apis/config.openshift.io/v1/clusteroperators";
/// Documents created: the issue's "at least 1000 per CRD".
const CREATES: usize = 1000;
/// Updates and status writes, half on `monitoring`, half on the created ones.
const UPDATES: usize = 300;
const STATUS_WRITES: usize = 300;
/// The user who sends them: edit rights on ClusterOperators and their status, nothing else.
const USER: &str = "hostile-editor";
/// Where refusals may point (`ObjectMeta.labels`, `ObjectMeta.annotations`: how the API
/// server's JSON decoder names metadata of the wrong type, in a 400 without causes).
const ROOTS: [&str; 4] = ["spec", "status", "metadata", "ObjectMeta."];
/// A configuration that doesn't validate, that the stack must never run (at most 5 replicas).
const TOO_MANY_REPLICAS: &str = r#"{"prometheusK8s":{"replicas":100000}}"#;

type Operator = InProcess<Arc<ControllerMetrics>>;

/// A last-good-configuration annotation: valid configurations, JSON that doesn't validate
/// (too many replicas, a retention that isn't a duration, unknown keys), and text that isn't
/// JSON.
fn last_good() -> impl Strategy<Value = Value> {
    prop_oneof![
        2 => (1i32..6).prop_map(|n| json!(format!(r#"{{"prometheusK8s":{{"replicas":{n}}}}}"#))),
        2 => prop_oneof![Just(-5i64), Just(0), Just(6), Just(100_000), Just(i64::MAX)]
            .prop_map(|n| json!(format!(r#"{{"prometheusK8s":{{"replicas":{n}}}}}"#))),
        1 => Just(json!(r#"{"prometheusK8s":{"retention":"soon"}}"#)),
        1 => Just(json!(r#"{"enableUserWorkload":true}"#)),
        1 => Just(json!(r#"{"unknown":1}"#)),
        1 => text().prop_map(Value::from),
        1 => nested(2),
    ]
}

/// A status a user might write: hostile conditions, related objects and versions.
fn status() -> impl Strategy<Value = Value> {
    let related = prop::collection::vec(
        (text(), text(), prop::option::of(text()), text()).prop_map(
            |(g, r, ns, n)| json!({ "group": g, "resource": r, "namespace": ns, "name": n }),
        ),
        0..3,
    );
    let versions = prop::collection::vec(
        prop_oneof![
            (text(), text()).prop_map(|(n, v)| json!({ "name": n, "version": v })),
            nested(1),
        ],
        0..3,
    );
    let fields = (
        prop::option::weighted(0.8, prop::collection::vec(condition(), 0..5)),
        prop::option::weighted(0.4, related),
        prop::option::weighted(0.4, versions),
        prop::option::weighted(0.1, nested(2)),
    )
        .prop_map(|(conditions, related, versions, extra)| {
            let mut s = Map::new();
            for (k, v) in [
                ("conditions", conditions.map(Value::from)),
                ("relatedObjects", related.map(Value::from)),
                ("versions", versions.map(Value::from)),
                ("extra", extra),
            ] {
                if let Some(v) = v {
                    s.insert(k.into(), v);
                }
            }
            Value::Object(s)
        });
    prop_oneof![8 => fields, 1 => nested(3), 1 => Just(Value::Null)]
}

fn any_spec() -> impl Strategy<Value = Value> {
    prop_oneof![4 => Just(json!({})), 3 => nested(2), 1 => Just(Value::Null)]
}

fn document() -> impl Strategy<Value = Value> {
    (
        any_spec(),
        status(),
        prop::option::weighted(0.2, nested(2)),
        prop::option::weighted(0.2, last_good()),
    )
        .prop_map(|(spec, status, labels, good)| {
            let mut doc = json!({
                "apiVersion": "config.openshift.io/v1", "kind": "ClusterOperator",
                "metadata": { "generateName": "hostile-" },
                "spec": spec, "status": status,
            });
            if let Some(labels) = labels {
                doc["metadata"]["labels"] = labels;
            }
            if let Some(good) = good {
                doc["metadata"]["annotations"] = json!({ LAST_GOOD: good });
            }
            doc
        })
}

fn update() -> impl Strategy<Value = (u8, Value)> {
    prop_oneof![
        (
            Just(0u8),
            last_good().prop_map(|g| json!({ "annotations": { LAST_GOOD: g } }))
        ),
        (Just(0u8), nested(2).prop_map(|l| json!({ "labels": l }))),
        (Just(1u8), any_spec()),
    ]
}

fn config_map(text: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIG_MAP.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(CONFIG_KEY.into(), text.into())])),
        ..Default::default()
    }
}

/// `type=status (reason)` of each condition.
fn conditions(co: &ClusterOperator) -> Vec<String> {
    co.status
        .iter()
        .flat_map(|s| &s.conditions)
        .map(|c| {
            format!(
                "{}={} ({})",
                c.type_,
                c.status,
                c.reason.as_deref().unwrap_or_default()
            )
        })
        .collect()
}

async fn start(f: &Fixture) -> Result<Operator> {
    let manifests = monitoring_operator::deploy::manifests("test")?;
    let settings = Settings {
        crds_dir: operon_assets::prometheus_operator_crd_dir(),
        ..Settings::default()
    };
    let registry = Metrics::new();
    let metrics = registry.controller("monitoring");
    Ok(
        InProcess::start(f.env, &manifests, Vec::new(), metrics, |client, stop| {
            let mut manager = Manager::new("monitoring-operator", client)
                .instance(Some("test".into()))
                .metrics(registry)
                .stop(stop);
            let registered = controller::register(&mut manager, &settings);
            async move {
                registered.map_err(|e| e.to_string())?;
                manager.run().await;
                Ok::<(), String>(())
            }
        })
        .await?,
    )
}

#[tokio::test]
async fn a_thousand_hostile_documents_updates_and_status_writes() -> Result<()> {
    let t0 = Instant::now();
    let f = Fixture::new("monitoring-hostile").await?;
    let client = f.client.clone();
    operon_cluster::apply::apply_crd(&client, &ClusterOperator::crd(), "tests").await?;
    let manifests = monitoring_operator::deploy::manifests("test")?;
    operon_cluster::apply::apply(&client, &manifests.namespace_object(), "tests").await?;
    let crds_dir = operon_assets::prometheus_operator_crd_dir();
    ensure!(
        crds_dir.is_dir(),
        "{} missing: `cargo xtask k8s build` copies the CRDs there",
        crds_dir.display()
    );
    // An invalid configuration: the stack runs the last good one, which the annotation holds.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    let pp = PostParams::default();
    config_maps
        .create(&pp, &config_map("prometheusK8s:\n  retention: soon\n"))
        .await?;
    // Bystanders: another ClusterOperator, and a ConfigMap beside the stack.
    let operators: Api<ClusterOperator> = Api::all(client.clone());
    let bystander = operators
        .create(
            &pp,
            &serde_json::from_value(json!({
                "apiVersion": "config.openshift.io/v1", "kind": "ClusterOperator",
                "metadata": { "name": "bystander" }, "spec": {},
            }))?,
        )
        .await?;
    let mut bystander_cm = config_map("keep: me\n");
    bystander_cm.metadata.name = Some("bystander".into());
    let bystander_cm = config_maps.create(&pp, &bystander_cm).await?;

    let op = start(&f).await?;
    let co = f
        .wait_for(
            &operators,
            CLUSTER_OPERATOR,
            "Degraded: InvalidConfiguration",
            |co| match conditions(co)
                .iter()
                .any(|c| c == "Degraded=True (InvalidConfiguration)")
            {
                true => Ok(()),
                false => Err(format!("{:?}", conditions(co))),
            },
        )
        .await?;
    let own_status = co.status.clone().unwrap_or_default();
    operon_envtest::grant_cluster(
        &client,
        USER,
        "hostile-editor",
        json!([
            { "apiGroups": ["config.openshift.io"], "resources": ["clusteroperators"],
              "verbs": ["create", "get", "list", "watch", "update", "patch"] },
            { "apiGroups": ["config.openshift.io"], "resources": ["clusteroperators/status"],
              "verbs": ["get", "update", "patch"] },
        ]),
    )
    .await?;
    let user = f.env.impersonating(USER, &["system:authenticated"]).await?;
    let setup = t0.elapsed();

    // 1. Creates.
    let creates: Vec<Call> = sample(&document(), CREATES)?
        .into_iter()
        .map(|doc| Call {
            verb: Verb::Create,
            path: COLLECTION.into(),
            body: Body::Create(doc),
        })
        .collect();
    let created = storm(&user, &creates, CONCURRENCY).await?;
    let tallies = created.check(&ROOTS, (CREATES / 5, CREATES / 20))?;
    let names: Vec<String> = created
        .accepted(Verb::Create)
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
        .collect();

    // 2. Updates and status writes, half on `monitoring` (merge patches: the operator writes
    // it after each), half on the created ones (merge patches and replacements).
    let updates = sample(&update(), UPDATES)?;
    let writes = sample(&(prop::bool::ANY, status()), STATUS_WRITES)?;
    let mut changes = Vec::new();
    for i in 0..UPDATES.max(STATUS_WRITES) {
        let ours = i % 2 == 0;
        let name = if ours {
            CLUSTER_OPERATOR
        } else {
            &names[(i * 7) % names.len()]
        };
        let object = format!("{COLLECTION}/{name}");
        if let Some((kind, value)) = updates.get(i) {
            let body = match (kind, ours) {
                (0, _) => Body::MergePatch(json!({ "metadata": value })),
                (_, true) => Body::MergePatch(json!({ "spec": value })),
                _ => Body::Replace(Map::from_iter([("spec".to_owned(), value.clone())])),
            };
            changes.push(Call {
                verb: Verb::Update,
                path: object.clone(),
                body,
            });
        }
        if let Some((replace, status)) = writes.get(i) {
            let body = match replace & !ours {
                true => Body::Replace(Map::from_iter([("status".to_owned(), status.clone())])),
                false => Body::MergePatch(json!({ "status": status })),
            };
            changes.push(Call {
                verb: Verb::Status,
                path: format!("{object}/status"),
                body,
            });
        }
    }
    // Last, deterministically: a last good configuration that doesn't validate.
    changes.push(Call {
        verb: Verb::Update,
        path: format!("{COLLECTION}/{CLUSTER_OPERATOR}"),
        body: Body::MergePatch(
            json!({ "metadata": { "annotations": { LAST_GOOD: TOO_MANY_REPLICAS } } }),
        ),
    });
    let changed = storm(&user, &changes, CONCURRENCY).await?;
    let more = changed.check(&ROOTS, (UPDATES / 10, UPDATES / 10))?;
    // The storm's last write must be the bad configuration (a replace of the annotation may
    // have been slower): set it again, to be sure.
    operators
        .patch(
            CLUSTER_OPERATOR,
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "annotations": { LAST_GOOD: TOO_MANY_REPLICAS } } }),
            ),
        )
        .await?;

    // 3. Every stored object is readable by the operator's type, and the operator lives.
    let stored = assert_readable(&operators).await?;
    ensure!(op.is_alive(), "the operator must survive every input");

    // 4. The stack never runs a configuration that doesn't validate: with the ConfigMap
    // invalid and the annotation not a valid configuration, it runs the defaults (2 replicas).
    let t1 = Instant::now();
    let metrics = op.metrics.clone();
    wait_idle(&metrics, Duration::from_secs(2), Duration::from_secs(120))
        .await
        .with_context(|| format!("requests so far: {}", op.requests()))?;
    let prometheuses: Api<Prometheus> = Api::namespaced(client.clone(), NS);
    let replicas = prometheuses.get("k8s").await?.spec["replicas"].clone();
    ensure!(
        replicas == json!(2),
        "the stack runs an invalid last good configuration: Prometheus k8s has {replicas} replicas"
    );
    // A valid configuration afterwards is served by the operator that lived through it all.
    config_maps
        .replace(CONFIG_MAP, &pp, &{
            let mut cm = config_maps.get(CONFIG_MAP).await?;
            cm.data = config_map("prometheusK8s:\n  retention: 3d\n  replicas: 1\n").data;
            cm
        })
        .await?;
    f.wait_for(&prometheuses, "k8s", "retention 3d, 1 replica", |p| {
        (p.spec["replicas"] == 1 && p.spec["retention"] == "3d")
            .then_some(())
            .ok_or_else(|| format!("{}", p.spec))
    })
    .await?;
    f.wait_for(
        &operators,
        CLUSTER_OPERATOR,
        "Degraded=False",
        |co| match conditions(co)
            .iter()
            .any(|c| c.starts_with("Degraded=False"))
        {
            true => Ok(()),
            false => Err(format!("{:?}", conditions(co))),
        },
    )
    .await?;
    wait_idle(&metrics, Duration::from_secs(2), Duration::from_secs(120)).await?;
    let served = t1.elapsed();
    let first = op.requests();
    let first_reconciles = metrics.reconciles();
    ensure!(metrics.errors_of("panic") == 0, "a reconcile panicked");
    op.stop().await.context("the operator must stop cleanly")?;

    // 5. A restart: the status is the operator's own again — its four conditions, its related
    // objects and versions — whatever users wrote.
    let t2 = Instant::now();
    let op = start(&f).await?;
    let metrics = op.metrics.clone();
    let reconciles = wait_idle(&metrics, Duration::from_secs(2), Duration::from_secs(120)).await?;
    let restarted = t2.elapsed();
    let co = operators.get(CLUSTER_OPERATOR).await?;
    let status = co.status.clone().unwrap_or_default();
    let types: Vec<&str> = status.conditions.iter().map(|c| c.type_.as_str()).collect();
    ensure!(
        types == ["Available", "Progressing", "Degraded", "Upgradeable"]
            && status.related_objects == own_status.related_objects
            && status.versions == own_status.versions,
        "not the operator's status: {}",
        abbreviate(&serde_json::to_value(&status)?)
    );

    // 6. Quiet once done: nothing written in 5 s, hardly a reconcile (the stack's Pods never
    // get ready on kwok, so it looks again every 15 s).
    let quiet_from = op.requests();
    let quiet_reconciles = metrics.reconciles();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let quiet = op.requests().since(&quiet_from);
    let quiet_reconciles = metrics.reconciles() - quiet_reconciles;
    ensure!(
        quiet.writes() == 0 && quiet_reconciles <= 2,
        "not quiet: {quiet_reconciles} reconciles, requests {quiet}"
    );

    // 7. Nothing that isn't the operator's was touched.
    ensure!(
        operators.get("bystander").await?.resource_version() == bystander.resource_version(),
        "another ClusterOperator was modified"
    );
    ensure!(
        config_maps.get("bystander").await?.resource_version() == bystander_cm.resource_version(),
        "a ConfigMap beside the stack was modified"
    );
    ensure!(op.is_alive(), "the restarted operator must survive");
    ensure!(metrics.errors_of("panic") == 0, "a reconcile panicked");
    op.stop().await?;

    // Bounded work through the storm: each write of `monitoring` by the user (accepted) costs
    // the operator at most a status patch, an Event and a patch of its annotation; installing
    // the stack (CRDs, some thirty objects, twice: for the bad and the valid configuration) at
    // most a few hundred. A loop would cost thousands.
    let on_monitoring = changed
        .calls
        .iter()
        .zip(&changed.outcomes)
        .filter(|(c, o)| c.path.contains(&format!("/{CLUSTER_OPERATOR}")) && o.refused.is_none())
        .count() as u64;
    let bound = 3 * on_monitoring + 300;
    ensure!(
        first.writes() <= bound,
        "{} writes for {on_monitoring} accepted writes of {CLUSTER_OPERATOR} (at most {bound}): {first}",
        first.writes()
    );
    eprintln!(
        "hostile: {stored} ClusterOperators stored ({} created, {} updates and {} status writes \
         accepted, {on_monitoring} of them on {CLUSTER_OPERATOR}). Setup {:.1} s, creates \
         {:.1} s, updates and status writes {:.1} s, checked, reconfigured and idle {:.1} s, \
         restarted and idle {:.1} s ({reconciles} reconciles), quiet 5 s, total {:.1} s. \
         Through it all the operator made {first_reconciles} reconciles and {} writes (bound \
         {bound}): {first}",
        tallies[&Verb::Create].accepted,
        more[&Verb::Update].accepted,
        more[&Verb::Status].accepted,
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
