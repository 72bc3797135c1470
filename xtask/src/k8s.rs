//! The Kubernetes binaries, built from Go modules.
//!
//! `tools/k8s` is a Go module of its own that requires `k8s.io/kubernetes`, etcd's server module
//! and kwok. `k8s.io/kubernetes` points every staging module (`k8s.io/api`, `k8s.io/client-go`, …)
//! at `./staging/…`, which a consumer can't use, so the consumer must replace each of them with
//! the published `v0.<minor>.<patch>` release. [`gen_mod`] derives that replace block from the
//! pinned release's own go.mod, so it is never copied by hand.
//!
//! `tools/coredns` and `tools/monitoring` (the Prometheus Operator, its config reloader and
//! kube-state-metrics) are modules of their own, built beside it into the same directory, with
//! the Prometheus Operator's CRDs. Prometheus is built in its own module's directory, with its
//! own go.mod and only Kubernetes service discovery.
//!
//! etcd's tools (`etcdctl`, `etcdutl`: snapshots and restores) come from `tools/etcd`, which
//! [`gen_mod`] writes too, at the etcd version Kubernetes pins: a module of its own, so that they
//! build with etcd's own dependency versions, and a stamp of their own, so that a cache built
//! before they existed builds only them.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail, ensure};
use operon_assets::{
    KUBE_STATE_METRICS_VERSION, KUBERNETES_VERSION, KWOK_STAGES_FILE, KWOK_VERSION,
    PROMETHEUS_MODULE_VERSION, PROMETHEUS_OPERATOR_VERSION, PROMETHEUS_VERSION, default_bin_dir,
    prometheus_operator_crd_dir,
};

use crate::go::go;
use crate::{elapsed, repo_root};

/// `(output binary, Go package)`.
const BINARIES: &[(&str, &str)] = &[
    ("etcd", "go.etcd.io/etcd/server/v3"),
    ("kwok", "sigs.k8s.io/kwok/cmd/kwok"),
    ("kubectl", "k8s.io/kubernetes/cmd/kubectl"),
    ("kube-scheduler", "k8s.io/kubernetes/cmd/kube-scheduler"),
    ("kube-proxy", "k8s.io/kubernetes/cmd/kube-proxy"),
    ("kubelet", "k8s.io/kubernetes/cmd/kubelet"),
    (
        "kube-controller-manager",
        "k8s.io/kubernetes/cmd/kube-controller-manager",
    ),
    ("kube-apiserver", "k8s.io/kubernetes/cmd/kube-apiserver"),
];

/// Built from `tools/etcd`, `(output binary, Go package)`.
const ETCD_TOOLS: &[(&str, &str)] = &[
    ("etcdctl", "go.etcd.io/etcd/etcdctl/v3"),
    ("etcdutl", "go.etcd.io/etcd/etcdutl/v3"),
];

/// The etcd module Kubernetes pins, whose version the tools are built at.
const ETCD_SERVER_MODULE: &str = "go.etcd.io/etcd/server/v3";

/// Built from `tools/coredns`, a module of its own (CoreDNS pins its own Kubernetes client).
const COREDNS: (&str, &str) = ("coredns", "operon.dev/tools/coredns");

/// Built from `tools/monitoring`: the Prometheus Operator's two programs, `(installed as, Go
/// package)`.
const PROMETHEUS_OPERATOR_BINARIES: &[(&str, &str)] = &[
    (
        "prometheus-operator",
        "github.com/prometheus-operator/prometheus-operator/cmd/operator",
    ),
    (
        "prometheus-config-reloader",
        "github.com/prometheus-operator/prometheus-operator/cmd/prometheus-config-reloader",
    ),
];

/// Also from `tools/monitoring`, but linked by a `go build` of its own: it reads its version
/// from the same variable as the Prometheus Operator's programs.
const KUBE_STATE_METRICS: (&str, &str) = ("kube-state-metrics", "k8s.io/kube-state-metrics/v2");

/// Prometheus, built as its own module (its go.mod replaces modules, so it can't be a
/// dependency of ours) with only Kubernetes service discovery: the other discovery mechanisms
/// would bring the cloud providers' SDKs, four times the download.
const PROMETHEUS: (&str, &str) = ("prometheus", "./cmd/prometheus");
const PROMETHEUS_MODULE: &str = "github.com/prometheus/prometheus";
const PROMETHEUS_TAGS: &str = "remove_all_sd,enable_kubernetes_sd";

const PROMETHEUS_OPERATOR_MODULE: &str = "github.com/prometheus-operator/prometheus-operator";

/// Where the Prometheus Operator's module keeps its CRDs (`monitoring.coreos.com_*.yaml`).
const PROMETHEUS_OPERATOR_CRDS: &str = "example/prometheus-operator-crd";

/// The version variable of `github.com/prometheus/common`, which both projects' `--version`
/// print (and the Prometheus Operator tags its default config reloader image with).
const PROMETHEUS_VERSION_VAR: &str = "github.com/prometheus/common/version.Version";

/// kwok Stage definitions (shipped in kwok's module) that make Nodes Ready with lease heartbeats
/// and take Pods through Running, completion and deletion.
const KWOK_STAGES: &[&str] = &[
    "kustomize/stage/node/fast/node-initialize.yaml",
    "kustomize/stage/node/heartbeat-with-lease/node-heartbeat-with-lease.yaml",
    "kustomize/stage/pod/fast/pod-ready.yaml",
    "kustomize/stage/pod/fast/pod-complete.yaml",
    "kustomize/stage/pod/fast/pod-delete.yaml",
];

