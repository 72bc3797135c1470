//! The node's configuration files: containerd, CNI, the registry, kubelet and kube-proxy.
//!
//! Paths under `/var/lib`, `/var/log` and `/run` are inside the node's mount namespace (the
//! node's own directories); every other path is the host's.

use std::net::Ipv4Addr;
use std::path::Path;

use serde_json::{Value, json};

/// The node's name (one real node per cluster).
pub const NODE_NAME: &str = "operon-node";
/// The ClusterIP of the DNS Service (`kube-system/kube-dns`).
pub const DNS_SERVICE_IP: &str = "10.0.0.10";
pub const CLUSTER_DOMAIN: &str = "cluster.local";
/// The whole Pod network: real nodes' ranges and kwok's.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// containerd's socket, inside the node.
pub const CONTAINERD_SOCKET: &str = "/run/containerd/containerd.sock";
/// The port the registry listens on at the node's host address.
pub const REGISTRY_PORT: u16 = 5000;

/// containerd 1.6 (config version 2) with the CRI plugin set up for kubelet.
pub fn containerd(
    root: &Path,
    sandbox_image: &str,
    cni_conf_dir: &Path,
    certs_dir: &Path,
) -> String {
    let root = root.display();
    let cni_conf_dir = cni_conf_dir.display();
    let certs_dir = certs_dir.display();
    format!(
        r#"# Written by operon-envtest for one node; see docs/node.md.
version = 2
root = "{root}"
state = "/run/containerd"
# Plugins this node has no use for (their probes only log errors).
disabled_plugins = [
  "io.containerd.snapshotter.v1.aufs",
  "io.containerd.snapshotter.v1.btrfs",
  "io.containerd.snapshotter.v1.devmapper",
  "io.containerd.snapshotter.v1.zfs",
  "io.containerd.tracing.processor.v1.otlp",
  "io.containerd.internal.v1.tracing",
]

[grpc]
  address = "{CONTAINERD_SOCKET}"

[ttrpc]
  address = "{CONTAINERD_SOCKET}.ttrpc"

[plugins."io.containerd.internal.v1.opt"]
  path = "{root}/opt"

[plugins."io.containerd.grpc.v1.cri"]
  sandbox_image = "{sandbox_image}"
  # These machines withhold CAP_SYS_RESOURCE even from root: runc can't lower a process's
  # oom_score_adj below its parent's (the pause container asks for -998).
  restrict_oom_score_adj = true
  # containerd 2.0's defaults, which Kubernetes recommends: Pods bind ports below 1024 and ping
  # without capabilities.
  enable_unprivileged_ports = true
  enable_unprivileged_icmp = true
  [plugins."io.containerd.grpc.v1.cri".containerd]
    snapshotter = "overlayfs"
    default_runtime_name = "runc"
    [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc]
      runtime_type = "io.containerd.runc.v2"
      [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.runc.options]
        # kubelet drives cgroupfs directly (no systemd on these machines).
        SystemdCgroup = false
  [plugins."io.containerd.grpc.v1.cri".cni]
    bin_dir = "/usr/lib/cni"
    conf_dir = "{cni_conf_dir}"
  [plugins."io.containerd.grpc.v1.cri".registry]
    config_path = "{certs_dir}"
"#
    )
}

/// `hosts.toml` sending every pull for a registry host (or, as `_default/hosts.toml`, for any
/// host without its own) to the local registry, and nowhere else (`server` replaces the
/// upstream default).
pub fn registry_hosts(registry: &str) -> String {
    format!(
        "# Written by operon-envtest: pulls are served by the cluster's local registry only.\n\
         server = \"http://{registry}\"\n\n\
         [host.\"http://{registry}\"]\n  capabilities = [\"pull\", \"resolve\"]\n"
    )
}

/// The Pod network: a bridge with host-local addresses from the node's range (state kept in
/// the node's `/var/lib/cni`), masquerading to the outside, hairpin for a Pod reaching itself
/// through a Service, and host ports.
pub fn cni(pod_cidr: &str) -> String {
    let config = json!({
        "cniVersion": "0.4.0",
        "name": "operon",
        "plugins": [
            {
                "type": "bridge",
                "bridge": "cni0",
                "isGateway": true,
                "ipMasq": true,
                "hairpinMode": true,
                "ipam": {
                    "type": "host-local",
                    "ranges": [[{ "subnet": pod_cidr }]],
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "dataDir": "/var/lib/cni/networks",
                },
            },
            { "type": "portmap", "capabilities": { "portMappings": true } },
        ],
    });
    serde_json::to_string_pretty(&config).unwrap_or_default()
}

/// The CNCF distribution registry, plain HTTP on the node's host address.
pub fn registry(addr: &str, storage: &Path) -> String {
    format!(
        "# Written by operon-envtest.\n\
         version: 0.1\n\
         log:\n  level: warn\n  accesslog:\n    disabled: true\n\
         storage:\n  filesystem:\n    rootdirectory: {}\n  delete:\n    enabled: true\n\
         http:\n  addr: {addr}\n",
        storage.display()
    )
}

