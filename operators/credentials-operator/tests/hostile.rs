//! Hostile input at scale, generated: 1000 CredentialsRequest documents (random secretRefs,
//! provider kinds, statements with odd effects, actions and conditions, huge and unicode
//! strings, wrong types, unknown nesting), then 300 updates of their specs and labels and 300
//! status writes (hostile conditions and timestamps, forged `provisioned` flags and IAM
//! identities naming users the operator never minted) — all sent raw, 12 at a time, by a user
//! granted edit rights on CredentialsRequests and their status, not the operator, while it runs
//! against moto. Every answer is an acceptance or a refusal naming a field (never a server
//! error); every stored object stays readable by the operator's type; the operator survives,
//! provisions a well-formed request afterwards, gives every request a verdict after a restart,
//! goes quiet once done, and never touches a Secret or an IAM user it didn't make — not even
//! when the requests are deleted.

mod common;

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result, ensure};
use common::{CLUSTER_ID, Fixture};
use credentials_operator::api::condition;
use credentials_operator::mint;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{DeleteParams, ListParams, PostParams};
use operon_cluster::wait;
use operon_envtest::hostile::{
    Body, CONCURRENCY, Call, Verb, abbreviate, condition as any_condition, nested, sample, storm,
    text, timestamp,
};
use operon_harness::{assert_readable, wait_idle};
use proptest::prelude::*;
use serde_json::{Map, Value, json};

/// Documents created: the "at least 1000 per CRD".
const CREATES: usize = 1000;
/// Updates and status writes, spread over the accepted requests.
const UPDATES: usize = 300;
const STATUS_WRITES: usize = 300;
/// The user who sends them: edit rights on CredentialsRequests and their status, nothing else.
const USER: &str = "hostile-editor";
/// Where refusals may point (`ObjectMeta.labels`, `ObjectMeta.annotations`: how the API
/// server's JSON decoder names metadata of the wrong type, in a 400 without causes).
const ROOTS: [&str; 4] = ["spec", "status", "metadata", "ObjectMeta."];
/// IAM users that exist before the operator starts and that it must never touch: a user of
/// the account, and one named as this operator names the user of a request `victim` (of
/// another namespace, say) and tagged as this cluster's.
const BYSTANDER_USER: &str = "bystander-user";
fn victim_user() -> String {
    format!("{}abcde", mint::user_name_prefix(CLUSTER_ID, "victim"))
}
/// The condition types the operator sets.
const OPERATOR_CONDITIONS: [&str; 5] = [
    condition::INSUFFICIENT_CLOUD_CREDS,
    condition::MISSING_TARGET_NAMESPACE,
    condition::PROVISION_FAILURE,
    condition::DEPROVISION_FAILURE,
    condition::IGNORED,
];

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
    // Text IAM refuses in a policy is rarer than the rest: each such request is retried with
    // backoff against moto, which dominates the suite's time.
    let resource = prop_oneof![
        12 => Just(json!("*")),
        2 => "arn:aws:s3:::[a-z]{1,10}/\\*".prop_map(Value::from),
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

fn spec(ns: String) -> impl Strategy<Value = Value> {
    // Valid Secret names long enough not to collide by chance: two requests naming the same
    // Secret is a case of its own (the `foreign-secret` request below), and every collision
    // costs the restart phase a request retried with backoff.
    let name = prop_oneof![
        6 => "[a-z][-a-z0-9]{3,10}[a-z0-9]".prop_map(Value::from),
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
            spec
        })
}

fn document(ns: String) -> impl Strategy<Value = Value> {
    (spec(ns), prop::option::weighted(0.1, nested(2))).prop_map(|(spec, labels)| {
        let mut doc = json!({
            "apiVersion": "cloudcredential.openshift.io/v1", "kind": "CredentialsRequest",
            "metadata": { "generateName": "hostile-" },
            "spec": spec,
        });
        if let Some(labels) = labels {
            doc["metadata"]["labels"] = labels;
        }
        doc
    })
}

/// An IAM identity a user might record: the bystander, the victim, a plausible minted name, or
/// hostile text.
fn identity() -> impl Strategy<Value = Value> {
    let user = prop_oneof![
        3 => Just(json!(BYSTANDER_USER)),
        2 => Just(json!(victim_user())),
        2 => "[a-z]{1,10}-[a-z0-9]{5}".prop_map(|u| json!(format!("{CLUSTER_ID}-{u}"))),
        1 => text().prop_map(Value::from),
        1 => Just(json!(42)),
    ];
    (user, prop::option::weighted(0.7, text())).prop_map(|(user, policy)| {
        let policy = policy.map_or_else(
            || json!(format!("{}-policy", user.as_str().unwrap_or_default())),
            Value::from,
        );
        json!({
            "apiVersion": "cloudcredential.openshift.io/v1", "kind": "AWSProviderStatus",
            "user": user, "policy": policy,
        })
    })
}

