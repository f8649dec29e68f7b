//! Transfer in pg-backup-api mode: ask the API to restore the backup into the data directory
//! (Barman pushes the files over ssh with rsync), then follow the operation to its end.
//!
//! Exactly one operation per clone — the crash-safety argument:
//! * before the POST, the server's operation list is read and its greatest id is checkpointed
//!   with the attempt ([`ApiOperation::latest_id_before`]);
//! * the id the POST answers is checkpointed at once; from then on every run re-attaches to it;
//! * a run that finds an attempt without an id (a crash between the POST and the checkpoint)
//!   lists the operations again: ids are the server's local time, so the operation this clone
//!   created is among the recoveries listed after the recorded greatest id. Exactly one →
//!   re-attach; none or several → stop and let the operator choose ([`CHOOSE_ENV`]). It never
//!   POSTs blindly: a second recovery into the same directory would race the first.
//!
//! The comparison is between the server's own ids, not with pgreplica's clock: the id is the
//! API host's local time in a time zone pgreplica does not know, and the two clocks may differ
//! by more than the few seconds that separate the operations of a busy server.
//!
//! It must not touch the data directory's contents (Barman writes them) and must not POST while
//! an attempt of this clone may have created an operation.

use crate::backup_api::{BackupApi, OperationRef, OperationStatus, PostOutcome, RecoveryRequest};
use crate::error::{Error, ErrorKind, Result};
use crate::progress::human_bytes;
use crate::runner::{now_millis, StepContext};
use states::{ApiOperation, ApiTarget, CloneRequest, TransferSummary};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

/// Test-only hook: when set to `1`, pgreplica aborts right after the POST returned an id and
/// before recording it — the crash window the resume logic must survive. Never set it outside
/// tests.
pub const CRASH_AFTER_POST_ENV: &str = "PGREPLICA_TEST_CRASH_AFTER_POST";

/// The operator's choice when a resume cannot tell which operation this clone created: an
/// operation id to re-attach to, or `new` to POST a new recovery.
pub const CHOOSE_ENV: &str = "PGREPLICA_BACKUP_API_OPERATION";

/// Recovery POSTs refused before anything was created (duplicate id in the same second,
/// connection refused) are repeated at most this many times.
const MAX_POSTS: u32 = 10;

/// The API's duplicate-id 500 clears once the server's clock passes the second.
const SAME_SECOND_WAIT: Duration = Duration::from_millis(1100);

/// Runs the transfer.
pub async fn run(ctx: &mut StepContext<'_>) -> Result<TransferSummary> {
    let target = api_target(&ctx.record.request)?.clone();
    let api = BackupApi::from_target(&target)?;
    let started = Instant::now();
    let data_dir = PathBuf::from(&ctx.record.request.data_dir);
    let bytes_at_start = dir_usage(&data_dir).await.0;
    let id = match ctx.record.api_operation.clone() {
        Some(ApiOperation {
            operation_id: Some(id),
            ..
        }) => {
            crate::notice!("re-attaching to pg-backup-api operation {id}");
            id
        }
        Some(attempt) => reattach_lost(ctx, &api, &target, &attempt).await?,
        None => post_recovery(ctx, &api, &target).await?,
    };
    follow(ctx, &api, &target, &id).await?;
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

/// The recorded API target (absent only through a bug).
pub fn api_target(request: &CloneRequest) -> Result<&ApiTarget> {
    request.backup_api.as_ref().ok_or_else(|| {
        Error::new(
            ErrorKind::Internal,
            "pg-backup-api mode without pg_backupapi_host in the clone record",
        )
    })
}

fn recovery_request(ctx: &StepContext<'_>, target: &ApiTarget) -> RecoveryRequest {
    RecoveryRequest {
        backup_id: target.backup_id.clone(),
        destination_directory: ctx.record.request.data_dir.clone(),
        remote_ssh_command: target.remote_ssh_command.clone(),
    }
}

/// Records the attempt, POSTs, records the id at once. Repeats only POSTs that certainly
/// created nothing, and POSTs whose outcome is unknown only when the list proves nothing was
/// created.
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
        ctx.record.api_operation = Some(ApiOperation {
            attempt_started_at: now_millis(),
            operation_id: None,
            latest_id_before: latest_id_before.clone(),
        });
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
            PostOutcome::NotCreated(error) if !error.retryable => {
                // Nothing was created: a resume must not hunt for an operation.
                ctx.record.api_operation = None;
                ctx.checkpoint()?;
                return Err(error);
            }
            PostOutcome::NotCreated(error) => error,
            PostOutcome::Unknown(error) => {
                crate::info!("{}", error.message);
                // The API writes the job file before it answers; a moment lets a slow server
                // finish the request the reply of which was lost.
                tokio::time::sleep(SAME_SECOND_WAIT).await;
                let created = created_since(&api.list_operations().await?, &latest_id_before);
                match created.as_slice() {
                    [] => error,
                    [one] => {
                        let id = one.id.clone();
                        record_id(ctx, &id)?;
                        crate::notice!("the reply was lost, but operation {id} is the recovery this request created");
                        return Ok(id);
                    }
                    several => return Err(cannot_tell(ctx, api, several)),
                }
            }
        };
        if posts >= MAX_POSTS {
            return Err(error);
        }
        crate::info!("{}", error.message);
        crate::info!(
            "Retrying... (no operation was created; posting again in {:.1} s)",
            SAME_SECOND_WAIT.as_secs_f32()
        );
        tokio::time::sleep(SAME_SECOND_WAIT).await;
    }
}

