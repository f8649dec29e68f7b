//! `clone status` and `clone list` output: a readable summary per clone, or one line per clone
//! (the JSON document is `status_json`'s). A record that cannot be read is shown as damaged, and the others as
//! usual.
//!
//! Rendering only: the views come from the store (`StateDir::read_status`).

use crate::error::Error;
use crate::progress::human_bytes;
use crate::store::StatusView;
use states::{CloneId, Phase, Verification};
use std::io::{self, Write};
use std::path::Path;

/// One clone of the state directory as the status commands show it.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "a handful exist per command, each shown once: boxing saves nothing"
)]
pub enum Shown {
    /// A readable clone.
    Clone(StatusView),
    /// A clone whose record cannot be read (damaged, or written by another version): why.
    Damaged {
        /// The clone.
        id: CloneId,
        /// What is wrong with its record, and how to get rid of it.
        error: Error,
    },
}

fn phase_name(view: &StatusView) -> String {
    match view.record.phase() {
        Phase::At(step) => step.name().to_string(),
        Phase::Done => "Done".to_string(),
    }
}

/// Writes a readable summary of each clone; with none, says which state directory is empty.
pub fn write_text(shown: &[Shown], state_dir: &Path, out: &mut dyn Write) -> io::Result<()> {
    if shown.is_empty() {
        return no_clones(state_dir, out);
    }
    for (index, shown) in shown.iter().enumerate() {
        if index > 0 {
            writeln!(out)?;
        }
        match shown {
            Shown::Clone(view) => write_one(view, out)?,
            Shown::Damaged { id, error } => {
                writeln!(out, "Clone {id}  DAMAGED")?;
                writeln!(out, "  error:      {}", error.full_message())?;
                if let Some(hint) = &error.hint {
                    writeln!(out, "  hint:       {hint}")?;
                }
            }
        }
    }
    Ok(())
}

/// Writes one line per clone: id, where it stands, whether it runs, mode, data directory.
pub fn write_list(shown: &[Shown], state_dir: &Path, out: &mut dyn Write) -> io::Result<()> {
    if shown.is_empty() {
        return no_clones(state_dir, out);
    }
    for shown in shown {
        match shown {
            Shown::Clone(view) => {
                let record = &view.record;
                writeln!(
                    out,
                    "{:<24} {:<21} {:<16} {:<31} {}",
                    record.id(),
                    phase_name(view),
                    activity(view),
                    record.request().mode.label(),
                    record.request().data_dir
                )?;
            }
            Shown::Damaged { id, error } => {
                writeln!(out, "{id:<24} DAMAGED               {}", error.message)?;
            }
        }
    }
    Ok(())
}

/// pg-backup-api mode: the clone's operation, those it abandoned, the operator's pending word.
fn write_api_operation(record: &states::CloneRecord, out: &mut dyn Write) -> io::Result<()> {
    let abandoned = match record.api_abandoned() {
        [] => String::new(),
        ids => format!(" (abandoned: {})", ids.join(", ")),
    };
    match record.api_operation() {
        Some(op) => match &op.operation_id {
            Some(id) => writeln!(out, "  operation:  pg-backup-api {id}{abandoned}")?,
            None => writeln!(
                out,
                "  operation:  pg-backup-api, requested but its id not recorded{abandoned}"
            )?,
        },
        None if !abandoned.is_empty() => writeln!(out, "  operation:  none{abandoned}")?,
        None => {}
    }
    if let Some(choice) = record.api_choice() {
        writeln!(
            out,
            "  operator:   --api-operation {choice} (recorded; the Transfer step acts on it)"
        )?;
    }
    Ok(())
}

fn no_clones(state_dir: &Path, out: &mut dyn Write) -> io::Result<()> {
    writeln!(
        out,
        "no clones in the state directory \"{}\" (another one is chosen with --state-dir or PGREPLICA_STATE_DIR)",
        state_dir.display()
    )
}

/// Running (with its pid), complete, or stopped.
fn activity(view: &StatusView) -> String {
    match (view.running, view.pid) {
        (true, Some(pid)) => format!("running pid {pid}"),
        (true, None) => "running".to_string(),
        (false, _) if view.record.phase() == Phase::Done => "complete".to_string(),
        (false, _) => "stopped".to_string(),
    }
}

