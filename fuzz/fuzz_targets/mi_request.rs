//! MI requests: `MiHandler::handle` never panics, and answers every request but a notification
//! with one JSON-RPC 2.0 response that a datagram carries: `result` or `error`, and the
//! request's `id` (or `null`, when the request or its id could not be read).
#![no_main]

#[path = "common/hosts.rs"]
mod hosts;

use std::sync::OnceLock;

use event_datagram::mi::MAX_REPLY;
use event_datagram::{BackendChoice, Dispatcher, DispatcherConfig, MiConfig, MiHandler};
use libfuzzer_sys::fuzz_target;
use serde_json::Value;

/// One dispatcher for the whole run, with a few events published; subscriptions may go to
/// loopback UDP only, and `raise_event` may publish up to 64 events.
fn handler() -> &'static MiHandler {
    // The dispatcher lives here too, where the leak checker sees it held.
    static STATE: OnceLock<(Dispatcher, MiHandler)> = OnceLock::new();
    let (_, handler) = STATE.get_or_init(|| {
        let config = DispatcherConfig {
            backend: BackendChoice::Syscall,
            ..Default::default()
        };
        let dispatcher = Dispatcher::start(config).expect("a dispatcher");
        for name in ["E_FUZZ", "E_PIKE_BLOCKED", "E_UL_CONTACT_INSERT"] {
            dispatcher.publish(name).expect("a valid name");
        }
        let mi = MiConfig {
            allow_targets: vec!["127.0.0.1/32".to_owned()],
            publish_on_demand: true,
            max_events: 64,
            ..Default::default()
        };
        let handler = MiHandler::for_dispatcher(&dispatcher, &mi).expect("a valid MI config");
        (dispatcher, handler)
    });
    handler
}

/// Ids equal as JSON-RPC means them: the same string, or the same number however written.
fn same_id(a: &Value, b: &Value) -> bool {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64() == y.as_f64(),
        _ => a == b,
    }
}

fuzz_target!(|data: &[u8]| {
    if hosts::names_a_host(&String::from_utf8_lossy(data)) {
        return;
    }
    let request: Option<Value> = serde_json::from_slice(data).ok();
    let Some(reply) = handler().handle(data) else {
        let request = request.expect("only a readable request goes unanswered");
        assert!(
            request.get("id").is_none(),
            "a request with an id got no reply"
        );
        return;
    };
    assert!(reply.len() <= MAX_REPLY, "a reply of {} bytes", reply.len());
    let reply: Value = serde_json::from_slice(&reply).expect("the reply is JSON");
    let fields = reply.as_object().expect("the reply is an object");
    assert_eq!(fields.get("jsonrpc"), Some(&Value::from("2.0")));
    assert!(
        fields.contains_key("result") != fields.contains_key("error"),
        "{reply}"
    );
    let id = fields.get("id").expect("the reply has an id");
    if let Some(asked) = request.as_ref().and_then(|r| r.get("id")) {
        assert!(
            id.is_null() || same_id(id, asked),
            "id {asked} answered as {id}"
        );
    }
    if let Some(error) = fields.get("error") {
        assert!(
            error["code"].is_i64() && error["message"].is_string(),
            "{reply}"
        );
    }
});
