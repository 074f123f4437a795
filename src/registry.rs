//! Published events and their subscriptions, with the Event Interface's semantics.
//!
//! Writers (publish, subscribe, unsubscribe) take a lock, change the subscriptions and bump a
//! generation number; the reactor checks that number for each event it reads and, when it
//! changed, takes an immutable [`Snapshot`] of the subscriptions, built then. A change is
//! therefore visible to every event raised after the change returns: that event is read by the
//! reactor after the generation was bumped. (An event raised before, still queued, is routed
//! by the subscriptions of when it is read.) Building the snapshot when it is read, not at each
//! change, keeps a burst of changes (thousands of static subscriptions at start) linear: one
//! snapshot for the burst, not one of every size up to it.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU32, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};
use std::time::Duration;

use crate::clock::Clock;
use crate::encode::Format;
use crate::error::EventError;
use crate::event::EventName;
use crate::target::Target;

/// How long a subscription lasts.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum Expiry {
    /// Until unsubscribed.
    Never,
    /// Until this long after it was made or last refreshed.
    After(Duration),
}

impl Expiry {
    /// `Never` for 0 (the library's reading; MI maps 0 to "unsubscribe"), else `After(secs)`.
    pub fn from_secs(secs: u64) -> Self {
        if secs == 0 {
            Expiry::Never
        } else {
            Expiry::After(Duration::from_secs(secs))
        }
    }
}

/// Packing of consecutive events for one target into one datagram (opt-in, per subscription).
///
/// Events are appended to an open datagram until the next one would pass `max_bytes`, or until
/// `max_delay` has passed since the reactor took its first event (time in the producers' queue
/// before that is not counted, but while the reactor naps: while every subscription coalesces,
/// events do not wake it one by one, and those raised during a nap count their delay from its
/// start), whichever comes first. Line-format events are
/// self-delimiting; `jsonrpc` events are concatenated objects. Our decoders, `evdgram listen`,
/// loadgen and the `opensips` Python package's receiver read both. A target has one open
/// datagram: where several of its subscriptions coalesce, it takes the tightest `max_bytes`
/// and the earliest deadline of the events in it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Coalesce {
    max_bytes: u32,
    max_delay: Duration,
}

/// A coalescing setting out of range.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum InvalidCoalesce {
    /// `max_bytes` is 0 or more than a datagram holds.
    #[error("coalesce max_bytes must be 1 to {max}, not {0}", max = crate::MAX_DATAGRAM)]
    MaxBytes(usize),
    /// `max_delay` is longer than [`Coalesce::MAX_DELAY`].
    #[error(
        "coalesce max_delay_us must be at most {max}, not {0}",
        max = Coalesce::MAX_DELAY.as_micros()
    )]
    MaxDelay(u128),
}

impl Coalesce {
    /// The longest `max_delay`: one minute. Events held longer than that are not events any
    /// more, and the bound keeps deadline arithmetic far from overflowing.
    pub const MAX_DELAY: Duration = Duration::from_secs(60);

    /// Datagrams of at most `max_bytes` (1 to [`MAX_DATAGRAM`](crate::MAX_DATAGRAM)), held open
    /// at most `max_delay` (zero: events of one reactor batch only; at most
    /// [`MAX_DELAY`](Self::MAX_DELAY)).
    pub fn new(max_bytes: usize, max_delay: Duration) -> Result<Self, InvalidCoalesce> {
        if max_bytes == 0 || max_bytes > crate::MAX_DATAGRAM {
            return Err(InvalidCoalesce::MaxBytes(max_bytes));
        }
        if max_delay > Self::MAX_DELAY {
            return Err(InvalidCoalesce::MaxDelay(max_delay.as_micros()));
        }
        Ok(Coalesce {
            max_bytes: max_bytes as u32,
            max_delay,
        })
    }

    /// The most bytes in one datagram.
    pub fn max_bytes(&self) -> usize {
        self.max_bytes as usize
    }

    /// The longest an event waits for others.
    pub fn max_delay(&self) -> Duration {
        self.max_delay
    }
}

