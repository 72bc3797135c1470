//! `cargo xtask deploy`: the operators into a cluster the way a user deploys them (the talk's
//! slides 61–62 and 70–71) — their images built here, pushed to the cluster's registry, and
//! `kubectl apply -k config/default`.

use std::path::{Path, PathBuf};
use std::time::Instant;

use anyhow::{Context, Result, ensure};

use crate::manifests;
use xtask::cli::LOCAL_IMAGE_PROFILE;
use xtask::{OPERATORS, elapsed, repo_root};

/// The operators' images as OCI archives, `(operator, archive)`: static binaries of the
/// local-image profile, one `cargo build` for all three.
pub fn build_images() -> Result<Vec<(&'static str, PathBuf)>> {
    let t0 = Instant::now();
    println!(
        "deploy: building the operators' images (static binaries, {LOCAL_IMAGE_PROFILE} profile)"
    );
    let archives = operon_image::operator::build_many_with_profile(
        &repo_root(),
        &OPERATORS,
        None,
        LOCAL_IMAGE_PROFILE,
    )
    .context("building the operators' images")?;
    println!("deploy: images built in {}", elapsed(t0));
    Ok(OPERATORS.into_iter().zip(archives).collect())
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

/// Builds, pushes and applies.
pub async fn deploy(kubeconfig: &Path) -> Result<()> {
    let t0 = Instant::now();
    let archives = tokio::task::spawn_blocking(build_images).await??;
    let client = crate::demo::client(kubeconfig).await?;
    push(&client, &archives).await?;
    let kubeconfig = kubeconfig.to_path_buf();
    tokio::task::spawn_blocking(move || apply(&kubeconfig)).await??;
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
