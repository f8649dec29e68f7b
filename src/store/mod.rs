//! The checkpoint store: one sled database per clone in a state directory, the per-clone
//! lock, and the status snapshot other processes read.
//!
//! Layout of a state directory (`--state-dir`, `PGREPLICA_STATE_DIR`,
//! `$XDG_STATE_HOME/pgreplica`, `~/.local/state/pgreplica`; never inside a data directory):
//!
//! ```text
//! <state>/clones/<clone-id>/db/          sled: the clone record and the transfer's file list
//! <state>/clones/<clone-id>/lock         flock'ed by the process running the clone; its pid
//! <state>/clones/<clone-id>/status.json  the running clone's snapshot for `clone status`
//! <state>/clones/<clone-id>/checkpoint.json  what sled must at least hold (damage detector)
//! ```
//!
//! One database per clone keeps clones independent: a damaged one, or one locked by a run,
//! never stands in the way of the others. Every value is written behind a magic and a schema
//! version so that a record from a newer pgreplica, or a damaged one, is a clear
//! [`ErrorKind::Store`] error — never a panic, even when sled itself panics on a damaged file.
//! sled quietly drops what follows a damaged spot in its log, so a small marker beside the
//! database records how far the last checkpoint went, and a database that has less is
//! reported as damaged rather than taken for a new clone.
//!
//! **Invariant:** only this module knows sled. It stores what it is given and decides nothing
//! about the clone: which step runs next is the `states` machine's business.

mod codec;
mod files;
mod lock;
mod marker;
mod private;
mod status;

pub use files::{FileCounts, FileTable};
pub(crate) use lock::{flock, open_lock_file};
pub use status::{LiveProgress, StatusSnapshot};

use crate::error::{Error, ErrorKind};
use crate::retry::{poll_blocking, GaveUp};
use codec::DecodeError;
use lock::{io_error, CloneLock, LockError};
use marker::Marker;
use private::{check_private, create_private_dir, Follow};
use states::RetryPolicy;
use states::{CloneId, CloneRecord, Millis, SCHEMA_VERSION};
use std::cell::Cell;
use std::ffi::OsString;
use std::panic::{self, AssertUnwindSafe};
use std::path::{Path, PathBuf};
use std::sync::{Mutex, Once};

/// Key of the clone record in the database's default tree.
const RECORD_KEY: &[u8] = b"record";

/// How a clone lock held by someone else is waited for before giving up: polled every 20 ms
/// for up to 2 s, long enough for a `clone status` reading an idle clone, far too short to wait
/// for a running clone.
const LOCK_GRACE: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    first_delay_ms: 20,
    max_delay_ms: 20,
    give_up_after_ms: Some(2_000),
    jitter_percent: 0,
};

/// Key of the record's generation (big-endian `u64`), written in the same batch as the record
/// and compared with the [`Marker`].
const GENERATION_KEY: &[u8] = b"generation";

/// A state directory, opened (and created 0700 if missing).
#[derive(Debug, Clone)]
pub struct StateDir {
    root: PathBuf,
}

/// One clone's store, opened under its exclusive lock, which it holds until dropped.
#[derive(Debug)]
pub struct CloneStore {
    // Field order is drop order: the sled handles go before the clone lock is released.
    // sled's background threads may hold its file a moment longer; the next opener waits for
    // that (see `open_sled`).
    db: sled::Db,
    files: sled::Tree,
    /// The file list's checks against backup_manifest ([`files::CHECKS_TREE`]).
    checks: sled::Tree,
    id: CloneId,
    dir: PathBuf,
    /// What sled must at least hold; updated after each flush.
    marker: Mutex<Marker>,
    /// The file list's marks not written yet and the summary counting them; its lock also
    /// makes each change of an entry and the summary one writer's.
    pending: Mutex<files::Pending>,
    _lock: CloneLock,
}

