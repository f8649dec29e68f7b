//! Running a phase of the copy: one thread per stream (each rsync under a guardian, so it dies
//! with pgreplica), each running its stream's rsyncs one after another, reading their
//! stdout as it comes and telling the caller which files are complete.
//!
//! A file is reported done only when rsync printed its `%b` line for it (it is then at its
//! final name), or, for entries rsync skipped as already complete and for kept partial files
//! completed with `--append-verify`, after rsync exited 0 and the file checks out on disk.
//!
//! Must not: read or write the store, or retry; a failure stops the phase's other streams.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};
use std::thread::JoinHandle;

use states::{EntryKind, ManifestEntry};
use tokio::sync::mpsc;

use super::command::Invocation;
use super::exit::exit_error;
use super::output::{parse_line, Line};
use super::{fs_error, RsyncEvent, RsyncStats};
use crate::child_output;
use crate::error::{Error, ErrorKind, Result};
use crate::transfer::guardian::{spawn_guarded, wait_no_reap};

/// Messages from stream threads to [`run_phase`].
enum Msg {
    Done { index: usize, bytes_sent: u64 },
    Progress { stream: usize, bytes: u64 },
    Failed(Error),
}

/// Runs one thread per stream and forwards their events until every thread has finished.
/// Dropping the future stops every rsync of the phase and waits until they are reaped.
pub(super) async fn run_phase(
    streams: Vec<Vec<Invocation>>,
    entries: &[ManifestEntry],
    reported: &mut [bool],
    stats: &mut RsyncStats,
    on_event: &mut impl FnMut(RsyncEvent),
) -> Result<()> {
    let guardians = Arc::new(Guardians::default());
    let (tx, mut rx) = mpsc::unbounded_channel();
    let mut guard = PhaseGuard {
        guardians: guardians.clone(),
        threads: Vec::new(),
    };
    for invocations in streams {
        let (tx, guardians) = (tx.clone(), guardians.clone());
        // A thread of our own per stream, not a tokio worker: PR_SET_PDEATHSIG fires when the
        // *thread* that forked the child exits, and this one lives until its children are reaped.
        let thread = std::thread::Builder::new()
            .name("pgreplica-rsync".into())
            .spawn(move || run_stream(invocations, &guardians, &tx))
            .map_err(|e| {
                Error::new(
                    ErrorKind::System,
                    format!("could not start a thread for rsync: {e}"),
                )
            });
        match thread {
            Ok(handle) => guard.threads.push(handle),
            Err(e) => {
                drop(guard);
                return Err(e);
            }
        }
    }
    drop(tx);
    let mut failure = None;
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Done { index, bytes_sent } => {
                if std::mem::replace(&mut reported[index], true) {
                    continue;
                }
                let entry = &entries[index];
                stats.files += 1;
                stats.bytes_sent += bytes_sent;
                on_event(RsyncEvent::FileDone {
                    index,
                    root: entry.root,
                    path: entry.path.clone(),
                    bytes_sent,
                    size: entry.size,
                });
            }
            Msg::Progress { stream, bytes } => on_event(RsyncEvent::Progress { stream, bytes }),
            Msg::Failed(error) => {
                // The first failure is the cause; the others are the streams stopped for it.
                if failure.is_none() {
                    guardians.stop_all();
                    failure = Some(error);
                }
            }
        }
    }
    guard.join();
    failure.map_or(Ok(()), Err)
}

/// Stops and reaps a phase's rsyncs when the phase future is dropped.
struct PhaseGuard {
    guardians: Arc<Guardians>,
    threads: Vec<JoinHandle<()>>,
}

impl PhaseGuard {
    fn join(&mut self) {
        for thread in self.threads.drain(..) {
            // A panicking stream thread has already reaped or abandoned its child; its error is
            // the channel closing early, which the phase reports as a missing file.
            let _ = thread.join();
        }
    }
}

impl Drop for PhaseGuard {
    fn drop(&mut self) {
        if !self.threads.is_empty() {
            self.guardians.stop_all();
            self.join();
        }
    }
}

/// The guardians of the running rsyncs, so a failure or a drop can stop them all.
#[derive(Default)]
struct Guardians {
    inner: Mutex<GuardiansInner>,
}

#[derive(Default)]
struct GuardiansInner {
    /// Set by [`Guardians::stop_all`]: no new rsync may start.
    stopping: bool,
    /// Pids of guardians not yet reaped, so a signal can never reach a recycled pid.
    live: Vec<libc::pid_t>,
}

impl Guardians {
    fn lock(&self) -> std::sync::MutexGuard<'_, GuardiansInner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// Asks every guardian to SIGKILL its rsync's group; each exits once its group is reaped.
    fn stop_all(&self) {
        let mut inner = self.lock();
        inner.stopping = true;
        for &pid in &inner.live {
            // SAFETY: kill has no memory effects; pid is a child we have not reaped.
            unsafe {
                libc::kill(pid, libc::SIGTERM);
            }
        }
    }
}

/// A stream thread: its invocations one after the other, stopping at the first failure.
fn run_stream(
    invocations: Vec<Invocation>,
    guardians: &Guardians,
    tx: &mpsc::UnboundedSender<Msg>,
) {
    let sent_before = AtomicU64::new(0);
    for invocation in invocations {
        if let Err(error) = run_invocation(&invocation, guardians, tx, &sent_before) {
            let _ = tx.send(Msg::Failed(error));
            return;
        }
    }
}

