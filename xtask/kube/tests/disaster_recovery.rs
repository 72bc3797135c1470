//! The disaster-recovery drill (docs/disaster-recovery.md), on a control plane of this test's
//! own with a real node: the three operators serve PodRequests (Pods running on the node),
//! serving-certificate Services with an injected CA bundle, and CredentialsRequests against
//! moto's IAM; an etcd snapshot is taken while they run; a PodRequest and a CredentialsRequest
//! are added after it; the operators stop, the control plane is destroyed and restored from the
//! snapshot while the node keeps running, and the operators start again. Then, object by
//! object:
//!
//! - each PodRequest of the snapshot has exactly one Pod, the same one (UID), whose container
//!   kept running on the node (same container ID, same process); the PodRequest written after
//!   the snapshot is gone, and so are its Pod and its container; no other Pod exists;
//! - the node's kubelet, which never stopped, renews its Lease through the new control plane and
//!   the Node is Ready;
//! - each serving Secret is the one of the snapshot (same certificate serial and
//!   resourceVersion: nothing re-issued) and a TLS client trusting the injected bundle accepts
//!   it for its Service's name;
//! - each CredentialsRequest of the snapshot maps to exactly one IAM user, the same, with the
//!   same access key; the one written after the snapshot minted a user that no request names any
//!   more: the leak docs/disaster-recovery.md warns of, found by its tag and removed as the doc
//!   says, after which IAM holds exactly the requests' users.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use credentials_operator::api::CredentialsRequest;
use credentials_operator::iam::{Endpoint, Iam};
use k8s_openapi::api::coordination::v1::Lease;
use k8s_openapi::api::core::v1::{ConfigMap, Node, Pod, Secret, Service};
use k8s_openapi::jiff::Timestamp;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use operon_cluster::{ControlPlane, wait};
use operon_envtest::TestEnv;
use operon_envtest::tls::{handshake, parse_leaf};
use operon_harness::InProcess;
use operon_moto::Moto;
use operon_runtime::admin::Readiness;
use operon_runtime::conditions;
use operon_runtime::manager::Manager;
use operon_runtime::metrics::{ControllerMetrics, Metrics};
use pod_operator::api::{PodRequest, PodRequestSpec};
use serde_json::json;
use service_ca_operator::{
    INJECT_CABUNDLE, INJECTED_CA_BUNDLE_KEY, SERVING_CERT_SECRET_NAME, TLS_CERT_KEY, TLS_KEY_KEY,
};

const MANAGER: &str = "disaster-recovery-test";
const CLUSTER_ID: &str = "operon-dr";
const ROOT_KEY_ID: &str = "AKIAROOTROOTROOTROOT";
const ROOT_SECRET: &str = "rootSecretAccessKey0123456789abcdefABCDEF";
/// How long the operators may take to converge, and the node to catch up after the restore.
const CONVERGE: Duration = Duration::from_secs(180);

const REQUESTS: [&str; 3] = ["drill-0", "drill-1", "drill-2"];
const SERVICES: [&str; 2] = ["web-0", "web-1"];
const CREDENTIALS: [&str; 2] = ["creds-0", "creds-1"];
/// Written after the snapshot: lost in the restore.
const LATE: &str = "late";

fn secret_name(service: &str) -> String {
    format!("{service}-tls")
}

fn text(secret: &Secret, key: &str) -> Result<String> {
    Ok(operon_envtest::secret_text(secret, key)?)
}

/// The three operators, in this process, each as its own ServiceAccount.
struct Operators {
    pods: InProcess<Arc<ControllerMetrics>>,
    service_ca: InProcess<(Arc<Metrics>, Readiness)>,
    credentials: InProcess<Arc<ControllerMetrics>>,
}

struct Drill {
    env: TestEnv,
    ns: String,
    signer_ns: String,
    moto: Moto,
}

impl Drill {
    fn cp(&self) -> Result<&ControlPlane> {
        self.env
            .control_plane()
            .context("the drill runs on a control plane of its own")
    }

    async fn client(&self) -> Result<Client> {
        Ok(self.env.client().await?)
    }

    fn endpoint(&self) -> Endpoint {
        Endpoint {
            url: Some(self.moto.endpoint()),
            region: Some("us-east-1".into()),
        }
    }

