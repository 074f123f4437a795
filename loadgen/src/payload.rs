//! The payload: a normal event of our format, padded so the encoded datagram has exactly the
//! requested size, and its parsing at the receiver: byte for byte against what the encoder
//! writes for the run's format and size, or with the library's decoders.
//!
//! `E_LOADGEN` with five unnamed string params, fixed width so every datagram of a run has the
//! same size: run id (8 hex digits), producer (3 digits), sequence number (12 digits), intended
//! CLOCK_MONOTONIC ns (19 digits), then padding (`x`s). Unnamed params keep the smallest event
//! at 59 bytes in `line` (`jsonrpc` needs 107).

use std::ops::Range;

use event_datagram::decode::{jsonrpc, line, DecodedParams};
use event_datagram::{Format, Params, ValueRef, MAX_DATAGRAM};

/// The event loadgen raises.
pub const EVENT: &str = "E_LOADGEN";

/// Most producers a run can have (the producer field has 3 digits).
pub const MAX_PRODUCERS: usize = 999;

const SEQ_DIGITS: usize = 12;

/// Events one producer may raise in one run: its sequence number has 12 digits.
pub const MAX_EVENTS_PER_PRODUCER: u64 = 10u64.pow(SEQ_DIGITS as u32);
const NS_DIGITS: usize = 19;

/// One received event's fields.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Fields {
    /// The run id.
    pub run: u32,
    /// The producer.
    pub producer: u32,
    /// The producer's sequence number.
    pub seq: u64,
    /// Intended CLOCK_MONOTONIC time, ns.
    pub intended_ns: u64,
}

/// Builds the params of every event of one run, all encoding to `size` bytes.
#[derive(Clone, Debug)]
pub struct Template {
    format: Format,
    size: usize,
    /// The last param, the padding, built once.
    pad: Params,
}

/// A size the payload cannot have.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SizeError {
    /// The size asked for.
    pub size: usize,
    /// The smallest possible in this format.
    pub min: usize,
    /// The format.
    pub format: Format,
}

impl std::fmt::Display for SizeError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "size {} is too small for the {} format: the smallest loadgen event encodes to {} bytes",
            self.size, self.format, self.min
        )
    }
}

impl Template {
    /// A template for datagrams of exactly `size` bytes in `format`.
    pub fn new(format: Format, size: usize) -> Result<Template, SizeError> {
        let min = Self::min_size(format);
        if size < min || size > MAX_DATAGRAM {
            return Err(SizeError { size, min, format });
        }
        let t = Template {
            format,
            size,
            pad: pad("x".repeat(size - min + 1)),
        };
        // Verify the arithmetic on a real encode with the widest field values.
        let len = t.encoded_len(&t.params(
            u32::MAX,
            MAX_PRODUCERS as u32,
            999_999_999_999,
            u64::MAX / 2,
        ));
        assert_eq!(len, size, "payload size arithmetic");
        Ok(t)
    }

    /// The smallest datagram in `format` (one byte of padding).
    pub fn min_size(format: Format) -> usize {
        let t = Template {
            format,
            size: 0,
            pad: pad("x".into()),
        };
        t.encoded_len(&t.params(0, 0, 0, 0))
    }

    fn encoded_len(&self, params: &Params) -> usize {
        let mut scratch = vec![0u8; MAX_DATAGRAM];
        self.format
            .encode(EVENT, params, &mut scratch)
            .expect("sizes are checked against MAX_DATAGRAM")
    }

    /// The datagram size.
    pub fn size(&self) -> usize {
        self.size
    }

    /// The params of one event.
    pub fn params(&self, run: u32, producer: u32, seq: u64, intended_ns: u64) -> Params {
        self.producer(run, producer).params(seq, intended_ns)
    }

    /// The params of `producer`'s events in run `run`, built once with all but the sequence
    /// number and the intended time.
    pub fn producer(&self, run: u32, producer: u32) -> ProducerParams {
        let mut prepared = Params::new()
            .unnamed_str(hex8(run, &mut [0; 8]))
            .and_then(|p| p.unnamed_str(digits(producer.into(), &mut [0; 3])))
            .and_then(|p| p.unnamed_str(digits(0, &mut [0; SEQ_DIGITS])))
            .and_then(|p| p.unnamed_str(digits(0, &mut [0; NS_DIGITS])))
            .expect("unnamed params need no validation");
        prepared.extend_from(&self.pad);
        ProducerParams { prepared }
    }
}

