//! Encoders: an event into the exact datagram bytes of a wire format, with no heap allocation.
//!
//! Both encoders write into a caller-provided buffer and return the length, or
//! [`EncodeError::TooLarge`] with the exact length the datagram would have had: never a truncated
//! datagram. Pass a buffer of [`MAX_DATAGRAM`] bytes to be limited by the protocol only. Both
//! refuse an event name that is empty or holds a line break ([`EncodeError::InvalidEventName`]);
//! [`Format::encode_validated`] skips that check for an [`EventName`]. The
//! line encoder also refuses params decoded from `jsonrpc` whose names it cannot carry
//! ([`EncodeError::ParamNameNotLine`]).

pub mod jsonrpc;
pub mod line;

use std::fmt;
use std::str::FromStr;

use crate::error::EncodeError;
use crate::event::{EventName, Params};

/// The largest datagram we send: 65 535 minus the IPv4 (20) and UDP (8) headers, minus
/// 50 bytes of headroom, as OpenSIPS' event interface defines it.
pub const MAX_DATAGRAM: usize = 65_457;

/// A wire format, chosen per subscription.
#[derive(
    Clone, Copy, Debug, Default, PartialEq, Eq, Hash, serde::Deserialize, serde::Serialize,
)]
#[serde(rename_all = "lowercase")]
pub enum Format {
    /// The OpenSIPS `event_datagram` line grammar (up to 3.0); the default.
    #[default]
    Line,
    /// OpenSIPS 3.1+ JSON-RPC 2.0 notifications.
    Jsonrpc,
}

impl Format {
    /// Both formats, in a fixed order (an index for per-format buffers).
    pub const ALL: [Format; 2] = [Format::Line, Format::Jsonrpc];

    /// The name used in configuration, MI and the CLI.
    pub fn as_str(self) -> &'static str {
        match self {
            Format::Line => "line",
            Format::Jsonrpc => "jsonrpc",
        }
    }

    /// Encodes `name` and `params` in this format into `out`; returns the datagram's length.
    ///
    /// `name` is checked: one that is not a valid [`EventName`] (empty, or with a line break)
    /// is [`EncodeError::InvalidEventName`], never a datagram that decodes as something else.
    /// [`encode_validated`](Self::encode_validated) skips the check for an [`EventName`].
    #[inline]
    pub fn encode(self, name: &str, params: &Params, out: &mut [u8]) -> Result<usize, EncodeError> {
        check_event_name(name)?;
        self.encode_validated_str(name, params, out)
    }

    /// [`encode`](Self::encode) for a name validated when the [`EventName`] was built: no
    /// check, as on the dispatcher's path.
    #[inline]
    pub fn encode_validated(
        self,
        name: &EventName,
        params: &Params,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        self.encode_validated_str(name.as_str(), params, out)
    }

    #[inline]
    fn encode_validated_str(
        self,
        name: &str,
        params: &Params,
        out: &mut [u8],
    ) -> Result<usize, EncodeError> {
        match self {
            Format::Line => line::encode_unchecked(name, params, out),
            Format::Jsonrpc => jsonrpc::encode_unchecked(name, params, out),
        }
    }
}

impl fmt::Display for Format {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A format name that is neither `line` nor `jsonrpc`.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("unknown format {0:?}: expected `line` or `jsonrpc`")]
pub struct UnknownFormat(pub String);

impl FromStr for Format {
    type Err = UnknownFormat;

    fn from_str(s: &str) -> Result<Self, UnknownFormat> {
        match s {
            "line" => Ok(Format::Line),
            "jsonrpc" => Ok(Format::Jsonrpc),
            _ => Err(UnknownFormat(s.to_owned())),
        }
    }
}

/// Refuses an event name the decoders would not read back as one event of that name: empty,
/// or with a line break (as [`validate_event_name`](crate::validate_event_name), without its
/// allocation, and with the block compares of [`any_byte`]).
#[inline]
pub(crate) fn check_event_name(name: &str) -> Result<(), EncodeError> {
    if name.is_empty() {
        return Err(EncodeError::InvalidEventName {
            reason: "it is empty",
        });
    }
    if any_byte(name.as_bytes(), |c| (c == b'\n') | (c == b'\r')) {
        return Err(EncodeError::InvalidEventName {
            reason: "it contains a line break",
        });
    }
    Ok(())
}

