//! JSON-RPC decoder: never panics, and whatever decodes re-encodes and decodes to itself.
#![no_main]

use event_datagram::decode::jsonrpc;
use event_datagram::{Format, MAX_DATAGRAM};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(events) = jsonrpc::decode(data) else {
        return;
    };
    let mut buf = vec![0u8; MAX_DATAGRAM];
    for e in &events {
        // Escaping can grow a value past the limit: that is an encode error, not a decode bug.
        let Ok(len) = Format::Jsonrpc.encode(e.name().as_str(), e.params(), &mut buf) else {
            continue;
        };
        let again = jsonrpc::decode(&buf[..len]).expect("our own encoding decodes");
        assert_eq!(again.as_slice(), std::slice::from_ref(e));
    }
});
