//! The tar engine: unpacks one staged tar file (`base.tar.gz`, `16400.tar.zst`, …) into a
//! directory, entry by entry, decompressing in-process (flate2, lz4_flex, zstd: see
//! docs/operations.md for the measurements behind that choice), and reports how far it got so
//! the caller can checkpoint.
//!
//! Resume rules (what makes a kill anywhere safe):
//! * progress is the offset in the *uncompressed* tar stream up to which every entry is
//!   completely written, and it is reported only after the file system holding the target was
//!   synced (`syncfs`), so a checkpointed entry is on disk even after a power cut;
//! * a resumed unpack decompresses from the start of the file and discards what precedes the
//!   checkpointed offset (a compressed stream cannot be entered in the middle; an uncompressed
//!   `.tar` is seeked), then writes from the next entry on: the entry that was being written
//!   when the run died is written again from its first byte (its file truncated), never
//!   trusted;
//! * the data directory's archive leaves out what a restore must not carry, by the same rule
//!   as the rsync copy ([`excluded_from_data`]), and paths that would leave the target
//!   (`..`, absolute) are refused.
//!
//! Must not: touch the store or decide what to unpack; the UnpackBackup step does.

use std::fs::{self, File};
use std::io::{self, BufReader, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::PermissionsExt;
use std::path::{Component, Path, PathBuf};
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant, UNIX_EPOCH};

use states::{ArchiveProgress, Compression, Tablespace};

use crate::barman::files::excluded_from_data;
use crate::durable::io_error;
use crate::error::{Error, ErrorKind, Result};

/// Progress is synced and reported at most this often.
pub const REPORT_EVERY: Duration = Duration::from_secs(1);

/// File data is copied in chunks of this size, checking for a stop between them.
const CHUNK: usize = 1 << 20;

/// The control file of a data directory's archive is written under this name, and put in place
/// by [`release_pg_control`] only when the whole archive is unpacked: PostgreSQL cannot start a
/// directory without it, so a half-unpacked one is never started by mistake.
const HELD_BACK: &str = "global/pg_control.pgreplica-unpacking";

/// Puts the held-back `global/pg_control` of an unpacked data directory in place. Idempotent.
pub fn release_pg_control(data_dir: &Path) -> Result<()> {
    let held = data_dir.join(HELD_BACK);
    if held.exists() {
        let control = data_dir.join("global/pg_control");
        fs::rename(&held, &control).map_err(|e| io_error("rename", &held, e))?;
    }
    Ok(())
}

/// One staged tar file and where its entries go.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Archive {
    /// The staged file (decrypted already, when the backup is encrypted).
    pub file: PathBuf,
    /// How it is compressed.
    pub compression: Compression,
    /// The directory its entries are unpacked into.
    pub dest: PathBuf,
    /// For the archive of a data directory (`base.tar*`): the backup's tablespaces, whose
    /// `pg_tblspc/<oid>` entries are left out with the rest of what a restore must not carry.
    /// `None` for a tablespace's archive, taken whole.
    pub data_dir: Option<Vec<Tablespace>>,
}

/// What one unpack did.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct UnpackStats {
    /// Entries written (or deliberately left out) by this run.
    pub entries: u64,
    /// Bytes of file data written by this run.
    pub bytes: u64,
    /// Where the archive ended: its final progress, `done` set.
    pub end: ArchiveProgress,
}

