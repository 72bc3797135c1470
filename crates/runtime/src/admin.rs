//! The admin HTTP server: `/healthz`, `/readyz` and `/metrics` on one port.
//!
//! | route | answer |
//! | --- | --- |
//! | `GET /healthz` | 200 `ok` while the process serves (liveness) |
//! | `GET /readyz` | 200 `ok` once [`Readiness::set_ready`]`(true)`, else 503 with the reason |
//! | `GET /metrics` | 200, [`Metrics::render`] as Prometheus text 0.0.4 |
//! | another method on these paths | 405 |
//! | any other path | 404 |
//!
//! `HEAD` is answered like `GET`, without the body.
//!
//! [`AdminServer::with_metrics_auth`] guards `/metrics` like operator-sdk's
//! `filters.WithAuthenticationAndAuthorization`: a TokenReview authenticates the bearer token and a
//! SubjectAccessReview asks whether its user may `get` the non-resource URL `/metrics`. A scraper
//! then needs a ClusterRole with `nonResourceURLs: ["/metrics"], verbs: ["get"]`, and the
//! operator's own ServiceAccount needs `create` on `tokenreviews.authentication.k8s.io` and
//! `subjectaccessreviews.authorization.k8s.io`.
//!
//! One server can answer every route, or only the probes ([`Routes::Probes`], plain HTTP for the
//! kubelet) while another answers only `/metrics` over TLS ([`Routes::Metrics`],
//! [`AdminServer::with_tls`]): controller-runtime's split between `--health-probe-bind-address`
//! and a secure `--metrics-bind-address`, so that bearer tokens never travel in clear text.

use std::collections::HashMap;
use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::header::{ALLOW, AUTHORIZATION, CONTENT_TYPE, HeaderValue, WWW_AUTHENTICATE};
use http::{HeaderMap, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::server::conn::http1;
use hyper::service::service_fn;
use hyper_util::rt::{TokioIo, TokioTimer};
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::authorization::v1::{
    NonResourceAttributes, SubjectAccessReview, SubjectAccessReviewSpec,
};
use kube::api::{Api, PostParams};
use parking_lot::Mutex;
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinSet;

use crate::metrics::{self, Metrics};
use crate::serving_cert::{self, ServingCert};

/// How long a client may take to send a request's headers.
const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);
/// Connections served at once; more are closed on accept.
const MAX_CONNECTIONS: usize = 128;
/// How long open connections may finish their requests after shutdown.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);
/// How long a token allowed to read `/metrics` stays allowed without a new review.
const AUTH_CACHE_TTL: Duration = Duration::from_secs(10);
/// Tokens remembered at most (more are forgotten, costing a review each).
const AUTH_CACHE_MAX: usize = 256;
/// Time for each TokenReview or SubjectAccessReview (operator-sdk's is 10 s too).
const REVIEW_TIMEOUT: Duration = Duration::from_secs(10);
/// The non-resource URL and verb a SubjectAccessReview asks about.
const METRICS_PATH: &str = "/metrics";

/// Whether the operator is ready (`/readyz`): a cheap, shared flag, not ready until set.
#[derive(Clone, Debug)]
pub struct Readiness {
    inner: Arc<ReadinessInner>,
}

#[derive(Debug)]
struct ReadinessInner {
    ready: AtomicBool,
    reason: Mutex<Option<String>>,
}

impl Default for Readiness {
    fn default() -> Self {
        Readiness::new()
    }
}

impl Readiness {
    /// Not ready, because the operator is "starting".
    pub fn new() -> Self {
        Readiness {
            inner: Arc::new(ReadinessInner {
                ready: AtomicBool::new(false),
                reason: Mutex::new(Some("starting".to_string())),
            }),
        }
    }

    /// Ready, or not ready without a particular reason.
    pub fn set_ready(&self, ready: bool) {
        if !ready {
            self.set_reason(None);
        }
        self.inner.ready.store(ready, Ordering::SeqCst);
    }

    /// Not ready because of `reason` (shown in `/readyz`'s 503, e.g. `"shutting down"`).
    pub fn set_not_ready(&self, reason: impl Into<String>) {
        self.set_reason(Some(reason.into()));
        self.inner.ready.store(false, Ordering::SeqCst);
    }

    pub fn is_ready(&self) -> bool {
        self.inner.ready.load(Ordering::SeqCst)
    }

    /// Why it is not ready, if a reason was given.
    pub fn reason(&self) -> Option<String> {
        self.inner.reason.lock().clone()
    }

