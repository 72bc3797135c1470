//! Serving certificates on the real control plane, with OpenShift's service-ca-operator as the
//! reference: what the Secret holds, what the certificate says, a real TLS handshake, repair of
//! every kind of damage, foreign Secrets, garbage collection and quiet restarts.

mod common;

use std::collections::BTreeMap;

use anyhow::{Result, ensure};
use common::{Fixture, data, handshake, parse_leaf, subject_key_id};
use k8s_openapi::ByteString;
use k8s_openapi::api::core::v1::Secret;
use kube::ResourceExt;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use operon_cluster::wait;
use serde_json::json;
use service_ca_operator::pki::{KeyAlgorithm, ServingCertRequest};
use service_ca_operator::*;
use time::OffsetDateTime;

fn sorted(names: &[String]) -> Vec<String> {
    let mut v = names.to_vec();
    v.sort();
    v
}

#[tokio::test]
async fn annotated_service_gets_an_openshift_compatible_serving_secret() -> Result<()> {
    let f = Fixture::new("sca-issue").await?;
    let _op = f.operator().await?;
    let svc = f.service("api", "api-tls").await?;
    let secret = f.wait_issued("api-tls").await?;
    let ca = f.ca().await?;
    let ns = &f.ns;

    // The Secret: type, exactly two keys, our annotations, a non-controller owner reference.
    ensure!(
        secret.type_.as_deref() == Some("kubernetes.io/tls"),
        "{:?}",
        secret.type_
    );
    let keys: Vec<&String> = secret
        .data
        .as_ref()
        .map(|d| d.keys().collect())
        .unwrap_or_default();
    ensure!(keys == ["tls.crt", "tls.key"], "{keys:?}");
    let a = secret.annotations();
    let uid = svc.metadata.uid.clone().unwrap_or_default();
    ensure!(a.get(ORIGINATING_SERVICE_UID) == Some(&uid), "{a:?}");
    ensure!(
        a.get(ORIGINATING_SERVICE_NAME).map(String::as_str) == Some("api"),
        "{a:?}"
    );
    let expiry = a.get(EXPIRY).cloned().unwrap_or_default();
    ensure!(a.get(ALPHA_EXPIRY) == Some(&expiry), "{a:?}");
    ensure!(
        a.get(OWNING_COMPONENT).map(String::as_str) == Some("service-ca")
            && a.get(DESCRIPTION)
                .is_some_and(|d| d.contains("service/api")),
        "OpenShift's owning-component and description: {a:?}"
    );
    let owners = secret.owner_references();
    ensure!(
        owners.len() == 1
            && owners[0].kind == "Service"
            && owners[0].uid == uid
            && owners[0].controller.is_none(),
        "{owners:?}"
    );

    // The certificate.
    let tls_crt = data(&secret, TLS_CERT_KEY)?;
    let leaf = parse_leaf(&tls_crt)?;
    let expected = sorted(&[
        format!("api.{ns}.svc"),
        format!("api.{ns}.svc.cluster.local"),
    ]);
    ensure!(
        leaf.sans == expected,
        "SANs {:?} != {expected:?}",
        leaf.sans
    );
    ensure!(
        leaf.common_name == format!("api.{ns}.svc"),
        "CN {}",
        leaf.common_name
    );
    ensure!(leaf.server_auth && !leaf.client_auth, "EKU {leaf:?}");
    ensure!(
        Some(&leaf.authority_key_id) == ca.subject_key_id.as_ref(),
        "AKI != CA SKI"
    );
    let uid_extension = leaf.extension(pki::SERVICE_UID_EXTENSION_OID);
    ensure!(
        uid_extension == Some((false, pki::encode_service_uid(&uid).as_slice())),
        "UID extension (critical, value) {uid_extension:?}"
    );
    ensure!(
        leaf.key_algorithm == "EC" && leaf.key_bits == 256,
        "{leaf:?}"
    );
    ensure!(
        leaf.chain_len == 2,
        "tls.crt = leaf + CA, got {}",
        leaf.chain_len
    );
    ensure!(
        tls_crt.ends_with(&ca.cert_pem),
        "tls.crt must end with the CA"
    );
    let annotated = OffsetDateTime::parse(&expiry, &time::format_description::well_known::Rfc3339)?;
    ensure!(
        annotated.unix_timestamp() == leaf.not_after,
        "expiry annotation {expiry}"
    );
    let lifetime = leaf.not_after - OffsetDateTime::now_utc().unix_timestamp();
    ensure!(
        (729 * 86400..=731 * 86400).contains(&lifetime),
        "lifetime {lifetime}s is not 2 years"
    );

    // The Service records the signer, both forms.
    let svc = f.wait_signed("api").await?;
    ensure!(
        svc.annotations().get(ALPHA_SERVING_CERT_SIGNED_BY) == Some(&ca.common_name),
        "{:?}",
        svc.annotations()
    );
    ensure!(
        ca.common_name
            .starts_with("openshift-service-serving-signer@"),
        "{}",
        ca.common_name
    );

    // The alpha annotation alone works too; beta wins when both are present.
    f.create_service(json!({
        "metadata": { "name": "alpha", "annotations": { ALPHA_SERVING_CERT_SECRET_NAME: "alpha-tls" } },
        "spec": { "ports": [{ "port": 443 }] },
    }))
    .await?;
    f.create_service(json!({
        "metadata": { "name": "both", "annotations": {
            ALPHA_SERVING_CERT_SECRET_NAME: "both-alpha-tls",
            SERVING_CERT_SECRET_NAME: "both-beta-tls",
        } },
        "spec": { "ports": [{ "port": 443 }] },
    }))
    .await?;
    // Alpha-only Services get the alpha originating annotations, as OpenShift writes them.
    let alpha = f.wait_issued("alpha-tls").await?;
    let a = alpha.annotations();
    ensure!(
        a.get(ALPHA_ORIGINATING_SERVICE_NAME).map(String::as_str) == Some("alpha")
            && a.contains_key(ALPHA_ORIGINATING_SERVICE_UID)
            && !a.contains_key(ORIGINATING_SERVICE_UID)
            && !a.contains_key(ORIGINATING_SERVICE_NAME),
        "{a:?}"
    );
    f.wait_issued("both-beta-tls").await?;
    f.wait_signed("both").await?;
    ensure!(
        f.secrets().get_opt("both-alpha-tls").await?.is_none(),
        "the alpha name must lose to the beta one"
    );
    Ok(())
}

