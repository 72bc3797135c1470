//! Hostile input for tests: generated strings, timestamps, conditions and JSON that stress what
//! an API server and an operator accept (unicode, control characters, huge values, wrong types,
//! deep nesting), drawn deterministically (a fixed seed, so a failure reproduces), and a storm
//! runner that sends any JSON as bytes — creates, updates and status writes, with bounded
//! concurrency — and checks every answer: no server error, every refusal naming a field.
//! Most hostile documents have no Rust type.

use std::collections::BTreeMap;
use std::fmt;
use std::time::{Duration, Instant};

use futures::StreamExt;
use kube::Client;
use kube::core::Status;
use proptest::prelude::*;
use proptest::strategy::ValueTree;
use proptest::test_runner::{Config, RngAlgorithm, TestRng, TestRunner};
use serde_json::{Map, Value, json};

use crate::Error;

/// Requests a storm keeps in flight by default: enough to keep a 2-core API server busy, few
/// enough that the operator under test still gets its share.
pub const CONCURRENCY: usize = 12;

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

/// Timestamps from valid RFC 3339 to hostile: lower-case `t`/`z`, 1 to 15 fraction digits,
/// odd and impossible offsets (`+99:99`), the years 0000 and 9999, a character where the
/// fraction's dot belongs, no offset, arbitrary text, numbers, `null`. Several of these pass
/// the API server's `format: date-time` check and still aren't times a Rust client can read.
pub fn timestamp() -> BoxedStrategy<Value> {
    let date = (1970u32..2100, 1u32..13, 1u32..29);
    let time = (0u32..24, 0u32..60, 0u32..60);
    let offset = prop_oneof![
        Just("Z".to_string()),
        Just("z".to_string()),
        Just("+00:00".to_string()),
        Just("-00:00".to_string()),
        Just("+05:30".to_string()),
        Just("-23:59".to_string()),
        Just("+25:00".to_string()),
        Just("+99:99".to_string()),
        Just(String::new()),
    ];
    let fraction = prop_oneof![
        3 => Just(String::new()),
        1 => "\\.[0-9]{1,9}",
        1 => "\\.[0-9]{10,15}",
        1 => "[x,][0-9]{1,3}",
    ];
    let composed = (date, time, fraction, offset, prop::bool::ANY).prop_map(
        |((y, mo, d), (h, mi, s), fraction, offset, lower)| {
            let t = if lower { 't' } else { 'T' };
            Value::from(format!(
                "{y:04}-{mo:02}-{d:02}{t}{h:02}:{mi:02}:{s:02}{fraction}{offset}"
            ))
        },
    );
    prop_oneof![
        6 => composed,
        1 => prop_oneof![
            Just(json!("0000-01-01T00:00:00Z")),
            Just(json!("9999-12-31T23:59:59Z")),
            Just(json!("9999-12-30T21:59:59Z")),
            Just(json!("2024-02-30T00:00:00Z")),
            Just(json!("2024-01-01T24:00:00Z")),
            Just(json!("2024-01-01T23:59:60Z")),
            Just(json!("2024-01-01")),
        ],
        1 => text().prop_map(Value::from),
        1 => any::<i64>().prop_map(Value::from),
        1 => Just(Value::Null),
    ]
    .boxed()
}

