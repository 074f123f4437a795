//! Errors of building and encoding events.

/// An event or parameter that cannot be built: it would break the wire framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The event name is empty.
    #[error("invalid event name: it is empty")]
    EmptyEventName,
    /// The event name holds `\n` or `\r`.
    #[error("invalid event name {}: it contains a line break", Shortened(.name))]
    EventNameLineBreak {
        /// The name as given.
        name: String,
    },
    /// A parameter name holds `\n`, `\r`, `"`, `'` or `::`, ends with `:`, or is longer than
    /// 65 535 bytes.
    #[error(
        "invalid parameter name {}: it {reason}{}",
        Shortened(.name),
        naming_rules_after(reason)
    )]
    InvalidParamName {
        /// The name as given.
        name: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A string value longer than 4 GiB.
    #[error("parameter value of {len} bytes is too long")]
    ValueTooLong {
        /// Its length in bytes.
        len: usize,
    },
}

/// [`EventError::InvalidParamName`]'s reason for a name too long for the packed length.
pub(crate) const PARAM_NAME_TOO_LONG: &str = "is longer than 65535 bytes";

/// The naming rules, after a reason that is about the name's characters.
fn naming_rules_after(reason: &str) -> &'static str {
    if reason == PARAM_NAME_TOO_LONG {
        ""
    } else {
        " (names may not contain \\n, \\r, \", ' or ::, nor end with :)"
    }
}

/// A name in a message: quoted, and cut after [`Shortened::MAX_CHARS`] characters with its
/// length in bytes, so that a hostile 70 000-byte key does not make a 70 KB message.
struct Shortened<'a>(&'a str);

impl Shortened<'_> {
    const MAX_CHARS: usize = 64;
}

impl std::fmt::Display for Shortened<'_> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.0.char_indices().nth(Self::MAX_CHARS) {
            None => write!(f, "{:?}", self.0),
            Some((cut, _)) => write!(f, "{:?}… ({} bytes)", &self.0[..cut], self.0.len()),
        }
    }
}

/// An event that cannot be encoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EncodeError {
    /// The encoded datagram would be `len` bytes, more than `max`; nothing is sent truncated.
    #[error("event encodes to {len} bytes, over the {max}-byte datagram limit")]
    TooLarge {
        /// The exact length the datagram would have.
        len: usize,
        /// The limit: [`MAX_DATAGRAM`](crate::MAX_DATAGRAM), or the buffer's size if smaller.
        max: usize,
    },
    /// A parameter name the line format cannot carry (a quote, a line break or `::` in it, or
    /// a final `:`): only in params decoded from `jsonrpc`, whose keys may be any string;
    /// params built by the application have valid names.
    #[error(
        "a parameter name cannot be written in the line format (it holds a quote, a line \
         break or '::', or ends with ':'); the jsonrpc format can carry it"
    )]
    ParamNameNotLine,
    /// The event name given to a public encoder is not a valid
    /// [`EventName`](crate::EventName): empty, or with a line break (the line format would
    /// frame it as several events; decoders refuse it).
    #[error("invalid event name: {reason}")]
    InvalidEventName {
        /// What is wrong with it.
        reason: &'static str,
    },
}