/// What [`StateDir::find_clone`] found for a clone id, under the clone's lock.
#[derive(Debug)]
#[allow(
    clippy::large_enum_variant,
    reason = "one exists per command and is consumed at once: boxing saves nothing"
)]
pub enum Found {
    /// No record yet: the store was just created (discard it if no clone is made).
    New(CloneStore),
    /// A readable record.
    Record(CloneStore, CloneRecord),
    /// A record that cannot be read: why. The lock was released; the directory is untouched.
    Damaged(Error),
}

/// What `clone status` shows about one clone.
#[derive(Clone, Debug, PartialEq)]
pub struct StatusView {
    /// The record: from sled when no process runs the clone, else from the runner's snapshot.
    pub record: CloneRecord,
    /// Whether a process holds the clone's lock right now.
    pub running: bool,
    /// The process running the clone.
    pub pid: Option<u32>,
    /// When the runner took its snapshot (running clones only).
    pub updated_at: Option<Millis>,
    /// Progress inside the running step (running clones only).
    pub live: Option<LiveProgress>,
    /// The transfer's file list counts, read from sled (idle clones only; a running clone
    /// reports its progress in `live`).
    pub files: Option<FileCounts>,
}

impl StateDir {
    /// The state directory to use: `explicit` (from `--state-dir` or `PGREPLICA_STATE_DIR`,
    /// which clap maps onto the flag), else `$XDG_STATE_HOME/pgreplica`, else
    /// `$HOME/.local/state/pgreplica`.
    pub fn resolve(explicit: Option<&Path>) -> Result<PathBuf, Error> {
        resolve_from(
            explicit,
            std::env::var_os("XDG_STATE_HOME"),
            std::env::var_os("HOME"),
        )
    }

    /// Opens the state directory at `path`, creating it (mode 0700) if it does not exist.
    ///
    /// A state directory, like each clone's directory in it, must belong to the user running
    /// pgreplica and be writable by nobody else: another user who could write there could
    /// plant links that make pgreplica overwrite the postgres user's files, or swap a record.
    pub fn open(path: &Path) -> Result<StateDir, Error> {
        // The directory is checked before anything is created in it.
        create_private_dir(path)?;
        check_private(path, "state directory", Follow::Yes)?;
        let clones = path.join("clones");
        create_private_dir(&clones)?;
        check_private(&clones, "state directory", Follow::No)?;
        Ok(StateDir {
            root: path.to_path_buf(),
        })
    }

    /// Opens the state directory at `path` only if it exists, creating nothing: for readers
    /// that must not change anything (`--dry-run`). `Ok(None)` when there is none yet.
    pub fn existing(path: &Path) -> Result<Option<StateDir>, Error> {
        let clones = path.join("clones");
        match std::fs::symlink_metadata(&clones) {
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => return Err(io_error("read", &clones, &e)),
            Ok(_) => {}
        }
        check_private(path, "state directory", Follow::Yes)?;
        check_private(&clones, "state directory", Follow::No)?;
        Ok(Some(StateDir {
            root: path.to_path_buf(),
        }))
    }

    /// The state directory.
    pub fn path(&self) -> &Path {
        &self.root
    }

    /// The directory of clone `id` (whether or not it exists).
    pub fn clone_dir(&self, id: &CloneId) -> PathBuf {
        self.root.join("clones").join(id.as_str())
    }

    /// The clones in this state directory, sorted. Lists directories only: a clone being run
    /// by another process is listed too.
    pub fn clone_ids(&self) -> Result<Vec<CloneId>, Error> {
        let clones = self.root.join("clones");
        let listing = std::fs::read_dir(&clones).map_err(|e| io_error("list", &clones, &e))?;
        let mut ids = Vec::new();
        for item in listing {
            let item = item.map_err(|e| io_error("list", &clones, &e))?;
            let is_dir = item.file_type().is_ok_and(|t| t.is_dir());
            let id = item.file_name().to_str().and_then(CloneId::parse);
            if let (true, Some(id)) = (is_dir, id) {
                ids.push(id);
            }
        }
        ids.sort();
        Ok(ids)
    }

