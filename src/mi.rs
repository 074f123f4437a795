//! The MI control endpoint's request handler: JSON-RPC 2.0 requests in, replies out, with the
//! methods and reply shapes of the OpenSIPS 3.x Event Interface (as served by `mi_datagram`).
//!
//! [`MiHandler::handle`] takes one request datagram and returns the reply datagram. It does no
//! I/O: `evdgram serve` runs the socket loop (one request per datagram, the reply sent to the
//! requester's address), and library users can serve it on any transport.
//!
//! | method             | params (array or object)                   | result                      |
//! |--------------------|--------------------------------------------|-----------------------------|
//! | `event_subscribe`  | `event, socket, expire?, format?, coalesce?` | `"OK"`                    |
//! | `events_list`      | none                                       | `{"Events":[{"name","id"}]}`|
//! | `subscribers_list` | none, `event`, or `event, socket`          | see below                   |
//! | `raise_event`      | `event, params?`                           | `"OK"`                      |
//! | `stats`            | none                                       | backend and counters        |
//! | `which`            | none, or `command`                         | method names / param lists  |
//!
//! - `event_subscribe`: `expire` in seconds (default 3600; a number or a string of digits, as
//!   `opensips-cli` sends it); `0` ends the subscription at once (`"OK"` also when there was
//!   none, as in OpenSIPS). `format` (`line` or `jsonrpc`, an extension) chooses the wire
//!   format; the default is the dispatcher's `default_format`. `coalesce` (an extension),
//!   `{"max_bytes":N,"max_delay_us":M}`, packs consecutive events for this socket into one
//!   datagram (see [`Coalesce`]); listed back in the subscriber entry; `null` turns it off. A
//!   refresh that leaves `format` or `coalesce` out keeps what the subscription had.
//! - `subscribers_list`: `{"Events":[{"name","id","Subscribers":[S...]}]}` (events without
//!   subscribers are left out), `{"Event":{"name","id","Subscribers":[S...]}}` (`{"Event":{}}`
//!   when the event has no subscriber, as OpenSIPS prints it), or
//!   `{"Event":{"name","id","Subscriber":S}}`, where `S` is
//!   `{"socket":"udp:127.0.0.1:9000","expire":3600,"ttl":3598,"format":"line"}`: `expire` is the
//!   subscription's lifetime and `ttl` the seconds left, rounded up (both `"never"` for a
//!   subscription that does not expire), and `"coalesce":{"max_bytes":N,"max_delay_us":M}` when
//!   it is set; `ttl`, `format` and `coalesce` are extensions.
//! - `raise_event`: `params` is a JSON object (named parameters, in order, duplicate keys
//!   kept), an array (unnamed), or a string holding either (the OpenSIPS form); values are
//!   strings or integers in the i64 range. `"OK"` also when the event has no subscriber
//!   (OpenSIPS answers 480 then); the event is counted as unsubscribed.
//!
//! Errors (`{"jsonrpc":"2.0","error":{"code":C,"message":M,"data":D},"id":ID}`, `data` giving
//! the detail when there is one). A request that fails changes no state, with one exception:
//! a `raise_event` that `publish_on_demand` published and that then fails with 500 leaves the
//! name published (it counts towards `mi.max_events`).
//!
//! | code   | message                 | when                                                     |
//! |--------|-------------------------|----------------------------------------------------------|
//! | -32700 | `Parse error`           | not JSON                                                 |
//! | -32600 | `Invalid Request`       | not a JSON-RPC 2.0 request object; larger than the limit  |
//! | -32601 | `Method not found`      | unknown method                                           |
//! | -32602 | `Invalid params`        | wrong number, names or types of params; negative expire;  |
//! |        |                         | floats, booleans, null or nested values in `raise_event`; |
//! |        |                         | an event too large for a datagram in every subscriber's   |
//! |        |                         | format (too large in some only: raised, and counted       |
//! |        |                         | `failed_oversize` for those subscribers)                  |
//! | 400    | `Bad parameter value`   | on `event_subscribe`: bad socket spec, unknown event;     |
//! |        |                         | an invalid name `publish_on_demand` would publish         |
//! | 403    | `Destination not allowed` | the socket is outside `mi.allow_targets`               |
//! | 404    | `Event not published`   | `raise_event` / `subscribers_list` of an unknown event   |
//! | 404    | `Subscriber does not exist` | `subscribers_list` of a socket not subscribed, or    |
//! |        |                         | not a socket spec                                         |
//! | 500    | `Cannot Raise Event`    | the dispatcher's queue is full (policy `drop`; `block`:   |
//! |        |                         | still full after 1 s) or it stopped                      |
//! | 503    | `Too many subscribers`  | `mi.max_subscribers_per_event` / `mi.max_subscribers`     |
//! | 503    | `Too many events`       | `publish_on_demand` stops at `mi.max_events`             |
//! | -32000 | `Server error`          | the reply would not fit in a datagram                    |
//!
//! Real clients: the `opensips` package's `opensips-mi` reads a reply over UDP or UNIX with a
//! 32 768-byte buffer (its `datagram_buffer_size`), `opensips-cli` with 65 535 bytes, so a
//! longer reply (`stats` or `subscribers_list` with some hundreds of subscribers) reaches
//! `opensips-mi` cut. `opensips-event` subscribes (and refreshes, a minute before expiry) with
//! `[event, socket, expire]` and JSON-decodes every datagram: serve it with `jsonrpc` as the
//! default format (`evdgram serve --format jsonrpc`), or make its subscription once with
//! `format: jsonrpc`, which its refreshes keep.
//!
//! A request without `id` is a notification: it is carried out, and not answered. The `id` is
//! echoed back as given (a number as it was written: `1e2` as `1e2`, an integer of 40 digits
//! with all of them); `null` in a -32000 reply that would not fit in a datagram with the id.
//!
//! ```
//! use event_datagram::{Dispatcher, DispatcherConfig, MiConfig, MiHandler};
//!
//! let dispatcher = Dispatcher::start(DispatcherConfig::default())?;
//! dispatcher.publish("E_TEST")?;
//! let mi = MiHandler::for_dispatcher(&dispatcher, &MiConfig::default())?;
//! let reply = mi.handle(br#"{"jsonrpc":"2.0","method":"events_list","id":1}"#).unwrap();
//! assert_eq!(
//!     reply,
//!     br#"{"jsonrpc":"2.0","result":{"Events":[{"name":"E_TEST","id":0}]},"id":1}"#
//! );
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```

use std::fmt;
use std::net::IpAddr;
use std::path::{Component, Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::de::{self, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::Serialize;
use serde_json::value::RawValue;

use crate::config::{CoalesceSetting, ConfigError, MiConfig};
use crate::dispatcher::{Dispatcher, StatsHandle};
use crate::encode::{Format, MAX_DATAGRAM};
use crate::error::EncodeError;
use crate::event::{validate_event_name, Params, ValueRef};
use crate::publisher::Publisher;
use crate::registry::{
    Coalesce, Expiry, Limits, Registry, RegistryError, SubscriptionInfo, SubscriptionOptions,
};
use crate::stats::{Stats, TargetCounters};
use crate::target::{Target, UnixAddr};

/// How long `raise_event` waits for room under the `block` policy: a listener thread must not
/// hang while every receiver is stalled (it could not even serve the unsubscribe that fixes it).
const RAISE_WAIT: Duration = Duration::from_secs(1);

/// How long a request waits for a host name in a socket spec to resolve: the MI answers its
/// clients one at a time, and a silent name server would hold them all (10 s and more).
const LOOKUP_WAIT: Duration = Duration::from_secs(1);

/// The methods served, in the order `which` lists them.
pub const METHODS: [&str; 6] = [
    "event_subscribe",
    "events_list",
    "subscribers_list",
    "raise_event",
    "stats",
    "which",
];

/// The largest reply: what one UDP datagram over IPv4 carries.
pub const MAX_REPLY: usize = 65_507;

/// `event_subscribe`'s expire when none is given, in seconds (as in OpenSIPS).
pub const DEFAULT_EXPIRE: u64 = 3600;

/// The largest expire accepted, in seconds (OpenSIPS keeps it in an `unsigned int`).
pub const MAX_EXPIRE: u64 = u32::MAX as u64;

/// Where subscribers may receive events: networks and, optionally, UNIX sockets.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Allowlist {
    /// Every UNIX socket (`unix`).
    unix: bool,
    /// UNIX sockets under these directories (`unix:/dir`).
    unix_dirs: Vec<PathBuf>,
    nets: Vec<(IpAddr, u8)>,
}

impl Allowlist {
    /// Parses rules: `unix` (every UNIX socket the server may write to, `/dev/log` too),
    /// `unix:/dir` (UNIX socket files under that directory, symbolic links followed),
    /// an address (`10.0.0.7`, `::1`)
    /// or a network (`10.0.0.0/8`, `fd00::/8`). The error names the rule.
    pub fn parse<S: AsRef<str>>(rules: &[S]) -> Result<Allowlist, String> {
        let mut list = Allowlist {
            unix: false,
            unix_dirs: Vec::new(),
            nets: Vec::new(),
        };
        for (i, rule) in rules.iter().enumerate() {
            let rule = rule.as_ref();
            let bad = |why: &str| {
                format!(
                    "[{i}] {rule:?}: {why} (expected `unix`, `unix:/DIR`, an IP address or \
                     ADDRESS/PREFIX)"
                )
            };
            if rule == "unix" {
                list.unix = true;
                continue;
            }
            if let Some(dir) = rule.strip_prefix("unix:") {
                let dir = Path::new(dir);
                if !dir.is_absolute() || dir.components().any(|c| c == Component::ParentDir) {
                    return Err(bad("a directory must be an absolute path without `..`"));
                }
                list.unix_dirs.push(dir.to_path_buf());
                continue;
            }
            let (addr, prefix) = match rule.split_once('/') {
                Some((a, p)) => (a, Some(p)),
                None => (rule, None),
            };
            let addr: IpAddr = addr.parse().map_err(|_| bad("not an IP address"))?;
            let max = if addr.is_ipv4() { 32 } else { 128 };
            let prefix = match prefix {
                None => max,
                Some(p) => match p.parse::<u8>() {
                    Ok(p) if p <= max => p,
                    _ => return Err(bad(&format!("the prefix length must be 0 to {max}"))),
                },
            };
            list.nets.push((addr, prefix));
        }
        Ok(list)
    }

    /// True if events may be sent to `target`. IPv4-mapped IPv6 addresses match IPv4 rules.
    pub fn allows(&self, target: &Target) -> bool {
        match target {
            Target::Unix(UnixAddr::Path(path)) => {
                self.unix || self.unix_dirs.iter().any(|dir| within(path, dir))
            }
            Target::Unix(UnixAddr::Abstract(_)) => self.unix,
            Target::Udp(addr) => {
                let ip = match addr.ip() {
                    IpAddr::V6(v6) => v6.to_ipv4_mapped().map_or(IpAddr::V6(v6), IpAddr::V4),
                    v4 => v4,
                };
                self.nets
                    .iter()
                    .any(|&(net, prefix)| in_net(ip, net, prefix))
            }
        }
    }
}

/// True when the socket file `path` is under `dir`, by its name and where the file system
/// leads it: `..` could climb out, and so could a symbolic link in the directory (a client that
/// may create sockets there may create links too). The file, or where it will be, must be
/// under the directory's real path; a path whose directory does not exist is refused. A link
/// put in place of the file after this check is not seen: give `unix:/DIR` only for
/// directories whose entries untrusted clients cannot replace.
fn within(path: &Path, dir: &Path) -> bool {
    if path.components().any(|c| c == Component::ParentDir) || !path.starts_with(dir) {
        return false;
    }
    let real = std::fs::canonicalize(path).or_else(|_| match (path.parent(), path.file_name()) {
        (Some(parent), Some(_)) => std::fs::canonicalize(parent),
        _ => Err(std::io::ErrorKind::NotFound.into()),
    });
    match (real, std::fs::canonicalize(dir)) {
        (Ok(real), Ok(dir)) => real.starts_with(dir),
        _ => false,
    }
}

fn in_net(ip: IpAddr, net: IpAddr, prefix: u8) -> bool {
    match (ip, net) {
        (IpAddr::V4(ip), IpAddr::V4(net)) => {
            let mask = u32::MAX.checked_shl(32 - u32::from(prefix)).unwrap_or(0);
            u32::from(ip) & mask == u32::from(net) & mask
        }
        (IpAddr::V6(ip), IpAddr::V6(net)) => {
            let mask = u128::MAX.checked_shl(128 - u32::from(prefix)).unwrap_or(0);
            u128::from(ip) & mask == u128::from(net) & mask
        }
        _ => false,
    }
}

/// Answers MI requests about one dispatcher's events and subscriptions.
///
/// `Send + Sync`: share one handler between listener threads.
pub struct MiHandler {
    registry: Arc<Registry>,
    publisher: Publisher,
    stats: StatsHandle,
    default_format: Format,
    allow: Allowlist,
    limits: Limits,
    publish_on_demand: bool,
    max_events: usize,
    max_request_bytes: usize,
}

impl fmt::Debug for MiHandler {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("MiHandler")
            .field("default_format", &self.default_format)
            .field("allow", &self.allow)
            .field("limits", &self.limits)
            .field("publish_on_demand", &self.publish_on_demand)
            .field("max_events", &self.max_events)
            .field("max_request_bytes", &self.max_request_bytes)
            .finish_non_exhaustive()
    }
}

impl MiHandler {
    /// A handler over a dispatcher's registry, publisher and counters. The config's
    /// subscription limits apply to the subscriptions it makes.
    pub fn new(
        registry: Arc<Registry>,
        publisher: Publisher,
        stats: StatsHandle,
        default_format: Format,
        config: &MiConfig,
    ) -> Result<MiHandler, ConfigError> {
        config.validate()?;
        Ok(MiHandler {
            registry,
            publisher,
            stats,
            default_format,
            allow: config.allowlist()?,
            limits: config.limits(),
            publish_on_demand: config.publish_on_demand,
            max_events: config.max_events,
            max_request_bytes: config.max_request_bytes,
        })
    }

    /// A handler for `dispatcher` (see [`MiHandler::new`]).
    pub fn for_dispatcher(
        dispatcher: &Dispatcher,
        config: &MiConfig,
    ) -> Result<MiHandler, ConfigError> {
        Self::new(
            Arc::clone(dispatcher.registry()),
            dispatcher.publisher(),
            dispatcher.stats_handle(),
            dispatcher.default_format(),
            config,
        )
    }

    /// Requests larger than this are refused (`mi.max_request_bytes`).
    pub fn max_request_bytes(&self) -> usize {
        self.max_request_bytes
    }

    /// Handles one request datagram; returns the reply datagram, or `None` for a notification
    /// (a request without `id`).
    pub fn handle(&self, request: &[u8]) -> Option<Vec<u8>> {
        if request.len() > self.max_request_bytes {
            return Some(error_reply(
                &Id::Null,
                // No size: a server reads one byte past the limit, and no more, to see this.
                &MiError::invalid_request(format!(
                    "the request is larger than the {}-byte limit (mi.max_request_bytes)",
                    self.max_request_bytes
                )),
            ));
        }
        let json: Json = match serde_json::from_slice(request) {
            Ok(j) => j,
            Err(e) => {
                let err = MiError::new(-32700, "Parse error", Some(e.to_string()));
                return Some(error_reply(&Id::Null, &err));
            }
        };
        let req = match Request::from_json(&json, request) {
            Ok(r) => r,
            Err((id, err)) => return Some(fitted(error_reply(&id, &err), &id)),
        };
        let outcome = self.call(req.method, req.params);
        let id = req.id?;
        let reply = match outcome {
            Ok(result) => result.to_reply(&id),
            Err(err) => error_reply(&id, &err),
        };
        Some(fitted(reply, &id))
    }

    fn call(&self, method: &str, params: Args<'_>) -> Result<Reply, MiError> {
        match method {
            "event_subscribe" => self.event_subscribe(params),
            "events_list" => self.events_list(params),
            "subscribers_list" => self.subscribers_list(params),
            "raise_event" => self.raise_event(params),
            "stats" => self.stats(params),
            "which" => self.which(params),
            _ => Err(MiError::new(
                -32601,
                "Method not found",
                Some(format!("unknown method {method:?}; see `which`")),
            )),
        }
    }

    fn event_subscribe(&self, params: Args<'_>) -> Result<Reply, MiError> {
        let [event, socket, expire, format, coalesce] =
            params.bind(["event", "socket", "expire", "format", "coalesce"], 2)?;
        let event = string_param("event", event)?;
        let socket = string_param("socket", socket)?;
        let expire = match expire {
            None => DEFAULT_EXPIRE,
            Some(v) => expire_param(v)?,
        };
        // Left out: a new subscription takes the default, a refresh keeps its own (clients
        // such as opensips-event refresh with `[event, socket, expire]`).
        let format = match format {
            None => None,
            Some(v) => Some(
                string_param("format", Some(v))?
                    .parse::<Format>()
                    .map_err(|e| MiError::invalid_params(format!("format: {e}")))?,
            ),
        };
        let coalesce = match coalesce {
            None => None,
            Some(Json::Null) => Some(None),
            Some(v) => Some(Some(coalesce_param(v)?)),
        };
        let id = self
            .registry
            .lookup(event)
            .ok_or_else(|| MiError::bad_value(format!("event {event:?} is not published")))?;
        let target = Target::parse_within(socket, LOOKUP_WAIT)
            .map_err(|e| MiError::bad_value(e.to_string()))?;
        if expire == 0 {
            return match self.registry.unsubscribe(id, &target) {
                Ok(()) | Err(RegistryError::NotSubscribed { .. }) => Ok(Reply::Ok),
                Err(e) => Err(MiError::server(e.to_string())),
            };
        }
        if !self.allow.allows(&target) {
            return Err(MiError::new(
                403,
                "Destination not allowed",
                Some(format!(
                    "{target} is outside mi.allow_targets (the server sends events only to allowed destinations)"
                )),
            ));
        }
        let expiry = Expiry::After(Duration::from_secs(expire));
        let default_format = self.default_format;
        let options = |existing: Option<SubscriptionOptions>| {
            let base = existing.unwrap_or(default_format.into());
            SubscriptionOptions {
                format: format.unwrap_or(base.format),
                coalesce: coalesce.unwrap_or(base.coalesce),
            }
        };
        match self
            .registry
            .subscribe_or_refresh(id, target, expiry, options, self.limits)
        {
            Ok(_) => Ok(Reply::Ok),
            Err(e @ (RegistryError::TooMany { .. } | RegistryError::TooManyForEvent { .. })) => {
                Err(MiError::new(
                    503,
                    "Too many subscribers",
                    Some(e.to_string()),
                ))
            }
            Err(e) => Err(MiError::server(e.to_string())),
        }
    }

    fn events_list(&self, params: Args<'_>) -> Result<Reply, MiError> {
        params.bind::<0>([], 0)?;
        let events = self
            .registry
            .events()
            .into_iter()
            .map(|(name, id)| EventEntry {
                name: name.as_str().to_owned(),
                id: id.index(),
            })
            .collect();
        Ok(Reply::json(&EventsList { events }))
    }

    fn subscribers_list(&self, params: Args<'_>) -> Result<Reply, MiError> {
        let [event, socket] = params.bind(["event", "socket"], 0)?;
        if event.is_none() && socket.is_some() {
            return Err(MiError::invalid_params(
                "missing parameter \"event\"".to_owned(),
            ));
        }
        let Some(event) = event else {
            let mut events = Vec::new();
            for (name, id) in self.registry.events() {
                let subs = self.subscribers(id)?;
                if !subs.is_empty() {
                    events.push(EventSubs {
                        name: name.as_str().to_owned(),
                        id: id.index(),
                        subscribers: subs.iter().map(SubEntry::from).collect(),
                    });
                }
            }
            return Ok(Reply::json(&AllSubs { events }));
        };
        let name = string_param("event", Some(event))?;
        let id = self.registry.lookup(name).ok_or_else(not_published)?;
        let subs = self.subscribers(id)?;
        let Some(socket) = socket else {
            let event = if subs.is_empty() {
                OneEvent::Empty(Empty {})
            } else {
                OneEvent::Full(EventSubs {
                    name: name.to_owned(),
                    id: id.index(),
                    subscribers: subs.iter().map(SubEntry::from).collect(),
                })
            };
            return Ok(Reply::json(&EventReply { event }));
        };
        let socket = string_param("socket", Some(socket))?;
        let no_such = || MiError::new(404, "Subscriber does not exist", None);
        let target = Target::parse_within(socket, LOOKUP_WAIT).map_err(|_| no_such())?;
        let sub = subs
            .iter()
            .find(|s| s.target == target)
            .ok_or_else(no_such)?;
        Ok(Reply::json(&EventReply {
            event: EventSub {
                name: name.to_owned(),
                id: id.index(),
                subscriber: SubEntry::from(sub),
            },
        }))
    }

    fn subscribers(&self, id: crate::EventId) -> Result<Vec<SubscriptionInfo>, MiError> {
        self.registry
            .subscribers(id)
            .map_err(|e| MiError::server(e.to_string()))
    }

    fn raise_event(&self, params: Args<'_>) -> Result<Reply, MiError> {
        let [event, values] = params.bind(["event", "params"], 1)?;
        let name = string_param("event", event)?;
        let params = match values {
            None => Params::new(),
            Some(v) => event_params(v)?,
        };
        let id = match self.registry.lookup(name) {
            Some(id) => id,
            None if self.publish_on_demand => {
                validate_event_name(name).map_err(|e| MiError::bad_value(e.to_string()))?;
                self.check_size(name, &params, &[Format::Line, Format::Jsonrpc])?;
                // Names are kept for ever: a client raising ever new ones must not grow the
                // registry (and its every snapshot) without bound.
                let published = self
                    .registry
                    .publish_within(name, self.max_events)
                    .map_err(|e| MiError::bad_value(e.to_string()))?;
                published.ok_or_else(|| {
                    let why = format!(
                        "{} events are published, as many as mi.max_events allows",
                        self.max_events
                    );
                    MiError::new(503, "Too many events", Some(why))
                })?
            }
            None => return Err(not_published()),
        };
        let formats: Vec<Format> = self.subscribers(id)?.iter().map(|s| s.format).collect();
        self.check_size(name, &params, &formats)?;
        self.publisher
            .raise_timeout(id, params, RAISE_WAIT)
            .map_err(|e| MiError::new(500, "Cannot Raise Event", Some(e.to_string())))?;
        Ok(Reply::Ok)
    }

    /// Refuses an event that would fit in a datagram in none of `formats` (if any): nobody
    /// could get it. One that fits in some is raised; the reactor counts it `failed_oversize`
    /// for the subscribers of the others, as for any raise.
    fn check_size(&self, name: &str, params: &Params, formats: &[Format]) -> Result<(), MiError> {
        let mut buf = vec![0; MAX_DATAGRAM];
        let mut too_large = Vec::new();
        for format in Format::ALL.into_iter().filter(|f| formats.contains(f)) {
            match format.encode(name, params, &mut buf) {
                Err(EncodeError::TooLarge { len, max }) => too_large.push((format, len, max)),
                _ => return Ok(()),
            }
        }
        let Some(&(_, _, max)) = too_large.first() else {
            return Ok(());
        };
        let sizes: Vec<String> = too_large
            .iter()
            .map(|(format, len, _)| format!("{len} bytes in the {format} format"))
            .collect();
        Err(MiError::invalid_params(format!(
            "the event is {}, more than the {max}-byte datagram limit",
            sizes.join(" and ")
        )))
    }

    fn stats(&self, params: Args<'_>) -> Result<Reply, MiError> {
        params.bind::<0>([], 0)?;
        let stats = self
            .stats
            .stats()
            .ok_or_else(|| MiError::server("the dispatcher is shut down".to_owned()))?;
        Ok(Reply::Raw(stats_json(&stats)))
    }

    fn which(&self, params: Args<'_>) -> Result<Reply, MiError> {
        let [command] = params.bind(["command"], 0)?;
        let Some(command) = command else {
            return Ok(Reply::json(&METHODS));
        };
        let command = string_param("command", Some(command))?;
        let recipes: &[&[&str]] = match command {
            "event_subscribe" => &[
                &["event", "socket"],
                &["event", "socket", "expire"],
                &["event", "socket", "expire", "format"],
                &["event", "socket", "expire", "format", "coalesce"],
            ],
            "events_list" | "stats" => &[&[]],
            "subscribers_list" => &[&[], &["event"], &["event", "socket"]],
            "raise_event" => &[&["event"], &["event", "params"]],
            "which" => &[&[], &["command"]],
            _ => {
                return Err(MiError::invalid_params(format!(
                    "unknown command {command:?}"
                )))
            }
        };
        Ok(Reply::json(&recipes))
    }
}

/// The counters as the `stats` method returns them (and `evdgram serve` prints at exit):
/// `{"backend":"uring","events":{...},"totals":{...},"subscribers":[{"socket":...,...}]}`.
pub fn stats_json(stats: &Stats) -> String {
    let out = StatsOut {
        backend: stats.backend.as_str(),
        events: EventsOut {
            raised: stats.events.raised,
            dropped_queue_full: stats.events.dropped_queue_full,
            dispatched: stats.events.dispatched,
            unsubscribed: stats.events.unsubscribed,
            pending: stats.events.pending,
        },
        totals: CountersOut::from(&stats.totals),
        subscribers: stats
            .targets
            .iter()
            .map(|t| TargetOut {
                socket: t.target.to_string(),
                counters: CountersOut::from(&t.counters),
            })
            .collect(),
    };
    serde_json::to_string(&out).expect("plain structs serialize")
}

/// Parses event parameters from JSON text, as `raise_event` reads them: an object (named, in
/// order, duplicate keys kept) or an array (unnamed); values are strings or integers in the
/// i64 range. The error says which parameter is wrong and why.
pub fn params_from_json(text: &str) -> Result<Params, String> {
    let json: Json = serde_json::from_str(text).map_err(|e| e.to_string())?;
    match json {
        Json::Object(_) | Json::Array(_) => params_from_value(&json).map_err(|e| e.detail()),
        other => Err(format!(
            "expected a JSON object (named parameters) or array (unnamed parameters), not {}",
            other.kind()
        )),
    }
}

// ---- errors -------------------------------------------------------------------------------

#[derive(Debug)]
struct MiError {
    code: i64,
    message: &'static str,
    data: Option<String>,
}

impl MiError {
    fn new(code: i64, message: &'static str, data: Option<String>) -> MiError {
        MiError {
            code,
            message,
            data,
        }
    }

    fn invalid_request(data: String) -> MiError {
        MiError::new(-32600, "Invalid Request", Some(data))
    }

    fn invalid_params(data: String) -> MiError {
        MiError::new(-32602, "Invalid params", Some(data))
    }

    fn bad_value(data: String) -> MiError {
        MiError::new(400, "Bad parameter value", Some(data))
    }

    fn server(data: String) -> MiError {
        MiError::new(-32000, "Server error", Some(data))
    }

    fn detail(&self) -> String {
        self.data.clone().unwrap_or_else(|| self.message.to_owned())
    }
}

fn not_published() -> MiError {
    MiError::new(404, "Event not published", None)
}

// ---- requests -----------------------------------------------------------------------------

/// A request's `id`, echoed back as given.
#[derive(Clone, Debug, Serialize)]
#[serde(untagged)]
enum Id {
    Null,
    Str(String),
    Int(i64),
    UInt(u64),
    /// Any other number, as the request wrote it: read as a float it would come back as
    /// another value, or another text (`1e2` as `100.0`).
    Number(Box<RawValue>),
}

/// The text of the `id` member of `request`, a JSON object with one.
fn raw_id(request: &[u8]) -> Option<Box<RawValue>> {
    #[derive(serde::Deserialize)]
    struct WithId {
        id: Box<RawValue>,
    }
    serde_json::from_slice::<WithId>(request).ok().map(|r| r.id)
}

struct Request<'a> {
    method: &'a str,
    params: Args<'a>,
    /// `None` for a notification.
    id: Option<Id>,
}

impl<'a> Request<'a> {
    /// The request in `json`, read from `request`.
    fn from_json(json: &'a Json, request: &[u8]) -> Result<Request<'a>, (Id, MiError)> {
        let Json::Object(members) = json else {
            return Err((
                Id::Null,
                MiError::invalid_request(format!(
                    "expected a JSON-RPC request object, not {}",
                    json.kind()
                )),
            ));
        };
        let member = |key: &str| -> Result<Option<&'a Json>, MiError> {
            let mut found = members.iter().filter(|(k, _)| k == key).map(|(_, v)| v);
            let first = found.next();
            if found.next().is_some() {
                return Err(MiError::invalid_request(format!(
                    "duplicate member {key:?}"
                )));
            }
            Ok(first)
        };
        let id = match member("id").map_err(|e| (Id::Null, e))? {
            None => None,
            Some(Json::Null) => Some(Id::Null),
            Some(Json::Str(s)) => Some(Id::Str(s.clone())),
            Some(Json::Int(n)) => Some(Id::Int(*n)),
            Some(Json::UInt(n)) => Some(Id::UInt(*n)),
            // Read once more, for its text: a rare id (JSON-RPC advises integers).
            Some(Json::Float(_)) => Some(raw_id(request).map_or(Id::Null, Id::Number)),
            Some(other) => {
                return Err((
                    Id::Null,
                    MiError::invalid_request(format!(
                        "id must be a string, a number or null, not {}",
                        other.kind()
                    )),
                ))
            }
        };
        let fail = |e: MiError| (id.clone().unwrap_or(Id::Null), e);
        match member("jsonrpc").map_err(fail)? {
            Some(Json::Str(v)) if v == "2.0" => {}
            _ => {
                return Err(fail(MiError::invalid_request(
                    "\"jsonrpc\" must be \"2.0\"".to_owned(),
                )))
            }
        }
        let method = match member("method").map_err(fail)? {
            Some(Json::Str(m)) => m.as_str(),
            _ => {
                return Err(fail(MiError::invalid_request(
                    "\"method\" must be a string".to_owned(),
                )))
            }
        };
        let params = match member("params").map_err(fail)? {
            None => Args::Positional(&[]),
            Some(Json::Array(a)) => Args::Positional(a),
            Some(Json::Object(o)) => Args::Named(o),
            Some(other) => {
                return Err(fail(MiError::invalid_request(format!(
                    "\"params\" must be an array or an object, not {}",
                    other.kind()
                ))))
            }
        };
        Ok(Request { method, params, id })
    }
}

/// A request's params: positional or named.
#[derive(Clone, Copy)]
enum Args<'a> {
    Positional(&'a [Json]),
    Named(&'a [(String, Json)]),
}

impl<'a> Args<'a> {
    /// Binds the params to `names`, of which the first `required` must be given.
    fn bind<const N: usize>(
        self,
        names: [&str; N],
        required: usize,
    ) -> Result<[Option<&'a Json>; N], MiError> {
        let mut out = [None; N];
        match self {
            Args::Positional(values) => {
                if values.len() < required || values.len() > N {
                    return Err(MiError::invalid_params(format!(
                        "Too few or too many parameters: expected {} ({})",
                        if required == N {
                            format!("{N}")
                        } else {
                            format!("{required} to {N}")
                        },
                        names.join(", ")
                    )));
                }
                for (slot, v) in out.iter_mut().zip(values) {
                    *slot = Some(v);
                }
            }
            Args::Named(members) => {
                for (key, value) in members {
                    let Some(i) = names.iter().position(|n| n == key) else {
                        return Err(MiError::invalid_params(format!(
                            "unknown parameter {key:?} (expected: {})",
                            names.join(", ")
                        )));
                    };
                    if out[i].replace(value).is_some() {
                        return Err(MiError::invalid_params(format!(
                            "parameter {key:?} is given twice"
                        )));
                    }
                }
                if let Some(missing) = names[..required]
                    .iter()
                    .zip(&out)
                    .find_map(|(n, v)| v.is_none().then_some(n))
                {
                    return Err(MiError::invalid_params(format!(
                        "missing parameter {missing:?}"
                    )));
                }
            }
        }
        Ok(out)
    }
}

fn string_param<'a>(name: &str, value: Option<&'a Json>) -> Result<&'a str, MiError> {
    match value {
        Some(Json::Str(s)) if !s.is_empty() => Ok(s),
        Some(Json::Str(_)) => Err(MiError::invalid_params(format!("{name} is empty"))),
        Some(other) => Err(MiError::invalid_params(format!(
            "{name} must be a string, not {}",
            other.kind()
        ))),
        None => Err(MiError::invalid_params(format!(
            "missing parameter {name:?}"
        ))),
    }
}

/// An expire: an integer, or a string holding one (as `opensips-cli` sends positional params).
fn expire_param(value: &Json) -> Result<u64, MiError> {
    let n: i128 = match value {
        Json::Int(n) => i128::from(*n),
        Json::UInt(n) => i128::from(*n),
        Json::Str(s) => s.trim().parse::<i128>().map_err(|_| {
            MiError::invalid_params(format!("expire must be an integer, not {s:?}"))
        })?,
        other => {
            return Err(MiError::invalid_params(format!(
                "expire must be an integer, not {}",
                other.kind()
            )))
        }
    };
    if n < 0 {
        return Err(MiError::invalid_params("Negative expire value".to_owned()));
    }
    u64::try_from(n)
        .ok()
        .filter(|&n| n <= MAX_EXPIRE)
        .ok_or_else(|| {
            MiError::invalid_params(format!("expire {n} is more than {MAX_EXPIRE} seconds"))
        })
}

/// `raise_event`'s `params`: an object, an array, or a string holding either.
fn event_params(value: &Json) -> Result<Params, MiError> {
    match value {
        Json::Str(text) => {
            let inner: Json = serde_json::from_str(text).map_err(|e| {
                MiError::invalid_params(format!(
                    "params is a string that is not a JSON object ({e})"
                ))
            })?;
            match inner {
                Json::Object(_) | Json::Array(_) => params_from_value(&inner),
                other => Err(MiError::invalid_params(format!(
                    "params is a string holding {}, not a JSON object",
                    other.kind()
                ))),
            }
        }
        Json::Object(_) | Json::Array(_) => params_from_value(value),
        other => Err(MiError::invalid_params(format!(
            "params must be an object, an array or a string holding a JSON object, not {}",
            other.kind()
        ))),
    }
}

fn params_from_value(value: &Json) -> Result<Params, MiError> {
    let items: Vec<(Option<&str>, &Json)> = match value {
        Json::Object(members) => members.iter().map(|(k, v)| (Some(k.as_str()), v)).collect(),
        Json::Array(values) => values.iter().map(|v| (None, v)).collect(),
        _ => unreachable!("called with an object or an array"),
    };
    let mut params = Params::new();
    for (i, (name, value)) in items.into_iter().enumerate() {
        let which = || match name {
            Some(name) => format!("parameter {name:?}"),
            None => format!("parameter #{}", i + 1),
        };
        let value = match value {
            Json::Int(n) => ValueRef::Int(*n),
            Json::UInt(n) => match i64::try_from(*n) {
                Ok(n) => ValueRef::Int(n),
                Err(_) => {
                    return Err(MiError::invalid_params(format!(
                        "{}: integer {n} is outside the i64 range",
                        which()
                    )))
                }
            },
            Json::Str(s) => ValueRef::Str(s),
            other => {
                return Err(MiError::invalid_params(format!(
                "{}: unsupported value: {} (values must be strings or integers in the i64 range)",
                which(),
                other.kind()
            )))
            }
        };
        params
            .push(name, value)
            .map_err(|e| MiError::invalid_params(e.to_string()))?;
    }
    Ok(params)
}

/// `{"max_bytes": N, "max_delay_us": M}` (`max_delay_us` optional), as in the configuration.
fn coalesce_param(v: &Json) -> Result<Coalesce, MiError> {
    let bad = |why: String| MiError::invalid_params(format!("coalesce: {why}"));
    let Json::Object(members) = v else {
        return Err(bad(format!(
            "expected {{\"max_bytes\": N, \"max_delay_us\": M}}, got {}",
            v.kind()
        )));
    };
    let mut setting = CoalesceSetting {
        max_bytes: 0,
        max_delay_us: 1_000,
    };
    let mut has_max_bytes = false;
    for (key, value) in members {
        let n = match value {
            Json::Int(n) if *n >= 0 => *n as u64,
            Json::UInt(n) => *n,
            other => {
                return Err(bad(format!(
                    "{key} must be a non-negative integer, not {}",
                    other.kind()
                )))
            }
        };
        match key.as_str() {
            "max_bytes" => {
                setting.max_bytes = usize::try_from(n).unwrap_or(usize::MAX);
                has_max_bytes = true;
            }
            "max_delay_us" => setting.max_delay_us = n,
            _ => {
                return Err(bad(format!(
                    "unknown key {key:?} (expected max_bytes, max_delay_us)"
                )))
            }
        }
    }
    if !has_max_bytes {
        return Err(bad("max_bytes is missing".to_owned()));
    }
    setting
        .coalesce()
        .map_err(|e| MiError::invalid_params(e.to_string()))
}

// ---- JSON with order and duplicate keys kept ----------------------------------------------

/// A JSON value whose objects keep their members' order and duplicate keys.
#[derive(Debug)]
enum Json {
    Null,
    Bool(bool),
    Int(i64),
    UInt(u64),
    Float(f64),
    Str(String),
    Array(Vec<Json>),
    Object(Vec<(String, Json)>),
}

impl Json {
    fn kind(&self) -> String {
        match self {
            Json::Null => "null".to_owned(),
            Json::Bool(b) => format!("boolean {b}"),
            Json::Int(_) | Json::UInt(_) => "an integer".to_owned(),
            Json::Float(x) => {
                if x.fract() == 0.0 && x.abs() >= 9_223_372_036_854_775_808.0 {
                    format!("number {x} (outside the i64 range)")
                } else {
                    format!("float {x}")
                }
            }
            Json::Str(_) => "a string".to_owned(),
            Json::Array(_) => "a nested array".to_owned(),
            Json::Object(_) => "a nested object".to_owned(),
        }
    }
}

impl<'de> de::Deserialize<'de> for Json {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct JsonVisitor;
        impl<'de> Visitor<'de> for JsonVisitor {
            type Value = Json;

            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a JSON value")
            }
            fn visit_unit<E: de::Error>(self) -> Result<Json, E> {
                Ok(Json::Null)
            }
            fn visit_bool<E: de::Error>(self, b: bool) -> Result<Json, E> {
                Ok(Json::Bool(b))
            }
            fn visit_i64<E: de::Error>(self, n: i64) -> Result<Json, E> {
                Ok(Json::Int(n))
            }
            fn visit_u64<E: de::Error>(self, n: u64) -> Result<Json, E> {
                Ok(i64::try_from(n).map_or(Json::UInt(n), Json::Int))
            }
            fn visit_f64<E: de::Error>(self, x: f64) -> Result<Json, E> {
                Ok(Json::Float(x))
            }
            fn visit_str<E: de::Error>(self, s: &str) -> Result<Json, E> {
                Ok(Json::Str(s.to_owned()))
            }
            fn visit_string<E: de::Error>(self, s: String) -> Result<Json, E> {
                Ok(Json::Str(s))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<Json, A::Error> {
                let mut out = Vec::new();
                while let Some(v) = seq.next_element()? {
                    out.push(v);
                }
                Ok(Json::Array(out))
            }
            fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Json, A::Error> {
                let mut out = Vec::new();
                while let Some((k, v)) = map.next_entry::<String, Json>()? {
                    out.push((k, v));
                }
                Ok(Json::Object(out))
            }
        }
        d.deserialize_any(JsonVisitor)
    }
}

// ---- replies ------------------------------------------------------------------------------

enum Reply {
    Ok,
    /// A serialized JSON result.
    Raw(String),
}

impl Reply {
    fn json<T: Serialize + ?Sized>(value: &T) -> Reply {
        Reply::Raw(serde_json::to_string(value).expect("plain structs serialize"))
    }

    fn to_reply(&self, id: &Id) -> Vec<u8> {
        let result = match self {
            Reply::Ok => "\"OK\"",
            Reply::Raw(s) => s.as_str(),
        };
        let id = serde_json::to_string(id).expect("ids serialize");
        format!("{{\"jsonrpc\":\"2.0\",\"result\":{result},\"id\":{id}}}").into_bytes()
    }
}

/// `reply` if a datagram carries it; else a -32000 error that says so, with the request's id
/// if that fits, else with `null` (the id itself made it too long).
fn fitted(reply: Vec<u8>, id: &Id) -> Vec<u8> {
    if reply.len() <= MAX_REPLY {
        return reply;
    }
    let err = MiError::new(
        -32000,
        "Server error",
        Some(format!(
            "the reply is {} bytes, more than a datagram carries ({MAX_REPLY})",
            reply.len()
        )),
    );
    let with_id = error_reply(id, &err);
    if with_id.len() <= MAX_REPLY {
        with_id
    } else {
        error_reply(&Id::Null, &err)
    }
}

fn error_reply(id: &Id, err: &MiError) -> Vec<u8> {
    #[derive(Serialize)]
    struct Body<'a> {
        code: i64,
        message: &'a str,
        #[serde(skip_serializing_if = "Option::is_none")]
        data: Option<&'a str>,
    }
    #[derive(Serialize)]
    struct ErrorReply<'a> {
        jsonrpc: &'static str,
        error: Body<'a>,
        id: &'a Id,
    }
    serde_json::to_vec(&ErrorReply {
        jsonrpc: "2.0",
        error: Body {
            code: err.code,
            message: err.message,
            data: err.data.as_deref(),
        },
        id,
    })
    .expect("plain structs serialize")
}

#[derive(Serialize)]
struct EventEntry {
    name: String,
    id: u32,
}

#[derive(Serialize)]
struct EventsList {
    #[serde(rename = "Events")]
    events: Vec<EventEntry>,
}

#[derive(Serialize)]
struct AllSubs {
    #[serde(rename = "Events")]
    events: Vec<EventSubs>,
}

#[derive(Serialize)]
struct EventSubs {
    name: String,
    id: u32,
    #[serde(rename = "Subscribers")]
    subscribers: Vec<SubEntry>,
}

#[derive(Serialize)]
struct EventSub {
    name: String,
    id: u32,
    #[serde(rename = "Subscriber")]
    subscriber: SubEntry,
}

#[derive(Serialize)]
struct EventReply<T> {
    #[serde(rename = "Event")]
    event: T,
}

#[derive(Serialize)]
struct Empty {}

#[derive(Serialize)]
#[serde(untagged)]
enum OneEvent {
    Empty(Empty),
    Full(EventSubs),
}

#[derive(Serialize)]
#[serde(untagged)]
enum Secs {
    Secs(u64),
    Never(&'static str),
}

#[derive(Serialize)]
struct SubEntry {
    socket: String,
    expire: Secs,
    ttl: Secs,
    format: &'static str,
    #[serde(skip_serializing_if = "Option::is_none")]
    coalesce: Option<CoalesceOut>,
}

#[derive(Serialize)]
struct CoalesceOut {
    max_bytes: usize,
    max_delay_us: u128,
}

impl From<&SubscriptionInfo> for SubEntry {
    fn from(s: &SubscriptionInfo) -> SubEntry {
        let never = Secs::Never("never");
        SubEntry {
            socket: s.target.to_string(),
            expire: match s.expiry {
                Expiry::Never => Secs::Never("never"),
                Expiry::After(d) => Secs::Secs(d.as_secs()),
            },
            // Whole seconds left, rounded up as OpenSIPS's whole-second ticks show them: the
            // expire itself just after subscribing, 0 only in the subscription's last instant.
            ttl: s.remaining.map_or(never, |d| {
                Secs::Secs(d.as_secs() + u64::from(d.subsec_nanos() > 0))
            }),
            format: s.format.as_str(),
            coalesce: s.coalesce.map(|c| CoalesceOut {
                max_bytes: c.max_bytes(),
                max_delay_us: c.max_delay().as_micros(),
            }),
        }
    }
}

#[derive(Serialize)]
struct StatsOut<'a> {
    backend: &'a str,
    events: EventsOut,
    totals: CountersOut,
    subscribers: Vec<TargetOut>,
}

#[derive(Serialize)]
struct EventsOut {
    raised: u64,
    dropped_queue_full: u64,
    dispatched: u64,
    unsubscribed: u64,
    pending: u64,
}

#[derive(Serialize)]
struct TargetOut {
    socket: String,
    #[serde(flatten)]
    counters: CountersOut,
}

#[derive(Serialize)]
struct CountersOut {
    raised: u64,
    sent: u64,
    datagrams: u64,
    bytes: u64,
    dropped_retry_overflow: u64,
    dropped_shutdown: u64,
    failed_unreachable: u64,
    failed_oversize: u64,
    failed_other: u64,
    pending: u64,
    gso_refused: u64,
}

impl From<&TargetCounters> for CountersOut {
    fn from(c: &TargetCounters) -> CountersOut {
        CountersOut {
            raised: c.raised,
            sent: c.sent,
            datagrams: c.datagrams,
            bytes: c.bytes,
            dropped_retry_overflow: c.dropped_retry_overflow,
            dropped_shutdown: c.dropped_shutdown,
            failed_unreachable: c.failed_unreachable,
            failed_oversize: c.failed_oversize,
            failed_other: c.failed_other,
            pending: c.pending,
            gso_refused: c.gso_refused,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allowlist_matches_networks_and_unix() {
        let a = Allowlist::parse(&["127.0.0.0/8", "::1/128", "unix", "10.1.2.3"]).unwrap();
        let t = |s: &str| Target::parse(s).unwrap();
        assert!(a.allows(&t("udp:127.9.9.9:1")));
        assert!(a.allows(&t("udp:[::1]:1")));
        assert!(a.allows(&t("udp:[::ffff:127.0.0.1]:1")));
        assert!(a.allows(&t("udp:10.1.2.3:1")));
        assert!(!a.allows(&t("udp:10.1.2.4:1")));
        assert!(!a.allows(&t("udp:[::2]:1")));
        assert!(a.allows(&t("unix:/tmp/x")));
        let none = Allowlist::parse::<&str>(&[]).unwrap();
        assert!(!none.allows(&t("unix:/tmp/x")));
        let all = Allowlist::parse(&["0.0.0.0/0", "::/0"]).unwrap();
        assert!(all.allows(&t("udp:8.8.8.8:53")));
        assert!(all.allows(&t("udp:[2001:db8::1]:53")));
        for bad in ["10.0.0.0/33", "::/129", "localhost", "10.0.0.0/x", ""] {
            let err = Allowlist::parse(&[bad]).unwrap_err();
            assert!(err.contains("expected `unix`"), "{err}");
        }
    }

    #[test]
    fn a_unix_directory_rule_allows_the_sockets_under_it_only() {
        let tmp = std::env::temp_dir().join(format!("evdgram-allow-{}", std::process::id()));
        let dir = tmp.join("allowed");
        std::fs::create_dir_all(dir.join("deeper")).unwrap();
        std::fs::create_dir_all(tmp.join("allowed-other")).unwrap();
        std::fs::write(tmp.join("outside.sock"), b"").unwrap();
        std::os::unix::fs::symlink(tmp.join("outside.sock"), dir.join("link")).unwrap();
        let rule = format!("unix:{}", dir.display());
        let a = Allowlist::parse(&[rule.as_str()]).unwrap();
        let allows =
            |rel: &str| a.allows(&Target::parse(&format!("unix:{}/{rel}", tmp.display())).unwrap());
        assert!(
            allows("allowed/listen.sock"),
            "not there yet: its directory is"
        );
        assert!(allows("allowed/deeper/x"));
        assert!(
            !allows("allowed/missing/x"),
            "a directory that does not exist"
        );
        assert!(!allows("outside.sock"));
        assert!(
            !allows("allowed-other/x"),
            "a prefix of names, not of paths"
        );
        assert!(!allows("allowed/../outside.sock"));
        assert!(
            !allows("allowed/link"),
            "a link that leads out of the directory"
        );
        std::fs::remove_dir_all(&tmp).unwrap();
        let t = |s: &str| Target::parse(s).unwrap();
        assert!(!a.allows(&t("unix:/dev/log")));
        assert!(
            !a.allows(&t("unix:@evdgram")),
            "abstract names only with `unix`"
        );
        assert!(!a.allows(&t("udp:127.0.0.1:9")));
        for bad in ["unix:run/evdgram", "unix:/run/../dev", "unix:"] {
            let err = Allowlist::parse(&[bad]).unwrap_err();
            assert!(err.contains("absolute path without `..`"), "{bad}: {err}");
        }
    }

    #[test]
    fn params_from_json_keeps_order_and_duplicates() {
        let p = params_from_json(r#"{"b":1,"a":"x","b":"y"}"#).unwrap();
        let v: Vec<_> = p
            .iter()
            .map(|p| (p.name.map(str::to_owned), p.value.to_owned()))
            .collect();
        assert_eq!(v.len(), 3);
        assert_eq!(v[0].0.as_deref(), Some("b"));
        assert_eq!(v[2].0.as_deref(), Some("b"));
        for bad in [
            "[1.5]",
            "[true]",
            "[null]",
            "[[1]]",
            r#"{"a":{}}"#,
            "18446744073709551615",
            "[18446744073709551615]",
        ] {
            assert!(params_from_json(bad).is_err(), "{bad}");
        }
    }
}
