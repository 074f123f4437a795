//! Configuration: YAML (serde-saphyr) with unknown keys refused. Every value is checked as it
//! is read (a key, a type, a range, an event name, a socket spec, an allowlist rule, a
//! coalescing setting), so that an error names the key and its line; the one check of two keys
//! together (a remote MI listener needs `allow_remote_control`) names the key, after parsing.
//! A section or list left empty (nothing after its colon, or only comments) means its default,
//! as if it were left out.
//!
//! See `config/event-datagram.yaml` for a commented example with every key.

use std::fmt;
use std::path::Path;
use std::str::FromStr;
use std::time::Duration;

use serde::de::{self, Deserializer};
use serde::Deserialize;

use crate::encode::Format;
use crate::event::validate_event_name;
use crate::mi::Allowlist;
use crate::registry::{Coalesce, Expiry, InvalidCoalesce, Limits};
use crate::target::Target;

/// Which backend to run; `EVDGRAM_BACKEND=uring|syscall|auto` overrides the configured value.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum BackendChoice {
    /// io_uring when the kernel allows it, else `syscall` (and one log line saying why).
    #[default]
    Auto,
    /// io_uring, or an error at start if it is unavailable.
    Uring,
    /// Non-blocking sockets and `sendmmsg`.
    Syscall,
}

impl FromStr for BackendChoice {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, String> {
        match s {
            "auto" => Ok(BackendChoice::Auto),
            "uring" => Ok(BackendChoice::Uring),
            "syscall" => Ok(BackendChoice::Syscall),
            _ => Err(format!(
                "unknown backend {s:?}: expected auto, uring or syscall"
            )),
        }
    }
}

/// What [`Publisher::raise`](crate::Publisher::raise) does when the channel is full.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum QueuePolicy {
    /// Wait for room.
    #[default]
    Block,
    /// Hand the event back in the error, and count it.
    Drop,
}

/// Settings of the dispatcher (channel, reactor, backend).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DispatcherConfig {
    /// Backend to run.
    pub backend: BackendChoice,
    /// Events the channel between producers and the reactor holds (a few milliseconds' worth:
    /// deeper only moves the events in flight out of the CPU's caches).
    #[serde(deserialize_with = "read_queue_capacity")]
    pub queue_capacity: usize,
    /// Bytes of large events' params (those kept on the heap, beyond
    /// [`Params::INLINE_BYTES`](crate::Params::INLINE_BYTES)) the channel holds: it is full
    /// when either bound is reached. An event larger than this still goes, once the channel
    /// holds at most half of it. The default, 2 MiB, keeps the params in flight in the CPU's
    /// caches between the producer that writes them and the reactor that encodes them: with
    /// 32 MiB, 1400-byte events went about a quarter slower on an AMD EPYC machine.
    #[serde(deserialize_with = "read_queue_bytes")]
    pub queue_bytes: usize,
    /// What `raise` does when the channel is full.
    pub queue_full: QueuePolicy,
    /// Events the reactor takes from the channel per round (and sends per target per round).
    #[serde(deserialize_with = "read_batch")]
    pub batch: usize,
    /// io_uring submission queue entries.
    #[serde(deserialize_with = "read_ring_entries")]
    pub ring_entries: u32,
    /// Bytes of encode buffers kept for reuse after load peaks; beyond this, buffers left
    /// unused for a second go back to the heap.
    pub buffer_pool_bytes: usize,
    /// Datagrams each target may hold while its receiver is slow; more are dropped, counted.
    #[serde(deserialize_with = "read_retry_queue")]
    pub retry_queue: usize,
    /// Bytes of datagrams each target may hold while its receiver is slow (plus one round's
    /// worth), counted in the buffers they hold (512 B, 2, 8 or 64 KiB each); more are
    /// dropped, counted. Whichever of the two bounds comes first applies.
    #[serde(deserialize_with = "read_retry_queue_bytes")]
    pub retry_queue_bytes: usize,
    /// Format of subscriptions that do not choose one.
    pub default_format: Format,
    /// Send runs of equal-size datagrams to one UDP target as one UDP GSO message
    /// (receivers still get separate, identical datagrams); used where the kernel supports it.
    pub udp_gso: bool,
    /// How long `shutdown` waits for slow receivers before counting what is left as dropped.
    pub shutdown_timeout_ms: u64,
}

