//! Disaster recovery: an etcd snapshot of a running control plane (`etcdctl snapshot save`),
//! and the control plane destroyed and restored from one (`etcdutl snapshot restore`) while the
//! real node keeps running, as its machine would when the control plane is lost.
//!
//! The restored etcd keeps its data directory's path and every flag. etcd reads
//! `--initial-cluster*` only to bootstrap an empty data directory; `etcdutl` writes the new
//! directory's membership from the same `--name`, `--initial-advertise-peer-urls` and
//! `--initial-cluster` (read from etcd's own flags) and a cluster token of its own, so the
//! restored member is a new one-member cluster that etcd starts from its WAL, and no
//! `--initial-cluster-state` is needed. The store's revision is bumped past anything a client
//! can have seen and marked compacted, as Kubernetes advises for restores: a watch that resumes
//! from a revision it saw before the restore gets `410 Gone` and lists again, instead of waiting
//! for revisions the restored store reaches with other writes.
//!
//! The PKI, the addresses and the ports stay those of the run directory: a snapshot restores
//! into the control plane it was taken from (or one started from the same run directory), whose
//! keys signed the ServiceAccount tokens and certificates the restored objects refer to.

use std::fmt;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::jiff::Timestamp;
use kube::api::Api;
use serde::Deserialize;

use crate::Error;
use crate::assets::{Assets, Component};
use crate::control_plane::{ControlPlane, EtcdClient, Health, Spec, insecure_healthz};

/// How far `etcdutl snapshot restore --bump-revision` moves the store's revision: past any
/// revision a client of the lost store can have seen (Kubernetes' documentation uses the same).
pub const REVISION_BUMP: u64 = 1_000_000_000;

/// How long `etcdctl` and `etcdutl` may take.
const TOOL_TIMEOUT: Duration = Duration::from_secs(120);

/// What `etcdutl snapshot status` says of a snapshot file.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct SnapshotStatus {
    /// The hash of the database's keys and values.
    pub hash: u64,
    /// The store's revision when the snapshot was taken.
    pub revision: i64,
    pub total_key: u64,
    /// Bytes.
    pub total_size: u64,
    /// The storage version (etcd's minor version that wrote it).
    pub version: String,
}

impl fmt::Display for SnapshotStatus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(
            f,
            "revision {}, {} keys, {:.1} MiB, hash {:08x}",
            self.revision,
            self.total_key,
            self.total_size as f64 / (1024.0 * 1024.0),
            self.hash
        )
    }
}

/// How long each step of [`ControlPlane::restore`] took, measured from its start.
#[derive(Debug, Clone)]
pub struct RestoreTimes {
    /// The snapshot checked and every control plane process killed.
    pub destroyed: Duration,
    /// etcd's data directory deleted and the snapshot restored into a new one.
    pub restored: Duration,
    pub etcd_ready: Duration,
    /// kube-apiserver ready and the admin authorized again.
    pub apiserver_ready: Duration,
    /// kube-controller-manager and kube-scheduler healthy, and the real node's Lease renewed
    /// since the restore (its kubelet reached the new control plane).
    pub nodes_ready: Duration,
    pub total: Duration,
    /// Whether there was a real node to wait for.
    pub real_node: bool,
    /// The snapshot restored.
    pub snapshot: SnapshotStatus,
}

impl fmt::Display for RestoreTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: Duration| format!("{:.2}s", d.as_secs_f64());
        write!(
            f,
            "destroyed {}, snapshot restored {}, etcd {}, kube-apiserver {}, {} {} (total {})",
            secs(self.destroyed),
            secs(self.restored),
            secs(self.etcd_ready),
            secs(self.apiserver_ready),
            if self.real_node {
                "controllers and the real node"
            } else {
                "controllers"
            },
            secs(self.nodes_ready),
            secs(self.total)
        )
    }
}