/// Unpacks `archive` from `start` (see the module's resume rules), calling `report` with the
/// progress checkpointed so far, at most every [`REPORT_EVERY`] and once more at the end (with
/// `done` set). Stops with a retryable error when `stop` is raised.
pub fn unpack(
    archive: &Archive,
    start: ArchiveProgress,
    stop: &AtomicBool,
    mut report: impl FnMut(ArchiveProgress),
) -> Result<UnpackStats> {
    let file_error = |e: io::Error| io_error("read", &archive.file, e);
    fs::create_dir_all(&archive.dest).map_err(|e| io_error("create", &archive.dest, e))?;
    let target = File::open(&archive.dest).map_err(|e| io_error("open", &archive.dest, e))?;
    let mut file = File::open(&archive.file).map_err(file_error)?;
    if archive.compression == Compression::None {
        file.seek(SeekFrom::Start(start.offset))
            .map_err(file_error)?;
    }
    let mut reader = decoder(file, archive.compression).map_err(file_error)?;
    if archive.compression != Compression::None {
        let skipped = io::copy(&mut reader.by_ref().take(start.offset), &mut io::sink())
            .map_err(|e| corrupt(archive, &e.to_string()))?;
        if skipped != start.offset {
            return Err(corrupt(
                archive,
                &format!(
                    "it ends at {skipped} bytes, before the checkpoint at {}",
                    start.offset
                ),
            ));
        }
    }
    let mut tar = tar::Archive::new(reader);
    let mut stats = UnpackStats {
        end: start,
        ..UnpackStats::default()
    };
    let mut progress = start;
    let mut last_report = Instant::now();
    let entries = tar
        .entries()
        .map_err(|e| corrupt(archive, &e.to_string()))?;
    for entry in entries {
        if stop.load(Ordering::Relaxed) {
            return Err(stopped(archive));
        }
        let mut entry = entry.map_err(|e| corrupt(archive, &e.to_string()))?;
        let end = start.offset + entry.raw_file_position() + padded(entry.size());
        stats.bytes += write_entry(archive, &mut entry, stop)?;
        stats.entries += 1;
        progress = ArchiveProgress {
            offset: end,
            entries: progress.entries + 1,
            done: false,
        };
        if last_report.elapsed() >= REPORT_EVERY {
            sync(&target, &archive.dest)?;
            report(progress);
            last_report = Instant::now();
        }
    }
    sync(&target, &archive.dest)?;
    progress.done = true;
    report(progress);
    stats.end = progress;
    Ok(stats)
}

/// The reader of the uncompressed tar stream. gzip, the slowest to decompress, is decompressed
/// on a thread of its own ([`Pipelined`]) so that decompressing and writing overlap as in
/// `gzip -dc | tar -x`; zstd and lz4 decompress faster than the files are written, and a
/// second thread only adds copies (docs/operations.md has the measurements).
fn decoder(file: File, compression: Compression) -> io::Result<Box<dyn Read + Send>> {
    let buffered = BufReader::with_capacity(CHUNK, file);
    Ok(match compression {
        Compression::None => Box::new(buffered),
        // pg_basebackup writes one gzip member; several are read on as one stream, like gunzip.
        Compression::Gzip => Box::new(Pipelined::start(flate2::read::MultiGzDecoder::new(
            buffered,
        ))?),
        Compression::Lz4 => Box::new(lz4_flex::frame::FrameDecoder::new(buffered)),
        Compression::Zstd => Box::new(zstd::stream::read::Decoder::with_buffer(buffered)?),
    })
}

/// A reader fed by a thread that reads `inner` ahead, a few chunks at most. The thread ends at
/// the end of `inner`, at its first error (handed on to the reader), or when the reader is
/// dropped.
struct Pipelined {
    chunks: std::sync::mpsc::Receiver<io::Result<Vec<u8>>>,
    current: io::Cursor<Vec<u8>>,
}

impl Pipelined {
    fn start(mut inner: impl Read + Send + 'static) -> io::Result<Pipelined> {
        let (tx, chunks) = std::sync::mpsc::sync_channel(4);
        std::thread::Builder::new()
            .name("pgreplica-decompress".into())
            .spawn(move || loop {
                let mut chunk = vec![0; CHUNK];
                let result = match inner.read(&mut chunk) {
                    Ok(0) => return,
                    Ok(n) => {
                        chunk.truncate(n);
                        Ok(chunk)
                    }
                    Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Err(e) => Err(e),
                };
                let failed = result.is_err();
                if tx.send(result).is_err() || failed {
                    return;
                }
            })?;
        Ok(Pipelined {
            chunks,
            current: io::Cursor::new(Vec::new()),
        })
    }
}

impl Read for Pipelined {
    fn read(&mut self, buf: &mut [u8]) -> io::Result<usize> {
        loop {
            let n = self.current.read(buf)?;
            if n > 0 || buf.is_empty() {
                return Ok(n);
            }
            match self.chunks.recv() {
                Ok(chunk) => self.current = io::Cursor::new(chunk?),
                // The thread ended: the stream did.
                Err(_) => return Ok(0),
            }
        }
    }
}

/// A tar entry's data occupies whole 512-byte blocks.
fn padded(size: u64) -> u64 {
    size.div_ceil(512) * 512
}

