//! `evdgram`: the event-datagram command line.
//!
//! - `evdgram encode [--format line|jsonrpc] EVENT [--params JSON]` writes one event's exact
//!   datagram bytes to stdout.
//! - `evdgram listen SPEC [--format auto|line|jsonrpc]` receives datagrams on a UDP or UNIX
//!   socket and prints every event as one JSON object per line; with `--subscribe EVENT` it
//!   subscribes itself through an MI endpoint, and unsubscribes on exit.
//! - `evdgram raise [--format F] --to SPEC[,SPEC...] [--to-one SPEC] EVENT [--params JSON]
//!   [--count N] [--timeout SECS] [--backend B]` sends an event through a dispatcher and prints the final counters; it
//!   ends in bounded time whatever the receivers do (stalled ones: drops, counted), and on
//!   SIGINT, SIGTERM or SIGHUP stops raising and prints them all the same.
//! - `evdgram serve [--config FILE] [--mi SPEC]... [--publish E_A,E_B] [--format F]` runs a
//!   dispatcher with an MI control endpoint (JSON-RPC 2.0 over datagrams, as OpenSIPS).
//!
//! Errors are printed as `evdgram: ...` on stderr, with their causes. Exit status, for every
//! subcommand alike: 0 on success; 2 for an error in what was given, before anything is sent:
//! the command line, the input (every `encode` error), a `--config` file that cannot be read or
//! is invalid, `EVDGRAM_BACKEND` naming no backend; 1 when `listen` or `serve` fails at run time
//! (a socket cannot be bound, ...) or `raise` did not raise every event or send every
//! datagram; 128 + the signal's number (130 for SIGINT) when a signal stopped `raise`.

// Every line to stderr goes through `say!`: `eprintln!` panics when stderr cannot be written.
#![warn(clippy::print_stderr)]
// `unsafe` only in the modules that say so (signals, the MI reply's `sendto` and the umask,
// socket options), each block with its `SAFETY:` argument.
#![deny(unsafe_code)]

/// Writes a line to stderr, as `eprintln!` does, but ignores a failure to write: a closed or
/// broken stderr (`evdgram ... 2>&1 | head -1`) must not turn into a panic and exit status 101
/// instead of the documented one.
macro_rules! say {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), $($arg)*);
    }};
}

mod encode;
mod listen;
mod mi_client;
mod params;
mod raise;
mod serve;
mod signal;
mod sockopt;

use std::process::ExitCode;

use clap::{Parser, Subcommand};
use event_datagram::StartError;

/// The exit status of an error in the command line (clap's too), a configuration or the input.
const USAGE_STATUS: u8 = 2;

/// An error in the command line, a configuration or the input, in any subcommand: exit status
/// [`USAGE_STATUS`].
#[derive(Debug, thiserror::Error)]
#[error("{0:#}")]
struct UsageError(anyhow::Error);

/// `err` as a [`UsageError`].
fn usage(err: impl Into<anyhow::Error>) -> anyhow::Error {
    UsageError(err.into()).into()
}

/// A dispatcher that did not start: a [`UsageError`] when what was given is wrong (the
/// configuration, `EVDGRAM_BACKEND`), else a run-time failure.
fn start_error(err: StartError) -> anyhow::Error {
    match err {
        StartError::BadBackendEnv(_) | StartError::Config(_) | StartError::Subscription(_) => {
            usage(err)
        }
        _ => err.into(),
    }
}

/// The exit status for `err`, from a subcommand whose run-time failures exit `failure`.
fn exit_status(err: &anyhow::Error, failure: u8) -> u8 {
    if err.is::<UsageError>() {
        USAGE_STATUS
    } else if let Some(interrupted) = err.downcast_ref::<raise::Interrupted>() {
        interrupted.status()
    } else {
        failure
    }
}

/// Send, encode and receive OpenSIPS event_datagram events.
#[derive(Debug, Parser)]
#[command(
    name = "evdgram",
    version,
    about,
    propagate_version = true,
    after_help = "Exit status: 0 on success; 2 for an error in what was given (the command \
        line, the input, a --config file, EVDGRAM_BACKEND), before anything is sent; 1 when a \
        command fails at run time, or raise did not send everything; 128 + the signal's number \
        when a signal stopped raise (130 for SIGINT), or a second signal serve."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Encode one event and write the exact datagram bytes to stdout (no newline).
    Encode(encode::Args),
    /// Receive datagrams on a socket and print each event as one JSON object per line.
    Listen(listen::Args),
    /// Send an event to sockets N times through a dispatcher and print the final stats.
    Raise(raise::Args),
    /// Run a dispatcher with an MI control endpoint (JSON-RPC over UDP/UNIX datagrams, as
    /// OpenSIPS' mi_datagram): subscribe sockets and raise events with OpenSIPS tools.
    Serve(serve::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let (result, failure) = match cli.command {
        Command::Encode(args) => (encode::run(args), encode::FAILURE_STATUS),
        Command::Listen(args) => (listen::run(args), listen::FAILURE_STATUS),
        Command::Raise(args) => (raise::run(args), raise::FAILURE_STATUS),
        Command::Serve(args) => (serve::run(args), serve::FAILURE_STATUS),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            say!("evdgram: {err:#}");
            ExitCode::from(exit_status(&err, failure))
        }
    }
}
