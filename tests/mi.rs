//! The MI control endpoint: every method and error path of [`MiHandler`] in process (with real
//! receivers on loopback for delivery), then a real `evdgram serve` over UDP and UNIX datagram
//! sockets (replies to the requester, oversized requests, socket file mode and removal, final
//! stats), `evdgram listen --subscribe`, and a proptest of random bytes and random JSON into the
//! handler (no panic, no state change on error).
//!
//! Every wait is bounded; every child is killed if a test fails.

use std::io::{BufRead, BufReader};
use std::net::UdpSocket;
use std::os::unix::fs::{FileTypeExt, PermissionsExt};
use std::os::unix::net::UnixDatagram;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::mpsc::{self, Receiver as Lines};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use event_datagram::mi::MAX_REPLY;
use event_datagram::{
    BackendChoice, Config, Dispatcher, DispatcherConfig, Format, ManualClock, MiConfig, MiHandler,
    QueuePolicy, Target,
};
use proptest::prelude::*;
use serde_json::{json, Value};

use crate::support::{unix_qlen, wait_until, Receiver, TempDir};

const EVDGRAM: &str = env!("CARGO_BIN_EXE_evdgram");
const DEADLINE: Duration = Duration::from_secs(10);

// ---------------------------------------------------------------------------------------------
// In process

struct Mi {
    dispatcher: Dispatcher,
    mi: MiHandler,
    clock: Arc<ManualClock>,
}

fn mi_with(config: MiConfig, format: Format) -> Mi {
    let clock = Arc::new(ManualClock::new());
    let dispatcher = Dispatcher::start_with_clock(
        DispatcherConfig {
            backend: BackendChoice::Syscall,
            default_format: format,
            ..Default::default()
        },
        clock.clone(),
    )
    .unwrap();
    dispatcher.publish("E_TEST").unwrap();
    dispatcher.publish("E_OTHER").unwrap();
    let mi = MiHandler::for_dispatcher(&dispatcher, &config).unwrap();
    Mi {
        dispatcher,
        mi,
        clock,
    }
}

fn mi() -> Mi {
    mi_with(MiConfig::default(), Format::Line)
}

impl Mi {
    /// The reply to `method` with `params` (id 1), as JSON.
    fn call(&self, method: &str, params: Value) -> Value {
        let req = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 1});
        self.raw(req.to_string().as_bytes())
    }

    fn raw(&self, request: &[u8]) -> Value {
        let reply = self.mi.handle(request).expect("a reply");
        serde_json::from_slice(&reply).unwrap()
    }

    fn ok(&self, method: &str, params: Value) -> Value {
        let r = self.call(method, params.clone());
        assert!(r.get("error").is_none(), "{method} {params}: {r}");
        r["result"].clone()
    }

    /// Asserts an error reply with `code`, `message`, and `data` containing `detail`.
    fn err(&self, method: &str, params: Value, code: i64, message: &str, detail: &str) {
        let before = self.state();
        let r = self.call(method, params.clone());
        check_error(&r, code, message, detail);
        assert_eq!(r["id"], 1, "{r}");
        assert_eq!(self.state(), before, "{method} {params} changed the state");
    }

    /// Every event and subscriber, for comparison.
    fn state(&self) -> String {
        let reg = self.dispatcher.registry();
        let mut s = String::new();
        for (name, id) in reg.events() {
            s += &format!("{name}:");
            for sub in reg.subscribers(id).unwrap() {
                s += &format!(" {} {:?} {:?};", sub.target, sub.expiry, sub.format);
            }
            s += "\n";
        }
        s
    }
}

fn check_error(r: &Value, code: i64, message: &str, detail: &str) {
    assert_eq!(r["jsonrpc"], "2.0", "{r}");
    assert_eq!(r["error"]["code"], code, "{r}");
    assert_eq!(r["error"]["message"], message, "{r}");
    let data = r["error"]["data"].as_str().unwrap_or("");
    assert!(data.contains(detail), "{r}: no {detail:?}");
    assert!(r.get("result").is_none(), "{r}");
}

