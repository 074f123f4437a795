//! A send round: the datagrams the reactor hands the backend at once, per target, and how a
//! target's datagrams are cut into messages (one datagram each, or a UDP GSO message).

use std::os::fd::RawFd;

use super::socket::SendFailure;

/// A datagram in a round, or a GSO run of them: its buffer's index and length.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Item {
    pub buf: u32,
    pub len: u32,
    /// For a run (see [`Queued::segment`](super::Queued::segment)): the size of its
    /// datagrams; 0 for one datagram.
    pub segment: u32,
}

/// One target's part of a round: `items[first..first + count]`, sent on `fd`.
#[derive(Clone, Copy, Debug)]
pub(crate) struct RoundTarget {
    pub slot: u32,
    pub fd: RawFd,
    pub first: u32,
    pub count: u32,
    /// Send runs of equal-size datagrams as one UDP GSO message (see [`next_message`]).
    pub gso: bool,
    /// The sends must form one chain that stops at the first failure (see `Slot::linked`).
    pub linked: bool,
    /// A UNIX socket: a refused send means its receiver is gone (see [`goes_on_after`]).
    pub unix: bool,
}

/// The outcome of an item that the kernel was never asked to send.
pub(crate) const NOT_ATTEMPTED: i32 = -libc::ECANCELED;

/// The outcome of the items of a GSO message that the kernel refused (`EINVAL`, `EIO`): they
/// are sent again without GSO, which stays off for that socket.
pub(crate) const GSO_REFUSED: i32 = i32::MIN;

/// Whether a UDP target's sending goes on past a datagram whose send failed with `outcome`:
/// yes for a failure of that datagram alone (a closed port reported by an earlier one,
/// `ECONNREFUSED`; too large; any other errno: counted, as DESIGN says, "keep going"), no for a
/// full socket (kept for a retry, nothing may overtake it) or a GSO refusal (sent again
/// without GSO, in order). A UNIX target's refusal means its receiver is gone: it stops.
pub(crate) fn goes_on_after(outcome: i32) -> bool {
    outcome < 0
        && outcome != NOT_ATTEMPTED
        && outcome != GSO_REFUSED
        && SendFailure::of(-outcome) != SendFailure::WouldBlock
}

/// Books the items of a message the kernel took, `bytes` bytes of it: each sent, or, should
/// it have taken part of a message (never seen with datagrams), the first failed as a short
/// send and the others as failed, so that none is sent again.
pub(crate) fn book_sent(outcomes: &mut [i32], items: &[Item], bytes: u32) {
    if bytes == items.iter().map(|i| i.len).sum::<u32>() {
        for (outcome, item) in outcomes.iter_mut().zip(items) {
            *outcome = item.len as i32;
        }
    } else {
        outcomes[0] = if bytes == items[0].len {
            // One byte short of it would still read as sent: keep it a failure.
            -libc::EIO
        } else {
            bytes as i32
        };
        outcomes[1..].fill(-libc::EIO);
    }
}

/// Where a UDP target's sends that a pass started at round index `from` go on: the first
/// item the kernel was not asked to send, if the one before it failed alone (see
/// [`goes_on_after`]); `None` when it sent everything or stopped for good this round.
pub(crate) fn resume_at(outcomes: &[i32], from: usize) -> Option<usize> {
    let next = from + outcomes[from..].iter().position(|&o| o == NOT_ATTEMPTED)?;
    (next > from && goes_on_after(outcomes[next - 1])).then_some(next)
}

/// Segments in one GSO message (the kernel's `UDP_MAX_SEGMENTS` is 64 on older kernels).
pub(super) const GSO_MAX_SEGMENTS: usize = 64;
/// Bytes in one GSO message: a UDP payload's limit, with room for headers.
pub(super) const GSO_MAX_BYTES: usize = 65_000;

/// One `sendmsg` of a target's round: `items` items from the first given, and the UDP GSO
/// segment size when it carries several datagrams (0: it is one datagram).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Message {
    pub items: usize,
    pub segment: u16,
}

/// The message that sends the start of `items`: a run alone (it is its own GSO message);
/// with `gso`, consecutive datagrams of one size (the last may be shorter, as the kernel
/// allows); otherwise one datagram.
pub(crate) fn next_message(items: &[Item], gso: bool) -> Message {
    let Some(first) = items.first() else {
        return Message {
            items: 0,
            segment: 0,
        };
    };
    if first.segment != 0 {
        return Message {
            items: 1,
            segment: first.segment as u16,
        };
    }
    let size = first.len as usize;
    let mut n = 1;
    let mut bytes = size;
    while gso && n < items.len() && n < GSO_MAX_SEGMENTS {
        let Item { len, segment, .. } = items[n];
        let len = len as usize;
        if segment != 0 || len > size || bytes + len > GSO_MAX_BYTES {
            break;
        }
        bytes += len;
        n += 1;
        if len < size {
            break;
        }
    }
    Message {
        items: n,
        segment: if n > 1 { size as u16 } else { 0 },
    }
}

/// One send round; vectors are reused, so rounds do not allocate.
#[derive(Default)]
pub(crate) struct Round {
    pub items: Vec<Item>,
    pub targets: Vec<RoundTarget>,
    /// Per item: bytes sent, or `-errno`, or [`NOT_ATTEMPTED`].
    pub outcomes: Vec<i32>,
}

