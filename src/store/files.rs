//! The transfer's file list: one sled tree per clone, one key per entry, and its summary.
//!
//! Keys are the entry's root (big-endian `u32`) followed by its path bytes, so that marking a
//! file done is one point lookup and [`FileTable::entries`] comes back sorted by
//! `(root, path)`, whatever order the list was given in. Values use the store's versioned
//! encoding. This module only stores the list; deciding what to send is the transfer's job.
//!
//! **Invariant:** the summary key holds the list's counts (entries, files and bytes, done and
//! total) and is written in the same sled batch as every entry it counts, so that `clone
//! status` reads one key instead of decoding 100 000 entries, and a crash anywhere (sled
//! applies a batch whole or not at all) never leaves counts that disagree with the entries.
//! Marks wait in memory ([`Pending`]) until [`FileTable::flush`] writes them and the summary
//! as one batch: a batch per mark cost about 200 µs, eight times a plain insert.
//!
//! **Invariant:** a file's *check* (its bytes at the target matched backup_manifest's checksum,
//! [`FileTable::mark_checked`]) lives in a tree of its own ([`CHECKS_TREE`]), so the entries'
//! stored form is unchanged, and counts only while the entry is done: every change of a done
//! mark takes the check back, and the checks are written before the marks of the same flush
//! (sled recovers a prefix of its writes), so a crash can lose a check — the file is then
//! checked at the end — but never leave one on a file written after it.

use super::codec;
use super::CloneStore;
use crate::error::Error;
use serde::{Deserialize, Serialize};
use states::{EntryKind, ManifestEntry};
use std::collections::BTreeMap;

/// Name of the sled tree holding a clone's file list.
pub(crate) const TREE: &[u8] = b"files";

/// Name of the sled tree holding which entries were checked against backup_manifest: the
/// entry's key, an empty value.
pub(crate) const CHECKS_TREE: &[u8] = b"checked";

/// Key of the [`Summary`] in the file tree: three bytes, shorter than any entry's key (whose
/// root alone takes four), so no entry can ever take it.
pub(super) const SUMMARY_KEY: &[u8] = b"sum";

/// Done and total counts of a file list, for progress and `clone status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FileCounts {
    /// Regular files marked done.
    pub files_done: u64,
    /// Bytes of the regular files marked done.
    pub bytes_done: u64,
    /// Regular files in the list.
    pub files_total: u64,
    /// Bytes of the regular files in the list.
    pub bytes_total: u64,
}

/// What the summary key holds: the counts of the entries stored beside it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Summary {
    /// Entries of every kind (what the marker's `files` vouches for).
    entries: u64,
    /// The regular files' counts.
    counts: FileCounts,
}

impl Summary {
    /// The summary of `entries`, counted one by one.
    fn of<'e>(entries: impl IntoIterator<Item = &'e ManifestEntry>) -> Summary {
        let mut summary = Summary::default();
        for entry in entries {
            summary.entries += 1;
            if entry.kind == EntryKind::File {
                summary.counts.files_total += 1;
                summary.counts.bytes_total += entry.size;
            }
            if entry.done {
                summary.move_done_share(entry, true);
            }
        }
        summary
    }

    /// Moves `entry`'s share into (`done`) or out of the done counts; only regular files
    /// count.
    fn move_done_share(&mut self, entry: &ManifestEntry, done: bool) {
        if entry.kind != EntryKind::File {
            return;
        }
        let counts = &mut self.counts;
        if done {
            counts.files_done += 1;
            counts.bytes_done += entry.size;
        } else {
            counts.files_done -= 1;
            counts.bytes_done -= entry.size;
        }
    }
}

/// What this process changed in the list and has not written yet, under the store's lock.
#[derive(Debug, Default)]
pub(crate) struct Pending {
    /// The summary including the pending marks (`None`: not read from sled yet).
    summary: Option<Summary>,
    /// Entries whose mark changed since the last write, by key.
    entries: BTreeMap<Vec<u8>, ManifestEntry>,
    /// Checks recorded (`true`) or taken back since the last write, by key.
    checks: BTreeMap<Vec<u8>, bool>,
}

/// The file list of one clone; borrowed from its [`CloneStore`], so it cannot outlive the
/// lock.
pub struct FileTable<'a> {
    pub(crate) store: &'a CloneStore,
    pub(crate) tree: sled::Tree,
    pub(crate) checks: sled::Tree,
}

