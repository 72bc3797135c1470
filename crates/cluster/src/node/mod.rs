//! A real worker node: containerd with runc, CNI bridge networking, kubelet, kube-proxy, a
//! local OCI registry and CoreDNS, beside the control plane (and its kwok Nodes).
//!
//! The node lives in namespaces of its own (see [`host`]): kubelet, containerd and kube-proxy
//! see their own `/var/lib`, `/var/log` and `/run`, their own network with the Pod bridge and
//! iptables rules, and run in their own cgroups. Stopping the node kills everything it started
//! and removes what it changed; several clusters with real nodes run side by side on one
//! machine, each in its own slot.
//!
//! Security is a real cluster's: the API server reaches kubelet with a client certificate and
//! checks kubelet's serving certificate; kubelet authenticates callers by certificate or token
//! and asks the API server whether they may (no anonymous access); kubelet itself is
//! `system:node:operon-node`, limited by the Node authorizer and NodeRestriction.
//!
//! What the host serves on the node's link is guarded in the node's network namespace, the
//! node's stand-in for NetworkPolicy (see [`guard`]): Pods never reach the registry (it runs as
//! an unprivileged user, see [`host::REGISTRY_ROOT`]), and a [`guard::PortGuard`] keeps a port,
//! such as moto's, open only to the Pods that need it.

pub mod addons;
pub mod config;
pub mod guard;
pub mod host;
pub mod images;

use std::fs;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Node as NodeObject;
use kube::Client;
use kube::api::Api;
use parking_lot::Mutex;

use crate::Error;
use crate::process::{Process, RunAs, RunDir};
use crate::wait;
use guard::{AllowedPods, NodeNetwork, PortGuard};
use host::{Cgroups, Namespaces, NodeDirs, Slot};

pub use config::{CLUSTER_DOMAIN, DNS_SERVICE_IP, NODE_NAME};
pub use images::SystemImage;

/// Label on the real node (kubelet sets it; NodeRestriction allows labels outside
/// `kubernetes.io`).
pub const REAL_NODE_LABEL: &str = "operon.dev/real-node";
/// How often a component may crash in [`RESTART_WINDOW`] before the supervisor gives up on it.
const MAX_RESTARTS: usize = 5;
const RESTART_WINDOW: Duration = Duration::from_secs(60);

/// Commands the node runs, which must be installed (Debian packages in parentheses).
const HOST_COMMANDS: &[(&str, &str)] = &[
    ("containerd", "containerd"),
    ("runc", "runc"),
    ("docker-registry", "docker-registry"),
    ("iptables-restore", "iptables"),
    ("ip", "iproute2"),
    ("nsenter", "util-linux"),
    ("skopeo", "skopeo"),
    ("buildah", "buildah"),
];

fn io(context: impl Into<String>) -> impl FnOnce(std::io::Error) -> Error {
    let context = context.into();
    move |source| Error::Io { context, source }
}

fn find_command(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain(["/usr/sbin", "/sbin"].map(PathBuf::from))
        .map(|d| d.join(name))
        .find(|p| p.is_file())
}

/// Fails with what to install when the machine can't run a node.
fn check_host() -> Result<(), Error> {
    if !nix::unistd::geteuid().is_root() {
        return Err(Error::Node(
            "a real node needs root (namespaces, cgroups, iptables); run as root or start the \
             cluster without one"
                .into(),
        ));
    }
    let missing: Vec<String> = HOST_COMMANDS
        .iter()
        .filter(|(cmd, _)| find_command(cmd).is_none())
        .map(|(cmd, pkg)| format!("{cmd} (Debian: {pkg})"))
        .collect();
    let cni_missing = !Path::new("/usr/lib/cni/bridge").is_file();
    if !missing.is_empty() || cni_missing {
        let mut all = missing;
        if cni_missing {
            all.push("/usr/lib/cni/bridge (Debian: containernetworking-plugins)".into());
        }
        return Err(Error::Node(format!(
            "the real node needs {}; `cargo xtask setup` installs them",
            all.join(", ")
        )));
    }
    Ok(())
}

