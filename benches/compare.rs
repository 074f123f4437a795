//! Side-by-side delivery rate: our dispatcher (both backends) against a plain `send_to` loop and
//! the C baseline `shared/limits/dgbench.c`, measured in one run and reported as medians and
//! ratios (this machine is shared and noisy: absolute numbers drift, ratios measured together hold).
//!
//! What is counted is what a draining receiver got, not what the sender was told it sent.
//!
//! ```text
//! cargo bench --bench compare -- --seconds 2 --repeat 3   # everything, then the RSS check
//! cargo bench --bench compare -- --rss                    # only the peak-RSS check (10 s)
//! ```

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

/// The encoded datagram size every strategy sends.
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
    transport: Transport,
    targets: usize,
}

const CASES: [Case; 4] = [
    Case {
        name: "UDP x1",
        transport: Transport::Udp,
        targets: 1,
    },
    Case {
        name: "UNIX x1",
        transport: Transport::Unix,
        targets: 1,
    },
    Case {
        name: "UDP x4",
        transport: Transport::Udp,
        targets: 4,
    },
    Case {
        name: "UDP x16",
        transport: Transport::Udp,
        targets: 16,
    },
];

/// One row of the report: who sends.
#[derive(Clone, Copy, PartialEq, Eq)]
enum Strategy {
    Uring,
    Syscall,
    SendTo,
    CUring,
    CSendmmsg,
}

const STRATEGIES: [Strategy; 5] = [
    Strategy::Uring,
    Strategy::Syscall,
    Strategy::SendTo,
    Strategy::CUring,
    Strategy::CSendmmsg,
];

impl Strategy {
    fn label(self) -> &'static str {
        match self {
            Strategy::Uring => "ours, uring",
            Strategy::Syscall => "ours, syscall",
            Strategy::SendTo => "Rust send_to loop",
            Strategy::CUring => "C uring -b 256 -c -O -F -W -M",
            Strategy::CSendmmsg => "C sendmmsg -b 32",
        }
    }

    fn is_c(self) -> bool {
        matches!(self, Strategy::CUring | Strategy::CSendmmsg)
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
}

impl Args {
    fn parse() -> Args {
        let mut args = Args {
            seconds: 2.0,
            repeat: 3,
            rss_only: false,
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
                // `cargo bench` appends `--bench` to harness-less benches.
                "--bench" => {}
                other => fail(&format!(
                    "unknown argument {other:?} (expected --seconds N, --repeat R, --rss)"
                )),
            }
        }
        if args.seconds.is_nan() || args.seconds <= 0.0 || args.repeat == 0 {
            fail("--seconds must be > 0 and --repeat >= 1");
        }
        args
    }
}

fn fail(msg: &str) -> ! {
    eprintln!("compare: {msg}");
    std::process::exit(2)
}

/// The event every strategy sends: a name and one string param padded so the `line` datagram
/// is exactly [`SIZE`] bytes.
struct Payload {
    params: Params,
}

impl Payload {
    fn new() -> Payload {
        let encode = |params: &Params| {
            let mut buf = [0u8; 256];
            let n = Format::Line
                .encode(EVENT, params, &mut buf)
                .expect("a small event encodes");
            buf[..n].to_vec()
        };
        let bare = encode(&Params::new().str("ip", "").expect("valid name"));
        let params = Params::new()
            .str("ip", &"1".repeat(SIZE - bare.len()))
            .expect("valid name");
        assert_eq!(encode(&params).len(), SIZE);
        assert!(
            params.is_inline(),
            "the benchmark event must travel without heap allocation"
        );
        Payload { params }
    }
}

/// Binds the calling thread's CPU affinity to one CPU (best effort: a failure only changes placement).
fn pin_to(cpu: usize) {
    // SAFETY: `set` is a plain bitmask on our stack, passed with its exact size.
    unsafe {
        let mut set: libc::cpu_set_t = std::mem::zeroed();
        libc::CPU_SET(cpu, &mut set);
        libc::sched_setaffinity(0, std::mem::size_of::<libc::cpu_set_t>(), &set);
    }
}

