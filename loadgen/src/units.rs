//! Quantities on the command line and in the config file: rates, durations, sizes, percentages.

use std::fmt;
use std::str::FromStr;

use event_datagram::MAX_DATAGRAM;
use serde::Deserialize;

/// An event rate as an exact fraction: `events` per `per_ns` nanoseconds.
///
/// Kept as a fraction so `1.5k`, `30/min` and `1M` all give exact integer schedules.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(try_from = "String")]
pub struct Rate {
    /// Events per period.
    pub events: u64,
    /// The period in nanoseconds.
    pub per_ns: u64,
}

impl Rate {
    /// `n` events per second.
    pub const fn per_sec(n: u64) -> Rate {
        Rate {
            events: n,
            per_ns: 1_000_000_000,
        }
    }

    /// Events per second as a float (for reports).
    pub fn per_s(self) -> f64 {
        self.events as f64 * 1e9 / self.per_ns as f64
    }

    /// `per_s` events per second to a thousandth of an event per second (at least that: never
    /// 0, which cannot be scheduled).
    pub fn from_per_s(per_s: f64) -> Rate {
        let events = ((per_s * 1e3).round() as u64).max(1);
        let per_ns = 1_000_000_000_000;
        let g = gcd(events, per_ns);
        Rate {
            events: events / g,
            per_ns: per_ns / g,
        }
    }

    /// The same rate scaled by `f` (capacity search), at least 1 event per second.
    pub fn scaled(self, f: f64) -> Rate {
        Rate::per_sec((self.per_s() * f).round().max(1.0) as u64)
    }
}

impl FromStr for Rate {
    type Err = String;

    /// `1M`, `250k`, `1.5k`, `500`, `500/s`, `30/min`, `2/h`.
    fn from_str(s: &str) -> Result<Rate, String> {
        let bad = || format!("invalid rate {s:?}: expected e.g. 1M, 250k, 1.5k, 500/s or 30/min");
        let (num, per_ns) = match s.split_once('/') {
            Some((n, "s")) => (n, 1_000_000_000u64),
            Some((n, "min")) => (n, 60_000_000_000),
            Some((n, "h")) => (n, 3_600_000_000_000),
            Some(_) => return Err(bad()),
            None => (s, 1_000_000_000),
        };
        let (digits, mult) = match num.as_bytes().last() {
            Some(b'k' | b'K') => (&num[..num.len() - 1], 1_000u64),
            Some(b'M') => (&num[..num.len() - 1], 1_000_000),
            Some(b'G') => (&num[..num.len() - 1], 1_000_000_000),
            _ => (num, 1),
        };
        let (scaled, denom) = parse_decimal(digits).ok_or_else(bad)?;
        let events = scaled.checked_mul(mult).ok_or_else(bad)?;
        if events == 0 {
            return Err(format!("invalid rate {s:?}: must be above 0"));
        }
        // `events / denom` per period; fold the decimal denominator into the period.
        let per_ns = per_ns.checked_mul(denom).ok_or_else(bad)?;
        let g = gcd(events, per_ns);
        Ok(Rate {
            events: events / g,
            per_ns: per_ns / g,
        })
    }
}

impl TryFrom<String> for Rate {
    type Error = String;
    fn try_from(s: String) -> Result<Rate, String> {
        s.parse()
    }
}

impl fmt::Display for Rate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human_count(self.per_s()))?;
        f.write_str("/s")
    }
}

/// `"1.5"` as `(15, 10)`: an exact decimal, at most 6 fractional digits.
fn parse_decimal(s: &str) -> Option<(u64, u64)> {
    let (int, frac) = s.split_once('.').unwrap_or((s, ""));
    if int.is_empty() && frac.is_empty() || frac.len() > 6 {
        return None;
    }
    let all = |t: &str| t.bytes().all(|b| b.is_ascii_digit());
    if !all(int) || !all(frac) {
        return None;
    }
    let denom = 10u64.pow(frac.len() as u32);
    let int: u64 = if int.is_empty() { 0 } else { int.parse().ok()? };
    let frac: u64 = if frac.is_empty() {
        0
    } else {
        frac.parse().ok()?
    };
    Some((int.checked_mul(denom)?.checked_add(frac)?, denom))
}

fn gcd(mut a: u64, mut b: u64) -> u64 {
    while b != 0 {
        (a, b) = (b, a % b);
    }
    a.max(1)
}

/// A duration in nanoseconds: `10s`, `500ms`, `100us`, `250ns`, `2m`, `1.5s`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(try_from = "String")]
pub struct Nanos(pub u64);

