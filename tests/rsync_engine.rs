//! The rsync engine against real rsync on local trees: full copies, a SIGKILL mid-file, another
//! while that file is being completed, and the resume from where it stopped, kept partial files
//! (good and corrupt), a failing stream, and a remote shell.
//!
//! These tests need `rsync` on PATH and fail, saying so, without it. They must not depend on
//! timing: the kill test synchronises on the engine's own FileDone and progress output.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::io::{BufRead, BufReader, Write};
use std::os::unix::fs::{symlink, MetadataExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant, SystemTime};

use pgreplica::child_output::DETAIL_LINES;
use pgreplica::error::{Error, ErrorKind};
use pgreplica::transfer::rsync::{
    cleanup_partial, run_streams, RsyncEvent, RsyncJob, TreeSource, RESUME_PARTIAL_MIN_BYTES,
};
use pgreplica::transfer::streams::{is_pg_control, plan_streams, PG_CONTROL};
use rand::{rngs::StdRng, RngCore, SeedableRng};
use states::{EntryKind, ManifestEntry};

/// Set in the re-executed test binary that plays the pgreplica process to be killed.
const CHILD_ENV: &str = "PGREPLICA_TEST_RSYNC_CHILD";

/// Asserts that `err`'s hint says `wanted`.
fn assert_hint(err: &Error, wanted: &str) {
    let hint = err.hint.as_deref().unwrap_or("");
    assert!(hint.contains(wanted), "hint lacks {wanted:?}: {err:?}");
}

fn require_rsync() {
    let ok = Command::new("rsync")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    assert!(ok, "these tests need rsync on PATH (apt-get install rsync)");
}

fn runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("tokio runtime")
}

fn write_file(root: &Path, rel: &str, len: usize, rng: &mut StdRng, mode: u32) {
    let path = root.join(rel);
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut data = vec![0u8; len];
    rng.fill_bytes(&mut data);
    std::fs::write(&path, data).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(mode)).unwrap();
}

/// Gives every file and directory a distinct time in the past, so copied times are checked.
fn age_tree(root: &Path) {
    let mut paths = walk(root);
    // Children first: setting a file's time does not touch its directory's.
    paths.sort_by_key(|p| std::cmp::Reverse(p.components().count()));
    for (n, rel) in paths.iter().chain([&PathBuf::from(".")]).enumerate() {
        let path = root.join(rel);
        if path.symlink_metadata().unwrap().file_type().is_symlink() {
            continue;
        }
        let when = SystemTime::UNIX_EPOCH + Duration::from_secs(1_600_000_000 + 3_600 * n as u64);
        std::fs::File::open(&path)
            .unwrap()
            .set_modified(when)
            .unwrap();
    }
}

/// A data directory in miniature: many small files, a few multi-MB ones, empty directories,
/// a symlink, names with spaces and UTF-8, and global/pg_control.
fn make_tree(root: &Path, big: &[(&str, usize)]) {
    let mut rng = StdRng::seed_from_u64(7);
    std::fs::create_dir_all(root).unwrap();
    std::fs::set_permissions(root, std::fs::Permissions::from_mode(0o700)).unwrap();
    write_file(root, "PG_VERSION", 3, &mut rng, 0o600);
    write_file(root, PG_CONTROL, 8192, &mut rng, 0o600);
    write_file(root, "global/1260", 16384, &mut rng, 0o600);
    for i in 0..60 {
        let len = (i * 997) % 20_000;
        write_file(root, &format!("base/1/{}", 1000 + i), len, &mut rng, 0o600);
    }
    write_file(root, "base/1/odd name with spaces", 4321, &mut rng, 0o640);
    write_file(
        root,
        "base/1/\u{e9}t\u{e9}_\u{65e5}\u{672c}",
        777,
        &mut rng,
        0o644,
    );
    write_file(root, "dir with space/file", 10, &mut rng, 0o600);
    for (rel, len) in big {
        write_file(root, rel, *len, &mut rng, 0o600);
    }
    for empty in ["pg_notify", "pg_tblspc", "pg_stat_tmp/empty/nested"] {
        std::fs::create_dir_all(root.join(empty)).unwrap();
    }
    std::fs::set_permissions(
        root.join("pg_notify"),
        std::fs::Permissions::from_mode(0o750),
    )
    .unwrap();
    symlink("global/1260", root.join("link_to_1260")).unwrap();
    age_tree(root);
}

