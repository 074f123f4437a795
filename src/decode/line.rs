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
//!   `::` is the name, unless it cannot be one (it holds `"`, `'` or `\r`: then the whole line
//!   is an unnamed value). An empty name is no name.
//! - Inside quotes `\"` is `"` and `\\` is `\`; any other `\` is literal. Quoted values may span
//!   line breaks. When a quoted value read that way does not end with `"` right before its line
//!   feed, it is re-read with 3.0.5's rule (only `\"` is an escape; 3.0.5 never escaped `\`).
//! - When neither reading finds such a closing `"`, the value is the rest of its line, raw:
//!   3.0.5 quoted only values holding a line feed, so it sent `from::"Alice" <sip:a@b>` as is.
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

use super::params::{DecodedParams, Span, SpanValue};
use super::scan::find_first;
use super::{DecodeError, DecodeErrorKind as Kind};
use crate::event::{check_param_name_len, validate_event_name, validate_param_name};
use crate::event::{Event, EventName};

/// Decodes every event in a line-format datagram.
pub fn decode(datagram: &[u8]) -> Result<Vec<Event>, DecodeError> {
    let mut events = Vec::new();
    let mut failed = None;
    Decoder::new().decode_each(datagram, |name, params| {
        // `decode_each` validated the name and param names already; keep the error path
        // anyway (no panics).
        match EventName::new(name).and_then(|name| Ok((name, params.to_params()?))) {
            Ok((name, params)) => events.push(Event::from_parts(name, params)),
            Err(e) => failed = failed.take().or(Some(e)),
        }
    })?;
    match failed {
        Some(e) => Err(DecodeError::new(0, Kind::InvalidName(e))),
        None => Ok(events),
    }
}

/// A reusable line-format decoder that does not allocate once warmed up: it keeps its notes
/// of where each parameter is and its unescaping scratch across calls, and hands out
/// [`DecodedParams`] borrowed from the datagram.
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
    /// Where the current event's parameters are.
    spans: Vec<Span>,
    /// The current event's values that had escapes, unescaped, back to back.
    scratch: String,
}

