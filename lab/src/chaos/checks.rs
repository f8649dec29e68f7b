//! The end of a round: the clone is Done and its history counts what the kills did
//! ([`Ledger`]), then the mode's own checks — Barman and pg-backup-api: the data directory
//! equals the reference clone's, file for file (but for the mtimes
//! [`rewritten_by_barman_recover`]), and the API holds exactly the one operation the record
//! names; pg_basebackup: [`verify_backup`], nothing [`files_not_in_manifest`], every restart
//! recorded, and optionally a standby that streams.

use std::collections::BTreeSet;
use std::path::Path;
use std::time::Duration;

use serde_json::Value;
use states::{OutcomeKind, Phase, Step};

use super::campaign::comparable_digest;
use super::ledger::Ledger;
use super::options::ChaosMode;
use super::Campaign;
use crate::clone_check::{differing_paths, rsync_temp_files, tree_digest, TreeDigest};
use crate::{exec, free_port, status, Lab};

/// rsync's protocol overhead a resumed transfer may send beyond the bytes not yet done: file
/// lists and checksums, a few bytes per file, on top of [`PROTOCOL_OVERHEAD_PER_FILE`] for each
/// file of the copy (a staged chain copies a few thousand).
pub const PROTOCOL_OVERHEAD: u64 = 64 * 1024;

/// rsync's protocol overhead per file of the copy, beyond [`PROTOCOL_OVERHEAD`].
pub const PROTOCOL_OVERHEAD_PER_FILE: u64 = 64;

/// Files `barman recover` writes anew into every restore of one backup (pg-backup-api mode),
/// with the same content but the mtime of the restore: `postgresql.conf`, which it reads,
/// checks for options to disable and writes back even when it changes nothing, and the
/// `pg_wal/archive_status/*.done` markers it creates for the WAL it copies (so that the standby
/// does not archive them again). Measured by comparing uninterrupted API clones of one backup
/// (Barman 3.4): everything else, `.barman-recover.info` included, is identical, mtimes too.
/// Only these mtimes may differ; content, size and mode are still compared.
pub fn rewritten_by_barman_recover(path: &str) -> bool {
    path == "postgresql.conf"
        || path
            .strip_prefix("pg_wal/archive_status/")
            .is_some_and(|name| name.ends_with(".done") && !name.contains('/'))
}

/// How long a basebackup round's standby may take to stream.
const STREAM_TIMEOUT: Duration = Duration::from_secs(60);

