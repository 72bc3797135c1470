//! The signing CA on the real control plane: forced rotation (annotation and flag, once per
//! reason) with OpenShift's trust overlap checked by real TLS handshakes, rotation of a CA
//! close to expiry, a deleted CA replaced, and the CA Secret out of other users' reach.

mod common;

use anyhow::{Result, ensure};
use common::{Fixture, data, handshake, parse_leaf, pem_ders, subject_key_id};
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{Api, DeleteParams, Patch, PatchParams, PostParams};
use serde_json::json;
use service_ca_operator::controller::Settings;
use service_ca_operator::pki::SigningCa;
use service_ca_operator::*;
use time::OffsetDateTime;

/// The SKI of the CA in the signing Secret.
async fn ca_ski(f: &Fixture) -> Result<Vec<u8>> {
    Ok(subject_key_id(&data(
        &f.signing_secret().await?,
        TLS_CERT_KEY,
    )?)?)
}

/// Waits until the CA's SKI differs from `old`; returns the new one.
async fn wait_new_ca(f: &Fixture, old: &[u8]) -> Result<Vec<u8>> {
    let api = Api::<Secret>::namespaced(f.client.clone(), &f.signer_ns);
    Ok(
        operon_cluster::wait::until("a new signing CA", common::TIMEOUT, || async {
            let secret = api
                .get(SIGNING_SECRET_NAME)
                .await
                .map_err(|e| e.to_string())?;
            let crt = data(&secret, TLS_CERT_KEY).map_err(|e| e.to_string())?;
            let ski = subject_key_id(&crt).map_err(|e| e.to_string())?;
            if ski != old {
                Ok(ski)
            } else {
                Err("same CA".to_string())
            }
        })
        .await?,
    )
}

/// Waits until serving Secret `name` holds a leaf signed by the CA with `ski`.
async fn wait_leaf_from(f: &Fixture, name: &str, ski: &[u8]) -> Result<(String, String)> {
    let secret = f
        .wait_for(&f.secrets(), name, "a leaf from the new CA", |s| {
            let crt = data(s, TLS_CERT_KEY).map_err(|e| e.to_string())?;
            let leaf = parse_leaf(&crt).map_err(|e| e.to_string())?;
            if leaf.authority_key_id == ski {
                Ok(())
            } else {
                Err("still from the old CA".into())
            }
        })
        .await?;
    Ok((data(&secret, TLS_CERT_KEY)?, data(&secret, TLS_KEY_KEY)?))
}

#[tokio::test]
async fn forced_rotation_keeps_old_and_new_clients_working_and_fires_once_per_reason() -> Result<()>
{
    let f = Fixture::new("sca-rotate").await?;
    let op = f.operator().await?;
    f.service("web", "web-tls").await?;
    let old = f.wait_issued("web-tls").await?;
    let (old_crt, old_key) = (data(&old, TLS_CERT_KEY)?, data(&old, TLS_KEY_KEY)?);
    let old_bundle = f.injected_bundle("trust").await?;
    let old_ski = ca_ski(&f).await?;
    let host = format!("web.{}.svc", f.ns);

    let signing = Api::<Secret>::namespaced(f.client.clone(), &f.signer_ns);
    let annotate =
        |reason: &str| json!({ "metadata": { "annotations": { FORCE_ROTATION_REASON: reason } } });
    signing
        .patch(
            SIGNING_SECRET_NAME,
            &PatchParams::default(),
            &Patch::Merge(annotate("key-compromise")),
        )
        .await?;
    let new_ski = wait_new_ca(&f, &old_ski).await?;
    let secret = f.signing_secret().await?;
    ensure!(
        secret
            .annotations()
            .get(FORCED_ROTATION_REASON)
            .map(String::as_str)
            == Some("key-compromise"),
        "{:?}",
        secret.annotations()
    );
    ensure!(
        pem_ders(&data(&secret, CA_BUNDLE_KEY)?)?.len() == 2,
        "bundle = new CA + old CA re-signed"
    );
    ensure!(
        secret
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key(INTERMEDIATE_CA_KEY))
    );
    let note = f
        .wait_event(
            &f.signer_ns,
            "Secret",
            SIGNING_SECRET_NAME,
            "SigningCARotated",
            "",
        )
        .await?;
    ensure!(note.contains("key-compromise"), "{note}");

    // Every leaf is re-issued: leaf, new CA, then the new CA signed by the old key.
    let (new_crt, new_key) = wait_leaf_from(&f, "web-tls", &new_ski).await?;
    ensure!(
        parse_leaf(&new_crt)?.chain_len == 3,
        "leaf + CA + intermediate"
    );
    let new_bundle = f.wait_injected("trust", Some(&old_bundle)).await?;
    ensure!(
        pem_ders(&new_bundle)?.len() == 2,
        "injected bundle has both CAs"
    );

    // The overlap: clients with either bundle accept servers with either leaf.
    handshake(&old_crt, &old_key, &old_bundle, &host).await?;
    handshake(&new_crt, &new_key, &old_bundle, &host).await?;
    handshake(&old_crt, &old_key, &new_bundle, &host).await?;
    handshake(&new_crt, &new_key, &new_bundle, &host).await?;

    // Once per reason: a restarted operator sees the same reason and keeps the CA.
    op.stop().await?;
    let op = f.operator().await?;
    f.wait_ready(&op).await?;
    ensure!(
        ca_ski(&f).await? == new_ski,
        "the same reason rotated again"
    );
    // A new reason rotates again.
    signing
        .patch(
            SIGNING_SECRET_NAME,
            &PatchParams::default(),
            &Patch::Merge(annotate("yearly")),
        )
        .await?;
    wait_new_ca(&f, &new_ski).await?;
    Ok(())
}