fn key(root: u32, path: &str) -> Vec<u8> {
    let mut key = Vec::with_capacity(4 + path.len());
    key.extend_from_slice(&root.to_be_bytes());
    key.extend_from_slice(path.as_bytes());
    key
}

impl FileTable<'_> {
    /// Stores `entries` as the whole list, replacing any earlier one atomically, and flushes.
    /// When two entries share a `(root, path)`, the later one wins.
    pub fn replace(&self, entries: &[ManifestEntry]) -> Result<(), Error> {
        let mut pending = self.store.pending();
        // Until the new list is flushed, sled may hold either list after a crash: the marker
        // stops vouching for a length meanwhile.
        let mut marker = self.store.marker();
        marker.files = None;
        marker.write(self.store.dir())?;
        *pending = Pending::default();
        self.checks
            .clear()
            .map_err(|e| self.store.sled_error("write the file list of", e))?;
        let mut batch = sled::Batch::default();
        for old in self.tree.iter().keys() {
            batch.remove(old.map_err(|e| self.store.sled_error("read the file list of", e))?);
        }
        let unique: BTreeMap<Vec<u8>, &ManifestEntry> = entries
            .iter()
            .map(|entry| (key(entry.root, &entry.path), entry))
            .collect();
        let summary = Summary::of(unique.values().copied());
        for (key, entry) in unique {
            batch.insert(key, codec::encode(entry));
        }
        batch.insert(SUMMARY_KEY, codec::encode(&summary));
        self.tree
            .apply_batch(batch)
            .map_err(|e| self.store.sled_error("write the file list of", e))?;
        self.flush_tree()?;
        pending.summary = Some(summary);
        marker.files = Some(summary.entries);
        marker.write(self.store.dir())
    }

    /// Every entry, sorted by `(root, path)` (paths compared bytewise), marks not yet flushed
    /// included.
    pub fn entries(&self) -> Result<Vec<ManifestEntry>, Error> {
        let mut pending = self.store.pending();
        self.write_pending(&mut pending)?;
        drop(pending);
        self.scan()
    }

    /// The entries as sled holds them, checked against the marker's length.
    fn scan(&self) -> Result<Vec<ManifestEntry>, Error> {
        let entries = self
            .tree
            .iter()
            .filter(|item| item.as_ref().map_or(true, |(key, _)| key != SUMMARY_KEY))
            .map(|item| {
                let (_, value) =
                    item.map_err(|e| self.store.sled_error("read the file list of", e))?;
                codec::decode(&value).map_err(|e| self.store.decode_error("file list", e))
            })
            .collect::<Result<Vec<ManifestEntry>, Error>>()?;
        self.check_length(entries.len() as u64)?;
        Ok(entries)
    }

    /// Marks one entry done. Cheap: the mark waits in memory, so the caller calls [`flush`]
    /// (at least every second) to make the marks durable. Returns `false` when the list has
    /// no such entry.
    ///
    /// [`flush`]: FileTable::flush
    pub fn mark_done(&self, root: u32, path: &str) -> Result<bool, Error> {
        self.set_done(root, path, true)
    }

    /// Takes back the done mark of one entry whose file is no longer what the mark vouched
    /// for (deleted, replaced, changed): the transfer sends it again. Not flushed, like
    /// [`FileTable::mark_done`]. Returns `false` when the list has no such entry.
    pub fn unmark(&self, root: u32, path: &str) -> Result<bool, Error> {
        self.set_done(root, path, false)
    }

    /// Records that the done entry's file at the target matched backup_manifest's checksum
    /// (not flushed, like [`FileTable::mark_done`]); a later change of its done mark takes the
    /// check back.
    pub fn mark_checked(&self, root: u32, path: &str) {
        self.store.pending().checks.insert(key(root, path), true);
    }

    /// The entries marked done and checked, as `(root, path)`, pending ones included.
    pub fn checked(&self) -> Result<Vec<(u32, String)>, Error> {
        let mut pending = self.store.pending();
        self.write_pending(&mut pending)?;
        drop(pending);
        let done: std::collections::HashSet<(u32, String)> = self
            .scan()?
            .into_iter()
            .filter(|e| e.done)
            .map(|e| (e.root, e.path))
            .collect();
        let mut checked = Vec::new();
        for item in self.checks.iter().keys() {
            let key = item.map_err(|e| self.store.sled_error("read the file list of", e))?;
            let Some((root, path)) = key.split_first_chunk::<4>() else {
                continue;
            };
            let entry = (
                u32::from_be_bytes(*root),
                String::from_utf8_lossy(path).into_owned(),
            );
            if done.contains(&entry) {
                checked.push(entry);
            }
        }
        Ok(checked)
    }

    fn set_done(&self, root: u32, path: &str, done: bool) -> Result<bool, Error> {
        let mut pending = self.store.pending();
        let key = key(root, path);
        // Whatever the file was checked as, a new mark is about another copy of it.
        pending.checks.insert(key.clone(), false);
        let mut entry = match pending.entries.get(&key) {
            Some(entry) => entry.clone(),
            None => {
                let Some(value) = self
                    .tree
                    .get(&key)
                    .map_err(|e| self.store.sled_error("read the file list of", e))?
                else {
                    return Ok(false);
                };
                codec::decode(&value).map_err(|e| self.store.decode_error("file list", e))?
            }
        };
        if entry.done != done {
            let mut summary = match pending.summary {
                Some(summary) => summary,
                None => self.summary()?,
            };
            entry.done = done;
            summary.move_done_share(&entry, done);
            pending.summary = Some(summary);
            pending.entries.insert(key, entry);
        }
        Ok(true)
    }

    /// Makes every mark so far durable: the marks and the summary go to sled as one batch.
    pub fn flush(&self) -> Result<(), Error> {
        let mut pending = self.store.pending();
        self.write_pending(&mut pending)?;
        self.flush_tree()
    }

    /// Writes the pending checks, then the pending marks and the summary that counts them as
    /// one batch (not flushed).
    fn write_pending(&self, pending: &mut Pending) -> Result<(), Error> {
        if !pending.checks.is_empty() {
            let mut batch = sled::Batch::default();
            for (key, checked) in std::mem::take(&mut pending.checks) {
                if checked {
                    batch.insert(key, &[][..]);
                } else {
                    batch.remove(key);
                }
            }
            self.checks
                .apply_batch(batch)
                .map_err(|e| self.store.sled_error("write the file list of", e))?;
        }
        let Some(summary) = pending.summary.filter(|_| !pending.entries.is_empty()) else {
            return Ok(());
        };
        let mut batch = sled::Batch::default();
        for (key, entry) in std::mem::take(&mut pending.entries) {
            batch.insert(key, codec::encode(&entry));
        }
        batch.insert(SUMMARY_KEY, codec::encode(&summary));
        self.tree
            .apply_batch(batch)
            .map_err(|e| self.store.sled_error("write the file list of", e))
    }

    fn flush_tree(&self) -> Result<(), Error> {
        self.tree
            .flush()
            .map(drop)
            .map_err(|e| self.store.sled_error("flush the file list of", e))
    }

    /// Regular files marked done and their bytes (directories and symlinks are not counted).
    pub fn done_counts(&self) -> Result<(u64, u64), Error> {
        let counts = self.counts()?;
        Ok((counts.files_done, counts.bytes_done))
    }

    /// Done and total counts of regular files (marks not yet flushed included), from the
    /// summary: one key read, whatever the length of the list.
    pub fn counts(&self) -> Result<FileCounts, Error> {
        let pending = self.store.pending();
        match pending.summary {
            Some(summary) => Ok(summary.counts),
            None => Ok(self.summary()?.counts),
        }
    }

    /// The stored summary, checked against the marker's length. A list written by a
    /// pgreplica that kept no summary is counted entry by entry instead (the next flushed
    /// mark stores the summary).
    fn summary(&self) -> Result<Summary, Error> {
        let stored = self
            .tree
            .get(SUMMARY_KEY)
            .map_err(|e| self.store.sled_error("read the file list of", e))?;
        let summary: Summary = match stored {
            Some(bytes) => {
                codec::decode(&bytes).map_err(|e| self.store.decode_error("file list", e))?
            }
            None => return Ok(Summary::of(&self.scan()?)),
        };
        self.check_length(summary.entries)?;
        Ok(summary)
    }
    /// Refuses a list whose length is not the one the marker says was saved.
    fn check_length(&self, found: u64) -> Result<(), Error> {
        match self.store.marker().files {
            Some(expected) if found != expected => Err(self.store.damaged(&format!(
                "the file list has {found} entries, although {expected} were saved"
            ))),
            _ => Ok(()),
        }
    }
}
