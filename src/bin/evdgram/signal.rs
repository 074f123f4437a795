//! SIGINT, SIGTERM and SIGHUP (the terminal closed; unless ignored, as under `nohup`) for
//! long-running subcommands: blocked in every thread, taken by one dedicated thread with
//! `sigwait`, so cleanup runs as ordinary code (not in a signal handler).

use std::io;
use std::mem::MaybeUninit;
use std::ptr;
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
        libc::sigaddset(set.as_mut_ptr(), libc::SIGINT);
        libc::sigaddset(set.as_mut_ptr(), libc::SIGTERM);
        if !hangup_ignored() {
            libc::sigaddset(set.as_mut_ptr(), libc::SIGHUP);
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

/// Whether SIGHUP is ignored (`nohup`): then it must stay so. A blocked signal is taken by
/// `sigwait` even when its action is to ignore it.
fn hangup_ignored() -> bool {
    let mut old = MaybeUninit::<libc::sigaction>::uninit();
    // SAFETY: a null new action only reads the current one into `old`, valid for writes.
    let rc = unsafe { libc::sigaction(libc::SIGHUP, ptr::null(), old.as_mut_ptr()) };
    // SAFETY: sigaction succeeded, so it wrote `old`.
    rc == 0 && unsafe { old.assume_init() }.sa_sigaction == libc::SIG_IGN
}

impl Blocked {
    /// Spawns a thread that waits for one of the signals and then calls `on_signal` with the
    /// signal number (which is expected to end the process).
    pub fn spawn_waiter<F>(self, on_signal: F) -> io::Result<()>
    where
        F: FnOnce(i32) + Send + 'static,
    {
        thread::Builder::new()
            .name("signals".to_owned())
            .spawn(move || {
                let mut sig = 0;
                loop {
                    // SAFETY: `self.set` is an initialised signal set whose signals are blocked
                    // in this thread (inherited mask); `sig` is valid for writes.
                    let rc = unsafe { libc::sigwait(&self.set, &mut sig) };
                    if rc == 0 {
                        break;
                    }
                }
                on_signal(sig);
            })
            .map(drop)
    }
}
