//! The shared runtime of Operon's operators, on top of kube-rs: what runs an operator.
//! What deploys one (manifests, bundle, chart) is `operon-manifests`.
//!
//! One focused module per concern, so that no operator reimplements them:
//! - [`admin`]: the admin HTTP server (`/healthz`, `/readyz`, `/metrics`);
//! - [`lease`]: Lease leader election with a warm standby;
//! - [`backoff`]: per-object exponential backoff (controller-runtime's 5 ms → 1000 s);
//! - [`controller`]: the one engine every controller runs on: reflectors, a work queue with
//!   client-go's semantics, N workers, warm standby, metrics, backoff, graceful shutdown;
//! - [`reconciler`]: the `Cause` of a reconcile error, for metrics and logs;
//! - [`cache`]: knowing when a reflector has its initial list, from any number of tasks;
//! - [`conditions`]: `metav1.Condition` updates that keep `lastTransitionTime` and report change;
//! - [`client`]: a client that counts its own requests by verb and resource;
//! - [`finalizers`]: adding and removing finalizers without losing concurrent changes;
//! - [`events`]: events.k8s.io Events for the objects an operator reconciles;
//! - [`metrics`]: reconcile counters with controller-runtime's names;
//! - [`operator`]: the `run` command every operator binary shares (flags, leader election, admin server, shutdown);
//! - [`owned`]: the objects an operator creates for a resource, applied with ownership, pruned;
//! - [`telemetry`]: structured logs (text or JSON);
//! - [`shutdown`]: SIGTERM/SIGINT as a future.

pub mod admin;
pub mod backoff;
pub mod cache;
pub mod client;
pub mod conditions;
pub mod controller;
pub mod events;
pub mod finalizers;
pub mod lease;
pub mod metrics;
pub mod operator;
pub mod owned;
pub mod reconciler;
pub mod shutdown;
pub mod telemetry;
