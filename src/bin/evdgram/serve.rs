//! `evdgram serve`: a long-running dispatcher with an MI control endpoint (JSON-RPC 2.0 over
//! UDP and UNIX datagram sockets, as OpenSIPS' `mi_datagram`), so that programs and OpenSIPS
//! tools (`opensips-cli`, `opensips-mi`, `opensips-event`) subscribe sockets and raise events.
//!
//! One thread per listener: receive a request, answer it with [`MiHandler::handle`], send the
//! reply to the requester's address. On SIGINT, SIGTERM or SIGHUP: stop answering, remove the
//! UNIX socket files created, flush the dispatcher and print its final counters; exit status 0.
#![allow(unsafe_code)]

use std::io;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::io::AsRawFd;
use std::os::unix::net::{SocketAddr as UnixAddr, UnixDatagram};
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

use anyhow::{anyhow, bail, Context};
use crossbeam_channel::bounded;
use event_datagram::mi::stats_json;
use event_datagram::{Config, Dispatcher, MiHandler, Target, TargetError};

use crate::listen::{self, Cleanup, Socket};
use crate::params::{event_name, FormatArg};
use crate::{signal, start_error, usage};

/// The exit status when `serve` fails at run time (cannot bind, a listener fails, ...); a bad
/// configuration is a usage error.
pub const FAILURE_STATUS: u8 = 1;

/// A listener says that replies cannot be sent at most once per this long, as the library says
/// a target's send errors.
const REPLY_ERROR_INTERVAL: Duration = Duration::from_secs(60);

/// Arguments of `evdgram serve`. Flags override the configuration file.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The YAML configuration (see config/event-datagram.yaml); without it, the defaults.
    #[arg(long, value_name = "FILE")]
    config: Option<PathBuf>,
    /// An MI socket to serve (repeatable; replaces mi.listen): udp:HOST:PORT (an IPv6 HOST in brackets; port 0: any free port, printed),
    /// unix:/path, /path or unix:@name. Default: mi.listen from --config, else
    /// udp:127.0.0.1:8080.
    #[arg(long = "mi", value_name = "SPEC", value_parser = mi_spec)]
    mi: Vec<MiArg>,
    /// Events to publish at start, comma-separated (added to the configuration's events).
    #[arg(long, value_name = "E_A,E_B", value_delimiter = ',', value_parser = event_name)]
    publish: Vec<String>,
    /// The wire format of subscriptions that do not choose one (dispatcher.default_format).
    #[arg(long, value_enum)]
    format: Option<FormatArg>,
}

/// Why the server stops.
enum Stop {
    Signal(i32),
    Failed(anyhow::Error),
}

