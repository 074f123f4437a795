//! Coalescing: several events per datagram, for both backends and both formats.

use std::time::{Duration, Instant};

use event_datagram::decode::{decode, DecodeFormat};
use event_datagram::{
    BackendChoice, Coalesce, Dispatcher, DispatcherConfig, Event, EventId, Expiry, Format, Params,
    QueuePolicy, SubscriptionOptions,
};

use crate::support::{backends, wait_until, Receiver, TempDir};

const LIMIT: Duration = Duration::from_secs(20);

fn events_in(r: &Receiver) -> Vec<Event> {
    r.datagrams()
        .iter()
        .flat_map(|d| decode(d, DecodeFormat::Auto).unwrap())
        .collect()
}

fn params(i: usize, pad: usize) -> Params {
    Params::new()
        .str("seq", &i.to_string())
        .unwrap()
        .str("pad", &"p".repeat(pad))
        .unwrap()
}

/// A dispatcher on `backend` with `E_TEST` published and each receiver subscribed to it in
/// `format`, coalescing up to `max_bytes` or `delay`.
fn coalescing_to(
    backend: BackendChoice,
    receivers: &[&Receiver],
    format: Format,
    max_bytes: usize,
    delay: Duration,
) -> (Dispatcher, EventId) {
    let d = Dispatcher::start(DispatcherConfig {
        backend,
        ..Default::default()
    })
    .unwrap();
    let e = d.publish("E_TEST").unwrap();
    let coalesce = Some(Coalesce::new(max_bytes, delay).unwrap());
    for r in receivers {
        let options = SubscriptionOptions { format, coalesce };
        d.subscribe_with(e, r.target.clone(), Expiry::Never, options)
            .unwrap();
    }
    (d, e)
}

/// Publishes `name` on `d` and subscribes `r` to it in `line`, coalescing up to `max_bytes` or
/// `delay`.
fn publish_coalesced(
    d: &Dispatcher,
    name: &str,
    r: &Receiver,
    max_bytes: usize,
    delay: Duration,
) -> EventId {
    let e = d.publish(name).unwrap();
    let options = SubscriptionOptions {
        format: Format::Line,
        coalesce: Some(Coalesce::new(max_bytes, delay).unwrap()),
    };
    d.subscribe_with(e, r.target.clone(), Expiry::Never, options)
        .unwrap();
    e
}

#[test]
fn coalesced_events_arrive_packed_whole_and_in_order_in_both_formats() {
    for backend in backends() {
        for format in [Format::Line, Format::Jsonrpc] {
            let dir = TempDir::new("coalesce");
            let receivers = [Receiver::udp(), Receiver::unix(&dir.join("sink"))];
            let [a, b] = &receivers;
            let (d, e) = coalescing_to(backend, &[a, b], format, 1_400, Duration::from_millis(1));
            let total = 2_000;
            for window in (0..total).step_by(250) {
                for i in window..window + 250 {
                    d.raise(e, params(i, i % 40)).unwrap();
                }
                for r in &receivers {
                    let arrived = wait_until(LIMIT, || events_in(r).len() >= window + 250);
                    assert!(arrived, "{backend:?} {format} {}", r.target);
                }
            }
            let stats = d.shutdown();
            let expected: Vec<Event> = (0..total)
                .map(|i| {
                    let p = params(i, i % 40);
                    Event::from_parts(event_datagram::EventName::new("E_TEST").unwrap(), p)
                })
                .collect();
            for r in &receivers {
                assert!(
                    events_in(r) == expected,
                    "{backend:?} {format} {}: events differ",
                    r.target
                );
                let datagrams = r.datagrams();
                assert!(datagrams.iter().all(|d| d.len() <= 1_400));
                let c = stats.target(&r.target).unwrap();
                assert_eq!(c.sent, total as u64, "{c:?}");
                assert_eq!(c.datagrams, datagrams.len() as u64, "{c:?}");
                assert!(
                    c.datagrams * 5 < c.sent,
                    "{backend:?} {format}: hardly packed: {c:?}"
                );
                assert!(c.is_balanced());
            }
        }
    }
}

