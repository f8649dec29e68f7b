//! pg_basebackup mode (`--without-barman`) end to end: a standby streamed from the primary with
//! real pg_basebackup that real PostgreSQL starts and that streams; and a clone SIGKILLed in the
//! middle of the copy that restarts its transfer cleanly on resume and records the restart.

mod common;

use common::{debian_lab, kill_group, spawn, wait_for_progress, wait_until_stopped, Bench};

#[test]
fn pg_basebackup_mode_gives_a_verified_streaming_standby() {
    let bench = Bench::start(debian_lab());
    let data_dir = bench.lab.new_dir("standby");
    let waldir = bench.lab.new_dir("standby-wal");
    let conf = bench.repmgr_conf(
        "node2",
        &data_dir,
        &format!(
            "pg_basebackup_options='--waldir={} --label=pgreplica-test'\n",
            waldir.display()
        ),
    );
    let args = bench.start_args(&conf, &["--without-barman"]);
    let output = bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("NOTICE: standby clone (using pg_basebackup) complete"),
        "{stderr}"
    );
    let status = bench.status(&data_dir);
    assert_eq!(status["phase"], "done");
    assert_eq!(status["request"]["mode"], "base_backup");
    let transfer = &status["facts"]["transfer"];
    assert_eq!(transfer["restarts"], 0);
    assert!(
        transfer["bytes_total"].as_u64().unwrap() > 10 << 20,
        "{transfer}"
    );
    // pg_basebackup wrote a manifest and the copy matches it.
    assert!(
        matches!(status["facts"]["verification"]["files"].as_u64(), Some(n) if n > 0),
        "{}",
        status["facts"]["verification"]
    );
    assert_eq!(std::fs::read_link(data_dir.join("pg_wal")).unwrap(), waldir);
    let label = std::fs::read_to_string(data_dir.join("backup_label")).unwrap();
    assert!(label.contains("LABEL: pgreplica-test"), "{label}");
    let auto_conf = std::fs::read_to_string(data_dir.join("postgresql.auto.conf")).unwrap();
    assert!(auto_conf.contains("application_name=node2"), "{auto_conf}");
    let standby = bench.start_streaming_standby(&data_dir);
    bench.assert_replicates(&standby);
}

#[test]
fn killed_pg_basebackup_clone_restarts_its_transfer_and_streams() {
    let bench = Bench::start(debian_lab());
    let data_dir = bench.lab.new_dir("standby");
    // Throttled so that the kill lands in the middle of the copy.
    let conf = bench.repmgr_conf(
        "node2",
        &data_dir,
        "pg_basebackup_options='--max-rate=2M'\n",
    );
    let args = bench.start_args(&conf, &["--without-barman"]);
    let mut child = spawn(&bench, &args);
    let done = wait_for_progress(&bench, &data_dir, &mut child, 0.3);
    kill_group(&mut child);
    let status = wait_until_stopped(&bench, &data_dir);
    assert_eq!(status["phase"], "transfer", "{status}");
    // The guardian took pg_basebackup down with pgreplica: its walsender goes away.
    common::wait_for_primary(
        &bench,
        "SELECT count(*) FROM pg_stat_replication WHERE application_name = 'pgreplica'",
        "0",
    );
    // The partial copy is there (more than the 30 % seen) and incomplete.
    assert!(std::fs::read_dir(&data_dir).unwrap().count() > 0);
    assert!(done > 0);

    let output = bench.run(&["clone", "resume", &data_dir.display().to_string()]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains(
            "pg_basebackup cannot resume: restarting the transfer from the beginning (restart 1"
        ),
        "{stderr}"
    );
    let status = bench.status(&data_dir);
    assert_eq!(status["phase"], "done");
    assert_eq!(status["facts"]["transfer"]["restarts"], 1);
    let outcomes: Vec<(&str, &str)> = status["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| (t["step"].as_str().unwrap(), t["outcome"].as_str().unwrap()))
        .filter(|(step, _)| *step == "transfer")
        .collect();
    assert_eq!(
        outcomes,
        [("transfer", "crashed"), ("transfer", "succeeded")],
        "{}",
        status["history"]
    );
    let standby = bench.start_streaming_standby(&data_dir);
    bench.assert_replicates(&standby);
}
