//! Operon's test environment: one local control plane per test binary (or the cluster of the
//! current kubeconfig), a namespace per test, and fixtures for the suites that need them.
//!
//! The cluster itself is [`operon_cluster`]: tests use it directly (`operon_cluster::apply`,
//! `operon_cluster::wait`, …). What only tests need lives here: the shared environment
//! ([`shared`], [`TestEnv`]), RBAC grants ([`grant`]), Secrets' text ([`secret_text`]), alerting
//! rules run through `promtool` ([`promtool`]), generated hostile documents (feature `hostile`,
//! with proptest) and certificate checks and TLS handshakes (feature `tls`). The in-process
//! operator harness with the escalation and RBAC audit suites is `operon-harness`; the AWS
//! emulator is `operon-moto`.
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
pub mod promtool;
mod secret;
#[cfg(feature = "tls")]
pub mod tls;

use operon_cluster::{apply, wait};

pub use env::{
    TEST_NAMESPACE_LABEL, TestEnv, TestNamespace, USE_EXISTING_CLUSTER_ENV, random_suffix, shared,
    shared_with_node,
};
pub use grant::{grant, grant_cluster};
pub use secret::secret_text;

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
    #[error("the shared control plane failed to start: {0}")]
    SharedStart(String),
    #[error("real node: {0}")]
    Node(String),
    /// A Secret without the expected text ([`secret_text`]).
    #[error("{0}")]
    Secret(String),
    #[error("hostile input: {0}")]
    Hostile(String),
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
}
