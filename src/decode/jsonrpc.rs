//! Decoder of OpenSIPS 3.1+ JSON-RPC 2.0 notifications.
//!
//! `{"jsonrpc":"2.0","method":"E_TEST","params":{"a":1,"b":"x"}}`: `"jsonrpc":"2.0"` and a string
//! `method` are required, `params` is optional, an `id` is accepted and ignored, any other member
//! is an error. Object params become named parameters in the order they appear, duplicate keys
//! kept (the key `""` is the name `""`); array params become unnamed ones. Values must be strings
//! or integers in the `i64` range. Several notifications may follow each other, with or without
//! whitespace between them (coalescing).
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

use super::{DecodeError, DecodeErrorKind as Kind};
use crate::error::EventError;
use crate::event::{Event, EventName, Params, Value, ValueRef};

/// Decodes every notification in a `jsonrpc` datagram.
pub fn decode(datagram: &[u8]) -> Result<Vec<Event>, DecodeError> {
    if datagram.iter().all(|&b| is_json_space(b)) {
        return Err(DecodeError::new(0, Kind::Empty));
    }
    std::str::from_utf8(datagram)
        .map_err(|e| DecodeError::new(e.valid_up_to(), Kind::InvalidUtf8))?;
    PENDING.with(|p| p.borrow_mut().take());
    let mut events = Vec::new();
    for item in serde_json::Deserializer::from_slice(datagram).into_iter::<Notification>() {
        match item {
            Ok(Notification(event)) => events.push(event),
            Err(e) => return Err(convert(datagram, &e)),
        }
    }
    Ok(events)
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
    DecodeError::new(offset_of(datagram, e.line(), e.column()), kind)
}

/// The byte offset of serde_json's (1-based line, 0-based byte column) position.
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
                .push(Some(&name), value_ref(&value))
                .map_err(|e| fail(Kind::InvalidName(e)))?;
        }
        Ok(params)
    }

    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Params, A::Error> {
        let mut params = Params::new();
        while let Some(value) = seq.next_element_seed(ValueSeed)? {
            params
                .push(None, value_ref(&value))
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
        // serde_json reads integers beyond u64 as floats too.
        unsupported(format!(
            "number {v} is a float or an integer outside the i64 range"
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
        assert!(matches!(
            kind(r#"{"jsonrpc":"2.0","method":"E","params":{"a::b":1}}"#),
            Kind::InvalidName(_)
        ));
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
    fn offsets_point_into_the_datagram() {
        let d = "{\"jsonrpc\":\"2.0\",\"method\":\"E\"}\n{\"jsonrpc\":\"2.0\",\"method\":\"E\",\"params\":[true]}";
        let e = decode(d.as_bytes()).unwrap_err();
        assert_eq!(&d[e.offset() - 4..e.offset()], "true");
        assert_eq!(offset_of(b"ab\ncd", 2, 1), 4);
        assert_eq!(offset_of(b"ab", 9, 9), 2);
    }
}
