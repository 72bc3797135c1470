//! Where the control plane's binaries are.
//!
//! `cargo xtask k8s build` builds them from Go modules into a cache directory keyed by version.
//! Like controller-runtime's envtest, `KUBEBUILDER_ASSETS` (a directory, setup-envtest layout) and
//! `TEST_ASSET_<NAME>` (a single binary) take precedence.

use std::path::{Path, PathBuf};

use crate::Error;

pub use operon_assets::{
    KUBERNETES_VERSION, KWOK_STAGES_FILE, KWOK_VERSION, cache_root, default_bin_dir,
};

/// One control plane binary.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Component {
    Etcd,
    KubeApiserver,
    KubeControllerManager,
    KubeScheduler,
    Kubectl,
    Kwok,
    /// The real node's agent.
    Kubelet,
    KubeProxy,
    /// The cluster DNS add-on (from `tools/coredns`).
    Coredns,
    /// etcd's client (snapshots of a running etcd), from `tools/etcd` at the etcd version
    /// Kubernetes pins.
    Etcdctl,
    /// etcd's offline tool (restores a snapshot into a data directory), from `tools/etcd`.
    Etcdutl,
}

impl Component {
    pub const ALL: [Component; 11] = [
        Component::Etcd,
        Component::KubeApiserver,
        Component::KubeControllerManager,
        Component::KubeScheduler,
        Component::Kubectl,
        Component::Kwok,
        Component::Kubelet,
        Component::KubeProxy,
        Component::Coredns,
        Component::Etcdctl,
        Component::Etcdutl,
    ];

    /// File name of the binary.
    pub fn binary(self) -> &'static str {
        match self {
            Component::Etcd => "etcd",
            Component::KubeApiserver => "kube-apiserver",
            Component::KubeControllerManager => "kube-controller-manager",
            Component::KubeScheduler => "kube-scheduler",
            Component::Kubectl => "kubectl",
            Component::Kwok => "kwok",
            Component::Kubelet => "kubelet",
            Component::KubeProxy => "kube-proxy",
            Component::Coredns => "coredns",
            Component::Etcdctl => "etcdctl",
            Component::Etcdutl => "etcdutl",
        }
    }

    /// envtest's per-binary override variable, e.g. `TEST_ASSET_KUBE_APISERVER`.
    pub fn env_override(self) -> String {
        format!(
            "TEST_ASSET_{}",
            self.binary().to_uppercase().replace('-', "_")
        )
    }
}

/// Resolved locations of the binaries.
#[derive(Debug, Clone)]
pub struct Assets {
    dirs: Vec<PathBuf>,
}

impl Assets {
    /// `KUBEBUILDER_ASSETS` first (when set), then the build cache.
    pub fn from_env() -> Self {
        let mut dirs = Vec::new();
        if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) {
            dirs.push(PathBuf::from(dir));
        }
        dirs.push(default_bin_dir());
        Assets { dirs }
    }

    /// The directory of `binary` first (the tools built with it), then [`from_env`]'s.
    ///
    /// [`from_env`]: Self::from_env
    pub fn beside(binary: &Path) -> Self {
        let mut assets = Self::from_env();
        if let Some(dir) = binary.parent() {
            assets.dirs.retain(|d| d != dir);
            assets.dirs.insert(0, dir.to_path_buf());
        }
        assets
    }

    /// Only the given directory.
    pub fn in_dir(dir: impl Into<PathBuf>) -> Self {
        Assets {
            dirs: vec![dir.into()],
        }
    }

    /// Path of a component's binary, or an error that says how to get it.
    pub fn binary(&self, component: Component) -> Result<PathBuf, Error> {
        if let Some(path) = std::env::var_os(component.env_override()).filter(|p| !p.is_empty()) {
            let path = PathBuf::from(path);
            return if is_executable(&path) {
                Ok(path)
            } else {
                Err(Error::MissingBinary {
                    binary: component.binary(),
                    searched: vec![path],
                })
            };
        }
        self.find(component.binary())
            .ok_or_else(|| Error::MissingBinary {
                binary: component.binary(),
                searched: self
                    .dirs
                    .iter()
                    .map(|d| d.join(component.binary()))
                    .collect(),
            })
    }

    /// The kwok Stage definitions installed next to the binaries.
    pub fn kwok_stages(&self) -> Result<PathBuf, Error> {
        self.dirs
            .iter()
            .map(|d| d.join(KWOK_STAGES_FILE))
            .find(|p| p.is_file())
            .ok_or_else(|| Error::MissingBinary {
                binary: KWOK_STAGES_FILE,
                searched: self.dirs.iter().map(|d| d.join(KWOK_STAGES_FILE)).collect(),
            })
    }

    fn find(&self, file: &str) -> Option<PathBuf> {
        self.dirs
            .iter()
            .map(|d| d.join(file))
            .find(|p| is_executable(p))
    }
}

fn is_executable(path: &Path) -> bool {
    operon_assets::is_executable(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_override_names_follow_envtest() {
        assert_eq!(
            Component::KubeApiserver.env_override(),
            "TEST_ASSET_KUBE_APISERVER"
        );
        assert_eq!(Component::Etcd.env_override(), "TEST_ASSET_ETCD");
    }

    #[test]
    fn missing_binary_error_lists_where_it_looked() {
        let dir = std::env::temp_dir().join("operon-envtest-assets-test-nonexistent");
        let assets = Assets::in_dir(&dir);
        let err = assets
            .find("kwok")
            .map(|p| p.display().to_string())
            .unwrap_or_default();
        assert_eq!(err, "");
        let msg = match assets.kwok_stages() {
            Err(e) => e.to_string(),
            Ok(p) => panic!("unexpected stages file {}", p.display()),
        };
        assert!(msg.contains(&dir.display().to_string()), "{msg}");
        assert!(msg.contains("cargo xtask k8s build"), "{msg}");
    }
}