#[tokio::test]
async fn the_force_rotation_flag_fires_once() -> Result<()> {
    let f = Fixture::new("sca-flag").await?;
    let op = f.operator().await?;
    f.wait_ready(&op).await?;
    let first = ca_ski(&f).await?;
    op.stop().await?;

    let settings = Settings {
        force_rotation_reason: Some("flag-1".into()),
        ..f.settings()
    };
    let op = f.operator_with(settings.clone()).await?;
    f.wait_ready(&op).await?;
    let second = ca_ski(&f).await?;
    ensure!(second != first, "the flag did not rotate");
    let secret = f.signing_secret().await?;
    ensure!(
        secret
            .annotations()
            .get(FORCED_ROTATION_REASON)
            .map(String::as_str)
            == Some("flag-1"),
        "{:?}",
        secret.annotations()
    );
    op.stop().await?;

    let op = f.operator_with(settings).await?;
    f.wait_ready(&op).await?;
    ensure!(ca_ski(&f).await? == second, "the same flag rotated twice");
    Ok(())
}

#[tokio::test]
async fn a_ca_close_to_expiry_is_rotated_and_a_deleted_one_replaced() -> Result<()> {
    let f = Fixture::new("sca-expiry").await?;
    // A CA with 30 days left, far inside the 395-day rotation margin.
    let ca = SigningCa::generate(
        std::time::Duration::from_secs(30 * 86400),
        OffsetDateTime::now_utc(),
    )?;
    signing_secret(&f, &ca.cert_pem, &ca.key_pem).await?;
    let signing = Api::<Secret>::namespaced(f.client.clone(), &f.signer_ns);

    // A rotation margin of 200 days (not OpenShift's 395): the old CA, re-signed, stays trusted
    // for at least that long.
    const DAY: i64 = 86400;
    let settings = Settings {
        ca_rotation_margin: std::time::Duration::from_secs(200 * DAY as u64),
        ca_lifetime: std::time::Duration::from_secs(400 * DAY as u64),
        ..f.settings()
    };
    let started = OffsetDateTime::now_utc().unix_timestamp();
    let op = f.operator_with(settings).await?;
    f.wait_ready(&op).await?;
    let rotated = ca_ski(&f).await?;
    ensure!(
        Some(&rotated) != ca.subject_key_id.as_ref(),
        "an expiring CA must be rotated"
    );
    let bundle = data(&f.signing_secret().await?, CA_BUNDLE_KEY)?;
    let old_again = pem_ders(&bundle)?
        .get(1)
        .map(|der| parse_leaf(&inject::pem_certificates(std::slice::from_ref(der))))
        .transpose()?
        .ok_or_else(|| anyhow::anyhow!("no re-signed old CA in {bundle}"))?;
    let trusted_for = old_again.not_after - started;
    ensure!(
        (200 * DAY..210 * DAY).contains(&trusted_for),
        "the re-signed old CA is trusted for {} days, not the 200-day margin",
        trusted_for / DAY
    );
    let secret = f.signing_secret().await?;
    ensure!(
        !secret.annotations().contains_key(FORCED_ROTATION_REASON),
        "not a forced rotation"
    );
    let bundle = f.published_bundle().await?;
    ensure!(pem_ders(&bundle)?.len() == 2, "overlap bundle");

    // Deleting the CA Secret makes a brand-new CA, without overlap (as OpenShift does).
    f.service("app", "app-tls").await?;
    wait_leaf_from(&f, "app-tls", &rotated).await?;
    signing
        .delete(SIGNING_SECRET_NAME, &DeleteParams::default())
        .await?;
    let fresh = wait_new_ca(&f, &rotated).await?;
    let secret = f.signing_secret().await?;
    ensure!(
        !secret
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key(CA_BUNDLE_KEY)),
        "a fresh CA has no overlap bundle"
    );
    let (crt, _) = wait_leaf_from(&f, "app-tls", &fresh).await?;
    ensure!(parse_leaf(&crt)?.chain_len == 2, "leaf + CA only");
    Ok(())
}

