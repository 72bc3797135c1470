//! The soak's short form: `cargo xtask soak` runs it for an hour on a cluster of its own
//! (docs/soak.md); here the same code runs for 150 s against the shared deployment, with the
//! node held alone so that no other test restarts or loads the operators meanwhile. It fails
//! on an RSS slope above the threshold for its length, on any lost, duplicated or left-over
//! object, and on any operator restart.

use std::path::PathBuf;
use std::time::Duration;

use anyhow::{Result, ensure};
use xtask_kube::soak::{self, Options};

use super::{deployed, node_alone};

#[tokio::test]
async fn the_operators_hold_steady_under_churn() -> Result<()> {
    let d = deployed().await?;
    let _node = node_alone("the_operators_hold_steady_under_churn").await?;
    let ns = d.env.namespace("soak").await?;
    let client = d.env.client().await?;
    let options = Options::new(Duration::from_secs(150), 1.0, 20);
    let report = soak::run(&client, &ns, &options).await?;
    let out = PathBuf::from(env!("CARGO_TARGET_TMPDIR")).join("soak");
    let files = report.write(&out)?;
    eprintln!("{}\nsoak: wrote {files:?}", report.summary());
    ensure!(
        report.passed(),
        "{}\n(samples and plots in {})",
        report.summary(),
        out.display()
    );
    Ok(())
}
