//! `clone status` on a large file list: the time and peak memory of `pgreplica clone status
//! --json` for a finished clone of a backup holding [`BenchOptions::status_files`] extra files
//! (empty files in a directory of the primary's data directory, which a base backup carries
//! like any other, so the clone, its file list and its verification are real).
//!
//! Runs after the timed contenders, on the same lab: the extra files go into a second backup,
//! never into the one the contenders copy, and out of the primary again afterwards.

use std::path::Path;

use lab::clone_check;
use lab::status;

use super::process::{run_to_end, Cost};
use super::report::Summary;
use super::{Bench, BenchOptions};

/// The directory of the primary's data directory that holds the extra files.
const EXTRA_DIR: &str = "pgreplica_bench_files";

/// Files per subdirectory of [`EXTRA_DIR`], as PostgreSQL's own directories hold thousands.
const PER_DIR: u32 = 1000;

/// How many times `clone status` is timed.
const RUNS: usize = 5;

/// What `clone status` cost on the clone of the large backup.
pub(super) struct StatusFacts {
    /// Regular files in the clone's file list, as the status reports them.
    pub(super) files: u64,
    /// Median wall time of `clone status --json`, seconds.
    pub(super) median_s: f64,
    /// Largest peak resident memory over the runs, bytes.
    pub(super) peak_rss_bytes: u64,
}

impl Bench {
    /// Takes the large backup, clones it, times `clone status` on the finished clone, and
    /// removes the clone and the extra files.
    pub(super) fn status_at_scale(&self, options: &BenchOptions) -> Result<StatusFacts, String> {
        let extra = self.lab.primary_data_dir().join(EXTRA_DIR);
        make_files(&extra, options.status_files)?;
        let backup_id = self.lab.take_backup().map_err(|e| e.to_string());
        std::fs::remove_dir_all(&extra).map_err(|e| format!("rm -r {}: {e}", extra.display()))?;
        let backup_id = backup_id?;

        let dest = self.lab.new_dir("pgreplica-status");
        let log = self.work.join("status-clone.log");
        let mut clone = self.pgreplica_start(&dest, 2, &["--backup-id", &backup_id])?;
        run_to_end(&mut clone, &log)?;
        let shown = self.check_verified(&dest)?;
        let files = status::files_total(&shown)
            .ok_or_else(|| format!("the status of {} shows no file list", dest.display()))?;

        let dest_arg = dest.display().to_string();
        let mut costs: Vec<Cost> = Vec::new();
        for run in 1..=RUNS {
            let mut cmd = clone_check::pgreplica(
                &self.lab,
                &self.pgreplica,
                &["clone", "status", "--json", &dest_arg],
            );
            costs.push(run_to_end(
                &mut cmd,
                &self.work.join(format!("status-{run}.log")),
            )?);
        }
        std::fs::remove_dir_all(&dest).map_err(|e| format!("rm -r {}: {e}", dest.display()))?;
        let seconds: Vec<f64> = costs.iter().map(|c| c.seconds).collect();
        Ok(StatusFacts {
            files,
            median_s: Summary::of(&seconds).median,
            peak_rss_bytes: costs.iter().map(|c| c.peak_rss_bytes).max().unwrap_or(0),
        })
    }
}

/// `count` empty files under `dir`, [`PER_DIR`] to a subdirectory.
fn make_files(dir: &Path, count: u32) -> Result<(), String> {
    for n in 0..count {
        let sub = dir.join(format!("{:04}", n / PER_DIR));
        if n % PER_DIR == 0 {
            std::fs::create_dir_all(&sub).map_err(|e| format!("mkdir {}: {e}", sub.display()))?;
        }
        let file = sub.join(format!("{n}"));
        std::fs::File::create(&file).map_err(|e| format!("create {}: {e}", file.display()))?;
    }
    Ok(())
}
