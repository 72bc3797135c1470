//! `cargo xtask up`: the project running, as in the talk's demos — a control plane, the CRDs,
//! pod-operator with the talk's PodRequest, service-ca-operator with the talk's annotated
//! Service and ConfigMap, credentials-operator with the talk's CredentialsRequest against a
//! local IAM emulator (moto) — until Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, ResourceExt};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use operon_cluster::node::guard::AllowedPods;
use operon_cluster::wait;
use pod_operator::api::PodRequest;

use crate::cluster::{self, ClusterInfo};
use xtask::cli::UpArgs;
use xtask::{cargo, elapsed, repo_root};

const MANAGER: &str = "operon-demo";
const SAMPLE: &str = "config/pod-operator/samples/podrequest.yaml";
const DEMO_NAMESPACE: &str = "pod-operator";
const SERVICE_CA_SAMPLE: &str = "config/service-ca-operator/samples/devconf.yaml";
/// Where the talk's annotated Service and ConfigMap go.
const SERVICE_CA_DEMO_NAMESPACE: &str = "devconf";

const CREDENTIALS_SAMPLE: &str = "config/credentials-operator/samples/credentialsrequest.yaml";
/// monitoring-operator's configuration, CMO's `cluster-monitoring-config`.
const MONITORING_SAMPLE: &str = "config/monitoring-operator/samples/cluster-monitoring-config.yaml";

/// The namespace an operator is deployed into, as its generated config/ says (service-ca's
/// holds the signing CA; credentials-operator's, moto's Service).
fn operator_namespace(operator: &str) -> Result<String> {
    let path = repo_root()
        .join("config")
        .join(operator)
        .join("manager")
        .join("namespace.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let namespace: serde_json::Value =
        serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    namespace["metadata"]["name"]
        .as_str()
        .map(str::to_string)
        .with_context(|| format!("{} names no Namespace", path.display()))
}

/// The Pods of an operator's Deployment, as its generated config/ selects them (namespace and
/// `spec.selector.matchLabels`).
pub fn operator_pods(operator: &str) -> Result<AllowedPods> {
    let path = repo_root()
        .join("config")
        .join(operator)
        .join("manager")
        .join("manager.yaml");
    let text =
        std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))?;
    let deployment: serde_json::Value =
        serde_saphyr::from_str(&text).with_context(|| format!("parsing {}", path.display()))?;
    let labels = deployment["spec"]["selector"]["matchLabels"]
        .as_object()
        .filter(|labels| !labels.is_empty())
        .with_context(|| format!("{} has no spec.selector.matchLabels", path.display()))?;
    let selector = labels
        .iter()
        .map(|(key, value)| format!("{key}={}", value.as_str().unwrap_or_default()))
        .collect::<Vec<_>>()
        .join(",");
    Ok(AllowedPods {
        namespace: operator_namespace(operator)?,
        selector,
    })
}

/// An operator process that is stopped (SIGTERM, then SIGKILL) when dropped.
struct OperatorProcess {
    name: &'static str,
    child: parking_lot::Mutex<Child>,
}

impl OperatorProcess {
    fn start(name: &'static str, binary: &Path, args: &[&str], kubeconfig: &Path) -> Result<Self> {
        let log_path = cluster::state_dir().join(format!("{name}.log"));
        let log = std::fs::File::create(&log_path)?;
        let mut cmd = Command::new(binary);
        cmd.args(args)
            .env("KUBECONFIG", kubeconfig)
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log);
        {
            use std::os::unix::process::CommandExt;
            cmd.process_group(0);
        }
        let child = cmd
            .spawn()
            .with_context(|| format!("starting {}", binary.display()))?;
        println!(
            "up: {name} running (pid {}, log {})",
            child.id(),
            log_path.display()
        );
        Ok(OperatorProcess {
            name,
            child: parking_lot::Mutex::new(child),
        })
    }

    fn check_alive(&self) -> Result<()> {
        let mut child = self.child.lock();
        if let Some(status) = child.try_wait()? {
            bail!(
                "{} exited ({status}); see its log in {}",
                self.name,
                cluster::state_dir().display()
            );
        }
        Ok(())
    }
}