/// One `metav1.Condition`-shaped object, from plausible to hostile: odd types, statuses and
/// reasons, huge and unicode messages, hostile times (see [`timestamp`]), negative or huge
/// `observedGeneration`, missing fields, unknown fields.
pub fn condition() -> BoxedStrategy<Value> {
    let type_ = prop_oneof![
        4 => prop_oneof![Just("Ready"), Just("Degraded"), Just("Available")].prop_map(Value::from),
        1 => "[A-Z][A-Za-z]{0,20}".prop_map(Value::from),
        1 => text().prop_map(Value::from),
    ];
    let status = prop_oneof![
        4 => prop_oneof![Just("True"), Just("False"), Just("Unknown")].prop_map(Value::from),
        1 => text().prop_map(Value::from),
        1 => Just(json!(true)),
    ];
    let reason = prop_oneof![
        4 => "[A-Z][A-Za-z]{0,30}".prop_map(Value::from),
        1 => text().prop_map(Value::from),
    ];
    let generation = prop_oneof![
        any::<i64>().prop_map(Value::from),
        Just(json!(1.5)),
        Just(json!("7")),
    ];
    let field = |s: BoxedStrategy<Value>| prop::option::weighted(0.9, s);
    (
        field(type_.boxed()),
        field(status.boxed()),
        field(reason.boxed()),
        field(text().prop_map(Value::from).boxed()),
        field(timestamp()),
        prop::option::weighted(0.3, generation),
        prop::option::weighted(0.1, nested(2)),
    )
        .prop_map(
            |(type_, status, reason, message, time, generation, extra)| {
                let mut c = Map::new();
                for (k, v) in [
                    ("type", type_),
                    ("status", status),
                    ("reason", reason),
                    ("message", message),
                    ("lastTransitionTime", time),
                    ("observedGeneration", generation),
                    ("extra", extra),
                ] {
                    if let Some(v) = v {
                        c.insert(k.into(), v);
                    }
                }
                Value::Object(c)
            },
        )
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

/// Sends `body` as raw JSON bytes with `method` to `path`; `content_type` says how the server
/// reads it (`application/json`, `application/merge-patch+json`). `Ok(Ok(object))` when
/// accepted, `Ok(Err(status))` when the API server refused it.
pub async fn send_raw(
    client: &Client,
    method: http::Method,
    path: &str,
    content_type: &str,
    body: &Value,
) -> Result<Result<Value, Status>, Error> {
    let body = serde_json::to_vec(body).map_err(|e| Error::Hostile(e.to_string()))?;
    let request = http::Request::builder()
        .method(method)
        .uri(path)
        .header("content-type", content_type)
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

/// POSTs `document` as raw JSON bytes to `collection` (e.g.
/// `/apis/<group>/<version>/namespaces/<ns>/<plural>`). `Ok(Ok(created))` when accepted,
/// `Ok(Err(status))` when the API server refused it.
pub async fn post_raw(
    client: &Client,
    collection: &str,
    document: &Value,
) -> Result<Result<Value, Status>, Error> {
    send_raw(
        client,
        http::Method::POST,
        collection,
        "application/json",
        document,
    )
    .await
}

/// What a call of a storm does.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Verb {
    /// POST a new object.
    Create,
    /// Change an existing object (its spec, labels, annotations).
    Update,
    /// Write an existing object's `/status`.
    Status,
}

impl fmt::Display for Verb {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Verb::Create => "create",
            Verb::Update => "update",
            Verb::Status => "status",
        })
    }
}

/// How a call sends its document.
#[derive(Clone, Debug)]
pub enum Body {
    /// POST the document to the collection.
    Create(Value),
    /// A JSON merge patch (`application/merge-patch+json`).
    MergePatch(Value),
    /// Read the object, set these top-level fields (`metadata`'s are merged into the object's
    /// metadata, so that name and resourceVersion stay), PUT it back; a conflict (someone wrote
    /// in between, the operator usually) reads and tries again.
    Replace(Map<String, Value>),
}

/// One hostile request.
#[derive(Clone, Debug)]
pub struct Call {
    pub verb: Verb,
    /// The collection (create) or the object (`…/<name>`, `…/<name>/status`).
    pub path: String,
    pub body: Body,
}

impl Call {
    /// The document or patch, as sent.
    pub fn document(&self) -> Value {
        match &self.body {
            Body::Create(v) | Body::MergePatch(v) => v.clone(),
            Body::Replace(fields) => Value::Object(fields.clone()),
        }
    }
}

/// The answer to one call.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The call's index in the storm.
    pub index: usize,
    /// The object as stored, when accepted.
    pub accepted: Option<Value>,
    /// The API server's refusal (the last one, after conflicts).
    pub refused: Option<Status>,
    /// Conflicts retried (replace only).
    pub conflicts: u32,
}

impl Outcome {
    /// The HTTP status code: 200 for accepted.
    pub fn code(&self) -> u16 {
        self.refused.as_ref().map_or(200, |s| s.code)
    }
}

/// How many times a replace reads and tries again after a conflict.
const REPLACE_ATTEMPTS: u32 = 8;

