//! Starting, watching and stopping a control plane of real Kubernetes binaries.

use parking_lot::Mutex;
use std::fmt;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use k8s_openapi::api::authorization::v1::SelfSubjectAccessReview;
use k8s_openapi::api::core::v1::{Node as NodeObject, ServiceAccount};
use k8s_openapi::api::rbac::v1::ClusterRoleBinding;
use kube::api::{Api, PostParams};
use kube::config::{KubeConfigOptions, Kubeconfig};
use kube::{Client, Config};
use serde_json::json;

use crate::Error;
use crate::assets::{Assets, Component};
use crate::node::{self, Node};
use crate::pki::{CLUSTER_ADMINS_GROUP, CertKey, NodeAddresses, Pki};
use crate::pod_security;
use crate::process::{Process, RunDir, reap_stale_runs};
use crate::wait;

/// The pod network kwok hands out Pod IPs from.
pub const POD_CIDR: &str = "10.244.0.0/16";
/// kwok's share of the pod network when a real node takes the low ranges (`10.244.<k>.0/24`).
const KWOK_CIDR_BESIDE_REAL_NODE: &str = "10.244.128.0/17";
/// Taint on kwok Nodes beside a real node: Pods land on the real node unless they tolerate it
/// (scale tests do).
pub const KWOK_TAINT: &str = "kwok.x-k8s.io/node";
/// The Service network.
pub const SERVICE_CIDR: &str = "10.0.0.0/24";
/// Label on every Node the control plane creates for kwok.
pub const KWOK_NODE_LABEL: &str = "operon.dev/kwok-node";

/// Comma-separated components to leave out, e.g. `kube-controller-manager` — to prove that a
/// test depends on one (it must then fail). `pod-security` leaves out the Pod Security defaults
/// ([`Builder::pod_security`]).
pub const SKIP_ENV: &str = "OPERON_ENVTEST_SKIP";

/// Set to `true` to make etcd fsync in every control plane whose builder doesn't say otherwise
/// ([`Builder::durable`]): to run tests as a durable cluster would, or to measure what fsync
/// costs them.
pub const DURABLE_ENV: &str = "OPERON_ETCD_FSYNC";

/// How long startup may take before it is reported as failed.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(120);

/// What to start. Build with [`ControlPlane::builder`].
#[derive(Debug, Clone)]
pub struct Builder {
    assets: Assets,
    controller_manager: bool,
    scheduler: bool,
    nodes: usize,
    real_node: bool,
    pods_per_node: u32,
    dir: Option<PathBuf>,
    apiserver_args: Vec<String>,
    scheduler_args: Vec<String>,
    pod_security: bool,
    name: String,
    ha: bool,
    durable: Option<bool>,
}

impl Default for Builder {
    fn default() -> Self {
        Builder {
            assets: Assets::from_env(),
            controller_manager: true,
            scheduler: true,
            nodes: 1,
            real_node: false,
            pods_per_node: 1000,
            dir: None,
            apiserver_args: Vec::new(),
            scheduler_args: Vec::new(),
            pod_security: true,
            name: "operon".into(),
            ha: false,
            durable: None,
        }
    }
}

impl Builder {
    /// Run kube-controller-manager (garbage collection, namespaces, ServiceAccounts and tokens).
    pub fn controller_manager(mut self, on: bool) -> Self {
        self.controller_manager = on;
        self
    }

    /// Run kube-scheduler and kwok with `nodes` fake Nodes, so Pods get scheduled and reach
    /// Running. `0` runs neither (unless a real node needs the scheduler).
    pub fn nodes(mut self, nodes: usize) -> Self {
        self.nodes = nodes;
        self.scheduler = nodes > 0 || self.real_node;
        self
    }

    /// Also run a real worker Node (kubelet, containerd, kube-proxy, CoreDNS, a local registry;
    /// see [`Node`]). Needs root and the packages `cargo xtask setup` installs. kwok
    /// Nodes then carry the [`KWOK_TAINT`] taint.
    pub fn real_node(mut self, on: bool) -> Self {
        self.real_node = on;
        self.scheduler |= on;
        self
    }

    /// How many Pods each fake Node takes (default 1000); benchmarks with many Pods raise it.
    pub fn pods_per_node(mut self, pods: u32) -> Self {
        self.pods_per_node = pods;
        self
    }

    /// Only etcd and kube-apiserver, like controller-runtime's envtest.
    pub fn minimal(self) -> Self {
        self.controller_manager(false).nodes(0)
    }

    /// Keep state in `dir` instead of a temporary directory (it is not removed on stop).
    pub fn dir(mut self, dir: impl Into<PathBuf>) -> Self {
        self.dir = Some(dir.into());
        self
    }

    /// Where to find the binaries.
    pub fn assets(mut self, assets: Assets) -> Self {
        self.assets = assets;
        self
    }

    /// An extra kube-apiserver flag, e.g. `--watch-cache-sizes=pods#10`.
    pub fn apiserver_arg(mut self, arg: impl Into<String>) -> Self {
        self.apiserver_args.push(arg.into());
        self
    }

    /// An extra kube-scheduler flag, e.g. `--kube-api-qps=500` (its client's rate limit, 50 by
    /// default, bounds how fast Pods are bound).
    pub fn scheduler_arg(mut self, arg: impl Into<String>) -> Self {
        self.scheduler_args.push(arg.into());
        self
    }

    /// Pod Security admission's cluster-wide defaults, on unless turned off: a namespace
    /// without `pod-security.kubernetes.io/*` labels enforces `baseline` (no privileged
    /// containers, host namespaces or `hostPath` volumes) and warns and audits at `restricted`;
    /// see [`pod_security`](crate::pod_security). `false` leaves kube-apiserver's built-in
    /// defaults, `privileged` everywhere, as a kind or kubeadm cluster has them — for showing the
    /// difference, never for running untrusted Pods on a real node. An
    /// [`apiserver_arg`](Self::apiserver_arg) `--admission-control-config-file` replaces the
    /// defaults' file.
    pub fn pod_security(mut self, on: bool) -> Self {
        self.pod_security = on;
        self
    }

    /// A highly available control plane, as kubeadm lays one out on three machines: a
    /// 3-member etcd cluster (peer TLS), 2 kube-apiservers on it behind a TCP load balancer
    /// (HAProxy, health-checking each apiserver's `/readyz`), and 2 each of
    /// kube-controller-manager and kube-scheduler electing a leader. Every kubeconfig points at
    /// the balancer; the `kubernetes` Service's endpoints are both apiservers. Components are
    /// named `etcd-0`…`etcd-2`, `kube-apiserver-0`/`-1`, `kube-controller-manager-0`/`-1`,
    /// `kube-scheduler-0`/`-1` and `haproxy` (for [`ControlPlane::stop_component`]). Implies
    /// [`durable`](Self::durable) unless turned off after.
    pub fn ha(mut self, on: bool) -> Self {
        self.ha = on;
        self
    }