/// One subscriber: the reactor encodes events straight into the open datagram (its fast path);
/// the result must be the same as through the general path.
#[test]
fn a_single_coalesced_subscriber_gets_every_event_packed_in_order() {
    for backend in backends() {
        for format in [Format::Line, Format::Jsonrpc] {
            let r = Receiver::udp();
            let (d, e) = coalescing_to(backend, &[&r], format, 1_400, Duration::from_millis(1));
            let total = 2_000;
            for window in (0..total).step_by(250) {
                for i in window..window + 250 {
                    d.raise(e, params(i, i % 40)).unwrap();
                }
                let arrived = wait_until(LIMIT, || events_in(&r).len() >= window + 250);
                assert!(arrived, "{backend:?} {format}");
            }
            let stats = d.shutdown();
            let expected: Vec<Event> = (0..total)
                .map(|i| {
                    let p = params(i, i % 40);
                    Event::from_parts(event_datagram::EventName::new("E_TEST").unwrap(), p)
                })
                .collect();
            assert!(
                events_in(&r) == expected,
                "{backend:?} {format}: events differ"
            );
            let datagrams = r.datagrams();
            assert!(datagrams.iter().all(|d| d.len() <= 1_400));
            let c = stats.target(&r.target).unwrap();
            assert_eq!((c.sent, c.raised), (total as u64, total as u64), "{c:?}");
            assert_eq!(c.datagrams, datagrams.len() as u64, "{c:?}");
            assert!(c.datagrams * 5 < c.sent, "{backend:?} {format}: {c:?}");
            assert!(c.is_balanced());
        }
    }
}

#[test]
fn a_lone_coalesced_event_waits_for_its_delay_then_goes() {
    for backend in backends() {
        let r = Receiver::udp();
        let (d, e) = coalescing_to(
            backend,
            &[&r],
            Format::Line,
            65_457,
            Duration::from_millis(1_500),
        );
        let start = Instant::now();
        d.raise(e, params(1, 0)).unwrap();
        // Routed (stats may be answered before the reactor reads the event), and held.
        assert!(wait_until(LIMIT, || d
            .stats()
            .target(&r.target)
            .is_some_and(|c| c.raised == 1)));
        std::thread::sleep(Duration::from_millis(100));
        assert_eq!(r.count(), 0, "{backend:?}: sent before its delay");
        let c = *d.stats().target(&r.target).unwrap();
        assert_eq!((c.raised, c.pending), (1, 1), "{c:?}");
        assert!(r.wait_for(1, LIMIT));
        assert!(
            start.elapsed() >= Duration::from_millis(1_400),
            "{:?}",
            start.elapsed()
        );
        let stats = d.shutdown();
        assert_eq!(stats.target(&r.target).unwrap().sent, 1);
    }
}

#[test]
fn an_event_over_max_bytes_goes_alone_and_the_order_is_kept() {
    for backend in backends() {
        let r = Receiver::udp();
        let (d, e) = coalescing_to(backend, &[&r], Format::Line, 200, Duration::from_millis(1));
        for (i, pad) in [(0, 1), (1, 1), (2, 500), (3, 1)] {
            d.raise(e, params(i, pad)).unwrap();
        }
        assert!(wait_until(LIMIT, || events_in(&r).len() == 4));
        let got: Vec<String> = events_in(&r)
            .iter()
            .map(|e| e.params().to_vec()[0].value.clone())
            .map(|v| format!("{v:?}"))
            .collect();
        assert_eq!(
            got,
            ["Str(\"0\")", "Str(\"1\")", "Str(\"2\")", "Str(\"3\")"]
        );
        let sizes: Vec<usize> = r.datagrams().iter().map(Vec::len).collect();
        assert!(
            sizes.iter().any(|&s| s > 500),
            "the big event went alone: {sizes:?}"
        );
        let stats = d.shutdown();
        let c = stats.target(&r.target).unwrap();
        assert_eq!(c.sent, 4);
        assert_eq!(c.datagrams, sizes.len() as u64);
    }
}

#[test]
fn coalescing_bounds_are_checked() {
    assert!(Coalesce::new(0, Duration::ZERO).is_err());
    assert!(Coalesce::new(65_458, Duration::ZERO).is_err());
    let err = Coalesce::new(70_000, Duration::ZERO)
        .unwrap_err()
        .to_string();
    assert!(err.contains("1 to 65457"), "{err}");
}

