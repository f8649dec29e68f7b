//! Running a phase of the copy: one thread per stream (from [`GuardedThreads`], so each rsync
//! dies with pgreplica), each running its stream's rsyncs one after another, reading their
//! stdout as it comes and telling the caller which files are complete.
//!
//! A file is reported done only when rsync printed its `%b` line for it (its data received,
//! the rename into place under way), or, for entries rsync skipped as already complete and for kept partial files
//! completed with `--append-verify`, after rsync exited 0 and the file checks out on disk.
//!
//! Must not: read or write the store, or retry; a failure stops the phase's other streams.

use std::collections::HashMap;
use std::os::unix::fs::MetadataExt;
use std::process::Stdio;

use states::{EntryKind, ManifestEntry};
use tokio::sync::mpsc;

use super::command::Invocation;
use super::exit::exit_error;
use super::output::{parse_line, Line};
use super::{fs_error, RsyncEvent, RsyncStats};
use crate::child_output;
use crate::error::{Error, ErrorKind, Result};
use crate::transfer::guardian::{thread_refused, GuardedThreads, Spawner};

/// Messages from stream threads to [`forward`] (the streaming engine's threads send them too).
pub(crate) enum Msg {
    /// The entry at this index is complete at its final name; this many bytes came for it;
    /// `checked`: its bytes matched backup_manifest's checksum on their way (the streaming
    /// engine; rsync's files are checked after they are reported, by `transfer::verifier`).
    Done {
        index: usize,
        bytes_sent: u64,
        checked: bool,
    },
    /// The stream has counted this many bytes so far, of which `present` were found in place
    /// (kept partial data read back) rather than received.
    Progress {
        stream: usize,
        bytes: u64,
        present: u64,
    },
    /// The stream failed.
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
    let (tx, rx) = mpsc::unbounded_channel();
    let mut threads = GuardedThreads::default();
    for invocations in streams {
        let tx = tx.clone();
        threads
            .spawn("pgreplica-rsync", move |spawner| {
                run_stream(invocations, spawner, &tx)
            })
            .map_err(|e| thread_refused("rsync", e))?;
    }
    drop(tx);
    forward(rx, threads, entries, reported, stats, on_event).await
}

/// Forwards the messages of a phase's stream `threads` as [`RsyncEvent`]s (each entry once)
/// until every thread has ended; the first failure stops the other streams and is returned.
pub(crate) async fn forward(
    mut rx: mpsc::UnboundedReceiver<Msg>,
    mut threads: GuardedThreads,
    entries: &[ManifestEntry],
    reported: &mut [bool],
    stats: &mut RsyncStats,
    on_event: &mut impl FnMut(RsyncEvent),
) -> Result<()> {
    let mut failure = None;
    while let Some(msg) = rx.recv().await {
        match msg {
            Msg::Done {
                index,
                bytes_sent,
                checked,
            } => {
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
                    checked,
                });
            }
            Msg::Progress {
                stream,
                bytes,
                present,
            } => on_event(RsyncEvent::Progress {
                stream,
                bytes,
                present,
            }),
            Msg::Failed(error) => {
                // The first failure is the cause; the others are the streams stopped for it.
                if failure.is_none() {
                    threads.stop_all();
                    failure = Some(error);
                }
            }
        }
    }
    threads.join();
    failure.map_or(Ok(()), Err)
}

/// A stream thread: its invocations one after the other, stopping at the first failure.
fn run_stream(invocations: Vec<Invocation>, spawner: &Spawner, tx: &mpsc::UnboundedSender<Msg>) {
    let mut counted = Counted::default();
    for invocation in invocations {
        if let Err(error) = run_invocation(&invocation, spawner, tx, &mut counted) {
            let _ = tx.send(Msg::Failed(error));
            return;
        }
    }
}

/// What a stream's earlier rsyncs counted: rsync's counters start at 0 with each rsync.
#[derive(Default)]
struct Counted {
    /// Bytes they reported.
    bytes: u64,
    /// Of those, the kept partial data they read back rather than received.
    present: u64,
}

fn run_invocation(
    inv: &Invocation,
    spawner: &Spawner,
    tx: &mpsc::UnboundedSender<Msg>,
    counted: &mut Counted,
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
    let mut child = match spawner.spawn(&mut cmd) {
        Ok(Some(child)) => child,
        Ok(None) => return Err(stopped(inv)),
        Err(e) => {
            return Err(
                Error::new(ErrorKind::Rsync, format!("could not run rsync: {e}")).hint(
                    "install rsync on this host (it must also be installed on the Barman host)",
                ),
            )
        }
    };

    let mut by_path: HashMap<&str, (usize, bool)> = HashMap::new();
    for (n, item) in inv.items.iter().enumerate() {
        by_path.insert(item.path.trim_end_matches('/'), (n, false));
    }
    // Bytes sent per item in append mode, reported after rsync has exited 0.
    let mut appended = vec![0_u64; inv.items.len()];
    // `--append-verify` reads a kept file's bytes back before receiving its tail, and rsync
    // counts them as progress: the first that many bytes of an appending rsync's count were
    // already here (kept partials come first in their rsync, one per killed stream).
    let mut kept = if inv.append { kept_bytes(inv) } else { 0 };
    let mut present = counted.present;
    let mut last_progress = 0u64;
    let mut mismatch = None;
    if let Some(stdout) = child.take_stdout() {
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
                            checked: false,
                        });
                    }
                }
            }
            Line::Progress(bytes) => {
                let read_back = bytes.saturating_sub(last_progress).min(kept);
                kept -= read_back;
                present += read_back;
                last_progress = last_progress.max(bytes);
                let _ = tx.send(Msg::Progress {
                    stream: inv.stream,
                    bytes: counted.bytes + last_progress,
                    present,
                });
            }
            Line::Other => {}
        });
    }
    counted.bytes += last_progress;
    counted.present = present;

    let status = child
        .wait()
        .map_err(|e| Error::bug(format!("could not reap rsync: {e}")))?;
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
            checked: false,
        });
    }
    Ok(())
}

/// The bytes of the listed files already in the target (the kept partial copies an appending
/// rsync completes).
fn kept_bytes(inv: &Invocation) -> u64 {
    inv.items
        .iter()
        .filter(|item| item.kind == EntryKind::File)
        .filter_map(|item| {
            let meta = std::fs::symlink_metadata(inv.dest.join(&item.path)).ok()?;
            meta.is_file().then(|| meta.len().min(item.size))
        })
        .sum()
}

fn stopped(inv: &Invocation) -> Error {
    Error::new(
        ErrorKind::Rsync,
        format!(
            "rsync stream {} was stopped before copying root {}",
            inv.stream, inv.root
        ),
    )
    .hint(format!(
        "files already copied are kept; \"{}\" re-sends only the rest",
        crate::paste::resume()
    ))
    .retryable()
}