/// Writes one entry under the archive's target; returns the bytes of file data written.
fn write_entry(
    archive: &Archive,
    entry: &mut tar::Entry<'_, impl Read>,
    stop: &AtomicBool,
) -> Result<u64> {
    let raw = entry
        .path()
        .map_err(|e| corrupt(archive, &e.to_string()))?
        .into_owned();
    let Some(relative) = safe_relative(&raw) else {
        return Err(corrupt(
            archive,
            &format!(
                "entry \"{}\" would be written outside the target",
                raw.display()
            ),
        ));
    };
    let text = relative.to_string_lossy();
    if text.is_empty() {
        return Ok(0);
    }
    if let Some(tablespaces) = &archive.data_dir {
        if excluded_from_data(&text, tablespaces) {
            crate::debug!("left out \"{text}\" (not part of a restored data directory)");
            return Ok(0);
        }
    }
    let path = match archive.data_dir.is_some() && text == "global/pg_control" {
        true => archive.dest.join(HELD_BACK),
        false => archive.dest.join(&relative),
    };
    let header = entry.header();
    let mode = header
        .mode()
        .map_err(|e| corrupt(archive, &e.to_string()))?
        & 0o7777;
    let mtime = header
        .mtime()
        .map_err(|e| corrupt(archive, &e.to_string()))?;
    let kind = header.entry_type();
    if let Some(parent) = path.parent() {
        make_dirs(parent)?;
    }
    match kind {
        tar::EntryType::Directory => {
            make_dirs(&path)?;
            // A link (pg_wal to --waldir) stands where the backup has a directory: keep it, and
            // never change the mode of what it points to.
            if fs::symlink_metadata(&path).is_ok_and(|m| m.is_dir()) {
                set_mode(&path, mode)?;
            }
            Ok(0)
        }
        tar::EntryType::Regular | tar::EntryType::Continuous => {
            remove_non_file(&path)?;
            let mut out = fs::OpenOptions::new()
                .write(true)
                .create(true)
                .truncate(true)
                .open(&path)
                .map_err(|e| io_error("create", &path, e))?;
            let mut buffer = vec![0; CHUNK];
            let mut written = 0;
            loop {
                if stop.load(Ordering::Relaxed) {
                    return Err(stopped(archive));
                }
                let n = entry
                    .read(&mut buffer)
                    .map_err(|e| corrupt(archive, &e.to_string()))?;
                if n == 0 {
                    break;
                }
                out.write_all(&buffer[..n])
                    .map_err(|e| io_error("write", &path, e))?;
                written += n as u64;
            }
            set_mode(&path, mode)?;
            out.set_modified(UNIX_EPOCH + Duration::from_secs(mtime))
                .map_err(|e| io_error("set the time of", &path, e))?;
            Ok(written)
        }
        tar::EntryType::Symlink | tar::EntryType::Link => {
            let target = entry
                .link_name()
                .map_err(|e| corrupt(archive, &e.to_string()))?
                .ok_or_else(|| corrupt(archive, &format!("link \"{text}\" has no target")))?
                .into_owned();
            remove_non_dir(&path)?;
            if kind == tar::EntryType::Symlink {
                std::os::unix::fs::symlink(&target, &path)
            } else {
                let Some(target) = safe_relative(&target) else {
                    return Err(corrupt(
                        archive,
                        &format!("hard link \"{text}\" leaves the target"),
                    ));
                };
                fs::hard_link(archive.dest.join(target), &path)
            }
            .map_err(|e| io_error("create link", &path, e))?;
            Ok(0)
        }
        other => Err(corrupt(
            archive,
            &format!("entry \"{text}\" has a type pgreplica does not restore ({other:?})"),
        )),
    }
}

/// `path` without `./`, if it stays below the target (no `..`, not absolute).
fn safe_relative(path: &Path) -> Option<PathBuf> {
    let mut relative = PathBuf::new();
    for component in path.components() {
        match component {
            Component::Normal(part) => relative.push(part),
            Component::CurDir => {}
            Component::ParentDir | Component::RootDir | Component::Prefix(_) => return None,
        }
    }
    Some(relative)
}

/// Creates `dir` and its parents, private to the user (PostgreSQL's own mode for them).
fn make_dirs(dir: &Path) -> Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
        .map_err(|e| io_error("create", dir, e))
}

fn set_mode(path: &Path, mode: u32) -> Result<()> {
    fs::set_permissions(path, fs::Permissions::from_mode(mode))
        .map_err(|e| io_error("set the mode of", path, e))
}

/// Makes room for a file: a link or a directory at its place goes (a file is truncated).
fn remove_non_file(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            fs::remove_dir_all(path).map_err(|e| io_error("remove", path, e))
        }
        Ok(meta) if meta.file_type().is_symlink() => {
            fs::remove_file(path).map_err(|e| io_error("remove", path, e))
        }
        _ => Ok(()),
    }
}

