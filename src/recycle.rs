//! Heap storage of large params, reused across events.
//!
//! Params beyond their inline room live in a heap buffer. Producers build them on their
//! threads and the reactor drops them on its own, and glibc's malloc serves that pattern
//! slowly: a buffer freed by another thread never reaches the producer's cache, it goes to a
//! locked arena. With 512-byte events, malloc and free were 370 of the 1 414 instructions each
//! event cost (callgrind, `evdgram raise --count`). So buffers come in a few size classes, and
//! a dropped one goes to its class's spares for the next large params to take, on any thread.
//!
//! Spares are stacks: the buffer taken is the one given back last, still in the CPU's caches
//! (a queue handed out the coldest, and the compare bench ran no faster than with malloc).
//! Each thread keeps a few of its own, so that it takes and gives without a
//! lock: the reactor, which only gives, hands them to the shared stacks half its [`local_max`]
//! at a time, and a producer, which only takes, fetches 1, then 2, 4 and so on up to as many
//! (a lock per buffer was 5 % of the sending CPU with 512-byte events). What a thread keeps is
//! bounded in bytes, and what it fetches grows only as it raises: each of an application's
//! many threads that raised a few large events holds a few spares, not a stack of them. The
//! shared stacks are bounded ([`SPARE_BYTES`] per
//! class, enough for the dispatcher's default queue full of 1 400-byte events); beyond that,
//! and for buffers of no class, the heap has them back.

use std::cell::RefCell;
use std::sync::{Mutex, OnceLock};

/// Buffer capacities: one class for each factor of four, up to the largest datagram's params.
const CLASSES: [usize; 4] = [512, 2048, 8192, 65_536];

/// Bytes of spare buffers each class keeps at most in the shared stacks.
const SPARE_BYTES: usize = 8 << 20;

/// Bytes of spares a thread keeps of each class, about (see [`local_max`]).
const LOCAL_BYTES: usize = 128 << 10;

/// Spares a thread keeps of `class` at most: 64 of the small classes, 2 of the largest. It
/// moves half as many at a time from or to the shared stacks.
const fn local_max(class: usize) -> usize {
    let n = LOCAL_BYTES / CLASSES[class];
    if n > 64 {
        64
    } else if n < 2 {
        2
    } else {
        n
    }
}

type Stack = Vec<Vec<u8>>;

/// Each class's shared spare buffers, last given on top.
fn shared(class: usize) -> std::sync::MutexGuard<'static, Stack> {
    static SHARED: OnceLock<[Mutex<Stack>; CLASSES.len()]> = OnceLock::new();
    let classes = SHARED.get_or_init(|| CLASSES.map(|_| Mutex::new(Vec::new())));
    // A panic while holding the lock cannot leave the stack inconsistent (push and pop only).
    classes[class].lock().unwrap_or_else(|e| e.into_inner())
}

/// This thread's spares; they go to the shared stacks when the thread ends.
#[derive(Default)]
struct Local {
    spares: [Stack; CLASSES.len()],
    /// How many spares of each class this thread fetched last from the shared stacks: it
    /// doubles each time, up to half of [`local_max`], so that a thread that raises a few large
    /// events holds a few spares, not dozens, while one that raises many locks seldom.
    fetched: [usize; CLASSES.len()],
}

impl Drop for Local {
    fn drop(&mut self) {
        for (class, stack) in self.spares.iter_mut().enumerate() {
            give_shared(class, stack.drain(..));
        }
    }
}

thread_local! {
    static LOCAL_SPARES: RefCell<Local> = RefCell::default();
}

/// The class whose buffers hold `capacity` bytes, if any.
fn class_for(capacity: usize) -> Option<usize> {
    CLASSES.iter().position(|&size| capacity <= size)
}

/// An empty buffer of at least `capacity` bytes: a spare if there is one.
pub(crate) fn take(capacity: usize) -> Vec<u8> {
    let Some(class) = class_for(capacity) else {
        return Vec::with_capacity(capacity);
    };
    // `try_with`: on a thread being torn down, go to the shared stack directly.
    let local = LOCAL_SPARES.try_with(|local| {
        let local = &mut *local.borrow_mut();
        let stack = &mut local.spares[class];
        if stack.is_empty() {
            let fetch = (local.fetched[class] * 2).clamp(1, local_max(class) / 2);
            local.fetched[class] = fetch;
            let mut shared = shared(class);
            let from = shared.len().saturating_sub(fetch);
            // Oldest first, so that the hottest ends on top here too.
            stack.extend(shared.drain(from..));
        }
        stack.pop()
    });
    let spare = match local {
        Ok(spare) => spare,
        Err(_) => shared(class).pop(),
    };
    spare.unwrap_or_else(|| Vec::with_capacity(CLASSES[class]))
}

