//! A target's datagrams waiting to be sent, in order, and how many datagrams and bytes they
//! are. A GSO run is one entry but several datagrams: a target's bound counts datagrams (so a
//! slow receiver holds about as many whether its events went into runs or not), and bytes (so
//! that large events do not make the same bound hundreds of megabytes): the bytes of the
//! buffers they hold, which is what they keep from the heap (a 10 KB datagram holds a 64 KB
//! buffer).

use std::collections::vec_deque::{self, VecDeque};

use super::Queued;

#[derive(Default)]
pub(super) struct Outbox {
    entries: VecDeque<Queued>,
    datagrams: usize,
    bytes: usize,
}

/// A bound on an outbox: it is reached when either count is.
#[derive(Clone, Copy, Debug)]
pub(super) struct Bound {
    pub datagrams: usize,
    pub bytes: usize,
}

impl Outbox {
    pub fn with_capacity(entries: usize) -> Self {
        Outbox {
            entries: VecDeque::with_capacity(entries),
            datagrams: 0,
            bytes: 0,
        }
    }

    /// Entries: sends to submit (each a datagram or a GSO run).
    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }

    /// Datagrams in all entries.
    #[cfg(test)]
    pub fn datagrams(&self) -> usize {
        self.datagrams
    }

    /// Bytes of the buffers of all entries.
    #[cfg(test)]
    pub fn bytes(&self) -> usize {
        self.bytes
    }

    /// Whether it holds less than `bound`, in datagrams and in bytes.
    pub fn below(&self, bound: Bound) -> bool {
        self.datagrams < bound.datagrams && self.bytes < bound.bytes
    }

    pub fn front(&self) -> Option<&Queued> {
        self.entries.front()
    }

    pub fn iter(&self) -> vec_deque::Iter<'_, Queued> {
        self.entries.iter()
    }

    pub fn push_back(&mut self, q: Queued) {
        self.datagrams += q.datagrams() as usize;
        self.bytes += q.buf.capacity();
        self.entries.push_back(q);
    }

    pub fn pop_front(&mut self) -> Option<Queued> {
        let q = self.entries.pop_front()?;
        self.datagrams -= q.datagrams() as usize;
        self.bytes -= q.buf.capacity();
        Some(q)
    }

    /// Keeps the entries `keep` says yes to, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&Queued) -> bool) {
        let (mut datagrams, mut bytes) = (0, 0);
        self.entries.retain(|q| {
            let kept = keep(q);
            if !kept {
                datagrams += q.datagrams() as usize;
                bytes += q.buf.capacity();
            }
            kept
        });
        self.datagrams -= datagrams;
        self.bytes -= bytes;
    }

    /// Removes every entry, first to last.
    pub fn drain(&mut self) -> vec_deque::Drain<'_, Queued> {
        self.datagrams = 0;
        self.bytes = 0;
        self.entries.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::pool::Pool;

    /// Datagrams count one per event of a run; bytes count the buffers held, however little
    /// of them is used (a 10 000-byte datagram holds a 65 457-byte buffer).
    #[test]
    fn a_run_counts_as_its_datagrams_and_bytes_however_it_leaves() {
        let mut pool = Pool::new(1 << 20, 0);
        let mut outbox = Outbox::default();
        let run = |pool: &mut Pool, events| Queued {
            buf: pool.alloc(64),
            len: 10 * events,
            events,
            segment: 10,
        };
        outbox.push_back(Queued::single(pool.alloc(10), 10));
        outbox.push_back(run(&mut pool, 5));
        outbox.push_back(run(&mut pool, 3));
        outbox.push_back(Queued::single(pool.alloc(10_000), 10_000));
        let counts = |o: &Outbox| (o.len(), o.datagrams(), o.bytes());
        let big = crate::MAX_DATAGRAM;
        assert_eq!(counts(&outbox), (4, 10, 3 * 512 + big));
        let q = outbox.pop_front().unwrap();
        pool.release(q.buf);
        assert_eq!(counts(&outbox), (3, 9, 2 * 512 + big));
        outbox.retain(|q| q.events != 5);
        assert_eq!(counts(&outbox), (2, 4, 512 + big));
        assert_eq!(outbox.drain().count(), 2);
        assert_eq!(counts(&outbox), (0, 0, 0));
    }

    #[test]
    fn an_outbox_is_below_its_bound_until_either_count_reaches_it() {
        let mut pool = Pool::new(1 << 20, 0);
        let mut outbox = Outbox::default();
        let bound = |datagrams, bytes| Bound { datagrams, bytes };
        assert!(outbox.below(bound(1, 1)), "empty");
        outbox.push_back(Queued::single(pool.alloc(100), 100));
        assert!(outbox.below(bound(2, 513)));
        assert!(!outbox.below(bound(1, 1000)), "datagrams reached");
        assert!(
            !outbox.below(bound(1000, 512)),
            "bytes reached: its 512-byte buffer's"
        );
    }
}
