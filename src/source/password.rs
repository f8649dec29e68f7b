//! The password of the source connection, found as libpq finds it: given inside `-d` (this run
//! only), `PGPASSWORD`, or the password file — `passfile` in `-d`, repmgr.conf's `passfile`,
//! `PGPASSFILE`, `~/.pgpass` — which, as in libpq, is ignored with a warning when it is not a
//! plain file or is readable by group or others.
//!
//! **Invariant:** a password found here goes to exactly two places (see ARCHITECTURE.md):
//! pg_basebackup's environment and, under `use_primary_conninfo_password`, primary_conninfo.

use std::collections::BTreeSet;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use super::target::{home_dir, is_conninfo, Target};

/// A password given on the command line inside `-d "… password=…"`: kept in this process's
/// memory only, never in the clone record (see [`take_password_from_dbname`]).
static COMMAND_LINE_PASSWORD: OnceLock<String> = OnceLock::new();

/// Password files already warned about in this run: one warning each, not one per connection.
static WARNED: Mutex<BTreeSet<PathBuf>> = Mutex::new(BTreeSet::new());

/// Removes `password=` from a `-d` conninfo so that the clone record never holds it; the
/// password is remembered for this run only. A resumed run needs `PGPASSWORD` or a password
/// file instead, which the returned flag lets the caller say.
pub fn take_password_from_dbname(dbname: Option<&str>) -> (Option<String>, bool) {
    let Some(text) = dbname.filter(|d| is_conninfo(d)) else {
        return (dbname.map(str::to_string), false);
    };
    let Ok(mut conninfo) = crate::conninfo::Conninfo::parse(text) else {
        // Not parseable here: Target::resolve reports it with a clear error.
        return (Some(text.to_string()), false);
    };
    match conninfo.remove("password") {
        Some(password) => {
            let _ = COMMAND_LINE_PASSWORD.set(password);
            (Some(conninfo.render()), true)
        }
        None => (Some(text.to_string()), false),
    }
}

/// The password for `target`: the one given inside `-d` for this run, `PGPASSWORD`, else the
/// password file's line for the target (`host:port:db:user:password`, `*` wildcards, `\:` and
/// `\\` escapes). `passfile` is repmgr.conf's.
pub fn password_for(target: &Target, passfile: Option<&str>) -> Option<String> {
    if let Some(password) = COMMAND_LINE_PASSWORD.get() {
        return Some(password.clone());
    }
    if let Ok(password) = std::env::var("PGPASSWORD") {
        return Some(password);
    }
    let path = password_file(target, passfile)?;
    let text = read_password_file(&path)?;
    let host = if target.host.starts_with('/') {
        "localhost"
    } else {
        &target.host
    };
    let wanted = [host, &target.port.to_string(), &target.dbname, &target.user];
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass_line(line);
            (fields.len() == 5
                && fields
                    .iter()
                    .zip(wanted.iter())
                    .all(|(field, value)| field == "*" || field == value))
            .then(|| fields[4].clone())
        })
}

/// Which password file applies: `passfile` given in `-d`, then repmgr.conf's `passfile`, then
/// `PGPASSFILE`, then `~/.pgpass`.
fn password_file(target: &Target, config_passfile: Option<&str>) -> Option<PathBuf> {
    let given = target
        .setting("passfile")
        .filter(|_| !target.from_env("passfile"));
    given
        .or(config_passfile)
        .or(target.setting("passfile"))
        .map(PathBuf::from)
        .or_else(|| home_dir().map(|home| home.join(".pgpass")))
}

/// The password file's text, or None — with libpq's warning — when it is not a plain file or
/// is readable by group or others (a missing file says nothing, as in libpq).
fn read_password_file(path: &Path) -> Option<String> {
    let meta = std::fs::metadata(path).ok()?;
    let problem = if !meta.is_file() {
        Some(format!(
            "password file \"{}\" is not a plain file",
            path.display()
        ))
    } else if meta.mode() & 0o077 != 0 {
        Some(format!(
            "password file \"{}\" has group or world access; permissions should be u=rw (0600) or less",
            path.display()
        ))
    } else {
        None
    };
    if let Some(problem) = problem {
        let first = WARNED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .insert(path.to_path_buf());
        if first {
            crate::warning!("{problem}");
        }
        return None;
    }
    std::fs::read_to_string(path).ok()
}

fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("never empty").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            _ => fields.last_mut().expect("never empty").push(c),
        }
    }
    fields
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::os::unix::fs::PermissionsExt;

    #[test]
    fn pgpass_lines_split_with_escapes() {
        assert_eq!(
            split_pgpass_line(r"db\:host:5432:*:rep:pa\:ss\\word"),
            vec!["db:host", "5432", "*", "rep", r"pa:ss\word"]
        );
    }

    #[test]
    fn a_password_in_dbname_is_never_kept_in_the_request() {
        let (dbname, taken) =
            take_password_from_dbname(Some("host=node1 user=repmgr password=s3cr3t dbname=repmgr"));
        assert!(taken);
        let dbname = dbname.unwrap();
        assert!(!dbname.contains("s3cr3t"), "{dbname}");
        assert!(dbname.contains("dbname=repmgr"), "{dbname}");
        assert_eq!(
            take_password_from_dbname(Some("repmgr")),
            (Some("repmgr".into()), false)
        );
    }

    #[test]
    fn a_password_file_open_to_others_is_ignored_as_libpq_ignores_it() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("pgpass");
        std::fs::write(&file, "*:*:*:*:secret\n").unwrap();
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o640)).unwrap();
        assert_eq!(read_password_file(&file), None);
        std::fs::set_permissions(&file, std::fs::Permissions::from_mode(0o600)).unwrap();
        assert_eq!(
            read_password_file(&file).as_deref(),
            Some("*:*:*:*:secret\n")
        );
        assert_eq!(read_password_file(dir.path()), None, "a directory");
        assert_eq!(read_password_file(&dir.path().join("missing")), None);
    }
}
