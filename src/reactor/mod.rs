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

mod mmsg;
mod outbox;
pub(crate) mod pool;
mod retry;
mod round;
mod route;
mod send;
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
use crate::publisher::{Raised, Shared};
use crate::queue;
use crate::registry::{Coalesce, Snapshot};
use crate::stats::{Backend, EventCounters, Stats, TargetCounters, TargetStats};
use crate::sys::EventFd;
use crate::target::Target;
use outbox::{Bound, Outbox};
use pool::{BufRef, Pool};
use retry::FullReceiver;
use round::Round;
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
    /// `round.outcomes`. A target's sends stop at a full socket, a GSO refusal and any
    /// failure of a UNIX target (the rest are [`NOT_ATTEMPTED`](round::NOT_ATTEMPTED)); a UDP
    /// target's go on past a failure of one datagram alone ([`round::goes_on_after`]). The
    /// `syscall` backend stops every target so, the `uring` one only linked targets (see
    /// `Slot::linked`). Must not return while the kernel may still read a datagram's buffer:
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

enum Conn {
    Up(Socket),
    Down {
        retry_at: Instant,
        backoff: Duration,
    },
}

/// A nap the reactor woke from.
#[derive(Clone, Copy, Debug)]
struct Nap {
    /// When it began.
    since: Instant,
    /// Events numbered below were raised by the time it ended.
    raised_by: u64,
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

    /// Counts it as sent: its events, datagrams and bytes.
    fn count_sent(&self, counters: &mut TargetCounters) {
        counters.sent += u64::from(self.events);
        counters.datagrams += self.datagrams();
        counters.bytes += u64::from(self.len);
    }

