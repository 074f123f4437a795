//! The reactor: one thread owns the sockets, the per-target queues, the encode buffers and the
//! backend, so nothing on the hot path takes a lock or allocates.
//!
//! Each turn it takes up to `batch` events from the channel, encodes each event once per format
//! its subscribers use, appends a reference to that buffer to every subscriber's queue (or, for
//! a coalescing subscription, appends the bytes to the target's open datagram; for a UDP GSO
//! target that is the event's only subscriber, to the target's open run), then runs one
//! send round: the head of every ready queue, in order, through the backend. A round ends only
//! when the kernel has answered for every datagram in it (see [`SendBackend`]).
//!
//! Per target, an event leaves as sent, failed or dropped, and is counted once:
//! `raised = sent + dropped + failed + pending`, with `pending` the events still queued or in
//! an open coalesced datagram or GSO run.

mod outbox;
pub(crate) mod pool;
mod retry;
mod socket;
pub(crate) mod syscall;
pub(crate) mod uring;

use std::collections::HashMap;
use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use crossbeam_channel::Receiver;

use crate::config::DispatcherConfig;
use crate::encode::{Format, MAX_DATAGRAM};
use crate::error::EncodeError;
use crate::publisher::{Raised, Shared};
use crate::queue;
use crate::registry::Snapshot;
use crate::stats::{Backend, EventCounters, Stats, TargetCounters, TargetStats};
use crate::sys::EventFd;
use crate::target::Target;
use outbox::Outbox;
use pool::{BufRef, Pool};
use retry::FullReceiver;
use socket::{SendFailure, Socket};

/// The kernel-facing half of the reactor. Two implementations: io_uring and `sendmmsg`.
pub(crate) trait SendBackend {
    /// Which one this is.
    fn kind(&self) -> Backend;

    /// A socket for `slot` was opened.
    fn add_socket(&mut self, slot: u32, fd: RawFd);

    /// The socket of `slot` is about to be closed.
    fn remove_socket(&mut self, slot: u32);

    /// Sends every target's datagrams of `round`, in order per target, and fills
    /// `round.outcomes`. A linked target's sends stop at its first failure (the rest are
    /// [`NOT_ATTEMPTED`]). Must not return while the kernel may still read a datagram's buffer:
    /// the buffers are borrowed from `pool` only for this call.
    fn send_round(&mut self, pool: &Pool, round: &mut Round);

    /// Tells the backend to report `slot` as ready once its socket is writable again.
    fn watch_writable(&mut self, slot: u32, fd: RawFd);

    /// Waits until `wake` is written, a watched socket is writable, or `timeout` passes (`None`:
    /// no limit; zero: just look). Appends writable slots to `ready`.
    fn wait(
        &mut self,
        wake: &EventFd,
        timeout: Option<Duration>,
        ready: &mut Vec<u32>,
    ) -> io::Result<()>;
}

/// A datagram in a round, or a GSO run of them: its buffer's index and length.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Item {
    pub buf: u32,
    pub len: u32,
    /// For a run (see [`Queued::segment`]): the size of its datagrams; 0 for one datagram.
    pub segment: u32,
}

/// One target's part of a round: `items[first..first + count]`, sent on `fd`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RoundTarget {
    pub slot: u32,
    pub fd: RawFd,
    pub first: u32,
    pub count: u32,
    /// Send runs of equal-size datagrams as one UDP GSO message (see [`next_message`]).
    pub gso: bool,
    /// The sends must form one chain that stops at the first failure (see `Slot::linked`).
    pub linked: bool,
}

/// The outcome of an item that the kernel was never asked to send.
pub(crate) const NOT_ATTEMPTED: i32 = -libc::ECANCELED;

/// The outcome of the items of a GSO message that the kernel refused (`EINVAL`, `EIO`): they
/// are sent again without GSO, which stays off for that socket.
pub(crate) const GSO_REFUSED: i32 = i32::MIN;

/// Segments in one GSO message (the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels).
const GSO_MAX_SEGMENTS: usize = 64;
/// Bytes in one GSO message: a UDP payload's limit, with room for headers.
const GSO_MAX_BYTES: usize = 65_000;

/// One `sendmsg` of a target's round: `items` items from the first given, and the UDP GSO
/// segment size when it carries several datagrams (0: it is one datagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Message {
    pub items: usize,
    pub segment: u16,
}

/// The message that sends the start of `items`: a run alone (it is its own GSO message);
/// with `gso`, consecutive datagrams of one size (the last may be shorter, as the kernel
/// allows); otherwise one datagram.
pub(crate) fn next_message(items: &[Item], gso: bool) -> Message {
    let Some(first) = items.first() else {
        return Message {
            items: 0,
            segment: 0,
        };
    };
    if first.segment != 0 {
        return Message {
            items: 1,
            segment: first.segment as u16,
        };
    }
    let size = first.len as usize;
    let mut n = 1;
    let mut bytes = size;
    while gso && n < items.len() && n < GSO_MAX_SEGMENTS {
        let Item { len, segment, .. } = items[n];
        let len = len as usize;
        if segment != 0 || len > size || bytes + len > GSO_MAX_BYTES {
            break;
        }
        bytes += len;
        n += 1;
        if len < size {
            break;
        }
    }
    Message {
        items: n,
        segment: if n > 1 { size as u16 } else { 0 },
    }
}

/// One send round; vectors are reused, so rounds do not allocate.
#[derive(Default)]
pub(crate) struct Round {
    pub items: Vec<Item>,
    pub targets: Vec<RoundTarget>,
    /// Per item: bytes sent, or `-errno`, or [`NOT_ATTEMPTED`].
    pub outcomes: Vec<i32>,
}

impl Round {
    fn clear(&mut self) {
        self.items.clear();
        self.targets.clear();
        self.outcomes.clear();
    }
}

enum Conn {
    Up(Socket),
    Down {
        retry_at: Instant,
        backoff: Duration,
    },
}

/// A datagram waiting to be sent: one event, or several when coalesced; or a GSO run.
struct Queued {
    buf: BufRef,
    len: u32,
    events: u32,
    /// A run's datagram size: `buf[..len]` is one datagram of this size per event, back to
    /// back, the last possibly shorter. 0: `buf[..len]` is one datagram.
    segment: u32,
}

impl Queued {
    /// One event's datagram.
    fn single(buf: BufRef, len: u32) -> Queued {
        Queued {
            buf,
            len,
            events: 1,
            segment: 0,
        }
    }

    /// How many datagrams this sends.
    fn datagrams(&self) -> u64 {
        if self.segment == 0 {
            1
        } else {
            u64::from(self.events)
        }
    }
}

