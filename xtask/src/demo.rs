//! `cargo xtask up`: the project running, as in the talk's demos — a control plane, the CRDs,
//! pod-operator with the talk's PodRequest, service-ca-operator with the talk's annotated
//! Service and ConfigMap, credentials-operator with the talk's CredentialsRequest against a
//! local IAM emulator (moto) — until Ctrl-C.

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::Namespace;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, Patch, PatchParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;
use operon_envtest::{ControlPlane, wait};
use pod_operator::api::PodRequest;

use crate::cluster::{self, ClusterInfo};
use crate::{cargo, elapsed, repo_root};

const MANAGER: &str = "operon-demo";
const SAMPLE: &str = "config/pod-operator/samples/podrequest.yaml";
const DEMO_NAMESPACE: &str = "pod-operator";
const SERVICE_CA_SAMPLE: &str = "config/service-ca-operator/samples/devconf.yaml";
/// Where the talk's annotated Service and ConfigMap go.
const SERVICE_CA_DEMO_NAMESPACE: &str = "devconf";
/// The operator's namespace, holding the signing CA.
const SERVICE_CA_NAMESPACE: &str = service_ca_operator::deploy::NAMESPACE;
const CREDENTIALS_SAMPLE: &str = "config/credentials-operator/samples/credentialsrequest.yaml";
const CREDENTIALS_NAMESPACE: &str = credentials_operator::deploy::NAMESPACE;

/// An operator process that is stopped (SIGTERM, then SIGKILL) when dropped.
struct OperatorProcess {
    name: &'static str,
    child: std::sync::Mutex<Child>,
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
            child: std::sync::Mutex::new(child),
        })
    }

    fn check_alive(&self) -> Result<()> {
        let mut child = self.child.lock().unwrap_or_else(|p| p.into_inner());
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
        let child = self.child.get_mut().unwrap_or_else(|p| p.into_inner());
        if matches!(child.try_wait(), Ok(None)) {
            let pgid = Pid::from_raw(child.id() as i32);
            let _ = killpg(pgid, Signal::SIGTERM);
            let t0 = Instant::now();
            while matches!(child.try_wait(), Ok(None)) && t0.elapsed() < Duration::from_secs(15) {
                std::thread::sleep(Duration::from_millis(50));
            }
            let _ = killpg(pgid, Signal::SIGKILL);
            let _ = child.wait();
            println!("up: {} stopped", self.name);
        }
    }
}

pub fn target_dir() -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return Ok(PathBuf::from(dir));
    }
    let out = cargo()
        .args(["metadata", "--format-version", "1", "--no-deps"])
        .output()
        .context("cargo metadata")?;
    let meta: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    meta["target_directory"]
        .as_str()
        .map(PathBuf::from)
        .context("cargo metadata has no target_directory")
}