/// Paths under `root`, relative, `/`-separated, without the root itself.
fn walk(root: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut todo = vec![PathBuf::new()];
    while let Some(rel) = todo.pop() {
        for item in std::fs::read_dir(root.join(&rel)).unwrap() {
            let item = item.unwrap();
            let child = rel.join(item.file_name());
            if item.file_type().unwrap().is_dir() {
                todo.push(child.clone());
            }
            out.push(child);
        }
    }
    out.sort();
    out
}

/// The manifest a Transfer step would store for `root`, in path order, nothing done.
fn manifest(root: &Path) -> Vec<ManifestEntry> {
    let mut paths = vec![PathBuf::from(".")];
    paths.extend(walk(root));
    paths
        .into_iter()
        .map(|rel| {
            let meta = root.join(&rel).symlink_metadata().unwrap();
            let kind = if meta.is_dir() {
                EntryKind::Dir
            } else if meta.file_type().is_symlink() {
                EntryKind::Symlink
            } else {
                EntryKind::File
            };
            ManifestEntry {
                root: 0,
                path: rel.to_str().unwrap().to_string(),
                kind,
                size: if kind == EntryKind::File {
                    meta.len()
                } else {
                    0
                },
                mtime: meta.mtime(),
                done: false,
            }
        })
        .collect()
}

/// Asserts that `dst` holds exactly `src`: same paths, kinds, modes, sizes, times, contents.
fn assert_same_tree(src: &Path, dst: &Path) {
    let (a, b) = (walk(src), walk(dst));
    assert_eq!(a, b, "the copy has different paths");
    for rel in a.iter().chain([&PathBuf::from(".")]) {
        let (sp, dp) = (src.join(rel), dst.join(rel));
        let (sm, dm) = (
            sp.symlink_metadata().unwrap(),
            dp.symlink_metadata().unwrap(),
        );
        let what = rel.display();
        assert_eq!(sm.file_type(), dm.file_type(), "{what}: kind");
        if sm.file_type().is_symlink() {
            assert_eq!(
                std::fs::read_link(&sp).unwrap(),
                std::fs::read_link(&dp).unwrap(),
                "{what}: target"
            );
            continue;
        }
        assert_eq!(sm.mode(), dm.mode(), "{what}: mode");
        assert_eq!(sm.mtime(), dm.mtime(), "{what}: mtime");
        if sm.is_file() {
            assert_eq!(sm.len(), dm.len(), "{what}: size");
            assert!(
                std::fs::read(&sp).unwrap() == std::fs::read(&dp).unwrap(),
                "{what}: content"
            );
        }
    }
}

fn job(src: &Path, dst: &Path, entries: Vec<ManifestEntry>) -> RsyncJob {
    RsyncJob {
        source: src.to_str().unwrap().to_string(),
        rsh: None,
        dest: dst.to_path_buf(),
        tablespaces: Vec::new(),
        extra_args: Vec::new(),
        entries,
        partials: BTreeSet::new(),
    }
}

/// Runs the engine and returns the FileDone indices in the order they came.
fn run(rt: &tokio::runtime::Runtime, job: &RsyncJob, jobs: u32) -> Vec<usize> {
    run_counting_bytes(rt, job, jobs).0
}

/// Runs the engine; returns the FileDone indices in order and the bytes sent for each.
fn run_counting_bytes(
    rt: &tokio::runtime::Runtime,
    job: &RsyncJob,
    jobs: u32,
) -> (Vec<usize>, HashMap<usize, u64>) {
    let (done, sent, _) = run_counting_present(rt, job, jobs);
    (done, sent)
}

/// [`run_counting_bytes`], and what each stream last reported as read back rather than
/// received (`RsyncEvent::Progress::present`), by stream.
fn run_counting_present(
    rt: &tokio::runtime::Runtime,
    job: &RsyncJob,
    jobs: u32,
) -> (Vec<usize>, HashMap<usize, u64>, HashMap<usize, u64>) {
    let plan = plan_streams(&job.entries, jobs);
    let mut done = Vec::new();
    let mut sent = HashMap::new();
    let mut read_back = HashMap::new();
    let stats = rt
        .block_on(run_streams(job, &plan, |event| match event {
            RsyncEvent::FileDone {
                index, bytes_sent, ..
            } => {
                done.push(index);
                sent.insert(index, bytes_sent);
            }
            RsyncEvent::Progress {
                stream, present, ..
            } => {
                read_back.insert(stream, present);
            }
        }))
        .unwrap_or_else(|e| panic!("copy failed: {} / {:?}", e.message, e.detail));
    assert_eq!(stats.files, done.len() as u64);
    assert_eq!(stats.bytes_sent, sent.values().sum::<u64>());
    (done, sent, read_back)
}