pub fn module_dir() -> PathBuf {
    repo_root().join("tools").join("k8s")
}

pub fn etcd_module_dir() -> PathBuf {
    repo_root().join("tools").join("etcd")
}

pub fn coredns_module_dir() -> PathBuf {
    repo_root().join("tools").join("coredns")
}

pub fn monitoring_module_dir() -> PathBuf {
    repo_root().join("tools").join("monitoring")
}

fn go_cmd_in(go: &Path, dir: &Path) -> Command {
    let mut cmd = Command::new(go);
    cmd.current_dir(dir)
        .env("GOFLAGS", "-mod=mod")
        .env("GOTOOLCHAIN", "local")
        .env("CGO_ENABLED", "0");
    cmd
}

#[derive(serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
struct ModuleInfo {
    go_mod: Option<PathBuf>,
    dir: Option<PathBuf>,
    error: Option<String>,
}

fn download(go: &Path, module: &str) -> Result<ModuleInfo> {
    let out = Command::new(go)
        .args(["mod", "download", "-json", module])
        .env("GOTOOLCHAIN", "local")
        .current_dir(std::env::temp_dir())
        .output()
        .with_context(|| format!("go mod download {module}"))?;
    let info: ModuleInfo = serde_json::from_slice(&out.stdout)
        .with_context(|| format!("go mod download {module}: unexpected output"))?;
    if let Some(e) = &info.error {
        bail!("go mod download {module}: {e}");
    }
    Ok(info)
}

/// The `require` version of `module` in a go.mod text.
fn required_version(go_mod: &str, module: &str) -> Option<String> {
    go_mod.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        let first = words.next()?;
        let (name, version) = if first == "require" {
            (words.next()?, words.next()?)
        } else {
            (first, words.next()?)
        };
        (name == module && version.starts_with('v')).then(|| version.to_string())
    })
}

/// Every `X => ./staging/src/X` line of k8s.io/kubernetes's go.mod, as `(module)`.
fn staging_modules(go_mod: &str) -> Vec<String> {
    go_mod
        .lines()
        .filter_map(|line| {
            let (left, right) = line.split_once("=>")?;
            right
                .trim()
                .starts_with("./staging/")
                .then(|| left.trim().trim_start_matches("replace").trim().to_string())
        })
        .collect()
}

/// The go.mod text `gen-mod` writes before `go mod tidy` completes it.
fn render_go_mod(kubernetes_go_mod: &str) -> Result<String> {
    let staging = staging_modules(kubernetes_go_mod);
    ensure!(
        !staging.is_empty(),
        "k8s.io/kubernetes {KUBERNETES_VERSION}'s go.mod has no ./staging replaces"
    );
    let etcd = pinned_etcd(kubernetes_go_mod)?;
    let go_directive = go_directive(kubernetes_go_mod)?;
    // v1.36.3 → v0.36.3: the published staging modules' version scheme.
    let staging_version = format!("v0.{}", KUBERNETES_VERSION.trim_start_matches("v1."));

    let mut s = String::new();
    writeln!(
        s,
        "// Generated by `cargo xtask k8s gen-mod` from k8s.io/kubernetes {KUBERNETES_VERSION}'s go.mod; do not edit."
    )?;
    writeln!(
        s,
        "// Builds the control plane binaries: `cargo xtask k8s build`."
    )?;
    writeln!(s, "module operon.dev/tools/k8s\n")?;
    writeln!(s, "go {go_directive}\n")?;
    writeln!(s, "tool (")?;
    let mut tools: Vec<&str> = BINARIES.iter().map(|(_, pkg)| *pkg).collect();
    tools.sort_unstable();
    for pkg in tools {
        writeln!(s, "\t{pkg}")?;
    }
    writeln!(s, ")\n")?;
    writeln!(s, "require (")?;
    writeln!(s, "\t{ETCD_SERVER_MODULE} {etcd}")?;
    writeln!(s, "\tk8s.io/kubernetes {KUBERNETES_VERSION}")?;
    writeln!(s, "\tsigs.k8s.io/kwok {KWOK_VERSION}")?;
    writeln!(s, ")\n")?;
    writeln!(s, "replace (")?;
    for module in staging {
        writeln!(s, "\t{module} => {module} {staging_version}")?;
    }
    writeln!(s, ")")?;
    Ok(s)
}

/// The etcd version k8s.io/kubernetes's go.mod pins.
fn pinned_etcd(kubernetes_go_mod: &str) -> Result<String> {
    required_version(kubernetes_go_mod, ETCD_SERVER_MODULE)
        .with_context(|| format!("k8s.io/kubernetes does not pin {ETCD_SERVER_MODULE}"))
}

fn go_directive(kubernetes_go_mod: &str) -> Result<&str> {
    Ok(kubernetes_go_mod
        .lines()
        .find_map(|l| l.strip_prefix("go "))
        .context("k8s.io/kubernetes's go.mod has no go directive")?
        .trim())
}

