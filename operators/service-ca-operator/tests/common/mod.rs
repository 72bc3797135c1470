//! service-ca-operator's side of the shared harness (`operon_harness`): a namespace per
//! test for its Services and one for its signer (so every test has its own CA), the operator
//! serving them, and waits on Secrets, Services and bundles. Certificates are checked with
//! `operon_envtest::tls`.

#![allow(dead_code, unused_imports)]

use std::sync::Arc;

use anyhow::Result;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use kube::ResourceExt;
use kube::api::{Api, PostParams};
use operon_cluster::wait;
pub use operon_envtest::secret_text as data;
pub use operon_envtest::tls::{handshake, parse_leaf, pem_ders, subject_key_id};
pub use operon_harness::TIMEOUT;
use operon_harness::{self as operator, InProcess};
use operon_runtime::admin::Readiness;
use operon_runtime::manager::Manager;
use operon_runtime::metrics::Metrics;
use serde_json::{Value, json};
use service_ca_operator::controller::{self, Settings};
use service_ca_operator::pki::SigningCa;
use service_ca_operator::{
    CA_BUNDLE_KEY, INJECTED_CA_BUNDLE_KEY, SERVING_CERT_SIGNED_BY, SIGNING_BUNDLE_CONFIGMAP,
    SIGNING_SECRET_NAME, TLS_CERT_KEY, TLS_KEY_KEY,
};

pub const OPERATOR_NAMESPACE: &str = service_ca_operator::deploy::NAMESPACE;

/// The operator's namespace Role and its binding, placed in `signer_ns`, where a test's CA lives.
fn signer_rbac(signer_ns: &str) -> Result<Vec<Value>> {
    let m = service_ca_operator::deploy::manifests("test")?;
    let mut objects: Vec<Value> = m.namespace_role().into_iter().collect();
    objects.extend(m.namespace_role_binding());
    for object in &mut objects {
        object["metadata"]["namespace"] = json!(signer_ns);
    }
    Ok(objects)
}