/// How a subscription's events are sent.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub struct SubscriptionOptions {
    /// The wire format.
    pub format: Format,
    /// Packing of several events per datagram; `None` (the default): one event per datagram.
    pub coalesce: Option<Coalesce>,
}

impl From<Format> for SubscriptionOptions {
    fn from(format: Format) -> Self {
        SubscriptionOptions {
            format,
            coalesce: None,
        }
    }
}

/// A published event, as returned by [`Registry::publish`]: the only way to raise it.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct EventId {
    index: u32,
    registry: u32,
}

impl EventId {
    /// The event's number, in order of publication (as OpenSIPS' `events_list` shows it).
    pub fn index(self) -> u32 {
        self.index
    }
}

/// Whether [`Registry::subscribe`] added a subscription or refreshed one.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Subscribed {
    /// A new subscription.
    Added,
    /// An existing one (same transport and address) got a new expiry and start time.
    Refreshed,
}

/// A live subscription, as listed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SubscriptionInfo {
    /// Where events go.
    pub target: Target,
    /// How they are encoded.
    pub format: Format,
    /// Several events per datagram, if asked for.
    pub coalesce: Option<Coalesce>,
    /// The expiry it was made with.
    pub expiry: Expiry,
    /// Time left; `None` for [`Expiry::Never`].
    pub remaining: Option<Duration>,
}

/// Why a registry operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RegistryError {
    /// The event name is invalid.
    #[error(transparent)]
    InvalidName(#[from] EventError),
    /// The [`EventId`] was issued by another registry.
    #[error("event id {0} was not published by this dispatcher")]
    ForeignEvent(u32),
    /// No subscription of this event to this target.
    #[error("{target} is not subscribed to {event}")]
    NotSubscribed {
        /// The event.
        event: EventName,
        /// The target.
        target: Target,
    },
    /// The event has as many subscribers as allowed.
    #[error("{event} already has as many subscribers as allowed ({limit})")]
    TooManyForEvent {
        /// The event.
        event: EventName,
        /// The limit.
        limit: usize,
    },
    /// All events together have as many subscribers as allowed.
    #[error("there are already as many subscriptions as allowed ({limit})")]
    TooMany {
        /// The limit.
        limit: usize,
    },
}

/// Limits on the number of subscriptions.
///
/// They protect a dispatcher from its remote control endpoint: the MI handler applies them to
/// the subscriptions it is asked for (`mi.max_subscribers_per_event`, `mi.max_subscribers`;
/// [`Default`] gives their defaults), counting every subscription there is. Subscriptions the
/// application makes itself, or a configuration's static ones, are not capped.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Limits {
    /// Subscriptions per event.
    pub per_event: usize,
    /// Subscriptions in all.
    pub total: usize,
}

impl Limits {
    /// No limit.
    pub const UNLIMITED: Limits = Limits {
        per_event: usize::MAX,
        total: usize::MAX,
    };
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            per_event: 256,
            total: 4096,
        }
    }
}

#[derive(Clone, Debug)]
struct Subscription {
    target: Target,
    format: Format,
    coalesce: Option<Coalesce>,
    expiry: Expiry,
    since: Duration,
}

impl Subscription {
    /// `None`: never, also for a lifetime too long to count (past `Duration::MAX`).
    fn expires_at(&self) -> Option<Duration> {
        match self.expiry {
            Expiry::Never => None,
            Expiry::After(d) => self.since.checked_add(d),
        }
    }

    fn is_live(&self, now: Duration) -> bool {
        self.expires_at().is_none_or(|at| now <= at)
    }
}

/// One subscriber of an event, as the reactor reads it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Route {
    /// Index into [`Snapshot::targets`].
    pub target: u32,
    pub format: Format,
    pub coalesce: Option<Coalesce>,
    pub expires_at: Option<Duration>,
}

impl Route {
    #[inline]
    pub fn is_live(&self, now: Duration) -> bool {
        self.expires_at.is_none_or(|at| now <= at)
    }
}