    /// Whether etcd fsyncs its writes. Off by default (`--unsafe-no-fsync`): a throwaway test
    /// cluster loses nothing it needs if the machine crashes, and fsync costs its tests time.
    /// On for the HA mode and for clusters that keep a user's objects (`cargo xtask up`,
    /// `cargo xtask cluster up`), where an acknowledged write must survive a power cut.
    pub fn durable(mut self, on: bool) -> Self {
        self.durable = Some(on);
        self
    }

    /// Name of the cluster, context and user in the kubeconfig.
    pub fn name(mut self, name: impl Into<String>) -> Self {
        self.name = name.into();
        self
    }

    /// Applies [`SKIP_ENV`].
    pub fn skip_from_env(mut self) -> Self {
        let skip = std::env::var(SKIP_ENV).unwrap_or_default();
        for component in skip.split(',').map(str::trim).filter(|s| !s.is_empty()) {
            match component {
                "kube-controller-manager" => self.controller_manager = false,
                "kube-scheduler" => self.scheduler = false,
                "kwok" => self.nodes = 0,
                "real-node" => self.real_node = false,
                "pod-security" => self.pod_security = false,
                other => tracing::warn!("{SKIP_ENV}: unknown component {other:?}"),
            }
        }
        self
    }

    /// Starts everything and waits until it is ready.
    pub async fn start(self) -> Result<ControlPlane, Error> {
        ControlPlane::start(self).await
    }
}

/// How long each stage of startup took, measured from the start call.
#[derive(Debug, Clone, Default)]
pub struct StartupTimes {
    pub etcd_ready: Duration,
    /// kube-apiserver ready and the admin kubeconfig authorized (its binding in effect).
    pub apiserver_ready: Duration,
    /// kube-controller-manager working (the `default` ServiceAccount exists).
    pub controller_manager_ready: Option<Duration>,
    /// kube-scheduler healthy and every kwok Node Ready.
    pub nodes_ready: Option<Duration>,
    /// The real node Ready with CoreDNS available.
    pub real_node_ready: Option<Duration>,
    pub total: Duration,
}

impl fmt::Display for StartupTimes {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let secs = |d: Duration| format!("{:.2}s", d.as_secs_f64());
        write!(
            f,
            "etcd {}, kube-apiserver {}",
            secs(self.etcd_ready),
            secs(self.apiserver_ready)
        )?;
        if let Some(d) = self.controller_manager_ready {
            write!(f, ", kube-controller-manager {}", secs(d))?;
        }
        if let Some(d) = self.nodes_ready {
            write!(f, ", scheduler+kwok nodes {}", secs(d))?;
        }
        if let Some(d) = self.real_node_ready {
            write!(f, ", real node {}", secs(d))?;
        }
        write!(f, " (total {})", secs(self.total))
    }
}

/// A running control plane. Dropping it stops every process.
pub struct ControlPlane {
    // Field order matters: the node and the processes stop before the run directory is removed.
    node: Option<Node>,
    processes: Mutex<Vec<Process>>,
    /// How each component was started, to start it again (same ports, same data).
    pub(crate) specs: Mutex<Vec<Spec>>,
    etcd: EtcdClient,
    run: Arc<RunDir>,
    /// What clients use: the balancer in the HA mode, else the one API server.
    server: String,
    /// Each API server's own URL.
    apiservers: Vec<String>,
    kubeconfig: PathBuf,
    super_admin_kubeconfig: PathBuf,
    ca_pem: String,
    startup: StartupTimes,
    controller_manager: bool,
    ha: bool,
    nodes: Vec<String>,
}

/// A component as it was started, and how to tell it is healthy again.
pub(crate) struct Spec {
    pub(crate) name: String,
    pub(crate) binary: PathBuf,
    pub(crate) args: Vec<String>,
    pub(crate) health: Health,
}

#[derive(Debug, Clone)]
pub(crate) enum Health {
    /// etcd's `/health` on its metrics port.
    Etcd { metrics_port: u16 },
    /// kube-apiserver's `/readyz` at its own URL, and the admin's rights in effect.
    Apiserver { url: String },
    /// Only started.
    Started,
}

/// How many of each control plane component run.
#[derive(Debug, Clone, Copy)]
struct Replicas {
    etcd: usize,
    apiservers: usize,
    controllers: usize,
}

impl Replicas {
    const SINGLE: Replicas = Replicas {
        etcd: 1,
        apiservers: 1,
        controllers: 1,
    };
    const HA: Replicas = Replicas {
        etcd: 3,
        apiservers: 2,
        controllers: 2,
    };
}

/// The second API server's address without a real node (all of 127/8 is loopback on Linux).
const SECOND_LOOPBACK: Ipv4Addr = Ipv4Addr::new(127, 0, 0, 2);

