//! The `syscall` backend: non-blocking connected sockets, one `sendmmsg` per target per round,
//! and `poll` to sleep. It is what runs where io_uring is blocked (Docker's default seccomp
//! profile, `kernel.io_uring_disabled`).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use super::pool::Pool;
use super::{Round, SendBackend};
use crate::stats::Backend;
use crate::sys::{self, EventFd};

pub(crate) struct SyscallBackend {
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    /// Slots waiting to become writable, with their sockets.
    watched: Vec<(u32, RawFd)>,
    pollfds: Vec<libc::pollfd>,
}

// SAFETY: the raw pointers inside `msgs` and `iovs` are scratch, rewritten before every use and
// never dereferenced outside `send_round`; the backend is moved to the reactor thread once.
#[allow(unsafe_code)]
unsafe impl Send for SyscallBackend {}

impl SyscallBackend {
    pub fn new(max_per_target: usize) -> Self {
        SyscallBackend {
            msgs: vec![sys::empty_mmsghdr(); max_per_target],
            iovs: vec![
                libc::iovec {
                    iov_base: std::ptr::null_mut(),
                    iov_len: 0
                };
                max_per_target
            ],
            watched: Vec::new(),
            pollfds: Vec::new(),
        }
    }
}

impl SendBackend for SyscallBackend {
    fn kind(&self) -> Backend {
        Backend::Syscall
    }

    fn add_socket(&mut self, _slot: u32, _fd: RawFd) {}

    fn remove_socket(&mut self, slot: u32) {
        self.watched.retain(|&(s, _)| s != slot);
    }

    fn send_round(&mut self, pool: &Pool, round: &mut Round) {
        for rt in &round.targets {
            let first = rt.first as usize;
            let items = &round.items[first..first + rt.count as usize];
            let outcomes = &mut round.outcomes[first..first + rt.count as usize];
            let n = items.len().min(self.iovs.len());
            for (k, item) in items[..n].iter().enumerate() {
                let data = &pool.get(item.buf)[..item.len as usize];
                self.iovs[k] = libc::iovec {
                    iov_base: data.as_ptr() as *mut _,
                    iov_len: data.len(),
                };
            }
            for k in 0..n {
                let msg = &mut self.msgs[k];
                *msg = sys::empty_mmsghdr();
                msg.msg_hdr.msg_iov = &mut self.iovs[k];
                msg.msg_hdr.msg_iovlen = 1;
            }
            // A partial count means the next datagram would have failed: ask again for its error.
            let mut done = 0;
            while done < n {
                match sys::sendmmsg(rt.fd, &mut self.msgs[done..n]) {
                    Ok(sent) => {
                        for (outcome, msg) in outcomes[done..done + sent]
                            .iter_mut()
                            .zip(&self.msgs[done..])
                        {
                            *outcome = msg.msg_len as i32;
                        }
                        done += sent;
                        if sent == 0 {
                            break;
                        }
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => {
                        outcomes[done] = -e.raw_os_error().unwrap_or(libc::EIO);
                        break;
                    }
                }
            }
        }
    }

    fn watch_writable(&mut self, slot: u32, fd: RawFd) {
        if !self.watched.iter().any(|&(s, _)| s == slot) {
            self.watched.push((slot, fd));
        }
    }

    fn wait(
        &mut self,
        wake: &EventFd,
        timeout: Option<Duration>,
        ready: &mut Vec<u32>,
    ) -> io::Result<()> {
        self.pollfds.clear();
        self.pollfds.push(libc::pollfd {
            fd: wake.as_raw_fd(),
            events: libc::POLLIN,
            revents: 0,
        });
        for &(_, fd) in &self.watched {
            self.pollfds.push(libc::pollfd {
                fd,
                events: libc::POLLOUT,
                revents: 0,
            });
        }
        if sys::poll(&mut self.pollfds, timeout)? == 0 {
            return Ok(());
        }
        if self.pollfds[0].revents != 0 {
            wake.drain();
        }
        let mut k = 0;
        self.watched.retain(|&(slot, _)| {
            k += 1;
            let fired = self.pollfds[k].revents != 0;
            if fired {
                ready.push(slot);
            }
            !fired
        });
        Ok(())
    }
}
