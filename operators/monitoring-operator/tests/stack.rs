//! monitoring-operator against the real apiserver (and kube-controller-manager), as its own
//! ServiceAccount with its generated RBAC: it installs the Prometheus Operator's CRDs (from the
//! pinned release) and the stack; a configuration change reaches the objects; an invalid one is
//! reported naming the key while the stack keeps the last good one; a deleted or edited child
//! is restored; an object of a child's name that it doesn't own is left alone and reported.
//!
//! One test: the stack lives in the one namespace `openshift-monitoring`.

use std::collections::BTreeMap;

use anyhow::{Context as _, Result, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::{ConfigMap, ServiceAccount};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{Api, DeleteParams, ObjectMeta, Patch, PatchParams, PostParams};
use kube::{CustomResourceExt, ResourceExt};
use monitoring_operator::api::ClusterOperator;
use monitoring_operator::config::{CONFIG_KEY, CONFIG_MAP};
use monitoring_operator::controller::{self, CLUSTER_OPERATOR, Settings};
use monitoring_operator::resources::{Prometheus, ServiceMonitor};
use monitoring_operator::stack::MANAGED_BY;
use operon_harness::{Fixture, InProcess};
use operon_runtime::manager::Manager;
use operon_runtime::metrics::Metrics;
use serde_json::json;

const NS: &str = monitoring_operator::deploy::NAMESPACE;

fn condition(co: &ClusterOperator, type_: &str) -> Option<(String, String, String)> {
    let c = co.status.as_ref()?.condition(type_)?;
    Some((
        c.status.clone(),
        c.reason.clone().unwrap_or_default(),
        c.message.clone().unwrap_or_default(),
    ))
}

fn config_map(text: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(CONFIG_MAP.into()),
            namespace: Some(NS.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(CONFIG_KEY.into(), text.into())])),
        ..Default::default()
    }
}