/// One UDP target subscribed to two events, one coalesced and one not: with GSO, the first
/// fills open datagrams and the second runs of datagrams, both straight from the raise. Each
/// kind must go out before the other takes over, so the target gets every event in the order
/// raised.
#[test]
fn gso_runs_and_coalesced_datagrams_to_one_target_keep_the_order_raised() {
    for backend in backends() {
        let r = Receiver::udp();
        let d = Dispatcher::start(DispatcherConfig {
            backend,
            udp_gso: true,
            ..Default::default()
        })
        .unwrap();
        let plain = d.publish("E_PLAIN").unwrap();
        let packed = d.publish("E_PACKED").unwrap();
        d.subscribe(plain, r.target.clone(), Expiry::Never).unwrap();
        let options = SubscriptionOptions {
            format: Format::Line,
            coalesce: Some(Coalesce::new(1_400, Duration::from_millis(1)).unwrap()),
        };
        d.subscribe_with(packed, r.target.clone(), Expiry::Never, options)
            .unwrap();
        // Stretches of each kind, of varying lengths, so that both the runs and the open
        // datagrams are cut short by the other kind.
        let kinds: Vec<bool> = (0..2_000).map(|i| (i / (3 + i % 7)) % 2 == 0).collect();
        let name = |coalesced: bool| if coalesced { "E_PACKED" } else { "E_PLAIN" };
        for window in (0..kinds.len()).step_by(200) {
            for (i, &coalesced) in kinds.iter().enumerate().skip(window).take(200) {
                let event = if coalesced { packed } else { plain };
                d.raise(event, params(i, 20)).unwrap();
            }
            let arrived = wait_until(LIMIT, || events_in(&r).len() >= window + 200);
            assert!(
                arrived,
                "{backend:?}: {} of {}",
                events_in(&r).len(),
                window + 200
            );
        }
        let stats = d.shutdown();
        let expected: Vec<Event> = kinds
            .iter()
            .enumerate()
            .map(|(i, &coalesced)| {
                let name = event_datagram::EventName::new(name(coalesced)).unwrap();
                Event::from_parts(name, params(i, 20))
            })
            .collect();
        assert!(events_in(&r) == expected, "{backend:?}: events differ");
        let c = stats.target(&r.target).unwrap();
        assert_eq!((c.raised, c.sent), (2_000, 2_000), "{c:?}");
        assert_eq!(c.datagrams, r.datagrams().len() as u64, "{c:?}");
        assert!(c.is_balanced());
    }
}

#[test]
fn each_event_leaves_within_its_own_subscriptions_delay_and_size_when_subscriptions_share_a_target()
{
    for backend in backends() {
        let r = Receiver::udp();
        let d = Dispatcher::start(DispatcherConfig {
            backend,
            ..Default::default()
        })
        .unwrap();
        let subscribe = |name: &str, max_bytes: usize, delay: Duration| {
            publish_coalesced(&d, name, &r, max_bytes, delay)
        };
        // One target, one open datagram: the slow subscription's event opens it, a fast one's
        // joins it, and the slow one's after that may not take it past the fast one's size.
        // The last event is a fast one's: a datagram of slow events alone would wait its minute.
        let slow = subscribe("E_SLOW", 65_457, Coalesce::MAX_DELAY);
        let fast = subscribe("E_FAST", 200, Duration::from_millis(10));
        d.raise(slow, params(0, 0)).unwrap();
        d.raise(fast, params(1, 0)).unwrap();
        for i in 2..=11 {
            d.raise(slow, params(i, 0)).unwrap();
        }
        d.raise(fast, params(12, 0)).unwrap();
        // Within LIMIT, not at the slow subscription's minute.
        assert!(
            wait_until(LIMIT, || events_in(&r).len() == 13),
            "{backend:?}: {} of 13 events arrived",
            events_in(&r).len()
        );
        let seqs: Vec<String> = events_in(&r)
            .iter()
            .map(|e| format!("{:?}", e.params().to_vec()[0].value))
            .collect();
        let want: Vec<String> = (0..=12).map(|i| format!("Str(\"{i}\")")).collect();
        assert_eq!(seqs, want, "{backend:?}: order");
        // Slow events alone (should this thread stall past the fast one's delay) may fill
        // more.
        let datagrams = r.datagrams();
        let with_fast: Vec<usize> = datagrams
            .iter()
            .filter(|d| {
                let events = decode(d, DecodeFormat::Auto).unwrap();
                events.iter().any(|e| e.name().as_str() == "E_FAST")
            })
            .map(Vec::len)
            .collect();
        assert!(
            with_fast.iter().all(|&s| s <= 200),
            "{backend:?}: a datagram holding E_FAST events grew past E_FAST's 200 bytes: {with_fast:?}"
        );
        let stats = d.shutdown();
        let c = stats.target(&r.target).unwrap();
        assert_eq!((c.sent, c.datagrams), (13, datagrams.len() as u64), "{c:?}");
    }
}

