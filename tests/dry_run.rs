//! `clone start --dry-run` against the real lab: it checks what a real run needs, reports every
//! problem (not only the first) with the first one's exit code, and changes nothing anywhere —
//! no files, no slots, no store records, no pg-backup-api operations.

mod common;

use common::{api, debian_lab, tree_digest, Bench};
use std::path::Path;

/// What a dry run must leave untouched: the clone store and the primary's slots.
fn assert_nothing_recorded(bench: &Bench) {
    let output = bench
        .command(&["clone", "status", "--json"])
        .output()
        .unwrap();
    assert!(output.status.success());
    let value: serde_json::Value = serde_json::from_slice(&output.stdout).unwrap();
    assert_eq!(value["clones"], serde_json::json!([]), "{value}");
    let slots = bench
        .lab
        .psql(
            bench.lab.primary_port(),
            "SELECT count(*) FROM pg_replication_slots WHERE slot_name LIKE 'repmgr_slot_%'",
        )
        .unwrap();
    assert_eq!(slots, "0");
}

fn dry_run(bench: &Bench, conf: &Path, extra: &[&str]) -> (Option<i32>, String, String) {
    let mut args = bench.start_args(conf, &["--dry-run"]);
    args.extend(extra.iter().map(|s| s.to_string()));
    let output = bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    (
        output.status.code(),
        String::from_utf8_lossy(&output.stdout).into_owned(),
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

#[test]
fn dry_run_of_a_sound_barman_clone_passes_every_check_and_changes_nothing() {
    let bench = Bench::start(debian_lab());
    let data_dir = bench.lab.new_dir("standby");
    let waldir = bench.lab.new_dir("standby-wal");
    let conf = bench.repmgr_conf(
        "node2",
        &data_dir,
        &format!(
            "use_replication_slots=true\n\
             pg_basebackup_options='--waldir={}'\n\
             restore_command='cp /archive/%f %p'\n",
            waldir.display()
        ),
    );
    let (code, stdout, stderr) = dry_run(&bench, &conf, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for check in [
        "Barman server",
        "backup",
        "source node",
        "data directory",
        "WAL directory",
        "free disk",
        "restore_command",
        "replication slot",
    ] {
        assert!(
            stdout.contains(&format!("  ok       {check}: ")),
            "{check} not passed:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("\"repmgr_slot_2\" would be created"),
        "{stdout}"
    );
    assert!(stdout.ends_with("0 problem(s) found\n"), "{stdout}");
    assert!(!data_dir.exists() && !waldir.exists());
    assert_nothing_recorded(&bench);
    // The lab's ssh_options and configuration choose no cipher: AES-GCM first where the CPU
    // has AES instructions, ssh's own order otherwise.
    let preferred = if pgreplica::barman::ssh::cpu_has_aes() {
        "  ok       ssh cipher: AES-GCM offered first (aes128-gcm@openssh.com)"
    } else {
        "  ok       ssh cipher: ssh's default (chacha20-poly1305 first)"
    };
    assert!(stdout.contains(preferred), "{stdout}");
    // A run shares one ssh connection (ssh_options set neither ControlMaster nor ControlPath).
    assert!(
        stdout.contains(
            "  ok       ssh connection: one multiplexed connection per run (ControlMaster=auto"
        ),
        "{stdout}"
    );
    // No --jobs given: this host's cores, at most four, and the dry run says so.
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let jobs = cores.clamp(1, states::DEFAULT_JOBS_MAX as usize);
    assert!(
        stdout.contains(&format!(
            "  ok       copy streams: {jobs} (--jobs; the default here is {jobs}: this host's cores, at most {})\n",
            states::DEFAULT_JOBS_MAX
        )),
        "{stdout}"
    );

    // ssh_options that choose a cipher and multiplexing are obeyed, and the dry run says so.
    let chosen = bench.repmgr_conf(
        "node2",
        &data_dir,
        &format!(
            "ssh_options='{} -c aes256-ctr -o ControlMaster=no'\n",
            bench.lab.ssh_options()
        ),
    );
    let (code, stdout, stderr) = dry_run(&bench, &chosen, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    assert!(
        stdout.contains("  ok       ssh cipher: as ssh_options choose\n"),
        "{stdout}"
    );
    assert!(
        stdout.contains(
            "  ok       ssh connection: as ssh_options choose (ControlMaster/ControlPath)\n"
        ),
        "{stdout}"
    );

    // pg_basebackup mode checks its own program and options, and the installation size.
    let (code, stdout, stderr) = dry_run(&bench, &conf, &["--without-barman"]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for check in ["pg_basebackup_options", "pg_basebackup", "free disk"] {
        assert!(
            stdout.contains(&format!("  ok       {check}: ")),
            "{stdout}"
        );
    }
    assert!(!data_dir.exists() && !waldir.exists());
    assert_nothing_recorded(&bench);
}

#[test]
fn dry_run_reports_every_problem_with_the_first_ones_exit_code_and_changes_nothing() {
    let bench = Bench::start(debian_lab());
    // A data directory in use by something else: not empty.
    let data_dir = bench.lab.new_dir("standby");
    bench.mkdir_as_postgres(&data_dir);
    bench
        .lab
        .write_file_as_postgres(&data_dir.join("precious"), "keep me")
        .unwrap();
    let before = tree_digest(&data_dir);
    // A WAL directory below a file cannot be created.
    let waldir = data_dir.join("precious/wal");
    let conf = bench.repmgr_conf(
        "node2",
        &data_dir,
        &format!(
            "use_replication_slots=true\n\
             pg_basebackup_options='--waldir={}'\n\
             restore_command='barman-wal-restore -U barman --port 1 127.0.0.1 pg %f %p'\n",
            waldir.display()
        ),
    );
    let (code, stdout, stderr) = dry_run(&bench, &conf, &["--backup-id", "20000101T000000"]);
    // The first problem (no such backup) decides the exit code: Barman's 19.
    assert_eq!(code, Some(19), "{stdout}{stderr}");
    let problems: Vec<&str> = stdout
        .lines()
        .filter_map(|l| l.strip_prefix("  PROBLEM  "))
        .map(|l| l.split(':').next().unwrap())
        .collect();
    assert_eq!(
        problems,
        [
            "backup",
            "data directory",
            "WAL directory",
            "restore_command"
        ],
        "{stdout}"
    );
    assert!(stdout.ends_with("4 problem(s) found\n"), "{stdout}");
    assert!(stdout.contains("  ok       source node: "), "{stdout}");
    // Each problem is said once, as an ERROR on stderr, in the report's order; the report
    // points to it; then one last ERROR with the count.
    for (n, name) in problems.iter().enumerate() {
        assert!(
            stdout.contains(&format!(
                "  PROBLEM  {name}: ERROR {} of 4 on stderr\n",
                n + 1
            )),
            "{stdout}"
        );
    }
    let errors: Vec<&str> = stderr
        .lines()
        .filter_map(|l| l.strip_prefix("ERROR: "))
        .collect();
    assert_eq!(errors.len(), 5, "{stderr}");
    assert!(errors[0].contains("20000101T000000"), "{stderr}");
    assert_eq!(
        errors[4], "dry run found 4 problem(s), each an ERROR above",
        "{stderr}"
    );
    for error in &errors[..4] {
        assert_eq!(
            stderr.matches(error).count(),
            1,
            "said twice: {error}\n{stderr}"
        );
    }
    assert_eq!(tree_digest(&data_dir), before);
    assert_nothing_recorded(&bench);
}

#[test]
fn dry_run_through_pg_backup_api_reads_only_and_reports_an_unreachable_api() {
    let bench = Bench::start(debian_lab());
    let server = api::start(&bench, &[]);
    let data_dir = bench.lab.new_dir("standby");
    let conf = api::api_conf(
        &bench,
        &server.host(),
        &data_dir,
        "use_replication_slots=true",
    );
    let (code, stdout, stderr) = dry_run(&bench, &conf, &[]);
    assert_eq!(code, Some(0), "{stdout}{stderr}");
    for check in [
        "pg-backup-api",
        "source node",
        "data directory",
        "replication slot",
    ] {
        assert!(
            stdout.contains(&format!("  ok       {check}: ")),
            "{check} not passed:\n{stdout}"
        );
    }
    assert!(stdout.ends_with("0 problem(s) found\n"), "{stdout}");
    // Read-only calls only: the API holds no operation, nothing was written anywhere.
    assert_eq!(server.job_files(), Vec::<String>::new());
    assert!(!data_dir.exists());
    assert_nothing_recorded(&bench);

    // An API that does not answer is a problem with its exit code (28), reported with the rest.
    let port = lab::free_port();
    let conf = api::api_conf(&bench, &format!("127.0.0.1:{port}"), &data_dir, "");
    let (code, stdout, stderr) = dry_run(&bench, &conf, &[]);
    assert_eq!(code, Some(28), "{stdout}{stderr}");
    assert!(stdout.contains("  PROBLEM  pg-backup-api: "), "{stdout}");
    assert!(stdout.contains("  ok       source node: "), "{stdout}");
    assert!(stdout.ends_with("1 problem(s) found\n"), "{stdout}");
    assert!(!data_dir.exists());
    assert_nothing_recorded(&bench);
}
