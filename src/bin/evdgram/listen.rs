//! `evdgram listen`: receive datagrams on a socket, print their events as JSON lines.
//!
//! Every event is one compact JSON object on its own stdout line, flushed per datagram:
//! `{"event":"E_TEST","params":[{"name":"ip","value":"1.2.3.4"},{"value":"abc"}]}` (no `name`
//! for unnamed parameters; line-format values are strings, `jsonrpc` integers stay integers).
//! A datagram that does not decode is reported on stderr, and listening goes on.
//!
//! A UNIX socket file that `listen` creates is removed when it exits, also on SIGINT, SIGTERM
//! and SIGHUP (then the exit status is 0). If the path already exists, `listen` replaces it only
//! when it is a stale socket: a socket file that refuses connections (its owner is gone). A
//! socket somebody listens on, or any other kind of file, is left alone and is an error.

use std::fs;
use std::io::{self, Write};
use std::net::UdpSocket;
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use event_datagram::decode::{decode, jsonrpc, line, DecodeFormat};
use event_datagram::{Event, Format, Params, Target, UnixAddr, ValueRef};
use serde::Serialize;

use crate::signal;

/// The exit status when `listen` fails (cannot bind, cannot write to stdout, ...).
pub const FAILURE_STATUS: u8 = 1;

/// The receive buffer: larger than any datagram we send (65 457 bytes) or UDP can carry.
const RECV_BUFFER: usize = 65_536;

/// How long an exit on SIGINT/SIGTERM/SIGHUP waits for the datagram being printed.
const EXIT_WRITE_GRACE: Duration = Duration::from_secs(1);

/// Held while a datagram's lines are written and flushed.
static WRITING: Mutex<()> = Mutex::new(());

/// Arguments of `evdgram listen`.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The socket to listen on: udp:HOST:PORT (an IPv6 HOST in brackets; port 0: any free port,
    /// printed), unix:/path, unix:@name or /path.
    #[arg(value_parser = Target::parse_bind)]
    spec: Target,
    /// How to decode datagrams: auto picks jsonrpc for a datagram starting with `{`, else line.
    /// With --subscribe, line or jsonrpc is also asked of the server as the subscription's
    /// format (an evdgram extension: leave it at auto with OpenSIPS).
    #[arg(long, value_enum, default_value_t = FormatArg::Auto)]
    format: FormatArg,
    /// Subscribe this socket to EVENT through the MI endpoint (repeatable), re-subscribe before
    /// the subscription expires, and unsubscribe on exit (as opensips-event does).
    #[arg(long, value_name = "EVENT")]
    subscribe: Vec<String>,
    /// The MI endpoint of `evdgram serve` or OpenSIPS' mi_datagram: udp:HOST:PORT or a UNIX
    /// socket.
    #[arg(long, value_name = "SPEC", default_value = event_datagram::DEFAULT_MI_LISTEN)]
    mi: Target,
    /// The subscription's lifetime in seconds; it is renewed at about half of it.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600,
          value_parser = clap::value_parser!(u64).range(1..=4_294_967_295))]
    expire: u64,
}

/// How long an MI request waits for its reply.
const MI_TIMEOUT: Duration = Duration::from_secs(5);

/// How long unsubscribing at exit waits for each reply.
const MI_EXIT_TIMEOUT: Duration = Duration::from_secs(1);

/// This socket's subscriptions through MI; changes are serialized by the lock.
struct Subscriptions {
    mi: Target,
    socket: String,
    events: Vec<String>,
    expire: u64,
    format: Option<&'static str>,
    /// True once unsubscribed: no more renewals.
    done: Mutex<bool>,
}

impl Subscriptions {
    /// Subscribes (or renews) every event, in order. On a failure, returns how many were
    /// subscribed before it, with the error.
    fn subscribe_all(&self, timeout: Duration) -> Result<(), (usize, anyhow::Error)> {
        let done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        if *done {
            return Ok(());
        }
        for (i, event) in self.events.iter().enumerate() {
            self.subscribe(event, timeout).map_err(|e| (i, e))?;
        }
        Ok(())
    }

