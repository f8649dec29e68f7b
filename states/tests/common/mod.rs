//! What the machine's test files share: a well-formed request of each mode, and a backup of
//! every kind VerifyBackup can record.

use states::*;

/// A well-formed request of `mode`: the backup server its plan asks is named.
pub fn request(mode: Mode) -> CloneRequest {
    CloneRequest {
        mode,
        data_dir: "/srv/standby".into(),
        backup_selector: "latest".into(),
        jobs: 2,
        barman: (mode == Mode::BarmanRsync).then(|| BarmanTarget {
            host: "barman@backup".into(),
            server: "pg".into(),
            config: None,
        }),
        backup_api: (mode == Mode::BackupApi).then(|| ApiTarget {
            host: "backup:7480".into(),
            node_name: "pg".into(),
            remote_ssh_command: "ssh postgres@standby".into(),
            backup_id: "latest".into(),
            ..ApiTarget::default()
        }),
        ..CloneRequest::default()
    }
}

/// A chain member of `format`.
fn member(id: &str, format: BackupFormat) -> ChainMember {
    ChainMember {
        backup_id: id.into(),
        backup_dir: format!("/var/lib/barman/pg/base/{id}"),
        data_subdir: "data".into(),
        format,
        size_bytes: 1 << 20,
        tablespaces: Vec::new(),
    }
}

/// One backup of every kind VerifyBackup can record: plain, tar of each compression (one
/// encrypted), a chain of plain members and a chain with tar members.
pub fn kinds() -> Vec<BackupKind> {
    let tar = |compression, encrypted| BackupFormat::Tar {
        compression,
        encrypted,
    };
    let mut kinds = vec![BackupKind::Plain];
    kinds.extend(Compression::ALL.map(|compression| BackupKind::Tar {
        compression,
        encrypted: compression == Compression::Zstd,
    }));
    kinds.push(BackupKind::Incremental {
        chain: vec![
            member("20261125T000000", BackupFormat::Plain),
            member("20261125T010000", BackupFormat::Plain),
            member("20261125T020000", BackupFormat::Plain),
        ],
    });
    kinds.push(BackupKind::Incremental {
        chain: vec![
            member("20261125T000000", tar(Compression::Gzip, false)),
            member("20261125T010000", BackupFormat::Plain),
            member("20261125T020000", tar(Compression::Lz4, true)),
        ],
    });
    kinds
}