/// What a string value may need in each format. Found once, when the value is added to
/// [`Params`], so that encoding (on the reactor, the one thread every event goes through) only
/// copies it. A flag that is set means "look": the encoders then find out for themselves
/// (values that do need escaping, and decoded values, whose escapes nobody looked for).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct Escapes {
    /// The line format may write it quoted (see [`line`](mod@line)).
    pub line_quote: bool,
    /// A JSON string of it may have escapes (see [`jsonrpc`]).
    pub json_escape: bool,
}

impl Escapes {
    /// Not looked for: the encoders check.
    pub(crate) const MAYBE: Escapes = Escapes {
        line_quote: true,
        json_escape: true,
    };

    /// What `value` needs; `unnamed`: it has no name, or an empty one.
    pub(crate) fn of(value: &[u8], unnamed: bool) -> Escapes {
        // One pass for the common case of a value with nothing to escape in either format.
        if !any_byte(value, |c| {
            (c < 0x20) | (c == b'"') | (c == b'\'') | (c == b'\\')
        }) {
            return Escapes {
                line_quote: line::unnamed_needs_quotes(value, unnamed),
                json_escape: false,
            };
        }
        Escapes {
            line_quote: line::needs_quotes(value, unnamed),
            json_escape: jsonrpc::needs_escape(value),
        }
    }
}

/// True when `hit` holds for a byte of `v`. Checks fixed-size blocks without early exit inside
/// a block, which the compiler turns into SIMD compares (give it a branch-free `hit`: `|`, not
/// `||`); a short or ragged end is covered by one more block that overlaps the previous one, so
/// no byte-at-a-time loop runs for values of 8 bytes or more.
#[inline(always)]
pub(crate) fn any_byte(v: &[u8], hit: impl Fn(u8) -> bool + Copy) -> bool {
    #[inline(always)]
    fn block<const N: usize>(b: &[u8], hit: impl Fn(u8) -> bool) -> bool {
        let b: &[u8; N] = b.try_into().expect("a block of N bytes");
        let mut hits = 0u8;
        for &c in b {
            hits |= u8::from(hit(c));
        }
        hits != 0
    }
    const BLOCK: usize = 32;
    let n = v.len();
    if n >= BLOCK {
        let mut chunks = v.chunks_exact(BLOCK);
        if chunks.any(|b| block::<BLOCK>(b, hit)) {
            return true;
        }
        !chunks.remainder().is_empty() && block::<BLOCK>(&v[n - BLOCK..], hit)
    } else if n >= 16 {
        block::<16>(&v[..16], hit) || block::<16>(&v[n - 16..], hit)
    } else if n >= 8 {
        block::<8>(&v[..8], hit) || block::<8>(&v[n - 8..], hit)
    } else {
        v.iter().any(|&c| hit(c))
    }
}

/// A write cursor over a fixed buffer that keeps counting past its end, so an event that does
/// not fit is measured exactly in the same single pass.
pub(crate) struct Cursor<'a> {
    buf: &'a mut [u8],
    len: usize,
}

impl<'a> Cursor<'a> {
    /// A cursor over `out`, limited to [`MAX_DATAGRAM`] bytes.
    #[inline]
    pub(crate) fn new(out: &'a mut [u8]) -> Self {
        let cap = out.len().min(MAX_DATAGRAM);
        Cursor {
            buf: &mut out[..cap],
            len: 0,
        }
    }

    #[inline(always)]
    pub(crate) fn put(&mut self, bytes: &[u8]) {
        let n = bytes.len();
        // Most pieces (names, `::`, short values) are a few bytes: copy them with two
        // overlapping fixed-size moves instead of a call to `memcpy`.
        if n <= 16 {
            if let Some(dst) = self.buf.get_mut(self.len..self.len + 16) {
                match n {
                    8.. => {
                        dst[..8].copy_from_slice(&bytes[..8]);
                        dst[n - 8..n].copy_from_slice(&bytes[n - 8..]);
                    }
                    4.. => {
                        dst[..4].copy_from_slice(&bytes[..4]);
                        dst[n - 4..n].copy_from_slice(&bytes[n - 4..]);
                    }
                    1.. => {
                        // First, middle and last byte: all of 1, 2 or 3 bytes, no loop.
                        dst[0] = bytes[0];
                        dst[n / 2] = bytes[n / 2];
                        dst[n - 1] = bytes[n - 1];
                    }
                    0 => {}
                }
                self.len += n;
                return;
            }
        }
        let end = self.len + n;
        if let Some(dst) = self.buf.get_mut(self.len..end) {
            dst.copy_from_slice(bytes);
        }
        self.len = end;
    }