    /// Opens clone `id` for running it: creates its directory if needed, takes its lock
    /// (refusing at once if another process holds it) and opens its database. A clone that
    /// turns out to have no record (see [`CloneStore::load`]) was created by this call; a
    /// caller that did not mean to create one calls [`CloneStore::discard`].
    pub fn open_clone(&self, id: &CloneId) -> Result<CloneStore, Error> {
        let dir = self.clone_dir(id);
        create_private_dir(&dir)?;
        check_private(&dir, "clone directory", Follow::No)?;
        let lock = self.lock(id, &dir)?;
        CloneStore::open_locked(id, dir, lock)
    }

    /// Opens clone `id` as [`StateDir::open_clone`] does and loads its record, telling a damaged
    /// record apart from one that another process runs (an error: the clone is locked).
    pub fn find_clone(&self, id: &CloneId) -> Result<Found, Error> {
        let dir = self.clone_dir(id);
        create_private_dir(&dir)?;
        check_private(&dir, "clone directory", Follow::No)?;
        let lock = self.lock(id, &dir)?;
        let store = match CloneStore::open_locked(id, dir, lock) {
            Ok(store) => store,
            Err(e) => return Ok(Found::Damaged(e)),
        };
        match store.load() {
            Ok(Some(record)) => Ok(Found::Record(store, record)),
            Ok(None) => Ok(Found::New(store)),
            Err(e) => Ok(Found::Damaged(e)),
        }
    }

    /// Removes clone `id` under its lock, without opening its database: this is how a clone
    /// whose store is damaged is thrown away (`clone start --force`), and how `clone forget`
    /// removes a record. A clone that another process runs is refused.
    pub fn discard_clone(&self, id: &CloneId) -> Result<(), Error> {
        let dir = self.clone_dir(id);
        if std::fs::symlink_metadata(&dir).is_err() {
            return Ok(());
        }
        check_private(&dir, "clone directory", Follow::No)?;
        let lock = self.lock(id, &dir)?;
        remove_clone_dir(&dir, lock)
    }

    /// What `clone status` shows for clone `id`. When no process runs the clone, its lock is
    /// taken briefly and the record read from sled (the truth); when one does, the runner's
    /// snapshot is read instead, which answers in milliseconds however busy the runner is.
    pub fn read_status(&self, id: &CloneId) -> Result<StatusView, Error> {
        let dir = self.clone_dir(id);
        if !dir.is_dir() {
            return Err(self.no_such_clone(id));
        }
        check_private(&dir, "clone directory", Follow::No)?;
        // The lock may be held for a few milliseconds by another `clone status` (or by a run
        // that has not published its first snapshot yet): look again until the grace ends.
        poll_blocking(
            &LOCK_GRACE,
            |err: &Error| err.retryable,
            || self.try_read_status(id, &dir),
        )
        .map_err(GaveUp::into_inner)
    }

    fn try_read_status(&self, id: &CloneId, dir: &Path) -> Result<StatusView, Error> {
        let dir = dir.to_path_buf();
        match CloneLock::try_acquire(&dir.join("lock")) {
            Ok(lock) => {
                let store = CloneStore::open_locked(id, dir, lock)?;
                let record = store.load()?.ok_or_else(|| self.no_such_clone(id))?;
                let counts = store.files().counts()?;
                Ok(StatusView {
                    record,
                    running: false,
                    pid: None,
                    updated_at: None,
                    live: None,
                    files: (counts.files_total > 0).then_some(counts),
                })
            }
            Err(LockError::Held(pid)) => {
                let snapshot = status::read(&dir)?;
                // A snapshot left by an earlier run of the clone says nothing about this one.
                let snapshot = snapshot.filter(|s| pid.is_none_or(|pid| pid == s.pid));
                let Some(snapshot) = snapshot else {
                    return Err(Error::new(
                        ErrorKind::Store,
                        format!(
                            "clone {id} is being started by pgreplica process ({}) and has \
                             not published its status yet",
                            pid_text(pid)
                        ),
                    )
                    .hint(format!(
                        "run \"{}\" again in a moment",
                        crate::paste::pgreplica(&["clone", "status", id.as_str()])
                    ))
                    .retryable());
                };
                Ok(StatusView {
                    pid: Some(snapshot.pid),
                    record: snapshot.record,
                    running: true,
                    updated_at: Some(snapshot.updated_at),
                    live: snapshot.live,
                    files: None,
                })
            }
            Err(LockError::Io(err)) => Err(err),
        }
    }

