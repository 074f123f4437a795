//! The open-loop schedule (wrk2's method): intended send times computed, never read from the
//! clock, with bounded catch-up.
//!
//! Event `n` of a run (all producers together) is intended at `start + n * per_ns / events`
//! (integer nanoseconds, computed from `n` each time, so there is no drift however long the run).
//! Producer `k` of `P` owns events `k, k + P, k + 2P, ...`: its `i`-th event is at
//! `start + k*1e9/R + i*1e9*P/R`. A run schedules every `n` whose intended time is before
//! `start + duration`.

use std::ops::Range;

use crate::units::Rate;

/// What a producer does at one tick: skip `shed` events that are too late, raise `due`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Tick {
    /// Per-producer indexes of events skipped because they were more than the catch-up
    /// window late (counted as `shed`).
    pub shed: Range<u64>,
    /// Per-producer indexes of events to raise now, oldest first.
    pub due: Range<u64>,
}

/// One producer's schedule: a pure function of time, so it is tested with a fake clock.
#[derive(Clone, Debug)]
pub struct Pacer {
    start_ns: u64,
    rate: Rate,
    producer: u64,
    producers: u64,
    /// Events this producer owns in the run.
    total: u64,
    /// The next per-producer index not yet shed or raised.
    next: u64,
    catchup_ns: u64,
}

impl Pacer {
    /// Producer `producer` of `producers` for a run of `duration_ns` from `start_ns` at `rate`;
    /// events more than `catchup_ns` late when the producer gets to them are shed.
    pub fn new(
        start_ns: u64,
        duration_ns: u64,
        rate: Rate,
        producer: u64,
        producers: u64,
        catchup_ns: u64,
    ) -> Pacer {
        assert!(producer < producers);
        let run_total = Self::run_total(duration_ns, rate);
        // Producer k owns the n < run_total with n % P == k.
        let total = run_total.saturating_sub(producer).div_ceil(producers);
        Pacer {
            start_ns,
            rate,
            producer,
            producers,
            total,
            next: 0,
            catchup_ns,
        }
    }

    /// Events a run of `duration_ns` at `rate` schedules (all producers): the `n` with
    /// `n * per_ns / events < duration_ns`.
    pub fn run_total(duration_ns: u64, rate: Rate) -> u64 {
        let (e, p) = (rate.events as u128, rate.per_ns as u128);
        // Smallest n with n*p/e >= d (floor division), i.e. n*p >= d*e.
        ((duration_ns as u128 * e).div_ceil(p)) as u64
    }

    /// Events this producer owns in the run.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// The intended time of this producer's `i`-th event.
    #[inline]
    pub fn intended(&self, i: u64) -> u64 {
        let n = self.producer as u128 + i as u128 * self.producers as u128;
        self.start_ns + (n * self.rate.per_ns as u128 / self.rate.events as u128) as u64
    }

    /// The first index whose intended time is after `t` (binary search: the inverse of
    /// [`intended`](Self::intended) without floating point).
    fn first_after(&self, t: u64, from: u64) -> u64 {
        let (mut lo, mut hi) = (from, self.total);
        while lo < hi {
            let mid = lo + (hi - lo) / 2;
            if self.intended(mid) <= t {
                lo = mid + 1;
            } else {
                hi = mid;
            }
        }
        lo
    }

    /// The events to shed and raise at `now_ns`; advances the schedule past them.
    pub fn poll(&mut self, now_ns: u64) -> Tick {
        let due_end = self.first_after(now_ns, self.next);
        let late_end = match now_ns.checked_sub(self.catchup_ns) {
            Some(t) => self
                .first_after(t.saturating_sub(1), self.next)
                .min(due_end),
            None => self.next,
        };
        let tick = Tick {
            shed: self.next..late_end,
            due: late_end..due_end,
        };
        self.next = due_end;
        tick
    }

    /// Takes back the events from `i` on that the last [`poll`](Self::poll) handed out but were
    /// not raised, so the next poll sheds those that are by then too late: a batch that takes
    /// longer to raise than the catch-up window must not send its tail later than the bound.
    pub fn hand_back(&mut self, i: u64) {
        assert!(
            i <= self.next,
            "only events already handed out can be handed back"
        );
        self.next = i;
    }

    /// Whether the event `i` is later than the catch-up window at `now_ns` (the rule
    /// [`poll`](Self::poll) sheds by).
    #[inline]
    pub fn too_late(&self, i: u64, now_ns: u64) -> bool {
        now_ns.saturating_sub(self.intended(i)) > self.catchup_ns
    }

