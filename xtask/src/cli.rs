//! `cargo xtask`'s command line, shared by the front (`xtask`, which checks the machine and
//! runs the builds) and `xtask-kube` (the commands built on kube-rs and the operators' crates).

use std::path::PathBuf;

use clap::{Parser, Subcommand};

use crate::prereq::Use;

#[derive(Debug, Parser)]
#[command(name = "cargo xtask", about = "Operon project tasks")]
pub struct Cli {
    /// On failure, also print the error's backtrace (with RUST_BACKTRACE=1).
    #[arg(long, short, global = true)]
    pub verbose: bool,
    #[command(subcommand)]
    pub command: Cmd,
}

#[derive(Debug, Subcommand)]
pub enum Cmd {
    /// Checks the machine for everything the project needs and installs what is missing
    /// (Debian packages, Go, Rust components); every other command does this for its own part.
    Setup {
        /// Only list what is there and what is missing; install nothing.
        #[arg(long)]
        check: bool,
    },
    /// The Kubernetes binaries (etcd, kube-apiserver, kube-controller-manager, kube-scheduler,
    /// kubectl, kwok, kubelet, kube-proxy), CoreDNS, and etcd's tools (etcdctl, etcdutl), built from
    /// Go modules.
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
    Up(UpArgs),
    /// Deploys the operators into a cluster with a real node: builds their images, pushes them
    /// to the cluster's registry, `kubectl apply -k config/default` with the images run by the
    /// digest the registry stored.
    Deploy {
        /// The cluster (default: the running `cargo xtask cluster up`'s, else $KUBECONFIG).
        #[arg(long)]
        kubeconfig: Option<PathBuf>,
        /// Also monitoring-operator and the monitoring stack it installs (the Prometheus
        /// Operator, Prometheus, Alertmanager, kube-state-metrics, node_exporter).
        #[arg(long)]
        monitoring: bool,
        /// Deploys this OCI archive as the operator's image instead of building one, e.g. a
        /// release image from `cargo xtask image`; repeatable.
        #[arg(long = "image-archive", value_name = "OPERATOR=ARCHIVE", value_parser = operator_archive)]
        image_archives: Vec<(String, PathBuf)>,
    },
    /// Writes the generated deployment files under config/ from the Rust types.
    Manifests,
    /// Builds operators' OLM bundle images (`<operator>-bundle`, FROM scratch, as
    /// `bundle/<operator>/bundle.Dockerfile` says) as OCI archives, without a container engine.
    BundleImage {
        #[arg(default_value = "pod-operator")]
        operators: Vec<String>,
        /// The OCI archive to write, for one operator (default:
        /// target/images/<operator>-bundle.oci.tar).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Runs operator-framework's validators on every OLM bundle under bundle/, as `operator-sdk
    /// bundle validate --select-optional suite=operatorframework` does (`tools/bundle-validate`,
    /// built from its Go module first); fails on any error or warning.
    BundleValidate,
    /// Builds operators' container images (static binary, FROM scratch) as OCI archives,
    /// without a container engine (buildah).
    Image {
        /// The operators: workspace packages with a binary of the same name.
        #[arg(default_value = "pod-operator")]
        operators: Vec<String>,
        /// The OCI archive to write, for one operator (default: target/images/<operator>.oci.tar).
        #[arg(long)]
        out: Option<PathBuf>,
        /// The Cargo profile of the binaries: `release` (published images) or `local-image`
        /// (what `up` and `deploy` run on the local cluster: quicker to build, see Cargo.toml).
        #[arg(long, default_value = "release")]
        profile: String,
    },
    /// Runs every test (installs what is missing and builds the control plane binaries first).
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
        options: BenchOptions,
    },
    /// Runs the operators in a local cluster on its real node under steady load for a while
    /// (PodRequests created, edited and deleted at a fixed rate; a few annotated Services and
    /// CredentialsRequests), samples each operator Pod's memory and open files, and fails if
    /// memory grows after warm-up, an object is lost or duplicated, or an operator restarts
    /// (docs/soak.md).
    Soak(SoakArgs),
}

