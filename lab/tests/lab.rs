//! Smoke tests of the loopback lab against real PostgreSQL, Barman and sshd: one lab per Barman
//! flavour, reached the way pgreplica reaches it (ssh as postgres with the lab's ssh options),
//! plus Barman pushing a restore to postgres@127.0.0.1 and the restored standby streaming.
//! They need root and the lab's prerequisites (`cargo xtask install`), and fail loudly without.

mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{assert_ok, ssh_to_barman, stop_and_check_gone, text};
use lab::{BarmanFlavor, Lab, LabOptions};

/// `key : value` lines of barman's console output (show-backup), keys trimmed.
fn fields(text: &str) -> BTreeMap<String, String> {
    text.lines()
        .filter_map(|line| line.split_once(" : "))
        .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
        .collect()
}

/// Starts a lab, then checks what pgreplica relies on: over ssh, `barman` is the flavour's and
/// shows the first backup DONE, and the catalogue has backup.info where that version keeps it.
fn check_flavour(options: LabOptions) -> Lab {
    let flavour = options.barman;
    let lab = Lab::start(options).expect("start the lab");
    eprintln!(
        "{flavour:?} lab up in {:.1?}: {:?}",
        lab.startup_time(),
        lab.startup_stages()
    );

    let version = ssh_to_barman(&lab, &["barman", "--version"]);
    assert_ok("barman --version over ssh", &version);
    assert!(
        text(&version).starts_with(flavour.version_prefix()),
        "{}",
        text(&version)
    );

    let config = lab.barman_config().display().to_string();
    let show = ssh_to_barman(
        &lab,
        &[
            "barman",
            "-c",
            &config,
            "show-backup",
            lab.barman_server(),
            "latest",
        ],
    );
    assert_ok("show-backup over ssh", &show);
    let shown = fields(&text(&show));
    assert_eq!(
        shown.get("Status").map(String::as_str),
        Some("DONE"),
        "{shown:?}"
    );
    let pg_version = shown
        .get("PostgreSQL Version")
        .expect("PostgreSQL Version shown");
    assert!(pg_version.starts_with("15"), "{pg_version}");

    let id = text(&lab.barman(["list-backups", "--minimal", "pg"]).unwrap())
        .lines()
        .next()
        .expect("a backup id")
        .to_string();
    let catalogue = lab.barman_home().join("pg");
    let info = match flavour {
        BarmanFlavor::Debian => catalogue.join(format!("base/{id}/backup.info")),
        BarmanFlavor::PyPI => catalogue.join(format!("meta/{id}-backup.info")),
    };
    let info_text =
        std::fs::read_to_string(&info).unwrap_or_else(|e| panic!("{}: {e}", info.display()));
    assert!(info_text.lines().any(|l| l == "status=DONE"), "{info_text}");
    lab
}

#[test]
fn debian_barman_lab_with_tablespace() {
    let lab = check_flavour(LabOptions {
        barman: BarmanFlavor::Debian,
        tablespace: true,
        ..LabOptions::default()
    });
    let tablespace = lab.tablespace().expect("a tablespace was asked for");
    let info = lab.barman(["show-backup", "pg", "latest"]).unwrap();
    assert_ok("show-backup", &info);
    assert!(text(&info).contains(&tablespace.name), "{}", text(&info));
    let rows = lab
        .psql(
            lab.primary_port(),
            &format!("SELECT count(*) FROM {}", tablespace.table),
        )
        .unwrap();
    assert_eq!(rows, tablespace.rows.to_string());
    stop_and_check_gone(lab);
}

#[test]
fn pypi_barman_lab() {
    let lab = check_flavour(LabOptions {
        barman: BarmanFlavor::PyPI,
        ..LabOptions::default()
    });
    // A second backup gets its own id and joins the catalogue.
    let first = text(&lab.barman(["list-backups", "--minimal", "pg"]).unwrap());
    let second = lab.take_backup().unwrap();
    assert!(!first.contains(&second), "{second} already in\n{first}");
    stop_and_check_gone(lab);
}

/// Barman reaches postgres@127.0.0.1 with `barman_remote_ssh_command()` (pg-backup-api mode):
/// it restores the backup there, and the restored directory runs as a streaming standby.
#[test]
fn barman_restores_over_remote_ssh_command_and_the_standby_streams() {
    let lab = Lab::start(LabOptions::default()).expect("start the lab");
    let target = lab.new_dir("pushed");
    let restore = lab
        .barman([
            "recover",
            "--remote-ssh-command",
            &lab.barman_remote_ssh_command(),
            "pg",
            "latest",
            &target.display().to_string(),
        ])
        .unwrap();
    assert_ok("barman recover --remote-ssh-command", &restore);
    assert!(target.join("PG_VERSION").is_file());

    // Barman leaves a plain copy with archive_command=false: make it a standby of the primary.
    let auto_conf = target.join("postgresql.auto.conf");
    let mut settings = std::fs::read_to_string(&auto_conf).unwrap();
    settings.push_str(&format!(
        "primary_conninfo = 'host=127.0.0.1 port={} user=barman application_name=pushed'\n",
        lab.primary_port()
    ));
    lab.write_file_as_postgres(&auto_conf, &settings).unwrap();
    lab.write_file_as_postgres(&target.join("standby.signal"), "")
        .unwrap();

    let standby = lab.start_standby(&target, lab::free_port()).unwrap();
    standby.wait_streaming(Duration::from_secs(60)).unwrap();
    assert_eq!(standby.psql("SELECT pg_is_in_recovery()").unwrap(), "t");
    lab.psql(
        lab.primary_port(),
        "CREATE TABLE arrived AS SELECT 42 AS answer",
    )
    .unwrap();
    lab::wait_for("row reaches the standby", Duration::from_secs(30), || {
        Ok(standby
            .psql("SELECT to_regclass('arrived') IS NOT NULL")
            .unwrap()
            == "t")
    })
    .unwrap();
    assert_eq!(standby.psql("SELECT answer FROM arrived").unwrap(), "42");
    standby.stop().unwrap();
    assert!(!target.join("postmaster.pid").exists());
    stop_and_check_gone(lab);
}
