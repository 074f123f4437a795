//! The dispatcher against real UDP and UNIX receivers, for both backends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use event_datagram::{
    Backend, BackendChoice, Dispatcher, DispatcherConfig, EventId, Expiry, Format, ManualClock,
    Params, QueuePolicy, RaiseError, Registry, RegistryError, Target, MAX_DATAGRAM,
};

use crate::support::{backends, join_within, unix_qlen, wait_until, Receiver, TempDir};

const LIMIT: Duration = Duration::from_secs(20);

fn config(backend: BackendChoice) -> DispatcherConfig {
    DispatcherConfig {
        backend,
        ..Default::default()
    }
}

fn encoded(format: Format, name: &str, params: &Params) -> Vec<u8> {
    let mut buf = vec![0; MAX_DATAGRAM];
    let n = format.encode(name, params, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

fn seq(i: i64) -> Params {
    Params::new()
        .int("seq", i)
        .unwrap()
        .str("ip", "192.168.2.11")
        .unwrap()
}

#[test]
fn fan_out_to_4_udp_and_4_unix_receivers_exact_bytes_in_order() {
    for backend in backends() {
        let dir = TempDir::new("fanout");
        let udp = [
            Receiver::udp(),
            Receiver::udp(),
            Receiver::udp(),
            Receiver::udp6(),
        ];
        let unix: Vec<Receiver> = (0..4)
            .map(|i| Receiver::unix(&dir.join(&format!("r{i}"))))
            .collect();
        let d = Dispatcher::start(config(backend)).unwrap();
        assert_eq!(d.backend().as_str(), format!("{backend:?}").to_lowercase());
        let e = d.publish("E_FANOUT").unwrap();
        for r in &udp {
            d.subscribe(e, r.target.clone(), Expiry::Never).unwrap();
        }
        for r in &unix {
            d.subscribe_with_format(e, r.target.clone(), Expiry::Never, Format::Jsonrpc)
                .unwrap();
        }
        let total = 2_000;
        // Windows keep UDP receive buffers from overflowing, which would be the kernel's loss.
        for window in (0..total).step_by(200) {
            for i in window..window + 200 {
                d.raise(e, seq(i)).unwrap();
            }
            for r in udp.iter().chain(&unix) {
                assert!(
                    r.wait_for(window as usize + 200, LIMIT),
                    "{backend:?} {}: {}",
                    r.target,
                    r.count()
                );
            }
        }
        let stats = d.shutdown();
        for (receivers, format) in [(&udp[..], Format::Line), (&unix[..], Format::Jsonrpc)] {
            let expected: Vec<Vec<u8>> = (0..total)
                .map(|i| encoded(format, "E_FANOUT", &seq(i)))
                .collect();
            for r in receivers {
                assert!(
                    r.datagrams() == expected,
                    "{backend:?} {}: datagrams differ",
                    r.target
                );
                let c = stats.target(&r.target).unwrap();
                assert_eq!(
                    (c.raised, c.sent, c.pending),
                    (total as u64, total as u64, 0)
                );
            }
        }
        assert!(stats.is_balanced(), "{stats:?}");
        assert_eq!(stats.events.dispatched, total as u64);
    }
}

/// Events of three sizes in runs (fixed-width payloads), so GSO sends runs as single messages.
fn gso_event(i: usize) -> Params {
    let pad = match (i / 50) % 4 {
        0 => 10,
        1 => 1_300,
        2 => 10 + i % 2, // alternating sizes: runs of one
        _ => 60_000,
    };
    Params::new()
        .str("seq", &format!("{i:06}"))
        .unwrap()
        .str("pad", &"x".repeat(pad))
        .unwrap()
}

#[test]
fn udp_gso_on_and_off_deliver_identical_datagrams_with_the_same_accounting() {
    // One target (IPv4 or IPv6): its events are encoded into GSO runs; two: each event is
    // encoded once for both and GSO groups the queued datagrams.
    let (v4, v6, both) = (0..1, 1..2, 0..2);
    for (backend, targets) in backends()
        .into_iter()
        .flat_map(|b| [(b, v4.clone()), (b, v6.clone()), (b, both.clone())])
    {
        for udp_gso in [true, false] {
            let udp = [Receiver::udp(), Receiver::udp6()];
            let udp = &udp[targets.clone()];
            let d = Dispatcher::start(DispatcherConfig {
                udp_gso,
                ..config(backend)
            })
            .unwrap();
            let e = d.publish("E_GSO").unwrap();
            for r in udp {
                d.subscribe(e, r.target.clone(), Expiry::Never).unwrap();
            }
            // Windows of 10, of 2 for 60 KB datagrams: a receiver's default kernel buffer
            // (208 KiB) holds only three of those.
            let total = 400;
            let mut window = 0;
            while window < total {
                let n = if (window / 50) % 4 == 3 { 2 } else { 10 };
                for i in window..window + n {
                    d.raise(e, gso_event(i)).unwrap();
                }
                window += n;
                for r in udp {
                    let ok = r.wait_for(window, LIMIT);
                    assert!(ok, "{backend:?} gso={udp_gso} {}: {}", r.target, r.count());
                }
            }
            let stats = d.shutdown();
            let expected: Vec<Vec<u8>> = (0..total)
                .map(|i| encoded(Format::Line, "E_GSO", &gso_event(i)))
                .collect();
            for r in udp {
                let got = r.datagrams();
                assert_eq!(got.len(), total, "{backend:?} gso={udp_gso} {}", r.target);
                assert!(
                    got == expected,
                    "{backend:?} gso={udp_gso} {}: datagrams differ",
                    r.target
                );
                let c = stats.target(&r.target).unwrap();
                assert_eq!(
                    (c.sent, c.datagrams, c.gso_refused),
                    (total as u64, total as u64, 0)
                );
                let bytes: usize = expected.iter().map(Vec::len).sum();
                assert_eq!(c.bytes, bytes as u64);
            }
            assert!(stats.is_balanced());
        }
    }
}

#[test]
fn subscriptions_added_refreshed_expired_and_removed_mid_stream() {
    for backend in backends() {
        let clock = ManualClock::new();
        let (a, b) = (Receiver::udp(), Receiver::udp());
        let d = Dispatcher::start_with_clock(config(backend), Arc::new(clock.clone())).unwrap();
        let e = d.publish("E_SUB").unwrap();
        let raise = |n: i64, expect: &[(&Receiver, usize)]| {
            d.raise(e, seq(n)).unwrap();
            for (r, count) in expect {
                assert!(
                    r.wait_for(*count, LIMIT),
                    "{backend:?} event {n}: {} has {}",
                    r.target,
                    r.count()
                );
            }
        };
        d.subscribe(e, a.target.clone(), Expiry::After(Duration::from_secs(10)))
            .unwrap();
        d.subscribe(e, b.target.clone(), Expiry::Never).unwrap();
        raise(1, &[(&a, 1), (&b, 1)]);
        clock.advance(Duration::from_secs(5));
        // A refresh restarts the subscription's time: it now ends at 15 s.
        let refreshed = d
            .subscribe(e, a.target.clone(), Expiry::After(Duration::from_secs(10)))
            .unwrap();
        assert_eq!(refreshed, event_datagram::Subscribed::Refreshed);
        clock.advance(Duration::from_secs(8));
        raise(2, &[(&a, 2), (&b, 2)]);
        let listed = d.registry().subscribers(e).unwrap();
        assert_eq!(listed[0].remaining, Some(Duration::from_secs(2)));
        clock.advance(Duration::from_secs(3));
        raise(3, &[(&b, 3)]);
        let listed = d.registry().subscribers(e).unwrap();
        assert_eq!(
            listed.len(),
            1,
            "the expired subscription is gone from listings"
        );
        assert_eq!(listed[0].target, b.target);
        d.unsubscribe(e, &b.target).unwrap();
        d.subscribe(e, a.target.clone(), Expiry::Never).unwrap();
        raise(4, &[(&a, 3)]);
        let stats = d.shutdown();
        let line = |n| encoded(Format::Line, "E_SUB", &seq(n));
        assert_eq!(a.datagrams(), vec![line(1), line(2), line(4)]);
        assert_eq!(b.datagrams(), vec![line(1), line(2), line(3)]);
        assert!(stats.is_balanced());
        assert_eq!(stats.events.unsubscribed, 0);
    }
}

/// Raises marks `0..count` (`seq(n)` to `E_MARK`), calling `before(d, E_MARK, n)` ahead of each,
/// while another producer streams events nobody subscribed (cheap to route, so the queue stays
/// short and batches run on while the events come). Each mark is followed by a fence to another
/// receiver, waited for, so that it was read before the next `before`. Waits for `expect` marks
/// at `marks`, shuts `d` down (its counters balanced), and returns the marks received, in order.
fn marks_while_a_stream_flows(
    d: Dispatcher,
    marks: &Receiver,
    count: i64,
    expect: usize,
    mut before: impl FnMut(&Dispatcher, EventId, i64),
) -> Vec<i64> {
    let fences = Receiver::udp();
    let [stream, mark, fence] = ["E_STREAM", "E_MARK", "E_FENCE"].map(|n| d.publish(n).unwrap());
    d.subscribe(fence, fences.target.clone(), Expiry::Never)
        .unwrap();
    let stop = Arc::new(AtomicBool::new(false));
    let streaming = {
        let (p, stop) = (d.publisher(), Arc::clone(&stop));
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                p.raise(stream, Params::new()).unwrap();
            }
        })
    };
    for n in 0..count {
        before(&d, mark, n);
        d.raise(mark, seq(n)).unwrap();
        d.raise(fence, seq(n)).unwrap();
        assert!(fences.wait_for(n as usize + 1, LIMIT), "fence {n}");
    }
    stop.store(true, Ordering::Relaxed);
    join_within(streaming, LIMIT, "the streaming producer");
    let stats = d.shutdown();
    assert!(marks.wait_for(expect, LIMIT), "{} marks", marks.count());
    assert!(stats.is_balanced(), "{stats:?}");
    // Exact, where the receiver might not have read a last late mark yet: every fence, and
    // `expect` marks, were routed to a target.
    assert_eq!(
        stats.totals.raised,
        (count + expect as i64) as u64,
        "{stats:?}"
    );
    let numbers: std::collections::HashMap<Vec<u8>, i64> = (0..count)
        .map(|n| (encoded(Format::Line, "E_MARK", &seq(n)), n))
        .collect();
    marks.datagrams().iter().map(|d| numbers[d]).collect()
}

