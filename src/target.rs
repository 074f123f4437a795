//! Socket specs: where a subscription's datagrams go.
//!
//! A [`Target`] is a UDP address or a UNIX datagram socket address, parsed from the socket specs
//! that OpenSIPS' `event_datagram` accepts, with its bugs fixed (ports are checked, not wrapped;
//! long UNIX paths are an error, not truncated):
//!
//! | spec                    | target                                               |
//! |-------------------------|------------------------------------------------------|
//! | `udp:127.0.0.1:9000`    | UDP, IPv4                                            |
//! | `udp:[::1]:9000`        | UDP, IPv6 (brackets required)                        |
//! | `udp:localhost:9000`    | UDP, a host name resolved when parsed (see below)    |
//! | `unix:/run/events.sock` | UNIX datagram socket at a path                       |
//! | `/run/events.sock`      | the same, written as a bare absolute path            |
//! | `unix:@events`          | UNIX datagram socket in Linux's abstract namespace   |
//!
//! A host name stands for its lowest IPv4 address, or its lowest IPv6 one if it has no IPv4
//! one, whatever order the resolver gives them in, so that the same spec names the same target
//! at every refresh; an IPv4-mapped IPv6 address (`udp:[::ffff:127.0.0.1]:9000`) is the IPv4
//! address it maps. [`Target`]'s `Display` prints the canonical spec, which parses back to an
//! equal `Target` (but for a scoped IPv6 address: see its `Display`).
//! Two targets are equal when they have the same transport and exactly the same address (OpenSIPS
//! matched UNIX paths by prefix, so `unix:/a/b` refreshed `unix:/a/bc`: not here).
//!
//! ```
//! use event_datagram::{Target, UnixAddr};
//!
//! let t: Target = "udp:[::1]:9000".parse()?;
//! assert_eq!(t.to_string(), "udp:[::1]:9000");
//! assert!(t.is_loopback());
//!
//! let t = Target::parse("/run/events.sock")?;
//! assert_eq!(t, Target::Unix(UnixAddr::Path("/run/events.sock".into())));
//! assert_eq!(t.to_string(), "unix:/run/events.sock");
//!
//! let err = Target::parse("udp:127.0.0.1:70000").unwrap_err();
//! assert!(err.to_string().contains("expected udp:HOST:PORT"));
//! # Ok::<(), event_datagram::TargetError>(())
//! ```

use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, ToSocketAddrs};
use std::os::unix::ffi::OsStrExt;
use std::os::unix::net::SocketAddr as UnixSocketAddr;
use std::path::{Path, PathBuf};
use std::str::FromStr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

/// The accepted forms, quoted by every [`TargetError`] message.
const FORMS: &str = "expected udp:HOST:PORT, udp:[IPv6]:PORT, unix:/path, unix:@name or /path";

/// The longest UNIX socket path in bytes: `sun_path` is 108 bytes, including the final NUL.
pub const MAX_UNIX_PATH: usize = 107;

/// The longest abstract socket name in bytes: `sun_path` minus its leading NUL.
pub const MAX_ABSTRACT_NAME: usize = 107;

/// A UNIX datagram socket address.
///
/// Equality and hashing compare the exact bytes: `/a/b`, `/a//b` and `/a/b/` are three
/// addresses (unlike [`Path`]'s component-wise comparison), and `/a/b` is not `/a/bc`.
#[derive(Clone, Debug)]
pub enum UnixAddr {
    /// A file system path (absolute when parsed from a spec).
    Path(PathBuf),
    /// A name in Linux's abstract socket namespace, without the leading NUL (`unix:@name`).
    Abstract(Vec<u8>),
}

/// Where datagrams go: a UDP address or a UNIX datagram socket.
///
/// Parse one with [`Target::parse`] or [`str::parse`]; see the [module docs](self) for the forms.
#[derive(Clone, Debug, PartialEq, Eq, Hash)]
pub enum Target {
    /// A UDP address (IPv4 or IPv6). [`Target::parse`] and `From<SocketAddr>` make an
    /// IPv4-mapped IPv6 address the IPv4 one; built directly, it stays as given (and is then
    /// not equal to the parsed spec).
    Udp(SocketAddr),
    /// A UNIX datagram socket.
    Unix(UnixAddr),
}