impl Default for DispatcherConfig {
    fn default() -> Self {
        DispatcherConfig {
            backend: BackendChoice::Auto,
            queue_capacity: 4_096,
            queue_bytes: 2 << 20,
            queue_full: QueuePolicy::Block,
            batch: 256,
            ring_entries: 1024,
            buffer_pool_bytes: 8 << 20,
            retry_queue: 1024,
            retry_queue_bytes: 16 << 20,
            default_format: Format::Line,
            udp_gso: true,
            shutdown_timeout_ms: 5_000,
        }
    }
}

impl DispatcherConfig {
    /// The most events `queue_capacity` allows (a slot holds an event with its inline params,
    /// about 270 bytes, allocated at start).
    pub const MAX_QUEUE_CAPACITY: usize = 1 << 20;

    /// The shutdown timeout as a [`Duration`].
    pub fn shutdown_timeout(&self) -> Duration {
        Duration::from_millis(self.shutdown_timeout_ms)
    }

    /// Checks the values of a configuration built in code (a file's are checked as it is read,
    /// where the error also names the line); the message names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        check_bounds([
            (&QUEUE_CAPACITY, self.queue_capacity as u64),
            (&QUEUE_BYTES, self.queue_bytes as u64),
            (&BATCH, self.batch as u64),
            (&RING_ENTRIES, self.ring_entries.into()),
            (&RETRY_QUEUE, self.retry_queue as u64),
            (&RETRY_QUEUE_BYTES, self.retry_queue_bytes as u64),
        ])
    }
}

/// The values a numeric key takes, inclusive: one definition for the check as a file is read
/// and for `validate`.
struct Bounds {
    /// The key, with its section.
    key: &'static str,
    min: u64,
    max: u64,
}

impl Bounds {
    const fn range(key: &'static str, min: u64, max: u64) -> Bounds {
        Bounds { key, min, max }
    }

    const fn at_least(key: &'static str, min: u64) -> Bounds {
        Bounds::range(key, min, u64::MAX)
    }

    /// `Err` names the key and the range.
    fn check(&self, value: u64) -> Result<(), String> {
        if (self.min..=self.max).contains(&value) {
            Ok(())
        } else if self.max == u64::MAX {
            Err(format!("{}: must be at least {}", self.key, self.min))
        } else {
            Err(format!(
                "{}: must be {} to {}",
                self.key, self.min, self.max
            ))
        }
    }

    /// Reads the value and checks it there, where serde-saphyr adds the line to the error.
    fn read<'de, D: Deserializer<'de>, T: TryFrom<u64>>(&self, d: D) -> Result<T, D::Error> {
        let value = u64::deserialize(d)?;
        self.check(value).map_err(de::Error::custom)?;
        // Fails only where `usize` is narrower than 64 bits.
        T::try_from(value)
            .map_err(|_| de::Error::custom(format_args!("{}: {value} is too large here", self.key)))
    }
}

/// The first value out of its bounds, as [`ConfigError::Invalid`].
fn check_bounds<const N: usize>(values: [(&Bounds, u64); N]) -> Result<(), ConfigError> {
    values
        .into_iter()
        .try_for_each(|(bounds, value)| bounds.check(value).map_err(ConfigError::Invalid))
}

const QUEUE_CAPACITY: Bounds = Bounds::range(
    "dispatcher.queue_capacity",
    1,
    DispatcherConfig::MAX_QUEUE_CAPACITY as u64,
);
const QUEUE_BYTES: Bounds = Bounds::at_least("dispatcher.queue_bytes", 1);
const BATCH: Bounds = Bounds::range("dispatcher.batch", 1, 4096);
const RING_ENTRIES: Bounds = Bounds::range("dispatcher.ring_entries", 8, 32_768);
const RETRY_QUEUE: Bounds = Bounds::at_least("dispatcher.retry_queue", 1);
const RETRY_QUEUE_BYTES: Bounds = Bounds::at_least("dispatcher.retry_queue_bytes", 1);
const MAX_SUBSCRIBERS_PER_EVENT: Bounds = Bounds::at_least("mi.max_subscribers_per_event", 1);
const MAX_SUBSCRIBERS: Bounds = Bounds::at_least("mi.max_subscribers", 1);
const MAX_EVENTS: Bounds = Bounds::at_least("mi.max_events", 1);
/// Up to 16 MiB: each listener holds a buffer this large, and requests are far smaller (a UDP
/// datagram is under 64 KiB; a UNIX one is bounded by the sender's `SO_SNDBUF`, 208 KiB by
/// default).
const MAX_REQUEST_BYTES: Bounds = Bounds::range("mi.max_request_bytes", 512, 16 << 20);

