//! `evdgram raise`: send one event N times to sockets through a real dispatcher, then print what
//! happened to every datagram.
//!
//! SIGINT, SIGTERM or SIGHUP stops the raising: the dispatcher is shut down as at the end of a
//! run, the final stats are printed, and the exit status is 128 + the signal's number (130 for
//! SIGINT). A second signal ends the process at once.

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::atomic::Ordering;
use std::time::Duration;

use anyhow::Context;
use event_datagram::{
    validate_event_name, BackendChoice, Dispatcher, DispatcherConfig, Expiry, Format, Params,
    RaiseError, Stats, Target, BACKEND_ENV, MAX_DATAGRAM,
};

use crate::params::{parse_params, FormatArg};
use crate::{signal, start_error, usage};

/// Exit status when something was not delivered (failed or dropped), or the dispatcher failed.
pub const FAILURE_STATUS: u8 = 1;

/// Arguments of `evdgram raise`.
#[derive(Debug, clap::Args)]
#[command(
    after_help = "Exit status: 0 when every event was raised and every datagram sent; 1 \
    when some were not (the stats say which) or the dispatcher failed; 2 for a command-line or \
    input error (nothing is sent); 128 + the signal's number (130 for SIGINT, 143 for SIGTERM, \
    129 for SIGHUP) when a signal stopped it: it stops raising, shuts the dispatcher down and \
    prints the final stats (a second signal ends it at once). A signal inherited ignored \
    (SIGHUP under nohup) stays ignored."
)]
pub struct Args {
    /// The wire format.
    #[arg(long, value_enum, default_value_t = FormatArg::Line)]
    format: FormatArg,
    /// Where to send, comma-separated, and repeatable: `udp:HOST:PORT`, `unix:/path`, `/path`,
    /// `unix:@name`. A path containing ',' cannot be given here: use --to-one.
    #[arg(
        long,
        value_name = "SPEC[,SPEC...]",
        value_delimiter = ',',
        required_unless_present = "to_one"
    )]
    to: Vec<String>,
    /// One more destination, taken whole (not split on commas): for a path containing ','.
    /// Repeatable.
    #[arg(long = "to-one", value_name = "SPEC")]
    to_one: Vec<String>,
    /// The event name (non-empty, no line breaks), e.g. E_PIKE_BLOCKED.
    event: String,
    /// The parameters: a JSON object for named ones (in order, duplicate keys kept), or a JSON
    /// array for unnamed ones. Values are strings or integers in the i64 range.
    #[arg(long, value_name = "JSON")]
    params: Option<String>,
    /// How many times to raise the event.
    #[arg(long, value_name = "N", default_value_t = 1)]
    count: u64,
    /// The send backend [default: auto]. Without this flag, EVDGRAM_BACKEND=uring|syscall|auto
    /// chooses it; the flag wins over the variable.
    #[arg(long, value_enum)]
    backend: Option<BackendArg>,
    /// How long to wait for receivers that take nothing (decimal seconds). While every
    /// receiver is full the dispatcher's queue fills, and an event that finds it full for this
    /// long is dropped, as is every next one that finds it full, until one finds room again;
    /// at the end, what the receivers have not taken within this long is dropped. The stats
    /// count every drop, and the exit status is then 1. A run against stalled receivers thus
    /// ends after about twice this.
    #[arg(long, value_name = "SECS", default_value = "5", value_parser = parse_secs)]
    timeout: Duration,
}

/// `--timeout`: decimal seconds, zero or more.
fn parse_secs(s: &str) -> Result<Duration, String> {
    let secs: f64 = s
        .parse()
        .map_err(|_| format!("not a number of seconds: {s:?}"))?;
    Duration::try_from_secs_f64(secs).map_err(|e| format!("{s:?}: {e}"))
}

/// A backend to run.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum BackendArg {
    /// io_uring where the kernel allows it, else syscall.
    Auto,
    /// io_uring, or fail.
    Uring,
    /// Non-blocking sockets and sendmmsg.
    Syscall,
}