    /// Takes the clone's lock. A holder that lets go within [`LOCK_GRACE`] (a `clone status`
    /// reading an idle clone holds it for milliseconds) is waited for; a running clone is not.
    fn lock(&self, id: &CloneId, dir: &Path) -> Result<CloneLock, Error> {
        let acquired = poll_blocking(
            &LOCK_GRACE,
            |err: &LockError| matches!(err, LockError::Held(_)),
            || CloneLock::try_acquire(&dir.join("lock")),
        );
        acquired
            .map_err(GaveUp::into_inner)
            .map_err(|err| match err {
                LockError::Held(pid) => Error::new(
                    ErrorKind::Store,
                    format!(
                        "clone {id} is being run by another pgreplica process ({})",
                        pid_text(pid)
                    ),
                )
                .hint(format!(
                    "wait for it to finish, or follow it with \"{}\"",
                    crate::paste::pgreplica(&["clone", "status", id.as_str()])
                )),
                LockError::Io(err) => err,
            })
    }

    fn no_such_clone(&self, id: &CloneId) -> Error {
        Error::new(
            ErrorKind::CloneState,
            format!("there is no clone {id} in {}", self.root.display()),
        )
        .hint(format!(
            "\"{}\" lists the clones of this state directory",
            crate::paste::pgreplica(&["clone", "list"])
        ))
    }
}

impl CloneStore {
    fn open_locked(id: &CloneId, dir: PathBuf, lock: CloneLock) -> Result<CloneStore, Error> {
        let path = dir.join("db");
        let db = open_sled(&path)
            .map_err(|panic| unreadable(&format!("clone {id}"), &path, &panic))?
            .map_err(|e| sled_error_at(id, &path, "open", e))?;
        let files = guarded(|| db.open_tree(files::TREE))
            .map_err(|panic| unreadable(&format!("clone {id}"), &path, &panic))?
            .map_err(|e| sled_error_at(id, &path, "open the file list of", e))?;
        let checks = guarded(|| db.open_tree(files::CHECKS_TREE))
            .map_err(|panic| unreadable(&format!("clone {id}"), &path, &panic))?
            .map_err(|e| sled_error_at(id, &path, "open the file list of", e))?;
        Ok(CloneStore {
            db,
            files,
            checks,
            id: id.clone(),
            marker: Mutex::new(Marker::read(&dir)?),
            pending: Mutex::new(files::Pending::default()),
            dir,
            _lock: lock,
        })
    }

    /// The clone's id.
    pub fn id(&self) -> &CloneId {
        &self.id
    }

    /// The clone's directory in the state directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The clone record, or `None` for a clone that has never been saved.
    pub fn load(&self) -> Result<Option<CloneRecord>, Error> {
        let (value, generation) = guarded(|| -> sled::Result<_> {
            Ok((self.db.get(RECORD_KEY)?, self.db.get(GENERATION_KEY)?))
        })
        .map_err(|panic| self.damaged(&panic))?
        .map_err(|e| self.sled_error("read the record of", e))?;
        let generation = generation_of(generation.as_deref());
        let saved = self.marker().record_generation;
        if generation < saved {
            let reason = match value {
                None => format!("the record is gone, although checkpoint {saved} was saved"),
                Some(_) => format!(
                    "the record is checkpoint {generation}, although checkpoint {saved} was saved"
                ),
            };
            return Err(self.damaged(&reason));
        }
        value
            .map(|bytes| codec::decode(&bytes).map_err(|e| self.decode_error("clone record", e)))
            .transpose()
    }

