//! pgreplica's Barman client against the real Barman programs of this machine — Debian's 3.4.0
//! and PyPI's 3.19.1 — on a catalogue laid out in a temporary Barman home whose path needs
//! quoting (`it's $HOME; …`).
//!
//! Commands go through `runuser -u barman -- … sh -c <rendered command>` instead of ssh (the
//! sshd lab is built elsewhere), so the exact remote command lines pgreplica sends over ssh are
//! parsed by a real shell and answered by a real Barman. The catalogue is made from the captured
//! backup.info files in tests/fixtures/barman/, plus small data trees with awkward names; no
//! PostgreSQL is needed (Barman reads its catalogue without connecting). Every selector is
//! resolved both ways — the catalogue read directly and Barman's commands — and the answers
//! compared.
//!
//! Prerequisites (the test fails, saying which, when one is missing): running as root, the
//! `barman` system user, /usr/bin/barman 3.4.0, /opt/pgreplica-lab/barman-venv/bin/barman 3.19.1.

use pgreplica::barman::{data_dir, tablespace_dir, Barman, Transport};
use pgreplica::error::ErrorKind;
use states::EntryKind;
use std::path::{Path, PathBuf};
use std::process::Command;

const FIXTURES: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures/barman");
const ODD_NAME: &str = "it's $x; y\nz \"q\"";

/// One Barman release to test against.
struct Release {
    version: &'static str,
    bin_dir: &'static str,
    /// backup.info lives in `meta/<id>-backup.info` (≥ 3.13.2) rather than `base/<id>/`.
    meta_layout: bool,
    /// (backup id, fixture file with its backup.info)
    backups: [(&'static str, &'static str); 2],
}

const RELEASES: [Release; 2] = [
    Release {
        version: "3.4.0",
        bin_dir: "/usr/bin",
        meta_layout: false,
        backups: [
            ("20261125T150710", "3.4.0/backup.info-20261125T150710"),
            ("20261125T150746", "3.4.0/backup.info-20261125T150746"),
        ],
    },
    Release {
        version: "3.19.1",
        bin_dir: "/opt/pgreplica-lab/barman-venv/bin",
        meta_layout: true,
        backups: [
            ("20261125T150740", "3.19.1/20261125T150740-backup.info"),
            ("20261125T150747", "3.19.1/20261125T150747-backup.info"),
        ],
    },
];

/// A backup between the two real ones, marked FAILED.
const FAILED_ID: &str = "20261125T150743";

fn require(ok: bool, why: &str) {
    assert!(ok, "prerequisite missing for the live Barman test: {why}");
}

fn check_prerequisites(release: &Release) {
    require(
        unsafe { libc::geteuid() } == 0,
        "must run as root (it runs Barman as the barman user with runuser)",
    );
    let barman_user = Command::new("id")
        .arg("barman")
        .output()
        .map(|o| o.status.success());
    require(
        barman_user.unwrap_or(false),
        "system user \"barman\" (apt-get install barman)",
    );
    let bin = format!("{}/barman", release.bin_dir);
    require(
        Path::new(&bin).exists(),
        &format!("{bin} (Barman {})", release.version),
    );
}

fn write(path: &Path, content: &[u8]) {
    std::fs::create_dir_all(path.parent().expect("has parent")).expect("mkdir");
    std::fs::write(path, content).expect("write");
}

