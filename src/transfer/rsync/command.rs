//! rsync's command lines: which rsync runs a stream makes (kept partial files first, with
//! `--append-verify`, then the rest whole), the `--files-from` lists they read, and the private
//! scratch directory those lists and the stderr captures live in.
//!
//! Must not: start rsync (a stream's thread does, under a guardian) or read its output.

use std::io;
use std::path::PathBuf;
use std::process::Command;
use std::sync::atomic::{AtomicU64, Ordering};

use states::EntryKind;

use super::output::out_format_arg;
use super::{fs_error, RsyncJob};
use crate::error::{Error, Result};

/// One rsync run: a list of entries of one root.
pub(super) struct Invocation {
    /// The stream it belongs to (the final rsync is stream `streams.len()`).
    pub(super) stream: usize,
    /// The manifest root its entries are under.
    pub(super) root: u32,
    /// rsync source of the root's tree, ending in `/`.
    pub(super) source: String,
    /// The local directory the tree goes to.
    pub(super) dest: PathBuf,
    /// The `--files-from` list (NUL-separated paths), in the scratch directory.
    list_file: PathBuf,
    /// Where rsync's stderr goes: a file, not a pipe, so the thread reading stdout can never be
    /// blocked by a full stderr pipe; its tail becomes the DETAIL of a failure.
    pub(super) stderr_file: PathBuf,
    /// The listed entries.
    pub(super) items: Vec<Item>,
    rsh: Option<String>,
    extra_args: Vec<String>,
    /// Completes kept partial files with `--append-verify`. rsync prints a file's line when it
    /// was written even if the checksum then failed and it will be sent again, so in this mode
    /// the lines count bytes only and files are reported once rsync has exited 0.
    pub(super) append: bool,
}

/// A listed entry, with what the stream thread needs to recognise and check it.
pub(super) struct Item {
    /// Index in [`RsyncJob::entries`].
    pub(super) index: usize,
    /// Path relative to the root, as in the manifest.
    pub(super) path: String,
    pub(super) kind: EntryKind,
    pub(super) size: u64,
    pub(super) mtime: i64,
    /// Whether completing it is reported (the final rsync lists directories only to fix times).
    pub(super) report: bool,
}

/// The rsync runs for `send` (entries of `root`): one completing kept partial files first, when
/// there are any, then one for the rest.
pub(super) fn invocations_of(
    job: &RsyncJob,
    stream: usize,
    root: u32,
    send: &[usize],
    report: impl Fn(usize) -> bool,
    scratch: &ScratchDir,
) -> Result<Vec<Invocation>> {
    let (append, whole): (Vec<usize>, Vec<usize>) =
        send.iter().partition(|i| job.partials.contains(i));
    let mut invocations = Vec::new();
    for (send, append) in [(append, true), (whole, false)] {
        if !send.is_empty() {
            invocations.push(invocation(
                job, stream, root, &send, &report, append, scratch,
            )?);
        }
    }
    Ok(invocations)
}

fn invocation(
    job: &RsyncJob,
    stream: usize,
    root: u32,
    send: &[usize],
    report: impl Fn(usize) -> bool,
    append: bool,
    scratch: &ScratchDir,
) -> Result<Invocation> {
    let (source, dest) = job.tree(root).ok_or_else(|| {
        Error::bug(format!(
            "the manifest has entries under root {root} but the transfer has no source for it"
        ))
    })?;
    let mut source = source.to_string();
    if !source.ends_with('/') {
        source.push('/');
    }
    let items: Vec<Item> = send
        .iter()
        .map(|&i| {
            let e = &job.entries[i];
            Item {
                index: i,
                path: e.path.clone(),
                kind: e.kind,
                size: e.size,
                mtime: e.mtime,
                report: report(i),
            }
        })
        .collect();
    let mut list = Vec::new();
    for item in &items {
        list.extend_from_slice(item.path.as_bytes());
        list.push(0);
    }
    let mode = if append { "append" } else { "whole" };
    let stem = format!("stream-{stream}-root-{root}-{mode}");
    let list_file = scratch.path.join(format!("{stem}.list"));
    std::fs::write(&list_file, list).map_err(|e| fs_error("write", &list_file, &e))?;
    Ok(Invocation {
        stream,
        root,
        source,
        dest: dest.to_path_buf(),
        list_file,
        stderr_file: scratch.path.join(format!("{stem}.stderr")),
        items,
        rsh: job.rsh.clone(),
        extra_args: job.extra_args.clone(),
        append,
    })
}

impl Invocation {
    /// What this rsync does, for messages: `copying "SRC" to "DEST" (stream N)`.
    pub(super) fn describe(&self) -> String {
        format!(
            "copying \"{}\" to \"{}\" (stream {})",
            self.source,
            self.dest.display(),
            self.stream
        )
    }

    /// The rsync command line.
    pub(super) fn command(&self) -> Command {
        let mut cmd = Command::new("rsync");
        // -lpt and no -r: exactly the listed entries (directories without their contents), no
        // owner or group (pgreplica runs as the PostgreSQL user, not root).
        // A target file is absent or to be replaced, so no delta pass; a kept partial is completed
        // by sending its tail, then its checksum is compared with the source's.
        let mode = if self.append {
            "--append-verify"
        } else {
            "--whole-file"
        };
        cmd.args(["--links", "--perms", "--times", mode])
            .args(["--no-inc-recursive", "--from0", "--no-human-readable"])
            .arg(format!("--files-from={}", self.list_file.display()))
            .arg(out_format_arg())
            .arg("--info=progress2")
            .args(&self.extra_args);
        if let Some(rsh) = &self.rsh {
            cmd.arg("-e").arg(rsh);
        }
        let mut dest = self.dest.clone().into_os_string();
        dest.push("/");
        cmd.arg("--").arg(&self.source).arg(dest);
        // Names are then escaped the same way whatever the operator's locale.
        cmd.env("LC_ALL", "C");
        cmd
    }
}

