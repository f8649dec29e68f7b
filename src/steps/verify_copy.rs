//! VerifyCopy: check the data directory before declaring the copy good — against the backup's
//! `backup_manifest` with `pg_verifybackup --no-parse-wal` where there is one, and, for a
//! pg-backup-api restore without one, against what the restore must hold (`PG_VERSION`, the
//! system identifier in `global/pg_control`, a plausible size): the API reports only DONE,
//! and an API that says DONE having restored nothing must not give a "complete" clone.
//!
//! WAL is not parsed: pg_wal is empty in a restored standby (the WAL comes from Barman or the
//! primary). Files pgreplica itself writes (`tablespace_map`) are ignored; pg_verifybackup
//! already ignores postgresql.auto.conf, the signal files and pg_wal. This step writes
//! nothing into the data directory.

use crate::datadir::usage;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::human_bytes;
use crate::runner::StepContext;
use states::{CloneRequest, ExpectedRestore, ManifestExpectation, Verification};
use std::ffi::OsStr;
use std::path::Path;

/// Top-level entries of a data directory named in the evidence of a failed check.
const ENTRIES_SHOWN: usize = 8;

/// Runs the step on a copy of `version`; `expectation` says whether a manifest must be there;
/// `api_restore` is what a pg-backup-api restore must hold.
pub async fn run(
    ctx: &mut StepContext<'_>,
    expectation: ManifestExpectation,
    version: u32,
    api_restore: Option<&ExpectedRestore>,
) -> Result<Verification> {
    let request = ctx.request();
    let data_dir = Path::new(&request.data_dir);
    let manifest = data_dir.join("backup_manifest");
    let expected = match expectation {
        ManifestExpectation::Known(has_manifest) => has_manifest,
        ManifestExpectation::FromCopy => manifest.exists(),
    };
    if !expected {
        if let Some(restore) = api_restore {
            return check_restore(request, restore, version).await;
        }
        let reason = "the backup has no backup_manifest (rsync-method Barman backups have none unless \"barman generate-manifest\" was run)".to_string();
        crate::info!("skipping verification: {reason}");
        return Ok(Verification::Skipped { reason });
    }
    if !manifest.is_file() {
        return Err(Error::new(
            ErrorKind::BaseBackup,
            format!(
                "backup_manifest is missing from \"{}\" although the backup has one",
                data_dir.display()
            ),
        )
        .hint(format!(
            "resume the clone to copy it again: \"{}\"",
            crate::paste::resume()
        )));
    }
    let program = crate::pg_tools::program_of_version(
        request.pg_bindir.as_deref(),
        version,
        "pg_verifybackup",
    )
    .await?;
    crate::info!(
        "verifying \"{}\" against its backup_manifest",
        data_dir.display()
    );
    let output = crate::pg_tools::run(
        &program,
        [
            OsStr::new("--no-parse-wal"),
            OsStr::new("--ignore=tablespace_map"),
            data_dir.as_os_str(),
        ],
    )
    .await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let problems: Vec<&str> = stderr.lines().filter(|l| l.contains("error")).collect();
        let mismatch = format!(
            "does not match its backup manifest ({} problems)",
            problems.len()
        );
        let detail = crate::child_output::detail(&problems.join("\n"));
        return Err(match api_restore {
            Some(restore) => not_restored(request, restore, &mismatch).detail(detail),
            None => Error::new(
                ErrorKind::BaseBackup,
                format!("the copy in \"{}\" {mismatch}", data_dir.display()),
            )
            .detail(detail)
            .hint(format!(
                "remove the files named above and run \"{}\"; they will be copied again",
                crate::paste::resume()
            )),
        });
    }
    let files = count_manifest_files(&manifest).await;
    crate::info!("{}", stdout.trim());
    Ok(Verification::Verified { files })
}

