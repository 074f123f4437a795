//! Socket specs: whatever parses prints back to a spec that parses to the same target.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(s) = std::str::from_utf8(data) {
        if let Ok(t) = s.parse::<event_datagram::Target>() {
            let printed = t.to_string();
            assert_eq!(printed.parse::<event_datagram::Target>().unwrap(), t);
        }
    }
});