/// `etcdctl snapshot save` of the etcd `etcd` reaches, into `path`: a consistent copy of the
/// whole store (every Secret included: keep it as private as etcd's data; it is written with
/// mode 0600).
pub async fn save_snapshot(etcdctl: &Path, etcd: &EtcdClient, path: &Path) -> Result<(), Error> {
    let mut cmd = tokio::process::Command::new(etcdctl);
    cmd.arg(format!("--endpoints={}", etcd.endpoint))
        .arg(format!("--cacert={}", etcd.ca_file.display()))
        .arg(format!("--cert={}", etcd.cert_file.display()))
        .arg(format!("--key={}", etcd.key_file.display()))
        .args(["snapshot", "save"])
        .arg(path);
    run_tool("etcdctl snapshot save", cmd).await?;
    // etcdctl writes 0600 itself; a file that was there before keeps its mode otherwise.
    set_private(path)
}

/// `etcdutl snapshot status` of `path`: fails on a file that is not a snapshot.
pub async fn snapshot_status(etcdutl: &Path, path: &Path) -> Result<SnapshotStatus, Error> {
    let mut cmd = tokio::process::Command::new(etcdutl);
    cmd.args(["snapshot", "status", "--write-out=json"])
        .arg(path);
    let out = run_tool("etcdutl snapshot status", cmd).await?;
    serde_json::from_str(out.trim()).map_err(|e| Error::Command {
        what: "etcdutl snapshot status".into(),
        status: "unreadable output".into(),
        output: format!("{e}: {out}"),
    })
}

/// Runs a tool to completion (killed after [`TOOL_TIMEOUT`]); its stdout.
async fn run_tool(what: &str, mut cmd: tokio::process::Command) -> Result<String, Error> {
    cmd.stdin(std::process::Stdio::null()).kill_on_drop(true);
    tracing::info!(command = ?cmd.as_std(), "{what}");
    let out = tokio::time::timeout(TOOL_TIMEOUT, cmd.output())
        .await
        .map_err(|_| Error::Command {
            what: what.into(),
            status: format!("no answer within {TOOL_TIMEOUT:?}"),
            output: String::new(),
        })?
        .map_err(|source| Error::Io {
            context: format!("running {what}"),
            source,
        })?;
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    if !out.status.success() {
        return Err(Error::Command {
            what: what.into(),
            status: out.status.to_string(),
            output: format!("{stdout}{}", String::from_utf8_lossy(&out.stderr)),
        });
    }
    Ok(stdout)
}

fn set_private(path: &Path) -> Result<(), Error> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).map_err(|source| {
        Error::Io {
            context: format!("making {} private", path.display()),
            source,
        }
    })
}

/// The flags of etcd's command line that `etcdutl snapshot restore` must repeat.
#[derive(Debug, PartialEq, Eq)]
struct Member {
    name: String,
    data_dir: PathBuf,
    peer_urls: String,
    initial_cluster: String,
}

impl Member {
    fn from_args(args: &[String]) -> Result<Member, Error> {
        let flag = |name: &str| {
            let prefix = format!("--{name}=");
            args.iter()
                .find_map(|a| a.strip_prefix(&prefix))
                .map(str::to_owned)
                .ok_or_else(|| Error::Restore(format!("etcd runs without --{name}")))
        };
        Ok(Member {
            name: flag("name")?,
            data_dir: PathBuf::from(flag("data-dir")?),
            peer_urls: flag("initial-advertise-peer-urls")?,
            initial_cluster: flag("initial-cluster")?,
        })
    }

    /// `etcdutl snapshot restore`'s arguments: a new member and cluster in `data_dir` with this
    /// member's name and addresses, the revision bumped and compacted (see the module docs).
    fn restore_args(&self, snapshot: &Path, token: &str) -> Vec<String> {
        vec![
            "snapshot".into(),
            "restore".into(),
            snapshot.display().to_string(),
            format!("--data-dir={}", self.data_dir.display()),
            format!("--name={}", self.name),
            format!("--initial-advertise-peer-urls={}", self.peer_urls),
            format!("--initial-cluster={}", self.initial_cluster),
            format!("--initial-cluster-token={token}"),
            format!("--bump-revision={REVISION_BUMP}"),
            "--mark-compacted".into(),
        ]
    }
}

/// A `--secure-port=` of a command line.
fn secure_port(args: &[String]) -> Option<u16> {
    args.iter()
        .find_map(|a| a.strip_prefix("--secure-port="))
        .and_then(|p| p.parse().ok())
}

