//! The standby's directories on disk: checks and preparation of the data directory, the WAL
//! directory and the tablespace directories, the skeleton a copy needs afterwards (`pg_*`
//! empty directories, `tablespace_map`), and what a directory holds ([`usage`]). PrepareDirs,
//! the copy engines, VerifyCopy and `--dry-run` all use it.
//!
//! The rules are repmgr's (`dirutil.c`) made safe: a running postmaster is detected before
//! anything is touched, even under `--force`; `--force` keeps existing files for reuse instead
//! of wiping them (the transfer removes what the backup lacks). Every function is idempotent so
//! a step re-run after a crash converges. Plain blocking `std` filesystem calls; no network, no
//! store, no decisions about which step runs next.

use std::ffi::CString;
use std::fs::{self, DirBuilder};
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::fs::{DirBuilderExt, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};

use states::{DirIdentity, PreparedDirs, Tablespace, TablespaceTarget};

use crate::durable::{self, io_error};
use crate::error::{Error, ErrorKind, Result};

/// What a directory looked like before it was prepared.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum DataDirState {
    /// Absent: it will be created (its parents too).
    Missing,
    /// An empty directory.
    Empty,
    /// A directory with files in it, accepted only under `--force`; its files are kept for
    /// reuse.
    NonEmpty,
}

/// The directory mode PostgreSQL requires.
const DIR_MODE: u32 = 0o700;
/// The group-readable mode PostgreSQL accepts from version 11 on.
const GROUP_DIR_MODE: u32 = 0o750;
/// `server_version_num` from which PostgreSQL accepts [`GROUP_DIR_MODE`].
const PG11: u32 = 110_000;
/// `server_version_num` from which the WAL directory is `pg_wal` rather than `pg_xlog`.
const PG10: u32 = 100_000;

/// The WAL directory's name inside the data directory for this server version.
pub fn wal_dir_name(pg_version_num: u32) -> &'static str {
    if pg_version_num >= PG10 {
        "pg_wal"
    } else {
        "pg_xlog"
    }
}

/// Checks the data directory without changing anything (used by `--dry-run` too).
///
/// A running postmaster is looked for first and refused even with `force`; then the
/// directory must be absent (with a creatable parent), empty, or non-empty under `force`.
pub fn check_data_dir(path: &Path, force: bool) -> Result<DataDirState> {
    require_absolute(path, "data directory")?;
    crate::running::check_not_nested(path, "data directory")?;
    check_postmaster(path)?;
    check_dir(path, force)
}

/// Readies the data directory: creates it (0700, with parents) or corrects the permissions
/// of an existing one. Returns what it found, so the caller can record whether existing
/// files were reused.
pub fn prepare_data_dir(path: &Path, pg_version_num: u32, force: bool) -> Result<DataDirState> {
    let state = check_data_dir(path, force)?;
    make_ready(path, state, pg_version_num)?;
    Ok(state)
}

/// Checks a directory that will receive files (a WAL directory, a tablespace location, the
/// data directory after [`check_postmaster`]) without changing anything. A directory inside a
/// running cluster's data directory is refused first, whatever `force` says.
pub fn check_dir(path: &Path, force: bool) -> Result<DataDirState> {
    crate::running::check_not_nested(path, "directory")?;
    let meta = match fs::metadata(path) {
        Ok(meta) => meta,
        // NotADirectory: an ancestor is a file; check_creatable names it.
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            if fs::symlink_metadata(path).is_ok() {
                return Err(Error::new(
                    ErrorKind::System,
                    format!(
                        "\"{}\" is a symbolic link to a missing directory",
                        path.display()
                    ),
                )
                .hint("create the directory it points to, or remove the link"));
            }
            check_creatable(path)?;
            return Ok(DataDirState::Missing);
        }
        Err(e) => return Err(io_error("access", path, e)),
    };
    if !meta.is_dir() {
        return Err(Error::new(
            ErrorKind::System,
            format!("\"{}\" exists but is not a directory", path.display()),
        )
        .hint("remove it or choose another path"));
    }
    // SAFETY: geteuid has no preconditions and cannot fail.
    check_owner(path, meta.uid(), unsafe { libc::geteuid() })?;
    check_writable_fs(path)?;
    let mut entries = fs::read_dir(path).map_err(|e| io_error("read directory", path, e))?;
    if entries.next().is_none() {
        return Ok(DataDirState::Empty);
    }
    if !force {
        return Err(Error::new(
            ErrorKind::System,
            format!("directory \"{}\" exists but is not empty", path.display()),
        )
        .hint(
            "empty it, or run clone start with -F/--force to clone into it anyway: its files \
             are kept and reused, and the transfer removes what the backup lacks",
        ));
    }
    Ok(DataDirState::NonEmpty)
}

pub use crate::running::check_postmaster;

