//! `operon`: create a microservice as a Kubernetes operator, the way the talk does with
//! operator-sdk (init, create api, create controller, edit, build, deploy), on Operon's runtime.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Context, Result};
use clap::{CommandFactory, Parser, Subcommand};
use operon::{Scope, build, deploy, project, run, scaffold};

#[derive(Parser)]
#[command(
    name = "operon",
    version,
    about = "Microservices as Kubernetes operators, in Rust"
)]
struct Cli {
    /// The project directory (default: the current directory).
    #[arg(long, short = 'C', global = true, default_value = ".")]
    dir: PathBuf,
    /// On failure, also print the error's backtrace (with RUST_BACKTRACE=1).
    #[arg(long, short, global = true)]
    verbose: bool,
    #[command(subcommand)]
    command: Command,
}

/// How long `deploy` waits for the rollout and `undeploy`/`uninstall` for the operator to
/// finalize custom resources (seconds, or a duration such as `90s`, `2m`).
fn duration(text: &str) -> Result<Duration, String> {
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit()) {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?}: use seconds (60) or a duration such as 90s or 2m"))?;
    match unit {
        "s" => Ok(Duration::from_secs(number)),
        "m" => Ok(Duration::from_secs(number * 60)),
        _ => Err(format!("{text:?}: the unit is s or m")),
    }
}

#[derive(Subcommand)]
enum Command {
    /// Creates a new operator project `<name>` in a directory of that name: a standalone
    /// project, or a member when the current directory is inside a Cargo workspace.
    #[command(alias = "new")]
    Init {
        /// The operator's name: a DNS label such as `pod-operator`.
        name: String,
        /// The domain API groups end with (`<group>.<domain>` when a group has no dot).
        #[arg(long, default_value = "example.com")]
        domain: String,
        /// An Operon checkout whose runtime and envtest crates the operator depends on
        /// (default: the checkout this `operon` was built from, else the Git repository).
        #[arg(long, env = "OPERON_SOURCE")]
        operon_source: Option<PathBuf>,
        /// Don't run `operon manifests` (which compiles the project) afterwards.
        #[arg(long, env = "OPERON_SKIP_MANIFESTS")]
        skip_manifests: bool,
    },
    /// Adds an API (custom resource) or a controller to the project.
    #[command(alias = "add")]
    Create {
        /// Don't run `operon manifests` (which compiles the project) afterwards.
        #[arg(long, global = true, env = "OPERON_SKIP_MANIFESTS")]
        skip_manifests: bool,
        #[command(subcommand)]
        what: Create,
    },
    /// Removes what `create api` added for a kind (and its controller, if generated).
    Delete {
        /// Don't run `operon manifests` (which compiles the project) afterwards.
        #[arg(long, global = true, env = "OPERON_SKIP_MANIFESTS")]
        skip_manifests: bool,
        #[command(subcommand)]
        what: Delete,
    },
    /// Regenerates config/ (CRDs, RBAC, Deployment, …) from the project's Rust types; the
    /// image is the project's `deploy::IMAGE` (deploy another with `operon deploy --image`).
    Manifests,
    /// Regenerates the OLM bundle under bundle/.
    Bundle {
        /// The image the ClusterServiceVersion's Deployment runs.
        #[arg(long)]
        image: Option<String>,
    },
    /// Builds the OLM bundle's image (bundle/ as an OCI archive, with buildah), named after the
    /// project's image with `-bundle`.
    BundleBuild {
        /// The OCI archive to write (default: target/images/<name>-bundle.oci.tar).
        #[arg(long)]
        out: Option<PathBuf>,
    },
    /// Builds the static release binary and, where buildah is installed, the container image
    /// (an OCI archive) the Containerfile describes.
    Build {
        /// The OCI archive to write (default: target/images/<name>.oci.tar).
        #[arg(long)]
        out: Option<PathBuf>,
        /// Only the static binary.
        #[arg(long)]
        no_image: bool,
    },
    /// Pushes the image `operon build` wrote to the registry the cluster announces (a local
    /// cluster with a real node, such as `cargo xtask cluster up`'s).
    Push {
        /// The name to push it as (default: the manager's image in config/default).
        #[arg(long)]
        image: Option<String>,
        /// kubeconfig file, or a list merged as kubectl merges them (`a:b`; default:
        /// $KUBECONFIG, then ~/.kube/config).
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// The kubeconfig context to use (default: its current-context).
        #[arg(long)]
        context: Option<String>,
    },
    /// Applies the project's CRDs (config/crd) to the cluster of the current kubeconfig.
    Install {
        /// kubeconfig file, or a list merged as kubectl merges them (`a:b`; default:
        /// $KUBECONFIG, then ~/.kube/config).
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// The kubeconfig context to use (default: its current-context).
        #[arg(long)]
        context: Option<String>,
    },
    /// Deletes the project's custom resources (waiting for the running operator to finalize
    /// them), then its CRDs.
    Uninstall {
        /// kubeconfig file, or a list merged as kubectl merges them (`a:b`; default:
        /// $KUBECONFIG, then ~/.kube/config).
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// The kubeconfig context to use (default: its current-context).
        #[arg(long)]
        context: Option<String>,
        /// How long to wait for the custom resources and the CRDs to go.
        #[arg(long, default_value = "60s", value_parser = duration)]
        timeout: Duration,
    },
    /// Applies config/default (kustomize) to the cluster of the current kubeconfig and waits
    /// for the operator's rollout.
    Deploy {
        /// Overrides the manager's image.
        #[arg(long)]
        image: Option<String>,
        /// First push the image `operon build` wrote (target/images/<name>.oci.tar) to the
        /// registry the cluster announces (a local cluster with a real node, such as
        /// `cargo xtask cluster up`'s).
        #[arg(long)]
        push: bool,
        /// kubeconfig file, or a list merged as kubectl merges them (`a:b`; default:
        /// $KUBECONFIG, then ~/.kube/config).
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// The kubeconfig context to use (default: its current-context).
        #[arg(long)]
        context: Option<String>,
        /// How long to wait for the Deployment to roll out.
        #[arg(long, default_value = "120s", value_parser = duration)]
        timeout: Duration,
        /// Don't wait for the rollout.
        #[arg(long)]
        no_wait: bool,
    },
    /// Deletes what `deploy` applied: the project's custom resources first (in all namespaces,
    /// finalized by the still running operator), then the rest, CRDs included.
    Undeploy {
        /// kubeconfig file, or a list merged as kubectl merges them (`a:b`; default:
        /// $KUBECONFIG, then ~/.kube/config).
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// The kubeconfig context to use (default: its current-context).
        #[arg(long)]
        context: Option<String>,
        /// How long to wait for the custom resources and the CRDs to go.
        #[arg(long, default_value = "60s", value_parser = duration)]
        timeout: Duration,
    },
    /// Installs the CRDs and runs the operator out of the cluster, until Ctrl-C.
    Run {
        /// kubeconfig file, or a list merged as kubectl merges them (`a:b`; default:
        /// $KUBECONFIG, then ~/.kube/config).
        #[arg(long, env = "KUBECONFIG", conflicts_with = "local")]
        kubeconfig: Option<PathBuf>,
        /// The kubeconfig context to use (default: its current-context); also given to the
        /// operator.
        #[arg(long, conflicts_with = "local")]
        context: Option<String>,
        /// Start a local control plane (Operon's envtest) and run against it.
        #[arg(long)]
        local: bool,
        /// With --local: add a real node (kubelet, containerd; needs root), so that what the
        /// operator creates really runs.
        #[arg(long, requires = "local")]
        real_node: bool,
        /// Arguments for the operator's `run` command.
        #[arg(last = true)]
        args: Vec<String>,
    },
    /// Prints the versions of operon, of the runtime it generates projects for and of the
    /// Kubernetes API they target.
    Version,
    /// Prints a shell completion script: `source <(operon completion bash)`.
    Completion {
        /// bash, zsh, fish, elvish or powershell.
        shell: clap_complete::Shell,
    },
}