#[tokio::test]
async fn installs_configures_and_keeps_the_stack() -> Result<()> {
    let f = Fixture::new("monitoring").await?;
    let client = f.client.clone();
    operon_cluster::apply::apply_crd(&client, &ClusterOperator::crd(), "tests").await?;
    let manifests = monitoring_operator::deploy::manifests("test")?;
    operon_cluster::apply::apply(&client, &manifests.namespace_object(), "tests").await?;

    // An object with a child's name that isn't the operator's, there before it starts.
    let accounts: Api<ServiceAccount> = Api::namespaced(client.clone(), NS);
    let foreign = accounts
        .create(
            &PostParams::default(),
            &ServiceAccount {
                metadata: ObjectMeta {
                    name: Some("node-exporter".into()),
                    ..Default::default()
                },
                ..Default::default()
            },
        )
        .await?;

    let crds_dir = operon_assets::prometheus_operator_crd_dir();
    ensure!(
        crds_dir.is_dir(),
        "{} missing: `cargo xtask k8s build` copies the CRDs there",
        crds_dir.display()
    );
    let settings = Settings {
        crds_dir,
        ..Settings::default()
    };
    let registry = Metrics::new();
    let operator = InProcess::start(f.env, &manifests, Vec::new(), (), |client, stop| {
        let mut manager = Manager::new("monitoring-operator", client)
            .instance(Some("test".into()))
            .metrics(registry)
            .stop(stop);
        let registered = controller::register(&mut manager, &settings);
        async move {
            registered.map_err(|e| e.to_string())?;
            manager.run().await;
            Ok::<(), String>(())
        }
    })
    .await?;

    // The CRDs, and the stack owned by the ClusterOperator.
    let crds: Api<CustomResourceDefinition> = Api::all(client.clone());
    for name in [
        "prometheuses.monitoring.coreos.com",
        "servicemonitors.monitoring.coreos.com",
        "prometheusrules.monitoring.coreos.com",
        "alertmanagers.monitoring.coreos.com",
    ] {
        f.wait_for(&crds, name, "the CRD installed", |crd| {
            match crd.labels().get(MANAGED_BY.0).map(String::as_str) {
                Some(v) if v == MANAGED_BY.1 => Ok(()),
                other => Err(format!("label {other:?}")),
            }
        })
        .await?;
    }
    let operators: Api<ClusterOperator> = Api::all(client.clone());
    let co = f
        .wait_for(
            &operators,
            CLUSTER_OPERATOR,
            "ClusterOperator monitoring",
            |_| Ok(()),
        )
        .await?;
    let uid = co.uid().context("no uid")?;
    let owned_by_co = |meta: &ObjectMeta| -> Result<(), String> {
        let owner = meta
            .owner_references
            .iter()
            .flatten()
            .find(|r| r.controller == Some(true));
        match owner {
            Some(r) if r.uid == uid && r.kind == "ClusterOperator" => Ok(()),
            other => Err(format!("controller {other:?}")),
        }
    };
    let deployments: Api<Deployment> = Api::namespaced(client.clone(), NS);
    let po = f
        .wait_for(
            &deployments,
            "prometheus-operator",
            "the Prometheus Operator",
            |d| owned_by_co(&d.metadata),
        )
        .await?;
    let image = po
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .and_then(|s| s.containers.first())
        .and_then(|c| c.image.clone());
    ensure!(
        image.as_deref() == Some(operon_assets::PROMETHEUS_OPERATOR_IMAGE),
        "{image:?}"
    );
    let prometheuses: Api<Prometheus> = Api::namespaced(client.clone(), NS);
    f.wait_for(&prometheuses, "k8s", "Prometheus k8s, 2 replicas", |p| {
        owned_by_co(&p.metadata)?;
        (p.spec["replicas"] == 2 && p.spec["retention"] == "15d")
            .then_some(())
            .ok_or_else(|| format!("{}", p.spec))
    })
    .await?;
    let monitors: Api<ServiceMonitor> = Api::namespaced(client.clone(), NS);
    f.wait_for(
        &monitors,
        "pod-operator-metrics-monitor",
        "pod-operator's ServiceMonitor",
        |m| owned_by_co(&m.metadata),
    )
    .await?;

    // The foreign ServiceAccount: reported, untouched.
    f.wait_for(
        &operators,
        CLUSTER_OPERATOR,
        "Degraded: ForeignObjects",
        |co| match condition(co, "Degraded") {
            Some((s, r, m))
                if s == "True" && r == "ForeignObjects" && m.contains("node-exporter") =>
            {
                Ok(())
            }
            other => Err(format!("{other:?}")),
        },
    )
    .await?;
    f.wait_event(
        "default",
        "ClusterOperator",
        CLUSTER_OPERATOR,
        "ForeignObjects",
        "node-exporter",
    )
    .await?;
    let still = accounts.get("node-exporter").await?;
    ensure!(
        still.resource_version() == foreign.resource_version()
            && still.owner_references().is_empty(),
        "the foreign ServiceAccount was changed: {still:?}"
    );
    // Once it is gone, the operator makes its own and is no longer degraded.
    accounts
        .delete("node-exporter", &DeleteParams::default())
        .await?;
    f.wait_for(
        &accounts,
        "node-exporter",
        "the operator's own node-exporter account",
        |sa| owned_by_co(&sa.metadata),
    )
    .await?;
    f.wait_for(
        &operators,
        CLUSTER_OPERATOR,
        "Degraded=False",
        |co| match condition(co, "Degraded") {
            Some((s, _, _)) if s == "False" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await?;

    // A configuration change rolls out.
    let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), NS);
    config_maps
        .create(
            &PostParams::default(),
            &config_map("prometheusK8s:\n  retention: 2d\n  replicas: 1\n"),
        )
        .await?;
    f.wait_for(&prometheuses, "k8s", "retention 2d, 1 replica", |p| {
        (p.spec["replicas"] == 1 && p.spec["retention"] == "2d")
            .then_some(())
            .ok_or_else(|| format!("{}", p.spec))
    })
    .await?;

    // Invalid ones are reported by key; the stack keeps the last good configuration.
    for (text, key) in [
        (
            "prometheusK8s:\n  retention: soon\n  replicas: 3\n",
            "prometheusK8s.retention",
        ),
        (
            "prometheusK8s:\n  retension: 3d\n",
            "prometheusK8s.retension",
        ),
    ] {
        config_maps
            .replace(CONFIG_MAP, &PostParams::default(), &config_map(text))
            .await?;
        f.wait_for(
            &operators,
            CLUSTER_OPERATOR,
            "Degraded naming the key",
            |co| match condition(co, "Degraded") {
                Some((s, r, m))
                    if s == "True" && r == "InvalidConfiguration" && m.contains(key) =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            },
        )
        .await?;
        f.wait_event(
            "default",
            "ClusterOperator",
            CLUSTER_OPERATOR,
            "InvalidConfiguration",
            key,
        )
        .await?;
        let p = prometheuses.get("k8s").await?;
        ensure!(
            p.spec["replicas"] == 1 && p.spec["retention"] == "2d",
            "the stack left its last good configuration: {}",
            p.spec
        );
    }
    config_maps
        .replace(
            CONFIG_MAP,
            &PostParams::default(),
            &config_map("prometheusK8s:\n  retention: 3d\n  replicas: 1\n"),
        )
        .await?;
    f.wait_for(&prometheuses, "k8s", "retention 3d", |p| {
        (p.spec["retention"] == "3d")
            .then_some(())
            .ok_or_else(|| format!("{}", p.spec))
    })
    .await?;
    f.wait_for(
        &operators,
        CLUSTER_OPERATOR,
        "Degraded=False again",
        |co| match condition(co, "Degraded") {
            Some((s, _, _)) if s == "False" => Ok(()),
            other => Err(format!("{other:?}")),
        },
    )
    .await?;

    // A deleted child comes back; an edited one is restored.
    let old_uid = deployments.get("prometheus-operator").await?.uid();
    deployments
        .delete("prometheus-operator", &DeleteParams::default())
        .await?;
    f.wait_for(
        &deployments,
        "prometheus-operator",
        "a new Prometheus Operator",
        |d| {
            (d.uid() != old_uid)
                .then_some(())
                .ok_or_else(|| "still the old one".to_string())
        },
    )
    .await?;
    monitors
        .patch(
            "kube-state-metrics",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": { "endpoints": [{ "port": "elsewhere" }] } })),
        )
        .await?;
    f.wait_for(
        &monitors,
        "kube-state-metrics",
        "the ServiceMonitor restored",
        |m| {
            (m.spec["endpoints"][0]["port"] == "http-metrics")
                .then_some(())
                .ok_or_else(|| format!("{}", m.spec))
        },
    )
    .await?;

    ensure!(operator.is_alive(), "the operator stopped");
    operator.stop().await?;
    // The stack goes with its owner (the CRDs stay: they hold users' objects too).
    operators
        .delete(CLUSTER_OPERATOR, &DeleteParams::foreground())
        .await?;
    f.wait_gone(&deployments, "prometheus-operator", "the stack removed")
        .await?;
    ensure!(
        crds.get_opt("prometheusrules.monitoring.coreos.com")
            .await?
            .is_some(),
        "a CRD was deleted with the stack"
    );
    Ok(())
}