/// A socket spec that cannot be parsed. Every message names the accepted forms.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum TargetError {
    /// A spec that is none of the accepted forms: no scheme, a relative bare path, `@name`
    /// without `unix:`, surrounding whitespace, ...
    #[error("invalid socket spec {spec:?}: {reason} ({FORMS})")]
    UnknownForm {
        /// The spec as given.
        spec: String,
        /// Why it is not one of the forms.
        reason: &'static str,
    },
    /// A scheme other than `udp:` or `unix:` (e.g. `tcp:`).
    #[error("invalid socket spec {spec:?}: unknown scheme {scheme:?} ({FORMS})")]
    UnknownScheme {
        /// The spec as given.
        spec: String,
        /// The scheme, without its colon.
        scheme: String,
    },
    /// Nothing after the scheme, or an empty host or name (`udp::9000`, `unix:`, `unix:@`).
    #[error("invalid socket spec {spec:?}: the address is empty ({FORMS})")]
    EmptyAddress {
        /// The spec as given.
        spec: String,
    },
    /// A UDP spec without a port (`udp:127.0.0.1`, `udp:127.0.0.1:`).
    #[error("invalid socket spec {spec:?}: the port is missing ({FORMS})")]
    MissingPort {
        /// The spec as given.
        spec: String,
    },
    /// A port that is not a decimal number.
    #[error("invalid socket spec {spec:?}: port {port:?} is not a number ({FORMS})")]
    InvalidPort {
        /// The spec as given.
        spec: String,
        /// The port as given.
        port: String,
    },
    /// A port of 0 or above 65535 (OpenSIPS wrapped 70000 to 4464).
    #[error("invalid socket spec {spec:?}: port {port} is out of range 1-65535 ({FORMS})")]
    PortOutOfRange {
        /// The spec as given.
        spec: String,
        /// The port as given (digits only).
        port: String,
    },
    /// An IPv6 address without brackets (`udp:::1:9000`).
    #[error(
        "invalid socket spec {spec:?}: an IPv6 address must be in brackets, as in udp:[::1]:9000 ({FORMS})"
    )]
    Ipv6WithoutBrackets {
        /// The spec as given.
        spec: String,
    },
    /// A host that is neither an IP address nor a valid host name.
    #[error("invalid socket spec {spec:?}: invalid host {host:?}: {reason} ({FORMS})")]
    InvalidHost {
        /// The spec as given.
        spec: String,
        /// The host as given.
        host: String,
        /// What is wrong with it.
        reason: &'static str,
    },
    /// A host name that does not resolve (or resolves to no address).
    #[error("invalid socket spec {spec:?}: cannot resolve host {host:?}: {reason} ({FORMS})")]
    Resolve {
        /// The spec as given.
        spec: String,
        /// The host name.
        host: String,
        /// The resolver's error.
        reason: String,
    },
    /// A relative UNIX path (`unix:foo`): paths must be absolute.
    #[error("invalid socket spec {spec:?}: the UNIX socket path must be absolute ({FORMS})")]
    RelativePath {
        /// The spec as given.
        spec: String,
    },
    /// A UNIX path or abstract name holding a NUL byte.
    #[error("invalid socket spec {spec:?}: the UNIX socket address contains a NUL byte ({FORMS})")]
    NulByte {
        /// The spec as given.
        spec: String,
    },
    /// A UNIX path or abstract name over 107 bytes (OpenSIPS silently truncated it).
    #[error(
        "invalid socket spec {spec:?}: the UNIX socket address is {len} bytes, over the {max}-byte limit ({FORMS})"
    )]
    PathTooLong {
        /// The spec as given.
        spec: String,
        /// The path's or name's length in bytes.
        len: usize,
        /// The limit: [`MAX_UNIX_PATH`] or [`MAX_ABSTRACT_NAME`].
        max: usize,
    },
}

