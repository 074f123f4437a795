//! What std does not offer our sinks: a larger receive buffer, `recvmmsg`, and stopping on
//! a signal.

use std::os::fd::AsRawFd;

/// Asks for a `bytes` receive buffer (`SO_RCVBUFFORCE` when privileged, else `SO_RCVBUF`,
/// which the kernel caps at `net.core.rmem_max`). Best effort: a sink works without it, it
/// only drops earlier under bursts, and those drops are counted.
#[allow(unsafe_code)]
pub fn set_recv_buffer(sock: &impl AsRawFd, bytes: usize) {
    let v: libc::c_int = bytes.min(i32::MAX as usize) as libc::c_int;
    for opt in [libc::SO_RCVBUFFORCE, libc::SO_RCVBUF] {
        // SAFETY: `sock` is an open socket for the duration of the call; `v` is a valid c_int
        // and its size is passed.
        let rc = unsafe {
            libc::setsockopt(
                sock.as_raw_fd(),
                libc::SOL_SOCKET,
                opt,
                (&v as *const libc::c_int).cast(),
                std::mem::size_of::<libc::c_int>() as libc::socklen_t,
            )
        };
        if rc == 0 {
            return;
        }
    }
}

/// Buffers for up to [`RecvBatch::LEN`] datagrams per `recvmmsg`, each as large as the largest
/// datagram (plus a byte, so an oversize one shows), set up once and reused.
pub struct RecvBatch {
    bufs: Vec<Vec<u8>>,
    iovecs: Vec<libc::iovec>,
    headers: Vec<libc::mmsghdr>,
}

impl RecvBatch {
    /// Datagrams per call: a sink thread's buffers are about 1 MiB.
    pub const LEN: usize = 16;

    /// Buffers of `size` bytes each.
    #[allow(unsafe_code)]
    pub fn new(size: usize) -> RecvBatch {
        let mut bufs = vec![vec![0u8; size]; Self::LEN];
        let iovecs: Vec<libc::iovec> = bufs
            .iter_mut()
            .map(|b| libc::iovec {
                iov_base: b.as_mut_ptr().cast(),
                iov_len: b.len(),
            })
            .collect();
        // SAFETY: an all-zero `mmsghdr` is a valid empty header (null pointers, zero lengths);
        // its iovec is set when receiving.
        let headers = (0..Self::LEN)
            .map(|_| unsafe { std::mem::zeroed() })
            .collect();
        RecvBatch {
            bufs,
            iovecs,
            headers,
        }
    }

    /// Receives what is there, waiting (up to the socket's receive timeout) for the first
    /// datagram only; returns how many arrived.
    #[allow(unsafe_code)]
    pub fn recv(&mut self, sock: &impl AsRawFd) -> std::io::Result<usize> {
        for (h, iov) in self.headers.iter_mut().zip(self.iovecs.iter_mut()) {
            h.msg_hdr.msg_iov = iov;
            h.msg_hdr.msg_iovlen = 1;
            h.msg_len = 0;
        }
        // SAFETY: every header points at one iovec of `self`, which points at a buffer of
        // `self` with its length; all outlive the call, and the count is the headers' length.
        let n = unsafe {
            libc::recvmmsg(
                sock.as_raw_fd(),
                self.headers.as_mut_ptr(),
                self.headers.len() as libc::c_uint,
                libc::MSG_WAITFORONE,
                std::ptr::null_mut(),
            )
        };
        if n < 0 {
            return Err(std::io::Error::last_os_error());
        }
        Ok(n as usize)
    }

    /// The `i`th datagram of the last [`recv`](Self::recv).
    pub fn datagram(&self, i: usize) -> &[u8] {
        &self.bufs[i][..self.headers[i].msg_len as usize]
    }
}

/// Takes SIGINT, SIGTERM and SIGHUP on a thread of their own: the first sets the returned flag,
/// for the caller to wind down (report, remove its socket files) and return; a second ends
/// the process at once, with 128 + its number. Call it before spawning any thread: threads
/// inherit the mask that blocks them everywhere else. One inherited ignored (SIGHUP under
/// `nohup`) stays ignored.
#[allow(unsafe_code)]
pub fn stop_on_signals() -> std::io::Result<std::sync::Arc<std::sync::atomic::AtomicBool>> {
    use std::mem::MaybeUninit;
    use std::sync::atomic::{AtomicBool, Ordering};
    use std::sync::Arc;
    let ignored = |sig| {
        let mut old = MaybeUninit::<libc::sigaction>::uninit();
        // SAFETY: a null new action only reads the current one into `old`, valid for writes.
        let rc = unsafe { libc::sigaction(sig, std::ptr::null(), old.as_mut_ptr()) };
        // SAFETY: sigaction succeeded, so it wrote `old`.
        rc == 0 && unsafe { old.assume_init() }.sa_sigaction == libc::SIG_IGN
    };
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `set` is valid for writes; sigemptyset initialises it and sigaddset adds valid
    // signal numbers, so assume_init reads an initialised set.
    let set = unsafe {
        libc::sigemptyset(set.as_mut_ptr());
        for sig in [libc::SIGINT, libc::SIGTERM, libc::SIGHUP] {
            if !ignored(sig) {
                libc::sigaddset(set.as_mut_ptr(), sig);
            }
        }
        set.assume_init()
    };
    // SAFETY: `set` is an initialised signal set; the old mask is not asked for (null).
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut()) };
    if rc != 0 {
        return Err(std::io::Error::from_raw_os_error(rc));
    }
    let stop = Arc::new(AtomicBool::new(false));
    let raised = Arc::clone(&stop);
    let wait = move || {
        let mut sig = 0;
        // SAFETY: `set` is initialised and its signals are blocked in this thread (the mask
        // it inherited); `sig` is valid for writes.
        while unsafe { libc::sigwait(&set, &mut sig) } != 0 {}
        sig
    };
    std::thread::Builder::new()
        .name("signals".into())
        .spawn(move || {
            wait();
            raised.store(true, Ordering::SeqCst);
            std::process::exit(128 + wait());
        })?;
    Ok(stop)
}
