//! `DecodeFormat::Auto`: never panics; what it reads is what the decoder of the format it
//! reports reads; its error is the error of the format `resolve` guessed; whatever decodes
//! re-encodes in the reported format and decodes to itself.
#![no_main]

use event_datagram::decode::{self, jsonrpc, line, DecodeFormat};
use event_datagram::{DecodeError, Event, Format, MAX_DATAGRAM};
use libfuzzer_sys::fuzz_target;

/// What the decoder of `format` alone reads.
fn decode_as(format: Format, data: &[u8]) -> Result<Vec<Event>, DecodeError> {
    match format {
        Format::Line => line::decode(data),
        Format::Jsonrpc => jsonrpc::decode(data),
    }
}

fuzz_target!(|data: &[u8]| {
    let (events, format) = match decode::decode_reporting_format(data, DecodeFormat::Auto) {
        Ok(read) => read,
        Err(e) => {
            let guess = DecodeFormat::Auto.resolve(data);
            assert_eq!(
                Err(e),
                decode_as(guess, data),
                "Auto's error is not {guess}'s"
            );
            return;
        }
    };
    assert_eq!(
        Ok(&events),
        decode_as(format, data).as_ref(),
        "Auto and {format} disagree"
    );
    let mut buf = vec![0u8; MAX_DATAGRAM];
    for e in &events {
        // Escaping can grow a value past the limit: that is an encode error, not a decode bug.
        let Ok(len) = format.encode(e.name().as_str(), e.params(), &mut buf) else {
            continue;
        };
        let again = decode::decode(&buf[..len], format.into()).expect("our own encoding decodes");
        assert_eq!(again.as_slice(), std::slice::from_ref(e));
    }
});
