//! Tar-format and encrypted Barman backups end to end, on a PostgreSQL 15 lab with the PyPI
//! Barman 3.19 and a tablespace (lz4 and zstd need Debian's 15: the wheel's 18 has gzip only):
//! a gzip, an lz4, a zstd and an uncompressed tar backup, and a GPG-encrypted one, each cloned
//! by pgreplica (staged, unpacked, verified with pg_verifybackup) into a standby that streams;
//! killed inside every new step (StageBackup mid-file, UnpackBackup between archives), each
//! resumes to a directory identical to an uninterrupted clone's, file for file.

mod common;

use common::{
    assert_resolves_alike, fixture_conf, kill_at_line, kill_group, spawn, stderr_of, tree_digest,
    wait_for_step_progress, wait_until_stopped, Bench,
};
use lab::clone_check;
use lab::{BackupFixture, BarmanFlavor, LabOptions, PgMajor, TarCompression};
use std::path::{Path, PathBuf};

fn lab() -> Bench {
    Bench::start(LabOptions {
        barman: BarmanFlavor::PyPI,
        tablespace: true,
        postgres: PgMajor::V15,
        ..LabOptions::default()
    })
}

/// The tablespace target of the clone into `data_dir`: beside it.
fn tablespace_target(data_dir: &Path) -> PathBuf {
    data_dir.with_extension("tbs")
}

/// Asserts that two clones of one backup are the same, file for file: their data directories
/// (but the tablespace links and `tablespace_map`, which name each clone's own target) and
/// their tablespaces.
fn assert_same_clone(a: &Path, b: &Path) {
    let own_target = |path: &String| path == "tablespace_map" || path.starts_with("pg_tblspc/");
    let differing: Vec<String> = clone_check::differing_paths(&tree_digest(a), &tree_digest(b))
        .into_iter()
        .filter(|path| !own_target(path))
        .collect();
    assert!(
        differing.is_empty(),
        "{} and {} differ in {differing:?}",
        a.display(),
        b.display()
    );
    let differing = clone_check::differing_paths(
        &tree_digest(&tablespace_target(a)),
        &tree_digest(&tablespace_target(b)),
    );
    assert!(
        differing.is_empty(),
        "their tablespaces differ in {differing:?}"
    );
    for dir in [a, b] {
        let links: Vec<PathBuf> = std::fs::read_dir(dir.join("pg_tblspc"))
            .unwrap()
            .flatten()
            .map(|e| std::fs::read_link(e.path()).unwrap())
            .collect();
        assert_eq!(links, [tablespace_target(dir)]);
    }
}

/// Clones `fixture` without interruption; returns the data directory.
fn clone_whole(bench: &Bench, fixture: &BackupFixture, name: &str) -> PathBuf {
    clone_whole_with(bench, fixture, name, "")
}

/// Clones `fixture` without interruption with `extra` repmgr.conf lines; returns the data
/// directory.
fn clone_whole_with(bench: &Bench, fixture: &BackupFixture, name: &str, extra: &str) -> PathBuf {
    let data_dir = bench.lab.new_dir(name);
    let conf = fixture_conf(bench, fixture, name, &data_dir, extra);
    let args = bench.start_args(&conf, &["--backup-id", &fixture.backup_id]);
    let output = bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(0), "{stderr}");
    assert!(
        stderr.contains("NOTICE: standby clone (from Barman) complete"),
        "{stderr}"
    );
    data_dir
}

/// The steps the record's history shows, in order, with their outcomes.
fn history(bench: &Bench, data_dir: &Path) -> Vec<(String, String)> {
    bench.status(data_dir)["history"]
        .as_array()
        .expect("history")
        .iter()
        .map(|t| {
            (
                t["step"].as_str().unwrap_or_default().to_string(),
                t["outcome"].as_str().unwrap_or_default().to_string(),
            )
        })
        .collect()
}

