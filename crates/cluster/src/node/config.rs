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

/// The host's cgroup version, which decides a few of kubelet's settings.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CgroupVersion {
    V1,
    V2,
}

/// containerd 1.6 (config version 2) with the CRI plugin set up for kubelet. runc's options are
/// the same on both cgroup versions: kubelet and runc drive cgroupfs directly (no systemd on
/// these machines), and runc finds the unified hierarchy by itself.
pub fn containerd(
    root: &Path,
    sandbox_image: &str,
    cni_conf_dir: &Path,
    certs_dir: &Path,
) -> String {
    // Paths as `display` writes them (`json!` would panic on one that isn't UTF-8).
    let path = |p: &Path| p.display().to_string();
    let config = json!({
        "version": 2,
        "root": path(root),
        "state": "/run/containerd",
        // Plugins this node has no use for (their probes only log errors).
        "disabled_plugins": [
            "io.containerd.snapshotter.v1.aufs",
            "io.containerd.snapshotter.v1.btrfs",
            "io.containerd.snapshotter.v1.devmapper",
            "io.containerd.snapshotter.v1.zfs",
            "io.containerd.tracing.processor.v1.otlp",
            "io.containerd.internal.v1.tracing",
        ],
        "grpc": { "address": CONTAINERD_SOCKET },
        "ttrpc": { "address": format!("{CONTAINERD_SOCKET}.ttrpc") },
        "plugins": {
            "io.containerd.internal.v1.opt": { "path": path(&root.join("opt")) },
            "io.containerd.grpc.v1.cri": {
                "sandbox_image": sandbox_image,
                // These machines withhold CAP_SYS_RESOURCE even from root: runc can't lower a
                // process's oom_score_adj below its parent's (the pause container asks for -998).
                "restrict_oom_score_adj": true,
                // containerd 2.0's defaults, which Kubernetes recommends: Pods bind ports below
                // 1024 and ping without capabilities.
                "enable_unprivileged_ports": true,
                "enable_unprivileged_icmp": true,
                "containerd": {
                    "snapshotter": "overlayfs",
                    "default_runtime_name": "runc",
                    "runtimes": { "runc": {
                        "runtime_type": "io.containerd.runc.v2",
                        "options": { "SystemdCgroup": false },
                    }},
                },
                "cni": { "bin_dir": "/usr/lib/cni", "conf_dir": path(cni_conf_dir) },
                "registry": { "config_path": path(certs_dir) },
            },
        },
    });
    toml(
        "Written by operon-envtest for one node; see docs/node.md.",
        &config,
    )
}

/// `hosts.toml` sending every pull for a registry host (or, as `_default/hosts.toml`, for any
/// host without its own) to the local registry, and nowhere else (`server` replaces the
/// upstream default).
pub fn registry_hosts(registry: &str) -> String {
    let url = format!("http://{registry}");
    let config = json!({
        "server": url,
        "host": { url.as_str(): { "capabilities": ["pull", "resolve"] } },
    });
    toml(
        "Written by operon-envtest: pulls are served by the cluster's local registry only.",
        &config,
    )
}

/// A TOML document of `value` (an object), `comment` on top. Objects become tables (headers only
/// where they hold keys), objects in arrays inline tables; `null`s are left out.
fn toml(comment: &str, value: &Value) -> String {
    let mut doc = toml_edit::DocumentMut::new();
    if let Some(toml_edit::Item::Table(table)) = toml_item(value) {
        *doc.as_table_mut() = table;
    }
    doc.decor_mut().set_prefix(format!("# {comment}\n"));
    doc.to_string()
}

fn toml_item(value: &Value) -> Option<toml_edit::Item> {
    match value {
        Value::Object(map) => {
            let mut table = toml_edit::Table::new();
            // Shown only if it holds keys: `[a.b]` without an empty `[a]` before it.
            table.set_implicit(true);
            for (key, value) in map {
                if let Some(item) = toml_item(value) {
                    table.insert(key, item);
                }
            }
            Some(toml_edit::Item::Table(table))
        }
        other => toml_value(other).map(toml_edit::Item::Value),
    }
}

