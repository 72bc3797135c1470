//! One control plane per test binary, shared by all its tests, each test in its own namespace.
//!
//! Tests run in parallel, each on its own tokio runtime; a `kube::Client` is bound to the
//! runtime it was created on, so the shared environment hands out configurations and fresh
//! clients, never a client made in another test.
//!
//! Set `USE_EXISTING_CLUSTER=true` to run against the cluster of the current kubeconfig instead
//! (for example one from `cargo xtask cluster up`), like controller-runtime's envtest.

use std::collections::hash_map::RandomState;
use std::hash::{BuildHasher, Hasher};
use std::path::PathBuf;
use std::time::Duration;

use k8s_openapi::api::core::v1::{Namespace, ServiceAccount};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::config::AuthInfo;
use kube::{Client, Config};
use operon_cluster::{ControlPlane, apply, default_bin_dir, node, service_account_token, wait};
use tokio::sync::OnceCell;

use crate::Error;

/// Set to `true` to use the cluster of the current kubeconfig instead of starting one.
pub const USE_EXISTING_CLUSTER_ENV: &str = "USE_EXISTING_CLUSTER";
/// Label on every namespace a test creates (`kubectl delete ns -l operon.dev/envtest=true`).
pub const TEST_NAMESPACE_LABEL: &str = "operon.dev/envtest";

enum Target {
    Local(Box<ControlPlane>),
    Existing,
}

/// The cluster tests run against.
pub struct TestEnv {
    target: Target,
}

static SHARED: OnceCell<Result<TestEnv, String>> = OnceCell::const_new();
static SHARED_WITH_NODE: OnceCell<Result<TestEnv, String>> = OnceCell::const_new();

/// The environment shared by every test of this binary, started on first use.
///
/// A failed start is remembered, so every test reports the same error at once instead of
/// starting again.
pub async fn shared() -> Result<&'static TestEnv, Error> {
    SHARED
        .get_or_init(|| async { TestEnv::start(false).await.map_err(|e| e.to_string()) })
        .await
        .as_ref()
        .map_err(|e| Error::SharedStart(e.clone()))
}

/// Like [`shared`], with a real worker node (see [`operon_cluster::Node`]): Pods run for real,
/// images are pushed with [`TestEnv::push`]. With `USE_EXISTING_CLUSTER`, the cluster must
/// announce its local registry (`kube-public/local-registry-hosting`), as `cargo xtask cluster
/// up`'s does.
pub async fn shared_with_node() -> Result<&'static TestEnv, Error> {
    SHARED_WITH_NODE
        .get_or_init(|| async {
            let env = TestEnv::start(true).await.map_err(|e| e.to_string())?;
            stop_node_at_exit();
            Ok(env)
        })
        .await
        .as_ref()
        .map_err(|e| Error::SharedStart(e.clone()))
}

/// A static is never dropped: the shared node is stopped when the test binary exits. Its
/// daemons die with the process anyway (parent-death signal), but containers, their shims and
/// the node's host changes would outlive it.
#[allow(unsafe_code)]
fn stop_node_at_exit() {
    extern "C" fn stop() {
        if let Some(Ok(env)) = SHARED_WITH_NODE.get()
            && let Some(node) = env.control_plane().and_then(ControlPlane::node)
        {
            node.stop();
        }
    }
    // SAFETY: registers a function without arguments that libc calls once at exit.
    if unsafe { nix::libc::atexit(stop) } != 0 {
        tracing::warn!("cannot stop the shared real node at exit; the next start cleans it");
    }
}

fn use_existing_cluster() -> bool {
    std::env::var(USE_EXISTING_CLUSTER_ENV)
        .map(|v| matches!(v.to_ascii_lowercase().as_str(), "1" | "true" | "yes"))
        .unwrap_or(false)
}

impl TestEnv {
    async fn start(real_node: bool) -> Result<TestEnv, Error> {
        if use_existing_cluster() {
            let client = Client::try_from(Config::infer().await.map_err(Error::InferConfig)?)
                .map_err(Error::Kube)?;
            // Fail now, with one clear message, if the cluster is not reachable.
            client.apiserver_version().await.map_err(Error::Kube)?;
            return Ok(TestEnv {
                target: Target::Existing,
            });
        }
        let cp = ControlPlane::builder()
            .real_node(real_node)
            .skip_from_env()
            .start()
            .await?;
        eprintln!(
            "envtest: control plane ready in {} ({})",
            cp.startup_times(),
            cp.dir().display()
        );
        Ok(TestEnv {
            target: Target::Local(Box::new(cp)),
        })
    }

    /// An environment on a control plane of the test's own, which the test may break, stop or
    /// restore (the shared ones serve other tests): namespaces, clients and ServiceAccounts as
    /// on the shared one, and the harness's in-process operators. Dropping it stops `cp`.
    pub fn on(cp: ControlPlane) -> TestEnv {
        TestEnv {
            target: Target::Local(Box::new(cp)),
        }
    }

    /// The local control plane, unless the tests use an existing cluster.
    pub fn control_plane(&self) -> Option<&ControlPlane> {
        match &self.target {
            Target::Local(cp) => Some(cp),
            Target::Existing => None,
        }
    }

    /// `kubectl` (the one built with the control plane) against this cluster, as admin.
    pub fn kubectl(&self) -> std::process::Command {
        match self.control_plane() {
            Some(cp) => apply::kubectl(cp.kubeconfig_path()),
            // The current kubeconfig, as for the tests' own clients.
            None => std::process::Command::new(default_bin_dir().join("kubectl")),
        }
    }

    /// `host:port` of the registry the cluster's real node pulls from.
    pub async fn registry(&self) -> Result<String, Error> {
        if let Some(node) = self.control_plane().and_then(ControlPlane::node) {
            return Ok(node.registry().to_string());
        }
        Ok(node::announced_registry(&self.client().await?).await?)
    }

