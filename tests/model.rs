//! The dispatcher against a model of its subscriptions: random sequences of subscribe (in
//! either format, coalesced or not), refresh, unsubscribe and raise (small, quoted and large
//! events, two events sharing targets) to UDP and UNIX receivers and to a UNIX path nobody
//! binds, with each backend. Each receiver must get exactly the events raised while its target
//! was subscribed, in order, byte-exact, in the format and packing of the subscription each was
//! raised under; the path nobody binds none; and the counters must say so.
//!
//! A change applies to every event raised after it returns; an event raised before it and not
//! yet routed may be routed either way (the reactor routes each event as it takes it). So
//! before each change the model waits until the reactor has taken every event raised.

use std::collections::HashMap;
use std::time::Duration;

use event_datagram::decode::{self, DecodeFormat};
use event_datagram::{
    BackendChoice, Coalesce, Dispatcher, DispatcherConfig, Expiry, Format, Params,
    SubscriptionOptions, Target, MAX_DATAGRAM,
};
use proptest::prelude::*;

use crate::support::{backends, wait_until, Receiver, TempDir};

const EVENTS: [&str; 2] = ["E_MODEL_A", "E_MODEL_B"];
/// Two UDP receivers, a UNIX one, and a UNIX path nobody binds.
const TARGETS: usize = 4;
const LIMIT: Duration = Duration::from_secs(20);

#[derive(Clone, Copy, Debug)]
enum Size {
    Small,
    /// A value the line format quotes and `jsonrpc` escapes.
    Quoted,
    /// Params on the heap, beyond an MTU.
    Large,
}

#[derive(Clone, Copy, Debug)]
enum Op {
    /// Subscribes, or refreshes with these options.
    Subscribe {
        event: usize,
        target: usize,
        options: SubscriptionOptions,
    },
    Unsubscribe {
        event: usize,
        target: usize,
    },
    Raise {
        event: usize,
        size: Size,
    },
}

fn options() -> impl Strategy<Value = SubscriptionOptions> {
    let format = prop_oneof![Just(Format::Line), Just(Format::Jsonrpc)];
    // Limits below, near and above the events' sizes; delays from a batch's events only to
    // longer than most sequences take (shutdown sends what is still open).
    let coalesce = prop_oneof![
        1 => Just(None),
        1 => (
            prop_oneof![Just(300_usize), Just(2_000), Just(MAX_DATAGRAM)],
            prop_oneof![Just(0_u64), Just(200), Just(50_000)],
        )
            .prop_map(|(bytes, us)| Some(
                Coalesce::new(bytes, Duration::from_micros(us)).expect("valid limits")
            )),
    ];
    (format, coalesce).prop_map(|(format, coalesce)| SubscriptionOptions { format, coalesce })
}

fn op() -> impl Strategy<Value = Op> {
    let size = prop_oneof![Just(Size::Small), Just(Size::Quoted), Just(Size::Large)];
    prop_oneof![
        2 => (0..EVENTS.len(), 0..TARGETS, options())
            .prop_map(|(event, target, options)| Op::Subscribe { event, target, options }),
        1 => (0..EVENTS.len(), 0..TARGETS)
            .prop_map(|(event, target)| Op::Unsubscribe { event, target }),
        4 => (0..EVENTS.len(), size).prop_map(|(event, size)| Op::Raise { event, size }),
    ]
}

fn params(seq: usize, size: Size) -> Params {
    let value = match size {
        Size::Small => "x".to_owned(),
        Size::Quoted => "it's \"quoted\"\nand \\ escaped".to_owned(),
        Size::Large => "y".repeat(1_500),
    };
    Params::new()
        .int("seq", seq as i64)
        .and_then(|p| p.str("v", &value))
        .expect("valid names")
}

/// What one target should receive: each event's encoding, and the subscription it was raised
/// under.
#[derive(Default)]
struct Expected {
    bytes: Vec<Vec<u8>>,
    options: Vec<SubscriptionOptions>,
}

fn encode(format: Format, name: &str, params: &Params) -> Vec<u8> {
    let mut buf = vec![0; MAX_DATAGRAM];
    let n = format
        .encode(name, params, &mut buf)
        .expect("the events fit");
    buf.truncate(n);
    buf
}

