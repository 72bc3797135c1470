//! The CLI's commands that need no cluster and no build: shell completion, `version`, kind
//! checks (plural kinds, near misses of known kinds), and `delete api` undoing `create api`
//! and `create controller` file for file. Every project is made with OPERON_SKIP_MANIFESTS, so
//! nothing compiles.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use anyhow::{Context, Result, ensure};

fn operon(dir: &Path, args: &[&str]) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_operon"));
    cmd.current_dir(dir)
        .args(args)
        .env("OPERON_SKIP_MANIFESTS", "true");
    cmd
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn succeed(dir: &Path, args: &[&str]) -> Result<String> {
    let out = operon(dir, args)
        .output()
        .with_context(|| format!("starting operon {}", args.join(" ")))?;
    ensure!(
        out.status.success(),
        "operon {} failed ({}):\n{}",
        args.join(" "),
        out.status,
        text(&out)
    );
    Ok(text(&out))
}

/// `operon args` must fail, saying every one of `expected` and none of `unexpected`.
fn refuse(dir: &Path, args: &[&str], expected: &[&str], unexpected: &[&str]) -> Result<()> {
    let out = operon(dir, args).output()?;
    let message = text(&out);
    ensure!(
        !out.status.success(),
        "operon {} succeeded:\n{message}",
        args.join(" ")
    );
    for e in expected {
        ensure!(
            message.contains(e),
            "operon {}: no {e:?} in:\n{message}",
            args.join(" ")
        );
    }
    for u in unexpected {
        ensure!(
            !message.contains(u),
            "operon {}: {u:?} in:\n{message}",
            args.join(" ")
        );
    }
    Ok(())
}

/// Every file under `root` with its content.
fn tree(root: &Path) -> Result<BTreeMap<PathBuf, Vec<u8>>> {
    fn walk(root: &Path, dir: &Path, files: &mut BTreeMap<PathBuf, Vec<u8>>) -> Result<()> {
        for entry in std::fs::read_dir(dir)? {
            let path = entry?.path();
            if path.is_dir() {
                walk(root, &path, files)?;
            } else {
                files.insert(
                    path.strip_prefix(root)?.to_path_buf(),
                    std::fs::read(&path)?,
                );
            }
        }
        Ok(())
    }
    let mut files = BTreeMap::new();
    walk(root, root, &mut files)?;
    Ok(files)
}

/// Which files differ between two trees, for the failure message.
fn diff(a: &BTreeMap<PathBuf, Vec<u8>>, b: &BTreeMap<PathBuf, Vec<u8>>) -> Vec<String> {
    let mut out = Vec::new();
    for (path, content) in a {
        match b.get(path) {
            None => out.push(format!("only before: {}", path.display())),
            Some(other) if other != content => out.push(format!(
                "changed: {}\n--- before\n{}\n--- after\n{}",
                path.display(),
                String::from_utf8_lossy(content),
                String::from_utf8_lossy(other)
            )),
            Some(_) => {}
        }
    }
    for path in b.keys().filter(|p| !a.contains_key(*p)) {
        out.push(format!("only after: {}", path.display()));
    }
    out
}

fn ensure_same(
    what: &str,
    before: &BTreeMap<PathBuf, Vec<u8>>,
    after: &BTreeMap<PathBuf, Vec<u8>>,
) -> Result<()> {
    let differences = diff(before, after);
    ensure!(
        differences.is_empty(),
        "{what}:\n{}",
        differences.join("\n")
    );
    Ok(())
}

#[test]
fn bash_loads_the_completion_script() -> Result<()> {
    let script = format!(
        "source <('{}' completion bash) && complete -p operon",
        env!("CARGO_BIN_EXE_operon")
    );
    let out = Command::new("bash").args(["-c", &script]).output()?;
    ensure!(
        out.status.success(),
        "bash could not load it ({}):\n{}",
        out.status,
        text(&out)
    );
    let said = text(&out);
    ensure!(said.contains("-F _operon operon"), "{said}");
    for shell in ["zsh", "fish"] {
        let out = succeed(Path::new("."), &["completion", shell])?;
        ensure!(out.contains("operon"), "{shell}: {out}");
    }
    refuse(
        Path::new("."),
        &["completion", "tcsh"],
        &["invalid value"],
        &[],
    )
}

#[test]
fn version_names_the_cli_runtime_and_kubernetes() -> Result<()> {
    let out = succeed(Path::new("."), &["version"])?;
    for expected in [
        &format!("operon: {}", env!("CARGO_PKG_VERSION")),
        "operon-runtime: ",
        "k8s-openapi: ",
        "(Kubernetes 1.",
        "local cluster: Kubernetes v1.",
    ] {
        ensure!(out.contains(expected), "no {expected:?} in:\n{out}");
    }
    Ok(())
}