    async fn iam(&self) -> Iam {
        let sdk = credentials_operator::iam::load_sdk_config().await;
        Iam::new(&sdk, &self.endpoint(), ROOT_KEY_ID, ROOT_SECRET)
    }

    async fn start_operators(&self) -> Result<Operators> {
        let ns = self.ns.clone();
        let manifests = pod_operator::deploy::manifests("test")?;
        let roles = manifests.user_roles().into_iter().map(|(_, r)| r).collect();
        let registry = Metrics::new();
        let metrics = registry.controller("podrequest");
        let pods = InProcess::start(&self.env, &manifests, roles, metrics, |client, stop| {
            let mut manager = Manager::new(pod_operator::controller::MANAGER, client)
                .namespaces([ns])
                .instance(Some("drill".into()))
                .metrics(registry)
                .stop(stop);
            pod_operator::controller::register(
                &mut manager,
                &pod_operator::controller::Settings::default(),
            );
            manager.run()
        })
        .await?;

        let ns = self.ns.clone();
        let manifests = service_ca_operator::deploy::manifests("test")?;
        // Its namespace Role, where this drill's CA lives.
        let mut signer_rbac: Vec<serde_json::Value> =
            manifests.namespace_role().into_iter().collect();
        signer_rbac.extend(manifests.namespace_role_binding());
        for object in &mut signer_rbac {
            object["metadata"]["namespace"] = json!(self.signer_ns);
        }
        let settings = service_ca_operator::controller::Settings {
            namespace: self.signer_ns.clone(),
            inject_cluster_scoped: false,
            ..Default::default()
        };
        let (registry, readiness) = (Metrics::new(), Readiness::new());
        readiness.set_not_ready("starting");
        let observed = (registry.clone(), readiness.clone());
        let service_ca = InProcess::start(
            &self.env,
            &manifests,
            signer_rbac,
            observed,
            |client, stop| async move {
                let mut manager = Manager::new(service_ca_operator::controller::MANAGER, client)
                    .namespaces([ns])
                    .instance(Some("drill".into()))
                    .metrics(registry)
                    .readiness(readiness)
                    .stop(stop);
                service_ca_operator::controller::register(&mut manager, &settings)?;
                manager.run().await;
                Ok::<_, service_ca_operator::controller::Error>(())
            },
        )
        .await?;

        let ns = self.ns.clone();
        let manifests = credentials_operator::deploy::manifests("test")?;
        let settings = credentials_operator::controller::Settings {
            root_secret_namespace: self.ns.clone(),
            root_secret_name: "aws-creds".into(),
            cluster_id: CLUSTER_ID.into(),
            endpoint: self.endpoint(),
            ..Default::default()
        };
        let sdk = credentials_operator::iam::load_sdk_config().await;
        let registry = Metrics::new();
        let metrics = registry.controller(credentials_operator::controller::CONTROLLER);
        let credentials = InProcess::start(
            &self.env,
            &manifests,
            Vec::new(),
            metrics,
            |client, stop| {
                let mut manager = Manager::new(credentials_operator::controller::MANAGER, client)
                    .namespaces([ns])
                    .instance(Some("drill".into()))
                    .metrics(registry)
                    .stop(stop);
                credentials_operator::controller::register(&mut manager, &settings, &sdk);
                manager.run()
            },
        )
        .await?;
        Ok(Operators {
            pods,
            service_ca,
            credentials,
        })
    }

    async fn create_request(&self, name: &str) -> Result<()> {
        let mut pr = PodRequest::new(
            name,
            PodRequestSpec {
                name: "sleeper".into(),
                image: "busybox".into(),
                // PID 1 of a container ignores SIGTERM unless it says otherwise: this one ends
                // at once when the kubelet stops it.
                command: vec![
                    "sh".into(),
                    "-c".into(),
                    "trap 'exit 0' TERM; sleep 3600 & wait".into(),
                ],
            },
        );
        pr.metadata.namespace = Some(self.ns.clone());
        Api::<PodRequest>::namespaced(self.client().await?, &self.ns)
            .create(&PostParams::default(), &pr)
            .await?;
        Ok(())
    }

