//! The one way an operator here runs a controller: reflectors fill caches, their changes become
//! keys in a [`WorkQueue`], and N workers reconcile the keys.
//!
//! ```ignore
//! // In an operator's `register`, for each of the Manager's scopes:
//! let requests = manager.reflect(scope.api::<PodRequest>(manager.client()), Config::default(), trim_managed_fields);
//! let pods = manager.reflect(scope.api::<Pod>(manager.client()), Config::default(), trim_pod)
//!     .only_changed(pod_fingerprint);
//! let ctx = Arc::new(Context { pods: pods.store.clone(), .. });
//! let controller = Controller::new("podrequest", requests)
//!     .filter(|pr| pr.meta().generation.unwrap_or_default() as u64)   // spec changes only
//!     .watches(pods, |pod| owner_key(&pod))
//!     .workers(10)
//!     .ready_condition();
//! manager.add(controller, ctx, reconcile);
//! ```
//!
//! [`crate::manager::Manager`] runs it; [`Controller::run`] is the engine underneath, for a
//! controller run alone.
//!
//! - The reflectors run, and keys queue up, from the start; the workers start once every cache
//!   has its initial list **and** [`Gates::leading`] resolves. A standby replica so keeps its
//!   caches warm, and on taking the Lease it reconciles at once: failover costs the resync
//!   (every object once), not a cold list (controller-runtime's warmup).
//! - A key is never reconciled twice at once; a key triggered during its reconcile runs once
//!   more after; keys come first come, first served, except that a cache's listing (every
//!   object, at start, failover or relist) waits behind real changes; errors are retried after the object's
//!   backoff ([`Backoff`]); [`Action::requeue`] adds the key again after a delay. The last
//!   successful reconcile's [`Action`] decides when a key comes back on its own: it replaces
//!   an earlier reconcile's requeue or a pending retry.
//! - Each reconcile runs in a tracing span with controller-runtime's log keys (`controller`,
//!   `controllerGroup`, `controllerKind`, `name`, `namespace`, `reconcileID`), and is counted and timed
//!   with controller-runtime's metric names (reconcile totals, errors by cause, duration,
//!   active workers) beside client-go's workqueue ones (depth, adds, queue duration,
//!   retries).
//! - A failing reconcile is a Warning Event on its object and, with
//!   [`Controller::ready_condition`], `Ready=False` with the error in its status (see
//!   [`report`](self::report)); the next success clears it.
//! - [`Gates::stop`]: no new keys are handed out; reconciles in flight finish, then `run`
//!   returns.

pub mod queue;
mod report;

use std::collections::HashMap;
use std::fmt::Debug;
use std::future::Future;
use std::hash::{Hash, Hasher};
use std::pin::Pin;
use std::sync::Arc;
use std::time::Duration;

use futures::stream::{BoxStream, SelectAll};
use futures::{FutureExt, Stream, StreamExt, TryStreamExt};
use kube::api::Api;
use kube::runtime::reflector::{self, ObjectRef, Store};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Resource, ResourceExt};
use serde::de::DeserializeOwned;
use tracing::Instrument;

use crate::backoff::Backoff;
use crate::cache::Synced;
use crate::events::Events;
use crate::metrics::ControllerMetrics;
use report::{Failures, ToJson};

pub use queue::WorkQueue;
pub use report::{Cause, READY, REASON, REPEAT_AFTER, clear_patch, not_ready_patch};

/// What a reconcile asks for next.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Action {
    requeue_after: Option<Duration>,
}

impl Action {
    /// Reconcile again after `duration`, even if nothing changes.
    pub const fn requeue(duration: Duration) -> Action {
        Action {
            requeue_after: Some(duration),
        }
    }

    /// Nothing until a watched change.
    pub const fn await_change() -> Action {
        Action {
            requeue_after: None,
        }
    }

    pub fn requeue_after(&self) -> Option<Duration> {
        self.requeue_after
    }
}

/// A change of a watched object, after the cache has it.
#[derive(Debug, Clone)]
pub enum Change<S> {
    /// In a (re)list: seen anew, whatever happened while the watch was down.
    Listed(S),
    /// Created or updated.
    Applied(S),
    Deleted(S),
}

