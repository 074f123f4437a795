//! loadgen end to end, through its binary: accounting, report formats, exit codes, sink; and a
//! receiver's memory, with a counting allocator. Runs are short (10-20k/s for 1 s) and check
//! the accounting and formats, not the speed.
//!
//! Every wait on a child process is bounded by [`DEADLINE`] (a hung run fails its test, naming
//! the command, instead of hanging `cargo test`), and a `loadgen sink` is killed when its
//! test ends, also when it fails.

use std::io::{BufRead, BufReader, Read};
use std::net::UdpSocket;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::mpsc::{self, Receiver};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use hdrhistogram::serialization::interval_log::{IntervalLogIterator, LogEntry};
use serde_json::Value;

/// The longest a test waits for a process to finish or to say something: far longer than any
/// of these runs takes on a loaded machine, so it only ends a hang.
const DEADLINE: Duration = Duration::from_secs(120);

/// Reads all of `r` on a thread (so a child never blocks on a full pipe).
fn read_all(mut r: impl Read + Send + 'static) -> JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut buf = Vec::new();
        let _ = r.read_to_end(&mut buf);
        buf
    })
}

/// Runs loadgen with `args` to its end, as `Command::output` would, but for at most
/// [`DEADLINE`]: then it is killed and the test fails, saying which command hung.
fn loadgen(args: &[&str]) -> Output {
    let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadgen starts");
    let stdout = read_all(child.stdout.take().unwrap());
    let stderr = read_all(child.stderr.take().unwrap());
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().expect("waiting for loadgen") {
            break Some(status);
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            let _ = child.wait();
            break None;
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    // The pipes close when the child ends (loadgen starts no processes that could hold them).
    let (stdout, stderr) = (stdout.join().unwrap(), stderr.join().unwrap());
    let Some(status) = status else {
        panic!(
            "`loadgen {}` was still running after {DEADLINE:?} and was killed; its stderr:\n{}",
            args.join(" "),
            text(&stderr)
        );
    };
    Output {
        status,
        stdout,
        stderr,
    }
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn scratch(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("loadgen-test-{}-{name}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// The accounting of one JSON run with embedded receivers: the identities the docs state (the
/// report's contract) and checks between figures counted apart, which a bug can break.
///
/// The first three identities hold by construction in `result.rs` (`unaccounted` is what
/// makes the first exact, `lost` is the sum of its causes, and per target `lost = sent -
/// received`): they check the report's shape. What can fail:
/// - `unaccounted == 0`: every published event was sent or dropped with a cause, by the
///   library's per-target counters (the generator's own counts add up by construction);
/// - `sent = received + lost` also fails when a target received more events than the library
///   says it sent (per-target `lost` saturates at 0): checked per target, `received <= sent`;
/// - the run's `received`, `datagrams_received`, `duplicates` and `reordered` (the receivers'
///   records merged) are the sums of the per-target ones (each record alone), and `sent`,
///   `datagrams_sent`, `lost` the sums of theirs;
/// - `latency_ns.count` (the histogram's count) is `received` (the receiver's counter): each
///   unique event is recorded once, duplicates not at all;
/// - datagrams against events, counted by different code: a datagram holds at least one event
///   (exactly one without coalescing), on both sides;
/// - the sequence numbers: a producer numbers its scheduled events from 0, so per target
///   `received + sequence_gaps <= scheduled / targets`; no copies arrive (`duplicates == 0`);
/// - a UNIX datagram socket never drops what it accepted (the sender gets EAGAIN, counted in
///   `drops.receiver_slow`), so a UNIX run loses nothing: `lost == 0`;
/// - `latency_ns.max` and `mean` are `null` exactly when events are missing (schema 2).
fn check_accounting(run: &Value) {
    let n = |v: &Value, k: &str| v[k].as_u64().unwrap_or_else(|| panic!("{k} in {v}"));
    let get = |k: &str| n(run, k);
    // Signed: `unaccounted` is negative when more was sent than scheduled.
    let drops: i64 = run["drops"]
        .as_object()
        .unwrap()
        .values()
        .map(|v| v.as_i64().unwrap())
        .sum();
    assert_eq!(
        get("scheduled") as i64,
        get("sent") as i64 + drops,
        "scheduled = sent + drops: {run}"
    );
    assert_eq!(
        get("sent"),
        get("received") + get("lost"),
        "sent = received + lost: {run}"
    );
    let loss = &run["loss"];
    assert_eq!(
        get("lost"),
        n(loss, "kernel_rx_drops") + n(loss, "unexplained"),
        "lost = kernel_rx_drops + unexplained: {run}"
    );
    assert_eq!(run["drops"]["unaccounted"], 0, "{run}");

    let targets = run["per_target"].as_array().unwrap();
    assert_eq!(targets.len() as u64, get("targets"), "{run}");
    for key in [
        "sent",
        "received",
        "datagrams_sent",
        "datagrams_received",
        "lost",
        "duplicates",
        "reordered",
    ] {
        let sum: u64 = targets.iter().map(|t| n(t, key)).sum();
        assert_eq!(sum, get(key), "{key}: the targets' sum is the run's: {run}");
    }
    assert_eq!(
        n(&run["latency_ns"], "count"),
        get("received"),
        "one latency per received event: {run}"
    );
    let coalesced = !run["coalesce"].is_null();
    assert_eq!(get("scheduled") % get("targets"), 0, "{run}");
    let per_target_scheduled = get("scheduled") / get("targets");
    for t in targets {
        let (sent, received) = (n(t, "sent"), n(t, "received"));
        let (dg_sent, dg_received) = (n(t, "datagrams_sent"), n(t, "datagrams_received"));
        assert!(received <= sent, "received <= sent: {t}");
        assert!(dg_received <= dg_sent, "datagrams received <= sent: {t}");
        assert!(dg_sent <= sent, "a datagram sent holds an event: {t}");
        // Every event of a datagram is recorded, as received or as a duplicate.
        let recorded = received + n(t, "duplicates");
        if coalesced {
            assert!(dg_received <= recorded, "a datagram holds an event: {t}");
        } else {
            assert_eq!(dg_sent, sent, "one event per datagram: {t}");
            assert_eq!(dg_received, recorded, "one event per datagram: {t}");
        }
        assert!(
            received + n(t, "sequence_gaps") <= per_target_scheduled,
            "sequence numbers within the schedule ({per_target_scheduled}): {t}"
        );
        assert_eq!(n(t, "duplicates"), 0, "no copies: {t}");
    }
    if run["transport"] == "unix" {
        assert_eq!(get("lost"), 0, "UNIX sockets do not drop: {run}");
    }
    let missing = get("received") < get("scheduled");
    for key in ["max", "mean"] {
        assert_eq!(
            run["latency_ns"][key].is_null(),
            missing,
            "latency_ns.{key} is null when events are missing: {run}"
        );
    }
}

#[test]
fn a_run_accounts_for_every_event_and_writes_every_report() {
    let dir = scratch("run");
    let p = |f: &str| dir.join(f).display().to_string();
    let (json, hlog, svg, hgrm) = (p("r.json"), p("r.hlog"), p("r.svg"), p("lat"));
    let out = loadgen(&[
        "run",
        "--rate",
        "20k",
        "--duration",
        "1s",
        "--warmup",
        "100ms",
        "--sizes",
        "64,1400",
        "--transport",
        "both",
        "--json",
        &json,
        "--hlog",
        &hlog,
        "--plot",
        &svg,
        "--hgrm",
        &hgrm,
    ]);
    let stdout = text(&out.stdout);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{stdout}\n{}",
        text(&out.stderr)
    );

    // JSON: schema, one run per size and transport, every table column, exact identities.
    let report: Value = serde_json::from_str(&std::fs::read_to_string(&json).unwrap()).unwrap();
    assert_eq!(report["schema"], "loadgen/3");
    assert!(report["backend"].is_string());
    let runs = report["runs"].as_array().unwrap();
    assert_eq!(runs.len(), 4);
    // Where the kernel keeps each thread's time on a CPU (`CONFIG_SCHED_INFO`).
    let schedstat = std::path::Path::new("/proc/self/schedstat").exists();
    for run in runs {
        let scheduled = run["scheduled"].as_u64().unwrap();
        assert!(
            scheduled.abs_diff(20_000) <= 200,
            "rate x duration within 1%: {scheduled}"
        );
        check_accounting(run);
        for key in [
            "size_bytes",
            "transport",
            "target_rate_per_s",
            "achieved_rate_per_s",
            "scheduled",
            "published",
            "sent",
            "received",
            "lost",
            "drops",
        ] {
            assert!(!run[key].is_null(), "{key}");
        }
        assert!(
            run["per_target"][0]["kernel_rx_dropped_datagrams"].is_u64(),
            "{run}"
        );
        for key in ["p50", "p90", "p99", "p99_9", "p99_99", "max", "mean"] {
            assert!(run["latency_ns"].get(key).is_some(), "latency_ns.{key}");
        }
        assert!(run["latency_ns"]["p50"].as_u64().unwrap() > 0);
        for cause in [
            "shed",
            "channel_full",
            "oversize",
            "receiver_slow",
            "no_receiver",
        ] {
            assert!(run["drops"][cause].is_u64(), "drops.{cause}");
        }
        // Second by second: every event received is in one second, and a 1 s window has
        // the CPU shares of its second.
        let seconds = run["seconds"].as_array().expect("seconds");
        let in_seconds: u64 = seconds
            .iter()
            .map(|s| s["received"].as_u64().unwrap())
            .sum();
        assert_eq!(in_seconds, run["received"].as_u64().unwrap(), "{run}");
        assert!(seconds[0]["p99_ns"].as_u64().unwrap() > 0, "{run}");
        assert!(seconds[0]["machine_cpu"]["busy"].is_f64(), "{run}");
        // What each part cost: every part ran, so each spent time on a CPU per event.
        if schedstat {
            for part in ["reactor", "producers", "receivers"] {
                let cost = &run["threads_cpu"][part];
                assert!(
                    cost["ns_per_event"].as_f64().unwrap() > 0.0,
                    "{part}: {run}"
                );
                assert!(cost["cpu"].as_f64().unwrap() > 0.0, "{part}: {run}");
            }
        }
    }

    // The table: a header and a line per run, with the columns the JSON has.
    let lines: Vec<&str> = stdout.lines().collect();
    for col in [
        "size",
        "achieved/s",
        "lost",
        "p50",
        "p90",
        "p99",
        "p99.9",
        "p99.99",
        "max",
    ] {
        assert!(
            lines[0].split_whitespace().any(|c| c == col),
            "{col} in {}",
            lines[0]
        );
    }
    assert!(
        lines[1].starts_with("64 B") && lines[4].starts_with("1400 B"),
        "{stdout}"
    );
    // After the table, a line per run naming its drop causes (or none), and one with what
    // each part cost per event.
    for run in ["64 B udp", "64 B unix", "1400 B udp", "1400 B unix"] {
        let prefix = format!("{run}: drops: ");
        assert!(lines.iter().any(|l| l.starts_with(&prefix)), "{stdout}");
        let prefix = format!("{run}: CPU per event: reactor ");
        let cpu = lines.iter().find(|l| l.starts_with(&prefix));
        assert!(
            !schedstat
                || cpu.is_some_and(|l| l.contains(", producers ") && l.contains(", receivers ")),
            "{stdout}"
        );
    }

    // .hgrm: the plotter's 4-column rule.
    for (size, t) in [(64, "udp"), (64, "unix"), (1400, "udp"), (1400, "unix")] {
        let f = std::fs::read_to_string(format!("{hgrm}-{size}-{t}.hgrm")).unwrap();
        let mut rows = 0;
        for line in f.lines().skip(2).filter(|l| !l.starts_with('#')) {
            let cols: Vec<f64> = line
                .split_whitespace()
                .map(|c| c.parse().unwrap())
                .collect();
            assert!(
                cols.len() == 4 || cols.len() == 3 && cols[1] == 1.0,
                "{line}"
            );
            rows += 1;
        }
        assert!(rows > 10, "{f}");
    }

    // .hlog: read back with the interval-log reader; tags per size and transport.
    let log = std::fs::read(&hlog).unwrap();
    let mut tags = std::collections::BTreeSet::new();
    let mut deserializer = hdrhistogram::serialization::Deserializer::new();
    for entry in IntervalLogIterator::new(&log) {
        if let LogEntry::Interval(h) = entry.unwrap() {
            tags.insert(h.tag().unwrap().as_str().to_owned());
            assert!(!h.encoded_histogram().is_empty());
            let _ = &mut deserializer;
        }
    }
    let want: std::collections::BTreeSet<String> =
        ["64B-udp", "64B-unix", "1400B-udp", "1400B-unix"]
            .map(String::from)
            .into();
    assert_eq!(tags, want);

    // SVG: well-formed XML, with axis labels.
    let svg = std::fs::read_to_string(&svg).unwrap();
    assert_well_formed(&svg);
    for label in ["percentile", "latency", "datagram size (bytes)", "64 B udp"] {
        assert!(svg.contains(label), "{label} in the SVG");
    }
    // Latency ticks in units that read: `500 us`, `2 ms` (they were counts of us: `1.000M`).
    assert!(
        [" us\n</text>", " ms\n</text>"]
            .iter()
            .any(|u| svg.contains(u)),
        "latency ticks with units"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A small XML well-formedness check: every element closes, in order, and attributes quote.
fn assert_well_formed(xml: &str) {
    let mut stack: Vec<String> = Vec::new();
    let mut rest = xml;
    while let Some(i) = rest.find('<') {
        rest = &rest[i + 1..];
        let end = rest.find('>').expect("every tag ends");
        let tag = &rest[..end];
        rest = &rest[end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        assert_eq!(tag.matches('"').count() % 2, 0, "quotes in <{tag}>");
        if let Some(name) = tag.strip_prefix('/') {
            assert_eq!(
                stack.pop().as_deref(),
                Some(name.trim()),
                "closing </{name}>"
            );
        } else if !tag.ends_with('/') {
            stack.push(tag.split_whitespace().next().unwrap().to_owned());
        }
    }
    assert!(stack.is_empty(), "unclosed: {stack:?}");
    assert!(xml.trim_start().starts_with("<svg") || xml.trim_start().starts_with("<?xml"));
}

/// A run long enough for one progress line (at 1 s of its window).
const PROGRESS_RUN: &[&str] = &[
    "--rate",
    "2k",
    "--duration",
    "1200ms",
    "--warmup",
    "0s",
    "--sizes",
    "64",
    "--transport",
    "udp",
];

#[test]
fn the_progress_line_says_rate_received_lost_drops_and_p99() {
    let out = loadgen(&[PROGRESS_RUN, &["--progress"]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let err = text(&out.stderr);
    let line = err
        .lines()
        .find(|l| l.starts_with("[64 B udp]"))
        .unwrap_or_else(|| panic!("no progress line in:\n{err}"));
    for field in [
        "target 2000/s",
        "published ",
        "received ",
        "lost 0",
        "drops ",
        "p99(received) ",
        "  steal ",
    ] {
        assert!(line.contains(field), "{field:?} in {line:?}");
    }
    // The host's share of the second before the line, read from this machine's /proc/stat.
    assert!(line.ends_with('%'), "{line:?}");
}

/// The progress line is for a terminal (LOADGEN.md: "when a TTY"): with stderr a pipe, as
/// in CI and scripts, and no `--progress`, the same run prints none. Nothing checked it: a
/// default of `true` would have passed every test.
#[test]
fn no_progress_line_when_stderr_is_not_a_terminal() {
    let out = loadgen(PROGRESS_RUN);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(
        !err.lines().any(|l| l.starts_with("[64 B udp]")),
        "a progress line on a pipe:\n{err}"
    );
}

#[test]
fn usage_errors_exit_2_with_a_message() {
    for (args, needle) in [
        (&["--sizes", "65458"][..], "65457"),
        (&["--format", "jsonrpc", "--sizes", "64"], "107"),
        (&["--rate", "fast"], "invalid rate"),
        (&["--transport", "tcp"], "tcp"),
        (&["capacity", "--slo", "p98=1ms"], "p98"),
        (&["capacity", "--steps", "0"], "--steps"),
        (&["--sizes", "64,512,64"], "--sizes: 64 is given twice"),
        (&["--sizes", "0"], "size 0 is too small"),
        // CLOCK_MONOTONIC + 307445734m wraps: the sink ended at once, exit 0.
        (
            &["--duration", "307445734m"],
            "--duration 18446744040.00s is too long: at most a week",
        ),
        (&["--warmup", "10081m"], "--warmup 604860.00s is too long"),
        // 10^12 sequence numbers per producer: 2G/s for a week is more.
        (
            &["--rate", "2000M", "--duration", "10080m"],
            "more than its 1e12 sequence numbers",
        ),
        (
            &[
                "sink",
                "--listen",
                "udp:127.0.0.1:0",
                "--duration",
                "307445734m",
            ],
            "--duration 18446744040.00s is too long",
        ),
        // `run --duration 0s` was refused, `sink --duration 0s` exited at once, exit 0.
        (
            &["sink", "--listen", "udp:127.0.0.1:0", "--duration", "0s"],
            "--duration: must be above 0",
        ),
        (&["--duration", "0s"], "--duration: must be above 0"),
        (
            &["--coalesce-bytes", "10"],
            "--coalesce-bytes 10 is too small: at least 64 bytes",
        ),
        (
            &["--coalesce-delay", "2min"],
            "--coalesce-delay: at most 60",
        ),
        (
            &["--queue-capacity", "2000000"],
            "--queue-capacity: 1 to 1048576",
        ),
        (
            &["--targets-external", "udp:127.0.0.1:9", "--max-p99", "1ms"],
            "loadgen sink",
        ),
        // The embedded receivers' settings were silently ignored with external targets.
        (
            &["--targets-external", "unix:/x.sock", "--transport", "udp"],
            "--transport is for the embedded receivers: with --targets-external",
        ),
        (
            &["--targets-external", "udp:127.0.0.1:9", "--targets", "2"],
            "--targets is for the embedded receivers",
        ),
        // A catch-up window within a tick sheds most events on an idle machine. (The run
        // options keep the old behaviour, a run, short.)
        (
            &[
                "--tick",
                "10ms",
                "--catchup",
                "10ms",
                "--duration",
                "100ms",
                "--warmup",
                "0s",
            ],
            "--catchup 10.00ms must be at least --tick 10.00ms + 1.00ms",
        ),
        (
            &[
                "--catchup",
                "0s",
                "--duration",
                "100ms",
                "--warmup",
                "0s",
                "--sizes",
                "64",
            ],
            "--catchup 0ns must be at least",
        ),
    ] {
        let out = loadgen(args);
        assert_eq!(
            out.status.code(),
            Some(2),
            "{args:?}: {}",
            text(&out.stderr)
        );
        assert!(
            text(&out.stderr).contains(needle),
            "{args:?}: {}",
            text(&out.stderr)
        );
    }
    let dir = scratch("cfg");
    let cfg = dir.join("bad.yaml");
    std::fs::write(&cfg, "rate: 10k\nsizez: [64]\n").unwrap();
    let out = loadgen(&["--config", cfg.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("sizez"), "{}", text(&out.stderr));
    // A value out of range in the file is named by its file, key and line, not by the flag
    // it did not come from (`--targets: 1 to 64`); a flag over it is named as a flag.
    let path = cfg.to_str().unwrap();
    for (yaml, flags, needle) in [
        (
            "rate: 10k\ntargets: 0\n",
            &[][..],
            format!("targets ({path} line 2): 1 to 64"),
        ),
        (
            "sizes: [70000]\n",
            &[],
            format!("sizes ({path} line 1): size 70000 is over the 65457-byte datagram limit"),
        ),
        (
            "# comment\nduration: 0s\n",
            &[],
            format!("duration ({path} line 2): must be above 0"),
        ),
        (
            "queue_capacity: 0\n",
            &[],
            format!("queue_capacity ({path} line 1): 1 to 1048576"),
        ),
        ("{producers: 0}\n", &[], format!("producers ({path}): 1 to")),
        (
            "targets: 1\n",
            &["--targets", "0"],
            "--targets: 1 to 64".into(),
        ),
        (
            "transport: both\ntargets_external: [udp:127.0.0.1:9]\n",
            &[],
            format!(
                "transport ({path} line 1) is for the embedded receivers: with \
                 targets_external ({path} line 2)"
            ),
        ),
        // A value of the wrong kind: the key's path, and the snippet headed by the file (it
        // was `<input>`, with no key).
        (
            "thresholds:\n  max_p99: [1]\n",
            &[],
            format!(
                "line 2 column 12: thresholds.max_p99: expected string scalar\n --> {path}:2:12"
            ),
        ),
    ] {
        std::fs::write(&cfg, yaml).unwrap();
        let out = loadgen(&[&["--config", path][..], flags].concat());
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{yaml}: {err}");
        assert!(err.contains(&needle), "{yaml}: {err}");
    }
    // A capacity step passes on latency and loss, which external targets do not give it.
    std::fs::write(&cfg, "targets_external: [udp:127.0.0.1:9]\n").unwrap();
    let out = loadgen(&["capacity", "--config", path]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!("remove targets_external ({path} line 1)")),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

/// A report path that cannot be written was found only after the run (`cannot write ...`,
/// exit 1, the plot's `backend error`): a typo threw a long sweep away. Every report path is
/// checked first: a usage error (2), before any run (nothing on stdout), naming the flag.
#[test]
fn report_paths_are_checked_before_the_first_run() {
    let dir = scratch("paths");
    let missing = dir.join("no/such/dir/x");
    let missing = missing.to_str().unwrap();
    let a_dir = dir.to_str().unwrap();
    let short = [
        "--sizes",
        "64",
        "--duration",
        "100ms",
        "--warmup",
        "0s",
        "--transport",
        "udp",
    ];
    for (flag, path) in [
        ("--json", missing),
        ("--hgrm", missing),
        ("--hlog", missing),
        ("--plot", missing),
        ("--plot", a_dir),
        ("--json", a_dir),
    ] {
        let out = loadgen(&[&short[..], &[flag, path]].concat());
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{flag} {path}: {err}");
        assert!(
            err.contains(&format!("{flag}: cannot write {path}")),
            "{err}"
        );
        assert!(out.stdout.is_empty(), "{flag}: ran: {}", text(&out.stdout));
    }
    let out = loadgen(&["capacity", "--sizes", "64", "--json", missing]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--json: cannot write"));
    assert!(!text(&out.stderr).contains("loadgen capacity: 64 B"));
    // A good path: the check leaves nothing behind, and the run writes the report.
    let json = dir.join("r.json");
    let out = loadgen(&[&short[..], &["--json", json.to_str().unwrap()]].concat());
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&std::fs::read(&json).unwrap()).unwrap();
    assert_eq!(report["runs"].as_array().unwrap().len(), 1);
    let _ = std::fs::remove_dir_all(&dir);
}

/// The write end of a pipe whose read end is closed: a write to it fails (EPIPE; Rust
/// programs ignore SIGPIPE).
fn closed_pipe() -> std::fs::File {
    use std::os::fd::{FromRawFd, OwnedFd};
    let mut fds = [0; 2];
    // SAFETY: `fds` has room for the two descriptors `pipe2` writes.
    assert_eq!(unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) }, 0);
    // SAFETY: `pipe2` just opened both, and nothing else owns them.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    std::fs::File::from(write)
}

/// A short, light run to one UDP target (a late generator is forgiven: `--catchup 1s`).
const SHORT_RUN: &[&str] = &[
    "--rate",
    "5k",
    "--duration",
    "200ms",
    "--warmup",
    "0s",
    "--sizes",
    "64",
    "--transport",
    "udp",
    "--catchup",
    "1s",
];

/// `loadgen --sizes 58 2>&1 | true`: `eprintln!` panicked when stderr was a closed pipe, and
/// loadgen exited 101 instead of its documented code. Every exit code holds with stderr
/// closed: a usage error (2), a missed threshold after a table on stderr (`--json -`, 3), a
/// clean run (0).
#[test]
fn a_closed_stderr_leaves_the_exit_code_as_documented() {
    let run = [SHORT_RUN, &["--json", "-"]].concat();
    let threshold = [&run[..], &["--max-p99", "1ns"]].concat();
    for (args, code) in [(&["--sizes", "58"][..], 2), (&threshold, 3), (&run, 0)] {
        let child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(closed_pipe())
            .spawn()
            .expect("loadgen starts");
        let (status, _) = finish_within(child, args, DEADLINE);
        assert_eq!(status.code(), Some(code), "{args:?}");
    }
}

/// A closed stdout (`loadgen | head -0`) is a run-time failure with a message, not a panic,
/// and the report files are written all the same.
#[test]
fn a_closed_stdout_is_an_error_not_a_panic() {
    let dir = scratch("closed-stdout");
    let json = dir.join("run.json");
    let child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(SHORT_RUN)
        .arg("--json")
        .arg(&json)
        .stdin(Stdio::null())
        .stdout(closed_pipe())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadgen starts");
    let (status, stderr) = finish_within(child, SHORT_RUN, DEADLINE);
    assert_eq!(status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("cannot write to stdout"), "{stderr}");
    let report = std::fs::read_to_string(&json).expect("the JSON report was written");
    assert!(report.contains("\"schema\""), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A report path that is a FIFO is written once, at the end: checked early by opening it, its
/// reader got an end of file and the final write waited for ever.
#[test]
fn a_report_to_a_fifo_reaches_its_reader() {
    let dir = scratch("fifo");
    let fifo = dir.join("report.json");
    let made = Command::new("mkfifo").arg(&fifo).status();
    if !made.is_ok_and(|s| s.success()) {
        eprintln!("SKIPPED a_report_to_a_fifo_reaches_its_reader: no mkfifo here");
        return;
    }
    let reader = {
        let fifo = fifo.clone();
        std::thread::spawn(move || std::fs::read_to_string(fifo).unwrap_or_default())
    };
    let child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
        .args(SHORT_RUN)
        .arg("--json")
        .arg(&fifo)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("loadgen starts");
    let (status, stderr) = finish_within(child, SHORT_RUN, DEADLINE);
    assert_eq!(status.code(), Some(0), "{stderr}");
    let until = Instant::now() + DEADLINE;
    while !reader.is_finished() && Instant::now() < until {
        std::thread::sleep(Duration::from_millis(10));
    }
    if !reader.is_finished() {
        // loadgen never opened it: opening it here lets the reader's open return, with
        // nothing to read, for the test to fail instead of hanging (non-blocking: should the
        // reader be gone meanwhile, this open fails instead of waiting for one).
        use std::os::unix::fs::OpenOptionsExt;
        let _ = std::fs::OpenOptions::new()
            .write(true)
            .custom_flags(libc::O_NONBLOCK)
            .open(&fifo);
    }
    let report = reader.join().expect("the reader");
    assert!(report.contains("\"schema\""), "{report}");
    let _ = std::fs::remove_dir_all(&dir);
}

/// Waits for `child` (run with `args`) at most `limit`; its status and what it wrote to stderr
/// (if piped).
fn finish_within(
    mut child: std::process::Child,
    args: &[&str],
    limit: Duration,
) -> (std::process::ExitStatus, String) {
    use std::io::Read as _;
    // Read as it comes: a full stderr pipe would stall the child.
    let reader = child.stderr.take().map(|mut e| {
        std::thread::spawn(move || {
            let mut text = String::new();
            let _ = e.read_to_string(&mut text);
            text
        })
    });
    let deadline = Instant::now() + limit;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() >= deadline {
            let _ = child.kill();
            panic!("{args:?} still ran after {limit:?}");
        }
        std::thread::sleep(Duration::from_millis(10));
    };
    let stderr = reader.map_or_else(String::new, |r| r.join().expect("stderr reader"));
    (status, stderr)
}

#[test]
fn a_missed_threshold_exits_3_naming_it_and_the_value() {
    let out = loadgen(&[
        "--rate",
        "5k",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--sizes",
        "64",
        "--transport",
        "udp",
        "--max-p99",
        "1ns",
        "--min-achieved",
        "1%",
        // On a busy machine the generator can be late by more than the default 100 ms: a shed
        // event counts as lost and the p99 is then "not measured", another message.
        "--catchup",
        "1s",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(err.contains("--max-p99 1ns: 64 B udp measured"), "{err}");
    assert!(!err.contains("--min-achieved"), "{err}");
}

/// A threshold set in the config file is named where it was set, not by a flag the command
/// line did not have; one given as a flag is named by it.
#[test]
fn a_threshold_from_the_config_file_is_named_by_its_key_and_file() {
    let dir = scratch("threshold-file");
    let config = dir.join("lg.yaml");
    std::fs::write(&config, "thresholds:\n  max_p99: 1ns\n").unwrap();
    let config = config.to_str().unwrap();
    let out = loadgen(&[SHORT_RUN, &["--config", config]].concat());
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    let want = format!("threshold failed: thresholds.max_p99 ({config}) 1ns: 64 B udp");
    assert!(err.contains(&want), "{err}");
    assert!(!err.contains("--max-p99"), "{err}");
    // With external targets, refused before any run, named the same way.
    let out = loadgen(&[
        "--config",
        config,
        "--targets-external",
        "udp:127.0.0.1:9",
        "--duration",
        "100ms",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains(&format!(
            "thresholds.max_p99 ({config}) need(s) embedded receivers"
        )),
        "{err}"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn an_unsustainable_rate_runs_and_says_so_loudly() {
    let out = loadgen(&[
        "--rate",
        "1M",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--sizes",
        "64",
        "--transport",
        "unix",
        "--json",
        "-",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &report["runs"][0];
    assert_eq!(run["scheduled"], 300_000);
    check_accounting(run);
    let err = text(&out.stderr);
    assert!(
        err.contains("WARNING") && err.contains("NOT sustained"),
        "{err}"
    );
}

/// At an absurd rate a producer cannot raise a tick's batch within the catch-up window: it
/// reads the clock as it goes, sheds what is late and polls again, so the generator is never
/// far behind and the run ends soon after its window. It checked the clock only when a tick
/// began: `--rate 1G --duration 1s` ran 13.4 s, sent events up to 12.9 s late, and reported
/// what arrived over those 13 s as if in 1 s (2.62M/s). The table names every drop cause.
#[test]
fn an_absurd_rate_sheds_what_is_late_and_ends_in_time() {
    let begun = Instant::now();
    let out = loadgen(&[
        "--rate",
        "1G",
        "--duration",
        "200ms",
        "--warmup",
        "0s",
        "--sizes",
        "64",
        "--transport",
        "udp",
        "--json",
        "-",
    ]);
    let took = begun.elapsed();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    // About 1 s of start-up, 200 ms of window, 100 ms of catch-up, then flush and drain; the old
    // generator took tens of seconds in a debug build.
    assert!(took < Duration::from_secs(5), "took {took:?}: {err}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &report["runs"][0];
    check_accounting(run);
    let f = |v: &Value| v.as_f64().unwrap_or_else(|| panic!("{v} in {run}"));
    // Every event went out at least its lag after the window's start, so the producers took at
    // least the largest lag: the rate is at most what arrived over that long.
    let lag_max_s = f(&run["generator_lag_ns"]["max"]) / 1e9;
    assert!(lag_max_s < 1.0, "the generator stays near the clock: {run}");
    let span_s = f(&run["duration_s"]).max(lag_max_s);
    let honest = f(&run["received"]) / span_s;
    assert!(
        f(&run["achieved_rate_per_s"]) <= honest * 1.000_001 + 0.1,
        "achieved at most {honest}/s: {run}"
    );
    let shed = run["drops"]["shed"].as_u64().unwrap();
    assert!(shed > 0, "{run}");
    let line = err
        .lines()
        .find(|l| l.starts_with("64 B udp: drops: "))
        .unwrap_or_else(|| panic!("no drop line in:\n{err}"));
    assert!(line.contains(&format!("shed {shed}")), "{line}\n{run}");
    let full = run["drops"]["channel_full"].as_u64().unwrap();
    assert_eq!(line.contains("channel full"), full > 0, "{line}\n{run}");
}

/// A `loadgen sink` on a free UDP port of 127.0.0.1 (300 ms `--idle`, 30 s at most), its
/// output read line by line on threads; killed and waited for when dropped, so a test that
/// fails leaves no process behind.
struct SinkProcess {
    child: Child,
    /// The spec it says it listens on: `udp:127.0.0.1:PORT`.
    spec: String,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
}

/// Sends each line of `r` over a channel, from a thread that ends with the pipe.
fn lines_of(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// The next of `lines` of `child`, waiting at most [`DEADLINE`] (or until the child closes
/// them); panics saying `what` was awaited.
fn next_line(lines: &Receiver<String>, child: &mut Child, what: &str) -> String {
    lines.recv_timeout(DEADLINE).unwrap_or_else(|e| {
        panic!(
            "{what}: nothing from the sink ({e}); its exit status: {:?}",
            child.try_wait()
        )
    })
}

impl SinkProcess {
    /// A sink on an ephemeral UDP port for 30 s, reporting runs idle for 300 ms.
    fn start() -> SinkProcess {
        Self::spawn(&[
            "--listen",
            "udp:127.0.0.1:0",
            "--duration",
            "30s",
            "--idle",
            "300ms",
        ])
    }

    /// `loadgen sink ARGS`, once it says where it listens.
    fn spawn(args: &[&str]) -> SinkProcess {
        let mut child = Command::new(env!("CARGO_BIN_EXE_loadgen"))
            .arg("sink")
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("loadgen sink starts");
        let stdout = lines_of(child.stdout.take().unwrap());
        let stderr = lines_of(child.stderr.take().unwrap());
        let mut sink = SinkProcess {
            child,
            spec: String::new(),
            stdout,
            stderr,
        };
        let said = sink.said("the sink says where it listens");
        assert!(said.contains("listening on "), "{said}");
        sink.spec = said.trim().rsplit(' ').next().unwrap().to_owned();
        sink
    }

    /// The address of [`spec`](Self::spec).
    fn addr(&self) -> &str {
        self.spec
            .strip_prefix("udp:")
            .expect("listening on udp:ADDR")
    }

    /// The next line on its stdout (a run's report).
    fn report(&mut self, what: &str) -> String {
        next_line(&self.stdout, &mut self.child, what)
    }

    /// The next line on its stderr.
    fn said(&mut self, what: &str) -> String {
        next_line(&self.stderr, &mut self.child, what)
    }

    /// Its exit status, if it has ended.
    fn ended(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().expect("waiting for the sink")
    }
}

impl Drop for SinkProcess {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// The number after ` name ` in a sink's report line.
fn field(line: &str, name: &str) -> u64 {
    let at = line
        .find(&format!(" {name} "))
        .unwrap_or_else(|| panic!("{name} in {line}"));
    line[at + name.len() + 2..]
        .split(' ')
        .next()
        .unwrap()
        .parse()
        .unwrap_or_else(|e| panic!("{name} in {line}: {e}"))
}

/// A run to a sink in another process: the generator's counts (it cannot know what arrived)
/// against the sink's own.
#[test]
fn a_sink_in_another_process_receives_an_external_run() {
    let mut sink = SinkProcess::start();
    let out = loadgen(&[
        "run",
        "--targets-external",
        &sink.spec,
        "--rate",
        "5k",
        "--duration",
        "1s",
        "--warmup",
        "0s",
        "--sizes",
        "200",
        "--json",
        "-",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &report["runs"][0];
    let n = |k: &str| run[k].as_u64().unwrap_or_else(|| panic!("{k} in {run}"));
    // On a loaded machine the generator may fall behind and shed (counted) events, whose
    // sequence numbers the sink then sees missing.
    let (sent, shed) = (n("sent"), run["drops"]["shed"].as_u64().unwrap());
    assert_eq!(sent + shed, 5_000, "{run}");
    assert!(sent > 0, "{run}");
    for key in ["received", "datagrams_received", "lost", "loss"] {
        assert!(run[key].is_null(), "{key}: {run}");
    }
    assert_eq!(run["latency_ns"]["count"], 0, "{run}");
    let t = &run["per_target"][0];
    assert_eq!(t["sent"], sent, "{run}");
    assert_eq!(t["datagrams_sent"], sent, "one event per datagram: {run}");
    assert!(t["received"].is_null(), "{run}");
    // What only the sink can know is null, not 0 (schema 3).
    for key in ["duplicates", "reordered", "malformed"] {
        assert!(run[key].is_null(), "{key}: {run}");
    }
    for key in [
        "duplicates",
        "reordered",
        "sequence_gaps",
        "kernel_rx_dropped_datagrams",
    ] {
        assert!(t[key].is_null(), "{key}: {run}");
    }
    assert_eq!(run["transport"], "udp", "{run}");

    // The sink reports the run once it has been idle for 300 ms: what it counted, apart.
    let line = sink.report("the sink reports the run");
    assert!(
        line.starts_with("run ") && line.contains(&format!(" {}: received ", sink.spec)),
        "{line}"
    );
    assert!(!line.contains("(warm-up)"), "{line}");
    // Every event the kernel accepted arrives, once, in the datagrams the generator sent.
    assert_eq!(field(&line, "received"), sent, "{line} (shed {shed})");
    assert_eq!(field(&line, "duplicates"), 0, "{line}");
    assert_eq!(field(&line, "datagrams"), n("datagrams_sent"), "{line}");
    assert_eq!(field(&line, "kernel_drops"), 0, "{line}");
    // Shed events are gaps only below the highest sequence number received.
    let gaps = field(&line, "gaps");
    assert!(sent + gaps <= 5_000, "{line} (shed {shed})");
    if shed == 0 {
        assert_eq!(gaps, 0, "{line}");
    }
}

/// External targets of both kinds: the run was labelled `udp` (its first target's) though
/// `per_target` held a UNIX one too. It is `mixed`, in the JSON and the table.
#[test]
fn an_external_run_to_udp_and_unix_targets_is_labelled_mixed() {
    let sink = SinkProcess::start();
    let dir = scratch("mixed");
    let path = dir.join("u.sock");
    let _unix = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    let targets = format!("{},unix:{}", sink.spec, path.display());
    let out = loadgen(&[
        "run",
        "--targets-external",
        &targets,
        "--rate",
        "1k",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--sizes",
        "200",
        "--json",
        "-",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &report["runs"][0];
    assert_eq!(run["transport"], "mixed", "{run}");
    let per_target = run["per_target"].as_array().unwrap();
    assert_eq!(per_target.len(), 2, "{run}");
    assert!(per_target[0]["target"]
        .as_str()
        .unwrap()
        .starts_with("udp:"));
    assert!(per_target[1]["target"]
        .as_str()
        .unwrap()
        .starts_with("unix:"));
    for t in per_target {
        assert!(
            t["duplicates"].is_null() && t["sequence_gaps"].is_null(),
            "{t}"
        );
    }
    let row = err
        .lines()
        .find(|l| l.starts_with("200 B"))
        .expect("a table row");
    assert_eq!(row.split_whitespace().nth(2), Some("mixed"), "{err}");
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn a_coalesced_run_counts_events_and_datagrams_apart_in_both_formats() {
    for format in ["line", "jsonrpc"] {
        let out = loadgen(&[
            "--rate",
            "50k",
            "--duration",
            "1s",
            "--warmup",
            "100ms",
            "--sizes",
            "200",
            "--transport",
            "both",
            "--format",
            format,
            "--coalesce",
            "--json",
            "-",
        ]);
        let err = text(&out.stderr);
        assert_eq!(out.status.code(), Some(0), "{format}: {err}");
        let report: Value = serde_json::from_slice(&out.stdout).unwrap();
        let runs = report["runs"].as_array().unwrap();
        assert_eq!(runs.len(), 2);
        for run in runs {
            check_accounting(run);
            let n = |k: &str| run[k].as_u64().unwrap_or_else(|| panic!("{k} in {run}"));
            assert_eq!(run["format"], format);
            assert_eq!(n("scheduled"), 50_000, "{run}");
            assert_eq!(n("received"), n("sent"), "every event arrives: {run}");
            assert_eq!(n("lost"), 0, "{run}");
            assert_eq!(run["malformed"], 0, "{run}");
            // Several events per datagram, and the receivers count the datagrams too.
            let (dg_sent, dg_received) = (n("datagrams_sent"), n("datagrams_received"));
            assert!(dg_sent > 0 && dg_sent < n("sent"), "{run}");
            assert_eq!(dg_received, dg_sent, "{run}");
            let dg_rate = run["achieved_datagrams_per_s"].as_f64().unwrap();
            let ev_rate = run["achieved_rate_per_s"].as_f64().unwrap();
            assert!(dg_rate > 0.0 && dg_rate < ev_rate, "{run}");
            assert_eq!(run["coalesce"]["max_bytes"], 65_457, "{run}");
            assert_eq!(run["coalesce"]["max_delay_ns"], 1_000_000, "{run}");
            let t = &run["per_target"][0];
            assert_eq!(t["datagrams_sent"], dg_sent, "{run}");
            assert_eq!(t["datagrams_received"], dg_received, "{run}");
            assert!(run["latency_ns"]["p50"].as_u64().unwrap() > 0, "{run}");
        }
    }
}

#[test]
fn coalescing_limits_and_gso_are_flags_and_config_keys() {
    let dir = scratch("coalesce-cfg");
    let cfg = dir.join("c.yaml");
    std::fs::write(
        &cfg,
        "coalesce: true\ncoalesce_bytes: 4000\ncoalesce_delay: 200us\nudp_gso: false\n",
    )
    .unwrap();
    let out = loadgen(&[
        "--config",
        cfg.to_str().unwrap(),
        "--rate",
        "20k",
        "--duration",
        "300ms",
        "--warmup",
        "0s",
        "--sizes",
        "200",
        "--transport",
        "udp",
        "--json",
        "-",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &report["runs"][0];
    check_accounting(run);
    assert_eq!(run["coalesce"]["max_bytes"], 4000, "{run}");
    assert_eq!(run["coalesce"]["max_delay_ns"], 200_000, "{run}");
    assert_eq!(run["udp_gso"], false, "{run}");
    // 4000-byte datagrams hold 20 events of 200 bytes.
    let (sent, dgrams) = (
        run["sent"].as_u64().unwrap(),
        run["datagrams_sent"].as_u64().unwrap(),
    );
    assert!(dgrams >= sent / 20 && dgrams < sent, "{run}");
    // Without coalescing, one event per datagram; a bad limit is a usage error.
    let out = loadgen(&[
        "--rate",
        "5k",
        "--duration",
        "200ms",
        "--warmup",
        "0s",
        "--sizes",
        "64",
        "--transport",
        "unix",
        "--json",
        "-",
    ]);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &report["runs"][0];
    check_accounting(run);
    assert_eq!(run["datagrams_sent"], run["sent"], "{run}");
    assert!(run["coalesce"].is_null(), "{run}");
    let out = loadgen(&["--coalesce-bytes", "70000"]);
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    let _ = std::fs::remove_dir_all(&dir);
}

/// The sink reports a run again, marked `(continued)`, for what arrives after `--idle`; and
/// each report gives the socket's kernel drops since the report before (the kernel counts
/// from the bind: the second report used to repeat the first one's drops).
#[test]
fn a_sink_reports_a_resumed_run_as_continued_with_only_its_new_kernel_drops() {
    use event_datagram::Format;
    use loadgen::payload::{Template, EVENT};

    let mut sink = SinkProcess::start();
    let addr = sink.addr().to_owned();
    let template = Template::new(Format::Line, 60_000).unwrap();
    let mut buf = vec![0u8; 65_536];
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let send = |seqs: std::ops::Range<u64>, buf: &mut [u8]| {
        for seq in seqs {
            let params = template.params(1, 0, seq, 0);
            let n = Format::Line.encode(EVENT, &params, buf).unwrap();
            sender.send_to(&buf[..n], &addr).unwrap();
        }
    };
    // The sink stopped: 1 000 datagrams of 60 kB overflow its 16 MiB receive buffer.
    struct Stopped(libc::pid_t);
    impl Drop for Stopped {
        fn drop(&mut self) {
            // SAFETY: a signal to our own child (also when the test fails meanwhile).
            unsafe { libc::kill(self.0, libc::SIGCONT) };
        }
    }
    let pid = sink.child.id() as libc::pid_t;
    // SAFETY: as above.
    unsafe { libc::kill(pid, libc::SIGSTOP) };
    let stopped = Stopped(pid);
    send(0..1_000, &mut buf);
    drop(stopped);
    let first = sink.report("a report");
    let (received, drops) = (field(&first, "received"), field(&first, "kernel_drops"));
    // Loopback's own backlog may drop a few more, which no socket counts.
    assert!(received + drops <= 1_000, "{first}");
    assert!(drops > 0 && received > 0, "the buffer overflowed: {first}");
    assert!(!first.contains("(continued)"), "{first}");
    // The same run again, read as it comes.
    send(1_000..1_010, &mut buf);
    let second = sink.report("a second report");
    assert!(second.ends_with("(continued)"), "{second}");
    assert_eq!(field(&second, "received"), 10, "{second}");
    assert_eq!(field(&second, "kernel_drops"), 0, "{second}");
    // Numbered from 1 000: the numbers below were the first report's, not gaps of this one,
    // and its latency is measured.
    assert_eq!(field(&second, "gaps"), 0, "{second}");
    assert!(!second.contains("n/m"), "{second}");
}

/// SIGTERM (or SIGINT, SIGHUP) ends a sink as the end of `--duration` does: the run it holds is
/// reported, its socket file removed, and it exits 0 (it was killed, leaving both behind).
#[test]
fn a_signal_ends_a_sink_with_its_reports_and_without_its_socket_file() {
    use event_datagram::Format;
    use loadgen::payload::{Template, EVENT};
    use std::os::unix::net::UnixDatagram;

    let dir = scratch("sink-signal");
    let path = dir.join("sink.sock");
    let spec = format!("unix:{}", path.display());
    let mut sink = SinkProcess::spawn(&["--listen", &spec, "--idle", "60s"]);
    assert_eq!(sink.spec, spec);
    let template = Template::new(Format::Line, 200).unwrap();
    let mut buf = vec![0u8; 256];
    let n = Format::Line
        .encode(EVENT, &template.params(1, 0, 0, 0), &mut buf)
        .unwrap();
    UnixDatagram::unbound()
        .unwrap()
        .send_to(&buf[..n], &path)
        .unwrap();
    // Read before the signal (the report comes only with it: --idle is a minute away). The
    // sink reads as datagrams come; a second is for a slow machine.
    std::thread::sleep(Duration::from_secs(1));
    let pid = sink.child.id() as libc::pid_t;
    // SAFETY: a signal to our own child, not yet reaped.
    let rc = unsafe { libc::kill(pid, libc::SIGTERM) };
    assert_eq!(rc, 0);
    let report = sink.report("the run's report");
    assert!(report.starts_with("run 00000001 "), "{report}");
    assert_eq!(field(&report, "received"), 1, "{report}");
    let until = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = sink.ended() {
            break status;
        }
        assert!(Instant::now() < until, "no exit within {DEADLINE:?}");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(0));
    assert!(!path.exists(), "the socket file is removed");
    let _ = std::fs::remove_dir_all(&dir);
}

/// `loadgen sink --listen unix:PATH` binds only where nothing of value is: a file that is not a
/// socket and a socket someone listens on are refused and left alone; a stale socket file
/// (nobody listens) is replaced, and removed at exit.
#[test]
fn a_sink_refuses_a_file_or_a_live_socket_and_replaces_only_a_stale_one() {
    use std::os::unix::net::UnixDatagram;
    let dir = scratch("sink-path");
    let sink = |path: &std::path::Path| {
        loadgen(&[
            "sink",
            "--listen",
            &format!("unix:{}", path.display()),
            "--duration",
            "100ms",
        ])
    };
    let notes = dir.join("notes.txt");
    std::fs::write(&notes, "data\n").unwrap();
    let out = sink(&notes);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("not a socket"), "{err}");
    assert_eq!(std::fs::read_to_string(&notes).unwrap(), "data\n");

    let live_path = dir.join("live.sock");
    let live = UnixDatagram::bind(&live_path).unwrap();
    let out = sink(&live_path);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("listening on this socket"), "{err}");
    // Its owner still receives on it.
    UnixDatagram::unbound()
        .unwrap()
        .send_to(b"still mine", &live_path)
        .unwrap();
    let mut buf = [0u8; 16];
    live.set_read_timeout(Some(std::time::Duration::from_secs(5)))
        .unwrap();
    let n = live.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], b"still mine");

    let stale = dir.join("stale.sock");
    drop(UnixDatagram::bind(&stale).unwrap());
    assert!(stale.exists());
    let out = sink(&stale);
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    assert!(!stale.exists(), "the sink removes the socket it bound");
    let _ = std::fs::remove_dir_all(&dir);
}

/// A coalescing delay longer than the old 5 s bound on the warm-up's quiescence: the warm-up's
/// last datagram is sent before the counters are snapshotted, so none of its events leaks
/// into the measured window's accounting.
#[test]
fn a_long_coalescing_delay_keeps_the_warm_up_out_of_the_measured_window() {
    let out = loadgen(&[
        "--rate",
        "5k",
        "--duration",
        "500ms",
        "--warmup",
        "100ms",
        "--sizes",
        "200",
        "--transport",
        "unix",
        "--coalesce-delay",
        "6s",
        "--json",
        "-",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    let run = &report["runs"][0];
    check_accounting(run);
    assert_eq!(run["scheduled"], 2_500, "{run}");
    assert!(!err.contains("accounting"), "{err}");
}

/// A capacity search that starts under 1 event per second doubles to 0.5/s (it asked the
/// scheduler for 0/s and divided by zero), and says so in the step lines.
#[test]
fn a_capacity_search_below_one_event_per_second_doubles_exactly() {
    let out = loadgen(&[
        "capacity",
        "--rate",
        "0.25/s",
        "--max-rate",
        "1/s",
        "--steps",
        "2",
        "--slo",
        "p99=10s",
        "--duration",
        "100ms",
        "--warmup",
        "0s",
        "--sizes",
        "64",
        "--transport",
        "udp",
        // A phase's one event, shed because a busy machine ran the generator late, would fail
        // the SLO and end the search.
        "--catchup",
        "1s",
        "--json",
        "-",
    ]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(0), "{err}");
    assert!(err.contains("64 B udp at 0.25/s: meets the SLO"), "{err}");
    assert!(err.contains("64 B udp at 0.5/s: meets the SLO"), "{err}");
    // Both steps passed and the search was still doubling: 0.5/s is not a measured limit, and
    // the table and the JSON say so (it printed capacity 0.5 like a converged search).
    let row = err
        .lines()
        .find(|l| l.starts_with("64 B"))
        .unwrap_or_else(|| panic!("no capacity row in:\n{err}"));
    assert!(row.ends_with("steps ran out (still doubling)"), "{row}");
    let report: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["schema"], "loadgen-capacity/2");
    let c = &report["capacity"][0];
    assert_eq!(c["bound"], "steps_ran_out", "{c}");
    assert_eq!(c["rate_per_s"], 0.5, "{c}");
    assert!(c["failed_rate_per_s"].is_null(), "{c}");
}

/// A search in which no step meets the SLO has measured no capacity: it exits 1 saying so,
/// after its table (it exited 0 with a capacity of 0).
#[test]
fn a_capacity_search_that_nothing_passes_fails() {
    let out = loadgen(&[
        "capacity",
        "--rate",
        "1k",
        "--steps",
        "1",
        "--slo",
        "p99=1ns",
        "--duration",
        "100ms",
        "--warmup",
        "0s",
        "--sizes",
        "64",
        "--transport",
        "udp",
        "--catchup",
        "1s",
    ]);
    let (stdout, err) = (text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(1), "{stdout}\n{err}");
    assert!(stdout.contains("none passed"), "{stdout}");
    assert!(
        err.contains("no rate tried met the SLO") && err.contains("64 B udp (down to 1000/s)"),
        "{err}"
    );
}

/// One foreign datagram with a producer or a sequence number no run can have is counted, not
/// trusted: the sink used to size its tracking by it (2^61 bytes) and abort.
#[test]
fn a_sink_survives_datagrams_with_impossible_producers_and_sequence_numbers() {
    use event_datagram::{Format, Params};
    use loadgen::payload::EVENT;

    let mut sink = SinkProcess::start();
    let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
    let mut buf = vec![0u8; 65_536];
    for (producer, seq) in [
        ("000", "9999999999999999999"),
        ("4294967295", "000000000000"),
        ("000", "000000000000"),
    ] {
        let params = ["00000003", producer, seq, "0000000000000000000", "x"]
            .iter()
            .try_fold(Params::new(), |p, v| p.unnamed_str(v))
            .unwrap();
        let n = Format::Line.encode(EVENT, &params, &mut buf).unwrap();
        sender.send_to(&buf[..n], sink.addr()).unwrap();
        std::thread::sleep(Duration::from_millis(20));
    }
    let line = sink.report("a report");
    let status = sink.ended();
    assert!(status.is_none(), "the sink died: {status:?}");
    assert!(
        line.contains(&format!(
            "run 00000003 {}: received 1 gaps 0 duplicates 0",
            sink.spec
        )),
        "{line}"
    );
    // The two foreign events are counted on stderr (before the report: they came first),
    // in one line or in two.
    let mut foreign = 0;
    while foreign < 2 {
        let said = sink.said("the sink counts the foreign events");
        let count = said
            .strip_suffix(" datagrams or events that no loadgen run sends")
            .and_then(|s| s.rsplit(' ').next())
            .unwrap_or_else(|| panic!("{said}"));
        foreign += count.parse::<u64>().unwrap();
    }
    assert_eq!(foreign, 2);
}

/// Allocation accounting for [`per_second_intervals_take_memory_in_proportion_to_the_data`]:
/// bytes allocated minus bytes freed by the current thread (other tests' threads do not count).
mod counting {
    use std::alloc::{GlobalAlloc, Layout, System};
    use std::cell::Cell;

    pub struct Counting;

    thread_local! {
        static LIVE: Cell<isize> = const { Cell::new(0) };
    }

    fn add(bytes: isize) {
        // `try_with`: a thread being torn down has no counter, and needs none.
        let _ = LIVE.try_with(|c| c.set(c.get() + bytes));
    }

    /// Bytes this thread holds (allocated and not freed) since it started.
    pub fn live() -> isize {
        LIVE.with(Cell::get)
    }

    // SAFETY: every call is passed on to `System` unchanged; only a thread-local counter (a
    // const-initialized `Cell`, which neither allocates nor needs a destructor) is updated.
    unsafe impl GlobalAlloc for Counting {
        unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
            // SAFETY: the caller's contract for `alloc` is `System.alloc`'s.
            let p = unsafe { System.alloc(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }

        unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
            // SAFETY: as for `alloc`.
            let p = unsafe { System.alloc_zeroed(layout) };
            if !p.is_null() {
                add(layout.size() as isize);
            }
            p
        }

        unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
            // SAFETY: `ptr` was allocated by `System` with `layout` (all allocations go there).
            unsafe { System.dealloc(ptr, layout) };
            add(-(layout.size() as isize));
        }
    }
}

#[global_allocator]
static ALLOCATOR: counting::Counting = counting::Counting;

/// A receiver keeps one latency histogram per second of a run for the interval log: each used
/// to be a full 270 KB histogram (GBs for an hour), and merging the targets copied them again.
#[test]
fn per_second_intervals_take_memory_in_proportion_to_the_data() {
    use loadgen::measure::Recorder;
    use loadgen::payload::Fields;

    let before = counting::live();
    let mut r = Recorder::new();
    // 300 seconds, 10 events each, latencies from 10 us to 10 ms.
    for s in 0..300u64 {
        for i in 0..10u64 {
            let seq = s * 10 + i;
            let now = 1_000_000_000 + s * 1_000_000_000 + i * 1_000;
            let f = Fields {
                run: 1,
                producer: 0,
                seq,
                intended_ns: now - 10_000 * (1 + seq % 1_000),
            };
            r.record(f, now);
        }
    }
    assert_eq!(r.received, 3_000);
    let one = counting::live() - before;
    let mut all = Recorder::new();
    all.merge(&r);
    all.merge(&r);
    let two = counting::live() - before;
    assert_eq!(all.received, 6_000);
    // A recorder holds two full histograms of 270 KB (the run's, and the second being
    // recorded); one per second for 300 seconds would be 81 MB.
    assert!(one < 2_000_000, "{one} bytes for one recorder");
    assert!(two < 4_000_000, "{two} bytes for two recorders");
}
