//! The checkpoint marker: what a clone's sled database must at least contain, kept beside it.
//!
//! sled recovers from a damaged log by keeping the longest valid prefix, so a truncated or
//! scribbled `db` file often opens "fine" with the record or the file list silently gone or
//! rolled back. `<clone>/checkpoint.json` records the generation of the last saved record and
//! the length of the file list; a database that has less is reported as damaged instead of
//! being taken for a new clone. It is written after sled's flush, so sled is never behind it
//! on a crash. This module compares counters; it never repairs anything.

use super::lock::io_error;
use super::status::{read_private, write_atomically};
use crate::error::Error;
use serde::{Deserialize, Serialize};
use std::path::Path;

/// Name of the marker in a clone's directory.
const MARKER_FILE: &str = "checkpoint.json";

/// What sled held at the last checkpoint.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Marker {
    /// Generation of the last record saved (0: none yet).
    pub(crate) record_generation: u64,
    /// Entries in the file list as last replaced; `None` while a replacement is under way (a
    /// crash then leaves either list in sled, and neither can be checked).
    pub(crate) files: Option<u64>,
}

impl Marker {
    /// Reads the marker of the clone in `dir`; a clone without one has no checkpoint yet.
    pub(crate) fn read(dir: &Path) -> Result<Marker, Error> {
        let path = dir.join(MARKER_FILE);
        match read_private(&path) {
            Ok(bytes) => serde_json::from_slice(&bytes)
                .map_err(|e| super::unreadable("checkpoint marker", &path, &e.to_string())),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Marker::default()),
            Err(e) => Err(io_error("read", &path, &e)),
        }
    }

    /// Writes the marker of the clone in `dir` atomically.
    pub(crate) fn write(&self, dir: &Path) -> Result<(), Error> {
        let bytes = serde_json::to_vec(self).expect("the marker serialises to JSON");
        write_atomically(&dir.join(MARKER_FILE), &bytes)
    }
}
