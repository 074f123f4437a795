//! The bounded queue from producers to the reactor: many senders, one receiver, and messages
//! read where they lie.
//!
//! It follows crossbeam's array channel (each slot has a stamp that says whose turn it is, and
//! the tail carries a mark bit that closes the queue), with one difference that matters here:
//! the receiver reads a message in place instead of taking it by value. A raised event is
//! about 270 bytes (its params are inline), and with crossbeam's `send` and `try_recv` it was
//! copied about ten times between the producer and the reactor (callgrind); here the reactor
//! reads it where the producer wrote it, and drops it there. In the compare bench's GSO 64 B
//! case that took us from 1.09-1.13M to 1.20-1.22M datagrams/s (three runs each, with the
//! sleeping flag of `publisher::Shared`, which the `SeqCst` claim of a slot made possible).
//!
//! There is no blocking here: producers wait for room in `publisher::Room`, and the reactor
//! sleeps on `publisher::Shared`, so the queue only needs `try_send` and `recv_with`.
#![allow(unsafe_code)]

use std::cell::UnsafeCell;
use std::mem::MaybeUninit;
use std::sync::atomic::{fence, AtomicU64, Ordering};
use std::sync::Arc;

use crossbeam_channel::TrySendError;

/// A queue of `capacity` (at least 1) messages.
pub(crate) fn bounded<T>(capacity: usize) -> (Sender<T>, Receiver<T>) {
    let ring = Arc::new(Ring::new(capacity.max(1)));
    (
        Sender {
            ring: Arc::clone(&ring),
        },
        Receiver { ring },
    )
}

/// Keeps what it holds on a cache line (two, for the adjacent-line prefetcher) of its own, so
/// that producers moving the tail and the receiver moving the head do not slow each other.
#[repr(align(128))]
struct Padded<T>(T);

struct Slot<T> {
    /// `position + 1` once a message is written at `position`; `position + one_lap` once it is
    /// read, which is the next lap's position of this slot: its turn to be written again.
    stamp: AtomicU64,
    msg: UnsafeCell<MaybeUninit<T>>,
}

/// A position is a lap, a mark bit and an index in one word: `lap * one_lap + index`, where
/// `mark_bit` is the power of two above the capacity and `one_lap` twice that. The mark bit is
/// only ever set in the tail: the queue is closed. Positions are 64 bits on every target (one
/// with 64-bit atomics), so that they never wrap (32 bits would, after about a billion events).
struct Ring<T> {
    /// Next position to read; written by the receiver only.
    head: Padded<AtomicU64>,
    /// Next position to write, and the mark bit.
    tail: Padded<AtomicU64>,
    slots: Box<[Slot<T>]>,
    mark_bit: u64,
    one_lap: u64,
}

// SAFETY: a message is written by one sender and then read and dropped by the one receiver, each
// handing it over through its slot's stamp (Release/Acquire), so `T: Send` is all it needs.
unsafe impl<T: Send> Send for Ring<T> {}
// SAFETY: as above; shared access to a slot's message is ordered by its stamp.
unsafe impl<T: Send> Sync for Ring<T> {}

impl<T> Ring<T> {
    fn new(capacity: usize) -> Self {
        let slots = (0..capacity)
            .map(|i| Slot {
                stamp: AtomicU64::new(i as u64),
                msg: UnsafeCell::new(MaybeUninit::uninit()),
            })
            .collect();
        let mark_bit = (capacity as u64 + 1).next_power_of_two();
        Ring {
            head: Padded(AtomicU64::new(0)),
            tail: Padded(AtomicU64::new(0)),
            slots,
            mark_bit,
            one_lap: mark_bit * 2,
        }
    }

    fn index(&self, position: u64) -> usize {
        (position & (self.mark_bit - 1)) as usize
    }

    /// The position after `position` (unmarked).
    fn next(&self, position: u64) -> u64 {
        if self.index(position) + 1 < self.slots.len() {
            position + 1
        } else {
            (position & !(self.one_lap - 1)).wrapping_add(self.one_lap)
        }
    }

    /// Messages ever put in (claimed slots, some perhaps still being written) and ever taken
    /// out, as one consistent pair.
    fn totals(&self) -> (u64, u64) {
        loop {
            let tail = self.tail.0.load(Ordering::SeqCst);
            let head = self.head.0.load(Ordering::SeqCst);
            if self.tail.0.load(Ordering::SeqCst) == tail {
                return (self.count(tail & !self.mark_bit), self.count(head));
            }
        }
    }

    /// How many positions come before `position` (`lap * one_lap + index`).
    #[inline]
    fn count(&self, position: u64) -> u64 {
        // `one_lap` is a power of two.
        let lap = position >> self.one_lap.trailing_zeros();
        lap * self.slots.len() as u64 + self.index(position) as u64
    }

