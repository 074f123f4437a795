//! Socket specs: parsing, printing, equality.

use std::collections::HashSet;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::time::Duration;

use event_datagram::target::{MAX_ABSTRACT_NAME, MAX_UNIX_PATH};
use event_datagram::{Target, TargetError, UnixAddr};
use proptest::prelude::*;

const FORMS: &str = "expected udp:HOST:PORT, udp:[IPv6]:PORT, unix:/path, unix:@name or /path";

fn udp(ip: IpAddr, port: u16) -> Target {
    Target::Udp(SocketAddr::new(ip, port))
}

fn unix_path(p: &str) -> Target {
    Target::Unix(UnixAddr::Path(PathBuf::from(p)))
}

fn parse(spec: &str) -> Target {
    Target::parse(spec).unwrap_or_else(|e| panic!("{spec:?}: {e}"))
}

fn parse_err(spec: &str) -> TargetError {
    let err = match Target::parse(spec) {
        Ok(t) => panic!("{spec:?} parsed as {t:?}"),
        Err(e) => e,
    };
    let msg = err.to_string();
    assert!(msg.contains(FORMS), "{spec:?}: {msg}");
    assert!(msg.contains(&format!("{spec:?}")), "{spec:?}: {msg}");
    err
}

#[test]
fn accepted_forms_parse_and_print_canonically() {
    let long_path = format!("/{}", "p".repeat(MAX_UNIX_PATH - 1));
    let long_name = "n".repeat(MAX_ABSTRACT_NAME);
    let cases: Vec<(&str, Target, &str)> = vec![
        (
            "udp:127.0.0.1:9000",
            udp(Ipv4Addr::LOCALHOST.into(), 9000),
            "udp:127.0.0.1:9000",
        ),
        (
            "udp:10.1.2.3:1",
            udp(Ipv4Addr::new(10, 1, 2, 3).into(), 1),
            "udp:10.1.2.3:1",
        ),
        (
            "udp:0.0.0.0:65535",
            udp(Ipv4Addr::UNSPECIFIED.into(), 65535),
            "udp:0.0.0.0:65535",
        ),
        (
            "udp:127.0.0.1:09000",
            udp(Ipv4Addr::LOCALHOST.into(), 9000),
            "udp:127.0.0.1:9000",
        ),
        (
            "udp:[::1]:9000",
            udp(Ipv6Addr::LOCALHOST.into(), 9000),
            "udp:[::1]:9000",
        ),
        (
            "udp:[2001:db8::1]:5060",
            udp("2001:db8::1".parse().unwrap(), 5060),
            "udp:[2001:db8::1]:5060",
        ),
        (
            // An IPv4-mapped address is the IPv4 address it maps.
            "udp:[::ffff:127.0.0.1]:9000",
            udp(IpAddr::V4(Ipv4Addr::LOCALHOST), 9000),
            "udp:127.0.0.1:9000",
        ),
        (
            "unix:/tmp/ev.sock",
            unix_path("/tmp/ev.sock"),
            "unix:/tmp/ev.sock",
        ),
        (
            "/tmp/ev.sock",
            unix_path("/tmp/ev.sock"),
            "unix:/tmp/ev.sock",
        ),
        ("unix:/a b/c", unix_path("/a b/c"), "unix:/a b/c"),
        ("unix:/", unix_path("/"), "unix:/"),
        (
            "unix:@events",
            Target::Unix(UnixAddr::Abstract(b"events".to_vec())),
            "unix:@events",
        ),
        (
            "unix:@a/b@c",
            Target::Unix(UnixAddr::Abstract(b"a/b@c".to_vec())),
            "unix:@a/b@c",
        ),
        (
            "unix:@日本",
            Target::Unix(UnixAddr::Abstract("日本".as_bytes().to_vec())),
            "unix:@日本",
        ),
    ];
    for (spec, want, canonical) in cases {
        let got = parse(spec);
        assert_eq!(got, want, "{spec:?}");
        assert_eq!(got.to_string(), canonical, "{spec:?}");
        assert_eq!(parse(canonical), got, "{spec:?} round trip");
        let via_from_str: Target = spec.parse().unwrap();
        assert_eq!(via_from_str, got);
    }
    // The limits are inclusive.
    let long = format!("unix:{long_path}");
    assert_eq!(long_path.len(), 107);
    assert_eq!(parse(&long).to_string(), long);
    assert_eq!(parse(&long_path), unix_path(&long_path));
    let long = format!("unix:@{long_name}");
    assert_eq!(parse(&long).to_string(), long);
}

