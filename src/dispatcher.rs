//! The dispatcher: the handle that owns the reactor thread, the registry and the channel.

use std::io;
use std::sync::Arc;
use std::thread::JoinHandle;

use crossbeam_channel::{bounded, unbounded, Sender};

use crate::clock::{Clock, SystemClock};
use crate::config::{BackendChoice, Config, ConfigError, DispatcherConfig};
use crate::encode::Format;
use crate::event::Params;
use crate::publisher::{Publisher, RaiseError, Shared};
use crate::reactor::syscall::SyscallBackend;
use crate::reactor::uring::UringBackend;
use crate::reactor::{Control, Reactor, SendBackend};
use crate::registry::{EventId, Expiry, Registry, RegistryError, Subscribed, SubscriptionOptions};
use crate::stats::{Backend, Stats};
use crate::target::Target;

/// The environment variable that forces a backend: `uring`, `syscall` or `auto`.
pub const BACKEND_ENV: &str = "EVDGRAM_BACKEND";

/// Why a dispatcher did not start.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum StartError {
    /// The `uring` backend was asked for, and io_uring is unavailable here.
    #[error("the uring backend is unavailable: {0} (io_uring may be blocked by seccomp or kernel.io_uring_disabled, or the kernel is older than the 6.0 it needs; use backend auto or syscall)")]
    UringUnavailable(io::Error),
    /// `EVDGRAM_BACKEND` holds something else than `uring`, `syscall` or `auto`.
    #[error("{BACKEND_ENV}: {0}")]
    BadBackendEnv(String),
    /// The configuration is invalid.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// A configured event or subscription is invalid.
    #[error("{0}")]
    Subscription(String),
    /// The operating system refused a resource (eventfd, thread). The message holds the OS
    /// error, which is therefore not also given as the error's source (printed twice).
    #[error("the operating system refused a resource: {0}")]
    Io(io::Error),
}

impl From<io::Error> for StartError {
    fn from(e: io::Error) -> Self {
        StartError::Io(e)
    }
}

/// Sends raised events to every subscribed target from one reactor thread.
///
/// ```no_run
/// use event_datagram::{Dispatcher, DispatcherConfig, Expiry, Params, Target};
///
/// let dispatcher = Dispatcher::start(DispatcherConfig::default())?;
/// let pike = dispatcher.publish("E_PIKE_BLOCKED")?;
/// dispatcher.subscribe(pike, Target::parse("udp:127.0.0.1:9000")?, Expiry::Never)?;
/// let publisher = dispatcher.publisher(); // Clone + Send + Sync: one per thread
/// publisher.raise(pike, Params::new().str("ip", "192.168.2.11")?)?;
/// let stats = dispatcher.shutdown(); // flushes, then reports
/// assert_eq!(stats.totals.pending, 0);
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Dispatcher {
    registry: Arc<Registry>,
    publisher: Publisher,
    control: Sender<Control>,
    /// The reactor; it returns `None` only when it failed to start.
    thread: Option<JoinHandle<Option<Stats>>>,
    backend: Backend,
    default_format: Format,
}

impl Dispatcher {
    /// Starts a dispatcher with the real clock.
    pub fn start(config: DispatcherConfig) -> Result<Self, StartError> {
        Self::start_with_clock(config, Arc::new(SystemClock::new()))
    }

    /// Starts a dispatcher whose subscriptions expire by `clock`.
    pub fn start_with_clock(
        config: DispatcherConfig,
        clock: Arc<dyn Clock>,
    ) -> Result<Self, StartError> {
        config.validate()?;
        let choice = match std::env::var(BACKEND_ENV) {
            Ok(v) if !v.is_empty() => v
                .parse::<BackendChoice>()
                .map_err(StartError::BadBackendEnv)?,
            _ => config.backend,
        };
        let registry = Arc::new(Registry::new(clock));
        let (tx, rx) = crate::queue::bounded(config.queue_capacity);
        let (control, control_rx) = unbounded();
        let shared = Arc::new(Shared::new(
            Arc::clone(&registry),
            config.queue_full,
            config.queue_bytes,
        )?);
        // A change must reach a reactor that reads no event: asleep, or with intake paused.
        let waker = Arc::downgrade(&shared);
        registry.on_change(move || {
            if let Some(shared) = waker.upgrade() {
                shared.wake_reactor();
            }
        });
        let (started_tx, started_rx) = bounded::<Result<Backend, StartError>>(1);
        let thread_shared = Arc::clone(&shared);
        let default_format = config.default_format;
        let thread = std::thread::Builder::new()
            .name("evdgram-reactor".into())
            .spawn(move || {
                // The ring is made on this thread: it is its only submitter (IORING_SETUP_SINGLE_ISSUER).
                let uring = match choice {
                    BackendChoice::Syscall => None,
                    BackendChoice::Uring | BackendChoice::Auto => {
                        match UringBackend::new(config.ring_entries.max(config.batch as u32)) {
                            Ok(b) => Some(b),
                            Err(e) if choice == BackendChoice::Uring => {
                                let _ = started_tx.send(Err(StartError::UringUnavailable(e)));
                                return None;
                            }
                            Err(e) => {
                                warn!("io_uring unavailable ({e}); using the syscall backend");
                                None
                            }
                        }
                    }
                };
                Some(match uring {
                    Some(b) => {
                        let budget = b.round_capacity();
                        run(
                            b,
                            budget,
                            budget,
                            rx,
                            control_rx,
                            thread_shared,
                            config,
                            &started_tx,
                        )
                    }
                    None => {
                        let per_target = config.batch;
                        let b = SyscallBackend::new(per_target);
                        run(
                            b,
                            per_target,
                            per_target * 16,
                            rx,
                            control_rx,
                            thread_shared,
                            config,
                            &started_tx,
                        )
                    }
                })
            })?;
        let backend = match started_rx.recv() {
            Ok(Ok(b)) => b,
            Ok(Err(e)) => {
                let _ = thread.join();
                return Err(e);
            }
            Err(_) => {
                return Err(StartError::Io(io::Error::other(
                    "the reactor thread died at start",
                )))
            }
        };
        Ok(Dispatcher {
            registry,
            publisher: Publisher { tx, shared },
            control,
            thread: Some(thread),
            backend,
            default_format,
        })
    }