/// The go.mod text of `tools/etcd` that `gen-mod` writes before `go mod tidy` completes it:
/// etcd's tools at the version Kubernetes pins.
fn render_etcd_go_mod(kubernetes_go_mod: &str) -> Result<String> {
    let etcd = pinned_etcd(kubernetes_go_mod)?;
    let mut s = String::new();
    writeln!(
        s,
        "// Generated by `cargo xtask k8s gen-mod` from k8s.io/kubernetes {KUBERNETES_VERSION}'s go.mod; do not edit."
    )?;
    writeln!(
        s,
        "// Builds etcd's tools at the etcd version Kubernetes pins: `cargo xtask k8s build`."
    )?;
    writeln!(s, "module operon.dev/tools/etcd\n")?;
    writeln!(s, "go {}\n", go_directive(kubernetes_go_mod)?)?;
    writeln!(s, "tool (")?;
    for (_, pkg) in ETCD_TOOLS {
        writeln!(s, "\t{pkg}")?;
    }
    writeln!(s, ")\n")?;
    writeln!(s, "require (")?;
    for (_, pkg) in ETCD_TOOLS {
        writeln!(s, "\t{pkg} {etcd}")?;
    }
    writeln!(s, ")")?;
    Ok(s)
}

/// Fails when `tools/coredns`'s go.mod or go.sum is not what `go mod tidy` makes of it.
pub fn check_coredns_mod() -> Result<()> {
    check_tidy(&coredns_module_dir(), "tools/coredns")
}

/// Fails when `tools/monitoring`'s go.mod or go.sum is not what `go mod tidy` makes of it.
pub fn check_monitoring_mod() -> Result<()> {
    check_tidy(&monitoring_module_dir(), "tools/monitoring")
}

/// Fails when the Go module in `dir` is not what `go mod tidy` makes of it.
pub fn check_tidy(dir: &Path, name: &str) -> Result<()> {
    let go = go()?;
    let out = go_cmd_in(&go, dir)
        .args(["mod", "tidy", "-diff"])
        .output()
        .with_context(|| format!("go mod tidy -diff ({name})"))?;
    ensure!(
        out.status.success(),
        "{name}: go.mod/go.sum are not tidy; run `go mod tidy` there:\n{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    Ok(())
}

/// Regenerates `tools/k8s/go.mod` (and go.sum) from the pinned Kubernetes release.
pub fn gen_mod() -> Result<()> {
    let go = go()?;
    let info = download(&go, &format!("k8s.io/kubernetes@{KUBERNETES_VERSION}"))?;
    let go_mod_path = info.go_mod.context("go mod download gave no GoMod path")?;
    let kubernetes_go_mod = std::fs::read_to_string(&go_mod_path)
        .with_context(|| format!("reading {}", go_mod_path.display()))?;
    for (dir, text) in [
        (module_dir(), render_go_mod(&kubernetes_go_mod)?),
        (etcd_module_dir(), render_etcd_go_mod(&kubernetes_go_mod)?),
    ] {
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join("go.mod"), text)?;
        let status = go_cmd_in(&go, &dir)
            .args(["mod", "tidy"])
            .status()
            .with_context(|| format!("go mod tidy ({})", dir.display()))?;
        ensure!(status.success(), "go mod tidy ({}) failed", dir.display());
        println!("wrote {}", dir.join("go.mod").display());
    }
    Ok(())
}

fn ldflags() -> String {
    let v = KUBERNETES_VERSION;
    let minor = v.split('.').nth(1).unwrap_or_default();
    let kwok = KWOK_VERSION.trim_start_matches('v');
    [
        "-s -w".to_string(),
        format!("-X k8s.io/component-base/version.gitVersion={v}"),
        "-X k8s.io/component-base/version.gitMajor=1".to_string(),
        format!("-X k8s.io/component-base/version.gitMinor={minor}"),
        "-X k8s.io/component-base/version.gitTreeState=clean".to_string(),
        format!("-X k8s.io/client-go/pkg/version.gitVersion={v}"),
        format!("-X sigs.k8s.io/kwok/pkg/consts.Version={kwok}"),
    ]
    .join(" ")
}

/// The Prometheus Operator's version as its own release builds stamp it (`0.93.0`, no `v`: it
/// appends this to `:v` for its default config reloader image).
fn prometheus_operator_ldflags() -> String {
    let v = PROMETHEUS_OPERATOR_VERSION.trim_start_matches('v');
    format!("-s -w -X {PROMETHEUS_VERSION_VAR}={v}")
}

/// kube-state-metrics's version (`v2.20.0`, as its releases print it) and the client-go it was
/// built with (its `kube_state_metrics_build_info` metric reports it), from `monitoring_go_mod`.
fn kube_state_metrics_ldflags(monitoring_go_mod: &str) -> Result<String> {
    let client_go = required_version(monitoring_go_mod, "k8s.io/client-go")
        .context("tools/monitoring/go.mod does not require k8s.io/client-go")?;
    Ok(format!(
        "-s -w -X {PROMETHEUS_VERSION_VAR}={KUBE_STATE_METRICS_VERSION} \
         -X k8s.io/kube-state-metrics/v2/pkg/app.ClientGoVersion={client_go}"
    ))
}

/// Prometheus's version, as its releases print it (`3.13.1`).
fn prometheus_ldflags() -> String {
    let v = PROMETHEUS_VERSION.trim_start_matches('v');
    format!("-s -w -X {PROMETHEUS_VERSION_VAR}={v}")
}

