//! The real node, shared by these tests: Pods run for real (logs and exec through the API
//! server and kubelet), Services and DNS work from Pods, the kernel enforces memory limits, and
//! kwok's fake Nodes stay for scale beside it.

use std::time::Duration;

use k8s_openapi::api::core::v1::{Node, Pod, Service};
use kube::Client;
use kube::api::{Api, LogParams, PostParams};
use operon_cluster::wait;
use operon_envtest::TestEnv;
use serde_json::json;

type Result<T = ()> = std::result::Result<T, Box<dyn std::error::Error + Send + Sync>>;

const GREETING: &str = "Hello DevConf.CZ 2020!";

async fn create_pod(client: &Client, ns: &str, pod: serde_json::Value) -> Result<Api<Pod>> {
    let pods: Api<Pod> = Api::namespaced(client.clone(), ns);
    pods.create(&PostParams::default(), &serde_json::from_value(pod)?)
        .await?;
    Ok(pods)
}

/// Runs kubectl with `args` in `ns`; its stdout, or an error with its output.
fn kubectl(env: &TestEnv, ns: &str, args: &[&str]) -> std::result::Result<String, String> {
    let out = env
        .kubectl()
        .arg("-n")
        .arg(ns)
        .args(args)
        .output()
        .map_err(|e| format!("running kubectl: {e}"))?;
    if out.status.success() {
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    } else {
        Err(format!(
            "kubectl {args:?}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        ))
    }
}

/// Waits until Pod `name` has finished and returns its log; fails unless it succeeded.
async fn log_of_completed(pods: &Api<Pod>, name: &str) -> Result<String> {
    let phase = wait::until(
        &format!("Pod {name} done"),
        Duration::from_secs(90),
        || async {
            let pod = pods.get(name).await.map_err(|e| e.to_string())?;
            match pod.status.and_then(|s| s.phase).as_deref() {
                Some(p @ ("Succeeded" | "Failed")) => Ok(p.to_string()),
                other => Err(format!("phase {other:?}")),
            }
        },
    )
    .await?;
    let log = pods.logs(name, &LogParams::default()).await?;
    if phase != "Succeeded" {
        return Err(format!("Pod {name} {phase}; its log:\n{log}").into());
    }
    Ok(log)
}

#[tokio::test]
async fn the_talks_pod_runs_logs_and_takes_exec() -> Result {
    let env = operon_envtest::shared_with_node().await?;
    let ns = env.namespace("talk").await?;
    let client = env.client().await?;
    let pods = create_pod(
        &client,
        &ns,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "busybox" },
            "spec": { "containers": [{
                "name": "busybox", "image": "busybox",
                "command": ["/bin/sh", "-ec",
                            format!("while :; do echo '{GREETING}'; sleep 5; done")],
            }]},
        }),
    )
    .await?;
    // The talk's check (slide 72), with kubectl: the container really prints.
    let log = wait::until(
        "the greeting in kubectl logs",
        Duration::from_secs(60),
        || async {
            let log = kubectl(env, &ns, &["logs", "busybox"])?;
            if log.contains(GREETING) {
                Ok(log)
            } else {
                Err(format!("log so far: {log:?}"))
            }
        },
    )
    .await?;
    assert!(log.lines().all(|l| l == GREETING), "{log}");

    let pod = pods.get("busybox").await?;
    let spec = pod.spec.clone().unwrap_or_default();
    assert_eq!(
        spec.node_name.as_deref(),
        Some(operon_cluster::node::NODE_NAME)
    );
    let status = pod.status.unwrap_or_default();
    let container = status.container_statuses.unwrap_or_default();
    let id = container.first().and_then(|c| c.container_id.clone());
    assert!(
        id.as_deref()
            .is_some_and(|id| id.starts_with("containerd://")),
        "{id:?}"
    );

    // exec runs in the container: its PID 1 is the talk's shell loop.
    let out = kubectl(
        env,
        &ns,
        &[
            "exec",
            "busybox",
            "--",
            "sh",
            "-c",
            "echo $((6*7)); cat /proc/1/cmdline",
        ],
    )?;
    assert!(out.starts_with("42\n"), "{out}");
    assert!(out.contains("while :; do echo"), "{out}");
    Ok(())
}

