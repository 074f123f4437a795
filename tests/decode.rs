//! Decoders: OpenSIPS 3.0.5 captures, packed datagrams, malformed input, and round trips
//! `decode(encode(e)) == e` (normalized to what each format carries) for arbitrary events.

use crate::support::{normalize_jsonrpc, normalize_line};
use event_datagram::decode::{self, jsonrpc, line, DecodeErrorKind as Kind, DecodeFormat};
use event_datagram::{Event, Format, Param, Value, MAX_DATAGRAM};
use proptest::prelude::*;

fn s(name: Option<&str>, v: &str) -> Param {
    Param {
        name: name.map(str::to_owned),
        value: Value::Str(v.to_owned()),
    }
}

fn int(name: Option<&str>, v: i64) -> Param {
    Param {
        name: name.map(str::to_owned),
        value: Value::Int(v),
    }
}

/// Decodes a datagram holding one event into (name, params).
fn one(format: DecodeFormat, d: &[u8]) -> (String, Vec<Param>) {
    let events = decode::decode(d, format).unwrap();
    assert_eq!(events.len(), 1, "{:?}", String::from_utf8_lossy(d));
    (
        events[0].name().as_str().to_owned(),
        events[0].params().to_vec(),
    )
}

fn line_params(d: &[u8]) -> Vec<Param> {
    one(DecodeFormat::Line, d).1
}

fn err(format: DecodeFormat, d: &[u8]) -> (usize, Kind) {
    let e = decode::decode(d, format).unwrap_err();
    // Every error says what and where.
    assert!(
        e.to_string().contains(&format!("at byte {}", e.offset())),
        "{e}"
    );
    (e.offset(), e.kind().clone())
}

// ---- line: OpenSIPS 3.0.5 captures ----

#[test]
fn opensips_305_quoted_value_with_escaped_quotes_and_newline() {
    assert_eq!(
        one(
            DecodeFormat::Auto,
            b"E_TEST\nv::\"say \\\"hi\\\"\nbye\"\n\n"
        ),
        ("E_TEST".to_owned(), vec![s(Some("v"), "say \"hi\"\nbye")])
    );
}

#[test]
fn opensips_305_negative_int_stays_its_unsigned_string() {
    assert_eq!(
        line_params(b"E_TEST\nn::18446744073709551615\n\n"),
        [s(Some("n"), "18446744073709551615")]
    );
}

#[test]
fn opensips_305_unescaped_backslash_before_an_escaped_quote() {
    // 3.0.5 wrote the value a\"b<LF>c as "a\\"b<LF>c" (it never escaped `\`).
    assert_eq!(
        line_params(b"E_TEST\nv::\"a\\\\\"b\nc\"\n\n"),
        [s(Some("v"), "a\\\"b\nc")]
    );
    // Our own encoding of a value ending in `\` reads with our rule.
    assert_eq!(
        line_params(b"E_TEST\nv::\"a\\\\\n\"\n\n"),
        [s(Some("v"), "a\\\n")]
    );
}

#[test]
fn opensips_305_raw_values_with_quotes_and_cr_are_literal() {
    assert_eq!(
        line_params(b"E_TEST\nv::a\"b\nw::a\rb\nx::it's\n\n"),
        [
            s(Some("v"), "a\"b"),
            s(Some("w"), "a\rb"),
            s(Some("x"), "it's")
        ]
    );
}

/// 3.0.5 quoted a value only when it held a line feed: one starting with `"` went raw.
#[test]
fn opensips_305_raw_values_starting_with_a_quote() {
    assert_eq!(
        one(
            DecodeFormat::Auto,
            b"E_ACC\nfrom::\"Alice\" <sip:alice@x>\nx::1\n\n"
        ),
        (
            "E_ACC".to_owned(),
            vec![
                s(Some("from"), "\"Alice\" <sip:alice@x>"),
                s(Some("x"), "1")
            ]
        )
    );
    assert_eq!(
        line_params(b"E_TEST\n\"Alice\" <sip:a@b>\nv::\"a\" \nv::\"ab\n\n"),
        [
            s(None, "\"Alice\" <sip:a@b>"),
            s(Some("v"), "\"a\" "),
            s(Some("v"), "\"ab")
        ]
    );
}

/// Text before `::` that cannot be a name (here it holds `\r`) makes the line an unnamed
/// value, as a quote or an apostrophe there does.
#[test]
fn opensips_305_unnamed_value_with_cr_before_double_colon() {
    assert_eq!(line_params(b"E\nx\r::y\n\n"), [s(None, "x\r::y")]);
}