    fn set_reason(&self, reason: Option<String>) {
        *self.inner.reason.lock() = reason;
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("binding the admin server to {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        #[source]
        source: std::io::Error,
    },
    #[error("the metrics server's TLS: {0}")]
    Tls(#[from] serving_cert::Error),
}

/// The routes a server answers; the others are 404.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Routes {
    /// `/healthz`, `/readyz` and `/metrics`.
    All,
    /// `/healthz` and `/readyz`.
    Probes,
    /// `/metrics`.
    Metrics,
}

impl Routes {
    fn answers(self, path: &str) -> bool {
        match self {
            Routes::All => matches!(path, "/healthz" | "/readyz" | METRICS_PATH),
            Routes::Probes => matches!(path, "/healthz" | "/readyz"),
            Routes::Metrics => path == METRICS_PATH,
        }
    }
}

/// The admin server, configured; [`bind`](Self::bind) starts it.
pub struct AdminServer {
    metrics: Arc<Metrics>,
    readiness: Readiness,
    auth: Option<MetricsAuth>,
    routes: Routes,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

impl std::fmt::Debug for AdminServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("AdminServer")
            .field("ready", &self.readiness.is_ready())
            .field("metrics_auth", &self.auth.is_some())
            .field("routes", &self.routes)
            .field("tls", &self.tls.is_some())
            .finish_non_exhaustive()
    }
}

impl AdminServer {
    pub fn new(metrics: Arc<Metrics>, readiness: Readiness) -> Self {
        AdminServer {
            metrics,
            readiness,
            auth: None,
            routes: Routes::All,
            tls: None,
        }
    }

    /// Answer only `routes` (default: all of them).
    pub fn routes(mut self, routes: Routes) -> Self {
        self.routes = routes;
        self
    }

    /// Serve HTTPS with `cert` (reloaded as its files change) instead of plain HTTP.
    pub fn with_tls(mut self, cert: &Arc<ServingCert>) -> Result<Self, Error> {
        let config = cert.server_config()?;
        self.tls = Some(tokio_rustls::TlsAcceptor::from(Arc::new(config)));
        Ok(self)
    }

    /// Require `Authorization: Bearer <token>` on `/metrics`, authorized like operator-sdk's
    /// `filters.WithAuthenticationAndAuthorization`: a TokenReview (authentication.k8s.io/v1) must
    /// authenticate the token, then a SubjectAccessReview (authorization.k8s.io/v1) must allow
    /// its user and groups to `get` the non-resource URL `/metrics`. Answers 401 for a missing or
    /// invalid token, 403 when not allowed, 500 when a review could not be made. An allowed
    /// token stays allowed for 10 s without a new review; refusals are not cached.
    ///
    /// `client` makes the reviews: it needs `create` on `tokenreviews` and
    /// `subjectaccessreviews`.
    pub fn with_metrics_auth(mut self, client: kube::Client) -> Self {
        self.auth = Some(MetricsAuth {
            client,
            allowed: Mutex::new(HashMap::new()),
        });
        self
    }

    /// Binds `addr` (port 0 picks a free port) and returns the bound address and the future that
    /// serves until `shutdown` resolves. Then it stops accepting, lets open connections finish
    /// their requests for up to 5 s, and returns.
    pub async fn bind(
        self,
        addr: SocketAddr,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(SocketAddr, impl Future<Output = ()> + Send + 'static), Error> {
        let bind_error = |source| Error::Bind { addr, source };
        let listener = TcpListener::bind(addr).await.map_err(bind_error)?;
        let local = listener.local_addr().map_err(bind_error)?;
        let state = Arc::new(State {
            metrics: self.metrics,
            readiness: self.readiness,
            auth: self.auth,
            routes: self.routes,
            tls: self.tls,
        });
        tracing::info!(
            addr = %local,
            routes = ?state.routes,
            tls = state.tls.is_some(),
            metrics_auth = state.auth.is_some(),
            "admin server listening"
        );
        Ok((local, serve(listener, state, shutdown)))
    }
}

struct State {
    metrics: Arc<Metrics>,
    readiness: Readiness,
    auth: Option<MetricsAuth>,
    routes: Routes,
    tls: Option<tokio_rustls::TlsAcceptor>,
}

async fn serve(
    listener: TcpListener,
    state: Arc<State>,
    shutdown: impl Future<Output = ()> + Send + 'static,
) {
    let (stop, stopped) = watch::channel(());
    let mut connections = JoinSet::new();
    let mut shutdown = std::pin::pin!(shutdown);
    loop {
        tokio::select! {
            () = &mut shutdown => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, peer)) => {
                    if connections.len() >= MAX_CONNECTIONS {
                        tracing::warn!(%peer, "admin server: too many connections, closing");
                        drop(stream);
                        continue;
                    }
                    connections.spawn(serve_connection(stream, state.clone(), stopped.clone()));
                }
                Err(e) => {
                    // Out of file descriptors, or a connection reset before accept: the
                    // listener itself still works. Pause so that a persistent error can't spin.
                    tracing::warn!(error = %e, "admin server: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                }
            },
            Some(done) = connections.join_next(), if !connections.is_empty() => {
                if let Err(e) = done {
                    tracing::error!(error = %e, "admin server: connection task failed");
                }
            }
        }
    }
    drop(listener);
    let _ = stop.send(());
    let drain = async { while connections.join_next().await.is_some() {} };
    if tokio::time::timeout(SHUTDOWN_GRACE, drain).await.is_err() {
        connections.abort_all();
    }
    tracing::info!("admin server stopped");
}

