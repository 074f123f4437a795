//! Test support: temp dirs, real receivers on loopback and in temp dirs, bounded waits.

use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_datagram::{BackendChoice, Param, Target, Value};

/// A directory removed on drop.
pub struct TempDir(PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("evdg-{tag}-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    pub fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// How many datagrams a UNIX socket's receive queue holds (`net.unix.max_dgram_qlen`: 10 by
/// the kernel's default, 512 where systemd sets it). Read, never changed.
pub fn unix_qlen() -> usize {
    std::fs::read_to_string("/proc/sys/net/unix/max_dgram_qlen")
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(10)
}

/// Both backends; `uring` is skipped, loudly, where the kernel refuses io_uring. Where
/// `EVDGRAM_BACKEND` is set, it decides every dispatcher's backend: only that one.
pub fn backends() -> Vec<BackendChoice> {
    // Empty is unset, as for the dispatcher.
    if let Some(forced) = std::env::var_os(event_datagram::BACKEND_ENV).filter(|v| !v.is_empty()) {
        let forced = match forced.to_str() {
            Some("uring") => BackendChoice::Uring,
            Some("syscall") => BackendChoice::Syscall,
            Some("auto") if io_uring_available() => BackendChoice::Uring,
            Some("auto") => BackendChoice::Syscall,
            _ => panic!(
                "{}={forced:?} is not uring, syscall or auto",
                event_datagram::BACKEND_ENV
            ),
        };
        eprintln!(
            "{} is set: testing the {forced:?} backend only",
            event_datagram::BACKEND_ENV
        );
        return vec![forced];
    }
    let mut v = vec![BackendChoice::Syscall];
    match io_uring_available() {
        true => v.push(BackendChoice::Uring),
        false => {
            eprintln!("SKIPPED: io_uring is unavailable here; testing the syscall backend only")
        }
    }
    v
}

/// Whether a dispatcher can start on the `uring` backend here.
pub fn io_uring_available() -> bool {
    let config = event_datagram::DispatcherConfig {
        backend: BackendChoice::Uring,
        ..Default::default()
    };
    event_datagram::Dispatcher::start(config).is_ok()
}

/// A socket that receives into a shared list from its own thread until dropped.
pub struct Receiver {
    pub target: Target,
    got: Arc<Mutex<Vec<Vec<u8>>>>,
    paused: Arc<std::sync::atomic::AtomicBool>,
    stop: Arc<std::sync::atomic::AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

enum Sock {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl Sock {
    fn recv(&self, buf: &mut [u8]) -> std::io::Result<usize> {
        match self {
            Sock::Udp(s) => s.recv(buf),
            Sock::Unix(s) => s.recv(buf),
        }
    }
}

impl Receiver {
    pub fn udp() -> Receiver {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        let target = Target::Udp(s.local_addr().unwrap());
        Self::spawn(Sock::Udp(s), target)
    }

    /// On `::1`; where there is no IPv6 loopback (Docker's default), on `127.0.0.1`, said.
    pub fn udp6() -> Receiver {
        let Ok(s) = UdpSocket::bind("[::1]:0") else {
            eprintln!("SKIPPED: no IPv6 loopback here; an IPv4 receiver instead");
            return Self::udp();
        };
        let target = Target::Udp(s.local_addr().unwrap());
        Self::spawn(Sock::Udp(s), target)
    }

    pub fn unix(path: &Path) -> Receiver {
        let s = UnixDatagram::bind(path).unwrap();
        let target = Target::parse(&format!("unix:{}", path.display())).unwrap();
        Self::spawn(Sock::Unix(s), target)
    }

    fn spawn(sock: Sock, target: Target) -> Receiver {
        let got = Arc::new(Mutex::new(Vec::new()));
        let paused = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let (g, p, st) = (got.clone(), paused.clone(), stop.clone());
        match &sock {
            Sock::Udp(s) => s.set_read_timeout(Some(Duration::from_millis(20))).unwrap(),
            Sock::Unix(s) => s.set_read_timeout(Some(Duration::from_millis(20))).unwrap(),
        }
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; 70_000];
            while !st.load(Ordering::Relaxed) {
                if p.load(Ordering::Relaxed) {
                    std::thread::sleep(Duration::from_millis(5));
                    continue;
                }
                if let Ok(n) = sock.recv(&mut buf) {
                    g.lock().unwrap().push(buf[..n].to_vec());
                }
            }
        });
        Receiver {
            target,
            got,
            paused,
            stop,
            thread: Some(thread),
        }
    }

    pub fn pause(&self, paused: bool) {
        self.paused.store(paused, Ordering::Relaxed);
    }

    pub fn count(&self) -> usize {
        self.got.lock().unwrap().len()
    }

    pub fn datagrams(&self) -> Vec<Vec<u8>> {
        self.got.lock().unwrap().clone()
    }

    /// Waits until at least `n` datagrams arrived; false after `limit`.
    pub fn wait_for(&self, n: usize, limit: Duration) -> bool {
        wait_until(limit, || self.count() >= n)
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// Joins `thread` once it has finished; panics, naming `what`, if it has not within `limit`
/// (a thread that a bug left blocked fails its test instead of hanging the suite).
pub fn join_within<T>(thread: JoinHandle<T>, limit: Duration, what: &str) -> T {
    assert!(
        wait_until(limit, || thread.is_finished()),
        "{what} still running after {limit:?}"
    );
    thread.join().expect(what)
}

/// Polls `cond` every millisecond until it holds (true) or `limit` passes (false).
pub fn wait_until(limit: Duration, mut cond: impl FnMut() -> bool) -> bool {
    let end = Instant::now() + limit;
    while Instant::now() < end {
        if cond() {
            return true;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    cond()
}

/// What the line format reads back: strings only, and an empty name is no name.
pub fn normalize_line(params: &[Param]) -> Vec<Param> {
    params
        .iter()
        .map(|p| Param {
            name: p.name.clone().filter(|n| !n.is_empty()),
            value: match &p.value {
                Value::Int(n) => Value::Str(n.to_string()),
                v => v.clone(),
            },
        })
        .collect()
}

/// What `jsonrpc` reads back: an array (first param unnamed) drops the names, an object names
/// the unnamed ones `""`.
pub fn normalize_jsonrpc(params: &[Param]) -> Vec<Param> {
    let object = params.first().is_some_and(|p| p.name.is_some());
    params
        .iter()
        .map(|p| Param {
            name: object.then(|| p.name.clone().unwrap_or_default()),
            value: p.value.clone(),
        })
        .collect()
}
