//! The shared exact-byte vectors (tests/vectors/*.jsonl, see its README): every case encodes to
//! exactly its bytes and decodes back; and the 65 457-byte datagram limit, to the byte.

use crate::support::{normalize_jsonrpc, normalize_line};
use event_datagram::decode::{self, DecodeFormat};
use event_datagram::{EncodeError, Event, Format, Param, Params, Value, MAX_DATAGRAM};

const LINE: &str = include_str!("vectors/line.jsonl");
const JSONRPC: &str = include_str!("vectors/jsonrpc.jsonl");

struct Case {
    name: String,
    event: String,
    params: Vec<Param>,
    bytes: Vec<u8>,
}

fn unhex(s: &str) -> Vec<u8> {
    assert!(s.len() % 2 == 0, "odd hex length");
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).expect("hex"))
        .collect()
}

fn cases(jsonl: &str, format: &str) -> Vec<Case> {
    let cases: Vec<Case> = jsonl
        .lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: serde_json::Value = serde_json::from_str(l).expect("vector is JSON");
            assert_eq!(v["format"], format);
            let params = v["params"]
                .as_array()
                .expect("params")
                .iter()
                .map(|p| {
                    let value = match p["type"].as_str().expect("type") {
                        "str" => Value::Str(p["value"].as_str().expect("str value").to_owned()),
                        "int" => Value::Int(p["value"].as_i64().expect("int value")),
                        t => panic!("unknown type {t}"),
                    };
                    Param {
                        name: p.get("name").map(|n| n.as_str().expect("name").to_owned()),
                        value,
                    }
                })
                .collect();
            Case {
                name: v["case"].as_str().expect("case").to_owned(),
                event: v["event"].as_str().expect("event").to_owned(),
                params,
                bytes: unhex(v["bytes_hex"].as_str().expect("bytes_hex")),
            }
        })
        .collect();
    assert!(!cases.is_empty());
    cases
}

fn check(format: Format, jsonl: &str, normalize: fn(&[Param]) -> Vec<Param>) {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    for case in cases(jsonl, format.as_str()) {
        let event = Event::with_params(&case.event, &case.params).expect(&case.name);
        let n = format
            .encode(event.name().as_str(), event.params(), &mut buf)
            .expect(&case.name);
        assert_eq!(
            &buf[..n],
            &case.bytes[..],
            "{}: encoded {:?}",
            case.name,
            String::from_utf8_lossy(&buf[..n])
        );
        for how in [format.into(), DecodeFormat::Auto] {
            let decoded = decode::decode(&case.bytes, how).expect(&case.name);
            assert_eq!(decoded.len(), 1, "{}", case.name);
            assert_eq!(decoded[0].name().as_str(), case.event, "{}", case.name);
            assert_eq!(
                decoded[0].params().to_vec(),
                normalize(&case.params),
                "{}",
                case.name
            );
        }
    }
}

#[test]
fn line_vectors_encode_exactly_and_decode_back() {
    check(Format::Line, LINE, normalize_line);
}

#[test]
fn jsonrpc_vectors_encode_exactly_and_decode_back() {
    check(Format::Jsonrpc, JSONRPC, normalize_jsonrpc);
}

/// One string param `v` sized so the datagram is `len` bytes.
fn params_of_len(format: Format, len: usize) -> Params {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let base = format
        .encode("E_TEST", &Params::new().str("v", "").unwrap(), &mut buf)
        .unwrap();
    Params::new().str("v", &"x".repeat(len - base)).unwrap()
}

#[test]
fn the_datagram_limit_is_exact_in_both_formats() {
    assert_eq!(MAX_DATAGRAM, 65_457);
    for format in Format::ALL {
        // A larger buffer than the limit, so only the protocol limit applies.
        let mut buf = vec![0u8; MAX_DATAGRAM + 100];
        let at_limit = params_of_len(format, MAX_DATAGRAM);
        let n = format.encode("E_TEST", &at_limit, &mut buf);
        assert_eq!(n, Ok(MAX_DATAGRAM), "{format}");
        let decoded = decode::decode(&buf[..MAX_DATAGRAM], format.into()).unwrap();
        assert_eq!(&decoded[0].params().to_vec(), &at_limit.to_vec());

        let over = params_of_len(format, MAX_DATAGRAM + 1);
        assert_eq!(
            format.encode("E_TEST", &over, &mut buf),
            Err(EncodeError::TooLarge {
                len: 65_458,
                max: 65_457
            }),
            "{format}"
        );
    }
}
