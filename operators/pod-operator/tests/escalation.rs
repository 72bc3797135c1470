//! No privilege escalation through pod-operator: the generated ValidatingAdmissionPolicy lets
//! only users who may create Pods create PodRequests (impersonated users on the real apiserver).

mod common;

use anyhow::{Result, bail, ensure};
use common::Fixture;
use kube::api::{Api, PostParams};
use operon_envtest::apply::apply;
use operon_envtest::grant;
use operon_envtest::wait;
use pod_operator::api::PodRequest;
use serde_json::json;

#[tokio::test]
async fn only_users_who_may_create_pods_may_create_podrequests() -> Result<()> {
    let f = Fixture::new("escalation").await?;
    for obj in pod_operator::deploy::admission().objects(&json!({})) {
        apply(&f.client, &obj, "pod-operator-tests").await?;
    }
    let podrequests = json!({
        "apiGroups": ["pod.jewzaam.org"], "resources": ["podrequests"],
        "verbs": ["create", "get", "update", "patch", "delete"],
    });
    let pods = json!({ "apiGroups": [""], "resources": ["pods"], "verbs": ["create"] });
    grant(
        &f.client,
        &f.ns,
        "eve",
        "podrequests-only",
        json!([podrequests]),
    )
    .await?;
    grant(
        &f.client,
        &f.ns,
        "alice",
        "podrequests-and-pods",
        json!([podrequests, pods]),
    )
    .await?;
    let eve: Api<PodRequest> = Api::namespaced(
        f.env
            .impersonating("eve", &["system:authenticated"])
            .await?,
        &f.ns,
    );
    let alice: Api<PodRequest> = Api::namespaced(
        f.env
            .impersonating("alice", &["system:authenticated"])
            .await?,
        &f.ns,
    );

    let mut sample = f.sample()?;
    sample.metadata.name = Some("eves".into());
    let message = wait::until("the policy denying eve", common::TIMEOUT, || async {
        match eve.create(&PostParams::default(), &sample).await {
            Err(kube::Error::Api(s))
                if s.code == 403 && s.message.contains("ValidatingAdmissionPolicy") =>
            {
                Ok(s.message)
            }
            Err(e) => Err(e.to_string()),
            Ok(_) => {
                // Not enforced yet (the policy compiles asynchronously): undo, try again.
                let _ = eve.delete("eves", &Default::default()).await;
                Err("created".to_string())
            }
        }
    })
    .await?;
    ensure!(
        message.contains("eve may not create pods in namespace"),
        "the denial must say why: {message}"
    );
    let mut allowed = f.sample()?;
    allowed.metadata.name = Some("alices".into());
    if let Err(e) = alice.create(&PostParams::default(), &allowed).await {
        bail!("alice may create Pods, so her PodRequest must be accepted: {e}");
    }
    Ok(())
}
