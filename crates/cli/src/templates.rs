//! The files `operon` writes, as templates with `{{name}}` placeholders, and the Cargo.toml of
//! a new project, whose dependencies come from Operon's own workspace (so that versions match
//! what the runtime is built and tested with).

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};

use anyhow::{Context, Result, bail};
use toml_edit::{DocumentMut, Item, Table, value};

pub const LIB: &str = include_str!("../templates/lib.rs");
pub const MAIN: &str = include_str!("../templates/main.rs");
pub const DEPLOY: &str = include_str!("../templates/deploy.rs");
pub const API_MOD: &str = include_str!("../templates/api_mod.rs");
pub const API: &str = include_str!("../templates/api.rs");
pub const SAMPLE: &str = include_str!("../templates/sample.yaml");
pub const CONTROLLER_MOD: &str = include_str!("../templates/controller_mod.rs");
pub const CONTROLLER: &str = include_str!("../templates/controller.rs");
pub const CONTROLLER_TEST: &str = include_str!("../templates/controller_test.rs");
pub const CONFIG_TEST: &str = include_str!("../templates/config_test.rs");
pub const CONTAINERFILE: &str = include_str!("../templates/Containerfile");
pub const GITIGNORE: &str = include_str!("../templates/gitignore");
pub const README: &str = include_str!("../templates/README.md");
pub const MAKEFILE: &str = include_str!("../templates/Makefile");

/// Operon's workspace manifest: the versions and features of the dependencies.
const WORKSPACE_MANIFEST: &str = include_str!("../../../Cargo.toml");

/// Placeholder values.
pub type Vars = BTreeMap<&'static str, String>;

/// Replaces every `{{key}}` of `vars` in `template`; fails on a placeholder left unreplaced.
pub fn render(template: &str, vars: &Vars) -> Result<String> {
    let mut out = template.to_string();
    for (key, val) in vars {
        out = out.replace(&format!("{{{{{key}}}}}"), val);
    }
    if let Some(at) = out.find("{{") {
        let rest = &out[at..];
        let end = rest.find("}}").map(|e| e + 2).unwrap_or(rest.len().min(40));
        // `{{{` is a brace before a placeholder's braces; only report a real placeholder.
        let candidate = &rest[..end];
        if candidate
            .trim_start_matches('{')
            .trim_end_matches('}')
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_')
            && candidate.ends_with("}}")
        {
            bail!("template placeholder {candidate} has no value");
        }
    }
    Ok(out)
}

