//! Counters that account for every event: globally and per target.
//!
//! Per target, at all times: `raised = sent + dropped + failed + pending`; after
//! [`Dispatcher::shutdown`](crate::Dispatcher::shutdown), `pending` is 0.

use std::fmt;

use crate::target::Target;

/// The backend a dispatcher runs on.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Backend {
    /// io_uring: batched `SEND`s on connected sockets registered as fixed files.
    Uring,
    /// Non-blocking connected sockets and `sendmmsg`.
    Syscall,
}

impl Backend {
    /// `"uring"` or `"syscall"`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Uring => "uring",
            Backend::Syscall => "syscall",
        }
    }
}

impl fmt::Display for Backend {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What happened to the events routed to one target (or, summed, to all targets).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct TargetCounters {
    /// Events routed to this target (one per subscribed event raised).
    pub raised: u64,
    /// Events the kernel accepted for this target.
    pub sent: u64,
    /// Datagrams the kernel accepted (equal to `sent` without coalescing).
    pub datagrams: u64,
    /// Bytes the kernel accepted.
    pub bytes: u64,
    /// Dropped because the target's retry queue was full (receiver slower than the sender).
    pub dropped_retry_overflow: u64,
    /// Dropped at shutdown: still queued when the shutdown deadline passed; or still queued for
    /// a target whose subscriptions ended that long before (`shutdown_timeout_ms`).
    pub dropped_shutdown: u64,
    /// Failed: no receiver (`ENOENT`, `ECONNREFUSED`, not connected).
    pub failed_unreachable: u64,
    /// Failed: the event encodes to more than the datagram limit.
    pub failed_oversize: u64,
    /// Failed: any other error from the kernel, or (params decoded from `jsonrpc` and raised
    /// again) a name the target's line format cannot carry.
    pub failed_other: u64,
    /// Not done yet: queued for this target or in flight.
    pub pending: u64,
    /// Times the kernel refused a UDP GSO send to this target (GSO is then off for it; the
    /// datagrams are sent one by one, nothing is lost).
    pub gso_refused: u64,
}

impl TargetCounters {
    /// All drops.
    pub fn dropped(&self) -> u64 {
        self.dropped_retry_overflow + self.dropped_shutdown
    }

    /// All failures.
    pub fn failed(&self) -> u64 {
        self.failed_unreachable + self.failed_oversize + self.failed_other
    }

    /// True when `raised = sent + dropped + failed + pending`.
    pub fn is_balanced(&self) -> bool {
        self.raised == self.sent + self.dropped() + self.failed() + self.pending
    }

    /// What happened between `earlier` and `self` (two snapshots of the same target): every
    /// cumulative counter as a difference; `pending` as it is now.
    ///
    /// A target that no subscription used and that had nothing left to send is closed, and its
    /// counters start again from zero if it is subscribed again. When a counter is below its
    /// earlier value, that happened in between: the result is then `self`, what the target did
    /// since it was opened again (and no underflow). A target closed and opened again that has
    /// since passed its earlier counts cannot be told apart: compare snapshots of a target that
    /// stays subscribed between them.
    pub fn since(&self, earlier: &TargetCounters) -> TargetCounters {
        // A counter below its earlier value: the target was closed and opened again.
        let diff = || {
            Some(TargetCounters {
                raised: self.raised.checked_sub(earlier.raised)?,
                sent: self.sent.checked_sub(earlier.sent)?,
                datagrams: self.datagrams.checked_sub(earlier.datagrams)?,
                bytes: self.bytes.checked_sub(earlier.bytes)?,
                dropped_retry_overflow: self
                    .dropped_retry_overflow
                    .checked_sub(earlier.dropped_retry_overflow)?,
                dropped_shutdown: self
                    .dropped_shutdown
                    .checked_sub(earlier.dropped_shutdown)?,
                failed_unreachable: self
                    .failed_unreachable
                    .checked_sub(earlier.failed_unreachable)?,
                failed_oversize: self.failed_oversize.checked_sub(earlier.failed_oversize)?,
                failed_other: self.failed_other.checked_sub(earlier.failed_other)?,
                pending: self.pending,
                gso_refused: self.gso_refused.checked_sub(earlier.gso_refused)?,
            })
        };
        diff().unwrap_or(*self)
    }

    pub(crate) fn add(&mut self, o: &TargetCounters) {
        self.raised += o.raised;
        self.sent += o.sent;
        self.datagrams += o.datagrams;
        self.bytes += o.bytes;
        self.dropped_retry_overflow += o.dropped_retry_overflow;
        self.dropped_shutdown += o.dropped_shutdown;
        self.failed_unreachable += o.failed_unreachable;
        self.failed_oversize += o.failed_oversize;
        self.failed_other += o.failed_other;
        self.pending += o.pending;
        self.gso_refused += o.gso_refused;
    }
}

/// Counters of one target.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TargetStats {
    /// The destination.
    pub target: Target,
    /// What happened to its events.
    pub counters: TargetCounters,
}

