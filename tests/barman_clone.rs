//! Barman mode end to end: a real Barman over a real sshd with real rsync, into a standby that
//! real PostgreSQL starts and that streams from the primary.

mod common;

use common::{debian_lab, Bench};

#[test]
fn clone_from_debian_barman_gives_a_streaming_standby() {
    let bench = Bench::start(debian_lab());
    let data_dir = bench.lab.new_dir("standby");
    let conf = bench.repmgr_conf("node2", &data_dir, "");
    let args = bench.start_args(&conf, &["--jobs", "2"]);
    let output = bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("NOTICE: standby clone (from Barman) complete"),
        "{stderr}"
    );
    let status = bench.status(&data_dir);
    assert_eq!(status["phase"], "Done");
    let auto_conf = std::fs::read_to_string(data_dir.join("postgresql.auto.conf")).unwrap();
    assert!(auto_conf.contains("application_name=node2"), "{auto_conf}");
    assert!(!auto_conf.contains("password"), "{auto_conf}");
    assert!(data_dir.join("standby.signal").exists());
    let standby = bench.start_streaming_standby(&data_dir);
    bench.assert_replicates(&standby);
}