/// One producer's events' params: a clone of those built for it, with two values set (fixed
/// width, so their bytes are overwritten in place). Building each event anew took two fifths
/// of the generator's time at 1M events/s.
#[derive(Clone, Debug)]
pub struct ProducerParams {
    prepared: Params,
}

impl ProducerParams {
    /// The params of the event with sequence number `seq`, intended at `intended_ns`. Numbers
    /// are written fixed-width (zero padded) into stack buffers.
    #[inline]
    pub fn params(&self, seq: u64, intended_ns: u64) -> Params {
        let mut params = self.prepared.clone();
        for (index, buf, value) in [
            (2, &mut [0u8; SEQ_DIGITS][..], seq),
            (3, &mut [0u8; NS_DIGITS][..], intended_ns),
        ] {
            params
                .set(index, ValueRef::Str(digits(value, buf)))
                .expect("a few bytes");
        }
        params
    }
}

/// The padding parameter: one unnamed string.
fn pad(value: String) -> Params {
    Params::new()
        .unnamed_str(&value)
        .expect("unnamed params need no validation")
}

fn hex8(v: u32, buf: &mut [u8]) -> &str {
    const HEX: &[u8; 16] = b"0123456789abcdef";
    for (i, b) in buf.iter_mut().enumerate() {
        *b = HEX[(v >> (28 - 4 * i) & 0xf) as usize];
    }
    std::str::from_utf8(buf).expect("ASCII")
}

/// `v` in decimal, zero padded to the buffer's width (the highest digits are cut: widths are
/// chosen so real values fit). Two digits a step: half the chain of divisions.
fn digits(mut v: u64, buf: &mut [u8]) -> &str {
    let mut pairs = buf.rchunks_exact_mut(2);
    for pair in &mut pairs {
        let d = (v % 100) as usize;
        v /= 100;
        pair.copy_from_slice(&DIGIT_PAIRS[2 * d..2 * d + 2]);
    }
    if let [first] = pairs.into_remainder() {
        *first = b'0' + (v % 10) as u8;
    }
    std::str::from_utf8(buf).expect("ASCII")
}

/// `00`, `01`, ... `99`.
const DIGIT_PAIRS: [u8; 200] = {
    let mut pairs = [0; 200];
    let mut i = 0;
    while i < 100 {
        pairs[2 * i] = b'0' + (i / 10) as u8;
        pairs[2 * i + 1] = b'0' + (i % 10) as u8;
        i += 1;
    }
    pairs
};

/// Every byte of one format's and size's events but their four fixed-width fields: how a
/// receiver checks and reads an event without decoding it. An event matches only if it is
/// byte for byte what the encoder writes for some values of the fields, so what it reads is
/// what the library's decoders would.
#[derive(Clone, Debug)]
struct Shape {
    format: Format,
    /// The encoding with every field zero.
    bytes: Vec<u8>,
    /// Where the run id, producer, sequence number and intended time are, in that order.
    fields: [Range<usize>; 4],
}

impl Shape {
    /// The shape of `format`'s events of `size` bytes, if loadgen sends such events.
    fn new(format: Format, size: usize) -> Option<Shape> {
        let t = Template::new(format, size).ok()?;
        let encode = |params: &Params| {
            let mut buf = vec![0u8; size];
            let n = format.encode(EVENT, params, &mut buf).ok()?;
            (n == size).then_some(buf)
        };
        let zeros = encode(&t.params(0, 0, 0, 0))?;
        let ones = encode(&t.params(0x1111_1111, 111, 111_111_111_111, 1_111_111_111_111_111_111))?;
        // The fields are where the two differ: four runs of bytes, as wide as the fields.
        let mut fields = Vec::new();
        let mut i = 0;
        while i < size {
            if zeros[i] == ones[i] {
                i += 1;
                continue;
            }
            let start = i;
            while i < size && zeros[i] != ones[i] {
                i += 1;
            }
            fields.push(start..i);
        }
        let fields: [Range<usize>; 4] = fields.try_into().ok()?;
        let widths = fields.clone().map(|r| r.len());
        (widths == [8, 3, SEQ_DIGITS, NS_DIGITS]).then_some(Shape {
            format,
            bytes: zeros,
            fields,
        })
    }

