//! CombineChain: combines the staged members of an incremental chain into the data directory
//! with `pg_combinebackup` of the backup's major version, then frees the staging directory.
//!
//! `pg_combinebackup` cannot resume: an interrupted run is started over, its output emptied
//! first (see `transfer::combine`). Its success is checkpointed on the record before the
//! staging directory is removed, so a run that dies while removing it only finishes the
//! removal.

use crate::error::Result;
use crate::runner::StepContext;
use crate::transfer::combine::{self, CopyMethod};
use crate::transfer::layout::{finish_layout, remove_tree};
use crate::transfer::staging::Staging;
use states::{CombineInput, CombineSummary};
use std::path::Path;
use std::time::Instant;

/// Runs the step.
pub async fn run(ctx: &mut StepContext<'_>, input: &CombineInput) -> Result<CombineSummary> {
    let started = Instant::now();
    let request = ctx.request().clone();
    let staging = Staging::new(&input.staging_dir);
    let data_dir = Path::new(&input.dirs.data_dir);
    let chain = input.backup.members();
    let program = crate::pg_tools::program_of_version(
        request.pg_bindir.as_deref(),
        input.pg_version,
        "pg_combinebackup",
    )
    .await?;
    let method = CopyMethod::choose(input.pg_version, staging.root(), data_dir);
    if ctx.record.chain_combined() {
        crate::notice!(
            "the chain was combined by an earlier run; removing what is left of staging"
        );
    } else {
        let inputs = combine::prepare_inputs(&staging, &chain)?;
        let removed = combine::empty_output(&input.dirs)?;
        if removed > 0 {
            crate::notice!(
                "pg_combinebackup cannot resume: starting it over ({removed} entries of an earlier run removed)"
            );
        }
        let leaf = chain
            .last()
            .map(|m| staging.combine_input(m).1)
            .unwrap_or_default();
        crate::notice!(
            "combining {} backups into \"{}\" ({})...",
            chain.len(),
            data_dir.display(),
            method.flag()
        );
        combine::run(&program, &inputs, &leaf, &input.dirs, method).await?;
        ctx.record.chain_combined_now();
        ctx.checkpoint()?;
    }
    if let Some(waldir) = &input.dirs.waldir {
        // pg_combinebackup made pg_wal an (empty) directory: the link to --waldir replaces it,
        // as PrepareDirs set it up.
        crate::datadir::prepare_waldir(data_dir, Path::new(waldir), input.pg_version, true)?;
    }
    finish_layout(data_dir, input.pg_version, &input.dirs)?;
    remove_tree(staging.root())?;
    crate::notice!(
        "backup {} combined into \"{}\"",
        input.backup.backup_id,
        data_dir.display()
    );
    Ok(CombineSummary {
        members: chain.len() as u64,
        program: program.display().to_string(),
        method: method.flag().to_string(),
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
    })
}