async fn serve_connection(stream: TcpStream, state: Arc<State>, stop: watch::Receiver<()>) {
    match state.tls.clone() {
        None => serve_http(stream, state, stop).await,
        Some(acceptor) => {
            // The handshake gets the same deadline as a request's headers.
            match tokio::time::timeout(HEADER_READ_TIMEOUT, acceptor.accept(stream)).await {
                Ok(Ok(tls)) => serve_http(tls, state, stop).await,
                Ok(Err(e)) => tracing::debug!(error = %e, "admin server: TLS handshake failed"),
                Err(_) => tracing::debug!("admin server: TLS handshake timed out"),
            }
        }
    }
}

async fn serve_http<S>(stream: S, state: Arc<State>, mut stop: watch::Receiver<()>)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let state = state.clone();
        async move { Ok::<_, Infallible>(handle(&state, req).await) }
    });
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .serve_connection(TokioIo::new(stream), service);
    let mut conn = std::pin::pin!(conn);
    tokio::select! {
        done = conn.as_mut() => {
            if let Err(e) = done {
                tracing::debug!(error = %e, "admin server: connection error");
            }
            return;
        }
        _ = stop.changed() => conn.as_mut().graceful_shutdown(),
    }
    if let Err(e) = conn.await {
        tracing::debug!(error = %e, "admin server: connection error during shutdown");
    }
}

type Body = Full<Bytes>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Response<Body> {
    let mut response = Response::new(Full::new(body.into()));
    *response.status_mut() = status;
    response.headers_mut().insert(
        CONTENT_TYPE,
        HeaderValue::from_static("text/plain; charset=utf-8"),
    );
    response
}

async fn handle(state: &State, req: Request<Incoming>) -> Response<Body> {
    let path = req.uri().path();
    if !state.routes.answers(path) {
        return text(StatusCode::NOT_FOUND, "not found\n");
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        let mut response = text(StatusCode::METHOD_NOT_ALLOWED, "method not allowed\n");
        response
            .headers_mut()
            .insert(ALLOW, HeaderValue::from_static("GET, HEAD"));
        return response;
    }
    match path {
        "/healthz" => text(StatusCode::OK, "ok"),
        "/readyz" if state.readiness.is_ready() => text(StatusCode::OK, "ok"),
        "/readyz" => text(
            StatusCode::SERVICE_UNAVAILABLE,
            match state.readiness.reason() {
                Some(reason) => format!("not ready: {reason}\n"),
                None => "not ready\n".to_string(),
            },
        ),
        _ => {
            if let Some(auth) = &state.auth
                && let Err(refused) = auth.check(req.headers()).await
            {
                return refused;
            }
            let mut response = text(StatusCode::OK, state.metrics.render());
            response.headers_mut().insert(
                CONTENT_TYPE,
                HeaderValue::from_static(metrics::CONTENT_TYPE),
            );
            response
        }
    }
}

/// TokenReview + SubjectAccessReview for `/metrics`, with a short cache of allowed tokens.
struct MetricsAuth {
    client: kube::Client,
    /// Token → allowed until.
    allowed: Mutex<HashMap<String, Instant>>,
}

fn unauthorized() -> Response<Body> {
    let mut response = text(StatusCode::UNAUTHORIZED, "Unauthorized\n");
    response
        .headers_mut()
        .insert(WWW_AUTHENTICATE, HeaderValue::from_static("Bearer"));
    response
}