    fn len(&self) -> usize {
        let (put, taken) = self.totals();
        (put - taken) as usize
    }
}

impl<T> Drop for Ring<T> {
    fn drop(&mut self) {
        // Drop the messages never read: those from head up to tail.
        let (head, len) = (*self.head.0.get_mut(), self.len());
        let capacity = self.slots.len();
        for i in 0..len {
            let at = (self.index(head) + i) % capacity;
            // SAFETY: with `&mut self` no one else is here; every position from head to tail
            // was written (a sender that moved the tail wrote its slot before returning).
            unsafe { self.slots[at].msg.get_mut().assume_init_drop() };
        }
    }
}

/// The producers' end: `Clone`, for any thread.
pub(crate) struct Sender<T> {
    ring: Arc<Ring<T>>,
}

impl<T> Clone for Sender<T> {
    fn clone(&self) -> Self {
        Sender {
            ring: Arc::clone(&self.ring),
        }
    }
}

impl<T> Sender<T> {
    /// True once the queue is closed (refuses every message).
    pub fn is_closed(&self) -> bool {
        self.ring.tail.0.load(Ordering::SeqCst) & self.ring.mark_bit != 0
    }

    /// Puts `msg` at the tail, or gives it back if the queue is full or closed.
    #[inline]
    pub fn try_send(&self, msg: T) -> Result<(), TrySendError<T>> {
        match self.try_send_with(|| msg) {
            Ok(_) => Ok(()),
            Err(TrySendError::Full(make)) => Err(TrySendError::Full(make())),
            Err(TrySendError::Disconnected(make)) => Err(TrySendError::Disconnected(make())),
        }
    }

    /// Puts the message `make` makes at the tail, made once its slot is claimed, straight
    /// into it (no copy on the way: a raised event is large); gives `make` back, not called,
    /// if the queue is full or closed. If `make` panics the process aborts: the claimed slot
    /// would never be written, and the receiver would wait for it for ever. Returns the
    /// message's number: how many were put in before it.
    ///
    /// A message sent is in the queue (or being written to it) for every `SeqCst` look at the
    /// tail that follows: the claim is a `SeqCst` read-modify-write of the tail.
    #[inline]
    pub fn try_send_with<F: FnOnce() -> T>(&self, make: F) -> Result<u64, TrySendError<F>> {
        let ring = &*self.ring;
        let mut spins = 0u32;
        let mut tail = ring.tail.0.load(Ordering::Relaxed);
        loop {
            if tail & ring.mark_bit != 0 {
                return Err(TrySendError::Disconnected(make));
            }
            let slot = &ring.slots[ring.index(tail)];
            let stamp = slot.stamp.load(Ordering::Acquire);
            if stamp == tail {
                // The slot's turn to be written: claim the position.
                match ring.tail.0.compare_exchange_weak(
                    tail,
                    ring.next(tail),
                    Ordering::SeqCst,
                    Ordering::Relaxed,
                ) {
                    Ok(_) => {
                        let abort = crate::AbortOnUnwind("a queued message's maker panicked");
                        let msg = make();
                        std::mem::forget(abort);
                        // SAFETY: the CAS gave this sender the position; its stamp says the
                        // slot's previous message was read and dropped; no one reads the slot
                        // before the stamp below says it is written.
                        unsafe { (*slot.msg.get()).write(msg) };
                        slot.stamp.store(tail + 1, Ordering::Release);
                        return Ok(ring.count(tail));
                    }
                    Err(now) => tail = now,
                }
            } else if stamp.wrapping_add(ring.one_lap) == tail + 1 {
                // The slot still holds the previous lap's message: full, unless the receiver
                // has read it since.
                fence(Ordering::SeqCst);
                if ring
                    .head
                    .0
                    .load(Ordering::Relaxed)
                    .wrapping_add(ring.one_lap)
                    == tail
                {
                    return Err(TrySendError::Full(make));
                }
                tail = ring.tail.0.load(Ordering::Relaxed);
            } else {
                // Another sender took this position: try the next one.
                tail = ring.tail.0.load(Ordering::Relaxed);
            }
            spins += 1;
            if spins % 64 == 0 {
                // A sender preempted mid-write holds us up: let it run.
                std::thread::yield_now();
            } else {
                std::hint::spin_loop();
            }
        }
    }
}

/// Hands a slot back to the senders (its next lap's stamp) and moves the head past it.
struct Release<'a> {
    stamp: &'a AtomicU64,
    next_lap: u64,
    head: &'a AtomicU64,
    next_head: u64,
}

