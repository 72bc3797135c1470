//! `cargo xtask cluster up | down | status | snapshot | restore`: the test control plane, for a
//! person.
//!
//! `up` runs `cluster up --attach` as a detached process (its own session, so Ctrl-C in the
//! terminal doesn't reach it) and waits until it reports ready in `.operon/cluster.json`.
//! `--attach` runs the control plane in the foreground until SIGINT/SIGTERM.
//!
//! `snapshot save` runs etcdctl against the etcd that `cluster.json` names. `restore` must act
//! in the process that holds the control plane (and the real node, which keeps running): it asks
//! it over a Unix socket in the state directory, `.operon/control.sock`, and waits for the
//! answer.

use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, anyhow, bail};
use k8s_openapi::api::core::v1::Node;
use kube::api::Api;
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use operon_cluster::{Assets, Component, ControlPlane, EtcdClient, wait};
use serde::{Deserialize, Serialize};

use xtask::cli::Shape;
use xtask::{elapsed, repo_root};

/// Per-checkout state: kubeconfig, control plane data and logs (git-ignored).
/// `OPERON_STATE_DIR` moves it (tests use this to stay apart from a developer's cluster).
pub fn state_dir() -> PathBuf {
    std::env::var_os("OPERON_STATE_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| repo_root().join(".operon"))
}

pub fn kubeconfig_path() -> PathBuf {
    state_dir().join("kubeconfig")
}

fn info_path() -> PathBuf {
    state_dir().join("cluster.json")
}

fn data_dir() -> PathBuf {
    state_dir().join("cluster")
}

fn log_path() -> PathBuf {
    state_dir().join("cluster.log")
}

fn control_socket() -> PathBuf {
    state_dir().join("control.sock")
}

/// How long `cluster restore` waits for the control plane's answer.
const RESTORE_TIMEOUT: Duration = Duration::from_secs(5 * 60);

/// What a running `cluster up` publishes.
#[derive(Serialize, Deserialize)]
pub struct ClusterInfo {
    pub pid: u32,
    pub server: String,
    pub kubeconfig: PathBuf,
    pub startup: String,
    pub logs: Vec<(String, PathBuf)>,
    /// The real node, described for a person.
    #[serde(default)]
    pub node: Option<String>,
    /// The real node's network, where `cargo xtask up` guards moto's port.
    #[serde(default)]
    pub node_network: Option<operon_cluster::node::guard::NodeNetwork>,
    /// etcd's endpoint and the client certificate it accepts, for `cluster snapshot save`.
    #[serde(default)]
    pub etcd: Option<EtcdClient>,
}

impl ClusterInfo {
    /// What a running control plane publishes about itself.
    pub fn of(cp: &ControlPlane) -> ClusterInfo {
        ClusterInfo {
            pid: std::process::id(),
            server: cp.server().to_string(),
            kubeconfig: kubeconfig_path(),
            startup: cp.startup_times().to_string(),
            logs: cp.log_files(),
            node: cp.node().map(|node| {
                format!(
                    "real node {} at {} (Pods {}), registry {}",
                    node.name(),
                    node.node_ip(),
                    node.pod_cidr(),
                    node.registry()
                )
            }),
            node_network: cp.node().map(operon_cluster::Node::network),
            etcd: Some(cp.etcd_client().clone()),
        }
    }
}

fn alive(pid: u32) -> bool {
    kill(Pid::from_raw(pid as i32), None).is_ok()
}

/// Announces a ready control plane (written last and atomically: its presence means ready).
pub fn publish(info: &ClusterInfo) -> Result<()> {
    let tmp = info_path().with_extension("tmp");
    std::fs::write(&tmp, serde_json::to_vec_pretty(info)?)?;
    std::fs::rename(&tmp, info_path())?;
    Ok(())
}

pub fn unpublish() {
    let _ = std::fs::remove_file(info_path());
    let _ = std::fs::remove_file(control_socket());
}

pub fn running() -> Option<ClusterInfo> {
    let info: ClusterInfo = serde_json::from_slice(&std::fs::read(info_path()).ok()?).ok()?;
    alive(info.pid).then_some(info)
}

pub fn up(attach: bool, shape: Shape) -> Result<()> {
    if let Some(info) = running() {
        println!(
            "cluster: already running (pid {}) at {}",
            info.pid, info.server
        );
        print_usage(&info);
        return Ok(());
    }
    xtask::k8s::ensure_built(false)?;
    if attach {
        return serve(shape);
    }
    std::fs::create_dir_all(state_dir())?;
    let _ = std::fs::remove_file(info_path());
    let log = std::fs::File::create(log_path())?;
    let mut cmd = Command::new(std::env::current_exe()?);
    cmd.args([
        "cluster",
        "up",
        "--attach",
        "--nodes",
        &shape.nodes.to_string(),
    ]);
    if shape.kwok_only {
        cmd.arg("--kwok-only");
    }
    if shape.ha {
        cmd.arg("--ha");
    }
    cmd.current_dir(repo_root())
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    {
        use std::os::unix::process::CommandExt;
        cmd.process_group(0);
    }
    let mut child = cmd
        .spawn()
        .context("starting the control plane in the background")?;
    let t0 = Instant::now();
    println!(
        "cluster: starting in the background (log {})",
        log_path().display()
    );
    let timeout = Duration::from_secs(180);
    let every = wait::Backoff::every(Duration::from_millis(100));
    let ready = wait::blocking_poll("the control plane", timeout, every, || {
        if let Some(info) = running().filter(|i| i.pid == child.id()) {
            return wait::Check::Ready(info);
        }
        match child.try_wait() {
            Ok(None) => wait::Check::Pending("starting".into()),
            Ok(Some(status)) => {
                let log = std::fs::read_to_string(log_path()).unwrap_or_default();
                wait::Check::Failed(anyhow!(
                    "the control plane exited ({status}) before it was ready:\n{log}"
                ))
            }
            Err(e) => wait::Check::Failed(e.into()),
        }
    });
    match ready {
        Ok(info) => {
            println!("cluster: ready in {} ({})", elapsed(t0), info.startup);
            print_usage(&info);
            Ok(())
        }
        Err(wait::Stopped::Failed(e)) => Err(e),
        Err(wait::Stopped::Timeout(_)) => {
            let _ = kill(Pid::from_raw(child.id() as i32), Signal::SIGTERM);
            bail!(
                "the control plane was not ready after 3 minutes; see {}",
                log_path().display()
            );
        }
    }
}

fn print_usage(info: &ClusterInfo) {
    let kubeconfig = info.kubeconfig.display();
    if let Some(node) = &info.node {
        println!("cluster: {node}");
    }
    println!();
    println!("  export KUBECONFIG={kubeconfig}");
    println!(
        "  export PATH={}:$PATH   # kubectl {}",
        operon_cluster::default_bin_dir().display(),
        operon_cluster::KUBERNETES_VERSION
    );
    println!("  kubectl get nodes");
    println!();
    println!(
        "  Tests against this cluster:  USE_EXISTING_CLUSTER=true KUBECONFIG={kubeconfig} cargo xtask test"
    );
    println!("  Stop it:                     cargo xtask cluster down");
}

/// Starts a control plane of `shape` keeping its state in `dir`.
pub async fn start(shape: Shape, dir: &std::path::Path) -> Result<ControlPlane> {
    let _ = std::fs::remove_dir_all(dir);
    ControlPlane::builder()
        .nodes(shape.nodes)
        .real_node(!shape.kwok_only)
        .ha(shape.ha)
        // A user's objects: etcd fsyncs each write.
        .durable(true)
        .dir(dir)
        .start()
        .await
        .context(if shape.kwok_only {
            "starting the control plane"
        } else {
            "starting the control plane with a real node (--kwok-only starts one without)"
        })
}

/// Runs the control plane in the foreground until SIGINT or SIGTERM.
fn serve(shape: Shape) -> Result<()> {
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let cp = start(shape, &data_dir()).await?;
        std::fs::copy(cp.kubeconfig_path(), kubeconfig_path())?;
        let info = ClusterInfo::of(&cp);
        publish(&info)?;
        println!("cluster: ready ({}) at {}", info.startup, info.server);

        for (name, path) in &info.logs {
            println!("cluster: {name} log: {}", path.display());
        }
        print_usage(&info);

        let _ = std::fs::remove_file(control_socket());
        let control = tokio::net::UnixListener::bind(control_socket())
            .with_context(|| format!("listening on {}", control_socket().display()))?;
        std::fs::set_permissions(control_socket(), std::fs::Permissions::from_mode(0o600))?;

        let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
        loop {
            tokio::select! {
                _ = tokio::signal::ctrl_c() => break,
                _ = term.recv() => break,
                accepted = control.accept() => match accepted {
                    Ok((stream, _)) => answer(&cp, stream).await,
                    Err(e) => println!("cluster: control socket: {e}"),
                },
            }
        }
        println!("cluster: stopping");
        unpublish();
        drop(cp);
        println!("cluster: stopped");
        Ok(())
    })
}

