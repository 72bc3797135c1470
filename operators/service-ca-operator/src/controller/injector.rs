//! CA bundle injection: one controller per kind (ConfigMaps per namespace scope; APIServices,
//! CRDs and the two webhook configuration kinds cluster-wide), all running the same reconcile:
//! if the object asks for the bundle and doesn't hold exactly it, send the JSON patch of
//! [`crate::inject::injection_patch`]. Every object is re-checked when the bundle changes.

use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::{StreamExt, TryStreamExt};
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::controller::{Action, Config as ControllerConfig, Controller};
use kube::runtime::reflector::{self, ObjectRef};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Client, Resource, ResourceExt};
use operon_runtime::cache::Synced;
use operon_runtime::reconciler::Tracker;
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CaWatch, Error, MANAGER, Settings, Stop, ca_changes, current_ca, trim_managed_fields};
use crate::inject::{self, Target};

type Task = Pin<Box<dyn Future<Output = ()> + Send>>;

struct Context<K: Resource<DynamicType = ()>> {
    client: Client,
    target: Target,
    ca: CaWatch,
    tracker: Tracker<K>,
    /// The Api to patch an object through (namespaced or not).
    api_for: fn(Client, Option<String>) -> Api<K>,
}

/// The ConfigMap injector for one namespace scope (`None`: all).
pub fn configmaps(
    client: Client,
    namespace: Option<&str>,
    settings: &Settings,
    ca: CaWatch,
    stop: Stop,
) -> (Task, Synced) {
    let api: Api<ConfigMap> = match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    };
    let api_for: fn(Client, Option<String>) -> Api<ConfigMap> =
        |client, ns| Api::namespaced(client, ns.as_deref().unwrap_or_default());
    injector(client, api, Target::ConfigMap, api_for, settings, ca, stop)
}

/// The injectors of the cluster-scoped kinds.
pub fn cluster_scoped(
    client: Client,
    settings: &Settings,
    ca: CaWatch,
    stop: &Stop,
) -> Vec<(Task, Synced)> {
    vec![
        injector(
            client.clone(),
            Api::<APIService>::all(client.clone()),
            Target::ApiService,
            |client, _| Api::all(client),
            settings,
            ca.clone(),
            stop.clone(),
        ),
        injector(
            client.clone(),
            Api::<CustomResourceDefinition>::all(client.clone()),
            Target::Crd,
            |client, _| Api::all(client),
            settings,
            ca.clone(),
            stop.clone(),
        ),
        injector(
            client.clone(),
            Api::<MutatingWebhookConfiguration>::all(client.clone()),
            Target::MutatingWebhook,
            |client, _| Api::all(client),
            settings,
            ca.clone(),
            stop.clone(),
        ),
        injector(
            client.clone(),
            Api::<ValidatingWebhookConfiguration>::all(client),
            Target::ValidatingWebhook,
            |client, _| Api::all(client),
            settings,
            ca,
            stop.clone(),
        ),
    ]
}

fn injector<K>(
    client: Client,
    api: Api<K>,
    target: Target,
    api_for: fn(Client, Option<String>) -> Api<K>,
    settings: &Settings,
    ca: CaWatch,
    stop: Stop,
) -> (Task, Synced)
where
    K: Resource<DynamicType = ()>
        + Clone
        + Debug
        + DeserializeOwned
        + Serialize
        + Send
        + Sync
        + 'static,
{
    let kind = K::kind(&()).to_ascii_lowercase();
    let metrics = settings.metrics.controller(&kind);
    let synced = Synced::new();
    let (store, writer) = reflector::store::<K>();
    let objects = watcher(api, watcher::Config::default())
        .default_backoff()
        .modify(trim_managed_fields)
        .reflect(writer)
        .inspect_ok(synced.on_event())
        .touched_objects()
        .inspect_ok({
            let metrics = metrics.clone();
            move |o: &K| metrics.queued(&ObjectRef::from_obj(o).to_string())
        });
    let ctx = Arc::new(Context {
        client,
        target,
        ca: ca.clone(),
        tracker: Tracker::new(metrics),
        api_for,
    });
    let concurrency = settings.concurrency;
    let task = async move {
        tracing::info!(%kind, "starting CA bundle injector");
        Controller::for_stream(objects, store)
            .reconcile_all_on(ca_changes(ca))
            .with_config(ControllerConfig::default().concurrency(concurrency))
            .graceful_shutdown_on(stop)
            .run(reconcile::<K>, error_policy::<K>, ctx)
            .for_each(|result| async move {
                match result {
                    Ok((obj, _)) => tracing::debug!(object = %obj, "reconciled"),
                    Err(e) => tracing::debug!("reconcile failed: {e}"),
                }
            })
            .await;
        tracing::info!(%kind, "CA bundle injector stopped");
    };
    (Box::pin(task), synced)
}

fn error_policy<K>(obj: Arc<K>, error: &Error, ctx: Arc<Context<K>>) -> Action
where
    K: Resource<DynamicType = ()>,
{
    ctx.tracker.retry(obj.as_ref(), error)
}

async fn reconcile<K>(obj: Arc<K>, ctx: Arc<Context<K>>) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize,
{
    ctx.tracker
        .track(obj.as_ref(), inject_into(obj.as_ref(), &ctx))
        .await
}

async fn inject_into<K>(obj: &K, ctx: &Context<K>) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize,
{
    if !inject::wants_injection(ctx.target, obj.annotations())
        || obj.meta().deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    let Some(ca) = current_ca(&ctx.ca).await else {
        return Ok(Action::await_change());
    };
    let value = serde_json::to_value(obj)?;
    let Some(patch) = inject::injection_patch(ctx.target, &value, &ca.bundle_pem) else {
        return Ok(Action::await_change());
    };
    let patch: json_patch::Patch = serde_json::from_value(patch)?;
    let api = (ctx.api_for)(ctx.client.clone(), obj.namespace());
    let pp = PatchParams {
        field_manager: Some(MANAGER.to_owned()),
        ..PatchParams::default()
    };
    api.patch(&obj.name_any(), &pp, &Patch::<()>::Json(patch))
        .await?;
    tracing::info!(kind = %K::kind(&()), object = %ObjectRef::from_obj(obj), "injected the CA bundle");
    Ok(Action::await_change())
}
