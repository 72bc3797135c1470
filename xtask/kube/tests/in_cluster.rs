//! The operators as the microservices they are: deployed from their own images with
//! `cargo xtask deploy` (build, push to the cluster's registry, `kubectl apply -k
//! config/default` with the images by digest) onto a real node, reaching the API server
//! through the `kubernetes` Service.
//!
//! One deployment serves every test here (the first builds the release images: minutes),
//! monitoring-operator and its stack included (`monitoring`).

#[path = "in_cluster/helm.rs"]
mod helm;
#[path = "in_cluster/monitoring.rs"]
mod monitoring;
#[path = "in_cluster/redeploy.rs"]
mod redeploy;
#[path = "in_cluster/soak.rs"]
mod soak;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::Pod;
use kube::Api;
use kube::api::{DeleteParams, ListParams, LogParams};
use operon_cluster::node::guard::AllowedPods;
use operon_cluster::wait;
use operon_envtest::TestEnv;
use operon_moto::Moto;
use pod_operator::api::PodRequest;
use serde_json::json;
use tokio::sync::{OnceCell, RwLock};

const POD_OPERATOR_NS: &str = "pod-operator-system";
const CREDENTIALS_NS: &str = "credentials-operator-system";
const GREETING: &str = "Hello DevConf.CZ 2020!";

struct Deployed {
    env: &'static TestEnv,
    kubeconfig: PathBuf,
    moto: Moto,
}

static DEPLOYED: OnceCell<Result<Deployed, String>> = OnceCell::const_new();

/// The real node taking new Pods: tests that schedule Pods hold it shared; a test that
/// cordons the node, or restarts what others query, holds it alone.
static NODE: RwLock<()> = RwLock::const_new(());

/// Longest wait for [`NODE`]: a test holding it longer is stuck, and the wait says who waited.
const NODE_WAIT: Duration = Duration::from_secs(20 * 60);

/// [`NODE`], shared.
async fn node_shared(test: &str) -> Result<tokio::sync::RwLockReadGuard<'static, ()>> {
    let t0 = std::time::Instant::now();
    let guard = tokio::time::timeout(NODE_WAIT, NODE.read())
        .await
        .with_context(|| format!("{test}: the node stayed held by others for {NODE_WAIT:?}"))?;
    eprintln!("{test}: has the node, shared (waited {:.0?})", t0.elapsed());
    Ok(guard)
}

/// [`NODE`], alone.
async fn node_alone(test: &str) -> Result<tokio::sync::RwLockWriteGuard<'static, ()>> {
    let t0 = std::time::Instant::now();
    let guard = tokio::time::timeout(NODE_WAIT, NODE.write())
        .await
        .with_context(|| format!("{test}: the node stayed held by others for {NODE_WAIT:?}"))?;
    eprintln!("{test}: has the node alone (waited {:.0?})", t0.elapsed());
    Ok(guard)
}

fn repo_root() -> PathBuf {
    xtask::repo_root()
}

/// `kubectl <args>` as admin; stdout, or an error with the output.
fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = operon_cluster::apply::kubectl(kubeconfig)
        .args(args)
        .current_dir(repo_root())
        .output()?;
    ensure!(
        out.status.success(),
        "kubectl {args:?}: {}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// `cargo xtask deploy --kubeconfig <kubeconfig> <args>`.
fn xtask_deploy(kubeconfig: &Path, args: &[&str]) -> Result<()> {
    let status = Command::new(env!("CARGO_BIN_EXE_xtask-kube"))
        .args(["deploy", "--kubeconfig"])
        .arg(kubeconfig)
        .args(args)
        .status()?;
    ensure!(
        status.success(),
        "cargo xtask deploy {args:?} failed ({status})"
    );
    Ok(())
}

/// credentials-operator's Pods, as its generated Deployment selects them.
fn credentials_operator_pods() -> Result<AllowedPods> {
    let manager: serde_json::Value = serde_saphyr::from_str(&std::fs::read_to_string(
        repo_root().join("config/credentials-operator/manager/manager.yaml"),
    )?)?;
    let labels = manager["spec"]["selector"]["matchLabels"]
        .as_object()
        .context("no matchLabels")?;
    Ok(AllowedPods {
        namespace: CREDENTIALS_NS.into(),
        selector: labels
            .iter()
            .map(|(k, v)| format!("{k}={}", v.as_str().unwrap_or_default()))
            .collect::<Vec<_>>()
            .join(","),
    })
}

/// The shared cluster with a real node, the operators deployed from their images, and
/// credentials-operator pointed at moto (on the host) through a Service; moto's port is guarded
/// before the operator is deployed.
async fn deployed() -> Result<&'static Deployed> {
    DEPLOYED
        .get_or_init(|| async { deploy().await.map_err(|e| format!("{e:#}")) })
        .await
        .as_ref()
        .map_err(|e| anyhow::anyhow!("deploying the operators failed: {e}"))
}

