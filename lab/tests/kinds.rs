//! The lab's backup fixtures against real PostgreSQL (15 and 18), the PyPI Barman 3.19 and
//! sshd: tar backups of every compression, a PostgreSQL 18 incremental chain and an encrypted
//! backup, each with a tablespace. For each fixture: the backup is DONE and of its kind
//! (backup.info and the files in the catalogue), `barman restore` of it gives a directory that
//! PostgreSQL of that major starts, and that standby streams from the primary. One lab per
//! test (the tar backups share one), each stopped with nothing left behind.
//! They need root and the lab's prerequisites (`cargo xtask install`), and fail loudly without.

mod common;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Instant;

use common::{assert_ok, ssh_to_barman, stop_and_check_gone, text};
use lab::{
    BackupFixture, BackupInfo, BackupKind, BarmanFlavor, Lab, LabOptions, PgMajor, Restored,
    TarCompression, NOISE_MB, NOISE_TABLE, PG18_BIN, PG18_HOME, WRITES_TABLE,
};

/// A PyPI-Barman lab with a tablespace on PostgreSQL `major`.
fn start_lab(major: PgMajor) -> Lab {
    let lab = Lab::start(LabOptions {
        barman: BarmanFlavor::PyPI,
        tablespace: true,
        postgres: major,
        ..LabOptions::default()
    })
    .unwrap_or_else(|e| panic!("cannot stand up the lab: {e}"));
    eprintln!(
        "PostgreSQL {} lab up in {:.1?}: {:?}",
        major.number(),
        lab.startup_time(),
        lab.startup_stages()
    );
    lab
}

/// The fields every fixture's backup.info must show, plus `expected` (key, value) pairs.
#[track_caller]
fn assert_info(lab: &Lab, fixture: &BackupFixture, id: &str, expected: &[(&str, &str)]) {
    let info = lab.backup_info(&fixture.server, id).unwrap();
    let version = format!("{}", fixture.major.number());
    for (key, value) in [
        ("status", "DONE"),
        ("mode", "postgres"),
        ("server_name", fixture.server.as_str()),
    ]
    .iter()
    .chain(expected)
    {
        assert_eq!(info.get(key), Some(*value), "{key} of {id}: {info:?}");
    }
    let pg_version = info.get("version").unwrap_or_default();
    assert!(
        pg_version.starts_with(&version) && pg_version.len() == 6,
        "version {pg_version} of {id}, expected {version}xxxx"
    );
    let tablespace = fixture.tablespace.as_ref().expect("the lab's tablespace");
    let tablespaces = info.value("tablespaces").unwrap_or_default();
    assert!(
        tablespaces.contains(&format!("'{}'", tablespace.name)),
        "tablespaces of {id}: {tablespaces}"
    );
}

/// The tablespace's oid on the primary (the name of its archive or directory in a backup).
fn tablespace_oid(lab: &Lab, name: &str) -> String {
    lab.psql(
        lab.primary_port(),
        &format!("SELECT oid FROM pg_tablespace WHERE spcname = '{name}'"),
    )
    .unwrap()
}

/// How many members the tar archive at `path`, compressed with `compression`, holds.
fn tar_members(path: &Path, compression: TarCompression) -> usize {
    let decompress: &[&str] = match compression {
        TarCompression::Gzip => &["--gzip"],
        TarCompression::Lz4 => &["--use-compress-program", "lz4"],
        TarCompression::Zstd => &["--zstd"],
        TarCompression::None => &[],
    };
    let out = Command::new("/usr/bin/tar")
        .args(decompress)
        .arg("-tf")
        .arg(path)
        .output()
        .unwrap();
    assert_ok(&format!("tar -tf {}", path.display()), &out);
    text(&out).lines().count()
}

/// What `file --brief` says of `path` (the test Barman uses to recognise encrypted files).
fn file_type(path: &Path) -> String {
    let out = Command::new("/usr/bin/file")
        .arg("--brief")
        .arg(path)
        .output()
        .unwrap();
    assert_ok("file --brief", &out);
    text(&out).trim().to_string()
}

fn size(path: &Path) -> u64 {
    std::fs::metadata(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()))
        .len()
}