/// A status a user might write: forged flags, generations, times, identities and conditions.
fn status() -> impl Strategy<Value = Value> {
    let condition = (any_condition(), timestamp()).prop_map(|(mut c, probe)| {
        if let Value::Object(fields) = &mut c {
            fields.remove("observedGeneration");
            fields.insert("lastProbeTime".into(), probe);
        }
        c
    });
    let fields = (
        prop::option::weighted(
            0.6,
            prop_oneof![
                any::<bool>().prop_map(Value::from),
                text().prop_map(Value::from)
            ],
        ),
        prop::option::weighted(0.4, any::<i64>().prop_map(Value::from)),
        prop::option::weighted(0.4, timestamp()),
        prop::option::weighted(0.25, identity()),
        prop::option::weighted(0.6, prop::collection::vec(condition, 0..4)),
        prop::option::weighted(0.1, nested(2)),
    )
        .prop_map(
            |(provisioned, generation, synced, identity, conditions, extra)| {
                let mut s = Map::new();
                for (k, v) in [
                    ("provisioned", provisioned),
                    ("lastSyncGeneration", generation),
                    ("lastSyncTimestamp", synced),
                    ("providerStatus", identity),
                    ("conditions", conditions.map(Value::from)),
                    ("extra", extra),
                ] {
                    if let Some(v) = v {
                        s.insert(k.into(), v);
                    }
                }
                Value::Object(s)
            },
        );
    prop_oneof![
        8 => fields,
        1 => nested(3),
        1 => identity().prop_map(|p| json!({ "providerStatus": p, "provisioned": false })),
    ]
}

fn update(ns: String) -> impl Strategy<Value = (u8, Value)> {
    prop_oneof![
        (Just(0u8), spec(ns.clone())),
        (Just(1u8), spec(ns)),
        (
            Just(2u8),
            (nested(2), text())
                .prop_map(|(labels, a)| json!({ "labels": labels, "annotations": { "note": a } }))
        ),
    ]
}

/// The access key IDs, tags and inline policy names of an IAM user.
async fn iam_facts(f: &Fixture, user: &str) -> Result<(Vec<String>, Vec<String>, Vec<String>)> {
    let iam = f.iam().await;
    let mut keys: Vec<String> = iam
        .list_access_keys(user)
        .await?
        .into_iter()
        .map(|k| k.id)
        .collect();
    keys.sort();
    let tags = iam.sdk().list_user_tags().user_name(user).send().await?;
    let mut tags: Vec<String> = tags
        .tags()
        .iter()
        .map(|t| format!("{}={}", t.key(), t.value()))
        .collect();
    tags.sort();
    let policies = iam
        .sdk()
        .list_user_policies()
        .user_name(user)
        .send()
        .await?;
    Ok((keys, tags, policies.policy_names().to_vec()))
}