/// What `cluster restore` asks of the process that holds the control plane.
#[derive(Serialize, Deserialize)]
enum ControlRequest {
    Restore { snapshot: PathBuf },
}

#[derive(Serialize, Deserialize)]
enum ControlReply {
    Restored { times: String },
    Failed { error: String },
}

/// Reads one request from `stream`, carries it out, answers.
async fn answer(cp: &ControlPlane, stream: tokio::net::UnixStream) {
    use tokio::io::{AsyncBufReadExt, AsyncWriteExt};
    let (read, mut write) = stream.into_split();
    let mut line = String::new();
    if let Err(e) = tokio::io::BufReader::new(read).read_line(&mut line).await {
        println!("cluster: control socket: {e}");
        return;
    }
    let reply = match serde_json::from_str::<ControlRequest>(&line) {
        Ok(ControlRequest::Restore { snapshot }) => {
            println!("cluster: restoring from {}", snapshot.display());
            match cp.restore(&snapshot).await {
                Ok(times) => {
                    println!("cluster: restored ({times})");
                    // The restarted components log to new files.
                    if let Err(e) = publish(&ClusterInfo::of(cp)) {
                        println!("cluster: publishing the restored cluster: {e}");
                    }
                    ControlReply::Restored {
                        times: times.to_string(),
                    }
                }
                Err(e) => {
                    println!("cluster: the restore failed: {e}");
                    ControlReply::Failed {
                        error: e.to_string(),
                    }
                }
            }
        }
        Err(e) => ControlReply::Failed {
            error: format!("not a request: {e}"),
        },
    };
    let mut text = serde_json::to_string(&reply).unwrap_or_default();
    text.push('\n');
    if let Err(e) = write.write_all(text.as_bytes()).await {
        println!("cluster: control socket: {e}");
    }
}