fn durable_from_env() -> bool {
    std::env::var(DURABLE_ENV)
        .is_ok_and(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
}

/// `base` alone, or `base-<i>` when several run (the HA mode).
fn component_name(base: &str, i: usize, ha: bool) -> String {
    if ha {
        format!("{base}-{i}")
    } else {
        base.to_owned()
    }
}

impl ControlPlane {
    pub fn builder() -> Builder {
        Builder::default()
    }

    async fn start(b: Builder) -> Result<ControlPlane, Error> {
        let t0 = Instant::now();
        reap_stale_runs();
        let etcd_bin = b.assets.binary(Component::Etcd)?;
        let apiserver_bin = b.assets.binary(Component::KubeApiserver)?;
        let kcm_bin = b
            .controller_manager
            .then(|| b.assets.binary(Component::KubeControllerManager))
            .transpose()?;
        let scheduler_bin = b
            .scheduler
            .then(|| b.assets.binary(Component::KubeScheduler))
            .transpose()?;
        let kwok = if b.nodes > 0 {
            Some((b.assets.binary(Component::Kwok)?, b.assets.kwok_stages()?))
        } else {
            None
        };

        let node_bins = if b.real_node {
            Some((
                b.assets.binary(Component::Kubelet)?,
                b.assets.binary(Component::KubeProxy)?,
                b.assets.binary(Component::Coredns)?,
            ))
        } else {
            None
        };

        let run = Arc::new(match &b.dir {
            Some(dir) => RunDir::at(dir)?,
            None => RunDir::create()?,
        });
        // The node's place first: the API server listens on the node's link.
        let prepared = if b.real_node {
            let run = run.clone();
            Some(
                tokio::task::spawn_blocking(move || node::Prepared::new(&run))
                    .await
                    .map_err(|e| Error::Node(format!("preparing the node: {e}")))??,
            )
        } else {
            None
        };
        let host_ip = prepared.as_ref().map(node::Prepared::host_ip);
        let node_ip = prepared.as_ref().map(node::Prepared::node_ip);
        let listen = host_ip.unwrap_or(Ipv4Addr::LOCALHOST);
        // Each API server on an address of its own, all on one port: the `kubernetes`
        // Service's Endpoints carry one port for all of them, as on separate machines.
        let apiserver_ips = if b.ha {
            match &prepared {
                Some(prepared) => vec![listen, prepared.add_second_host_ip()?],
                None => vec![Ipv4Addr::LOCALHOST, SECOND_LOOPBACK],
            }
        } else {
            vec![listen]
        };
        let serving_ips = apiserver_ips.clone();
        let pki = tokio::task::spawn_blocking(move || {
            Pki::generate_for(
                host_ip
                    .zip(node_ip)
                    .map(|(host_ip, node_ip)| NodeAddresses {
                        host_ip,
                        node_ip,
                        name: node::NODE_NAME,
                    }),
                &serving_ips,
            )
        })
        .await
        .map_err(|e| Error::Io {
            context: "generating certificates".into(),
            source: std::io::Error::other(e),
        })??;
        let files = PkiFiles::write(&run, &pki)?;

        let replicas = if b.ha { Replicas::HA } else { Replicas::SINGLE };
        let ports = Ports::pick(replicas, &apiserver_ips, listen)?;
        let etcd_clients: Vec<String> = ports
            .etcd
            .iter()
            .map(|m| format!("https://127.0.0.1:{}", m.client))
            .collect();
        let mut cp = ControlPlane {
            node: None,
            processes: Mutex::new(Vec::new()),
            specs: Mutex::new(Vec::new()),
            etcd: EtcdClient {
                endpoint: etcd_clients[0].clone(),
                endpoints: etcd_clients.clone(),
                ca_file: files.etcd.ca_cert.clone(),
                cert_file: files.etcd.apiserver_client_cert.clone(),
                key_file: files.etcd.apiserver_client_key.clone(),
            },
            server: String::new(),
            apiservers: apiserver_ips
                .iter()
                .map(|ip| format!("https://{ip}:{}", ports.apiserver))
                .collect(),
            kubeconfig: PathBuf::new(),
            super_admin_kubeconfig: PathBuf::new(),
            ca_pem: pki.ca.cert_pem.clone(),
            startup: StartupTimes::default(),
            controller_manager: kcm_bin.is_some(),
            ha: b.ha,
            nodes: Vec::new(),
            run,
        };

        // etcd: client and peer traffic over TLS, each side proving itself with a certificate
        // of etcd's CA (as kubeadm runs it); health on a metrics port that serves no data. A
        // member keeps the name `envtest` when alone, so a kept run directory starts again.
        let durable = b.durable.unwrap_or(b.ha || durable_from_env());
        let member_name = |i: usize| {
            if b.ha {
                format!("etcd-{i}")
            } else {
                "envtest".to_owned()
            }
        };
        let initial_cluster = ports
            .etcd
            .iter()
            .enumerate()
            .map(|(i, m)| format!("{}=https://127.0.0.1:{}", member_name(i), m.peer))
            .collect::<Vec<_>>()
            .join(",");
        for (i, member) in ports.etcd.iter().enumerate() {
            let name = component_name("etcd", i, b.ha);
            let client_url = &etcd_clients[i];
            let peer_url = format!("https://127.0.0.1:{}", member.peer);
            let mut args = vec![
                format!("--name={}", member_name(i)),
                format!("--data-dir={}", cp.run.path().join(&name).display()),
                format!("--listen-client-urls={client_url}"),
                format!("--advertise-client-urls={client_url}"),
                "--client-cert-auth=true".into(),
                format!("--trusted-ca-file={}", files.etcd.ca_cert.display()),
                format!("--cert-file={}", files.etcd.server_cert.display()),
                format!("--key-file={}", files.etcd.server_key.display()),
                format!("--listen-peer-urls={peer_url}"),
                format!("--initial-advertise-peer-urls={peer_url}"),
                format!("--initial-cluster={initial_cluster}"),
                "--initial-cluster-state=new".into(),
                "--initial-cluster-token=operon".into(),
                "--peer-client-cert-auth=true".into(),
                format!("--peer-trusted-ca-file={}", files.etcd.ca_cert.display()),
                format!("--peer-cert-file={}", files.etcd.peer_cert.display()),
                format!("--peer-key-file={}", files.etcd.peer_key.display()),
                format!("--listen-metrics-urls=http://127.0.0.1:{}", member.metrics),
                "--log-level=warn".into(),
            ];
            if !durable {
                args.push("--unsafe-no-fsync=true".into());
            }
            cp.spawn(
                &name,
                &etcd_bin,
                args,
                Health::Etcd {
                    metrics_port: member.metrics,
                },
            )?;
        }
        // A member of three answers healthy only once the cluster has a leader: all of them
        // are started before any is awaited.
        for member in &ports.etcd {
            let port = member.metrics;
            cp.wait_until("etcd /health", t0, || {
                http_get_ok("127.0.0.1", port, "/health")
            })
            .await?;
        }
        cp.startup.etcd_ready = t0.elapsed();

        // kube-apiserver
        let etcd_servers = etcd_clients.join(",");
        let mut apiserver_args = vec![
            format!("--etcd-servers={etcd_servers}"),
            format!("--etcd-cafile={}", files.etcd.ca_cert.display()),
            format!(
                "--etcd-certfile={}",
                files.etcd.apiserver_client_cert.display()
            ),
            format!(
                "--etcd-keyfile={}",
                files.etcd.apiserver_client_key.display()
            ),
            format!("--secure-port={}", ports.apiserver),
            format!("--tls-cert-file={}", files.serving_cert.display()),
            format!("--tls-private-key-file={}", files.serving_key.display()),
            format!("--client-ca-file={}", files.ca_cert.display()),
            format!(
                "--authorization-mode={}",
                if b.real_node { "Node,RBAC" } else { "RBAC" }
            ),
            format!("--service-cluster-ip-range={SERVICE_CIDR}"),
            "--service-account-issuer=https://kubernetes.default.svc.cluster.local".into(),
            format!("--service-account-key-file={}", files.sa_pub.display()),
            format!(
                "--service-account-signing-key-file={}",
                files.sa_key.display()
            ),
            "--allow-privileged=true".into(),
            "--profiling=false".into(),
        ];
        if let Some(node) = &files.node {
            apiserver_args.extend([
                format!(
                    "--kubelet-client-certificate={}",
                    node.apiserver_client_cert.display()
                ),
                format!(
                    "--kubelet-client-key={}",
                    node.apiserver_client_key.display()
                ),
                format!(
                    "--kubelet-certificate-authority={}",
                    files.ca_cert.display()
                ),
                "--kubelet-preferred-address-types=InternalIP".into(),
                "--enable-admission-plugins=NodeRestriction".into(),
            ]);
        }
        let own_admission_config = b
            .apiserver_args
            .iter()
            .any(|arg| arg.starts_with("--admission-control-config-file"));
        if b.pod_security && !own_admission_config {
            let config = serde_json::to_string_pretty(&pod_security::admission_configuration())
                .map_err(|e| Error::Invalid(format!("the admission configuration: {e}")))?;
            let path = cp.run.write(pod_security::ADMISSION_CONFIG_FILE, &config)?;
            apiserver_args.push(format!(
                "--admission-control-config-file={}",
                path.display()
            ));
        }
        apiserver_args.extend(b.apiserver_args.iter().cloned());
        for (i, ip) in apiserver_ips.iter().enumerate() {
            let name = component_name("kube-apiserver", i, b.ha);
            let cert_dir = if b.ha {
                cp.run.path().join(&name)
            } else {
                cp.run.path().to_path_buf()
            };
            let mut args = vec![
                format!("--bind-address={ip}"),
                format!("--advertise-address={ip}"),
                format!("--cert-dir={}", cert_dir.display()),
            ];
            args.extend(apiserver_args.iter().cloned());
            let url = cp.apiservers[i].clone();
            cp.spawn(&name, &apiserver_bin, args, Health::Apiserver { url })?;
        }
        cp.server = match ports.balancer {
            Some(port) => {
                let config = haproxy_config(&cp.apiservers, listen, port, &files.ca_cert);
                let path = cp.run.write("haproxy.cfg", &config)?;
                let haproxy = which_haproxy()?;
                cp.spawn(
                    "haproxy",
                    &haproxy,
                    vec!["-db".into(), "-f".into(), path.display().to_string()],
                    Health::Started,
                )?;
                format!("https://{listen}:{port}")
            }
            None => cp.apiservers[0].clone(),
        };

        // Two admin kubeconfigs, as kubeadm writes them: `super-admin.conf` (system:masters)
        // only bootstraps and stays for recovery; `kubeconfig`, which everything else uses, is
        // an admin through RBAC alone.
        cp.super_admin_kubeconfig = cp.run.write(
            SUPER_ADMIN_KUBECONFIG,
            &kubeconfig(&b.name, &cp.server, &pki.ca, &pki.super_admin),
        )?;
        cp.kubeconfig = cp.run.write(
            "kubeconfig",
            &kubeconfig(&b.name, &cp.server, &pki.ca, &pki.admin),
        )?;
        for url in cp.apiservers.clone() {
            cp.wait_apiserver_ready("kube-apiserver /readyz", &url, t0)
                .await?;
        }
        if b.ha {
            let server = cp.server.clone();
            cp.wait_apiserver_ready("kube-apiserver /readyz through the balancer", &server, t0)
                .await?;
        }
        let super_admin = cp.super_admin_client().await?;
        bind_cluster_admins(&super_admin).await?;
        cp.wait_admin_authorized(t0).await?;
        cp.startup.apiserver_ready = t0.elapsed();
        let client = cp.client().await?;

        // kube-controller-manager: with two, they elect a leader on a Lease, as kubeadm's do.
        if let Some(kcm_bin) = &kcm_bin {
            let kc = cp.run.write(
                "kube-controller-manager.kubeconfig",
                &kubeconfig(&b.name, &cp.server, &pki.ca, &pki.controller_manager),
            )?;
            for (i, port) in ports.controller_managers.iter().enumerate() {
                let name = component_name("kube-controller-manager", i, b.ha);
                let cert_dir = if b.ha {
                    format!("{name}-certs")
                } else {
                    "kcm-certs".into()
                };
                let args = vec![
                    format!("--kubeconfig={}", kc.display()),
                    format!("--authentication-kubeconfig={}", kc.display()),
                    format!("--authorization-kubeconfig={}", kc.display()),
                    format!("--leader-elect={}", b.ha),
                    "--bind-address=127.0.0.1".into(),
                    format!("--secure-port={port}"),
                    format!("--cert-dir={}", cp.run.path().join(cert_dir).display()),
                    format!(
                        "--service-account-private-key-file={}",
                        files.sa_key.display()
                    ),
                    format!("--root-ca-file={}", files.ca_cert.display()),
                    format!("--cluster-signing-cert-file={}", files.ca_cert.display()),
                    format!("--cluster-signing-key-file={}", files.ca_key.display()),
                    "--use-service-account-credentials=true".into(),
                    format!("--service-cluster-ip-range={SERVICE_CIDR}"),
                ];
                cp.spawn(&name, kcm_bin, args, Health::Started)?;
            }
        }

        // kube-scheduler and kwok
        if let Some(scheduler_bin) = &scheduler_bin {
            let kc = cp.run.write(
                "kube-scheduler.kubeconfig",
                &kubeconfig(&b.name, &cp.server, &pki.ca, &pki.scheduler),
            )?;
            for (i, port) in ports.schedulers.iter().enumerate() {
                let name = component_name("kube-scheduler", i, b.ha);
                let cert_dir = if b.ha {
                    format!("{name}-certs")
                } else {
                    "scheduler-certs".into()
                };
                let mut args = vec![
                    format!("--kubeconfig={}", kc.display()),
                    format!("--authentication-kubeconfig={}", kc.display()),
                    format!("--authorization-kubeconfig={}", kc.display()),
                    format!("--leader-elect={}", b.ha),
                    "--bind-address=127.0.0.1".into(),
                    format!("--secure-port={port}"),
                    format!("--cert-dir={}", cp.run.path().join(cert_dir).display()),
                ];
                args.extend(b.scheduler_args.iter().cloned());
                cp.spawn(&name, scheduler_bin, args, Health::Started)?;
            }
        }
        if let Some((kwok_bin, stages)) = &kwok {
            let args = vec![
                format!("--kubeconfig={}", cp.kubeconfig.display()),
                format!("--config={}", stages.display()),
                format!("--manage-nodes-with-label-selector={KWOK_NODE_LABEL}"),
                format!("--server-address=127.0.0.1:{}", ports.kwok),
                format!(
                    "--cidr={}",
                    if b.real_node {
                        KWOK_CIDR_BESIDE_REAL_NODE
                    } else {
                        POD_CIDR
                    }
                ),
                "--node-lease-duration-seconds=40".into(),
            ];
            cp.spawn("kwok", kwok_bin, args, Health::Started)?;
        }

        if kcm_bin.is_some() {
            let sas: Api<ServiceAccount> = Api::namespaced(client.clone(), "default");
            cp.wait_until(
                "kube-controller-manager (default ServiceAccount)",
                t0,
                || {
                    let sas = sas.clone();
                    async move { matches!(sas.get_opt("default").await, Ok(Some(_))) }
                },
            )
            .await?;
            cp.startup.controller_manager_ready = Some(t0.elapsed());
        }

        if let (Some(prepared), Some((kubelet, kube_proxy, coredns)), Some(node_files)) =
            (prepared, node_bins, &files.node)
        {
            let write_kubeconfig = |name: &str, user: &CertKey| {
                cp.run
                    .write(name, &kubeconfig(&b.name, &cp.server, &pki.ca, user))
            };
            let node_certs = pki
                .node
                .as_ref()
                .ok_or_else(|| Error::Node("no node certificates".into()))?;
            let ctx = node::StartContext {
                run: cp.run.clone(),
                kubelet,
                kube_proxy,
                coredns,
                ca_file: &files.ca_cert,
                kubelet_kubeconfig: write_kubeconfig("kubelet.kubeconfig", &node_certs.kubelet)?,
                kube_proxy_kubeconfig: write_kubeconfig(
                    "kube-proxy.kubeconfig",
                    &node_certs.kube_proxy,
                )?,
                kubelet_cert: node_files.kubelet_cert.clone(),
                kubelet_key: node_files.kubelet_key.clone(),
                client: client.clone(),
            };
            let started = Node::start(prepared, ctx).await;
            cp.node = Some(started?);
            cp.startup.real_node_ready = Some(t0.elapsed());
        }

        if kwok.is_some() {
            cp.create_nodes(&client, b.nodes, b.pods_per_node, b.real_node)
                .await?;
            let nodes: Api<NodeObject> = Api::all(client.clone());
            let names = cp.nodes.clone();
            cp.wait_until("kwok Nodes Ready", t0, || {
                let nodes = nodes.clone();
                let names = names.clone();
                async move {
                    for name in &names {
                        match nodes.get_opt(name).await {
                            Ok(Some(node)) if node_ready(&node) => {}
                            _ => return false,
                        }
                    }
                    true
                }
            })
            .await?;
            if scheduler_bin.is_some() {
                for &port in &ports.schedulers {
                    cp.wait_until("kube-scheduler /healthz", t0, || insecure_healthz(port))
                        .await?;
                }
            }
            cp.startup.nodes_ready = Some(t0.elapsed());
        }
        cp.startup.total = t0.elapsed();
        tracing::info!(startup = %cp.startup, dir = %cp.run.path().display(), "control plane ready");
        Ok(cp)
    }

    fn spawn(
        &self,
        name: &str,
        binary: &Path,
        args: Vec<String>,
        health: Health,
    ) -> Result<(), Error> {
        let log = self.run.path().join(format!("{name}.log"));
        let process = Process::spawn(name, binary, &args, log, &self.run)?;
        self.processes.lock().push(process);
        let mut specs = self.specs.lock();
        if !specs.iter().any(|s| s.name == name) {
            specs.push(Spec {
                name: name.to_owned(),
                binary: binary.to_path_buf(),
                args,
                health,
            });
        }
        Ok(())
    }

    /// Stops one component (`etcd`, `kube-apiserver`, `kube-controller-manager`,
    /// `kube-scheduler`, `kwok`; in the HA mode `etcd-1`, `kube-apiserver-0`, `haproxy`, …, see
    /// [`component_names`](Self::component_names)) the way a crash or an upgrade would:
    /// SIGTERM, then SIGKILL after `grace` (`Duration::ZERO`: SIGKILL at once, as a crash).
    /// The others keep running. For failure tests.
    pub fn stop_component(&self, name: &str, grace: Duration) -> Result<(), Error> {
        let process = {
            let mut processes = self.processes.lock();
            let index = processes
                .iter()
                .position(|p| p.name() == name)
                .ok_or_else(|| Error::UnknownComponent(name.to_owned()))?;
            processes.remove(index)
        };
        let mut process = process;
        process.stop(grace);
        Ok(())
    }

    /// Kills one component with SIGKILL, as a crash or a lost machine would: no chance to
    /// finish a write, close a connection or hand over a lease. Start it again with
    /// [`start_component`](Self::start_component).
    pub fn kill_component(&self, name: &str) -> Result<(), Error> {
        let mut process = {
            let mut processes = self.processes.lock();
            let index = processes
                .iter()
                .position(|p| p.name() == name)
                .ok_or_else(|| Error::UnknownComponent(name.to_owned()))?;
            processes.remove(index)
        };
        process.kill();
        Ok(())
    }

    /// Starts a component stopped with [`stop_component`](Self::stop_component) again, with
    /// its original arguments (same ports, same etcd data), and waits until it is healthy
    /// (etcd `/health`, kube-apiserver `/readyz`; the others are only started).
    pub async fn start_component(&self, name: &str) -> Result<(), Error> {
        let (binary, args, health) = {
            let specs = self.specs.lock();
            let spec = specs
                .iter()
                .find(|s| s.name == name)
                .ok_or_else(|| Error::UnknownComponent(name.to_owned()))?;
            (spec.binary.clone(), spec.args.clone(), spec.health.clone())
        };
        // The log continues where it was (a new file would hide the first run's lines).
        let log = self.run.path().join(format!("{name}-restarted.log"));
        let process = Process::spawn(name, &binary, &args, log, &self.run)?;
        self.processes.lock().push(process);
        let t0 = Instant::now();
        match health {
            Health::Etcd { metrics_port } => {
                self.wait_until("etcd /health after restart", t0, || {
                    http_get_ok("127.0.0.1", metrics_port, "/health")
                })
                .await
            }
            Health::Apiserver { url } => {
                self.wait_apiserver_ready("kube-apiserver /readyz after restart", &url, t0)
                    .await?;
                // Ready for its callers: the admin's RBAC rights are in effect again.
                self.wait_admin_authorized(t0).await
            }
            Health::Started => Ok(()),
        }
    }

    /// The names of the running components, in start order.
    pub fn component_names(&self) -> Vec<String> {
        self.processes
            .lock()
            .iter()
            .map(|p| p.name().to_owned())
            .collect()
    }

    /// Waits until the kube-apiserver at `url` says `ok` on `/readyz`, asked as the
    /// super-admin (whose requests need no authorizer, so the answer doesn't wait on RBAC's
    /// caches).
    async fn wait_apiserver_ready(&self, what: &str, url: &str, t0: Instant) -> Result<(), Error> {
        let client = self.super_admin_client_at(url).await?;
        self.wait_until(what, t0, || {
            let client = client.clone();
            async move {
                client
                    .request_text(http_get("/readyz"))
                    .await
                    .is_ok_and(|body| body.trim() == "ok")
            }
        })
        .await
    }

    /// Waits until the admin kubeconfig's identity may do anything (RBAC's authorizer sees the
    /// `kubeadm:cluster-admins` binding): a SelfSubjectAccessReview for every verb on every
    /// resource.
    async fn wait_admin_authorized(&self, t0: Instant) -> Result<(), Error> {
        let reviews: Api<SelfSubjectAccessReview> = Api::all(self.client().await?);
        let review: SelfSubjectAccessReview = serde_json::from_value(json!({
            "spec": { "resourceAttributes": { "verb": "*", "group": "*", "resource": "*" } }
        }))
        .map_err(|e| Error::Invalid(format!("SelfSubjectAccessReview: {e}")))?;
        self.wait_until(
            &format!("the admin kubeconfig authorized as {CLUSTER_ADMINS_GROUP}"),
            t0,
            || {
                let (reviews, review) = (reviews.clone(), review.clone());
                async move {
                    reviews
                        .create(&PostParams::default(), &review)
                        .await
                        .is_ok_and(|r| r.status.is_some_and(|s| s.allowed))
                }
            },
        )
        .await
    }

    /// Polls `check` until it is true; fails early when a component exits.
    pub(crate) async fn wait_until<F, Fut>(
        &self,
        what: &str,
        t0: Instant,
        mut check: F,
    ) -> Result<(), Error>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let backoff = wait::Backoff {
            first: Duration::from_millis(20),
            ..wait::Backoff::DEFAULT
        };
        let left = STARTUP_TIMEOUT.saturating_sub(t0.elapsed());
        let waited = wait::poll(what, left, backoff, || {
            let holds = check();
            async move {
                if holds.await {
                    return wait::Check::Ready(());
                }
                match self.exited_component() {
                    Some((name, status, log)) => wait::Check::Failed(Error::ComponentExited {
                        name,
                        status,
                        log_tail: tail(&log, 20),
                        log,
                    }),
                    None => wait::Check::Pending(String::new()),
                }
            }
        })
        .await;
        waited.map_err(|stopped| match stopped {
            wait::Stopped::Failed(e) => e,
            wait::Stopped::Timeout(_) => Error::Timeout {
                what: what.to_string(),
                after: STARTUP_TIMEOUT,
                logs: self.log_files().into_iter().map(|(_, p)| p).collect(),
            },
        })
    }

    fn exited_component(&self) -> Option<(String, String, PathBuf)> {
        let mut processes = self.processes.lock();
        processes.iter_mut().find_map(|p| {
            p.exited()
                .map(|status| (p.name().to_string(), status, p.log().to_path_buf()))
        })
    }

    async fn create_nodes(
        &mut self,
        client: &Client,
        count: usize,
        pods: u32,
        tainted: bool,
    ) -> Result<(), Error> {
        let nodes: Api<NodeObject> = Api::all(client.clone());
        for i in 0..count {
            let name = format!("kwok-node-{i}");
            let taints = if tainted {
                json!([{ "key": KWOK_TAINT, "value": "fake", "effect": "NoSchedule" }])
            } else {
                json!([])
            };
            let node: NodeObject = serde_json::from_value(json!({
                "apiVersion": "v1",
                "kind": "Node",
                "metadata": {
                    "name": name,
                    "labels": {
                        KWOK_NODE_LABEL: "true",
                        "kubernetes.io/hostname": name,
                        "kubernetes.io/os": "linux",
                        "kubernetes.io/arch": "amd64",
                        "type": "kwok",
                    },
                    "annotations": { "kwok.x-k8s.io/node": "fake" },
                },
                "spec": { "taints": taints },
                "status": {
                    "allocatable": { "cpu": "32", "memory": "256Gi", "pods": pods.to_string() },
                    "capacity": { "cpu": "32", "memory": "256Gi", "pods": pods.to_string() },
                },
            }))
            .map_err(|e| Error::Io {
                context: "building a Node".into(),
                source: std::io::Error::other(e),
            })?;
            match nodes.create(&PostParams::default(), &node).await {
                Ok(_) => {}
                Err(kube::Error::Api(s)) if s.code == 409 => {}
                Err(e) => return Err(Error::Kube(e)),
            }
            self.nodes.push(name);
        }
        Ok(())
    }

    /// The URL clients use: `https://127.0.0.1:<port>` (the real node's host address when
    /// there is one); in the HA mode, the balancer's.
    pub fn server(&self) -> &str {
        &self.server
    }

    /// Each kube-apiserver's own URL (two in the HA mode), bypassing the balancer.
    pub fn apiservers(&self) -> &[String] {
        &self.apiservers
    }

    /// Whether this is the HA layout ([`Builder::ha`]).
    pub fn is_ha(&self) -> bool {
        self.ha
    }

    /// The admin kubeconfig: `O=kubeadm:cluster-admins`, bound to `cluster-admin` by the
    /// `kubeadm:cluster-admins` ClusterRoleBinding (not `system:masters`).
    pub fn kubeconfig_path(&self) -> &Path {
        &self.kubeconfig
    }

    /// The super-admin kubeconfig (`super-admin.conf`, `O=system:masters`, which no authorizer
    /// can deny): for recovering a cluster whose RBAC no longer lets the admin in. The control
    /// plane itself uses it only to create the admin's binding and to see kube-apiserver ready.
    pub fn super_admin_kubeconfig_path(&self) -> &Path {
        &self.super_admin_kubeconfig
    }

    /// How to reach etcd's client port as the API server does. etcd trusts only certificates
    /// of its own CA, which signed nothing but etcd's and the API server's.
    pub fn etcd_client(&self) -> &EtcdClient {
        &self.etcd
    }

    /// A request to etcd's v3 JSON gateway (`path` such as `/v3/kv/range`,
    /// `/v3/kv/compaction`) with the API server's etcd client certificate; its JSON answer.
    /// For tests that look at or act on storage directly.
    pub async fn etcd_request(
        &self,
        path: &str,
        body: &serde_json::Value,
    ) -> Result<serde_json::Value, Error> {
        let client = self.etcd.client().await?;
        let mut req = http::Request::new(
            serde_json::to_vec(body)
                .map_err(|e| Error::Invalid(format!("etcd request body: {e}")))?,
        );
        *req.method_mut() = http::Method::POST;
        *req.uri_mut() = path
            .parse()
            .map_err(|e| Error::Invalid(format!("etcd request path {path:?}: {e}")))?;
        req.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("application/json"),
        );
        let text = client.request_text(req).await?;
        serde_json::from_str(&text)
            .map_err(|e| Error::Invalid(format!("etcd answered {path} with {text:?}: {e}")))
    }

    /// PEM of the CA that signed the apiserver's certificate.
    pub fn ca_pem(&self) -> &str {
        &self.ca_pem
    }

    /// Directory with certificates, data and logs.
    pub fn dir(&self) -> &Path {
        self.run.path()
    }

    pub fn startup_times(&self) -> &StartupTimes {
        &self.startup
    }

    /// Whether kube-controller-manager runs (garbage collection, namespace deletion, tokens).
    pub fn has_controller_manager(&self) -> bool {
        self.controller_manager
    }

    /// Names of the kwok Nodes.
    pub fn nodes(&self) -> &[String] {
        &self.nodes
    }

    /// The real node, when the control plane has one.
    pub fn node(&self) -> Option<&Node> {
        self.node.as_ref()
    }

    /// `(component, log file)` for each component, the real node's included.
    pub fn log_files(&self) -> Vec<(String, PathBuf)> {
        let mut logs: Vec<(String, PathBuf)> = self
            .processes
            .lock()
            .iter()
            .map(|p| (p.name().to_string(), p.log().to_path_buf()))
            .collect();
        logs.extend(self.node.iter().flat_map(Node::log_files));
        logs
    }

    /// Each etcd member's plain-HTTP address on loopback that serves its `/metrics` and
    /// `/health` (no keys), e.g. `127.0.0.1:2381`.
    pub fn etcd_metrics_addresses(&self) -> Vec<String> {
        self.specs
            .lock()
            .iter()
            .filter_map(|s| match s.health {
                Health::Etcd { metrics_port } => Some(format!("127.0.0.1:{metrics_port}")),
                _ => None,
            })
            .collect()
    }

    /// Pids of the running components, by name.
    pub fn pids(&self) -> Vec<(String, u32)> {
        let processes = self.processes.lock();
        processes
            .iter()
            .map(|p| (p.name().to_string(), p.pid()))
            .collect()
    }

    /// Admin client configuration.
    pub async fn config(&self) -> Result<Config, Error> {
        let kubeconfig = Kubeconfig::read_from(&self.kubeconfig).map_err(Error::Kubeconfig)?;
        Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(Error::Kubeconfig)
    }

    /// A new admin client (create one per tokio runtime: a client is bound to the runtime it was
    /// made on).
    pub async fn client(&self) -> Result<Client, Error> {
        Client::try_from(self.config().await?).map_err(Error::Kube)
    }

    async fn super_admin_client(&self) -> Result<Client, Error> {
        self.super_admin_client_at(&self.server).await
    }

    /// The super-admin, talking to the API server at `url` (one of [`apiservers`](Self::apiservers)
    /// or the balancer).
    async fn super_admin_client_at(&self, url: &str) -> Result<Client, Error> {
        let kubeconfig =
            Kubeconfig::read_from(&self.super_admin_kubeconfig).map_err(Error::Kubeconfig)?;
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(Error::Kubeconfig)?;
        config.cluster_url = url
            .parse()
            .map_err(|e| Error::Invalid(format!("API server URL {url:?}: {e}")))?;
        Client::try_from(config).map_err(Error::Kube)
    }

    /// Stops every component, newest first (the real node, then kwok and controllers, then the
    /// apiserver, then etcd).
    pub fn stop(&self) {
        // The node's daemons and Pods first: the API server waits for its clients' requests
        // to end before it exits. Its link stays until the API server, which listens on it,
        // is gone.
        if let Some(node) = &self.node {
            node.stop_processes();
        }
        {
            let mut processes = self.processes.lock();
            while let Some(mut p) = processes.pop() {
                if p.name().starts_with("etcd")
                    && let Some(node) = &self.node
                {
                    node.release();
                }
                p.stop(Duration::from_secs(10));
            }
        }
        if let Some(node) = &self.node {
            node.release();
        }
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        self.stop();
    }
}

