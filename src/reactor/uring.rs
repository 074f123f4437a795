//! The `uring` backend: `SEND` with `MSG_DONTWAIT` on connected sockets registered as fixed
//! files, one `submit_and_wait` per round, `POLL_ADD` to learn when a slow socket drains and
//! when a producer writes the wake eventfd.
//!
//! # The lifetime invariant
//!
//! The kernel reads a `SEND`'s buffer at some time between the submit and the completion. So:
//! **every `SEND` pushed by [`UringBackend::send_round`] is completed and reaped before that call
//! returns.** Its buffers are borrowed from the pool (`&Pool`) for exactly that call, so the
//! borrow checker forbids releasing or reusing them while the kernel may read them. The other
//! operations left in flight between rounds (`POLL_ADD`, `POLL_REMOVE`) carry no user memory.
//!
//! A UDP target's sends in a round form one chain (`IOSQE_IO_LINK`) once its receiver has been
//! full (`Slot::linked`) and when a GSO message may be refused: the kernel runs them in order
//! and cancels the rest of the chain at the first failure, so a datagram that meets a full
//! receiver (`EAGAIN`) is retried without any later one overtaking it. A UDP chain cut by a
//! failure of one datagram alone (a closed port) goes on in another pass of the same round.
//!
//! UNIX targets are sent with `sendmmsg` on this thread (the `mmsg` module): their sends
//! complete in the call either way, and as linked SENDs a full receiver's refusal cost a
//! cancelled operation for each datagram after it. On the AMD EPYC machine this took UNIX x1
//! from 0.74x-0.82x the `syscall` backend's rate to 0.92x-1.12x (three rounds each).

#![allow(unsafe_code)]

use std::io;
use std::os::fd::{AsRawFd, RawFd};
use std::time::Duration;

use io_uring::{opcode, squeue, types, EnterFlags, IoUring, Probe};

use super::mmsg::MmsgSender;
use super::pool::Pool;
use super::round::{book_sent, goes_on_after, next_message, resume_at, Round, GSO_REFUSED};
use super::SendBackend;
use crate::stats::Backend;
use crate::sys::{self, EventFd, GsoControl};

/// `user_data` of the wake eventfd's poll.
const TAG_WAKE: u64 = 1 << 63;
/// `user_data` of a writability poll: the tag plus the slot.
const TAG_WRITABLE: u64 = 1 << 62;
/// `user_data` of a poll removal (its completion is ignored).
const TAG_REMOVE: u64 = 1 << 61;

/// Fixed-file table size at most; targets beyond the table use their plain fd.
const FIXED_FILES: u32 = 4096;

pub(crate) struct UringBackend {
    ring: IoUring,
    /// Slots below this send through the fixed-file table.
    fixed_files: u32,
    /// Per slot: its socket is in the fixed-file table. A slot whose registration failed
    /// sends through its plain fd.
    registered: Vec<bool>,
    polls: Polls,
    /// `NO_IOWAIT` where the kernel has it (6.15+): with the wake poll always in flight, a
    /// ring waiting for completions is otherwise accounted as a task blocked on I/O, and an
    /// idle dispatcher shows as a CPU's worth of iowait, a blocked task in `vmstat` and
    /// pressure in `/proc/pressure/io`. Sends to sockets are not the disk I/O those mean.
    wait_flags: EnterFlags,
    /// Scratch for the GSO messages of one round (see `send_round`).
    iovecs: Vec<libc::iovec>,
    msghdrs: Vec<libc::msghdr>,
    controls: Vec<GsoControl>,
    /// The targets of a round's pass, each from the item it goes on at (see `send_round`).
    pass: Vec<(u32, u32)>,
    /// Sends to UNIX targets (see the `mmsg` module).
    unix: MmsgSender,
}

/// A send's `user_data`: the round index of its first item, above `RUN_SHIFT` how many items
/// it carries, and [`GSO_MESSAGE`] for a GSO SENDMSG (otherwise it is a plain SEND).
const RUN_SHIFT: u32 = 32;
const INDEX_MASK: u64 = (1 << RUN_SHIFT) - 1;
const GSO_MESSAGE: u64 = 1 << 60;

/// A writability poll's `user_data`: [`TAG_WRITABLE`], its socket's generation above
/// `RUN_SHIFT`, the slot below.
const GENERATION_MASK: u64 = (1 << 28) - 1;

