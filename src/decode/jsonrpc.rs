//! Decoder of OpenSIPS 3.1+ JSON-RPC 2.0 notifications.
//!
//! `{"jsonrpc":"2.0","method":"E_TEST","params":{"a":1,"b":"x"}}`: `"jsonrpc":"2.0"` and a string
//! `method` are required, `params` is optional, an `id` is accepted and ignored, any other member
//! is an error. Object params become named parameters in the order they appear, duplicate keys
//! kept (the key `""` is the name `""`); array params become unnamed ones. Any key is a name
//! (OpenSIPS takes them from the script or module that raises the event), even one the line
//! format cannot carry, such as `it's` or `a::b`: such an event encodes to `jsonrpc` again, and
//! to `line` it is [`EncodeError::ParamNameNotLine`](crate::EncodeError). Values must be
//! strings or integers in the `i64` range. Several notifications may follow each other, with
//! or without whitespace between them (coalescing).
//!
//! ```
//! use event_datagram::decode::jsonrpc::decode;
//! use event_datagram::{Param, Value};
//!
//! let events = decode(br#"{"jsonrpc":"2.0","method":"E_A","params":{"k":1,"k":"x"}} {"jsonrpc":"2.0","method":"E_B"}"#)?;
//! assert_eq!(events.len(), 2);
//! assert_eq!(
//!     events[0].params().to_vec(),
//!     [Param::named("k", Value::Int(1)), Param::named("k", Value::Str("x".into()))]
//! );
//! assert!(events[1].params().is_empty());
//! # Ok::<(), event_datagram::DecodeError>(())
//! ```

use std::cell::RefCell;
use std::fmt;

