//! The guardian: runs a copy process (rsync, pg_basebackup) so that it dies with pgreplica.
//!
//! Copy programs fork (rsync's generator and receiver, their ssh) and their children do not
//! inherit `PR_SET_PDEATHSIG`, so killing pgreplica alone — even by SIGKILL — could leave them
//! writing into the data directory. [`spawn_guarded`] puts a small guardian process between
//! pgreplica and the command; it SIGKILLs the command's whole process group when pgreplica dies
//! or asks it to stop, and exits only once every process the command forked is gone.

use std::io;
use std::os::unix::process::CommandExt;
use std::process::Command;
use std::sync::atomic::{AtomicI32, Ordering};

/// Spawns `cmd` under a guardian process and returns the guardian, which behaves as `cmd`: it
/// exits with `cmd`'s exit status, or dies by the signal that killed `cmd`.
///
/// The forked child becomes the guardian before exec: it forks again and the grandchild, in a
/// process group of its own, execs `cmd` with `PR_SET_PDEATHSIG(SIGKILL)` towards the guardian.
/// The guardian is a child subreaper, so it collects every process `cmd` forks (rsync's
/// generator and receiver, its ssh), and it exits only once all of them are gone. SIGTERM to the
/// guardian, or the death of the thread that spawned it (`PR_SET_PDEATHSIG(SIGTERM)`, so also
/// when pgreplica is SIGKILLed), makes it SIGKILL `cmd`'s whole group: nothing from it goes on
/// writing, and a killed rsync receiver leaves its temp file for
/// [`cleanup_partial`](super::rsync::cleanup_partial).
///
/// The spawning thread must outlive the child (the death signal follows the thread, not the
/// process): call this from a thread of your own that waits for the child, not from a tokio
/// worker or blocking-pool thread.
pub fn spawn_guarded(cmd: &mut Command) -> io::Result<std::process::Child> {
    let parent = std::process::id() as libc::pid_t;
    // Out of pgreplica's group, so a terminal's Ctrl-C reaches pgreplica, which stops the copy.
    cmd.process_group(0);
    // SAFETY: the closure runs between fork and exec and calls only async-signal-safe functions
    // (sigprocmask, sigaction, prctl, fork, setpgid, getppid, getpid, syscall, close, waitpid,
    // kill, _exit) and atomics; it allocates nothing and takes no lock.
    unsafe {
        cmd.pre_exec(move || become_guardian(parent));
    }
    cmd.spawn()
}

/// The guarded command's process group, in the guardian's copy of memory (0 until forked).
static GUARDED_GROUP: AtomicI32 = AtomicI32::new(0);

extern "C" fn kill_guarded_group(_signal: libc::c_int) {
    let group = GUARDED_GROUP.load(Ordering::Relaxed);
    if group > 0 {
        // SAFETY: kill is async-signal-safe.
        unsafe {
            libc::kill(-group, libc::SIGKILL);
        }
    }
}

fn set_handler(signal: libc::c_int, handler: libc::sighandler_t) -> io::Result<()> {
    // SAFETY: a zeroed sigaction is valid (empty mask, no flags); sigaction is async-signal-safe.
    unsafe {
        let mut action: libc::sigaction = std::mem::zeroed();
        action.sa_sigaction = handler;
        if libc::sigaction(signal, &action, std::ptr::null_mut()) != 0 {
            return Err(io::Error::last_os_error());
        }
    }
    Ok(())
}

fn check(rc: libc::c_int) -> io::Result<()> {
    if rc == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// The pre-exec half of [`spawn_guarded`]. Returns only in the grandchild, which then execs.
fn become_guardian(parent: libc::pid_t) -> io::Result<()> {
    // SAFETY: every call is async-signal-safe and takes pointers to locals only.
    unsafe {
        // SIGTERM waits until the handler knows which group to kill.
        let mut term: libc::sigset_t = std::mem::zeroed();
        libc::sigemptyset(&mut term);
        libc::sigaddset(&mut term, libc::SIGTERM);
        check(libc::sigprocmask(
            libc::SIG_BLOCK,
            &term,
            std::ptr::null_mut(),
        ))?;
        set_handler(
            libc::SIGTERM,
            kill_guarded_group as *const () as libc::sighandler_t,
        )?;
        check(libc::prctl(
            libc::PR_SET_PDEATHSIG,
            libc::SIGTERM as libc::c_ulong,
        ))?;
        check(libc::prctl(
            libc::PR_SET_CHILD_SUBREAPER,
            1 as libc::c_ulong,
        ))?;
        let guardian = libc::getpid();
        let pid = libc::fork();
        if pid < 0 {
            return Err(io::Error::last_os_error());
        }
        if pid == 0 {
            set_handler(libc::SIGTERM, libc::SIG_DFL)?;
            check(libc::sigprocmask(
                libc::SIG_UNBLOCK,
                &term,
                std::ptr::null_mut(),
            ))?;
            check(libc::setpgid(0, 0))?;
            check(libc::prctl(
                libc::PR_SET_PDEATHSIG,
                libc::SIGKILL as libc::c_ulong,
            ))?;
            if libc::getppid() != guardian {
                libc::_exit(127);
            }
            return Ok(());
        }
        // Both sides set the group, so it exists before the handler may use it.
        libc::setpgid(pid, pid);
        GUARDED_GROUP.store(pid, Ordering::Relaxed);
        let orphaned = libc::getppid() != parent;
        libc::sigprocmask(libc::SIG_UNBLOCK, &term, std::ptr::null_mut());
        if orphaned {
            // pgreplica died before the death signal was armed.
            kill_guarded_group(libc::SIGTERM);
        }
        // Keep only stdio: spawn() in pgreplica waits for its exec-status pipe to close, which
        // now happens when the grandchild execs.
        if libc::syscall(libc::SYS_close_range, 3u32, u32::MAX, 0u32) != 0 {
            for fd in 3..4096 {
                libc::close(fd);
            }
        }
        // Reap the command and everything it forked; only then report its status.
        let mut result = None;
        loop {
            let mut status = 0;
            let reaped = libc::waitpid(-1, &mut status, 0);
            if reaped == pid {
                result = Some(status);
            } else if reaped < 0 && io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
                break;
            }
        }
        let Some(status) = result else {
            libc::_exit(127)
        };
        if libc::WIFEXITED(status) {
            libc::_exit(libc::WEXITSTATUS(status));
        }
        // Die the way the command died, so the exit status says "killed by signal N".
        let signal = libc::WTERMSIG(status);
        let _ = set_handler(signal, libc::SIG_DFL);
        libc::kill(libc::getpid(), signal);
        libc::_exit(128 + signal)
    }
}

/// Blocks until `pid` has exited, leaving it a zombie so its id cannot be reused yet.
pub(crate) fn wait_no_reap(pid: libc::pid_t) {
    loop {
        // SAFETY: info is a local, zeroed siginfo_t, filled by waitid.
        let rc = unsafe {
            let mut info: libc::siginfo_t = std::mem::zeroed();
            libc::waitid(
                libc::P_PID,
                pid as libc::id_t,
                &mut info,
                libc::WEXITED | libc::WNOWAIT,
            )
        };
        if rc == 0 || io::Error::last_os_error().raw_os_error() != Some(libc::EINTR) {
            return;
        }
    }
}
