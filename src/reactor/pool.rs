//! Encode buffers: reference-counted, in size classes, recycled without touching the heap.
//!
//! An event is encoded once per format into one buffer, and every target's queue holds a
//! reference to it. A buffer returns to its class's free list when the last reference is
//! released. Buffers beyond `keep_bytes` (a load peak, a slow receiver) go back to the heap
//! once they sit unused for a whole interval between two [`Pool::trim`]s: freed as soon as
//! released, they were allocated again (and zeroed: 20 % of the reactor's time with 64 KB
//! events) for every event of a load that stays above `keep_bytes`.
//!
//! So that a steady load allocates nothing, the pool starts with some small buffers (enough for
//! a few batches) and, when a class runs out, grows it geometrically: it doubles the class's
//! buffers at once, four at least (within `keep_bytes`), instead of adding one buffer per new
//! in-flight event.
//! A load that only ever reaches peaks it reached before, or stays under twice the last one,
//! allocates nothing more.

/// Size classes: most events fit the first, events of about an MTU the second; the last holds
/// the largest datagram. A snug class keeps more of the buffers in flight in the CPU's caches.
const CLASSES: [usize; 4] = [512, 2048, 8192, crate::MAX_DATAGRAM];

/// Buffers a class grows by at least: a few in flight at once is the rule (GSO runs of one
/// batch, a coalesced datagram and the next), and growing one at a time would allocate for
/// each new peak of one more.
const MIN_GROWTH: usize = 4;

/// A buffer's index in the pool, and its size class. Not `Clone`: each handle is one
/// reference.
#[derive(Debug, PartialEq, Eq)]
pub(crate) struct BufRef {
    index: u32,
    class: u8,
}

impl BufRef {
    pub fn index(&self) -> u32 {
        self.index
    }

    /// Bytes of the buffer: what holding it keeps from the heap, however little it holds.
    pub fn capacity(&self) -> usize {
        CLASSES[usize::from(self.class)]
    }
}

struct Slot {
    data: Box<[u8]>,
    refs: u32,
    class: u8,
}

pub(crate) struct Pool {
    slots: Vec<Slot>,
    free: [Vec<u32>; CLASSES.len()],
    /// Slots whose buffer went back to the heap, to reuse.
    empty: Vec<u32>,
    bytes: usize,
    keep_bytes: usize,
    /// Buffers of each class, free or in use.
    count: [usize; CLASSES.len()],
    /// The fewest free buffers of each class since the last trim: so many at the bottom of its
    /// free list (taken from the top) were not needed.
    unused: [usize; CLASSES.len()],
}

impl Pool {
    /// A pool whose trims keep up to `keep_bytes` of buffers, starting with `prefill` buffers
    /// of the smallest class (within `keep_bytes`).
    pub fn new(keep_bytes: usize, prefill: usize) -> Self {
        let mut pool = Pool {
            slots: Vec::new(),
            free: Default::default(),
            empty: Vec::new(),
            bytes: 0,
            keep_bytes,
            count: [0; CLASSES.len()],
            unused: [0; CLASSES.len()],
        };
        pool.grow(0, prefill);
        pool
    }

    /// A buffer of at least `len` bytes (at most [`MAX_DATAGRAM`](crate::MAX_DATAGRAM)),
    /// holding one reference.
    pub fn alloc(&mut self, len: usize) -> BufRef {
        let class = class_for(len);
        if self.free[class].is_empty() {
            // Double the class, by MIN_GROWTH at least (at least one buffer, the one asked for,
            // even beyond keep_bytes).
            let added = self.grow(class, self.count[class].max(MIN_GROWTH));
            if added == 0 {
                let i = self.new_slot(class);
                self.free[class].push(i);
            }
        }
        let i = self.free[class].pop().expect("the class has a free buffer");
        self.unused[class] = self.unused[class].min(self.free[class].len());
        self.slots[i as usize].refs = 1;
        BufRef {
            index: i,
            class: class as u8,
        }
    }

    /// Adds up to `n` free buffers of `class`, within `keep_bytes`; returns how many.
    fn grow(&mut self, class: usize, n: usize) -> usize {
        let room = self.keep_bytes.saturating_sub(self.bytes) / CLASSES[class];
        let n = n.min(room);
        self.free[class].reserve(n);
        self.slots.reserve(n.saturating_sub(self.empty.len()));
        for _ in 0..n {
            let i = self.new_slot(class);
            self.free[class].push(i);
        }
        n
    }