impl From<Open> for Queued {
    fn from(o: Open) -> Queued {
        let segment = match o.kind {
            OpenKind::Run { segment, .. } if o.events > 1 => segment,
            _ => 0,
        };
        Queued {
            buf: o.buf,
            len: o.len,
            events: o.events,
            segment,
        }
    }
}

/// A datagram, or a run of them, still taking events: they are encoded straight into its
/// buffer.
struct Open {
    buf: BufRef,
    len: u32,
    events: u32,
    format: Format,
    kind: OpenKind,
}

#[derive(Clone, Copy)]
enum OpenKind {
    /// Coalesced events: one datagram, queued when the next event does not fit or at its
    /// deadline.
    Coalesced { max_bytes: u32, deadline: Instant },
    /// A UDP GSO run: one datagram of `segment` bytes per event, back to back, as many as
    /// `max_events`; queued at the end of the batch, or when an event of another size comes
    /// (a shorter one ends it). The kernel sends it as one message, and the receiver gets
    /// each datagram as it would have without GSO.
    Run { segment: u32, max_events: u32 },
}

impl Open {
    fn is_run(&self) -> bool {
        matches!(self.kind, OpenKind::Run { .. })
    }

    fn deadline(&self) -> Option<Instant> {
        match self.kind {
            OpenKind::Coalesced { deadline, .. } => Some(deadline),
            OpenKind::Run { .. } => None,
        }
    }
}

/// Everything the reactor keeps for one destination.
struct Slot {
    target: Target,
    conn: Conn,
    queue: Outbox,
    /// Waiting for the socket to become writable.
    blocked: bool,
    /// In the `active` list (has queued datagrams and may send).
    active: bool,
    /// Referenced by the current snapshot.
    referenced: bool,
    /// Send runs of equal-size datagrams with UDP GSO.
    gso: bool,
    /// Send each round as one chain that stops at the first failure, so a retried datagram is
    /// never overtaken. Always for UNIX targets, whose receivers fill up (EAGAIN) all the time;
    /// UDP targets start without (chaining costs a quarter of the io_uring send rate here, and
    /// a connected UDP socket on loopback never answers EAGAIN) and switch for good at their
    /// first EAGAIN: at most that one round can then arrive out of order.
    linked: bool,
    /// The coalesced datagram being filled, if any.
    open: Option<Open>,
    /// The most datagrams to send in one round: shrinks to what fit when the receiver was
    /// full (each refused send in an io_uring chain costs a cancelled entry), doubles back.
    window: u32,
    counters: TargetCounters,
    last_log: Option<Instant>,
    /// Whether to retry or wait when the receiver is full (`EAGAIN`).
    full: FullReceiver,
}

impl Slot {
    /// Empties the queue and the open coalesced datagram, releasing their buffers; returns how
    /// many events they held (for the caller to count as failed or dropped).
    fn empty(&mut self, pool: &mut Pool) -> u64 {
        let open = self.open.take().map(Queued::from);
        let mut events = 0;
        for q in self.queue.drain().chain(open) {
            events += u64::from(q.events);
            pool.release(q.buf);
        }
        events
    }
}

/// The smallest per-round window of a target (see `Slot::window`).
const MIN_WINDOW: u32 = 8;
const RECONNECT_MIN: Duration = Duration::from_millis(10);
const RECONNECT_MAX: Duration = Duration::from_secs(1);
const LOG_INTERVAL: Duration = Duration::from_secs(60);

/// Requests from the dispatcher handle.
pub(crate) enum Control {
    Stats(crossbeam_channel::Sender<Stats>),
    Shutdown,
}

pub(crate) struct Reactor<B: SendBackend> {
    /// The producers' queue; taken out while a batch is read (see `dispatch_batch`).
    rx: Option<queue::Receiver<Raised>>,
    control: Receiver<Control>,
    shared: Arc<Shared>,
    backend: B,
    pool: Pool,
    snapshot: Arc<Snapshot>,
    slots: Vec<Option<Slot>>,
    free_slots: Vec<u32>,
    by_target: HashMap<Target, u32>,
    /// Slot of each target of the current snapshot, by the snapshot's target index.
    route_slots: Vec<u32>,
    active: Vec<u32>,
    blocked: usize,
    round: Round,
    ready: Vec<u32>,
    queue_cap: usize,
    max_per_target: usize,
    /// Datagrams one round may carry (the ring's size for `uring`).
    round_budget: usize,
    /// UDP GSO is on in the configuration and the kernel supports it.
    gso: bool,
    /// Slots with an open coalesced datagram.
    open_slots: Vec<u32>,
    /// When the current batch was taken (coalescing deadlines count from it).
    batch_time: Instant,
    /// Events of the current batch not yet routed, as far as the queue showed at its start
    /// (whether a new GSO run may expect more).
    batch_left: usize,
    /// The earliest reconnect attempt due, if any target is down.
    next_retry: Option<Instant>,
    events: EventCounters,
    retired: TargetCounters,
    shutdown_deadline: Option<Instant>,
    config: DispatcherConfig,
}

impl<B: SendBackend> Reactor<B> {
    pub fn new(
        rx: queue::Receiver<Raised>,
        control: Receiver<Control>,
        shared: Arc<Shared>,
        backend: B,
        config: DispatcherConfig,
        max_per_target: usize,
        round_budget: usize,
    ) -> Self {
        Reactor {
            rx: Some(rx),
            control,
            shared,
            backend,
            // Prefilled for two batches encoded in both formats: a steady load then allocates
            // no buffer (the pool grows by doubling beyond).
            pool: Pool::new(config.buffer_pool_bytes, 4 * config.batch),
            snapshot: Arc::default(),
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_target: HashMap::new(),
            route_slots: Vec::new(),
            active: Vec::new(),
            blocked: 0,
            round: Round {
                items: Vec::with_capacity(round_budget),
                targets: Vec::new(),
                outcomes: Vec::with_capacity(round_budget),
            },
            round_budget,
            ready: Vec::new(),
            queue_cap: config.retry_queue + config.batch,
            max_per_target: max_per_target.min(config.batch).max(1),
            next_retry: None,
            open_slots: Vec::new(),
            batch_time: Instant::now(),
            batch_left: 0,
            gso: config.udp_gso && crate::sys::udp_gso_supported(),
            events: EventCounters::default(),
            retired: TargetCounters::default(),
            shutdown_deadline: None,
            config,
        }
    }