/// The file name of the super-admin kubeconfig in the run directory (kubeadm's).
pub const SUPER_ADMIN_KUBECONFIG: &str = "super-admin.conf";

/// Creates the `kubeadm:cluster-admins` ClusterRoleBinding (`cluster-admin` for the group of
/// the admin kubeconfig) as the super-admin, as `kubeadm init` does; one that exists (a kept run
/// directory) is left as it is.
async fn bind_cluster_admins(super_admin: &Client) -> Result<(), Error> {
    let binding: ClusterRoleBinding = serde_json::from_value(json!({
        "metadata": { "name": CLUSTER_ADMINS_GROUP },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "cluster-admin",
        },
        "subjects": [{
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "Group",
            "name": CLUSTER_ADMINS_GROUP,
        }],
    }))
    .map_err(|e| Error::Invalid(format!("ClusterRoleBinding: {e}")))?;
    match Api::<ClusterRoleBinding>::all(super_admin.clone())
        .create(&PostParams::default(), &binding)
        .await
    {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 409 => Ok(()),
        Err(e) => Err(Error::Kube(e)),
    }
}

/// How to reach etcd's client port: its endpoint and the files of etcd's CA and of a client
/// certificate etcd accepts (the API server's). The files are in the run directory, readable by
/// its owner only.
#[derive(Debug, Clone, serde::Serialize, serde::Deserialize)]
pub struct EtcdClient {
    /// `https://127.0.0.1:<port>`: the first member's.
    pub endpoint: String,
    /// Every member's (three in the HA mode).
    pub endpoints: Vec<String>,
    pub ca_file: PathBuf,
    pub cert_file: PathBuf,
    pub key_file: PathBuf,
}