/// A change applies to an event raised after it returns even when the reactor reads that event
/// in the middle of a batch of others (it looked for changes only at a batch's start): marks
/// raised right after subscribing arrive, those right after unsubscribing do not.
#[test]
fn a_change_applies_to_the_next_event_while_a_stream_flows() {
    const ROUNDS: i64 = 300;
    for backend in backends() {
        let marks = Receiver::udp();
        let target = marks.target.clone();
        let d = Dispatcher::start(config(backend)).unwrap();
        let got =
            marks_while_a_stream_flows(d, &marks, 2 * ROUNDS, ROUNDS as usize, |d, mark, n| {
                if n % 2 == 0 {
                    d.subscribe(mark, target.clone(), Expiry::Never).unwrap();
                } else {
                    d.unsubscribe(mark, &target).unwrap();
                }
            });
        let evens: Vec<i64> = (0..ROUNDS).map(|i| 2 * i).collect();
        assert_eq!(got, evens, "{backend:?}");
    }
}

/// An expired subscription gets no event raised after it expired, even one the reactor reads
/// in the middle of a batch that began before (it read the clock once per batch): each round
/// subscribes for 10 s, raises a mark, lets the subscription expire, and raises another.
#[test]
fn an_expired_subscription_gets_nothing_raised_after_it_expired_while_a_stream_flows() {
    const ROUNDS: i64 = 1_000;
    for backend in backends() {
        let clock = ManualClock::new();
        let marks = Receiver::udp();
        let target = marks.target.clone();
        let d = Dispatcher::start_with_clock(config(backend), Arc::new(clock.clone())).unwrap();
        let lifetime = Expiry::After(Duration::from_secs(10));
        let got =
            marks_while_a_stream_flows(d, &marks, 2 * ROUNDS, ROUNDS as usize, |d, mark, n| {
                if n % 2 == 0 {
                    d.subscribe(mark, target.clone(), lifetime).unwrap();
                } else {
                    clock.advance(Duration::from_secs(11));
                }
            });
        let late: Vec<i64> = got.iter().copied().filter(|n| n % 2 == 1).collect();
        assert!(
            late.is_empty(),
            "{backend:?}: marks raised after expiry: {late:?}"
        );
        assert_eq!(got.len(), ROUNDS as usize, "{backend:?}");
    }
}

/// A clock that, at the reactor's `skip + 1`-th reading once armed, moves 11 s on and raises
/// an event from there: an event raised after a reading that the batch may then reach.
struct RaisingClock {
    nanos: std::sync::atomic::AtomicU64,
    armed: std::sync::Mutex<Option<(usize, event_datagram::Publisher, EventId)>>,
}

impl event_datagram::Clock for RaisingClock {
    fn now(&self) -> Duration {
        let t = self.nanos.load(Ordering::SeqCst);
        if std::thread::current().name() == Some("evdgram-reactor") {
            let mut armed = self.armed.lock().unwrap();
            match armed.as_mut() {
                Some((skip, _, _)) if *skip > 0 => *skip -= 1,
                Some(_) => {
                    let (_, publisher, event) = armed.take().unwrap();
                    self.nanos.fetch_add(11_000_000_000, Ordering::SeqCst);
                    publisher.raise(event, seq(1)).unwrap();
                }
                None => {}
            }
        }
        Duration::from_nanos(t)
    }
}

/// The same, deterministically: an event raised after one of the reactor's time readings (the
/// subscription expired by then) reaches no one. At the first reading of a batch (the event
/// is queued behind the one being routed), and at a second one (the reactor looked again at a
/// queue it found empty: that batch must end, and the event waits for the next one).
#[test]
fn an_event_raised_after_the_reactors_time_reading_is_judged_with_a_later_one() {
    for backend in backends() {
        for skip in [0, 1] {
            let clock = Arc::new(RaisingClock {
                nanos: std::sync::atomic::AtomicU64::new(0),
                armed: std::sync::Mutex::new(None),
            });
            let marks = Receiver::udp();
            let d = Dispatcher::start_with_clock(config(backend), clock.clone()).unwrap();
            let [trigger, mark] = ["E_TRIGGER", "E_MARK"].map(|n| d.publish(n).unwrap());
            let lifetime = Expiry::After(Duration::from_secs(10));
            d.subscribe(mark, marks.target.clone(), lifetime).unwrap();
            // Armed once the reactor has taken the subscription (it reads the clock then, to
            // know when it ends): the readings counted are the batches' only.
            let taken = || d.stats().target(&marks.target).is_some();
            assert!(wait_until(LIMIT, taken));
            *clock.armed.lock().unwrap() = Some((skip, d.publisher(), mark));
            let triggers = 1 + skip as u64;
            for i in 1..=triggers {
                d.raise(trigger, Params::new()).unwrap();
                // Routed, and the batch done (stats are taken between rounds).
                assert!(wait_until(LIMIT, || d.stats().events.dispatched >= i));
            }
            // All routed before the shutdown closes the queue (the mark is raised in the reactor).
            assert!(wait_until(LIMIT, || d.stats().events.dispatched == triggers + 1));
            let stats = d.shutdown();
            assert_eq!(
                stats.events.unsubscribed,
                triggers + 1,
                "{backend:?}, skip {skip}: {stats:?}"
            );
            assert_eq!(marks.count(), 0, "{backend:?}, skip {skip}");
        }
    }
}

/// A dispatcher (small queues, policy drop, `clock`) whose one event's sole subscriber, for
/// `lifetime`, is a UNIX receiver that never reads, raised to until intake paused: the
/// receiver's queue, then its retry queue, then the channel are full, and raises drop. The
/// receiver lives as long as the temp dir returned with it.
fn paused_by_a_stalled_subscriber(
    backend: BackendChoice,
    clock: ManualClock,
    lifetime: Expiry,
) -> (
    Dispatcher,
    EventId,
    (TempDir, std::os::unix::net::UnixDatagram),
) {
    let dir = TempDir::new("paused");
    let path = dir.join("stalled");
    let receiver = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
    let stalled = Target::parse(&format!("unix:{}", path.display())).unwrap();
    let config = DispatcherConfig {
        backend,
        queue_capacity: 64,
        queue_full: QueuePolicy::Drop,
        retry_queue: 16,
        shutdown_timeout_ms: 100,
        ..Default::default()
    };
    let d = Dispatcher::start_with_clock(config, Arc::new(clock)).unwrap();
    let e = d.publish("E_PAUSE").unwrap();
    d.subscribe(e, stalled, lifetime).unwrap();
    let p = d.publisher();
    assert!(wait_until(LIMIT, || {
        // Bounded, should the drop policy ever wait: the test then fails instead of hanging.
        let _ = p.raise_timeout(e, seq(0), Duration::from_millis(10));
        d.stats().events.dropped_queue_full > 0
    }));
    (d, e, (dir, receiver))
}

/// Intake pauses while every target is stalled and full; a subscription made then opens it
/// again (the reactor read no event, so it saw no change: the channel stayed full until the
/// stalled receiver read again).
#[test]
fn a_subscription_made_while_intake_is_paused_opens_it_again() {
    for backend in backends() {
        let (d, e, _stalled) =
            paused_by_a_stalled_subscriber(backend, ManualClock::new(), Expiry::Never);
        let late = Receiver::udp();
        d.subscribe(e, late.target.clone(), Expiry::Never).unwrap();
        assert!(
            late.wait_for(1, LIMIT),
            "{backend:?}: nothing reached the new subscriber: {:?}",
            d.stats()
        );
        let stats = d.shutdown();
        assert!(stats.is_balanced(), "{stats:?}");
    }
}

/// Intake paused by a sole stalled subscriber opens again once its subscription has expired:
/// the events waiting in the channel then go to no one (it stayed paused until the receiver
/// read again, or the subscriptions changed).
#[test]
fn intake_paused_by_a_stalled_subscriber_opens_when_its_subscription_expires() {
    for backend in backends() {
        let clock = ManualClock::new();
        let lifetime = Expiry::After(Duration::from_secs(10));
        let (d, _, _stalled) = paused_by_a_stalled_subscriber(backend, clock.clone(), lifetime);
        let paused = d.stats().events;
        assert!(paused.pending > 0, "{paused:?}");
        clock.advance(Duration::from_secs(11));
        // Each look wakes the reactor (a manual clock cannot).
        assert!(
            wait_until(LIMIT, || d.stats().events.pending == 0),
            "{backend:?}: {:?}",
            d.stats()
        );
        let stats = d.shutdown();
        assert!(stats.events.unsubscribed >= paused.pending, "{stats:?}");
        assert!(stats.is_balanced(), "{stats:?}");
    }
}

