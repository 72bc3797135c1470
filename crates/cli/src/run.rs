//! `operon run`: the operator out of the cluster, against the current kubeconfig's cluster or a
//! local control plane (Operon's envtest: etcd, kube-apiserver, kube-controller-manager,
//! kube-scheduler and a kwok node), with its CRDs installed first.

use std::path::{Path, PathBuf};
use std::process::Stdio;

use anyhow::{Context, Result, bail};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use operon_cluster::ControlPlane;

use crate::build;
use crate::project::Project;

/// The cluster `operon run` runs against.
pub enum Target {
    /// A kubeconfig's (a file or a list; default: `$KUBECONFIG`, then `~/.kube/config`), in
    /// `context` (default: its current-context).
    Kubeconfig {
        kubeconfig: Option<PathBuf>,
        context: Option<String>,
    },
    /// A local control plane started for the run, with a real node or kwok's fake one.
    Local { real_node: bool },
}

/// `operon run [--kubeconfig K [--context C] | --local [--real-node]] [-- <operator run flags>]`.
pub fn run(project: &Project, target: Target, args: &[String]) -> Result<()> {
    let binary = build::debug_binary(project)?;
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run_async(project, &binary, target, args))
}

async fn run_async(
    project: &Project,
    binary: &Path,
    target: Target,
    args: &[String],
) -> Result<()> {
    let (local, real_node, kubeconfig, context) = match target {
        Target::Kubeconfig {
            kubeconfig,
            context,
        } => (false, false, kubeconfig, context),
        Target::Local { real_node } => (true, real_node, None, None),
    };
    let control_plane = if local {
        let dir = build::target_dir(&project.root)?.join("operon-run");
        let _ = std::fs::remove_dir_all(&dir);
        println!("run: starting a local control plane in {}", dir.display());
        let cp = ControlPlane::builder()
            .name(&project.name)
            .real_node(real_node)
            .dir(&dir)
            .start()
            .await
            .context("starting the local control plane (the Kubernetes binaries come from `cargo xtask k8s build` in an Operon checkout)")?;
        println!(
            "run: control plane up; use it with\n  export KUBECONFIG={}",
            cp.kubeconfig_path().display()
        );
        Some(cp)
    } else {
        None
    };
    let kubeconfig: Option<PathBuf> = match &control_plane {
        Some(cp) => Some(cp.kubeconfig_path().to_path_buf()),
        None => kubeconfig,
    };
    let client = crate::deploy::client(kubeconfig.as_deref(), context.as_deref())
        .await
        .context("no cluster to run against: pass --kubeconfig or --local")?;

    let crds = tokio::process::Command::new(binary)
        .arg("crds")
        .output()
        .await?;
    if !crds.status.success() {
        bail!(
            "{} crds failed: {}",
            project.name,
            String::from_utf8_lossy(&crds.stderr)
        );
    }
    let text = String::from_utf8(crds.stdout)?;
    let crds = parse_crds(&text)
        .with_context(|| format!("parsing the CRDs `{} crds` printed", project.name))?;
    for crd in crds {
        let name = crd.metadata.name.clone().unwrap_or_default();
        operon_cluster::apply::apply_crd(&client, &crd, "operon")
            .await
            .with_context(|| format!("installing CRD {name}"))?;
        println!("run: installed CRD {name}");
    }

    let mut cmd = tokio::process::Command::new(binary);
    cmd.arg("run").arg("--leader-elect=false");
    if let Some(path) = &kubeconfig {
        cmd.arg("--kubeconfig").arg(path);
    }
    if let Some(context) = &context {
        cmd.arg("--context").arg(context);
    }
    cmd.args(args).stdin(Stdio::null()).kill_on_drop(true);
    let mut child = cmd
        .spawn()
        .with_context(|| format!("starting {}", binary.display()))?;
    println!("run: {} running (Ctrl-C stops it)", project.name);
    let mut terminate = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    let status = tokio::select! {
        status = child.wait() => status?,
        _ = tokio::signal::ctrl_c() => stop(&mut child).await?,
        _ = terminate.recv() => stop(&mut child).await?,
    };
    if let Some(cp) = control_plane {
        cp.stop();
    }
    if !status.success() {
        bail!("{} exited with {status}", project.name);
    }
    Ok(())
}

/// The CRDs of a multi-document YAML stream; empty documents are skipped.
fn parse_crds(text: &str) -> Result<Vec<CustomResourceDefinition>> {
    let documents: Vec<Option<CustomResourceDefinition>> = serde_saphyr::from_multiple(text)?;
    Ok(documents.into_iter().flatten().collect())
}

/// SIGTERM to the operator (it finishes in-flight work), then its exit status.
async fn stop(child: &mut tokio::process::Child) -> Result<std::process::ExitStatus> {
    if let Some(pid) = child.id() {
        let pid = nix::unistd::Pid::from_raw(i32::try_from(pid)?);
        // A Ctrl-C reached it too (same process group); a second signal is harmless.
        let _ = nix::sys::signal::kill(pid, nix::sys::signal::Signal::SIGTERM);
    }
    Ok(child.wait().await?)
}

#[cfg(test)]
mod tests {
    use super::*;

    const CRD: &str = "apiVersion: apiextensions.k8s.io/v1\nkind: CustomResourceDefinition\n\
        metadata:\n  name: NAME\nspec:\n  group: g.example.com\n  names: {kind: K, plural: ks}\n\
        \x20 scope: Namespaced\n  versions: []\n";

    #[test]
    fn crds_are_read_document_by_document() {
        // A leading separator, an empty document, a separator with a comment.
        let described = CRD
            .replace("NAME", "b.g.example.com")
            .replace("  versions: []\n", "  versions: []\n  # note\n");
        let text = format!(
            "---\n{}---\n\n--- # the second\n{described}",
            CRD.replace("NAME", "a.g.example.com")
        );
        let crds = parse_crds(&text).expect("parse");
        let names: Vec<_> = crds.iter().map(|c| c.metadata.name.clone()).collect();
        assert_eq!(
            names,
            [
                Some("a.g.example.com".to_string()),
                Some("b.g.example.com".to_string())
            ]
        );
        assert!(parse_crds("kind: [").is_err());
    }
}