impl Campaign<'_> {
    /// The end of a round: Done, with its history accounted for, and the mode's own checks.
    pub(super) fn check(&self, data_dir: &Path, ledger: &Ledger) -> Result<(), String> {
        let status = self.status(data_dir)?;
        let mut problems = Vec::new();
        if status::phase(&status) != Some(Phase::Done) || status["running"] != false {
            problems.push(format!(
                "the clone is {} (running: {}), not Done",
                status["phase"], status["running"]
            ));
        }
        let history = status::history(&status);
        problems.extend(history_problems(history, ledger));
        let outcome = match self.options.mode {
            ChaosMode::Barman => self.check_barman(data_dir, &status, ledger),
            ChaosMode::Api => self.check_api(data_dir, &status, &ledger.abandoned),
            ChaosMode::BaseBackup => self.check_basebackup(data_dir, &status, history, ledger),
        };
        if let Err(more) = outcome {
            problems.push(more);
        }
        joined(problems)
    }

    /// Barman mode: the pinned backup, identical to the reference, no rsync temporaries, and no
    /// more bytes re-sent than were not done.
    fn check_barman(&self, data_dir: &Path, status: &Value, ledger: &Ledger) -> Result<(), String> {
        let mut problems = self.check_against_reference(data_dir, status)?;
        // The copy's summary: Transfer's, or StageBackup's for a staged kind.
        let summary = match self.options.copy_step() {
            Step::StageBackup => "staging",
            _ => "transfer",
        };
        let transfer = status::fact(status, summary);
        match (
            transfer["bytes_sent"].as_u64(),
            transfer["bytes_kept"].as_u64(),
            transfer["bytes_total"].as_u64(),
        ) {
            // What the files in flight at the last stop had received is kept, not sent again.
            (Some(sent), Some(kept), Some(total)) => {
                let not_done = total.saturating_sub(ledger.done_before_transfer_succeeded);
                let files = transfer["files"].as_u64().unwrap_or(0);
                if sent + kept > not_done + PROTOCOL_OVERHEAD + PROTOCOL_OVERHEAD_PER_FILE * files {
                    problems.push(format!(
                        "the last transfer sent {sent} bytes and kept {kept}, but only {not_done} were not done"
                    ));
                }
            }
            _ => problems.push(format!("no transfer summary in the record: {transfer}")),
        }
        joined(problems)
    }

    /// pg-backup-api mode: the pinned backup, identical to the reference, and exactly one
    /// operation, done and successful, into the data directory: the one the record holds, but
    /// for those it must show `abandoned`.
    fn check_api(
        &self,
        data_dir: &Path,
        status: &Value,
        abandoned: &[String],
    ) -> Result<(), String> {
        let mut problems = self.check_against_reference(data_dir, status)?;
        if let Err(e) = self.check_api_jobs(data_dir, status, abandoned) {
            problems.push(e);
        }
        joined(problems)
    }

    /// Exactly one recovery operation into `data_dir` finished, successfully, and it is the one
    /// the clone's record holds; every other one is among `abandoned`, never finished (no
    /// worker ever ran it), and the record shows exactly those abandoned.
    pub(super) fn check_api_jobs(
        &self,
        data_dir: &Path,
        status: &Value,
        abandoned: &[String],
    ) -> Result<(), String> {
        let jobs = self.api_jobs_into(data_dir)?;
        let api = status::backup_api(status);
        let recorded = api["operation_id"].as_str();
        let shown: Vec<&str> = api["abandoned"]
            .as_array()
            .map(|ids| ids.iter().filter_map(Value::as_str).collect())
            .unwrap_or_default();
        let (followed, others): (Vec<_>, Vec<_>) =
            jobs.iter().partition(|j| Some(j.id.as_str()) == recorded);
        let dead =
            |j: &&crate::api_server::ApiJob| j.success.is_none() && abandoned.contains(&j.id);
        let expected_shown: Vec<&str> = abandoned.iter().map(String::as_str).collect();
        match followed.as_slice() {
            [one] if one.success == Some(true)
                && others.iter().all(dead)
                && others.len() == abandoned.len()
                && shown == expected_shown =>
            {
                Ok(())
            }
            _ => Err(format!(
                "the API holds {} recovery operation(s) into {} ({jobs:?}); the record follows {recorded:?} and shows {shown:?} abandoned, where exactly one successful operation was expected besides the abandoned {abandoned:?}",
                jobs.len(),
                data_dir.display()
            )),
        }
    }

    /// What Barman and pg-backup-api rounds share: the pinned backup, a data directory equal to
    /// the reference's, no rsync temporaries. Returns the problems found.
    fn check_against_reference(
        &self,
        data_dir: &Path,
        status: &Value,
    ) -> Result<Vec<String>, String> {
        let mut problems = Vec::new();
        if status["backup_id"] != self.backup_id.as_str() {
            problems.push(format!(
                "it restored backup {}, not the pinned {}",
                status["backup_id"], self.backup_id
            ));
        }
        let digest = comparable_digest(data_dir, self.options.kind)?;
        let temps = rsync_temp_files(&digest);
        if !temps.is_empty() {
            problems.push(format!("rsync temporary files remain: {temps:?}"));
        }
        let differing = match self.options.mode {
            ChaosMode::Api => differing_paths(
                &without_recover_variance(&digest),
                &without_recover_variance(&self.reference),
            ),
            _ => differing_paths(&digest, &self.reference),
        };
        if !differing.is_empty() {
            problems.push(format!(
                "{} path(s) differ from the uninterrupted clone: {:?}",
                differing.len(),
                &differing[..differing.len().min(10)]
            ));
        }
        Ok(problems)
    }

    /// pg_basebackup mode: every restart recorded, `pg_verifybackup` passes, nothing on disk
    /// that the manifest does not list, and (optionally) the standby streams.
    fn check_basebackup(
        &self,
        data_dir: &Path,
        status: &Value,
        history: &[Value],
        ledger: &Ledger,
    ) -> Result<(), String> {
        let mut problems = Vec::new();
        let restarts = status::fact(status, "transfer")["restarts"].as_u64();
        let earlier = history
            .iter()
            .filter(|t| {
                status::is_step(&t["step"], Step::Transfer)
                    && !status::is_outcome(&t["outcome"], OutcomeKind::Succeeded)
            })
            .count() as u64;
        let stopped = ledger.transfer_stops.len() as u64 + u64::from(ledger.transfer_interrupted);
        // A fault of the source fails a pg_basebackup: the failed attempts are restarts too.
        let failed = history
            .iter()
            .filter(|t| {
                status::is_step(&t["step"], Step::Transfer)
                    && (status::is_outcome(&t["outcome"], OutcomeKind::FailedRetryable)
                        || status::is_outcome(&t["outcome"], OutcomeKind::FailedFatal))
            })
            .count() as u64;
        if restarts != Some(earlier) || earlier != stopped + failed {
            problems.push(format!(
                "the transfer records {restarts:?} restart(s), its history {earlier} earlier attempt(s), the kills stopped it {stopped} time(s) and {failed} attempt(s) failed"
            ));
        }
        if let Err(e) = verify_backup(self.lab, data_dir) {
            problems.push(e);
        }
        match files_not_in_manifest(data_dir) {
            Ok(extra) if extra.is_empty() => {}
            Ok(extra) => problems.push(format!(
                "{} file(s) the backup_manifest does not list (leftovers?): {:?}",
                extra.len(),
                &extra[..extra.len().min(10)]
            )),
            Err(e) => problems.push(e),
        }
        if problems.is_empty() && self.options.start_standby {
            if let Err(e) = self.streams(data_dir) {
                problems.push(e);
            }
        }
        joined(problems)
    }

    /// Starts `data_dir` as a standby, waits until it streams, stops it.
    fn streams(&self, data_dir: &Path) -> Result<(), String> {
        let standby = self
            .lab
            .start_standby(data_dir, free_port())
            .map_err(|e| format!("the standby does not start: {e}"))?;
        let streaming = standby
            .wait_streaming(STREAM_TIMEOUT)
            .map_err(|e| format!("the standby does not stream: {e}"));
        let stopped = standby
            .stop()
            .map_err(|e| format!("the standby does not stop: {e}"));
        streaming.and(stopped)
    }
}

