//! Test fixtures: the CRD installed on the shared control plane, an in-process operator scoped
//! to the test's namespace (with its own request counter), the talk's sample, and waits.

#![allow(dead_code)]

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::{Client, CustomResourceExt, ResourceExt};
use operon_envtest::{TestEnv, wait};
use operon_runtime::client::{RequestCounter, RequestCounts, counted_client};
use operon_runtime::metrics::ControllerMetrics;
use pod_operator::api::PodRequest;
use pod_operator::controller::{self, Settings};
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

pub const TIMEOUT: Duration = Duration::from_secs(60);

/// The talk's `podrequest.yaml` (slide 72).
pub const SAMPLE: &str = pod_operator::deploy::SAMPLE;

/// Applies the generated CRD (server-side, idempotent) and waits until it is served.
pub async fn install_crd(client: &Client) -> Result<()> {
    Ok(operon_envtest::apply::apply_crd(client, &PodRequest::crd(), "pod-operator-tests").await?)
}

/// A test's environment: namespace, admin client, CRD installed.
pub struct Fixture {
    pub env: &'static TestEnv,
    pub ns: String,
    pub client: Client,
}

impl Fixture {
    pub async fn new(prefix: &str) -> Result<Fixture> {
        let env = operon_envtest::shared().await?;
        let ns = env.namespace(prefix).await?;
        let client = env.client().await?;
        install_crd(&client).await?;
        Ok(Fixture {
            env,
            ns: ns.name().to_string(),
            client,
        })
    }

    pub fn requests(&self) -> Api<PodRequest> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub fn pods(&self) -> Api<k8s_openapi::api::core::v1::Pod> {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    pub async fn operator(&self) -> Result<Operator> {
        Operator::start(self.env, &self.ns).await
    }

    /// The talk's sample, in this test's namespace.
    pub fn sample(&self) -> Result<PodRequest> {
        let mut pr: PodRequest = serde_saphyr::from_str(SAMPLE).context("parsing the sample")?;
        pr.metadata.namespace = Some(self.ns.clone());
        Ok(pr)
    }

    /// Reasons and notes of the Events about PodRequest `name`.
    /// Waits until an Event about PodRequest `name` has `reason` and a note containing `note`
    /// (Events are written in the background, after the reconcile that caused them).
    pub async fn wait_event(&self, name: &str, reason: &str, note: &str) -> Result<()> {
        wait::until(&format!("Event {reason} about {name}"), TIMEOUT, || async {
            let events = self.events(name).await.map_err(|e| e.to_string())?;
            if events.iter().any(|(r, n)| r == reason && n.contains(note)) {
                Ok(())
            } else {
                Err(format!("{events:?}"))
            }
        })
        .await?;
        Ok(())
    }

    pub async fn events(&self, name: &str) -> Result<Vec<(String, String)>> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), &self.ns);
        Ok(events
            .list(&ListParams::default())
            .await?
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some("PodRequest") && r.name.as_deref() == Some(name)
                })
            })
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect())
    }

    /// Waits until PodRequest `name` is Ready for its current generation.
    pub async fn wait_ready(&self, name: &str) -> Result<PodRequest> {
        let api = self.requests();
        Ok(
            wait::until(&format!("PodRequest {name} Ready"), TIMEOUT, || async {
                let pr = api.get(name).await.map_err(|e| e.to_string())?;
                let status = pr.status.clone().unwrap_or_default();
                let ready = operon_runtime::conditions::is_true(&status.conditions, "Ready");
                if ready && status.observed_generation == pr.metadata.generation {
                    Ok(pr)
                } else {
                    Err(format!("status {status:?}"))
                }
            })
            .await?,
        )
    }

    /// Waits until all `expected` PodRequests of the namespace are Ready, then checks that each
    /// has exactly one Pod, controlled by it, and that no other Pod exists.
    pub async fn assert_converged(&self, expected: usize) -> Result<()> {
        let requests = self.requests();
        let ready = wait::until(
            "all PodRequests Ready",
            Duration::from_secs(180),
            || async {
                let list = requests
                    .list(&ListParams::default())
                    .await
                    .map_err(|e| e.to_string())?;
                let ready = list
                    .items
                    .iter()
                    .filter(|pr| {
                        pr.status.as_ref().is_some_and(|s| {
                            operon_runtime::conditions::is_true(&s.conditions, "Ready")
                        })
                    })
                    .count();
                if ready == expected {
                    Ok(list.items)
                } else {
                    Err(format!("{ready}/{expected} ready"))
                }
            },
        )
        .await?;
        let uids: std::collections::BTreeMap<String, Option<String>> = ready
            .iter()
            .map(|p| (p.name_any(), p.metadata.uid.clone()))
            .collect();
        let pods = self.pods().list(&ListParams::default()).await?.items;
        anyhow::ensure!(
            pods.len() == expected,
            "{} pods for {expected} requests",
            pods.len()
        );
        for pod in pods {
            let owner = pod
                .owner_references()
                .iter()
                .find(|o| o.controller == Some(true))
                .map(|o| o.uid.clone());
            anyhow::ensure!(
                uids.get(&pod.name_any()) == Some(&owner),
                "pod {} not owned by its request",
                pod.name_any()
            );
        }
        Ok(())
    }

    /// Waits until condition `type_` of `name` has `reason`.
    pub async fn wait_condition(
        &self,
        name: &str,
        type_: &str,
        status: &str,
        reason: &str,
    ) -> Result<PodRequest> {
        let api = self.requests();
        Ok(wait::until(
            &format!("{name} {type_}={status} ({reason})"),
            TIMEOUT,
            || async {
                let pr = api.get(name).await.map_err(|e| e.to_string())?;
                let conditions = pr.status.clone().unwrap_or_default().conditions;
                match operon_runtime::conditions::get(&conditions, type_) {
                    Some(c) if c.status == status && c.reason == reason => Ok(pr),
                    other => Err(format!("{other:?}")),
                }
            },
        )
        .await?)
    }
}