impl EtcdClient {
    /// An HTTPS client of etcd's client port (its JSON gateway) with the client certificate.
    async fn client(&self) -> Result<Client, Error> {
        let read = |path: &Path| {
            std::fs::read_to_string(path).map_err(|source| Error::Io {
                context: format!("reading {}", path.display()),
                source,
            })
        };
        let (cert_pem, key_pem) = (read(&self.cert_file)?, read(&self.key_file)?);
        let kubeconfig = crate::kubeconfig::single(
            "etcd",
            &self.endpoint,
            crate::kubeconfig::Ca::File(&self.ca_file),
            crate::kubeconfig::Credentials::ClientCert {
                cert_pem: &cert_pem,
                key_pem: &key_pem,
            },
            None,
        );
        let mut config = Config::from_custom_kubeconfig(kubeconfig, &KubeConfigOptions::default())
            .await
            .map_err(Error::Kubeconfig)?;
        // When etcd's gateway cannot reach etcd's own gRPC server (e.g. a serving certificate
        // without client auth), a request took six minutes to fail; a test hears of it sooner.
        config.read_timeout = Some(ETCD_REQUEST_TIMEOUT);
        Client::try_from(config).map_err(Error::Kube)
    }
}

/// How long [`ControlPlane::etcd_request`] waits for etcd's answer.
const ETCD_REQUEST_TIMEOUT: Duration = Duration::from_secs(30);

