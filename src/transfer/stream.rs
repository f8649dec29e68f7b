//! The streaming copy engine: the backup's files come from the Barman host as `tar` archives
//! over ssh (one per stream, balanced by bytes as rsync's streams are), read here member by
//! member; each file is written to a temporary name beside its target, checked against the
//! list's size and backup_manifest's checksum as its bytes arrive, given its mode and the
//! backup's mtime, synced, renamed into place, and only then reported done. Selected by
//! [`COPY_ENGINE_ENV`]; rsync stays the engine of a `--force` into a used directory, where its
//! delta sends only what differs.
//!
//! Crash safety, the same rules as rsync's engine, so either engine resumes the other's copy:
//! * temporary files are named as rsync names its own (`.<name>.XXXXXX`), so
//!   [`rsync::cleanup_partial`](super::rsync::cleanup_partial) tidies what a kill left: the
//!   longest part of a big file is kept under the file's final name, the rest removed;
//! * a kept part is continued from its length (`tail -c +N` on the Barman host) only where the
//!   manifest has the file's checksum, computed over the kept bytes read back and the tail as
//!   it arrives: a mismatch means the kept bytes are bad, and the file is sent again whole.
//!   Without a checksum (no backup_manifest) the kept part is not trusted: the file is sent
//!   again whole;
//! * `global/pg_control` comes last, after every stream succeeded; directories get the
//!   backup's mtimes once every file is in them.
//!
//! Must not: read or write the store (the caller checkpoints the [`RsyncEvent`]s it gets), or
//! decide to retry.

use std::collections::{BTreeSet, HashMap};
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};
use std::process::{ExitStatus, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use states::{EntryKind, ManifestEntry};
use tokio::sync::mpsc;

use super::checksums::{sum_prefix, Checksums, Running};
use super::guardian::{thread_refused, GuardedThreads, Spawner};
use super::rsync::{forward, Msg, RsyncEvent, RsyncJob, RsyncStats};
use super::streams::StreamPlan;
use crate::barman::Barman;
use crate::durable::io_error;
use crate::error::{Error, ErrorKind, Result};

/// The environment variable that chooses the Barman-mode copy engine: `rsync` (the default) or
/// `stream`.
pub const COPY_ENGINE_ENV: &str = "PGREPLICA_COPY_ENGINE";

/// The copy engines of a Barman-mode Transfer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    /// Parallel rsync streams ([`super::rsync`]).
    Rsync,
    /// Parallel tar streams read in-process (this module).
    Stream,
}

impl Engine {
    /// The engine [`COPY_ENGINE_ENV`] chooses.
    pub fn from_env() -> Result<Engine> {
        Engine::parse(std::env::var(COPY_ENGINE_ENV).ok())
    }

    /// The engine `setting` (the variable's value, if set) chooses.
    fn parse(setting: Option<String>) -> Result<Engine> {
        match setting.as_deref().map(str::trim) {
            None | Some("") | Some("rsync") => Ok(Engine::Rsync),
            Some("stream") => Ok(Engine::Stream),
            Some(other) => Err(Error::new(
                ErrorKind::Config,
                format!("{COPY_ENGINE_ENV} is neither \"rsync\" nor \"stream\": \"{other}\""),
            )
            .hint(format!(
                "set {COPY_ENGINE_ENV} to rsync or stream, or unset it"
            ))),
        }
    }
}

/// Where the streaming engine reads: the Barman host and each list root's directory there.
#[derive(Clone, Debug)]
pub struct StreamSource {
    /// The Barman client that builds the remote commands.
    pub barman: Barman,
    /// Each list root (0: the data directory, else a tablespace OID) and its directory on the
    /// Barman host.
    pub remote_dirs: Vec<(u32, String)>,
    /// `--bwlimit`: KiB per second per stream.
    pub bwlimit_kbps: Option<u32>,
}

/// The manifest's own name in the list: copied before the other files, whose checksums it holds.
pub(crate) const MANIFEST: &str = "backup_manifest";