#[tokio::test]
async fn a_thousand_hostile_documents_updates_and_status_writes() -> Result<()> {
    let t0 = Instant::now();
    let f = Fixture::new("cred-hostile").await?;
    let collection = format!(
        "/apis/cloudcredential.openshift.io/v1/namespaces/{}/credentialsrequests",
        f.ns
    );
    // Bystanders: a Secret nobody asked the operator about (a request names it too), and two
    // IAM users with a key each.
    let foreign: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "bystander" }, "stringData": { "k": "v" },
    }))?;
    let foreign = f.secrets().create(&PostParams::default(), &foreign).await?;
    let iam = f.iam().await;
    iam.create_user(BYSTANDER_USER, &[], None).await?;
    iam.create_access_key(BYSTANDER_USER).await?;
    let cluster_tag = (
        format!("kubernetes.io/cluster/{CLUSTER_ID}"),
        "owned".into(),
    );
    iam.create_user(&victim_user(), &[cluster_tag], None)
        .await?;
    iam.create_access_key(&victim_user()).await?;
    let before = (
        iam_facts(&f, BYSTANDER_USER).await?,
        iam_facts(&f, &victim_user()).await?,
    );

    let op = f.operator().await?;
    operon_envtest::grant(
        &f.client,
        &f.ns,
        USER,
        "hostile-editor",
        json!([
            { "apiGroups": ["cloudcredential.openshift.io"], "resources": ["credentialsrequests"],
              "verbs": ["create", "get", "list", "watch", "update", "patch"] },
            { "apiGroups": ["cloudcredential.openshift.io"],
              "resources": ["credentialsrequests/status"], "verbs": ["get", "update", "patch"] },
        ]),
    )
    .await?;
    let user = f.env.impersonating(USER, &["system:authenticated"]).await?;
    let setup = t0.elapsed();

    // 1. Creates, and two by name: one for the foreign Secret, one named `victim`.
    let mut creates: Vec<Call> = sample(&document(f.ns.clone()), CREATES)?
        .into_iter()
        .map(|doc| Call {
            verb: Verb::Create,
            path: collection.clone(),
            body: Body::Create(doc),
        })
        .collect();
    for (name, secret) in [("foreign-secret", "bystander"), ("victim", "victim-creds")] {
        let mut cr = f.sample(name, secret, None)?;
        cr.metadata.namespace = None;
        creates.push(Call {
            verb: Verb::Create,
            path: collection.clone(),
            body: Body::Create(serde_json::to_value(&cr)?),
        });
    }
    let created = storm(&user, &creates, CONCURRENCY).await?;
    let tallies = created.check(&ROOTS, (CREATES / 10, CREATES / 5))?;
    let names: Vec<String> = created
        .accepted(Verb::Create)
        .filter_map(|o| o["metadata"]["name"].as_str().map(str::to_owned))
        .collect();
    ensure!(names.iter().any(|n| n == "victim"));

    // 2. Updates and status writes, interleaved, over the accepted requests; the `victim`
    // request's status names the victim's user.
    let updates = sample(&update(f.ns.clone()), UPDATES)?;
    let writes = sample(&(prop::bool::ANY, status()), STATUS_WRITES)?;
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
        if let Some((replace, status)) = writes.get(i) {
            let body = match replace {
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
    let victim = victim_user();
    changes.push(Call {
        verb: Verb::Status,
        path: format!("{collection}/victim/status"),
        body: Body::MergePatch(
            json!({ "status": { "provisioned": false, "providerStatus": {
                "apiVersion": "cloudcredential.openshift.io/v1", "kind": "AWSProviderStatus",
                "user": victim, "policy": format!("{victim}-policy"),
            }}}),
        ),
    });
    let changed = storm(&user, &changes, CONCURRENCY).await?;
    let more = changed.check(&ROOTS, (UPDATES / 10, UPDATES / 10))?;

    // 3. Every stored object is readable by the operator's type, and the operator lives.
    let stored = assert_readable(&f.requests()).await?;
    ensure!(op.is_alive(), "the operator must survive every input");

    // 4. A well-formed request after the storm is provisioned by the operator that lived
    // through it, which then goes idle; no reconcile panicked.
    let t1 = Instant::now();
    f.create(&f.sample("after-storm", "after-storm-creds", None)?)
        .await?;
    f.wait_provisioned("after-storm").await?;
    let metrics = op.metrics.clone();
    wait_idle(&metrics, Duration::from_secs(2), Duration::from_secs(180))
        .await
        .with_context(|| format!("requests so far: {}", op.requests()))?;
    let served = t1.elapsed();
    let first = op.requests();
    let first_reconciles = metrics.reconciles();
    ensure!(metrics.errors_of("panic") == 0, "a reconcile panicked");
    op.stop().await.context("the operator must stop cleanly")?;

    // 5. A restart (every request reconciled again, forged identities read from the status):
    // every request gets a verdict.
    let t2 = Instant::now();
    let op = f.operator().await?;
    let metrics = op.metrics.clone();
    let reconciles = wait_idle(&metrics, Duration::from_secs(2), Duration::from_secs(180)).await?;
    let restarted = t2.elapsed();
    let requests = f.requests().list(&ListParams::default()).await?.items;
    let without_verdict: Vec<String> = requests
        .iter()
        .filter(|cr| {
            let status = cr.status.clone().unwrap_or_default();
            let current = Some(status.last_sync_generation) == cr.metadata.generation;
            let explained = status
                .conditions
                .iter()
                .any(|c| c.status == "True" && OPERATOR_CONDITIONS.contains(&c.type_.as_str()));
            !(explained || (status.provisioned && current))
        })
        .map(|cr| {
            let status = serde_json::to_value(&cr.status).unwrap_or_default();
            format!("{}: {}", cr.name_any(), abbreviate(&status))
        })
        .collect();
    ensure!(
        without_verdict.is_empty(),
        "{} requests without the operator's verdict: {:?}",
        without_verdict.len(),
        &without_verdict[..without_verdict.len().min(3)]
    );

    // 6. Quiet once done. A request whose sync fails (IAM refusing a malformed policy, a
    // foreign Secret or user) is retried with exponential backoff from 5 ms: after 2 s without
    // a reconcile, its next retry is over 2 s away and the one after that over 4 s, so in 5 s
    // it comes due at most twice, writing at most an Event and its status each time. Every other request is done until something changes. A hot loop would reconcile
    // many times a second.
    // Why they fail, by the first words of the message (for the summary below).
    let mut failures: BTreeMap<String, usize> = BTreeMap::new();
    for cr in &requests {
        let failure = cr.status.iter().flat_map(|s| &s.conditions).find(|c| {
            c.status == "True"
                && [condition::PROVISION_FAILURE, condition::DEPROVISION_FAILURE]
                    .contains(&c.type_.as_str())
        });
        if let Some(c) = failure {
            let message = c.message.as_deref().unwrap_or_default();
            let words: Vec<&str> = message.split_whitespace().take(6).collect();
            *failures.entry(words.join(" ")).or_default() += 1;
        }
    }
    let failing = failures.values().sum::<usize>() as u64;
    let quiet_from = op.requests();
    let quiet_reconciles = metrics.reconciles();
    tokio::time::sleep(Duration::from_secs(5)).await;
    let quiet = op.requests().since(&quiet_from);
    let quiet_reconciles = metrics.reconciles() - quiet_reconciles;
    ensure!(
        quiet_reconciles <= 2 * failing + 2 && quiet.writes() <= 2 * quiet_reconciles,
        "not quiet: {quiet_reconciles} reconciles for {failing} failing requests, requests {quiet}"
    );
    ensure!(metrics.errors_of("panic") == 0, "a reconcile panicked");

    // 7. Every request deleted: the operator deprovisions what it minted and nothing else.
    let t3 = Instant::now();
    let provisioned = requests
        .iter()
        .filter(|cr| cr.status.as_ref().is_some_and(|s| s.provisioned))
        .count();
    f.requests()
        .delete_collection(&DeleteParams::default(), &ListParams::default())
        .await?;
    let api = f.requests();
    wait::until(
        "every request deprovisioned and gone",
        Duration::from_secs(180),
        || async {
            match api.list(&ListParams::default()).await {
                Ok(list) if list.items.is_empty() => Ok(()),
                Ok(list) => Err(format!("{} left", list.items.len())),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    let deleted = t3.elapsed();
    ensure!(op.is_alive(), "the restarted operator must survive");
    ensure!(metrics.errors_of("panic") == 0, "a reconcile panicked");
    op.stop().await?;

    // 8. Nothing that isn't the operator's was touched: the foreign Secret, and the two IAM
    // users, their keys, tags and policies.
    ensure!(
        f.secrets().get("bystander").await?.resource_version() == foreign.resource_version(),
        "the foreign Secret was modified"
    );
    let after = (
        iam_facts(&f, BYSTANDER_USER).await?,
        iam_facts(&f, &victim_user()).await?,
    );
    ensure!(
        after == before,
        "IAM users the operator didn't mint were touched: before {before:?}, after {after:?}"
    );
    let left: Vec<String> = f
        .iam_users()
        .await?
        .into_iter()
        .filter(|u| u != BYSTANDER_USER && *u != victim_user())
        .collect();
    let secrets: BTreeMap<String, String> = f
        .secrets()
        .list(&ListParams::default())
        .await?
        .into_iter()
        .map(|s| (s.name_any(), s.resource_version().unwrap_or_default()))
        .collect();

    let (creates, updates) = (
        tallies[&Verb::Create].accepted,
        more[&Verb::Update].accepted,
    );
    eprintln!(
        "hostile: {stored} requests stored, {provisioned} provisioned after the restart, \
         {failing} failing ({quiet_reconciles} reconciles in the quiet 5 s): {failures:?}; \
         {} minted users left after every request was deleted (forged identities made the \
         operator forget them), Secrets left: {:?}. Setup {:.1} s, creates {:.1} s, updates \
         and status writes {:.1} s, served and idle {:.1} s, restarted and idle {:.1} s \
         ({reconciles} reconciles), quiet 5 s, deleted {:.1} s, total {:.1} s. Through the \
         storm ({creates} creates, {updates} updates accepted) the operator made \
         {first_reconciles} reconciles and {} writes: {first}",
        left.len(),
        secrets.keys().collect::<Vec<_>>(),
        setup.as_secs_f64(),
        created.took.as_secs_f64(),
        changed.took.as_secs_f64(),
        served.as_secs_f64(),
        restarted.as_secs_f64(),
        deleted.as_secs_f64(),
        t0.elapsed().as_secs_f64(),
        first.writes(),
    );
    Ok(())
}