/// What rsync sends beyond a file's data (checksums, headers) is below this.
const RSYNC_OVERHEAD: u64 = 64 << 10;

/// Asserts that every pending entry was reported exactly once and pg_control last.
fn assert_reported_once(entries: &[ManifestEntry], done: &[usize]) {
    let pending: BTreeSet<usize> = (0..entries.len()).filter(|&i| !entries[i].done).collect();
    let reported: BTreeSet<usize> = done.iter().copied().collect();
    assert_eq!(reported.len(), done.len(), "an entry was reported twice");
    assert_eq!(
        reported, pending,
        "reported entries differ from the pending ones"
    );
    let last = *done.last().expect("nothing reported");
    assert!(is_pg_control(&entries[last]), "pg_control was not last");
}

#[test]
fn full_copy_equals_the_source_with_one_and_three_streams() {
    require_rsync();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(
        &src,
        &[
            ("base/5/16384", 3 << 20),
            ("base/5/16385", 2 << 20),
            ("base/5/16386", 2 << 20),
        ],
    );
    let entries = manifest(&src);
    for jobs in [1, 3] {
        let dst = tmp.path().join(format!("dst{jobs}"));
        std::fs::create_dir(&dst).unwrap();
        let job = job(&src, &dst, entries.clone());
        let done = run(&rt, &job, jobs);
        assert_reported_once(&entries, &done);
        assert_same_tree(&src, &dst);
        // A second run over a fully done manifest does nothing.
        let mut all_done = entries.clone();
        all_done.iter_mut().for_each(|e| e.done = true);
        assert!(run(
            &rt,
            &RsyncJob {
                entries: all_done,
                ..job
            },
            jobs
        )
        .is_empty());
    }
}

/// Processes that are alive (not zombies) in the given process groups.
fn alive_in_groups(groups: &BTreeSet<i32>) -> Vec<String> {
    let mut alive = Vec::new();
    for item in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(stat) = std::fs::read_to_string(item.path().join("stat")) else {
            continue;
        };
        let Some((_, rest)) = stat.rsplit_once(')') else {
            continue;
        };
        let fields: Vec<&str> = rest.split_whitespace().collect();
        let pgrp: i32 = fields[2].parse().unwrap_or(0);
        if fields[0] != "Z" && groups.contains(&pgrp) {
            alive.push(stat);
        }
    }
    alive
}

/// Process groups of live rsync processes whose command line mentions `needle`.
fn rsync_groups_mentioning(needle: &str) -> BTreeSet<i32> {
    let mut groups = BTreeSet::new();
    for item in std::fs::read_dir("/proc").unwrap().flatten() {
        let Ok(cmdline) = std::fs::read(item.path().join("cmdline")) else {
            continue;
        };
        let cmdline = String::from_utf8_lossy(&cmdline);
        if !cmdline.starts_with("rsync\0") || !cmdline.contains(needle) {
            continue;
        }
        let Ok(stat) = std::fs::read_to_string(item.path().join("stat")) else {
            continue;
        };
        let rest = stat.rsplit_once(')').unwrap().1;
        let fields: Vec<&str> = rest.split_whitespace().collect();
        if fields[0] != "Z" {
            groups.insert(fields[2].parse().unwrap());
        }
    }
    groups
}

const BIG: &str = "base/5/16384";
const BIG_LEN: usize = 8 << 20;

fn kill_test_paths(dir: &Path) -> (PathBuf, PathBuf) {
    (dir.join("src"), dir.join("dst"))
}

/// Set (with [`CHILD_ENV`]) when the child must first tidy what an earlier kill left, keeping
/// partial copies to be completed, as the Transfer step does on a resume.
const CHILD_TIDY_ENV: &str = "PGREPLICA_TEST_RSYNC_CHILD_TIDY";