    /// Pushes the OCI archive `archive` under `reference` (as Pods name it, e.g.
    /// `localhost/operon/pod-operator:v0.1.0`) to the cluster's registry; returns the digest of
    /// the manifest the registry stored (`sha256:…`, see [`node::images::by_digest`]).
    pub async fn push(&self, archive: &std::path::Path, reference: &str) -> Result<String, Error> {
        let registry = self.registry().await?;
        let (archive, reference) = (archive.to_path_buf(), reference.to_string());
        let digest =
            tokio::task::spawn_blocking(move || node::push_to(&registry, &archive, &reference))
                .await
                .map_err(|e| Error::Node(format!("pushing {e}")))??;
        Ok(digest)
    }

    /// Admin client configuration.
    pub async fn config(&self) -> Result<Config, Error> {
        match &self.target {
            Target::Local(cp) => Ok(cp.config().await?),
            Target::Existing => Config::infer().await.map_err(Error::InferConfig),
        }
    }

    /// A new admin client for the calling test's runtime.
    pub async fn client(&self) -> Result<Client, Error> {
        Client::try_from(self.config().await?).map_err(Error::Kube)
    }

    /// A client that impersonates `user` with `groups` (RBAC applies to them, not to the admin).
    pub async fn impersonating(&self, user: &str, groups: &[&str]) -> Result<Client, Error> {
        let mut config = self.config().await?;
        config.auth_info.impersonate = Some(user.to_string());
        config.auth_info.impersonate_groups =
            (!groups.is_empty()).then(|| groups.iter().map(|g| g.to_string()).collect());
        Client::try_from(config).map_err(Error::Kube)
    }

    /// A client authenticated with a token of ServiceAccount `namespace/name` (created if
    /// missing), obtained through the TokenRequest API.
    pub async fn service_account_client(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Client, Error> {
        let config = self.service_account_config(namespace, name).await?;
        Client::try_from(config).map_err(Error::Kube)
    }

    /// The client configuration of [`service_account_client`](Self::service_account_client),
    /// for callers that add their own layers.
    pub async fn service_account_config(
        &self,
        namespace: &str,
        name: &str,
    ) -> Result<Config, Error> {
        let token = service_account_token(&self.client().await?, namespace, name, 3600).await?;
        let mut config = self.config().await?;
        config.auth_info = AuthInfo {
            token: Some(token.into()),
            ..Default::default()
        };
        Ok(config)
    }

    /// A fresh namespace named `<prefix>-<random>`; when kube-controller-manager runs, returns
    /// once its `default` ServiceAccount exists (Pods can't be created before).
    ///
    /// Prints the component log paths into the test's captured output, which the test harness
    /// shows when the test fails.
    pub async fn namespace(&self, prefix: &str) -> Result<TestNamespace, Error> {
        let name = format!("{}-{}", sanitize(prefix), random_suffix());
        let client = self.client().await?;
        let ns = Namespace {
            metadata: ObjectMeta {
                name: Some(name.clone()),
                labels: Some([(TEST_NAMESPACE_LABEL.to_string(), "true".to_string())].into()),
                ..Default::default()
            },
            ..Default::default()
        };
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await?;
        if self.has_controller_manager() {
            let sas: Api<ServiceAccount> = Api::namespaced(client, &name);
            wait::until(
                &format!("ServiceAccount {name}/default"),
                Duration::from_secs(60),
                || async {
                    match sas.get_opt("default").await {
                        Ok(Some(_)) => Ok(()),
                        Ok(None) => Err("not found".to_string()),
                        Err(e) => Err(e.to_string()),
                    }
                },
            )
            .await?;
        }
        let logs = self.log_files();
        eprintln!("envtest: namespace {name}");
        for (component, path) in &logs {
            eprintln!("envtest: {component} log: {}", path.display());
        }
        Ok(TestNamespace { name })
    }

    /// Whether garbage collection, namespace deletion and token controllers run.
    pub fn has_controller_manager(&self) -> bool {
        match &self.target {
            Target::Local(cp) => cp.has_controller_manager(),
            Target::Existing => true,
        }
    }

    /// `(component, log file)` of the local control plane (empty for an existing cluster).
    pub fn log_files(&self) -> Vec<(String, PathBuf)> {
        self.control_plane()
            .map(ControlPlane::log_files)
            .unwrap_or_default()
    }
}

/// A namespace created for one test.
#[derive(Debug, Clone)]
pub struct TestNamespace {
    name: String,
}

impl TestNamespace {
    pub fn name(&self) -> &str {
        &self.name
    }
}

impl std::ops::Deref for TestNamespace {
    type Target = str;
    fn deref(&self) -> &str {
        &self.name
    }
}

fn sanitize(prefix: &str) -> String {
    let s: String = prefix
        .to_ascii_lowercase()
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .take(40)
        .collect();
    let s = s.trim_matches('-');
    if s.is_empty() {
        "test".to_string()
    } else {
        s.to_string()
    }
}

/// Five lowercase hex digits, different on every call.
pub fn random_suffix() -> String {
    let mut h = RandomState::new().build_hasher();
    h.write_u128(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.as_nanos())
            .unwrap_or_default(),
    );
    format!("{:05x}", h.finish() & 0xfffff)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_names_are_dns_labels() {
        assert_eq!(sanitize("Watch_Events"), "watch-events");
        assert_eq!(sanitize("--"), "test");
        let a = random_suffix();
        assert_eq!(a.len(), 5);
        assert!(a.chars().all(|c| c.is_ascii_hexdigit()));
        assert_ne!(a, random_suffix());
    }
}