#[tokio::test]
async fn pods_reach_services_and_the_api_server_by_name() -> Result {
    let env = operon_envtest::shared_with_node().await?;
    let ns = env.namespace("network").await?;
    let client = env.client().await?;
    create_pod(
        &client,
        &ns,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "web", "labels": { "app": "web" } },
            "spec": {
                "terminationGracePeriodSeconds": 1,
                "containers": [{
                    "name": "web", "image": "busybox",
                    "command": ["sh", "-ec", "mkdir -p /tmp/www; echo \"served by $(hostname)\" > /tmp/www/index.html; exec httpd -f -p 8080 -h /tmp/www"],
                    "readinessProbe": { "tcpSocket": { "port": 8080 }, "periodSeconds": 1 },
                }],
            },
        }),
    )
    .await?;
    operon_cluster::apply::apply(
        &client,
        &json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": "web", "namespace": &*ns },
            "spec": { "selector": { "app": "web" },
                      "ports": [{ "port": 80, "targetPort": 8080 }] },
        }),
        "node-test",
    )
    .await?;
    // busybox's own resolver (nslookup) asks CoreDNS at the kube-dns ClusterIP; nc then goes
    // through kube-proxy's rules to the Pod, and to the API server behind `kubernetes`.
    let script = format!(
        "set -e
         resolve() {{ nslookup \"$1\" | awk '/^Address: /{{a=$2}} END{{print a}}'; }}
         api=$(resolve kubernetes.default.svc.cluster.local); echo \"kubernetes is $api\"
         web=$(resolve web.{ns}.svc.cluster.local); echo \"web is $web\"
         until printf 'GET / HTTP/1.0\\r\\n\\r\\n' | nc -w 3 \"$web\" 80 > /tmp/page; do sleep 1; done
         cat /tmp/page
         printf '' | nc -w 3 \"$api\" 443 && echo 'api server reachable'",
        ns = ns.name()
    );
    let pods = create_pod(
        &client,
        &ns,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "client" },
            "spec": { "restartPolicy": "Never",
                      "containers": [{ "name": "client", "image": "busybox",
                                       "command": ["sh", "-c", script] }] },
        }),
    )
    .await?;
    let log = log_of_completed(&pods, "client").await?;
    assert!(log.contains("kubernetes is 10.0.0.1"), "{log}");
    let web_ip = Api::<Service>::namespaced(client.clone(), &ns)
        .get("web")
        .await?
        .spec
        .and_then(|s| s.cluster_ip)
        .unwrap_or_default();
    assert!(log.contains(&format!("web is {web_ip}")), "{log}");
    assert!(
        log.contains("HTTP/1.") && log.contains("served by web"),
        "{log}"
    );
    assert!(log.contains("api server reachable"), "{log}");
    Ok(())
}

#[tokio::test]
async fn the_kernel_enforces_memory_limits() -> Result {
    let env = operon_envtest::shared_with_node().await?;
    let ns = env.namespace("oom").await?;
    let client = env.client().await?;
    // `tail` keeps the current line in memory, and /dev/zero never ends one.
    let pods = create_pod(
        &client,
        &ns,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "hog" },
            "spec": { "containers": [{
                "name": "hog", "image": "busybox", "command": ["tail", "/dev/zero"],
                "resources": { "limits": { "memory": "32Mi" }, "requests": { "memory": "32Mi" } },
            }]},
        }),
    )
    .await?;
    let (reason, restarts) = wait::until(
        "an OOM kill and a restart",
        Duration::from_secs(90),
        || async {
            let pod = pods.get("hog").await.map_err(|e| e.to_string())?;
            let status = pod
                .status
                .and_then(|s| s.container_statuses)
                .unwrap_or_default();
            let c = status.first().ok_or("no container status")?;
            let reason = c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.reason.clone());
            match reason {
                Some(r) if c.restart_count >= 1 => Ok((r, c.restart_count)),
                _ => Err(format!("{c:?}")),
            }
        },
    )
    .await?;
    assert_eq!(reason, "OOMKilled", "after {restarts} restarts");

    // The limit is the container's cgroup's, in the node's own cgroup tree.
    let cp = env.control_plane().ok_or("needs the local control plane")?;
    let node = cp.node().ok_or("no real node")?;
    let uid = pods.get("hog").await?.metadata.uid.unwrap_or_default();
    let kubepods = std::path::Path::new("/sys/fs/cgroup/memory")
        .join(node.cgroup())
        .join("kubepods");
    // Requests without CPU make the Pod Burstable. kubelet limits the Pod's cgroup (the
    // container's comes and goes with its restarts).
    let pod_dir = kubepods.join("burstable").join(format!("pod{uid}"));
    let limit = std::fs::read_to_string(pod_dir.join("memory.limit_in_bytes"))?;
    assert_eq!(
        limit.trim(),
        (32 * 1024 * 1024).to_string(),
        "{}",
        pod_dir.display()
    );
    Ok(())
}