/// Readies the WAL directory `waldir` (absolute; created 0700; empty, or reused under
/// `force`) and makes `<data_dir>/pg_wal` (`pg_xlog` before 10) a symbolic link to it.
///
/// Idempotent: a link already pointing at `waldir` is kept; an empty `pg_wal` directory is
/// replaced by the link; anything else in its place is an error.
pub fn prepare_waldir(
    data_dir: &Path,
    waldir: &Path,
    pg_version_num: u32,
    force: bool,
) -> Result<()> {
    let (state, link) = check_waldir(data_dir, waldir, pg_version_num, force)?;
    make_ready(waldir, state, pg_version_num)?;
    match link {
        WalLink::Correct => return Ok(()),
        WalLink::EmptyDir => {
            let path = data_dir.join(wal_dir_name(pg_version_num));
            fs::remove_dir(&path).map_err(|e| io_error("remove directory", &path, e))?;
        }
        WalLink::Absent => {}
    }
    let path = data_dir.join(wal_dir_name(pg_version_num));
    std::os::unix::fs::symlink(waldir, &path)
        .map_err(|e| io_error("create symbolic link", &path, e))?;
    durable::sync_dir(data_dir)
}

/// What stands at `<data_dir>/pg_wal` before [`prepare_waldir`].
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum WalLink {
    /// Nothing: the link will be created.
    Absent,
    /// An empty directory: it will be replaced by the link.
    EmptyDir,
    /// Already a link to the WAL directory.
    Correct,
}

/// Checks the WAL directory and what stands at `<data_dir>/pg_wal`, changing nothing.
pub fn check_waldir(
    data_dir: &Path,
    waldir: &Path,
    pg_version_num: u32,
    force: bool,
) -> Result<(DataDirState, WalLink)> {
    if !waldir.is_absolute() {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "WAL directory \"{}\" is not an absolute path",
                waldir.display()
            ),
        )
        .hint("give --waldir in pg_basebackup_options as an absolute path"));
    }
    let link_path = data_dir.join(wal_dir_name(pg_version_num));
    if waldir == link_path || waldir == data_dir {
        return Err(Error::new(
            ErrorKind::Config,
            format!(
                "WAL directory \"{}\" must lie outside the data directory's {}",
                waldir.display(),
                wal_dir_name(pg_version_num)
            ),
        )
        .hint("choose another --waldir, or drop it to keep WAL in the data directory"));
    }
    let link = match fs::symlink_metadata(&link_path) {
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            WalLink::Absent
        }
        Err(e) => return Err(io_error("access", &link_path, e)),
        Ok(meta) if meta.file_type().is_symlink() => {
            let target = fs::read_link(&link_path)
                .map_err(|e| io_error("read symbolic link", &link_path, e))?;
            if target != waldir {
                return Err(Error::new(
                    ErrorKind::System,
                    format!(
                        "\"{}\" is a symbolic link to \"{}\", not to the WAL directory \"{}\"",
                        link_path.display(),
                        target.display(),
                        waldir.display()
                    ),
                )
                .hint("remove the link, or set --waldir to its target"));
            }
            WalLink::Correct
        }
        Ok(meta) if meta.is_dir() => {
            let mut entries =
                fs::read_dir(&link_path).map_err(|e| io_error("read directory", &link_path, e))?;
            if entries.next().is_some() {
                return Err(Error::new(
                    ErrorKind::System,
                    format!(
                        "\"{}\" is a non-empty directory, but WAL is to live in \"{}\"",
                        link_path.display(),
                        waldir.display()
                    ),
                )
                .hint(format!(
                    "remove \"{}\" (or move its files to the WAL directory) and run again",
                    link_path.display()
                )));
            }
            WalLink::EmptyDir
        }
        Ok(_) => {
            return Err(Error::new(
                ErrorKind::System,
                format!(
                    "\"{}\" exists and is neither a directory nor a symbolic link",
                    link_path.display()
                ),
            )
            .hint("remove it and run again"))
        }
    };
    Ok((check_dir(waldir, force)?, link))
}

/// Where each tablespace goes: its `tablespace_mapping` target when its location is mapped
/// (trailing slashes ignored), otherwise its original location.
pub fn tablespace_targets(
    tablespaces: &[Tablespace],
    mapping: &[(String, String)],
) -> Vec<TablespaceTarget> {
    let trim = |p: &str| -> String {
        let t = p.trim_end_matches('/');
        if t.is_empty() { p } else { t }.to_string()
    };
    tablespaces
        .iter()
        .map(|ts| {
            let location = trim(&ts.location);
            let path = mapping
                .iter()
                .find(|(old, _)| trim(old) == location)
                .map_or_else(|| ts.location.clone(), |(_, new)| new.clone());
            TablespaceTarget { oid: ts.oid, path }
        })
        .collect()
}

