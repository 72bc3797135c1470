//! Hostile input, generated: CredentialsRequest documents (random secretRefs, provider kinds,
//! statements with odd effects, actions and conditions, huge and unicode strings, wrong types,
//! unknown nesting) sent raw to the real API server while the operator runs against moto. Every
//! document is either rejected with a message naming a field, or accepted and then given a
//! verdict (provisioned, or a condition saying why not); the operator survives all of them.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::Fixture;
use kube::api::ListParams;
use operon_cluster::wait;
use operon_envtest::hostile::{nested, post_all, sample, text};
use proptest::prelude::*;
use serde_json::{Value, json};

const CASES: usize = 80;

fn statement() -> impl Strategy<Value = Value> {
    let effect = prop_oneof![
        6 => Just(json!("Allow")),
        2 => Just(json!("Deny")),
        1 => text().prop_map(Value::from),
        1 => Just(json!(1)),
    ];
    let action = prop_oneof![
        6 => prop::collection::vec("[a-z0-9]{2,8}:[A-Z][A-Za-z*]{1,12}", 1..4).prop_map(Value::from),
        1 => Just(json!([])),
        1 => prop::collection::vec(text(), 0..3).prop_map(Value::from),
        1 => text().prop_map(Value::from),
    ];
    let resource = prop_oneof![
        6 => Just(json!("*")),
        1 => "arn:aws:s3:::[a-z]{1,10}/\\*".prop_map(Value::from),
        1 => text().prop_map(Value::from),
    ];
    let condition = prop::option::weighted(
        0.2,
        prop_oneof![
            Just(json!({ "StringEquals": { "aws:RequestedRegion": "us-east-1" } })),
            nested(3),
        ],
    );
    (effect, action, resource, condition).prop_map(|(effect, action, resource, condition)| {
        let mut entry = json!({ "effect": effect, "action": action, "resource": resource });
        if let Some(condition) = condition {
            entry["policyCondition"] = condition;
        }
        entry
    })
}

fn document(ns: String) -> impl Strategy<Value = Value> {
    let name = prop_oneof![
        6 => "[a-z]([-a-z0-9]{0,10}[a-z0-9])?".prop_map(Value::from),
        1 => text().prop_map(Value::from),
    ];
    let target_ns = prop_oneof![
        6 => Just(json!(ns)),
        1 => text().prop_map(Value::from),
    ];
    let kind = prop_oneof![
        8 => Just(json!("AWSProviderSpec")),
        1 => Just(json!("GCPProviderSpec")),
        1 => text().prop_map(Value::from),
    ];
    let statements = prop_oneof![
        6 => prop::collection::vec(statement(), 1..4).prop_map(Value::from),
        1 => Just(json!([])),
        1 => nested(2),
    ];
    (
        name,
        target_ns,
        kind,
        statements,
        prop::option::weighted(0.15, nested(3)),
    )
        .prop_map(|(name, target_ns, kind, statements, extra)| {
            let mut spec = json!({
                "secretRef": { "name": name, "namespace": target_ns },
                "providerSpec": {
                    "apiVersion": "cloudcredential.openshift.io/v1",
                    "kind": kind,
                    "statementEntries": statements,
                },
            });
            if let Some(extra) = extra {
                spec["providerSpec"]["extra"] = extra;
            }
            json!({
                "apiVersion": "cloudcredential.openshift.io/v1", "kind": "CredentialsRequest",
                "metadata": { "generateName": "hostile-" },
                "spec": spec,
            })
        })
}

#[tokio::test]
async fn generated_hostile_credentials_requests_are_rejected_clearly_or_answered() -> Result<()> {
    let f = Fixture::new("cred-hostile").await?;
    let op = f.operator().await?;
    let collection = format!(
        "/apis/cloudcredential.openshift.io/v1/namespaces/{}/credentialsrequests",
        f.ns
    );
    let documents = sample(&document(f.ns.clone()), CASES)?;
    let fields = ["spec", "metadata"];
    let bounds = (CASES / 5, CASES / 5);
    let accepted = post_all(&f.client, &collection, &documents, &fields, bounds).await?;
    let accepted = accepted.len();

    // Every accepted request gets a verdict: provisioned, ignored (another cloud), or a
    // condition explaining the failure (e.g. IAM refusing a malformed policy).
    let requests = f.requests();
    let verdicts = wait::until(
        "a verdict for every accepted request",
        Duration::from_secs(180),
        || async {
            let list = requests
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let pending: Vec<String> = list
                .items
                .iter()
                .filter(|cr| {
                    let status = cr.status.clone().unwrap_or_default();
                    !status.provisioned && !status.conditions.iter().any(|c| c.status == "True")
                })
                .map(|cr| cr.metadata.name.clone().unwrap_or_default())
                .collect();
            if pending.is_empty() {
                Ok(list.items)
            } else {
                Err(format!("{} pending: {pending:?}", pending.len()))
            }
        },
    )
    .await?;
    let provisioned = verdicts
        .iter()
        .filter(|cr| cr.status.as_ref().is_some_and(|s| s.provisioned))
        .count();
    eprintln!(
        "hostile: {provisioned} of {accepted} accepted requests provisioned, the rest explained by a condition"
    );
    ensure!(op.is_alive(), "the operator must survive every input");
    Ok(())
}
