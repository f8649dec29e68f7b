//! The rsync engine's check of each copied file against backup_manifest, concurrent with the
//! copy: as rsync reports a file complete, a verifier thread reads it back (from the page
//! cache, where rsync just wrote it) and compares its checksum with the manifest's, so that
//! VerifyCopy need not read the whole copy again. The streaming engine checks its files as
//! they arrive and needs none of this.
//!
//! The queue is bounded ([`MAX_QUEUED_BYTES`]; one file of any size when it is empty): a file
//! that does not fit is left unchecked, and VerifyCopy checks it at the end, so the copy and
//! its checkpoints never wait for the verifier. Files reported before backup_manifest itself is
//! in wait for it (within the same bound), and each file waits until rsync has renamed it into
//! place (its final name holds the list's size and mtime).
//!
//! Must not: touch the store or decide what a mismatch costs (the caller takes the file's mark
//! back and fails the step, as the streaming engine does).

use std::os::unix::fs::MetadataExt;
use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{self, Receiver, RecvTimeoutError, SyncSender, TryRecvError};
use std::sync::Arc;
use std::thread::JoinHandle;
use std::time::Duration;

use super::checksums::{sum_file, Checksums, Expected};

/// Bytes of files waiting for the verifier beyond which a new file is left to VerifyCopy.
const MAX_QUEUED_BYTES: u64 = 512 << 20;

/// How often files reported but not yet at their final name are looked at again.
const RETRY: Duration = Duration::from_millis(20);

/// Files waiting for the verifier beyond which a new file is left to VerifyCopy.
const MAX_QUEUED_FILES: usize = 4096;

/// A copied file to check.
pub(crate) struct Check {
    /// Index of the entry in the copy's list.
    pub(crate) index: usize,
    /// The entry's root (0 = data directory, else tablespace OID).
    pub(crate) root: u32,
    /// The entry's path relative to its root.
    pub(crate) path: String,
    /// Where and how it lands.
    pub(crate) landing: Landing,
}

/// A copied file at its final name, as the list describes it.
pub(crate) struct Landing {
    /// Its final name.
    pub(crate) file: PathBuf,
    /// Its size in the list.
    pub(crate) size: u64,
    /// Its mtime in the list (seconds since the epoch).
    pub(crate) mtime: i64,
}

impl Landing {
    /// Whether the final name holds the file as listed: rsync has renamed it into place.
    fn landed(&self) -> bool {
        std::fs::symlink_metadata(&self.file)
            .is_ok_and(|m| m.is_file() && m.len() == self.size && m.mtime() == self.mtime)
    }
}

/// What the verifier found for one file.
pub(crate) enum Verdict {
    /// Its bytes match backup_manifest's checksum.
    Matched {
        /// Index of the entry.
        index: usize,
    },
    /// They do not.
    Mismatch {
        /// Index of the entry.
        index: usize,
        /// The checksum the manifest gives it.
        expected: Expected,
    },
}

enum Message {
    /// backup_manifest is reported complete: its checksums can be read once it has landed.
    Manifest(Landing),
    Check(Check),
}

/// The verifier thread and its two queues.
pub(crate) struct Verifier {
    jobs: Option<SyncSender<Message>>,
    verdicts: Receiver<Verdict>,
    queued: Arc<AtomicU64>,
    thread: Option<JoinHandle<()>>,
}

impl Verifier {
    /// Starts the verifier thread.
    pub(crate) fn start() -> std::io::Result<Verifier> {
        let (jobs, inbox) = mpsc::sync_channel(MAX_QUEUED_FILES);
        let (outbox, verdicts) = mpsc::channel();
        let queued = Arc::new(AtomicU64::new(0));
        let counter = queued.clone();
        let thread = std::thread::Builder::new()
            .name("pgreplica-verify".into())
            .spawn(move || work(&inbox, &outbox, &counter))?;
        Ok(Verifier {
            jobs: Some(jobs),
            verdicts,
            queued,
            thread: Some(thread),
        })
    }

    /// backup_manifest is reported complete (`landing`): the files queued so far, and those
    /// to come, are checked against it.
    pub(crate) fn manifest(&self, landing: Landing) {
        if let Some(jobs) = &self.jobs {
            // Never blocks the copy: a full queue leaves the waiting files to VerifyCopy.
            let _ = jobs.try_send(Message::Manifest(landing));
        }
    }

