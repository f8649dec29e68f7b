//! Commands pgreplica prints for the operator to paste (in a HINT, a NOTICE, `clone status`):
//! every word shell-quoted, the programs named as pgreplica actually found them, and
//! pgreplica's own commands carrying the state directory in use when it is not the default, so
//! that a pasted command acts on the same clone.
//!
//! How this pgreplica was invoked (its path, the state directory, the clone being run) is
//! registered once by the command handler ([`set_invocation`], [`set_clone`]); the modules that
//! print a command ask here instead of typing `pgreplica …` themselves. It prints nothing and
//! runs nothing.

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, OnceLock};

use states::CloneId;

/// How this pgreplica was invoked.
#[derive(Debug)]
struct Invocation {
    /// The program as it can be run again: `pgreplica` when it was found on PATH, else the
    /// path it was started by, made absolute.
    program: String,
    /// The state directory when it is not the default one.
    state_dir: Option<PathBuf>,
}

static INVOCATION: OnceLock<Invocation> = OnceLock::new();
static CLONE: Mutex<Option<CloneId>> = Mutex::new(None);

/// Registers how this process was started: `argv0` (its first argument), the state directory
/// in use and the default one (`None` when none can be chosen without `--state-dir`).
pub fn set_invocation(argv0: &OsStr, state_dir: &Path, default_state_dir: Option<&Path>) {
    let program = program_of(argv0, std::env::current_dir().ok().as_deref());
    let state_dir = (Some(state_dir) != default_state_dir).then(|| state_dir.to_path_buf());
    let _ = INVOCATION.set(Invocation { program, state_dir });
}

/// Registers the clone this process works on, for [`resume`].
pub fn set_clone(id: &CloneId) {
    *CLONE.lock().unwrap_or_else(|e| e.into_inner()) = Some(id.clone());
}

/// `pgreplica [--state-dir DIR] ARGS…`, quoted for a POSIX shell.
pub fn pgreplica<S: AsRef<str>>(args: &[S]) -> String {
    let (program, state_dir) = match INVOCATION.get() {
        Some(invocation) => (invocation.program.as_str(), invocation.state_dir.as_deref()),
        None => ("pgreplica", None),
    };
    let mut words = vec![program.to_string()];
    if let Some(dir) = state_dir {
        words.push("--state-dir".to_string());
        words.push(dir.display().to_string());
    }
    words.extend(args.iter().map(|a| a.as_ref().to_string()));
    line(&words)
}

/// `pgreplica … clone resume CLONE` for the clone this process works on (registered with
/// [`set_clone`]).
pub fn resume() -> String {
    let id = CLONE.lock().unwrap_or_else(|e| e.into_inner()).clone();
    match id {
        Some(id) => pgreplica(&["clone", "resume", id.as_str()]),
        None => pgreplica(&["clone", "resume"]),
    }
}

/// `program ARGS…` quoted for a POSIX shell: a local program as pgreplica found it.
pub fn command<S: AsRef<str>>(program: &Path, args: &[S]) -> String {
    let mut words = vec![program.display().to_string()];
    words.extend(args.iter().map(|a| a.as_ref().to_string()));
    line(&words)
}

/// Words joined into one POSIX shell command line, each quoted.
pub fn line<S: AsRef<str>>(words: &[S]) -> String {
    words
        .iter()
        .map(|w| word(w.as_ref()))
        .collect::<Vec<_>>()
        .join(" ")
}

/// Whether `s` is one shell word as it stands: only characters no POSIX shell treats
/// specially.
pub fn is_plain_word(s: &str) -> bool {
    !s.is_empty()
        && s.bytes().all(|b| {
            b.is_ascii_alphanumeric()
                || matches!(
                    b,
                    b'_' | b'-' | b'.' | b'/' | b':' | b',' | b'+' | b'@' | b'%' | b'='
                )
        })
}

/// One argument as a POSIX shell word: unchanged when it is plain, otherwise in single quotes,
/// with each `'` written as `'\''` (close, escaped quote, reopen) — the only character single
/// quotes cannot hold. `$(…)`, backquotes and `;` in a path thus stay text when pasted.
pub fn word(arg: &str) -> String {
    if is_plain_word(arg) {
        return arg.to_string();
    }
    let mut out = String::with_capacity(arg.len() + 2);
    out.push('\'');
    for c in arg.chars() {
        if c == '\'' {
            out.push_str("'\\''");
        } else {
            out.push(c);
        }
    }
    out.push('\'');
    out
}

/// The program to print for `argv0`: `pgreplica` (or whatever bare name) when the shell found
/// it on PATH, else the path it names, made absolute against `cwd`.
fn program_of(argv0: &OsStr, cwd: Option<&Path>) -> String {
    let path = Path::new(argv0);
    if !argv0.to_string_lossy().contains('/') {
        return argv0.to_string_lossy().into_owned();
    }
    match cwd {
        Some(cwd) if path.is_relative() => cwd.join(path).display().to_string(),
        _ => path.display().to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn words_survive_a_shell_unchanged() {
        for arg in [
            "/srv/pg/main",
            "/srv/$(touch /tmp/pwned)/data",
            "it's",
            "a b",
            "`id`;rm -rf /",
            "",
            "naïve",
        ] {
            let echoed = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("printf %s {}", word(arg)))
                .output()
                .unwrap();
            assert_eq!(String::from_utf8(echoed.stdout).unwrap(), arg, "{arg}");
        }
        assert_eq!(word("/srv/pg/main"), "/srv/pg/main");
        assert_eq!(
            line(&["pg_ctl", "-D", "/srv/x y", "start"]),
            "pg_ctl -D '/srv/x y' start"
        );
    }

    #[test]
    fn the_program_is_the_one_that_was_run() {
        assert_eq!(program_of(OsStr::new("pgreplica"), None), "pgreplica");
        assert_eq!(
            program_of(OsStr::new("./bin/pgreplica"), Some(Path::new("/opt"))),
            "/opt/./bin/pgreplica"
        );
        assert_eq!(
            program_of(
                OsStr::new("/usr/local/bin/pgreplica"),
                Some(Path::new("/x"))
            ),
            "/usr/local/bin/pgreplica"
        );
    }

    #[test]
    fn commands_of_an_unregistered_process_are_plain() {
        // Unit tests never register an invocation: the bare name, no --state-dir.
        assert_eq!(
            pgreplica(&["clone", "status", "a b"]),
            "pgreplica clone status 'a b'"
        );
        assert_eq!(
            command(
                Path::new("/usr/lib/postgresql/15/bin/pg_ctl"),
                &["-D", "/srv/$x", "start"]
            ),
            "/usr/lib/postgresql/15/bin/pg_ctl -D '/srv/$x' start"
        );
    }
}