    async fn create_credentials(&self, name: &str) -> Result<()> {
        let mut cr: CredentialsRequest =
            serde_saphyr::from_str(credentials_operator::deploy::SAMPLE).context("the sample")?;
        cr.metadata.name = Some(name.into());
        cr.metadata.namespace = Some(self.ns.clone());
        cr.spec.secret_ref.name = format!("{name}-secret");
        cr.spec.secret_ref.namespace = self.ns.clone();
        Api::<CredentialsRequest>::namespaced(self.client().await?, &self.ns)
            .create(&PostParams::default(), &cr)
            .await?;
        Ok(())
    }

    /// The workloads of the snapshot, created.
    async fn create_workloads(&self) -> Result<()> {
        let client = self.client().await?;
        for name in REQUESTS {
            self.create_request(name).await?;
        }
        let services: Api<Service> = Api::namespaced(client.clone(), &self.ns);
        for name in SERVICES {
            let svc: Service = serde_json::from_value(json!({
                "metadata": {
                    "name": name,
                    "annotations": { SERVING_CERT_SECRET_NAME: secret_name(name) },
                },
                "spec": { "ports": [{ "port": 443, "targetPort": 8443 }] },
            }))?;
            services.create(&PostParams::default(), &svc).await?;
        }
        let bundle: ConfigMap = serde_json::from_value(json!({
            "metadata": { "name": "bundle", "annotations": { INJECT_CABUNDLE: "true" } },
        }))?;
        Api::<ConfigMap>::namespaced(client, &self.ns)
            .create(&PostParams::default(), &bundle)
            .await?;
        for name in CREDENTIALS {
            self.create_credentials(name).await?;
        }
        Ok(())
    }

    /// Waits until PodRequest `name` is Ready with its Pod running on the real node; the Pod.
    async fn wait_running(&self, name: &str) -> Result<Pod> {
        let client = self.client().await?;
        let (requests, pods) = (
            Api::<PodRequest>::namespaced(client.clone(), &self.ns),
            Api::<Pod>::namespaced(client, &self.ns),
        );
        Ok(wait::until(
            &format!("PodRequest {name} Ready, its Pod running"),
            CONVERGE,
            || async {
                let pr = requests.get(name).await.map_err(|e| e.to_string())?;
                let status = pr.status.unwrap_or_default();
                if !conditions::is_true(&status.conditions, "Ready") {
                    return Err(format!("not Ready: {:?}", status.conditions));
                }
                let pod = pods.get(name).await.map_err(|e| e.to_string())?;
                container_id(&pod)
                    .map(|_| pod)
                    .ok_or_else(|| "no running container".into())
            },
        )
        .await?)
    }