/// Lays out a Barman home with two DONE backups (the first with tablespace 16386) and a FAILED
/// one, and returns the configuration file's path.
fn catalogue(root: &Path, release: &Release) -> PathBuf {
    let home = root.join("it's $HOME; barman home");
    let server_dir = home.join("pg");
    for (id, fixture) in release
        .backups
        .iter()
        .copied()
        .chain([(FAILED_ID, release.backups[1].1)])
    {
        let mut info = std::fs::read_to_string(Path::new(FIXTURES).join(fixture)).expect("fixture");
        if id == FAILED_ID {
            info = info
                .replace("status=DONE", "status=FAILED")
                .replace("error=None", "error=interrupted by test");
        }
        let info_path = if release.meta_layout {
            server_dir.join("meta").join(format!("{id}-backup.info"))
        } else {
            server_dir.join("base").join(id).join("backup.info")
        };
        write(&info_path, info.as_bytes());
        let data = server_dir.join("base").join(id).join("data");
        write(&data.join("global/pg_control"), &[0u8; 8192]);
        write(
            &data.join("backup_label"),
            b"START WAL LOCATION: 0/3000028\n",
        );
        write(&data.join("backup_manifest"), b"{}");
        write(&data.join("pg_wal/000000010000000000000003"), b"wal");
        write(&data.join("postmaster.pid"), b"4242\n");
        write(&data.join("base/5").join(ODD_NAME), b"odd");
        std::fs::create_dir_all(data.join("pg_tblspc")).expect("mkdir");
        if info.contains("tablespaces=[") {
            write(
                &server_dir
                    .join("base")
                    .join(id)
                    .join("16386/PG_15_202209061/5/16387"),
                &[1u8; 100],
            );
            std::os::unix::fs::symlink(
                server_dir.join("base").join(id).join("16386"),
                data.join("pg_tblspc/16386"),
            )
            .expect("symlink");
        }
    }
    let config = root.join("barman $(touch pwned); it's.conf");
    let home_s = home.to_str().expect("utf-8");
    write(
        &config,
        format!(
            "[barman]\nbarman_home = {home_s}\nbarman_user = barman\nlog_file = {home_s}/barman.log\n\n\
             [pg]\ndescription = \"live test\"\nconninfo = host=127.0.0.1 port=1 user=barman dbname=postgres\n\
             streaming_conninfo = host=127.0.0.1 port=1 user=streaming_barman\nbackup_method = postgres\n\
             streaming_archiver = on\nslot_name = barman\npath_prefix = /usr/lib/postgresql/15/bin\n"
        )
        .as_bytes(),
    );
    let status = Command::new("chown")
        .arg("-R")
        .arg("barman:")
        .arg(root)
        .status()
        .expect("chown runs");
    assert!(status.success(), "chown -R barman {root:?}");
    config
}