    /// Runs until shut down; returns the final counters, with nothing pending.
    pub fn run(mut self) -> Stats {
        loop {
            self.take_control();
            let intake = self.intake_open();
            let took = if intake { self.dispatch_batch() } else { 0 };
            self.reconnect_due();
            if !self.open_slots.is_empty() {
                self.seal_due(Instant::now());
            }
            if self.blocked > 0 {
                self.poll_ready(Some(Duration::ZERO));
            }
            let sending = !self.active.is_empty();
            if sending {
                self.send_round();
            }
            // Also while sending: a receiver that keeps taking a little (and so keeps being
            // retried) must not hold shutdown past its deadline.
            if self.shutdown_deadline.is_some() && self.finished() {
                break;
            }
            if took == 0 && !sending {
                self.sleep(intake);
            }
        }
        self.finish()
    }

    /// Whether to take new events now. Not when the next round cannot send all that is queued
    /// (the reactor is the bottleneck), and not when every live target is slow and full: then
    /// the channel fills and producers feel it (the queue policy) instead of events being
    /// dropped at the targets. One slow target among others never pauses intake, so it never
    /// delays them; it drops its own overflow. After the shutdown deadline intake never pauses.
    fn intake_open(&self) -> bool {
        if self.backlog() > self.round_budget {
            return false;
        }
        if self.shutdown_deadline.is_some_and(|d| Instant::now() >= d) {
            return true;
        }
        // "Full": the next batch might not fit in the queue. The scan stops at the first
        // target with room, which in the common case is the first.
        let roomy = |&i: &u32| {
            let slot = self.slots[i as usize].as_ref().expect("routed slots exist");
            !matches!(slot.conn, Conn::Up(_)) || slot.queue.datagrams() <= self.config.retry_queue
        };
        self.route_slots.is_empty() || self.route_slots.iter().any(roomy)
    }

    /// Answers control requests.
    fn take_control(&mut self) {
        while let Ok(c) = self.control.try_recv() {
            match c {
                Control::Stats(reply) => {
                    let _ = reply.send(self.stats());
                }
                Control::Shutdown => self.begin_shutdown(),
            }
        }
    }

    /// Datagrams queued for targets that can send now.
    fn backlog(&self) -> usize {
        self.active
            .iter()
            .map(|&i| self.slots[i as usize].as_ref().map_or(0, |s| s.queue.len()))
            .sum()
    }

    fn begin_shutdown(&mut self) {
        if self.shutdown_deadline.is_none() {
            self.rx().close();
            self.shutdown_deadline = Some(Instant::now() + self.config.shutdown_timeout());
        }
    }

    /// Shutting down and done: no raise in progress, channel empty, queues empty or out of time.
    fn finished(&self) -> bool {
        // Closed: no new event comes in, and one still being written keeps the queue non-empty.
        if !self.rx().is_empty() {
            return false;
        }
        let queued = self
            .slots
            .iter()
            .flatten()
            .any(|s| !s.queue.is_empty() || s.open.is_some());
        !queued || self.shutdown_deadline.is_some_and(|d| Instant::now() >= d)
    }

    /// Takes up to `batch` events from the channel and routes each; returns how many.
    fn dispatch_batch(&mut self) -> usize {
        // Out of `self` while events are read in place, so that routing can borrow the reactor.
        let mut rx = self
            .rx
            .take()
            .expect("the receiver is back after each batch");
        let took = self.route_from(&mut rx);
        self.shared.room.notify(&rx);
        self.rx = Some(rx);
        took
    }

    /// [`dispatch_batch`](Self::dispatch_batch)'s reading: each event is routed where it lies
    /// in the queue, and dropped there.
    fn route_from(&mut self, rx: &mut queue::Receiver<Raised>) -> usize {
        if rx.is_empty() {
            return 0;
        }
        if let Some(snapshot) = self
            .shared
            .registry
            .snapshot_if_newer(self.snapshot.generation)
        {
            self.apply_snapshot(snapshot);
        }
        let now = self.shared.registry.clock().now();
        self.batch_time = Instant::now();
        let snapshot = Arc::clone(&self.snapshot);
        self.batch_left = rx.len().min(self.config.batch);
        let mut took = 0;
        while took < self.config.batch {
            if rx
                .recv_with(|msg| self.route(&snapshot, msg, now))
                .is_none()
            {
                break;
            }
            took += 1;
        }
        if took == 0 {
            // Not empty, yet nothing to read: a producer is writing the next event, and may
            // be waiting for this CPU to finish it.
            std::thread::yield_now();
        }
        took
    }

    fn rx(&self) -> &queue::Receiver<Raised> {
        self.rx
            .as_ref()
            .expect("the receiver is back after each batch")
    }

    /// Encodes `msg` once per format its live subscribers use and queues it for each.
    fn route(&mut self, snapshot: &Snapshot, msg: &Raised, now: Duration) {
        self.events.dispatched += 1;
        self.batch_left = self.batch_left.saturating_sub(1);
        let index = msg.event.index() as usize;
        let routes = snapshot.routes.get(index).map_or(&[][..], Vec::as_slice);
        if let [route] = routes {
            let name = &snapshot.names[index];
            if self.append_to_open(route, name, msg, now) || self.route_one(route, name, msg, now) {
                return;
            }
        }
        let mut encoded: [Option<Result<(BufRef, u32), EncodeError>>; 2] = [None, None];
        let mut live = 0;
        for route in routes.iter().filter(|r| r.is_live(now)) {
            live += 1;
            let slot_index = self.route_slots[route.target as usize];
            let fmt = route.format as usize;
            if encoded[fmt].is_none() {
                encoded[fmt] = Some(self.encode(route.format, &snapshot.names[index], msg, 1));
            }
            let slot = self.slots[slot_index as usize]
                .as_mut()
                .expect("routed slots exist");
            slot.counters.raised += 1;
            match encoded[fmt].as_ref().expect("encoded above") {
                Err(e) => {
                    slot.counters.failed_oversize += 1;
                    log_limited(&mut slot.last_log, &slot.target, e);
                }
                Ok(_) if matches!(slot.conn, Conn::Down { .. }) => {
                    slot.counters.failed_unreachable += 1
                }
                Ok(_) if slot.queue.datagrams() >= self.queue_cap => {
                    slot.counters.dropped_retry_overflow += 1
                }
                Ok((buf, len)) => {
                    let coalesce = route.coalesce.filter(|c| *len as usize <= c.max_bytes());
                    // An open datagram takes this event only if it is coalesced, of the same
                    // format, and fits; otherwise it goes out first, which keeps the order.
                    let fits = slot.open.as_ref().is_some_and(|o| match o.kind {
                        OpenKind::Coalesced { max_bytes, .. } => {
                            coalesce.is_some()
                                && o.format == route.format
                                && o.len + len <= max_bytes
                        }
                        OpenKind::Run { .. } => false,
                    });
                    if slot.open.is_some() && !fits {
                        self.seal_at(slot_index);
                    }
                    match coalesce {
                        None => {
                            let q = Queued::single(self.pool.retain(buf), *len);
                            self.enqueue_at(slot_index, q);
                        }
                        Some(c) => {
                            let slot = self.slots[slot_index as usize]
                                .as_mut()
                                .expect("routed slots exist");
                            if slot.open.is_none() {
                                slot.open = Some(Open {
                                    buf: self.pool.alloc(c.max_bytes()),
                                    len: 0,
                                    events: 0,
                                    format: route.format,
                                    kind: OpenKind::Coalesced {
                                        max_bytes: c.max_bytes() as u32,
                                        deadline: self.batch_time + c.max_delay(),
                                    },
                                });
                                note_open(&mut self.open_slots, slot_index);
                            }
                            let open = slot.open.as_mut().expect("opened above");
                            self.pool
                                .copy(&open.buf, open.len as usize, buf, 0, *len as usize);
                            open.len += len;
                            open.events += 1;
                        }
                    }
                }
            }
        }
        if live == 0 {
            self.events.unsubscribed += 1;
        }
        for (buf, _) in encoded.into_iter().flatten().flatten() {
            self.pool.release(buf);
        }
    }

