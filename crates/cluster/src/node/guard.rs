//! Who may connect to what the host serves on the node's link: the node's stand-in for
//! NetworkPolicy.
//!
//! The bridge CNI enforces no NetworkPolicy, and what needs guarding here doesn't run in Pods
//! anyway: the registry and moto listen on the host's address on the node's link, which Pods
//! reach through the node's network namespace (Pod → `cni0` → the node's routing → veth → host).
//! On that way the node masquerades Pods' connections to its own address, so the host can't
//! tell a Pod from containerd; in the node's namespace, before the masquerade, it can. So the
//! guard is a chain of iptables rules there, [`GUARD_CHAIN`], jumped to first from `FORWARD`:
//!
//! - Pods never reach the registry (containerd pulls from the node's own address, through
//!   `OUTPUT`, not `FORWARD`): the node writes that rule before anything runs on the node;
//! - a port guarded with [`PortGuard`] is reachable only from the Pods a label selector picks in
//!   one namespace, kept up to date from a watch on them (moto for credentials-operator).
//!
//! The chain's position matters: kube-proxy accepts, in `KUBE-FORWARD`, connections it marked
//! for masquerading — which includes every connection to a NodePort, whatever its endpoints —
//! so a guard after kube-proxy's jumps could be walked around through a NodePort Service
//! pointing at the host. kube-proxy *prepends* its jumps once, when they are missing (its
//! first sync), and never moves an existing one; the node moves the guard's jump back to
//! the top after that first sync. Rules are matched after kube-proxy's DNAT, so a Service
//! pointing at the host is caught by the translated destination.
//!
//! Connections are refused with an ICMP port-unreachable, so that clients fail at once: a TCP
//! reset works only for connections to the host's address itself (the node doesn't translate
//! a reset back for a connection it DNATed to a Service, so clients of the Service time out).
//!
//! The rules use the `iptables` that kube-proxy uses, the first on `PATH` (Debian's
//! alternatives: `iptables-nft`), so both sets live in the same backend. They go with the
//! node's network namespace when the node stops: nothing is written on the host.
//!
//! What the guard doesn't cover: hostNetwork Pods are the node itself (their connections come
//! from the node's address through `OUTPUT`, like containerd's), as in any cluster; and a Pod
//! with `NET_RAW` can spoof a neighbour's address on the bridge, as it can against any
//! address-based NetworkPolicy (the `restricted` Pod Security level drops that capability).

use std::collections::{BTreeMap, BTreeSet};
use std::fs;
use std::io::Write;
use std::net::Ipv4Addr;
use std::os::fd::AsRawFd;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::thread::JoinHandle;
use std::time::Duration;

use futures::StreamExt;
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::runtime::{WatchStreamExt, watcher};

use crate::Error;

/// The node's guard chain, the first rule of `FORWARD` in the node's network namespace.
pub const GUARD_CHAIN: &str = "OPERON-NODE-GUARD";
/// The jump to [`GUARD_CHAIN`], as `iptables -S` prints it.
const JUMP: &str = "-j OPERON-NODE-GUARD";
/// How long [`PortGuard::start`] waits for the first list of the allowed Pods.
const FIRST_SYNC_TIMEOUT: Duration = Duration::from_secs(30);
/// Delay before a failed `iptables-restore` is tried again.
const RETRY: Duration = Duration::from_secs(2);

/// Where a node's Pods meet the host: the node's network namespace (found through a process in
/// it, the node's namespace holder), the host's address on the node's link and the node's Pod
/// range. [`Node::network`](super::Node::network) gives a running node's; `cargo xtask cluster
/// up` publishes it for other processes.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct NodeNetwork {
    pub namespace_pid: u32,
    pub host_ip: Ipv4Addr,
    pub pod_cidr: String,
}

/// The Pods a port stays open to: those `selector` (a label selector, `a=b,c=d`) picks in
/// `namespace`, as a NetworkPolicy's `podSelector` with a `namespaceSelector` would.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AllowedPods {
    pub namespace: String,
    pub selector: String,
}

/// An open handle on the node's network namespace; commands given its path run in the very
/// namespace it was opened on, even if the pid is reused meanwhile.
struct Netns {
    file: fs::File,
    id: (u64, u64),
}

fn ns_id(meta: &fs::Metadata) -> (u64, u64) {
    use std::os::unix::fs::MetadataExt;
    (meta.dev(), meta.ino())
}