/// A signing Secret holding `cert_pem` and `key_pem`, created in the test's signer namespace.
async fn signing_secret(f: &Fixture, cert_pem: &str, key_pem: &str) -> Result<Secret> {
    let secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": SIGNING_SECRET_NAME },
        "type": "kubernetes.io/tls",
        "stringData": { "tls.crt": cert_pem, "tls.key": key_pem },
    }))?;
    let signing = Api::<Secret>::namespaced(f.client.clone(), &f.signer_ns);
    Ok(signing.create(&PostParams::default(), &secret).await?)
}

/// The `service_ca_expiry_time_seconds` the operator reports.
fn reported_expiry(op: &common::Operator) -> Option<i64> {
    op.metrics
        .metrics
        .render()
        .lines()
        .find_map(|l| l.strip_prefix("service_ca_expiry_time_seconds "))
        .and_then(|v| v.trim().parse::<f64>().ok())
        .map(|v| v as i64)
}

#[tokio::test]
async fn an_unusable_ca_is_kept_and_reported_until_a_replacement_is_asked_for() -> Result<()> {
    let f = Fixture::new("sca-broken").await?;
    // A key, and a tls.crt that is no certificate: nothing of it can be used, but it may be
    // someone's CA that this operator can't read (OpenShift keeps it too).
    let key = SigningCa::generate(
        std::time::Duration::from_secs(30 * 86400),
        OffsetDateTime::now_utc(),
    )?
    .key_pem;
    let broken =
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n";
    let created = signing_secret(&f, broken, &key).await?;
    let op = f.operator().await?;
    let note = f
        .wait_event(
            &f.signer_ns,
            "Secret",
            SIGNING_SECRET_NAME,
            "InvalidSigningCA",
            "",
        )
        .await?;
    ensure!(
        note.contains("It is kept") && note.contains(FORCE_ROTATION_REASON),
        "the Event must say what happens and what to do: {note}"
    );
    let signer = op.metrics.metrics.controller("signer");
    ensure!(signer.errors() >= 1, "the failure must count as an error");
    let kept = f.signing_secret().await?;
    ensure!(
        kept.metadata.resource_version == created.metadata.resource_version,
        "the unusable CA was overwritten"
    );
    ensure!(reported_expiry(&op) == Some(0), "no CA, no expiry");

    // Asked to, it is replaced by a new CA: no overlap with the unusable one.
    let signing = Api::<Secret>::namespaced(f.client.clone(), &f.signer_ns);
    signing
        .patch(
            SIGNING_SECRET_NAME,
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": {
                FORCE_ROTATION_REASON: "replace-unreadable-ca",
            }}})),
        )
        .await?;
    wait_new_ca(&f, &[]).await?;
    let replaced = f.signing_secret().await?;
    ensure!(
        replaced
            .annotations()
            .get(FORCED_ROTATION_REASON)
            .map(String::as_str)
            == Some("replace-unreadable-ca"),
        "{:?}",
        replaced.annotations()
    );
    ensure!(
        !replaced
            .data
            .as_ref()
            .is_some_and(|d| d.contains_key(CA_BUNDLE_KEY)),
        "nothing to overlap with"
    );
    f.wait_event(
        &f.signer_ns,
        "Secret",
        SIGNING_SECRET_NAME,
        "SigningCAReplaced",
        "",
    )
    .await?;
    f.service("web", "web-tls").await?;
    f.wait_issued("web-tls").await?;
    // The expiry metric follows the new CA.
    let not_after = parse_leaf(&data(&replaced, TLS_CERT_KEY)?)?.not_after;
    operon_cluster::wait::until("the expiry metric", common::TIMEOUT, || async {
        match reported_expiry(&op) {
            Some(v) if v == not_after => Ok(()),
            other => Err(format!("{other:?}, want {not_after}")),
        }
    })
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_ca_without_ski_signs_and_its_leaves_stay_valid() -> Result<()> {
    let f = Fixture::new("sca-noski").await?;
    let cert = include_str!("fixtures/ca-without-ski.crt");
    signing_secret(&f, cert, include_str!("fixtures/ca-without-ski.key")).await?;
    let op = f.operator().await?;
    f.wait_ready(&op).await?;
    ensure!(
        f.signing_secret()
            .await?
            .data
            .as_ref()
            .and_then(|d| d.get(TLS_CERT_KEY))
            .map(|b| b.0.as_slice())
            == Some(cert.as_bytes()),
        "the CA was replaced"
    );
    f.service("web", "web-tls").await?;
    let issued = f.wait_issued("web-tls").await?;
    let svc = f.wait_signed("web").await?;
    let (crt, key) = (data(&issued, TLS_CERT_KEY)?, data(&issued, TLS_KEY_KEY)?);
    ensure!(
        parse_leaf(&crt)?.authority_key_id.is_empty(),
        "no AKI to name"
    );
    let bundle = f.injected_bundle("trust").await?;
    handshake(&crt, &key, &bundle, &format!("web.{}.svc", f.ns)).await?;

    // Matched by the issuer's CN, the leaf is not re-issued when a new operator run checks
    // every Service again.
    op.stop().await?;
    let op = f.operator().await?;
    f.wait_ready(&op).await?;
    let service = op.metrics.metrics.controller("service");
    operon_cluster::wait::until("the Service checked again", common::TIMEOUT, || async {
        match service.reconciles() {
            0 => Err("not yet".to_string()),
            _ => Ok(()),
        }
    })
    .await?;
    let after = f.secrets().get("web-tls").await?;
    ensure!(
        after.metadata.resource_version == issued.metadata.resource_version,
        "a leaf of a CA without SKI was re-issued"
    );
    ensure!(
        svc.annotations()
            .get(SERVING_CERT_SIGNED_BY)
            .is_some_and(|cn| cn.starts_with("legacy-service-serving-signer@"))
    );
    Ok(())
}