    /// A new buffer of `class` (not yet in a free list), with no reference.
    fn new_slot(&mut self, class: usize) -> u32 {
        let slot = Slot {
            data: vec![0; CLASSES[class]].into_boxed_slice(),
            refs: 0,
            class: class as u8,
        };
        self.bytes += CLASSES[class];
        self.count[class] += 1;
        if let Some(i) = self.empty.pop() {
            self.slots[i as usize] = slot;
            i
        } else {
            self.slots.push(slot);
            self.slots.len() as u32 - 1
        }
    }

    /// One more reference to the same buffer.
    pub fn retain(&mut self, buf: &BufRef) -> BufRef {
        self.slots[buf.index as usize].refs += 1;
        BufRef { ..*buf }
    }

    /// Gives up one reference.
    pub fn release(&mut self, buf: BufRef) {
        let slot = &mut self.slots[buf.index as usize];
        slot.refs -= 1;
        if slot.refs == 0 {
            self.free[slot.class as usize].push(buf.index);
        }
    }

    /// Whether the pool holds more than `keep_bytes`, free or in use.
    pub fn over_keep(&self) -> bool {
        self.bytes > self.keep_bytes
    }

    /// Gives back to the heap, down to `keep_bytes`, buffers that stayed free since the last
    /// trim (the coldest first), and starts a new interval. Returns [`over_keep`](Self::over_keep).
    pub fn trim(&mut self) -> bool {
        for class in (0..CLASSES.len()).rev() {
            let excess = self
                .bytes
                .saturating_sub(self.keep_bytes)
                .div_ceil(CLASSES[class]);
            let n = self.unused[class].min(excess);
            for i in self.free[class].drain(..n) {
                self.slots[i as usize].data = Box::default();
                self.empty.push(i);
            }
            self.bytes -= n * CLASSES[class];
            self.count[class] -= n;
        }
        self.unused = self.free.each_ref().map(Vec::len);
        self.over_keep()
    }

    pub fn bytes_mut(&mut self, buf: &BufRef) -> &mut [u8] {
        &mut self.slots[buf.index as usize].data
    }

    /// Gives up the reference of a handle that is being dropped in place (by `VecDeque::retain`,
    /// which cannot hand it over by value).
    pub fn release_in_place(&mut self, buf: &BufRef) {
        self.release(BufRef { ..*buf });
    }

    /// Copies `len` bytes of `src` from `from` into `dst` at `at` (coalescing events into one
    /// datagram, or splitting a GSO run).
    pub fn copy(&mut self, dst: &BufRef, at: usize, src: &BufRef, from: usize, len: usize) {
        let (d, s) = (dst.index as usize, src.index as usize);
        assert_ne!(d, s, "a buffer is not appended to itself");
        let (dst, src) = if d < s {
            let (lo, hi) = self.slots.split_at_mut(s);
            (&mut lo[d].data, &hi[0].data)
        } else {
            let (lo, hi) = self.slots.split_at_mut(d);
            (&mut hi[0].data, &lo[s].data)
        };
        dst[at..at + len].copy_from_slice(&src[from..from + len]);
    }

    /// `buf`, or a copy of its first `len` bytes in a buffer of the smallest class that holds
    /// them when that is a smaller class than `buf`'s (which goes back to the pool).
    pub fn fit(&mut self, buf: BufRef, len: usize) -> BufRef {
        if class_for(len) >= usize::from(buf.class) {
            return buf;
        }
        let fitted = self.alloc(len);
        self.copy(&fitted, 0, &buf, 0, len);
        self.release(buf);
        fitted
    }

    /// The buffer behind an index held by a queued datagram.
    pub fn get(&self, index: u32) -> &[u8] {
        &self.slots[index as usize].data
    }
}

