//! Side-by-side delivery rate: our dispatcher (both backends) against a plain `send_to` loop and
//! the C baseline `shared/limits/dgbench.c`, measured in one run and reported as medians and
//! ratios (this machine is shared and noisy: absolute numbers drift, ratios measured together hold).
//!
//! What is counted is what a draining receiver got, not what the sender was told it sent.
//!
//! ```text
//! cargo bench --bench compare -- --seconds 2 --repeat 3   # everything, then the RSS check
//! cargo bench --bench compare -- --rss                    # only the peak-RSS check (10 s)
//! cargo bench --bench compare -- --cases gso              # only the UDP GSO cases
//! cargo bench --bench compare -- --cases udp1,unix1       # only these cases
//! ```
//!
//! Two groups of cases: per-datagram (64 B to 1, 4, 16 UDP targets and 1 UNIX target, against
//! the C batched baselines) and UDP GSO (equal-size 64, 512, 1400 B events to one UDP target,
//! against dgbench's `sendmsg -g K`). Ours runs with the default `udp_gso: true` and, on UDP,
//! again with `udp_gso: false`, so both the GSO gain and the per-datagram path are visible.

use std::fmt::Write as _;
use std::net::{SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

use event_datagram::{
    BackendChoice, Dispatcher, DispatcherConfig, Expiry, Format, Params, QueuePolicy, Target,
};

/// The encoded datagram size of the per-datagram cases.
const SIZE: usize = 64;
const EVENT: &str = "E_BENCH";
/// Receiver buffers as large as dgbench's, so that a UDP receiver's short stalls do not drop.
const RCVBUF: libc::c_int = 32 << 20;
/// Datagrams per `recvmmsg` call.
const RX_BATCH: usize = 64;
const RSS_LIMIT: u64 = 64 << 20;
const RSS_SECONDS: f64 = 10.0;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Transport {
    Udp,
    Unix,
}

/// One column of the report: where the datagrams go.
#[derive(Clone, Copy)]
struct Case {
    name: &'static str,
    /// What `--cases` matches (exactly, or as a prefix: `gso`, `udp`).
    key: &'static str,
    transport: Transport,
    targets: usize,
    /// Encoded datagram size, bytes.
    size: usize,
    /// A UDP GSO case (reported in its own table, against dgbench `-s sendmsg -g K`).
    gso: bool,
}

impl Case {
    const fn per_datagram(name: &'static str, key: &'static str, t: Transport, n: usize) -> Case {
        Case {
            name,
            key,
            transport: t,
            targets: n,
            size: SIZE,
            gso: false,
        }
    }

    const fn gso(name: &'static str, key: &'static str, size: usize) -> Case {
        Case {
            name,
            key,
            transport: Transport::Udp,
            targets: 1,
            size,
            gso: true,
        }
    }

    /// Who runs on this case.
    fn strategies(self) -> &'static [Strategy] {
        match (self.gso, self.transport) {
            (true, _) => &GSO_STRATEGIES,
            (false, Transport::Udp) => &UDP_STRATEGIES,
            (false, Transport::Unix) => &UNIX_STRATEGIES,
        }
    }
}

const CASES: [Case; 7] = [
    Case::per_datagram("UDP x1", "udp1", Transport::Udp, 1),
    Case::per_datagram("UNIX x1", "unix1", Transport::Unix, 1),
    Case::per_datagram("UDP x4", "udp4", Transport::Udp, 4),
    Case::per_datagram("UDP x16", "udp16", Transport::Udp, 16),
    Case::gso("GSO 64 B", "gso64", 64),
    Case::gso("GSO 512 B", "gso512", 512),
    Case::gso("GSO 1400 B", "gso1400", 1400),
];

/// Bytes of one GSO message at most (the library's `GSO_MAX_BYTES`): dgbench's `-g K` is capped
/// to what fits, as the library's runs are (64 x 1400 B would be refused with `EMSGSIZE`).
const GSO_MAX_BYTES: usize = 65_000;

/// Segments per message dgbench uses for `-g wanted` at `size`.
fn c_gso_segments(wanted: usize, size: usize) -> usize {
    wanted.min(GSO_MAX_BYTES / size).max(1)
}

/// One row of the report: who sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strategy {
    /// Ours, default configuration (`udp_gso: true`).
    Uring,
    Syscall,
    SendTo,
    CUring,
    CSendmmsg,
    /// Ours with `udp_gso: false`: one datagram per send.
    UringNoGso,
    SyscallNoGso,
    /// dgbench `-s sendmsg -g K`, K = 64 or 128 (capped to fit [`GSO_MAX_BYTES`]).
    CGso64,
    CGso128,
}

const STRATEGIES: [Strategy; 9] = [
    Strategy::Uring,
    Strategy::Syscall,
    Strategy::UringNoGso,
    Strategy::SyscallNoGso,
    Strategy::SendTo,
    Strategy::CUring,
    Strategy::CSendmmsg,
    Strategy::CGso64,
    Strategy::CGso128,
];

/// Per-datagram UDP cases: everything but the C GSO baselines.
const UDP_STRATEGIES: [Strategy; 7] = [
    Strategy::Uring,
    Strategy::Syscall,
    Strategy::UringNoGso,
    Strategy::SyscallNoGso,
    Strategy::SendTo,
    Strategy::CUring,
    Strategy::CSendmmsg,
];

/// UNIX: GSO does not apply.
const UNIX_STRATEGIES: [Strategy; 5] = [
    Strategy::Uring,
    Strategy::Syscall,
    Strategy::SendTo,
    Strategy::CUring,
    Strategy::CSendmmsg,
];

/// GSO cases: ours on and off, the C GSO baselines, and the best C per-datagram one for scale.
const GSO_STRATEGIES: [Strategy; 7] = [
    Strategy::Uring,
    Strategy::Syscall,
    Strategy::UringNoGso,
    Strategy::SyscallNoGso,
    Strategy::CGso64,
    Strategy::CGso128,
    Strategy::CUring,
];

/// Ours with GSO on (the default), and with it off.
const OURS: [Strategy; 2] = [Strategy::Uring, Strategy::Syscall];
const OURS_NO_GSO: [Strategy; 2] = [Strategy::UringNoGso, Strategy::SyscallNoGso];