/// A node's place on the machine, made before the control plane starts (the API server listens
/// on the node's host address).
pub(crate) struct Prepared {
    slot: Slot,
    holder: Process,
    namespaces: Arc<Namespaces>,
    cgroups: Arc<Cgroups>,
    root: PathBuf,
}

impl Prepared {
    pub(crate) fn new(run: &RunDir) -> Result<Prepared, Error> {
        check_host()?;
        host::adopt_orphans();
        let root = run.path().join("node");
        let dirs = NodeDirs::create(&root)?;
        let slot = Slot::acquire(run.path())?;
        let cgroups = Cgroups::new(slot.cgroup())?;
        cgroups.create("system")?;
        let holder = host::spawn_holder(run, &dirs)?;
        let namespaces = Namespaces::of(holder.pid())?;
        let prepared = Prepared {
            slot,
            holder,
            namespaces: Arc::new(namespaces),
            cgroups: Arc::new(cgroups),
            root,
        };
        prepared.network()?;
        Ok(prepared)
    }

    /// The veth pair, the node's addresses and routes, and forwarding inside the node.
    fn network(&self) -> Result<(), Error> {
        let pid = self.holder.pid().to_string();
        let veth = self.slot.veth();
        let host = format!("{}/24", self.slot.host_ip());
        let node = format!("{}/24", self.slot.node_ip());
        let host_ip = self.slot.host_ip().to_string();
        let node_ip = self.slot.node_ip().to_string();
        host::ip(&[
            "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns", &pid,
        ])?;
        host::ip(&["addr", "add", &host, "dev", &veth])?;
        host::ip(&["link", "set", &veth, "up"])?;
        let holder = self.holder.pid();
        host::in_netns(holder, &["ip", "link", "set", "lo", "up"])?;
        host::in_netns(holder, &["ip", "addr", "add", &node, "dev", "eth0"])?;
        host::in_netns(holder, &["ip", "link", "set", "eth0", "up"])?;
        host::in_netns(holder, &["ip", "route", "add", "default", "via", &host_ip])?;
        // The host reaches Pods (the API server's proxy, tests) through the node.
        host::ip(&[
            "route",
            "add",
            &self.slot.pod_cidr(),
            "via",
            &node_ip,
            "dev",
            &veth,
        ])?;
        // Both are per network namespace: the host's stay as they are.
        host::in_netns(
            holder,
            &[
                "sh",
                "-ec",
                "echo 1 > /proc/sys/net/ipv4/ip_forward; \
                 echo 1 > /proc/sys/net/bridge/bridge-nf-call-iptables",
            ],
        )?;
        // Before anything runs in the node: no Pod ever reaches the registry.
        guard::install(
            &NodeNetwork {
                namespace_pid: holder,
                host_ip: self.slot.host_ip(),
                pod_cidr: self.slot.pod_cidr(),
            },
            config::REGISTRY_PORT,
        )?;
        Ok(())
    }

    pub(crate) fn host_ip(&self) -> Ipv4Addr {
        self.slot.host_ip()
    }

    /// Gives the host's end of the link a second address, for a second API server (the HA
    /// control plane): Pods reach it through the `kubernetes` Service as they reach the first.
    /// It goes with the link when the node is released.
    pub(crate) fn add_second_host_ip(&self) -> Result<Ipv4Addr, Error> {
        let ip = self.slot.second_host_ip();
        host::ip(&["addr", "add", &format!("{ip}/24"), "dev", &self.slot.veth()])?;
        Ok(ip)
    }

    pub(crate) fn node_ip(&self) -> Ipv4Addr {
        self.slot.node_ip()
    }
}

/// Binaries, files and the API client the node starts with.
pub(crate) struct StartContext<'a> {
    pub run: Arc<RunDir>,
    pub kubelet: PathBuf,
    pub kube_proxy: PathBuf,
    pub coredns: PathBuf,
    pub ca_file: &'a Path,
    pub kubelet_kubeconfig: PathBuf,
    pub kube_proxy_kubeconfig: PathBuf,
    pub kubelet_cert: PathBuf,
    pub kubelet_key: PathBuf,
    pub client: Client,
}