#[test]
fn host_names_resolve_when_parsed() {
    let t = parse("udp:localhost:9000");
    let Target::Udp(addr) = t else {
        panic!("{t:?}")
    };
    assert!(addr.ip().is_loopback(), "{addr}");
    assert_eq!(addr.port(), 9000);
    assert!(t.is_loopback());
    // It prints as the address it resolved to, which parses back.
    assert_eq!(parse(&t.to_string()), t);
    // (A name that does not resolve is not tried here: that would ask a DNS server, off this
    // host. `localhost` is answered from /etc/hosts.)
}

#[test]
fn every_error_has_its_variant_and_names_the_accepted_forms() {
    use TargetError as E;
    let long_path = format!("unix:/{}", "p".repeat(MAX_UNIX_PATH));
    let long_bare = format!("/{}", "p".repeat(MAX_UNIX_PATH));
    let long_name = format!("unix:@{}", "n".repeat(MAX_ABSTRACT_NAME + 1));
    #[allow(clippy::type_complexity)]
    let cases: Vec<(&str, fn(&TargetError) -> bool)> = vec![
        (
            "tcp:127.0.0.1:9000",
            |e| matches!(e, E::UnknownScheme { scheme, .. } if scheme == "tcp"),
        ),
        ("UDP:127.0.0.1:9000", |e| {
            matches!(e, E::UnknownScheme { .. })
        }),
        ("", |e| matches!(e, E::UnknownForm { .. })),
        ("foo", |e| matches!(e, E::UnknownForm { .. })),
        ("./foo", |e| matches!(e, E::UnknownForm { .. })),
        ("@name", |e| matches!(e, E::UnknownForm { .. })),
        (":9000", |e| matches!(e, E::UnknownForm { .. })),
        (
            " udp:127.0.0.1:9000",
            |e| matches!(e, E::UnknownForm { reason, .. } if reason.contains("whitespace")),
        ),
        ("udp:127.0.0.1:9000\n", |e| {
            matches!(e, E::UnknownForm { .. })
        }),
        ("unix:/tmp/x ", |e| matches!(e, E::UnknownForm { .. })),
        ("udp:127.0.0.1", |e| matches!(e, E::MissingPort { .. })),
        ("udp:127.0.0.1:", |e| matches!(e, E::MissingPort { .. })),
        ("udp:[::1]", |e| matches!(e, E::MissingPort { .. })),
        ("udp:[::1]:", |e| matches!(e, E::MissingPort { .. })),
        ("udp:localhost", |e| matches!(e, E::MissingPort { .. })),
        (
            "udp:127.0.0.1:0",
            |e| matches!(e, E::PortOutOfRange { port, .. } if port == "0"),
        ),
        (
            "udp:127.0.0.1:70000",
            |e| matches!(e, E::PortOutOfRange { port, .. } if port == "70000"),
        ),
        ("udp:127.0.0.1:65536", |e| {
            matches!(e, E::PortOutOfRange { .. })
        }),
        ("udp:127.0.0.1:99999999999999999999999", |e| {
            matches!(e, E::PortOutOfRange { .. })
        }),
        ("udp:[::1]:0", |e| matches!(e, E::PortOutOfRange { .. })),
        (
            "udp:127.0.0.1:http",
            |e| matches!(e, E::InvalidPort { port, .. } if port == "http"),
        ),
        ("udp:127.0.0.1:-1", |e| matches!(e, E::InvalidPort { .. })),
        ("udp:127.0.0.1:+9", |e| matches!(e, E::InvalidPort { .. })),
        ("udp:127.0.0.1:9 0", |e| matches!(e, E::InvalidPort { .. })),
        ("udp::9000", |e| matches!(e, E::EmptyAddress { .. })),
        ("udp:", |e| matches!(e, E::EmptyAddress { .. })),
        ("udp:[]:9000", |e| matches!(e, E::EmptyAddress { .. })),
        ("unix:", |e| matches!(e, E::EmptyAddress { .. })),
        ("unix:@", |e| matches!(e, E::EmptyAddress { .. })),
        ("unix:foo", |e| matches!(e, E::RelativePath { .. })),
        ("unix:./foo", |e| matches!(e, E::RelativePath { .. })),
        ("unix:/tmp/a\0b", |e| matches!(e, E::NulByte { .. })),
        ("/tmp/a\0b", |e| matches!(e, E::NulByte { .. })),
        ("unix:@a\0b", |e| matches!(e, E::NulByte { .. })),
        (&long_path, |e| {
            matches!(
                e,
                E::PathTooLong {
                    len: 108,
                    max: 107,
                    ..
                }
            )
        }),
        (&long_bare, |e| {
            matches!(
                e,
                E::PathTooLong {
                    len: 108,
                    max: 107,
                    ..
                }
            )
        }),
        (&long_name, |e| {
            matches!(
                e,
                E::PathTooLong {
                    len: 108,
                    max: 107,
                    ..
                }
            )
        }),
        ("udp:::1:9000", |e| {
            matches!(e, E::Ipv6WithoutBrackets { .. })
        }),
        ("udp:::1", |e| matches!(e, E::Ipv6WithoutBrackets { .. })),
        ("udp:2001:db8::1:9000", |e| {
            matches!(e, E::Ipv6WithoutBrackets { .. })
        }),
        ("udp:[127.0.0.1]:9000", |e| {
            matches!(e, E::InvalidHost { .. })
        }),
        ("udp:[::1]9000", |e| matches!(e, E::InvalidHost { .. })),
        ("udp:[::1:9000", |e| matches!(e, E::InvalidHost { .. })),
        ("udp:1.2.3:9000", |e| matches!(e, E::InvalidHost { .. })),
        // What the resolver would read as IPv4 shorthands: not names.
        ("udp:127.1:9000", |e| matches!(e, E::InvalidHost { .. })),
        ("udp:0x7f000001:9000", |e| {
            matches!(e, E::InvalidHost { .. })
        }),
        ("udp:0x7f.1:9000", |e| matches!(e, E::InvalidHost { .. })),
        ("udp:0X7F.0.0.01:9000", |e| {
            matches!(e, E::InvalidHost { .. })
        }),
        ("udp:1.2.3.4.5:9000", |e| matches!(e, E::InvalidHost { .. })),
        ("udp:127.0.0.1.:9000", |e| {
            matches!(e, E::InvalidHost { .. })
        }),
        // A ':' too many is said as such, not as an IPv6 address without brackets.
        (
            "udp:127.0.0.1:9000:",
            |e| matches!(e, E::InvalidHost { reason, .. } if reason.contains("more than one ':'")),
        ),
        (
            "udp:127.0.0.1::9000",
            |e| matches!(e, E::InvalidHost { reason, .. } if reason.contains("more than one ':'")),
        ),
        (
            "udp:localhost:9000:",
            |e| matches!(e, E::InvalidHost { reason, .. } if reason.contains("more than one ':'")),
        ),
        ("udp:256.1.1.1:9000", |e| matches!(e, E::InvalidHost { .. })),
        ("udp:a b:9000", |e| matches!(e, E::InvalidHost { .. })),
        ("udp:exa/mple:9000", |e| matches!(e, E::InvalidHost { .. })),
    ];
    for (spec, is_variant) in cases {
        let err = parse_err(spec);
        assert!(is_variant(&err), "{spec:?}: unexpected {err:?}");
    }
}

