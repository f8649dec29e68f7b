//! The versioned encoding of every value the store writes: a magic, a schema version, bincode.
//!
//! The header lets a reader tell four cases apart before it trusts a single byte of payload:
//! not ours (or damaged), written by a newer pgreplica, written by an older one (migrated: each
//! stored type says how it reads an older layout, [`Stored`]), or current. This module only
//! turns values into bytes and back; it never touches sled or the file system.

use serde::{de::DeserializeOwned, Serialize};
use states::schema3::OLDEST_READABLE;
use states::{CloneRecord, ManifestEntry, SCHEMA_VERSION};

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

/// A value the store keeps, and how it reads the payload of an older schema.
pub(crate) trait Stored: Serialize + DeserializeOwned {
    /// Decodes `payload` written under schema `version` (from [`OLDEST_READABLE`] to the
    /// current one, excluded) into today's layout.
    fn decode_older(version: u16, payload: &[u8]) -> Result<Self, DecodeError>;
}

impl Stored for CloneRecord {
    /// Schema 3 had no `CloneRequest::upstream_conninfo`: read by its frozen layout.
    fn decode_older(_version: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        deserialize::<states::schema3::CloneRecordV3>(payload).map(CloneRecord::from)
    }
}

impl Stored for ManifestEntry {
    /// Unchanged since schema 3.
    fn decode_older(_version: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        deserialize(payload)
    }
}

impl Stored for super::files::Summary {
    /// Unchanged since schema 3.
    fn decode_older(_version: u16, payload: &[u8]) -> Result<Self, DecodeError> {
        deserialize(payload)
    }
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

/// Decodes bytes written by [`encode`] of this pgreplica or of an older one (migrated),
/// refusing newer schemas, schemas older than [`OLDEST_READABLE`] and damaged bytes.
pub(crate) fn decode<T: Stored>(bytes: &[u8]) -> Result<T, DecodeError> {
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
    if version < OLDEST_READABLE {
        return Err(DecodeError::Unreadable(format!(
            "schema {version} is older than any this pgreplica reads"
        )));
    }
    let payload = &bytes[HEADER_LEN..];
    match version < SCHEMA_VERSION {
        true => T::decode_older(version, payload),
        false => deserialize(payload),
    }
}

/// Decodes one payload with the store's bincode options.
fn deserialize<T: DeserializeOwned>(payload: &[u8]) -> Result<T, DecodeError> {
    use bincode::Options;
    options()
        .deserialize(payload)
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

    /// A record pgreplica wrote under schema 3 (bytes produced by pgreplica at db49674, with
    /// the record's JSON form beside them) reads back migrated: every field as it was, and
    /// the request's `upstream_conninfo`, unknown to schema 3, None, and the Transfer and
    /// StageBackup facts' `checkpoint_ms`, unmeasured then, 0.
    #[test]
    fn a_schema_3_record_is_migrated() {
        let bytes = include_bytes!("../../tests/fixtures/store/record-schema3.bin");
        assert_eq!(&bytes[..6], b"PGRS\x03\x00");
        let record: CloneRecord = decode(bytes).expect("a schema-3 record is read");
        let mut expected: serde_json::Value = serde_json::from_str(include_str!(
            "../../tests/fixtures/store/record-schema3.json"
        ))
        .unwrap();
        expected["request"]["upstream_conninfo"] = serde_json::Value::Null;
        for copy in ["transfer", "staging"] {
            expected["facts"][copy]["checkpoint_ms"] = 0.into();
        }
        assert_eq!(serde_json::to_value(&record).unwrap(), expected);
        let transfer = record.facts().transfer.as_ref().expect("transfer facts");
        assert_eq!(
            (transfer.bytes_sent, transfer.checkpoint_ms),
            (170_000_000, 0)
        );
        assert_eq!(record.request().upstream_conninfo, None);
        assert_eq!(record.request().upstream_node_id, Some(1));
        assert_eq!(
            record.facts().params.as_ref().unwrap().server_version_num,
            150_018
        );
        // Written again, it is a current record.
        let again = encode(&record);
        assert_eq!(u16::from_le_bytes([again[4], again[5]]), SCHEMA_VERSION);
        assert_eq!(decode::<CloneRecord>(&again), Ok(record));
    }

    /// The schema-3 layout is not the current one: read without the migration, the bytes do
    /// not make a record (so the migration is what reads them, not luck).
    #[test]
    fn a_schema_3_record_does_not_read_as_the_current_layout() {
        let bytes = include_bytes!("../../tests/fixtures/store/record-schema3.bin");
        assert!(deserialize::<CloneRecord>(&bytes[HEADER_LEN..]).is_err());
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
