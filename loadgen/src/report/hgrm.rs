//! `.hgrm`: HdrHistogram's percentile distribution text (Java `outputPercentileDistribution`
//! with 5 ticks per half distance, values in ms: the same lines for the same histogram), as
//! its plotter and `hdr-plot` read it: data lines have 4 columns `Value Percentile TotalCount
//! 1/(1-Percentile)` (the last 3), then `#[Mean ...]`, `#[Max ...]`, `#[Buckets ...]` footer
//! lines; after them, when events did not arrive, a `# ...` line saying the distribution is of
//! the received events only.

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

/// Percentile ticks per half distance to 100 %, as HdrHistogram's tools print them.
const TICKS_PER_HALF_DISTANCE: u32 = 5;

/// The `(value, percentile, count up to it)` steps of Java's `PercentileIterator`: the tick
/// level is kept in percent, as Java keeps it, where the ticks (multiples of 10 / 2^k) are
/// exact binary fractions. The crate's `iter_quantiles` keeps it as a fraction, whose ticks
/// (0.1 / 2^k) are not: summed up they drift above the exact level, and a value whose count
/// reaches a tick exactly (36 500 of 40 000 events at 91.25 %) was passed over for the next
/// one, so the file differed from the one Java's tools write for the same histogram.
pub(super) fn percentile_steps(h: &Histogram<u64>, ticks_per_half: u32) -> Vec<(u64, f64, u64)> {
    let total = h.len();
    let mut steps = Vec::new();
    let (mut level, mut count) = (0.0f64, 0u64);
    for v in h.iter_recorded() {
        count += v.count_at_value();
        let value = v.value_iterated_to();
        // Java stays at a value while its count reaches the next tick.
        while 100.0 * count as f64 / total as f64 >= level {
            if level >= 100.0 {
                // Only the last value has the 100 % line.
                if count < total {
                    break;
                }
                steps.push((value, 100.0, count));
                return steps;
            }
            steps.push((value, level, count));
            if count >= total {
                // The last value: one more step, at 100 %.
                steps.push((value, 100.0, count));
                return steps;
            }
            let halvings = ((100.0 / (100.0 - level)).ln() / 2f64.ln()) as i32;
            let next = level + 100.0 / (f64::from(ticks_per_half) * 2f64.powi(halvings + 1));
            // Where a tick no longer moves the level (a value holding all but one of 2^60
            // events), go on to 100 % as the crate's iterator does: Java's would loop for ever.
            level = if next > level && next < 100.0 {
                next
            } else {
                100.0
            };
        }
    }
    steps
}

