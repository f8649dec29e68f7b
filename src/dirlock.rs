//! The lock on the directories a clone writes — the data directory, its WAL directory and its
//! tablespace targets — held for the whole run, so that two pgreplica runs never write one
//! directory, whatever state directory, `HOME` or spelling (a symbolic link, `..`) each uses;
//! and the rule that the state directory lies outside all of them.
//!
//! A directory is locked by what it is, twice over:
//! * by its canonical path (the real path of its nearest existing ancestor, then the missing
//!   rest), which names it even before PrepareDirs creates it: an exclusive `flock` on a small
//!   file in a per-user registry directory (`/run/lock/pgreplica-<uid>`, else
//!   `/tmp/pgreplica-<uid>`), the file holding the holder's pid, state directory and clone for
//!   the refusal's message;
//! * once it exists, by its device and inode: a `flock` on the directory itself (Linux locks an
//!   `O_DIRECTORY` descriptor like a file), which no registry can miss, and a registry file
//!   keyed by `dev:ino` for the message.
//!
//! `flock` dies with the process however it dies, so a lock is never stale; the registry files
//! stay behind (they are tiny and cleared at reboot) because unlinking a lock file races with
//! its next taker. Locks are taken without blocking: a second run is refused, never queued.
//! This module only locks and compares paths; it creates no directory a clone writes.

use std::fs::{File, OpenOptions};
use std::io::{self, Read, Seek, SeekFrom, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use states::{CloneId, CloneRecord, RetryPolicy};

use crate::error::{Error, ErrorKind, Result};
use crate::retry::poll_blocking;
use crate::store::{flock, open_lock_file};

/// Who holds (or asks for) a lock: written into the registry for the refusal's message.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Holder {
    /// The process.
    pub pid: u32,
    /// Its state directory.
    pub state_dir: PathBuf,
    /// The clone it runs.
    pub clone: CloneId,
}

/// The locks of one run; released when dropped.
#[derive(Debug)]
pub struct DirLocks {
    holder: Holder,
    registry: PathBuf,
    held: Vec<Held>,
}

#[derive(Debug)]
struct Held {
    canonical: PathBuf,
    // Kept open for their flocks (std opens with O_CLOEXEC: children never inherit them).
    _by_path: File,
    by_inode: Option<(u64, u64, File, File)>,
}

/// A directory a clone writes, for messages: "data directory", "WAL directory", …
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// `-D` / `data_directory`.
    DataDir,
    /// `--waldir`.
    WalDir,
    /// A tablespace target.
    Tablespace,
}

impl Role {
    fn name(self) -> &'static str {
        match self {
            Role::DataDir => "data directory",
            Role::WalDir => "WAL directory",
            Role::Tablespace => "tablespace directory",
        }
    }
}

impl DirLocks {
    /// An empty set of locks for `holder`.
    pub fn new(holder: Holder) -> Result<DirLocks> {
        let registry = registry_dir()?;
        Ok(DirLocks {
            holder,
            registry,
            held: Vec::new(),
        })
    }

    /// Locks every directory `record` writes that is known so far (the data directory and the
    /// WAL directory from the start; tablespace targets once the backup is known) and checks
    /// that the state directory lies outside each. Idempotent: call it before every step, so a
    /// directory created by PrepareDirs is locked by its inode too before anything is copied.
    pub fn lock_record(&mut self, record: &CloneRecord) -> Result<()> {
        for (path, role) in targets(record) {
            self.lock(&path, role)?;
        }
        Ok(())
    }

    /// Locks `path` and checks it against the state directory (see [`DirLocks::lock_record`]).
    pub fn lock(&mut self, path: &Path, role: Role) -> Result<()> {
        check_apart(&self.holder.state_dir, path, role)?;
        let canonical = canonical(path)?;
        let index = match self.held.iter().position(|h| h.canonical == canonical) {
            Some(index) => index,
            None => {
                let file = self.registry.join(path_key(&canonical));
                let by_path = take(&file, &self.holder, &canonical)
                    .map_err(|held| self.refusal(path, role, held))?;
                self.held.push(Held {
                    canonical: canonical.clone(),
                    _by_path: by_path,
                    by_inode: None,
                });
                self.held.len() - 1
            }
        };
        if self.held[index].by_inode.is_some() {
            return Ok(());
        }
        let Some((dir, dev, ino)) = open_dir(path)? else {
            return Ok(());
        };
        let file = self.registry.join(format!("inode-{dev}-{ino}.lock"));
        let by_record =
            take(&file, &self.holder, &canonical).map_err(|held| self.refusal(path, role, held))?;
        flock(&dir, libc::LOCK_EX | libc::LOCK_NB).map_err(|e| match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => self.refusal(path, role, Refused::Held(None)),
            _ => io_error("lock", path, &e),
        })?;
        self.held[index].by_inode = Some((dev, ino, dir, by_record));
        Ok(())
    }

    fn refusal(&self, path: &Path, role: Role, refused: Refused) -> Error {
        match refused {
            Refused::Io(error) => error,
            Refused::Held(holder) => held_error(path, role, holder.as_ref()),
        }
    }
}