#[tokio::test]
async fn tls_handshake_with_the_injected_bundle_verifies_the_service_name() -> Result<()> {
    let f = Fixture::new("sca-tls").await?;
    let _op = f.operator().await?;
    f.service("web", "web-tls").await?;
    let secret = f.wait_issued("web-tls").await?;
    let bundle = f.injected_bundle("trust").await?;
    let (crt, key) = (data(&secret, TLS_CERT_KEY)?, data(&secret, TLS_KEY_KEY)?);
    let ns = &f.ns;

    handshake(&crt, &key, &bundle, &format!("web.{ns}.svc")).await?;
    handshake(&crt, &key, &bundle, &format!("web.{ns}.svc.cluster.local")).await?;
    let wrong = handshake(&crt, &key, &bundle, &format!("other.{ns}.svc")).await;
    ensure!(
        wrong.is_err(),
        "a certificate for web must not verify as other"
    );
    // A client trusting another CA refuses it.
    let stranger = pki::SigningCa::generate(pki::DEFAULT_CA_LIFETIME, OffsetDateTime::now_utc())?;
    let untrusted = handshake(&crt, &key, &stranger.cert_pem, &format!("web.{ns}.svc")).await;
    ensure!(
        untrusted.is_err(),
        "a client trusting another CA must refuse the certificate"
    );
    Ok(())
}

