//! What a copy is given and what it reports: [`RsyncJob`] (trees, remote shell, manifest, kept
//! partial files), the [`RsyncEvent`]s sent while it runs, and the [`RsyncStats`] of a finished
//! copy.
//!
//! Must not: run anything or touch the disk; these are plain values the caller fills in and
//! reads.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::time::Duration;

use states::ManifestEntry;

/// One tree to copy: a source rsync can read and the local directory it goes to.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TreeSource {
    /// The manifest root this tree holds: a tablespace OID.
    pub root: u32,
    /// rsync source of the tree, e.g. `barman@backup:/var/lib/barman/pg/base/ID/16385/`.
    pub source: String,
    /// Local directory the tree is copied into.
    pub dest: PathBuf,
}

/// Everything one copy needs: where from, where to, how to reach the host, what to copy.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RsyncJob {
    /// rsync source of the data directory (root 0): `barman@host:/var/lib/barman/pg/base/ID/data/`
    /// or a local path. A trailing `/` is added when missing.
    pub source: String,
    /// Remote shell for rsync's `-e`, already quoted for rsync's own splitting
    /// (e.g. `ssh -o BatchMode=yes -c aes128-gcm@openssh.com`); `None` for rsync's default.
    pub rsh: Option<String>,
    /// The local data directory (root 0).
    pub dest: PathBuf,
    /// The other roots of the manifest (tablespaces), each with its own source and target.
    pub tablespaces: Vec<TreeSource>,
    /// Further rsync options placed before the paths (e.g. `--bwlimit=…` from `rsync_options`).
    pub extra_args: Vec<String>,
    /// The backup's manifest; [`StreamPlan`](crate::transfer::streams::StreamPlan) indices
    /// point into it.
    pub entries: Vec<ManifestEntry>,
    /// Entries whose target already holds the first bytes of the file, kept by
    /// [`cleanup_partial`](super::cleanup_partial): rsync completes them with `--append-verify`.
    pub partials: BTreeSet<usize>,
}

impl RsyncJob {
    /// Source and target directory of `root`, if the job knows that root.
    pub(crate) fn tree(&self, root: u32) -> Option<(&str, &Path)> {
        if root == 0 {
            return Some((&self.source, &self.dest));
        }
        self.tablespaces
            .iter()
            .find(|t| t.root == root)
            .map(|t| (t.source.as_str(), t.dest.as_path()))
    }

    /// Every root the job covers, tablespaces first and the data directory last.
    pub(super) fn roots(&self) -> Vec<u32> {
        let mut roots: Vec<u32> = self.tablespaces.iter().map(|t| t.root).collect();
        roots.push(0);
        roots
    }
}

/// What the engine tells its caller while it runs.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum RsyncEvent {
    /// The entry is complete at its final name in the target: checkpoint it as done.
    /// Sent exactly once per planned entry.
    FileDone {
        /// Index of the entry in [`RsyncJob::entries`].
        index: usize,
        /// The entry's root (0 = data directory, else tablespace OID).
        root: u32,
        /// The entry's path relative to its root, as in the manifest.
        path: String,
        /// Bytes rsync sent for it (`%b`, protocol overhead included); 0 when rsync found the
        /// file already complete and skipped it.
        bytes_sent: u64,
        /// The entry's size in the manifest.
        size: u64,
        /// Whether its bytes were checked against backup_manifest's checksum on their way
        /// (the streaming engine does; rsync's files are checked after they are reported).
        checked: bool,
    },
    /// Bytes a stream has counted so far in this phase (from `--info=progress2`). The final
    /// pg_control copy is stream number `streams.len()`.
    Progress {
        /// Stream number, an index into
        /// [`StreamPlan::streams`](crate::transfer::streams::StreamPlan::streams).
        stream: usize,
        /// Bytes that stream has counted so far, as rsync counts them: what it received and
        /// the kept partial data it read back to complete a file with `--append-verify`.
        bytes: u64,
        /// Of `bytes`, the kept partial data read back: already in the target, not received.
        present: u64,
    },
}

/// What a finished copy did.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RsyncStats {
    /// Entries reported done.
    pub files: u64,
    /// Sum of `bytes_sent` over those entries.
    pub bytes_sent: u64,
    /// Wall time of the whole copy, pg_control included.
    pub duration: Duration,
}