impl<S> Change<S> {
    pub fn object(&self) -> &S {
        match self {
            Change::Listed(s) | Change::Applied(s) | Change::Deleted(s) => s,
        }
    }

    pub fn into_object(self) -> S {
        match self {
            Change::Listed(s) | Change::Applied(s) | Change::Deleted(s) => s,
        }
    }
}

/// A watched kind: its cache, whether the cache has its initial list, and its changes.
pub struct Reflected<S: Resource<DynamicType = ()> + 'static> {
    pub store: Store<S>,
    pub synced: Synced,
    pub changes: BoxStream<'static, Change<S>>,
}

impl<S> Reflected<S>
where
    S: Resource<DynamicType = ()> + Send + 'static,
{
    /// Only the changes that matter: updates that change `fingerprint` (what reconciles read),
    /// every listing and every deletion. Fewer wake-ups, and a queue that holds only real work.
    pub fn only_changed(mut self, fingerprint: impl Fn(&S) -> u64 + Send + Sync + 'static) -> Self {
        self.changes = only_changed(self.changes, fingerprint);
        self
    }
}

/// See [`Reflected::only_changed`]. The last fingerprint is kept per object UID.
pub fn only_changed<S>(
    changes: BoxStream<'static, Change<S>>,
    fingerprint: impl Fn(&S) -> u64 + Send + Sync + 'static,
) -> BoxStream<'static, Change<S>>
where
    S: Resource + Send + 'static,
{
    let mut seen: HashMap<String, u64> = HashMap::new();
    changes
        .filter(move |change| {
            let obj = change.object();
            let key = obj
                .meta()
                .uid
                .clone()
                .or_else(|| obj.meta().name.clone())
                .unwrap_or_default();
            let pass = match change {
                Change::Listed(obj) => {
                    seen.insert(key, fingerprint(obj));
                    true
                }
                Change::Applied(obj) => {
                    let print = fingerprint(obj);
                    seen.insert(key, print) != Some(print)
                }
                Change::Deleted(_) => {
                    seen.remove(&key);
                    true
                }
            };
            futures::future::ready(pass)
        })
        .boxed()
}

/// Watches `api` (with `config`'s selectors) into a cache, each object passed through `trim`
/// first: keep what reconciles read, drop the rest (managed fields, statuses…), since the cache
/// holds every object.
pub fn reflect<S>(
    api: Api<S>,
    config: watcher::Config,
    trim: impl Fn(&mut S) + Send + Sync + 'static,
) -> Reflected<S>
where
    S: Resource<DynamicType = ()> + Clone + Debug + DeserializeOwned + Send + Sync + 'static,
{
    let synced = Synced::new();
    let (store, writer) = reflector::store::<S>();
    let kind = S::kind(&());
    let mut relist = Relist::default();
    let listed = store.clone();
    let changes = watcher(api, config)
        .default_backoff()
        .modify(trim)
        .reflect(writer)
        .inspect_ok(synced.on_event())
        .flat_map(move |result| {
            let changes = match result {
                Ok(event) => relist.changes(event, &listed),
                Err(e) => {
                    // The watcher retries with backoff by itself; an error is only worth a line.
                    tracing::warn!(%kind, "watch error: {e}");
                    Vec::new()
                }
            };
            futures::stream::iter(changes)
        })
        .boxed();
    Reflected {
        store,
        synced,
        changes,
    }
}

/// Turns a reflector's events into changes. A (re)list reports every object as listed; an
/// object the cache held before a re-list and the new listing lacks was deleted while the watch
/// was down, and is reported as deleted (client-go's informers do the same), so that a controller
/// mapping it to keys learns about it.
struct Relist<S: Resource<DynamicType = ()>> {
    /// The cache's objects when the listing began.
    before: Vec<Arc<S>>,
    /// What the listing has shown so far.
    seen: std::collections::HashSet<ObjectRef<S>>,
}

impl<S: Resource<DynamicType = ()>> Default for Relist<S> {
    fn default() -> Self {
        Relist {
            before: Vec::new(),
            seen: std::collections::HashSet::new(),
        }
    }
}

