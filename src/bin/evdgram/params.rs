//! `--params JSON` of `encode` and `raise`: a JSON object (named parameters, in order, duplicate
//! keys kept) or a JSON array (unnamed parameters) into [`Params`].

use std::fmt;

use anyhow::bail;
use event_datagram::{Params, ValueRef};
use serde::de::{self, Deserializer, IgnoredAny, MapAccess, SeqAccess, Visitor};

/// Parses `--params`: a JSON object (named, in order, duplicates kept) or array (unnamed).
pub fn parse_params(json: &str) -> anyhow::Result<Params> {
    let JsonParams(raw) = serde_json::from_str(json)?;
    let mut params = Params::new();
    for (i, (name, value)) in raw.iter().enumerate() {
        let which = || match name {
            Some(name) => format!("parameter {name:?}"),
            None => format!("parameter #{}", i + 1),
        };
        let value = match value {
            RawValue::Int(n) => ValueRef::Int(*n),
            RawValue::Str(s) => ValueRef::Str(s),
            RawValue::Unsupported(what) => bail!(
                "{}: unsupported value: {what} (values must be strings or integers in the i64 range)",
                which()
            ),
        };
        // The error names the parameter.
        params.push(name.as_deref(), value)?;
    }
    Ok(params)
}

/// Parameters as given, before validation. Deserialized with a visitor (not through
/// `serde_json::Value`) so that an object's duplicate keys and their order are kept.
struct JsonParams(Vec<(Option<String>, RawValue)>);

/// A parameter value as given; anything but a string or an `i64` is kept as a description.
enum RawValue {
    Int(i64),
    Str(String),
    Unsupported(String),
}

impl<'de> de::Deserialize<'de> for JsonParams {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ParamsVisitor;
        impl<'de> Visitor<'de> for ParamsVisitor {
            type Value = JsonParams;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON object (named parameters) or array (unnamed parameters)")
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<JsonParams, A::Error> {
                let mut out = Vec::new();
                while let Some(name) = map.next_key::<String>()? {
                    out.push((Some(name), map.next_value::<RawValue>()?));
                }
                Ok(JsonParams(out))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<JsonParams, A::Error> {
                let mut out = Vec::new();
                while let Some(value) = seq.next_element::<RawValue>()? {
                    out.push((None, value));
                }
                Ok(JsonParams(out))
            }
        }
        d.deserialize_any(ParamsVisitor)
    }
}

impl<'de> de::Deserialize<'de> for RawValue {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct ValueVisitor;
        impl<'de> Visitor<'de> for ValueVisitor {
            type Value = RawValue;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a string or an integer")
            }

            fn visit_i64<E: de::Error>(self, n: i64) -> Result<RawValue, E> {
                Ok(RawValue::Int(n))
            }

            fn visit_u64<E: de::Error>(self, n: u64) -> Result<RawValue, E> {
                Ok(i64::try_from(n).map_or_else(
                    |_| RawValue::Unsupported(format!("integer {n} is outside the i64 range")),
                    RawValue::Int,
                ))
            }

            fn visit_f64<E: de::Error>(self, x: f64) -> Result<RawValue, E> {
                // serde_json reads integer literals beyond the u64/i64 range as floats.
                Ok(RawValue::Unsupported(
                    if x.fract() == 0.0 && x.abs() >= 9_223_372_036_854_775_808.0 {
                        format!("number {x} is outside the i64 range")
                    } else {
                        format!("float {x}")
                    },
                ))
            }

            fn visit_str<E: de::Error>(self, s: &str) -> Result<RawValue, E> {
                Ok(RawValue::Str(s.to_owned()))
            }

            fn visit_string<E: de::Error>(self, s: String) -> Result<RawValue, E> {
                Ok(RawValue::Str(s))
            }

            fn visit_bool<E: de::Error>(self, b: bool) -> Result<RawValue, E> {
                Ok(RawValue::Unsupported(format!("boolean {b}")))
            }

            fn visit_unit<E: de::Error>(self) -> Result<RawValue, E> {
                Ok(RawValue::Unsupported("null".to_owned()))
            }

            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<RawValue, A::Error> {
                while map.next_entry::<IgnoredAny, IgnoredAny>()?.is_some() {}
                Ok(RawValue::Unsupported("a nested object".to_owned()))
            }

            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<RawValue, A::Error> {
                while seq.next_element::<IgnoredAny>()?.is_some() {}
                Ok(RawValue::Unsupported("a nested array".to_owned()))
            }
        }
        d.deserialize_any(ValueVisitor)
    }
}
