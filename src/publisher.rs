//! Producers' side: raise events onto the bounded channel, wake the reactor only when it sleeps.

use std::sync::atomic::{fence, AtomicU64, AtomicU8, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

use crossbeam_channel::TrySendError;

use crate::config::QueuePolicy;
use crate::event::Params;
use crate::queue::{Receiver, Sender};
use crate::registry::{EventId, Registry};
use crate::sys::EventFd;

/// [`Shared::state`]: the reactor is up.
const AWAKE: u8 = 0;
/// [`Shared::state`]: the reactor sleeps until something wakes it.
const ASLEEP: u8 = 1;
/// [`Shared::state`]: the reactor sleeps until a deadline of its own, every subscription
/// coalescing: events need not wake it, up to the one it said (see [`Shared::nap`]). At 1M
/// events/s coalesced it had slept and been woken 15 000 times a second, each wake an eventfd
/// write (an interprocessor interrupt) in the raising thread.
const NAPPING: u8 = 2;

/// One raised event on its way to the reactor: no name copy, params inline when small.
pub(crate) struct Raised {
    pub event: EventId,
    pub params: Params,
}

/// State shared by producers, the dispatcher handle and the reactor.
pub(crate) struct Shared {
    pub registry: Arc<Registry>,
    pub policy: QueuePolicy,
    /// [`AWAKE`], or the reactor sleeps ([`ASLEEP`], [`NAPPING`]) or is about to: whoever
    /// sets it back to `AWAKE` writes `wake`.
    ///
    /// Why no wakeup is lost: the reactor sets it, then looks at the queue (`SeqCst` on the
    /// tail); a producer claims its slot (a `SeqCst` read-modify-write of the tail), then looks
    /// here. All `SeqCst` operations are in one order, so at least one of them sees the other:
    /// the reactor sees the event and stays up, or the producer sees it asleep and wakes it.
    /// The same holds for control messages (crossbeam's send and `is_empty` are `SeqCst`).
    /// A napping reactor wakes by itself at its deadline: an event before its `nap_until`-th
    /// is not worth a wake.
    state: AtomicU8,
    /// While [`NAPPING`]: the number of the first event (see [`Sender::try_send_with`]) that
    /// wakes the reactor. Written before the state, read after it.
    nap_until: AtomicU64,
    /// Eventfd writes, for the tests that the reactor naps.
    #[cfg(test)]
    pub wakes: AtomicU64,
    pub dropped_queue_full: AtomicU64,
    /// Producers between finding the channel full and counting the drop. The reactor's final
    /// count waits for none to be left, so that a drop reported to a producer as
    /// [`RaiseError::QueueFull`] is in the final stats (see [`Shared::count_full`]).
    deciding: AtomicUsize,
    pub wake: EventFd,
    /// Where producers wait for room under the `block` policy.
    pub room: Room,
}

impl Shared {
    pub fn new(
        registry: Arc<Registry>,
        policy: QueuePolicy,
        queue_bytes: usize,
    ) -> std::io::Result<Self> {
        Ok(Shared {
            registry,
            policy,
            state: AtomicU8::new(AWAKE),
            nap_until: AtomicU64::new(0),
            #[cfg(test)]
            wakes: AtomicU64::new(0),
            dropped_queue_full: AtomicU64::new(0),
            deciding: AtomicUsize::new(0),
            wake: EventFd::new()?,
            room: Room::new(queue_bytes),
        })
    }

    /// Wakes the reactor if it sleeps or naps. Call after making work visible with a `SeqCst`
    /// operation: a control message, a subscription change, an event sent after waiting.
    #[inline]
    pub fn wake_reactor(&self) {
        // A plain load first: the reactor is seldom asleep while events come.
        if self.state.load(Ordering::SeqCst) != AWAKE
            && self.state.swap(AWAKE, Ordering::SeqCst) != AWAKE
        {
            self.wake.wake();
            #[cfg(test)]
            self.wakes.fetch_add(1, Ordering::Relaxed);
        }
    }

    /// Event number `number` was sent (see [`Sender::try_send_with`]): wakes the reactor if
    /// it sleeps, or if it naps and this is the event it waits for.
    #[inline]
    pub fn event_sent(&self, number: u64) {
        match self.state.load(Ordering::SeqCst) {
            AWAKE => {}
            NAPPING if number < self.nap_until.load(Ordering::Relaxed) => {}
            _ => self.wake_reactor(),
        }
    }

    /// The reactor is about to sleep until an event comes: it looks at its queues once more
    /// after this.
    pub fn sleep(&self) {
        self.state.store(ASLEEP, Ordering::SeqCst);
    }

    /// The reactor is about to sleep until a deadline of its own, and wants to be woken before
    /// only by event number `until` or a later one (or by anything but an event). It looks at
    /// its queues once more after this.
    pub fn nap(&self, until: u64) {
        self.nap_until.store(until, Ordering::Relaxed);
        self.state.store(NAPPING, Ordering::SeqCst);
    }

    /// An event found the channel full: ends a nap. A nap is bounded in events, so that the
    /// channel's slots never fill during it, but large params can fill its bytes first
    /// (`queue_bytes`), and then nothing would take them until the nap's deadline. Not a
    /// sleep: the reactor sleeps with the channel full only while its intake is paused, and a
    /// wake-up for each event refused meanwhile would be for nothing.
    #[cold]
    pub fn end_nap(&self) {
        if self.state.load(Ordering::SeqCst) == NAPPING {
            self.wake_reactor();
        }
    }

    /// Whether the reactor is up: neither asleep nor napping (for tests that wait for it to
    /// sleep).
    #[cfg(test)]
    pub fn reactor_awake(&self) -> bool {
        self.state.load(Ordering::SeqCst) == AWAKE
    }

    /// The reactor is up again.
    pub fn awake(&self) {
        self.state.store(AWAKE, Ordering::Relaxed);
    }

    /// An event found no room: counts it as dropped and returns true, or returns false if the
    /// channel is closed (shutting down: the event was not raised, and is not counted).
    ///
    /// Why the final stats hold every drop a producer was told of: the producer marks itself
    /// `deciding`, then looks at the closed mark; the reactor closes the channel, then waits
    /// for no producer `deciding` before it reads the count (all `SeqCst`, so one order).
    /// Either the reactor sees this producer deciding and waits for its count, or the producer
    /// comes after the wait in that order and sees the channel closed.
    #[cold]
    pub fn count_full(&self, tx: &Sender<Raised>) -> bool {
        self.deciding.fetch_add(1, Ordering::SeqCst);
        let open = !tx.is_closed();
        if open {
            self.dropped_queue_full.fetch_add(1, Ordering::Relaxed);
        }
        self.deciding.fetch_sub(1, Ordering::SeqCst);
        open
    }

    /// Waits until no producer is between finding the channel full and counting the drop;
    /// call after closing the channel, before the final count. A producer is there for a
    /// few instructions, unless preempted.
    pub fn settle_drops(&self) {
        while self.deciding.load(Ordering::SeqCst) != 0 {
            std::thread::yield_now();
        }
    }
}

/// The channel's room: its slots, and the bytes of large params it may hold
/// (`DispatcherConfig::queue_bytes`). Producers that found it full wait here until the reactor
/// has emptied half of it.
///
/// crossbeam's blocking `send` wakes a waiting producer each time one event is taken. With the
/// producer and the reactor on one CPU that is a context switch per event, each way: the
/// reactor takes one event, the producer wakes and puts one back, and so on. Waking at half
/// empty lets each side run for thousands of events at a time.
pub(crate) struct Room {
    waiting: AtomicUsize,
    lock: Mutex<()>,
    freed: Condvar,
    /// Heap bytes of the params in the channel (see [`Params::heap_bytes`]).
    bytes: AtomicUsize,
    max_bytes: usize,
}

/// A bound on one wait, so that a producer notices a reactor that is gone without being told
/// (it never needs it otherwise).
const ROOM_WAIT: Duration = Duration::from_millis(100);

impl Room {
    /// Room for up to `max_bytes` of large params.
    pub fn new(max_bytes: usize) -> Self {
        Room {
            waiting: AtomicUsize::new(0),
            lock: Mutex::new(()),
            freed: Condvar::new(),
            bytes: AtomicUsize::new(0),
            max_bytes,
        }
    }

    /// Counts `bytes` of params (0 for inline ones) into the channel's bytes, if they fit.
    /// Params larger than the whole bound fit once the channel holds at most half of it, when
    /// waiting producers are woken: waiting for a channel that holds none, they could wait for
    /// ever behind a steady stream of smaller large params, which refills it from half.
    #[inline]
    fn reserve(&self, bytes: usize) -> bool {
        if bytes == 0 {
            return true;
        }
        let limit = if bytes > self.max_bytes {
            self.max_bytes / 2 + bytes
        } else {
            self.max_bytes
        };
        let mut held = self.bytes.load(Ordering::Relaxed);
        loop {
            if held + bytes > limit {
                return false;
            }
            match self.bytes.compare_exchange_weak(
                held,
                held + bytes,
                Ordering::Relaxed,
                Ordering::Relaxed,
            ) {
                Ok(_) => return true,
                Err(now) => held = now,
            }
        }
    }

    /// Takes `bytes` out of the channel's bytes: their event left it, or never got in.
    #[inline]
    pub fn release(&self, bytes: usize) {
        if bytes != 0 {
            self.bytes.fetch_sub(bytes, Ordering::Relaxed);
        }
    }

    /// Puts `msg` in the channel if there is room for it: a slot, and its params' bytes.
    #[allow(clippy::result_large_err)]
    fn try_send(&self, tx: &Sender<Raised>, msg: Raised) -> Result<(), TrySendError<Raised>> {
        let bytes = msg.params.heap_bytes();
        if !self.reserve(bytes) {
            return Err(TrySendError::Full(msg));
        }
        tx.try_send(msg).inspect_err(|_| self.release(bytes))
    }

    /// Sends `msg` once the channel was found full: waits while it stays full (calling
    /// `still_full` at each look that finds it so), until `deadline` if there is one; gives it
    /// back if the channel is closed, or still full at the deadline.
    // The event comes back whole, as with crossbeam's `TrySendError<T>`.
    #[allow(clippy::result_large_err)]
    #[cold]
    #[inline(never)]
    fn wait_and_send(
        &self,
        tx: &Sender<Raised>,
        mut msg: Raised,
        deadline: Option<Instant>,
        still_full: impl Fn(),
    ) -> Result<(), TrySendError<Raised>> {
        let mut guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.waiting.fetch_add(1, Ordering::SeqCst);
        let result = loop {
            // Pairs with the fence in `notify`: either the reactor sees us waiting, or this
            // look sees the room it made.
            fence(Ordering::SeqCst);
            match self.try_send(tx, msg) {
                // Closed while its bytes are still counted (a reactor that died in a batch
                // never releases them): the room would never come.
                Err(TrySendError::Full(m)) if tx.is_closed() => {
                    break Err(TrySendError::Disconnected(m))
                }
                Err(TrySendError::Full(m)) => {
                    still_full();
                    let wait = match deadline.map(|d| d.saturating_duration_since(Instant::now())) {
                        Some(Duration::ZERO) => break Err(TrySendError::Full(m)),
                        Some(left) => left.min(ROOM_WAIT),
                        None => ROOM_WAIT,
                    };
                    msg = m;
                    // The reactor notifies under the lock, which `wait` releases only once we wait.
                    guard = match self.freed.wait_timeout(guard, wait) {
                        Ok((g, _)) => g,
                        Err(e) => e.into_inner().0,
                    };
                }
                other => break other,
            }
        };
        self.waiting.fetch_sub(1, Ordering::SeqCst);
        drop(guard);
        result
    }

    /// Called by the reactor after taking events (and [`release`](Self::release)-ing their
    /// bytes): wakes waiting producers once the channel is at most half full, in slots and in
    /// bytes.
    #[inline]
    pub fn notify(&self, rx: &Receiver<Raised>) {
        fence(Ordering::SeqCst);
        if self.waiting.load(Ordering::SeqCst) == 0 {
            return;
        }
        let bytes = self.bytes.load(Ordering::Relaxed);
        if rx.len() <= rx.capacity() / 2 && bytes <= self.max_bytes / 2 {
            self.wake_all();
        }
    }

    /// Wakes every waiting producer.
    pub fn wake_all(&self) {
        let _guard = self.lock.lock().unwrap_or_else(|e| e.into_inner());
        self.freed.notify_all();
    }
}

/// Why an event was not raised; the event comes back in the error.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum RaiseError {
    /// The channel is full and the policy is `drop`, or it stayed full for the whole timeout
    /// of [`Publisher::raise_timeout`] (the drop is counted).
    #[error("event dropped: the dispatcher's queue is full")]
    QueueFull(EventId, Params),
    /// The dispatcher is shutting down or gone.
    #[error("event not raised: the dispatcher is shut down")]
    ShutDown(EventId, Params),
    /// The event id was published by another dispatcher.
    #[error("event id {} was not published by this dispatcher", .0.index())]
    ForeignEvent(EventId, Params),
}