impl Drop for Release<'_> {
    #[inline]
    fn drop(&mut self) {
        self.stamp.store(self.next_lap, Ordering::Release);
        self.head.store(self.next_head, Ordering::Release);
    }
}

/// The reactor's end: one, not `Clone`; `&mut self` keeps reads in place to one at a time.
/// Dropping it closes the queue.
pub(crate) struct Receiver<T> {
    ring: Arc<Ring<T>>,
}

impl<T> Receiver<T> {
    /// Calls `f` with the message at the head, then drops the message; `None` if there is none
    /// yet (the queue is empty, or the next sender has not finished writing).
    #[inline]
    pub fn recv_with<R>(&mut self, f: impl FnOnce(&T) -> R) -> Option<R> {
        let ring = &*self.ring;
        let head = ring.head.0.load(Ordering::Relaxed);
        let slot = &ring.slots[ring.index(head)];
        if slot.stamp.load(Ordering::Acquire) != head + 1 {
            return None;
        }
        // SAFETY: the stamp (Acquire, pairing with the sender's Release) says the message at
        // `head` is written; no sender touches the slot until the stamp below hands it back.
        let msg = unsafe { (*slot.msg.get()).assume_init_ref() };
        // If `f` panics the message stays in the queue, and the ring drops it.
        let result = f(msg);
        // Gives the slot back once the message is dropped, also if its drop panics (else the
        // ring would drop it again).
        let _release = Release {
            stamp: &slot.stamp,
            next_lap: head.wrapping_add(ring.one_lap),
            head: &ring.head.0,
            next_head: ring.next(head),
        };
        // SAFETY: read above and not used again; `_release` then gives the slot back.
        unsafe { (*slot.msg.get()).assume_init_drop() };
        Some(result)
    }

    /// Refuses every message from now on; what is in the queue stays to be read. A sender
    /// that claimed its position before this still writes it.
    pub fn close(&self) {
        self.ring
            .tail
            .0
            .fetch_or(self.ring.mark_bit, Ordering::SeqCst);
    }

    /// Messages in the queue, including those still being written.
    pub fn len(&self) -> usize {
        self.ring.len()
    }

    /// Messages ever put in and ever taken out (a consistent pair): their difference is
    /// [`len`](Self::len).
    pub fn totals(&self) -> (u64, u64) {
        self.ring.totals()
    }

    /// No message in the queue, not even one being written. A `SeqCst` look at the tail.
    pub fn is_empty(&self) -> bool {
        let tail = self.ring.tail.0.load(Ordering::SeqCst);
        self.ring.head.0.load(Ordering::SeqCst) == tail & !self.ring.mark_bit
    }

    /// How many messages the queue holds at most.
    pub fn capacity(&self) -> usize {
        self.ring.slots.len()
    }
}

