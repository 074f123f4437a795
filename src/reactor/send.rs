//! Sending: one round of the head of every ready queue through the backend, then each
//! target's outcomes booked in order (sent, failed, or kept for a retry).

use std::io;
use std::os::fd::AsRawFd;
use std::time::Instant;

use super::pool::Pool;
use super::round::{Item, RoundTarget, GSO_REFUSED, NOT_ATTEMPTED};
use super::socket::{SendFailure, Socket};
use super::{log_limited, Conn, Queued, Reactor, SendBackend, Slot, MIN_WINDOW, RECONNECT_MIN};

impl<B: SendBackend> Reactor<B> {
    /// Sends the head of every active queue, then books the outcomes.
    pub(super) fn send_round(&mut self) {
        self.round.clear();
        let mut active = std::mem::take(&mut self.active);
        let mut budget = self.round_budget;
        let mut served = 0;
        for &slot_index in &active {
            if budget == 0 {
                break;
            }
            served += 1;
            let slot = self.slots[slot_index as usize]
                .as_ref()
                .expect("active slots exist");
            let Conn::Up(sock) = &slot.conn else { continue };
            let count = slot.queue.len().min(slot.window as usize).min(budget);
            if count == 0 {
                continue;
            }
            budget -= count;
            self.round.targets.push(RoundTarget {
                slot: slot_index,
                fd: sock.as_raw_fd(),
                first: self.round.items.len() as u32,
                count: count as u32,
                gso: slot.gso,
                linked: slot.linked,
                unix: sock.is_unix(),
            });
            for q in slot.queue.iter().take(count) {
                self.round.items.push(Item {
                    buf: q.buf.index(),
                    len: q.len,
                    segment: q.segment,
                });
            }
        }
        self.round
            .outcomes
            .resize(self.round.items.len(), NOT_ATTEMPTED);
        self.backend.send_round(&self.pool, &mut self.round);
        for t in 0..self.round.targets.len() {
            let rt = self.round.targets[t];
            self.book(rt);
        }
        // Keep in the active list only slots that still have something to send now, those left
        // out of this round (out of budget) first, so that every target gets its turn.
        active.rotate_left(served);
        active.retain(|&i| {
            let slot = self.slots[i as usize].as_mut().expect("active slots exist");
            let keep = !slot.queue.is_empty() && !slot.blocked && matches!(slot.conn, Conn::Up(_));
            slot.active = keep;
            keep
        });
        self.active = active;
    }

    /// Applies one target's outcomes, in order.
    fn book(&mut self, rt: RoundTarget) {
        let slot = self.slots[rt.slot as usize]
            .as_mut()
            .expect("round slots exist");
        if self.round.outcomes[(rt.first + rt.count - 1) as usize] >= 0 {
            // Everything went out: the receiver is not full.
            slot.full.took_all();
            if rt.count == slot.window {
                // The whole window: open it up again.
                slot.window = (slot.window * 2).min(self.max_per_target as u32);
            }
        }
        let first = rt.first as usize;
        for k in 0..rt.count as usize {
            let outcome = self.round.outcomes[first + k];
            if outcome == NOT_ATTEMPTED {
                break;
            }
            let front_len = slot.queue.front().expect("round items are queued").len;
            if outcome >= 0 && outcome as u32 == front_len {
                let q = slot.queue.pop_front().expect("checked above");
                q.count_sent(&mut slot.counters);
                self.pool.release(q.buf);
                continue;
            }
            if outcome == GSO_REFUSED {
                // This socket's path does not take GSO (e.g. segments over its MTU): go on
                // without it; the datagrams stay queued, in order, for the next round.
                slot.gso = false;
                slot.counters.gso_refused += 1;
                let rest = &self.round.outcomes[first + k + 1..first + rt.count as usize];
                Self::settle_rest(slot, &mut self.pool, rest);
                Self::split_runs(slot, &mut self.pool);
                break;
            }
            let failure = if outcome >= 0 {
                SendFailure::Other
            } else {
                SendFailure::of(-outcome)
            };
            if failure == SendFailure::WouldBlock {
                // What fit before the receiver filled up is about what fits next time: do not
                // submit sends that are sure to be refused.
                slot.window = (k as u32 + 1).max(MIN_WINDOW);
                slot.linked = true;
                // While retrying, the slot stays active: the next round tries again.
                if !slot.full.refused(k > 0, front_len, Instant::now()) {
                    slot.blocked = true;
                    self.blocked += 1;
                    if let Conn::Up(sock) = &slot.conn {
                        self.backend.watch_writable(rt.slot, sock.as_raw_fd());
                    }
                }
                let rest = &self.round.outcomes[first + k + 1..first + rt.count as usize];
                Self::settle_rest(slot, &mut self.pool, rest);
                break;
            }
            let unix = matches!(&slot.conn, Conn::Up(s) if s.is_unix());
            if failure == SendFailure::Unreachable
                && unix
                && Self::reconnect_at_once(&mut self.backend, rt.slot, slot)
            {
                // The receiver came back at its path (restarted): this datagram and the rest
                // of the round never reached it; they go out on the new socket next round.
                let rest = &self.round.outcomes[first + k + 1..first + rt.count as usize];
                Self::settle_rest(slot, &mut self.pool, rest);
                break;
            }
            let q = slot.queue.pop_front().expect("checked above");
            q.count_failed(&mut slot.counters, failure);
            self.pool.release(q.buf);
            let err = if outcome >= 0 {
                io::Error::other(format!("short send: {outcome} of {front_len} bytes"))
            } else {
                io::Error::from_raw_os_error(-outcome)
            };
            log_limited(&mut slot.last_log, &slot.target, &err);
            if failure == SendFailure::Unreachable && unix {
                // The receiver is gone: a connected UNIX socket stays refused until reconnected.
                Self::take_down(
                    &mut self.backend,
                    &mut self.pool,
                    rt.slot,
                    slot,
                    RECONNECT_MIN,
                );
                self.next_retry = self.next_reconnect();
                break;
            }
        }
    }