#[test]
fn plural_kinds_and_near_misses_get_did_you_mean() -> Result<()> {
    let work = tempfile::tempdir()?;
    succeed(work.path(), &["init", "pod-operator"])?;
    let project = work.path().join("pod-operator");
    let api = |kind: &'static str| {
        [
            "create",
            "api",
            "--group",
            "pod",
            "--version",
            "v1alpha1",
            "--kind",
            kind,
        ]
    };
    let before = tree(&project)?;
    refuse(
        &project,
        &api("PodRequests"),
        &["invalid kind \"PodRequests\"", "did you mean PodRequest?"],
        &[],
    )?;
    refuse(&project, &api("Policies"), &["did you mean Policy?"], &[])?;
    ensure_same(
        "a refused create api changed files",
        &before,
        &tree(&project)?,
    )?;
    succeed(&project, &api("PodRequest"))?;
    refuse(
        &project,
        &["create", "controller", "--kind", "PodRequst"],
        &["did you mean PodRequest?"],
        &["create api"],
    )?;
    refuse(
        &project,
        &[
            "create",
            "controller",
            "--kind",
            "PodRequest",
            "--owns",
            "Secrte",
        ],
        &["--owns Secrte", "did you mean Secret?"],
        &["create api"],
    )?;
    refuse(
        &project,
        &["delete", "api", "--kind", "podrequest"],
        &["did you mean PodRequest?"],
        &[],
    )?;
    // Far from every kind: the list, and how to add it.
    refuse(
        &project,
        &["create", "controller", "--kind", "Gadget"],
        &["no API of kind", "PodRequest", "operon create api"],
        &["did you mean"],
    )?;
    Ok(())
}

#[test]
fn delete_api_undoes_create_api_and_create_controller() -> Result<()> {
    let work = tempfile::tempdir()?;
    // The operator-sdk verbs still work: `new`, `add api`, `add controller`.
    succeed(
        work.path(),
        &["new", "shop-operator", "--domain", "shop.example"],
    )?;
    let project = work.path().join("shop-operator");
    let initial = tree(&project)?;
    ensure!(
        initial.contains_key(Path::new("Makefile")),
        "init wrote no Makefile"
    );
    succeed(
        &project,
        &[
            "create",
            "api",
            "--group",
            "gadgets",
            "--version",
            "v1",
            "--kind",
            "Gadget",
            "--controller",
            "--owns",
            "ConfigMap",
        ],
    )?;
    ensure!(
        project.join("src/controller/gadget.rs").is_file(),
        "create api --controller wrote no controller"
    );
    let with_gadget = tree(&project)?;
    succeed(
        &project,
        &[
            "add",
            "api",
            "--group",
            "widgets",
            "--version",
            "v1beta1",
            "--kind",
            "Widget",
            "--cluster",
        ],
    )?;
    succeed(
        &project,
        &[
            "add",
            "controller",
            "--kind",
            "Widget",
            "--owns",
            "Pod,Secret,Gadget",
        ],
    )?;

    // The Widget controller owns Gadgets: Gadget can't go first.
    let before = tree(&project)?;
    refuse(
        &project,
        &["delete", "api", "--kind", "Gadget"],
        &["the Widget controller owns Gadgets", "Nothing was changed"],
        &[],
    )?;
    ensure_same(
        "a refused delete api changed files",
        &before,
        &tree(&project)?,
    )?;

    // An edited file is not deleted, and nothing else is.
    let types = project.join("src/api/widget.rs");
    let original = std::fs::read_to_string(&types)?;
    std::fs::write(&types, format!("{original}\n// my change\n"))?;
    let edited = tree(&project)?;
    refuse(
        &project,
        &["delete", "api", "--kind", "Widget"],
        &[
            "refusing to delete",
            "src/api/widget.rs",
            "Nothing was changed",
        ],
        &[],
    )?;
    ensure_same(
        "a refused delete api changed files",
        &edited,
        &tree(&project)?,
    )?;
    std::fs::write(&types, original)?;

    let said = succeed(&project, &["delete", "api", "--kind", "Widget"])?;
    for removed in [
        "src/api/widget.rs",
        "src/controller/widget.rs",
        "tests/widget_controller.rs",
        "config/samples/widgets_v1beta1_widget.yaml",
    ] {
        ensure!(
            said.contains(&format!("removed   {removed}")),
            "{removed} not removed:\n{said}"
        );
    }
    ensure_same(
        "delete api Widget did not restore the tree before create api Widget",
        &with_gadget,
        &tree(&project)?,
    )?;
    succeed(&project, &["delete", "api", "--kind", "Gadget"])?;
    ensure_same(
        "delete api Gadget did not restore the tree of init",
        &initial,
        &tree(&project)?,
    )?;
    Ok(())
}
