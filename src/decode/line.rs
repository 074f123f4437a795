//! Decoder of the OpenSIPS `event_datagram` line format.
//!
//! ```text
//! event     = event_name '\n' (argument '\n')* '\n'
//! argument  = (arg_name '::')? arg_value
//! arg_value = not-quoted_string | '"' escaped_string '"'
//! ```
//!
//! It reads our encoder's output and what OpenSIPS 3.0.5 sent:
//!
//! - A line starting with `"` is an unnamed quoted value. Otherwise the text before the first
//!   `::` is the name, unless it holds `"` or `'` (then the whole line is an unnamed value). An
//!   empty name is no name.
//! - Inside quotes `\"` is `"` and `\\` is `\`; any other `\` is literal. Quoted values may span
//!   line breaks. When a quoted value read that way does not end with `"` right before its line
//!   feed, it is re-read with 3.0.5's rule (only `\"` is an escape; 3.0.5 never escaped `\`).
//! - Every value is a [`Value::Str`](crate::Value::Str): the format carries no types.
//! - Several events may follow each other in one datagram (coalescing).
//!
//! ```
//! use event_datagram::decode::line::decode;
//! use event_datagram::{Param, Value};
//!
//! let events = decode(b"E_TEST\nv::\"say \\\"hi\\\"\nbye\"\n\nE_B\nx\n\n")?;
//! assert_eq!(events.len(), 2);
//! assert_eq!(
//!     events[0].params().to_vec(),
//!     [Param::named("v", Value::Str("say \"hi\"\nbye".into()))]
//! );
//! assert_eq!(events[1].params().to_vec(), [Param::unnamed(Value::Str("x".into()))]);
//! # Ok::<(), event_datagram::DecodeError>(())
//! ```

use std::ops::Range;

use super::{DecodeError, DecodeErrorKind as Kind};
use crate::event::{validate_event_name, Event, EventName, Params, ValueRef};

/// Decodes every event in a line-format datagram.
pub fn decode(datagram: &[u8]) -> Result<Vec<Event>, DecodeError> {
    let mut events = Vec::new();
    let mut failed = None;
    Decoder::new().decode_each(datagram, |name, params| {
        // `decode_each` validated the name already; keep the error path anyway (no panics).
        match EventName::new(name) {
            Ok(name) => events.push(Event::from_parts(name, params.clone())),
            Err(e) => failed = failed.take().or(Some(e)),
        }
    })?;
    match failed {
        Some(e) => Err(DecodeError::new(0, Kind::InvalidName(e))),
        None => Ok(events),
    }
}

/// A reusable line-format decoder that does not allocate once warmed up: it keeps its
/// [`Params`] and unescaping scratch across calls.
///
/// ```
/// use event_datagram::decode::line::Decoder;
///
/// let mut decoder = Decoder::new();
/// let mut seen = Vec::new();
/// let n = decoder.decode_each(b"E_A\n\nE_B\nx::1\n\n", |name, params| {
///     seen.push((name.to_owned(), params.len()));
/// })?;
/// assert_eq!(n, 2);
/// assert_eq!(seen, [("E_A".to_owned(), 0), ("E_B".to_owned(), 1)]);
/// # Ok::<(), event_datagram::DecodeError>(())
/// ```
#[derive(Debug, Default)]
pub struct Decoder {
    params: Params,
    scratch: String,
}

