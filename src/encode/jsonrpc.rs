//! OpenSIPS 3.1+ JSON-RPC 2.0 notifications.
//!
//! `{"jsonrpc":"2.0","method":"E_TEST","params":{"a":1,"b":"x"}}`: compact, no `id`, no
//! trailing newline; `params` is omitted when there are none, an object when the first parameter
//! is named (unnamed ones get the key `""`), an array when it is unnamed (names dropped). Keys keep
//! the parameters' order, duplicates included. Strings are escaped as OpenSIPS (cJSON) does:
//! `\"`, `\\`, `\b`, `\f`, `\n`, `\r`, `\t`, other control bytes as `\u00xx`; UTF-8 and `/` raw.
//!
//! ```
//! use event_datagram::{encode, Params, MAX_DATAGRAM};
//!
//! let mut buf = [0u8; MAX_DATAGRAM];
//! let params = Params::new().int("a", 1)?.str("b", "x")?;
//! let n = encode::jsonrpc::encode("E_TEST", &params, &mut buf)?;
//! assert_eq!(&buf[..n], br#"{"jsonrpc":"2.0","method":"E_TEST","params":{"a":1,"b":"x"}}"#);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use super::Cursor;
use crate::error::EncodeError;
use crate::event::{Params, RawValue};

/// Encodes `name` and `params` as one JSON-RPC notification into `out`; returns its length.
///
/// Errors: [`EncodeError::InvalidEventName`] for a name that is not a valid
/// [`EventName`](crate::EventName) (empty, or with a line break: decoders refuse it), or
/// [`EncodeError::TooLarge`].
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
    let mut w = Cursor::new(out);
    w.put(br#"{"jsonrpc":"2.0","method":"#);
    put_string(&mut w, name.as_bytes());
    if !params.is_empty() {
        let as_object = params.first_is_named();
        w.put(if as_object {
            br#","params":{"#
        } else {
            br#","params":["#
        });
        for (i, p) in params.raw().enumerate() {
            if i > 0 {
                w.byte(b',');
            }
            if as_object {
                put_string(&mut w, p.name.unwrap_or(b""));
                w.byte(b':');
            }
            match p.value {
                RawValue::Int(n) => w.int(n),
                // Most values were found to need no escapes when they were added (`Escapes`);
                // `put_string` finds the escapes of the others.
                RawValue::Str(s, escapes) if escapes.json_escape => put_string(&mut w, s),
                RawValue::Str(s, _) => {
                    w.byte(b'"');
                    w.put(s);
                    w.byte(b'"');
                }
            }
        }
        w.byte(if as_object { b'}' } else { b']' });
    }
    w.byte(b'}');
    w.finish()
}

/// What a byte becomes inside a JSON string: 0 = itself, `u` = `\u00xx`, else `\` + that byte.
static ESCAPE: [u8; 256] = {
    let mut t = [0u8; 256];
    let mut i = 0;
    while i < 0x20 {
        t[i] = b'u';
        i += 1;
    }
    t[0x08] = b'b';
    t[0x09] = b't';
    t[0x0a] = b'n';
    t[0x0c] = b'f';
    t[0x0d] = b'r';
    t[b'"' as usize] = b'"';
    t[b'\\' as usize] = b'\\';
    t
};

/// True when a JSON string of `s` has escapes.
pub(crate) fn needs_escape(s: &[u8]) -> bool {
    super::any_byte(s, |b| (b < 0x20) | (b == b'"') | (b == b'\\'))
}

