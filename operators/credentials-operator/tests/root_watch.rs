//! The root credentials Secret's watch through an outage of the operator's connection to the API
//! server: a change made while the operator is cut off, which it can only learn from a re-list
//! (its watch comes back too late to resume — `410 Gone`, as when the API server no longer has
//! the version it stopped at), still reaches every request; and the watch's errors are logged.
//!
//! The operator talks plain HTTP to a proxy in this test, which forwards with the operator's own
//! ServiceAccount client (so its generated RBAC is still what is tested). Cutting the proxy drops
//! every connection and refuses new ones; the root Secret's first resumed watch after the outage
//! is answered with the API server's `410 Gone` watch event. The proxy is cut only once the
//! operator is idle (no key queued, no reconcile running): see the test.

mod common;

use std::convert::Infallible;
use std::io::Write;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};

use anyhow::{Result, ensure};
use common::{Fixture, ROOT_KEY_ID, ROOT_SECRET, data};
use credentials_operator::controller::{Mode, Settings};
use credentials_operator::mint::{ACCESS_KEY_ID, SECRET_ACCESS_KEY};
use http::header::{CONTENT_TYPE, HOST, HeaderValue};
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use kube::Client;
use kube::api::{Patch, PatchParams};
use kube::client::Body;
use operon_cluster::wait;
use parking_lot::Mutex;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::task::{JoinHandle, JoinSet};

/// The message of the `410 Gone` the proxy answers the resumed root watch with.
const EXPIRED: &str = "too old resource version (the test proxy was down)";

const NEW_KEY_ID: &str = "AKIAROTATEDROTATEDRO";
const NEW_SECRET: &str = "rotatedSecretAccessKey0123456789abcdefABC";

/// What the proxy's connections share.
struct Shared {
    /// The operator's own client, which requests are forwarded with.
    upstream: Mutex<Option<Client>>,
    /// The URL path of the root Secret's watch.
    root_watch: String,
    /// Answer the next resumed watch of `root_watch` with `410 Gone`.
    expire: AtomicBool,
    /// How many times it did.
    expired: AtomicUsize,
    connections: Mutex<JoinSet<()>>,
}

/// Plain HTTP in front of the API server, which the test can cut and restore.
struct Proxy {
    addr: SocketAddr,
    shared: Arc<Shared>,
    accepting: Mutex<Option<JoinHandle<()>>>,
}

impl Proxy {
    async fn start(root_watch: String) -> Result<Proxy> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let shared = Arc::new(Shared {
            upstream: Mutex::new(None),
            root_watch,
            expire: AtomicBool::new(false),
            expired: AtomicUsize::new(0),
            connections: Mutex::new(JoinSet::new()),
        });
        let accepting = tokio::spawn(accept(listener, shared.clone()));
        Ok(Proxy {
            addr,
            shared,
            accepting: Mutex::new(Some(accepting)),
        })
    }

    /// A client to the API server through this proxy (no credentials: the proxy forwards with
    /// [`Proxy::forward_with`]'s).
    fn client(&self) -> Result<Client> {
        let url: http::Uri = format!("http://{}", self.addr).parse()?;
        Ok(Client::try_from(kube::Config::new(url))?)
    }

    fn forward_with(&self, upstream: Client) {
        *self.shared.upstream.lock() = Some(upstream);
    }

    /// Every connection dropped, new ones refused; the root Secret's watch, when it comes back,
    /// will have to re-list.
    async fn down(&self) {
        self.shared.expire.store(true, Ordering::SeqCst);
        let accepting = self.accepting.lock().take();
        if let Some(accepting) = accepting {
            accepting.abort();
            // Gone once awaited: so is the listener.
            let _ = accepting.await;
        }
        let mut connections = std::mem::take(&mut *self.shared.connections.lock());
        connections.shutdown().await;
    }

    /// Serving again, on the same address.
    async fn up(&self) -> Result<()> {
        let listener = TcpListener::bind(self.addr).await?;
        *self.accepting.lock() = Some(tokio::spawn(accept(listener, self.shared.clone())));
        Ok(())
    }

    fn expired(&self) -> usize {
        self.shared.expired.load(Ordering::SeqCst)
    }
}

