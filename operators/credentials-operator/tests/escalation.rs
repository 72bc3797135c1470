//! No privilege escalation through credentials-operator: the generated ValidatingAdmissionPolicy
//! lets only users who may create the target Secret create a CredentialsRequest; and its
//! ServiceAccount can do exactly what is declared.

mod common;

use anyhow::{Result, bail};
use common::Fixture;
use kube::api::PostParams;
use operon_envtest::grant;
use operon_harness::{Delegation, audit_rbac};
use serde_json::json;

#[tokio::test]
async fn only_users_who_may_write_the_secret_may_request_credentials() -> Result<()> {
    let f = Fixture::new("cred-escalation").await?;
    let requests = json!({
        "apiGroups": ["cloudcredential.openshift.io"], "resources": ["credentialsrequests"],
        "verbs": ["create", "get", "delete"],
    });
    let secrets = json!({ "apiGroups": [""], "resources": ["secrets"], "verbs": ["create"] });
    let users = Delegation {
        policy: credentials_operator::deploy::admission().objects(&json!({})),
        resource_rule: requests.clone(),
        delegated_rule: secrets.clone(),
        denial: format!(
            "write Secret {}/eves-creds, and eve may not create it",
            f.ns
        ),
    }
    .check(
        &f,
        &f.sample("eves", "eves-creds", None)?,
        &f.sample("alices", "alices-creds", None)?,
    )
    .await?;
    // Even with Secret rights in her own namespace, eve can't aim at another namespace.
    let own = json!([requests, secrets]);
    grant(&f.client, &f.ns, "eve", "requests-and-own-secrets", own).await?;
    let elsewhere = f.sample("elsewhere", "stolen", Some("kube-system"))?;
    match users.eve.create(&PostParams::default(), &elsewhere).await {
        Err(kube::Error::Api(s)) if s.code == 403 => Ok(()),
        other => bail!("a request for a Secret in kube-system must be denied: {other:?}"),
    }
}

#[tokio::test]
async fn the_service_account_can_do_exactly_what_is_declared() -> Result<()> {
    let f = Fixture::new("cred-canimatrix").await?;
    let manifests = credentials_operator::deploy::manifests("test")?;
    let namespaces = [f.ns.as_str(), common::OPERATOR_NAMESPACE, "kube-system"];
    Ok(audit_rbac(&f, &manifests, Vec::new(), &namespaces).await?)
}