fn monitoring_go_mod() -> Result<String> {
    let path = monitoring_module_dir().join("go.mod");
    std::fs::read_to_string(&path).with_context(|| format!("reading {}", path.display()))
}

/// Identifies a build: the module files and flags. A cache with the same stamp is up to date.
fn stamp() -> Result<String> {
    let mut parts = vec![
        ldflags(),
        prometheus_operator_ldflags(),
        kube_state_metrics_ldflags(&monitoring_go_mod()?)?,
        format!("{PROMETHEUS_MODULE}@{PROMETHEUS_MODULE_VERSION} {PROMETHEUS_TAGS}"),
        prometheus_ldflags(),
    ];
    for dir in [module_dir(), coredns_module_dir(), monitoring_module_dir()] {
        let mut files = vec![dir.join("go.mod"), dir.join("go.sum")];
        let mut sources: Vec<PathBuf> = std::fs::read_dir(&dir)
            .with_context(|| format!("reading {}", dir.display()))?
            .filter_map(|e| e.ok().map(|e| e.path()))
            .filter(|p| p.extension().is_some_and(|e| e == "go"))
            .collect();
        // Directory order varies between machines; the stamp must not.
        sources.sort();
        files.extend(sources);
        for path in files {
            parts.push(
                std::fs::read_to_string(&path)
                    .with_context(|| format!("reading {}", path.display()))?,
            );
        }
    }
    Ok(format!("{KUBERNETES_VERSION} {:016x}\n", hash(&parts)))
}

fn hash(parts: &[String]) -> u64 {
    let mut h = Fnv64::default();
    for part in parts {
        h.write(part.as_bytes());
        h.write(&[0]);
    }
    h.0
}

/// Linker flags of etcd's tools: their version is etcd's own constant.
const ETCD_TOOLS_LDFLAGS: &str = "-s -w";

/// Identifies a build of etcd's tools: `tools/etcd`'s module files and flags.
fn etcd_tools_stamp() -> Result<String> {
    let dir = etcd_module_dir();
    let mut parts = vec![ETCD_TOOLS_LDFLAGS.to_string()];
    for path in [dir.join("go.mod"), dir.join("go.sum")] {
        parts.push(
            std::fs::read_to_string(&path)
                .with_context(|| format!("reading {}", path.display()))?,
        );
    }
    Ok(format!("etcd tools {:016x}\n", hash(&parts)))
}

/// FNV-1a: a stable hash (std's hasher is randomly seeded per process).
struct Fnv64(u64);
impl Default for Fnv64 {
    fn default() -> Self {
        Fnv64(0xcbf2_9ce4_8422_2325)
    }
}
impl Fnv64 {
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 ^= u64::from(*b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
    }
}

const STAMP_FILE: &str = ".build-stamp";
/// etcd's tools have a stamp of their own: see the module docs.
const ETCD_TOOLS_STAMP_FILE: &str = ".build-stamp-etcd-tools";

/// Where the binaries are (building them first when needed). Honours `KUBEBUILDER_ASSETS`.
/// Two callers at once don't both build: the second waits for the first's lock, then finds
/// the binaries up to date.
pub fn ensure_built(force: bool) -> Result<PathBuf> {
    if let Some(dir) = std::env::var_os("KUBEBUILDER_ASSETS").filter(|d| !d.is_empty()) {
        let dir = PathBuf::from(dir);
        let missing: Vec<&str> = BINARIES
            .iter()
            .map(|(b, _)| *b)
            .filter(|b| !dir.join(b).is_file())
            .collect();
        if missing.is_empty() {
            println!(
                "k8s: using binaries from KUBEBUILDER_ASSETS={}",
                dir.display()
            );
            return Ok(dir);
        }
        println!(
            "k8s: KUBEBUILDER_ASSETS={} lacks {}; building them",
            dir.display(),
            missing.join(", ")
        );
    }
    let bin = default_bin_dir();
    let stamp = stamp()?;
    let etcd_stamp = etcd_tools_stamp()?;
    let stamped = |file: &str, stamp: &str| {
        std::fs::read_to_string(bin.join(file)).ok().as_deref() == Some(stamp)
    };
    let up_to_date = || {
        BINARIES.iter().all(|(b, _)| bin.join(b).is_file())
            && bin.join(COREDNS.0).is_file()
            && monitoring_binaries().all(|b| bin.join(b).is_file())
            && bin.join(KWOK_STAGES_FILE).is_file()
            && prometheus_operator_crd_dir()
                .join("monitoring.coreos.com_prometheuses.yaml")
                .is_file()
            && stamped(STAMP_FILE, &stamp)
    };
    let etcd_tools_up_to_date = || {
        ETCD_TOOLS.iter().all(|(b, _)| bin.join(b).is_file())
            && stamped(ETCD_TOOLS_STAMP_FILE, &etcd_stamp)
    };
    if !force && up_to_date() && etcd_tools_up_to_date() {
        println!(
            "k8s: {KUBERNETES_VERSION} binaries up to date in {}",
            bin.display()
        );
        return Ok(bin);
    }
    std::fs::create_dir_all(&bin)?;
    let lock = std::fs::File::create(bin.join(".build-lock"))?;
    if lock.try_lock().is_err() {
        println!("k8s: another build of the binaries is running; waiting for it");
        lock.lock()?;
    }
    // Each part is built only when it is out of date: a cache made before etcd's tools
    // existed builds just them.
    let mut built = false;
    if force || !up_to_date() {
        let _ = std::fs::remove_file(bin.join(STAMP_FILE));
        build(&bin)?;
        std::fs::write(bin.join(STAMP_FILE), &stamp)?;
        built = true;
    }
    if force || !etcd_tools_up_to_date() {
        let _ = std::fs::remove_file(bin.join(ETCD_TOOLS_STAMP_FILE));
        build_etcd_tools(&bin)?;
        std::fs::write(bin.join(ETCD_TOOLS_STAMP_FILE), &etcd_stamp)?;
        built = true;
    }
    if !built {
        println!(
            "k8s: {KUBERNETES_VERSION} binaries built in {}",
            bin.display()
        );
    }
    Ok(bin)
}