impl FromStr for Nanos {
    type Err = String;

    fn from_str(s: &str) -> Result<Nanos, String> {
        let bad = || format!("invalid duration {s:?}: expected e.g. 10s, 500ms, 100us or 2m");
        let split = s
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .ok_or_else(bad)?;
        let (num, unit) = s.split_at(split);
        let unit_ns: u64 = match unit {
            "ns" => 1,
            "us" | "µs" => 1_000,
            "ms" => 1_000_000,
            "s" => 1_000_000_000,
            "m" | "min" => 60_000_000_000,
            _ => return Err(bad()),
        };
        let (scaled, denom) = parse_decimal(num).ok_or_else(bad)?;
        let ns = (scaled as u128 * unit_ns as u128 / denom as u128)
            .try_into()
            .map_err(|_| bad())?;
        Ok(Nanos(ns))
    }
}

impl TryFrom<String> for Nanos {
    type Error = String;
    fn try_from(s: String) -> Result<Nanos, String> {
        s.parse()
    }
}

impl fmt::Display for Nanos {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&human_ns(self.0 as f64))
    }
}

/// The longest `--duration` or `--warmup` loadgen takes (a week): far past any run, and far
/// from where CLOCK_MONOTONIC + duration overflows (`307445734m` wrapped and ended at once).
pub const MAX_DURATION: Nanos = Nanos(7 * 86_400 * 1_000_000_000);
/// [`MAX_DURATION`] for messages.
pub const MAX_DURATION_TEXT: &str = "a week (10080m)";

/// A fraction written as a percentage, `0%` to `100%` (`0.01%`, `99%`). The `%` is required:
/// a bare `0.5` could be meant as 0.5 % or as 50 %.
#[derive(Clone, Copy, Debug, PartialEq, Deserialize)]
#[serde(try_from = "String")]
pub struct Fraction(pub f64);

impl FromStr for Fraction {
    type Err = String;

    fn from_str(s: &str) -> Result<Fraction, String> {
        let bad = || format!("invalid percentage {s:?}: expected e.g. 0.01% or 99%");
        let v = match s.strip_suffix('%') {
            Some(p) => p.parse::<f64>().map_err(|_| bad())? / 100.0,
            None => return Err(bad()),
        };
        if !(0.0..=1.0).contains(&v) {
            return Err(bad());
        }
        Ok(Fraction(v))
    }
}

impl TryFrom<String> for Fraction {
    type Error = String;
    fn try_from(s: String) -> Result<Fraction, String> {
        s.parse()
    }
}

/// The smallest datagram size loadgen accepts before looking at the payload.
pub const MIN_SIZE: usize = 1;

/// Parses a datagram size: `64`, `1400`, `8k` (8192), `64k` is refused (65 536 > 65 457).
pub fn parse_size(s: &str) -> Result<usize, String> {
    let (digits, unit) = match s.strip_suffix(['k', 'K']) {
        Some(k) => (k, 1024),
        None => (s, 1),
    };
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return Err(format!(
            "invalid size {s:?}: expected bytes, e.g. 64, 1400 or 8k"
        ));
    }
    // Checked: `18014398509481985k` wrapped to 1024. Too many digits is as out of range.
    let n = digits
        .parse::<usize>()
        .ok()
        .and_then(|n| n.checked_mul(unit));
    match n {
        Some(n) if (MIN_SIZE..=MAX_DATAGRAM).contains(&n) => Ok(n),
        Some(n) if n < MIN_SIZE => Err(format!(
            "size {n} is too small: at least {MIN_SIZE} byte (and a whole loadgen event: 59 \
             bytes in line, 107 in jsonrpc)"
        )),
        Some(n) => Err(format!(
            "size {n} is out of range: a datagram is at most {MAX_DATAGRAM} bytes"
        )),
        None => Err(format!(
            "size {s} is out of range: a datagram is at most {MAX_DATAGRAM} bytes"
        )),
    }
}

/// A count for humans: `1.23M`, `45.6k`, `789`, `12.5`, `0.25`.
pub fn human_count(v: f64) -> String {
    let a = v.abs();
    if a >= 1e9 {
        format!("{:.3}G", v / 1e9)
    } else if a >= 1e6 {
        format!("{:.3}M", v / 1e6)
    } else if a >= 1e4 {
        format!("{:.1}k", v / 1e3)
    } else if a == a.trunc() {
        format!("{v:.0}")
    } else if a >= 10.0 {
        format!("{v:.1}")
    } else {
        // Three significant digits, so a rate of 0.25/s does not print as 0.2/s.
        let decimals = (2 - a.log10().floor() as i32).max(1) as usize;
        let s = format!("{v:.decimals$}");
        s.trim_end_matches('0').trim_end_matches('.').to_owned()
    }
}

