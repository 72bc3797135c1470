use std::time::Duration;

use anyhow::Context as _;
use clap::{ArgAction, Parser, Subcommand, ValueEnum};
use operon_runtime::command::{self, RunArgs, parse_duration};
use service_ca_operator::controller::{self, Settings};
use service_ca_operator::pki::{self, KeyAlgorithm};

#[derive(Parser)]
#[command(
    name = "service-ca-operator",
    version,
    about = "Serving certificates for annotated Services and CA bundle injection (OpenShift-compatible)"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the controllers (out-of-cluster with a kubeconfig, or in-cluster).
    Run(Box<Args>),
    #[command(flatten)]
    Generate(operon_manifests::Command),
}

#[derive(Clone, Copy, ValueEnum)]
enum Key {
    /// ECDSA P-256 (small, fast).
    EcdsaP256,
    /// RSA 2048, what OpenShift issues.
    Rsa2048,
}

#[derive(clap::Args)]
struct Args {
    /// Namespace of the signing CA Secret and the bundle ConfigMap (default: the operator's).
    #[arg(long)]
    signing_namespace: Option<String>,
    /// Inject into APIServices, CRDs and webhook configurations (cluster-scoped).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    inject_cluster_scoped: bool,
    /// DNS domain of the cluster.
    #[arg(long, default_value = pki::DEFAULT_CLUSTER_DOMAIN)]
    cluster_domain: String,
    /// Key type of issued certificates.
    #[arg(long, value_enum, default_value = "ecdsa-p256")]
    key_algorithm: Key,
    /// Lifetime of serving certificates.
    #[arg(long, default_value = "730d", value_parser = parse_duration)]
    serving_cert_lifetime: Duration,
    /// Re-issue a serving certificate when less than this remains.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    serving_cert_refresh: Duration,
    /// Lifetime of the signing CA.
    #[arg(long, default_value = "790d", value_parser = parse_duration)]
    ca_lifetime: Duration,
    /// Rotate the signing CA when less than this remains.
    #[arg(long, default_value = "395d", value_parser = parse_duration)]
    ca_rotation_margin: Duration,
    /// Rotate the signing CA now, once for this reason (a new reason rotates again).
    #[arg(long)]
    force_rotation_reason: Option<String>,
    /// Reconciles running at once per controller.
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    #[command(flatten)]
    run: RunArgs,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = match Cli::parse().command {
        Command::Generate(command) => {
            command
                .run(&service_ca_operator::deploy::declaration()?)
                .await?;
            return Ok(());
        }
        Command::Run(args) => *args,
    };
    let mut settings = Settings {
        namespace: String::new(),
        inject_cluster_scoped: args.inject_cluster_scoped,
        cluster_domain: args.cluster_domain,
        key_algorithm: match args.key_algorithm {
            Key::EcdsaP256 => KeyAlgorithm::EcdsaP256,
            Key::Rsa2048 => KeyAlgorithm::Rsa2048,
        },
        serving_cert_lifetime: args.serving_cert_lifetime,
        refresh_margin: args.serving_cert_refresh,
        ca_lifetime: args.ca_lifetime,
        ca_rotation_margin: args.ca_rotation_margin,
        force_rotation_reason: args.force_rotation_reason,
        concurrency: args.concurrency,
        ..Settings::default()
    };
    // Checked before anything starts: a bad flag is an error, not a crash loop later.
    settings.validate().context("invalid flags")?;
    let signing_namespace = args.signing_namespace;
    command::run("service-ca-operator", &args.run, |manager| {
        settings.namespace = signing_namespace
            .or_else(|| manager.own_namespace_name().map(str::to_owned))
            .unwrap_or_default();
        settings.cluster_ca_pem =
            service_ca_operator::inject::pem_certificates(manager.cluster_certificates());
        controller::register(manager, &settings)
    })
    .await?;
    Ok(())
}