/// Gives `v` back: kept as a spare if it is of a class and there is room, else freed.
pub(crate) fn give(mut v: Vec<u8>) {
    let Some(class) = CLASSES.iter().position(|&size| v.capacity() == size) else {
        return;
    };
    v.clear();
    let mut v = Some(v);
    let _ = LOCAL_SPARES.try_with(|local| {
        let mut local = local.borrow_mut();
        let stack = &mut local.spares[class];
        let max = local_max(class);
        if stack.len() >= max {
            // The last given go, the hottest: a thread that gives this much (the reactor)
            // seldom takes, and the thread that takes them next is writing into them.
            give_shared(class, stack.drain(max / 2..));
        }
        stack.extend(v.take());
    });
    // On a thread being torn down.
    give_shared(class, v);
}

/// Puts `spares` on the shared stack of `class`, in order, as many as it has room for; the
/// rest are freed.
fn give_shared(class: usize, spares: impl IntoIterator<Item = Vec<u8>>) {
    let room = SPARE_BYTES / CLASSES[class];
    let mut spares = spares.into_iter().peekable();
    if spares.peek().is_none() {
        return;
    }
    let mut shared = shared(class);
    let n = room.saturating_sub(shared.len());
    shared.extend(spares.by_ref().take(n));
    drop(shared);
    // Freed without holding the lock.
    spares.for_each(drop);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn addresses(buffers: &[Vec<u8>]) -> Vec<usize> {
        buffers.iter().map(|v| v.as_ptr() as usize).collect()
    }

    #[test]
    fn a_thread_takes_back_what_it_gave_last_first() {
        let given: Vec<Vec<u8>> = (0..3).map(|_| take(1000)).collect();
        assert!(given.iter().all(|v| v.capacity() == 2048 && v.is_empty()));
        let at = addresses(&given);
        given.into_iter().for_each(give);
        let taken: Vec<Vec<u8>> = (0..3).map(|_| take(1500)).collect();
        let mut last_first = at.clone();
        last_first.reverse();
        assert_eq!(addresses(&taken), last_first);
        taken.into_iter().for_each(give);
    }

    #[test]
    fn spares_reach_other_threads_through_the_shared_stacks() {
        // One thread gives more than it keeps, and ends: all of them go to the shared stack.
        let given = std::thread::spawn(|| {
            let given: Vec<Vec<u8>> = (0..40).map(|_| take(60_000)).collect();
            let at = addresses(&given);
            given.into_iter().for_each(give);
            at
        })
        .join()
        .expect("giver");
        // Another takes them. Other tests in this process may put their own spares of this
        // class there meanwhile, so look for some of these, not all.
        let taken = std::thread::spawn(|| {
            let taken: Vec<Vec<u8>> = (0..40).map(|_| take(60_000)).collect();
            addresses(&taken)
        })
        .join()
        .expect("taker");
        let reused = taken.iter().filter(|a| given.contains(a)).count();
        assert!(reused > 0, "no spare went from one thread to the other");
    }

    #[test]
    fn a_thread_keeps_few_spares_of_the_large_classes() {
        assert_eq!(local_max(0), 64);
        assert_eq!(local_max(1), 64);
        assert_eq!(local_max(3), 2);
        // Many large spares in the shared stack; a thread takes one and keeps only a few more.
        std::thread::spawn(|| (0..40).map(|_| take(60_000)).for_each(give))
            .join()
            .expect("giver");
        let (kept, given_back) = std::thread::spawn(|| {
            let one = take(60_000);
            let kept = LOCAL_SPARES.with(|local| local.borrow().spares[3].len());
            (0..10).map(|_| Vec::with_capacity(65_536)).for_each(give);
            let after = LOCAL_SPARES.with(|local| local.borrow().spares[3].len());
            drop(one);
            (kept, after)
        })
        .join()
        .expect("taker");
        assert!(
            kept < local_max(3),
            "{kept} spares of 64 KiB kept by a taker"
        );
        assert!(
            given_back <= local_max(3),
            "{given_back} spares of 64 KiB kept by a giver"
        );
    }

    #[test]
    fn a_thread_that_takes_a_few_holds_a_few_spares() {
        // Plenty of spares of every class in the shared stacks.
        std::thread::spawn(|| {
            for size in CLASSES {
                (0..64).map(|_| take(size)).for_each(give);
            }
        })
        .join()
        .expect("giver");
        let held = std::thread::spawn(|| {
            // Three large events of each class, as a thread of a thread-per-request server
            // might raise before it ends: it takes and never gives.
            let taken: Vec<Vec<u8>> = CLASSES.iter().flat_map(|&c| [c, c, c]).map(take).collect();
            let held = LOCAL_SPARES.with(|local| local.borrow().spares.clone().map(|s| s.len()));
            drop(taken);
            held
        })
        .join()
        .expect("taker");
        // 1 then 2 fetched of each: 3 taken, none left over.
        assert_eq!(held, [0; CLASSES.len()], "spares held by the taker");
    }

    #[test]
    fn only_buffers_of_a_class_are_kept() {
        let v = take(100_000);
        assert!(v.capacity() >= 100_000);
        give(v);
        give(Vec::with_capacity(700));
        LOCAL_SPARES.with(|local| {
            for (stack, &size) in local.borrow().spares.iter().zip(&CLASSES) {
                assert!(stack.iter().all(|v| v.capacity() == size && v.is_empty()));
            }
        });
    }
}