impl Drop for OperatorProcess {
    fn drop(&mut self) {
        let child = self.child.get_mut();
        if matches!(child.try_wait(), Ok(None)) {
            let pgid = Pid::from_raw(child.id() as i32);
            let _ = killpg(pgid, Signal::SIGTERM);
            let every = wait::Backoff::every(Duration::from_millis(50));
            let _ = wait::blocking(
                "the operator to stop",
                Duration::from_secs(15),
                every,
                || match child.try_wait() {
                    Ok(None) => Err("running".to_string()),
                    _ => Ok(()),
                },
            );
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
            println!("up: {} stopped", self.name);
        }
    }
}

pub fn target_dir() -> Result<PathBuf> {
    let metadata = cargo_metadata::MetadataCommand::new()
        .current_dir(repo_root())
        .no_deps()
        .exec()
        .context("cargo metadata")?;
    Ok(metadata.target_directory.into_std_path_buf())
}

/// How the operators run.
enum Operators {
    /// Deployed from their images (`(operator, OCI archive)`), as a user deploys them.
    InCluster(Vec<(&'static str, PathBuf)>),
    /// Processes on this machine.
    Local(Binaries),
}

pub fn up(args: UpArgs) -> Result<()> {
    let t0 = Instant::now();
    xtask::k8s::ensure_built(false)?;
    let moto_server = xtask::moto::ensure_installed()?;
    let local = args.local_operators || args.shape.kwok_only;
    let operators = if local {
        Operators::Local(local_binaries(args.operator_bin_dir.clone())?)
    } else {
        Operators::InCluster(crate::deploy::build_images(args.monitoring(), &[])?)
    };
    std::fs::create_dir_all(cluster::state_dir())?;

    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        // Reuse a running `cargo xtask cluster up`; otherwise run one for as long as this runs.
        let (own_plane, kubeconfig, network) = match cluster::running() {
            Some(info) => {
                println!("up: using the running control plane at {}", info.server);
                (None, info.kubeconfig, info.node_network)
            }
            None => {
                let cp = cluster::start(args.shape, &cluster::state_dir().join("cluster")).await?;
                println!("up: control plane ready ({})", cp.startup_times());
                std::fs::copy(cp.kubeconfig_path(), cluster::kubeconfig_path())?;
                cluster::publish(&ClusterInfo::of(&cp))?;
                let network = cp.node().map(operon_cluster::Node::network);
                (Some(cp), cluster::kubeconfig_path(), network)
            }
        };
        let config = config(&kubeconfig).await?;
        let client = Client::try_from(config.clone())?;
        // A real node announces its registry.
        let real_node = operon_cluster::node::announced_registry(&client)
            .await
            .is_ok();
        let moto = match (&operators, network) {
            (Operators::InCluster(_), _) if !real_node => bail!(
                "the running cluster has no real node to run the operators' images: stop it \
                 (`cargo xtask cluster down`) or add --local-operators"
            ),
            (Operators::InCluster(_), None) => bail!(
                "the running cluster doesn't publish its node's network (an older `cargo xtask \
                 cluster up`), where moto's port is kept open only to credentials-operator: \
                 restart it (`cargo xtask cluster down`) or add --local-operators"
            ),
            // On the node's link, which Pods reach: only credentials-operator's get through.
            (Operators::InCluster(_), Some(network)) => {
                operon_moto::Moto::start_for_pods(
                    &moto_server,
                    &network,
                    config.clone(),
                    operator_pods("credentials-operator")?,
                )
                .await?
            }
            // The operators run here: loopback.
            (Operators::Local(_), _) => operon_moto::Moto::start_with(&moto_server).await?,
        };
        println!(
            "up: moto (AWS IAM emulator) at {} in {:.1?}",
            moto.endpoint(),
            moto.startup_time()
        );
        let result = demo(
            &kubeconfig,
            &client,
            operators,
            &moto,
            real_node,
            args.monitoring(),
            t0,
        )
        .await;
        drop(moto);
        if let Some(cp) = own_plane {
            cluster::unpublish();
            let _ = std::fs::remove_file(cluster::kubeconfig_path());
            let data = cp.dir().to_path_buf();
            drop(cp);
            let _ = std::fs::remove_dir_all(data);
            println!("up: control plane stopped");
        } else if result.is_ok() {
            println!(
                "up: the operators stay deployed in the running cluster \
                 (`kubectl delete -k config/default` removes them)"
            );
        }
        result
    })
}

