//! Decoders: datagrams back into events, for receivers, tests, `loadgen` and `evdgram listen`.
//!
//! [`line`](mod@line) reads the OpenSIPS `event_datagram` line format, both our encoder's output
//! and what OpenSIPS 3.0.5 sent; [`jsonrpc`] reads OpenSIPS 3.1+ JSON-RPC notifications. Both
//! read several events packed in one datagram (coalescing). [`decode`] picks one by
//! [`DecodeFormat`].
//!
//! Decoding never panics: malformed input is a [`DecodeError`] naming what is wrong and where.
//!
//! ```
//! use event_datagram::decode::{decode, DecodeFormat};
//! use event_datagram::ValueRef;
//!
//! let events = decode(b"E_PIKE_BLOCKED\nip::192.168.2.11\n\n", DecodeFormat::Auto)?;
//! assert_eq!(events[0].name().as_str(), "E_PIKE_BLOCKED");
//! let p = events[0].params().iter().next().unwrap();
//! assert_eq!((p.name, p.value), (Some("ip"), ValueRef::Str("192.168.2.11")));
//! # Ok::<(), event_datagram::DecodeError>(())
//! ```

pub mod jsonrpc;
pub mod line;
mod params;
mod scan;

pub use params::{DecodedParams, DecodedParamsIter};

use std::fmt;
use std::str::FromStr;

use crate::encode::Format;
use crate::error::EventError;
use crate::event::Event;

/// Which decoder to use.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum DecodeFormat {
    /// A datagram whose first non-whitespace byte is `{` is `jsonrpc`, anything else `line`.
    ///
    /// But event names may look like JSON (`{X`, `{}`, `{"a":1}`): a datagram starting with `{`
    /// is `line` all the same when its `jsonrpc` reading fails before any notification was
    /// read whole, at a byte of its first line (line feed included), and the whole datagram
    /// reads as `line` events. Otherwise the `jsonrpc` error stands. The one datagram this
    /// misreads is a malformed notification alone on its first line followed by an empty
    /// line, such as `{"jsonrpc":"2.0","method":"E","params":[true]}\n\n`: a `line` event
    /// named by that text (OpenSIPS' and our notifications do not end with an empty line;
    /// every `line` datagram does).
    #[default]
    Auto,
    /// The line format ([`line`](mod@line)).
    Line,
    /// JSON-RPC notifications ([`jsonrpc`]).
    Jsonrpc,
}

impl DecodeFormat {
    /// The name used in configuration and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            DecodeFormat::Auto => "auto",
            DecodeFormat::Line => "line",
            DecodeFormat::Jsonrpc => "jsonrpc",
        }
    }

    /// The format [`decode`] reads `datagram` in first: [`DecodeFormat::Auto`]'s guess from
    /// its first non-whitespace byte. When decoding fails, the error is this format's; when it
    /// succeeds, [`decode_reporting_format`] says which format was used (`Auto` may read a
    /// datagram starting with `{` as `line`).
    pub fn resolve(self, datagram: &[u8]) -> Format {
        match self {
            DecodeFormat::Line => Format::Line,
            DecodeFormat::Jsonrpc => Format::Jsonrpc,
            DecodeFormat::Auto => match datagram.iter().find(|b| !b.is_ascii_whitespace()) {
                Some(b'{') => Format::Jsonrpc,
                _ => Format::Line,
            },
        }
    }
}

impl From<Format> for DecodeFormat {
    fn from(f: Format) -> Self {
        match f {
            Format::Line => DecodeFormat::Line,
            Format::Jsonrpc => DecodeFormat::Jsonrpc,
        }
    }
}

impl fmt::Display for DecodeFormat {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A decode format name that is not `auto`, `line` or `jsonrpc`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown decode format {0:?}: expected `auto`, `line` or `jsonrpc`")]
pub struct UnknownDecodeFormat(pub String);

impl FromStr for DecodeFormat {
    type Err = UnknownDecodeFormat;

