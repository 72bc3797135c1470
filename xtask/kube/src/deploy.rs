//! `cargo xtask deploy`: the operators into a cluster the way a user deploys them (the talk's
//! slides 61–62 and 70–71) — their images built here, pushed to the cluster's registry, and
//! `kubectl apply -k config/default`. With the monitoring stack, also monitoring-operator (its
//! image carries the Prometheus Operator's CRDs) and the stack's six images, then
//! `kubectl apply -k config/monitoring-operator/default`.
//!
//! The Deployments run the images by the digest the registry stored for the push
//! (`localhost/operon/<operator>:v<version>@sha256:…`), not by their tag: config/ keeps the tag,
//! and the apply goes through a kustomize overlay whose `images:` pin each one. A rebuilt image
//! has a new digest, so its Deployment rolls out; an unchanged one applies as a no-op; and an
//! image pushed under the tag later is not what the node runs.

use std::collections::HashMap;
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
/// `given` are archives to deploy instead of building them, `(operator, archive)`.
pub fn build_images(
    monitoring: bool,
    given: &[(String, PathBuf)],
) -> Result<Vec<(&'static str, PathBuf)>> {
    let t0 = Instant::now();
    let mut operators = OPERATORS.to_vec();
    if monitoring {
        operators.extend(ADD_ON_OPERATORS);
    }
    for (operator, archive) in given {
        ensure!(
            operators.contains(&operator.as_str()),
            "--image-archive {operator}=…: {operator} is not an operator this deploys ({})",
            operators.join(", ")
        );
        ensure!(
            archive.is_file(),
            "--image-archive {operator}={}: no such file",
            archive.display()
        );
    }
    let given_for = |operator: &str| {
        given
            .iter()
            .rev()
            .find(|(o, _)| o == operator)
            .map(|(_, archive)| archive.clone())
    };
    let to_build: Vec<&str> = operators
        .iter()
        .copied()
        .filter(|o| given_for(o).is_none())
        .collect();
    let mut built = Vec::new();
    if !to_build.is_empty() {
        println!(
            "deploy: building the operators' images (static binaries, {LOCAL_IMAGE_PROFILE} \
             profile)"
        );
        built = operon_image::operator::build_many_with(
            &repo_root(),
            &to_build,
            None,
            LOCAL_IMAGE_PROFILE,
            &with_runtime_files,
        )
        .context("building the operators' images")?;
        println!("deploy: images built in {}", elapsed(t0));
    }
    let mut built: HashMap<&str, PathBuf> = to_build.into_iter().zip(built).collect();
    operators
        .into_iter()
        .map(|operator| {
            let archive = given_for(operator)
                .or_else(|| built.remove(operator))
                .with_context(|| format!("no image built for {operator}"))?;
            Ok((operator, archive))
        })
        .collect()
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

/// An operator's image as pushed: the reference its Deployment names in config/
/// (`localhost/operon/<operator>:v<version>`) and the digest of the manifest the registry
/// stored under it.
#[derive(Debug, Clone)]
pub struct Pushed {
    pub reference: String,
    pub digest: String,
}

impl Pushed {
    /// What the Deployment runs: the reference pinned to the digest
    /// (`localhost/operon/<operator>:v<version>@sha256:…`).
    pub fn pinned(&self) -> Result<String> {
        Ok(operon_cluster::node::images::by_digest(
            &self.reference,
            &self.digest,
        )?)
    }

    /// `(name, tag)` of the reference, as kustomize's `images:` match and set them.
    fn name_and_tag(&self) -> (&str, Option<&str>) {
        let last = self.reference.rfind('/').map_or(0, |i| i + 1);
        match self.reference[last..].find(':') {
            Some(colon) => (
                &self.reference[..last + colon],
                Some(&self.reference[last + colon + 1..]),
            ),
            None => (&self.reference, None),
        }
    }
}

/// Pushes the images to the registry the cluster announces, under the names its Deployments
/// use (`localhost/operon/<operator>:v<version>`); returns what was pushed, with the digests.
pub async fn push(
    client: &kube::Client,
    archives: &[(&'static str, PathBuf)],
) -> Result<Vec<Pushed>> {
    let registry = operon_cluster::node::announced_registry(client)
        .await
        .context("finding the cluster's registry")?;
    let mut pushed = Vec::new();
    for (operator, archive) in archives {
        let reference = manifests::image(operator);
        let (to, archive, name) = (registry.clone(), archive.clone(), reference.clone());
        let digest = tokio::task::spawn_blocking(move || {
            operon_cluster::node::push_to(&to, &archive, &name)
        })
        .await??;
        let image = Pushed { reference, digest };
        println!(
            "deploy: pushed {} to {registry}: {}",
            image.reference,
            image.pinned()?
        );
        pushed.push(image);
    }
    Ok(pushed)
}

/// The kustomization of an overlay of `base` (a path relative to the overlay) that runs each of
/// `images` by its digest.
fn overlay(base: &Path, images: &[Pushed]) -> Result<String> {
    let images = images
        .iter()
        .map(|image| {
            let (name, tag) = image.name_and_tag();
            let mut rule = serde_json::json!({ "name": name, "digest": image.digest });
            if let Some(tag) = tag {
                rule["newTag"] = tag.into();
            }
            rule
        })
        .collect::<Vec<_>>();
    let kustomization = serde_json::json!({
        "apiVersion": "kustomize.config.k8s.io/v1beta1",
        "kind": "Kustomization",
        "resources": [base.to_string_lossy()],
        "images": images,
    });
    Ok(format!(
        "# `cargo xtask deploy`: {} with the images just pushed, run by digest.\n{}",
        base.display(),
        serde_saphyr::to_string(&kustomization).context("writing the kustomization")?
    ))
}

/// `to` as a path relative to the directory `from` (kustomize refuses absolute paths).
fn relative(from: &Path, to: &Path) -> PathBuf {
    let common = from
        .components()
        .zip(to.components())
        .take_while(|(a, b)| a == b)
        .count();
    let mut path = PathBuf::new();
    for _ in from.components().skip(common) {
        path.push("..");
    }
    for component in to.components().skip(common) {
        path.push(component);
    }
    path
}

/// `kubectl apply -k <dir>` (`dir` relative to the repository, e.g. `config/default`) with the
/// `pushed` images run by their digests: an overlay of `dir` in a temporary directory whose
/// kustomize `images:` set each image's digest, as a user pins images in an overlay of their
/// own. Images `dir` doesn't use are left out by kustomize.
pub fn apply_kustomization(kubeconfig: &Path, dir: &str, pushed: &[Pushed]) -> Result<()> {
    let work = write_overlay(dir, pushed)?;
    println!(
        "deploy: {dir}, its images by digest ({}):",
        work.path().join("kustomization.yaml").display()
    );
    for image in pushed {
        println!("deploy:   {}", image.pinned()?);
    }
    let overlay_dir = work.path().to_string_lossy().to_string();
    kubectl(kubeconfig, &["apply", "-k", &overlay_dir])
}

/// A temporary directory holding the overlay of [`apply_kustomization`].
fn write_overlay(dir: &str, pushed: &[Pushed]) -> Result<tempfile::TempDir> {
    let base = repo_root().join(dir);
    let base = base
        .canonicalize()
        .with_context(|| format!("finding {}", base.display()))?;
    let work = tempfile::Builder::new()
        .prefix("operon-deploy-")
        .tempdir()
        .context("creating a directory for the kustomize overlay")?;
    // Canonical, as `base` is, for the relative path between them.
    let at = work
        .path()
        .canonicalize()
        .context("finding the overlay's directory")?;
    let text = overlay(&relative(&at, &base), pushed)?;
    std::fs::write(at.join("kustomization.yaml"), text).context("writing the overlay")?;
    Ok(work)
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

/// `kubectl apply -k config/default` with the `pushed` images by digest, then waits for every
/// operator's Deployment.
pub fn apply(kubeconfig: &Path, pushed: &[Pushed]) -> Result<()> {
    apply_kustomization(kubeconfig, "config/default", pushed)?;
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

/// `kubectl apply -k config/monitoring-operator/default` with the `pushed` images by digest.
pub fn apply_monitoring(kubeconfig: &Path, pushed: &[Pushed]) -> Result<()> {
    apply_kustomization(kubeconfig, "config/monitoring-operator/default", pushed)
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

/// Builds (but for the `given` archives, `(operator, archive)`), pushes and applies.
pub async fn deploy(
    kubeconfig: &Path,
    monitoring: bool,
    given: Vec<(String, PathBuf)>,
) -> Result<()> {
    let t0 = Instant::now();
    let archives = tokio::task::spawn_blocking(move || build_images(monitoring, &given)).await??;
    let client = crate::demo::client(kubeconfig).await?;
    let pushed = push(&client, &archives).await?;
    if monitoring {
        push_monitoring_images(&client).await?;
    }
    let (config, images) = (kubeconfig.to_path_buf(), pushed.clone());
    tokio::task::spawn_blocking(move || apply(&config, &images)).await??;
    if monitoring {
        let config = kubeconfig.to_path_buf();
        tokio::task::spawn_blocking(move || apply_monitoring(&config, &pushed)).await??;
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

#[cfg(test)]
mod tests {
    use super::*;

    const DIGEST: &str = "sha256:4c4246684a89e20a6a366eb38fee00bab90224963636228e6ff91ccdbe4d1373";

    #[test]
    fn paths_are_made_relative_for_kustomize() {
        let cases = [
            (
                "/tmp/operon-deploy-x",
                "/work/r/config/default",
                "../../work/r/config/default",
            ),
            ("/work/r/.o", "/work/r/config/default", "../config/default"),
            ("/", "/work/r", "work/r"),
        ];
        for (from, to, want) in cases {
            assert_eq!(relative(Path::new(from), Path::new(to)), Path::new(want));
        }
    }

    #[test]
    fn references_split_into_what_kustomize_matches() {
        let split = |reference: &str| {
            let pushed = Pushed {
                reference: reference.into(),
                digest: DIGEST.into(),
            };
            let (name, tag) = pushed.name_and_tag();
            (name.to_string(), tag.map(str::to_string))
        };
        assert_eq!(
            split("localhost/operon/pod-operator:v0.1.0"),
            (
                "localhost/operon/pod-operator".into(),
                Some("v0.1.0".into())
            )
        );
        assert_eq!(
            split("10.200.0.1:5000/operon/x"),
            ("10.200.0.1:5000/operon/x".into(), None)
        );
    }

    /// kustomize (kubectl's, from `cargo xtask k8s build`) renders config/default through the
    /// overlay with pod-operator's image by digest, and the other operators' as config/ has them.
    #[test]
    fn the_overlay_runs_the_pushed_image_by_its_digest() -> Result<()> {
        let pushed = [Pushed {
            reference: manifests::image("pod-operator"),
            digest: DIGEST.into(),
        }];
        let work = write_overlay("config/default", &pushed)?;
        let out = std::process::Command::new(operon_assets::default_bin_dir().join("kubectl"))
            .arg("kustomize")
            .arg(work.path())
            .output()
            .context("running kubectl kustomize")?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            out.status.success(),
            "{text}{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let images: Vec<&str> = text
            .lines()
            .filter_map(|l| l.trim().strip_prefix("image: "))
            .collect();
        let mut want = vec![
            manifests::image("credentials-operator"),
            pushed[0].pinned()?,
            manifests::image("service-ca-operator"),
        ];
        want.sort();
        let mut images: Vec<String> = images.into_iter().map(str::to_string).collect();
        images.sort();
        assert_eq!(images, want);
        assert_eq!(
            pushed[0].pinned()?,
            format!(
                "localhost/operon/pod-operator:v{}@{DIGEST}",
                env!("CARGO_PKG_VERSION")
            )
        );
        Ok(())
    }
}
