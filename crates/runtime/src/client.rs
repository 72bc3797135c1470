//! A `kube::Client` that counts its own requests by verb and resource, and apply patches the
//! API server can always read ([`apply_body`]).
//!
//! The counts answer "how many writes did the operator make?" without asking the apiserver,
//! which is how tests prove an idle operator writes nothing, and how metrics report
//! `rest_client_requests_total`.

use std::collections::BTreeMap;
use std::fmt;
use std::sync::Arc;
use std::task::{Context, Poll};

use http::{Method, Request};
use kube::client::ClientBuilder;
use kube::{Client, Config};
use parking_lot::Mutex;
use tower::{Layer, Service};

/// `(verb, resource)` → requests. Verbs are the apiserver's: get, list, watch, create, update,
/// patch, delete, deletecollection. Resources are `pods`, `pods/status`,
/// `podrequests.pod.jewzaam.org`, …
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RequestCounts(BTreeMap<(String, String), u64>);

const WRITE_VERBS: [&str; 5] = ["create", "update", "patch", "delete", "deletecollection"];

impl RequestCounts {
    pub fn get(&self, verb: &str, resource: &str) -> u64 {
        self.0
            .get(&(verb.to_string(), resource.to_string()))
            .copied()
            .unwrap_or(0)
    }

    /// Requests of `verb` on any resource.
    pub fn verb(&self, verb: &str) -> u64 {
        self.0
            .iter()
            .filter(|((v, _), _)| v == verb)
            .map(|(_, n)| n)
            .sum()
    }

    /// Every write (create, update, patch, delete, deletecollection).
    pub fn writes(&self) -> u64 {
        WRITE_VERBS.iter().map(|v| self.verb(v)).sum()
    }

    pub fn total(&self) -> u64 {
        self.0.values().sum()
    }

    /// What happened after `earlier` was taken.
    pub fn since(&self, earlier: &RequestCounts) -> RequestCounts {
        RequestCounts(
            self.0
                .iter()
                .map(|(k, n)| {
                    (
                        k.clone(),
                        n - earlier.0.get(k).copied().unwrap_or(0).min(*n),
                    )
                })
                .filter(|(_, n)| *n > 0)
                .collect(),
        )
    }

    pub fn iter(&self) -> impl Iterator<Item = (&str, &str, u64)> {
        self.0
            .iter()
            .map(|((v, r), n)| (v.as_str(), r.as_str(), *n))
    }
}

impl fmt::Display for RequestCounts {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let parts: Vec<String> = self
            .iter()
            .map(|(v, r, n)| format!("{v} {r}: {n}"))
            .collect();
        write!(f, "{{{}}}", parts.join(", "))
    }
}

/// Shared request counter; a tower [`Layer`] for [`ClientBuilder::with_layer`].
#[derive(Clone, Debug, Default)]
pub struct RequestCounter {
    counts: Arc<Mutex<RequestCounts>>,
}

impl RequestCounter {
    pub fn snapshot(&self) -> RequestCounts {
        self.counts.lock().clone()
    }

    pub(crate) fn record<B>(&self, req: &Request<B>) {
        let (verb, resource) = classify(req.method(), req.uri());
        let mut counts = self.counts.lock();
        *counts.0.entry((verb.to_string(), resource)).or_insert(0) += 1;
    }
}

/// A client for `config` whose requests `counter` counts.
pub fn counted_client(config: Config, counter: &RequestCounter) -> Result<Client, kube::Error> {
    Ok(ClientBuilder::try_from(config)?.with_layer(counter).build())
}

impl<S> Layer<S> for RequestCounter {
    type Service = Counted<S>;
    fn layer(&self, inner: S) -> Counted<S> {
        Counted {
            inner,
            counter: self.clone(),
        }
    }
}

#[derive(Clone)]
pub struct Counted<S> {
    inner: S,
    counter: RequestCounter,
}

impl<S, B> Service<Request<B>> for Counted<S>
where
    S: Service<Request<B>>,
{
    type Response = S::Response;
    type Error = S::Error;
    type Future = S::Future;

    fn poll_ready(&mut self, cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        self.inner.poll_ready(cx)
    }

    fn call(&mut self, req: Request<B>) -> Self::Future {
        self.counter.record(&req);
        self.inner.call(req)
    }
}

/// The apiserver's verb and resource for a request, from its method and path.
pub fn classify(method: &Method, uri: &http::Uri) -> (&'static str, String) {
    let segments: Vec<&str> = uri.path().split('/').filter(|s| !s.is_empty()).collect();
    let (group, rest) = match segments.as_slice() {
        ["api", _version, rest @ ..] => ("", rest),
        ["apis", group, _version, rest @ ..] => (*group, rest),
        _ => return (verb_for(method, uri, false), uri.path().to_string()),
    };
    let rest = match rest {
        ["namespaces", _ns, tail @ ..] if !tail.is_empty() => tail,
        other => other,
    };
    let (resource, named, sub) = match rest {
        [] => ("", false, None),
        [resource] => (*resource, false, None),
        [resource, _name] => (*resource, true, None),
        [resource, _name, sub, ..] => (*resource, true, Some(*sub)),
    };
    let mut label = if group.is_empty() {
        resource.to_string()
    } else {
        format!("{resource}.{group}")
    };
    if let Some(sub) = sub {
        label.push('/');
        label.push_str(sub);
    }
    (verb_for(method, uri, named), label)
}

