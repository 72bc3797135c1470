//! `operon deploy`, `undeploy`, `install`, `uninstall` and `push`: the objects of `config/default` server-side applied to
//! a cluster in dependency order, or deleted in the reverse order (see [`operon_cluster::apply`]).

use std::future::Future;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, anyhow, bail};
use kube::Client;
use operon_cluster::apply;
use serde_json::Value;

use crate::{kustomize, lifecycle};

/// The field manager of everything `deploy` applies.
pub const FIELD_MANAGER: &str = "operon";

/// The objects `deploy` applies: `project_root/config/default` rendered, with the operator's
/// image replaced by `image` when given.
pub fn objects(project_root: &Path, image: Option<&str>) -> Result<Vec<Value>> {
    let dir = project_root.join("config").join("default");
    let mut objects =
        kustomize::render(&dir).with_context(|| format!("rendering {}", dir.display()))?;
    if let Some(image) = image {
        kustomize::override_manager_image(&mut objects, image)?;
    }
    Ok(objects)
}

/// Applies the project's `config/default` to the cluster of `kubeconfig` and `context`
/// (default: inferred from the environment, see [`client`]), with the operator's image replaced by `image` when given. With
/// `push`, the OCI archive `push` is first pushed as that image to the registry the cluster
/// announces (`kube-public/local-registry-hosting`, as `cargo xtask cluster up`'s does), so
/// that its nodes run it, and the Deployment runs it by the digest the registry stored
/// (`<image>@sha256:…`): a rebuilt image rolls the operator out, an unchanged one changes
/// nothing, and whatever the tag is made to name later is not run. With `wait`, waits that
/// long for the Deployment to roll out, as `kubectl rollout status` does.
pub fn deploy(
    project_root: &Path,
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    image: Option<&str>,
    push: Option<&Path>,
    wait: Option<Duration>,
) -> Result<()> {
    // Rendering first: a broken tree fails before any connection is tried.
    let mut objects = objects(project_root, image)?;
    block_on(async {
        let client = client(kubeconfig, context).await?;
        if let Some(archive) = push {
            let image = kustomize::manager_image(&objects)
                .context("config/default has no manager container whose image to push")?;
            let pinned = push_image(&client, archive, &image).await?;
            kustomize::override_manager_image(&mut objects, &pinned)?;
        }
        apply(&client, &objects).await?;
        match wait {
            Some(timeout) => {
                lifecycle::wait_rollouts(&client, &objects, timeout, &|line| {
                    println!("deploy: {line}")
                })
                .await
            }
            None => {
                println!("deploy: not waiting for the rollout (see `kubectl rollout status`)");
                Ok(())
            }
        }
    })
}

/// `operon push`: pushes the OCI archive `archive` as the project's image (`image`, default
/// the manager's image of `config/default`) to the registry the cluster announces.
pub fn push(
    project_root: &Path,
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    image: Option<&str>,
    archive: &Path,
) -> Result<()> {
    let objects = objects(project_root, image)?;
    let image = kustomize::manager_image(&objects)
        .context("config/default has no manager container whose image to push")?;
    block_on(async {
        let client = client(kubeconfig, context).await?;
        push_image(&client, archive, &image).await.map(|_| ())
    })
}

/// The objects of `config/crd`: the project's CustomResourceDefinitions.
fn crd_objects(project_root: &Path) -> Result<Vec<Value>> {
    let dir = project_root.join("config").join("crd");
    kustomize::render(&dir).with_context(|| format!("rendering {}", dir.display()))
}

