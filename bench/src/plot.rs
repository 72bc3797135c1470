//! SVG plots of a report: latency CDFs, convergence curves, memory over time.

use std::path::Path;

use anyhow::{Result, anyhow};
use plotters::prelude::*;

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

/// A line: label, colour, points.
type Series = (String, RGBColor, Vec<(f64, f64)>);

/// One chart of lines.
/// With `log_x`, x values are drawn on a log10 axis (values below 0.1 at 0.1) and labelled in
/// their own units.
fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_x: bool,
) -> Result<()> {
    let owned: Vec<Series>;
    let series = if log_x {
        owned = series
            .iter()
            .map(|(l, c, pts)| {
                let pts = pts.iter().map(|(x, y)| (x.max(0.1).log10(), *y)).collect();
                (l.clone(), *c, pts)
            })
            .collect();
        &owned[..]
    } else {
        series
    };
    let points = series.iter().flat_map(|(_, _, p)| p.iter());
    let (mut x_max, mut y_max) = (0.0f64, 0.0f64);
    let mut x_min: f64 = if log_x { -1.0 } else { 0.0 };
    for (x, y) in points {
        if x.is_finite() && y.is_finite() {
            x_max = x_max.max(*x);
            x_min = x_min.min(*x);
            y_max = y_max.max(*y);
        }
    }
    let x_max = if x_max > x_min { x_max * 1.02 } else { 1.0 };
    let y_max = if y_max > 0.0 { y_max * 1.05 } else { 1.0 };
    let root = SVGBackend::new(path, (800, 480)).into_drawing_area();
    let e = |e: DrawingAreaErrorKind<_>| anyhow!("drawing {}: {e:?}", path.display());
    root.fill(&WHITE).map_err(e)?;
    let mut chart = ChartBuilder::on(&root)
        .caption(title, ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(60)
        .build_cartesian_2d(x_min..x_max, 0.0..y_max)
        .map_err(e)?;
    let label_x = |v: &f64| {
        if log_x {
            let v = 10f64.powf(*v);
            if v >= 10.0 {
                format!("{v:.0}")
            } else {
                format!("{v:.1}")
            }
        } else {
            format!("{v:.0}")
        }
    };
    chart
        .configure_mesh()
        .x_desc(x_label)
        .y_desc(y_label)
        .x_label_formatter(&label_x)
        .draw()
        .map_err(e)?;
    for (label, c, pts) in series {
        let c = *c;
        chart
            .draw_series(LineSeries::new(pts.iter().copied(), c.stroke_width(2)))
            .map_err(e)?
            .label(label.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 18, y)], c.stroke_width(2)));
    }
    chart
        .configure_series_labels()
        .background_style(WHITE.mix(0.8))
        .border_style(BLACK)
        .position(SeriesLabelPosition::LowerRight)
        .draw()
        .map_err(e)?;
    root.present().map_err(e)?;
    Ok(())
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
            "milliseconds from the call returned to the Pod's event (log scale)",
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