/// One supervised process of the node.
struct Component {
    name: &'static str,
    binary: PathBuf,
    args: Vec<String>,
    /// In the node's namespaces and cgroup (else on the host, like the registry).
    in_node: bool,
    /// Another user than root's to run as (on the host only).
    user: Option<RunAs>,
    process: Option<Process>,
    restarts: Vec<Instant>,
    given_up: Option<String>,
}

/// What the supervisor and the node share.
struct Shared {
    components: Mutex<Vec<Component>>,
    stopping: AtomicBool,
    run: Arc<RunDir>,
    namespaces: Arc<Namespaces>,
    cgroups: Arc<Cgroups>,
}

impl Shared {
    fn spawn(&self, c: &Component) -> Result<Process, Error> {
        let log = self.run.path().join(format!("{}.log", c.name));
        if !c.in_node {
            return match c.user {
                Some(user) => Process::spawn_as(c.name, &c.binary, &c.args, log, &self.run, user),
                None => Process::spawn(c.name, &c.binary, &c.args, log, &self.run),
            };
        }
        let procs = host::open_procs(&self.cgroups.procs_files("system"))?;
        let namespaces = &self.namespaces;
        Process::spawn_configured(c.name, &c.binary, &c.args, log, &self.run, |cmd| {
            namespaces.enter(cmd, &procs);
        })
    }

    fn report(&self, line: &str) {
        tracing::warn!("{line}");
        let path = self.run.path().join("supervisor.log");
        let stamp = time::OffsetDateTime::now_utc()
            .format(&time::format_description::well_known::Rfc3339)
            .unwrap_or_default();
        let _ = fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(path)
            .and_then(|mut f| {
                std::io::Write::write_all(&mut f, format!("{stamp} {line}\n").as_bytes())
            });
    }

    /// Restarts components that exited, unless they crash too often.
    fn supervise(&self) {
        let mut components = self.components.lock();
        for c in components.iter_mut() {
            let Some(process) = c.process.as_mut() else {
                continue;
            };
            let Some(status) = process.exited() else {
                continue;
            };
            c.process = None;
            let now = Instant::now();
            c.restarts
                .retain(|t| now.duration_since(*t) < RESTART_WINDOW);
            if c.restarts.len() >= MAX_RESTARTS {
                let line = format!(
                    "{} exited ({status}) after {} restarts in {}s; not restarting it (log {})",
                    c.name,
                    c.restarts.len(),
                    RESTART_WINDOW.as_secs(),
                    self.run.path().join(format!("{}.log", c.name)).display()
                );
                self.report(&line);
                c.given_up = Some(line);
                continue;
            }
            c.restarts.push(now);
            match self.spawn(c) {
                Ok(p) => {
                    self.report(&format!(
                        "{} exited ({status}); restarted (pid {})",
                        c.name,
                        p.pid()
                    ));
                    c.process = Some(p);
                }
                Err(e) => {
                    let line = format!("{} exited ({status}); restarting it failed: {e}", c.name);
                    self.report(&line);
                    c.given_up = Some(line);
                }
            }
        }
    }
}

/// How a node component is doing.
#[derive(Debug, Clone)]
pub struct ComponentStatus {
    pub name: String,
    /// `None` when it is not running.
    pub pid: Option<u32>,
    /// Restarts by the supervisor in the last minute.
    pub restarts: usize,
    /// Why the supervisor stopped restarting it.
    pub failed: Option<String>,
}