    /// Checkpoints `record`: it is on disk when this returns.
    pub fn save(&self, record: &CloneRecord) -> Result<(), Error> {
        let stored = self
            .db
            .get(GENERATION_KEY)
            .map_err(|e| self.sled_error("read the record of", e))?;
        let mut marker = self.marker();
        let generation = generation_of(stored.as_deref()).max(marker.record_generation) + 1;
        let mut batch = sled::Batch::default();
        batch.insert(RECORD_KEY, codec::encode(record));
        batch.insert(GENERATION_KEY, &generation.to_be_bytes());
        self.db
            .apply_batch(batch)
            .map_err(|e| self.sled_error("write the record of", e))?;
        self.db
            .flush()
            .map_err(|e| self.sled_error("flush the record of", e))?;
        marker.record_generation = generation;
        marker.write(&self.dir)
    }

    /// The transfer's file list.
    pub fn files(&self) -> FileTable<'_> {
        FileTable {
            store: self,
            tree: self.files.clone(),
            checks: self.checks.clone(),
        }
    }

    /// Publishes `snapshot` for `clone status` in other processes (atomically replacing the
    /// previous one).
    pub fn publish(&self, snapshot: &StatusSnapshot) -> Result<(), Error> {
        status::write(&self.dir, snapshot)
    }

    /// Closes the store of a run that wrote it, leaving sled's own snapshot current, then
    /// releases the lock. sled 0.34 writes its snapshot only while a database is opened
    /// (replaying the log written since the last one; `Config::snapshot_after_ops` is a no-op
    /// in 0.34), so the run's writes would otherwise be replayed by the next opener: the first
    /// `clone status` of the idle clone (0.1–0.26 s at 100 000 files, against about 0.05 s
    /// once the snapshot is current). One reopen here, under the clone lock still held, pays
    /// that once at the end of the run. A kill meanwhile loses nothing: opening is what every
    /// reader does, and the snapshot is replaced by an atomic rename.
    pub fn close(self) -> Result<(), Error> {
        let (id, dir, lock) = self.release_database();
        let path = dir.join("db");
        let reopened = open_sled(&path)
            .map_err(|panic| unreadable(&format!("clone {id}"), &path, &panic))?
            .map_err(|e| sled_error_at(&id, &path, "open", e))?;
        drop(reopened);
        drop(lock);
        Ok(())
    }

    /// Removes the clone's directory (record, file list, snapshot) and then releases the lock.
    pub fn discard(self) -> Result<(), Error> {
        let (_, dir, lock) = self.release_database();
        remove_clone_dir(&dir, lock)
    }

    /// Drops every handle on the sled database (one kept would hold sled's own lock), keeping
    /// what the caller still needs: the clone's id, its directory and the clone lock.
    fn release_database(self) -> (CloneId, PathBuf, CloneLock) {
        let CloneStore {
            db,
            files,
            checks,
            id,
            dir,
            _lock: lock,
            ..
        } = self;
        drop(checks);
        drop(files);
        drop(db);
        (id, dir, lock)
    }

    /// The marker, locked; a poisoned lock still holds a consistent marker (it is replaced
    /// whole), so poisoning is ignored.
    pub(crate) fn marker(&self) -> std::sync::MutexGuard<'_, Marker> {
        self.marker
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner)
    }

    /// The file list's pending marks, locked (taken before the marker when both are). A
    /// poisoned lock may hold half a change: its marks are dropped (they were never durable)
    /// and the summary is read from sled again.
    pub(crate) fn pending(&self) -> std::sync::MutexGuard<'_, files::Pending> {
        self.pending.lock().unwrap_or_else(|poisoned| {
            let mut guard = poisoned.into_inner();
            *guard = files::Pending::default();
            guard
        })
    }

    fn db_path(&self) -> PathBuf {
        self.dir.join("db")
    }

    pub(crate) fn sled_error(&self, action: &str, err: sled::Error) -> Error {
        sled_error_at(&self.id, &self.db_path(), action, err)
    }

    pub(crate) fn damaged(&self, reason: &str) -> Error {
        unreadable(&format!("clone {}", self.id), &self.db_path(), reason)
    }

    pub(crate) fn decode_error(&self, what: &str, err: DecodeError) -> Error {
        let whose = format!("{what} of {}", self.id);
        match err {
            DecodeError::Newer(version) => newer_schema_error(
                &format!("{whose} in {}", self.db_path().display()),
                u64::from(version),
            ),
            DecodeError::Unreadable(reason) => unreadable(&whose, &self.db_path(), &reason),
        }
    }
}