/// A test's namespace for its Services and one for its signer.
pub struct Fixture {
    base: operator::Fixture,
    pub signer_ns: String,
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
        let signer_ns = base.env.namespace(&format!("{prefix}-ca")).await?;
        let signer_ns = signer_ns.name().to_string();
        Ok(Fixture { base, signer_ns })
    }

    /// Settings serving this test's namespace, with the CA in its own namespace.
    pub fn settings(&self) -> Settings {
        Settings {
            namespace: self.signer_ns.clone(),
            inject_cluster_scoped: false,
            ..Settings::default()
        }
    }

    pub async fn operator(&self) -> Result<Operator> {
        self.operator_with(self.settings()).await
    }

    /// service-ca-operator with `settings`, as its own ServiceAccount.
    pub async fn operator_with(&self, settings: Settings) -> Result<Operator> {
        let manifests = service_ca_operator::deploy::manifests("test")?;
        let extra = signer_rbac(&settings.namespace)?;
        let (metrics, readiness) = (Metrics::new(), Readiness::new());
        readiness.set_not_ready("starting");
        let observed = Observed {
            metrics: metrics.clone(),
            readiness: readiness.clone(),
        };
        let ns = self.ns.clone();
        Ok(InProcess::start(
            self.env,
            &manifests,
            extra,
            observed,
            |client, stop| async move {
                let mut manager = Manager::new(controller::MANAGER, client)
                    .namespaces([ns])
                    .instance(Some("test".into()))
                    .metrics(metrics)
                    .readiness(readiness)
                    .stop(stop);
                controller::register(&mut manager, &settings)?;
                manager.run().await;
                Ok::<_, controller::Error>(())
            },
        )
        .await?)
    }

    /// `op` ready (every cache synced), a successful pass of its signer, and the bundle of the
    /// current CA published in the signer's namespace.
    pub async fn wait_ready(&self, op: &Operator) -> Result<()> {
        let readiness = &op.metrics.readiness;
        wait::until("operator ready", TIMEOUT, || async {
            match readiness.is_ready() {
                true => Ok(()),
                false => Err(readiness.reason().unwrap_or_default()),
            }
        })
        .await?;
        // The state below may predate this run, so first wait for one pass of this run's signer.
        let signer = op.metrics.metrics.controller("signer");
        wait::until("a successful signer pass", TIMEOUT, || async {
            match signer.reconciles() > signer.errors() {
                true => Ok(()),
                false => Err(format!("{} passes, all failed", signer.reconciles())),
            }
        })
        .await?;
        let ca = data(&self.signing_secret().await?, TLS_CERT_KEY)?;
        self.published_bundle_with(&ca).await?;
        Ok(())
    }

    pub fn services(&self) -> Api<Service> {
        self.api()
    }

    pub fn secrets(&self) -> Api<Secret> {
        self.api()
    }

    pub fn configmaps(&self) -> Api<ConfigMap> {
        self.api()
    }

    /// Creates a ClusterIP Service asking for serving Secret `secret`.
    pub async fn service(&self, name: &str, secret: &str) -> Result<Service> {
        let annotations = json!({ service_ca_operator::SERVING_CERT_SECRET_NAME: secret });
        self.create_service(json!({
            "metadata": { "name": name, "annotations": annotations },
            "spec": { "ports": [{ "port": 443, "targetPort": 8443 }] },
        }))
        .await
    }

    pub async fn create_service(&self, mut body: Value) -> Result<Service> {
        body["apiVersion"] = json!("v1");
        body["kind"] = json!("Service");
        let svc: Service = serde_json::from_value(body)?;
        Ok(self.services().create(&PostParams::default(), &svc).await?)
    }

    /// Waits for a valid serving Secret `name` (both keys present).
    pub async fn wait_issued(&self, name: &str) -> Result<Secret> {
        let (secrets, what) = (self.secrets(), format!("Secret {name} issued"));
        let issued = self.wait_for(&secrets, name, &what, |s| {
            let d = s.data.clone().unwrap_or_default();
            match d.contains_key(TLS_CERT_KEY) && d.contains_key(TLS_KEY_KEY) {
                true => Ok(()),
                false => Err(format!("keys {:?}", d.keys().collect::<Vec<_>>())),
            }
        });
        Ok(issued.await?)
    }

    /// Waits until Service `name` has annotation `key` = `value`.
    pub async fn wait_service_annotation(
        &self,
        name: &str,
        key: &str,
        value: &str,
    ) -> Result<Service> {
        let what = format!("Service {name} {key}={value}");
        Ok(self
            .wait_for(&self.services(), name, &what, |svc| {
                match svc.annotations().get(key) {
                    Some(v) if v == value => Ok(()),
                    other => Err(format!("{other:?}")),
                }
            })
            .await?)
    }

    /// The signing Secret (admin read).
    pub async fn signing_secret(&self) -> Result<Secret> {
        let api = Api::<Secret>::namespaced(self.client.clone(), &self.signer_ns);
        Ok(api.get(SIGNING_SECRET_NAME).await?)
    }

    /// Waits for the signer and returns its CA.
    pub async fn ca(&self) -> Result<SigningCa> {
        let api = Api::<Secret>::namespaced(self.client.clone(), &self.signer_ns);
        let secret = self
            .wait_for(&api, SIGNING_SECRET_NAME, "the signing Secret", |_| Ok(()))
            .await?;
        let (cert, key) = (data(&secret, TLS_CERT_KEY)?, data(&secret, TLS_KEY_KEY)?);
        Ok(SigningCa::from_pem(&cert, &key)?)
    }

    /// The published bundle (`signing-cabundle`), once it exists and contains `ca` (any bundle
    /// when `ca` is empty).
    pub async fn published_bundle_with(&self, ca: &str) -> Result<String> {
        let api = Api::<ConfigMap>::namespaced(self.client.clone(), &self.signer_ns);
        let what = format!("the published CA bundle with {} bytes of CA", ca.len());
        let cm = self.wait_for(&api, SIGNING_BUNDLE_CONFIGMAP, &what, |cm| {
            let data = cm.data.clone().unwrap_or_default();
            match data.get(CA_BUNDLE_KEY) {
                Some(bundle) if bundle.contains(ca.trim()) => Ok(()),
                other => Err(format!("bundle of {:?} bytes", other.map(String::len))),
            }
        });
        let mut data = cm.await?.data.unwrap_or_default();
        Ok(data.remove(CA_BUNDLE_KEY).unwrap_or_default())
    }

    pub async fn published_bundle(&self) -> Result<String> {
        self.published_bundle_with("").await
    }

    /// Creates a ConfigMap asking for the bundle and returns the injected bundle.
    pub async fn injected_bundle(&self, name: &str) -> Result<String> {
        let cm: ConfigMap = serde_json::from_value(json!({
            "apiVersion": "v1", "kind": "ConfigMap",
            "metadata": {
                "name": name,
                "annotations": { service_ca_operator::INJECT_CABUNDLE: "true" },
            },
        }))?;
        self.configmaps()
            .create(&PostParams::default(), &cm)
            .await?;
        self.wait_injected(name, None).await
    }

    /// Waits until ConfigMap `name` holds a bundle (different from `not`, when given).
    pub async fn wait_injected(&self, name: &str, not: Option<&str>) -> Result<String> {
        let what = format!("ConfigMap {name} injected");
        let cm = self
            .wait_for(&self.configmaps(), name, &what, |cm| {
                let data = cm.data.clone().unwrap_or_default();
                match data.get(INJECTED_CA_BUNDLE_KEY) {
                    Some(b) if Some(b.as_str()) != not => Ok(()),
                    other => Err(format!("data {:?}", other.map(|b| b.len()))),
                }
            })
            .await?;
        let mut data = cm.data.unwrap_or_default();
        Ok(data.remove(INJECTED_CA_BUNDLE_KEY).unwrap_or_default())
    }

    /// Waits until the Service's signer annotation names the current CA.
    pub async fn wait_signed(&self, name: &str) -> Result<Service> {
        let cn = self.ca().await?.common_name;
        self.wait_service_annotation(name, SERVING_CERT_SIGNED_BY, &cn)
            .await
    }
}

/// What tests read of the operator: its metrics and readiness.
pub struct Observed {
    pub metrics: Arc<Metrics>,
    readiness: Readiness,
}

impl Observed {
    /// Reconciles of controller `name` (`service`, `configmap`, …) so far.
    pub fn reconciles(&self, name: &str) -> u64 {
        self.metrics.controller(name).reconciles()
    }
}

pub type Operator = InProcess<Observed>;