#[test]
fn a_target_unsubscribed_while_it_holds_a_coalesced_datagram_sends_it_then_closes() {
    for backend in backends() {
        let dir = TempDir::new("coalesce-retire");
        let r = Receiver::unix(&dir.join("sink"));
        let (d, e) = coalescing_to(backend, &[&r], Format::Line, 65_457, Duration::from_secs(2));
        d.raise(e, params(1, 0)).unwrap();
        // Routed: held in the open datagram for 2 s (the test is void if it stalls that long).
        assert!(wait_until(LIMIT, || d
            .stats()
            .target(&r.target)
            .is_some_and(|c| c.raised == 1)));
        d.unsubscribe(e, &r.target).unwrap();
        // Nothing lost: the held event still goes at its delay.
        assert!(
            r.wait_for(1, LIMIT),
            "{backend:?}: the held event never came"
        );
        // And then the target closes, with no other subscription change to prompt it.
        assert!(
            wait_until(LIMIT, || d.stats().target(&r.target).is_none()),
            "{backend:?}: the target stayed open: {:?}",
            d.stats().target(&r.target)
        );
        let stats = d.shutdown();
        assert_eq!(
            (stats.totals.raised, stats.totals.sent),
            (1, 1),
            "{stats:?}"
        );
    }
}

/// Through the general path (two subscribers): an event that brings the open datagram to
/// exactly `max_bytes` joins it; the next one opens another.
#[test]
fn events_that_fill_max_bytes_exactly_share_one_datagram() {
    for backend in backends() {
        let (a, b) = (Receiver::udp(), Receiver::udp());
        let one = |i| {
            let mut buf = vec![0; event_datagram::MAX_DATAGRAM];
            let n = Format::Line
                .encode("E_TEST", &params(i, 0), &mut buf)
                .unwrap();
            buf.truncate(n);
            buf
        };
        let max_bytes = 2 * one(0).len();
        let (d, e) = coalescing_to(
            backend,
            &[&a, &b],
            Format::Line,
            max_bytes,
            Coalesce::MAX_DELAY,
        );
        for i in 0..4 {
            d.raise(e, params(i, 0)).unwrap();
        }
        // Shutdown sends what is held.
        let stats = d.shutdown();
        let want = vec![[one(0), one(1)].concat(), [one(2), one(3)].concat()];
        for r in [&a, &b] {
            assert!(r.wait_for(2, LIMIT), "{backend:?}");
            assert_eq!(r.datagrams(), want, "{backend:?} {}", r.target);
            let c = stats.target(&r.target).unwrap();
            assert_eq!((c.sent, c.datagrams), (4, 2), "{c:?}");
        }
    }
}

/// An event of a subscription with a short delay that joins a datagram opened by one with a
/// long delay takes it out within its own delay, even when nothing else comes to fill it.
#[test]
fn a_short_delay_event_joining_a_long_delay_datagram_brings_its_departure_forward() {
    for backend in backends() {
        let r = Receiver::udp();
        let d = Dispatcher::start(DispatcherConfig {
            backend,
            ..Default::default()
        })
        .unwrap();
        let subscribe = |name: &str, delay: Duration| publish_coalesced(&d, name, &r, 1_400, delay);
        let slow = subscribe("E_SLOW", Coalesce::MAX_DELAY);
        let fast = subscribe("E_FAST", Duration::from_millis(10));
        d.raise(slow, params(0, 0)).unwrap();
        d.raise(fast, params(1, 0)).unwrap();
        // Well before the slow subscription's minute.
        assert!(
            r.wait_for(1, Duration::from_secs(5)),
            "{backend:?}: the fast event waited for the slow one's delay"
        );
        assert_eq!(
            events_in(&r).len(),
            2,
            "{backend:?}: one datagram, both events"
        );
        d.shutdown();
    }
}

