//! The admin server over real HTTP: health, readiness, metrics, and `/metrics` authorized by the
//! real control plane's TokenReview and SubjectAccessReview; the metrics server over HTTPS.

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use k8s_openapi::api::rbac::v1::{ClusterRole, ClusterRoleBinding, PolicyRule, RoleRef, Subject};
use kube::api::{Api, DeleteParams, ObjectMeta, PostParams};
use operon_cluster::wait;
use operon_runtime::admin::{AdminServer, Readiness, Routes};
use operon_runtime::metrics::Metrics;
use operon_runtime::serving_cert::{CertFiles, ServingCert};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A response: status code, head (status line and headers) and body.
#[derive(Debug)]
struct Answer {
    status: u16,
    head: String,
    body: String,
}

/// Sends `request` as is and reads the answer until the server closes the connection.
async fn exchange(addr: SocketAddr, request: &[u8]) -> Result<Answer> {
    let mut stream = TcpStream::connect(addr).await?;
    stream.write_all(request).await?;
    let mut buf = Vec::new();
    tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut buf))
        .await
        .context("reading the answer")??;
    parse(buf)
}

/// [`exchange`] over TLS, trusting only `root` and expecting the name `localhost`.
async fn exchange_tls(addr: SocketAddr, root: &str, request: &[u8]) -> Result<Answer> {
    use rustls::pki_types::pem::PemObject;
    let mut roots = rustls::RootCertStore::empty();
    roots.add(rustls::pki_types::CertificateDer::from_pem_slice(
        root.as_bytes(),
    )?)?;
    let config = rustls::ClientConfig::builder_with_provider(std::sync::Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_safe_default_protocol_versions()?
    .with_root_certificates(roots)
    .with_no_client_auth();
    let connector = tokio_rustls::TlsConnector::from(std::sync::Arc::new(config));
    let tcp = TcpStream::connect(addr).await?;
    let mut stream = connector
        .connect(rustls::pki_types::ServerName::try_from("localhost")?, tcp)
        .await?;
    stream.write_all(request).await?;
    let mut buf = Vec::new();
    // The server may close without close_notify once the answer is written.
    match tokio::time::timeout(TIMEOUT, stream.read_to_end(&mut buf))
        .await
        .context("reading the answer")?
    {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof && !buf.is_empty() => {}
        Err(e) => return Err(e.into()),
    }
    parse(buf)
}

fn parse(buf: Vec<u8>) -> Result<Answer> {
    let text = String::from_utf8(buf)?;
    let (head, body) = text
        .split_once("\r\n\r\n")
        .with_context(|| format!("no end of headers in {text:?}"))?;
    let status = head
        .split_whitespace()
        .nth(1)
        .with_context(|| format!("no status in {head:?}"))?
        .parse()?;
    Ok(Answer {
        status,
        head: head.to_string(),
        body: body.to_string(),
    })
}

async fn request(
    addr: SocketAddr,
    method: &str,
    path: &str,
    token: Option<&str>,
) -> Result<Answer> {
    let auth = token
        .map(|t| format!("Authorization: Bearer {t}\r\n"))
        .unwrap_or_default();
    let req =
        format!("{method} {path} HTTP/1.1\r\nHost: {addr}\r\n{auth}Connection: close\r\n\r\n");
    exchange(addr, req.as_bytes()).await
}

async fn get(addr: SocketAddr, path: &str, token: Option<&str>) -> Result<Answer> {
    request(addr, "GET", path, token).await
}

/// A running server, stopped by [`Server::stop`].
struct Server {
    addr: SocketAddr,
    stop: oneshot::Sender<()>,
    task: JoinHandle<()>,
}

impl Server {
    async fn start(server: AdminServer) -> Result<Server> {
        let (stop, stopped) = oneshot::channel::<()>();
        let (addr, serve) = server
            .bind("127.0.0.1:0".parse()?, async move {
                let _ = stopped.await;
            })
            .await?;
        Ok(Server {
            addr,
            stop,
            task: tokio::spawn(serve),
        })
    }

    async fn stop(self) -> Result<()> {
        let _ = self.stop.send(());
        tokio::time::timeout(TIMEOUT, self.task)
            .await
            .context("the server did not stop")??;
        Ok(())
    }
}

#[tokio::test]
async fn health_readiness_and_metrics() -> Result<()> {
    let metrics = Metrics::new();
    let readiness = Readiness::new();
    let server = Server::start(AdminServer::new(metrics.clone(), readiness.clone())).await?;
    let addr = server.addr;

    let health = get(addr, "/healthz", None).await?;
    ensure!(health.status == 200 && health.body == "ok", "{health:?}");

    let not_ready = get(addr, "/readyz", None).await?;
    ensure!(not_ready.status == 503, "{not_ready:?}");
    ensure!(not_ready.body.contains("starting"), "{not_ready:?}");
    readiness.set_ready(true);
    let ready = get(addr, "/readyz", None).await?;
    ensure!(ready.status == 200 && ready.body == "ok", "{ready:?}");

    let c = metrics.controller("podrequest");
    for error in [None, None, Some("conflict")] {
        c.queue_added(1);
        c.queue_got(std::time::Duration::ZERO, 0);
        let timer = c.begin();
        c.finished(timer, error);
    }
    metrics.set_leader("pod-operator", true);
    let scrape = get(addr, "/metrics", None).await?;
    ensure!(scrape.status == 200, "{scrape:?}");
    ensure!(
        scrape
            .head
            .to_ascii_lowercase()
            .contains("content-type: text/plain; version=0.0.4"),
        "{}",
        scrape.head
    );
    for line in [
        r#"controller_runtime_reconcile_total{controller="podrequest",result="success"} 2"#,
        r#"controller_runtime_reconcile_total{controller="podrequest",result="error"} 1"#,
        r#"controller_runtime_reconcile_errors_total{controller="podrequest"} 1"#,
        r#"workqueue_adds_total{controller="podrequest",name="podrequest"} 3"#,
        r#"leader_election_master_status{name="pod-operator"} 1"#,
    ] {
        ensure!(
            scrape.body.lines().any(|l| l == line),
            "missing {line:?} in:\n{}",
            scrape.body
        );
    }
    ensure!(
        scrape.body.contains("\nprocess_resident_memory_bytes "),
        "{}",
        scrape.body
    );

    readiness.set_not_ready("shutting down");
    let draining = get(addr, "/readyz", None).await?;
    ensure!(
        draining.status == 503 && draining.body.contains("shutting down"),
        "{draining:?}"
    );

    server.stop().await?;
    ensure!(
        TcpStream::connect(addr).await.is_err(),
        "still accepting connections after shutdown"
    );
    Ok(())
}

#[tokio::test]
async fn bad_requests_get_errors_not_a_dead_server() -> Result<()> {
    let server = Server::start(AdminServer::new(Metrics::new(), Readiness::new())).await?;
    let addr = server.addr;

    let missing = get(addr, "/nope", None).await?;
    ensure!(missing.status == 404, "{missing:?}");
    let post = request(addr, "POST", "/metrics", None).await?;
    ensure!(
        post.status == 405 && post.head.contains("GET, HEAD"),
        "{post:?}"
    );
    let head = request(addr, "HEAD", "/healthz", None).await?;
    ensure!(head.status == 200 && head.body.is_empty(), "{head:?}");
    let query = get(addr, "/healthz?verbose=1", None).await?;
    ensure!(query.status == 200, "{query:?}");

    // Not HTTP at all: hyper answers 400 (or closes); either way the server lives on.
    match exchange(addr, b"\x00\x01 garbage\r\n\r\n").await {
        Ok(answer) => ensure!(answer.status == 400, "{answer:?}"),
        Err(e) => eprintln!("garbage request: {e:#}"),
    }
    let oversized = format!(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: {}\r\n\r\n",
        "a".repeat(1 << 20)
    );
    match exchange(addr, oversized.as_bytes()).await {
        Ok(answer) => ensure!(answer.status == 431 || answer.status == 400, "{answer:?}"),
        Err(e) => eprintln!("oversized request: {e:#}"),
    }
    let health = get(addr, "/healthz", None).await?;
    ensure!(health.status == 200, "{health:?}");
    server.stop().await
}

fn named(name: &str) -> ObjectMeta {
    ObjectMeta {
        name: Some(name.to_string()),
        ..Default::default()
    }
}

#[tokio::test]
async fn metrics_need_a_token_allowed_to_get_metrics() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("metrics-auth").await?;
    let admin = env.client().await?;

    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), &ns);
    sas.create(
        &PostParams::default(),
        &ServiceAccount {
            metadata: named("scraper"),
            ..Default::default()
        },
    )
    .await?;
    let token = sas
        .create_token_request(
            "scraper",
            &PostParams::default(),
            &TokenRequest {
                spec: Some(TokenRequestSpec {
                    expiration_seconds: Some(3600),
                    ..Default::default()
                }),
                ..Default::default()
            },
        )
        .await?
        .status
        .and_then(|s| s.token)
        .context("the TokenRequest returned no token")?;

    let metrics = Metrics::new();
    let c = metrics.controller("podrequest");
    c.queue_added(1);
    c.queue_got(std::time::Duration::ZERO, 0);
    c.finished(c.begin(), None);
    let server = Server::start(
        AdminServer::new(metrics.clone(), Readiness::new()).with_metrics_auth(admin.clone()),
    )
    .await?;
    let addr = server.addr;
    // The split a Deployment runs: probes on plain HTTP, /metrics alone on HTTPS.
    let dir = tempfile::tempdir()?;
    let key = rcgen::KeyPair::generate()?;
    let cert = rcgen::CertificateParams::new(vec!["localhost".to_string()])?.self_signed(&key)?;
    std::fs::write(dir.path().join("tls.crt"), cert.pem())?;
    std::fs::write(dir.path().join("tls.key"), key.serialize_pem())?;
    let serving = ServingCert::new(
        Some(CertFiles {
            dir: dir.path().to_path_buf(),
            cert_name: "tls.crt".into(),
            key_name: "tls.key".into(),
        }),
        &[],
    )?;
    ensure!(serving.from_files());
    let secure = Server::start(
        AdminServer::new(metrics.clone(), Readiness::new())
            .routes(Routes::Metrics)
            .with_tls(&serving)?
            .with_metrics_auth(admin.clone()),
    )
    .await?;
    let probes =
        Server::start(AdminServer::new(metrics.clone(), Readiness::new()).routes(Routes::Probes))
            .await?;

    // Cluster-scoped: named per run, and deleted whatever the outcome.
    let rbac_name = format!("operon-metrics-reader-{}", ns.name());
    let outcome = async {
        scrape_with_rbac(&admin, &ns, &rbac_name, addr, &token).await?;
        scrape_over_https(secure.addr, probes.addr, &cert.pem(), &token).await
    }
    .await;
    let cleanup = delete_rbac(&admin, &rbac_name).await;
    server.stop().await?;
    secure.stop().await?;
    probes.stop().await?;
    outcome?;
    cleanup
}

