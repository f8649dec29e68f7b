//! What kind of backup a selector names and whether pgreplica can restore it, with its facts:
//! plain, tar-format (each compression), GPG-encrypted and incremental backups are classified
//! ([`BackupKind`]), an incremental backup's chain followed to its full backup; snapshot
//! backups are refused with the remedy, and a catalogue that lacks a field, a directory or a
//! chain member is reported as broken. Also where a backup's trees lie on the Barman host
//! ([`data_dir`], [`tablespace_dir`]).
//!
//! Must not: run anything on the Barman host; it decides from what the client read.

use states::{BackupFacts, BackupFormat, BackupKind, ChainMember, Compression};

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
/// pgreplica cannot restore.
const RESTORE_ON_BARMAN: &str = "restore it on the Barman host with \"barman restore\" (or through pg-backup-api), then run \"pgreplica clone start --replication-conf-only\"";

/// How a backup's files lie, from its backup.info (`compression`, `encryption`) and what the
/// probe saw in its directory (`base.tar*`, `*.gpg`). `show-backup` tells compression only
/// from Barman 3.16 and encryption from 3.14, so the catalogue's own files decide.
pub(super) fn format_of(
    what: &str,
    probe: &Probe,
    shown: Option<&ShowBackup>,
) -> Result<BackupFormat, Refusal> {
    let info = probe.info.clone().unwrap_or_default();
    let compression = info
        .get("compression")
        .map(str::to_string)
        .or_else(|| shown.and_then(|s| s.compression.clone()));
    let encryption = info
        .get("encryption")
        .map(str::to_string)
        .or_else(|| shown.and_then(|s| s.encryption.clone()))
        .or_else(|| probe.gpg.then(|| "gpg".to_string()));
    if let Some(method) = encryption.as_deref().filter(|m| *m != "gpg") {
        return Err(Refusal::Unrestorable {
            message: format!(
                "{what} is encrypted with \"{method}\", which pgreplica does not know"
            ),
            remedy: RESTORE_ON_BARMAN,
        });
    }
    if compression.is_none() && !probe.tar {
        if encryption.is_some() {
            return Err(Refusal::Broken(format!(
                "{what} is encrypted but holds no tar files (Barman encrypts only tar backups)"
            )));
        }
        return Ok(BackupFormat::Plain);
    }
    if !probe.tar {
        return Err(Refusal::Broken(format!(
            "{what} is a tar-format backup (compression {}) but its data directory holds no base.tar file",
            compression.as_deref().unwrap_or("none")
        )));
    }
    let label = compression.as_deref().unwrap_or("none");
    let compression = Compression::parse(label).ok_or_else(|| Refusal::Unrestorable {
        message: format!("{what} is a tar-format backup compressed with \"{label}\", which pgreplica cannot unpack"),
        remedy: RESTORE_ON_BARMAN,
    })?;
    Ok(BackupFormat::Tar {
        compression,
        encrypted: encryption.is_some(),
    })
}

/// One member of an incremental chain (a parent of the backup restored), from its probe.
pub(super) fn member_from(
    server: &str,
    dirs: &ServerDirs,
    id: &str,
    probe: &Probe,
) -> Result<ChainMember, Refusal> {
    let what = format!("backup {id} of Barman server \"{server}\" (in the chain)");
    let info = probe.info.clone().unwrap_or_default();
    let status = info.get("status").unwrap_or("unknown");
    if status != "DONE" {
        return Err(Refusal::Broken(format!(
            "{what} has status {status}; every backup of an incremental chain must be DONE"
        )));
    }
    let backup_dir = format!("{}/{id}", dirs.basebackups_directory);
    let broken = |why: String| Refusal::Broken(format!("backup.info of {what}: {why}"));
    Ok(ChainMember {
        backup_id: id.to_string(),
        data_subdir: probe.data_subdir.clone().ok_or_else(|| {
            Refusal::Broken(format!("{what} has no data directory in {backup_dir}"))
        })?,
        backup_dir,
        format: format_of(&what, probe, None)?,
        size_bytes: info.number("size").map_err(broken)?.unwrap_or(0),
        tablespaces: info.tablespaces().map_err(broken)?,
    })
}

/// The parent `probe`'s backup.info names, if the backup is incremental.
pub(super) fn parent_of(probe: &Probe) -> Option<String> {
    probe
        .info
        .as_ref()
        .and_then(|i| i.get("parent_backup_id"))
        .map(str::to_string)
}

