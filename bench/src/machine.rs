//! What the report says about the machine and the versions measured.

use std::path::{Path, PathBuf};
use std::process::Command;

use crate::report::{Machine, Versions};

pub(crate) fn command_line(cmd: &str, args: &[&str]) -> Option<String> {
    let out = Command::new(cmd).args(args).output().ok()?;
    out.status
        .success()
        .then(|| String::from_utf8_lossy(&out.stdout).trim().to_string())
}

fn read(path: &str) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

pub(crate) fn machine() -> Machine {
    use procfs::Current as _;
    // procfs reports bytes.
    let mem_bytes = procfs::Meminfo::current().map_or(0, |m| m.mem_total);
    Machine {
        hostname: read("/proc/sys/kernel/hostname").trim().to_string(),
        cpus: std::thread::available_parallelism()
            .map(|n| n.get())
            .unwrap_or(1),
        cpu_model: procfs::CpuInfo::current()
            .ok()
            .and_then(|c| c.model_name(0).map(str::to_string))
            .unwrap_or_default(),
        memory_gib: mem_bytes as f64 / 1024.0 / 1024.0 / 1024.0,
        // Single-value files: nothing to parse (procfs's kernel `Version` drops the suffix).
        kernel: read("/proc/sys/kernel/osrelease").trim().to_string(),
    }
}

/// The version of `name` in this workspace's dependency graph, from `cargo metadata`.
fn cargo_version(root: &Path, name: &str) -> String {
    cargo_metadata::MetadataCommand::new()
        .current_dir(root)
        .exec()
        .ok()
        .and_then(|m| m.packages.into_iter().find(|p| p.name.as_str() == name))
        .map_or_else(|| "unknown".into(), |p| p.version.to_string())
}

/// The version of module `name` in a go.mod text.
fn locked_version(lock: &str, name: &str) -> String {
    lock.lines()
        .map(str::trim)
        .find_map(|l| l.strip_prefix(&format!("{name} ")))
        .map(|v| v.split_whitespace().next().unwrap_or_default().to_string())
        .unwrap_or_else(|| "unknown".into())
}

pub(crate) fn versions() -> Versions {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default();
    let gomod = std::fs::read_to_string(root.join("bench/go-peer/go.mod")).unwrap_or_default();
    let apiserver = std::env::var_os("KUBEBUILDER_ASSETS")
        .map(|d| PathBuf::from(d).join("kube-apiserver"))
        .and_then(|p| command_line(&p.to_string_lossy(), &["--version"]))
        .unwrap_or_else(|| "unknown".into());
    Versions {
        kubernetes: apiserver.trim_start_matches("Kubernetes ").to_string(),
        rustc: command_line("rustc", &["--version"]).unwrap_or_default(),
        kube_rs: cargo_version(&root, "kube"),
        go: command_line("go", &["version"]).unwrap_or_default(),
        controller_runtime: locked_version(&gomod, "sigs.k8s.io/controller-runtime"),
        client_go: locked_version(&gomod, "k8s.io/client-go"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn describes_this_machine() {
        let m = machine();
        assert!(m.memory_gib > 0.0, "{}", m.memory_gib);
        assert!(!m.kernel.is_empty() && !m.hostname.is_empty());
        let meminfo = read("/proc/meminfo");
        let kb: f64 = meminfo
            .lines()
            .find_map(|l| l.strip_prefix("MemTotal:"))
            .and_then(|v| v.split_whitespace().next()?.parse().ok())
            .unwrap_or(0.0);
        assert!((m.memory_gib - kb / 1024.0 / 1024.0).abs() < 1e-9);
    }

    #[test]
    fn reads_versions_from_go_mod_and_cargo_metadata() {
        let root = Path::new(env!("CARGO_MANIFEST_DIR")).join("..");
        let kube = cargo_version(&root, "kube");
        assert!(kube.starts_with(|c: char| c.is_ascii_digit()), "{kube}");
        assert_eq!(cargo_version(&root, "no-such-crate"), "unknown");
        let gomod =
            "require (\n\tk8s.io/client-go v0.36.1\n\tsigs.k8s.io/controller-runtime v0.25.2\n)\n";
        assert_eq!(
            locked_version(gomod, "sigs.k8s.io/controller-runtime"),
            "v0.25.2"
        );
        assert_eq!(locked_version(gomod, "k8s.io/client-go"), "v0.36.1");
        assert_eq!(locked_version(gomod, "missing"), "unknown");
    }
}
