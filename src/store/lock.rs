//! The per-clone lock: an exclusive `flock` on `<clone>/lock` holding the owner's pid.
//!
//! `flock` belongs to the open file description, so it dies with the process however the
//! process dies (SIGKILL included) and no stale lock ever needs cleaning up. The pid written
//! into the file is only for messages; the lock itself is the truth. This module never
//! blocks: the store's caller decides how long to keep trying (a brief grace for `clone status`
//! readers); a second run is refused, never queued.

use crate::error::{Error, ErrorKind};
use std::fs::{File, OpenOptions};
use std::io::{Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::os::unix::io::AsRawFd;
use std::path::Path;

/// Why the lock could not be taken.
#[derive(Debug)]
pub(crate) enum LockError {
    /// Another process holds it; its pid, if it had written it yet.
    Held(Option<u32>),
    /// The lock file could not be opened or locked.
    Io(Error),
}

/// A held clone lock; released when dropped (the file is closed).
#[derive(Debug)]
pub(crate) struct CloneLock {
    // Kept open for its flock; std opens with O_CLOEXEC, so rsync and ssh children never
    // inherit (and never keep holding) the lock.
    _file: File,
}

impl CloneLock {
    /// Takes the lock at `path` without blocking and writes this process's pid into it. The
    /// directory holding `path` must exist; the file is created if missing.
    pub(crate) fn try_acquire(path: &Path) -> Result<CloneLock, LockError> {
        // `discard` unlinks a clone directory while holding its lock. A process that opened
        // the old lock file just before may then win the flock on an unlinked inode while a
        // third one locks the new file: check that the locked inode is still the one at
        // `path`, and start over if not. Two rounds suffice unless discards race in a loop.
        for _ in 0..8 {
            let mut file = open_lock_file(path)
                .map_err(|e| LockError::Io(io_error("open the lock file", path, &e)))?;
            if let Err(err) = flock(&file, libc::LOCK_EX | libc::LOCK_NB) {
                if err.raw_os_error() == Some(libc::EWOULDBLOCK) {
                    return Err(LockError::Held(read_pid(&mut file)));
                }
                return Err(LockError::Io(io_error("lock", path, &err)));
            }
            if !still_linked(&file, path) {
                continue;
            }
            write_pid(&mut file)
                .map_err(|e| LockError::Io(io_error("write the pid into", path, &e)))?;
            return Ok(CloneLock { _file: file });
        }
        Err(LockError::Io(Error::new(
            ErrorKind::Store,
            format!(
                "cannot lock {}: the clone directory keeps being removed",
                path.display()
            ),
        )
        .hint(
            "another pgreplica process keeps discarding this clone (clone forget, or clone start with -F/--force): let it finish, then run this command again",
        )))
    }
}

/// Opens the lock file at `path` for reading and writing, creating it 0600, never through a
/// symbolic link: a link planted in a shared directory would make even `clone status` write
/// into whatever file it names. Used for the clone locks and the directory locks alike.
pub(crate) fn open_lock_file(path: &Path) -> std::io::Result<File> {
    OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)
}

/// `flock(2)` on `file` (a lock file, or a directory opened for its lock) with `operation`
/// (`LOCK_EX | LOCK_NB`, …).
pub(crate) fn flock(file: &File, operation: libc::c_int) -> std::io::Result<()> {
    // SAFETY: flock on a file descriptor the caller owns and keeps open; no memory involved.
    if unsafe { libc::flock(file.as_raw_fd(), operation) } == 0 {
        Ok(())
    } else {
        Err(std::io::Error::last_os_error())
    }
}

fn still_linked(file: &File, path: &Path) -> bool {
    match (file.metadata(), std::fs::metadata(path)) {
        (Ok(held), Ok(current)) => held.dev() == current.dev() && held.ino() == current.ino(),
        _ => false,
    }
}

fn write_pid(file: &mut File) -> std::io::Result<()> {
    file.set_len(0)?;
    file.seek(SeekFrom::Start(0))?;
    writeln!(file, "{}", std::process::id())
}

fn read_pid(file: &mut File) -> Option<u32> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    text.trim().parse().ok()
}

/// A store I/O failure with its path.
pub(crate) fn io_error(action: &str, path: &Path, err: &std::io::Error) -> Error {
    if err.raw_os_error() == Some(libc::ELOOP) {
        return Error::new(
            ErrorKind::Store,
            format!(
                "cannot {action} {}: it is a symbolic link, and pgreplica never follows one in \
                 its state directory",
                path.display()
            ),
        )
        .hint("remove the link, and keep the state directory private to the PostgreSQL user");
    }
    // sled wraps its I/O errors in errors of its own, whose text is the original's Debug.
    let full = err.raw_os_error() == Some(libc::ENOSPC)
        || err.kind() == std::io::ErrorKind::StorageFull
        || err.to_string().contains("No space left on device");
    if full {
        return Error::new(
            ErrorKind::Store,
            format!(
                "cannot {action} {}: No space left on device",
                path.display()
            ),
        )
        .hint(
            "free space on the state directory's file system, then run the command again: \
             the last checkpoint is intact",
        );
    }
    let hint = if err.kind() == std::io::ErrorKind::PermissionDenied {
        "run pgreplica as the user that owns the state directory, or choose another with \
         --state-dir"
    } else {
        "check the state directory (--state-dir, PGREPLICA_STATE_DIR)"
    };
    Error::new(
        ErrorKind::Store,
        format!("cannot {action} {}: {err}", path.display()),
    )
    .hint(hint)
}