/// Readies one tablespace directory with the data directory's rules: absolute, created
/// 0700, empty or reused under `force`, permissions corrected.
pub fn prepare_tablespace_dir(
    path: &Path,
    pg_version_num: u32,
    force: bool,
) -> Result<DataDirState> {
    require_absolute(path, "tablespace directory")?;
    let state = check_dir(path, force)?;
    make_ready(path, state, pg_version_num)?;
    Ok(state)
}

/// The empty directories PostgreSQL needs and Barman backups leave out (repmgr's list).
const PGDATA_DIRS: [&str; 14] = [
    "pg_commit_ts",
    "pg_dynshmem",
    "pg_logical",
    "pg_logical/snapshots",
    "pg_logical/mappings",
    "pg_replslot",
    "pg_notify",
    "pg_serial",
    "pg_snapshots",
    "pg_stat",
    "pg_stat_tmp",
    "pg_subtrans",
    "pg_tblspc",
    "pg_twophase",
];

/// Creates, 0700, the directories PostgreSQL needs and a backup may lack — `pg_wal`
/// (`pg_xlog` before 10) unless something already stands there (such as the `--waldir` link),
/// and repmgr's list. Existing entries are left alone, so this is idempotent. Returns the
/// directories it created.
pub fn create_empty_pgdata_dirs(data_dir: &Path, pg_version_num: u32) -> Result<Vec<PathBuf>> {
    let mut created = Vec::new();
    for name in std::iter::once(wal_dir_name(pg_version_num)).chain(PGDATA_DIRS) {
        let path = data_dir.join(name);
        match fs::symlink_metadata(&path) {
            Ok(meta) if meta.is_dir() || meta.file_type().is_symlink() => continue,
            Ok(_) => {
                return Err(Error::new(
                    ErrorKind::System,
                    format!("\"{}\" exists but is not a directory", path.display()),
                )
                .hint("remove it and run again"))
            }
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(io_error("access", &path, e)),
        }
        DirBuilder::new()
            .mode(DIR_MODE)
            .create(&path)
            .map_err(|e| io_error("create directory", &path, e))?;
        set_mode(&path, DIR_MODE)?;
        created.push(path);
    }
    for dir in [data_dir.to_path_buf(), data_dir.join("pg_logical")] {
        durable::sync_dir(&dir)?;
    }
    Ok(created)
}

/// Writes `<data_dir>/tablespace_map` (PostgreSQL ≥ 9.5) with one `<oid> <path>` line per
/// target, atomically, so recovery recreates the `pg_tblspc` links at the (mapped) locations.
/// Returns the file, or `None` when there are no tablespaces and nothing was written.
pub fn write_tablespace_map(
    data_dir: &Path,
    targets: &[TablespaceTarget],
) -> Result<Option<PathBuf>> {
    if targets.is_empty() {
        return Ok(None);
    }
    let mut text = String::new();
    for target in targets {
        text.push_str(&target.oid.to_string());
        text.push(' ');
        // PostgreSQL backslash-escapes these when it writes the map and undoes it on reading.
        for c in target.path.chars() {
            if matches!(c, '\\' | '\n' | '\r') {
                text.push('\\');
            }
            text.push(c);
        }
        text.push('\n');
    }
    let path = data_dir.join("tablespace_map");
    durable::write_atomic(&path, text.as_bytes(), 0o600)?;
    Ok(Some(path))
}

