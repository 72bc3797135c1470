//! credentials-operator's side of the shared harness (`operon_harness`): the CRD and a
//! root credentials Secret in each test's namespace, its own moto IAM emulator, the operator
//! serving that namespace, and an IAM client to check what exists in the "cloud".

#![allow(dead_code, unused_imports)]

use std::sync::Arc;

use anyhow::{Context as _, Result};
use credentials_operator::api::{CredentialsRequest, CredentialsRequestCondition};
use credentials_operator::controller::{self, Settings};
use credentials_operator::iam::{Endpoint, Iam};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{Api, PostParams};
use kube::{Client, CustomResourceExt};
pub use operon_envtest::secret_text as data;
pub use operon_harness::TIMEOUT;
use operon_harness::{self as operator, InProcess};
use operon_moto::Moto;
use operon_runtime::manager::Manager;
use operon_runtime::metrics::{ControllerMetrics, Metrics};
use serde_json::json;

const MANAGER: &str = "credentials-operator-tests";
pub const CLUSTER_ID: &str = "operon-test-cluster-id";
/// Root credentials of the emulator (moto accepts any).
pub const ROOT_KEY_ID: &str = "AKIAROOTROOTROOTROOT";
pub const ROOT_SECRET: &str = "rootSecretAccessKey0123456789abcdefABCDEF";
pub const OPERATOR_NAMESPACE: &str = credentials_operator::deploy::NAMESPACE;

pub type Operator = InProcess<Arc<ControllerMetrics>>;

pub struct Fixture {
    base: operator::Fixture,
    pub moto: Moto,
}

impl std::ops::Deref for Fixture {
    type Target = operator::Fixture;
    fn deref(&self) -> &operator::Fixture {
        &self.base
    }
}

impl Fixture {
    pub async fn new(prefix: &str) -> Result<Fixture> {
        let base = operator::Fixture::new(prefix).await?;
        let crd = CredentialsRequest::crd();
        operon_cluster::apply::apply_crd(&base.client, &crd, MANAGER).await?;
        let root = json!({
            "apiVersion": "v1", "kind": "Secret",
            "metadata": { "name": "aws-creds", "namespace": base.ns },
            "stringData": { "aws_access_key_id": ROOT_KEY_ID, "aws_secret_access_key": ROOT_SECRET },
        });
        operon_cluster::apply::apply(&base.client, &root, MANAGER).await?;
        let moto = Moto::start().await?;
        Ok(Fixture { base, moto })
    }

    pub fn settings(&self) -> Settings {
        Settings {
            root_secret_namespace: self.ns.clone(),
            root_secret_name: "aws-creds".into(),
            cluster_id: CLUSTER_ID.into(),
            endpoint: self.endpoint(),
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
        self.operator_with(self.settings()).await
    }

    /// credentials-operator with `settings`, serving this test's namespace, as its own
    /// ServiceAccount.
    pub async fn operator_with(&self, settings: Settings) -> Result<Operator> {
        self.operator_via(settings, |client| client).await
    }

    /// Like [`operator_with`](Self::operator_with), with the client the operator uses made by
    /// `connect` from its ServiceAccount's (e.g. one through a proxy the test controls).
    pub async fn operator_via(
        &self,
        settings: Settings,
        connect: impl FnOnce(Client) -> Client,
    ) -> Result<Operator> {
        let manifests = credentials_operator::deploy::manifests("test")?;
        let registry = Metrics::new();
        let metrics = registry.controller(controller::CONTROLLER);
        let sdk = credentials_operator::iam::load_sdk_config().await;
        let ns = self.ns.clone();
        Ok(
            InProcess::start(self.env, &manifests, Vec::new(), metrics, |client, stop| {
                let mut manager = Manager::new(controller::MANAGER, connect(client))
                    .namespaces([ns])
                    .instance(Some("test".into()))
                    .metrics(registry)
                    .stop(stop);
                controller::register(&mut manager, &settings, &sdk);
                manager.run()
            })
            .await?,
        )
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
        self.api()
    }

    pub fn secrets(&self) -> Api<Secret> {
        self.api()
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

    /// Waits until request `name` is provisioned for its current generation.
    pub async fn wait_provisioned(&self, name: &str) -> Result<CredentialsRequest> {
        let what = format!("{name} provisioned");
        Ok(self
            .wait_for(&self.requests(), name, &what, |cr| {
                let status = cr.status.clone().unwrap_or_default();
                let current = Some(status.last_sync_generation) == cr.metadata.generation;
                match status.provisioned && current {
                    true => Ok(()),
                    false => Err(format!("{status:?}")),
                }
            })
            .await?)
    }

    /// Waits until condition `type_` of `name` is `status`; returns it.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
    ) -> Result<CredentialsRequestCondition> {
        let what = format!("{name} {type_}={status}");
        let cr = self
            .wait_for(&self.requests(), name, &what, |cr| {
                match condition(cr, type_) {
                    Some(c) if c.status == status => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await?;
        condition(&cr, type_).context("condition vanished")
    }

    /// Waits until an Event about request `name` has `reason`.
    pub async fn wait_event(&self, name: &str, reason: &str) -> Result<()> {
        let f = &self.base;
        f.wait_event(&f.ns, "CredentialsRequest", name, reason, "")
            .await?;
        Ok(())
    }

    /// Every IAM user name in the emulator.
    pub async fn iam_users(&self) -> Result<Vec<String>> {
        let out = self.iam().await.sdk().list_users().send().await?;
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
    let status = cr.status.as_ref()?;
    status.conditions.iter().find(|c| c.type_ == type_).cloned()
}