impl RaiseError {
    /// Takes the event back.
    pub fn into_event(self) -> (EventId, Params) {
        match self {
            RaiseError::QueueFull(e, p)
            | RaiseError::ShutDown(e, p)
            | RaiseError::ForeignEvent(e, p) => (e, p),
        }
    }
}

/// Raises events from any thread: `Clone + Send + Sync`, cheap to clone.
///
/// Raising never touches the network: the event goes onto a bounded channel and the reactor
/// thread sends it. With the `block` policy a full channel makes `raise` wait; with `drop` the
/// event comes back in [`RaiseError::QueueFull`] and is counted.
#[derive(Clone)]
pub struct Publisher {
    pub(crate) tx: Sender<Raised>,
    pub(crate) shared: Arc<Shared>,
}

impl Publisher {
    /// Raises `event` with `params`.
    // The event comes back whole in the error, as with crossbeam's `TrySendError<T>`.
    #[allow(clippy::result_large_err)]
    #[inline]
    pub fn raise(&self, event: EventId, params: Params) -> Result<(), RaiseError> {
        self.raise_until(event, params, None)
    }

    /// Raises `event` with `params`, waiting at most `timeout` for room in the channel under
    /// the `block` policy (the same as [`raise`](Self::raise) under `drop`). An event still
    /// without room then comes back in [`RaiseError::QueueFull`] and is counted, as `drop`
    /// does. For callers that must not hang when every receiver is stalled (a control
    /// endpoint, say).
    #[allow(clippy::result_large_err)]
    pub fn raise_timeout(
        &self,
        event: EventId,
        params: Params,
        timeout: Duration,
    ) -> Result<(), RaiseError> {
        // A timeout past what `Instant` can count is no deadline (`Duration::MAX`: wait for ever).
        self.raise_until(event, params, Instant::now().checked_add(timeout))
    }

