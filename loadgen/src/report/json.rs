//! The JSON report: a versioned superset of the table that CI jobs rely on.

use serde::Serialize;

use crate::result::RunResult;

/// The schema name; bump on incompatible changes (2: `per_target[].kernel_rx_drops` renamed
/// `kernel_rx_dropped_datagrams`, `drops.unaccounted` signed, `latency_ns.max` and `mean`
/// `null` when events are missing; 3: with external targets, `duplicates`, `reordered`,
/// `malformed` and `per_target[]`'s `duplicates`, `reordered`, `sequence_gaps` and
/// `kernel_rx_dropped_datagrams` are `null` (they were 0: the sender cannot know them), and
/// `transport` is `mixed` for UDP and UNIX targets in one run).
pub const SCHEMA: &str = "loadgen/3";

#[derive(Serialize)]
struct Report<'a> {
    schema: &'static str,
    backend: &'a str,
    host: Host,
    runs: &'a [RunResult],
}

#[derive(Serialize)]
struct Host {
    cpus: usize,
    kernel: String,
}

/// The report as pretty JSON.
pub fn render(runs: &[RunResult], backend: &str) -> String {
    let host = Host {
        cpus: std::thread::available_parallelism().map_or(0, |n| n.get()),
        kernel: std::fs::read_to_string("/proc/sys/kernel/osrelease")
            .map(|s| s.trim().to_owned())
            .unwrap_or_default(),
    };
    let report = Report {
        schema: SCHEMA,
        backend,
        host,
        runs,
    };
    serde_json::to_string_pretty(&report).expect("the report serializes") + "\n"
}