impl ControlPlane {
    /// etcd's binary and command line, as it was started.
    fn etcd_spec(&self) -> Result<(PathBuf, Vec<String>), Error> {
        let specs = self.specs.lock();
        let members: Vec<&Spec> = specs
            .iter()
            .filter(|s| matches!(s.health, Health::Etcd { .. }))
            .collect();
        match members.as_slice() {
            [spec] => Ok((spec.binary.clone(), spec.args.clone())),
            [] => Err(Error::UnknownComponent("etcd".into())),
            _ => Err(Error::Restore(
                "more than one etcd member: a restore restores one member only".into(),
            )),
        }
    }

    /// etcdctl and etcdutl, found beside the etcd binary first (the ones built with it).
    fn etcd_tools(&self) -> Result<(PathBuf, PathBuf), Error> {
        let (etcd, _) = self.etcd_spec()?;
        let assets = Assets::beside(&etcd);
        Ok((
            assets.binary(Component::Etcdctl)?,
            assets.binary(Component::Etcdutl)?,
        ))
    }

    /// Takes a snapshot of etcd into `path` while everything keeps running (`etcdctl snapshot
    /// save` with the API server's etcd client certificate), and returns what `etcdutl
    /// snapshot status` says of it.
    pub async fn snapshot(&self, path: &Path) -> Result<SnapshotStatus, Error> {
        let (etcdctl, etcdutl) = self.etcd_tools()?;
        save_snapshot(&etcdctl, self.etcd_client(), path).await?;
        snapshot_status(&etcdutl, path).await
    }

    /// Destroys the control plane and restores it from `snapshot`:
    ///
    /// 1. checks the snapshot (`etcdutl snapshot status`) before anything is touched;
    /// 2. kills etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok
    ///    (SIGKILL, as a lost machine would), while the real node, its kubelet and its
    ///    containers keep running;
    /// 3. deletes etcd's data directory and restores the snapshot into a new one at the same
    ///    path (`etcdutl snapshot restore`, see the module docs);
    /// 4. starts each killed component again with its original command line (same PKI,
    ///    addresses and ports) and waits until etcd is healthy, kube-apiserver ready,
    ///    kube-controller-manager and kube-scheduler healthy, and the real node's Lease renewed
    ///    after the restore. kwok is only started: it takes its Nodes back once the Leases the
    ///    lost kwok held expire (40 s after their last renewal), as any new kwok does.
    ///
    /// Everything written after the snapshot is lost; Pods the real node runs that the
    /// snapshot doesn't have are stopped by its kubelet, and those the snapshot has are kept.
    /// Operators and other clients should be stopped before and started after (or resume by
    /// listing again: their watches get `410 Gone`).
    pub async fn restore(&self, snapshot: &Path) -> Result<RestoreTimes, Error> {
        let t0 = Instant::now();
        let (etcd_binary, etcd_args) = self.etcd_spec()?;
        let member = Member::from_args(&etcd_args)?;
        let etcdutl = Assets::beside(&etcd_binary).binary(Component::Etcdutl)?;
        let status = snapshot_status(&etcdutl, snapshot).await?;
        tracing::info!(snapshot = %snapshot.display(), %status, "restoring the control plane");

        // Newest first; the node is not among them.
        let running: Vec<String> = self.pids().into_iter().map(|(name, _)| name).collect();
        for name in running.iter().rev() {
            self.stop_component(name, Duration::ZERO)?;
        }
        let destroyed = t0.elapsed();
        // Leases renewed after this were renewed through the restored control plane.
        let restored_at = Timestamp::now();

        match std::fs::remove_dir_all(&member.data_dir) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => {
                return Err(Error::Io {
                    context: format!("deleting {}", member.data_dir.display()),
                    source: e,
                });
            }
            _ => {}
        }
        let token = format!("operon-restored-{}", restored_at.as_second());
        let mut cmd = tokio::process::Command::new(&etcdutl);
        cmd.args(member.restore_args(snapshot, &token));
        run_tool("etcdutl snapshot restore", cmd).await?;
        let restored = t0.elapsed();