async fn deploy() -> Result<Deployed> {
    let env = operon_envtest::shared_with_node().await?;
    let cp = env
        .control_plane()
        .context("needs the local control plane")?;
    let node = cp.node().context("no real node")?;
    let kubeconfig = cp.kubeconfig_path().to_path_buf();
    let client = env.client().await?;
    let moto = Moto::start_for_pods(
        operon_moto::find_server()?,
        &node.network(),
        env.config().await?,
        credentials_operator_pods()?,
    )
    .await?;
    operon_cluster::apply::apply(
        &client,
        &json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "aws-creds", "namespace": "kube-system" },
            "stringData": { "aws_access_key_id": "AKIAROOTROOTROOTROOT",
                            "aws_secret_access_key": "root-secret-for-the-emulator" },
        }),
        "in-cluster-test",
    )
    .await?;
    xtask_deploy(&kubeconfig, &["--monitoring"])?;
    let url = moto.expose(&client, CREDENTIALS_NS).await?;
    let deployment = "deployment/credentials-operator-controller-manager";
    kubectl(
        &kubeconfig,
        &[
            "set",
            "env",
            "-n",
            CREDENTIALS_NS,
            deployment,
            &format!("AWS_ENDPOINT_URL_IAM={url}"),
        ],
    )?;
    kubectl(
        &kubeconfig,
        &[
            "rollout",
            "status",
            "-n",
            CREDENTIALS_NS,
            deployment,
            "--timeout=120s",
        ],
    )?;
    Ok(Deployed {
        env,
        kubeconfig,
        moto,
    })
}