impl NodeNetwork {
    /// Opens the node's network namespace, refusing the host's own (a reused pid, or a pid that
    /// isn't in a node) and, when `expected` is given, any other than that one.
    fn open(&self, expected: Option<(u64, u64)>) -> Result<Netns, Error> {
        let path = format!("/proc/{}/ns/net", self.namespace_pid);
        let file = fs::File::open(&path).map_err(|source| Error::Io {
            context: format!("opening the node's network namespace {path}"),
            source,
        })?;
        let meta = file.metadata().map_err(|source| Error::Io {
            context: format!("reading {path}"),
            source,
        })?;
        let id = ns_id(&meta);
        let own = fs::metadata("/proc/self/ns/net").map(|m| ns_id(&m)).ok();
        if Some(id) == own {
            return Err(Error::Node(format!(
                "process {} is in this machine's own network namespace, not a node's",
                self.namespace_pid
            )));
        }
        if expected.is_some_and(|e| e != id) {
            return Err(Error::Node(format!(
                "the node's network namespace is gone (process {} is in another one)",
                self.namespace_pid
            )));
        }
        Ok(Netns { file, id })
    }

    /// Runs `command args…` in the namespace `ns`, with `stdin`; its stdout.
    fn run(
        &self,
        ns: &Netns,
        command: &str,
        args: &[&str],
        stdin: Option<&str>,
    ) -> Result<String, Error> {
        let binary = super::find_command(command).unwrap_or_else(|| PathBuf::from(command));
        // nsenter opens our descriptor of the namespace, not the holder's (whose pid could be
        // reused by now).
        let netns = format!(
            "--net=/proc/{}/fd/{}",
            std::process::id(),
            ns.file.as_raw_fd()
        );
        let what = format!("{command} {}", args.join(" "));
        let mut child = Command::new("nsenter")
            .arg(netns)
            .arg("--")
            .arg(&binary)
            .args(args)
            .stdin(if stdin.is_some() {
                Stdio::piped()
            } else {
                Stdio::null()
            })
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|source| Error::Io {
                context: format!("running {what} in the node"),
                source,
            })?;
        if let (Some(text), Some(mut pipe)) = (stdin, child.stdin.take()) {
            pipe.write_all(text.as_bytes())
                .map_err(|source| Error::Io {
                    context: format!("writing to {what}"),
                    source,
                })?;
        }
        let out = child.wait_with_output().map_err(|source| Error::Io {
            context: format!("running {what} in the node"),
            source,
        })?;
        if !out.status.success() {
            return Err(Error::Node(format!(
                "{what} failed ({}): {}{}{}",
                out.status,
                String::from_utf8_lossy(&out.stderr),
                String::from_utf8_lossy(&out.stdout),
                stdin.map(|s| format!("\ninput:\n{s}")).unwrap_or_default()
            )));
        }
        Ok(String::from_utf8_lossy(&out.stdout).into_owned())
    }

    /// `iptables-restore --noflush` of `rules` (one transaction) in the namespace `ns`.
    fn restore(&self, ns: &Netns, rules: &str) -> Result<(), Error> {
        self.run(
            ns,
            "iptables-restore",
            &["--wait", "10", "--noflush"],
            Some(rules),
        )
        .map(drop)
    }

    /// `iptables -S <chain>` in the filter table: the chain's rules.
    fn list(&self, ns: &Netns, chain: &str) -> Result<String, Error> {
        self.run(ns, "iptables", &["--wait", "10", "-S", chain], None)
    }

    /// The rules of `chain` (filter table) in the node, as `iptables -S` prints them. For tests
    /// and diagnostics.
    pub fn rules(&self, chain: &str) -> Result<String, Error> {
        let ns = self.open(None)?;
        self.list(&ns, chain)
    }
}

/// The guard chain with the registry rule, jumped to first from `FORWARD`. Called while the
/// node is set up, before anything runs in it.
pub(crate) fn install(net: &NodeNetwork, registry_port: u16) -> Result<(), Error> {
    let ns = net.open(None)?;
    net.restore(&ns, &base_rules(net, registry_port))
}

