//! CLOCK_MONOTONIC in nanoseconds: the one time base of senders and receivers.
//!
//! The raw clock value (not an [`std::time::Instant`]) travels in the payload, so a `loadgen sink`
//! in another process on the same host measures against the same base.

/// Reads CLOCK_MONOTONIC, in nanoseconds.
// The only reason for `unsafe` in this crate besides `sys::set_recv_buffer`: std does not expose
// the raw CLOCK_MONOTONIC value.
#[allow(unsafe_code)]
#[inline]
pub fn mono_ns() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: `ts` is a valid, writable timespec for the duration of the call, and
    // CLOCK_MONOTONIC is always supported on Linux (so the call cannot fail).
    let rc = unsafe { libc::clock_gettime(libc::CLOCK_MONOTONIC, &mut ts) };
    debug_assert_eq!(rc, 0);
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

/// Sleeps until `deadline_ns` on [`mono_ns`]: a relative `thread::sleep` for the time left to
/// 60 us before it, then a yield-spin (Linux oversleeps by the 50 us timer slack, so we wake
/// that much early).
pub fn sleep_until(deadline_ns: u64) {
    const SLACK_NS: u64 = 60_000;
    let now = mono_ns();
    if deadline_ns > now + SLACK_NS {
        std::thread::sleep(std::time::Duration::from_nanos(
            deadline_ns - now - SLACK_NS,
        ));
    }
    while mono_ns() < deadline_ns {
        std::thread::yield_now();
    }
}

/// Sleeps until about `deadline_ns`: no spin, so it may wake a timer slack (~50 us) late.
pub fn sleep_coarse(deadline_ns: u64) {
    let now = mono_ns();
    if deadline_ns > now {
        std::thread::sleep(std::time::Duration::from_nanos(deadline_ns - now));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn monotonic_and_close_to_instant() {
        let a = mono_ns();
        let i = std::time::Instant::now();
        sleep_until(a + 2_000_000);
        // Read inside [a, b], so however this thread is preempted, the two clocks agree to
        // within their resolution.
        let elapsed = i.elapsed().as_nanos() as u64;
        let b = mono_ns();
        assert!(b >= a + 2_000_000);
        assert!(
            elapsed <= b - a + 1_000,
            "{elapsed} ns by Instant, {} by mono_ns",
            b - a
        );
    }
}