#[test]
fn a_stalled_unix_receiver_loses_nothing_up_to_its_bound_while_others_flow() {
    for backend in backends() {
        let dir = TempDir::new("slow");
        let slow = Receiver::unix(&dir.join("slow"));
        let fast = Receiver::udp();
        let cfg = DispatcherConfig {
            retry_queue: 1000,
            batch: 64,
            ..config(backend)
        };
        let d = Dispatcher::start(cfg.clone()).unwrap();
        let e = d.publish("E_SLOW").unwrap();
        d.subscribe(e, slow.target.clone(), Expiry::Never).unwrap();
        d.subscribe(e, fast.target.clone(), Expiry::Never).unwrap();
        slow.pause(true);
        for i in 0..800 {
            d.raise(e, seq(i)).unwrap();
            if i % 100 == 99 {
                assert!(
                    fast.wait_for(i as usize + 1, LIMIT),
                    "{backend:?}: the fast target stalled"
                );
            }
        }
        let stats = d.stats();
        let c = stats.target(&slow.target).unwrap();
        // Its receiver's queue took a few (one more than its length, and one that the reader
        // may have taken as it paused); the rest wait.
        assert!(
            c.sent as usize <= unix_qlen() + 4 && c.sent + c.pending == 800 && c.pending > 0,
            "{backend:?}: the stalled target's datagrams wait: {c:?}"
        );
        assert_eq!(c.dropped(), 0);
        slow.pause(false);
        assert!(
            slow.wait_for(800, LIMIT),
            "{backend:?}: {} of 800 arrived",
            slow.count()
        );
        let expected: Vec<Vec<u8>> = (0..800)
            .map(|i| encoded(Format::Line, "E_SLOW", &seq(i)))
            .collect();
        assert!(
            slow.datagrams() == expected,
            "{backend:?}: in order, none lost"
        );

        // Past the bound, the overflow is dropped and counted; the rest still arrives in order.
        slow.pause(true);
        for i in 800..3_000 {
            d.raise(e, seq(i)).unwrap();
            if i % 100 == 99 {
                assert!(
                    fast.wait_for(i as usize + 1, LIMIT),
                    "{backend:?}: the fast target stalled"
                );
            }
        }
        // It held at most its bound: `retry_queue`, and a batch it may take while full.
        let c = *d.stats().target(&slow.target).unwrap();
        assert!(
            c.pending <= (cfg.retry_queue + cfg.batch) as u64,
            "{backend:?}: held past its bound: {c:?}"
        );
        slow.pause(false);
        let stats = d.shutdown();
        let c = *stats.target(&slow.target).unwrap();
        assert!(c.dropped_retry_overflow > 0, "{c:?}");
        assert_eq!(c.sent + c.dropped_retry_overflow, 3_000, "{c:?}");
        assert!(slow.wait_for(c.sent as usize, LIMIT));
        let got = slow.datagrams();
        assert_eq!(got.len() as u64, c.sent);
        let mut last = -1;
        for dgram in &got {
            let s = std::str::from_utf8(dgram).unwrap();
            let n: i64 = s
                .split("seq::")
                .nth(1)
                .unwrap()
                .split('\n')
                .next()
                .unwrap()
                .parse()
                .unwrap();
            assert!(n > last, "{backend:?}: out of order: {n} after {last}");
            last = n;
        }
        assert!(stats.is_balanced());
    }
}

#[test]
fn large_datagrams_to_a_stalled_unix_receiver_all_arrive_in_order_when_it_reads_again() {
    // A full receiver of datagrams this large is waited for (POLLOUT), never retried at once.
    // More than its queue and our socket's send buffer hold (8 MiB: about 140 of them).
    const N: i64 = 200;
    let big = |i: i64| seq(i).str("pad", &"p".repeat(60_000)).unwrap();
    for backend in backends() {
        let dir = TempDir::new("large");
        let slow = Receiver::unix(&dir.join("slow"));
        let d = Dispatcher::start(config(backend)).unwrap();
        let e = d.publish("E_LARGE").unwrap();
        d.subscribe(e, slow.target.clone(), Expiry::Never).unwrap();
        slow.pause(true);
        for i in 0..N {
            d.raise(e, big(i)).unwrap();
        }
        let routed = wait_until(LIMIT, || {
            d.stats().target(&slow.target).map_or(0, |c| c.raised) == N as u64
        });
        assert!(routed, "{backend:?}: not routed");
        let c = *d.stats().target(&slow.target).unwrap();
        assert!(
            c.sent as usize <= unix_qlen() + 4 && c.sent + c.pending == N as u64 && c.pending > 0,
            "{backend:?}: the stalled target's datagrams wait: {c:?}"
        );
        slow.pause(false);
        assert!(
            slow.wait_for(N as usize, LIMIT),
            "{backend:?}: {} of {N} arrived",
            slow.count()
        );
        let stats = d.shutdown();
        let expected: Vec<Vec<u8>> = (0..N)
            .map(|i| encoded(Format::Line, "E_LARGE", &big(i)))
            .collect();
        assert!(
            slow.datagrams() == expected,
            "{backend:?}: in order, none lost"
        );
        let c = stats.target(&slow.target).unwrap();
        assert_eq!(
            (c.sent, c.dropped(), c.failed()),
            (N as u64, 0, 0),
            "{backend:?}: {c:?}"
        );
        assert!(stats.is_balanced());
    }
}

/// Events whose line datagram is a little over 8 000 bytes: 1 000 of them fit a target's
/// `retry_queue` (1024 datagrams) but not 8 MB.
fn large(i: i64) -> Params {
    seq(i).str("pad", &"p".repeat(8_000)).unwrap()
}

/// The exact datagrams of `large(0..n)` raised as `name`.
fn large_datagrams(name: &str, n: i64) -> Vec<Vec<u8>> {
    (0..n)
        .map(|i| encoded(Format::Line, name, &large(i)))
        .collect()
}

/// A dispatcher with `cfg` and one event subscribed by a UNIX receiver that reads nothing.
fn stalled(
    dir: &TempDir,
    cfg: DispatcherConfig,
    name: &str,
) -> (Dispatcher, event_datagram::EventId, Receiver) {
    stalled_for(dir, cfg, name, Expiry::Never)
}

/// [`stalled`], subscribed for `lifetime`.
fn stalled_for(
    dir: &TempDir,
    cfg: DispatcherConfig,
    name: &str,
    lifetime: Expiry,
) -> (Dispatcher, event_datagram::EventId, Receiver) {
    let slow = Receiver::unix(&dir.join("slow"));
    slow.pause(true);
    let d = Dispatcher::start(cfg).unwrap();
    let e = d.publish(name).unwrap();
    d.subscribe(e, slow.target.clone(), lifetime).unwrap();
    (d, e, slow)
}

/// Raises `seq(0..n)` as `e` until the stalled receiver's target holds some of them (its
/// receiver's queue full behind them).
fn raise_until_held(d: &Dispatcher, e: EventId, slow: &Receiver, n: i64) {
    for i in 0..n {
        d.raise(e, seq(i)).unwrap();
    }
    let held = || {
        d.stats()
            .target(&slow.target)
            .is_some_and(|c| c.pending > 0)
    };
    assert!(wait_until(LIMIT, held), "nothing held");
}

/// The reactor takes at most this many bytes of events in one batch beyond a full target's
/// bound, plus two datagrams (the one that crossed it, and an open one).
const ONE_BATCH: usize = (1 << 20) + 2 * MAX_DATAGRAM;

#[test]
fn a_stalled_receiver_of_large_events_holds_at_most_its_bytes_bound_while_others_flow() {
    for backend in backends() {
        let dir = TempDir::new("bytes");
        let slow = Receiver::unix(&dir.join("slow"));
        let fast = Receiver::unix(&dir.join("fast"));
        let bound = 256 << 10;
        let cfg = DispatcherConfig {
            retry_queue_bytes: bound,
            ..config(backend)
        };
        let d = Dispatcher::start(cfg).unwrap();
        let e = d.publish("E_BYTES").unwrap();
        d.subscribe(e, slow.target.clone(), Expiry::Never).unwrap();
        d.subscribe(e, fast.target.clone(), Expiry::Never).unwrap();
        slow.pause(true);
        for i in 0..1_000 {
            d.raise(e, large(i)).unwrap();
        }
        let routed = wait_until(LIMIT, || {
            d.stats().target(&slow.target).map_or(0, |c| c.raised) == 1_000
        });
        assert!(routed, "{backend:?}: not routed");
        let c = *d.stats().target(&slow.target).unwrap();
        let len = encoded(Format::Line, "E_BYTES", &large(0)).len();
        // Sent: the few its receiver's queue took. Pending: what waits for it, queued while
        // under the bound (so with the last one, over it).
        assert!(
            c.pending as usize * len < bound + ONE_BATCH + len,
            "{backend:?}: {} bytes held for a stalled receiver: {c:?}",
            c.pending as usize * len
        );
        assert!(c.dropped_retry_overflow > 0, "{backend:?}: {c:?}");
        assert_eq!(
            c.sent + c.pending + c.dropped_retry_overflow,
            1_000,
            "{backend:?}: {c:?}"
        );
        assert!(
            fast.wait_for(1_000, LIMIT),
            "{backend:?}: the other target stalled"
        );
        slow.pause(false);
        let stats = d.shutdown();
        let c = *stats.target(&slow.target).unwrap();
        assert!(slow.wait_for(c.sent as usize, LIMIT));
        let all = large_datagrams("E_BYTES", 1_000);
        assert!(
            fast.datagrams() == all,
            "{backend:?}: the other target got all"
        );
        // The stalled one got a subsequence: in order, exact bytes, what was not dropped.
        let got = slow.datagrams();
        assert_eq!(got.len() as u64, c.sent);
        let mut expected = all.iter();
        assert!(
            got.iter().all(|g| expected.any(|x| x == g)),
            "{backend:?}: out of order or corrupt"
        );
        assert!(stats.is_balanced());
    }
}