/// Bytes read from the stream at a time.
const CHUNK: usize = 256 * 1024;

/// Progress is reported at least every this many bytes of a stream.
const PROGRESS_EVERY: u64 = 1 << 20;

/// Copies the planned entries of `job` from `source`: `backup_manifest` first (when it is to
/// be copied), then the streams, then `global/pg_control`, and last gives the directories the
/// backup's times; calls `on_event` as files complete. Dropping the future stops every ssh and
/// waits until they are reaped.
pub async fn run_streams(
    source: &StreamSource,
    job: &RsyncJob,
    plan: &StreamPlan,
    on_event: impl FnMut(RsyncEvent),
) -> Result<RsyncStats> {
    let stats = copy_planned(source, job, plan, true, on_event).await?;
    // The files are in: the directories get the backup's times, which writing into them changed.
    for entry in job.entries.iter().filter(|e| e.kind == EntryKind::Dir) {
        if let Some(dest) = job.tree(entry.root).map(|(_, dest)| dest) {
            let dir = dest.join(&entry.path);
            let set = std::fs::File::open(&dir).and_then(|d| d.set_modified(mtime_of(entry)));
            set.map_err(|e| io_error("set the time of", &dir, e))?;
        }
    }
    Ok(stats)
}

/// Completes the kept partial files `indices` of `job` (and `backup_manifest` first, when it is
/// among them) in one stream, as [`run_streams`] does: each from its tail where backup_manifest
/// has its checksum, else whole. The rsync engine's resume uses it for the files a killed copy
/// left in part, since `tail -c` sends the missing bytes without the whole-file checksum pass
/// on both ends that rsync's `--append-verify` makes. Files are not synced (rsync's are not
/// either: a killed pgreplica leaves the page cache behind); directories are left to the caller.
pub async fn continue_partials(
    source: &StreamSource,
    job: &RsyncJob,
    indices: Vec<usize>,
    on_event: impl FnMut(RsyncEvent),
) -> Result<RsyncStats> {
    let plan = StreamPlan {
        streams: vec![indices],
        last: None,
    };
    // As rsync leaves its files: in the page cache, which a killed pgreplica does not lose.
    copy_planned(source, job, &plan, false, on_event).await
}

/// The copy of [`run_streams`] without the directories' times; `sync`: each file is synced
/// before it is reported done.
async fn copy_planned(
    source: &StreamSource,
    job: &RsyncJob,
    plan: &StreamPlan,
    sync: bool,
    mut on_event: impl FnMut(RsyncEvent),
) -> Result<RsyncStats> {
    let started = Instant::now();
    let mut stats = RsyncStats::default();
    let mut shared = Shared {
        source: source.clone(),
        entries: job.entries.clone(),
        dests: std::iter::once((0, job.dest.clone()))
            .chain(job.tablespaces.iter().map(|t| (t.root, t.dest.clone())))
            .collect(),
        partials: job.partials.clone(),
        checksums: Checksums::default(),
        sync,
    };
    let mut reported = vec![false; job.entries.len()];
    let manifest = plan
        .streams
        .iter()
        .flatten()
        .copied()
        .find(|&i| job.entries[i].root == 0 && job.entries[i].path == MANIFEST);
    // The phases of one file report as the stream after the plan's, as rsync's last phase does.
    let solo = plan.streams.len();
    if let Some(i) = manifest {
        let phase = Arc::new(shared);
        run_phase(
            &phase,
            vec![vec![i]],
            Some((solo, 0)),
            &mut reported,
            &mut stats,
            &mut on_event,
        )
        .await?;
        // The phase's threads have ended, and their references with them.
        shared = Arc::try_unwrap(phase).unwrap_or_else(|still_shared| (*still_shared).clone());
    }
    let manifest_bytes = stats.bytes_sent;
    let local_manifest = job.dest.join(MANIFEST);
    if local_manifest.is_file() {
        shared.checksums = Checksums::read(&local_manifest)?;
        crate::debug!(
            "checking copied files against the {} checksums of backup_manifest",
            shared.checksums.len()
        );
    }
    let shared = Arc::new(shared);
    let streams: Vec<Vec<usize>> = plan
        .streams
        .iter()
        .map(|s| s.iter().copied().filter(|&i| !reported[i]).collect())
        .collect();
    run_phase(
        &shared,
        streams,
        None,
        &mut reported,
        &mut stats,
        &mut on_event,
    )
    .await?;
    if let Some(last) = plan.last {
        run_phase(
            &shared,
            vec![vec![last]],
            Some((solo, manifest_bytes)),
            &mut reported,
            &mut stats,
            &mut on_event,
        )
        .await?;
    }
    stats.duration = started.elapsed();
    Ok(stats)
}