/// The error for a value written by a newer pgreplica.
pub(crate) fn newer_schema_error(what: &str, version: u64) -> Error {
    Error::new(
        ErrorKind::Store,
        format!(
            "{what} was written by a newer pgreplica (schema {version}; this pgreplica reads up \
             to {SCHEMA_VERSION})"
        ),
    )
    .hint("upgrade pgreplica to the version that wrote it")
}

/// The error for a damaged value at `path` (in a clone's directory or its `db/`).
pub(crate) fn unreadable(what: &str, path: &Path, reason: &str) -> Error {
    let clone_dir = path.parent().unwrap_or(path);
    let id = clone_dir
        .file_name()
        .map(|n| n.to_string_lossy().into_owned())
        .unwrap_or_default();
    Error::new(
        ErrorKind::Store,
        format!("{what} in {} is unreadable: {reason}", path.display()),
    )
    .hint(format!(
        "discard the record with \"{}\" and start the clone again (clone start with -F/--force \
         when the data directory holds files): the data directory is untouched, and the transfer \
         keeps the files already copied that match the backup",
        crate::paste::pgreplica(&["clone", "forget", &id])
    ))
}

fn sled_error_at(id: &CloneId, db: &Path, action: &str, err: sled::Error) -> Error {
    match err {
        sled::Error::Io(io) => io_error(&format!("{action} clone {id} in"), db, &io),
        sled::Error::Corruption { .. } => {
            unreadable(&format!("clone {id}"), db, "sled found corrupted data")
        }
        sled::Error::Unsupported(_) => unreadable(&format!("clone {id}"), db, &err.to_string()),
        other => Error::new(
            ErrorKind::Store,
            format!("cannot {action} clone {id} in {}: {other}", db.display()),
        )
        .hint(format!(
            "run the command again; if it fails the same way, discard the record with \"{}\" and start the clone again: the data directory is untouched",
            crate::paste::pgreplica(&["clone", "forget", id.as_str()])
        )),
    }
}

/// How sled's own lock on a database whose clone lock is already ours is waited for: polled
/// every 2 ms for up to 3 s.
const SLED_LOCK_PATIENCE: RetryPolicy = RetryPolicy {
    max_attempts: u32::MAX,
    first_delay_ms: 2,
    max_delay_ms: 2,
    give_up_after_ms: Some(3_000),
    jitter_percent: 0,
};