#[test]
fn replies_have_the_opensips_shape_and_echo_the_id() {
    let m = mi();
    let reply =
        m.mi.handle(br#"{"jsonrpc":"2.0","method":"events_list","id":"abc"}"#)
            .unwrap();
    assert_eq!(
        String::from_utf8(reply).unwrap(),
        r#"{"jsonrpc":"2.0","result":{"Events":[{"name":"E_TEST","id":0},{"name":"E_OTHER","id":1}]},"id":"abc"}"#
    );
    for id in [
        json!(7),
        json!(-3),
        json!("x y"),
        json!(18446744073709551615u64),
        json!(null),
    ] {
        for params in [json!([]), json!({})] {
            let req = json!({"jsonrpc":"2.0","method":"which","params":params,"id":id});
            assert_eq!(m.raw(req.to_string().as_bytes())["id"], id);
        }
    }
    // Any other number comes back as written: a float read would print `1e2` as `100.0`, and
    // change the value of an integer beyond 64 bits.
    for id in [
        "1e2",
        "1.5",
        "-0.0",
        "1234567890123456789012345678901234567890",
        "5E-3",
    ] {
        for method in ["which", "no_such_method"] {
            let req = format!(r#"{{"jsonrpc":"2.0","method":"{method}","id":{id}}}"#);
            let reply = String::from_utf8(m.mi.handle(req.as_bytes()).unwrap()).unwrap();
            assert!(reply.ends_with(&format!(r#","id":{id}}}"#)), "{reply}");
        }
    }
    // `params` absent.
    let r = m.raw(br#"{"jsonrpc":"2.0","method":"which","id":2}"#);
    assert_eq!(
        r["result"],
        json!([
            "event_subscribe",
            "events_list",
            "subscribers_list",
            "raise_event",
            "stats",
            "which"
        ])
    );
    assert_eq!(
        m.ok("which", json!({"command": "subscribers_list"})),
        json!([[], ["event"], ["event", "socket"]])
    );
    assert_eq!(
        m.ok("which", json!(["raise_event"])),
        json!([["event"], ["event", "params"]])
    );
    m.err(
        "which",
        json!(["nope"]),
        -32602,
        "Invalid params",
        "unknown command",
    );
}

#[test]
fn a_notification_is_carried_out_and_not_answered() {
    let m = mi();
    let rx = Receiver::udp();
    let req = json!({"jsonrpc":"2.0","method":"event_subscribe","params":["E_TEST", rx.target.to_string()]});
    assert_eq!(m.mi.handle(req.to_string().as_bytes()), None);
    assert!(m.state().contains(&rx.target.to_string()));
    let bad = json!({"jsonrpc":"2.0","method":"no_such_method"});
    assert_eq!(m.mi.handle(bad.to_string().as_bytes()), None);
}

#[test]
fn event_subscribe_then_list_then_unsubscribe() {
    let m = mi();
    let rx = Receiver::udp();
    let spec = rx.target.to_string();
    assert_eq!(m.ok("event_subscribe", json!(["E_TEST", spec])), "OK");
    let one = json!({"Event": {"name": "E_TEST", "id": 0, "Subscribers": [
        {"socket": spec, "expire": 3600, "ttl": 3600, "format": "line"}]}});
    assert_eq!(m.ok("subscribers_list", json!(["E_TEST"])), one);
    // Named params, string expire (as opensips-cli sends positional params), jsonrpc format:
    // a refresh of the same subscription.
    m.clock.advance(Duration::from_secs(10));
    assert_eq!(
        m.ok(
            "event_subscribe",
            json!({"event": "E_TEST", "socket": spec, "expire": "60", "format": "jsonrpc"})
        ),
        "OK"
    );
    m.clock.advance(Duration::from_secs(15));
    let sub = json!({"socket": spec, "expire": 60, "ttl": 45, "format": "jsonrpc"});
    assert_eq!(
        m.ok("subscribers_list", json!([])),
        json!({"Events": [{"name": "E_TEST", "id": 0, "Subscribers": [sub]}]})
    );
    assert_eq!(
        m.ok(
            "subscribers_list",
            json!({"event": "E_TEST", "socket": spec})
        ),
        json!({"Event": {"name": "E_TEST", "id": 0, "Subscriber": sub}})
    );
    // Part of a second gone: the seconds left round up (OpenSIPS counts whole-second ticks).
    m.clock.advance(Duration::from_millis(500));
    let listed = m.ok(
        "subscribers_list",
        json!({"event": "E_TEST", "socket": spec}),
    );
    assert_eq!(listed["Event"]["Subscriber"]["ttl"], 45, "{listed}");
    m.clock.advance(Duration::from_millis(44_499));
    let listed = m.ok(
        "subscribers_list",
        json!({"event": "E_TEST", "socket": spec}),
    );
    assert_eq!(
        listed["Event"]["Subscriber"]["ttl"], 1,
        "1 ms left: {listed}"
    );
    // An event without subscribers: `{"Event":{}}`, as OpenSIPS prints it.
    assert_eq!(
        m.ok("subscribers_list", json!(["E_OTHER"])),
        json!({"Event": {}})
    );
    // Expire 0 unsubscribes at once; again is still OK.
    assert_eq!(m.ok("event_subscribe", json!(["E_TEST", spec, 0])), "OK");
    assert_eq!(m.ok("subscribers_list", json!([])), json!({"Events": []}));
    assert_eq!(m.ok("event_subscribe", json!(["E_TEST", spec, "0"])), "OK");
    // Expiry: gone after its time.
    assert_eq!(m.ok("event_subscribe", json!(["E_TEST", spec, 5])), "OK");
    m.clock.advance(Duration::from_secs(6));
    assert_eq!(m.ok("subscribers_list", json!([])), json!({"Events": []}));
}

#[test]
fn event_subscribe_with_coalescing_packs_events_and_lists_the_setting() {
    let m = mi();
    let rx = Receiver::udp();
    let spec = rx.target.to_string();
    let coalesce = json!({"max_bytes": 1000, "max_delay_us": 2000});
    let request = json!({"event": "E_TEST", "socket": spec, "coalesce": coalesce});
    assert_eq!(m.ok("event_subscribe", request), "OK");
    let sub = json!({"socket": spec, "expire": 3600, "ttl": 3600, "format": "line",
        "coalesce": coalesce});
    assert_eq!(
        m.ok("subscribers_list", json!(["E_TEST", spec])),
        json!({"Event": {"name": "E_TEST", "id": 0, "Subscriber": sub}})
    );
    for i in 0..20 {
        assert_eq!(m.ok("raise_event", json!(["E_TEST", {"i": i}])), "OK");
    }
    let decoded = || -> usize {
        rx.datagrams()
            .iter()
            .map(|d| event_datagram::decode::line::decode(d).unwrap().len())
            .sum()
    };
    assert!(wait_until(DEADLINE, || decoded() == 20));
    assert!(
        rx.count() < 20,
        "packed: {} datagrams for 20 events",
        rx.count()
    );
    for bad in [
        json!({"max_bytes": 0}),
        json!({"max_bytes": 70000}),
        json!({"max_delay_us": 5}),
        json!({"max_bytes": 100, "max_delay_us": 60_000_001}),
        json!({"max_bytes": 100, "max_delay_us": u64::MAX}),
        json!({"max_bytes": 100, "extra": 1}),
        json!({"max_bytes": "big"}),
        json!([100, 5]),
    ] {
        let request = json!({"event": "E_TEST", "socket": spec, "coalesce": bad});
        m.err(
            "event_subscribe",
            request,
            -32602,
            "Invalid params",
            "coalesce",
        );
    }
}

#[test]
fn a_refresh_that_leaves_format_and_coalesce_out_keeps_them() {
    let m = mi();
    let spec = "udp:127.0.0.1:9";
    let coalesce = json!({"max_bytes": 1000, "max_delay_us": 2000});
    let listed =
        |m: &Mi| m.ok("subscribers_list", json!(["E_TEST", spec]))["Event"]["Subscriber"].clone();
    let request = json!({"event": "E_TEST", "socket": spec, "expire": 120,
        "format": "jsonrpc", "coalesce": coalesce});
    assert_eq!(m.ok("event_subscribe", request), "OK");
    // What opensips-event sends to refresh, a minute before expiry.
    assert_eq!(m.ok("event_subscribe", json!(["E_TEST", spec, 3600])), "OK");
    let sub = listed(&m);
    assert_eq!(
        (&sub["expire"], &sub["format"], &sub["coalesce"]),
        (&json!(3600), &json!("jsonrpc"), &coalesce),
        "{sub}"
    );
    // Said explicitly, they change; `null` turns coalescing off.
    let request = json!({"event": "E_TEST", "socket": spec, "format": "line", "coalesce": null});
    assert_eq!(m.ok("event_subscribe", request), "OK");
    let sub = listed(&m);
    assert_eq!(sub["format"], "line", "{sub}");
    assert!(sub.get("coalesce").is_none(), "{sub}");
    // A new subscription without them takes the defaults.
    let other = "udp:127.0.0.1:10";
    assert_eq!(m.ok("event_subscribe", json!(["E_OTHER", other])), "OK");
    let sub = m.ok("subscribers_list", json!(["E_OTHER", other]))["Event"]["Subscriber"].clone();
    assert_eq!(sub["format"], "line", "{sub}");
    assert!(sub.get("coalesce").is_none(), "{sub}");
}

#[test]
fn event_subscribe_errors() {
    let m = mi();
    let ok = "udp:127.0.0.1:9";
    m.err(
        "event_subscribe",
        json!(["E_TEST", ok, -1]),
        -32602,
        "Invalid params",
        "Negative expire value",
    );
    m.err(
        "event_subscribe",
        json!(["E_TEST", ok, "-5"]),
        -32602,
        "Invalid params",
        "Negative expire value",
    );
    m.err(
        "event_subscribe",
        json!(["E_TEST", ok, 1.5]),
        -32602,
        "Invalid params",
        "expire",
    );
    m.err(
        "event_subscribe",
        json!(["E_TEST", ok, "soon"]),
        -32602,
        "Invalid params",
        "expire",
    );
    m.err(
        "event_subscribe",
        json!(["E_TEST", ok, 4294967296u64]),
        -32602,
        "Invalid params",
        "expire",
    );
    m.err(
        "event_subscribe",
        json!(["E_TEST"]),
        -32602,
        "Invalid params",
        "Too few or too many",
    );
    m.err(
        "event_subscribe",
        json!(["E_TEST", ok, 1, "line", {"max_bytes": 100}, 6]),
        -32602,
        "Invalid params",
        "Too few or too many",
    );
    m.err(
        "event_subscribe",
        json!(["E_TEST", ok, 1, "line", 5]),
        -32602,
        "Invalid params",
        "coalesce: expected",
    );
    m.err(
        "event_subscribe",
        json!({"event": "E_TEST"}),
        -32602,
        "Invalid params",
        "missing parameter \"socket\"",
    );
    m.err(
        "event_subscribe",
        json!({"event": "E_TEST", "socket": ok, "x": 1}),
        -32602,
        "Invalid params",
        "unknown parameter \"x\"",
    );
    m.err(
        "event_subscribe",
        json!([1, ok]),
        -32602,
        "Invalid params",
        "event must be a string",
    );
    m.err(
        "event_subscribe",
        json!(["", ok]),
        -32602,
        "Invalid params",
        "event is empty",
    );
    m.err(
        "event_subscribe",
        json!(["E_TEST", ok, 10, "xml"]),
        -32602,
        "Invalid params",
        "unknown format",
    );
    m.err(
        "event_subscribe",
        json!(["E_NOPE", ok]),
        400,
        "Bad parameter value",
        "not published",
    );
    m.err(
        "event_subscribe",
        json!(["E_TEST", "udp:127.0.0.1:70000"]),
        400,
        "Bad parameter value",
        "expected udp:HOST:PORT",
    );
    m.err(
        "event_subscribe",
        json!(["E_TEST", "tcp:127.0.0.1:9"]),
        400,
        "Bad parameter value",
        "tcp",
    );
    // Not a reflector: only loopback and UNIX destinations by default.
    m.err(
        "event_subscribe",
        json!(["E_TEST", "udp:192.0.2.1:9"]),
        403,
        "Destination not allowed",
        "allow_targets",
    );
    m.err(
        "event_subscribe",
        json!(["E_TEST", "udp:[2001:db8::1]:9"]),
        403,
        "Destination not allowed",
        "allow_targets",
    );
}

#[test]
fn allowlist_and_limits_come_from_the_config() {
    let m = mi_with(
        MiConfig {
            allow_targets: vec!["192.0.2.0/24".into()],
            max_subscribers_per_event: 2,
            max_subscribers: 3,
            ..Default::default()
        },
        Format::Line,
    );
    assert_eq!(
        m.ok("event_subscribe", json!(["E_TEST", "udp:192.0.2.1:9"])),
        "OK"
    );
    m.err(
        "event_subscribe",
        json!(["E_TEST", "udp:127.0.0.1:9"]),
        403,
        "Destination not allowed",
        "",
    );
    m.err(
        "event_subscribe",
        json!(["E_TEST", "unix:/tmp/x.sock"]),
        403,
        "Destination not allowed",
        "",
    );
    assert_eq!(
        m.ok("event_subscribe", json!(["E_TEST", "udp:192.0.2.2:9"])),
        "OK"
    );
    // A refresh is not a new subscription.
    assert_eq!(
        m.ok("event_subscribe", json!(["E_TEST", "udp:192.0.2.2:9", 10])),
        "OK"
    );
    m.err(
        "event_subscribe",
        json!(["E_TEST", "udp:192.0.2.3:9"]),
        503,
        "Too many subscribers",
        "E_TEST already has as many subscribers as allowed (2)",
    );
    assert_eq!(
        m.ok("event_subscribe", json!(["E_OTHER", "udp:192.0.2.3:9"])),
        "OK"
    );
    m.err(
        "event_subscribe",
        json!(["E_OTHER", "udp:192.0.2.4:9"]),
        503,
        "Too many subscribers",
        "already as many subscriptions as allowed (3)",
    );
}

/// The limits guard the MI endpoint; what the configuration or the application subscribe is
/// not capped by them (it was: the registry's defaults applied before the MI handler set the
/// configured ones).
#[test]
fn limits_cap_mi_subscribers_not_the_static_ones() {
    let mut yaml = String::from(
        "dispatcher:\n  backend: syscall\nmi:\n  max_subscribers_per_event: 300\nsubscriptions:\n",
    );
    // More than the default limit of 256 per event, to closed ports (nothing is raised).
    for port in 0..270 {
        yaml += &format!(
            "  - {{ event: E_MANY, socket: \"udp:127.0.0.1:{}\" }}\n",
            20_000 + port
        );
    }
    let config = Config::from_yaml(&yaml).unwrap();
    let dispatcher = Dispatcher::from_config(&config).expect("270 static subscriptions");
    let event = dispatcher.registry().lookup("E_MANY").unwrap();
    assert_eq!(dispatcher.registry().subscribers(event).unwrap().len(), 270);
    let mi = MiHandler::for_dispatcher(&dispatcher, &config.mi).unwrap();
    let m = Mi {
        dispatcher,
        mi,
        clock: Arc::new(ManualClock::new()),
    };
    for port in 270..300 {
        let spec = format!("udp:127.0.0.1:{}", 20_000 + port);
        assert_eq!(m.ok("event_subscribe", json!(["E_MANY", spec])), "OK");
    }
    m.err(
        "event_subscribe",
        json!(["E_MANY", "udp:127.0.0.1:30000"]),
        503,
        "Too many subscribers",
        "E_MANY already has as many subscribers as allowed (300)",
    );
    // The application's own subscriptions are not capped, once the MI handler exists either.
    let extra = "udp:127.0.0.1:30001".parse().unwrap();
    m.dispatcher
        .subscribe(event, extra, event_datagram::Expiry::Never)
        .expect("the application subscribes past the MI limits");
    assert_eq!(
        m.dispatcher.registry().subscribers(event).unwrap().len(),
        301
    );
}

/// A subscription that does not expire (a static one, or made in code) is listed with
/// `"expire":"never"` and `"ttl":"never"` (DESIGN: `expire` is a number or `"never"`).
#[test]
fn a_subscription_without_expiry_is_listed_as_never() {
    let m = mi();
    let event = m.dispatcher.registry().lookup("E_TEST").unwrap();
    let spec = "udp:127.0.0.1:9";
    m.dispatcher
        .subscribe(event, spec.parse().unwrap(), event_datagram::Expiry::Never)
        .unwrap();
    m.clock.advance(Duration::from_secs(3600 * 24));
    let sub = json!({"socket": spec, "expire": "never", "ttl": "never", "format": "line"});
    assert_eq!(
        m.ok("subscribers_list", json!(["E_TEST", spec])),
        json!({"Event": {"name": "E_TEST", "id": 0, "Subscriber": sub}})
    );
}

/// Lifetimes too long to count are "never": before, the expiry's arithmetic overflowed while
/// the subscription was already stored, and every later request panicked on it. (MI caps
/// `expire` at 2^32 - 1 seconds; the library takes any `Duration`.)
#[test]
fn lifetimes_too_long_to_count_never_end_and_break_nothing() {
    let m = mi();
    m.clock.advance(Duration::from_secs(5));
    let event = m.dispatcher.registry().lookup("E_TEST").unwrap();
    for (port, expiry) in [
        (10, event_datagram::Expiry::After(Duration::MAX)),
        (11, event_datagram::Expiry::from_secs(u64::MAX)),
    ] {
        let target = format!("udp:127.0.0.1:{port}").parse().unwrap();
        m.dispatcher.subscribe(event, target, expiry).unwrap();
    }
    let spec = "udp:127.0.0.1:9";
    let longest = u64::from(u32::MAX);
    assert_eq!(
        m.ok("event_subscribe", json!(["E_TEST", spec, longest])),
        "OK"
    );
    m.clock.advance(Duration::from_secs(3600 * 24 * 365));
    let subs = m.dispatcher.registry().subscribers(event).unwrap();
    assert_eq!(subs.len(), 3, "{subs:?}");
    assert!(subs[..2].iter().all(|s| s.remaining.is_none()), "{subs:?}");
    // Everything else still works: another subscription, a listing, an unsubscribe.
    assert_eq!(m.ok("event_subscribe", json!(["E_OTHER", spec, 60])), "OK");
    let listed = m.ok("subscribers_list", json!(["E_TEST"]));
    let listed = listed["Event"]["Subscribers"].as_array().unwrap().clone();
    assert_eq!(listed.len(), 3, "{listed:?}");
    assert_eq!(listed[2]["ttl"], longest - 3600 * 24 * 365, "{listed:?}");
    assert_eq!(m.ok("event_subscribe", json!(["E_TEST", spec, 0])), "OK");
    assert_eq!(m.dispatcher.registry().subscription_count(), 3);
}

/// Expired subscriptions are gone, also from what the limits count: they leave room for new
/// ones at once.
#[test]
fn expired_subscriptions_leave_room_under_the_limits() {
    let m = mi_with(
        MiConfig {
            max_subscribers_per_event: 1,
            ..Default::default()
        },
        Format::Line,
    );
    assert_eq!(
        m.ok("event_subscribe", json!(["E_TEST", "udp:127.0.0.1:9", 10])),
        "OK"
    );
    m.clock.advance(Duration::from_secs(11));
    assert_eq!(
        m.ok("event_subscribe", json!(["E_TEST", "udp:127.0.0.1:10"])),
        "OK"
    );
}

/// `mi.max_request_bytes` is the largest request answered: one of exactly that many bytes is,
/// one byte more is refused.
#[test]
fn a_request_of_exactly_max_request_bytes_is_answered() {
    let m = mi_with(
        MiConfig {
            max_request_bytes: 512,
            ..Default::default()
        },
        Format::Line,
    );
    let padded = |len: usize| {
        let mut r = br#"{"jsonrpc":"2.0","method":"events_list","id":1}"#.to_vec();
        r.resize(len, b' ');
        r
    };
    let r = m.raw(&padded(512));
    assert!(r.get("error").is_none(), "{r}");
    let r = m.raw(&padded(513));
    check_error(
        &r,
        -32600,
        "Invalid Request",
        "the request is larger than the 512-byte limit (mi.max_request_bytes)",
    );
}

/// `coalesce` without `max_delay_us` takes the default the configuration has: 1000 us.
#[test]
fn event_subscribe_coalescing_without_a_delay_takes_the_default_one() {
    let m = mi();
    let spec = "udp:127.0.0.1:9";
    let request = json!({"event": "E_TEST", "socket": spec, "coalesce": {"max_bytes": 500}});
    assert_eq!(m.ok("event_subscribe", request), "OK");
    let sub = m.ok("subscribers_list", json!(["E_TEST", spec]))["Event"]["Subscriber"].clone();
    let default =
        Config::from_yaml("subscriptions: [{event: E, socket: /s, coalesce: {max_bytes: 500}}]")
            .unwrap()
            .subscriptions[0]
            .coalesce
            .unwrap();
    assert_eq!(default.max_delay_us, 1_000);
    assert_eq!(
        sub["coalesce"],
        json!({"max_bytes": 500, "max_delay_us": 1_000}),
        "{sub}"
    );
}

#[test]
fn subscribers_list_errors() {
    let m = mi();
    m.err(
        "subscribers_list",
        json!(["E_NOPE"]),
        404,
        "Event not published",
        "",
    );
    m.err(
        "subscribers_list",
        json!(["E_TEST", "udp:127.0.0.1:9"]),
        404,
        "Subscriber does not exist",
        "",
    );
    m.err(
        "subscribers_list",
        json!(["E_TEST", "garbage"]),
        404,
        "Subscriber does not exist",
        "",
    );
    m.err(
        "subscribers_list",
        json!(["E_TEST", "udp:127.0.0.1:9", 3]),
        -32602,
        "Invalid params",
        "Too few or too many",
    );
    m.err(
        "subscribers_list",
        json!({"socket": "udp:127.0.0.1:9"}),
        -32602,
        "Invalid params",
        "missing parameter \"event\"",
    );
    m.err(
        "events_list",
        json!(["E_TEST"]),
        -32602,
        "Invalid params",
        "Too few or too many",
    );
    m.err(
        "stats",
        json!({"x": 1}),
        -32602,
        "Invalid params",
        "unknown parameter",
    );
}

#[test]
fn raise_event_in_every_params_form_reaches_subscribers() {
    let m = mi();
    let line = Receiver::udp();
    let jsonrpc = Receiver::udp();
    m.ok(
        "event_subscribe",
        json!(["E_TEST", line.target.to_string(), 60, "line"]),
    );
    m.ok(
        "event_subscribe",
        json!(["E_TEST", jsonrpc.target.to_string(), 60, "jsonrpc"]),
    );
    let forms = [
        json!(["E_TEST", {"ip": "192.168.2.11", "n": -7}]),
        json!({"event": "E_TEST", "params": {"ip": "192.168.2.11", "n": -7}}),
        json!(["E_TEST", "{\"ip\":\"192.168.2.11\",\"n\":-7}"]),
        json!(["E_TEST", ["v1", "v2"]]),
        json!(["E_TEST"]),
        // Duplicate keys, kept in order (`json!` would merge them: a string holds them here).
        json!({"event": "E_TEST", "params": "{\"a\":1,\"b\":\"x\",\"a\":2}"}),
    ];
    for params in &forms {
        assert_eq!(m.ok("raise_event", params.clone()), "OK", "{params}");
    }
    assert!(line.wait_for(forms.len(), DEADLINE));
    assert!(jsonrpc.wait_for(forms.len(), DEADLINE));
    let text = |r: &Receiver| -> Vec<String> {
        r.datagrams()
            .into_iter()
            .map(|d| String::from_utf8(d).unwrap())
            .collect()
    };
    assert_eq!(
        text(&line),
        [
            "E_TEST\nip::192.168.2.11\nn::-7\n\n",
            "E_TEST\nip::192.168.2.11\nn::-7\n\n",
            "E_TEST\nip::192.168.2.11\nn::-7\n\n",
            "E_TEST\nv1\nv2\n\n",
            "E_TEST\n\n",
            "E_TEST\na::1\nb::x\na::2\n\n",
        ]
    );
    let j = text(&jsonrpc);
    assert_eq!(
        j[0],
        r#"{"jsonrpc":"2.0","method":"E_TEST","params":{"ip":"192.168.2.11","n":-7}}"#
    );
    assert_eq!(
        j[3],
        r#"{"jsonrpc":"2.0","method":"E_TEST","params":["v1","v2"]}"#
    );
    assert_eq!(j[4], r#"{"jsonrpc":"2.0","method":"E_TEST"}"#);
    assert_eq!(
        j[5],
        r#"{"jsonrpc":"2.0","method":"E_TEST","params":{"a":1,"b":"x","a":2}}"#
    );
    // No subscriber: OK, counted as unsubscribed.
    assert_eq!(m.ok("raise_event", json!(["E_OTHER"])), "OK");
    let stats = m.ok("stats", json!([]));
    assert!(
        wait_until(DEADLINE, || m.ok("stats", json!([]))["events"]
            ["unsubscribed"]
            == 1),
        "{stats}"
    );
}

#[test]
fn raise_event_errors() {
    let m = mi();
    let bad_values = [
        (json!({"x": 1.5}), "float 1.5"),
        (json!({"x": true}), "boolean true"),
        (json!({"x": null}), "null"),
        (json!({"x": {"y": 1}}), "nested object"),
        (json!({"x": [1]}), "nested array"),
        (json!([1.0e300]), "parameter #1"),
        (json!([18446744073709551615u64]), "outside the i64 range"),
        (json!("{\"x\": false}"), "boolean false"),
        (json!("not json"), "not a JSON object"),
        (json!("42"), "not a JSON object"),
        (json!(7), "params must be"),
        (json!(null), "params must be"),
        (json!({"a::b": "v"}), "a::b"),
    ];
    for (params, detail) in bad_values {
        m.err(
            "raise_event",
            json!(["E_TEST", params]),
            -32602,
            "Invalid params",
            detail,
        );
    }
    m.err(
        "raise_event",
        json!([]),
        -32602,
        "Invalid params",
        "Too few or too many",
    );
    m.err(
        "raise_event",
        json!(["E_TEST", "{}", "x"]),
        -32602,
        "Invalid params",
        "Too few or too many",
    );
    m.err(
        "raise_event",
        json!({"params": {}}),
        -32602,
        "Invalid params",
        "missing parameter \"event\"",
    );
    m.err(
        "raise_event",
        json!(["E_NOPE"]),
        404,
        "Event not published",
        "",
    );
}

#[test]
fn raise_event_with_every_receiver_stalled_answers_instead_of_hanging() {
    let dir = TempDir::new("mi-stalled");
    let slow = Receiver::unix(&dir.join("slow"));
    slow.pause(true);
    let dispatcher = Dispatcher::start(DispatcherConfig {
        backend: BackendChoice::Syscall,
        queue_full: QueuePolicy::Block,
        queue_capacity: 4,
        batch: 4,
        retry_queue: 4,
        shutdown_timeout_ms: 100,
        ..Default::default()
    })
    .unwrap();
    dispatcher.publish("E_TEST").unwrap();
    let m = Arc::new(Mi {
        mi: MiHandler::for_dispatcher(&dispatcher, &MiConfig::default()).unwrap(),
        dispatcher,
        clock: Arc::new(ManualClock::new()),
    });
    m.ok(
        "event_subscribe",
        json!(["E_TEST", slow.target.to_string()]),
    );
    // The receiver's queue, the target's queue, then the channel fill up; then a raise waits
    // for room, at most a second, and is refused. On another thread, so that a raise that
    // hangs fails the test instead of hanging it.
    let (done_tx, done_rx) = mpsc::channel();
    let raiser = Arc::clone(&m);
    std::thread::spawn(move || {
        let mut accepted = 0u64;
        let refused = loop {
            assert!(accepted < 1_000, "never refused");
            let r = raiser.call("raise_event", json!(["E_TEST", {"n": accepted}]));
            if r.get("error").is_some() {
                break r;
            }
            accepted += 1;
        };
        let _ = done_tx.send((accepted, refused));
    });
    let (accepted, refused) = done_rx
        .recv_timeout(DEADLINE)
        .expect("raise_event answers within its wait for room");
    check_error(&refused, 500, "Cannot Raise Event", "queue is full");
    // The listener still serves the call that fixes it.
    m.ok(
        "event_subscribe",
        json!(["E_TEST", slow.target.to_string(), 0]),
    );
    let stats = m.dispatcher.stats();
    assert!(stats.is_balanced(), "{stats:?}");
    assert_eq!(stats.events.dropped_queue_full, 1, "{stats:?}");
    assert_eq!(stats.events.raised, accepted + 1, "{stats:?}");
}

#[test]
fn raise_event_too_large_for_a_datagram_is_refused() {
    let m = mi_with(
        MiConfig {
            max_request_bytes: 200_000,
            ..Default::default()
        },
        Format::Line,
    );
    let v = "x".repeat(66_000);
    // No subscriber: nothing to encode.
    assert_eq!(m.ok("raise_event", json!(["E_TEST", {"v": v}])), "OK");
    m.ok(
        "event_subscribe",
        json!(["E_TEST", "udp:127.0.0.1:9", 60, "jsonrpc"]),
    );
    m.err(
        "raise_event",
        json!(["E_TEST", {"v": v}]),
        -32602,
        "Invalid params",
        "65457-byte datagram limit",
    );
}

/// One subscriber's format too large does not keep the event from another's, where it fits:
/// raised, sent there and counted oversize for the other, as a raise through the library is.
#[test]
fn raise_event_too_large_in_one_format_reaches_the_subscribers_of_the_other() {
    let m = mi_with(
        MiConfig {
            max_request_bytes: 200_000,
            ..Default::default()
        },
        Format::Line,
    );
    let line = Receiver::udp();
    let jsonrpc = Receiver::udp();
    m.ok(
        "event_subscribe",
        json!(["E_TEST", line.target.to_string(), 60, "line"]),
    );
    m.ok(
        "event_subscribe",
        json!(["E_TEST", jsonrpc.target.to_string(), 60, "jsonrpc"]),
    );
    // `E_TEST\nv::` and `\n\n` around it: 65 432 bytes as a line event; over 65 457 in jsonrpc.
    let v = "x".repeat(65_420);
    assert_eq!(m.ok("raise_event", json!(["E_TEST", {"v": v}])), "OK");
    assert!(line.wait_for(1, DEADLINE));
    assert_eq!(line.datagrams()[0].len(), 65_432);
    let stats = m.dispatcher.stats();
    let counters = stats.target(&jsonrpc.target).expect("a jsonrpc target");
    assert_eq!((counters.raised, counters.failed_oversize), (1, 1));
    assert!(jsonrpc.datagrams().is_empty());
}

#[test]
fn publish_on_demand_publishes_only_valid_raises() {
    let m = mi_with(
        MiConfig {
            publish_on_demand: true,
            ..Default::default()
        },
        Format::Line,
    );
    m.err(
        "raise_event",
        json!(["E_NEW", {"x": true}]),
        -32602,
        "Invalid params",
        "boolean",
    );
    m.err(
        "raise_event",
        json!(["E_BAD\nNAME"]),
        400,
        "Bad parameter value",
        "",
    );
    assert_eq!(m.ok("raise_event", json!(["E_NEW"])), "OK");
    assert_eq!(
        m.ok("events_list", json!([]))["Events"][2],
        json!({"name": "E_NEW", "id": 2})
    );
}

/// MI with `publish_on_demand` up to `max_events` (E_TEST and E_OTHER are published).
fn publishing_on_demand(max_events: usize) -> Mi {
    let config = MiConfig {
        publish_on_demand: true,
        max_events,
        ..Default::default()
    };
    mi_with(config, Format::Line)
}

#[test]
fn publish_on_demand_stops_at_max_events() {
    let m = publishing_on_demand(3);
    // E_TEST and E_OTHER are published; one more may be.
    assert_eq!(m.ok("raise_event", json!(["E_THIRD"])), "OK");
    m.err(
        "raise_event",
        json!(["E_FOURTH"]),
        503,
        "Too many events",
        "3 events are published",
    );
    // Raising the published ones goes on.
    assert_eq!(m.ok("raise_event", json!(["E_THIRD"])), "OK");
    assert_eq!(m.ok("raise_event", json!(["E_TEST"])), "OK");
}

#[test]
fn publish_on_demand_holds_max_events_against_concurrent_raises() {
    for round in 0..20 {
        let m = publishing_on_demand(3);
        let start = std::sync::Barrier::new(8);
        std::thread::scope(|s| {
            for t in 0..8 {
                let (m, start) = (&m, &start);
                s.spawn(move || {
                    start.wait();
                    m.call("raise_event", json!([format!("E_NEW_{t}")]));
                });
            }
        });
        let count = m.dispatcher.registry().events().len();
        assert_eq!(count, 3, "round {round}: {count} events published, limit 3");
    }
}

#[test]
fn malformed_requests() {
    let m = mi();
    let cases: [(&[u8], i64, &str); 12] = [
        (b"", -32700, "Parse error"),
        (b"{", -32700, "Parse error"),
        (b"\xff\xfe", -32700, "Parse error"),
        (
            br#"{"jsonrpc":"2.0","method":"which","id":1} x"#,
            -32700,
            "Parse error",
        ),
        (b"[]", -32600, "Invalid Request"),
        (b"42", -32600, "Invalid Request"),
        (br#"{"method":"which","id":1}"#, -32600, "Invalid Request"),
        (
            br#"{"jsonrpc":"1.0","method":"which","id":1}"#,
            -32600,
            "Invalid Request",
        ),
        (
            br#"{"jsonrpc":"2.0","method":7,"id":1}"#,
            -32600,
            "Invalid Request",
        ),
        (
            br#"{"jsonrpc":"2.0","method":"which","params":"x","id":1}"#,
            -32600,
            "Invalid Request",
        ),
        (
            br#"{"jsonrpc":"2.0","method":"which","id":{"a":1}}"#,
            -32600,
            "Invalid Request",
        ),
        (
            br#"{"jsonrpc":"2.0","method":"nope","id":1}"#,
            -32601,
            "Method not found",
        ),
    ];
    let before = m.state();
    for (req, code, message) in cases {
        let r = m.raw(req);
        check_error(&r, code, message, "");
        assert_eq!(m.state(), before);
    }
    // Oversized: refused before parsing.
    let big = format!(
        r#"{{"jsonrpc":"2.0","method":"raise_event","params":["E_TEST",{{"v":"{}"}}],"id":1}}"#,
        "x".repeat(70_000)
    );
    check_error(
        &m.raw(big.as_bytes()),
        -32600,
        "Invalid Request",
        "65536-byte limit",
    );
    // An id so long that no reply echoing it fits in a datagram: the client still gets one,
    // with a null id, whether the request is invalid or its result too long.
    let long_id = "i".repeat(65_450);
    for request in [
        json!({"jsonrpc": "2.0", "id": long_id}),
        json!({"jsonrpc": "2.0", "method": "events_list", "id": long_id}),
    ] {
        let bytes = request.to_string().into_bytes();
        let reply = m.mi.handle(&bytes).expect("a reply");
        assert!(reply.len() <= MAX_REPLY, "{} bytes", reply.len());
        let r: Value = serde_json::from_slice(&reply).unwrap();
        check_error(&r, -32000, "Server error", "more than a datagram carries");
        assert_eq!(r["id"], Value::Null, "{r}");
    }
}

// ---------------------------------------------------------------------------------------------
// Random input: no panic, no state change on error

fn json_value() -> impl Strategy<Value = Value> {
    let leaf = prop_oneof![
        Just(Value::Null),
        any::<bool>().prop_map(Value::from),
        any::<i64>().prop_map(Value::from),
        any::<u64>().prop_map(Value::from),
        any::<f64>()
            .prop_filter("finite", |x| x.is_finite())
            .prop_map(Value::from),
        "[a-zA-Z_:\"\\\\\n ]{0,12}".prop_map(Value::from),
        Just(Value::from("E_TEST")),
        Just(Value::from("udp:127.0.0.1:9")),
    ];
    leaf.prop_recursive(3, 24, 4, |inner| {
        prop_oneof![
            prop::collection::vec(inner.clone(), 0..4).prop_map(Value::from),
            prop::collection::vec(("[a-z]{0,6}", inner), 0..4)
                .prop_map(|kv| Value::Object(kv.into_iter().collect())),
        ]
    })
}

fn request() -> impl Strategy<Value = Value> {
    let method = prop_oneof![
        Just("event_subscribe"),
        Just("events_list"),
        Just("subscribers_list"),
        Just("raise_event"),
        Just("stats"),
        Just("which"),
        Just("nope"),
    ];
    (method, json_value(), prop::option::of(json_value())).prop_map(|(method, params, id)| {
        let mut req = json!({"jsonrpc": "2.0", "method": method, "params": params});
        if let Some(id) = id {
            req["id"] = id;
        }
        req
    })
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes_are_refused_without_panic(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        let m = shared(0);
        let before = m.state();
        if let Some(reply) = m.mi.handle(&bytes) {
            let r: Value = serde_json::from_slice(&reply).unwrap();
            prop_assert!(r.get("error").is_some() || r.get("result").is_some());
            if r.get("error").is_some() {
                prop_assert_eq!(m.state(), before);
            }
        }
    }

    #[test]
    fn random_requests_never_panic_and_errors_change_nothing(req in request()) {
        let m = shared(1);
        let before = m.state();
        let text = req.to_string();
        match m.mi.handle(text.as_bytes()) {
            Some(reply) => {
                let r: Value = serde_json::from_slice(&reply).unwrap();
                prop_assert_eq!(&r["jsonrpc"], "2.0");
                if r.get("error").is_some() {
                    prop_assert_eq!(m.state(), before, "{} -> {}", text, r);
                }
            }
            None => prop_assert!(req.get("id").is_none()),
        }
    }
}

/// One handler for all cases of one proptest (starting a dispatcher per case is slow); each
/// test has its own (`which`), as the tests run in parallel and one may change what the other
/// checks is unchanged.
fn shared(which: usize) -> &'static Mi {
    static M: [std::sync::OnceLock<Mi>; 2] =
        [std::sync::OnceLock::new(), std::sync::OnceLock::new()];
    M[which].get_or_init(mi)
}

// ---------------------------------------------------------------------------------------------
// A real `evdgram serve`

/// A child process, killed and reaped when dropped.
struct Proc {
    child: Child,
    stderr: Lines<String>,
}

impl Proc {
    fn spawn(args: &[&str]) -> Proc {
        let mut command = Command::new(EVDGRAM);
        command.args(args);
        Proc::spawn_command(command)
    }

    /// `command` (`evdgram` with its arguments and environment) started.
    fn spawn_command(mut command: Command) -> Proc {
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = mpsc::channel();
        let err = child.stderr.take().unwrap();
        std::thread::spawn(move || {
            for line in BufReader::new(err).lines().map_while(Result::ok) {
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Proc { child, stderr: rx }
    }

    /// The next stderr line that starts with `prefix` (others are skipped).
    fn line_starting(&self, prefix: &str) -> String {
        let end = Instant::now() + DEADLINE;
        loop {
            let left = end.saturating_duration_since(Instant::now());
            match self.stderr.recv_timeout(left) {
                Ok(line) if line.starts_with(prefix) => return line,
                Ok(_) => {}
                Err(e) => panic!("no stderr line starting with {prefix:?}: {e}"),
            }
        }
    }

    fn signal(&self, sig: libc::c_int) {
        let pid = libc::pid_t::try_from(self.child.id()).unwrap();
        // SAFETY: kill(2) with a pid of our own live (not yet reaped) child.
        assert_eq!(unsafe { libc::kill(pid, sig) }, 0);
    }

    fn wait(&mut self) -> std::process::ExitStatus {
        let end = Instant::now() + DEADLINE;
        loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                return status;
            }
            assert!(Instant::now() < end, "no exit within {DEADLINE:?}");
            std::thread::sleep(Duration::from_millis(5));
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Starts `evdgram serve` with `args` plus listeners on `mis`; returns it and the bound specs.
fn serve(mis: &[&str], args: &[&str]) -> (Proc, Vec<String>) {
    let mut all = vec!["serve"];
    for m in mis {
        all.extend(["--mi", m]);
    }
    all.extend(args);
    let p = Proc::spawn(&all);
    p.line_starting("evdgram: dispatcher running");
    let bound = mis
        .iter()
        .map(|_| {
            p.line_starting("evdgram: MI listening on ")
                .trim_start_matches("evdgram: MI listening on ")
                .to_owned()
        })
        .collect();
    (p, bound)
}

fn udp_call(mi: &str, request: &[u8]) -> Value {
    let s = UdpSocket::bind("127.0.0.1:0").unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    s.send_to(request, mi.trim_start_matches("udp:")).unwrap();
    let mut buf = vec![0u8; 70_000];
    let n = s.recv(&mut buf).expect("an MI reply");
    serde_json::from_slice(&buf[..n]).unwrap()
}

fn request_bytes(method: &str, params: Value) -> Vec<u8> {
    json!({"jsonrpc": "2.0", "method": method, "params": params, "id": 5})
        .to_string()
        .into_bytes()
}

/// Stopping waits for slow receivers (up to `dispatcher.shutdown_timeout_ms`, here a minute);
/// a second signal ends `serve` at once, with 128 + its number.
#[test]
fn a_second_signal_ends_serve_without_waiting_for_slow_receivers() {
    let dir = TempDir::new("mi-second-signal");
    let config = dir.join("serve.yaml");
    std::fs::write(&config, "dispatcher:\n  shutdown_timeout_ms: 60000\n").unwrap();
    let (mut p, bound) = serve(
        &["udp:127.0.0.1:0"],
        &["--config", config.to_str().unwrap(), "--publish", "E_X"],
    );
    // A receiver that reads nothing: its queue fills (10 datagrams by default), the rest wait
    // in ours.
    let stalled_path = dir.join("stalled.sock");
    let _stalled = UnixDatagram::bind(&stalled_path).unwrap();
    let spec = format!("unix:{}", stalled_path.display());
    let r = udp_call(
        &bound[0],
        &request_bytes("event_subscribe", json!(["E_X", spec])),
    );
    assert_eq!(r["result"], "OK", "{r}");
    for _ in 0..unix_qlen() + 100 {
        let r = udp_call(&bound[0], &request_bytes("raise_event", json!(["E_X"])));
        assert_eq!(r["result"], "OK", "{r}");
    }
    p.signal(libc::SIGTERM);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        p.child.try_wait().unwrap().is_none(),
        "serve waits for the stalled receiver"
    );
    p.signal(libc::SIGTERM);
    assert_eq!(p.wait().code(), Some(128 + libc::SIGTERM));
}

/// Why a subscriber's socket cannot connect is said once a minute, however often it is
/// subscribed again (its slot, closed when unsubscribed and opened again, said it each time).
#[test]
fn serve_says_once_why_a_target_cannot_connect_across_resubscriptions() {
    let dir = TempDir::new("noreceiver");
    let missing = format!("unix:{}", dir.join("nobody.sock").display());
    let (mut p, bound) = serve(&["udp:127.0.0.1:0"], &["--publish", "E_A,E_B"]);
    let call = |method: &str, params: Value| {
        let reply = udp_call(&bound[0], &request_bytes(method, params));
        assert_eq!(reply["result"], "OK", "{method}: {reply}");
    };
    // An event is routed when the reactor takes it: taken after the unsubscription, it would
    // go nowhere and try no connection (a loaded machine can hold the reactor off that long).
    let all_taken = || {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let r = udp_call(&bound[0], &request_bytes("stats", json!([])));
            if r["result"]["events"]["pending"] == 0 {
                return;
            }
            assert!(Instant::now() < deadline, "events still pending: {r}");
            std::thread::sleep(Duration::from_millis(5));
        }
    };
    for _ in 0..3 {
        call("event_subscribe", json!(["E_A", missing]));
        call("raise_event", json!(["E_A"]));
        all_taken();
        call("event_subscribe", json!(["E_A", missing, 0]));
        // Read after the unsubscription: the target's slot closes.
        call("raise_event", json!(["E_B"]));
    }
    p.signal(libc::SIGTERM);
    assert!(p.wait().success());
    let mut said = Vec::new();
    loop {
        match p.stderr.recv_timeout(DEADLINE) {
            Ok(line) => said.push(line),
            Err(mpsc::RecvTimeoutError::Disconnected) => break,
            Err(e) => panic!("stderr: {e}"),
        }
    }
    let why: Vec<&String> = said
        .iter()
        .filter(|l| l.contains("cannot connect"))
        .collect();
    assert_eq!(why.len(), 1, "{said:#?}");
    assert!(
        why[0].contains(&format!("{missing}: cannot connect: No such file")),
        "{}",
        why[0]
    );
}

#[test]
fn serve_answers_over_udp_and_unix_and_stops_cleanly() {
    let dir = TempDir::new("mi-serve");
    let sock = dir.join("mi.sock");
    let unix_spec = format!("unix:{}", sock.display());
    // Port 0: any free port; serve says which.
    let (mut p, bound) = serve(
        &["udp:127.0.0.1:0", &unix_spec],
        &["--publish", "E_TEST,E_OTHER", "--format", "jsonrpc"],
    );
    let udp = &bound[0];
    assert!(udp.starts_with("udp:127.0.0.1:"), "{udp}");
    assert_ne!(udp, "udp:127.0.0.1:0");
    assert_eq!(bound[1], unix_spec);
    // The UNIX listener's file: a socket, mode 0660.
    let meta = std::fs::metadata(&sock).unwrap();
    assert!(meta.file_type().is_socket());
    assert_eq!(meta.permissions().mode() & 0o777, 0o660);

    let events = udp_call(udp, &request_bytes("events_list", json!({})));
    assert_eq!(
        events["result"]["Events"][1],
        json!({"name": "E_OTHER", "id": 1})
    );
    assert_eq!(events["id"], 5);

    // Subscribe over UNIX (the client binds its own path, the reply comes back to it).
    let rx = Receiver::udp();
    let client_path = dir.join("client.sock");
    let client = UnixDatagram::bind(&client_path).unwrap();
    client.set_read_timeout(Some(DEADLINE)).unwrap();
    client
        .send_to(
            &request_bytes("event_subscribe", json!(["E_TEST", rx.target.to_string()])),
            &sock,
        )
        .unwrap();
    let mut buf = vec![0u8; 70_000];
    let n = client.recv(&mut buf).unwrap();
    assert_eq!(&buf[..n], br#"{"jsonrpc":"2.0","result":"OK","id":5}"#);

    let r = udp_call(
        udp,
        &request_bytes("raise_event", json!(["E_TEST", {"k": "v"}])),
    );
    assert_eq!(r["result"], "OK");
    assert!(rx.wait_for(1, DEADLINE));
    assert_eq!(
        rx.datagrams()[0],
        br#"{"jsonrpc":"2.0","method":"E_TEST","params":{"k":"v"}}"#
    );
    let stats = udp_call(udp, &request_bytes("stats", json!([])));
    assert_eq!(stats["result"]["events"]["raised"], 1, "{stats}");
    assert_eq!(
        stats["result"]["subscribers"][0]["socket"],
        rx.target.to_string()
    );

    // Errors do not stop the server.
    check_error(&udp_call(udp, b"{nope"), -32700, "Parse error", "");
    check_error(
        &udp_call(udp, &request_bytes("x", json!([]))),
        -32601,
        "Method not found",
        "",
    );
    // Oversized (UDP cannot even carry it; UNIX can): refused.
    client.send_to(&vec![b' '; 70_000], &sock).unwrap();
    let n = client.recv(&mut buf).unwrap();
    let r: Value = serde_json::from_slice(&buf[..n]).unwrap();
    // It read 65 537 bytes of the 70 000, and does not say a size it does not know.
    check_error(
        &r,
        -32600,
        "Invalid Request",
        "the request is larger than the 65536-byte limit (mi.max_request_bytes)",
    );
    let r = udp_call(udp, &request_bytes("subscribers_list", json!(["E_TEST"])));
    assert_eq!(r["result"]["Event"]["Subscribers"][0]["format"], "jsonrpc");

    p.signal(libc::SIGTERM);
    let final_stats = p.line_starting("evdgram: stopped by SIGTERM; final stats: ");
    assert!(final_stats.contains(r#""sent":1"#), "{final_stats}");
    assert!(p.wait().success());
    assert!(!sock.exists(), "the UNIX socket file is removed at exit");
}

/// Flags override the file (DESIGN, "Configuration"): `--mi` replaces `mi.listen` (the file's
/// socket is not bound), `--format` replaces `dispatcher.default_format`, `--publish` adds to
/// `events`; what no flag sets (the file's static subscription) stays.
#[test]
fn serve_flags_override_the_config_file() {
    let dir = TempDir::new("mi-override");
    let file_sock = dir.join("file-mi.sock");
    let rx = Receiver::udp();
    let config = dir.join("evdgram.yaml");
    std::fs::write(
        &config,
        format!(
            "dispatcher:\n  default_format: jsonrpc\nevents: [E_FILE]\nsubscriptions:\n  - \
             event: E_FILE\n    socket: {}\nmi:\n  listen: [\"unix:{}\"]\n",
            rx.target,
            file_sock.display()
        ),
    )
    .unwrap();
    let (mut p, bound) = serve(
        &["udp:127.0.0.1:0"],
        &[
            "--config",
            config.to_str().unwrap(),
            "--format",
            "line",
            "--publish",
            "E_FLAG",
        ],
    );
    assert!(!file_sock.exists(), "mi.listen's socket was bound too");
    let call = |method: &str, params: Value| udp_call(&bound[0], &request_bytes(method, params));
    assert_eq!(
        call("events_list", json!([]))["result"]["Events"],
        json!([{"name": "E_FILE", "id": 0}, {"name": "E_FLAG", "id": 1}])
    );
    let flag_rx = Receiver::udp();
    let r = call(
        "event_subscribe",
        json!(["E_FLAG", flag_rx.target.to_string()]),
    );
    assert_eq!(r["result"], "OK", "{r}");
    let r = call("subscribers_list", json!(["E_FLAG"]));
    assert_eq!(
        r["result"]["Event"]["Subscribers"][0]["format"], "line",
        "{r}"
    );
    for event in ["E_FLAG", "E_FILE"] {
        assert_eq!(call("raise_event", json!([event]))["result"], "OK");
    }
    assert!(flag_rx.wait_for(1, DEADLINE) && rx.wait_for(1, DEADLINE));
    assert_eq!(flag_rx.datagrams(), [b"E_FLAG\n\n".to_vec()]);
    // The static subscription takes the default format, as --format set it.
    assert_eq!(rx.datagrams(), [b"E_FILE\n\n".to_vec()]);
    p.signal(libc::SIGTERM);
    assert!(p.wait().success());
}

/// A UNIX client that sends requests and never reads the replies fills its queue (10
/// datagrams by default); its next replies are refused, and the listener goes on answering
/// everyone else (a blocking reply parked it until that client read).
#[test]
fn serve_keeps_answering_while_a_unix_client_does_not_read_its_replies() {
    use std::os::linux::net::SocketAddrExt;
    use std::os::unix::net::SocketAddr as UnixAddr;

    let dir = TempDir::new("mi-greedy");
    let sock = dir.join("mi.sock");
    let (mut p, _) = serve(&[&format!("unix:{}", sock.display())], &[]);
    let greedy = UnixDatagram::bind(dir.join("greedy.sock")).unwrap();
    greedy
        .set_write_timeout(Some(Duration::from_secs(2)))
        .unwrap();
    let request = request_bytes("events_list", json!([]));
    // Its sends may wait for the server (whose own queue holds 10); a parked server would
    // never take them all, so a send that times out ends the loop.
    let sent = (0..30)
        .take_while(|_| greedy.send_to(&request, &sock).is_ok())
        .count();
    // Another client, bound to an abstract name, is answered.
    let name = format!("evdgram-test-{}", std::process::id());
    let other = UnixDatagram::bind_addr(&UnixAddr::from_abstract_name(&name).unwrap()).unwrap();
    other.set_read_timeout(Some(DEADLINE)).unwrap();
    other.set_write_timeout(Some(DEADLINE)).unwrap();
    other
        .send_to(&request, &sock)
        .expect("the server takes the request");
    let mut buf = vec![0u8; 70_000];
    let n = other
        .recv(&mut buf)
        .expect("a reply while another client does not read");
    let r: Value = serde_json::from_slice(&buf[..n]).unwrap();
    assert!(r["result"]["Events"].is_array(), "{r}");
    assert_eq!(sent, 30, "the server took every request");
    // The greedy client's queue holds what it could; nothing more came.
    greedy.set_nonblocking(true).unwrap();
    let queued = std::iter::from_fn(|| greedy.recv(&mut buf).ok()).count();
    assert!((1..=30).contains(&queued), "{queued}");
    p.signal(libc::SIGTERM);
    assert!(p.wait().success());
    // Its refused replies are said once (it was one line each).
    let said: Vec<String> = p.stderr.iter().collect();
    let refused: Vec<&String> = said
        .iter()
        .filter(|l| l.starts_with("evdgram: cannot send an MI reply to "))
        .collect();
    assert_eq!(refused.len(), (sent - queued).min(1), "{said:#?}");
    if let Some(line) = refused.first() {
        assert!(
            line.contains("greedy.sock: Resource temporarily unavailable")
                && line.ends_with("(next report for this listener in 60 s at the earliest)"),
            "{line}"
        );
    }
    // The others are counted at stop: every refused reply is said, in one line or the other.
    let unsaid = (sent - queued).saturating_sub(1);
    let at_stop = format!(
        "evdgram: {unsaid} more MI replies on unix:{} could not be sent since the last report",
        sock.display()
    );
    assert_eq!(
        said.iter().filter(|l| **l == at_stop).count(),
        usize::from(unsaid > 0),
        "{at_stop:?} in {said:#?}"
    );
}

/// Refused before anything is bound. (That `allow_remote_control` lets a remote listener
/// through is the config's unit test: tests bind loopback addresses only.)
#[test]
fn serve_refuses_remote_listeners_unless_allowed() {
    let mut p = Proc::spawn(&["serve", "--mi", "udp:0.0.0.0:0"]);
    let err = p.line_starting("evdgram: ");
    // It names the flag, and where to allow it (there is no flag for it).
    assert_eq!(
        err,
        "evdgram: --mi udp:0.0.0.0:0 is not a loopback address or UNIX socket; to serve MI to \
         other hosts, set mi.allow_remote_control: true in the --config file"
    );
    assert_eq!(p.wait().code(), Some(2), "a configuration error");
}

/// Errors in what serve was given name it: `--publish` (it was `events: ...`), and an MI
/// socket given twice (its second bind said "another process is listening on this socket").
#[test]
fn serve_names_the_flag_or_key_at_fault() {
    let dir = TempDir::new("serve-names");
    let sock = format!("unix:{}", dir.join("mi.sock").display());
    let bare = dir.join("mi.sock").display().to_string();
    let twice = dir.join("twice.yaml");
    std::fs::write(
        &twice,
        format!(
            "mi:\n  listen: [\"udp:127.0.0.1:0\", \"{sock}\", \"udp:127.0.0.1:0\", \"{bare}\"]\n"
        ),
    )
    .unwrap();
    let twice = twice.to_str().unwrap();
    let cases: [(&[&str], String); 5] = [
        (
            &["--publish", ""],
            "error: invalid value '' for '--publish <E_A,E_B>': invalid event name: it is empty"
                .to_owned(),
        ),
        (
            &["--publish", "E_A,E\rB"],
            "error: invalid value 'E\rB' for '--publish <E_A,E_B>': invalid event name \
             \"E\\rB\": it contains a line break"
                .to_owned(),
        ),
        (
            &["--mi", &sock, "--mi", &sock],
            format!("evdgram: --mi {sock} is given twice: give each MI socket once"),
        ),
        (
            &["--mi", &sock, "--mi", &bare],
            format!(
                "evdgram: --mi {sock} and --mi {bare} are the same socket ({sock}): give each MI \
                 socket once"
            ),
        ),
        // Port 0 twice is two ports.
        (
            &["--config", twice],
            format!(
                "evdgram: {twice}: mi.listen[1] and mi.listen[3] are the same socket ({sock}): \
                 give each MI socket once"
            ),
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["serve"];
        all.extend(args);
        let mut p = Proc::spawn(&all);
        assert_eq!(p.line_starting(""), want, "{args:?}");
        assert_eq!(p.wait().code(), Some(2), "{args:?}");
        assert!(!dir.join("mi.sock").exists(), "{args:?}: nothing bound");
    }
}

/// What was given is wrong (the configuration, `EVDGRAM_BACKEND`): exit status 2, as for a bad
/// command line (it was 1); a failure at run time (a port in use): 1.
#[test]
fn serve_exits_2_for_a_bad_configuration_and_1_when_it_fails() {
    let dir = TempDir::new("serve-status");
    let missing = dir.join("missing.yaml");
    let bad = dir.join("bad.yaml");
    std::fs::write(&bad, "mi:\n  max_subscribers: -1\n").unwrap();
    let busy = UdpSocket::bind("127.0.0.1:0").unwrap();
    let busy = format!("udp:{}", busy.local_addr().unwrap());
    let (missing, bad) = (missing.to_str().unwrap(), bad.to_str().unwrap());
    let cases: [(&[&str], Option<&str>, i32, &str); 5] = [
        (&["--config", missing], None, 2, "cannot read"),
        (&["--config", bad], None, 2, "line 2"),
        (
            &["--mi", "udp:127.0.0.1:0"],
            Some("bogus"),
            2,
            "EVDGRAM_BACKEND",
        ),
        (
            &["--mi", "udp:127.0.0.1:0", "--publish", ""],
            None,
            2,
            "--publish",
        ),
        (&["--mi", &busy], None, 1, "Address already in use"),
    ];
    for (args, backend, status, said) in cases {
        let mut command = Command::new(EVDGRAM);
        command.arg("serve").args(args);
        match backend {
            Some(b) => command.env(event_datagram::BACKEND_ENV, b),
            None => command.env_remove(event_datagram::BACKEND_ENV),
        };
        let mut p = Proc::spawn_command(command);
        let err = p.line_starting("");
        assert!(err.contains(said), "{args:?}: {err}");
        assert_eq!(p.wait().code(), Some(status), "{args:?}: {err}");
    }
}

#[test]
fn listen_subscribes_itself_renews_and_unsubscribes_on_exit() {
    let (mut server, bound) = serve(&["udp:127.0.0.1:0"], &["--publish", "E_TEST"]);
    let udp = bound[0].clone();
    let mut l = Proc::spawn(&[
        "listen",
        "udp:127.0.0.1:0",
        "--subscribe",
        "E_TEST",
        "--mi",
        &udp,
        "--expire",
        "2",
    ]);
    let listening = l.line_starting("listening on ");
    let spec = listening.trim_start_matches("listening on ").to_owned();
    l.line_starting("subscribed ");
    let sub = || {
        udp_call(
            &udp,
            &request_bytes("subscribers_list", json!(["E_TEST", spec])),
        )
    };
    assert_eq!(sub()["result"]["Event"]["Subscriber"]["expire"], 2);
    // Renewed at half the lifetime: still there past the first lifetime (the first renewal,
    // due at 1 s, may be up to a second late).
    std::thread::sleep(Duration::from_millis(2_500));
    assert_eq!(
        sub()["result"]["Event"]["Subscriber"]["socket"],
        spec.as_str()
    );

    let r = udp_call(
        &udp,
        &request_bytes("raise_event", json!(["E_TEST", {"a": 1}])),
    );
    assert_eq!(r["result"], "OK");
    // Read on another thread, so that a listener that prints nothing fails the test.
    let stdout = l.child.stdout.take().unwrap();
    let (line_tx, line_rx) = mpsc::channel();
    std::thread::spawn(move || {
        let _ = line_tx.send(BufReader::new(stdout).lines().next());
    });
    let out = line_rx
        .recv_timeout(DEADLINE)
        .expect("a line on stdout")
        .expect("a line")
        .unwrap();
    assert_eq!(
        out,
        r#"{"event":"E_TEST","params":[{"name":"a","value":"1"}]}"#
    );

    l.signal(libc::SIGTERM);
    l.line_starting("unsubscribed ");
    assert!(l.wait().success());
    check_error(&sub(), 404, "Subscriber does not exist", "");

    // A refused subscription is an error at start, and the ones made before it are ended.
    let mut bad = Proc::spawn(&[
        "listen",
        "udp:127.0.0.1:0",
        "--subscribe",
        "E_TEST",
        "--subscribe",
        "E_NOPE",
        "--mi",
        &udp,
    ]);
    let spec = bad.line_starting("listening on ")["listening on ".len()..].to_owned();
    bad.line_starting(&format!("unsubscribed {spec} from E_TEST"));
    let err = bad.line_starting("evdgram: ");
    assert!(err.contains("400 Bad parameter value"), "{err}");
    assert_eq!(bad.wait().code(), Some(1));
    let listed = udp_call(
        &udp,
        &request_bytes("subscribers_list", json!(["E_TEST", spec])),
    );
    check_error(&listed, 404, "Subscriber does not exist", "");
    server.signal(libc::SIGTERM);
    assert!(server.wait().success());
}

// ---------------------------------------------------------------------------------------------
// `evdgram listen` against a fake MI endpoint

/// A fake MI endpoint on UDP: records each request with when it came, and answers the n-th
/// (from 0) with what `answer` gives (`result` or `error` members), or not at all for None.
struct FakeMi {
    spec: String,
    requests: Arc<Mutex<Vec<(Instant, Value)>>>,
    stop: Arc<AtomicBool>,
}

type Answer = Option<Value>;

fn ok() -> Answer {
    Some(json!({"result": "OK"}))
}

impl FakeMi {
    fn start(ip: &str, answer: impl Fn(usize, &Value) -> Answer + Send + 'static) -> FakeMi {
        let s = UdpSocket::bind((ip, 0)).unwrap();
        // Short, so that the thread sees `stop` soon.
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let spec = Target::Udp(s.local_addr().unwrap()).to_string();
        let requests = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (seen, stopped) = (Arc::clone(&requests), Arc::clone(&stop));
        std::thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            while !stopped.load(Ordering::Relaxed) {
                let Ok((n, from)) = s.recv_from(&mut buf) else {
                    continue;
                };
                let request: Value = serde_json::from_slice(&buf[..n]).unwrap();
                let i = {
                    let mut seen = seen.lock().unwrap();
                    seen.push((Instant::now(), request.clone()));
                    seen.len() - 1
                };
                if let Some(Value::Object(mut reply)) = answer(i, &request) {
                    reply.insert("jsonrpc".into(), json!("2.0"));
                    reply.insert("id".into(), request["id"].clone());
                    let _ = s.send_to(&serde_json::to_vec(&reply).unwrap(), from);
                }
            }
        });
        FakeMi {
            spec,
            requests,
            stop,
        }
    }

    fn requests(&self) -> Vec<(Instant, Value)> {
        self.requests.lock().unwrap().clone()
    }

    /// The `event_subscribe` requests for `event`, with when they came.
    fn subscribes(&self, event: &str) -> Vec<(Instant, Value)> {
        self.requests()
            .into_iter()
            .filter(|(_, r)| r["method"] == "event_subscribe" && r["params"][0] == event)
            .collect()
    }
}

impl Drop for FakeMi {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

/// Starts `evdgram listen SPEC --mi MI ARGS...` and returns it with its bound spec, once it has
/// said it subscribed.
fn listen(spec: &str, mi: &FakeMi, args: &[&str]) -> (Proc, String) {
    let mut all = vec!["listen", spec, "--mi", &mi.spec];
    all.extend(args);
    let l = Proc::spawn(&all);
    let bound = l.line_starting("listening on ")["listening on ".len()..].to_owned();
    l.line_starting("subscribed ");
    (l, bound)
}

/// A renewal that gets no reply is retried soon enough that the subscription does not end:
/// the second request (the renewal due at 4 s) is dropped, the third must come before the
/// first one's 8 s are up (it came after the full 5 s timeout and another 4 s: at 13 s).
#[test]
fn listen_retries_a_failed_renewal_before_the_subscription_ends() {
    let mi = FakeMi::start("127.0.0.1", |i, _| if i == 1 { None } else { ok() });
    let (mut l, _) = listen(
        "udp:127.0.0.1:0",
        &mi,
        &["--subscribe", "E_TEST", "--expire", "8"],
    );
    // Renewed at 4 s, that reply lost; tried again at about 6 s (it was 9 s and more).
    assert!(wait_until(DEADLINE, || mi.subscribes("E_TEST").len() >= 3));
    let subs = mi.subscribes("E_TEST");
    let late = subs[2].0 - subs[0].0;
    assert!(
        late < Duration::from_secs(8),
        "re-subscribed after {late:?}"
    );
    assert!(subs.iter().all(|(_, r)| r["params"][2] == 8), "{subs:?}");
    let err = l.line_starting("evdgram: cannot subscribe");
    assert!(err.contains("retrying in"), "{err}");
    l.signal(libc::SIGTERM);
    assert!(l.wait().success());
}

/// An MI endpoint that answers in 300 ms: renewals near the end wait less than that and fail,
/// and the subscription lapses; then a renewal waits its whole timeout and succeeds (every
/// try after the lapse waited 100 ms, and the subscription never came back).
#[test]
fn listen_subscribes_again_after_a_lapse_through_a_slow_mi() {
    let mi = FakeMi::start("127.0.0.1", |i, _| {
        if i > 0 {
            std::thread::sleep(Duration::from_millis(300));
        }
        ok()
    });
    let (mut l, _) = listen(
        "udp:127.0.0.1:0",
        &mi,
        &["--subscribe", "E_TEST", "--expire", "2"],
    );
    let back = l.line_starting("renewed the subscription");
    assert!(back.contains("E_TEST"), "{back}");
    l.signal(libc::SIGTERM);
    assert!(l.wait().success());
}

/// An event whose renewals fail does not stop the others' (the first failure ended the round,
/// and every later event went unrenewed), and its error is said.
#[test]
fn listen_renews_each_event_on_its_own() {
    let mi = FakeMi::start("127.0.0.1", |i, r| {
        if i > 0 && r["params"][0] == "E_A" {
            Some(json!({"error": {"code": 500, "message": "Nope"}}))
        } else {
            ok()
        }
    });
    let (mut l, _) = listen(
        "udp:127.0.0.1:0",
        &mi,
        &[
            "--subscribe",
            "E_A",
            "--subscribe",
            "E_B",
            "--subscribe",
            "E_C",
            "--expire",
            "2",
        ],
    );
    let renewed = wait_until(Duration::from_secs(5), || {
        mi.subscribes("E_B").len() >= 2 && mi.subscribes("E_C").len() >= 2
    });
    assert!(renewed, "{:#?}", mi.requests());
    let err = l.line_starting("evdgram: cannot subscribe");
    assert!(err.contains("E_A") && err.contains("500 Nope"), "{err}");
    l.signal(libc::SIGTERM);
    assert!(l.wait().success());
}

/// SIGTERM while renewals wait for an MI endpoint that stopped answering: the socket file goes
/// at once and the process ends within the one exit deadline (it waited for the renewal's 5 s
/// timeout, then 1 s per event to unsubscribe).
#[test]
fn listen_exits_promptly_on_a_signal_while_the_mi_does_not_answer() {
    let dir = TempDir::new("listen-exit");
    let sock = dir.join("events.sock");
    // The three subscriptions at start are answered, nothing after.
    let mi = FakeMi::start("127.0.0.1", |i, _| if i < 3 { ok() } else { None });
    let (mut l, _) = listen(
        &format!("unix:{}", sock.display()),
        &mi,
        &[
            "--subscribe",
            "E_A",
            "--subscribe",
            "E_B",
            "--subscribe",
            "E_C",
            "--expire",
            "2",
        ],
    );
    assert!(sock.exists());
    // A renewal is out, waiting for its reply.
    assert!(wait_until(DEADLINE, || mi.requests().len() > 3));
    let start = Instant::now();
    l.signal(libc::SIGTERM);
    assert!(
        wait_until(Duration::from_millis(500), || !sock.exists()),
        "the socket file is removed first"
    );
    let bound = Duration::from_millis(2_500);
    assert!(
        wait_until(bound, || l.child.try_wait().unwrap().is_some()),
        "no exit within {bound:?} of SIGTERM"
    );
    assert!(l.wait().success(), "exited after {:?}", start.elapsed());
    // Every event was unsubscribed (expire 0), unanswered as they were.
    let unsubscribed = |e: &str| mi.subscribes(e).last().unwrap().1["params"][2] == 0;
    assert!(
        wait_until(DEADLINE, || ["E_A", "E_B", "E_C"]
            .iter()
            .all(|e| unsubscribed(e))),
        "{:#?}",
        mi.requests()
    );
}