/// The operators' debug binaries, built unless `dir` has them.
fn local_binaries(dir: Option<PathBuf>) -> Result<Binaries> {
    let bin_dir = match dir {
        Some(dir) => dir,
        None => {
            println!("up: building the operators");
            xtask::run(
                "cargo build (operators)",
                cargo().args([
                    "build",
                    "-p",
                    "pod-operator",
                    "-p",
                    "service-ca-operator",
                    "-p",
                    "credentials-operator",
                    "--bins",
                ]),
            )?;
            target_dir()?.join("debug")
        }
    };
    let binaries = Binaries {
        pod_operator: bin_dir.join("pod-operator"),
        service_ca_operator: bin_dir.join("service-ca-operator"),
        credentials_operator: bin_dir.join("credentials-operator"),
    };
    for binary in [
        &binaries.pod_operator,
        &binaries.service_ca_operator,
        &binaries.credentials_operator,
    ] {
        if !binary.is_file() {
            bail!("{} does not exist", binary.display());
        }
    }
    Ok(binaries)
}

pub async fn config(kubeconfig: &Path) -> Result<kube::Config> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    Ok(kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?)
}

pub async fn client(kubeconfig: &Path) -> Result<Client> {
    Ok(Client::try_from(config(kubeconfig).await?)?)
}

struct Binaries {
    pod_operator: PathBuf,
    service_ca_operator: PathBuf,
    credentials_operator: PathBuf,
}

/// The local operator processes, stopped when dropped.
struct LocalOperators {
    pod: OperatorProcess,
    service_ca: OperatorProcess,
    credentials: OperatorProcess,
}

impl LocalOperators {
    fn start(binaries: &Binaries, kubeconfig: &Path, iam_endpoint: &str) -> Result<Self> {
        let service_ca_namespace = operator_namespace("service-ca-operator")?;
        let credentials_namespace = operator_namespace("credentials-operator")?;
        // Each its own probe port, with /metrics beside the probes (plain HTTP, no certificate
        // to make); none on 8080, kubectl's default server.
        let pod = OperatorProcess::start(
            "pod-operator",
            &binaries.pod_operator,
            &[
                "run",
                "--health-probe-bind-address",
                "127.0.0.1:8081",
                "--metrics-bind-address",
                "0",
            ],
            kubeconfig,
        )?;
        let service_ca = OperatorProcess::start(
            "service-ca-operator",
            &binaries.service_ca_operator,
            &[
                "run",
                "--signing-namespace",
                &service_ca_namespace,
                "--leader-election-namespace",
                &service_ca_namespace,
                "--health-probe-bind-address",
                "127.0.0.1:8082",
                "--metrics-bind-address",
                "0",
            ],
            kubeconfig,
        )?;
        let credentials = OperatorProcess::start(
            "credentials-operator",
            &binaries.credentials_operator,
            &[
                "run",
                "--iam-endpoint",
                iam_endpoint,
                "--region",
                "us-east-1",
                "--leader-election-namespace",
                &credentials_namespace,
                "--health-probe-bind-address",
                "127.0.0.1:8083",
                "--metrics-bind-address",
                "0",
            ],
            kubeconfig,
        )?;
        Ok(LocalOperators {
            pod,
            service_ca,
            credentials,
        })
    }

    fn check_alive(&self) -> Result<()> {
        self.pod.check_alive()?;
        self.service_ca.check_alive()?;
        self.credentials.check_alive()
    }
}

/// Root credentials for the emulator (it accepts any), where credentials-operator reads them.
pub async fn root_credentials(client: &Client) -> Result<()> {
    operon_cluster::apply::apply(
        client,
        &serde_json::json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "aws-creds", "namespace": "kube-system" },
            "stringData": {
                "aws_access_key_id": "AKIADEMODEMODEMODEMO",
                "aws_secret_access_key": "demo-root-secret-for-the-local-emulator",
            },
        }),
        MANAGER,
    )
    .await?;
    Ok(())
}