impl<S> Relist<S>
where
    S: Resource<DynamicType = ()> + Clone + 'static,
{
    /// The changes `event` makes, once `store` (which the reflector updates first) has it.
    fn changes(&mut self, event: watcher::Event<S>, store: &Store<S>) -> Vec<Change<S>> {
        match event {
            // The store swaps in the new listing only at InitDone: it still holds the old one.
            watcher::Event::Init => {
                self.before = store.state();
                self.seen.clear();
                Vec::new()
            }
            watcher::Event::InitApply(obj) => {
                if !self.before.is_empty() {
                    self.seen.insert(ObjectRef::from_obj(&obj));
                }
                vec![Change::Listed(obj)]
            }
            watcher::Event::InitDone => {
                let before = std::mem::take(&mut self.before);
                let seen = std::mem::take(&mut self.seen);
                before
                    .into_iter()
                    .filter(|obj| !seen.contains(&ObjectRef::from_obj(obj.as_ref())))
                    .map(|obj| Change::Deleted(obj.as_ref().clone()))
                    .collect()
            }
            watcher::Event::Apply(obj) => vec![Change::Applied(obj)],
            watcher::Event::Delete(obj) => vec![Change::Deleted(obj)],
        }
    }
}

/// Drops managed fields, which are most of an object's size and which no reconcile reads.
pub fn trim_managed_fields<S: ResourceExt>(obj: &mut S) {
    obj.managed_fields_mut().clear();
}

/// When a controller may work, and when it must stop.
pub struct Gates {
    /// Resolves when this replica leads (at once without leader election).
    pub leading: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Resolves when the controller must stop taking work.
    pub stop: Pin<Box<dyn Future<Output = ()> + Send>>,
    /// Told once every cache the controller uses has its initial list.
    pub synced: Option<Box<dyn FnOnce() + Send>>,
}

impl Gates {
    /// Leading at once, stopping when `stop` resolves.
    pub fn new(stop: impl Future<Output = ()> + Send + 'static) -> Gates {
        Gates {
            leading: Box::pin(futures::future::ready(())),
            stop: Box::pin(stop),
            synced: None,
        }
    }

    /// Workers start only once `leading` resolves (a Lease acquired).
    pub fn leading(mut self, leading: impl Future<Output = ()> + Send + 'static) -> Gates {
        self.leading = Box::pin(leading);
        self
    }

    /// Called once the caches are synced (readiness).
    pub fn on_synced(mut self, synced: impl FnOnce() + Send + 'static) -> Gates {
        self.synced = Some(Box::new(synced));
        self
    }
}

/// Why a key is queued.
enum Trigger<K: Resource> {
    /// A change of an object.
    One(ObjectRef<K>),
    /// An object seen in a cache's listing, changed or not: low priority.
    Listed(ObjectRef<K>),
    All,
}

/// A controller of `K`: see the module docs.
pub struct Controller<K>
where
    K: Resource<DynamicType = ()> + 'static,
{
    name: String,
    store: Store<K>,
    synced: Vec<Synced>,
    primary: BoxStream<'static, Change<K>>,
    triggers: SelectAll<BoxStream<'static, Trigger<K>>>,
    metrics: Arc<ControllerMetrics>,
    backoff: Backoff<K>,
    workers: usize,
    /// Keys reconciled at start whether or not their object exists.
    always: Vec<ObjectRef<K>>,
    /// The objects carry a `Ready` condition that a failing reconcile sets to False.
    ready: Option<ToJson<K>>,
    /// Events (and the condition) for failing reconciles; set by the Manager.
    failures: Option<Failures<K>>,
}

impl<K> Controller<K>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
{
    /// A controller named `name` (its metrics' `controller` label) of the objects `primary`
    /// watches; each change of one triggers its reconcile.
    pub fn new(name: &str, primary: Reflected<K>) -> Self {
        Controller {
            name: name.to_string(),
            store: primary.store,
            synced: vec![primary.synced],
            primary: primary.changes,
            triggers: SelectAll::new(),
            metrics: Arc::default(),
            backoff: Backoff::default(),
            workers: 1,
            always: Vec::new(),
            ready: None,
            failures: None,
        }
    }

    /// The controller's name.
    pub fn name(&self) -> &str {
        &self.name
    }

    /// Where its reconciles are counted (the Manager gives each controller name its own).
    pub fn metrics(mut self, metrics: Arc<ControllerMetrics>) -> Self {
        self.metrics = metrics;
        self
    }

