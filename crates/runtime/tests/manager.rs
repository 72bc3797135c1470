//! The Manager against the real apiserver: two controllers asking for the same watch share one
//! reflector (one WATCH at the apiserver), each gets every change, and the operator is ready
//! only once every cache it registered has its initial list.

use std::collections::BTreeSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::api::{Api, ObjectMeta, PostParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use operon_cluster::wait;
use operon_runtime::admin::Readiness;
use operon_runtime::controller::{self, Action, Cause, Controller};
use operon_runtime::manager::Manager;
use tokio::sync::oneshot;

#[derive(Debug)]
struct Never;

impl std::fmt::Display for Never {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("never")
    }
}

impl Cause for Never {
    fn cause(&self) -> &'static str {
        "never"
    }
}

/// The names each controller reconciled.
#[derive(Default)]
struct Seen(Mutex<BTreeSet<String>>);

impl Seen {
    fn names(&self) -> BTreeSet<String> {
        self.0.lock().map(|s| s.clone()).unwrap_or_default()
    }
}

async fn record(cm: Arc<ConfigMap>, seen: Arc<Seen>) -> Result<Action, Never> {
    if let Ok(mut names) = seen.0.lock() {
        names.insert(cm.name_any());
    }
    Ok(Action::await_change())
}

/// Namespaced WATCH requests of ConfigMaps the apiserver is serving now.
async fn configmap_watches(admin: &Client) -> Result<f64> {
    let text = admin
        .request_text(http::Request::get("/metrics").body(Vec::new())?)
        .await?;
    Ok(text
        .lines()
        .filter(|l| l.starts_with("apiserver_longrunning_requests{"))
        .filter(|l| {
            l.contains("resource=\"configmaps\"")
                && l.contains("scope=\"namespace\"")
                && l.contains("verb=\"WATCH\"")
        })
        .filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
        .sum())
}

async fn create(client: &Client, ns: &str, name: &str) -> Result<()> {
    let cm = ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            labels: Some([("manager-test".to_owned(), "true".to_owned())].into()),
            ..Default::default()
        },
        ..Default::default()
    };
    Api::<ConfigMap>::namespaced(client.clone(), ns)
        .create(&PostParams::default(), &cm)
        .await?;
    Ok(())
}

#[tokio::test]
async fn controllers_share_a_watch_and_readiness_waits_for_every_cache() -> Result<()> {
    let env = operon_envtest::shared().await?;
    let ns = env.namespace("manager").await?;
    let admin = env.client().await?;
    // A user who may watch ConfigMaps here, and Secrets only later: the Secrets cache can't
    // have its initial list until then.
    let user = "manager-test-operator";
    operon_envtest::grant(
        &admin,
        &ns,
        user,
        "configmaps",
        serde_json::json!([{ "apiGroups": [""], "resources": ["configmaps"], "verbs": ["list", "watch"] }]),
    )
    .await?;
    let client = env.impersonating(user, &[]).await?;

    let readiness = Readiness::new();
    let (stop_tx, stop_rx) = oneshot::channel::<()>();
    let mut manager = Manager::new("manager-test", client.clone())
        .namespaces([ns.to_string()])
        .readiness(readiness.clone())
        .stop(async move {
            let _ = stop_rx.await;
        });
    let configmaps = || {
        (
            Api::<ConfigMap>::namespaced(client.clone(), &ns),
            watcher::Config::default().labels("manager-test=true"),
        )
    };
    let (first, second) = (Arc::new(Seen::default()), Arc::new(Seen::default()));
    // The first controller also reads Secrets; the second only ConfigMaps.
    let (api, config) = configmaps();
    let primary = manager.reflect(api, config, controller::trim_managed_fields);
    let secrets = manager.reflect(
        Api::<Secret>::namespaced(client.clone(), &ns),
        watcher::Config::default(),
        controller::trim_managed_fields,
    );
    manager.add(
        Controller::new("first", primary).watches(secrets, |_: Secret| None),
        first.clone(),
        record,
    );
    let (api, config) = configmaps();
    let primary = manager.reflect(api, config, controller::trim_managed_fields);
    manager.add(Controller::new("second", primary), second.clone(), record);
    ensure!(
        manager.watch_count() == 2,
        "two controllers on one ConfigMap watch plus Secrets: {} watches",
        manager.watch_count()
    );

    create(&admin, &ns, "one").await?;
    let before = configmap_watches(&admin).await?;
    let running = tokio::spawn(manager.run());

    // The second controller works; the first waits for its Secrets cache; not ready.
    let has = |seen: &Arc<Seen>, name: &str| seen.names().contains(name);
    wait::until(
        "the second controller reconciles",
        Duration::from_secs(60),
        || async {
            has(&second, "one")
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await?;
    let after = configmap_watches(&admin).await?;
    ensure!(
        after - before == 1.0,
        "the apiserver serves {} more namespaced ConfigMap watches (expected 1)",
        after - before
    );
    ensure!(
        !readiness.is_ready(),
        "ready before the Secrets cache synced"
    );
    ensure!(
        !has(&first, "one"),
        "the first controller ran before its caches synced"
    );

    operon_envtest::grant(
        &admin,
        &ns,
        user,
        "secrets",
        serde_json::json!([{ "apiGroups": [""], "resources": ["secrets"], "verbs": ["list", "watch"] }]),
    )
    .await?;
    wait::until(
        "ready once every cache synced",
        Duration::from_secs(90),
        || async {
            readiness
                .is_ready()
                .then_some(())
                .ok_or_else(|| "not ready".to_string())
        },
    )
    .await?;
    wait::until(
        "the first controller reconciles",
        Duration::from_secs(60),
        || async {
            has(&first, "one")
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await?;

    // One watch, every change to both.
    create(&admin, &ns, "two").await?;
    wait::until(
        "both controllers see the new object",
        Duration::from_secs(60),
        || async {
            (has(&first, "two") && has(&second, "two"))
                .then_some(())
                .ok_or_else(|| "not yet".to_string())
        },
    )
    .await?;
    ensure!(configmap_watches(&admin).await? - before == 1.0);

    let _ = stop_tx.send(());
    tokio::time::timeout(Duration::from_secs(30), running)
        .await
        .context("the manager did not stop")??;
    ensure!(!readiness.is_ready(), "still ready after stopping");
    Ok(())
}
