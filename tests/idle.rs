//! CPU use: a receiver that stays full does not keep the reactor busy. After a refused send the
//! reactor retries a receiver only while it makes room within microseconds
//! (`src/reactor/retry.rs`); one that never reads must be waited for, not polled.
//!
//! Its own test binary: it measures the whole process's CPU time, which other tests running
//! beside it would add to.

use std::os::unix::net::UnixDatagram;
use std::time::Duration;

use event_datagram::{Dispatcher, DispatcherConfig, Expiry, Params, QueuePolicy, Target};

// Shared with the integration tests; this binary uses only some of it.
#[allow(dead_code)]
#[path = "support.rs"]
mod support;

use support::{backends, TempDir};

/// User and system CPU time of this process so far.
fn cpu_time() -> Duration {
    // SAFETY: getrusage writes one `rusage` into the zeroed struct we pass and keeps no pointer.
    let usage = unsafe {
        let mut usage: libc::rusage = std::mem::zeroed();
        assert_eq!(libc::getrusage(libc::RUSAGE_SELF, &mut usage), 0);
        usage
    };
    let tv = |t: libc::timeval| Duration::new(t.tv_sec as u64, t.tv_usec as u32 * 1_000);
    tv(usage.ru_utime) + tv(usage.ru_stime)
}

#[test]
fn a_receiver_that_never_reads_does_not_keep_the_reactor_busy() {
    for backend in backends() {
        let dir = TempDir::new("idle");
        let path = dir.join("stalled");
        let stalled = UnixDatagram::bind(&path).unwrap();
        let d = Dispatcher::start(DispatcherConfig {
            backend,
            queue_full: QueuePolicy::Drop,
            shutdown_timeout_ms: 100,
            ..Default::default()
        })
        .unwrap();
        let e = d.publish("E_IDLE").unwrap();
        let target = Target::parse(&format!("unix:{}", path.display())).unwrap();
        d.subscribe(e, target.clone(), Expiry::Never).unwrap();
        let publisher = d.publisher();
        for i in 0..2_000 {
            let _ = publisher.raise(e, Params::new().int("seq", i).unwrap());
        }
        // The receiver's queue and the target's queue are full now; the reactor has retried
        // for its 50 us and then gone to wait for writability.
        std::thread::sleep(Duration::from_millis(200));
        let c = *d.stats().target(&target).unwrap();
        assert!(
            c.pending > 0,
            "{backend:?}: the target should be full: {c:?}"
        );
        let before = cpu_time();
        std::thread::sleep(Duration::from_millis(500));
        let used = cpu_time() - before;
        // A reactor that kept trying would use about all of the 500 ms.
        assert!(
            used < Duration::from_millis(100),
            "{backend:?}: {used:?} of CPU in 500 ms with the only receiver stalled"
        );
        let stats = d.shutdown();
        assert!(stats.is_balanced(), "{stats:?}");
        drop(stalled);
    }
}