    /// The intended time of the next event not yet handed out, or `None` when the run is over.
    pub fn next_intended(&self) -> Option<u64> {
        (self.next < self.total).then(|| self.intended(self.next))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ten_million_events_without_drift() {
        // 1M/s for 10 s, 4 producers, a tick every 100 us on a fake clock.
        let rate = Rate::per_sec(1_000_000);
        let start = 5_000_000_000;
        let duration = 10_000_000_000;
        let mut pacers: Vec<Pacer> = (0..4)
            .map(|k| Pacer::new(start, duration, rate, k, 4, 1_000_000))
            .collect();
        assert_eq!(pacers.iter().map(Pacer::total).sum::<u64>(), 10_000_000);
        let mut now = start;
        let mut raised = 0u64;
        let mut last = 0u64;
        while pacers.iter().any(|p| p.next_intended().is_some()) {
            for p in &mut pacers {
                let t = p.poll(now);
                assert!(t.shed.is_empty());
                for i in t.due {
                    let at = p.intended(i);
                    assert!(at <= now);
                    raised += 1;
                    last = last.max(at);
                }
            }
            now += 100_000;
        }
        assert_eq!(raised, 10_000_000);
        // The last event is exactly where the formula puts it: no accumulated rounding.
        assert_eq!(last, start + 9_999_999 * 1_000);
        assert_eq!(pacers[3].intended(2_499_999), start + 9_999_999 * 1_000);
    }

    #[test]
    fn fractional_rates_interleave_producers_exactly() {
        // 3 events per 7 ns, 3 producers: event n at floor(n*7/3).
        let rate = Rate {
            events: 3,
            per_ns: 7,
        };
        let pacers: Vec<Pacer> = (0..3).map(|k| Pacer::new(0, 70, rate, k, 3, 10)).collect();
        let mut all: Vec<u64> = pacers
            .iter()
            .flat_map(|p| (0..p.total()).map(|i| p.intended(i)))
            .collect();
        all.sort();
        let expected: Vec<u64> = (0..30).map(|n| n * 7 / 3).collect();
        assert_eq!(all, expected);
    }

    #[test]
    fn catch_up_is_bounded_and_the_rest_is_shed() {
        let rate = Rate::per_sec(100_000); // one event per 10 us
        let start = 1_000_000;
        let mut p = Pacer::new(start, 1_000_000_000, rate, 0, 1, 1_000_000);
        // A 500 ms stall: only the last 1 ms of events is raised, the rest is shed.
        let t = p.poll(start + 500_000_000);
        assert_eq!(t.due.end - t.due.start, 101); // intended in [now - 1 ms, now]
        assert_eq!(t.shed, 0..t.due.start);
        assert_eq!(t.shed.end + 101, 50_001);
        assert!(p.intended(t.due.start) >= start + 499_000_000);
        // Back on time: one event per 10 us again.
        let t = p.poll(start + 500_010_000);
        assert_eq!((t.shed.end - t.shed.start, t.due.end - t.due.start), (0, 1));
        // After the end: everything left is handed out once, and then nothing.
        let t = p.poll(start + 5_000_000_000);
        assert_eq!(t.due.end, 100_000);
        assert_eq!(p.next_intended(), None);
        assert_eq!(
            p.poll(u64::MAX / 2),
            Tick {
                shed: 100_000..100_000,
                due: 100_000..100_000
            }
        );
    }

    /// A batch that takes longer to raise than the catch-up window: the producer checks the
    /// clock as it goes, hands the rest back, and the next poll sheds what is too late by then.
    #[test]
    fn a_slow_batch_hands_back_its_tail_and_the_late_part_is_shed() {
        let rate = Rate::per_sec(1_000_000); // one event per us
        let start = 1_000_000;
        let mut p = Pacer::new(start, 1_000_000_000, rate, 0, 1, 2_000_000);
        let t = p.poll(start + 1_000_000);
        assert_eq!(t.due, 0..1_001);
        // 50 ms later, 500 events in: event 500 is 49.5 ms late, far past 2 ms.
        let now = start + 50_000_000;
        assert!(p.too_late(500, now));
        assert!(!p.too_late(48_500, now));
        p.hand_back(500);
        let t = p.poll(now);
        // Shed: intended before now - 2 ms; raised: the last 2 ms, up to now.
        assert_eq!(t.shed, 500..48_000);
        assert_eq!(t.due, 48_000..50_001);
    }

    #[test]
    fn scheduled_is_rate_times_duration() {
        for (r, d) in [
            (30_000, 1_000_000_000u64),
            (7, 1_500_000_000),
            (1_000_000, 10_000_000),
        ] {
            let rate = Rate::per_sec(r);
            let total = Pacer::run_total(d, rate);
            assert_eq!(
                total,
                (r as u128 * d as u128).div_ceil(1_000_000_000) as u64
            );
        }
    }
}