    fn subscribe(&self, event: &str, timeout: Duration) -> anyhow::Result<()> {
        let mut params = vec![
            serde_json::json!(event),
            serde_json::json!(self.socket),
            serde_json::json!(self.expire),
        ];
        if let Some(f) = self.format {
            params.push(serde_json::json!(f));
        }
        let what = || {
            format!(
                "cannot subscribe {} to {event} through {}",
                self.socket, self.mi
            )
        };
        let result = crate::mi_client::call(&self.mi, "event_subscribe", params.into(), timeout)
            .with_context(what)?;
        if result != "OK" {
            bail!("{}: the reply is {result}", what());
        }
        Ok(())
    }

    /// Ends the subscriptions to the first `made` events (expire 0), once; no renewal after
    /// it. Errors are reported, not returned.
    fn unsubscribe(&self, made: usize) {
        let mut done = self.done.lock().unwrap_or_else(PoisonError::into_inner);
        if std::mem::replace(&mut *done, true) {
            return;
        }
        for event in &self.events[..made] {
            let params = serde_json::json!([event, self.socket, 0]);
            match crate::mi_client::call(&self.mi, "event_subscribe", params, MI_EXIT_TIMEOUT) {
                Ok(result) if result == "OK" => {
                    eprintln!("unsubscribed {} from {event}", self.socket)
                }
                Ok(result) => eprintln!(
                    "evdgram: cannot unsubscribe {} from {event}: the reply is {result}",
                    self.socket
                ),
                Err(e) => eprintln!(
                    "evdgram: cannot unsubscribe {} from {event}: {e:#}",
                    self.socket
                ),
            }
        }
    }

    /// Ends every subscription (see [`unsubscribe`](Self::unsubscribe)).
    fn unsubscribe_all(&self) {
        self.unsubscribe(self.events.len());
    }

    /// How long to wait between renewals: half the lifetime, so that a renewal lands well
    /// before the end even for a lifetime of 1 s.
    fn renewal_interval(&self) -> Duration {
        Duration::from_millis(self.expire.saturating_mul(500))
    }
}

/// The spec subscribers are given: the bound address, with an unspecified IP made loopback.
fn subscription_spec(bound: &Target) -> String {
    match bound {
        Target::Udp(addr) if addr.ip().is_unspecified() => {
            let ip: std::net::IpAddr = if addr.is_ipv4() {
                std::net::Ipv4Addr::LOCALHOST.into()
            } else {
                std::net::Ipv6Addr::LOCALHOST.into()
            };
            Target::Udp((ip, addr.port()).into()).to_string()
        }
        other => other.to_string(),
    }
}

/// A decoder choice.
#[derive(Debug, Clone, Copy, clap::ValueEnum)]
enum FormatArg {
    /// jsonrpc for a datagram whose first non-blank byte is `{` (unless its JSON fails on its
    /// first line and it reads whole as lines: an event may be named `{X` or `{}`), else line.
    Auto,
    /// The OpenSIPS event_datagram line format (ours and OpenSIPS 3.0.5's).
    Line,
    /// JSON-RPC 2.0 notifications (OpenSIPS 3.1+).
    Jsonrpc,
}

impl From<FormatArg> for DecodeFormat {
    fn from(f: FormatArg) -> DecodeFormat {
        match f {
            FormatArg::Auto => DecodeFormat::Auto,
            FormatArg::Line => DecodeFormat::Line,
            FormatArg::Jsonrpc => DecodeFormat::Jsonrpc,
        }
    }
}