/// Makes room for a link: whatever is at its place goes.
fn remove_non_dir(path: &Path) -> Result<()> {
    match fs::symlink_metadata(path) {
        Ok(meta) if meta.is_dir() => {
            fs::remove_dir_all(path).map_err(|e| io_error("remove", path, e))
        }
        Ok(_) => fs::remove_file(path).map_err(|e| io_error("remove", path, e)),
        Err(_) => Ok(()),
    }
}

/// Flushes the file system holding `dest` (every file written so far) to disk.
fn sync(target: &File, dest: &Path) -> Result<()> {
    use std::os::fd::AsRawFd;
    // SAFETY: syncfs on a descriptor we own.
    if unsafe { libc::syncfs(target.as_raw_fd()) } != 0 {
        return Err(io_error("sync", dest, io::Error::last_os_error()));
    }
    Ok(())
}

/// A staged archive that cannot be read: only staging it anew helps (the unpack step's HINT
/// then names the exact `clone start --force`).
fn corrupt(archive: &Archive, why: &str) -> Error {
    Error::new(
        ErrorKind::BaseBackup,
        format!("cannot unpack \"{}\": {why}", archive.file.display()),
    )
    .hint("the staged copy is damaged (a disk or a decryption problem): start the clone again with clone start -F/--force to stage the backup anew")
}

