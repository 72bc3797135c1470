//! CA bundle injection on the real control plane: ConfigMaps (beta and alpha annotations, other
//! keys replaced, no write when equal, repaired after edits) and the cluster-scoped kinds
//! (APIService, CRD conversion webhooks by strategy, both webhook configuration kinds), with
//! the alpha-only annotation ignored where OpenShift ignores it; the legacy bundle of
//! `openshift-service-ca.crt`.

mod common;

use anyhow::{Result, ensure};
use base64::Engine as _;
use common::Fixture;
use k8s_openapi::api::admissionregistration::v1::{
    MutatingWebhookConfiguration, ValidatingWebhookConfiguration,
};
use k8s_openapi::api::core::v1::ConfigMap;
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use k8s_openapi::kube_aggregator::pkg::apis::apiregistration::v1::APIService;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use operon_cluster::wait;
use serde_json::{Value, json};
use service_ca_operator::controller::Settings;
use service_ca_operator::*;

async fn create_configmap(f: &Fixture, body: Value) -> Result<ConfigMap> {
    let mut body = body;
    body["apiVersion"] = json!("v1");
    body["kind"] = json!("ConfigMap");
    let cm: ConfigMap = serde_json::from_value(body)?;
    Ok(f.configmaps().create(&PostParams::default(), &cm).await?)
}

#[tokio::test]
async fn configmaps_get_exactly_the_bundle() -> Result<()> {
    let f = Fixture::new("sca-cm").await?;
    let op = f.operator().await?;
    let published = f.published_bundle().await?;

    // Other keys are replaced by the bundle; the value is case-insensitive.
    create_configmap(
        &f,
        json!({
            "metadata": { "name": "beta", "annotations": { INJECT_CABUNDLE: "TRUE" } },
            "data": { "old": "value" },
        }),
    )
    .await?;
    // The alpha annotation is honoured on ConfigMaps.
    create_configmap(
        &f,
        json!({
            "metadata": { "name": "alpha", "annotations": { ALPHA_INJECT_CABUNDLE: "true" } },
        }),
    )
    .await?;
    // Anything but "true" asks for nothing.
    create_configmap(
        &f,
        json!({
            "metadata": { "name": "off", "annotations": { INJECT_CABUNDLE: "false" } },
            "data": { "keep": "me" },
        }),
    )
    .await?;
    ensure!(
        f.wait_injected("beta", None).await? == published,
        "beta bundle"
    );
    ensure!(
        f.wait_injected("alpha", None).await? == published,
        "alpha bundle"
    );
    let beta = f.configmaps().get("beta").await?;
    let annotations = beta.metadata.annotations.clone().unwrap_or_default();
    ensure!(
        annotations.get(OWNING_COMPONENT).map(String::as_str) == Some("service-ca")
            && annotations.contains_key(DESCRIPTION),
        "OpenShift's owning-component and description: {annotations:?}"
    );
    let keys: Vec<String> = beta.data.unwrap_or_default().into_keys().collect();
    ensure!(keys == [INJECTED_CA_BUNDLE_KEY], "{keys:?}");
    let off = f.configmaps().get("off").await?;
    ensure!(
        off.data.unwrap_or_default().get("keep").map(String::as_str) == Some("me"),
        "a ConfigMap that doesn't ask must be left alone"
    );

    // Already equal: another reconcile writes nothing.
    let patches = op.requests().get("patch", "configmaps");
    let reconciles = op.metrics.reconciles("configmap");
    f.configmaps()
        .patch(
            "beta",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "touched": "yes" } } })),
        )
        .await?;
    wait::until(
        "the touched ConfigMap reconciled",
        common::TIMEOUT,
        || async {
            let now = op.metrics.reconciles("configmap");
            if now > reconciles {
                Ok(())
            } else {
                Err(format!("{now} reconciles"))
            }
        },
    )
    .await?;
    let after = op.requests().get("patch", "configmaps");
    ensure!(
        after == patches,
        "patched {} times while equal",
        after - patches
    );

    // An edited bundle is put back.
    f.configmaps()
        .patch(
            "beta",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { INJECTED_CA_BUNDLE_KEY: "tampered" } })),
        )
        .await?;
    ensure!(
        f.wait_injected("beta", Some("tampered")).await? == published,
        "restored"
    );
    Ok(())
}

