//! The Manager: what every controller of an operator shares, so that an operator's
//! `controller.rs` says only what it watches, how a change maps to a key, and how it reconciles
//! (the role of controller-runtime's Manager and kubert's Runtime).
//!
//! ```ignore
//! pub fn register(manager: &mut Manager, settings: &Settings) {
//!     for scope in manager.scopes() {
//!         let requests = manager.reflect(scope.api::<PodRequest>(manager.client()), Config::default(), trim_managed_fields);
//!         let pods = manager.reflect(scope.api::<Pod>(manager.client()), Config::default(), trim_pod);
//!         let ctx = Arc::new(Context { pods: pods.store.clone(), .. });
//!         manager.add(Controller::new("podrequest", requests).watches(pods, by_name), ctx, reconcile);
//!     }
//! }
//! ```
//!
//! It owns:
//! - **the client** and the **namespace scopes** the operator serves (`--namespace`, or all);
//! - **one reflector per (kind, request URL, selectors, trim)**: every controller that asks for
//!   the same watch gets the same cache and its own stream of the changes, so a cluster-wide
//!   watch is opened once however many scopes or controllers use it;
//! - **readiness**: ready once every cache it made has its initial list (nothing to count by
//!   hand);
//! - **leader gating**: controllers fill their caches at once and reconcile once this replica
//!   leads;
//! - **stop**: on its stop signal controllers take no new keys, finish what they have, and
//!   [`Manager::run`] returns;
//! - **metrics** (one [`ControllerMetrics`](crate::metrics::ControllerMetrics) per controller name) and **Events** (a Warning Event,
//!   and `Ready=False` where a controller asks for it, for every failing reconcile).

use std::any::{Any, TypeId};
use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;

use futures::future::{BoxFuture, Shared};
use futures::{FutureExt, StreamExt};
use kube::api::Api;
use kube::runtime::reflector::ObjectRef;
use kube::runtime::watcher;
use kube::{Client, Resource};
use serde::de::DeserializeOwned;
use tokio::sync::mpsc;

use crate::admin::Readiness;
use crate::cache::Synced;
use crate::controller::{self, Action, Cause, Change, Controller, Gates, Reflected};
use crate::events::Events;
use crate::metrics::Metrics;

/// A future every controller awaits (the stop signal, the leadership gate).
pub type Signal = Shared<Pin<Box<dyn Future<Output = ()> + Send + Sync>>>;

fn signal(future: impl Future<Output = ()> + Send + Sync + 'static) -> Signal {
    let boxed: Pin<Box<dyn Future<Output = ()> + Send + Sync>> = Box::pin(future);
    boxed.shared()
}

/// One namespace the operator serves, or all of them.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Scope {
    namespace: Option<String>,
}

impl Scope {
    /// Every namespace.
    pub fn all() -> Scope {
        Scope { namespace: None }
    }

    /// Namespace `ns` only.
    pub fn namespace(ns: impl Into<String>) -> Scope {
        Scope {
            namespace: Some(ns.into()),
        }
    }

    /// The namespace, `None` for all.
    pub fn name(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// An Api of a namespaced kind over this scope.
    pub fn api<K>(&self, client: Client) -> Api<K>
    where
        K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>,
    {
        match &self.namespace {
            Some(ns) => Api::namespaced(client, ns),
            None => Api::all(client),
        }
    }
}

impl std::fmt::Display for Scope {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.namespace.as_deref().unwrap_or("<all namespaces>"))
    }
}

/// What identifies a watch: two requests for the same key share one reflector.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct WatchKey {
    kind: TypeId,
    url: String,
    config: String,
    trim: TypeId,
}

/// A reflector shared by every controller that registered it: one watch, one cache, a stream
/// of its changes for each.
struct SharedReflector<S: Resource<DynamicType = ()> + 'static> {
    reflected: Reflected<S>,
    subscribers: Vec<mpsc::UnboundedSender<Change<S>>>,
}

trait Driver: Send {
    fn as_any(&mut self) -> &mut dyn Any;
    /// Watches until dropped, handing each change to every subscriber.
    fn drive(self: Box<Self>) -> BoxFuture<'static, ()>;
}

impl<S> Driver for SharedReflector<S>
where
    S: Resource<DynamicType = ()> + Clone + Send + Sync + 'static,
{
    fn as_any(&mut self) -> &mut dyn Any {
        self
    }

    fn drive(self: Box<Self>) -> BoxFuture<'static, ()> {
        let SharedReflector {
            reflected,
            mut subscribers,
        } = *self;
        let mut changes = reflected.changes;
        async move {
            while let Some(change) = changes.next().await {
                // A subscriber whose controller ended is dropped; the cache stays up to date
                // for the others (and for readers of the store).
                subscribers.retain(|tx| tx.send(change.clone()).is_ok());
            }
        }
        .boxed()
    }
}

