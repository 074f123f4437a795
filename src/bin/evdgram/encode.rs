//! `evdgram encode`: one event to its exact datagram bytes on stdout.

use std::io::{self, Write};

use anyhow::Context;
use event_datagram::{validate_event_name, Format, Params, MAX_DATAGRAM};

use crate::params::{parse_params, FormatArg};

/// The exit status of every `encode` error: bad input, nothing written.
pub const FAILURE_STATUS: u8 = 2;

/// Arguments of `evdgram encode`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The wire format.
    #[arg(long, value_enum, default_value_t = FormatArg::Line)]
    format: FormatArg,
    /// The event name (non-empty, no line breaks), e.g. E_PIKE_BLOCKED.
    event: String,
    /// The parameters: a JSON object for named ones (in order, duplicate keys kept), or a JSON
    /// array for unnamed ones. Values are strings or integers in the i64 range.
    #[arg(long, value_name = "JSON")]
    params: Option<String>,
}

/// Encodes the event and writes the datagram to stdout; on error, nothing is written.
pub fn run(args: Args) -> anyhow::Result<()> {
    validate_event_name(&args.event)?;
    let params = match &args.params {
        Some(json) => parse_params(json).context("invalid --params")?,
        None => Params::new(),
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let n = Format::from(args.format).encode(&args.event, &params, &mut buf)?;
    let mut out = io::stdout().lock();
    out.write_all(&buf[..n])
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    Ok(())
}
