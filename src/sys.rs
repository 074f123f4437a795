//! The few system calls std does not wrap: eventfd, sendmmsg, poll, setsockopt.
#![allow(unsafe_code)]

use std::fs::File;
use std::io::{self, Read, Write};
use std::os::fd::{AsRawFd, FromRawFd, OwnedFd, RawFd};
use std::time::Duration;

/// A non-blocking eventfd: producers write it to wake a sleeping reactor.
#[derive(Debug)]
pub(crate) struct EventFd(File);

impl EventFd {
    pub fn new() -> io::Result<Self> {
        // SAFETY: eventfd takes no pointers; a non-negative result is a new fd we own.
        let fd = unsafe { libc::eventfd(0, libc::EFD_NONBLOCK | libc::EFD_CLOEXEC) };
        if fd < 0 {
            return Err(io::Error::last_os_error());
        }
        // SAFETY: `fd` was just returned by eventfd and is owned by nobody else.
        Ok(EventFd(File::from(unsafe { OwnedFd::from_raw_fd(fd) })))
    }

    /// Adds one; never blocks (the counter cannot reach its maximum from our writes).
    pub fn wake(&self) {
        let _ = (&self.0).write(&1u64.to_ne_bytes());
    }

    /// Resets the counter to zero.
    pub fn drain(&self) {
        let mut buf = [0u8; 8];
        let _ = (&self.0).read(&mut buf);
    }
}

impl AsRawFd for EventFd {
    fn as_raw_fd(&self) -> RawFd {
        self.0.as_raw_fd()
    }
}

/// `sendmmsg(fd, msgs, MSG_DONTWAIT)`: how many were sent, or the error of the first one.
pub(crate) fn sendmmsg(fd: RawFd, msgs: &mut [libc::mmsghdr]) -> io::Result<usize> {
    // The raw system call, not glibc's `sendmmsg`: that one is a thread cancellation point and
    // turns asynchronous cancellation on and off around each call (0.7 % of all samples in the
    // compare bench's UNIX x1 case, a tenth of the reactor's user time). Nothing here cancels
    // threads.
    // SAFETY: every mmsghdr in `msgs` points at iovecs and buffers that the caller keeps alive
    // and unchanged for this call (they are borrowed by the caller's frame); the kernel only
    // reads them, and writes each `msg_len`, inside `msgs`.
    let n = unsafe {
        libc::syscall(
            libc::SYS_sendmmsg,
            libc::c_long::from(fd),
            msgs.as_mut_ptr(),
            msgs.len() as libc::c_long,
            libc::c_long::from(libc::MSG_DONTWAIT),
        )
    };
    if n < 0 {
        Err(io::Error::last_os_error())
    } else {
        Ok(n as usize)
    }
}

/// `ppoll(fds, timeout)`; `None` waits forever. An interrupted call counts as 0 ready. Not
/// `poll`, whose milliseconds would stretch a coalescing delay of 200 us to 1 ms.
pub(crate) fn poll(fds: &mut [libc::pollfd], timeout: Option<Duration>) -> io::Result<usize> {
    let ts = timeout.map(timespec);
    let ts_ptr = ts.as_ref().map_or(std::ptr::null(), |t| t as *const _);
    // SAFETY: `fds` is a valid, exclusively borrowed array of `fds.len()` pollfds; `ts_ptr` is
    // null or points to `ts`, alive across the call; a null signal mask changes nothing.
    let n = unsafe {
        libc::ppoll(
            fds.as_mut_ptr(),
            fds.len() as libc::nfds_t,
            ts_ptr,
            std::ptr::null(),
        )
    };
    if n < 0 {
        let e = io::Error::last_os_error();
        return if e.kind() == io::ErrorKind::Interrupted {
            Ok(0)
        } else {
            Err(e)
        };
    }
    Ok(n as usize)
}

/// `d` as a `timespec`, to the nanosecond; beyond 68 years, 68 years.
fn timespec(d: Duration) -> libc::timespec {
    libc::timespec {
        tv_sec: d.as_secs().min(i32::MAX as u64) as libc::time_t,
        tv_nsec: d.subsec_nanos() as libc::c_long,
    }
}