/// Defines the `deserialize_with` function of each bounded key.
macro_rules! read_bounded {
    ($($name:ident: $ty:ty = $bounds:ident;)*) => {$(
        fn $name<'de, D: Deserializer<'de>>(d: D) -> Result<$ty, D::Error> {
            $bounds.read(d)
        }
    )*};
}

read_bounded! {
    read_queue_capacity: usize = QUEUE_CAPACITY;
    read_queue_bytes: usize = QUEUE_BYTES;
    read_batch: usize = BATCH;
    read_ring_entries: u32 = RING_ENTRIES;
    read_retry_queue: usize = RETRY_QUEUE;
    read_retry_queue_bytes: usize = RETRY_QUEUE_BYTES;
    read_max_subscribers_per_event: usize = MAX_SUBSCRIBERS_PER_EVENT;
    read_max_subscribers: usize = MAX_SUBSCRIBERS;
    read_max_events: usize = MAX_EVENTS;
    read_max_request_bytes: usize = MAX_REQUEST_BYTES;
}

/// A section or list left empty (`key:` followed by nothing or only comments: YAML null) is
/// its default, as if the key were left out: the example file invites commenting values out.
fn or_default<'de, D, T>(d: D) -> Result<T, D::Error>
where
    D: Deserializer<'de>,
    T: Deserialize<'de> + Default,
{
    Ok(Option::<T>::deserialize(d)?.unwrap_or_default())
}

/// A list of strings, each checked as it is read (so that serde-saphyr names its own line, not
/// the list's) and named by its index; `None` for null.
#[derive(Clone, Copy)]
struct CheckedList {
    /// The key, with its section.
    key: &'static str,
    check: fn(&str) -> Result<(), String>,
}

impl CheckedList {
    fn read<'de, D: Deserializer<'de>>(self, d: D) -> Result<Option<Vec<String>>, D::Error> {
        d.deserialize_option(self)
    }
}

impl<'de> de::Visitor<'de> for CheckedList {
    type Value = Option<Vec<String>>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "a list of strings for {}", self.key)
    }

    fn visit_none<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_unit<E: de::Error>(self) -> Result<Self::Value, E> {
        Ok(None)
    }

    fn visit_some<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_seq(self)
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, mut seq: A) -> Result<Self::Value, A::Error> {
        let mut items = Vec::with_capacity(seq.size_hint().unwrap_or(0).min(64));
        while let Some(item) = seq.next_element_seed(CheckedItem {
            list: self,
            index: items.len(),
        })? {
            items.push(item);
        }
        Ok(Some(items))
    }
}

/// One item of a [`CheckedList`].
struct CheckedItem {
    list: CheckedList,
    index: usize,
}

impl<'de> de::DeserializeSeed<'de> for CheckedItem {
    type Value = String;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<String, D::Error> {
        let item = String::deserialize(d)?;
        (self.list.check)(&item).map_err(|why| {
            de::Error::custom(format_args!("{}[{}]: {why}", self.list.key, self.index))
        })?;
        Ok(item)
    }
}

/// A subscription's lifetime in configuration: seconds, or `never`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExpireSetting {
    /// Seconds (0 means never).
    Secs(u64),
    /// The word `never`.
    Word(NeverWord),
}

/// The word `never`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NeverWord {
    /// No expiry.
    Never,
}

/// What `expire` takes, for error messages.
const EXPIRE_EXPECTED: &str = "seconds (a whole number, 0 = never) or `never`";

// By hand rather than `untagged`, whose error says only that no variant matched.
impl<'de> Deserialize<'de> for ExpireSetting {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(ExpireVisitor)
    }
}

