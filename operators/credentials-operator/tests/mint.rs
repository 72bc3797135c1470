//! Mint mode on the real control plane and a real IAM emulator (moto): the talk's request,
//! repair of lost Secrets and keys, policy changes, a missing target namespace, deletion (also
//! with the emulator down), crash safety, foreign Secrets and other clouds.

mod common;

use std::time::Duration;

use anyhow::{Result, ensure};
use common::{CLUSTER_ID, Fixture, condition, data};
use credentials_operator::api::{Effect, StatementEntry, condition as cond};
use credentials_operator::mint::{self, ACCESS_KEY_ID, CREDENTIALS, SECRET_ACCESS_KEY};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use operon_cluster::wait;
use serde_json::{Value, json};

#[tokio::test]
async fn the_talks_request_mints_a_least_privilege_user() -> Result<()> {
    let f = Fixture::new("cred-mint").await?;
    let _op = f.operator().await?;
    let cr = f.sample(
        "aws-creds-to-describe-all-instances",
        "secret-to-store-credentials",
        None,
    )?;
    f.create(&cr).await?;
    let cr = f
        .wait_provisioned("aws-creds-to-describe-all-instances")
        .await?;

    // Finalizer and names in status.
    ensure!(
        cr.finalizers().iter().any(|x| x == mint::FINALIZER),
        "{:?}",
        cr.finalizers()
    );
    let provider = cr
        .status
        .clone()
        .unwrap_or_default()
        .provider_status
        .unwrap_or_default();
    let prefix = format!("{}-aws-creds-to-describe-all-instances-", &CLUSTER_ID[..20]);
    ensure!(
        provider.user.starts_with(&prefix) && provider.user.len() == prefix.len() + 5,
        "user {}",
        provider.user
    );
    ensure!(
        provider.policy == format!("{}-policy", provider.user),
        "{}",
        provider.policy
    );
    ensure!(
        provider.kind.as_deref() == Some("AWSProviderStatus"),
        "{provider:?}"
    );

    // IAM: the user, its tag, exactly the requested policy plus GetUser on itself, one key.
    let iam = f.iam().await;
    ensure!(
        f.iam_users().await? == [provider.user.clone()],
        "users {:?}",
        f.iam_users().await?
    );
    let arn = iam.user_arn(&provider.user).await?.unwrap_or_default();
    let tags = iam
        .sdk()
        .list_user_tags()
        .user_name(&provider.user)
        .send()
        .await?;
    let tag = format!("kubernetes.io/cluster/{CLUSTER_ID}");
    ensure!(
        tags.tags()
            .iter()
            .any(|t| t.key() == tag && t.value() == "owned"),
        "tags {:?}",
        tags.tags()
    );
    let policy = iam
        .user_policy(&provider.user, &provider.policy)
        .await?
        .unwrap_or_default();
    let policy: Value = serde_json::from_str(&policy)?;
    ensure!(
        policy
            == json!({
                "Version": "2012-10-17",
                "Statement": [
                    { "Effect": "Allow", "Action": ["ec2:DescribeInstances"], "Resource": "*" },
                    { "Effect": "Allow", "Action": ["iam:GetUser"], "Resource": arn },
                ],
            }),
        "policy {policy}"
    );
    let keys = iam.list_access_keys(&provider.user).await?;
    ensure!(keys.len() == 1, "{} keys", keys.len());

    // The Secret: three keys, label and annotation, the key that IAM knows.
    let secret = f.secrets().get("secret-to-store-credentials").await?;
    ensure!(secret.type_.as_deref() == Some("Opaque"));
    let (id, key) = (
        data(&secret, ACCESS_KEY_ID)?,
        data(&secret, SECRET_ACCESS_KEY)?,
    );
    ensure!(
        id == keys[0].id,
        "Secret key {id} != IAM key {}",
        keys[0].id
    );
    ensure!(
        data(&secret, CREDENTIALS)?
            == format!("[default]\naws_access_key_id = {id}\naws_secret_access_key = {key}\n")
    );
    ensure!(secret.labels().get(mint::SECRET_LABEL).map(String::as_str) == Some("true"));
    ensure!(
        secret.annotations().get(mint::SECRET_ANNOTATION)
            == Some(&format!("{}/aws-creds-to-describe-all-instances", f.ns))
    );
    // The credentials authenticate as the minted user.
    let minted = f.iam_as(&id, &key).await;
    ensure!(
        minted.whoami().await? == provider.user,
        "GetUser with the minted key"
    );
    f.wait_event("aws-creds-to-describe-all-instances", "CredentialsMinted")
        .await?;
    Ok(())
}

