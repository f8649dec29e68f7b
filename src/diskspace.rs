//! Disk space where a copy goes: how much each file system holding a target directory has
//! free, the check that every one of them can take what is still to come before the first byte
//! is copied, and the error for a file system that filled up anyway during the copy — each
//! naming the device, so the operator knows which disk to free.
//!
//! Read-only (`statvfs`, `/proc/self/mountinfo`); the callers decide what is still to come.

use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};

use crate::error::{Error, ErrorKind, Result};
use crate::progress::human_bytes;

/// Bytes that must fit under one directory that will receive them.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Need {
    /// The directory (it may not exist yet: its nearest existing ancestor decides).
    pub dir: PathBuf,
    /// Bytes still to be written there.
    pub bytes: u64,
}

/// Checks that each file system can take what its directories still need; the needs of
/// directories on one file system are added up. Returns a summary for the dry run's report.
pub fn check(needs: &[Need]) -> Result<String> {
    check_against(needs, free_bytes)
}

/// [`check`] with the free space of a file system read by `free_of` (tests fix it, since the
/// real figure moves while other processes write).
fn check_against(needs: &[Need], free_of: impl Fn(&Path) -> Result<u64>) -> Result<String> {
    let mut by_device: Vec<(u64, PathBuf, u64)> = Vec::new();
    for need in needs {
        let existing = nearest_existing(&need.dir);
        let dev = std::fs::metadata(existing)
            .map_err(|e| crate::durable::io_error("read", existing, e))?
            .dev();
        match by_device.iter_mut().find(|(d, _, _)| *d == dev) {
            Some((_, _, bytes)) => *bytes += need.bytes,
            None => by_device.push((dev, need.dir.clone(), need.bytes)),
        }
    }
    let mut summary = Vec::new();
    for (_, dir, needed) in by_device {
        let free = free_of(&dir)?;
        if free < needed {
            return Err(Error::new(
                ErrorKind::System,
                format!(
                    "not enough free disk for \"{}\" on {}: {} needed, {} free",
                    dir.display(),
                    device_of(&dir),
                    human_bytes(needed),
                    human_bytes(free)
                ),
            )
            .hint(
                "free some space there (or choose directories on a larger file system), then \
                 run the clone again: nothing was copied yet",
            ));
        }
        summary.push(format!(
            "{} free, {} needed on {}",
            human_bytes(free),
            human_bytes(needed),
            device_of(&dir)
        ));
    }
    Ok(summary.join("; "))
}

/// The error for a copy that ran out of space under `dir` (rsync or pg_basebackup reported
/// ENOSPC), with the device and the tool's own words in DETAIL.
pub fn full(dir: &Path, detail: Option<String>) -> Error {
    let error = Error::new(
        ErrorKind::System,
        format!(
            "the file system of \"{}\" is full ({})",
            dir.display(),
            device_of(dir)
        ),
    )
    .hint(format!(
        "free space on it, then continue with \"{}\": the files already copied are kept",
        crate::paste::resume()
    ));
    match detail {
        Some(detail) => error.detail(detail),
        None => error,
    }
}

/// Bytes available to an unprivileged user on the file system of `path` or its nearest
/// existing ancestor.
pub fn free_bytes(path: &Path) -> Result<u64> {
    let existing = nearest_existing(path);
    let c_path = std::ffi::CString::new(existing.as_os_str().as_encoded_bytes()).map_err(|_| {
        Error::new(
            ErrorKind::Config,
            format!("path \"{}\" contains a NUL byte", existing.display()),
        )
        .hint("give a path without a NUL byte")
    })?;
    // SAFETY: statvfs fills the zeroed struct from a valid NUL-terminated path.
    let mut stat: libc::statvfs = unsafe { std::mem::zeroed() };
    if unsafe { libc::statvfs(c_path.as_ptr(), &mut stat) } != 0 {
        return Err(crate::durable::io_error(
            "read the free space of",
            existing,
            std::io::Error::last_os_error(),
        ));
    }
    Ok(stat.f_bavail.saturating_mul(stat.f_frsize))
}

fn nearest_existing(path: &Path) -> &Path {
    path.ancestors()
        .find(|p| p.exists())
        .unwrap_or(Path::new("/"))
}

/// The device and mount point holding `path`, e.g. `device /dev/vda1 mounted on /srv`, from
/// `/proc/self/mountinfo` (the last mount of that device number wins, as the kernel stacks
/// them); `device 8:1` when it is not listed there.
pub fn device_of(path: &Path) -> String {
    let existing = nearest_existing(path);
    let Ok(meta) = std::fs::metadata(existing) else {
        return "an unknown device".to_string();
    };
    let (major, minor) = (libc::major(meta.dev()), libc::minor(meta.dev()));
    let wanted = format!("{major}:{minor}");
    let mounts = std::fs::read_to_string("/proc/self/mountinfo").unwrap_or_default();
    let found = mounts.lines().rev().find_map(|line| {
        let fields: Vec<&str> = line.split(' ').collect();
        let separator = fields.iter().position(|f| *f == "-")?;
        let source = fields.get(separator + 2)?;
        (fields.get(2) == Some(&wanted.as_str())).then(|| {
            format!(
                "device {} mounted on {}",
                unescape(source),
                unescape(fields.get(4).unwrap_or(&"?"))
            )
        })
    });
    found.unwrap_or_else(|| format!("device {wanted}"))
}

/// mountinfo writes a space, tab, newline and backslash in a path as `\ooo`.
fn unescape(field: &str) -> String {
    let bytes = field.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let octal = bytes
            .get(i + 1..i + 4)
            .filter(|d| d.iter().all(u8::is_ascii_digit));
        match (bytes[i], octal) {
            (b'\\', Some(digits)) => {
                let value = digits
                    .iter()
                    .fold(0_u32, |v, d| v * 8 + u32::from(d - b'0'));
                out.push(u8::try_from(value).unwrap_or(b'?'));
                i += 4;
            }
            (byte, _) => {
                out.push(byte);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn free_space_is_read_from_the_nearest_existing_ancestor_and_added_up_per_device() {
        let root = tempfile::tempdir().unwrap();
        assert!(free_bytes(&root.path().join("not/yet")).unwrap() > 0);
        let one = |dir: &str, bytes| Need {
            dir: root.path().join(dir),
            bytes,
        };
        // The real statvfs: one byte fits, more than any disk holds does not.
        check(&[one("a", 1)]).unwrap();
        let err = check(&[one("a", u64::MAX / 2)]).unwrap_err();
        assert!(err.message.contains(" mounted on "), "{err:?}");
        // Two directories on one file system: their needs add up (free space fixed, as the
        // real figure moves while other tests write and delete).
        let free = |_: &Path| Ok(1000);
        check_against(&[one("a", 600)], free).unwrap();
        let err = check_against(&[one("a", 600), one("b/c", 600)], free).unwrap_err();
        assert_eq!(err.kind, ErrorKind::System);
        assert!(err.message.contains("not enough free disk"), "{err:?}");
        assert!(
            err.message.contains("1.2 KiB needed, 1000 bytes free"),
            "{err:?}"
        );
    }

    #[test]
    fn the_device_is_named_from_mountinfo() {
        assert!(device_of(Path::new("/proc/self")).contains("mounted on /proc"));
        assert_eq!(unescape(r"/mnt/a\040b"), "/mnt/a b");
        assert_eq!(unescape(r"/plain"), "/plain");
    }
}
