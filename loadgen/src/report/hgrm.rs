//! `.hgrm`: HdrHistogram's percentile distribution text (Java `outputPercentileDistribution`
//! with 5 ticks per half distance, values in ms), as its plotter and `hdr-plot` read it:
//! data lines have 4 columns `Value Percentile TotalCount 1/(1-Percentile)` (the last 3),
//! then `#[Mean ...]`, `#[Max ...]`, `#[Buckets ...]` footer lines; after them, when events did
//! not arrive, a `# ...` line saying the distribution is of the received events only.

use std::fmt::Write;

use hdrhistogram::Histogram;

use crate::result::{RunResult, Transport};

/// ns per output unit (ms), as HdrHistogram's tools expect by default.
const UNIT: f64 = 1e6;

/// The file of one run: `PREFIX-SIZE-TRANSPORT.hgrm`.
pub fn path(prefix: &str, r: &RunResult) -> String {
    path_of(prefix, r.size_bytes, r.transport)
}

/// The file of the run of `size` over `transport`.
pub fn path_of(prefix: &str, size: usize, transport: Transport) -> String {
    format!("{prefix}-{size}-{transport}.hgrm")
}

/// The percentile distribution of a run's latency, in ms.
pub fn render(r: &RunResult) -> String {
    let mut out = distribution(&r.latency);
    if let Some(note) = super::received_only(r) {
        let _ = writeln!(out, "# {} B {}: {note}", r.size_bytes, r.transport);
    }
    out
}

/// The percentile distribution of `h` (ns) in ms.
pub fn distribution(h: &Histogram<u64>) -> String {
    let sig = h.sigfig() as usize;
    let mut out = format!(
        "{:>12} {:>14} {:>10} {:>14}\n\n",
        "Value", "Percentile", "TotalCount", "1/(1-Percentile)"
    );
    let mut total = 0u64;
    if !h.is_empty() {
        for v in h.iter_quantiles(5) {
            total += v.count_since_last_iteration();
            let value = v.value_iterated_to() as f64 / UNIT;
            let q = v.quantile_iterated_to();
            if q < 1.0 {
                let _ = writeln!(
                    out,
                    "{value:>12.sig$} {q:>2.12} {total:>10} {:>14.2}",
                    1.0 / (1.0 - q)
                );
            } else {
                let _ = writeln!(out, "{value:>12.sig$} {q:>2.12} {total:>10}");
            }
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / UNIT, h.stdev() / UNIT, h.max() as f64 / UNIT)
    };
    let _ = writeln!(
        out,
        "#[Mean    = {mean:>12.sig$}, StdDeviation   = {stdev:>12.sig$}]"
    );
    let _ = writeln!(
        out,
        "#[Max     = {max:>12.sig$}, Total count    = {:>12}]",
        h.len()
    );
    // Sub-buckets: the power of two that holds 2 * 10^sigfig values.
    let sub = (2 * 10u64.pow(sig as u32)).next_power_of_two();
    let _ = writeln!(
        out,
        "#[Buckets = {:>12}, SubBuckets     = {sub:>12}]",
        h.buckets()
    );
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The rule HdrHistogram's plotter and hdr-plot apply: a data line splits into 4 numbers
    /// (the 100% line into 3); everything else is header or footer.
    #[test]
    fn lines_parse_with_the_plotters_four_column_rule() {
        let mut h = crate::measure::histogram();
        for v in 1..=100_000u64 {
            h.record(v * 100).unwrap();
        }
        let text = distribution(&h);
        let mut rows = 0;
        let mut last = (0.0, 0.0);
        for line in text.lines().skip(2) {
            if line.starts_with("#[") {
                continue;
            }
            let cols: Vec<f64> = line
                .split_whitespace()
                .map(|c| c.parse().unwrap())
                .collect();
            assert!(
                cols.len() == 4 || (cols.len() == 3 && cols[1] == 1.0),
                "{line}"
            );
            assert!(cols[0] >= last.0 && cols[1] >= last.1, "monotonic: {line}");
            last = (cols[0], cols[1]);
            rows += 1;
        }
        assert!(rows > 50);
        assert_eq!(last.1, 1.0);
        assert!(text.contains("Total count    =       100000]"), "{text}");
        assert!((last.0 - 10.0).abs() < 0.01, "max 10 ms: {}", last.0);
    }

    /// A run that missed events says its distribution is of the received ones, in a comment
    /// line that the plotters' rule skips.
    #[test]
    fn a_lossy_run_says_the_distribution_is_of_the_received_events() {
        let mut r = crate::result::tests::dummy_of_a_thousand();
        assert!(!render(&r).contains("received events only"));
        r.scheduled += 10;
        let text = render(&r);
        let last = text.lines().last().unwrap();
        assert!(
            last.starts_with("# 64 B udp: latency of the received events only"),
            "{text}"
        );
        assert!(last.contains("10 of 1010 scheduled events"), "{last}");
    }
}