    /// The common case without coalescing: the event's only subscriber is live, connected,
    /// and has room. Its buffer goes to that queue as it is, with no second reference to count
    /// and release; or, for a UDP target with GSO, the event joins a run (see
    /// [`add_to_run`](Self::add_to_run)). Returns false, having changed nothing, when that is
    /// not the case: [`route`](Self::route) then does it all.
    fn route_one(
        &mut self,
        route: &crate::registry::Route,
        name: &crate::EventName,
        msg: &Raised,
        now: Duration,
    ) -> bool {
        if route.coalesce.is_some() || !route.is_live(now) {
            return false;
        }
        let slot_index = self.route_slots[route.target as usize];
        let slot = self.slots[slot_index as usize]
            .as_mut()
            .expect("routed slots exist");
        if !matches!(slot.conn, Conn::Up(_))
            || slot.open.as_ref().is_some_and(|o| !o.is_run())
            || slot.queue.datagrams() >= self.queue_cap
        {
            return false;
        }
        let routed = if slot.gso {
            self.add_to_run(slot_index, route.format, name, msg)
        } else {
            // An open run (GSO just turned off) goes first, in order.
            self.seal_at(slot_index);
            self.encode(route.format, name, msg, 1)
                .map(|(buf, len)| self.enqueue_at(slot_index, Queued::single(buf, len)))
        };
        let slot = self.slots[slot_index as usize]
            .as_mut()
            .expect("routed slots exist");
        slot.counters.raised += 1;
        if let Err(e) = routed {
            slot.counters.failed_oversize += 1;
            log_limited(&mut slot.last_log, &slot.target, &e);
        }
        true
    }

    /// Encodes an event for a UDP target with GSO straight into the target's open run if it
    /// continues it (same format, and the same size or shorter, which ends the run); otherwise
    /// the open run is queued and, if this batch holds more events, the event starts a new
    /// one, or else goes alone. So a batch of equal-size events for one target leaves as a few
    /// GSO messages, with no buffer, queue entry or round item per event.
    fn add_to_run(
        &mut self,
        slot_index: u32,
        format: Format,
        name: &crate::EventName,
        msg: &Raised,
    ) -> Result<(), EncodeError> {
        let slot = self.slots[slot_index as usize]
            .as_mut()
            .expect("routed slots exist");
        if let Some(open) = slot.open.as_mut().filter(|o| o.format == format) {
            if let OpenKind::Run {
                segment,
                max_events,
            } = open.kind
            {
                let at = open.len as usize;
                // In the buffer: `max_events` were fitted to it.
                let room = &mut self.pool.bytes_mut(&open.buf)[at..at + segment as usize];
                if let Ok(n) = format.encode(name.as_str(), &msg.params, room) {
                    open.len += n as u32;
                    open.events += 1;
                    if n < segment as usize || open.events == max_events {
                        self.seal_at(slot_index);
                    }
                    return Ok(());
                }
            }
        }
        self.seal_at(slot_index);
        // A run's buffer has room for a full run, whatever the batch holds: its size then
        // depends on the event's size only, so a steady load reuses the same buffers.
        let copies = if self.batch_left > 0 {
            GSO_MAX_SEGMENTS
        } else {
            1
        };
        let (buf, len) = self.encode(format, name, msg, copies)?;
        let capacity = self.pool.get(buf.index()).len();
        let size = len as usize;
        let max_events = (capacity / size)
            .min(GSO_MAX_BYTES / size)
            .min(GSO_MAX_SEGMENTS);
        if max_events < 2 {
            self.enqueue_at(slot_index, Queued::single(buf, len));
        } else {
            let slot = self.slots[slot_index as usize]
                .as_mut()
                .expect("routed slots exist");
            slot.open = Some(Open {
                buf,
                len,
                events: 1,
                format,
                kind: OpenKind::Run {
                    segment: len,
                    max_events: max_events as u32,
                },
            });
            note_open(&mut self.open_slots, slot_index);
        }
        Ok(())
    }

    /// The common case under load of a coalesced subscription: its only subscriber has an
    /// open datagram of its format with room. The event is encoded straight into that datagram
    /// (no buffer of its own, no copy). Returns false, having changed nothing that counts, when
    /// that is not the case or the event does not fit: [`route`](Self::route) then does it all.
    fn append_to_open(
        &mut self,
        route: &crate::registry::Route,
        name: &crate::EventName,
        msg: &Raised,
        now: Duration,
    ) -> bool {
        let Some(coalesce) = route.coalesce.filter(|_| route.is_live(now)) else {
            return false;
        };
        let slot_index = self.route_slots[route.target as usize];
        let Some(slot) = self.slots[slot_index as usize].as_mut() else {
            return false;
        };
        if !matches!(slot.conn, Conn::Up(_)) || slot.queue.datagrams() >= self.queue_cap {
            return false;
        }
        let Some(open) = slot.open.as_mut().filter(|o| o.format == route.format) else {
            return false;
        };
        let OpenKind::Coalesced { max_bytes, .. } = open.kind else {
            return false;
        };
        let room = &mut self.pool.bytes_mut(&open.buf)[open.len as usize..max_bytes as usize];
        match route.format.encode(name.as_str(), &msg.params, room) {
            Ok(n) if n <= coalesce.max_bytes() => {
                open.len += n as u32;
                open.events += 1;
                slot.counters.raised += 1;
                true
            }
            _ => false,
        }
    }

