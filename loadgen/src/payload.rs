//! The payload: a normal event of our format, padded so the encoded datagram has exactly the
//! requested size, and its parsing at the receiver with the library's decoders.
//!
//! `E_LOADGEN` with five unnamed string params, fixed width so every datagram of a run has the
//! same size: run id (8 hex digits), producer (3 digits), sequence number (12 digits), intended
//! CLOCK_MONOTONIC ns (19 digits), then padding (`x`s). Unnamed params keep the smallest event
//! at 59 bytes in `line` (`jsonrpc` needs 107).

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

/// Parses received datagrams back into [`Fields`] with the library's decoders (every event of a
/// coalesced datagram).
#[derive(Debug, Default)]
pub struct Parser {
    line: line::Decoder,
    jsonrpc: jsonrpc::Decoder,
}

impl Parser {
    /// A parser (reusable: the decoders keep their scratch, so parsing does not allocate).
    pub fn new() -> Parser {
        Parser::default()
    }

    /// Calls `f` for each loadgen event in `datagram`; returns how many were malformed (an
    /// undecodable datagram counts as one).
    pub fn parse(&mut self, datagram: &[u8], mut f: impl FnMut(Fields)) -> u64 {
        let mut bad = 0;
        let mut one = |name: &str, params: DecodedParams<'_>| match fields(name, params) {
            Some(x) => f(x),
            None => bad += 1,
        };
        let ok = match datagram.first() {
            Some(b'{') => self.jsonrpc.decode_each(datagram, &mut one).is_ok(),
            _ => self.line.decode_each(datagram, &mut one).is_ok(),
        };
        if ok {
            bad
        } else {
            bad + 1
        }
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
    let producer = u32::try_from(decimal(next()?)?).ok()?;
    let seq = decimal(next()?)?;
    let intended_ns = decimal(next()?)?;
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
fn decimal(s: &str) -> Option<u64> {
    if s.is_empty() || s.len() > NS_DIGITS {
        return None;
    }
    let mut v = 0u64;
    for c in s.bytes() {
        let d = c.wrapping_sub(b'0');
        if d > 9 {
            return None;
        }
        v = v * 10 + u64::from(d);
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
                    assert_eq!(parser.parse(&buf[..n], |f| got.push(f)), 0);
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
                decimal(s),
                s.parse::<u64>().ok().filter(|_| !s.starts_with('+'))
            );
        }
        assert_eq!(decimal("00000000000000000001"), None, "20 digits");
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
        assert_eq!(parser.parse(b"E_OTHER\nx\n\n", |_| panic!()), 1);
        assert_eq!(parser.parse(b"garbage", |_| panic!()), 1);
        assert_eq!(parser.parse(b"{nope", |_| panic!()), 1);
    }
}
