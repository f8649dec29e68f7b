//! Splitting a backup's manifest into parallel rsync streams, balanced by bytes.
//!
//! Pure planning: this module reads the manifest and returns indices into it. It starts no
//! process and touches no file; [`crate::transfer::rsync`] runs the plan.
//!
//! `global/pg_control` of the data directory is never part of a stream. It is copied on its own
//! after every stream succeeded, so a half-copied data directory has no pg_control and cannot be
//! started by PostgreSQL by mistake.

use states::{EntryKind, ManifestEntry};

/// Path of the control file inside the data directory (root 0), as the manifest spells it.
pub const PG_CONTROL: &str = "global/pg_control";

/// Which manifest entries each rsync stream copies, and the one entry copied after them all.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct StreamPlan {
    /// Indices into the manifest, one list per stream. Empty streams are left out, so there are
    /// at most `jobs` lists and none is empty. Stream 0 holds every directory and symlink.
    pub streams: Vec<Vec<usize>>,
    /// Index of `global/pg_control` (root 0) when it still has to be copied; copied last, after
    /// every stream succeeded.
    pub last: Option<usize>,
}

impl StreamPlan {
    /// Whether nothing is left to copy.
    pub fn is_empty(&self) -> bool {
        self.streams.is_empty() && self.last.is_none()
    }

    /// Bytes of regular files that each stream copies, by the manifest's sizes.
    pub fn stream_bytes(&self, entries: &[ManifestEntry]) -> Vec<u64> {
        self.streams
            .iter()
            .map(|stream| stream.iter().map(|&i| file_bytes(&entries[i])).sum())
            .collect()
    }
}

/// Whether `entry` is the data directory's control file.
pub fn is_pg_control(entry: &ManifestEntry) -> bool {
    entry.root == 0 && entry.path == PG_CONTROL
}

/// Plans up to `jobs` streams (0 counts as 1) over the entries that are not done.
///
/// Regular files are dealt largest first to the stream with the fewest bytes so far (longest
/// processing time first), so no stream carries more than the ideal share plus the largest file.
/// Directories and symlinks go to stream 0, so empty directories are created; rsync creates the
/// parents of the other streams' files itself. Ties are broken by root and path, so the same
/// manifest always gives the same plan.
pub fn plan_streams(entries: &[ManifestEntry], jobs: u32) -> StreamPlan {
    let jobs = jobs.max(1) as usize;
    let mut last = None;
    let mut others = Vec::new();
    let mut files = Vec::new();
    for (i, entry) in entries.iter().enumerate() {
        if entry.done {
            continue;
        }
        if is_pg_control(entry) {
            last = Some(i);
        } else if entry.kind == EntryKind::File {
            files.push(i);
        } else {
            others.push(i);
        }
    }
    files.sort_by(|&a, &b| {
        let (ea, eb) = (&entries[a], &entries[b]);
        eb.size
            .cmp(&ea.size)
            .then(ea.root.cmp(&eb.root))
            .then(ea.path.cmp(&eb.path))
    });
    let mut streams: Vec<Vec<usize>> = vec![Vec::new(); jobs];
    streams[0] = others;
    let mut loads = vec![0u64; jobs];
    for i in files {
        // The first of the least loaded streams, so the deal is deterministic.
        let target = (0..jobs).min_by_key(|&s| (loads[s], s)).unwrap_or(0);
        loads[target] += entries[i].size;
        streams[target].push(i);
    }
    streams.retain(|s| !s.is_empty());
    StreamPlan { streams, last }
}

