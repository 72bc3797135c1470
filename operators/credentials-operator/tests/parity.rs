//! Where a cluster moving from OpenShift's cloud-credential-operator would notice a difference,
//! against the real control plane and moto: root credentials removed after install, the mode from
//! the root Secret's annotation, conditions as OpenShift sets them, minted users' tags, and
//! short-lived (STS) profiles.
//!
//! moto has no `SimulatePrincipalPolicy`: a passthrough that must simulate fails there, which is
//! what this tests (a failed simulation is an error); the simulation's pages and region context
//! can't be exercised against it. It has STS's `AssumeRoleWithWebIdentity`, which the STS
//! profile is checked against with the AWS SDK's own profile provider.

mod common;

use anyhow::{Result, ensure};
use aws_config::Region;
use aws_config::profile::ProfileFileCredentialsProvider;
use aws_config::provider_config::ProviderConfig;
use aws_credential_types::provider::ProvideCredentials;
use aws_runtime::env_config::file::{
    EnvConfigFileKind as ProfileFileKind, EnvConfigFiles as ProfileFiles,
};
use common::{Fixture, condition, data};
use credentials_operator::api::condition as cond;
use credentials_operator::controller::{Mode, Settings};
use credentials_operator::mint::{self, CREDENTIALS};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::core::params::ValidationDirective;
use operon_cluster::wait;
use serde_json::json;

/// Sets (or with `None` removes) the root Secret's mode annotation.
async fn annotate_root(f: &Fixture, mode: Option<&str>) -> Result<()> {
    f.secrets()
        .patch(
            "aws-creds",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "annotations": { mint::MODE_ANNOTATION: mode } } }),
            ),
        )
        .await?;
    Ok(())
}

/// The root Secret as the fixture made it, for putting it back.
async fn root_secret(f: &Fixture) -> Result<Secret> {
    let mut root = f.secrets().get("aws-creds").await?;
    root.metadata.resource_version = None;
    root.metadata.uid = None;
    root.metadata.managed_fields = None;
    root.metadata.creation_timestamp = None;
    Ok(root)
}

#[tokio::test]
async fn minted_requests_stay_healthy_after_the_root_credentials_are_removed() -> Result<()> {
    let f = Fixture::new("cred-noroot").await?;
    let _op = f.operator().await?;
    f.create(&f.sample("app", "app-creds", None)?).await?;
    f.wait_provisioned("app").await?;
    let key = data(&f.secrets().get("app-creds").await?, mint::ACCESS_KEY_ID)?;
    let root = root_secret(&f).await?;

    // The administrator removes the root credentials (supported in mint mode): the request is
    // checked with its own credentials, and stays provisioned and free of failures.
    f.secrets()
        .delete("aws-creds", &DeleteParams::default())
        .await?;
    f.wait_event("app", "CheckedWithoutRootCredentials").await?;
    let c = f.requests().get("app").await?;
    let status = c.status.clone().unwrap_or_default();
    ensure!(status.provisioned, "{status:?}");
    ensure!(
        status.conditions.iter().all(|c| c.status != "True"),
        "no failure: {status:?}"
    );
    ensure!(
        data(&f.secrets().get("app-creds").await?, mint::ACCESS_KEY_ID)? == key,
        "the key must stay"
    );

    // A change needs the root credentials: the failure says which, as OpenShift's condition.
    let mut cr = f.requests().get("app").await?;
    if let Some(entries) = cr.spec.provider_spec.statement_entries.as_mut() {
        entries[0].action.push("ec2:DescribeRegions".into());
    }
    f.requests()
        .replace("app", &PostParams::default(), &cr)
        .await?;
    let c = f
        .wait_condition("app", cond::PROVISION_FAILURE, "True")
        .await?;
    let message = c.message.unwrap_or_default();
    ensure!(
        message.contains("not found")
            && message.contains("changed spec needs the root credentials"),
        "{message}"
    );
    // A request that never had credentials: the missing root Secret is a provisioning failure,
    // not InsufficientCloudCreds (OpenShift keeps that for the `insufficient` annotation).
    f.create(&f.sample("late", "late-creds", None)?).await?;
    let c = f
        .wait_condition("late", cond::PROVISION_FAILURE, "True")
        .await?;
    ensure!(
        c.reason.as_deref() == Some("CredentialsProvisionFailure"),
        "{c:?}"
    );
    let late = f.requests().get("late").await?;
    ensure!(
        condition(&late, cond::INSUFFICIENT_CLOUD_CREDS).is_none(),
        "{:?}",
        late.status
    );

    // Root credentials back: the change is applied, the other request provisioned.
    f.secrets().create(&PostParams::default(), &root).await?;
    f.wait_provisioned("app").await?;
    f.wait_provisioned("late").await?;
    let app = f.requests().get("app").await?;
    let user = app.minted_user().unwrap_or_default();
    let policy = f
        .iam()
        .await
        .user_policy(user, &format!("{user}-policy"))
        .await?
        .unwrap_or_default();
    ensure!(policy.contains("ec2:DescribeRegions"), "{policy}");
    Ok(())
}

