//! Whether a backup can be restored by a plain rsync of its directory, and its facts when it
//! can: tar-format, encrypted, incremental and snapshot backups are refused with the remedy
//! (restore on the Barman host), a catalogue that lacks a field or a directory is reported as
//! broken. Also where a backup's trees lie on the Barman host ([`data_dir`],
//! [`tablespace_dir`]).
//!
//! Must not: run anything on the Barman host; it decides from what the client read.

use states::BackupFacts;

use super::probe::Probe;
use super::{Barman, ServerDirs, ShowBackup};
use crate::error::{Error, ErrorKind};

/// The data directory of a backup on the Barman host.
pub fn data_dir(facts: &BackupFacts) -> String {
    format!("{}/{}", facts.backup_dir, facts.data_subdir)
}

/// The directory of tablespace `oid` of a backup on the Barman host: `<backup_dir>/<oid>`, or
/// inside PGDATA (`pgdata/pg_tblspc/<oid>`) in the legacy layout, as Barman's
/// `get_data_directory` has it.
pub fn tablespace_dir(facts: &BackupFacts, oid: u32) -> String {
    if facts.data_subdir == "pgdata" {
        format!("{}/pgdata/pg_tblspc/{oid}", facts.backup_dir)
    } else {
        format!("{}/{oid}", facts.backup_dir)
    }
}

/// Why a backup cannot be restored with rsync (turned into an error with the client's hints).
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Refusal {
    /// Not restorable as a plain copy: the message and the hint's first words.
    Unrestorable {
        message: String,
        remedy: &'static str,
    },
    /// The catalogue looks wrong: a missing field or directory.
    Broken(String),
}

impl Refusal {
    /// The error the operator sees, with the client's commands in the hint.
    pub(super) fn into_error(self, barman: &Barman) -> Error {
        match self {
            Refusal::Unrestorable { message, remedy } => Error::new(ErrorKind::Barman, message)
                .hint(format!(
                    "{remedy}; or choose a plain full backup with --backup-id, listed by: {}",
                    barman.manual_command(&["list-backups", &barman.server])
                )),
            Refusal::Broken(message) => Error::new(ErrorKind::Barman, message).hint(format!(
                "check the backup with: {}",
                barman.manual_command(&["check-backup", &barman.server, "<backup-id>"])
            )),
        }
    }
}

/// Restore on the Barman host, then configure replication only: the remedy for every backup
/// rsync cannot copy.
const RESTORE_ON_BARMAN: &str = "restore it on the Barman host with \"barman restore\" (or through pg-backup-api), then run \"pgreplica clone start --replication-conf-only\"";

