//! The guardian: runs a copy process (rsync, pg_basebackup) so that it dies with pgreplica.
//!
//! Copy programs fork (rsync's generator and receiver, their ssh) and their children do not
//! inherit `PR_SET_PDEATHSIG`, so killing pgreplica alone — even by SIGKILL — could leave them
//! writing into the data directory. `spawn_guarded` puts a small guardian process between
//! pgreplica and the command; it SIGKILLs the command's whole process group when pgreplica dies
//! or asks it to stop, and exits only once every process the command forked is gone.
//!
//! The guardian's death signal follows the *thread* that spawned it, not the process, so a
//! guarded child must be started by a thread that lives until the child is reaped — never a
//! tokio worker or blocking-pool thread, which the runtime may retire at any time.
//! [`GuardedThreads`] is the one way in: each of its threads gets a [`Spawner`] that cannot
//! leave that thread, every [`GuardedChild`] is reaped (or stopped and reaped) before the thread
//! can end, and the set can stop every child at once and wait for all of them.
//!
//! Must not: read or judge what a child prints (its engine does), or decide to retry.

use std::io;
use std::marker::PhantomData;
use std::os::unix::process::CommandExt;
use std::process::{Child, ChildStderr, ChildStdout, Command, ExitStatus};
use std::sync::atomic::{AtomicI32, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::thread::JoinHandle;

/// Threads that each start and watch guarded children, and the guardians alive among them, so
/// that a failure or a drop can stop every child and wait until all are gone.
///
/// Dropping it with threads still running stops their children and joins them (blocking the
/// dropping thread for the few milliseconds a SIGKILLed process group takes to be reaped).
#[derive(Default)]
pub struct GuardedThreads {
    guardians: Arc<Guardians>,
    threads: Vec<JoinHandle<()>>,
}

impl GuardedThreads {
    /// Runs `body` on a new thread named `name`, with a [`Spawner`] that starts guarded children
    /// from that thread. The thread's end is awaited by [`GuardedThreads::join`] or the drop.
    pub fn spawn(
        &mut self,
        name: &str,
        body: impl FnOnce(&Spawner) + Send + 'static,
    ) -> io::Result<()> {
        let guardians = self.guardians.clone();
        let thread = std::thread::Builder::new()
            .name(name.to_string())
            .spawn(move || {
                body(&Spawner {
                    guardians,
                    not_send: PhantomData,
                })
            })?;
        self.threads.push(thread);
        Ok(())
    }

    /// Asks every running child's guardian to SIGKILL the child's group, and refuses new
    /// children from now on; each guardian exits once its group is reaped.
    pub fn stop_all(&self) {
        let mut inner = self.guardians.lock();
        inner.stopping = true;
        for &pid in &inner.live {
            // SAFETY: kill has no memory effects; pid is a guardian not reaped yet (a pid leaves
            // `live` before its process is reaped), so it cannot be a recycled pid.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }

    /// Waits until every thread has ended, and so every child it started is reaped.
    pub fn join(&mut self) {
        for thread in self.threads.drain(..) {
            // A panicking thread has stopped and reaped its child while unwinding (the drop of
            // [`GuardedChild`]); what it failed to report is its caller's to notice.
            let _ = thread.join();
        }
    }
}

/// The error of a copy thread `what` the system refused to start ([`GuardedThreads::spawn`]'s
/// error): the operator's to fix (exit 13), then resume.
pub fn thread_refused(what: &str, e: io::Error) -> crate::error::Error {
    crate::error::Error::new(
        crate::error::ErrorKind::System,
        format!("could not start a thread for {what}: {e}"),
    )
    .hint(format!(
        "the system refused a new thread (its limit on processes, \"ulimit -u\", or its memory): make room, then run \"{}\"",
        crate::paste::resume()
    ))
}

impl Drop for GuardedThreads {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.stop_all();
            self.join();
        }
    }
}

/// Runs `command` to its end under a guardian, on a thread of its own, and returns its exit
/// status with what it wrote on stderr (which is piped here; stdin and stdout are the
/// caller's to set). Dropping the future stops the command and waits until it is gone: a
/// copy process (`pg_combinebackup`, a decrypting ssh) never outlives its step.
pub async fn run_to_end(mut command: Command, name: &str) -> io::Result<(ExitStatus, Vec<u8>)> {
    let (tx, rx) = tokio::sync::oneshot::channel();
    let mut threads = GuardedThreads::default();
    threads.spawn(name, move |spawner| {
        command.stderr(std::process::Stdio::piped());
        let result = match spawner.spawn(&mut command) {
            Ok(Some(mut child)) => {
                let mut stderr = Vec::new();
                if let Some(mut pipe) = child.take_stderr() {
                    let _ = std::io::Read::read_to_end(&mut pipe, &mut stderr);
                }
                child.wait().map(|status| (status, stderr))
            }
            Ok(None) => Err(io::Error::new(
                io::ErrorKind::Interrupted,
                "stopped before it started",
            )),
            Err(e) => Err(e),
        };
        let _ = tx.send(result);
    })?;
    let result = rx.await.unwrap_or_else(|_| {
        Err(io::Error::other(
            "the watching thread ended without a status",
        ))
    });
    threads.join();
    result
}

/// The guardians of running children, shared by a [`GuardedThreads`] and its threads.
#[derive(Default)]
struct Guardians {
    inner: Mutex<GuardiansInner>,
}

#[derive(Default)]
struct GuardiansInner {
    /// Set by [`GuardedThreads::stop_all`]: no new child may start.
    stopping: bool,
    /// Pids of guardians not yet reaped, so a signal can never reach a recycled pid.
    live: Vec<libc::pid_t>,
}

impl Guardians {
    fn lock(&self) -> MutexGuard<'_, GuardiansInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }
}

/// Starts guarded children from the thread [`GuardedThreads::spawn`] made for it. It cannot be
/// sent or shared with another thread, so a child is always spawned by a thread that waits for
/// it: the guardian's death signal then fires only when pgreplica itself dies.
pub struct Spawner {
    guardians: Arc<Guardians>,
    /// Keeps the spawner (and the children borrowing it) on its own thread.
    not_send: PhantomData<*const ()>,
}

impl Spawner {
    /// Starts `cmd` under a guardian (see `spawn_guarded`). `Ok(None)` when the set is
    /// stopping: the child was not started.
    pub fn spawn(&self, cmd: &mut Command) -> io::Result<Option<GuardedChild<'_>>> {
        // Held across the spawn, so a stop either comes first (nothing starts) or sees the pid.
        let mut inner = self.guardians.lock();
        if inner.stopping {
            return Ok(None);
        }
        let child = spawn_guarded(cmd)?;
        let pid = child.id() as libc::pid_t;
        inner.live.push(pid);
        Ok(Some(GuardedChild {
            child,
            pid,
            spawner: self,
            reaped: false,
        }))
    }
}