impl From<BackendArg> for BackendChoice {
    fn from(b: BackendArg) -> BackendChoice {
        match b {
            BackendArg::Auto => BackendChoice::Auto,
            BackendArg::Uring => BackendChoice::Uring,
            BackendArg::Syscall => BackendChoice::Syscall,
        }
    }
}

/// Some events were not raised or not delivered: exit status [`FAILURE_STATUS`]; the stats are
/// printed.
#[derive(Debug, thiserror::Error)]
#[error("{0}; see the stats on stdout")]
pub struct Undelivered(String);

/// A signal stopped the raising: exit status 128 + the signal's number; the stats are printed.
#[derive(Debug, thiserror::Error)]
#[error("stopped by {}: {raised} of {count} events raised{}; see the stats on stdout",
    signal::name(*.signal),
    .undelivered.as_ref().map_or_else(String::new, |u| format!("; {u}")))]
pub struct Interrupted {
    signal: i32,
    raised: u64,
    count: u64,
    /// What was not raised or sent of what was, as [`Undelivered`] says it.
    undelivered: Option<String>,
}

impl Interrupted {
    /// The exit status: 128 + the signal's number.
    pub fn status(&self) -> u8 {
        u8::try_from(128 + self.signal).unwrap_or(FAILURE_STATUS)
    }
}

/// Checks everything the user gave before anything is started.
fn prepare(args: &Args) -> anyhow::Result<(Vec<Target>, Params)> {
    // Its message already says "invalid event name".
    validate_event_name(&args.event)?;
    let mut targets: Vec<Target> = Vec::new();
    for spec in args.to.iter().chain(&args.to_one) {
        let target = Target::parse(spec).with_context(|| format!("invalid --to {spec:?}"))?;
        if !targets.contains(&target) {
            targets.push(target);
        }
    }
    let params = match &args.params {
        Some(json) => parse_params(json).context("invalid --params")?,
        None => Params::new(),
    };
    // Refused here, as `encode` refuses it, rather than raised and counted too large.
    let mut datagram = vec![0; MAX_DATAGRAM];
    Format::from(args.format)
        .encode(&args.event, &params, &mut datagram)
        .context("the event cannot be sent")?;
    Ok((targets, params))
}

