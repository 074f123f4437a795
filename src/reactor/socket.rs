//! One connected, non-blocking sending socket per target.
//!
//! Connected sockets send faster (no address lookup per datagram: 1.8x for UNIX here) and keep
//! one slow UNIX receiver, whose datagrams are charged to its sender's buffer, from stalling
//! the others.

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{AsRawFd, RawFd};
use std::os::unix::net::UnixDatagram;

use crate::sys;
use crate::target::Target;

/// The send buffer asked for a UNIX socket. A UNIX datagram stays charged to its sender until
/// the receiver reads it, and the socket polls writable only while at most a quarter of the
/// buffer is in use. With the default 208 KiB, one 64 KB datagram in flight makes it
/// unwritable and a fifth is refused, so the reactor waited on a fast receiver of large events
/// every few datagrams. 4 MiB lets the receiver's whole queue (`net.unix.max_dgram_qlen`, 10 by
/// default) fill with the largest datagrams (the kernel caps it at `net.core.wmem_max`).
const UNIX_SEND_BUFFER: libc::c_int = 4 << 20;

/// Tests only: UDP destinations whose sockets are opened with `SO_NO_CHECK` (no UDP checksum),
/// on which the kernel refuses every GSO send with `EINVAL`. On loopback no path refuses GSO
/// otherwise: this is how a test meets one (see `send::tests`).
#[cfg(test)]
pub(crate) static REFUSE_GSO_TO: std::sync::Mutex<Vec<SocketAddr>> =
    std::sync::Mutex::new(Vec::new());

/// A sending socket, connected to its target and non-blocking.
#[derive(Debug)]
pub(crate) enum Socket {
    Udp(UdpSocket),
    Unix(UnixDatagram),
}

impl Socket {
    /// Opens a socket and connects it to `target`. For a UNIX target without a receiver this
    /// fails with `ENOENT` or `ECONNREFUSED`.
    pub fn connect(target: &Target) -> io::Result<Socket> {
        match target {
            Target::Udp(addr) => {
                let local: SocketAddr = match addr {
                    SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                    SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
                };
                let sock = UdpSocket::bind(local)?;
                #[cfg(test)]
                if REFUSE_GSO_TO.lock().expect("not poisoned").contains(addr) {
                    // SO_NO_CHECK (asm-generic/socket.h; the libc crate has it for l4re only).
                    const SO_NO_CHECK: libc::c_int = 11;
                    sys::set_int_option(sock.as_raw_fd(), libc::SOL_SOCKET, SO_NO_CHECK, 1)?;
                }
                sock.connect(addr)?;
                sock.set_nonblocking(true)?;
                Ok(Socket::Udp(sock))
            }
            Target::Unix(_) => {
                let addr = target
                    .unix_socket_addr()
                    .expect("a UNIX target has a UNIX address")?;
                let sock = UnixDatagram::unbound()?;
                // Best effort: a smaller buffer only sends large datagrams more slowly.
                let _ = sys::set_int_option(
                    sock.as_raw_fd(),
                    libc::SOL_SOCKET,
                    libc::SO_SNDBUF,
                    UNIX_SEND_BUFFER,
                );
                sock.connect_addr(&addr)?;
                sock.set_nonblocking(true)?;
                Ok(Socket::Unix(sock))
            }
        }
    }

    pub fn is_unix(&self) -> bool {
        matches!(self, Socket::Unix(_))
    }
}

impl AsRawFd for Socket {
    fn as_raw_fd(&self) -> RawFd {
        match self {
            Socket::Udp(s) => s.as_raw_fd(),
            Socket::Unix(s) => s.as_raw_fd(),
        }
    }
}

/// What a send error means for the target.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum SendFailure {
    /// The receiver is slow: keep the datagram and wait until the socket is writable.
    WouldBlock,
    /// No receiver (`ENOENT`, `ECONNREFUSED`, not connected).
    Unreachable,
    /// Too large for this socket.
    Oversize,
    /// Anything else.
    Other,
}

impl SendFailure {
    pub fn of(errno: i32) -> SendFailure {
        match errno {
            libc::EAGAIN | libc::ENOBUFS => SendFailure::WouldBlock,
            libc::ENOENT
            | libc::ECONNREFUSED
            | libc::ENOTCONN
            | libc::ECONNRESET
            | libc::EDESTADDRREQ
            | libc::EHOSTUNREACH
            | libc::ENETUNREACH => SendFailure::Unreachable,
            libc::EMSGSIZE => SendFailure::Oversize,
            _ => SendFailure::Other,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Sends `len`-byte datagrams on `sock` until the kernel refuses one; returns how many.
    fn sent_until_full(sock: &UnixDatagram, len: usize) -> usize {
        let datagram = vec![b'x'; len];
        (0..64).take_while(|_| sock.send(&datagram).is_ok()).count()
    }

    #[test]
    fn a_unix_socket_keeps_more_large_datagrams_in_flight_than_the_default() {
        let dir = std::env::temp_dir().join(format!("evdgram-socket-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("temp dir");
        let (ours, plain) = (dir.join("ours"), dir.join("plain"));
        // Receivers that never read: what is in flight stays charged to the senders.
        let _rx = [&ours, &plain].map(|p| UnixDatagram::bind(p).expect("bind"));

        let target = Target::parse(&format!("unix:{}", ours.display())).expect("target");
        let Socket::Unix(sock) = Socket::connect(&target).expect("connect") else {
            panic!("a UNIX target gets a UNIX socket");
        };
        let default = UnixDatagram::unbound().expect("socket");
        default.connect(&plain).expect("connect");
        default.set_nonblocking(true).expect("non-blocking");

        let len = crate::MAX_DATAGRAM;
        let (n_ours, n_default) = (sent_until_full(&sock, len), sent_until_full(&default, len));
        std::fs::remove_dir_all(&dir).expect("remove temp dir");
        assert!(
            n_ours > n_default,
            "{n_ours} datagrams in flight, {n_default} with the default send buffer"
        );
    }
}
