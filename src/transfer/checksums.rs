//! backup_manifest's per-file checksums, read from a copied `backup_manifest`, and the running
//! checksum of a file as its bytes arrive, so the streaming engine checks each file against the
//! backup as it writes it.
//!
//! The algorithms are pg_basebackup's: CRC32C (its default; the hex of the CRC's bytes in
//! little-endian order, as PostgreSQL prints it on the machines it runs on) and SHA-224/256/
//! 384/512; `NONE` (or a file the manifest does not name) has no checksum to check.
//!
//! Also the one error for a file whose bytes differ from the manifest's checksum ([`mismatch`]),
//! whichever engine found it, and the checksum of a file on disk ([`sum_file`]), for the rsync
//! engine's verifier and VerifyCopy.
//!
//! Must not: read anything but the manifest and the files it is given, or decide what a
//! mismatch costs (the engine takes the file back).

use std::collections::HashMap;
use std::path::Path;

use sha2::Digest;

use crate::durable::io_error;
use crate::error::{Error, ErrorKind, Result};

/// The checksum algorithms backup_manifest names.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Algorithm {
    /// CRC-32C (Castagnoli), pg_basebackup's default.
    Crc32c,
    /// SHA-224.
    Sha224,
    /// SHA-256.
    Sha256,
    /// SHA-384.
    Sha384,
    /// SHA-512.
    Sha512,
}

impl Algorithm {
    fn parse(name: &str) -> Option<Algorithm> {
        Some(match name {
            "CRC32C" => Algorithm::Crc32c,
            "SHA224" => Algorithm::Sha224,
            "SHA256" => Algorithm::Sha256,
            "SHA384" => Algorithm::Sha384,
            "SHA512" => Algorithm::Sha512,
            _ => return None,
        })
    }
}

/// What the manifest says a file's checksum is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Expected {
    /// The algorithm.
    pub algorithm: Algorithm,
    /// The checksum, lower-case hex.
    pub hex: String,
}

/// The manifest's checksums by path relative to the data directory (tablespace files under
/// `pg_tblspc/<oid>/`).
#[derive(Clone, Debug, Default)]
pub struct Checksums {
    by_path: HashMap<Vec<u8>, Expected>,
}

impl Checksums {
    /// Reads the checksums of the `backup_manifest` at `path`.
    pub fn read(path: &Path) -> Result<Checksums> {
        let text = std::fs::read(path).map_err(|e| io_error("read", path, e))?;
        Checksums::parse(&text).map_err(|why| {
            Error::new(
                ErrorKind::BaseBackup,
                format!("cannot read the checksums of \"{}\": {why}", path.display()),
            )
            .hint("this backup's backup_manifest on the Barman host is damaged: clone from another backup with --backup-id")
        })
    }

    /// Parses a manifest's text.
    fn parse(text: &[u8]) -> std::result::Result<Checksums, String> {
        let manifest: serde_json::Value =
            serde_json::from_slice(text).map_err(|e| e.to_string())?;
        let files = manifest["Files"]
            .as_array()
            .ok_or("it has no \"Files\" list")?;
        let mut by_path = HashMap::with_capacity(files.len());
        for file in files {
            let path = match (&file["Path"], &file["Encoded-Path"]) {
                (serde_json::Value::String(p), _) => p.as_bytes().to_vec(),
                (_, serde_json::Value::String(hex)) => {
                    decode_hex(hex).ok_or_else(|| format!("bad Encoded-Path {hex}"))?
                }
                _ => return Err("a file without a path".into()),
            };
            let algorithm = file["Checksum-Algorithm"]
                .as_str()
                .and_then(Algorithm::parse);
            if let (Some(algorithm), Some(hex)) = (algorithm, file["Checksum"].as_str()) {
                let hex = hex.to_ascii_lowercase();
                by_path.insert(path, Expected { algorithm, hex });
            }
        }
        Ok(Checksums { by_path })
    }

    /// The checksum of the file of list root `root` at `path` (relative to that root), if the
    /// manifest gives one.
    pub fn of(&self, root: u32, path: &str) -> Option<&Expected> {
        self.by_path.get(&manifest_path(root, path))
    }

    /// Every file with a checksum: its path as the manifest names it (relative to the data
    /// directory, tablespace files under `pg_tblspc/<oid>/`) and its checksum.
    pub fn iter(&self) -> impl Iterator<Item = (&[u8], &Expected)> {
        self.by_path.iter().map(|(path, e)| (path.as_slice(), e))
    }

    /// How many files have a checksum.
    pub fn len(&self) -> usize {
        self.by_path.len()
    }