    /// Waits until every workload of the snapshot has converged.
    async fn wait_converged(&self) -> Result<()> {
        for name in REQUESTS {
            self.wait_running(name).await?;
        }
        let client = self.client().await?;
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.ns);
        for service in SERVICES {
            let name = secret_name(service);
            wait::until(&format!("Secret {name} issued"), CONVERGE, || async {
                let secret = secrets.get_opt(&name).await.map_err(|e| e.to_string())?;
                let data = secret.and_then(|s| s.data).unwrap_or_default();
                match data.contains_key(TLS_CERT_KEY) && data.contains_key(TLS_KEY_KEY) {
                    true => Ok(()),
                    false => Err(format!("keys {:?}", data.keys().collect::<Vec<_>>())),
                }
            })
            .await?;
        }
        let configmaps: Api<ConfigMap> = Api::namespaced(client, &self.ns);
        wait::until("the CA bundle injected", CONVERGE, || async {
            let cm = configmaps.get("bundle").await.map_err(|e| e.to_string())?;
            match cm
                .data
                .unwrap_or_default()
                .contains_key(INJECTED_CA_BUNDLE_KEY)
            {
                true => Ok(()),
                false => Err("not injected".to_string()),
            }
        })
        .await?;
        for name in CREDENTIALS {
            self.wait_provisioned(name).await?;
        }
        Ok(())
    }

    /// Waits until CredentialsRequest `name` is provisioned; its IAM user.
    async fn wait_provisioned(&self, name: &str) -> Result<String> {
        let requests: Api<CredentialsRequest> = Api::namespaced(self.client().await?, &self.ns);
        Ok(wait::until(
            &format!("CredentialsRequest {name} provisioned"),
            CONVERGE,
            || async {
                let cr = requests.get(name).await.map_err(|e| e.to_string())?;
                let status = cr.status.clone().unwrap_or_default();
                let current = Some(status.last_sync_generation) == cr.metadata.generation;
                match (status.provisioned && current, status.provider_status) {
                    (true, Some(p)) if !p.user.is_empty() => Ok(p.user),
                    _ => Err(format!("{:?}", cr.status)),
                }
            },
        )
        .await?)
    }

    /// What the drill checks after the restore, read now.
    async fn record(&self) -> Result<State> {
        let client = self.client().await?;
        let mut state = State::default();
        let pods: Api<Pod> = Api::namespaced(client.clone(), &self.ns);
        let tasks = self.node_tasks().await?;
        for name in REQUESTS {
            let pod = pods.get(name).await?;
            let container = container_id(&pod).context("no running container")?;
            let pid = tasks
                .get(&container)
                .with_context(|| format!("no task of container {container} on the node"))?;
            let uid = pod.uid().context("a Pod without UID")?;
            state
                .pods
                .insert(name.into(), (uid, container.clone(), pid.clone()));
        }
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &self.ns);
        for service in SERVICES {
            let secret = secrets.get(&secret_name(service)).await?;
            let crt = text(&secret, TLS_CERT_KEY)?;
            let serial = parse_leaf(&crt)?.serial;
            let rv = secret.resource_version().context("no resourceVersion")?;
            state.secrets.insert(service.into(), (serial, rv, crt));
        }
        let cm = Api::<ConfigMap>::namespaced(client.clone(), &self.ns)
            .get("bundle")
            .await?;
        state.bundle = cm
            .data
            .unwrap_or_default()
            .remove(INJECTED_CA_BUNDLE_KEY)
            .context("no injected bundle")?;
        let requests: Api<CredentialsRequest> = Api::namespaced(client.clone(), &self.ns);
        for name in CREDENTIALS {
            let cr = requests.get(name).await?;
            let user = cr
                .status
                .and_then(|s| s.provider_status)
                .map(|p| p.user)
                .context("no user in the status")?;
            let secret = secrets.get(&format!("{name}-secret")).await?;
            let key = text(&secret, "aws_access_key_id")?;
            state.credentials.insert(name.into(), (user, key));
        }
        state.iam_users = self.iam_users().await?;
        Ok(state)
    }

    async fn iam_users(&self) -> Result<BTreeSet<String>> {
        let out = self.iam().await.sdk().list_users().send().await?;
        Ok(out
            .users()
            .iter()
            .map(|u| u.user_name().to_owned())
            .collect())
    }

    /// `container ID → PID` of the tasks containerd runs on the node, from `ctr tasks ls`
    /// against the node's containerd.
    async fn node_tasks(&self) -> Result<BTreeMap<String, String>> {
        let node = self.cp()?.node().context("no real node")?;
        let socket = node.dir().join("run/containerd/containerd.sock");
        let out = tokio::process::Command::new("ctr")
            .arg("--address")
            .arg(&socket)
            .args(["--namespace", "k8s.io", "tasks", "ls"])
            .output()
            .await
            .context("running ctr")?;
        ensure!(
            out.status.success(),
            "ctr tasks ls: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        // TASK PID STATUS
        Ok(String::from_utf8_lossy(&out.stdout)
            .lines()
            .skip(1)
            .filter_map(|line| {
                let mut words = line.split_whitespace();
                let (task, pid, status) = (words.next()?, words.next()?, words.next()?);
                (status == "RUNNING").then(|| (task.to_owned(), pid.to_owned()))
            })
            .collect())
    }
}

/// What the drill compares before and after the restore.
#[derive(Debug, Default, PartialEq)]
struct State {
    /// PodRequest → (Pod UID, container ID, the container's PID on the node).
    pods: BTreeMap<String, (String, String, String)>,
    /// Service → (certificate serial, Secret resourceVersion, certificate PEM).
    secrets: BTreeMap<String, (String, String, String)>,
    /// The injected CA bundle.
    bundle: String,
    /// CredentialsRequest → (IAM user, access key ID in its Secret).
    credentials: BTreeMap<String, (String, String)>,
    iam_users: BTreeSet<String>,
}