#[test]
fn error_messages_read_well() {
    assert_eq!(
        parse_err("udp:127.0.0.1:70000").to_string(),
        format!("invalid socket spec \"udp:127.0.0.1:70000\": port 70000 is out of range 1-65535 ({FORMS})")
    );
    assert_eq!(
        parse_err("tcp:127.0.0.1:9000").to_string(),
        format!("invalid socket spec \"tcp:127.0.0.1:9000\": unknown scheme \"tcp\" ({FORMS})")
    );
}

#[test]
fn equality_is_exact_not_by_prefix() {
    assert_ne!(parse("unix:/a/b"), parse("unix:/a/bc"));
    // An IPv4-mapped IPv6 address is the IPv4 address: one receiver, one target.
    let mapped = parse("udp:[::ffff:127.0.0.1]:9000");
    assert_eq!(mapped, parse("udp:127.0.0.1:9000"));
    assert_eq!(mapped.to_string(), "udp:127.0.0.1:9000");
    assert_ne!(parse("unix:/a/bc"), parse("unix:/a/b"));
    assert_eq!(parse("unix:/a/b"), parse("/a/b"));
    // Exact bytes, not path components.
    assert_ne!(parse("unix:/a/b"), parse("unix:/a/b/"));
    assert_ne!(parse("unix:/a/b"), parse("unix:/a//b"));
    assert_ne!(parse("unix:@x"), parse("unix:/x"));
    assert_ne!(parse("udp:127.0.0.1:9000"), parse("udp:127.0.0.1:9001"));
    assert_ne!(parse("udp:127.0.0.1:9000"), parse("udp:127.0.0.2:9000"));
    let set: HashSet<Target> = [
        "unix:/a/b",
        "/a/b",
        "unix:/a/bc",
        "unix:/a/b/",
        "udp:127.0.0.1:9000",
    ]
    .into_iter()
    .map(parse)
    .collect();
    assert_eq!(set.len(), 4);
}

