//! The IAM calls the operator makes, on the AWS SDK for Rust. Configuration follows the SDK's
//! conventions (`AWS_REGION`, `AWS_ENDPOINT_URL_IAM`, `AWS_ENDPOINT_URL`, …); the credentials
//! are always the root Secret's, never the environment's.
//!
//! Errors keep the operation, IAM's error code and message; [`scrub`] removes anything that
//! looks like key material before a message reaches a condition, an Event or a log.

use std::time::Duration;

use aws_credential_types::Credentials;
use aws_sdk_iam::error::{ProvideErrorMetadata, SdkError};
use aws_sdk_iam::types::Tag;

/// An IAM error, scrubbed of key material.
#[derive(Debug, Clone, thiserror::Error)]
#[error("IAM {op}: {}{message}", code.as_deref().map(|c| format!("{c}: ")).unwrap_or_default())]
pub struct CloudError {
    pub op: &'static str,
    pub code: Option<String>,
    pub message: String,
}

impl CloudError {
    pub fn is_no_such_entity(&self) -> bool {
        self.code.as_deref() == Some("NoSuchEntity")
    }
}

fn cloud_error<E, R>(op: &'static str) -> impl FnOnce(SdkError<E, R>) -> CloudError
where
    E: ProvideErrorMetadata + std::error::Error + 'static,
    R: std::fmt::Debug,
{
    move |err| {
        let code = err.code().map(str::to_owned);
        let message = match err.message() {
            Some(m) => m.to_owned(),
            // No IAM error in the answer (a timeout, or an endpoint that doesn't implement the
            // call): the chain of causes, without the raw response.
            None => causes(&err),
        };
        CloudError {
            op,
            code,
            message: scrub(&message),
        }
    }
}

/// An error and its sources, `: `-separated.
fn causes(err: &dyn std::error::Error) -> String {
    let mut text = err.to_string();
    let mut source = err.source();
    while let Some(cause) = source {
        text.push_str(": ");
        text.push_str(&cause.to_string());
        source = cause.source();
    }
    text
}

/// Replaces AWS access key IDs and anything shaped like a secret access key by `***`.
pub fn scrub(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    let flush = |word: &mut String, out: &mut String| {
        let is_key_id = word.len() >= 16
            && (word.starts_with("AKIA") || word.starts_with("ASIA"))
            && word
                .chars()
                .all(|c| c.is_ascii_uppercase() || c.is_ascii_digit());
        let is_secret = word.len() >= 30
            && word
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '/' || c == '+' || c == '=')
            && word.chars().any(|c| c.is_ascii_digit())
            && word.chars().any(|c| c.is_ascii_lowercase())
            && word.chars().any(|c| c.is_ascii_uppercase());
        if is_key_id || is_secret {
            out.push_str("***");
        } else {
            out.push_str(word);
        }
        word.clear();
    };
    for c in text.chars() {
        if c.is_ascii_alphanumeric() || c == '/' || c == '+' || c == '=' {
            word.push(c);
        } else {
            flush(&mut word, &mut out);
            out.push(c);
        }
    }
    flush(&mut word, &mut out);
    out
}

/// Where IAM is and how long a call may take.
#[derive(Debug, Clone, Default)]
pub struct Endpoint {
    /// Overrides the SDK's endpoint resolution (`AWS_ENDPOINT_URL_IAM` etc. otherwise).
    pub url: Option<String>,
    /// Overrides `AWS_REGION`; IAM is global, the region only scopes the signature.
    pub region: Option<String>,
}

/// An access key as listed.
#[derive(Debug, Clone)]
pub struct AccessKey {
    pub id: String,
    pub created: Option<std::time::SystemTime>,
}

/// A freshly created access key.
pub struct NewAccessKey {
    pub id: String,
    pub secret: String,
}

impl std::fmt::Debug for NewAccessKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NewAccessKey").finish_non_exhaustive()
    }
}

/// An IAM client acting with one set of credentials.
#[derive(Clone, Debug)]
pub struct Iam {
    client: aws_sdk_iam::Client,
}

