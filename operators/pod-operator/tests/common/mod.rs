//! pod-operator's side of the shared harness (`operon_harness`): the CRD installed in
//! each test's namespace, the talk's sample, the operator serving that namespace, and waits on
//! PodRequests.

#![allow(dead_code, unused_imports)]

use std::sync::Arc;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use kube::{Client, CustomResourceExt};
pub use operon_harness::TIMEOUT;
use operon_harness::{self as operator, InProcess};
use operon_runtime::conditions;
use operon_runtime::manager::Manager;
use operon_runtime::metrics::{ControllerMetrics, Metrics};
use pod_operator::api::PodRequest;
use pod_operator::controller::{self, Settings};

/// The operator's ServiceAccount, as deployed.
pub const OPERATOR_NAMESPACE: &str = pod_operator::deploy::NAMESPACE;
pub const OPERATOR_SERVICE_ACCOUNT: &str = "pod-operator-controller-manager";

pub type Operator = InProcess<Arc<ControllerMetrics>>;

/// The generated namespace, ServiceAccount and RBAC, and the aggregated user roles.
pub async fn install_rbac(client: &Client) -> Result<()> {
    let m = pod_operator::deploy::manifests("test")?;
    let user_roles = m.user_roles().into_iter().map(|(_, role)| role).collect();
    Ok(operator::install_rbac(client, &m, user_roles).await?)
}

/// A test's namespace with the PodRequest CRD installed.
pub struct Fixture(operator::Fixture);

impl std::ops::Deref for Fixture {
    type Target = operator::Fixture;
    fn deref(&self) -> &operator::Fixture {
        &self.0
    }
}

impl Fixture {
    pub async fn new(prefix: &str) -> Result<Fixture> {
        let f = operator::Fixture::new(prefix).await?;
        let crd = PodRequest::crd();
        operon_cluster::apply::apply_crd(&f.client, &crd, "pod-operator-tests").await?;
        Ok(Fixture(f))
    }

    pub fn requests(&self) -> Api<PodRequest> {
        self.api()
    }

    pub fn pods(&self) -> Api<Pod> {
        self.api()
    }

    /// pod-operator serving this namespace, as its own ServiceAccount.
    pub async fn operator(&self) -> Result<Operator> {
        let registry = Metrics::new();
        let metrics = registry.controller("podrequest");
        let ns = self.ns.clone();
        let manifests = pod_operator::deploy::manifests("test")?;
        let user_roles = manifests.user_roles().into_iter().map(|(_, r)| r).collect();
        Ok(
            InProcess::start(self.env, &manifests, user_roles, metrics, |client, stop| {
                let mut manager = Manager::new(controller::MANAGER, client)
                    .namespaces([ns])
                    .instance(Some("test".into()))
                    .metrics(registry)
                    .stop(stop);
                controller::register(&mut manager, &Settings::default());
                manager.run()
            })
            .await?,
        )
    }

    /// The talk's `podrequest.yaml` (slide 72), in this test's namespace.
    pub fn sample(&self) -> Result<PodRequest> {
        let mut pr: PodRequest =
            serde_saphyr::from_str(pod_operator::deploy::SAMPLE).context("the sample")?;
        pr.metadata.namespace = Some(self.ns.clone());
        Ok(pr)
    }

    /// Waits until an Event about PodRequest `name` has `reason` and a note containing `note`.
    pub async fn wait_event(&self, name: &str, reason: &str, note: &str) -> Result<()> {
        let f = &self.0;
        f.wait_event(&f.ns, "PodRequest", name, reason, note)
            .await?;
        Ok(())
    }

    /// Waits until PodRequest `name` is Ready for its current generation.
    pub async fn wait_ready(&self, name: &str) -> Result<PodRequest> {
        let what = format!("PodRequest {name} Ready");
        Ok(self
            .wait_for(&self.requests(), name, &what, |pr| {
                let status = pr.status.clone().unwrap_or_default();
                let ready = conditions::is_true(&status.conditions, "Ready");
                match ready && status.observed_generation == pr.metadata.generation {
                    true => Ok(()),
                    false => Err(format!("status {status:?}")),
                }
            })
            .await?)
    }

    /// Waits until condition `type_` of `name` has `status` and `reason`.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) -> Result<PodRequest> {
        let what = format!("{name} {type_}={status} ({reason})");
        Ok(self
            .wait_for(&self.requests(), name, &what, |pr| {
                let conditions = pr.status.clone().unwrap_or_default().conditions;
                match conditions::get(&conditions, type_) {
                    Some(c) if c.status == status && c.reason == reason => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await?)
    }

    /// Waits until all `expected` PodRequests of the namespace are Ready, then checks that each
    /// has exactly one Pod, controlled by it, and that no other Pod exists.
    pub async fn assert_converged(&self, expected: usize) -> Result<()> {
        let ready = |pr: &PodRequest| {
            let status = pr.status.as_ref();
            status.is_some_and(|s| conditions::is_true(&s.conditions, "Ready"))
        };
        Ok(self
            .assert_one_child_each::<PodRequest, Pod>(expected, ready)
            .await?)
    }
}