/// An immutable view of all subscriptions, built when read after a change.
#[derive(Debug, Default)]
pub(crate) struct Snapshot {
    pub generation: u64,
    pub names: Vec<EventName>,
    /// Routes by event index.
    pub routes: Vec<Vec<Route>>,
    /// Every target referenced by a route, once.
    pub targets: Vec<Target>,
    /// By target: when its last route expires; `None` if one never does.
    pub targets_expire: Vec<Option<Duration>>,
    /// When every route coalesces (and there is one): the shortest delay among them. No
    /// event has to be sent at once, nor taken from the channel sooner than that.
    pub coalesce_delay: Option<Duration>,
}

struct State {
    names: Vec<EventName>,
    by_name: HashMap<Arc<str>, u32>,
    subs: Vec<Vec<Subscription>>,
    /// The snapshot of the last generation read; behind the subscriptions while `stale`.
    snapshot: Arc<Snapshot>,
    stale: bool,
}

/// Published events and their subscriptions.
pub struct Registry {
    id: u32,
    clock: Arc<dyn Clock>,
    generation: AtomicU64,
    state: Mutex<State>,
    /// Called after each change: the dispatcher wakes its reactor with it.
    on_change: OnceLock<Box<dyn Fn() + Send + Sync>>,
}

static NEXT_REGISTRY_ID: AtomicU32 = AtomicU32::new(1);

impl Registry {
    /// An empty registry reading time from `clock`.
    pub fn new(clock: Arc<dyn Clock>) -> Self {
        Registry {
            id: NEXT_REGISTRY_ID.fetch_add(1, Ordering::Relaxed),
            clock,
            generation: AtomicU64::new(0),
            state: Mutex::new(State {
                names: Vec::new(),
                by_name: HashMap::new(),
                subs: Vec::new(),
                snapshot: Arc::default(),
                stale: false,
            }),
            on_change: OnceLock::new(),
        }
    }

    /// Sets what to call after each change (once; later calls are ignored).
    pub(crate) fn on_change(&self, f: impl Fn() + Send + Sync + 'static) {
        let _ = self.on_change.set(Box::new(f));
    }

    fn lock(&self) -> MutexGuard<'_, State> {
        // A panic while holding the lock cannot leave `State` half-changed in a way that
        // matters: every change is completed before the snapshot is rebuilt.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The clock expiry is measured with.
    pub fn clock(&self) -> &Arc<dyn Clock> {
        &self.clock
    }

    /// Publishes `name` (idempotent: the same name gives the same id).
    pub fn publish(&self, name: &str) -> Result<EventId, RegistryError> {
        self.publish_within(name, usize::MAX)
            .map(|id| id.expect("no limit"))
    }

    /// [`publish`](Self::publish), or `None` when `name` is new and `limit` events are
    /// published already (checked under the lock: concurrent callers cannot pass it).
    pub(crate) fn publish_within(
        &self,
        name: &str,
        limit: usize,
    ) -> Result<Option<EventId>, RegistryError> {
        let mut st = self.lock();
        if let Some(&index) = st.by_name.get(name) {
            return Ok(Some(self.id(index)));
        }
        if st.names.len() >= limit {
            return Ok(None);
        }
        let name = EventName::new(name)?;
        let index = st.names.len() as u32;
        st.names.push(name.clone());
        st.by_name.insert(Arc::from(name.as_str()), index);
        st.subs.push(Vec::new());
        self.changed(&mut st);
        Ok(Some(self.id(index)))
    }

    /// The id of a published event.
    pub fn lookup(&self, name: &str) -> Option<EventId> {
        self.lock().by_name.get(name).map(|&i| self.id(i))
    }

    /// The name of a published event.
    pub fn name(&self, id: EventId) -> Result<EventName, RegistryError> {
        let index = self.check(id)?;
        Ok(self.lock().names[index].clone())
    }

    /// How many events are published.
    pub fn event_count(&self) -> usize {
        self.lock().names.len()
    }

    /// Every published event, in order of publication.
    pub fn events(&self) -> Vec<(EventName, EventId)> {
        let st = self.lock();
        st.names
            .iter()
            .enumerate()
            .map(|(i, n)| (n.clone(), self.id(i as u32)))
            .collect()
    }