    /// Starts a dispatcher from a whole configuration: publishes its events and makes its
    /// static subscriptions.
    pub fn from_config(config: &Config) -> Result<Self, StartError> {
        let d = Self::start(config.dispatcher.clone())?;
        for name in &config.events {
            d.publish(name)
                .map_err(|e| StartError::Subscription(format!("events: {e}")))?;
        }
        for (i, s) in config.subscriptions.iter().enumerate() {
            let at = |e: &dyn std::fmt::Display| {
                StartError::Subscription(format!("subscriptions[{i}]: {e}"))
            };
            let event = d.publish(&s.event).map_err(|e| at(&e))?;
            let target = s.socket.clone();
            let expiry = s.expire.map_or(Expiry::Never, |e| e.expiry());
            let format = s.format.unwrap_or(d.default_format);
            let coalesce = s
                .coalesce
                .map(|c| c.coalesce())
                .transpose()
                .map_err(|e| at(&e))?;
            let options = SubscriptionOptions { format, coalesce };
            d.registry
                .subscribe_with(event, target, expiry, options)
                .map_err(|e| at(&e))?;
        }
        Ok(d)
    }

    /// The backend in use.
    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The format of subscriptions that do not choose one.
    pub fn default_format(&self) -> Format {
        self.default_format
    }

    /// The registry of events and subscriptions.
    pub fn registry(&self) -> &Arc<Registry> {
        &self.registry
    }

    /// Publishes an event (idempotent).
    pub fn publish(&self, name: &str) -> Result<EventId, RegistryError> {
        self.registry.publish(name)
    }

    /// Subscribes `target` to `event` in the default format, or refreshes the subscription (a
    /// refresh takes these options: the default format, no coalescing).
    pub fn subscribe(
        &self,
        event: EventId,
        target: Target,
        expiry: Expiry,
    ) -> Result<Subscribed, RegistryError> {
        self.registry
            .subscribe(event, target, expiry, self.default_format)
    }

    /// Subscribes `target` to `event` in `format`, or refreshes the subscription (a refresh
    /// takes these options: `format`, no coalescing).
    pub fn subscribe_with_format(
        &self,
        event: EventId,
        target: Target,
        expiry: Expiry,
        format: Format,
    ) -> Result<Subscribed, RegistryError> {
        self.registry.subscribe(event, target, expiry, format)
    }

    /// Subscribes `target` to `event` with every option (format, coalescing), or refreshes the
    /// subscription, which then takes these options. (MI's `event_subscribe` keeps the options
    /// a refresh leaves out.)
    pub fn subscribe_with(
        &self,
        event: EventId,
        target: Target,
        expiry: Expiry,
        options: SubscriptionOptions,
    ) -> Result<Subscribed, RegistryError> {
        self.registry.subscribe_with(event, target, expiry, options)
    }

    /// Ends a subscription.
    pub fn unsubscribe(&self, event: EventId, target: &Target) -> Result<(), RegistryError> {
        self.registry.unsubscribe(event, target)
    }

    /// A handle for producer threads.
    pub fn publisher(&self) -> Publisher {
        self.publisher.clone()
    }

    /// Raises an event (see [`Publisher::raise`]).
    #[allow(clippy::result_large_err)]
    pub fn raise(&self, event: EventId, params: Params) -> Result<(), RaiseError> {
        self.publisher.raise(event, params)
    }

    /// A consistent snapshot of the counters, taken by the reactor between rounds.
    ///
    /// # Panics
    ///
    /// If the reactor thread panicked (a bug of this library; [`StatsHandle::stats`] gives
    /// `None` instead).
    pub fn stats(&self) -> Stats {
        self.stats_handle()
            .stats()
            .expect("the reactor answers until it is shut down, which takes the dispatcher")
    }

    /// A handle that reads the counters from other threads (e.g. an MI server), for as long
    /// as the dispatcher runs.
    pub fn stats_handle(&self) -> StatsHandle {
        StatsHandle {
            control: self.control.clone(),
            shared: Arc::clone(&self.publisher.shared),
        }
    }

