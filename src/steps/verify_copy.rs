//! VerifyCopy: check the data directory before declaring the copy good — against the backup's
//! `backup_manifest` with `pg_verifybackup --no-parse-wal` where there is one, and, for a
//! pg-backup-api restore without one, against what the restore must hold (`PG_VERSION`, the
//! system identifier in `global/pg_control`, a plausible size): the API reports only DONE,
//! and an API that says DONE having restored nothing must not give a "complete" clone.
//!
//! Files the copy checked against the manifest's checksums as it wrote them (recorded beside
//! their done marks in the file table) are not read again: pg_verifybackup then checks every
//! file's presence and size and the manifest's own checksum (`--skip-checksums`), and this step
//! checks the checksums of the rest — files marked done by an older pgreplica or whose check a
//! crash lost, files the copy's verifier had no room for. With no file checked during the copy
//! (a staged kind, pg-backup-api, pg_basebackup), pg_verifybackup checks everything.
//!
//! WAL is not parsed: pg_wal is empty in a restored standby (the WAL comes from Barman or the
//! primary). Files pgreplica itself writes (`tablespace_map`) are ignored; pg_verifybackup
//! already ignores postgresql.auto.conf, the signal files and pg_wal. This step writes
//! nothing into the data directory.

use crate::datadir::usage;
use crate::error::{Error, ErrorKind, Result};
use crate::progress::human_bytes;
use crate::runner::StepContext;
use crate::transfer::checksums::{manifest_path, sum_file, Checksums};
use states::{CloneRequest, ExpectedRestore, ManifestExpectation, Verification};
use std::collections::HashSet;
use std::ffi::OsStr;
use std::os::unix::ffi::OsStrExt;
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
    let checked_during_copy = ctx.store.files().checked()?;
    crate::info!(
        "verifying \"{}\" against its backup_manifest{}",
        data_dir.display(),
        if checked_during_copy.is_empty() {
            String::new()
        } else {
            format!(
                " ({} files' checksums were checked during the copy)",
                checked_during_copy.len()
            )
        }
    );
    let mut args = vec![
        OsStr::new("--no-parse-wal"),
        OsStr::new("--ignore=tablespace_map"),
    ];
    if !checked_during_copy.is_empty() {
        args.push(OsStr::new("--skip-checksums"));
    }
    args.push(data_dir.as_os_str());
    let output = crate::pg_tools::run(&program, args).await?;
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    if !output.status.success() {
        let problems: Vec<String> = stderr
            .lines()
            .filter(|l| l.contains("error"))
            .map(String::from)
            .collect();
        return Err(does_not_match(request, api_restore, &problems));
    }
    let files = count_manifest_files(&manifest).await;
    if checked_during_copy.is_empty() {
        crate::info!("{}", stdout.trim());
        return Ok(Verification::Verified { files });
    }
    let (during_copy, at_end) = check_the_rest(data_dir, &manifest, checked_during_copy)
        .await?
        .map_err(|problems| does_not_match(request, api_restore, &problems))?;
    crate::info!(
        "backup successfully verified ({during_copy} checksums checked during the copy, {at_end} now)"
    );
    Ok(Verification::VerifiedDuringCopy {
        files,
        during_copy,
        at_end,
    })
}

/// Checks the checksums of the manifest's files in `data_dir` that are not among
/// `checked_during_copy` (`(root, path)` of the file list). Returns how many were checked
/// during the copy and how many now, or the problems found, one line each as pg_verifybackup
/// writes them.
async fn check_the_rest(
    data_dir: &Path,
    manifest: &Path,
    checked_during_copy: Vec<(u32, String)>,
) -> Result<std::result::Result<(u64, u64), Vec<String>>> {
    let (data_dir, manifest) = (data_dir.to_path_buf(), manifest.to_path_buf());
    let work = move || -> Result<std::result::Result<(u64, u64), Vec<String>>> {
        let checksums = Checksums::read(&manifest)?;
        let checked: HashSet<Vec<u8>> = checked_during_copy
            .iter()
            .map(|(root, path)| manifest_path(*root, path))
            .collect();
        let (mut during_copy, mut at_end) = (0, 0);
        let mut problems = Vec::new();
        for (path, expected) in checksums.iter() {
            if checked.contains(path) {
                during_copy += 1;
                continue;
            }
            let name = String::from_utf8_lossy(path);
            let file = data_dir.join(std::ffi::OsStr::from_bytes(path));
            match sum_file(&file, expected.algorithm) {
                Ok(hex) if hex == expected.hex => at_end += 1,
                Ok(_) => problems.push(format!(
                    "pg_verifybackup: error: checksum mismatch for file \"{name}\""
                )),
                Err(e) => problems.push(format!(
                    "pg_verifybackup: error: could not read file \"{name}\": {e}"
                )),
            }
        }
        Ok(if problems.is_empty() {
            Ok((during_copy, at_end))
        } else {
            problems.sort();
            Err(problems)
        })
    };
    tokio::task::spawn_blocking(work).await.map_err(|e| {
        Error::new(
            ErrorKind::System,
            format!("the check of the copy's checksums failed: {e}"),
        )
        .hint(format!(
            "run \"{}\" to check the copy again",
            crate::paste::resume()
        ))
    })?
}