#[test]
fn a_sole_stalled_receiver_of_large_events_pauses_intake_before_its_bytes_bound_drops() {
    for backend in backends() {
        let dir = TempDir::new("pause");
        let cfg = DispatcherConfig {
            retry_queue_bytes: 64 << 10,
            queue_bytes: 32 << 20,
            ..config(backend)
        };
        let (d, e, slow) = stalled(&dir, cfg, "E_PAUSE");
        // 16 MB: all of it fits in the channel, which the reactor stops taking from once the
        // target holds its bound; a batch of 256 such events would be 2 MB past it.
        let publisher = d.publisher();
        for i in 0..2_000 {
            let raised = publisher.raise_timeout(e, large(i), LIMIT);
            assert!(raised.is_ok(), "{backend:?}: event {i} found no room");
        }
        // The target reaches its bound, and then takes no more. The bound counts the buffers
        // its datagrams hold: each of these (8 045 bytes) holds one of 8 KiB.
        let len = encoded(Format::Line, "E_PAUSE", &large(0)).len() as u64;
        assert!(len <= 8 << 10);
        assert!(wait_until(LIMIT, || d
            .stats()
            .target(&slow.target)
            .is_some_and(|c| c.pending * (8 << 10) >= 64 << 10)));
        std::thread::sleep(Duration::from_millis(200));
        let c = *d.stats().target(&slow.target).unwrap();
        assert_eq!(c.dropped(), 0, "{backend:?}: {c:?}");
        // What its receiver's queue took, the bound, one batch: far from the 2 000.
        assert!(
            (c.raised as usize) < unix_qlen() + 290,
            "{backend:?}: intake did not pause: {c:?}"
        );
        slow.pause(false);
        let stats = d.shutdown();
        assert!(slow.wait_for(2_000, LIMIT), "{backend:?}: {}", slow.count());
        assert!(
            slow.datagrams() == large_datagrams("E_PAUSE", 2_000),
            "{backend:?}: in order, none lost"
        );
        assert!(stats.is_balanced());
    }
}

#[test]
fn the_channel_holds_at_most_queue_bytes_of_large_params_and_loses_nothing_it_took() {
    for backend in backends() {
        let dir = TempDir::new("qbytes");
        let cfg = DispatcherConfig {
            queue_bytes: 64 << 10,
            retry_queue_bytes: 64 << 10,
            ..config(backend)
        };
        let (d, e, slow) = stalled(&dir, cfg, "E_QBYTES");
        // The target's bound pauses intake, then the channel fills: by its bytes (8 events
        // of 8 KiB params), long before its 4096 slots.
        let publisher = d.publisher();
        let mut accepted = 0;
        loop {
            match publisher.raise_timeout(e, large(accepted), Duration::from_millis(200)) {
                Ok(()) => accepted += 1,
                Err(RaiseError::QueueFull(..)) => break,
                Err(other) => panic!("{other}"),
            }
            assert!(
                accepted < 1_000,
                "{backend:?}: the channel took 1 000 events"
            );
        }
        // The receiver's queue, the target's bound and one batch, the channel's 8 or 9.
        let len = encoded(Format::Line, "E_QBYTES", &large(0)).len() as i64;
        let most = unix_qlen() as i64 + ((64 << 10) + ONE_BATCH as i64) / len + 1 + 9;
        assert!(
            accepted <= most,
            "{backend:?}: {accepted} accepted, {most} at most"
        );
        // Once the receiver reads, producers that wait are let in again (`block`).
        slow.pause(false);
        for i in accepted..accepted + 500 {
            publisher
                .raise_timeout(e, large(i), LIMIT)
                .expect("room once the receiver reads");
        }
        let stats = d.shutdown();
        let total = accepted as usize + 500;
        assert!(
            slow.wait_for(total, LIMIT),
            "{backend:?}: {} arrived",
            slow.count()
        );
        assert!(
            slow.datagrams() == large_datagrams("E_QBYTES", total as i64),
            "{backend:?}: in order, none lost"
        );
        assert_eq!(stats.events.dropped_queue_full, 1, "{backend:?}");
        let c = stats.target(&slow.target).unwrap();
        assert_eq!(
            (c.sent, c.dropped()),
            (total as u64, 0),
            "{backend:?}: {c:?}"
        );
        assert!(stats.is_balanced());
    }
}

#[test]
fn when_every_target_is_stalled_producers_feel_backpressure_and_nothing_is_dropped() {
    for backend in backends() {
        let dir = TempDir::new("backpressure");
        let slow = Receiver::unix(&dir.join("slow"));
        let cfg = DispatcherConfig {
            retry_queue: 100,
            batch: 32,
            queue_capacity: 64,
            ..config(backend)
        };
        let d = Dispatcher::start(cfg).unwrap();
        let e = d.publish("E_BP").unwrap();
        d.subscribe(e, slow.target.clone(), Expiry::Never).unwrap();
        slow.pause(true);
        let publisher = d.publisher();
        let producer = std::thread::spawn(move || {
            for i in 0..3_000 {
                publisher.raise(e, seq(i)).unwrap();
            }
        });
        // The producer is held back by the full channel instead of the reactor dropping.
        std::thread::sleep(Duration::from_millis(300));
        assert!(
            !producer.is_finished(),
            "{backend:?}: the producer was not held back"
        );
        let c = *d.stats().target(&slow.target).unwrap();
        assert_eq!(c.dropped(), 0, "{backend:?}: {c:?}");
        slow.pause(false);
        join_within(producer, LIMIT, "the producer");
        let stats = d.shutdown();
        let c = stats.target(&slow.target).unwrap();
        assert_eq!((c.sent, c.dropped()), (3_000, 0), "{backend:?}: {c:?}");
        assert!(slow.wait_for(3_000, LIMIT));
    }
}

#[test]
fn shutdown_releases_producers_waiting_for_room_and_counts_every_accepted_event() {
    for backend in backends() {
        let dir = TempDir::new("room");
        let slow = Receiver::unix(&dir.join("slow"));
        slow.pause(true);
        let cfg = DispatcherConfig {
            retry_queue: 8,
            batch: 8,
            queue_capacity: 16,
            shutdown_timeout_ms: 200,
            ..config(backend)
        };
        let d = Dispatcher::start(cfg).unwrap();
        let e = d.publish("E_ROOM").unwrap();
        d.subscribe(e, slow.target.clone(), Expiry::Never).unwrap();
        let publisher = d.publisher();
        let producer = std::thread::spawn(move || {
            let mut accepted = 0u64;
            loop {
                match publisher.raise(e, seq(accepted as i64)) {
                    Ok(()) => accepted += 1,
                    Err(err) => return (accepted, err),
                }
            }
        });
        std::thread::sleep(Duration::from_millis(200));
        assert!(
            !producer.is_finished(),
            "{backend:?}: the producer should wait for room"
        );
        let stats = d.shutdown();
        assert!(
            wait_until(LIMIT, || producer.is_finished()),
            "{backend:?}: a producer waiting for room was not released by shutdown"
        );
        let (accepted, err) = join_within(producer, LIMIT, "the producer");
        assert!(
            matches!(err, RaiseError::ShutDown(..)),
            "{backend:?}: {err:?}"
        );
        assert!(stats.is_balanced(), "{backend:?}: {stats:?}");
        assert_eq!(stats.events.raised, accepted, "{backend:?}: {stats:?}");
        let c = stats.target(&slow.target).unwrap();
        assert_eq!(c.raised, accepted, "{backend:?}: {c:?}");
        assert_eq!(c.pending, 0, "{backend:?}: {c:?}");
    }
}

