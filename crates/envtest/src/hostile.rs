//! Hostile input for tests: generated strings and JSON that stress what an API server and an
//! operator accept (unicode, control characters, huge values, wrong types, deep nesting), drawn
//! deterministically (a fixed seed, so a failure reproduces), and a raw POST that sends any JSON
//! document as bytes — most hostile documents have no Rust type.

use kube::Client;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::Value;

use crate::Error;

/// Strings from plausible to hostile: DNS labels, image-like, arbitrary and printable unicode,
/// empty, over 63, 600 and 40 000 characters, a NUL byte, emoji.
pub fn text() -> BoxedStrategy<String> {
    prop_oneof![
        "[a-z0-9]([-a-z0-9]{0,20}[a-z0-9])?",
        "busybox(:[0-9.]{1,6})?",
        ".{0,40}",
        "\\PC{0,80}",
        Just(String::new()),
        Just("x".repeat(70)),
        Just("y".repeat(600)),
        Just("z".repeat(40_000)),
        Just("//".into()),
        Just("nul\u{0}byte".into()),
        Just("ünïcödé-🚀".into()),
    ]
    .boxed()
}

/// Arbitrary JSON up to `depth` levels: scalars of every type, arrays and objects.
pub fn nested(depth: u32) -> BoxedStrategy<Value> {
    let leaf = prop_oneof![
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        text().prop_map(Value::from),
        Just(Value::Null),
    ];
    leaf.prop_recursive(depth, 32, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::btree_map("[a-zA-Z]{1,8}", inner, 0..4)
                .prop_map(|m| Value::Object(m.into_iter().collect())),
        ]
    })
    .boxed()
}

/// `n` values of `strategy`, from a fixed seed.
pub fn sample<S: Strategy>(strategy: &S, n: usize) -> Result<Vec<S::Value>, Error> {
    let mut runner = TestRunner::new_with_rng(
        Config::default(),
        TestRng::deterministic_rng(RngAlgorithm::ChaCha),
    );
    (0..n)
        .map(|_| {
            strategy
                .new_tree(&mut runner)
                .map(|tree| tree.current())
                .map_err(|e| Error::Hostile(e.to_string()))
        })
        .collect()
}

/// POSTs `document` as raw JSON bytes to `collection` (e.g.
/// `/apis/<group>/<version>/namespaces/<ns>/<plural>`). `Ok(Ok(created))` when accepted,
/// `Ok(Err(status))` when the API server refused it.
pub async fn post_raw(
    client: &Client,
    collection: &str,
    document: &Value,
) -> Result<Result<Value, kube::core::Status>, Error> {
    let body = serde_json::to_vec(document).map_err(|e| Error::Hostile(e.to_string()))?;
    let request = http::Request::post(collection)
        .header("content-type", "application/json")
        .body(body)
        .map_err(|e| Error::Hostile(e.to_string()))?;
    match client.request_text(request).await {
        Ok(text) => Ok(Ok(
            serde_json::from_str(&text).map_err(|e| Error::Hostile(e.to_string()))?
        )),
        Err(kube::Error::Api(status)) => Ok(Err(*status)),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// POSTs every document of `documents` to `collection`. Each must be either accepted or refused
/// with 400/422 and a message naming one of `fields`; at least `min_accepted` must be accepted
/// and `min_rejected` refused (the generators aim at both). Returns the accepted objects' names.
pub async fn post_all(
    client: &Client,
    collection: &str,
    documents: &[Value],
    fields: &[&str],
    (min_accepted, min_rejected): (usize, usize),
) -> Result<Vec<String>, Error> {
    let (mut accepted, mut rejected) = (Vec::new(), 0usize);
    for (i, doc) in documents.iter().enumerate() {
        match post_raw(client, collection, doc).await? {
            Ok(created) => accepted.push(
                created["metadata"]["name"]
                    .as_str()
                    .unwrap_or_default()
                    .to_owned(),
            ),
            Err(status) if !matches!(status.code, 400 | 422) => {
                return Err(Error::Hostile(format!(
                    "case {i}: unexpected {} {}",
                    status.code, status.message
                )));
            }
            Err(status) if !fields.iter().any(|f| status.message.contains(f)) => {
                return Err(Error::Hostile(format!(
                    "case {i}: the message names no field: {}",
                    status.message
                )));
            }
            Err(_) => rejected += 1,
        }
    }
    eprintln!(
        "hostile: {} documents, {} accepted, {rejected} rejected",
        documents.len(),
        accepted.len()
    );
    if rejected < min_rejected || accepted.len() < min_accepted {
        return Err(Error::Hostile(format!(
            "the generator must produce both kinds: {} accepted, {rejected} rejected",
            accepted.len()
        )));
    }
    Ok(accepted)
}
