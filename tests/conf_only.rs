//! `--replication-conf-only` end to end: a data directory restored by hand with `barman recover`
//! becomes a streaming standby once pgreplica wrote its replication configuration; a running
//! instance is refused unless --force.

mod common;

use common::{debian_lab, Bench};
use std::path::{Path, PathBuf};

/// Restores the lab's latest backup into a new directory with `barman recover` over ssh, as an
/// operator would (files owned by postgres), and returns the directory.
fn restore_by_hand(bench: &Bench, name: &str) -> PathBuf {
    let data_dir = bench.lab.new_dir(name);
    let output = bench
        .lab
        .barman([
            "recover",
            "--remote-ssh-command",
            &bench.lab.barman_remote_ssh_command(),
            bench.lab.barman_server(),
            "latest",
            &data_dir.display().to_string(),
        ])
        .unwrap();
    assert!(
        output.status.success(),
        "barman recover failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert!(data_dir.join("global/pg_control").exists());
    assert!(!data_dir.join("standby.signal").exists());
    data_dir
}

fn conf_only(bench: &Bench, conf: &Path, extra: &[&str]) -> std::process::Output {
    let mut args = bench.start_args(conf, &["--replication-conf-only"]);
    args.extend(extra.iter().map(|s| s.to_string()));
    bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>())
}

#[test]
fn conf_only_turns_a_restored_directory_into_a_streaming_standby() {
    let bench = Bench::start(debian_lab());
    let data_dir = restore_by_hand(&bench, "restored");
    // The end of the clone runs repmgr's event_notification_command once, success 1 (its
    // failure is tests/cli.rs's).
    let events = bench.lab.new_dir("events");
    let conf = bench.repmgr_conf(
        "node2",
        &data_dir,
        &format!(
            "event_notification_command='echo %n %e %s \"%d\" >> {}'\n",
            events.display()
        ),
    );
    let output = conf_only(&bench, &conf, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let notified = std::fs::read_to_string(&events).unwrap();
    let port = bench.lab.primary_port();
    assert_eq!(
        notified,
        format!("2 standby_clone 1 cloned from host 127.0.0.1, port {port}; backup method: replication configuration only; --force: N\n")
    );
    assert!(
        stderr.contains("holds a copy of the source's cluster"),
        "{stderr}"
    );
    assert!(
        stderr.contains("replication configuration written in"),
        "{stderr}"
    );
    let status = bench.status(&data_dir);
    assert_eq!(status["phase"], "done");
    let steps: Vec<&str> = status["history"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| t["step"].as_str().unwrap())
        .collect();
    assert_eq!(steps, ["fetch_params", "write_replication_conf"]);
    assert!(data_dir.join("standby.signal").exists());
    let auto_conf = std::fs::read_to_string(data_dir.join("postgresql.auto.conf")).unwrap();
    assert!(auto_conf.contains("primary_conninfo = '"), "{auto_conf}");
    let standby = bench.start_streaming_standby(&data_dir);
    bench.assert_replicates(&standby);
}

#[test]
fn conf_only_refuses_a_running_instance_unless_forced() {
    let bench = Bench::start(debian_lab());
    let data_dir = restore_by_hand(&bench, "restored");
    // Started in recovery (an empty standby.signal) but without primary_conninfo: a running
    // instance that waits for WAL it has no way to fetch.
    bench
        .lab
        .write_file_as_postgres(&data_dir.join("standby.signal"), "")
        .unwrap();
    let running = bench
        .lab
        .start_standby(&data_dir, lab::free_port())
        .unwrap();
    let conf = bench.repmgr_conf("node2", &data_dir, "");
    let output = conf_only(&bench, &conf, &[]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(13), "{stderr}");
    assert!(
        stderr.contains("PostgreSQL is running in data directory"),
        "{stderr}"
    );
    assert!(stderr.contains("-F/--force"), "{stderr}");
    let auto_conf = || std::fs::read_to_string(data_dir.join("postgresql.auto.conf")).unwrap();
    let before = auto_conf();
    assert!(!before.contains("primary_conninfo"), "{before}");

    let output = conf_only(&bench, &conf, &["--force"]);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("WARNING: PostgreSQL is running"),
        "{stderr}"
    );
    assert!(auto_conf().contains("primary_conninfo = '"));
    // At its next start the instance comes up as a streaming standby.
    running.stop().unwrap();
    let standby = bench.start_streaming_standby(&data_dir);
    bench.assert_replicates(&standby);
}
