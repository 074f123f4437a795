//! What a receiver records per run: end-to-end latency (intended time to receipt) in
//! HdrHistograms, overall and per second, and loss, duplicates and reordering per producer from
//! sequence numbers.

use hdrhistogram::Histogram;
use serde::Serialize;

use crate::payload::Fields;

/// Highest latency recorded exactly (larger values are clamped): one hour, in ns.
pub const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// A latency histogram: ns, 3 significant digits (LOADGEN.md).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid bounds")
}

/// Which sequence numbers of one producer arrived.
#[derive(Clone, Debug, Default)]
pub struct SeqTrack {
    seen: Vec<u64>,
    max: Option<u64>,
}

impl SeqTrack {
    /// Notes `seq`; returns `(duplicate, reordered)`.
    pub fn note(&mut self, seq: u64) -> (bool, bool) {
        let (word, bit) = ((seq / 64) as usize, 1u64 << (seq % 64));
        if word >= self.seen.len() {
            self.seen.resize((word + 1).next_power_of_two(), 0);
        }
        let dup = self.seen[word] & bit != 0;
        self.seen[word] |= bit;
        let reordered = !dup && self.max.is_some_and(|m| seq < m);
        self.max = Some(self.max.map_or(seq, |m| m.max(seq)));
        (dup, reordered)
    }

    /// Sequence numbers up to the highest seen that never arrived (gaps).
    pub fn gaps(&self) -> u64 {
        let unique: u64 = self.seen.iter().map(|w| w.count_ones() as u64).sum();
        self.max.map_or(0, |m| m + 1 - unique)
    }
}

/// What one receiving socket saw of one run.
#[derive(Clone, Debug)]
pub struct Recorder {
    /// Unique events received.
    pub received: u64,
    /// Events received more than once (extra copies).
    pub duplicates: u64,
    /// Events that arrived after a later one of the same producer.
    pub reordered: u64,
    /// Datagrams received (several events each when coalesced).
    pub datagrams: u64,
    /// Bytes received.
    pub bytes: u64,
    /// Latency, ns.
    pub latency: Histogram<u64>,
    /// Latency per second of receipt, counted from the first receipt.
    pub intervals: Vec<Histogram<u64>>,
    /// When the first event arrived (CLOCK_MONOTONIC ns).
    pub first_ns: u64,
    /// When the last event arrived.
    pub last_ns: u64,
    producers: Vec<SeqTrack>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// Nothing recorded yet.
    pub fn new() -> Recorder {
        Recorder {
            received: 0,
            duplicates: 0,
            reordered: 0,
            datagrams: 0,
            bytes: 0,
            latency: histogram(),
            intervals: Vec::new(),
            first_ns: 0,
            last_ns: 0,
            producers: Vec::new(),
        }
    }

    /// Counts one datagram of `len` bytes (its events are [`record`](Self::record)ed apart).
    pub fn datagram(&mut self, len: usize) {
        self.datagrams += 1;
        self.bytes += len as u64;
    }

    /// Records one event received at `now_ns`; its latency is from its own intended time, so
    /// an event that waited in a coalesced datagram shows that wait.
    #[inline]
    pub fn record(&mut self, f: Fields, now_ns: u64) {
        let p = f.producer as usize;
        if p >= self.producers.len() {
            self.producers.resize_with(p + 1, SeqTrack::default);
        }
        let (dup, reordered) = self.producers[p].note(f.seq);
        if dup {
            self.duplicates += 1;
            return;
        }
        self.reordered += reordered as u64;
        if self.received == 0 {
            self.first_ns = now_ns;
        }
        self.received += 1;
        self.last_ns = now_ns;
        let latency = now_ns.saturating_sub(f.intended_ns).max(1);
        self.latency.saturating_record(latency);
        let second = ((now_ns - self.first_ns) / 1_000_000_000) as usize;
        if second >= self.intervals.len() {
            self.intervals.resize_with(second + 1, histogram);
        }
        self.intervals[second].saturating_record(latency);
    }

    /// Sequence gaps over all producers (events missing below each producer's highest).
    pub fn gaps(&self) -> u64 {
        self.producers.iter().map(SeqTrack::gaps).sum()
    }

