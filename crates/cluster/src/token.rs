//! ServiceAccount tokens from the TokenRequest API: what a process running as an operator's
//! ServiceAccount outside the cluster (a benchmark, a test, a kubeconfig for a scraper)
//! authenticates with.

use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
use k8s_openapi::api::core::v1::ServiceAccount;
use kube::Client;
use kube::api::{Api, ObjectMeta, PostParams};

use crate::Error;

/// A token of ServiceAccount `namespace/name` (created if missing) from the TokenRequest API,
/// valid for `seconds`. `admin` must be allowed to create both.
pub async fn service_account_token(
    admin: &Client,
    namespace: &str,
    name: &str,
    seconds: i64,
) -> Result<String, Error> {
    let sas: Api<ServiceAccount> = Api::namespaced(admin.clone(), namespace);
    if sas.get_opt(name).await?.is_none() {
        let sa = ServiceAccount {
            metadata: ObjectMeta {
                name: Some(name.to_string()),
                ..Default::default()
            },
            ..Default::default()
        };
        match sas.create(&PostParams::default(), &sa).await {
            Ok(_) => {}
            Err(kube::Error::Api(s)) if s.code == 409 => {}
            Err(e) => return Err(e.into()),
        }
    }
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(seconds),
            ..Default::default()
        }),
        ..Default::default()
    };
    sas.create_token_request(name, &PostParams::default(), &request)
        .await?
        .status
        .and_then(|s| s.token)
        .ok_or(Error::NoToken)
}
