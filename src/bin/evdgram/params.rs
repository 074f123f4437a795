//! What `encode`, `raise` and `serve` read alike: `--params JSON` and `--format line|jsonrpc`,
//! and the event names `serve --publish` and `listen --subscribe` take.

use event_datagram::{validate_event_name, EventError, Format, Params};

/// An event name, checked as the command line is read (non-empty, no line breaks): a bad one
/// is a usage error that names its flag.
pub fn event_name(name: &str) -> Result<String, EventError> {
    validate_event_name(name).map(|()| name.to_owned())
}

/// Parses `--params`: a JSON object (named parameters, in order, duplicate keys kept) or array
/// (unnamed); values are strings or integers in the i64 range. The same rules and messages as
/// MI's `raise_event`, from the same parser.
pub fn parse_params(json: &str) -> anyhow::Result<Params> {
    event_datagram::mi::params_from_json(json).map_err(anyhow::Error::msg)
}

/// A wire format to encode in.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
pub enum FormatArg {
    /// The OpenSIPS event_datagram line format (up to 3.0).
    Line,
    /// JSON-RPC 2.0 notifications (OpenSIPS 3.1+; what opensips-event reads).
    Jsonrpc,
}

impl From<FormatArg> for Format {
    fn from(f: FormatArg) -> Format {
        match f {
            FormatArg::Line => Format::Line,
            FormatArg::Jsonrpc => Format::Jsonrpc,
        }
    }
}
