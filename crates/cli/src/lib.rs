//! The `operon` CLI as a library: scaffolding of operator projects, and the commands that
//! build, generate, deploy and run them.

pub mod build;
pub mod deploy;
pub mod image;
pub mod kinds;
pub mod kustomize;
pub mod lifecycle;
pub mod names;
pub mod project;
pub mod run;
pub mod scaffold;
pub mod templates;
pub mod version;

/// Whether a custom resource lives in namespaces or in the cluster.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Scope {
    Namespaced,
    Cluster,
}
