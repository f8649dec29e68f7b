//! Transfer in pg-backup-api mode: ask the API to restore the backup into the data directory
//! (Barman pushes the files over ssh with rsync), then follow the operation to its end.
//!
//! One operation per clone at a time: the machine decides (`states::api`: which operation is
//! the clone's, when a POST may be sent again, when following gives up); this module talks to
//! the API, records what it learns through the machine's inputs, and checkpoints at the moments
//! the protocol names — the attempt before the POST, the id as soon as it is known. A new
//! operation replaces a recorded one only on the operator's word (`clone resume
//! --api-operation`), which the machine hands over through [`states::CloneRecord::api_start`].
//!
//! It must not touch the data directory's contents (Barman writes them), and it trusts no DONE:
//! VerifyCopy checks what arrived.

use crate::backup_api::{BackupApi, PostOutcome, RecoveryRequest};
use crate::datadir::usage;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::human_bytes;
use crate::runner::{now_millis, StepContext};
use states::api::{
    after_refused_post, after_unknown_post, AfterRefusedPost, AfterUnknownPost, ApiStart, Follow,
    FollowNext, FollowTimeouts, OperatorChoice,
};
use states::{ApiOperation, ApiTarget, TransferSummary};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Test-only hook, compiled into debug builds only (a release build ignores the variable):
/// when set to `1`, pgreplica aborts right after a POST was answered (whatever the answer) and
/// before anything of the answer is recorded — the crash window the protocol must survive.
#[cfg(debug_assertions)]
pub const CRASH_AFTER_POST_ENV: &str = "PGREPLICA_TEST_CRASH_AFTER_POST";

/// The API's duplicate-id 500 clears once the server's clock passes the second; a server whose
/// reply was lost has finished the request by then.
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
    let bytes_at_start = usage(&data_dir).await.0;
    let id = match ctx.record.api_start() {
        ApiStart::Follow(id) => {
            crate::notice!("re-attaching to pg-backup-api operation {id}");
            id
        }
        ApiStart::AdoptChosen(id) => {
            // The id must exist (a 404 here names it).
            api.operation_status(&id).await?;
            crate::notice!(
                "--api-operation {id}: following the operation the operator chose{}",
                abandoning(ctx, Some(&id))
            );
            record_id(ctx, &id)?;
            id
        }
        ApiStart::FindLost(attempt) => {
            crate::warning!(
                "an earlier run posted a recovery but stopped before recording its answer; looking for the operation it created"
            );
            match resolve_unknown(ctx, &api, &attempt, 0, None).await? {
                Some(id) => id,
                None => post_recovery(ctx, &api, target).await?,
            }
        }
        ApiStart::Post => {
            if ctx.record.api_choice() == Some(&OperatorChoice::PostNew) {
                crate::notice!(
                    "--api-operation new: posting a new recovery as the operator chose{}",
                    abandoning(ctx, None)
                );
            }
            post_recovery(ctx, &api, target).await?
        }
    };
    follow(ctx, &api, target, &id, expected_bytes).await?;
    let (bytes, files) = usage(&data_dir).await;
    crate::info!(
        "pg-backup-api operation {id} reported DONE; \"{}\" holds {} in {files} files",
        data_dir.display(),
        human_bytes(bytes)
    );
    Ok(TransferSummary {
        files,
        bytes_total: bytes,
        bytes_sent: bytes.saturating_sub(bytes_at_start),
        files_reused: 0,
        bytes_kept: 0,
        duration_ms: u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX),
        restarts: 0,
        checkpoint_ms: 0,
    })
}

/// ` (operation X is abandoned)` when the operator's word replaces a recorded operation other
/// than `kept`.
fn abandoning(ctx: &StepContext<'_>, kept: Option<&str>) -> String {
    ctx.record
        .api_operation()
        .and_then(|op| op.operation_id.as_deref())
        .filter(|id| Some(*id) != kept)
        .map(|id| format!(" (operation {id} is abandoned)"))
        .unwrap_or_default()
}

fn recovery_request(ctx: &StepContext<'_>, target: &ApiTarget) -> RecoveryRequest {
    RecoveryRequest {
        backup_id: target.backup_id.clone(),
        destination_directory: ctx.request().data_dir.clone(),
        remote_ssh_command: target.remote_ssh_command.clone(),
    }
}