/// A running guarded child. [`GuardedChild::wait`] reaps it; dropping it unreaped (a panic on
/// its thread) stops it and reaps it, so its thread never ends before it.
pub struct GuardedChild<'a> {
    /// The guardian, which exits with the command's status.
    child: Child,
    pid: libc::pid_t,
    spawner: &'a Spawner,
    reaped: bool,
}

impl GuardedChild<'_> {
    /// The child's standard input, when it was piped (once).
    pub fn take_stdin(&mut self) -> Option<std::process::ChildStdin> {
        self.child.stdin.take()
    }

    /// The child's standard output, when it was piped (once).
    pub fn take_stdout(&mut self) -> Option<ChildStdout> {
        self.child.stdout.take()
    }

    /// The child's standard error, when it was piped (once).
    pub fn take_stderr(&mut self) -> Option<ChildStderr> {
        self.child.stderr.take()
    }

    /// Waits until the command and everything it forked are gone, and returns its status.
    pub fn wait(mut self) -> io::Result<ExitStatus> {
        self.reap()
    }

    fn reap(&mut self) -> io::Result<ExitStatus> {
        self.reaped = true;
        // Wait without reaping, forget the pid, then reap: a kill can never reach a recycled id.
        wait_no_reap(self.pid);
        let pid = self.pid;
        self.spawner.guardians.lock().live.retain(|&p| p != pid);
        self.child.wait()
    }
}

