//! The one socket option std does not offer: a larger receive buffer for our sinks.

use std::os::fd::AsRawFd;

/// Asks for a `bytes` receive buffer (`SO_RCVBUFFORCE` when privileged, else `SO_RCVBUF`,
/// which the kernel caps at `net.core.rmem_max`). Best effort: a sink works without it, it
/// only drops earlier under bursts, and those drops are counted.
#[allow(unsafe_code)]
pub fn set_recv_buffer(sock: &impl AsRawFd, bytes: usize) {
    let v: libc::c_int = bytes.min(i32::MAX as usize) as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: `sock` is an open socket for the duration of the call; `v` is a valid c_int
        // and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}
