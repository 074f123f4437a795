//! Heap allocations on the hot path, counted by a global allocator: encoding into a caller's
//! buffer allocates nothing, building a small [`Params`] allocates nothing (a large one reuses
//! the heap buffer of one dropped before), and a dispatcher in steady state allocates nothing
//! per raised event, small or large, coalesced or not, on any thread, with either backend; and
//! the encode buffers
//! of a load peak go back to the heap once the peak is over.
//!
//! This is its own test binary because it installs a `#[global_allocator]`. Every test holds
//! [`SERIAL`] for its whole body, so no other test of this binary allocates while one counts;
//! the process-wide counts start only after a warm-up long enough for the test harness to have
//! finished spawning the thread of the next test.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::hint::black_box;
use std::io::ErrorKind;
use std::net::UdpSocket;
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use event_datagram::{
    Backend, BackendChoice, Coalesce, Dispatcher, DispatcherConfig, Expiry, Format, Params,
    RaiseError, SubscriptionOptions, Target, ValueRef, MAX_DATAGRAM,
};

// ---------------------------------------------------------------------------------------------
// The counting allocator

/// Counts allocations (`alloc`, `alloc_zeroed`, `realloc`) process-wide while [`GLOBAL_ON`] is
/// set, and per thread while that thread's [`LOCAL_ON`] is set; forwards everything to
/// [`System`].
struct Counting;

static GLOBAL_ON: AtomicBool = AtomicBool::new(false);
static GLOBAL_COUNT: AtomicU64 = AtomicU64::new(0);
/// Bytes allocated and not yet freed, always counted.
static LIVE_BYTES: AtomicUsize = AtomicUsize::new(0);
/// The most [`LIVE_BYTES`] has been since a test last set it.
static PEAK_BYTES: AtomicUsize = AtomicUsize::new(0);

/// The first allocations counted process-wide, as (size, kernel thread id), to say who
/// allocated when a test fails.
const SEEN: usize = 16;
static SEEN_SIZE: [AtomicUsize; SEEN] = [const { AtomicUsize::new(0) }; SEEN];
static SEEN_TID: [AtomicUsize; SEEN] = [const { AtomicUsize::new(0) }; SEEN];

thread_local! {
    // Const-initialized, no destructor: reading them never allocates.
    static LOCAL_ON: Cell<bool> = const { Cell::new(false) };
    static LOCAL_COUNT: Cell<u64> = const { Cell::new(0) };
}

impl Counting {
    #[inline]
    fn count(size: usize) {
        if GLOBAL_ON.load(Ordering::Relaxed) {
            let n = GLOBAL_COUNT.fetch_add(1, Ordering::Relaxed) as usize;
            if n < SEEN {
                // SAFETY: gettid(2) has no preconditions and cannot fail.
                let tid = unsafe { libc::gettid() };
                SEEN_SIZE[n].store(size, Ordering::Relaxed);
                SEEN_TID[n].store(tid as usize, Ordering::Relaxed);
            }
        }
        // `try_with`: a thread being torn down may still allocate.
        let _ = LOCAL_ON.try_with(|on| {
            if on.get() {
                let _ = LOCAL_COUNT.try_with(|c| c.set(c.get() + 1));
            }
        });
    }

    #[inline]
    fn live(size: usize) {
        let live = LIVE_BYTES.fetch_add(size, Ordering::Relaxed) + size;
        PEAK_BYTES.fetch_max(live, Ordering::Relaxed);
    }
}

// SAFETY: every method forwards to `System` with the caller's arguments unchanged, so `System`'s
// guarantees hold; the counting touches only atomics and const-initialized thread-locals
// without destructors, and never allocates.
unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        Self::live(layout.size());
        // SAFETY: the caller upholds `GlobalAlloc::alloc`'s contract, which `System` shares.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        Self::count(layout.size());
        Self::live(layout.size());
        // SAFETY: as for `alloc`.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        Self::count(new_size);
        // SAFETY: `ptr` and `layout` come from this allocator, i.e. from `System`; the caller
        // upholds the rest of `GlobalAlloc::realloc`'s contract.
        let p = unsafe { System.realloc(ptr, layout, new_size) };
        if !p.is_null() {
            Self::live(new_size);
            LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        }
        p
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        LIVE_BYTES.fetch_sub(layout.size(), Ordering::Relaxed);
        // SAFETY: `ptr` was allocated by `System` (through this allocator) with `layout`.
        unsafe { System.dealloc(ptr, layout) }
    }
}