/// Coalescing set in the configuration (a static subscription's `coalesce`, with its format)
/// takes effect as through the API: the subscription holds those limits, and its events
/// arrive packed, whole and in order, in both formats.
#[test]
fn coalescing_set_in_the_configuration_packs_events_in_both_formats() {
    for backend in backends() {
        for format in [Format::Line, Format::Jsonrpc] {
            let case = format!("{backend:?} {format}");
            let r = Receiver::udp();
            let yaml = format!(
                "dispatcher:\n  backend: {}\nsubscriptions:\n  - event: E_TEST\n    socket: \
                 \"{}\"\n    format: {format}\n    coalesce: {{max_bytes: 1400, max_delay_us: \
                 2000}}\n",
                format!("{backend:?}").to_lowercase(),
                r.target
            );
            let config = event_datagram::Config::from_yaml(&yaml).unwrap();
            let d = Dispatcher::from_config(&config).unwrap();
            let e = d.registry().lookup("E_TEST").unwrap();
            let listed = d.registry().subscribers(e).unwrap();
            let want = Coalesce::new(1_400, Duration::from_millis(2)).unwrap();
            assert_eq!(
                (listed[0].format, listed[0].coalesce),
                (format, Some(want)),
                "{case}"
            );
            let total = 1_000;
            for window in (0..total).step_by(250) {
                for i in window..window + 250 {
                    d.raise(e, params(i, i % 40)).unwrap();
                }
                let arrived = wait_until(LIMIT, || events_in(&r).len() >= window + 250);
                assert!(arrived, "{case}");
            }
            let stats = d.shutdown();
            let expected: Vec<Event> = (0..total)
                .map(|i| {
                    let name = event_datagram::EventName::new("E_TEST").unwrap();
                    Event::from_parts(name, params(i, i % 40))
                })
                .collect();
            assert!(events_in(&r) == expected, "{case}: events differ");
            let datagrams = r.datagrams();
            assert!(datagrams.iter().all(|d| d.len() <= 1_400), "{case}");
            let c = stats.target(&r.target).unwrap();
            assert_eq!(c.datagrams, datagrams.len() as u64, "{case}: {c:?}");
            assert!(c.datagrams * 5 < c.sent, "{case}: hardly packed: {c:?}");
        }
    }
}

/// While every subscription coalesces the reactor naps until its open datagram is due, not
/// woken by each event; the event that fills the datagram still wakes it: a datagram full
/// before its delay leaves then, not at its deadline.
#[test]
fn a_datagram_filled_while_the_reactor_naps_leaves_before_its_delay() {
    for backend in backends() {
        let r = Receiver::udp();
        let one = Format::Line
            .encode("E_TEST", &params(0, 0), &mut [0; 256])
            .unwrap();
        let (d, e) = coalescing_to(backend, &[&r], Format::Line, 3 * one, Coalesce::MAX_DELAY);
        for i in 0..9 {
            d.raise(e, params(i, 0)).unwrap();
            // The reactor takes each and naps before the next.
            std::thread::sleep(Duration::from_millis(5));
        }
        // The third datagram is full too, and goes when the tenth event does not fit.
        d.raise(e, params(9, 0)).unwrap();
        assert!(
            r.wait_for(3, Duration::from_secs(10)),
            "{backend:?}: full datagrams waited for their delay"
        );
        assert_eq!(events_in(&r).len(), 9, "{backend:?}");
        let c = *d.shutdown().target(&r.target).unwrap();
        assert_eq!((c.sent, c.datagrams), (10, 4), "{backend:?}");
    }
}

