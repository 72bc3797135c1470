//! `cargo xtask soak`: a cluster of its own with the real node, the three operators deployed
//! from their images (credentials-operator against moto), the soak ([`xtask_kube::soak`]) for
//! `--duration`, then its samples and plots in `--out` and its verdict.

use std::time::Instant;

use anyhow::{Context, Result, bail};
use kube::Client;
use operon_moto::Moto;
use xtask::cli::{Shape, SoakArgs};
use xtask::elapsed;
use xtask_kube::soak::{self, Options, Report};

use crate::{cluster, demo};

/// The namespace the load goes into.
const NAMESPACE: &str = "soak";

pub fn soak(args: SoakArgs) -> Result<()> {
    let t0 = Instant::now();
    xtask::k8s::ensure_built(false)?;
    let moto_server = xtask::moto::ensure_installed()?;
    let archives = crate::deploy::build_images(false, &[])?;
    let out = match args.out {
        Some(out) => out,
        None => demo::target_dir()?.join("soak"),
    };
    let mut options = Options::new(args.duration, args.rate, args.live);
    if let Some(max) = args.max_slope {
        options.max_slope_mib_per_hour = max;
    }
    let dir = cluster::state_dir().join("soak-cluster");
    let rt = tokio::runtime::Runtime::new()?;
    let report = rt.block_on(async {
        let shape = Shape {
            nodes: 1,
            kwok_only: false,
            ha: false,
        };
        let cp = cluster::start(shape, &dir).await?;
        println!(
            "soak: control plane with a real node ready ({})",
            cp.startup_times()
        );
        let kubeconfig = cp.kubeconfig_path().to_path_buf();
        let network = cp
            .node()
            .map(operon_cluster::Node::network)
            .context("the control plane has no real node")?;
        let run = async {
            let config = demo::config(&kubeconfig).await?;
            let client = Client::try_from(config.clone())?;
            let moto = Moto::start_for_pods(
                &moto_server,
                &network,
                config,
                demo::operator_pods("credentials-operator")?,
            )
            .await?;
            demo::root_credentials(&client).await?;
            demo::deploy_in_cluster(&kubeconfig, &client, &archives, &moto, false).await?;
            println!("soak: the operators run in the cluster ({})", elapsed(t0));
            demo::ensure_namespace(&client, NAMESPACE).await?;
            let report = soak::run(&client, NAMESPACE, &options).await?;
            drop(moto);
            anyhow::Ok(report)
        };
        // Ctrl-C stops the soak and still tears the cluster down.
        let report = tokio::select! {
            report = run => report,
            _ = tokio::signal::ctrl_c() => Err(anyhow::anyhow!("interrupted")),
        };
        drop(cp);
        let _ = std::fs::remove_dir_all(&dir);
        report
    })?;
    finish(&report, &out)?;
    println!("soak: done in {}", elapsed(t0));
    Ok(())
}

/// Writes the report and plots, prints the summary, and fails with the verdict.
fn finish(report: &Report, out: &std::path::Path) -> Result<()> {
    let files = report
        .write(out)
        .with_context(|| format!("writing the report to {}", out.display()))?;
    println!("{}", report.summary());
    for file in files {
        println!("soak: wrote {}", file.display());
    }
    if !report.passed() {
        bail!("the soak failed:\n  {}", report.failures.join("\n  "));
    }
    Ok(())
}
