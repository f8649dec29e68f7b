//! What kind of Barman backup a clone restores, recorded by VerifyBackup, and what follows from
//! it: which steps the plan runs ([`crate::Mode::plan_for`]), which files are staged and
//! unpacked, how much staging space the clone needs, and the unpack checkpoints.
//!
//! A *plain* backup is a data directory tree that rsync copies as it is (Transfer). Every other
//! kind goes through a staging directory on the standby's host: its files are copied there
//! compressed (StageBackup), tar members are unpacked (UnpackBackup) and an incremental chain is
//! combined with `pg_combinebackup` (CombineChain).

use crate::record::{BackupFacts, CloneRecord, Tablespace};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// How the files of a tar-format backup are compressed (backup.info's `compression`).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum Compression {
    /// `none`: plain `.tar` files.
    None,
    /// `gzip`: `.tar.gz`.
    Gzip,
    /// `lz4`: `.tar.lz4` (LZ4 frame format).
    Lz4,
    /// `zstd`: `.tar.zst`.
    Zstd,
}

impl Compression {
    /// Every compression, for exhaustive tests.
    pub const ALL: [Compression; 4] = [
        Compression::None,
        Compression::Gzip,
        Compression::Lz4,
        Compression::Zstd,
    ];

    /// Reads backup.info's `compression` value (`gzip`, `lz4`, `zstd`, `none`).
    pub fn parse(value: &str) -> Option<Compression> {
        Some(match value {
            "none" => Compression::None,
            "gzip" => Compression::Gzip,
            "lz4" => Compression::Lz4,
            "zstd" => Compression::Zstd,
            _ => return None,
        })
    }

    /// The name Barman uses.
    pub fn label(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
            Compression::Zstd => "zstd",
        }
    }

    /// The suffix after `.tar` of the member files (`base.tar.gz`).
    pub fn suffix(self) -> &'static str {
        match self {
            Compression::None => "",
            Compression::Gzip => ".gz",
            Compression::Lz4 => ".lz4",
            Compression::Zstd => ".zst",
        }
    }
}

/// How one backup's files lie in the catalogue.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub enum BackupFormat {
    /// A data directory tree (`data/`) and one tree per tablespace (`<oid>/`).
    #[default]
    Plain,
    /// `data/base.tar<suffix>` and `data/<oid>.tar<suffix>`, GPG-encrypted (`.gpg` added) when
    /// `encrypted`; `data/backup_manifest` stays clear.
    Tar {
        /// The compression of the tar files.
        compression: Compression,
        /// Encrypted with GPG (Barman 3.14+ `encryption = gpg`): decrypted on the Barman host.
        encrypted: bool,
    },
}

impl BackupFormat {
    /// The file name of archive `name` (`base` or a tablespace OID) in the catalogue's
    /// `data/` directory: `base.tar.gz`, `16400.tar.zst.gpg`, … (`None` for a plain backup).
    pub fn archive_file(self, name: &str) -> Option<String> {
        match self {
            BackupFormat::Plain => None,
            BackupFormat::Tar {
                compression,
                encrypted,
            } => Some(format!(
                "{name}.tar{}{}",
                compression.suffix(),
                if encrypted { ".gpg" } else { "" }
            )),
        }
    }

    /// Whether the format is encrypted.
    pub fn encrypted(self) -> bool {
        matches!(
            self,
            BackupFormat::Tar {
                encrypted: true,
                ..
            }
        )
    }

    /// For messages: `plain`, `tar (gzip)`, `tar (zstd, encrypted)`.
    pub fn label(self) -> String {
        match self {
            BackupFormat::Plain => "plain".to_string(),
            BackupFormat::Tar {
                compression,
                encrypted,
            } => format!(
                "tar ({}{})",
                compression.label(),
                if encrypted { ", encrypted" } else { "" }
            ),
        }
    }
}

/// One backup of what a clone restores: the backup itself, or a member of its incremental
/// chain.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ChainMember {
    /// Concrete Barman backup id.
    pub backup_id: String,
    /// Its directory on the Barman host (`<basebackups_directory>/<id>`).
    pub backup_dir: String,
    /// Sub-directory holding its data inside `backup_dir` (`data`).
    pub data_subdir: String,
    /// How its files lie.
    pub format: BackupFormat,
    /// Bytes of its files on the Barman host (compressed, for tar).
    pub size_bytes: u64,
    /// Its tablespaces.
    pub tablespaces: Vec<Tablespace>,
}