/// Raises the event, shuts the dispatcher down and prints its final stats to stdout.
pub fn run(args: Args) -> anyhow::Result<()> {
    let (targets, params) = prepare(&args).map_err(usage)?;
    let format = Format::from(args.format);
    if args.backend.is_some() {
        // The flag wins: the library lets EVDGRAM_BACKEND override the configuration, and reads
        // it at start. Safe to change: no other thread runs yet.
        std::env::remove_var(BACKEND_ENV);
    }
    // Before any thread exists, so that only the signal thread ever takes these signals.
    let interrupted = signal::block_termination()
        .and_then(signal::Blocked::spawn_flag)
        .context("cannot take SIGINT, SIGTERM and SIGHUP")?;
    let config = DispatcherConfig {
        backend: args.backend.unwrap_or(BackendArg::Auto).into(),
        // Shutdown waits for the receivers as long as a raise does.
        shutdown_timeout_ms: u64::try_from(args.timeout.as_millis()).unwrap_or(u64::MAX),
        ..Default::default()
    };
    let dispatcher = Dispatcher::start(config)
        .map_err(start_error)
        .context("cannot start the dispatcher")?;
    let event = dispatcher.publish(&args.event).map_err(usage)?;
    for target in &targets {
        dispatcher
            .subscribe_with_format(event, target.clone(), Expiry::Never, format)
            .with_context(|| format!("cannot subscribe {target}"))?;
    }
    let publisher = dispatcher.publisher();
    // While every receiver is full the dispatcher stops taking events and its queue fills;
    // `raise` would then wait for ever for a receiver that never reads. Once one event waited
    // the whole timeout, the next ones do not wait (20 000 timeouts would be hours), until one
    // finds room: the receivers move again.
    let mut wait = args.timeout;
    for _ in 0..args.count {
        if interrupted.load(Ordering::SeqCst) != 0 {
            break;
        }
        match publisher.raise_timeout(event, params.clone(), wait) {
            Ok(()) => wait = args.timeout,
            // Counted by the dispatcher as dropped (queue full).
            Err(RaiseError::QueueFull(..)) => wait = Duration::ZERO,
            Err(e) => return Err(e).context("cannot raise the event"),
        }
    }
    let stats = dispatcher.shutdown();
    let report = render(&stats, format, &targets);
    let mut out = std::io::stdout().lock();
    out.write_all(report.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    let checked = check(&stats, args.timeout);
    match interrupted.load(Ordering::SeqCst) {
        0 => Ok(checked?),
        signal => Err(Interrupted {
            signal,
            raised: stats.events.raised,
            count: args.count,
            undelivered: checked.err().map(|u| u.0),
        }
        .into()),
    }
}

/// Fails with [`Undelivered`] unless every event was raised and every routed datagram sent.
fn check(stats: &Stats, timeout: Duration) -> Result<(), Undelivered> {
    let t = &stats.totals;
    let undelivered = t.raised - t.sent;
    let queue_full = stats.events.dropped_queue_full;
    let mut parts = Vec::new();
    if queue_full > 0 {
        parts.push(format!(
            "{queue_full} of {} events were not raised: they found the dispatcher's queue full \
             (every receiver full) once an event had waited {timeout:?} for room (see --timeout)",
            stats.events.raised
        ));
    }
    if undelivered > 0 {
        let mut why = Vec::new();
        for (n, what) in [
            (t.failed_unreachable, "unreachable"),
            (t.failed_oversize, "too large"),
            (t.failed_other, "failed"),
            (t.dropped_retry_overflow, "dropped: receiver too slow"),
            (t.dropped_shutdown, "dropped at shutdown"),
            (t.pending, "pending"),
        ] {
            if n > 0 {
                why.push(format!("{n} {what}"));
            }
        }
        parts.push(format!(
            "{undelivered} of {} datagrams were not sent ({})",
            t.raised,
            why.join(", ")
        ));
    }
    if parts.is_empty() {
        return Ok(());
    }
    Err(Undelivered(parts.join("; ")))
}

/// The final stats as a readable table: the dispatcher, then one row per target.
fn render(stats: &Stats, format: Format, targets: &[Target]) -> String {
    let e = &stats.events;
    let mut out = String::new();
    let _ = writeln!(out, "backend: {}", stats.backend);
    let _ = writeln!(out, "format: {format}");
    let _ = writeln!(
        out,
        "events: raised {}, dispatched {}, dropped (queue full) {}",
        e.raised, e.dispatched, e.dropped_queue_full
    );
    let names: Vec<String> = targets.iter().map(Target::to_string).collect();
    let width = names.iter().map(String::len).chain([6]).max().unwrap_or(6);
    let _ = writeln!(
        out,
        "{:<width$}  {:>8}  {:>8}  {:>10}  {:>8}  {:>8}  {:>8}  FAILED BY CAUSE",
        "TARGET", "RAISED", "SENT", "BYTES", "DROPPED", "FAILED", "PENDING"
    );
    for (target, name) in targets.iter().zip(&names) {
        let c = stats.target(target).copied().unwrap_or_default();
        let mut causes = Vec::new();
        for (n, what) in [
            (c.failed_unreachable, "unreachable"),
            (c.failed_oversize, "oversize"),
            (c.failed_other, "other"),
        ] {
            if n > 0 {
                causes.push(format!("{what} {n}"));
            }
        }
        let causes = if causes.is_empty() {
            "-".to_owned()
        } else {
            causes.join(", ")
        };
        let _ = writeln!(
            out,
            "{name:<width$}  {:>8}  {:>8}  {:>10}  {:>8}  {:>8}  {:>8}  {causes}",
            c.raised,
            c.sent,
            c.bytes,
            c.dropped(),
            c.failed(),
            c.pending
        );
    }
    out
}
