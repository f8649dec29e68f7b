//! The file list of a backup tree, from one `find -printf` on the Barman host, and the entries a
//! restore must leave out.
//!
//! Why `find -printf '%y\t%s\t%T@\t%P\0'` and not `rsync --list-only` or `barman list-files`:
//! `rsync --list-only` prints mtimes as local-time strings without a zone (the Barman host's
//! zone, unknowable from here) and escapes odd bytes in names, and `barman list-files` prints
//! neither sizes nor mtimes nor empty directories before 3.15. GNU find gives the exact epoch
//! mtime, the size, the type, and the path relative to the tree, NUL-terminated so a name may
//! hold any byte (newlines included) — in one ssh round trip for any number of files.
//!
//! Must not: run anything. It only builds the argument vector and reads its output.

use states::{EntryKind, ManifestEntry, Tablespace};

/// The remote command that lists `dir` (see the module header for why this one).
pub fn find_command(dir: &str) -> Vec<String> {
    [
        "find",
        "-H",
        dir,
        "-mindepth",
        "1",
        "-printf",
        "%y\\t%s\\t%T@\\t%P\\0",
    ]
    .iter()
    .map(|s| s.to_string())
    .collect()
}

/// Files of PGDATA that a restore must not carry, as `barman restore` excludes them (its
/// `/pg_log/*`, `/log/*`, `/pg_xlog/*`, `/pg_wal/*`, `/postmaster.pid`, `/recovery.conf`,
/// `/tablespace_map`), plus three that pgreplica writes itself or that describe the backed-up
/// server's run (`postmaster.opts`, `recovery.signal`, `standby.signal`). The directories named
/// `…/*` are kept, empty: PostgreSQL needs `pg_wal` to exist, and the log directory keeps its
/// place for `logging_collector`. `backup_label` and `backup_manifest` are kept: the standby
/// needs the first to start from the backup's checkpoint, VerifyCopy the second.
const EXCLUDED_FILES: &[&str] = &[
    "postmaster.pid",
    "postmaster.opts",
    "recovery.conf",
    "recovery.signal",
    "standby.signal",
    "tablespace_map",
];

/// Directories of PGDATA whose contents are left out (the directory itself is kept).
const EMPTIED_DIRS: &[&str] = &["pg_wal", "pg_xlog", "log", "pg_log"];

/// Whether a path of the data directory (root 0) is left out of the restore.
///
/// `pg_tblspc/<oid>` of each backed-up tablespace is left out too (Barman's
/// `exclude_and_protect`): in the backup it is a link to Barman's own copy of the tablespace,
/// and the restore points it at the tablespace's new location instead.
pub fn excluded_from_data(path: &str, tablespaces: &[Tablespace]) -> bool {
    if EXCLUDED_FILES.contains(&path) {
        return true;
    }
    if let Some((top, _)) = path.split_once('/') {
        if EMPTIED_DIRS.contains(&top) {
            return true;
        }
    }
    if let Some(rest) = path.strip_prefix("pg_tblspc/") {
        let oid = rest.split('/').next().unwrap_or(rest);
        return tablespaces.iter().any(|t| t.oid.to_string() == oid);
    }
    false
}