/// A running real node. Dropping it stops everything it runs and undoes its host changes.
pub struct Node {
    // Field order matters: the supervisor and processes stop before the slot is released.
    shared: Arc<Shared>,
    supervisor: Mutex<Option<JoinHandle<()>>>,
    holder: Mutex<Option<Process>>,
    slot: Mutex<Option<Slot>>,
    /// Addresses, names and the holder's pid, which outlive a stop.
    host_ip: Ipv4Addr,
    node_ip: Ipv4Addr,
    pod_cidr: String,
    veth: String,
    holder_pid: u32,
    root: PathBuf,
    registry: String,
    /// The registry's configuration and storage (see [`host::REGISTRY_ROOT`]).
    registry_dir: PathBuf,
    startup: Duration,
}

impl Node {
    pub(crate) async fn start(prepared: Prepared, ctx: StartContext<'_>) -> Result<Node, Error> {
        let t0 = Instant::now();
        let Prepared {
            slot,
            holder,
            namespaces,
            cgroups,
            root,
        } = prepared;
        let registry = format!("{}:{}", slot.host_ip(), config::REGISTRY_PORT);
        let registry_dir = slot.registry_dir();

        let shared = Arc::new(Shared {
            components: Mutex::new(Vec::new()),
            stopping: AtomicBool::new(false),
            run: ctx.run.clone(),
            namespaces,
            cgroups,
        });
        let mut node = Node {
            shared,
            supervisor: Mutex::new(None),
            host_ip: slot.host_ip(),
            node_ip: slot.node_ip(),
            pod_cidr: slot.pod_cidr(),
            veth: slot.veth(),
            holder_pid: holder.pid(),
            holder: Mutex::new(Some(holder)),
            slot: Mutex::new(Some(slot)),
            root,
            registry,
            registry_dir,
            startup: Duration::ZERO,
        };
        let images = tokio::task::spawn_blocking({
            let coredns = ctx.coredns.clone();
            move || -> Result<Vec<(PathBuf, Vec<String>)>, Error> {
                [
                    images::pause()?,
                    images::busybox()?,
                    images::coredns(&coredns)?,
                ]
                .iter()
                .map(|i| Ok((i.archive()?, i.references.clone())))
                .collect()
            }
        });
        let files = node.write_config(&ctx)?;
        node.add(Component::on_host(
            "registry",
            find_command("docker-registry").unwrap_or_else(|| "docker-registry".into()),
            vec!["serve".into(), files.registry.display().to_string()],
            Some(host::REGISTRY_USER),
        ))?;
        node.add(Component::in_node(
            "containerd",
            find_command("containerd").unwrap_or_else(|| "containerd".into()),
            vec!["--config".into(), files.containerd.display().to_string()],
        ))?;
        let socket = node
            .root
            .join("run")
            .join(config::CONTAINERD_SOCKET.trim_start_matches("/run/"));
        node.wait("the registry", t0, || {
            let registry = node.registry.clone();
            async move { crate::control_plane::http_status(&registry, "/v2/").await == Some(200) }
        })
        .await?;
        let archives = images
            .await
            .map_err(|e| Error::Node(format!("building images: {e}")))??;
        let registry = node.registry.clone();
        tokio::task::spawn_blocking(move || -> Result<(), Error> {
            for (archive, references) in archives {
                for reference in references {
                    push_to(&registry, &archive, &reference)?;
                }
            }
            Ok(())
        })
        .await
        .map_err(|e| Error::Node(format!("pushing images: {e}")))??;
        node.wait("containerd's socket", t0, || {
            let exists = socket.exists();
            async move { exists }
        })
        .await?;

        let node_ip = node.node_ip().to_string();
        node.add(Component::in_node(
            "kubelet",
            ctx.kubelet.clone(),
            vec![
                format!("--config={}", files.kubelet.display()),
                format!("--kubeconfig={}", ctx.kubelet_kubeconfig.display()),
                "--root-dir=/var/lib/kubelet".into(),
                format!("--hostname-override={NODE_NAME}"),
                format!("--node-ip={node_ip}"),
                format!("--node-labels={REAL_NODE_LABEL}=true"),
                "--v=1".into(),
            ],
        ))?;
        node.add(Component::in_node(
            "kube-proxy",
            ctx.kube_proxy.clone(),
            vec![format!("--config={}", files.kube_proxy.display())],
        ))?;
        crate::apply::apply(&ctx.client, &addons::apiserver_kubelet_access(), MANAGER).await?;
        crate::apply::apply(
            &ctx.client,
            &addons::local_registry_hosting(&node.registry)?,
            MANAGER,
        )
        .await?;

        let nodes: Api<NodeObject> = Api::all(ctx.client.clone());
        node.wait("the real node Ready", t0, || {
            let nodes = nodes.clone();
            async move {
                matches!(nodes.get_opt(NODE_NAME).await, Ok(Some(n)) if crate::control_plane::node_ready(&n))
            }
        })
        .await?;
        for object in addons::coredns() {
            crate::apply::apply(&ctx.client, &object, MANAGER).await?;
        }
        let deployments: Api<Deployment> = Api::namespaced(ctx.client.clone(), "kube-system");
        node.wait("CoreDNS available", t0, || {
            let deployments = deployments.clone();
            async move {
                deployments
                    .get_opt("coredns")
                    .await
                    .ok()
                    .flatten()
                    .is_some_and(|d| d.status.and_then(|s| s.available_replicas).unwrap_or(0) >= 1)
            }
        })
        .await?;
        // kube-proxy's first sync put its jumps above the guard's.
        let network = node.network();
        node.wait("kube-proxy's first sync", t0, || {
            let synced = guard::kube_proxy_synced(&network);
            async move { synced }
        })
        .await?;
        guard::keep_first(&network)?;
        node.supervisor = Mutex::new(Some(supervise(node.shared.clone())?));
        node.startup = t0.elapsed();
        Ok(node)
    }