/// Formats Rust source with rustfmt (edition 2024), as `cargo fmt` would; returns the text
/// unchanged when rustfmt is not installed.
pub fn rustfmt(source: &str) -> Result<String> {
    let child = Command::new("rustfmt")
        .args(["--edition", "2024", "--emit", "stdout", "--quiet"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn();
    let mut child = match child {
        Ok(c) => c,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(source.to_string()),
        Err(e) => return Err(e).context("running rustfmt"),
    };
    child
        .stdin
        .take()
        .context("rustfmt's stdin")?
        .write_all(source.as_bytes())?;
    let out = child.wait_with_output().context("running rustfmt")?;
    if !out.status.success() {
        bail!(
            "rustfmt rejected the generated code (a bug in operon's templates):\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

/// How a new crate gets Operon's crates.
#[derive(Debug, Clone)]
pub enum Source {
    /// Path dependencies on a checkout.
    Checkout(std::path::PathBuf),
    /// `workspace = true`: the crate is a member of Operon's own workspace.
    Workspace,
    /// The Git repository.
    Git(String),
}

pub const GIT_REPOSITORY: &str = "https://github.com/operon-dev/operon";

/// The runtime's dependencies a new project uses directly, and where a version is not in
/// Operon's workspace table, its requirement.
const DEPENDENCIES: &[(&str, Option<&str>)] = &[
    ("anyhow", None),
    ("clap", None),
    ("futures", None),
    ("k8s-openapi", None),
    ("kube", None),
    ("operon-manifests", None),
    ("operon-runtime", None),
    ("schemars", None),
    ("serde", None),
    ("serde_json", None),
    ("serde-saphyr", Some("2.2")),
    ("thiserror", None),
    ("tokio", None),
    ("tracing", None),
];
const DEV_DEPENDENCIES: &[(&str, Option<&str>)] =
    &[("operon-cluster", None), ("operon-envtest", None)];

fn workspace_dependencies() -> Result<Table> {
    let doc: DocumentMut = WORKSPACE_MANIFEST.parse()?;
    doc.get("workspace")
        .and_then(|w| w.get("dependencies"))
        .and_then(Item::as_table)
        .cloned()
        .context("Operon's Cargo.toml has no [workspace.dependencies]")
}

fn dependency(name: &str, fallback: Option<&str>, source: &Source, deps: &Table) -> Result<Item> {
    let operon_crate = match name {
        "operon-manifests" => Some("crates/manifests"),
        "operon-runtime" => Some("crates/runtime"),
        "operon-cluster" => Some("crates/cluster"),
        "operon-envtest" => Some("crates/envtest"),
        _ => None,
    };
    if let Source::Workspace = source
        && (operon_crate.is_some() || deps.contains_key(name))
    {
        let mut t = toml_edit::InlineTable::new();
        t.insert("workspace", true.into());
        return Ok(Item::Value(t.into()));
    }
    if let Some(dir) = operon_crate {
        let mut t = toml_edit::InlineTable::new();
        match source {
            Source::Checkout(root) => {
                t.insert("path", root.join(dir).to_string_lossy().as_ref().into());
            }
            Source::Git(url) => {
                t.insert("git", url.as_str().into());
            }
            Source::Workspace => unreachable!("handled above"),
        }
        return Ok(Item::Value(t.into()));
    }
    match (deps.get(name), fallback) {
        (Some(item), _) => Ok(item.clone()),
        (None, Some(version)) => Ok(value(version)),
        (None, None) => bail!("{name} is not in Operon's [workspace.dependencies]"),
    }
}

/// The Cargo.toml of a new operator crate. A standalone project is its own workspace (so that
/// a workspace in a parent directory doesn't claim it) with Operon's dev profile.
pub fn cargo_toml(name: &str, source: &Source, standalone: bool) -> Result<String> {
    let deps = workspace_dependencies()?;
    let mut doc = DocumentMut::new();
    let mut package = Table::new();
    package["name"] = value(name);
    package["version"] = value("0.1.0");
    package["description"] = value(format!("{name}: a microservice as a Kubernetes operator"));
    package["edition"] = value("2024");
    package["publish"] = value(false);
    doc["package"] = Item::Table(package);
    let mut dependencies = Table::new();
    for (dep, fallback) in DEPENDENCIES {
        dependencies[*dep] = dependency(dep, *fallback, source, &deps)?;
    }
    doc["dependencies"] = Item::Table(dependencies);
    let mut dev = Table::new();
    for (dep, fallback) in DEV_DEPENDENCIES {
        dev[*dep] = dependency(dep, *fallback, source, &deps)?;
    }
    doc["dev-dependencies"] = Item::Table(dev);
    let mut clippy = Table::new();
    clippy["unwrap_used"] = value("deny");
    let mut lints = Table::new();
    lints.set_implicit(true);
    lints["clippy"] = Item::Table(clippy);
    doc["lints"] = Item::Table(lints);
    let mut text = doc.to_string();
    if standalone {
        text.push_str(
            "\n# Its own workspace: a Cargo workspace in a parent directory doesn't claim it.\n\
             [workspace]\n\n\
             # Debug info for dependencies costs link time and disk; the crate's own code keeps it.\n\
             [profile.dev]\n\
             debug = \"line-tables-only\"\n\n\
             [profile.dev.package.\"*\"]\n\
             debug = false\n",
        );
    }
    Ok(text)
}

/// Whether `dir` looks like an Operon checkout (has the runtime and envtest crates).
pub fn is_operon_checkout(dir: &Path) -> bool {
    dir.join("crates/runtime/Cargo.toml").is_file()
        && dir.join("crates/envtest/Cargo.toml").is_file()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_and_reports_missing_values() {
        let vars = Vars::from([("Kind", "PodRequest".to_string())]);
        assert_eq!(
            render("struct {{Kind}}Spec {{{Kind}}}", &vars)
                .ok()
                .as_deref(),
            Some("struct PodRequestSpec {PodRequest}")
        );
        let e = render("{{kind_snake}}", &vars)
            .expect_err("missing")
            .to_string();
        assert!(e.contains("{{kind_snake}}"), "{e}");
    }

    #[test]
    fn dependencies_come_from_the_workspace() {
        let text = cargo_toml(
            "demo-operator",
            &Source::Checkout("/src/operon".into()),
            true,
        )
        .expect("Cargo.toml");
        let doc: DocumentMut = text.parse().expect("valid TOML");
        let deps = workspace_dependencies().expect("workspace deps");
        assert_eq!(
            doc["dependencies"]["kube"].to_string(),
            deps["kube"].to_string()
        );
        assert_eq!(
            doc["dependencies"]["operon-runtime"]["path"].as_str(),
            Some("/src/operon/crates/runtime")
        );
        assert!(
            doc.get("workspace").is_some(),
            "standalone is its own workspace"
        );
        let member = cargo_toml("demo-operator", &Source::Workspace, false).expect("member");
        assert!(member.contains("kube = { workspace = true }"), "{member}");
        assert!(!member.contains("[workspace]"), "{member}");
    }

    #[test]
    fn serde_saphyr_matches_the_generators() {
        // serde-saphyr is not in the workspace table: the project must get the one
        // operon-manifests (which writes its YAML) uses.
        let manifests = include_str!("../../manifests/Cargo.toml");
        assert!(
            manifests.contains("serde-saphyr = \"2.2\""),
            "operon-manifests' serde-saphyr changed"
        );
    }
}
