//! No privilege escalation through credentials-operator: the generated ValidatingAdmissionPolicy
//! lets only users who may create the target Secret create a CredentialsRequest.

mod common;

use anyhow::{Result, bail, ensure};
use common::Fixture;
use credentials_operator::api::CredentialsRequest;
use kube::api::{Api, PostParams};
use operon_envtest::apply::apply;
use operon_envtest::grant;
use operon_envtest::wait;
use serde_json::json;

#[tokio::test]
async fn only_users_who_may_write_the_secret_may_request_credentials() -> Result<()> {
    let f = Fixture::new("cred-escalation").await?;
    for obj in credentials_operator::deploy::admission().objects(&json!({})) {
        apply(&f.client, &obj, common::MANAGER).await?;
    }
    let requests = json!({
        "apiGroups": ["cloudcredential.openshift.io"], "resources": ["credentialsrequests"],
        "verbs": ["create", "get", "delete"],
    });
    let secrets = json!({ "apiGroups": [""], "resources": ["secrets"], "verbs": ["create"] });
    grant(&f.client, &f.ns, "eve", "requests-only", json!([requests])).await?;
    grant(
        &f.client,
        &f.ns,
        "alice",
        "requests-and-secrets",
        json!([requests, secrets]),
    )
    .await?;
    let eve: Api<CredentialsRequest> = Api::namespaced(
        f.env
            .impersonating("eve", &["system:authenticated"])
            .await?,
        &f.ns,
    );
    let alice: Api<CredentialsRequest> = Api::namespaced(
        f.env
            .impersonating("alice", &["system:authenticated"])
            .await?,
        &f.ns,
    );

    let request = f.sample("eves", "eves-creds", None)?;
    let message = wait::until("the policy denying eve", common::TIMEOUT, || async {
        match eve.create(&PostParams::default(), &request).await {
            Err(kube::Error::Api(s))
                if s.code == 403 && s.message.contains("ValidatingAdmissionPolicy") =>
            {
                Ok(s.message)
            }
            Err(e) => Err(e.to_string()),
            Ok(_) => {
                let _ = eve.delete("eves", &Default::default()).await;
                Err("created".to_string())
            }
        }
    })
    .await?;
    ensure!(
        message.contains(&format!(
            "write Secret {}/eves-creds, and eve may not create it",
            f.ns
        )),
        "the denial must say why: {message}"
    );
    // Even with Secret rights in her own namespace, eve can't aim at another namespace.
    grant(
        &f.client,
        &f.ns,
        "eve",
        "requests-and-own-secrets",
        json!([requests, secrets]),
    )
    .await?;
    let elsewhere = f.sample("elsewhere", "stolen", Some("kube-system"))?;
    match eve.create(&PostParams::default(), &elsewhere).await {
        Err(kube::Error::Api(s)) if s.code == 403 => {}
        other => bail!("a request for a Secret in kube-system must be denied: {other:?}"),
    }
    if let Err(e) = alice
        .create(
            &PostParams::default(),
            &f.sample("alices", "alices-creds", None)?,
        )
        .await
    {
        bail!("alice may create the Secret, so her request must be accepted: {e}");
    }
    Ok(())
}

#[tokio::test]
async fn the_service_account_can_do_exactly_what_is_declared() -> Result<()> {
    let f = Fixture::new("cred-canimatrix").await?;
    common::install_rbac(&f.client).await?;
    let sa = f
        .env
        .service_account_client(common::OPERATOR_NAMESPACE, common::OPERATOR_SERVICE_ACCOUNT)
        .await?;
    let manifests = credentials_operator::deploy::manifests("test")?;
    let (mismatches, asked) = operon_manifests::audit::rbac_matrix(
        &sa,
        &manifests,
        &[&f.ns, common::OPERATOR_NAMESPACE, "kube-system"],
    )
    .await?;
    ensure!(asked > 150, "only {asked} questions");
    let report: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
    ensure!(mismatches.is_empty(), "{report:#?}");
    Ok(())
}