/// Runs `ops` against a dispatcher on `backend`; panics at the first difference from the model.
fn check(backend: BackendChoice, ops: &[Op]) {
    let dir = TempDir::new("model");
    let receivers = [
        Receiver::udp(),
        Receiver::udp(),
        Receiver::unix(&dir.join("r.sock")),
    ];
    let absent =
        Target::parse(&format!("unix:{}", dir.join("absent.sock").display())).expect("a UNIX path");
    let targets: Vec<Target> = receivers
        .iter()
        .map(|r| r.target.clone())
        .chain([absent])
        .collect();
    let config = DispatcherConfig {
        backend,
        ..Default::default()
    };
    let d = Dispatcher::start(config).expect("a dispatcher");
    let ids = EVENTS.map(|name| d.publish(name).expect("a valid name"));
    let mut subscribed: HashMap<(usize, usize), SubscriptionOptions> = HashMap::new();
    let mut expected: Vec<Expected> = (0..TARGETS).map(|_| Expected::default()).collect();
    let (mut raised, mut unsubscribed) = (0, 0);
    for (seq, op) in ops.iter().enumerate() {
        if !matches!(op, Op::Raise { .. }) {
            let routed = || d.stats().events.dispatched == raised;
            assert!(wait_until(LIMIT, routed), "{backend:?}: events not routed");
        }
        match *op {
            Op::Subscribe {
                event,
                target,
                options,
            } => {
                let t = targets[target].clone();
                d.subscribe_with(ids[event], t, Expiry::Never, options)
                    .expect("within the limits");
                subscribed.insert((event, target), options);
            }
            Op::Unsubscribe { event, target } => {
                let ended = d.unsubscribe(ids[event], &targets[target]);
                assert_eq!(ended.is_ok(), subscribed.remove(&(event, target)).is_some());
            }
            Op::Raise { event, size } => {
                let p = params(seq, size);
                if !(0..TARGETS).any(|target| subscribed.contains_key(&(event, target))) {
                    unsubscribed += 1;
                }
                for (target, want) in expected.iter_mut().enumerate() {
                    if let Some(&options) = subscribed.get(&(event, target)) {
                        want.bytes.push(encode(options.format, EVENTS[event], &p));
                        want.options.push(options);
                    }
                }
                d.raise(ids[event], p).expect("the channel has room");
                raised += 1;
            }
        }
    }
    let stats = d.shutdown();
    // Over all targets: a target no subscription uses any more may leave the per-target list.
    // What goes to the path nobody binds fails as unreachable.
    let count = |e: &[Expected]| e.iter().map(|e| e.bytes.len() as u64).sum::<u64>();
    let (sent, unreachable) = (count(&expected[..3]), count(&expected[3..]));
    let c = stats.totals;
    assert_eq!(
        (
            c.raised,
            c.sent,
            c.dropped(),
            c.failed_unreachable,
            c.failed(),
            c.pending
        ),
        (sent + unreachable, sent, 0, unreachable, unreachable, 0),
        "{backend:?}: {c:?}"
    );
    let e = stats.events;
    assert_eq!(
        (e.raised, e.dispatched, e.unsubscribed),
        (raised, raised, unsubscribed),
        "{backend:?}"
    );
    let received = || receivers.iter().map(|r| r.count() as u64).sum::<u64>();
    assert!(
        wait_until(LIMIT, || received() == c.datagrams),
        "{backend:?}: {} datagrams received of {}",
        received(),
        c.datagrams
    );
    for (r, want) in receivers.iter().zip(&expected) {
        check_received(&r.target, &r.datagrams(), want);
    }
}

/// Each datagram holds whole events, the next ones expected, byte for byte; an event of a
/// subscription without coalescing goes alone, and a packed datagram stays within the
/// smallest limit of the subscriptions its events came from.
fn check_received(target: &Target, datagrams: &[Vec<u8>], want: &Expected) {
    let mut next = 0;
    for datagram in datagrams {
        let (events, format) = decode::decode_reporting_format(datagram, DecodeFormat::Auto)
            .unwrap_or_else(|e| panic!("{target}: a datagram that does not decode: {e}"));
        let range = next..next + events.len();
        assert!(
            range.end <= want.bytes.len(),
            "{target}: more events than raised"
        );
        assert_eq!(
            datagram[..],
            want.bytes[range.clone()].concat()[..],
            "{target}: events {range:?} differ"
        );
        let options = &want.options[range.clone()];
        assert!(
            options.iter().all(|o| o.format == format),
            "{target}: {range:?}"
        );
        if events.len() > 1 {
            for o in options {
                let c = o.coalesce.unwrap_or_else(|| {
                    panic!("{target}: events {range:?} packed, one not coalesced")
                });
                assert!(
                    datagram.len() <= c.max_bytes(),
                    "{target}: {range:?} too long"
                );
            }
        }
        next = range.end;
    }
    assert_eq!(next, want.bytes.len(), "{target}: events missing");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 64, ..ProptestConfig::default() })]

    #[test]
    fn receivers_get_what_the_subscriptions_say(ops in proptest::collection::vec(op(), 1..40)) {
        for backend in backends() {
            check(backend, &ops);
        }
    }
}
