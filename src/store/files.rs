//! The transfer's file list: one sled tree per clone, one key per entry.
//!
//! Keys are the entry's root (big-endian `u32`) followed by its path bytes, so that marking a
//! file done is one point lookup and [`FileTable::entries`] comes back sorted by
//! `(root, path)`, whatever order the list was given in. Values use the store's versioned
//! encoding. This module only stores the list; deciding what to send is the transfer's job.

use super::codec;
use super::CloneStore;
use crate::error::Error;
use states::{EntryKind, ManifestEntry};

/// Name of the sled tree holding a clone's file list.
pub(crate) const TREE: &[u8] = b"files";

/// Done and total counts of a file list, for progress and `clone status`.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
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

/// The file list of one clone; borrowed from its [`CloneStore`], so it cannot outlive the
/// lock.
pub struct FileTable<'a> {
    pub(crate) store: &'a CloneStore,
    pub(crate) tree: sled::Tree,
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
        // Until the new list is flushed, sled may hold either list after a crash: the marker
        // stops vouching for a length meanwhile.
        let mut marker = self.store.marker();
        marker.files = None;
        marker.write(self.store.dir())?;
        let mut batch = sled::Batch::default();
        for old in self.tree.iter().keys() {
            batch.remove(old.map_err(|e| self.store.sled_error("read the file list of", e))?);
        }
        for entry in entries {
            batch.insert(key(entry.root, &entry.path), codec::encode(entry));
        }
        self.tree
            .apply_batch(batch)
            .map_err(|e| self.store.sled_error("write the file list of", e))?;
        self.flush()?;
        marker.files = Some(self.tree.len() as u64);
        marker.write(self.store.dir())
    }

    /// Every entry, sorted by `(root, path)` (paths compared bytewise).
    pub fn entries(&self) -> Result<Vec<ManifestEntry>, Error> {
        let entries = self
            .tree
            .iter()
            .values()
            .map(|value| {
                let value = value.map_err(|e| self.store.sled_error("read the file list of", e))?;
                codec::decode(&value).map_err(|e| self.store.decode_error("file list", e))
            })
            .collect::<Result<Vec<ManifestEntry>, Error>>()?;
        if let Some(expected) = self.store.marker().files {
            if entries.len() as u64 != expected {
                return Err(self.store.damaged(&format!(
                    "the file list has {} entries, although {expected} were saved",
                    entries.len()
                )));
            }
        }
        Ok(entries)
    }

    /// Marks one entry done. Cheap: nothing is flushed, so the caller calls [`flush`]
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

    fn set_done(&self, root: u32, path: &str, done: bool) -> Result<bool, Error> {
        let key = key(root, path);
        let Some(value) = self
            .tree
            .get(&key)
            .map_err(|e| self.store.sled_error("read the file list of", e))?
        else {
            return Ok(false);
        };
        let mut entry: ManifestEntry =
            codec::decode(&value).map_err(|e| self.store.decode_error("file list", e))?;
        if entry.done != done {
            entry.done = done;
            self.tree
                .insert(key, codec::encode(&entry))
                .map_err(|e| self.store.sled_error("write the file list of", e))?;
        }
        Ok(true)
    }

    /// Makes every mark so far durable.
    pub fn flush(&self) -> Result<(), Error> {
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

    /// Done and total counts of regular files. Reads the whole list (about 10 ms for 100k
    /// entries), so a runner keeps its own counters rather than calling this every second.
    pub fn counts(&self) -> Result<FileCounts, Error> {
        let mut counts = FileCounts::default();
        for entry in self.entries()? {
            if entry.kind != EntryKind::File {
                continue;
            }
            counts.files_total += 1;
            counts.bytes_total += entry.size;
            if entry.done {
                counts.files_done += 1;
                counts.bytes_done += entry.size;
            }
        }
        Ok(counts)
    }
}