fn toml_value(value: &Value) -> Option<toml_edit::Value> {
    Some(match value {
        Value::Null => return None,
        Value::Bool(b) => (*b).into(),
        Value::Number(n) => match n.as_i64() {
            Some(i) => i.into(),
            None => n.as_f64()?.into(),
        },
        Value::String(s) => s.as_str().into(),
        Value::Array(items) => {
            toml_edit::Value::Array(items.iter().filter_map(toml_value).collect())
        }
        Value::Object(map) => toml_edit::Value::InlineTable(
            map.iter()
                .filter_map(|(k, v)| Some((k.as_str(), toml_value(v)?)))
                .collect(),
        ),
    })
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
pub fn registry(addr: &str, storage: &Path) -> Result<String, crate::Error> {
    let config = json!({
        "version": "0.1",
        "log": { "level": "warn", "accesslog": { "disabled": true } },
        "storage": {
            "filesystem": { "rootdirectory": storage.display().to_string() },
            "delete": { "enabled": true },
        },
        "http": { "addr": addr },
    });
    let yaml = serde_saphyr::to_string(&config)
        .map_err(|e| crate::Error::Invalid(format!("the registry's configuration: {e}")))?;
    Ok(format!("# Written by operon-envtest.\n{yaml}"))
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
    cgroups: CgroupVersion,
    files: &KubeletFiles,
) -> Value {
    let mut config = json!({
        "apiVersion": "kubelet.config.k8s.io/v1beta1",
        "kind": "KubeletConfiguration",
        // cgroupfs on either version: kubelet finds the unified hierarchy by itself.
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
    });
    if cgroups == CgroupVersion::V1 {
        // These machines boot with cgroup v1, which kubelet 1.35+ refuses unless told
        // otherwise (KEP-5573). v1 still works; v2 is where Kubernetes is going.
        config["failCgroupV1"] = json!(false);
    }
    config
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

    fn files() -> KubeletFiles<'static> {
        KubeletFiles {
            ca: Path::new("/ca.crt"),
            serving_cert: Path::new("/k.crt"),
            serving_key: Path::new("/k.key"),
            resolv_conf: Path::new("/resolv.conf"),
        }
    }

    #[test]
    fn kubelet_is_secure_and_accepts_cgroup_v1() {
        let config = kubelet(
            Ipv4Addr::new(10, 200, 3, 2),
            "10.244.3.0/24",
            "operon-node-3",
            CgroupVersion::V1,
            &files(),
        );
        assert_eq!(config["authentication"]["anonymous"]["enabled"], false);
        assert_eq!(config["authorization"]["mode"], "Webhook");
        assert_eq!(config["failCgroupV1"], false);
        assert_eq!(config["cgroupDriver"], "cgroupfs");
        assert_eq!(config["readOnlyPort"], 0);
        assert_eq!(config["cgroupRoot"], "/operon-node-3");
        assert_eq!(config["address"], "10.200.3.2");
    }

    #[test]
    fn kubelet_on_cgroup_v2_keeps_its_defaults() {
        let config = kubelet(
            Ipv4Addr::new(10, 200, 3, 2),
            "10.244.3.0/24",
            "operon-node-3",
            CgroupVersion::V2,
            &files(),
        );
        assert!(config.get("failCgroupV1").is_none(), "{config}");
        assert_eq!(config["cgroupDriver"], "cgroupfs");
        assert_eq!(config["cgroupRoot"], "/operon-node-3");
    }

    fn parse_toml(text: &str) -> toml_edit::DocumentMut {
        match text.parse::<toml_edit::DocumentMut>() {
            Ok(doc) => doc,
            Err(e) => panic!("{e}\n{text}"),
        }
    }

    #[test]
    fn containerd_reads_back() {
        // A quote and a backslash in a path: escaping is the TOML writer's.
        let root = Path::new("/tmp/run \"x\\y\"/containerd");
        let text = containerd(
            root,
            "10.200.3.1:5000/pause:3.10",
            Path::new("/c/cni"),
            Path::new("/c/certs.d"),
        );
        let doc = parse_toml(&text);
        assert!(text.starts_with("# Written by operon-envtest"), "{text}");
        assert_eq!(doc["version"].as_integer(), Some(2), "{text}");
        assert_eq!(doc["root"].as_str(), root.to_str(), "{text}");
        assert_eq!(doc["state"].as_str(), Some("/run/containerd"));
        assert_eq!(doc["grpc"]["address"].as_str(), Some(CONTAINERD_SOCKET));
        assert_eq!(
            doc["ttrpc"]["address"].as_str(),
            Some("/run/containerd/containerd.sock.ttrpc")
        );
        assert_eq!(
            doc["disabled_plugins"].as_array().map(|a| a.len()),
            Some(6),
            "{text}"
        );
        let opt = &doc["plugins"]["io.containerd.internal.v1.opt"];
        assert_eq!(opt["path"].as_str(), root.join("opt").to_str());
        let cri = &doc["plugins"]["io.containerd.grpc.v1.cri"];
        assert_eq!(
            cri["sandbox_image"].as_str(),
            Some("10.200.3.1:5000/pause:3.10")
        );
        assert_eq!(cri["restrict_oom_score_adj"].as_bool(), Some(true));
        assert_eq!(cri["enable_unprivileged_ports"].as_bool(), Some(true));
        assert_eq!(cri["enable_unprivileged_icmp"].as_bool(), Some(true));
        assert_eq!(cri["containerd"]["snapshotter"].as_str(), Some("overlayfs"));
        assert_eq!(
            cri["containerd"]["default_runtime_name"].as_str(),
            Some("runc")
        );
        let runc = &cri["containerd"]["runtimes"]["runc"];
        assert_eq!(runc["runtime_type"].as_str(), Some("io.containerd.runc.v2"));
        assert_eq!(runc["options"]["SystemdCgroup"].as_bool(), Some(false));
        assert_eq!(cri["cni"]["bin_dir"].as_str(), Some("/usr/lib/cni"));
        assert_eq!(cri["cni"]["conf_dir"].as_str(), Some("/c/cni"));
        assert_eq!(cri["registry"]["config_path"].as_str(), Some("/c/certs.d"));
        // Only tables that hold keys get a header.
        assert!(!text.contains("[plugins]\n"), "{text}");
    }

    #[test]
    fn pulls_go_to_the_local_registry_only() {
        let hosts = registry_hosts("10.200.0.1:5000");
        let doc = parse_toml(&hosts);
        assert_eq!(
            doc["server"].as_str(),
            Some("http://10.200.0.1:5000"),
            "{hosts}"
        );
        let host = &doc["host"]["http://10.200.0.1:5000"];
        let capabilities: Vec<&str> = host["capabilities"]
            .as_array()
            .map(|a| a.iter().filter_map(|v| v.as_str()).collect())
            .unwrap_or_default();
        assert_eq!(capabilities, ["pull", "resolve"], "{hosts}");
        assert!(!hosts.contains("docker.io"), "{hosts}");
    }

    #[test]
    fn the_registry_configuration_reads_back() -> Result<(), crate::Error> {
        let text = registry(
            "10.200.3.1:5000",
            Path::new("/var/lib/operon/registry-3/storage"),
        )?;
        let doc: Value = serde_saphyr::from_str(&text)
            .map_err(|e| crate::Error::Invalid(format!("{e}\n{text}")))?;
        assert_eq!(doc["version"], "0.1", "{text}");
        assert_eq!(doc["http"]["addr"], "10.200.3.1:5000", "{text}");
        assert_eq!(
            doc["storage"]["filesystem"]["rootdirectory"],
            "/var/lib/operon/registry-3/storage"
        );
        assert_eq!(doc["storage"]["delete"]["enabled"], true);
        assert_eq!(doc["log"]["level"], "warn");
        assert_eq!(doc["log"]["accesslog"]["disabled"], true);
        Ok(())
    }
}