impl<T> Drop for Receiver<T> {
    fn drop(&mut self) {
        self.close();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::atomic::AtomicU64;

    #[test]
    fn holds_exactly_its_capacity_in_order_lap_after_lap() {
        for capacity in [1, 2, 3, 5, 8, 13] {
            let (tx, mut rx) = bounded(capacity);
            for lap in 0..5 {
                for i in 0..capacity {
                    tx.try_send(lap * 100 + i).expect("room");
                    assert_eq!(rx.len(), i + 1);
                    let put = (lap * capacity + i + 1) as u64;
                    assert_eq!(rx.totals(), (put, (lap * capacity) as u64));
                }
                assert!(matches!(tx.try_send(999), Err(TrySendError::Full(999))));
                for i in 0..capacity {
                    assert_eq!(rx.recv_with(|&m| m), Some(lap * 100 + i));
                }
                assert_eq!(rx.recv_with(|&m| m), None);
                assert!(rx.is_empty());
                assert_eq!(rx.len(), 0);
            }
        }
    }

    #[test]
    fn a_message_is_made_only_once_it_has_a_slot() {
        let (tx, mut rx) = bounded(1);
        tx.try_send_with(|| 1).expect("room");
        let refused = tx.try_send_with(|| -> i32 { unreachable!("made without a slot") });
        assert!(matches!(refused, Err(TrySendError::Full(_))));
        rx.close();
        let refused = tx.try_send_with(|| -> i32 { unreachable!("made without a slot") });
        assert!(matches!(refused, Err(TrySendError::Disconnected(_))));
        assert_eq!(rx.recv_with(|&m| m), Some(1));
    }

    #[test]
    fn a_closed_queue_refuses_and_keeps_what_it_holds() {
        let (tx, mut rx) = bounded(4);
        tx.try_send(1).expect("room");
        tx.try_send(2).expect("room");
        rx.close();
        assert!(matches!(tx.try_send(3), Err(TrySendError::Disconnected(3))));
        assert_eq!(rx.len(), 2);
        assert!(!rx.is_empty());
        assert_eq!(rx.recv_with(|&m| m), Some(1));
        assert_eq!(rx.recv_with(|&m| m), Some(2));
        assert!(rx.is_empty());
        assert_eq!(rx.len(), 0);
        drop(rx);
        let (tx, rx) = bounded(4);
        drop(rx);
        assert!(matches!(tx.try_send(7), Err(TrySendError::Disconnected(7))));
    }

    /// Counts the drops of its values.
    struct Counted(Arc<AtomicU64>);

    impl Drop for Counted {
        fn drop(&mut self) {
            self.0.fetch_add(1, Ordering::Relaxed);
        }
    }

    #[test]
    fn every_message_is_dropped_once_read_or_not() {
        let drops = Arc::new(AtomicU64::new(0));
        let (tx, mut rx) = bounded(3);
        for _ in 0..3 {
            assert!(tx.try_send(Counted(Arc::clone(&drops))).is_ok());
        }
        assert!(rx.recv_with(|_| ()).is_some());
        assert_eq!(
            drops.load(Ordering::Relaxed),
            1,
            "read and dropped in place"
        );
        assert!(tx.try_send(Counted(Arc::clone(&drops))).is_ok());
        drop(tx);
        assert_eq!(drops.load(Ordering::Relaxed), 1);
        drop(rx);
        assert_eq!(
            drops.load(Ordering::Relaxed),
            4,
            "the three unread go with the queue"
        );
    }

    #[test]
    fn a_panic_while_reading_leaves_the_message_to_the_queue() {
        let drops = Arc::new(AtomicU64::new(0));
        let (tx, mut rx) = bounded(2);
        assert!(tx.try_send(Counted(Arc::clone(&drops))).is_ok());
        let caught = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            rx.recv_with(|_| panic!("reader fails"))
        }));
        assert!(caught.is_err());
        assert_eq!(drops.load(Ordering::Relaxed), 0);
        drop((tx, rx));
        assert_eq!(
            drops.load(Ordering::Relaxed),
            1,
            "dropped once, by the queue"
        );
    }

    #[test]
    fn a_panic_in_a_messages_drop_gives_its_slot_back_and_drops_it_once() {
        struct Bomb(Arc<AtomicU64>, bool);
        impl Drop for Bomb {
            fn drop(&mut self) {
                self.0.fetch_add(1, Ordering::Relaxed);
                assert!(!self.1, "boom");
            }
        }
        let drops = Arc::new(AtomicU64::new(0));
        let (tx, mut rx) = bounded(2);
        for bomb in [true, false] {
            assert!(tx.try_send(Bomb(Arc::clone(&drops), bomb)).is_ok());
        }
        let read = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| rx.recv_with(|_| ())));
        assert!(read.is_err(), "the drop panicked");
        assert_eq!(
            rx.recv_with(|b| b.1),
            Some(false),
            "the next message, not the same again"
        );
        assert!(
            tx.try_send(Bomb(Arc::clone(&drops), false)).is_ok(),
            "its slot is free"
        );
        drop((tx, rx));
        assert_eq!(drops.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn many_senders_each_arrive_complete_and_in_their_order() {
        const SENDERS: u64 = 4;
        // Miri explores interleavings and weak-memory outcomes; it is about 10 000 times slower.
        const EACH: u64 = if cfg!(miri) { 300 } else { 100_000 };
        let (tx, mut rx) = bounded::<(u64, u64)>(64);
        let senders: Vec<_> = (0..SENDERS)
            .map(|s| {
                let tx = tx.clone();
                std::thread::spawn(move || {
                    for i in 0..EACH {
                        let mut msg = (s, i);
                        loop {
                            match tx.try_send(msg) {
                                Ok(()) => break,
                                Err(TrySendError::Full(m)) => {
                                    msg = m;
                                    std::thread::yield_now();
                                }
                                Err(TrySendError::Disconnected(_)) => panic!("receiver gone"),
                            }
                        }
                    }
                })
            })
            .collect();
        drop(tx);
        let mut next = [0u64; SENDERS as usize];
        let mut received = 0;
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(60);
        while received < SENDERS * EACH {
            assert!(
                std::time::Instant::now() < deadline,
                "stalled at {received}"
            );
            match rx.recv_with(|&(s, i)| (s, i)) {
                Some((s, i)) => {
                    assert_eq!(i, next[s as usize], "sender {s} out of order");
                    next[s as usize] += 1;
                    received += 1;
                }
                None => std::thread::yield_now(),
            }
        }
        for s in senders {
            s.join().expect("sender");
        }
        assert!(rx.is_empty());
        assert_eq!(next, [EACH; SENDERS as usize]);
    }
}
