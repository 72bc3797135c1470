//! Test fixtures: a namespace per test with the CRD installed, its own moto IAM emulator and
//! root credentials Secret, credentials-operator running in-process as its own ServiceAccount
//! with the generated RBAC, and an IAM client to check what exists in the "cloud".

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use credentials_operator::api::{CredentialsRequest, CredentialsRequestCondition};
use credentials_operator::controller::{self, Settings};
use credentials_operator::iam::{Endpoint, Iam};
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams, PostParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use operon_envtest::moto::Moto;
use operon_envtest::{TestEnv, wait};
use operon_runtime::client::{RequestCounter, RequestCounts, counted_client};
use operon_runtime::metrics::ControllerMetrics;
use serde_json::json;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TIMEOUT: Duration = Duration::from_secs(60);
pub const MANAGER: &str = "credentials-operator-tests";
pub const CLUSTER_ID: &str = "operon-test-cluster-id";
/// Root credentials of the emulator (moto accepts any).
pub const ROOT_KEY_ID: &str = "AKIAROOTROOTROOTROOT";
pub const ROOT_SECRET: &str = "rootSecretAccessKey0123456789abcdefABCDEF";

pub struct Fixture {
    pub env: &'static TestEnv,
    pub ns: String,
    pub client: Client,
    pub moto: Moto,
}

impl Fixture {
    pub async fn new(prefix: &str) -> Result<Fixture> {
        let env = operon_envtest::shared().await?;
        let ns = env.namespace(prefix).await?.name().to_string();
        let client = env.client().await?;
        operon_envtest::apply::apply_crd(&client, &CredentialsRequest::crd(), MANAGER).await?;
        let moto = Moto::start().await?;
        let f = Fixture {
            env,
            ns,
            client,
            moto,
        };
        f.put_root_secret().await?;
        Ok(f)
    }

    pub async fn put_root_secret(&self) -> Result<()> {
        let secret = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "aws-creds", "namespace": self.ns },
            "stringData": { "aws_access_key_id": ROOT_KEY_ID, "aws_secret_access_key": ROOT_SECRET },
        });
        operon_envtest::apply::apply(&self.client, &secret, MANAGER).await?;
        Ok(())
    }

    pub fn settings(&self) -> Settings {
        Settings {
            namespaces: vec![self.ns.clone()],
            root_secret_namespace: self.ns.clone(),
            root_secret_name: "aws-creds".into(),
            cluster_id: CLUSTER_ID.into(),
            endpoint: self.endpoint(),
            instance: Some("test".into()),
            ..Settings::default()
        }
    }

    pub fn endpoint(&self) -> Endpoint {
        Endpoint {
            url: Some(self.moto.endpoint()),
            region: Some("us-east-1".into()),
        }
    }

    pub async fn operator(&self) -> Result<Operator> {
        Operator::start(self.env, self.settings()).await
    }

    /// An IAM client with the root credentials, to look at the emulator.
    pub async fn iam(&self) -> Iam {
        self.iam_as(ROOT_KEY_ID, ROOT_SECRET).await
    }

    pub async fn iam_as(&self, key_id: &str, secret: &str) -> Iam {
        let sdk = credentials_operator::iam::load_sdk_config().await;
        Iam::new(&sdk, &self.endpoint(), key_id, secret)
    }

    pub fn requests(&self) -> Api<CredentialsRequest> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn secrets(&self) -> Api<Secret> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// The talk's request (slide 43), in this test's namespace, writing to Secret `secret` of
    /// namespace `target` (this test's when `None`).
    pub fn sample(
        &self,
        name: &str,
        secret: &str,
        target: Option<&str>,
    ) -> Result<CredentialsRequest> {
        let mut cr: CredentialsRequest =
            serde_saphyr::from_str(credentials_operator::deploy::SAMPLE).context("the sample")?;
        cr.metadata.name = Some(name.into());
        cr.metadata.namespace = Some(self.ns.clone());
        cr.spec.secret_ref.name = secret.into();
        cr.spec.secret_ref.namespace = target.unwrap_or(&self.ns).into();
        Ok(cr)
    }

    pub async fn create(&self, cr: &CredentialsRequest) -> Result<CredentialsRequest> {
        Ok(self.requests().create(&PostParams::default(), cr).await?)
    }

    /// Waits until request `name` satisfies `ok`.
    pub async fn wait_request(
        &self,
        name: &str,
        what: &str,
        ok: impl Fn(&CredentialsRequest) -> Result<(), String>,
    ) -> Result<CredentialsRequest> {
        let api = self.requests();
        Ok(wait::until(what, TIMEOUT, || async {
            let cr = api.get(name).await.map_err(|e| e.to_string())?;
            ok(&cr).map(|()| cr)
        })
        .await?)
    }

    /// Waits until request `name` is provisioned for its current generation.
    pub async fn wait_provisioned(&self, name: &str) -> Result<CredentialsRequest> {
        self.wait_request(name, &format!("{name} provisioned"), |cr| {
            let status = cr.status.clone().unwrap_or_default();
            if status.provisioned && Some(status.last_sync_generation) == cr.metadata.generation {
                Ok(())
            } else {
                Err(format!("{status:?}"))
            }
        })
        .await
    }

    /// Waits until condition `type_` of `name` is `status`; returns it.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
    ) -> Result<CredentialsRequestCondition> {
        let cr = self
            .wait_request(
                name,
                &format!("{name} {type_}={status}"),
                |cr| match condition(cr, type_) {
                    Some(c) if c.status == status => Ok(()),
                    other => Err(format!("{other:?}")),
                },
            )
            .await?;
        condition(&cr, type_).context("condition vanished")
    }

    /// Reasons and notes of the Events about request `name`.
    pub async fn events(&self, name: &str) -> Result<Vec<(String, String)>> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        Ok(events
            .list(&ListParams::default())
            .await?
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("CredentialsRequest")
                        && r.name.as_deref() == Some(name)
                })
            })
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect())
    }

    /// Waits until an Event about request `name` has `reason` (Events are written in the
    /// background, after the reconcile that caused them).
    pub async fn wait_event(&self, name: &str, reason: &str) -> Result<()> {
        wait::until(&format!("Event {reason} about {name}"), TIMEOUT, || async {
            let events = self.events(name).await.map_err(|e| e.to_string())?;
            if events.iter().any(|(r, _)| r == reason) {
                Ok(())
            } else {
                Err(format!("{events:?}"))
            }
        })
        .await?;
        Ok(())
    }

    /// Every IAM user name in the emulator.
    pub async fn iam_users(&self) -> Result<Vec<String>> {
        let iam = self.iam().await;
        let out = iam.sdk().list_users().send().await?;
        let mut names: Vec<String> = out
            .users()
            .iter()
            .map(|u| u.user_name().to_owned())
            .collect();
        names.sort();
        Ok(names)
    }
}