    fn add(&mut self, component: Component) -> Result<(), Error> {
        let mut component = component;
        component.process = Some(self.shared.spawn(&component)?);
        self.shared.components.lock().push(component);
        Ok(())
    }

    /// Polls `check`; fails early, with the log, when a component exits while starting.
    async fn wait<F, Fut>(&self, what: &str, t0: Instant, mut check: F) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let timeout = Duration::from_secs(120);
        let backoff = wait::Backoff {
            first: Duration::from_millis(20),
            ..wait::Backoff::DEFAULT
        };
        let left = timeout.saturating_sub(t0.elapsed());
        let waited = wait::poll(what, left, backoff, || {
            let holds = check();
            async move {
                if holds.await {
                    return wait::Check::Ready(());
                }
                match self.exited_component() {
                    Some(exited) => wait::Check::Failed(exited),
                    None => wait::Check::Pending(String::new()),
                }
            }
        })
        .await;
        waited.map_err(|stopped| match stopped {
            wait::Stopped::Failed(e) => e,
            wait::Stopped::Timeout(_) => Error::Timeout {
                what: what.to_string(),
                after: timeout,
                logs: self.log_files().into_iter().map(|(_, p)| p).collect(),
            },
        })
    }

    /// The first component found exited, as the error that says so.
    fn exited_component(&self) -> Option<Error> {
        let (name, status) = {
            let mut cs = self.shared.components.lock();
            cs.iter_mut().find_map(|c| {
                let status = c.process.as_mut()?.exited()?;
                Some((c.name, status))
            })?
        };
        let log = self.shared.run.path().join(format!("{name}.log"));
        Some(Error::ComponentExited {
            name: name.to_string(),
            status,
            log_tail: crate::control_plane::tail(&log, 30),
            log,
        })
    }

    fn write_config(&self, ctx: &StartContext<'_>) -> Result<ConfigFiles, Error> {
        let root = &self.root;
        let write = |path: PathBuf, text: &str| -> Result<PathBuf, Error> {
            if let Some(dir) = path.parent() {
                fs::create_dir_all(dir).map_err(io(format!("creating {}", dir.display())))?;
            }
            fs::write(&path, text).map_err(io(format!("writing {}", path.display())))?;
            Ok(path)
        };
        let json = |v: serde_json::Value| serde_json::to_string_pretty(&v).unwrap_or_default();
        let certs = root.join("certs.d");
        // Docker Hub names (`busybox`), this project's images (`localhost/operon/…`), and
        // every other registry (`_default`): nothing is ever fetched from the internet.
        for host in ["docker.io", "localhost", "_default"] {
            write(
                certs.join(host).join("hosts.toml"),
                &config::registry_hosts(&self.registry),
            )?;
        }
        let cni_dir = root.join("cni");
        write(
            cni_dir.join("10-operon.conflist"),
            &config::cni(&self.pod_cidr()),
        )?;
        let containerd = write(
            root.join("containerd.toml"),
            &config::containerd(&root.join("containerd"), images::PAUSE, &cni_dir, &certs),
        )?;
        // Readable by the registry's user (see host::REGISTRY_ROOT), writable by root only.
        let registry = write(
            self.registry_dir.join("config.yml"),
            &config::registry(&self.registry, &self.registry_dir.join("storage"))?,
        )?;
        {
            use std::os::unix::fs::PermissionsExt;
            fs::set_permissions(&registry, fs::Permissions::from_mode(0o644))
                .map_err(io(format!("making {} readable", registry.display())))?;
        }
        let resolv_conf = write(root.join("resolv.conf"), &config::resolv_conf())?;
        let kubelet = write(
            root.join("kubelet.yaml"),
            &json(config::kubelet(
                self.node_ip(),
                &self.pod_cidr(),
                self.shared.cgroups.name(),
                self.shared.cgroups.mode().version(),
                &config::KubeletFiles {
                    ca: ctx.ca_file,
                    serving_cert: &ctx.kubelet_cert,
                    serving_key: &ctx.kubelet_key,
                    resolv_conf: &resolv_conf,
                },
            )),
        )?;
        let kube_proxy = write(
            root.join("kube-proxy.yaml"),
            &json(config::kube_proxy(&ctx.kube_proxy_kubeconfig)),
        )?;
        Ok(ConfigFiles {
            containerd,
            registry,
            kubelet,
            kube_proxy,
        })
    }

    /// The Node object's name.
    pub fn name(&self) -> &str {
        NODE_NAME
    }

    pub fn node_ip(&self) -> Ipv4Addr {
        self.node_ip
    }

    /// The host's address on the node's link (the API server and the registry listen there).
    pub fn host_ip(&self) -> Ipv4Addr {
        self.host_ip
    }

    pub fn pod_cidr(&self) -> String {
        self.pod_cidr.clone()
    }

    /// The host's end of the node's link.
    pub fn veth(&self) -> &str {
        &self.veth
    }

    /// The cgroup, in every hierarchy, holding what the node runs.
    pub fn cgroup(&self) -> &str {
        self.shared.cgroups.name()
    }

    /// `host:port` of the registry the node pulls from.
    pub fn registry(&self) -> &str {
        &self.registry
    }

    /// The registry's configuration (`config.yml`) and images (`storage`).
    pub fn registry_dir(&self) -> &Path {
        &self.registry_dir
    }

    /// The node's network namespace, host address and Pod range, for [`guard`].
    pub fn network(&self) -> NodeNetwork {
        NodeNetwork {
            namespace_pid: self.holder_pid,
            host_ip: self.host_ip,
            pod_cidr: self.pod_cidr.clone(),
        }
    }

    /// Keeps `port` on the host's address on the node's link open only to the `allowed` Pods
    /// (the node's stand-in for a NetworkPolicy; see [`PortGuard`]) for as long as the returned
    /// guard lives. `config` is an admin's client configuration.
    pub async fn guard_port(
        &self,
        config: kube::Config,
        port: u16,
        allowed: AllowedPods,
    ) -> Result<PortGuard, Error> {
        PortGuard::start(config, self.network(), port, allowed).await
    }

    /// The node's configuration and state (`var-lib`, `var-log`, `run` stand in for the node's
    /// `/var/lib`, `/var/log` and `/run`).
    pub fn dir(&self) -> &Path {
        &self.root
    }

    /// How long the node took to start (after the API server was ready).
    pub fn startup_time(&self) -> Duration {
        self.startup
    }

    /// The pid of the process holding the node's namespaces (`nsenter -t <pid> -n -m`), while
    /// the node runs.
    pub fn namespace_pid(&self) -> u32 {
        self.holder_pid
    }

    /// Pushes the OCI archive `archive` to the node's registry under `reference`, the name Pods
    /// use (`busybox:1.35`, `localhost/operon/pod-operator:v0.1.0`); returns the manifest's
    /// digest (see [`push_to`]). Blocking.
    pub fn push(&self, archive: &Path, reference: &str) -> Result<String, Error> {
        push_to(&self.registry, archive, reference)
    }

    /// Builds (or takes from the cache) `image` and pushes it under its references. Blocking.
    pub fn push_image(&self, image: &SystemImage) -> Result<(), Error> {
        let archive = image.archive()?;
        for reference in &image.references {
            self.push(&archive, reference)?;
        }
        Ok(())
    }

    /// The supervised components (registry, containerd, kubelet, kube-proxy).
    pub fn status(&self) -> Vec<ComponentStatus> {
        let components = self.shared.components.lock();
        let now = Instant::now();
        components
            .iter()
            .map(|c| ComponentStatus {
                name: c.name.to_string(),
                pid: c.process.as_ref().map(Process::pid),
                restarts: c
                    .restarts
                    .iter()
                    .filter(|t| now.duration_since(**t) < RESTART_WINDOW)
                    .count(),
                failed: c.given_up.clone(),
            })
            .collect()
    }

    /// `(component, log file)` for each component.
    pub fn log_files(&self) -> Vec<(String, PathBuf)> {
        let run = self.shared.run.path();
        let mut logs: Vec<(String, PathBuf)> = self
            .shared
            .components
            .lock()
            .iter()
            .map(|c| (c.name.to_string(), run.join(format!("{}.log", c.name))))
            .collect();
        let supervisor = run.join("supervisor.log");
        if supervisor.exists() {
            logs.push(("supervisor".into(), supervisor));
        }
        logs
    }

    /// Stops everything the node runs and undoes its changes to the host. Idempotent.
    pub fn stop(&self) {
        self.stop_processes();
        self.release();
    }

    /// Stops the node's daemons and Pods; its network stays until [`release`](Self::release).
    pub(crate) fn stop_processes(&self) {
        self.shared.stopping.store(true, Ordering::SeqCst);
        if let Some(supervisor) = self.supervisor.lock().take() {
            let _ = supervisor.join();
        }
        {
            let mut components = self.shared.components.lock();
            // kube-proxy and kubelet before containerd, the registry last.
            while let Some(mut c) = components.pop() {
                if c.name == "registry" {
                    // Pods die with the cgroup below; the registry serves nothing after.
                    self.shared.cgroups.kill_all();
                }
                if let Some(mut p) = c.process.take() {
                    p.stop(Duration::from_secs(5));
                }
            }
        }
        // Pods and containerd's shims, which outlive containerd by design.
        self.shared.cgroups.kill_all();
    }

    /// Removes the node's namespaces, cgroups and link, and restores kernel settings.
    pub(crate) fn release(&self) {
        self.shared.cgroups.kill_all();
        if let Some(mut holder) = self.holder.lock().take() {
            holder.kill();
        }
        self.shared.cgroups.remove();
        // Deletes the link (if the namespace still held it) and restores kernel settings.
        drop(self.slot.lock().take());
    }
}

