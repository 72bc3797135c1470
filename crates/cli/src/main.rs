//! `operon`: create a microservice as a Kubernetes operator, the way the talk does with
//! operator-sdk (new, add api, add controller, edit, build, deploy), on Operon's runtime.

use std::path::PathBuf;

use anyhow::Result;
use clap::{Parser, Subcommand};
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

#[derive(Subcommand)]
enum Command {
    /// Creates a new operator crate `<name>` in a directory of that name: a standalone project,
    /// or a member when the current directory is a Cargo workspace.
    New {
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
    /// Adds an API or a controller to the project.
    Add {
        /// Don't run `operon manifests` (which compiles the project) afterwards.
        #[arg(long, global = true, env = "OPERON_SKIP_MANIFESTS")]
        skip_manifests: bool,
        #[command(subcommand)]
        what: Add,
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
    /// Applies config/default (kustomize) to the cluster of the current kubeconfig.
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
    },
    /// Deletes what `deploy` applied (CRDs included, hence every custom resource).
    Undeploy {
        /// kubeconfig file, or a list merged as kubectl merges them (`a:b`; default:
        /// $KUBECONFIG, then ~/.kube/config).
        #[arg(long, env = "KUBECONFIG")]
        kubeconfig: Option<PathBuf>,
        /// The kubeconfig context to use (default: its current-context).
        #[arg(long)]
        context: Option<String>,
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
}

#[derive(Subcommand)]
enum Add {
    /// A custom resource: Rust types (spec, status with conditions), its CRD, a sample.
    Api {
        /// API group: a DNS name such as `pod.example.com` (a bare word gets the domain).
        #[arg(long)]
        group: String,
        /// API version: v1, v1alpha1, v2beta3, …
        #[arg(long)]
        version: String,
        /// Kind: CamelCase, such as `PodRequest`.
        #[arg(long)]
        kind: String,
        /// The resource lives in a namespace (the default).
        #[arg(long, conflicts_with = "cluster")]
        namespaced: bool,
        /// The resource is cluster-scoped.
        #[arg(long)]
        cluster: bool,
    },
    /// A reconciler for a kind of the project: ownership, conditions, events, finalizer,
    /// RBAC, and an integration test against a real control plane.
    Controller {
        /// The kind it reconciles (added with `add api`).
        #[arg(long)]
        kind: String,
        /// Kinds it creates and owns (Pod, Secret, ConfigMap, Deployment, …, or the project's).
        #[arg(long, value_delimiter = ',')]
        owns: Vec<String>,
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
    match cli.command {
        Command::New {
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
        Command::Add {
            skip_manifests,
            what,
        } => {
            let project = project::Project::find(&cli.dir)?;
            match what {
                Add::Api {
                    group,
                    version,
                    kind,
                    namespaced: _,
                    cluster,
                } => {
                    let scope = if cluster {
                        Scope::Cluster
                    } else {
                        Scope::Namespaced
                    };
                    scaffold::add_api(&project, &group, &version, &kind, scope, !skip_manifests)
                }
                Add::Controller { kind, owns } => {
                    scaffold::add_controller(&project, &kind, &owns, !skip_manifests)
                }
            }
        }
        Command::Manifests => {
            let project = project::Project::find(&cli.dir)?;
            build::manifests(&project)
        }
        Command::Bundle { image } => {
            let project = project::Project::find(&cli.dir)?;
            build::bundle(&project, image.as_deref())
        }
        Command::Build { out, no_image } => {
            let project = project::Project::find(&cli.dir)?;
            build::build(&project, out.as_deref(), !no_image)
        }
        Command::Deploy {
            image,
            push,
            kubeconfig,
            context,
        } => {
            let project = project::Project::find(&cli.dir)?;
            let archive = push
                .then(|| -> Result<PathBuf> {
                    Ok(build::target_dir(&project.root)?
                        .join("images")
                        .join(format!("{}.oci.tar", project.name)))
                })
                .transpose()?;
            deploy::deploy(
                &project.root,
                kubeconfig.as_deref(),
                context.as_deref(),
                image.as_deref(),
                archive.as_deref(),
            )
        }
        Command::Undeploy {
            kubeconfig,
            context,
        } => {
            let project = project::Project::find(&cli.dir)?;
            deploy::undeploy(&project.root, kubeconfig.as_deref(), context.as_deref())
        }
        Command::Run {
            kubeconfig,
            context,
            local,
            real_node,
            args,
        } => {
            let project = project::Project::find(&cli.dir)?;
            let target = match (local, real_node) {
                (true, real_node) => run::Target::Local { real_node },
                (false, _) => run::Target::Kubeconfig {
                    kubeconfig,
                    context,
                },
            };
            run::run(&project, target, &args)
        }
    }
}