async fn pod_named(pods: &Api<Pod>, name: &str) -> Result<Pod, String> {
    pods.get_opt(name)
        .await
        .map_err(|e| e.to_string())?
        .ok_or_else(|| format!("no Pod {name}"))
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

#[tokio::test]
async fn the_talks_podrequest_runs_for_real() -> Result<()> {
    let d = deployed().await?;
    let _node = node_shared("the_talks_podrequest_runs_for_real").await?;
    let ns = d.env.namespace("talk").await?;
    let client = d.env.client().await?;
    // The talk's YAML, verbatim but for the namespace.
    let sample =
        std::fs::read_to_string(repo_root().join("config/pod-operator/samples/podrequest.yaml"))?;
    let mut request: serde_json::Value = serde_saphyr::from_str(&sample)?;
    request["metadata"]["namespace"] = json!(&*ns);
    operon_cluster::apply::apply(&client, &request, "kubectl").await?;

    let log = wait::until(
        "kubectl logs busybox shows the greeting",
        Duration::from_secs(60),
        || async {
            let log = kubectl(&d.kubeconfig, &["logs", "busybox", "-n", &ns])
                .map_err(|e| e.to_string())?;
            if log.contains(GREETING) {
                Ok(log)
            } else {
                Err(log)
            }
        },
    )
    .await?;
    ensure!(log.lines().all(|l| l == GREETING), "{log}");
    let out = kubectl(
        &d.kubeconfig,
        &["exec", "busybox", "-n", &ns, "--", "echo", "exec works"],
    )?;
    ensure!(out.trim() == "exec works", "{out}");

    // Deleted, the Pod comes back: a new Pod and a new container, not a relabelled one.
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let before = pods.get("busybox").await?;
    let (uid, container) = (before.metadata.uid.clone(), container_id(&before));
    ensure!(container.is_some(), "no container ID: {:?}", before.status);
    kubectl(
        &d.kubeconfig,
        &["delete", "pod", "busybox", "-n", &ns, "--grace-period=1"],
    )?;
    let after = wait::until(
        "a new busybox Pod running",
        Duration::from_secs(90),
        || async {
            let pod = pod_named(&pods, "busybox").await?;
            let id = container_id(&pod);
            if pod.metadata.uid != uid && id.is_some() && id != container {
                Ok(pod)
            } else {
                Err(format!("uid {:?} container {id:?}", pod.metadata.uid))
            }
        },
    )
    .await?;
    ensure!(
        after.spec.and_then(|s| s.node_name).as_deref() == Some(operon_cluster::node::NODE_NAME)
    );
    wait::until(
        "the new container greets",
        Duration::from_secs(60),
        || async {
            let log = pods
                .logs("busybox", &LogParams::default())
                .await
                .map_err(|e| e.to_string())?;
            if log.contains(GREETING) {
                Ok(())
            } else {
                Err(log)
            }
        },
    )
    .await?;
    Ok(())
}

/// The Lease pod-operator's replicas elect a leader with.
async fn leader(leases: &Api<Lease>) -> Result<String, String> {
    let list = leases
        .list(&ListParams::default())
        .await
        .map_err(|e| e.to_string())?;
    list.items
        .iter()
        .find_map(|l| l.spec.as_ref()?.holder_identity.clone())
        .filter(|h| !h.is_empty())
        .ok_or_else(|| format!("no holder in {} Leases", list.items.len()))
}

#[tokio::test]
async fn pod_operator_fails_over_between_its_replicas() -> Result<()> {
    let d = deployed().await?;
    let _node = node_shared("pod_operator_fails_over_between_its_replicas").await?;
    let client = d.env.client().await?;
    let operator_pods: Api<Pod> = Api::namespaced(client.clone(), POD_OPERATOR_NS);
    let leases: Api<Lease> = Api::namespaced(client.clone(), POD_OPERATOR_NS);
    let replicas = operator_pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=pod-operator"))
        .await?
        .items;
    ensure!(replicas.len() == 2, "{} replicas", replicas.len());
    for pod in &replicas {
        let spec = pod.spec.clone().unwrap_or_default();
        // In-cluster configuration: the ServiceAccount token and the `kubernetes` Service, no
        // host network and no kubeconfig.
        ensure!(spec.host_network != Some(true));
        ensure!(spec.service_account_name.as_deref() == Some("pod-operator-controller-manager"));
        let env = spec
            .containers
            .first()
            .and_then(|c| c.env.clone())
            .unwrap_or_default();
        ensure!(env.iter().all(|e| e.name != "KUBECONFIG"), "{env:?}");
        ensure!(spec.node_name.as_deref() == Some(operon_cluster::node::NODE_NAME));
    }
    let old_leader = wait::until("a leader", Duration::from_secs(60), || leader(&leases)).await?;
    ensure!(
        replicas
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(old_leader.as_str())),
        "the Lease holder {old_leader} is not a replica"
    );

    kubectl(
        &d.kubeconfig,
        &[
            "delete",
            "pod",
            &old_leader,
            "-n",
            POD_OPERATOR_NS,
            "--wait=false",
        ],
    )?;
    let new_leader = wait::until(
        "the other replica leads",
        Duration::from_secs(60),
        || async {
            let holder = leader(&leases).await?;
            if holder != old_leader {
                Ok(holder)
            } else {
                Err(format!("still {holder}"))
            }
        },
    )
    .await?;
    ensure!(
        replicas
            .iter()
            .any(|p| p.metadata.name.as_deref() == Some(new_leader.as_str())),
        "the new leader {new_leader} is not the other replica"
    );

    // A request created right after is served, once.
    let ns = d.env.namespace("failover").await?;
    let requests: Api<PodRequest> = Api::namespaced(client.clone(), &ns);
    let request: PodRequest = serde_json::from_value(json!({
        "apiVersion": "pod.jewzaam.org/v1alpha1", "kind": "PodRequest",
        "metadata": { "name": "after-failover" },
        "spec": { "name": "after-failover", "image": "busybox",
                  "command": ["sleep", "3600"] },
    }))?;
    requests.create(&Default::default(), &request).await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait::until(
        "the request's Pod running",
        Duration::from_secs(60),
        || async {
            let pod = pod_named(&pods, "after-failover").await?;
            match pod.status.and_then(|s| s.phase).as_deref() {
                Some("Running") => Ok(()),
                other => Err(format!("phase {other:?}")),
            }
        },
    )
    .await?;
    let all = pods.list(&ListParams::default()).await?.items;
    ensure!(
        all.len() == 1,
        "duplicate Pods: {:?}",
        all.iter()
            .map(|p| p.metadata.name.clone())
            .collect::<Vec<_>>()
    );
    // The deleted replica is replaced, and the Deployment is whole again.
    kubectl(
        &d.kubeconfig,
        &[
            "rollout",
            "status",
            "-n",
            POD_OPERATOR_NS,
            "deployment/pod-operator-controller-manager",
            "--timeout=120s",
        ],
    )?;
    Ok(())
}

