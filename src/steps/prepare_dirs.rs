//! PrepareDirs: ready the data directory, the WAL directory link and the tablespace targets
//! before the transfer, with the rules of [`crate::datadir`].
//!
//! Idempotent: a re-run after a crash inside this step finds at most what the step itself made
//! (the `pg_wal` link to the WAL directory), which is accepted without `--force`. The step
//! records each directory's identity (device and inode), which every resume compares with what
//! the paths name then.

use crate::datadir::{
    identities, prepare_data_dir, prepare_tablespace_dir, prepare_waldir, tablespace_targets,
    wal_dir_name, DataDirState,
};
use crate::error::Result;
use crate::runner::StepContext;
use states::{Mode, PreparedDirs, Tablespace};
use std::fs;
use std::path::Path;

/// Runs the step for a standby of `pg_version` with the backup's `tablespaces`.
pub async fn run(
    ctx: &mut StepContext<'_>,
    pg_version: u32,
    tablespaces: &[Tablespace],
) -> Result<PreparedDirs> {
    let request = ctx.request();
    let data_dir = Path::new(&request.data_dir);
    let waldir = request.waldir.as_deref().map(Path::new);
    let only_our_link = waldir.is_some_and(|w| holds_only_wal_link(data_dir, w, pg_version));
    let state = prepare_data_dir(data_dir, pg_version, request.force || only_our_link)?;
    match state {
        DataDirState::Missing | DataDirState::Empty => {}
        DataDirState::NonEmpty if !only_our_link => {
            crate::notice!(
                "-F/--force provided: existing files in \"{}\" are kept and reused",
                data_dir.display()
            );
            if request.mode == Mode::BackupApi {
                // The API runs `barman restore` into the directory; since 3.15 it refuses a
                // non-empty destination, so the operation would fail only after it started.
                crate::warning!(
                    "Barman 3.15 and newer refuse to restore into a non-empty directory: the pg-backup-api operation will fail unless Barman is older"
                );
                crate::log::hint(&format!(
                    "empty \"{}\" first if the Barman host runs Barman 3.15 or newer",
                    data_dir.display()
                ));
            }
        }
        DataDirState::NonEmpty => {}
    }
    if let Some(waldir) = waldir {
        prepare_waldir(data_dir, waldir, pg_version, request.force)?;
        crate::info!(
            "WAL directory \"{}\" linked from \"{}\"",
            waldir.display(),
            data_dir.join(wal_dir_name(pg_version)).display()
        );
    }
    let tablespaces = tablespace_targets(tablespaces, &request.tablespace_mapping);
    for target in &tablespaces {
        prepare_tablespace_dir(Path::new(&target.path), pg_version, request.force)?;
        crate::info!("tablespace {} goes to \"{}\"", target.oid, target.path);
    }
    // What each directory is now, so that a resume notices one deleted or replaced since.
    let identities = identities(data_dir, waldir, &tablespaces)?;
    Ok(PreparedDirs {
        data_dir: request.data_dir.clone(),
        waldir: request.waldir.clone(),
        tablespaces,
        reused_existing: state == DataDirState::NonEmpty && !only_our_link,
        identities,
    })
}

/// Whether `data_dir` holds nothing but the WAL link to `waldir` that this step creates.
fn holds_only_wal_link(data_dir: &Path, waldir: &Path, version: u32) -> bool {
    let Ok(entries) = fs::read_dir(data_dir) else {
        return false;
    };
    let names: Vec<_> = entries
        .filter_map(|e| e.ok())
        .map(|e| e.file_name())
        .collect();
    names.len() == 1
        && names[0] == wal_dir_name(version)
        && fs::read_link(data_dir.join(wal_dir_name(version))).is_ok_and(|t| t == waldir)
}