impl Round {
    pub(super) fn clear(&mut self) {
        self.items.clear();
        self.targets.clear();
        self.outcomes.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn items(spec: &[(u32, u32)]) -> Vec<Item> {
        spec.iter()
            .map(|&(len, segment)| Item {
                buf: 0,
                len,
                segment,
            })
            .collect()
    }

    #[test]
    fn a_message_is_a_run_alone_or_equal_size_datagrams_with_gso() {
        let m = |items: &[Item], gso| {
            let m = next_message(items, gso);
            (m.items, m.segment)
        };
        // Equal sizes, the last may be shorter, then it ends; a longer one starts anew.
        let round = items(&[(10, 0), (10, 0), (9, 0), (9, 0)]);
        assert_eq!(m(&round, true), (3, 10));
        assert_eq!(m(&round[2..], true), (2, 9));
        assert_eq!(m(&items(&[(9, 0), (10, 0)]), true), (1, 0));
        assert_eq!(m(&round, false), (1, 0), "without GSO, one datagram each");
        // A run is its own message, GSO on or off (it was made while it was on); datagrams
        // before it do not join it.
        let round = items(&[(100, 50), (50, 0)]);
        assert_eq!(m(&round, true), (1, 50));
        assert_eq!(m(&round, false), (1, 50));
        assert_eq!(m(&items(&[(50, 0), (100, 50)]), true), (1, 0));
        // At most 64 segments, and what fits in one UDP payload.
        assert_eq!(m(&items(&[(10, 0); 100]), true), (64, 10));
        assert_eq!(m(&items(&[(30_000, 0); 3]), true), (2, 30_000));
        assert_eq!(m(&[], true), (0, 0));
    }

    #[test]
    fn a_message_taken_in_part_leaves_none_of_its_datagrams_to_send_again() {
        let round = items(&[(10, 0), (10, 0), (7, 0)]);
        let mut outcomes = [NOT_ATTEMPTED; 3];
        book_sent(&mut outcomes, &round, 27);
        assert_eq!(outcomes, [10, 10, 7]);
        for bytes in [0, 10, 20] {
            book_sent(&mut outcomes, &round, bytes);
            assert!(
                outcomes[0] != 10 && outcomes[1..] == [-libc::EIO; 2],
                "{bytes}: {outcomes:?}"
            );
        }
    }

    #[test]
    fn a_udp_target_goes_on_after_a_failure_of_one_datagram_alone() {
        let refused = -libc::ECONNREFUSED;
        let full = -libc::EAGAIN;
        // Sent, refused, then the rest of the chain cancelled: go on at the first cancelled.
        assert_eq!(
            resume_at(&[10, refused, NOT_ATTEMPTED, NOT_ATTEMPTED], 0),
            Some(2)
        );
        // From where the last pass started.
        assert_eq!(
            resume_at(&[10, refused, 10, refused, NOT_ATTEMPTED], 2),
            Some(4)
        );
        // A full socket or a GSO refusal stops the target for this round.
        assert_eq!(resume_at(&[10, full, NOT_ATTEMPTED], 0), None);
        assert_eq!(resume_at(&[GSO_REFUSED, NOT_ATTEMPTED], 0), None);
        // All done, or nothing attempted.
        assert_eq!(resume_at(&[10, refused, 10], 0), None);
        assert_eq!(resume_at(&[NOT_ATTEMPTED, NOT_ATTEMPTED], 0), None);
        assert!(goes_on_after(-libc::EMSGSIZE) && !goes_on_after(-libc::ENOBUFS));
        assert!(!goes_on_after(0) && !goes_on_after(NOT_ATTEMPTED));
    }

    proptest::proptest! {
        #[test]
        fn messages_send_every_item_once_in_order_as_the_kernel_takes_them(
            spec in proptest::collection::vec(
                (proptest::sample::select(vec![10u32, 11, 12, 20, 30_000]), 0u32..4),
                0..200,
            ),
            gso: bool,
        ) {
            // One in four items is a run of datagrams of half its length.
            let round = items(
                &spec
                    .iter()
                    .map(|&(len, kind)| (len, if kind == 0 { len / 2 } else { 0 }))
                    .collect::<Vec<_>>(),
            );
            let mut k = 0;
            while k < round.len() {
                let m = next_message(&round[k..], gso);
                let sent = &round[k..k + m.items];
                proptest::prop_assert!(m.items >= 1);
                if sent[0].segment != 0 {
                    let got = (m.items, u32::from(m.segment));
                    proptest::prop_assert_eq!(got, (1, sent[0].segment));
                } else if m.items > 1 {
                    // A GSO message of datagrams: one size, the last may be shorter.
                    proptest::prop_assert!(gso);
                    proptest::prop_assert!(m.items <= GSO_MAX_SEGMENTS);
                    let size = u32::from(m.segment);
                    let (last, rest) = sent.split_last().unwrap();
                    proptest::prop_assert!(rest.iter().all(|i| i.segment == 0 && i.len == size));
                    proptest::prop_assert!(last.segment == 0 && last.len <= size);
                    let bytes: u32 = sent.iter().map(|i| i.len).sum();
                    proptest::prop_assert!(bytes as usize <= GSO_MAX_BYTES);
                } else {
                    proptest::prop_assert_eq!(m.segment, 0);
                }
                k += m.items;
            }
            proptest::prop_assert_eq!(k, round.len());
        }
    }
}
