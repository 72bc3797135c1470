//! The external programs Operon runs, their pinned versions, and where they are cached.
//!
//! Everything here is plain `std`: `cargo xtask` checks a machine's prerequisites with it before
//! any long build, and the cluster and test crates find the same binaries through it.

use std::path::PathBuf;

/// The Kubernetes release the control plane is built from (the `k8s.io/kubernetes` module version).
pub const KUBERNETES_VERSION: &str = "v1.36.3";
/// kwok release providing fake Nodes (and Pods that reach Running without a kubelet).
pub const KWOK_VERSION: &str = "v0.8.0";
/// File, next to the binaries, holding the kwok Stage definitions (node and pod lifecycles).
pub const KWOK_STAGES_FILE: &str = "kwok-stages.yaml";
/// The moto release `cargo xtask moto install` installs (`moto[server]==<this>` from PyPI).
pub const MOTO_VERSION: &str = "5.2.5";
/// Path of a `moto_server` executable to use instead of the installed one. `cargo xtask test`
/// sets it for the tests it runs.
pub const MOTO_SERVER_ENV: &str = "OPERON_MOTO_SERVER";
/// The Helm release built from the Go module proxy for the chart tests.
pub const HELM_VERSION: &str = "v3.22.0";
/// The Go toolchain installed from the Go module proxy when the machine has none (or an older
/// one than [`GO_MIN`]).
pub const GO_VERSION: &str = "1.26.8";
/// The oldest Go that builds the pinned Kubernetes release.
pub const GO_MIN: (u32, u32) = (1, 26);

/// The Prometheus Operator release built from `tools/monitoring` (with its config reloader).
pub const PROMETHEUS_OPERATOR_VERSION: &str = "v0.93.0";
/// The kube-state-metrics release built from `tools/monitoring`.
pub const KUBE_STATE_METRICS_VERSION: &str = "v2.20.0";
/// The Prometheus release built from its Go module ([`PROMETHEUS_MODULE_VERSION`]) with only
/// Kubernetes service discovery, which the Prometheus Operator's configurations use (Debian's
/// package leaves that one out, so it can't serve here).
pub const PROMETHEUS_VERSION: &str = "v3.13.1";
/// `github.com/prometheus/prometheus`'s module version of [`PROMETHEUS_VERSION`] (Prometheus
/// 3.x is published as v0.3xx.y), the one the Prometheus Operator is built against.
pub const PROMETHEUS_MODULE_VERSION: &str = "v0.313.1";
/// Alertmanager as Debian 12 packages it (`prometheus-alertmanager`).
pub const ALERTMANAGER_VERSION: &str = "v0.25.0";
/// node_exporter as Debian 12 packages it (`prometheus-node-exporter`).
pub const NODE_EXPORTER_VERSION: &str = "v1.5.0";

// The monitoring stack's images, as Pods name them once pushed to a real node's registry.
/// The Prometheus Operator (entrypoint `/bin/operator`).
pub const PROMETHEUS_OPERATOR_IMAGE: &str = "localhost/operon/prometheus-operator:v0.93.0";
/// The config reloader sidecar; the Prometheus Operator's `--prometheus-config-reloader`.
pub const PROMETHEUS_CONFIG_RELOADER_IMAGE: &str =
    "localhost/operon/prometheus-config-reloader:v0.93.0";
/// kube-state-metrics (entrypoint `/kube-state-metrics`).
pub const KUBE_STATE_METRICS_IMAGE: &str = "localhost/operon/kube-state-metrics:v2.20.0";
/// Prometheus, in upstream's layout (`/bin/prometheus`, `/etc/prometheus`, `/prometheus`).
pub const PROMETHEUS_IMAGE: &str = "localhost/operon/prometheus:v3.13.1";
/// Alertmanager, in upstream's layout (`/bin/alertmanager`, `/etc/alertmanager`, `/alertmanager`).
pub const ALERTMANAGER_IMAGE: &str = "localhost/operon/alertmanager:v0.25.0";
/// node_exporter (entrypoint `/bin/node_exporter`).
pub const NODE_EXPORTER_IMAGE: &str = "localhost/operon/node-exporter:v1.5.0";
/// All six, in the order [`PROMETHEUS_OPERATOR_IMAGE`] … [`NODE_EXPORTER_IMAGE`].
pub const MONITORING_IMAGES: [&str; 6] = [
    PROMETHEUS_OPERATOR_IMAGE,
    PROMETHEUS_CONFIG_RELOADER_IMAGE,
    KUBE_STATE_METRICS_IMAGE,
    PROMETHEUS_IMAGE,
    ALERTMANAGER_IMAGE,
    NODE_EXPORTER_IMAGE,
];

/// Root of Operon's cache: `$OPERON_CACHE_DIR`, else `$XDG_CACHE_HOME/operon`, else `~/.cache/operon`.
pub fn cache_root() -> PathBuf {
    if let Some(dir) = std::env::var_os("OPERON_CACHE_DIR").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir);
    }
    if let Some(dir) = std::env::var_os("XDG_CACHE_HOME").filter(|d| !d.is_empty()) {
        return PathBuf::from(dir).join("operon");
    }
    let home = std::env::var_os("HOME").map_or_else(std::env::temp_dir, PathBuf::from);
    home.join(".cache").join("operon")
}