fn run_invocation(
    inv: &Invocation,
    guardians: &Guardians,
    tx: &mpsc::UnboundedSender<Msg>,
    sent_before: &AtomicU64,
) -> Result<()> {
    let mut stderr = std::fs::File::options()
        .create(true)
        .truncate(true)
        .read(true)
        .write(true)
        .open(&inv.stderr_file)
        .map_err(|e| fs_error("create", &inv.stderr_file, &e))?;
    let mut cmd = inv.command();
    cmd.stdin(Stdio::null()).stdout(Stdio::piped()).stderr(
        stderr
            .try_clone()
            .map_err(|e| fs_error("open", &inv.stderr_file, &e))?,
    );
    crate::debug!("running {cmd:?}");
    let mut child = {
        let mut live = guardians.lock();
        if live.stopping {
            return Err(stopped(inv));
        }
        let child = spawn_guarded(&mut cmd).map_err(|e| {
            Error::new(ErrorKind::Rsync, format!("could not run rsync: {e}"))
                .hint("install rsync on this host (it must also be installed on the Barman host)")
        })?;
        live.live.push(child.id() as libc::pid_t);
        child
    };
    let pid = child.id() as libc::pid_t;

    let mut by_path: HashMap<&str, (usize, bool)> = HashMap::new();
    for (n, item) in inv.items.iter().enumerate() {
        by_path.insert(item.path.trim_end_matches('/'), (n, false));
    }
    // Bytes sent per item in append mode, reported after rsync has exited 0.
    let mut appended = vec![0_u64; inv.items.len()];
    let base = sent_before.load(Ordering::Relaxed);
    let mut last_progress = 0u64;
    let mut mismatch = None;
    if let Some(stdout) = child.stdout.take() {
        // A line rsync did not finish is dropped: cut short, a name may read as another file's.
        child_output::for_each_line(stdout, |line| match parse_line(line) {
            Line::Done {
                bytes_sent,
                length,
                name,
            } => {
                let key = if name.is_empty() { "." } else { name.as_str() };
                if let Some((n, seen)) = by_path.get_mut(key) {
                    let item = &inv.items[*n];
                    if item.kind == EntryKind::File && length != item.size {
                        mismatch.get_or_insert((item.path.clone(), length, item.size));
                    } else if inv.append {
                        appended[*n] += bytes_sent;
                    } else if item.report && !*seen {
                        *seen = true;
                        let _ = tx.send(Msg::Done {
                            index: item.index,
                            bytes_sent,
                        });
                    }
                }
            }
            Line::Progress(bytes) => {
                last_progress = bytes;
                let _ = tx.send(Msg::Progress {
                    stream: inv.stream,
                    bytes: base + bytes,
                });
            }
            Line::Other => {}
        });
    }
    sent_before.store(base + last_progress, Ordering::Relaxed);

    // Wait without reaping, forget the group, then reap: a kill can never reach a recycled id.
    wait_no_reap(pid);
    guardians.lock().live.retain(|&p| p != pid);
    let status = child
        .wait()
        .map_err(|e| Error::new(ErrorKind::Internal, format!("could not reap rsync: {e}")))?;
    if !status.success() {
        let tail = child_output::file_detail(&mut stderr);
        return Err(exit_error(&inv.describe(), status, &tail));
    }
    if let Some((path, copied, expected)) = mismatch {
        return Err(Error::new(
            ErrorKind::Rsync,
            format!("rsync copied \"{path}\" with {copied} bytes but the manifest says {expected}"),
        )
        .detail(format!("source: {}", inv.source))
        .hint("the backup changed after its file list was taken; start the clone again"));
    }
    // rsync exited 0, so every listed entry is in place; the ones it did not name were already
    // complete and skipped, and appended ones were held back. Check them on disk before
    // reporting them.
    for (n, seen) in by_path.values() {
        let item = &inv.items[*n];
        if *seen || !item.report {
            continue;
        }
        let path = inv.dest.join(&item.path);
        let ok = std::fs::symlink_metadata(&path).is_ok_and(|meta| match item.kind {
            EntryKind::File => {
                meta.is_file() && meta.len() == item.size && meta.mtime() == item.mtime
            }
            EntryKind::Dir => meta.is_dir(),
            EntryKind::Symlink => meta.file_type().is_symlink(),
        });
        if !ok {
            return Err(Error::new(
                ErrorKind::Rsync,
                format!(
                    "rsync exited successfully but \"{}\" is missing or differs from the backup",
                    path.display()
                ),
            )
            .detail(format!("source: {}", inv.source))
            .hint("run the clone again; if this repeats, report it with the rsync version"));
        }
        let _ = tx.send(Msg::Done {
            index: item.index,
            bytes_sent: appended[*n],
        });
    }
    Ok(())
}

fn stopped(inv: &Invocation) -> Error {
    Error::new(
        ErrorKind::Rsync,
        format!(
            "rsync stream {} was stopped before copying root {}",
            inv.stream, inv.root
        ),
    )
    .retryable()
}