/// Decides whether pgreplica can restore the backup, classifies its kind and collects its
/// facts: backup.info first, `show-backup` where backup.info lacks a field. `parents` are the
/// members of its chain (oldest first), read by the client when backup.info names a parent.
pub(super) fn facts_from(
    server: &str,
    dirs: &ServerDirs,
    shown: &ShowBackup,
    probe: &Probe,
    parents: Vec<ChainMember>,
) -> Result<BackupFacts, Refusal> {
    let id = &shown.backup_id;
    let info = probe.info.clone().unwrap_or_default();
    let what = format!("backup {id} of Barman server \"{server}\"");
    let mode = info.get("mode").unwrap_or("");
    if mode.starts_with("snapshot") || shown.backup_type.as_deref() == Some("snapshot") {
        return Err(Refusal::Unrestorable {
            message: format!("{what} is a snapshot backup: its data lives in cloud disk snapshots, not on the Barman host"),
            remedy: "restore it with \"barman restore\" onto disks cloned from the snapshots",
        });
    }
    let format = format_of(&what, probe, Some(shown))?;
    let incremental =
        parent_of(probe).is_some() || shown.backup_type.as_deref() == Some("incremental");
    if incremental && parents.is_empty() {
        return Err(Refusal::Broken(format!(
            "{what} is an incremental backup but the chain to its full backup was not found"
        )));
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
    let facts = BackupFacts {
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
        kind: BackupKind::Plain,
        cluster_bytes: info.number("cluster_size").map_err(broken)?,
    };
    let kind = match (parents.is_empty(), format) {
        (true, BackupFormat::Plain) => BackupKind::Plain,
        (
            true,
            BackupFormat::Tar {
                compression,
                encrypted,
            },
        ) => BackupKind::Tar {
            compression,
            encrypted,
        },
        (false, format) => {
            let mut chain = parents;
            chain.push(ChainMember {
                backup_id: facts.backup_id.clone(),
                backup_dir: facts.backup_dir.clone(),
                data_subdir: facts.data_subdir.clone(),
                format,
                size_bytes: facts.size_bytes,
                tablespaces: facts.tablespaces.clone(),
            });
            BackupKind::Incremental { chain }
        }
    };
    Ok(BackupFacts { kind, ..facts })
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
            Vec::new(),
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
            Vec::new(),
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
            Vec::new(),
        )
        .expect("restorable");
        assert!(facts.tablespaces.is_empty());
        assert_eq!(facts.end_wal, "00000001000000000000000D");
    }

    fn shown_latest_3191() -> ShowBackup {
        shown("pg", fixture!("3.19.1/show-backup-latest.json.stdout"))
    }

    #[test]
    fn real_tar_backup_is_classified_with_its_compression() {
        let shown = shown("pgtar", fixture!("3.19.1/show-backup-pgtar.json.stdout"));
        let probe = Probe::parse(&format!(
            "dir data\nmanifest\ntar\ninfo\n{}",
            fixture!("3.19.1/pgtar-20261125T150741-backup.info")
        ))
        .expect("parses");
        let facts =
            facts_from("pgtar", &dirs("/b"), &shown, &probe, Vec::new()).expect("restorable");
        assert_eq!(
            facts.kind,
            BackupKind::Tar {
                compression: Compression::Gzip,
                encrypted: false
            }
        );
        assert!(facts.has_manifest);
        assert_eq!(facts.data_subdir, "data");
        // size is what the compressed files weigh; cluster_size what the restore will.
        assert_eq!(
            (facts.size_bytes, facts.cluster_bytes),
            (3253512, Some(23207625))
        );
        assert_eq!(facts.restored_bytes(), 23207625);
        assert_eq!(facts.staging_bytes(), 3253512);
    }

    /// The latest 3.19.1 backup's facts (or why it is refused) when its directory holds `found`
    /// (the probe's lines before `info`), its backup.info reads `info` and `parents` is its
    /// chain.
    fn classify(
        found: &str,
        info: &str,
        parents: Vec<ChainMember>,
    ) -> Result<BackupFacts, Refusal> {
        let probe = Probe::parse(&format!("{found}info\n{info}")).expect("probe output parses");
        facts_from("pg", &dirs("/b"), &shown_latest_3191(), &probe, parents)
    }

    fn refusal(found: &str, info: &str) -> Refusal {
        classify(found, info, Vec::new()).expect_err("refused")
    }

    #[test]
    fn encrypted_and_incremental_backups_are_classified() {
        let base = fixture!("3.19.1/20261125T150747-backup.info");
        let encrypted = base.replace("compression=None", "compression=zstd");
        let encrypted = format!("{encrypted}encryption=gpg\n");
        let facts =
            classify("dir data\nmanifest\ntar\ngpg\n", &encrypted, Vec::new()).expect("restorable");
        assert_eq!(
            facts.kind,
            BackupKind::Tar {
                compression: Compression::Zstd,
                encrypted: true
            }
        );
        // An uncompressed tar backup: no compression in backup.info (before Barman wrote
        // `none`), but base.tar in its directory.
        let facts = classify("dir data\ntar\n", base, Vec::new()).expect("restorable");
        assert_eq!(
            facts.kind,
            BackupKind::Tar {
                compression: Compression::None,
                encrypted: false
            }
        );

        let full = ChainMember {
            backup_id: "20261125T150740".into(),
            backup_dir: "/b/pg/base/20261125T150740".into(),
            data_subdir: "data".into(),
            format: BackupFormat::Tar {
                compression: Compression::Lz4,
                encrypted: false,
            },
            size_bytes: 100,
            tablespaces: Vec::new(),
        };
        let incremental = base.replace("parent_backup_id=None", "parent_backup_id=20261125T150740");
        let facts =
            classify("dir data\nmanifest\n", &incremental, vec![full.clone()]).expect("restorable");
        let BackupKind::Incremental { chain } = &facts.kind else {
            panic!("not a chain: {:?}", facts.kind);
        };
        assert_eq!(chain.len(), 2);
        assert_eq!(chain[0], full);
        assert_eq!(chain[1].backup_id, facts.backup_id);
        assert_eq!(chain[1].format, BackupFormat::Plain);
        assert_eq!(chain[1].backup_dir, facts.backup_dir);
    }

    #[test]
    fn chain_members_are_read_from_their_own_backup_info() {
        let info = fixture!("3.19.1/20261125T150740-backup.info");
        let probe = Probe::parse(&format!(
            "dir data\nmanifest\ntar\ninfo\n{}",
            info.replace("compression=None", "compression=gzip")
        ))
        .expect("parses");
        let member = member_from("pg", &dirs("/b"), "20261125T150740", &probe).expect("a member");
        assert_eq!(
            member.format,
            BackupFormat::Tar {
                compression: Compression::Gzip,
                encrypted: false
            }
        );
        assert_eq!(member.backup_dir, "/b/pg/base/20261125T150740");
        assert_eq!(member.tablespaces.len(), 1);
        let failed = Probe::parse(&format!(
            "dir data\ninfo\n{}",
            info.replace("status=DONE", "status=FAILED")
        ))
        .expect("parses");
        let Err(Refusal::Broken(message)) =
            member_from("pg", &dirs("/b"), "20261125T150740", &failed)
        else {
            panic!("a FAILED member must be refused");
        };
        assert_eq!(message, "backup 20261125T150740 of Barman server \"pg\" (in the chain) has status FAILED; every backup of an incremental chain must be DONE");
        assert_eq!(parent_of(&failed), None);
    }

    #[test]
    fn snapshot_unknown_formats_and_broken_backups_are_refused() {
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

        let aes = format!("{base}encryption=aes\n");
        let (message, remedy) = unrestorable(refusal("dir data\ntar\n", &aes));
        assert_eq!(
            message,
            format!("{what} is encrypted with \"aes\", which pgreplica does not know")
        );
        assert_eq!(remedy, RESTORE_ON_BARMAN);
        let bzip = base.replace("compression=None", "compression=bzip2");
        let (message, _) = unrestorable(refusal("dir data\ntar\n", &bzip));
        assert_eq!(
            message,
            format!("{what} is a tar-format backup compressed with \"bzip2\", which pgreplica cannot unpack")
        );
        let err = refusal("dir data\ntar\n", &bzip).into_error(&client());
        assert_eq!((err.kind, err.exit_code()), (ErrorKind::Barman, 19));
        err.assert_says("bzip2", "--replication-conf-only");
        err.assert_says("", "list-backups");

        let gzip_without_tar = base.replace("compression=None", "compression=gzip");
        assert_eq!(
            broken(refusal("dir data\n", &gzip_without_tar)),
            format!("{what} is a tar-format backup (compression gzip) but its data directory holds no base.tar file")
        );
        assert_eq!(
            broken(refusal("dir data\ngpg\n", base)),
            format!(
                "{what} is encrypted but holds no tar files (Barman encrypts only tar backups)"
            )
        );
        let incremental = base.replace("parent_backup_id=None", "parent_backup_id=20261125T150740");
        assert_eq!(
            broken(refusal("dir data\n", &incremental)),
            format!(
                "{what} is an incremental backup but the chain to its full backup was not found"
            )
        );

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
