//! Credentials never leave the Secret: the operator's logs (captured at debug level), its
//! Events and the request's status are scanned for every secret access key it handled, through
//! minting, replacement, a failure and deletion.

mod common;

use std::io::Write;
use std::sync::Arc;

use parking_lot::Mutex;

use anyhow::{Result, ensure};
use common::{Fixture, ROOT_SECRET, data};
use credentials_operator::mint::SECRET_ACCESS_KEY;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, DeleteParams, ListParams};
use operon_cluster::wait;

#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

#[tokio::test]
async fn no_secret_material_in_logs_events_or_status() -> Result<()> {
    // The only test of this binary: it owns the global log subscriber.
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .with_max_level(tracing::Level::DEBUG)
        .with_writer(move || writer.clone())
        .init();

    let f = Fixture::new("cred-secrecy").await?;
    let op = f.operator().await?;
    let mut secrets = vec![ROOT_SECRET.to_string()];
    f.create(&f.sample("quiet", "quiet-creds", None)?).await?;
    f.wait_provisioned("quiet").await?;
    let first = data(&f.secrets().get("quiet-creds").await?, SECRET_ACCESS_KEY)?;
    secrets.push(first.clone());
    // Replacement.
    f.secrets()
        .delete("quiet-creds", &DeleteParams::default())
        .await?;
    let second = wait::until("a replacement key", common::TIMEOUT, || async {
        let s = f
            .secrets()
            .get_opt("quiet-creds")
            .await
            .map_err(|e| e.to_string())?;
        let key = s
            .as_ref()
            .and_then(|s| data(s, SECRET_ACCESS_KEY).ok())
            .ok_or("absent")?;
        if key != first {
            Ok(key)
        } else {
            Err("same".into())
        }
    })
    .await?;
    secrets.push(second);
    // A failure (the cloud is down during deletion), then recovery.
    f.moto.pause();
    f.requests()
        .delete("quiet", &DeleteParams::default())
        .await?;
    f.wait_condition(
        "quiet",
        credentials_operator::api::condition::DEPROVISION_FAILURE,
        "True",
    )
    .await?;
    let status = serde_json::to_string(&f.requests().get("quiet").await?.status)?;
    f.moto.resume().await?;
    f.wait_gone(&f.requests(), "quiet", "request deleted")
        .await?;
    op.stop().await?;

    let logs = String::from_utf8_lossy(&captured.0.lock()).to_string();
    ensure!(
        logs.contains("created IAM user"),
        "the capture works: {} bytes",
        logs.len()
    );
    let events: Vec<String> = Api::<Event>::namespaced(f.client.clone(), &f.ns)
        .list(&ListParams::default())
        .await?
        .into_iter()
        .map(|e| {
            format!(
                "{} {}",
                e.reason.unwrap_or_default(),
                e.note.unwrap_or_default()
            )
        })
        .collect();
    ensure!(
        events
            .iter()
            .any(|e| e.contains("CloudCredDeprovisionFailure")),
        "{events:?}"
    );
    for secret in &secrets {
        ensure!(
            !logs.contains(secret.as_str()),
            "a secret access key is in the logs"
        );
        ensure!(
            !events.iter().any(|e| e.contains(secret.as_str())),
            "a secret access key is in an Event"
        );
        ensure!(
            !status.contains(secret.as_str()),
            "a secret access key is in the status"
        );
    }
    Ok(())
}
