//! Receivers: UDP and UNIX datagram sockets, one thread each (`recvmmsg`, 16 datagrams a call),
//! recording what arrives per run.
//!
//! Each datagram is parsed ([`Parser`]: against the run's exact bytes, else with the library's
//! decoders) and recorded in the [`Recorder`] of its run id (created on first sight, so a
//! `loadgen sink` in another process needs no set-up).

use std::collections::hash_map::Entry;
use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::fs::{FileTypeExt, MetadataExt};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use event_datagram::{Target, UnixAddr, MAX_DATAGRAM};

use crate::clock::mono_ns;
use crate::measure::{Limits, Recorder};
use crate::payload::{Fields, Parser};
use crate::sys::RecvBatch;

/// Receive buffer asked for each sink socket: room for bursts of 64 KiB datagrams.
const RECV_BUFFER: usize = 16 << 20;

/// Runs a sink records at once at most; events of more are counted apart
/// ([`Book::runs_refused`]). A loadgen run sends two (its warm-up and its window); a
/// standalone `loadgen sink` holds a run until it has been idle for `--idle`.
pub const MAX_RUNS: usize = 64;

/// What one sink socket has seen, by run id.
#[derive(Debug, Default)]
pub struct Book {
    /// Recorders by run id.
    pub runs: HashMap<u32, Recorder>,
    /// Datagrams that are not loadgen events, and events whose producer or sequence number
    /// no run of these [`Limits`] has.
    pub malformed: u64,
    /// Events of a new run that arrived while [`MAX_RUNS`] runs were held.
    pub runs_refused: u64,
}

enum Sock {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

/// One receiving socket and its thread.
pub struct Sink {
    target: Target,
    udp_addr: Option<SocketAddr>,
    book: Arc<Mutex<Book>>,
    datagrams: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    created: Option<Created>,
}

/// The socket file a sink bound: removed at the end only if it is still that file (another
/// process may have replaced it meanwhile).
struct Created {
    path: PathBuf,
    dev: u64,
    ino: u64,
}

impl Sink {
    /// Binds `target` (a UDP address, port 0 for any; or a UNIX path or abstract name) and
    /// starts receiving the events within `limits` (others count as malformed). A UNIX path
    /// may replace a stale socket file, nothing else (see `bind_path`).
    pub fn bind(target: &Target, limits: Limits) -> io::Result<Sink> {
        let (sock, target, udp_addr, created) = match target {
            Target::Udp(addr) => {
                let s = UdpSocket::bind(addr)?;
                let local = s.local_addr()?;
                (Sock::Udp(s), Target::Udp(local), Some(local), None)
            }
            Target::Unix(UnixAddr::Path(p)) => {
                let s = bind_path(p)?;
                let meta = std::fs::symlink_metadata(p)?;
                let created = Created {
                    path: p.clone(),
                    dev: meta.dev(),
                    ino: meta.ino(),
                };
                (Sock::Unix(s), target.clone(), None, Some(created))
            }
            Target::Unix(UnixAddr::Abstract(name)) => {
                use std::os::linux::net::SocketAddrExt;
                let addr = std::os::unix::net::SocketAddr::from_abstract_name(name)?;
                let s = UnixDatagram::bind_addr(&addr)?;
                (Sock::Unix(s), target.clone(), None, None)
            }
        };
        match &sock {
            Sock::Udp(s) => {
                crate::sys::set_recv_buffer(s, RECV_BUFFER);
                s.set_read_timeout(Some(Duration::from_millis(20)))?;
            }
            Sock::Unix(s) => {
                crate::sys::set_recv_buffer(s, RECV_BUFFER);
                s.set_read_timeout(Some(Duration::from_millis(20)))?;
            }
        }
        let book = Arc::new(Mutex::new(Book::default()));
        let datagrams = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let thread = {
            let (book, datagrams, stop) = (book.clone(), datagrams.clone(), stop.clone());
            std::thread::Builder::new()
                .name(crate::threads::RECEIVER_THREAD.into())
                .spawn(move || receive(sock, limits, &book, &datagrams, &stop))?
        };
        Ok(Sink {
            target,
            udp_addr,
            book,
            datagrams,
            stop,
            thread: Some(thread),
            created,
        })
    }