/// Checks what every clone of a staged kind must show: the plan of the kind done, the copy
/// verified against the backup's manifest, staging gone.
fn assert_staged_clone(bench: &Bench, data_dir: &Path, kind: &str) {
    let status = bench.status(data_dir);
    assert_eq!(status["phase"], "done", "{status}");
    let facts = &status["facts"];
    assert!(
        facts["backup"].to_string().contains(kind),
        "{}",
        facts["backup"]
    );
    assert!(
        matches!(facts["verification"]["files"].as_u64(), Some(n) if n > 100),
        "{}",
        facts["verification"]
    );
    let steps: Vec<String> = history(bench, data_dir)
        .into_iter()
        .filter(|(_, outcome)| outcome == "succeeded")
        .map(|(step, _)| step)
        .collect();
    assert_eq!(
        steps,
        [
            "verify_backup",
            "fetch_params",
            "prepare_dirs",
            "stage_backup",
            "unpack_backup",
            "verify_copy",
            "write_replication_conf"
        ]
    );
    let staging = data_dir
        .parent()
        .unwrap()
        .read_dir()
        .unwrap()
        .flatten()
        .filter(|e| {
            e.file_name()
                .to_string_lossy()
                .starts_with("pgreplica-staging-")
        })
        .count();
    assert_eq!(staging, 0, "the staging directory outlived the clone");
}

#[test]
fn tar_backups_of_every_compression_give_streaming_standbys_and_resume_after_kills_in_each_step() {
    let bench = lab();
    for compression in TarCompression::ALL {
        let name = compression.name();
        let fixture = bench
            .lab
            .take_tar_backup(compression)
            .unwrap_or_else(|e| panic!("tar backup ({name}): {e}"));
        // The catalogue read directly and Barman's commands give the same facts.
        let facts = assert_resolves_alike(&bench, &fixture.server, &fixture.backup_id);
        assert!(
            matches!(facts.kind, states::BackupKind::Tar { compression, encrypted: false } if compression.label() == name),
            "{name}: {:?}",
            facts.kind
        );
        assert_resolves_alike(&bench, &fixture.server, "latest");
        let reference = clone_whole(&bench, &fixture, &format!("{name}-whole"));
        assert_staged_clone(&bench, &reference, "\"kind\":\"tar\"");

        // Killed in StageBackup in the middle of the base archive (throttled so the kill lands
        // there), and in UnpackBackup as it starts the base archive (the tablespace's archive
        // done and removed): each resume goes on from where the record says, and the result
        // is the same directory.
        let data_dir = bench.lab.new_dir(&format!("{name}-killed"));
        let conf = fixture_conf(&bench, &fixture, &format!("{name}-killed"), &data_dir, "");
        let args = bench.start_args(
            &conf,
            &["--backup-id", &fixture.backup_id, "--bwlimit", "2000"],
        );
        let mut child = spawn(&bench, &args);
        wait_for_step_progress(&bench, &data_dir, &mut child, "stage_backup", 0.4);
        kill_group(&mut child);
        wait_until_stopped(&bench, &data_dir);
        let resume = ["clone", "resume", &data_dir.display().to_string()].map(String::from);
        let mut child = spawn(&bench, &resume);
        let second = kill_at_line(&mut child, "base.tar");
        // The base archive was in flight at the first kill: its first bytes were kept.
        assert!(
            second.contains("partially copied file(s) where they stopped"),
            "{second}"
        );
        wait_until_stopped(&bench, &data_dir);
        let mut child = spawn(&bench, &resume);
        let status = child.wait().unwrap();
        let log = stderr_of(&mut child);
        assert!(status.success(), "{log}");
        // The tablespace's archive was unpacked (and removed) before the second kill: only the
        // base archive is unpacked again.
        let unpacked: Vec<&str> = log
            .lines()
            .filter(|l| l.contains("INFO: unpacking"))
            .collect();
        assert_eq!(unpacked.len(), 1, "{log}");
        assert!(unpacked[0].contains("/base.tar"), "{log}");
        let crashed: Vec<String> = history(&bench, &data_dir)
            .into_iter()
            .filter(|(_, outcome)| outcome == "crashed")
            .map(|(step, _)| step)
            .collect();
        assert_eq!(crashed, ["stage_backup", "unpack_backup"], "{log}");
        assert_staged_clone(&bench, &data_dir, "\"kind\":\"tar\"");
        assert_same_clone(&data_dir, &reference);
        let standby = bench.start_streaming_standby(&data_dir);
        bench.assert_replicates(&standby);
        standby.stop().unwrap();
    }
}