/// Shutdown ends at its timeout while a UNIX receiver keeps taking a little all the time
/// behind a retry queue of 100 000: what is still queued then is counted as dropped at
/// shutdown, not sent at that receiver's pace (over 5 s here).
#[test]
fn shutdown_ends_at_its_timeout_while_a_slow_receiver_keeps_taking() {
    for backend in backends() {
        let dir = TempDir::new("trickle");
        let path = dir.join("slow");
        let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
        socket
            .set_read_timeout(Some(Duration::from_millis(10)))
            .unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let reader = {
            let stop = Arc::clone(&stop);
            std::thread::spawn(move || {
                let mut buf = [0u8; 256];
                while !stop.load(Ordering::Relaxed) {
                    let _ = socket.recv(&mut buf);
                    // Busy, not asleep, so that the reactor keeps retrying it.
                    let t = std::time::Instant::now();
                    while t.elapsed() < Duration::from_micros(100) {
                        std::hint::spin_loop();
                    }
                }
            })
        };
        let cfg = DispatcherConfig {
            shutdown_timeout_ms: 200,
            retry_queue: 100_000,
            retry_queue_bytes: 256 << 20,
            ..config(backend)
        };
        let d = Dispatcher::start(cfg).unwrap();
        let e = d.publish("E_TRICKLE").unwrap();
        let target: Target = format!("unix:{}", path.display()).parse().unwrap();
        d.subscribe(e, target.clone(), Expiry::Never).unwrap();
        let publisher = d.publisher();
        let producer = std::thread::spawn(move || {
            let mut accepted = 0u64;
            while publisher.raise(e, seq(accepted as i64)).is_ok() {
                accepted += 1;
            }
            accepted
        });
        // The retry queue fills far faster than the receiver takes.
        assert!(wait_until(LIMIT, || d
            .stats()
            .target(&target)
            .is_some_and(|c| c.pending > 50_000)));
        let start = std::time::Instant::now();
        let stats = d.shutdown();
        let took = start.elapsed();
        let accepted = join_within(producer, LIMIT, "the producer");
        stop.store(true, Ordering::Relaxed);
        join_within(reader, LIMIT, "the reader");
        // Not a timing of ours: a shutdown that waited for the queue would take over 5 s
        // (50 000 datagrams at 100 us each), one that kept its deadline 0.2 s; the bound sits
        // far from both, for a loaded machine.
        assert!(
            took < Duration::from_secs(3),
            "{backend:?}: shutdown took {took:?}"
        );
        assert!(stats.is_balanced(), "{backend:?}: {stats:?}");
        let c = stats.target(&target).unwrap();
        assert_eq!((c.raised, c.pending), (accepted, 0), "{backend:?}: {c:?}");
        assert!(
            c.dropped_shutdown > 0,
            "{backend:?}: nothing left at the deadline: {c:?}"
        );
    }
}

#[test]
fn missing_unix_path_and_closed_udp_port_are_counted_not_fatal() {
    for backend in backends() {
        let dir = TempDir::new("dead");
        let missing: Target = format!("unix:{}", dir.join("nobody").display())
            .parse()
            .unwrap();
        let closed = {
            let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
            Target::Udp(s.local_addr().unwrap())
        };
        let live = Receiver::udp();
        let d = Dispatcher::start(config(backend)).unwrap();
        let e = d.publish("E_DEAD").unwrap();
        for t in [&missing, &closed, &live.target] {
            d.subscribe(e, t.clone(), Expiry::Never).unwrap();
        }
        for i in 0..300 {
            d.raise(e, seq(i)).unwrap();
            if i % 100 == 99 {
                assert!(live.wait_for(i as usize + 1, LIMIT));
            }
        }
        // The closed port's target drains more slowly: every refusal ends its chain for the round.
        let drained = || d.stats().targets.iter().all(|t| t.counters.pending == 0);
        assert!(wait_until(LIMIT, drained));
        let stats = d.stats();
        assert_eq!(stats.target(&live.target).unwrap().sent, 300);
        let m = stats.target(&missing).unwrap();
        assert_eq!(
            (m.raised, m.failed_unreachable, m.sent),
            (300, 300, 0),
            "{m:?}"
        );
        let c = stats.target(&closed).unwrap();
        assert_eq!(c.raised, 300);
        assert!(c.failed_unreachable > 0, "{c:?}");
        assert_eq!(c.sent + c.failed_unreachable, 300, "{c:?}");
        assert!(stats.is_balanced());

        // The receiver comes back: the target is reconnected and gets events again.
        let back = Receiver::unix(&dir.join("nobody"));
        let mut n = 300;
        let arrived = wait_until(LIMIT, || {
            d.raise(e, seq(n)).unwrap();
            n += 1;
            std::thread::sleep(Duration::from_millis(5));
            back.count() > 0
        });
        assert!(arrived, "{backend:?}: no reconnect");
        let stats = d.shutdown();
        let m = stats.target(&missing).unwrap();
        assert!(m.sent > 0 && m.is_balanced(), "{m:?}");
        assert!(back.wait_for(m.sent as usize, LIMIT));
    }
}

/// On loopback a closed port answers every datagram at once, and the next send on the
/// connected socket meets that refusal (`ECONNREFUSED`). Counted unreachable, the target keeps
/// going: no datagram is taken for a full receiver's and dropped as retry overflow, and the
/// target keeps pace with a burst.
#[test]
fn a_burst_to_a_closed_udp_port_is_counted_unreachable_and_keeps_going() {
    const N: i64 = 20_000;
    for backend in backends() {
        for udp_gso in [true, false] {
            let closed = {
                let s = std::net::UdpSocket::bind("127.0.0.1:0").unwrap();
                Target::Udp(s.local_addr().unwrap())
            };
            let live = Receiver::udp();
            let d = Dispatcher::start(DispatcherConfig {
                udp_gso,
                ..config(backend)
            })
            .unwrap();
            let e = d.publish("E_CLOSED").unwrap();
            for t in [&closed, &live.target] {
                d.subscribe(e, t.clone(), Expiry::Never).unwrap();
            }
            for i in 0..N {
                d.raise(e, seq(i)).unwrap();
            }
            let stats = d.shutdown();
            let case = format!("{backend:?}, udp_gso {udp_gso}");
            let c = stats.target(&closed).unwrap();
            assert_eq!(c.raised, N as u64, "{case}: {c:?}");
            assert_eq!(c.dropped(), 0, "{case}: {c:?}");
            assert!(c.failed_unreachable > 0, "{case}: {c:?}");
            assert_eq!(c.sent + c.failed_unreachable, N as u64, "{case}: {c:?}");
            let l = stats.target(&live.target).unwrap();
            assert_eq!((l.sent, l.dropped()), (N as u64, 0), "{case}: {l:?}");
            assert!(stats.is_balanced(), "{case}");
        }
    }
}

/// A UNIX receiver restarted at its path: the old connected socket is refused, and the
/// events raised right after the restart reach the new receiver, none counted unreachable.
#[test]
fn a_unix_receiver_restarted_at_its_path_gets_the_events_raised_after() {
    for backend in backends() {
        let dir = TempDir::new("restart");
        let path = dir.join("sink");
        let first = Receiver::unix(&path);
        let d = Dispatcher::start(config(backend)).unwrap();
        let e = d.publish("E_RESTART").unwrap();
        d.subscribe(e, first.target.clone(), Expiry::Never).unwrap();
        d.raise(e, seq(0)).unwrap();
        assert!(first.wait_for(1, LIMIT), "{backend:?}");
        drop(first);
        std::fs::remove_file(&path).unwrap();
        let second = Receiver::unix(&path);
        for i in 1..=10 {
            d.raise(e, seq(i)).unwrap();
            std::thread::sleep(Duration::from_millis(1));
        }
        assert!(
            second.wait_for(10, LIMIT),
            "{backend:?}: {} of 10 arrived",
            second.count()
        );
        let stats = d.shutdown();
        let c = stats.target(&second.target).unwrap();
        assert_eq!(
            (c.sent, c.failed_unreachable),
            (11, 0),
            "{backend:?}: {c:?}"
        );
        assert_eq!(
            second.datagrams(),
            (1..=10)
                .map(|i| encoded(Format::Line, "E_RESTART", &seq(i)))
                .collect::<Vec<_>>()
        );
    }
}

#[test]
fn oversize_events_are_rejected_and_counted_and_the_largest_datagram_goes_out() {
    for backend in backends() {
        let dir = TempDir::new("big");
        let (udp, unix) = (Receiver::udp(), Receiver::unix(&dir.join("big")));
        let d = Dispatcher::start(config(backend)).unwrap();
        let e = d.publish("E_BIG").unwrap();
        d.subscribe(e, udp.target.clone(), Expiry::Never).unwrap();
        d.subscribe(e, unix.target.clone(), Expiry::Never).unwrap();
        // "E_BIG\nv::" + value + "\n\n" is exactly MAX_DATAGRAM bytes.
        let fits = "x".repeat(MAX_DATAGRAM - "E_BIG\nv::\n\n".len());
        let too_big = "x".repeat(fits.len() + 1);
        d.raise(e, Params::new().str("v", &too_big).unwrap())
            .unwrap();
        d.raise(e, Params::new().str("v", &fits).unwrap()).unwrap();
        d.raise(e, seq(1)).unwrap();
        assert!(udp.wait_for(2, LIMIT) && unix.wait_for(2, LIMIT));
        let stats = d.shutdown();
        for r in [&udp, &unix] {
            let got = r.datagrams();
            assert_eq!(got[0].len(), MAX_DATAGRAM, "{backend:?} {}", r.target);
            assert_eq!(got[1], encoded(Format::Line, "E_BIG", &seq(1)));
            let c = stats.target(&r.target).unwrap();
            assert_eq!((c.raised, c.failed_oversize, c.sent), (3, 1, 2), "{c:?}");
        }
        assert!(stats.is_balanced());
    }
}

