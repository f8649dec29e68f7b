//! One module per state of the clone machine. Each exposes `run(ctx)` returning what the step
//! establishes; [`Steps`] dispatches to them. Steps are idempotent: the runner may run one again
//! after a crash anywhere inside it.
//!
//! Steps read the recorded request and facts, never repmgr.conf: a resumed clone must finish the
//! clone that was started.

pub mod fetch_params;
pub mod prepare_dirs;
pub mod verify_backup;
pub mod verify_copy;
pub mod write_replication_conf;

use crate::barman::Barman;
use crate::error::{Error, ErrorKind, Result};
use crate::runner::{Executor, StepContext};
use states::{BackupFacts, CloneRequest, PreparedDirs, SourceParams, Step, StepResult};

/// The real steps.
pub struct Steps;

impl Executor for Steps {
    async fn execute(&self, step: Step, ctx: &mut StepContext<'_>) -> Result<StepResult> {
        Ok(match step {
            Step::VerifyBackup => StepResult::VerifyBackup(verify_backup::run(ctx).await?),
            Step::FetchParams => StepResult::FetchParams(fetch_params::run(ctx).await?),
            Step::PrepareDirs => StepResult::PrepareDirs(prepare_dirs::run(ctx).await?),
            Step::Transfer => StepResult::Transfer(crate::transfer::run(ctx).await?),
            Step::VerifyCopy => StepResult::VerifyCopy(verify_copy::run(ctx).await?),
            Step::WriteReplicationConf => {
                StepResult::WriteReplicationConf(write_replication_conf::run(ctx).await?)
            }
        })
    }
}

/// The Barman client of a Barman-mode request.
pub fn barman_of(request: &CloneRequest) -> Result<Barman> {
    let target = request.barman.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::Internal,
            "Barman mode without barman_host in the clone record",
        )
    })?;
    Ok(Barman::from_target(target, &request.ssh_options))
}

/// A fact an earlier step recorded; its absence is a bug in the plan, never the operator's.
fn recorded<'a, T>(fact: &'a Option<T>, what: &str) -> Result<&'a T> {
    fact.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::Internal,
            format!("the clone record lacks {what}"),
        )
    })
}

/// The pinned backup (VerifyBackup's fact).
pub fn backup_facts<'a>(ctx: &'a StepContext<'_>) -> Result<&'a BackupFacts> {
    recorded(&ctx.record.facts.backup, "the verified backup")
}

/// The source parameters (FetchParams' fact).
pub fn source_params<'a>(ctx: &'a StepContext<'_>) -> Result<&'a SourceParams> {
    recorded(&ctx.record.facts.params, "the source parameters")
}

/// The prepared directories (PrepareDirs' fact).
pub fn prepared_dirs<'a>(ctx: &'a StepContext<'_>) -> Result<&'a PreparedDirs> {
    recorded(&ctx.record.facts.dirs, "the prepared directories")
}
