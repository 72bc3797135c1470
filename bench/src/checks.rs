//! The quick run's regression checks: request counts, idle writes and the queue's own counts.

use anyhow::{Result, bail};

use crate::peer::PeerKind;
use crate::report::Report;

/// The regression check of `--quick`: counts, which don't depend on the machine's speed.
pub(crate) fn check_counts(report: &Report) -> Result<()> {
    let Some(ours) = report.peers.iter().find(|p| p.peer == PeerKind::Operon) else {
        return Ok(());
    };
    let mut failures = Vec::new();
    for phase in &ours.phases {
        let p = &phase.per_object;
        // A deletion is the garbage collector's work: the operator creates nothing.
        let creates = if phase.kind == "delete" { 0.0 } else { 1.0 };
        if (p.pod_creates - creates).abs() > 1e-9 {
            failures.push(format!(
                "{}: {:.3} Pod creates per PodRequest (want exactly {creates})",
                phase.name, p.pod_creates
            ));
        }
        if phase.kind == "delete" && p.status_writes > 0.0 {
            failures.push(format!(
                "{}: {:.3} status writes per deleted PodRequest (want 0)",
                phase.name, p.status_writes
            ));
        }
        if p.status_writes > 2.0 {
            failures.push(format!(
                "{}: {:.3} status writes per PodRequest (want ≤ 2)",
                phase.name, p.status_writes
            ));
        }
        if let Some(events) = phase.created_events.filter(|e| *e < phase.n) {
            failures.push(format!(
                "{}: {events} of {} PodRequests have a Created Event (want every one)",
                phase.name, phase.n
            ));
        }
        if p.gets > 0.0 {
            failures.push(format!(
                "{}: {:.3} GETs per PodRequest (want 0: reads come from the caches)",
                phase.name, p.gets
            ));
        }
        // The queue's own count: a bounded number of keys per request, not work that grows
        // with the backlog, and every reconcile one of those keys.
        if let (Some(adds), Some(reconciles)) = (phase.queue_adds, phase.reconciles) {
            let per_request = match phase.kind.as_str() {
                "update" => QUEUE_ADDS_PER_UPDATE,
                "delete" => QUEUE_ADDS_PER_DELETE,
                _ => QUEUE_ADDS_PER_REQUEST,
            };
            let bound = per_request * phase.n as u64 + 10;
            if adds > bound {
                failures.push(format!(
                    "{}: {adds} keys queued for {} PodRequests (want ≤ {bound})",
                    phase.name, phase.n
                ));
            }
            if reconciles > adds {
                failures.push(format!(
                    "{}: {reconciles} reconciles from {adds} queued keys (want ≤)",
                    phase.name
                ));
            }
        }
        if let Some(retries) = phase.queue_retries.filter(|r| *r > 0) {
            failures.push(format!(
                "{}: {retries} retries (want 0: nothing fails on a healthy cluster)",
                phase.name
            ));
        }
    }
    let idles = ours
        .idle
        .iter()
        .chain(ours.phases.iter().filter_map(|p| p.idle.as_ref()));
    for idle in idles {
        if idle.writes > 0 || idle.gets > 0 {
            failures.push(format!(
                "idle for {} s: {} writes and {} GETs (want 0 and 0)",
                idle.seconds, idle.writes, idle.gets
            ));
        }
    }
    if let Some(r) = &ours.restart
        && r.writes > 0
    {
        failures.push(format!(
            "restart over {} existing requests made {} writes (want 0)",
            r.objects, r.writes
        ));
    }
    if failures.is_empty() {
        eprintln!("bench: quick check passed (request counts and idle writes)");
        Ok(())
    } else {
        bail!("request counts regressed:\n  {}", failures.join("\n  "))
    }
}

/// Keys queued per PodRequest at most: its creation, its Pod's creation, its Pod's running and
/// readiness (one change or two), and a requeue when the Pod isn't ready within a second.
const QUEUE_ADDS_PER_REQUEST: u64 = 5;
/// Per spec change: the change, the old Pod's deletion (marked, then gone), and then what a
/// new request gets.
const QUEUE_ADDS_PER_UPDATE: u64 = 3 + QUEUE_ADDS_PER_REQUEST;
/// Per deleted request: its deletion, its Pod's (marked, then gone).
const QUEUE_ADDS_PER_DELETE: u64 = 3;