/// A pg-backup-api restore without a manifest: `PG_VERSION` of the source's major version,
/// `global/pg_control` with the expected system identifier, at least a tenth of the known
/// size. Each failure is exit 28 with the evidence.
async fn check_restore(
    request: &CloneRequest,
    restore: &ExpectedRestore,
    version: u32,
) -> Result<Verification> {
    let data_dir = Path::new(&request.data_dir);
    crate::info!(
        "checking what pg-backup-api operation {} restored into \"{}\" (the backup has no backup_manifest)",
        restore.operation_id,
        data_dir.display()
    );
    let (bytes, files) = usage(data_dir).await;
    let holds = format!(
        "\"{}\" holds {files} files, {}{}",
        data_dir.display(),
        human_bytes(bytes),
        top_entries(data_dir)
    );
    let major = match std::fs::read_to_string(data_dir.join("PG_VERSION")) {
        Ok(text) => text.trim().to_string(),
        Err(e) => {
            return Err(not_restored(
                request,
                restore,
                &format!("holds no PostgreSQL data directory (PG_VERSION: {e})"),
            )
            .detail(holds))
        }
    };
    if major != restore.pg_major.to_string() {
        return Err(not_restored(
            request,
            restore,
            &format!(
                "holds PostgreSQL {major}, but the source node runs {}",
                restore.pg_major
            ),
        )
        .detail(holds));
    }
    if !data_dir.join("global/pg_control").is_file() {
        return Err(not_restored(
            request,
            restore,
            "lacks global/pg_control: the restore is incomplete",
        )
        .detail(holds));
    }
    let system_identifier = crate::preflight::control_system_identifier(request, version)
        .await
        .map_err(|e| not_restored(request, restore, &e.message).detail(holds.clone()))?;
    if system_identifier != restore.system_identifier {
        return Err(not_restored(
            request,
            restore,
            &format!(
                "belongs to another cluster (system identifier {system_identifier}, expected {})",
                restore.system_identifier
            ),
        )
        .detail(holds));
    }
    if !restore.size_suffices(bytes) {
        return Err(not_restored(
            request,
            restore,
            &format!(
                "holds only {}, less than a tenth of the {} known for this backup",
                human_bytes(bytes),
                human_bytes(restore.known_bytes)
            ),
        )
        .detail(holds));
    }
    crate::info!(
        "\"{}\" holds PostgreSQL {major} of system {system_identifier}, {} in {files} files",
        data_dir.display(),
        human_bytes(bytes)
    );
    Ok(Verification::Checked {
        pg_major: restore.pg_major,
        system_identifier,
        bytes,
    })
}

/// The error for a pg-backup-api restore that is not what DONE promised: exit 28, naming the
/// operation and where Barman's own account of it is.
fn not_restored(request: &CloneRequest, restore: &ExpectedRestore, what: &str) -> Error {
    let server = request
        .backup_api
        .as_ref()
        .map_or("SERVER", |api| api.node_name.as_str());
    Error::new(
        ErrorKind::BackupApi,
        format!(
            "pg-backup-api operation {} reported DONE, but \"{}\" {what}",
            restore.operation_id, request.data_dir
        ),
    )
    .hint(format!(
        "read \"output\" in <barman_home>/{server}/output/{}.json on the Barman host; empty \"{}\" and start the clone again: {}",
        restore.operation_id,
        request.data_dir,
        crate::request::start_command(request, request.config_file.as_deref(), true)
    ))
}

/// `: a, b, …` — the first top-level entries of `dir`, sorted, for the evidence.
fn top_entries(dir: &Path) -> String {
    let mut names: Vec<String> = std::fs::read_dir(dir)
        .map(|entries| {
            entries
                .flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .collect()
        })
        .unwrap_or_default();
    if names.is_empty() {
        return String::new();
    }
    names.sort();
    let more = names.len().saturating_sub(ENTRIES_SHOWN);
    names.truncate(ENTRIES_SHOWN);
    let more = if more > 0 {
        format!(" and {more} more")
    } else {
        String::new()
    };
    format!(": {}{more}", names.join(", "))
}

/// Counts the `"Path"` entries of a backup manifest (its JSON has one object per file).
async fn count_manifest_files(manifest: &Path) -> u64 {
    let text = tokio::fs::read_to_string(manifest)
        .await
        .unwrap_or_default();
    serde_json::from_str::<serde_json::Value>(&text)
        .ok()
        .and_then(|v| {
            v.get("Files")
                .and_then(|f| f.as_array())
                .map(|f| f.len() as u64)
        })
        .unwrap_or(0)
}
