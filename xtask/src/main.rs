//! Project automation, in the spirit of operator-sdk's Makefile targets.

mod bench;
mod cluster;
mod demo;
mod deploy;
mod fuzz;
mod k8s;
mod manifests;
mod moto;

use std::path::PathBuf;
use std::process::Command;
use std::time::Instant;

use anyhow::{Context, Result, ensure};
use clap::{Parser, Subcommand};

#[derive(Parser)]
#[command(name = "cargo xtask", about = "Operon project tasks")]
struct Cli {
    #[command(subcommand)]
    command: Cmd,
}

#[derive(Subcommand)]
enum Cmd {
    /// The Kubernetes binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
    /// kubectl, kwok, kubelet, kube-proxy) and CoreDNS, built from Go modules.
    K8s {
        #[command(subcommand)]
        command: K8sCmd,
    },
    /// moto's server, the AWS (IAM) emulator, installed from PyPI into a virtualenv.
    Moto {
        #[command(subcommand)]
        command: MotoCmd,
    },
    /// A local control plane for a person: kubectl, operators and demos run against it.
    Cluster {
        #[command(subcommand)]
        command: ClusterCmd,
    },
    /// Runs the project: a local control plane with a real node, the operators deployed from
    /// their images, and the talk's samples, until Ctrl-C.
    Up(demo::UpArgs),
    /// Deploys the operators into a cluster with a real node: builds their images, pushes them
    /// to the cluster's registry, `kubectl apply -k config/default`.
    Deploy {
        /// The cluster (default: the running `cargo xtask cluster up`'s, else $KUBECONFIG).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
    },
    /// Writes the generated deployment files under config/ from the Rust types.
    Manifests,
    /// Builds an operator's container image (static binary, FROM scratch) as an OCI archive,
    /// without a container engine (buildah).
    Image {
        /// The operator: a workspace package with a binary of the same name.
        #[arg(default_value = "pod-operator")]
        operator: String,
        /// The OCI archive to write (default: target/images/<operator>.oci.tar).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Runs every test (builds the control plane binaries first if needed).
    Test {
        /// Extra arguments for `cargo test` (e.g. a test name filter).
        #[arg(trailing_var_arg = true, allow_hyphen_values = true)]
        args: Vec<String>,
    },
    /// Formatting, clippy with warnings denied, and generated files in sync.
    Lint,
    /// Runs the cargo-fuzz targets under fuzz/ (libFuzzer, stable toolchain, no sanitizer).
    Fuzz {
        /// Targets to run (default: all): certificates.
        targets: Vec<String>,
        /// Seconds per target.
        #[arg(long, default_value_t = 60)]
        seconds: u64,
    },
    /// Runs benchmarks on the local control plane (release builds): `pod` compares pod-operator
    /// with a controller-runtime peer and with creating the Pods directly, and writes a report to
    /// bench/results (docs/performance.md); `service-ca` prints ratios against its own baseline
    /// (docs/benchmarks.md). `--quick` is CI's regression check of request counts.
    Bench {
        /// Benchmarks to run (default: all): pod, service-ca.
        names: Vec<String>,
        #[command(flatten)]
        options: bench::Options,
    },
}

#[derive(Subcommand)]
enum K8sCmd {
    /// Builds the binaries into ~/.cache/operon/k8s/<version>/bin (instant when up to date).
    Build {
        /// Rebuild even when the cache is up to date.
        #[arg(long)]
        force: bool,
    },
    /// Regenerates tools/k8s/go.mod from the pinned k8s.io/kubernetes release's go.mod.
    GenMod,
    /// Prints the directory holding the binaries.
    Path,
}

#[derive(Subcommand)]
enum MotoCmd {
    /// Installs moto[server] into ~/.cache/operon/moto/<version>/venv (instant when up to date).
    Install,
    /// Prints the path of the moto_server executable.
    Path,
}

#[derive(Subcommand)]
enum ClusterCmd {
    /// Starts the control plane with a real node and a kwok Node (in the background unless
    /// --attach) and writes .operon/kubeconfig.
    Up {
        /// Run in the foreground until Ctrl-C.
        #[arg(long)]
        attach: bool,
        #[command(flatten)]
        shape: cluster::Shape,
    },
    /// Stops the control plane and removes its state.
    Down,
    /// Tells whether it runs, and its nodes.
    Status,
}

fn main() -> Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            // kube's client logs each failed readiness probe as an error; those are expected.
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| "warn,kube_client=off".into()),
        )
        .with_writer(std::io::stderr)
        .init();
    match Cli::parse().command {
        Cmd::K8s { command } => match command {
            K8sCmd::Build { force } => k8s::ensure_built(force).map(|_| ()),
            K8sCmd::GenMod => k8s::gen_mod(),
            K8sCmd::Path => {
                println!("{}", operon_envtest::default_bin_dir().display());
                Ok(())
            }
        },
        Cmd::Moto { command } => match command {
            MotoCmd::Install => moto::ensure_installed().map(|_| ()),
            MotoCmd::Path => {
                println!("{}", moto::path().display());
                Ok(())
            }
        },
        Cmd::Cluster { command } => match command {
            ClusterCmd::Up { attach, shape } => cluster::up(attach, shape),
            ClusterCmd::Down => cluster::down(),
            ClusterCmd::Status => cluster::status(),
        },
        Cmd::Up(args) => demo::up(args),
        Cmd::Deploy { kubeconfig } => {
            let kubeconfig = deploy::kubeconfig(kubeconfig)?;
            tokio::runtime::Runtime::new()?.block_on(deploy::deploy(&kubeconfig))
        }
        Cmd::Manifests => manifests::generate(false),
        Cmd::Image { operator, out } => {
            operon::image::build(&repo_root(), &operator, out.as_deref())?;
            Ok(())
        }
        Cmd::Test { args } => test(&args),
        Cmd::Lint => lint(),
        Cmd::Bench { names, options } => bench::bench(&names, &options),
        Cmd::Fuzz { targets, seconds } => fuzz::run(&targets, seconds),
    }
}