    /// Queues a datagram for a slot, or drops it (counted) when the slot's queue is full.
    fn enqueue(
        slot: &mut Slot,
        index: u32,
        q: Queued,
        pool: &mut Pool,
        active: &mut Vec<u32>,
        cap: usize,
    ) {
        if slot.queue.datagrams() >= cap {
            slot.counters.dropped_retry_overflow += u64::from(q.events);
            pool.release(q.buf);
            return;
        }
        slot.queue.push_back(q);
        if !slot.active && !slot.blocked && matches!(slot.conn, Conn::Up(_)) {
            slot.active = true;
            active.push(index);
        }
    }

    /// Queues a slot's open coalesced datagram or GSO run.
    fn seal(slot: &mut Slot, index: u32, pool: &mut Pool, active: &mut Vec<u32>, cap: usize) {
        if let Some(o) = slot.open.take() {
            Self::enqueue(slot, index, o.into(), pool, active, cap);
        }
    }

    /// [`enqueue`](Self::enqueue) for the slot at `index`.
    fn enqueue_at(&mut self, index: u32, q: Queued) {
        let slot = self.slots[index as usize]
            .as_mut()
            .expect("routed slots exist");
        Self::enqueue(
            slot,
            index,
            q,
            &mut self.pool,
            &mut self.active,
            self.queue_cap,
        );
    }

    /// [`seal`](Self::seal) for the slot at `index`.
    fn seal_at(&mut self, index: u32) {
        let slot = self.slots[index as usize]
            .as_mut()
            .expect("routed slots exist");
        Self::seal(
            slot,
            index,
            &mut self.pool,
            &mut self.active,
            self.queue_cap,
        );
    }

    /// Queues the coalesced datagrams whose time is up, and the GSO runs (all of them when
    /// shutting down).
    fn seal_due(&mut self, now: Instant) {
        let all = self.shutdown_deadline.is_some();
        let mut open_slots = std::mem::take(&mut self.open_slots);
        open_slots.retain(|&i| {
            let Some(slot) = self.slots[i as usize].as_mut() else {
                return false;
            };
            match &slot.open {
                Some(o) if all || o.deadline().is_none_or(|d| now >= d) => {
                    Self::seal(slot, i, &mut self.pool, &mut self.active, self.queue_cap);
                    false
                }
                Some(_) => true,
                None => false,
            }
        });
        self.open_slots = open_slots;
    }

    /// The earliest deadline of an open coalesced datagram.
    fn next_seal(&self) -> Option<Instant> {
        self.open_slots
            .iter()
            .filter_map(|&i| self.slots[i as usize].as_ref()?.open.as_ref()?.deadline())
            .min()
    }

    /// Encodes into a pooled buffer of the size the params suggest, with room for `copies`
    /// of that (a GSO run); exactly as needed when that was too small (values with many
    /// escapes).
    fn encode(
        &mut self,
        format: Format,
        name: &crate::EventName,
        msg: &Raised,
        copies: usize,
    ) -> Result<(BufRef, u32), EncodeError> {
        /// Framing beyond the event name and the packed params (`jsonrpc`'s is the larger).
        const FRAMING: usize = 64;
        let estimate = name.as_str().len() + msg.params.packed_len() + FRAMING;
        let buf = self
            .pool
            .alloc((estimate * copies).min(GSO_MAX_BYTES).max(estimate));
        match format.encode(name.as_str(), &msg.params, self.pool.bytes_mut(&buf)) {
            Ok(n) => Ok((buf, n as u32)),
            Err(EncodeError::TooLarge { len, .. }) if len <= MAX_DATAGRAM => {
                self.pool.release(buf);
                let buf = self.pool.alloc(len);
                let n = format.encode(name.as_str(), &msg.params, self.pool.bytes_mut(&buf))?;
                Ok((buf, n as u32))
            }
            Err(e) => {
                self.pool.release(buf);
                Err(e)
            }
        }
    }

    /// Sends the head of every active queue, then books the outcomes.
    fn send_round(&mut self) {
        self.round.clear();
        let mut active = std::mem::take(&mut self.active);
        let mut budget = self.round_budget;
        let mut served = 0;
        for &slot_index in &active {
            if budget == 0 {
                break;
            }
            served += 1;
            let slot = self.slots[slot_index as usize]
                .as_ref()
                .expect("active slots exist");
            let Conn::Up(sock) = &slot.conn else { continue };
            let count = slot.queue.len().min(slot.window as usize).min(budget);
            if count == 0 {
                continue;
            }
            budget -= count;
            self.round.targets.push(RoundTarget {
                slot: slot_index,
                fd: sock.as_raw_fd(),
                first: self.round.items.len() as u32,
                count: count as u32,
                gso: slot.gso,
                linked: slot.linked,
            });
            for q in slot.queue.iter().take(count) {
                self.round.items.push(Item {
                    buf: q.buf.index(),
                    len: q.len,
                    segment: q.segment,
                });
            }
        }
        self.round
            .outcomes
            .resize(self.round.items.len(), NOT_ATTEMPTED);
        self.backend.send_round(&self.pool, &mut self.round);
        for t in 0..self.round.targets.len() {
            let rt = self.round.targets[t];
            self.book(rt);
        }
        // Keep in the active list only slots that still have something to send now, those left
        // out of this round (out of budget) first, so that every target gets its turn.
        active.rotate_left(served);
        active.retain(|&i| {
            let slot = self.slots[i as usize].as_mut().expect("active slots exist");
            let keep = !slot.queue.is_empty() && !slot.blocked && matches!(slot.conn, Conn::Up(_));
            slot.active = keep;
            keep
        });
        self.active = active;
    }

