//! The error side of a reconcile: each controller's error names its cause, a short fixed label
//! for `operon_reconcile_errors_by_cause_total` and for the retry's log line
//! ([`crate::controller`] does the counting, the backoff and the retry).

/// A controller's error: its cause labels `operon_reconcile_errors_by_cause_total` and the
/// retry's log line.
pub trait Cause: std::fmt::Display {
    /// A short, fixed label such as `kube` or `invalid_spec`.
    fn cause(&self) -> &'static str;
}
