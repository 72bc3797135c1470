//! Hostile input, generated: PodRequest documents with random names, images and commands
//! (valid and not, huge strings, unicode, control characters, wrong types, deep nesting, unknown
//! fields) sent raw to the real API server while pod-operator runs. Every document is either
//! rejected with a message naming a field, or accepted and then reconciled to a Ready or
//! Degraded condition; the operator survives all of them.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::Fixture;
use kube::api::ListParams;
use operon_cluster::wait;
use operon_envtest::hostile::{nested, post_all, sample, text};
use proptest::prelude::*;
use serde_json::{Value, json};

/// How many documents: enough to cover every branch below several times, small enough for CI.
const CASES: usize = 120;

fn spec() -> impl Strategy<Value = Value> {
    // Mostly plausible values, so that many documents pass and get reconciled; the rest hostile.
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
            let mut spec = serde_json::Map::new();
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

fn document() -> impl Strategy<Value = Value> {
    let spec = prop_oneof![
        8 => spec(),
        1 => nested(3),
        1 => Just(Value::Null),
    ];
    (spec, prop::option::weighted(0.2, nested(2))).prop_map(|(spec, labels)| {
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

#[tokio::test]
async fn generated_hostile_podrequests_are_rejected_clearly_or_reconciled() -> Result<()> {
    let f = Fixture::new("hostile").await?;
    let op = f.operator().await?;
    let collection = format!(
        "/apis/pod.jewzaam.org/v1alpha1/namespaces/{}/podrequests",
        f.ns
    );

    let documents = sample(&document(), CASES)?;
    let fields = ["spec", "metadata", "ObjectMeta.labels"];
    post_all(
        &f.client,
        &collection,
        &documents,
        &fields,
        (1, CASES / 4 + 1),
    )
    .await?;

    // Every accepted request gets a verdict from the operator, which is still running.
    let requests = f.requests();
    wait::until(
        "every accepted request reconciled",
        Duration::from_secs(180),
        || async {
            let list = requests
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let pending: Vec<String> = list
                .items
                .iter()
                .filter(|pr| {
                    let status = pr.status.clone().unwrap_or_default();
                    status.observed_generation != pr.metadata.generation
                        || (operon_runtime::conditions::get(&status.conditions, "Ready").is_none())
                })
                .map(|pr| pr.metadata.name.clone().unwrap_or_default())
                .collect();
            if pending.is_empty() {
                Ok(())
            } else {
                Err(format!("{} pending: {pending:?}", pending.len()))
            }
        },
    )
    .await?;
    ensure!(op.is_alive(), "the operator must survive every input");
    Ok(())
}