/// Decides whether the backup can be restored with rsync, and collects its facts: backup.info
/// first, `show-backup` where backup.info lacks a field.
pub(super) fn facts_from(
    server: &str,
    dirs: &ServerDirs,
    shown: &ShowBackup,
    probe: &Probe,
) -> Result<BackupFacts, Refusal> {
    let id = &shown.backup_id;
    let info = probe.info.clone().unwrap_or_default();
    let what = format!("backup {id} of Barman server \"{server}\"");
    let compression = info
        .get("compression")
        .map(str::to_string)
        .or_else(|| shown.compression.clone());
    if compression.is_some() || probe.tar {
        return Err(Refusal::Unrestorable {
            message: format!(
                "{what} is a tar-format backup (compression {}) and cannot be copied with rsync",
                compression.as_deref().unwrap_or("none")
            ),
            remedy: RESTORE_ON_BARMAN,
        });
    }
    if info.get("encryption").is_some() || shown.encryption.is_some() || probe.gpg {
        return Err(Refusal::Unrestorable {
            message: format!("{what} is encrypted and cannot be copied with rsync"),
            remedy: RESTORE_ON_BARMAN,
        });
    }
    if let Some(parent) = info
        .get("parent_backup_id")
        .or((shown.backup_type.as_deref() == Some("incremental")).then_some("?"))
    {
        return Err(Refusal::Unrestorable {
            message: format!("{what} is an incremental backup (parent {parent}) and needs pg_combinebackup over its chain"),
            remedy: RESTORE_ON_BARMAN,
        });
    }
    let mode = info.get("mode").unwrap_or("");
    if mode.starts_with("snapshot") || shown.backup_type.as_deref() == Some("snapshot") {
        return Err(Refusal::Unrestorable {
            message: format!("{what} is a snapshot backup: its data lives in cloud disk snapshots, not on the Barman host"),
            remedy: "restore it with \"barman restore\" onto disks cloned from the snapshots",
        });
    }
    let backup_dir = format!("{}/{id}", dirs.basebackups_directory);
    let wals_directory = dirs.wals_directory.clone();
    let data_subdir = probe
        .data_subdir
        .clone()
        .ok_or_else(|| Refusal::Broken(format!("{what} has no data directory in {backup_dir}")))?;
    let broken = |why: String| Refusal::Broken(format!("backup.info of {what}: {why}"));
    let missing = |key: &str| {
        Refusal::Broken(format!(
            "neither backup.info nor show-backup of {what} gives {key}"
        ))
    };
    let tablespaces = match info.get("tablespaces") {
        Some(_) => info.tablespaces().map_err(broken)?,
        None => shown.tablespaces.clone(),
    };
    Ok(BackupFacts {
        backup_id: id.clone(),
        backup_name: info
            .get("backup_name")
            .map(str::to_string)
            .or_else(|| shown.backup_name.clone()),
        server: server.to_string(),
        pg_version: info
            .number("version")
            .map_err(broken)?
            .or(shown.pg_version)
            .ok_or_else(|| missing("version"))?,
        size_bytes: info
            .number("size")
            .map_err(broken)?
            .or(shown.size_bytes)
            .ok_or_else(|| missing("size"))?,
        timeline: info
            .number("timeline")
            .map_err(broken)?
            .or(shown.timeline)
            .ok_or_else(|| missing("timeline"))?,
        begin_wal: info
            .get("begin_wal")
            .map(str::to_string)
            .or_else(|| shown.begin_wal.clone())
            .ok_or_else(|| missing("begin_wal"))?,
        end_wal: info
            .get("end_wal")
            .map(str::to_string)
            .or_else(|| shown.end_wal.clone())
            .ok_or_else(|| missing("end_wal"))?,
        system_id: info
            .get("systemid")
            .map(str::to_string)
            .or_else(|| shown.system_id.clone()),
        tablespaces,
        backup_dir,
        wals_directory,
        data_subdir,
        has_manifest: probe.has_manifest,
        kind: states::BackupKind::Plain,
        cluster_bytes: info.number("cluster_size").map_err(broken)?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barman::catalogue;
    use crate::barman::fixture_client as client;

    macro_rules! fixture {
        ($path:literal) => {
            include_str!(concat!("../../tests/fixtures/barman/", $path))
        };
    }

    fn shown(server: &str, text: &str) -> ShowBackup {
        catalogue::parse_show_backup(server, &serde_json::from_str(text).expect("JSON"))
            .expect("parses")
    }

    fn dirs(home: &str) -> ServerDirs {
        ServerDirs {
            backup_directory: format!("{home}/pg"),
            basebackups_directory: format!("{home}/pg/base"),
            wals_directory: format!("{home}/pg/wals"),
            backup_method: Some("postgres".into()),
            backup_compression: None,
        }
    }

    fn probe(info: &str) -> Probe {
        Probe::parse(&format!("dir data\nmanifest\ninfo\n{info}")).expect("probe output parses")
    }

    #[test]
    fn facts_from_real_340_backup() {
        let shown = shown(
            "pg",
            fixture!("3.4.0/show-backup-20261125T150710.json.stdout"),
        );
        let facts = facts_from(
            "pg",
            &dirs("/tmp/bmcap/bh34"),
            &shown,
            &probe(fixture!("3.4.0/backup.info-20261125T150710")),
        )
        .expect("restorable");
        assert_eq!(
            facts,
            BackupFacts {
                backup_id: "20261125T150710".into(),
                backup_name: None,
                server: "pg".into(),
                pg_version: 150018,
                size_bytes: 23196062,
                timeline: 1,
                begin_wal: "000000010000000000000003".into(),
                end_wal: "000000010000000000000003".into(),
                system_id: Some("7712125799867076052".into()),
                tablespaces: vec![states::Tablespace {
                    name: "tbs1".into(),
                    oid: 16386,
                    location: "/tmp/bmcap/tbs1".into()
                }],
                backup_dir: "/tmp/bmcap/bh34/pg/base/20261125T150710".into(),
                wals_directory: "/tmp/bmcap/bh34/pg/wals".into(),
                data_subdir: "data".into(),
                has_manifest: true,
                kind: states::BackupKind::Plain,
                // Barman 3.4.0 does not record cluster_size.
                cluster_bytes: None,
            }
        );
        assert_eq!(
            data_dir(&facts),
            "/tmp/bmcap/bh34/pg/base/20261125T150710/data"
        );
        assert_eq!(
            tablespace_dir(&facts, 16386),
            "/tmp/bmcap/bh34/pg/base/20261125T150710/16386"
        );
    }

    #[test]
    fn facts_from_real_3191_backup() {
        let shown = shown("pg", fixture!("3.19.1/show-backup-named.json.stdout"));
        let facts = facts_from(
            "pg",
            &dirs("/tmp/bmcap/bh319"),
            &shown,
            &probe(fixture!("3.19.1/20261125T150740-backup.info")),
        )
        .expect("restorable");
        assert_eq!(facts.backup_name.as_deref(), Some("named 319"));
        assert_eq!(facts.size_bytes, 23195442);
        assert_eq!(facts.begin_wal, "000000010000000000000007");
        assert_eq!(facts.tablespaces.len(), 1);
        let latest = shown_latest_3191();
        let facts = facts_from(
            "pg",
            &dirs("/tmp/bmcap/bh319"),
            &latest,
            &probe(fixture!("3.19.1/20261125T150747-backup.info")),
        )
        .expect("restorable");
        assert!(facts.tablespaces.is_empty());
        assert_eq!(facts.end_wal, "00000001000000000000000D");
    }

    fn shown_latest_3191() -> ShowBackup {
        shown("pg", fixture!("3.19.1/show-backup-latest.json.stdout"))
    }

    #[test]
    fn real_tar_backup_is_refused() {
        let shown = shown("pgtar", fixture!("3.19.1/show-backup-pgtar.json.stdout"));
        let probe = Probe::parse(&format!(
            "dir data\nmanifest\ntar\ninfo\n{}",
            fixture!("3.19.1/pgtar-20261125T150741-backup.info")
        ))
        .expect("parses");
        let refusal = facts_from("pgtar", &dirs("/b"), &shown, &probe).expect_err("tar refused");
        let err = refusal.into_error(&client());
        assert_eq!(err.kind, ErrorKind::Barman);
        assert_eq!(err.exit_code(), 19);
        err.assert_says(
            "tar-format backup (compression gzip)",
            "--replication-conf-only",
        );
        err.assert_says("", "list-backups");
    }

    /// Why the latest 3.19.1 backup is refused when its directory holds `found` (the probe's
    /// lines before `info`) and its backup.info reads `info`.
    fn refusal(found: &str, info: &str) -> Refusal {
        let probe = Probe::parse(&format!("{found}info\n{info}")).expect("probe output parses");
        facts_from("pg", &dirs("/b"), &shown_latest_3191(), &probe).expect_err("refused")
    }

    #[test]
    fn encrypted_incremental_snapshot_and_broken_backups_are_refused() {
        let base = fixture!("3.19.1/20261125T150747-backup.info");
        let what = format!(
            "backup {} of Barman server \"pg\"",
            shown_latest_3191().backup_id
        );
        let unrestorable = |refusal: Refusal| match refusal {
            Refusal::Unrestorable { message, remedy } => (message, remedy),
            Refusal::Broken(message) => panic!("not a refusal of the kind: {message}"),
        };
        let broken = |refusal: Refusal| match refusal {
            Refusal::Broken(message) => message,
            Refusal::Unrestorable { message, .. } => panic!("not a broken catalogue: {message}"),
        };

        let (message, remedy) = unrestorable(refusal("dir data\ngpg\n", base));
        assert_eq!(
            message,
            format!("{what} is encrypted and cannot be copied with rsync")
        );
        assert_eq!(remedy, RESTORE_ON_BARMAN);

        let incremental = base.replace("parent_backup_id=None", "parent_backup_id=20261125T150740");
        let (message, remedy) = unrestorable(refusal("dir data\n", &incremental));
        assert_eq!(
            message,
            format!("{what} is an incremental backup (parent 20261125T150740) and needs pg_combinebackup over its chain")
        );
        assert_eq!(remedy, RESTORE_ON_BARMAN);

        let snapshot = base.replace("mode=postgres", "mode=snapshot-gcp");
        let (message, remedy) = unrestorable(refusal("dir data\n", &snapshot));
        assert!(
            message.starts_with(&format!("{what} is a snapshot backup")),
            "{message}"
        );
        assert!(
            remedy.contains("disks cloned from the snapshots"),
            "{remedy}"
        );

        let no_data = refusal("", base);
        assert_eq!(
            broken(no_data),
            format!(
                "{what} has no data directory in /b/pg/base/{}",
                shown_latest_3191().backup_id
            )
        );
        let err = refusal("", base).into_error(&client());
        assert_eq!(err.kind, ErrorKind::Barman);
        err.assert_says("no data directory", "check-backup pg");

        let bad_version = base.replace("version=150018", "version=fifteen");
        let message = broken(refusal("dir data\n", &bad_version));
        assert!(
            message.starts_with(&format!("backup.info of {what}: ")),
            "{message}"
        );
        assert!(message.contains("version=fifteen"), "{message}");
    }
}
