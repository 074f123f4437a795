//! SIGINT, SIGTERM and SIGHUP (the terminal closed) for long-running subcommands: blocked in
//! every thread, taken by one dedicated thread with `sigwait`, so cleanup runs as ordinary code
//! (not in a signal handler). One the process inherited ignored (SIGHUP under `nohup`) stays
//! ignored.
#![allow(unsafe_code)]

use std::io;
use std::mem::MaybeUninit;
use std::ptr;
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::Arc;
use std::thread;

/// SIGINT, SIGTERM and SIGHUP, blocked in the calling thread (and so in every thread it spawns
/// later).
pub struct Blocked {
    set: libc::sigset_t,
}

/// Blocks SIGINT, SIGTERM and SIGHUP in the calling thread. Call it before spawning any
/// thread: threads inherit the mask, and a thread that does not block them could be picked to
/// take the signal (and, with the default disposition, end the process at once).
pub fn block_termination() -> io::Result<Blocked> {
    let mut set = MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: `set` is valid for writes; sigemptyset initialises it, and sigaddset only adds
    // valid signal numbers to the initialised set, so assume_init reads an initialised value.
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
    let rc = unsafe { libc::pthread_sigmask(libc::SIG_BLOCK, &set, ptr::null_mut()) };
    if rc != 0 {
        return Err(io::Error::from_raw_os_error(rc));
    }
    Ok(Blocked { set })
}

/// Whether `sig` is ignored, as inherited (SIGHUP under `nohup`, SIGINT for a background job
/// of a non-interactive shell): then it must stay so. A blocked signal is taken by `sigwait`
/// even when its action is to ignore it.
fn ignored(sig: libc::c_int) -> bool {
    let mut old = MaybeUninit::<libc::sigaction>::uninit();
    // SAFETY: a null new action only reads the current one into `old`, valid for writes.
    let rc = unsafe { libc::sigaction(sig, ptr::null(), old.as_mut_ptr()) };
    // SAFETY: sigaction succeeded, so it wrote `old`.
    rc == 0 && unsafe { old.assume_init() }.sa_sigaction == libc::SIG_IGN
}

impl Blocked {
    /// Waits for one of the signals; returns its number.
    fn wait(&self) -> i32 {
        let mut sig = 0;
        loop {
            // SAFETY: `self.set` is an initialised signal set whose signals are blocked in
            // this thread (inherited mask); `sig` is valid for writes.
            let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
            if rc == 0 {
                return sig;
            }
        }
    }

    /// Spawns a thread that waits for one of the signals and then calls `on_signal` with the
    /// signal number (which is expected to end the process).
    pub fn spawn_waiter<F>(self, on_signal: F) -> io::Result<()>
    where
        F: FnOnce(i32) + Send + 'static,
    {
        thread::Builder::new()
            .name("signals".to_owned())
            .spawn(move || on_signal(self.wait()))
            .map(drop)
    }

    /// Spawns a thread that passes the number of the first signal taken to `on_first`, which
    /// starts winding the process down; a second signal ends the process at once, with status
    /// 128 + its number (what a shell reports for a process the signal killed): whoever sends
    /// it does not want to wait for the winding down.
    pub fn spawn_winding_down<F>(self, on_first: F) -> io::Result<()>
    where
        F: FnOnce(i32) + Send + 'static,
    {
        thread::Builder::new()
            .name("signals".to_owned())
            .spawn(move || {
                on_first(self.wait());
                std::process::exit(128 + self.wait());
            })
            .map(drop)
    }

    /// [`spawn_winding_down`](Self::spawn_winding_down), storing the first signal's number in
    /// the returned flag (0 until then), for the main thread to check.
    pub fn spawn_flag(self) -> io::Result<Arc<AtomicI32>> {
        let flag = Arc::new(AtomicI32::new(0));
        let set = Arc::clone(&flag);
        self.spawn_winding_down(move |sig| set.store(sig, Ordering::SeqCst))
            .map(|()| flag)
    }
}

/// A signal's name for messages: `SIGINT`, `SIGTERM`, `SIGHUP`, else `signal N`.
pub fn name(sig: i32) -> String {
    match sig {
        libc::SIGINT => "SIGINT".to_owned(),
        libc::SIGTERM => "SIGTERM".to_owned(),
        libc::SIGHUP => "SIGHUP".to_owned(),
        n => format!("signal {n}"),
    }
}