/// Serves until SIGINT/SIGTERM/SIGHUP (then `Ok`) or a listener fails.
pub fn run(args: Args) -> anyhow::Result<()> {
    // Before any thread exists, so that only the waiter thread ever takes these signals.
    let blocked = signal::block_termination().context("cannot block SIGINT, SIGTERM and SIGHUP")?;
    let mut config = match &args.config {
        Some(path) => Config::from_file(path).map_err(usage)?,
        None => Config::default(),
    };
    if !args.mi.is_empty() {
        // Said here, naming the flag: the configuration's own check names mi.listen.
        let remote = args.mi.iter().find(|m| !m.target.is_loopback());
        if let (Some(m), false) = (remote, config.mi.allow_remote_control) {
            let resolved = m.target.to_string();
            let resolved = if resolved == m.spec {
                String::new()
            } else {
                format!(" ({resolved})")
            };
            return Err(usage(anyhow!(
                "--mi {}{resolved} is not a loopback address or UNIX socket; to serve MI to \
                 other hosts, set mi.allow_remote_control: true in the --config file",
                m.spec,
            )));
        }
        config.mi.listen = args.mi.iter().map(|m| m.spec.clone()).collect();
    }
    config.events.extend(args.publish.iter().cloned());
    if let Some(format) = args.format {
        config.dispatcher.default_format = format.into();
    }
    config.mi.validate().map_err(usage)?;
    let mi_targets = config.mi.listen_targets().map_err(usage)?;
    if mi_targets.is_empty() {
        return Err(usage(anyhow!(
            "no MI socket to serve: give --mi SPEC or set mi.listen"
        )));
    }
    let named = |i: usize| match args.mi.get(i) {
        Some(m) => format!("--mi {}", m.spec),
        None => format!("mi.listen[{i}]"),
    };
    let duplicates = refuse_duplicates(&mi_targets, named);
    // From the file when no --mi is given (--mi replaces mi.listen): named as its other errors are.
    let duplicates = match (&args.config, args.mi.is_empty()) {
        (Some(path), true) => duplicates.with_context(|| path.display().to_string()),
        _ => duplicates,
    };
    duplicates.map_err(usage)?;

    // Bind first: a port in use fails before anything starts.
    let mut listeners = Vec::new();
    // Removes the socket files it holds when dropped: on every early return below, too.
    let cleanup = Cleanups::default();
    // UNIX sockets are created 0660 (umask 0117 while binding): set after bind, the mode would
    // leave a moment in which the process's umask lets others connect.
    let umask = Umask::set(0o117);
    for target in &mi_targets {
        let (socket, bound, created) = listen::bind(target).context("cannot serve MI")?;
        cleanup.add(created);
        listeners.push((socket, bound));
    }
    drop(umask);

    let dispatcher = Dispatcher::from_config(&config).map_err(start_error)?;
    let handler = Arc::new(MiHandler::for_dispatcher(&dispatcher, &config.mi).map_err(usage)?);
    say!(
        "evdgram: dispatcher running on the {} backend; default format {}; {} event(s) published",
        dispatcher.backend(),
        dispatcher.default_format(),
        dispatcher.registry().events().len()
    );

    let (stop_tx, stop_rx) = bounded::<Stop>(listeners.len() + 1);
    let stopping = Arc::new(AtomicBool::new(false));
    // Each listener's reply failures not said yet: said at stop, where the listeners are not
    // joined (they wait in `recv`).
    let mut unsaid = Vec::new();
    for (socket, bound) in listeners {
        say!("evdgram: MI listening on {bound}");
        let reply_errors = ReplyErrors::default();
        unsaid.push((bound.clone(), reply_errors.unsaid.clone()));
        let (handler, stop_tx, stopping) = (handler.clone(), stop_tx.clone(), stopping.clone());
        thread::Builder::new()
            .name(format!("mi {bound}"))
            .spawn(move || {
                if let Err(e) = serve(&socket, &handler, &stopping, reply_errors) {
                    let _ = stop_tx.send(Stop::Failed(e.context(format!("MI on {bound}"))));
                }
            })
            .context("cannot start an MI thread")?;
    }
    // Shutting down waits for slow receivers up to `dispatcher.shutdown_timeout_ms`: a second
    // signal does not.
    blocked
        .spawn_winding_down(move |sig| {
            let _ = stop_tx.send(Stop::Signal(sig));
        })
        .context("cannot start the signal thread")?;

    let stop = stop_rx.recv().expect("the signal thread holds a sender");
    stopping.store(true, Ordering::SeqCst);
    cleanup.run();
    for (bound, unsaid) in &unsaid {
        match unsaid.swap(0, Ordering::SeqCst) {
            0 => {}
            n => say!(
                "evdgram: {n} more MI replies on {bound} could not be sent since the last report"
            ),
        }
    }
    drop(handler);
    let stats = dispatcher.shutdown();
    let why = match &stop {
        Stop::Signal(sig) => signal::name(*sig),
        Stop::Failed(_) => "an error".to_owned(),
    };
    say!(
        "evdgram: stopped by {why}; final stats: {}",
        stats_json(&stats)
    );
    match stop {
        Stop::Signal(_) => Ok(()),
        Stop::Failed(e) => Err(e),
    }
}

/// A `--mi` spec as given, and parsed.
#[derive(Debug, Clone)]
struct MiArg {
    spec: String,
    target: Target,
}

/// A `--mi` spec, checked as the command line is read (a bad one is a usage error).
fn mi_spec(spec: &str) -> Result<MiArg, TargetError> {
    Target::parse_bind(spec).map(|target| MiArg {
        spec: spec.to_owned(),
        target,
    })
}