impl Target {
    /// Parses a socket spec (see the [module docs](self)). Host names are resolved now, to
    /// their lowest IPv4 address, else their lowest IPv6 one.
    pub fn parse(spec: &str) -> Result<Target, TargetError> {
        Self::parse_as(spec, Port::NonZero, None)
    }

    /// Parses a destination as [`parse`](Self::parse) does, but waits at most `wait` for a
    /// host name to resolve: for a server that must keep answering its other clients while a
    /// name server is slow or silent (the lookup goes on in the background, and its answer is
    /// dropped). At most [`MAX_LOOKUPS`] lookups go on at once; more are refused at once.
    pub fn parse_within(spec: &str, wait: Duration) -> Result<Target, TargetError> {
        Self::parse_as(spec, Port::NonZero, Some(wait))
    }

    /// Parses the spec of a socket to bind, not to send to: as [`parse`](Self::parse), but UDP
    /// port 0 is allowed, meaning any free port (the bound socket's address tells which).
    pub fn parse_bind(spec: &str) -> Result<Target, TargetError> {
        Self::parse_as(spec, Port::AnyFree, None)
    }

    /// `wait`: how long a host name's lookup may take (`None`: as long as it takes).
    fn parse_as(spec: &str, port: Port, wait: Option<Duration>) -> Result<Target, TargetError> {
        if spec.trim() != spec {
            return Err(unknown(spec, "it has surrounding whitespace"));
        }
        if spec.is_empty() {
            return Err(unknown(spec, "it is empty"));
        }
        if spec.starts_with('/') {
            return parse_unix(spec, spec);
        }
        let Some((scheme, rest)) = spec.split_once(':') else {
            return Err(unknown(
                spec,
                if spec.starts_with('@') {
                    "an abstract name needs the unix: scheme"
                } else {
                    "no scheme, and not an absolute path"
                },
            ));
        };
        match scheme {
            "udp" => parse_udp(spec, rest, port, wait),
            "unix" => parse_unix(spec, rest),
            "" => Err(unknown(spec, "no scheme")),
            _ => Err(TargetError::UnknownScheme {
                spec: spec.to_owned(),
                scheme: scheme.to_owned(),
            }),
        }
    }

    /// True for a destination on this host: UDP to `127.0.0.0/8`, `::1` or an IPv4-mapped
    /// loopback address (`::ffff:127.0.0.1`); UNIX sockets are always local.
    pub fn is_loopback(&self) -> bool {
        match self {
            Target::Udp(addr) => match addr.ip() {
                IpAddr::V4(ip) => ip.is_loopback(),
                IpAddr::V6(ip) => {
                    ip.is_loopback() || ip.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
                }
            },
            Target::Unix(_) => true,
        }
    }

    /// The transport's name: `"udp"` or `"unix"`.
    pub fn transport(&self) -> &'static str {
        match self {
            Target::Udp(_) => "udp",
            Target::Unix(_) => "unix",
        }
    }

    /// The UNIX socket address to bind or connect to (`UnixDatagram::bind_addr`,
    /// `connect_addr`); `None` for a UDP target. Fails when the OS rejects the address (an
    /// abstract name off Linux, or an address not built by [`Target::parse`] that is too long).
    pub fn unix_socket_addr(&self) -> Option<io::Result<UnixSocketAddr>> {
        match self {
            Target::Udp(_) => None,
            Target::Unix(addr) => Some(addr.socket_addr()),
        }
    }
}

impl UnixAddr {
    /// The address's bytes and a tag of its kind, for exact comparison.
    fn key(&self) -> (bool, &[u8]) {
        match self {
            UnixAddr::Path(path) => (false, path.as_os_str().as_bytes()),
            UnixAddr::Abstract(name) => (true, name),
        }
    }

