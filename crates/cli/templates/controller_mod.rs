//! The operator's controllers, one module per kind (`operon add controller` adds them),
//! started together: their caches fill at once, and they reconcile when this replica leads.

use std::future::Future;
use std::sync::Arc;

use futures::FutureExt;
use futures::future::{BoxFuture, Shared};
use kube::Client;
use operon_manifests::Rule;
use operon_runtime::admin::Readiness;
use operon_runtime::controller::{Gates, ReadyWhenSynced};
use operon_runtime::metrics::Metrics;
use operon_runtime::operator::Leading;

// operon:scaffold:controller-modules (`operon add controller` adds a line above)

/// Resolves when the controllers must stop taking work.
pub type Stop = Shared<BoxFuture<'static, ()>>;

/// `stop` as a [`Stop`] every controller can wait on.
pub fn stop_on(stop: impl Future<Output = ()> + Send + 'static) -> Stop {
    stop.boxed().shared()
}

/// What every controller gets.
#[derive(Clone)]
pub struct Settings {
    pub client: Client,
    /// Reconciles running at once, per controller (one at a time per object).
    pub concurrency: u16,
    pub metrics: Arc<Metrics>,
    /// Reported in Events (the Pod's name in a cluster).
    pub instance: Option<String>,
    pub stop: Stop,
    /// Resolves when this replica leads (`None`: at once).
    pub leading: Option<Leading>,
}

/// A controller ready to run, given its [`Gates`].
pub struct Started {
    run: Box<dyn FnOnce(Gates) -> BoxFuture<'static, ()> + Send>,
}

impl Started {
    pub fn new<F: Future<Output = ()> + Send + 'static>(
        run: impl FnOnce(Gates) -> F + Send + 'static,
    ) -> Self {
        Started {
            run: Box::new(move |gates| run(gates).boxed()),
        }
    }
}

/// The API calls every controller makes: the operator's RBAC (config/rbac/role.yaml).
pub fn rules() -> Vec<Rule> {
    let all: &[Vec<Rule>] = &[
        // operon:scaffold:rules
    ];
    all.concat()
}

/// Kinds of the objects the controllers create, `(kind, version)`.
pub fn owned_kinds() -> Vec<(&'static str, &'static str)> {
    let all: &[Vec<(&'static str, &'static str)>] = &[
        // operon:scaffold:owned-kinds
    ];
    all.concat()
}

/// Runs every controller until `settings.stop`; `readiness` turns ready once all their caches
/// are filled.
pub async fn run(settings: Settings, readiness: Option<Readiness>) {
    let started: Vec<Started> = vec![
        // operon:scaffold:controllers
    ];
    let ready = ReadyWhenSynced::new(readiness, started.len());
    if started.is_empty() {
        tracing::warn!("no controllers yet (`operon add controller`): waiting for shutdown");
        settings.stop.clone().await;
    }
    let runs = started.into_iter().map(|s| {
        let gates = Gates::new(settings.stop.clone()).leading_opt(settings.leading.clone());
        (s.run)(ready.count(gates))
    });
    futures::future::join_all(runs).await;
}
