//! The OpenSIPS `event_datagram` line format.
//!
//! ```text
//! event     = event_name '\n' (argument '\n')* '\n'
//! argument  = (arg_name '::')? arg_value
//! arg_value = not-quoted_string | '"' escaped_string '"'
//! ```
//!
//! A string is written raw unless it holds `'`, `"`, `\n` or `\r`, or it is unnamed and empty
//! (it would read as the closing empty line) or holds `::` (it would read as a name); then it
//! is quoted, with `\` written as `\\` and `"` as `\"`. An empty name is written as no name.
//!
//! ```
//! use event_datagram::{encode, Params, MAX_DATAGRAM};
//!
//! let mut buf = [0u8; MAX_DATAGRAM];
//! let params = Params::new().str("ip", "192.168.2.11")?;
//! let n = encode::line::encode("E_PIKE_BLOCKED", &params, &mut buf)?;
//! assert_eq!(&buf[..n], b"E_PIKE_BLOCKED\nip::192.168.2.11\n\n");
//!
//! let params = Params::new().str("v", "say \"hi\"\nbye")?;
//! let n = encode::line::encode("E_TEST", &params, &mut buf)?;
//! assert_eq!(&buf[..n], b"E_TEST\nv::\"say \\\"hi\\\"\nbye\"\n\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::Cursor;
use crate::error::EncodeError;
use crate::event::{Params, RawValue};

/// Encodes `name` and `params` as one line-format datagram into `out`; returns its length.
///
/// [`Params`] are validated when built. Errors: [`EncodeError::InvalidEventName`] for a name
/// that is not a valid [`EventName`](crate::EventName) (empty, or with a line break that would
/// frame as several events), [`EncodeError::TooLarge`], or [`EncodeError::ParamNameNotLine`]
/// for params decoded from `jsonrpc` with a name this format cannot carry.
#[inline]
pub fn encode(name: &str, params: &Params, out: &mut [u8]) -> Result<usize, EncodeError> {
    super::check_event_name(name)?;
    encode_unchecked(name, params, out)
}

/// [`encode`] for a name known to be valid (an [`EventName`](crate::EventName)'s).
pub(crate) fn encode_unchecked(
    name: &str,
    params: &Params,
    out: &mut [u8],
) -> Result<usize, EncodeError> {
    if !params.line_names() {
        return Err(EncodeError::ParamNameNotLine);
    }
    let mut w = Cursor::new(out);
    w.put(name.as_bytes());
    w.byte(b'\n');
    for p in params.raw() {
        let name = p.name.filter(|n| !n.is_empty());
        if let Some(name) = name {
            w.put(name);
            w.put(b"::");
        }
        match p.value {
            RawValue::Int(n) => w.int(n),
            // Most values were found not to need quotes when they were added (`Escapes`).
            RawValue::Str(s, escapes) if escapes.line_quote && needs_quotes(s, name.is_none()) => {
                put_quoted(&mut w, s)
            }
            RawValue::Str(s, _) => w.put(s),
        }
        w.byte(b'\n');
    }
    w.byte(b'\n');
    w.finish()
}

/// True when a value must be quoted to read back as itself; `unnamed`: it has no name, or an
/// empty one (which is written as none).
pub(crate) fn needs_quotes(v: &[u8], unnamed: bool) -> bool {
    unnamed_needs_quotes(v, unnamed) || has_special(v)
}

/// True when an unnamed value would misread without quotes: empty (it would read as the
/// closing empty line) or holding `::` (it would read as a name).
pub(crate) fn unnamed_needs_quotes(v: &[u8], unnamed: bool) -> bool {
    // Most values have no `:` at all, which one SIMD pass tells (pairs take a slower one).
    unnamed && (v.is_empty() || (super::any_byte(v, |c| c == b':') && has_double_colon(v)))
}

/// True when `v` holds `::`. No early exit, so the compiler makes SIMD compares of it (the
/// `windows(2).any` it replaces went byte by byte through every unnamed value).
fn has_double_colon(v: &[u8]) -> bool {
    let Some(rest) = v.get(1..) else { return false };
    v.iter()
        .zip(rest)
        .fold(false, |hit, (&a, &b)| hit | ((a == b':') & (b == b':')))
}