#[tokio::test]
async fn headless_services_get_wildcards_and_a_change_to_headless_reissues() -> Result<()> {
    let f = Fixture::new("sca-headless").await?;
    let _op = f.operator().await?;
    let ns = f.ns.clone();
    f.create_service(json!({
        "metadata": { "name": "db", "annotations": { SERVING_CERT_SECRET_NAME: "db-tls" } },
        "spec": { "clusterIP": "None", "ports": [{ "port": 5432 }] },
    }))
    .await?;
    let secret = f.wait_issued("db-tls").await?;
    let leaf = parse_leaf(&data(&secret, TLS_CERT_KEY)?)?;
    let expected = sorted(&[
        format!("*.db.{ns}.svc"),
        format!("*.db.{ns}.svc.cluster.local"),
        format!("db.{ns}.svc"),
        format!("db.{ns}.svc.cluster.local"),
    ]);
    ensure!(leaf.sans == expected, "{:?} != {expected:?}", leaf.sans);
    // OpenShift: CN is the lexicographically first SAN.
    ensure!(leaf.common_name == expected[0], "CN {}", leaf.common_name);

    // clusterIP is immutable, but an ExternalName Service may become headless.
    f.create_service(json!({
        "metadata": { "name": "ext", "annotations": { SERVING_CERT_SECRET_NAME: "ext-tls" } },
        "spec": { "type": "ExternalName", "externalName": "example.com" },
    }))
    .await?;
    let before = f.wait_issued("ext-tls").await?;
    let sans = parse_leaf(&data(&before, TLS_CERT_KEY)?)?.sans;
    ensure!(sans.len() == 2, "not headless yet: {sans:?}");
    f.services()
        .patch(
            "ext",
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": {
                "type": "ClusterIP", "clusterIP": "None", "externalName": null,
                "ports": [{ "port": 443 }],
            }})),
        )
        .await?;
    let after = f
        .wait_for(
            &f.secrets(),
            "ext-tls",
            "wildcards after turning headless",
            |s| {
                let sans = data(s, TLS_CERT_KEY)
                    .and_then(|c| parse_leaf(&c))
                    .map(|l| l.sans)
                    .map_err(|e| e.to_string())?;
                if sans.len() == 4 {
                    Ok(())
                } else {
                    Err(format!("{sans:?}"))
                }
            },
        )
        .await?;
    ensure!(
        after.metadata.uid == before.metadata.uid,
        "updated in place, not recreated"
    );
    Ok(())
}

