//! The SVG picture: the latency percentile spectrum per run (log percentile axis, as
//! HdrHistogram's plotter draws it) above the achieved rate per size.

use std::path::Path;

use plotters::prelude::*;

use crate::result::{RunResult, Transport};
use crate::units::human_count;

/// Highest `1/(1-q)` drawn: 99.9999%.
const MAX_X: f64 = 1e6;

/// `1/(1-q)` as a percentile label: 10 -> `90%`, 1000 -> `99.9%`.
fn percentile_label(x: &f64) -> String {
    let p = (1.0 - 1.0 / x) * 100.0;
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// Draws `runs` into an SVG file at `path`.
pub fn draw(runs: &[RunResult], path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (960, 900)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(580);
    latency_spectrum(&top, runs)?;
    achieved_rate(&bottom, runs)?;
    root.present()?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

fn latency_spectrum(area: &Area<'_>, runs: &[RunResult]) -> anyhow::Result<()> {
    let series: Vec<(String, Vec<(f64, f64)>)> = runs
        .iter()
        .filter(|r| !r.latency.is_empty())
        .map(|r| {
            let pts = r
                .latency
                .iter_quantiles(5)
                .filter(|v| v.quantile_iterated_to() < 1.0)
                .map(|v| {
                    let x = (1.0 / (1.0 - v.quantile_iterated_to())).min(MAX_X);
                    (x, v.value_iterated_to().max(1) as f64 / 1e3)
                })
                .collect();
            // Of the received events: a run that missed some says so in its legend.
            let label = match r.missing().filter(|&m| m > 0) {
                Some(m) => format!(
                    "{} B {} (received only: {m} of {} missing)",
                    r.size_bytes, r.transport, r.scheduled
                ),
                None => format!("{} B {}", r.size_bytes, r.transport),
            };
            (label, pts)
        })
        .collect();
    let (lo, hi) = series
        .iter()
        .flat_map(|(_, p)| p.iter().map(|&(_, y)| y))
        .fold((f64::MAX, 0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (lo, hi) = if hi > 0.0 {
        (lo * 0.8, hi * 1.5)
    } else {
        (1.0, 1000.0)
    };
    let mut chart = ChartBuilder::on(area)
        .caption(
            "End-to-end latency by percentile (intended send time to receipt)",
            ("sans-serif", 20),
        )
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..MAX_X).log_scale(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency (us)")
        .x_label_formatter(&percentile_label)
        .y_label_formatter(&|y| human_count(*y))
        .draw()?;
    for (i, (label, pts)) in series.into_iter().enumerate() {
        let color = Palette99::pick(i).to_rgba();
        chart
            .draw_series(LineSeries::new(pts, color.stroke_width(2)))?
            .label(label)
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::UpperLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

fn achieved_rate(area: &Area<'_>, runs: &[RunResult]) -> anyhow::Result<()> {
    let max_size = runs.iter().map(|r| r.size_bytes).max().unwrap_or(65_457) as f64;
    let min_size = runs.iter().map(|r| r.size_bytes).min().unwrap_or(64) as f64;
    let max_rate = runs
        .iter()
        .map(|r| r.target_rate_per_s.max(r.achieved_rate_per_s))
        .fold(1.0, f64::max);
    let mut chart = ChartBuilder::on(area)
        .caption("Achieved rate by datagram size", ("sans-serif", 20))
        .margin(12)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d(
            ((min_size * 0.8)..(max_size * 1.25)).log_scale(),
            0f64..max_rate * 1.15,
        )?;
    chart
        .configure_mesh()
        .x_desc("datagram size (bytes)")
        .y_desc("events/s per target")
        .x_label_formatter(&|x| format!("{x:.0}"))
        .y_label_formatter(&|y| human_count(*y))
        .draw()?;
    let mut sizes: Vec<f64> = runs.iter().map(|r| r.size_bytes as f64).collect();
    sizes.dedup();
    let target = runs.first().map_or(0.0, |r| r.target_rate_per_s);
    chart
        .draw_series(LineSeries::new(
            sizes.iter().map(|&s| (s, target)),
            BLACK.mix(0.5).stroke_width(1),
        ))?
        .label("target")
        .legend(|(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], BLACK.mix(0.5)));
    for (i, t) in [Transport::Udp, Transport::Unix, Transport::Mixed]
        .into_iter()
        .enumerate()
    {
        let pts: Vec<(f64, f64)> = runs
            .iter()
            .filter(|r| r.transport == t)
            .map(|r| (r.size_bytes as f64, r.achieved_rate_per_s))
            .collect();
        if pts.is_empty() {
            continue;
        }
        let color = Palette99::pick(i + 20).to_rgba();
        chart
            .draw_series(LineSeries::new(pts.clone(), color.stroke_width(2)))?
            .label(t.as_str())
            .legend(move |(x, y)| {
                PathElement::new(vec![(x, y), (x + 20, y)], color.stroke_width(2))
            });
        chart.draw_series(pts.into_iter().map(|p| Circle::new(p, 4, color.filled())))?;
    }
    chart
        .configure_series_labels()
        .position(SeriesLabelPosition::LowerLeft)
        .background_style(WHITE.mix(0.85))
        .border_style(BLACK)
        .draw()?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentile_labels() {
        assert_eq!(percentile_label(&1.0), "0%");
        assert_eq!(percentile_label(&10.0), "90%");
        assert_eq!(percentile_label(&1000.0), "99.9%");
    }
}