/// The workspace root (xtask lives one level below it).
pub fn repo_root() -> PathBuf {
    let manifest = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    manifest.parent().map(PathBuf::from).unwrap_or(manifest)
}

pub fn elapsed(since: Instant) -> String {
    let secs = since.elapsed().as_secs();
    if secs >= 60 {
        format!("{}m{:02}s", secs / 60, secs % 60)
    } else {
        format!("{:.1}s", since.elapsed().as_secs_f64())
    }
}

pub fn cargo() -> Command {
    let mut cmd = Command::new(std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into()));
    cmd.current_dir(repo_root());
    cmd
}

pub fn run(what: &str, cmd: &mut Command) -> Result<()> {
    let t0 = Instant::now();
    let status = cmd.status().with_context(|| format!("running {what}"))?;
    ensure!(status.success(), "{what} failed ({status})");
    println!("xtask: {what} passed in {}", elapsed(t0));
    Ok(())
}

fn test(args: &[String]) -> Result<()> {
    let t0 = Instant::now();
    k8s::ensure_built(false)?;
    let moto_server = moto::ensure_installed()?;
    run(
        "cargo test --workspace",
        cargo()
            .args(["test", "--workspace", "--all-targets"])
            .args(args)
            .env(operon_envtest::moto::SERVER_ENV, &moto_server),
    )?;
    println!("xtask: all tests passed in {}", elapsed(t0));
    Ok(())
}

fn lint() -> Result<()> {
    run(
        "cargo fmt --check",
        cargo().args(["fmt", "--all", "--check"]),
    )?;
    run(
        "cargo clippy",
        cargo().args([
            "clippy",
            "--workspace",
            "--all-targets",
            "--",
            "-D",
            "warnings",
        ]),
    )?;
    k8s::gen_mod()?;
    k8s::check_coredns_mod()?;
    manifests::generate(false)?;
    run(
        "generated files in sync",
        Command::new("git").current_dir(repo_root()).args([
            "diff",
            "--exit-code",
            "--stat",
            "--",
            "tools/k8s",
            "config",
            "bundle",
            "charts",
        ]),
    )
    .context(
        "generated files differ from a fresh generation (`cargo xtask k8s gen-mod`, \
         `cargo xtask manifests`); commit the regenerated files",
    )?;
    let untracked = Command::new("git")
        .current_dir(repo_root())
        .args([
            "ls-files",
            "--others",
            "--exclude-standard",
            "--",
            "config",
            "tools/k8s",
            "bundle",
            "charts",
        ])
        .output()?;
    ensure!(
        untracked.stdout.is_empty(),
        "generated files not committed:\n{}",
        String::from_utf8_lossy(&untracked.stdout)
    );
    Ok(())
}
