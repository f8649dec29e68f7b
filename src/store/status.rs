//! The status snapshot: how a running clone shows itself to other processes.
//!
//! sled admits one process per database, and the running clone holds it, so `clone status`
//! from another process cannot read sled. The runner therefore keeps `<clone>/status.json`
//! current; it is written atomically (temporary file, fsync, rename) so that a reader sees the
//! old snapshot or the new one, never half of one. The snapshot is a view: it is never read
//! back to resume a clone — sled is the truth.

use super::lock::io_error;
use crate::error::{Error, ErrorKind};
use serde::{Deserialize, Serialize};
use states::{CloneRecord, Millis, Step, SCHEMA_VERSION};
use std::fs::{self, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;

/// Name of the snapshot file in a clone's directory.
pub(crate) const STATUS_FILE: &str = "status.json";

/// What the running clone publishes for `clone status`.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct StatusSnapshot {
    /// The record as last checkpointed (or about to be): phase, facts, history.
    pub record: CloneRecord,
    /// The process running the clone.
    pub pid: u32,
    /// When this snapshot was taken; a reader can tell a stalled runner from a busy one.
    pub updated_at: Millis,
    /// Progress inside the current step, when the step reports any (Transfer does).
    pub live: Option<LiveProgress>,
}

/// Progress inside the running step.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct LiveProgress {
    /// The step this progress belongs to.
    pub step: Step,
    /// Bytes complete at their final name.
    pub bytes_done: u64,
    /// Bytes in the step's work (the backup's size for Transfer).
    pub bytes_total: u64,
    /// Files complete.
    pub files_done: u64,
    /// Files in the step's work.
    pub files_total: u64,
    /// Recent throughput.
    pub rate_bytes_per_sec: u64,
    /// Seconds to go at the recent rate, when the rate says anything.
    pub eta_secs: Option<u64>,
}

/// How the snapshot sits on disk: the schema version next to the snapshot, so that a status
/// file from a newer pgreplica is refused like a newer record is.
#[derive(Serialize, Deserialize)]
struct StatusFile {
    schema: u16,
    #[serde(flatten)]
    snapshot: StatusSnapshot,
}

/// Writes `snapshot` to `<dir>/status.json` atomically.
pub(crate) fn write(dir: &Path, snapshot: &StatusSnapshot) -> Result<(), Error> {
    let path = dir.join(STATUS_FILE);
    let file = StatusFile {
        schema: SCHEMA_VERSION,
        snapshot: snapshot.clone(),
    };
    let bytes = serde_json::to_vec_pretty(&file)
        .map_err(|e| Error::bug(format!("cannot serialise the status snapshot: {e}")))?;
    write_atomically(&path, &bytes)
}

/// Replaces `path` with `bytes` so that readers see the old or the new content, never a mix.
///
/// The temporary file is created afresh (`O_EXCL`, never through a symbolic link): a leftover
/// is removed first (which removes a planted link, not its target), so nothing is ever
/// truncated or written through a link.
pub(crate) fn write_atomically(path: &Path, bytes: &[u8]) -> Result<(), Error> {
    let mut tmp = path.as_os_str().to_owned();
    tmp.push(".tmp");
    let tmp = std::path::PathBuf::from(tmp);
    match fs::remove_file(&tmp) {
        Ok(()) => {}
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
        Err(e) => return Err(io_error("remove", &tmp, &e)),
    }
    let write_tmp = || -> std::io::Result<()> {
        let mut out = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .custom_flags(libc::O_NOFOLLOW)
            .open(&tmp)?;
        out.write_all(bytes)?;
        out.sync_all()
    };
    if let Err(e) = write_tmp() {
        let _ = fs::remove_file(&tmp);
        return Err(io_error("write", &tmp, &e));
    }
    fs::rename(&tmp, path).map_err(|e| io_error("rename into place", path, &e))
}

/// The content of the state file `path`, read without following a symbolic link.
pub(crate) fn read_private(path: &Path) -> std::io::Result<Vec<u8>> {
    let mut file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NOFOLLOW)
        .open(path)?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)?;
    Ok(bytes)
}

/// Reads `<dir>/status.json`; `Ok(None)` when the runner has not published one yet.
pub(crate) fn read(dir: &Path) -> Result<Option<StatusSnapshot>, Error> {
    let path = dir.join(STATUS_FILE);
    let bytes = match read_private(&path) {
        Ok(bytes) => bytes,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(e) => return Err(io_error("read", &path, &e)),
    };
    let unreadable = |reason: String| {
        Error::new(
            ErrorKind::Store,
            format!("status snapshot {} is unreadable: {reason}", path.display()),
        )
        .hint("the running pgreplica rewrites it within a second; run `clone status` again")
        .retryable()
    };
    let value: serde_json::Value =
        serde_json::from_slice(&bytes).map_err(|e| unreadable(e.to_string()))?;
    let schema = value
        .get("schema")
        .and_then(serde_json::Value::as_u64)
        .ok_or_else(|| unreadable("it has no schema version".to_string()))?;
    if schema > u64::from(SCHEMA_VERSION) {
        return Err(super::newer_schema_error(
            &format!("status snapshot {}", path.display()),
            schema,
        ));
    }
    let file: StatusFile = serde_json::from_value(value).map_err(|e| unreadable(e.to_string()))?;
    Ok(Some(file.snapshot))
}
