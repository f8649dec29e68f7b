//! Waiting for Ctrl-C (SIGINT) or SIGTERM, so `cargo xtask lab` can keep a lab until the user
//! is done and still tear it down through `Drop`. It must not be used by tests.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

static INTERRUPTED: AtomicBool = AtomicBool::new(false);

extern "C" fn on_signal(_: libc::c_int) {
    // Only an atomic store: the one thing that is safe in a signal handler.
    INTERRUPTED.store(true, Ordering::SeqCst);
}

/// Blocks until the process receives SIGINT or SIGTERM, then restores their default action.
/// A handler (not a blocked signal mask) is used: masks are inherited by children, and
/// PostgreSQL started meanwhile would then ignore pg_ctl's stop signals.
pub fn wait_for_interrupt() {
    INTERRUPTED.store(false, Ordering::SeqCst);
    let handler = on_signal as extern "C" fn(libc::c_int) as libc::sighandler_t;
    // SAFETY: the handler only stores to an atomic; signal(2) has no other preconditions.
    unsafe {
        libc::signal(libc::SIGINT, handler);
        libc::signal(libc::SIGTERM, handler);
    }
    while !INTERRUPTED.load(Ordering::SeqCst) {
        std::thread::sleep(Duration::from_millis(100));
    }
    // SAFETY: as above; SIG_DFL is always valid.
    unsafe {
        libc::signal(libc::SIGINT, libc::SIG_DFL);
        libc::signal(libc::SIGTERM, libc::SIG_DFL);
    }
}
