//! Transfer in pg-backup-api mode: ask the API to restore the backup into the data directory
//! (Barman pushes the files over ssh with rsync), then follow the operation to its end.
//!
//! Exactly one operation per clone: the machine decides (`states::api`: which operation is the
//! clone's, when a POST may be sent again); this module talks to the API, records what the
//! machine is told through its inputs, and checkpoints at the moments the protocol names —
//! the attempt before the POST, the id right after it.
//!
//! It must not touch the data directory's contents (Barman writes them).

use crate::backup_api::{BackupApi, OperationStatus, PostOutcome, RecoveryRequest};
use crate::error::{Error, ErrorKind, Result};
use crate::progress::human_bytes;
use crate::runner::{now_millis, StepContext};
use states::api::{
    after_refused_post, after_unknown_post, find_lost, latest_id, AfterRefusedPost,
    AfterUnknownPost, ApiStart, LostAttempt, OperatorChoice,
};
use states::{ApiTarget, TransferSummary};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Test-only hook: when set to `1`, pgreplica aborts right after the POST returned an id and
/// before recording it — the crash window the resume logic must survive. Never set it outside
/// tests.
pub const CRASH_AFTER_POST_ENV: &str = "PGREPLICA_TEST_CRASH_AFTER_POST";

/// The operator's choice when a resume cannot tell which operation this clone created: an
/// operation id to re-attach to, or `new` to POST a new recovery.
pub const CHOOSE_ENV: &str = "PGREPLICA_BACKUP_API_OPERATION";

/// The API's duplicate-id 500 clears once the server's clock passes the second.
const SAME_SECOND_WAIT: Duration = Duration::from_millis(1100);

/// Runs the transfer through the API at `target`; `expected_bytes` is what the restore is
/// expected to weigh (for progress).
pub async fn run(
    ctx: &mut StepContext<'_>,
    target: &ApiTarget,
    expected_bytes: u64,
) -> Result<TransferSummary> {
    let api = BackupApi::from_target(target)?;
    let started = Instant::now();
    let data_dir = PathBuf::from(&ctx.request().data_dir);
    let bytes_at_start = dir_usage(&data_dir).await.0;
    let choice = operator_choice();
    let id = match ctx.record.api_start(choice.as_ref()) {
        ApiStart::Follow(id) => {
            crate::notice!("re-attaching to pg-backup-api operation {id}");
            id
        }
        ApiStart::AdoptChosen(id) => {
            // The id must exist (a 404 here names it).
            api.operation_status(&id).await?;
            crate::notice!("{CHOOSE_ENV}={id}: re-attaching to the operation the operator chose");
            record_id(ctx, &id)?;
            id
        }
        ApiStart::FindLost { latest_id_before } => {
            reattach_lost(ctx, &api, latest_id_before.as_deref()).await?
        }
        ApiStart::Post => {
            if choice == Some(OperatorChoice::PostNew) && ctx.record.api_operation().is_some() {
                crate::notice!("{CHOOSE_ENV}=new: posting a new recovery as the operator chose");
            }
            post_recovery(ctx, &api, target).await?
        }
    };
    follow(ctx, &api, target, &id, expected_bytes).await?;
    let (bytes, files) = dir_usage(&data_dir).await;
    crate::info!(
        "pg-backup-api operation {id} restored {} into \"{}\"",
        human_bytes(bytes),
        data_dir.display()
    );
    Ok(TransferSummary {
        files,
        bytes_total: bytes,
        bytes_sent: bytes.saturating_sub(bytes_at_start),
        files_reused: 0,
        bytes_kept: 0,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        restarts: 0,
    })
}

/// The operator's word from [`CHOOSE_ENV`], if given.
fn operator_choice() -> Option<OperatorChoice> {
    let value = std::env::var(CHOOSE_ENV).ok()?;
    match value.trim() {
        "" => None,
        "new" => Some(OperatorChoice::PostNew),
        id => Some(OperatorChoice::Adopt(id.to_string())),
    }
}

fn recovery_request(ctx: &StepContext<'_>, target: &ApiTarget) -> RecoveryRequest {
    RecoveryRequest {
        backup_id: target.backup_id.clone(),
        destination_directory: ctx.request().data_dir.clone(),
        remote_ssh_command: target.remote_ssh_command.clone(),
    }
}