/// The child's part: copy with 2 streams at 1 MB/s, print every event, until killed.
fn kill_test_child(dir: &Path) {
    let (src, dst) = kill_test_paths(dir);
    let mut job = job(&src, &dst, manifest(&src));
    job.extra_args = vec!["--bwlimit=1000".into()];
    if std::env::var_os(CHILD_TIDY_ENV).is_some() {
        let cleanup = cleanup_partial(&job).unwrap();
        job.partials = cleanup.kept.iter().map(|&(i, _)| i).collect();
        assert!(!job.partials.is_empty(), "nothing to complete: {cleanup:?}");
    }
    let plan = plan_streams(&job.entries, 2);
    let mut out = std::io::stdout().lock();
    let result = runtime().block_on(run_streams(&job, &plan, |event| {
        let line = match event {
            RsyncEvent::FileDone { index, .. } => format!("ENGINE DONE {index}\n"),
            RsyncEvent::Progress { stream, bytes, .. } => {
                format!("ENGINE PROGRESS {stream} {bytes}\n")
            }
        };
        out.write_all(line.as_bytes()).unwrap();
        out.flush().unwrap();
    }));
    // Reaching this point means the parent did not kill us in time.
    panic!("the child's copy ended before it was killed: {result:?}");
}

/// Runs the engine in a child process (this test binary re-executed) and SIGKILLs the child
/// when `kill_now(done so far, stream, bytes)` says so on a progress line. Waits (bounded)
/// until the guardians have killed every rsync of the child, then returns the entries the
/// child reported done.
fn run_child_until(
    test: &str,
    dir: &Path,
    tidy: bool,
    mut kill_now: impl FnMut(&BTreeSet<usize>, usize, u64) -> bool,
) -> BTreeSet<usize> {
    let (_, dst) = kill_test_paths(dir);
    let mut command = Command::new(std::env::current_exe().unwrap());
    command
        .args([test, "--exact", "--nocapture"])
        .env(CHILD_ENV, dir)
        .stdout(Stdio::piped());
    if tidy {
        command.env(CHILD_TIDY_ENV, "1");
    }
    let mut child = command.spawn().unwrap();
    let mut lines = BufReader::new(child.stdout.take().unwrap()).lines();
    let mut done = BTreeSet::new();
    let mut groups = BTreeSet::new();
    for line in lines.by_ref() {
        let line = line.unwrap();
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["ENGINE", "DONE", index] => {
                done.insert(index.parse().unwrap());
            }
            ["ENGINE", "PROGRESS", stream, bytes]
                if kill_now(&done, stream.parse().unwrap(), bytes.parse().unwrap()) =>
            {
                groups = rsync_groups_mentioning(dst.to_str().unwrap());
                child.kill().unwrap();
                break;
            }
            _ => {}
        }
    }
    let status = child.wait().unwrap();
    assert!(
        !groups.is_empty(),
        "no rsync was running when the child was killed"
    );
    assert!(!status.success(), "the child was not killed: {status:?}");
    // DONE lines the child printed before it died.
    for line in lines {
        let line = line.unwrap();
        if let Some(index) = line.strip_prefix("ENGINE DONE ") {
            done.insert(index.parse().unwrap());
        }
    }
    // The guardian kills each group when the child dies; that takes a moment, so wait for it
    // (bounded), then insist.
    let deadline = Instant::now() + Duration::from_secs(10);
    while !alive_in_groups(&groups).is_empty() && Instant::now() < deadline {
        std::thread::sleep(Duration::from_millis(20));
    }
    let survivors = alive_in_groups(&groups);
    assert!(
        survivors.is_empty(),
        "rsync processes survived: {survivors:#?}"
    );
    done
}