fn write_one(view: &StatusView, out: &mut dyn Write) -> io::Result<()> {
    let record = &view.record;
    writeln!(
        out,
        "Clone {}  \"{}\"  ({})",
        record.id(),
        record.request().data_dir,
        record.request().mode.label()
    )?;
    let activity = match activity(view) {
        stopped if stopped == "stopped" => format!(
            "stopped; resume with \"{}\"",
            crate::paste::pgreplica(&["clone", "resume", record.id().as_str()])
        ),
        other => other,
    };
    writeln!(out, "  state:      {} ({activity})", phase_name(view))?;
    if let Some(backup) = &record.facts().backup {
        writeln!(
            out,
            "  backup:     {} of server \"{}\" ({}, PostgreSQL {})",
            backup.backup_id,
            backup.server,
            human_bytes(backup.size_bytes),
            crate::progress::pg_version(backup.pg_version)
        )?;
    }
    write_api_operation(record, out)?;
    if let Some(live) = &view.live {
        // The figures of the progress lines: bytes in flight counted, files when the step
        // counts them (pg_basebackup does not say).
        writeln!(
            out,
            "  progress:   {}: {}",
            live.step,
            crate::progress::figures(live)
        )?;
    } else if let Some(files) = view.files.filter(|f| f.files_total > 0) {
        writeln!(
            out,
            "  copied:     {} of {} in complete files, {} of {} files",
            human_bytes(files.bytes_done),
            human_bytes(files.bytes_total),
            files.files_done,
            files.files_total
        )?;
    }
    if let Some(verification) = &record.facts().verification {
        match verification {
            Verification::Verified { files } => {
                writeln!(
                    out,
                    "  verified:   {files} files against backup_manifest (every file but the manifest itself)"
                )?
            }
            Verification::Checked {
                pg_major,
                system_identifier,
                bytes,
            } => writeln!(
                out,
                "  verified:   PostgreSQL {pg_major} of system {system_identifier}, {} (no backup_manifest)",
                human_bytes(*bytes)
            )?,
            Verification::VerifiedDuringCopy {
                files,
                during_copy,
                at_end,
            } => writeln!(
                out,
                "  verified:   {files} files against backup_manifest ({during_copy} checksums checked during the copy, {at_end} at the end)"
            )?,
            Verification::Skipped { reason } => writeln!(out, "  verified:   skipped: {reason}")?,
        }
    }
    if let Some(error) = &record.last_error() {
        writeln!(
            out,
            "  last error: {} (exit {}, attempt {})",
            error.message,
            error.exit_code,
            record.attempts()
        )?;
        if let Some(hint) = &error.hint {
            writeln!(out, "  hint:       {hint}")?;
        }
    }
    writeln!(out, "  history:")?;
    for transition in record.history() {
        let seconds = transition.ended_at.saturating_sub(transition.started_at) as f64 / 1000.0;
        writeln!(
            out,
            "    {}  {:<21} {:>8.1} s  {}{}",
            utc_timestamp(transition.started_at),
            transition.step.name(),
            seconds,
            transition.outcome.label(),
            transition
                .message
                .as_ref()
                .map(|m| format!(": {m}"))
                .unwrap_or_default()
        )?;
    }
    Ok(())
}

/// `YYYY-MM-DD HH:MM:SS UTC` for milliseconds since the epoch.
pub fn utc_timestamp(millis: u64) -> String {
    let (year, month, day, hour, minute, second) = civil(millis);
    format!("{year:04}-{month:02}-{day:02} {hour:02}:{minute:02}:{second:02} UTC")
}

/// RFC 3339 in UTC, to the millisecond (`2026-11-30T14:21:01.250Z`), for the JSON documents.
pub fn rfc3339(millis: u64) -> String {
    let (year, month, day, hour, minute, second) = civil(millis);
    format!(
        "{year:04}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{:03}Z",
        millis % 1000
    )
}

/// The UTC civil date and time of milliseconds since the epoch (civil-from-days, no time zone
/// database needed).
fn civil(millis: u64) -> (i64, i64, i64, u64, u64, u64) {
    let secs = millis / 1000;
    let days = (secs / 86_400) as i64;
    let rem = secs % 86_400;
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month, day, rem / 3600, rem % 3600 / 60, rem % 60)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_utc_civil_dates() {
        assert_eq!(utc_timestamp(0), "1970-01-01 00:00:00 UTC");
        assert_eq!(utc_timestamp(1_795_000_000_000), "2026-11-18 11:06:40 UTC");
        assert_eq!(utc_timestamp(951_782_400_000), "2000-02-29 00:00:00 UTC");
        assert_eq!(rfc3339(1_795_000_000_250), "2026-11-18T11:06:40.250Z");
    }
}