    #[allow(clippy::result_large_err)]
    #[inline]
    fn raise_until(
        &self,
        event: EventId,
        params: Params,
        deadline: Option<Instant>,
    ) -> Result<(), RaiseError> {
        if !self.shared.registry.owns(event) {
            return Err(RaiseError::ForeignEvent(event, params));
        }
        let shared = &*self.shared;
        let bytes = params.heap_bytes();
        let sent = if shared.room.reserve(bytes) {
            // The event is made in its slot: no copy of it on the way there (the closure is
            // built in the call, so the params are not moved into it first).
            match self.tx.try_send_with(|| Raised { event, params }) {
                Ok(number) => Ok(Some(number)),
                Err(e) => {
                    shared.room.release(bytes);
                    match e {
                        TrySendError::Full(make) => self.when_full(make(), deadline),
                        TrySendError::Disconnected(make) => Err(TrySendError::Disconnected(make())),
                    }
                }
            }
        } else {
            self.when_full(Raised { event, params }, deadline)
        };
        match sent {
            Ok(Some(number)) => {
                shared.event_sent(number);
                Ok(())
            }
            // Sent after waiting for room: the reactor must make more.
            Ok(None) => {
                shared.wake_reactor();
                Ok(())
            }
            Err(TrySendError::Full(m)) if shared.count_full(&self.tx) => {
                Err(RaiseError::QueueFull(m.event, m.params))
            }
            // Found full as the queue closed: not raised, and not counted.
            Err(TrySendError::Full(m)) => Err(RaiseError::ShutDown(m.event, m.params)),
            // Shutting down: the queue is closed.
            Err(TrySendError::Disconnected(m)) => Err(RaiseError::ShutDown(m.event, m.params)),
        }
    }

