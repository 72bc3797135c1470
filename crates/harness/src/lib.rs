//! The one harness every operator's tests use: a namespace per test with an admin client
//! ([`Fixture`]), the operator's generated RBAC installed ([`install_rbac`]), and the operator
//! running in this process as its own ServiceAccount ([`InProcess`]), so that every test also
//! proves the generated RBAC sufficient; the RBAC audit ([`audit_rbac`]) and escalation
//! ([`Delegation`]) suites, one call per operator. What is left to an operator's `tests/common` is
//! its domain: its resources, samples and waits.
//!
//! Built on [`operon_envtest`] (the shared control plane, a namespace per test) with the
//! operator's own crates, [`operon_runtime`] (request counting, logs) and [`operon_manifests`]
//! (the generated RBAC and its audit): a crate of its own, used only as a dev-dependency, so that
//! neither the runtime's nor the generators' tests depend on themselves through it.

use std::fmt::Display;
use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use k8s_openapi::NamespaceResourceScope;
use k8s_openapi::api::events::v1::Event;
use kube::api::{Api, ListParams};
use kube::{Client, Resource};
use operon_cluster::wait;
use operon_envtest::TestEnv;
use operon_manifests::OperatorManifests;
use operon_runtime::client::{RequestCounter, RequestCounts, counted_client};
use operon_runtime::metrics::ControllerMetrics;
use serde::de::DeserializeOwned;
use serde_json::Value;
use tokio::sync::oneshot;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    /// The test environment (the shared control plane, a namespace, a client).
    #[error(transparent)]
    Env(#[from] operon_envtest::Error),
    #[error(transparent)]
    Kube(#[from] kube::Error),
    #[error(transparent)]
    Wait(#[from] wait::Timeout),
    #[error(transparent)]
    Apply(#[from] operon_cluster::apply::ApplyError),
    #[error("the operator under test: {0}")]
    Operator(String),
    #[error("{0}")]
    Audit(String),
}

/// How long a test waits for the operator to act.
pub const TIMEOUT: Duration = Duration::from_secs(60);

/// A test's namespace on the shared environment, with an admin client.
pub struct Fixture {
    pub env: &'static TestEnv,
    pub ns: String,
    pub client: Client,
}

impl Fixture {
    /// A fresh namespace named after `prefix` on the shared control plane.
    pub async fn new(prefix: &str) -> Result<Fixture, Error> {
        let env = operon_envtest::shared().await?;
        let ns = env.namespace(prefix).await?.name().to_string();
        let client = env.client().await?;
        Ok(Fixture { env, ns, client })
    }

    /// The test namespace's `K`s, as admin.
    pub fn api<K>(&self) -> Api<K>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>,
    {
        Api::namespaced(self.client.clone(), &self.ns)
    }

    /// Waits until `api`'s object `name` exists and satisfies `ok` (which describes what is
    /// wrong otherwise); returns it.
    pub async fn wait_for<K>(
        &self,
        api: &Api<K>,
        name: &str,
        what: &str,
        ok: impl Fn(&K) -> Result<(), String>,
    ) -> Result<K, Error>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        Ok(wait::until(what, TIMEOUT, || async {
            match api.get_opt(name).await.map_err(|e| e.to_string())? {
                Some(object) => ok(&object).map(|()| object),
                None => Err(format!("{name} does not exist")),
            }
        })
        .await?)
    }

    /// Waits until `api`'s object `name` is gone (deleted, finalizers done).
    pub async fn wait_gone<K>(&self, api: &Api<K>, name: &str, what: &str) -> Result<(), Error>
    where
        K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
    {
        Ok(wait::until(what, TIMEOUT, || async {
            match api.get_opt(name).await.map_err(|e| e.to_string())? {
                None => Ok(()),
                Some(object) => Err(format!(
                    "{name} still exists, finalizers {:?}",
                    object.meta().finalizers
                )),
            }
        })
        .await?)
    }

    /// `(reason, note)` of the Events in namespace `ns` about the `kind` named `name`.
    pub async fn events(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
    ) -> Result<Vec<(String, String)>, Error> {
        let events: Api<Event> = Api::namespaced(self.client.clone(), ns);
        Ok(events
            .list(&ListParams::default())
            .await?
            .into_iter()
            .filter(|e| {
                e.regarding.as_ref().is_some_and(|r| {
                    r.kind.as_deref() == Some(kind) && r.name.as_deref() == Some(name)
                })
            })
            .map(|e| (e.reason.unwrap_or_default(), e.note.unwrap_or_default()))
            .collect())
    }

    /// Waits until an Event in `ns` about the `kind` named `name` has `reason` and a note
    /// containing `note` (Events are written in the background, after the reconcile that caused
    /// them); returns the note.
    pub async fn wait_event(
        &self,
        ns: &str,
        kind: &str,
        name: &str,
        reason: &str,
        note: &str,
    ) -> Result<String, Error> {
        let what = format!("Event {reason} about {kind} {name}");
        Ok(wait::until(&what, TIMEOUT, || async {
            let events = self
                .events(ns, kind, name)
                .await
                .map_err(|e| e.to_string())?;
            events
                .iter()
                .find(|(r, n)| r == reason && n.contains(note))
                .map(|(_, n)| n.clone())
                .ok_or_else(|| format!("{events:?}"))
        })
        .await?)
    }
}

/// Applies (server-side, idempotent) the operator's generated namespace, ServiceAccount and RBAC,
/// then `extra` objects (e.g. its namespace Role bound in a test's namespace too).
pub async fn install_rbac(
    client: &Client,
    manifests: &OperatorManifests,
    extra: Vec<Value>,
) -> Result<(), Error> {
    let mut objects = vec![manifests.namespace_object()];
    objects.extend(manifests.operator_rbac());
    objects.extend(extra);
    for object in objects {
        operon_cluster::apply::apply(client, &object, "operon-envtest").await?;
    }
    Ok(())
}

/// Resolves when the test stops the operator: the shutdown signal an operator's `run` takes.
pub struct Stopping(oneshot::Receiver<()>);

impl Future for Stopping {
    type Output = ();

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        // A dropped sender (the harness gone) stops the operator too.
        Pin::new(&mut self.0).poll(cx).map(|_| ())
    }
}

/// What an operator's `run` returns: nothing, or a `Result` whose error ends the test.
pub trait Outcome {
    fn into_result(self) -> Result<(), String>;
}

impl Outcome for () {
    fn into_result(self) -> Result<(), String> {
        Ok(())
    }
}

impl<E: Display> Outcome for Result<(), E> {
    fn into_result(self) -> Result<(), String> {
        self.map_err(|e| e.to_string())
    }
}

/// An operator running in this process, as its own ServiceAccount, counting its requests.
pub struct InProcess<M> {
    stop: Option<oneshot::Sender<()>>,
    task: JoinHandle<Result<(), String>>,
    counter: RequestCounter,
    /// What the test reads of the operator (its metrics, usually).
    pub metrics: M,
}

impl<M> InProcess<M> {
    /// Installs `manifests`' RBAC (and `extra`), then spawns `run(client, stopping)` with a
    /// client authenticated as the operator's ServiceAccount.
    pub async fn start<F, Fut>(
        env: &TestEnv,
        manifests: &OperatorManifests,
        extra: Vec<Value>,
        metrics: M,
        run: F,
    ) -> Result<InProcess<M>, Error>
    where
        F: FnOnce(Client, Stopping) -> Fut,
        Fut: Future + Send + 'static,
        Fut::Output: Outcome,
    {
        // Operator logs in the test output when RUST_LOG is set (shown for failing tests).
        if std::env::var_os("RUST_LOG").is_some() {
            operon_runtime::telemetry::init(operon_runtime::telemetry::LogFormat::Text, "info");
        }
        install_rbac(&env.client().await?, manifests, extra).await?;
        let config = env
            .service_account_config(&manifests.namespace, &manifests.service_account_name())
            .await?;
        let counter = RequestCounter::default();
        let client = counted_client(config, &counter)?;
        let (tx, rx) = oneshot::channel();
        let operator = run(client, Stopping(rx));
        let task = tokio::spawn(async move { operator.await.into_result() });
        Ok(InProcess {
            stop: Some(tx),
            task,
            counter,
            metrics,
        })
    }

    /// A crash as the cluster sees it: the operator stops mid-work, nothing is finished or
    /// released.
    pub fn crash(self) {
        self.task.abort();
    }

    /// The operator is still running (it never panicked or returned).
    pub fn is_alive(&self) -> bool {
        !self.task.is_finished()
    }

    /// Requests the operator made so far.
    pub fn requests(&self) -> RequestCounts {
        self.counter.snapshot()
    }

    /// Graceful stop: in-flight reconciles finish; fails if the operator failed.
    pub async fn stop(mut self) -> Result<(), Error> {
        if let Some(tx) = self.stop.take() {
            let _ = tx.send(());
        }
        match tokio::time::timeout(TIMEOUT, &mut self.task).await {
            Ok(Ok(Ok(()))) => Ok(()),
            Ok(Ok(Err(e))) => Err(Error::Operator(e)),
            Ok(Err(e)) => Err(Error::Operator(format!("the operator task failed: {e}"))),
            Err(_) => Err(Error::Operator(format!("did not stop within {TIMEOUT:?}"))),
        }
    }
}

impl<M> Drop for InProcess<M> {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The operator's ServiceAccount, with the generated RBAC installed, asked every verb on its
/// declared and on sensitive resources in `namespaces` (see `operon_manifests::audit`): fails on
/// any difference from the declaration, or if too few questions were asked to mean anything.
pub async fn audit_rbac(
    f: &Fixture,
    manifests: &OperatorManifests,
    extra: Vec<Value>,
    namespaces: &[&str],
) -> Result<(), Error> {
    install_rbac(&f.client, manifests, extra).await?;
    let sa = f
        .env
        .service_account_client(&manifests.namespace, &manifests.service_account_name())
        .await?;
    let (mismatches, asked) =
        operon_manifests::audit::rbac_matrix(&sa, manifests, namespaces).await?;
    if asked < 150 {
        return Err(Error::Audit(format!("only {asked} questions asked")));
    }
    if !mismatches.is_empty() {
        let report: Vec<String> = mismatches.iter().map(ToString::to_string).collect();
        return Err(Error::Audit(report.join("\n")));
    }
    Ok(())
}

/// An admission policy against escalation through the operator, as the escalation suites check
/// it: `eve` may work with the resource but may not do what the operator would do for her;
/// `alice` may do both.
pub struct Delegation {
    /// The policy's objects (ValidatingAdmissionPolicy and its binding).
    pub policy: Vec<Value>,
    /// A PolicyRule on the resource users create (both users get it).
    pub resource_rule: Value,
    /// A PolicyRule on what the operator does on the user's behalf (only alice gets it).
    pub delegated_rule: Value,
    /// What eve's denial must say.
    pub denial: String,
}

/// The two users of [`Delegation::check`], to go on with.
pub struct Users<K> {
    pub eve: Api<K>,
    pub alice: Api<K>,
}

impl Delegation {
    /// Installs the policy and the users' Roles in the test namespace, then: `eves` is denied
    /// by the policy with [`Delegation::denial`] in the message (retried until the policy is
    /// enforced: it compiles asynchronously), and `alices` is accepted.
    pub async fn check<K>(self, f: &Fixture, eves: &K, alices: &K) -> Result<Users<K>, Error>
    where
        K: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + serde::Serialize
            + std::fmt::Debug,
    {
        for object in &self.policy {
            operon_cluster::apply::apply(&f.client, object, "operon-envtest").await?;
        }
        let (resource, delegated) = (self.resource_rule, self.delegated_rule);
        let only = serde_json::json!([resource.clone()]);
        operon_envtest::grant(&f.client, &f.ns, "eve", "resource-only", only).await?;
        let both = serde_json::json!([resource, delegated]);
        operon_envtest::grant(&f.client, &f.ns, "alice", "resource-and-delegated", both).await?;
        let as_user = |user: &'static str| async move {
            let client = f.env.impersonating(user, &["system:authenticated"]).await?;
            Ok::<_, Error>(Api::<K>::namespaced(client, &f.ns))
        };
        let users = Users {
            eve: as_user("eve").await?,
            alice: as_user("alice").await?,
        };
        let name = eves.meta().name.clone().unwrap_or_default();
        let post = kube::api::PostParams::default();
        let message = wait::until("the policy denying eve", TIMEOUT, || async {
            match users.eve.create(&post, eves).await {
                Err(kube::Error::Api(s))
                    if s.code == 403 && s.message.contains("ValidatingAdmissionPolicy") =>
                {
                    Ok(s.message)
                }
                Err(e) => Err(e.to_string()),
                Ok(_) => {
                    // Not enforced yet: undo, try again.
                    let _ = f.api::<K>().delete(&name, &Default::default()).await;
                    Err("created".to_string())
                }
            }
        })
        .await?;
        if !message.contains(&self.denial) {
            return Err(Error::Audit(format!(
                "the denial must say {:?}: {message}",
                self.denial
            )));
        }
        users.alice.create(&post, alices).await.map_err(|e| {
            Error::Audit(format!(
                "alice may do what the operator does, so her object must be accepted: {e}"
            ))
        })?;
        Ok(users)
    }
}

impl Fixture {
    /// Waits (up to 3 minutes) until the namespace has exactly `expected` `O`s, all `ready`;
    /// then checks the one-to-one invariant of an operator that makes one `C` per `O`: exactly
    /// `expected` `C`s, each named after its `O` and controlled by it (same UID), no other.
    pub async fn assert_one_child_each<O, C>(
        &self,
        expected: usize,
        ready: impl Fn(&O) -> bool,
    ) -> Result<(), Error>
    where
        O: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
        C: Resource<Scope = NamespaceResourceScope, DynamicType = ()>
            + Clone
            + DeserializeOwned
            + std::fmt::Debug,
    {
        let owners = self.api::<O>();
        let what = format!("{expected} ready {}", O::kind(&()));
        let ready = wait::until(&what, Duration::from_secs(180), || async {
            let list = owners
                .list(&ListParams::default())
                .await
                .map_err(|e| e.to_string())?;
            let n = list.items.iter().filter(|o| ready(o)).count();
            match n == expected && list.items.len() == expected {
                true => Ok(list.items),
                false => Err(format!("{n} of {} ready", list.items.len())),
            }
        })
        .await?;
        let uids: std::collections::BTreeMap<_, _> = ready
            .iter()
            .map(|o| (o.meta().name.clone(), o.meta().uid.clone()))
            .collect();
        let children = self.api::<C>().list(&ListParams::default()).await?.items;
        let mut wrong: Vec<String> = children
            .iter()
            .filter(|c| {
                let controller = c.meta().owner_references.iter().flatten();
                let owner = controller
                    .filter(|r| r.controller == Some(true))
                    .map(|r| Some(r.uid.clone()))
                    .next();
                uids.get(&c.meta().name) != owner.as_ref()
            })
            .map(|c| c.meta().name.clone().unwrap_or_default())
            .collect();
        if children.len() != expected {
            wrong.push(format!(
                "{} {}s for {expected}",
                children.len(),
                C::kind(&())
            ));
        }
        match wrong.is_empty() {
            true => Ok(()),
            false => Err(Error::Audit(format!("not one child each: {wrong:?}"))),
        }
    }
}

/// Every object `api` lists can be read as `K`, the operator's type. The API server accepts some
/// values a Rust type can't read (a `date-time` with ten fraction digits, say); one such object
/// fails the operator's whole list, so its cache would stop at the next relist. Returns how many
/// objects were read; on failure, names each unreadable object with its serde error and data.
pub async fn assert_readable<K>(api: &Api<K>) -> Result<usize, Error>
where
    K: Resource + Clone + DeserializeOwned + std::fmt::Debug,
{
    match api.list(&ListParams::default()).await {
        Ok(list) => Ok(list.items.len()),
        Err(kube::Error::SerdeError(error)) => {
            let request = http::Request::get(api.resource_url())
                .body(Vec::new())
                .map_err(|e| Error::Audit(e.to_string()))?;
            let text = api.clone().into_client().request_text(request).await?;
            let list: Value =
                serde_json::from_str(&text).map_err(|e| Error::Audit(e.to_string()))?;
            let items = list["items"].as_array().cloned().unwrap_or_default();
            let unreadable: Vec<String> = items
                .into_iter()
                .filter_map(|item| {
                    let name = item["metadata"]["name"].as_str().unwrap_or("?").to_owned();
                    let data =
                        serde_json::json!({ "spec": item["spec"], "status": item["status"] });
                    serde_json::from_value::<K>(item)
                        .err()
                        .map(|e| format!("{name}: {e}\n    {}", cut(&data)))
                })
                .collect();
            Err(Error::Audit(format!(
                "{} stored object(s) the operator's type can't read ({error}):\n  {}",
                unreadable.len(),
                unreadable.join("\n  ")
            )))
        }
        Err(e) => Err(e.into()),
    }
}

/// The value's JSON cut at 2000 characters, for messages.
fn cut(value: &Value) -> String {
    let text = value.to_string();
    match text.char_indices().nth(2000) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text,
    }
}

/// Waits until the controller `metrics` measures is idle: no key queued, no reconcile running,
/// and no reconcile finished for `calm` (which covers short requeues). Returns its reconcile
/// count then.
pub async fn wait_idle(
    metrics: &ControllerMetrics,
    calm: Duration,
    timeout: Duration,
) -> Result<u64, Error> {
    let t0 = std::time::Instant::now();
    let mut last = (metrics.reconciles(), std::time::Instant::now());
    loop {
        let reconciles = metrics.reconciles();
        if reconciles != last.0 || metrics.depth() != 0 || metrics.active_workers() != 0 {
            last = (reconciles, std::time::Instant::now());
        } else if last.1.elapsed() >= calm {
            return Ok(reconciles);
        }
        if t0.elapsed() > timeout {
            return Err(Error::Operator(format!(
                "not idle after {timeout:?}: {metrics:?}"
            )));
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