impl Drop for Node {
    fn drop(&mut self) {
        self.stop();
    }
}

impl Component {
    fn in_node(name: &'static str, binary: PathBuf, args: Vec<String>) -> Component {
        Component {
            name,
            binary,
            args,
            in_node: true,
            user: None,
            process: None,
            restarts: Vec::new(),
            given_up: None,
        }
    }

    fn on_host(
        name: &'static str,
        binary: PathBuf,
        args: Vec<String>,
        user: Option<RunAs>,
    ) -> Component {
        Component {
            in_node: false,
            user,
            ..Component::in_node(name, binary, args)
        }
    }
}

struct ConfigFiles {
    containerd: PathBuf,
    registry: PathBuf,
    kubelet: PathBuf,
    kube_proxy: PathBuf,
}

const MANAGER: &str = "operon-envtest";

fn supervise(shared: Arc<Shared>) -> Result<JoinHandle<()>, Error> {
    std::thread::Builder::new()
        .name("operon-node-supervisor".into())
        .spawn(move || {
            while !shared.stopping.load(Ordering::SeqCst) {
                shared.supervise();
                std::thread::sleep(Duration::from_millis(200));
            }
        })
        .map_err(io("starting the node supervisor"))
}

/// The host pids of a container running on a real node, from its ID as a Pod's status gives it
/// (`containerd://<id>`, or the bare ID): the processes in the container's cgroup, which kubelet
/// (cgroupfs driver) names after the ID, `…/kubepods/<qos>/pod<uid>/<id>`. The node shares this
/// host's pid namespace, so its containers' processes are in this `/proc`. Empty when none runs.
pub fn container_pids(container_id: &str) -> Vec<i32> {
    let id = container_id
        .rsplit_once("://")
        .map_or(container_id, |(_, id)| id);
    if id.is_empty() {
        return Vec::new();
    }
    let Ok(processes) = procfs::process::all_processes() else {
        return Vec::new();
    };
    processes
        .filter_map(Result::ok)
        .filter(|p| {
            p.cgroups().is_ok_and(|cgroups| {
                cgroups
                    .into_iter()
                    .any(|c| c.pathname.rsplit('/').next() == Some(id))
            })
        })
        .map(|p| p.pid)
        .collect()
}

