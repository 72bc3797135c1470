//! A local Kubernetes cluster of real binaries, for `operon run --local`, demos, benchmarks and
//! tests (`operon-envtest` builds its test environment on it).
//!
//! etcd, kube-apiserver, kube-controller-manager, kube-scheduler and kwok (fake Nodes on which
//! Pods reach Running), built from Go modules by `cargo xtask k8s build`; optionally a real
//! worker [`Node`] (kubelet, containerd, kube-proxy, CoreDNS and a local registry). Certificates,
//! ports and data directories are made per run; readiness is awaited on the components' own
//! health endpoints, never on fixed sleeps. [`apply`] puts objects into any cluster the way
//! `kubectl apply --server-side` does; [`service_account_token`] and [`kubeconfig`] let a
//! process outside the cluster act as a ServiceAccount. [`ControlPlane::snapshot`] and
//! [`ControlPlane::restore`] take an etcd snapshot and bring a destroyed control plane back
//! from one, the real node running throughout.
//!
//! ```no_run
//! # async fn demo() -> Result<(), operon_cluster::Error> {
//! let cluster = operon_cluster::ControlPlane::builder().start().await?;
//! let client = cluster.client().await?;
//! # let _ = client; Ok(()) }
//! ```

pub mod apply;
mod assets;
mod control_plane;
pub mod kubeconfig;
pub mod node;
mod pki;
pub mod plain_http;
pub mod pod_security;
pub mod process;
mod recovery;
mod token;
pub mod wait;

use std::path::PathBuf;
use std::time::Duration;

pub use assets::{
    Assets, Component, KUBERNETES_VERSION, KWOK_STAGES_FILE, KWOK_VERSION, cache_root,
    default_bin_dir,
};
pub use control_plane::{
    Builder, ControlPlane, DURABLE_ENV, EtcdClient, KWOK_NODE_LABEL, KWOK_TAINT, POD_CIDR,
    SERVICE_CIDR, SKIP_ENV, SUPER_ADMIN_KUBECONFIG, StartupTimes, tail,
};
pub use node::Node;
pub use pki::{
    CLUSTER_ADMINS_GROUP, CertKey, EtcdCerts, MASTERS_GROUP, NodeAddresses, NodeCerts, Pki,
};
pub use recovery::{REVISION_BUMP, RestoreTimes, SnapshotStatus, save_snapshot, snapshot_status};
pub use token::service_account_token;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("no control plane component named {0}")]
    UnknownComponent(String),
    #[error(
        "{binary} not found (looked at: {}). Build the control plane binaries with `cargo xtask k8s build`, or point KUBEBUILDER_ASSETS at a directory that has them",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    MissingBinary {
        binary: &'static str,
        searched: Vec<PathBuf>,
    },
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("generating the {what}: {source}")]
    Pki {
        what: &'static str,
        #[source]
        source: rcgen::Error,
    },
    #[error("{name} exited ({status}); log {}:\n{log_tail}", .log.display())]
    ComponentExited {
        name: String,
        status: String,
        log: PathBuf,
        log_tail: String,
    },
    #[error(
        "timed out after {after:?} waiting for {what}; component logs: {}",
        .logs.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", ")
    )]
    Timeout {
        what: String,
        after: Duration,
        logs: Vec<PathBuf>,
    },
    #[error(transparent)]
    Wait(#[from] wait::Timeout),
    #[error("reading the kubeconfig: {0}")]
    Kubeconfig(#[source] kube::config::KubeconfigError),
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
    #[error("invalid object: {0}")]
    Invalid(String),
    #[error("real node: {0}")]
    Node(String),
    #[error("the TokenRequest returned no token")]
    NoToken,
    #[error("{what} failed ({status}): {output}")]
    Command {
        what: String,
        status: String,
        output: String,
    },
    #[error("restore: {0}")]
    Restore(String),
}
