//! Passthrough and manual modes against the real control plane and moto.

mod common;

use anyhow::{Result, ensure};
use common::{Fixture, ROOT_KEY_ID, ROOT_SECRET, data};
use credentials_operator::controller::{Mode, Settings};
use credentials_operator::mint::{ACCESS_KEY_ID, CREDENTIALS, SECRET_ACCESS_KEY};
use kube::ResourceExt;
use operon_cluster::wait;

#[tokio::test]
async fn passthrough_copies_the_root_credentials() -> Result<()> {
    let f = Fixture::new("cred-pass").await?;
    let settings = Settings {
        mode: Some(Mode::Passthrough),
        ..f.settings()
    };
    let _op = f.operator_with(settings).await?;
    f.create(&f.sample("copy", "copy-creds", None)?).await?;
    let cr = f.wait_provisioned("copy").await?;
    let secret = f.secrets().get("copy-creds").await?;
    ensure!(data(&secret, ACCESS_KEY_ID)? == ROOT_KEY_ID);
    ensure!(data(&secret, SECRET_ACCESS_KEY)? == ROOT_SECRET);
    ensure!(data(&secret, CREDENTIALS)?.contains(ROOT_KEY_ID));
    ensure!(f.iam_users().await?.is_empty(), "passthrough mints nothing");
    ensure!(
        cr.status.unwrap_or_default().provider_status.is_none(),
        "no minted identity in status"
    );
    // Deleting the request removes the copy, not the root credentials.
    f.requests().delete("copy", &Default::default()).await?;
    wait::until("request and Secret gone", common::TIMEOUT, || async {
        let cr = f
            .requests()
            .get_opt("copy")
            .await
            .map_err(|e| e.to_string())?;
        let s = f
            .secrets()
            .get_opt("copy-creds")
            .await
            .map_err(|e| e.to_string())?;
        match (cr, s) {
            (None, None) => Ok(()),
            other => Err(format!("{:?}", (other.0.is_some(), other.1.is_some()))),
        }
    })
    .await?;
    ensure!(
        f.secrets().get_opt("aws-creds").await?.is_some(),
        "root Secret kept"
    );
    Ok(())
}

#[tokio::test]
async fn manual_mode_does_nothing() -> Result<()> {
    let f = Fixture::new("cred-manual").await?;
    let settings = Settings {
        mode: Some(Mode::Manual),
        ..f.settings()
    };
    let op = f.operator_with(settings).await?;
    f.create(&f.sample("hands-off", "hands-off-creds", None)?)
        .await?;
    wait::until("the request reconciled", common::TIMEOUT, || async {
        match op.metrics.reconciles() {
            0 => Err("not yet".to_string()),
            _ => Ok(()),
        }
    })
    .await?;
    let cr = f.requests().get("hands-off").await?;
    ensure!(cr.finalizers().is_empty(), "{:?}", cr.finalizers());
    ensure!(cr.status.is_none(), "{:?}", cr.status);
    ensure!(f.secrets().get_opt("hands-off-creds").await?.is_none());
    ensure!(f.iam_users().await?.is_empty());
    ensure!(op.requests().writes() == 0, "writes: {}", op.requests());
    Ok(())
}