pub(crate) fn node_ready(node: &NodeObject) -> bool {
    node.status
        .as_ref()
        .and_then(|s| s.conditions.as_ref())
        .is_some_and(|cs| cs.iter().any(|c| c.type_ == "Ready" && c.status == "True"))
}

pub(crate) fn http_get(path: &str) -> http::Request<Vec<u8>> {
    let mut req = http::Request::new(Vec::new());
    *req.uri_mut() = path.parse().unwrap_or_default();
    req
}

/// The status code of a plain-HTTP GET of `path` at `addr` (`host:port`), if it answers within
/// two seconds.
pub(crate) async fn http_status(addr: &str, path: &str) -> Option<u16> {
    crate::plain_http::get(addr, path)
        .await
        .ok()
        .map(|r| r.status)
}

/// A plain-HTTP GET on loopback answering 200 with etcd's healthy body (etcd's metrics port).
async fn http_get_ok(host: &str, port: u16, path: &str) -> bool {
    crate::plain_http::get(&format!("{host}:{port}"), path)
        .await
        .is_ok_and(|r| r.status == 200 && r.text().contains("\"health\":\"true\""))
}

/// `/healthz` of a component serving with a self-signed certificate on loopback.
pub(crate) async fn insecure_healthz(port: u16) -> bool {
    let Ok(uri) = format!("https://127.0.0.1:{port}").parse() else {
        return false;
    };
    let mut config = Config::new(uri);
    config.accept_invalid_certs = true;
    let Ok(client) = Client::try_from(config) else {
        return false;
    };
    client
        .request_text(http_get("/healthz"))
        .await
        .is_ok_and(|body| body.trim() == "ok")
}