    /// A connected UNIX socket is refused once its receiver's socket is gone, even when a new
    /// receiver is bound at the path by then (a restart): connects again at once, and returns
    /// true if that worked, the new socket in place of the old. At most once per
    /// [`RECONNECT_MIN`], so that a receiver that takes a connection and refuses the sends
    /// does not keep the reactor connecting.
    fn reconnect_at_once(backend: &mut B, index: u32, slot: &mut Slot) -> bool {
        let now = Instant::now();
        if slot
            .reconnected
            .is_some_and(|at| now.duration_since(at) < RECONNECT_MIN)
        {
            return false;
        }
        let Ok(sock) = Socket::connect(&slot.target) else {
            return false;
        };
        backend.remove_socket(index);
        backend.add_socket(index, sock.as_raw_fd());
        // The old socket closes here, after the backend let go of it.
        slot.conn = Conn::Up(sock);
        slot.reconnected = Some(now);
        true
    }

    /// After a round stopped at the front datagram (kept for a retry), books what the round
    /// still did with the datagrams behind it (`rest`, their outcomes in queue order). In a
    /// chain, nothing: they were cancelled. Unlinked, some may have gone out or failed anyway:
    /// they leave the queue, counted, so that nothing is sent twice.
    fn settle_rest(slot: &mut Slot, pool: &mut Pool, rest: &[i32]) {
        if rest.iter().all(|&o| o == NOT_ATTEMPTED) {
            return;
        }
        let Slot {
            queue, counters, ..
        } = slot;
        let mut pos = 0usize;
        queue.retain(|q| {
            pos += 1;
            // Position 1 is the front, kept; then the rest of the round; then later datagrams.
            let Some(&outcome) = pos.checked_sub(2).and_then(|i| rest.get(i)) else {
                return true;
            };
            let failure = (outcome < 0).then(|| SendFailure::of(-outcome));
            if outcome == NOT_ATTEMPTED
                || outcome == GSO_REFUSED
                || failure == Some(SendFailure::WouldBlock)
            {
                return true;
            }
            match failure {
                None if outcome as u32 == q.len => q.count_sent(counters),
                // A short send.
                None => q.count_failed(counters, SendFailure::Other),
                Some(failure) => q.count_failed(counters, failure),
            }
            pool.release_in_place(&q.buf);
            false
        });
    }