#[tokio::test]
async fn damaged_secrets_are_repaired() -> Result<()> {
    let f = Fixture::new("sca-repair").await?;
    let _op = f.operator().await?;
    f.service("app", "app-tls").await?;
    let original = f.wait_issued("app-tls").await?;
    let original_crt = data(&original, TLS_CERT_KEY)?;
    let secrets = f.secrets();

    // Deleted → recreated.
    secrets.delete("app-tls", &DeleteParams::default()).await?;
    let recreated = f
        .wait_for(&f.secrets(), "app-tls", "recreated", |s| {
            if s.metadata.uid != original.metadata.uid && s.data.is_some() {
                Ok(())
            } else {
                Err("not yet recreated".into())
            }
        })
        .await?;
    let recreated_crt = data(&recreated, TLS_CERT_KEY)?;
    ensure!(recreated_crt != original_crt, "a new certificate");

    // Garbage in tls.crt → regenerated.
    secrets
        .patch(
            "app-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({ "data": { "tls.crt": "Z2FyYmFnZQ==" } })),
        )
        .await?;
    let regenerated = f
        .wait_for(&f.secrets(), "app-tls", "regenerated after garbage", |s| {
            let crt = data(s, TLS_CERT_KEY).map_err(|e| e.to_string())?;
            parse_leaf(&crt).map(|_| ()).map_err(|e| e.to_string())
        })
        .await?;
    let regenerated_crt = data(&regenerated, TLS_CERT_KEY)?;
    f.wait_event(&f.ns, "Service", "app", "ServingCertUpdated", "")
        .await?;

    // An extra data key → removed, the certificate kept; user labels and annotations kept.
    secrets
        .patch(
            "app-tls",
            &PatchParams::default(),
            &Patch::Merge(json!({
                "metadata": { "labels": { "team": "a" }, "annotations": { "note": "mine" } },
                "data": { "extra": "eA==" },
            })),
        )
        .await?;
    let cleaned = f
        .wait_for(&f.secrets(), "app-tls", "extra key removed", |s| {
            match s.data.as_ref().is_some_and(|d| d.contains_key("extra")) {
                true => Err("extra still there".into()),
                false => Ok(()),
            }
        })
        .await?;
    ensure!(
        data(&cleaned, TLS_CERT_KEY)? == regenerated_crt,
        "the certificate must be kept"
    );
    ensure!(
        cleaned.labels().get("team").map(String::as_str) == Some("a"),
        "user label lost"
    );
    ensure!(
        cleaned.annotations().get("note").map(String::as_str) == Some("mine"),
        "user annotation lost"
    );

    // A missing expiry annotation → reissued (OpenShift's rule).
    secrets
        .patch(
            "app-tls",
            &PatchParams::default(),
            &Patch::Merge(
                json!({ "metadata": { "annotations": { EXPIRY: null, ALPHA_EXPIRY: null } } }),
            ),
        )
        .await?;
    f.wait_for(
        &f.secrets(),
        "app-tls",
        "expiry annotation restored",
        |s| match s.annotations().contains_key(EXPIRY) {
            true => Ok(()),
            false => Err("no expiry".into()),
        },
    )
    .await?;

    // Near expiry: a valid certificate from the same CA with 30 minutes left (the refresh
    // margin is an hour) → reissued.
    let ca = f.ca().await?;
    let svc = f.services().get("app").await?;
    let uid = svc.metadata.uid.clone().unwrap_or_default();
    let req = ServingCertRequest {
        service_name: "app",
        namespace: &f.ns,
        service_uid: &uid,
        headless: false,
        cluster_domain: pki::DEFAULT_CLUSTER_DOMAIN,
        lifetime: std::time::Duration::from_secs(1800),
        key: KeyAlgorithm::EcdsaP256,
    };
    let short = ca.issue(&req, OffsetDateTime::now_utc())?;
    let expiry = short
        .not_after
        .format(&time::format_description::well_known::Rfc3339)?;
    let current = secrets.get("app-tls").await?;
    let mut expiring = current.clone();
    expiring.data = Some(BTreeMap::from([
        (
            TLS_CERT_KEY.to_string(),
            ByteString(short.cert_pem.clone().into_bytes()),
        ),
        (
            TLS_KEY_KEY.to_string(),
            ByteString(short.key_pem.clone().into_bytes()),
        ),
    ]));
    expiring
        .annotations_mut()
        .insert(EXPIRY.to_string(), expiry.clone());
    expiring
        .annotations_mut()
        .insert(ALPHA_EXPIRY.to_string(), expiry);
    secrets
        .replace("app-tls", &PostParams::default(), &expiring)
        .await?;
    let refreshed = f
        .wait_for(
            &f.secrets(),
            "app-tls",
            "near-expiry certificate reissued",
            |s| {
                let crt = data(s, TLS_CERT_KEY).map_err(|e| e.to_string())?;
                let leaf = parse_leaf(&crt).map_err(|e| e.to_string())?;
                let left = leaf.not_after - OffsetDateTime::now_utc().unix_timestamp();
                if left > 86400 {
                    Ok(())
                } else {
                    Err(format!("{left}s left"))
                }
            },
        )
        .await?;
    ensure!(
        data(&refreshed, TLS_CERT_KEY)? != short.cert_pem,
        "reissued"
    );
    Ok(())
}