impl Decoder {
    /// A decoder with empty scratch space.
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Calls `f(name, params)` for each event in the datagram (several may be packed back to
    /// back); returns how many.
    ///
    /// The whole datagram is checked to be UTF-8 first. On any other error, the events before
    /// the malformed one have already been passed to `f`.
    pub fn decode_each(
        &mut self,
        datagram: &[u8],
        mut f: impl FnMut(&str, DecodedParams<'_>),
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
            f(
                &text[name],
                DecodedParams::spans(text, &self.scratch, &self.spans),
            );
            count += 1;
            pos = next;
        }
        Ok(count)
    }

    /// Reads one event starting at `start` into `self.spans`; returns the name's range and
    /// where the next event starts.
    fn event(&mut self, text: &str, start: usize) -> Result<(Range<usize>, usize), DecodeError> {
        let b = text.as_bytes();
        let name_end =
            find_lf(b, start).ok_or_else(|| DecodeError::new(b.len(), Kind::Truncated))?;
        let name = &text[start..name_end];
        if name.is_empty() {
            return Err(DecodeError::new(start, Kind::EmptyEventName));
        }
        validate_event_name(name).map_err(|e| DecodeError::new(start, Kind::InvalidName(e)))?;
        self.spans.clear();
        self.scratch.clear();
        let mut pos = name_end + 1;
        loop {
            match b.get(pos) {
                None => return Err(DecodeError::new(pos, Kind::Truncated)),
                Some(b'\n') => return Ok((start..name_end, pos + 1)),
                Some(b'"') => pos = self.quoted(text, None, pos)?,
                Some(_) => {
                    let (eol, colons) = line_end_and_separator(b, pos)
                        .ok_or_else(|| DecodeError::new(b.len(), Kind::Truncated))?;
                    let line = &text[pos..eol];
                    let (name, value_at) = match colons {
                        Some(i) if can_be_name(&line[..i]) => {
                            let name = (i > 0).then_some(pos..pos + i);
                            check_name(text, name.clone(), pos)?;
                            (name, pos + i + 2)
                        }
                        _ => (None, pos),
                    };
                    if value_at < eol && b[value_at] == b'"' {
                        pos = self.quoted(text, name, value_at)?;
                    } else {
                        self.spans.push(Span {
                            name,
                            value: SpanValue::Datagram(value_at..eol),
                        });
                        pos = eol + 1;
                    }
                }
            }
        }
    }

    /// Reads the quoted value opening at `quote` and notes it, named `name`; returns where
    /// the next line starts.
    fn quoted(
        &mut self,
        text: &str,
        name: Option<Range<usize>>,
        quote: usize,
    ) -> Result<usize, DecodeError> {
        // 3.0.5 did not escape `\`: its `"a\\"b<LF>c"` means `a\"b<LF>c`.
        let found = scan_quoted(text, quote, false, &mut self.scratch)
            .or_else(|| scan_quoted(text, quote, true, &mut self.scratch));
        let (value, next) = match found {
            Some((close, Some(unescaped))) => (SpanValue::Scratch(unescaped), close + 2),
            Some((close, None)) => (SpanValue::Datagram(quote + 1..close), close + 2),
            None => {
                // 3.0.5 quoted only values holding a line feed: this one is a raw value that
                // starts with `"`, to the end of its line. (Each scan stopped at the first
                // unescaped `"`, at the latest the next value's opening one: still linear
                // time.)
                let b = text.as_bytes();
                let eol =
                    find_lf(b, quote).ok_or_else(|| DecodeError::new(b.len(), Kind::Truncated))?;
                (SpanValue::Datagram(quote..eol), eol + 1)
            }
        };
        self.spans.push(Span { name, value });
        Ok(next)
    }
}

/// True when `prefix`, the text before a line's first `::`, can be a parameter name. Of the
/// model's rules (`validate_param_name`) only its bytes can fail here: it is part of one line,
/// cannot end with `:` (it ends at the first `::`) and is shorter than a datagram. Checked
/// byte by byte, not by `validate_param_name`, whose error would allocate: the decoder must
/// not, and 3.0.5 sent such lines as unnamed values (`it's::x`).
fn can_be_name(prefix: &str) -> bool {
    !prefix.bytes().any(|c| matches!(c, b'"' | b'\'' | b'\r'))
}

/// Checks the parameter name at `name` of `text`, on the line starting at `line`, as
/// [`Params`](crate::Params) would.
fn check_name(text: &str, name: Option<Range<usize>>, line: usize) -> Result<(), DecodeError> {
    let Some(name) = name else { return Ok(()) };
    let name = &text[name];
    validate_param_name(name)
        .and_then(|()| check_param_name_len(name))
        .map_err(|e| DecodeError::new(line, Kind::InvalidName(e)))
}

/// The end of the line starting at `from` (its `\n`) and the offset in it of its first `::`,
/// in one pass: most lines have no `:` at all.
fn line_end_and_separator(b: &[u8], from: usize) -> Option<(usize, Option<usize>)> {
    let mut i = from;
    loop {
        i = find_first(b, i, [b'\n', b':'], 0)?;
        if b[i] == b'\n' {
            return Some((i, None));
        }
        if b.get(i + 1) == Some(&b':') {
            return Some((find_lf(b, i + 2)?, Some(i - from)));
        }
        i += 1;
    }
}

/// The first `\n` in `b` from `from` on.
#[inline]
fn find_lf(b: &[u8], from: usize) -> Option<usize> {
    find_first(b, from, [b'\n'], 0)
}

/// Finds the closing quote of the value opening at `quote`, which must be followed by `\n`.
/// Returns its index and, when the value had escapes, where in `scratch` it was appended
/// unescaped; `None` when the first unescaped `"` is not followed by `\n`, or there is none
/// (then `scratch` is as it was). `legacy` is 3.0.5's rule: only `\"` is an escape.
fn scan_quoted(
    text: &str,
    quote: usize,
    legacy: bool,
    scratch: &mut String,
) -> Option<(usize, Option<Range<usize>>)> {
    let b = text.as_bytes();
    let start = scratch.len();
    let mut escaped = false;
    // Escapes are ASCII, so every index split at is a char boundary.
    let mut run = quote + 1;
    let mut i = quote + 1;
    while let Some(&c) = b.get(i) {
        match c {
            b'"' => {
                if b.get(i + 1) != Some(&b'\n') {
                    break;
                }
                if !escaped {
                    return Some((i, None));
                }
                scratch.push_str(&text[run..i]);
                return Some((i, Some(start..scratch.len())));
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
    scratch.truncate(start);
    None
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
        assert_eq!(kind(b"E\nv::\"a\""), (8, Kind::Truncated));
        assert_eq!(kind(b"E\nv::\"abc"), (9, Kind::Truncated));
        assert_eq!(kind(b"E\n\"a\nb"), (6, Kind::Truncated));
        assert_eq!(kind(b"E\nv::\xff\n\n"), (5, Kind::InvalidUtf8));
        assert!(matches!(kind(b"E\r\n\n"), (0, Kind::InvalidName(_))));
    }

    /// 3.0.5 quoted only values holding a line feed: others went raw, even those starting
    /// with `"`, and the text before `::` was whatever the module gave.
    #[test]
    fn opensips_305_raw_values_starting_with_a_quote_or_holding_cr() {
        assert_eq!(
            one(b"E_ACC\nfrom::\"Alice\" <sip:alice@x>\nx::1\n\n"),
            [
                s(Some("from"), "\"Alice\" <sip:alice@x>"),
                s(Some("x"), "1")
            ]
        );
        assert_eq!(
            one(b"E\n\"Alice\" <sip:a@b>\nv::\"a\" \nv::\"ab\n\"a\"::b\n\n"),
            [
                s(None, "\"Alice\" <sip:a@b>"),
                s(Some("v"), "\"a\" "),
                s(Some("v"), "\"ab"),
                s(None, "\"a\"::b"),
            ]
        );
        // Our quoted values read as before, also next to such a raw one.
        assert_eq!(
            one(b"E\nv::\"a\nb\"\nw::\"c\nx::\"d\\\"\"\n\n"),
            [
                s(Some("v"), "a\nb"),
                s(Some("w"), "\"c"),
                s(Some("x"), "d\"")
            ]
        );
        assert_eq!(
            one(b"E\nx\r::y\na\rb::c\n\n"),
            [s(None, "x\r::y"), s(None, "a\rb::c")]
        );
    }

    #[test]
    fn double_colons_are_found_by_the_byte_scan() {
        for (line, want) in [
            ("", None),
            (":", None),
            ("a:", None),
            ("::", Some(0)),
            (":::", Some(0)),
            ("a:b::c", Some(3)),
            ("a:b:c", None),
            ("ab:", None),
            ("x:y::", Some(3)),
        ] {
            assert_eq!(line.find("::"), want, "{line}");
            let with_lf = format!("{line}\nnext::x\n");
            assert_eq!(
                line_end_and_separator(with_lf.as_bytes(), 0),
                Some((line.len(), want)),
                "{line}"
            );
        }
        // Across and at the edges of the 32-byte blocks.
        for len in [0, 1, 31, 32, 33, 64, 65, 100] {
            for at in 0..len {
                let mut v = vec![b'x'; len];
                v[at] = b'\n';
                assert_eq!(find_lf(&v, 0), Some(at), "{len} {at}");
                assert_eq!(find_lf(&v, at + 1), None, "{len} {at}");
                assert_eq!(find_lf(&v, at.min(3)), Some(at), "{len} {at}");
            }
            assert_eq!(find_lf(&vec![b'x'; len], 0), None);
            assert_eq!(find_lf(&vec![b'x'; len], len + 1), None);
        }
    }

    /// Unescaped values share the decoder's scratch: each keeps its own bytes, also after a
    /// reading that failed half-way (`\\` then `"b`, re-read with 3.0.5's rule) and next
    /// to values taken as they are.
    #[test]
    fn unescaped_values_of_one_event_keep_their_own_bytes() {
        let d = b"E\nv::\"say \\\"hi\\\"\"\nw::\"a\\\\\"b\nc\"\nx::\"raw\nplain\ny::\"z\\\\\"\n\n";
        let want = [
            s(Some("v"), "say \"hi\""),
            s(Some("w"), "a\\\"b\nc"),
            s(Some("x"), "\"raw"),
            s(None, "plain"),
            s(Some("y"), "z\\"),
        ];
        assert_eq!(one(d), want);
        let mut seen = Vec::new();
        Decoder::new()
            .decode_each(d, |_, p| seen.push(p.to_vec()))
            .unwrap();
        assert_eq!(seen, [want]);
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