#[global_allocator]
static ALLOCATOR: Counting = Counting;

/// Allocations made by the current thread while running `f`.
fn allocations_on_this_thread<R>(f: impl FnOnce() -> R) -> (u64, R) {
    LOCAL_COUNT.with(|c| c.set(0));
    LOCAL_ON.with(|on| on.set(true));
    let r = f();
    LOCAL_ON.with(|on| on.set(false));
    (LOCAL_COUNT.with(Cell::get), r)
}

/// Process-wide counting, on from `start` until [`Global::stop`] (or drop).
struct Global;

impl Global {
    fn start() -> Global {
        GLOBAL_COUNT.store(0, Ordering::SeqCst);
        GLOBAL_ON.store(true, Ordering::SeqCst);
        Global
    }

    /// Stops counting; returns the count and who allocated first (readable after counting).
    fn stop(self) -> (u64, String) {
        GLOBAL_ON.store(false, Ordering::SeqCst);
        let n = GLOBAL_COUNT.load(Ordering::SeqCst);
        let who = (0..(n as usize).min(SEEN))
            .map(|i| {
                let tid = SEEN_TID[i].load(Ordering::Relaxed);
                let comm = std::fs::read_to_string(format!("/proc/self/task/{tid}/comm"))
                    .unwrap_or_default();
                let size = SEEN_SIZE[i].load(Ordering::Relaxed);
                format!("{size} B on thread {tid} ({})", comm.trim())
            })
            .collect::<Vec<_>>()
            .join(", ");
        (n, who)
    }
}

impl Drop for Global {
    fn drop(&mut self) {
        GLOBAL_ON.store(false, Ordering::SeqCst);
    }
}

/// One test at a time in this binary: process-wide counts must see only the test's own work.
fn serial() -> MutexGuard<'static, ()> {
    static SERIAL: Mutex<()> = Mutex::new(());
    SERIAL.lock().unwrap_or_else(|e| e.into_inner())
}

// ---------------------------------------------------------------------------------------------
// The counter works

#[test]
fn the_counter_sees_allocations_on_this_thread_and_on_others() {
    let _serial = serial();
    let (n, v) = allocations_on_this_thread(|| black_box(Vec::<u8>::with_capacity(100)));
    assert_eq!(n, 1, "one Vec, one allocation");
    drop(v);
    let (n, ()) = allocations_on_this_thread(|| ());
    assert_eq!(n, 0);

    // An allocation on another thread counts process-wide, and not on this thread.
    let go = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicBool::new(false));
    let (g, d) = (Arc::clone(&go), Arc::clone(&done));
    let other = std::thread::spawn(move || {
        while !g.load(Ordering::Acquire) {
            std::thread::sleep(Duration::from_millis(1));
        }
        drop(black_box(String::from("allocated elsewhere").into_bytes()));
        d.store(true, Ordering::Release);
    });
    let global = Global::start();
    let (local, ()) = allocations_on_this_thread(|| {
        go.store(true, Ordering::Release);
        let limit = Instant::now() + Duration::from_secs(10);
        while !done.load(Ordering::Acquire) && Instant::now() < limit {
            std::thread::sleep(Duration::from_millis(1));
        }
    });
    let (n, who) = global.stop();
    other.join().unwrap();
    assert_eq!(
        local, 0,
        "the other thread's allocation is not this thread's"
    );
    assert!(
        n >= 1,
        "the other thread's allocation is counted process-wide: {who}"
    );
}

// ---------------------------------------------------------------------------------------------
// Encoding and building params

#[path = "../benches/common/sized.rs"]
mod sized;

use sized::{params_of_size, EVENT};

