//! The machine's CPU time over a run's window, from `/proc/stat`: how busy it was, and how
//! much of it the host took for others (`steal`, on a virtual machine). A stolen stretch stalls
//! whatever ran on that CPU, generator, reactor or receiver alike: at 1M events/s a 20 ms one
//! is 20 000 events late, however little else the machine had to do.

use serde::Serialize;

/// Cumulative CPU time of all CPUs since boot, in clock ticks, by what it went to.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CpuTimes {
    busy: u64,
    idle: u64,
    steal: u64,
}

/// Shares of the machine's CPU time over a window; they add up to 1.
#[derive(Clone, Copy, Debug, PartialEq, Serialize)]
pub struct CpuShare {
    /// Running anything, this process or another (user, nice, system, irq, softirq).
    pub busy: f64,
    /// Idle, or waiting for I/O.
    pub idle: f64,
    /// Taken by the host while this machine had something to run.
    pub steal: f64,
}

impl CpuTimes {
    /// Now, or `None` where `/proc/stat` cannot be read.
    pub fn read() -> Option<CpuTimes> {
        parse(&std::fs::read_to_string("/proc/stat").ok()?)
    }

    /// The shares of the time from the first sample to the last (`None` if either is missing).
    pub fn across(samples: &[Option<CpuTimes>]) -> Option<CpuShare> {
        let (Some(Some(first)), Some(Some(last))) = (samples.first(), samples.last()) else {
            return None;
        };
        last.since(*first)
    }

    /// The shares of the time between each sample and the next: second by second when they
    /// were taken a second apart.
    pub fn each_between(samples: &[Option<CpuTimes>]) -> Vec<Option<CpuShare>> {
        samples
            .windows(2)
            .map(|w| w[1].zip(w[0]).and_then(|(b, a)| b.since(a)))
            .collect()
    }

    /// The shares of the time from `earlier` to `self`; `None` if no tick passed.
    pub fn since(self, earlier: CpuTimes) -> Option<CpuShare> {
        let busy = self.busy.checked_sub(earlier.busy)? as f64;
        let idle = self.idle.checked_sub(earlier.idle)? as f64;
        let steal = self.steal.checked_sub(earlier.steal)? as f64;
        let total = busy + idle + steal;
        (total > 0.0).then(|| CpuShare {
            busy: busy / total,
            idle: idle / total,
            steal: steal / total,
        })
    }
}

/// The first line of `/proc/stat`: `cpu  user nice system idle iowait irq softirq steal ...`
/// (guest time is inside user and nice already).
fn parse(text: &str) -> Option<CpuTimes> {
    let mut fields = text
        .lines()
        .next()?
        .strip_prefix("cpu ")?
        .split_whitespace();
    let mut next = || -> Option<u64> { fields.next()?.parse().ok() };
    let (user, nice, system, idle, iowait, irq, softirq) = (
        next()?,
        next()?,
        next()?,
        next()?,
        next()?,
        next()?,
        next()?,
    );
    // Kernels before 2.6.11 have no steal column.
    let steal = next().unwrap_or(0);
    Some(CpuTimes {
        busy: user + nice + system + irq + softirq,
        idle: idle + iowait,
        steal,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn proc_stat_is_read_by_kind_and_shared_out() {
        let before = parse("cpu  100 0 50 800 20 0 10 20 0 0\ncpu0 1 2 3\n").unwrap();
        let after = parse("cpu  160 0 70 880 20 0 10 60 5 0\n").unwrap();
        assert_eq!(
            after.since(before),
            Some(CpuShare {
                busy: 0.4,
                idle: 0.4,
                steal: 0.2
            })
        );
        assert_eq!(after.since(after), None, "no tick");
        assert_eq!(before.since(after), None, "backwards");
        assert!(parse("intr 1 2 3\n").is_none());
        let old_kernel = parse("cpu  1 2 3 4 5 6 7\n").unwrap();
        assert_eq!(old_kernel.steal, 0);
        assert!(CpuTimes::read().is_some(), "this machine's /proc/stat");
    }

    #[test]
    fn samples_give_the_shares_between_each_and_the_next() {
        let at = |busy, idle, steal| Some(CpuTimes { busy, idle, steal });
        let samples = [
            at(0, 0, 0),
            at(50, 40, 10),
            None,
            at(60, 80, 10),
            at(90, 90, 20),
        ];
        let share = |busy, idle, steal| Some(CpuShare { busy, idle, steal });
        assert_eq!(
            CpuTimes::each_between(&samples),
            [share(0.5, 0.4, 0.1), None, None, share(0.6, 0.2, 0.2)]
        );
        assert!(CpuTimes::each_between(&samples[..1]).is_empty());
        assert_eq!(CpuTimes::across(&samples), share(0.45, 0.45, 0.1));
        assert_eq!(
            CpuTimes::across(&samples[1..3]),
            None,
            "the last is missing"
        );
    }
}