/// Writes `s` as a quoted JSON string.
#[inline]
fn put_string(w: &mut Cursor<'_>, s: &[u8]) {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    /// Bytes per clean-run check; a chunk without a byte to escape is skipped with SIMD compares.
    const CHUNK: usize = 32;
    #[inline(always)]
    fn escaped(b: u8) -> bool {
        // Non-short-circuit `|`: branch-free, so the chunk loop becomes SIMD compares.
        (b < 0x20) | (b == b'"') | (b == b'\\')
    }
    w.byte(b'"');
    let mut run = 0;
    let mut i = 0;
    while i < s.len() {
        if let Some(chunk) = s.get(i..i + CHUNK) {
            let mut hits = 0u8;
            for &b in chunk {
                hits |= u8::from(escaped(b));
            }
            if hits == 0 {
                i += CHUNK;
                continue;
            }
        }
        let end = (i + CHUNK).min(s.len());
        for (j, &b) in s[i..end].iter().enumerate() {
            let esc = ESCAPE[b as usize];
            if esc == 0 {
                continue;
            }
            let at = i + j;
            w.put(&s[run..at]);
            if esc == b'u' {
                w.put(&[
                    b'\\',
                    b'u',
                    b'0',
                    b'0',
                    HEX[(b >> 4) as usize],
                    HEX[(b & 15) as usize],
                ]);
            } else {
                w.put(&[b'\\', esc]);
            }
            run = at + 1;
        }
        i = end;
    }
    w.put(&s[run..]);
    w.byte(b'"');
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::MAX_DATAGRAM;

    fn enc(params: Params) -> String {
        let mut buf = vec![0; MAX_DATAGRAM];
        let n = encode("E_TEST", &params, &mut buf).unwrap();
        String::from_utf8(buf[..n].to_vec()).unwrap()
    }

    #[test]
    fn shapes() {
        assert_eq!(enc(Params::new()), r#"{"jsonrpc":"2.0","method":"E_TEST"}"#);
        let p = Params::new()
            .unnamed_str("a")
            .unwrap()
            .str("n", "b")
            .unwrap();
        assert_eq!(
            enc(p),
            r#"{"jsonrpc":"2.0","method":"E_TEST","params":["a","b"]}"#
        );
        let p = Params::new()
            .str("n", "a")
            .unwrap()
            .unnamed_int(-1)
            .unwrap();
        assert_eq!(
            enc(p),
            r#"{"jsonrpc":"2.0","method":"E_TEST","params":{"n":"a","":-1}}"#
        );
    }

    #[test]
    fn escapes_like_cjson() {
        let p = Params::new()
            .str("v", "\u{8}\u{c}\t\r\n\u{0}\u{7f}\"\\/é")
            .unwrap();
        assert_eq!(
            enc(p),
            "{\"jsonrpc\":\"2.0\",\"method\":\"E_TEST\",\"params\":{\"v\":\"\\b\\f\\t\\r\\n\\u0000\u{7f}\\\"\\\\/é\"}}"
        );
    }

    #[test]
    fn long_strings_escape_like_serde_json_across_chunk_boundaries() {
        // Escapes at, before and after the 32-byte scan chunks' edges, and clean chunks between.
        let mut s = String::new();
        for i in 0..200u32 {
            s.push(match i % 37 {
                0 => '"',
                5 => '\\',
                31 => '\n',
                32 => '\u{1}',
                _ => char::from(b'a' + (i % 26) as u8),
            });
        }
        for len in [0, 1, 31, 32, 33, 63, 64, 65, 199, 200] {
            let v = &s[..len];
            let out = enc(Params::new().str("v", v).unwrap());
            let want = format!(
                r#"{{"jsonrpc":"2.0","method":"E_TEST","params":{{"v":{}}}}}"#,
                serde_json::to_string(v).unwrap()
            );
            assert_eq!(out, want, "len {len}");
        }
    }

    #[test]
    fn output_is_json_that_serde_reads_back() {
        let p = Params::new()
            .str("a\\b", "x\u{1}y")
            .unwrap()
            .int("n", i64::MIN)
            .unwrap();
        let v: serde_json::Value = serde_json::from_str(&enc(p)).unwrap();
        assert_eq!(v["params"]["a\\b"], "x\u{1}y");
        assert_eq!(v["params"]["n"], i64::MIN);
    }
}
