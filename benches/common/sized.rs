//! Events of an exact encoded size, shared by `benches/encode.rs` and `tests/alloc.rs`
//! (included with `#[path]`: benches and tests are separate crates).

use event_datagram::{Format, Params, ValueRef, MAX_DATAGRAM};

/// The event name the sized params are encoded with.
pub const EVENT: &str = "E_PIKE_BLOCKED";

/// Params whose encoding of [`EVENT`] in `format` is exactly `size` bytes: a realistic head
/// (`ip`, `attempts`; shorter when `size` leaves no room for it) and a padding string `pad`
/// that makes up the rest. The padding needs no quoting or escaping, so its length adds 1:1.
pub fn params_of_size(format: Format, size: usize) -> Params {
    let heads = [
        Params::new()
            .str("ip", "192.168.2.11")
            .unwrap()
            .int("attempts", 3)
            .unwrap(),
        Params::new().str("ip", "192.168.2.11").unwrap(),
        Params::new(),
    ];
    for head in heads {
        let mut with_empty_pad = head.clone();
        with_empty_pad.push(Some("pad"), ValueRef::Str("")).unwrap();
        let base = encoded_len(format, &with_empty_pad);
        if base > size {
            continue;
        }
        let value = "x".repeat(size - base);
        let mut params = head;
        params.push(Some("pad"), ValueRef::Str(&value)).unwrap();
        assert_eq!(
            encoded_len(format, &params),
            size,
            "{format} encoding of the {size}-byte case"
        );
        return params;
    }
    panic!("no {format} event of {size} bytes");
}

fn encoded_len(format: Format, params: &Params) -> usize {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    format.encode(EVENT, params, &mut buf).unwrap()
}