fn base_rules(net: &NodeNetwork, registry_port: u16) -> String {
    format!(
        "*filter\n\
         :{GUARD_CHAIN} - [0:0]\n\
         -A {GUARD_CHAIN} -s {cidr} -d {host}/32 -p tcp -m tcp --dport {registry_port} \
         -m comment --comment \"Pods never reach the registry\" \
         -j REJECT --reject-with icmp-port-unreachable\n\
         -I FORWARD 1 {JUMP}\n\
         COMMIT\n",
        cidr = net.pod_cidr,
        host = net.host_ip,
    )
}

/// Whether kube-proxy has made its first sync in the node (its jump to `KUBE-FORWARD` exists).
pub(crate) fn kube_proxy_synced(net: &NodeNetwork) -> bool {
    net.open(None)
        .and_then(|ns| net.list(&ns, "FORWARD"))
        .is_ok_and(|rules| rules.contains("-j KUBE-FORWARD"))
}

/// Makes the jump to [`GUARD_CHAIN`] the first rule of `FORWARD` again (kube-proxy's first sync
/// prepends its own jumps). One transaction: the guard is never missing meanwhile.
pub(crate) fn keep_first(net: &NodeNetwork) -> Result<(), Error> {
    let ns = net.open(None)?;
    let rules = net.list(&ns, "FORWARD")?;
    let first = rules.lines().find(|l| l.starts_with("-A FORWARD"));
    if first == Some(&format!("-A FORWARD {JUMP}")[..]) {
        return Ok(());
    }
    let delete = if rules.lines().any(|l| l == format!("-A FORWARD {JUMP}")) {
        format!("-D FORWARD {JUMP}\n")
    } else {
        String::new()
    };
    net.restore(
        &ns,
        &format!("*filter\n{delete}-I FORWARD 1 {JUMP}\nCOMMIT\n"),
    )
}

/// The chain of a guarded port.
pub fn port_chain(port: u16) -> String {
    format!("OPERON-GUARD-{port}")
}

/// The jump from [`GUARD_CHAIN`] to a port's chain.
fn port_jump(net: &NodeNetwork, port: u16) -> String {
    format!(
        "-d {}/32 -p tcp -m tcp --dport {port} -j {}",
        net.host_ip,
        port_chain(port)
    )
}

/// The whole port chain: back to the caller for each allowed address, refused for every other
/// Pod. Declaring the chain empties it first, in the same transaction.
fn port_rules(net: &NodeNetwork, port: u16, allowed: &BTreeSet<Ipv4Addr>) -> String {
    let chain = port_chain(port);
    let mut rules = format!("*filter\n:{chain} - [0:0]\n");
    for ip in allowed {
        rules.push_str(&format!("-A {chain} -s {ip}/32 -j RETURN\n"));
    }
    rules.push_str(&format!(
        "-A {chain} -s {} -m comment --comment \"only the allowed Pods\" \
         -j REJECT --reject-with icmp-port-unreachable\n",
        net.pod_cidr
    ));
    rules.push_str("COMMIT\n");
    rules
}

/// The addresses a Pod holds for the guard: none once it is being deleted (it must not keep
/// access while its address may be handed to another Pod) or has ended (its address is free).
fn pod_ips(pod: &Pod) -> Vec<Ipv4Addr> {
    if pod.metadata.deletion_timestamp.is_some() {
        return Vec::new();
    }
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    if matches!(status.phase.as_deref(), Some("Succeeded" | "Failed")) {
        return Vec::new();
    }
    let mut ips: Vec<Ipv4Addr> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.as_str())
        .chain(status.pod_ip.as_deref())
        .filter_map(|ip| ip.parse().ok())
        .collect();
    ips.sort_unstable();
    ips.dedup();
    ips
}

fn pod_key(pod: &Pod) -> String {
    pod.metadata
        .uid
        .clone()
        .or_else(|| pod.metadata.name.clone())
        .unwrap_or_default()
}

/// The allowed Pods' addresses, by Pod, as the watch reports them.
#[derive(Default)]
struct Allowed {
    pods: BTreeMap<String, Vec<Ipv4Addr>>,
    /// Pods of a relist in progress.
    relist: Option<BTreeMap<String, Vec<Ipv4Addr>>>,
    /// Whether a complete list has been seen.
    listed: bool,
}

