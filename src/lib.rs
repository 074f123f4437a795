//! # event-datagram
//!
//! Send events as datagrams to UNIX and UDP sockets, fast: the datagram transport of the
//! OpenSIPS Event Interface (`event_datagram`), with its wire formats and subscription
//! semantics, re-implemented in Rust.
//!
//! ```
//! use event_datagram::{Format, Params, MAX_DATAGRAM};
//!
//! let mut buf = [0u8; MAX_DATAGRAM];
//! let params = Params::new().str("ip", "192.168.2.11")?;
//! let n = Format::Line.encode("E_PIKE_BLOCKED", &params, &mut buf)?;
//! assert_eq!(&buf[..n], b"E_PIKE_BLOCKED\nip::192.168.2.11\n\n");
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![deny(unsafe_code)]

/// A line on stderr from the library, prefixed with its name. Unlike `eprintln!` it never
/// panics (on a closed stderr, say): a panic on the reactor thread would stop delivery, and
/// one in the middle of a round could leave the kernel reading freed memory.
macro_rules! warn {
    ($($arg:tt)*) => {{
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "event-datagram: {}", format_args!($($arg)*));
    }};
}

/// Aborts the process if dropped: armed around code whose unwinding would break an invariant
/// that memory safety rests on, and forgotten after it.
pub(crate) struct AbortOnUnwind(pub &'static str);

impl Drop for AbortOnUnwind {
    fn drop(&mut self) {
        warn!("{}; aborting", self.0);
        std::process::abort();
    }
}

mod clock;
mod config;
pub mod decode;
mod dispatcher;
pub mod encode;
mod error;
mod event;
pub mod mi;
mod publisher;
mod queue;
mod reactor;
mod recycle;
mod registry;
mod stats;
mod sys;
pub mod target;
pub mod yaml;

pub use clock::{Clock, ManualClock, SystemClock};
pub use config::{
    BackendChoice, CoalesceSetting, Config, ConfigError, DispatcherConfig, ExpireSetting, MiConfig,
    NeverWord, QueuePolicy, StaticSubscription, DEFAULT_MI_LISTEN,
};
pub use decode::{DecodeError, DecodeFormat};
pub use dispatcher::{Dispatcher, StartError, StatsHandle, BACKEND_ENV};
pub use encode::{Format, MAX_DATAGRAM};
pub use error::{EncodeError, EventError};
pub use event::{
    validate_event_name, validate_param_name, Event, EventName, Param, ParamRef, Params,
    ParamsIter, Value, ValueRef,
};
pub use mi::MiHandler;
pub use publisher::{Publisher, RaiseError};
pub use registry::{
    Coalesce, EventId, Expiry, InvalidCoalesce, Limits, Registry, RegistryError, Subscribed,
    SubscriptionInfo, SubscriptionOptions,
};
pub use stats::{Backend, EventCounters, Stats, TargetCounters, TargetStats};
pub use target::{Target, TargetError, UnixAddr};