/// Refuses an MI socket given twice: binding it again would fail on the first one, with a
/// message that blames another process ("another process is listening on this socket", "address
/// in use"). `named` says where the `i`th one was given. UDP port 0 is a new port each time.
fn refuse_duplicates(targets: &[Target], named: impl Fn(usize) -> String) -> anyhow::Result<()> {
    for (j, target) in targets.iter().enumerate() {
        if matches!(target, Target::Udp(addr) if addr.port() == 0) {
            continue;
        }
        if let Some(i) = targets[..j].iter().position(|t| t == target) {
            let (first, second) = (named(i), named(j));
            if first == second {
                bail!("{first} is given twice: give each MI socket once");
            }
            bail!("{first} and {second} are the same socket ({target}): give each MI socket once");
        }
    }
    Ok(())
}

/// The UNIX socket files to remove at exit.
#[derive(Default)]
struct Cleanups(Mutex<Vec<Cleanup>>);

impl Cleanups {
    fn add(&self, created: Option<listen::Created>) {
        if created.is_some() {
            let mut list = self.0.lock().unwrap_or_else(|e| e.into_inner());
            list.push(Cleanup(Mutex::new(created)));
        }
    }

    fn run(&self) {
        let list = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for c in list.iter() {
            c.run();
        }
    }
}

impl Drop for Cleanups {
    fn drop(&mut self) {
        self.run();
    }
}

/// Answers requests on `socket` until it fails.
fn serve(
    socket: &Socket,
    handler: &MiHandler,
    stopping: &AtomicBool,
    mut reply_errors: ReplyErrors,
) -> anyhow::Result<()> {
    // One byte more than allowed, to see that a request is too large.
    let mut buf = vec![0u8; handler.max_request_bytes() + 1];
    loop {
        let received = match socket {
            Socket::Udp(s) => s.recv_from(&mut buf).map(|(n, a)| (n, Peer::Udp(a))),
            Socket::Unix(s) => s.recv_from(&mut buf).map(|(n, a)| (n, Peer::Unix(a))),
        };
        let (n, peer) = match received {
            Ok(r) => r,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e).context("cannot receive"),
        };
        if stopping.load(Ordering::SeqCst) {
            return Ok(());
        }
        let Some(reply) = handler.handle(&buf[..n]) else {
            continue;
        };
        let sent = match (socket, &peer) {
            (Socket::Udp(s), Peer::Udp(a)) => s.send_to(&reply, a).map(drop),
            (Socket::Unix(s), Peer::Unix(a)) if !a.is_unnamed() => send_nowait(s, &reply, a),
            // An unbound UNIX client cannot be answered.
            _ => Ok(()),
        };
        if let Err(e) = sent {
            match reply_errors.failed(Instant::now()) {
                None => {}
                Some(0) => say!(
                    "evdgram: cannot send an MI reply to {peer}: {e} (next report for this \
                     listener in {} s at the earliest)",
                    REPLY_ERROR_INTERVAL.as_secs()
                ),
                Some(n) => say!(
                    "evdgram: cannot send an MI reply to {peer}: {e} ({n} more failed since \
                     the last report; next report for this listener in {} s at the earliest)",
                    REPLY_ERROR_INTERVAL.as_secs()
                ),
            }
        }
    }
}

/// A listener's failures to send a reply: a client that sends requests and reads no replies
/// makes one per request. The first is said, then at most one per [`REPLY_ERROR_INTERVAL`],
/// with how many were not said since; those left at stop are said then.
#[derive(Default)]
struct ReplyErrors {
    last: Option<Instant>,
    /// Failures since the last one said; shared with `run`, which says them at stop.
    unsaid: Arc<AtomicU64>,
}

impl ReplyErrors {
    /// Counts a failure at `now`: if it is to be said, returns how many were not since the
    /// last one said.
    fn failed(&mut self, now: Instant) -> Option<u64> {
        if self
            .last
            .is_some_and(|at| now.duration_since(at) < REPLY_ERROR_INTERVAL)
        {
            self.unsaid.fetch_add(1, Ordering::SeqCst);
            return None;
        }
        self.last = Some(now);
        Some(self.unsaid.swap(0, Ordering::SeqCst))
    }
}