impl Allowed {
    /// Applies one watch event; whether the set of addresses may have changed.
    fn apply(&mut self, event: watcher::Event<Pod>) -> bool {
        match event {
            watcher::Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            watcher::Event::InitApply(pod) => {
                if let Some(relist) = &mut self.relist {
                    relist.insert(pod_key(&pod), pod_ips(&pod));
                }
                false
            }
            watcher::Event::InitDone => {
                self.pods = self.relist.take().unwrap_or_default();
                self.listed = true;
                true
            }
            watcher::Event::Apply(pod) => {
                let ips = pod_ips(&pod);
                self.pods.insert(pod_key(&pod), ips.clone()) != Some(ips)
            }
            watcher::Event::Delete(pod) => self.pods.remove(&pod_key(&pod)).is_some(),
        }
    }

    fn ips(&self) -> BTreeSet<Ipv4Addr> {
        self.pods.values().flatten().copied().collect()
    }
}

/// A port on the host's address of the node's link that only some Pods may reach: every other
/// Pod's connection is refused. Made with [`PortGuard::start`] (or
/// [`Node::guard_port`](super::Node::guard_port)); dropping it removes the rules and opens the
/// port to Pods again — hold it as long as whatever listens there.
///
/// The allowed addresses follow a watch on the allowed Pods, on a thread of its own (so the
/// guard doesn't depend on the runtime it was started from). There are two small windows:
/// - a new allowed Pod is refused until the watch has reported its address (its first
///   connections may fail; clients retry);
/// - a deleted Pod loses access as soon as it is marked for deletion, before its sandbox is torn
///   down and its address released, so a new Pod can't inherit the access with the address
///   — unless the watch lags behind the kubelet by more than the Pod's grace period (a Pod
///   deleted with `--grace-period=0 --force` is gone from the API at once, and the watch
///   reports that instead). The bridge's address allocator hands out addresses in turn,
///   which makes a quick reuse unlikely besides.
///
/// If the watch fails it is retried with backoff, keeping the last rules; if a rule update fails
/// it is retried until it succeeds. Until the first list, no Pod is allowed.
pub struct PortGuard {
    net: NodeNetwork,
    port: u16,
    netns: (u64, u64),
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<JoinHandle<()>>,
    allowed: std::sync::Arc<parking_lot::Mutex<BTreeSet<Ipv4Addr>>>,
}

impl PortGuard {
    /// Refuses every Pod's connection to `net.host_ip:port`, then keeps it open to the `allowed`
    /// Pods; returns once their current addresses are in place. `config` is an admin's client
    /// configuration (the guard lists and watches Pods).
    pub async fn start(
        config: kube::Config,
        net: NodeNetwork,
        port: u16,
        allowed: AllowedPods,
    ) -> Result<PortGuard, Error> {
        let ns = net.open(None)?;
        let chain = port_chain(port);
        let jump = port_jump(&net, port);
        // The chain, refusing every Pod, before the jump to it.
        let mut rules = port_rules(&net, port, &BTreeSet::new());
        let existing = net.list(&ns, GUARD_CHAIN)?;
        if !existing
            .lines()
            .any(|l| l == format!("-A {GUARD_CHAIN} {jump}"))
        {
            rules = rules.replace("COMMIT\n", &format!("-A {GUARD_CHAIN} {jump}\nCOMMIT\n"));
        }
        net.restore(&ns, &rules)?;
        let netns = ns.id;
        drop(ns);

        let (stop, stopped) = tokio::sync::oneshot::channel();
        let (ready, first_sync) = tokio::sync::oneshot::channel();
        let current = std::sync::Arc::new(parking_lot::Mutex::new(BTreeSet::new()));
        let thread = {
            let (net, current) = (net.clone(), current.clone());
            std::thread::Builder::new()
                .name(format!("operon-guard-{port}"))
                .spawn(move || {
                    match tokio::runtime::Builder::new_current_thread()
                        .enable_all()
                        .build()
                    {
                        Ok(rt) => rt.block_on(maintain(
                            config, net, netns, port, allowed, current, ready, stopped,
                        )),
                        Err(e) => {
                            let _ = ready.send(Err(Error::Io {
                                context: "starting the guard's runtime".into(),
                                source: e,
                            }));
                        }
                    }
                })
                .map_err(|source| Error::Io {
                    context: format!("starting the guard of port {port}"),
                    source,
                })?
        };
        let guard = PortGuard {
            net,
            port,
            netns,
            stop: Some(stop),
            thread: Some(thread),
            allowed: current,
        };
        match tokio::time::timeout(FIRST_SYNC_TIMEOUT, first_sync).await {
            Ok(Ok(Ok(()))) => Ok(guard),
            Ok(Ok(Err(e))) => Err(e),
            Ok(Err(_)) => Err(Error::Node(format!(
                "the guard of {chain} stopped before its first sync"
            ))),
            Err(_) => Err(Error::Node(format!(
                "the guard of {chain} saw no list of the allowed Pods in {FIRST_SYNC_TIMEOUT:?}"
            ))),
        }
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The addresses allowed in the rules now.
    pub fn allowed_ips(&self) -> BTreeSet<Ipv4Addr> {
        self.allowed.lock().clone()
    }

    /// Removes the port's rules (nothing to do when the node is gone: they went with it).
    fn remove(&self) -> Result<(), Error> {
        let Ok(ns) = self.net.open(Some(self.netns)) else {
            return Ok(());
        };
        let chain = port_chain(self.port);
        let jump = format!("-A {GUARD_CHAIN} {}", port_jump(&self.net, self.port));
        let mut rules = String::from("*filter\n");
        if self.net.list(&ns, GUARD_CHAIN)?.lines().any(|l| l == jump) {
            rules.push_str(&format!("-D {}\n", &jump[3..]));
        }
        if self.net.list(&ns, &chain).is_ok() {
            rules.push_str(&format!("-F {chain}\n-X {chain}\n"));
        }
        rules.push_str("COMMIT\n");
        self.net.restore(&ns, &rules)
    }
}

impl Drop for PortGuard {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        // The thread finishes a rule update in progress first, so none lands after the removal.
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        if let Err(e) = self.remove() {
            tracing::warn!(port = self.port, "removing the port's guard: {e}");
        }
    }
}