/// Ports of one etcd member, on loopback.
struct EtcdPorts {
    client: u16,
    peer: u16,
    metrics: u16,
}

struct Ports {
    etcd: Vec<EtcdPorts>,
    /// Every API server's, each on its own address.
    apiserver: u16,
    /// The balancer's, on the address clients use (HA mode only).
    balancer: Option<u16>,
    controller_managers: Vec<u16>,
    schedulers: Vec<u16>,
    kwok: u16,
}

impl Ports {
    /// Distinct free ports, all held open until every one is chosen: one port free on every
    /// `apiserver_ips` address, the balancer's on `listen`, the others on loopback.
    fn pick(
        replicas: Replicas,
        apiserver_ips: &[Ipv4Addr],
        listen: Ipv4Addr,
    ) -> Result<Ports, Error> {
        let io = |source| Error::Io {
            context: "finding free ports".into(),
            source,
        };
        let mut held: Vec<std::net::TcpListener> = Vec::new();
        let mut free = |ips: &[Ipv4Addr]| -> Result<u16, Error> {
            // A port the first address gets from the kernel, if the others have it free too.
            for _ in 0..100 {
                let first = std::net::TcpListener::bind((ips[0], 0)).map_err(io)?;
                let port = first.local_addr().map_err(io)?.port();
                let rest: Result<Vec<_>, _> = ips[1..]
                    .iter()
                    .map(|ip| std::net::TcpListener::bind((*ip, port)))
                    .collect();
                if let Ok(rest) = rest {
                    held.push(first);
                    held.extend(rest);
                    return Ok(port);
                }
            }
            Err(io(std::io::Error::other(format!(
                "no port free on all of {ips:?}"
            ))))
        };
        let lo = [Ipv4Addr::LOCALHOST];
        let mut etcd = Vec::new();
        for _ in 0..replicas.etcd {
            etcd.push(EtcdPorts {
                client: free(&lo)?,
                peer: free(&lo)?,
                metrics: free(&lo)?,
            });
        }
        let apiserver = free(apiserver_ips)?;
        let balancer = if replicas.apiservers > 1 {
            Some(free(&[listen])?)
        } else {
            None
        };
        let controller_managers = (0..replicas.controllers)
            .map(|_| free(&lo))
            .collect::<Result<_, _>>()?;
        let schedulers = (0..replicas.controllers)
            .map(|_| free(&lo))
            .collect::<Result<_, _>>()?;
        let kwok = free(&lo)?;
        Ok(Ports {
            etcd,
            apiserver,
            balancer,
            controller_managers,
            schedulers,
            kwok,
        })
    }
}

