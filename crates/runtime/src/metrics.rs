//! Controller counters, named after controller-runtime's metrics so that dashboards and alerts
//! written for Go operators apply.

use std::sync::atomic::{AtomicU64, Ordering};

/// Per-controller reconcile counters.
#[derive(Debug, Default)]
pub struct ControllerMetrics {
    /// `controller_runtime_reconcile_total{result="success"}`
    reconcile_success: AtomicU64,
    /// `controller_runtime_reconcile_total{result="error"}` and
    /// `controller_runtime_reconcile_errors_total`
    reconcile_errors: AtomicU64,
}

impl ControllerMetrics {
    pub fn reconciled(&self, ok: bool) {
        let counter = if ok {
            &self.reconcile_success
        } else {
            &self.reconcile_errors
        };
        counter.fetch_add(1, Ordering::Relaxed);
    }

    /// Reconciles finished, successful or not.
    pub fn reconciles(&self) -> u64 {
        self.reconcile_success.load(Ordering::Relaxed) + self.errors()
    }

    pub fn errors(&self) -> u64 {
        self.reconcile_errors.load(Ordering::Relaxed)
    }
}