    /// Adds another socket's record of the same run (per-transport totals).
    pub fn merge(&mut self, o: &Recorder) {
        self.received += o.received;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.datagrams += o.datagrams;
        self.bytes += o.bytes;
        self.latency.add(&o.latency).expect("same bounds");
        if o.intervals.len() > self.intervals.len() {
            self.intervals.resize_with(o.intervals.len(), histogram);
        }
        for (a, b) in self.intervals.iter_mut().zip(&o.intervals) {
            a.add(b).expect("same bounds");
        }
        if self.first_ns == 0 || (o.first_ns != 0 && o.first_ns < self.first_ns) {
            self.first_ns = o.first_ns;
        }
        self.last_ns = self.last_ns.max(o.last_ns);
    }
}

/// Latency percentiles in ns; a percentile above the measured fraction is `None` (not measured:
/// what was lost could have been slower).
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct Percentiles {
    /// Median.
    pub p50: Option<u64>,
    /// 90th percentile.
    pub p90: Option<u64>,
    /// 99th percentile.
    pub p99: Option<u64>,
    /// 99.9th percentile.
    pub p99_9: Option<u64>,
    /// 99.99th percentile.
    pub p99_99: Option<u64>,
    /// Largest value recorded.
    pub max: Option<u64>,
    /// Mean.
    pub mean: Option<f64>,
    /// Values recorded.
    pub count: u64,
}

/// The quantiles the reports show, with their JSON names.
pub const QUANTILES: [(f64, &str); 5] = [
    (0.5, "p50"),
    (0.9, "p90"),
    (0.99, "p99"),
    (0.999, "p99.9"),
    (0.9999, "p99.99"),
];

impl Percentiles {
    /// Percentiles of all scheduled events, of which `h` holds the fraction `measured` (the
    /// ones received). Those that never arrived count as slower than any received: the
    /// fraction `q` of all is the fraction `q / measured` of the received, and a `q` above
    /// `measured` is not known (`None`). Leaving them out would hide a stall that shed them.
    pub fn of(h: &Histogram<u64>, measured: f64) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let q =
            |q: f64| (q <= measured + 1e-12).then(|| h.value_at_quantile((q / measured).min(1.0)));
        Percentiles {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p99_9: q(0.999),
            p99_99: q(0.9999),
            max: Some(h.max()),
            mean: Some((h.mean() * 10.0).round() / 10.0),
            count: h.len(),
        }
    }

    /// The five quantiles in [`QUANTILES`] order.
    pub fn quantiles(&self) -> [Option<u64>; 5] {
        [self.p50, self.p90, self.p99, self.p99_9, self.p99_99]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn f(producer: u32, seq: u64) -> Fields {
        Fields {
            run: 1,
            producer,
            seq,
            intended_ns: 1_000,
        }
    }

    #[test]
    fn loss_duplicates_and_reordering_from_sequence_numbers() {
        let mut r = Recorder::new();
        for (p, s) in [(0, 0), (0, 1), (0, 3), (0, 2), (0, 3), (1, 0), (1, 5)] {
            r.record(f(p, s), 2_000);
        }
        assert_eq!((r.received, r.duplicates, r.reordered), (6, 1, 1));
        assert_eq!(r.gaps(), 4); // producer 1: 1..=4
        assert_eq!(r.latency.max(), 1_000);
    }

    #[test]
    fn percentiles_above_the_measured_fraction_are_not_reported() {
        let mut h = histogram();
        for v in 1..=10_000 {
            h.record(v).unwrap();
        }
        let p = Percentiles::of(&h, 0.995);
        assert!(p.p99.is_some() && p.p99_9.is_none() && p.p99_99.is_none());
        assert_eq!(p.max, Some(h.max()));
        assert!(Percentiles::of(&h, 1.0).p99_99.is_some());
    }

    #[test]
    fn events_that_never_arrived_count_as_the_slowest() {
        let mut h = histogram();
        for v in 1..=1_000 {
            h.record(v).unwrap();
        }
        // All received: the median is the received median.
        assert_eq!(Percentiles::of(&h, 1.0).p50, Some(500));
        // Half of them never arrived: the median of all is the slowest received.
        let p = Percentiles::of(&h, 0.5);
        assert_eq!((p.p50, p.p90), (Some(1_000), None));
        // A fifth lost: p50 of all = p62.5 of the received, p80 = the slowest received.
        let p = Percentiles::of(&h, 0.8);
        assert_eq!(p.p50, Some(625));
        assert_eq!(p.p90, None);
    }
}