    /// Applies one target's outcomes, in order.
    fn book(&mut self, rt: RoundTarget) {
        let slot = self.slots[rt.slot as usize]
            .as_mut()
            .expect("round slots exist");
        if self.round.outcomes[(rt.first + rt.count - 1) as usize] >= 0 {
            // Everything went out: the receiver is not full.
            slot.full.took_all();
            if rt.count == slot.window {
                // The whole window: open it up again.
                slot.window = (slot.window * 2).min(self.max_per_target as u32);
            }
        }
        let first = rt.first as usize;
        for k in 0..rt.count as usize {
            let outcome = self.round.outcomes[first + k];
            if outcome == NOT_ATTEMPTED {
                break;
            }
            let front_len = slot.queue.front().expect("round items are queued").len;
            if outcome >= 0 && outcome as u32 == front_len {
                let q = slot.queue.pop_front().expect("checked above");
                slot.counters.sent += u64::from(q.events);
                slot.counters.datagrams += q.datagrams();
                slot.counters.bytes += u64::from(q.len);
                self.pool.release(q.buf);
                continue;
            }
            if outcome == GSO_REFUSED {
                // This socket's path does not take GSO (e.g. segments over its MTU): go on
                // without it; the datagrams stay queued, in order, for the next round.
                slot.gso = false;
                slot.counters.gso_refused += 1;
                let rest = &self.round.outcomes[first + k + 1..first + rt.count as usize];
                Self::settle_rest(slot, &mut self.pool, rest);
                Self::split_runs(slot, &mut self.pool);
                break;
            }
            let failure = if outcome >= 0 {
                SendFailure::Other
            } else {
                SendFailure::of(-outcome)
            };
            if failure == SendFailure::WouldBlock {
                // What fit before the receiver filled up is about what fits next time: do not
                // submit sends that are sure to be refused.
                slot.window = (k as u32 + 1).max(MIN_WINDOW);
                slot.linked = true;
                // While retrying, the slot stays active: the next round tries again.
                if !slot.full.refused(k > 0, Instant::now()) {
                    slot.blocked = true;
                    self.blocked += 1;
                    if let Conn::Up(sock) = &slot.conn {
                        self.backend.watch_writable(rt.slot, sock.as_raw_fd());
                    }
                }
                let rest = &self.round.outcomes[first + k + 1..first + rt.count as usize];
                Self::settle_rest(slot, &mut self.pool, rest);
                break;
            }
            let q = slot.queue.pop_front().expect("checked above");
            self.pool.release(q.buf);
            let events = u64::from(q.events);
            match failure {
                SendFailure::Unreachable => slot.counters.failed_unreachable += events,
                SendFailure::Oversize => slot.counters.failed_oversize += events,
                _ => slot.counters.failed_other += events,
            }
            let err = if outcome >= 0 {
                io::Error::other(format!("short send: {outcome} of {front_len} bytes"))
            } else {
                io::Error::from_raw_os_error(-outcome)
            };
            log_limited(&mut slot.last_log, &slot.target, &err);
            let unix = matches!(&slot.conn, Conn::Up(s) if s.is_unix());
            if failure == SendFailure::Unreachable && unix {
                // The receiver is gone: a connected UNIX socket stays refused until reconnected.
                Self::take_down(
                    &mut self.backend,
                    &mut self.pool,
                    rt.slot,
                    slot,
                    RECONNECT_MIN,
                );
                self.next_retry = self.next_reconnect();
                break;
            }
        }
    }

    /// After a round stopped at the front datagram (kept for a retry), books what the round
    /// still did with the datagrams behind it (`rest`, their outcomes in queue order). In a
    /// chain, nothing: they were cancelled. Unlinked, some may have gone out or failed anyway:
    /// they leave the queue, counted, so that nothing is sent twice.
    fn settle_rest(slot: &mut Slot, pool: &mut Pool, rest: &[i32]) {
        if rest.iter().all(|&o| o == NOT_ATTEMPTED) {
            return;
        }
        let Slot {
            queue, counters, ..
        } = slot;
        let mut pos = 0usize;
        queue.retain(|q| {
            pos += 1;
            // Position 1 is the front, kept; then the rest of the round; then later datagrams.
            let Some(&outcome) = pos.checked_sub(2).and_then(|i| rest.get(i)) else {
                return true;
            };
            let failure = (outcome < 0).then(|| SendFailure::of(-outcome));
            if outcome == NOT_ATTEMPTED
                || outcome == GSO_REFUSED
                || failure == Some(SendFailure::WouldBlock)
            {
                return true;
            }
            let events = u64::from(q.events);
            match failure {
                None if outcome as u32 == q.len => {
                    counters.sent += events;
                    counters.datagrams += q.datagrams();
                    counters.bytes += u64::from(q.len);
                }
                Some(SendFailure::Unreachable) => counters.failed_unreachable += events,
                Some(SendFailure::Oversize) => counters.failed_oversize += events,
                _ => counters.failed_other += events,
            }
            pool.release_in_place(&q.buf);
            false
        });
    }

    /// Replaces each GSO run queued for a slot by its datagrams, one by one, in order (the
    /// slot's socket refused GSO). Rare enough to copy and allocate.
    fn split_runs(slot: &mut Slot, pool: &mut Pool) {
        if slot.queue.iter().all(|q| q.segment == 0) {
            return;
        }
        for q in std::mem::take(&mut slot.queue).drain() {
            if q.segment == 0 {
                slot.queue.push_back(q);
                continue;
            }
            let mut at = 0;
            while at < q.len {
                let len = q.segment.min(q.len - at);
                let buf = pool.alloc(len as usize);
                pool.copy(&buf, 0, &q.buf, at as usize, len as usize);
                slot.queue.push_back(Queued::single(buf, len));
                at += len;
            }
            pool.release(q.buf);
        }
    }

    /// Closes a slot's socket, fails what it has queued, and schedules a reconnect.
    fn take_down(backend: &mut B, pool: &mut Pool, index: u32, slot: &mut Slot, backoff: Duration) {
        if matches!(slot.conn, Conn::Up(_)) {
            backend.remove_socket(index);
        }
        slot.counters.failed_unreachable += slot.empty(pool);
        slot.conn = Conn::Down {
            retry_at: Instant::now() + backoff,
            backoff,
        };
    }

    /// Tries again to connect targets whose receiver was missing.
    fn reconnect_due(&mut self) {
        // Nothing is down in the common case: no clock read then.
        let Some(due) = self.next_retry else { return };
        let now = Instant::now();
        if now < due {
            return;
        }
        for (i, slot) in self.slots.iter_mut().enumerate() {
            let Some(slot) = slot else { continue };
            let Conn::Down { retry_at, backoff } = slot.conn else {
                continue;
            };
            if now < retry_at {
                continue;
            }
            match Socket::connect(&slot.target) {
                Ok(sock) => {
                    self.backend.add_socket(i as u32, sock.as_raw_fd());
                    slot.conn = Conn::Up(sock);
                    slot.blocked = false;
                }
                Err(_) => {
                    let backoff = (backoff * 2).min(RECONNECT_MAX);
                    slot.conn = Conn::Down {
                        retry_at: now + backoff,
                        backoff,
                    };
                }
            }
        }
        self.next_retry = self.next_reconnect();
    }

    fn next_reconnect(&self) -> Option<Instant> {
        self.slots
            .iter()
            .flatten()
            .filter_map(|s| match s.conn {
                Conn::Down { retry_at, .. } => Some(retry_at),
                Conn::Up(_) => None,
            })
            .min()
    }

