//! `kubectl apply -k config/default` on the real control plane, as operator-sdk users deploy:
//! server-side dry-run and real apply succeed, and the Deployment's Pods run on the kwok node
//! and pass the namespace's `restricted` Pod Security level.

mod common;

use std::path::{Path, PathBuf};

use anyhow::{Context, Result, ensure};
use common::{Fixture, OPERATOR_NAMESPACE, TIMEOUT};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Pod;
use kube::api::{Api, ListParams};
use operon_cluster::wait;

fn config_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../config")
}

async fn kubeconfig(f: &Fixture) -> Result<PathBuf> {
    match f.env.control_plane() {
        Some(cp) => Ok(cp.kubeconfig_path().to_path_buf()),
        None => std::env::var_os("KUBECONFIG")
            .map(PathBuf::from)
            .context("KUBECONFIG is not set"),
    }
}

fn kubectl(kubeconfig: &Path, args: &[&str]) -> Result<String> {
    let out = operon_cluster::apply::kubectl(kubeconfig)
        .args(args)
        .output()?;
    ensure!(
        out.status.success(),
        "kubectl {}: {}{}",
        args.join(" "),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

#[tokio::test]
async fn kustomize_default_applies_and_the_operator_pods_run() -> Result<()> {
    let f = Fixture::new("deploy").await?;
    let kc = kubeconfig(&f).await?;
    let default = config_dir().join("default");
    let default = default.to_str().context("path")?;
    let applied = kubectl(
        &kc,
        &["apply", "-k", default, "--server-side", "--force-conflicts"],
    )?;
    for deployment in [
        "deployment.apps/pod-operator-controller-manager",
        "deployment.apps/service-ca-operator-controller-manager",
    ] {
        ensure!(applied.contains(deployment), "{applied}");
    }
    // A second, server-side dry-run apply of the same tree validates every object again.
    let dry = kubectl(
        &kc,
        &[
            "apply",
            "-k",
            default,
            "--server-side",
            "--force-conflicts",
            "--dry-run=server",
        ],
    )?;
    ensure!(dry.contains("serverside-applied (server dry run)"), "{dry}");

    // config/default deploys every operator of the repository.
    for (namespace, name) in [
        (OPERATOR_NAMESPACE, "pod-operator"),
        ("service-ca-operator-system", "service-ca-operator"),
    ] {
        let deployments: Api<Deployment> = Api::namespaced(f.client.clone(), namespace);
        let deployment = format!("{name}-controller-manager");
        wait::until(
            &format!("{deployment}: 2 available replicas"),
            TIMEOUT,
            || async {
                let d = deployments
                    .get(&deployment)
                    .await
                    .map_err(|e| e.to_string())?;
                let available = d.status.and_then(|s| s.available_replicas).unwrap_or(0);
                if available == 2 {
                    Ok(())
                } else {
                    Err(format!("{available} available"))
                }
            },
        )
        .await?;
        let pods: Api<Pod> = Api::namespaced(f.client.clone(), namespace);
        let list = pods
            .list(&ListParams::default().labels(&format!(
                "app.kubernetes.io/name={name},control-plane=controller-manager"
            )))
            .await?;
        ensure!(list.items.len() == 2, "{name}: {} pods", list.items.len());
        for pod in list.items {
            let status = pod.status.unwrap_or_default();
            ensure!(
                status.phase.as_deref() == Some("Running"),
                "{:?}",
                status.phase
            );
            let node = pod.spec.and_then(|s| s.node_name).unwrap_or_default();
            ensure!(node.starts_with("kwok-node-"), "scheduled to {node}");
        }
    }
    Ok(())
}
