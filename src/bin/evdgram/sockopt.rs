//! The few socket options `listen` reads and sets, through `getsockopt`/`setsockopt`: the
//! binary's one place for them (and their `unsafe`).
#![allow(unsafe_code)]

use std::net::UdpSocket;
use std::os::fd::AsRawFd;

/// Whether a UDP socket takes IPv4 datagrams: an IPv4 one does; an IPv6 one unless it is
/// IPv6-only (`IPV6_V6ONLY`, which `net.ipv6.bindv6only` sets by default on some systems).
pub(crate) fn takes_ipv4(s: &UdpSocket) -> bool {
    let Ok(local) = s.local_addr() else {
        return false;
    };
    if local.is_ipv4() {
        return true;
    }
    let mut v6only: libc::c_int = 1;
    get_option(s, libc::IPPROTO_IPV6, libc::IPV6_V6ONLY, &mut v6only).is_some() && v6only == 0
}

/// Plain integers, which any bytes the kernel writes are a value of: what [`get_option`] reads.
trait OptionValue: Copy {}
impl OptionValue for libc::c_int {}
impl<const N: usize> OptionValue for [u32; N] {}

/// `getsockopt(socket, level, name)` into `value`; the bytes the kernel wrote, or `None` on
/// an error.
fn get_option<T: OptionValue>(
    socket: &impl AsRawFd,
    level: libc::c_int,
    name: libc::c_int,
    value: &mut T,
) -> Option<usize> {
    let mut len = std::mem::size_of::<T>() as libc::socklen_t;
    // SAFETY: `value` is live and `len` its size in bytes; the kernel writes at most `len`
    // bytes into it (any bytes are a `T`: `OptionValue` is only plain integers) and the length
    // it wrote into `len`.
    let rc = unsafe {
        libc::getsockopt(
            socket.as_raw_fd(),
            level,
            name,
            (value as *mut T).cast(),
            &mut len,
        )
    };
    (rc == 0).then_some(len as usize)
}

/// Asks for a receive buffer of `bytes` (best effort: the kernel caps it, and an error leaves
/// the default).
pub(crate) fn ask_receive_buffer(socket: &UdpSocket, bytes: libc::c_int) {
    // SAFETY: `bytes` is a live c_int and its exact size is passed; the kernel only reads it.
    unsafe {
        libc::setsockopt(
            socket.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_RCVBUF,
            (&bytes as *const libc::c_int).cast(),
            std::mem::size_of::<libc::c_int>() as libc::socklen_t,
        )
    };
}

/// Datagrams the kernel has dropped at `socket` so far (`SK_MEMINFO_DROPS` of `SO_MEMINFO`),
/// or `None` if it does not say.
pub(crate) fn kernel_drops(socket: &UdpSocket) -> Option<u32> {
    // The kernel fills as many of its counters as fit; there are 9 today.
    let mut info = [0u32; 16];
    let drops = libc::SK_MEMINFO_DROPS as usize;
    let written = get_option(socket, libc::SOL_SOCKET, libc::SO_MEMINFO, &mut info)?;
    (written >= (drops + 1) * std::mem::size_of::<u32>()).then(|| info[drops])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_socket_says_whether_it_takes_ipv4() {
        use std::os::fd::{FromRawFd, OwnedFd};
        let v4 = UdpSocket::bind("127.0.0.1:0").expect("bind");
        assert!(takes_ipv4(&v4));
        // SAFETY: plain socket(2); its fd is owned by the `OwnedFd` at once.
        let fd = unsafe { libc::socket(libc::AF_INET6, libc::SOCK_DGRAM, 0) };
        if fd < 0 {
            return; // No IPv6 here.
        }
        // SAFETY: `fd` is a fresh, open socket that nothing else owns.
        let unbound = UdpSocket::from(unsafe { OwnedFd::from_raw_fd(fd) });
        // Not bound yet (as `[::]` would be, which a test may not bind), its IPV6_V6ONLY is the
        // system's default.
        if let Ok(v6only) = std::fs::read_to_string("/proc/sys/net/ipv6/bindv6only") {
            assert_eq!(takes_ipv4(&unbound), v6only.trim() != "1");
        }
        // Bound to one IPv6 address, the kernel makes it IPv6-only.
        if let Ok(v6) = UdpSocket::bind("[::1]:0") {
            assert!(!takes_ipv4(&v6));
        }
    }
}