#[test]
fn killed_mid_file_then_while_completing_it_then_resumed() {
    const TEST: &str = "killed_mid_file_then_while_completing_it_then_resumed";
    if let Ok(dir) = std::env::var(CHILD_ENV) {
        kill_test_child(Path::new(&dir));
        return;
    }
    require_rsync();
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = kill_test_paths(tmp.path());
    make_tree(&src, &[(BIG, BIG_LEN)]);
    std::fs::create_dir(&dst).unwrap();
    let mut entries = manifest(&src);
    let big = entries.iter().position(|e| e.path == BIG).unwrap();
    let plan = plan_streams(&entries, 2);
    let big_stream = plan.streams.iter().position(|s| s.contains(&big)).unwrap();
    assert_eq!(
        plan.streams[big_stream]
            .iter()
            .filter(|&&i| entries[i].kind == EntryKind::File)
            .count(),
        1,
        "the big file should have a stream to itself, so that stream's progress is its progress"
    );

    // First kill: a file is complete and the big one is a megabyte in.
    let done = run_child_until(TEST, tmp.path(), false, |done, stream, bytes| {
        assert!(
            !done.contains(&big),
            "the big file finished before the kill"
        );
        let file_done = done.iter().any(|&i| entries[i].kind == EntryKind::File);
        file_done && stream == big_stream && bytes >= 1 << 20
    });

    // SIGKILL of the whole group leaves rsync's temp file and nothing at the final name.
    let big_dir = dst.join("base/5");
    let temps: Vec<String> = std::fs::read_dir(&big_dir)
        .unwrap()
        .map(|i| i.unwrap().file_name().into_string().unwrap())
        .filter(|n| n.starts_with(".16384."))
        .collect();
    assert_eq!(temps.len(), 1, "expected one temp file, found {temps:?}");
    assert!(!dst.join(BIG).exists());
    assert!(
        !dst.join(PG_CONTROL).exists(),
        "pg_control was copied before the streams ended"
    );
    for &i in &done {
        entries[i].done = true;
    }
    let temp_len = big_dir.join(&temps[0]).metadata().unwrap().len();
    assert!(
        temp_len > 0 && temp_len < BIG_LEN as u64,
        "the temp file holds {temp_len} bytes"
    );
    // The first bytes of the big file are kept under its final name, to be completed; tidying
    // again changes nothing.
    let resume = job(&src, &dst, entries.clone());
    let cleanup = cleanup_partial(&resume).unwrap();
    assert_eq!(cleanup.removed, Vec::<PathBuf>::new());
    assert_eq!(cleanup.kept, vec![(big, temp_len)]);
    assert!(!big_dir.join(&temps[0]).exists());
    assert_eq!(dst.join(BIG).metadata().unwrap().len(), temp_len);
    assert_eq!(cleanup_partial(&resume).unwrap(), cleanup);

    // Second kill: while rsync --append-verify completes the big file in place, half a
    // megabyte further. It must not be reported done.
    let grown = |len: u64| len >= temp_len + (512 << 10);
    let done_again = run_child_until(TEST, tmp.path(), true, |_, stream, _| {
        stream == big_stream && grown(dst.join(BIG).metadata().unwrap().len())
    });
    assert!(!done_again.contains(&big), "the big file was reported done");
    let kept_len = dst.join(BIG).metadata().unwrap().len();
    assert!(
        grown(kept_len) && kept_len < BIG_LEN as u64,
        "the big file holds {kept_len} bytes after the second kill"
    );
    let mut resume = job(&src, &dst, entries.clone());
    let cleanup = cleanup_partial(&resume).unwrap();
    assert_eq!(cleanup.kept, vec![(big, kept_len)], "{cleanup:?}");
    resume.partials = cleanup.kept.iter().map(|&(i, _)| i).collect();

    // Done files must not be sent again: rsync would replace them through a new inode.
    let inodes: HashMap<usize, u64> = done
        .iter()
        .filter(|&&i| entries[i].kind == EntryKind::File)
        .map(|&i| (i, dst.join(&entries[i].path).metadata().unwrap().ino()))
        .collect();
    assert!(!inodes.is_empty());
    let (again, sent, read_back) = run_counting_present(&runtime(), &resume, 2);
    assert_reported_once(&entries, &again);
    // What --append-verify read back is reported as such (the rate must not count it), and
    // nothing else is.
    assert_eq!(read_back.values().sum::<u64>(), kept_len, "{read_back:?}");
    let tail = BIG_LEN as u64 - kept_len;
    assert!(
        sent[&big] <= tail + RSYNC_OVERHEAD,
        "the big file was sent again from its start: {} bytes for a tail of {tail}",
        sent[&big]
    );
    for (i, ino) in inodes {
        let now = dst.join(&entries[i].path).metadata().unwrap().ino();
        assert_eq!(now, ino, "{} was sent again", entries[i].path);
    }
    assert_same_tree(&src, &dst);
}

/// A copy of `src` at `dst` made without the engine (`cp -a`: modes and times kept).
fn copy_tree(src: &Path, dst: &Path) {
    let status = Command::new("cp")
        .args(["-a", src.to_str().unwrap(), dst.to_str().unwrap()])
        .status()
        .unwrap();
    assert!(status.success(), "cp -a failed");
}