/// Opens a sled database whose clone lock this process holds.
///
/// sled keeps its own flock on `db/db`, and a dropped handle releases it only when sled's
/// background threads have let go of the file, a few milliseconds later; likewise in a
/// process that has just died. Holding the clone lock proves no live run owns the database,
/// so sled's "could not acquire lock" can only be such a leftover: wait for it (sled offers
/// no notification) instead of failing the run.
fn open_sled(path: &Path) -> Result<sled::Result<sled::Db>, String> {
    let leftover_lock = |opened: &sled::Result<sled::Db>| {
        matches!(opened, Err(sled::Error::Io(io))
            if io.to_string().starts_with("could not acquire lock"))
    };
    // A panic inside sled is final; an open refused by sled's leftover lock is waited out, and
    // whatever sled answered last is the caller's to judge.
    let opened = poll_blocking(
        &SLED_LOCK_PATIENCE,
        |attempt: &Result<sled::Result<sled::Db>, String>| {
            attempt.as_ref().is_ok_and(leftover_lock)
        },
        || match guarded(|| sled::Config::new().path(path).open()) {
            Ok(opened) if leftover_lock(&opened) => Err(Ok(opened)),
            Ok(opened) => Ok(opened),
            Err(panic) => Err(Err(panic)),
        },
    );
    match opened {
        Ok(db) => Ok(db),
        Err(gave_up) => gave_up.into_inner(),
    }
}

fn generation_of(stored: Option<&[u8]>) -> u64 {
    stored
        .and_then(|bytes| <[u8; 8]>::try_from(bytes).ok())
        .map_or(0, u64::from_be_bytes)
}

fn remove_clone_dir(dir: &Path, lock: CloneLock) -> Result<(), Error> {
    // The lock file goes with the directory while its flock is still held, so no process can
    // take the lock of a half-removed clone.
    let removed = std::fs::remove_dir_all(dir).map_err(|e| io_error("remove", dir, &e));
    drop(lock);
    removed
}

fn pid_text(pid: Option<u32>) -> String {
    pid.map_or_else(|| "pid unknown".to_string(), |pid| format!("pid {pid}"))
}

fn resolve_from(
    explicit: Option<&Path>,
    xdg_state_home: Option<OsString>,
    home: Option<OsString>,
) -> Result<PathBuf, Error> {
    if let Some(path) = explicit {
        return Ok(path.to_path_buf());
    }
    // The XDG spec says a relative XDG_STATE_HOME is invalid and must be ignored.
    if let Some(xdg) = xdg_state_home
        .map(PathBuf::from)
        .filter(|p| p.is_absolute())
    {
        return Ok(xdg.join("pgreplica"));
    }
    if let Some(home) = home.map(PathBuf::from).filter(|p| p.is_absolute()) {
        return Ok(home.join(".local/state/pgreplica"));
    }
    Err(Error::new(
        ErrorKind::Config,
        "cannot choose a state directory: none of --state-dir, PGREPLICA_STATE_DIR, \
         XDG_STATE_HOME and HOME is set",
    )
    .hint("pass --state-dir or set PGREPLICA_STATE_DIR"))
}

thread_local! {
    /// Set while this thread runs sled code under [`guarded`], whose panics become errors and
    /// must not also be printed as a crash.
    static GUARDED: Cell<bool> = const { Cell::new(false) };
}

/// Runs sled code that may panic on a damaged database, turning a panic into its message.
fn guarded<T>(run: impl FnOnce() -> T) -> Result<T, String> {
    static QUIET_HOOK: Once = Once::new();
    QUIET_HOOK.call_once(|| {
        let previous = panic::take_hook();
        panic::set_hook(Box::new(move |info| {
            if !GUARDED.with(Cell::get) {
                previous(info);
            }
        }));
    });
    let outer = GUARDED.with(|g| g.replace(true));
    let result = panic::catch_unwind(AssertUnwindSafe(run));
    GUARDED.with(|g| g.set(outer));
    result.map_err(|payload| {
        let message = payload
            .downcast_ref::<&str>()
            .map(|s| (*s).to_string())
            .or_else(|| payload.downcast_ref::<String>().cloned())
            .unwrap_or_else(|| "sled panicked".to_string());
        format!("sled failed on it: {message}")
    })
}

#[cfg(test)]
mod tests;