/// Refuses a state directory inside `path`, a directory a clone writes (exit 1): with
/// `--force`, the transfer would delete the records as "not in the backup" and copy on
/// without checkpoints.
pub fn check_apart(state_dir: &Path, path: &Path, role: Role) -> Result<()> {
    if !canonical(state_dir)?.starts_with(canonical(path)?) {
        return Ok(());
    }
    Err(Error::new(
        ErrorKind::Config,
        format!(
            "the state directory \"{}\" is inside the {} \"{}\"",
            state_dir.display(),
            role.name(),
            path.display()
        ),
    )
    .hint(
        "clone records never live in a directory that is cloned into: choose a state \
         directory outside every data, WAL and tablespace directory with --state-dir (or \
         PGREPLICA_STATE_DIR)",
    ))
}

/// Whether another run holds the lock of `path`, without taking it or creating anything: for
/// `--dry-run`. `Ok(None)` when it is free.
pub fn probe(path: &Path, role: Role) -> Result<Option<Error>> {
    let Ok(registry) = registry_location() else {
        return Ok(None);
    };
    let canonical = canonical(path)?;
    let mut files = vec![registry.join(path_key(&canonical))];
    if let Some((dir, dev, ino)) = open_dir(path)? {
        if let Err(e) = flock(&dir, libc::LOCK_SH | libc::LOCK_NB) {
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let info = registry.join(format!("inode-{dev}-{ino}.lock"));
                let holder = open_existing(&info).and_then(|mut f| live_holder(&mut f));
                return Ok(Some(held_error(path, role, holder.as_ref())));
            }
        }
        files.push(registry.join(format!("inode-{dev}-{ino}.lock")));
    }
    for file in files {
        let Some(mut file) = open_existing(&file) else {
            continue;
        };
        if let Err(e) = flock(&file, libc::LOCK_SH | libc::LOCK_NB) {
            if e.raw_os_error() == Some(libc::EWOULDBLOCK) {
                let holder = live_holder(&mut file);
                return Ok(Some(held_error(path, role, holder.as_ref())));
            }
        }
    }
    Ok(None)
}

/// The directories `record` writes that are known so far, with their roles: the data and WAL
/// directories from the start, the tablespace targets once known.
pub fn targets(record: &CloneRecord) -> Vec<(PathBuf, Role)> {
    let request = record.request();
    let mut out = vec![(PathBuf::from(&request.data_dir), Role::DataDir)];
    if let Some(waldir) = &request.waldir {
        out.push((PathBuf::from(waldir), Role::WalDir));
    }
    let facts = record.facts();
    let tablespaces = match (&facts.dirs, &facts.backup) {
        (Some(dirs), _) => dirs.tablespaces.iter().map(|t| t.path.clone()).collect(),
        (None, Some(backup)) => {
            crate::datadir::tablespace_targets(&backup.tablespaces, &request.tablespace_mapping)
                .into_iter()
                .map(|t| t.path)
                .collect()
        }
        (None, None) => request
            .tablespace_mapping
            .iter()
            .map(|(_, new)| new.clone())
            .collect::<Vec<_>>(),
    };
    out.extend(
        tablespaces
            .into_iter()
            .filter(|p| Path::new(p).is_absolute())
            .map(|p| (PathBuf::from(p), Role::Tablespace)),
    );
    out
}

fn held_error(path: &Path, role: Role, holder: Option<&Holder>) -> Error {
    let Some(holder) = holder else {
        return Error::new(
            ErrorKind::Store,
            format!(
                "the {} \"{}\" is being written by another pgreplica run (pid unknown)",
                role.name(),
                path.display()
            ),
        )
        .hint("wait for it to finish; \"ps -C pgreplica\" shows it");
    };
    let status = crate::paste::line(&[
        "pgreplica",
        "--state-dir",
        &holder.state_dir.display().to_string(),
        "clone",
        "status",
        holder.clone.as_str(),
    ]);
    Error::new(
        ErrorKind::Store,
        format!(
            "the {} \"{}\" is being written by another pgreplica run (pid {}, state directory \"{}\", clone {})",
            role.name(),
            path.display(),
            holder.pid,
            holder.state_dir.display(),
            holder.clone
        ),
    )
    .hint(format!(
        "two runs never write one directory: wait for it to finish, or follow it with \"{status}\""
    ))
}

