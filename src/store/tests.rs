//! Unit tests of the store's internals: where the state lives, raw values in sled, panics.

use super::*;
use states::{CloneRequest, Mode};

fn record(id: &CloneId) -> CloneRecord {
    let request = CloneRequest {
        mode: Mode::BarmanRsync,
        data_dir: "/srv/pg/main".to_string(),
        ..CloneRequest::default()
    };
    CloneRecord::new(id.clone(), request, 1_700_000_000_000)
}

fn fixture() -> (tempfile::TempDir, StateDir, CloneId) {
    let tmp = tempfile::tempdir().expect("temporary directory");
    let state = StateDir::open(&tmp.path().join("state")).expect("state directory opens");
    (tmp, state, CloneId::for_data_dir("/srv/pg/main"))
}

#[test]
fn state_dir_follows_flag_then_xdg_then_home() {
    let flag = Path::new("/etc/pgr");
    let xdg = || Some(OsString::from("/x/state"));
    let home = || Some(OsString::from("/home/pg"));
    assert_eq!(resolve_from(Some(flag), xdg(), home()).unwrap(), flag);
    assert_eq!(
        resolve_from(None, xdg(), home()).unwrap(),
        Path::new("/x/state/pgreplica")
    );
    assert_eq!(
        resolve_from(None, Some(OsString::from("relative")), home()).unwrap(),
        Path::new("/home/pg/.local/state/pgreplica")
    );
    let err = resolve_from(None, None, None).unwrap_err();
    assert_eq!(err.kind, ErrorKind::Config);
    assert!(err.hint.is_some());
}

#[test]
fn state_dir_is_private() {
    use std::os::unix::fs::PermissionsExt;
    let (tmp, _state, _) = fixture();
    let mode = std::fs::metadata(tmp.path().join("state"))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o700);
}

#[test]
fn newer_schema_record_is_refused_with_both_versions() {
    let (_tmp, state, id) = fixture();
    let store = state.open_clone(&id).unwrap();
    let mut bytes = codec::encode(&record(&id));
    bytes[4..6].copy_from_slice(&(SCHEMA_VERSION + 4).to_le_bytes());
    store.db.insert(RECORD_KEY, bytes).unwrap();
    let err = store.load().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Store);
    let expected = format!(
        "written by a newer pgreplica (schema {}; this pgreplica reads up to {SCHEMA_VERSION})",
        SCHEMA_VERSION + 4
    );
    assert!(err.message.contains(&expected), "{}", err.message);
    assert!(err.message.contains(id.as_str()), "{}", err.message);
    assert!(err.hint.unwrap().contains("upgrade"));
}

#[test]
fn truncated_and_garbage_records_are_unreadable() {
    let (_tmp, state, id) = fixture();
    let store = state.open_clone(&id).unwrap();
    let good = codec::encode(&record(&id));
    for bytes in [good[..good.len() / 2].to_vec(), vec![0x5a; 300], Vec::new()] {
        store.db.insert(RECORD_KEY, bytes).unwrap();
        let err = store.load().unwrap_err();
        assert_eq!(err.kind, ErrorKind::Store);
        let expected = format!("clone record of {id} in {}", store.db_path().display());
        assert!(err.message.starts_with(&expected), "{}", err.message);
        assert!(err.message.contains("is unreadable: "), "{}", err.message);
        assert!(err.hint.unwrap().contains("data directory is untouched"));
    }
}

#[test]
fn damaged_file_list_entry_is_unreadable() {
    let (_tmp, state, id) = fixture();
    let store = state.open_clone(&id).unwrap();
    store
        .files
        .insert(b"\0\0\0\0base/1", b"junk".to_vec())
        .unwrap();
    let err = store.files().entries().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Store);
    assert!(
        err.message.starts_with(&format!("file list of {id}")),
        "{}",
        err.message
    );
    let err = store.files().mark_done(0, "base/1").unwrap_err();
    assert_eq!(err.kind, ErrorKind::Store);
}

#[test]
fn a_panic_inside_the_guard_is_an_error_and_the_guard_resets() {
    let caught = guarded(|| -> u32 { panic!("page 7 is torn") });
    assert_eq!(caught, Err("sled failed on it: page 7 is torn".to_string()));
    assert!(!GUARDED.with(Cell::get));
    assert_eq!(guarded(|| 3), Ok(3));
}

