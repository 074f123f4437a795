//! `loadgen sink --listen SPEC[,SPEC]`: receivers in their own process. Each run (run id) is
//! reported on stdout once nothing arrived for it for `--idle` (and again, marked
//! `(continued)`, for what arrives after that): events received, sequence gaps,
//! duplicates, reordering, datagrams, the kernel's drops since the socket's previous report,
//! latency (the sender's intended time to receipt, on the
//! shared CLOCK_MONOTONIC). What no loadgen run sends is counted on stderr.

use std::collections::HashSet;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use event_datagram::Target;

use crate::cli::SinkArgs;
use crate::clock::mono_ns;
use crate::measure::{Limits, Percentiles, Recorder};
use crate::sink::{Sink, MAX_RUNS};
use crate::units::{human_ns, MAX_DURATION, MAX_DURATION_TEXT};
use crate::{write_stdout, Usage};

/// Binds every `--listen` socket and reports runs until `--duration` passes, or forever; a
/// signal ends it as the end of `--duration` does (the runs it holds reported, its socket
/// files removed).
pub fn run(args: &SinkArgs) -> anyhow::Result<()> {
    let targets = args
        .listen
        .iter()
        .map(|s| Target::parse_bind(s).map_err(|e| Usage(format!("--listen: {e}"))))
        .collect::<Result<Vec<_>, _>>()?;
    // A sink of 0 s would exit before anything could arrive: refused, as `run --duration 0s`.
    if args.duration.is_some_and(|d| d.0 == 0) {
        return Err(Usage("--duration: must be above 0".into()).into());
    }
    // Checked: a huge --duration wrapped the end to the past, and the sink exited at once.
    let end = match args.duration {
        Some(d) => Some(
            mono_ns()
                .checked_add(d.0)
                .filter(|_| d <= MAX_DURATION)
                .ok_or_else(|| {
                    Usage(format!(
                        "--duration {d} is too long: at most {MAX_DURATION_TEXT}"
                    ))
                })?,
        ),
        None => None,
    };
    // Before the sinks' threads exist, which inherit the blocked signals.
    let stopped =
        crate::sys::stop_on_signals().context("cannot take SIGINT, SIGTERM and SIGHUP")?;
    let sinks = targets
        .iter()
        .map(|t| Sink::bind(t, Limits::STANDALONE).with_context(|| format!("cannot listen on {t}")))
        .collect::<anyhow::Result<Vec<_>>>()?;
    for s in &sinks {
        errln!("loadgen sink: listening on {}", s.target());
    }
    let mut reported = HashSet::new();
    // Each socket's kernel drops at its last report: a report gives those since (the kernel
    // counts from the bind, across runs).
    let mut drops_before = vec![0u64; sinks.len()];
    let mut malformed_before = vec![0u64; sinks.len()];
    let mut refused_before = vec![0u64; sinks.len()];
    loop {
        std::thread::sleep(Duration::from_millis(100));
        let now = mono_ns();
        let last = end.is_some_and(|e| now >= e) || stopped.load(Ordering::SeqCst);
        for (((s, drops_before), malformed_before), refused_before) in sinks
            .iter()
            .zip(&mut drops_before)
            .zip(&mut malformed_before)
            .zip(&mut refused_before)
        {
            let refused = s.book().runs_refused;
            if refused > *refused_before {
                errln!(
                    "loadgen sink: {}: {} events of runs past the {MAX_RUNS} this sink holds \
                     at once, not recorded (a shorter --idle reports and lets go of runs sooner)",
                    s.target(),
                    refused - *refused_before
                );
                *refused_before = refused;
            }
            let malformed = s.book().malformed;
            if malformed > *malformed_before {
                errln!(
                    "loadgen sink: {}: {} datagrams or events that no loadgen run sends",
                    s.target(),
                    malformed - *malformed_before
                );
                *malformed_before = malformed;
            }
            let done: Vec<(u32, Recorder)> = {
                let mut book = s.book();
                let ids: Vec<u32> = book
                    .runs
                    .iter()
                    .filter(|(_, r)| last || now.saturating_sub(r.last_ns) > args.idle.0)
                    .map(|(&id, _)| id)
                    .collect();
                ids.into_iter()
                    .filter_map(|id| book.runs.remove(&id).map(|r| (id, r)))
                    .collect()
            };
            for (id, r) in done {
                // A run that resumes after `--idle` is reported again, for what came since.
                let again = !reported.insert((id, s.target().to_string()));
                let drops = s.kernel_drops().map(|d| {
                    let since = d.saturating_sub(*drops_before);
                    *drops_before = d;
                    since
                });
                let line = line(id, s, &r, drops, again);
                let continued = if again { " (continued)" } else { "" };
                write_stdout(&format!("{line}{continued}\n"))?;
            }
        }
        if last {
            return Ok(());
        }
    }
}

/// One run's report line; `kernel_drops`: the socket's since its previous report; `again`: the
/// run was reported before, and `r` holds what came since.
fn line(id: u32, sink: &Sink, r: &Recorder, kernel_drops: Option<u64>, again: bool) -> String {
    // A resumed run's numbers below those that came since were the earlier report's.
    let gaps = if again {
        r.gaps_from_lowest()
    } else {
        r.gaps()
    };
    // The sequence gaps never arrived: as in `loadgen run`'s report, they count as slower than
    // any received, and what lies above the received share is not measured.
    let measured = r.received as f64 / (r.received + gaps).max(1) as f64;
    let p = Percentiles::of(&r.latency, measured);
    let ns = |v: Option<u64>| match v {
        Some(v) => human_ns(v as f64),
        None if r.received > 0 => "n/m".into(),
        None => "n/a".into(),
    };
    format!(
        "run {id:08x}{} {}: received {} gaps {} duplicates {} reordered {} datagrams {} \
         kernel_drops {} p50 {} p99 {} p99.9 {} max {}",
        if id & 1 == 0 { " (warm-up)" } else { "" },
        sink.target(),
        r.received,
        gaps,
        r.duplicates,
        r.reordered,
        r.datagrams,
        kernel_drops.map_or("n/a".into(), |d| d.to_string()),
        ns(p.p50),
        ns(p.p99),
        ns(p.p99_9),
        ns(p.max),
    )
}
