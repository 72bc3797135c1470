//! `cargo xtask deploy` after a rebuild: the Deployment names the new image by its digest and
//! the node runs it, and a tag moved afterwards is not what a new Pod runs.
//!
//! A rebuilt operator binary takes minutes; an image of the same binary with one more label
//! is new content just as well (another config, hence another manifest digest) and builds in
//! seconds. Both builds are pushed under the same tag by the real `deploy` command.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{Event, Pod};
use kube::Api;
use kube::api::{DeleteParams, ListParams};
use operon_cluster::wait;
use xtask::cli::LOCAL_IMAGE_PROFILE;
use xtask::{ADD_ON_OPERATORS, OPERATORS};

use super::{POD_OPERATOR_NS, deployed, node_alone, repo_root, xtask_deploy};

const DEPLOYMENT: &str = "pod-operator-controller-manager";

/// The reference config/ gives pod-operator's Deployment.
fn tagged() -> String {
    format!(
        "localhost/operon/pod-operator:v{}",
        env!("CARGO_PKG_VERSION")
    )
}

/// The digest of the manifest in an OCI archive (its `index.json`): what the registry stores
/// it under when it is pushed unchanged.
fn archive_digest(archive: &Path) -> Result<String> {
    let out = Command::new("tar")
        .arg("-xOf")
        .arg(archive)
        .arg("index.json")
        .output()?;
    ensure!(
        out.status.success(),
        "tar: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    let index: serde_json::Value = serde_json::from_slice(&out.stdout)?;
    let digest = index["manifests"][0]["digest"].as_str().unwrap_or_default();
    operon_image::manifest_digest(digest).with_context(|| format!("index.json: {index}"))
}

/// The operators' images as `cargo xtask deploy --monitoring` built them (the same packages in
/// one build, so cargo has nothing to do), into `dir`; pod-operator's with the label
/// `operon.dev/test-build=<build>`, at `dir/pod-operator-<build>.oci.tar`. The others' are
/// built once per `dir` and kept (by the image stamp) for later builds.
async fn build(dir: &Path, build: &str) -> Result<Vec<(String, PathBuf)>> {
    let operators: Vec<&'static str> = OPERATORS.into_iter().chain(ADD_ON_OPERATORS).collect();
    let outs: Vec<PathBuf> = operators
        .iter()
        .map(|&o| match o {
            "pod-operator" => dir.join(format!("pod-operator-{build}.oci.tar")),
            other => dir.join(format!("{other}.oci.tar")),
        })
        .collect();
    let label = build.to_string();
    let (packages, out_paths) = (operators.clone(), outs.clone());
    tokio::task::spawn_blocking(move || {
        operon_image::operator::build_many_with(
            &repo_root(),
            &packages,
            Some(out_paths),
            LOCAL_IMAGE_PROFILE,
            &|package, image| {
                Ok(match package {
                    "pod-operator" => image.label("operon.dev/test-build", &label),
                    _ => image,
                })
            },
        )
    })
    .await??;
    Ok(operators
        .into_iter()
        .zip(outs)
        .filter(|(o, _)| OPERATORS.contains(o))
        .map(|(o, archive)| (o.to_string(), archive))
        .collect())
}

/// `cargo xtask deploy --image-archive <operator>=<archive>…`: config/default's operators, none
/// of them built by the command.
fn deploy(kubeconfig: &Path, archives: &[(String, PathBuf)]) -> Result<()> {
    let args: Vec<String> = archives
        .iter()
        .flat_map(|(o, a)| ["--image-archive".into(), format!("{o}={}", a.display())])
        .collect();
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    xtask_deploy(kubeconfig, &args)
}

fn manager_image(deployment: &Deployment) -> Option<String> {
    deployment
        .spec
        .as_ref()?
        .template
        .spec
        .as_ref()?
        .containers
        .iter()
        .find(|c| c.name == "manager")?
        .image
        .clone()
}

/// Pod name and the digest its manager container runs (the manifest digest of its
/// `imageID`), for each of pod-operator's Pods not being deleted; all of them ready.
async fn running(pods: &Api<Pod>) -> Result<Vec<(String, String)>, String> {
    let list = pods
        .list(&ListParams::default().labels("app.kubernetes.io/name=pod-operator"))
        .await
        .map_err(|e| e.to_string())?;
    let mut out = Vec::new();
    for pod in list.items {
        if pod.metadata.deletion_timestamp.is_some() {
            continue;
        }
        let name = pod.metadata.name.clone().unwrap_or_default();
        let status = pod
            .status
            .and_then(|s| s.container_statuses)
            .unwrap_or_default();
        let manager = status
            .iter()
            .find(|c| c.name == "manager" && c.ready)
            .ok_or_else(|| format!("{name}: manager not ready"))?;
        let digest = manager
            .image_id
            .rsplit_once('@')
            .map(|(_, d)| d.to_string())
            .ok_or_else(|| format!("{name}: imageID {:?}", manager.image_id))?;
        out.push((name, digest));
    }
    Ok(out)
}

/// Waits until pod-operator's two replicas run `digest`; returns their names.
async fn until_running(pods: &Api<Pod>, digest: &str) -> Result<Vec<String>> {
    Ok(wait::until(
        &format!("pod-operator's two replicas running {digest}"),
        Duration::from_secs(180),
        || async {
            let running = running(pods).await?;
            match running.len() == 2 && running.iter().all(|(_, d)| d == digest) {
                true => Ok(running.into_iter().map(|(name, _)| name).collect()),
                false => Err(format!("{running:?}")),
            }
        },
    )
    .await?)
}

/// `ctr` against the node's containerd, in the CRI plugin's namespace.
fn ctr(node_dir: &Path, args: &[&str]) -> Result<String> {
    let socket = node_dir.join("run/containerd/containerd.sock");
    let out = Command::new("ctr")
        .arg("--address")
        .arg(&socket)
        .args(["--namespace", "k8s.io"])
        .args(args)
        .output()
        .context("running ctr (Debian's containerd)")?;
    ensure!(
        out.status.success(),
        "ctr {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// Makes the node forget the images with these manifest digests (every name it has for them),
/// as a node that never ran them, or whose image garbage collection removed them, would be:
/// the next Pod to need one pulls it.
fn forget(node_dir: &Path, digests: &[&str]) -> Result<()> {
    let list = ctr(node_dir, &["images", "ls"])?;
    // REF TYPE DIGEST SIZE PLATFORMS LABELS
    let refs: Vec<&str> = list
        .lines()
        .skip(1)
        .filter_map(|l| {
            let columns: Vec<&str> = l.split_whitespace().collect();
            (columns.len() > 2 && digests.contains(&columns[2])).then_some(columns[0])
        })
        .collect();
    ensure!(
        !refs.is_empty(),
        "the node has none of {digests:?}:\n{list}"
    );
    let mut args = vec!["images", "rm"];
    args.extend(refs);
    ctr(node_dir, &args)?;
    let left = ctr(node_dir, &["images", "ls"])?;
    ensure!(
        !digests.iter().any(|d| left.contains(d)),
        "still on the node:\n{left}"
    );
    Ok(())
}

#[tokio::test]
async fn a_redeploy_runs_the_rebuilt_image_by_digest_not_by_tag() -> Result<()> {
    let d = deployed().await?;
    // pod-operator's Pods are replaced: no test may use or query them meanwhile.
    let _node = node_alone("a_redeploy_runs_the_rebuilt_image_by_digest_not_by_tag").await?;
    let client = d.env.client().await?;
    let node_dir = d
        .env
        .control_plane()
        .and_then(|cp| cp.node())
        .context("no real node")?
        .dir()
        .to_path_buf();
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), POD_OPERATOR_NS);
    let pods: Api<Pod> = Api::namespaced(client.clone(), POD_OPERATOR_NS);
    let others: Vec<(Api<Deployment>, String)> = ["credentials-operator", "service-ca-operator"]
        .iter()
        .map(|o| {
            let api = Api::namespaced(client.clone(), &format!("{o}-system"));
            (api, format!("{o}-controller-manager"))
        })
        .collect();
    let generations = || async {
        let mut generations = Vec::new();
        for (api, name) in &others {
            generations.push(api.get(name).await?.metadata.generation);
        }
        anyhow::Ok(generations)
    };

    // Two builds, different only by a label whose value no earlier run used.
    let work = tempfile::tempdir()?;
    let nonce = SystemTime::now().duration_since(UNIX_EPOCH)?.as_nanos();
    let first = build(work.path(), &format!("{nonce}-1")).await?;
    let second = build(work.path(), &format!("{nonce}-2")).await?;
    let pod_operator = |archives: &[(String, PathBuf)]| -> Result<PathBuf> {
        let (_, archive) = archives
            .iter()
            .find(|(o, _)| o == "pod-operator")
            .context("no pod-operator archive")?;
        Ok(archive.clone())
    };
    let one = archive_digest(&pod_operator(&first)?)?;
    let two = archive_digest(&pod_operator(&second)?)?;
    ensure!(one != two, "both builds have the digest {one}");

    // Each deploy: the Deployment names the image by the digest of what was built, and both
    // replicas run it (the Pods' imageID, from the node's containerd).
    let mut unchanged = None;
    for (archives, digest) in [(&first, &one), (&second, &two)] {
        deploy(&d.kubeconfig, archives)?;
        let image = manager_image(&deployments.get(DEPLOYMENT).await?);
        ensure!(
            image == Some(format!("{}@{digest}", tagged())),
            "pod-operator's Deployment runs {image:?}, not the build with digest {digest}"
        );
        until_running(&pods, digest).await?;
        // The other operators' images are the same archives the second time: same digests,
        // their Deployments applied as they were.
        let now = generations().await?;
        if let Some(before) = unchanged.replace(now.clone()) {
            ensure!(
                now == before,
                "an operator whose image did not change was rolled out: generations {before:?} \
                 → {now:?}"
            );
        }
    }

    // The tag moved back to the first build (as anyone who may push could move it), and the
    // node made to pull again: a new replica still runs the second build.
    let swapped = d.env.push(&pod_operator(&first)?, &tagged()).await?;
    ensure!(swapped == one, "pushed the first build again as {swapped}");
    forget(&node_dir, &[&one, &two])?;
    let names = until_running(&pods, &two).await?;
    pods.delete(&names[0], &DeleteParams::default()).await?;
    let now = until_running(&pods, &two).await?;
    let new = now
        .iter()
        .find(|n| !names.contains(n))
        .context("no new replica")?;
    // It was pulled (not found on the node), by digest.
    let events: Api<Event> = Api::namespaced(client.clone(), POD_OPERATOR_NS);
    wait::until(
        &format!("kubelet's Pulled event for {new}"),
        Duration::from_secs(60),
        || async {
            let list = events
                .list(&ListParams::default().fields(&format!("involvedObject.name={new}")))
                .await
                .map_err(|e| e.to_string())?;
            let pulled = list
                .items
                .iter()
                .find(|e| e.reason.as_deref() == Some("Pulled"));
            match pulled.and_then(|e| e.message.clone()) {
                Some(m) if m.contains(&two) && !m.contains("already present") => Ok(()),
                other => Err(format!("{other:?}")),
            }
        },
    )
    .await?;
    Ok(())
}
