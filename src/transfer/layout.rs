//! What a restored data directory needs beyond the backup's files, whichever way the files
//! came (rsync, unpacked tar files, `pg_combinebackup`): the empty directories PostgreSQL
//! expects, the `pg_tblspc/<oid>` links to the tablespace targets and `tablespace_map`.
//!
//! Also [`empty_dir`], which every restartable copy (pg_basebackup, an unpack into a reused
//! directory, `pg_combinebackup`) uses to start over.
//!
//! Must not: copy backup files; it completes the layout, idempotently, or empties a target.

use crate::datadir::{create_empty_pgdata_dirs, write_tablespace_map};
use crate::durable::io_error;
use crate::error::Result;
use states::PreparedDirs;
use std::io;
use std::path::Path;

/// Completes the layout of `data_dir`, a restored directory of a server of `pg_version`.
pub(crate) fn finish_layout(data_dir: &Path, pg_version: u32, dirs: &PreparedDirs) -> Result<()> {
    create_empty_pgdata_dirs(data_dir, pg_version)?;
    link_tablespaces(data_dir, dirs)?;
    if write_tablespace_map(data_dir, &dirs.tablespaces)?.is_some() {
        crate::info!("tablespace_map written");
    }
    Ok(())
}

/// `pg_tblspc/<oid>` → the tablespace's target, as pg_basebackup and `barman restore` leave
/// them, so that pg_verifybackup finds the tablespace files before the standby first starts.
pub(crate) fn link_tablespaces(data_dir: &Path, dirs: &PreparedDirs) -> Result<()> {
    for target in &dirs.tablespaces {
        let link = data_dir.join("pg_tblspc").join(target.oid.to_string());
        match std::fs::read_link(&link) {
            Ok(existing) if existing == Path::new(&target.path) => continue,
            Ok(_) => std::fs::remove_file(&link)
                .map_err(|e| crate::durable::io_error("replace link", &link, e))?,
            Err(_) => {}
        }
        std::os::unix::fs::symlink(&target.path, &link)
            .map_err(|e| crate::durable::io_error("create link", &link, e))?;
    }
    Ok(())
}

/// Removes everything inside `dir` without following symbolic links; a missing `dir` is empty.
pub(crate) fn empty_dir(dir: &Path) -> Result<usize> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(0),
        Err(e) => return Err(io_error("read directory", dir, e)),
    };
    let mut removed = 0;
    for entry in entries {
        let path = entry
            .map_err(|e| io_error("read directory", dir, e))?
            .path();
        let meta = std::fs::symlink_metadata(&path).map_err(|e| io_error("access", &path, e))?;
        let result = if meta.is_dir() {
            std::fs::remove_dir_all(&path)
        } else {
            std::fs::remove_file(&path)
        };
        result.map_err(|e| io_error("remove", &path, e))?;
        removed += 1;
    }
    Ok(removed)
}

/// Removes `dir` and everything in it, once nothing there is needed (a staging directory).
/// A missing `dir` is fine: the removal may be re-run after a crash.
pub(crate) fn remove_tree(dir: &Path) -> Result<()> {
    match std::fs::remove_dir_all(dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(io_error("remove", dir, e)),
    }
}