#[tokio::test]
async fn the_legacy_bundle_goes_only_to_openshift_service_ca_crt() -> Result<()> {
    let f = Fixture::new("sca-legacy").await?;
    // The cluster's CA as a Pod's service account sees it: kube-controller-manager publishes it
    // into every namespace.
    let root = f
        .wait_for(
            &f.configmaps(),
            "kube-root-ca.crt",
            "kube-root-ca.crt",
            |_| Ok(()),
        )
        .await?
        .data
        .unwrap_or_default()
        .remove("ca.crt")
        .unwrap_or_default();
    ensure!(root.contains("BEGIN CERTIFICATE"), "{root}");
    let settings = Settings {
        cluster_ca_pem: root.clone(),
        ..f.settings()
    };
    let _op = f.operator_with(settings).await?;
    let published = f.published_bundle().await?;
    let legacy = json!({ INJECT_VULNERABLE_LEGACY_CABUNDLE: "true" });
    // Under another name the annotation asks for nothing.
    create_configmap(
        &f,
        json!({ "metadata": { "name": "elsewhere", "annotations": legacy }, "data": { "keep": "me" } }),
    )
    .await?;
    create_configmap(
        &f,
        json!({ "metadata": { "name": LEGACY_CABUNDLE_CONFIGMAP, "annotations": legacy } }),
    )
    .await?;
    let injected = f.wait_injected(LEGACY_CABUNDLE_CONFIGMAP, None).await?;
    ensure!(
        injected == format!("{published}{root}\n"),
        "the legacy bundle is the CA bundle, the cluster's CA and a newline"
    );
    // The queue is FIFO and `elsewhere` came first: its reconcile has started by now.
    let elsewhere = f.configmaps().get("elsewhere").await?;
    ensure!(
        elsewhere
            .data
            .unwrap_or_default()
            .keys()
            .collect::<Vec<_>>()
            == ["keep"],
        "only openshift-service-ca.crt gets the legacy bundle"
    );

    // With a regular annotation too, the regular bundle wins (the two never fight).
    f.configmaps()
        .patch(
            LEGACY_CABUNDLE_CONFIGMAP,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": { INJECT_CABUNDLE: "true" } } })),
        )
        .await?;
    ensure!(
        f.wait_injected(LEGACY_CABUNDLE_CONFIGMAP, Some(&injected))
            .await?
            == published,
        "the regular annotation wins"
    );

    Ok(())
}

fn ca_bundle(value: &Value, pointer: &str) -> Option<String> {
    let encoded = value.pointer(pointer)?.as_str()?;
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .ok()?;
    String::from_utf8(bytes).ok()
}

async fn wait_field<K>(api: &Api<K>, name: &str, pointer: &str, bundle: &str) -> Result<()>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    wait::until(
        &format!("{name} {pointer} injected"),
        common::TIMEOUT,
        || async {
            let obj = api.get(name).await.map_err(|e| e.to_string())?;
            let value = serde_json::to_value(&obj).map_err(|e| e.to_string())?;
            match ca_bundle(&value, pointer) {
                Some(b) if b == bundle => Ok(()),
                other => Err(format!("{:?}", other.map(|b| b.len()))),
            }
        },
    )
    .await?;
    Ok(())
}

async fn field<K>(api: &Api<K>, name: &str, pointer: &str) -> Result<Option<Value>>
where
    K: kube::Resource + Clone + serde::de::DeserializeOwned + serde::Serialize + std::fmt::Debug,
{
    let value = serde_json::to_value(api.get(name).await?)?;
    Ok(value.pointer(pointer).cloned())
}