/// How the history's crashes and interruptions differ from what the round's stops promise.
fn history_problems(history: &[Value], ledger: &Ledger) -> Vec<String> {
    let mut problems = Vec::new();
    let count = |outcome: OutcomeKind| {
        history
            .iter()
            .filter(|t| status::is_outcome(&t["outcome"], outcome))
            .count()
    };
    let (crashed, interrupted) = (count(OutcomeKind::Crashed), count(OutcomeKind::Interrupted));
    if crashed != ledger.in_flight.len() {
        problems.push(format!(
            "history shows {crashed} crash(es), the kills left {} step(s) in flight",
            ledger.in_flight.len()
        ));
    }
    if interrupted != ledger.interrupted as usize {
        problems.push(format!(
            "history shows {interrupted} interruption(s), SIGTERM stopped {}",
            ledger.interrupted
        ));
    }
    problems
}

/// Ok without problems, else all of them in one message.
fn joined(problems: Vec<String>) -> Result<(), String> {
    if problems.is_empty() {
        Ok(())
    } else {
        Err(problems.join("; "))
    }
}

/// A digest without the mtimes [`rewritten_by_barman_recover`] lets differ between restores.
fn without_recover_variance(digest: &TreeDigest) -> TreeDigest {
    digest
        .iter()
        .map(|(path, value)| {
            let value = if rewritten_by_barman_recover(path) {
                value.split(" mtime").next().unwrap_or(value)
            } else {
                value
            };
            (path.clone(), value.to_string())
        })
        .collect()
}