async fn run_call(client: &Client, index: usize, call: &Call) -> Result<Outcome, Error> {
    let outcome = |answer: Result<Value, Status>, conflicts| {
        let (accepted, refused) = match answer {
            Ok(object) => (Some(object), None),
            Err(status) => (None, Some(status)),
        };
        Outcome {
            index,
            accepted,
            refused,
            conflicts,
        }
    };
    match &call.body {
        Body::Create(document) => Ok(outcome(post_raw(client, &call.path, document).await?, 0)),
        Body::MergePatch(patch) => {
            let answer = send_raw(
                client,
                http::Method::PATCH,
                &call.path,
                "application/merge-patch+json",
                patch,
            )
            .await?;
            Ok(outcome(answer, 0))
        }
        Body::Replace(fields) => {
            let mut conflicts = 0;
            loop {
                let get = http::Request::get(&call.path)
                    .body(Vec::new())
                    .map_err(|e| Error::Hostile(e.to_string()))?;
                let mut object: Value = match client.request_text(get).await {
                    Ok(text) => {
                        serde_json::from_str(&text).map_err(|e| Error::Hostile(e.to_string()))?
                    }
                    Err(kube::Error::Api(status)) => return Ok(outcome(Err(*status), conflicts)),
                    Err(e) => return Err(Error::Kube(e)),
                };
                for (key, value) in fields {
                    match (key.as_str(), value, object.get_mut(key)) {
                        ("metadata", Value::Object(update), Some(Value::Object(meta))) => {
                            meta.extend(update.clone());
                        }
                        _ => {
                            object[key] = value.clone();
                        }
                    }
                }
                let answer = send_raw(
                    client,
                    http::Method::PUT,
                    &call.path,
                    "application/json",
                    &object,
                )
                .await?;
                match answer {
                    Err(s) if s.code == 409 && conflicts + 1 < REPLACE_ATTEMPTS => conflicts += 1,
                    answer => return Ok(outcome(answer, conflicts)),
                }
            }
        }
    }
}

/// Sends every call of `calls` as `client`, at most `concurrency` at a time; the outcomes in
/// the calls' order. Fails only when a request can't be sent at all (no answer from the API
/// server); refusals are outcomes, for [`Storm::check`].
pub async fn storm(client: &Client, calls: &[Call], concurrency: usize) -> Result<Storm, Error> {
    let t0 = Instant::now();
    let mut outcomes: Vec<Outcome> = futures::stream::iter(calls.iter().enumerate())
        .map(|(index, call)| run_call(client, index, call))
        .buffer_unordered(concurrency.max(1))
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<_, _>>()?;
    outcomes.sort_by_key(|o| o.index);
    Ok(Storm {
        calls: calls.to_vec(),
        outcomes,
        took: t0.elapsed(),
    })
}

/// A storm's calls and their outcomes.
pub struct Storm {
    pub calls: Vec<Call>,
    pub outcomes: Vec<Outcome>,
    pub took: Duration,
}

/// Counts of one verb.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Tally {
    pub sent: usize,
    pub accepted: usize,
    pub rejected: usize,
    /// Conflicts retried (replaces only): not refusals, someone wrote in between.
    pub conflicts: usize,
}

/// Where a refusal points: the first cause's field under one of `roots` (`spec`, `status`,
/// `metadata`…), else the first of `roots` the message mentions (some 400s, such as JSON type
/// errors, have no causes and name the field in their message only).
pub fn named_field(status: &Status, roots: &[&str]) -> Option<String> {
    let under_root = |path: &str| {
        roots.iter().any(|root| {
            path == *root
                || path
                    .strip_prefix(root)
                    .is_some_and(|rest| rest.starts_with(['.', '[']))
        })
    };
    let causes = status.details.iter().flat_map(|d| d.causes.iter());
    if let Some(field) = causes
        .map(|c| c.field.as_str())
        .find(|field| under_root(field))
    {
        return Some(field.to_owned());
    }
    roots
        .iter()
        .find(|root| status.message.contains(*root))
        .map(|root| (*root).to_owned())
}

/// A JSON value for a failure message: strings longer than 160 characters are cut (the
/// document is reproducible from the seed and its index).
pub fn abbreviate(value: &Value) -> Value {
    match value {
        Value::String(s) if s.chars().count() > 160 => Value::String(format!(
            "{}…({} characters)",
            s.chars().take(160).collect::<String>(),
            s.chars().count()
        )),
        Value::Array(items) => Value::Array(items.iter().map(abbreviate).collect()),
        Value::Object(fields) => Value::Object(
            fields
                .iter()
                .map(|(k, v)| (k.clone(), abbreviate(v)))
                .collect(),
        ),
        other => other.clone(),
    }
}