/// The operators deployed from their images (`(operator, OCI archive)`) as `cargo xtask
/// deploy` does, credentials-operator pointed at `moto`; returns once every Deployment is
/// available. With `monitoring`, also monitoring-operator, which is applied but not waited for.
pub async fn deploy_in_cluster(
    kubeconfig: &Path,
    client: &Client,
    archives: &[(&'static str, PathBuf)],
    moto: &operon_moto::Moto,
    monitoring: bool,
) -> Result<()> {
    let pushed = crate::deploy::push(client, archives).await?;
    if monitoring {
        crate::deploy::push_monitoring_images(client).await?;
    }
    // The operator reaches the emulator as a user would reach another IAM endpoint:
    // the AWS SDK's AWS_ENDPOINT_URL_IAM, set before the Deployments roll out.
    let (config, images) = (kubeconfig.to_path_buf(), pushed.clone());
    tokio::task::spawn_blocking(move || {
        crate::deploy::apply_kustomization(&config, "config/default", &images)
    })
    .await??;
    let credentials_namespace = operator_namespace("credentials-operator")?;
    let url = moto.expose(client, &credentials_namespace).await?;
    let config = kubeconfig.to_path_buf();
    tokio::task::spawn_blocking(move || -> Result<()> {
        crate::deploy::kubectl(
            &config,
            &[
                "set",
                "env",
                "-n",
                &credentials_namespace,
                "deployment/credentials-operator-controller-manager",
                &format!("AWS_ENDPOINT_URL_IAM={url}"),
            ],
        )?;
        crate::deploy::wait_available(&config)?;
        match monitoring {
            true => crate::deploy::apply_monitoring(&config, &pushed),
            false => Ok(()),
        }
    })
    .await??;
    Ok(())
}

async fn demo(
    kubeconfig: &Path,
    client: &Client,
    operators: Operators,
    moto: &operon_moto::Moto,
    real_node: bool,
    monitoring: bool,
    t0: Instant,
) -> Result<()> {
    root_credentials(client).await?;
    let local = match operators {
        Operators::InCluster(archives) => {
            // The stack starts while the talk's samples are served; waited for below.
            deploy_in_cluster(kubeconfig, client, &archives, moto, monitoring).await?;
            None
        }
        Operators::Local(binaries) => {
            install_all_but_deployments(client, kubeconfig).await?;
            Some(LocalOperators::start(
                &binaries,
                kubeconfig,
                &moto.endpoint(),
            )?)
        }
    };
    let check_alive = || -> Result<()> {
        match &local {
            Some(operators) => operators.check_alive(),
            None => Ok(()),
        }
    };
    ensure_namespace(client, DEMO_NAMESPACE).await?;
    ensure_namespace(client, SERVICE_CA_DEMO_NAMESPACE).await?;
    apply_yaml(client, &repo_root().join(SAMPLE), None).await?;
    apply_yaml(client, &repo_root().join(CREDENTIALS_SAMPLE), None).await?;
    apply_yaml(
        client,
        &repo_root().join(SERVICE_CA_SAMPLE),
        Some(SERVICE_CA_DEMO_NAMESPACE),
    )
    .await?;

    let requests: Api<PodRequest> = Api::namespaced(client.clone(), DEMO_NAMESPACE);
    wait::until(
        "the talk's PodRequest Ready",
        Duration::from_secs(120),
        || async {
            check_alive().map_err(|e| e.to_string())?;
            let pr = requests.get("busybox").await.map_err(|e| e.to_string())?;
            let conditions = pr.status.map(|s| s.conditions).unwrap_or_default();
            if operon_runtime::conditions::is_true(&conditions, "Ready") {
                Ok(())
            } else {
                Err(format!("{conditions:?}"))
            }
        },
    )
    .await?;
    wait_for_service_ca(client, &check_alive).await?;
    wait_for_credentials(client, &check_alive).await?;
    let greeting = if real_node {
        Some(wait_for_greeting(client).await?)
    } else {
        None
    };
    if monitoring {
        apply_yaml(client, &repo_root().join(MONITORING_SAMPLE), None).await?;
        crate::deploy::wait_monitoring(client, kubeconfig).await?;
    }
    println!("up: ready in {}\n", elapsed(t0));
    kubectl(
        kubeconfig,
        &[
            "get",
            "podrequests,pods",
            "-n",
            DEMO_NAMESPACE,
            "-o",
            "wide",
        ],
    );
    kubectl(
        kubeconfig,
        &[
            "get",
            "services,secrets,configmaps,credentialsrequests",
            "-n",
            SERVICE_CA_DEMO_NAMESPACE,
        ],
    );
    if local.is_none() {
        kubectl(
            kubeconfig,
            &[
                "get",
                "deployments,pods",
                "-A",
                "-l",
                "app.kubernetes.io/part-of=operon",
                "-o",
                "wide",
            ],
        );
    }
    if let Some(log) = greeting {
        println!("\n$ kubectl logs busybox -n {DEMO_NAMESPACE}\n{log}");
    }
    print_next_steps(kubeconfig, local.is_some(), real_node, monitoring);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut check = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = check.tick() => check_alive()?,
        }
    }
    println!("\nup: stopping");
    drop(local);
    Ok(())
}