#[derive(Subcommand)]
enum Create {
    /// A custom resource: Rust types (spec, status with conditions), its CRD, a sample.
    Api {
        /// API group: a DNS name such as `pod.example.com` (a bare word gets the domain).
        #[arg(long)]
        group: String,
        /// API version: v1, v1alpha1, v2beta3, …
        #[arg(long)]
        version: String,
        /// Kind: CamelCase and singular, such as `PodRequest`.
        #[arg(long)]
        kind: String,
        /// The resource lives in a namespace (the default).
        #[arg(long, conflicts_with = "cluster")]
        namespaced: bool,
        /// The resource is cluster-scoped.
        #[arg(long)]
        cluster: bool,
        /// Also create its controller (as `create controller --kind <Kind>`).
        #[arg(long)]
        controller: bool,
        /// With --controller: the kinds it owns (as `create controller --owns`).
        #[arg(long, value_delimiter = ',', requires = "controller")]
        owns: Vec<String>,
    },
    /// A reconciler for a kind of the project: ownership, conditions, events, finalizer,
    /// RBAC, and an integration test against a real control plane.
    Controller {
        /// The kind it reconciles (added with `create api`).
        #[arg(long)]
        kind: String,
        /// Kinds it creates and owns (Pod, Secret, ConfigMap, Deployment, …, or the project's).
        #[arg(long, value_delimiter = ',')]
        owns: Vec<String>,
    },
}