    fn len(&self) -> usize {
        self.bytes.len()
    }

    /// The fields of `event` if it has this shape.
    #[inline]
    fn read(&self, event: &[u8]) -> Option<Fields> {
        if event.len() != self.bytes.len() {
            return None;
        }
        // The bytes between and around the fields, as written.
        let mut at = 0;
        for field in &self.fields {
            if event[at..field.start] != self.bytes[at..field.start] {
                return None;
            }
            at = field.end;
        }
        if event[at..] != self.bytes[at..] {
            return None;
        }
        let [run, producer, seq, intended] = &self.fields;
        Some(Fields {
            run: hex(&event[run.clone()])?,
            producer: decimal(&event[producer.clone()])? as u32,
            seq: decimal(&event[seq.clone()])?,
            intended_ns: decimal(&event[intended.clone()])?,
        })
    }
}

/// Parses received datagrams back into [`Fields`]: a datagram of events of a shape seen
/// lately is read against it; any other goes through the library's decoders (every event of
/// a coalesced datagram), and when it holds loadgen events of one size, their shape is kept
/// for the next. With it the receivers' CPU per event at 1M events/s coalesced halved (they had
/// taken as much of the machine as the reactor).
#[derive(Debug, Default)]
pub struct Parser {
    line: line::Decoder,
    jsonrpc: jsonrpc::Decoder,
    /// Shapes seen lately, the last used first: a few, for a sink that several runs of
    /// different sizes or formats send to at once.
    shapes: Vec<Shape>,
}

/// Shapes a [`Parser`] keeps.
const SHAPES: usize = 4;

impl Parser {
    /// A parser (reusable: the decoders keep their scratch, so parsing allocates only to keep a
    /// new shape).
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Appends the fields of each loadgen event in `datagram` to `out`; returns how many
    /// events were malformed (an undecodable datagram counts as one).
    pub fn parse(&mut self, datagram: &[u8], out: &mut Vec<Fields>) -> u64 {
        let before = out.len();
        if self.read_shaped(datagram, out) {
            return 0;
        }
        let bad = self.decode(datagram, out);
        let events = out.len() - before;
        // Events of one size: the shape of the next datagrams, most likely.
        if bad == 0 && events > 0 && datagram.len().is_multiple_of(events) {
            let (format, size) = (format_of(datagram), datagram.len() / events);
            if self
                .shapes
                .iter()
                .any(|s| s.len() == size && s.format == format)
            {
                return bad;
            }
            if let Some(shape) = Shape::new(format, size) {
                self.shapes.insert(0, shape);
                self.shapes.truncate(SHAPES);
            }
        }
        bad
    }

    /// True when every event of `datagram` has one of the kept shapes (their fields appended;
    /// that shape is tried first next time).
    fn read_shaped(&mut self, datagram: &[u8], out: &mut Vec<Fields>) -> bool {
        let before = out.len();
        for i in 0..self.shapes.len() {
            let shape = &self.shapes[i];
            if datagram.is_empty() || !datagram.len().is_multiple_of(shape.len()) {
                continue;
            }
            if datagram
                .chunks_exact(shape.len())
                .all(|event| shape.read(event).map(|f| out.push(f)).is_some())
            {
                self.shapes[..=i].rotate_right(1);
                return true;
            }
            out.truncate(before);
        }
        false
    }

    /// [`parse`](Self::parse) with the library's decoders.
    fn decode(&mut self, datagram: &[u8], out: &mut Vec<Fields>) -> u64 {
        let mut bad = 0;
        let mut one = |name: &str, params: DecodedParams<'_>| match fields(name, params) {
            Some(x) => out.push(x),
            None => bad += 1,
        };
        let ok = match format_of(datagram) {
            Format::Jsonrpc => self.jsonrpc.decode_each(datagram, &mut one).is_ok(),
            Format::Line => self.line.decode_each(datagram, &mut one).is_ok(),
        };
        if ok {
            bad
        } else {
            bad + 1
        }
    }
}