/// Records the attempt, POSTs, records the id at once. Posts again only where the machine
/// allows it: after a refusal that proves nothing was created, or after a lost reply when the
/// list proves nothing was created.
async fn post_recovery(
    ctx: &mut StepContext<'_>,
    api: &BackupApi,
    target: &ApiTarget,
) -> Result<String> {
    let request = recovery_request(ctx, target);
    let mut posts = 0;
    loop {
        posts += 1;
        let latest_id_before = latest_id(&api.list_operations().await?);
        ctx.record
            .api_attempt_begun(now_millis(), latest_id_before.clone());
        ctx.checkpoint()?;
        crate::notice!(
            "asking pg-backup-api at {} to restore backup \"{}\" of server \"{}\" into \"{}\"",
            api.base(),
            request.backup_id,
            api.server(),
            request.destination_directory
        );
        let error = match api.create_recovery(&request).await {
            PostOutcome::Created(id) => {
                if std::env::var(CRASH_AFTER_POST_ENV).as_deref() == Ok("1") {
                    eprintln!("{CRASH_AFTER_POST_ENV}=1: aborting after the POST (test hook)");
                    std::process::abort();
                }
                record_id(ctx, &id)?;
                crate::info!("pg-backup-api operation {id} created");
                return Ok(id);
            }
            PostOutcome::NotCreated(error) => {
                if after_refused_post(error.retryable, posts) == AfterRefusedPost::Stop {
                    if !error.retryable {
                        // Nothing was created: a resume must not hunt for an operation.
                        ctx.record.api_attempt_withdrawn();
                        ctx.checkpoint()?;
                    }
                    return Err(error);
                }
                error
            }
            PostOutcome::Unknown(error) => {
                crate::info!("{}", error.full_message());
                // The API writes the job file before it answers; a moment lets a slow server
                // finish the request the reply of which was lost.
                tokio::time::sleep(SAME_SECOND_WAIT).await;
                let listed = api.list_operations().await?;
                match after_unknown_post(&listed, latest_id_before.as_deref()) {
                    AfterUnknownPost::PostAgain if posts < states::api::MAX_POSTS => error,
                    AfterUnknownPost::PostAgain => return Err(error),
                    AfterUnknownPost::Adopt(id) => {
                        record_id(ctx, &id)?;
                        crate::notice!("the reply was lost, but operation {id} is the recovery this request created");
                        return Ok(id);
                    }
                    AfterUnknownPost::Ask(ids) => return Err(cannot_tell(ctx, api, &ids)),
                }
            }
        };
        crate::info!("{}", error.full_message());
        crate::info!(
            "Retrying... (no operation was created; posting again in {:.1} s)",
            SAME_SECOND_WAIT.as_secs_f32()
        );
        tokio::time::sleep(SAME_SECOND_WAIT).await;
    }
}

fn record_id(ctx: &mut StepContext<'_>, id: &str) -> Result<()> {
    ctx.record.api_operation_created(id);
    ctx.checkpoint()
}

/// A run died between the POST and recording its id: find the operation it created.
async fn reattach_lost(
    ctx: &mut StepContext<'_>,
    api: &BackupApi,
    latest_id_before: Option<&str>,
) -> Result<String> {
    crate::warning!(
        "an earlier run posted a recovery but stopped before recording its operation id; looking for it"
    );
    let operations = api.list_operations().await?;
    match find_lost(&operations, latest_id_before) {
        LostAttempt::Adopt(id) => {
            crate::notice!(
                "re-attaching to pg-backup-api operation {id}, the only recovery created on server \"{}\" since this clone's request (the API does not say which directory an operation restores into)",
                api.server()
            );
            record_id(ctx, &id)?;
            Ok(id)
        }
        LostAttempt::NoneCreated => Err(cannot_tell(ctx, api, &[])),
        LostAttempt::Ambiguous(ids) => Err(cannot_tell(ctx, api, &ids)),
    }
}

fn cannot_tell(ctx: &StepContext<'_>, api: &BackupApi, ids: &[String]) -> Error {
    let data_dir = &ctx.request().data_dir;
    let found = if ids.is_empty() {
        format!(
            "no recovery operation of server \"{}\" was created after this clone's attempt began",
            api.server()
        )
    } else {
        format!(
            "{} recovery operations of server \"{}\" were created after this clone's attempt began ({})",
            ids.len(),
            api.server(),
            ids.join(", ")
        )
    };
    let id = ctx.record.id();
    Error::new(
        ErrorKind::BackupApi,
        format!("cannot tell which pg-backup-api operation restores into \"{data_dir}\": {found}"),
    )
    .detail("the earlier run stopped between posting the recovery and recording its id; pgreplica never posts a second recovery into the same directory blindly")
    .hint(format!(
        "on the Barman host, look for the job file <barman_home>/{}/jobs/<id>.json whose destination_directory is \"{data_dir}\"; then run \"{CHOOSE_ENV}=<id> pgreplica clone resume {id}\", or, if there is none, \"{CHOOSE_ENV}=new pgreplica clone resume {id}\"",
        api.server(),
    ))
}

