//! What a receiver records per run: end-to-end latency (intended time to receipt) in
//! HdrHistograms, overall and per second, and loss, duplicates and reordering per producer from
//! sequence numbers.

use std::collections::BTreeMap;

use hdrhistogram::serialization::{Deserializer, Serializer, V2Serializer};
use hdrhistogram::Histogram;
use serde::Serialize;

use crate::payload::{Fields, MAX_PRODUCERS};

/// Highest latency recorded exactly (larger values are clamped): one hour, in ns.
pub const MAX_LATENCY_NS: u64 = 3_600_000_000_000;

/// A latency histogram: ns, 3 significant digits (LOADGEN.md).
pub fn histogram() -> Histogram<u64> {
    Histogram::new_with_bounds(1, MAX_LATENCY_NS, 3).expect("valid bounds")
}

/// The events a receiver records: producers `0..producers`, sequence numbers `0..seqs` of each.
/// What arrives from the network is checked against them before it sizes anything, so a
/// foreign datagram is counted as malformed instead of asking for any amount of memory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Producers of the run.
    pub producers: u32,
    /// Events per producer.
    pub seqs: u64,
}

impl Limits {
    /// A `loadgen sink` in its own process, which does not know the runs it will get: any
    /// producer a run can have, and 2^32 events per producer (over an hour at 1M/s).
    pub const STANDALONE: Limits = Limits {
        producers: MAX_PRODUCERS as u32,
        seqs: 1 << 32,
    };

    /// Whether a run within these limits could have sent `f`.
    #[inline]
    pub fn admits(&self, f: &Fields) -> bool {
        f.producer < self.producers && f.seq < self.seqs
    }
}

/// Sequence numbers per block of [`SeqTrack`] (8 KiB of bits).
const BLOCK_SEQS: usize = 1 << 16;

/// One block of [`SeqTrack`]'s bits.
type Block = Box<[u64; BLOCK_SEQS / 64]>;

/// Which sequence numbers of one producer arrived.
#[derive(Clone, Debug, Default)]
pub struct SeqTrack {
    /// One bit per sequence number, in blocks made when a number in them arrives, by block
    /// number: memory follows what arrived, not the highest number seen (a foreign datagram
    /// with a sequence number near the limit costs one block, not an index up to it).
    blocks: BTreeMap<u64, Block>,
    /// The block numbers arrive in mostly go on: it is kept out of the map while in use, so
    /// the common case is one comparison.
    current: Option<(u64, Block)>,
    unique: u64,
    max: Option<u64>,
}

impl SeqTrack {
    /// Notes `seq`; returns `(duplicate, reordered)`.
    pub fn note(&mut self, seq: u64) -> (bool, bool) {
        let (block, i) = (seq / BLOCK_SEQS as u64, seq as usize % BLOCK_SEQS);
        if self.current.as_ref().map(|c| c.0) != Some(block) {
            if let Some((n, bits)) = self.current.take() {
                self.blocks.insert(n, bits);
            }
            let bits = self
                .blocks
                .remove(&block)
                .unwrap_or_else(|| Box::new([0; BLOCK_SEQS / 64]));
            self.current = Some((block, bits));
        }
        let bits = &mut self.current.as_mut().expect("set above").1;
        let (word, bit) = (i / 64, 1u64 << (i % 64));
        let dup = bits[word] & bit != 0;
        bits[word] |= bit;
        self.unique += u64::from(!dup);
        let reordered = !dup && self.max.is_some_and(|m| seq < m);
        self.max = Some(self.max.map_or(seq, |m| m.max(seq)));
        (dup, reordered)
    }

    /// Sequence numbers up to the highest seen that never arrived (gaps).
    pub fn gaps(&self) -> u64 {
        self.max.map_or(0, |m| m + 1 - self.unique)
    }

    /// Gaps between the lowest and the highest sequence number seen: those of a run that
    /// resumed after a report, which had covered the numbers before.
    pub fn gaps_from_lowest(&self) -> u64 {
        self.lowest().map_or(0, |low| self.gaps() - low)
    }

    /// The lowest sequence number seen. Looked for when asked (at a report), so that noting
    /// one costs nothing more: in the lowest block, whose bits are never all clear.
    fn lowest(&self) -> Option<u64> {
        let stored = self.blocks.first_key_value().map(|(&n, bits)| (n, bits));
        let current = self.current.as_ref().map(|(n, bits)| (*n, bits));
        let (block, bits) = stored.into_iter().chain(current).min_by_key(|&(n, _)| n)?;
        let (word, w) = bits.iter().enumerate().find(|(_, w)| **w != 0)?;
        Some(block * BLOCK_SEQS as u64 + word as u64 * 64 + u64::from(w.trailing_zeros()))
    }
}