/// Reads `expire`.
struct ExpireVisitor;

/// The error for a value `expire` does not take: what it takes, and what it found.
fn bad_expire<E: de::Error>(found: de::Unexpected<'_>, hint: &str) -> E {
    E::custom(format_args!(
        "expire: expected {EXPIRE_EXPECTED}, found {found}{hint}"
    ))
}

/// The error for whole seconds past `u64` (the float they read as is rounded: not shown).
fn too_many_seconds<E: de::Error>() -> E {
    E::custom(format_args!(
        "expire: too many seconds (at most {}; 0 or `never` for no expiry)",
        u64::MAX
    ))
}

impl<'de> de::Visitor<'de> for ExpireVisitor {
    type Value = ExpireSetting;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(EXPIRE_EXPECTED)
    }

    fn visit_u64<E: de::Error>(self, v: u64) -> Result<ExpireSetting, E> {
        Ok(ExpireSetting::Secs(v))
    }

    fn visit_i64<E: de::Error>(self, v: i64) -> Result<ExpireSetting, E> {
        // `-0` reads as a signed zero.
        u64::try_from(v)
            .map(ExpireSetting::Secs)
            .map_err(|_| bad_expire(de::Unexpected::Signed(v), ""))
    }

    fn visit_u128<E: de::Error>(self, v: u128) -> Result<ExpireSetting, E> {
        u64::try_from(v)
            .map(ExpireSetting::Secs)
            .map_err(|_| too_many_seconds())
    }

    fn visit_i128<E: de::Error>(self, v: i128) -> Result<ExpireSetting, E> {
        match u128::try_from(v) {
            Ok(v) => self.visit_u128(v),
            Err(_) => Err(E::custom(format_args!(
                "expire: expected {EXPIRE_EXPECTED}, found integer `{v}`"
            ))),
        }
    }

    fn visit_f64<E: de::Error>(self, v: f64) -> Result<ExpireSetting, E> {
        // A whole number past u64 reads as a float.
        if v.fract() == 0.0 && v > u64::MAX as f64 {
            return Err(too_many_seconds());
        }
        Err(bad_expire(de::Unexpected::Float(v), ""))
    }

    fn visit_bool<E: de::Error>(self, v: bool) -> Result<ExpireSetting, E> {
        Err(bad_expire(de::Unexpected::Bool(v), ""))
    }

    fn visit_str<E: de::Error>(self, v: &str) -> Result<ExpireSetting, E> {
        if v == "never" {
            return Ok(ExpireSetting::Word(NeverWord::Never));
        }
        let hint = if v.trim().parse::<u64>().is_ok() {
            " (write the seconds without quotes)"
        } else if v.eq_ignore_ascii_case("never") {
            " (write never in lower case)"
        } else {
            ""
        };
        Err(bad_expire(de::Unexpected::Str(v), hint))
    }

    fn visit_seq<A: de::SeqAccess<'de>>(self, _: A) -> Result<ExpireSetting, A::Error> {
        Err(bad_expire(de::Unexpected::Seq, ""))
    }

    fn visit_map<A: de::MapAccess<'de>>(self, _: A) -> Result<ExpireSetting, A::Error> {
        Err(bad_expire(de::Unexpected::Map, ""))
    }
}

impl ExpireSetting {
    /// As an [`Expiry`].
    pub fn expiry(self) -> Expiry {
        match self {
            ExpireSetting::Secs(s) => Expiry::from_secs(s),
            ExpireSetting::Word(NeverWord::Never) => Expiry::Never,
        }
    }
}

/// A subscription made at start. Its values are checked as the file is read, so that an
/// error names the line (a host name in `socket` is resolved then, too).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct StaticSubscription {
    /// The event (published if it is not yet).
    #[serde(deserialize_with = "event_name")]
    pub event: String,
    /// The socket, from a spec such as `udp:127.0.0.1:9000` or `unix:/run/app/events.sock`.
    pub socket: Target,
    /// Lifetime; default `never`.
    #[serde(default)]
    pub expire: Option<ExpireSetting>,
    /// Wire format; default `dispatcher.default_format`.
    #[serde(default)]
    pub format: Option<Format>,
    /// Several events per datagram; default: one event per datagram.
    #[serde(default, deserialize_with = "coalesce_setting")]
    pub coalesce: Option<CoalesceSetting>,
}