impl State {
    /// For the test's output: the identities, not the PEM texts.
    fn summary(&self) -> String {
        let mut lines = Vec::new();
        for (name, (uid, container, pid)) in &self.pods {
            lines.push(format!(
                "  PodRequest {name}: Pod {uid}, container {} (pid {pid})",
                &container[..container.len().min(12)]
            ));
        }
        for (service, (serial, rv, _)) in &self.secrets {
            lines.push(format!(
                "  Service {service}: serving Secret serial {serial}, resourceVersion {rv}"
            ));
        }
        for (name, (user, key)) in &self.credentials {
            lines.push(format!(
                "  CredentialsRequest {name}: IAM user {user}, key {key}"
            ));
        }
        lines.push(format!("  IAM users: {:?}", self.iam_users));
        lines.join("\n")
    }
}

/// The ID (without `containerd://`) of the Pod's running container.
fn container_id(pod: &Pod) -> Option<String> {
    let statuses = pod.status.as_ref()?.container_statuses.as_ref()?;
    let status = statuses.first()?;
    status.state.as_ref()?.running.as_ref()?;
    let id = status.container_id.as_deref()?;
    Some(id.trim_start_matches("containerd://").to_owned())
}

/// The leak after a restore (docs/disaster-recovery.md): users tagged as this cluster's that no
/// CredentialsRequest names. Each is removed as IAM requires: inline policies and access keys
/// first, then the user.
async fn remove_leaked_users(iam: &Iam, named: &BTreeSet<String>) -> Result<Vec<String>> {
    let tag = format!("kubernetes.io/cluster/{CLUSTER_ID}");
    let sdk = iam.sdk();
    let mut leaked = Vec::new();
    for user in sdk.list_users().send().await?.users() {
        let name = user.user_name();
        let tags = sdk.list_user_tags().user_name(name).send().await?;
        let ours = tags
            .tags()
            .iter()
            .any(|t| t.key() == tag && t.value() == "owned");
        if !ours || named.contains(name) {
            continue;
        }
        let policies = sdk.list_user_policies().user_name(name).send().await?;
        for policy in policies.policy_names() {
            iam.delete_user_policy(name, policy).await?;
        }
        for key in iam.list_access_keys(name).await? {
            iam.delete_access_key(name, &key.id).await?;
        }
        iam.delete_user(name).await?;
        leaked.push(name.to_owned());
    }
    Ok(leaked)
}