    /// Where it receives (for UDP with the bound port).
    pub fn target(&self) -> &Target {
        &self.target
    }

    /// Datagrams received so far (all runs, malformed too).
    pub fn datagrams(&self) -> u64 {
        self.datagrams.load(Ordering::Relaxed)
    }

    /// The records, locked (the receiving thread waits meanwhile: keep it short).
    pub fn book(&self) -> MutexGuard<'_, Book> {
        self.book.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The kernel's count of datagrams it dropped for this socket (UDP only: the `drops`
    /// column of `/proc/net/udp{,6}`); `None` for UNIX sockets, which never drop: their
    /// senders wait or get EAGAIN.
    pub fn kernel_drops(&self) -> Option<u64> {
        self.udp_addr.and_then(udp_drops)
    }

    /// Stops receiving and returns the records.
    pub fn stop(mut self) -> Book {
        self.halt();
        std::mem::take(&mut *self.book())
    }

    fn halt(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        if let Some(c) = self.created.take() {
            let ours = std::fs::symlink_metadata(&c.path)
                .is_ok_and(|m| m.dev() == c.dev && m.ino() == c.ino);
            if ours {
                let _ = std::fs::remove_file(&c.path);
            }
        }
    }
}

/// Binds a UNIX datagram socket at `path`, replacing a stale socket file (one that refuses
/// connections: nobody listens) but nothing else: not a file that is not a socket, and not a
/// socket another receiver is using (as `evdgram listen` does).
fn bind_path(path: &Path) -> io::Result<UnixDatagram> {
    match UnixDatagram::bind(path) {
        Err(e) if e.kind() == io::ErrorKind::AddrInUse => {}
        other => return other,
    }
    let refuse = |why: String| Err(io::Error::new(io::ErrorKind::AlreadyExists, why));
    if !std::fs::symlink_metadata(path)?.file_type().is_socket() {
        return refuse("the path exists and is not a socket: refusing to replace it".into());
    }
    match UnixDatagram::unbound()?.connect(path) {
        Ok(()) => refuse("another process is listening on this socket".into()),
        Err(e) if e.kind() == io::ErrorKind::ConnectionRefused => {
            // Nobody listens: a socket file left behind. Replace it.
            std::fs::remove_file(path)?;
            UnixDatagram::bind(path)
        }
        Err(e) => refuse(format!(
            "the socket file exists and is in use or unusable ({e}): refusing to replace it"
        )),
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.halt();
    }
}

fn receive(
    sock: Sock,
    limits: Limits,
    book: &Mutex<Book>,
    datagrams: &AtomicU64,
    stop: &AtomicBool,
) {
    let mut batch = RecvBatch::new(MAX_DATAGRAM + 1);
    let mut parser = Parser::new();
    // One datagram's events, recorded after it is parsed: one run lookup per run change instead
    // of one per event (a coalesced datagram holds hundreds, all of one run).
    let mut events: Vec<Fields> = Vec::new();
    while !stop.load(Ordering::Relaxed) {
        let got = match &sock {
            Sock::Udp(s) => batch.recv(s),
            Sock::Unix(s) => batch.recv(s),
        };
        let n = match got {
            Ok(n) => n,
            // A timeout (to look at `stop`), an interrupt, or an ECONNREFUSED echo on UDP:
            // not ours to handle.
            Err(_) => continue,
        };
        let now = mono_ns();
        datagrams.fetch_add(n as u64, Ordering::Relaxed);
        let mut b = book.lock().unwrap_or_else(|e| e.into_inner());
        let b = &mut *b;
        for i in 0..n {
            let datagram = batch.datagram(i);
            events.clear();
            // Fields from the network size the sequence tracking: only those of a run that
            // these limits allow are recorded (a foreign producer or sequence number could
            // ask for any amount of memory).
            b.malformed += parser.parse(datagram, &mut events);
            let parsed = events.len();
            events.retain(|f| limits.admits(f));
            b.malformed += (parsed - events.len()) as u64;
            let mut rest = &events[..];
            while let Some(first) = rest.first() {
                let same = rest.iter().take_while(|f| f.run == first.run).count();
                // A run the book does not hold yet, past its room: refused, counted (each
                // run costs two histograms, and run ids come from the network).
                let full = b.runs.len() >= MAX_RUNS;
                let recorder = match b.runs.entry(first.run) {
                    Entry::Vacant(_) if full => {
                        b.runs_refused += same as u64;
                        rest = &rest[same..];
                        continue;
                    }
                    run => run.or_default(),
                };
                for &f in &rest[..same] {
                    recorder.record(f, now);
                }
                rest = &rest[same..];
                if rest.is_empty() {
                    // A datagram counts for the run of its last event (a coalesced datagram
                    // never mixes runs: the warm-up is flushed before the measured window).
                    recorder.datagram(datagram.len());
                }
            }
        }
    }
}

/// The `drops` column of our socket's line in `/proc/net/udp` or `/proc/net/udp6`.
pub fn udp_drops(addr: SocketAddr) -> Option<u64> {
    let (file, want) = match addr {
        SocketAddr::V4(a) => (
            "/proc/net/udp",
            format!(
                "{:08X}:{:04X}",
                u32::from_le_bytes(a.ip().octets()),
                a.port()
            ),
        ),
        SocketAddr::V6(a) => {
            let o = a.ip().octets();
            let words: String = o
                .chunks(4)
                .map(|w| format!("{:08X}", u32::from_le_bytes([w[0], w[1], w[2], w[3]])))
                .collect();
            ("/proc/net/udp6", format!("{words}:{:04X}", a.port()))
        }
    };
    let text = std::fs::read_to_string(file).ok()?;
    parse_udp_drops(&text, &want)
}

fn parse_udp_drops(text: &str, local: &str) -> Option<u64> {
    text.lines().skip(1).find_map(|line| {
        let cols: Vec<&str> = line.split_whitespace().collect();
        (cols.get(1) == Some(&local)).then(|| cols.last()?.parse().ok())?
    })
}

/// A directory for UNIX sinks, removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// A fresh directory under the system temp dir.
    pub fn new() -> io::Result<TempDir> {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("loadgen-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir)?;
        Ok(TempDir(dir))
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_net_udp_drops_are_found_by_local_address() {
        let text = "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops\n\
  1: 0100007F:1F90 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 1234 2 0000000000000000 17\n";
        assert_eq!(parse_udp_drops(text, "0100007F:1F90"), Some(17));
        assert_eq!(parse_udp_drops(text, "0100007F:1F91"), None);
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        assert_eq!(udp_drops(s.local_addr().unwrap()), Some(0));
    }

    const LIMITS: Limits = Limits {
        producers: 2,
        seqs: 10,
    };

    fn unix(path: &Path) -> Target {
        Target::Unix(UnixAddr::Path(path.to_owned()))
    }

    /// A sink binds where `evdgram listen` would: never over a file or a live socket; over a
    /// stale socket file; and at the end it removes its own socket file, not one that has
    /// replaced it since.
    #[test]
    fn a_unix_sink_replaces_only_a_stale_socket_and_removes_only_its_own() {
        let dir = TempDir::new().unwrap();
        let notes = dir.path().join("notes.txt");
        std::fs::write(&notes, "data\n").unwrap();
        let e = Sink::bind(&unix(&notes), LIMITS).err().expect("refused");
        assert!(e.to_string().contains("not a socket"), "{e}");
        assert_eq!(std::fs::read_to_string(&notes).unwrap(), "data\n");

        let live_path = dir.path().join("live.sock");
        let live = UnixDatagram::bind(&live_path).unwrap();
        let e = Sink::bind(&unix(&live_path), LIMITS)
            .err()
            .expect("refused");
        assert!(e.to_string().contains("listening"), "{e}");
        UnixDatagram::unbound()
            .unwrap()
            .send_to(b"mine", &live_path)
            .unwrap();
        let mut buf = [0u8; 8];
        live.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        assert_eq!(live.recv(&mut buf).unwrap(), 4);

        let stale = dir.path().join("stale.sock");
        drop(UnixDatagram::bind(&stale).unwrap());
        let sink = Sink::bind(&unix(&stale), LIMITS).unwrap();
        drop(sink);
        assert!(!stale.exists(), "its own socket file is removed");

        // Replaced while the sink runs (by another receiver): that one stays.
        let sink = Sink::bind(&unix(&stale), LIMITS).unwrap();
        std::fs::remove_file(&stale).unwrap();
        let _other = UnixDatagram::bind(&stale).unwrap();
        drop(sink);
        assert!(
            stale.exists(),
            "another receiver's socket file is left alone"
        );
    }

    /// A UDP sink of [`LIMITS`] that has received one loadgen event (line format) for each
    /// `(run, producer, seq)`, each field as its text; then stopped.
    fn sink_after(events: &[(String, &str, &str)]) -> Book {
        use event_datagram::{Format, Params};

        let sink = Sink::bind(&Target::Udp(SocketAddr::from(([127, 0, 0, 1], 0))), LIMITS).unwrap();
        let Target::Udp(addr) = sink.target().clone() else {
            unreachable!("a UDP sink")
        };
        let sender = UdpSocket::bind("127.0.0.1:0").unwrap();
        let mut buf = vec![0u8; MAX_DATAGRAM];
        for (run, producer, seq) in events {
            let params = [run.as_str(), producer, seq, "0000000000000000001", "x"]
                .iter()
                .try_fold(Params::new(), |p, v| p.unnamed_str(v))
                .unwrap();
            let n = Format::Line
                .encode(crate::payload::EVENT, &params, &mut buf)
                .unwrap();
            sender.send_to(&buf[..n], addr).unwrap();
        }
        let deadline = mono_ns() + 10_000_000_000;
        while sink.datagrams() < events.len() as u64 && mono_ns() < deadline {
            std::thread::sleep(Duration::from_millis(5));
        }
        sink.stop()
    }

    /// Run ids come from the network too: past [`MAX_RUNS`] a new one is refused, counted.
    #[test]
    fn a_sink_holds_at_most_max_runs() {
        let events: Vec<_> = (0..MAX_RUNS + 6)
            .map(|run| (format!("{run:08}"), "000", "000000000000"))
            .collect();
        let book = sink_after(&events);
        assert_eq!(
            (book.runs.len(), book.runs_refused, book.malformed),
            (MAX_RUNS, 6, 0)
        );
    }

    /// Events outside the run's limits are counted as malformed, not recorded (a sequence
    /// number of 19 digits used to size a 2^61-byte bitmap).
    #[test]
    fn events_a_run_cannot_send_are_counted_not_recorded() {
        let events: Vec<_> = [
            ("000", "000000000000"),
            ("001", "000000000009"),
            ("002", "000000000000"),
            ("000", "000000000010"),
            ("000", "9999999999999999999"),
            ("4294967295", "000000000000"),
        ]
        .map(|(producer, seq)| ("00000001".to_owned(), producer, seq))
        .into();
        let book = sink_after(&events);
        assert_eq!(book.malformed, 4);
        let r = &book.runs[&1];
        // Producer 1 sent 0..=8 before its 9, as far as the sink knows.
        assert_eq!((r.received, r.gaps(), r.duplicates), (2, 9, 0));
    }
}
