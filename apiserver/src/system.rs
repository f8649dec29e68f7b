//! The few libc calls the server needs: dropping root for the barman user, the local time the
//! API names operations by, and atomic file writes. Nothing else here.

use std::ffi::CString;
use std::path::Path;

/// Becomes `user` (supplementary groups, gid, uid, HOME), as the real API runs as barman.
pub fn run_as(user: &str) -> Result<(), String> {
    let name = CString::new(user).map_err(|_| format!("bad user name {user:?}"))?;
    // SAFETY: getpwnam returns a pointer to static storage or null; we copy what we need at once
    // and the process is single-threaded here (before any thread is started).
    let (uid, gid, home) = unsafe {
        let pw = libc::getpwnam(name.as_ptr());
        if pw.is_null() {
            return Err(format!("no such user {user:?}"));
        }
        let home = std::ffi::CStr::from_ptr((*pw).pw_dir)
            .to_string_lossy()
            .into_owned();
        ((*pw).pw_uid, (*pw).pw_gid, home)
    };
    // SAFETY: plain system calls with valid arguments; order matters (groups before uid).
    let failed = unsafe {
        libc::initgroups(name.as_ptr(), gid) != 0
            || libc::setgid(gid) != 0
            || libc::setuid(uid) != 0
    };
    if failed {
        return Err(format!(
            "cannot become {user:?}: {}",
            std::io::Error::last_os_error()
        ));
    }
    std::env::set_var("HOME", home);
    std::env::set_var("USER", user);
    Ok(())
}

/// Local time as `(year, month, day, hour, minute, second, microsecond)`.
fn local_now() -> (i32, i32, i32, i32, i32, i32, u32) {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap_or_default();
    let secs = libc::time_t::try_from(now.as_secs()).unwrap_or(0);
    // SAFETY: localtime_r writes into the zeroed struct we own.
    let tm = unsafe {
        let mut tm: libc::tm = std::mem::zeroed();
        libc::localtime_r(&secs, &mut tm);
        tm
    };
    (
        tm.tm_year + 1900,
        tm.tm_mon + 1,
        tm.tm_mday,
        tm.tm_hour,
        tm.tm_min,
        tm.tm_sec,
        now.subsec_micros(),
    )
}

/// The API's operation id: local time `%Y%m%dT%H%M%S`.
pub fn operation_id_now() -> String {
    let (y, mo, d, h, mi, s, _) = local_now();
    format!("{y:04}{mo:02}{d:02}T{h:02}{mi:02}{s:02}")
}

/// Python's `datetime.now().isoformat()`, as the API stamps start and end times.
pub fn iso_now() -> String {
    let (y, mo, d, h, mi, s, us) = local_now();
    format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}.{us:06}")
}

/// Writes `text` to `path` through a temporary name and a rename, so readers never see half a
/// file (the status is derived from these files).
pub fn write_atomic(path: &Path, text: &str) -> Result<(), String> {
    let temp = path.with_extension("json.tmp");
    std::fs::write(&temp, text)
        .and_then(|()| std::fs::rename(&temp, path))
        .map_err(|e| format!("cannot write {}: {e}", path.display()))
}