/// Applies (server-side, idempotent) the operator's generated namespace, ServiceAccount, RBAC
/// (manager, leader election, metrics auth and reader) and the user-facing aggregated roles.
pub async fn install_rbac(client: &Client) -> Result<()> {
    let m = pod_operator::deploy::manifests("test")?;
    let mut objects = vec![m.namespace_object()];
    objects.extend(m.operator_rbac());
    objects.extend(m.user_roles().into_iter().map(|(_, role)| role));
    for obj in objects {
        operon_envtest::apply::apply(client, &obj, "pod-operator-tests").await?;
    }
    Ok(())
}

/// The operator's ServiceAccount, as deployed.
pub const OPERATOR_NAMESPACE: &str = pod_operator::deploy::NAMESPACE;
pub const OPERATOR_SERVICE_ACCOUNT: &str = "pod-operator-controller-manager";

/// pod-operator running in this process, serving one namespace, authenticated as its own
/// ServiceAccount with the generated RBAC — so every test also proves the RBAC sufficient.
pub struct Operator {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<()>,
    counter: RequestCounter,
    pub metrics: Arc<ControllerMetrics>,
}

impl Operator {
    pub async fn start(env: &TestEnv, namespace: &str) -> Result<Operator> {
        // Operator logs in the test output when RUST_LOG is set (shown for failing tests).
        if std::env::var_os("RUST_LOG").is_some() {
            operon_runtime::telemetry::init(operon_runtime::telemetry::LogFormat::Text, "info");
        }
        let admin = env.client().await?;
        install_rbac(&admin).await?;
        let token =
            service_account_token(&admin, OPERATOR_NAMESPACE, OPERATOR_SERVICE_ACCOUNT).await?;
        let mut config = env.config().await?;
        config.auth_info = kube::config::AuthInfo {
            token: Some(token.into()),
            ..Default::default()
        };
        let counter = RequestCounter::default();
        let client = counted_client(config, &counter)?;
        let metrics = Arc::new(ControllerMetrics::default());
        let settings = Settings {
            namespaces: vec![namespace.to_string()],
            concurrency: 10,
            instance: Some("test".into()),
            metrics: metrics.clone(),
            readiness: None,
            leading: None,
        };
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

    /// A crash as the cluster sees it: the controller stops mid-work, nothing is finished or
    /// released.
    pub fn crash(self) {
        self.task.abort();
    }

    /// The controller task is still running (it never panicked or returned).
    pub fn is_alive(&self) -> bool {
        !self.task.is_finished()
    }

    /// Requests this operator made so far.
    pub fn requests(&self) -> RequestCounts {
        self.counter.snapshot()
    }

    /// Graceful stop: in-flight reconciles finish.
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

/// A token for ServiceAccount `namespace/name` from the TokenRequest API.
pub async fn service_account_token(admin: &Client, namespace: &str, name: &str) -> Result<String> {
    use k8s_openapi::api::authentication::v1::{TokenRequest, TokenRequestSpec};
    use k8s_openapi::api::core::v1::ServiceAccount;
    let request = TokenRequest {
        spec: Some(TokenRequestSpec {
            expiration_seconds: Some(3600),
            ..Default::default()
        }),
        ..Default::default()
    };
    Api::<ServiceAccount>::namespaced(admin.clone(), namespace)
        .create_token_request(name, &kube::api::PostParams::default(), &request)
        .await?
        .status
        .and_then(|s| s.token)
        .context("TokenRequest without token")
}

impl Drop for Operator {
    fn drop(&mut self) {
        self.task.abort();
    }
}
