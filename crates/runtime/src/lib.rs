//! The shared runtime of Operon's operators, on top of kube-rs.
//!
//! One focused module per concern, so that no operator reimplements them:
//! - [`admission`]: ValidatingAdmissionPolicies against privilege escalation through an operator;
//! - [`alerts`]: Prometheus alerting rules on controller-runtime's metric names;
//! - [`audit`]: an operator's ServiceAccount checked against its declared RBAC (can-i matrix);
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
//! - [`manifests`]: deployment objects (RBAC, Deployment, Service, …) generated from an operator's declared needs;
//! - [`operator`]: the `run` command every operator binary shares (flags, leader election, admin server, shutdown);
//! - [`olm`]: the operator's OLM bundle (registry+v1), from the same declaration;
//! - [`helm`]: its Helm chart, from the same declaration;
//! - [`generate`]: writing those files (config/, bundle/, charts/) only when they change;
//! - [`owned`]: the objects an operator creates for a resource, applied with ownership, pruned;
//! - [`telemetry`]: structured logs (text or JSON);
//! - [`shutdown`]: SIGTERM/SIGINT as a future.

pub mod admin;
pub mod admission;
pub mod alerts;
pub mod audit;
pub mod backoff;
pub mod cache;
pub mod client;
pub mod conditions;
pub mod controller;
pub mod events;
pub mod finalizers;
pub mod generate;
pub mod helm;
pub mod lease;
pub mod manifests;
pub mod metrics;
pub mod olm;
pub mod operator;
pub mod owned;
pub mod reconciler;
pub mod shutdown;
pub mod telemetry;
