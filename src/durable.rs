//! Durable, atomic file writes: write a temporary file beside the target, fsync it, rename it
//! over the target, fsync the directory.
//!
//! A crash at any point leaves either the old file or the new one, never a torn mix, and once
//! a function here returns the new content survives a power loss. This module knows nothing
//! about what it writes and never logs content (it may hold a password).

use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};

/// What to check when the system refuses a write.
pub const WRITE_HINT: &str =
    "check that the user running pgreplica may write there and that the file system has room";

/// A System error naming the action and the path, e.g. `could not rename "a" to "b": …`.
pub fn io_error(action: &str, path: &Path, err: io::Error) -> Error {
    Error::new(
        ErrorKind::System,
        format!("could not {action} \"{}\"", path.display()),
    )
    .caused_by(err)
    .hint(WRITE_HINT)
}

/// Replaces `path` with `contents` atomically and durably.
///
/// The file keeps the permission bits of the file it replaces; a new file gets `new_mode`
/// (set explicitly, so the umask cannot widen or narrow it).
pub fn write_atomic(path: &Path, contents: &[u8], new_mode: u32) -> Result<()> {
    let dir = parent_dir(path);
    let name = path
        .file_name()
        .ok_or_else(|| Error::bug(format!("\"{}\" names no file", path.display())))?
        .to_string_lossy();
    let mode = match fs::metadata(path) {
        Ok(meta) => meta.permissions().mode() & 0o7777,
        Err(e) if e.kind() == io::ErrorKind::NotFound => new_mode,
        Err(e) => return Err(io_error("stat", path, e)),
    };
    // A fixed temporary name means a leftover from a crash is simply replaced on the next
    // run; removing it first (instead of truncating) means we never write through a symlink
    // that someone planted there.
    let tmp = dir.join(format!(".{name}.pgreplica-tmp"));
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("remove", &tmp, e)),
    }
    let result = write_new(&tmp, contents, mode).and_then(|()| {
        fs::rename(&tmp, path).map_err(|e| {
            Error::new(
                ErrorKind::System,
                format!(
                    "could not rename \"{}\" to \"{}\": {e}",
                    tmp.display(),
                    path.display()
                ),
            )
            .hint(WRITE_HINT)
        })
    });
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result?;
    sync_dir(&dir)
}

/// Creates `tmp` exclusively with `mode`, writes `contents` and fsyncs it.
fn write_new(tmp: &Path, contents: &[u8], mode: u32) -> Result<()> {
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(mode)
        .open(tmp)
        .map_err(|e| io_error("create", tmp, e))?;
    file.set_permissions(fs::Permissions::from_mode(mode))
        .map_err(|e| io_error("set permissions on", tmp, e))?;
    file.write_all(contents)
        .map_err(|e| io_error("write", tmp, e))?;
    file.sync_all().map_err(|e| io_error("fsync", tmp, e))
}

/// fsyncs a directory, so that entries created, renamed or removed in it survive a crash.
pub fn sync_dir(dir: &Path) -> Result<()> {
    File::open(dir)
        .and_then(|d| d.sync_all())
        .map_err(|e| io_error("fsync directory", dir, e))
}

/// The directory holding `path` (`.` for a bare file name).
pub fn parent_dir(path: &Path) -> PathBuf {
    match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p.to_path_buf(),
        _ => PathBuf::from("."),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode_of(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn creates_with_the_new_mode_and_leaves_no_temp_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.conf");
        write_atomic(&path, b"one\n", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"one\n");
        assert_eq!(mode_of(&path), 0o600);
        let names: Vec<_> = fs::read_dir(dir.path())
            .unwrap()
            .map(|e| e.unwrap().file_name())
            .collect();
        assert_eq!(names, ["f.conf"]);
    }

    #[test]
    fn keeps_the_mode_of_the_file_it_replaces() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("f.conf");
        fs::write(&path, "old").unwrap();
        fs::set_permissions(&path, fs::Permissions::from_mode(0o640)).unwrap();
        write_atomic(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(mode_of(&path), 0o640);
    }

    #[test]
    fn replaces_a_leftover_temp_file_without_following_a_symlink() {
        let dir = tempfile::tempdir().unwrap();
        let victim = dir.path().join("victim");
        fs::write(&victim, "untouched").unwrap();
        std::os::unix::fs::symlink(&victim, dir.path().join(".f.conf.pgreplica-tmp")).unwrap();
        let path = dir.path().join("f.conf");
        write_atomic(&path, b"new", 0o600).unwrap();
        assert_eq!(fs::read(&path).unwrap(), b"new");
        assert_eq!(fs::read(&victim).unwrap(), b"untouched");
    }

    #[test]
    fn reports_the_path_when_the_directory_is_missing() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("nope").join("f.conf");
        let err = write_atomic(&path, b"x", 0o600).unwrap_err();
        assert_eq!(err.kind, ErrorKind::System);
        assert!(err.message.contains("nope"), "{}", err.message);
    }
}
