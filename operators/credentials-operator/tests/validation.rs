//! Invalid CredentialsRequests are rejected by the CRD schema and CEL rules with messages that
//! name the field and say what is expected (no operator needed).

mod common;

use anyhow::{Result, bail, ensure};
use common::Fixture;
use credentials_operator::api::CredentialsRequest;
use kube::api::PostParams;
use serde_json::{Value, json};

fn request(spec: Value) -> Value {
    json!({
        "apiVersion": "cloudcredential.openshift.io/v1", "kind": "CredentialsRequest",
        "metadata": { "name": "invalid" },
        "spec": spec,
    })
}

fn aws(entries: Value) -> Value {
    json!({
        "secretRef": { "name": "s", "namespace": "ns" },
        "providerSpec": { "apiVersion": "cloudcredential.openshift.io/v1", "kind": "AWSProviderSpec", "statementEntries": entries },
    })
}

#[tokio::test]
async fn invalid_requests_are_rejected_with_clear_messages() -> Result<()> {
    let f = Fixture::new("cred-invalid").await?;
    let api = f.requests();
    let cases: Vec<(&str, Value, Vec<&str>)> = vec![
        (
            "bad effect",
            request(aws(
                json!([{ "effect": "Maybe", "action": ["ec2:DescribeInstances"], "resource": "*" }]),
            )),
            vec![
                "spec.providerSpec.statementEntries[0].effect",
                "Unsupported value: \"Maybe\"",
                "\"Allow\", \"Deny\"",
            ],
        ),
        (
            "empty actions",
            request(aws(
                json!([{ "effect": "Allow", "action": [], "resource": "*" }]),
            )),
            vec![
                "spec.providerSpec.statementEntries[0].action",
                "should have at least 1 items",
            ],
        ),
        (
            "malformed action",
            request(aws(
                json!([{ "effect": "Allow", "action": ["describe everything"], "resource": "*" }]),
            )),
            vec![
                "spec.providerSpec.statementEntries[0].action",
                "service:Action",
            ],
        ),
        (
            "no statements",
            request(aws(json!([]))),
            vec![
                "spec.providerSpec",
                "at least one entry in statementEntries",
            ],
        ),
        (
            "missing secretRef",
            request(
                json!({ "providerSpec": { "kind": "AWSProviderSpec", "statementEntries": [{ "effect": "Allow", "action": ["*"], "resource": "*" }] } }),
            ),
            vec!["spec.secretRef", "Required value"],
        ),
        (
            "invalid secret name",
            request(json!({
                "secretRef": { "name": "Not_Valid", "namespace": "ns" },
                "providerSpec": { "kind": "AWSProviderSpec", "statementEntries": [{ "effect": "Allow", "action": ["*"], "resource": "*" }] },
            })),
            vec!["spec.secretRef.name", "valid Secret name"],
        ),
        (
            "missing resource",
            request(aws(
                json!([{ "effect": "Allow", "action": ["s3:GetObject"] }]),
            )),
            vec![
                "spec.providerSpec.statementEntries[0].resource",
                "Required value",
            ],
        ),
    ];
    let resource = kube::discovery::ApiResource::erase::<CredentialsRequest>(&());
    let raw: kube::Api<kube::api::DynamicObject> =
        kube::Api::namespaced_with(f.client.clone(), &f.ns, &resource);
    for (what, body, expected) in cases {
        // Sent as raw JSON: most of these can't even be built with the Rust type.
        let object: kube::api::DynamicObject = serde_json::from_value(body)?;
        match raw.create(&PostParams::default(), &object).await {
            Ok(_) => bail!("{what}: accepted"),
            Err(kube::Error::Api(status)) => {
                ensure!(status.code == 422, "{what}: {status:?}");
                for e in &expected {
                    ensure!(
                        status.message.contains(e),
                        "{what}: {:?} lacks {e:?}",
                        status.message
                    );
                }
            }
            Err(e) => bail!("{what}: {e}"),
        }
    }
    // The talk's request is valid.
    api.create(&PostParams::default(), &f.sample("talk", "s", None)?)
        .await?;
    Ok(())
}