async fn exercise(release: &Release) {
    check_prerequisites(release);
    let tmp = tempfile::tempdir().expect("tempdir");
    let config = catalogue(tmp.path(), release);
    let launcher = ["runuser", "-u", "barman", "--", "env"]
        .iter()
        .map(|s| s.to_string())
        .chain([
            format!("PATH={}:/usr/bin:/bin", release.bin_dir),
            "sh".into(),
            "-c".into(),
        ])
        .collect();
    let barman = Barman::new(
        "barman@localhost",
        "pg",
        Some(config.to_str().expect("utf-8").into()),
        vec![],
    )
    .with_transport(Transport::Local(launcher));

    assert_eq!(
        barman.check_reachable().await.expect("barman --version"),
        release.version
    );

    let dirs = barman.show_server().await.expect("show-server");
    let home = tmp.path().join("it's $HOME; barman home");
    assert_eq!(
        dirs.backup_directory,
        home.join("pg").to_str().expect("utf-8")
    );
    assert_eq!(
        dirs.basebackups_directory,
        home.join("pg/base").to_str().expect("utf-8")
    );
    assert_eq!(dirs.backup_method.as_deref(), Some("postgres"));

    let list = barman.list_backups().await.expect("list-backups");
    let ids: Vec<&str> = list.iter().map(|b| b.backup_id.as_str()).collect();
    assert_eq!(
        ids,
        [release.backups[1].0, FAILED_ID, release.backups[0].0],
        "newest first"
    );
    assert_eq!(list[1].status, "FAILED");

    let (old_id, new_id) = (release.backups[0].0, release.backups[1].0);
    let latest = barman
        .resolve_backup("latest")
        .await
        .expect("latest resolves");
    assert_eq!(
        latest.backup_id, new_id,
        "latest skips nothing newer than the newest DONE"
    );
    assert!(latest.tablespaces.is_empty());
    assert!(latest.has_manifest);
    assert_eq!(latest.data_subdir, "data");
    assert_eq!(latest.pg_version, 150018);
    assert_eq!(latest.system_id.as_deref(), Some("7712125799867076052"));
    assert_eq!(
        latest.backup_dir,
        format!("{}/{new_id}", dirs.basebackups_directory)
    );

    let oldest = barman
        .resolve_backup("first")
        .await
        .expect("first resolves");
    assert_eq!(oldest.backup_id, old_id);
    assert_eq!(oldest.tablespaces.len(), 1);
    assert_eq!(oldest.tablespaces[0].oid, 16386);
    assert_eq!(
        barman
            .resolve_backup(old_id)
            .await
            .expect("by id")
            .backup_id,
        old_id
    );
    if release.version == "3.19.1" {
        let named = barman.resolve_backup("named 319").await.expect("by name");
        assert_eq!(
            (named.backup_id.as_str(), named.backup_name.as_deref()),
            (old_id, Some("named 319"))
        );
    }

    let failed = barman
        .resolve_backup(FAILED_ID)
        .await
        .expect_err("FAILED is refused");
    assert_eq!(failed.kind, ErrorKind::Barman);
    assert!(
        failed.message.contains("has status FAILED"),
        "{}",
        failed.message
    );
    assert!(failed
        .hint
        .as_deref()
        .is_some_and(|h| h.contains("list-backups")));

    // The catalogue read directly gives what Barman's commands give, facts and refusals alike;
    // what it does not resolve itself (an unknown backup) it leaves to Barman.
    for selector in [
        "latest",
        "last",
        "first",
        "oldest",
        old_id,
        new_id,
        FAILED_ID,
        "last-failed",
        "named 319",
    ] {
        let direct = barman.resolve_backup_directly(selector).await;
        let asked = barman.resolve_backup_with_barman(selector).await;
        match (direct, asked) {
            (Ok(Ok(direct)), Ok(asked)) => assert_eq!(direct, asked, "{selector}"),
            (Err(direct), Err(asked)) => {
                assert_eq!(
                    (&direct.message, &direct.hint, direct.kind),
                    (&asked.message, &asked.hint, asked.kind),
                    "{selector}"
                );
                assert!(
                    direct.message.contains("has status FAILED"),
                    "{selector}: {direct:?}"
                );
            }
            (Ok(Err(why)), Err(asked)) if selector == "named 319" && release.version == "3.4.0" => {
                assert!(why.contains("no backup"), "{why}");
                assert!(
                    asked.message.contains("no backup \"named 319\""),
                    "{asked:?}"
                );
            }
            (direct, asked) => panic!("{selector}: directly {direct:?}, through Barman {asked:?}"),
        }
    }
    let why = barman
        .resolve_backup_directly("20200101T000000")
        .await
        .expect("read")
        .expect_err("an unknown backup is left to Barman");
    assert!(why.contains("no backup"), "{why}");

    let unknown = barman
        .resolve_backup("20200101T000000")
        .await
        .expect_err("unknown");
    assert_eq!(unknown.kind, ErrorKind::Barman);
    assert_eq!(
        unknown.message,
        "no backup \"20200101T000000\" for server \"pg\" in the Barman catalogue"
    );
    assert!(unknown
        .detail
        .as_deref()
        .is_some_and(|d| d.contains("Unknown backup")));

    let mut wrong_server = barman.clone();
    wrong_server.server = "nosrv".into();
    let err = wrong_server
        .show_server()
        .await
        .expect_err("unknown server");
    assert_eq!(err.kind, ErrorKind::Barman);
    assert!(
        err.message.contains("Unknown server 'nosrv'"),
        "{}",
        err.message
    );

    let files = barman
        .list_files(&oldest, 0, &data_dir(&oldest))
        .await
        .expect("list data files");
    let paths: Vec<&str> = files.iter().map(|e| e.path.as_str()).collect();
    let odd = format!("base/5/{ODD_NAME}");
    assert!(
        paths.contains(&odd.as_str()),
        "odd name survives: {paths:?}"
    );
    assert!(
        paths.contains(&"pg_wal") && !paths.contains(&"pg_wal/000000010000000000000003"),
        "{paths:?}"
    );
    assert!(
        !paths.contains(&"postmaster.pid") && !paths.contains(&"pg_tblspc/16386"),
        "{paths:?}"
    );
    assert!(paths.contains(&"backup_label") && paths.contains(&"global/pg_control"));
    let control = files
        .iter()
        .find(|e| e.path == "global/pg_control")
        .expect("listed");
    assert_eq!((control.kind, control.size), (EntryKind::File, 8192));
    let on_disk =
        std::fs::metadata(Path::new(&data_dir(&oldest)).join("global/pg_control")).expect("stat");
    use std::os::unix::fs::MetadataExt;
    assert_eq!(control.mtime, on_disk.mtime());

    let tbs = barman
        .list_files(&oldest, 16386, &tablespace_dir(&oldest, 16386))
        .await
        .expect("list tablespace");
    let leaf = tbs
        .iter()
        .find(|e| e.path == "PG_15_202209061/5/16387")
        .expect("tablespace file");
    assert_eq!((leaf.root, leaf.size), (16386, 100));

    let gone = barman
        .list_files(&oldest, 0, &format!("{}/nonexistent", oldest.backup_dir))
        .await
        .expect_err("no dir");
    assert_eq!(gone.kind, ErrorKind::Barman);

    assert!(
        !Path::new("pwned").exists() && !tmp.path().join("pwned").exists(),
        "the config path was executed"
    );
}

#[tokio::test]
async fn live_barman_3_4_0() {
    exercise(&RELEASES[0]).await;
}

#[tokio::test]
async fn live_barman_3_19_1() {
    exercise(&RELEASES[1]).await;
}
