//! No privilege escalation through monitoring-operator: writing `cluster-monitoring-config`
//! makes the operator change the Prometheus it runs, so the generated ValidatingAdmissionPolicy
//! lets only users who may update Prometheus objects in that namespace write it (impersonated
//! users on the real apiserver). Other ConfigMaps are not concerned.

use std::collections::BTreeMap;

use anyhow::{Result, ensure};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{ObjectMeta, PostParams};
use monitoring_operator::config::{CONFIG_KEY, CONFIG_MAP};
use operon_harness::{Delegation, Fixture};
use serde_json::json;

fn config_map(name: &str) -> ConfigMap {
    ConfigMap {
        metadata: ObjectMeta {
            name: Some(name.into()),
            ..Default::default()
        },
        data: Some(BTreeMap::from([(
            CONFIG_KEY.into(),
            "prometheusK8s:\n  retention: 1d\n".into(),
        )])),
        ..Default::default()
    }
}

#[tokio::test]
async fn only_users_who_may_update_prometheuses_may_configure_the_stack() -> Result<()> {
    let f = Fixture::new("escalation").await?;
    let users = Delegation {
        policy: monitoring_operator::deploy::admission().objects(&json!({})),
        resource_rule: json!({
            "apiGroups": [""], "resources": ["configmaps"],
            "verbs": ["create", "get", "update", "patch", "delete"],
        }),
        delegated_rule: json!({
            "apiGroups": ["monitoring.coreos.com"], "resources": ["prometheuses"],
            "verbs": ["update"],
        }),
        denial: "eve may not update prometheuses in namespace".into(),
    }
    .check(&f, &config_map(CONFIG_MAP), &config_map(CONFIG_MAP))
    .await?;
    // Any other ConfigMap: eve may write it.
    let other = users
        .eve
        .create(&PostParams::default(), &config_map("unrelated"))
        .await;
    ensure!(
        other.is_ok(),
        "eve's unrelated ConfigMap was refused: {other:?}"
    );
    Ok(())
}