/// The kind of backup VerifyBackup found; decides the plan of a Barman-mode clone.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub enum BackupKind {
    /// A plain full backup: rsync copies its tree into the data directory (Transfer).
    #[default]
    Plain,
    /// A tar-format full backup: staged, then unpacked into the data directory.
    Tar {
        /// Its compression.
        compression: Compression,
        /// GPG-encrypted (decrypted on the Barman host while staging).
        encrypted: bool,
    },
    /// A block-level incremental backup (PostgreSQL 17+): the chain from its full backup,
    /// oldest first, the backup itself last, each member plain or tar. Staged, tar members
    /// unpacked, then combined with `pg_combinebackup`.
    Incremental {
        /// The members, oldest (the full backup) first.
        chain: Vec<ChainMember>,
    },
}

impl BackupKind {
    /// Whether the backup goes through a staging directory (every kind but plain).
    pub fn is_staged(&self) -> bool {
        !matches!(self, BackupKind::Plain)
    }

    /// Whether some member must be unpacked from tar files.
    pub fn has_tar(&self) -> bool {
        match self {
            BackupKind::Plain => false,
            BackupKind::Tar { .. } => true,
            BackupKind::Incremental { chain } => chain
                .iter()
                .any(|m| matches!(m.format, BackupFormat::Tar { .. })),
        }
    }

    /// Whether the members are combined with `pg_combinebackup`.
    pub fn is_chain(&self) -> bool {
        matches!(self, BackupKind::Incremental { .. })
    }

    /// Whether some file is encrypted.
    pub fn is_encrypted(&self) -> bool {
        match self {
            BackupKind::Plain => false,
            BackupKind::Tar { encrypted, .. } => *encrypted,
            BackupKind::Incremental { chain } => chain.iter().any(|m| m.format.encrypted()),
        }
    }

    /// For messages and status: `plain`, `tar (lz4)`, `incremental chain of 3`, …
    pub fn label(&self) -> String {
        match self {
            BackupKind::Plain => "plain".to_string(),
            BackupKind::Tar {
                compression,
                encrypted,
            } => BackupFormat::Tar {
                compression: *compression,
                encrypted: *encrypted,
            }
            .label(),
            BackupKind::Incremental { chain } => {
                format!("incremental chain of {} backups", chain.len())
            }
        }
    }
}

/// Where the standby of an encrypted backup can get the WAL it needs beyond what it streams.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum WalSource {
    /// Nothing to say: the backup is not encrypted, or `restore_command` is barman-wal-restore
    /// (`barman get-wal` decrypts on the Barman host).
    Fine,
    /// No `restore_command`: the standby can only stream from its upstream, since Barman's
    /// WAL archive is encrypted (a warning).
    StreamingOnly,
    /// A `restore_command` that is not barman-wal-restore would read encrypted WAL files it
    /// cannot use (a refusal): the program it runs.
    Unusable(String),
}

impl BackupKind {
    /// Judges `restore_command` for a backup of this kind: Barman encrypts the WAL archive of
    /// an encrypted server too (the files keep their names), and only `barman get-wal`, which
    /// barman-wal-restore runs on the Barman host, decrypts it.
    pub fn wal_source(&self, restore_command: Option<&str>) -> WalSource {
        if !self.is_encrypted() {
            return WalSource::Fine;
        }
        let Some(command) = restore_command else {
            return WalSource::StreamingOnly;
        };
        let program = command.split_whitespace().next().unwrap_or("");
        match program.rsplit('/').next() {
            Some("barman-wal-restore") => WalSource::Fine,
            _ => WalSource::Unusable(program.to_string()),
        }
    }
}

impl BackupFacts {
    /// The backups whose files a clone of this backup copies, oldest first: the chain of an
    /// incremental backup, else the backup alone.
    pub fn members(&self) -> Vec<ChainMember> {
        match &self.kind {
            BackupKind::Incremental { chain } => chain.clone(),
            BackupKind::Plain => vec![self.as_member(BackupFormat::Plain)],
            BackupKind::Tar {
                compression,
                encrypted,
            } => vec![self.as_member(BackupFormat::Tar {
                compression: *compression,
                encrypted: *encrypted,
            })],
        }
    }

    fn as_member(&self, format: BackupFormat) -> ChainMember {
        ChainMember {
            backup_id: self.backup_id.clone(),
            backup_dir: self.backup_dir.clone(),
            data_subdir: self.data_subdir.clone(),
            format,
            size_bytes: self.size_bytes,
            tablespaces: self.tablespaces.clone(),
        }
    }