/// The registry a cluster announces in `kube-public/local-registry-hosting` (KEP-1755).
pub async fn announced_registry(client: &Client) -> Result<String, Error> {
    let configmaps: Api<k8s_openapi::api::core::v1::ConfigMap> =
        Api::namespaced(client.clone(), "kube-public");
    let cm = configmaps
        .get_opt("local-registry-hosting")
        .await?
        .ok_or_else(|| {
            Error::Node(
                "the cluster announces no local registry (no ConfigMap \
                 kube-public/local-registry-hosting): does it have a real node?"
                    .into(),
            )
        })?;
    let text = cm
        .data
        .unwrap_or_default()
        .remove("localRegistryHosting.v1")
        .unwrap_or_default();
    announced_host(&text)
        .ok_or_else(|| Error::Node(format!("local-registry-hosting has no host: {text:?}")))
}

/// The `host` of a `localRegistryHosting.v1` document (YAML), if it names one.
fn announced_host(text: &str) -> Option<String> {
    #[derive(serde::Deserialize)]
    struct Hosting {
        host: Option<String>,
    }
    serde_saphyr::from_str::<Hosting>(text)
        .ok()
        .and_then(|h| h.host)
        .filter(|h| !h.is_empty())
}

/// Pushes `archive` to `registry` under `reference` as Pods name it. Returns the digest of the
/// manifest the registry stored (`sha256:…`): [`images::by_digest`] makes of it the reference
/// that runs exactly this image, whatever the tag names later. Blocking.
pub fn push_to(registry: &str, archive: &Path, reference: &str) -> Result<String, Error> {
    let path = images::registry_path(reference)?;
    operon_image::push(archive, &format!("{registry}/{path}"))
        .map_err(|e| Error::Node(format!("pushing {reference}: {e}")))
}

/// Builds (or takes from the cache) the monitoring stack's six images ([`images::monitoring`],
/// the Go ones from `bin_dir`) and pushes them to `registry` under their references. Blocking.
/// Not part of a node's start: their first build takes a while, and few clusters need them.
pub fn push_monitoring_images(registry: &str, bin_dir: &Path) -> Result<(), Error> {
    for image in images::monitoring(bin_dir)? {
        let archive = image.archive()?;
        for reference in &image.references {
            push_to(registry, &archive, reference)?;
        }
    }
    Ok(())
}