/// `v` with `decimals` digits after the point as Java's `%.Nf` writes it: rounded half up from
/// the shortest decimal that reads back as `v`. Rust's `{:.N}` rounds the exact binary value
/// half to even, so a tick such as 0.9997802734375 came out as `0.999780273437` where Java's
/// tools write `0.999780273438`, and 2.675 (2.67499999... in binary) as `2.67`, not `2.68`.
fn java_fixed(v: f64, decimals: usize) -> String {
    if v < 0.0 {
        return format!("-{}", java_fixed(-v, decimals));
    }
    // The shortest round-trip decimal; `Display` never uses an exponent.
    let shortest = v.to_string();
    let (int, frac) = shortest.split_once('.').unwrap_or((&shortest, ""));
    let mut digits: Vec<u8> = int
        .bytes()
        .chain(frac.bytes().chain(std::iter::repeat(b'0')).take(decimals))
        .collect();
    if frac.as_bytes().get(decimals).is_some_and(|&d| d >= b'5') {
        // Carry from the last kept digit.
        let mut i = digits.len();
        loop {
            if i == 0 {
                digits.insert(0, b'1');
                break;
            }
            i -= 1;
            if digits[i] == b'9' {
                digits[i] = b'0';
            } else {
                digits[i] += 1;
                break;
            }
        }
    }
    let point = digits.len() - decimals;
    let mut out = String::from_utf8(digits).expect("ASCII digits");
    if decimals > 0 {
        out.insert(point, '.');
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
    for (value, percentile, total) in percentile_steps(h, TICKS_PER_HALF_DISTANCE) {
        let value = java_fixed(value as f64 / UNIT, sig);
        let q = percentile / 100.0;
        let p = java_fixed(q, 12);
        if percentile < 100.0 {
            let inverse = java_fixed(1.0 / (1.0 - q), 2);
            let _ = writeln!(out, "{value:>12} {p:>2} {total:>10} {inverse:>14}");
        } else {
            let _ = writeln!(out, "{value:>12} {p:>2} {total:>10}");
        }
    }
    let (mean, stdev, max) = if h.is_empty() {
        (0.0, 0.0, 0.0)
    } else {
        (h.mean() / UNIT, h.stdev() / UNIT, h.max() as f64 / UNIT)
    };
    let [mean, stdev, max] = [mean, stdev, max].map(|v| java_fixed(v, sig));
    let _ = writeln!(out, "#[Mean    = {mean:>12}, StdDeviation   = {stdev:>12}]");
    let _ = writeln!(
        out,
        "#[Max     = {max:>12}, Total count    = {:>12}]",
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

    /// The same histogram gives the same file as HdrHistogram's Java
    /// `outputPercentileDistribution(out, 5, 1e6)` (2.1.11; `testdata/java-80x500.hgrm`):
    /// 80 values recorded 500 times each, so counts reach the ticks exactly. With the crate's
    /// `iter_quantiles` the 60 % line read 49.021 (Java: 48.005), 14 lines differed so, and
    /// the 98.9 % line was missing.
    #[test]
    fn is_line_for_line_what_hdrhistograms_java_writes() {
        let mut h = crate::measure::histogram();
        for v in 1..=80u64 {
            h.record_n(v * 1_000_000, 500).unwrap();
        }
        let java = include_str!("testdata/java-80x500.hgrm");
        assert_eq!(distribution(&h), java);
        // 200 000 values, the square of a uniform spread: a long sparse tail whose ticks reach
        // decimal ties (0.9997802734375: Java rounds it up, to 0.999780273438).
        let mut h = crate::measure::histogram();
        for i in 1..=200_000u64 {
            let x = (i * 2_654_435_761) % 1_000_003;
            h.record(1_000 + x * x / 1_000).unwrap();
        }
        assert_eq!(distribution(&h), include_str!("testdata/java-squares.hgrm"));
    }

    /// A value that holds nearly all of a huge count: the ticks stop moving the level before
    /// they pass the value's share. The steps end at 100 % (it looped for ever).
    #[test]
    fn percentile_steps_end_when_ticks_no_longer_move() {
        let mut h = crate::measure::histogram();
        h.record_n(1_000, 1 << 60).unwrap();
        h.record_n(2_000, 1).unwrap();
        let steps = percentile_steps(&h, TICKS_PER_HALF_DISTANCE);
        let &(value, percentile, count) = steps.last().unwrap();
        assert_eq!((value, percentile, count), (h.max(), 100.0, (1 << 60) + 1));
        assert!(steps.len() < 5_000, "{}", steps.len());
    }

    /// Numbers are rounded as Java's `String.format("%.Nf")` rounds them (its output for these
    /// values, HdrHistogram's Java runtime): half up from the shortest decimal.
    #[test]
    fn numbers_round_as_javas_format_does() {
        for (v, java) in [
            (0.0045, ["0.005", "0.00", "0.004500000000"]),
            (1.0005, ["1.001", "1.00", "1.000500000000"]),
            (2.675, ["2.675", "2.68", "2.675000000000"]),
            (0.125, ["0.125", "0.13", "0.125000000000"]),
            (0.9997802734375, ["1.000", "1.00", "0.999780273438"]),
            (0.9999267578125, ["1.000", "1.00", "0.999926757813"]),
            (1.5e-7, ["0.000", "0.00", "0.000000150000"]),
            (
                123456.0005,
                ["123456.001", "123456.00", "123456.000500000000"],
            ),
            (0.0, ["0.000", "0.00", "0.000000000000"]),
            (1.0, ["1.000", "1.00", "1.000000000000"]),
            (4551.115, ["4551.115", "4551.12", "4551.115000000000"]),
            (99.995, ["99.995", "100.00", "99.995000000000"]),
        ] {
            let ours = [3, 2, 12].map(|d| java_fixed(v, d));
            assert_eq!(ours, java, "{v}");
        }
        assert_eq!(java_fixed(9.9996, 3), "10.000");
        assert_eq!(java_fixed(5.0, 0), "5");
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