#[test]
fn unnamed_values() {
    assert_eq!(
        line_params(b"E_TEST\nabc\n7\nx y\n\"\"\n\"a::b\"\n\"q\\\"\"\n\n"),
        [
            s(None, "abc"),
            s(None, "7"),
            s(None, "x y"),
            s(None, ""),
            s(None, "a::b"),
            s(None, "q\""),
        ]
    );
    // Text before `::` holding a quote or apostrophe is not a name.
    assert_eq!(
        line_params(b"E_TEST\na'b::c\nx\"y::z\n\n"),
        [s(None, "a'b::c"), s(None, "x\"y::z")]
    );
    // An empty name is no name.
    assert_eq!(line_params(b"E_TEST\n::v\n\n"), [s(None, "v")]);
}

#[test]
fn named_values_split_at_the_first_double_colon() {
    assert_eq!(
        line_params(b"E_TEST\nv::a::b\nip::::1\nv::\n\n"),
        [s(Some("v"), "a::b"), s(Some("ip"), "::1"), s(Some("v"), "")]
    );
}

#[test]
fn a_param_name_ending_in_colon_is_refused_as_it_would_be_ambiguous_in_the_line_format() {
    // `a:` + `::` + `b` would read as name "a", value ":b" (the grammar splits at the first
    // `::`, which keeps values like `ip::::1` right), so the model refuses the name.
    let err = Event::with_params("E_TEST", &[s(Some("a:"), "b")]).unwrap_err();
    assert!(err.to_string().contains("ends with ':'"), "{err}");
    assert_eq!(line_params(b"E_TEST\nip::::1\n\n"), [s(Some("ip"), "::1")]);
}

#[test]
fn packed_line_events() {
    let events = line::decode(b"E_A\n\nE_B\nx\n\nE_C\nv::\"1\n\n2\"\nk::v\n\n").unwrap();
    let got: Vec<_> = events
        .iter()
        .map(|e| (e.name().as_str(), e.params().to_vec()))
        .collect();
    assert_eq!(
        got,
        [
            ("E_A", vec![]),
            ("E_B", vec![s(None, "x")]),
            ("E_C", vec![s(Some("v"), "1\n\n2"), s(Some("k"), "v")]),
        ]
    );
    let mut d = line::Decoder::new();
    let mut names = Vec::new();
    let n = d
        .decode_each(b"E_A\n\nE_B\nx\n\n", |name, _| names.push(name.to_owned()))
        .unwrap();
    assert_eq!((n, names), (2, vec!["E_A".to_owned(), "E_B".to_owned()]));
}

#[test]
fn malformed_line_datagrams() {
    let l = DecodeFormat::Line;
    assert_eq!(err(l, b""), (0, Kind::Empty));
    assert_eq!(err(l, b"E_TEST"), (6, Kind::Truncated));
    assert_eq!(err(l, b"E_TEST\nv::1\n"), (12, Kind::Truncated));
    assert_eq!(err(l, b"E_TEST\nv::1"), (11, Kind::Truncated));
    assert_eq!(err(l, b"E_A\n\nE_B\n"), (9, Kind::Truncated));
    assert_eq!(err(l, b"\nv::1\n\n"), (0, Kind::EmptyEventName));
    assert_eq!(err(l, b"E_A\n\n\n"), (5, Kind::EmptyEventName));
    assert_eq!(err(l, b"E_TEST\nv::\"abc"), (14, Kind::Truncated));
    assert_eq!(err(l, b"E_TEST\nv::\"a\""), (13, Kind::Truncated));
    assert_eq!(err(l, b"E_TEST\nv::caf\xc3\n\n"), (13, Kind::InvalidUtf8));
    assert_eq!(err(l, b"E_\xffTEST\n\n"), (2, Kind::InvalidUtf8));
    assert!(matches!(err(l, b"E_TEST\r\n\n"), (0, Kind::InvalidName(_))));
}

// ---- jsonrpc ----

#[test]
fn jsonrpc_concatenated_notifications() {
    let d = b"{\"jsonrpc\":\"2.0\",\"method\":\"E_A\"}{\"jsonrpc\":\"2.0\",\"method\":\"E_B\",\"params\":[1]}\n \t\r\n{\"jsonrpc\":\"2.0\",\"method\":\"E_C\",\"params\":{\"k\":\"v\"}}\n";
    for events in [
        jsonrpc::decode(d).unwrap(),
        decode::decode(d, DecodeFormat::Auto).unwrap(),
    ] {
        let got: Vec<_> = events
            .iter()
            .map(|e| (e.name().as_str(), e.params().to_vec()))
            .collect();
        assert_eq!(
            got,
            [
                ("E_A", vec![]),
                ("E_B", vec![int(None, 1)]),
                ("E_C", vec![s(Some("k"), "v")]),
            ]
        );
    }
}

