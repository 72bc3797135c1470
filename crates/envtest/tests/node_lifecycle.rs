//! Real nodes on one machine: two clusters side by side don't collide, crashed kubelet and
//! containerd are restarted by the supervisor, and stopping a node leaves the machine as it was
//! (links, routes, iptables, mounts, cgroups, kernel settings, processes).

use std::collections::BTreeSet;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use k8s_openapi::api::core::v1::Pod;
use kube::Client;
use kube::api::{Api, PostParams};
use nix::sys::signal::{Signal, kill};
use nix::unistd::Pid;
use operon_cluster::node::host;
use operon_cluster::{ControlPlane, wait};
use serde_json::json;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

/// What a node may change on the host, as text to compare.
#[derive(Debug, PartialEq, Eq)]
struct HostState {
    links: BTreeSet<String>,
    routes: BTreeSet<String>,
    iptables: BTreeSet<String>,
    mount_points: BTreeSet<String>,
    cgroups: BTreeSet<String>,
    fixed_paths: BTreeSet<String>,
}

fn lines(program: &str, args: &[&str]) -> BTreeSet<String> {
    let out = Command::new(program).args(args).output();
    let text = out
        .map(|o| String::from_utf8_lossy(&o.stdout).to_string())
        .unwrap_or_default();
    text.lines()
        // iptables-save's comments carry the time; the rest is the rules.
        .filter(|l| !l.starts_with('#'))
        .map(str::to_string)
        .collect()
}

impl HostState {
    fn read() -> HostState {
        let links = lines("ip", &["-o", "link", "show"])
            .into_iter()
            .filter_map(|l| {
                l.split(": ")
                    .nth(1)
                    .map(|n| n.split('@').next().unwrap_or(n).to_string())
            })
            .collect();
        let mount_points = std::fs::read_to_string("/proc/self/mountinfo")
            .unwrap_or_default()
            .lines()
            .filter_map(|l| l.split_whitespace().nth(4).map(str::to_string))
            .collect();
        let cgroups = std::fs::read_dir("/sys/fs/cgroup")
            .into_iter()
            .flatten()
            .flatten()
            .flat_map(|h| std::fs::read_dir(h.path()).into_iter().flatten().flatten())
            .filter(|e| e.path().is_dir())
            .map(|e| e.path().display().to_string())
            .collect();
        // kubelet's and containerd's fixed paths, which the node keeps in its mount namespace,
        // and where the registries keep their images.
        let fixed_paths = [
            "/var/lib/kubelet",
            "/var/log/pods",
            "/var/log/containers",
            "/var/lib/cni",
            "/run/containerd",
            "/run/netns",
            host::REGISTRY_ROOT,
        ]
        .into_iter()
        .filter(|p| Path::new(p).exists())
        .map(str::to_string)
        .collect();
        HostState {
            links,
            routes: lines("ip", &["route", "show"]),
            iptables: lines("iptables-save", &[]),
            mount_points,
            cgroups,
            fixed_paths,
        }
    }
}

async fn start() -> Result<ControlPlane> {
    Ok(ControlPlane::builder().real_node(true).start().await?)
}

async fn run_pod(client: &Client, name: &str) -> Result<Api<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), "default");
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod", "metadata": { "name": name },
        "spec": { "terminationGracePeriodSeconds": 1,
                  "containers": [{ "name": "c", "image": "busybox", "command": ["sleep", "3600"] }] },
    });
    pods.create(&PostParams::default(), &serde_json::from_value(pod)?)
        .await?;
    wait::until(
        &format!("Pod {name} running"),
        Duration::from_secs(60),
        || async {
            let pod = pods.get(name).await.map_err(|e| e.to_string())?;
            let running = pod
                .status
                .and_then(|s| s.container_statuses)
                .unwrap_or_default()
                .iter()
                .any(|c| c.state.as_ref().is_some_and(|s| s.running.is_some()));
            if running {
                Ok(())
            } else {
                Err("not running".into())
            }
        },
    )
    .await?;
    Ok(pods)
}

fn container_id(pod: &Pod) -> Option<String> {
    pod.status
        .as_ref()?
        .container_statuses
        .as_ref()?
        .first()?
        .container_id
        .clone()
}

fn pid_of(cp: &ControlPlane, component: &str) -> Result<u32> {
    let node = cp.node().ok_or("no real node")?;
    node.status()
        .into_iter()
        .find(|c| c.name == component)
        .and_then(|c| c.pid)
        .ok_or_else(|| format!("{component} is not running").into())
}

/// SIGKILLs a node daemon, as a crash would, and waits for the supervisor's restart.
async fn crash_and_wait_for_restart(cp: &ControlPlane, component: &str) -> Result {
    let before = pid_of(cp, component)?;
    kill(Pid::from_raw(before as i32), Signal::SIGKILL)?;
    wait::until(
        &format!("{component} restarted"),
        Duration::from_secs(30),
        || async {
            let node = cp.node().ok_or("no node")?;
            let status = node.status();
            let c = status.iter().find(|c| c.name == component).ok_or("gone")?;
            match c.pid {
                Some(pid) if pid != before && c.restarts >= 1 => Ok(()),
                _ => Err(format!("{c:?}")),
            }
        },
    )
    .await?;
    Ok(())
}

