//! Barman mode end to end: a real Barman over a real sshd with real rsync, into a standby that
//! real PostgreSQL starts and that streams from the primary.

mod common;

use common::{debian_lab, Bench};

#[test]
fn clone_from_debian_barman_gives_a_streaming_standby() {
    let bench = Bench::start(debian_lab());
    let data_dir = bench.lab.new_dir("standby");
    let conf = bench.repmgr_conf("node2", &data_dir, "");
    // The standby must stream through --upstream-conninfo, not through the address pgreplica
    // reaches the source at (127.0.0.1, as barman): the primary's Unix socket, as postgres.
    // repmgr ignores an application_name there: the standby's stays its node_name.
    let socket = bench.lab.dir().join("run");
    let upstream = format!(
        "host={} user=postgres application_name=other",
        socket.display()
    );
    let args = bench.start_args(&conf, &["--jobs", "2", "--upstream-conninfo", &upstream]);
    let mut dry = args.clone();
    dry.push("--dry-run".into());
    let output = bench.run(&dry.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    let report = String::from_utf8_lossy(&output.stdout);
    let line = report
        .lines()
        .find(|l| l.trim_start().starts_with("ok       primary_conninfo: "))
        .unwrap_or_else(|| panic!("{report}"));
    let given_host = format!("host={}", socket.display());
    for part in [
        given_host.as_str(),
        "user=postgres",
        "application_name=node2",
    ] {
        assert!(line.contains(part), "{part} not in {line}");
    }
    assert!(
        !line.contains("127.0.0.1") && !line.contains("other"),
        "{line}"
    );
    let output = bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("NOTICE: standby clone (from Barman) complete"),
        "{stderr}"
    );
    // The run closed its store (sled's snapshot made current) without a hitch.
    assert!(!stderr.contains("WARNING: cannot open clone"), "{stderr}");
    common::assert_verified_once(&stderr, &data_dir);
    let status = bench.status(&data_dir);
    assert_eq!(status["phase"], "done");
    assert_eq!(
        status["request"]["upstream_conninfo"],
        format!("host={} user=postgres", socket.display())
    );
    let auto_conf = std::fs::read_to_string(data_dir.join("postgresql.auto.conf")).unwrap();
    let primary_conninfo = auto_conf
        .lines()
        .find(|l| l.starts_with("primary_conninfo = "))
        .unwrap_or_else(|| panic!("{auto_conf}"));
    for part in [
        given_host.as_str(),
        "user=postgres",
        "application_name=node2",
    ] {
        assert!(
            primary_conninfo.contains(part),
            "{part} not in {primary_conninfo}"
        );
    }
    assert!(
        !primary_conninfo.contains("127.0.0.1") && !primary_conninfo.contains("other"),
        "{primary_conninfo}"
    );
    assert!(!auto_conf.contains("password"), "{auto_conf}");
    assert!(data_dir.join("standby.signal").exists());

    // --force into the finished directory, changed meanwhile: extraneous files go, missing and
    // changed ones come back, and the result is the same directory again.
    let before = common::tree_digest(&data_dir);
    std::fs::write(data_dir.join("base/1/junk"), b"not in the backup").unwrap();
    std::fs::remove_file(data_dir.join("PG_VERSION")).unwrap();
    let second = bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&second.stderr);
    assert_eq!(second.status.code(), Some(13), "{stderr}");
    assert!(stderr.contains("exists but is not empty"), "{stderr}");
    assert!(
        stderr.contains("HINT: empty it, or run clone start with -F/--force"),
        "{stderr}"
    );
    let mut forced = args.clone();
    forced.push("--force".into());
    let output = bench.run(&forced.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(stderr.contains("not in backup"), "{stderr}");
    let after = common::tree_digest(&data_dir);
    let changed: Vec<_> = before
        .iter()
        .filter(|(path, value)| {
            after.get(*path).map(|v| v.split(" mtime").next()) != Some(value.split(" mtime").next())
        })
        .map(|(path, _)| path.clone())
        .chain(after.keys().filter(|p| !before.contains_key(*p)).cloned())
        .collect();
    assert!(changed.is_empty(), "--force result differs in {changed:?}");

    let standby = bench.start_streaming_standby(&data_dir);
    bench.assert_replicates(&standby);
    // It streams as the given conninfo says: over the socket (no client address), as postgres.
    let walsender = bench
        .lab
        .psql(
            bench.lab.primary_port(),
            "SELECT usename || ' ' || (client_addr IS NULL)::text FROM pg_stat_replication WHERE application_name = 'node2'",
        )
        .unwrap();
    assert_eq!(walsender.trim(), "postgres true");
}