/// The state of the polls that stay in flight between rounds.
#[derive(Default)]
struct Polls {
    wake_armed: bool,
    /// Per slot: a writability poll is in flight.
    watching: Vec<bool>,
    /// Per slot: how many sockets it has had. A poll of an earlier socket (cancelled with it,
    /// or completed before it went and reaped after) is not the slot's current one.
    generation: Vec<u32>,
    /// Slots found writable, reported by the next `wait`.
    ready: Vec<u32>,
    woken: bool,
}

impl Polls {
    /// The `user_data` of `slot`'s writability poll.
    fn writable_tag(&self, slot: u32) -> u64 {
        let generation = self.generation.get(slot as usize).copied().unwrap_or(0);
        TAG_WRITABLE | ((u64::from(generation) & GENERATION_MASK) << RUN_SHIFT) | u64::from(slot)
    }

    /// `slot`'s socket is gone: polls of it, in flight or not yet reaped, are not its next's.
    fn forget(&mut self, slot: u32) {
        let i = slot as usize;
        if self.generation.len() <= i {
            self.generation.resize(i + 1, 0);
        }
        self.generation[i] = self.generation[i].wrapping_add(1);
        if let Some(w) = self.watching.get_mut(i) {
            *w = false;
        }
    }

    /// Books a completion that is not a send.
    fn note(&mut self, user_data: u64) {
        if user_data == TAG_WAKE {
            self.wake_armed = false;
            self.woken = true;
        } else if user_data & TAG_WRITABLE != 0 {
            let slot = (user_data & INDEX_MASK) as u32;
            if user_data != self.writable_tag(slot) {
                return;
            }
            if let Some(w) = self.watching.get_mut(slot as usize) {
                *w = false;
            }
            self.ready.push(slot);
        }
    }
}

impl UringBackend {
    /// Sets up a ring, checks the opcodes we use, and waits for a `NOP` the way the reactor
    /// waits. Fails where io_uring is blocked or absent (`EPERM` under Docker's default
    /// seccomp, `ENOSYS`, `kernel.io_uring_disabled`), or older than the ring's flags (Linux
    /// 6.0: `EINVAL`).
    pub fn new(entries: u32) -> io::Result<Self> {
        let ring = IoUring::builder()
            .setup_single_issuer()
            .setup_coop_taskrun()
            .build(entries.next_power_of_two())?;
        let mut probe = Probe::new();
        ring.submitter().register_probe(&mut probe)?;
        for (code, name) in [
            (opcode::Send::CODE, "SEND"),
            (opcode::SendMsg::CODE, "SENDMSG"),
            (opcode::PollAdd::CODE, "POLL_ADD"),
        ] {
            if !probe.is_supported(code) {
                let msg = format!("io_uring lacks {name}");
                return Err(io::Error::new(io::ErrorKind::Unsupported, msg));
            }
        }
        // The kernel refuses a table larger than the open-files limit (EMFILE), which is 1024
        // by default: a table of 4096 made io_uring unavailable almost everywhere.
        let fixed_files = sys::open_files_limit()?.min(u64::from(FIXED_FILES)) as u32;
        if fixed_files > 0 {
            ring.submitter().register_files_sparse(fixed_files)?;
        }
        let capacity = ring.params().sq_entries() as usize;
        let wait_flags = if ring.params().is_feature_no_iowait() {
            EnterFlags::NO_IOWAIT
        } else {
            EnterFlags::empty()
        };
        let mut backend = UringBackend {
            ring,
            fixed_files,
            registered: Vec::new(),
            polls: Polls::default(),
            wait_flags,
            iovecs: Vec::with_capacity(capacity),
            msghdrs: Vec::with_capacity(capacity),
            controls: Vec::with_capacity(capacity),
            pass: Vec::with_capacity(capacity),
            unix: MmsgSender::new(capacity),
        };
        backend.wait_for_a_nop()?;
        Ok(backend)
    }