/// The format a datagram is in: `jsonrpc` objects start with `{`, a line event with its name.
fn format_of(datagram: &[u8]) -> Format {
    if datagram.first() == Some(&b'{') {
        Format::Jsonrpc
    } else {
        Format::Line
    }
}

fn fields(name: &str, params: DecodedParams<'_>) -> Option<Fields> {
    if name != EVENT {
        return None;
    }
    let mut it = params.iter().map(|p| match p.value {
        ValueRef::Str(s) => Some(s),
        ValueRef::Int(_) => None,
    });
    let mut next = || it.next().flatten();
    let run = u32::from_str_radix(next()?, 16).ok()?;
    let producer = u32::try_from(decimal(next()?.as_bytes())?).ok()?;
    let seq = decimal(next()?.as_bytes())?;
    let intended_ns = decimal(next()?.as_bytes())?;
    next()?;
    Some(Fields {
        run,
        producer,
        seq,
        intended_ns,
    })
}

/// A zero-padded decimal of at most 19 digits (what [`digits`] writes). Plain arithmetic: the
/// standard parser's overflow checks per digit were a tenth of the receivers' time.
#[inline]
fn decimal(s: &[u8]) -> Option<u64> {
    if s.is_empty() || s.len() > NS_DIGITS {
        return None;
    }
    let mut v = 0u64;
    for &c in s {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u64::from(d);
    }
    Some(v)
}

