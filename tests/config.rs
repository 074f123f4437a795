//! `config/event-datagram.yaml` parses to exactly what its comments say, and configuration
//! errors name the key and the line.

use std::path::Path;
use std::process::{Command, Stdio};
use std::time::Duration;

use event_datagram::{
    BackendChoice, CoalesceSetting, Config, ConfigError, Dispatcher, DispatcherConfig,
    ExpireSetting, Format, MiConfig, NeverWord, QueuePolicy, StaticSubscription,
};

use crate::support::{wait_until, TempDir};

const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/config/event-datagram.yaml");
const EVDGRAM: &str = env!("CARGO_BIN_EXE_evdgram");

#[test]
fn the_example_config_parses_to_its_documented_values() {
    let config = Config::from_file(Path::new(EXAMPLE)).unwrap();
    let d = &config.dispatcher;
    assert_eq!(d.backend, BackendChoice::Auto);
    assert_eq!(d.queue_capacity, 4_096);
    assert_eq!(d.queue_bytes, 2 << 20);
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
            "line {line} column 3: dispatcher.queue_ful: unknown field `queue_ful`, expected one of backend, queue_capacity, queue_bytes, queue_full,"
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
            "line {line} column 5: subscriptions[1].expires: unknown field `expires`, expected one of event, socket, expire, format"
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
        err.contains("line 3 column 3: dispatcher.bacth: unknown field `bacth`"),
        "{err}"
    );
}

#[test]
fn a_wrong_type_names_the_key_and_its_line() {
    let line = line_of("  batch: 256");
    let err = parse_error(&example_with("  batch: 256", "  batch: lots"));
    assert!(
        err.contains(&format!(
            "line {line} column 10: dispatcher.batch: invalid u64"
        )),
        "{err}"
    );
    assert!(err.contains(&format!("{line} |   batch: lots")), "{err}");

    let line = line_of("  allow_remote_control: false");
    let err = parse_error(&example_with(
        "  allow_remote_control: false",
        "  allow_remote_control: 3",
    ));
    assert!(
        err.contains(&format!(
            "line {line} column 25: mi.allow_remote_control: invalid boolean"
        )),
        "{err}"
    );
    assert!(
        err.contains(&format!("{line} |   allow_remote_control: 3")),
        "{err}"
    );
}

