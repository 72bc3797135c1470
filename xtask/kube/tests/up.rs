//! The README's run command, `cargo xtask up`, as a newcomer uses it: the talk's PodRequest gets
//! its Pod, the talk's cleanup works with kubectl, and Ctrl-C leaves nothing running.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use operon_cluster::wait;
use pod_operator::api::PodRequest;

fn alive(pid: i32) -> bool {
    kill(Pid::from_raw(pid), None).is_ok()
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = operon_cluster::apply::kubectl(kubeconfig)
        .args(args)
        .output()?;
    ensure!(
        out.status.success(),
        "kubectl {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// `xtask up <args>` with its state in `state`; its output once it is ready (or an error with
/// what it printed).
fn start_up(state: &Path, args: &[&str], timeout: Duration) -> Result<(Up, String)> {
    let mut child = Up(Command::new(env!("CARGO_BIN_EXE_xtask-kube"))
        .arg("up")
        .args(args)
        .env("OPERON_STATE_DIR", state)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()?);
    let stdout = child.0.stdout.take().context("no stdout")?;
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        // Read to the end even when nobody listens any more: a closed pipe would make
        // `xtask up`'s next print fail.
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let mut output = Vec::new();
    let deadline = Instant::now() + timeout;
    loop {
        match rx.recv_timeout(Duration::from_millis(200)) {
            Ok(line) => {
                let done = line.contains("Ctrl-C stops everything");
                output.push(line);
                if done {
                    return Ok((child, output.join("\n")));
                }
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {}
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                bail!("xtask up exited:\n{}", output.join("\n"))
            }
        }
        if Instant::now() > deadline {
            bail!(
                "xtask up not ready after {timeout:?}:\n{}",
                output.join("\n")
            );
        }
    }
}

/// A running `xtask up`, interrupted (Ctrl-C) when dropped, so that a failing test leaves no
/// cluster behind.
struct Up(Child);

impl Drop for Up {
    fn drop(&mut self) {
        if matches!(self.0.try_wait(), Ok(None)) {
            let _ = kill(Pid::from_raw(self.0.id() as i32), Signal::SIGINT);
            let t0 = Instant::now();
            while matches!(self.0.try_wait(), Ok(None)) && t0.elapsed() < Duration::from_secs(60) {
                std::thread::sleep(Duration::from_millis(100));
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

/// Ctrl-C, and the exit status within a minute.
async fn interrupt(up: &mut Up) -> Result<()> {
    let child = &mut up.0;
    kill(Pid::from_raw(child.id() as i32), Signal::SIGINT)?;
    let every = wait::Backoff::every(Duration::from_millis(100));
    let exited = wait::poll(
        "xtask up to stop after Ctrl-C",
        Duration::from_secs(60),
        every,
        || {
            std::future::ready(match child.try_wait() {
                Ok(Some(status)) => wait::Check::Ready(status),
                Ok(None) => wait::Check::Pending("still running".into()),
                Err(e) => wait::Check::Failed(e),
            })
        },
    )
    .await;
    if exited.is_err() {
        let _ = child.kill();
    }
    let status = exited?;
    ensure!(status.success(), "xtask up exited with {status}");
    Ok(())
}

#[tokio::test]
async fn up_deploys_the_operators_and_the_talks_pod_greets() -> Result<()> {
    let state = tempfile::tempdir()?;
    // The first run builds the operators' release images (minutes, cold).
    let (mut child, text) = start_up(state.path(), &[], Duration::from_secs(1200))?;
    // The talk's check, done by `up` itself: the container's log.
    let (_, log) = text
        .split_once("$ kubectl logs busybox -n pod-operator\n")
        .context("no kubectl logs in the output")?;
    ensure!(
        log.lines().next() == Some("Hello DevConf.CZ 2020!"),
        "{text}"
    );
    // The monitoring stack, by default: available before the walkthrough, which shows it.
    ensure!(
        text.contains("the monitoring stack is available")
            && text.contains("port-forward svc/prometheus-k8s 9090"),
        "{text}"
    );
    for operator in [
        "pod-operator",
        "service-ca-operator",
        "credentials-operator",
        "monitoring-operator",
    ] {
        // The `kubectl get deployments` table, after kubectl apply's "… created".
        let ready = text
            .lines()
            .filter_map(|l| {
                let mut words = l
                    .split_whitespace()
                    .skip_while(|w| *w != format!("deployment.apps/{operator}-controller-manager"));
                words.nth(1)
            })
            .next_back();
        ensure!(
            ready == Some("2/2"),
            "{operator} not deployed with 2 ready replicas ({ready:?}):\n{text}"
        );
        ensure!(
            text.contains(&format!("localhost/operon/{operator}:v")),
            "{text}"
        );
    }
    let kubeconfig = state.path().join("kubeconfig");
    let nodes = kubectl(
        &kubeconfig,
        &[
            "get",
            "pods",
            "-n",
            "pod-operator",
            "busybox",
            "-o",
            "jsonpath={.spec.nodeName}",
        ],
    )?;
    ensure!(nodes == operon_cluster::node::NODE_NAME, "{nodes}");
    let children: Vec<i32> =
        std::fs::read_to_string(state.path().join("cluster").join("children.pids"))?
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
    let link = text
        .lines()
        .find_map(|l| l.split("moto (AWS IAM emulator) at http://").nth(1))
        .and_then(|rest| rest.split(':').next())
        .context("no moto address")?
        .to_string();
    interrupt(&mut child).await?;
    for pid in children {
        ensure!(!alive(pid), "pid {pid} survived Ctrl-C");
    }
    // The node's link (the host's end has the address moto listened on) is gone.
    let addresses = std::process::Command::new("ip")
        .args(["-o", "addr", "show"])
        .output()?;
    let addresses = String::from_utf8_lossy(&addresses.stdout);
    ensure!(!addresses.contains(&format!("{link}/")), "{addresses}");
    ensure!(!state.path().join("cluster.json").exists());
    Ok(())
}

#[tokio::test]
async fn up_with_local_operators_runs_the_talk_demo_and_ctrl_c_stops_everything() -> Result<()> {
    let state = tempfile::tempdir()?;
    let xtask = PathBuf::from(env!("CARGO_BIN_EXE_xtask-kube"));
    let bin_dir = xtask.parent().context("xtask has no directory")?;
    ensure!(
        bin_dir.join("pod-operator").is_file(),
        "pod-operator is not built next to xtask"
    );
    let bin_dir = bin_dir.to_string_lossy().to_string();
    let (mut child, text) = start_up(
        state.path(),
        &[
            "--local-operators",
            "--kwok-only",
            "--operator-bin-dir",
            &bin_dir,
        ],
        Duration::from_secs(180),
    )?;
    let operator_pid: i32 = text
        .split("pod-operator running (pid ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|pid| pid.parse().ok())
        .context("no operator pid in the output")?;
    let credentials_pid: i32 = text
        .split("credentials-operator running (pid ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|pid| pid.parse().ok())
        .context("no credentials-operator pid in the output")?;
    let service_ca_pid: i32 = text
        .split("service-ca-operator running (pid ")
        .nth(1)
        .and_then(|rest| rest.split(',').next())
        .and_then(|pid| pid.parse().ok())
        .context("no service-ca-operator pid in the output")?;
    ensure!(
        text.contains("busybox   busybox   Running   True"),
        "kubectl table missing:\n{text}"
    );

    let kubeconfig = state.path().join("kubeconfig");
    let kc = kube::config::Kubeconfig::read_from(&kubeconfig)?;
    let client = kube::Client::try_from(
        kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?,
    )?;
    let pr = Api::<PodRequest>::namespaced(client.clone(), "pod-operator")
        .get("busybox")
        .await?;
    let pod = Api::<Pod>::namespaced(client.clone(), "pod-operator")
        .get("busybox")
        .await?;
    assert_eq!(
        pod.owner_references().first().map(|o| o.uid.clone()),
        pr.metadata.uid
    );
    assert_eq!(pod.status.and_then(|s| s.phase).as_deref(), Some("Running"));

    // Slides 48-50: the annotated Service got its serving Secret, the ConfigMap the CA bundle
    // of the signer in service-ca-operator's namespace.
    let secret = kubectl(
        &kubeconfig,
        &[
            "get",
            "secret",
            "devconf-service-certs",
            "-n",
            "devconf",
            "-o",
            "jsonpath={.type} {.metadata.ownerReferences[0].name}",
        ],
    )?;
    ensure!(secret == "kubernetes.io/tls devconf", "{secret}");
    let injected = kubectl(
        &kubeconfig,
        &[
            "get",
            "configmap",
            "devconf-service-cabundle",
            "-n",
            "devconf",
            "-o",
            "jsonpath={.data.service-ca\\.crt}",
        ],
    )?;
    let published = kubectl(
        &kubeconfig,
        &[
            "get",
            "configmap",
            "signing-cabundle",
            "-n",
            "service-ca-operator-system",
            "-o",
            "jsonpath={.data.ca-bundle\\.crt}",
        ],
    )?;
    ensure!(
        injected.starts_with("-----BEGIN CERTIFICATE-----") && injected == published,
        "injected {injected:?} vs published {published:?}"
    );

    // Slides 41-44: the CredentialsRequest minted an IAM user (in moto) and wrote its Secret.
    let provisioned = kubectl(
        &kubeconfig,
        &[
            "get",
            "credentialsrequest",
            "aws-creds-to-describe-all-instances",
            "-n",
            "devconf",
            "-o",
            "jsonpath={.status.provisioned} {.status.providerStatus.user}",
        ],
    )?;
    ensure!(
        provisioned.starts_with("true operon-aws-creds-to-describe-all-instances-"),
        "{provisioned}"
    );
    let keys = kubectl(
        &kubeconfig,
        &[
            "get",
            "secret",
            "secret-to-store-credentials",
            "-n",
            "devconf",
            "-o",
            "go-template={{range $k, $v := .data}}{{$k}} {{end}}",
        ],
    )?;
    ensure!(
        keys.trim() == "aws_access_key_id aws_secret_access_key credentials",
        "{keys}"
    );

    // Slide 73: delete the request; the Pods with app=busybox go.
    kubectl(
        &kubeconfig,
        &["delete", "podrequest", "busybox", "-n", "pod-operator"],
    )?;
    wait::until(
        "kubectl get pods -l app=busybox empty",
        Duration::from_secs(60),
        || async {
            let pods = kubectl(
                &kubeconfig,
                &[
                    "get",
                    "pods",
                    "-l",
                    "app=busybox",
                    "-n",
                    "pod-operator",
                    "-o",
                    "name",
                ],
            )
            .map_err(|e| e.to_string())?;
            if pods.trim().is_empty() {
                Ok(())
            } else {
                Err(pods)
            }
        },
    )
    .await?;

    let children: Vec<i32> =
        std::fs::read_to_string(state.path().join("cluster").join("children.pids"))?
            .lines()
            .filter_map(|l| l.split_whitespace().next()?.parse().ok())
            .collect();
    ensure!(
        children.len() == 5,
        "expected 5 control plane processes: {children:?}"
    );
    interrupt(&mut child).await?;
    for pid in children
        .into_iter()
        .chain([operator_pid, service_ca_pid, credentials_pid])
    {
        ensure!(!alive(pid), "pid {pid} survived Ctrl-C");
    }
    ensure!(!state.path().join("cluster.json").exists());
    Ok(())
}

use kube::ResourceExt as _;