/// What every stream thread reads.
#[derive(Clone)]
struct Shared {
    source: StreamSource,
    entries: Vec<ManifestEntry>,
    dests: Vec<(u32, PathBuf)>,
    partials: BTreeSet<usize>,
    checksums: Checksums,
    /// Each file is synced before it is reported done.
    sync: bool,
}

impl Shared {
    fn dest(&self, root: u32) -> Option<&Path> {
        self.dests
            .iter()
            .find(|(r, _)| *r == root)
            .map(|(_, d)| d.as_path())
    }

    fn remote(&self, entry: &ManifestEntry) -> Option<String> {
        let (_, dir) = self
            .source
            .remote_dirs
            .iter()
            .find(|(r, _)| *r == entry.root)?;
        let dir = dir.trim_end_matches('/');
        Some(if entry.path == "." {
            dir.to_string()
        } else {
            format!("{dir}/{}", entry.path)
        })
    }

    fn target(&self, entry: &ManifestEntry) -> Result<PathBuf> {
        let dest = self.dest(entry.root).ok_or_else(|| unknown_root(entry))?;
        Ok(if entry.path == "." {
            dest.to_path_buf()
        } else {
            dest.join(&entry.path)
        })
    }
}

/// Runs one thread per stream and forwards their events until every thread has finished; the
/// first failure stops the other streams.
///
/// `solo`: a phase of one stream (the manifest, `pg_control`) that reports its bytes as stream
/// number `slot`, counted on from `base`, so the caller's per-stream sums never go back.
async fn run_phase(
    shared: &Arc<Shared>,
    streams: Vec<Vec<usize>>,
    solo: Option<(usize, u64)>,
    reported: &mut [bool],
    stats: &mut RsyncStats,
    on_event: &mut impl FnMut(RsyncEvent),
) -> Result<()> {
    let (tx, rx) = mpsc::unbounded_channel();
    let mut threads = GuardedThreads::default();
    for (n, indices) in streams.into_iter().enumerate() {
        if indices.is_empty() {
            continue;
        }
        let (tx, shared) = (tx.clone(), shared.clone());
        threads
            .spawn("pgreplica-stream", move |spawner| {
                let (number, base) = solo.unwrap_or((n, 0));
                let mut stream = Stream {
                    number,
                    shared: &shared,
                    spawner,
                    tx: &tx,
                    bytes: base,
                    reported_at: base,
                    present: 0,
                    limit: shared.source.bwlimit_kbps.map(Pace::new),
                };
                if let Err(e) = stream.run(&indices) {
                    let _ = tx.send(Msg::Failed(e));
                }
            })
            .map_err(|e| thread_refused("a copy stream", e))?;
    }
    drop(tx);
    forward(rx, threads, &shared.entries, reported, stats, on_event).await
}

/// One stream's thread.
struct Stream<'a> {
    number: usize,
    shared: &'a Shared,
    spawner: &'a Spawner,
    tx: &'a mpsc::UnboundedSender<Msg>,
    /// Bytes received by this stream so far.
    bytes: u64,
    /// `bytes` when progress was last reported.
    reported_at: u64,
    /// Of `bytes`, those found in place: the kept parts of files continued from their tails.
    present: u64,
    limit: Option<Pace>,
}