/// The talk's check (slide 72): the Pod's container really prints the greeting.
async fn wait_for_greeting(client: &Client) -> Result<String> {
    let pods: Api<k8s_openapi::api::core::v1::Pod> =
        Api::namespaced(client.clone(), DEMO_NAMESPACE);
    let log = wait::until(
        "the talk's greeting in kubectl logs busybox",
        Duration::from_secs(60),
        || async {
            let log = pods
                .logs("busybox", &Default::default())
                .await
                .map_err(|e| e.to_string())?;
            if log.contains("Hello DevConf.CZ 2020!") {
                Ok(log)
            } else {
                Err(format!("log so far: {log:?}"))
            }
        },
    )
    .await?;
    Ok(log.trim_end().to_string())
}

/// Everything `config/default` holds but the operators' Deployments (CRDs, namespaces, RBAC
/// with the aggregated roles, admission policies, Services), for operators run locally.
async fn install_all_but_deployments(client: &Client, kubeconfig: &Path) -> Result<()> {
    let out = operon_cluster::apply::kubectl(kubeconfig)
        .args(["kustomize", "config/default"])
        .current_dir(repo_root())
        .output()
        .context("kubectl kustomize config/default")?;
    ensure!(
        out.status.success(),
        "kubectl kustomize config/default: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let docs: Vec<serde_json::Value> =
        serde_saphyr::from_multiple(&String::from_utf8_lossy(&out.stdout))
            .context("parsing config/default")?;
    let (crds, rest): (Vec<_>, Vec<_>) = docs
        .into_iter()
        .filter(|d| d["kind"] != "Deployment")
        .partition(|d| d["kind"] == "CustomResourceDefinition");
    for crd in crds {
        let crd: CustomResourceDefinition = serde_json::from_value(crd)?;
        install_crd(client, &crd).await?;
    }
    // Namespaces before what lives in them.
    let (namespaces, rest): (Vec<_>, Vec<_>) =
        rest.into_iter().partition(|d| d["kind"] == "Namespace");
    for doc in namespaces.into_iter().chain(rest) {
        operon_cluster::apply::apply(client, &doc, MANAGER)
            .await
            .with_context(|| format!("applying {} {}", doc["kind"], doc["metadata"]["name"]))?;
    }
    println!("up: installed config/default without its Deployments");
    Ok(())
}

/// The talk's slides 41–44 done: the request is provisioned and its Secret written.
async fn wait_for_credentials(client: &Client, check_alive: &dyn Fn() -> Result<()>) -> Result<()> {
    // Read as a dynamic object: xtask-kube doesn't compile credentials-operator (and the AWS
    // SDK) just to read one status field.
    let resource = kube::api::ApiResource::from_gvk_with_plural(
        &kube::api::GroupVersionKind::gvk(
            "cloudcredential.openshift.io",
            "v1",
            "CredentialsRequest",
        ),
        "credentialsrequests",
    );
    let requests: Api<kube::api::DynamicObject> =
        Api::namespaced_with(client.clone(), "devconf", &resource);
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "devconf");
    wait::until(
        "the talk's CredentialsRequest provisioned",
        Duration::from_secs(120),
        || async {
            check_alive().map_err(|e| e.to_string())?;
            let cr = requests
                .get("aws-creds-to-describe-all-instances")
                .await
                .map_err(|e| e.to_string())?;
            let status = &cr.data["status"];
            if status["provisioned"] != serde_json::Value::Bool(true) {
                return Err(format!("status {status}"));
            }
            secrets
                .get_opt("secret-to-store-credentials")
                .await
                .map_err(|e| e.to_string())?
                .map(|_| ())
                .ok_or_else(|| "Secret not yet written".to_string())
        },
    )
    .await?;
    Ok(())
}

