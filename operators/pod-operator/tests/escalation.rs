//! No privilege escalation through pod-operator: the generated ValidatingAdmissionPolicy lets
//! only users who may create Pods create PodRequests (impersonated users on the real apiserver).

mod common;

use anyhow::Result;
use common::Fixture;
use operon_harness::Delegation;
use serde_json::json;

#[tokio::test]
async fn only_users_who_may_create_pods_may_create_podrequests() -> Result<()> {
    let f = Fixture::new("escalation").await?;
    let (mut eves, mut alices) = (f.sample()?, f.sample()?);
    eves.metadata.name = Some("eves".into());
    alices.metadata.name = Some("alices".into());
    Delegation {
        policy: pod_operator::deploy::admission().objects(&json!({})),
        resource_rule: json!({
            "apiGroups": ["pod.jewzaam.org"], "resources": ["podrequests"],
            "verbs": ["create", "get", "update", "patch", "delete"],
        }),
        delegated_rule: json!({ "apiGroups": [""], "resources": ["pods"], "verbs": ["create"] }),
        denial: "eve may not create pods in namespace".into(),
    }
    .check(&f, &eves, &alices)
    .await?;
    Ok(())
}
