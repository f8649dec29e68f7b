//! The staging directory of a staged clone (tar, incremental, encrypted) on the standby's host,
//! and what lies where in it. One directory per member of the backup, named after its id:
//!
//! ```text
//! <staging>/<backup id>/data/          the member's data/ as the catalogue stores it: a plain
//!                                      tree, or base.tar[.gz|.lz4|.zst], <oid>.tar…, backup_manifest
//! <staging>/<backup id>/<oid>/         a plain member's tablespace tree
//! <staging>/<backup id>/unpacked/      a tar member of a chain, unpacked (pg_combinebackup's input)
//! <staging>/<backup id>/unpacked-tblspc/<oid>/   its tablespaces, unpacked
//! ```
//!
//! Must not: copy, unpack or combine (the engines do); it only names the places.

use states::{BackupFacts, BackupFormat, ChainMember, Tablespace};
use std::path::{Path, PathBuf};

use crate::barman::{data_dir, tablespace_dir};

/// A clone's staging directory.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Staging {
    root: PathBuf,
}

/// One tree StageBackup copies: a directory of a member on the Barman host and its place in
/// staging.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct StagedTree {
    /// The root number of its entries in the clone's file list (0 for the first tree).
    pub root: u32,
    /// The directory on the Barman host.
    pub remote: String,
    /// Where it goes in staging.
    pub local: PathBuf,
    /// For a plain member's data directory: the member's tablespaces, for the exclusions of a
    /// restored data directory. `None` for a tree taken whole.
    pub data_dir: Option<Vec<Tablespace>>,
    /// Its `*.gpg` files are encrypted: they are decrypted on their way (and staged without the
    /// `.gpg`), not copied by rsync.
    pub encrypted: bool,
}

impl Staging {
    /// The staging directory at `root` ([`states::CloneRequest::staging_dir`]).
    pub fn new(root: impl Into<PathBuf>) -> Staging {
        Staging { root: root.into() }
    }

    /// The staging directory itself.
    pub fn root(&self) -> &Path {
        &self.root
    }

    fn member(&self, member: &ChainMember) -> PathBuf {
        self.root.join(&member.backup_id)
    }

    /// The member's `data/` as staged.
    pub fn data(&self, member: &ChainMember) -> PathBuf {
        self.member(member).join(&member.data_subdir)
    }

    /// A plain member's tablespace `oid` as staged.
    pub fn tablespace(&self, member: &ChainMember, oid: u32) -> PathBuf {
        self.member(member).join(oid.to_string())
    }

    /// Where a tar member of a chain is unpacked.
    pub fn unpacked(&self, member: &ChainMember) -> PathBuf {
        self.member(member).join("unpacked")
    }

    /// Where tablespace `oid` of a tar member of a chain is unpacked.
    pub fn unpacked_tablespace(&self, member: &ChainMember, oid: u32) -> PathBuf {
        self.member(member)
            .join("unpacked-tblspc")
            .join(oid.to_string())
    }

    /// The data directory `pg_combinebackup` reads for `member`, and where each of its
    /// tablespaces is.
    pub fn combine_input(&self, member: &ChainMember) -> (PathBuf, Vec<(u32, PathBuf)>) {
        let tar = matches!(member.format, BackupFormat::Tar { .. });
        let tablespaces = member
            .tablespaces
            .iter()
            .map(|t| {
                let dir = match tar {
                    true => self.unpacked_tablespace(member, t.oid),
                    false => self.tablespace(member, t.oid),
                };
                (t.oid, dir)
            })
            .collect();
        match tar {
            true => (self.unpacked(member), tablespaces),
            false => (self.data(member), tablespaces),
        }
    }

    /// The trees StageBackup copies for `backup`, each member's in chain order: a tar member's
    /// `data/` (its tar files and manifest), a plain member's data directory and tablespaces.
    pub fn trees(&self, backup: &BackupFacts) -> Vec<StagedTree> {
        let mut trees = Vec::new();
        for member in backup.members() {
            // The remote paths are those of the member, as the restorability check found them.
            let facts = BackupFacts {
                backup_dir: member.backup_dir.clone(),
                data_subdir: member.data_subdir.clone(),
                ..BackupFacts::default()
            };
            let plain = member.format == BackupFormat::Plain;
            trees.push(StagedTree {
                root: trees.len() as u32,
                remote: data_dir(&facts),
                local: self.data(&member),
                data_dir: plain.then(|| member.tablespaces.clone()),
                encrypted: member.format.encrypted(),
            });
            if plain {
                for tablespace in &member.tablespaces {
                    trees.push(StagedTree {
                        root: trees.len() as u32,
                        remote: tablespace_dir(&facts, tablespace.oid),
                        local: self.tablespace(&member, tablespace.oid),
                        data_dir: None,
                        encrypted: false,
                    });
                }
            }
        }
        trees
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use states::{BackupKind, Compression};

    fn member(id: &str, format: BackupFormat) -> ChainMember {
        ChainMember {
            backup_id: id.into(),
            backup_dir: format!("/b/base/{id}"),
            data_subdir: "data".into(),
            format,
            size_bytes: 1,
            tablespaces: vec![Tablespace {
                name: "tbs1".into(),
                oid: 16400,
                location: "/srv/tbs1".into(),
            }],
        }
    }

    #[test]
    fn a_chain_is_staged_member_by_member_and_combined_from_its_trees() {
        let gzip = BackupFormat::Tar {
            compression: Compression::Gzip,
            encrypted: false,
        };
        let backup = BackupFacts {
            kind: BackupKind::Incremental {
                chain: vec![member("F", gzip), member("I", BackupFormat::Plain)],
            },
            ..BackupFacts::default()
        };
        let staging = Staging::new("/s");
        let trees = staging.trees(&backup);
        let summary: Vec<(u32, &str, &Path, bool)> = trees
            .iter()
            .map(|t| {
                (
                    t.root,
                    t.remote.as_str(),
                    t.local.as_path(),
                    t.data_dir.is_some(),
                )
            })
            .collect();
        assert_eq!(
            summary,
            [
                (0, "/b/base/F/data", Path::new("/s/F/data"), false),
                (1, "/b/base/I/data", Path::new("/s/I/data"), true),
                (2, "/b/base/I/16400", Path::new("/s/I/16400"), false),
            ]
        );
        let [full, increment] = &backup.members()[..] else {
            panic!("two members");
        };
        assert_eq!(
            staging.combine_input(full),
            (
                PathBuf::from("/s/F/unpacked"),
                vec![(16400, PathBuf::from("/s/F/unpacked-tblspc/16400"))]
            )
        );
        assert_eq!(
            staging.combine_input(increment),
            (
                PathBuf::from("/s/I/data"),
                vec![(16400, PathBuf::from("/s/I/16400"))]
            )
        );
    }
}