    fn from_str(s: &str) -> Result<Self, UnknownDecodeFormat> {
        match s {
            "auto" => Ok(DecodeFormat::Auto),
            "line" => Ok(DecodeFormat::Line),
            "jsonrpc" => Ok(DecodeFormat::Jsonrpc),
            _ => Err(UnknownDecodeFormat(s.to_owned())),
        }
    }
}

/// Decodes every event in `datagram` with the decoder `format` selects.
pub fn decode(datagram: &[u8], format: DecodeFormat) -> Result<Vec<Event>, DecodeError> {
    decode_reporting_format(datagram, format).map(|(events, _)| events)
}

/// [`decode`], also saying which format the events were read in: with
/// [`DecodeFormat::Auto`], not always what [`resolve`](DecodeFormat::resolve) guessed.
///
/// ```
/// use event_datagram::decode::{decode_reporting_format, DecodeFormat};
/// use event_datagram::Format;
///
/// let (events, format) = decode_reporting_format(b"{X\na::1\n\n", DecodeFormat::Auto)?;
/// assert_eq!((events[0].name().as_str(), format), ("{X", Format::Line));
/// # Ok::<(), event_datagram::DecodeError>(())
/// ```
pub fn decode_reporting_format(
    datagram: &[u8],
    format: DecodeFormat,
) -> Result<(Vec<Event>, Format), DecodeError> {
    let as_line = |datagram| line::decode(datagram).map(|events| (events, Format::Line));
    match format.resolve(datagram) {
        Format::Line => as_line(datagram),
        Format::Jsonrpc if format == DecodeFormat::Auto => {
            match jsonrpc::decode_counting(datagram) {
                Ok(events) => Ok((events, Format::Jsonrpc)),
                // Nothing was JSON-RPC, and the first line already failed: maybe an event name.
                Err((0, json)) if on_first_line(datagram, json.offset()) => {
                    as_line(datagram).map_err(|_| json)
                }
                Err((_, json)) => Err(json),
            }
        }
        Format::Jsonrpc => jsonrpc::decode(datagram).map(|events| (events, Format::Jsonrpc)),
    }
}

/// True when byte `offset` of `datagram` is on its first line, its line feed included.
fn on_first_line(datagram: &[u8], offset: usize) -> bool {
    datagram
        .iter()
        .position(|&b| b == b'\n')
        .is_some_and(|lf| offset <= lf)
}

/// A datagram that cannot be decoded: what is wrong ([`kind`](Self::kind)) and at which byte
/// offset ([`offset`](Self::offset)).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot decode datagram at byte {offset}: {kind}")]
pub struct DecodeError {
    offset: usize,
    kind: DecodeErrorKind,
}

impl DecodeError {
    /// An error of `kind` at byte `offset` of the datagram.
    pub fn new(offset: usize, kind: DecodeErrorKind) -> Self {
        DecodeError { offset, kind }
    }

    /// The byte offset in the datagram where the problem was found.
    pub fn offset(&self) -> usize {
        self.offset
    }

    /// What is wrong.
    pub fn kind(&self) -> &DecodeErrorKind {
        &self.kind
    }
}

/// What is wrong with a datagram.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum DecodeErrorKind {
    /// The datagram is empty (or, for `jsonrpc`, only whitespace).
    #[error("the datagram is empty")]
    Empty,
    /// The datagram ends inside an event (`line`: its closing empty line is missing).
    #[error("the datagram ends before the event does (missing closing empty line)")]
    Truncated,
    /// An event name line is empty.
    #[error("empty event name")]
    EmptyEventName,
    /// A quoted value has no closing `"`. Not returned by this crate's decoders any more: the
    /// line decoder reads such a value raw, as OpenSIPS 3.0.5 wrote it.
    #[error("quoted value has no closing quote")]
    UnterminatedQuote,
    /// A quoted value's closing `"` is followed by something other than a line feed. Not
    /// returned by this crate's decoders any more: the line decoder reads such a value raw, as
    /// OpenSIPS 3.0.5 wrote it.
    #[error("unexpected byte after a closing quote (expected a line feed)")]
    AfterClosingQuote,
    /// The bytes are not UTF-8.
    #[error("invalid UTF-8")]
    InvalidUtf8,
    /// An event or parameter name the event model rejects.
    #[error("{0}")]
    InvalidName(EventError),
    /// `jsonrpc`: the bytes are not JSON.
    #[error("invalid JSON: {0}")]
    InvalidJson(String),
    /// `jsonrpc`: JSON, but not a JSON-RPC 2.0 notification of an event.
    #[error("not an event notification: {0}")]
    InvalidNotification(String),
    /// `jsonrpc`: a parameter value that is not a string or an integer in the `i64` range.
    #[error("unsupported parameter value: {0} (only strings and integers in the i64 range)")]
    UnsupportedValue(String),
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn formats_parse_and_print() {
        for f in [
            DecodeFormat::Auto,
            DecodeFormat::Line,
            DecodeFormat::Jsonrpc,
        ] {
            assert_eq!(f.to_string().parse::<DecodeFormat>(), Ok(f));
        }
        let err = "xml".parse::<DecodeFormat>().unwrap_err();
        assert!(err.to_string().contains("`auto`, `line` or `jsonrpc`"));
        assert_eq!(DecodeFormat::default(), DecodeFormat::Auto);
    }