fn ncpus() -> usize {
    thread::available_parallelism().map_or(1, |n| n.get())
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
            .spawn(move || drain(&sockets, &r, &s))
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

    /// Lets the senders warm up, then counts what arrives during `secs`.
    fn window(&self, secs: f64) -> (u64, f64) {
        thread::sleep(Duration::from_secs_f64((secs / 8.0).min(0.25)));
        let (c0, t0) = (self.count(), Instant::now());
        thread::sleep(Duration::from_secs_f64(secs));
        (self.count() - c0, t0.elapsed().as_secs_f64())
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
fn drain(sockets: &[RxSocket], received: &AtomicU64, stop: &AtomicBool) {
    pin_to(ncpus() - 1);
    let mut bufs = vec![[0u8; SIZE + 64]; RX_BATCH];
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
                if (n as usize) < RX_BATCH {
                    break;
                }
            }
        }
        if got > 0 {
            received.fetch_add(got, Ordering::Relaxed);
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
fn run_dispatcher(case: Case, backend: BackendChoice, payload: &Payload, secs: f64) -> Measurement {
    let sink = Sink::start(case);
    let config = DispatcherConfig {
        backend,
        queue_full: QueuePolicy::Block,
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
        thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    publisher
                        .raise(event, params.clone())
                        .expect("Block policy: raise succeeds");
                }
            }
        })
    };
    let (delivered, secs) = sink.window(secs);
    stop.store(true, Ordering::Relaxed);
    producer.join().expect("producer");
    let stats = d.shutdown();
    assert!(
        stats.is_balanced() && stats.events.dropped_queue_full == 0,
        "{stats:?}"
    );
    Measurement {
        delivered,
        secs,
        sent: stats.totals.raised,
        received: sink.finish(),
    }
}

/// Strategy 3: what a user writes without us: encode, then `send_to` on one unconnected socket
/// per event and target (blocking, so a full UNIX receiver makes it wait, never lose).
fn run_send_to(case: Case, payload: &Payload, secs: f64) -> Measurement {
    let sink = Sink::start(case);
    let stop = Arc::new(AtomicBool::new(false));
    let sender = {
        let (dests, params, stop) = (
            sink.dests.clone(),
            payload.params.clone(),
            Arc::clone(&stop),
        );
        thread::spawn(move || {
            let udp = UdpSocket::bind("127.0.0.1:0").expect("bind udp");
            let unix = UnixDatagram::unbound().expect("unix socket");
            let mut buf = [0u8; 256];
            let mut sent = 0u64;
            while !stop.load(Ordering::Relaxed) {
                for _ in 0..64 {
                    let n = Format::Line
                        .encode(EVENT, &params, &mut buf)
                        .expect("encodes");
                    for dest in &dests {
                        let ok = match dest {
                            Dest::Udp(a) => udp.send_to(&buf[..n], a).is_ok(),
                            Dest::Unix(p) => unix.send_to(&buf[..n], p).is_ok(),
                        };
                        sent += u64::from(ok);
                    }
                }
            }
            sent
        })
    };
    let (delivered, secs) = sink.window(secs);
    stop.store(true, Ordering::Relaxed);
    let sent = sender.join().expect("sender");
    Measurement {
        delivered,
        secs,
        sent,
        received: sink.finish(),
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
        &SIZE.to_string(),
        "-d",
        &secs.to_string(),
    ]);
    cmd.args(["-n", &case.targets.to_string(), "-p", &port.to_string()]);
    match strategy {
        Strategy::CUring => cmd.args(["-s", "uring", "-b", "256", "-c", "-O", "-F", "-W", "-M"]),
        _ => cmd.args(["-s", "sendmmsg", "-b", "32"]),
    };
    let out = match cmd.output() {
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
    })
}

/// All measurements of one run, by case and strategy, in the order they were taken.
struct Results {
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