/// The talk's slides 48–50 done: the serving Secret exists and the ConfigMap holds the bundle.
async fn wait_for_service_ca(client: &Client, check_alive: &dyn Fn() -> Result<()>) -> Result<()> {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let secrets: Api<Secret> = Api::namespaced(client.clone(), SERVICE_CA_DEMO_NAMESPACE);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), SERVICE_CA_DEMO_NAMESPACE);
    wait::until(
        "the talk's serving Secret and injected CA bundle",
        Duration::from_secs(120),
        || async {
            check_alive().map_err(|e| e.to_string())?;
            secrets
                .get_opt("devconf-service-certs")
                .await
                .map_err(|e| e.to_string())?
                .ok_or("Secret devconf-service-certs not yet issued")?;
            let cm = configmaps
                .get("devconf-service-cabundle")
                .await
                .map_err(|e| e.to_string())?;
            match cm.data.unwrap_or_default().contains_key("service-ca.crt") {
                true => Ok(()),
                false => Err("ConfigMap devconf-service-cabundle not yet injected".to_string()),
            }
        },
    )
    .await?;
    Ok(())
}

fn kubectl(kubeconfig: &Path, args: &[&str]) {
    let status = operon_cluster::apply::kubectl(kubeconfig)
        .args(args)
        .status();
    if let Err(e) = status {
        println!("up: kubectl failed: {e}");
    }
}

