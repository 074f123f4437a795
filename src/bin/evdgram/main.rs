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
//! Errors are printed as `evdgram: ...` on stderr, with their causes. Exit status: 0 on success,
//! 2 for a command-line or input error (including every `encode` error), 1 when `listen` or
//! `serve` fails (for `serve` also a bad `--config` or `--publish`) or `raise` did not raise
//! every event or send every datagram, 128 + the signal's number (130 for SIGINT) when a signal
//! stopped `raise`.

// Every line to stderr goes through `say!`: `eprintln!` panics when stderr cannot be written.
#![warn(clippy::print_stderr)]

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

use std::process::ExitCode;

use clap::{Parser, Subcommand};

/// Send, encode and receive OpenSIPS event_datagram events.
#[derive(Debug, Parser)]
#[command(name = "evdgram", version, about, propagate_version = true)]
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
        Command::Raise(args) => {
            let result = raise::run(args);
            let status = result.as_ref().err().map_or(0, raise::failure_status);
            (result, status)
        }
        Command::Serve(args) => (serve::run(args), serve::FAILURE_STATUS),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            say!("evdgram: {err:#}");
            ExitCode::from(failure)
        }
    }
}