impl Strategy {
    /// The name `--strategies` takes.
    fn key(self) -> &'static str {
        match self {
            Strategy::Uring => "ours-uring",
            Strategy::Syscall => "ours-syscall",
            Strategy::UringNoGso => "ours-nogso-uring",
            Strategy::SyscallNoGso => "ours-nogso-syscall",
            Strategy::SendTo => "send_to",
            Strategy::CUring => "c-uring",
            Strategy::CSendmmsg => "c-sendmmsg",
            Strategy::CGso64 => "c-gso64",
            Strategy::CGso128 => "c-gso128",
        }
    }

    fn label(self) -> &'static str {
        match self {
            Strategy::Uring => "ours, uring",
            Strategy::Syscall => "ours, syscall",
            Strategy::UringNoGso => "ours, uring, udp_gso off",
            Strategy::SyscallNoGso => "ours, syscall, udp_gso off",
            Strategy::SendTo => "Rust send_to loop",
            Strategy::CUring => "C uring -b 256 -c -O -F -W -M",
            Strategy::CSendmmsg => "C sendmmsg -b 32",
            Strategy::CGso64 => "C sendmsg -g 64",
            Strategy::CGso128 => "C sendmsg -g 128",
        }
    }

    /// The segments dgbench asks for, for the C GSO baselines.
    fn c_gso(self) -> Option<usize> {
        match self {
            Strategy::CGso64 => Some(64),
            Strategy::CGso128 => Some(128),
            _ => None,
        }
    }
}

/// The outcome of one timed run of one strategy on one case.
#[derive(Clone, Copy, Debug)]
struct Measurement {
    /// Datagrams received during the timed window (all targets together).
    delivered: u64,
    /// Length of the window in seconds.
    secs: f64,
    /// Datagrams the sender was asked to send over the whole run (warm-up and drain included):
    /// for our dispatcher the events routed to targets, including those it dropped itself.
    sent: u64,
    /// Datagrams received over the whole run, after draining.
    received: u64,
    /// The repeat it was measured in (set by `measure_all`).
    round: usize,
    /// CPU time the sending threads spent per datagram they sent during the window, in ns, as
    /// the kernel counts time on a CPU: without what the host took (see [`sender_cpu_ns`]).
    /// `None` when it could not be read.
    send_cpu_ns: Option<f64>,
}

impl Measurement {
    fn datagram_rate(&self) -> f64 {
        self.delivered as f64 / self.secs
    }

    /// Asked for but never received (dispatcher drops, UDP receive-buffer overflow), as a
    /// fraction of what was asked for.
    fn loss(&self) -> f64 {
        if self.sent == 0 {
            return 0.0;
        }
        self.sent.saturating_sub(self.received) as f64 / self.sent as f64
    }
}

struct Args {
    seconds: f64,
    repeat: usize,
    rss_only: bool,
    /// `--cases`: keys or key prefixes; empty = all cases.
    cases: Vec<String>,
    /// `--strategies`: keys or key prefixes; empty = all strategies (and then the RSS check).
    strategies: Vec<String>,
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            seconds: 2.0,
            repeat: 3,
            rss_only: false,
            cases: Vec::new(),
            strategies: Vec::new(),
        };
        let mut it = std::env::args().skip(1);
        while let Some(a) = it.next() {
            let mut value = |name: &str| {
                it.next()
                    .unwrap_or_else(|| fail(&format!("{name} needs a value")))
            };
            match a.as_str() {
                "--seconds" => {
                    args.seconds = value("--seconds")
                        .parse()
                        .unwrap_or_else(|_| fail("--seconds: a number"))
                }
                "--repeat" => {
                    args.repeat = value("--repeat")
                        .parse()
                        .unwrap_or_else(|_| fail("--repeat: a count"))
                }
                "--rss" => args.rss_only = true,
                "--cases" => args.cases = keys(&value("--cases")),
                "--strategies" => args.strategies = keys(&value("--strategies")),
                // `cargo bench` appends `--bench` to harness-less benches.
                "--bench" => {}
                other => fail(&format!(
                    "unknown argument {other:?} (expected --seconds N, --repeat R, --rss, --cases LIST, --strategies LIST)"
                )),
            }
        }
        if args.seconds.is_nan() || args.seconds <= 0.0 || args.repeat == 0 {
            fail("--seconds must be > 0 and --repeat >= 1");
        }
        if args.selected().is_empty() {
            let keys: Vec<&str> = CASES.iter().map(|c| c.key).collect();
            fail(&format!(
                "--cases matches no case (keys: {}; a prefix such as gso or udp matches several)",
                keys.join(", ")
            ));
        }
        if !STRATEGIES.iter().any(|&s| args.runs(s)) {
            let keys: Vec<&str> = STRATEGIES.iter().map(|s| s.key()).collect();
            fail(&format!(
                "--strategies matches no strategy (keys: {}; a prefix such as ours or c- matches several)",
                keys.join(", ")
            ));
        }
        args
    }

    /// Whether `--strategies` selects `s`.
    fn runs(&self, s: Strategy) -> bool {
        self.strategies.is_empty()
            || self
                .strategies
                .iter()
                .any(|k| s.key().starts_with(k.as_str()))
    }

    /// The cases to run, in [`CASES`] order.
    fn selected(&self) -> Vec<Case> {
        CASES
            .iter()
            .copied()
            .filter(|c| {
                self.cases.is_empty() || self.cases.iter().any(|k| c.key.starts_with(k.as_str()))
            })
            .collect()
    }
}

/// A comma-separated list of keys, lower case.
fn keys(list: &str) -> Vec<String> {
    list.split(',')
        .map(|c| c.trim().to_ascii_lowercase())
        .filter(|c| !c.is_empty())
        .collect()
}

fn fail(msg: &str) -> ! {
    eprintln!("compare: {msg}");
    std::process::exit(2)
}

/// The event every strategy sends: a name and one string param padded so the `line` datagram
/// is exactly `size` bytes.
struct Payload {
    params: Params,
    size: usize,
}

impl Payload {
    fn new(size: usize) -> Payload {
        let encode = |params: &Params| {
            let mut buf = vec![0u8; size + 256];
            let n = Format::Line
                .encode(EVENT, params, &mut buf)
                .expect("the event encodes");
            buf.truncate(n);
            buf
        };
        let bare = encode(&Params::new().str("ip", "").expect("valid name"));
        let params = Params::new()
            .str("ip", &"1".repeat(size - bare.len()))
            .expect("valid name");
        assert_eq!(encode(&params).len(), size);
        // Beyond `Params::INLINE_BYTES` (the 512 and 1400 B cases) each clone allocates once,
        // as an application building such an event would.
        assert!(
            size > Params::INLINE_BYTES || params.is_inline(),
            "a small benchmark event must travel without heap allocation"
        );
        Payload { params, size }
    }
}