/// Latency histograms per second (for the interval log). A full histogram is 270 KB (33 792
/// counters), so each finished second is kept V2-serialized, which run-length encodes the
/// empty counters: a few hundred bytes, decoded again when the log is written.
#[derive(Clone, Debug, Default)]
pub struct Intervals {
    /// Seconds `0..done.len()`, V2-serialized.
    done: Vec<Box<[u8]>>,
    /// Second `done.len()`, being recorded (allocated on the first value).
    current: Option<Histogram<u64>>,
}

fn encode(h: &Histogram<u64>) -> Box<[u8]> {
    let mut buf = Vec::new();
    V2Serializer::new()
        .serialize(h, &mut buf)
        .expect("a histogram serializes into memory");
    buf.into_boxed_slice()
}

fn decode(bytes: &[u8]) -> Histogram<u64> {
    Deserializer::new()
        .deserialize(&mut &bytes[..])
        .expect("we serialized it")
}

impl Intervals {
    /// Records `value` in second `second` (counted from the run's first receipt). Seconds only
    /// move forward (one receiving thread's clock); an earlier one is recorded in the current.
    pub fn record(&mut self, second: usize, value: u64) {
        let h = self.current.get_or_insert_with(histogram);
        // Every second up to this one is finished, empty ones too: the log has each second.
        while self.done.len() < second {
            self.done.push(encode(h));
            h.reset();
        }
        h.saturating_record(value);
    }

    /// Appends a finished second.
    pub fn push(&mut self, h: &Histogram<u64>) {
        self.finish();
        self.done.push(encode(h));
    }

    /// Seconds recorded.
    pub fn len(&self) -> usize {
        self.done.len() + usize::from(self.current.is_some())
    }

    /// Whether nothing was recorded.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Second `i`'s histogram, decoded (`None` past the end).
    pub fn get(&self, i: usize) -> Option<Histogram<u64>> {
        match self.done.get(i) {
            Some(bytes) => Some(decode(bytes)),
            None if i == self.done.len() => self.current.clone(),
            None => None,
        }
    }