/// With the token already allowed: HTTPS answers with it and refuses without it; plain HTTP on
/// the same port gets no answer; the probes' port has no `/metrics`.
async fn scrape_over_https(
    secure: SocketAddr,
    probes: SocketAddr,
    root: &str,
    token: &str,
) -> Result<()> {
    let request = |token: Option<&str>| {
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        format!("GET /metrics HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n")
    };
    let allowed = exchange_tls(secure, root, request(Some(token)).as_bytes()).await?;
    ensure!(allowed.status == 200, "{allowed:?}");
    ensure!(
        allowed.body.contains("controller_runtime_reconcile_total"),
        "{allowed:?}"
    );
    let none = exchange_tls(secure, root, request(None).as_bytes()).await?;
    ensure!(none.status == 401, "no token over HTTPS: {none:?}");
    let health = exchange_tls(
        secure,
        root,
        b"GET /healthz HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n",
    )
    .await?;
    ensure!(
        health.status == 404,
        "probes on the metrics port: {health:?}"
    );
    match exchange(secure, request(Some(token)).as_bytes()).await {
        Ok(answer) if answer.status == 200 => bail!("plain HTTP got metrics: {answer:?}"),
        Ok(answer) => bail!("plain HTTP got an HTTP answer: {answer:?}"),
        Err(_) => {}
    }
    let plain = get(probes, "/metrics", Some(token)).await?;
    ensure!(
        plain.status == 404,
        "metrics on the probes' port: {plain:?}"
    );
    let ready = get(probes, "/healthz", None).await?;
    ensure!(ready.status == 200, "{ready:?}");
    Ok(())
}