    /// The channel had no room for `msg`: wait for it (`block`; `Ok(None)` once sent), or
    /// give the event back.
    #[allow(clippy::result_large_err)]
    #[cold]
    fn when_full(
        &self,
        msg: Raised,
        deadline: Option<Instant>,
    ) -> Result<Option<u64>, TrySendError<Raised>> {
        match self.shared.policy {
            // Each look that finds it still full ends a nap: the reactor may begin one after
            // the first (a producer that had claimed room was yet to write).
            QueuePolicy::Block => self
                .shared
                .room
                .wait_and_send(&self.tx, msg, deadline, || self.shared.end_nap())
                .map(|()| None),
            QueuePolicy::Drop => {
                self.shared.end_nap();
                Err(TrySendError::Full(msg))
            }
        }
    }
}

impl std::fmt::Debug for Publisher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Publisher").finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn large_params_fit_up_to_the_bound_and_larger_ones_from_half_of_it() {
        const KIB: usize = 1 << 10;
        let room = Room::new(16 * KIB);
        assert!(room.reserve(0), "inline params always fit");
        assert!(room.reserve(8 * KIB));
        assert!(room.reserve(8 * KIB), "up to the bound");
        assert!(!room.reserve(512), "not past it");
        assert!(
            !room.reserve(64 * KIB),
            "larger than the bound, the channel full"
        );
        room.release(8 * KIB);
        assert!(
            room.reserve(64 * KIB),
            "larger than the bound, the channel at half of it"
        );
        assert!(!room.reserve(512), "then nothing until it is taken");
        room.release(64 * KIB);
        room.release(8 * KIB);
        assert_eq!(room.bytes.load(Ordering::Relaxed), 0);
        assert!(room.reserve(64 * KIB), "an empty channel takes any");
    }

    /// A reactor that dies in a batch leaves its events' bytes counted: a producer waiting for
    /// room must see the queue closed, not wait for room that never comes.
    #[test]
    fn a_producer_waiting_for_room_leaves_when_the_queue_closes() {
        let room = Room::new(1 << 10);
        assert!(
            room.reserve(1 << 10),
            "bytes the dead reactor never released"
        );
        let (tx, rx) = crate::queue::bounded::<Raised>(4);
        drop(rx);
        let registry = Registry::new(Arc::new(crate::clock::SystemClock::default()));
        let event = registry.publish("E_X").unwrap();
        let params = Params::new().str("v", &"x".repeat(2_000)).unwrap();
        let deadline = Instant::now() + Duration::from_secs(5);
        let sent = room.wait_and_send(&tx, Raised { event, params }, Some(deadline), || {});
        assert!(matches!(sent, Err(TrySendError::Disconnected(_))));
    }
}