pub fn condition(cr: &CredentialsRequest, type_: &str) -> Option<CredentialsRequestCondition> {
    cr.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .cloned()
}

/// A Secret value as text.
pub fn data(secret: &Secret, key: &str) -> Result<String> {
    let bytes = secret
        .data
        .as_ref()
        .and_then(|d| d.get(key))
        .with_context(|| format!("Secret {} has no {key}", secret.name_any()))?;
    Ok(String::from_utf8(bytes.0.clone())?)
}

/// Applies the operator's generated namespace, ServiceAccount and RBAC.
pub async fn install_rbac(client: &Client) -> Result<()> {
    let m = credentials_operator::deploy::manifests("test")?;
    let mut objects = vec![m.namespace_object()];
    objects.extend(m.operator_rbac());
    for obj in objects {
        operon_envtest::apply::apply(client, &obj, MANAGER).await?;
    }
    Ok(())
}

pub const OPERATOR_NAMESPACE: &str = credentials_operator::deploy::NAMESPACE;
pub const OPERATOR_SERVICE_ACCOUNT: &str = "credentials-operator-controller-manager";

/// credentials-operator running in this process as its own ServiceAccount.
pub struct Operator {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    counter: RequestCounter,
    pub metrics: Arc<ControllerMetrics>,
}

impl Operator {
    pub async fn start(env: &TestEnv, mut settings: Settings) -> Result<Operator> {
        if std::env::var_os("RUST_LOG").is_some() {
            operon_runtime::telemetry::init(operon_runtime::telemetry::LogFormat::Text, "info");
        }
        let admin = env.client().await?;
        install_rbac(&admin).await?;
        let config = env
            .service_account_config(OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT)
            .await?;
        let counter = RequestCounter::default();
        let client = counted_client(config, &counter)?;
        let metrics = Arc::new(ControllerMetrics::default());
        settings.metrics = metrics.clone();
        let (tx, rx) = oneshot::channel::<()>();
        let task = tokio::spawn(controller::run(client, settings, async move {
            let _ = rx.await;
        }));
        Ok(Operator {
            stop: Some(tx),
            task,
            counter,
            metrics,
        })
    }

    /// The controller task is still running (it never panicked or returned).
    pub fn is_alive(&self) -> bool {
        !self.task.is_finished()
    }

    pub fn requests(&self) -> RequestCounts {
        self.counter.snapshot()
    }

    pub async fn stop(mut self) -> Result<()> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        tokio::time::timeout(TIMEOUT, &mut self.task)
            .await
            .context("operator did not stop")??;
        Ok(())
    }
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