/// Lowercase hex digits, as [`hex8`] writes them.
#[inline]
fn hex(s: &[u8]) -> Option<u32> {
    let mut v = 0u32;
    for &c in s {
        let d = match c {
            b'0'..=b'9' => c - b'0',
            b'a'..=b'f' => c - b'a' + 10,
            _ => return None,
        };
        v = v << 4 | u32::from(d);
    }
    Some(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_size_encodes_exactly_and_parses_back() {
        assert_eq!(Template::min_size(Format::Line), 59);
        assert_eq!(Template::min_size(Format::Jsonrpc), 107);
        let mut buf = vec![0u8; MAX_DATAGRAM];
        let mut parser = Parser::new();
        for format in Format::ALL {
            for size in [
                Template::min_size(format),
                64,
                512,
                1400,
                8192,
                MAX_DATAGRAM,
            ] {
                let Ok(t) = Template::new(format, size) else {
                    assert!(size < 107 && format == Format::Jsonrpc);
                    continue;
                };
                for (seq, ns) in [(0, 0), (42, 123_456_789), (999_999_999_999, u64::MAX / 2)] {
                    let p = t.params(0xdead_beef, 7, seq, ns);
                    let n = format.encode(EVENT, &p, &mut buf).unwrap();
                    assert_eq!(n, size, "{format} {size}");
                    let mut got = Vec::new();
                    assert_eq!(parser.parse(&buf[..n], &mut got), 0);
                    let want = Fields {
                        run: 0xdead_beef,
                        producer: 7,
                        seq,
                        intended_ns: ns,
                    };
                    assert_eq!(got, [want]);
                }
            }
        }
    }

    /// `count` events of `t` from sequence number `seq` on, packed back to back as a
    /// coalesced datagram, and their fields.
    fn packed(t: &Template, seq: u64, count: u64) -> (Vec<u8>, Vec<Fields>) {
        let (mut datagram, mut fields) = (Vec::new(), Vec::new());
        let mut buf = vec![0u8; MAX_DATAGRAM];
        for seq in seq..seq + count {
            let f = Fields {
                run: 0x0bad_cafe,
                producer: (seq % 1000) as u32,
                seq,
                intended_ns: seq * 1_000_003,
            };
            let p = t.params(f.run, f.producer, f.seq, f.intended_ns);
            let n = t.format.encode(EVENT, &p, &mut buf).unwrap();
            datagram.extend_from_slice(&buf[..n]);
            fields.push(f);
        }
        (datagram, fields)
    }

    /// The first datagram goes through the decoders and leaves its events' shape; the next,
    /// of one event or many, are read against it; all give every event's fields.
    #[test]
    fn datagrams_are_read_against_the_shape_the_decoders_found() {
        for format in Format::ALL {
            for size in [Template::min_size(format), 200, 1400, MAX_DATAGRAM] {
                let t = Template::new(format, size).unwrap();
                let mut parser = Parser::new();
                let (first, want) = packed(&t, 0, 1);
                let mut got = Vec::new();
                assert!(!parser.read_shaped(&first, &mut got));
                assert_eq!(parser.parse(&first, &mut got), 0);
                assert_eq!(got, want);
                let count = (MAX_DATAGRAM / size).min(5) as u64;
                for (seq, count) in [(1, 1), (2, count), (999_999_999_990, 1)] {
                    let (next, want) = packed(&t, seq, count);
                    let mut got = Vec::new();
                    assert!(parser.read_shaped(&next, &mut got), "{format} {size}");
                    assert_eq!(got, want, "{format} {size}");
                }
            }
        }
        // Runs of different sizes and formats to one sink at once.
        let templates = [
            (Format::Line, 200),
            (Format::Jsonrpc, 200),
            (Format::Line, 300),
        ]
        .map(|(format, size)| Template::new(format, size).unwrap());
        let mut parser = Parser::new();
        for t in &templates {
            parser.parse(&packed(t, 0, 1).0, &mut Vec::new());
        }
        for t in templates.iter().rev().chain(&templates) {
            let (datagram, want) = packed(t, 7, 3);
            let mut got = Vec::new();
            assert!(parser.read_shaped(&datagram, &mut got));
            assert_eq!(got, want);
        }
    }

    /// Whatever a byte of a datagram is changed to, reading it against the shape (and
    /// decoding it when it does not match) gives what decoding it gives.
    #[test]
    fn a_changed_byte_reads_as_the_decoders_read_it() {
        for format in Format::ALL {
            let t = Template::new(format, 200).unwrap();
            let mut parser = Parser::new();
            let (first, _) = packed(&t, 0, 1);
            parser.parse(&first, &mut Vec::new());
            let (datagram, _) = packed(&t, 41, 2);
            for at in 0..datagram.len() {
                for byte in *b"019afAx:\"\n{}[],-" {
                    let mut changed = datagram.clone();
                    changed[at] = byte;
                    let (mut read, mut decoded) = (Vec::new(), Vec::new());
                    let bad = parser.parse(&changed, &mut read);
                    let bad_decoded = Parser::new().decode(&changed, &mut decoded);
                    assert_eq!((bad, read), (bad_decoded, decoded), "{format} {at} {byte}");
                }
            }
        }
    }

    #[test]
    fn digits_are_the_lowest_zero_padded_decimal_digits() {
        for width in 1..=20 {
            for v in [
                0,
                7,
                42,
                999,
                1_000_001,
                123_456_789_012,
                u64::MAX / 2,
                u64::MAX,
            ] {
                let mut buf = vec![0; width];
                let full = format!("{v:020}");
                assert_eq!(digits(v, &mut buf), &full[20 - width..], "{v} in {width}");
            }
        }
    }

    #[test]
    fn decimals_parse_like_the_standard_parser() {
        for s in [
            "0",
            "007",
            "1234567890123",
            "9999999999999999999",
            "",
            "12a",
            "-1",
            "+1",
        ] {
            assert_eq!(
                decimal(s.as_bytes()),
                s.parse::<u64>().ok().filter(|_| !s.starts_with('+'))
            );
        }
        assert_eq!(decimal(b"00000000000000000001"), None, "20 digits");
    }

    #[test]
    fn too_small_sizes_are_refused_with_the_minimum() {
        let e = Template::new(Format::Jsonrpc, 64).unwrap_err();
        assert!(e.to_string().contains("107"), "{e}");
        assert!(Template::new(Format::Line, 58).is_err());
        assert!(Template::new(Format::Line, MAX_DATAGRAM + 1).is_err());
    }

    #[test]
    fn foreign_datagrams_are_counted_as_malformed() {
        let mut parser = Parser::new();
        let mut got = Vec::new();
        assert_eq!(parser.parse(b"E_OTHER\nx\n\n", &mut got), 1);
        assert_eq!(parser.parse(b"garbage", &mut got), 1);
        assert_eq!(parser.parse(b"{nope", &mut got), 1);
        assert_eq!(got, []);
    }
}
