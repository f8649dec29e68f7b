//! Log lines in repmgr's shape (`NOTICE:`, `INFO:`, `DETAIL:`, `HINT:`, `WARNING:`, `ERROR:`,
//! `DEBUG:`) on stderr, filtered by a level (`-L`, `-q`, `-v`, else repmgr.conf's `log_level`,
//! else INFO); `-t` leaves out DETAIL and HINT lines; repmgr.conf's `log_file` receives every
//! line as well, timestamped as repmgr writes its log file (`[2026-11-30 13:43:31] [NOTICE] …`).
//!
//! repmgr's operators grep for these prefixes; keeping them means pgreplica's output drops into
//! existing runbooks. DETAIL and HINT lines belong to the line before them and follow its fate.

use std::io::Write;
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU8, Ordering};
use std::sync::Mutex;

/// Severity, ordered from most to least verbose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Level {
    /// Everything, including the commands run.
    Debug = 0,
    /// Progress of each step (the default).
    Info = 1,
    /// Milestones.
    Notice = 2,
    /// Problems that do not stop the clone.
    Warning = 3,
    /// Failures only.
    Error = 4,
}

impl Level {
    /// A `log_level` value of repmgr.conf (any case): repmgr's syslog-like levels, the three
    /// above ERROR (`CRITICAL`, `ALERT`, `EMERG`) printing what ERROR prints. `None` when it
    /// is none of them.
    pub fn of_repmgr(value: &str) -> Option<Level> {
        Some(match value.to_ascii_uppercase().as_str() {
            "DEBUG" => Level::Debug,
            "INFO" => Level::Info,
            "NOTICE" => Level::Notice,
            "WARNING" => Level::Warning,
            "ERROR" | "CRIT" | "CRITICAL" | "ALERT" | "EMERG" => Level::Error,
            _ => return None,
        })
    }

    /// The prefix of its lines.
    fn prefix(self) -> &'static str {
        match self {
            Level::Debug => "DEBUG",
            Level::Info => "INFO",
            Level::Notice => "NOTICE",
            Level::Warning => "WARNING",
            Level::Error => "ERROR",
        }
    }
}

static THRESHOLD: AtomicU8 = AtomicU8::new(Level::Info as u8);
/// Whether the command line chose the level, so that repmgr.conf's `log_level` does not.
static CHOSEN: AtomicBool = AtomicBool::new(false);
static TERSE: AtomicBool = AtomicBool::new(false);
static FILE: Mutex<Option<std::fs::File>> = Mutex::new(None);

/// Sets the least severe level that is printed.
pub fn set_level(level: Level) {
    THRESHOLD.store(level as u8, Ordering::Relaxed);
}

/// What the command line says about logging: `-L` wins, then `-q` (errors only) or `-v`
/// (DEBUG); with none of them, repmgr.conf's `log_level` may set the level later
/// ([`configure_from_file`]). `-t` leaves out DETAIL and HINT lines.
pub fn configure(level: Option<Level>, quiet: bool, verbose: bool, terse: bool) {
    let chosen = level.or(quiet
        .then_some(Level::Error)
        .or(verbose.then_some(Level::Debug)));
    if let Some(level) = chosen {
        set_level(level);
        CHOSEN.store(true, Ordering::Relaxed);
    }
    TERSE.store(terse, Ordering::Relaxed);
}

/// What repmgr.conf says about logging: its `log_level` unless the command line chose one, and
/// its `log_file`, opened for appending (created 0600: it may name hosts and paths). A file
/// that cannot be opened is a warning, as the clone does not depend on it.
pub fn configure_from_file(level: Option<Level>, file: Option<&Path>) {
    if let Some(level) = level.filter(|_| !CHOSEN.load(Ordering::Relaxed)) {
        set_level(level);
    }
    let Some(path) = file else { return };
    use std::os::unix::fs::OpenOptionsExt;
    match std::fs::OpenOptions::new()
        .append(true)
        .create(true)
        .mode(0o600)
        .open(path)
    {
        Ok(file) => *FILE.lock().unwrap_or_else(|e| e.into_inner()) = Some(file),
        Err(e) => crate::warning!(
            "cannot open log_file \"{}\": {e}; logging to stderr only",
            path.display()
        ),
    }
}

/// Whether lines of `level` are printed.
pub fn enabled(level: Level) -> bool {
    level as u8 >= THRESHOLD.load(Ordering::Relaxed)
}

