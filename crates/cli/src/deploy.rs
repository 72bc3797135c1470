//! `operon deploy` and `operon undeploy`: the objects of `config/default` server-side applied to
//! a cluster in dependency order, or deleted in the reverse order (see [`operon_cluster::apply`]).

use std::future::Future;
use std::path::Path;

use anyhow::{Context, Result, anyhow, bail};
use kube::Client;
use operon_cluster::apply;
use serde_json::Value;

use crate::kustomize;

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
/// nothing, and whatever the tag is made to name later is not run.
pub fn deploy(
    project_root: &Path,
    kubeconfig: Option<&Path>,
    context: Option<&str>,
    image: Option<&str>,
    push: Option<&Path>,
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
        apply(&client, &objects).await
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

/// Deletes what [`deploy`] applies, in the reverse order.
pub fn undeploy(
    project_root: &Path,
    kubeconfig: Option<&Path>,
    context: Option<&str>,
) -> Result<()> {
    let objects = objects(project_root, None)?;
    block_on(async {
        let client = client(kubeconfig, context).await?;
        delete(&client, &objects).await
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
        let e = deploy(dir.path(), None, None, None, None).expect_err("no config");
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