use serde::de::{self, DeserializeSeed, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde::Deserialize;

use super::params::{DecodedParams, Span, SpanValue};
use super::scan::find_first;
use super::{DecodeError, DecodeErrorKind as Kind};
use crate::error::EventError;
use crate::event::{Event, EventName, Params, Value, ValueRef, MAX_PARAM_NAME_LEN};

/// Decodes every notification in a `jsonrpc` datagram.
pub fn decode(datagram: &[u8]) -> Result<Vec<Event>, DecodeError> {
    decode_counting(datagram).map_err(|(_, e)| e)
}

/// [`decode`], whose error also says how many notifications were read whole before it:
/// [`DecodeFormat::Auto`](super::DecodeFormat::Auto) tries the line decoder only when none was.
pub(super) fn decode_counting(datagram: &[u8]) -> Result<Vec<Event>, (usize, DecodeError)> {
    if datagram.iter().all(|&b| is_json_space(b)) {
        return Err((0, DecodeError::new(0, Kind::Empty)));
    }
    std::str::from_utf8(datagram)
        .map_err(|e| (0, DecodeError::new(e.valid_up_to(), Kind::InvalidUtf8)))?;
    PENDING.with(|p| p.borrow_mut().take());
    let mut events = Vec::new();
    for item in serde_json::Deserializer::from_slice(datagram).into_iter::<Notification>() {
        match item {
            Ok(Notification(event)) => events.push(event),
            Err(e) => return Err((events.len(), convert(datagram, &e))),
        }
    }
    Ok(events)
}

/// A reusable `jsonrpc` decoder that, once warmed up, does not allocate for notifications as
/// our encoder writes them: it keeps its notes of where each parameter is across calls and
/// hands out [`DecodedParams`] borrowed from the datagram.
///
/// Its fast path reads the compact shape [`encode::jsonrpc`](crate::encode::jsonrpc) writes
/// (`"jsonrpc"`, `"method"`, then optional `"params"`, no whitespace inside, strings without
/// escapes, integers). Any other notification, valid or not, goes through the complete decoder
/// of [`decode`], so both accept the same datagrams, give the same events and the same errors.
///
/// ```
/// use event_datagram::decode::jsonrpc::Decoder;
///
/// let mut decoder = Decoder::new();
/// let mut seen = Vec::new();
/// let d = br#"{"jsonrpc":"2.0","method":"E_A","params":["x",1]}{"jsonrpc":"2.0","method":"E_B"}"#;
/// let n = decoder.decode_each(d, |name, params| seen.push((name.to_owned(), params.len())))?;
/// assert_eq!(n, 2);
/// assert_eq!(seen, [("E_A".to_owned(), 2), ("E_B".to_owned(), 0)]);
/// # Ok::<(), event_datagram::DecodeError>(())
/// ```
#[derive(Debug, Default)]
pub struct Decoder {
    /// Where the current notification's parameters are.
    spans: Vec<Span>,
}

impl Decoder {
    /// A decoder with empty scratch space.
    pub fn new() -> Self {
        Decoder::default()
    }

    /// Calls `f(name, params)` for each notification in the datagram (several may follow each
    /// other, with or without whitespace between them); returns how many.
    ///
    /// The whole datagram is checked to be UTF-8 first. On any other error, the notifications
    /// before the malformed one have already been passed to `f`.
    pub fn decode_each(
        &mut self,
        datagram: &[u8],
        mut f: impl FnMut(&str, DecodedParams<'_>),
    ) -> Result<usize, DecodeError> {
        if datagram.iter().all(|&b| is_json_space(b)) {
            return Err(DecodeError::new(0, Kind::Empty));
        }
        let text = std::str::from_utf8(datagram)
            .map_err(|e| DecodeError::new(e.valid_up_to(), Kind::InvalidUtf8))?;
        let mut count = 0;
        let mut pos = skip_space(datagram, 0);
        while pos < datagram.len() {
            match self.compact(text, pos) {
                Some((name, end)) => {
                    f(&text[name], DecodedParams::spans(text, "", &self.spans));
                    count += 1;
                    pos = skip_space(datagram, end);
                }
                None => return Ok(count + slow_each(datagram, pos, &mut f)?),
            }
        }
        Ok(count)
    }

    /// Reads one notification of the compact shape at `at` into `self.spans`; returns its
    /// name's range and where it ends, or `None` when it is not of that shape.
    ///
    /// Strings are sliced from `text` at their quotes (ASCII, so always char boundaries):
    /// `text` is known to be UTF-8, checking each string again cost as much as the parse.
    fn compact(&mut self, text: &str, at: usize) -> Option<(std::ops::Range<usize>, usize)> {
        let d = text.as_bytes();
        const HEAD: &[u8] = br#"{"jsonrpc":"2.0","method":""#;
        let mut pos = at + HEAD.len();
        if d.get(at..pos)? != HEAD {
            return None;
        }
        let name = plain_string_end(d, pos)?;
        let name_range = pos..name;
        crate::event::validate_event_name(&text[name_range.clone()]).ok()?;
        pos = name + 1;
        self.spans.clear();
        match d.get(pos)? {
            b'}' => return Some((name_range, pos + 1)),
            b',' => {}
            _ => return None,
        }
        const PARAMS: &[u8] = br#","params":"#;
        if d.get(pos..pos + PARAMS.len())? != PARAMS {
            return None;
        }
        pos += PARAMS.len();
        let (object, close) = match d.get(pos)? {
            b'{' => (true, b'}'),
            b'[' => (false, b']'),
            _ => return None,
        };
        pos += 1;
        if d.get(pos) == Some(&close) {
            pos += 1;
        } else {
            loop {
                let key = if object {
                    if d.get(pos) != Some(&b'"') {
                        return None;
                    }
                    let end = plain_string_end(d, pos + 1)?;
                    let key = pos + 1..end;
                    // Any key is a name; one too long for `Params` is the complete
                    // decoder's error (not built here only to be dropped: it copies the key).
                    if key.len() > MAX_PARAM_NAME_LEN {
                        return None;
                    }
                    if d.get(end + 1) != Some(&b':') {
                        return None;
                    }
                    pos = end + 2;
                    Some(key)
                } else {
                    None
                };
                let (value, end) = match d.get(pos)? {
                    b'"' => {
                        let end = plain_string_end(d, pos + 1)?;
                        (SpanValue::Datagram(pos + 1..end), end + 1)
                    }
                    _ => {
                        let (n, end) = plain_int(d, pos)?;
                        (SpanValue::Int(n), end)
                    }
                };
                self.spans.push(Span { name: key, value });
                pos = end;
                match d.get(pos)? {
                    b',' => pos += 1,
                    &c if c == close => {
                        pos += 1;
                        break;
                    }
                    _ => return None,
                }
            }
        }
        (d.get(pos)? == &b'}').then_some((name_range, pos + 1))
    }
}

/// The index of the `"` closing a string whose content starts at `from`, if the string has
/// no escape and no control byte (both are left to the complete decoder).
#[inline]
fn plain_string_end(d: &[u8], from: usize) -> Option<usize> {
    find_first(d, from, [b'"', b'\\'], 0x20).filter(|&end| d[end] == b'"')
}

/// An integer in the `i64` range at `at` in JSON's syntax, followed by a byte that ends a
/// value; returns it and where it ends. `-0`, fractions and exponents are left to the complete
/// decoder.
#[inline]
fn plain_int(d: &[u8], at: usize) -> Option<(i64, usize)> {
    let negative = d.get(at) == Some(&b'-');
    let mut pos = at + usize::from(negative);
    let first = *d.get(pos)?;
    if !first.is_ascii_digit() || (first == b'0' && negative) {
        return None;
    }
    let mut v: u64 = 0;
    while let Some(&c) = d.get(pos).filter(|c| c.is_ascii_digit()) {
        v = v.checked_mul(10)?.checked_add(u64::from(c - b'0'))?;
        pos += 1;
        if first == b'0' {
            break;
        }
    }
    if !matches!(d.get(pos), Some(b',' | b'}' | b']')) {
        return None;
    }
    let n = if negative {
        0i64.checked_sub_unsigned(v)?
    } else {
        i64::try_from(v).ok()?
    };
    Some((n, pos))
}

fn skip_space(d: &[u8], mut pos: usize) -> usize {
    while d.get(pos).is_some_and(|&b| is_json_space(b)) {
        pos += 1;
    }
    pos
}

/// The complete decoder from byte `at` on, passing each event to `f`; error offsets are in
/// the whole datagram.
fn slow_each(
    datagram: &[u8],
    at: usize,
    f: &mut impl FnMut(&str, DecodedParams<'_>),
) -> Result<usize, DecodeError> {
    let rest = &datagram[at..];
    PENDING.with(|p| p.borrow_mut().take());
    let mut count = 0;
    for item in serde_json::Deserializer::from_slice(rest).into_iter::<Notification>() {
        match item {
            Ok(Notification(event)) => {
                f(event.name().as_str(), DecodedParams::packed(event.params()));
                count += 1;
            }
            Err(e) => {
                let e = convert(rest, &e);
                return Err(DecodeError::new(at + e.offset(), e.kind().clone()));
            }
        }
    }
    Ok(count)
}

fn is_json_space(b: u8) -> bool {
    matches!(b, b' ' | b'\t' | b'\n' | b'\r')
}

thread_local! {
    /// The precise error a visitor failed with: serde's error type only carries a message.
    static PENDING: RefCell<Option<Kind>> = const { RefCell::new(None) };
}

/// Records `kind` for [`convert`] and returns a serde error that aborts the parse.
fn fail<E: de::Error>(kind: Kind) -> E {
    let msg = kind.to_string();
    PENDING.with(|p| *p.borrow_mut() = Some(kind));
    E::custom(msg)
}

fn convert(datagram: &[u8], e: &serde_json::Error) -> DecodeError {
    let kind = PENDING.with(|p| p.borrow_mut().take()).unwrap_or_else(|| {
        // serde_json appends " at line L column C"; the offset says that already.
        let text = e.to_string();
        let msg = text
            .rsplit_once(" at line ")
            .map_or(text.as_str(), |(m, _)| m)
            .to_owned();
        match e.classify() {
            serde_json::error::Category::Data => Kind::InvalidNotification(msg),
            _ => Kind::InvalidJson(msg),
        }
    });
    // serde_json's column is 1-based for a syntax error (the bad byte's), and for a value of
    // the wrong type the byte just after it: either way, an offset at or after the problem.
    let column = match e.classify() {
        serde_json::error::Category::Syntax | serde_json::error::Category::Eof => {
            e.column().saturating_sub(1)
        }
        _ => e.column(),
    };
    DecodeError::new(offset_of(datagram, e.line(), column), kind)
}

/// The byte offset of a (1-based line, 0-based byte column) position.
fn offset_of(datagram: &[u8], line: usize, column: usize) -> usize {
    let line_start = if line <= 1 {
        0
    } else {
        datagram
            .iter()
            .enumerate()
            .filter(|(_, &b)| b == b'\n')
            .nth(line - 2)
            .map_or(datagram.len(), |(i, _)| i + 1)
    };
    line_start.saturating_add(column).min(datagram.len())
}

struct Notification(Event);

impl<'de> Deserialize<'de> for Notification {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_map(NotificationVisitor)
    }
}

struct NotificationVisitor;

impl<'de> Visitor<'de> for NotificationVisitor {
    type Value = Notification;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON-RPC notification object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Notification, A::Error> {
        let mut version = false;
        let mut id = false;
        let mut method: Option<EventName> = None;
        let mut params: Option<Params> = None;
        let dup = |key: &str| {
            fail(Kind::InvalidNotification(format!(
                "duplicate member {key:?}"
            )))
        };
        while let Some(key) = map.next_key::<String>()? {
            match key.as_str() {
                "jsonrpc" => {
                    if version {
                        return Err(dup(&key));
                    }
                    let v = map.next_value_seed(Text("\"2.0\""))?;
                    if v != "2.0" {
                        return Err(fail(Kind::InvalidNotification(format!(
                            "\"jsonrpc\" is {v:?}, expected \"2.0\""
                        ))));
                    }
                    version = true;
                }
                "method" => {
                    if method.is_some() {
                        return Err(dup(&key));
                    }
                    let name = map.next_value_seed(Text("the event name as a string"))?;
                    method = Some(EventName::new(&name).map_err(|e| {
                        fail(match e {
                            EventError::EmptyEventName => Kind::EmptyEventName,
                            e => Kind::InvalidName(e),
                        })
                    })?);
                }
                "params" => {
                    if params.is_some() {
                        return Err(dup(&key));
                    }
                    params = Some(map.next_value_seed(ParamsSeed)?);
                }
                "id" => {
                    if id {
                        return Err(dup(&key));
                    }
                    map.next_value::<IgnoredAny>()?;
                    id = true;
                }
                _ => {
                    return Err(fail(Kind::InvalidNotification(format!(
                    "unknown member {key:?} (expected \"jsonrpc\", \"method\", \"params\", \"id\")"
                ))))
                }
            }
        }
        if !version {
            return Err(fail(Kind::InvalidNotification(
                "missing \"jsonrpc\":\"2.0\"".into(),
            )));
        }
        let Some(name) = method else {
            return Err(fail(Kind::InvalidNotification("missing \"method\"".into())));
        };
        Ok(Notification(Event::from_parts(
            name,
            params.unwrap_or_default(),
        )))
    }
}

/// A string member; the `&str` says what it should hold.
struct Text(&'static str);

impl<'de> DeserializeSeed<'de> for Text {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        d.deserialize_str(self)
    }
}

impl Visitor<'_> for Text {
    type Value = String;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.0)
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<String, E> {
        Ok(v.to_owned())
    }
}