/// A value of the wrong kind (a scalar for a list or a section, a list for a string) names
/// its key too: the parser reports these as "expected ... start", which named only the line.
#[test]
fn a_value_of_the_wrong_kind_names_the_key_and_its_line() {
    for (text, want) in [
        (
            "events: E_A\n",
            "line 1 column 9: events: expected sequence start",
        ),
        (
            "mi:\n  allow_targets: unix\n",
            "line 2 column 18: mi.allow_targets: expected sequence start",
        ),
        (
            "dispatcher: []\n",
            "line 1 column 13: dispatcher: expected mapping start",
        ),
        (
            "subscriptions:\n  - 5\n",
            "line 2 column 5: subscriptions[0]: expected mapping start",
        ),
        (
            "events:\n  - E_A\n  - [E_B]\n",
            "line 3 column 5: events[1]: expected string scalar",
        ),
        (
            "subscriptions:\n  - event: E_A\n    socket: [udp:127.0.0.1:9]\n",
            "line 3 column 13: subscriptions[0].socket: expected string scalar",
        ),
    ] {
        let err = parse_error(text);
        assert!(err.contains(want), "{text:?}: {err}");
    }
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

/// The 1-based column where the value of `line` (a `key: value` or `- item` line) starts.
fn value_column(line: &str) -> usize {
    let at = line.find(": ").or_else(|| line.find("- ")).unwrap();
    at + 3
}

#[test]
fn an_out_of_range_value_names_the_key_and_its_line() {
    for (from, to, message) in [
        (
            "  queue_capacity: 4096",
            "  queue_capacity: 1048577",
            "dispatcher.queue_capacity: must be 1 to 1048576",
        ),
        (
            "  queue_bytes: 2097152",
            "  queue_bytes: 0",
            "dispatcher.queue_bytes: must be at least 1",
        ),
        (
            "  batch: 256",
            "  batch: 0",
            "dispatcher.batch: must be 1 to 4096",
        ),
        (
            "  batch: 256",
            "  batch: 4097",
            "dispatcher.batch: must be 1 to 4096",
        ),
        (
            "  ring_entries: 1024",
            "  ring_entries: 7",
            "dispatcher.ring_entries: must be 8 to 32768",
        ),
        (
            "  retry_queue: 1024",
            "  retry_queue: 0",
            "dispatcher.retry_queue: must be at least 1",
        ),
        (
            "  retry_queue_bytes: 16777216",
            "  retry_queue_bytes: 0",
            "dispatcher.retry_queue_bytes: must be at least 1",
        ),
        (
            "  max_subscribers_per_event: 256",
            "  max_subscribers_per_event: 0",
            "mi.max_subscribers_per_event: must be at least 1",
        ),
        (
            "  max_subscribers: 4096",
            "  max_subscribers: 0",
            "mi.max_subscribers: must be at least 1",
        ),
        (
            "  max_events: 1024",
            "  max_events: 0",
            "mi.max_events: must be at least 1",
        ),
        (
            "  max_request_bytes: 65536",
            "  max_request_bytes: 511",
            "mi.max_request_bytes: must be 512 to 16777216",
        ),
        // A list names the item, by its index and its own line.
        (
            "    - ::1/128",
            "    - ::1/129",
            "mi.allow_targets[1]: \"::1/129\": the prefix length must be 0 to 128",
        ),
        (
            "    - udp:127.0.0.1:8080",
            "    - tcp:127.0.0.1:8080",
            "mi.listen[0]: invalid socket spec \"tcp:127.0.0.1:8080\"",
        ),
        (
            "  - E_UL_CONTACT_INSERT\n",
            "  - \"E_UL\\nCONTACT\"\n",
            "events[1]: invalid event name",
        ),
    ] {
        let line = line_of(from.trim_end());
        let to = to.trim_end();
        let err = parse_error(&example_with(from, to));
        let column = value_column(to);
        assert!(
            err.contains(&format!("line {line} column {column}: {message}")),
            "{to}: {err}"
        );
        assert!(err.contains(&format!("{line} | {to}")), "{to}: {err}");
    }
}

#[test]
fn a_check_of_two_keys_together_names_the_file_and_the_key() {
    let dir = TempDir::new("config-remote");
    let path = dir.join("remote.yaml");
    std::fs::write(&path, "mi:\n  listen: ['udp:10.0.0.1:8080']\n").unwrap();
    let err = Config::from_file(&path).unwrap_err();
    assert!(matches!(err, ConfigError::Invalid(_)), "{err:?}");
    let err = err.to_string();
    assert!(
        err.starts_with(&format!("{}: mi.listen[0]: ", path.display())),
        "{err}"
    );
    assert!(err.contains("mi.allow_remote_control: true"), "{err}");
}

/// The example with the value lines of the section starting at `section` (up to the next
/// top-level line) commented out.
fn example_with_section_commented_out(section: &str) -> String {
    let text = std::fs::read_to_string(EXAMPLE).unwrap();
    let mut inside = false;
    let mut out = String::new();
    for line in text.lines() {
        if !line.starts_with([' ', '#']) && !line.is_empty() {
            inside = line == section;
        }
        if inside && line.starts_with(' ') && !line.trim_start().starts_with('#') {
            out.push('#');
        }
        out.push_str(line);
        out.push('\n');
    }
    assert!(out != text, "{section} found");
    out
}

#[test]
fn a_section_or_list_left_empty_is_its_default() {
    let example = Config::from_file(Path::new(EXAMPLE)).unwrap();
    // Every section of the example with its values commented out.
    for section in ["dispatcher:", "events:", "subscriptions:", "mi:"] {
        let config = Config::from_yaml(&example_with_section_commented_out(section))
            .unwrap_or_else(|e| panic!("{section} commented out: {e}"));
        let default = Config::default();
        let expected = match section {
            "dispatcher:" => Config {
                dispatcher: default.dispatcher,
                ..example.clone()
            },
            "events:" => Config {
                events: default.events,
                ..example.clone()
            },
            "subscriptions:" => Config {
                subscriptions: default.subscriptions,
                ..example.clone()
            },
            _ => Config {
                mi: default.mi,
                ..example.clone()
            },
        };
        assert_eq!(config, expected, "{section} commented out");
    }
    for yaml in [
        "dispatcher:\n",
        "dispatcher: ~\n",
        "dispatcher:\n  # batch: 64\n",
        "events:\n  # - E_A\n",
        "subscriptions:\n  # - {event: E_A, socket: 'unix:/tmp/a'}\n",
        "mi:\n  # max_events: 3\n",
        // A list in a section: its default, not an empty list.
        "mi:\n  listen:\n    # - unix:/tmp/mi.sock\n  allow_targets:\n    # - unix\n",
        "dispatcher:\nevents:\nsubscriptions:\nmi:\n",
    ] {
        let config = Config::from_yaml(yaml).unwrap_or_else(|e| panic!("{yaml}: {e}"));
        assert_eq!(config, Config::default(), "{yaml}");
    }
    // An empty list is still empty.
    let config = Config::from_yaml("mi:\n  allow_targets: []\n").unwrap();
    assert!(config.mi.allow_targets.is_empty());
}

#[test]
fn expire_takes_seconds_or_never_in_every_form_it_took() {
    for (value, expected) in [
        ("0", ExpireSetting::Secs(0)),
        ("3600", ExpireSetting::Secs(3600)),
        ("+60", ExpireSetting::Secs(60)),
        ("-0", ExpireSetting::Secs(0)),
        ("0x3c", ExpireSetting::Secs(60)),
        ("1_000", ExpireSetting::Secs(1000)),
        ("18446744073709551615", ExpireSetting::Secs(u64::MAX)),
        ("never", ExpireSetting::Word(NeverWord::Never)),
        ("'never'", ExpireSetting::Word(NeverWord::Never)),
        ("\"never\"", ExpireSetting::Word(NeverWord::Never)),
    ] {
        let config = Config::from_yaml(&example_with(
            "    expire: 3600",
            &format!("    expire: {value}"),
        ))
        .unwrap_or_else(|e| panic!("{value}: {e}"));
        assert_eq!(config.subscriptions[1].expire, Some(expected), "{value}");
    }
}

#[test]
fn a_bad_expire_says_what_is_accepted() {
    let line = line_of("    expire: 3600");
    let expected =
        "subscriptions[1].expire: expected seconds (a whole number, 0 = never) or `never`, found";
    for (value, found) in [
        ("-1", "integer `-1`"),
        ("1.5", "floating point `1.5`"),
        ("Never", "string \"Never\" (write never in lower case)"),
        ("\"60\"", "string \"60\" (write the seconds without quotes)"),
        ("[60]", "sequence"),
    ] {
        let err = parse_error(&example_with(
            "    expire: 3600",
            &format!("    expire: {value}"),
        ));
        assert!(
            err.contains(&format!("line {line} column 13: {expected} {found}")),
            "{value}: {err}"
        );
    }
    let err = parse_error(&example_with(
        "    expire: 3600",
        "    expire: 99999999999999999999",
    ));
    assert!(
        err.contains(&format!(
            "line {line} column 13: subscriptions[1].expire: too many seconds (at most 18446744073709551615; 0 or `never` for no expiry)"
        )),
        "{err}"
    );
}

/// Runs `evdgram serve args...`, which is to fail at start; returns its stderr.
fn serve_failing(args: &[&str]) -> String {
    let mut child = Command::new(EVDGRAM)
        .arg("serve")
        .args(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let exited = wait_until(Duration::from_secs(10), || {
        child.try_wait().unwrap().is_some()
    });
    if !exited {
        let _ = child.kill();
    }
    let output = child.wait_with_output().unwrap();
    assert!(exited, "serve {args:?} still running");
    // A configuration that cannot be used is a usage error.
    assert_eq!(output.status.code(), Some(2), "serve {args:?}");
    String::from_utf8(output.stderr).unwrap()
}

#[test]
fn serve_reports_a_config_error_once_with_file_line_and_key() {
    let missing = "/nonexistent/evdgram.yaml";
    let os_error = std::fs::read(missing).unwrap_err().to_string();
    let err = serve_failing(&["--config", missing]);
    assert_eq!(err, format!("evdgram: cannot read {missing}: {os_error}\n"));
    // anyhow's chain as the library's callers may print it: the OS error once.
    let chain = format!(
        "{:#}",
        anyhow::Error::new(Config::from_file(Path::new(missing)).unwrap_err())
    );
    assert_eq!(chain, format!("cannot read {missing}: {os_error}"));

    let dir = TempDir::new("config-serve");
    let path = dir.join("bad.yaml");
    std::fs::write(&path, "dispatcher:\n  batch: 0\n").unwrap();
    let err = serve_failing(&["--config", path.to_str().unwrap()]);
    assert!(
        err.starts_with(&format!(
            "evdgram: {}: error: line 2 column 10: dispatcher.batch: must be 1 to 4096",
            path.display()
        )),
        "{err}"
    );
}

#[test]
fn the_mi_sockets_to_bind_are_the_ones_checked() {
    let mut mi = Config::default().mi;
    mi.listen = vec!["udp:127.0.0.1:0".into(), "unix:/tmp/x.sock".into()];
    let targets: Vec<String> = mi
        .listen_targets()
        .expect("loopback and UNIX")
        .iter()
        .map(ToString::to_string)
        .collect();
    assert_eq!(targets, ["udp:127.0.0.1:0", "unix:/tmp/x.sock"]);
    mi.listen.push("udp:10.0.0.1:8080".into());
    let err = mi.listen_targets().unwrap_err().to_string();
    assert!(err.starts_with("mi.listen[2]: "), "{err}");
    mi.allow_remote_control = true;
    assert_eq!(mi.listen_targets().expect("allowed").len(), 3);
}

/// A configuration built in code is checked as a file's is: a dispatcher with a bound of zero
/// does not start, and the error names the key.
#[test]
fn a_dispatcher_configured_in_code_with_a_zero_bound_does_not_start() {
    let zero = |set: fn(&mut DispatcherConfig)| {
        let mut config = DispatcherConfig::default();
        set(&mut config);
        config
    };
    for (config, message) in [
        (
            zero(|c| c.queue_capacity = 0),
            "dispatcher.queue_capacity: must be 1 to 1048576",
        ),
        (
            zero(|c| c.queue_bytes = 0),
            "dispatcher.queue_bytes: must be at least 1",
        ),
        (
            zero(|c| c.retry_queue = 0),
            "dispatcher.retry_queue: must be at least 1",
        ),
        (
            zero(|c| c.retry_queue_bytes = 0),
            "dispatcher.retry_queue_bytes: must be at least 1",
        ),
    ] {
        let err = config.validate().unwrap_err().to_string();
        assert_eq!(err, message);
        let err = Dispatcher::start(config).expect_err(message).to_string();
        assert!(err.contains(message), "{err}");
    }
}
