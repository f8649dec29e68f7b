//! The versioned encoding of every value the store writes: a magic, a schema version, bincode.
//!
//! The header lets a reader tell three cases apart before it trusts a single byte of payload:
//! not ours (or damaged), written by a newer pgreplica, or readable. This module only turns
//! values into bytes and back; it never touches sled or the file system.

use serde::{de::DeserializeOwned, Serialize};
use states::SCHEMA_VERSION;

/// First bytes of every stored value: "pgreplica store".
const MAGIC: [u8; 4] = *b"PGRS";

/// Length of the header: the magic and a little-endian `u16` schema version.
const HEADER_LEN: usize = MAGIC.len() + 2;

/// Upper bound on what a decoder will allocate for one value. Garbage that claims a length of
/// petabytes must fail as "unreadable", not abort the process on allocation.
const DECODE_LIMIT: u64 = 256 * 1024 * 1024;

/// Why stored bytes could not be decoded.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum DecodeError {
    /// The value carries a schema version this pgreplica does not know yet.
    Newer(u16),
    /// Truncated, garbage, or an older layout nothing reads any more.
    Unreadable(String),
}

fn options() -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new()
        .with_fixint_encoding()
        .with_limit(DECODE_LIMIT)
        .reject_trailing_bytes()
}

/// Encodes `value` behind the header of the current schema version.
pub(crate) fn encode<T: Serialize>(value: &T) -> Vec<u8> {
    use bincode::Options;
    let mut bytes = Vec::with_capacity(128);
    bytes.extend_from_slice(&MAGIC);
    bytes.extend_from_slice(&SCHEMA_VERSION.to_le_bytes());
    // Serialising plain data into memory can only fail on the size limit, which a clone
    // record or a manifest entry never comes near.
    options()
        .serialize_into(&mut bytes, value)
        .expect("bincode serialises store values into memory");
    bytes
}

/// Decodes bytes written by [`encode`], refusing newer schemas and damaged bytes.
pub(crate) fn decode<T: DeserializeOwned>(bytes: &[u8]) -> Result<T, DecodeError> {
    use bincode::Options;
    if bytes.len() < HEADER_LEN {
        return Err(DecodeError::Unreadable(format!(
            "{} bytes, shorter than the {HEADER_LEN}-byte header",
            bytes.len()
        )));
    }
    if bytes[..MAGIC.len()] != MAGIC {
        return Err(DecodeError::Unreadable(
            "it does not start with pgreplica's header".to_string(),
        ));
    }
    let version = u16::from_le_bytes([bytes[4], bytes[5]]);
    if version > SCHEMA_VERSION {
        return Err(DecodeError::Newer(version));
    }
    if version < SCHEMA_VERSION {
        return Err(DecodeError::Unreadable(format!(
            "schema {version} is older than any this pgreplica reads"
        )));
    }
    options()
        .deserialize(&bytes[HEADER_LEN..])
        .map_err(|e| DecodeError::Unreadable(e.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use states::{EntryKind, ManifestEntry};

    fn entry() -> ManifestEntry {
        ManifestEntry {
            root: 16384,
            path: "base/1/1259".to_string(),
            kind: EntryKind::File,
            size: 8192,
            mtime: 1_700_000_000,
            done: false,
        }
    }

    #[test]
    fn round_trip() {
        let bytes = encode(&entry());
        assert_eq!(&bytes[..4], b"PGRS");
        assert_eq!(decode::<ManifestEntry>(&bytes), Ok(entry()));
    }

    #[test]
    fn newer_schema_is_recognised_before_the_payload() {
        let mut bytes = encode(&entry());
        bytes[4..6].copy_from_slice(&(SCHEMA_VERSION + 1).to_le_bytes());
        // A newer layout may be anything; the payload must not even be looked at.
        bytes.truncate(HEADER_LEN);
        assert_eq!(
            decode::<ManifestEntry>(&bytes),
            Err(DecodeError::Newer(SCHEMA_VERSION + 1))
        );
    }

    #[test]
    fn damaged_bytes_are_unreadable() {
        let good = encode(&entry());
        let truncated = &good[..good.len() - 3];
        let mut trailing = good.clone();
        trailing.push(0);
        let mut garbage = good.clone();
        garbage[HEADER_LEN..].fill(0xff);
        let mut older = good.clone();
        older[4..6].copy_from_slice(&0u16.to_le_bytes());
        for (what, bytes) in [
            ("empty", &[][..]),
            ("short header", &good[..3]),
            ("truncated", truncated),
            ("trailing", &trailing[..]),
            ("garbage", &garbage[..]),
            ("older", &older[..]),
            ("foreign", &b"{\"json\": true}"[..]),
        ] {
            match decode::<ManifestEntry>(bytes) {
                Err(DecodeError::Unreadable(_)) => {}
                other => panic!("{what}: {other:?}"),
            }
        }
    }

    #[test]
    fn huge_claimed_lengths_fail_without_allocating() {
        let mut bytes = encode(&entry());
        // The path's u64 length prefix follows the u32 root.
        bytes[HEADER_LEN + 4..HEADER_LEN + 12].copy_from_slice(&u64::MAX.to_le_bytes());
        assert!(matches!(
            decode::<ManifestEntry>(&bytes),
            Err(DecodeError::Unreadable(_))
        ));
    }
}