#[test]
fn an_encrypted_backup_is_decrypted_on_the_barman_host_and_resumes_after_kills() {
    let bench = lab();
    let fixture = bench
        .lab
        .take_encrypted_backup()
        .unwrap_or_else(|e| panic!("encrypted backup: {e}"));
    let facts = assert_resolves_alike(&bench, &fixture.server, &fixture.backup_id);
    assert!(
        matches!(
            facts.kind,
            states::BackupKind::Tar {
                encrypted: true,
                ..
            }
        ),
        "{:?}",
        facts.kind
    );
    // The lab's first, plain backup too.
    let plain = assert_resolves_alike(&bench, bench.lab.barman_server(), "oldest");
    assert_eq!(plain.kind, states::BackupKind::Plain);
    // barman-wal-restore as the lab offers it: its --test passes (pgreplica tests
    // restore_command before the copy), and the standby fetches decrypted WAL with it.
    let wal_restore = format!(
        "restore_command='{}'\n",
        bench
            .lab
            .wal_restore_command(&fixture.server)
            .unwrap_or_else(|e| panic!("barman-wal-restore of the lab: {e}"))
    );

    // A restore_command that cannot read the encrypted WAL archive is refused before anything
    // is copied (here by the dry run, which runs the same check as VerifyBackup).
    let data_dir = bench.lab.new_dir("refused");
    let conf = fixture_conf(
        &bench,
        &fixture,
        "refused",
        &data_dir,
        "restore_command='cp /archive/%f %p'\n",
    );
    let args = bench.start_args(&conf, &["--backup-id", &fixture.backup_id, "--dry-run"]);
    let output = bench.run(&args.iter().map(String::as_str).collect::<Vec<_>>());
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert_eq!(output.status.code(), Some(1), "{stderr}");
    assert!(
        stdout.contains("tar (gzip, encrypted)") && stdout.contains("ok       staging space: "),
        "{stdout}"
    );
    assert!(
        stderr.contains(&format!(
            "ERROR: restore_command runs \"cp\", which cannot read the WAL archive of the encrypted backup {}",
            fixture.backup_id
        )),
        "{stderr}"
    );
    assert!(
        stderr.contains("HINT: set restore_command='barman-wal-restore"),
        "{stderr}"
    );
    assert!(!data_dir.exists(), "a dry run creates nothing");

    let reference = clone_whole_with(&bench, &fixture, "encrypted-whole", &wal_restore);
    assert_staged_clone(&bench, &reference, "encrypted\":true");

    // Killed after the tablespace's archive was decrypted (as the base archive's decryption
    // starts), then inside UnpackBackup: the resumes decrypt and unpack only what is left.
    let data_dir = bench.lab.new_dir("encrypted-killed");
    let conf = fixture_conf(
        &bench,
        &fixture,
        "encrypted-killed",
        &data_dir,
        &wal_restore,
    );
    let args = bench.start_args(&conf, &["--backup-id", &fixture.backup_id]);
    let mut child = spawn(&bench, &args);
    kill_at_line(&mut child, ".tar.gz.gpg\" on the Barman host");
    wait_until_stopped(&bench, &data_dir);
    let resume = ["clone", "resume", &data_dir.display().to_string()].map(String::from);
    let mut child = spawn(&bench, &resume);
    let second = kill_at_line(&mut child, "base.tar");
    let decrypted: Vec<&str> = second
        .lines()
        .filter(|l| l.contains("INFO: decrypted"))
        .collect();
    assert_eq!(
        decrypted.len(),
        1,
        "only the base archive is decrypted again: {second}"
    );
    assert!(decrypted[0].contains("base.tar.gz.gpg"), "{second}");
    wait_until_stopped(&bench, &data_dir);
    let mut child = spawn(&bench, &resume);
    let status = child.wait().unwrap();
    let log = stderr_of(&mut child);
    assert!(status.success(), "{log}");
    assert_staged_clone(&bench, &data_dir, "encrypted\":true");
    assert_same_clone(&data_dir, &reference);
    let standby = bench.start_streaming_standby(&data_dir);
    bench.assert_replicates(&standby);
}