fn print_next_steps(kubeconfig: &Path, local: bool, real_node: bool, monitoring: bool) {
    let bin = operon_cluster::default_bin_dir();
    let node = if real_node {
        "a real node (kubelet, containerd)"
    } else {
        "kwok's fake Nodes only"
    };
    let operators = if local {
        "running as\nprocesses on this machine"
    } else {
        "deployed from\ntheir images into the cluster (kubectl apply -k config/default)"
    };
    let pod_steps = if real_node {
        "  kubectl logs busybox -f                       # the talk's check: the greeting every 5 s
  kubectl exec busybox -- ps                    # a shell in the container
  kubectl delete pod busybox                    # ensure: the Pod comes back (new UID, new container);
                                                # sh ignores SIGTERM, so this takes the 30 s grace
                                                # period (--grace-period=1 is quicker)"
    } else {
        "  kubectl delete pod busybox                    # ensure: the Pod comes back (new UID)"
    };
    let operator_steps = if local {
        format!(
            "  # the operators' logs: {}/<operator>.log",
            cluster::state_dir().display()
        )
    } else {
        "  # the operators themselves, as microservices in the cluster:
  kubectl get pods -n pod-operator-system -o wide          # two replicas
  kubectl get lease -n pod-operator-system                 # the leader
  kubectl logs -n pod-operator-system deploy/pod-operator-controller-manager   # JSON logs
  kubectl delete pod -n pod-operator-system <leader>       # the other replica takes over"
            .to_string()
    };
    let monitoring_steps = if monitoring {
        format!(
            r#"

  # monitoring-operator (slides 33-37): it installed and configures the monitoring stack
  kubectl get clusteroperator monitoring                   # Available, the operands' versions
  kubectl -n {mon} get prometheus,alertmanager,servicemonitors,prometheusrules,pods
  kubectl -n {mon} port-forward svc/prometheus-k8s 9090 &        # Prometheus's HTTP API (no web UI)
  curl -s 'http://localhost:9090/api/v1/query?query=up' | python3 -m json.tool
                                                # every target, the three operators included
  curl -s 'http://localhost:9090/api/v1/rules?type=alert' | grep -o '"name":"KubeNode[A-Za-z]*"'
  kubectl cordon {node}                       # the talk's alert (slide 37) goes pending at
                                                # /api/v1/alerts, fires after its 1h
  kubectl uncordon {node}
  kubectl -n {mon} port-forward svc/alertmanager-main 9093 &     # Alertmanager: /api/v2/alerts
  kubectl -n {mon} edit configmap cluster-monitoring-config  # e.g. prometheusK8s.retention:
                                                # rolled out without a restart; a bad key is
                                                # named in the ClusterOperator's Degraded"#,
            mon = monitoring_operator::deploy::NAMESPACE,
            node = operon_cluster::node::NODE_NAME,
        )
    } else {
        String::new()
    };
    println!(
        r#"
Operon is running: a local control plane with {node}; pod-operator,
service-ca-operator and credentials-operator {operators};
the talk's PodRequest, annotated Service and ConfigMap, and CredentialsRequest (IAM emulated by
moto). In another terminal:

  export KUBECONFIG={kubeconfig}
  export PATH={bin}:$PATH
  kubectl config set-context --current --namespace={DEMO_NAMESPACE}

  kubectl get podrequests,pods -o wide          # the request and its Pod
{pod_steps}
  kubectl describe podrequest busybox           # status conditions and Events
  kubectl patch podrequest busybox --type=merge -p '{{"spec":{{"image":"busybox:latest"}}}}'
                                                # spec change: the Pod is replaced
  kubectl delete podrequest busybox             # cleanup, as on slide 73:
  kubectl get pods -l app=busybox               # gone (or terminating)
  kubectl create -f {sample}

{operator_steps}

  # service-ca-operator (slides 48-50), namespace {sca_ns}:
  kubectl -n {sca_ns} get secret devconf-service-certs -o jsonpath='{{.data.tls\.crt}}' | base64 -d \
    | openssl x509 -noout -subject -ext subjectAltName -enddate
  kubectl -n {sca_ns} get configmap devconf-service-cabundle -o jsonpath='{{.data.service-ca\.crt}}'
  kubectl -n {sca_ns} get service devconf -o yaml          # serving-cert-signed-by annotation
  kubectl -n {sca_ns} delete secret devconf-service-certs   # re-issued at once

  # credentials-operator (slides 41-44), IAM emulated by moto:
  kubectl -n devconf get credentialsrequests -o wide         # provisioned, the IAM user
  kubectl -n devconf get secret secret-to-store-credentials -o jsonpath='{{.data.credentials}}' | base64 -d
  kubectl -n devconf delete credentialsrequest aws-creds-to-describe-all-instances
                                                # the IAM user and the Secret go{monitoring_steps}

Ctrl-C stops everything."#,
        kubeconfig = kubeconfig.display(),
        bin = bin.display(),
        sample = repo_root().join(SAMPLE).display(),
        sca_ns = SERVICE_CA_DEMO_NAMESPACE,
    );
}

async fn install_crd(client: &Client, crd: &CustomResourceDefinition) -> Result<()> {
    operon_cluster::apply::apply_crd(client, crd, MANAGER).await?;
    println!("up: CRD {} installed", crd.name_any());
    Ok(())
}

pub async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
    let ns: Namespace = serde_json::from_value(serde_json::json!({
        "apiVersion": "v1", "kind": "Namespace", "metadata": { "name": name },
    }))?;
    Api::<Namespace>::all(client.clone())
        .patch(name, &PatchParams::apply(MANAGER), &Patch::Apply(&ns))
        .await?;
    Ok(())
}

/// Server-side applies every document of a YAML file (into `namespace` when given).
async fn apply_yaml(client: &Client, path: &Path, namespace: Option<&str>) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text)
        .with_context(|| format!("parsing {}", path.display()))?;
    for mut doc in docs {
        if let Some(ns) = namespace {
            doc["metadata"]["namespace"] = serde_json::json!(ns);
        }
        operon_cluster::apply::apply(client, &doc, MANAGER)
            .await
            .with_context(|| format!("applying {} {}", doc["kind"], doc["metadata"]["name"]))?;
        println!(
            "up: applied {} {}",
            doc["kind"].as_str().unwrap_or("?"),
            doc["metadata"]["name"].as_str().unwrap_or("?")
        );
    }
    Ok(())
}