impl Drop for GuardedChild<'_> {
    fn drop(&mut self) {
        if !self.reaped {
            // SAFETY: kill has no memory effects; the guardian is not reaped yet.
            unsafe {
                libc::kill(self.pid, libc::SIGTERM);
            }
            let _ = self.reap();
        }
    }
}

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
/// process): [`Spawner::spawn`] is the only caller.
fn spawn_guarded(cmd: &mut Command) -> io::Result<Child> {
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
fn wait_no_reap(pid: libc::pid_t) {
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

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{BufRead, BufReader};
    use std::os::unix::process::ExitStatusExt;
    use std::process::Stdio;
    use std::sync::mpsc;

    fn sh(script: &str) -> Command {
        let mut cmd = Command::new("sh");
        cmd.arg("-c").arg(script).stdin(Stdio::null());
        cmd
    }

    /// Whether `pid` is a live process (not a zombie, not gone).
    fn alive(pid: libc::pid_t) -> bool {
        std::fs::read_to_string(format!("/proc/{pid}/stat")).is_ok_and(|stat| {
            stat.rsplit(')')
                .next()
                .is_some_and(|rest| !rest.trim_start().starts_with('Z'))
        })
    }

    /// Runs `script` under a guardian from a guarded thread and returns how the guardian ended.
    fn status_of(script: &str) -> ExitStatus {
        let (tx, rx) = mpsc::channel();
        let mut cmd = sh(script);
        let mut threads = GuardedThreads::default();
        threads
            .spawn("guardian-test", move |spawner| {
                let child = spawner
                    .spawn(&mut cmd)
                    .expect("spawns")
                    .expect("not stopping");
                tx.send(child.wait().expect("reaps")).expect("send");
            })
            .expect("thread");
        threads.join();
        rx.recv().expect("a status")
    }

    /// Starts `script` (stdout piped; it must print a pid on its first line) from a guarded
    /// thread that then reads to EOF; returns the threads and the pid printed.
    fn start_printing_pid(script: &str, panic_after_reading: bool) -> (GuardedThreads, i32) {
        let (tx, rx) = mpsc::channel();
        let mut cmd = sh(script);
        cmd.stdout(Stdio::piped());
        let mut threads = GuardedThreads::default();
        threads
            .spawn("guardian-test", move |spawner| {
                let mut child = spawner
                    .spawn(&mut cmd)
                    .expect("spawns")
                    .expect("not stopping");
                let mut lines = BufReader::new(child.take_stdout().expect("piped")).lines();
                let pid = lines.next().expect("a line").expect("readable");
                tx.send(pid.parse::<i32>().expect("a pid")).expect("send");
                if panic_after_reading {
                    panic!("the thread watching the child fails");
                }
                lines.for_each(drop);
                let _ = child.wait();
            })
            .expect("thread");
        let pid = rx.recv().expect("the child printed its pid");
        (threads, pid)
    }

    #[test]
    fn the_guardian_ends_as_its_command_did() {
        assert_eq!(status_of("exit 0").code(), Some(0));
        assert_eq!(status_of("exit 23").code(), Some(23));
        let killed = status_of("kill -9 $$");
        assert_eq!(
            (killed.code(), killed.signal()),
            (None, Some(libc::SIGKILL))
        );
    }

    #[test]
    fn the_guardian_outlives_everything_its_command_forked() {
        let dir = tempfile::tempdir().expect("tempdir");
        let mark = dir.path().join("mark");
        // The command exits at once; what it forked finishes later, and is waited for.
        let status = status_of(&format!("(sleep 0.3; touch '{}') & exit 4", mark.display()));
        assert_eq!(status.code(), Some(4));
        assert!(
            mark.exists(),
            "the guardian reported before the fork was done"
        );
    }

    #[test]
    fn stop_all_kills_the_whole_group_and_join_waits_for_it() {
        let (mut threads, sleeper) = start_printing_pid("sleep 60 & echo $!; wait", false);
        assert!(alive(sleeper));
        threads.stop_all();
        threads.join();
        assert!(!alive(sleeper), "the command's fork survived the stop");
    }

    #[test]
    fn dropping_the_threads_stops_and_reaps_their_children() {
        let (threads, sleeper) = start_printing_pid("echo $$; exec sleep 60", false);
        assert!(alive(sleeper));
        drop(threads);
        assert!(!alive(sleeper), "the child survived the drop");
    }

    #[test]
    fn a_watching_thread_that_panics_stops_its_child_first() {
        let (mut threads, sleeper) = start_printing_pid("echo $$; exec sleep 60", true);
        threads.join();
        assert!(!alive(sleeper), "the child outlived the thread watching it");
    }

    #[test]
    fn a_stopped_set_starts_nothing() {
        let mut threads = GuardedThreads::default();
        threads.stop_all();
        let (tx, rx) = mpsc::channel();
        let mut cmd = sh("exit 0");
        threads
            .spawn("guardian-test", move |spawner| {
                let started = spawner.spawn(&mut cmd).expect("no spawn error");
                tx.send(started.is_none()).expect("send");
            })
            .expect("thread");
        threads.join();
        assert!(
            rx.recv().expect("an answer"),
            "a child started after stop_all"
        );
    }
}