fn stopped(archive: &Archive) -> Error {
    Error::new(
        ErrorKind::Interrupted,
        format!("unpacking \"{}\" was stopped", archive.file.display()),
    )
    .hint(format!("continue it with \"{}\"", crate::paste::resume()))
    .retryable()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::MetadataExt;

    fn epoch(time: std::time::SystemTime) -> u64 {
        time.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs())
    }

    /// A tar of a small data directory with a file over a MiB, compressed as `compression`.
    fn make_archive(dir: &Path, compression: Compression) -> (PathBuf, Vec<(String, Vec<u8>)>) {
        let mut files = vec![
            ("PG_VERSION".to_string(), b"18\n".to_vec()),
            ("global/pg_control".to_string(), vec![7; 8192]),
            (
                "base/5/16384".to_string(),
                (0..3 << 20).map(|i| (i % 251) as u8).collect(),
            ),
            ("postmaster.pid".to_string(), b"4242\n".to_vec()),
            ("tablespace_map".to_string(), b"16400 /old\n".to_vec()),
        ];
        for n in 0..40 {
            files.push((format!("base/5/{}", 20000 + n), vec![n as u8; 700 + n]));
        }
        let mut builder = tar::Builder::new(Vec::new());
        for dir in ["global", "base", "base/5", "pg_wal", "pg_tblspc"] {
            let mut header = tar::Header::new_gnu();
            header.set_entry_type(tar::EntryType::Directory);
            header.set_mode(0o700);
            header.set_size(0);
            header.set_mtime(1_700_000_000);
            builder
                .append_data(&mut header, format!("./{dir}/"), io::empty())
                .unwrap();
        }
        for (name, data) in &files {
            let mut header = tar::Header::new_gnu();
            header.set_mode(0o600);
            header.set_size(data.len() as u64);
            header.set_mtime(1_700_000_123);
            builder
                .append_data(&mut header, format!("./{name}"), data.as_slice())
                .unwrap();
        }
        let raw = builder.into_inner().unwrap();
        let path = dir.join(format!("base.tar{}", compression.suffix()));
        let bytes = match compression {
            Compression::None => raw,
            Compression::Gzip => {
                let mut e = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
                e.write_all(&raw).unwrap();
                e.finish().unwrap()
            }
            Compression::Lz4 => {
                let mut e = lz4_flex::frame::FrameEncoder::new(Vec::new());
                e.write_all(&raw).unwrap();
                e.finish().unwrap()
            }
            Compression::Zstd => zstd::encode_all(raw.as_slice(), 1).unwrap(),
        };
        fs::write(&path, bytes).unwrap();
        (path, files)
    }

    fn check_unpacked(dest: &Path, files: &[(String, Vec<u8>)]) {
        for (name, data) in files {
            let path = dest.join(name);
            if name == "postmaster.pid" || name == "tablespace_map" {
                assert!(!path.exists(), "{name} must be left out");
                continue;
            }
            assert_eq!(&fs::read(&path).unwrap(), data, "{name}");
            let meta = fs::metadata(&path).unwrap();
            assert_eq!(meta.mode() & 0o7777, 0o600, "{name}");
            assert_eq!(epoch(meta.modified().unwrap()), 1_700_000_123, "{name}");
        }
        assert!(dest.join("pg_wal").is_dir() && dest.join("pg_tblspc").is_dir());
    }

    #[test]
    fn every_compression_unpacks_whole_and_resumes_from_a_checkpoint_rewriting_the_next_file() {
        for compression in Compression::ALL {
            let tmp = tempfile::tempdir().unwrap();
            let (file, files) = make_archive(tmp.path(), compression);
            let archive = Archive {
                file,
                compression,
                dest: tmp.path().join("data"),
                data_dir: Some(Vec::new()),
            };
            let stop = AtomicBool::new(false);
            let mut reports = Vec::new();
            let whole = unpack(&archive, ArchiveProgress::default(), &stop, |p| {
                reports.push(p)
            })
            .unwrap();
            assert!(whole.end.done && reports.last() == Some(&whole.end));
            assert_eq!(whole.entries, 5 + files.len() as u64);
            assert!(
                !archive.dest.join("global/pg_control").exists(),
                "pg_control is held back until the archive is complete"
            );
            release_pg_control(&archive.dest).unwrap();
            release_pg_control(&archive.dest).unwrap();
            check_unpacked(&archive.dest, &files);

            // A checkpoint after the big file: what follows it is damaged on disk (a kill in
            // the middle of writing it), the big file is not (it was complete).
            let mut offset = 0;
            let mut entries = 0;
            let mut raw = tar::Archive::new(
                decoder(File::open(&archive.file).unwrap(), compression).unwrap(),
            );
            for entry in raw.entries().unwrap() {
                let entry = entry.unwrap();
                offset = entry.raw_file_position() + padded(entry.size());
                entries += 1;
                if entry.path().unwrap().ends_with("16384") {
                    break;
                }
            }
            let checkpoint = ArchiveProgress {
                offset,
                entries,
                done: false,
            };
            let half = archive.dest.join("base/5/20000");
            fs::write(&half, b"half").unwrap();
            let big = archive.dest.join("base/5/16384");
            fs::write(&big, b"left alone: before the checkpoint").unwrap();
            let resumed = unpack(&archive, checkpoint, &stop, |_| {}).unwrap();
            assert_eq!(resumed.end.entries, whole.end.entries, "{compression:?}");
            assert_eq!(resumed.end.offset, whole.end.offset, "{compression:?}");
            assert_eq!(resumed.entries, whole.entries - entries);
            assert_eq!(
                fs::read(&half).unwrap(),
                files.iter().find(|f| f.0 == "base/5/20000").unwrap().1
            );
            assert_eq!(
                fs::read(&big).unwrap(),
                b"left alone: before the checkpoint",
                "entries before the checkpoint are not read again"
            );
        }
    }

    #[test]
    fn a_stop_is_retryable_and_a_damaged_or_hostile_archive_is_refused() {
        let tmp = tempfile::tempdir().unwrap();
        let (file, _) = make_archive(tmp.path(), Compression::Gzip);
        let archive = Archive {
            file: file.clone(),
            compression: Compression::Gzip,
            dest: tmp.path().join("data"),
            data_dir: None,
        };
        let stop = AtomicBool::new(true);
        let error = unpack(&archive, ArchiveProgress::default(), &stop, |_| {}).unwrap_err();
        assert_eq!(error.kind, ErrorKind::Interrupted);
        assert!(error.retryable);

        let mut bytes = fs::read(&file).unwrap();
        bytes.truncate(bytes.len() / 2);
        fs::write(&file, bytes).unwrap();
        let error = unpack(
            &archive,
            ArchiveProgress::default(),
            &AtomicBool::new(false),
            |_| {},
        )
        .unwrap_err();
        assert_eq!(error.kind, ErrorKind::BaseBackup);
        assert!(
            error.message.starts_with("cannot unpack"),
            "{}",
            error.message
        );

        let mut builder = tar::Builder::new(Vec::new());
        let mut header = tar::Header::new_gnu();
        header.set_size(1);
        header.set_mode(0o600);
        // The tar crate refuses to write `..` itself: the name goes into the header raw.
        header.as_gnu_mut().unwrap().name[..10].copy_from_slice(b"../escaped");
        header.set_cksum();
        builder.append(&header, &b"x"[..]).unwrap();
        let evil = tmp.path().join("evil.tar");
        fs::write(&evil, builder.into_inner().unwrap()).unwrap();
        let error = unpack(
            &Archive {
                file: evil,
                compression: Compression::None,
                dest: tmp.path().join("inside"),
                data_dir: None,
            },
            ArchiveProgress::default(),
            &AtomicBool::new(false),
            |_| {},
        )
        .unwrap_err();
        assert!(
            error.message.contains("outside the target"),
            "{}",
            error.message
        );
        assert!(!tmp.path().join("escaped").exists());
    }
}