/// Params decoded from `jsonrpc` may hold a key the line format cannot carry: raised again,
/// the event reaches a `jsonrpc` subscriber and is counted as failed (not oversize) for a
/// `line` one, on both fast paths (sole subscriber) and the shared one.
#[test]
fn decoded_params_a_line_subscriber_cannot_take_are_counted_and_reach_jsonrpc_ones() {
    use event_datagram::decode::{decode, DecodeFormat};
    let d = br#"{"jsonrpc":"2.0","method":"E_FWD","params":{"it's":1}}"#;
    let params = decode(d, DecodeFormat::Jsonrpc).unwrap()[0]
        .params()
        .clone();
    for backend in backends() {
        let (line, json, alone) = (Receiver::udp(), Receiver::udp(), Receiver::udp());
        let dispatcher = Dispatcher::start(config(backend)).unwrap();
        let shared = dispatcher.publish("E_FWD").unwrap();
        dispatcher
            .subscribe(shared, line.target.clone(), Expiry::Never)
            .unwrap();
        dispatcher
            .subscribe_with_format(shared, json.target.clone(), Expiry::Never, Format::Jsonrpc)
            .unwrap();
        let sole = dispatcher.publish("E_ALONE").unwrap();
        dispatcher
            .subscribe(sole, alone.target.clone(), Expiry::Never)
            .unwrap();
        dispatcher.raise(shared, params.clone()).unwrap();
        dispatcher.raise(sole, params.clone()).unwrap();
        dispatcher.raise(shared, seq(1)).unwrap();
        assert!(json.wait_for(2, LIMIT) && line.wait_for(1, LIMIT));
        assert_eq!(json.datagrams()[0], &d[..], "{backend:?}");
        let stats = dispatcher.shutdown();
        for (r, raised, sent) in [(&line, 2, 1), (&json, 2, 2), (&alone, 1, 0)] {
            let c = stats.target(&r.target).unwrap();
            let want = (raised, sent, raised - sent, 0);
            let got = (c.raised, c.sent, c.failed_other, c.failed_oversize);
            assert_eq!(got, want, "{backend:?} {}: {c:?}", r.target);
        }
        assert!(stats.is_balanced());
    }
}

#[test]
fn four_producers_of_100k_events_each_are_accounted_exactly() {
    for backend in backends() {
        let dir = TempDir::new("producers");
        let unix = Receiver::unix(&dir.join("sink"));
        let udp = Receiver::udp();
        let d = Dispatcher::start(config(backend)).unwrap();
        let e = d.publish("E_LOAD").unwrap();
        d.subscribe(e, unix.target.clone(), Expiry::Never).unwrap();
        d.subscribe(e, udp.target.clone(), Expiry::Never).unwrap();
        let producers: Vec<_> = (0..4)
            .map(|p| {
                let publisher = d.publisher();
                std::thread::spawn(move || {
                    for i in 0..100_000 {
                        let params = Params::new().int("p", p).unwrap().int("i", i).unwrap();
                        publisher.raise(e, params).unwrap();
                    }
                })
            })
            .collect();
        // The identity holds at any moment, not only at the end.
        for _ in 0..5 {
            let s = d.stats();
            assert!(s.is_balanced(), "{backend:?}: {s:?}");
            std::thread::sleep(Duration::from_millis(50));
        }
        for p in producers {
            join_within(p, LIMIT, "a producer");
        }
        let stats = d.shutdown();
        assert!(stats.is_balanced(), "{stats:?}");
        assert_eq!(stats.events.raised, 400_000);
        assert_eq!(stats.events.dispatched, 400_000);
        assert_eq!(stats.events.pending, 0);
        for r in [&unix, &udp] {
            let c = stats.target(&r.target).unwrap();
            assert_eq!(c.raised, 400_000);
            assert_eq!(c.pending, 0);
        }
        // UNIX datagrams are never lost by the kernel: all sent ones arrive, in order per producer.
        let c = stats.target(&unix.target).unwrap();
        assert_eq!(c.sent + c.dropped(), 400_000, "{c:?}");
        assert!(unix.wait_for(c.sent as usize, LIMIT));
        let mut last = [-1i64; 4];
        for dgram in unix.datagrams() {
            let s = std::str::from_utf8(&dgram).unwrap();
            let mut lines = s.lines().skip(1);
            let p: usize = lines.next().unwrap()[3..].parse().unwrap();
            let i: i64 = lines.next().unwrap()[3..].parse().unwrap();
            assert!(i > last[p], "producer {p}: {i} after {}", last[p]);
            last[p] = i;
        }
        assert!(last.iter().all(|&l| l >= 0), "{backend:?}: {last:?}");
    }
}

/// How the producers of [`shutdown_while_producers_raise_counts_exactly_what_it_told_them`]
/// raise.
#[derive(Clone, Copy, Debug)]
enum Raising {
    /// `raise` under the `block` policy: never refused for room.
    Blocking,
    /// `raise` under the `drop` policy, into a 4-slot queue: refused often.
    Dropping,
    /// `raise_timeout` of 1 us under the `block` policy, into a 4-slot queue.
    TimingOut,
}

#[test]
fn shutdown_while_producers_raise_counts_exactly_what_it_told_them() {
    for backend in backends() {
        for raising in [Raising::Blocking, Raising::Dropping, Raising::TimingOut] {
            for _ in 0..5 {
                shutdown_while_producers_raise(backend, raising);
            }
        }
    }
}

/// Shuts a dispatcher down while three producers raise; the final stats must hold exactly the
/// events they were told were accepted, and exactly the drops they were told of (a producer
/// that found the queue full as it closed is told `ShutDown`, and that is not counted).
fn shutdown_while_producers_raise(backend: BackendChoice, raising: Raising) {
    let udp = Receiver::udp();
    let small_queue = DispatcherConfig {
        queue_capacity: 4,
        queue_full: QueuePolicy::Drop,
        ..config(backend)
    };
    let d = Dispatcher::start(match raising {
        Raising::Blocking => config(backend),
        Raising::Dropping => small_queue,
        Raising::TimingOut => DispatcherConfig {
            queue_full: QueuePolicy::Block,
            ..small_queue
        },
    })
    .unwrap();
    let e = d.publish("E_RACE").unwrap();
    d.subscribe(e, udp.target.clone(), Expiry::Never).unwrap();
    let started = Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let producers: Vec<_> = (0..3)
        .map(|p| {
            let (publisher, started) = (d.publisher(), Arc::clone(&started));
            std::thread::spawn(move || {
                let (mut accepted, mut refused) = (0u64, 0u64);
                loop {
                    let params = Params::new().int("p", p).unwrap();
                    let raised = match raising {
                        Raising::TimingOut => {
                            publisher.raise_timeout(e, params, Duration::from_micros(1))
                        }
                        _ => publisher.raise(e, params),
                    };
                    match raised {
                        Ok(()) => accepted += 1,
                        Err(RaiseError::QueueFull(..)) => refused += 1,
                        Err(RaiseError::ShutDown(..)) => return (accepted, refused),
                        Err(err) => panic!("{err:?}"),
                    }
                    if accepted + refused == 1 {
                        started.fetch_add(1, Ordering::Relaxed);
                    }
                }
            })
        })
        .collect();
    // Each has raised, and raises on.
    assert!(wait_until(LIMIT, || started.load(Ordering::Relaxed) == 3));
    // Closes intake while all three are raising, some halfway through a raise.
    let stats = d.shutdown();
    let (accepted, refused) = producers
        .into_iter()
        .map(|p| join_within(p, LIMIT, "a producer"))
        .fold((0, 0), |(a, r), (pa, pr)| (a + pa, r + pr));
    let case = format!("{backend:?}, {raising:?}");
    assert!(accepted > 0, "{case}");
    assert!(stats.is_balanced(), "{case}: {stats:?}");
    assert_eq!(
        stats.events.dropped_queue_full, refused,
        "{case}: {stats:?}"
    );
    assert_eq!(stats.events.raised, accepted + refused, "{case}: {stats:?}");
    assert_eq!(stats.events.dispatched, accepted, "{case}: {stats:?}");
    assert_eq!(stats.events.pending, 0, "{case}: {stats:?}");
    let c = stats.target(&udp.target).unwrap();
    assert_eq!((c.raised, c.pending), (accepted, 0), "{case}: {c:?}");
}

#[test]
fn a_full_queue_with_the_drop_policy_hands_the_event_back_and_counts_it() {
    for backend in backends() {
        let r = Receiver::udp();
        let cfg = DispatcherConfig {
            queue_capacity: 4,
            queue_full: QueuePolicy::Drop,
            ..config(backend)
        };
        let d = Dispatcher::start(cfg).unwrap();
        let e = d.publish("E_DROP").unwrap();
        d.subscribe(e, r.target.clone(), Expiry::Never).unwrap();
        let mut refused = 0u64;
        for i in 0..20_000 {
            match d.raise(e, seq(i)) {
                Ok(()) => {}
                Err(RaiseError::QueueFull(id, params)) => {
                    assert_eq!((id, params), (e, seq(i)), "the event comes back whole");
                    refused += 1;
                }
                Err(other) => panic!("{other}"),
            }
        }
        let stats = d.shutdown();
        assert!(refused > 0, "{backend:?}: a 4-slot queue never filled");
        assert_eq!(stats.events.dropped_queue_full, refused);
        assert_eq!(stats.events.raised, 20_000);
        assert_eq!(stats.events.dispatched, 20_000 - refused);
        assert!(stats.is_balanced());
    }
}