fn running_or_fail() -> Result<ClusterInfo> {
    running().context("no cluster is running here; start one with `cargo xtask cluster up`")
}

fn etcd_tools() -> Result<(PathBuf, PathBuf)> {
    let assets = Assets::from_env();
    Ok((
        assets.binary(Component::Etcdctl)?,
        assets.binary(Component::Etcdutl)?,
    ))
}

/// `cluster snapshot save FILE`.
pub fn snapshot_save(file: &Path) -> Result<()> {
    let info = running_or_fail()?;
    let etcd = info.etcd.context(
        "the running cluster doesn't publish its etcd (an older `cargo xtask cluster up`): \
         restart it",
    )?;
    let (etcdctl, etcdutl) = etcd_tools()?;
    println!(
        "cluster: {} --endpoints={} --cacert={} --cert={} --key={} snapshot save {}",
        etcdctl.display(),
        etcd.endpoint,
        etcd.ca_file.display(),
        etcd.cert_file.display(),
        etcd.key_file.display(),
        file.display()
    );
    let t0 = Instant::now();
    let rt = tokio::runtime::Runtime::new()?;
    let status = rt.block_on(async {
        operon_cluster::save_snapshot(&etcdctl, &etcd, file).await?;
        operon_cluster::snapshot_status(&etcdutl, file).await
    })?;
    println!(
        "cluster: snapshot saved to {} in {} ({status})",
        file.display(),
        elapsed(t0)
    );
    Ok(())
}

/// `cluster snapshot status FILE`.
pub fn snapshot_status(file: &Path) -> Result<()> {
    let (_, etcdutl) = etcd_tools()?;
    let rt = tokio::runtime::Runtime::new()?;
    let status = rt.block_on(operon_cluster::snapshot_status(&etcdutl, file))?;
    println!("cluster: {}: {status}", file.display());
    Ok(())
}