/// Sends `reply` to the UNIX client at `to` without waiting. A client that sends requests and
/// does not read the replies fills its queue (10 datagrams by default); a blocking send would
/// then park this listener, and every other client of it, until that client reads. Its next
/// replies are refused instead (`EAGAIN`, logged once a minute at most). Replies waiting in its queue still count
/// against this socket's send buffer, so one that holds several large replies (a long
/// `subscribers_list`) can get the other clients' replies refused too, until it reads or
/// closes: they are logged, and the clients time out and may ask again.
fn send_nowait(socket: &UnixDatagram, reply: &[u8], to: &UnixAddr) -> io::Result<()> {
    // The address as the kernel takes it: a path, NUL-terminated, or an abstract name after a
    // NUL byte (its length says where it ends).
    let (name, lead) = match (to.as_pathname(), to.as_abstract_name()) {
        (Some(path), _) => (path.as_os_str().as_bytes(), 0),
        (None, Some(name)) => (name, 1),
        (None, None) => return Ok(()),
    };
    // SAFETY: sockaddr_un is plain data, valid all zeroes.
    let mut addr: libc::sockaddr_un = unsafe { std::mem::zeroed() };
    addr.sun_family = libc::AF_UNIX as libc::sa_family_t;
    // Addresses come from recvfrom, so they fit; a path keeps its terminating NUL.
    let room = addr.sun_path.len() - lead - usize::from(lead == 0);
    if name.len() > room {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            "address too long",
        ));
    }
    for (dst, &src) in addr.sun_path[lead..].iter_mut().zip(name) {
        *dst = src as libc::c_char;
    }
    let len = std::mem::offset_of!(libc::sockaddr_un, sun_path) + lead + name.len();
    // SAFETY: `reply` is valid for reads of its length; `addr` is an initialised sockaddr_un
    // of which `len` bytes (at most its size) are the address; the fd is open for the call.
    let n = unsafe {
        libc::sendto(
            socket.as_raw_fd(),
            reply.as_ptr().cast(),
            reply.len(),
            libc::MSG_DONTWAIT,
            (&addr as *const libc::sockaddr_un).cast(),
            len as libc::socklen_t,
        )
    };
    if n < 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

enum Peer {
    Udp(std::net::SocketAddr),
    Unix(UnixAddr),
}

impl std::fmt::Display for Peer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Peer::Udp(a) => write!(f, "udp:{a}"),
            Peer::Unix(a) => match (a.as_pathname(), a.as_abstract_name()) {
                (Some(p), _) => write!(f, "unix:{}", p.display()),
                (None, Some(name)) => write!(f, "unix:@{}", String::from_utf8_lossy(name)),
                (None, None) => f.write_str("an unnamed UNIX socket"),
            },
        }
    }
}

/// The process's file mode mask, set for a while: the old one is back when this is dropped.
/// Only while no other thread runs: the mask is the process's.
struct Umask(libc::mode_t);

impl Umask {
    fn set(mask: libc::mode_t) -> Umask {
        // SAFETY: umask only swaps the process's mask; it cannot fail.
        Umask(unsafe { libc::umask(mask) })
    }
}

impl Drop for Umask {
    fn drop(&mut self) {
        // SAFETY: as in `set`.
        unsafe { libc::umask(self.0) };
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reply_errors_are_said_once_a_minute_with_the_count_of_the_others() {
        let mut errors = ReplyErrors::default();
        let t0 = Instant::now();
        assert_eq!(errors.failed(t0), Some(0), "the first is said");
        for i in 1..=1820 {
            assert_eq!(errors.failed(t0 + Duration::from_millis(i * 30)), None);
        }
        let minute = t0 + REPLY_ERROR_INTERVAL;
        assert_eq!(errors.failed(minute), Some(1820));
        assert_eq!(errors.failed(minute + Duration::from_secs(59)), None);
        assert_eq!(errors.failed(minute + REPLY_ERROR_INTERVAL), Some(1));
    }
}