/// An event name, checked.
fn event_name<'de, D: Deserializer<'de>>(d: D) -> Result<String, D::Error> {
    let name = String::deserialize(d)?;
    validate_event_name(&name).map_err(de::Error::custom)?;
    Ok(name)
}

/// Event names, each checked; null is none.
fn event_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = CheckedList {
        key: "events",
        check: |name| validate_event_name(name).map_err(|e| e.to_string()),
    };
    Ok(list.read(d)?.unwrap_or_default())
}

/// MI listen specs, each checked; null is the default.
fn listen_specs<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = CheckedList {
        key: "mi.listen",
        check: |spec| {
            Target::parse_bind(spec)
                .map(drop)
                .map_err(|e| e.to_string())
        },
    };
    Ok(list.read(d)?.unwrap_or_else(default_listen))
}

/// Allowlist rules, each checked; null is the default.
fn allow_targets<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let list = CheckedList {
        key: "mi.allow_targets",
        check: |rule| {
            // Parsed alone, the rule is `[0]`: `CheckedList` names its real index.
            Allowlist::parse(&[rule])
                .map(drop)
                .map_err(|e| e.strip_prefix("[0] ").unwrap_or(&e).to_owned())
        },
    };
    Ok(list.read(d)?.unwrap_or_else(default_allow_targets))
}

/// A coalescing setting, checked.
fn coalesce_setting<'de, D: Deserializer<'de>>(d: D) -> Result<Option<CoalesceSetting>, D::Error> {
    let setting = Option::<CoalesceSetting>::deserialize(d)?;
    if let Some(c) = setting {
        c.coalesce().map_err(de::Error::custom)?;
    }
    Ok(setting)
}

/// Coalescing in configuration (and in MI `event_subscribe`): `{max_bytes, max_delay_us}`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CoalesceSetting {
    /// The most bytes in one datagram, 1 to 65457.
    pub max_bytes: usize,
    /// The longest an event waits for others, in microseconds; default 1000.
    #[serde(default = "CoalesceSetting::default_delay_us")]
    pub max_delay_us: u64,
}

impl CoalesceSetting {
    fn default_delay_us() -> u64 {
        1_000
    }

    /// As a [`Coalesce`], or an error naming the bound.
    pub fn coalesce(self) -> Result<Coalesce, InvalidCoalesce> {
        Coalesce::new(self.max_bytes, Duration::from_micros(self.max_delay_us))
    }
}

/// The whole configuration file.
#[derive(Clone, Debug, Default, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    /// Dispatcher settings.
    #[serde(deserialize_with = "or_default")]
    pub dispatcher: DispatcherConfig,
    /// Events published at start.
    #[serde(deserialize_with = "event_names")]
    pub events: Vec<String>,
    /// Subscriptions made at start.
    #[serde(deserialize_with = "or_default")]
    pub subscriptions: Vec<StaticSubscription>,
    /// The MI control endpoint of `evdgram serve` (and of [`MiHandler`](crate::MiHandler)).
    #[serde(deserialize_with = "or_default")]
    pub mi: MiConfig,
}

/// Settings of the MI control endpoint (JSON-RPC 2.0 over datagrams, as OpenSIPS' `mi_datagram`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MiConfig {
    /// Sockets to serve MI on: `udp:HOST:PORT` or UNIX paths (`unix:/path`, `/path`, `unix:@name`).
    #[serde(deserialize_with = "listen_specs")]
    pub listen: Vec<String>,
    /// Allow MI listeners on addresses other than loopback (anyone who reaches them can
    /// subscribe and raise events).
    pub allow_remote_control: bool,
    /// Where subscribers may receive events: networks (`127.0.0.0/8`, `::1/128`, or one
    /// address), the word `unix` for every UNIX socket, or `unix:/DIR` for the UNIX sockets
    /// under one directory (see [`Allowlist::parse`](crate::mi::Allowlist::parse)).
    #[serde(deserialize_with = "allow_targets")]
    pub allow_targets: Vec<String>,
    /// Subscriptions per event.
    #[serde(deserialize_with = "read_max_subscribers_per_event")]
    pub max_subscribers_per_event: usize,
    /// Subscriptions in all.
    #[serde(deserialize_with = "read_max_subscribers")]
    pub max_subscribers: usize,
    /// Let `raise_event` publish an event that is not published yet.
    pub publish_on_demand: bool,
    /// `publish_on_demand` publishes while fewer events than this are published.
    #[serde(deserialize_with = "read_max_events")]
    pub max_events: usize,
    /// Larger requests are refused.
    #[serde(deserialize_with = "read_max_request_bytes")]
    pub max_request_bytes: usize,
}

