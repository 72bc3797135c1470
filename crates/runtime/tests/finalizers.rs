//! Finalizer helpers against the real apiserver: an object with a finalizer survives deletion
//! until the finalizer is removed; other finalizers are kept.

use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, DeleteParams, PostParams};
use operon_cluster::wait;
use operon_runtime::finalizers;
use serde_json::json;

const OURS: &str = "operon.dev/cleanup";
const THEIRS: &str = "example.com/other";

#[tokio::test]
async fn finalizer_holds_deletion_until_removed_and_others_are_kept() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("finalizers").await?;
    let api: Api<ConfigMap> = Api::namespaced(env.client().await?, &ns);
    let cm: ConfigMap = serde_json::from_value(json!({ "metadata": { "name": "guarded" } }))?;
    let cm = api.create(&PostParams::default(), &cm).await?;

    let cm = finalizers::add(&api, &cm, OURS)
        .await?
        .context("not added")?;
    ensure!(
        finalizers::add(&api, &cm, OURS).await?.is_none(),
        "added twice"
    );
    let cm = finalizers::add(&api, &cm, THEIRS)
        .await?
        .context("second not added")?;
    assert_eq!(
        cm.metadata.finalizers,
        Some(vec![OURS.to_string(), THEIRS.to_string()])
    );

    // A stale copy (older list) must not overwrite the newer one.
    let mut stale = cm.clone();
    stale.metadata.finalizers = Some(vec![OURS.to_string()]);
    let err = finalizers::add(&api, &stale, "example.com/third")
        .await
        .err();
    ensure!(
        matches!(err, Some(kube::Error::Api(ref s)) if s.code == 422),
        "stale add succeeded: {err:?}"
    );

    api.delete("guarded", &DeleteParams::default()).await?;
    let cm = api.get("guarded").await?;
    ensure!(
        cm.metadata.deletion_timestamp.is_some(),
        "not being deleted"
    );

    let cm = finalizers::remove(&api, &cm, OURS)
        .await?
        .context("not removed")?;
    assert_eq!(cm.metadata.finalizers, Some(vec![THEIRS.to_string()]));
    ensure!(
        api.get_opt("guarded").await?.is_some(),
        "deleted while another finalizer remains"
    );
    finalizers::remove(&api, &cm, THEIRS).await?;
    wait::until("object gone", Duration::from_secs(30), || async {
        match api.get_opt("guarded").await {
            Ok(None) => Ok(()),
            other => Err(format!("{other:?}")),
        }
    })
    .await?;
    Ok(())
}