impl Stream<'_> {
    /// Continues the stream's kept partial files that can be checked, then sends the rest in
    /// one tar archive.
    fn run(&mut self, indices: &[usize]) -> Result<()> {
        let mut whole = Vec::with_capacity(indices.len());
        for &i in indices {
            let continued = self.shared.partials.contains(&i) && self.continue_partial(i)?;
            if !continued {
                whole.push(i);
            }
        }
        if whole.is_empty() {
            return Ok(());
        }
        self.tar(&whole)
    }

    /// Completes entry `index`, whose first bytes a killed copy left at its final name, with
    /// the tail from the Barman host, checking the whole file against backup_manifest. Returns
    /// false when the file must be sent again whole: no checksum to check the kept bytes with,
    /// or the kept bytes do not match.
    fn continue_partial(&mut self, index: usize) -> Result<bool> {
        let entry = &self.shared.entries[index];
        let target = self.shared.target(entry)?;
        let Some(expected) = self.shared.checksums.of(entry.root, &entry.path) else {
            crate::info!(
                "\"{}\" has no checksum in backup_manifest to check its kept bytes with: it is copied again whole",
                entry.path
            );
            return Ok(false);
        };
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .open(&target)
            .map_err(|e| io_error("open", &target, e))?;
        let kept = file
            .metadata()
            .map_err(|e| io_error("read", &target, e))?
            .len();
        let algorithm = expected.algorithm;
        // The kept bytes are read back while the tail arrives, where their checksum and the
        // tail's join into the file's (CRC-32C); before it otherwise.
        let (mut sum, reading_back) = if Running::joins(algorithm) {
            let path = target.clone();
            let reader = std::thread::Builder::new()
                .name("pgreplica-readback".into())
                .spawn(move || sum_prefix(&path, kept, algorithm))
                .map_err(|e| thread_refused("a read-back", e))?;
            (Running::new(algorithm), Some(reader))
        } else {
            let sum =
                sum_prefix(&target, kept, algorithm).map_err(|e| io_error("read", &target, e))?;
            (sum, None)
        };
        // The kept bytes count where the copy stands, not in its rate.
        self.bytes += kept;
        self.present += kept;
        let remote = self
            .shared
            .remote(entry)
            .ok_or_else(|| unknown_root(entry))?;
        let argv = self.shared.source.barman.tail_argv(&remote, kept);
        let mut command = std::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let Some(mut child) = self.spawner.spawn(&mut command).map_err(spawn_error)? else {
            return Err(stopped());
        };
        let stderr = drain(child.take_stderr());
        let mut stdout = std::io::BufReader::new(child.take_stdout().expect("piped"));
        let mut mode = String::new();
        let received = match std::io::BufRead::read_line(&mut stdout, &mut mode) {
            Ok(_) => match u32::from_str_radix(mode.trim(), 8) {
                Ok(mode) => self
                    .pour(&mut stdout, &mut file, &mut sum, &target)
                    .map(|n| (n, mode)),
                Err(_) => Err(bad_member(entry, "a file without its mode")),
            },
            Err(e) => Err(stream_error(&self.shared.source.barman, &e)),
        };
        let (received, mode) = settle(
            &self.shared.source.barman,
            received,
            stdout,
            child,
            stderr,
            "tail",
        )?;
        let sum = match reading_back {
            Some(reader) => {
                let kept_sum = reader
                    .join()
                    .map_err(|_| Error::bug("the read-back thread panicked"))?
                    .map_err(|e| io_error("read", &target, e))?;
                kept_sum
                    .followed_by(sum, received)
                    .ok_or_else(|| Error::bug("a checksum that does not join"))?
            }
            None => sum,
        };
        if kept + received != entry.size || sum.hex() != expected.hex {
            crate::notice!(
                "the kept bytes of \"{}\" do not match backup_manifest's checksum: it is copied again whole",
                entry.path
            );
            return Ok(false);
        }
        self.seal(&file, &target, entry, mode & 0o7777)?;
        self.done(index, received, true);
        Ok(true)
    }

    /// Sends `indices` in one tar archive and writes each member as it comes.
    fn tar(&mut self, indices: &[usize]) -> Result<()> {
        let mut wanted: HashMap<Vec<u8>, usize> = HashMap::with_capacity(indices.len());
        let mut list = Vec::new();
        for &i in indices {
            let entry = &self.shared.entries[i];
            let remote = self
                .shared
                .remote(entry)
                .ok_or_else(|| unknown_root(entry))?;
            list.extend_from_slice(remote.as_bytes());
            list.push(0);
            wanted.insert(remote.into_bytes(), i);
        }
        let argv = self.shared.source.barman.tar_stream_argv();
        let mut command = std::process::Command::new(&argv[0]);
        command
            .args(&argv[1..])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let Some(mut child) = self.spawner.spawn(&mut command).map_err(spawn_error)? else {
            return Err(stopped());
        };
        let stderr = drain(child.take_stderr());
        // The list goes in on its own thread: tar writes while it reads it.
        let mut stdin = child.take_stdin().expect("piped");
        let feeder = std::thread::spawn(move || stdin.write_all(&list));
        let mut archive = tar::Archive::new(child.take_stdout().expect("piped"));
        let read = self.unpack(&mut archive, &mut wanted);
        let read = settle(
            &self.shared.source.barman,
            read,
            archive.into_inner(),
            child,
            stderr,
            "tar",
        );
        let _ = feeder.join();
        read?;
        if let Some((name, _)) = wanted.into_iter().next() {
            return Err(Error::new(
                ErrorKind::Barman,
                format!(
                    "the Barman host's tar ended without sending \"{}\"",
                    String::from_utf8_lossy(&name)
                ),
            )
            .hint(format!(
                "check that the backup still exists on the Barman host ({}), then run \"{}\": the copy goes on where it stopped",
                self.shared.source.barman.manual_command(&["list-backups", &self.shared.source.barman.server]),
                crate::paste::resume()
            ))
            .retryable());
        }
        Ok(())
    }

    /// Writes each member of `archive` as the entry `wanted` names for it, taking it out.
    fn unpack(
        &mut self,
        archive: &mut tar::Archive<impl Read>,
        wanted: &mut HashMap<Vec<u8>, usize>,
    ) -> Result<()> {
        let members = archive
            .entries()
            .map_err(|e| stream_error(&self.shared.source.barman, &e))?;
        for member in members {
            let mut member = member.map_err(|e| stream_error(&self.shared.source.barman, &e))?;
            let name = member.path_bytes();
            let name = name.strip_suffix(b"/").unwrap_or(&name).to_vec();
            let Some(index) = wanted.remove(&name) else {
                return Err(Error::new(
                    ErrorKind::Barman,
                    format!(
                        "the Barman host sent \"{}\", which the copy did not ask for",
                        String::from_utf8_lossy(&name)
                    ),
                )
                .hint(other_engine_hint()));
            };
            self.write_member(index, &mut member)?;
        }
        Ok(())
    }

    /// Writes one archive member as entry `index`.
    fn write_member(&mut self, index: usize, member: &mut tar::Entry<impl Read>) -> Result<()> {
        let entry = &self.shared.entries[index];
        let target = self.shared.target(entry)?;
        let header = member.header();
        let mode = header.mode().unwrap_or(0o600) & 0o7777;
        let kind = header.entry_type();
        if kind.is_dir() {
            create_dirs(&target)?;
            std::fs::set_permissions(&target, std::fs::Permissions::from_mode(mode))
                .map_err(|e| io_error("set the mode of", &target, e))?;
            self.done(index, 0, false);
            return Ok(());
        }
        let parent = target.parent().unwrap_or(Path::new("/"));
        create_dirs(parent)?;
        let name = target.file_name().map(|n| n.to_string_lossy().into_owned());
        let temp = parent.join(format!(".{}.{}", name.unwrap_or_default(), temp_suffix()));
        if kind.is_symlink() {
            let link = member
                .link_name()
                .ok()
                .flatten()
                .ok_or_else(|| bad_member(entry, "a link without a target"))?;
            std::os::unix::fs::symlink(&link, &temp)
                .map_err(|e| io_error("create the link", &temp, e))?;
            std::fs::rename(&temp, &target).map_err(|e| io_error("rename", &temp, e))?;
            self.done(index, 0, false);
            return Ok(());
        }
        if !kind.is_file() {
            return Err(bad_member(entry, "neither a file, a directory nor a link"));
        }
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(mode | 0o600)
            .open(&temp)
            .map_err(|e| io_error("create", &temp, e))?;
        let expected = self.shared.checksums.of(entry.root, &entry.path);
        let mut sum =
            Running::new(expected.map_or(super::checksums::Algorithm::Crc32c, |e| e.algorithm));
        let received = self.pour(member, &mut file, &mut sum, &temp)?;
        if received != entry.size {
            let _ = std::fs::remove_file(&temp);
            return Err(Error::new(
                ErrorKind::Barman,
                format!(
                    "the Barman host sent {received} bytes of \"{}\", but the backup's list says {}",
                    entry.path, entry.size
                ),
            )
            .hint(format!(
                "the backup changed on the Barman host after the clone listed it, or is damaged there: clone from another backup with --backup-id; list them with: {}",
                self.shared.source.barman.manual_command(&["list-backups", &self.shared.source.barman.server])
            )));
        }
        if let Some(expected) = expected {
            if sum.hex() != expected.hex {
                let _ = std::fs::remove_file(&temp);
                return Err(super::checksums::mismatch(&entry.path, expected));
            }
        }
        self.seal(&file, &temp, entry, mode)?;
        std::fs::rename(&temp, &target).map_err(|e| io_error("rename", &temp, e))?;
        self.done(index, received, expected.is_some());
        Ok(())
    }

    /// Copies `from` to the end of `to` (named `path`), adding the bytes to `sum`, at the
    /// stream's pace; returns the bytes copied.
    fn pour(
        &mut self,
        from: &mut impl Read,
        to: &mut std::fs::File,
        sum: &mut Running,
        path: &Path,
    ) -> Result<u64> {
        let mut buf = vec![0; CHUNK];
        let mut copied = 0_u64;
        loop {
            let n = match from.read(&mut buf) {
                Ok(0) => break,
                Ok(n) => n,
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(stream_error(&self.shared.source.barman, &e)),
            };
            sum.update(&buf[..n]);
            to.write_all(&buf[..n])
                .map_err(|e| io_error("write", path, e))?;
            copied += n as u64;
            self.bytes += n as u64;
            if let Some(limit) = &mut self.limit {
                limit.after(n as u64);
            }
            if self.bytes - self.reported_at >= PROGRESS_EVERY {
                self.reported_at = self.bytes;
                let _ = self.tx.send(Msg::Progress {
                    stream: self.number,
                    bytes: self.bytes,
                    present: self.present,
                });
            }
        }
        Ok(copied)
    }

    /// Gives a complete file the backup's mode and mtime, and syncs it unless the copy's files
    /// stay in the page cache as rsync leaves them.
    fn seal(
        &self,
        file: &std::fs::File,
        path: &Path,
        entry: &ManifestEntry,
        mode: u32,
    ) -> Result<()> {
        file.set_permissions(std::fs::Permissions::from_mode(mode))
            .map_err(|e| io_error("set the mode of", path, e))?;
        file.set_modified(mtime_of(entry))
            .map_err(|e| io_error("set the time of", path, e))?;
        if !self.shared.sync {
            return Ok(());
        }
        file.sync_all().map_err(|e| io_error("sync", path, e))
    }

    /// Reports entry `index` done; `checked`: its bytes matched backup_manifest's checksum.
    fn done(&mut self, index: usize, bytes_sent: u64, checked: bool) {
        let _ = self.tx.send(Msg::Done {
            index,
            bytes_sent,
            checked,
        });
        let _ = self.tx.send(Msg::Progress {
            stream: self.number,
            bytes: self.bytes,
            present: self.present,
        });
        self.reported_at = self.bytes;
    }
}

