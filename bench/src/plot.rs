//! SVG plots of a report: latency CDFs, convergence curves, memory over time.

use std::path::Path;

use anyhow::Result;
use operon_plot::{RGBColor, lines};

use crate::peer::PeerKind;
use crate::report::{PeerRun, Report};

fn color(peer: PeerKind) -> RGBColor {
    match peer {
        PeerKind::Direct => RGBColor(110, 110, 110),
        PeerKind::Operon => RGBColor(206, 66, 43),
        PeerKind::Go => RGBColor(0, 125, 156),
        PeerKind::GoTuned => RGBColor(40, 60, 190),
        PeerKind::KubeRs => RGBColor(225, 150, 20),
        PeerKind::OperonMimalloc => RGBColor(150, 40, 150),
    }
}

/// Writes the plots of the first run next to the report as `<stem>-*.svg`; returns (title, file
/// name) pairs.
pub fn write(report: &Report, dir: &Path, stem: &str) -> Result<Vec<(String, String)>> {
    let mut out = Vec::new();
    let first: Vec<&PeerRun> = report.peers.iter().filter(|p| p.run == 0).collect();
    // Latency CDF per phase.
    let mut phases: Vec<String> = Vec::new();
    for p in &first {
        for ph in &p.phases {
            if !phases.contains(&ph.name) {
                phases.push(ph.name.clone());
            }
        }
    }
    for name in &phases {
        let series: Vec<_> = first
            .iter()
            .filter_map(|p| {
                let ph = p.phases.iter().find(|ph| &ph.name == name)?;
                let n = ph.latencies_ms.len().max(1) as f64;
                let pts = ph
                    .latencies_ms
                    .iter()
                    .enumerate()
                    .map(|(i, ms)| (*ms, (i + 1) as f64 / n))
                    .collect();
                Some((p.peer.name().to_string(), color(p.peer), pts))
            })
            .collect();
        let file = format!("{stem}-latency-{name}.svg");
        lines(
            &dir.join(&file),
            &format!("latency CDF, {name}"),
            "milliseconds from the call sent to the Pod's event (log scale)",
            "fraction of objects",
            &series,
            true,
        )?;
        out.push((format!("latency CDF, {name}"), file));
    }
    // Convergence curves of the bursts.
    for name in phases.iter().filter(|n| n.starts_with("burst")) {
        let series: Vec<_> = first
            .iter()
            .filter_map(|p| {
                let ph = p.phases.iter().find(|ph| &ph.name == name)?;
                let pts = ph.curve.iter().map(|(t, n)| (*t, *n as f64)).collect();
                Some((p.peer.name().to_string(), color(p.peer), pts))
            })
            .collect();
        let file = format!("{stem}-convergence-{name}.svg");
        lines(
            &dir.join(&file),
            &format!("Convergence, {name}"),
            "seconds since the first create",
            "objects Ready",
            &series,
            false,
        )?;
        out.push((format!("convergence, {name}"), file));
    }
    // Open loop: achieved rate and p99 CR→Ready against the offered rate, medians over the runs.
    let rates = report.rate_phases();
    if !rates.is_empty() {
        let curve = |f: &dyn Fn(&crate::report::Phase) -> Option<f64>| -> Vec<_> {
            report
                .kinds()
                .into_iter()
                .map(|k| {
                    let pts = rates
                        .iter()
                        .filter_map(|(name, rate)| {
                            report.over_phase(k, name, f).map(|s| (*rate, s.median))
                        })
                        .collect();
                    (k.name().to_string(), color(k), pts)
                })
                .collect()
        };
        let file = format!("{stem}-capacity.svg");
        lines(
            &dir.join(&file),
            "Capacity: rate achieved against rate offered (medians)",
            "offered PodRequests per second",
            "achieved: objects ÷ first create to last Ready (per second)",
            &curve(&|p| Some(p.n as f64 / p.converge_s)),
            false,
        )?;
        out.push(("capacity".into(), file));
        let file = format!("{stem}-ready-p99-by-rate.svg");
        lines(
            &dir.join(&file),
            "p99 CR→Ready against rate offered (medians)",
            "offered PodRequests per second",
            "p99 ms from the create sent to Ready",
            &curve(&|p| p.ready_latency.as_ref().map(|l| l.p99_ms)),
            false,
        )?;
        out.push(("p99 CR→Ready by offered rate".into(), file));
    }
    // Memory over each operator's run.
    let series: Vec<_> = first
        .iter()
        .filter(|p| !p.memory.is_empty())
        .map(|p| {
            let pts = p.memory.iter().map(|s| (s.t, s.rss_mb)).collect();
            (p.peer.name().to_string(), color(p.peer), pts)
        })
        .collect();
    if !series.is_empty() {
        let file = format!("{stem}-memory.svg");
        lines(
            &dir.join(&file),
            "Operator RSS over the first run",
            "seconds since the peer's control plane was up",
            "RSS (MB)",
            &series,
            false,
        )?;
        out.push(("memory over time".into(), file));
    }
    Ok(out)
}