impl Storm {
    /// Every outcome must be an acceptance or a refusal with 400 or 422 naming a field under
    /// `roots` ([`named_field`]): a 5xx (a CEL rule over its budget, a schema the server can't
    /// handle, an object the store can't hold), a refusal naming no field, or any other code
    /// fails, printing the call and its document. Then each verb must have at least
    /// `min_accepted` acceptances and `min_rejected` refusals (the generators aim at both).
    /// Returns the tallies by verb.
    pub fn check(
        &self,
        roots: &[&str],
        (min_accepted, min_rejected): (usize, usize),
    ) -> Result<BTreeMap<Verb, Tally>, Error> {
        let mut tallies: BTreeMap<Verb, Tally> = BTreeMap::new();
        let mut failures = Vec::new();
        let mut fields: BTreeMap<String, usize> = BTreeMap::new();
        for (call, outcome) in self.calls.iter().zip(&self.outcomes) {
            let tally = tallies.entry(call.verb).or_default();
            tally.sent += 1;
            tally.conflicts += outcome.conflicts as usize;
            let Some(status) = &outcome.refused else {
                tally.accepted += 1;
                continue;
            };
            let problem = match status.code {
                400 | 422 => match named_field(status, roots) {
                    Some(field) => {
                        tally.rejected += 1;
                        // `spec.x[3].y` counts as `spec.x[].y`.
                        let mut general = String::new();
                        let mut in_index = false;
                        for ch in field.chars() {
                            match ch {
                                '[' => {
                                    in_index = true;
                                    general.push_str("[]");
                                }
                                ']' => in_index = false,
                                c if !in_index => general.push(c),
                                _ => {}
                            }
                        }
                        *fields.entry(general).or_default() += 1;
                        continue;
                    }
                    None => "the refusal names no field",
                },
                code if code >= 500 => "a server error",
                _ => "an unexpected answer",
            };
            failures.push(format!(
                "call {} ({} {}): {problem}: {} {} {}\n  causes: {:?}\n  document: {}",
                outcome.index,
                call.verb,
                call.path,
                status.code,
                status.reason,
                status.message.chars().take(600).collect::<String>(),
                status.details.as_ref().map(|d| &d.causes),
                abbreviate(&call.document()),
            ));
        }
        let summary: Vec<String> = tallies
            .iter()
            .map(|(verb, t)| {
                format!(
                    "{verb} {} ({} accepted, {} rejected, {} conflicts retried)",
                    t.sent, t.accepted, t.rejected, t.conflicts
                )
            })
            .collect();
        eprintln!(
            "hostile: {} in {:.1} s; refusals by field: {fields:?}",
            summary.join(", "),
            self.took.as_secs_f64()
        );
        if !failures.is_empty() {
            let shown = failures.len().min(5);
            return Err(Error::Hostile(format!(
                "{} of {} calls failed (first {shown}):\n{}",
                failures.len(),
                self.calls.len(),
                failures[..shown].join("\n")
            )));
        }
        for (verb, t) in &tallies {
            if t.accepted < min_accepted || t.rejected < min_rejected {
                return Err(Error::Hostile(format!(
                    "the generator must produce both kinds for {verb}: {} accepted (at least \
                     {min_accepted}), {} rejected (at least {min_rejected})",
                    t.accepted, t.rejected
                )));
            }
        }
        Ok(tallies)
    }

    /// The objects accepted by calls of `verb`, as stored.
    pub fn accepted(&self, verb: Verb) -> impl Iterator<Item = &Value> {
        self.calls
            .iter()
            .zip(&self.outcomes)
            .filter(move |(call, _)| call.verb == verb)
            .filter_map(|(_, outcome)| outcome.accepted.as_ref())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(message: &str, fields: &[&str]) -> Status {
        let causes: Vec<Value> = fields.iter().map(|f| json!({ "field": f })).collect();
        serde_json::from_value(json!({
            "status": "Failure", "code": 422, "message": message,
            "details": { "causes": causes },
        }))
        .unwrap_or_default()
    }

    #[test]
    fn a_refusal_names_a_field_by_its_causes_or_its_message() {
        let roots = ["spec", "status", "metadata"];
        assert_eq!(
            named_field(&status("x", &["<nil>", "spec.image"]), &roots).as_deref(),
            Some("spec.image")
        );
        assert_eq!(
            named_field(&status("x", &["status.conditions[0].type"]), &roots).as_deref(),
            Some("status.conditions[0].type")
        );
        // `specific` is not under `spec`.
        assert_eq!(named_field(&status("x", &["specific"]), &roots), None);
        assert_eq!(
            named_field(
                &status("cannot unmarshal into metadata.labels", &[]),
                &roots
            )
            .as_deref(),
            Some("metadata")
        );
        assert_eq!(named_field(&status("invalid", &["<nil>"]), &roots), None);
    }

    #[test]
    fn samples_are_deterministic_and_long_strings_are_abbreviated() -> Result<(), Error> {
        let a = sample(&timestamp(), 50)?;
        assert_eq!(a, sample(&timestamp(), 50)?);
        let short = abbreviate(&json!({ "a": ["x".repeat(1000)] }));
        let cut = short["a"][0].as_str().unwrap_or_default();
        assert!(cut.ends_with("(1000 characters)"), "{cut}");
        Ok(())
    }
}