/// What `path` names now (through links), by device, inode and birth time; `None` when
/// nothing is there.
pub fn identity(path: &Path) -> Result<Option<DirIdentity>> {
    match fs::metadata(path) {
        Ok(meta) => Ok(Some(DirIdentity {
            path: path.display().to_string(),
            dev: meta.dev(),
            ino: meta.ino(),
            born: birth_time(path),
        })),
        Err(e)
            if matches!(
                e.kind(),
                io::ErrorKind::NotFound | io::ErrorKind::NotADirectory
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(io_error("access", path, e)),
    }
}

/// `statx`'s birth time of `path` in nanoseconds, where the file system records one.
fn birth_time(path: &Path) -> Option<u64> {
    let c_path = CString::new(path.as_os_str().as_bytes()).ok()?;
    // SAFETY: statx fills the zeroed struct from a valid NUL-terminated path; AT_FDCWD with an
    // absolute or relative path is its documented use.
    let mut buf: libc::statx = unsafe { std::mem::zeroed() };
    let rc = unsafe {
        libc::statx(
            libc::AT_FDCWD,
            c_path.as_ptr(),
            0,
            libc::STATX_BTIME,
            &mut buf,
        )
    };
    if rc != 0 || buf.stx_mask & libc::STATX_BTIME == 0 {
        return None;
    }
    let seconds = u64::try_from(buf.stx_btime.tv_sec).ok()?;
    Some(seconds * 1_000_000_000 + u64::from(buf.stx_btime.tv_nsec))
}

/// The identities of the directories PrepareDirs readied: the data directory, then the WAL
/// directory, then each tablespace target.
pub fn identities(
    data_dir: &Path,
    waldir: Option<&Path>,
    tablespaces: &[TablespaceTarget],
) -> Result<Vec<DirIdentity>> {
    let paths = std::iter::once(data_dir)
        .chain(waldir)
        .chain(tablespaces.iter().map(|t| Path::new(&t.path)));
    let mut out = Vec::new();
    for path in paths {
        out.push(identity(path)?.ok_or_else(|| {
            Error::new(
                ErrorKind::System,
                format!(
                    "directory \"{}\" vanished while it was prepared",
                    path.display()
                ),
            )
            .hint("another process removed it: make sure nothing else manages that directory, then run the command again")
        })?);
    }
    Ok(out)
}

/// A resume's check of what PrepareDirs checked: no running cluster in or above any prepared
/// directory, each one still ours, writable and private (loosened permissions are corrected,
/// as PrepareDirs does). Returns what was deleted or replaced since
/// PrepareDirs (a directory that is gone, or another one at the same path), for the machine to
/// prepare the directories again; `Ok(None)` when each is the directory it prepared.
pub fn recheck_prepared(dirs: &PreparedDirs) -> Result<Option<String>> {
    for recorded in &dirs.identities {
        let path = Path::new(&recorded.path);
        crate::running::check_not_nested(path, "directory")?;
        if recorded.path == dirs.data_dir {
            check_postmaster(path)?;
        }
        let Some(now) = identity(path)? else {
            return Ok(Some(format!(
                "\"{}\" no longer exists (it was removed after PrepareDirs prepared it)",
                recorded.path
            )));
        };
        if !recorded.same_directory(&now) {
            return Ok(Some(format!(
                "\"{}\" is not the directory PrepareDirs prepared (it was removed or replaced since)",
                recorded.path
            )));
        }
        let meta = fs::metadata(path).map_err(|e| io_error("access", path, e))?;
        // SAFETY: geteuid has no preconditions and cannot fail.
        check_owner(path, meta.uid(), unsafe { libc::geteuid() })?;
        check_writable_fs(path)?;
        // Permissions loosened since are corrected as PrepareDirs corrects them (0750 passes:
        // only PostgreSQL 11 and newer were prepared with it).
        if !mode_acceptable(meta.permissions().mode(), PG11) {
            crate::info!(
                "checking and correcting permissions on existing directory \"{}\"",
                path.display()
            );
            set_mode(path, DIR_MODE)?;
        }
    }
    Ok(None)
}

fn require_absolute(path: &Path, what: &str) -> Result<()> {
    if path.is_absolute() {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Config,
        format!("{what} \"{}\" is not an absolute path", path.display()),
    )
    .hint("give an absolute path"))
}

/// Creates a missing directory or corrects the permissions of an existing one.
fn make_ready(path: &Path, state: DataDirState, pg_version_num: u32) -> Result<()> {
    match state {
        DataDirState::Missing => {
            crate::info!("creating directory \"{}\"", path.display());
            DirBuilder::new()
                .recursive(true)
                .mode(DIR_MODE)
                .create(path)
                .map_err(|e| io_error("create directory", path, e))?;
            // The umask may have removed bits from the mode; set it exactly.
            set_mode(path, DIR_MODE)?;
            durable::sync_dir(&durable::parent_dir(path))
        }
        DataDirState::Empty | DataDirState::NonEmpty => {
            crate::info!(
                "checking and correcting permissions on existing directory \"{}\"",
                path.display()
            );
            let mode = fs::metadata(path)
                .map_err(|e| io_error("access", path, e))?
                .permissions()
                .mode();
            if !mode_acceptable(mode, pg_version_num) {
                set_mode(path, DIR_MODE)?;
            }
            Ok(())
        }
    }
}

/// Whether PostgreSQL accepts a data directory with this mode: 0700, or 0750 from 11 on.
fn mode_acceptable(mode: u32, pg_version_num: u32) -> bool {
    let mode = mode & 0o777;
    mode == DIR_MODE || (mode == GROUP_DIR_MODE && pg_version_num >= PG11)
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| io_error("set permissions on", path, e))
}

/// The directory must belong to the user running pgreplica: PostgreSQL refuses a data
/// directory it does not own, and only the owner can correct its permissions.
fn check_owner(path: &Path, owner: u32, euid: u32) -> Result<()> {
    if owner == euid {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::System,
        format!(
            "directory \"{}\" is owned by uid {owner}, not by the user running pgreplica (uid {euid})",
            path.display()
        ),
    )
    .hint("run pgreplica as the PostgreSQL user that owns the directory, or chown it to that user"))
}