async fn scrape_with_rbac(
    admin: &kube::Client,
    ns: &str,
    rbac_name: &str,
    addr: SocketAddr,
    token: &str,
) -> Result<()> {
    // Health and readiness stay open.
    let health = get(addr, "/healthz", None).await?;
    ensure!(health.status == 200, "{health:?}");

    let none = get(addr, "/metrics", None).await?;
    ensure!(none.status == 401, "no token: {none:?}");
    ensure!(!none.body.contains("controller_runtime"), "{none:?}");
    let garbage = get(addr, "/metrics", Some("not-a-token")).await?;
    ensure!(garbage.status == 401, "garbage token: {garbage:?}");
    let denied = get(addr, "/metrics", Some(token)).await?;
    ensure!(denied.status == 403, "token without RBAC: {denied:?}");
    ensure!(
        denied
            .body
            .contains(&format!("system:serviceaccount:{ns}:scraper")),
        "{denied:?}"
    );

    let roles: Api<ClusterRole> = Api::all(admin.clone());
    roles
        .create(
            &PostParams::default(),
            &ClusterRole {
                metadata: named(rbac_name),
                rules: Some(vec![PolicyRule {
                    non_resource_urls: Some(vec!["/metrics".into()]),
                    verbs: vec!["get".into()],
                    ..Default::default()
                }]),
                ..Default::default()
            },
        )
        .await?;
    let bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
    bindings
        .create(
            &PostParams::default(),
            &ClusterRoleBinding {
                metadata: named(rbac_name),
                role_ref: RoleRef {
                    api_group: Some("rbac.authorization.k8s.io".into()),
                    kind: "ClusterRole".into(),
                    name: rbac_name.to_string(),
                },
                subjects: Some(vec![Subject {
                    kind: "ServiceAccount".into(),
                    name: "scraper".into(),
                    namespace: Some(ns.to_string()),
                    ..Default::default()
                }]),
            },
        )
        .await?;

    // RBAC reaches the authorizer's cache asynchronously.
    let allowed = wait::until("the scraper allowed to get /metrics", TIMEOUT, || async {
        match get(addr, "/metrics", Some(token)).await {
            Ok(a) if a.status == 200 => Ok(a),
            Ok(a) => Err(format!("{} {}", a.status, a.body.trim())),
            Err(e) => Err(format!("{e:#}")),
        }
    })
    .await?;
    let line = r#"controller_runtime_reconcile_total{controller="podrequest",result="success"} 1"#;
    ensure!(
        allowed.body.lines().any(|l| l == line),
        "missing {line:?} in:\n{}",
        allowed.body
    );

    // Still refused without the token, and the token still works (now from the cache).
    let none = get(addr, "/metrics", None).await?;
    ensure!(none.status == 401, "{none:?}");
    let again = get(addr, "/metrics", Some(token)).await?;
    ensure!(again.status == 200, "{again:?}");
    Ok(())
}

async fn delete_rbac(admin: &kube::Client, name: &str) -> Result<()> {
    let mut failures = Vec::new();
    let bindings: Api<ClusterRoleBinding> = Api::all(admin.clone());
    if let Err(e) = bindings.delete(name, &DeleteParams::default()).await
        && !matches!(&e, kube::Error::Api(s) if s.code == 404)
    {
        failures.push(format!("ClusterRoleBinding {name}: {e}"));
    }
    let roles: Api<ClusterRole> = Api::all(admin.clone());
    if let Err(e) = roles.delete(name, &DeleteParams::default()).await
        && !matches!(&e, kube::Error::Api(s) if s.code == 404)
    {
        failures.push(format!("ClusterRole {name}: {e}"));
    }
    if !failures.is_empty() {
        bail!("cleaning up: {}", failures.join("; "));
    }
    Ok(())
}