impl Default for MiConfig {
    fn default() -> Self {
        MiConfig {
            listen: default_listen(),
            allow_remote_control: false,
            allow_targets: default_allow_targets(),
            max_subscribers_per_event: Limits::default().per_event,
            max_subscribers: Limits::default().total,
            publish_on_demand: false,
            max_events: 1024,
            max_request_bytes: 65_536,
        }
    }
}

fn default_listen() -> Vec<String> {
    vec![DEFAULT_MI_LISTEN.to_owned()]
}

fn default_allow_targets() -> Vec<String> {
    ["127.0.0.0/8", "::1/128", "unix"]
        .map(str::to_owned)
        .to_vec()
}

/// Where `evdgram serve` listens for MI requests by default (the port OpenSIPS tools assume).
pub const DEFAULT_MI_LISTEN: &str = "udp:127.0.0.1:8080";

impl MiConfig {
    /// The subscription limits.
    pub fn limits(&self) -> Limits {
        Limits {
            per_event: self.max_subscribers_per_event,
            total: self.max_subscribers,
        }
    }

    /// The parsed `allow_targets`.
    pub fn allowlist(&self) -> Result<Allowlist, ConfigError> {
        Allowlist::parse(&self.allow_targets)
            .map_err(|e| ConfigError::Invalid(format!("mi.allow_targets: {e}")))
    }