#[test]
fn encoding_into_a_buffer_allocates_nothing() {
    let _serial = serial();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    for format in Format::ALL {
        for size in [64, 1024, MAX_DATAGRAM] {
            let params = params_of_size(format, size);
            let (n, len) = allocations_on_this_thread(|| {
                let mut len = 0;
                for _ in 0..100 {
                    len = format.encode(EVENT, black_box(&params), &mut buf).unwrap();
                }
                len
            });
            assert_eq!(len, size);
            assert_eq!(n, 0, "{format}, {size} bytes: {n} allocations");
        }
        // Too large: the error is made without allocating too.
        let params = params_of_size(format, MAX_DATAGRAM);
        let (n, r) = allocations_on_this_thread(|| format.encode(EVENT, &params, &mut buf[..100]));
        assert!(r.is_err());
        assert_eq!(n, 0, "{format}, too large: {n} allocations");
    }
}

#[test]
fn building_small_params_allocates_nothing() {
    let _serial = serial();
    let value = "v".repeat(100);
    let (n, params) = allocations_on_this_thread(|| {
        let mut p = Params::new()
            .str("ip", "192.168.2.11")
            .unwrap()
            .int("attempts", 3)
            .unwrap()
            .unnamed_str("positional")
            .unwrap()
            .unnamed_int(-7)
            .unwrap();
        p.push(Some("value"), ValueRef::Str(&value)).unwrap();
        black_box(p)
    });
    assert_eq!(n, 0, "{n} allocations");
    assert!(params.is_inline());
    assert_eq!(params.len(), 5);

    // The counter is not blind here: past the inline capacity, params go to the heap once
    // (this size is beyond the classes of reused buffers, so it is a fresh allocation).
    let big = "x".repeat(70_000);
    let (n, params) = allocations_on_this_thread(|| Params::new().str("big", &big).unwrap());
    assert!(!params.is_inline());
    assert_eq!(n, 1);
}

#[test]
fn large_params_reuse_the_heap_buffers_of_dropped_ones() {
    let _serial = serial();
    let big = "x".repeat(Params::INLINE_BYTES + 300);
    let warm = Params::new().str("big", &big).unwrap();
    drop((warm.clone(), warm));
    let (n, params) = allocations_on_this_thread(|| {
        let p = Params::new().str("big", &big).unwrap();
        let copy = p.clone();
        drop(p);
        copy
    });
    assert!(!params.is_inline());
    assert_eq!(
        n, 0,
        "{n} allocations: the buffers of dropped params were not reused"
    );
}

#[test]
fn the_reusable_decoders_allocate_nothing_once_warmed_up() {
    let _serial = serial();
    let mut buf = vec![0u8; event_datagram::MAX_DATAGRAM];
    for format in [Format::Line, Format::Jsonrpc] {
        // A coalesced datagram: 50 events of named and unnamed string and integer params.
        let mut packed = Vec::new();
        for i in 0..50 {
            let p = Params::new()
                .unnamed_str("0000beef")
                .unwrap()
                .unnamed_int(i)
                .unwrap()
                .unnamed_str(&"x".repeat(100))
                .unwrap();
            let n = format.encode("E_LOADGEN", &p, &mut buf).unwrap();
            packed.extend_from_slice(&buf[..n]);
        }
        let mut line = event_datagram::decode::line::Decoder::new();
        let mut jsonrpc = event_datagram::decode::jsonrpc::Decoder::new();
        let mut decode = |seen: &mut usize| match format {
            Format::Line => line.decode_each(&packed, |_, p| *seen += p.len()),
            Format::Jsonrpc => jsonrpc.decode_each(&packed, |_, p| *seen += p.len()),
        };
        let mut seen = 0;
        decode(&mut seen).unwrap();
        let (n, events) = allocations_on_this_thread(|| decode(&mut seen).unwrap());
        assert_eq!((n, events, seen), (0, 50, 300), "{format}: {n} allocations");
    }
}

// ---------------------------------------------------------------------------------------------
// The dispatcher in steady state

/// A receiving socket drained by its own thread into a preallocated buffer; it only counts.
struct Sink {
    target: Target,
    /// Datagrams received, or events for a sink of coalesced `line` datagrams.
    count: Arc<AtomicU64>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
    _dir: Option<TempDir>,
}

enum Sock {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl Sink {
    fn udp() -> Sink {
        Sink::udp_counting(false)
    }

