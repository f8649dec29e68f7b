//! The staged kinds of `cargo xtask bench`: a gzip tar backup and an incremental chain (a full
//! backup and two increments) on a PostgreSQL 18 lab with the PyPI Barman, each restored by
//! `barman restore` (what pg-backup-api and patroni_barman run: Barman decompresses and combines
//! on its host, then pushes the result over ssh) and cloned by pgreplica (staged compressed,
//! unpacked and combined on the standby's host), round-robin, with pgreplica's ratio to
//! `barman restore` of the same backup measured in the same run.
//!
//! Must not: tune either side; both run as a user would run them.

use std::path::Path;
use std::time::Instant;

use lab::clone_check;
use lab::status::{self, Phase};
use lab::{BackupFixture, BarmanFlavor, Lab, LabOptions, PgMajor, TarCompression};
use serde_json::{json, Value};

use super::contenders::step_times;
use super::process::{run_to_end, sync};
use super::report::Summary;
use super::BenchOptions;
use crate::{stage, Failure};

/// One kind's results: `barman restore` and pgreplica, in seconds per round, and pgreplica's
/// steps in its last round.
struct KindRow {
    label: &'static str,
    barman: Vec<f64>,
    pgreplica: Vec<f64>,
    steps: Vec<(String, f64)>,
}

/// The staged kinds' results.
pub(super) struct KindsReport {
    rows: Vec<KindRow>,
}

/// Runs the staged kinds' cases on a lab of their own (PostgreSQL 18, PyPI Barman, the main
/// lab's scale) with pgreplica as `built`.
pub(super) fn run(options: &BenchOptions, built: &Path) -> Result<KindsReport, Failure> {
    let lab = stage("start the PostgreSQL 18 lab of the staged kinds", || {
        Lab::start(LabOptions {
            barman: BarmanFlavor::PyPI,
            postgres: PgMajor::V18,
            ..options.lab.clone()
        })
    })?;
    let pgreplica = lab.install_binary(built);
    let cases: [(&'static str, BackupFixture); 2] = [
        (
            "tar (gzip)",
            stage("take a gzip tar backup", || {
                lab.take_tar_backup(TarCompression::Gzip)
            })?,
        ),
        (
            "incremental (full + 2)",
            stage("take an incremental chain", || {
                lab.take_incremental_chain(2)
            })?,
        ),
    ];
    let mut rows: Vec<KindRow> = cases
        .iter()
        .map(|(label, _)| KindRow {
            label,
            barman: Vec::new(),
            pgreplica: Vec::new(),
            steps: Vec::new(),
        })
        .collect();
    for round in 1..=options.repeat {
        for ((label, fixture), row) in cases.iter().zip(rows.iter_mut()) {
            let name = format!("barman restore of {label} (round {round})");
            let seconds = stage(&name, || barman_restore(&lab, fixture))?;
            eprintln!("   timed: {seconds:.2} s");
            row.barman.push(seconds);
            let name = format!("pgreplica clone of {label} (round {round})");
            let (seconds, steps) = stage(&name, || clone(&lab, &pgreplica, fixture))?;
            eprintln!("   timed: {seconds:.2} s");
            row.pgreplica.push(seconds);
            row.steps = steps;
        }
    }
    stage("stop the staged kinds' lab", || lab.stop())?;
    Ok(KindsReport { rows })
}

/// `barman restore` of `fixture` into a fresh directory, pushed over ssh: timed, checked,
/// removed.
fn barman_restore(lab: &Lab, fixture: &BackupFixture) -> Result<f64, String> {
    let dest = lab.new_dir("kind-barman-restore");
    sync()?;
    let started = Instant::now();
    lab.barman_restore(fixture, &dest)
        .map_err(|e| e.to_string())?;
    let seconds = started.elapsed().as_secs_f64();
    if !dest.join("global/pg_control").is_file() {
        return Err(format!("{} has no global/pg_control", dest.display()));
    }
    std::fs::remove_dir_all(&dest).map_err(|e| format!("rm -r {}: {e}", dest.display()))?;
    Ok(seconds)
}

/// pgreplica's clone of `fixture` into a fresh directory: timed, checked Done and verified,
/// removed. Returns the seconds and its steps' times.
fn clone(
    lab: &Lab,
    pgreplica: &Path,
    fixture: &BackupFixture,
) -> Result<(f64, Vec<(String, f64)>), String> {
    let dest = lab.new_dir("kind-pgreplica");
    let conf = lab.dir().join("kind-pgreplica.conf");
    let text = format!(
        "{}barman_server='{}'\n",
        lab.repmgr_conf(2, "node2", &dest, lab::free_port()),
        fixture.server
    );
    lab.write_file_as_postgres(&conf, &text)
        .map_err(|e| e.to_string())?;
    let mut args = lab.clone_start_args(&conf);
    args.extend(["--backup-id".to_string(), fixture.backup_id.clone()]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    sync()?;
    let log = lab.dir().join("kind-pgreplica.log");
    let seconds = run_to_end(&mut clone_check::pgreplica(lab, pgreplica, &args), &log)?.seconds;
    let status = clone_check::clone_status(lab, pgreplica, &dest)?;
    match (status::phase(&status), status::verified_files(&status)) {
        (Some(Phase::Done), Some(files)) if files > 0 => {}
        _ => {
            return Err(format!(
                "the clone in {} is not Done and verified: {}",
                dest.display(),
                status["phase"]
            ))
        }
    }
    std::fs::remove_dir_all(&dest).map_err(|e| format!("rm -r {}: {e}", dest.display()))?;
    Ok((seconds, step_times(&status)))
}

impl KindsReport {
    /// The table: per kind, the medians of both sides and pgreplica's ratio to Barman's.
    pub(super) fn table(&self) -> String {
        let mut out = String::from(
            "\nstaged kinds (PostgreSQL 18, PyPI Barman): pgreplica against barman restore of the same backup\n",
        );
        out.push_str(&format!(
            "  {:<24} {:>15} {:>11} {:>7}   pgreplica's steps\n",
            "kind", "barman restore", "pgreplica", "ratio"
        ));
        for row in &self.rows {
            let (barman, pgreplica) = (Summary::of(&row.barman), Summary::of(&row.pgreplica));
            let steps: Vec<String> = row
                .steps
                .iter()
                .map(|(step, seconds)| format!("{step} {seconds:.1} s"))
                .collect();
            out.push_str(&format!(
                "  {:<24} {:>13.2} s {:>9.2} s {:>7.2}   {}\n",
                row.label,
                barman.median,
                pgreplica.median,
                pgreplica.median / barman.median,
                steps.join(", ")
            ));
        }
        out
    }

    /// The same as JSON: per kind, both sides' samples and medians, the ratio, the steps.
    pub(super) fn json(&self) -> Value {
        Value::Array(
            self.rows
                .iter()
                .map(|row| {
                    let (barman, pgreplica) =
                        (Summary::of(&row.barman), Summary::of(&row.pgreplica));
                    json!({
                        "kind": row.label,
                        "barman_restore_seconds": row.barman,
                        "pgreplica_seconds": row.pgreplica,
                        "barman_restore_median": barman.median,
                        "pgreplica_median": pgreplica.median,
                        "ratio_to_barman_restore": pgreplica.median / barman.median,
                        "pgreplica_steps": row.steps.iter().map(|(s, t)| json!({"step": s, "seconds": t})).collect::<Vec<_>>(),
                    })
                })
                .collect(),
        )
    }
}
