//! `evdgram serve`'s configuration: `Config::from_yaml` never panics, on text YAML or not
//! (its parse errors name the key by our own reading of the text's lines), and a refusal is a
//! `Parse` or `Invalid` error with a message.
#![no_main]

#[path = "common/hosts.rs"]
mod hosts;

use event_datagram::{Config, ConfigError};
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(text) = std::str::from_utf8(data) else {
        return;
    };
    if hosts::names_a_host(text) {
        return;
    }
    match Config::from_yaml(text) {
        Ok(config) => {
            // What parses holds values in range; the listeners are checked when read.
            let _ = config.mi.listen_targets();
        }
        Err(ConfigError::Parse(message)) | Err(ConfigError::Invalid(message)) => {
            assert!(!message.trim().is_empty(), "an empty message for {text:?}");
        }
        Err(other) => panic!("reading text gave {other:?}"),
    }
});