#[test]
fn cleanup_removes_partials_and_temp_files_only() {
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, &[]);
    let dst = tmp.path().join("dst");
    copy_tree(&src, &dst);
    let mut entries = manifest(&src);
    let find = |p: &str| entries.iter().position(|e| e.path == p).unwrap();
    let (partial, complete, done) = (
        find("base/1/1001"),
        find("base/1/1002"),
        find("base/1/1003"),
    );
    // A partial under the final name (a clean stop with --partial leaves mtime 1970).
    std::fs::File::options()
        .write(true)
        .open(dst.join(&entries[partial].path))
        .unwrap()
        .set_modified(SystemTime::UNIX_EPOCH)
        .unwrap();
    entries[done].done = true;
    let keep = [
        "base/1/.1002.abc",       // too short to be rsync's
        "base/1/.unknown.abcdef", // not next to a manifest file of that name
        "base/1/1001.abcdef",     // no leading dot
        "notes.txt",              // not in the manifest
    ];
    for rel in keep {
        std::fs::write(dst.join(rel), b"x").unwrap();
    }
    let temps = ["base/1/.1003.Ab12Cd", "base/1/.odd name with spaces.zzzzzz"];
    for rel in temps {
        std::fs::write(dst.join(rel), b"x").unwrap();
    }
    let cleanup = cleanup_partial(&job(&src, &dst, entries.clone())).unwrap();
    let mut expected: Vec<PathBuf> = temps.iter().map(|t| dst.join(t)).collect();
    expected.push(dst.join(&entries[partial].path));
    expected.sort();
    assert_eq!(cleanup.removed, expected);
    assert!(cleanup.kept.is_empty(), "small files are sent again whole");
    for rel in keep {
        assert!(dst.join(rel).exists(), "{rel} was removed");
    }
    assert!(dst.join(&entries[complete].path).exists());
    assert!(dst.join(&entries[done].path).exists());
}

/// Writes the first `len` bytes of `src` to `dst` with the time `mtime`.
fn write_prefix(src: &Path, dst: &Path, len: usize, mtime: SystemTime) {
    let data = std::fs::read(src).unwrap();
    std::fs::write(dst, &data[..len]).unwrap();
    std::fs::File::options()
        .write(true)
        .open(dst)
        .unwrap()
        .set_modified(mtime)
        .unwrap();
}

#[test]
fn kept_partials_are_completed_from_where_they_stopped_and_checked() {
    require_rsync();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    let (good, bad, small) = ("base/5/good", "base/5/bad", "base/1/1059");
    let big = 4 << 20;
    make_tree(&src, &[(good, big), (bad, big)]);
    let dst = tmp.path().join("dst");
    copy_tree(&src, &dst);
    let entries = manifest(&src);
    let find = |p: &str| entries.iter().position(|e| e.path == p).unwrap();
    let now = SystemTime::now();
    // good: two temp files from two kills; the longer one is kept, the other removed.
    std::fs::remove_file(dst.join(good)).unwrap();
    let (longer, shorter) = ("base/5/.good.Ab12Cd", "base/5/.good.zz9Zz9");
    write_prefix(&src.join(good), &dst.join(longer), 3 << 20, now);
    write_prefix(&src.join(good), &dst.join(shorter), 1 << 20, now);
    // bad: bytes under the final name that are not the backup's (a different cluster's file
    // reused by --force, or a torn write): kept, and --append-verify's checksum catches them.
    std::fs::write(dst.join(bad), vec![0x5a; 2 << 20]).unwrap();
    // small: a partial too small to be worth keeping.
    let small_len = usize::try_from(entries[find(small)].size).unwrap();
    assert!((small_len as u64) < RESUME_PARTIAL_MIN_BYTES);
    write_prefix(&src.join(small), &dst.join(small), small_len / 2, now);

    let mut resume = job(&src, &dst, entries.clone());
    let cleanup = cleanup_partial(&resume).unwrap();
    assert_eq!(
        cleanup.removed,
        vec![dst.join(small), dst.join(shorter)],
        "removed"
    );
    let mut kept = vec![(find(good), 3 << 20), (find(bad), 2 << 20)];
    kept.sort_unstable();
    assert_eq!(cleanup.kept, kept);
    assert!(!dst.join(longer).exists());
    resume.partials = cleanup.kept.iter().map(|&(i, _)| i).collect();

    let (done, sent) = run_counting_bytes(&rt, &resume, 2);
    assert_reported_once(&entries, &done);
    assert_same_tree(&src, &dst);
    assert!(
        sent[&find(good)] <= (1 << 20) + RSYNC_OVERHEAD,
        "good: only the last MiB should be sent, not {}",
        sent[&find(good)]
    );
    assert!(
        sent[&find(bad)] > 2 << 20,
        "bad: its wrong first bytes must be sent again after the checksum failed, sent {}",
        sent[&find(bad)]
    );
}