/// Why a registry lock was not taken.
enum Refused {
    /// Another run holds it (and said who, if it had written that yet).
    Held(Option<Holder>),
    /// The registry failed.
    Io(Error),
}

/// Takes the registry lock `file` for `holder`, writing who holds it.
fn take(file: &Path, holder: &Holder, canonical: &Path) -> std::result::Result<File, Refused> {
    let mut lock = open_lock_file(file).map_err(|e| Refused::Io(io_error("open", file, &e)))?;
    if let Err(e) = flock(&lock, libc::LOCK_EX | libc::LOCK_NB) {
        return Err(match e.raw_os_error() {
            Some(libc::EWOULDBLOCK) => Refused::Held(live_holder(&mut lock)),
            _ => Refused::Io(io_error("lock", file, &e)),
        });
    }
    let text = format!(
        "{}\n{}\n{}\n{}\n",
        holder.pid,
        holder.clone,
        holder.state_dir.display(),
        canonical.display()
    );
    let written = lock
        .set_len(0)
        .and_then(|()| lock.seek(SeekFrom::Start(0)).map(drop))
        .and_then(|()| lock.write_all(text.as_bytes()));
    written.map_err(|e| Refused::Io(io_error("write", file, &e)))?;
    Ok(lock)
}

/// How long a refused run waits for the holder's name: a holder that took the lock an instant
/// ago writes it right after (polled every 5 ms for up to 500 ms).
const HOLDER_WRITES: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    first_delay_ms: 5,
    max_delay_ms: 5,
    give_up_after_ms: Some(500),
    jitter_percent: 0,
};

/// The holder named in a lock file that another process holds: a live process, not the name an
/// earlier holder left (the file outlives its locks). `None` when no live holder is named.
fn live_holder(file: &mut File) -> Option<Holder> {
    let alive = |holder: &Holder| {
        // SAFETY: signal 0 only checks that the process exists.
        let pid = libc::pid_t::try_from(holder.pid).unwrap_or(0);
        pid > 0
            && (unsafe { libc::kill(pid, 0) } == 0
                || io::Error::last_os_error().raw_os_error() == Some(libc::EPERM))
    };
    poll_blocking(
        &HOLDER_WRITES,
        |_: &()| true,
        || read_holder(file).filter(alive).ok_or(()),
    )
    .ok()
}

fn read_holder(file: &mut File) -> Option<Holder> {
    let mut text = String::new();
    file.seek(SeekFrom::Start(0)).ok()?;
    file.read_to_string(&mut text).ok()?;
    let mut lines = text.lines();
    let pid = lines.next()?.parse().ok()?;
    let clone = CloneId::parse(lines.next()?)?;
    let state_dir = PathBuf::from(lines.next()?);
    Some(Holder {
        pid,
        state_dir,
        clone,
    })
}

fn open_existing(file: &Path) -> Option<File> {
    OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(file)
        .ok()
}

/// The directory at `path` (through links) opened for its flock, with its device and inode;
/// `None` when there is no directory there yet.
fn open_dir(path: &Path) -> Result<Option<(File, u64, u64)>> {
    match OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_DIRECTORY)
        .open(path)
    {
        Ok(dir) => {
            let meta = dir.metadata().map_err(|e| io_error("read", path, &e))?;
            Ok(Some((dir, meta.dev(), meta.ino())))
        }
        Err(e)
            if matches!(
                e.raw_os_error(),
                Some(libc::ENOENT | libc::ENOTDIR | libc::EACCES)
            ) =>
        {
            Ok(None)
        }
        Err(e) => Err(io_error("open", path, &e)),
    }
}

/// The canonical path of `path`, whether it exists or not: the real path of its nearest
/// existing ancestor, followed by the components that do not exist yet (which can hold no
/// link). Two spellings of one directory give one canonical path.
pub fn canonical(path: &Path) -> Result<PathBuf> {
    let absolute = crate::request::absolute(path)?;
    let mut missing = Vec::new();
    let mut existing = absolute.as_path();
    loop {
        match std::fs::canonicalize(existing) {
            Ok(real) => {
                let mut out = real;
                out.extend(missing.iter().rev());
                return Ok(out);
            }
            Err(_) => match (existing.parent(), existing.file_name()) {
                (Some(parent), Some(name)) => {
                    missing.push(name.to_os_string());
                    existing = parent;
                }
                _ => return Ok(absolute),
            },
        }
    }
}

/// The registry file of a canonical path: a stable hash (FNV-1a), so any path fits a name.
fn path_key(canonical: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let hash = canonical
        .as_os_str()
        .as_bytes()
        .iter()
        .fold(0xcbf2_9ce4_8422_2325_u64, |hash, byte| {
            (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01b3)
        });
    format!("path-{hash:016x}.lock")
}

