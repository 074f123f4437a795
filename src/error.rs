//! Errors of building and encoding events.

/// An event or parameter that cannot be built: it would break the wire framing.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum EventError {
    /// The event name is empty.
    #[error("invalid event name: it is empty")]
    EmptyEventName,
    /// The event name holds `\n` or `\r`.
    #[error("invalid event name {name:?}: it contains a line break")]
    EventNameLineBreak {
        /// The name as given.
        name: String,
    },
    /// A parameter name holds `\n`, `\r`, `"`, `'` or `::`.
    #[error("invalid parameter name {name:?}: it {reason} (names may not contain \\n, \\r, \", ' or ::, nor end with :)")]
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
}