#[tokio::test]
async fn lost_secrets_lost_keys_and_spec_changes_are_repaired() -> Result<()> {
    let f = Fixture::new("cred-repair").await?;
    // A short re-sync period, so that a key deleted behind the operator's back is noticed.
    let settings = credentials_operator::controller::Settings {
        resync_period: Duration::from_secs(2),
        ..f.settings()
    };
    let _op = f.operator_with(settings).await?;
    f.create(&f.sample("app", "app-creds", None)?).await?;
    let cr = f.wait_provisioned("app").await?;
    let user = cr.minted_user().unwrap_or_default().to_owned();
    let iam = f.iam().await;
    let first = data(&f.secrets().get("app-creds").await?, ACCESS_KEY_ID)?;

    // Secret deleted → recreated with a new key; the old key is gone.
    f.secrets()
        .delete("app-creds", &DeleteParams::default())
        .await?;
    let second = wait::until("a new Secret with a new key", common::TIMEOUT, || async {
        let s = f
            .secrets()
            .get_opt("app-creds")
            .await
            .map_err(|e| e.to_string())?;
        let id = s
            .as_ref()
            .and_then(mint::secret_key_id)
            .ok_or("no Secret yet")?;
        if id != first {
            Ok(id)
        } else {
            Err("same key".into())
        }
    })
    .await?;
    let keys: Vec<String> = iam
        .list_access_keys(&user)
        .await?
        .into_iter()
        .map(|k| k.id)
        .collect();
    ensure!(keys == [second.clone()], "keys {keys:?}");

    // Key deleted in IAM → a new key in the Secret.
    iam.delete_access_key(&user, &second).await?;
    let third = wait::until(
        "a key replacing the deleted one",
        common::TIMEOUT,
        || async {
            let s = f
                .secrets()
                .get("app-creds")
                .await
                .map_err(|e| e.to_string())?;
            let id = mint::secret_key_id(&s).ok_or("no key")?;
            if id != second {
                Ok(id)
            } else {
                Err("still the deleted key".into())
            }
        },
    )
    .await?;
    let keys: Vec<String> = iam
        .list_access_keys(&user)
        .await?
        .into_iter()
        .map(|k| k.id)
        .collect();
    ensure!(keys == [third.clone()], "keys {keys:?}");

    // Spec change → policy re-put, lastSyncGeneration follows, key kept.
    let mut cr = f.requests().get("app").await?;
    cr.spec.provider_spec.statement_entries = Some(vec![StatementEntry {
        effect: Effect::Allow,
        action: vec!["s3:GetObject".into(), "s3:ListBucket".into()],
        resource: "arn:aws:s3:::bucket/*".into(),
        policy_condition: None,
    }]);
    f.requests()
        .replace("app", &PostParams::default(), &cr)
        .await?;
    f.wait_provisioned("app").await?;
    let policy = iam
        .user_policy(&user, &format!("{user}-policy"))
        .await?
        .unwrap_or_default();
    ensure!(
        policy.contains("s3:GetObject") && !policy.contains("ec2:DescribeInstances"),
        "{policy}"
    );
    let now = data(&f.secrets().get("app-creds").await?, ACCESS_KEY_ID)?;
    ensure!(now == third, "a spec change must not replace the key");
    Ok(())
}