/// `operon install`: applies the project's CRDs (`config/crd`) and waits until they are served.
pub fn install(
    project_root: &Path,
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<()> {
    let objects = crd_objects(project_root)?;
    block_on(async {
        let client = client(kubeconfig, context).await?;
        apply::apply_all(&client, &objects, FIELD_MANAGER, &mut |line| {
            println!("install: {line}")
        })
        .await?;
        println!("install: {} CRD(s) installed", objects.len());
        Ok(())
    })
}

/// `operon uninstall`: deletes the project's custom resources, waits up to `timeout` for the
/// operator (which must be running) to finalize them, then deletes the CRDs and waits until
/// they are gone.
pub fn uninstall(
    project_root: &Path,
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    timeout: Duration,
) -> Result<()> {
    let crds = crd_objects(project_root)?;
    block_on(async {
        let client = client(kubeconfig, context).await?;
        let say = |line: String| println!("uninstall: {line}");
        lifecycle::delete_custom_resources(&client, &crds, timeout, &say).await?;
        apply::delete_all(&client, &crds, &mut |line| say(line)).await?;
        lifecycle::wait_crds_gone(&client, &crds, timeout).await?;
        println!("uninstall: {} CRD(s) removed", crds.len());
        Ok(())
    })
}

/// Pushes `archive` as `image` to the cluster's announced registry; returns `image` pinned to
/// the digest of what was pushed.
async fn push_image(client: &Client, archive: &Path, image: &str) -> Result<String> {
    if !archive.is_file() {
        bail!(
            "{} does not exist: build the image first (`operon build`)",
            archive.display()
        );
    }
    let registry = operon_cluster::node::announced_registry(client)
        .await
        .context("finding where to push the image")?;
    let (to, from, reference) = (registry.clone(), archive.to_path_buf(), image.to_string());
    let digest =
        tokio::task::spawn_blocking(move || operon_cluster::node::push_to(&to, &from, &reference))
            .await??;
    let pinned = operon_cluster::node::images::by_digest(image, &digest)?;
    println!("deploy: pushed {image} to the cluster's registry {registry}: {pinned}");
    Ok(pinned)
}

/// Deletes what [`deploy`] applies: first the project's custom resources, in all namespaces,
/// waiting up to `timeout` until the operator has finalized them (it still runs), then the
/// rest in the reverse order; then waits until the CRDs are gone. Fails, naming them, when
/// resources or CRDs remain.
pub fn undeploy(
    project_root: &Path,
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    timeout: Duration,
) -> Result<()> {
    let objects = objects(project_root, None)?;
    block_on(async {
        let client = client(kubeconfig, context).await?;
        let crds = lifecycle::crds(&objects);
        lifecycle::delete_custom_resources(&client, &crds, timeout, &|line| {
            println!("undeploy: {line}")
        })
        .await?;
        delete(&client, &objects).await?;
        lifecycle::wait_crds_gone(&client, &crds, timeout).await?;
        println!("undeploy: {} objects deleted", objects.len());
        Ok(())
    })
}

fn block_on(future: impl Future<Output = Result<()>>) -> Result<()> {
    tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?
        .block_on(future)
}

/// A client for the cluster of `kubeconfig` (a file, or a list of files as in `$KUBECONFIG`,
/// merged as kubectl merges them) and `context` (default: the current-context), else of
/// `$KUBECONFIG`, `~/.kube/config` or the in-cluster service account; fails unless the cluster
/// answers.
pub async fn client(kubeconfig: Option<&Path>, context: Option<&str>) -> Result<Client> {
    let loaded = operon_runtime::kubeconfig::load(kubeconfig.map(Path::as_os_str), context)
        .await
        .context("loading the cluster configuration")?;
    let source = loaded.source();
    let url = loaded.config.cluster_url.clone();
    let client = Client::try_from(loaded.config).context("creating the Kubernetes client")?;
    client
        .apiserver_version()
        .await
        .map_err(explain)
        .with_context(|| format!("connecting to the cluster at {url} ({source})"))?;
    Ok(client)
}

/// Server-side applies `objects` (field manager [`FIELD_MANAGER`], forcing conflicts) in
/// dependency order, waiting for CustomResourceDefinitions to be served; prints one line per
/// object. Stops at the first failure.
pub async fn apply(client: &Client, objects: &[Value]) -> Result<()> {
    apply::apply_all(client, objects, FIELD_MANAGER, &mut |line| {
        println!("deploy: {line}")
    })
    .await?;
    println!("deploy: {} objects applied", objects.len());
    Ok(())
}

/// Deletes `objects` in the reverse of [`apply`]'s order, printing each; objects already gone
/// are fine. Goes on after a failure and reports all failures at the end.
pub async fn delete(client: &Client, objects: &[Value]) -> Result<()> {
    apply::delete_all(client, objects, &mut |line| println!("undeploy: {line}")).await?;
    Ok(())
}

/// The API server's message for API errors (the error's own text repeats the whole status).
fn explain(e: kube::Error) -> anyhow::Error {
    match e {
        kube::Error::Api(s) => anyhow!("{} ({}, HTTP {})", s.message, s.reason, s.code),
        e => anyhow::Error::new(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_config_tree_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = deploy(dir.path(), None, None, None, None, None).expect_err("no config");
        assert!(format!("{e:#}").contains("config/default"), "{e:#}");
    }

    #[tokio::test]
    async fn an_unreachable_cluster_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let kubeconfig = dir.path().join("kubeconfig");
        // Port 1 on the loopback address: nothing listens there.
        std::fs::write(
            &kubeconfig,
            "apiVersion: v1\nkind: Config\ncurrent-context: c\n\
             clusters: [{name: k, cluster: {server: 'https://127.0.0.1:1'}}]\n\
             users: [{name: u, user: {token: t}}]\n\
             contexts: [{name: c, context: {cluster: k, user: u}}]\n",
        )
        .expect("write");
        let e = client(Some(&kubeconfig), None)
            .await
            .err()
            .expect("unreachable");
        assert!(
            format!("{e:#}").contains("connecting to the cluster at https://127.0.0.1:1"),
            "{e:#}"
        );
        assert!(format!("{e:#}").contains("context \"c\""), "{e:#}");
    }

    #[test]
    fn an_unreadable_kubeconfig_is_an_error_naming_it() {
        let dir = tempfile::tempdir().expect("tempdir");
        let missing = dir.path().join("kubeconfig");
        let e =
            operon_runtime::kubeconfig::read(std::slice::from_ref(&missing)).expect_err("missing");
        assert!(
            format!("{e:#}").contains(&missing.display().to_string()),
            "{e:#}"
        );
    }
}
