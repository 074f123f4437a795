//! One target's datagrams of a round sent with `sendmmsg`: how the `syscall` backend sends to
//! every target, and the `uring` backend to UNIX ones. A UNIX send completes in the call
//! either way (it copies into the receiver's queue or is refused), so io_uring brings it no
//! overlap, only a submission per datagram, and, in the chain that keeps them in order, a
//! cancellation for every datagram after a full receiver's refusal; one `sendmmsg` stops at
//! that refusal by itself.

use std::io;

use super::pool::Pool;
use super::round::{book_sent, goes_on_after, next_message, Item, RoundTarget, GSO_REFUSED};
use crate::sys::{self, GsoControl};

/// The most messages one `sendmmsg` sends (the kernel's `UIO_MAXIOV`).
const MAX_MESSAGES_PER_CALL: usize = 1024;

/// Scratch for the messages of one target, reused for every target and round.
pub(crate) struct MmsgSender {
    msgs: Vec<libc::mmsghdr>,
    iovs: Vec<libc::iovec>,
    controls: Vec<GsoControl>,
    /// Per message of the target being sent: its first item, how many it carries, and its
    /// GSO segment size (0: none).
    runs: Vec<(usize, usize, u16)>,
}

impl MmsgSender {
    /// Scratch for up to `max_per_target` datagrams of a target a round (more stay
    /// `NOT_ATTEMPTED`).
    pub fn new(max_per_target: usize) -> Self {
        let iov = libc::iovec {
            iov_base: std::ptr::null_mut(),
            iov_len: 0,
        };
        MmsgSender {
            msgs: vec![sys::empty_mmsghdr(); max_per_target],
            iovs: vec![iov; max_per_target],
            controls: vec![GsoControl::new(0); max_per_target],
            runs: Vec::with_capacity(max_per_target),
        }
    }

    /// Sends `rt`'s items of the round (`items`, `outcomes`: the whole round's) and books
    /// each one's outcome.
    pub fn send_target(
        &mut self,
        pool: &Pool,
        rt: &RoundTarget,
        items: &[Item],
        outcomes: &mut [i32],
    ) {
        let first = rt.first as usize;
        let n = (rt.count as usize).min(self.iovs.len());
        let items = &items[first..first + n];
        let outcomes = &mut outcomes[first..first + n];
        for (iov, item) in self.iovs.iter_mut().zip(items) {
            let data = &pool.get(item.buf)[..item.len as usize];
            *iov = libc::iovec {
                iov_base: data.as_ptr() as *mut _,
                iov_len: data.len(),
            };
        }
        // One message per datagram, or per run of datagrams with GSO.
        self.runs.clear();
        let mut k = 0;
        while k < n {
            let m = next_message(&items[k..], rt.gso);
            self.runs.push((k, m.items, m.segment));
            k += m.items;
        }
        for (m, &(start, len, segment)) in self.runs.iter().enumerate() {
            let msg = &mut self.msgs[m];
            *msg = sys::empty_mmsghdr();
            msg.msg_hdr.msg_iov = &mut self.iovs[start];
            msg.msg_hdr.msg_iovlen = len;
            if segment != 0 {
                self.controls[m] = GsoControl::new(segment);
                msg.msg_hdr.msg_control = (&mut self.controls[m] as *mut GsoControl).cast();
                msg.msg_hdr.msg_controllen = std::mem::size_of::<GsoControl>();
            }
        }
        let messages = self.runs.len();
        let mut done = 0;
        while done < messages {
            // The kernel takes at most UIO_MAXIOV messages a call, and says nothing of
            // the rest: ask for no more, so that a short count means a refusal.
            let asked = (messages - done).min(MAX_MESSAGES_PER_CALL);
            match sys::sendmmsg(rt.fd, &mut self.msgs[done..done + asked]) {
                Ok(sent) => {
                    for (msg, &(start, len, _)) in
                        self.msgs[done..done + sent].iter().zip(&self.runs[done..])
                    {
                        let outcomes = &mut outcomes[start..start + len];
                        book_sent(outcomes, &items[start..start + len], msg.msg_len);
                    }
                    done += sent;
                    if sent < asked && (rt.unix || sent == 0) {
                        // The next message failed and its error is lost: to a UNIX
                        // receiver almost always a full one. Book it as one (it stays
                        // first in the queue; the next round sends it or gets its error)
                        // rather than ask again: that would cost a call, and the kernel a
                        // refused datagram, in every round that fills a UNIX receiver.
                        let (start, _, _) = self.runs[done];
                        outcomes[start] = -libc::EAGAIN;
                        break;
                    }
                    // UDP: ask again from the message that failed. Its error is most often
                    // a closed port reported by the datagram before it (ECONNREFUSED),
                    // which that failure consumed: then it goes out now. Else the call
                    // fails at once, with its own error, booked below.
                }
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    let errno = e.raw_os_error().unwrap_or(libc::EIO);
                    let (start, len, segment) = self.runs[done];
                    if segment != 0 && matches!(errno, libc::EINVAL | libc::EIO) {
                        outcomes[start] = GSO_REFUSED;
                        break;
                    }
                    if rt.unix || !goes_on_after(-errno) {
                        outcomes[start] = -errno;
                        break;
                    }
                    // A failure of this message alone: each of its datagrams failed,
                    // the next messages go on.
                    outcomes[start..start + len].fill(-errno);
                    done += 1;
                }
            }
        }
    }
}