impl Decoder {
    /// A decoder with empty scratch space.
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Calls `f(name, &params)` for each event in the datagram (several may be packed back to
    /// back); returns how many.
    ///
    /// The whole datagram is checked to be UTF-8 first. On any other error, the events before
    /// the malformed one have already been passed to `f`.
    pub fn decode_each(
        &mut self,
        datagram: &[u8],
        mut f: impl FnMut(&str, &Params),
    ) -> Result<usize, DecodeError> {
        if datagram.is_empty() {
            return Err(DecodeError::new(0, Kind::Empty));
        }
        let text = std::str::from_utf8(datagram)
            .map_err(|e| DecodeError::new(e.valid_up_to(), Kind::InvalidUtf8))?;
        let mut pos = 0;
        let mut count = 0;
        while pos < text.len() {
            let (name, next) = self.event(text, pos)?;
            f(&text[name], &self.params);
            count += 1;
            pos = next;
        }
        Ok(count)
    }

    /// Reads one event starting at `start` into `self.params`; returns the name's range and
    /// where the next event starts.
    fn event(&mut self, text: &str, start: usize) -> Result<(Range<usize>, usize), DecodeError> {
        let b = text.as_bytes();
        let name_end = find_lf(b, start).ok_or(DecodeError::new(b.len(), Kind::Truncated))?;
        let name = &text[start..name_end];
        if name.is_empty() {
            return Err(DecodeError::new(start, Kind::EmptyEventName));
        }
        validate_event_name(name).map_err(|e| DecodeError::new(start, Kind::InvalidName(e)))?;
        self.params.clear();
        let mut pos = name_end + 1;
        loop {
            match b.get(pos) {
                None => return Err(DecodeError::new(pos, Kind::Truncated)),
                Some(b'\n') => return Ok((start..name_end, pos + 1)),
                Some(b'"') => pos = self.quoted(text, None, pos, pos)?,
                Some(_) => {
                    let eol = find_lf(b, pos).ok_or(DecodeError::new(b.len(), Kind::Truncated))?;
                    let line = &text[pos..eol];
                    let (name, value_at) = match line.find("::") {
                        Some(i) if !line[..i].bytes().any(|c| c == b'"' || c == b'\'') => {
                            (Some(&line[..i]).filter(|n| !n.is_empty()), pos + i + 2)
                        }
                        _ => (None, pos),
                    };
                    if value_at < eol && b[value_at] == b'"' {
                        pos = self.quoted(text, name, pos, value_at)?;
                    } else {
                        push(&mut self.params, name, &text[value_at..eol], pos)?;
                        pos = eol + 1;
                    }
                }
            }
        }
    }

    /// Reads the quoted value opening at `quote` (its line starts at `line`) and appends it;
    /// returns where the next line starts.
    fn quoted(
        &mut self,
        text: &str,
        name: Option<&str>,
        line: usize,
        quote: usize,
    ) -> Result<usize, DecodeError> {
        let (close, escaped) = match scan_quoted(text, quote, false, &mut self.scratch) {
            Ok(found) => found,
            // 3.0.5 did not escape `\`: its `"a\\"b<LF>c"` means `a\"b<LF>c`.
            Err(ours) => scan_quoted(text, quote, true, &mut self.scratch).map_err(|_| ours)?,
        };
        let value = if escaped {
            self.scratch.as_str()
        } else {
            &text[quote + 1..close]
        };
        push(&mut self.params, name, value, line)?;
        Ok(close + 2)
    }
}

fn push(
    params: &mut Params,
    name: Option<&str>,
    value: &str,
    at: usize,
) -> Result<(), DecodeError> {
    params
        .push(name, ValueRef::Str(value))
        .map_err(|e| DecodeError::new(at, Kind::InvalidName(e)))
}

fn find_lf(b: &[u8], from: usize) -> Option<usize> {
    b.get(from..)?
        .iter()
        .position(|&c| c == b'\n')
        .map(|i| from + i)
}

/// Finds the closing quote of the value opening at `quote`, which must be followed by `\n`.
/// Returns its index and whether the value had escapes (then it is unescaped in `scratch`).
/// `legacy` is 3.0.5's rule: only `\"` is an escape.
fn scan_quoted(
    text: &str,
    quote: usize,
    legacy: bool,
    scratch: &mut String,
) -> Result<(usize, bool), DecodeError> {
    let b = text.as_bytes();
    scratch.clear();
    let mut escaped = false;
    // Escapes are ASCII, so every index split at is a char boundary.
    let mut run = quote + 1;
    let mut i = quote + 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => {
                if escaped {
                    scratch.push_str(&text[run..i]);
                }
                return match b.get(i + 1) {
                    Some(b'\n') => Ok((i, escaped)),
                    None => Err(DecodeError::new(i + 1, Kind::Truncated)),
                    Some(_) => Err(DecodeError::new(i + 1, Kind::AfterClosingQuote)),
                };
            }
            b'\\'
                if matches!(b.get(i + 1), Some(b'"'))
                    || (!legacy && b.get(i + 1) == Some(&b'\\')) =>
            {
                // Drop the backslash; the escaped byte starts the next run.
                scratch.push_str(&text[run..i]);
                escaped = true;
                run = i + 1;
                i += 2;
            }
            _ => i += 1,
        }
    }
    Err(DecodeError::new(quote, Kind::UnterminatedQuote))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{Param, Value};

    fn one(d: &[u8]) -> Vec<Param> {
        let events = decode(d).unwrap();
        assert_eq!(events.len(), 1);
        events[0].params().to_vec()
    }

    fn s(name: Option<&str>, v: &str) -> Param {
        Param {
            name: name.map(str::to_owned),
            value: Value::Str(v.to_owned()),
        }
    }

    fn kind(d: &[u8]) -> (usize, Kind) {
        let e = decode(d).unwrap_err();
        (e.offset(), e.kind().clone())
    }

    #[test]
    fn names_and_values() {
        assert_eq!(
            one(b"E\nip::1.2.3.4\nx\nv::a::b\n::c\n::\nip::::1\n\n"),
            [
                s(Some("ip"), "1.2.3.4"),
                s(None, "x"),
                s(Some("v"), "a::b"),
                s(None, "c"),
                s(None, ""),
                s(Some("ip"), "::1"),
            ]
        );
        // Quotes or apostrophes before the first `::` make the whole line a value.
        assert_eq!(
            one(b"E\na\"b::c\nit's::x\n\n"),
            [s(None, "a\"b::c"), s(None, "it's::x")]
        );
    }

    #[test]
    fn quoted_values() {
        assert_eq!(one(b"E\n\"\"\n\n"), [s(None, "")]);
        assert_eq!(one(b"E\n\"a::b\"\n\n"), [s(None, "a::b")]);
        assert_eq!(one(b"E\nv::\"a\n\nb\"\n\n"), [s(Some("v"), "a\n\nb")]);
        assert_eq!(one(b"E\nv::\"a\\\\\n\"\n\n"), [s(Some("v"), "a\\\n")]);
        assert_eq!(one(b"E\nv::\"a\\nb\"\n\n"), [s(Some("v"), "a\\nb")]);
        // 3.0.5: `\\"` was a raw backslash then an escaped quote.
        assert_eq!(
            one(b"E\nv::\"a\\\\\"b\nc\"\n\n"),
            [s(Some("v"), "a\\\"b\nc")]
        );
    }

    #[test]
    fn errors() {
        assert_eq!(kind(b""), (0, Kind::Empty));
        assert_eq!(kind(b"E\n"), (2, Kind::Truncated));
        assert_eq!(kind(b"E"), (1, Kind::Truncated));
        assert_eq!(kind(b"E\nx\n"), (4, Kind::Truncated));
        assert_eq!(kind(b"\n\n"), (0, Kind::EmptyEventName));
        assert_eq!(kind(b"E\n\n\n"), (3, Kind::EmptyEventName));
        assert_eq!(kind(b"E\nv::\"abc\n\n"), (5, Kind::UnterminatedQuote));
        assert_eq!(kind(b"E\nv::\"a\"b\n\n"), (8, Kind::AfterClosingQuote));
        assert_eq!(kind(b"E\nv::\"a\""), (8, Kind::Truncated));
        assert_eq!(kind(b"E\nv::\xff\n\n"), (5, Kind::InvalidUtf8));
        assert!(matches!(kind(b"E\r\n\n"), (0, Kind::InvalidName(_))));
        assert!(matches!(kind(b"E\na\rb::c\n\n"), (2, Kind::InvalidName(_))));
    }

    #[test]
    fn decoder_reuses_its_params() {
        let mut d = Decoder::new();
        let mut names = Vec::new();
        let n = d
            .decode_each(b"E_A\nx\n\nE_B\n\n", |name, p| {
                names.push((name.to_owned(), p.len()))
            })
            .unwrap();
        assert_eq!(n, 2);
        assert_eq!(names, [("E_A".to_owned(), 1), ("E_B".to_owned(), 0)]);
    }
}