    /// Queues `check` unless the queue is full; returns whether it was queued. Never waits.
    pub(crate) fn submit(&self, check: Check) -> bool {
        let Some(jobs) = &self.jobs else {
            return false;
        };
        let size = check.landing.size;
        let before = self.queued.fetch_add(size, Ordering::SeqCst);
        if before > 0 && before + size > MAX_QUEUED_BYTES {
            self.queued.fetch_sub(size, Ordering::SeqCst);
            return false;
        }
        if jobs.try_send(Message::Check(check)).is_err() {
            self.queued.fetch_sub(size, Ordering::SeqCst);
            return false;
        }
        true
    }

    /// The verdicts reached since the last call.
    pub(crate) fn ready(&self) -> Vec<Verdict> {
        let mut ready = Vec::new();
        loop {
            match self.verdicts.try_recv() {
                Ok(verdict) => ready.push(verdict),
                Err(TryRecvError::Empty | TryRecvError::Disconnected) => return ready,
            }
        }
    }

    /// Waits for the files queued to be checked and returns the verdicts not yet taken.
    pub(crate) fn finish(mut self) -> Vec<Verdict> {
        self.jobs = None;
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
        self.verdicts.try_iter().collect()
    }
}

impl Drop for Verifier {
    fn drop(&mut self) {
        // A copy that failed does not wait for its checks: the thread ends after its file.
        self.jobs = None;
    }
}

/// The verifier thread: checks files as they land, holding them until the manifest is there.
///
/// rsync prints a file's line just before it renames the file into place, so a file (the
/// manifest too) is read only once its final name holds the list's size and mtime (rsync sets
/// the mtime before the rename); until then it waits, and is looked at again with each message
/// or every [`RETRY`]. When the copy is over (the queue closed), every rename is done: what has
/// still not landed then is left to VerifyCopy.
fn work(inbox: &Receiver<Message>, outbox: &mpsc::Sender<Verdict>, queued: &AtomicU64) {
    let mut manifest: Option<Landing> = None;
    let mut checksums: Option<Checksums> = None;
    let mut waiting: Vec<Check> = Vec::new();
    loop {
        // Only a message can help while the manifest is not reported, or nothing waits.
        let idle = manifest.is_none() || (checksums.is_some() && waiting.is_empty());
        let message = if idle {
            inbox.recv().map_err(|_| RecvTimeoutError::Disconnected)
        } else {
            inbox.recv_timeout(RETRY)
        };
        let over = match message {
            Ok(Message::Manifest(landing)) => {
                manifest.get_or_insert(landing);
                false
            }
            Ok(Message::Check(check)) => {
                waiting.push(check);
                false
            }
            Err(RecvTimeoutError::Timeout) => false,
            Err(RecvTimeoutError::Disconnected) => true,
        };
        if checksums.is_none() {
            if let Some(landing) = manifest.as_ref().filter(|m| m.landed()) {
                match Checksums::read(&landing.file) {
                    Ok(read) => checksums = Some(read),
                    Err(e) => {
                        // VerifyCopy reads it again and says what is wrong with it.
                        crate::debug!("files are checked at the end: {}", e.message);
                        return;
                    }
                }
            }
        }
        if let Some(read) = &checksums {
            let mut listening = true;
            waiting.retain(|check| {
                if !listening || !check.landing.landed() {
                    return true;
                }
                listening = verify(read, check, outbox, queued);
                false
            });
            if !listening {
                return;
            }
        }
        if over {
            return;
        }
    }
}

/// Checks one file and sends the verdict (none when the manifest gives it no checksum or the
/// file cannot be read: VerifyCopy checks it then). Returns false when nobody listens any more.
fn verify(
    checksums: &Checksums,
    check: &Check,
    outbox: &mpsc::Sender<Verdict>,
    queued: &AtomicU64,
) -> bool {
    let verdict = checksums.of(check.root, &check.path).and_then(|expected| {
        match sum_file(&check.landing.file, expected.algorithm) {
            Ok(hex) if hex == expected.hex => Some(Verdict::Matched { index: check.index }),
            Ok(_) => Some(Verdict::Mismatch {
                index: check.index,
                expected: expected.clone(),
            }),
            Err(e) => {
                crate::debug!(
                    "\"{}\" is checked at the end: {e}",
                    check.landing.file.display()
                );
                None
            }
        }
    });
    queued.fetch_sub(check.landing.size, Ordering::SeqCst);
    verdict.is_none_or(|v| outbox.send(v).is_ok())
}