/// The smallest class whose buffers hold `len` bytes (the largest for anything larger).
fn class_for(len: usize) -> usize {
    CLASSES
        .iter()
        .position(|&size| len <= size)
        .unwrap_or(CLASSES.len() - 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn buffers_are_recycled_by_class() {
        let mut pool = Pool::new(1 << 20, 0);
        let a = pool.alloc(64);
        let ai = a.index();
        assert_eq!(pool.get(a.index()).len(), 512);
        let a2 = pool.retain(&a);
        pool.release(a);
        pool.release(a2);
        let b = pool.alloc(100);
        assert_eq!(b.index(), ai, "a free buffer of the class is reused");
        let big = pool.alloc(crate::MAX_DATAGRAM);
        assert_eq!(pool.get(big.index()).len(), crate::MAX_DATAGRAM);
    }

    #[test]
    fn a_datagram_is_fitted_into_the_smallest_class_that_holds_it() {
        let mut pool = Pool::new(1 << 20, 0);
        let big = pool.alloc(crate::MAX_DATAGRAM);
        pool.bytes_mut(&big)[..5].copy_from_slice(b"E_X\n\n");
        let free_large = pool.free[CLASSES.len() - 1].len();
        let fitted = pool.fit(big, 5);
        assert_eq!(pool.get(fitted.index()).len(), 512);
        assert_eq!(&pool.get(fitted.index())[..5], b"E_X\n\n");
        let back = pool.free[CLASSES.len() - 1].len() - free_large;
        assert_eq!(back, 1, "the large buffer went back");
        let same = pool.fit(fitted, 5);
        assert_eq!(pool.get(same.index()).len(), 512, "already snug: kept");
        pool.release(same);
    }

    #[test]
    fn a_class_grows_by_doubling_and_starts_prefilled() {
        let mut pool = Pool::new(1 << 20, 8);
        assert_eq!((pool.count[0], pool.free[0].len()), (8, 8));
        let held: Vec<BufRef> = (0..9).map(|_| pool.alloc(10)).collect();
        assert_eq!(pool.count[0], 16, "the 9th buffer doubled the class");
        assert_eq!(pool.free[0].len(), 7);
        for b in held {
            pool.release(b);
        }
        assert_eq!(pool.free[0].len(), 16);
        // keep_bytes bounds the growth, not the buffer asked for.
        let mut pool = Pool::new(512, 8);
        assert_eq!(pool.count[0], 1);
        let (a, b) = (pool.alloc(10), pool.alloc(10));
        assert_ne!(a, b);
        assert_eq!(pool.count[0], 2);
    }

    #[test]
    fn beyond_keep_bytes_unused_buffers_go_back_to_the_heap_at_a_trim() {
        const BIG: usize = crate::MAX_DATAGRAM;
        let mut pool = Pool::new(2 * BIG, 0);
        let held: Vec<BufRef> = (0..4).map(|_| pool.alloc(BIG)).collect();
        held.into_iter().for_each(|b| pool.release(b));
        assert_eq!(
            (pool.count[3], pool.free[3].len()),
            (4, 4),
            "kept until a trim"
        );
        assert!(pool.over_keep());
        // The first trim only starts the interval: these buffers were in use in the last one.
        assert!(pool.trim());
        assert_eq!(pool.count[3], 4);

        // Three are used in this interval, so only one was never needed.
        let held: Vec<BufRef> = (0..3).map(|_| pool.alloc(BIG)).collect();
        held.into_iter().for_each(|b| pool.release(b));
        assert!(pool.trim(), "one freed, still over keep_bytes");
        assert_eq!((pool.count[3], pool.bytes), (3, 3 * BIG));
        assert!(!pool.trim(), "an idle interval frees down to keep_bytes");
        assert_eq!((pool.count[3], pool.bytes), (2, 2 * BIG));
        assert!(!pool.trim(), "never below keep_bytes");
        assert_eq!(pool.count[3], 2);

        // Freed slots are reused.
        let again: Vec<u32> = (0..4).map(|_| pool.alloc(BIG).index()).collect();
        assert!(again.iter().all(|&i| i < 4), "{again:?}");
    }

    #[test]
    fn a_load_above_keep_bytes_reuses_its_buffers() {
        let mut pool = Pool::new(0, 0);
        for _ in 0..8 {
            let b = pool.alloc(10);
            pool.release(b);
        }
        assert_eq!((pool.count[0], pool.bytes), (1, 512), "one buffer, reused");
    }
}
