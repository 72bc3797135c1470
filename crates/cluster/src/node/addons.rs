//! What a cluster with a real node installs besides its binaries: the API server's access to
//! kubelets, the cluster DNS (CoreDNS, as kubeadm deploys it) and the registry's announcement.

use serde_json::{Value, json};

use super::config::{CLUSTER_DOMAIN, DNS_SERVICE_IP};
use super::images::COREDNS;

/// The user of the API server's client certificate towards kubelets.
pub const APISERVER_KUBELET_CLIENT: &str = "kube-apiserver-kubelet-client";

/// Lets the API server use kubelets' API (logs, exec, port-forward, metrics): kubelets ask the
/// API server whether a caller may (webhook authorization), and RBAC answers from this binding
/// to the built-in `system:kubelet-api-admin` role.
pub fn apiserver_kubelet_access() -> Value {
    json!({
        "apiVersion": "rbac.authorization.k8s.io/v1",
        "kind": "ClusterRoleBinding",
        "metadata": { "name": "operon:kube-apiserver-kubelet-client" },
        "roleRef": {
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "ClusterRole",
            "name": "system:kubelet-api-admin",
        },
        "subjects": [{
            "apiGroup": "rbac.authorization.k8s.io",
            "kind": "User",
            "name": APISERVER_KUBELET_CLIENT,
        }],
    })
}

/// KEP-1755's announcement of a cluster's local registry (`kube-public/local-registry-hosting`),
/// read by tools that push images for this cluster (`operon deploy`, the tests).
pub fn local_registry_hosting(host: &str) -> Result<Value, crate::Error> {
    let hosting = serde_saphyr::to_string(&json!({
        "host": host,
        "help": "https://github.com/operon-dev/operon/blob/main/docs/node.md",
    }))
    .map_err(|e| crate::Error::Invalid(format!("localRegistryHosting.v1: {e}")))?;
    Ok(json!({
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": { "name": "local-registry-hosting", "namespace": "kube-public" },
        "data": { "localRegistryHosting.v1": hosting },
    }))
}

/// The Corefile: the cluster's names only, nothing forwarded (there is no upstream to ask).
pub fn corefile() -> String {
    format!(
        ".:53 {{\n    errors\n    health {{\n        lameduck 5s\n    }}\n    ready\n    \
         kubernetes {CLUSTER_DOMAIN} in-addr.arpa ip6.arpa {{\n        pods insecure\n        \
         fallthrough in-addr.arpa ip6.arpa\n        ttl 30\n    }}\n    prometheus :9153\n    \
         cache 30\n    reload\n    loadbalance\n}}\n"
    )
}

/// CoreDNS in `kube-system`, as kubeadm installs it: ServiceAccount, RBAC, Corefile,
/// Deployment and the `kube-dns` Service at the address kubelet gives Pods.
pub fn coredns() -> Vec<Value> {
    let labels = json!({ "k8s-app": "kube-dns" });
    vec![
        json!({
            "apiVersion": "v1",
            "kind": "ServiceAccount",
            "metadata": { "name": "coredns", "namespace": "kube-system" },
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRole",
            "metadata": { "name": "system:coredns" },
            "rules": [
                { "apiGroups": [""], "resources": ["endpoints", "services", "pods", "namespaces"],
                  "verbs": ["list", "watch"] },
                { "apiGroups": ["discovery.k8s.io"], "resources": ["endpointslices"],
                  "verbs": ["list", "watch"] },
            ],
        }),
        json!({
            "apiVersion": "rbac.authorization.k8s.io/v1",
            "kind": "ClusterRoleBinding",
            "metadata": { "name": "system:coredns" },
            "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole",
                         "name": "system:coredns" },
            "subjects": [{ "kind": "ServiceAccount", "name": "coredns",
                           "namespace": "kube-system" }],
        }),
        json!({
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": { "name": "coredns", "namespace": "kube-system" },
            "data": { "Corefile": corefile() },
        }),
        json!({
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": { "name": "coredns", "namespace": "kube-system", "labels": labels },
            "spec": {
                "replicas": 1,
                "selector": { "matchLabels": labels },
                "template": {
                    "metadata": { "labels": labels },
                    "spec": {
                        "serviceAccountName": "coredns",
                        "priorityClassName": "system-cluster-critical",
                        // Its own name lookups can't go through itself.
                        "dnsPolicy": "Default",
                        "containers": [{
                            "name": "coredns",
                            "image": COREDNS,
                            "args": ["-conf", "/etc/coredns/Corefile"],
                            "ports": [
                                { "name": "dns", "containerPort": 53, "protocol": "UDP" },
                                { "name": "dns-tcp", "containerPort": 53, "protocol": "TCP" },
                                { "name": "metrics", "containerPort": 9153, "protocol": "TCP" },
                            ],
                            "resources": {
                                "requests": { "cpu": "50m", "memory": "40Mi" },
                                "limits": { "memory": "170Mi" },
                            },
                            "readinessProbe": {
                                "httpGet": { "path": "/ready", "port": 8181 },
                                "periodSeconds": 2,
                            },
                            "livenessProbe": {
                                "httpGet": { "path": "/health", "port": 8080 },
                                "initialDelaySeconds": 30,
                                "periodSeconds": 10,
                            },
                            "securityContext": {
                                "allowPrivilegeEscalation": false,
                                "capabilities": { "drop": ["ALL"] },
                                "readOnlyRootFilesystem": true,
                                "runAsNonRoot": true,
                            },
                            "volumeMounts": [{ "name": "config", "mountPath": "/etc/coredns",
                                               "readOnly": true }],
                        }],
                        "volumes": [{ "name": "config", "configMap": {
                            "name": "coredns",
                            "items": [{ "key": "Corefile", "path": "Corefile" }],
                        }}],
                    },
                },
            },
        }),
        json!({
            "apiVersion": "v1",
            "kind": "Service",
            "metadata": { "name": "kube-dns", "namespace": "kube-system", "labels": labels },
            "spec": {
                "selector": labels,
                "clusterIP": DNS_SERVICE_IP,
                "ports": [
                    { "name": "dns", "port": 53, "protocol": "UDP", "targetPort": 53 },
                    { "name": "dns-tcp", "port": 53, "protocol": "TCP", "targetPort": 53 },
                    { "name": "metrics", "port": 9153, "protocol": "TCP", "targetPort": 9153 },
                ],
            },
        }),
    ]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_announced_registry_reads_back() -> Result<(), crate::Error> {
        let cm = local_registry_hosting("10.200.3.1:5000")?;
        let text = cm["data"]["localRegistryHosting.v1"]
            .as_str()
            .unwrap_or_default();
        let doc: Value =
            serde_saphyr::from_str(text).map_err(|e| crate::Error::Invalid(e.to_string()))?;
        assert_eq!(doc["host"], "10.200.3.1:5000", "{text}");
        assert!(
            doc["help"]
                .as_str()
                .is_some_and(|h| h.ends_with("docs/node.md")),
            "{text}"
        );
        assert_eq!(
            crate::node::announced_host(text).as_deref(),
            Some("10.200.3.1:5000")
        );
        // What the previous writer produced (quoted) still reads.
        assert_eq!(
            crate::node::announced_host("host: \"10.200.0.1:5000\"\nhelp: \"x\"\n").as_deref(),
            Some("10.200.0.1:5000")
        );
        assert_eq!(crate::node::announced_host("help: x\n"), None);
        Ok(())
    }
}