/// `pg_verifybackup DATA_DIR` as postgres, WAL parsing included: every file the manifest lists
/// is there with its size and checksum, nothing else is (but the files it ignores by design:
/// postgresql.auto.conf, standby.signal, recovery.signal, pg_wal/), and the WAL needed to reach
/// consistency is in pg_wal.
pub fn verify_backup(lab: &Lab, data_dir: &Path) -> Result<(), String> {
    let mut command = lab.command_as_postgres(lab.pg_bin().join("pg_verifybackup"));
    command.arg(data_dir);
    exec::checked(&mut command, "pg_verifybackup", Duration::from_secs(120))
        .map(drop)
        .map_err(|e| e.to_string())
}

/// Files (and symlinks) under `data_dir` that its `backup_manifest` does not list: what a killed
/// attempt may have left. Outside the manifest by design: the manifest itself, pg_wal/ (the WAL
/// streamed with the backup, checked by `pg_verifybackup`'s WAL parsing), and what pgreplica
/// writes after the copy (standby.signal; postgresql.auto.conf is listed, with the content
/// pg_basebackup wrote).
pub fn files_not_in_manifest(data_dir: &Path) -> Result<Vec<String>, String> {
    let manifest_path = data_dir.join("backup_manifest");
    let text = std::fs::read_to_string(&manifest_path)
        .map_err(|e| format!("read {}: {e}", manifest_path.display()))?;
    let manifest: Value = serde_json::from_str(&text)
        .map_err(|e| format!("{} is not JSON: {e}", manifest_path.display()))?;
    let listed: BTreeSet<&str> = manifest["Files"]
        .as_array()
        .map(|files| files.iter().filter_map(|f| f["Path"].as_str()).collect())
        .unwrap_or_default();
    if listed.is_empty() {
        return Err(format!("{} lists no file", manifest_path.display()));
    }
    let digest =
        tree_digest(data_dir).map_err(|e| format!("digest of {}: {e}", data_dir.display()))?;
    Ok(digest
        .iter()
        // Directories are not listed; tablespace links are the backup's tablespace map.
        .filter(|(path, value)| {
            let tablespace_link = value.starts_with("link ") && path.starts_with("pg_tblspc/");
            !value.starts_with("dir ") && !tablespace_link
        })
        .map(|(path, _)| path)
        .filter(|path| !listed.contains(path.as_str()))
        .filter(|path| {
            !matches!(
                path.as_str(),
                "backup_manifest" | "standby.signal" | "pg_wal"
            ) && !path.starts_with("pg_wal/")
        })
        .cloned()
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_mtimes_barman_recover_rewrites_may_differ() {
        assert!(rewritten_by_barman_recover("postgresql.conf"));
        assert!(rewritten_by_barman_recover(
            "pg_wal/archive_status/000000010000000000000004.done"
        ));
        for strict in [
            "pg_wal/000000010000000000000004",
            "pg_wal/archive_status/000000010000000000000004.ready",
            "base/1/postgresql.conf",
            "postgresql.conf.origin",
        ] {
            assert!(!rewritten_by_barman_recover(strict), "{strict}");
        }
        let digest: TreeDigest = [
            ("postgresql.conf", "file 9 600 0a mtime 5"),
            ("PG_VERSION", "file 3 600 0b mtime 5"),
        ]
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
        let cleaned = without_recover_variance(&digest);
        assert_eq!(cleaned["postgresql.conf"], "file 9 600 0a");
        assert_eq!(cleaned["PG_VERSION"], "file 3 600 0b mtime 5");
    }
}