/// Keeps a stream at `--bwlimit`: after each read, sleeps until the bytes so far fit the rate.
struct Pace {
    bytes_per_s: u64,
    started: Instant,
    bytes: u64,
}

impl Pace {
    fn new(kbps: u32) -> Pace {
        Pace {
            bytes_per_s: u64::from(kbps.max(1)) * 1024,
            started: Instant::now(),
            bytes: 0,
        }
    }

    fn after(&mut self, bytes: u64) {
        self.bytes += bytes;
        let due = Duration::from_secs_f64(self.bytes as f64 / self.bytes_per_s as f64);
        if let Some(early) = due.checked_sub(self.started.elapsed()) {
            std::thread::sleep(early);
        }
    }
}

/// Creates `dir` and its missing parents (mode 0700, as PostgreSQL's own directories; the
/// stream that lists a directory gives it the backup's mode).
fn create_dirs(dir: &Path) -> Result<()> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error("create the directory", dir, e))
}

/// Six letters and digits, as rsync's temporary names end, so its clean-up knows ours.
fn temp_suffix() -> String {
    use std::sync::atomic::{AtomicU64, Ordering};
    static COUNTER: AtomicU64 = AtomicU64::new(0);
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789";
    let nanos = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |d| u64::from(d.subsec_nanos()));
    let mut n = nanos
        ^ (u64::from(std::process::id()) << 20)
        ^ COUNTER
            .fetch_add(1, Ordering::Relaxed)
            .wrapping_mul(0x9E37_79B9_7F4A_7C15);
    (0..6)
        .map(|_| {
            let c = ALPHABET[(n % 62) as usize] as char;
            n /= 62;
            c
        })
        .collect()
}