    fn unix() -> Sink {
        Sink::unix_counting(false)
    }

    /// `events`: count `line` events (each ends with an empty line; these params hold no line
    /// feed), for coalesced datagrams; else count datagrams.
    fn udp_counting(events: bool) -> Sink {
        let s = UdpSocket::bind("127.0.0.1:0").unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let target = Target::Udp(s.local_addr().unwrap());
        Sink::spawn(Sock::Udp(s), target, None, events)
    }

    fn unix_counting(events: bool) -> Sink {
        let dir = TempDir::new();
        let path = dir.0.join("sink.sock");
        let s = UnixDatagram::bind(&path).unwrap();
        s.set_read_timeout(Some(Duration::from_millis(20))).unwrap();
        let target = Target::parse(&format!("unix:{}", path.display())).unwrap();
        Sink::spawn(Sock::Unix(s), target, Some(dir), events)
    }

    fn spawn(sock: Sock, target: Target, dir: Option<TempDir>, events: bool) -> Sink {
        let count = Arc::new(AtomicU64::new(0));
        let stop = Arc::new(AtomicBool::new(false));
        let (c, st) = (Arc::clone(&count), Arc::clone(&stop));
        let thread = std::thread::spawn(move || {
            let mut buf = vec![0u8; MAX_DATAGRAM + 1];
            while !st.load(Ordering::Relaxed) {
                let got = match &sock {
                    Sock::Udp(s) => s.recv(&mut buf),
                    Sock::Unix(s) => s.recv(&mut buf),
                };
                match got {
                    Ok(n) => {
                        let k = if events {
                            buf[..n].windows(2).filter(|w| w == b"\n\n").count() as u64
                        } else {
                            1
                        };
                        c.fetch_add(k, Ordering::Release);
                    }
                    Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {}
                    Err(e) if e.kind() == ErrorKind::Interrupted => {}
                    Err(e) => panic!("receive: {e}"),
                }
            }
        });
        Sink {
            target,
            count,
            stop,
            thread: Some(thread),
            _dir: dir,
        }
    }