#[tokio::test]
async fn a_missing_target_namespace_waits_for_it() -> Result<()> {
    let f = Fixture::new("cred-missing").await?;
    let _op = f.operator().await?;
    let target = format!("{}-target", f.ns);
    f.create(&f.sample("later", "later-creds", Some(&target))?)
        .await?;
    let c = f
        .wait_condition("later", cond::MISSING_TARGET_NAMESPACE, "True")
        .await?;
    ensure!(c.reason.as_deref() == Some("NamespaceMissing"), "{c:?}");
    ensure!(c.message.unwrap_or_default().contains(&target));
    ensure!(
        f.iam_users().await?.is_empty(),
        "nothing minted before the namespace exists"
    );

    let namespaces: Api<Namespace> = Api::all(f.client.clone());
    namespaces
        .create(
            &PostParams::default(),
            &serde_json::from_value(json!({ "metadata": { "name": target } }))?,
        )
        .await?;
    let cr = f.wait_provisioned("later").await?;
    ensure!(condition(&cr, cond::MISSING_TARGET_NAMESPACE).is_some_and(|c| c.status == "False"));
    Api::<Secret>::namespaced(f.client.clone(), &target)
        .get("later-creds")
        .await?;
    namespaces.delete(&target, &DeleteParams::default()).await?;
    Ok(())
}

#[tokio::test]
async fn deletion_removes_everything_and_survives_an_emulator_outage() -> Result<()> {
    let f = Fixture::new("cred-delete").await?;
    let _op = f.operator().await?;
    f.create(&f.sample("gone", "gone-creds", None)?).await?;
    f.create(&f.sample("outage", "outage-creds", None)?).await?;
    let gone = f.wait_provisioned("gone").await?;
    f.wait_provisioned("outage").await?;
    let user = gone.minted_user().unwrap_or_default().to_owned();

    f.requests()
        .delete("gone", &DeleteParams::default())
        .await?;
    f.wait_gone(&f.requests(), "gone", "request gone").await?;
    let iam = f.iam().await;
    ensure!(
        iam.user_arn(&user).await?.is_none(),
        "the IAM user must be deleted"
    );
    ensure!(
        f.secrets().get_opt("gone-creds").await?.is_none(),
        "the Secret must be deleted"
    );

    // The emulator is down: the deletion fails visibly and keeps the finalizer.
    f.moto.pause();
    f.requests()
        .delete("outage", &DeleteParams::default())
        .await?;
    let c = f
        .wait_condition("outage", cond::DEPROVISION_FAILURE, "True")
        .await?;
    ensure!(
        c.reason.as_deref() == Some("CloudCredDeprovisionFailure"),
        "{c:?}"
    );
    let cr = f.requests().get("outage").await?;
    ensure!(
        cr.finalizers().iter().any(|x| x == mint::FINALIZER),
        "finalizer kept"
    );
    ensure!(
        f.secrets().get_opt("outage-creds").await?.is_some(),
        "Secret kept until the cloud is clean"
    );
    // Back (a restarted moto has lost its users: NoSuchEntity counts as deleted).
    f.moto.resume().await?;
    wait::until(
        "request deleted after the outage",
        Duration::from_secs(120),
        || async {
            match f
                .requests()
                .get_opt("outage")
                .await
                .map_err(|e| e.to_string())?
            {
                None => Ok(()),
                Some(cr) => Err(format!("{:?}", cr.status.map(|s| s.conditions))),
            }
        },
    )
    .await?;
    ensure!(f.secrets().get_opt("outage-creds").await?.is_none());
    Ok(())
}