/// The guard's thread: watches the allowed Pods and rewrites the port's chain when their
/// addresses change, until `stopped`.
#[allow(clippy::too_many_arguments)]
async fn maintain(
    config: kube::Config,
    net: NodeNetwork,
    netns: (u64, u64),
    port: u16,
    allowed: AllowedPods,
    current: std::sync::Arc<parking_lot::Mutex<BTreeSet<Ipv4Addr>>>,
    ready: tokio::sync::oneshot::Sender<Result<(), Error>>,
    mut stopped: tokio::sync::oneshot::Receiver<()>,
) {
    let mut ready = Some(ready);
    let client = match kube::Client::try_from(config) {
        Ok(client) => client,
        Err(e) => {
            if let Some(ready) = ready.take() {
                let _ = ready.send(Err(e.into()));
            }
            return;
        }
    };
    let pods: Api<Pod> = Api::namespaced(client, &allowed.namespace);
    let mut events = watcher(pods, watcher::Config::default().labels(&allowed.selector))
        .default_backoff()
        .boxed();
    let mut state = Allowed::default();
    // Whether the rules lag behind `state`.
    let mut dirty = false;
    loop {
        if dirty && state.listed {
            let ips = state.ips();
            let synced = net
                .open(Some(netns))
                .and_then(|ns| net.restore(&ns, &port_rules(&net, port, &ips)));
            match synced {
                Ok(()) => {
                    dirty = false;
                    tracing::debug!(port, ?ips, "guard: allowed Pods updated");
                    *current.lock() = ips;
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Ok(()));
                    }
                }
                Err(e) => {
                    tracing::warn!(port, "guard: updating the allowed Pods: {e}");
                    if let Some(ready) = ready.take() {
                        let _ = ready.send(Err(e));
                        return;
                    }
                }
            }
        }
        tokio::select! {
            _ = &mut stopped => return,
            event = events.next() => match event {
                Some(Ok(event)) => dirty |= state.apply(event),
                Some(Err(e)) => tracing::warn!(port, "guard: watching the allowed Pods: {e}"),
                None => return,
            },
            () = tokio::time::sleep(RETRY), if dirty => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::{PodIP, PodStatus};
    use kube::api::ObjectMeta;

    fn net() -> NodeNetwork {
        NodeNetwork {
            namespace_pid: 1,
            host_ip: Ipv4Addr::new(10, 200, 3, 1),
            pod_cidr: "10.244.3.0/24".into(),
        }
    }

    fn pod(uid: &str, ip: Option<&str>, phase: &str) -> Pod {
        Pod {
            metadata: ObjectMeta {
                uid: Some(uid.into()),
                name: Some(uid.into()),
                ..Default::default()
            },
            status: Some(PodStatus {
                phase: Some(phase.into()),
                pod_ip: ip.map(str::to_string),
                pod_ips: ip.map(|ip| vec![PodIP { ip: ip.into() }]),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    #[test]
    fn the_registry_rule_refuses_pods_and_jumps_first() {
        let rules = base_rules(&net(), 5000);
        assert!(rules.contains(
            "-A OPERON-NODE-GUARD -s 10.244.3.0/24 -d 10.200.3.1/32 -p tcp -m tcp --dport 5000"
        ));
        assert!(rules.contains("-j REJECT --reject-with icmp-port-unreachable"));
        assert!(rules.contains("-I FORWARD 1 -j OPERON-NODE-GUARD\n"));
    }

    #[test]
    fn a_port_chain_returns_for_allowed_pods_and_refuses_the_rest() {
        let allowed = BTreeSet::from([Ipv4Addr::new(10, 244, 3, 7), Ipv4Addr::new(10, 244, 3, 9)]);
        let rules = port_rules(&net(), 41000, &allowed);
        let lines: Vec<&str> = rules.lines().collect();
        assert_eq!(lines[1], ":OPERON-GUARD-41000 - [0:0]");
        assert_eq!(lines[2], "-A OPERON-GUARD-41000 -s 10.244.3.7/32 -j RETURN");
        assert_eq!(lines[3], "-A OPERON-GUARD-41000 -s 10.244.3.9/32 -j RETURN");
        assert!(lines[4].starts_with("-A OPERON-GUARD-41000 -s 10.244.3.0/24"));
        assert!(lines[4].ends_with("-j REJECT --reject-with icmp-port-unreachable"));
        // Nobody allowed: only the refusal.
        let none = port_rules(&net(), 41000, &BTreeSet::new());
        assert!(!none.contains("RETURN"), "{none}");
        assert!(none.contains("REJECT"), "{none}");
    }

    #[test]
    fn addresses_follow_the_pods_and_leave_with_them() {
        let mut allowed = Allowed::default();
        assert!(!allowed.apply(watcher::Event::Init));
        assert!(!allowed.apply(watcher::Event::InitApply(pod(
            "a",
            Some("10.244.3.7"),
            "Running"
        ))));
        assert!(
            allowed.ips().is_empty(),
            "nothing before the list is complete"
        );
        assert!(allowed.apply(watcher::Event::InitDone));
        assert_eq!(
            allowed.ips(),
            BTreeSet::from([Ipv4Addr::new(10, 244, 3, 7)])
        );

        // A new Pod, first without an address.
        assert!(allowed.apply(watcher::Event::Apply(pod("b", None, "Pending"))));
        assert_eq!(allowed.ips().len(), 1);
        assert!(allowed.apply(watcher::Event::Apply(pod(
            "b",
            Some("10.244.3.9"),
            "Running"
        ))));
        assert_eq!(allowed.ips().len(), 2);
        // An unchanged update changes nothing.
        assert!(!allowed.apply(watcher::Event::Apply(pod(
            "b",
            Some("10.244.3.9"),
            "Running"
        ))));

        // Marked for deletion: out at once, before its address can be reused.
        let mut leaving = pod("a", Some("10.244.3.7"), "Running");
        leaving.metadata.deletion_timestamp =
            Some(k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(
                k8s_openapi::jiff::Timestamp::UNIX_EPOCH,
            ));
        assert!(allowed.apply(watcher::Event::Apply(leaving)));
        assert_eq!(
            allowed.ips(),
            BTreeSet::from([Ipv4Addr::new(10, 244, 3, 9)])
        );
        // Ended: its address is free.
        assert!(allowed.apply(watcher::Event::Apply(pod(
            "b",
            Some("10.244.3.9"),
            "Failed"
        ))));
        assert!(allowed.ips().is_empty());
        assert!(allowed.apply(watcher::Event::Delete(pod("b", None, "Failed"))));

        // A relist replaces everything.
        allowed.apply(watcher::Event::Apply(pod(
            "c",
            Some("10.244.3.11"),
            "Running",
        )));
        allowed.apply(watcher::Event::Init);
        allowed.apply(watcher::Event::InitApply(pod(
            "d",
            Some("10.244.3.12"),
            "Running",
        )));
        assert!(allowed.apply(watcher::Event::InitDone));
        assert_eq!(
            allowed.ips(),
            BTreeSet::from([Ipv4Addr::new(10, 244, 3, 12)])
        );
    }
}