    /// Whether no file has one.
    pub fn is_empty(&self) -> bool {
        self.by_path.is_empty()
    }
}

/// A checksum computed as the bytes arrive.
pub enum Running {
    /// CRC-32C so far.
    Crc32c(u32),
    /// SHA-224.
    Sha224(sha2::Sha224),
    /// SHA-256.
    Sha256(sha2::Sha256),
    /// SHA-384.
    Sha384(sha2::Sha384),
    /// SHA-512.
    Sha512(sha2::Sha512),
}

impl Running {
    /// A checksum of `algorithm` over no bytes yet.
    pub fn new(algorithm: Algorithm) -> Running {
        match algorithm {
            Algorithm::Crc32c => Running::Crc32c(0),
            Algorithm::Sha224 => Running::Sha224(sha2::Sha224::new()),
            Algorithm::Sha256 => Running::Sha256(sha2::Sha256::new()),
            Algorithm::Sha384 => Running::Sha384(sha2::Sha384::new()),
            Algorithm::Sha512 => Running::Sha512(sha2::Sha512::new()),
        }
    }

    /// Adds `bytes`.
    pub fn update(&mut self, bytes: &[u8]) {
        match self {
            Running::Crc32c(crc) => *crc = crc32c::crc32c_append(*crc, bytes),
            Running::Sha224(h) => h.update(bytes),
            Running::Sha256(h) => h.update(bytes),
            Running::Sha384(h) => h.update(bytes),
            Running::Sha512(h) => h.update(bytes),
        }
    }

    /// Whether the checksums of two runs of bytes make the checksum of both, one after the
    /// other ([`Running::followed_by`]): CRC-32C's do, a SHA's do not.
    pub fn joins(algorithm: Algorithm) -> bool {
        algorithm == Algorithm::Crc32c
    }

    /// The checksum of this run's bytes followed by `later`'s (`later_len` bytes), where the
    /// algorithm [`joins`](Running::joins); None otherwise.
    pub fn followed_by(self, later: Running, later_len: u64) -> Option<Running> {
        match (self, later) {
            (Running::Crc32c(first), Running::Crc32c(second)) => Some(Running::Crc32c(
                crc32c::crc32c_combine(first, second, usize::try_from(later_len).ok()?),
            )),
            _ => None,
        }
    }

    /// The checksum, lower-case hex, as backup_manifest writes it.
    pub fn hex(self) -> String {
        let bytes: Vec<u8> = match self {
            Running::Crc32c(crc) => crc.to_le_bytes().to_vec(),
            Running::Sha224(h) => h.finalize().to_vec(),
            Running::Sha256(h) => h.finalize().to_vec(),
            Running::Sha384(h) => h.finalize().to_vec(),
            Running::Sha512(h) => h.finalize().to_vec(),
        };
        bytes.iter().map(|b| format!("{b:02x}")).collect()
    }
}

/// The manifest's path of the file of list root `root` at `path` (relative to that root).
pub fn manifest_path(root: u32, path: &str) -> Vec<u8> {
    if root == 0 {
        path.as_bytes().to_vec()
    } else {
        format!("pg_tblspc/{root}/{path}").into_bytes()
    }
}

/// The checksum by `algorithm` of the file at `path`, lower-case hex.
pub fn sum_file(path: &Path, algorithm: Algorithm) -> std::io::Result<String> {
    Ok(sum_prefix(path, u64::MAX, algorithm)?.hex())
}