    fn count(&self) -> u64 {
        self.count.load(Ordering::Acquire)
    }
}

impl Drop for Sink {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

/// A directory removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> TempDir {
        static N: AtomicU64 = AtomicU64::new(0);
        let n = N.fetch_add(1, Ordering::Relaxed);
        let dir = std::env::temp_dir().join(format!("evdg-alloc-{}-{n}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

const EVENTS: u64 = 20_000;
/// Events raised before waiting for the receivers (a quarter as many large ones): well under
/// what a UDP socket's default receive buffer holds, so the kernel drops none on loopback.
const CHUNK: u64 = 100;
const LIMIT: Duration = Duration::from_secs(30);

/// Raises `EVENTS` events in chunks, each time waiting (without allocating) until every sink
/// has everything raised so far. Returns false when a wait ran out of time. `pad` is one more
/// param: empty keeps the params inline, a long one puts them on the heap.
fn raise_and_deliver(
    d: &Dispatcher,
    event: event_datagram::EventId,
    sinks: &[&Sink],
    from: u64,
    pad: &str,
) -> bool {
    // Large events take a chunk's worth of a UDP socket's default receive buffer in fewer.
    let chunk = if pad.len() < 100 { CHUNK } else { CHUNK / 4 };
    let mut raised = from;
    while raised < from + EVENTS {
        for _ in 0..chunk {
            let params = Params::new()
                .int("seq", raised as i64)
                .unwrap()
                .str("ip", "192.168.2.11")
                .unwrap()
                .str("pad", pad)
                .unwrap();
            assert_eq!(params.is_inline(), pad.len() < 100);
            d.raise(event, params).unwrap();
            raised += 1;
        }
        let end = Instant::now() + LIMIT;
        while sinks.iter().any(|s| s.count() < raised) {
            if Instant::now() > end {
                return false;
            }
            std::thread::yield_now();
        }
    }
    true
}

/// A UNIX receiver in `dir` that the test reads itself, when it chooses, and its target.
fn unread_receiver(dir: &TempDir, name: &str) -> (UnixDatagram, Target) {
    let path = dir.0.join(name);
    let rx = UnixDatagram::bind(&path).unwrap();
    rx.set_read_timeout(Some(LIMIT)).unwrap();
    let target = Target::parse(&format!("unix:{}", path.display())).unwrap();
    (rx, target)
}

/// A dispatcher started with `config`, and `name` published and subscribed by a UNIX receiver
/// in `dir` that reads nothing until the test does (see [`unread_receiver`]).
fn with_unread_receiver(
    config: DispatcherConfig,
    dir: &TempDir,
    name: &str,
) -> (Dispatcher, event_datagram::EventId, UnixDatagram, Target) {
    let d = Dispatcher::start(config).unwrap();
    let (rx, target) = unread_receiver(dir, &format!("{name}.sock"));
    let event = d.publish(name).unwrap();
    d.subscribe(event, target.clone(), Expiry::Never).unwrap();
    (d, event, rx, target)
}

/// Params of a numbered event with a `pad` param.
fn padded(seq: u64, pad: &str) -> Params {
    Params::new()
        .int("seq", seq as i64)
        .unwrap()
        .str("pad", pad)
        .unwrap()
}

/// Raises `n` more events with a `pad` param and waits until the dispatcher has routed them
/// all to `target`: encoded, and queued for it while its receiver reads none (a UNIX receiver
/// holds a few; the rest wait in the target's retry queue).
fn raise_until_routed(
    d: &Dispatcher,
    event: event_datagram::EventId,
    target: &Target,
    n: u64,
    pad: &str,
) {
    let routed = || d.stats().target(target).map_or(0, |c| c.raised);
    let want = routed() + n;
    for i in 0..n {
        d.raise(event, padded(i, pad)).unwrap();
    }
    let end = Instant::now() + LIMIT;
    while routed() < want {
        assert!(Instant::now() < end, "{n} events not routed in {LIMIT:?}");
        std::thread::sleep(Duration::from_millis(1));
    }
}

fn steady_state_allocates_nothing(backend: BackendChoice) {
    let _serial = serial();
    let config = DispatcherConfig {
        backend,
        queue_capacity: 1024,
        ..Default::default()
    };
    let d = match Dispatcher::start(config) {
        Ok(d) => d,
        Err(e) if backend == BackendChoice::Uring => {
            eprintln!(
                "SKIPPED: the uring backend is unavailable here ({e}); nothing counted for it"
            );
            return;
        }
        Err(e) => panic!("{backend:?}: {e}"),
    };
    let (udp, unix) = (Sink::udp(), Sink::unix());
    let line = d.publish("E_ALLOC_LINE").unwrap();
    let both = d.publish("E_ALLOC_BOTH").unwrap();
    // One event in one format to both sinks, one in each format: one encode per format in use.
    for t in [&udp.target, &unix.target] {
        d.subscribe_with_format(line, t.clone(), Expiry::Never, Format::Line)
            .unwrap();
    }
    d.subscribe_with_format(both, udp.target.clone(), Expiry::Never, Format::Jsonrpc)
        .unwrap();
    d.subscribe_with_format(both, unix.target.clone(), Expiry::Never, Format::Line)
        .unwrap();
    let sinks = [&udp, &unix];
    // One event with one UDP subscriber: with GSO (on by default) its events are encoded
    // into runs.
    let solo = Sink::udp();
    let one = d.publish("E_ALLOC_ONE").unwrap();
    d.subscribe(one, solo.target.clone(), Expiry::Never)
        .unwrap();
    // Events packed into datagrams (of up to 16 KiB or 300 us): one for a UDP and a UNIX sink,
    // one for a sink of its own (the path of an event's only subscriber).
    let packed_sinks = [Sink::udp_counting(true), Sink::unix_counting(true)];
    let packed_sinks = [&packed_sinks[0], &packed_sinks[1]];
    let packed_solo = Sink::unix_counting(true);
    let (packed, packed_one) = (
        d.publish("E_ALLOC_PACKED").unwrap(),
        d.publish("E_ALLOC_PACKED_ONE").unwrap(),
    );
    let options = SubscriptionOptions {
        format: Format::Line,
        coalesce: Some(Coalesce::new(16 << 10, Duration::from_micros(300)).unwrap()),
    };
    for (event, sink) in [
        (packed, packed_sinks[0]),
        (packed, packed_sinks[1]),
        (packed_one, &packed_solo),
    ] {
        d.subscribe_with(event, sink.target.clone(), Expiry::Never, options)
            .unwrap();
    }

    // Large params (on the heap, in a buffer reused from dropped params).
    let pad = "p".repeat(1000);

    // Warm up: every buffer, queue and scratch vector reaches its working size. For large
    // events that is a heap buffer for the params and an encode buffer per event in flight:
    // up to two chunks, when the reactor lags behind what the sinks already got. How many the
    // warm-up's chunks leave in flight depends on that lag, so make sure of it here: spares
    // for three chunks of params, and three chunks held at once for a UNIX socket of its own
    // that reads none of them until all are routed (a UNIX receiver loses nothing), which
    // grows the encode buffers' pool. Held by us, not by the kernel: where a UNIX socket's
    // queue holds 512 datagrams (not 10), the kernel takes a hundred or more first.
    let held: Vec<Params> = (0..3 * CHUNK)
        .map(|_| Params::new().str("pad", &pad).unwrap())
        .collect();
    drop(held);
    let dir = TempDir::new();
    let (burst, burst_target) = unread_receiver(&dir, "burst.sock");
    let warm = d.publish("E_ALLOC_WARM").unwrap();
    d.subscribe(warm, burst_target.clone(), Expiry::Never)
        .unwrap();
    let mut raised = 0;
    while d.stats().target(&burst_target).map_or(0, |c| c.pending) < 3 * CHUNK {
        // It stops under the retry queue's 1 024 datagrams: nothing is dropped, all arrive.
        assert!(raised < 2_000, "{:?}", d.stats().target(&burst_target));
        raise_until_routed(&d, warm, &burst_target, CHUNK, &pad);
        raised += CHUNK;
    }
    let mut buf = vec![0u8; MAX_DATAGRAM];
    for _ in 0..raised {
        burst.recv(&mut buf).expect("the warm-up burst arrives");
    }
    for (i, (event, pad)) in [(line, ""), (both, ""), (line, pad.as_str())]
        .into_iter()
        .enumerate()
    {
        assert!(
            raise_and_deliver(&d, event, &sinks, i as u64 * EVENTS, pad),
            "{backend:?}: warm-up not delivered"
        );
    }
    for (i, pad) in ["", pad.as_str()].into_iter().enumerate() {
        assert!(
            raise_and_deliver(&d, one, &[&solo], i as u64 * EVENTS, pad),
            "{backend:?}: warm-up not delivered to the solo sink"
        );
        assert!(
            raise_and_deliver(&d, packed, &packed_sinks, i as u64 * EVENTS, pad),
            "{backend:?}: warm-up not delivered to the packed sinks"
        );
        assert!(
            raise_and_deliver(&d, packed_one, &[&packed_solo], i as u64 * EVENTS, pad),
            "{backend:?}: warm-up not delivered to the packed solo sink"
        );
    }

    let global = Global::start();
    let delivered = raise_and_deliver(&d, line, &sinks, 3 * EVENTS, "")
        && raise_and_deliver(&d, both, &sinks, 4 * EVENTS, "")
        && raise_and_deliver(&d, line, &sinks, 5 * EVENTS, &pad)
        && raise_and_deliver(&d, one, &[&solo], 2 * EVENTS, "")
        && raise_and_deliver(&d, one, &[&solo], 3 * EVENTS, &pad)
        && raise_and_deliver(&d, packed, &packed_sinks, 2 * EVENTS, "")
        && raise_and_deliver(&d, packed, &packed_sinks, 3 * EVENTS, &pad)
        && raise_and_deliver(&d, packed_one, &[&packed_solo], 2 * EVENTS, "")
        && raise_and_deliver(&d, packed_one, &[&packed_solo], 3 * EVENTS, &pad);
    let (allocations, who) = global.stop();

    assert!(delivered, "{backend:?}: events not delivered in {LIMIT:?}");
    let stats = d.shutdown();
    let want = match backend {
        BackendChoice::Uring => Backend::Uring,
        _ => Backend::Syscall,
    };
    if std::env::var_os(event_datagram::BACKEND_ENV).is_none() {
        assert_eq!(stats.backend, want);
    }
    for sink in sinks {
        let c = stats.target(&sink.target).unwrap();
        assert_eq!(
            (c.raised, c.sent, c.dropped(), c.failed()),
            (6 * EVENTS, 6 * EVENTS, 0, 0),
            "{c:?}"
        );
    }
    let c = stats.target(&solo.target).unwrap();
    assert_eq!(
        (c.raised, c.sent, c.datagrams, c.dropped(), c.failed()),
        (4 * EVENTS, 4 * EVENTS, 4 * EVENTS, 0, 0),
        "{c:?}"
    );
    for sink in [packed_sinks[0], packed_sinks[1], &packed_solo] {
        let c = stats.target(&sink.target).unwrap();
        assert_eq!(
            (c.raised, c.sent, c.dropped(), c.failed()),
            (4 * EVENTS, 4 * EVENTS, 0, 0),
            "{c:?}"
        );
        assert!(c.datagrams < c.sent / 4, "not packed: {c:?}");
    }
    eprintln!(
        "{backend:?}: {} events raised while counting, {allocations} heap allocations in the whole process",
        9 * EVENTS
    );
    assert_eq!(
        allocations,
        0,
        "{backend:?}: {allocations} allocations while raising {} events; first: {who}",
        9 * EVENTS
    );
}

#[test]
fn steady_state_allocates_nothing_with_syscall() {
    steady_state_allocates_nothing(BackendChoice::Syscall);
}

#[test]
fn steady_state_allocates_nothing_with_uring() {
    steady_state_allocates_nothing(BackendChoice::Uring);
}

// ---------------------------------------------------------------------------------------------
// After a load peak

/// A peak of large events to a receiver that reads none of them until all are encoded holds
/// far more encode buffers than `buffer_pool_bytes`; once it is delivered and the dispatcher
/// idles, they go back to the heap: a buffer must stay free for a whole trim interval (a second),
/// so that takes two or three of them.
#[test]
fn the_encode_buffers_of_a_peak_go_back_to_the_heap() {
    let _serial = serial();
    const EVENTS: usize = 200;
    const KEEP: usize = 1 << 20;
    let config = DispatcherConfig {
        buffer_pool_bytes: KEEP,
        ..Default::default()
    };
    let dir = TempDir::new();
    let (d, event, rx, target) = with_unread_receiver(config, &dir, "E_PEAK");

    let before = LIVE_BYTES.load(Ordering::SeqCst);
    let pad = "p".repeat(60_000);
    raise_until_routed(&d, event, &target, EVENTS as u64, &pad);
    // Each event's datagram waits in its own 64 KiB buffer, but those the receiver's queue
    // took (10, or 100 or more where its length is 512).
    let peak = LIVE_BYTES.load(Ordering::SeqCst);
    let waiting = d.stats().target(&target).unwrap().pending as usize;
    assert!(waiting * 60_000 > 2 * KEEP, "{waiting} waiting");
    let held = waiting * 60_000;
    assert!(
        peak > before + held,
        "{peak} bytes live at the peak, {before} before"
    );

    let mut buf = vec![0u8; MAX_DATAGRAM];
    for _ in 0..EVENTS {
        rx.recv(&mut buf).expect("the peak arrives");
    }
    let end = Instant::now() + Duration::from_secs(10);
    let mut live = LIVE_BYTES.load(Ordering::SeqCst);
    while live > peak - (held - KEEP) {
        assert!(
            Instant::now() < end,
            "{live} bytes still live 10 s after the peak; {peak} at the peak"
        );
        std::thread::sleep(Duration::from_millis(20));
        live = LIVE_BYTES.load(Ordering::SeqCst);
    }
    let stats = d.shutdown();
    let c = stats.target(&target).unwrap();
    assert_eq!(
        (c.sent, c.dropped(), c.failed()),
        (EVENTS as u64, 0, 0),
        "{c:?}"
    );
}

/// A stream of large events to a receiver that reads none takes as much heap as the channel's
/// and the target's byte bounds allow, not their counts (4 096 and 1 024 events: over 300 MB of
/// 64 KiB ones).
#[test]
fn a_stalled_receiver_of_large_events_holds_a_bounded_heap() {
    let _serial = serial();
    const MIB: usize = 1 << 20;
    let config = DispatcherConfig {
        queue_bytes: 2 * MIB,
        retry_queue_bytes: 2 * MIB,
        buffer_pool_bytes: MIB,
        shutdown_timeout_ms: 100,
        ..Default::default()
    };
    let dir = TempDir::new();
    let (d, event, _rx, target) = with_unread_receiver(config, &dir, "E_STALLED");
    let publisher = d.publisher();
    let pad = "p".repeat(60_000);

    let before = LIVE_BYTES.load(Ordering::SeqCst);
    PEAK_BYTES.store(before, Ordering::SeqCst);
    // Raise until the channel stays full: the target's bound paused intake, then the
    // channel's bytes filled.
    let mut accepted = 0u64;
    loop {
        let params = padded(accepted, &pad);
        match publisher.raise_timeout(event, params, Duration::from_millis(100)) {
            Ok(()) => accepted += 1,
            Err(RaiseError::QueueFull(..)) => break,
            Err(other) => panic!("{other}"),
        }
        assert!(accepted < 10_000, "the channel never filled");
    }
    let peak = PEAK_BYTES.load(Ordering::SeqCst) - before;
    // The channel's 2 MiB and the target's 2 MiB, plus a batch (1 MiB) and a few 64 KiB
    // buffers, and the spare params buffers the threads pass around.
    assert!(
        peak < 12 * MIB,
        "{peak} bytes more at the peak for {accepted} events accepted"
    );
    let stats = d.shutdown();
    // At the shutdown deadline what is queued is dropped, and intake takes the channel's rest
    // (dropped too, past the target's bound).
    let c = stats.target(&target).unwrap();
    assert_eq!(c.sent + c.dropped(), accepted, "{c:?}");
    assert!(stats.is_balanced());
}

/// Small coalesced datagrams waiting for a receiver that reads none hold buffers of their own
/// size: each held the 64 KiB buffer made for the most its datagram could take, so 1 000 of
/// 30 bytes took 64 MiB while the queue counted 30 KB.
#[test]
fn small_coalesced_datagrams_waiting_for_a_stalled_receiver_hold_small_buffers() {
    let _serial = serial();
    const MIB: usize = 1 << 20;
    let config = DispatcherConfig {
        backend: BackendChoice::Syscall,
        buffer_pool_bytes: MIB,
        shutdown_timeout_ms: 100,
        ..Default::default()
    };
    let dir = TempDir::new();
    let d = Dispatcher::start(config).unwrap();
    let (_rx, target) = unread_receiver(&dir, "coalesced.sock");
    let event = d.publish("E_SMALL").unwrap();
    let options = SubscriptionOptions {
        format: Format::Line,
        // Each event alone in its datagram: sealed at once.
        coalesce: Some(Coalesce::new(MAX_DATAGRAM, Duration::ZERO).unwrap()),
    };
    d.subscribe_with(event, target.clone(), Expiry::Never, options)
        .unwrap();
    let before = LIVE_BYTES.load(Ordering::SeqCst);
    PEAK_BYTES.store(before, Ordering::SeqCst);
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut raised = 0u64;
    // Until the target holds 1 000 datagrams (a UNIX receiver takes 10; the rest wait).
    while d.stats().target(&target).map_or(0, |c| c.pending) < 1_000 {
        assert!(Instant::now() < deadline, "only {raised} raised in 20 s");
        d.raise(event, Params::new().int("seq", raised as i64).unwrap())
            .unwrap();
        raised += 1;
        // One event per datagram: the reactor seals each before the next comes.
        std::thread::sleep(Duration::from_micros(300));
    }
    let peak = PEAK_BYTES.load(Ordering::SeqCst) - before;
    assert!(
        peak < 8 * MIB,
        "{peak} bytes more at the peak for {raised} small coalesced datagrams"
    );
    let stats = d.shutdown();
    let c = stats.target(&target).unwrap();
    assert_eq!(c.sent + c.dropped(), raised, "{c:?}");
}
