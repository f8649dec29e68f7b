//! The lab's one error type: which stage of standing the lab up (or using it) failed, why, and
//! what to do about it. It carries text only; it must not hold handles or processes.

use std::fmt;

/// An error from the lab: a stage ("initdb", "barman backup", …), a one-line message, and
/// optionally a detail (captured output, a log tail) and a hint for the fix.
pub struct LabError {
    stage: String,
    message: String,
    detail: Option<String>,
    hint: Option<String>,
}

impl LabError {
    /// A new error for `stage` saying `message`.
    pub fn new(stage: impl Into<String>, message: impl Into<String>) -> Self {
        LabError {
            stage: stage.into(),
            message: message.into(),
            detail: None,
            hint: None,
        }
    }

    /// Adds (or extends) the detail: captured output, a log tail, the underlying error.
    pub fn detail(mut self, detail: impl Into<String>) -> Self {
        let detail = detail.into();
        let detail = detail.trim_end();
        if detail.is_empty() {
            return self;
        }
        self.detail = Some(match self.detail.take() {
            Some(before) => format!("{before}\n{detail}"),
            None => detail.to_string(),
        });
        self
    }

    /// Sets the hint: what the user should do to fix it.
    pub fn hint(mut self, hint: impl Into<String>) -> Self {
        self.hint = Some(hint.into());
        self
    }

    /// The stage that failed, e.g. "start primary".
    pub fn stage(&self) -> &str {
        &self.stage
    }

    /// The one-line message, without stage, detail or hint.
    pub fn message(&self) -> &str {
        &self.message
    }

    /// Wraps an I/O error that happened while doing `what` in `stage`.
    pub(crate) fn io(stage: &str, what: impl fmt::Display, err: std::io::Error) -> Self {
        LabError::new(stage, format!("{what}: {err}"))
    }
}

impl fmt::Display for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "lab: {}: {}", self.stage, self.message)?;
        if let Some(detail) = &self.detail {
            write!(f, "\nDETAIL:\n{}", indent(detail))?;
        }
        if let Some(hint) = &self.hint {
            write!(f, "\nHINT: {hint}")?;
        }
        Ok(())
    }
}

// `unwrap()` and `expect()` in tests print Debug: make that the readable form, not a struct dump
// with escaped newlines.
impl fmt::Debug for LabError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

impl std::error::Error for LabError {}

fn indent(text: &str) -> String {
    text.lines()
        .map(|line| format!("    {line}"))
        .collect::<Vec<_>>()
        .join("\n")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn display_has_stage_detail_and_hint() {
        let err = LabError::new("initdb", "initdb failed")
            .detail("line one\nline two\n")
            .detail("")
            .hint("run `cargo xtask install` as root");
        assert_eq!(
            err.to_string(),
            "lab: initdb: initdb failed\nDETAIL:\n    line one\n    line two\n\
             HINT: run `cargo xtask install` as root"
        );
        assert_eq!(format!("{err:?}"), err.to_string());
        assert_eq!(err.stage(), "initdb");
        assert_eq!(err.message(), "initdb failed");
    }
}