#[tokio::test]
async fn the_signing_key_is_out_of_reach_of_namespace_admins() -> Result<()> {
    let f = Fixture::new("sca-rbac").await?;
    let op = f.operator().await?;
    f.wait_ready(&op).await?;
    // alice administers the application namespace.
    let binding: k8s_openapi::api::rbac::v1::RoleBinding = serde_json::from_value(json!({
        "apiVersion": "rbac.authorization.k8s.io/v1", "kind": "RoleBinding",
        "metadata": { "name": "alice-admin" },
        "roleRef": { "apiGroup": "rbac.authorization.k8s.io", "kind": "ClusterRole", "name": "admin" },
        "subjects": [{ "apiGroup": "rbac.authorization.k8s.io", "kind": "User", "name": "alice" }],
    }))?;
    Api::<k8s_openapi::api::rbac::v1::RoleBinding>::namespaced(f.client.clone(), &f.ns)
        .create(&PostParams::default(), &binding)
        .await?;
    let alice = f
        .env
        .impersonating("alice", &["system:authenticated"])
        .await?;
    // She can read Secrets of her namespace (so the denial below is about the CA alone)...
    let mine = operon_cluster::wait::until(
        "alice's role binding in effect",
        common::TIMEOUT,
        || async {
            Api::<Secret>::namespaced(alice.clone(), &f.ns)
                .list(&Default::default())
                .await
                .map_err(|e| e.to_string())
        },
    )
    .await;
    ensure!(mine.is_ok(), "{mine:?}");
    // ...but not the signing key.
    let theirs = Api::<Secret>::namespaced(alice, &f.signer_ns)
        .get(SIGNING_SECRET_NAME)
        .await;
    ensure!(
        matches!(&theirs, Err(kube::Error::Api(s)) if s.code == 403),
        "{theirs:?}"
    );
    // And the operator itself can never delete Secrets.
    ensure!(
        controller::rules()
            .iter()
            .filter(|r| r.resources.contains(&"secrets"))
            .all(|r| !r.verbs.contains(&"delete") && !r.verbs.contains(&"deletecollection")),
        "secrets must not be deletable"
    );
    Ok(())
}

#[tokio::test]
async fn the_service_account_can_do_exactly_what_is_declared() -> Result<()> {
    let f = Fixture::new("sca-canimatrix").await?;
    let manifests = deploy::manifests("test")?;
    let namespaces = [f.ns.as_str(), common::OPERATOR_NAMESPACE];
    Ok(operon_harness::audit_rbac(&f, &manifests, Vec::new(), &namespaces).await?)
}