#[tokio::test]
async fn kwok_nodes_stay_for_scale_beside_the_real_one() -> Result {
    let env = operon_envtest::shared_with_node().await?;
    let ns = env.namespace("kwok").await?;
    let client = env.client().await?;
    let nodes: Api<Node> = Api::all(client.clone());
    let kwok = nodes.get("kwok-node-0").await?;
    let taints = kwok.spec.and_then(|s| s.taints).unwrap_or_default();
    assert!(
        taints
            .iter()
            .any(|t| t.key == operon_cluster::KWOK_TAINT && t.effect == "NoSchedule"),
        "{taints:?}"
    );
    // Only Pods that tolerate the taint go there, and kwok runs them (on paper).
    let pods = create_pod(
        &client,
        &ns,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "fake" },
            "spec": {
                "nodeSelector": { "type": "kwok" },
                "tolerations": [{ "key": operon_cluster::KWOK_TAINT, "operator": "Exists" }],
                "containers": [{ "name": "fake", "image": "does-not-exist.example/fake" }],
            },
        }),
    )
    .await?;
    wait::until("the kwok Pod Running", Duration::from_secs(60), || async {
        let pod = pods.get("fake").await.map_err(|e| e.to_string())?;
        let node = pod.spec.and_then(|s| s.node_name);
        let phase = pod.status.and_then(|s| s.phase);
        match (node.as_deref(), phase.as_deref()) {
            (Some("kwok-node-0"), Some("Running")) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn every_registry_host_is_served_by_the_local_registry() -> Result {
    let env = operon_envtest::shared_with_node().await?;
    let ns = env.namespace("registry").await?;
    let client = env.client().await?;
    // An image "from" a registry on the internet: the node asks only its own registry.
    let image = "registry.example.com/tools/busybox:1";
    let busybox = tokio::task::spawn_blocking(|| {
        operon_cluster::node::images::busybox().and_then(|i| i.archive())
    })
    .await??;
    env.push(&busybox, image).await?;
    let pods = create_pod(
        &client,
        &ns,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "elsewhere" },
            "spec": { "restartPolicy": "Never",
                      "containers": [{ "name": "c", "image": image,
                                       "command": ["echo", "pulled locally"] }] },
        }),
    )
    .await?;
    let log = log_of_completed(&pods, "elsewhere").await?;
    assert_eq!(log.trim(), "pulled locally");
    // One that the registry lacks fails as not found there, at once, not after trying the
    // internet.
    let pods = create_pod(
        &client,
        &ns,
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": "missing" },
            "spec": { "containers": [{ "name": "c", "image": "quay.io/nobody/nothing:1" }] },
        }),
    )
    .await?;
    let message = wait::until("the pull refused", Duration::from_secs(60), || async {
        let pod = pods.get("missing").await.map_err(|e| e.to_string())?;
        let waiting = pod
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default()
            .first()
            .and_then(|c| c.state.as_ref()?.waiting.clone());
        match waiting {
            Some(w)
                if matches!(
                    w.reason.as_deref(),
                    Some("ErrImagePull" | "ImagePullBackOff")
                ) =>
            {
                Ok(w.message.unwrap_or_default())
            }
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    assert!(message.contains("not found"), "{message}");
    Ok(())
}
