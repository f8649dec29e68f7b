//! The rsync engine: copies a Barman backup tree with parallel rsync streams and reports each
//! file the moment it is complete at its final name, so the caller can checkpoint per file.
//!
//! It owns the rsync processes and nothing else: the caller (the Transfer step) owns the store,
//! decides what is done and passes a [`StreamPlan`]; this module never reads or writes the store
//! and never decides to retry.
//!
//! Facts it relies on (reference/rsync.md):
//! * an `--out-format` containing `%b` is printed once the file was received, just before rsync
//!   renames it into place (see `output`); a [`RsyncEvent::FileDone`] is never sent for a
//!   half-received file, and a mark a kill caught before the rename is taken back by the next
//!   run, which finds no file of the list's size and mtime at the final name;
//! * rsync skips a file whose size and mtime already match, silently; after an rsync exits 0,
//!   each listed entry it did not name is checked on disk (size and mtime) and then reported;
//! * a killed receiver leaves `.<name>.XXXXXX` temp files holding the first bytes of the file:
//!   [`cleanup_partial`] keeps the longest one of a big file under the file's final name and
//!   removes the rest, and the next run completes it with `--append-verify`, which sends only the
//!   missing tail and then checks the whole file's checksum (re-sending it on a mismatch), so a
//!   resume goes on from the middle of a file without trusting the kept bytes;
//! * rsync's forked children (generator, receiver, ssh) do not die with their parent, and when
//!   they see it gone they delete their temp file and may still rename finished files. So each
//!   rsync runs under a guardian process (see [`guardian`](crate::transfer::guardian)) that
//!   SIGKILLs rsync's whole process group when pgreplica dies, even by SIGKILL, or when a
//!   stream must stop, and exits only once every process of that rsync is reaped.
//!
//! Progress comes from `--info=progress2` on rsync's stdout (bytes sent so far by that rsync),
//! summed per stream; it is reported as [`RsyncEvent::Progress`].
//!
//! # Layout
//! * `job` — what a copy is given ([`RsyncJob`]) and reports ([`RsyncEvent`], [`RsyncStats`]).
//! * `cleanup` — [`cleanup_partial`]: what a killed rsync left, tidied before a resume.
//! * `command` — the rsync command lines and their `--files-from` lists.
//! * `phase` — a phase's streams, each on a guarded thread, reading rsync's stdout as it comes.
//! * `output` — our `%b` out-format lines and `--info=progress2` lines, parsed.
//! * `exit` — what rsync's exit codes mean and which are worth retrying.

mod cleanup;
mod command;
mod exit;
mod job;
mod output;
mod phase;

pub use cleanup::{cleanup_partial, Cleanup, RESUME_PARTIAL_MIN_BYTES};
pub use exit::{exit_code_is_retryable, exit_code_meaning};
pub use job::{RsyncEvent, RsyncJob, RsyncStats, TreeSource};
pub(crate) use phase::{forward, Msg};

use std::collections::BTreeMap;
use std::io;
use std::path::Path;
use std::time::Instant;

use states::EntryKind;

use crate::error::{Error, ErrorKind, Result};
use crate::transfer::streams::StreamPlan;
use command::{invocations_of, ScratchDir};
use phase::run_phase;

/// Copies the planned entries with one rsync per stream, then `global/pg_control` (and the
/// directories' times, which the parallel streams disturb) in a final rsync, and calls
/// `on_event` as files complete.
///
/// Any exit code but 0 is an [`ErrorKind::Rsync`] error naming the code's meaning, with rsync's
/// stderr tail as DETAIL; it is retryable for connection failures (10, 12, 30, 35, 255), a
/// signal (20) and a killed rsync. When one stream fails the others are killed, and all are
/// reaped before this returns. Dropping the future kills every rsync process group and waits
/// for them (blocking the dropping thread for the few milliseconds that takes).
pub async fn run_streams(
    job: &RsyncJob,
    plan: &StreamPlan,
    mut on_event: impl FnMut(RsyncEvent),
) -> Result<RsyncStats> {
    let started = Instant::now();
    let mut stats = RsyncStats::default();
    if plan.is_empty() {
        return Ok(stats);
    }
    if let Some(&i) = plan
        .streams
        .iter()
        .flatten()
        .chain(&plan.last)
        .find(|&&i| i >= job.entries.len())
    {
        return Err(bad_index(i, job));
    }
    let scratch = ScratchDir::create()?;
    let mut streams = Vec::with_capacity(plan.streams.len());
    for (n, indices) in plan.streams.iter().enumerate() {
        let mut by_root: BTreeMap<u32, Vec<usize>> = BTreeMap::new();
        for &i in indices {
            by_root.entry(job.entries[i].root).or_default().push(i);
        }
        let mut invocations = Vec::new();
        for (root, send) in by_root {
            invocations.extend(invocations_of(job, n, root, &send, |_| true, &scratch)?);
        }
        streams.push(invocations);
    }
    let mut reported = vec![false; job.entries.len()];
    run_phase(
        streams,
        &job.entries,
        &mut reported,
        &mut stats,
        &mut on_event,
    )
    .await?;

    // The final rsync: pg_control, plus every directory again (reported by the streams already)
    // so that their times are the backup's and not those left by the streams writing into them.
    let final_stream = plan.streams.len();
    let mut last = Vec::new();
    for root in job.roots() {
        let mut send: Vec<usize> = (0..job.entries.len())
            .filter(|&i| job.entries[i].root == root && job.entries[i].kind == EntryKind::Dir)
            .collect();
        if let Some(i) = plan.last.filter(|&i| job.entries[i].root == root) {
            send.push(i);
        }
        if !send.is_empty() {
            let report = |i: usize| Some(i) == plan.last;
            last.extend(invocations_of(
                job,
                final_stream,
                root,
                &send,
                report,
                &scratch,
            )?);
        }
    }
    run_phase(
        vec![last],
        &job.entries,
        &mut reported,
        &mut stats,
        &mut on_event,
    )
    .await?;
    stats.duration = started.elapsed();
    Ok(stats)
}

fn fs_error(verb: &str, path: &Path, e: &io::Error) -> Error {
    Error::new(
        ErrorKind::System,
        format!("could not {verb} \"{}\": {e}", path.display()),
    )
    .hint("check that the target directory belongs to the user running pgreplica")
}

fn bad_index(i: usize, job: &RsyncJob) -> Error {
    Error::bug(format!(
        "the transfer plan names entry {i} but the manifest has {} entries",
        job.entries.len()
    ))
}