fn file_bytes(entry: &ManifestEntry) -> u64 {
    if entry.kind == EntryKind::File {
        entry.size
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(path: &str, kind: EntryKind, size: u64, done: bool) -> ManifestEntry {
        ManifestEntry {
            root: 0,
            path: path.to_string(),
            kind,
            size,
            mtime: 1_700_000_000,
            done,
        }
    }

    /// A manifest shaped like a data directory: a few big relation segments, many small files.
    fn manifest() -> Vec<ManifestEntry> {
        let mut entries = vec![
            entry(".", EntryKind::Dir, 0, false),
            entry("base", EntryKind::Dir, 0, false),
            entry("base/1", EntryKind::Dir, 0, false),
            entry("pg_wal", EntryKind::Symlink, 0, false),
            entry(PG_CONTROL, EntryKind::File, 8192, false),
        ];
        for i in 0..7u64 {
            entries.push(entry(
                &format!("base/1/{}", 16000 + i),
                EntryKind::File,
                (i + 1) * 13_000_000,
                false,
            ));
        }
        for i in 0..200u64 {
            entries.push(entry(
                &format!("base/1/{}", 20000 + i),
                EntryKind::File,
                (i * 7919) % 65536,
                false,
            ));
        }
        entries
    }

    #[test]
    fn streams_are_balanced_by_bytes() {
        let entries = manifest();
        for jobs in 1..=6 {
            let plan = plan_streams(&entries, jobs);
            let bytes = plan.stream_bytes(&entries);
            let total: u64 = bytes.iter().sum();
            let largest = entries
                .iter()
                .filter(|e| !is_pg_control(e))
                .map(file_bytes)
                .max()
                .unwrap();
            let ideal = total.div_ceil(jobs as u64);
            let worst = *bytes.iter().max().unwrap();
            assert!(
                worst <= ideal + largest,
                "jobs={jobs}: a stream carries {worst} bytes, ideal {ideal}, largest file {largest}"
            );
            assert_eq!(plan.streams.len(), jobs as usize);
            // Every pending entry but pg_control is in exactly one stream.
            let mut all: Vec<usize> = plan.streams.concat();
            all.sort_unstable();
            let expected: Vec<usize> = (0..entries.len())
                .filter(|&i| !is_pg_control(&entries[i]))
                .collect();
            assert_eq!(all, expected, "jobs={jobs}");
        }
    }

    #[test]
    fn plan_is_deterministic() {
        let entries = manifest();
        let first = plan_streams(&entries, 3);
        for _ in 0..5 {
            assert_eq!(plan_streams(&entries, 3), first);
        }
        let mut reversed = entries.clone();
        reversed.reverse();
        // The same files land together whatever the manifest's order.
        let paths = |plan: &StreamPlan, entries: &[ManifestEntry]| -> Vec<Vec<String>> {
            plan.streams
                .iter()
                .map(|s| {
                    let mut p: Vec<String> = s.iter().map(|&i| entries[i].path.clone()).collect();
                    p.sort();
                    p
                })
                .collect()
        };
        assert_eq!(
            paths(&plan_streams(&reversed, 3), &reversed),
            paths(&first, &entries)
        );
    }

    #[test]
    fn pg_control_is_kept_for_last() {
        let entries = manifest();
        let plan = plan_streams(&entries, 4);
        let pg_control = entries.iter().position(is_pg_control).unwrap();
        assert_eq!(plan.last, Some(pg_control));
        assert!(plan.streams.iter().all(|s| !s.contains(&pg_control)));
        // A tablespace file that happens to have the same relative path is an ordinary file.
        let mut other_root = entry(PG_CONTROL, EntryKind::File, 10, false);
        other_root.root = 16384;
        let plan = plan_streams(&[other_root], 2);
        assert_eq!(plan.streams, vec![vec![0]]);
        assert_eq!(plan.last, None);
    }

    #[test]
    fn done_entries_are_left_out() {
        let mut entries = manifest();
        for (i, e) in entries.iter_mut().enumerate() {
            e.done = i % 3 == 0 || is_pg_control(e);
        }
        let plan = plan_streams(&entries, 3);
        assert_eq!(plan.last, None);
        for &i in plan.streams.iter().flatten() {
            assert!(!entries[i].done, "{} is done but planned", entries[i].path);
        }
        let planned = plan.streams.iter().map(Vec::len).sum::<usize>();
        assert_eq!(planned, entries.iter().filter(|e| !e.done).count());
        for e in entries.iter_mut() {
            e.done = true;
        }
        assert!(plan_streams(&entries, 3).is_empty());
    }

    #[test]
    fn directories_and_symlinks_go_to_the_first_stream() {
        let entries = manifest();
        let plan = plan_streams(&entries, 3);
        for (s, stream) in plan.streams.iter().enumerate() {
            for &i in stream {
                if entries[i].kind != EntryKind::File {
                    assert_eq!(s, 0, "{} is in stream {s}", entries[i].path);
                }
            }
        }
        // More jobs than files: no empty streams.
        let few = vec![
            entry("a", EntryKind::File, 1, false),
            entry("b", EntryKind::File, 2, false),
        ];
        assert_eq!(plan_streams(&few, 8).streams, vec![vec![1], vec![0]]);
    }
}