type Start = Box<dyn FnOnce(Gates) -> BoxFuture<'static, ()> + Send>;

/// See the module docs.
pub struct Manager {
    name: String,
    client: Client,
    scopes: Vec<Scope>,
    metrics: Arc<Metrics>,
    readiness: Option<Readiness>,
    instance: Option<String>,
    namespace: Option<String>,
    cluster_ca: Vec<Vec<u8>>,
    leading: Signal,
    stop: Signal,
    events: Option<Events>,
    reflectors: HashMap<WatchKey, Box<dyn Driver>>,
    /// Caches in registration order (readiness waits for all).
    synced: Vec<Synced>,
    controllers: Vec<Start>,
}

impl Manager {
    /// A manager for operator `name` (its field manager and Events' reporting controller),
    /// serving every namespace, leading at once, never stopping: see the builder methods.
    pub fn new(name: &str, client: Client) -> Manager {
        Manager {
            name: name.to_owned(),
            client,
            scopes: vec![Scope::all()],
            metrics: Metrics::new(),
            readiness: None,
            instance: None,
            namespace: None,
            cluster_ca: Vec::new(),
            leading: signal(futures::future::ready(())),
            stop: signal(futures::future::pending()),
            events: None,
            reflectors: HashMap::new(),
            synced: Vec::new(),
            controllers: Vec::new(),
        }
    }

