//! `operon deploy` and `undeploy` with a kubeconfig split over two files, as kubectl takes it:
//! `KUBECONFIG=a:b`, where `a`'s current-context points at a server nobody listens on and `b`
//! holds the real control plane's context, chosen with `--context`. Without it, or with a
//! context no file has, the command fails naming the context and the files.

use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::Api;
use kube::config::Kubeconfig;
use operon_envtest::random_suffix;

const TIMEOUT: Duration = Duration::from_secs(60);

/// A project whose config/default is one ConfigMap in `namespace`.
fn write_project(root: &Path, namespace: &str, name: &str) -> Result<()> {
    std::fs::write(
        root.join("operon.toml"),
        "name = \"contexts\"\ndomain = \"example.com\"\n",
    )?;
    let dir = root.join("config/default");
    std::fs::create_dir_all(&dir)?;
    std::fs::write(
        dir.join("kustomization.yaml"),
        "resources:\n- configmap.yaml\n",
    )?;
    std::fs::write(
        dir.join("configmap.yaml"),
        format!(
            "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: {name}\n  namespace: {namespace}\ndata:\n  from: good\n"
        ),
    )?;
    Ok(())
}

/// `a`: context `bad` (server on loopback port 1, where nothing listens), current. `b`: the
/// test control plane's own kubeconfig. Returns `(a, b, b's context)`.
fn split_kubeconfig(dir: &Path, control_plane: &Path) -> Result<(PathBuf, PathBuf, String)> {
    let b = Kubeconfig::read_from(control_plane)?;
    let good = b
        .current_context
        .clone()
        .context("the control plane's kubeconfig has no current-context")?;
    ensure!(good != "bad", "the control plane's context is called bad");
    let a = dir.join("a.kubeconfig");
    std::fs::write(
        &a,
        "apiVersion: v1\nkind: Config\ncurrent-context: bad\n\
         clusters: [{name: bad, cluster: {server: 'https://127.0.0.1:1'}}]\n\
         users: [{name: bad, user: {token: nobody}}]\n\
         contexts: [{name: bad, context: {cluster: bad, user: bad}}]\n",
    )?;
    Ok((a, control_plane.to_path_buf(), good))
}

fn operon(project: &Path, kubeconfig: &std::ffi::OsStr, args: &[&str]) -> Result<Output> {
    let started = Instant::now();
    let output = Command::new(env!("CARGO_BIN_EXE_operon"))
        .args(args)
        .current_dir(project)
        .env("KUBECONFIG", kubeconfig)
        .output()
        .with_context(|| format!("running operon {args:?}"))?;
    eprintln!(
        "operon {} ({:?}): {}",
        args.join(" "),
        started.elapsed(),
        output.status
    );
    Ok(output)
}

fn fails_with(output: &Output, expected: &[&str]) -> Result<()> {
    let stderr = String::from_utf8_lossy(&output.stderr);
    ensure!(!output.status.success(), "succeeded:\n{stderr}");
    for e in expected {
        ensure!(stderr.contains(e), "no {e:?} in:\n{stderr}");
    }
    Ok(())
}

fn succeeds(output: &Output) -> Result<()> {
    ensure!(
        output.status.success(),
        "{}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    Ok(())
}

#[tokio::test]
async fn deploy_and_undeploy_pick_a_context_of_a_kubeconfig_list() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let control_plane = env
        .control_plane()
        .map(|cp| cp.kubeconfig_path().to_path_buf())
        .or_else(|| std::env::var_os("KUBECONFIG").map(Into::into))
        .context("no kubeconfig for the test cluster")?;
    let ns = env.namespace("contexts").await?.name().to_string();
    let client = env.client().await?;
    let name = format!("from-context-{}", random_suffix());
    let dir = tempfile::tempdir()?;
    write_project(dir.path(), &ns, &name)?;
    let (a, b, good) = split_kubeconfig(dir.path(), &control_plane)?;
    let list = std::env::join_paths([&a, &b])?;
    let (a_text, b_text) = (a.display().to_string(), b.display().to_string());
    let config_maps: Api<ConfigMap> = Api::namespaced(client, &ns);

    // The first file's current-context wins, and is unreachable.
    fails_with(
        &operon(dir.path(), &list, &["deploy"])?,
        &["https://127.0.0.1:1", "context \"bad\"", &a_text, &b_text],
    )?;
    ensure!(config_maps.get_opt(&name).await?.is_none());

    // A context in neither file.
    fails_with(
        &operon(dir.path(), &list, &["deploy", "--context", "nope"])?,
        &[
            "context \"nope\" is not in kubeconfig",
            &a_text,
            &b_text,
            &format!("bad, {good}"),
        ],
    )?;

    succeeds(&operon(dir.path(), &list, &["deploy", "--context", &good])?)?;
    let cm = config_maps
        .get_opt(&name)
        .await?
        .context("deploy --context applied nothing")?;
    ensure!(
        cm.data.unwrap_or_default().get("from").map(String::as_str) == Some("good"),
        "the ConfigMap deployed has other data"
    );

    // The list given as --kubeconfig instead, with KUBECONFIG pointing elsewhere.
    let empty = std::ffi::OsString::new();
    let kubeconfig_flag = list.to_string_lossy().into_owned();
    fails_with(
        &operon(
            dir.path(),
            &empty,
            &["undeploy", "--kubeconfig", &kubeconfig_flag],
        )?,
        &["context \"bad\""],
    )?;
    succeeds(&operon(
        dir.path(),
        &empty,
        &[
            "undeploy",
            "--kubeconfig",
            &kubeconfig_flag,
            "--context",
            &good,
        ],
    )?)?;
    let deadline = Instant::now() + TIMEOUT;
    while config_maps.get_opt(&name).await?.is_some() {
        if Instant::now() > deadline {
            bail!("undeploy --context left ConfigMap {ns}/{name} for {TIMEOUT:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}