    /// Submits a `NOP` and waits for it as the reactor waits: a sandbox that lets a ring be set
    /// up but denies `io_uring_enter` (or its arguments) is found here, where the `auto`
    /// backend can still choose the other one, not at the first event, where the reactor
    /// could only retry for ever.
    fn wait_for_a_nop(&mut self) -> io::Result<()> {
        let nop = opcode::Nop::new().build();
        // SAFETY: a NOP references no memory; the queue is empty, a new ring's.
        unsafe { self.ring.submission().push(&nop) }
            .map_err(|_| io::Error::other("a new ring's submission queue is full"))?;
        self.submit_and_wait_one(Some(Duration::from_secs(1)))?;
        match self.ring.completion().next() {
            Some(cqe) if cqe.result() >= 0 => Ok(()),
            Some(cqe) => Err(io::Error::from_raw_os_error(-cqe.result())),
            None => Err(io::Error::other("io_uring completed no NOP within 1 s")),
        }
    }

    /// How many SQEs one round may use.
    pub fn round_capacity(&self) -> usize {
        self.ring.params().sq_entries() as usize
    }

    /// Submits what is queued and waits for a completion, at most `timeout` (`None`: no limit).
    fn submit_and_wait_one(&self, timeout: Option<Duration>) -> io::Result<()> {
        if timeout.is_none() && self.wait_flags.is_empty() {
            // Neither flag nor timeout: the plain wait, which kernels without EXT_ARG (5.11)
            // have too.
            return self.ring.submit_and_wait(1).map(drop);
        }
        let ts = timeout.map(types::Timespec::from);
        let args = match &ts {
            Some(ts) => types::SubmitArgs::new().timespec(ts),
            None => types::SubmitArgs::new(),
        };
        self.ring
            .submitter()
            .submit_with_args_and_flags(1, &args, self.wait_flags)
            .map(drop)
    }

