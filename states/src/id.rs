//! Clone identifiers: one clone per data directory, named after it.

use serde::{Deserialize, Serialize};
use std::fmt;

/// The name of a clone in the store, derived from its data directory.
///
/// It reads like the directory (`main-1a2b3c4d` for `/var/lib/postgresql/15/main`) so that an
/// operator can type it into `clone resume` / `clone status`, and carries a hash of the whole path
/// so that two directories with the same last component never share a clone.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
pub struct CloneId(String);

impl CloneId {
    /// The clone id for an absolute, normalised data directory path.
    pub fn for_data_dir(data_dir: &str) -> CloneId {
        let trimmed = data_dir.trim_end_matches('/');
        let last = trimmed.rsplit('/').next().unwrap_or("");
        let readable: String = last
            .chars()
            .map(|c| {
                if c.is_ascii_alphanumeric() || c == '_' || c == '.' {
                    c
                } else {
                    '_'
                }
            })
            .take(40)
            .collect();
        let readable = if readable.is_empty() {
            "root".to_string()
        } else {
            readable
        };
        CloneId(format!("{readable}-{:08x}", fnv1a32(trimmed.as_bytes())))
    }

    /// Wraps an id typed by the operator; `None` when it cannot be a clone id.
    pub fn parse(text: &str) -> Option<CloneId> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || matches!(c, '_' | '.' | '-'));
        valid.then(|| CloneId(text.to_string()))
    }

    /// The id as text, usable as a file name.
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for CloneId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// FNV-1a: stable across releases and platforms, unlike `std`'s `DefaultHasher`.
fn fnv1a32(bytes: &[u8]) -> u32 {
    bytes.iter().fold(0x811c_9dc5_u32, |hash, byte| {
        (hash ^ u32::from(*byte)).wrapping_mul(0x0100_0193)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn id_is_readable_stable_and_distinct() {
        let a = CloneId::for_data_dir("/var/lib/postgresql/15/main");
        assert!(a.as_str().starts_with("main-"), "{a}");
        assert_eq!(a, CloneId::for_data_dir("/var/lib/postgresql/15/main/"));
        assert_ne!(a, CloneId::for_data_dir("/srv/pg/main"));
        assert_eq!(CloneId::parse(a.as_str()), Some(a));
    }

    #[test]
    fn odd_paths_give_file_name_safe_ids() {
        let id = CloneId::for_data_dir("/srv/my data/ünïcode dir");
        assert!(CloneId::parse(id.as_str()).is_some(), "{id}");
        assert!(CloneId::for_data_dir("/").as_str().starts_with("root-"));
        assert_eq!(CloneId::parse("../etc"), None);
        assert_eq!(CloneId::parse(""), None);
    }
}
