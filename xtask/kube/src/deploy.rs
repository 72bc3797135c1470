//! `cargo xtask deploy`: the operators into a cluster the way a user deploys them (the talk's
//! slides 61–62 and 70–71) — their images built here, pushed to the cluster's registry, and
//! `kubectl apply -k config/default`. With the monitoring stack, also monitoring-operator (its
//! image carries the Prometheus Operator's CRDs) and the stack's six images, then
//! `kubectl apply -k config/monitoring-operator/default`.

use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, ensure};
use monitoring_operator::api::ClusterOperator;
use operon_image::Image;

use crate::manifests;
use xtask::cli::LOCAL_IMAGE_PROFILE;
use xtask::{ADD_ON_OPERATORS, OPERATORS, elapsed, repo_root};

/// The operators' images as OCI archives, `(operator, archive)`: static binaries of the
/// local-image profile, one `cargo build` for all. `monitoring` adds monitoring-operator.
pub fn build_images(monitoring: bool) -> Result<Vec<(&'static str, PathBuf)>> {
    let t0 = Instant::now();
    let mut operators = OPERATORS.to_vec();
    if monitoring {
        operators.extend(ADD_ON_OPERATORS);
    }
    println!(
        "deploy: building the operators' images (static binaries, {LOCAL_IMAGE_PROFILE} profile)"
    );
    let archives = operon_image::operator::build_many_with(
        &repo_root(),
        &operators,
        None,
        LOCAL_IMAGE_PROFILE,
        &with_runtime_files,
    )
    .context("building the operators' images")?;
    println!("deploy: images built in {}", elapsed(t0));
    Ok(operators.into_iter().zip(archives).collect())
}

const MONITORING_OPERATOR: &str = "monitoring-operator";

/// What an operator's image carries besides its binary: monitoring-operator's CRDs.
pub fn with_runtime_files(package: &str, image: Image) -> operon_image::Result<Image> {
    match package {
        MONITORING_OPERATOR => with_crds(image, &operon_assets::prometheus_operator_crd_dir()),
        _ => Ok(image),
    }
}

/// monitoring-operator installs the Prometheus Operator's CRDs of the release its image runs:
/// they go into its image at `/crds` (its `--crds-dir`), from `cargo xtask k8s build`'s copy.
fn with_crds(image: Image, dir: &Path) -> operon_image::Result<Image> {
    let missing = || {
        operon_image::Error::Invalid(format!(
            "no Prometheus Operator CRDs in {}: run `cargo xtask k8s build`",
            dir.display()
        ))
    };
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .map_err(|_| missing())?
        .filter_map(|e| e.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|x| x == "yaml"))
        .collect();
    files.sort();
    if files.is_empty() {
        return Err(missing());
    }
    let mut image = image.dir("/crds", 0o755);
    for file in files {
        let name = file.file_name().map(|n| n.to_string_lossy().to_string());
        let name = name.unwrap_or_default();
        image = image.file(&file, &format!("/crds/{name}"), 0o644);
    }
    Ok(image)
}

/// Pushes the monitoring stack's six images (the Prometheus Operator, its config reloader,
/// kube-state-metrics, Prometheus, Alertmanager, node_exporter), built or taken from the cache.
pub async fn push_monitoring_images(client: &kube::Client) -> Result<()> {
    let t0 = Instant::now();
    let registry = operon_cluster::node::announced_registry(client)
        .await
        .context("finding the cluster's registry")?;
    let bin_dir = operon_assets::default_bin_dir();
    let to = registry.clone();
    tokio::task::spawn_blocking(move || {
        operon_cluster::node::push_monitoring_images(&to, &bin_dir)
    })
    .await?
    .context("building and pushing the monitoring stack's images")?;
    println!(
        "deploy: pushed the monitoring stack's images to {registry} ({})",
        elapsed(t0)
    );
    Ok(())
}

