//! Heap storage of large params, reused across events.
//!
//! Params beyond their inline room live in a heap buffer. Producers build them on their
//! threads and the reactor drops them on its own, and glibc's malloc serves that pattern
//! slowly: a buffer freed by another thread never reaches the producer's cache, it goes to a
//! locked arena. With 512-byte events, malloc and free were 370 of the 1 414 instructions each
//! event cost (callgrind, `evdgram raise --count`). So buffers come in a few size classes, and
//! a dropped one goes to its class's spares for the next large params to take, on any thread.
//!
//! Spares are a stack: the buffer taken is the one given back last, still in the CPU's caches
//! (a queue handed out the coldest; copying 1 400-byte params into those cost more than the
//! malloc it saved). They are bounded ([`SPARE_BYTES`] per class, enough for the dispatcher's
//! default queue full of 1 400-byte events); beyond that, and for buffers of no class, the heap
//! has them back.

use std::sync::{Mutex, OnceLock};

/// Buffer capacities: one class for each factor of four, up to the largest datagram's params.
const CLASSES: [usize; 4] = [512, 2048, 8192, 65_536];

/// Bytes of spare buffers each class keeps at most.
const SPARE_BYTES: usize = 8 << 20;

/// Each class's spare buffers, last given on top.
fn spares(class: usize) -> std::sync::MutexGuard<'static, Vec<Vec<u8>>> {
    static SPARES: OnceLock<[Mutex<Vec<Vec<u8>>>; CLASSES.len()]> = OnceLock::new();
    let classes = SPARES.get_or_init(|| CLASSES.map(|_| Mutex::new(Vec::new())));
    // A panic while holding the lock cannot leave the stack inconsistent (push and pop only).
    classes[class].lock().unwrap_or_else(|e| e.into_inner())
}

/// An empty buffer of at least `capacity` bytes: a spare if there is one.
pub(crate) fn take(capacity: usize) -> Vec<u8> {
    let Some(class) = CLASSES.iter().position(|&size| capacity <= size) else {
        return Vec::with_capacity(capacity);
    };
    let spare = spares(class).pop();
    spare.unwrap_or_else(|| Vec::with_capacity(CLASSES[class]))
}

/// Gives `v` back: kept as a spare if it is of a class and the class has room, else freed.
pub(crate) fn give(mut v: Vec<u8>) {
    let Some(class) = CLASSES.iter().position(|&size| v.capacity() == size) else {
        return;
    };
    v.clear();
    let mut spares = spares(class);
    if spares.len() < SPARE_BYTES / CLASSES[class] {
        spares.push(v);
    }
    // Else `v` is freed, once the lock is released.
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One test: other tests in this process take and give spares too, but none drains them.
    #[test]
    fn a_buffer_given_back_is_reused_by_its_class_and_others_are_freed() {
        let v = take(1000);
        assert_eq!(v.capacity(), 2048);
        let at = v.as_ptr();
        give(v);
        let mut taken = Vec::new();
        let found = loop {
            let w = take(1500);
            assert!(w.is_empty() && w.capacity() == 2048);
            if w.as_ptr() == at {
                break true;
            }
            if taken.len() > SPARE_BYTES / 2048 {
                break false;
            }
            taken.push(w);
        };
        assert!(found, "the buffer given back was not reused");
        taken.into_iter().for_each(give);

        let v = take(100_000);
        assert!(v.capacity() >= 100_000);
        give(v);
        give(Vec::with_capacity(700));
        for (class, &size) in CLASSES.iter().enumerate() {
            let spares = spares(class);
            assert!(spares.iter().all(|v| v.capacity() == size && v.is_empty()));
        }
    }
}