/// True when `v` holds `'`, `"`, `\n` or `\r`.
fn has_special(v: &[u8]) -> bool {
    super::any_byte(v, |c| {
        (c == b'\'') | (c == b'"') | (c == b'\n') | (c == b'\r')
    })
}

/// Writes `"v"` with `\` and `"` escaped by a backslash; line breaks stay raw.
fn put_quoted(w: &mut Cursor<'_>, v: &[u8]) {
    w.byte(b'"');
    let mut run = 0;
    for (i, &b) in v.iter().enumerate() {
        if b == b'"' || b == b'\\' {
            w.put(&v[run..i]);
            w.byte(b'\\');
            run = i;
        }
    }
    w.put(&v[run..]);
    w.byte(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_DATAGRAM;

    fn enc(params: Params) -> Vec<u8> {
        let mut buf = vec![0; MAX_DATAGRAM];
        let n = encode("E_TEST", &params, &mut buf).unwrap();
        buf.truncate(n);
        buf
    }

    #[test]
    fn design_examples() {
        assert_eq!(enc(Params::new()), b"E_TEST\n\n");
        let p = Params::new()
            .unnamed_str("abc")
            .unwrap()
            .unnamed_int(7)
            .unwrap();
        assert_eq!(
            enc(p.unnamed_str("x y").unwrap()),
            b"E_TEST\nabc\n7\nx y\n\n"
        );
        assert_eq!(
            enc(Params::new().str("v", "a\nb").unwrap()),
            b"E_TEST\nv::\"a\nb\"\n\n"
        );
        assert_eq!(
            enc(Params::new().str("v", "a::b").unwrap()),
            b"E_TEST\nv::a::b\n\n"
        );
        assert_eq!(
            enc(Params::new().str("v", "a,b").unwrap()),
            b"E_TEST\nv::a,b\n\n"
        );
        assert_eq!(enc(Params::new().str("v", "").unwrap()), b"E_TEST\nv::\n\n");
        assert_eq!(
            enc(Params::new().int("n", -7).unwrap()),
            b"E_TEST\nn::-7\n\n"
        );
    }

    #[test]
    fn unnamed_values_that_would_misread_are_quoted() {
        assert_eq!(
            enc(Params::new().unnamed_str("").unwrap()),
            b"E_TEST\n\"\"\n\n"
        );
        assert_eq!(
            enc(Params::new().unnamed_str("a::b").unwrap()),
            b"E_TEST\n\"a::b\"\n\n"
        );
        // An empty name is written as no name, so the unnamed rules apply.
        assert_eq!(enc(Params::new().str("", "").unwrap()), b"E_TEST\n\"\"\n\n");
    }

    #[test]
    fn backslashes_are_escaped_only_inside_quotes() {
        assert_eq!(
            enc(Params::new().str("v", "a\\b").unwrap()),
            b"E_TEST\nv::a\\b\n\n"
        );
        assert_eq!(
            enc(Params::new().str("v", "a\\\n").unwrap()),
            b"E_TEST\nv::\"a\\\\\n\"\n\n"
        );
        assert_eq!(
            enc(Params::new().str("v", "it's").unwrap()),
            b"E_TEST\nv::\"it's\"\n\n"
        );
    }

    #[test]
    fn specials_are_found_anywhere_in_long_values() {
        for len in [1, 7, 8, 9, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100] {
            for at in [0, len / 2, len - 1] {
                for special in ['\'', '"', '\n', '\r'] {
                    let mut v: Vec<char> = vec!['x'; len];
                    v[at] = special;
                    let v: String = v.into_iter().collect();
                    let out = enc(Params::new().str("v", &v).unwrap());
                    assert_eq!(out[10], b'"', "len {len}, {special:?} at {at}");
                }
            }
            let clean = "x".repeat(len);
            let out = enc(Params::new().str("v", &clean).unwrap());
            assert_eq!(out, format!("E_TEST\nv::{clean}\n\n").as_bytes());
        }
    }

    #[test]
    fn extreme_ints() {
        let p = Params::new()
            .int("a", i64::MIN)
            .unwrap()
            .int("b", i64::MAX)
            .unwrap();
        assert_eq!(
            enc(p),
            b"E_TEST\na::-9223372036854775808\nb::9223372036854775807\n\n"
        );
    }
}