fn mtime_of(entry: &ManifestEntry) -> SystemTime {
    let secs = entry.mtime;
    if secs >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(secs.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(secs.unsigned_abs())
    }
}

/// Collects a child's stderr on a thread of its own, so a chatty child never blocks on it.
fn drain(stderr: Option<std::process::ChildStderr>) -> std::thread::JoinHandle<Vec<u8>> {
    std::thread::spawn(move || {
        let mut bytes = Vec::new();
        if let Some(mut pipe) = stderr {
            let _ = pipe.read_to_end(&mut bytes);
        }
        bytes
    })
}

/// Ends a remote `what` whose output was read with `read`'s result: a failure here (the disk,
/// a checksum) stops the child and is the cause; otherwise the child is waited for, and its
/// own failure (ssh's, the Barman host's) explains a stream that broke or came up short.
fn settle<T>(
    barman: &Barman,
    read: Result<T>,
    stdout: impl Read,
    child: super::guardian::GuardedChild<'_>,
    stderr: std::thread::JoinHandle<Vec<u8>>,
    what: &str,
) -> Result<T> {
    let ours = matches!(&read, Err(e) if matches!(e.kind, ErrorKind::System | ErrorKind::BaseBackup | ErrorKind::Internal));
    let mut stdout = stdout;
    if read.is_ok() {
        // tar pads its archive past the end marker the reader stops at: read it all, so the
        // child never meets a closed pipe on a copy that succeeded.
        let _ = std::io::copy(&mut stdout, &mut std::io::sink());
    }
    // Closing our end stops a child still writing.
    drop(stdout);
    if ours {
        // Dropped unreaped: stopped, then reaped.
        drop(child);
        return read;
    }
    let status = child.wait().map_err(spawn_error)?;
    finished(barman, status, stderr, what)?;
    read
}

