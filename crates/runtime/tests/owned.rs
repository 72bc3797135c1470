//! Children against the real apiserver: created with their controller owner, unchanged ones
//! cost no request, changed ones are applied, undesired ones pruned, and an object of the same
//! name that the owner does not control is reported and left alone.

use std::collections::BTreeMap;
use std::time::Duration;

use anyhow::{Context, Result, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{Api, ObjectMeta, PostParams};
use kube::{Resource, ResourceExt};
use operon_cluster::wait;
use operon_runtime::manager::Manager;
use operon_runtime::owned::{self, Children};

fn config_map(name: &str, value: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.to_string()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([("value".to_string(), value.to_string())])),
        ..Default::default()
    }
}

/// Waits until the cache shows `name` with `value` (or, for `None`, without it).
async fn cached(
    children: &Children<ConfigMap>,
    ns: &str,
    name: &str,
    value: Option<&str>,
) -> Result<()> {
    let key = kube::runtime::reflector::ObjectRef::new(name).within(ns);
    wait::until(
        &format!("cache shows {name} = {value:?}"),
        Duration::from_secs(30),
        || async {
            let current = children.store().get(&key);
            let seen = current
                .as_ref()
                .and_then(|c| c.data.as_ref()?.get("value").cloned());
            if seen.as_deref() == value {
                Ok(())
            } else {
                Err(format!("{seen:?}"))
            }
        },
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn children_are_created_kept_updated_pruned_and_foreign_objects_left_alone() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("owned").await?;
    let client = env.client().await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let owner = api
        .create(&PostParams::default(), &config_map("owner", "-"))
        .await?;
    let uid = owner.uid().context("owner without uid")?;
    let foreign = api
        .create(&PostParams::default(), &config_map("taken", "theirs"))
        .await?;

    // The Manager drives the children's watch; this test reads only the cache.
    let mut manager = Manager::new("owned-test", client.clone());
    let (children, watch) = Children::<ConfigMap>::new(&mut manager);
    let synced = watch.synced.clone();
    let drive = tokio::spawn(manager.run());
    tokio::time::timeout(Duration::from_secs(30), synced.wait())
        .await
        .context("cache not synced")?;

    let first = children
        .reconcile(
            &owner,
            vec![
                config_map("a", "1"),
                config_map("b", "1"),
                config_map("taken", "ours"),
            ],
        )
        .await?;
    assert_eq!(
        first.applied,
        [
            format!("ConfigMap {}/a", &*ns),
            format!("ConfigMap {}/b", &*ns)
        ]
    );
    assert_eq!(first.conflicts, [format!("ConfigMap {}/taken", &*ns)]);
    ensure!(
        !first.is_complete(),
        "a conflict leaves the children incomplete"
    );
    let a = api.get("a").await?;
    ensure!(
        owned::controller_uid(&a) == Some(uid.as_str()),
        "a not controlled by the owner"
    );
    ensure!(
        a.annotations().contains_key(owned::APPLIED_HASH),
        "a has no applied hash"
    );
    let taken = api.get("taken").await?;
    ensure!(
        taken.resource_version() == foreign.resource_version(),
        "the foreign object was modified"
    );

    cached(&children, &ns, "a", Some("1")).await?;
    cached(&children, &ns, "b", Some("1")).await?;
    let again = children
        .reconcile(&owner, vec![config_map("a", "1"), config_map("b", "1")])
        .await?;
    assert_eq!(again.unchanged, 2, "{again:?}");
    ensure!(
        again.applied.is_empty(),
        "unchanged children applied: {again:?}"
    );

    let changed = children
        .reconcile(&owner, vec![config_map("a", "1"), config_map("b", "2")])
        .await?;
    assert_eq!(changed.applied, [format!("ConfigMap {}/b", &*ns)]);
    ensure!(
        api.get("b")
            .await?
            .data
            .and_then(|d| d.get("value").cloned())
            .as_deref()
            == Some("2"),
        "b not updated"
    );

    cached(&children, &ns, "b", Some("2")).await?;
    let pruned = children
        .reconcile(&owner, vec![config_map("a", "1")])
        .await?;
    assert_eq!(pruned.pruned, [format!("ConfigMap {}/b", &*ns)]);
    ensure!(api.get_opt("b").await?.is_none(), "b not deleted");
    ensure!(
        api.get_opt("taken").await?.is_some(),
        "the foreign object was deleted"
    );

    // An owner without a UID (never created) owns nothing.
    let phantom = ConfigMap::default();
    ensure!(
        children.reconcile(&phantom, Vec::new()).await.is_err(),
        "an owner without UID was accepted"
    );
    ensure!(owner.meta().uid.is_some());
    drive.abort();
    Ok(())
}

#[tokio::test]
async fn edited_children_are_restored_and_foreign_ones_outside_the_cache_left_alone() -> Result<()>
{
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("restored").await?;
    let client = env.client().await?;
    let api: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
    let owner = api
        .create(&PostParams::default(), &config_map("owner", "-"))
        .await?;
    // Outside the cache's label selector: the cache never sees it.
    let foreign = api
        .create(&PostParams::default(), &config_map("taken", "theirs"))
        .await?;
    let labelled = |name: &str, value: &str| {
        let mut cm = config_map(name, value);
        cm.metadata.labels = Some(BTreeMap::from([("child".into(), "yes".into())]));
        cm
    };

    let mut manager = Manager::new("restore-test", client.clone());
    let (children, watch) = Children::<ConfigMap>::watching(
        &mut manager,
        api.clone(),
        kube::runtime::watcher::Config::default().labels("child=yes"),
    );
    let children = children.restoring_edits();
    let synced = watch.synced.clone();
    let drive = tokio::spawn(manager.run());
    tokio::time::timeout(Duration::from_secs(30), synced.wait())
        .await
        .context("cache not synced")?;

    let desired = || vec![labelled("a", "1"), labelled("taken", "ours")];
    let first = children.reconcile(&owner, desired()).await?;
    assert_eq!(first.applied, [format!("ConfigMap {}/a", &*ns)]);
    assert_eq!(first.conflicts, [format!("ConfigMap {}/taken", &*ns)]);
    ensure!(
        api.get("taken").await?.resource_version() == foreign.resource_version(),
        "the foreign object was modified"
    );
    cached(&children, &ns, "a", Some("1")).await?;
    let unchanged = children.reconcile(&owner, desired()).await?;
    assert_eq!(unchanged.unchanged, 1, "{unchanged:?}");

    // Someone else edits the value (the applied hash stays): the next reconcile restores it.
    let mut edited = api.get("a").await?;
    edited
        .data
        .get_or_insert_with(Default::default)
        .insert("value".into(), "edited".into());
    api.replace("a", &PostParams::default(), &edited).await?;
    cached(&children, &ns, "a", Some("edited")).await?;
    let restored = children.reconcile(&owner, desired()).await?;
    assert_eq!(restored.applied, [format!("ConfigMap {}/a", &*ns)]);
    let value = api
        .get("a")
        .await?
        .data
        .and_then(|d| d.get("value").cloned());
    ensure!(value.as_deref() == Some("1"), "not restored: {value:?}");
    drive.abort();
    Ok(())
}