/// Binds the calling thread's CPU affinity to one CPU (best effort: a failure only changes placement).
fn pin_to(cpu: usize) {
    // SAFETY: `set` is a plain bitmask on our stack, passed with its exact size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!("warning: cannot pin a receiver to CPU {cpu}: placement is the scheduler's");
        }
    }
}

/// Binds the calling thread, and the threads it spawns later (they inherit it), to every CPU but
/// the last, which the receivers own: as dgbench does with its sender (CPU 0) and receiver (CPU 1).
/// Without it, our producer and reactor threads are free to land on the receiver's CPU, and on a
/// 2-CPU machine the scheduler often puts all three there (the measured rate then depends on
/// placement more than on the sender). Best effort, as [`pin_to`].
fn pin_senders() {
    let n = ncpus();
    if n < 2 {
        return;
    }
    // SAFETY: as in `pin_to`.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        for cpu in 0..n - 1 {
            libc::CPU_SET(cpu, &mut set);
        }
        if libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set) != 0 {
            eprintln!(
                "warning: cannot keep the senders off CPU {}: placement is the scheduler's",
                n - 1
            );
        }
    }
}

/// CPUs online: not `available_parallelism`, which shrinks to one once the bench pins itself.
fn ncpus() -> usize {
    // SAFETY: sysconf takes no pointers and has no preconditions.
    let online = unsafe { libc::sysconf(libc::_SC_NPROCESSORS_ONLN) };
    usize::try_from(online).ok().filter(|&n| n > 0).unwrap_or(1)
}

