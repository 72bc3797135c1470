//! {{name}}: a microservice as a Kubernetes operator.
//!
//! Its API ([`api`]) is a set of custom resources: the Kubernetes API server serves, stores,
//! authenticates and authorizes them. Its controllers ([`controller`]) move what exists toward
//! what those resources ask for. [`deploy`] declares what it needs in a cluster, from which
//! `operon manifests` writes `config/`.

pub mod api;
pub mod controller;
pub mod deploy;