/// Builds etcdctl and etcdutl from `tools/etcd` into `bin`, and checks that they are the etcd
/// version Kubernetes pins.
fn build_etcd_tools(bin: &Path) -> Result<()> {
    let go = go()?;
    let t0 = Instant::now();
    let dir = etcd_module_dir();
    let kubernetes_go_mod =
        std::fs::read_to_string(module_dir().join("go.mod")).context("reading tools/k8s/go.mod")?;
    let etcd = required_version(&kubernetes_go_mod, ETCD_SERVER_MODULE)
        .context("tools/k8s/go.mod does not require etcd's server")?;
    println!(
        "k8s: building etcdctl and etcdutl {etcd} from {} into {}",
        dir.display(),
        bin.display()
    );
    let status = go_cmd_in(&go, &dir)
        .args(["mod", "download"])
        .status()
        .context("go mod download (tools/etcd)")?;
    ensure!(status.success(), "go mod download (tools/etcd) failed");
    let staging = bin.join(".staging-etcd-tools");
    let _ = std::fs::remove_dir_all(&staging);
    let pkgs: Vec<&str> = ETCD_TOOLS.iter().map(|(_, pkg)| *pkg).collect();
    let compiled = Arc::new(AtomicUsize::new(0));
    GoBuild::start(&go, &dir, ETCD_TOOLS_LDFLAGS, &staging, &pkgs, &compiled)?.wait()?;
    let expected = format!("version: {}", etcd.trim_start_matches('v'));
    for (name, pkg) in ETCD_TOOLS {
        let path = staging.join(exec_name(pkg));
        let out = Command::new(&path)
            .arg("version")
            .output()
            .with_context(|| format!("running {name} version"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            text.lines().next() == Some(&format!("{name} {expected}")),
            "{name} version says {:?}, expected {name} {expected}",
            text.trim()
        );
        std::fs::rename(&path, bin.join(name)).with_context(|| format!("installing {name}"))?;
    }
    let _ = std::fs::remove_dir_all(&staging);
    println!(
        "k8s: etcdctl and etcdutl {etcd} built in {} ({} Go packages compiled)",
        elapsed(t0),
        compiled.load(Ordering::Relaxed)
    );
    Ok(())
}

/// The names the monitoring stack's Go binaries are installed under.
fn monitoring_binaries() -> impl Iterator<Item = &'static str> {
    PROMETHEUS_OPERATOR_BINARIES
        .iter()
        .chain([&KUBE_STATE_METRICS])
        .map(|(name, _)| *name)
}

/// The file name `go build -o <dir>/` gives a main package: its last path element, or the one
/// before a major-version suffix (`go.etcd.io/etcd/server/v3` → `server`).
fn exec_name(pkg: &str) -> &str {
    let mut elems = pkg.rsplit('/');
    let last = elems.next().unwrap_or(pkg);
    let is_major =
        last.len() > 1 && last.starts_with('v') && last[1..].chars().all(|c| c.is_ascii_digit());
    if is_major {
        elems.next().unwrap_or(last)
    } else {
        last
    }
}

/// One `go build` of several main packages of one module into `out`, in the background;
/// `compiled` counts packages as `-v` names them.
struct GoBuild {
    what: String,
    child: std::process::Child,
    reader: std::thread::JoinHandle<Vec<String>>,
}

impl GoBuild {
    fn start(
        go: &Path,
        dir: &Path,
        ldflags: &str,
        out: &Path,
        pkgs: &[&str],
        compiled: &Arc<AtomicUsize>,
    ) -> Result<Self> {
        Self::spawn(go_cmd_in(go, dir), dir, &[], ldflags, out, pkgs, compiled)
    }

    /// `pkgs` of the module in `dir` (a module cache directory) as that module builds them:
    /// its own go.mod and go.sum, which must be complete, and build `tags`.
    fn start_own_module(
        go: &Path,
        dir: &Path,
        tags: &str,
        ldflags: &str,
        out: &Path,
        pkgs: &[&str],
        compiled: &Arc<AtomicUsize>,
    ) -> Result<Self> {
        let mut cmd = go_cmd_in(go, dir);
        // Its go.work lists directories the module's zip leaves out.
        cmd.env("GOFLAGS", "-mod=readonly").env("GOWORK", "off");
        Self::spawn(cmd, dir, &["-tags", tags], ldflags, out, pkgs, compiled)
    }