/// The token of an `Authorization: Bearer <token>` header (the scheme is case-insensitive).
fn bearer_token(headers: &HeaderMap) -> Option<&str> {
    let value = headers.get(AUTHORIZATION)?.to_str().ok()?;
    let (scheme, token) = value.trim().split_once(' ')?;
    let token = token.trim();
    (scheme.eq_ignore_ascii_case("bearer") && !token.is_empty()).then_some(token)
}

impl MetricsAuth {
    async fn check(&self, headers: &HeaderMap) -> Result<(), Response<Body>> {
        let Some(token) = bearer_token(headers) else {
            return Err(unauthorized());
        };
        if self.is_cached(token) {
            return Ok(());
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: token.to_string(),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let status = match timed(reviews.create(&PostParams::default(), &review)).await {
            Ok(review) => review.status.unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, "metrics authentication: TokenReview failed");
                return Err(text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "Authentication failed\n",
                ));
            }
        };
        let user = match (status.authenticated, status.user) {
            (Some(true), Some(user)) => user,
            _ => {
                tracing::debug!(error = ?status.error, "metrics authentication: token refused");
                return Err(unauthorized());
            }
        };
        let name = user.username.clone().unwrap_or_default();
        let access = SubjectAccessReview {
            spec: SubjectAccessReviewSpec {
                user: user.username,
                groups: user.groups,
                uid: user.uid,
                extra: user.extra,
                non_resource_attributes: Some(NonResourceAttributes {
                    path: Some(METRICS_PATH.to_string()),
                    verb: Some("get".to_string()),
                }),
                ..Default::default()
            },
            ..Default::default()
        };
        let reviews: Api<SubjectAccessReview> = Api::all(self.client.clone());
        let status = match timed(reviews.create(&PostParams::default(), &access)).await {
            Ok(review) => review.status.unwrap_or_default(),
            Err(e) => {
                tracing::error!(error = %e, user = %name, "metrics authorization: SubjectAccessReview failed");
                return Err(text(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("Authorization for user {name} failed\n"),
                ));
            }
        };
        if !status.allowed {
            tracing::debug!(user = %name, reason = ?status.reason, "metrics authorization: denied");
            return Err(text(
                StatusCode::FORBIDDEN,
                format!("Authorization denied for user {name}\n"),
            ));
        }
        self.remember(token);
        Ok(())
    }

    fn is_cached(&self, token: &str) -> bool {
        let allowed = self.allowed.lock();
        allowed
            .get(token)
            .is_some_and(|until| Instant::now() < *until)
    }

    fn remember(&self, token: &str) {
        let now = Instant::now();
        let mut allowed = self.allowed.lock();
        allowed.retain(|_, until| now < *until);
        if allowed.len() >= AUTH_CACHE_MAX {
            allowed.clear();
        }
        allowed.insert(token.to_string(), now + AUTH_CACHE_TTL);
    }
}

/// A review call with [`REVIEW_TIMEOUT`].
async fn timed<T>(
    call: impl Future<Output = Result<T, kube::Error>>,
) -> Result<T, Box<dyn std::error::Error + Send + Sync>> {
    match tokio::time::timeout(REVIEW_TIMEOUT, call).await {
        Ok(result) => result.map_err(Into::into),
        Err(elapsed) => Err(Box::new(elapsed)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bearer_tokens() {
        let with = |v: &'static str| {
            let mut h = HeaderMap::new();
            h.insert(AUTHORIZATION, HeaderValue::from_static(v));
            h
        };
        assert_eq!(bearer_token(&with("Bearer abc")), Some("abc"));
        assert_eq!(bearer_token(&with("bearer  abc ")), Some("abc"));
        assert_eq!(bearer_token(&with("Bearer ")), None);
        assert_eq!(bearer_token(&with("Basic abc")), None);
        assert_eq!(bearer_token(&with("abc")), None);
        assert_eq!(bearer_token(&HeaderMap::new()), None);
    }

    #[test]
    fn readiness_is_shared_and_explains_itself() {
        let r = Readiness::new();
        let clone = r.clone();
        assert!(!r.is_ready());
        assert_eq!(r.reason().as_deref(), Some("starting"));
        clone.set_ready(true);
        assert!(r.is_ready());
        clone.set_not_ready("shutting down");
        assert!(!r.is_ready());
        assert_eq!(r.reason().as_deref(), Some("shutting down"));
        r.set_ready(false);
        assert_eq!(r.reason(), None);
    }
}
