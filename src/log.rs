//! Log lines in repmgr's shape (`NOTICE:`, `INFO:`, `DETAIL:`, `HINT:`, `WARNING:`, `ERROR:`,
//! `DEBUG:`) on stderr, filtered by `--log-level`.
//!
//! repmgr's operators grep for these prefixes; keeping them means pgreplica's output drops into
//! existing runbooks. DETAIL and HINT lines belong to the line before them and follow its fate.

use std::io::Write;
use std::sync::atomic::{AtomicU8, Ordering};

/// Severity, ordered from most to least verbose.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, clap::ValueEnum)]
#[value(rename_all = "UPPER")]
pub enum Level {
    /// Everything, including the commands run.
    Debug = 0,
    /// Progress of each step (the default, as in repmgr).
    Info = 1,
    /// Milestones.
    Notice = 2,
    /// Problems that do not stop the clone.
    Warning = 3,
    /// Failures only.
    Error = 4,
}

static THRESHOLD: AtomicU8 = AtomicU8::new(Level::Info as u8);

/// Sets the least severe level that is printed.
pub fn set_level(level: Level) {
    THRESHOLD.store(level as u8, Ordering::Relaxed);
}

/// Whether lines of `level` are printed.
pub fn enabled(level: Level) -> bool {
    level as u8 >= THRESHOLD.load(Ordering::Relaxed)
}

/// Prints one line with its prefix, then optional DETAIL and HINT lines.
pub fn emit(level: Level, message: &str, detail: Option<&str>, hint: Option<&str>) {
    if !enabled(level) {
        return;
    }
    let prefix = match level {
        Level::Debug => "DEBUG",
        Level::Info => "INFO",
        Level::Notice => "NOTICE",
        Level::Warning => "WARNING",
        Level::Error => "ERROR",
    };
    let mut out = std::io::stderr().lock();
    let _ = writeln!(out, "{prefix}: {message}");
    if let Some(detail) = detail {
        let _ = writeln!(out, "DETAIL: {detail}");
    }
    if let Some(hint) = hint {
        let _ = writeln!(out, "HINT: {hint}");
    }
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

/// Prints a HINT line on its own (following a NOTICE that needs one).
pub fn hint(hint: &str) {
    if enabled(Level::Notice) {
        let _ = writeln!(std::io::stderr().lock(), "HINT: {hint}");
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
