//! VerifyCopy: check the data directory against the backup's `backup_manifest` with
//! `pg_verifybackup --no-parse-wal` before declaring the copy good.
//!
//! WAL is not parsed: pg_wal is empty in a restored standby (the WAL comes from Barman or the
//! primary). Files pgreplica itself writes (`tablespace_map`) are ignored; pg_verifybackup
//! already ignores postgresql.auto.conf, the signal files and pg_wal.

use crate::error::{Error, ErrorKind, Result};
use crate::pg_tools::pg_program;
use crate::runner::StepContext;
use states::{ManifestExpectation, Verification};
use std::ffi::OsStr;
use std::path::Path;

/// Runs the step on a copy of `version`; `expectation` says whether a manifest must be there.
pub async fn run(
    ctx: &mut StepContext<'_>,
    expectation: ManifestExpectation,
    version: u32,
) -> Result<Verification> {
    let request = ctx.request();
    let data_dir = Path::new(&request.data_dir);
    let manifest = data_dir.join("backup_manifest");
    let expected = match expectation {
        ManifestExpectation::Known(has_manifest) => has_manifest,
        ManifestExpectation::FromCopy => manifest.exists(),
    };
    if !expected {
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
    let program = pg_program(request.pg_bindir.as_deref(), version, "pg_verifybackup");
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
        return Err(Error::new(
            ErrorKind::BaseBackup,
            format!(
                "the copy in \"{}\" does not match its backup manifest ({} problems)",
                data_dir.display(),
                problems.len()
            ),
        )
        .detail(crate::child_output::detail(&problems.join("\n")))
        .hint(format!(
            "remove the files named above and run \"{}\"; they will be copied again",
            crate::paste::resume()
        )));
    }
    let files = count_manifest_files(&manifest).await;
    crate::info!("{}", stdout.trim());
    Ok(Verification::Verified { files })
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