/// The error for a copy that does not match its manifest, `problems` one line each.
fn does_not_match(
    request: &CloneRequest,
    api_restore: Option<&ExpectedRestore>,
    problems: &[String],
) -> Error {
    let mismatch = format!(
        "does not match its backup manifest ({} problems)",
        problems.len()
    );
    let detail = crate::child_output::detail(&problems.join("\n"));
    match api_restore {
        Some(restore) => not_restored(request, restore, &mismatch).detail(detail),
        None => Error::new(
            ErrorKind::BaseBackup,
            format!("the copy in \"{}\" {mismatch}", request.data_dir),
        )
        .detail(detail)
        .hint(format!(
            "remove the files named above and run \"{}\"; they will be copied again",
            crate::paste::resume()
        )),
    }
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

#[cfg(test)]
mod tests {
    use crate::transfer::checksums::{Algorithm, Running};

    fn crc(bytes: &[u8]) -> String {
        let mut sum = Running::new(Algorithm::Crc32c);
        sum.update(bytes);
        sum.hex()
    }

    /// The checksums left to the end are those not checked during the copy: a damaged file
    /// checked during the copy is not read again (its check vouches for the bytes written), an
    /// unchecked one is, and is named as pg_verifybackup names it; tablespace files are matched
    /// under their manifest names.
    #[test]
    fn only_the_files_not_checked_during_the_copy_are_read_at_the_end() {
        let dir = std::env::temp_dir().join(format!("pgreplica-verify-{}", std::process::id()));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(dir.join("base/1")).unwrap();
        std::fs::create_dir_all(dir.join("pg_tblspc/16385/PG_15")).unwrap();
        let files = [
            ("PG_VERSION", &b"15\n"[..]),
            ("base/1/1259", &b"relation"[..]),
            ("pg_tblspc/16385/PG_15/1", &b"tablespace"[..]),
        ];
        let mut listed = Vec::new();
        for (path, bytes) in files {
            std::fs::write(dir.join(path), bytes).unwrap();
            listed.push(format!(
                r#"{{ "Path": "{path}", "Size": {}, "Last-Modified": "2026-11-30 10:00:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "{}" }}"#,
                bytes.len(),
                crc(bytes)
            ));
        }
        let manifest = dir.join("backup_manifest");
        std::fs::write(
            &manifest,
            format!(
                r#"{{ "PostgreSQL-Backup-Manifest-Version": 1, "Files": [{}], "WAL-Ranges": [] }}"#,
                listed.join(",\n")
            ),
        )
        .unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let check = |checked: &[(u32, &str)]| {
            let checked = checked.iter().map(|&(r, p)| (r, p.to_string())).collect();
            rt.block_on(super::check_the_rest(&dir, &manifest, checked))
                .unwrap()
        };
        assert_eq!(check(&[(16385, "PG_15/1")]), Ok((1, 2)));
        // Damaged, same size.
        std::fs::write(dir.join("base/1/1259"), b"RELATION").unwrap();
        assert_eq!(check(&[(0, "base/1/1259")]), Ok((1, 2)));
        assert_eq!(
            check(&[(0, "PG_VERSION")]),
            Err(vec![
                "pg_verifybackup: error: checksum mismatch for file \"base/1/1259\"".to_string()
            ])
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