    /// Checks the values of a configuration built in code or changed after reading (a file's
    /// are checked as it is read, where the error also names the line); the message names the
    /// key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.allowlist()?;
        check_bounds([
            (
                &MAX_SUBSCRIBERS_PER_EVENT,
                self.max_subscribers_per_event as u64,
            ),
            (&MAX_SUBSCRIBERS, self.max_subscribers as u64),
            (&MAX_EVENTS, self.max_events as u64),
            (&MAX_REQUEST_BYTES, self.max_request_bytes as u64),
        ])?;
        self.check_listen()
    }

    /// Checks `listen` with `allow_remote_control`: the one check of two keys together, made
    /// once both are read.
    fn check_listen(&self) -> Result<(), ConfigError> {
        self.listen_targets().map(drop)
    }

    /// The MI sockets to serve: `listen` parsed, each checked against `allow_remote_control`.
    /// Bind these, not `listen` parsed again: a host name may resolve differently the second
    /// time, past the check.
    pub fn listen_targets(&self) -> Result<Vec<Target>, ConfigError> {
        let mut targets = Vec::with_capacity(self.listen.len());
        for (i, spec) in self.listen.iter().enumerate() {
            let target = Target::parse_bind(spec)
                .map_err(|e| ConfigError::Invalid(format!("mi.listen[{i}]: {e}")))?;
            if !self.allow_remote_control && !target.is_loopback() {
                return Err(ConfigError::Invalid(format!(
                    "mi.listen[{i}]: {target} is not a loopback address or UNIX socket; \
                     set mi.allow_remote_control: true to serve MI to other hosts"
                )));
            }
            targets.push(target);
        }
        Ok(targets)
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read. The OS error is the [`source`](std::error::Error::source), left
    /// out of the message so that a printed chain (anyhow's `{:#}`) shows it once.
    #[error("cannot read {path}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML does not parse, does not fit the schema or holds a value out of range (the
    /// message names the key and line; read from a file, it starts with the file's path).
    #[error("{0}")]
    Parse(String),
    /// A value is out of range in a configuration built in code, or two keys do not fit
    /// together (the message names the key; read from a file, it starts with the file's path).
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Parses YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        Self::parse(text, "config")
    }

    /// Parses YAML text read from `source` (a file's path, or a name for the messages).
    fn parse(text: &str, source: &str) -> Result<Self, ConfigError> {
        // Every value is checked as it is read; what is left needs two keys.
        let config: Config = crate::yaml::from_str(text, source).map_err(ConfigError::Parse)?;
        config.mi.check_listen()?;
        Ok(config)
    }

    /// Reads and parses a YAML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::parse(&text, &path.display().to_string()).map_err(|e| match e {
            ConfigError::Parse(m) => ConfigError::Parse(format!("{}: {m}", path.display())),
            ConfigError::Invalid(m) => ConfigError::Invalid(format!("{}: {m}", path.display())),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_wrong_type_or_a_duplicate_names_its_key_and_source() {
        let err = Config::parse("dispatcher:\n  queue_capacity: lots\n", "x.yaml").unwrap_err();
        let err = err.to_string();
        assert!(
            err.contains("dispatcher.queue_capacity: invalid u64"),
            "{err}"
        );
        assert!(err.contains("--> x.yaml:2:19"), "{err}");
        let err = Config::from_yaml("dispatcher:\n  batch: 3\n  batch: 4\n").unwrap_err();
        let err = err.to_string();
        assert!(err.contains("dispatcher.batch: duplicate"), "{err}");
        assert!(!err.contains("DuplicateKeyPolicy"), "{err}");
        // A missing field is said at the mapping's last entry: the mapping is named.
        let err = Config::from_yaml("subscriptions:\n  - event: E_A\n").unwrap_err();
        let err = err.to_string();
        assert!(err.contains("subscriptions[0]: missing field"), "{err}");
        // YAML that does not parse names no key.
        let err = Config::from_yaml("dispatcher:\n  batch: 3\n dispatcher:\n").unwrap_err();
        let err = err.to_string();
        assert!(!err.contains("dispatcher.dispatcher"), "{err}");
    }

    #[test]
    fn empty_yaml_is_the_defaults() {
        assert_eq!(Config::from_yaml("{}").unwrap(), Config::default());
    }

    #[test]
    fn unknown_keys_are_refused_with_name_and_line() {
        let err = Config::from_yaml("dispatcher:\n  batch: 64\n  bacth: 3\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("bacth"), "{err}");
        assert!(err.contains('3'), "{err}");
    }

    #[test]
    fn wrong_types_name_the_line() {
        let err = Config::from_yaml("dispatcher:\n  batch: lots\n")
            .unwrap_err()
            .to_string();
        assert!(err.contains("line 2") || err.contains("2:"), "{err}");
    }

    #[test]
    fn expire_takes_seconds_or_never() {
        let c = Config::from_yaml(
            "subscriptions:\n  - {event: E_A, socket: 'unix:/tmp/a', expire: never}\n  - {event: E_A, socket: 'unix:/tmp/b', expire: 60, format: jsonrpc}\n",
        )
        .unwrap();
        assert_eq!(c.subscriptions[0].expire.unwrap().expiry(), Expiry::Never);
        assert_eq!(
            c.subscriptions[1].expire.unwrap().expiry(),
            Expiry::After(Duration::from_secs(60))
        );
        assert_eq!(c.subscriptions[1].format, Some(Format::Jsonrpc));
    }

    #[test]
    fn mi_values_are_checked_and_name_the_key() {
        let c = Config::from_yaml(
            "mi:\n  listen: ['unix:/tmp/mi.sock']\n  allow_targets: [10.0.0.0/8]\n  publish_on_demand: true\n",
        )
        .unwrap();
        assert_eq!(c.mi.listen, ["unix:/tmp/mi.sock"]);
        assert!(c.mi.publish_on_demand);
        assert_eq!(c.mi.max_subscribers, 4096);
        for (yaml, key) in [
            ("mi:\n  allow_targets: [10.0.0.0/40]\n", "mi.allow_targets"),
            ("mi:\n  max_subscribers: 0\n", "mi.max_subscribers"),
            ("mi:\n  max_events: 0\n", "mi.max_events"),
            ("mi:\n  max_request_bytes: 10\n", "mi.max_request_bytes"),
            (
                "mi:\n  max_request_bytes: 16777217\n",
                "mi.max_request_bytes: must be 512 to 16777216",
            ),
            (
                "mi:\n  listen: ['udp:10.0.0.1:8080']\n",
                "allow_remote_control",
            ),
            ("mi:\n  listen: ['tcp:1']\n", "mi.listen[0]"),
            ("mi:\n  lisen: []\n", "lisen"),
        ] {
            let err = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(key), "{yaml}: {err}");
        }
        // An entry of a list on the key's own line is named once, by its index.
        for (yaml, key) in [
            (
                "mi:\n  allow_targets: [unix, 10.0.0.0/40]\n",
                "mi.allow_targets[1]: ",
            ),
            (
                "mi:\n  listen: ['udp:127.0.0.1:0', 'tcp:x']\n",
                "mi.listen[1]: ",
            ),
        ] {
            let err = Config::from_yaml(yaml).unwrap_err().to_string();
            let list = key.split('[').next().unwrap();
            assert!(err.contains(key), "{yaml}: {err}");
            assert!(!err.contains(&format!("{list}: {key}")), "{yaml}: {err}");
        }
        let remote = "mi:\n  listen: ['udp:10.0.0.1:8080']\n  allow_remote_control: true\n";
        assert!(Config::from_yaml(remote).is_ok());
    }

    #[test]
    fn static_subscriptions_and_events_are_checked_as_read_and_name_the_line() {
        for (yaml, detail) in [
            ("subscriptions:\n  - {event: E_A, socket: 'tcp:1'}\n", "tcp:1"),
            ("subscriptions:\n  - {event: '', socket: 'unix:/tmp/a'}\n", "event name"),
            (
                "subscriptions:\n  - {event: E_A, socket: 'unix:/tmp/a', coalesce: {max_bytes: 0}}\n",
                "max_bytes",
            ),
            (
                "subscriptions:\n  - event: E_A\n    socket: 'unix:/tmp/a'\n    coalesce: {max_bytes: 10, max_delay_us: 99000000000}\n",
                "max_delay_us",
            ),
            ("events: [E_A, '']\n", "event name"),
        ] {
            let err = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(detail), "{yaml}: {err}");
            let line = yaml.lines().count();
            assert!(err.contains(&format!("line {line}")), "{yaml}: {err}");
        }
    }

    #[test]
    fn validate_checks_configurations_built_in_code() {
        let d = DispatcherConfig {
            batch: 0,
            ..DispatcherConfig::default()
        };
        let err = d.validate().unwrap_err().to_string();
        assert_eq!(err, "dispatcher.batch: must be 1 to 4096");
        let d = DispatcherConfig {
            ring_entries: 32_769,
            ..DispatcherConfig::default()
        };
        let err = d.validate().unwrap_err().to_string();
        assert_eq!(err, "dispatcher.ring_entries: must be 8 to 32768");
        let mi = MiConfig {
            max_request_bytes: 511,
            ..MiConfig::default()
        };
        let err = mi.validate().unwrap_err().to_string();
        assert_eq!(err, "mi.max_request_bytes: must be 512 to 16777216");
        let mi = MiConfig {
            listen: vec!["tcp:1".into()],
            ..MiConfig::default()
        };
        let err = mi.validate().unwrap_err().to_string();
        assert!(err.starts_with("mi.listen[0]: "), "{err}");
        assert!(DispatcherConfig::default().validate().is_ok());
        assert!(MiConfig::default().validate().is_ok());
    }

    #[test]
    fn out_of_range_values_name_the_key() {
        for key in [
            "batch",
            "queue_capacity",
            "queue_bytes",
            "retry_queue",
            "retry_queue_bytes",
        ] {
            let err = Config::from_yaml(&format!("dispatcher:\n  {key}: 0\n"))
                .unwrap_err()
                .to_string();
            assert!(err.contains(&format!("dispatcher.{key}:")), "{err}");
        }
        // Not an allocation failure at start.
        let err = Config::from_yaml("dispatcher:\n  queue_capacity: 1048577\n")
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("dispatcher.queue_capacity: must be 1 to 1048576"),
            "{err}"
        );
    }
}