async fn stop(operators: Operators) -> Result<()> {
    operators.pods.stop().await?;
    operators.service_ca.stop().await?;
    operators.credentials.stop().await?;
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_drill_restores_every_object_and_the_node_keeps_its_pods() -> Result<()> {
    let t0 = Instant::now();
    let cp = ControlPlane::builder()
        .real_node(true)
        .skip_from_env()
        .start()
        .await?;
    eprintln!(
        "drill: control plane with a real node in {} ({})",
        cp.startup_times(),
        cp.dir().display()
    );
    let env = TestEnv::on(cp);
    let ns = env.namespace("drill").await?.name().to_string();
    let signer_ns = env.namespace("drill-ca").await?.name().to_string();
    let moto = Moto::start().await?;
    let drill = Drill {
        env,
        ns,
        signer_ns,
        moto,
    };
    let cp = drill.cp()?;
    let client = drill.client().await?;
    for crd in [PodRequest::crd(), CredentialsRequest::crd()] {
        operon_cluster::apply::apply_crd(&client, &crd, MANAGER).await?;
    }
    let root = json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "aws-creds", "namespace": drill.ns },
        "stringData": { "aws_access_key_id": ROOT_KEY_ID, "aws_secret_access_key": ROOT_SECRET },
    });
    operon_cluster::apply::apply(&client, &root, MANAGER).await?;

    let operators = drill.start_operators().await?;
    drill.create_workloads().await?;
    drill.wait_converged().await?;
    let before = drill.record().await?;
    eprintln!(
        "drill: converged in {:.1?}:\n{}",
        t0.elapsed(),
        before.summary()
    );
    ensure!(
        before.iam_users.len() == CREDENTIALS.len(),
        "IAM users before the snapshot: {:?}",
        before.iam_users
    );

    // The snapshot, while the operators serve.
    let dir = tempfile::tempdir()?;
    let snapshot = dir.path().join("snapshot.db");
    let t = Instant::now();
    let status = cp.snapshot(&snapshot).await?;
    eprintln!("drill: snapshot ({status}) in {:.2?}", t.elapsed());
    ensure!(
        drill.record().await? == before,
        "the state moved while the snapshot was taken"
    );

    // Written after the snapshot: lost in the restore.
    drill.create_request(LATE).await?;
    drill.create_credentials(LATE).await?;
    let late_pod = drill.wait_running(LATE).await?;
    let late_container = container_id(&late_pod).context("no late container")?;
    let late_user = drill.wait_provisioned(LATE).await?;
    ensure!(
        drill.node_tasks().await?.contains_key(&late_container),
        "the late Pod's container does not run on the node"
    );

    stop(operators).await?;
    let destroyed_at = Timestamp::now();
    let times = cp.restore(&snapshot).await?;
    eprintln!("drill: restored: {times}");
    let restarted = Instant::now();
    let operators = drill.start_operators().await?;
    let client = drill.client().await?;

    // The node: its kubelet reached the new control plane, and the Node is Ready.
    let lease = Api::<Lease>::namespaced(client.clone(), "kube-node-lease")
        .get(operon_cluster::node::NODE_NAME)
        .await?;
    let renewed = lease.spec.and_then(|s| s.renew_time).map(|t| t.0);
    ensure!(
        renewed.is_some_and(|t| t > destroyed_at),
        "the node's Lease was not renewed after the restore: {renewed:?}"
    );
    let node = Api::<Node>::all(client.clone())
        .get(operon_cluster::node::NODE_NAME)
        .await?;
    let ready = node
        .status
        .and_then(|s| s.conditions)
        .unwrap_or_default()
        .into_iter()
        .any(|c| c.type_ == "Ready" && c.status == "True");
    ensure!(
        ready,
        "Node {} is not Ready",
        operon_cluster::node::NODE_NAME
    );

    // The operators caught up: each of their objects reconciled at least once since the start.
    let caught_up = |what: &str, metrics: Arc<ControllerMetrics>, at_least: u64| {
        let what = what.to_owned();
        async move {
            wait::until(&what, CONVERGE, || async {
                let n = metrics.reconciles();
                if n >= at_least {
                    Ok(())
                } else {
                    Err(format!("{n} reconciles"))
                }
            })
            .await
        }
    };
    caught_up(
        "pod-operator's reconciles after the restart",
        operators.pods.metrics.clone(),
        REQUESTS.len() as u64,
    )
    .await?;
    let (ca_metrics, readiness) = &operators.service_ca.metrics;
    wait::until("service-ca-operator ready", CONVERGE, || async {
        match readiness.is_ready() {
            true => Ok(()),
            false => Err(readiness.reason().unwrap_or_default()),
        }
    })
    .await?;
    caught_up(
        "service-ca-operator's Service reconciles after the restart",
        ca_metrics.controller("service"),
        SERVICES.len() as u64,
    )
    .await?;
    caught_up(
        "credentials-operator's reconciles after the restart",
        operators.credentials.metrics.clone(),
        CREDENTIALS.len() as u64,
    )
    .await?;
    for name in REQUESTS {
        drill.wait_running(name).await?;
    }
    for name in CREDENTIALS {
        drill.wait_provisioned(name).await?;
    }
    eprintln!(
        "drill: the operators caught up {:.1?} after their start",
        restarted.elapsed()
    );

    // The late PodRequest, its Pod and its container are gone; no Pod was made again.
    let requests: Api<PodRequest> = Api::namespaced(client.clone(), &drill.ns);
    ensure!(
        requests.get_opt(LATE).await?.is_none(),
        "PodRequest {LATE}, written after the snapshot, survived"
    );
    wait::until(
        "the late Pod's container stopped by the kubelet",
        CONVERGE,
        || async {
            match drill.node_tasks().await {
                Ok(tasks) if !tasks.contains_key(&late_container) => Ok(()),
                Ok(_) => Err("still running".to_string()),
                Err(e) => Err(e.to_string()),
            }
        },
    )
    .await?;
    let pods = Api::<Pod>::namespaced(client.clone(), &drill.ns)
        .list(&ListParams::default())
        .await?
        .items;
    let names: BTreeSet<String> = pods.iter().map(ResourceExt::name_any).collect();
    let expected: BTreeSet<String> = REQUESTS.iter().map(|s| s.to_string()).collect();
    ensure!(
        names == expected,
        "Pods after the restore: {names:?}, expected exactly {expected:?}"
    );
    let prs = requests.list(&ListParams::default()).await?.items;
    for pod in &pods {
        let owner = pod
            .owner_references()
            .iter()
            .find(|o| o.controller == Some(true))
            .map(|o| o.uid.clone());
        let request = prs.iter().find(|r| r.name_any() == pod.name_any());
        ensure!(
            request.is_some_and(|r| r.metadata.uid == owner),
            "Pod {} is not controlled by its PodRequest",
            pod.name_any()
        );
    }
    let creates = operators.pods.requests().get("create", "pods");
    ensure!(
        creates == 0,
        "pod-operator created {creates} Pods after the restore"
    );

    // Everything of the snapshot, the same objects: compared in one go.
    let after = drill.record().await?;
    eprintln!("drill: after the restore:\n{}", after.summary());
    for (name, was) in &before.pods {
        let now = after.pods.get(name);
        ensure!(
            now == Some(was),
            "PodRequest {name}: Pod (UID, container, PID) was {was:?}, is {now:?}"
        );
    }
    for (service, was) in &before.secrets {
        let now = after.secrets.get(service);
        ensure!(
            now == Some(was),
            "Service {service}: serving Secret (serial, resourceVersion) was {:?}, is {:?}",
            (&was.0, &was.1),
            now.map(|n| (&n.0, &n.1))
        );
    }
    ensure!(after.bundle == before.bundle, "the injected bundle changed");
    let secrets: Api<Secret> = Api::namespaced(client.clone(), &drill.ns);
    for service in SERVICES {
        let secret = secrets.get(&secret_name(service)).await?;
        let (crt, key) = (text(&secret, TLS_CERT_KEY)?, text(&secret, TLS_KEY_KEY)?);
        let host = format!("{service}.{}.svc", drill.ns);
        handshake(&crt, &key, &after.bundle, &host)
            .await
            .with_context(|| format!("{host}'s certificate against the injected bundle"))?;
    }
    ensure!(
        after.credentials == before.credentials,
        "CredentialsRequests (user, access key) were {:?}, are {:?}",
        before.credentials,
        after.credentials
    );
    let named: BTreeSet<String> = after
        .credentials
        .values()
        .map(|(user, _)| user.clone())
        .collect();
    ensure!(
        named.len() == CREDENTIALS.len(),
        "two requests share a user"
    );
    let expected_users: BTreeSet<String> =
        named.iter().cloned().chain([late_user.clone()]).collect();
    ensure!(
        after.iam_users == expected_users,
        "IAM users after the restore: {:?}, expected the requests' {named:?} and the late \
         request's {late_user}",
        after.iam_users
    );
    for (name, (user, key)) in &after.credentials {
        let keys = drill.iam().await.list_access_keys(user).await?;
        let ids: Vec<&str> = keys.iter().map(|k| k.id.as_str()).collect();
        ensure!(
            ids == [key.as_str()],
            "{name}'s user {user} has keys {ids:?}, its Secret {key}"
        );
    }

    // The leak, found and removed as docs/disaster-recovery.md says.
    let leaked = remove_leaked_users(&drill.iam().await, &named).await?;
    eprintln!("drill: leaked IAM users removed: {leaked:?}");
    ensure!(
        leaked == [late_user.clone()],
        "leaked users found: {leaked:?}, expected the late request's {late_user}"
    );
    let users = drill.iam_users().await?;
    ensure!(users == named, "IAM users after the clean-up: {users:?}");

    stop(operators).await?;
    eprintln!("drill: done in {:.1?}", t0.elapsed());
    Ok(())
}