/// The directory `cargo xtask k8s build` writes the binaries to for [`KUBERNETES_VERSION`].
pub fn default_bin_dir() -> PathBuf {
    cache_root()
        .join("k8s")
        .join(KUBERNETES_VERSION)
        .join("bin")
}

/// The Prometheus Operator's CRDs (`monitoring.coreos.com_*.yaml`, from its module), which
/// `cargo xtask k8s build` copies next to the binaries.
pub fn prometheus_operator_crd_dir() -> PathBuf {
    default_bin_dir().join("prometheus-operator-crds")
}

/// `~/.cache/operon/moto`: one directory per installed moto version.
pub fn moto_cache_dir() -> PathBuf {
    cache_root().join("moto")
}

/// The virtualenv `cargo xtask moto install` creates for [`MOTO_VERSION`].
pub fn moto_venv() -> PathBuf {
    moto_cache_dir().join(MOTO_VERSION).join("venv")
}

/// `moto_server` in [`moto_venv`].
pub fn moto_server() -> PathBuf {
    moto_venv().join("bin").join("moto_server")
}

/// The Helm binary built for [`HELM_VERSION`].
pub fn helm_binary() -> PathBuf {
    cache_root()
        .join("helm")
        .join(HELM_VERSION)
        .join("bin")
        .join("helm")
}

/// Where Go is installed when the machine has none: `~/.cache/operon/go`.
pub fn go_root() -> PathBuf {
    cache_root().join("go")
}

/// Whether `path` is a file anyone may execute.
pub fn is_executable(path: &std::path::Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    std::fs::metadata(path).is_ok_and(|m| m.is_file() && m.permissions().mode() & 0o111 != 0)
}

/// The first `name` on `PATH` that is executable.
pub fn on_path(name: &str) -> Option<PathBuf> {
    let paths = std::env::var_os("PATH")?;
    std::env::split_paths(&paths)
        .map(|dir| dir.join(name))
        .find(|p| is_executable(p))
}

/// Whether `rustc` (run with `path` as its PATH when given) has the standard library for
/// `triple` installed (`rustup target add`).
pub fn rust_target_installed(
    rustc: &std::path::Path,
    path: Option<&std::ffi::OsStr>,
    triple: &str,
) -> bool {
    let mut cmd = std::process::Command::new(rustc);
    if let Some(path) = path {
        cmd.env("PATH", path);
    }
    cmd.args(["--print", "sysroot"])
        .output()
        .ok()
        .filter(|o| o.status.success())
        .map(|o| PathBuf::from(String::from_utf8_lossy(&o.stdout).trim()))
        .is_some_and(|sysroot| {
            sysroot
                .join("lib/rustlib")
                .join(triple)
                .join("lib")
                .is_dir()
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn caches_live_under_the_root() {
        let root = cache_root();
        for path in [default_bin_dir(), moto_server(), helm_binary(), go_root()] {
            assert!(
                path.starts_with(&root),
                "{} not under {}",
                path.display(),
                root.display()
            );
        }
        assert!(default_bin_dir().ends_with(format!("k8s/{KUBERNETES_VERSION}/bin")));
    }

    #[test]
    fn monitoring_images_are_tagged_with_their_versions() {
        let pinned = [
            ("prometheus-operator", PROMETHEUS_OPERATOR_VERSION),
            ("prometheus-config-reloader", PROMETHEUS_OPERATOR_VERSION),
            ("kube-state-metrics", KUBE_STATE_METRICS_VERSION),
            ("prometheus", PROMETHEUS_VERSION),
            ("alertmanager", ALERTMANAGER_VERSION),
            ("node-exporter", NODE_EXPORTER_VERSION),
        ];
        for (image, (name, version)) in MONITORING_IMAGES.iter().zip(pinned) {
            assert_eq!(*image, format!("localhost/operon/{name}:{version}"));
        }
        assert!(prometheus_operator_crd_dir().starts_with(default_bin_dir()));
        // v3.13.1 is module v0.313.1.
        let release: Vec<u32> = PROMETHEUS_VERSION[1..]
            .split('.')
            .map(|p| p.parse().unwrap_or(u32::MAX))
            .collect();
        assert_eq!(
            PROMETHEUS_MODULE_VERSION,
            format!("v0.{}{:02}.{}", release[0], release[1], release[2])
        );
    }

    #[test]
    fn the_host_target_is_installed_and_a_made_up_one_is_not() {
        let host = format!("{}-unknown-linux-gnu", std::env::consts::ARCH);
        let rustc = std::path::Path::new("rustc");
        assert!(rust_target_installed(rustc, None, &host));
        assert!(!rust_target_installed(rustc, None, "no-such-target"));
    }
}