    /// The socket address to bind or connect to.
    pub fn socket_addr(&self) -> io::Result<UnixSocketAddr> {
        match self {
            UnixAddr::Path(path) => UnixSocketAddr::from_pathname(path),
            UnixAddr::Abstract(name) => abstract_addr(name),
        }
    }
}

#[cfg(any(target_os = "linux", target_os = "android"))]
fn abstract_addr(name: &[u8]) -> io::Result<UnixSocketAddr> {
    #[cfg(target_os = "android")]
    use std::os::android::net::SocketAddrExt;
    #[cfg(target_os = "linux")]
    use std::os::linux::net::SocketAddrExt;
    UnixSocketAddr::from_abstract_name(name)
}

#[cfg(not(any(target_os = "linux", target_os = "android")))]
fn abstract_addr(_name: &[u8]) -> io::Result<UnixSocketAddr> {
    Err(io::Error::new(
        io::ErrorKind::Unsupported,
        "abstract UNIX socket names exist on Linux only",
    ))
}

fn unknown(spec: &str, reason: &'static str) -> TargetError {
    TargetError::UnknownForm {
        spec: spec.to_owned(),
        reason,
    }
}

/// `rest` is what follows `unix:` (or the whole spec for a bare `/path`).
fn parse_unix(spec: &str, rest: &str) -> Result<Target, TargetError> {
    let (addr, max) = if let Some(name) = rest.strip_prefix('@') {
        (
            UnixAddr::Abstract(name.as_bytes().to_vec()),
            MAX_ABSTRACT_NAME,
        )
    } else if rest.starts_with('/') {
        (UnixAddr::Path(PathBuf::from(rest)), MAX_UNIX_PATH)
    } else if rest.is_empty() {
        return Err(TargetError::EmptyAddress {
            spec: spec.to_owned(),
        });
    } else {
        return Err(TargetError::RelativePath {
            spec: spec.to_owned(),
        });
    };
    let bytes = match &addr {
        UnixAddr::Abstract(name) => &name[..],
        UnixAddr::Path(_) => rest.as_bytes(),
    };
    if bytes.is_empty() {
        return Err(TargetError::EmptyAddress {
            spec: spec.to_owned(),
        });
    }
    if bytes.contains(&0) {
        return Err(TargetError::NulByte {
            spec: spec.to_owned(),
        });
    }
    if bytes.len() > max {
        return Err(TargetError::PathTooLong {
            spec: spec.to_owned(),
            len: bytes.len(),
            max,
        });
    }
    Ok(Target::Unix(addr))
}

/// `rest` is what follows `udp:`.
fn parse_udp(
    spec: &str,
    rest: &str,
    allowed: Port,
    wait: Option<Duration>,
) -> Result<Target, TargetError> {
    let empty = || TargetError::EmptyAddress {
        spec: spec.to_owned(),
    };
    let missing_port = || TargetError::MissingPort {
        spec: spec.to_owned(),
    };
    if rest.is_empty() {
        return Err(empty());
    }
    if let Some(bracketed) = rest.strip_prefix('[') {
        let Some((host, after)) = bracketed.split_once(']') else {
            return Err(TargetError::InvalidHost {
                spec: spec.to_owned(),
                host: rest.to_owned(),
                reason: "no closing bracket",
            });
        };
        if host.is_empty() {
            return Err(empty());
        }
        let ip: Ipv6Addr = host.parse().map_err(|_| TargetError::InvalidHost {
            spec: spec.to_owned(),
            host: host.to_owned(),
            reason: "brackets must hold an IPv6 address",
        })?;
        let port = match after.strip_prefix(':') {
            Some(port) => parse_port(spec, port, allowed)?,
            None if after.is_empty() => return Err(missing_port()),
            None => {
                return Err(TargetError::InvalidHost {
                    spec: spec.to_owned(),
                    host: format!("[{host}]{after}"),
                    reason: "expected :PORT after the closing bracket",
                })
            }
        };
        return Ok(Target::Udp(canonical(SocketAddr::new(
            IpAddr::V6(ip),
            port,
        ))));
    }
    let Some((host, port)) = rest.rsplit_once(':') else {
        return Err(missing_port());
    };
    if host.contains(':') {
        // `::1:9000`, or an IPv4 address or name with a ':' too many (`127.0.0.1:9000:`).
        if rest.parse::<Ipv6Addr>().is_ok() || host.parse::<Ipv6Addr>().is_ok() {
            return Err(TargetError::Ipv6WithoutBrackets {
                spec: spec.to_owned(),
            });
        }
        return Err(TargetError::InvalidHost {
            spec: spec.to_owned(),
            host: rest.to_owned(),
            reason: "more than one ':' between the host and the port",
        });
    }
    if host.is_empty() {
        return Err(empty());
    }
    let port = parse_port(spec, port, allowed)?;
    if let Ok(ip) = host.parse::<Ipv4Addr>() {
        return Ok(Target::Udp(SocketAddr::new(IpAddr::V4(ip), port)));
    }
    check_host_name(spec, host)?;
    let addrs = match wait {
        None => lookup(host, port),
        Some(wait) => lookup_within(host, port, wait, lookup),
    };
    let err = |reason: String| TargetError::Resolve {
        spec: spec.to_owned(),
        host: host.to_owned(),
        reason,
    };
    pick_address(addrs.map_err(err)?)
        .map(Target::Udp)
        .ok_or_else(|| err("it has no address".to_owned()))
}