#[tokio::test]
async fn service_ca_certificates_serve_https_that_clients_trust() -> Result<()> {
    let d = deployed().await?;
    let _node = node_shared("service_ca_certificates_serve_https_that_clients_trust").await?;
    let ns = d.env.namespace("https").await?;
    let client = d.env.client().await?;
    // The talk's Service and ConfigMap (slides 48-50), in the test's namespace.
    let sample = std::fs::read_to_string(
        repo_root().join("config/service-ca-operator/samples/devconf.yaml"),
    )?;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&sample)?;
    for mut doc in docs {
        doc["metadata"]["namespace"] = json!(&*ns);
        operon_cluster::apply::apply(&client, &doc, "kubectl").await?;
    }
    let node = d
        .env
        .control_plane()
        .and_then(|cp| cp.node())
        .context("no node")?;
    let openssl = operon_cluster::node::images::openssl()?;
    let image = openssl.references[0].clone();
    let archive = tokio::task::spawn_blocking(move || openssl.archive()).await??;
    d.env.push(&archive, &image).await?;
    let _ = node;

    let host = format!("devconf.{}.svc", &*ns);
    let server = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "devconf", "namespace": &*ns, "labels": { "app": "devconf" } },
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{
                "name": "https", "image": image,
                "args": ["s_server", "-accept", "8443", "-cert", "/certs/tls.crt",
                         "-key", "/certs/tls.key", "-www"],
                "readinessProbe": { "tcpSocket": { "port": 8443 }, "periodSeconds": 1 },
                "volumeMounts": [{ "name": "certs", "mountPath": "/certs", "readOnly": true }],
            }],
            "volumes": [{ "name": "certs", "secret": { "secretName": "devconf-service-certs" } }],
        },
    });
    operon_cluster::apply::apply(&client, &server, "kubectl").await?;

    // A client that trusts only what a ConfigMap holds: first the injected service CA bundle,
    // then another CA (the cluster's own, in kube-root-ca.crt).
    let client_pod = |name: &str, configmap: &str, key: &str| {
        json!({
            "apiVersion": "v1", "kind": "Pod",
            "metadata": { "name": name, "namespace": &*ns },
            "spec": {
                "restartPolicy": "Never",
                "containers": [{
                    "name": "client", "image": image,
                    "args": ["s_client", "-connect", format!("{host}:443"), "-servername", &host,
                             "-verify_hostname", &host, "-CAfile", format!("/ca/{key}"),
                             "-verify_return_error", "-brief"],
                    "stdin": false,
                    "volumeMounts": [{ "name": "ca", "mountPath": "/ca", "readOnly": true }],
                }],
                "volumes": [{ "name": "ca", "configMap": { "name": configmap } }],
            },
        })
    };
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    wait::until("the server ready", Duration::from_secs(90), || async {
        let pod = pod_named(&pods, "devconf").await?;
        let ready = pod
            .status
            .and_then(|s| s.conditions)
            .unwrap_or_default()
            .iter()
            .any(|c| c.type_ == "Ready" && c.status == "True");
        if ready {
            Ok(())
        } else {
            Err("not ready".into())
        }
    })
    .await?;
    // s_client reports the verified handshake on its own, then keeps the connection open for
    // input; whether it ever sees end of input depends on the runtime's stdin. So a client is
    // done when it reports a verified handshake, or when it exits (a failed one).
    let outcome = |name: &'static str| {
        let pods = pods.clone();
        async move {
            wait::until(&format!("{name} done"), Duration::from_secs(90), || async {
                let pod = pod_named(&pods, name).await?;
                let phase = pod.status.and_then(|s| s.phase);
                let log = match phase.as_deref() {
                    Some("Pending") | None => String::new(),
                    _ => pods
                        .logs(name, &LogParams::default())
                        .await
                        .map_err(|e| e.to_string())?,
                };
                match phase.as_deref() {
                    Some(p @ ("Succeeded" | "Failed")) => Ok((p.to_string(), log)),
                    _ if log.contains("Verification: OK") => Ok(("Running".to_string(), log)),
                    other => Err(format!("phase {other:?}, log {log:?}")),
                }
            })
            .await
        }
    };
    operon_cluster::apply::apply(
        &client,
        &client_pod("trusting", "devconf-service-cabundle", "service-ca.crt"),
        "kubectl",
    )
    .await?;
    let (phase, log) = outcome("trusting").await?;
    ensure!(
        phase != "Failed" && log.contains("Verification: OK"),
        "handshake with the service CA failed:\n{log}"
    );
    ensure!(log.contains(&format!("Verified peername: {host}")), "{log}");
    // s_server answers one connection at a time: the next client is served once this one's
    // connection is gone (a gracefully deleted Pod disappears once its container stopped).
    pods.delete("trusting", &DeleteParams::default().grace_period(1))
        .await?;
    wait::until("trusting gone", Duration::from_secs(60), || async {
        match pods.get_opt("trusting").await {
            Ok(None) => Ok(()),
            Ok(Some(_)) => Err("still there".to_string()),
            Err(e) => Err(e.to_string()),
        }
    })
    .await?;

    operon_cluster::apply::apply(
        &client,
        &client_pod("foreign", "kube-root-ca.crt", "ca.crt"),
        "kubectl",
    )
    .await?;
    let (phase, log) = outcome("foreign").await?;
    ensure!(
        phase == "Failed" && !log.contains("Verification: OK"),
        "a foreign CA must not verify the certificate:\n{log}"
    );
    ensure!(
        log.contains("verify error") || log.contains("certificate verify failed"),
        "{log}"
    );
    Ok(())
}