/// Reads the NUL-separated `find -printf` output of one tree into manifest entries of `root`.
///
/// Sockets, FIFOs and devices are skipped, as `barman restore`'s `rsync -rLKpts` (no `-D`)
/// skips them. A data directory (`data_dir` names the backup's tablespaces) gets the
/// data-directory exclusions; any other tree (a tablespace, the tar files of a tar backup) is
/// taken whole. A name that is not UTF-8 is an error: the manifest stores names as text.
pub fn parse_find_output(
    output: &[u8],
    root: u32,
    data_dir: Option<&[Tablespace]>,
) -> Result<Vec<ManifestEntry>, String> {
    let mut entries = Vec::new();
    for record in output.split(|b| *b == 0) {
        if record.is_empty() {
            continue;
        }
        let mut fields = record.splitn(4, |b| *b == b'\t');
        let (Some(kind), Some(size), Some(mtime), Some(path)) =
            (fields.next(), fields.next(), fields.next(), fields.next())
        else {
            return Err(format!(
                "malformed find record {:?}",
                String::from_utf8_lossy(record)
            ));
        };
        let kind = match kind {
            b"f" => EntryKind::File,
            b"d" => EntryKind::Dir,
            b"l" => EntryKind::Symlink,
            _ => continue,
        };
        let path = std::str::from_utf8(path).map_err(|_| {
            format!(
                "file name {:?} is not valid UTF-8",
                String::from_utf8_lossy(path)
            )
        })?;
        let text = |b: &[u8]| String::from_utf8_lossy(b).into_owned();
        let size: u64 = text(size)
            .parse()
            .map_err(|_| format!("bad size {:?} for {path:?}", text(size)))?;
        let mtime = parse_epoch(&text(mtime))
            .ok_or_else(|| format!("bad mtime {:?} for {path:?}", text(mtime)))?;
        if data_dir.is_some_and(|tablespaces| excluded_from_data(path, tablespaces)) {
            continue;
        }
        entries.push(ManifestEntry {
            root,
            path: path.to_string(),
            kind,
            size: if kind == EntryKind::Dir { 0 } else { size },
            mtime,
            done: false,
        });
    }
    Ok(entries)
}

