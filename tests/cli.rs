//! The `evdgram` binary, run for real: `encode` against the shared vectors and its error cases,
//! `listen` on UNIX and UDP loopback sockets with real datagrams, and its exit on SIGTERM/SIGINT.
//!
//! Every wait is bounded ([`DEADLINE`]) and every child is killed if a test fails.

use std::io::{BufRead, BufReader, Read};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::fd::{FromRawFd, OwnedFd};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError};
use std::thread;
use std::time::{Duration, Instant};

use event_datagram::{Format, Params, MAX_DATAGRAM};
use serde_json::Value as Json;

const EVDGRAM: &str = env!("CARGO_BIN_EXE_evdgram");
const DEADLINE: Duration = Duration::from_secs(10);
const LINE_VECTORS: &str = include_str!("vectors/line.jsonl");
const JSONRPC_VECTORS: &str = include_str!("vectors/jsonrpc.jsonl");

// ---------------------------------------------------------------------------------------------
// Helpers

/// A child process, killed and reaped when dropped (a failed test leaves nothing running).
struct ChildGuard(Option<Child>);

impl ChildGuard {
    fn child(&mut self) -> &mut Child {
        self.0.as_mut().expect("child already reaped")
    }

    fn pid(&mut self) -> libc::pid_t {
        libc::pid_t::try_from(self.child().id()).unwrap()
    }

    /// Waits for the exit, at most [`DEADLINE`].
    fn wait(&mut self) -> ExitStatus {
        let start = Instant::now();
        loop {
            if let Some(status) = self.child().try_wait().unwrap() {
                self.0 = None;
                return status;
            }
            assert!(
                start.elapsed() < DEADLINE,
                "evdgram did not exit within {DEADLINE:?}"
            );
            thread::sleep(Duration::from_millis(10));
        }
    }

    fn signal(&mut self, sig: libc::c_int) {
        let pid = self.pid();
        // SAFETY: kill(2) has no memory-safety preconditions; `pid` is our own child, not yet
        // reaped (the guard still holds it), so the pid cannot have been reused.
        let rc = unsafe { libc::kill(pid, sig) };
        assert_eq!(rc, 0, "kill: {}", std::io::Error::last_os_error());
    }
}