#[derive(Subcommand)]
enum Delete {
    /// The kind's types module and its registration, sample, controller and test (if
    /// generated), and, through `operon manifests`, its CRD and RBAC rules. Refuses if any of
    /// those files was edited since.
    Api {
        /// The kind to remove.
        #[arg(long)]
        kind: String,
    },
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let verbose = cli.verbose;
    let result = dispatch(cli);
    let Err(error) = result else {
        return std::process::ExitCode::SUCCESS;
    };
    // An expected failure is its message and causes; a backtrace only on request.
    eprintln!("error: {error}");
    for cause in error.chain().skip(1) {
        eprintln!("  caused by: {cause}");
    }
    if verbose && error.backtrace().status() == std::backtrace::BacktraceStatus::Captured {
        eprintln!("\nbacktrace:\n{}", error.backtrace());
    }
    std::process::ExitCode::FAILURE
}

fn dispatch(cli: Cli) -> Result<()> {
    let project = || project::Project::find(&cli.dir);
    match cli.command {
        Command::Init {
            name,
            domain,
            operon_source,
            skip_manifests,
        } => scaffold::new_project(
            &cli.dir,
            &name,
            &domain,
            operon_source.as_deref(),
            !skip_manifests,
        ),
        Command::Create {
            skip_manifests,
            what,
        } => match what {
            Create::Api {
                group,
                version,
                kind,
                namespaced: _,
                cluster,
                controller,
                owns,
            } => {
                let scope = if cluster {
                    Scope::Cluster
                } else {
                    Scope::Namespaced
                };
                let project = project()?;
                // With a controller, `operon manifests` runs once, after both.
                scaffold::add_api(
                    &project,
                    &group,
                    &version,
                    &kind,
                    scope,
                    !skip_manifests && !controller,
                )?;
                if controller {
                    let project = project::Project::load(&project.root)?;
                    scaffold::add_controller(&project, &kind, &owns, !skip_manifests)?;
                }
                Ok(())
            }
            Create::Controller { kind, owns } => {
                scaffold::add_controller(&project()?, &kind, &owns, !skip_manifests)
            }
        },
        Command::Delete {
            skip_manifests,
            what: Delete::Api { kind },
        } => scaffold::delete_api(&project()?, &kind, !skip_manifests),
        Command::Manifests => build::manifests(&project()?),
        Command::Bundle { image } => build::bundle(&project()?, image.as_deref()),
        Command::BundleBuild { out } => {
            build::bundle_build(&project()?, out.as_deref()).map(|_| ())
        }
        Command::Build { out, no_image } => build::build(&project()?, out.as_deref(), !no_image),
        Command::Push {
            image,
            kubeconfig,
            context,
        } => {
            let project = project()?;
            let archive = build::image_archive(&project)?;
            deploy::push(
                &project.root,
                kubeconfig.as_deref(),
                context.as_deref(),
                image.as_deref(),
                &archive,
            )
        }
        Command::Install {
            kubeconfig,
            context,
        } => deploy::install(&project()?.root, kubeconfig.as_deref(), context.as_deref()),
        Command::Uninstall {
            kubeconfig,
            context,
            timeout,
        } => deploy::uninstall(
            &project()?.root,
            kubeconfig.as_deref(),
            context.as_deref(),
            timeout,
        ),
        Command::Deploy {
            image,
            push,
            kubeconfig,
            context,
            timeout,
            no_wait,
        } => {
            let project = project()?;
            let archive = push.then(|| build::image_archive(&project)).transpose()?;
            deploy::deploy(
                &project.root,
                kubeconfig.as_deref(),
                context.as_deref(),
                image.as_deref(),
                archive.as_deref(),
                (!no_wait).then_some(timeout),
            )
        }
        Command::Undeploy {
            kubeconfig,
            context,
            timeout,
        } => deploy::undeploy(
            &project()?.root,
            kubeconfig.as_deref(),
            context.as_deref(),
            timeout,
        ),
        Command::Run {
            kubeconfig,
            context,
            local,
            real_node,
            args,
        } => {
            let target = match (local, real_node) {
                (true, real_node) => run::Target::Local { real_node },
                (false, _) => run::Target::Kubeconfig {
                    kubeconfig,
                    context,
                },
            };
            run::run(&project()?, target, &args)
        }
        Command::Version => {
            print!("{}", operon::version::report()?);
            Ok(())
        }
        Command::Completion { shell } => {
            let mut script = Vec::new();
            clap_complete::generate(shell, &mut Cli::command(), "operon", &mut script);
            match std::io::Write::write_all(&mut std::io::stdout(), &script) {
                // `operon completion bash | head` is no failure.
                Err(e) if e.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
                other => other.context("writing the completion script"),
            }
        }
    }
}