#[test]
fn shutdown_flushes_everything_queued() {
    for backend in backends() {
        let dir = TempDir::new("flush");
        let r = Receiver::unix(&dir.join("sink"));
        // Room for the whole burst: this test is about shutdown, not about the retry bound.
        let d = Dispatcher::start(DispatcherConfig {
            retry_queue: 5_000,
            ..config(backend)
        })
        .unwrap();
        let e = d.publish("E_FLUSH").unwrap();
        d.subscribe(e, r.target.clone(), Expiry::Never).unwrap();
        for i in 0..5_000 {
            d.raise(e, seq(i)).unwrap();
        }
        let publisher = d.publisher();
        let stats = d.shutdown();
        let c = stats.target(&r.target).unwrap();
        assert_eq!((c.raised, c.sent, c.pending), (5_000, 5_000, 0), "{c:?}");
        assert!(r.wait_for(5_000, LIMIT));
        assert!(matches!(
            publisher.raise(e, seq(0)),
            Err(RaiseError::ShutDown(..))
        ));
    }
}

/// Dropping the dispatcher does what `shutdown` does (issue 3, item 6): intake stops (a
/// publisher is told `ShutDown`) and everything queued is sent before the drop returns.
#[test]
fn dropping_the_dispatcher_flushes_everything_queued_like_shutdown() {
    for backend in backends() {
        let dir = TempDir::new("drop");
        let r = Receiver::unix(&dir.join("sink"));
        let d = Dispatcher::start(DispatcherConfig {
            retry_queue: 5_000,
            ..config(backend)
        })
        .unwrap();
        let e = d.publish("E_DROP_FLUSH").unwrap();
        d.subscribe(e, r.target.clone(), Expiry::Never).unwrap();
        for i in 0..5_000 {
            d.raise(e, seq(i)).unwrap();
        }
        let (publisher, handle) = (d.publisher(), d.stats_handle());
        drop(d);
        assert!(
            matches!(publisher.raise(e, seq(0)), Err(RaiseError::ShutDown(..))),
            "{backend:?}: intake still open after the drop"
        );
        // The reactor has finished (it answers no more): what arrives was sent before.
        assert!(
            handle.stats().is_none(),
            "{backend:?}: the drop returned before the reactor finished"
        );
        assert!(
            r.wait_for(5_000, LIMIT),
            "{backend:?}: {} of 5000",
            r.count()
        );
        let expected: Vec<Vec<u8>> = (0..5_000)
            .map(|i| encoded(Format::Line, "E_DROP_FLUSH", &seq(i)))
            .collect();
        assert!(
            r.datagrams() == expected,
            "{backend:?}: in order, none lost"
        );
    }
}

#[test]
fn events_nobody_subscribed_are_counted_and_foreign_ids_refused() {
    let d = Dispatcher::start(config(BackendChoice::Syscall)).unwrap();
    let other = Dispatcher::start(config(BackendChoice::Syscall)).unwrap();
    let e = d.publish("E_NOBODY").unwrap();
    let foreign = other.publish("E_NOBODY").unwrap();
    d.raise(e, Params::new()).unwrap();
    assert!(matches!(
        d.raise(foreign, Params::new()),
        Err(RaiseError::ForeignEvent(..))
    ));
    let stats = d.shutdown();
    assert_eq!((stats.events.raised, stats.events.unsubscribed), (1, 1));
}

/// Run by CI under `nouring` (io_uring denied by seccomp, as in Docker) with
/// `EVDGRAM_EXPECT_NO_URING=1`: `auto` falls back, forcing `uring` is a clear error.
#[test]
fn auto_falls_back_where_io_uring_is_denied() {
    if std::env::var_os(event_datagram::BACKEND_ENV).is_some() {
        eprintln!(
            "SKIPPED: {} chooses the backend",
            event_datagram::BACKEND_ENV
        );
        return;
    }
    let denied = std::env::var_os("EVDGRAM_EXPECT_NO_URING").is_some();
    let auto = Dispatcher::start(config(BackendChoice::Auto)).unwrap();
    let forced = Dispatcher::start(config(BackendChoice::Uring));
    assert!(
        !denied || forced.is_err(),
        "io_uring was expected to be denied"
    );
    match forced {
        Ok(_) => assert_eq!(auto.backend(), Backend::Uring),
        // Denied (by seccomp in CI's run, or by this machine): the fallback, and it sends.
        Err(err) => {
            let err = err.to_string();
            assert!(err.contains("uring backend is unavailable"), "{err}");
            assert_eq!(auto.backend(), Backend::Syscall);
            let r = Receiver::udp();
            let e = auto.publish("E_FALLBACK").unwrap();
            auto.subscribe(e, r.target.clone(), Expiry::Never).unwrap();
            auto.raise(e, seq(7)).unwrap();
            assert!(r.wait_for(1, LIMIT));
        }
    }
}

/// Raises this process's soft open-files limit to `wanted` if its hard limit allows (a process
/// setting, nothing system-wide; other tests of this binary then start their uring dispatchers
/// with a larger fixed-file table, which changes nothing they check). Whether it is now at
/// least `wanted`.
fn open_files_at_least(wanted: u64) -> bool {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live rlimit the kernel writes into.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return false;
    }
    if lim.rlim_cur >= wanted {
        return true;
    }
    if lim.rlim_max < wanted {
        return false;
    }
    lim.rlim_cur = wanted;
    // SAFETY: as above; the kernel only reads it.
    unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &lim) == 0 }
}

/// io_uring's fixed-file table holds 4 096 sockets at most; targets past it send through
/// their plain fds, and must be delivered to like the others.
#[test]
fn targets_past_the_fixed_file_table_get_their_datagrams_too() {
    const TARGETS: usize = 4_100;
    // A receiver and a sending socket per target, and what else the test binary holds open.
    if !open_files_at_least(2 * TARGETS as u64 + 1_024) {
        eprintln!("SKIPPED: the open-files limit cannot be raised to hold {TARGETS} targets");
        return;
    }
    for backend in backends() {
        let dir = TempDir::new("table");
        let receivers: Vec<(Target, std::os::unix::net::UnixDatagram)> = (0..TARGETS)
            .map(|i| {
                let path = dir.join(&i.to_string());
                let socket = std::os::unix::net::UnixDatagram::bind(&path).unwrap();
                socket.set_nonblocking(true).unwrap();
                let target = Target::parse(&format!("unix:{}", path.display())).unwrap();
                (target, socket)
            })
            .collect();
        let d = Dispatcher::start(config(backend)).unwrap();
        let e = d.publish("E_MANY").unwrap();
        for (target, _) in &receivers {
            d.subscribe(e, target.clone(), Expiry::Never).unwrap();
        }
        // No more than a UNIX receiver's queue holds: nothing waits for a reader.
        let n = unix_qlen().min(3) as i64;
        for i in 0..n {
            d.raise(e, seq(i)).unwrap();
        }
        let stats = d.shutdown();
        let expected: Vec<Vec<u8>> = (0..n)
            .map(|i| encoded(Format::Line, "E_MANY", &seq(i)))
            .collect();
        let mut buf = vec![0; 1024];
        for (i, (target, socket)) in receivers.iter().enumerate() {
            let c = stats.target(target).unwrap();
            assert_eq!(
                (c.sent, c.failed()),
                (n as u64, 0),
                "{backend:?} target {i}: {c:?}"
            );
            // Sent on a UNIX socket is in the receiver's queue already.
            let got: Vec<Vec<u8>> =
                std::iter::from_fn(|| socket.recv(&mut buf).ok().map(|n| buf[..n].to_vec()))
                    .collect();
            assert!(got == expected, "{backend:?} target {i}: {got:?}");
        }
        assert!(stats.is_balanced(), "{stats:?}");
    }
}

/// `Duration::MAX` is the obvious way to say "wait as long as it takes": it was an overflow.
#[test]
fn raise_timeout_of_duration_max_waits_without_a_deadline() {
    let dir = TempDir::new("patient");
    let cfg = DispatcherConfig {
        queue_capacity: 16,
        ..config(BackendChoice::Syscall)
    };
    let (d, e, slow) = stalled(&dir, cfg, "E_PATIENT");
    // The receiver reads nothing: its queue and the target's bound fill, intake pauses,
    // then the channel fills.
    let publisher = d.publisher();
    let mut accepted = 0;
    while publisher
        .raise_timeout(e, seq(accepted), Duration::from_secs(1))
        .is_ok()
    {
        accepted += 1;
        assert!(accepted < 100_000, "the channel never filled");
    }
    let patient = std::thread::spawn(move || {
        publisher
            .raise_timeout(e, seq(-1), Duration::MAX)
            .map_err(|err| err.to_string())
    });
    std::thread::sleep(Duration::from_millis(500));
    assert!(
        !patient.is_finished(),
        "a raise without a deadline gave up while the channel stayed full"
    );
    slow.pause(false);
    join_within(patient, LIMIT, "the patient producer").expect("room once the receiver reads");
    let stats = d.shutdown();
    assert_eq!(stats.events.dispatched, accepted as u64 + 1, "{stats:?}");
    assert_eq!(stats.events.dropped_queue_full, 1, "{stats:?}");
}

