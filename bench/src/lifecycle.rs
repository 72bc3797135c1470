//! Restart over existing objects, and failover to a standby.

use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use k8s_openapi::api::core::v1::Pod;
use kube::api::Api;
use nix::sys::signal::Signal;
use operon_cluster::wait;

use crate::cluster::Cluster;
use crate::peer::{PeerKind, PeerSettings, Process, Sampler};
use crate::report::{Failover, Restart};
use crate::workload::{self, Recorder};

/// Stops the leader and starts it again over `objects` existing requests: time to leading, to
/// the first reconcile, to a drained queue; writes made; peak memory.
pub(crate) async fn restart(
    cluster: &Cluster,
    kind: PeerKind,
    settings: &PeerSettings,
    mut old: Process,
    objects: usize,
    sampler: &Sampler,
    origin: Instant,
) -> Result<(Restart, Process)> {
    old.signal(Signal::SIGTERM)?;
    old.wait(Duration::from_secs(40)).await?;
    let mark = cluster.audit_mark()?;
    let since = origin.elapsed().as_secs_f64();
    let p = Process::start(kind, settings, &cluster.peer_kubeconfig, 0)?;
    sampler.follow(Some(p.pid()));
    p.wait_metrics(Duration::from_secs(60), "leadership", |m| m.leading())
        .await?;
    let to_leader_s = p.started.elapsed().as_secs_f64();
    p.wait_metrics(Duration::from_secs(120), "a first reconcile", |m| {
        m.reconciles() > 0
    })
    .await?;
    let to_first_reconcile_s = p.started.elapsed().as_secs_f64();
    let drained = p
        .wait_metrics(Duration::from_secs(300), "a drained queue", |m| {
            m.reconciles() >= objects as u64 && m.depth() == 0.0
        })
        .await?;
    let to_drained_s = p.started.elapsed().as_secs_f64();
    let peak_rss_mb = sampler.peak_since(since);
    let audit = cluster.audit_since(mark)?;
    let rss_after_mb = p.usage().map(|u| u.rss_bytes as f64 / 1e6).unwrap_or(0.0);
    Ok((
        Restart {
            objects,
            to_leader_s,
            to_first_reconcile_s,
            to_drained_s,
            writes: audit.writes_except_leases(),
            gets: audit.gets_except_leases(),
            reconciles: drained.reconciles(),
            peak_rss_mb,
            rss_after_mb,
        },
        p,
    ))
}

/// With a standby waiting, stops the leader (SIGTERM, then SIGKILL) and times how long a
/// request created at that moment waits for its Pod.
pub(crate) async fn failover(
    cluster: &Cluster,
    kind: PeerKind,
    settings: &PeerSettings,
    leader: Process,
    sampler: &Sampler,
) -> Result<(Failover, Process)> {
    let ns = "bench-failover";
    cluster.namespace(ns).await?;
    let pods = Recorder::start(
        Api::<Pod>::namespaced(cluster.admin.clone(), ns),
        workload::PODS,
    )
    .await?;
    let mut times = Vec::new();
    let mut leader = leader;
    for (i, signal) in [Signal::SIGTERM, Signal::SIGKILL].into_iter().enumerate() {
        let standby = Process::start(kind, settings, &cluster.peer_kubeconfig, i + 1)?;
        // As a rolling update does: the old leader stops once the new replica is ready (for a
        // warm standby, its caches are synced; the scaffold-style Go peer is ready at once and
        // fills its caches only after it wins).
        standby
            .wait_ready(Duration::from_secs(60), "the standby")
            .await?;
        standby
            .wait_metrics(Duration::from_secs(60), "the standby's metrics", |_| true)
            .await?;
        // The standby must be trying for the Lease: its first attempt comes at start.
        let standby_m = standby.metrics().await;
        if standby_m.is_some_and(|m| m.leading()) {
            bail!("the standby leads while the leader runs");
        }
        let name = format!("failover-{}", i);
        let t0 = Instant::now();
        leader.signal(signal)?;
        workload::burst(&cluster.admin, kind, ns, vec![name.clone()], 1).await?;
        // Spaced finely and evenly: the failover time is measured when it is seen.
        wait::until_every(
            &format!("a Pod for {name} after the leader's {signal}"),
            Duration::from_secs(90).saturating_sub(t0.elapsed()),
            wait::Backoff::every(Duration::from_millis(10)),
            || {
                let created = pods.with(|t| t.added.contains_key(&name));
                std::future::ready(if created {
                    Ok(())
                } else {
                    Err("no Pod yet".to_string())
                })
            },
        )
        .await?;
        times.push(t0.elapsed().as_secs_f64());
        leader.wait(Duration::from_secs(40)).await.ok();
        sampler.follow(Some(standby.pid()));
        leader = standby;
    }
    Ok((
        Failover {
            sigterm_s: times.first().copied().unwrap_or(f64::NAN),
            sigkill_s: times.get(1).copied().unwrap_or(f64::NAN),
        },
        leader,
    ))
}