    /// Bytes the restored data directory (with its tablespaces) will hold: the cluster's size
    /// when Barman recorded it (tar and incremental backups store less than that), else the
    /// backup's size.
    pub fn restored_bytes(&self) -> u64 {
        self.cluster_bytes.unwrap_or(self.size_bytes)
    }

    /// Bytes the staging directory holds at its fullest, estimated before the first byte is
    /// copied: every member's files as the catalogue stores them, plus, for a chain that is
    /// combined, what its tar members unpack to (the full backup's cluster size for the full
    /// member; an incremental member at the full member's compression ratio). A plain
    /// backup needs none.
    pub fn staging_bytes(&self) -> u64 {
        let staged: u64 = match &self.kind {
            BackupKind::Plain => return 0,
            _ => self.members().iter().map(|m| m.size_bytes).sum(),
        };
        let BackupKind::Incremental { chain } = &self.kind else {
            // A single tar backup unpacks into the data directory, not into staging.
            return staged;
        };
        let Some(full) = chain.first() else {
            return staged;
        };
        let full_unpacked = self.restored_bytes();
        let unpacked: u64 = chain
            .iter()
            .enumerate()
            .filter(|(_, m)| matches!(m.format, BackupFormat::Tar { .. }))
            .map(|(i, m)| match i {
                0 => full_unpacked,
                _ if full.size_bytes == 0 => full_unpacked,
                _ => {
                    let ratio = full_unpacked as f64 / full.size_bytes as f64;
                    (m.size_bytes as f64 * ratio.max(1.0)).ceil() as u64
                }
            })
            .sum();
        staged + unpacked
    }
}

/// How far UnpackBackup got in one archive (a tar file of a member), checkpointed on the
/// record while it runs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct ArchiveProgress {
    /// Bytes of the uncompressed tar stream whose entries are completely written: a resume
    /// starts reading entries here (after decompressing and discarding what precedes it), so a
    /// file that was being written when the run died is written again from its start.
    pub offset: u64,
    /// Entries written before `offset`.
    pub entries: u64,
    /// Every entry is written and the staged archive may be (or was) removed.
    pub done: bool,
}

/// Where a resumed UnpackBackup starts in one archive.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum UnpackStart {
    /// Nothing of it is checkpointed: from the first entry.
    Beginning,
    /// After the entries checkpointed: at this offset of the uncompressed stream.
    Resume(ArchiveProgress),
    /// It is completely unpacked: skip it (and remove what is left of it in staging).
    Done,
}

/// The staged pipeline's progress inside its steps, as the record keeps it.
#[derive(Clone, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct StagedProgress {
    /// Per archive (`<backup id>/<file name>`), how far unpacking got.
    pub(crate) archives: BTreeMap<String, ArchiveProgress>,
    /// `pg_combinebackup` finished: its output is complete, and only the clean-up of the
    /// staging directory may remain.
    pub(crate) combined: bool,
}

fn archive_key(backup_id: &str, file: &str) -> String {
    format!("{backup_id}/{file}")
}

impl CloneRecord {
    /// Where UnpackBackup starts in archive `file` of backup `backup_id`.
    pub fn unpack_start(&self, backup_id: &str, file: &str) -> UnpackStart {
        match self.staged.archives.get(&archive_key(backup_id, file)) {
            None => UnpackStart::Beginning,
            Some(p) if p.done => UnpackStart::Done,
            Some(p) => UnpackStart::Resume(*p),
        }
    }

    /// Input: the entries of archive `file` before `progress.offset` are written (and synced).
    /// Progress never goes backwards: an older report is ignored.
    pub fn archive_unpacked(&mut self, backup_id: &str, file: &str, progress: ArchiveProgress) {
        let slot = self
            .staged
            .archives
            .entry(archive_key(backup_id, file))
            .or_default();
        if slot.done || progress.offset < slot.offset {
            return;
        }
        *slot = ArchiveProgress {
            done: progress.done,
            ..progress
        };
    }

    /// Whether CombineChain's `pg_combinebackup` already finished.
    pub fn chain_combined(&self) -> bool {
        self.staged.combined
    }

    /// Input: `pg_combinebackup` exited successfully; a re-run of CombineChain only tidies.
    pub fn chain_combined_now(&mut self) {
        self.staged.combined = true;
    }
}