/// Prints one line with its prefix, then the DETAIL and HINT lines given (an empty one is
/// left out: it would say nothing).
pub fn emit(level: Level, message: &str, detail: Option<&str>, hint: Option<&str>) {
    if !enabled(level) {
        return;
    }
    write_lines(&lines(
        level,
        message,
        detail,
        hint,
        TERSE.load(Ordering::Relaxed),
    ));
}

/// The lines of one message: its own, then its DETAIL and HINT unless `terse` or blank.
fn lines<'a>(
    level: Level,
    message: &'a str,
    detail: Option<&'a str>,
    hint: Option<&'a str>,
    terse: bool,
) -> Vec<(&'static str, &'a str)> {
    let mut lines = vec![(level.prefix(), message)];
    for (prefix, text) in [("DETAIL", detail), ("HINT", hint)] {
        match text {
            Some(text) if !terse && !text.trim().is_empty() => lines.push((prefix, text)),
            _ => {}
        }
    }
    lines
}

/// Writes lines to stderr and, when `log_file` is set, to it with repmgr's timestamp.
fn write_lines(lines: &[(&str, &str)]) {
    let mut out = std::io::stderr().lock();
    for (prefix, text) in lines {
        let _ = writeln!(out, "{prefix}: {text}");
    }
    let mut file = FILE.lock().unwrap_or_else(|e| e.into_inner());
    if let Some(file) = file.as_mut() {
        let stamp = local_timestamp();
        let text: String = lines
            .iter()
            .map(|(prefix, text)| format!("[{stamp}] [{prefix}] {text}\n"))
            .collect();
        // One write per message, so that lines of two threads never interleave.
        let _ = file.write_all(text.as_bytes());
    }
}

/// `YYYY-MM-DD HH:MM:SS` in the local time zone, as repmgr stamps its log file's lines.
fn local_timestamp() -> String {
    local_time("%Y-%m-%d %H:%M:%S")
}

/// The time now in the local time zone, formatted by strftime(3) (`format` holds no NUL).
pub fn local_time(format: &str) -> String {
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_secs()) as libc::time_t;
    // SAFETY: a zeroed tm is a valid value for localtime_r to overwrite.
    let mut tm: libc::tm = unsafe { std::mem::zeroed() };
    let Ok(format) = std::ffi::CString::new(format) else {
        return String::new();
    };
    let mut buf = [0u8; 128];
    // SAFETY: every pointer is valid for the call; strftime writes at most buf.len() bytes
    // and returns how many it wrote (0 when they would not fit).
    let written = unsafe {
        if libc::localtime_r(&now, &mut tm).is_null() {
            return String::new();
        }
        libc::strftime(buf.as_mut_ptr().cast(), buf.len(), format.as_ptr(), &tm)
    };
    String::from_utf8_lossy(&buf[..written]).into_owned()
}

/// Logs a NOTICE line.
#[macro_export]
macro_rules! notice { ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Notice, &format!($($arg)*), None, None) } }
/// Logs an INFO line.
#[macro_export]
macro_rules! info { ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Info, &format!($($arg)*), None, None) } }
/// Logs a WARNING line.
#[macro_export]
macro_rules! warning { ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Warning, &format!($($arg)*), None, None) } }
/// Logs a DEBUG line.
#[macro_export]
macro_rules! debug { ($($arg:tt)*) => { $crate::log::emit($crate::log::Level::Debug, &format!($($arg)*), None, None) } }

/// Prints a HINT line on its own (following a NOTICE or WARNING that needs one).
pub fn hint(hint: &str) {
    if enabled(Level::Notice) && !TERSE.load(Ordering::Relaxed) {
        write_lines(&[("HINT", hint)]);
    }
}

/// Prints an error with its DETAIL and HINT, as the last words of a failed command.
pub fn error(err: &crate::error::Error) {
    emit(
        Level::Error,
        &err.full_message(),
        err.detail.as_deref(),
        err.hint.as_deref(),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_empty_detail_or_hint_is_never_printed_and_terse_drops_both() {
        assert_eq!(
            lines(Level::Error, "m", Some(" \n"), Some("h"), false),
            [("ERROR", "m"), ("HINT", "h")]
        );
        assert_eq!(
            lines(Level::Error, "m", Some("d"), Some(""), false),
            [("ERROR", "m"), ("DETAIL", "d")]
        );
        assert_eq!(
            lines(Level::Warning, "m", Some("d"), Some("h"), true),
            [("WARNING", "m")]
        );
        assert_eq!(Level::of_repmgr("warning"), Some(Level::Warning));
        assert_eq!(Level::of_repmgr("CRIT"), Some(Level::Error));
        assert_eq!(Level::of_repmgr("LOUD"), None);
    }
}