/// Where the registry of this user lives (it may not exist yet).
fn registry_location() -> Result<PathBuf> {
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    let base = if Path::new("/run/lock").is_dir() {
        "/run/lock"
    } else {
        "/tmp"
    };
    Ok(PathBuf::from(format!("{base}/pgreplica-{uid}")))
}

/// The registry directory of this user, created 0700 if missing. It lies in a directory every
/// user may write, so it must be a real directory that belongs to this user and that nobody
/// else may write: otherwise another user could plant links or fake holders in it.
fn registry_dir() -> Result<PathBuf> {
    let dir = registry_location()?;
    match std::fs::DirBuilder::new().mode(0o700).create(&dir) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {}
        Err(e) => return Err(io_error("create", &dir, &e)),
    }
    let meta = std::fs::symlink_metadata(&dir).map_err(|e| io_error("read", &dir, &e))?;
    // SAFETY: geteuid has no preconditions and cannot fail.
    let uid = unsafe { libc::geteuid() };
    if !meta.is_dir() || meta.uid() != uid || meta.mode() & 0o077 != 0 {
        return Err(Error::new(
            ErrorKind::System,
            format!(
                "the lock directory \"{}\" is not a private directory of this user (uid {uid})",
                dir.display()
            ),
        )
        .hint("another user created it: remove it (as root), then run pgreplica again"));
    }
    Ok(dir)
}

fn io_error(action: &str, path: &Path, err: &io::Error) -> Error {
    Error::new(
        ErrorKind::System,
        format!("cannot {action} \"{}\": {err}", path.display()),
    )
    .hint(crate::durable::WRITE_HINT)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn holder(state: &Path, name: &str) -> Holder {
        Holder {
            pid: std::process::id(),
            state_dir: state.to_path_buf(),
            clone: CloneId::parse(name).unwrap(),
        }
    }

    #[test]
    fn canonical_paths_see_through_links_and_missing_parts() {
        let root = tempfile::tempdir().unwrap();
        let real = root.path().join("real");
        std::fs::create_dir(&real).unwrap();
        let link = root.path().join("link");
        std::os::unix::fs::symlink(&real, &link).unwrap();
        let real_canonical = std::fs::canonicalize(&real).unwrap();
        assert_eq!(
            canonical(&link.join("a/b")).unwrap(),
            real_canonical.join("a/b")
        );
        assert_eq!(
            canonical(&root.path().join("real/x/../a/b")).unwrap(),
            real_canonical.join("a/b")
        );
    }

    #[test]
    fn one_directory_is_locked_once_however_it_is_spelled() {
        let root = tempfile::tempdir().unwrap();
        let state = root.path().join("state");
        std::fs::create_dir(&state).unwrap();
        let data = root.path().join("data");
        let link = root.path().join("link-to-root");
        std::os::unix::fs::symlink(root.path(), &link).unwrap();
        let mut first = DirLocks::new(holder(&state, "data-1")).unwrap();
        // Before it exists: by its path.
        first.lock(&data, Role::DataDir).unwrap();
        let mut second = DirLocks::new(holder(&state, "data-2")).unwrap();
        let err = second.lock(&link.join("data"), Role::DataDir).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Store);
        assert!(
            err.message.contains(&format!(
                "is being written by another pgreplica run (pid {}, state directory \"{}\", clone data-1)",
                std::process::id(),
                state.display()
            )),
            "{err:?}"
        );
        assert!(probe(&data, Role::DataDir).unwrap().is_some());
        // Once it exists, by its inode too (idempotent for the holder).
        std::fs::create_dir(&data).unwrap();
        first.lock(&data, Role::DataDir).unwrap();
        assert!(first.held[0].by_inode.is_some());
        drop(first);
        assert!(probe(&data, Role::DataDir).unwrap().is_none());
        second.lock(&link.join("data"), Role::DataDir).unwrap();
    }

    #[test]
    fn the_state_directory_is_never_inside_a_locked_directory() {
        let root = tempfile::tempdir().unwrap();
        let data = root.path().join("data");
        let state = data.join("state");
        std::fs::create_dir_all(&state).unwrap();
        let mut locks = DirLocks::new(holder(&state, "x")).unwrap();
        let err = locks.lock(&data, Role::DataDir).unwrap_err();
        assert_eq!(err.kind, ErrorKind::Config);
        assert!(
            err.message.contains("is inside the data directory"),
            "{err:?}"
        );
        assert!(err.hint.unwrap().contains("--state-dir"));
        // Beside it is fine.
        locks
            .lock(&root.path().join("other"), Role::WalDir)
            .unwrap();
    }
}