fn verb_for(method: &Method, uri: &http::Uri, named: bool) -> &'static str {
    let watch = uri
        .query()
        .is_some_and(|q| q.split('&').any(|kv| kv == "watch=true" || kv == "watch=1"));
    match *method {
        Method::GET if watch => "watch",
        Method::GET if named => "get",
        Method::GET => "list",
        Method::POST => "create",
        Method::PUT => "update",
        Method::PATCH => "patch",
        Method::DELETE if named => "delete",
        Method::DELETE => "deletecollection",
        _ => "other",
    }
}

/// `value` as the body of a server-side apply (`Patch::Apply(&body)`) that the API server can
/// always read. It reads apply patches as YAML, and YAML refuses some characters JSON leaves
/// unescaped — DEL, the C1 controls, U+FEFF, U+FFFE/U+FFFF — anywhere in the text, strings
/// included: a status carrying one (a message quoting user input, say) would be refused with
/// a 400 on every attempt. Here they are written as `\uXXXX` escapes, which both read.
pub fn apply_body<T: serde::Serialize>(
    value: &T,
) -> Result<Box<serde_json::value::RawValue>, serde_json::Error> {
    let mut text = Vec::new();
    let mut serializer = serde_json::Serializer::with_formatter(&mut text, YamlSafe);
    value.serialize(&mut serializer)?;
    // The formatter writes UTF-8 only (string fragments, ASCII escapes).
    let text = String::from_utf8(text).map_err(serde::ser::Error::custom)?;
    serde_json::value::RawValue::from_string(text)
}

/// Writes JSON whose strings hold only characters YAML may contain unescaped.
struct YamlSafe;

impl serde_json::ser::Formatter for YamlSafe {
    fn write_string_fragment<W: ?Sized + std::io::Write>(
        &mut self,
        writer: &mut W,
        fragment: &str,
    ) -> std::io::Result<()> {
        let mut start = 0;
        for (i, c) in fragment.char_indices() {
            if !yaml_printable(c) {
                writer.write_all(&fragment.as_bytes()[start..i])?;
                // All of them are in the Basic Multilingual Plane: one escape each.
                write!(writer, "\\u{:04x}", u32::from(c))?;
                start = i + c.len_utf8();
            }
        }
        writer.write_all(&fragment.as_bytes()[start..])
    }
}

/// YAML 1.1's printable characters (what go-yaml, the API server's reader, accepts). Those
/// below U+0020 never get here: JSON escapes them itself.
fn yaml_printable(c: char) -> bool {
    matches!(c,
        '\t' | '\n' | '\r' | '\u{20}'..='\u{7e}' | '\u{85}' | '\u{a0}'..='\u{d7ff}'
        | '\u{e000}'..='\u{fffd}' | '\u{10000}'..='\u{10ffff}')
        && c != '\u{feff}'
}

/// Whether `error` is the API server's answer with HTTP status `code` (404 gone, 409 conflict…).
pub fn is_status(error: &kube::Error, code: u16) -> bool {
    matches!(error, kube::Error::Api(s) if s.code == code)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn apply_bodies_escape_what_yaml_refuses_and_keep_the_data() -> Result<(), serde_json::Error> {
        let value =
            serde_json::json!({ "m": "a\u{7f}b\u{80}\u{9f}\u{85}\u{feff}\u{fffe}\u{0}é🚀\t" });
        let body = apply_body(&value)?;
        let text = body.get();
        // NEL (U+0085) is printable in YAML: it stays.
        let expected = "{\"m\":\"a\\u007fb\\u0080\\u009f\u{85}\\ufeff\\ufffe\\u0000é🚀\\t\"}";
        assert_eq!(text, expected);
        assert!(text.chars().all(yaml_printable), "{text}");
        let back: serde_json::Value = serde_json::from_str(text)?;
        assert_eq!(back, value);
        Ok(())
    }

    fn c(method: Method, uri: &str) -> (&'static str, String) {
        classify(&method, &uri.parse().unwrap_or_default())
    }

    #[test]
    fn classifies_like_the_apiserver() {
        assert_eq!(
            c(Method::POST, "/api/v1/namespaces/a/pods"),
            ("create", "pods".into())
        );
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/a/pods/p"),
            ("get", "pods".into())
        );
        assert_eq!(
            c(Method::GET, "/api/v1/pods?watch=true&resourceVersion=1"),
            ("watch", "pods".into())
        );
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/a/pods?limit=500"),
            ("list", "pods".into())
        );
        assert_eq!(
            c(
                Method::PATCH,
                "/apis/pod.jewzaam.org/v1alpha1/namespaces/a/podrequests/x/status"
            ),
            ("patch", "podrequests.pod.jewzaam.org/status".into())
        );
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces/a"),
            ("get", "namespaces".into())
        );
        assert_eq!(
            c(Method::GET, "/api/v1/namespaces"),
            ("list", "namespaces".into())
        );
        assert_eq!(
            c(Method::DELETE, "/api/v1/namespaces/a/pods"),
            ("deletecollection", "pods".into())
        );
        assert_eq!(c(Method::GET, "/version"), ("list", "/version".into()));
    }

    #[test]
    fn counts_subtract_and_sum_writes() {
        let counter = RequestCounter::default();
        let req = |m: Method, u: &str| {
            let mut r = Request::new(());
            *r.method_mut() = m;
            *r.uri_mut() = u.parse().unwrap_or_default();
            r
        };
        counter.record(&req(Method::GET, "/api/v1/namespaces/a/pods/p"));
        let before = counter.snapshot();
        counter.record(&req(Method::POST, "/api/v1/namespaces/a/pods"));
        counter.record(&req(Method::PATCH, "/api/v1/namespaces/a/pods/p"));
        let delta = counter.snapshot().since(&before);
        assert_eq!(delta.writes(), 2);
        assert_eq!(delta.get("get", "pods"), 0);
        assert_eq!(counter.snapshot().total(), 3);
    }
}