    fn spawn(
        mut cmd: Command,
        dir: &Path,
        args: &[&str],
        ldflags: &str,
        out: &Path,
        pkgs: &[&str],
        compiled: &Arc<AtomicUsize>,
    ) -> Result<Self> {
        std::fs::create_dir_all(out)?;
        let what = format!("go build ({})", dir.display());
        let mut child = cmd
            .args(["build", "-v", "-trimpath"])
            .args(args)
            .args(["-ldflags", ldflags, "-o"])
            // A trailing slash: a directory, one binary per package.
            .arg(format!("{}/", out.display()))
            .args(pkgs)
            .stdout(Stdio::inherit())
            .stderr(Stdio::piped())
            .spawn()
            .with_context(|| format!("starting {what}"))?;
        let stderr = child.stderr.take().context("go build's stderr")?;
        let compiled = compiled.clone();
        let reader = std::thread::spawn(move || {
            let mut errors = Vec::new();
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                // `-v` prints each package as it is compiled; anything else is a diagnostic.
                if line.contains(' ') || line.starts_with('#') {
                    errors.push(line);
                } else {
                    compiled.fetch_add(1, Ordering::Relaxed);
                }
            }
            errors
        });
        Ok(GoBuild {
            what,
            child,
            reader,
        })
    }

    fn wait(mut self) -> Result<()> {
        let status = self.child.wait()?;
        let errors = self.reader.join().unwrap_or_default();
        if !status.success() {
            bail!("{} failed ({status}):\n{}", self.what, errors.join("\n"));
        }
        Ok(())
    }
}

fn build(bin: &Path) -> Result<()> {
    let go = go()?;
    let t0 = Instant::now();
    let ksm_ldflags = kube_state_metrics_ldflags(&monitoring_go_mod()?)?;
    println!(
        "k8s: building Kubernetes {KUBERNETES_VERSION}, etcd, kwok {KWOK_VERSION}, CoreDNS, \
         the Prometheus Operator {PROMETHEUS_OPERATOR_VERSION}, kube-state-metrics \
         {KUBE_STATE_METRICS_VERSION} and Prometheus {PROMETHEUS_VERSION} into {}",
        bin.display()
    );
    println!(
        "k8s: a first build is the longest step of a first run (measured: docs/node.md, \
         Timings); Go's own caches make later ones quick"
    );

    phase(t0, "downloading Go modules");
    for dir in [module_dir(), coredns_module_dir(), monitoring_module_dir()] {
        let status = go_cmd_in(&go, &dir)
            .args(["mod", "download"])
            .status()
            .with_context(|| format!("go mod download ({})", dir.display()))?;
        ensure!(
            status.success(),
            "go mod download ({}) failed",
            dir.display()
        );
    }

    // The modules in one go each, at once: Go compiles one binary's packages while it links
    // another, so neither core waits on a single-threaded link.
    phase(
        t0,
        "compiling (Go prints nothing until a binary fails; counts follow)",
    );
    let staging = bin.join(".staging");
    let _ = std::fs::remove_dir_all(&staging);
    let compiled = Arc::new(AtomicUsize::new(0));
    let k8s_pkgs: Vec<&str> = BINARIES.iter().map(|(_, pkg)| *pkg).collect();
    let kube = GoBuild::start(
        &go,
        &module_dir(),
        &ldflags(),
        &staging,
        &k8s_pkgs,
        &compiled,
    )?;
    // The version stamps are Kubernetes's; CoreDNS carries its own version.
    let coredns = GoBuild::start(
        &go,
        &coredns_module_dir(),
        "-s -w",
        &staging.join("coredns"),
        &[COREDNS.1],
        &compiled,
    )?;
    let monitoring = {
        let (go, out, compiled) = (go.clone(), staging.join("monitoring"), compiled.clone());
        std::thread::spawn(move || -> Result<()> {
            let dir = monitoring_module_dir();
            let operator: Vec<&str> = PROMETHEUS_OPERATOR_BINARIES
                .iter()
                .map(|(_, pkg)| *pkg)
                .collect();
            GoBuild::start(
                &go,
                &dir,
                &prometheus_operator_ldflags(),
                &out,
                &operator,
                &compiled,
            )?
            .wait()?;
            // After the operator's build, not beside it: the two share most packages, which
            // this one then finds in Go's cache instead of compiling them a second time.
            GoBuild::start(
                &go,
                &dir,
                &ksm_ldflags,
                &out,
                &[KUBE_STATE_METRICS.1],
                &compiled,
            )?
            .wait()?;
            let prometheus = download(
                &go,
                &format!("{PROMETHEUS_MODULE}@{PROMETHEUS_MODULE_VERSION}"),
            )?
            .dir
            .context("go mod download gave no Dir for Prometheus")?;
            GoBuild::start_own_module(
                &go,
                &prometheus,
                PROMETHEUS_TAGS,
                &prometheus_ldflags(),
                &out,
                &[PROMETHEUS.1],
                &compiled,
            )?
            .wait()
        })
    };
    let done = Arc::new(AtomicBool::new(false));
    let ticker = {
        let (compiled, done) = (compiled.clone(), done.clone());
        std::thread::spawn(move || {
            let mut last = Instant::now();
            while !done.load(Ordering::Relaxed) {
                std::thread::sleep(Duration::from_millis(200));
                if last.elapsed() >= Duration::from_secs(15) {
                    last = Instant::now();
                    println!(
                        "k8s:   … {} Go packages compiled ({})",
                        compiled.load(Ordering::Relaxed),
                        elapsed(t0)
                    );
                }
            }
        })
    };
    let result = kube.wait().and(coredns.wait()).and(
        monitoring
            .join()
            .unwrap_or_else(|_| Err(anyhow::anyhow!("the monitoring build's thread panicked"))),
    );
    done.store(true, Ordering::Relaxed);
    let _ = ticker.join();
    result?;
    for (name, pkg) in BINARIES {
        std::fs::rename(staging.join(exec_name(pkg)), bin.join(name))
            .with_context(|| format!("installing {name}"))?;
    }
    std::fs::rename(
        staging.join("coredns").join(exec_name(COREDNS.1)),
        bin.join(COREDNS.0),
    )
    .context("installing coredns")?;
    for (name, pkg) in PROMETHEUS_OPERATOR_BINARIES
        .iter()
        .chain([&KUBE_STATE_METRICS, &PROMETHEUS])
    {
        std::fs::rename(
            staging.join("monitoring").join(exec_name(pkg)),
            bin.join(name),
        )
        .with_context(|| format!("installing {name}"))?;
    }
    let _ = std::fs::remove_dir_all(&staging);

    phase(t0, "installing kwok stages");
    let kwok = download(&go, &format!("sigs.k8s.io/kwok@{KWOK_VERSION}"))?;
    let kwok_dir = kwok.dir.context("go mod download gave no Dir for kwok")?;
    let mut stages = String::new();
    for stage in KWOK_STAGES {
        let text = std::fs::read_to_string(kwok_dir.join(stage))
            .with_context(|| format!("reading kwok's {stage}"))?;
        stages.push_str("---\n");
        stages.push_str(&text);
        if !text.ends_with('\n') {
            stages.push('\n');
        }
    }
    std::fs::write(bin.join(KWOK_STAGES_FILE), stages)?;

    phase(t0, "installing the Prometheus Operator's CRDs");
    install_prometheus_operator_crds(&go)?;

    phase(t0, "checking versions");
    let out = Command::new(bin.join("kube-apiserver"))
        .arg("--version")
        .output()?;
    let version = String::from_utf8_lossy(&out.stdout).trim().to_string();
    ensure!(
        version == format!("Kubernetes {KUBERNETES_VERSION}"),
        "kube-apiserver --version says {version:?}, expected Kubernetes {KUBERNETES_VERSION}"
    );
    // kube-state-metrics has a `version` command rather than a flag.
    for (name, arg, expected) in [
        (
            PROMETHEUS_OPERATOR_BINARIES[0].0,
            "--version",
            PROMETHEUS_OPERATOR_VERSION.trim_start_matches('v'),
        ),
        (KUBE_STATE_METRICS.0, "version", KUBE_STATE_METRICS_VERSION),
        (
            PROMETHEUS.0,
            "--version",
            PROMETHEUS_VERSION.trim_start_matches('v'),
        ),
    ] {
        let out = Command::new(bin.join(name))
            .arg(arg)
            .output()
            .with_context(|| format!("running {name} {arg}"))?;
        let text = String::from_utf8_lossy(&out.stdout);
        ensure!(
            text.contains(&format!("version {expected} ")),
            "{name} {arg} says {:?}, expected version {expected}",
            text.trim()
        );
    }
    println!("k8s: done in {}: {version}", elapsed(t0));
    Ok(())
}

