//! `evdgram raise`: send one event N times to sockets through a real dispatcher, then print what
//! happened to every datagram.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::Context;
use event_datagram::{
    validate_event_name, BackendChoice, Dispatcher, DispatcherConfig, Expiry, Format, Params,
    Stats, Target, MAX_DATAGRAM,
};

use crate::params::{parse_params, FormatArg};

/// Exit status when the command line or its input is wrong (nothing was sent).
pub const USAGE_STATUS: u8 = 2;
/// Exit status when something was not delivered (failed or dropped), or the dispatcher failed.
pub const FAILURE_STATUS: u8 = 1;

/// Arguments of `evdgram raise`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The wire format.
    #[arg(long, value_enum, default_value_t = FormatArg::Line)]
    format: FormatArg,
    /// Where to send, comma-separated: `udp:HOST:PORT`, `unix:/path`, `/path`, `unix:@name`.
    #[arg(
        long,
        value_name = "SPEC[,SPEC...]",
        value_delimiter = ',',
        required = true
    )]
    to: Vec<String>,
    /// The event name (non-empty, no line breaks), e.g. E_PIKE_BLOCKED.
    event: String,
    /// The parameters: a JSON object for named ones (in order, duplicate keys kept), or a JSON
    /// array for unnamed ones. Values are strings or integers in the i64 range.
    #[arg(long, value_name = "JSON")]
    params: Option<String>,
    /// How many times to raise the event.
    #[arg(long, value_name = "N", default_value_t = 1)]
    count: u64,
    /// The send backend (EVDGRAM_BACKEND overrides it).
    #[arg(long, value_enum, default_value_t = BackendArg::Auto)]
    backend: BackendArg,
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

/// An error in the command line or its input: exit status [`USAGE_STATUS`].
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
pub struct UsageError(anyhow::Error);

/// Some events were not delivered: exit status [`FAILURE_STATUS`]; the stats are printed.
#[derive(Debug, thiserror::Error)]
#[error("{undelivered} of {routed} datagrams were not sent ({why}); see the stats on stdout")]
pub struct Undelivered {
    undelivered: u64,
    routed: u64,
    why: String,
}

/// The exit status for an error returned by [`run`].
pub fn failure_status(err: &anyhow::Error) -> u8 {
    if err.is::<UsageError>() {
        USAGE_STATUS
    } else {
        FAILURE_STATUS
    }
}

/// Checks everything the user gave before anything is started.
fn prepare(args: &Args) -> anyhow::Result<(Vec<Target>, Params)> {
    validate_event_name(&args.event).context("invalid event name")?;
    let mut targets: Vec<Target> = Vec::new();
    for spec in &args.to {
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
    let (targets, params) = prepare(&args).map_err(UsageError)?;
    let format = Format::from(args.format);
    let config = DispatcherConfig {
        backend: args.backend.into(),
        ..Default::default()
    };
    let dispatcher = Dispatcher::start(config).context("cannot start the dispatcher")?;
    let event = dispatcher
        .publish(&args.event)
        .map_err(|e| UsageError(e.into()))?;
    for target in &targets {
        dispatcher
            .subscribe_with_format(event, target.clone(), Expiry::Never, format)
            .with_context(|| format!("cannot subscribe {target}"))?;
    }
    let publisher = dispatcher.publisher();
    for _ in 0..args.count {
        publisher
            .raise(event, params.clone())
            .context("cannot raise the event")?;
    }
    let stats = dispatcher.shutdown();
    let report = render(&stats, format, &targets);
    let mut out = std::io::stdout().lock();
    out.write_all(report.as_bytes())
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    check(&stats)
}

/// Fails with [`Undelivered`] unless every routed datagram was sent.
fn check(stats: &Stats) -> anyhow::Result<()> {
    let t = &stats.totals;
    let undelivered = t.raised - t.sent;
    let queue_full = stats.events.dropped_queue_full;
    if undelivered == 0 && queue_full == 0 {
        return Ok(());
    }
    let mut why = Vec::new();
    for (n, what) in [
        (t.failed_unreachable, "unreachable"),
        (t.failed_oversize, "too large"),
        (t.failed_other, "failed"),
        (t.dropped_retry_overflow, "dropped: receiver too slow"),
        (t.dropped_shutdown, "dropped at shutdown"),
        (t.pending, "pending"),
        (queue_full, "events dropped: queue full"),
    ] {
        if n > 0 {
            why.push(format!("{n} {what}"));
        }
    }
    Err(Undelivered {
        undelivered,
        routed: t.raised,
        why: why.join(", "),
    }
    .into())
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