#[test]
fn a_file_list_without_a_summary_is_counted_and_gets_one_at_the_next_mark() {
    let (_tmp, state, id) = fixture();
    let store = state.open_clone(&id).unwrap();
    let entry = |i: u64, kind| states::ManifestEntry {
        root: 0,
        path: format!("base/1/{i}"),
        kind,
        size: if kind == states::EntryKind::File {
            100 * i
        } else {
            0
        },
        mtime: 1_700_000_000,
        done: false,
    };
    let list = vec![
        entry(1, states::EntryKind::File),
        entry(2, states::EntryKind::File),
        entry(3, states::EntryKind::Dir),
    ];
    let files = store.files();
    files.replace(&list).unwrap();
    assert!(files.mark_done(0, "base/1/1").unwrap());
    files.flush().unwrap();
    // As a pgreplica that kept no summary left it.
    store.files.remove(files::SUMMARY_KEY).unwrap();
    drop(files);
    drop(store);
    let store = state.open_clone(&id).unwrap();
    let files = store.files();
    let counted = FileCounts {
        files_done: 1,
        bytes_done: 100,
        files_total: 2,
        bytes_total: 300,
    };
    assert_eq!(files.counts().unwrap(), counted);
    assert!(files.mark_done(0, "base/1/2").unwrap());
    files.flush().unwrap();
    assert!(store.files.get(files::SUMMARY_KEY).unwrap().is_some());
    assert_eq!(
        files.counts().unwrap(),
        FileCounts {
            files_done: 2,
            bytes_done: 300,
            ..counted
        }
    );
}

#[test]
fn a_summary_that_disagrees_with_the_marker_is_damage() {
    let (_tmp, state, id) = fixture();
    let store = state.open_clone(&id).unwrap();
    store.files().replace(&[]).unwrap();
    let dir = store.dir().to_path_buf();
    drop(store);
    // The marker vouches for more entries than the summary counts, as after a lost list.
    Marker {
        record_generation: 0,
        files: Some(5),
    }
    .write(&dir)
    .unwrap();
    let store = state.open_clone(&id).unwrap();
    let err = store.files().counts().unwrap_err();
    assert_eq!(err.kind, ErrorKind::Store);
    assert!(
        err.message
            .contains("the file list has 0 entries, although 5 were saved"),
        "{}",
        err.message
    );
}

/// sled's snapshot files in a clone's database directory.
fn snapshots(store_dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(store_dir.join("db"))
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .filter(|name| name.starts_with("snap."))
        .collect();
    names.sort();
    names
}

/// A run's `close` leaves sled's snapshot current: the next opener (`clone status` of the
/// idle clone) has no log to replay, so it writes no newer snapshot; a store merely dropped
/// leaves its writes to be replayed, and the next opener writes one.
#[test]
fn close_leaves_the_snapshot_current_for_the_next_opener() {
    let (_tmp, state, id) = fixture();
    let write = |store: &CloneStore| {
        store.save(&record(&id)).unwrap();
        let list: Vec<states::ManifestEntry> = (0..500)
            .map(|i| states::ManifestEntry {
                root: 0,
                path: format!("base/1/{i}"),
                kind: states::EntryKind::File,
                size: 8192,
                mtime: 1_700_000_000,
                done: false,
            })
            .collect();
        store.files().replace(&list).unwrap();
        for entry in &list {
            store.files().mark_done(entry.root, &entry.path).unwrap();
        }
        store.files().flush().unwrap();
        store.save(&record(&id)).unwrap();
    };
    // Dropped: the writes are left in the log, and opening again snapshots them.
    let store = state.open_clone(&id).unwrap();
    let dir = store.dir().to_path_buf();
    write(&store);
    drop(store);
    let before = snapshots(&dir);
    drop(state.open_clone(&id).unwrap());
    let replayed = snapshots(&dir);
    assert_ne!(
        replayed, before,
        "the writes were replayed into a new snapshot"
    );
    // Closed: the snapshot is current, and the next opener finds nothing to replay.
    let store = state.open_clone(&id).unwrap();
    write(&store);
    store.close().unwrap();
    let closed = snapshots(&dir);
    assert_eq!(closed.len(), 1, "{closed:?}");
    assert_ne!(closed, replayed);
    let store = state.open_clone(&id).unwrap();
    assert_eq!(store.load().unwrap(), Some(record(&id)));
    assert_eq!(store.files().counts().unwrap().files_done, 500);
    drop(store);
    assert_eq!(snapshots(&dir), closed, "nothing was left to replay");
}