/// `cluster restore FILE`: asks the running `cluster up` to restore, and waits.
pub fn restore(file: &Path) -> Result<()> {
    let info = running_or_fail()?;
    let snapshot =
        std::fs::canonicalize(file).with_context(|| format!("the snapshot {}", file.display()))?;
    let mut stream =
        std::os::unix::net::UnixStream::connect(control_socket()).with_context(|| {
            format!(
                "the cluster (pid {}) takes no restore requests at {}: only a `cargo xtask cluster \
             up` of this version does",
                info.pid,
                control_socket().display()
            )
        })?;
    stream.set_read_timeout(Some(RESTORE_TIMEOUT))?;
    let mut request = serde_json::to_string(&ControlRequest::Restore {
        snapshot: snapshot.clone(),
    })?;
    request.push('\n');
    stream.write_all(request.as_bytes())?;
    println!(
        "cluster: destroying the control plane (pid {}) and restoring it from {}; the real node \
         keeps running",
        info.pid,
        snapshot.display()
    );
    let t0 = Instant::now();
    let mut line = String::new();
    BufReader::new(stream)
        .read_line(&mut line)
        .context("waiting for the restore")?;
    match serde_json::from_str::<ControlReply>(&line).with_context(|| {
        format!(
            "the cluster's answer {line:?} (see {})",
            log_path().display()
        )
    })? {
        ControlReply::Restored { times } => {
            println!("cluster: restored in {} ({times})", elapsed(t0));
            Ok(())
        }
        ControlReply::Failed { error } => bail!(
            "the restore failed: {error}\n(the cluster's log: {})",
            log_path().display()
        ),
    }
}

pub fn down() -> Result<()> {
    let info: Option<ClusterInfo> = std::fs::read(info_path())
        .ok()
        .and_then(|b| serde_json::from_slice(&b).ok());
    match info {
        Some(info) if alive(info.pid) => {
            kill(Pid::from_raw(info.pid as i32), Signal::SIGTERM)?;
            let t0 = Instant::now();
            let every = wait::Backoff::every(Duration::from_millis(100));
            let stopped = wait::blocking(
                "the cluster to stop",
                Duration::from_secs(60),
                every,
                || {
                    if alive(info.pid) {
                        Err("running".to_string())
                    } else {
                        Ok(())
                    }
                },
            );
            if stopped.is_err() {
                let _ = kill(Pid::from_raw(info.pid as i32), Signal::SIGKILL);
            }
            println!("cluster: stopped (pid {}) in {}", info.pid, elapsed(t0));
        }
        _ => println!("cluster: not running"),
    }
    // Whatever a crashed supervisor left behind.
    let killed = operon_cluster::process::kill_recorded(&data_dir());
    if killed > 0 {
        println!("cluster: killed {killed} leftover processes");
    }
    let cleaned = operon_cluster::node::host::reap_stale_slots();
    if cleaned > 0 {
        println!("cluster: cleaned {cleaned} real node(s) left by a run that is gone");
    }
    for path in [info_path(), kubeconfig_path(), control_socket()] {
        let _ = std::fs::remove_file(path);
    }
    let _ = std::fs::remove_dir_all(data_dir());
    Ok(())
}

pub fn status() -> Result<()> {
    let Some(info) = running() else {
        println!("cluster: not running (start it with `cargo xtask cluster up`)");
        return Ok(());
    };
    println!("cluster: running (pid {}) at {}", info.pid, info.server);
    println!("cluster: kubeconfig {}", info.kubeconfig.display());
    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        let kubeconfig = kube::config::Kubeconfig::read_from(&info.kubeconfig)?;
        let config = kube::Config::from_custom_kubeconfig(kubeconfig, &Default::default()).await?;
        let client = kube::Client::try_from(config)?;
        let version = client.apiserver_version().await?;
        println!("cluster: kube-apiserver {}", version.git_version);
        for node in Api::<Node>::all(client).list(&Default::default()).await? {
            let ready = node
                .status
                .and_then(|s| s.conditions)
                .unwrap_or_default()
                .iter()
                .any(|c| c.type_ == "Ready" && c.status == "True");
            println!(
                "cluster: node {} {}",
                node.metadata.name.unwrap_or_default(),
                if ready { "Ready" } else { "NotReady" }
            );
        }
        anyhow::Ok(())
    })?;
    Ok(())
}
