//! The controllers, and how they run together:
//!
//! - [`signer`]: the signing CA in its Secret (created, loaded, rotated) and the published
//!   bundle; everything else waits for it and is re-run when it changes;
//! - [`serving`]: Services asking for a serving certificate → their TLS Secrets;
//! - [`injector`]: the CA bundle into ConfigMaps, APIServices, CRDs and webhook configurations.

pub mod injector;
pub mod serving;
pub mod signer;

use operon_manifests::Rule;
use std::sync::Arc;
use std::time::Duration;

use futures::{Stream, StreamExt};
use operon_runtime::manager::Manager;

use crate::pki::{
    self, DEFAULT_CA_LIFETIME, DEFAULT_CLUSTER_DOMAIN, DEFAULT_REFRESH_MARGIN,
    DEFAULT_SERVING_CERT_LIFETIME, KeyAlgorithm, ROTATION_MIN_REMAINING,
};
pub use signer::{CaState, CaWatch};

/// Exactly the API calls the controllers make, for the ClusterRole. Secrets: watched (the
/// operator's own, by label; the signing Secret by name), read after a create conflict, created
/// and replaced — never deleted (serving Secrets go with their Service through the
/// ownerReference). Services: watched and annotated. Injection targets: watched and patched.
/// ConfigMaps are created only in the operator's namespace (the published bundle).
pub fn rules() -> Vec<Rule> {
    vec![
        Rule::new(
            "",
            &["secrets"],
            &["get", "list", "watch", "create", "update"],
        ),
        Rule::new("", &["services"], &["list", "watch", "patch"]),
        Rule::new("", &["configmaps"], &["get", "list", "watch", "patch"]),
        Rule::new(
            "apiregistration.k8s.io",
            &["apiservices"],
            &["list", "watch", "patch"],
        ),
        Rule::new(
            "apiextensions.k8s.io",
            &["customresourcedefinitions"],
            &["list", "watch", "patch"],
        ),
        Rule::new(
            "admissionregistration.k8s.io",
            &[
                "mutatingwebhookconfigurations",
                "validatingwebhookconfigurations",
            ],
            &["list", "watch", "patch"],
        ),
    ]
}

/// Rules in the operator's namespace only: creating the bundle ConfigMap.
pub fn namespace_rules() -> Vec<Rule> {
    vec![Rule::new("", &["configmaps"], &["create"])]
}

/// Field manager and Event reporter of everything the operator writes.
pub const MANAGER: &str = "service-ca-operator";