    /// Marks slots whose sockets became writable as active again.
    fn poll_ready(&mut self, timeout: Option<Duration>) {
        if let Err(e) = self
            .backend
            .wait(&self.shared.wake, timeout, &mut self.ready)
        {
            eprintln!("event-datagram: reactor wait failed: {e}");
            std::thread::sleep(Duration::from_millis(1));
        }
        for i in self.ready.drain(..) {
            let Some(slot) = self.slots.get_mut(i as usize).and_then(Option::as_mut) else {
                continue;
            };
            if slot.blocked {
                slot.blocked = false;
                slot.full.writable(Instant::now());
                self.blocked -= 1;
                if !slot.queue.is_empty() && !slot.active {
                    slot.active = true;
                    self.active.push(i);
                }
            }
        }
    }

    /// Sleeps until a producer wakes us, a blocked socket drains, or a timer is due. With
    /// intake paused, waiting events do not keep us awake: only writability does.
    fn sleep(&mut self, intake: bool) {
        // See `Shared::sleeping`: a raise either shows in the queue below, or sees us asleep
        // and writes the eventfd.
        self.shared.sleep();
        if (intake && !self.rx().is_empty()) || !self.control.is_empty() {
            self.shared.awake();
            return;
        }
        let deadline = [self.next_retry, self.shutdown_deadline, self.next_seal()]
            .into_iter()
            .flatten()
            .min();
        let timeout = deadline.map(|d| d.saturating_duration_since(Instant::now()));
        // While shutting down, producers may be mid-raise without waking us: look often.
        let timeout = match (timeout, self.shutdown_deadline) {
            (t, Some(_)) => Some(t.unwrap_or(Duration::MAX).min(Duration::from_millis(1))),
            (t, None) => t,
        };
        self.poll_ready(timeout);
        self.shared.awake();
    }

    /// Starts using a new snapshot: opens sockets for new targets, retires unused ones.
    fn apply_snapshot(&mut self, snapshot: Arc<Snapshot>) {
        for slot in self.slots.iter_mut().flatten() {
            slot.referenced = false;
        }
        self.route_slots.clear();
        for target in &snapshot.targets {
            let index = match self.by_target.get(target) {
                Some(&i) => i,
                None => self.open_slot(target.clone()),
            };
            self.slots[index as usize]
                .as_mut()
                .expect("mapped slots exist")
                .referenced = true;
            self.route_slots.push(index);
        }
        self.snapshot = snapshot;
        self.retire_unreferenced();
    }

    fn open_slot(&mut self, target: Target) -> u32 {
        let udp = matches!(target, Target::Udp(_));
        let index = self.free_slots.pop().unwrap_or_else(|| {
            self.slots.push(None);
            self.slots.len() as u32 - 1
        });
        let conn = match Socket::connect(&target) {
            Ok(sock) => {
                self.backend.add_socket(index, sock.as_raw_fd());
                Conn::Up(sock)
            }
            Err(_) => Conn::Down {
                retry_at: Instant::now() + RECONNECT_MIN,
                backoff: RECONNECT_MIN,
            },
        };
        self.by_target.insert(target.clone(), index);
        self.slots[index as usize] = Some(Slot {
            target,
            conn,
            queue: Outbox::with_capacity(self.queue_cap),
            blocked: false,
            active: false,
            referenced: true,
            gso: self.gso && udp,
            linked: !udp,
            open: None,
            window: self.max_per_target as u32,
            counters: TargetCounters::default(),
            last_log: None,
            full: FullReceiver::default(),
        });
        self.next_retry = self.next_reconnect();
        index
    }

    /// Closes slots that no subscription uses and that have nothing left to send.
    fn retire_unreferenced(&mut self) {
        for i in 0..self.slots.len() {
            let retire = matches!(&self.slots[i], Some(s) if !s.referenced && s.queue.is_empty() && s.open.is_none());
            if !retire {
                continue;
            }
            let slot = self.slots[i].take().expect("checked above");
            if matches!(slot.conn, Conn::Up(_)) {
                self.backend.remove_socket(i as u32);
            }
            if slot.blocked {
                self.blocked -= 1;
            }
            self.active.retain(|&a| a as usize != i);
            self.by_target.remove(&slot.target);
            self.retired.add(&slot.counters);
            self.free_slots.push(i as u32);
        }
    }

    fn stats(&self) -> Stats {
        let mut totals = self.retired;
        let targets: Vec<TargetStats> = self
            .slots
            .iter()
            .flatten()
            .map(|s| {
                let mut counters = s.counters;
                let open = s.open.as_ref().map_or(0, |o| o.events);
                counters.pending =
                    s.queue.iter().map(|q| u64::from(q.events)).sum::<u64>() + u64::from(open);
                totals.add(&counters);
                TargetStats {
                    target: s.target.clone(),
                    counters,
                }
            })
            .collect();
        let mut events = self.events;
        events.pending = self.rx().len() as u64;
        events.dropped_queue_full = self.shared.dropped_queue_full.load(Ordering::Relaxed);
        events.raised = events.dispatched + events.dropped_queue_full + events.pending;
        Stats {
            backend: self.backend.kind(),
            events,
            totals,
            targets,
        }
    }

    /// Counts what is still queued after the shutdown deadline as dropped, and reports.
    fn finish(mut self) -> Stats {
        for i in 0..self.slots.len() {
            let Some(slot) = self.slots[i].as_mut() else {
                continue;
            };
            slot.counters.dropped_shutdown += slot.empty(&mut self.pool);
            if matches!(slot.conn, Conn::Up(_)) {
                self.backend.remove_socket(i as u32);
            }
        }
        self.stats()
    }
}

/// Lists a slot as having an open datagram or run (once).
fn note_open(open_slots: &mut Vec<u32>, slot_index: u32) {
    if !open_slots.contains(&slot_index) {
        open_slots.push(slot_index);
    }
}

