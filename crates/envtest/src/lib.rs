//! Operon's test environment: one local control plane per test binary (or the cluster of the
//! current kubeconfig), a namespace per test, and fixtures for the suites that need them.
//!
//! The cluster itself is [`operon_cluster`], re-exported here so tests need one import; what
//! only tests need lives here: the shared environment ([`shared`], [`TestEnv`]), RBAC grants
//! ([`grant`]), the in-process operator harness and the escalation and RBAC audit suites
//! (feature `operator`), alerting rules run through `promtool` ([`promtool`]), generated hostile documents (feature `hostile`, with proptest),
//! certificate checks and TLS handshakes (feature `tls`) and the AWS emulator (feature `moto`).
//!
//! ```no_run
//! # async fn demo() -> Result<(), operon_envtest::Error> {
//! let env = operon_envtest::shared().await?;
//! let ns = env.namespace("my-test").await?;
//! let client = env.client().await?;
//! # let _ = (ns, client); Ok(()) }
//! ```

mod env;
mod grant;
#[cfg(feature = "hostile")]
pub mod hostile;
#[cfg(feature = "moto")]
pub mod moto;
#[cfg(feature = "operator")]
pub mod operator;
pub mod promtool;
#[cfg(feature = "tls")]
pub mod tls;

/// The cluster's own errors (this crate's [`Error`] wraps them).
pub use operon_cluster::Error as ClusterError;
pub use operon_cluster::*;

pub use env::{
    TEST_NAMESPACE_LABEL, TestEnv, TestNamespace, USE_EXISTING_CLUSTER_ENV, random_suffix,
    service_account_token, shared, shared_with_node,
};
pub use grant::grant;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(transparent)]
    Cluster(#[from] operon_cluster::Error),
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Wait(#[from] wait::Timeout),
    #[error(transparent)]
    Apply(#[from] apply::ApplyError),
    #[error("loading the current kubeconfig ({USE_EXISTING_CLUSTER_ENV} is set): {0}")]
    InferConfig(#[source] kube::config::InferConfigError),
    #[error("the TokenRequest returned no token")]
    NoToken,
    #[error("the shared control plane failed to start: {0}")]
    SharedStart(String),
    #[error("real node: {0}")]
    Node(String),
    #[error("hostile input: {0}")]
    Hostile(String),
    #[cfg(feature = "moto")]
    #[error(
        "moto_server (the AWS emulator) not found (looked at: {}). Install it with `cargo xtask moto install`, or point {} at a moto_server executable",
        .searched.iter().map(|p| p.display().to_string()).collect::<Vec<_>>().join(", "),
        moto::SERVER_ENV
    )]
    MotoNotInstalled { searched: Vec<std::path::PathBuf> },
    #[error("the operator under test: {0}")]
    Operator(String),
    #[error("{0}")]
    Audit(String),
    #[error("certificate: {0}")]
    Certificate(String),
    #[error("TLS handshake refused: {0}")]
    Handshake(String),
    #[error("{context}: {source}")]
    Io {
        context: String,
        #[source]
        source: std::io::Error,
    },
    #[error("moto: {0}")]
    Moto(String),
}