impl Drop for ChildGuard {
    fn drop(&mut self) {
        if let Some(mut child) = self.0.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Reads `r` line by line on a thread; the lines arrive on the returned channel.
fn lines_of(r: impl Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = mpsc::channel();
    thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    rx
}

/// A finished `evdgram` run.
struct Run {
    status: ExitStatus,
    stdout: Vec<u8>,
    stderr: String,
}

/// Runs `evdgram args...` to completion, bounded by [`DEADLINE`].
fn evdgram(args: &[&str]) -> Run {
    let mut command = Command::new(EVDGRAM);
    command.args(args);
    run(command)
}

/// Runs `command` to completion, bounded by [`DEADLINE`]; without `EVDGRAM_BACKEND`, which
/// would choose the backend of the tests that give no `--backend`.
fn run(mut command: Command) -> Run {
    command.env_remove(event_datagram::BACKEND_ENV);
    run_with_env(command)
}

/// Runs `command` to completion, bounded by [`DEADLINE`], with the environment it was given.
fn run_with_env(mut command: Command) -> Run {
    let mut child = ChildGuard(Some(
        command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap(),
    ));
    let mut stdout = child.child().stdout.take().unwrap();
    let mut stderr = child.child().stderr.take().unwrap();
    let out = thread::spawn(move || {
        let mut v = Vec::new();
        stdout.read_to_end(&mut v).map(|_| v)
    });
    let err = thread::spawn(move || {
        let mut s = String::new();
        stderr.read_to_string(&mut s).map(|_| s)
    });
    let status = child.wait();
    Run {
        status,
        stdout: out.join().unwrap().unwrap(),
        stderr: err.join().unwrap().unwrap(),
    }
}

fn unhex(s: &str) -> Vec<u8> {
    (0..s.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(&s[i..i + 2], 16).unwrap())
        .collect()
}

/// A temporary directory, removed when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        static N: AtomicUsize = AtomicUsize::new(0);
        let dir = std::env::temp_dir().join(format!(
            "evdgram-cli-{}-{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).unwrap();
        TempDir(dir)
    }

    fn join(&self, name: &str) -> PathBuf {
        self.0.join(name)
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

// ---------------------------------------------------------------------------------------------
// The shared vectors

struct Vector {
    case: String,
    format: Format,
    event: String,
    params: Vec<Json>,
    bytes: Vec<u8>,
}

fn vectors() -> Vec<Vector> {
    LINE_VECTORS
        .lines()
        .chain(JSONRPC_VECTORS.lines())
        .filter(|l| !l.trim().is_empty())
        .map(|l| {
            let v: Json = serde_json::from_str(l).unwrap();
            Vector {
                case: v["case"].as_str().unwrap().to_owned(),
                format: v["format"].as_str().unwrap().parse().unwrap(),
                event: v["event"].as_str().unwrap().to_owned(),
                params: v["params"].as_array().unwrap().clone(),
                bytes: unhex(v["bytes_hex"].as_str().unwrap()),
            }
        })
        .collect()
}

impl Vector {
    /// `--params` for this case: an object when the params are named (duplicate keys written
    /// out as they come), an array when unnamed; `None` without params.
    fn params_json(&self) -> Option<String> {
        if self.params.is_empty() {
            return None;
        }
        let named = self.params[0].get("name").is_some();
        let mut items = Vec::new();
        for p in &self.params {
            assert_eq!(
                p.get("name").is_some(),
                named,
                "{}: mixed named and unnamed params",
                self.case
            );
            let value = serde_json::to_string(&p["value"]).unwrap();
            items.push(match p.get("name") {
                Some(name) => format!("{}:{value}", serde_json::to_string(name).unwrap()),
                None => value,
            });
        }
        Some(if named {
            format!("{{{}}}", items.join(","))
        } else {
            format!("[{}]", items.join(","))
        })
    }

    /// The line `evdgram listen` prints for this datagram.
    fn listen_line(&self) -> String {
        // A jsonrpc array drops names; a line-format empty name is written as no name.
        let array = self.format == Format::Jsonrpc
            && self.params[..1.min(self.params.len())]
                .iter()
                .any(|p| p.get("name").is_none());
        let params: Vec<Json> = self
            .params
            .iter()
            .map(|p| {
                let value = match (&p["value"], self.format) {
                    (Json::Number(n), Format::Line) => Json::String(n.to_string()),
                    (v, _) => v.clone(),
                };
                let name = match p.get("name") {
                    Some(Json::String(n)) if self.format == Format::Line && n.is_empty() => None,
                    _ if array => None,
                    other => other.cloned(),
                };
                match name {
                    Some(name) => serde_json::json!({"name": name, "value": value}),
                    None => serde_json::json!({ "value": value }),
                }
            })
            .collect();
        serde_json::to_string(&serde_json::json!({"event": self.event, "params": params})).unwrap()
    }
}

// ---------------------------------------------------------------------------------------------
// encode

#[test]
fn encode_writes_exactly_the_vector_bytes() {
    let vectors = vectors();
    assert!(vectors.len() >= 20, "{} vectors", vectors.len());
    for v in &vectors {
        let params = v.params_json();
        let mut args = vec!["encode", "--format", v.format.as_str(), &v.event];
        if let Some(p) = &params {
            args.extend(["--params", p]);
        }
        let run = evdgram(&args);
        assert!(
            run.status.success(),
            "{} {}: {:?} {}",
            v.format,
            v.case,
            run.status,
            run.stderr
        );
        assert_eq!(
            run.stdout,
            v.bytes,
            "{} {}: {:?}",
            v.format,
            v.case,
            String::from_utf8_lossy(&run.stdout)
        );
        assert_eq!(run.stderr, "", "{} {}", v.format, v.case);
    }
}

#[test]
fn encode_defaults_to_line_and_accepts_empty_params() {
    for args in [
        &["encode", "E_TEST"][..],
        &["encode", "E_TEST", "--params", "{}"],
        &["encode", "E_TEST", "--params", "[]"],
        &["encode", "--format", "line", "E_TEST", "--params", " [ ] "],
    ] {
        let run = evdgram(args);
        assert!(run.status.success(), "{args:?}: {}", run.stderr);
        assert_eq!(run.stdout, b"E_TEST\n\n", "{args:?}");
    }
    let run = evdgram(&["encode", "--format", "jsonrpc", "E_TEST", "--params", "{}"]);
    assert_eq!(run.stdout, br#"{"jsonrpc":"2.0","method":"E_TEST"}"#);
}

#[test]
fn encode_keeps_duplicate_keys_in_order_and_ints_exact() {
    let run = evdgram(&[
        "encode",
        "--format",
        "jsonrpc",
        "E_TEST",
        "--params",
        r#"{"k":"1","z":9223372036854775807,"k":-9223372036854775808,"a":"x"}"#,
    ]);
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(
        String::from_utf8(run.stdout).unwrap(),
        r#"{"jsonrpc":"2.0","method":"E_TEST","params":{"k":"1","z":9223372036854775807,"k":-9223372036854775808,"a":"x"}}"#
    );
    let run = evdgram(&["encode", "E_TEST", "--params", r#"{"k":"1","k":2}"#]);
    assert_eq!(run.stdout, b"E_TEST\nk::1\nk::2\n\n");
}

#[test]
fn encode_errors_exit_2_with_nothing_on_stdout() {
    let too_big = format!(r#"["{}"]"#, "x".repeat(MAX_DATAGRAM));
    let just_fits = format!(r#"["{}"]"#, "x".repeat(MAX_DATAGRAM - "E\n\n\n".len()));
    let cases: Vec<(Vec<&str>, &str)> = vec![
        (vec!["encode", "E_T", "--params", r#"{"a":1.5}"#], "float"),
        (vec!["encode", "E_T", "--params", r#"{"a":1.0}"#], "float"),
        (
            vec!["encode", "E_T", "--params", r#"{"a":true}"#],
            "boolean",
        ),
        (vec!["encode", "E_T", "--params", r#"{"a":null}"#], "null"),
        (
            vec!["encode", "E_T", "--params", r#"{"a":{"b":1}}"#],
            "nested",
        ),
        (vec!["encode", "E_T", "--params", r#"["ok",[1]]"#], "nested"),
        (
            vec!["encode", "E_T", "--params", "[9223372036854775808]"],
            "i64 range",
        ),
        (
            vec!["encode", "E_T", "--params", "[-9223372036854775809]"],
            "i64 range",
        ),
        (
            vec!["encode", "E_T", "--params", "[18446744073709551616]"],
            "i64 range",
        ),
        (vec!["encode", "E_T", "--params", r#"{"a":1"#], "--params"),
        (vec!["encode", "E_T", "--params", "[1] [2]"], "--params"),
        (vec!["encode", "E_T", "--params", ""], "--params"),
        (vec!["encode", "E_T", "--params", r#""a""#], "object"),
        (vec!["encode", "E_T", "--params", "7"], "object"),
        (vec!["encode", "E_T", "--params", r#"{"a::b":1}"#], "'::'"),
        (
            vec!["encode", "E_T", "--params", r#"{"a\nb":1}"#],
            "line feed",
        ),
        (vec!["encode", "E_T", "--params", r#"{"a\"b":1}"#], "quote"),
        (vec!["encode", ""], "event name"),
        (vec!["encode", "E\nT"], "event name"),
        (vec!["encode", "E_T", "--params", &too_big], "65457"),
        (
            vec!["encode", "--format", "jsonrpc", "E", "--params", &just_fits],
            "65457",
        ),
        (vec!["encode", "--format", "xml", "E_T"], "xml"),
        (vec!["encode"], "EVENT"),
    ];
    for (args, needle) in &cases {
        let run = evdgram(args);
        let shown: Vec<_> = args.iter().map(|a| &a[..a.len().min(60)]).collect();
        assert_eq!(run.status.code(), Some(2), "{shown:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{shown:?}: stdout {:?}", run.stdout);
        assert!(
            run.stderr.contains(needle),
            "{shown:?}: {needle:?} not in {}",
            run.stderr
        );
    }
    // The line format fits the same event exactly at the limit.
    let run = evdgram(&["encode", "E", "--params", &just_fits]);
    assert!(run.status.success(), "{}", run.stderr);
    assert_eq!(run.stdout.len(), MAX_DATAGRAM);
}

/// A pipe's write end whose read end is closed: every write to it fails (`EPIPE`).
fn broken_pipe() -> OwnedFd {
    let mut fds = [0; 2];
    // SAFETY: pipe2 writes two fds into `fds`, valid for writes of two c_ints.
    let rc = unsafe { libc::pipe2(fds.as_mut_ptr(), libc::O_CLOEXEC) };
    assert_eq!(rc, 0, "pipe2: {}", std::io::Error::last_os_error());
    // SAFETY: both fds are fresh and open, and nothing else owns them.
    let (read, write) = unsafe { (OwnedFd::from_raw_fd(fds[0]), OwnedFd::from_raw_fd(fds[1])) };
    drop(read);
    write
}

/// `evdgram encode '' 2>&1 | true`: writing the error to a stderr nobody reads made it panic
/// (`eprintln!`) and exit 101; it exits with its documented status all the same.
#[test]
fn a_broken_stderr_keeps_the_documented_exit_status() {
    let dir = TempDir::new();
    let missing = format!("unix:{}", dir.join("nobody.sock").display());
    let cases: [(&[&str], i32); 2] = [
        (&["encode", ""], 2),
        // The library's line on the unreachable target, then ours on what was not sent.
        (&["raise", "--to", &missing, "E_T"], 1),
    ];
    for (args, want) in cases {
        let mut command = Command::new(EVDGRAM);
        command
            .args(args)
            .env_remove(event_datagram::BACKEND_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::from(broken_pipe()));
        let mut child = ChildGuard(Some(command.spawn().unwrap()));
        assert_eq!(child.wait().code(), Some(want), "{args:?}");
    }
}

#[test]
fn encode_error_messages_are_prefixed() {
    let run = evdgram(&["encode", "E_T", "--params", r#"{"a":1.5}"#]);
    assert_eq!(
        run.stderr,
        "evdgram: invalid --params: parameter \"a\": unsupported value: float 1.5 \
         (values must be strings or integers in the i64 range)\n"
    );
}

// ---------------------------------------------------------------------------------------------
// listen

/// A running `evdgram listen`.
struct Listener {
    child: ChildGuard,
    stdout: Receiver<String>,
    stderr: Receiver<String>,
    /// What it printed after `listening on `.
    bound: String,
}

impl Listener {
    fn spawn(args: &[&str]) -> Listener {
        Self::spawn_with(Command::new(EVDGRAM), args)
    }

    /// `evdgram listen ARGS` through `command` (`evdgram` itself, or a wrapper that runs it).
    fn spawn_with(mut command: Command, args: &[&str]) -> Listener {
        let mut child = ChildGuard(Some(
            command
                .arg("listen")
                .args(args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ));
        let stdout = lines_of(child.child().stdout.take().unwrap());
        let stderr = lines_of(child.child().stderr.take().unwrap());
        let mut l = Listener {
            child,
            stdout,
            stderr,
            bound: String::new(),
        };
        let first = l.stderr_line();
        l.bound = first
            .strip_prefix("listening on ")
            .unwrap_or_else(|| panic!("{args:?}: {first}"))
            .to_owned();
        l
    }

    fn line(rx: &Receiver<String>, what: &str) -> String {
        match rx.recv_timeout(DEADLINE) {
            Ok(line) => line,
            Err(RecvTimeoutError::Timeout) => panic!("no {what} line within {DEADLINE:?}"),
            Err(RecvTimeoutError::Disconnected) => panic!("{what} closed"),
        }
    }

    fn stdout_line(&self) -> String {
        Self::line(&self.stdout, "stdout")
    }

    fn stderr_line(&self) -> String {
        Self::line(&self.stderr, "stderr")
    }

    fn expect_lines(&self, want: &[&str]) {
        for w in want {
            assert_eq!(self.stdout_line(), *w);
        }
    }

    /// Sends `sig`; the listener must exit 0 with nothing more on stdout.
    fn stop_with(mut self, sig: libc::c_int) {
        self.child.signal(sig);
        let status = self.child.wait();
        assert!(status.success(), "{status:?}");
        // Only after the exit: stdout is closed, and nothing was left unread.
        assert_eq!(
            self.stdout.recv_timeout(DEADLINE),
            Err(RecvTimeoutError::Disconnected)
        );
    }
}

/// A datagram our encoder produces.
fn ours(format: Format, name: &str, params: &Params) -> Vec<u8> {
    let mut buf = vec![0u8; MAX_DATAGRAM];
    let n = format.encode(name, params, &mut buf).unwrap();
    buf.truncate(n);
    buf
}

/// What a listener prints for a datagram.
enum Want {
    /// These stdout lines.
    Lines(Vec<&'static str>),
    /// A stderr line with its length instead.
    Undecodable,
    /// The events before the malformed one on stdout, then a stderr line.
    Partly(Vec<&'static str>),
}

/// The datagrams every listener test sends, and what each gives.
fn script() -> Vec<(Vec<u8>, Want)> {
    let params = Params::new()
        .str("ip", "1.2.3.4")
        .unwrap()
        .unnamed_str("abc")
        .unwrap();
    let ints = Params::new()
        .int("n", -7)
        .unwrap()
        .str("s", "x")
        .unwrap()
        .int("n", i64::MAX)
        .unwrap();
    vec![
        (
            ours(Format::Line, "E_TEST", &params),
            Want::Lines(vec![
                r#"{"event":"E_TEST","params":[{"name":"ip","value":"1.2.3.4"},{"value":"abc"}]}"#,
            ]),
        ),
        (
            ours(Format::Line, "E_TEST", &ints),
            Want::Lines(vec![
                r#"{"event":"E_TEST","params":[{"name":"n","value":"-7"},{"name":"s","value":"x"},{"name":"n","value":"9223372036854775807"}]}"#,
            ]),
        ),
        // OpenSIPS 3.0.5 captures.
        (
            b"E_TEST\nv::\"say \\\"hi\\\"\nbye\"\n\n".to_vec(),
            Want::Lines(vec![
                r#"{"event":"E_TEST","params":[{"name":"v","value":"say \"hi\"\nbye"}]}"#,
            ]),
        ),
        (
            b"E_TEST\nn::18446744073709551615\n\n".to_vec(),
            Want::Lines(vec![
                r#"{"event":"E_TEST","params":[{"name":"n","value":"18446744073709551615"}]}"#,
            ]),
        ),
        // jsonrpc, ours (ints stay ints) and an array.
        (
            ours(Format::Jsonrpc, "E_RPC", &ints),
            Want::Lines(vec![
                r#"{"event":"E_RPC","params":[{"name":"n","value":-7},{"name":"s","value":"x"},{"name":"n","value":9223372036854775807}]}"#,
            ]),
        ),
        (
            br#"{"jsonrpc":"2.0","method":"E_RPC","params":[1,"two"]}"#.to_vec(),
            Want::Lines(vec![
                r#"{"event":"E_RPC","params":[{"value":1},{"value":"two"}]}"#,
            ]),
        ),
        // Two events packed in one datagram.
        (
            b"E_ONE\na::1\n\nE_TWO\n\n".to_vec(),
            Want::Lines(vec![
                r#"{"event":"E_ONE","params":[{"name":"a","value":"1"}]}"#,
                r#"{"event":"E_TWO","params":[]}"#,
            ]),
        ),
        // Undecodable: no closing empty line.
        (b"E_TEST\nv::x\n".to_vec(), Want::Undecodable),
        // A packed datagram whose second event is malformed (its name holds `\r`): the first
        // is printed.
        (
            b"E_GOOD\n\nE_BAD\r\nv::x\n\n".to_vec(),
            Want::Partly(vec![r#"{"event":"E_GOOD","params":[]}"#]),
        ),
        // A packed datagram with a byte that is not UTF-8 in its second event: the first is
        // printed (the decoders refuse the whole datagram).
        (
            b"E_GOOD\n\nE_LATIN\nv::caf\xe9\n\n".to_vec(),
            Want::Partly(vec![r#"{"event":"E_GOOD","params":[]}"#]),
        ),
        // The bad byte inside a quoted value with an empty line before it: what comes before
        // the byte reads as a whole event (`v` = `"a`), which the datagram does not hold.
        (
            b"E_GOOD\n\nE_CUT\nv::\"a\n\n\xff\"\n\n".to_vec(),
            Want::Partly(vec![r#"{"event":"E_GOOD","params":[]}"#]),
        ),
        // The bad byte right after a whole event: that event is printed.
        (
            b"E_GOOD\n\n\xffE\n\n".to_vec(),
            Want::Partly(vec![r#"{"event":"E_GOOD","params":[]}"#]),
        ),
        (
            ours(Format::Line, "E_AFTER", &Params::new()),
            Want::Lines(vec![r#"{"event":"E_AFTER","params":[]}"#]),
        ),
    ]
}

/// Sends the script with `send`, checking the listener's output after each datagram.
fn play_script(l: &Listener, send: impl Fn(&[u8])) {
    for (datagram, want) in script() {
        send(&datagram);
        let undecodable = format!("evdgram: undecodable datagram ({} bytes)", datagram.len());
        match want {
            Want::Lines(lines) => l.expect_lines(&lines),
            Want::Undecodable => {
                let err = l.stderr_line();
                assert!(err.starts_with(&format!("{undecodable}: ")), "{err}");
            }
            Want::Partly(lines) => {
                l.expect_lines(&lines);
                let err = l.stderr_line();
                let after = format!("{undecodable} after its first {} event(s)", lines.len());
                assert!(err.starts_with(&after), "{err}");
            }
        }
    }
}

fn unix_sender() -> UnixDatagram {
    let s = UnixDatagram::unbound().unwrap();
    s.set_write_timeout(Some(DEADLINE)).unwrap();
    s
}

#[test]
fn listen_on_a_unix_path_prints_events_and_removes_the_socket_on_sigterm() {
    let dir = TempDir::new();
    let path = dir.join("listen.sock");
    let spec = format!("unix:{}", path.display());
    let l = Listener::spawn(&[&spec]);
    assert_eq!(l.bound, spec);
    assert!(path.exists());
    let tx = unix_sender();
    play_script(&l, |d| {
        tx.send_to(d, &path).unwrap();
    });
    // Exactly the 65 536-byte receive buffer: read whole (and not an event).
    tx.send_to(&vec![b'x'; 65_536], &path).unwrap();
    let err = l.stderr_line();
    assert!(
        err.starts_with("evdgram: undecodable datagram (65536 bytes): "),
        "{err}"
    );
    // Over it (UNIX datagrams can be that large).
    tx.send_to(&vec![b'x'; 70_000], &path).unwrap();
    let err = l.stderr_line();
    assert!(
        err.starts_with("evdgram: undecodable datagram (more than 65536 bytes)"),
        "{err}"
    );
    l.stop_with(libc::SIGTERM);
    assert!(!path.exists(), "the socket file is still there");
}

#[test]
fn listen_on_a_bare_path_and_sigint() {
    let dir = TempDir::new();
    let path = dir.join("bare.sock");
    let l = Listener::spawn(&[path.to_str().unwrap()]);
    assert_eq!(l.bound, format!("unix:{}", path.display()));
    unix_sender().send_to(b"E_X\n\n", &path).unwrap();
    l.expect_lines(&[r#"{"event":"E_X","params":[]}"#]);
    l.stop_with(libc::SIGINT);
    assert!(!path.exists());
}

#[test]
fn listen_cleans_up_on_sighup_too() {
    // The terminal it ran in closed: the socket file goes as on SIGINT.
    let dir = TempDir::new();
    let path = dir.join("hup.sock");
    let l = Listener::spawn(&[path.to_str().unwrap()]);
    assert!(path.exists());
    l.stop_with(libc::SIGHUP);
    assert!(!path.exists());
}

#[test]
fn listen_under_nohup_outlives_a_hangup() {
    let dir = TempDir::new();
    let path = dir.join("nohup.sock");
    // As `nohup` runs it: SIGHUP ignored, which the listener must keep.
    let mut nohup = Command::new("sh");
    nohup.args(["-c", r#"trap '' HUP; exec "$0" "$@""#, EVDGRAM]);
    let mut l = Listener::spawn_with(nohup, &[path.to_str().unwrap()]);
    let pid = l.child.pid();
    // SAFETY: a signal to our own child.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGHUP) }, 0);
    // Still listening after it: a datagram sent after the hangup is printed, and a moment
    // later the process is still there.
    unix_sender().send_to(b"E_X\n\n", &path).unwrap();
    l.expect_lines(&[r#"{"event":"E_X","params":[]}"#]);
    thread::sleep(Duration::from_millis(200));
    assert!(
        l.child.child().try_wait().unwrap().is_none(),
        "exited on SIGHUP"
    );
    l.stop_with(libc::SIGTERM);
    assert!(!path.exists());
}

#[test]
fn listen_on_an_abstract_name() {
    let spec = format!("unix:@evdgram-cli-test-{}", std::process::id());
    let l = Listener::spawn(&[&spec]);
    assert_eq!(l.bound, spec);
    let addr = event_datagram::Target::parse(&spec)
        .unwrap()
        .unix_socket_addr()
        .unwrap()
        .unwrap();
    let tx = unix_sender();
    tx.connect_addr(&addr).unwrap();
    play_script(&l, |d| {
        tx.send(d).unwrap();
    });
    l.stop_with(libc::SIGTERM);
}

/// A listener on any free UDP port of `ip` (port 0: it says which).
fn udp_listener(ip: IpAddr) -> (Listener, UdpSocket) {
    let spec = format!("udp:{}", SocketAddr::new(ip, 0));
    let l = Listener::spawn(&[&spec]);
    assert_ne!(l.bound, spec);
    let addr: SocketAddr = event_datagram::Target::parse(&l.bound)
        .map(|t| match t {
            event_datagram::Target::Udp(a) => a,
            other => panic!("{other}"),
        })
        .unwrap();
    let tx = UdpSocket::bind(SocketAddr::new(addr.ip(), 0)).unwrap();
    tx.connect(addr).unwrap();
    (l, tx)
}

#[test]
fn listen_on_udp_ipv4_loopback() {
    let (l, tx) = udp_listener(Ipv4Addr::LOCALHOST.into());
    assert!(l.bound.starts_with("udp:127.0.0.1:"), "{}", l.bound);
    play_script(&l, |d| {
        tx.send(d).unwrap();
    });
    l.stop_with(libc::SIGTERM);
}

#[test]
fn listen_on_udp_ipv6_loopback() {
    if UdpSocket::bind((Ipv6Addr::LOCALHOST, 0)).is_err() {
        eprintln!("SKIPPED listen_on_udp_ipv6_loopback: no IPv6 loopback here");
        return;
    }
    let (l, tx) = udp_listener(Ipv6Addr::LOCALHOST.into());
    assert!(l.bound.starts_with("udp:[::1]:"), "{}", l.bound);
    play_script(&l, |d| {
        tx.send(d).unwrap();
    });
    l.stop_with(libc::SIGTERM);
}

/// A UDP listener that falls behind loses datagrams in the kernel; it says how many, so that
/// what it printed and what it says was dropped add up to what was sent.
#[test]
fn listen_on_udp_tells_how_many_datagrams_the_kernel_dropped() {
    // More than the largest receive buffer it may get holds (8 MiB where rmem_max is 4 MiB).
    const SENT: usize = 100_000;
    let (mut l, tx) = udp_listener(Ipv4Addr::LOCALHOST.into());
    let datagram = ours(
        Format::Line,
        "E_TEST",
        &Params::new().str("n", "1").unwrap(),
    );
    // Stopped, it reads nothing: its receive buffer fills and the kernel drops the rest.
    l.child.signal(libc::SIGSTOP);
    for _ in 0..SENT {
        tx.send(&datagram).unwrap();
    }
    l.child.signal(libc::SIGCONT);
    let deadline = Instant::now() + DEADLINE;
    let (mut printed, mut dropped) = (0, 0);
    while printed + dropped < SENT {
        assert!(
            Instant::now() < deadline,
            "{printed} printed and {dropped} told dropped of {SENT}"
        );
        while l.stdout.try_recv().is_ok() {
            printed += 1;
        }
        match l.stderr.recv_timeout(Duration::from_millis(20)) {
            Ok(line) => {
                let told = line
                    .strip_prefix("evdgram: the kernel dropped ")
                    .and_then(|rest| rest.split(' ').next())
                    .and_then(|n| n.parse::<usize>().ok())
                    .unwrap_or_else(|| panic!("unexpected stderr line: {line}"));
                dropped += told;
            }
            Err(RecvTimeoutError::Timeout) => {}
            Err(RecvTimeoutError::Disconnected) => panic!("stderr closed"),
        }
    }
    assert!(
        dropped > 0 && printed > 0,
        "{printed} printed, {dropped} dropped"
    );
    assert_eq!(printed + dropped, SENT);
    l.stop_with(libc::SIGTERM);
}

#[test]
fn listen_decodes_every_vector() {
    let (l, tx) = udp_listener(Ipv4Addr::LOCALHOST.into());
    for v in vectors() {
        tx.send(&v.bytes).unwrap();
        assert_eq!(l.stdout_line(), v.listen_line(), "{} {}", v.format, v.case);
    }
    l.stop_with(libc::SIGTERM);
}

#[test]
fn listen_with_a_forced_format() {
    let dir = TempDir::new();
    let path = dir.join("forced.sock");
    let spec = format!("unix:{}", path.display());
    let l = Listener::spawn(&[&spec, "--format", "jsonrpc"]);
    let tx = unix_sender();
    tx.send_to(b"E_X\n\n", &path).unwrap();
    let err = l.stderr_line();
    assert!(
        err.starts_with("evdgram: undecodable datagram (5 bytes): "),
        "{err}"
    );
    tx.send_to(
        br#"{"jsonrpc":"2.0","method":"E_X","params":{"a":1}}"#,
        &path,
    )
    .unwrap();
    l.expect_lines(&[r#"{"event":"E_X","params":[{"name":"a","value":1}]}"#]);
    l.stop_with(libc::SIGTERM);
    assert!(!path.exists());
}

#[test]
fn listen_replaces_a_stale_socket_but_nothing_else() {
    let dir = TempDir::new();

    // A socket file whose owner is gone: replaced.
    let stale = dir.join("stale.sock");
    drop(UnixDatagram::bind(&stale).unwrap());
    assert!(stale.exists());
    let l = Listener::spawn(&[stale.to_str().unwrap()]);
    unix_sender().send_to(b"E_X\n\n", &stale).unwrap();
    l.expect_lines(&[r#"{"event":"E_X","params":[]}"#]);
    l.stop_with(libc::SIGTERM);
    assert!(!stale.exists());

    // A socket somebody listens on: an error, and the socket is left alone.
    let live = dir.join("live.sock");
    let owner = UnixDatagram::bind(&live).unwrap();
    let run = evdgram(&["listen", live.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr.starts_with("evdgram: cannot bind unix:")
            && run.stderr.contains("another process is listening"),
        "{}",
        run.stderr
    );
    owner.set_read_timeout(Some(DEADLINE)).unwrap();
    unix_sender().send_to(b"still mine", &live).unwrap();
    let mut buf = [0u8; 16];
    assert_eq!(owner.recv(&mut buf).unwrap(), 10);

    // A regular file: an error, and the file is left alone.
    let file = dir.join("file");
    std::fs::write(&file, "keep").unwrap();
    let run = evdgram(&["listen", file.to_str().unwrap()]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(run.stderr.contains("not a socket"), "{}", run.stderr);
    assert_eq!(std::fs::read_to_string(&file).unwrap(), "keep");
}

/// The MI client's UNIX reply socket gets the process umask; --help says so, as a server
/// running as another user may not be able to answer.
#[test]
fn listen_help_says_the_unix_reply_socket_takes_the_umask() {
    let r = evdgram(&["listen", "--help"]);
    assert!(r.status.success(), "{}", r.stderr);
    let help = String::from_utf8(r.stdout).unwrap();
    assert!(help.contains("umask"), "{help}");
}

#[test]
fn listen_rejects_bad_specs_and_busy_ports() {
    let run = evdgram(&["listen", "tcp:127.0.0.1:9000"]);
    assert_eq!(run.status.code(), Some(2));
    assert!(
        run.stderr.contains("expected udp:HOST:PORT"),
        "{}",
        run.stderr
    );

    let busy = UdpSocket::bind("127.0.0.1:0").unwrap();
    let spec = format!("udp:{}", busy.local_addr().unwrap());
    let run = evdgram(&["listen", &spec]);
    assert_eq!(run.status.code(), Some(1), "{}", run.stderr);
    assert!(
        run.stderr
            .starts_with(&format!("evdgram: cannot bind {spec}: ")),
        "{}",
        run.stderr
    );
    assert!(run.stdout.is_empty());
}

/// `--expire` and `--mi` without `--subscribe` were silently ignored, and an empty
/// `--subscribe` went to the MI endpoint to be refused there (exit 1): all are usage errors
/// now, found before anything is bound or sent.
#[test]
fn listen_subscription_flags_are_checked_as_the_command_line_is_read() {
    // An MI endpoint that must hear nothing.
    let mi = UdpSocket::bind("127.0.0.1:0").unwrap();
    mi.set_nonblocking(true).unwrap();
    let mi_spec = format!("udp:{}", mi.local_addr().unwrap());
    let cases: [(&[&str], &str); 4] = [
        (&["--expire", "5"], "--subscribe <EVENT>"),
        (&["--mi", &mi_spec], "--subscribe <EVENT>"),
        (
            &["--mi", &mi_spec, "--subscribe", ""],
            "invalid value '' for '--subscribe <EVENT>': invalid event name: it is empty",
        ),
        (
            &[
                "--mi",
                &mi_spec,
                "--subscribe",
                "E_A",
                "--subscribe",
                "E\nB",
            ],
            "'--subscribe <EVENT>': invalid event name \"E\\nB\": it contains a line break",
        ),
    ];
    for (args, want) in cases {
        let mut all = vec!["listen", "udp:127.0.0.1:0"];
        all.extend(args);
        let run = evdgram(&all);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(want), "{args:?}: {}", run.stderr);
        assert!(!run.stderr.contains("listening on"), "{}", run.stderr);
    }
    assert!(mi.recv(&mut [0u8; 64]).is_err(), "no MI request was sent");
}

// ---------------------------------------------------------------------------------------------
// raise

/// Receives every datagram `evdgram raise` sends to `sock` until `n` arrived (bounded).
fn receive(n: usize, recv: impl Fn(&mut [u8]) -> std::io::Result<usize>) -> Vec<Vec<u8>> {
    let mut buf = vec![0u8; MAX_DATAGRAM + 1];
    let mut got = Vec::new();
    let start = Instant::now();
    while got.len() < n && start.elapsed() < DEADLINE {
        if let Ok(len) = recv(&mut buf) {
            got.push(buf[..len].to_vec());
        }
    }
    got
}

/// The stats row of `target` in `raise`'s output: RAISED SENT BYTES DROPPED FAILED PENDING, and
/// the causes of failures.
fn stats_row(stdout: &str, target: &str) -> (Vec<u64>, String) {
    let line = stdout
        .lines()
        .find(|l| l.split_whitespace().next() == Some(target))
        .unwrap_or_else(|| panic!("no row for {target} in:\n{stdout}"));
    let fields: Vec<&str> = line.split_whitespace().collect();
    let numbers = fields[1..7].iter().map(|f| f.parse().unwrap()).collect();
    (numbers, fields[7..].join(" "))
}

#[test]
fn raise_sends_exact_datagrams_to_udp_and_unix_and_prints_the_stats() {
    let params_json = r#"{"ip":"192.168.2.11","attempts":-7,"note":"say \"hi\"\nbye"}"#;
    let params = Params::new()
        .str("ip", "192.168.2.11")
        .unwrap()
        .int("attempts", -7)
        .unwrap()
        .str("note", "say \"hi\"\nbye")
        .unwrap();
    for (format, backend) in [
        (Format::Line, "syscall"),
        (Format::Jsonrpc, "syscall"),
        (Format::Line, "auto"),
    ] {
        let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let dir = TempDir::new();
        let path = dir.join("raise.sock");
        let unix = UnixDatagram::bind(&path).unwrap();
        unix.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let udp_spec = format!("udp:{}", udp.local_addr().unwrap());
        let unix_spec = format!("unix:{}", path.display());
        let to = format!("{udp_spec},{unix_spec}");
        let run = evdgram(&[
            "raise",
            "--format",
            format.as_str(),
            "--to",
            &to,
            "E_PIKE_BLOCKED",
            "--params",
            params_json,
            "--count",
            "5",
            "--backend",
            backend,
        ]);
        let stdout = String::from_utf8(run.stdout).unwrap();
        assert!(
            run.status.success(),
            "{format} {backend}: {:?}\n{stdout}{}",
            run.status,
            run.stderr
        );

        let want = ours(format, "E_PIKE_BLOCKED", &params);
        let got_udp = receive(5, |b| udp.recv(b));
        let got_unix = receive(5, |b| unix.recv(b));
        assert_eq!(got_udp, vec![want.clone(); 5], "{format} {backend}: UDP");
        assert_eq!(got_unix, vec![want.clone(); 5], "{format} {backend}: UNIX");

        let first = stdout.lines().next().unwrap_or_default();
        if backend == "syscall" {
            assert_eq!(first, "backend: syscall", "{stdout}");
        } else {
            assert!(
                first == "backend: syscall" || first == "backend: uring",
                "{stdout}"
            );
        }
        assert!(stdout.contains(&format!("format: {format}\n")), "{stdout}");
        assert!(
            stdout.contains("events: raised 5, dispatched 5, dropped (queue full) 0\n"),
            "{stdout}"
        );
        let bytes = 5 * want.len() as u64;
        for spec in [&udp_spec, &unix_spec] {
            let (numbers, causes) = stats_row(&stdout, spec);
            assert_eq!(numbers, [5, 5, bytes, 0, 0, 0], "{spec}:\n{stdout}");
            assert_eq!(causes, "-", "{spec}:\n{stdout}");
        }
    }
}

/// io_uring's fixed-file table may not be larger than the open-files limit, 1024 by default:
/// a table of 4096 made the `uring` backend fail to start (EMFILE) wherever it was not raised.
#[test]
fn the_uring_backend_starts_under_a_low_open_files_limit() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(100)))
        .unwrap();
    let spec = format!("udp:{}", udp.local_addr().unwrap());
    let args = [
        "raise",
        "--backend",
        "uring",
        "--to",
        &spec,
        "E_X",
        "--count",
        "3",
    ];
    let unlimited = evdgram(&args);
    if unlimited.stderr.contains("backend is unavailable") {
        eprintln!("SKIPPED: io_uring is unavailable here");
        return;
    }
    assert!(unlimited.status.success(), "{}", unlimited.stderr);
    let mut limited = Command::new("sh");
    limited
        .args(["-c", r#"ulimit -n 256 && exec "$0" "$@""#, EVDGRAM])
        .args(args);
    let run = run(limited);
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert!(
        run.status.success(),
        "{:?}\n{stdout}{}",
        run.status,
        run.stderr
    );
    assert!(stdout.starts_with("backend: uring\n"), "{stdout}");
    assert_eq!(receive(6, |b| udp.recv(b)).len(), 6, "both runs' datagrams");
}

#[test]
fn raise_to_a_missing_unix_path_exits_1_and_counts_it_unreachable() {
    let dir = TempDir::new();
    let live = UdpSocket::bind("127.0.0.1:0").unwrap();
    live.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let live_spec = format!("udp:{}", live.local_addr().unwrap());
    let missing = format!("unix:{}", dir.join("nobody.sock").display());
    let to = format!("{missing},{live_spec}");
    let run = evdgram(&["raise", "--to", &to, "E_DEAD", "--count", "5"]);
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert_eq!(run.status.code(), Some(1), "{stdout}{}", run.stderr);
    assert!(
        run.stderr
            .contains("evdgram: 5 of 10 datagrams were not sent (5 unreachable)"),
        "{}",
        run.stderr
    );
    let (numbers, causes) = stats_row(&stdout, &missing);
    assert_eq!(numbers, [5, 0, 0, 0, 5, 0], "{stdout}");
    assert_eq!(causes, "unreachable 5", "{stdout}");
    // And why, once; without claiming a count (it is said before any datagram is counted).
    let why = format!(
        "event-datagram: {missing}: cannot connect: No such file or directory (os error 2) (its \
         datagrams are counted unreachable while it stays so; next report for this target in \
         60 s at the earliest)\n"
    );
    assert_eq!(run.stderr.matches(&why).count(), 1, "{}", run.stderr);
    // The other target is not affected.
    let (numbers, _) = stats_row(&stdout, &live_spec);
    assert_eq!(&numbers[..2], [5, 5], "{stdout}");
    assert_eq!(
        receive(5, |b| live.recv(b)),
        vec![b"E_DEAD\n\n".to_vec(); 5]
    );
}

#[test]
fn raise_usage_errors_exit_2_before_sending_anything() {
    let too_large = format!("{{\"v\":\"{}\"}}", "x".repeat(70_000));
    let cases: [(&[&str], &str); 7] = [
        (
            &["raise", "--to", "udp:127.0.0.1:70000", "E_X"],
            "evdgram: invalid --to \"udp:127.0.0.1:70000\": ",
        ),
        (
            &["raise", "--to", "tcp:127.0.0.1:9", "E_X"],
            "evdgram: invalid --to \"tcp:127.0.0.1:9\": ",
        ),
        (
            &[
                "raise",
                "--to",
                "udp:127.0.0.1:9",
                "E_X",
                "--params",
                "{\"a\":1.5}",
            ],
            "evdgram: invalid --params: parameter \"a\": unsupported value: float 1.5",
        ),
        (
            &["raise", "--to", "udp:127.0.0.1:9", "E\nX"],
            "evdgram: invalid event name \"E\\nX\": it contains a line break\n",
        ),
        (
            &["raise", "--to", "udp:127.0.0.1:9", ""],
            "evdgram: invalid event name: it is empty\n",
        ),
        (&["raise", "E_X"], "--to"),
        (
            &[
                "raise",
                "--to",
                "udp:127.0.0.1:9",
                "E_X",
                "--params",
                &too_large,
            ],
            "evdgram: the event cannot be sent: event encodes to 70009 bytes, over the 65457-byte",
        ),
    ];
    for (args, want) in cases {
        let run = evdgram(args);
        assert_eq!(run.status.code(), Some(2), "{args:?}: {}", run.stderr);
        assert!(run.stderr.contains(want), "{args:?}: {}", run.stderr);
        assert!(run.stdout.is_empty(), "{args:?}: nothing is printed");
    }
}

/// A UNIX receiver that is alive and reads nothing: intake pauses at the target's bound, the
/// dispatcher's queue fills, and `raise` used to wait for room for ever. Now it gives up after
/// `--timeout`, counts the events it could not raise, and reports.
#[test]
fn raise_to_a_receiver_that_reads_nothing_ends_after_its_timeout() {
    let dir = TempDir::new();
    let path = dir.join("stalled.sock");
    let _stalled = UnixDatagram::bind(&path).unwrap();
    let spec = format!("unix:{}", path.display());
    for (backend, count, size) in [("syscall", 20_000u64, 100), ("auto", 2_000, 60_000)] {
        let params = format!("{{\"v\":\"{}\"}}", "x".repeat(size));
        let count_arg = count.to_string();
        let start = Instant::now();
        let run = evdgram(&[
            "raise",
            "--backend",
            backend,
            "--to",
            &spec,
            "E_X",
            "--count",
            &count_arg,
            "--params",
            &params,
            "--timeout",
            "0.3",
        ]);
        let took = start.elapsed();
        let stdout = String::from_utf8(run.stdout).unwrap();
        let what = format!("{backend} {count} x {size} B:\n{stdout}{}", run.stderr);
        assert_eq!(run.status.code(), Some(1), "{what}");
        // The timeout twice (the queue, then shutdown), and the debug build's work.
        assert!(took < Duration::from_secs(5), "{took:?}: {what}");

        let events = stdout
            .lines()
            .find_map(|l| l.strip_prefix("events: "))
            .unwrap_or_else(|| panic!("no events line: {what}"));
        let n: Vec<u64> = events
            .split(|c: char| !c.is_ascii_digit())
            .filter_map(|w| w.parse().ok())
            .collect();
        let [raised, dispatched, queue_full] = n[..] else {
            panic!("{events}: {what}")
        };
        assert_eq!(raised, count, "{what}");
        assert_eq!(dispatched + queue_full, count, "{what}");
        assert!(queue_full > 0, "{what}");
        let (row, causes) = stats_row(&stdout, &spec);
        let [t_raised, sent, _bytes, dropped, failed, pending] = row[..] else {
            unreachable!()
        };
        assert_eq!(t_raised, dispatched, "{what}");
        assert_eq!((failed, pending), (0, 0), "{what}");
        assert_eq!(sent + dropped, t_raised, "{what}");
        assert_eq!(causes, "-", "{what}");
        let want = format!(
            "evdgram: {queue_full} of {count} events were not raised: they found the \
             dispatcher's queue full (every receiver full) once an event had waited 300ms for \
             room (see --timeout); {dropped} of {t_raised} datagrams were not sent ("
        );
        // A line of its own: `auto` may first say that io_uring is unavailable.
        assert!(
            run.stderr.lines().any(|l| l.starts_with(&want)),
            "{want}\n{what}"
        );
    }
}

/// An explicit `--backend` wins over `EVDGRAM_BACKEND`; without the flag the variable decides.
#[test]
fn raise_backend_flag_wins_over_the_environment() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    let spec = format!("udp:{}", udp.local_addr().unwrap());
    let raise = |env: &str, flag: Option<&str>| {
        let mut command = Command::new(EVDGRAM);
        command
            .env(event_datagram::BACKEND_ENV, env)
            .args(["raise", "--to", &spec, "E_X"]);
        if let Some(backend) = flag {
            command.args(["--backend", backend]);
        }
        run_with_env(command)
    };
    // `uring` in the variable would be used (or fail to start where io_uring is denied).
    for env in ["uring", "bogus"] {
        let run = raise(env, Some("syscall"));
        let stdout = String::from_utf8(run.stdout).unwrap();
        assert!(run.status.success(), "{env}: {stdout}{}", run.stderr);
        assert!(stdout.starts_with("backend: syscall\n"), "{env}: {stdout}");
    }
    let run = raise("syscall", None);
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert!(run.status.success(), "{stdout}{}", run.stderr);
    assert!(stdout.starts_with("backend: syscall\n"), "{stdout}");
    let run = raise("bogus", None);
    assert_eq!(run.status.code(), Some(2), "an input error: {}", run.stderr);
    assert!(run.stderr.contains("EVDGRAM_BACKEND: "), "{}", run.stderr);
}

/// `EVDGRAM_BACKEND` overrides the configured backend, `uring` too (issue 3, item 5): `serve`
/// with a file that says one backend and the variable another runs on the variable's. Where
/// io_uring is denied (CI runs this under seccomp, as Docker does), forcing `uring` is an
/// error at start that says why (exit 1, no panic), and `auto` falls back and says why in one
/// line.
#[test]
fn evdgram_backend_overrides_the_configured_backend() {
    let available = crate::support::io_uring_available();
    if std::env::var_os("EVDGRAM_EXPECT_NO_URING").is_some() {
        assert!(!available, "io_uring was expected to be denied");
    }
    let dir = TempDir::new();
    let config = dir.join("backend.yaml");
    let fallback = "event-datagram: io_uring unavailable (";
    for (configured, forced) in [
        ("syscall", "uring"),
        ("uring", "syscall"),
        ("syscall", "auto"),
        ("uring", "auto"),
    ] {
        let case = format!(
            "backend: {configured}, {}={forced}",
            event_datagram::BACKEND_ENV
        );
        std::fs::write(&config, format!("dispatcher:\n  backend: {configured}\n")).unwrap();
        let mut command = Command::new(EVDGRAM);
        command
            .env(event_datagram::BACKEND_ENV, forced)
            .args(["serve", "--config", config.to_str().unwrap()])
            .args(["--mi", "udp:127.0.0.1:0"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        let mut p = ChildGuard(Some(command.spawn().unwrap()));
        let stderr = lines_of(p.child().stderr.take().unwrap());
        // Up to the line that says it runs, or all of them if it exits.
        let mut said = Vec::new();
        let running = loop {
            match stderr.recv_timeout(DEADLINE) {
                Ok(line) => {
                    let backend = line
                        .strip_prefix("evdgram: dispatcher running on the ")
                        .and_then(|rest| rest.split(' ').next())
                        .map(str::to_owned);
                    said.push(line);
                    if backend.is_some() {
                        break backend;
                    }
                }
                Err(RecvTimeoutError::Disconnected) => break None,
                Err(RecvTimeoutError::Timeout) => panic!("{case}: {said:#?}"),
            }
        };
        let fell_back = said.iter().filter(|l| l.starts_with(fallback)).count();
        let want = match forced {
            "syscall" => Some("syscall"),
            _ if available => Some("uring"),
            "auto" => Some("syscall"),
            _ => None,
        };
        assert_eq!(running.as_deref(), want, "{case}: {said:#?}");
        if running.is_some() {
            p.signal(libc::SIGTERM);
            assert!(p.wait().success(), "{case}");
        } else {
            assert_eq!(p.wait().code(), Some(1), "{case}: {said:#?}");
            // Why: the OS error (EPERM under seccomp, ENOSYS without io_uring).
            let why = |l: &String| {
                l.contains("uring backend is unavailable: ") && l.contains("(os error")
            };
            assert!(said.iter().any(why), "{case}: {said:#?}");
            assert!(!said.iter().any(|l| l.contains("panicked")), "{case}");
        }
        // `auto` where io_uring is denied: one line, saying why.
        let want_fell_back = usize::from(forced == "auto" && !available);
        assert_eq!(fell_back, want_fell_back, "{case}: {said:#?}");
        if want_fell_back == 1 {
            let line = said.iter().find(|l| l.starts_with(fallback)).unwrap();
            assert!(line.contains("(os error"), "{line}");
        }
    }
}

/// Where a ring can be set up but `io_uring_enter` is denied (a sandbox that filters that call
/// alone), `auto` finds it at start, says so and runs `syscall`: it chose `uring` before, whose
/// reactor then retried for ever at the first event, and shutdown never returned.
#[cfg(target_arch = "x86_64")]
#[test]
fn auto_falls_back_where_only_io_uring_enter_is_denied() {
    use std::os::unix::process::CommandExt;
    if !crate::support::io_uring_available() {
        eprintln!("SKIPPED: io_uring is denied here as a whole");
        return;
    }
    let mut command = Command::new(EVDGRAM);
    command
        .env(event_datagram::BACKEND_ENV, "auto")
        .args(["serve", "--mi", "udp:127.0.0.1:0"])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped());
    // SAFETY: the hook only makes two prctl(2) calls on a filter on its own stack: nothing
    // that allocates or takes a lock between fork and exec.
    unsafe { command.pre_exec(deny_io_uring_enter) };
    let mut p = ChildGuard(Some(command.spawn().unwrap()));
    let stderr = lines_of(p.child().stderr.take().unwrap());
    let mut said = Vec::new();
    while !said
        .last()
        .is_some_and(|l: &String| l.starts_with("evdgram: dispatcher running on the "))
    {
        match stderr.recv_timeout(DEADLINE) {
            Ok(line) => said.push(line),
            Err(e) => panic!("{e}: {said:#?}"),
        }
    }
    let fallback = "event-datagram: io_uring unavailable (Operation not permitted (os error 1))";
    assert!(said.iter().any(|l| l.starts_with(fallback)), "{said:#?}");
    assert!(
        said.last()
            .unwrap()
            .starts_with("evdgram: dispatcher running on the syscall "),
        "{said:#?}"
    );
    p.signal(libc::SIGTERM);
    assert!(p.wait().success());
}

/// A seccomp filter that makes `io_uring_enter` (x86_64: 426) fail with `EPERM`, and allows
/// every other call: what some sandboxes deny of io_uring.
#[cfg(target_arch = "x86_64")]
fn deny_io_uring_enter() -> std::io::Result<()> {
    const AUDIT_ARCH_X86_64: u32 = 0xc000_003e;
    let stmt = |code: u32, k: u32| libc::sock_filter {
        code: code as u16,
        jt: 0,
        jf: 0,
        k,
    };
    let jump_if = |k: u32, jt: u8, jf: u8| libc::sock_filter {
        code: (libc::BPF_JMP | libc::BPF_JEQ | libc::BPF_K) as u16,
        jt,
        jf,
        k,
    };
    let load = libc::BPF_LD | libc::BPF_W | libc::BPF_ABS;
    let ret = libc::BPF_RET | libc::BPF_K;
    // Offsets in struct seccomp_data: nr at 0, arch at 4.
    let mut filter = [
        stmt(load, 4),
        jump_if(AUDIT_ARCH_X86_64, 1, 0),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
        stmt(load, 0),
        jump_if(426, 0, 1),
        stmt(ret, libc::SECCOMP_RET_ERRNO | libc::EPERM as u32),
        stmt(ret, libc::SECCOMP_RET_ALLOW),
    ];
    let prog = libc::sock_fprog {
        len: filter.len() as u16,
        filter: filter.as_mut_ptr(),
    };
    // SAFETY: plain prctl(2) calls; `prog` points at `filter`, alive for both.
    let rc = unsafe {
        if libc::prctl(libc::PR_SET_NO_NEW_PRIVS, 1, 0, 0, 0) != 0 {
            -1
        } else {
            libc::prctl(
                libc::PR_SET_SECCOMP,
                libc::SECCOMP_MODE_FILTER,
                &prog as *const libc::sock_fprog,
            )
        }
    };
    if rc == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

/// `--to` splits on commas and repeats; `--to-one` takes a path with a comma whole.
#[test]
fn raise_to_repeated_and_a_path_with_a_comma() {
    let dir = TempDir::new();
    let comma = dir.join("a,b.sock");
    let plain = dir.join("plain.sock");
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(Duration::from_millis(50)))
        .unwrap();
    let mut unix = Vec::new();
    for path in [&comma, &plain] {
        let sock = UnixDatagram::bind(path).unwrap();
        sock.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        unix.push(sock);
    }
    let udp_spec = format!("udp:{}", udp.local_addr().unwrap());
    let comma_spec = format!("unix:{}", comma.display());
    let plain_spec = format!("unix:{}", plain.display());
    let run = evdgram(&[
        "raise",
        "--to",
        &udp_spec,
        "--to-one",
        &comma_spec,
        "--to",
        &plain_spec,
        "E_X",
        "--count",
        "2",
    ]);
    let stdout = String::from_utf8(run.stdout).unwrap();
    assert!(run.status.success(), "{stdout}{}", run.stderr);
    for spec in [&udp_spec, &comma_spec, &plain_spec] {
        let (numbers, _) = stats_row(&stdout, spec);
        assert_eq!(&numbers[..2], [2, 2], "{spec}:\n{stdout}");
    }
    let want = vec![b"E_X\n\n".to_vec(); 2];
    assert_eq!(receive(2, |b| udp.recv(b)), want);
    for sock in &unix {
        assert_eq!(receive(2, |b| sock.recv(b)), want);
    }
}

/// SIGINT or SIGTERM during a long `raise` used to kill it with nothing printed; it stops
/// raising, prints the final stats of what it raised, and exits 128 + the signal's number.
#[test]
fn raise_stopped_by_a_signal_prints_the_stats_and_says_so() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(DEADLINE)).unwrap();
    let spec = format!("udp:{}", udp.local_addr().unwrap());
    for (sig, name, status) in [
        (libc::SIGINT, "SIGINT", 130),
        (libc::SIGTERM, "SIGTERM", 143),
    ] {
        let count = 1_000_000_000u64;
        let mut child = ChildGuard(Some(
            Command::new(EVDGRAM)
                .args(["raise", "--to", &spec, "E_X", "--count", &count.to_string()])
                .env_remove(event_datagram::BACKEND_ENV)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn()
                .unwrap(),
        ));
        let stdout = lines_of(child.child().stdout.take().unwrap());
        let stderr = lines_of(child.child().stderr.take().unwrap());
        // Raising has started: the receiver has a datagram.
        let mut buf = [0u8; 64];
        let n = udp.recv(&mut buf).expect("a datagram from raise");
        assert_eq!(&buf[..n], b"E_X\n\n");
        child.signal(sig);
        assert_eq!(child.wait().code(), Some(status), "{name}");
        let stdout: Vec<String> = stdout.iter().collect();
        let stdout = stdout.join("\n");
        let stderr: Vec<String> = stderr.iter().collect();
        let events = stdout
            .lines()
            .find_map(|l| l.strip_prefix("events: raised "))
            .unwrap_or_else(|| panic!("{name}: no stats:\n{stdout}\n{stderr:?}"));
        let raised: u64 = events.split(',').next().unwrap().parse().unwrap();
        assert!(raised > 0 && raised < count, "{name}: {events}");
        let (row, _) = stats_row(&stdout, &spec);
        assert_eq!(&row[..2], [raised, raised], "{name}: all sent\n{stdout}");
        let want = format!("evdgram: stopped by {name}: {raised} of {count} events raised; ");
        assert!(
            stderr.iter().any(|l| l.starts_with(&want)),
            "{want}\n{stderr:?}"
        );
        // Drain what it sent, for the next run's first datagram to be its own.
        udp.set_nonblocking(true).unwrap();
        while udp.recv(&mut buf).is_ok() {}
        udp.set_nonblocking(false).unwrap();
    }
}

/// A signal the process inherited ignored stays ignored (SIGINT for a background job of a
/// non-interactive shell, as SIGHUP under `nohup`): `raise` goes on; SIGTERM still stops it.
#[test]
fn raise_keeps_an_inherited_ignored_sigint_ignored() {
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    udp.set_read_timeout(Some(DEADLINE)).unwrap();
    let spec = format!("udp:{}", udp.local_addr().unwrap());
    let mut ignoring = Command::new("sh");
    ignoring.args(["-c", r#"trap '' INT; exec "$0" "$@""#, EVDGRAM]);
    let mut child = ChildGuard(Some(
        ignoring
            .args(["raise", "--to", &spec, "E_X", "--count", "1000000000"])
            .env_remove(event_datagram::BACKEND_ENV)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap(),
    ));
    let mut buf = [0u8; 64];
    udp.recv(&mut buf).expect("a datagram from raise");
    child.signal(libc::SIGINT);
    thread::sleep(Duration::from_millis(300));
    assert!(
        child.child().try_wait().unwrap().is_none(),
        "stopped by an ignored SIGINT"
    );
    child.signal(libc::SIGTERM);
    assert_eq!(child.wait().code(), Some(143));
}