/// Nanoseconds for humans: `812ns`, `45.3us`, `1.25ms`, `2.00s`.
pub fn human_ns(ns: f64) -> String {
    if ns >= 1e9 {
        format!("{:.2}s", ns / 1e9)
    } else if ns >= 1e6 {
        format!("{:.2}ms", ns / 1e6)
    } else if ns >= 1e3 {
        format!("{:.1}us", ns / 1e3)
    } else {
        format!("{ns:.0}ns")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rates_parse_exactly() {
        assert_eq!("1M".parse::<Rate>().unwrap().per_s(), 1e6);
        assert_eq!("250k".parse::<Rate>().unwrap().per_s(), 250e3);
        assert_eq!("1.5k".parse::<Rate>().unwrap().per_s(), 1500.0);
        assert_eq!("500/s".parse::<Rate>().unwrap().per_s(), 500.0);
        assert_eq!("30/min".parse::<Rate>().unwrap().per_s(), 0.5);
        let r: Rate = "2.5".parse().unwrap();
        assert_eq!((r.events, r.per_ns), (1, 400_000_000));
        for bad in ["", "0", "k", "1x", "1/week", "-3", "1.2.3"] {
            assert!(bad.parse::<Rate>().is_err(), "{bad}");
        }
    }

    #[test]
    fn durations_sizes_and_fractions_parse() {
        assert_eq!("100us".parse::<Nanos>().unwrap(), Nanos(100_000));
        assert_eq!("1.5s".parse::<Nanos>().unwrap(), Nanos(1_500_000_000));
        assert_eq!("2m".parse::<Nanos>().unwrap(), Nanos(120_000_000_000));
        assert!("10".parse::<Nanos>().is_err());
        assert_eq!(parse_size("8k"), Ok(8192));
        assert_eq!(parse_size("65457"), Ok(65457));
        assert!(parse_size("65458").unwrap_err().contains("65457"));
        assert_eq!("0.01%".parse::<Fraction>().unwrap().0, 0.0001);
        assert_eq!("99%".parse::<Fraction>().unwrap().0, 0.99);
        assert!("101%".parse::<Fraction>().is_err());
    }

    /// `--max-loss 0.5` was accepted as 50 %, while `99` and `1.5` were refused with "expected
    /// e.g. 0.01% or 99%": a percentage takes its `%`, as the message and the docs say.
    #[test]
    fn a_percentage_without_its_sign_is_refused_as_the_message_says() {
        for bare in ["0.5", "0", "1", "99", "1.5", "0.0001"] {
            let e = bare.parse::<Fraction>().unwrap_err();
            assert!(e.contains("expected e.g. 0.01% or 99%"), "{bare}: {e}");
        }
        assert_eq!("0%".parse::<Fraction>().unwrap().0, 0.0);
        assert_eq!("100%".parse::<Fraction>().unwrap().0, 1.0);
        assert_eq!("50%".parse::<Fraction>().unwrap().0, 0.5);
    }

    #[test]
    fn a_size_that_overflows_is_out_of_range() {
        // 18014398509481985 * 1024 wraps to 1024 in 64 bits.
        let e = parse_size("18014398509481985k").unwrap_err();
        assert!(e.contains("out of range") && e.contains("65457"), "{e}");
        assert!(parse_size("99999999999999999999")
            .unwrap_err()
            .contains("65457"));
    }

    /// `--sizes 0` said "out of range: a datagram is at most 65457 bytes".
    #[test]
    fn a_size_of_zero_is_too_small() {
        for zero in ["0", "0k", "000"] {
            let e = parse_size(zero).unwrap_err();
            assert!(e.contains("size 0 is too small"), "{e}");
            assert!(!e.contains("at most"), "{e}");
        }
    }

    #[test]
    fn rates_under_ten_per_second_show_three_significant_digits() {
        assert_eq!(human_count(0.25), "0.25");
        assert_eq!(human_count(0.5), "0.5");
        assert_eq!(human_count(2.5), "2.5");
        assert_eq!(human_count(1.0 / 3600.0), "0.000278");
        assert_eq!(human_count(1538.6), "1538.6");
        assert_eq!("0.25/s".parse::<Rate>().unwrap().to_string(), "0.25/s");
    }
}
