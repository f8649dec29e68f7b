//! Replication slots (use_replication_slots) against pg_replication_slots on the real primary:
//! the slot exists before the copy ends, an inactive one is reused, an active one is refused,
//! and the slot of an unfinished clone abandoned with `clone start --force` is dropped.

mod common;

use common::{debian_lab, spawn, wait_for_primary, wait_for_progress, Bench};
use std::process::{Child, Command, Stdio};

const SLOT: &str = "repmgr_slot_2";

/// `active` of repmgr_slot_2 on the primary: "t", "f", or "" when there is no such slot.
fn slot_active(bench: &Bench) -> String {
    bench
        .lab
        .psql(
            bench.lab.primary_port(),
            &format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{SLOT}'"),
        )
        .unwrap()
}

fn run_start(bench: &Bench, conf: &std::path::Path, extra: &[&str]) -> (Option<i32>, String) {
    let args = bench.start_args(conf, extra);
    let output = bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn slot_exists_before_the_copy_ends_and_the_standby_streams_through_it() {
    let bench = Bench::start(debian_lab());
    let data_dir = bench.lab.new_dir("standby");
    let conf = bench.repmgr_conf(
        "node2",
        &data_dir,
        "use_replication_slots=true\npg_basebackup_options='--max-rate=4M'\n",
    );
    let args = bench.start_args(&conf, &["--without-barman"]);
    let mut child = spawn(&bench, &args);
    wait_for_progress(&bench, &data_dir, &mut child, 0.2);
    // Mid-copy, the slot already holds WAL for the standby.
    assert_eq!(slot_active(&bench), "f");
    let restart_lsn_set = bench
        .lab
        .psql(
            bench.lab.primary_port(),
            &format!("SELECT restart_lsn IS NOT NULL FROM pg_replication_slots WHERE slot_name = '{SLOT}'"),
        )
        .unwrap();
    assert_eq!(restart_lsn_set, "t");
    let status = child.wait().unwrap();
    assert!(status.success(), "{}", common::stderr_of(&mut child));
    let auto_conf = std::fs::read_to_string(data_dir.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto_conf.contains(&format!("primary_slot_name = '{SLOT}'")),
        "{auto_conf}"
    );
    let standby = bench.start_streaming_standby(&data_dir);
    bench.assert_replicates(&standby);
    assert_eq!(slot_active(&bench), "t");
}

#[test]
fn inactive_slot_is_reused_and_active_slot_is_refused() {
    let bench = Bench::start(debian_lab());
    bench
        .lab
        .psql(
            bench.lab.primary_port(),
            &format!("SELECT pg_create_physical_replication_slot('{SLOT}', true)"),
        )
        .unwrap();
    let data_dir = bench.lab.new_dir("standby");
    let conf = bench.repmgr_conf("node2", &data_dir, "use_replication_slots=true\n");
    let (code, stderr) = run_start(&bench, &conf, &["--without-barman"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!("reusing inactive replication slot \"{SLOT}\"")),
        "{stderr}"
    );
    assert!(!stderr.contains("created on the upstream"), "{stderr}");
    assert_eq!(slot_active(&bench), "f");

    // Something streams from the slot now: another clone of node 2 must not take it over.
    let mut receiver = hold_slot(&bench);
    wait_for_primary(
        &bench,
        &format!("SELECT active FROM pg_replication_slots WHERE slot_name = '{SLOT}'"),
        "t",
    );
    let other = bench.lab.new_dir("other");
    let conf = bench.repmgr_conf("node2-again", &other, "use_replication_slots=true\n");
    let (code, stderr) = run_start(&bench, &conf, &["--without-barman"]);
    receiver.kill().unwrap();
    receiver.wait().unwrap();
    assert_eq!(code, Some(7), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "ERROR: replication slot \"{SLOT}\" on the upstream node is active"
        )),
        "{stderr}"
    );
    // Refused in FetchParams, before anything was copied.
    assert!(!other.exists());
}

/// pg_receivewal streaming from repmgr_slot_2, as a running standby would.
fn hold_slot(bench: &Bench) -> Child {
    let wal = bench.lab.new_dir("receivewal");
    let output = bench
        .lab
        .command_as_postgres("mkdir")
        .arg(&wal)
        .output()
        .unwrap();
    assert!(output.status.success());
    let mut command: Command = bench.lab.command_as_postgres("pg_receivewal");
    command
        .args([
            "-h",
            "127.0.0.1",
            "-p",
            &bench.lab.primary_port().to_string(),
        ])
        .args(["-U", "barman", "--slot", SLOT, "--no-loop", "-D"])
        .arg(&wal)
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    command.spawn().expect("spawn pg_receivewal")
}

#[test]
fn slot_of_an_abandoned_clone_is_dropped_by_start_force() {
    let bench = Bench::start(debian_lab());
    let data_dir = bench.lab.new_dir("standby");
    // pg_basebackup refuses this rate, after the Transfer step created the slot.
    let conf = bench.repmgr_conf(
        "node2",
        &data_dir,
        "use_replication_slots=true\npg_basebackup_options='--max-rate=1'\n",
    );
    let (code, stderr) = run_start(&bench, &conf, &["--without-barman"]);
    assert_eq!(code, Some(14), "{stderr}");
    assert_eq!(bench.status(&data_dir)["phase"], "transfer");
    assert_eq!(slot_active(&bench), "f");

    // Abandoned for a clone that does not use slots: the old slot must not hold WAL forever.
    let conf = bench.repmgr_conf("node2-noslot", &data_dir, "");
    let (code, stderr) = run_start(&bench, &conf, &["--without-barman", "--force"]);
    assert_eq!(code, Some(0), "{stderr}");
    assert!(
        stderr.contains(&format!(
            "dropped replication slot \"{SLOT}\" of the discarded clone"
        )),
        "{stderr}"
    );
    assert_eq!(slot_active(&bench), "");
}
