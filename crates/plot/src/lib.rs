//! SVG line charts, as the benchmark (`bench/`) and the soak (`cargo xtask soak`) draw them:
//! one chart of labelled lines, written without a font or image library.

use std::path::Path;

use plotters::prelude::*;
pub use plotters::style::RGBColor;

#[derive(Debug, thiserror::Error)]
#[error("drawing {path}: {message}")]
pub struct Error {
    pub path: String,
    pub message: String,
}

/// A line: label, colour, points.
pub type Series = (String, RGBColor, Vec<(f64, f64)>);

/// Draws `series` as one chart into the SVG file `path`. The y axis starts at 0. With `log_x`,
/// x values are drawn on a log10 axis (values below 0.1 at 0.1) and labelled in their own
/// units.
pub fn lines(
    path: &Path,
    title: &str,
    x_label: &str,
    y_label: &str,
    series: &[Series],
    log_x: bool,
) -> Result<(), Error> {
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
    let e = |e: DrawingAreaErrorKind<_>| Error {
        path: path.display().to_string(),
        message: format!("{e:?}"),
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_chart_names_its_lines() -> Result<(), Box<dyn std::error::Error>> {
        let dir = tempfile::tempdir()?;
        let path = dir.path().join("chart.svg");
        let series: Vec<Series> = vec![
            (
                "up".into(),
                RGBColor(200, 0, 0),
                vec![(0.0, 1.0), (10.0, 5.0)],
            ),
            (
                "flat".into(),
                RGBColor(0, 0, 200),
                vec![(0.0, 2.0), (10.0, 2.0)],
            ),
        ];
        lines(&path, "a title", "seconds", "MiB", &series, false)?;
        let svg = std::fs::read_to_string(&path)?;
        assert!(svg.starts_with("<svg"), "{svg}");
        // Each text element holds its text on a line of its own.
        for text in ["a title", "seconds", "MiB", "up", "flat"] {
            assert!(
                svg.lines().any(|l| l.trim() == text),
                "{text} missing from the chart"
            );
        }
        Ok(())
    }
}
