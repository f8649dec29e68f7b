//! `clone start --dry-run`: every check a real run makes before it changes anything — Barman
//! reachable and the backup restorable, the source node reachable with the right settings, the
//! data directory usable — reporting every problem found, not only the first.
//!
//! It changes nothing anywhere: no files, no slots, no API operations, no store records. It
//! reuses the read-only halves of the steps, so a dry run cannot drift from what a run checks.

use crate::error::{Error, Result};
use crate::steps::fetch_params::inspect_source;
use crate::steps::prepare_dirs;
use states::{CloneRequest, Mode};
use std::path::Path;

/// Runs the checks; `Ok` when a real run would start cleanly, else the first problem (all of
/// them are logged).
pub async fn run(request: &CloneRequest) -> Result<()> {
    crate::notice!("dry run: checking, changing nothing");
    let mut problems: Vec<Error> = Vec::new();
    let mut backup = None;
    match request.mode {
        Mode::BarmanRsync => {
            let barman = crate::steps::barman_of(request)?;
            match barman.resolve_backup(&request.backup_selector).await {
                Ok(facts) => {
                    crate::info!(
                        "backup {} of server \"{}\" can be restored",
                        facts.backup_id,
                        facts.server
                    );
                    backup = Some(facts);
                }
                Err(e) => problems.push(e),
            }
            if let Err(e) = barman.show_server().await {
                problems.push(e);
            }
        }
        Mode::BackupApi => {
            // Read-only calls only: /status and the operation list; never a POST.
            if let Err(e) = crate::steps::verify_backup::verify_with_api(request).await {
                problems.push(e);
            }
        }
        Mode::BaseBackup | Mode::ReplicationConfOnly => {}
    }
    match inspect_source(request, backup.as_ref()).await {
        Ok((params, warnings)) => {
            crate::info!(
                "source node reachable (server version {})",
                params.server_version_num
            );
            for warning in warnings {
                crate::warning!("{warning}");
            }
        }
        Err(e) => problems.push(e),
    }
    if request.mode != Mode::ReplicationConfOnly {
        if let Err(e) = prepare_dirs::check_data_dir(Path::new(&request.data_dir), request.force) {
            problems.push(e);
        }
    }
    let Some(first) = problems.first().cloned() else {
        crate::notice!("dry run complete: no problems found");
        return Ok(());
    };
    for problem in problems.iter().skip(1) {
        crate::log::error(problem);
    }
    crate::notice!("dry run found {} problem(s)", problems.len());
    Err(first)
}