/// Binds the socket and prints events until SIGINT/SIGTERM/SIGHUP (exit 0) or an I/O error.
pub fn run(args: Args) -> anyhow::Result<()> {
    // Before any thread exists, so that only the waiter thread ever takes these signals.
    let blocked = signal::block_termination().context("cannot block SIGINT, SIGTERM and SIGHUP")?;
    let (socket, bound, created) = bind(&args.spec)?;
    let cleanup = Arc::new(Cleanup(Mutex::new(created)));
    let subs = Arc::new(Subscriptions {
        mi: args.mi.clone(),
        socket: subscription_spec(&bound),
        events: args.subscribe.clone(),
        expire: args.expire,
        format: match args.format {
            FormatArg::Auto => None,
            FormatArg::Line => Some("line"),
            FormatArg::Jsonrpc => Some("jsonrpc"),
        },
        done: Mutex::new(false),
    });
    let on_signal = Arc::clone(&cleanup);
    let subs_on_signal = Arc::clone(&subs);
    blocked
        .spawn_waiter(move |_sig| {
            subs_on_signal.unsubscribe_all();
            on_signal.run();
            // Let a datagram's lines being written finish, so output ends on a whole line, but
            // do not hang on a reader that stopped reading. Holding the lock, no more output
            // starts; `exit` flushes stdout if it can.
            let deadline = Instant::now() + EXIT_WRITE_GRACE;
            let _writing = loop {
                match WRITING.try_lock() {
                    Ok(guard) => break Some(guard),
                    Err(TryLockError::Poisoned(p)) => break Some(p.into_inner()),
                    Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(TryLockError::WouldBlock) => break None,
                }
            };
            std::process::exit(0);
        })
        .context("cannot start the signal thread")?;
    eprintln!("listening on {bound}");
    if !subs.events.is_empty() {
        if let Err((made, e)) = subs.subscribe_all(MI_TIMEOUT) {
            // Those made before the failure are not left to send to a socket about to go.
            subs.unsubscribe(made);
            cleanup.run();
            return Err(e);
        }
        eprintln!(
            "subscribed {} to {} through {} for {}s",
            subs.socket,
            subs.events.join(", "),
            subs.mi,
            subs.expire
        );
        let renew = Arc::clone(&subs);
        thread::Builder::new()
            .name("resubscribe".to_owned())
            .spawn(move || loop {
                thread::sleep(renew.renewal_interval());
                if *renew.done.lock().unwrap_or_else(PoisonError::into_inner) {
                    return;
                }
                if let Err((_, e)) = renew.subscribe_all(MI_TIMEOUT) {
                    eprintln!("evdgram: {e:#}; retrying later");
                }
            })
            .context("cannot start the resubscribe thread")?;
    }
    let result = receive(&socket, args.format.into());
    subs.unsubscribe_all();
    cleanup.run();
    result
}

/// A bound socket of either transport.
pub(crate) enum Socket {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl Socket {
    fn recv(&self, buf: &mut [u8]) -> io::Result<usize> {
        match self {
            Socket::Udp(s) => s.recv(buf),
            Socket::Unix(s) => s.recv(buf),
        }
    }
}

/// A socket file this process created: removed once, if it is still the one we bound.
pub(crate) struct Created {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

pub(crate) struct Cleanup(pub(crate) Mutex<Option<Created>>);

impl Cleanup {
    pub(crate) fn run(&self) {
        let created = self.0.lock().unwrap_or_else(PoisonError::into_inner).take();
        if let Some(c) = created {
            let ours =
                fs::symlink_metadata(&c.path).is_ok_and(|m| m.dev() == c.dev && m.ino() == c.ino);
            if ours {
                if let Err(e) = fs::remove_file(&c.path) {
                    eprintln!("evdgram: cannot remove {}: {e}", c.path.display());
                }
            }
        }
    }
}

/// Binds `target`; returns the socket, the address to print, and the socket file created.
pub(crate) fn bind(target: &Target) -> anyhow::Result<(Socket, Target, Option<Created>)> {
    match target {
        Target::Udp(addr) => {
            let s = UdpSocket::bind(addr).with_context(|| format!("cannot bind {target}"))?;
            let bound = Target::Udp(s.local_addr().with_context(|| format!("{target}"))?);
            Ok((Socket::Udp(s), bound, None))
        }
        Target::Unix(UnixAddr::Path(path)) => {
            let s = bind_path(path).with_context(|| format!("cannot bind {target}"))?;
            let meta = fs::symlink_metadata(path).with_context(|| format!("{target}"))?;
            let created = Created {
                path: path.clone(),
                dev: meta.dev(),
                ino: meta.ino(),
            };
            Ok((Socket::Unix(s), target.clone(), Some(created)))
        }
        Target::Unix(UnixAddr::Abstract(_)) => {
            let addr = target
                .unix_socket_addr()
                .expect("a UNIX target has a UNIX address")
                .with_context(|| format!("cannot bind {target}"))?;
            let s =
                UnixDatagram::bind_addr(&addr).with_context(|| format!("cannot bind {target}"))?;
            Ok((Socket::Unix(s), target.clone(), None))
        }
    }
}

/// Binds a UNIX datagram socket at `path`, replacing a stale socket file (one that refuses
/// connections) but nothing else.
fn bind_path(path: &Path) -> anyhow::Result<UnixDatagram> {
    match UnixDatagram::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
        other => return Ok(other?),
    }
    let meta = fs::symlink_metadata(path)?;
    if !meta.file_type().is_socket() {
        bail!("the path exists and is not a socket: refusing to replace it");
    }
    let probe = UnixDatagram::unbound()?;
    match probe.connect(path) {
        Ok(()) => bail!("another process is listening on this socket"),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            // Nobody listens: a socket file left behind. Replace it.
            fs::remove_file(path).context("cannot remove the stale socket file")?;
            Ok(UnixDatagram::bind(path)?)
        }
        Err(e) => {
            bail!("the socket file exists and is in use or unusable ({e}): refusing to replace it")
        }
    }
}