/// Copies the Prometheus Operator's CRDs from its module (the same release as the binaries)
/// to [`prometheus_operator_crd_dir`], replacing what was there.
fn install_prometheus_operator_crds(go: &Path) -> Result<()> {
    let module = download(
        go,
        &format!("{PROMETHEUS_OPERATOR_MODULE}@{PROMETHEUS_OPERATOR_VERSION}"),
    )?;
    let source = module
        .dir
        .context("go mod download gave no Dir for the Prometheus Operator")?
        .join(PROMETHEUS_OPERATOR_CRDS);
    let target = prometheus_operator_crd_dir();
    let partial = target.with_extension("partial");
    let _ = std::fs::remove_dir_all(&partial);
    std::fs::create_dir_all(&partial)?;
    let mut copied = 0;
    for entry in
        std::fs::read_dir(&source).with_context(|| format!("reading {}", source.display()))?
    {
        let path = entry?.path();
        let name = path
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or_default();
        if name.starts_with("monitoring.coreos.com_") && name.ends_with(".yaml") {
            // Read and written rather than copied: the module cache's files are read-only.
            let text =
                std::fs::read(&path).with_context(|| format!("reading {}", path.display()))?;
            std::fs::write(partial.join(name), text)?;
            copied += 1;
        }
    }
    ensure!(
        copied > 0,
        "no monitoring.coreos.com_*.yaml in {}",
        source.display()
    );
    let _ = std::fs::remove_dir_all(&target);
    std::fs::rename(&partial, &target)
        .with_context(|| format!("installing {}", target.display()))?;
    Ok(())
}

fn phase(t0: Instant, what: &str) {
    println!("k8s: [{}] {what}", elapsed(t0));
}

#[cfg(test)]
mod tests {
    use super::*;

