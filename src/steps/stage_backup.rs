//! StageBackup: copies the files of a tar, incremental or encrypted backup, as the catalogue
//! stores them (compressed, so the network carries fewer bytes), into the clone's staging
//! directory on this host, with the checkpointed rsync copy of Transfer: a resume continues
//! mid-file and re-sends only what was in flight. Encrypted files are decrypted on the Barman
//! host on their way (see `transfer::decrypt`).
//!
//! Before the first byte: the replication slot exists (as for Transfer), and the staging
//! directory and the data directory have room for what is still to come
//! ([`crate::transfer::staged_copy_needs`], checked on every attempt, as Transfer checks its
//! own); the first attempt starts with an empty staging directory. On a resume, staged files
//! that are gone (UnpackBackup removes each once unpacked, and a clone whose directories were
//! replaced comes back here) are staged again.

use crate::barman::Barman;
use crate::diskspace;
use crate::error::Result;
use crate::runner::StepContext;
use crate::transfer::barman_rsync::{copy_checkpointed, rsync_args, stored_list, tidy, Copy};
use crate::transfer::rsync::{RsyncJob, TreeSource};
use crate::transfer::staging::Staging;
use crate::transfer::stream::Engine;
use states::{EntryKind, StageInput, TransferSummary};
use std::collections::BTreeSet;
use std::path::Path;

/// Runs the step.
pub async fn run(ctx: &mut StepContext<'_>, input: &StageInput) -> Result<TransferSummary> {
    if let Some(upstream) = &input.slot_upstream {
        crate::slots::ensure_slot(ctx.request(), upstream).await?;
    }
    let request = ctx.request().clone();
    let barman = Barman::from_target(&input.barman, &request.ssh_options);
    let backup = &input.backup;
    let staging = Staging::new(&input.staging_dir);
    if ctx.store.files().entries()?.is_empty() {
        // Whatever an abandoned clone of this directory staged is not this clone's.
        crate::transfer::layout::empty_dir(staging.root())?;
    }
    let trees = staging.trees(backup);
    for tree in &trees {
        make_private_dir(&tree.local)?;
    }
    let remote = |dir: &str| format!("{}:{dir}/", barman.host);
    let (first, others) = trees
        .split_first()
        .ok_or_else(|| crate::error::Error::bug("a staged backup without members"))?;
    let job = RsyncJob {
        source: remote(&first.remote),
        rsh: Some(barman.rsync_rsh()),
        dest: first.local.clone(),
        tablespaces: others
            .iter()
            .map(|t| TreeSource {
                root: t.root,
                source: remote(&t.remote),
                dest: t.local.clone(),
            })
            .collect(),
        extra_args: rsync_args(&request)?,
        entries: Vec::new(),
        partials: BTreeSet::new(),
    };
    let copy = Copy {
        what: format!("backup {} ({})", backup.backup_id, backup.kind.label()),
        source: "Barman",
        remove_extraneous: None,
        targets: vec![staging.root().to_path_buf()],
        decrypted_roots: trees
            .iter()
            .filter(|t| t.encrypted)
            .map(|t| t.root)
            .collect(),
        // Staged files are not the data directory's: UnpackBackup and VerifyCopy check those.
        check: false,
    };
    let list = async {
        let mut entries = Vec::new();
        for tree in &trees {
            entries.extend(
                barman
                    .list_tree(
                        &backup.backup_id,
                        tree.root,
                        &tree.remote,
                        tree.data_dir.as_deref(),
                    )
                    .await?,
            );
        }
        Ok(entries)
    };
    let entries = stored_list(ctx, &copy, &job, list).await?;
    let mut job = RsyncJob { entries, ..job };
    let bytes_kept = tidy(&mut job, &copy)?;
    let already_staged: u64 = job
        .entries
        .iter()
        .filter(|e| e.kind == EntryKind::File && e.done)
        .map(|e| e.size)
        .sum::<u64>()
        + bytes_kept;
    let dirs = &input.dirs;
    let needs = crate::transfer::staged_copy_needs(
        backup,
        Path::new(&dirs.data_dir),
        dirs.waldir.as_deref().map(Path::new),
        staging.root(),
        already_staged,
    );
    let room = diskspace::check(&needs)
        .map_err(|e| crate::transfer::staging_space_hint(e, Some(&request)))?;
    crate::info!("staging space: {room}");
    barman.open_shared_connection().await?;
    // Encrypted files first, decrypted on the Barman host on their way; each is marked done
    // once complete, so rsync (below) skips them and a resume continues the one in flight.
    for entry in job.entries.iter_mut().filter(|e| !e.done) {
        let Some(tree) = trees.iter().find(|t| t.root == entry.root && t.encrypted) else {
            continue;
        };
        let Some(clear) = entry.path.strip_suffix(".gpg") else {
            continue;
        };
        let remote_file = format!("{}/{}", tree.remote, entry.path);
        let appended =
            crate::transfer::decrypt::decrypt_into(&barman, &remote_file, &tree.local.join(clear))
                .await?;
        let files = ctx.store.files();
        files.mark_done(entry.root, &entry.path)?;
        files.flush()?;
        entry.done = true;
        crate::info!(
            "decrypted \"{}\" on the Barman host ({appended} bytes received)",
            entry.path
        );
    }
    let (_, summary) = copy_checkpointed(ctx, job, &copy, bytes_kept, None, Engine::Rsync).await?;
    crate::notice!(
        "backup {} staged in \"{}\"",
        backup.backup_id,
        staging.root().display()
    );
    Ok(summary)
}

/// Creates `dir` and its parents with mode 0700: staged files are a database's.
fn make_private_dir(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| crate::durable::io_error("create", dir, e))
}