#[tokio::test]
async fn a_crash_after_recording_the_name_never_orphans_or_duplicates_a_user() -> Result<()> {
    let f = Fixture::new("cred-crash").await?;
    // What a crashed operator leaves: the finalizer and the recorded names, nothing in IAM for
    // one request; the user already created for the other, tagged as the operator tags it.
    let recorded = |name: &str| format!("{}crash", mint::user_name_prefix(CLUSTER_ID, name));
    let mut uids = std::collections::BTreeMap::new();
    for name in ["before-create", "after-create"] {
        let mut cr = f.sample(name, &format!("{name}-creds"), None)?;
        cr.metadata.finalizers = Some(vec![mint::FINALIZER.into()]);
        let created = f.create(&cr).await?;
        uids.insert(name, created.uid().unwrap_or_default());
        let user = recorded(name);
        let status = json!({ "status": { "providerStatus": {
            "apiVersion": "cloudcredential.openshift.io/v1", "kind": "AWSProviderStatus",
            "user": user, "policy": format!("{user}-policy"),
        }}});
        f.requests()
            .patch_status(name, &PatchParams::default(), &Patch::Merge(&status))
            .await?;
    }
    let iam = f.iam().await;
    iam.create_user(
        &recorded("after-create"),
        &credentials_operator::plan::user_tags(CLUSTER_ID, &uids["after-create"], &[]),
        None,
    )
    .await?;

    let _op = f.operator().await?;
    f.wait_provisioned("before-create").await?;
    f.wait_provisioned("after-create").await?;
    let mut expected = vec![recorded("after-create"), recorded("before-create")];
    expected.sort();
    ensure!(
        f.iam_users().await? == expected,
        "users {:?}",
        f.iam_users().await?
    );
    for name in ["before-create", "after-create"] {
        let keys = iam.list_access_keys(&recorded(name)).await?;
        ensure!(keys.len() == 1, "{name}: {} keys", keys.len());
    }
    Ok(())
}

#[tokio::test]
async fn foreign_secrets_and_other_clouds_are_left_alone() -> Result<()> {
    let f = Fixture::new("cred-foreign").await?;
    let _op = f.operator().await?;
    let foreign: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "taken" },
        "stringData": { "password": "hunter2" },
    }))?;
    let foreign = f.secrets().create(&PostParams::default(), &foreign).await?;
    f.create(&f.sample("clash", "taken", None)?).await?;
    let c = f
        .wait_condition("clash", cond::PROVISION_FAILURE, "True")
        .await?;
    let message = c.message.unwrap_or_default();
    ensure!(
        message.contains("not written for this request")
            && message.contains(&format!(
                "annotating it {}={}/clash",
                mint::SECRET_ANNOTATION,
                f.ns
            )),
        "the message must say what to do: {message}"
    );
    let after = f.secrets().get("taken").await?;
    ensure!(
        after.resource_version() == foreign.resource_version(),
        "the foreign Secret was modified"
    );

    // Turned into another cloud's request, it is ignored, and its failure no longer stands
    // (OpenShift clears the failure conditions of an ignored request).
    let mut clash = f.requests().get("clash").await?;
    clash.spec.provider_spec.kind = "GCPProviderSpec".into();
    f.requests()
        .replace("clash", &PostParams::default(), &clash)
        .await?;
    f.wait_condition("clash", cond::IGNORED, "True").await?;
    let c = f
        .wait_condition("clash", cond::PROVISION_FAILURE, "False")
        .await?;
    ensure!(
        c.reason.as_deref() == Some("InfrastructureMismatch"),
        "{c:?}"
    );

    let mut gcp = f.sample("gcp", "gcp-creds", None)?;
    gcp.spec.provider_spec.kind = "GCPProviderSpec".into();
    gcp.spec.provider_spec.statement_entries = None;
    gcp.spec
        .provider_spec
        .other
        .insert("predefinedRoles".into(), json!(["roles/viewer"]));
    f.create(&gcp).await?;
    let c = f.wait_condition("gcp", cond::IGNORED, "True").await?;
    ensure!(
        c.reason.as_deref() == Some("InfrastructureMismatch"),
        "{c:?}"
    );
    let gcp = f.requests().get("gcp").await?;
    ensure!(
        gcp.spec.provider_spec.other.get("predefinedRoles") == Some(&json!(["roles/viewer"])),
        "another cloud's fields are preserved"
    );
    ensure!(
        gcp.finalizers().is_empty(),
        "no finalizer on an ignored request"
    );
    Ok(())
}