fn crd(
    group: &str,
    annotations: Value,
    webhook: bool,
    ns: &str,
) -> Result<CustomResourceDefinition> {
    let schema = json!({ "openAPIV3Schema": { "type": "object", "x-kubernetes-preserve-unknown-fields": true } });
    let conversion = if webhook {
        json!({ "strategy": "Webhook", "webhook": {
            "conversionReviewVersions": ["v1"],
            "clientConfig": { "service": { "namespace": ns, "name": "converter", "path": "/convert" } },
        }})
    } else {
        json!({ "strategy": "None" })
    };
    Ok(serde_json::from_value(json!({
        "apiVersion": "apiextensions.k8s.io/v1", "kind": "CustomResourceDefinition",
        "metadata": { "name": format!("widgets.{group}"), "annotations": annotations },
        "spec": {
            "group": group, "scope": "Namespaced",
            "names": { "plural": "widgets", "singular": "widget", "kind": "Widget", "listKind": "WidgetList" },
            "versions": [
                { "name": "v1", "served": true, "storage": true, "schema": schema },
                { "name": "v2", "served": true, "storage": false, "schema": schema },
            ],
            "conversion": conversion,
        },
    }))?)
}

fn webhooks(kind: &str, name: &str, annotations: Value, ns: &str) -> Value {
    let hook = |n: &str| {
        json!({
            "name": format!("{n}.{name}.inject.operon.dev"),
            "clientConfig": { "service": { "namespace": ns, "name": "hooks", "path": format!("/{n}") } },
            // Matches nothing the tests create, and never blocks anything.
            "rules": [{ "operations": ["CREATE"], "apiGroups": ["inject.operon.dev"],
                        "apiVersions": ["v1"], "resources": ["nothing"] }],
            "failurePolicy": "Ignore",
            "sideEffects": "None",
            "admissionReviewVersions": ["v1"],
        })
    };
    json!({
        "apiVersion": "admissionregistration.k8s.io/v1", "kind": kind,
        "metadata": { "name": name, "annotations": annotations },
        "webhooks": [hook("first"), hook("second")],
    })
}

