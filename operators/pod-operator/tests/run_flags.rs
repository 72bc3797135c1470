//! The pod-operator binary's `run` flags as a user gives them, against the real control plane:
//! JSON logs with controller-runtime's keys on every line of its stderr, and a kubeconfig split
//! over two files (`KUBECONFIG=a:b`) whose first file's current-context is unreachable, picked
//! with `--context`.

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use common::{Fixture, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT, TIMEOUT};
use kube::api::PostParams;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use operon_cluster::kubeconfig::{Ca, Credentials, single, to_text};
use operon_cluster::service_account_token;
use serde_json::Value;

/// The CA certificates of the test cluster, PEM.
async fn cluster_ca(f: &Fixture) -> Result<(String, String)> {
    let config = f.env.config().await?;
    let pem =
        operon_cluster::kubeconfig::certificates_pem(&config.root_cert.clone().unwrap_or_default());
    let server = config.cluster_url.to_string();
    Ok((server.trim_end_matches('/').to_string(), pem))
}

/// `a` holds context `bad` (nothing listens at its server) as current-context; `b` holds
/// context `good`, the test cluster as the operator's ServiceAccount, and is current there
/// too, but the first file wins. Returns `a:b`.
async fn split_kubeconfig(f: &Fixture, dir: &Path) -> Result<(PathBuf, PathBuf)> {
    common::install_rbac(&f.client).await?;
    let token = service_account_token(
        &f.client,
        OPERATOR_NAMESPACE,
        OPERATOR_SERVICE_ACCOUNT,
        3600,
    )
    .await?;
    let (server, ca) = cluster_ca(f).await?;
    let a = dir.join("a.kubeconfig");
    let b = dir.join("b.kubeconfig");
    // Port 1 on loopback: nothing listens there.
    let bad = single(
        "bad",
        "https://127.0.0.1:1",
        Ca::Pem(&ca),
        Credentials::Token("nobody"),
        None,
    );
    let good = single(
        "good",
        &server,
        Ca::Pem(&ca),
        Credentials::Token(&token),
        None,
    );
    std::fs::write(&a, to_text(&bad)?)?;
    std::fs::write(&b, to_text(&good)?)?;
    Ok((a, b))
}

fn list(a: &Path, b: &Path) -> Result<std::ffi::OsString> {
    Ok(std::env::join_paths([a, b])?)
}

/// The operator process, its stderr in a file; SIGKILLed on drop.
struct Operator {
    child: Child,
    stderr: PathBuf,
}

impl Operator {
    fn start(kubeconfig: &std::ffi::OsStr, stderr: PathBuf, args: &[&str]) -> Result<Operator> {
        let err = std::fs::File::create(&stderr)?;
        let child = Command::new(env!("CARGO_BIN_EXE_pod-operator"))
            .arg("run")
            .args([
                "--leader-elect=false",
                "--health-probe-bind-address=127.0.0.1:0",
                "--metrics-bind-address=0",
            ])
            .args(args)
            .env("KUBECONFIG", kubeconfig)
            .env_remove("RUST_LOG")
            .env_remove("LOG_FORMAT")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(err)
            .spawn()?;
        eprintln!(
            "pod-operator pid {}, stderr {}",
            child.id(),
            stderr.display()
        );
        Ok(Operator { child, stderr })
    }