fn record_id(ctx: &mut StepContext<'_>, id: &str) -> Result<()> {
    if let Some(attempt) = ctx.record.api_operation.as_mut() {
        attempt.operation_id = Some(id.to_string());
    }
    ctx.checkpoint()
}

/// A run died between the POST and recording its id: find the operation it created.
async fn reattach_lost(
    ctx: &mut StepContext<'_>,
    api: &BackupApi,
    target: &ApiTarget,
    attempt: &ApiOperation,
) -> Result<String> {
    match std::env::var(CHOOSE_ENV).ok().as_deref().map(str::trim) {
        Some("new") => {
            crate::notice!("{CHOOSE_ENV}=new: posting a new recovery as the operator chose");
            return post_recovery(ctx, api, target).await;
        }
        Some(id) if !id.is_empty() => {
            // The id must exist (a 404 here names it).
            api.operation_status(id).await?;
            crate::notice!("{CHOOSE_ENV}={id}: re-attaching to the operation the operator chose");
            record_id(ctx, id)?;
            return Ok(id.to_string());
        }
        _ => {}
    }
    crate::warning!(
        "an earlier run posted a recovery but stopped before recording its operation id; looking for it"
    );
    let operations = api.list_operations().await?;
    let created = created_since(&operations, &attempt.latest_id_before);
    match created.as_slice() {
        [one] => {
            let id = one.id.clone();
            crate::notice!(
                "re-attaching to pg-backup-api operation {id}, the only recovery created on server \"{}\" since this clone's request (the API does not say which directory an operation restores into)",
                api.server()
            );
            record_id(ctx, &id)?;
            Ok(id)
        }
        several => Err(cannot_tell(ctx, api, several)),
    }
}

/// Recoveries listed after `latest_before` (all of them when the server had none before).
fn created_since(operations: &[OperationRef], latest_before: &Option<String>) -> Vec<OperationRef> {
    let mut created: Vec<OperationRef> = operations
        .iter()
        .filter(|op| op.kind == "recovery")
        .filter(|op| latest_before.as_ref().is_none_or(|before| op.id > *before))
        .cloned()
        .collect();
    created.sort_by(|a, b| a.id.cmp(&b.id));
    created
}

/// Ids are `%Y%m%dT%H%M%S`: fixed width, so string order is time order.
fn latest_id(operations: &[OperationRef]) -> Option<String> {
    operations.iter().map(|op| op.id.clone()).max()
}

fn cannot_tell(ctx: &StepContext<'_>, api: &BackupApi, candidates: &[OperationRef]) -> Error {
    let ids: Vec<&str> = candidates.iter().map(|op| op.id.as_str()).collect();
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
    Error::new(
        ErrorKind::BackupApi,
        format!(
            "cannot tell which pg-backup-api operation restores into \"{}\": {found}",
            ctx.record.request.data_dir
        ),
    )
    .detail("the earlier run stopped between posting the recovery and recording its id; pgreplica never posts a second recovery into the same directory blindly")
    .hint(format!(
        "on the Barman host, look for the job file <barman_home>/{}/jobs/<id>.json whose destination_directory is \"{}\"; then run \"{CHOOSE_ENV}=<id> pgreplica clone resume {}\", or, if there is none, \"{CHOOSE_ENV}=new pgreplica clone resume {}\"",
        api.server(),
        ctx.record.request.data_dir,
        ctx.record.id,
        ctx.record.id
    ))
}

/// Polls the operation until DONE, showing the bytes arriving in the data directory.
async fn follow(
    ctx: &mut StepContext<'_>,
    api: &BackupApi,
    target: &ApiTarget,
    id: &str,
) -> Result<()> {
    let data_dir = PathBuf::from(&ctx.record.request.data_dir);
    // The API does not say how big a backup is; the source's size is the best estimate.
    let expected = ctx
        .record
        .facts
        .backup
        .as_ref()
        .map(|b| b.size_bytes)
        .filter(|&size| size > 0)
        .or_else(|| {
            ctx.record
                .facts
                .params
                .as_ref()
                .map(|p| p.installation_size)
        })
        .unwrap_or(0);
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
        tokio::time::sleep(jittered(poll)).await;
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

/// ±20 % around `base`, so that many clones do not poll in lock-step.
fn jittered(base: Duration) -> Duration {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.subsec_nanos());
    let factor = 0.8 + 0.4 * f64::from(nanos % 1000) / 1000.0;
    base.mul_f64(factor)
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

    fn op(id: &str, kind: &str) -> OperationRef {
        OperationRef {
            id: id.to_string(),
            kind: kind.to_string(),
        }
    }

    #[test]
    fn only_recoveries_after_the_recorded_id_are_candidates() {
        let ops = [
            op("20261125T062405", "recovery"),
            op("20261125T062410", "recovery"),
            op("20261125T062411", "config_switch"),
            op("20261125T062300", "recovery"),
        ];
        let before = latest_id(&ops[..1]);
        assert_eq!(before.as_deref(), Some("20261125T062405"));
        let created = created_since(&ops, &before);
        assert_eq!(created, vec![op("20261125T062410", "recovery")]);
        // A server without operations before the POST: every recovery is a candidate.
        assert_eq!(created_since(&ops, &None).len(), 3);
    }

    #[test]
    fn jitter_stays_within_a_fifth() {
        for _ in 0..100 {
            let d = jittered(Duration::from_secs(10));
            assert!(
                d >= Duration::from_secs(8) && d <= Duration::from_secs(12),
                "{d:?}"
            );
        }
    }

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