    /// Replaces each GSO run queued for a slot by its datagrams, one by one, in order (the
    /// slot's socket refused GSO). Rare enough to copy and allocate.
    fn split_runs(slot: &mut Slot, pool: &mut Pool) {
        if slot.queue.iter().all(|q| q.segment == 0) {
            return;
        }
        for q in std::mem::take(&mut slot.queue).drain() {
            if q.segment == 0 {
                slot.queue.push_back(q);
                continue;
            }
            let mut at = 0;
            while at < q.len {
                let len = q.segment.min(q.len - at);
                let buf = pool.alloc(len as usize);
                pool.copy(&buf, 0, &q.buf, at as usize, len as usize);
                slot.queue.push_back(Queued::single(buf, len));
                at += len;
            }
            pool.release(q.buf);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::reactor::{outbox::Outbox, retry::FullReceiver, syscall::SyscallBackend};
    use crate::stats::TargetCounters;

    fn slot_with(pool: &mut Pool, lens: &[u32]) -> Slot {
        let mut slot = Slot {
            target: "udp:127.0.0.1:9".parse().unwrap(),
            conn: Conn::Down {
                retry_at: Instant::now(),
                backoff: RECONNECT_MIN,
            },
            queue: Outbox::default(),
            blocked: false,
            active: false,
            referenced: true,
            retire_by: None,
            gso: false,
            open: None,
            linked: false,
            window: MIN_WINDOW,
            counters: TargetCounters::default(),
            last_log: None,
            reconnected: None,
            full: FullReceiver::default(),
        };
        for &len in lens {
            let buf = pool.alloc(len as usize);
            slot.queue.push_back(Queued::single(buf, len));
        }
        slot
    }

    fn lens(slot: &Slot) -> Vec<u32> {
        slot.queue.iter().map(|q| q.len).collect()
    }

    type R = Reactor<SyscallBackend>;

    #[test]
    fn after_an_unlinked_stop_what_went_out_anyway_leaves_the_queue_counted_once() {
        let mut pool = Pool::new(1 << 20, 0);
        let mut slot = slot_with(&mut pool, &[10, 11, 12, 13, 14, 15]);
        // The round held 10..=14; 10 met EAGAIN (the front, kept); behind it 11 went out,
        // 12 met EAGAIN, 13 was refused, 14 went out. 15 was not in the round.
        let rest = [11, -libc::EAGAIN, -libc::ECONNREFUSED, 14];
        R::settle_rest(&mut slot, &mut pool, &rest);
        assert_eq!(
            lens(&slot),
            [10, 12, 15],
            "kept for a retry, in order; nothing sent twice"
        );
        let c = slot.counters;
        assert_eq!(
            (c.sent, c.datagrams, c.bytes, c.failed_unreachable),
            (2, 2, 25, 1)
        );
    }

    #[test]
    fn refused_runs_are_split_into_their_datagrams_in_order() {
        let mut pool = Pool::new(1 << 20, 0);
        let mut slot = slot_with(&mut pool, &[3]);
        let run = pool.alloc(64);
        pool.bytes_mut(&run)[..8].copy_from_slice(b"aaabbbcc");
        slot.queue.push_back(Queued {
            buf: run,
            len: 8,
            events: 3,
            segment: 3,
        });
        let tail = pool.alloc(4);
        slot.queue.push_back(Queued::single(tail, 4));
        R::split_runs(&mut slot, &mut pool);
        let got: Vec<(u32, u32, Vec<u8>)> = slot
            .queue
            .iter()
            .map(|q| {
                (
                    q.len,
                    q.segment,
                    pool.get(q.buf.index())[..q.len as usize].to_vec(),
                )
            })
            .collect();
        assert_eq!(got.len(), 5);
        assert_eq!(
            got[1..4],
            [
                (3, 0, b"aaa".to_vec()),
                (3, 0, b"bbb".to_vec()),
                (2, 0, b"cc".to_vec())
            ]
        );
        assert_eq!((got[0].0, got[4].0), (3, 4), "the others stay, in place");
        let events: u32 = slot.queue.iter().map(|q| q.events).sum();
        assert_eq!(events, 5, "as many events as before");
    }

    #[test]
    fn after_a_stop_in_a_chain_the_cancelled_rest_stays_queued() {
        let mut pool = Pool::new(1 << 20, 0);
        let mut slot = slot_with(&mut pool, &[10, 11, 12]);
        R::settle_rest(&mut slot, &mut pool, &[NOT_ATTEMPTED, NOT_ATTEMPTED]);
        assert_eq!(lens(&slot), [10, 11, 12]);
        assert_eq!(slot.counters, TargetCounters::default());
    }

    // End to end, through a dispatcher on each backend: UDP GSO in use, and refused.

    use std::net::{SocketAddr, UdpSocket};
    use std::time::Duration;

    use crate::{BackendChoice, Dispatcher, DispatcherConfig, EventId, Expiry, Format, Params};

    const LIMIT: Duration = Duration::from_secs(20);
    /// Events raised at once: the reactor takes several of them in one batch.
    const BURST: u64 = 64;

    /// Both backends; `uring` only where io_uring is allowed (said when skipped).
    fn backends() -> Vec<BackendChoice> {
        let uring = DispatcherConfig {
            backend: BackendChoice::Uring,
            ..Default::default()
        };
        match Dispatcher::start(uring) {
            Ok(_) => vec![BackendChoice::Syscall, BackendChoice::Uring],
            Err(e) => {
                eprintln!("SKIPPED: the uring backend is unavailable here ({e}); syscall only");
                vec![BackendChoice::Syscall]
            }
        }
    }

    /// A UDP receiver on loopback; with UDP GRO when `gro`, so that a GSO message arrives
    /// whole, all its datagrams in one read.
    fn receiver(gro: bool) -> (UdpSocket, crate::Target) {
        let sock = UdpSocket::bind("127.0.0.1:0").expect("bind");
        if gro {
            let fd = sock.as_raw_fd();
            crate::sys::set_int_option(fd, libc::SOL_UDP, libc::UDP_GRO, 1).expect("UDP_GRO");
        }
        sock.set_read_timeout(Some(LIMIT)).expect("read timeout");
        let target = crate::Target::Udp(sock.local_addr().expect("address"));
        (sock, target)
    }

    /// Event `i`'s datagram: every event of these tests encodes to the same length, a few
    /// dozen bytes (read for every event a test checks: no 64 KiB buffer each time).
    fn datagram(name: &str, i: u64) -> Vec<u8> {
        let mut buf = vec![0; 256];
        let n = Format::Line
            .encode(name, &numbered(i), &mut buf)
            .expect("encodes");
        buf.truncate(n);
        buf
    }

    fn numbered(i: u64) -> Params {
        Params::new().str("seq", &format!("{i:06}")).expect("param")
    }

    /// Raises events `from..from + BURST` of each of `events`, in turn.
    fn burst(d: &Dispatcher, events: &[EventId], from: u64) {
        for i in from..from + BURST {
            for &e in events {
                d.raise(e, numbered(i)).expect("raised");
            }
        }
    }

    /// Reads `sock` until it holds the datagrams of events `from..from + BURST` of `name`:
    /// checks they are those, byte for byte and in order, and returns the most a read held.
    fn read_burst(sock: &UdpSocket, name: &str, from: u64, case: &str) -> usize {
        let want: Vec<u8> = (from..from + BURST)
            .flat_map(|i| datagram(name, i))
            .collect();
        let len = datagram(name, from).len();
        let (mut got, mut most) = (Vec::new(), 0);
        let mut buf = vec![0; 1 << 16];
        while got.len() < want.len() {
            let n = sock.recv(&mut buf).expect("the datagrams arrive");
            assert_eq!(
                n % len,
                0,
                "{case}: a read of {n} bytes is not whole datagrams"
            );
            most = most.max(n / len);
            got.extend_from_slice(&buf[..n]);
        }
        assert!(got == want, "{case}: {name}: datagrams differ");
        most
    }

    /// With `udp_gso`, equal-size datagrams to one UDP target leave as GSO messages, whether
    /// the target is an event's only subscriber (its events are encoded into runs) or one of
    /// several (its queued datagrams are grouped); without it, one by one. A receiver with UDP
    /// GRO tells them apart: it reads a GSO message whole. (The delivery tests cannot: their
    /// receivers get the same datagrams either way, and passed with GSO never used.)
    #[test]
    fn udp_gso_sends_equal_size_datagrams_in_one_message_only_when_on() {
        for backend in backends() {
            for udp_gso in [true, false] {
                let case = format!("{backend:?}, udp_gso {udp_gso}");
                let config = DispatcherConfig {
                    backend,
                    udp_gso,
                    ..Default::default()
                };
                let d = Dispatcher::start(config).expect("starts");
                let [sole, shared] = ["E_SOLE", "E_SHARED"].map(|n| d.publish(n).expect("name"));
                let rx = [receiver(true), receiver(true), receiver(true)];
                d.subscribe(sole, rx[0].1.clone(), Expiry::Never).unwrap();
                for (_, target) in &rx[1..] {
                    d.subscribe(shared, target.clone(), Expiry::Never).unwrap();
                }
                // GSO needs several events of a target in one round: bursts until each
                // target had a read of several datagrams (or a few, without GSO).
                let (mut raised, mut grouped) = (0, [false; 3]);
                while raised < if udp_gso { 50 * BURST } else { 5 * BURST } {
                    burst(&d, &[sole, shared], raised);
                    for (k, (sock, _)) in rx.iter().enumerate() {
                        let name = if k == 0 { "E_SOLE" } else { "E_SHARED" };
                        grouped[k] |= read_burst(sock, name, raised, &case) > 1;
                    }
                    raised += BURST;
                    if udp_gso && grouped == [true; 3] {
                        break;
                    }
                }
                assert_eq!(grouped, [udp_gso; 3], "{case}: GSO messages received");
                let stats = d.shutdown();
                for (_, target) in &rx {
                    let c = stats.target(target).expect("known");
                    let got = (c.sent, c.datagrams, c.gso_refused);
                    assert_eq!(got, (raised, raised, 0), "{case}: {c:?}");
                }
                assert!(stats.is_balanced(), "{case}: {stats:?}");
            }
        }
    }

    /// Sockets to these destinations refuse GSO (see `REFUSE_GSO_TO`) until dropped.
    struct RefuseGso(Vec<SocketAddr>);

    impl RefuseGso {
        fn to(addrs: Vec<SocketAddr>) -> RefuseGso {
            let mut list = crate::reactor::socket::REFUSE_GSO_TO.lock().unwrap();
            list.extend(&addrs);
            RefuseGso(addrs)
        }
    }

    impl Drop for RefuseGso {
        fn drop(&mut self) {
            let mut list = crate::reactor::socket::REFUSE_GSO_TO.lock().unwrap();
            list.retain(|a| !self.0.contains(a));
        }
    }

    /// A path that refuses GSO (`EINVAL` or `EIO`; here a socket without UDP checksums, which
    /// the kernel refuses with `EINVAL`): GSO goes off for that target, counted once in
    /// `gso_refused`, and its datagrams go out one by one, byte-identical and in order, none
    /// failed or lost; as an event's only subscriber (its runs are split) and as one of
    /// several. A target whose path takes GSO keeps it.
    #[test]
    fn a_target_whose_path_refuses_gso_gets_every_datagram_and_the_refusal_is_counted() {
        for backend in backends() {
            let case = format!("{backend:?}");
            let rx = [receiver(false), receiver(false), receiver(true)];
            let addr = |k: usize| rx[k].0.local_addr().expect("address");
            let _refusing = RefuseGso::to(vec![addr(0), addr(1)]);
            let config = DispatcherConfig {
                backend,
                udp_gso: true,
                ..Default::default()
            };
            let d = Dispatcher::start(config).expect("starts");
            let [sole, shared] = ["E_SOLE", "E_SHARED"].map(|n| d.publish(n).expect("name"));
            d.subscribe(sole, rx[0].1.clone(), Expiry::Never).unwrap();
            for (_, target) in &rx[1..] {
                d.subscribe(shared, target.clone(), Expiry::Never).unwrap();
            }
            let refused =
                |d: &Dispatcher, k: usize| d.stats().target(&rx[k].1).map_or(0, |c| c.gso_refused);
            let (mut raised, mut grouped) = (0, false);
            while raised < 50 * BURST {
                burst(&d, &[sole, shared], raised);
                for (k, (sock, _)) in rx.iter().enumerate() {
                    let name = if k == 0 { "E_SOLE" } else { "E_SHARED" };
                    let most = read_burst(sock, name, raised, &case);
                    if k == 2 {
                        grouped |= most > 1;
                    }
                }
                raised += BURST;
                if grouped && refused(&d, 0) > 0 && refused(&d, 1) > 0 {
                    break;
                }
            }
            // Once more with GSO off for the refusing targets.
            burst(&d, &[sole, shared], raised);
            for (k, (sock, _)) in rx.iter().enumerate() {
                let name = if k == 0 { "E_SOLE" } else { "E_SHARED" };
                read_burst(sock, name, raised, &case);
            }
            raised += BURST;
            assert!(grouped, "{case}: the other target lost GSO");
            let stats = d.shutdown();
            for (k, want_refused) in [(0, 1), (1, 1), (2, 0)] {
                let c = stats.target(&rx[k].1).expect("known");
                let got = (c.sent, c.datagrams, c.failed(), c.dropped(), c.gso_refused);
                assert_eq!(got, (raised, raised, 0, 0, want_refused), "{case}: {c:?}");
            }
            assert!(stats.is_balanced(), "{case}: {stats:?}");
        }
    }
}