#[tokio::test]
async fn foreign_secrets_are_never_touched_and_errors_stop_at_ten() -> Result<()> {
    let f = Fixture::new("sca-foreign").await?;
    let _op = f.operator().await?;
    let foreign: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "taken", "labels": { "owner": "someone-else" } },
        "stringData": { "password": "hunter2" },
    }))?;
    let foreign = f.secrets().create(&PostParams::default(), &foreign).await?;
    f.service("svc", "taken").await?;

    let svc = f
        .wait_service_annotation("svc", SERVING_CERT_GENERATION_ERROR_NUM, "10")
        .await?;
    let message = svc
        .annotations()
        .get(SERVING_CERT_GENERATION_ERROR)
        .cloned()
        .unwrap_or_default();
    ensure!(message.contains("secret/taken already exists"), "{message}");
    ensure!(
        svc.annotations()
            .get(ALPHA_SERVING_CERT_GENERATION_ERROR_NUM)
            .map(String::as_str)
            == Some("10"),
        "{:?}",
        svc.annotations()
    );
    f.wait_event(&f.ns, "Service", "svc", "ServingCertGenerationFailed", "")
        .await?;
    let untouched = f.secrets().get("taken").await?;
    ensure!(
        untouched.metadata.resource_version == foreign.metadata.resource_version,
        "the foreign Secret was modified"
    );

    // An ownerReference to the Service is not enough (anyone who may edit the Secret can add
    // one): without the UID annotation the Secret is not ours, as in OpenShift.
    let owner = f
        .create_service(json!({
            "metadata": { "name": "owner" },
            "spec": { "ports": [{ "port": 443 }] },
        }))
        .await?;
    let referring: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret",
        "metadata": { "name": "owner-tls", "ownerReferences": [{
            "apiVersion": "v1", "kind": "Service", "name": "owner",
            "uid": owner.metadata.uid.clone().unwrap_or_default(),
        }] },
        "type": "kubernetes.io/tls",
        "stringData": { "tls.crt": "mine", "tls.key": "mine" },
    }))?;
    let referring = f
        .secrets()
        .create(&PostParams::default(), &referring)
        .await?;
    f.services()
        .patch(
            "owner",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": {
                SERVING_CERT_SECRET_NAME: "owner-tls",
            }}})),
        )
        .await?;
    let owner = f
        .wait_for(
            &f.services(),
            "owner",
            "a generation error",
            |svc| match svc.annotations().get(SERVING_CERT_GENERATION_ERROR) {
                Some(_) => Ok(()),
                None => Err("no error yet".into()),
            },
        )
        .await?;
    let message = &owner.annotations()[SERVING_CERT_GENERATION_ERROR];
    ensure!(
        message.contains("secret/owner-tls already exists")
            && message.contains(ORIGINATING_SERVICE_UID),
        "{message}"
    );
    let untouched = f.secrets().get("owner-tls").await?;
    ensure!(
        untouched.metadata.resource_version == referring.metadata.resource_version,
        "an ownerRef-only Secret was taken over"
    );

    // Given up: touching the Service does not bring the count past 10.
    f.services()
        .patch(
            "svc",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "labels": { "touched": "yes" } } })),
        )
        .await?;
    let after_touch = f.services().get("svc").await?;
    // A later, unrelated write orders the check after any reconcile the touch could cause.
    f.service("marker", "marker-tls").await?;
    f.wait_signed("marker").await?;
    let svc = f.services().get("svc").await?;
    ensure!(
        svc.annotations()
            .get(SERVING_CERT_GENERATION_ERROR_NUM)
            .map(String::as_str)
            == Some("10"),
        "{:?}",
        svc.annotations()
    );
    ensure!(
        svc.metadata.resource_version == after_touch.metadata.resource_version,
        "written after giving up"
    );

    // The owner removes their Secret and clears the error: the certificate follows.
    f.secrets()
        .delete("taken", &DeleteParams::default())
        .await?;
    f.services()
        .patch(
            "svc",
            &PatchParams::default(),
            &Patch::Merge(json!({ "metadata": { "annotations": {
                SERVING_CERT_GENERATION_ERROR: null, SERVING_CERT_GENERATION_ERROR_NUM: null,
                ALPHA_SERVING_CERT_GENERATION_ERROR: null, ALPHA_SERVING_CERT_GENERATION_ERROR_NUM: null,
            }}})),
        )
        .await?;
    f.wait_issued("taken").await?;
    f.wait_signed("svc").await?;
    Ok(())
}

