//! CA bundle injection: one controller per kind (ConfigMaps per namespace scope; APIServices,
//! CRDs and the two webhook configuration kinds cluster-wide), all running the same reconcile:
//! if the object asks for the bundle and doesn't hold exactly it, send the JSON patch of
//! [`crate::inject::injection_patch`]. Every object is re-checked when the bundle changes. The
//! ConfigMap named `openshift-service-ca.crt` may ask for the legacy bundle instead (the CA
//! bundle plus the cluster's CA), as OpenShift keeps it for clusters migrated from old releases.

use std::fmt::Debug;
use std::sync::Arc;

use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, Patch, PatchParams};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource, ResourceExt};
use operon_runtime::controller::{self, Action, Controller};
use operon_runtime::manager::{Manager, Scope};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::{CaWatch, Error, MANAGER, Settings, ca_changes, current_ca};
use crate::inject::{self, Target};

struct Context<K: Resource<DynamicType = ()>> {
    client: Client,
    target: Target,
    ca: CaWatch,
    /// Appended to the bundle for the legacy ConfigMap (PEM).
    cluster_ca_pem: String,
    /// The Api to patch an object through (namespaced or not).
    api_for: fn(Client, Option<String>) -> Api<K>,
}

/// The ConfigMap injector for one namespace scope.
pub fn register_configmaps(manager: &mut Manager, scope: &Scope, settings: &Settings, ca: CaWatch) {
    let api = scope.api::<ConfigMap>(manager.client());
    let api_for: fn(Client, Option<String>) -> Api<ConfigMap> =
        |client, ns| Api::namespaced(client, ns.as_deref().unwrap_or_default());
    register(manager, api, Target::ConfigMap, api_for, settings, ca);
}

/// The injectors of the cluster-scoped kinds.
pub fn register_cluster_scoped(manager: &mut Manager, settings: &Settings, ca: CaWatch) {
    let client = manager.client();
    register(
        manager,
        Api::<APIService>::all(client.clone()),
        Target::ApiService,
        |client, _| Api::all(client),
        settings,
        ca.clone(),
    );
    register(
        manager,
        Api::<CustomResourceDefinition>::all(client.clone()),
        Target::Crd,
        |client, _| Api::all(client),
        settings,
        ca.clone(),
    );
    register(
        manager,
        Api::<MutatingWebhookConfiguration>::all(client.clone()),
        Target::MutatingWebhook,
        |client, _| Api::all(client),
        settings,
        ca.clone(),
    );
    register(
        manager,
        Api::<ValidatingWebhookConfiguration>::all(client),
        Target::ValidatingWebhook,
        |client, _| Api::all(client),
        settings,
        ca,
    );
}

fn register<K>(
    manager: &mut Manager,
    api: Api<K>,
    target: Target,
    api_for: fn(Client, Option<String>) -> Api<K>,
    settings: &Settings,
    ca: CaWatch,
) where
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
    let objects = manager.reflect(
        api,
        watcher::Config::default(),
        controller::trim_managed_fields,
    );
    let ctx = Arc::new(Context {
        client: manager.client(),
        target,
        ca: ca.clone(),
        cluster_ca_pem: settings.cluster_ca_pem.clone(),
        api_for,
    });
    let controller = Controller::new(&kind, objects)
        .reconcile_all_on(ca_changes(ca))
        .workers(settings.concurrency.into());
    manager.add(controller, ctx, reconcile::<K>);
}

async fn reconcile<K>(obj: Arc<K>, ctx: Arc<Context<K>>) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize,
{
    inject_into(obj.as_ref(), &ctx).await
}

async fn inject_into<K>(obj: &K, ctx: &Context<K>) -> Result<Action, Error>
where
    K: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Serialize,
{
    let legacy = ctx.target == Target::ConfigMap
        && inject::wants_legacy_injection(&obj.name_any(), obj.annotations());
    if !(legacy || inject::wants_injection(ctx.target, obj.annotations()))
        || obj.meta().deletion_timestamp.is_some()
    {
        return Ok(Action::await_change());
    }
    let Some(ca) = current_ca(&ctx.ca).await else {
        return Ok(Action::await_change());
    };
    let bundle = if legacy {
        if ctx.cluster_ca_pem.trim().is_empty() {
            return Err(Error::InvalidSettings(
                "the legacy CA bundle needs the cluster's CA, and the operator's client has none"
                    .into(),
            ));
        }
        inject::legacy_bundle(&ca.bundle_pem, &ctx.cluster_ca_pem)
    } else {
        ca.bundle_pem.clone()
    };
    let value = serde_json::to_value(obj)?;
    let Some(patch) = inject::injection_patch(ctx.target, &value, &bundle) else {
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