    /// Counts its events as failed for `failure`.
    fn count_failed(&self, counters: &mut TargetCounters, failure: SendFailure) {
        let events = u64::from(self.events);
        match failure {
            SendFailure::Unreachable => counters.failed_unreachable += events,
            SendFailure::Oversize => counters.failed_oversize += events,
            _ => counters.failed_other += events,
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

    /// How long this coalesced datagram may grow for an event of a subscription coalesced
    /// with `c`: the smaller of its limit and `c`'s (0 for a GSO run, which takes none).
    fn room_for(&self, c: Coalesce) -> u32 {
        match self.kind {
            OpenKind::Coalesced { max_bytes, .. } => max_bytes.min(c.max_bytes() as u32),
            OpenKind::Run { .. } => 0,
        }
    }

    /// Takes on the limits of the subscription of an event just added (at `now`), where they
    /// are tighter. One datagram carries the events of every subscription its target has:
    /// each event must leave within its own subscription's delay, and no datagram may grow
    /// past the smallest size one of its events' subscriptions allows.
    fn abide_by(&mut self, c: Coalesce, now: Instant) {
        if let OpenKind::Coalesced {
            max_bytes,
            deadline,
        } = &mut self.kind
        {
            *max_bytes = (*max_bytes).min(c.max_bytes() as u32);
            *deadline = (*deadline).min(now + c.max_delay());
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
    /// Unreferenced: when it closes at the latest, dropping (counted) what it still holds then,
    /// so that a receiver that stalled keeps no memory and socket for ever once its
    /// subscriptions end.
    retire_by: Option<Instant>,
    /// Send runs of equal-size datagrams with UDP GSO.
    gso: bool,
    /// Send each round as one chain that stops at the first failure, so a retried datagram is
    /// never overtaken. Always for UNIX targets, whose receivers fill up (EAGAIN) all the time
    /// (both backends send them with one `sendmmsg`, which stops at the first failure itself);
    /// UDP targets start without (chaining costs a quarter of the io_uring send rate here, and
    /// a connected UDP socket on loopback never answers EAGAIN) and switch for good at their
    /// first EAGAIN: at most that one round can then arrive out of order.
    linked: bool,
    /// The coalesced datagram being filled, if any.
    open: Option<Open>,
    /// The most datagrams to send in one round: shrinks to what fit when the receiver was
    /// full (each refused datagram costs the kernel a refusal, and in an io_uring chain a
    /// cancelled entry), doubles back.
    window: u32,
    counters: TargetCounters,
    last_log: Option<Instant>,
    /// When a refused send last made this UNIX target connect again at once (see
    /// `Reactor::reconnect_at_once`).
    reconnected: Option<Instant>,
    /// Whether to retry or wait when the receiver is full (`EAGAIN`).
    full: FullReceiver,
}

impl Slot {
    /// Empties the queue and the open datagram or run, releasing their buffers; returns how
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

/// Bytes of datagrams one batch may encode: it ends at the event that reaches this, or at
/// `batch` events. A target paused by its bound thus takes at most this much more (and an
/// open datagram or run, and the event that crossed the line: the `2 * MAX_DATAGRAM` of
/// `queue_bound`), however large the events.
const BATCH_BYTES: usize = 1 << 20;
/// Events one batch takes at most while a receiver that keeps pace with us is full (see
/// [`batch_size`]).
const PACING_BATCH: usize = 32;
/// Events the next batch takes: `batch`, or [`PACING_BATCH`] while a receiver that keeps pace
/// with us limits what it takes per round (`windows`: the sending targets', narrower than
/// `max_window` since their receiver was full). Such a receiver takes what we send within
/// microseconds and idles while we encode: a UNIX receiver's queue holds
/// `net.unix.max_dgram_qlen` datagrams, 10 by default, about 12 us of its work here, and
/// encoding a whole batch of 256 events took longer. (The compare bench's UNIX x1 case: the
/// receiver slept about 3 000 times a second with whole batches, 1 000-2 000 with these.)
fn batch_size(batch: usize, max_window: usize, mut windows: impl Iterator<Item = u32>) -> usize {
    if windows.any(|w| (w as usize) < max_window) {
        PACING_BATCH.min(batch)
    } else {
        batch
    }
}

/// Entries a target's queue allocates when it is made, at most.
const MAX_PREALLOCATED: usize = 8192;
/// The smallest per-round window of a target (see `Slot::window`).
const MIN_WINDOW: u32 = 8;
const RECONNECT_MIN: Duration = Duration::from_millis(10);
const RECONNECT_MAX: Duration = Duration::from_secs(1);
const LOG_INTERVAL: Duration = Duration::from_secs(60);
/// How long encode buffers beyond `buffer_pool_bytes` may sit unused before they are freed.
const TRIM_INTERVAL: Duration = Duration::from_secs(1);

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
    /// The earliest of the snapshot's `targets_expire`: when a target's subscriptions have all
    /// ended, if one's will.
    first_expiry: Option<Duration>,
    /// [`first_expiry`](Self::first_expiry) as an instant of ours, read off the registry's
    /// clock once per snapshot, not at every turn (see [`next_expiry`](Self::next_expiry)).
    expiry_deadline: Option<Instant>,
    slots: Vec<Option<Slot>>,
    free_slots: Vec<u32>,
    by_target: HashMap<Target, u32>,
    connect_log: ConnectLog,
    /// Slot of each target of the current snapshot, by the snapshot's target index.
    route_slots: Vec<u32>,
    active: Vec<u32>,
    blocked: usize,
    round: Round,
    ready: Vec<u32>,
    /// A target's queue drops what would go beyond this (see [`BATCH_BYTES`]).
    queue_bound: Bound,
    /// Intake pauses while every live target's queue holds this much: the configured bounds
    /// (see `intake_open`).
    intake_bound: Bound,
    max_per_target: usize,
    /// Datagrams one round may carry (the ring's size for `uring`).
    round_budget: usize,
    /// UDP GSO is on in the configuration and the kernel supports it.
    gso: bool,
    /// Slots with an open coalesced datagram or GSO run.
    open_slots: Vec<u32>,
    /// Slots no subscription uses any more that still had something to send: closed once
    /// they have sent it.
    retiring: Vec<u32>,
    /// When the current batch was taken (coalescing deadlines count from it).
    batch_time: Instant,
    /// The reactor's last nap (see [`nap_events`](Self::nap_events)) while events raised
    /// during it are still in the channel: they count their deadlines from its start, in
    /// every batch that reads them.
    napped: Option<Nap>,
    /// Events of the current batch not yet routed, as far as the queue showed at its start or
    /// at its last look (whether a new GSO run may expect more).
    batch_left: usize,
    /// Bytes encoded for the current batch (see [`BATCH_BYTES`]).
    batch_bytes: usize,
    /// The earliest reconnect attempt due, if any target is down.
    next_retry: Option<Instant>,
    /// When the pool frees what it held unused beyond its size, while it holds more.
    next_trim: Option<Instant>,
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
            first_expiry: None,
            expiry_deadline: None,
            slots: Vec::new(),
            free_slots: Vec::new(),
            by_target: HashMap::new(),
            connect_log: ConnectLog::default(),
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
            queue_bound: Bound {
                datagrams: config.retry_queue.saturating_add(config.batch),
                bytes: config
                    .retry_queue_bytes
                    .saturating_add(BATCH_BYTES + 2 * MAX_DATAGRAM),
            },
            intake_bound: Bound {
                datagrams: config.retry_queue,
                bytes: config.retry_queue_bytes,
            },
            max_per_target: max_per_target.min(config.batch).max(1),
            next_retry: None,
            next_trim: None,
            open_slots: Vec::new(),
            retiring: Vec::new(),
            batch_time: Instant::now(),
            napped: None,
            batch_left: 0,
            batch_bytes: 0,
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
            if self.expiry_deadline.is_some_and(|d| Instant::now() >= d) {
                // Taken right below, as any change: targets no one subscribes to are let go.
                self.shared.registry.purge_expired();
                // By the registry's clock again: one of the caller's need not move with ours.
                self.expiry_deadline = self.next_expiry();
            }
            // A subscription change is taken here too, not only with the next event read: while
            // intake is paused none is, and a new target with room (or the end of a stalled
            // one's subscription) must open it again.
            if self.shared.registry.changed_since(self.snapshot.generation) {
                self.refresh_snapshot();
            }
            let intake = self.intake_open();
            let took = if intake { self.dispatch_batch() } else { 0 };
            self.reconnect_due();
            if !self.open_slots.is_empty() {
                self.seal_due(Instant::now());
            }
            if self.next_trim.is_some() || self.pool.over_keep() {
                self.trim_pool(Instant::now());
            }
            if self.blocked > 0 {
                self.poll_ready(Some(Duration::ZERO));
            }
            let sending = !self.active.is_empty();
            if sending {
                self.send_round();
            }
            if !self.retiring.is_empty() {
                self.retire_emptied();
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
        // First: a receiver that keeps taking a little keeps the backlog up, and shutdown
        // must not wait for it to take the whole channel.
        if self.shutdown_deadline.is_some_and(|d| Instant::now() >= d) {
            return true;
        }
        if self.backlog() > self.round_budget {
            return false;
        }
        // "Full": the next batch might not fit in the queue. The scan stops at the first
        // target with room, which in the common case is the first.
        let roomy = |&i: &u32| {
            let slot = self.slots[i as usize].as_ref().expect("routed slots exist");
            !matches!(slot.conn, Conn::Up(_)) || slot.queue.below(self.intake_bound)
        };
        if self.route_slots.is_empty() || self.route_slots.iter().any(roomy) {
            return true;
        }
        // Every target is full; one whose subscriptions have all expired takes nothing more.
        let now = self.shared.registry.clock().now();
        let expired = |e: &Option<Duration>| e.is_some_and(|at| now > at);
        self.snapshot.targets_expire.iter().any(expired)
    }

    /// When the first target whose subscriptions all end will have expired, if one will: a
    /// paused intake opens then (see [`intake_open`](Self::intake_open)), and the target is
    /// let go. `None` too for a lifetime longer than an `Instant` can count
    /// (`Expiry::from_secs(u64::MAX)`): as good as never.
    fn next_expiry(&self) -> Option<Instant> {
        let first = self.first_expiry?;
        let now = self.shared.registry.clock().now();
        // Just past it: expired means later than the expiry.
        let left = first
            .saturating_sub(now)
            .checked_add(Duration::from_millis(1))?;
        Instant::now().checked_add(left)
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

    /// Datagrams the next round would send: queued for targets that can send now, each up to
    /// its window (a slow receiver's narrowed window is all it takes a round, however much it
    /// has queued; counting it all would pause intake for everyone at its pace).
    fn backlog(&self) -> usize {
        self.active
            .iter()
            .filter_map(|&i| self.slots[i as usize].as_ref())
            .map(|s| s.queue.len().min(s.window as usize))
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
        self.batch_time = self.napped_since(rx).unwrap_or_else(Instant::now);
        let mut snapshot = Arc::clone(&self.snapshot);
        let registry = Arc::clone(&self.shared.registry);
        let windows = self.active.iter().map(|&i| {
            let slot = self.slots[i as usize].as_ref().expect("active slots exist");
            slot.window
        });
        let batch = batch_size(self.config.batch, self.max_per_target, windows);
        self.batch_left = rx.len().min(batch);
        self.batch_bytes = 0;
        // Expiry is judged with a time read after every event it judges was raised: the events
        // counted before the read. Those raised since (the batch reads on while they come) get
        // a new reading once they are reached, so an expired subscription gets none of them.
        let clock = registry.clock();
        let (mut now, mut raised_before_now) = (clock.now(), self.batch_left);
        let (mut took, mut heap_bytes) = (0, 0);
        while took < batch && self.batch_bytes < BATCH_BYTES {
            if took >= raised_before_now {
                let queued = rx.len();
                if queued == 0 {
                    // What comes next may be raised after any reading now: the next batch.
                    break;
                }
                raised_before_now = took + queued;
                now = clock.now();
                // Known queued now, as at the start: a GSO run may expect them.
                self.batch_left = queued.min(batch - took);
            }
            let routed = rx.recv_with(|msg| {
                heap_bytes += msg.params.heap_bytes();
                // Per event, not per batch: an event raised after a subscription change
                // returned must see it, and one raised while this batch is being routed is
                // read in it. One load of a line that only changes with the subscriptions.
                if registry.changed_since(snapshot.generation) && self.refresh_snapshot() {
                    snapshot = Arc::clone(&self.snapshot);
                }
                self.route(&snapshot, msg, now)
            });
            if routed.is_none() {
                break;
            }
            took += 1;
        }
        self.shared.room.release(heap_bytes);
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
                    if slot.blocked {
                        // Not reached today (a target goes down only while sending), but the
                        // count must follow the flag.
                        slot.blocked = false;
                        self.blocked -= 1;
                    }
                }
                Err(e) => {
                    self.connect_log.failed(&slot.target, &e);
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

    /// When the first slot waiting to retire must close, if one waits.
    fn next_retire(&self) -> Option<Instant> {
        self.retiring
            .iter()
            .filter_map(|&i| self.slots[i as usize].as_ref()?.retire_by)
            .min()
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
            warn!("reactor wait failed: {e}");
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
        // See `Shared::state`: a raise either shows in the queue below, or sees us asleep
        // and writes the eventfd (napping: if it is the event we wait for).
        let now = Instant::now();
        let nap = self.nap_events().filter(|_| intake);
        match nap {
            Some((events, _)) => self.shared.nap(self.rx().totals().0 + events - 1),
            None => self.shared.sleep(),
        }
        if (intake && !self.rx().is_empty())
            || !self.control.is_empty()
            || self.shared.registry.changed_since(self.snapshot.generation)
        {
            self.shared.awake();
            self.note_nap(nap.map(|_| now));
            return;
        }
        let deadline = [
            self.next_retry,
            self.shutdown_deadline,
            self.next_retire(),
            self.next_seal(),
            self.next_trim,
            // Paused, by the clock as it is now: an expiry opens intake again.
            if intake {
                self.expiry_deadline
            } else {
                self.next_expiry()
            },
            // An event raised as the nap begins must be taken within its delay.
            nap.map(|(_, delay)| now + delay),
        ]
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
        self.note_nap(nap.map(|_| now));
    }

    /// Notes the nap that began at `since` (if this sleep was one) as over: the events raised
    /// so far were raised during it, or before it. If events of an earlier nap are still
    /// unread, its start stays the time of all of them.
    fn note_nap(&mut self, since: Option<Instant>) {
        let Some(since) = since else { return };
        let (raised, taken) = self.rx().totals();
        let since = match self.napped {
            Some(earlier) if taken < earlier.raised_by => earlier.since,
            _ => since,
        };
        self.napped = Some(Nap {
            since,
            raised_by: raised,
        });
    }

    /// When the events `rx` holds next were raised at the earliest, if during the last nap;
    /// forgets the nap once they are all read.
    fn napped_since(&mut self, rx: &queue::Receiver<Raised>) -> Option<Instant> {
        let nap = self.napped?;
        if rx.totals().1 < nap.raised_by {
            Some(nap.since)
        } else {
            self.napped = None;
            None
        }
    }

    /// When the reactor may nap (sleep to its next deadline, which an open coalesced datagram
    /// gives it, instead of being woken by every event): how many more events the fullest
    /// open coalesced datagram takes, about, the one after that waking the reactor; and the
    /// longest the nap may last, the shortest delay of any subscription. Only while every
    /// subscription coalesces: an event of another one must go at once.
    fn nap_events(&self) -> Option<(u64, Duration)> {
        let delay = self.snapshot.coalesce_delay?;
        // Waking at the latest with half the channel full, for it never to fill meanwhile.
        let most = (self.rx().capacity() as u64 / 2).max(1);
        self.open_slots
            .iter()
            .filter_map(|&i| {
                let open = self.slots[i as usize].as_ref()?.open.as_ref()?;
                let OpenKind::Coalesced { max_bytes, .. } = open.kind else {
                    return None;
                };
                let per_event = (open.len / open.events.max(1)).max(1);
                Some(u64::from(max_bytes.saturating_sub(open.len) / per_event) + 1)
            })
            .min()
            .map(|n| (n.min(most), delay))
    }

    /// Trims the pool each [`TRIM_INTERVAL`] while it holds more than `buffer_pool_bytes`.
    fn trim_pool(&mut self, now: Instant) {
        match self.next_trim {
            Some(due) if now < due => {}
            // Due, or the pool has just gone over its size.
            _ => self.next_trim = self.pool.trim().then_some(now + TRIM_INTERVAL),
        }
    }

    /// Takes the registry's snapshot if it changed since ours; returns whether it did. The
    /// registry bumps its generation before a change returns, so after reading an event raised
    /// later (which the queue's stamps order after it), this sees the change.
    #[inline]
    fn refresh_snapshot(&mut self) -> bool {
        let registry = &self.shared.registry;
        match registry.snapshot_if_newer(self.snapshot.generation) {
            Some(snapshot) => {
                self.apply_snapshot(snapshot);
                true
            }
            None => false,
        }
    }

    /// Starts using a new snapshot: opens sockets for new targets, retires unused ones.
    fn apply_snapshot(&mut self, snapshot: Arc<Snapshot>) {
        self.first_expiry = snapshot.targets_expire.iter().flatten().min().copied();
        self.expiry_deadline = self.next_expiry();
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
            Err(e) => {
                self.connect_log.failed(&target, &e);
                Conn::Down {
                    retry_at: Instant::now() + RECONNECT_MIN,
                    backoff: RECONNECT_MIN,
                }
            }
        };
        self.by_target.insert(target.clone(), index);
        self.slots[index as usize] = Some(Slot {
            target,
            conn,
            // Room for the bound, up to a size that a configured bound of millions does not
            // make every target allocate up front; beyond it the queue grows once, and keeps it.
            queue: Outbox::with_capacity(self.queue_bound.datagrams.min(MAX_PREALLOCATED)),
            blocked: false,
            active: false,
            referenced: true,
            retire_by: None,
            gso: self.gso && udp,
            linked: !udp,
            open: None,
            window: self.max_per_target as u32,
            counters: TargetCounters::default(),
            last_log: None,
            reconnected: None,
            full: FullReceiver::default(),
        });
        self.next_retry = self.next_reconnect();
        index
    }

    /// Closes the slots that no subscription uses, now or once they have sent what they hold;
    /// at the latest after as long as a shutdown waits for slow receivers.
    fn retire_unreferenced(&mut self) {
        let by = Instant::now().checked_add(self.config.shutdown_timeout());
        for slot in self.slots.iter_mut().flatten() {
            if slot.referenced {
                slot.retire_by = None;
            } else if slot.retire_by.is_none() {
                slot.retire_by = by;
            }
        }
        self.retiring = (0..self.slots.len() as u32)
            .filter(|&i| {
                self.slots[i as usize]
                    .as_ref()
                    .is_some_and(|s| !s.referenced)
            })
            .collect();
        self.retire_emptied();
    }

    /// Closes the slots waiting to retire that have nothing left to send, or whose time to
    /// send it is up (what they hold is then dropped, counted).
    fn retire_emptied(&mut self) {
        let now = Instant::now();
        let mut retiring = std::mem::take(&mut self.retiring);
        retiring.retain(|&i| {
            if let Some(slot) = self.slots[i as usize].as_mut() {
                if slot.retire_by.is_some_and(|by| now >= by) {
                    slot.counters.dropped_shutdown += slot.empty(&mut self.pool);
                }
            }
            let done = self.slots[i as usize]
                .as_ref()
                .is_some_and(|s| s.queue.is_empty() && s.open.is_none());
            if done {
                self.retire(i as usize);
            }
            !done
        });
        self.retiring = retiring;
    }

    /// Closes slot `i`; its counters go to the retired totals.
    fn retire(&mut self, i: usize) {
        let slot = self.slots[i].take().expect("retiring slots exist");
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
        // From the queue's own positions, not from `dispatched`: so `is_balanced` checks that
        // every event taken out was routed.
        let (put, taken) = self.rx().totals();
        events.pending = put - taken;
        events.dropped_queue_full = self.shared.dropped_queue_full.load(Ordering::Relaxed);
        events.raised = put + events.dropped_queue_full;
        Stats {
            backend: self.backend.kind(),
            events,
            totals,
            targets,
        }
    }

    /// Counts what is still queued after the shutdown deadline as dropped, and reports.
    fn finish(mut self) -> Stats {
        self.shared.settle_drops();
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

/// When each target's failure to connect was last logged, which says why its events are
/// counted unreachable (no receiver yet, or not a datagram one). Kept apart from a slot's
/// other errors, so that neither hides the other, and across a slot's closing: a client that
/// subscribes a missing path over and over gets one line a minute, not one per subscription.
#[derive(Default)]
struct ConnectLog(HashMap<Target, Instant>);

impl ConnectLog {
    /// Targets remembered at most; past it, lines older than [`LOG_INTERVAL`] are forgotten,
    /// and while it is still full, new targets' failures are only counted.
    const MAX_TARGETS: usize = 1024;

    fn failed(&mut self, target: &Target, err: &std::io::Error) {
        let now = Instant::now();
        if let Some(&at) = self.0.get(target) {
            if now.duration_since(at) < LOG_INTERVAL {
                return;
            }
        } else if self.0.len() >= Self::MAX_TARGETS {
            self.0
                .retain(|_, at| now.duration_since(*at) < LOG_INTERVAL);
            if self.0.len() >= Self::MAX_TARGETS {
                return;
            }
        }
        self.0.insert(target.clone(), now);
        warn!(
            "{target}: cannot connect: {err} (its datagrams are counted unreachable while it \
             stays so; next report for this target in {} s at the earliest)",
            LOG_INTERVAL.as_secs()
        );
    }
}

/// Logs a target's error at most once per [`LOG_INTERVAL`]; every error is counted anyway.
fn log_limited(last: &mut Option<Instant>, target: &Target, err: &dyn std::fmt::Display) {
    let now = Instant::now();
    if last.is_none_or(|t| now.duration_since(t) >= LOG_INTERVAL) {
        *last = Some(now);
        warn!(
            "{target}: {err} (counted; next report for this target in {} s at the earliest)",
            LOG_INTERVAL.as_secs()
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn batches_shrink_while_a_receiver_keeps_pace_and_is_full() {
        assert_eq!(batch_size(256, 256, [].into_iter()), 256, "nothing to send");
        assert_eq!(batch_size(256, 256, [256, 256].into_iter()), 256);
        assert_eq!(
            batch_size(256, 256, [256, MIN_WINDOW].into_iter()),
            PACING_BATCH,
            "one narrowed window"
        );
        assert_eq!(batch_size(16, 16, [8].into_iter()), 16, "never above batch");
    }
}