/// `cargo xtask soak`'s options.
#[derive(Debug, clap::Args)]
pub struct SoakArgs {
    /// How long the load runs, e.g. 1h, 15m, 150s.
    #[arg(long, default_value = "1h", value_parser = duration)]
    pub duration: std::time::Duration,
    /// PodRequest operations (create, edit, delete) per second.
    #[arg(long, default_value_t = 1.0, value_parser = rate)]
    pub rate: f64,
    /// The most PodRequests alive at once.
    #[arg(long, default_value_t = 20)]
    pub live: usize,
    /// The largest RSS slope after warm-up that passes, in MiB per hour (default: the
    /// threshold docs/soak.md states for the run's length).
    #[arg(long)]
    pub max_slope: Option<f64>,
    /// Where the samples (soak.json) and plots go (default: <target>/soak).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// A duration such as `1h`, `15m`, `90s` or `1h30m`.
fn duration(value: &str) -> Result<std::time::Duration, String> {
    let mut total = 0u64;
    let mut number = String::new();
    for c in value.chars() {
        match c {
            '0'..='9' => number.push(c),
            'h' | 'm' | 's' if !number.is_empty() => {
                let n: u64 = number.parse().map_err(|e| format!("{value:?}: {e}"))?;
                let unit = match c {
                    'h' => 3600,
                    'm' => 60,
                    _ => 1,
                };
                total = n
                    .checked_mul(unit)
                    .and_then(|s| total.checked_add(s))
                    .ok_or_else(|| format!("{value:?} is too long"))?;
                number.clear();
            }
            _ => return Err(format!("{value:?}: give a duration such as 1h, 15m or 90s")),
        }
    }
    if !number.is_empty() || total == 0 {
        return Err(format!(
            "{value:?}: give a duration such as 1h, 15m or 90s (a unit after each number, not zero)"
        ));
    }
    Ok(std::time::Duration::from_secs(total))
}

/// A rate in operations per second, `N` or `N/s`.
fn rate(value: &str) -> Result<f64, String> {
    let number = value.strip_suffix("/s").unwrap_or(value);
    match number.parse::<f64>() {
        Ok(r) if r.is_finite() && r > 0.0 && r <= 100.0 => Ok(r),
        _ => Err(format!(
            "{value:?}: give operations per second, more than 0 and at most 100 (e.g. 2 or 0.5/s)"
        )),
    }
}

#[derive(Debug, Subcommand)]
pub enum K8sCmd {
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

#[derive(Debug, Subcommand)]
pub enum MotoCmd {
    /// Installs moto[server] into ~/.cache/operon/moto/<version>/venv (instant when up to date).
    Install,
    /// Prints the path of the moto_server executable.
    Path,
}

#[derive(Debug, Subcommand)]
pub enum ClusterCmd {
    /// Starts the control plane with a real node and a kwok Node (in the background unless
    /// --attach) and writes .operon/kubeconfig.
    Up {
        /// Run in the foreground until Ctrl-C.
        #[arg(long)]
        attach: bool,
        #[command(flatten)]
        shape: Shape,
    },
    /// Stops the control plane and removes its state.
    Down,
    /// Tells whether it runs, and its nodes.
    Status,
    /// etcd snapshots of the running cluster (docs/disaster-recovery.md).
    Snapshot {
        #[command(subcommand)]
        command: SnapshotCmd,
    },
    /// Destroys the running cluster's control plane and restores it from an etcd snapshot
    /// (etcdutl); the real node and its Pods keep running. Everything written after the
    /// snapshot is lost (docs/disaster-recovery.md).
    Restore {
        /// A snapshot of this cluster (`cluster snapshot save`).
        file: PathBuf,
    },
}

#[derive(Debug, Subcommand)]
pub enum SnapshotCmd {
    /// Takes a snapshot of the running cluster's etcd into FILE while everything keeps running
    /// (etcdctl snapshot save). It holds every Secret: it is written with mode 0600.
    Save { file: PathBuf },
    /// What a snapshot file holds: revision, keys, size (etcdutl snapshot status).
    Status { file: PathBuf },
}

/// What `cluster up` starts.
#[derive(Debug, Clone, Copy, clap::Args)]
pub struct Shape {
    /// Number of kwok (fake) Nodes.
    #[arg(long, default_value_t = 1)]
    pub nodes: usize,
    /// No real node: only kwok's fake Nodes (no root needed; Pods say Running but nothing
    /// runs).
    #[arg(long)]
    pub kwok_only: bool,
    /// A highly available control plane: 3 etcd members, 2 kube-apiservers behind HAProxy,
    /// 2 each of kube-controller-manager and kube-scheduler electing a leader.
    #[arg(long)]
    pub ha: bool,
}

impl Shape {
    /// What this shape needs from the machine beyond Go.
    fn uses(&self) -> Vec<Use> {
        let mut uses = Vec::new();
        if !self.kwok_only {
            uses.push(Use::Node);
        }
        if self.ha {
            uses.push(Use::Ha);
        }
        uses
    }
}

/// The Cargo profile of the images `up`, `deploy` and the tests run on the local cluster.
pub const LOCAL_IMAGE_PROFILE: &str = "local-image";

/// `cargo xtask up`'s options.
#[derive(Debug, clap::Args)]
pub struct UpArgs {
    #[command(flatten)]
    pub shape: Shape,
    /// Run the operators as processes on this machine (debug builds) instead of deploying their
    /// images into the cluster; implied by --kwok-only (no node runs images).
    #[arg(long)]
    pub local_operators: bool,
    /// With --local-operators: the operator binaries' directory (default: build them).
    #[arg(long)]
    pub operator_bin_dir: Option<PathBuf>,
    /// Leave out the monitoring stack (monitoring-operator, the Prometheus Operator,
    /// Prometheus, Alertmanager, kube-state-metrics, node_exporter). It needs the real node, so
    /// --local-operators and --kwok-only leave it out too.
    #[arg(long)]
    pub no_monitoring: bool,
}

impl UpArgs {
    /// Whether the operators run as processes here rather than from their images.
    pub fn local(&self) -> bool {
        self.local_operators || self.shape.kwok_only
    }