/// Files kubelet's configuration refers to.
pub struct KubeletFiles<'a> {
    pub ca: &'a Path,
    pub serving_cert: &'a Path,
    pub serving_key: &'a Path,
    pub resolv_conf: &'a Path,
}

/// `KubeletConfiguration`, secure as a real node's: no anonymous access, authentication by
/// client certificate or token (TokenReview), authorization by the API server
/// (SubjectAccessReview), a serving certificate signed by the cluster CA.
pub fn kubelet(
    node_ip: Ipv4Addr,
    pod_cidr: &str,
    cgroup_root: &str,
    files: &KubeletFiles,
) -> Value {
    json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        // These machines boot with cgroup v1, which kubelet 1.35+ refuses unless told
        // otherwise (KEP-5573). v1 still works; v2 is where Kubernetes is going.
        "failCgroupV1": false,
        "cgroupDriver": "cgroupfs",
        // Everything the node runs lives under its own cgroup, removed with it.
        "cgroupRoot": format!("/{cgroup_root}"),
        "containerRuntimeEndpoint": format!("unix://{CONTAINERD_SOCKET}"),
        "address": node_ip.to_string(),
        "port": 10250,
        "readOnlyPort": 0,
        "healthzBindAddress": "127.0.0.1",
        "healthzPort": 10248,
        "authentication": {
            "anonymous": { "enabled": false },
            "webhook": { "enabled": true },
            "x509": { "clientCAFile": files.ca },
        },
        "authorization": { "mode": "Webhook" },
        "tlsCertFile": files.serving_cert,
        "tlsPrivateKeyFile": files.serving_key,
        "rotateCertificates": false,
        "serverTLSBootstrap": false,
        "podCIDR": pod_cidr,
        "clusterDNS": [DNS_SERVICE_IP],
        "clusterDomain": CLUSTER_DOMAIN,
        "resolvConf": files.resolv_conf,
        "failSwapOn": false,
        // The disk is shared with everything else on the machine: percentages of it say
        // nothing about this node, so evict only when it is really full.
        "evictionHard": {
            "memory.available": "100Mi",
            "nodefs.available": "1%",
            "nodefs.inodesFree": "1%",
            "imagefs.available": "1%",
        },
        "imageGCHighThresholdPercent": 100,
        "imageGCLowThresholdPercent": 99,
        "serializeImagePulls": false,
        "maxPods": 110,
    })
}

/// `KubeProxyConfiguration`: iptables, touching nothing outside the node's network namespace
/// (conntrack table size and timeouts are left as they are; NodePorts don't answer on
/// localhost, which would need `route_localnet`).
pub fn kube_proxy(kubeconfig: &Path) -> Value {
    json!({
        "apiVersion": "kubeproxy.config.k8s.io/v1alpha1",
        "kind": "KubeProxyConfiguration",
        "clientConnection": { "kubeconfig": kubeconfig },
        "mode": "iptables",
        "clusterCIDR": CLUSTER_CIDR,
        "hostnameOverride": NODE_NAME,
        "healthzBindAddress": "127.0.0.1:10256",
        "metricsBindAddress": "127.0.0.1:10249",
        "conntrack": {
            "maxPerCore": 0,
            "min": 0,
            "tcpEstablishedTimeout": "0s",
            "tcpCloseWaitTimeout": "0s",
        },
        "iptables": { "localhostNodePorts": false },
    })
}

/// The node's `/etc/resolv.conf` for Pods with `dnsPolicy: Default` (the cluster's DNS: there
/// is no other name server a Pod here could reach).
pub fn resolv_conf() -> String {
    format!("nameserver {DNS_SERVICE_IP}\nsearch svc.{CLUSTER_DOMAIN} {CLUSTER_DOMAIN}\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubelet_is_secure_and_accepts_cgroup_v1() {
        let files = KubeletFiles {
            ca: Path::new("/ca.crt"),
            serving_cert: Path::new("/k.crt"),
            serving_key: Path::new("/k.key"),
            resolv_conf: Path::new("/resolv.conf"),
        };
        let config = kubelet(
            Ipv4Addr::new(10, 200, 3, 2),
            "10.244.3.0/24",
            "operon-node-3",
            &files,
        );
        assert_eq!(config["authentication"]["anonymous"]["enabled"], false);
        assert_eq!(config["authorization"]["mode"], "Webhook");
        assert_eq!(config["failCgroupV1"], false);
        assert_eq!(config["readOnlyPort"], 0);
        assert_eq!(config["cgroupRoot"], "/operon-node-3");
        assert_eq!(config["address"], "10.200.3.2");
    }

    #[test]
    fn pulls_go_to_the_local_registry_only() {
        let hosts = registry_hosts("10.200.0.1:5000");
        assert!(
            hosts.contains("server = \"http://10.200.0.1:5000\""),
            "{hosts}"
        );
        assert!(!hosts.contains("docker.io"), "{hosts}");
    }
}