#[tokio::test]
async fn the_mode_comes_from_the_root_secrets_annotation() -> Result<()> {
    let f = Fixture::new("cred-annotated").await?;
    // No --mode: the annotation decides.
    let _op = f.operator().await?;

    annotate_root(&f, Some(mint::MODE_INSUFFICIENT)).await?;
    f.create(&f.sample("app", "app-creds", None)?).await?;
    let c = f
        .wait_condition("app", cond::INSUFFICIENT_CLOUD_CREDS, "True")
        .await?;
    ensure!(
        c.reason.as_deref() == Some("CloudCredsInsufficient"),
        "{c:?}"
    );
    ensure!(f.iam_users().await?.is_empty(), "nothing minted");

    // Passthrough chosen by the annotation simulates the requested actions; moto can't, and a
    // simulation that fails is an error, not a pass.
    annotate_root(&f, Some(mint::MODE_PASSTHROUGH)).await?;
    let c = f
        .wait_for(
            &f.requests(),
            "app",
            "the simulation's failure",
            |cr| match condition(cr, cond::PROVISION_FAILURE) {
                Some(c) if c.status == "True" => Ok(()),
                other => Err(format!("{other:?}")),
            },
        )
        .await?;
    let failure = condition(&c, cond::PROVISION_FAILURE).unwrap_or_default();
    ensure!(
        failure
            .message
            .as_deref()
            .is_some_and(|m| m.contains("error validating whether root creds are good enough")),
        "{failure:?}"
    );
    ensure!(
        condition(&c, cond::INSUFFICIENT_CLOUD_CREDS).is_some_and(|c| c.status == "False"),
        "{:?}",
        c.status
    );
    ensure!(
        !failure
            .message
            .as_deref()
            .unwrap_or_default()
            .contains("raw"),
        "the message names the failure, not the raw answer: {failure:?}"
    );
    ensure!(
        f.secrets().get_opt("app-creds").await?.is_none(),
        "no copy without a successful check"
    );

    annotate_root(&f, Some("sometimes")).await?;
    let c = f
        .wait_for(
            &f.requests(),
            "app",
            "the unexpected mode",
            |cr| match condition(cr, cond::PROVISION_FAILURE) {
                Some(c)
                    if c.message
                        .as_deref()
                        .is_some_and(|m| m.contains("\"sometimes\"")) =>
                {
                    Ok(())
                }
                other => Err(format!("{other:?}")),
            },
        )
        .await?;
    ensure!(!c.status.unwrap_or_default().provisioned);

    annotate_root(&f, Some(mint::MODE_MINT)).await?;
    f.wait_provisioned("app").await?;
    ensure!(f.iam_users().await?.len() == 1, "minted");

    // Switching away from mint doesn't strand the minted user: deleting the request removes it.
    annotate_root(&f, Some(mint::MODE_INSUFFICIENT)).await?;
    f.wait_condition("app", cond::INSUFFICIENT_CLOUD_CREDS, "True")
        .await?;
    f.requests().delete("app", &DeleteParams::default()).await?;
    wait::until("the minted user gone", common::TIMEOUT, || async {
        match f.iam_users().await.map_err(|e| e.to_string())? {
            users if users.is_empty() => Ok(()),
            users => Err(format!("{users:?}")),
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn minted_users_get_the_configured_tags_and_they_are_repaired() -> Result<()> {
    let f = Fixture::new("cred-tags").await?;
    // Root credentials of a user with a permissions boundary.
    let iam = f.iam().await;
    let boundary = iam
        .sdk()
        .create_policy()
        .policy_name("installer-boundary")
        .policy_document(
            r#"{"Version":"2012-10-17","Statement":[{"Effect":"Allow","Action":["ec2:*","iam:*"],"Resource":"*"}]}"#,
        )
        .send()
        .await?
        .policy()
        .and_then(|p| p.arn())
        .map(str::to_owned)
        .unwrap_or_default();
    iam.sdk()
        .create_user()
        .user_name("installer")
        .permissions_boundary(&boundary)
        .send()
        .await?;
    let key = iam.create_access_key("installer").await?;
    f.secrets()
        .patch(
            "aws-creds",
            &PatchParams::default(),
            &Patch::Merge(json!({ "stringData": {
                mint::ACCESS_KEY_ID: key.id, mint::SECRET_ACCESS_KEY: key.secret,
            }})),
        )
        .await?;
    let settings = Settings {
        resource_tags: vec![("team".into(), "payments".into())],
        ..f.settings()
    };
    let _op = f.operator_with(settings).await?;
    f.create(&f.sample("app", "app-creds", None)?).await?;
    let cr = f.wait_provisioned("app").await?;
    let user = cr.minted_user().unwrap_or_default().to_owned();
    // moto drops a user's permissions boundary (CreateUser ignores it), so that the minted user
    // gets the root user's is checked on the request itself, in `src/iam.rs`'s unit tests; here
    // a root user with a boundary must not stop minting.
    let tags = || async {
        let out = iam.sdk().list_user_tags().user_name(&user).send().await?;
        let mut tags: Vec<(String, String)> = out
            .tags()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect();
        tags.sort();
        anyhow::Ok(tags)
    };
    let mut want = vec![
        (
            format!("kubernetes.io/cluster/{}", common::CLUSTER_ID),
            "owned".to_owned(),
        ),
        (mint::REQUEST_TAG.to_owned(), cr.uid().unwrap_or_default()),
        ("team".to_owned(), "payments".to_owned()),
    ];
    want.sort();
    ensure!(tags().await? == want, "{:?}", tags().await?);

    // A tag removed behind the operator's back is put back on the next sync (here: the root
    // Secret changes, which syncs every request).
    iam.sdk()
        .untag_user()
        .user_name(&user)
        .tag_keys("team")
        .send()
        .await?;
    f.secrets()
        .patch(
            "aws-creds",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "touched": "yes" } } })),
        )
        .await?;
    wait::until("the tag repaired", common::TIMEOUT, || async {
        match tags().await.map_err(|e| e.to_string())? {
            t if t == want => Ok(()),
            t => Err(format!("{t:?}")),
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn manual_mode_writes_short_lived_profiles_for_sts_requests() -> Result<()> {
    let f = Fixture::new("cred-sts").await?;
    let settings = Settings {
        mode: Some(Mode::Manual),
        ..f.settings()
    };
    let op = f.operator_with(settings.clone()).await?;
    let role = "arn:aws:iam::123456789012:role/describer";
    // An upstream manifest with cloudTokenPath and stsIAMRoleARN, applied with strict field
    // validation: no field is unknown, none is dropped.
    let manifest = json!({
        "apiVersion": "cloudcredential.openshift.io/v1",
        "kind": "CredentialsRequest",
        "metadata": { "name": "sts", "namespace": f.ns },
        "spec": {
            "secretRef": { "name": "sts-creds", "namespace": f.ns },
            "cloudTokenPath": "/var/run/secrets/openshift/serviceaccount/token",
            "serviceAccountNames": ["describer"],
            "providerSpec": {
                "apiVersion": "cloudcredential.openshift.io/v1",
                "kind": "AWSProviderSpec",
                "stsIAMRoleARN": role,
                "statementEntries": [
                    { "effect": "Allow", "action": ["ec2:DescribeInstances"], "resource": "*" },
                ],
            },
        },
    });
    let strict = PatchParams {
        field_manager: Some("parity-test".into()),
        field_validation: Some(ValidationDirective::Strict),
        ..PatchParams::default()
    };
    let applied = f
        .requests()
        .patch("sts", &strict, &Patch::Apply(&manifest))
        .await?;
    ensure!(
        applied.spec.cloud_token_path.as_deref()
            == Some("/var/run/secrets/openshift/serviceaccount/token")
            && applied.spec.provider_spec.sts_iam_role_arn.as_deref() == Some(role),
        "{:?}",
        applied.spec
    );
    let secret = f
        .wait_for(&f.secrets(), "sts-creds", "the STS profile", |_| Ok(()))
        .await?;
    ensure!(
        data(&secret, CREDENTIALS)?
            == format!(
                "[default]\nsts_regional_endpoints = regional\nrole_arn = {role}\nweb_identity_token_file = /var/run/secrets/openshift/serviceaccount/token\n"
            ),
        "{:?}",
        data(&secret, CREDENTIALS)
    );
    ensure!(
        secret.data.as_ref().map(|d| d.len()) == Some(1),
        "a profile, no keys"
    );
    let cr = f.wait_provisioned("sts").await?;
    ensure!(cr.finalizers().iter().any(|x| x == mint::FINALIZER));
    ensure!(f.iam_users().await?.is_empty(), "nothing minted");

    // A role ARN that isn't one is refused with a message.
    let mut bad = manifest.clone();
    bad["metadata"]["name"] = json!("bad-sts");
    bad["spec"]["providerSpec"]["stsIAMRoleARN"] = json!("describer");
    let refused = f
        .requests()
        .patch("bad-sts", &strict, &Patch::Apply(&bad))
        .await;
    ensure!(
        matches!(&refused, Err(kube::Error::Api(s)) if s.message.contains("stsIAMRoleARN must be an IAM role ARN")),
        "{refused:?}"
    );

    // The profile works as the AWS SDK reads it: with the token at cloudTokenPath, the SDK's own
    // profile provider exchanges it at STS (moto) for the role's short-lived credentials.
    let dir = tempfile::tempdir()?;
    let token = dir.path().join("token");
    std::fs::write(&token, "header.payload.signature")?;
    let mut live = manifest.clone();
    live["metadata"]["name"] = json!("sts-live");
    live["spec"]["secretRef"]["name"] = json!("sts-live-creds");
    live["spec"]["cloudTokenPath"] = json!(token.to_string_lossy());
    f.requests()
        .patch("sts-live", &strict, &Patch::Apply(&live))
        .await?;
    let secret = f
        .wait_for(
            &f.secrets(),
            "sts-live-creds",
            "the STS profile",
            |_| Ok(()),
        )
        .await?;
    std::fs::write(dir.path().join("credentials"), data(&secret, CREDENTIALS)?)?;
    // Only the endpoint is the test's: STS is moto.
    std::fs::write(
        dir.path().join("config"),
        format!("[default]\nendpoint_url = {}\n", f.moto.endpoint()),
    )?;
    let files = ProfileFiles::builder()
        .with_file(ProfileFileKind::Credentials, dir.path().join("credentials"))
        .with_file(ProfileFileKind::Config, dir.path().join("config"))
        .build();
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    let provider = ProfileFileCredentialsProvider::builder()
        .profile_files(files)
        .configure(
            &ProviderConfig::without_region()
                .with_region(Some(Region::new("us-east-1")))
                .with_http_client(http),
        )
        .build();
    let credentials = provider.provide_credentials().await?;
    ensure!(
        credentials.session_token().is_some() && credentials.access_key_id().starts_with("ASIA"),
        "short-lived credentials expected, got key {}",
        credentials.access_key_id()
    );

    // A restart over the written profiles writes nothing.
    f.wait_provisioned("sts-live").await?;
    op.stop().await?;
    let op = f.operator_with(settings).await?;
    wait::until("both requests reconciled", common::TIMEOUT, || async {
        match op.metrics.reconciles() {
            n if n >= 2 => Ok(()),
            n => Err(format!("{n} reconciles")),
        }
    })
    .await?;
    ensure!(op.requests().writes() == 0, "writes: {}", op.requests());

    // Deleted with its request.
    f.requests().delete("sts", &DeleteParams::default()).await?;
    f.wait_gone(&f.secrets(), "sts-creds", "the profile gone")
        .await?;
    Ok(())
}