struct ParamsSeed;

impl<'de> DeserializeSeed<'de> for ParamsSeed {
    type Value = Params;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Params, D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ParamsSeed {
    type Value = Params;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("\"params\" as an object or an array")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Params, A::Error> {
        let mut params = Params::new();
        while let Some(name) = map.next_key::<String>()? {
            let value = map.next_value_seed(ValueSeed)?;
            params
                .push_decoded(Some(&name), value_ref(&value))
                .map_err(|e| fail(Kind::InvalidName(e)))?;
        }
        Ok(params)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Params, A::Error> {
        let mut params = Params::new();
        while let Some(value) = seq.next_element_seed(ValueSeed)? {
            params
                .push_decoded(None, value_ref(&value))
                .map_err(|e| fail(Kind::InvalidName(e)))?;
        }
        Ok(params)
    }
}

/// A parameter value: a string or an `i64`; anything else is [`Kind::UnsupportedValue`].
struct ValueSeed;

/// Borrows a value in the form [`Params::push`] takes it.
fn value_ref(v: &Value) -> ValueRef<'_> {
    match v {
        Value::Int(n) => ValueRef::Int(*n),
        Value::Str(s) => ValueRef::Str(s),
    }
}

impl<'de> DeserializeSeed<'de> for ValueSeed {
    type Value = Value;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Value, D::Error> {
        d.deserialize_any(self)
    }
}

fn unsupported<E: de::Error, T>(what: String) -> Result<T, E> {
    Err(fail(Kind::UnsupportedValue(what)))
}

impl<'de> Visitor<'de> for ValueSeed {
    type Value = Value;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a string or an integer")
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<Value, E> {
        Ok(Value::Int(v))
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<Value, E> {
        match i64::try_from(v) {
            Ok(n) => Ok(Value::Int(n)),
            Err(_) => unsupported(format!("integer {v} is outside the i64 range")),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<Value, E> {
        // serde_json gives a float for a fraction or an exponent, but also for `-0` and for
        // integers beyond u64; which it was, the float cannot tell (`-0` and `-0.0` are both
        // -0.0), so the message names every case and `{:?}` keeps the float looking like one.
        unsupported(format!(
            "number {v:?}, read as a float: it has a fraction or an exponent, is -0, or is \
             outside the i64 range"
        ))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<Value, E> {
        Ok(Value::Str(v.to_owned()))
    }

    fn visit_string<E: de::Error>(self, v: String) -> Result<Value, E> {
        Ok(Value::Str(v))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<Value, E> {
        unsupported(format!("boolean {v}"))
    }

    fn visit_unit<E: de::Error>(self) -> Result<Value, E> {
        unsupported("null".into())
    }

    fn visit_seq<A: SeqAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        unsupported("nested array".into())
    }

    fn visit_map<A: MapAccess<'de>>(self, _: A) -> Result<Value, A::Error> {
        unsupported("nested object".into())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::Param;

    fn kind(d: &str) -> Kind {
        decode(d.as_bytes()).unwrap_err().kind().clone()
    }

    #[test]
    fn shapes() {
        let e =
            decode(br#"{"jsonrpc":"2.0","method":"E","params":{"":1,"b":"x"},"id":null}"#).unwrap();
        assert_eq!(
            e[0].params().to_vec(),
            [
                Param::named("", Value::Int(1)),
                Param::named("b", Value::Str("x".into()))
            ]
        );
        let e = decode(br#"{"params":["a",-1],"method":"E","jsonrpc":"2.0"}"#).unwrap();
        assert_eq!(
            e[0].params().to_vec(),
            [
                Param::unnamed(Value::Str("a".into())),
                Param::unnamed(Value::Int(-1))
            ]
        );
    }

    #[test]
    fn errors() {
        assert_eq!(kind(" \n"), Kind::Empty);
        assert!(matches!(kind("{"), Kind::InvalidJson(_)));
        assert!(matches!(kind("[]"), Kind::InvalidNotification(_)));
        assert!(matches!(
            kind(r#"{"jsonrpc":"2.0","method":"E","params":{"a":1.5}}"#),
            Kind::UnsupportedValue(_)
        ));
        // A key longer than a name's 65 535 bytes (any other key is kept, see `push_decoded`).
        let long = format!(
            r#"{{"jsonrpc":"2.0","method":"E","params":{{"{}":1}}}}"#,
            "k".repeat(70_000)
        );
        assert!(matches!(kind(&long), Kind::InvalidName(_)));
        assert_eq!(
            kind(r#"{"jsonrpc":"2.0","method":""}"#),
            Kind::EmptyEventName
        );
        assert!(matches!(
            kind(r#"{"jsonrpc":"2.0","method":"E","x":1}"#),
            Kind::InvalidNotification(m) if m.contains("\"x\"")
        ));
    }

    #[test]
    fn float_messages_say_what_was_refused() {
        let message = |v: &str| {
            let d = format!(r#"{{"jsonrpc":"2.0","method":"E","params":[{v}]}}"#);
            match kind(&d) {
                Kind::UnsupportedValue(m) => m,
                k => panic!("{v}: {k:?}"),
            }
        };
        let rule = "read as a float: it has a fraction or an exponent, is -0, or is outside \
                    the i64 range";
        assert_eq!(message("1.0"), format!("number 1.0, {rule}"));
        assert_eq!(message("-0"), format!("number -0.0, {rule}"));
        assert_eq!(message("1e3"), format!("number 1000.0, {rule}"));
        assert_eq!(message("1.5"), format!("number 1.5, {rule}"));
    }

    /// What `Decoder::decode_each` passes on, as events, or its error.
    fn each(d: &[u8]) -> Result<Vec<Event>, DecodeError> {
        let mut events = Vec::new();
        let n = Decoder::new().decode_each(d, |name, params| {
            events.push(Event::from_parts(
                EventName::new(name).unwrap(),
                params.to_params().unwrap(),
            ))
        })?;
        assert_eq!(n, events.len());
        Ok(events)
    }

    #[test]
    fn the_reusable_decoder_agrees_with_decode_on_every_shape_and_error() {
        let cases: &[&str] = &[
            // The compact shape (fast path).
            r#"{"jsonrpc":"2.0","method":"E"}"#,
            r#"{"jsonrpc":"2.0","method":"E_A","params":{"a":1,"b":"x","a":-9223372036854775808}}"#,
            r#"{"jsonrpc":"2.0","method":"E","params":["a",0,-1,9223372036854775807,""]}"#,
            r#"{"jsonrpc":"2.0","method":"E","params":{}}"#,
            r#"{"jsonrpc":"2.0","method":"E","params":[]}"#,
            r#"{"jsonrpc":"2.0","method":"E","params":{"":1}}"#,
            "{\"jsonrpc\":\"2.0\",\"method\":\"E\",\"params\":[\"\u{e9}t\u{e9}\"]}",
            // Packed, with and without whitespace, the complete decoder taking over mid-way.
            r#"{"jsonrpc":"2.0","method":"A"}{"jsonrpc":"2.0","method":"B","params":[1]} "#,
            "\n {\"jsonrpc\":\"2.0\",\"method\":\"A\"}\n{\"method\":\"B\",\"jsonrpc\":\"2.0\"}\n",
            r#"{"jsonrpc":"2.0","method":"A"}{"jsonrpc":"2.0","method":"B","id":7}{"jsonrpc":"2.0","method":"C"}"#,
            // Left to the complete decoder: escapes, whitespace, other orders, odd numbers.
            r#"{"jsonrpc":"2.0","method":"E","params":{"a":"x\"y\\z\u00e9"}}"#,
            r#"{ "jsonrpc": "2.0", "method": "E", "params": [1, 2] }"#,
            r#"{"jsonrpc":"2.0","method":"E","params":[-0,0,10]}"#,
            r#"{"jsonrpc":"2.0","method":"E","params":[9223372036854775808]}"#,
            r#"{"jsonrpc":"2.0","method":"E","params":[-9223372036854775809]}"#,
            r#"{"jsonrpc":"2.0","method":"E","params":[1.5]}"#,
            r#"{"jsonrpc":"2.0","method":"E","params":[1e3]}"#,
            r#"{"jsonrpc":"2.0","method":"E","params":[01]}"#,
            r#"{"jsonrpc":"2.0","method":"E","params":[-]}"#,
            r#"{"jsonrpc":"2.0","method":"E","params":[1,]}"#,
            r#"{"jsonrpc":"2.0","method":"E","params":{"a":1,}}"#,
            r#"{"jsonrpc":"2.0","method":"E","params":{"a::b":1}}"#,
            r#"{"jsonrpc":"2.0","method":"E","params":{"a":true}}"#,
            r#"{"jsonrpc":"2.0","method":"E","params":[null]}"#,
            r#"{"jsonrpc":"2.0","method":"E","params":"x"}"#,
            r#"{"jsonrpc":"2.0","method":"E","params":[1]"#,
            r#"{"jsonrpc":"2.0","method":"E","params":[1]}}"#,
            r#"{"jsonrpc":"2.0","method":"E","x":1}"#,
            r#"{"jsonrpc":"2.0","method":""}"#,
            r#"{"jsonrpc":"2.0","method":"E"}x"#,
            r#"{"jsonrpc":"2.0","method":"E"}1"#,
            r#"{"jsonrpc":"2.0","method":"E"}{"jsonrpc":"2.0","method":"F","params":[true]}"#,
            "{\"jsonrpc\":\"2.0\",\"method\":\"E\",\"params\":[\"a\u{1}\"]}",
            r#"{"jsonrpc":"1.0","method":"E"}"#,
            "{",
            "",
            " \t",
        ];
        for case in cases {
            assert_eq!(each(case.as_bytes()), decode(case.as_bytes()), "{case}");
        }
        // Long strings, with a byte the fast path leaves alone at and around block edges.
        for len in [31, 32, 33, 64, 100] {
            for (at, c) in [(0, "\\\""), (len / 2, "\\n"), (len - 1, "\u{1}"), (len, "")] {
                let mut v = "y".repeat(len);
                v.insert_str(at, c);
                let case = format!(r#"{{"jsonrpc":"2.0","method":"E","params":["{v}",1]}}"#);
                assert_eq!(each(case.as_bytes()), decode(case.as_bytes()), "{case}");
            }
        }
        assert_eq!(
            each(b"{\"jsonrpc\":\"2.0\",\"method\":\"\xff\"}"),
            decode(b"{\"jsonrpc\":\"2.0\",\"method\":\"\xff\"}")
        );
        // Events before a malformed one are passed on.
        let mut seen = 0;
        let d = br#"{"jsonrpc":"2.0","method":"E"}{"jsonrpc":"2.0","method":"E","params":[true]}"#;
        assert!(Decoder::new().decode_each(d, |_, _| seen += 1).is_err());
        assert_eq!(seen, 1);
    }

    #[test]
    fn the_reusable_decoder_reads_what_the_encoder_writes() {
        let mut buf = vec![0u8; crate::MAX_DATAGRAM];
        let mut packed = Vec::new();
        let all = [
            Params::new()
                .str("ip", "1.2.3.4")
                .unwrap()
                .int("n", -5)
                .unwrap(),
            Params::new()
                .unnamed_str("x")
                .unwrap()
                .unnamed_int(i64::MAX)
                .unwrap(),
            Params::new(),
            Params::new().str("v", "q\"uote\n").unwrap(),
        ];
        for p in &all {
            let n = crate::encode::jsonrpc::encode("E_X", p, &mut buf).unwrap();
            packed.extend_from_slice(&buf[..n]);
        }
        let mut d = Decoder::new();
        let mut got = Vec::new();
        let n = d
            .decode_each(&packed, |name, p| got.push((name.to_owned(), p.to_vec())))
            .unwrap();
        assert_eq!(n, all.len());
        for ((name, got), want) in got.iter().zip(&all) {
            assert_eq!((name.as_str(), got), ("E_X", &want.to_vec()));
        }
    }

    #[test]
    fn offsets_point_into_the_datagram() {
        let d = "{\"jsonrpc\":\"2.0\",\"method\":\"E\"}\n{\"jsonrpc\":\"2.0\",\"method\":\"E\",\"params\":[true]}";
        let e = decode(d.as_bytes()).unwrap_err();
        assert_eq!(&d[e.offset() - 4..e.offset()], "true");
        assert_eq!(offset_of(b"ab\ncd", 2, 1), 4);
        assert_eq!(offset_of(b"ab", 9, 9), 2);
    }
}