    /// Subscribes `target` to `event`, or refreshes the subscription with the same transport
    /// and exactly the same address (new expiry, format and start time).
    pub fn subscribe(
        &self,
        event: EventId,
        target: Target,
        expiry: Expiry,
        format: Format,
    ) -> Result<Subscribed, RegistryError> {
        self.subscribe_with(event, target, expiry, format.into())
    }

    /// [`subscribe`](Self::subscribe) with every option (format, coalescing).
    pub fn subscribe_with(
        &self,
        event: EventId,
        target: Target,
        expiry: Expiry,
        options: SubscriptionOptions,
    ) -> Result<Subscribed, RegistryError> {
        self.subscribe_limited(event, target, expiry, options, Limits::UNLIMITED)
    }

    /// [`subscribe_with`](Self::subscribe_with), refused when it would add a subscription past
    /// `limits` (a refresh is always made).
    pub fn subscribe_limited(
        &self,
        event: EventId,
        target: Target,
        expiry: Expiry,
        options: SubscriptionOptions,
        limits: Limits,
    ) -> Result<Subscribed, RegistryError> {
        self.subscribe_or_refresh(event, target, expiry, |_| options, limits)
    }

    /// [`subscribe_limited`](Self::subscribe_limited), with the options made from those of
    /// the subscription it refreshes, if it refreshes one (under the lock: nothing comes in
    /// between). For MI, where a refresh that leaves options out keeps them.
    pub(crate) fn subscribe_or_refresh(
        &self,
        event: EventId,
        target: Target,
        expiry: Expiry,
        options: impl FnOnce(Option<SubscriptionOptions>) -> SubscriptionOptions,
        limits: Limits,
    ) -> Result<Subscribed, RegistryError> {
        let index = self.check(event)?;
        let now = self.clock.now();
        let mut st = self.lock();
        if Self::purge(&mut st, now) {
            self.changed(&mut st);
        }
        let total: usize = st.subs.iter().map(Vec::len).sum();
        let subs = &mut st.subs[index];
        let existing = subs.iter_mut().find(|s| s.target == target);
        let options = options(existing.as_ref().map(|s| SubscriptionOptions {
            format: s.format,
            coalesce: s.coalesce,
        }));
        let sub = Subscription {
            target,
            format: options.format,
            coalesce: options.coalesce,
            expiry,
            since: now,
        };
        let outcome = if let Some(existing) = existing {
            *existing = sub;
            Subscribed::Refreshed
        } else if subs.len() >= limits.per_event {
            let event = st.names[index].clone();
            return Err(RegistryError::TooManyForEvent {
                event,
                limit: limits.per_event,
            });
        } else if total >= limits.total {
            return Err(RegistryError::TooMany {
                limit: limits.total,
            });
        } else {
            subs.push(sub);
            Subscribed::Added
        };
        self.changed(&mut st);
        Ok(outcome)
    }

    /// Ends the subscription of `target` to `event`.
    pub fn unsubscribe(&self, event: EventId, target: &Target) -> Result<(), RegistryError> {
        let index = self.check(event)?;
        let now = self.clock.now();
        let mut st = self.lock();
        if Self::purge(&mut st, now) {
            self.changed(&mut st);
        }
        let subs = &mut st.subs[index];
        let Some(at) = subs.iter().position(|s| &s.target == target) else {
            let event = st.names[index].clone();
            return Err(RegistryError::NotSubscribed {
                event,
                target: target.clone(),
            });
        };
        subs.remove(at);
        self.changed(&mut st);
        Ok(())
    }

    /// The live subscriptions of `event`, in order of subscription.
    pub fn subscribers(&self, event: EventId) -> Result<Vec<SubscriptionInfo>, RegistryError> {
        let index = self.check(event)?;
        let now = self.clock.now();
        let mut st = self.lock();
        if Self::purge(&mut st, now) {
            self.changed(&mut st);
        }
        Ok(st.subs[index]
            .iter()
            .map(|s| SubscriptionInfo {
                target: s.target.clone(),
                format: s.format,
                coalesce: s.coalesce,
                expiry: s.expiry,
                remaining: s.expires_at().map(|at| at.saturating_sub(now)),
            })
            .collect())
    }