impl Iam {
    /// A client for `access_key_id`/`secret_access_key`, with the SDK's environment-derived
    /// settings (`shared` comes from [`load_sdk_config`]) and `endpoint`'s overrides.
    pub fn new(
        shared: &aws_config::SdkConfig,
        endpoint: &Endpoint,
        access_key_id: &str,
        secret_access_key: &str,
    ) -> Iam {
        let mut config = aws_sdk_iam::config::Builder::from(shared)
            .credentials_provider(Credentials::new(
                access_key_id,
                secret_access_key,
                None,
                None,
                "credentials-operator",
            ))
            .timeout_config(
                aws_config::timeout::TimeoutConfig::builder()
                    .connect_timeout(Duration::from_secs(5))
                    .operation_attempt_timeout(Duration::from_secs(20))
                    .build(),
            );
        if let Some(url) = &endpoint.url {
            config = config.endpoint_url(url);
        }
        let region = endpoint
            .region
            .clone()
            .or_else(|| shared.region().map(|r| r.to_string()))
            // IAM is global; the region only scopes the signature.
            .unwrap_or_else(|| "us-east-1".to_owned());
        config = config.region(aws_config::Region::new(region));
        Iam {
            client: aws_sdk_iam::Client::from_conf(config.build()),
        }
    }

    /// The underlying SDK client (for callers that need more than the operator does).
    pub fn sdk(&self) -> &aws_sdk_iam::Client {
        &self.client
    }