/// Longest requeue: a timer further out than this is re-armed by the next reconcile anyway.
pub(crate) const MAX_REQUEUE: Duration = Duration::from_secs(12 * 3600);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("certificate: {0}")]
    Pki(#[from] pki::Error),
    #[error("{0}")]
    ForeignSecret(String),
    #[error("the apiserver rejected Secret {secret}: {message}")]
    Rejected { secret: String, message: String },
    #[error("building the injection patch: {0}")]
    Patch(#[from] serde_json::Error),
    #[error("{0} has no namespace")]
    NoNamespace(String),
    #[error("signing task failed: {0}")]
    Join(#[from] tokio::task::JoinError),
    #[error("invalid settings: {0}")]
    InvalidSettings(String),
    #[error("the signing CA can't be used, and is kept: {0}")]
    InvalidSigningCa(String),
}

impl operon_runtime::controller::Cause for Error {
    /// The `cause` label of `operon_reconcile_errors_by_cause_total`.
    fn cause(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Pki(_) => "pki",
            Error::ForeignSecret(_) => "foreign_secret",
            Error::Rejected { .. } => "rejected",
            Error::Patch(_) => "patch",
            Error::NoNamespace(_) => "no_namespace",
            Error::Join(_) => "join",
            Error::InvalidSettings(_) => "invalid_settings",
            Error::InvalidSigningCa(_) => "invalid_signing_ca",
        }
    }
}

/// How the operator runs (the namespaces whose Services and ConfigMaps it serves, metrics,
/// readiness and leadership are the [`Manager`]'s).
#[derive(Clone, Debug)]
pub struct Settings {
    /// Namespace of the signing Secret and the bundle ConfigMap (the operator's own).
    pub namespace: String,
    /// Inject into APIServices, CRDs and webhook configurations (cluster-scoped).
    pub inject_cluster_scoped: bool,
    /// The cluster's DNS domain (`<svc>.<ns>.svc.<domain>`).
    pub cluster_domain: String,
    /// Key type of serving certificates (and of a newly generated CA).
    pub key_algorithm: KeyAlgorithm,
    pub serving_cert_lifetime: Duration,
    /// A serving certificate is re-issued when less than this remains.
    pub refresh_margin: Duration,
    pub ca_lifetime: Duration,
    /// The CA is rotated when less than this remains.
    pub ca_rotation_margin: Duration,
    /// Rotate the CA now, once for this reason (also requested by annotating the signing
    /// Secret with [`crate::FORCE_ROTATION_REASON`]).
    pub force_rotation_reason: Option<String>,
    /// Reconciles running at once per controller.
    pub concurrency: u16,
    /// The cluster's CA (PEM; in a cluster the service account's `ca.crt`), which the legacy
    /// bundle ([`crate::INJECT_VULNERABLE_LEGACY_CABUNDLE`]) appends. Empty: legacy injection
    /// fails with an error.
    pub cluster_ca_pem: String,
}

impl Default for Settings {
    fn default() -> Self {
        Settings {
            namespace: crate::deploy::NAMESPACE.to_owned(),
            inject_cluster_scoped: true,
            cluster_domain: DEFAULT_CLUSTER_DOMAIN.to_owned(),
            key_algorithm: KeyAlgorithm::default(),
            serving_cert_lifetime: DEFAULT_SERVING_CERT_LIFETIME,
            refresh_margin: DEFAULT_REFRESH_MARGIN,
            ca_lifetime: DEFAULT_CA_LIFETIME,
            ca_rotation_margin: ROTATION_MIN_REMAINING,
            force_rotation_reason: None,
            concurrency: 10,
            cluster_ca_pem: String::new(),
        }
    }
}

impl Settings {
    /// Rejects lifetimes that would make the operator re-issue or rotate on every pass.
    pub fn validate(&self) -> Result<(), Error> {
        let invalid = |m: String| Err(Error::InvalidSettings(m));
        if self.serving_cert_lifetime <= self.refresh_margin {
            return invalid(format!(
                "the serving certificate lifetime ({:?}) must exceed the refresh margin ({:?})",
                self.serving_cert_lifetime, self.refresh_margin
            ));
        }
        if self.ca_lifetime <= self.ca_rotation_margin {
            return invalid(format!(
                "the CA lifetime ({:?}) must exceed the CA rotation margin ({:?})",
                self.ca_lifetime, self.ca_rotation_margin
            ));
        }
        if self.cluster_domain.is_empty() || self.cluster_domain.starts_with('.') {
            return invalid(format!("invalid cluster domain {:?}", self.cluster_domain));
        }
        Ok(())
    }
}

/// Registers every controller: the signer, and in each served namespace the serving-cert
/// controller and the ConfigMap injector, and the cluster-scoped injectors.
pub fn register(manager: &mut Manager, settings: &Settings) -> Result<(), Error> {
    settings.validate()?;
    if settings.namespace.is_empty() {
        return Err(Error::InvalidSettings(
            "the signing namespace must not be empty".into(),
        ));
    }
    let signer = signer::Signer::new(manager, settings);
    let ca = signer.subscribe();
    signer.register(manager, settings);
    for scope in manager.scopes() {
        serving::register(manager, &scope, settings, ca.clone());
        injector::register_configmaps(manager, &scope, settings, ca.clone());
    }
    if settings.inject_cluster_scoped {
        injector::register_cluster_scoped(manager, settings, ca);
    }
    tracing::info!(
        namespace = %settings.namespace,
        serving = ?manager.scopes(),
        cluster_scoped = settings.inject_cluster_scoped,
        "service-ca controllers registered"
    );
    Ok(())
}

/// One item each time the CA state changes (after the first), for `reconcile_all_on`.
pub(crate) fn ca_changes(mut ca: CaWatch) -> impl Stream<Item = ()> + Send + 'static {
    ca.mark_unchanged();
    futures::stream::unfold(ca, |mut ca| async move {
        ca.changed().await.ok()?;
        Some(((), ca))
    })
    .boxed()
}

/// The current CA, waiting for the first one.
pub(crate) async fn current_ca(ca: &CaWatch) -> Option<Arc<CaState>> {
    let mut ca = ca.clone();
    let state = ca.wait_for(Option::is_some).await.ok()?;
    state.clone()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn settings_validation() {
        assert!(Settings::default().validate().is_ok());
        let s = Settings {
            refresh_margin: Duration::from_secs(10),
            serving_cert_lifetime: Duration::from_secs(10),
            ..Settings::default()
        };
        assert!(s.validate().is_err());
        let s = Settings {
            ca_rotation_margin: DEFAULT_CA_LIFETIME,
            ..Settings::default()
        };
        assert!(s.validate().is_err());
        let s = Settings {
            cluster_domain: ".local".into(),
            ..Settings::default()
        };
        assert!(s.validate().is_err());
    }
}