#[test]
fn loopback_and_transport() {
    for (spec, loopback, transport) in [
        ("udp:127.0.0.1:9000", true, "udp"),
        ("udp:127.255.0.9:9000", true, "udp"),
        ("udp:[::1]:9000", true, "udp"),
        ("udp:[::ffff:127.0.0.1]:9000", true, "udp"),
        ("udp:10.0.0.1:9000", false, "udp"),
        ("udp:0.0.0.0:9000", false, "udp"),
        ("udp:[::]:9000", false, "udp"),
        ("udp:[::ffff:10.0.0.1]:9000", false, "udp"),
        ("udp:[2001:db8::1]:9000", false, "udp"),
        ("unix:/tmp/x", true, "unix"),
        ("unix:@x", true, "unix"),
    ] {
        let t = parse(spec);
        assert_eq!(t.is_loopback(), loopback, "{spec}");
        assert_eq!(t.transport(), transport, "{spec}");
    }
}

#[test]
fn unix_socket_addrs_bind_and_connect() {
    assert!(parse("udp:127.0.0.1:9000").unix_socket_addr().is_none());

    let dir = std::env::temp_dir().join(format!("evdgram-target-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let path = dir.join("t.sock");
    let _ = std::fs::remove_file(&path);
    let abstract_name = format!("evdgram-target-test-{}", std::process::id());
    for spec in [
        format!("unix:{}", path.display()),
        format!("unix:@{abstract_name}"),
    ] {
        let t = parse(&spec);
        let addr = t.unix_socket_addr().unwrap().unwrap();
        let rx = UnixDatagram::bind_addr(&addr).unwrap();
        rx.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let tx = UnixDatagram::unbound().unwrap();
        tx.connect_addr(&addr).unwrap();
        tx.send(b"E_TEST\n\n").unwrap();
        let mut buf = [0u8; 64];
        let n = rx.recv(&mut buf).unwrap();
        assert_eq!(&buf[..n], b"E_TEST\n\n", "{spec}");
    }
    assert!(path.exists());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn serde_uses_the_spec_string() {
    let t: Target = serde_json::from_str("\"udp:[::1]:9000\"").unwrap();
    assert_eq!(t, parse("udp:[::1]:9000"));
    assert_eq!(serde_json::to_string(&t).unwrap(), "\"udp:[::1]:9000\"");
    let err = serde_json::from_str::<Target>("\"udp:127.0.0.1:0\"").unwrap_err();
    assert!(err.to_string().contains(FORMS), "{err}");
}

/// Valid specs in canonical form (what `Display` prints), and a few non-canonical ones with
/// their canonical form.
fn valid_spec() -> impl Strategy<Value = (String, String)> {
    let port = 1u16..=65535;
    let v4 = (any::<[u8; 4]>(), port.clone()).prop_map(|(o, p)| {
        let s = format!("udp:{}.{}.{}.{}:{p}", o[0], o[1], o[2], o[3]);
        (s.clone(), s)
    });
    let v6 = (any::<u128>(), port.clone()).prop_map(|(bits, p)| {
        let ip = Ipv6Addr::from(bits);
        // The generated text need not be canonical (no `::` compression): Display makes it so.
        let full: Vec<String> = ip.segments().iter().map(|s| format!("{s:x}")).collect();
        (
            format!("udp:[{}]:{p}", full.join(":")),
            format!("udp:[{ip}]:{p}"),
        )
    });
    let path_char = prop::sample::select("abcXYZ019 -_.@:/é日".chars().collect::<Vec<char>>());
    let path = prop::collection::vec(path_char.clone(), 0..60)
        .prop_map(|cs| format!("/{}", cs.into_iter().collect::<String>()))
        .prop_filter("at most 107 bytes, no trailing whitespace", |p| {
            p.len() <= MAX_UNIX_PATH && !p.ends_with(' ')
        });
    let unix = path.clone().prop_map(|p| {
        let s = format!("unix:{p}");
        (s.clone(), s)
    });
    let bare = path.prop_map(|p| (p.clone(), format!("unix:{p}")));
    let name = prop::collection::vec(path_char, 1..60)
        .prop_map(|cs| cs.into_iter().collect::<String>())
        .prop_filter("at most 107 bytes, no trailing whitespace", |n| {
            n.len() <= MAX_ABSTRACT_NAME && !n.ends_with(' ')
        })
        .prop_map(|n| {
            let s = format!("unix:@{n}");
            (s.clone(), s)
        });
    prop_oneof![v4, v6, unix, bare, name]
}

proptest! {
    #[test]
    fn display_of_parse_is_identity_on_valid_specs((spec, canonical) in valid_spec()) {
        let t = Target::parse(&spec).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(t.to_string(), canonical.clone());
        let again = Target::parse(&canonical).map_err(|e| TestCaseError::fail(e.to_string()))?;
        prop_assert_eq!(again, t);
    }
}

#[test]
fn a_socket_to_bind_may_ask_for_any_free_udp_port() {
    for spec in ["udp:127.0.0.1:0", "udp:[::1]:0", "udp:localhost:0"] {
        let t = Target::parse_bind(spec).unwrap();
        assert!(matches!(t, Target::Udp(a) if a.port() == 0), "{spec}: {t}");
        // Not a destination.
        assert!(matches!(
            Target::parse(spec),
            Err(TargetError::PortOutOfRange { .. })
        ));
    }
    // Everything else is as for a destination.
    for spec in [
        "udp:127.0.0.1:65536",
        "udp:127.0.0.1:x",
        "udp:127.0.0.1",
        "tcp:1.2.3.4:5",
    ] {
        assert_eq!(
            Target::parse_bind(spec).unwrap_err().to_string(),
            Target::parse(spec).unwrap_err().to_string()
        );
    }
    assert_eq!(
        Target::parse_bind("unix:/tmp/x.sock").unwrap(),
        Target::parse("unix:/tmp/x.sock").unwrap()
    );
}