    /// The objects have `status.conditions` (`metav1.Condition`) with a `Ready` condition: a
    /// failing reconcile sets it to False with the error (the Manager's controllers only;
    /// see [`report`](self::report)).
    pub fn ready_condition(mut self) -> Self
    where
        K: serde::Serialize,
    {
        let to_json: ToJson<K> = Box::new(|obj: &K| serde_json::to_value(obj).ok());
        self.failures = self
            .failures
            .map(|f| f.with_ready(Box::new(|obj: &K| serde_json::to_value(obj).ok())));
        self.ready = Some(to_json);
        self
    }

    /// Failing reconciles become Warning Events from `events` (and the `Ready` condition,
    /// written as `field_manager`).
    pub fn report_failures(
        mut self,
        events: Events,
        client: kube::Client,
        field_manager: &str,
    ) -> Self {
        self.failures = Some(Failures::new(
            events,
            client,
            field_manager,
            self.ready.take(),
        ));
        self
    }

    /// Reconciles `key` at start even if no such object exists (with
    /// [`run_keyed`](Self::run_keyed), which is told the object is absent): for an object the
    /// controller creates, such as a singleton.
    pub fn always(mut self, key: ObjectRef<K>) -> Self {
        self.always.push(key);
        self
    }

    /// Only changes of the primary objects that change `fingerprint` trigger (e.g. the
    /// generation: spec changes, not status writes); listings and deletions always do.
    pub fn filter(mut self, fingerprint: impl Fn(&K) -> u64 + Send + Sync + 'static) -> Self {
        let changes = std::mem::replace(&mut self.primary, futures::stream::empty().boxed());
        self.primary = only_changed(changes, fingerprint);
        self
    }

    /// Each change of what `watched` reflects triggers the reconciles of the keys `mapper`
    /// gives for the changed object; workers wait for its cache too.
    pub fn watches<S, I>(
        mut self,
        watched: Reflected<S>,
        mapper: impl Fn(S) -> I + Send + Sync + 'static,
    ) -> Self
    where
        S: Resource<DynamicType = ()> + Send + 'static,
        I: IntoIterator<Item = ObjectRef<K>>,
        I::IntoIter: Send + 'static,
    {
        let Reflected {
            changes, synced, ..
        } = watched;
        let keys = changes
            .flat_map(move |change| {
                let listed = matches!(change, Change::Listed(_));
                futures::stream::iter(mapper(change.into_object())).map(move |key| match listed {
                    true => Trigger::Listed(key),
                    false => Trigger::One(key),
                })
            })
            .boxed();
        self.triggers.push(keys);
        self.synced.push(synced);
        self
    }

    /// The objects `children` watches that a `K` controls (their controller ownerReference):
    /// each change of one triggers its owner. Workers wait for that cache too.
    pub fn owns<C>(self, children: Reflected<C>) -> Self
    where
        C: Resource<DynamicType = ()> + Send + 'static,
    {
        let store = self.store.clone();
        self.watches(children, move |child: C| owner_key(&child, &store))
    }

    /// Each item of `trigger` reconciles every object in the cache.
    pub fn reconcile_all_on(mut self, trigger: impl Stream<Item = ()> + Send + 'static) -> Self {
        self.triggers.push(trigger.map(|()| Trigger::All).boxed());
        self
    }

    /// Workers wait for this cache too (one that reconciles read).
    pub fn waits_for(mut self, synced: Synced) -> Self {
        self.synced.push(synced);
        self
    }

    /// How many reconciles run at once (at least one).
    pub fn workers(mut self, n: usize) -> Self {
        self.workers = n.max(1);
        self
    }

    /// The retry delays after errors (default controller-runtime's, 5 ms doubling to 1000 s).
    pub fn backoff(mut self, backoff: Backoff<K>) -> Self {
        self.backoff = backoff;
        self
    }