/// `%T@` (`1795619230.3129047970`) as whole seconds, rounded down like `st_mtime`.
fn parse_epoch(s: &str) -> Option<i64> {
    let (secs, frac) = s.split_once('.').unwrap_or((s, ""));
    let secs: i64 = secs.parse().ok()?;
    if !frac.chars().all(|c| c.is_ascii_digit()) {
        return None;
    }
    let has_fraction = frac.bytes().any(|b| b != b'0');
    Some(if secs < 0 && has_fraction {
        secs - 1
    } else {
        secs
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const DATA_340: &[u8] =
        include_bytes!("../../tests/fixtures/barman/3.4.0/find-20261125T150710-data.bin");
    const TBS_340: &[u8] =
        include_bytes!("../../tests/fixtures/barman/3.4.0/find-20261125T150710-16386.bin");
    const TBS_3191: &[u8] =
        include_bytes!("../../tests/fixtures/barman/3.19.1/find-20261125T150740-16386.bin");
    const DATA_3191: &[u8] =
        include_bytes!("../../tests/fixtures/barman/3.19.1/find-20261125T150740-data.bin");
    const TAR_3191: &[u8] =
        include_bytes!("../../tests/fixtures/barman/3.19.1/find-pgtar-20261125T150741-data.bin");

    fn tbs() -> Vec<Tablespace> {
        vec![Tablespace {
            name: "tbs1".into(),
            oid: 16386,
            location: "/tmp/bmcap/tbs1".into(),
        }]
    }

    fn find<'a>(entries: &'a [ManifestEntry], path: &str) -> Option<&'a ManifestEntry> {
        entries.iter().find(|e| e.path == path)
    }

    #[test]
    fn real_data_listings_of_both_versions() {
        for (raw, started) in [(DATA_340, 1795619230), (DATA_3191, 1795619260)] {
            let entries = parse_find_output(raw, 0, Some(&tbs())).expect("parses");
            let label = find(&entries, "backup_label").expect("backup_label kept");
            assert_eq!(label.kind, EntryKind::File);
            assert_eq!(label.size, 225);
            assert_eq!(label.mtime, started);
            assert!(find(&entries, "backup_manifest").is_some());
            assert_eq!(
                find(&entries, "global/pg_control").map(|e| e.size),
                Some(8192)
            );
            let wal = find(&entries, "pg_wal").expect("pg_wal kept");
            assert_eq!((wal.kind, wal.size), (EntryKind::Dir, 0));
            assert!(
                find(&entries, "pg_wal/archive_status").is_none(),
                "pg_wal contents left out"
            );
            assert!(find(&entries, "pg_tblspc").is_some());
            assert!(
                find(&entries, "pg_tblspc/16386").is_none(),
                "Barman's tablespace link left out"
            );
            assert!(entries.iter().all(|e| e.root == 0 && !e.done));
            assert!(entries.len() > 900, "{} entries", entries.len());
        }
    }

    #[test]
    fn real_3191_listing_adds_up_to_backup_info_size() {
        let files_bytes = |raw, root| -> u64 {
            parse_find_output(raw, root, (root == 0).then_some(&tbs()[..]))
                .expect("parses")
                .iter()
                .map(|e| e.size)
                .sum()
        };
        // backup.info of this backup says size=23195442: data directory plus tablespace.
        assert_eq!(
            files_bytes(DATA_3191, 0) + files_bytes(TBS_3191, 16386),
            23_195_442
        );
    }

    #[test]
    fn real_tablespace_listing_is_taken_whole() {
        let entries = parse_find_output(TBS_340, 16386, None).expect("parses");
        assert!(entries.iter().all(|e| e.root == 16386));
        let dir = find(&entries, "PG_15_202209061").expect("version dir");
        assert_eq!(dir.kind, EntryKind::Dir);
        assert_eq!(
            find(&entries, "PG_15_202209061/5/16387").map(|e| e.size),
            Some(40960)
        );
    }

    #[test]
    fn real_tar_listing_shows_tarballs() {
        let entries = parse_find_output(TAR_3191, 0, None).expect("parses");
        assert!(find(&entries, "base.tar.gz").is_some());
    }

    #[test]
    fn odd_names_and_exclusions() {
        let raw = b"f\t5\t10.5\tsub/new\nline\0\
            f\t1\t-1.5\tpostmaster.pid\0\
            f\t1\t-1.0\tpostmaster.opts.keep\0\
            d\t4096\t1\tpg_xlog\0\
            f\t9\t1\tpg_xlog/000000010000000000000001\0\
            f\t9\t1\tlog/postgresql.log\0\
            f\t9\t1\tlogs/kept.log\0\
            l\t9\t1\tpg_tblspc/99999\0\
            s\t0\t1\tsocket\0\
            f\t0\t7\ta\ttab\0";
        let entries = parse_find_output(raw, 0, Some(&tbs())).expect("parses");
        let paths: Vec<&str> = entries.iter().map(|e| e.path.as_str()).collect();
        assert_eq!(
            paths,
            [
                "sub/new\nline",
                "postmaster.opts.keep",
                "pg_xlog",
                "logs/kept.log",
                "pg_tblspc/99999",
                "a\ttab"
            ]
        );
        assert_eq!(entries[0].mtime, 10);
        assert_eq!(entries[1].mtime, -1);
        assert_eq!(entries[4].kind, EntryKind::Symlink);
        assert!(parse_find_output(b"f\t1\tnow\tx\0", 0, Some(&[])).is_err());
        assert!(parse_find_output(b"f\t1\0", 0, Some(&[])).is_err());
        assert!(parse_find_output(b"f\t1\t1\t\xff\0", 0, Some(&[])).is_err());
        let in_tbs = parse_find_output(b"f\t1\t1\tpostmaster.pid\0", 7, None).expect("parses");
        assert_eq!(in_tbs.len(), 1, "exclusions apply to a data directory only");
    }

    #[test]
    fn epoch_rounds_down() {
        assert_eq!(parse_epoch("1795619230.9999999999"), Some(1795619230));
        assert_eq!(parse_epoch("12"), Some(12));
        assert_eq!(parse_epoch("-2.5"), Some(-3));
        assert_eq!(parse_epoch("1.x"), None);
    }
}
