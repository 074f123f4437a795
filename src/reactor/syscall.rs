//! The `syscall` backend: non-blocking connected sockets, one `sendmmsg` per target per round,
//! and `poll` to sleep. It is what runs where io_uring is blocked (Docker's default seccomp
//! profile, `kernel.io_uring_disabled`).

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use super::mmsg::MmsgSender;
use super::pool::Pool;
use super::round::Round;
use super::SendBackend;
use crate::stats::Backend;
use crate::sys::{self, EventFd};

pub(crate) struct SyscallBackend {
    mmsg: MmsgSender,
    /// Slots waiting to become writable, with their sockets.
    watched: Vec<(u32, RawFd)>,
    pollfds: Vec<libc::pollfd>,
}

impl SyscallBackend {
    pub fn new(max_per_target: usize) -> Self {
        SyscallBackend {
            mmsg: MmsgSender::new(max_per_target),
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
            self.mmsg
                .send_target(pool, rt, &round.items, &mut round.outcomes);
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
