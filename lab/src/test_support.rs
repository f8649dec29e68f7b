//! What the lab's unit tests share: checking the configuration texts the lab writes (barman.conf,
//! sshd_config, postgresql.conf) line by line.

/// Asserts that every one of `lines` is a whole line of `text`, naming the first missing one.
#[track_caller]
pub(crate) fn assert_has_lines(text: &str, lines: &[&str]) {
    for line in lines {
        assert!(
            text.lines().any(|l| l == *line),
            "missing {line:?} in\n{text}"
        );
    }
}