#[test]
fn clone_from_pypi_barman_with_tablespace_waldir_and_restore_command() {
    let bench = Bench::start(lab::LabOptions {
        barman: lab::BarmanFlavor::PyPI,
        tablespace: true,
        ..lab::LabOptions::default()
    });
    let tablespace = bench.lab.tablespace().expect("lab tablespace").clone();
    let data_dir = bench.lab.new_dir("standby");
    let waldir = bench.lab.new_dir("standby-wal");
    let tablespace_target = bench.lab.new_dir("standby-tbs1");
    // A command whose program exists: pgreplica tests restore_command before copying, and a
    // barman-wal-restore here could not pass its --test (no ssh key of postgres's own reaches
    // the lab's sshd). The standby streams; the archive is never needed.
    let restore_command = format!("cp {}/%f %p", bench.lab.dir().join("archive").display());
    let conf = bench.repmgr_conf(
        "node2",
        &data_dir,
        &format!(
            "pg_basebackup_options='--waldir={}'\n\
             tablespace_mapping='{}={}'\n\
             restore_command='{restore_command}'\n",
            waldir.display(),
            tablespace.location.display(),
            tablespace_target.display()
        ),
    );
    let args = bench.start_args(&conf, &["--jobs", "3"]);
    let output = bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    // The tablespace's files were checked during the copy too, under their manifest names.
    common::assert_verified_once(&stderr, &data_dir);

    // pg_wal is a link to the WAL directory, the tablespace went to its mapped target.
    assert_eq!(std::fs::read_link(data_dir.join("pg_wal")).unwrap(), waldir);
    let status = bench.status(&data_dir);
    let oid = status["facts"]["backup"]["tablespaces"][0]["oid"]
        .as_u64()
        .expect("the backup's tablespace");
    assert_eq!(
        std::fs::read_link(data_dir.join("pg_tblspc").join(oid.to_string())).unwrap(),
        tablespace_target
    );
    let map = std::fs::read_to_string(data_dir.join("tablespace_map")).unwrap();
    assert_eq!(map, format!("{oid} {}\n", tablespace_target.display()));
    assert!(std::fs::read_dir(&tablespace_target).unwrap().count() > 0);
    let auto_conf = std::fs::read_to_string(data_dir.join("postgresql.auto.conf")).unwrap();
    assert!(
        auto_conf.contains(&format!("restore_command = '{restore_command}'")),
        "{auto_conf}"
    );
    let verification = &status["facts"]["verification"];
    assert!(
        matches!(verification["files"].as_u64(), Some(n) if n > 0),
        "{verification}"
    );
    // The JSON counts what the log said: most checksums checked during the copy.
    let (during, at_end) = (
        verification["checked_during_copy"].as_u64().unwrap(),
        verification["checked_at_end"].as_u64().unwrap(),
    );
    assert!(during > at_end, "{verification}");

    let standby = bench.start_streaming_standby(&data_dir);
    bench.assert_replicates(&standby);
    let rows = standby
        .psql(&format!("SELECT count(*) FROM {}", tablespace.table))
        .unwrap();
    assert_eq!(rows.trim(), tablespace.rows.to_string());
}

/// A file damaged in the catalogue (its size kept: only the manifest's checksum can tell) is
/// caught during the copy by either engine — rsync's verifier reading it back, the streaming
/// engine as it arrives — with the same error, and a resume, which sends it again, finds it
/// damaged again.
#[test]
fn a_damaged_file_in_the_backup_is_caught_during_the_copy_by_either_engine() {
    let bench = Bench::start(debian_lab());
    let backup_id = bench.lab.take_backup().unwrap();
    let victim = bench
        .lab
        .barman_home()
        .join(format!("pg/base/{backup_id}/data/PG_VERSION"));
    let mut bytes = std::fs::read(&victim).unwrap();
    bytes[0] = if bytes[0] == b'9' { b'8' } else { b'9' };
    std::fs::write(&victim, &bytes).unwrap();

    for engine in ["rsync", "stream"] {
        let data_dir = bench.lab.new_dir(&format!("standby-{engine}"));
        let conf = bench.repmgr_conf("node2", &data_dir, "");
        let args = bench.start_args(&conf, &["--backup-id", &backup_id]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let env = [("PGREPLICA_COPY_ENGINE", engine)];
        let dir_arg = data_dir.display().to_string();
        let resume = ["clone", "resume", dir_arg.as_str()];
        for (run, args) in [("start", &args[..]), ("resume", &resume[..])] {
            let output = bench.run_with_env(args, &env);
            let stderr = String::from_utf8_lossy(&output.stderr);
            assert_eq!(output.status.code(), Some(14), "{engine} {run}: {stderr}");
            assert!(
                stderr.contains(
                    "ERROR: the copy of \"PG_VERSION\" does not match its backup manifest"
                ),
                "{engine} {run}: {stderr}"
            );
            assert!(
                stderr.contains("HINT: the backup is damaged on the Barman host: clone from another backup with --backup-id"),
                "{engine} {run}: {stderr}"
            );
            let status = bench.status(&data_dir);
            assert_eq!(status["phase"], "transfer", "{engine} {run}");
            assert_eq!(status["last_error"]["exit_code"], 14);
            // The damaged file is not left in place as if it were the backup's.
            assert!(!data_dir.join("PG_VERSION").exists(), "{engine} {run}");
            assert!(!data_dir.join("standby.signal").exists());
        }
    }
}
