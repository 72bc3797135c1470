//! The shared runtime of Operon's operators, on top of kube-rs: what runs an operator.
//! What deploys one (manifests, bundle, chart) is `operon-manifests`.
//!
//! One focused module per concern, so that no operator reimplements them:
//! - [`admin`]: the admin HTTP server (`/healthz`, `/readyz`, `/metrics`);
//! - [`lease`]: Lease leader election with a warm standby;
//! - [`backoff`]: per-object exponential backoff (controller-runtime's 5 ms → 1000 s);
//! - [`manager`]: what an operator's controllers share: client, namespace scopes, one reflector
//!   per watch, readiness, leader gating, stop, metrics, Events;
//! - [`controller`]: the one engine every controller runs on: reflectors, a work queue with
//!   client-go's semantics, N workers, warm standby, metrics, backoff, graceful shutdown;
//! - [`cache`]: knowing when a reflector has its initial list, from any number of tasks;
//! - [`conditions`]: `metav1.Condition` updates that keep `lastTransitionTime` and report change;
//! - [`command`]: the `run` command every operator binary shares (flags, leader election, admin
//!   server, shutdown) around a [`manager::Manager`];
//! - [`client`]: a client that counts its own requests by verb and resource;
//! - [`finalizers`]: adding and removing finalizers without losing concurrent changes;
//! - [`events`]: events.k8s.io Events for the objects an operator reconciles;
//! - [`metrics`]: reconcile counters with controller-runtime's names;
//! - [`owned`]: the objects an operator creates for a resource, applied with ownership, pruned;
//! - [`rbac`]: the RBAC rules the runtime's own API calls need (events, Lease, metrics auth);
//! - [`telemetry`]: structured logs (text or JSON);
//! - [`shutdown`]: SIGTERM/SIGINT as a future.

pub mod admin;
pub mod backoff;
pub mod cache;
pub mod client;
pub mod command;
pub mod conditions;
pub mod controller;
pub mod events;
pub mod finalizers;
pub mod kubeconfig;
pub mod lease;
pub mod manager;
pub mod metrics;
pub mod owned;
pub mod rbac;
pub mod serving_cert;
pub mod shutdown;
pub mod telemetry;