/// Receives and prints until an I/O error.
fn receive(socket: &Socket, format: DecodeFormat) -> anyhow::Result<()> {
    // One byte more than the largest datagram a UNIX socket takes here: a longer one is cut.
    let mut buf = vec![0u8; RECV_BUFFER + 1];
    let mut lines = Vec::new();
    loop {
        let n = match socket.recv(&mut buf) {
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("cannot receive"),
        };
        if n > RECV_BUFFER {
            eprintln!(
                "evdgram: undecodable datagram (more than {RECV_BUFFER} bytes): longer than the receive buffer"
            );
            continue;
        }
        let datagram = &buf[..n];
        lines.clear();
        let printed = match decode(datagram, format) {
            Ok(events) => {
                for event in &events {
                    serde_json::to_writer(&mut lines, &JsonEvent::from(event))?;
                    lines.push(b'\n');
                }
                Ok(())
            }
            // The events before the malformed one (several may be packed in one datagram) are
            // printed all the same.
            Err(e) => {
                let before = events_before_error(datagram, format, &mut lines)?;
                Err((e, before))
            }
        };
        if !lines.is_empty() {
            let _writing = WRITING.lock().unwrap_or_else(PoisonError::into_inner);
            let mut out = io::stdout().lock();
            out.write_all(&lines)
                .and_then(|()| out.flush())
                .context("cannot write to stdout")?;
        }
        match printed {
            Ok(()) => {}
            Err((e, 0)) => eprintln!("evdgram: undecodable datagram ({n} bytes): {e}"),
            Err((e, k)) => eprintln!(
                "evdgram: undecodable datagram ({n} bytes) after its first {k} event(s), printed: {e}"
            ),
        }
    }
}

/// Writes to `lines` the events of `datagram` that come before its first malformed one, read
/// with the decoder `format` picks for it; returns how many.
fn events_before_error(
    datagram: &[u8],
    format: DecodeFormat,
    lines: &mut Vec<u8>,
) -> anyhow::Result<usize> {
    let (mut count, mut written) = (0, Ok(()));
    let mut print = |name: &str, params: &Params| {
        count += 1;
        if written.is_ok() {
            written = serde_json::to_writer(&mut *lines, &JsonEvent::new(name, params))
                .map(|()| lines.push(b'\n'));
        }
    };
    // The error is the one `decode` gave already.
    let _ = match format.resolve(datagram) {
        Format::Line => line::Decoder::new().decode_each(datagram, &mut print),
        Format::Jsonrpc => jsonrpc::Decoder::new().decode_each(datagram, &mut print),
    };
    written?;
    Ok(count)
}

/// An event as printed: `{"event":"E_X","params":[{"name":"a","value":1},{"value":"b"}]}`.
#[derive(Serialize)]
struct JsonEvent<'a> {
    event: &'a str,
    params: Vec<JsonParam<'a>>,
}

#[derive(Serialize)]
struct JsonParam<'a> {
    #[serde(skip_serializing_if = "Option::is_none")]
    name: Option<&'a str>,
    value: JsonValue<'a>,
}

#[derive(Serialize)]
#[serde(untagged)]
enum JsonValue<'a> {
    Int(i64),
    Str(&'a str),
}

impl<'a> From<&'a Event> for JsonEvent<'a> {
    fn from(event: &'a Event) -> Self {
        JsonEvent::new(event.name().as_str(), event.params())
    }
}

impl<'a> JsonEvent<'a> {
    fn new(name: &'a str, params: &'a Params) -> Self {
        JsonEvent {
            event: name,
            params: params
                .iter()
                .map(|p| JsonParam {
                    name: p.name,
                    value: match p.value {
                        ValueRef::Int(n) => JsonValue::Int(n),
                        ValueRef::Str(s) => JsonValue::Str(s),
                    },
                })
                .collect(),
        }
    }
}