/// The checksum by `algorithm` of the first `len` bytes of the file at `path` (all of it when
/// shorter), still open to more bytes.
pub fn sum_prefix(path: &Path, len: u64, algorithm: Algorithm) -> std::io::Result<Running> {
    use std::io::Read;
    let mut file = std::fs::File::open(path)?.take(len);
    let mut sum = Running::new(algorithm);
    let mut buf = vec![0; 1 << 20];
    loop {
        match file.read(&mut buf) {
            Ok(0) => return Ok(sum),
            Ok(n) => sum.update(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
            Err(e) => return Err(e),
        }
    }
}

/// A copied file (`path`, relative to its root) whose bytes, as the Barman host holds them,
/// differ from `expected`, its checksum in backup_manifest: the backup is damaged (ssh's MAC
/// and rsync's own whole-file checksum rule out the transit), so sending it again cannot help;
/// the exit code is VerifyCopy's for a copy that does not match.
pub fn mismatch(path: &str, expected: &Expected) -> Error {
    Error::new(
        ErrorKind::BaseBackup,
        format!("the copy of \"{path}\" does not match its backup manifest"),
    )
    .detail(format!(
        "backup_manifest gives it the {:?} checksum {}; the bytes the Barman host sent have another",
        expected.algorithm, expected.hex
    ))
    .hint("the backup is damaged on the Barman host: clone from another backup with --backup-id")
}

fn decode_hex(hex: &str) -> Option<Vec<u8>> {
    (0..hex.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(hex.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A file's kept bytes and its tail, summed apart, make the whole file's CRC-32C; a SHA
    /// does not join; a prefix is read up to its length.
    #[test]
    fn a_prefix_and_a_tail_join_into_the_whole_files_crc() {
        let dir = std::env::temp_dir().join(format!("pgreplica-sums-{}", std::process::id()));
        std::fs::create_dir_all(&dir).expect("mkdir");
        let file = dir.join("f");
        let bytes: Vec<u8> = (0..3_000_000_u32).map(|i| (i * 7 % 251) as u8).collect();
        std::fs::write(&file, &bytes).expect("write");
        let kept = 1_234_567;
        let prefix = sum_prefix(&file, kept, Algorithm::Crc32c).expect("read");
        let mut tail = Running::new(Algorithm::Crc32c);
        tail.update(&bytes[kept as usize..]);
        let whole = prefix
            .followed_by(tail, (bytes.len() - kept as usize) as u64)
            .expect("joins");
        assert_eq!(whole.hex(), sum(Algorithm::Crc32c, &bytes));
        assert_eq!(
            sum_file(&file, Algorithm::Crc32c).expect("read"),
            sum(Algorithm::Crc32c, &bytes)
        );
        assert_eq!(
            sum_prefix(&file, kept, Algorithm::Sha256)
                .expect("read")
                .hex(),
            sum(Algorithm::Sha256, &bytes[..kept as usize])
        );
        assert!(Running::joins(Algorithm::Crc32c) && !Running::joins(Algorithm::Sha256));
        let sha = Running::new(Algorithm::Sha256);
        assert!(sha
            .followed_by(Running::new(Algorithm::Sha256), 0)
            .is_none());
        std::fs::remove_dir_all(&dir).expect("rm");
    }

    fn sum(algorithm: Algorithm, bytes: &[u8]) -> String {
        let mut running = Running::new(algorithm);
        let (a, b) = bytes.split_at(bytes.len() / 3);
        running.update(a);
        running.update(b);
        running.hex()
    }

    /// Known values: CRC-32C's check value of "123456789" is 0xE3069283 (printed as
    /// PostgreSQL prints it, its bytes little-endian), SHA-256 of "abc"; a manifest's paths,
    /// encoded paths and tablespace files.
    #[test]
    fn checksums_are_computed_and_looked_up_as_backup_manifest_spells_them() {
        assert_eq!(sum(Algorithm::Crc32c, b"123456789"), "839206e3");
        assert_eq!(
            sum(Algorithm::Sha256, b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
        assert_eq!(sum(Algorithm::Sha224, b"abc").len(), 56);
        assert_eq!(sum(Algorithm::Sha384, b"abc").len(), 96);
        assert_eq!(sum(Algorithm::Sha512, b"abc").len(), 128);
        let manifest = br#"{ "PostgreSQL-Backup-Manifest-Version": 1,
"Files": [
{ "Path": "base/1/1259", "Size": 8192, "Last-Modified": "2026-11-30 10:00:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "839206E3" },
{ "Encoded-Path": "6f6464", "Size": 3, "Last-Modified": "2026-11-30 10:00:00 GMT", "Checksum-Algorithm": "SHA256", "Checksum": "ab" },
{ "Path": "pg_tblspc/16385/PG_15_202209061/5/16386", "Size": 0, "Last-Modified": "2026-11-30 10:00:00 GMT", "Checksum-Algorithm": "CRC32C", "Checksum": "00000000" },
{ "Path": "backup_label", "Size": 3, "Last-Modified": "2026-11-30 10:00:00 GMT", "Checksum-Algorithm": "NONE" }
],
"WAL-Ranges": [] }"#;
        let sums = Checksums::parse(manifest).unwrap();
        assert_eq!(sums.len(), 3);
        let crc = sums.of(0, "base/1/1259").unwrap();
        assert_eq!(
            (crc.algorithm, crc.hex.as_str()),
            (Algorithm::Crc32c, "839206e3")
        );
        assert_eq!(sums.of(0, "odd").unwrap().algorithm, Algorithm::Sha256);
        assert!(sums.of(16385, "PG_15_202209061/5/16386").is_some());
        assert!(sums.of(0, "backup_label").is_none());
        assert!(Checksums::parse(b"{}").is_err());
    }
}