/// What happened to raised events before they reached targets.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
#[non_exhaustive]
pub struct EventCounters {
    /// Events raised: `raised = dropped_queue_full + dispatched + pending`.
    pub raised: u64,
    /// Dropped by `raise` because the channel was full (policy `drop`), or by a
    /// `raise_timeout` whose wait for room ran out.
    pub dropped_queue_full: u64,
    /// Taken by the reactor and routed to their subscribers (possibly none).
    pub dispatched: u64,
    /// Dispatched events that had no live subscriber.
    pub unsubscribed: u64,
    /// Still in the channel.
    pub pending: u64,
}

impl EventCounters {
    /// What happened between `earlier` and `self` (two snapshots of one dispatcher, whose
    /// event counters never go down): every cumulative counter as a difference; `pending` as
    /// it is now. Snapshots given the wrong way round, or of two dispatchers, give 0 where a
    /// counter is below its earlier value (not a panic, nor a wrapped count).
    pub fn since(&self, earlier: &EventCounters) -> EventCounters {
        EventCounters {
            raised: self.raised.saturating_sub(earlier.raised),
            dropped_queue_full: self
                .dropped_queue_full
                .saturating_sub(earlier.dropped_queue_full),
            dispatched: self.dispatched.saturating_sub(earlier.dispatched),
            unsubscribed: self.unsubscribed.saturating_sub(earlier.unsubscribed),
            pending: self.pending,
        }
    }

    /// True when `raised = dropped_queue_full + dispatched + pending`.
    pub fn is_balanced(&self) -> bool {
        self.raised == self.dropped_queue_full + self.dispatched + self.pending
    }
}

/// A consistent snapshot of a dispatcher's counters.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Stats {
    /// The backend in use.
    pub backend: Backend,
    /// Events, before fan-out.
    pub events: EventCounters,
    /// The sum over all targets, including targets no longer subscribed.
    pub totals: TargetCounters,
    /// Each target currently known to the reactor.
    pub targets: Vec<TargetStats>,
}

impl Stats {
    /// Counters of one target, if it is known.
    pub fn target(&self, target: &Target) -> Option<&TargetCounters> {
        self.targets
            .iter()
            .find(|t| &t.target == target)
            .map(|t| &t.counters)
    }

    /// True when every identity holds: globally and for each target.
    pub fn is_balanced(&self) -> bool {
        self.events.is_balanced()
            && self.totals.is_balanced()
            && self.targets.iter().all(|t| t.counters.is_balanced())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn counters(raised: u64, sent: u64) -> TargetCounters {
        TargetCounters {
            raised,
            sent,
            datagrams: sent,
            bytes: 10 * sent,
            ..Default::default()
        }
    }

    #[test]
    fn since_is_the_difference_or_all_since_the_counters_started_again() {
        let d = counters(10, 9).since(&counters(4, 4));
        assert_eq!((d.raised, d.sent, d.datagrams, d.bytes), (6, 5, 5, 50));
        // The target was closed and opened again in between: no underflow, what it did since.
        assert_eq!(counters(3, 3).since(&counters(4, 4)), counters(3, 3));
        let mut reopened = counters(5, 5);
        reopened.failed_other = 0;
        let mut before = counters(4, 4);
        before.failed_other = 1;
        assert_eq!(reopened.since(&before), reopened);
    }

    #[test]
    fn since_gives_pending_as_it_is_now_not_as_a_difference() {
        let mut now = counters(10, 7);
        now.pending = 3;
        let mut earlier = counters(4, 2);
        earlier.pending = 2;
        assert_eq!(now.since(&earlier).pending, 3);
        let events = |pending| EventCounters {
            raised: 10,
            pending,
            ..Default::default()
        };
        assert_eq!(events(3).since(&events(2)).pending, 3);
    }

    #[test]
    fn event_counters_since_in_the_wrong_order_is_zero_not_a_panic() {
        let later = EventCounters {
            raised: 10,
            dispatched: 8,
            dropped_queue_full: 2,
            unsubscribed: 1,
            pending: 0,
        };
        let earlier = EventCounters {
            raised: 4,
            dispatched: 3,
            pending: 1,
            ..Default::default()
        };
        let d = later.since(&earlier);
        assert_eq!((d.raised, d.dispatched, d.dropped_queue_full), (6, 5, 2));
        let swapped = earlier.since(&later);
        assert_eq!(
            (swapped.raised, swapped.dispatched, swapped.pending),
            (0, 0, 1)
        );
    }
}
