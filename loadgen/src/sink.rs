//! Receivers: UDP and UNIX datagram sockets, one thread each (`recvmmsg`, 16 datagrams a call),
//! recording what arrives per run.
//!
//! Each datagram is decoded with the library's decoder and recorded in the [`Recorder`] of its
//! run id (created on first sight, so a `loadgen sink` in another process needs no set-up).

use std::collections::HashMap;
use std::io;
use std::net::{SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::Duration;

use event_datagram::{Target, UnixAddr, MAX_DATAGRAM};

use crate::clock::mono_ns;
use crate::measure::Recorder;
use crate::payload::{Fields, Parser};
use crate::sys::RecvBatch;

/// Receive buffer asked for each sink socket: room for bursts of 64 KiB datagrams.
const RECV_BUFFER: usize = 16 << 20;

/// What one sink socket has seen, by run id.
#[derive(Debug, Default)]
pub struct Book {
    /// Recorders by run id.
    pub runs: HashMap<u32, Recorder>,
    /// Datagrams that are not loadgen events.
    pub malformed: u64,
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
    path: Option<PathBuf>,
}

impl Sink {
    /// Binds `target` (a UDP address, port 0 for any; or a UNIX path or abstract name) and
    /// starts receiving.
    pub fn bind(target: &Target) -> io::Result<Sink> {
        let (sock, target, udp_addr, path) = match target {
            Target::Udp(addr) => {
                let s = UdpSocket::bind(addr)?;
                let local = s.local_addr()?;
                (Sock::Udp(s), Target::Udp(local), Some(local), None)
            }
            Target::Unix(UnixAddr::Path(p)) => {
                let _ = std::fs::remove_file(p);
                let s = UnixDatagram::bind(p)?;
                (Sock::Unix(s), target.clone(), None, Some(p.clone()))
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
                .name("loadgen-sink".into())
                .spawn(move || receive(sock, &book, &datagrams, &stop))?
        };
        Ok(Sink {
            target,
            udp_addr,
            book,
            datagrams,
            stop,
            thread: Some(thread),
            path,
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
        if let Some(p) = self.path.take() {
            let _ = std::fs::remove_file(p);
        }
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.halt();
    }
}

fn receive(sock: Sock, book: &Mutex<Book>, datagrams: &AtomicU64, stop: &AtomicBool) {
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
            b.malformed += parser.parse(datagram, |f| events.push(f));
            let mut rest = &events[..];
            while let Some(first) = rest.first() {
                let same = rest.iter().take_while(|f| f.run == first.run).count();
                let recorder = b.runs.entry(first.run).or_default();
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
}