/// The outcome of a finished remote `what` (`tar`, `tail`): ssh's failures (255) and a signal
/// are the link's, worth a retry; any other failure is the Barman host's.
fn finished(
    barman: &Barman,
    status: ExitStatus,
    stderr: std::thread::JoinHandle<Vec<u8>>,
    what: &str,
) -> Result<()> {
    let stderr = stderr.join().unwrap_or_default();
    let stderr = String::from_utf8_lossy(&stderr).trim().to_string();
    let with_detail = |error: Error| {
        if stderr.is_empty() {
            error
        } else {
            error.detail(crate::child_output::detail(&stderr))
        }
    };
    match status.code() {
        Some(0) => Ok(()),
        Some(255) | None => Err(with_detail(
            Error::new(
                ErrorKind::Ssh,
                format!("the ssh session copying from \"{}\" failed", barman.host),
            )
            .hint(link_hint()),
        )
        .retryable()),
        Some(code) => Err(with_detail(
            Error::new(
                ErrorKind::Barman,
                format!(
                    "{what} on the Barman host \"{}\" failed (exit code {code}) while sending the backup's files",
                    barman.host
                ),
            )
            .hint(format!(
                "fix what {what} reports there (a file removed from the backup, a permission of the barman user), then run \"{}\": the copy goes on where it stopped",
                crate::paste::resume()
            )),
        )),
    }
}