#[test]
fn jsonrpc_keeps_order_and_duplicate_keys() {
    let (name, params) = one(
        DecodeFormat::Jsonrpc,
        br#"{"jsonrpc":"2.0","method":"E_TEST","params":{"z":1,"a":"x","z":"2","":-9223372036854775808,"m":9223372036854775807}}"#,
    );
    assert_eq!(name, "E_TEST");
    assert_eq!(
        params,
        [
            int(Some("z"), 1),
            s(Some("a"), "x"),
            s(Some("z"), "2"),
            int(Some(""), i64::MIN),
            int(Some("m"), i64::MAX),
        ]
    );
}

/// OpenSIPS takes a parameter's name from the script or module that raises the event: any
/// JSON key. Those the line format cannot carry are kept, and refused only there.
#[test]
fn jsonrpc_keys_the_line_format_cannot_carry_are_kept_and_refused_only_by_the_line_encoder() {
    let d = br#"{"jsonrpc":"2.0","method":"E_X","params":{"it's":1,"a\"b":"x","a::b":"y","a:":"z","ok":2}}"#;
    let (name, params) = one(DecodeFormat::Auto, d);
    assert_eq!(name, "E_X");
    assert_eq!(
        params,
        [
            int(Some("it's"), 1),
            s(Some("a\"b"), "x"),
            s(Some("a::b"), "y"),
            s(Some("a:"), "z"),
            int(Some("ok"), 2)
        ]
    );
    let event = &decode::decode(d, DecodeFormat::Jsonrpc).unwrap()[0];
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let n = Format::Jsonrpc
        .encode(event.name().as_str(), event.params(), &mut buf)
        .unwrap();
    assert_eq!(&buf[..n], &d[..], "jsonrpc carries them as they came");
    assert_eq!(
        Format::Line.encode(event.name().as_str(), event.params(), &mut buf),
        Err(event_datagram::EncodeError::ParamNameNotLine)
    );
    // Names the line format can carry still encode to it.
    let d = br#"{"jsonrpc":"2.0","method":"E_X","params":{"ok":2}}"#;
    let event = &decode::decode(d, DecodeFormat::Jsonrpc).unwrap()[0];
    let n = Format::Line
        .encode(event.name().as_str(), event.params(), &mut buf)
        .unwrap();
    assert_eq!(&buf[..n], b"E_X\nok::2\n\n");
}

#[test]
fn jsonrpc_members_in_any_order_and_id_ignored() {
    let (name, params) = one(
        DecodeFormat::Auto,
        br#" { "id" : 7, "params" : [ "a\n\u00e9\ud83d\ude00" ], "method" : "E_X", "jsonrpc" : "2.0" } "#,
    );
    assert_eq!(name, "E_X");
    assert_eq!(params, [s(None, "a\né😀")]);
}

/// An error's offset is the byte where it was found, as the line decoder's are.
#[test]
fn jsonrpc_error_offsets_point_at_the_bad_byte() {
    let j = DecodeFormat::Jsonrpc;
    assert_eq!(err(j, b"{x").0, 1);
    let good = br#"{"jsonrpc":"2.0","method":"E"}"#;
    let mut trailing = good.to_vec();
    trailing.push(b'x');
    assert_eq!(err(j, &trailing).0, good.len());
    assert_eq!(err(j, b"{\n  x").0, 4, "on the second line");
}