/// Restores `fixture` with `barman restore`, checks the directory is of its major with the
/// tablespace linked to its new place, starts it as a standby of that major, checks it streams
/// and holds the lab's data, and stops it again.
fn restore_and_stream(lab: &Lab, fixture: &BackupFixture, name: &str) -> Restored {
    let began = Instant::now();
    let restored = lab
        .barman_restore(fixture, &lab.new_dir(name))
        .unwrap_or_else(|e| panic!("barman restore of {name}: {e}"));
    let restored_in = began.elapsed();
    let dir = &restored.data_dir;
    assert_eq!(
        PgMajor::of_data_dir(dir).unwrap(),
        fixture.major,
        "{}",
        dir.display()
    );
    let tablespace = fixture.tablespace.as_ref().unwrap();
    let [(tbs_name, tbs_dir)] = restored.tablespaces.as_slice() else {
        panic!("one tablespace relocated: {:?}", restored.tablespaces)
    };
    assert_eq!(tbs_name, &tablespace.name);
    let link = dir
        .join("pg_tblspc")
        .join(tablespace_oid(lab, &tablespace.name));
    assert_eq!(
        std::fs::read_link(&link).unwrap(),
        *tbs_dir,
        "{}",
        link.display()
    );
    assert_ne!(tbs_dir, &tablespace.location);

    let began = Instant::now();
    let standby = lab
        .start_restored_standby(dir)
        .unwrap_or_else(|e| panic!("standby from the restore of {name}: {e}"));
    eprintln!(
        "{name}: barman restore {restored_in:.1?}, standby streaming after {:.1?}",
        began.elapsed()
    );
    assert_eq!(standby.major(), fixture.major);
    assert_eq!(standby.psql("SELECT pg_is_in_recovery()").unwrap(), "t");
    let version = standby.psql("SHOW server_version_num").unwrap();
    assert!(
        version.starts_with(&fixture.major.number().to_string()),
        "{version}"
    );
    assert_eq!(
        standby
            .psql(&format!("SELECT count(*) FROM {}", tablespace.table))
            .unwrap(),
        tablespace.rows.to_string()
    );
    assert_eq!(
        standby
            .psql(&format!(
                "SELECT sum(length(payload)) / 1048576 FROM {NOISE_TABLE}"
            ))
            .unwrap(),
        NOISE_MB.to_string()
    );
    standby.stop().unwrap();
    restored
}

/// Every file under `dir` whose name starts with `prefix`, with its size.
fn files_named(dir: &Path, prefix: &str) -> Vec<(PathBuf, u64)> {
    let mut found = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(dir) = pending.pop() {
        for entry in std::fs::read_dir(&dir).unwrap().flatten() {
            let path = entry.path();
            let meta = std::fs::symlink_metadata(&path).unwrap();
            if meta.is_dir() {
                pending.push(path);
            } else if entry.file_name().to_string_lossy().starts_with(prefix) {
                found.push((path, meta.len()));
            }
        }
    }
    found
}

#[test]
fn tar_backups_of_every_compression_restore_and_stream() {
    let lab = start_lab(PgMajor::V15);
    let tablespace = lab.tablespace().unwrap().clone();
    let oid = tablespace_oid(&lab, &tablespace.name);
    for compression in TarCompression::ALL {
        let name = compression.name();
        let began = Instant::now();
        let fixture = lab
            .take_tar_backup(compression)
            .unwrap_or_else(|e| panic!("{name} tar backup: {e}"));
        eprintln!(
            "{name}: backup {} in {:.1?}",
            fixture.backup_id,
            began.elapsed()
        );
        assert_eq!(fixture.kind, BackupKind::Tar(compression));
        assert_eq!(fixture.server, "tar");
        assert_eq!(fixture.chain, std::slice::from_ref(&fixture.backup_id));
        assert_eq!(fixture.config, lab.barman_config());
        assert_eq!(fixture.primary_port, lab.primary_port());
        assert_info(
            &lab,
            &fixture,
            &fixture.backup_id,
            &[
                ("compression", name),
                ("parent_backup_id", "None"),
                ("encryption", "None"),
            ],
        );

        let data = lab
            .backup_directory(&fixture.server, &fixture.backup_id)
            .join("data");
        let suffix = compression.suffix();
        let base = data.join(format!("base.tar{suffix}"));
        let tablespace_tar = data.join(format!("{oid}.tar{suffix}"));
        // Incompressible data keeps a file of several MB in every archive, for mid-file kills.
        assert!(
            size(&base) > u64::from(NOISE_MB - 1) << 20,
            "{name}: {} is {} bytes",
            base.display(),
            size(&base)
        );
        let members = tar_members(&base, compression);
        assert!(members > 500, "{name}: {}", base.display());
        eprintln!(
            "{name}: base.tar{suffix} {} bytes, {members} members",
            size(&base)
        );
        assert!(tar_members(&tablespace_tar, compression) >= 1, "{name}");
        let manifest = std::fs::read_to_string(data.join("backup_manifest")).unwrap();
        assert!(
            manifest.starts_with("{ \"PostgreSQL-Backup-Manifest-Version\""),
            "{name}"
        );

        restore_and_stream(&lab, &fixture, &format!("restored-{name}"));
    }
    stop_and_check_gone(lab);
}