/// Pushes the images to the registry the cluster announces, under the names its Deployments
/// use (`localhost/operon/<operator>:v<version>`).
pub async fn push(client: &kube::Client, archives: &[(&'static str, PathBuf)]) -> Result<()> {
    let registry = operon_cluster::node::announced_registry(client)
        .await
        .context("finding the cluster's registry")?;
    for (operator, archive) in archives {
        let reference = manifests::image(operator);
        let (to, archive, shown) = (registry.clone(), archive.clone(), reference.clone());
        tokio::task::spawn_blocking(move || {
            operon_cluster::node::push_to(&to, &archive, &reference)
        })
        .await??;
        println!("deploy: pushed {shown} to {registry}");
    }
    Ok(())
}

/// `kubectl <args>` against `kubeconfig`, echoed; fails on a non-zero exit.
pub fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<()> {
    println!("deploy: kubectl {}", args.join(" "));
    let status = operon_cluster::apply::kubectl(kubeconfig)
        .args(args)
        .current_dir(repo_root())
        .status()
        .context("running kubectl")?;
    ensure!(
        status.success(),
        "kubectl {} failed ({status})",
        args.join(" ")
    );
    Ok(())
}

/// `kubectl apply -k config/default`, then waits for every operator's Deployment.
pub fn apply(kubeconfig: &Path) -> Result<()> {
    kubectl(kubeconfig, &["apply", "-k", "config/default"])?;
    wait_available(kubeconfig)
}

/// Waits until every operator's Deployment (`<operator>-controller-manager` in
/// `<operator>-system`, as config/ names them) is rolled out and available.
pub fn wait_available(kubeconfig: &Path) -> Result<()> {
    for operator in OPERATORS {
        kubectl(
            kubeconfig,
            &[
                "rollout",
                "status",
                "-n",
                &format!("{operator}-system"),
                &format!("deployment/{operator}-controller-manager"),
                "--timeout=180s",
            ],
        )?;
    }
    Ok(())
}

/// `kubectl apply -k config/monitoring-operator/default`.
pub fn apply_monitoring(kubeconfig: &Path) -> Result<()> {
    kubectl(
        kubeconfig,
        &["apply", "-k", "config/monitoring-operator/default"],
    )
}

/// Waits for monitoring-operator's rollout, then until the stack it installs reports
/// `Available` on its ClusterOperator.
pub async fn wait_monitoring(client: &kube::Client, kubeconfig: &Path) -> Result<()> {
    let t0 = Instant::now();
    let config = kubeconfig.to_path_buf();
    tokio::task::spawn_blocking(move || {
        kubectl(
            &config,
            &[
                "rollout",
                "status",
                "-n",
                monitoring_operator::deploy::NAMESPACE,
                "deployment/monitoring-operator-controller-manager",
                "--timeout=180s",
            ],
        )
    })
    .await??;
    let operators: kube::Api<ClusterOperator> = kube::Api::all(client.clone());
    operon_cluster::wait::until(
        "the monitoring stack Available (kubectl get clusteroperator monitoring)",
        Duration::from_secs(600),
        || async {
            let co = operators
                .get_opt(monitoring_operator::controller::CLUSTER_OPERATOR)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("not created yet")?;
            let conditions = co.status.map(|s| s.conditions).unwrap_or_default();
            let available = conditions
                .iter()
                .any(|c| c.type_ == "Available" && c.status == "True");
            match available {
                true => Ok(()),
                false => Err(format!("{conditions:?}")),
            }
        },
    )
    .await?;
    println!(
        "deploy: the monitoring stack is available ({} after its rollout began)",
        elapsed(t0)
    );
    Ok(())
}

/// Builds, pushes and applies.
pub async fn deploy(kubeconfig: &Path, monitoring: bool) -> Result<()> {
    let t0 = Instant::now();
    let archives = tokio::task::spawn_blocking(move || build_images(monitoring)).await??;
    let client = crate::demo::client(kubeconfig).await?;
    push(&client, &archives).await?;
    if monitoring {
        push_monitoring_images(&client).await?;
    }
    let config = kubeconfig.to_path_buf();
    tokio::task::spawn_blocking(move || apply(&config)).await??;
    if monitoring {
        let config = kubeconfig.to_path_buf();
        tokio::task::spawn_blocking(move || apply_monitoring(&config)).await??;
        wait_monitoring(&client, kubeconfig).await?;
    }
    println!("deploy: the operators run in the cluster ({})", elapsed(t0));
    Ok(())
}

/// The kubeconfig to deploy with: the given one, else the running `cargo xtask cluster up`'s,
/// else `$KUBECONFIG`.
pub fn kubeconfig(given: Option<PathBuf>) -> Result<PathBuf> {
    given
        .or_else(|| crate::cluster::running().map(|info| info.kubeconfig))
        .or_else(|| std::env::var_os("KUBECONFIG").map(PathBuf::from))
        .context(
            "no cluster: start one with `cargo xtask cluster up`, or give --kubeconfig \
             (or KUBECONFIG)",
        )
}
