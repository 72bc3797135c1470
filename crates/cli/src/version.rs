//! `operon version`: the CLI's version, the runtime's that generated projects depend on, and
//! the Kubernetes API they are built for, all read from the sources this binary was built from.

use anyhow::{Context, Result};
use toml_edit::{DocumentMut, Item};

const RUNTIME_MANIFEST: &str = include_str!("../../runtime/Cargo.toml");
const WORKSPACE_MANIFEST: &str = include_str!("../../../Cargo.toml");

/// `(name, version)` lines, in the order printed.
pub fn versions() -> Result<Vec<(String, String)>> {
    let runtime: DocumentMut = RUNTIME_MANIFEST
        .parse()
        .context("parsing the runtime's Cargo.toml")?;
    let runtime_version = runtime["package"]["version"]
        .as_str()
        .context("the runtime's Cargo.toml has no version")?
        .to_string();
    let workspace: DocumentMut = WORKSPACE_MANIFEST
        .parse()
        .context("parsing the workspace's Cargo.toml")?;
    let dependency = |name: &str| -> Result<(String, Vec<String>)> {
        let item: &Item = &workspace["workspace"]["dependencies"][name];
        let version = item
            .get("version")
            .and_then(Item::as_str)
            .or_else(|| item.as_str())
            .with_context(|| format!("no version of {name} in the workspace's dependencies"))?;
        let features = item
            .get("features")
            .and_then(Item::as_array)
            .map(|a| {
                a.iter()
                    .filter_map(|f| f.as_str().map(str::to_string))
                    .collect()
            })
            .unwrap_or_default();
        Ok((version.to_string(), features))
    };
    let (openapi, features) = dependency("k8s-openapi")?;
    // k8s-openapi's `v1_NN` feature selects the Kubernetes API version the types describe.
    let api = features
        .iter()
        .find_map(|f| f.strip_prefix("v1_"))
        .map(|minor| format!("Kubernetes 1.{minor} API"))
        .unwrap_or_else(|| "Kubernetes API of its default feature".to_string());
    let (kube, _) = dependency("kube")?;
    Ok(vec![
        ("operon".into(), env!("CARGO_PKG_VERSION").into()),
        ("operon-runtime".into(), runtime_version),
        ("k8s-openapi".into(), format!("{openapi} ({api})")),
        ("kube".into(), kube),
        (
            "local cluster".into(),
            format!("Kubernetes {}", operon_assets::KUBERNETES_VERSION),
        ),
    ])
}

/// The text `operon version` prints.
pub fn report() -> Result<String> {
    Ok(versions()?
        .into_iter()
        .map(|(name, version)| format!("{name}: {version}\n"))
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_the_cli_runtime_and_kubernetes_versions() {
        let report = report().expect("versions");
        assert!(
            report.contains(&format!("operon: {}", env!("CARGO_PKG_VERSION"))),
            "{report}"
        );
        assert!(report.contains("operon-runtime: 0."), "{report}");
        assert!(report.contains("k8s-openapi: 0."), "{report}");
        assert!(report.contains("(Kubernetes 1."), "{report}");
        assert!(report.contains("local cluster: Kubernetes v1."), "{report}");
    }
}
