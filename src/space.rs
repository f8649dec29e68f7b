//! Free disk space: how much a file system has ([`free_bytes`]), and the check a staged clone
//! (tar, incremental, encrypted) makes before its first byte ([`check_staging`]), which
//! StageBackup and `--dry-run` share.
//!
//! Must not: create or remove anything; it only reads the file systems.

use crate::error::{Error, ErrorKind, Result};
use crate::progress::human_bytes;
use states::BackupFacts;
use std::os::unix::fs::MetadataExt;
use std::path::Path;

/// The nearest existing ancestor of `path` (itself if it exists).
fn existing(path: &Path) -> &Path {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
}

/// Bytes available to an unprivileged user on the file system of `path` or its nearest
/// existing ancestor.
pub fn free_bytes(path: &Path) -> Result<u64> {
    let existing = existing(path);
    let c_path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).map_err(|_| {
        Error::new(
            ErrorKind::Config,
            format!("path \"{}\" contains a NUL byte", existing.display()),
        )
    })?;
    // SAFETY: statvfs fills the zeroed struct from a valid NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(crate::durable::io_error(
            "read the free space of",
            existing,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

/// Checks that the staging directory and the data directory have room for `backup`, a staged
/// kind: staging needs [`BackupFacts::staging_bytes`], the data directory
/// [`BackupFacts::restored_bytes`], and on one file system the two add up. `already_staged`
/// bytes (a resumed StageBackup) are not needed again. Returns what it found, for the dry run.
pub fn check_staging(
    backup: &BackupFacts,
    data_dir: &Path,
    staging_dir: &Path,
    already_staged: u64,
) -> Result<String> {
    let staging = backup.staging_bytes().saturating_sub(already_staged);
    let restored = backup.restored_bytes();
    let device = |p: &Path| std::fs::metadata(existing(p)).map(|m| m.dev()).ok();
    let shared = device(data_dir).is_some() && device(data_dir) == device(staging_dir);
    let too_little = |dir: &Path, needed: u64, free: u64, what: String| {
        Error::new(
            ErrorKind::System,
            format!(
                "not enough free disk to stage backup {} in \"{}\": {} needed ({what}), {} free",
                backup.backup_id,
                dir.display(),
                human_bytes(needed),
                human_bytes(free)
            ),
        )
        .hint("free some space, or set pgreplica_staging_dir in repmgr.conf to a directory on a larger file system")
    };
    let staging_free = free_bytes(staging_dir)?;
    if shared {
        let needed = staging + restored;
        if staging_free < needed {
            return Err(too_little(
                staging_dir,
                needed,
                staging_free,
                format!(
                    "{} staged, {} restored, on one file system",
                    human_bytes(staging),
                    human_bytes(restored)
                ),
            ));
        }
        return Ok(format!(
            "\"{}\": {} free, {} needed ({} staged and {} restored on one file system)",
            staging_dir.display(),
            human_bytes(staging_free),
            human_bytes(needed),
            human_bytes(staging),
            human_bytes(restored)
        ));
    }
    if staging_free < staging {
        return Err(too_little(
            staging_dir,
            staging,
            staging_free,
            "staged files".to_string(),
        ));
    }
    let data_free = free_bytes(data_dir)?;
    if data_free < restored {
        return Err(too_little(
            data_dir,
            restored,
            data_free,
            "the restored data directory".to_string(),
        ));
    }
    Ok(format!(
        "\"{}\": {} free, {} needed; the data directory: {} free, {} needed",
        staging_dir.display(),
        human_bytes(staging_free),
        human_bytes(staging),
        human_bytes(data_free),
        human_bytes(restored)
    ))
}

#[cfg(test)]
mod tests {
    use super::*;
    use states::{BackupKind, Compression};

    fn tar_backup(size_bytes: u64, cluster_bytes: u64) -> BackupFacts {
        BackupFacts {
            backup_id: "20261125T061436".into(),
            size_bytes,
            cluster_bytes: Some(cluster_bytes),
            kind: BackupKind::Tar {
                compression: Compression::Gzip,
                encrypted: false,
            },
            ..BackupFacts::default()
        }
    }

    #[test]
    fn staging_and_restore_add_up_on_one_file_system() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let staging = root.path().join("pgreplica-staging-x");
        let found = check_staging(&tar_backup(10, 30), &data, &staging, 0).unwrap();
        assert!(
            found.contains(
                "40 bytes needed (10 bytes staged and 30 bytes restored on one file system)"
            ),
            "{found}"
        );
        let free = free_bytes(root.path()).unwrap();
        let error = check_staging(&tar_backup(free, free), &data, &staging, 0).unwrap_err();
        assert_eq!(error.exit_code(), 13);
        assert!(
            error
                .message
                .starts_with("not enough free disk to stage backup 20261125T061436 in"),
            "{}",
            error.message
        );
        assert!(error.message.contains("staged"), "{}", error.message);
        assert!(error
            .hint
            .as_deref()
            .unwrap_or("")
            .contains("pgreplica_staging_dir"));
        // What a resumed StageBackup already holds is not needed twice.
        check_staging(&tar_backup(free, 1), &data, &staging, free).unwrap();
    }
}