/// A private directory for the `--files-from` lists and stderr captures, removed on drop.
pub(super) struct ScratchDir {
    path: PathBuf,
}

impl ScratchDir {
    /// Creates the directory (mode 0700) under the system's temporary directory.
    pub(super) fn create() -> Result<ScratchDir> {
        use std::os::unix::fs::DirBuilderExt;
        static COUNTER: AtomicU64 = AtomicU64::new(0);
        let base = std::env::temp_dir();
        loop {
            let n = COUNTER.fetch_add(1, Ordering::Relaxed);
            let path = base.join(format!("pgreplica-rsync-{}-{n}", std::process::id()));
            match std::fs::DirBuilder::new().mode(0o700).create(&path) {
                Ok(()) => return Ok(ScratchDir { path }),
                Err(e) if e.kind() == io::ErrorKind::AlreadyExists => continue,
                Err(e) => return Err(fs_error("create", &path, &e)),
            }
        }
    }
}

impl Drop for ScratchDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use states::ManifestEntry;
    use std::collections::BTreeSet;

    fn entry(path: &str, kind: EntryKind, size: u64) -> ManifestEntry {
        ManifestEntry {
            root: 0,
            path: path.into(),
            kind,
            size,
            mtime: 1_700_000_000,
            done: false,
        }
    }

    fn argv(invocation: &Invocation) -> Vec<String> {
        let command = invocation.command();
        assert_eq!(command.get_program(), "rsync");
        command
            .get_args()
            .map(|a| a.to_str().expect("UTF-8").to_string())
            .collect()
    }

    #[test]
    fn kept_partials_get_an_append_verify_rsync_of_their_own() {
        let job = RsyncJob {
            source: "barman@b:/base/ID/data".into(),
            rsh: Some("ssh -o BatchMode=yes".into()),
            dest: "/srv/pg".into(),
            tablespaces: Vec::new(),
            extra_args: vec!["--bwlimit=100".into()],
            entries: vec![
                entry("base/1/1", EntryKind::File, 10),
                entry("base/1/2", EntryKind::File, 2 << 20),
                entry("base", EntryKind::Dir, 0),
            ],
            partials: BTreeSet::from([1]),
        };
        let scratch = ScratchDir::create().expect("scratch directory");
        let invocations =
            invocations_of(&job, 2, 0, &[0, 1, 2], |i| i != 2, &scratch).expect("invocations");
        let [append, whole] = invocations.as_slice() else {
            panic!("expected two rsyncs, got {}", invocations.len());
        };
        let indices = |inv: &Invocation| inv.items.iter().map(|i| i.index).collect::<Vec<_>>();
        assert_eq!((append.append, indices(append)), (true, vec![1]));
        assert_eq!((whole.append, indices(whole)), (false, vec![0, 2]));
        assert!(whole.items[0].report && !whole.items[1].report);
        let list = |mode: &str| scratch.path.join(format!("stream-2-root-0-{mode}.list"));
        assert_eq!(std::fs::read(list("append")).expect("list"), b"base/1/2\0");
        assert_eq!(
            std::fs::read(list("whole")).expect("list"),
            b"base/1/1\0base\0"
        );
        assert_eq!(
            argv(append),
            [
                "--links",
                "--perms",
                "--times",
                "--append-verify",
                "--no-inc-recursive",
                "--from0",
                "--no-human-readable",
                &format!("--files-from={}", list("append").display()),
                "--out-format=pgreplica-done %b %l %n",
                "--info=progress2",
                "--bwlimit=100",
                "-e",
                "ssh -o BatchMode=yes",
                "--",
                "barman@b:/base/ID/data/",
                "/srv/pg/",
            ]
        );
        assert_eq!(argv(whole)[3], "--whole-file");
        assert!(whole
            .command()
            .get_envs()
            .any(|(k, v)| k == "LC_ALL" && v == Some("C".as_ref())));
        assert_eq!(
            whole.describe(),
            "copying \"barman@b:/base/ID/data/\" to \"/srv/pg\" (stream 2)"
        );
        let path = scratch.path.clone();
        drop(scratch);
        assert!(!path.exists(), "the scratch directory outlived the copy");
    }

    #[test]
    fn a_root_without_a_source_is_an_internal_error() {
        let job = RsyncJob {
            source: "/b".into(),
            rsh: None,
            dest: "/d".into(),
            tablespaces: Vec::new(),
            extra_args: Vec::new(),
            entries: vec![ManifestEntry {
                root: 16385,
                ..entry("f", EntryKind::File, 1)
            }],
            partials: BTreeSet::new(),
        };
        let scratch = ScratchDir::create().expect("scratch directory");
        let error = invocations_of(&job, 0, 16385, &[0], |_| true, &scratch)
            .err()
            .expect("no tree for root 16385");
        assert_eq!(error.kind, crate::error::ErrorKind::Internal);
        assert!(error.message.contains("root 16385"), "{}", error.message);
    }
}
