//! A target's datagrams waiting to be sent, in order, and how many datagrams they are: a GSO
//! run is one entry but several datagrams, and a target's retry bound counts datagrams (so a
//! slow receiver holds about as many bytes whether its events went into runs or not).

use std::collections::vec_deque::{self, VecDeque};

use super::Queued;

#[derive(Default)]
pub(super) struct Outbox {
    entries: VecDeque<Queued>,
    datagrams: usize,
}

impl Outbox {
    pub fn with_capacity(entries: usize) -> Self {
        Outbox {
            entries: VecDeque::with_capacity(entries),
            datagrams: 0,
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
    pub fn datagrams(&self) -> usize {
        self.datagrams
    }

    pub fn front(&self) -> Option<&Queued> {
        self.entries.front()
    }

    pub fn iter(&self) -> vec_deque::Iter<'_, Queued> {
        self.entries.iter()
    }

    pub fn push_back(&mut self, q: Queued) {
        self.datagrams += q.datagrams() as usize;
        self.entries.push_back(q);
    }

    pub fn pop_front(&mut self) -> Option<Queued> {
        let q = self.entries.pop_front()?;
        self.datagrams -= q.datagrams() as usize;
        Some(q)
    }

    /// Keeps the entries `keep` says yes to, in order.
    pub fn retain(&mut self, mut keep: impl FnMut(&Queued) -> bool) {
        let mut removed = 0;
        self.entries.retain(|q| {
            let kept = keep(q);
            if !kept {
                removed += q.datagrams() as usize;
            }
            kept
        });
        self.datagrams -= removed;
    }

    /// Removes every entry, first to last.
    pub fn drain(&mut self) -> vec_deque::Drain<'_, Queued> {
        self.datagrams = 0;
        self.entries.drain(..)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::pool::Pool;

    #[test]
    fn a_run_counts_as_its_datagrams_however_it_leaves() {
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
        outbox.push_back(Queued::single(pool.alloc(10), 10));
        assert_eq!((outbox.len(), outbox.datagrams()), (4, 10));
        let q = outbox.pop_front().unwrap();
        pool.release(q.buf);
        assert_eq!((outbox.len(), outbox.datagrams()), (3, 9));
        outbox.retain(|q| q.events != 5);
        assert_eq!((outbox.len(), outbox.datagrams()), (2, 4));
        assert_eq!(outbox.drain().count(), 2);
        assert_eq!((outbox.len(), outbox.datagrams()), (0, 0));
    }
}
