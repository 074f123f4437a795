//! `evdgram listen`: receive datagrams on a socket, print their events as JSON lines.
//!
//! Every event is one compact JSON object on its own stdout line, written as soon as the socket
//! has nothing more to read (a burst is written in blocks of up to 64 KiB, not a line at a time):
//! `{"event":"E_TEST","params":[{"name":"ip","value":"1.2.3.4"},{"value":"abc"}]}` (no `name`
//! for unnamed parameters; line-format values are strings, `jsonrpc` integers stay integers).
//! A datagram that does not decode is reported on stderr, and listening goes on. So are, once a
//! second at most, the datagrams the kernel dropped at a UDP socket whose buffer a burst filled
//! (a UDP sender does not wait; a UNIX one does).
//!
//! A UNIX socket file that `listen` creates is removed when it exits, also on SIGINT, SIGTERM
//! and SIGHUP (then the exit status is 0). If the path already exists, `listen` replaces it only
//! when it is a stale socket: a socket file that refuses connections (its owner is gone). A
//! socket somebody listens on, or any other kind of file, is left alone and is an error.
//!
//! With `--subscribe`, each event is renewed on its own schedule. On a signal the socket file
//! goes first, then all subscriptions are ended at once: the exit takes at most about 1.5 s,
//! whatever the MI endpoint does.

use std::fs;
use std::io::{self, Write};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::{mpsc, Arc, Mutex, PoisonError, TryLockError};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use event_datagram::decode::{decode, jsonrpc, line, DecodeFormat, DecodedParams};
use event_datagram::{Event, Format, ParamRef, Target, UnixAddr, ValueRef};
use serde::Serialize;

use crate::signal;
use crate::sockopt::{ask_receive_buffer, kernel_drops, takes_ipv4};

/// The exit status when `listen` fails (cannot bind, cannot write to stdout, ...).
pub const FAILURE_STATUS: u8 = 1;

/// The receive buffer: larger than any datagram we send (65 457 bytes) or UDP can carry.
const RECV_BUFFER: usize = 65_536;

/// The lines of the datagrams received and not yet written to stdout: written when the socket
/// has nothing more to read or [`OUTPUT_BLOCK`] bytes wait, and by the signal thread before
/// the process exits. Held while a datagram's lines are added and while lines are written.
static OUTPUT: Mutex<Vec<u8>> = Mutex::new(Vec::new());

/// Lines waiting for stdout are written once they are this many bytes, even in a burst.
const OUTPUT_BLOCK: usize = 64 << 10;

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
    /// the subscription expires, and unsubscribe on exit (as opensips-event does). A listener
    /// on `0.0.0.0` or `[::]` is subscribed at the local address that routes to the MI endpoint.
    #[arg(long, value_name = "EVENT", value_parser = crate::params::event_name)]
    subscribe: Vec<String>,
    /// The MI endpoint of `evdgram serve` or OpenSIPS' mi_datagram: udp:HOST:PORT or a UNIX
    /// socket. With a UNIX socket, replies come to a socket created in the temp dir ($TMPDIR)
    /// with this process' umask: a server running as another user must be allowed to write it.
    /// Only with --subscribe.
    #[arg(long, value_name = "SPEC", default_value = event_datagram::DEFAULT_MI_LISTEN,
          requires = "subscribe")]
    mi: Target,
    /// The subscription's lifetime in seconds; it is renewed at about half of it, and a failed
    /// renewal is retried (after 1 s, doubling, sooner near the end). Only with --subscribe.
    #[arg(long, value_name = "SECONDS", default_value_t = 3600, requires = "subscribe",
          value_parser = clap::value_parser!(u64).range(1..=4_294_967_295))]
    expire: u64,
}

/// How long an MI request waits for its reply (at most: a renewal waits less near the end).
const MI_TIMEOUT: Duration = Duration::from_secs(5);

/// How long unsubscribing at exit waits, for all events together.
const MI_EXIT_TIMEOUT: Duration = Duration::from_secs(1);

/// The whole exit on a signal: unsubscribing, then the datagram being printed.
const EXIT_DEADLINE: Duration = Duration::from_millis(1_500);

/// The first wait before retrying a failed renewal; it doubles up to `RETRY_MAX`, but stays
/// under half the time left, so that attempts keep coming before the subscription ends.
const RETRY_MIN: Duration = Duration::from_secs(1);
const RETRY_MAX: Duration = Duration::from_secs(60);
/// The shortest wait or reply timeout of a renewal (near the end).
const RETRY_FLOOR: Duration = Duration::from_millis(100);