/// Logs a target's error at most once per [`LOG_INTERVAL`]; every error is counted anyway.
fn log_limited(last: &mut Option<Instant>, target: &Target, err: &dyn std::fmt::Display) {
    let now = Instant::now();
    if last.is_none_or(|t| now.duration_since(t) >= LOG_INTERVAL) {
        *last = Some(now);
        eprintln!("event-datagram: {target}: {err} (counted; next report for this target in 60 s at the earliest)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn slot_with(pool: &mut Pool, lens: &[u32]) -> Slot {
        let mut slot = Slot {
            target: "udp:127.0.0.1:9".parse().unwrap(),
            conn: Conn::Down {
                retry_at: Instant::now(),
                backoff: RECONNECT_MIN,
            },
            queue: Outbox::default(),
            blocked: false,
            active: false,
            referenced: true,
            gso: false,
            open: None,
            linked: false,
            window: MIN_WINDOW,
            counters: TargetCounters::default(),
            last_log: None,
            full: FullReceiver::default(),
        };
        for &len in lens {
            let buf = pool.alloc(len as usize);
            slot.queue.push_back(Queued::single(buf, len));
        }
        slot
    }

    fn lens(slot: &Slot) -> Vec<u32> {
        slot.queue.iter().map(|q| q.len).collect()
    }

    type R = Reactor<syscall::SyscallBackend>;

    #[test]
    fn after_an_unlinked_stop_what_went_out_anyway_leaves_the_queue_counted_once() {
        let mut pool = Pool::new(1 << 20, 0);
        let mut slot = slot_with(&mut pool, &[10, 11, 12, 13, 14, 15]);
        // The round held 10..=14; 10 met EAGAIN (the front, kept); behind it 11 went out,
        // 12 met EAGAIN, 13 was refused, 14 went out. 15 was not in the round.
        let rest = [11, -libc::EAGAIN, -libc::ECONNREFUSED, 14];
        R::settle_rest(&mut slot, &mut pool, &rest);
        assert_eq!(
            lens(&slot),
            [10, 12, 15],
            "kept for a retry, in order; nothing sent twice"
        );
        let c = slot.counters;
        assert_eq!(
            (c.sent, c.datagrams, c.bytes, c.failed_unreachable),
            (2, 2, 25, 1)
        );
    }

    fn items(spec: &[(u32, u32)]) -> Vec<Item> {
        spec.iter()
            .map(|&(len, segment)| Item {
                buf: 0,
                len,
                segment,
            })
            .collect()
    }

    #[test]
    fn a_message_is_a_run_alone_or_equal_size_datagrams_with_gso() {
        let m = |items: &[Item], gso| {
            let m = next_message(items, gso);
            (m.items, m.segment)
        };
        // Equal sizes, the last may be shorter, then it ends; a longer one starts anew.
        let round = items(&[(10, 0), (10, 0), (9, 0), (9, 0)]);
        assert_eq!(m(&round, true), (3, 10));
        assert_eq!(m(&round[2..], true), (2, 9));
        assert_eq!(m(&items(&[(9, 0), (10, 0)]), true), (1, 0));
        assert_eq!(m(&round, false), (1, 0), "without GSO, one datagram each");
        // A run is its own message, GSO on or off (it was made while it was on); datagrams
        // before it do not join it.
        let round = items(&[(100, 50), (50, 0)]);
        assert_eq!(m(&round, true), (1, 50));
        assert_eq!(m(&round, false), (1, 50));
        assert_eq!(m(&items(&[(50, 0), (100, 50)]), true), (1, 0));
        // At most 64 segments, and what fits in one UDP payload.
        assert_eq!(m(&items(&[(10, 0); 100]), true), (64, 10));
        assert_eq!(m(&items(&[(30_000, 0); 3]), true), (2, 30_000));
        assert_eq!(m(&[], true), (0, 0));
    }

    proptest::proptest! {
        #[test]
        fn messages_send_every_item_once_in_order_as_the_kernel_takes_them(
            spec in proptest::collection::vec(
                (proptest::sample::select(vec![10u32, 11, 12, 20, 30_000]), 0u32..4),
                0..200,
            ),
            gso: bool,
        ) {
            // One in four items is a run of datagrams of half its length.
            let round = items(
                &spec
                    .iter()
                    .map(|&(len, kind)| (len, if kind == 0 { len / 2 } else { 0 }))
                    .collect::<Vec<_>>(),
            );
            let mut k = 0;
            while k < round.len() {
                let m = next_message(&round[k..], gso);
                let sent = &round[k..k + m.items];
                proptest::prop_assert!(m.items >= 1);
                if sent[0].segment != 0 {
                    proptest::prop_assert_eq!((m.items, u32::from(m.segment)), (1, sent[0].segment));
                } else if m.items > 1 {
                    // A GSO message of datagrams: one size, the last may be shorter.
                    proptest::prop_assert!(gso);
                    proptest::prop_assert!(m.items <= GSO_MAX_SEGMENTS);
                    let size = u32::from(m.segment);
                    let (last, rest) = sent.split_last().unwrap();
                    proptest::prop_assert!(rest.iter().all(|i| i.segment == 0 && i.len == size));
                    proptest::prop_assert!(last.segment == 0 && last.len <= size);
                    let bytes: u32 = sent.iter().map(|i| i.len).sum();
                    proptest::prop_assert!(bytes as usize <= GSO_MAX_BYTES);
                } else {
                    proptest::prop_assert_eq!(m.segment, 0);
                }
                k += m.items;
            }
            proptest::prop_assert_eq!(k, round.len());
        }
    }

    #[test]
    fn refused_runs_are_split_into_their_datagrams_in_order() {
        let mut pool = Pool::new(1 << 20, 0);
        let mut slot = slot_with(&mut pool, &[3]);
        let run = pool.alloc(64);
        pool.bytes_mut(&run)[..8].copy_from_slice(b"aaabbbcc");
        slot.queue.push_back(Queued {
            buf: run,
            len: 8,
            events: 3,
            segment: 3,
        });
        let tail = pool.alloc(4);
        slot.queue.push_back(Queued::single(tail, 4));
        R::split_runs(&mut slot, &mut pool);
        let got: Vec<(u32, u32, Vec<u8>)> = slot
            .queue
            .iter()
            .map(|q| {
                (
                    q.len,
                    q.segment,
                    pool.get(q.buf.index())[..q.len as usize].to_vec(),
                )
            })
            .collect();
        assert_eq!(got.len(), 5);
        assert_eq!(
            got[1..4],
            [
                (3, 0, b"aaa".to_vec()),
                (3, 0, b"bbb".to_vec()),
                (2, 0, b"cc".to_vec())
            ]
        );
        assert_eq!((got[0].0, got[4].0), (3, 4), "the others stay, in place");
        let events: u32 = slot.queue.iter().map(|q| q.events).sum();
        assert_eq!(events, 5, "as many events as before");
    }

    #[test]
    fn after_a_stop_in_a_chain_the_cancelled_rest_stays_queued() {
        let mut pool = Pool::new(1 << 20, 0);
        let mut slot = slot_with(&mut pool, &[10, 11, 12]);
        R::settle_rest(&mut slot, &mut pool, &[NOT_ATTEMPTED, NOT_ATTEMPTED]);
        assert_eq!(lens(&slot), [10, 11, 12]);
        assert_eq!(slot.counters, TargetCounters::default());
    }
}