/// Lists, records the attempt, POSTs, and records the id as soon as it is known. Posts again
/// only where the machine allows it: after a refusal that proves nothing was created, or after
/// an unknown outcome when the list proves nothing was created.
async fn post_recovery(
    ctx: &mut StepContext<'_>,
    api: &BackupApi,
    target: &ApiTarget,
) -> Result<String> {
    let request = recovery_request(ctx, target);
    let mut posts = 0;
    loop {
        posts += 1;
        let listed = api.list_operations().await?;
        ctx.record.api_attempt_begun(now_millis(), &listed);
        ctx.checkpoint()?;
        crate::notice!(
            "asking pg-backup-api at {} to restore backup \"{}\" of server \"{}\" into \"{}\"",
            api.base(),
            request.backup_id,
            api.server(),
            request.destination_directory
        );
        let outcome = api.create_recovery(&request).await;
        #[cfg(debug_assertions)]
        crash_after_post();
        match outcome {
            PostOutcome::Created(id) => {
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
                crate::info!("{}", error.full_message());
                crate::info!(
                    "Retrying... (no operation was created; posting again in {:.1} s)",
                    SAME_SECOND_WAIT.as_secs_f32()
                );
                tokio::time::sleep(SAME_SECOND_WAIT).await;
            }
            PostOutcome::Unknown(error) => {
                crate::info!("{}", error.full_message());
                crate::info!(
                    "the recovery request's outcome is unknown: listing the operations of server \"{}\" to see whether it created one",
                    api.server()
                );
                // The API writes the job file before it answers; a moment lets a slow server
                // finish a request whose reply was lost.
                tokio::time::sleep(SAME_SECOND_WAIT).await;
                let attempt = attempt_of(ctx)?;
                if let Some(id) = resolve_unknown(ctx, api, &attempt, posts, Some(error)).await? {
                    return Ok(id);
                }
            }
        }
    }
}

/// Aborts the process when [`CRASH_AFTER_POST_ENV`] is `1` (debug builds only).
#[cfg(debug_assertions)]
fn crash_after_post() {
    if std::env::var(CRASH_AFTER_POST_ENV).as_deref() == Ok("1") {
        eprintln!("{CRASH_AFTER_POST_ENV}=1: aborting after the POST (test hook)");
        std::process::abort();
    }
}

/// The attempt just checkpointed.
fn attempt_of(ctx: &StepContext<'_>) -> Result<ApiOperation> {
    ctx.record
        .api_operation()
        .cloned()
        .ok_or_else(|| Error::bug("the pg-backup-api attempt vanished from the record"))
}

/// After an unknown outcome of `attempt` (`posts` POSTs in this run; `error` the last one's),
/// reads the list and does what the machine decides: the operation it created (recorded at
/// once), None when nothing was created and a POST may follow, or an error for the operator.
async fn resolve_unknown(
    ctx: &mut StepContext<'_>,
    api: &BackupApi,
    attempt: &ApiOperation,
    posts: u32,
    error: Option<Error>,
) -> Result<Option<String>> {
    let listed = api.list_operations().await?;
    match after_unknown_post(&listed, attempt, posts) {
        AfterUnknownPost::Adopt(id) => {
            crate::notice!(
                "pg-backup-api operation {id} is the one recovery created on server \"{}\" since this clone's request: it is this clone's (the API does not say which directory an operation restores into)",
                api.server()
            );
            record_id(ctx, &id)?;
            Ok(Some(id))
        }
        AfterUnknownPost::PostAgain => {
            crate::info!(
                "Retrying... (no operation was created since this clone's request; posting again)"
            );
            Ok(None)
        }
        AfterUnknownPost::GiveUp => Err(error.unwrap_or_else(|| {
            Error::new(
                ErrorKind::BackupApi,
                "pg-backup-api created no recovery after repeated requests",
            )
            .hint(format!(
                "check that pg-backup-api on the Barman host is running and that its log shows the requests, then run \"{}\": no recovery was created, so it is requested again",
                crate::paste::resume()
            ))
        })),
        AfterUnknownPost::Ask(ids) => Err(cannot_tell(ctx, api, &ids)),
    }
}

fn record_id(ctx: &mut StepContext<'_>, id: &str) -> Result<()> {
    ctx.record.api_operation_created(now_millis(), id);
    ctx.checkpoint()
}

fn cannot_tell(ctx: &StepContext<'_>, api: &BackupApi, ids: &[String]) -> Error {
    let data_dir = &ctx.request().data_dir;
    let found = if ids.is_empty() {
        format!(
            "the recoveries of server \"{}\" changed since this clone's request in a way their ids do not explain",
            api.server()
        )
    } else {
        format!(
            "{} recovery operations of server \"{}\" were created since this clone's request ({})",
            ids.len(),
            api.server(),
            ids.join(", ")
        )
    };
    let clone = ctx.record.id().as_str();
    let resume_with = |choice: &str| {
        crate::paste::pgreplica(&["clone", "resume", clone, "--api-operation", choice])
    };
    Error::new(
        ErrorKind::BackupApi,
        format!("cannot tell which pg-backup-api operation restores into \"{data_dir}\": {found}"),
    )
    .detail("the answer to this clone's recovery request was lost; pgreplica never posts a second recovery into the same directory blindly")
    .hint(format!(
        "on the Barman host, look for the job file <barman_home>/{}/jobs/ID.json whose destination_directory is \"{data_dir}\"; then run \"{}\" with that ID, or, if there is none, \"{}\"",
        api.server(),
        resume_with("ID"),
        resume_with("new"),
    ))
}

