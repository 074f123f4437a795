//! The SVG picture: the latency percentile spectrum per run (log percentile axis, as
//! HdrHistogram's plotter draws it) above the achieved rate per size. A colour per size, a line
//! style per transport (udp solid, unix dashed, mixed dotted), and the legends beside the
//! charts, where they cover no line.

use std::path::Path;

use plotters::prelude::*;

use super::hgrm::percentile_steps;
use crate::result::{RunResult, Transport};
use crate::units::human_count;

/// Highest `1/(1-q)` drawn: 99.9999%.
const MAX_X: f64 = 1e6;

/// The picture's size, and the width of the legend column right of the charts.
const WIDTH: u32 = 1200;
const HEIGHT: u32 = 900;
const LEGEND_WIDTH: u32 = 300;

/// Colours for the sizes, in order (Tableau 10 without its light yellow and grey, which read
/// badly on white).
const COLOURS: [RGBColor; 8] = [
    RGBColor(0x4e, 0x79, 0xa7),
    RGBColor(0xf2, 0x8e, 0x2b),
    RGBColor(0xe1, 0x57, 0x59),
    RGBColor(0x59, 0xa1, 0x4f),
    RGBColor(0xb0, 0x7a, 0xa1),
    RGBColor(0x76, 0xb7, 0xb2),
    RGBColor(0x9c, 0x75, 0x5f),
    RGBColor(0xff, 0x9d, 0xa7),
];

/// The target rate's line.
const TARGET_GREY: RGBColor = RGBColor(0x88, 0x88, 0x88);

/// `1/(1-q)` as a percentile label: 10 -> `90%`, 1000 -> `99.9%`.
fn percentile_label(x: &f64) -> String {
    let p = (1.0 - 1.0 / x) * 100.0;
    let s = format!("{p:.4}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s}%")
}

/// Microseconds as an axis label: `50 us`, `2.5 ms`, `1 s`.
fn duration_label(us: &f64) -> String {
    let (v, unit) = if *us >= 1e6 {
        (us / 1e6, "s")
    } else if *us >= 1e3 {
        (us / 1e3, "ms")
    } else {
        (*us, "us")
    };
    let s = format!("{v:.2}");
    let s = s.trim_end_matches('0').trim_end_matches('.');
    format!("{s} {unit}")
}

/// How a transport's lines are drawn.
#[derive(Clone, Copy)]
enum Dash {
    Solid,
    Dashed,
    Dotted,
}

impl From<Transport> for Dash {
    fn from(t: Transport) -> Dash {
        match t {
            Transport::Udp => Dash::Solid,
            Transport::Unix => Dash::Dashed,
            Transport::Mixed => Dash::Dotted,
        }
    }
}

impl Dash {
    /// `(dash, gap)` in pixels, `None` for a solid line.
    fn pattern(self) -> Option<(u32, u32)> {
        match self {
            Dash::Solid => None,
            Dash::Dashed => Some((8, 5)),
            Dash::Dotted => Some((2, 4)),
        }
    }
}

/// One line of a chart and its legend entry.
struct Line {
    label: String,
    /// A second, smaller legend line (what the line leaves out).
    note: Option<String>,
    colour: RGBColor,
    dash: Dash,
    points: Vec<(f64, f64)>,
}

/// Draws `runs` into an SVG file at `path`.
pub fn draw(runs: &[RunResult], path: &Path) -> anyhow::Result<()> {
    let root = SVGBackend::new(path, (WIDTH, HEIGHT)).into_drawing_area();
    root.fill(&WHITE)?;
    let (top, bottom) = root.split_vertically(580);
    latency_spectrum(&top, runs)?;
    achieved_rate(&bottom, runs)?;
    root.present()?;
    Ok(())
}

type Area<'a> = DrawingArea<SVGBackend<'a>, plotters::coord::Shift>;

/// The colour of each size, in the order the sizes first appear.
fn colour_of(runs: &[RunResult], size: usize) -> RGBColor {
    let mut sizes: Vec<usize> = runs.iter().map(|r| r.size_bytes).collect();
    sizes.dedup();
    let i = sizes.iter().position(|&s| s == size).unwrap_or(0);
    COLOURS[i % COLOURS.len()]
}

