//! Tidying what a killed rsync left in the targets, before a resume: rsync's temp files
//! (`.<name>.XXXXXX`) and partial data at a file's final name.
//!
//! The longest partial copy of a big file is kept under its final name, to be completed with
//! `--append-verify` (which sends the missing tail, then checks the whole file's checksum and
//! re-sends it on a mismatch, so the kept bytes are never trusted); everything else
//! half-written is removed.
//!
//! Must not: touch anything but the directories that hold manifest files, names that are not a
//! manifest file or rsync's temp file of one, or a file that matches the manifest.

use std::collections::HashMap;
use std::io;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use states::{EntryKind, ManifestEntry};

use super::{fs_error, RsyncJob};
use crate::error::Result;

/// Files at least this big keep what an interrupted copy wrote; smaller ones are sent again
/// whole, which costs less than the checksum pass of `--append-verify`.
pub const RESUME_PARTIAL_MIN_BYTES: u64 = 1 << 20;

/// What [`cleanup_partial`] did to the targets.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct Cleanup {
    /// Files removed: rsync temp files and partial data that is not worth keeping.
    pub removed: Vec<PathBuf>,
    /// Interrupted copies kept under their final name, to be completed: entry index and the
    /// bytes already there. Set them as [`RsyncJob::partials`].
    pub kept: Vec<(usize, u64)>,
}

/// Tidies what an interrupted copy left in the targets, before a resume.
///
/// For each not-done manifest file, the candidates are rsync's temp files next to it
/// (`.<name>.XXXXXX`, six letters or digits) and a file at its final name whose size or mtime
/// differs from the manifest (partial data, as a stop or an `--append-verify` run leaves it). For
/// a file of at least [`RESUME_PARTIAL_MIN_BYTES`], the longest candidate shorter than the
/// backup's file is kept under the final name and reported in [`Cleanup::kept`]; every other
/// candidate is removed. A not-done file that matches the manifest is kept as it is: rsync
/// renames a file into place only when complete, and the next run reports it. Temp files next
/// to done files are removed.
///
/// Only directories that hold manifest files are read; nothing else is touched.
pub fn cleanup_partial(job: &RsyncJob) -> Result<Cleanup> {
    let mut cleanup = Cleanup::default();
    for root in job.roots() {
        let Some((_, dest)) = job.tree(root) else {
            continue;
        };
        let mut files_by_dir: HashMap<&str, Vec<(usize, &str)>> = HashMap::new();
        for (index, entry) in job.entries.iter().enumerate() {
            if entry.root == root && entry.kind == EntryKind::File {
                let (dir, name) = entry.path.rsplit_once('/').unwrap_or(("", &entry.path));
                files_by_dir.entry(dir).or_default().push((index, name));
            }
        }
        for (dir, files) in files_by_dir {
            let dir_path = dest.join(dir);
            let mut temps_by_entry: HashMap<usize, Vec<(PathBuf, u64)>> = HashMap::new();
            let listing = match std::fs::read_dir(&dir_path) {
                Ok(listing) => listing,
                Err(e) if e.kind() == io::ErrorKind::NotFound => continue,
                Err(e) => return Err(fs_error("read", &dir_path, &e)),
            };
            for item in listing {
                let item = item.map_err(|e| fs_error("read", &dir_path, &e))?;
                let name = item.file_name();
                let Some(name) = name.to_str() else { continue };
                let Some(&(index, _)) = files.iter().find(|(_, n)| is_temp_of(name, n)) else {
                    continue;
                };
                let path = item.path();
                if let Ok(meta) = std::fs::symlink_metadata(&path) {
                    if meta.is_file() {
                        temps_by_entry
                            .entry(index)
                            .or_default()
                            .push((path, meta.len()));
                    }
                }
            }
            for (index, _) in files {
                let entry = &job.entries[index];
                let target = dest.join(&entry.path);
                let mut candidates = temps_by_entry.remove(&index).unwrap_or_default();
                if !entry.done {
                    match std::fs::symlink_metadata(&target) {
                        Ok(meta) if meta.is_file() && !matches_manifest(&meta, entry) => {
                            candidates.push((target.clone(), meta.len()));
                        }
                        Ok(_) => {}
                        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
                        Err(e) => return Err(fs_error("inspect", &target, &e)),
                    }
                }
                let worth_keeping = |len: u64| {
                    !entry.done
                        && entry.size >= RESUME_PARTIAL_MIN_BYTES
                        && len > 0
                        && len < entry.size
                };
                let keep = candidates
                    .iter()
                    .filter(|(_, len)| worth_keeping(*len))
                    .max_by_key(|(_, len)| *len)
                    .cloned();
                for (path, _) in &candidates {
                    if keep.as_ref().is_none_or(|(kept, _)| kept != path) {
                        remove(path)?;
                        cleanup.removed.push(path.clone());
                    }
                }
                if let Some((path, len)) = keep {
                    if path != target {
                        std::fs::rename(&path, &target)
                            .map_err(|e| fs_error("rename", &path, &e))?;
                    }
                    cleanup.kept.push((index, len));
                }
            }
        }
    }
    cleanup.removed.sort();
    cleanup.kept.sort_unstable();
    Ok(cleanup)
}

/// Whether `candidate` is an rsync temp file for `name`: `.` + name + `.` + six alphanumerics.
fn is_temp_of(candidate: &str, name: &str) -> bool {
    let Some(rest) = candidate.strip_prefix('.') else {
        return false;
    };
    let Some(suffix) = rest.strip_prefix(name) else {
        return false;
    };
    let Some(random) = suffix.strip_prefix('.') else {
        return false;
    };
    random.len() == 6 && random.bytes().all(|b| b.is_ascii_alphanumeric())
}

fn matches_manifest(meta: &std::fs::Metadata, entry: &ManifestEntry) -> bool {
    meta.len() == entry.size && meta.mtime() == entry.mtime
}

fn remove(path: &Path) -> Result<()> {
    std::fs::remove_file(path).map_err(|e| fs_error("remove", path, &e))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_rsync_temp_names() {
        assert!(is_temp_of(".16384.aB3xY9", "16384"));
        assert!(is_temp_of(".odd name.abcdef", "odd name"));
        assert!(!is_temp_of(".16384.aB3xY", "16384"));
        assert!(!is_temp_of(".16384.aB3x-9", "16384"));
        assert!(!is_temp_of("16384.aB3xY9", "16384"));
        assert!(!is_temp_of(".16384_1.aB3xY9", "16384"));
    }
}