/// The talk's CredentialsRequest in `ns`, provisioned by the in-cluster operator through moto's
/// Service: the IAM user's name, found in moto.
async fn mint_through_moto(d: &Deployed, ns: &str) -> Result<String> {
    let client = d.env.client().await?;
    let sample = std::fs::read_to_string(
        repo_root().join("config/credentials-operator/samples/credentialsrequest.yaml"),
    )?;
    let mut request: serde_json::Value = serde_saphyr::from_str(&sample)?;
    request["metadata"]["namespace"] = json!(ns);
    request["spec"]["secretRef"]["namespace"] = json!(ns);
    operon_cluster::apply::apply(&client, &request, "kubectl").await?;
    let name = request["metadata"]["name"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    let user = wait::until(
        "the request provisioned",
        Duration::from_secs(90),
        || async {
            let out = kubectl(
                &d.kubeconfig,
                &[
                    "get",
                    "credentialsrequest",
                    &name,
                    "-n",
                    ns,
                    "-o",
                    "jsonpath={.status.provisioned} {.status.providerStatus.user}",
                ],
            )
            .map_err(|e| e.to_string())?;
            match out.split_once(' ') {
                Some(("true", user)) if !user.is_empty() => Ok(user.to_string()),
                _ => Err(out),
            }
        },
    )
    .await?;
    // The user exists in moto (on the host), which the operator only knows as
    // AWS_ENDPOINT_URL_IAM=http://moto.<ns>.svc.
    let iam = credentials_operator::iam::Iam::new(
        &credentials_operator::iam::load_sdk_config().await,
        &credentials_operator::iam::Endpoint {
            url: Some(d.moto.endpoint()),
            region: Some("us-east-1".into()),
        },
        "AKIAROOTROOTROOTROOT",
        "root-secret-for-the-emulator",
    );
    let users: Vec<String> = iam
        .sdk()
        .list_users()
        .send()
        .await?
        .users
        .into_iter()
        .map(|u| u.user_name)
        .collect();
    ensure!(
        users.contains(&user),
        "{user} not among moto's users {users:?}"
    );
    Ok(user)
}

#[tokio::test]
async fn credentials_operator_in_the_cluster_mints_through_a_service() -> Result<()> {
    let d = deployed().await?;
    let _node = node_shared("credentials_operator_in_the_cluster_mints_through_a_service").await?;
    let ns = d.env.namespace("creds").await?;
    mint_through_moto(d, &ns).await?;
    let secret = kubectl(
        &d.kubeconfig,
        &[
            "get",
            "secret",
            "secret-to-store-credentials",
            "-n",
            &ns,
            "-o",
            "jsonpath={.data.aws_access_key_id}",
        ],
    )?;
    ensure!(!secret.is_empty(), "no key in the Secret");
    let env = kubectl(
        &d.kubeconfig,
        &[
            "get",
            "deployment",
            "credentials-operator-controller-manager",
            "-n",
            CREDENTIALS_NS,
            "-o",
            "jsonpath={.spec.template.spec.containers[0].env[*].name} {.spec.template.spec.containers[0].args}",
        ],
    )?;
    ensure!(
        env.contains("AWS_ENDPOINT_URL_IAM") && !env.contains("--iam-endpoint"),
        "{env}"
    );
    Ok(())
}

/// `memory.limit_in_bytes` and `cpu.cfs_quota_us` of the container of `pod` on the node.
fn cgroup_limits(node_cgroup: &str, pod: &Pod) -> Result<(u64, i64)> {
    let uid = pod.metadata.uid.clone().unwrap_or_default();
    let qos = pod
        .status
        .as_ref()
        .and_then(|s| s.qos_class.clone())
        .unwrap_or_default()
        .to_lowercase();
    let container = container_id(pod).unwrap_or_default();
    let container = container.trim_start_matches("containerd://");
    let dir = |controller: &str| {
        let base = Path::new("/sys/fs/cgroup")
            .join(controller)
            .join(node_cgroup)
            .join("kubepods");
        let base = if qos == "guaranteed" {
            base
        } else {
            base.join(&qos)
        };
        base.join(format!("pod{uid}")).join(container)
    };
    let read = |path: PathBuf| -> Result<String> {
        Ok(std::fs::read_to_string(&path)
            .with_context(|| format!("reading {}", path.display()))?
            .trim()
            .to_string())
    };
    Ok((
        read(dir("memory").join("memory.limit_in_bytes"))?.parse()?,
        read(dir("cpu").join("cpu.cfs_quota_us"))?.parse()?,
    ))
}

#[tokio::test]
async fn the_generated_deployments_limits_are_enforced() -> Result<()> {
    let d = deployed().await?;
    let _node = node_shared("the_generated_deployments_limits_are_enforced").await?;
    let client = d.env.client().await?;
    let node = d
        .env
        .control_plane()
        .and_then(|cp| cp.node())
        .context("no node")?;
    // The limits as generated into config/.
    let manager: serde_json::Value = serde_saphyr::from_str(&std::fs::read_to_string(
        repo_root().join("config/pod-operator/manager/manager.yaml"),
    )?)?;
    let resources = manager["spec"]["template"]["spec"]["containers"][0]["resources"].clone();
    ensure!(
        resources["limits"]["memory"] == "256Mi" && resources["limits"]["cpu"] == "500m",
        "{resources}"
    );

    let operator = Api::<Pod>::namespaced(client.clone(), POD_OPERATOR_NS)
        .list(&ListParams::default().labels("app.kubernetes.io/name=pod-operator"))
        .await?
        .items
        .into_iter()
        .find(|p| container_id(p).is_some())
        .context("no running pod-operator replica")?;
    let (memory, cpu_quota) = cgroup_limits(node.cgroup(), &operator)?;
    ensure!(memory == 256 * 1024 * 1024, "memory limit {memory}");
    ensure!(
        cpu_quota == 50_000,
        "CPU quota {cpu_quota} (500m of a 100 ms period)"
    );

    // A container with the same resources that grows past them is OOM-killed and restarted.
    let ns = d.env.namespace("limits").await?;
    let pods: Api<Pod> = Api::namespaced(client.clone(), &ns);
    let hog = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": "hog", "namespace": &*ns },
        "spec": { "containers": [{ "name": "hog", "image": "busybox",
                                   "command": ["tail", "/dev/zero"], "resources": resources }] },
    });
    operon_cluster::apply::apply(&client, &hog, "kubectl").await?;
    wait::until(
        "the hog OOM-killed and restarted",
        Duration::from_secs(120),
        || async {
            let pod = pod_named(&pods, "hog").await?;
            let status = pod
                .status
                .and_then(|s| s.container_statuses)
                .unwrap_or_default();
            let c = status.first().ok_or("no status")?;
            let reason = c
                .last_state
                .as_ref()
                .and_then(|s| s.terminated.as_ref())
                .and_then(|t| t.reason.clone());
            match reason.as_deref() {
                Some("OOMKilled") if c.restart_count >= 1 => Ok(()),
                other => Err(format!(
                    "last termination {other:?}, restarts {}",
                    c.restart_count
                )),
            }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_user_with_the_edit_role_may_request_pods() -> Result<()> {
    let d = deployed().await?;
    let _node = node_shared("a_user_with_the_edit_role_may_request_pods").await?;
    let ns = d.env.namespace("edit").await?;
    let admin = d.env.client().await?;
    // The built-in `edit` role, bound in the namespace: config/'s aggregated roles add
    // PodRequests to it, and the admission policy lets a user who may create Pods request one.
    operon_cluster::apply::apply(&admin, &json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": "alice-edit", "namespace": &*ns },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "edit" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice" }],
    }), "in-cluster-test").await?;
    let alice = d
        .env
        .impersonating("alice", &["system:authenticated"])
        .await?;
    let request: PodRequest = serde_json::from_value(json!({
        "apiVersion": "pod.jewzaam.org/v1alpha1", "kind": "PodRequest",
        "metadata": { "name": "alices" },
        "spec": { "name": "alices", "image": "busybox", "command": ["sleep", "3600"] },
    }))?;
    let requests: Api<PodRequest> = Api::namespaced(alice, &ns);
    match requests.create(&Default::default(), &request).await {
        Ok(_) => Ok(()),
        Err(e) => bail!("a user with `edit` was refused a PodRequest: {e}"),
    }
}

