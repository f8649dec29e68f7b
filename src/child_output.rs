//! What a child process printed: its output cut into lines as they arrive, and the tail of it an
//! error's DETAIL keeps.
//!
//! One rule for every DETAIL made of a program's output (rsync, pg_basebackup, ssh and Barman,
//! pg_verifybackup, …): its last [`DETAIL_LINES`] non-blank lines, at most [`DETAIL_CHARS`]
//! characters. Programs say why they stopped at the end of what they print; the bound keeps a
//! chatty program (or one long line, such as a JSON reply) from flooding logs and the clone's
//! recorded error.
//!
//! Must not: interpret what a program said (its caller knows what the lines mean), or hide
//! secrets — a caller whose program may echo a password masks it first.

use std::collections::VecDeque;
use std::io::{self, Read, Seek, SeekFrom};

/// Lines of a program's output an error's DETAIL keeps: the last ones, where programs say why
/// they stopped.
pub const DETAIL_LINES: usize = 12;

/// Characters an error's DETAIL keeps at most; the rest is cut and marked with `…`.
pub const DETAIL_CHARS: usize = 4000;

/// Bytes read from the end of a captured output file: many more than [`DETAIL_LINES`] lines of
/// any program's messages, so the tail never needs the whole file.
const FILE_TAIL_BYTES: u64 = 8192;

/// The DETAIL for `text`: its last [`DETAIL_LINES`] non-blank lines, joined with `\n`, cut to
/// [`DETAIL_CHARS`] characters. Empty when `text` holds nothing but white space.
pub fn detail(text: &str) -> String {
    let mut tail = Tail::default();
    for line in text.lines() {
        tail.push(line);
    }
    tail.into_detail()
}

/// [`detail`] of a program's raw output (lossily decoded: only messages are read from it).
pub fn detail_of(bytes: &[u8]) -> String {
    detail(&String::from_utf8_lossy(bytes))
}

/// [`detail`] of the output a program wrote to `file`, read from its last few kilobytes.
pub fn file_detail(file: &mut std::fs::File) -> String {
    let len = file.metadata().map(|m| m.len()).unwrap_or(0);
    let _ = file.seek(SeekFrom::Start(len.saturating_sub(FILE_TAIL_BYTES)));
    let mut bytes = Vec::new();
    if file.read_to_end(&mut bytes).is_err() {
        return String::new();
    }
    detail_of(&bytes)
}

/// The last non-blank line of `text`, trimmed: where a program says why it failed.
pub fn last_line(text: &str) -> Option<&str> {
    text.lines()
        .rev()
        .map(str::trim)
        .find(|line| !line.is_empty())
}

/// The tail of an output read line by line, holding only what the DETAIL will keep.
#[derive(Debug, Default)]
pub struct Tail {
    lines: VecDeque<String>,
}

impl Tail {
    /// Adds a line; blank lines are not kept, and the oldest line goes once
    /// [`DETAIL_LINES`] are held.
    pub fn push(&mut self, line: &str) {
        if line.trim().is_empty() {
            return;
        }
        if self.lines.len() == DETAIL_LINES {
            self.lines.pop_front();
        }
        self.lines.push_back(line.to_string());
    }

    /// The DETAIL: the kept lines joined with `\n`, cut to [`DETAIL_CHARS`] characters.
    pub fn into_detail(self) -> String {
        let text = Vec::from(self.lines).join("\n");
        match text.char_indices().nth(DETAIL_CHARS) {
            Some((cut, _)) => format!("{}…", &text[..cut]),
            None => text,
        }
    }
}

/// Reads `reader` to its end and calls `on_line` with each line, without its end. A line ends
/// at `\n` or `\r`: progress meters redraw their line with `\r`, and each redraw is news.
///
/// Returns the bytes after the last line end: a line the program did not finish (it was killed,
/// or exits without a newline). They are not passed to `on_line`, because a cut line may read
/// as a different, complete one (`…/16384` cut to `…/163`); the caller decides what it is worth.
/// A read error other than an interrupted call ends the reading like an end of file: the
/// program's exit status then says what went wrong.
pub fn for_each_line(mut reader: impl Read, mut on_line: impl FnMut(&[u8])) -> Vec<u8> {
    let mut pending = Vec::new();
    let mut buf = [0_u8; 8192];
    loop {
        let n = match reader.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => break,
        };
        for &byte in &buf[..n] {
            if byte == b'\n' || byte == b'\r' {
                on_line(&pending);
                pending.clear();
            } else {
                pending.push(byte);
            }
        }
    }
    pending
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn detail_keeps_the_last_non_blank_lines() {
        let text: String = (1..=20).map(|n| format!("line {n}\n\n  \n")).collect();
        let expected: Vec<String> = (9..=20).map(|n| format!("line {n}")).collect();
        assert_eq!(detail(&text), expected.join("\n"));
        assert_eq!(detail("  only\n\n"), "  only");
        assert_eq!(detail(" \n\t\n"), "");
        assert_eq!(detail_of(b"a\xffb\n"), "a\u{fffd}b");
    }

    #[test]
    fn detail_is_cut_to_its_character_bound() {
        let long = "é".repeat(DETAIL_CHARS + 10);
        let cut = detail(&long);
        assert_eq!(cut.chars().count(), DETAIL_CHARS + 1);
        assert!(cut.ends_with("é…"), "{cut}");
        let exact = "x".repeat(DETAIL_CHARS);
        assert_eq!(detail(&exact), exact);
    }

    #[test]
    fn a_streamed_tail_equals_the_tail_of_the_whole_text() {
        let text: String = (0..100).map(|n| format!("{n}\n")).collect();
        let mut tail = Tail::default();
        for_each_line(text.as_bytes(), |line| {
            tail.push(&String::from_utf8_lossy(line))
        });
        assert_eq!(tail.into_detail(), detail(&text));
        assert_eq!(Tail::default().into_detail(), "");
    }

    #[test]
    fn file_detail_reads_the_end_of_a_large_capture() {
        let mut file = tempfile::tempfile().expect("temp file");
        let text: String = (0..5000).map(|n| format!("rsync: message {n}\n")).collect();
        std::io::Write::write_all(&mut file, text.as_bytes()).expect("write");
        let expected: Vec<String> = (4988..5000)
            .map(|n| format!("rsync: message {n}"))
            .collect();
        assert_eq!(file_detail(&mut file), expected.join("\n"));
        let mut empty = tempfile::tempfile().expect("temp file");
        assert_eq!(file_detail(&mut empty), "");
    }

    #[test]
    fn last_line_skips_trailing_blank_lines() {
        assert_eq!(
            last_line("warning\n  ssh: connect refused  \n\n"),
            Some("ssh: connect refused")
        );
        assert_eq!(last_line(" \n"), None);
    }

    #[test]
    fn lines_end_at_newlines_and_carriage_returns_and_a_cut_line_comes_back() {
        let mut lines = Vec::new();
        let rest = for_each_line(&b"a\r\nb 10%\rb 20%\nlast, cut"[..], |line| {
            lines.push(String::from_utf8_lossy(line).into_owned())
        });
        assert_eq!(lines, ["a", "", "b 10%", "b 20%"]);
        assert_eq!(rest, b"last, cut");
        assert!(for_each_line(&b"done\n"[..], |_| {}).is_empty());
    }
}