/// Polls the operation until DONE, showing the bytes arriving in the data directory.
async fn follow(
    ctx: &mut StepContext<'_>,
    api: &BackupApi,
    target: &ApiTarget,
    id: &str,
    expected: u64,
) -> Result<()> {
    let data_dir = PathBuf::from(&ctx.request().data_dir);
    let (mut last_bytes, _) = dir_usage(&data_dir).await;
    ctx.progress.set_totals(expected, 0, last_bytes, 0);
    let stall_timeout = Duration::from_secs(target.stall_timeout_secs.max(1));
    let poll = Duration::from_millis(target.poll_interval_ms.max(100));
    let mut last_change = Instant::now();
    crate::notice!(
        "waiting for pg-backup-api operation {id} (restoring about {} into \"{}\")...",
        human_bytes(expected),
        data_dir.display()
    );
    loop {
        match api.operation_status(id).await? {
            OperationStatus::Done => return Ok(()),
            OperationStatus::Failed => return Err(failed(api, id, &data_dir)),
            OperationStatus::InProgress => {}
        }
        let (bytes, _) = dir_usage(&data_dir).await;
        ctx.progress.set_bytes_done(bytes);
        if bytes != last_bytes {
            last_bytes = bytes;
            last_change = Instant::now();
        } else if last_change.elapsed() >= stall_timeout {
            return Err(stalled(api, id, &data_dir, stall_timeout));
        }
        tokio::time::sleep(crate::retry::jittered(poll, 20)).await;
    }
}

fn failed(api: &BackupApi, id: &str, data_dir: &Path) -> Error {
    Error::new(
        ErrorKind::BackupApi,
        format!(
            "pg-backup-api operation {id} failed: Barman could not restore into \"{}\"",
            data_dir.display()
        ),
    )
    .detail("the API reports only FAILED; Barman's messages are in the operation's output file")
    .hint(format!(
        "read \"output\" in <barman_home>/{}/output/{id}.json on the Barman host (barman_home as in Barman's configuration, often /var/lib/barman); fix the cause, empty the data directory and start the clone again",
        api.server()
    ))
}

fn stalled(api: &BackupApi, id: &str, data_dir: &Path, timeout: Duration) -> Error {
    Error::new(
        ErrorKind::BackupApi,
        format!(
            "pg-backup-api operation {id} is still IN_PROGRESS but nothing arrived in \"{}\" for {} s",
            data_dir.display(),
            timeout.as_secs()
        ),
    )
    .detail("a worker that died leaves its operation IN_PROGRESS forever; pg-backup-api has no way to cancel it")
    .hint(format!(
        "on the Barman host, check for a running \"barman recover\" and for <barman_home>/{}/output/{id}.json; \"pgreplica clone resume\" re-attaches if the restore is alive (raise pg_backupapi_stall_timeout for slow links)",
        api.server()
    ))
}

/// Bytes and files under `dir` (files Barman is still writing included; symlinks not
/// followed). Entries vanishing mid-walk are skipped: rsync renames as it goes.
async fn dir_usage(dir: &Path) -> (u64, u64) {
    let dir = dir.to_path_buf();
    tokio::task::spawn_blocking(move || {
        let mut totals = (0, 0);
        let mut pending = vec![dir];
        while let Some(dir) = pending.pop() {
            let Ok(entries) = std::fs::read_dir(&dir) else {
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

    #[tokio::test]
    async fn usage_counts_files_below_the_directory() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::create_dir(dir.path().join("base")).unwrap();
        std::fs::write(dir.path().join("base/1"), vec![0; 100]).unwrap();
        std::fs::write(dir.path().join("PG_VERSION"), "15\n").unwrap();
        assert_eq!(dir_usage(dir.path()).await, (103, 2));
        assert_eq!(dir_usage(&dir.path().join("missing")).await, (0, 0));
    }
}