/// A zeroed `mmsghdr` (all null pointers and zero lengths).
pub(crate) fn empty_mmsghdr() -> libc::mmsghdr {
    // SAFETY: mmsghdr is a plain C struct for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

/// `UDP_SEGMENT` (linux/udp.h): the segment size of a UDP GSO send.
pub(crate) const UDP_SEGMENT: libc::c_int = 103;

/// The control message that makes one `sendmsg` carry several equal-size UDP datagrams.
/// Laid out as `CMSG_SPACE(sizeof(u16))` bytes: a `cmsghdr`, the segment size, padding.
#[repr(C)]
#[derive(Clone, Copy)]
pub(crate) struct GsoControl {
    hdr: libc::cmsghdr,
    segment: u16,
    _pad: [u8; 6],
}

impl GsoControl {
    pub fn new(segment: u16) -> Self {
        // SAFETY: cmsghdr is a plain C struct for which all-zero bytes are a valid value.
        let mut hdr: libc::cmsghdr = unsafe { std::mem::zeroed() };
        hdr.cmsg_len = std::mem::size_of::<libc::cmsghdr>() + std::mem::size_of::<u16>();
        hdr.cmsg_level = libc::SOL_UDP;
        hdr.cmsg_type = UDP_SEGMENT;
        GsoControl {
            hdr,
            segment,
            _pad: [0; 6],
        }
    }
}

/// True when the kernel takes `UDP_SEGMENT` on UDP sockets (Linux 4.18+).
pub(crate) fn udp_gso_supported() -> bool {
    std::net::UdpSocket::bind("127.0.0.1:0").is_ok_and(|sock| {
        set_int_option(sock.as_raw_fd(), libc::SOL_UDP, UDP_SEGMENT, 1400).is_ok()
    })
}

/// `setsockopt(fd, level, name, &value)` for an `int` option.
pub(crate) fn set_int_option(
    fd: RawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: libc::c_int,
) -> io::Result<()> {
    // SAFETY: `value` is a live c_int and its exact size is passed; the kernel only reads it.
    let rc = unsafe {
        libc::setsockopt(
            fd,
            level,
            name,
            (&value as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The process's soft limit on open files (`RLIMIT_NOFILE`); `u64::MAX` when unlimited.
pub(crate) fn open_files_limit() -> io::Result<u64> {
    let mut lim = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: `lim` is a live rlimit the kernel writes into.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(lim.rlim_cur)
}

/// A zeroed `msghdr`.
pub(crate) fn empty_msghdr() -> libc::msghdr {
    // SAFETY: msghdr is a plain C struct for which all-zero bytes are a valid value.
    unsafe { std::mem::zeroed() }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_sleep_keeps_its_microseconds_and_a_huge_one_is_capped() {
        let t = timespec(Duration::from_micros(200));
        assert_eq!((t.tv_sec, t.tv_nsec), (0, 200_000));
        let t = timespec(Duration::new(3, 999_999_999));
        assert_eq!((t.tv_sec, t.tv_nsec), (3, 999_999_999));
        let t = timespec(Duration::MAX);
        assert_eq!(t.tv_sec, libc::time_t::from(i32::MAX));
    }

    #[test]
    fn poll_waits_out_a_short_timeout_and_sees_a_ready_fd() {
        let (a, b) = std::os::unix::net::UnixDatagram::pair().unwrap();
        let mut fds = [libc::pollfd {
            fd: std::os::fd::AsRawFd::as_raw_fd(&b),
            events: libc::POLLIN,
            revents: 0,
        }];
        assert_eq!(poll(&mut fds, Some(Duration::from_micros(200))).unwrap(), 0);
        a.send(b"x").unwrap();
        assert_eq!(poll(&mut fds, None).unwrap(), 1);
        assert_eq!(fds[0].revents, libc::POLLIN);
    }
}
