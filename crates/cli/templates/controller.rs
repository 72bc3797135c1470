//! The {{Kind}} controller: moves what exists toward what each {{Kind}} asks for.
//!
//! - [`desired`] says which objects a {{Kind}} wants{{owned_doc}}. They are created with the
//!   {{Kind}} as their controller owner, updated when `desired` changes, deleted when no longer
//!   wanted, and garbage-collected with the {{Kind}}; a change to one wakes its {{Kind}}.
//! - [`cleanup`] runs before a {{Kind}} goes away: a finalizer holds the deletion until it
//!   succeeds.
//! - The `Ready` condition tells users the outcome; Events tell what was done. A reconcile
//!   that fails (an API error, a child the API server rejects) shows as `Ready=False` with the
//!   error and a Warning Event (`ReconcileError`), from the runtime, until it succeeds.
//!
//! Errors are retried per object with exponential backoff; reconciles, errors and their
//! durations are on `/metrics` under controller-runtime's names.

use std::sync::Arc;
use std::time::Duration;

use kube::api::{Api, Patch, PatchParams};
use kube::runtime::watcher;
use kube::{Client, ResourceExt};
use operon_manifests::Rule;
use operon_runtime::conditions::{self, Desired};
use operon_runtime::controller::{self, Action, Cause, Controller};
use operon_runtime::events::Events;
use operon_runtime::finalizers;
use operon_runtime::manager::Manager;
use operon_runtime::owned::{{{owned_uses}}};
use serde_json::json;
{{owned_imports}}
use super::Settings;
use crate::api::{{kind_snake}}::{condition, {{Kind}}};

/// Held on every {{Kind}} until [`cleanup`] succeeded.
pub const FINALIZER: &str = "{{group}}/finalizer";
/// When a {{Kind}} whose objects' names are taken is looked at again.
const CONFLICT_RETRY: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API error: {0}")]
    Kube(#[from] kube::Error),
    #[error("{0}")]
    Children(#[from] owned::Error),
    /// A spec the schema accepts but the operator can't act on: reported in the `Ready`
    /// condition and an Event, and not retried until the spec changes.
    #[error("{0}")]
    InvalidSpec(String),
}

impl Cause for Error {
    /// The `cause` label of `operon_reconcile_errors_by_cause_total`.
    fn cause(&self) -> &'static str {
        match self {
            Error::Kube(_) => "kube",
            Error::Children(_) => "children",
            Error::InvalidSpec(_) => "invalid_spec",
        }
    }
}

/// The objects a {{Kind}} wants.
#[derive(Debug, Default)]
pub struct Wanted {{{wanted_fields}}}

/// What should exist for `{{kind_snake}}`: fill this in. Name each object (after the
/// {{Kind}}, for instance); the namespace defaults to the {{Kind}}'s and ownership is added
/// for you. Return [`Error::InvalidSpec`] for a spec you can't act on.
pub fn desired({{kind_snake}}: &{{Kind}}) -> Result<Wanted, Error> {
    let _ = {{kind_snake}};
    Ok(Wanted::default())
}

/// Runs before a {{Kind}} is deleted, until it succeeds: release what it holds outside the
/// cluster. The objects it owns need nothing here: the garbage collector deletes them.
pub async fn cleanup({{kind_snake}}: &{{Kind}}) -> Result<(), Error> {
    let _ = {{kind_snake}};
    Ok(())
}

/// The API calls this controller makes, derived from what it reconciles and owns.
pub fn rules() -> Vec<Rule> {
    vec![
        Rule::new("{{group}}", &["{{plural}}"], &["list", "watch", "patch"]),
        Rule::new("{{group}}", &["{{plural}}/status"], &["patch"]),{{owned_rules}}
    ]
}

/// Kinds of the objects it creates, `(kind, version)`.
pub fn owned_kinds() -> Vec<(&'static str, &'static str)> {
    vec![{{owned_kinds}}]
}

struct Context {
    client: Client,
    events: Events,{{children_fields}}
}

/// Changes that matter to a reconcile: not the controller's own status writes.
fn fingerprint(obj: &{{Kind}}) -> u64 {
    controller::fingerprint(&(
        obj.metadata.generation,
        obj.metadata.deletion_timestamp.is_some(),
        obj.finalizers(),
    ))
}