    /// Every second's histogram in order, decoded one at a time.
    pub fn histograms(&self) -> impl Iterator<Item = Histogram<u64>> + '_ {
        (0..self.len()).filter_map(|i| self.get(i))
    }

    /// Serializes the second being recorded (no more values come for it).
    fn finish(&mut self) {
        if let Some(h) = self.current.take() {
            self.done.push(encode(&h));
        }
    }

    /// Adds `o` second by second (one decoded second of each at a time).
    pub fn merge(&mut self, o: &Intervals) {
        self.finish();
        for (i, mut h) in o.histograms().enumerate() {
            match self.done.get_mut(i) {
                Some(mine) => {
                    h.add(decode(mine)).expect("same bounds");
                    *mine = encode(&h);
                }
                None => self.done.push(encode(&h)),
            }
        }
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
    pub intervals: Intervals,
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
            intervals: Intervals::default(),
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
    /// an event that waited in a coalesced datagram shows that wait. Its producer and sequence
    /// number size the tracking: check what comes from the network with [`Limits::admits`].
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
        self.intervals.record(second, latency);
    }

    /// Sequence gaps over all producers (events missing below each producer's highest).
    pub fn gaps(&self) -> u64 {
        self.producers.iter().map(SeqTrack::gaps).sum()
    }

    /// Sequence gaps over all producers between each one's lowest and highest: for a run
    /// recorded again after a report (see [`SeqTrack::gaps_from_lowest`]).
    pub fn gaps_from_lowest(&self) -> u64 {
        self.producers.iter().map(SeqTrack::gaps_from_lowest).sum()
    }

    /// Adds another socket's record of the same run (per-transport totals).
    pub fn merge(&mut self, o: &Recorder) {
        self.received += o.received;
        self.duplicates += o.duplicates;
        self.reordered += o.reordered;
        self.datagrams += o.datagrams;
        self.bytes += o.bytes;
        self.latency.add(&o.latency).expect("same bounds");
        self.intervals.merge(&o.intervals);
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
    /// Largest value: the 100th percentile, so not measured when anything did not arrive.
    pub max: Option<u64>,
    /// Mean, when everything arrived (what did not could have been slower).
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
    /// The max (the 100th percentile) and the mean are known only when nothing is missing.
    pub fn of(h: &Histogram<u64>, measured: f64) -> Percentiles {
        if h.is_empty() {
            return Percentiles::default();
        }
        let q =
            |q: f64| (q <= measured + 1e-12).then(|| h.value_at_quantile((q / measured).min(1.0)));
        let all = measured >= 1.0;
        Percentiles {
            p50: q(0.5),
            p90: q(0.9),
            p99: q(0.99),
            p99_9: q(0.999),
            p99_99: q(0.9999),
            max: all.then(|| h.max()),
            mean: all.then(|| (h.mean() * 10.0).round() / 10.0),
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
        // The max is the 100th percentile, and the mean of the received is not that of all.
        assert_eq!((p.max, p.mean, p.count), (None, None, 10_000));
        let all = Percentiles::of(&h, 1.0);
        assert!(all.p99_99.is_some());
        assert_eq!(all.max, Some(h.max()));
        assert!(
            all.mean.is_some_and(|m| (m - 5_000.5).abs() < 5.0),
            "{all:?}"
        );
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

    #[test]
    fn sequence_tracking_allocates_only_the_blocks_that_arrived() {
        let mut t = SeqTrack::default();
        assert_eq!(t.note(3), (false, false));
        assert_eq!(t.note(Limits::STANDALONE.seqs - 1), (false, false));
        assert_eq!(t.note(3), (true, false));
        assert_eq!(t.note(70_000), (false, true));
        assert_eq!(t.gaps(), (1 << 32) - 3);
        // Three blocks (of 0, of 70 000, of the last number), the one in use out of the map.
        assert_eq!(t.blocks.len() + usize::from(t.current.is_some()), 3);
    }

    /// A run recorded again after a report counts its gaps from the lowest number it got:
    /// wherever that lies, in the block in use or in one put away, at any bit of a word.
    #[test]
    fn gaps_from_the_lowest_number_seen() {
        let mut t = SeqTrack::default();
        assert_eq!(t.gaps_from_lowest(), 0);
        for (seqs, gaps, from_lowest) in [
            (&[70_000u64, 70_003][..], 70_002, 2),
            (&[65_600, 65_601], 70_000, 4_400),
            (&[65_599], 69_999, 4_400),
            (&[65_536], 69_998, 4_462),
            // Block 1 (65 536 to 131 071) put away, block 3 in use.
            (&[200_000], 199_994, 134_458),
        ] {
            for &seq in seqs {
                t.note(seq);
            }
            assert_eq!(
                (t.gaps(), t.gaps_from_lowest()),
                (gaps, from_lowest),
                "{seqs:?}"
            );
        }
        let mut r = Recorder::new();
        for (p, s) in [(0, 1_000), (0, 1_003), (2, 7)] {
            r.record(f(p, s), 2_000);
        }
        assert_eq!((r.gaps(), r.gaps_from_lowest()), (1_002 + 7, 2));
    }

    #[test]
    fn limits_admit_what_the_run_can_send() {
        let l = Limits {
            producers: 2,
            seqs: 10,
        };
        assert!(l.admits(&f(1, 9)));
        assert!(!l.admits(&f(2, 0)));
        assert!(!l.admits(&f(0, 10)));
        assert!(!l.admits(&f(u32::MAX, 0)));
        assert!(!Limits::STANDALONE.admits(&f(0, 9_999_999_999_999_999_999)));
    }

    /// The per-second histograms come back as they were recorded, and merge as full ones
    /// would (the interval log is written from them).
    #[test]
    fn intervals_round_trip_and_merge_second_by_second() {
        let (mut a, mut b) = (Recorder::new(), Recorder::new());
        let (mut want_a, mut want_b) = (vec![histogram(); 4], vec![histogram(); 2]);
        // Receipts in seconds 0, 0, 2 and 3 of the run (none in second 1).
        for (seq, s) in [0u64, 0, 2, 3].into_iter().enumerate() {
            let now = 10_000_000_000 + s * 1_000_000_000 + seq as u64 * 777;
            a.record(f(0, seq as u64), now);
            want_a[s as usize].record(now - 1_000).unwrap();
        }
        for s in 0..2u64 {
            let now = 20_000_000_000 + s * 1_000_000_000 + 500;
            b.record(f(1, s), now);
            want_b[s as usize].record(now - 1_000).unwrap();
        }
        assert_eq!(a.intervals.histograms().collect::<Vec<_>>(), want_a);
        assert!(
            want_a[1].is_empty(),
            "a second without receipts is there, empty"
        );
        a.merge(&b);
        for (i, w) in want_a.iter_mut().enumerate() {
            if let Some(h) = want_b.get(i) {
                w.add(h).unwrap();
            }
        }
        assert_eq!(a.intervals.histograms().collect::<Vec<_>>(), want_a);
        assert_eq!(a.intervals.len(), 4);
    }
}