async fn accept(listener: TcpListener, shared: Arc<Shared>) {
    loop {
        let Ok((stream, _)) = listener.accept().await else {
            continue;
        };
        let service = {
            let shared = shared.clone();
            service_fn(move |request| forward(shared.clone(), request))
        };
        let mut connections = shared.connections.lock();
        while connections.try_join_next().is_some() {}
        connections.spawn(async move {
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn forward(
    shared: Arc<Shared>,
    request: Request<Incoming>,
) -> Result<Response<Body>, Infallible> {
    let (parts, body) = request.into_parts();
    let query = parts.uri.query().unwrap_or_default();
    let resumed_watch = query.contains("watch=true") && query.contains("resourceVersion=");
    if parts.uri.path() == shared.root_watch
        && resumed_watch
        && shared.expire.swap(false, Ordering::SeqCst)
    {
        shared.expired.fetch_add(1, Ordering::SeqCst);
        // What the API server says when the version a watch resumes from is gone.
        let event = json!({
            "type": "ERROR",
            "object": {
                "kind": "Status", "apiVersion": "v1", "metadata": {},
                "status": "Failure", "message": EXPIRED, "reason": "Expired", "code": 410,
            },
        });
        return Ok(response(StatusCode::OK, format!("{event}\n")));
    }
    let upstream = shared.upstream.lock().clone();
    let Some(upstream) = upstream else {
        return Ok(response(StatusCode::BAD_GATEWAY, "no upstream yet".into()));
    };
    let body = match body.collect().await {
        Ok(body) => body.to_bytes(),
        Err(e) => return Ok(response(StatusCode::BAD_REQUEST, e.to_string())),
    };
    let target = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    let mut forwarded = Request::builder().method(parts.method).uri(target);
    for (name, value) in &parts.headers {
        if name != HOST {
            forwarded = forwarded.header(name, value);
        }
    }
    let forwarded = match forwarded.body(Body::from(body)) {
        Ok(forwarded) => forwarded,
        Err(e) => return Ok(response(StatusCode::BAD_REQUEST, e.to_string())),
    };
    Ok(match upstream.send(forwarded).await {
        Ok(answer) => answer,
        Err(e) => response(StatusCode::BAD_GATEWAY, e.to_string()),
    })
}

fn response(status: StatusCode, text: String) -> Response<Body> {
    let mut response = Response::new(Body::from(text.into_bytes()));
    *response.status_mut() = status;
    response
        .headers_mut()
        .insert(CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    fn text(&self) -> String {
        String::from_utf8_lossy(&self.0.lock()).into_owned()
    }
}

#[tokio::test]
async fn a_root_secret_changed_while_the_operator_was_cut_off_is_seen_through_a_relist()
-> Result<()> {
    // The only test of this binary: it owns the global log subscriber.
    let logs = Captured::default();
    let writer = logs.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::INFO)
        .with_ansi(false)
        .with_writer(move || writer.clone())
        .init();
    let outcome = cut_off_and_back(&logs).await;
    if outcome.is_err() {
        eprintln!("operator log:\n{}", logs.text());
    }
    outcome
}

async fn cut_off_and_back(logs: &Captured) -> Result<()> {
    let f = Fixture::new("cred-root-relist").await?;
    // Passthrough: the request's Secret is a copy of the root credentials, so it shows which
    // root credentials the operator last saw.
    let settings = Settings {
        mode: Some(Mode::Passthrough),
        ..f.settings()
    };
    // Provisioned by an operator of its own first, so that the one behind the proxy starts on a
    // request with nothing to do: it reconciles on its initial lists, writes nothing (so nothing
    // wakes it again), and is then idle. The outage then can't catch a reconcile in flight,
    // whose retry would read the new root Secret and hide whether the watch saw the change.
    let first = f.operator_with(settings.clone()).await?;
    f.create(&f.sample("copy", "copy-creds", None)?).await?;
    f.wait_provisioned("copy").await?;
    let copy = f.secrets().get("copy-creds").await?;
    ensure!(data(&copy, ACCESS_KEY_ID)? == ROOT_KEY_ID);
    ensure!(data(&copy, SECRET_ACCESS_KEY)? == ROOT_SECRET);
    first.stop().await?;

    let proxy = Proxy::start(format!("/api/v1/namespaces/{}/secrets", f.ns)).await?;
    let through_proxy = proxy.client()?;
    let op = f
        .operator_via(settings, |own| {
            proxy.forward_with(own);
            through_proxy
        })
        .await?;
    wait::until("the operator idle", common::TIMEOUT, || async {
        let m = &op.metrics;
        match (m.reconciles(), m.depth(), m.active_workers()) {
            (reconciles, 0, 0) if reconciles > 0 => Ok(()),
            other => Err(format!("(reconciles, depth, active) {other:?}")),
        }
    })
    .await?;
    ensure!(op.requests().writes() == 0, "writes: {}", op.requests());

    proxy.down().await;
    // Changed behind the operator's back: nothing but the root Secret changes, so nothing else
    // would make it sync the request again before the re-sync period (an hour).
    f.secrets()
        .patch(
            "aws-creds",
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": {
                ACCESS_KEY_ID: NEW_KEY_ID, SECRET_ACCESS_KEY: NEW_SECRET,
            }})),
        )
        .await?;
    proxy.up().await?;

    wait::until(
        "the copy of the new root credentials",
        common::TIMEOUT,
        || async {
            let copy = f
                .secrets()
                .get("copy-creds")
                .await
                .map_err(|e| e.to_string())?;
            match data(&copy, ACCESS_KEY_ID).map_err(|e| e.to_string())? {
                key if key == NEW_KEY_ID => Ok(()),
                key => Err(format!("access key {key}")),
            }
        },
    )
    .await?;
    let copy = f.secrets().get("copy-creds").await?;
    ensure!(data(&copy, SECRET_ACCESS_KEY)? == NEW_SECRET);
    ensure!(
        proxy.expired() == 1,
        "the root Secret's watch came back through a re-list ({} expired)",
        proxy.expired()
    );
    // The watch's errors are logged (the expiry, and the refused connections).
    let text = logs.text();
    ensure!(
        text.lines()
            .any(|l| l.contains("watch error") && l.contains(EXPIRED)),
        "no log line of the expired watch"
    );
    Ok(())
}