/// An event raised while the reactor naps leaves within its own delay of being raised: the
/// nap lasts at most the shortest delay of any subscription, and the events it held count
/// their delay from its start. Here a datagram due in a minute makes the reactor nap; an event
/// with a delay of 1 s raised 100 ms into the nap leaves 900 ms later (counted from when the
/// reactor woke, 1.9 s; with a nap to the datagram's deadline, a minute). The bound lies
/// half a second from either, for a slow machine.
#[test]
fn an_event_raised_while_the_reactor_naps_leaves_within_its_delay() {
    for backend in backends() {
        let (slow, fast) = (Receiver::udp(), Receiver::udp());
        let d = Dispatcher::start(DispatcherConfig {
            backend,
            ..Default::default()
        })
        .unwrap();
        let subscribe = |name: &str, r: &Receiver, delay: Duration| {
            publish_coalesced(&d, name, r, 65_457, delay)
        };
        let e_slow = subscribe("E_SLOW", &slow, Coalesce::MAX_DELAY);
        let e_fast = subscribe("E_FAST", &fast, Duration::from_secs(1));
        d.raise(e_slow, params(0, 0)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let raised = Instant::now();
        d.raise(e_fast, params(1, 0)).unwrap();
        assert!(fast.wait_for(1, LIMIT), "{backend:?}");
        let waited = raised.elapsed();
        assert!(
            waited < Duration::from_millis(1_400),
            "{backend:?}: {waited:?} after it was raised"
        );
        assert_eq!(slow.count(), 0, "{backend:?}");
        d.shutdown();
    }
}

/// Every event raised during a nap counts its delay from the nap's start, not only those the
/// first batch after it reads (256 events): here 600 events raised 100 ms into a nap of 1 s
/// leave when it ends, 900 ms later (counted from when the reactor woke, the events past the
/// first batch waited 1.9 s).
#[test]
fn events_raised_during_a_nap_all_leave_within_their_delay() {
    for backend in backends() {
        let r = Receiver::udp();
        let delay = Duration::from_secs(1);
        let (d, e) = coalescing_to(backend, &[&r], Format::Line, 65_457, delay);
        d.raise(e, params(0, 0)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        let raised = Instant::now();
        for i in 1..=600 {
            d.raise(e, params(i, 0)).unwrap();
        }
        assert!(
            wait_until(LIMIT, || events_in(&r).len() == 601),
            "{backend:?}"
        );
        let waited = raised.elapsed();
        assert!(
            waited < Duration::from_millis(1_400),
            "{backend:?}: the last left {waited:?} after they were raised"
        );
        let c = *d.shutdown().target(&r.target).unwrap();
        assert_eq!(c.sent, 601, "{backend:?}");
    }
}

/// A nap is bounded in events, so that the channel's slots never fill during it, but large
/// params can fill its bytes first (`queue_bytes`): the first event that finds no room then
/// ends the nap, and a producer waiting for room (`block`) goes on at once, not when the nap's
/// datagram is due, a minute later.
#[test]
fn large_events_that_fill_the_channel_during_a_nap_end_it() {
    for backend in backends() {
        let r = Receiver::udp();
        let d = Dispatcher::start(DispatcherConfig {
            backend,
            queue_full: QueuePolicy::Block,
            queue_bytes: 64 << 10,
            ..Default::default()
        })
        .unwrap();
        let e = publish_coalesced(&d, "E_TEST", &r, 65_457, Coalesce::MAX_DELAY);
        // A small event: the reactor naps until 2 048 more are raised, or for a minute.
        d.raise(e, params(0, 0)).unwrap();
        std::thread::sleep(Duration::from_millis(100));
        // Params of 2 KiB on the heap: 32 fill the channel's 64 KiB.
        let publisher = d.publisher();
        for i in 1..=100 {
            let raised = publisher.raise_timeout(e, params(i, 1_500), Duration::from_secs(5));
            assert!(raised.is_ok(), "{backend:?}: event {i} found no room");
        }
        let stats = d.shutdown();
        assert_eq!(stats.events.dropped_queue_full, 0, "{backend:?}");
        assert_eq!(stats.target(&r.target).unwrap().sent, 101, "{backend:?}");
    }
}

/// One subscription that does not coalesce keeps the reactor from napping: its events go at
/// once, also while another event's datagram waits for its delay.
#[test]
fn an_event_that_does_not_coalesce_goes_at_once_while_another_waits_for_its_delay() {
    for backend in backends() {
        let (held, plain) = (Receiver::udp(), Receiver::udp());
        let (d, slow) = coalescing_to(backend, &[&held], Format::Line, 65_457, Coalesce::MAX_DELAY);
        let e = d.publish("E_PLAIN").unwrap();
        d.subscribe(e, plain.target.clone(), Expiry::Never).unwrap();
        for i in 0..5 {
            d.raise(slow, params(i, 0)).unwrap();
            std::thread::sleep(Duration::from_millis(20));
            d.raise(e, params(i, 0)).unwrap();
            assert!(
                plain.wait_for(i + 1, Duration::from_secs(5)),
                "{backend:?}: event {i} waited"
            );
        }
        assert_eq!(held.count(), 0, "{backend:?}");
        let stats = d.shutdown();
        assert_eq!(stats.target(&held.target).unwrap().sent, 5);
    }
}
