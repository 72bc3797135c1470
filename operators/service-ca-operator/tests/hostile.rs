//! Malformed annotations on Services and ConfigMaps — wrong values, huge values, unicode, name
//! collisions — never crash service-ca-operator and never cause writes to objects that didn't
//! ask for them.

mod common;

use std::collections::BTreeMap;

use anyhow::{Result, ensure};
use common::Fixture;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::ResourceExt;
use kube::api::{ListParams, PostParams};
use operon_cluster::wait;
use serde_json::json;
use service_ca_operator::*;

#[tokio::test]
async fn malformed_annotations_never_crash_or_spill_over() -> Result<()> {
    let f = Fixture::new("sca-hostile").await?;
    let op = f.operator().await?;
    // Bystanders: a Secret and a ConfigMap nobody asked the operator about.
    let bystander_secret: Secret = serde_json::from_value(json!({
        "apiVersion": "v1", "kind": "Secret", "metadata": { "name": "bystander" },
        "stringData": { "k": "v" },
    }))?;
    let bystander_secret = f
        .secrets()
        .create(&PostParams::default(), &bystander_secret)
        .await?;

    let huge = "a".repeat(100_000);
    let secret_names = [
        "Invalid_Name".to_string(),
        "ünïcödé".to_string(),
        "a".repeat(254),
        "-leading-dash".to_string(),
        "dots..double".to_string(),
        " ".to_string(),
        huge.clone(),
        "bystander".to_string(), // collision with a foreign Secret
        "shared".to_string(),    // two Services asking for the same Secret
        "shared".to_string(),
    ];
    for (i, name) in secret_names.iter().enumerate() {
        let svc: Service = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "Service",
            "metadata": { "name": format!("svc-{i}"), "annotations": {
                SERVING_CERT_SECRET_NAME: name,
                ALPHA_SERVING_CERT_SECRET_NAME: "alpha-loses",
                // Garbage in our own output annotations must not confuse the operator.
                SERVING_CERT_GENERATION_ERROR_NUM: if i % 3 == 0 { "NaN" } else { "" },
            }},
            "spec": { "ports": [{ "port": 443 }] },
        }))?;
        f.services().create(&PostParams::default(), &svc).await?;
    }
    let inject_values = ["yes", "TRUE ", "1", "ＴＲＵＥ", huge.as_str(), "true\u{0}"];
    for (i, value) in inject_values.iter().enumerate() {
        let cm: ConfigMap = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": { "name": format!("cm-{i}"), "annotations": { INJECT_CABUNDLE: value } },
            "data": { "keep": "me" },
        }))?;
        match f.configmaps().create(&PostParams::default(), &cm).await {
            Ok(_) => {}
            // The API server refuses some values itself (e.g. NUL): nothing for the operator.
            Err(kube::Error::Api(s)) if s.code == 422 || s.code == 400 => {}
            Err(e) => return Err(e.into()),
        }
    }
    // A valid request after all of them: once it is served, the others have been seen.
    f.service("valid", "valid-tls").await?;
    f.wait_signed("valid").await?;

    // Invalid names: the Service carries the apiserver's reason, no Secret of that name.
    let services = f.services();
    wait::until(
        "error annotations on the invalid requests",
        common::TIMEOUT,
        || async {
            let mut missing = Vec::new();
            for i in [0usize, 1, 2, 3, 4, 5, 6, 7] {
                let svc = services
                    .get(&format!("svc-{i}"))
                    .await
                    .map_err(|e| e.to_string())?;
                if !svc
                    .annotations()
                    .contains_key(SERVING_CERT_GENERATION_ERROR)
                {
                    missing.push(i);
                }
            }
            if missing.is_empty() {
                Ok(())
            } else {
                Err(format!("no error yet on {missing:?}"))
            }
        },
    )
    .await?;
    // The shared name: one of the two Services owns it, the other is told.
    let secret = f.wait_issued("shared").await?;
    let owner = secret
        .annotations()
        .get(ORIGINATING_SERVICE_NAME)
        .cloned()
        .unwrap_or_default();
    ensure!(owner == "svc-8" || owner == "svc-9", "owner {owner}");
    let other = if owner == "svc-8" { "svc-9" } else { "svc-8" };
    let other = f
        .wait_service_annotation(other, SERVING_CERT_GENERATION_ERROR_NUM, "10")
        .await?;
    ensure!(
        other
            .annotations()
            .get(SERVING_CERT_GENERATION_ERROR)
            .is_some_and(|m| m.contains("secret/shared"))
    );

    // No spill-over: the bystander Secret is untouched, the only Secrets are the issued ones, no
    // ConfigMap was injected, and nothing under the alpha name was created.
    ensure!(
        f.secrets().get("bystander").await?.resource_version()
            == bystander_secret.resource_version(),
        "the foreign Secret was modified"
    );
    let issued: BTreeMap<String, String> = f
        .secrets()
        .list(&ListParams::default().labels(&format!("{MANAGED_BY_LABEL}={MANAGED_BY}")))
        .await?
        .into_iter()
        .map(|s| {
            (
                s.name_any(),
                s.annotations()
                    .get(ORIGINATING_SERVICE_NAME)
                    .cloned()
                    .unwrap_or_default(),
            )
        })
        .collect();
    ensure!(
        issued.keys().map(String::as_str).collect::<Vec<_>>() == ["shared", "valid-tls"],
        "issued {issued:?}"
    );
    // A huge name gives a bounded error annotation (annotations are limited to 256 KiB).
    let huge_svc = f.services().get("svc-6").await?;
    let error = huge_svc
        .annotations()
        .get(SERVING_CERT_GENERATION_ERROR)
        .cloned()
        .unwrap_or_default();
    ensure!(
        error.len() <= 1024,
        "error annotation of {} bytes",
        error.len()
    );
    ensure!(f.secrets().get_opt("alpha-loses").await?.is_none());
    for cm in f.configmaps().list(&ListParams::default()).await? {
        let name = cm.name_any();
        let data = cm.data.unwrap_or_default();
        ensure!(
            !data.contains_key(INJECTED_CA_BUNDLE_KEY),
            "{name} was injected"
        );
    }
    ensure!(op.is_alive(), "the operator must survive every input");
    Ok(())
}