#[tokio::test]
async fn secrets_go_with_their_service() -> Result<()> {
    let f = Fixture::new("sca-gc").await?;
    let _op = f.operator().await?;
    f.service("gone", "gone-tls").await?;
    f.wait_issued("gone-tls").await?;
    f.services()
        .delete("gone", &DeleteParams::default())
        .await?;
    f.wait_gone(
        &f.secrets(),
        "gone-tls",
        "Secret gone-tls garbage-collected",
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_restart_over_valid_certificates_writes_nothing() -> Result<()> {
    let f = Fixture::new("sca-restart").await?;
    let op = f.operator().await?;
    for i in 0..5 {
        f.service(&format!("s{i}"), &format!("s{i}-tls")).await?;
    }
    f.injected_bundle("bundle").await?;
    for i in 0..5 {
        f.wait_signed(&format!("s{i}")).await?;
    }
    let secrets: Vec<String> = {
        let mut v = Vec::new();
        for i in 0..5 {
            v.push(data(
                &f.secrets().get(&format!("s{i}-tls")).await?,
                TLS_CERT_KEY,
            )?);
        }
        v
    };
    op.stop().await?;

    let op = f.operator().await?;
    wait::until(
        "the restarted operator reconciled every Service and ConfigMap",
        common::TIMEOUT,
        || async {
            let (s, c) = (
                op.metrics.reconciles("service"),
                op.metrics.reconciles("configmap"),
            );
            if s >= 5 && c >= 2 {
                Ok(())
            } else {
                Err(format!("{s} services, {c} configmaps"))
            }
        },
    )
    .await?;
    let requests = op.requests();
    ensure!(requests.writes() == 0, "writes after restart: {requests}");
    for (i, before) in secrets.iter().enumerate() {
        let now = data(&f.secrets().get(&format!("s{i}-tls")).await?, TLS_CERT_KEY)?;
        ensure!(&now == before, "s{i}-tls was reissued");
    }
    Ok(())
}

#[tokio::test]
async fn rsa_2048_keys_when_configured() -> Result<()> {
    let f = Fixture::new("sca-rsa").await?;
    let settings = service_ca_operator::controller::Settings {
        key_algorithm: KeyAlgorithm::Rsa2048,
        ..f.settings()
    };
    let _op = f.operator_with(settings).await?;
    f.service("legacy", "legacy-tls").await?;
    let secret = f.wait_issued("legacy-tls").await?;
    let crt = data(&secret, TLS_CERT_KEY)?;
    let leaf = parse_leaf(&crt)?;
    ensure!(
        leaf.key_algorithm == "RSA" && leaf.key_bits == 2048,
        "{leaf:?}"
    );
    let signing = f.signing_secret().await?;
    ensure!(
        leaf.authority_key_id == subject_key_id(&data(&signing, TLS_CERT_KEY)?)?,
        "AKI"
    );
    let bundle = f.published_bundle().await?;
    handshake(
        &crt,
        &data(&secret, TLS_KEY_KEY)?,
        &bundle,
        &format!("legacy.{}.svc", f.ns),
    )
    .await?;
    Ok(())
}

#[tokio::test]
async fn an_invalid_secret_name_is_reported_on_the_service_not_retried_forever() -> Result<()> {
    let f = Fixture::new("sca-invalid").await?;
    let _op = f.operator().await?;
    f.service("bad", "Not_A_Valid_Name").await?;
    let svc = f
        .wait_service_annotation("bad", SERVING_CERT_GENERATION_ERROR_NUM, "10")
        .await?;
    let message = svc
        .annotations()
        .get(SERVING_CERT_GENERATION_ERROR)
        .cloned()
        .unwrap_or_default();
    ensure!(
        message.contains("Not_A_Valid_Name") && message.contains("RFC 1123"),
        "the apiserver's reason must reach the user: {message}"
    );
    let note = f
        .wait_event(&f.ns, "Service", "bad", "ServingCertGenerationFailed", "")
        .await?;
    ensure!(note.contains("Not_A_Valid_Name"), "{note}");
    Ok(())
}
