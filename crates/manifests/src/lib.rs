//! What deploys an operator, generated from what it declares: its kustomize tree (CRDs, RBAC,
//! Deployment, Service, NetworkPolicy, Prometheus rules), OLM bundle and Helm chart; and the
//! audit of a running operator's permissions against that declaration.
//!
//! Apart from [`operon_runtime`], which runs operators, as kubebuilder keeps controller-tools
//! apart from controller-runtime: an operator's binary links this crate only for its generation
//! commands ([`Command`]), the same in every operator. It reads the runtime only for the RBAC
//! rules the runtime declares its own calls need ([`operon_runtime::rbac`]: Events, the
//! leader-election Lease, metrics auth), which every operator's generated RBAC grants.
//!
//! - the crate root: [`OperatorManifests`], the declaration, and the objects it yields;
//! - [`admission`]: ValidatingAdmissionPolicies against privilege escalation through an operator;
//! - [`alerts`]: Prometheus alerting rules on controller-runtime's metric names;
//! - [`olm`]: the OLM bundle (registry+v1); [`helm`]: the Helm chart;
//! - [`schema`]: CRD schemas of status types (conditions, times) the operator can always read back;
//! - [`generate`]: writing those files only when they change, removing stale ones;
//! - [`audit`]: the operator's ServiceAccount checked against its declared RBAC (can-i matrix);
//! - [`Command`]: `crds`, `manifests`, `bundle`, `chart` and `audit`, for an operator's CLI.

pub mod admission;
pub mod alerts;
pub mod audit;
mod command;
mod deployment;
pub mod generate;
pub mod helm;
pub mod olm;
pub mod schema;

pub use command::{Command, Declaration};
pub use deployment::*;