fn latency_spectrum(area: &Area<'_>, runs: &[RunResult]) -> anyhow::Result<()> {
    let lines: Vec<Line> = runs
        .iter()
        .filter(|r| !r.latency.is_empty())
        .map(|r| Line {
            label: format!("{} B {}", r.size_bytes, r.transport),
            // Of the received events: a run that missed some says so.
            note: r
                .missing()
                .filter(|&m| m > 0)
                .map(|m| format!("received only: {m} of {} missing", r.scheduled)),
            colour: colour_of(runs, r.size_bytes),
            dash: r.transport.into(),
            // The steps of the .hgrm file, so the picture and the file agree.
            points: percentile_steps(&r.latency, 5)
                .into_iter()
                .filter(|&(_, p, _)| p < 100.0)
                .map(|(ns, p, _)| {
                    let x = (1.0 / (1.0 - p / 100.0)).min(MAX_X);
                    (x, ns.max(1) as f64 / 1e3)
                })
                .collect(),
        })
        .collect();
    let (lo, hi) = lines
        .iter()
        .flat_map(|l| l.points.iter().map(|&(_, y)| y))
        .fold((f64::MAX, 0f64), |(lo, hi), y| (lo.min(y), hi.max(y)));
    let (lo, hi) = if hi > 0.0 {
        (lo * 0.8, hi * 1.5)
    } else {
        (1.0, 1000.0)
    };
    let (plot, legend) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
    let mut chart = ChartBuilder::on(&plot)
        .caption(
            "End-to-end latency by percentile (intended send time to receipt)",
            ("sans-serif", 20),
        )
        .margin(12)
        .margin_right(36)
        .x_label_area_size(40)
        .y_label_area_size(70)
        .build_cartesian_2d((1f64..MAX_X).log_scale(), (lo..hi).log_scale())?;
    chart
        .configure_mesh()
        .x_desc("percentile")
        .y_desc("latency")
        .x_label_formatter(&percentile_label)
        .y_label_formatter(&duration_label)
        .draw()?;
    for line in &lines {
        draw_line(&mut chart, line)?;
    }
    draw_legend(&legend, &lines)
}

fn achieved_rate(area: &Area<'_>, runs: &[RunResult]) -> anyhow::Result<()> {
    let max_size = runs.iter().map(|r| r.size_bytes).max().unwrap_or(65_457) as f64;
    let min_size = runs.iter().map(|r| r.size_bytes).min().unwrap_or(64) as f64;
    let max_rate = runs
        .iter()
        .map(|r| r.target_rate_per_s.max(r.achieved_rate_per_s))
        .fold(1.0, f64::max);
    let (plot, legend) = area.split_horizontally(WIDTH - LEGEND_WIDTH);
    let mut chart = ChartBuilder::on(&plot)
        .caption("Achieved rate by datagram size", ("sans-serif", 20))
        .margin(12)
        .margin_right(36)
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
    let mut lines = vec![Line {
        label: "target".to_owned(),
        note: None,
        colour: TARGET_GREY,
        dash: Dash::Dotted,
        points: sizes.iter().map(|&s| (s, target)).collect(),
    }];
    for t in [Transport::Udp, Transport::Unix, Transport::Mixed] {
        let points: Vec<(f64, f64)> = runs
            .iter()
            .filter(|r| r.transport == t)
            .map(|r| (r.size_bytes as f64, r.achieved_rate_per_s))
            .collect();
        if !points.is_empty() {
            lines.push(Line {
                label: t.as_str().to_owned(),
                note: None,
                colour: COLOURS[0],
                dash: t.into(),
                points,
            });
        }
    }
    for line in &lines {
        draw_line(&mut chart, line)?;
    }
    // A dot per run on the achieved rates: every line but the target's, the first.
    for line in &lines[1..] {
        let dots = line
            .points
            .iter()
            .map(|&p| Circle::new(p, 4, line.colour.filled()));
        chart.draw_series(dots)?;
    }
    draw_legend(&legend, &lines)
}

/// Draws `line` in its colour and dash, on either chart (their x axes are both logarithmic).
fn draw_line<Y>(
    chart: &mut ChartContext<
        '_,
        SVGBackend<'_>,
        Cartesian2d<plotters::coord::combinators::LogCoord<f64>, Y>,
    >,
    line: &Line,
) -> anyhow::Result<()>
where
    Y: Ranged<ValueType = f64>,
{
    let style = line.colour.stroke_width(2);
    let points = line.points.iter().copied();
    match line.dash.pattern() {
        None => chart.draw_series(LineSeries::new(points, style))?,
        Some((dash, gap)) => chart.draw_series(DashedLineSeries::new(points, dash, gap, style))?,
    };
    Ok(())
}

/// The legend of `lines`, top down in `area`: a sample of each line, its label, and its note
/// in grey under it.
fn draw_legend(area: &Area<'_>, lines: &[Line]) -> anyhow::Result<()> {
    let label = ("sans-serif", 14).into_font();
    let note = ("sans-serif", 12).into_font().color(&TARGET_GREY);
    let mut y = 60;
    for line in lines {
        let style = line.colour.stroke_width(2);
        let sample = [(0, y), (32, y)];
        match line.dash.pattern() {
            None => area.draw(&PathElement::new(sample, style))?,
            Some((dash, gap)) => area.draw(&plotters::element::DashedPathElement::new(
                sample, dash, gap, style,
            ))?,
        }
        area.draw(&Text::new(line.label.clone(), (42, y - 8), label.clone()))?;
        y += 22;
        if let Some(n) = &line.note {
            area.draw(&Text::new(n.clone(), (42, y - 10), note.clone()))?;
            y += 18;
        }
    }
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

    #[test]
    fn duration_labels() {
        assert_eq!(duration_label(&50.0), "50 us");
        assert_eq!(duration_label(&2_500.0), "2.5 ms");
        assert_eq!(duration_label(&1_000_000.0), "1 s");
        assert_eq!(duration_label(&0.5), "0.5 us");
    }
}
