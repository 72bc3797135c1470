//! monitoring-operator: the talk's third example (slides 33–37), on Operon's runtime.
//!
//! Like OpenShift's cluster-monitoring-operator it installs and keeps in shape a monitoring
//! stack made of real upstream components: the Prometheus Operator (with its CRDs), a
//! `Prometheus` and an `Alertmanager` it runs, kube-state-metrics and node_exporter, their
//! ServiceAccounts, RBAC, Services and ServiceMonitors, and the platform's alerting rules. Its
//! configuration is CMO's: the ConfigMap `cluster-monitoring-config` (key `config.yaml`); its
//! status is the `ClusterOperator` named `monitoring`, which also owns the stack.

pub mod api;
pub mod config;
pub mod controller;
pub mod crds;
pub mod deploy;
pub mod platform;
pub mod resources;
pub mod stack;