#[tokio::test]
async fn keys_are_replaced_after_the_rotation_period() -> Result<()> {
    let f = Fixture::new("cred-rotate").await?;
    let settings = credentials_operator::controller::Settings {
        key_rotation: Some(Duration::from_secs(3)),
        resync_period: Duration::from_secs(1),
        ..f.settings()
    };
    let _op = f.operator_with(settings).await?;
    f.create(&f.sample("rotating", "rotating-creds", None)?)
        .await?;
    let cr = f.wait_provisioned("rotating").await?;
    let user = cr.minted_user().unwrap_or_default().to_owned();
    let first = data(&f.secrets().get("rotating-creds").await?, ACCESS_KEY_ID)?;
    let second = wait::until("the key rotated", common::TIMEOUT, || async {
        let s = f
            .secrets()
            .get("rotating-creds")
            .await
            .map_err(|e| e.to_string())?;
        let id = mint::secret_key_id(&s).ok_or("no key")?;
        if id != first {
            Ok(id)
        } else {
            Err("same key".into())
        }
    })
    .await?;
    let keys: Vec<String> = f
        .iam()
        .await
        .list_access_keys(&user)
        .await?
        .into_iter()
        .map(|k| k.id)
        .collect();
    ensure!(
        keys.len() == 1 && keys[0] != first,
        "exactly one key, not the first: {keys:?} (second {second})"
    );
    f.wait_event("rotating", "AccessKeyReplaced").await?;
    Ok(())
}

#[tokio::test]
async fn churn_through_an_emulator_outage_converges_without_duplicates() -> Result<()> {
    let f = Fixture::new("cred-churn").await?;
    let _op = f.operator().await?;
    for i in 0..4 {
        f.create(&f.sample(&format!("early-{i}"), &format!("early-{i}-creds"), None)?)
            .await?;
    }
    for i in 0..4 {
        f.wait_provisioned(&format!("early-{i}")).await?;
    }
    // The cloud goes away while requests come and go.
    f.moto.pause();
    for i in 0..6 {
        f.create(&f.sample(&format!("late-{i}"), &format!("late-{i}-creds"), None)?)
            .await?;
    }
    f.requests()
        .delete("early-0", &DeleteParams::default())
        .await?;
    for i in 0..6 {
        let c = f
            .wait_condition(&format!("late-{i}"), cond::PROVISION_FAILURE, "True")
            .await?;
        ensure!(
            c.message
                .unwrap_or_default()
                .starts_with("failed to grant creds:")
        );
    }
    f.wait_condition("early-0", cond::DEPROVISION_FAILURE, "True")
        .await?;
    // Back, empty (moto keeps nothing across a restart): everything is minted again exactly once.
    f.moto.resume().await?;
    for i in 0..6 {
        f.wait_provisioned(&format!("late-{i}")).await?;
    }
    f.wait_gone(&f.requests(), "early-0", "early-0 deleted")
        .await?;
    let users = f.iam_users().await?;
    let mut expected: Vec<String> = f
        .requests()
        .list(&Default::default())
        .await?
        .into_iter()
        .filter_map(|cr| cr.status?.provider_status.map(|p| p.user))
        .filter(|u| users.contains(u))
        .collect();
    expected.sort();
    // Every late request has its user; an early one may have been minted again already (moto
    // came back empty, and one that failed during the outage retries on its own schedule).
    // Either way no user exists that no request records: nothing was minted twice.
    let late = users.iter().filter(|u| u.contains("-late-")).count();
    ensure!(
        late == 6 && expected == users,
        "users {users:?} vs recorded {expected:?}"
    );
    for user in &users {
        ensure!(
            f.iam().await.list_access_keys(user).await?.len() == 1,
            "{user}: one key"
        );
    }
    Ok(())
}