/// Refuses a directory on a read-only file system, which no chmod can fix. A plain EACCES is
/// not an error here: the owner's chmod to 0700 that follows restores write access.
fn check_writable_fs(path: &Path) -> Result<()> {
    match access(path, libc::W_OK) {
        Err(e) if e.raw_os_error() != Some(libc::EACCES) => Err(Error::new(
            ErrorKind::System,
            format!("directory \"{}\" is not writable: {e}", path.display()),
        )
        .hint("remount it read-write or choose another directory")),
        _ => Ok(()),
    }
}

/// A missing directory can be created when its nearest existing ancestor is a writable
/// directory.
fn check_creatable(path: &Path) -> Result<()> {
    let ancestor = path
        .ancestors()
        .skip(1)
        .find(|a| fs::symlink_metadata(a).is_ok())
        .unwrap_or(Path::new("/"));
    if !ancestor.is_dir() {
        return Err(Error::new(
            ErrorKind::System,
            format!(
                "cannot create directory \"{}\": \"{}\" is not a directory",
                path.display(),
                ancestor.display()
            ),
        )
        .hint("choose another path"));
    }
    access(ancestor, libc::W_OK | libc::X_OK).map_err(|e| {
        Error::new(
            ErrorKind::System,
            format!(
                "cannot create directory \"{}\": \"{}\" is not writable: {e}",
                path.display(),
                ancestor.display()
            ),
        )
        .hint("create the directory as a user allowed to, and give it to the PostgreSQL user")
    })
}

fn access(path: &Path, mode: libc::c_int) -> io::Result<()> {
    let c_path = CString::new(path.as_os_str().as_bytes())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "path contains a NUL byte"))?;
    // SAFETY: c_path is a valid NUL-terminated string that outlives the call.
    if unsafe { libc::access(c_path.as_ptr(), mode) } == 0 {
        Ok(())
    } else {
        Err(io::Error::last_os_error())
    }
}