#[test]
fn incremental_chain_on_postgresql_18_restores_and_streams() {
    let lab = start_lab(PgMajor::V18);
    // The primary is the wheel's PostgreSQL 18, summarising WAL, and Barman 3.19 backs it up.
    assert!(lab
        .psql(lab.primary_port(), "SHOW server_version_num")
        .unwrap()
        .starts_with("18"));
    assert_eq!(
        lab.psql(lab.primary_port(), "SHOW summarize_wal").unwrap(),
        "on"
    );
    assert_eq!(lab.pg_bin(), Path::new(PG18_BIN));
    let first = lab.backup_ids().unwrap();
    let first_info = lab.backup_info("pg", &first[0]).unwrap();
    assert_eq!(first_info.get("status"), Some("DONE"));
    assert!(first_info.get("version").unwrap().starts_with("18"));

    let fixture = lab.take_incremental_chain(2).unwrap();
    assert_eq!(fixture.kind, BackupKind::Incremental);
    assert_eq!(fixture.server, "incremental");
    assert_eq!(fixture.chain.len(), 3, "{:?}", fixture.chain);
    assert_eq!(fixture.backup_id, fixture.chain[2]);
    let [full, first_increment, second_increment] = fixture.chain.as_slice() else {
        unreachable!()
    };
    assert_info(
        &lab,
        &fixture,
        full,
        &[
            ("compression", "None"),
            ("parent_backup_id", "None"),
            ("encryption", "None"),
            ("summarize_wal", "on"),
        ],
    );
    let full_children = lab.backup_info("incremental", full).unwrap();
    assert_eq!(
        full_children.value("children_backup_ids"),
        Some(first_increment.as_str())
    );
    for (parent, child) in [(full, first_increment), (first_increment, second_increment)] {
        assert_info(
            &lab,
            &fixture,
            child,
            &[
                ("compression", "None"),
                ("parent_backup_id", parent.as_str()),
                ("encryption", "None"),
            ],
        );
        // Each increment carries changed blocks: some INCREMENTAL file holds more than its
        // header (one block is 8 kB), and the table written between backups is among them.
        let dir = lab.backup_directory("incremental", child);
        let incremental = files_named(&dir, "INCREMENTAL.");
        assert!(!incremental.is_empty(), "{child}: no INCREMENTAL files");
        let accounts = lab
            .psql(
                lab.primary_port(),
                "SELECT pg_relation_filenode('pgbench_accounts')",
            )
            .unwrap();
        let changed = incremental
            .iter()
            .find(|(path, _)| path.ends_with(format!("INCREMENTAL.{accounts}")))
            .unwrap_or_else(|| panic!("{child}: pgbench_accounts is not incremental"));
        assert!(changed.1 > 8192, "{child}: {changed:?} carries no block");
    }
    // The full backup holds the data whole: pgbench_accounts alone is over 10 MB.
    let full_data = lab.backup_directory("incremental", full).join("data");
    assert!(files_named(&full_data, "")
        .iter()
        .any(|(_, size)| *size > 10 << 20));

    let restored = restore_and_stream(&lab, &fixture, "restored-incremental");
    // Barman combined the chain: nothing incremental is left in the restored directory.
    assert_eq!(files_named(&restored.data_dir, "INCREMENTAL."), []);
    assert_eq!(
        lab.psql(
            lab.primary_port(),
            &format!("SELECT max(round) FROM {WRITES_TABLE}")
        )
        .unwrap(),
        "2"
    );

    // lz4 is not in the wheel's build: the lab says so instead of a Barman failure.
    let refused = lab.take_tar_backup(TarCompression::Lz4).unwrap_err();
    assert!(refused.message().contains("without lz4"), "{refused}");
    stop_and_check_gone(lab);
}