/// This socket's subscriptions through MI.
struct Subscriptions {
    mi: Target,
    socket: String,
    events: Vec<String>,
    expire: u64,
    format: Option<&'static str>,
    /// True until unsubscribing starts; then renewals stop. A subscribe is sent only under
    /// this lock while it holds true, so that none goes out after an unsubscribe and outlives
    /// it at the server. The lock is held for the (non-blocking) send, never for a reply, so
    /// an exit does not wait for a renewal's.
    may_subscribe: Mutex<bool>,
}

impl Subscriptions {
    fn is_done(&self) -> bool {
        !*self
            .may_subscribe
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Subscribes every event, in order, and returns when each call started (its lifetime
    /// counts from no earlier). On a failure, returns how many were subscribed before it,
    /// with the error.
    fn subscribe_all(&self) -> Result<Vec<Instant>, (usize, anyhow::Error)> {
        let mut started = Vec::with_capacity(self.events.len());
        for (i, event) in self.events.iter().enumerate() {
            if self.is_done() {
                break;
            }
            let start = Instant::now();
            self.subscribe(event, MI_TIMEOUT).map_err(|e| (i, e))?;
            started.push(start);
        }
        Ok(started)
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
        let result = crate::mi_client::call_gated(
            &self.mi,
            "event_subscribe",
            params.into(),
            timeout,
            Some(&self.may_subscribe),
        )
        .with_context(what)?;
        if result != "OK" {
            bail!("{}: the reply is {result}", what());
        }
        Ok(())
    }

    /// Renews `event` until done, on its own schedule (one event failing delays no other):
    /// half the lifetime after the start of the last subscribe that succeeded; after a
    /// failure, again after a backoff bounded by the time left before the end.
    fn renew(&self, event: &str, mut last_ok: Instant) {
        let lifetime = Duration::from_secs(self.expire);
        let mut next = last_ok + self.renewal_interval();
        let mut backoff = RETRY_MIN;
        let mut failing = false;
        loop {
            thread::sleep(next.saturating_duration_since(Instant::now()));
            if self.is_done() {
                return;
            }
            let start = Instant::now();
            // A reply after the end is of no use: leave time for retries before it.
            let left = (last_ok + lifetime).saturating_duration_since(start);
            // Lapsed: nothing to keep before, the whole timeout (a slow MI still answers).
            let timeout = if left.is_zero() {
                MI_TIMEOUT
            } else {
                MI_TIMEOUT.min(left / 4).max(RETRY_FLOOR)
            };
            let result = self.subscribe(event, timeout);
            if self.is_done() {
                return;
            }
            match result {
                Ok(()) => {
                    if failing {
                        say!("renewed the subscription of {} to {event}", self.socket);
                    }
                    (last_ok, next, backoff, failing) =
                        (start, start + self.renewal_interval(), RETRY_MIN, false);
                }
                Err(e) => {
                    let now = Instant::now();
                    let left = (last_ok + lifetime).saturating_duration_since(now);
                    let wait = if left.is_zero() {
                        backoff
                    } else {
                        backoff.min(left / 2).max(RETRY_FLOOR)
                    };
                    say!("evdgram: {e:#}; retrying in {:.1}s", wait.as_secs_f64());
                    // Doubled only when waited in full: near the end the waits are shorter,
                    // and a subscription that lapsed starts again from there.
                    if wait == backoff {
                        backoff = (backoff * 2).min(RETRY_MAX);
                    }
                    (next, failing) = (now + wait, true);
                }
            }
        }
    }

    /// Ends the subscriptions to the first `made` events (expire 0), once; no renewal is sent
    /// after it starts. The calls go out together and are waited for `MI_EXIT_TIMEOUT` in
    /// all. Errors are reported, not returned.
    fn unsubscribe(self: &Arc<Self>, made: usize) {
        // From here no subscribe is sent; one being sent is out before the unsubscribes.
        let was_open = std::mem::replace(
            &mut *self
                .may_subscribe
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
            false,
        );
        if !was_open || made == 0 {
            return;
        }
        let deadline = Instant::now() + MI_EXIT_TIMEOUT;
        let (tx, rx) = mpsc::channel();
        for i in 0..made {
            let (subs, thread_tx) = (Arc::clone(self), tx.clone());
            let spawned = thread::Builder::new()
                .name("unsubscribe".to_owned())
                .spawn(move || {
                    let params = serde_json::json!([subs.events[i], subs.socket, 0]);
                    let timeout = deadline.saturating_duration_since(Instant::now());
                    let r = crate::mi_client::call(
                        &subs.mi,
                        "event_subscribe",
                        params,
                        timeout.max(RETRY_FLOOR),
                    );
                    let _ = thread_tx.send((i, r));
                });
            if let Err(e) = spawned {
                let _ = tx.send((i, Err(anyhow::Error::from(e).context("no thread"))));
            }
        }
        drop(tx);
        let mut answered = vec![false; made];
        // A little past the calls' own timeout: they end by then, unless stuck in a send.
        let end = deadline + RETRY_FLOOR;
        while let Ok((i, result)) = rx.recv_timeout(end.saturating_duration_since(Instant::now())) {
            answered[i] = true;
            let event = &self.events[i];
            match result {
                Ok(result) if result == "OK" => {
                    say!("unsubscribed {} from {event}", self.socket)
                }
                Ok(result) => say!(
                    "evdgram: cannot unsubscribe {} from {event}: the reply is {result}",
                    self.socket
                ),
                Err(e) => say!(
                    "evdgram: cannot unsubscribe {} from {event}: {e:#}",
                    self.socket
                ),
            }
        }
        for (i, _) in answered.iter().enumerate().filter(|(_, a)| !**a) {
            say!(
                "evdgram: cannot unsubscribe {} from {}: no answer within {MI_EXIT_TIMEOUT:?}",
                self.socket,
                self.events[i]
            );
        }
    }

    /// Ends every subscription (see [`unsubscribe`](Self::unsubscribe)).
    fn unsubscribe_all(self: &Arc<Self>) {
        self.unsubscribe(self.events.len());
    }

    /// How long to wait between renewals: half the lifetime, so that a renewal lands well
    /// before the end even for a lifetime of 1 s.
    fn renewal_interval(&self) -> Duration {
        Duration::from_millis(self.expire.saturating_mul(500))
    }
}

/// The spec subscribers are given: the bound address, with an unspecified IP replaced by the
/// one the MI endpoint's host reaches us at. `takes_ipv4` says whether a socket bound to `[::]`
/// also takes IPv4 datagrams (see [`takes_ipv4`]).
fn subscription_spec(bound: &Target, mi: &Target, takes_ipv4: bool) -> anyhow::Result<String> {
    match bound {
        Target::Udp(addr) if addr.ip().is_unspecified() => {
            let ip = subscription_ip(addr.is_ipv4(), takes_ipv4, local_ip_toward(mi), mi)?;
            Ok(Target::Udp((ip, addr.port()).into()).to_string())
        }
        other => Ok(other.to_string()),
    }
}

/// The address to subscribe for a socket on all addresses (IPv4 ones if `ipv4`), given the
/// one the kernel would send from toward the UDP MI endpoint `mi` (`toward`, `None` for a
/// UNIX one).
fn subscription_ip(
    ipv4: bool,
    takes_ipv4: bool,
    toward: Option<IpAddr>,
    mi: &Target,
) -> anyhow::Result<IpAddr> {
    let loopback = || -> IpAddr {
        if ipv4 {
            Ipv4Addr::LOCALHOST.into()
        } else {
            Ipv6Addr::LOCALHOST.into()
        }
    };
    match toward {
        // An IPv4 socket takes only IPv4; an IPv6 one IPv4 too unless it is IPv6-only.
        Some(ip) if ip.is_ipv4() == ipv4 || (ip.is_ipv4() && takes_ipv4) => Ok(ip),
        // The other family, on this host: its loopback reaches us too.
        Some(_) if mi.is_loopback() => Ok(loopback()),
        Some(ip) => bail!(
            "{mi} reaches this host at {ip}, which this socket does not take (it takes IPv{} \
             only): bind an address of that family, or [::] where it takes both",
            if ipv4 { 4 } else { 6 }
        ),
        // A UNIX endpoint: on this host.
        None => Ok(loopback()),
    }
}

/// The source address the kernel picks toward a UDP MI endpoint (connecting a UDP socket
/// sends nothing): loopback for an endpoint on loopback, else an address that host can reach.
fn local_ip_toward(mi: &Target) -> Option<IpAddr> {
    let Target::Udp(mi) = mi else {
        return None;
    };
    let any: SocketAddr = if mi.is_ipv4() {
        (Ipv4Addr::UNSPECIFIED, 0).into()
    } else {
        (Ipv6Addr::UNSPECIFIED, 0).into()
    };
    let s = UdpSocket::bind(any).ok()?;
    s.connect(mi).ok()?;
    let ip = s.local_addr().ok()?.ip();
    // An IPv4-mapped IPv6 endpoint: its IPv4 address.
    Some(ip.to_canonical())
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
    // Before subscribing: a failure here leaves no subscription behind on the MI server.
    let socket_spec = subscription_spec(&bound, &args.mi, socket.takes_ipv4()).and_then(|spec| {
        if let Socket::Udp(udp) = &socket {
            watch_drops(udp).context("cannot start the thread that reports dropped datagrams")?;
        }
        Ok(spec)
    });
    let socket_spec = match socket_spec {
        Ok(spec) => spec,
        Err(e) => {
            cleanup.run();
            return Err(e);
        }
    };
    let subs = Arc::new(Subscriptions {
        socket: socket_spec,
        mi: args.mi.clone(),
        events: args.subscribe.clone(),
        expire: args.expire,
        format: match args.format {
            FormatArg::Auto => None,
            FormatArg::Line => Some("line"),
            FormatArg::Jsonrpc => Some("jsonrpc"),
        },
        may_subscribe: Mutex::new(true),
    });
    let on_signal = Arc::clone(&cleanup);
    let subs_on_signal = Arc::clone(&subs);
    blocked
        .spawn_waiter(move |_sig| {
            let deadline = Instant::now() + EXIT_DEADLINE;
            // The socket file first: it goes even if what follows is cut short.
            on_signal.run();
            subs_on_signal.unsubscribe_all();
            // Let lines being added or written finish, so output ends on a whole line, then
            // write those received and not yet written, but do not hang on a reader that
            // stopped reading. Holding the lock, no more output starts.
            let mut output = loop {
                match OUTPUT.try_lock() {
                    Ok(guard) => break Some(guard),
                    Err(TryLockError::Poisoned(p)) => break Some(p.into_inner()),
                    Err(TryLockError::WouldBlock) if Instant::now() < deadline => {
                        thread::sleep(Duration::from_millis(5));
                    }
                    Err(TryLockError::WouldBlock) => break None,
                }
            };
            // Taken, not moved out: the lock stays held until the exit.
            let lines = output
                .as_mut()
                .map(|o| std::mem::take(&mut **o))
                .unwrap_or_default();
            if !lines.is_empty() {
                // In a thread of its own: the write may wait for the reader for ever.
                let (done, written) = mpsc::channel();
                let _ = thread::Builder::new().spawn(move || {
                    let mut out = io::stdout().lock();
                    let _ = out.write_all(&lines).and_then(|()| out.flush());
                    let _ = done.send(());
                });
                let _ = written.recv_timeout(deadline.saturating_duration_since(Instant::now()));
            }
            std::process::exit(0);
        })
        .context("cannot start the signal thread")?;
    say!("listening on {bound}");
    if !subs.events.is_empty() {
        let started = match subs.subscribe_all() {
            Ok(started) => started,
            Err((made, e)) => {
                cleanup.run();
                // Those made before the failure are not left to send to a socket that is gone.
                subs.unsubscribe(made);
                return Err(e);
            }
        };
        say!(
            "subscribed {} to {} through {} for {}s",
            subs.socket,
            subs.events.join(", "),
            subs.mi,
            subs.expire
        );
        for (i, start) in started.into_iter().enumerate() {
            let renew = Arc::clone(&subs);
            let spawned = thread::Builder::new()
                .name("resubscribe".to_owned())
                .spawn(move || renew.renew(&renew.events[i], start));
            if let Err(e) = spawned {
                cleanup.run();
                subs.unsubscribe_all();
                return Err(e).context("cannot start a resubscribe thread");
            }
        }
    }
    let result = receive(&socket, args.format.into());
    cleanup.run();
    subs.unsubscribe_all();
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

    fn set_nonblocking(&self, nonblocking: bool) -> io::Result<()> {
        match self {
            Socket::Udp(s) => s.set_nonblocking(nonblocking),
            Socket::Unix(s) => s.set_nonblocking(nonblocking),
        }
    }

    /// Receives a datagram into `buf`: at once if one is waiting, else after `idle` has run
    /// (with the socket then waited on). The socket is non-blocking between calls.
    fn recv_or_idle(
        &self,
        buf: &mut [u8],
        idle: impl FnOnce() -> anyhow::Result<()>,
    ) -> anyhow::Result<usize> {
        loop {
            match self.recv(buf) {
                Ok(n) => return Ok(n),
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) => return Err(e).context("cannot receive"),
            }
        }
        idle()?;
        self.set_nonblocking(false).context("cannot receive")?;
        let received = loop {
            match self.recv(buf) {
                Err(e) if e.kind() == io::ErrorKind::Interrupted => {}
                other => break other,
            }
        };
        self.set_nonblocking(true).context("cannot receive")?;
        received.context("cannot receive")
    }

    /// Whether it takes IPv4 datagrams (a UNIX socket: no).
    fn takes_ipv4(&self) -> bool {
        match self {
            Socket::Udp(s) => takes_ipv4(s),
            Socket::Unix(_) => false,
        }
    }
}

/// The receive buffer a UDP listener asks for: bursts (GSO sends dozens of datagrams at once)
/// outrun a listener that prints each. The kernel gives at most `net.core.rmem_max` (twice it).
const UDP_RECEIVE_BUFFER: libc::c_int = 4 << 20;

/// How often the datagrams the kernel dropped at a UDP listener are looked for and told.
const DROPS_EVERY: Duration = Duration::from_secs(1);

/// Tells on stderr, at most once per [`DROPS_EVERY`], how many datagrams the kernel dropped at
/// `socket` because its receive buffer was full: a UDP sender does not wait for a slow
/// listener, and nothing else would say that events were lost.
fn watch_drops(socket: &UdpSocket) -> io::Result<()> {
    let socket = socket.try_clone()?;
    // From 0, not from a first reading: datagrams dropped since the bind count too.
    let mut told = 0;
    thread::Builder::new()
        .name("drops".to_owned())
        .spawn(move || loop {
            thread::sleep(DROPS_EVERY);
            let Some(drops) = kernel_drops(&socket) else {
                return;
            };
            if drops != told {
                say!(
                    "evdgram: the kernel dropped {} datagram(s) at this socket: its receive \
                     buffer was full (events arrived faster than they were printed)",
                    drops.wrapping_sub(told)
                );
                told = drops;
            }
        })
        .map(drop)
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
                    say!("evdgram: cannot remove {}: {e}", c.path.display());
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
            // Best effort: the default still works, and drops are told (`watch_drops`).
            ask_receive_buffer(&s, UDP_RECEIVE_BUFFER);
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

/// Writes the lines waiting in `output` to stdout.
fn write_out(output: &mut Vec<u8>) -> anyhow::Result<()> {
    if output.is_empty() {
        return Ok(());
    }
    let mut out = io::stdout().lock();
    out.write_all(output)
        .and_then(|()| out.flush())
        .context("cannot write to stdout")?;
    output.clear();
    Ok(())
}

/// Writes the lines waiting for stdout.
fn write_waiting() -> anyhow::Result<()> {
    write_out(&mut OUTPUT.lock().unwrap_or_else(PoisonError::into_inner))
}

/// Receives and prints until an I/O error.
fn receive(socket: &Socket, format: DecodeFormat) -> anyhow::Result<()> {
    // One byte more than the largest datagram a UNIX socket takes here: a longer one is cut.
    let mut buf = vec![0u8; RECV_BUFFER + 1];
    socket.set_nonblocking(true).context("cannot receive")?;
    loop {
        let n = socket.recv_or_idle(&mut buf, write_waiting)?;
        let datagram = &buf[..n];
        let mut output = OUTPUT.lock().unwrap_or_else(PoisonError::into_inner);
        let decoded = if n > RECV_BUFFER {
            Err(None)
        } else {
            decode(datagram, format).map_err(Some)
        };
        let printed = match decoded {
            Err(None) => Err((None, 0)),
            Ok(events) => {
                for event in &events {
                    serde_json::to_writer(&mut *output, &JsonEvent::from(event))?;
                    output.push(b'\n');
                }
                Ok(())
            }
            // The events before the malformed one (several may be packed in one datagram) are
            // printed all the same.
            Err(Some(e)) => Err((Some(e), events_before_error(datagram, format, &mut output)?)),
        };
        // Before a message on stderr, the lines before it: the two are read together.
        if output.len() >= OUTPUT_BLOCK || printed.is_err() {
            write_out(&mut output)?;
        }
        drop(output);
        match printed {
            Ok(()) => {}
            Err((None, _)) => say!(
                "evdgram: undecodable datagram (more than {RECV_BUFFER} bytes): longer than the receive buffer"
            ),
            Err((Some(e), 0)) => say!("evdgram: undecodable datagram ({n} bytes): {e}"),
            Err((Some(e), k)) => say!(
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
    let format = format.resolve(datagram);
    let valid_up_to = match std::str::from_utf8(datagram) {
        Ok(_) => return print_events(datagram, format, lines),
        Err(e) => e.valid_up_to(),
    };
    // The decoders check UTF-8 over the whole datagram first, so the events before a bad byte
    // are found by reading the valid part alone. That part may end inside a quoted value,
    // whose rest can then read as an event the datagram does not hold; so it is read with the
    // bad bytes replaced (U+FFFD) as well, and an event printed only if both readings have it.
    let (mut cut, mut whole) = (Vec::new(), Vec::new());
    print_events(&datagram[..valid_up_to], format, &mut cut)?;
    print_events(
        String::from_utf8_lossy(datagram).as_bytes(),
        format,
        &mut whole,
    )?;
    let same = cut
        .split_inclusive(|&b| b == b'\n')
        .zip(whole.split_inclusive(|&b| b == b'\n'))
        .take_while(|(a, b)| a == b)
        .fold(0, |count, (event, _)| {
            lines.extend_from_slice(event);
            count + 1
        });
    Ok(same)
}

/// Writes to `lines` the events of `datagram` up to its first malformed one, one per line;
/// returns how many.
fn print_events(datagram: &[u8], format: Format, lines: &mut Vec<u8>) -> anyhow::Result<usize> {
    let (mut count, mut written) = (0, Ok(()));
    let mut print = |name: &str, params: DecodedParams<'_>| {
        count += 1;
        if written.is_ok() {
            written = serde_json::to_writer(&mut *lines, &JsonEvent::new(name, params))
                .map(|()| lines.push(b'\n'));
        }
    };
    // The error is the one `decode` gave already.
    let _ = match format {
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
    fn new(name: &'a str, params: impl IntoIterator<Item = ParamRef<'a>>) -> Self {
        JsonEvent {
            event: name,
            params: params
                .into_iter()
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

#[cfg(test)]
mod tests {
    use super::*;

    fn udp(spec: &str) -> Target {
        Target::parse(spec).expect("valid spec")
    }

    #[test]
    fn an_ipv6_only_listener_on_all_addresses_subscribes_an_ipv6_address() {
        let spec = |bound, mi, takes_ipv4| {
            subscription_spec(&udp(bound), &udp(mi), takes_ipv4).expect("a spec")
        };
        let (any6, mi4, mi6) = ("udp:[::]:9", "udp:127.0.0.1:8080", "udp:[::1]:8080");
        assert_eq!(spec(any6, mi4, true), "udp:127.0.0.1:9");
        assert_eq!(spec(any6, mi4, false), "udp:[::1]:9");
        assert_eq!(spec(any6, mi6, false), "udp:[::1]:9");
        let any4 = "udp:0.0.0.0:9";
        assert_eq!(spec(any4, mi6, false), "udp:127.0.0.1:9");
        assert_eq!(spec(any4, mi4, false), "udp:127.0.0.1:9");
        // The address the kernel sends from toward the endpoint, in its family (an IPv4
        // endpoint was given `udp:[::1]:P` before, which it cannot send to).
        for (bound, takes_ipv4) in [(any4, false), (any6, true)] {
            let got = spec(bound, "udp:127.0.0.2:8080", takes_ipv4);
            let Target::Udp(addr) = udp(&got) else {
                panic!("{got}")
            };
            assert!(addr.is_ipv4() && addr.ip().is_loopback(), "{bound}: {got}");
            assert_eq!(addr.port(), 9, "{bound}: {got}");
        }
    }

    /// A remote MI endpoint reached over the family the socket does not take: its loopback
    /// would be the server's own. (Addresses as values only: nothing is sent.)
    #[test]
    fn a_remote_mi_of_the_family_the_socket_does_not_take_is_an_error() {
        let remote4 = udp("udp:192.0.2.1:8080");
        let from4: IpAddr = "192.0.2.7".parse().unwrap();
        let err = subscription_ip(false, false, Some(from4), &remote4).unwrap_err();
        assert!(err.to_string().contains("takes IPv6 only"), "{err}");
        assert_eq!(
            subscription_ip(false, true, Some(from4), &remote4).unwrap(),
            from4
        );
        let remote6 = udp("udp:[2001:db8::1]:8080");
        let from6: IpAddr = "2001:db8::7".parse().unwrap();
        let err = subscription_ip(true, true, Some(from6), &remote6).unwrap_err();
        assert!(err.to_string().contains("takes IPv4 only"), "{err}");
    }
}
