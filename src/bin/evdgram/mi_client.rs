//! A minimal MI client (JSON-RPC 2.0 over one datagram each way), as `opensips-cli` and the
//! `opensips` Python package talk to `mi_datagram`: `evdgram listen --subscribe` uses it.

use std::fs;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr, UdpSocket};
use std::os::unix::net::UnixDatagram;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Mutex, PoisonError};
use std::time::Duration;

use anyhow::{anyhow, bail, Context};
use event_datagram::Target;
use serde_json::{json, Value};

/// The largest reply read.
const REPLY_BUFFER: usize = 65_536;

/// Calls `method` with `params` on the MI endpoint at `mi`; returns the `result`, or an error
/// with the endpoint's error code, message and data. Waits at most `timeout` for the reply.
pub fn call(mi: &Target, method: &str, params: Value, timeout: Duration) -> anyhow::Result<Value> {
    call_gated(mi, method, params, timeout, None)
}

/// [`call`], but the request is sent only while `gate` holds true, and under its lock: whoever
/// sets it false (taking the lock) knows that no request passed it can be sent after.
pub fn call_gated(
    mi: &Target,
    method: &str,
    params: Value,
    timeout: Duration,
    gate: Option<&Mutex<bool>>,
) -> anyhow::Result<Value> {
    static ID: AtomicU64 = AtomicU64::new(1);
    let id = ID.fetch_add(1, Ordering::Relaxed);
    let request = json!({"jsonrpc": "2.0", "method": method, "params": params, "id": id});
    let request = serde_json::to_vec(&request)?;
    let mut buf = vec![0u8; REPLY_BUFFER];
    let n = match mi {
        Target::Udp(addr) => {
            let local: SocketAddr = match addr {
                SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
                SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
            };
            let s = UdpSocket::bind(local)?;
            s.connect(addr)?;
            s.set_read_timeout(Some(timeout))?;
            send_gated(gate, || s.send(&request))?;
            s.recv(&mut buf)
        }
        Target::Unix(_) => {
            // The server answers to the client's address: bind one, remove it afterwards.
            let path = reply_path();
            let _ = fs::remove_file(&path);
            let s = UnixDatagram::bind(&path)?;
            let _remove = RemoveOnDrop(path);
            let addr = mi.unix_socket_addr().expect("a UNIX target")?;
            s.connect_addr(&addr)?;
            s.set_read_timeout(Some(timeout))?;
            // A UNIX peer with a full queue blocks sends: bounded too, and not at all under a
            // gate, whose lock the send holds (a full queue is then a failure, retried later).
            s.set_write_timeout(Some(timeout))?;
            s.set_nonblocking(gate.is_some())?;
            send_gated(gate, || s.send(&request))?;
            s.set_nonblocking(false)?;
            s.recv(&mut buf)
        }
    };
    let n = n.map_err(|e| match e.kind() {
        std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut => {
            anyhow!("no reply from the MI endpoint {mi} within {timeout:?}")
        }
        _ => anyhow!(e).context(format!("MI endpoint {mi}")),
    })?;
    let reply: Value = serde_json::from_slice(&buf[..n])
        .with_context(|| format!("the MI endpoint {mi} sent a reply that is not JSON"))?;
    if let Some(err) = reply.get("error") {
        let code = err.get("code").map_or_else(String::new, Value::to_string);
        let message = err.get("message").and_then(Value::as_str).unwrap_or("");
        match err.get("data") {
            Some(Value::String(d)) => bail!("{method}: error {code} {message}: {d}"),
            _ => bail!("{method}: error {code} {message}"),
        }
    }
    reply
        .get("result")
        .cloned()
        .ok_or_else(|| anyhow!("{method}: the reply has neither result nor error"))
}

/// Runs `send` under `gate`'s lock if it holds true (or without a gate); else refuses.
fn send_gated(
    gate: Option<&Mutex<bool>>,
    send: impl FnOnce() -> std::io::Result<usize>,
) -> anyhow::Result<()> {
    let open = gate.map(|g| g.lock().unwrap_or_else(PoisonError::into_inner));
    if open.as_deref() == Some(&false) {
        bail!("not sent: the gate is closed");
    }
    send()?;
    Ok(())
}

/// A fresh path for a UNIX client socket.
fn reply_path() -> PathBuf {
    static N: AtomicU64 = AtomicU64::new(0);
    let n = N.fetch_add(1, Ordering::Relaxed);
    std::env::temp_dir().join(format!("evdgram-mi-{}-{n}.sock", std::process::id()))
}

struct RemoveOnDrop(PathBuf);

impl Drop for RemoveOnDrop {
    fn drop(&mut self) {
        let _ = fs::remove_file(&self.0);
    }
}