/// Which UDP ports a spec may name.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Port {
    /// 1-65535: a destination.
    NonZero,
    /// 0-65535: a socket to bind, where 0 is any free port.
    AnyFree,
}

fn parse_port(spec: &str, port: &str, allowed: Port) -> Result<u16, TargetError> {
    if port.is_empty() {
        return Err(TargetError::MissingPort {
            spec: spec.to_owned(),
        });
    }
    if !port.bytes().all(|b| b.is_ascii_digit()) {
        return Err(TargetError::InvalidPort {
            spec: spec.to_owned(),
            port: port.to_owned(),
        });
    }
    match port.parse::<u16>() {
        Ok(n) if n != 0 || allowed == Port::AnyFree => Ok(n),
        // Zero, or too many digits / too large for u16.
        _ => Err(TargetError::PortOutOfRange {
            spec: spec.to_owned(),
            port: port.to_owned(),
        }),
    }
}

/// A DNS-style name: letters, digits, `-`, `_` and `.`, and not numbers only (see
/// [`looks_numeric`]).
fn check_host_name(spec: &str, host: &str) -> Result<(), TargetError> {
    let bad = |reason| TargetError::InvalidHost {
        spec: spec.to_owned(),
        host: host.to_owned(),
        reason,
    };
    if !host
        .bytes()
        .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
    {
        return Err(bad(
            "not an IPv4 address or a host name (letters, digits, '-', '_', '.')",
        ));
    }
    if looks_numeric(host) {
        return Err(bad("not a valid IPv4 address"));
    }
    if host.len() > 253 {
        return Err(bad("a host name is at most 253 bytes"));
    }
    Ok(())
}

/// True when the resolver would read `host` as an IPv4 address in `inet_aton`'s shorthands:
/// one to four dot-separated numbers, each decimal, octal or hexadecimal (`127.1`,
/// `0x7f000001`, `0x7f.1`). Such a host is not a name, and not the address it seems to be.
fn looks_numeric(host: &str) -> bool {
    let number = |part: &str| match part.strip_prefix("0x").or(part.strip_prefix("0X")) {
        Some(hex) => hex.bytes().all(|b| b.is_ascii_hexdigit()),
        None => !part.is_empty() && part.bytes().all(|b| b.is_ascii_digit()),
    };
    // Digits and dots only (`1.2.3.4.5`, `127.0.0.1.`) name no host either: refused here
    // rather than asked of a DNS server.
    host.bytes().all(|b| b.is_ascii_digit() || b == b'.')
        || (host.split('.').count() <= 4 && host.split('.').all(number))
}

/// Host name lookups [`Target::parse_within`] lets go on at once in the background.
pub const MAX_LOOKUPS: usize = 8;