    /// Whether the monitoring stack is deployed too.
    pub fn monitoring(&self) -> bool {
        !self.no_monitoring && !self.local()
    }
}

#[derive(clap::Args, Debug, Default)]
pub struct BenchOptions {
    /// service-ca: objects (`OPERON_BENCH_N`; default 1000).
    #[arg(long)]
    pub n: Option<usize>,
    /// pod: small CI run (N=200, pod-operator and direct only, debug build); fails when request
    /// counts regress.
    #[arg(long)]
    pub quick: bool,
    /// pod: burst sizes (default 1000,5000).
    #[arg(long, value_delimiter = ',')]
    pub sizes: Vec<usize>,
    /// pod: open-loop offered rates per second (default 25,50,100,200,400).
    #[arg(long, value_delimiter = ',')]
    pub rates: Vec<f64>,
    /// pod: create calls in flight and reconciles at once (default 10).
    #[arg(long)]
    pub concurrency: Option<u16>,
    /// pod: requests in the cluster at each memory reading, topped up in turn after the other
    /// phases (default 10000; e.g. 5000,10000,20000,50000 for the slope).
    #[arg(long, value_delimiter = ',')]
    pub memory_objects: Vec<usize>,
    /// pod: which peers (default direct,operon,go,go-tuned,kube-rs; --quick: direct,operon;
    /// operon-mimalloc, pod-operator with mimalloc, on request).
    #[arg(long, value_delimiter = ',')]
    pub peers: Vec<String>,
    /// pod: runs of every peer, interleaved (default 5; --quick: 1).
    #[arg(long)]
    pub runs: Option<usize>,
    /// pod: skip the failover measurement.
    #[arg(long)]
    pub no_failover: bool,
    /// pod: skip the update, delete and recreate phases.
    #[arg(long)]
    pub no_churn: bool,
    /// pod: where the report goes (default bench/results; --quick: <target>/bench-quick).
    #[arg(long)]
    pub out: Option<PathBuf>,
}

/// `--image-archive OPERATOR=ARCHIVE`.
fn operator_archive(value: &str) -> Result<(String, PathBuf), String> {
    match value.split_once('=') {
        Some((operator, archive)) if !operator.is_empty() && !archive.is_empty() => {
            Ok((operator.to_string(), PathBuf::from(archive)))
        }
        _ => Err(format!(
            "{value:?}: give the operator and its OCI archive, OPERATOR=ARCHIVE"
        )),
    }
}

impl Cmd {
    /// What the command needs from the machine, so that all of it is checked (and installed)
    /// before anything long starts.
    pub fn uses(&self) -> Vec<Use> {
        match self {
            Cmd::Setup { .. } | Cmd::Fuzz { .. } => Vec::new(),
            Cmd::K8s { command } => match command {
                K8sCmd::Build { .. } | K8sCmd::GenMod => vec![Use::Go],
                K8sCmd::Path => Vec::new(),
            },
            Cmd::Moto { command } => match command {
                MotoCmd::Install => vec![Use::Moto],
                MotoCmd::Path => Vec::new(),
            },
            Cmd::Cluster { command } => match command {
                ClusterCmd::Up { shape, .. } => [vec![Use::Go], shape.uses()].concat(),
                ClusterCmd::Down | ClusterCmd::Status => Vec::new(),
                // etcdctl and etcdutl, built with the other binaries when missing.
                ClusterCmd::Snapshot { .. } | ClusterCmd::Restore { .. } => vec![Use::Go],
            },
            Cmd::Up(args) => {
                let mut uses = [vec![Use::Go, Use::Moto], args.shape.uses()].concat();
                if !args.local() {
                    uses.push(Use::Images);
                }
                if args.monitoring() {
                    uses.push(Use::Monitoring);
                }
                uses
            }
            Cmd::Deploy {
                monitoring: true, ..
            } => vec![Use::Go, Use::Images, Use::Monitoring],
            Cmd::Deploy { .. } => vec![Use::Go, Use::Images],
            Cmd::Manifests => Vec::new(),
            Cmd::BundleValidate => vec![Use::Go],
            Cmd::BundleImage { .. } => vec![Use::Images],
            Cmd::Image { .. } => vec![Use::Images],
            Cmd::Test { .. } => Use::ALL.to_vec(),
            Cmd::Lint => vec![Use::Go, Use::Lint],
            // The Go peer and the control plane's binaries; the benchmark runs kwok Nodes.
            Cmd::Bench { .. } => vec![Use::Go],
            // The operators in the cluster on its real node, credentials-operator against moto.
            Cmd::Soak(_) => vec![Use::Go, Use::Moto, Use::Node, Use::Images],
        }
    }