    /// Median delivered datagrams/s, or `None` when never measured (C baseline skipped).
    fn median(&self, case: usize, strategy: Strategy) -> Option<f64> {
        let mut rates: Vec<f64> = self
            .of(case, strategy)
            .iter()
            .map(Measurement::datagram_rate)
            .collect();
        if rates.is_empty() {
            return None;
        }
        rates.sort_by(f64::total_cmp);
        let n = rates.len();
        Some(if n % 2 == 1 {
            rates[n / 2]
        } else {
            (rates[n / 2 - 1] + rates[n / 2]) / 2.0
        })
    }

    fn best(&self, case: usize, among: &[Strategy]) -> Option<(Strategy, f64)> {
        among
            .iter()
            .filter_map(|&s| self.median(case, s).map(|m| (s, m)))
            .max_by(|a, b| a.1.total_cmp(&b.1))
    }
}

fn measure_all(args: &Args, payload: &Payload, dgbench: Option<&Path>) -> Results {
    let mut runs = vec![vec![Vec::new(); STRATEGIES.len()]; CASES.len()];
    // A port range of dgbench's own (48000-48999) that other runs on this machine are unlikely to share.
    let port = 48000 + (std::process::id() % 60) as u16 * 16;
    for rep in 0..args.repeat {
        for (c, &case) in CASES.iter().enumerate() {
            // Interleaved: A, B, C, D, A, B, C, D... so drift hits every strategy alike.
            for (s, &strategy) in STRATEGIES.iter().enumerate() {
                let m = match strategy {
                    Strategy::Uring => Some(run_dispatcher(
                        case,
                        BackendChoice::Uring,
                        payload,
                        args.seconds,
                    )),
                    Strategy::Syscall => Some(run_dispatcher(
                        case,
                        BackendChoice::Syscall,
                        payload,
                        args.seconds,
                    )),
                    Strategy::SendTo => Some(run_send_to(case, payload, args.seconds)),
                    _ => dgbench.and_then(|exe| run_c(exe, case, strategy, args.seconds, port)),
                };
                if let Some(m) = m {
                    eprintln!(
                        "run {}/{} {:8} {:32} {:>9.0} datagrams/s (loss {:.2} %)",
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
    Results { runs }
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
        None => "n/a (SKIPPED)".into(),
        Some(v) if v >= goal => format!("**{v:.2}x** (goal >= {goal}x: met)"),
        Some(v) => format!("**{v:.2}x** (goal >= {goal}x: NOT met)"),
    }
}

fn report(results: &Results, args: &Args) -> String {
    let mut out = String::new();
    let w = &mut out;
    let _ = writeln!(
        w,
        "## Delivered datagrams/s (median of {}, {} s each; in parentheses: events/s)\n",
        args.repeat, args.seconds
    );
    let _ = writeln!(w, "| strategy | {} |", CASES.map(|c| c.name).join(" | "));
    let _ = writeln!(w, "| --- |{}", " ---: |".repeat(CASES.len()));
    for strategy in STRATEGIES {
        let cells: Vec<String> = CASES
            .iter()
            .enumerate()
            .map(|(c, case)| match results.median(c, strategy) {
                None if strategy.is_c() => "SKIPPED".into(),
                None => "-".into(),
                Some(m) if case.targets > 1 => {
                    format!("{} ({} ev/s)", k(m), k(m / case.targets as f64))
                }
                Some(m) => k(m),
            })
            .collect();
        let _ = writeln!(w, "| {} | {} |", strategy.label(), cells.join(" | "));
    }
    let _ = writeln!(
        w,
        "\n## Not delivered: (sent - received) / sent, worst run (for ours, sent = routed to targets, incl. its own drops)\n"
    );
    let _ = writeln!(w, "| strategy | {} |", CASES.map(|c| c.name).join(" | "));
    let _ = writeln!(w, "| --- |{}", " ---: |".repeat(CASES.len()));
    for strategy in STRATEGIES {
        let cells: Vec<String> = (0..CASES.len())
            .map(|c| {
                let ms = results.of(c, strategy);
                let worst = ms.iter().map(Measurement::loss).fold(0.0, f64::max);
                if ms.is_empty() {
                    "-".into()
                } else {
                    format!("{:.2} %", 100.0 * worst)
                }
            })
            .collect();
        let _ = writeln!(w, "| {} | {} |", strategy.label(), cells.join(" | "));
    }
    let ours = [Strategy::Uring, Strategy::Syscall];
    let c_all = [Strategy::CUring, Strategy::CSendmmsg];
    let _ = writeln!(w, "\n## Ratios (of medians)\n");
    let _ = writeln!(
        w,
        "| case | ours best | ours best / send_to loop | ours best / C best | uring / syscall |"
    );
    let _ = writeln!(w, "| --- | --- | --- | --- | --- |");
    for (c, case) in CASES.iter().enumerate() {
        let best = results.best(c, &ours);
        let c_best = results.best(c, &c_all);
        let cell = |r: Option<f64>| r.map_or("n/a".into(), |r| format!("{r:.2}x"));
        let _ = writeln!(
            w,
            "| {} | {} | {} | {} | {} |",
            case.name,
            best.map_or("-", |b| b.0.label()),
            cell(ratio(
                best.map(|b| b.1),
                results.median(c, Strategy::SendTo)
            )),
            match c_best {
                Some((s, m)) => format!(
                    "{} (vs {})",
                    cell(ratio(best.map(|b| b.1), Some(m))),
                    s.label()
                ),
                None => "n/a (C SKIPPED)".into(),
            },
            cell(ratio(
                results.median(c, Strategy::Uring),
                results.median(c, Strategy::Syscall)
            )),
        );
    }
    let goal = |c: usize, vs: &[Strategy]| {
        ratio(
            results.best(c, &ours).map(|b| b.1),
            results.best(c, vs).map(|b| b.1),
        )
    };
    let _ = writeln!(w, "\n## Goals\n");
    let _ = writeln!(
        w,
        "- UDP x1, ours best / send_to loop: {}",
        verdict(goal(0, &[Strategy::SendTo]), 1.2)
    );
    let _ = writeln!(
        w,
        "- UNIX x1, ours best / send_to loop: {}",
        verdict(goal(1, &[Strategy::SendTo]), 1.2)
    );
    let _ = writeln!(
        w,
        "- UDP x1, ours best / C best batched: {}",
        verdict(goal(0, &c_all), 0.9)
    );
    let _ = writeln!(
        w,
        "- UNIX x1, ours best / C best batched: {}",
        verdict(goal(1, &c_all), 0.9)
    );
    let _ = writeln!(
        w,
        "- UDP x16 datagrams/s, ours best / C best: {}",
        verdict(goal(3, &c_all), 0.9)
    );
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
         - command: `cargo bench --bench compare -- {}`\n- {SIZE}-byte `line` datagrams to 127.0.0.1 / \
         UNIX sockets in a temp dir; receivers drain with `recvmmsg` on the last CPU\n",
        ncpus(),
        kernel.trim(),
        command.join(" "),
    )
}

fn target_dir() -> PathBuf {
    std::env::var_os("CARGO_TARGET_DIR")
        .map(PathBuf::from)
        .unwrap_or_else(|| Path::new(env!("CARGO_MANIFEST_DIR")).join("target"))
}

fn main() {
    let args = Args::parse();
    let payload = Payload::new();
    let mut out = machine_info();
    if !args.rss_only {
        let dgbench = build_dgbench(&target_dir());
        if dgbench.is_none() {
            out.push_str("\n**!!! C baseline SKIPPED: dgbench could not be built (gcc or liburing-dev missing)**\n");
        }
        let results = measure_all(&args, &payload, dgbench.as_deref());
        out.push('\n');
        out.push_str(&report(&results, &args));
    }
    out.push('\n');
    out.push_str(&rss_check(&payload));
    println!("{out}");
    let path = target_dir().join("compare.md");
    match std::fs::write(&path, &out) {
        Ok(()) => eprintln!("written to {}", path.display()),
        Err(e) => eprintln!("cannot write {}: {e}", path.display()),
    }
}