    /// Waits up to `within` for the process to exit; its exit code.
    async fn wait_exit(&mut self, within: Duration) -> Result<Option<i32>> {
        let deadline = Instant::now() + within;
        loop {
            if let Some(status) = self.child.try_wait()? {
                return Ok(status.code());
            }
            if Instant::now() > deadline {
                bail!(
                    "pod-operator still running after {within:?}; stderr:\n{}",
                    self.stderr()
                );
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }

    fn stderr(&self) -> String {
        std::fs::read_to_string(&self.stderr).unwrap_or_default()
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test]
async fn json_logs_carry_controller_runtime_keys_on_every_line() -> Result<()> {
    let f = Fixture::new("run-json").await?;
    let dir = tempfile::tempdir()?;
    let (a, b) = split_kubeconfig(&f, dir.path()).await?;
    let started = Instant::now();
    let mut operator = Operator::start(
        &list(&a, &b)?,
        dir.path().join("stderr.log"),
        &[
            "--namespace",
            &f.ns,
            "--context",
            "good",
            "--zap-encoder=json",
            "--zap-log-level=debug",
            "--zap-time-encoding=rfc3339nano",
        ],
    )?;

    let pr = f.sample()?;
    let name = pr.metadata.name.clone().context("the sample's name")?;
    f.requests().create(&PostParams::default(), &pr).await?;
    f.wait_ready(&name).await?;
    eprintln!(
        "reconciled through --context good in {:?}",
        started.elapsed()
    );

    kill(Pid::from_raw(operator.child.id() as i32), Signal::SIGTERM)?;
    let code = operator.wait_exit(TIMEOUT).await?;
    let text = operator.stderr();
    ensure!(code == Some(0), "exit {code:?}; stderr:\n{text}");

    let mut reconcile_lines = 0;
    let mut ids = std::collections::HashSet::new();
    for (i, line) in text.lines().enumerate() {
        let v: Value = serde_json::from_str(line)
            .with_context(|| format!("line {} is not one JSON object: {line}", i + 1))?;
        let object = v.as_object().context("a JSON object")?;
        for key in ["ts", "level", "msg", "logger"] {
            ensure!(
                object.get(key).is_some_and(Value::is_string),
                "line {} has no string {key:?}: {line}",
                i + 1
            );
        }
        let level = v["level"].as_str().unwrap_or_default();
        ensure!(
            ["trace", "debug", "info", "warn", "error"].contains(&level),
            "level {level:?}: {line}"
        );
        let ts = v["ts"].as_str().unwrap_or_default();
        ensure!(
            ts.len() == "2026-01-02T15:04:05.123456789Z".len()
                && ts.as_bytes().get(10) == Some(&b'T')
                && ts.ends_with('Z'),
            "ts is not RFC 3339 with nanoseconds: {line}"
        );
        ensure!(
            !object.contains_key("spans") && !object.contains_key("fields"),
            "nested span or field objects: {line}"
        );
        if object.contains_key("reconcileID") {
            if reconcile_lines == 0 {
                eprintln!("a reconcile's line: {line}");
            }
            reconcile_lines += 1;
            ensure!(v["controller"] == "podrequest", "{line}");
            ensure!(v["logger"] == "controller.podrequest", "{line}");
            ensure!(v["controllerGroup"] == "pod.jewzaam.org", "{line}");
            ensure!(v["controllerKind"] == "PodRequest", "{line}");
            ensure!(v["namespace"] == f.ns.as_str(), "{line}");
            ensure!(v["name"].is_string(), "{line}");
            ensure!(
                v["PodRequest"]["name"] == v["name"]
                    && v["PodRequest"]["namespace"] == v["namespace"],
                "{line}"
            );
            let id = v["reconcileID"].as_str().unwrap_or_default();
            ensure!(id.len() == 36 && id.matches('-').count() == 4, "{line}");
            ids.insert(id.to_string());
        }
    }
    ensure!(
        text.lines()
            .any(|l| l.contains("connected to the cluster") && l.contains("\\\"good\\\"")),
        "no line saying which context was used:\n{text}"
    );
    ensure!(reconcile_lines > 0, "no reconcile line:\n{text}");
    eprintln!(
        "{} JSON lines, {reconcile_lines} inside reconciles, {} reconcile IDs",
        text.lines().count(),
        ids.len()
    );
    Ok(())
}

#[tokio::test]
async fn the_wrong_current_context_or_a_missing_one_fails_naming_it() -> Result<()> {
    let f = Fixture::new("run-context").await?;
    let dir = tempfile::tempdir()?;
    let (a, b) = split_kubeconfig(&f, dir.path()).await?;
    let kubeconfig = list(&a, &b)?;

    // No --context: the first file's current-context, whose server is unreachable.
    let started = Instant::now();
    let mut operator = Operator::start(
        &kubeconfig,
        dir.path().join("current.log"),
        &["--namespace", &f.ns],
    )?;
    let code = operator.wait_exit(TIMEOUT).await?;
    let text = operator.stderr();
    ensure!(code.is_some_and(|c| c != 0), "exit {code:?}:\n{text}");
    for expected in [
        "https://127.0.0.1:1",
        "context \"bad\"",
        &a.display().to_string(),
        &b.display().to_string(),
    ] {
        ensure!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    eprintln!(
        "unreachable current-context failed in {:?}",
        started.elapsed()
    );

    // A context that no file has.
    let mut operator = Operator::start(
        &kubeconfig,
        dir.path().join("missing.log"),
        &["--namespace", &f.ns, "--context", "nope"],
    )?;
    let code = operator.wait_exit(TIMEOUT).await?;
    let text = operator.stderr();
    ensure!(code.is_some_and(|c| c != 0), "exit {code:?}:\n{text}");
    for expected in [
        "context \"nope\" is not in kubeconfig",
        "bad, good",
        &b.display().to_string(),
    ] {
        ensure!(text.contains(expected), "no {expected:?} in:\n{text}");
    }

    // `audit` loads the kubeconfig the same way.
    let audit = Command::new(env!("CARGO_BIN_EXE_pod-operator"))
        .args(["audit", "--context", "nope"])
        .env("KUBECONFIG", &kubeconfig)
        .output()?;
    let text = String::from_utf8_lossy(&audit.stderr);
    ensure!(!audit.status.success(), "audit succeeded:\n{text}");
    ensure!(
        text.contains("context \"nope\" is not in kubeconfig") && text.contains("bad, good"),
        "audit's error:\n{text}"
    );
    Ok(())
}
