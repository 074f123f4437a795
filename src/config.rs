//! Configuration: YAML (serde-saphyr) with unknown keys refused. Errors in what is read (a key,
//! a type, an event name, a socket spec, a coalescing setting) name the line; a value out of
//! range for the dispatcher or MI names its key.
//!
//! See `config/event-datagram.yaml` for a commented example with every key.

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
    pub queue_capacity: usize,
    /// Bytes of large events' params (those kept on the heap, beyond
    /// [`Params::INLINE_BYTES`](crate::Params::INLINE_BYTES)) the channel holds: it is full
    /// when either bound is reached. An event larger than this still goes, once the channel
    /// holds at most half of it.
    pub queue_bytes: usize,
    /// What `raise` does when the channel is full.
    pub queue_full: QueuePolicy,
    /// Events the reactor takes from the channel per round (and sends per target per round).
    pub batch: usize,
    /// io_uring submission queue entries.
    pub ring_entries: u32,
    /// Bytes of encode buffers kept for reuse after load peaks; beyond this, buffers left
    /// unused for a second go back to the heap.
    pub buffer_pool_bytes: usize,
    /// Datagrams each target may hold while its receiver is slow; more are dropped, counted.
    pub retry_queue: usize,
    /// Bytes of datagrams each target may hold while its receiver is slow (plus one round's
    /// worth); more are dropped, counted. Whichever of the two bounds comes first applies.
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
            queue_bytes: 32 << 20,
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

    /// Checks the values; the message names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad =
            |key: &str, why: &str| Err(ConfigError::Invalid(format!("dispatcher.{key}: {why}")));
        if self.queue_capacity == 0 || self.queue_capacity > Self::MAX_QUEUE_CAPACITY {
            let range = format!("must be 1 to {}", Self::MAX_QUEUE_CAPACITY);
            return bad("queue_capacity", &range);
        }
        if self.queue_bytes == 0 {
            return bad("queue_bytes", "must be at least 1");
        }
        if self.batch == 0 || self.batch > 4096 {
            return bad("batch", "must be 1 to 4096");
        }
        if !(8..=32_768).contains(&self.ring_entries) {
            return bad("ring_entries", "must be 8 to 32768");
        }
        if self.retry_queue == 0 {
            return bad("retry_queue", "must be at least 1");
        }
        if self.retry_queue_bytes == 0 {
            return bad("retry_queue_bytes", "must be at least 1");
        }
        Ok(())
    }
}

/// A subscription's lifetime in configuration: seconds, or `never`.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Deserialize)]
#[serde(untagged)]
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

/// Event names, each checked.
fn event_names<'de, D: Deserializer<'de>>(d: D) -> Result<Vec<String>, D::Error> {
    let names = Vec::<String>::deserialize(d)?;
    names
        .iter()
        .try_for_each(|name| validate_event_name(name).map_err(de::Error::custom))?;
    Ok(names)
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
    pub dispatcher: DispatcherConfig,
    /// Events published at start.
    #[serde(deserialize_with = "event_names")]
    pub events: Vec<String>,
    /// Subscriptions made at start.
    pub subscriptions: Vec<StaticSubscription>,
    /// The MI control endpoint of `evdgram serve` (and of [`MiHandler`](crate::MiHandler)).
    pub mi: MiConfig,
}

/// Settings of the MI control endpoint (JSON-RPC 2.0 over datagrams, as OpenSIPS' `mi_datagram`).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct MiConfig {
    /// Sockets to serve MI on: `udp:HOST:PORT` or UNIX paths (`unix:/path`, `/path`, `unix:@name`).
    pub listen: Vec<String>,
    /// Allow MI listeners on addresses other than loopback (anyone who reaches them can
    /// subscribe and raise events).
    pub allow_remote_control: bool,
    /// Where subscribers may receive events: networks (`127.0.0.0/8`, `::1/128`, or one
    /// address) and the word `unix` for UNIX sockets.
    pub allow_targets: Vec<String>,
    /// Subscriptions per event.
    pub max_subscribers_per_event: usize,
    /// Subscriptions in all.
    pub max_subscribers: usize,
    /// Let `raise_event` publish an event that is not published yet.
    pub publish_on_demand: bool,
    /// `publish_on_demand` publishes while fewer events than this are published.
    pub max_events: usize,
    /// Larger requests are refused.
    pub max_request_bytes: usize,
}

impl Default for MiConfig {
    fn default() -> Self {
        MiConfig {
            listen: vec![DEFAULT_MI_LISTEN.to_owned()],
            allow_remote_control: false,
            allow_targets: ["127.0.0.0/8", "::1/128", "unix"]
                .map(str::to_owned)
                .to_vec(),
            max_subscribers_per_event: Limits::default().per_event,
            max_subscribers: Limits::default().total,
            publish_on_demand: false,
            max_events: 1024,
            max_request_bytes: 65_536,
        }
    }
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

    /// Checks the values; the message names the key.
    pub fn validate(&self) -> Result<(), ConfigError> {
        let bad = |key: &str, why: &str| Err(ConfigError::Invalid(format!("mi.{key}: {why}")));
        self.allowlist()?;
        if self.max_subscribers_per_event == 0 {
            return bad("max_subscribers_per_event", "must be at least 1");
        }
        if self.max_subscribers == 0 {
            return bad("max_subscribers", "must be at least 1");
        }
        if self.max_events == 0 {
            return bad("max_events", "must be at least 1");
        }
        if self.max_request_bytes < 512 {
            return bad("max_request_bytes", "must be at least 512");
        }
        for (i, spec) in self.listen.iter().enumerate() {
            let target = Target::parse_bind(spec)
                .map_err(|e| ConfigError::Invalid(format!("mi.listen[{i}]: {e}")))?;
            if !self.allow_remote_control && !target.is_loopback() {
                return Err(ConfigError::Invalid(format!(
                    "mi.listen[{i}]: {target} is not a loopback address or UNIX socket; \
                     set mi.allow_remote_control: true to serve MI to other hosts"
                )));
            }
        }
        Ok(())
    }
}

/// A configuration that cannot be used.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The file cannot be read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: String,
        /// Why.
        source: std::io::Error,
    },
    /// The YAML does not parse or does not fit the schema (the message names key and line).
    #[error("{0}")]
    Parse(String),
    /// A value is out of range.
    #[error("{0}")]
    Invalid(String),
}

impl Config {
    /// Parses YAML text.
    pub fn from_yaml(text: &str) -> Result<Self, ConfigError> {
        let config: Config =
            serde_saphyr::from_str(text).map_err(|e| ConfigError::Parse(e.to_string()))?;
        config.dispatcher.validate()?;
        config.mi.validate()?;
        Ok(config)
    }

    /// Reads and parses a YAML file.
    pub fn from_file(path: &Path) -> Result<Self, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
            path: path.display().to_string(),
            source,
        })?;
        Self::from_yaml(&text).map_err(|e| match e {
            ConfigError::Parse(m) => ConfigError::Parse(format!("{}: {m}", path.display())),
            other => other,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
                "mi:\n  listen: ['udp:10.0.0.1:8080']\n",
                "allow_remote_control",
            ),
            ("mi:\n  listen: ['tcp:1']\n", "mi.listen[0]"),
            ("mi:\n  lisen: []\n", "lisen"),
        ] {
            let err = Config::from_yaml(yaml).unwrap_err().to_string();
            assert!(err.contains(key), "{yaml}: {err}");
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