    /// The user's ARN; `None` when it doesn't exist.
    pub async fn user_arn(&self, user: &str) -> Result<Option<String>, CloudError> {
        match self.client.get_user().user_name(user).send().await {
            Ok(out) => Ok(out.user().map(|u| u.arn().to_owned())),
            Err(e) => {
                let e = cloud_error("GetUser")(e);
                if e.is_no_such_entity() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The name of the user these credentials belong to (`GetUser` without a name).
    pub async fn whoami(&self) -> Result<String, CloudError> {
        Ok(self.caller().await?.name)
    }

    /// Who these credentials are (`GetUser` without a name): name, ARN, permissions boundary
    /// and tags.
    pub async fn caller(&self) -> Result<Caller, CloudError> {
        let out = self
            .client
            .get_user()
            .send()
            .await
            .map_err(cloud_error("GetUser"))?;
        let Some(user) = out.user() else {
            return Err(CloudError {
                op: "GetUser",
                code: None,
                message: "the answer names no user".into(),
            });
        };
        Ok(Caller {
            name: user.user_name().to_owned(),
            arn: user.arn().to_owned(),
            permissions_boundary: user
                .permissions_boundary()
                .and_then(|b| b.permissions_boundary_arn())
                .map(str::to_owned),
            tags: user
                .tags()
                .iter()
                .map(|t| (t.key().to_owned(), t.value().to_owned()))
                .collect(),
        })
    }

    /// Creates the user with `tags` and, when given, a permissions boundary; returns its ARN.
    pub async fn create_user(
        &self,
        user: &str,
        tags: &[(String, String)],
        permissions_boundary: Option<&str>,
    ) -> Result<String, CloudError> {
        match self
            .client
            .create_user()
            .user_name(user)
            .set_tags(Some(sdk_tags("CreateUser", tags)?))
            .set_permissions_boundary(permissions_boundary.map(str::to_owned))
            .send()
            .await
        {
            Ok(out) => Ok(out.user().map(|u| u.arn().to_owned()).unwrap_or_default()),
            Err(e) => {
                let e = cloud_error("CreateUser")(e);
                // Created by an earlier attempt whose answer was lost: ours, by its name.
                if e.code.as_deref() == Some("EntityAlreadyExists") {
                    Ok(self.user_arn(user).await?.unwrap_or_default())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The user's tags (`NoSuchEntity` when there is no such user).
    pub async fn user_tags(&self, user: &str) -> Result<Vec<(String, String)>, CloudError> {
        let out = self
            .client
            .list_user_tags()
            .user_name(user)
            .send()
            .await
            .map_err(cloud_error("ListUserTags"))?;
        Ok(out
            .tags()
            .iter()
            .map(|t| (t.key().to_owned(), t.value().to_owned()))
            .collect())
    }

    /// Adds or corrects `tags` on the user, which carries `current` (other tags stay); whether
    /// anything was written.
    pub async fn ensure_tags(
        &self,
        user: &str,
        tags: &[(String, String)],
        current: &[(String, String)],
    ) -> Result<bool, CloudError> {
        let missing: Vec<(String, String)> = tags
            .iter()
            .filter(|t| !current.contains(t))
            .cloned()
            .collect();
        if missing.is_empty() {
            return Ok(false);
        }
        self.client
            .tag_user()
            .user_name(user)
            .set_tags(Some(sdk_tags("TagUser", &missing)?))
            .send()
            .await
            .map_err(cloud_error("TagUser"))?;
        Ok(true)
    }

    /// The user's inline policy document, URL-decoded; `None` when absent.
    pub async fn user_policy(
        &self,
        user: &str,
        policy: &str,
    ) -> Result<Option<String>, CloudError> {
        match self
            .client
            .get_user_policy()
            .user_name(user)
            .policy_name(policy)
            .send()
            .await
        {
            Ok(out) => {
                let doc = out.policy_document();
                let decoded = percent_encoding::percent_decode_str(doc)
                    .decode_utf8()
                    .map(|d| d.into_owned())
                    .unwrap_or_else(|_| doc.to_owned());
                Ok(Some(decoded))
            }
            Err(e) => {
                let e = cloud_error("GetUserPolicy")(e);
                if e.is_no_such_entity() {
                    Ok(None)
                } else {
                    Err(e)
                }
            }
        }
    }

    pub async fn put_user_policy(
        &self,
        user: &str,
        policy: &str,
        document: &str,
    ) -> Result<(), CloudError> {
        self.client
            .put_user_policy()
            .user_name(user)
            .policy_name(policy)
            .policy_document(document)
            .send()
            .await
            .map_err(cloud_error("PutUserPolicy"))?;
        Ok(())
    }

    pub async fn list_access_keys(&self, user: &str) -> Result<Vec<AccessKey>, CloudError> {
        let out = self
            .client
            .list_access_keys()
            .user_name(user)
            .send()
            .await
            .map_err(cloud_error("ListAccessKeys"))?;
        Ok(out
            .access_key_metadata()
            .iter()
            .filter_map(|k| {
                Some(AccessKey {
                    id: k.access_key_id()?.to_owned(),
                    created: k
                        .create_date()
                        .and_then(|d| std::time::SystemTime::try_from(*d).ok()),
                })
            })
            .collect())
    }

    pub async fn create_access_key(&self, user: &str) -> Result<NewAccessKey, CloudError> {
        let out = self
            .client
            .create_access_key()
            .user_name(user)
            .send()
            .await
            .map_err(cloud_error("CreateAccessKey"))?;
        let key = out.access_key().ok_or_else(|| CloudError {
            op: "CreateAccessKey",
            code: None,
            message: "no access key in the answer".into(),
        })?;
        Ok(NewAccessKey {
            id: key.access_key_id().to_owned(),
            secret: key.secret_access_key().to_owned(),
        })
    }

    /// Deletes an access key; an already deleted one is fine.
    pub async fn delete_access_key(&self, user: &str, id: &str) -> Result<(), CloudError> {
        match self
            .client
            .delete_access_key()
            .user_name(user)
            .access_key_id(id)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = cloud_error("DeleteAccessKey")(e);
                if e.is_no_such_entity() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Deletes the user's inline policy; an absent one is fine.
    pub async fn delete_user_policy(&self, user: &str, policy: &str) -> Result<(), CloudError> {
        match self
            .client
            .delete_user_policy()
            .user_name(user)
            .policy_name(policy)
            .send()
            .await
        {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = cloud_error("DeleteUserPolicy")(e);
                if e.is_no_such_entity() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// Deletes the user; an absent one is fine.
    pub async fn delete_user(&self, user: &str) -> Result<(), CloudError> {
        match self.client.delete_user().user_name(user).send().await {
            Ok(_) => Ok(()),
            Err(e) => {
                let e = cloud_error("DeleteUser")(e);
                if e.is_no_such_entity() {
                    Ok(())
                } else {
                    Err(e)
                }
            }
        }
    }

    /// The actions of `actions` these credentials may not perform, by IAM's policy simulator
    /// (`SimulatePrincipalPolicy`, every page, with `aws:RequestedRegion` = `region` when
    /// given). The account's root user may do everything and is not simulated (IAM can't
    /// simulate it). A simulation that fails is an error, never a pass.
    pub async fn denied_actions(
        &self,
        actions: &[String],
        region: Option<&str>,
    ) -> Result<Vec<String>, CloudError> {
        let me = self.caller().await?;
        if is_account_root(&me.arn) {
            return Ok(Vec::new());
        }
        let context = region
            .map(|region| {
                aws_sdk_iam::types::ContextEntry::builder()
                    .context_key_name("aws:RequestedRegion")
                    .context_key_type(aws_sdk_iam::types::ContextKeyTypeEnum::String)
                    .context_key_values(region)
                    .build()
            })
            .into_iter()
            .collect::<Vec<_>>();
        let mut denied = Vec::new();
        let mut marker: Option<String> = None;
        loop {
            let out = self
                .client
                .simulate_principal_policy()
                .policy_source_arn(&me.arn)
                .set_action_names(Some(actions.to_vec()))
                .set_context_entries(Some(context.clone()).filter(|c| !c.is_empty()))
                .set_marker(marker.take())
                .send()
                .await
                .map_err(cloud_error("SimulatePrincipalPolicy"))?;
            denied.extend(
                out.evaluation_results()
                    .iter()
                    .filter(|r| r.eval_decision().as_str() != "allowed")
                    .map(|r| r.eval_action_name().to_owned()),
            );
            match out.marker().filter(|_| out.is_truncated()) {
                Some(next) => marker = Some(next.to_owned()),
                None => break,
            }
        }
        Ok(denied)
    }
}

/// Who a set of credentials belongs to ([`Iam::caller`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Caller {
    pub name: String,
    pub arn: String,
    pub permissions_boundary: Option<String>,
    pub tags: Vec<(String, String)>,
}

/// Whether `arn` is an account's root user (`arn:aws:iam::123456789012:root`).
pub fn is_account_root(arn: &str) -> bool {
    arn.starts_with("arn:") && arn.ends_with(":root")
}

fn sdk_tags(op: &'static str, tags: &[(String, String)]) -> Result<Vec<Tag>, CloudError> {
    tags.iter()
        .map(|(k, v)| {
            Tag::builder()
                .key(k)
                .value(v)
                .build()
                .map_err(|e| CloudError {
                    op,
                    code: None,
                    message: e.to_string(),
                })
        })
        .collect()
}

/// The SDK's shared configuration from the environment (`AWS_REGION`, `AWS_ENDPOINT_URL_IAM`,
/// …), with the workspace's HTTP client (rustls on ring).
pub async fn load_sdk_config() -> aws_config::SdkConfig {
    let http = aws_smithy_http_client::Builder::new()
        .tls_provider(aws_smithy_http_client::tls::Provider::Rustls(
            aws_smithy_http_client::tls::rustls_provider::CryptoMode::Ring,
        ))
        .build_https();
    aws_config::defaults(aws_config::BehaviorVersion::latest())
        .http_client(http)
        // Credentials come from the root Secret; never look for others.
        .credentials_provider(Credentials::new("unset", "unset", None, None, "unset"))
        .load()
        .await
}

#[cfg(test)]
mod tests {
    use super::{is_account_root, scrub};

    /// moto ignores a user's permissions boundary, so the request itself is checked here: a
    /// minted user is created with the boundary and the tags it is given.
    #[tokio::test]
    async fn create_user_sends_the_boundary_and_the_tags() {
        let (http, requests) = aws_smithy_http_client::test_util::capture_request(None);
        let sdk = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .http_client(http)
            .region(aws_config::Region::new("us-east-1"))
            .credentials_provider(aws_credential_types::Credentials::new(
                "AKIDEXAMPLE",
                "secret",
                None,
                None,
                "test",
            ))
            .load()
            .await;
        let endpoint = super::Endpoint {
            url: Some("http://iam.invalid".into()),
            region: None,
        };
        let iam = super::Iam::new(&sdk, &endpoint, "AKIDEXAMPLE", "secret");
        // The captured answer is empty: only the request matters.
        let _ = iam
            .create_user(
                "minted",
                &[("kubernetes.io/cluster/c".into(), "owned".into())],
                Some("arn:aws:iam::123456789012:policy/boundary"),
            )
            .await;
        let request = requests.expect_request();
        let body = request
            .body()
            .bytes()
            .map(String::from_utf8_lossy)
            .unwrap_or_default();
        for expected in [
            "Action=CreateUser",
            "UserName=minted",
            "PermissionsBoundary=arn%3Aaws%3Aiam%3A%3A123456789012%3Apolicy%2Fboundary",
            "Tags.member.1.Key=kubernetes.io%2Fcluster%2Fc",
            "Tags.member.1.Value=owned",
        ] {
            assert!(body.contains(expected), "{expected} not in {body}");
        }
    }

    #[test]
    fn only_an_accounts_root_user_skips_the_simulation() {
        assert!(is_account_root("arn:aws:iam::123456789012:root"));
        assert!(is_account_root("arn:aws-us-gov:iam::123456789012:root"));
        assert!(!is_account_root("arn:aws:iam::123456789012:user/root"));
        assert!(!is_account_root("arn:aws:iam::123456789012:user/installer"));
        assert!(!is_account_root("root"));
    }

    #[test]
    fn scrub_removes_key_material() {
        let text =
            "key AKIAIOSFODNN7EXAMPLE with secret wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY denied";
        let scrubbed = scrub(text);
        assert_eq!(scrubbed, "key *** with secret *** denied");
        assert_eq!(
            scrub("User: arn:aws:iam::123456789012:user/x is not authorized"),
            "User: arn:aws:iam::123456789012:user/x is not authorized"
        );
    }
}