fn stream_error(barman: &Barman, e: &std::io::Error) -> Error {
    Error::new(
        ErrorKind::Ssh,
        format!("the copy stream from \"{}\" broke: {e}", barman.host),
    )
    .hint(link_hint())
    .retryable()
}

/// The HINT of a broken link to the Barman host: the resume goes on from the files done.
fn link_hint() -> String {
    format!(
        "check that the Barman host is reachable, then run \"{}\": the copy goes on where it stopped",
        crate::paste::resume()
    )
}

/// The HINT of an archive this engine cannot read: rsync's engine copies the same files, and
/// either engine goes on from the other's copy.
fn other_engine_hint() -> String {
    format!(
        "the streaming engine needs GNU tar on the Barman host: go on with rsync's engine, from where this copy stopped: {COPY_ENGINE_ENV}=rsync {}",
        crate::paste::resume()
    )
}

fn spawn_error(e: std::io::Error) -> Error {
    Error::new(ErrorKind::Ssh, format!("cannot run ssh for the copy: {e}")).hint(
        "install the OpenSSH client (package openssh-client) and make sure \"ssh\" is on PATH",
    )
}

fn stopped() -> Error {
    Error::new(ErrorKind::Interrupted, "the copy was stopped")
        .hint(format!("continue it with \"{}\"", crate::paste::resume()))
        .retryable()
}

fn unknown_root(entry: &ManifestEntry) -> Error {
    Error::bug(format!(
        "the copy has no directory for root {} of \"{}\"",
        entry.root, entry.path
    ))
}

fn bad_member(entry: &ManifestEntry, what: &str) -> Error {
    Error::new(
        ErrorKind::Barman,
        format!("the Barman host sent \"{}\" as {what}", entry.path),
    )
    .hint(other_engine_hint())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_engine_is_rsync_unless_stream_is_chosen() {
        let parse = |v: Option<&str>| Engine::parse(v.map(String::from));
        assert_eq!(parse(None).unwrap(), Engine::Rsync);
        assert_eq!(parse(Some("")).unwrap(), Engine::Rsync);
        assert_eq!(parse(Some("rsync")).unwrap(), Engine::Rsync);
        assert_eq!(parse(Some("stream")).unwrap(), Engine::Stream);
        parse(Some("tar")).unwrap_err().assert_says(
            "PGREPLICA_COPY_ENGINE is neither \"rsync\" nor \"stream\"",
            "set PGREPLICA_COPY_ENGINE to rsync or stream",
        );
    }

    #[test]
    fn temporary_names_are_ones_rsync_clean_up_recognises() {
        for _ in 0..100 {
            let suffix = temp_suffix();
            assert_eq!(suffix.len(), 6);
            assert!(
                suffix.bytes().all(|b| b.is_ascii_alphanumeric()),
                "{suffix}"
            );
        }
    }
}
