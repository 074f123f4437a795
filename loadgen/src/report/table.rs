//! The summary table on stdout: one line per run.

use std::fmt::Write;

use crate::result::{cause, RunResult};
use crate::threads::PartCpu;
use crate::units::{human_count, human_ns};

/// Column headers (the JSON field each comes from is in docs/loadgen.md).
pub const HEADERS: [&str; 16] = [
    "size",
    "transport",
    "target/s",
    "achieved/s",
    "datagrams/s",
    "scheduled",
    "sent",
    "received",
    "lost",
    "drops",
    "p50",
    "p90",
    "p99",
    "p99.9",
    "p99.99",
    "max",
];

/// The table, with a legend line; `n/m` marks a percentile above the measured fraction.
pub fn render(runs: &[RunResult], backend: &str) -> String {
    let rows: Vec<Vec<String>> = runs
        .iter()
        .map(|r| {
            let opt = |v: Option<u64>| v.map_or("n/a".to_string(), |v| v.to_string());
            let mut row = vec![
                format!("{} B", r.size_bytes),
                r.transport.to_string(),
                human_count(r.target_rate_per_s),
                human_count(r.achieved_rate_per_s),
                human_count(r.achieved_datagrams_per_s),
                r.scheduled.to_string(),
                r.sent.to_string(),
                opt(r.received),
                opt(r.lost),
                r.dropped().to_string(),
            ];
            // The max is the 100th percentile: not measured either when anything is missing.
            let q = r.latency_ns.quantiles();
            for v in q.iter().chain([&r.latency_ns.max]) {
                row.push(match (v, r.received) {
                    (Some(v), _) => human_ns(*v as f64),
                    (None, Some(_)) if r.latency_ns.count > 0 => "n/m".into(),
                    _ => "n/a".into(),
                });
            }
            row
        })
        .collect();
    let mut widths: Vec<usize> = HEADERS.iter().map(|h| h.len()).collect();
    for row in &rows {
        for (w, c) in widths.iter_mut().zip(row) {
            *w = (*w).max(c.len());
        }
    }
    let mut out = String::new();
    let line = |out: &mut String, cells: &[String]| {
        for (i, (c, w)) in cells.iter().zip(&widths).enumerate() {
            let sep = if i == 0 { "" } else { "  " };
            // Text left, numbers right.
            if i < 2 {
                let _ = write!(out, "{sep}{c:<w$}");
            } else {
                let _ = write!(out, "{sep}{c:>w$}");
            }
        }
        out.push('\n');
    };
    line(&mut out, &HEADERS.map(str::to_owned));
    for row in &rows {
        line(&mut out, row);
    }
    let _ = writeln!(
        out,
        "backend {backend}; counts are events (datagrams/s: datagrams received per target); \
         latency = receipt - intended send time of each event (CLOCK_MONOTONIC); \
         n/m = not measured (above 1 - loss; max when anything is missing); \
         drops = shed + channel full + send-side drops (+ unaccounted, with a warning)"
    );
    if let Some(c) = runs.iter().find_map(|r| r.coalesce) {
        let _ = writeln!(
            out,
            "coalesced: events packed per datagram up to {} bytes or {}",
            c.max_bytes,
            human_ns(c.max_delay_ns as f64)
        );
    }
    for r in runs {
        let _ = writeln!(out, "{}", drop_line(r));
    }
    if runs.iter().any(|r| r.threads_cpu.is_some()) {
        let _ = writeln!(
            out,
            "CPU per event: threads' time on a CPU while the producers ran, without what the \
             host took (steal); reactor and producers per event raised, receivers per event \
             received at one target; in parentheses, CPUs' worth"
        );
    }
    for (r, line) in runs.iter().filter_map(|r| Some((r, cpu_line(r)?))) {
        let _ = writeln!(out, "{} B {}: {line}", r.size_bytes, r.transport);
    }
    out
}

/// One run's `CPU per event: reactor 1.2us (0.24), producers ...`, if it was read.
fn cpu_line(r: &RunResult) -> Option<String> {
    let c = r.threads_cpu?;
    let part =
        |name: &str, p: PartCpu| format!("{name} {} ({:.2})", human_ns(p.ns_per_event), p.cpu);
    let mut parts = vec![part("reactor", c.reactor), part("producers", c.producers)];
    parts.extend(c.receivers.map(|p| part("receivers", p)));
    Some(format!("CPU per event: {}", parts.join(", ")))
}

/// The drop taxonomy the `drops` and `lost` columns sum, in the order of the spec's list.
const CAUSES: [(&str, &str); 8] = [
    (cause::SHED, "shed"),
    (cause::CHANNEL_FULL, "channel full"),
    (cause::OVERSIZE, "oversize"),
    (cause::RECEIVER_SLOW, "receiver slow (EAGAIN)"),
    (cause::NO_RECEIVER, "no receiver"),
    (cause::SHUTDOWN, "shutdown timeout"),
    (cause::SEND_ERROR, "send error"),
    (cause::UNACCOUNTED, "unaccounted"),
];

/// One run's non-zero drop and loss causes, e.g. `64 B udp: drops: shed 115, kernel
/// receive-buffer drops 3`, or `none`: the table's sums alone do not say why.
pub fn drop_line(r: &RunResult) -> String {
    let mut causes: Vec<String> = CAUSES
        .iter()
        .filter_map(|(key, name)| {
            let n = r.drops.get(key).copied().unwrap_or(0);
            (n != 0).then(|| format!("{name} {n}"))
        })
        .collect();
    if let Some(loss) = &r.loss {
        for (name, n) in [
            ("kernel receive-buffer drops", loss.kernel_rx_drops),
            ("unexplained", loss.unexplained),
        ] {
            if n != 0 {
                causes.push(format!("{name} {n}"));
            }
        }
    }
    let list = if causes.is_empty() {
        "none".to_owned()
    } else {
        causes.join(", ")
    };
    format!("{} B {}: drops: {list}", r.size_bytes, r.transport)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::measure::Percentiles;

    /// Every run gets a line naming its non-zero causes, drops and losses alike, or `none`.
    #[test]
    fn each_run_has_a_line_with_its_drop_causes() {
        let mut r = crate::result::tests::dummy_of_a_thousand();
        let text = render(std::slice::from_ref(&r), "test");
        assert!(text.ends_with("\n64 B udp: drops: none\n"), "{text}");
        r.drops.insert(cause::SHED, 115);
        r.drops.insert(cause::RECEIVER_SLOW, 7);
        r.drops.insert(cause::UNACCOUNTED, -3);
        r.loss.as_mut().unwrap().kernel_rx_drops = 5;
        assert_eq!(
            drop_line(&r),
            "64 B udp: drops: shed 115, receiver slow (EAGAIN) 7, unaccounted -3, \
             kernel receive-buffer drops 5"
        );
    }

    /// With events missing, the max of the received is no more the run's max than the
    /// percentiles above the measured share are: both read `n/m`.
    #[test]
    fn the_max_of_a_lossy_run_is_not_measured() {
        let mut r = crate::result::tests::dummy_of_a_thousand();
        let row = |r: &RunResult| {
            let text = render(std::slice::from_ref(r), "test");
            text.lines().nth(1).unwrap().to_owned()
        };
        assert!(row(&r).ends_with("1.00ms"), "{}", row(&r));
        r.latency_ns = Percentiles::of(&r.latency, 0.995);
        let cells: Vec<String> = row(&r).split_whitespace().map(str::to_owned).collect();
        assert_eq!(cells[cells.len() - 3..], ["n/m", "n/m", "n/m"], "{cells:?}");
    }
}
