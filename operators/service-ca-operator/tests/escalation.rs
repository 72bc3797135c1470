//! No privilege escalation through service-ca-operator: the generated ValidatingAdmissionPolicy
//! lets only users who may create the named Secret add or change the serving-cert annotation.

mod common;

use anyhow::{Result, bail};
use common::Fixture;
use k8s_openapi::api::core::v1::Service;
use kube::api::PostParams;
use operon_harness::Delegation;
use serde_json::json;

fn service(name: &str, secret: Option<&str>) -> Result<Service> {
    let mut body = json!({
        "apiVersion": "v1", "kind": "Service",
        "metadata": { "name": name },
        "spec": { "ports": [{ "port": 443 }] },
    });
    if let Some(secret) = secret {
        body["metadata"]["annotations"] =
            json!({ service_ca_operator::SERVING_CERT_SECRET_NAME: secret });
    }
    Ok(serde_json::from_value(body)?)
}

#[tokio::test]
async fn only_users_who_may_create_the_secret_may_request_a_certificate() -> Result<()> {
    let f = Fixture::new("sca-escalation").await?;
    let users = Delegation {
        policy: service_ca_operator::deploy::admission().objects(&json!({})),
        resource_rule: json!({
            "apiGroups": [""], "resources": ["services"],
            "verbs": ["create", "get", "update", "patch", "delete"],
        }),
        delegated_rule: json!({ "apiGroups": [""], "resources": ["secrets"], "verbs": ["create"] }),
        denial: "write Secret eves-tls, and eve may not create it".into(),
    }
    .check(
        &f,
        &service("eves", Some("eves-tls"))?,
        &service("alices", Some("alices-tls"))?,
    )
    .await?;
    let eve = users.eve;
    // Services without the annotation are none of the policy's business...
    eve.create(&PostParams::default(), &service("plain", None)?)
        .await?;
    // ...but adding it later is checked too (alpha form included).
    let mut plain = eve.get("plain").await?;
    plain.metadata.annotations = Some(
        [(
            service_ca_operator::ALPHA_SERVING_CERT_SECRET_NAME.to_string(),
            "later-tls".to_string(),
        )]
        .into(),
    );
    match eve.replace("plain", &PostParams::default(), &plain).await {
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
        other => bail!("adding the annotation must be denied: {other:?}"),
    }
}