    /// Submits what is queued, booking the completions that come meanwhile (between rounds
    /// only polls are in flight).
    fn flush_queued(&mut self) {
        while !self.ring.submission().is_empty() {
            if let Err(e) = self.ring.submit() {
                if !matches!(e.raw_os_error(), Some(libc::EINTR | libc::EBUSY)) {
                    warn!("io_uring submit failed: {e}");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            for cqe in self.ring.completion() {
                self.polls.note(cqe.user_data());
            }
        }
    }

    /// Pushes an entry that references no user memory, submitting first if the queue is full.
    fn push(&mut self, sqe: squeue::Entry) {
        // SAFETY: only POLL_ADD and POLL_REMOVE come here; they reference no user memory.
        unsafe {
            while self.ring.submission().push(&sqe).is_err() {
                let _ = self.ring.submit();
            }
        }
    }

    /// Pushes, for each `(target, from)` of `pass`, the target's items from round index
    /// `from` on; returns how many sends it pushed. [`reap`](Self::reap) must wait for them
    /// all before anything else touches the ring's sends or their memory.
    fn push_pass(&mut self, pool: &Pool, round: &Round, pass: &[(u32, u32)]) -> usize {
        // GSO messages point into these; they are not touched again until every operation of
        // this pass has completed, and never grow past the capacity reserved at start (a pass
        // has at most one message per SQE, and at most as many datagrams as the ring has
        // entries: the round's budget), so their elements do not move.
        self.iovecs.clear();
        self.msghdrs.clear();
        self.controls.clear();
        let mut pushed = 0usize;
        let registered = &self.registered;
        {
            let mut sq = self.ring.submission();
            for &(t, from) in pass {
                let rt = &round.targets[t as usize];
                let items = &round.items[from as usize..(rt.first + rt.count) as usize];
                // A GSO message's refusal must stop the chain like any failure: link rounds
                // that may hold one (a superset: a run needs a next datagram no longer).
                let gso = items.iter().any(|i| i.segment != 0)
                    || rt.gso && items.windows(2).any(|w| w[1].len <= w[0].len);
                let link = rt.linked || gso;
                let mut k = 0;
                while k < items.len() {
                    let index = from as usize + k;
                    let fd = Self::fd(registered, rt.slot, rt.fd);
                    let message = next_message(&items[k..], rt.gso);
                    let run = message.items;
                    let sqe = if message.segment == 0 {
                        let item = items[k];
                        let data = &pool.get(item.buf)[..item.len as usize];
                        let send = match fd {
                            FdRef::Fixed(f) => opcode::Send::new(f, data.as_ptr(), item.len),
                            FdRef::Raw(f) => opcode::Send::new(f, data.as_ptr(), item.len),
                        };
                        send.flags(libc::MSG_DONTWAIT)
                            .build()
                            .user_data(index as u64)
                    } else {
                        let iov_start = self.iovecs.len();
                        // Earlier messages of the round point into `iovecs`: it must not grow.
                        assert!(
                            iov_start + run <= self.iovecs.capacity(),
                            "a round holds at most as many datagrams as the ring has entries"
                        );
                        for item in &items[k..k + run] {
                            let data = &pool.get(item.buf)[..item.len as usize];
                            let iov_base = data.as_ptr() as *mut libc::c_void;
                            self.iovecs.push(libc::iovec {
                                iov_base,
                                iov_len: data.len(),
                            });
                        }
                        self.controls.push(GsoControl::new(message.segment));
                        let mut msg = sys::empty_msghdr();
                        msg.msg_iov = &mut self.iovecs[iov_start];
                        msg.msg_iovlen = run;
                        msg.msg_control = self
                            .controls
                            .last_mut()
                            .map_or(std::ptr::null_mut(), |c| (c as *mut GsoControl).cast());
                        msg.msg_controllen = std::mem::size_of::<GsoControl>();
                        self.msghdrs.push(msg);
                        let msg: *const libc::msghdr = &self.msghdrs[self.msghdrs.len() - 1];
                        let send = match fd {
                            FdRef::Fixed(f) => opcode::SendMsg::new(f, msg),
                            FdRef::Raw(f) => opcode::SendMsg::new(f, msg),
                        };
                        let user_data = index as u64 | ((run as u64) << RUN_SHIFT) | GSO_MESSAGE;
                        send.flags(libc::MSG_DONTWAIT as u32)
                            .build()
                            .user_data(user_data)
                    };
                    k += run;
                    // One chain per target when linked: in order, the first failure cancels the rest.
                    let sqe = if link && k < items.len() {
                        sqe.flags(squeue::Flags::IO_LINK)
                    } else {
                        sqe
                    };
                    // SAFETY: the datagrams borrow from `pool`, which `send_round`, our only
                    // caller, holds borrowed, unchanged, until it returns; a SENDMSG's msghdr,
                    // iovecs and control message live in `self`'s vectors, untouched until the
                    // next pass (see above). `send_round` reaps every operation pushed here
                    // before it pushes again or returns (the module's lifetime invariant).
                    // Passes are at most a round, sized to the ring, and start with the queue
                    // empty, so a chain is never split across submits.
                    if unsafe { sq.push(&sqe) }.is_err() {
                        // Not reached (see above). Anything not pushed stays `NOT_ATTEMPTED`.
                        break;
                    }
                    pushed += 1;
                }
            }
        }
        pushed
    }

    /// Waits for the `pushed` sends of a pass and books their outcomes in `round`.
    fn reap(&mut self, round: &mut Round, pushed: usize) {
        let mut left = pushed;
        while left > 0 {
            match self.submit_and_wait_one(None) {
                Ok(()) => {}
                Err(e)
                    if e.raw_os_error() == Some(libc::EINTR)
                        || e.raw_os_error() == Some(libc::EBUSY) => {}
                Err(e) => {
                    // Should not happen with a healthy ring; back off briefly, keep the invariant.
                    warn!("io_uring submit failed: {e}");
                    std::thread::sleep(Duration::from_millis(1));
                }
            }
            for cqe in self.ring.completion() {
                let user_data = cqe.user_data();
                if user_data & (TAG_WAKE | TAG_WRITABLE | TAG_REMOVE) != 0 {
                    self.polls.note(user_data);
                    continue;
                }
                left -= 1;
                let index = (user_data & INDEX_MASK) as usize;
                let gso = user_data & GSO_MESSAGE != 0;
                let run = ((user_data & !GSO_MESSAGE) >> RUN_SHIFT) as usize;
                let res = cqe.result();
                let items = index..index + run.max(1);
                if res >= 0 && run > 1 {
                    book_sent(
                        &mut round.outcomes[items.clone()],
                        &round.items[items],
                        res as u32,
                    );
                } else if gso && (res == -libc::EINVAL || res == -libc::EIO) {
                    round.outcomes[index] = GSO_REFUSED;
                } else if goes_on_after(res) {
                    // Each datagram of the message failed; the next pass goes on after them.
                    round.outcomes[items].fill(res);
                } else {
                    round.outcomes[index] = res;
                }
            }
        }
    }

    /// How the kernel finds `slot`'s socket: through the fixed-file table if it is there.
    fn fd(registered: &[bool], slot: u32, fd: RawFd) -> FdRef {
        if registered.get(slot as usize).copied().unwrap_or(false) {
            FdRef::Fixed(types::Fixed(slot))
        } else {
            FdRef::Raw(types::Fd(fd))
        }
    }
}

enum FdRef {
    Fixed(types::Fixed),
    Raw(types::Fd),
}

impl SendBackend for UringBackend {
    fn kind(&self) -> Backend {
        Backend::Uring
    }

    fn add_socket(&mut self, slot: u32, fd: RawFd) {
        if slot >= self.fixed_files {
            return;
        }
        let i = slot as usize;
        if self.registered.len() <= i {
            self.registered.resize(i + 1, false);
        }
        match self.ring.submitter().register_files_update(slot, &[fd]) {
            Ok(_) => self.registered[i] = true,
            // Not fatal: the plain fd works too, a little more slowly.
            Err(e) => warn!("io_uring: cannot register socket {fd} as fixed file {slot}: {e}; sending through the plain fd"),
        }
    }

    fn remove_socket(&mut self, slot: u32) {
        if self
            .polls
            .watching
            .get(slot as usize)
            .copied()
            .unwrap_or(false)
        {
            let remove = opcode::PollRemove::new(self.polls.writable_tag(slot))
                .build()
                .user_data(TAG_REMOVE);
            self.push(remove);
        }
        self.polls.forget(slot);
        if let Some(registered) = self.registered.get_mut(slot as usize) {
            if std::mem::take(registered) {
                let _ = self.ring.submitter().register_files_update(slot, &[-1]);
            }
        }
    }

    fn send_round(&mut self, pool: &Pool, round: &mut Round) {
        for rt in round.targets.iter().filter(|rt| rt.unix) {
            self.unix
                .send_target(pool, rt, &round.items, &mut round.outcomes);
        }
        // Entries `push` left queued (a retired slot's POLL_REMOVE) go first, so that the
        // round, sized to the ring, fits whole: a chain cut by a full queue would end in a link.
        self.flush_queued();
        // Unwinding from here to the end would free what queued sends point to while the
        // kernel may still read it: abort instead (a panic here is a bug of ours).
        let in_flight = crate::AbortOnUnwind("a panic in an io_uring round with sends in flight");
        let mut pass = std::mem::take(&mut self.pass);
        pass.clear();
        pass.extend(
            (0..round.targets.len() as u32)
                .filter(|&t| !round.targets[t as usize].unix)
                .map(|t| (t, round.targets[t as usize].first)),
        );
        // A UDP chain cut by a failure of one datagram alone (a closed port) goes on from
        // there in another pass, as the syscall backend does: each pass sends at least one
        // datagram more of each target in it.
        while !pass.is_empty() {
            let pushed = self.push_pass(pool, round, &pass);
            self.reap(round, pushed);
            pass.retain_mut(|(t, from)| {
                let rt = round.targets[*t as usize];
                let end = (rt.first + rt.count) as usize;
                let next = resume_at(&round.outcomes[..end], *from as usize);
                *from = next.unwrap_or(*from as usize) as u32;
                next.is_some()
            });
        }
        self.pass = pass;
        std::mem::forget(in_flight);
    }

    fn watch_writable(&mut self, slot: u32, fd: RawFd) {
        let watching = &mut self.polls.watching;
        let i = slot as usize;
        if watching.len() <= i {
            watching.resize(i + 1, false);
        }
        if watching[i] {
            return;
        }
        watching[i] = true;
        let poll = match Self::fd(&self.registered, slot, fd) {
            FdRef::Fixed(f) => opcode::PollAdd::new(f, libc::POLLOUT as u32),
            FdRef::Raw(f) => opcode::PollAdd::new(f, libc::POLLOUT as u32),
        };
        let tag = self.polls.writable_tag(slot);
        self.push(poll.build().user_data(tag));
    }

    fn wait(
        &mut self,
        wake: &EventFd,
        timeout: Option<Duration>,
        ready: &mut Vec<u32>,
    ) -> io::Result<()> {
        let nothing_yet = self.polls.ready.is_empty() && !self.polls.woken;
        if !self.polls.wake_armed {
            self.polls.wake_armed = true;
            self.push(
                opcode::PollAdd::new(types::Fd(wake.as_raw_fd()), libc::POLLIN as u32)
                    .build()
                    .user_data(TAG_WAKE),
            );
        }
        let result = match timeout {
            _ if !nothing_yet => self.ring.submit().map(drop),
            Some(t) if t.is_zero() => self.ring.submit().map(drop),
            _ => self.submit_and_wait_one(timeout),
        };
        match result {
            Err(e)
                if !matches!(
                    e.raw_os_error(),
                    Some(libc::ETIME | libc::EINTR | libc::EBUSY)
                ) =>
            {
                return Err(e)
            }
            _ => {}
        }
        for cqe in self.ring.completion() {
            self.polls.note(cqe.user_data());
        }
        if std::mem::take(&mut self.polls.woken) {
            wake.drain();
        }
        ready.append(&mut self.polls.ready);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Instant;

    use crate::reactor::SendBackend;

    /// Tasks in iowait now, machine-wide: `procs_blocked` of `/proc/stat`.
    fn procs_blocked() -> u64 {
        let stat = std::fs::read_to_string("/proc/stat").expect("/proc/stat");
        stat.lines()
            .find_map(|l| l.strip_prefix("procs_blocked "))
            .and_then(|n| n.trim().parse().ok())
            .expect("procs_blocked in /proc/stat")
    }

    #[test]
    fn a_reactor_parked_on_its_ring_is_not_counted_as_waiting_for_io() {
        // With its wake poll always in flight, a waiting ring is in iowait unless told not to
        // be: an idle dispatcher then showed as a task blocked on I/O (vmstat's `b`, `wa` at a
        // CPU's worth, /proc/pressure/io). Kernels before 6.15 cannot be told.
        let Ok(backend) = UringBackend::new(8) else {
            eprintln!("skipped: io_uring is not available here");
            return;
        };
        if !backend.ring.params().is_feature_no_iowait() {
            eprintln!("skipped: this kernel has no IORING_ENTER_NO_IOWAIT (6.15+)");
            return;
        }
        drop(backend);
        // Other tasks may be in iowait now and then (or always: another program's ring); the
        // waiter, if counted, raises the floor of the samples by one.
        let floor = |samples: &[u64]| samples.iter().copied().min().expect("samples");
        let sample = || -> Vec<u64> {
            (0..30)
                .map(|_| {
                    std::thread::sleep(Duration::from_millis(10));
                    procs_blocked()
                })
                .collect()
        };
        let before = sample();
        let parked = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let waiter = {
            let parked = std::sync::Arc::clone(&parked);
            std::thread::spawn(move || {
                let mut backend = UringBackend::new(8).expect("io_uring worked a moment ago");
                let wake = EventFd::new().expect("eventfd");
                parked.store(true, std::sync::atomic::Ordering::Release);
                let started = Instant::now();
                backend
                    .wait(&wake, Some(Duration::from_millis(800)), &mut Vec::new())
                    .expect("wait");
                started.elapsed()
            })
        };
        while !parked.load(std::sync::atomic::Ordering::Acquire) {
            std::thread::yield_now();
        }
        std::thread::sleep(Duration::from_millis(50));
        let during = sample();
        let waited = waiter.join().expect("waiter");
        assert!(
            waited >= Duration::from_millis(500),
            "the wait ended early ({waited:?}): the samples are not of a parked ring"
        );
        assert!(
            floor(&during) <= floor(&before),
            "tasks in iowait: {before:?} before the ring waited, {during:?} while it waited"
        );
    }

    #[test]
    fn a_poll_of_a_slot_s_earlier_socket_does_not_stand_for_its_next_one() {
        // Slot 3's socket waits for writability; it is removed, and a new target takes the
        // slot and waits for its own poll.
        let mut polls = Polls::default();
        let old = polls.writable_tag(3);
        polls.forget(3);
        let new = polls.writable_tag(3);
        assert_ne!(old, new);
        polls.watching = vec![false, false, false, true];
        // The old poll's completion (cancelled, or done before the removal) comes in.
        polls.note(old);
        assert_eq!((polls.watching[3], polls.ready.len()), (true, 0));
        polls.note(new);
        assert_eq!(
            (polls.watching[3], polls.ready.as_slice()),
            (false, &[3][..])
        );
    }
}
