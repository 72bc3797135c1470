//! No privilege escalation through service-ca-operator: the generated ValidatingAdmissionPolicy
//! lets only users who may create the named Secret add or change the serving-cert annotation.

mod common;

use anyhow::{Result, bail, ensure};
use common::Fixture;
use k8s_openapi::api::core::v1::Service;
use kube::api::{Api, PostParams};
use operon_envtest::apply::apply;
use operon_envtest::grant;
use operon_envtest::wait;
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
    for obj in service_ca_operator::deploy::admission().objects(&json!({})) {
        apply(&f.client, &obj, common::MANAGER).await?;
    }
    let services = json!({
        "apiGroups": [""], "resources": ["services"], "verbs": ["create", "get", "update", "patch"],
    });
    let secrets = json!({ "apiGroups": [""], "resources": ["secrets"], "verbs": ["create"] });
    grant(&f.client, &f.ns, "eve", "services-only", json!([services])).await?;
    grant(
        &f.client,
        &f.ns,
        "alice",
        "services-and-secrets",
        json!([services, secrets]),
    )
    .await?;
    let eve: Api<Service> = Api::namespaced(
        f.env
            .impersonating("eve", &["system:authenticated"])
            .await?,
        &f.ns,
    );
    let alice: Api<Service> = Api::namespaced(
        f.env
            .impersonating("alice", &["system:authenticated"])
            .await?,
        &f.ns,
    );

    let annotated = service("eves", Some("eves-tls"))?;
    let message = wait::until("the policy denying eve", common::TIMEOUT, || async {
        match eve.create(&PostParams::default(), &annotated).await {
            Err(kube::Error::Api(s))
                if s.code == 403 && s.message.contains("ValidatingAdmissionPolicy") =>
            {
                Ok(s.message)
            }
            Err(e) => Err(e.to_string()),
            Ok(_) => {
                let _ = f.services().delete("eves", &Default::default()).await;
                Err("created".to_string())
            }
        }
    })
    .await?;
    ensure!(
        message.contains("write Secret eves-tls, and eve may not create it"),
        "the denial must say why: {message}"
    );
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
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => bail!("adding the annotation must be denied: {other:?}"),
    }
    if let Err(e) = alice
        .create(
            &PostParams::default(),
            &service("alices", Some("alices-tls"))?,
        )
        .await
    {
        bail!("alice may create Secrets, so her Service must be accepted: {e}");
    }
    Ok(())
}