/// Every global setting kubelet's `setupKernelTunables` writes, listed here rather than taken
/// from the node's own list, so that one dropped from that list shows.
fn kernel_settings() -> Vec<(String, String)> {
    [
        "vm/overcommit_memory",
        "vm/panic_on_oom",
        "kernel/panic",
        "kernel/panic_on_oops",
        "kernel/keys/root_maxkeys",
        "kernel/keys/root_maxbytes",
    ]
    .iter()
    .map(|key| {
        let value = std::fs::read_to_string(Path::new("/proc/sys").join(key)).unwrap_or_default();
        (key.to_string(), value.trim().to_string())
    })
    .collect()
}

#[tokio::test]
async fn two_nodes_side_by_side_survive_crashes_and_leave_nothing_behind() -> Result {
    // Another real node on this machine (a developer's `cargo xtask cluster up`) keeps the
    // kernel settings kubelet wants; they can only be checked when none runs.
    let other_nodes = std::fs::read_dir(host::STATE_DIR)
        .into_iter()
        .flatten()
        .flatten()
        .any(|e| e.file_name().to_string_lossy().starts_with("node-"));
    // Settings already at kubelet's values (a machine where an earlier cluster left them) would
    // hide a missing restore: move the keyring limits away from kubelet's 1000000/25000000.
    // (The other settings' values differ from kubelet's on a stock kernel; panic_on_oom=1 is
    // not something to set on a shared machine.)
    let originals = kernel_settings();
    if !other_nodes {
        for (key, value) in [
            ("kernel/keys/root_maxkeys", "200000"),
            ("kernel/keys/root_maxbytes", "5000000"),
        ] {
            std::fs::write(Path::new("/proc/sys").join(key), value)?;
        }
    }
    let kernel_before = kernel_settings();
    let before = HostState::read();

    let (a, b) = tokio::try_join!(start(), start())?;
    let (node_a, node_b) = (a.node().ok_or("no node a")?, b.node().ok_or("no node b")?);
    assert_ne!(node_a.veth(), node_b.veth());
    assert_ne!(node_a.node_ip(), node_b.node_ip());
    assert_ne!(node_a.registry(), node_b.registry());
    assert_ne!(node_a.registry_dir(), node_b.registry_dir());
    assert_ne!(node_a.cgroup(), node_b.cgroup());
    let (client_a, client_b) = (a.client().await?, b.client().await?);
    let pods_a = run_pod(&client_a, "survivor").await?;
    run_pod(&client_b, "neighbour").await?;
    let survivor = container_id(&pods_a.get("survivor").await?);

    // Crashes: the supervisor restarts each daemon; the running container is untouched and
    // the node still starts new ones.
    crash_and_wait_for_restart(&a, "kubelet").await?;
    crash_and_wait_for_restart(&a, "containerd").await?;
    run_pod(&client_a, "after-crashes").await?;
    assert_eq!(container_id(&pods_a.get("survivor").await?), survivor);
    let supervisor_log = std::fs::read_to_string(a.dir().join("supervisor.log"))?;
    assert!(
        supervisor_log.contains("kubelet exited"),
        "{supervisor_log}"
    );
    assert!(
        supervisor_log.contains("containerd exited"),
        "{supervisor_log}"
    );
    // The other cluster's node was left alone.
    assert!(
        node_b.status().iter().all(|c| c.restarts == 0),
        "{:?}",
        node_b.status()
    );

    let cgroup_b = Path::new("/sys/fs/cgroup/memory").join(node_b.cgroup());
    let veth_b = node_b.veth().to_string();
    let registry_b = node_b.registry_dir().to_path_buf();
    assert!(cgroup_b.is_dir());
    assert!(registry_b.join("storage").is_dir());
    drop(b);
    assert!(!cgroup_b.exists(), "{} left behind", cgroup_b.display());
    assert!(!registry_b.exists(), "{} left behind", registry_b.display());
    assert!(!Path::new("/sys/class/net").join(&veth_b).exists());
    // Cluster a still works.
    run_pod(&client_a, "after-neighbour").await?;

    let cgroup_a = Path::new("/sys/fs/cgroup/memory").join(a.node().ok_or("no node")?.cgroup());
    drop(a);
    assert!(!cgroup_a.exists(), "{} left behind", cgroup_a.display());
    let after = HostState::read();
    assert_eq!(before, after, "the host changed");
    if !other_nodes {
        let after = kernel_settings();
        for (key, value) in &originals {
            if key.starts_with("kernel/keys/") {
                std::fs::write(Path::new("/proc/sys").join(key), value)?;
            }
        }
        assert_eq!(kernel_before, after, "kernel settings not restored");
        // Zombies hold nothing, but a machine whose PID 1 never reaps keeps them; only those
        // of earlier runs may remain.
        let leftovers: Vec<String> =
            lines("pgrep", &["-a", "-f", "containerd-shim|kubelet --config"])
                .into_iter()
                .filter(|l| !l.contains("<defunct>"))
                .collect();
        assert!(leftovers.is_empty(), "still running: {leftovers:?}");
    }
    // This process adopted the node's orphans and reaped what it killed.
    let me = std::process::id().to_string();
    let zombies: Vec<String> = std::fs::read_dir("/proc")?
        .flatten()
        .filter_map(|e| std::fs::read_to_string(e.path().join("stat")).ok())
        .filter(|stat| {
            let fields: Vec<&str> = stat
                .rsplit_once(") ")
                .map(|(_, rest)| rest.split_whitespace().collect())
                .unwrap_or_default();
            fields.first() == Some(&"Z") && fields.get(1) == Some(&me.as_str())
        })
        .collect();
    assert!(zombies.is_empty(), "unreaped children: {zombies:?}");
    Ok(())
}