    const SAMPLE: &str = "module k8s.io/kubernetes\n\ngo 1.26.0\n\nrequire (\n\tgo.etcd.io/etcd/server/v3 v3.6.8 // indirect\n\tk8s.io/api v0.0.0\n)\n\nreplace (\n\tk8s.io/api => ./staging/src/k8s.io/api\n\tk8s.io/client-go => ./staging/src/k8s.io/client-go\n\tgithub.com/other/x => github.com/fork/x v1.0.0\n)\n";

    #[test]
    fn replace_block_comes_from_the_staging_lines() -> Result<()> {
        assert_eq!(staging_modules(SAMPLE), ["k8s.io/api", "k8s.io/client-go"]);
        let text = render_go_mod(SAMPLE)?;
        let minor = KUBERNETES_VERSION.trim_start_matches("v1.");
        assert!(text.contains(&format!("\tk8s.io/api => k8s.io/api v0.{minor}\n")));
        assert!(text.contains(&format!(
            "\tk8s.io/client-go => k8s.io/client-go v0.{minor}\n"
        )));
        assert!(!text.contains("github.com/other/x"));
        assert!(text.contains("\tgo.etcd.io/etcd/server/v3 v3.6.8\n"));
        assert!(text.contains("\ngo 1.26.0\n"));
        Ok(())
    }

    #[test]
    fn etcds_tools_are_required_at_the_pinned_etcd() -> Result<()> {
        let text = render_etcd_go_mod(SAMPLE)?;
        assert!(text.contains("\ngo 1.26.0\n"));
        for (_, pkg) in ETCD_TOOLS {
            assert!(text.contains(&format!("\t{pkg} v3.6.8\n")), "{text}");
            assert!(text.contains(&format!("\t{pkg}\n")), "not a tool: {text}");
        }
        // The checked-in modules agree: the tools are the etcd the control plane runs.
        let k8s = std::fs::read_to_string(module_dir().join("go.mod"))?;
        let etcd = std::fs::read_to_string(etcd_module_dir().join("go.mod"))?;
        let server = required_version(&k8s, ETCD_SERVER_MODULE);
        assert!(server.is_some());
        for (_, pkg) in ETCD_TOOLS {
            assert_eq!(required_version(&etcd, pkg), server, "{pkg}");
        }
        Ok(())
    }

    #[test]
    fn the_checked_in_go_mod_replaces_every_staging_module_once() -> Result<()> {
        let go_mod = std::fs::read_to_string(module_dir().join("go.mod"))?;
        for module in [
            "k8s.io/api",
            "k8s.io/cri-streaming",
            "k8s.io/streaming",
            "k8s.io/externaljwt",
        ] {
            let count = go_mod
                .lines()
                .filter(|l| l.trim_start().starts_with(&format!("{module} => ")))
                .count();
            assert_eq!(count, 1, "{module} replaced {count} times");
        }
        Ok(())
    }

    #[test]
    fn exec_names_are_gos() {
        assert_eq!(exec_name("go.etcd.io/etcd/server/v3"), "server");
        assert_eq!(exec_name("k8s.io/kubernetes/cmd/kubectl"), "kubectl");
        assert_eq!(exec_name("operon.dev/tools/coredns"), "coredns");
        for (name, pkg) in ETCD_TOOLS {
            assert_eq!(exec_name(pkg), *name);
        }
        let mut names: Vec<&str> = BINARIES.iter().map(|(_, p)| exec_name(p)).collect();
        names.sort_unstable();
        names.dedup();
        assert_eq!(
            names.len(),
            BINARIES.len(),
            "two binaries would share a file name"
        );
    }

    #[test]
    fn the_monitoring_module_pins_the_assets_versions() -> Result<()> {
        let go_mod = monitoring_go_mod()?;
        assert_eq!(
            required_version(&go_mod, PROMETHEUS_OPERATOR_MODULE).as_deref(),
            Some(PROMETHEUS_OPERATOR_VERSION)
        );
        assert_eq!(
            required_version(&go_mod, "k8s.io/kube-state-metrics/v2").as_deref(),
            Some(KUBE_STATE_METRICS_VERSION)
        );
        assert!(prometheus_operator_ldflags().ends_with(&format!(
            "version.Version={}",
            PROMETHEUS_OPERATOR_VERSION.trim_start_matches('v')
        )));
        let ksm = kube_state_metrics_ldflags(&go_mod)?;
        assert!(ksm.contains(&format!("version.Version={KUBE_STATE_METRICS_VERSION} ")));
        assert!(ksm.contains("ClientGoVersion=v0."), "{ksm}");
        // Distinct: they share one staging directory.
        let names: Vec<&str> = PROMETHEUS_OPERATOR_BINARIES
            .iter()
            .chain([&KUBE_STATE_METRICS])
            .map(|(_, p)| exec_name(p))
            .collect();
        assert_eq!(
            names,
            [
                "operator",
                "prometheus-config-reloader",
                "kube-state-metrics"
            ]
        );
        Ok(())
    }

    #[test]
    fn ldflags_stamp_the_release_version() {
        let flags = ldflags();
        assert!(flags.contains(&format!("version.gitVersion={KUBERNETES_VERSION}")));
        assert!(flags.contains("version.gitMajor=1"));
        assert!(!flags.contains("v0.0.0"));
    }
}