        let (mut etcd_ready, mut apiserver_ready) = (restored, restored);
        let specs: Vec<(String, Vec<String>)> = self
            .specs
            .lock()
            .iter()
            .filter(|s| running.contains(&s.name))
            .map(|s| (s.name.clone(), s.args.clone()))
            .collect();
        for (name, _) in &specs {
            self.start_component(name).await?;
            match name.as_str() {
                "etcd" => etcd_ready = t0.elapsed(),
                "kube-apiserver" => apiserver_ready = t0.elapsed(),
                _ => {}
            }
        }
        for (name, args) in &specs {
            if let ("kube-controller-manager" | "kube-scheduler", Some(port)) =
                (name.as_str(), secure_port(args))
            {
                self.wait_until(
                    &format!("{name} /healthz after the restore"),
                    Instant::now(),
                    || insecure_healthz(port),
                )
                .await?;
            }
        }
        self.wait_node_lease_renewed(restored_at).await?;
        let times = RestoreTimes {
            destroyed,
            restored,
            etcd_ready,
            apiserver_ready,
            nodes_ready: t0.elapsed(),
            total: t0.elapsed(),
            real_node: self.node().is_some(),
            snapshot: status,
        };
        tracing::info!(%times, "control plane restored");
        Ok(times)
    }

    /// Waits until the real node's Lease was renewed after `since`: its kubelet, which kept
    /// running, reached the restored control plane.
    async fn wait_node_lease_renewed(&self, since: Timestamp) -> Result<(), Error> {
        let Some(name) = self.node().map(|node| node.name().to_owned()) else {
            return Ok(());
        };
        let leases: Api<Lease> = Api::namespaced(self.client().await?, "kube-node-lease");
        self.wait_until(
            &format!("the Lease of Node {name} renewed after the restore"),
            Instant::now(),
            || {
                let (leases, name) = (leases.clone(), name.clone());
                async move {
                    leases.get_opt(&name).await.is_ok_and(|lease| {
                        lease
                            .and_then(|l| l.spec)
                            .and_then(|s| s.renew_time)
                            .is_some_and(|t| t.0 > since)
                    })
                }
            },
        )
        .await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_restore_repeats_etcds_own_member_flags() -> Result<(), Error> {
        let args: Vec<String> = [
            "--name=envtest",
            "--data-dir=/run/x/etcd",
            "--listen-peer-urls=https://127.0.0.1:2380",
            "--initial-advertise-peer-urls=https://127.0.0.1:2380",
            "--initial-cluster=envtest=https://127.0.0.1:2380",
            "--unsafe-no-fsync=true",
        ]
        .map(String::from)
        .to_vec();
        let member = Member::from_args(&args)?;
        let restore = member.restore_args(Path::new("/tmp/s.db"), "t");
        assert_eq!(
            restore,
            [
                "snapshot",
                "restore",
                "/tmp/s.db",
                "--data-dir=/run/x/etcd",
                "--name=envtest",
                "--initial-advertise-peer-urls=https://127.0.0.1:2380",
                "--initial-cluster=envtest=https://127.0.0.1:2380",
                "--initial-cluster-token=t",
                "--bump-revision=1000000000",
                "--mark-compacted",
            ]
        );
        let without_name = &args[1..];
        assert!(
            Member::from_args(without_name)
                .is_err_and(|e| e.to_string().contains("without --name"))
        );
        Ok(())
    }

    #[test]
    fn snapshot_status_reads_etcduts_json() -> Result<(), serde_json::Error> {
        let status: SnapshotStatus = serde_json::from_str(
            r#"{"hash":3735928559,"revision":1234,"totalKey":567,"totalSize":2097152,"version":"3.6.0"}"#,
        )?;
        assert_eq!(status.revision, 1234);
        assert_eq!(status.total_key, 567);
        assert_eq!(
            status.to_string(),
            "revision 1234, 567 keys, 2.0 MiB, hash deadbeef"
        );
        Ok(())
    }

    #[test]
    fn secure_ports_are_read_from_flags() {
        let args = ["--bind-address=127.0.0.1", "--secure-port=10259"].map(String::from);
        assert_eq!(secure_port(&args), Some(10259));
        assert_eq!(secure_port(&args[..1]), None);
    }
}