    #[inline(always)]
    pub(crate) fn byte(&mut self, b: u8) {
        if let Some(dst) = self.buf.get_mut(self.len) {
            *dst = b;
        }
        self.len += 1;
    }

    /// Writes `n` in signed decimal.
    #[inline]
    pub(crate) fn int(&mut self, n: i64) {
        let mut digits = [0u8; 20];
        let mut at = digits.len();
        let mut v = n.unsigned_abs();
        loop {
            at -= 1;
            digits[at] = b'0' + (v % 10) as u8;
            v /= 10;
            if v == 0 {
                break;
            }
        }
        if n < 0 {
            self.byte(b'-');
        }
        self.put(&digits[at..]);
    }

    #[inline]
    pub(crate) fn finish(self) -> Result<usize, EncodeError> {
        if self.len <= self.buf.len() {
            Ok(self.len)
        } else {
            Err(EncodeError::TooLarge {
                len: self.len,
                max: self.buf.len(),
            })
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// The same facts, one byte at a time.
    fn reference(v: &[u8], unnamed: bool) -> Escapes {
        let special = v.iter().any(|c| matches!(c, b'\'' | b'"' | b'\n' | b'\r'));
        let double_colon = v.windows(2).any(|w| w == b"::");
        Escapes {
            line_quote: special || (unnamed && (v.is_empty() || double_colon)),
            json_escape: v.iter().any(|&c| c < 0x20 || c == b'"' || c == b'\\'),
        }
    }

    /// Mostly clean bytes, so that one special byte sits anywhere in a long clean run.
    fn value() -> impl Strategy<Value = Vec<u8>> {
        let byte = prop_oneof![
            40 => Just(b'x'),
            1 => Just(b':'),
            1 => Just(b'"'),
            1 => Just(b'\''),
            1 => Just(b'\\'),
            1 => Just(b'\n'),
            1 => Just(b'\r'),
            1 => Just(b'\t'),
            1 => Just(0x1f_u8),
            1 => Just(0x7f_u8),
            2 => any::<u8>(),
        ];
        proptest::collection::vec(byte, 0..200)
    }

    /// A name with a line break would frame as several line events, an empty one as a
    /// datagram no decoder reads: the public encoders refuse both.
    #[test]
    fn public_encoders_refuse_invalid_event_names() {
        let params = Params::new().str("v", "1").unwrap();
        let mut buf = vec![0; 1024];
        for name in ["A\n\nB", "", "A\rB", "A\n"] {
            for format in Format::ALL {
                let refused = format.encode(name, &params, &mut buf);
                assert!(
                    matches!(refused, Err(EncodeError::InvalidEventName { .. })),
                    "{format} {name:?}: {refused:?}"
                );
            }
            assert!(line::encode(name, &params, &mut buf).is_err(), "{name:?}");
            assert!(
                jsonrpc::encode(name, &params, &mut buf).is_err(),
                "{name:?}"
            );
        }
        let err = Format::Line.encode("", &params, &mut buf).unwrap_err();
        assert_eq!(err.to_string(), "invalid event name: it is empty");
        // A validated name: the same bytes, with or without the check.
        let name = EventName::new("E_X").unwrap();
        for format in Format::ALL {
            let n = format.encode("E_X", &params, &mut buf).unwrap();
            let checked = buf[..n].to_vec();
            let n = format.encode_validated(&name, &params, &mut buf).unwrap();
            assert_eq!(buf[..n], checked[..], "{format}");
        }
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(2048))]
        #[test]
        fn escapes_agree_with_a_byte_by_byte_reading(v in value(), unnamed: bool) {
            prop_assert_eq!(Escapes::of(&v, unnamed), reference(&v, unnamed));
        }

        #[test]
        fn values_whose_escapes_were_not_looked_for_encode_the_same(
            v in value(),
            name in prop_oneof![Just(None), Just(Some("")), Just(Some("n"))],
        ) {
            let v = String::from_utf8_lossy(&v);
            let (mut found, mut not_looked) = (Params::new(), Params::new());
            found.push(name, crate::ValueRef::Str(&v)).unwrap();
            not_looked.push_decoded(name, crate::ValueRef::Str(&v)).unwrap();
            prop_assert_eq!(&found, &not_looked);
            for format in Format::ALL {
                let (mut a, mut b) = (vec![0; 1024], vec![0; 1024]);
                let a_len = format.encode("E", &found, &mut a).unwrap();
                let b_len = format.encode("E", &not_looked, &mut b).unwrap();
                prop_assert_eq!(&a[..a_len], &b[..b_len], "{}", format);
            }
        }
    }
}