    /// Whether `xtask-kube` (kube-rs and the operators' crates) runs the command.
    /// Whether the command compiles the workspace or runs clusters: it needs disk room
    /// ([`crate::disk::BUILD`]) before it starts.
    pub fn builds(&self) -> bool {
        match self {
            Cmd::Test { .. }
            | Cmd::Lint
            | Cmd::Fuzz { .. }
            | Cmd::Up(_)
            | Cmd::Deploy { .. }
            | Cmd::Image { .. }
            | Cmd::BundleImage { .. }
            | Cmd::Bench { .. }
            | Cmd::Soak(_) => true,
            Cmd::Cluster { command } => matches!(command, ClusterCmd::Up { .. }),
            _ => false,
        }
    }

    pub fn is_kube(&self) -> bool {
        matches!(
            self,
            Cmd::Cluster { .. }
                | Cmd::Up(_)
                | Cmd::Deploy { .. }
                | Cmd::Manifests
                | Cmd::Image { .. }
                | Cmd::BundleImage { .. }
                | Cmd::Bench { .. }
                | Cmd::Soak(_)
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn uses(args: &[&str]) -> Vec<Use> {
        let cli = Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))
            .unwrap_or_else(|e| panic!("{args:?}: {e}"));
        cli.command.uses()
    }