/// The real node of the shared cluster.
fn real_node(d: &Deployed) -> Result<&operon_cluster::Node> {
    d.env
        .control_plane()
        .and_then(|cp| cp.node())
        .context("no real node")
}

/// Starts a Pod `name` in `ns` that sleeps, from `image`, with `labels`; running on return.
async fn probe_pod(
    d: &Deployed,
    ns: &str,
    name: &str,
    image: &str,
    labels: serde_json::Value,
) -> Result<()> {
    let client = d.env.client().await?;
    let pod = json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": { "name": name, "namespace": ns, "labels": labels },
        "spec": {
            "terminationGracePeriodSeconds": 1,
            "containers": [{ "name": "probe", "image": image, "command": ["sleep", "3600"] }],
        },
    });
    operon_cluster::apply::apply(&client, &pod, "kubectl").await?;
    let pods: Api<Pod> = Api::namespaced(client, ns);
    wait::until(
        &format!("Pod {name} running"),
        Duration::from_secs(90),
        || async {
            let pod = pod_named(&pods, name).await?;
            match pod.status.and_then(|s| s.phase).as_deref() {
                Some("Running") => Ok(()),
                other => Err(format!("phase {other:?}")),
            }
        },
    )
    .await?;
    Ok(())
}

/// What a Pod gets sending `request` to `host port` with busybox's `nc`: the answer, or nc's
/// error, then `exit=<status>`.
fn send_from_pod(d: &Deployed, ns: &str, pod: &str, target: &str, request: &str) -> Result<String> {
    let script = format!("printf '{request}' | nc -w 5 {target} 2>&1; echo exit=$?");
    kubectl(
        &d.kubeconfig,
        &["exec", pod, "-n", ns, "--", "sh", "-c", &script],
    )
}