#[test]
fn a_failing_stream_stops_the_others() {
    require_rsync();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, &[("base/5/a", 4 << 20), ("base/5/b", 4 << 20)]);
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    let mut entries = manifest(&src);
    // A file the backup lacks, large enough to get a stream with only small files besides it.
    entries.push(ManifestEntry {
        root: 0,
        path: "base/5/missing".into(),
        kind: EntryKind::File,
        size: 5 << 20,
        mtime: 1_600_000_000,
        done: false,
    });
    let mut job = job(&src, &dst, entries.clone());
    // 4 MB at 250 kB/s: the big streams are far from done when the short one fails.
    job.extra_args = vec!["--bwlimit=250".into()];
    let plan = plan_streams(&entries, 3);
    assert_eq!(plan.streams.len(), 3);
    let mut done = Vec::new();
    let err = rt
        .block_on(run_streams(&job, &plan, |e| {
            if let RsyncEvent::FileDone { index, .. } = e {
                done.push(index);
            }
        }))
        .expect_err("a missing source file must fail the copy");
    assert_eq!(err.kind, ErrorKind::Rsync);
    assert!(err.message.contains("exit code 23"), "{}", err.message);
    assert!(!err.retryable);
    assert_hint(&err, "fix the cause shown in DETAIL");
    let detail = err.detail.unwrap_or_default();
    assert!(
        detail.contains("missing"),
        "stderr tail lacks the cause: {detail}"
    );
    assert!(
        detail.lines().count() <= DETAIL_LINES,
        "DETAIL keeps more than {DETAIL_LINES} lines: {detail}"
    );
    for path in ["base/5/a", "base/5/b", PG_CONTROL] {
        let i = entries.iter().position(|e| e.path == path).unwrap();
        assert!(
            !done.contains(&i),
            "{path} was completed: the stream was not stopped"
        );
    }
    let left = rsync_groups_mentioning(dst.to_str().unwrap());
    assert!(
        left.is_empty(),
        "rsync still running after the error: {left:?}"
    );

    // A source directory that does not exist: code 3, with rsync's complaint as detail.
    job.source = tmp.path().join("nowhere").to_str().unwrap().into();
    job.extra_args.clear();
    let err = rt
        .block_on(run_streams(&job, &plan_streams(&entries, 1), |_| {}))
        .expect_err("a missing source must fail");
    assert!(
        err.message.starts_with(
            "rsync failed with exit code 3 (errors selecting input/output files, dirs) copying"
        ),
        "{}",
        err.message
    );
    assert!(!err.retryable);
    assert!(err.detail.unwrap_or_default().contains("nowhere"));
}