/// A subscription ends when `now > subscribed_at + expiry` (DESIGN): at its last instant it is
/// still listed and still gets events; a nanosecond later it has neither.
#[test]
fn a_subscription_is_live_at_its_last_instant_and_ends_right_after() {
    for backend in backends() {
        let clock = ManualClock::new();
        let r = Receiver::udp();
        let d = Dispatcher::start_with_clock(config(backend), Arc::new(clock.clone())).unwrap();
        let e = d.publish("E_EDGE").unwrap();
        d.subscribe(e, r.target.clone(), Expiry::After(Duration::from_secs(10)))
            .unwrap();
        clock.advance(Duration::from_secs(10));
        let listed = d.registry().subscribers(e).unwrap();
        assert_eq!(listed.len(), 1, "{backend:?}: gone at its last instant");
        assert_eq!(listed[0].remaining, Some(Duration::ZERO));
        assert_eq!(d.registry().subscription_count(), 1);
        d.raise(e, seq(1)).unwrap();
        assert!(
            r.wait_for(1, LIMIT),
            "{backend:?}: none at the last instant"
        );
        clock.advance(Duration::from_nanos(1));
        assert_eq!(d.registry().subscription_count(), 0);
        d.raise(e, seq(2)).unwrap();
        assert!(d.registry().subscribers(e).unwrap().is_empty());
        let stats = d.shutdown();
        assert_eq!(
            (stats.totals.raised, stats.events.unsubscribed),
            (1, 1),
            "{backend:?}: {stats:?}"
        );
        assert_eq!(
            r.datagrams(),
            vec![encoded(Format::Line, "E_EDGE", &seq(1))]
        );
    }
}

/// A UNIX receiver that goes away while its target holds queued datagrams: the one refused and
/// every one behind it are counted unreachable (the receiver is gone), not as other failures.
#[test]
fn datagrams_held_for_a_unix_receiver_that_goes_away_are_counted_unreachable() {
    for backend in backends() {
        let dir = TempDir::new("gone");
        let path = dir.join("sink");
        let r = Receiver::unix(&path);
        let target = r.target.clone();
        let d = Dispatcher::start(config(backend)).unwrap();
        let e = d.publish("E_GONE").unwrap();
        d.subscribe(e, target.clone(), Expiry::Never).unwrap();
        r.pause(true);
        let n = unix_qlen() as u64 + 50;
        for i in 0..n {
            d.raise(e, seq(i as i64)).unwrap();
        }
        let held = || {
            let stats = d.stats();
            let c = stats.target(&target);
            c.is_some_and(|c| c.raised == n && c.pending > 1)
        };
        assert!(wait_until(LIMIT, held), "{backend:?}: nothing held");
        drop(r);
        std::fs::remove_file(&path).unwrap();
        let settled = || d.stats().target(&target).unwrap().pending == 0;
        assert!(wait_until(LIMIT, settled), "{backend:?}: still held");
        let stats = d.shutdown();
        let c = stats.target(&target).unwrap();
        assert_eq!(c.failed_other, 0, "{backend:?}: {c:?}");
        assert!(c.failed_unreachable > 1, "{backend:?}: {c:?}");
        assert_eq!(c.sent + c.failed_unreachable, n, "{backend:?}: {c:?}");
    }
}

/// A lifetime longer than the clock can count (`u64::MAX` seconds) is as good as never. The
/// reactor, its intake paused behind a stalled receiver, sleeps until the next expiry, and
/// working out when that is overflowed an `Instant`: the reactor panicked, and the dispatcher
/// with it.
#[test]
fn a_lifetime_longer_than_the_clock_counts_does_not_stop_the_reactor() {
    for backend in backends() {
        let dir = TempDir::new("forever");
        let cfg = DispatcherConfig {
            retry_queue: 16,
            ..config(backend)
        };
        let forever = Expiry::After(Duration::from_secs(u64::MAX));
        let (d, e, slow) = stalled_for(&dir, cfg, "E_FOREVER", forever);
        // The target's queue full: intake pauses and the reactor sleeps (each look at the
        // stats wakes it, and it sleeps again), so the next events stay in the channel.
        let n = unix_qlen() as i64 + 64;
        raise_until_held(&d, e, &slow, n);
        for i in n..n + 8 {
            d.raise(e, seq(i)).unwrap();
        }
        // Paused: events wait in the channel while the target holds some (8 or more wait: with
        // a longer UNIX queue, some of the first ones too). Each look wakes the reactor, which
        // then sleeps again until the subscription's end, the instant that overflowed.
        let paused = || {
            let stats = d.stats();
            let held = stats.target(&slow.target).is_some_and(|c| c.pending > 0);
            held && stats.events.pending >= 8
        };
        assert!(
            wait_until(LIMIT, paused),
            "{backend:?}: intake never paused: {:?}",
            d.stats()
        );
        let n = n + 8;
        slow.pause(false);
        assert!(slow.wait_for(n as usize, LIMIT), "{backend:?}");
        let stats = d.shutdown();
        assert_eq!(
            stats.target(&slow.target).unwrap().sent,
            n as u64,
            "{backend:?}"
        );
    }
}

/// A target whose subscriptions have all ended is let go when they end: its socket closed and
/// its counters moved to the totals, without waiting for a call that changes or lists
/// subscriptions (before, it kept both until one came, and one whose receiver was gone was
/// reconnected meanwhile).
#[test]
fn a_target_is_let_go_when_its_subscriptions_end() {
    for backend in backends() {
        let r = Receiver::udp();
        let d = Dispatcher::start(config(backend)).unwrap();
        let e = d.publish("E_BRIEF").unwrap();
        let brief = Expiry::After(Duration::from_secs(2));
        d.subscribe(e, r.target.clone(), brief).unwrap();
        d.raise(e, seq(1)).unwrap();
        assert!(r.wait_for(1, LIMIT), "{backend:?}");
        assert!(d.stats().target(&r.target).is_some(), "{backend:?}");
        let gone = || d.stats().target(&r.target).is_none();
        assert!(wait_until(LIMIT, gone), "{backend:?}: still held");
        let stats = d.shutdown();
        assert_eq!(stats.totals.sent, 1, "{backend:?}");
    }
}

/// A target whose receiver takes nothing, its subscription ended, gets as long as a shutdown
/// waits (`shutdown_timeout_ms`) to send what it holds; then that is dropped, counted, and the
/// target let go (it kept its socket and buffers until the dispatcher shut down).
#[test]
fn a_stalled_target_whose_subscription_ended_is_let_go_after_the_shutdown_timeout() {
    for backend in backends() {
        let dir = TempDir::new("retire");
        let cfg = DispatcherConfig {
            shutdown_timeout_ms: 300,
            ..config(backend)
        };
        let (d, e, slow) = stalled(&dir, cfg, "E_RETIRE");
        let n = unix_qlen() as i64 + 50;
        raise_until_held(&d, e, &slow, n);
        d.unsubscribe(e, &slow.target).unwrap();
        let gone = || d.stats().target(&slow.target).is_none();
        assert!(wait_until(LIMIT, gone), "{backend:?}: still held");
        let stats = d.shutdown();
        let t = stats.totals;
        assert!(t.dropped_shutdown > 0, "{backend:?}: {t:?}");
        assert_eq!(t.sent + t.dropped_shutdown, n as u64, "{backend:?}: {t:?}");
        assert!(stats.is_balanced(), "{backend:?}: {stats:?}");
    }
}

/// Unsubscribing ends exactly the named target's subscription: the event's others, to the
/// same transport too, keep theirs; a target never subscribed is an error and ends nothing.
#[test]
fn unsubscribe_ends_only_the_named_targets_subscription() {
    let registry = Registry::new(Arc::new(ManualClock::new()));
    let e = registry.publish("E_UNSUB").unwrap();
    let [a, b, c]: [Target; 3] =
        ["udp:127.0.0.1:9", "udp:127.0.0.1:10", "udp:127.0.0.1:11"].map(|s| s.parse().unwrap());
    for t in [&a, &b] {
        registry
            .subscribe(e, t.clone(), Expiry::Never, Format::Line)
            .unwrap();
    }
    let listed = || -> Vec<Target> {
        let subs = registry.subscribers(e).unwrap();
        subs.into_iter().map(|s| s.target).collect()
    };
    assert!(matches!(
        registry.unsubscribe(e, &c),
        Err(RegistryError::NotSubscribed { .. })
    ));
    assert_eq!(listed(), [a.clone(), b.clone()]);
    registry.unsubscribe(e, &b).unwrap();
    assert_eq!(listed(), [a]);
}

/// A target whose receiver is missing is tried again at least once a second however long it
/// has been missing: a receiver that comes after a few seconds gets events within about one.
#[test]
fn a_receiver_that_comes_after_seconds_is_reached_within_about_a_second() {
    // The reconnect schedule is the reactor's, whatever the backend.
    let backend = backends()[0];
    let dir = TempDir::new("late");
    let path = dir.join("sink");
    let target: Target = format!("unix:{}", path.display()).parse().unwrap();
    let d = Dispatcher::start(config(backend)).unwrap();
    let e = d.publish("E_LATE").unwrap();
    d.subscribe(e, target, Expiry::Never).unwrap();
    // Failed reconnects double the wait: 10 ms, 20 ms, ... up to 1 s, not beyond. Doubled
    // without that cap, the attempt after 6 s would come at 10.2 s: over 4 s after the
    // receiver, against at most 1 s (the bound below leaves room for a busy machine).
    std::thread::sleep(Duration::from_millis(6_000));
    let late = Receiver::unix(&path);
    let came = std::time::Instant::now();
    let mut n = 0;
    let reached = wait_until(Duration::from_secs(5), || {
        d.raise(e, seq(n)).unwrap();
        n += 1;
        std::thread::sleep(Duration::from_millis(5));
        late.count() > 0
    });
    assert!(reached, "{backend:?}: never reached");
    let waited = came.elapsed();
    assert!(
        waited < Duration::from_millis(3_000),
        "{backend:?}: reached {waited:?} after the receiver came"
    );
    d.shutdown();
}