/// Sends `request` from `pod` to each target until the connection is refused (a Service's
/// rules may take kube-proxy a moment); fails at once if anything answers.
async fn refused_everywhere(
    d: &Deployed,
    ns: &str,
    pod: &str,
    targets: &[String],
    request: &str,
) -> Result<()> {
    for target in targets {
        let out = wait::until(
            &format!("{target} refusing {pod}"),
            Duration::from_secs(30),
            || async {
                let out = send_from_pod(d, ns, pod, target, request).map_err(|e| e.to_string())?;
                if out.contains("HTTP/1.") || out.contains("Connection refused") {
                    Ok(out)
                } else {
                    Err(out)
                }
            },
        )
        .await?;
        ensure!(
            !out.contains("HTTP/1."),
            "Pod {ns}/{pod} reached {target}:\n{out}"
        );
    }
    Ok(())
}

/// A Service `name` in `ns` without a selector, type NodePort, in front of `ip:port` on the
/// host; its ClusterIP and node port.
async fn service_to_host(
    d: &Deployed,
    ns: &str,
    name: &str,
    ip: &str,
    port: u16,
) -> Result<(String, i32)> {
    let client = d.env.client().await?;
    let service = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name, "namespace": ns },
        "spec": { "type": "NodePort",
                  "ports": [{ "name": "http", "port": port, "protocol": "TCP" }] },
    });
    let slice = json!({
        "apiVersion": "discovery.k8s.io/v1", "kind": "EndpointSlice",
        "metadata": { "name": format!("{name}-host"), "namespace": ns,
                      "labels": { "kubernetes.io/service-name": name } },
        "addressType": "IPv4",
        "endpoints": [{ "addresses": [ip] }],
        "ports": [{ "name": "http", "port": port, "protocol": "TCP" }],
    });
    for object in [service, slice] {
        operon_cluster::apply::apply(&client, &object, "kubectl").await?;
    }
    let service = Api::<k8s_openapi::api::core::v1::Service>::namespaced(client, ns)
        .get(name)
        .await?;
    let spec = service.spec.context("no spec")?;
    let node_port = spec
        .ports
        .unwrap_or_default()
        .first()
        .and_then(|p| p.node_port)
        .context("no node port")?;
    Ok((spec.cluster_ip.context("no ClusterIP")?, node_port))
}

/// What pushing a blob starts with (the registry answers 202 Accepted).
const BLOB_UPLOAD: &str =
    "POST /v2/library/busybox/blobs/uploads/ HTTP/1.0\\r\\nContent-Length: 0\\r\\n\\r\\n";

#[tokio::test]
async fn pods_cannot_reach_the_registry_the_host_and_the_node_still_use() -> Result<()> {
    let d = deployed().await?;
    let _node =
        node_shared("pods_cannot_reach_the_registry_the_host_and_the_node_still_use").await?;
    let ns = d.env.namespace("registry").await?;
    let node = real_node(d)?;
    // The host pushes, after the guard is in place, and the node pulls what was pushed: the
    // probe Pod runs from it.
    let busybox = operon_cluster::node::images::busybox()?;
    let archive = tokio::task::spawn_blocking(move || busybox.archive()).await??;
    let image = "localhost/operon-test/after-the-guard:v1";
    d.env.push(&archive, image).await?;
    probe_pod(d, &ns, "intruder", image, json!({})).await?;

    // Directly; through a Service (DNAT to the registry: the guard sees the translated
    // address); through its node port (which kube-proxy marks and accepts in its own chain, so
    // the guard must come first).
    let (host, port) = node
        .registry()
        .split_once(':')
        .context("registry address")?;
    let (cluster_ip, node_port) = service_to_host(d, &ns, "registry", host, port.parse()?).await?;
    let targets = [
        format!("{host} {port}"),
        format!("{cluster_ip} {port}"),
        format!("registry.{}.svc {port}", &*ns),
        format!("{} {node_port}", node.node_ip()),
    ];
    refused_everywhere(d, &ns, "intruder", &targets, BLOB_UPLOAD).await?;

    // kube-proxy, synced many times by now, left the guard first in FORWARD.
    let forward = node.network().rules("FORWARD")?;
    ensure!(
        forward.lines().find(|l| l.starts_with("-A FORWARD"))
            == Some("-A FORWARD -j OPERON-NODE-GUARD"),
        "the guard isn't FORWARD's first rule:\n{forward}"
    );
    Ok(())
}

