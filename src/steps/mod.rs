//! One module per state of the clone machine. Each exposes `run(ctx, inputs…)` returning what the
//! step establishes; [`Steps`] dispatches a [`Task`] to them. Steps are idempotent: the runner
//! may run one again after a crash anywhere inside it.
//!
//! Steps read the recorded request and the inputs the machine hands them, never repmgr.conf and
//! never the record's facts: a resumed clone finishes the clone that was started, and a step
//! cannot meet a fact its plan does not guarantee.
//!
//! **Invariant:** step modules are leaves. Nothing but this dispatcher imports them; what they
//! share lives in the modules they call (`datadir`, `slots`, `transfer`, `barman`, `source`, …).

mod combine_chain;
mod fetch_params;
mod prepare_dirs;
mod stage_backup;
mod unpack_backup;
mod verify_backup;
mod verify_copy;
mod write_replication_conf;

use crate::error::Result;
use crate::runner::{Executor, StepContext};
use states::{StepInput, StepResult, Task};

/// The real steps.
pub struct Steps;

impl Executor for Steps {
    async fn execute(&self, task: Task, ctx: &mut StepContext<'_>) -> Result<StepResult> {
        Ok(match task.input {
            StepInput::VerifyBackup(server) => {
                StepResult::VerifyBackup(verify_backup::run(ctx, &server).await?)
            }
            StepInput::FetchParams { backup } => {
                StepResult::FetchParams(fetch_params::run(ctx, backup.as_ref()).await?)
            }
            StepInput::PrepareDirs {
                pg_version,
                tablespaces,
            } => StepResult::PrepareDirs(prepare_dirs::run(ctx, pg_version, &tablespaces).await?),
            StepInput::Transfer(input) => {
                StepResult::Transfer(crate::transfer::run(ctx, input).await?)
            }
            StepInput::StageBackup(input) => {
                StepResult::StageBackup(stage_backup::run(ctx, &input).await?)
            }
            StepInput::UnpackBackup(input) => {
                StepResult::UnpackBackup(unpack_backup::run(ctx, &input).await?)
            }
            StepInput::CombineChain(input) => {
                StepResult::CombineChain(combine_chain::run(ctx, &input).await?)
            }
            StepInput::VerifyCopy {
                manifest,
                pg_version,
                api_restore,
            } => StepResult::VerifyCopy(
                verify_copy::run(ctx, manifest, pg_version, api_restore.as_ref()).await?,
            ),
            StepInput::WriteReplicationConf { params } => {
                StepResult::WriteReplicationConf(write_replication_conf::run(ctx, &params).await?)
            }
        })
    }
}