#[test]
fn encrypted_backup_restores_and_streams() {
    let lab = start_lab(PgMajor::V18);
    let fixture = lab.take_encrypted_backup().unwrap();
    assert_eq!(fixture.kind, BackupKind::Encrypted);
    assert_eq!(fixture.server, "encrypted");
    assert_info(
        &lab,
        &fixture,
        &fixture.backup_id,
        &[
            ("compression", "gzip"),
            ("encryption", "gpg"),
            ("parent_backup_id", "None"),
        ],
    );
    let info: BackupInfo = lab.backup_info("encrypted", &fixture.backup_id).unwrap();
    let oid = tablespace_oid(&lab, &fixture.tablespace.as_ref().unwrap().name);
    let data = lab
        .backup_directory("encrypted", &fixture.backup_id)
        .join("data");
    for archive in ["base.tar.gz.gpg".to_string(), format!("{oid}.tar.gz.gpg")] {
        let kind = file_type(&data.join(&archive));
        assert!(
            kind.contains("PGP") && kind.contains("encrypted"),
            "{archive}: {kind}"
        );
    }
    assert!(size(&data.join("base.tar.gz.gpg")) > u64::from(NOISE_MB - 1) << 20);
    // The manifest stays clear; the WAL Barman archived for the backup is encrypted too.
    let manifest = std::fs::read_to_string(data.join("backup_manifest")).unwrap();
    assert!(manifest.starts_with("{ \"PostgreSQL-Backup-Manifest-Version\""));
    let begin_wal = info.value("begin_wal").unwrap();
    let wal = lab
        .barman_home()
        .join("encrypted/wals")
        .join(&begin_wal[..16])
        .join(begin_wal);
    let kind = file_type(&wal);
    assert!(kind.contains("PGP") && kind.contains("encrypted"), "{kind}");

    // Over ssh, as pgreplica reaches the Barman host, gpg finds the lab's key.
    let echoed = ssh_to_barman(&lab, &["printenv", "GNUPGHOME"]);
    assert_eq!(text(&echoed).trim(), lab.gnupg_home().display().to_string());
    let keys = ssh_to_barman(
        &lab,
        &["gpg", "--batch", "--with-colons", "--list-secret-keys"],
    );
    assert_ok("gpg --list-secret-keys over ssh", &keys);
    let config = std::fs::read_to_string(lab.barman_config()).unwrap();
    let key_id = config
        .lines()
        .find_map(|line| line.strip_prefix("encryption_key_id = "))
        .expect("encryption_key_id in barman.conf");
    assert!(text(&keys).contains(key_id), "{}", text(&keys));

    restore_and_stream(&lab, &fixture, "restored-encrypted");
    stop_and_check_gone(lab);
}

#[test]
fn the_installer_finds_everything_present_and_postgresql_18_runs_for_both_users() {
    let installed = lab::install_report().unwrap();
    assert!(installed.nothing(), "a second install did {installed:?}");
    assert!(!PG18_HOME.starts_with("/root"));
    for user in ["postgres", "barman"] {
        for program in [
            "postgres",
            "initdb",
            "pg_ctl",
            "psql",
            "pg_basebackup",
            "pg_combinebackup",
            "pg_verifybackup",
            "pg_walsummary",
            "pgbench",
            "pg_controldata",
        ] {
            let out = Command::new("/usr/sbin/runuser")
                .args(["-u", user, "--"])
                .arg(Path::new(PG18_BIN).join(program))
                .arg("--version")
                .current_dir("/")
                .output()
                .unwrap();
            assert_ok(&format!("{program} --version as {user}"), &out);
            assert!(
                text(&out).trim_end().ends_with("18.6"),
                "{program}: {}",
                text(&out)
            );
        }
    }
    for program in [lab::GPG, "/usr/bin/lz4", "/usr/bin/zstd"] {
        let out = Command::new(program).arg("--version").output().unwrap();
        assert_ok(program, &out);
    }
}

#[test]
fn a_postgresql_18_lab_needs_the_pypi_barman() {
    let refused = Lab::start(LabOptions {
        postgres: PgMajor::V18,
        ..LabOptions::default()
    })
    .map(drop)
    .unwrap_err();
    assert_eq!(refused.stage(), "start");
    assert!(
        refused.message().contains("cannot back PostgreSQL 18 up"),
        "{refused}"
    );
    assert!(
        refused.to_string().contains("BarmanFlavor::PyPI"),
        "{refused}"
    );
}