    #[test]
    fn the_commands_that_build_check_the_disk_first() {
        let builds = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))
                .unwrap_or_else(|e| panic!("{args:?}: {e}"))
                .command
                .builds()
        };
        for args in [
            &["test"][..],
            &["lint"],
            &["up"],
            &["cluster", "up"],
            &["soak"],
        ] {
            assert!(builds(args), "{args:?}");
        }
        for args in [&["setup"][..], &["cluster", "down"], &["k8s", "path"]] {
            assert!(!builds(args), "{args:?}");
        }
    }

    #[test]
    fn each_command_checks_what_it_will_need() {
        assert_eq!(uses(&["test"]), Use::ALL.to_vec());
        assert!(uses(&["up"]).contains(&Use::Images));
        assert!(uses(&["up"]).contains(&Use::Node));
        assert!(uses(&["up"]).contains(&Use::Monitoring));
        assert!(!uses(&["up"]).contains(&Use::Ha));
        assert!(uses(&["up", "--ha"]).contains(&Use::Ha));
        assert!(uses(&["cluster", "up", "--ha", "--kwok-only"]).contains(&Use::Ha));
        assert!(!uses(&["cluster", "up", "--ha", "--kwok-only"]).contains(&Use::Node));
        assert!(!uses(&["up", "--no-monitoring"]).contains(&Use::Monitoring));
        assert!(!uses(&["up", "--local-operators"]).contains(&Use::Monitoring));
        assert!(uses(&["deploy", "--monitoring"]).contains(&Use::Monitoring));
        assert!(!uses(&["deploy"]).contains(&Use::Monitoring));
        assert!(!uses(&["up", "--local-operators"]).contains(&Use::Images));
        assert!(!uses(&["up", "--kwok-only"]).contains(&Use::Node));
        assert!(!uses(&["cluster", "up", "--kwok-only"]).contains(&Use::Node));
        assert!(uses(&["cluster", "up"]).contains(&Use::Node));
        assert!(uses(&["-v", "image", "pod-operator"]).contains(&Use::Images));
        assert!(uses(&["cluster", "down"]).is_empty());
        assert_eq!(uses(&["cluster", "snapshot", "save", "s.db"]), [Use::Go]);
        assert_eq!(uses(&["cluster", "restore", "s.db"]), [Use::Go]);
        for needed in [Use::Node, Use::Images, Use::Moto] {
            assert!(uses(&["soak", "--duration", "3m"]).contains(&needed));
        }
    }

    #[test]
    fn soak_takes_durations_and_rates_as_people_write_them() {
        let soak = |args: &[&str]| {
            Cli::try_parse_from(["xtask", "soak"].into_iter().chain(args.iter().copied())).map(
                |cli| match cli.command {
                    Cmd::Soak(args) => (args.duration.as_secs(), args.rate),
                    other => panic!("{other:?}"),
                },
            )
        };
        assert_eq!(soak(&[]).ok(), Some((3600, 1.0)));
        assert_eq!(
            soak(&["--duration", "1h30m", "--rate", "2/s"]).ok(),
            Some((5400, 2.0))
        );
        assert_eq!(
            soak(&["--duration=150s", "--rate=0.5"]).ok(),
            Some((150, 0.5))
        );
        for bad in [
            ["--duration", "10"],
            ["--duration", "0m"],
            ["--duration", "1d"],
            ["--rate", "0"],
            ["--rate", "-1"],
            ["--rate", "fast"],
        ] {
            assert!(soak(&bad).is_err(), "{bad:?} accepted");
        }
    }

    #[test]
    fn deploy_takes_archives_by_operator() {
        let parse = |args: &[&str]| {
            Cli::try_parse_from(std::iter::once("xtask").chain(args.iter().copied()))
                .map(|cli| cli.command)
        };
        let Ok(Cmd::Deploy { image_archives, .. }) = parse(&[
            "deploy",
            "--image-archive",
            "pod-operator=/tmp/a.oci.tar",
            "--image-archive=service-ca-operator=b=c.tar",
        ]) else {
            panic!("deploy with archives did not parse");
        };
        assert_eq!(
            image_archives,
            [
                ("pod-operator".to_string(), PathBuf::from("/tmp/a.oci.tar")),
                ("service-ca-operator".to_string(), PathBuf::from("b=c.tar")),
            ]
        );
        for bad in ["pod-operator", "=a.tar", "pod-operator="] {
            assert!(
                parse(&["deploy", "--image-archive", bad]).is_err(),
                "{bad} accepted"
            );
        }
    }
}
