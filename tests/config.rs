//! `config/event-datagram.yaml` parses to exactly what its comments say, and configuration
//! errors name the key and the line.

use std::path::Path;

use event_datagram::{
    BackendChoice, CoalesceSetting, Config, ConfigError, DispatcherConfig, ExpireSetting, Format,
    MiConfig, NeverWord, QueuePolicy, StaticSubscription,
};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/event-datagram.yaml");

#[test]
fn the_example_config_parses_to_its_documented_values() {
    let config = Config::from_file(Path::new(EXAMPLE)).unwrap();
    let d = &config.dispatcher;
    assert_eq!(d.backend, BackendChoice::Auto);
    assert_eq!(d.queue_capacity, 4_096);
    assert_eq!(d.queue_bytes, 32 << 20);
    assert_eq!(d.queue_full, QueuePolicy::Block);
    assert_eq!(d.batch, 256);
    assert_eq!(d.ring_entries, 1024);
    assert_eq!(d.buffer_pool_bytes, 8 << 20);
    assert_eq!(d.retry_queue, 1024);
    assert_eq!(d.retry_queue_bytes, 16 << 20);
    assert_eq!(d.default_format, Format::Line);
    assert_eq!(d.shutdown_timeout_ms, 5_000);
    assert!(d.udp_gso);
    // The file documents the defaults.
    assert_eq!(*d, DispatcherConfig::default());
    assert_eq!(config.mi, MiConfig::default());

    assert_eq!(config.events, ["E_PIKE_BLOCKED", "E_UL_CONTACT_INSERT"]);
    let sub = |event: &str, socket: &str, expire, format| StaticSubscription {
        event: event.into(),
        socket: socket.parse().unwrap(),
        expire,
        format,
        coalesce: None,
    };
    assert_eq!(
        config.subscriptions,
        [
            sub("E_PIKE_BLOCKED", "udp:127.0.0.1:9000", None, None),
            sub(
                "E_PIKE_BLOCKED",
                "unix:/run/opensips/events.sock",
                Some(ExpireSetting::Secs(3600)),
                Some(Format::Jsonrpc)
            ),
            StaticSubscription {
                coalesce: Some(CoalesceSetting {
                    max_bytes: 8192,
                    max_delay_us: 500
                }),
                ..sub(
                    "E_UL_CONTACT_INSERT",
                    "unix:@evdgram-contacts",
                    Some(ExpireSetting::Word(NeverWord::Never)),
                    Some(Format::Line)
                )
            },
        ]
    );
    let mi = &config.mi;
    assert_eq!(mi.listen, ["udp:127.0.0.1:8080"]);
    assert!(!mi.allow_remote_control);
    assert_eq!(mi.allow_targets, ["127.0.0.0/8", "::1/128", "unix"]);
    assert_eq!(
        (mi.max_subscribers_per_event, mi.max_subscribers),
        (256, 4096)
    );
    assert!(!mi.publish_on_demand);
    assert_eq!(mi.max_request_bytes, 65_536);
}

/// The example with one line replaced.
fn example_with(from: &str, to: &str) -> String {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    assert_eq!(text.matches(from).count(), 1, "{from:?} occurs once");
    text.replace(from, to)
}

/// The 1-based line of `needle` in the example.
fn line_of(needle: &str) -> usize {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    text.lines().position(|l| l.contains(needle)).unwrap() + 1
}

fn parse_error(text: &str) -> String {
    match Config::from_yaml(text) {
        Err(e @ ConfigError::Parse(_)) => e.to_string(),
        other => panic!("expected a parse error, got {other:?}"),
    }
}

// serde-saphyr's messages: `line L column C: <what>`, then the source lines around it, the
// offending one shown as `L |   key: value`.

#[test]
fn a_typo_in_a_key_names_the_key_and_its_line() {
    let line = line_of("  queue_full: block");
    let err = parse_error(&example_with("  queue_full: block", "  queue_ful: block"));
    assert!(
        err.contains(&format!(
            "line {line} column 3: unknown field `queue_ful`, expected one of backend, queue_capacity, queue_bytes, queue_full,"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{line} |   queue_ful: block")),
        "{err}"
    );

    let line = line_of("    expire: 3600");
    let err = parse_error(&example_with("    expire: 3600", "    expires: 3600"));
    assert!(
        err.contains(&format!(
            "line {line} column 5: unknown field `expires`, expected one of event, socket, expire, format"
        )),
        "{err}"
    );

    // Read from a file, the message starts with the file's path.
    let dir = std::env::temp_dir().join(format!("evdg-config-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("typo.yaml");
    std::fs::write(&path, "dispatcher:\n  batch: 64\n  bacth: 3\n").unwrap();
    let err = Config::from_file(&path).unwrap_err().to_string();
    let _ = std::fs::remove_dir_all(&dir);
    assert!(err.starts_with(&format!("{}: ", path.display())), "{err}");
    assert!(
        err.contains("line 3 column 3: unknown field `bacth`"),
        "{err}"
    );
}

#[test]
fn a_wrong_type_names_the_key_and_its_line() {
    let line = line_of("  batch: 256");
    let err = parse_error(&example_with("  batch: 256", "  batch: lots"));
    assert!(
        err.contains(&format!("line {line} column 10: invalid u64")),
        "{err}"
    );
    assert!(err.contains(&format!("{line} |   batch: lots")), "{err}");

    let line = line_of("  allow_remote_control: false");
    let err = parse_error(&example_with(
        "  allow_remote_control: false",
        "  allow_remote_control: 3",
    ));
    assert!(
        err.contains(&format!("line {line} column 25: invalid boolean")),
        "{err}"
    );
    assert!(
        err.contains(&format!("{line} |   allow_remote_control: 3")),
        "{err}"
    );
}

#[test]
fn a_file_error_names_the_file() {
    let err = Config::from_file(Path::new("/nonexistent/evdgram.yaml")).unwrap_err();
    assert!(matches!(err, ConfigError::Read { .. }), "{err}");
    assert!(
        err.to_string().contains("/nonexistent/evdgram.yaml"),
        "{err}"
    );
}