/// Bytes and files under `dir` (files still being written included; symlinks not followed),
/// walked on a blocking thread. Entries vanishing mid-walk are skipped: a copy renames as it
/// goes, and a directory that cannot be read counts as empty.
pub async fn usage(dir: &Path) -> (u64, u64) {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut totals = (0, 0);
        let mut pending = vec![dir];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = fs::read_dir(&dir) else {
                continue;
            };
            for entry in entries.flatten() {
                let Ok(meta) = entry.metadata() else { continue };
                if meta.is_dir() {
                    pending.push(entry.path());
                } else if meta.is_file() {
                    totals.0 += meta.len();
                    totals.1 += 1;
                }
            }
        }
        totals
    })
    .await
    .unwrap_or((0, 0))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::running::write_pid_file as write_pid;

    const PG15: u32 = 150_004;

    #[tokio::test]
    async fn usage_counts_files_below_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("base")).unwrap();
        std::fs::write(dir.path().join("base/1"), vec![0; 100]).unwrap();
        std::fs::write(dir.path().join("PG_VERSION"), "15\n").unwrap();
        assert_eq!(usage(dir.path()).await, (103, 2));
        assert_eq!(usage(&dir.path().join("missing")).await, (0, 0));
    }

    fn mode_of(path: &Path) -> u32 {
        fs::symlink_metadata(path).unwrap().permissions().mode() & 0o7777
    }

    fn mkdir_mode(path: &Path, mode: u32) {
        fs::create_dir_all(path).unwrap();
        fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
    }

    #[test]
    fn missing_dir_is_created_with_parents_0700_and_check_changes_nothing() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("a/b/data");
        assert_eq!(check_data_dir(&data, false).unwrap(), DataDirState::Missing);
        assert!(!root.path().join("a").exists());
        assert_eq!(
            prepare_data_dir(&data, PG15, false).unwrap(),
            DataDirState::Missing
        );
        assert!(data.is_dir());
        assert_eq!(mode_of(&data), 0o700);
        // Idempotent: the second run finds it empty and is content.
        assert_eq!(
            prepare_data_dir(&data, PG15, false).unwrap(),
            DataDirState::Empty
        );
    }

    #[test]
    fn empty_dir_permissions_are_corrected_but_not_by_check() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        mkdir_mode(&data, 0o775);
        assert_eq!(check_data_dir(&data, false).unwrap(), DataDirState::Empty);
        assert_eq!(mode_of(&data), 0o775);
        assert_eq!(
            prepare_data_dir(&data, PG15, false).unwrap(),
            DataDirState::Empty
        );
        assert_eq!(mode_of(&data), 0o700);
    }

    #[test]
    fn group_readable_mode_is_kept_from_pg11_only() {
        let root = tempfile::tempdir().unwrap();
        let (new, old) = (root.path().join("new"), root.path().join("old"));
        mkdir_mode(&new, 0o750);
        mkdir_mode(&old, 0o750);
        prepare_data_dir(&new, 110_000, false).unwrap();
        prepare_data_dir(&old, 100_023, false).unwrap();
        assert_eq!(mode_of(&new), 0o750);
        assert_eq!(mode_of(&old), 0o700);
        // Group write is never accepted.
        mkdir_mode(&new, 0o770);
        prepare_data_dir(&new, PG15, false).unwrap();
        assert_eq!(mode_of(&new), 0o700);
    }

    #[test]
    fn non_empty_dir_is_refused_without_force() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        mkdir_mode(&data, 0o755);
        fs::write(data.join("PG_VERSION"), "15\n").unwrap();
        let err = prepare_data_dir(&data, PG15, false).unwrap_err();
        assert_eq!(err.kind, ErrorKind::System);
        assert!(err.message.contains("is not empty"), "{}", err.message);
        assert!(err.hint.unwrap().contains("-F/--force"));
        assert_eq!(mode_of(&data), 0o755);
        assert!(check_data_dir(&data, false).is_err());
    }

    #[test]
    fn force_keeps_the_files_and_corrects_permissions() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        mkdir_mode(&data, 0o755);
        fs::create_dir(data.join("base")).unwrap();
        fs::write(data.join("base/1"), "relation").unwrap();
        fs::write(data.join("PG_VERSION"), "15\n").unwrap();
        assert_eq!(check_data_dir(&data, true).unwrap(), DataDirState::NonEmpty);
        assert_eq!(
            prepare_data_dir(&data, PG15, true).unwrap(),
            DataDirState::NonEmpty
        );
        assert_eq!(fs::read_to_string(data.join("base/1")).unwrap(), "relation");
        assert_eq!(fs::read_to_string(data.join("PG_VERSION")).unwrap(), "15\n");
        assert_eq!(mode_of(&data), 0o700);
    }

    #[test]
    fn running_postmaster_is_refused_first_even_with_force() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        mkdir_mode(&data, 0o755);
        let pid = std::process::id();
        write_pid(&data, &pid.to_string());
        for force in [false, true] {
            let err = prepare_data_dir(&data, PG15, force).unwrap_err();
            assert_eq!(err.kind, ErrorKind::System);
            assert_eq!(
                err.message,
                format!(
                    "PostgreSQL is running in data directory \"{}\" (pid {pid})",
                    data.display()
                )
            );
            assert!(err.hint.as_deref().unwrap().contains("pg_ctl"));
        }
        // Nothing was touched: not even the permissions.
        assert_eq!(mode_of(&data), 0o755);
        assert!(data.join("postmaster.pid").exists());
    }

    #[test]
    fn a_resume_notices_a_prepared_directory_deleted_or_replaced() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let wal = root.path().join("wal");
        prepare_data_dir(&data, PG15, false).unwrap();
        prepare_waldir(&data, &wal, PG15, false).unwrap();
        let dirs = PreparedDirs {
            data_dir: data.display().to_string(),
            waldir: Some(wal.display().to_string()),
            identities: identities(&data, Some(&wal), &[]).unwrap(),
            ..PreparedDirs::default()
        };
        assert_eq!(dirs.identities.len(), 2);
        assert_eq!(recheck_prepared(&dirs).unwrap(), None);
        fs::set_permissions(&data, fs::Permissions::from_mode(0o755)).unwrap();
        assert_eq!(recheck_prepared(&dirs).unwrap(), None);
        assert_eq!(mode_of(&data), 0o700);
        fs::remove_dir_all(&wal).unwrap();
        let found = recheck_prepared(&dirs).unwrap().unwrap();
        assert!(found.contains("no longer exists"), "{found}");
        fs::create_dir(&wal).unwrap();
        let found = recheck_prepared(&dirs).unwrap().unwrap();
        assert!(
            found.contains("is not the directory PrepareDirs prepared"),
            "{found}"
        );
        // A cluster started in the data directory meanwhile is refused, not rewound.
        let dirs = PreparedDirs {
            identities: identities(&data, Some(&wal), &[]).unwrap(),
            ..dirs
        };
        write_pid(&data, &std::process::id().to_string());
        let err = recheck_prepared(&dirs).unwrap_err();
        assert!(err.message.contains("PostgreSQL is running"), "{err:?}");
    }

    #[test]
    fn stale_pid_file_is_not_a_running_postmaster() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        mkdir_mode(&data, 0o700);
        // Linux pids never exceed pid_max (at most 2^22), so this pid cannot exist.
        write_pid(&data, &i32::MAX.to_string());
        assert!(
            check_data_dir(&data, false).is_err(),
            "non-empty without force"
        );
        assert_eq!(
            prepare_data_dir(&data, PG15, true).unwrap(),
            DataDirState::NonEmpty
        );
    }

    #[test]
    fn not_a_directory_and_bad_parents_are_clear_errors() {
        let root = tempfile::tempdir().unwrap();
        let file = root.path().join("file");
        fs::write(&file, "x").unwrap();
        let err = check_data_dir(&file, true).unwrap_err();
        assert!(
            err.message.contains("is not a directory"),
            "{}",
            err.message
        );
        let err = prepare_data_dir(&file.join("data"), PG15, false).unwrap_err();
        assert!(
            err.message.contains("cannot create directory") && err.message.contains("file"),
            "{}",
            err.message
        );
        let dangling = root.path().join("dangling");
        std::os::unix::fs::symlink(root.path().join("gone"), &dangling).unwrap();
        let err = check_data_dir(&dangling, false).unwrap_err();
        assert!(err.message.contains("missing directory"), "{}", err.message);
        let err = check_data_dir(Path::new("relative/data"), false).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
    }

    #[test]
    fn directory_of_another_user_is_refused() {
        let err = check_owner(Path::new("/srv/pg"), 1001, 1002).unwrap_err();
        assert_eq!(err.kind, ErrorKind::System);
        assert!(err.message.contains("owned by uid 1001"), "{}", err.message);
        assert!(err.hint.is_some());
        check_owner(Path::new("/srv/pg"), 1001, 1001).unwrap();
    }

    #[test]
    fn symlinked_data_dir_is_followed() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        mkdir_mode(&real, 0o755);
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        assert_eq!(
            prepare_data_dir(&link, PG15, false).unwrap(),
            DataDirState::Empty
        );
        assert_eq!(mode_of(&real), 0o700);
    }

    #[test]
    fn waldir_is_created_and_linked_idempotently() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let wal = root.path().join("wal/15");
        prepare_data_dir(&data, PG15, false).unwrap();
        prepare_waldir(&data, &wal, PG15, false).unwrap();
        assert_eq!(mode_of(&wal), 0o700);
        assert_eq!(fs::read_link(data.join("pg_wal")).unwrap(), wal);
        assert_eq!(
            check_waldir(&data, &wal, PG15, false).unwrap(),
            (DataDirState::Empty, WalLink::Correct)
        );
        prepare_waldir(&data, &wal, PG15, false).unwrap();
        assert_eq!(fs::read_link(data.join("pg_wal")).unwrap(), wal);
    }

    #[test]
    fn empty_pg_wal_dir_is_replaced_by_the_link_and_old_versions_use_pg_xlog() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let wal = root.path().join("wal");
        mkdir_mode(&data.join("pg_wal"), 0o700);
        prepare_waldir(&data, &wal, PG15, false).unwrap();
        assert_eq!(fs::read_link(data.join("pg_wal")).unwrap(), wal);

        let old = root.path().join("old");
        fs::create_dir(&old).unwrap();
        prepare_waldir(&old, &root.path().join("oldwal"), 90_624, false).unwrap();
        assert!(fs::read_link(old.join("pg_xlog")).is_ok());
        assert!(!old.join("pg_wal").exists());
    }

    #[test]
    fn waldir_conflicts_are_errors() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let wal = root.path().join("wal");
        fs::create_dir(&data).unwrap();

        let err = prepare_waldir(&data, Path::new("wal"), PG15, false).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        let err = prepare_waldir(&data, &data.join("pg_wal"), PG15, false).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);

        fs::create_dir(data.join("pg_wal")).unwrap();
        fs::write(data.join("pg_wal/000000010000000000000001"), "wal").unwrap();
        let err = prepare_waldir(&data, &wal, PG15, true).unwrap_err();
        assert!(
            err.message.contains("non-empty directory"),
            "{}",
            err.message
        );
        assert!(
            !wal.exists(),
            "nothing created before the conflict was found"
        );
        fs::remove_dir_all(data.join("pg_wal")).unwrap();

        std::os::unix::fs::symlink("/elsewhere", data.join("pg_wal")).unwrap();
        let err = prepare_waldir(&data, &wal, PG15, true).unwrap_err();
        assert!(err.message.contains("/elsewhere"), "{}", err.message);
        fs::remove_file(data.join("pg_wal")).unwrap();

        fs::write(data.join("pg_wal"), "").unwrap();
        assert!(prepare_waldir(&data, &wal, PG15, true).is_err());
        fs::remove_file(data.join("pg_wal")).unwrap();

        mkdir_mode(&wal, 0o755);
        fs::write(wal.join("old"), "x").unwrap();
        let err = prepare_waldir(&data, &wal, PG15, false).unwrap_err();
        assert!(err.hint.unwrap().contains("--force"));
        prepare_waldir(&data, &wal, PG15, true).unwrap();
        assert!(wal.join("old").exists());
        assert_eq!(mode_of(&wal), 0o700);
    }

    #[test]
    fn tablespace_targets_apply_the_mapping() {
        let ts = |name: &str, oid, location: &str| Tablespace {
            name: name.into(),
            oid,
            location: location.into(),
        };
        let tablespaces = [
            ts("fast", 16385, "/srv/fast"),
            ts("slow", 16386, "/srv/slow/"),
            ts("other", 16387, "/srv/other"),
        ];
        let mapping = [
            ("/srv/fast/".to_string(), "/mnt/fast".to_string()),
            ("/srv/slow".to_string(), "/mnt/slow".to_string()),
            ("/srv/unused".to_string(), "/mnt/unused".to_string()),
        ];
        let targets = tablespace_targets(&tablespaces, &mapping);
        let got: Vec<_> = targets.iter().map(|t| (t.oid, t.path.as_str())).collect();
        assert_eq!(
            got,
            [
                (16385, "/mnt/fast"),
                (16386, "/mnt/slow"),
                (16387, "/srv/other")
            ]
        );
    }

    #[test]
    fn tablespace_dirs_follow_the_data_dir_rules() {
        let root = tempfile::tempdir().unwrap();
        let ts = root.path().join("ts/fast");
        assert_eq!(
            prepare_tablespace_dir(&ts, PG15, false).unwrap(),
            DataDirState::Missing
        );
        assert_eq!(mode_of(&ts), 0o700);
        fs::write(ts.join("PG_15_202209061"), "").unwrap();
        fs::set_permissions(&ts, fs::Permissions::from_mode(0o777)).unwrap();
        assert!(prepare_tablespace_dir(&ts, PG15, false).is_err());
        assert_eq!(
            prepare_tablespace_dir(&ts, PG15, true).unwrap(),
            DataDirState::NonEmpty
        );
        assert_eq!(mode_of(&ts), 0o700);
        assert!(ts.join("PG_15_202209061").exists());
        let err = prepare_tablespace_dir(Path::new("ts"), PG15, false).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
    }

    #[test]
    fn empty_pgdata_dirs_are_created_once_and_respect_the_wal_link() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let wal = root.path().join("wal");
        prepare_data_dir(&data, PG15, false).unwrap();
        prepare_waldir(&data, &wal, PG15, false).unwrap();
        fs::create_dir(data.join("pg_stat")).unwrap();
        let created = create_empty_pgdata_dirs(&data, PG15).unwrap();
        let names: Vec<_> = created
            .iter()
            .map(|p| p.strip_prefix(&data).unwrap().to_str().unwrap().to_string())
            .collect();
        let expected: Vec<_> = PGDATA_DIRS
            .iter()
            .filter(|n| **n != "pg_stat")
            .map(|n| n.to_string())
            .collect();
        assert_eq!(names, expected);
        for path in &created {
            assert_eq!(mode_of(path), 0o700, "{}", path.display());
        }
        assert_eq!(fs::read_link(data.join("pg_wal")).unwrap(), wal);
        assert!(create_empty_pgdata_dirs(&data, PG15).unwrap().is_empty());
    }

    #[test]
    fn empty_pgdata_dirs_use_pg_xlog_before_10_and_refuse_files() {
        let root = tempfile::tempdir().unwrap();
        let created = create_empty_pgdata_dirs(root.path(), 90_624).unwrap();
        assert_eq!(created[0], root.path().join("pg_xlog"));
        assert!(!root.path().join("pg_wal").exists());

        let other = tempfile::tempdir().unwrap();
        fs::write(other.path().join("pg_notify"), "").unwrap();
        let err = create_empty_pgdata_dirs(other.path(), PG15).unwrap_err();
        assert!(err.message.contains("pg_notify"), "{}", err.message);
    }

    #[test]
    fn tablespace_map_lists_targets_atomically() {
        let dir = tempfile::tempdir().unwrap();
        assert_eq!(write_tablespace_map(dir.path(), &[]).unwrap(), None);
        assert!(!dir.path().join("tablespace_map").exists());
        let targets = [
            TablespaceTarget {
                oid: 16385,
                path: "/mnt/fast space".into(),
            },
            TablespaceTarget {
                oid: 16386,
                path: r"/mnt/odd\name".into(),
            },
        ];
        let path = write_tablespace_map(dir.path(), &targets).unwrap().unwrap();
        let text = fs::read_to_string(&path).unwrap();
        assert_eq!(text, "16385 /mnt/fast space\n16386 /mnt/odd\\\\name\n");
        assert_eq!(mode_of(&path), 0o600);
        write_tablespace_map(dir.path(), &targets).unwrap();
        assert_eq!(fs::read_to_string(&path).unwrap(), text);
    }
}
