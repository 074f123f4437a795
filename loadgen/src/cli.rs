//! The command line (clap derive). With no subcommand, `loadgen` runs the default sweep.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};
use event_datagram::{BackendChoice, Format};

use crate::config::TransportChoice;
use crate::units::{parse_size, Fraction, Nanos, Rate};

/// Open-loop stress test and capacity planner for event-datagram.
///
/// With no arguments: a sweep over 5 sizes up to the 65 457-byte ceiling, UDP and UNIX, with
/// embedded receivers (about 25 s, nothing else needed).
#[derive(Debug, Parser)]
#[command(name = "loadgen", version, args_conflicts_with_subcommands = true)]
pub struct Cli {
    /// What to do (default: run).
    #[command(subcommand)]
    pub command: Option<Command>,
    /// `loadgen [run]` options.
    #[command(flatten)]
    pub run: RunArgs,
}

/// The subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Run the schedule and report (the default).
    Run(RunArgs),
    /// Search, per size, the highest rate that meets an SLO with no loss.
    Capacity(CapacityArgs),
    /// Receive and report in this process, for `loadgen run --targets-external` elsewhere.
    Sink(SinkArgs),
}

/// Options shared by `run` and `capacity`.
#[derive(Debug, Clone, Default, Args)]
pub struct Common {
    /// YAML configuration (flags override it).
    #[arg(long, value_name = "FILE")]
    pub config: Option<PathBuf>,
    /// Events per second (1M, 250k, 1.5k, 500/s, 30/min).
    #[arg(long)]
    pub rate: Option<Rate>,
    /// Measured window per run (10s, 500ms; at most a week, 10080m).
    #[arg(long)]
    pub duration: Option<Nanos>,
    /// Unmeasured warm-up per run.
    #[arg(long)]
    pub warmup: Option<Nanos>,
    /// Datagram sizes in bytes, one run each (up to 65457; default 64,512,1400,8192,65457,
    /// with jsonrpc 107,512,...: its smallest event is 107 bytes, and 64 given here is an
    /// error).
    #[arg(long, value_delimiter = ',', value_parser = parse_size)]
    pub sizes: Option<Vec<usize>>,
    /// Transports of the embedded receivers (not with `--targets-external`).
    #[arg(long, value_enum)]
    pub transport: Option<TransportChoice>,
    /// Receivers per transport (each gets every event; not with `--targets-external`).
    #[arg(long)]
    pub targets: Option<usize>,
    /// Producer threads.
    #[arg(long)]
    pub producers: Option<usize>,
    /// Wire format: line or jsonrpc.
    #[arg(long)]
    pub format: Option<Format>,
    /// Dispatcher backend: auto, uring or syscall.
    #[arg(long)]
    pub backend: Option<BackendChoice>,
    /// Producers' tick: each wakes at most once per tick and raises every event due (default
    /// 100us).
    #[arg(long)]
    pub tick: Option<Nanos>,
    /// Events later than this are shed (bounded catch-up; default 100ms). At least --tick +
    /// 1ms: an event waits up to a tick, plus the wake-up's own delay, before it is raised.
    #[arg(long)]
    pub catchup: Option<Nanos>,
    /// The dispatcher's channel capacity.
    #[arg(long)]
    pub queue_capacity: Option<usize>,
    /// Subscribe the sinks with coalescing: events packed per datagram up to
    /// `--coalesce-bytes` (default 65457) or `--coalesce-delay` (default 1ms).
    #[arg(long)]
    pub coalesce: bool,
    /// Coalesced datagrams' size limit, bytes: at least the smallest of `--sizes` (implies
    /// `--coalesce`).
    #[arg(long, value_parser = parse_size)]
    pub coalesce_bytes: Option<usize>,
    /// How long a coalesced datagram waits for more events (implies `--coalesce`).
    #[arg(long)]
    pub coalesce_delay: Option<Nanos>,
    /// Turn UDP GSO off in the dispatcher (it is on by default).
    #[arg(long)]
    pub no_gso: bool,
    /// Print a progress line per second on stderr (default: when stderr is a terminal).
    #[arg(long)]
    pub progress: bool,
    /// Write the JSON report here (`-` for stdout, then the table goes to stderr).
    #[arg(long, value_name = "FILE|-")]
    pub json: Option<String>,
}

/// `loadgen run`.
#[derive(Debug, Clone, Default, Args)]
pub struct RunArgs {
    /// Shared options.
    #[command(flatten)]
    pub common: Common,
    /// Send to these sockets (a `loadgen sink` elsewhere) instead of embedded receivers: one
    /// run per size to all of them, its transport theirs (`mixed` for UDP and UNIX).
    #[arg(long, value_delimiter = ',', value_name = "SPEC")]
    pub targets_external: Option<Vec<String>>,
    /// Write one HdrHistogram percentile distribution per run: PREFIX-SIZE-TRANSPORT.hgrm.
    #[arg(long, value_name = "PREFIX")]
    pub hgrm: Option<String>,
    /// Write an HdrHistogram interval log (one histogram per second, tagged per run).
    #[arg(long, value_name = "FILE")]
    pub hlog: Option<PathBuf>,
    /// Draw the latency spectrum and achieved rate per size as SVG.
    #[arg(long, value_name = "FILE.svg")]
    pub plot: Option<PathBuf>,
    /// Fail (exit 3) when a run's p99 is above this.
    #[arg(long)]
    pub max_p99: Option<Nanos>,
    /// Fail (exit 3) when a run's p99.9 is above this.
    #[arg(long)]
    pub max_p999: Option<Nanos>,
    /// Fail (exit 3) when a run loses more than this percentage of the scheduled events (e.g.
    /// 0.01%, with the %; none by default).
    #[arg(long)]
    pub max_loss: Option<Fraction>,
    /// Fail (exit 3) when a run achieves less than this percentage of the target rate (e.g.
    /// 99%, with the %; none by default).
    #[arg(long)]
    pub min_achieved: Option<Fraction>,
}

/// `loadgen capacity`.
#[derive(Debug, Clone, Args)]
pub struct CapacityArgs {
    /// Shared options (`--rate` is where the search starts; `--duration` each step's length).
    #[command(flatten)]
    pub common: Common,
    /// The latency objective: p50|p90|p99|p99.9|p99.99=DURATION, comma separated.
    #[arg(long, default_value = "p99=1ms")]
    pub slo: String,
    /// Highest rate tried.
    #[arg(long, default_value = "2M")]
    pub max_rate: Rate,
    /// Search steps per size and transport (at least 1).
    #[arg(long, default_value_t = 8, value_parser = clap::value_parser!(u32).range(1..))]
    pub steps: u32,
}

/// `loadgen sink`.
#[derive(Debug, Clone, Args)]
pub struct SinkArgs {
    /// Sockets to receive on: udp:HOST:PORT (port 0: a free one, said on stderr), unix:/path,
    /// unix:@name (comma separated). A unix path may replace a stale socket file (nobody
    /// listens), nothing else; the file is removed at exit if it is still ours.
    #[arg(long, value_delimiter = ',', required = true, value_name = "SPEC")]
    pub listen: Vec<String>,
    /// Exit after this long (above 0, at most a week, 10080m; default: run until SIGINT,
    /// SIGTERM or SIGHUP, which end it as this does: the runs it holds reported, its socket
    /// files removed, exit 0; a second signal ends it at once).
    #[arg(long)]
    pub duration: Option<Nanos>,
    /// A run is reported once nothing arrived for it for this long (and let go: a sink holds
    /// 64 runs at once; events of more are counted and said, not recorded).
    #[arg(long, default_value = "1s")]
    pub idle: Nanos,
}