    /// Stops intake, sends everything queued (waiting up to the configured shutdown timeout for
    /// slow receivers; what is left then is counted as dropped) and returns the final counters.
    ///
    /// # Panics
    ///
    /// If the reactor thread panicked (a bug of this library).
    pub fn shutdown(mut self) -> Stats {
        self.stop()
    }

    fn stop(&mut self) -> Stats {
        let _ = self.control.send(Control::Shutdown);
        self.publisher.shared.wake_reactor();
        let thread = self.thread.take().expect("stopped once");
        thread
            .join()
            .expect("the reactor thread does not panic")
            .expect("a reactor that started returns its stats")
    }
}

impl Drop for Dispatcher {
    fn drop(&mut self) {
        if self.thread.is_some() {
            self.stop();
        }
    }
}

impl std::fmt::Debug for Dispatcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dispatcher")
            .field("backend", &self.backend)
            .finish_non_exhaustive()
    }
}

/// Reads a dispatcher's counters from any thread: `Clone + Send + Sync`.
#[derive(Clone)]
pub struct StatsHandle {
    control: Sender<Control>,
    shared: Arc<Shared>,
}

impl StatsHandle {
    /// A consistent snapshot of the counters, or `None` once the dispatcher is shut down.
    pub fn stats(&self) -> Option<Stats> {
        let (tx, rx) = bounded(1);
        self.control.send(Control::Stats(tx)).ok()?;
        self.shared.wake_reactor();
        rx.recv().ok()
    }
}

impl std::fmt::Debug for StatsHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StatsHandle").finish_non_exhaustive()
    }
}

#[allow(clippy::too_many_arguments)]
fn run<B: SendBackend>(
    backend: B,
    per_target: usize,
    budget: usize,
    rx: crate::queue::Receiver<crate::publisher::Raised>,
    control: crossbeam_channel::Receiver<Control>,
    shared: Arc<Shared>,
    config: DispatcherConfig,
    started: &Sender<Result<Backend, StartError>>,
) -> Stats {
    let _ = started.send(Ok(backend.kind()));
    let reactor = Reactor::new(
        rx,
        control,
        Arc::clone(&shared),
        backend,
        config,
        per_target,
        budget,
    );
    let stats = reactor.run();
    // The channel's receiver is gone now: producers still waiting for room find it closed.
    shared.room.wake_all();
    stats
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_os_error_at_start_is_told_once() {
        let err = StartError::from(io::Error::from_raw_os_error(libc::EMFILE));
        let chain = format!("{:#}", anyhow::Error::from(err));
        assert_eq!(chain.matches("Too many open files").count(), 1, "{chain}");
    }

    /// While every subscription coalesces, the reactor naps until its datagram is due
    /// instead of being woken by each event: events raised one by one, each while the
    /// reactor sleeps, cost a wake or two in all, not one each. With a subscription that
    /// does not coalesce, each does.
    #[test]
    fn the_reactor_naps_while_every_subscription_coalesces() {
        use crate::registry::Coalesce;
        use std::net::UdpSocket;
        use std::sync::atomic::Ordering;
        use std::time::Duration;
        for coalesce in [true, false] {
            for backend in [BackendChoice::Uring, BackendChoice::Syscall] {
                let receiver = UdpSocket::bind("127.0.0.1:0").unwrap();
                receiver
                    .set_read_timeout(Some(Duration::from_secs(20)))
                    .unwrap();
                let target = Target::Udp(receiver.local_addr().unwrap());
                let Ok(d) = Dispatcher::start(DispatcherConfig {
                    backend,
                    ..Default::default()
                }) else {
                    continue; // io_uring denied here: the other backend is tested
                };
                let e = d.publish("E_NAP").unwrap();
                let options = SubscriptionOptions {
                    format: Format::Line,
                    coalesce: coalesce
                        .then(|| Coalesce::new(65_457, Duration::from_secs(2)).unwrap()),
                };
                d.subscribe_with(e, target, Expiry::Never, options).unwrap();
                let shared = &d.publisher.shared;
                let wakes = || shared.wakes.load(Ordering::Relaxed);
                let before = wakes();
                for i in 0..40 {
                    d.raise(e, Params::new().int("i", i).unwrap()).unwrap();
                    // Until the reactor has taken it and gone back to sleep (or to its nap):
                    // each raise finds it so. A bound, not a sleep, for a slow machine.
                    let until = std::time::Instant::now() + Duration::from_secs(5);
                    while shared.reactor_awake() && std::time::Instant::now() < until {
                        std::thread::sleep(Duration::from_micros(200));
                    }
                }
                let woken = wakes() - before;
                let stats = d.shutdown();
                assert_eq!(stats.totals.sent, 40, "{backend:?} {coalesce}");
                if coalesce {
                    assert!(woken <= 3, "{backend:?}: woken {woken} times for 40 events");
                } else {
                    assert!(woken >= 30, "{backend:?}: woken only {woken} times");
                }
            }
        }
    }
}