#[test]
fn malformed_jsonrpc_datagrams() {
    let j = DecodeFormat::Jsonrpc;
    let bad_value = |v: &str| {
        let d = format!(r#"{{"jsonrpc":"2.0","method":"E","params":{{"v":{v}}}}}"#);
        err(j, d.as_bytes()).1
    };
    for v in [
        "1.5",
        "1e3",
        "-0",
        "true",
        "false",
        "null",
        "[1]",
        "{}",
        "9223372036854775808",
        "-9223372036854775809",
        "100000000000000000000000",
    ] {
        let kind = bad_value(v);
        assert!(matches!(kind, Kind::UnsupportedValue(_)), "{v}: {kind:?}");
    }
    assert!(matches!(
        bad_value("1.5"),
        Kind::UnsupportedValue(m) if m.contains("1.5")
    ));

    assert_eq!(err(j, b""), (0, Kind::Empty));
    assert_eq!(err(j, b" \n "), (0, Kind::Empty));
    let notification = |k: Kind| matches!(k, Kind::InvalidNotification(_));
    assert!(notification(err(j, br#"{"jsonrpc":"2.0"}"#).1));
    assert!(notification(err(j, br#"{"jsonrpc":"2.0","method":1}"#).1));
    assert!(notification(err(j, br#"{"method":"E"}"#).1));
    assert!(notification(err(j, br#"{"jsonrpc":"1.0","method":"E"}"#).1));
    assert!(notification(err(j, br#"{"jsonrpc":2.0,"method":"E"}"#).1));
    assert!(notification(
        err(j, br#"{"jsonrpc":"2.0","method":"E","method":"F"}"#).1
    ));
    assert!(notification(
        err(j, br#"{"jsonrpc":"2.0","method":"E","params":"x"}"#).1
    ));
    assert!(notification(
        err(j, br#"{"jsonrpc":"2.0","method":"E","params":null}"#).1
    ));
    assert!(notification(err(j, br#"["jsonrpc"]"#).1));
    assert_eq!(
        err(j, br#"{"jsonrpc":"2.0","method":""}"#).1,
        Kind::EmptyEventName
    );
    assert!(matches!(
        err(j, br#"{"jsonrpc":"2.0","method":"E\nX"}"#).1,
        Kind::InvalidName(_)
    ));
    let json = |k: Kind| matches!(k, Kind::InvalidJson(_));
    assert!(json(err(j, br#"{"jsonrpc":"2.0","method":"E""#).1));
    assert!(json(err(j, br#"{"jsonrpc":"2.0","method":"E"}x"#).1));
    assert!(json(err(j, br#"{"jsonrpc":"2.0","method":"E"},"#).1));
    assert_eq!(
        err(j, b"{\"jsonrpc\":\"2.0\",\"method\":\"\xff\"}"),
        (27, Kind::InvalidUtf8)
    );
    // The offset points at (or just after) the problem, also in a later notification.
    let d = b"{\"jsonrpc\":\"2.0\",\"method\":\"E\"}\n{\"jsonrpc\":\"2.0\",\"method\":\"E\",\"params\":[1,null]}";
    let (at, _) = err(j, d);
    assert!(d[..at].ends_with(b"null"), "{at}");
}

// ---- round trips ----

fn encode(format: Format, e: &Event) -> Vec<u8> {
    let mut buf = vec![0; MAX_DATAGRAM];
    let n = format
        .encode(e.name().as_str(), e.params(), &mut buf)
        .unwrap();
    buf.truncate(n);
    buf
}

/// Characters that matter to the framing, mixed with arbitrary ones.
fn text(max: usize) -> impl Strategy<Value = String> {
    prop::collection::vec(
        prop_oneof![
            3 => any::<char>(),
            2 => prop::sample::select(vec!['"', '\\', '\n', '\r', ':', '\'', ' ', '{', 'é']),
        ],
        0..max,
    )
    .prop_map(String::from_iter)
}

fn event_name() -> impl Strategy<Value = String> {
    text(12).prop_filter_map("event names are non-empty, no line breaks", |n| {
        let n: String = n.chars().filter(|c| *c != '\n' && *c != '\r').collect();
        (!n.is_empty()).then_some(n)
    })
}

/// Valid param names; `line` also excludes a trailing `:` (see
/// `a_param_name_ending_in_colon_is_ambiguous_in_the_line_format`).
fn param_name(line: bool) -> impl Strategy<Value = Option<String>> {
    let name = text(8).prop_filter("valid param name", move |n| {
        event_datagram::validate_param_name(n).is_ok() && !(line && n.ends_with(':'))
    });
    prop_oneof![1 => Just(None), 3 => name.prop_map(Some)]
}

fn value() -> impl Strategy<Value = Value> {
    prop_oneof![
        4 => text(16).prop_map(Value::Str),
        1 => Just(Value::Str(String::new())),
        1 => Just(Value::Str("::".into())),
        2 => any::<i64>().prop_map(Value::Int),
        1 => prop::sample::select(vec![i64::MIN, i64::MAX, 0, -1]).prop_map(Value::Int),
    ]
}

fn event(line: bool) -> impl Strategy<Value = Event> {
    let param = (param_name(line), value()).prop_map(|(name, value)| Param { name, value });
    (event_name(), prop::collection::vec(param, 0..6))
        .prop_map(|(name, params)| Event::with_params(&name, &params).expect("valid event"))
}

fn named_params(e: &Event) -> (String, Vec<Param>) {
    (e.name().as_str().to_owned(), e.params().to_vec())
}

/// Whatever decodes, in each [`DecodeFormat`], re-encodes in the format it was read in and
/// decodes to itself.
fn assert_decoding_is_stable(bytes: &[u8]) {
    for how in [
        DecodeFormat::Auto,
        DecodeFormat::Line,
        DecodeFormat::Jsonrpc,
    ] {
        let Ok((events, format)) = decode::decode_reporting_format(bytes, how) else {
            continue;
        };
        for e in &events {
            let again = decode::decode(&encode(format, e), format.into()).unwrap();
            assert_eq!(
                again.iter().map(named_params).collect::<Vec<_>>(),
                vec![named_params(e)],
                "{how} read {:?} as {format}",
                String::from_utf8_lossy(bytes)
            );
        }
    }
}

/// `Auto` reads it as `line` though it starts with `{`: re-encoded as `jsonrpc` (the first
/// guess), its named parameter would lose its name.
#[test]
fn decoding_a_line_event_named_like_json_is_stable() {
    assert_decoding_is_stable(b"{X\nx\na::1\n\n");
    assert_decoding_is_stable(b"{\"a\":1}\nx\nb::2\n\n");
}

proptest! {
    #[test]
    fn line_round_trip(e in event(true)) {
        let bytes = encode(Format::Line, &e);
        let decoded = line::decode(&bytes).unwrap();
        prop_assert_eq!(decoded.len(), 1);
        prop_assert_eq!(decoded[0].name(), e.name());
        prop_assert_eq!(decoded[0].params().to_vec(), normalize_line(&e.params().to_vec()));
    }

    #[test]
    fn jsonrpc_round_trip(e in event(false)) {
        let bytes = encode(Format::Jsonrpc, &e);
        let decoded = jsonrpc::decode(&bytes).unwrap();
        prop_assert_eq!(decoded.len(), 1);
        prop_assert_eq!(decoded[0].name(), e.name());
        prop_assert_eq!(decoded[0].params().to_vec(), normalize_jsonrpc(&e.params().to_vec()));
    }

    #[test]
    fn decode_each_reads_packed_events_in_order(events in prop::collection::vec(event(true), 1..5)) {
        let packed: Vec<u8> = events.iter().flat_map(|e| encode(Format::Line, e)).collect();
        let mut got = Vec::new();
        let n = line::Decoder::new()
            .decode_each(&packed, |name, params| got.push((name.to_owned(), params.to_vec())))
            .unwrap();
        prop_assert_eq!(n, events.len());
        let want: Vec<_> = events
            .iter()
            .map(|e| (e.name().as_str().to_owned(), normalize_line(&e.params().to_vec())))
            .collect();
        prop_assert_eq!(got, want);
    }

    #[test]
    fn jsonrpc_reads_concatenated_events_in_order(
        events in prop::collection::vec(event(false), 1..5),
        sep in prop::sample::select(vec!["", "\n", " \r\n\t"]),
    ) {
        let mut packed = Vec::new();
        for e in &events {
            packed.extend(encode(Format::Jsonrpc, e));
            packed.extend(sep.as_bytes());
        }
        let got: Vec<_> = jsonrpc::decode(&packed).unwrap().iter().map(named_params).collect();
        let want: Vec<_> = events
            .iter()
            .map(|e| (e.name().as_str().to_owned(), normalize_jsonrpc(&e.params().to_vec())))
            .collect();
        prop_assert_eq!(got, want);
    }

    /// Arbitrary bytes never panic, and whatever decodes re-encodes and decodes to itself.
    #[test]
    fn arbitrary_bytes_never_panic_and_decoding_is_stable(
        bytes in prop_oneof![
            prop::collection::vec(any::<u8>(), 0..64),
            prop::collection::vec(
                prop::sample::select(b"E_\n\":\\ {}[],0-1.ae\r'".to_vec()),
                0..64,
            ),
        ]
    ) {
        assert_decoding_is_stable(&bytes);
    }

    /// Valid datagrams with one byte changed: decoding still never panics.
    #[test]
    fn mutated_encodings_never_panic(e in event(false), at in any::<prop::sample::Index>(), b in any::<u8>()) {
        for format in Format::ALL {
            let mut bytes = encode(format, &e);
            let i = at.index(bytes.len());
            bytes[i] = b;
            let _ = decode::decode(&bytes, format.into());
        }
    }
}
