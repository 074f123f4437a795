//! Finding the first byte of interest in a datagram, for both decoders. Blocks of 32 bytes
//! without one are skipped, checked without early exit, which the compiler turns into SIMD
//! compares; the block with one is searched 8 bytes at a time. A byte-at-a-time scan, over
//! long values and then again inside the block of a short one, was most of the decoding time.

/// The first byte of `b` from `from` on that is one of `needles` or below `below` (0: no byte
/// is; at most 0x80).
#[inline(always)]
pub(super) fn find_first<const N: usize>(
    b: &[u8],
    from: usize,
    needles: [u8; N],
    below: u8,
) -> Option<usize> {
    const BLOCK: usize = 32;
    debug_assert!(below <= 0x80, "the word scan's rule holds up to 0x80");
    let hit = |c: u8| needles.iter().fold(c < below, |h, &n| h | (c == n));
    let mut i = from;
    while let Some(block) = b.get(i..i + BLOCK) {
        let block: &[u8; BLOCK] = block.try_into().expect("a block of BLOCK bytes");
        if block.iter().fold(0u8, |h, &c| h | u8::from(hit(c))) != 0 {
            break;
        }
        i += BLOCK;
    }
    while let Some(word) = b.get(i..i + 8) {
        let word = u64::from_le_bytes(word.try_into().expect("8 bytes"));
        let found = needles.iter().fold(bytes_below(word, below), |m, &n| {
            m | bytes_below(word ^ (LOW_BITS * u64::from(n)), 1)
        });
        if found != 0 {
            return Some(i + found.trailing_zeros() as usize / 8);
        }
        i += 8;
    }
    b.get(i..)?.iter().position(|&c| hit(c)).map(|j| i + j)
}

/// Each byte's lowest bit.
const LOW_BITS: u64 = 0x0101_0101_0101_0101;

/// The high bit of each byte of `v` below `n` (at most 0x80; 1: the zero bytes), up to its
/// first: a byte after one may be marked too (a borrow), so only the lowest set bit is exact,
/// which is all it is used for.
#[inline(always)]
fn bytes_below(v: u64, n: u8) -> u64 {
    v.wrapping_sub(LOW_BITS * u64::from(n)) & !v & (LOW_BITS << 7)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The block and word scans find what a byte-at-a-time scan finds, wherever it is and
    /// whatever bytes are around it (a word's bytes next to a needle's value, one below
    /// and one above, and next to the bound, are where such a scan goes wrong).
    #[test]
    fn the_scans_find_the_first_stop_like_a_plain_search() {
        let naive = |b: &[u8], from: usize, needles: &[u8], below: u8| {
            (from..b.len()).find(|&i| needles.contains(&b[i]) || b[i] < below)
        };
        let filler = [
            b'\n' + 1,
            b'\n' - 1,
            b':' + 1,
            b':' - 1,
            0x80,
            0xff,
            0x20,
            b'"' + 1,
            b'\n' ^ 0x80,
            b'\\' - 1,
            0x9f,
        ];
        // Each case puts its stop bytes in turn.
        let cases: [(&[u8], u8, &[u8]); 3] = [
            (b"\n", 0, b"\n"),
            (b"\n:", 0, b"\n:"),
            (b"\"\\", 0x20, b"\"\\\x1f\x00"),
        ];
        for len in 0..100 {
            for at in (0..len).map(Some).chain([None]) {
                for (needles, below, stops) in cases {
                    let mut b: Vec<u8> = (0..len).map(|i| filler[i * 7 % filler.len()]).collect();
                    if let Some(at) = at {
                        b[at] = stops[at % stops.len()];
                        // And another one after it.
                        if at + 9 < len {
                            b[at + 9] = stops[0];
                        }
                    }
                    for from in [0, 1, 7, 8, 31, 33].into_iter().filter(|&f| f <= len) {
                        let got = match needles {
                            [x] => find_first(&b, from, [*x], below),
                            [x, y] => find_first(&b, from, [*x, *y], below),
                            _ => unreachable!(),
                        };
                        assert_eq!(got, naive(&b, from, needles, below), "{b:?} {from}");
                    }
                }
            }
        }
    }
}
