//! JSON-RPC decoder: never panics; the zero-allocation `Decoder::decode_each` (with its fast path
//! for our compact encoding) agrees with `decode`; whatever decodes re-encodes and decodes to
//! itself, also through the fast path.
#![no_main]

use event_datagram::decode::jsonrpc;
use event_datagram::{Format, Param, MAX_DATAGRAM};
use libfuzzer_sys::fuzz_target;

/// Events as `decode_each` sees them, or its error.
fn each(data: &[u8]) -> Result<Vec<(String, Vec<Param>)>, event_datagram::DecodeError> {
    let mut seen = Vec::new();
    let n = jsonrpc::Decoder::new().decode_each(data, |name, params| {
        seen.push((name.to_owned(), params.to_vec()))
    })?;
    assert_eq!(n, seen.len());
    Ok(seen)
}

fuzz_target!(|data: &[u8]| {
    let decoded = jsonrpc::decode(data);
    let seen = each(data);
    let events = match (decoded, seen) {
        (Ok(events), Ok(seen)) => {
            let owned: Vec<_> = events
                .iter()
                .map(|e| (e.name().to_string(), e.params().to_vec()))
                .collect();
            assert_eq!(owned, seen, "decode_each and decode disagree");
            events
        }
        (Err(a), Err(b)) => {
            assert_eq!(a, b, "decode_each and decode fail differently");
            return;
        }
        (a, b) => panic!(
            "decode {:?} but decode_each {:?}",
            a.map(|e| e.len()),
            b.map(|e| e.len())
        ),
    };
    // Our compact encoding of the same events, packed back to back: the fast path's input.
    let mut packed = Vec::new();
    let mut buf = vec![0u8; MAX_DATAGRAM];
    for e in &events {
        // Escaping can grow a value past the limit: that is an encode error, not a decode bug.
        let Ok(len) = Format::Jsonrpc.encode(e.name().as_str(), e.params(), &mut buf) else {
            return;
        };
        let again = jsonrpc::decode(&buf[..len]).expect("our own encoding decodes");
        assert_eq!(again.as_slice(), std::slice::from_ref(e));
        packed.extend_from_slice(&buf[..len]);
    }
    let seen = each(&packed).expect("our own packed encoding decodes");
    let owned: Vec<_> = events
        .iter()
        .map(|e| (e.name().to_string(), e.params().to_vec()))
        .collect();
    assert_eq!(owned, seen, "the fast path misreads our own encoding");
});