#[tokio::test]
async fn the_registry_runs_as_nobody_with_a_storage_of_its_own() -> Result<()> {
    use std::os::unix::fs::MetadataExt;
    let d = deployed().await?;
    let node = real_node(d)?;
    let pid = node
        .status()
        .into_iter()
        .find(|c| c.name == "registry")
        .and_then(|c| c.pid)
        .context("the registry doesn't run")?;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let ids = |field: &str| {
        status
            .lines()
            .find_map(|l| l.strip_prefix(field))
            .map(|v| v.split_whitespace().map(str::to_string).collect::<Vec<_>>())
            .unwrap_or_default()
    };
    ensure!(ids("Uid:") == ["65534"; 4], "{status}");
    ensure!(ids("Gid:") == ["65534"; 4], "{status}");
    ensure!(ids("Groups:").is_empty(), "{status}");
    // Its images: its own, private; its configuration: root's.
    let storage = std::fs::metadata(node.registry_dir().join("storage"))?;
    ensure!(storage.uid() == 65534 && storage.mode() & 0o777 == 0o700);
    let config = std::fs::metadata(node.registry_dir().join("config.yml"))?;
    ensure!(config.uid() == 0 && config.mode() & 0o022 == 0);
    // Not in the run directory, which stays root's and private.
    let run = std::fs::metadata(node.dir().parent().context("run dir")?)?;
    ensure!(run.uid() == 0 && run.mode() & 0o077 == 0);
    Ok(())
}

#[tokio::test]
async fn moto_is_reachable_from_credentials_operator_only() -> Result<()> {
    let d = deployed().await?;
    let _node = node_shared("moto_is_reachable_from_credentials_operator_only").await?;
    let ns = d.env.namespace("moto-guard").await?;
    let client = d.env.client().await?;
    let node = real_node(d)?;
    let guard = d.moto.guard().context("moto runs without a guard")?;
    let allowed = credentials_operator_pods()?;

    // The guard lets exactly the operator's Pods through.
    let operator_pods: Api<Pod> = Api::namespaced(client.clone(), CREDENTIALS_NS);
    wait::until(
        "the guard allowing the operator's Pods",
        Duration::from_secs(30),
        || async {
            let pods = operator_pods
                .list(&ListParams::default().labels(&allowed.selector))
                .await
                .map_err(|e| e.to_string())?;
            let ips: std::collections::BTreeSet<std::net::Ipv4Addr> = pods
                .items
                .iter()
                .filter(|p| p.metadata.deletion_timestamp.is_none())
                .filter_map(|p| p.status.as_ref()?.pod_ip.as_ref()?.parse().ok())
                .collect();
            let allowed = guard.allowed_ips();
            if !ips.is_empty() && ips == allowed {
                Ok(())
            } else {
                Err(format!("operator Pods {ips:?}, allowed {allowed:?}"))
            }
        },
    )
    .await?;
    let chain = node
        .network()
        .rules(&operon_cluster::node::guard::port_chain(d.moto.port()))?;
    for ip in guard.allowed_ips() {
        ensure!(chain.contains(&format!("-s {ip}/32 -j RETURN")), "{chain}");
    }

    // Another Pod, even one with the operator's labels (in its own namespace), is refused:
    // through moto's Service, as the operator reaches it, and at moto's address.
    let labels: serde_json::Map<String, serde_json::Value> = allowed
        .selector
        .split(',')
        .filter_map(|kv| kv.split_once('='))
        .map(|(k, v)| (k.to_string(), json!(v)))
        .collect();
    probe_pod(d, &ns, "intruder", "busybox", json!(labels)).await?;
    let url = format!("moto.{CREDENTIALS_NS}.svc");
    let targets = [
        format!("{url} 80"),
        format!("{} {}", node.host_ip(), d.moto.port()),
    ];
    let keys = "GET /moto-api/data.json HTTP/1.0\\r\\nHost: moto\\r\\n\\r\\n";
    refused_everywhere(d, &ns, "intruder", &targets, keys).await?;

    // The operator still gets through.
    mint_through_moto(d, &ns).await?;
    Ok(())
}