/// A temp folder for UNIX sockets, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static NEXT: AtomicU64 = AtomicU64::new(0);
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("evdgram-compare-{}-{n}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// A receiving socket of either kind; kept open for the receiver thread.
enum RxSocket {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl AsRawFd for RxSocket {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            RxSocket::Udp(s) => s.as_raw_fd(),
            RxSocket::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// Where the senders send: one address per target.
#[derive(Clone)]
enum Dest {
    Udp(SocketAddr),
    Unix(PathBuf),
}

impl Dest {
    fn target(&self) -> Target {
        match self {
            Dest::Udp(a) => Target::Udp(*a),
            Dest::Unix(p) => {
                Target::parse(&format!("unix:{}", p.display())).expect("a short temp path")
            }
        }
    }
}

/// The receivers of one case, drained by one thread pinned to the last CPU (as dgbench does).
struct Sink {
    dests: Vec<Dest>,
    received: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: Option<TempDir>,
}

impl Sink {
    fn start(case: Case) -> Sink {
        let dir = (case.transport == Transport::Unix).then(TempDir::new);
        let mut sockets = Vec::new();
        let mut dests = Vec::new();
        for i in 0..case.targets {
            let sock = match &dir {
                None => {
                    let s = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
                    dests.push(Dest::Udp(s.local_addr().expect("bound")));
                    RxSocket::Udp(s)
                }
                Some(dir) => {
                    let path = dir.0.join(format!("rx{i}"));
                    let s = UnixDatagram::bind(&path).expect("bind unix");
                    dests.push(Dest::Unix(path));
                    RxSocket::Unix(s)
                }
            };
            set_rcvbuf(sock.as_raw_fd());
            sockets.push(sock);
        }
        let received = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (r, s) = (Arc::clone(&received), Arc::clone(&stop));
        let thread = thread::Builder::new()
            .name("compare-rx".into())
            .spawn(move || drain(&sockets, case.size, &r, &s))
            .expect("spawn receiver");
        Sink {
            dests,
            received,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn count(&self) -> u64 {
        self.received.load(Ordering::Relaxed)
    }

    /// Lets the senders warm up, then counts what arrives during `secs`; `sender` says what
    /// the sending side had used and sent, read at both ends of the window.
    fn window(&self, secs: f64, sender: impl Fn() -> SenderSample) -> Window {
        thread::sleep(warm_up(secs));
        let (c0, t0, s0) = (self.count(), Instant::now(), sender());
        thread::sleep(Duration::from_secs_f64(secs));
        let s1 = sender();
        Window {
            delivered: self.count() - c0,
            secs: t0.elapsed().as_secs_f64(),
            send_cpu_ns: s1.cpu_per_sent_since(s0),
        }
    }

    /// Waits until the receivers are drained; returns all datagrams received.
    fn finish(mut self) -> u64 {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            t.join().expect("receiver thread");
        }
        self.count()
    }
}

/// What a [`Sink::window`] measured.
struct Window {
    delivered: u64,
    secs: f64,
    send_cpu_ns: Option<f64>,
}

/// How long senders run before a window opens.
fn warm_up(secs: f64) -> Duration {
    Duration::from_secs_f64((secs / 8.0).min(0.25))
}

/// The sending side at one moment: its threads' CPU time and the datagrams it had sent.
#[derive(Clone, Copy)]
struct SenderSample {
    cpu_ns: Option<u64>,
    sent: u64,
}

impl SenderSample {
    /// CPU ns per datagram sent between `before` and this sample.
    fn cpu_per_sent_since(self, before: SenderSample) -> Option<f64> {
        let cpu = self.cpu_ns?.checked_sub(before.cpu_ns?)?;
        let sent = self.sent.checked_sub(before.sent).filter(|&n| n > 0)?;
        Some(cpu as f64 / sent as f64)
    }
}

/// The name our sending threads (producer, `send_to` loop) are given, so that
/// [`sender_cpu_ns`] finds them next to the library's reactor.
const SENDER_THREAD: &str = "compare-send";

/// Whether a thread of this process sends: ours, the library's reactor, or an io_uring worker
/// (the only ring in this process is the reactor's).
fn is_our_sender(name: &str) -> bool {
    name == SENDER_THREAD || name.starts_with("evdgram-reactor") || name.starts_with("iou-")
}

/// Time on a CPU of the threads of process `pid` that `keep` accepts by name, in ns: the first
/// field of `/proc/PID/task/TID/schedstat`. With paravirtual steal accounting (`steal` in
/// `/proc/stat`) the kernel leaves out of it the time the host took from the virtual CPU.
/// `None` if nothing could be read.
fn sender_cpu_ns(pid: u32, keep: impl Fn(&str) -> bool) -> Option<u64> {
    let tasks = std::fs::read_dir(format!("/proc/{pid}/task")).ok()?;
    let mut total = None;
    for task in tasks.flatten() {
        let path = task.path();
        let Ok(name) = std::fs::read_to_string(path.join("comm")) else {
            continue; // the thread ended meanwhile
        };
        if !keep(name.trim_end()) {
            continue;
        }
        let stat = std::fs::read_to_string(path.join("schedstat")).ok();
        let ns = stat.and_then(|s| s.split_whitespace().next()?.parse::<u64>().ok());
        if let Some(ns) = ns {
            total = Some(total.unwrap_or(0) + ns);
        }
    }
    total
}

fn set_rcvbuf(fd: RawFd) {
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: `fd` is an open socket; the option value is a c_int passed with its size.
        let r = unsafe {
            libc::setsockopt(
                fd,
                libc::SOL_SOCKET,
                opt,
                (&RCVBUF as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if r == 0 {
            return;
        }
    }
}

/// The receiver loop: `recvmmsg` every socket until empty, sleep in `poll` only when all are
/// empty (so the sender pays for wake-ups as it would with a real, mostly idle receiver).
/// After `stop`, it ends once the sockets stay silent for 50 ms.
fn drain(sockets: &[RxSocket], size: usize, received: &AtomicU64, stop: &AtomicBool) {
    pin_to(ncpus() - 1);
    let mut bufs = vec![vec![0u8; size + 64]; RX_BATCH];
    let mut iovs: Vec<libc::iovec> = bufs
        .iter_mut()
        .map(|b| libc::iovec {
            iov_base: b.as_mut_ptr().cast(),
            iov_len: b.len(),
        })
        .collect();
    // SAFETY: an all-zero mmsghdr is a valid empty header; iovecs are attached below.
    let mut msgs: Vec<libc::mmsghdr> = (0..RX_BATCH)
        .map(|_| unsafe { std::mem::zeroed() })
        .collect();
    for (m, iov) in msgs.iter_mut().zip(iovs.iter_mut()) {
        m.msg_hdr.msg_iov = iov;
        m.msg_hdr.msg_iovlen = 1;
    }
    let mut pollfds: Vec<libc::pollfd> = sockets
        .iter()
        .map(|s| libc::pollfd {
            fd: s.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        })
        .collect();
    let mut quiet_since: Option<Instant> = None;
    loop {
        let mut got = 0u64;
        for s in sockets {
            loop {
                // SAFETY: `msgs` points at `iovs` and `bufs`, which outlive the call; the
                // count matches the vector's length.
                let n = unsafe {
                    libc::recvmmsg(
                        s.as_raw_fd(),
                        msgs.as_mut_ptr(),
                        RX_BATCH as u32,
                        libc::MSG_DONTWAIT,
                        std::ptr::null_mut(),
                    )
                };
                if n <= 0 {
                    break;
                }
                got += n as u64;
                // Counted as it comes: a receiver that never finds its socket empty (slower
                // than the sender) must not hold its count back until the run ends.
                received.fetch_add(n as u64, Ordering::Relaxed);
                if (n as usize) < RX_BATCH {
                    break;
                }
            }
        }
        if got > 0 {
            quiet_since = None;
            continue;
        }
        if stop.load(Ordering::Relaxed) {
            let since = *quiet_since.get_or_insert_with(Instant::now);
            if since.elapsed() >= Duration::from_millis(50) {
                return;
            }
        }
        // SAFETY: `pollfds` is a live vector of pollfd, passed with its length.
        unsafe { libc::poll(pollfds.as_mut_ptr(), pollfds.len() as libc::nfds_t, 10) };
    }
}

/// Strategies 1 and 2: our dispatcher, one producer raising with `Block` (nothing dropped at the
/// queue), a pre-built `Params` cloned per raise as an application would build a fresh one.
fn run_dispatcher(
    case: Case,
    backend: BackendChoice,
    udp_gso: bool,
    payload: &Payload,
    secs: f64,
) -> Measurement {
    let sink = Sink::start(case);
    let config = DispatcherConfig {
        backend,
        queue_full: QueuePolicy::Block,
        udp_gso,
        ..Default::default()
    };
    let d = Dispatcher::start(config).expect("dispatcher starts");
    let event = d.publish(EVENT).expect("valid name");
    for dest in &sink.dests {
        d.subscribe(event, dest.target(), Expiry::Never)
            .expect("subscribe");
    }
    let stop = Arc::new(AtomicBool::new(false));
    let producer = {
        let (publisher, params, stop) = (d.publisher(), payload.params.clone(), Arc::clone(&stop));
        thread::Builder::new()
            .name(SENDER_THREAD.into())
            .spawn(move || {
                while !stop.load(Ordering::Relaxed) {
                    for _ in 0..64 {
                        publisher
                            .raise(event, params.clone())
                            .expect("Block policy: raise succeeds");
                    }
                }
            })
            .expect("spawn producer")
    };
    let window = sink.window(secs, || SenderSample {
        cpu_ns: sender_cpu_ns(std::process::id(), is_our_sender),
        sent: d.stats().totals.datagrams,
    });
    stop.store(true, Ordering::Relaxed);
    producer.join().expect("producer");
    let stats = d.shutdown();
    assert!(
        stats.is_balanced() && stats.events.dropped_queue_full == 0,
        "{stats:?}"
    );
    let m = Measurement {
        delivered: window.delivered,
        secs: window.secs,
        sent: stats.totals.raised,
        received: sink.finish(),
        round: 0,
        send_cpu_ns: window.send_cpu_ns,
    };
    if m.loss() > 0.0 || m.delivered == 0 {
        // Where the loss is: the dispatcher's own counters (the rest the receivers' kernel dropped).
        eprintln!(
            "    lost: {} udp_gso={udp_gso} {:?}",
            case.name, stats.totals
        );
    }
    m
}

/// Strategy 3: what a user writes without us: encode, then `send_to` on one unconnected socket
/// per event and target (blocking, so a full UNIX receiver makes it wait, never lose).
fn run_send_to(case: Case, payload: &Payload, secs: f64) -> Measurement {
    let sink = Sink::start(case);
    let payload_size = payload.size;
    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let sender = {
        let (dests, params, stop, sent) = (
            sink.dests.clone(),
            payload.params.clone(),
            Arc::clone(&stop),
            Arc::clone(&sent),
        );
        thread::Builder::new()
            .name(SENDER_THREAD.into())
            .spawn(move || {
                let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
                let unix = UnixDatagram::unbound().expect("unix socket");
                let mut buf = vec![0u8; payload_size + 256];
                while !stop.load(Ordering::Relaxed) {
                    let mut batch = 0;
                    for _ in 0..64 {
                        let n = Format::Line
                            .encode(EVENT, &params, &mut buf)
                            .expect("encodes");
                        for dest in &dests {
                            let ok = match dest {
                                Dest::Udp(a) => udp.send_to(&buf[..n], a).is_ok(),
                                Dest::Unix(p) => unix.send_to(&buf[..n], p).is_ok(),
                            };
                            batch += u64::from(ok);
                        }
                    }
                    sent.fetch_add(batch, Ordering::Relaxed);
                }
            })
            .expect("spawn sender")
    };
    let window = sink.window(secs, || SenderSample {
        cpu_ns: sender_cpu_ns(std::process::id(), |name| name == SENDER_THREAD),
        sent: sent.load(Ordering::Relaxed),
    });
    stop.store(true, Ordering::Relaxed);
    sender.join().expect("sender");
    Measurement {
        delivered: window.delivered,
        secs: window.secs,
        sent: sent.load(Ordering::Relaxed),
        received: sink.finish(),
        round: 0,
        send_cpu_ns: window.send_cpu_ns,
    }
}

/// Strategy 4: the C baseline. Built once per run; `None` (and a loud line) when it cannot be.
fn build_dgbench(out_dir: &Path) -> Option<PathBuf> {
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("../shared/limits/dgbench.c");
    let exe = out_dir.join("dgbench");
    let _ = std::fs::create_dir_all(out_dir);
    let built = Command::new("gcc")
        .args(["-O2", "-o"])
        .arg(&exe)
        .arg(&src)
        .arg("-luring")
        .output();
    match built {
        Ok(o) if o.status.success() => Some(exe),
        Ok(o) => {
            eprintln!(
                "!!! SKIPPED: C baseline: gcc failed on {} (is liburing-dev installed?):\n{}",
                src.display(),
                String::from_utf8_lossy(&o.stderr)
            );
            None
        }
        Err(e) => {
            eprintln!("!!! SKIPPED: C baseline: cannot run gcc: {e}");
            None
        }
    }
}

/// Runs dgbench once; its receiver counts what arrived (`rx`), over its own send duration.
fn run_c(exe: &Path, case: Case, strategy: Strategy, secs: f64, port: u16) -> Option<Measurement> {
    let mut cmd = Command::new(exe);
    let transport = if case.transport == Transport::Udp {
        "udp"
    } else {
        "unix"
    };
    cmd.args([
        "-t",
        transport,
        "-z",
        &case.size.to_string(),
        "-d",
        &secs.to_string(),
    ]);
    cmd.args(["-n", &case.targets.to_string(), "-p", &port.to_string()]);
    match strategy {
        Strategy::CUring => cmd.args(["-s", "uring", "-b", "256", "-c", "-O", "-F", "-W", "-M"]),
        Strategy::CGso64 | Strategy::CGso128 => {
            let g = c_gso_segments(strategy.c_gso().expect("a GSO strategy"), case.size);
            cmd.args(["-s", "sendmsg", "-g", &g.to_string()])
        }
        _ => cmd.args(["-s", "sendmmsg", "-b", "32"]),
    };
    let child = cmd
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn();
    // The sender is dgbench's own process (its receiver is a child process); its CPU share is
    // sampled well inside the sending, and applied to its rate over the whole of it.
    let cpu_share = child.as_ref().ok().and_then(|child| {
        let pid = child.id();
        thread::sleep(warm_up(secs));
        let (t0, c0) = (Instant::now(), sender_cpu_ns(pid, |_| true));
        thread::sleep(Duration::from_secs_f64(secs * 0.75));
        let (c1, wall) = (sender_cpu_ns(pid, |_| true), t0.elapsed());
        Some(c1?.checked_sub(c0?)? as f64 / wall.as_nanos() as f64)
    });
    let out = match child.and_then(|c| c.wait_with_output()) {
        Ok(o) if o.status.success() => o,
        Ok(o) => {
            eprintln!(
                "!!! dgbench failed ({}): {}",
                o.status,
                String::from_utf8_lossy(&o.stderr)
            );
            return None;
        }
        Err(e) => {
            eprintln!("!!! dgbench did not run: {e}");
            return None;
        }
    };
    let text = String::from_utf8_lossy(&out.stdout);
    let line = text.lines().find(|l| l.starts_with("RESULT "))?;
    let field = |key: &str| -> Option<f64> {
        line.split_whitespace()
            .find_map(|kv| kv.strip_prefix(key)?.strip_prefix('=')?.parse().ok())
    };
    let (dur, sent, rx) = (field("dur")?, field("sent")?, field("rx")?);
    Some(Measurement {
        delivered: rx as u64,
        secs: dur,
        sent: sent as u64,
        received: rx as u64,
        round: 0,
        send_cpu_ns: cpu_share
            .filter(|_| sent > 0.0)
            .map(|share| share * 1e9 * dur / sent),
    })
}

/// All measurements of one run, by case and strategy, in the order they were taken.
struct Results {
    /// The cases run, in order; `runs` is indexed like it.
    cases: Vec<Case>,
    runs: Vec<Vec<Vec<Measurement>>>,
}

impl Results {
    fn of(&self, case: usize, strategy: Strategy) -> &[Measurement] {
        let s = STRATEGIES
            .iter()
            .position(|&x| x == strategy)
            .expect("known strategy");
        &self.runs[case][s]
    }

    /// The index of the case with `key`, if it was run.
    fn case(&self, key: &str) -> Option<usize> {
        self.cases.iter().position(|c| c.key == key)
    }

    /// Median delivered datagrams/s, or `None` when never measured (C baseline skipped).
    fn median(&self, case: usize, strategy: Strategy) -> Option<f64> {
        let ms = self.of(case, strategy);
        median_of(ms.iter().map(Measurement::datagram_rate).collect())
    }

    /// Median CPU ns the sending threads spent per datagram sent, of the runs that read it.
    fn median_send_cpu(&self, case: usize, strategy: Strategy) -> Option<f64> {
        let ms = self.of(case, strategy);
        median_of(ms.iter().filter_map(|m| m.send_cpu_ns).collect())
    }

    /// Median rate of datagrams the sender was told were sent (over the sender's whole run).
    fn median_sent(&self, case: usize, strategy: Strategy) -> Option<f64> {
        let mut rates: Vec<f64> = self
            .of(case, strategy)
            .iter()
            .map(|m| m.sent as f64 / m.secs)
            .collect();
        rates.sort_by(f64::total_cmp);
        rates.get(rates.len() / 2).copied()
    }

    /// The ratio of `ours` to `vs` (the best strategy of each) in every round that measured
    /// both, sorted: rounds minutes apart, so drift on the machine cancels out of each.
    fn round_ratios(&self, case: usize, ours: &[Strategy], vs: &[Strategy]) -> Vec<f64> {
        let best_in = |among: &[Strategy], round: usize| {
            among
                .iter()
                .flat_map(|&s| self.of(case, s))
                .filter(|m| m.round == round)
                .map(Measurement::datagram_rate)
                .max_by(f64::total_cmp)
        };
        let rounds = self.runs[case].iter().flatten().map(|m| m.round + 1).max();
        let mut ratios: Vec<f64> = (0..rounds.unwrap_or(0))
            .filter_map(|r| Some(best_in(ours, r)? / best_in(vs, r)?))
            .collect();
        ratios.sort_by(f64::total_cmp);
        ratios
    }

    fn best(&self, case: usize, among: &[Strategy]) -> Option<(Strategy, f64)> {
        among
            .iter()
            .filter_map(|&s| self.median(case, s).map(|m| (s, m)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

fn measure_all(args: &Args, dgbench: Option<&Path>) -> Results {
    let cases = args.selected();
    let payloads: Vec<Payload> = cases.iter().map(|c| Payload::new(c.size)).collect();
    let mut runs = vec![vec![Vec::new(); STRATEGIES.len()]; cases.len()];
    // A port range of dgbench's own (48000-48999) that other runs on this machine are unlikely to share.
    let port = 48000 + (std::process::id() % 60) as u16 * 16;
    for rep in 0..args.repeat {
        for (c, &case) in cases.iter().enumerate() {
            let payload = &payloads[c];
            // Interleaved: A, B, C, D, A, B, C, D... so drift hits every strategy alike.
            for &strategy in case.strategies().iter().filter(|&&s| args.runs(s)) {
                let s = STRATEGIES
                    .iter()
                    .position(|&x| x == strategy)
                    .expect("known strategy");
                let ours =
                    |backend, gso| Some(run_dispatcher(case, backend, gso, payload, args.seconds));
                let m = match strategy {
                    Strategy::Uring => ours(BackendChoice::Uring, true),
                    Strategy::Syscall => ours(BackendChoice::Syscall, true),
                    Strategy::UringNoGso => ours(BackendChoice::Uring, false),
                    Strategy::SyscallNoGso => ours(BackendChoice::Syscall, false),
                    Strategy::SendTo => Some(run_send_to(case, payload, args.seconds)),
                    _ => dgbench.and_then(|exe| run_c(exe, case, strategy, args.seconds, port)),
                };
                if let Some(mut m) = m {
                    m.round = rep;
                    eprintln!(
                        "run {}/{} {:10} {:32} {:>9.0} datagrams/s (loss {:.2} %)",
                        rep + 1,
                        args.repeat,
                        case.name,
                        strategy.label(),
                        m.datagram_rate(),
                        100.0 * m.loss()
                    );
                    runs[c][s].push(m);
                }
            }
        }
    }
    Results { cases, runs }
}

/// The median (of the middle two, for an even count); `None` for none.
fn median_of(mut values: Vec<f64>) -> Option<f64> {
    values.sort_by(f64::total_cmp);
    let n = values.len();
    match n {
        0 => None,
        _ if n % 2 == 1 => Some(values[n / 2]),
        _ => Some((values[n / 2 - 1] + values[n / 2]) / 2.0),
    }
}

fn k(rate: f64) -> String {
    if rate >= 1e6 {
        format!("{:.2}M", rate / 1e6)
    } else {
        format!("{:.0}k", rate / 1e3)
    }
}

fn ratio(a: Option<f64>, b: Option<f64>) -> Option<f64> {
    Some(a? / b?)
}

fn verdict(value: Option<f64>, goal: f64) -> String {
    match value {
        None => "n/a (not run)".into(),
        Some(v) if v >= goal => format!("**{v:.2}x** (goal >= {goal}x: met)"),
        Some(v) => format!("**{v:.2}x** (goal >= {goal}x: NOT met)"),
    }
}

/// What the goals' "per round" figures are.
const ROUNDS_NOTE: &str = "Verdicts on the ratio of the medians above. \"Per round\": the same \
    ratio within each round (its strategies measured seconds apart, so the machine's drift \
    between rounds cancels out), median and range.";

/// `; per round: median X (min-max over N)`, or nothing when no round measured both.
fn per_round(ratios: &[f64]) -> String {
    let (Some(lo), Some(hi), Some(median)) =
        (ratios.first(), ratios.last(), median_of(ratios.to_vec()))
    else {
        return String::new();
    };
    let n = ratios.len();
    format!("; per round: median {median:.2}x, {lo:.2}x-{hi:.2}x over {n}")
}

fn cell(r: Option<f64>) -> String {
    r.map_or("n/a".into(), |r| format!("{r:.2}x"))
}

/// The medians, worst losses and sending CPU of `strategies` on the cases `cs` (indexes into
/// `results.cases`): one table each.
fn rate_tables(w: &mut String, results: &Results, cs: &[usize], strategies: &[Strategy]) {
    let table = |w: &mut String, cell: &dyn Fn(usize, Strategy) -> String| {
        let names: Vec<&str> = cs.iter().map(|&c| results.cases[c].name).collect();
        let _ = writeln!(w, "| strategy | {} |", names.join(" | "));
        let _ = writeln!(w, "| --- |{}", " ---: |".repeat(cs.len()));
        for &strategy in strategies {
            let cells: Vec<String> = cs.iter().map(|&c| cell(c, strategy)).collect();
            let _ = writeln!(w, "| {} | {} |", strategy.label(), cells.join(" | "));
        }
    };
    table(w, &|c, strategy| {
        let case = results.cases[c];
        match results.median(c, strategy) {
            // Not selected (`--strategies`), or the C baseline could not be built.
            None if case.strategies().contains(&strategy) => "not run".into(),
            None => "-".into(),
            Some(m) if case.targets > 1 => {
                format!("{} ({} ev/s)", k(m), k(m / case.targets as f64))
            }
            // dgbench's GSO senders outrun the receiver: what the kernel took matters too.
            Some(m) if strategy.c_gso().is_some() => {
                let sent = results.median_sent(c, strategy).unwrap_or(0.0);
                format!("{} (sent {})", k(m), k(sent))
            }
            Some(m) => k(m),
        }
    });
    let _ = writeln!(
        w,
        "\nNot delivered: (sent - received) / sent, worst run (for ours, sent = routed to targets, incl. its own drops)\n"
    );
    table(w, &|c, strategy| {
        let ms = results.of(c, strategy);
        let worst = ms.iter().map(Measurement::loss).fold(0.0, f64::max);
        if ms.is_empty() {
            "-".into()
        } else {
            format!("{:.2} %", 100.0 * worst)
        }
    });
    let _ = writeln!(w, "\n{SEND_CPU_NOTE}\n");
    table(
        w,
        &|c, strategy| match results.median_send_cpu(c, strategy) {
            None if results.of(c, strategy).is_empty() => "-".into(),
            None => "n/a".into(),
            Some(ns) => format!("{ns:.0}"),
        },
    );
}

/// What the sending-CPU table holds.
const SEND_CPU_NOTE: &str = "Sending CPU per datagram sent, ns (median): time on a CPU of the \
    sending threads during the window (ours: the producer and the reactor; send_to: its loop; C: \
    dgbench's sending process) divided by the datagrams they sent. It includes the kernel's \
    loopback delivery, which runs on the sender's CPU, and leaves out what the host took (steal), \
    but not the slowdowns of a shared host's caches. Where a rate above is the sender's limit, \
    this is what each datagram cost it; where it is the receiver's (C's GSO senders), the rate \
    says less about the sender than this.";

fn report(results: &Results, args: &Args) -> String {
    let mut out = String::new();
    let w = &mut out;
    let per_datagram: Vec<usize> = (0..results.cases.len())
        .filter(|&c| !results.cases[c].gso)
        .collect();
    let gso: Vec<usize> = (0..results.cases.len())
        .filter(|&c| results.cases[c].gso)
        .collect();
    let c_all = [Strategy::CUring, Strategy::CSendmmsg];
    let best_of = |c: usize, among: &[Strategy]| results.best(c, among).map(|b| b.1);
    let goal = |key: &str, ours: &[Strategy], vs: &[Strategy]| {
        let c = results.case(key)?;
        ratio(best_of(c, ours), best_of(c, vs))
    };
    if !per_datagram.is_empty() {
        let _ = writeln!(
            w,
            "## Per-datagram cases, {SIZE} B: delivered datagrams/s (median of {}, {} s each; in parentheses: events/s)\n",
            args.repeat, args.seconds
        );
        let _ = writeln!(
            w,
            "\"ours, uring\" and \"ours, syscall\" run the default configuration (`udp_gso: true`): equal-size \
             events to a UDP target then go out as GSO messages; \"udp_gso off\" is the per-datagram path. \
             GSO does not apply to UNIX.\n"
        );
        rate_tables(w, results, &per_datagram, &UDP_STRATEGIES);
        let _ = writeln!(w, "\n### Ratios (of medians)\n");
        let _ = writeln!(
            w,
            "| case | ours best (default) | / send_to loop | / C best batched | ours best, GSO off | GSO off / send_to | GSO off / C best batched | uring / syscall (GSO off) |"
        );
        let _ = writeln!(w, "| --- | --- | --- | --- | --- | --- | --- | --- |");
        for &c in &per_datagram {
            let case = results.cases[c];
            let best = results.best(c, &OURS);
            let off = results.best(c, &OURS_NO_GSO);
            let send_to = results.median(c, Strategy::SendTo);
            let c_best = best_of(c, &c_all);
            let (uring, syscall) = if case.transport == Transport::Unix {
                (Strategy::Uring, Strategy::Syscall)
            } else {
                (Strategy::UringNoGso, Strategy::SyscallNoGso)
            };
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} | {} | {} |",
                case.name,
                best.map_or("-".into(), |b| format!("{} {}", b.0.label(), k(b.1))),
                cell(ratio(best.map(|b| b.1), send_to)),
                cell(ratio(best.map(|b| b.1), c_best)),
                off.map_or("-".into(), |b| format!("{} {}", b.0.label(), k(b.1))),
                cell(ratio(off.map(|b| b.1), send_to)),
                cell(ratio(off.map(|b| b.1), c_best)),
                cell(ratio(results.median(c, uring), results.median(c, syscall))),
            );
        }
        let _ = writeln!(
            w,
            "\n### Goals (per-datagram path: GSO off on UDP; UNIX has no GSO)\n\n{ROUNDS_NOTE}\n"
        );
        for (text, key, ours, vs, g) in [
            (
                "UDP x1, ours best / send_to loop",
                "udp1",
                &OURS_NO_GSO,
                &[Strategy::SendTo][..],
                1.2,
            ),
            (
                "UNIX x1, ours best / send_to loop",
                "unix1",
                &OURS,
                &[Strategy::SendTo][..],
                1.2,
            ),
            (
                "UDP x1, ours best / C best batched",
                "udp1",
                &OURS_NO_GSO,
                &c_all[..],
                0.9,
            ),
            (
                "UNIX x1, ours best / C best batched",
                "unix1",
                &OURS,
                &c_all[..],
                0.9,
            ),
            (
                "UDP x16 datagrams/s, ours best / C best",
                "udp16",
                &OURS_NO_GSO,
                &c_all[..],
                0.9,
            ),
        ] {
            if let Some(c) = results.case(key) {
                let rounds = per_round(&results.round_ratios(c, ours, vs));
                let _ = writeln!(w, "- {text}: {}{rounds}", verdict(goal(key, ours, vs), g));
            }
        }
    }
    if !gso.is_empty() {
        let _ = writeln!(
            w,
            "\n## UDP GSO cases: equal-size events to 1 UDP target, delivered datagrams/s (median of {}, {} s each)\n",
            args.repeat, args.seconds
        );
        let segs: Vec<String> = gso
            .iter()
            .map(|&c| {
                let size = results.cases[c].size;
                format!(
                    "{size} B: `-g 64` sends {}, `-g 128` sends {} segments per message",
                    c_gso_segments(64, size),
                    c_gso_segments(128, size)
                )
            })
            .collect();
        let _ = writeln!(
            w,
            "C: `dgbench -t udp -z SIZE -s sendmsg -g K`, K capped to fit {GSO_MAX_BYTES} bytes as the library's runs are \
             (the kernel refuses more with `EMSGSIZE`): {}. The library sends at most 64 segments per message.\n",
            segs.join("; ")
        );
        rate_tables(w, results, &gso, &GSO_STRATEGIES);
        let _ = writeln!(w, "\n### Ratios (of medians)\n");
        let _ = writeln!(
            w,
            "| case | ours best, GSO on | / C -g 64 | / C -g 128 | GSO on / GSO off (best each) | uring / syscall (GSO on) |"
        );
        let _ = writeln!(w, "| --- | --- | --- | --- | --- | --- |");
        for &c in &gso {
            let best = results.best(c, &OURS);
            let _ = writeln!(
                w,
                "| {} | {} | {} | {} | {} | {} |",
                results.cases[c].name,
                best.map_or("-".into(), |b| format!("{} {}", b.0.label(), k(b.1))),
                cell(ratio(
                    best.map(|b| b.1),
                    results.median(c, Strategy::CGso64)
                )),
                cell(ratio(
                    best.map(|b| b.1),
                    results.median(c, Strategy::CGso128)
                )),
                cell(ratio(best.map(|b| b.1), best_of(c, &OURS_NO_GSO))),
                cell(ratio(
                    results.median(c, Strategy::Uring),
                    results.median(c, Strategy::Syscall)
                )),
            );
        }
        let _ = writeln!(w, "\n### Goals\n\n{ROUNDS_NOTE}\n");
        for &c in &gso {
            let key = results.cases[c].key;
            let _ = writeln!(
                w,
                "- {}, ours best (GSO on) / C sendmsg -g 64: {}{}",
                results.cases[c].name,
                verdict(goal(key, &OURS, &[Strategy::CGso64]), 0.9),
                per_round(&results.round_ratios(c, &OURS, &[Strategy::CGso64]))
            );
        }
    }
    out
}

/// `VmHWM` (peak resident set) of this process, in bytes.
fn peak_rss() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmHWM:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse::<u64>().ok())
        .map_or(0, |kb| kb * 1024)
}

/// Peak RSS while the default configuration runs flat out for 10 s on the fastest case.
fn rss_check(payload: &Payload) -> String {
    let before = peak_rss();
    let case = CASES[1];
    let sink = Sink::start(case);
    let d = Dispatcher::start(DispatcherConfig::default()).expect("dispatcher starts");
    let event = d.publish(EVENT).expect("valid name");
    d.subscribe(event, sink.dests[0].target(), Expiry::Never)
        .expect("subscribe");
    let (publisher, params) = (d.publisher(), payload.params.clone());
    let deadline = Instant::now() + Duration::from_secs_f64(RSS_SECONDS);
    let mut raised = 0u64;
    while Instant::now() < deadline {
        for _ in 0..64 {
            publisher
                .raise(event, params.clone())
                .expect("Block policy: raise succeeds");
        }
        raised += 64;
    }
    let stats = d.shutdown();
    let received = sink.finish();
    let peak = peak_rss();
    let verdict = if peak < RSS_LIMIT { "met" } else { "NOT met" };
    format!(
        "## Peak RSS\n\n{RSS_SECONDS} s of default `DispatcherConfig` (backend {}) raising flat out to {} \
         ({raised} raised, {} sent, {} dropped by the dispatcher, {received} received): VmHWM **{:.1} MiB** (goal < 64 MiB: {verdict}; \
         {:.1} MiB before the run)\n",
        stats.backend,
        case.name,
        stats.totals.datagrams,
        stats.totals.dropped(),
        peak as f64 / (1 << 20) as f64,
        before as f64 / (1 << 20) as f64,
    )
}

fn machine_info() -> String {
    let cpu = std::fs::read_to_string("/proc/cpuinfo")
        .ok()
        .and_then(|s| {
            s.lines().find_map(|l| {
                l.strip_prefix("model name")?
                    .split(':')
                    .nth(1)
                    .map(|m| m.trim().to_string())
            })
        })
        .unwrap_or_else(|| "unknown".into());
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default();
    let command: Vec<String> = std::env::args()
        .skip(1)
        .filter(|a| a != "--bench")
        .collect();
    format!(
        "# event-datagram: comparison benchmark\n\n- machine: {} CPUs (nproc), kernel {}, {cpu}\n\
         - command: `cargo bench --bench compare -- {}`\n- `line` datagrams ({SIZE} B per-datagram cases; 64, 512, 1400 B GSO cases) to 127.0.0.1 / \
         UNIX sockets in a temp dir; receivers drain with `recvmmsg` on the last CPU, senders \
         (our producer and reactor threads, the send_to loop, dgbench's sender) run on the other CPUs \
         (dgbench pins its sender to CPU 0 and its receiver to CPU 1: the same on 2 CPUs)\n\
         - receivers: ours and the send_to loop's are this bench's (`recvmmsg` until empty, then \
         `poll`), counting what arrives in the window; dgbench's runs are received by its own \
         (`epoll_wait`, then up to 16 `recvmmsg`), whose count also holds what it drains after its \
         sender stops, over its sending time (a full queue's worth where its sender outruns it: \
         a little in C's favour)\n\
         - \"ours best\": the better median of our two backends (`uring`, `syscall`), both shipped; \
         `auto`, the default, runs `uring` where io_uring is allowed (the uring / syscall columns \
         give the default's share)\n\
         - load average before the runs: {}\n",
        ncpus(),
        kernel.trim(),
        command.join(" "),
        loadavg(),
    )
}

/// `/proc/loadavg`'s 1, 5 and 15 minute averages (the machine is shared: context for the numbers).
fn loadavg() -> String {
    std::fs::read_to_string("/proc/loadavg")
        .map(|s| s.split_whitespace().take(3).collect::<Vec<_>>().join(" "))
        .unwrap_or_else(|_| "unknown".into())
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn main() {
    let args = Args::parse();
    // Before any thread starts: the dispatcher's reactor, its producer and the send_to loop
    // inherit it; the receivers pin themselves to the last CPU.
    pin_senders();
    let payload = Payload::new(SIZE);
    let mut out = machine_info();
    if !args.rss_only {
        let dgbench = build_dgbench(&target_dir());
        if dgbench.is_none() {
            out.push_str("\n**!!! C baseline SKIPPED: dgbench could not be built (gcc or liburing-dev missing)**\n");
        }
        let results = measure_all(&args, dgbench.as_deref());
        out.push('\n');
        out.push_str(&report(&results, &args));
        let _ = writeln!(out, "\nLoad average after the runs: {}", loadavg());
    }
    if args.strategies.is_empty() {
        out.push('\n');
        out.push_str(&rss_check(&payload));
    }
    println!("{out}");
    let path = target_dir().join("compare.md");
    match std::fs::write(&path, &out) {
        Ok(()) => eprintln!("written to {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}