    /// Serve these namespaces, one scope each; empty: every namespace.
    pub fn namespaces<I, S>(mut self, namespaces: I) -> Manager
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let scopes: Vec<Scope> = namespaces.into_iter().map(Scope::namespace).collect();
        self.scopes = if scopes.is_empty() {
            vec![Scope::all()]
        } else {
            scopes
        };
        self
    }

    /// The registry behind `/metrics`.
    pub fn metrics(mut self, metrics: Arc<Metrics>) -> Manager {
        self.metrics = metrics;
        self
    }

    /// Set ready once every cache has its initial list, not ready once stopping.
    pub fn readiness(mut self, readiness: Readiness) -> Manager {
        self.readiness = Some(readiness);
        self
    }

    /// The replica's name (the Pod's), reported in Events.
    pub fn instance(mut self, instance: Option<String>) -> Manager {
        self.instance = instance;
        self
    }

    /// The namespace the operator itself runs in.
    pub fn own_namespace(mut self, namespace: impl Into<String>) -> Manager {
        self.namespace = Some(namespace.into());
        self
    }

    /// The certificates (DER) the client trusts for the API server (in a cluster, the service
    /// account's `ca.crt`).
    pub fn cluster_ca(mut self, certificates: Vec<Vec<u8>>) -> Manager {
        self.cluster_ca = certificates;
        self
    }

    /// Controllers reconcile once `leading` resolves (a Lease acquired); caches fill before.
    pub fn leading(mut self, leading: impl Future<Output = ()> + Send + Sync + 'static) -> Manager {
        self.leading = signal(leading);
        self
    }

    /// Controllers stop taking work once `stop` resolves.
    pub fn stop(mut self, stop: impl Future<Output = ()> + Send + Sync + 'static) -> Manager {
        self.stop = signal(stop);
        self
    }

    /// The operator's name: field manager of its writes, reporter of its Events.
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn client(&self) -> Client {
        self.client.clone()
    }

    /// The namespace scopes, one per served namespace (or one for all).
    pub fn scopes(&self) -> Vec<Scope> {
        self.scopes.clone()
    }

    /// The operator's own namespace, when known.
    pub fn own_namespace_name(&self) -> Option<&str> {
        self.namespace.as_deref()
    }

    /// See [`cluster_ca`](Self::cluster_ca).
    pub fn cluster_certificates(&self) -> &[Vec<u8>] {
        &self.cluster_ca
    }

    pub fn metrics_registry(&self) -> Arc<Metrics> {
        self.metrics.clone()
    }

    /// Events from this operator (one recorder, shared).
    pub fn events(&mut self) -> Events {
        let (client, name, instance) = (&self.client, &self.name, &self.instance);
        self.events
            .get_or_insert_with(|| Events::new(client.clone(), name, instance.clone()))
            .clone()
    }

    /// A cache of what `api` lists (with `config`'s selectors), each object passed through
    /// `trim` first, and a stream of its changes for the caller. The same watch (kind, URL,
    /// selectors, trim function) asked for twice is opened once: both callers share the cache
    /// and each gets every change.
    pub fn reflect<S, T>(&mut self, api: Api<S>, config: watcher::Config, trim: T) -> Reflected<S>
    where
        S: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
        T: Fn(&mut S) + Send + Sync + 'static,
    {
        let key = WatchKey {
            kind: TypeId::of::<S>(),
            url: api.resource_url().to_owned(),
            config: format!("{config:?}"),
            trim: TypeId::of::<T>(),
        };
        let driver = self.reflectors.entry(key).or_insert_with(|| {
            let reflected = controller::reflect(api, config, trim);
            self.synced.push(reflected.synced.clone());
            Box::new(SharedReflector {
                reflected,
                subscribers: Vec::new(),
            })
        });
        let Some(shared) = driver.as_any().downcast_mut::<SharedReflector<S>>() else {
            // The key holds S's TypeId, so the entry is always of S.
            unreachable!("a reflector registered under another kind");
        };
        let (tx, rx) = mpsc::unbounded_channel();
        shared.subscribers.push(tx);
        Reflected {
            store: shared.reflected.store.clone(),
            synced: shared.reflected.synced.clone(),
            changes: futures::stream::unfold(rx, |mut rx| async move {
                rx.recv().await.map(|change| (change, rx))
            })
            .boxed(),
        }
    }

    /// How many watches the registered controllers opened (after sharing).
    pub fn watch_count(&self) -> usize {
        self.reflectors.len()
    }

    /// Runs `controller` with `reconcile` once [`run`](Self::run) starts: see
    /// [`Controller::run`].
    pub fn add<K, Ctx, E, F, Fut>(&mut self, controller: Controller<K>, ctx: Arc<Ctx>, reconcile: F)
    where
        K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
        Ctx: Send + Sync + 'static,
        E: Cause + Send + 'static,
        F: Fn(Arc<K>, Arc<Ctx>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
    {
        let controller = self.equip(controller);
        self.controllers.push(Box::new(move |gates| {
            controller.run(ctx, reconcile, gates).boxed()
        }));
    }

    /// Like [`add`](Self::add), with keys whose object is absent reconciled too: see
    /// [`Controller::run_keyed`].
    pub fn add_keyed<K, Ctx, E, F, Fut>(
        &mut self,
        controller: Controller<K>,
        ctx: Arc<Ctx>,
        reconcile: F,
    ) where
        K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
        Ctx: Send + Sync + 'static,
        E: Cause + Send + 'static,
        F: Fn(ObjectRef<K>, Option<Arc<K>>, Arc<Ctx>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
    {
        let controller = self.equip(controller);
        self.controllers.push(Box::new(move |gates| {
            controller.run_keyed(ctx, reconcile, gates).boxed()
        }));
    }

    /// The manager's metrics, Events and field manager for a controller.
    fn equip<K>(&mut self, controller: Controller<K>) -> Controller<K>
    where
        K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    {
        let metrics = self.metrics.controller(controller.name());
        let events = self.events();
        controller
            .metrics(metrics)
            .report_failures(events, self.client.clone(), &self.name)
    }

    /// Starts every reflector and controller; returns once the stop signal came and every
    /// controller finished its in-flight reconciles.
    pub async fn run(self) {
        let Manager {
            name,
            reflectors,
            synced,
            controllers,
            readiness,
            leading,
            stop,
            ..
        } = self;
        let mut background = tokio::task::JoinSet::new();
        tracing::info!(
            operator = %name,
            controllers = controllers.len(),
            watches = reflectors.len(),
            "starting"
        );
        for (_, driver) in reflectors {
            background.spawn(driver.drive());
        }
        if let Some(readiness) = readiness.clone() {
            background.spawn(async move {
                futures::future::join_all(synced.iter().map(Synced::wait)).await;
                tracing::info!("every cache has its initial list: ready");
                readiness.set_ready(true);
            });
        }
        if controllers.is_empty() {
            tracing::warn!("no controllers registered: waiting for shutdown");
            stop.clone().await;
        }
        let running = controllers
            .into_iter()
            .map(|start| start(Gates::new(stop.clone()).leading(leading.clone())));
        futures::future::join_all(running).await;
        if let Some(readiness) = readiness {
            readiness.set_not_ready("shutting down");
        }
        background.shutdown().await;
    }
}