/// `operator_bin_dir`: where the operator binaries are; built with cargo when absent.
pub fn up(nodes: usize, operator_bin_dir: Option<PathBuf>) -> Result<()> {
    let t0 = Instant::now();
    crate::k8s::ensure_built(false)?;
    let moto_server = crate::moto::ensure_installed()?;
    let bin_dir = match operator_bin_dir {
        Some(dir) => dir,
        None => {
            println!("up: building the operators");
            crate::run(
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
    std::fs::create_dir_all(cluster::state_dir())?;

    let rt = tokio::runtime::Runtime::new()?;
    rt.block_on(async {
        // Reuse a running `cargo xtask cluster up`; otherwise run one for as long as this runs.
        let (own_plane, kubeconfig) = match cluster::running() {
            Some(info) => {
                println!("up: using the running control plane at {}", info.server);
                (None, info.kubeconfig)
            }
            None => {
                let data = cluster::state_dir().join("cluster");
                let _ = std::fs::remove_dir_all(&data);
                let cp = ControlPlane::builder()
                    .nodes(nodes)
                    .dir(&data)
                    .start()
                    .await?;
                println!("up: control plane ready ({})", cp.startup_times());
                std::fs::copy(cp.kubeconfig_path(), cluster::kubeconfig_path())?;
                cluster::publish(&ClusterInfo {
                    pid: std::process::id(),
                    server: cp.server().to_string(),
                    kubeconfig: cluster::kubeconfig_path(),
                    startup: cp.startup_times().to_string(),
                    logs: cp.log_files(),
                })?;
                (Some(cp), cluster::kubeconfig_path())
            }
        };
        let moto = operon_envtest::moto::Moto::start_with(&moto_server).await?;
        println!(
            "up: moto (AWS IAM emulator) at {} in {:.1?}",
            moto.endpoint(),
            moto.startup_time()
        );
        let result = demo(&kubeconfig, &binaries, &moto, t0).await;
        drop(moto);
        if let Some(cp) = own_plane {
            cluster::unpublish();
            let _ = std::fs::remove_file(cluster::kubeconfig_path());
            let data = cp.dir().to_path_buf();
            drop(cp);
            let _ = std::fs::remove_dir_all(data);
            println!("up: control plane stopped");
        }
        result
    })
}

async fn client(kubeconfig: &Path) -> Result<Client> {
    let kc = kube::config::Kubeconfig::read_from(kubeconfig)?;
    let config = kube::Config::from_custom_kubeconfig(kc, &Default::default()).await?;
    Ok(Client::try_from(config)?)
}

struct Binaries {
    pod_operator: PathBuf,
    service_ca_operator: PathBuf,
    credentials_operator: PathBuf,
}

async fn demo(
    kubeconfig: &Path,
    binaries: &Binaries,
    moto: &operon_envtest::moto::Moto,
    t0: Instant,
) -> Result<()> {
    let client = client(kubeconfig).await?;
    install_crd(&client, &PodRequest::crd()).await?;
    install_crd(
        &client,
        &credentials_operator::api::CredentialsRequest::crd(),
    )
    .await?;
    ensure_namespace(&client, CREDENTIALS_NAMESPACE).await?;
    // Root credentials for the emulator (it accepts any).
    operon_envtest::apply::apply(
        &client,
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
    ensure_namespace(&client, DEMO_NAMESPACE).await?;
    ensure_namespace(&client, SERVICE_CA_NAMESPACE).await?;
    ensure_namespace(&client, SERVICE_CA_DEMO_NAMESPACE).await?;
    let operator =
        OperatorProcess::start("pod-operator", &binaries.pod_operator, &["run"], kubeconfig)?;
    let service_ca = OperatorProcess::start(
        "service-ca-operator",
        &binaries.service_ca_operator,
        &[
            "run",
            "--signing-namespace",
            SERVICE_CA_NAMESPACE,
            "--leader-election-namespace",
            SERVICE_CA_NAMESPACE,
            // pod-operator has the default admin port.
            "--admin-bind-address",
            "127.0.0.1:8081",
        ],
        kubeconfig,
    )?;
    let iam_endpoint = moto.endpoint();
    let credentials = OperatorProcess::start(
        "credentials-operator",
        &binaries.credentials_operator,
        &[
            "run",
            "--iam-endpoint",
            &iam_endpoint,
            "--region",
            "us-east-1",
            "--leader-election-namespace",
            CREDENTIALS_NAMESPACE,
            "--admin-bind-address",
            "127.0.0.1:8082",
        ],
        kubeconfig,
    )?;
    apply_yaml(&client, &repo_root().join(SAMPLE), None).await?;
    apply_yaml(&client, &repo_root().join(CREDENTIALS_SAMPLE), None).await?;
    apply_yaml(
        &client,
        &repo_root().join(SERVICE_CA_SAMPLE),
        Some(SERVICE_CA_DEMO_NAMESPACE),
    )
    .await?;

    let requests: Api<PodRequest> = Api::namespaced(client.clone(), DEMO_NAMESPACE);
    wait::until(
        "the talk's PodRequest Ready",
        Duration::from_secs(120),
        || async {
            operator.check_alive().map_err(|e| e.to_string())?;
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
    wait_for_service_ca(&client, &service_ca).await?;
    wait_for_credentials(&client, &credentials).await?;
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
    print_next_steps(kubeconfig);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let mut check = tokio::time::interval(Duration::from_secs(2));
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = check.tick() => {
                operator.check_alive()?;
                service_ca.check_alive()?;
                credentials.check_alive()?;
            }
        }
    }
    println!("\nup: stopping");
    drop(operator);
    drop(service_ca);
    drop(credentials);
    Ok(())
}

/// The talk's slides 41–44 done: the request is provisioned and its Secret written.
async fn wait_for_credentials(client: &Client, operator: &OperatorProcess) -> Result<()> {
    use credentials_operator::api::CredentialsRequest;
    let requests: Api<CredentialsRequest> = Api::namespaced(client.clone(), "devconf");
    let secrets: Api<k8s_openapi::api::core::v1::Secret> =
        Api::namespaced(client.clone(), "devconf");
    wait::until(
        "the talk's CredentialsRequest provisioned",
        Duration::from_secs(120),
        || async {
            operator.check_alive().map_err(|e| e.to_string())?;
            let cr = requests
                .get("aws-creds-to-describe-all-instances")
                .await
                .map_err(|e| e.to_string())?;
            if !cr.status.as_ref().is_some_and(|s| s.provisioned) {
                return Err(format!("status {:?}", cr.status));
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
async fn wait_for_service_ca(client: &Client, operator: &OperatorProcess) -> Result<()> {
    use k8s_openapi::api::core::v1::{ConfigMap, Secret};
    let secrets: Api<Secret> = Api::namespaced(client.clone(), SERVICE_CA_DEMO_NAMESPACE);
    let configmaps: Api<ConfigMap> = Api::namespaced(client.clone(), SERVICE_CA_DEMO_NAMESPACE);
    wait::until(
        "the talk's serving Secret and injected CA bundle",
        Duration::from_secs(120),
        || async {
            operator.check_alive().map_err(|e| e.to_string())?;
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
    let status = operon_envtest::apply::kubectl(kubeconfig)
        .args(args)
        .status();
    if let Err(e) = status {
        println!("up: kubectl failed: {e}");
    }
}

fn print_next_steps(kubeconfig: &Path) {
    let bin = operon_envtest::default_bin_dir();
    println!(
        r#"
Operon is running: a local control plane, pod-operator with the talk's PodRequest,
service-ca-operator with the talk's annotated Service and ConfigMap, and credentials-operator
with the talk's CredentialsRequest (IAM emulated by moto). In another terminal:

  export KUBECONFIG={kubeconfig}
  export PATH={bin}:$PATH
  kubectl config set-context --current --namespace={DEMO_NAMESPACE}

  kubectl get podrequests,pods                  # the request and its Pod (Running on a kwok node)
  kubectl describe podrequest busybox           # status conditions and Events
  kubectl delete pod busybox                    # ensure: the Pod comes back (new UID)
  kubectl patch podrequest busybox --type=merge -p '{{"spec":{{"image":"busybox:1.36"}}}}'
                                                # spec change: the Pod is replaced
  kubectl delete podrequest busybox             # cleanup, as on slide 73:
  kubectl get pods -l app=busybox               # gone (or terminating)
  kubectl create -f {sample}

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
                                                # the IAM user and the Secret go

Ctrl-C stops everything."#,
        kubeconfig = kubeconfig.display(),
        bin = bin.display(),
        sample = repo_root().join(SAMPLE).display(),
        sca_ns = SERVICE_CA_DEMO_NAMESPACE,
    );
}

async fn install_crd(client: &Client, crd: &CustomResourceDefinition) -> Result<()> {
    operon_envtest::apply::apply_crd(client, crd, MANAGER).await?;
    println!("up: CRD {} installed", crd.name_any());
    Ok(())
}

async fn ensure_namespace(client: &Client, name: &str) -> Result<()> {
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
        operon_envtest::apply::apply(client, &doc, MANAGER)
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