/// The resolver's addresses for `host`.
fn lookup(host: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
    (host, port)
        .to_socket_addrs()
        .map(Iterator::collect)
        .map_err(|e| e.to_string())
}

/// `lookup` on a thread of its own, waited for at most `wait`. The C resolver cannot be
/// interrupted: a lookup that takes longer goes on, and ends, on its own.
fn lookup_within(
    host: &str,
    port: u16,
    wait: Duration,
    lookup: fn(&str, u16) -> Result<Vec<SocketAddr>, String>,
) -> Result<Vec<SocketAddr>, String> {
    static IN_FLIGHT: AtomicUsize = AtomicUsize::new(0);
    if IN_FLIGHT.fetch_add(1, Ordering::SeqCst) >= MAX_LOOKUPS {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        return Err(format!(
            "{MAX_LOOKUPS} host name lookups are still going on (is the name server answering?)"
        ));
    }
    let (tx, rx) = crossbeam_channel::bounded(1);
    let host_owned = host.to_owned();
    let spawned = std::thread::Builder::new()
        .name("evdgram-lookup".into())
        .spawn(move || {
            let _ = tx.send(lookup(&host_owned, port));
            IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        });
    if let Err(e) = spawned {
        IN_FLIGHT.fetch_sub(1, Ordering::SeqCst);
        return Err(format!("cannot start a lookup: {e}"));
    }
    rx.recv_timeout(wait)
        .unwrap_or_else(|_| Err(format!("no answer within {wait:?}")))
}

/// The address a host name stands for: its lowest IPv4 address, or its lowest IPv6 one when
/// it has no IPv4 one. IPv4 first, as OpenSIPS resolved names (`localhost` is often `::1`
/// first, where a receiver listening on 127.0.0.1 would get nothing); the lowest, not the
/// resolver's first, so that a name whose answers rotate (round-robin DNS) names the same
/// target each time it is parsed, and a refresh or an unsubscribe finds its subscription.
fn pick_address(addrs: impl IntoIterator<Item = SocketAddr>) -> Option<SocketAddr> {
    addrs
        .into_iter()
        .map(canonical)
        .min_by_key(|a| (a.is_ipv6(), a.ip()))
}

/// `a` with an IPv4-mapped IPv6 address (`[::ffff:127.0.0.1]`) as the IPv4 address it is: one
/// receiver, one target. Any other address as it is (an IPv6 one keeps its scope id).
fn canonical(a: SocketAddr) -> SocketAddr {
    match a {
        SocketAddr::V6(v6) => match v6.ip().to_ipv4_mapped() {
            Some(v4) => SocketAddr::new(IpAddr::V4(v4), v6.port()),
            None => a,
        },
        SocketAddr::V4(_) => a,
    }
}

impl FromStr for Target {
    type Err = TargetError;

    fn from_str(spec: &str) -> Result<Target, TargetError> {
        Target::parse(spec)
    }
}

impl fmt::Display for Target {
    /// The canonical spec: `udp:127.0.0.1:9000`, `udp:[::1]:9000`, `unix:/path`, `unix:@name`.
    ///
    /// It parses back to an equal `Target` for every target that [`Target::parse`] returns
    /// but one: a UDP IPv6 address with a scope id (a host name that resolves to a link-local
    /// address) prints it (`udp:[fe80::1%2]:9000`), which does not parse. A non-UTF-8 path or
    /// name prints lossily.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            // SocketAddr's Display brackets IPv6 addresses.
            Target::Udp(addr) => write!(f, "udp:{addr}"),
            Target::Unix(addr) => write!(f, "unix:{addr}"),
        }
    }
}

impl fmt::Display for UnixAddr {
    /// `/path` or `@name`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            UnixAddr::Path(path) => write!(f, "{}", Path::display(path)),
            UnixAddr::Abstract(name) => write!(f, "@{}", String::from_utf8_lossy(name)),
        }
    }
}

