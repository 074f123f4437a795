//! Line decoder: never panics, and whatever decodes re-encodes and decodes to itself.
#![no_main]

use event_datagram::decode::line;
use event_datagram::{Format, MAX_DATAGRAM};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(events) = line::decode(data) else {
        return;
    };
    // The zero-allocation API must agree with the owned one.
    let mut seen = Vec::new();
    let n = line::Decoder::new()
        .decode_each(data, |name, params| {
            seen.push((name.to_owned(), params.to_vec()))
        })
        .expect("decode_each accepts what decode accepts");
    assert_eq!(n, events.len());
    let mut buf = vec![0u8; MAX_DATAGRAM];
    for (e, (name, params)) in events.iter().zip(&seen) {
        assert_eq!(
            (e.name().as_str(), e.params().to_vec()),
            (name.as_str(), params.clone())
        );
        // Quoting can grow a value past the limit: that is an encode error, not a decode bug.
        let Ok(len) = Format::Line.encode(e.name().as_str(), e.params(), &mut buf) else {
            continue;
        };
        let again = line::decode(&buf[..len]).expect("our own encoding decodes");
        assert_eq!(again.as_slice(), std::slice::from_ref(e));
    }
});