/// Registers the controller: it watches every {{Kind}}{{owned_doc}}, and reconciles once
/// this replica leads and the caches are filled.
pub fn register(manager: &mut Manager, settings: &Settings) {
    let client = manager.client();
    let objects = manager.reflect(
        Api::<{{Kind}}>::all(client.clone()),
        watcher::Config::default(),
        controller::trim_managed_fields,
    );{{children_new}}
    let context = Arc::new(Context {
        events: manager.events(),
        client,{{children_init}}
    });
    let controller = Controller::new("{{kind_lower}}", objects)
        .filter(fingerprint){{owns_streams}}
        .workers(settings.concurrency.into())
        .ready_condition();
    manager.add(controller, context, reconcile);
}

async fn reconcile(obj: Arc<{{Kind}}>, ctx: Arc<Context>) -> Result<Action, Error> {
    obj.reconcile(&ctx).await
}

impl Context {
    fn api(&self, {{kind_snake}}: &{{Kind}}) -> Api<{{Kind}}> {
{{api_body}}
    }
}

/// `applied: a, b; deleted: c`.
fn summary(outcome: &Outcome) -> String {
    let mut parts = Vec::new();
    if !outcome.applied.is_empty() {
        parts.push(format!("applied: {}", outcome.applied.join(", ")));
    }
    if !outcome.pruned.is_empty() {
        parts.push(format!("deleted: {}", outcome.pruned.join(", ")));
    }
    parts.join("; ")
}

impl {{Kind}} {
    /// One step toward what this {{Kind}} asks for.
    async fn reconcile(&self, ctx: &Context) -> Result<Action, Error> {
        let api = ctx.api(self);
        if self.metadata.deletion_timestamp.is_some() {
            if finalizers::has(self, FINALIZER) {
                cleanup(self).await?;
                finalizers::remove(&api, self, FINALIZER).await?;
                ctx.events
                    .normal(self, "CleanedUp", "Cleanup", "cleanup done; deletion proceeds")
                    .await;
            }
            return Ok(Action::await_change());
        }
        if finalizers::add(&api, self, FINALIZER).await?.is_some() {
            // The update is a change of its own: the next reconcile goes on from there.
            return Ok(Action::await_change());
        }
        let (ready, action) = match desired(self) {
            Err(Error::InvalidSpec(message)) => {
                ctx.events
                    .warning(self, "InvalidSpec", "Reconcile", message.clone())
                    .await;
                let ready = Desired::new(condition::READY, false, "InvalidSpec", message);
                (ready, Action::await_change())
            }
            Err(e) => return Err(e),
            Ok(wanted) => {
                {{children_reconcile}}
                if !outcome.applied.is_empty() || !outcome.pruned.is_empty() {
                    ctx.events
                        .normal(self, "Applied", "Reconcile", summary(&outcome))
                        .await;
                }
                if outcome.is_complete() {
                    let message = "every object this resource asks for exists as asked";
                    let ready = Desired::new(condition::READY, true, "Reconciled", message);
                    (ready, Action::await_change())
                } else {
                    let message = format!(
                        "taken by objects this {{Kind}} does not control, left alone: {}",
                        outcome.conflicts.join(", ")
                    );
                    ctx.events
                        .warning(self, "Conflict", "Reconcile", message.clone())
                        .await;
                    let ready = Desired::new(condition::READY, false, "Conflict", message);
                    (ready, Action::requeue(CONFLICT_RETRY))
                }
            }
        };
        let generation = self.metadata.generation;
        let mut status = self.status.clone().unwrap_or_default();
        // The status is this controller's report: conditions of types it doesn't set (someone
        // else wrote them) go, which also keeps its own within the schema's bound.
        let before = status.conditions.len();
        status
            .conditions
            .retain(|c| condition::ALL.contains(&c.type_.as_str()));
        let dropped = status.conditions.len() != before;
        let changed = conditions::set(&mut status.conditions, ready, generation);
        if changed || dropped || status.observed_generation != generation {
            status.observed_generation = generation;
            let patch = Patch::Merge(json!({ "status": status }));
            api.patch_status(&self.name_any(), &PatchParams::default(), &patch)
                .await?;
        }
        Ok(action)
    }
}
