//! A synthetic clone for timing `clone status` at scale (issue 13): a state directory holding
//! one clone whose file list has N entries, every file marked done, written through
//! `pgreplica::store` the way a Barman transfer writes it (the list in one batch, then the
//! marks flushed in groups as the runner flushes them every second, the record saved at each
//! step). Usage, as the user that will run `clone status`:
//!
//! `synthetic_status_store STATE_DIR [FILES] [--as-before]` (default 100 000 files), then
//! `pgreplica --state-dir STATE_DIR clone status --json /srv/synthetic/main`. The store is
//! closed as a run closes it (`CloneStore::close`, sled's snapshot made current);
//! `--as-before` drops it instead, as runs did before that, leaving the log to replay.

use pgreplica::store::StateDir;
use states::{CloneId, CloneRecord, CloneRequest, EntryKind, ManifestEntry, Mode};
use std::path::PathBuf;

/// Marks flushed together: about a second's worth of small files.
const MARKS_PER_FLUSH: usize = 5_000;

fn main() {
    let mut args = std::env::args().skip(1);
    let state = PathBuf::from(
        args.next()
            .expect("usage: synthetic_status_store STATE_DIR [FILES]"),
    );
    let files: usize = args
        .next()
        .map_or(100_000, |n| n.parse().expect("FILES is a number"));
    let as_before = args.next().as_deref() == Some("--as-before");
    let request = CloneRequest {
        mode: Mode::BarmanRsync,
        data_dir: "/srv/synthetic/main".to_string(),
        ..CloneRequest::default()
    };
    let id = CloneId::for_data_dir(&request.data_dir);
    let state = StateDir::open(&state).expect("state directory");
    let store = state.open_clone(&id).expect("clone store");
    let record = CloneRecord::new(id, request, 1_795_000_000_000);
    for _ in 0..4 {
        store.save(&record).expect("record saved");
    }
    // 1 000 files per directory, as PostgreSQL's own directories hold thousands.
    let list: Vec<ManifestEntry> = (0..files)
        .map(|i| ManifestEntry {
            root: 0,
            path: format!("pgreplica_bench_files/{:03}/{i:06}", i / 1000),
            kind: EntryKind::File,
            size: 0,
            mtime: 1_795_000_000,
            done: false,
        })
        .collect();
    let table = store.files();
    table.replace(&list).expect("file list stored");
    for chunk in list.chunks(MARKS_PER_FLUSH) {
        for entry in chunk {
            table.mark_done(entry.root, &entry.path).expect("marked");
        }
        table.flush().expect("marks flushed");
        store.save(&record).expect("record saved");
    }
    let counts = table.counts().expect("counts");
    println!(
        "{} files, {} done, in {}",
        counts.files_total,
        counts.files_done,
        store.dir().display()
    );
    // The table holds a handle on the database: gone before the store closes, as in a run.
    drop(table);
    if !as_before {
        store.close().expect("store closed");
    }
}