    /// Removes the subscriptions that have ended. The reactor calls it when a target's have:
    /// otherwise only the next call that changes or lists subscriptions would, and until then
    /// the target kept its socket (reconnected, if its receiver was gone) and its place in
    /// the stats.
    pub(crate) fn purge_expired(&self) {
        let now = self.clock.now();
        let mut st = self.lock();
        if Self::purge(&mut st, now) {
            self.changed(&mut st);
        }
    }

    /// The number of live subscriptions, over all events.
    pub fn subscription_count(&self) -> usize {
        let now = self.clock.now();
        self.lock()
            .subs
            .iter()
            .flatten()
            .filter(|s| s.is_live(now))
            .count()
    }

    /// Whether the subscriptions changed since the snapshot of `generation`: one atomic load.
    #[inline]
    pub(crate) fn changed_since(&self, generation: u64) -> bool {
        // SeqCst (a plain load on x86, as Acquire): see `changed`.
        self.generation.load(Ordering::SeqCst) != generation
    }

    /// The current snapshot if it is newer than `generation`. One atomic load when unchanged.
    #[inline]
    pub(crate) fn snapshot_if_newer(&self, generation: u64) -> Option<Arc<Snapshot>> {
        if !self.changed_since(generation) {
            return None;
        }
        let mut st = self.lock();
        if st.stale {
            self.rebuild(&mut st);
        }
        Some(st.snapshot.clone())
    }

    fn id(&self, index: u32) -> EventId {
        EventId {
            index,
            registry: self.id,
        }
    }

    fn check(&self, id: EventId) -> Result<usize, RegistryError> {
        if id.registry == self.id {
            Ok(id.index as usize)
        } else {
            Err(RegistryError::ForeignEvent(id.index))
        }
    }

    /// Checks that `id` comes from this registry; the reactor trusts ids that pass.
    pub(crate) fn owns(&self, id: EventId) -> bool {
        id.registry == self.id
    }

    /// Removes expired subscriptions; true if any was.
    fn purge(st: &mut State, now: Duration) -> bool {
        let mut removed = false;
        for subs in &mut st.subs {
            let before = subs.len();
            subs.retain(|s| s.is_live(now));
            removed |= subs.len() != before;
        }
        removed
    }

    /// Marks the snapshot stale, bumps the generation and says so, under the lock of the change.
    fn changed(&self, st: &mut State) {
        st.stale = true;
        // A reader that sees the new generation and then takes the lock sees the change. SeqCst,
        // as the reactor's look after it says it sleeps: either it sees this, or `on_change`
        // sees it asleep.
        self.generation.fetch_add(1, Ordering::SeqCst);
        if let Some(f) = self.on_change.get() {
            f();
        }
    }

    /// Builds the snapshot of the current generation (the lock held: no change in between).
    fn rebuild(&self, st: &mut State) {
        let generation = self.generation.load(Ordering::Relaxed);
        let mut targets: Vec<Target> = Vec::new();
        let mut targets_expire: Vec<Option<Duration>> = Vec::new();
        let mut index_of: HashMap<&Target, u32> = HashMap::new();
        let routes = st
            .subs
            .iter()
            .map(|subs| {
                subs.iter()
                    .map(|s| {
                        let target = *index_of.entry(&s.target).or_insert_with(|| {
                            targets.push(s.target.clone());
                            targets_expire.push(Some(Duration::ZERO));
                            targets.len() as u32 - 1
                        });
                        let last = &mut targets_expire[target as usize];
                        *last = last.zip(s.expires_at()).map(|(a, b)| a.max(b));
                        Route {
                            target,
                            format: s.format,
                            coalesce: s.coalesce,
                            expires_at: s.expires_at(),
                        }
                    })
                    .collect()
            })
            .collect::<Vec<Vec<Route>>>();
        st.snapshot = Arc::new(Snapshot {
            generation,
            names: st.names.clone(),
            coalesce_delay: routes
                .iter()
                .flatten()
                .map(|r| r.coalesce.map(|c| c.max_delay()))
                .min()
                .flatten(),
            routes,
            targets,
            targets_expire,
        });
        st.stale = false;
    }
}

impl std::fmt::Debug for Registry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Registry")
            .field("id", &self.id)
            .finish_non_exhaustive()
    }
}