/// Polls the operation until DONE, showing the bytes arriving in the data directory; the
/// machine's [`Follow`] says when to give up.
async fn follow(
    ctx: &mut StepContext<'_>,
    api: &BackupApi,
    target: &ApiTarget,
    id: &str,
    expected: u64,
) -> Result<()> {
    let data_dir = PathBuf::from(&ctx.request().data_dir);
    let (bytes, _) = usage(&data_dir).await;
    ctx.progress.set_totals(expected, 0, bytes, 0);
    let timeouts = FollowTimeouts {
        start_ms: target.start_timeout_secs.max(1) * 1000,
        stall_ms: target.stall_timeout_secs.max(1) * 1000,
    };
    let poll = Duration::from_millis(target.poll_interval_ms.max(100));
    // Monotonic time for the machine: a clock stepped meanwhile must not end the wait.
    let clock = Instant::now();
    let now = || u64::try_from(clock.elapsed().as_millis()).unwrap_or(u64::MAX);
    let mut following = Follow::new(now(), bytes);
    crate::notice!(
        "waiting for pg-backup-api operation {id} (restoring about {} into \"{}\")...",
        human_bytes(expected),
        data_dir.display()
    );
    loop {
        let status = api.operation_status(id).await?;
        let (bytes, _) = usage(&data_dir).await;
        ctx.progress.set_bytes_done(bytes, 0);
        match following.poll(now(), status, bytes, timeouts) {
            FollowNext::Wait => tokio::time::sleep(crate::retry::jittered(poll, 20)).await,
            FollowNext::Done => return Ok(()),
            stop => return Err(stopped(ctx, api, id, &data_dir, stop, timeouts)),
        }
    }
}

/// The error for following that ended without DONE: `stop` is the machine's verdict; the
/// messages name the configured timeouts, which the operator can change for clones to come.
fn stopped(
    ctx: &StepContext<'_>,
    api: &BackupApi,
    id: &str,
    data_dir: &Path,
    stop: FollowNext,
    timeouts: FollowTimeouts,
) -> Error {
    let (server, clone, dir) = (api.server(), ctx.record.id().as_str(), data_dir.display());
    let resume = crate::paste::pgreplica(&["clone", "resume", clone]);
    let new = crate::paste::pgreplica(&["clone", "resume", clone, "--api-operation", "new"]);
    let (message, detail, hint) = match stop {
        FollowNext::NeverStarted { .. } => (
            format!(
                "pg-backup-api operation {id} is still IN_PROGRESS but nothing arrived in \"{dir}\" within {} s (pg_backupapi_start_timeout): its worker never started",
                timeouts.start_ms / 1000
            ),
            "pg-backup-api 2.2 creates an operation, then starts its worker (\"pg-backup-api recovery\", found on the API service's PATH); when that fails it answers HTTP 500 and the operation stays IN_PROGRESS forever, restoring nothing",
            format!(
                "on the Barman host, check that the pg-backup-api program is on the PATH of the API service and read the service's log (the job file <barman_home>/{server}/jobs/{id}.json names the operation's destination_directory); after fixing it, \"{resume}\" checks operation {id} again (a worker that was only slow has begun by then), and \"{new}\" posts a new recovery"
            ),
        ),
        FollowNext::Stalled { .. } => (
            format!(
                "pg-backup-api operation {id} is still IN_PROGRESS but nothing arrived in \"{dir}\" for {} s",
                timeouts.stall_ms / 1000
            ),
            "a worker that died leaves its operation IN_PROGRESS forever; pg-backup-api has no way to cancel it",
            format!(
                "on the Barman host, check for a running \"barman recover\" and for <barman_home>/{server}/output/{id}.json; \"{resume}\" re-attaches if the restore is alive; if it is gone, empty the data directory and run \"{new}\""
            ),
        ),
        // Wait and Done never stop following.
        FollowNext::Failed | FollowNext::Wait | FollowNext::Done => (
            format!("pg-backup-api operation {id} failed: Barman could not restore into \"{dir}\""),
            "the API reports only FAILED; Barman's messages are in the operation's output file",
            format!(
                "read \"output\" in <barman_home>/{server}/output/{id}.json on the Barman host (barman_home as in Barman's configuration, often /var/lib/barman); fix the cause, empty the data directory, then run \"{new}\""
            ),
        ),
    };
    Error::new(ErrorKind::BackupApi, message)
        .detail(detail)
        .hint(hint)
}