impl PartialEq for UnixAddr {
    fn eq(&self, other: &Self) -> bool {
        self.key() == other.key()
    }
}

impl Eq for UnixAddr {}

impl Hash for UnixAddr {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.key().hash(state);
    }
}

impl From<SocketAddr> for Target {
    /// A UDP target; an IPv4-mapped address becomes the IPv4 one, as when parsed.
    fn from(addr: SocketAddr) -> Self {
        Target::Udp(canonical(addr))
    }
}

impl From<UnixAddr> for Target {
    fn from(addr: UnixAddr) -> Self {
        Target::Unix(addr)
    }
}

impl serde::Serialize for Target {
    /// As its canonical spec string.
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for Target {
    /// From a spec string, with [`Target::parse`].
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct SpecVisitor;
        impl serde::de::Visitor<'_> for SpecVisitor {
            type Value = Target;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write!(f, "a socket spec ({FORMS})")
            }
            fn visit_str<E: serde::de::Error>(self, spec: &str) -> Result<Target, E> {
                Target::parse(spec).map_err(E::custom)
            }
        }
        d.deserialize_str(SpecVisitor)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A name server that does not answer for 3 s.
    fn silent(_: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        std::thread::sleep(Duration::from_secs(3));
        Ok(vec![SocketAddr::from(([127, 0, 0, 1], port))])
    }

    fn quick(_: &str, port: u16) -> Result<Vec<SocketAddr>, String> {
        Ok(vec![SocketAddr::from(([127, 0, 0, 2], port))])
    }

    #[test]
    fn a_lookup_is_waited_for_at_most_its_bound_and_so_many_at_once() {
        let start = std::time::Instant::now();
        let got = lookup_within("slow.example", 9, Duration::from_millis(100), silent);
        assert_eq!(got, Err("no answer within 100ms".to_owned()));
        assert!(
            start.elapsed() < Duration::from_secs(2),
            "{:?}",
            start.elapsed()
        );
        assert_eq!(
            lookup_within("fast.example", 9, Duration::from_secs(5), quick),
            Ok(vec![addr("127.0.0.2:9")])
        );
        // Silent lookups pile up to the bound; then a lookup is refused at once.
        let refused = (0..MAX_LOOKUPS + 1)
            .map(|_| lookup_within("slow.example", 9, Duration::from_millis(1), silent))
            .find(|r| {
                r.as_ref()
                    .is_err_and(|e| e.contains("lookups are still going on"))
            });
        assert!(refused.is_some(), "no lookup was refused");
    }

    fn addr(s: &str) -> SocketAddr {
        s.parse().unwrap()
    }

    #[test]
    fn a_name_stands_for_its_lowest_ipv4_address_whatever_order_the_resolver_gives() {
        let v4 = ["127.0.0.3:9", "127.0.0.1:9", "127.0.0.2:9"].map(addr);
        let v6 = ["[::2]:9", "[::1]:9"].map(addr);
        // Rotated answers (round-robin DNS), IPv6 first (`localhost` on many systems).
        for rotation in 0..3 {
            let mut answers = v6.to_vec();
            answers.extend(v4.iter().cycle().skip(rotation).take(3));
            assert_eq!(pick_address(answers), Some(addr("127.0.0.1:9")));
        }
        assert_eq!(pick_address(v6), Some(addr("[::1]:9")));
        assert_eq!(
            pick_address([addr("[::ffff:127.0.0.9]:9"), addr("127.0.0.10:9")]),
            Some(addr("127.0.0.9:9"))
        );
        assert_eq!(pick_address([]), None);
        // An IPv6 address keeps its scope (a link-local one needs it to be reached).
        let scoped = SocketAddr::V6(std::net::SocketAddrV6::new(
            "fe80::1".parse().unwrap(),
            9,
            0,
            2,
        ));
        assert_eq!(pick_address([scoped]), Some(scoped));
        assert_eq!(
            Target::from(addr("[::ffff:127.0.0.1]:9")),
            Target::Udp(addr("127.0.0.1:9"))
        );
    }
}