/// HAProxy in front of the API servers, as kubeadm's HA guide runs it: plain TCP (TLS ends at
/// the API servers, so client certificates still reach them), each server checked on
/// `/readyz` over TLS against the cluster's CA every second and taken out after two failures;
/// a connection refused by a dead server is retried on the other. Tunnels (watches) may stay
/// open for an hour.
fn haproxy_config(apiservers: &[String], listen: Ipv4Addr, port: u16, ca: &Path) -> String {
    let mut config = format!(
        "global\n\
         \tmaxconn 4096\n\
         defaults\n\
         \tmode tcp\n\
         \ttimeout connect 2s\n\
         \ttimeout client 1h\n\
         \ttimeout server 1h\n\
         \ttimeout tunnel 1h\n\
         \tretries 3\n\
         \toption redispatch\n\
         frontend kube-apiserver\n\
         \tbind {listen}:{port}\n\
         \tdefault_backend kube-apiservers\n\
         backend kube-apiservers\n\
         \tbalance roundrobin\n\
         \toption httpchk GET /readyz\n\
         \thttp-check expect status 200\n\
         \tdefault-server inter 1s fall 2 rise 2 on-marked-down shutdown-sessions check \
         check-ssl verify required ca-file {ca}\n",
        ca = ca.display(),
    );
    for (i, url) in apiservers.iter().enumerate() {
        let address = url.trim_start_matches("https://");
        config.push_str(&format!("\tserver kube-apiserver-{i} {address}\n"));
    }
    config
}

/// HAProxy from the machine (Debian's `haproxy` package, in `/usr/sbin`).
fn which_haproxy() -> Result<PathBuf, Error> {
    let path = std::env::var_os("PATH").unwrap_or_default();
    std::env::split_paths(&path)
        .chain([PathBuf::from("/usr/sbin"), PathBuf::from("/sbin")])
        .map(|dir| dir.join("haproxy"))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            Error::Invalid(
                "the HA control plane needs HAProxy (the Debian package `haproxy`; `cargo xtask \
                 setup` installs it)"
                    .into(),
            )
        })
}

struct PkiFiles {
    ca_cert: PathBuf,
    ca_key: PathBuf,
    serving_cert: PathBuf,
    serving_key: PathBuf,
    sa_key: PathBuf,
    sa_pub: PathBuf,
    etcd: EtcdPkiFiles,
    node: Option<NodePkiFiles>,
}

struct EtcdPkiFiles {
    ca_cert: PathBuf,
    server_cert: PathBuf,
    server_key: PathBuf,
    peer_cert: PathBuf,
    peer_key: PathBuf,
    apiserver_client_cert: PathBuf,
    apiserver_client_key: PathBuf,
}

struct NodePkiFiles {
    apiserver_client_cert: PathBuf,
    apiserver_client_key: PathBuf,
    kubelet_cert: PathBuf,
    kubelet_key: PathBuf,
}

impl PkiFiles {
    fn write(run: &RunDir, pki: &Pki) -> Result<PkiFiles, Error> {
        Ok(PkiFiles {
            ca_cert: run.write("ca.crt", &pki.ca.cert_pem)?,
            ca_key: run.write("ca.key", &pki.ca.key_pem)?,
            serving_cert: run.write("apiserver.crt", &pki.serving.cert_pem)?,
            serving_key: run.write("apiserver.key", &pki.serving.key_pem)?,
            sa_key: run.write("service-account.key", &pki.service_account_key_pem)?,
            sa_pub: run.write("service-account.pub", &pki.service_account_public_pem)?,
            etcd: EtcdPkiFiles {
                ca_cert: run.write("etcd-ca.crt", &pki.etcd.ca_cert_pem)?,
                server_cert: run.write("etcd-server.crt", &pki.etcd.server.cert_pem)?,
                server_key: run.write("etcd-server.key", &pki.etcd.server.key_pem)?,
                peer_cert: run.write("etcd-peer.crt", &pki.etcd.peer.cert_pem)?,
                peer_key: run.write("etcd-peer.key", &pki.etcd.peer.key_pem)?,
                apiserver_client_cert: run.write(
                    "apiserver-etcd-client.crt",
                    &pki.etcd.apiserver_client.cert_pem,
                )?,
                apiserver_client_key: run.write(
                    "apiserver-etcd-client.key",
                    &pki.etcd.apiserver_client.key_pem,
                )?,
            },
            node: pki
                .node
                .as_ref()
                .map(|node| -> Result<NodePkiFiles, Error> {
                    Ok(NodePkiFiles {
                        apiserver_client_cert: run.write(
                            "apiserver-kubelet-client.crt",
                            &node.apiserver_kubelet_client.cert_pem,
                        )?,
                        apiserver_client_key: run.write(
                            "apiserver-kubelet-client.key",
                            &node.apiserver_kubelet_client.key_pem,
                        )?,
                        kubelet_cert: run.write("kubelet.crt", &node.kubelet_serving.cert_pem)?,
                        kubelet_key: run.write("kubelet.key", &node.kubelet_serving.key_pem)?,
                    })
                })
                .transpose()?,
        })
    }
}

/// A kubeconfig with the credentials inline.
fn kubeconfig(name: &str, server: &str, ca: &CertKey, user: &CertKey) -> String {
    let config = crate::kubeconfig::single(
        name,
        server,
        crate::kubeconfig::Ca::Pem(&ca.cert_pem),
        crate::kubeconfig::Credentials::ClientCert {
            cert_pem: &user.cert_pem,
            key_pem: &user.key_pem,
        },
        Some("default"),
    );
    crate::kubeconfig::to_text(&config).unwrap_or_default()
}

/// Last `lines` lines of a log file.
pub fn tail(path: &Path, lines: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
