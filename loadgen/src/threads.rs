//! CPU time of this process's threads by the part they play: the dispatcher's reactor, the
//! generator's producers, the embedded receivers. Read from `/proc/self/task/*/schedstat`
//! (the producers read their own, as they end before the window's last reading), whose first
//! field is time on a CPU as the kernel counts it: with paravirtual steal accounting, what the
//! host took from the virtual CPU is not in it. Divided by a run's events, it says what each
//! part cost per event, the figure capacity planning extrapolates from.

use serde::Serialize;

/// The name loadgen gives its producer threads.
pub const PRODUCER_THREAD: &str = "loadgen-gen";
/// The name loadgen gives its receiver threads.
pub const RECEIVER_THREAD: &str = "loadgen-sink";
/// The name the library gives its reactor thread.
const REACTOR_THREAD: &str = "evdgram-reactor";

/// Cumulative time on a CPU of the reactor's and the receivers' threads, in ns.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct ThreadTimes {
    reactor: u64,
    receivers: u64,
}

/// The calling thread's time on a CPU so far, in ns (`None` where it cannot be read).
pub fn this_thread_ns() -> Option<u64> {
    schedstat_ns(&std::fs::read_to_string("/proc/thread-self/schedstat").ok()?)
}

/// The first field of a `schedstat`: time on a CPU, ns.
fn schedstat_ns(text: &str) -> Option<u64> {
    text.split_whitespace().next()?.parse().ok()
}

/// What one part of the run cost over a window.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct PartCpu {
    /// Its threads' time on a CPU over the window's wall time: 1.0 is one CPU's worth.
    pub cpu: f64,
    /// Its threads' time on a CPU per event (raised, for the reactor and the producers;
    /// received, for the receivers).
    pub ns_per_event: f64,
}

/// What each part cost over a run's window (the producers' run).
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct RunCpu {
    /// The dispatcher's reactor: encoding and sending every event to every target.
    pub reactor: PartCpu,
    /// loadgen's producers: building and raising the events.
    pub producers: PartCpu,
    /// loadgen's receivers: receiving, decoding and booking them; `None` with external
    /// targets, or when none arrived.
    pub receivers: Option<PartCpu>,
}

impl ThreadTimes {
    /// Now, or `None` where `/proc/self/task` cannot be read, or has no `schedstat` (a
    /// kernel without `CONFIG_SCHED_INFO`).
    pub fn read() -> Option<ThreadTimes> {
        this_thread_ns()?;
        let tasks = std::fs::read_dir("/proc/self/task").ok()?;
        let threads = tasks.flatten().filter_map(|task| {
            let path = task.path();
            // A thread that ended meanwhile is no longer there: skipped.
            let name = std::fs::read_to_string(path.join("comm")).ok()?;
            let schedstat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            Some((name, schedstat))
        });
        Some(Self::of(threads))
    }

    /// Sums `(comm, schedstat)` of threads by part; threads of no part are left out.
    fn of(threads: impl IntoIterator<Item = (String, String)>) -> ThreadTimes {
        let mut t = ThreadTimes::default();
        for (name, schedstat) in threads {
            let part = match name.trim_end() {
                REACTOR_THREAD => &mut t.reactor,
                RECEIVER_THREAD => &mut t.receivers,
                _ => continue,
            };
            *part += schedstat_ns(&schedstat).unwrap_or(0);
        }
        t
    }

    /// What each part cost from `earlier` to `self`, `wall_ns` apart, the producers having
    /// spent `producers_ns`, over `raised` events raised and `received` received; `None` when
    /// no time passed or nothing was raised.
    pub fn since(
        self,
        earlier: ThreadTimes,
        wall_ns: u64,
        producers_ns: u64,
        raised: u64,
        received: Option<u64>,
    ) -> Option<RunCpu> {
        if wall_ns == 0 || raised == 0 {
            return None;
        }
        let part = |now: u64, then: u64, events: u64| {
            let ns = now.checked_sub(then)? as f64;
            (events > 0).then(|| PartCpu {
                cpu: ns / wall_ns as f64,
                ns_per_event: ns / events as f64,
            })
        };
        Some(RunCpu {
            reactor: part(self.reactor, earlier.reactor, raised)?,
            producers: part(producers_ns, 0, raised)?,
            receivers: received.and_then(|n| part(self.receivers, earlier.receivers, n)),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn thread(name: &str, ns: u64) -> (String, String) {
        (format!("{name}\n"), format!("{ns} 5000 42\n"))
    }

    #[test]
    fn threads_are_summed_by_part_and_shared_out_per_event() {
        let before = ThreadTimes::of([
            thread(REACTOR_THREAD, 1_000),
            thread(RECEIVER_THREAD, 0),
            thread(RECEIVER_THREAD, 0),
            thread(PRODUCER_THREAD, 500),
            thread("loadgen", 7_000_000),
        ]);
        let after = ThreadTimes::of([
            thread(REACTOR_THREAD, 401_000),
            thread(RECEIVER_THREAD, 100_000),
            thread(RECEIVER_THREAD, 200_000),
            thread(PRODUCER_THREAD, 100_500),
            thread("loadgen", 9_000_000),
        ]);
        let run = after
            .since(before, 1_000_000, 200_000, 1_000, Some(500))
            .unwrap();
        assert_eq!(
            run.reactor,
            PartCpu {
                cpu: 0.4,
                ns_per_event: 400.0
            }
        );
        assert_eq!(
            run.producers,
            PartCpu {
                cpu: 0.2,
                ns_per_event: 200.0
            },
            "their own reading, not the threads'"
        );
        assert_eq!(
            run.receivers,
            Some(PartCpu {
                cpu: 0.3,
                ns_per_event: 600.0
            }),
            "both receivers, per event received"
        );
        let some = |received| after.since(before, 1_000_000, 200_000, 1_000, received);
        assert_eq!(some(None).unwrap().receivers, None, "external targets");
        assert_eq!(some(Some(0)).unwrap().receivers, None, "nothing received");
        assert_eq!(
            after.since(before, 1_000_000, 0, 0, Some(500)),
            None,
            "nothing raised"
        );
        assert_eq!(after.since(before, 0, 0, 1_000, Some(500)), None, "no time");
        assert_eq!(
            before.since(after, 1_000_000, 0, 1_000, None),
            None,
            "backwards"
        );
    }

    #[test]
    fn this_process_and_thread_are_read() {
        // Other tests' receivers may be running: only that the reads work here.
        assert!(ThreadTimes::read().is_some());
        let before = this_thread_ns().expect("this thread's schedstat");
        let mut x = 0u64;
        while this_thread_ns().unwrap() < before + 1_000_000 {
            x = std::hint::black_box(x + 1);
        }
        assert!(x > 0);
    }
}