/// The only test of this binary that injects into cluster-scoped objects, so no other
/// operator (with another CA) competes for them.
#[tokio::test]
async fn cluster_scoped_kinds_get_the_bundle_where_openshift_injects_it() -> Result<()> {
    let f = Fixture::new("sca-cluster").await?;
    let settings = Settings {
        inject_cluster_scoped: true,
        ..f.settings()
    };
    let _op = f.operator_with(settings).await?;
    let bundle = f.published_bundle().await?;
    let pp = PostParams::default();
    let beta = json!({ INJECT_CABUNDLE: "true" });
    let alpha = json!({ ALPHA_INJECT_CABUNDLE: "true" });
    let suffix = f.ns.clone();

    // APIServices: beta and alpha.
    let apiservices: Api<APIService> = Api::all(f.client.clone());
    let apiservice = |group: &str, annotations: &Value| -> Result<APIService> {
        Ok(serde_json::from_value(json!({
            "apiVersion": "apiregistration.k8s.io/v1", "kind": "APIService",
            "metadata": { "name": format!("v1.{group}"), "annotations": annotations },
            "spec": {
                "group": group, "version": "v1", "groupPriorityMinimum": 1000, "versionPriority": 15,
                "service": { "namespace": f.ns, "name": "api", "port": 443 },
            },
        }))?)
    };
    let beta_group = format!("beta-{suffix}.inject.operon.dev");
    let alpha_group = format!("alpha-{suffix}.inject.operon.dev");
    apiservices
        .create(&pp, &apiservice(&beta_group, &beta)?)
        .await?;
    apiservices
        .create(&pp, &apiservice(&alpha_group, &alpha)?)
        .await?;

    // CRDs: beta with a webhook, beta without, alpha-only with a webhook.
    let crds: Api<CustomResourceDefinition> = Api::all(f.client.clone());
    let hooked = format!("hooked-{suffix}.inject.operon.dev");
    let plain = format!("plain-{suffix}.inject.operon.dev");
    let alpha_crd = format!("alphacrd-{suffix}.inject.operon.dev");
    crds.create(&pp, &crd(&hooked, beta.clone(), true, &f.ns)?)
        .await?;
    crds.create(&pp, &crd(&plain, beta.clone(), false, &f.ns)?)
        .await?;
    crds.create(&pp, &crd(&alpha_crd, alpha.clone(), true, &f.ns)?)
        .await?;

    // Webhook configurations: beta (two webhooks each), alpha-only.
    let mutating: Api<MutatingWebhookConfiguration> = Api::all(f.client.clone());
    let validating: Api<ValidatingWebhookConfiguration> = Api::all(f.client.clone());
    let (m_beta, m_alpha) = (format!("m-beta-{suffix}"), format!("m-alpha-{suffix}"));
    let (v_beta, v_alpha) = (format!("v-beta-{suffix}"), format!("v-alpha-{suffix}"));
    mutating
        .create(
            &pp,
            &serde_json::from_value(webhooks(
                "MutatingWebhookConfiguration",
                &m_beta,
                beta.clone(),
                &f.ns,
            ))?,
        )
        .await?;
    mutating
        .create(
            &pp,
            &serde_json::from_value(webhooks(
                "MutatingWebhookConfiguration",
                &m_alpha,
                alpha.clone(),
                &f.ns,
            ))?,
        )
        .await?;
    validating
        .create(
            &pp,
            &serde_json::from_value(webhooks(
                "ValidatingWebhookConfiguration",
                &v_beta,
                beta.clone(),
                &f.ns,
            ))?,
        )
        .await?;
    validating
        .create(
            &pp,
            &serde_json::from_value(webhooks(
                "ValidatingWebhookConfiguration",
                &v_alpha,
                alpha.clone(),
                &f.ns,
            ))?,
        )
        .await?;

    wait_field(
        &apiservices,
        &format!("v1.{beta_group}"),
        "/spec/caBundle",
        &bundle,
    )
    .await?;
    wait_field(
        &apiservices,
        &format!("v1.{alpha_group}"),
        "/spec/caBundle",
        &bundle,
    )
    .await?;
    let crd_bundle = "/spec/conversion/webhook/clientConfig/caBundle";
    wait_field(&crds, &format!("widgets.{hooked}"), crd_bundle, &bundle).await?;
    for i in 0..2 {
        let pointer = format!("/webhooks/{i}/clientConfig/caBundle");
        wait_field(&mutating, &m_beta, &pointer, &bundle).await?;
        wait_field(&validating, &v_beta, &pointer, &bundle).await?;
    }
    // Where OpenShift doesn't inject, nothing is written.
    ensure!(
        field(
            &crds,
            &format!("widgets.{plain}"),
            "/spec/conversion/webhook"
        )
        .await?
        .is_none(),
        "a CRD without a conversion webhook got one"
    );
    ensure!(
        field(&crds, &format!("widgets.{alpha_crd}"), crd_bundle)
            .await?
            .is_none(),
        "the alpha annotation is not honoured on CRDs"
    );
    for i in 0..2 {
        let pointer = format!("/webhooks/{i}/clientConfig/caBundle");
        ensure!(
            field(&mutating, &m_alpha, &pointer).await?.is_none(),
            "alpha on mutating"
        );
        ensure!(
            field(&validating, &v_alpha, &pointer).await?.is_none(),
            "alpha on validating"
        );
    }

    // Unreachable APIServices would break discovery for the rest of this control plane.
    let dp = DeleteParams::default();
    for name in [format!("v1.{beta_group}"), format!("v1.{alpha_group}")] {
        apiservices.delete(&name, &dp).await?;
    }
    for name in [hooked, plain, alpha_crd] {
        crds.delete(&format!("widgets.{name}"), &dp).await?;
    }
    mutating.delete(&m_beta, &dp).await?;
    mutating.delete(&m_alpha, &dp).await?;
    validating.delete(&v_beta, &dp).await?;
    validating.delete(&v_alpha, &dp).await?;
    Ok(())
}