    #[test]
    fn auto_picks_by_first_non_whitespace_byte() {
        assert_eq!(DecodeFormat::Auto.resolve(b" \n{"), Format::Jsonrpc);
        assert_eq!(DecodeFormat::Auto.resolve(b"E_X\n\n"), Format::Line);
        assert_eq!(DecodeFormat::Auto.resolve(b""), Format::Line);
        let e = decode(br#"{"jsonrpc":"2.0","method":"E_X"}"#, DecodeFormat::Auto).unwrap();
        assert_eq!(e[0].name().as_str(), "E_X");
    }

    #[test]
    fn auto_reads_a_line_event_named_like_json_as_lines() {
        let e = decode(b"{X\na::1\n\n", DecodeFormat::Auto).unwrap();
        assert_eq!(e[0].name().as_str(), "{X");
        // Not JSON, not lines either: the JSON error.
        let err = decode(br#"{"jsonrpc":"2.0","#, DecodeFormat::Auto).unwrap_err();
        assert!(
            matches!(err.kind(), DecodeErrorKind::InvalidJson(_)),
            "{err}"
        );
        // JSON, not an event, and not lines either: the JSON error.
        let err = decode(b"{\"a\":1}\n", DecodeFormat::Auto).unwrap_err();
        assert!(
            matches!(err.kind(), DecodeErrorKind::InvalidNotification(_)),
            "{err}"
        );
    }

    #[test]
    fn auto_reads_line_events_named_like_json_objects_as_lines() {
        for (d, name) in [
            (&b"{}\n\n"[..], "{}"),
            (b"{\"a\":1}\n\n", "{\"a\":1}"),
            (b"{\"a\":1}\nv::x\n\n", "{\"a\":1}"),
        ] {
            let (events, format) = decode_reporting_format(d, DecodeFormat::Auto).unwrap();
            assert_eq!(format, Format::Line);
            assert_eq!(events[0].name().as_str(), name);
            assert_eq!(events, line::decode(d).unwrap());
        }
    }

    #[test]
    fn auto_keeps_the_json_error_once_a_notification_was_read_or_past_the_first_line() {
        for d in [
            &b"{\"jsonrpc\":\"2.0\",\"method\":\"E\",\"params\":[1]}\n{\"jsonrpc\":\n\n"[..],
            b"{\"jsonrpc\":\"2.0\",\"method\":\"E\"}x\n\n",
            b"{\"jsonrpc\":\nx\n\n",
        ] {
            assert!(line::decode(d).is_ok(), "the bytes do read as lines");
            let err = decode(d, DecodeFormat::Auto).unwrap_err();
            assert_eq!(err, jsonrpc::decode(d).unwrap_err());
            assert!(
                matches!(err.kind(), DecodeErrorKind::InvalidJson(_)),
                "{err}"
            );
        }
    }

    #[test]
    fn decode_reporting_format_names_the_format_it_read() {
        let d = b"{X\nx\na::1\n\n";
        assert_eq!(
            DecodeFormat::Auto.resolve(d),
            Format::Jsonrpc,
            "the first guess"
        );
        assert_eq!(
            decode_reporting_format(d, DecodeFormat::Auto).unwrap().1,
            Format::Line
        );
        let d = br#"{"jsonrpc":"2.0","method":"E_X"}"#;
        assert_eq!(
            decode_reporting_format(d, DecodeFormat::Auto).unwrap().1,
            Format::Jsonrpc
        );
        for f in Format::ALL {
            let d: &[u8] = match f {
                Format::Line => b"E\n\n",
                Format::Jsonrpc => br#"{"jsonrpc":"2.0","method":"E"}"#,
            };
            assert_eq!(decode_reporting_format(d, f.into()).unwrap().1, f);
        }
    }
}
