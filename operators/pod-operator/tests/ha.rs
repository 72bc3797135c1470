//! The pod-operator binary as deployed: two replicas electing a leader on a Lease, authenticated
//! as the operator's ServiceAccount, with the admin server's health and protected metrics.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use common::{Fixture, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, TIMEOUT};
use k8s_openapi::api::coordination::v1::Lease;
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use operon_cluster::service_account_token;
use operon_cluster::wait;
use pod_operator::api::{PodRequest, PodRequestSpec};
use serde_json::json;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// A kubeconfig that authenticates with `token` against the test cluster.
async fn token_kubeconfig(f: &Fixture, dir: &Path, token: &str) -> Result<PathBuf> {
    let config = f.env.config().await?;
    let ca =
        operon_cluster::kubeconfig::certificates_pem(&config.root_cert.clone().unwrap_or_default());
    let server = config.cluster_url.to_string();
    let kubeconfig = operon_cluster::kubeconfig::single(
        "test",
        server.trim_end_matches('/'),
        operon_cluster::kubeconfig::Ca::Pem(&ca),
        operon_cluster::kubeconfig::Credentials::Token(token),
        None,
    );
    let path = dir.join("kubeconfig");
    std::fs::write(&path, operon_cluster::kubeconfig::to_text(&kubeconfig)?)?;
    Ok(path)
}

fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// One operator process; SIGKILLed on drop.
struct Replica {
    identity: String,
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Replica {
    fn start(
        kubeconfig: &Path,
        dir: &Path,
        ns: &str,
        lease: &str,
        identity: &str,
    ) -> Result<Replica> {
        let port = free_port()?;
        let log = dir.join(format!("{identity}.log"));
        let out = std::fs::File::create(&log)?;
        let child = Command::new(env!("CARGO_BIN_EXE_pod-operator"))
            .args(["run", "--namespace", ns, "--leader-election-id", lease])
            .args([
                "--leader-election-namespace",
                OPERATOR_NAMESPACE,
                "--metrics-auth=true",
            ])
            .arg(format!("--health-probe-bind-address=127.0.0.1:{port}"))
            // /metrics beside the probes: replicas on one host share no fixed port.
            .arg("--metrics-bind-address=0")
            .env("KUBECONFIG", kubeconfig)
            .env("POD_NAME", identity)
            .env_remove("RUST_LOG")
            .stdin(Stdio::null())
            .stdout(out.try_clone()?)
            .stderr(out)
            .spawn()?;
        eprintln!(
            "replica {identity}: pid {}, log {}",
            child.id(),
            log.display()
        );
        Ok(Replica {
            identity: identity.to_string(),
            child,
            port,
            log,
        })
    }

    fn signal(&self, signal: Signal) -> Result<()> {
        Ok(kill(Pid::from_raw(self.child.id() as i32), signal)?)
    }

    async fn exit_code(&mut self, within: Duration) -> Result<Option<i32>> {
        let what = format!("{} to exit (log {})", self.identity, self.log.display());
        let every = wait::Backoff::every(Duration::from_millis(20));
        let child = &mut self.child;
        let code = wait::poll(&what, within, every, || {
            std::future::ready(match child.try_wait() {
                Ok(Some(status)) => wait::Check::Ready(status.code()),
                Ok(None) => wait::Check::Pending("still running".into()),
                Err(e) => wait::Check::Failed(e),
            })
        })
        .await?;
        Ok(code)
    }

    /// Waits until `/readyz` answers 200.
    async fn wait_ready(&self) -> Result<()> {
        wait::until(&format!("{} ready", self.identity), TIMEOUT, || async {
            match self.get("/readyz", None).await {
                Ok((200, _)) => Ok(()),
                other => Err(format!("{other:?}")),
            }
        })
        .await?;
        Ok(())
    }

    /// `(status code, body)` of `GET path` on the admin server.
    async fn get(&self, path: &str, token: Option<&str>) -> Result<(u16, String)> {
        let mut stream = tokio::net::TcpStream::connect(("127.0.0.1", self.port)).await?;
        let auth = token
            .map(|t| format!("Authorization: Bearer {t}\r\n"))
            .unwrap_or_default();
        let request =
            format!("GET {path} HTTP/1.1\r\nHost: localhost\r\n{auth}Connection: close\r\n\r\n");
        stream.write_all(request.as_bytes()).await?;
        let mut response = String::new();
        stream.read_to_string(&mut response).await?;
        let code = response
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .context("no status")?;
        let body = response
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((code, body))
    }
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

async fn holder(leases: &Api<Lease>, name: &str) -> Option<String> {
    leases
        .get_opt(name)
        .await
        .ok()
        .flatten()
        .and_then(|l| l.spec)
        .and_then(|s| s.holder_identity)
}

async fn wait_holder(
    leases: &Api<Lease>,
    name: &str,
    identity: &str,
    timeout: Duration,
) -> Result<Duration> {
    let t0 = Instant::now();
    wait::until(&format!("{identity} leads"), timeout, || async {
        match holder(leases, name).await {
            Some(h) if h == identity => Ok(()),
            other => Err(format!("holder {other:?}")),
        }
    })
    .await?;
    Ok(t0.elapsed())
}

fn request(ns: &str, name: &str) -> PodRequest {
    let mut pr = PodRequest::new(
        name,
        PodRequestSpec {
            name: "main".into(),
            image: "busybox".into(),
            command: vec!["sleep".into(), "60".into()],
        },
    );
    pr.metadata.namespace = Some(ns.to_string());
    pr
}

struct Setup {
    f: Fixture,
    dir: tempfile::TempDir,
    kubeconfig: PathBuf,
    lease: String,
    leases: Api<Lease>,
}

async fn setup(prefix: &str) -> Result<Setup> {
    let f = Fixture::new(prefix).await?;
    common::install_rbac(&f.client).await?;
    let token = service_account_token(
        &f.client,
        OPERATOR_NAMESPACE,
        OPERATOR_SERVICE_ACCOUNT,
        3600,
    )
    .await?;
    let dir = tempfile::tempdir()?;
    let kubeconfig = token_kubeconfig(&f, dir.path(), &token).await?;
    let lease = format!("{}-leader", f.ns);
    let leases = Api::namespaced(f.client.clone(), OPERATOR_NAMESPACE);
    Ok(Setup {
        f,
        dir,
        kubeconfig,
        lease,
        leases,
    })
}

#[tokio::test]
async fn standby_takes_over_after_the_leader_is_killed_without_losing_work() -> Result<()> {
    const N: usize = 30;
    let s = setup("ha-kill").await?;
    let mut a = Replica::start(&s.kubeconfig, s.dir.path(), &s.f.ns, &s.lease, "replica-a")?;
    wait_holder(&s.leases, &s.lease, "replica-a", TIMEOUT).await?;
    let b = Replica::start(&s.kubeconfig, s.dir.path(), &s.f.ns, &s.lease, "replica-b")?;
    b.wait_ready().await?;

    // Requests keep arriving while the leader dies.
    let api = s.f.requests();
    let ns = s.f.ns.clone();
    let creator = tokio::spawn(async move {
        for i in 0..N {
            api.create(&PostParams::default(), &request(&ns, &format!("ha-{i:02}")))
                .await?;
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
        anyhow::Ok(())
    });
    s.f.wait_ready("ha-00").await?;
    a.signal(Signal::SIGKILL)?;
    let killed = Instant::now();
    a.exit_code(Duration::from_secs(5)).await?;
    let takeover = wait_holder(&s.leases, &s.lease, "replica-b", Duration::from_secs(30)).await?;
    creator.await??;
    // The first request created after the kill shows when reconciling resumed.
    s.f.assert_converged(N).await?;
    let resumed = killed.elapsed();
    eprintln!(
        "SIGKILL: standby leads after {takeover:?}; all {N} requests converged {resumed:?} after the kill"
    );
    // Lease 15 s + retry 2 s, with a margin for a loaded machine; and no takeover before the
    // old lease could have expired (renewed at most one retry period before the kill).
    ensure!(
        takeover <= Duration::from_secs(20),
        "takeover took {takeover:?}"
    );
    ensure!(
        takeover >= Duration::from_secs(12),
        "takeover after {takeover:?}: before the lease expired"
    );
    Ok(())
}

#[tokio::test]
async fn sigterm_hands_over_at_once() -> Result<()> {
    let s = setup("ha-term").await?;
    let mut a = Replica::start(&s.kubeconfig, s.dir.path(), &s.f.ns, &s.lease, "replica-a")?;
    wait_holder(&s.leases, &s.lease, "replica-a", TIMEOUT).await?;
    let b = Replica::start(&s.kubeconfig, s.dir.path(), &s.f.ns, &s.lease, "replica-b")?;
    b.wait_ready().await?;
    a.signal(Signal::SIGTERM)?;
    let handover = wait_holder(&s.leases, &s.lease, "replica-b", Duration::from_secs(10)).await?;
    eprintln!("SIGTERM: standby leads after {handover:?}");
    ensure!(
        handover <= Duration::from_secs(3),
        "graceful handover took {handover:?}"
    );
    ensure!(
        a.exit_code(Duration::from_secs(10)).await? == Some(0),
        "leader did not exit cleanly"
    );
    s.f.requests()
        .create(&PostParams::default(), &request(&s.f.ns, "after-handover"))
        .await?;
    s.f.wait_ready("after-handover").await?;
    drop(b);
    Ok(())
}

#[tokio::test]
async fn admin_server_serves_health_and_protected_metrics() -> Result<()> {
    let s = setup("ha-metrics").await?;
    let a = Replica::start(&s.kubeconfig, s.dir.path(), &s.f.ns, &s.lease, "replica-a")?;
    wait_holder(&s.leases, &s.lease, "replica-a", TIMEOUT).await?;
    s.f.requests()
        .create(&PostParams::default(), &request(&s.f.ns, "measured"))
        .await?;
    s.f.wait_ready("measured").await?;
    a.wait_ready().await?;
    ensure!(a.get("/healthz", None).await?.0 == 200);
    let (code, _) = a.get("/metrics", None).await?;
    ensure!(code == 401, "unauthenticated /metrics answered {code}");

    // A scraper bound to the generated metrics-reader role gets in.
    let sa = format!("scraper-{}", operon_envtest::random_suffix());
    let scraper = service_account_token(
        &{
            s.f.env.service_account_client(&s.f.ns, &sa).await?;
            s.f.client.clone()
        },
        &s.f.ns,
        &sa,
        3600,
    )
    .await?;
    let (code, _) = a.get("/metrics", Some(&scraper)).await?;
    ensure!(code == 403, "unauthorized scraper answered {code}");
    let binding: k8s_openapi::api::rbac::v1::ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": format!("{}-{sa}", s.f.ns) },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "pod-operator-metrics-reader" },
        "subjects": [{ "kind": "ServiceAccount", "name": sa, "namespace": s.f.ns }],
    }))?;
    let bindings: Api<k8s_openapi::api::rbac::v1::ClusterRoleBinding> =
        Api::all(s.f.client.clone());
    bindings.create(&PostParams::default(), &binding).await?;
    let body = wait::until("scraper allowed", TIMEOUT, || async {
        match a.get("/metrics", Some(&scraper)).await {
            Ok((200, body)) => Ok(body),
            other => Err(format!("{:?}", other.map(|(c, _)| c))),
        }
    })
    .await;
    let _ = bindings
        .delete(&binding.name_any(), &Default::default())
        .await;
    let body = body?;
    let value = |prefix: &str| -> f64 {
        body.lines()
            .find(|l| l.starts_with(prefix))
            .and_then(|l| l.rsplit(' ').next())
            .and_then(|v| v.parse().ok())
            .unwrap_or(-1.0)
    };
    ensure!(
        value("controller_runtime_reconcile_total{controller=\"podrequest\",result=\"success\"}")
            >= 1.0,
        "{body}"
    );
    ensure!(
        value(&format!(
            "leader_election_master_status{{name=\"{}\"}}",
            s.lease
        )) == 1.0,
        "{body}"
    );
    ensure!(value("workqueue_adds_total{") >= 1.0, "{body}");
    ensure!(value("process_resident_memory_bytes") > 0.0, "{body}");
    Ok(())
}