    /// Runs until `gates.stop`, reconciling the objects of the cache: see the module docs.
    pub async fn run<Ctx, E, F, Fut>(self, ctx: Arc<Ctx>, reconcile: F, gates: Gates)
    where
        Ctx: Send + Sync + 'static,
        E: Cause + Send + 'static,
        F: Fn(Arc<K>, Arc<Ctx>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
    {
        let reconcile = move |_key: ObjectRef<K>, obj: Option<Arc<K>>, ctx: Arc<Ctx>| match obj {
            Some(obj) => futures::future::Either::Left(reconcile(obj, ctx)),
            None => {
                futures::future::Either::Right(futures::future::ready(Ok(Action::await_change())))
            }
        };
        self.start(ctx, reconcile, gates, false).await
    }

    /// Like [`run`](Self::run), but reconciles keys whose object is not (or no longer) in the
    /// cache too, with `None`.
    pub async fn run_keyed<Ctx, E, F, Fut>(self, ctx: Arc<Ctx>, reconcile: F, gates: Gates)
    where
        Ctx: Send + Sync + 'static,
        E: Cause + Send + 'static,
        F: Fn(ObjectRef<K>, Option<Arc<K>>, Arc<Ctx>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
    {
        self.start(ctx, reconcile, gates, true).await
    }

    async fn start<Ctx, E, F, Fut>(self, ctx: Arc<Ctx>, reconcile: F, gates: Gates, absent: bool)
    where
        Ctx: Send + Sync + 'static,
        E: Cause + Send + 'static,
        F: Fn(ObjectRef<K>, Option<Arc<K>>, Arc<Ctx>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
    {
        let Controller {
            name,
            store,
            synced,
            primary,
            mut triggers,
            metrics,
            backoff,
            workers,
            always,
            ready: _,
            failures,
        } = self;
        let queue = WorkQueue::<ObjectRef<K>>::new(metrics.clone());
        for key in always {
            queue.add(key);
        }
        triggers.push(
            primary
                .map(|change| match change {
                    Change::Listed(obj) => Trigger::Listed(ObjectRef::from_obj(&obj)),
                    change => Trigger::One(ObjectRef::from_obj(change.object())),
                })
                .boxed(),
        );
        let Gates {
            leading,
            stop,
            synced: on_synced,
        } = gates;
        let stop = stop.shared();

        // The feeder and the workers are tasks of this set: dropping `run` (a crash, as a test
        // plays it) ends them with it.
        let mut tasks = tokio::task::JoinSet::new();
        // Triggers become keys from the start: a standby has them when it takes over.
        tasks.spawn({
            let (queue, store, stop) = (queue.clone(), store.clone(), stop.clone());
            async move {
                let feed = async {
                    while let Some(trigger) = triggers.next().await {
                        match trigger {
                            Trigger::One(key) => queue.add(key),
                            Trigger::Listed(key) => queue.add_low(key),
                            Trigger::All => {
                                for obj in store.state() {
                                    queue.add(ObjectRef::from_obj(obj.as_ref()));
                                }
                            }
                        }
                    }
                };
                tokio::select! {
                    _ = feed => {}
                    _ = stop => {}
                }
            }
        });

        // Every cache has its initial list, then this replica leads.
        let ready = async {
            futures::future::join_all(synced.iter().map(Synced::wait)).await;
            if let Some(on_synced) = on_synced {
                on_synced();
            }
            leading.await;
        };
        let started = tokio::select! {
            _ = ready => true,
            _ = stop.clone() => false,
        };
        if started {
            tracing::info!(controller = %name, workers, "reconciling");
            let worker = Arc::new(Worker {
                name: name.clone(),
                queue: queue.clone(),
                store,
                ctx,
                reconcile,
                backoff,
                metrics,
                absent,
                failures,
            });
            for _ in 0..workers {
                tasks.spawn(worker.clone().work());
            }
            stop.await;
        }
        // No new keys; what the workers have, they finish.
        queue.shut_down();
        while let Some(ended) = tasks.join_next().await {
            if let Err(e) = ended {
                tracing::error!(controller = %name, "a worker ended abnormally: {e}");
            }
        }
        tracing::info!(controller = %name, "stopped");
    }
}

/// A fresh id for one reconcile, formatted as a random (version 4) UUID, as controller-runtime
/// tags each reconcile's log lines: random per process, unique within it.
fn reconcile_id() -> String {
    use std::hash::BuildHasher;
    use std::sync::OnceLock;
    use std::sync::atomic::{AtomicU64, Ordering};
    static SEED: OnceLock<std::collections::hash_map::RandomState> = OnceLock::new();
    static COUNT: AtomicU64 = AtomicU64::new(0);
    let seed = SEED.get_or_init(Default::default);
    let n = COUNT.fetch_add(1, Ordering::Relaxed);
    let hi = seed.hash_one((n, 0u8));
    let lo = seed.hash_one((n, 1u8));
    let hi = (hi & !0xf000) | 0x4000; // version 4
    let lo = (lo & !(0b11 << 62)) | (0b10 << 62); // RFC 4122 variant
    format!(
        "{:08x}-{:04x}-{:04x}-{:04x}-{:012x}",
        hi >> 32,
        (hi >> 16) & 0xffff,
        hi & 0xffff,
        lo >> 48,
        lo & 0xffff_ffff_ffff
    )
}

/// What every worker of a controller shares.
struct Worker<K, Ctx, F>
where
    K: Resource<DynamicType = ()> + 'static,
{
    name: String,
    queue: WorkQueue<ObjectRef<K>>,
    store: Store<K>,
    ctx: Arc<Ctx>,
    reconcile: F,
    backoff: Backoff<K>,
    metrics: Arc<ControllerMetrics>,
    /// Reconcile keys whose object is not in the cache (else they are skipped: deleted, and
    /// finalizers keep the objects that need cleanup).
    absent: bool,
    failures: Option<Failures<K>>,
}

impl<K, Ctx, F> Worker<K, Ctx, F>
where
    K: Resource<DynamicType = ()> + Clone + Debug + Send + Sync + 'static,
    Ctx: Send + Sync + 'static,
{
    /// Takes keys until the queue shuts down, reconciling each.
    async fn work<E, Fut>(self: Arc<Self>)
    where
        E: Cause + Send + 'static,
        F: Fn(ObjectRef<K>, Option<Arc<K>>, Arc<Ctx>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
    {
        while let Some(key) = self.queue.get().await {
            let obj = self.store.get(&key);
            if obj.is_some() || self.absent {
                let span = tracing::info_span!(
                    "reconcile",
                    controller = %self.name,
                    controllerGroup = %K::group(&()),
                    controllerKind = %K::kind(&()),
                    name = %key.name,
                    namespace = key.namespace.as_deref().unwrap_or_default(),
                    reconcileID = %reconcile_id(),
                );
                self.reconcile_one(&key, obj).instrument(span).await;
            } else {
                // Deleted: nothing of it is kept (a soak deletes objects for hours).
                self.backoff.succeeded_key(&key);
                if let Some(failures) = &self.failures {
                    failures.forget(&key);
                }
            }
            self.queue.done(&key);
        }
    }

    async fn reconcile_one<E, Fut>(&self, key: &ObjectRef<K>, obj: Option<Arc<K>>)
    where
        E: Cause + Send + 'static,
        F: Fn(ObjectRef<K>, Option<Arc<K>>, Arc<Ctx>) -> Fut + Send + Sync + 'static,
        Fut: Future<Output = Result<Action, E>> + Send + 'static,
    {
        let timer = self.metrics.begin();
        let work = (self.reconcile)(key.clone(), obj.clone(), self.ctx.clone());
        // A panicking reconcile is an error to retry, not a lost worker.
        let outcome = std::panic::AssertUnwindSafe(work).catch_unwind().await;
        match outcome {
            Ok(Ok(action)) => {
                self.backoff.succeeded_key(key);
                self.metrics.finished(timer, None);
                self.queue.reschedule(key.clone(), action.requeue_after());
                tracing::debug!("reconciled");
                if let Some(failures) = &self.failures {
                    failures.succeeded(key, obj.as_deref()).await;
                }
            }
            Ok(Err(error)) => {
                let delay = self.backoff.failed_key(key);
                self.metrics.finished(timer, Some(error.cause()));
                self.queue.retry_after(key.clone(), delay);
                tracing::warn!(retry_in = ?delay, cause = error.cause(), "{error}");
                if let Some(failures) = &self.failures {
                    let message = error.to_string();
                    failures
                        .failed(key, obj.as_deref(), error.cause(), &message)
                        .await;
                }
            }
            Err(_) => {
                let delay = self.backoff.failed_key(key);
                self.metrics.finished(timer, Some("panic"));
                self.queue.retry_after(key.clone(), delay);
                tracing::error!(retry_in = ?delay, "the reconcile panicked");
                if let Some(failures) = &self.failures {
                    let message = "the reconcile panicked (a bug in the operator; see its log)";
                    failures.failed(key, obj.as_deref(), "panic", message).await;
                }
            }
        }
    }
}

/// The `K` that controls `child` (its controller ownerReference of `K`'s kind), as a key of
/// the cache `owners`: in the child's namespace, or cluster-scoped.
fn owner_key<K, C>(child: &C, owners: &Store<K>) -> Option<ObjectRef<K>>
where
    K: Resource<DynamicType = ()> + Clone + 'static,
    C: Resource,
{
    let owner = child.meta().owner_references.as_ref()?.iter().find(|o| {
        o.controller == Some(true) && o.kind == K::kind(&()) && o.api_version == K::api_version(&())
    })?;
    let namespaced = child
        .meta()
        .namespace
        .as_ref()
        .map(|ns| ObjectRef::<K>::new(&owner.name).within(ns));
    match namespaced {
        Some(key) if owners.get(&key).is_some() => Some(key),
        _ => {
            let key = ObjectRef::<K>::new(&owner.name);
            owners.get(&key).map(|_| key)
        }
    }
}

/// A fingerprint of a value's hash, for [`Controller::filter`] and [`Reflected::only_changed`].
pub fn fingerprint(value: &impl Hash) -> u64 {
    let mut h = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut h);
    h.finish()
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_openapi::api::core::v1::ConfigMap;
    use kube::api::ObjectMeta;

    #[test]
    fn reconcile_ids_look_like_uuids_and_differ() {
        let (a, b) = (reconcile_id(), reconcile_id());
        assert_ne!(a, b);
        for id in [&a, &b] {
            let parts: Vec<usize> = id.split('-').map(str::len).collect();
            assert_eq!(parts, [8, 4, 4, 4, 12], "{id}");
            assert_eq!(id.as_bytes()[14], b'4', "{id}");
            assert!(
                matches!(id.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
                "{id}"
            );
        }
    }

    fn cm(name: &str) -> ConfigMap {
        ConfigMap {
            metadata: ObjectMeta {
                name: Some(name.into()),
                namespace: Some("ns".into()),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    fn names(changes: &[Change<ConfigMap>]) -> Vec<String> {
        changes
            .iter()
            .map(|c| {
                let kind = match c {
                    Change::Listed(_) => "listed",
                    Change::Applied(_) => "applied",
                    Change::Deleted(_) => "deleted",
                };
                format!(
                    "{kind} {}",
                    c.object().metadata.name.as_deref().unwrap_or("")
                )
            })
            .collect()
    }

    /// Feeds `events` through a store writer and the tracker, as `reflect` does.
    fn run(
        relist: &mut Relist<ConfigMap>,
        writer: &mut reflector::store::Writer<ConfigMap>,
        store: &Store<ConfigMap>,
        events: Vec<watcher::Event<ConfigMap>>,
    ) -> Vec<String> {
        let mut out = Vec::new();
        for event in events {
            writer.apply_watcher_event(&event);
            out.extend(names(&relist.changes(event, store)));
        }
        out
    }

    #[test]
    fn an_object_missing_from_a_relist_is_reported_deleted() {
        let (store, mut writer) = reflector::store::<ConfigMap>();
        let mut relist = Relist::default();
        use watcher::Event::{Apply, Init, InitApply, InitDone};
        let first = run(
            &mut relist,
            &mut writer,
            &store,
            vec![
                Init,
                InitApply(cm("a")),
                InitApply(cm("b")),
                InitDone,
                Apply(cm("c")),
            ],
        );
        assert_eq!(first, ["listed a", "listed b", "applied c"]);
        // The watch was down: b was deleted and d created meanwhile.
        let second = run(
            &mut relist,
            &mut writer,
            &store,
            vec![
                Init,
                InitApply(cm("a")),
                InitApply(cm("c")),
                InitApply(cm("d")),
                InitDone,
            ],
        );
        assert_eq!(second, ["listed a", "listed c", "listed d", "deleted b"]);
        assert_eq!(store.state().len(), 3);
    }
}
