//! The state directory's privacy: the state directory, its `clones/` and each clone's directory
//! must be real directories (no links inside the state directory) that belong to the user
//! running pgreplica and that nobody else may write — otherwise another user could swap a
//! record, or plant a link that makes pgreplica overwrite the postgres user's files. Created
//! 0700 when missing. Checks and creates directories; reads no record.

use super::lock::io_error;
use crate::error::{Error, ErrorKind};
use std::os::unix::fs::DirBuilderExt;
use std::path::Path;

/// Whether [`check_private`] looks through a symbolic link: the state directory itself may be
/// a link to a private directory; nothing inside it may be one.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(super) enum Follow {
    /// The state directory itself, which may be a link to a private directory.
    Yes,
    /// Anything inside it.
    No,
}

/// Refuses a directory of the store that another user could change: not a directory (or a
/// link where none may be), owned by another user, or writable by its group or by others.
pub(super) fn check_private(path: &Path, what: &str, follow: Follow) -> Result<(), Error> {
    let meta = match follow {
        Follow::Yes => std::fs::metadata(path),
        Follow::No => std::fs::symlink_metadata(path),
    }
    .map_err(|e| io_error("read", path, &e))?;
    if !meta.is_dir() {
        return Err(Error::new(
            ErrorKind::Store,
            format!("{what} {} is not a directory", path.display()),
        )
        .hint("remove it, or choose another state directory with --state-dir"));
    }
    use std::os::unix::fs::MetadataExt;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let euid = unsafe { libc::geteuid() };
    if meta.uid() != euid {
        return Err(Error::new(
            ErrorKind::Store,
            format!(
                "{what} {} belongs to uid {}, not to the user running pgreplica (uid {euid})",
                path.display(),
                meta.uid()
            ),
        )
        .hint(
            "run pgreplica as the user that owns it, or choose a state directory of your own \
             with --state-dir",
        ));
    }
    let mode = meta.mode() & 0o777;
    if mode & 0o022 != 0 {
        return Err(Error::new(
            ErrorKind::Store,
            format!(
                "{what} {} is writable by other users (mode {mode:04o}): they could replace \
                 the clone records or plant links in it",
                path.display()
            ),
        )
        .hint(format!(
            "make it private: {}",
            crate::paste::line(&["chmod", "0700", &path.display().to_string()])
        )));
    }
    Ok(())
}

pub(super) fn create_private_dir(path: &Path) -> Result<(), Error> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|e| io_error("create", path, &e))
}