#[test]
fn copies_through_a_remote_shell() {
    require_rsync();
    let tmp = tempfile::tempdir().unwrap();
    let src = tmp.path().join("src");
    make_tree(&src, &[("base/5/16384", 1 << 20)]);
    let dst = tmp.path().join("dst");
    std::fs::create_dir(&dst).unwrap();
    // Stands in for ssh: drops the host (and -l user) and runs the command as ssh would, through
    // a shell; it also leaves a mark so the test knows it was used.
    let mark = tmp.path().join("rsh-used");
    let rsh = tmp.path().join("fake-ssh");
    std::fs::write(
        &rsh,
        format!(
            "#!/bin/sh\nif [ \"$1\" = -l ]; then shift 2; fi\nshift\ntouch '{}'\nexec sh -c \"$*\"\n",
            mark.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&rsh, std::fs::Permissions::from_mode(0o755)).unwrap();
    let entries = manifest(&src);
    let mut job = job(&src, &dst, entries.clone());
    job.source = format!("backup-host:{}/", src.display());
    job.rsh = Some(rsh.to_str().unwrap().into());
    let done = run(&runtime(), &job, 2);
    assert!(mark.exists(), "rsync did not use the remote shell");
    assert_reported_once(&entries, &done);
    assert_same_tree(&src, &dst);
    let by_kind: BTreeMap<String, usize> = done.iter().fold(BTreeMap::new(), |mut m, &i| {
        *m.entry(format!("{:?}", entries[i].kind)).or_default() += 1;
        m
    });
    assert_eq!(by_kind.get("Symlink"), Some(&1));
}

/// A tree with one big file under `dir`, and a job copying it at 1 MB/s per stream, so that it
/// can be stopped mid-file. Returns the job and its target directory.
fn throttled_big_copy(dir: &Path) -> (RsyncJob, PathBuf) {
    let (src, dst) = kill_test_paths(dir);
    make_tree(&src, &[(BIG, BIG_LEN)]);
    std::fs::create_dir(&dst).unwrap();
    let mut job = job(&src, &dst, manifest(&src));
    job.extra_args = vec!["--bwlimit=1000".into()];
    (job, dst)
}

#[test]
fn dropping_the_copy_stops_and_reaps_every_rsync() {
    require_rsync();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let (job, dst) = throttled_big_copy(tmp.path());
    let plan = plan_streams(&job.entries, 2);
    let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
    let needle = dst.to_str().unwrap();
    rt.block_on(async {
        let mut copy = std::pin::pin!(run_streams(&job, &plan, move |event| {
            if matches!(event, RsyncEvent::FileDone { .. }) {
                let _ = tx.send(());
            }
        }));
        tokio::select! {
            result = &mut copy => panic!("the copy ended before it was dropped: {result:?}"),
            _ = rx.recv() => {}
        }
        assert!(
            !rsync_groups_mentioning(needle).is_empty(),
            "no rsync was running when the copy was dropped"
        );
        // What a caller's select! on SIGTERM does: drop the copy. The drop returns only once
        // every rsync process is gone.
    });
    let left = rsync_groups_mentioning(needle);
    assert!(
        left.is_empty(),
        "rsync still running after the drop: {left:?}"
    );
    assert!(!dst.join(BIG).exists());
    assert!(!dst.join(PG_CONTROL).exists());
}

#[test]
fn a_killed_rsync_is_a_retryable_failure() {
    require_rsync();
    let rt = runtime();
    let tmp = tempfile::tempdir().unwrap();
    let (job, dst) = throttled_big_copy(tmp.path());
    let plan = plan_streams(&job.entries, 2);
    let needle = dst.to_str().unwrap().to_string();
    let mut killed = BTreeSet::new();
    let err = rt
        .block_on(run_streams(&job, &plan, |event| {
            if killed.is_empty() && matches!(event, RsyncEvent::FileDone { .. }) {
                // Kill the top rsync of every running stream (its group leader), as an
                // operator's `kill -9` or the OOM killer would.
                killed = rsync_groups_mentioning(&needle);
                for &group in &killed {
                    // SAFETY: plain kill(2) of a pid that is alive (a group leader seen above).
                    unsafe {
                        libc::kill(group, libc::SIGKILL);
                    }
                }
            }
        }))
        .expect_err("a killed rsync must fail the copy");
    assert!(!killed.is_empty(), "no rsync was running");
    assert_eq!(err.kind, ErrorKind::Rsync);
    assert!(err.retryable, "a killed rsync is worth retrying");
    assert!(
        err.message
            .starts_with("rsync was killed by signal 9 copying"),
        "{}",
        err.message
    );
    assert_hint(&err, "re-sends only the rest");
    assert!(rsync_groups_mentioning(&needle).is_empty());
}

#[test]
fn copies_tablespaces_to_their_own_targets() {
    require_rsync();
    let tmp = tempfile::tempdir().unwrap();
    let (src, dst) = kill_test_paths(tmp.path());
    make_tree(&src, &[]);
    std::fs::create_dir(&dst).unwrap();
    let (ts_src, ts_dst) = (tmp.path().join("ts_src"), tmp.path().join("ts_dst"));
    let mut rng = StdRng::seed_from_u64(3);
    for i in 0..5 {
        let rel = format!("PG_15_202209061/16384/{}", 30000 + i);
        write_file(&ts_src, &rel, 50_000 * i, &mut rng, 0o600);
    }
    age_tree(&ts_src);
    std::fs::create_dir(&ts_dst).unwrap();
    let mut entries = manifest(&src);
    entries.extend(
        manifest(&ts_src)
            .into_iter()
            .map(|e| ManifestEntry { root: 16385, ..e }),
    );
    let mut job = job(&src, &dst, entries.clone());
    job.tablespaces = vec![TreeSource {
        root: 16385,
        source: ts_src.to_str().unwrap().into(),
        dest: ts_dst.clone(),
    }];
    let done = run(&runtime(), &job, 3);
    assert_reported_once(&entries, &done);
    assert_same_tree(&src, &dst);
    assert_same_tree(&ts_src, &ts_dst);
}
