use std::time::Duration;

use clap::{Parser, Subcommand, ValueEnum};
use credentials_operator::controller::{self, Mode, Settings};
use credentials_operator::iam::{self, Endpoint};
use operon_runtime::command::{self, RunArgs, parse_duration};

#[derive(Parser)]
#[command(
    name = "credentials-operator",
    version,
    about = "CredentialsRequest operator: least-privilege AWS IAM credentials in a Secret"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Runs the controller (out-of-cluster with a kubeconfig, or in-cluster).
    Run(Box<Args>),
    #[command(flatten)]
    Generate(operon_manifests::Command),
}

#[derive(Clone, Copy, ValueEnum)]
enum ModeArg {
    /// An IAM user per request with exactly the requested permissions.
    Mint,
    /// Copy the root credentials, trusted as they are.
    Passthrough,
    /// Do nothing, but write short-lived (STS) profiles for requests naming `stsIAMRoleARN`:
    /// an administrator provides the other Secrets.
    Manual,
}

#[derive(clap::Args)]
struct Args {
    /// How requests are satisfied; overrides the root Secret's `cloudcredential.openshift.io/mode`
    /// annotation (mint, passthrough after simulating the requested actions, or insufficient),
    /// which decides when this is absent (mint without it either).
    #[arg(long, value_enum)]
    mode: Option<ModeArg>,
    /// A tag of every minted user, `key=value` (repeatable), besides
    /// `kubernetes.io/cluster/<cluster-id>=owned`.
    #[arg(long = "resource-tag", value_parser = parse_tag)]
    resource_tags: Vec<(String, String)>,
    /// The root credentials Secret, `<namespace>/<name>`.
    #[arg(long, default_value = "kube-system/aws-creds")]
    root_secret: String,
    /// Cluster identifier: user name prefix and `kubernetes.io/cluster/<id>` tag.
    #[arg(long, default_value = "operon")]
    cluster_id: String,
    /// IAM endpoint (default: the SDK's, e.g. from AWS_ENDPOINT_URL_IAM).
    #[arg(long, env = "OPERON_IAM_ENDPOINT")]
    iam_endpoint: Option<String>,
    /// AWS region (default: the SDK's, e.g. AWS_REGION; IAM is global).
    #[arg(long)]
    region: Option<String>,
    /// Requests synced less than this ago, unchanged, are not synced again.
    #[arg(long, default_value = "1h", value_parser = parse_duration)]
    resync_period: Duration,
    /// Replace access keys older than this (off by default).
    #[arg(long, value_parser = parse_duration)]
    key_rotation_period: Option<Duration>,
    /// Reconciles running at once (one at a time per request).
    #[arg(long, default_value_t = 10, value_parser = clap::value_parser!(u16).range(1..))]
    concurrency: u16,
    #[command(flatten)]
    run: RunArgs,
}

/// `key=value`, as IAM accepts it: a key of 1–128 characters, a value of at most 256.
fn parse_tag(text: &str) -> Result<(String, String), String> {
    let (key, value) = text
        .split_once('=')
        .ok_or_else(|| format!("{text:?} is not key=value"))?;
    if key.is_empty() || key.chars().count() > 128 || value.chars().count() > 256 {
        return Err(format!(
            "{text:?}: a tag key has 1 to 128 characters and a value at most 256"
        ));
    }
    if key.starts_with("aws:") {
        return Err(format!(
            "{text:?}: keys starting with aws: are reserved by AWS"
        ));
    }
    Ok((key.to_owned(), value.to_owned()))
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = match Cli::parse().command {
        Command::Generate(command) => {
            command
                .run(&credentials_operator::deploy::declaration()?)
                .await?;
            return Ok(());
        }
        Command::Run(args) => *args,
    };
    let (root_ns, root_name) = args
        .root_secret
        .split_once('/')
        .filter(|(ns, name)| !ns.is_empty() && !name.is_empty())
        .ok_or_else(|| anyhow::anyhow!("--root-secret must be <namespace>/<name>"))?;
    let settings = Settings {
        mode: args.mode.map(|mode| match mode {
            ModeArg::Mint => Mode::Mint,
            ModeArg::Passthrough => Mode::Passthrough,
            ModeArg::Manual => Mode::Manual,
        }),
        resource_tags: args.resource_tags,
        root_secret_namespace: root_ns.to_owned(),
        root_secret_name: root_name.to_owned(),
        cluster_id: args.cluster_id,
        endpoint: Endpoint {
            url: args.iam_endpoint,
            region: args.region,
        },
        resync_period: args.resync_period,
        key_rotation: args.key_rotation_period,
        concurrency: args.concurrency,
    };
    // The AWS SDK's configuration from the environment (read once, shared by every IAM client).
    let sdk = iam::load_sdk_config().await;
    command::run(controller::MANAGER, &args.run, |manager| {
        controller::register(manager, &settings, &sdk);
        Ok::<_, std::convert::Infallible>(())
    })
    .await?;
    Ok(())
}
