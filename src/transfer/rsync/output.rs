//! Reading rsync's stdout: our `--out-format` lines (`%b %l %n`, a file complete at its final
//! name) and `--info=progress2` lines (bytes sent so far).
//!
//! The format is defined here, next to its parser ([`out_format_arg`]), so the two cannot drift.
//! An `--out-format` line containing `%b` is printed once the file's data was received, but
//! just *before* rsync closes the temporary file and renames it into place (receiver.c:
//! `log_item` follows `receive_data`, `finish_transfer` comes after): a reader of the final
//! name must wait for it (`transfer::verifier` does). A done mark may thus reach the store
//! while a kill stops rsync between the line and the rename: the next run takes such a mark
//! back before it copies anything, since the final name does not hold the file at the list's
//! size and mtime (`barman_rsync::stored_list`'s re-derivation of the done marks).
//!
//! Must not: decide what a line means for the copy (whether a file is listed, reported, or
//! mismatched): the stream that ran rsync knows its entries.

/// Starts each of our `--out-format` lines, so they cannot be mistaken for rsync's own output.
const MARKER: &str = "pgreplica-done ";

/// rsync's `--out-format` option for the lines [`parse_line`] reads: bytes sent, file length,
/// name (escaped by rsync as `\#ooo`).
pub(super) fn out_format_arg() -> String {
    format!("--out-format={MARKER}%b %l %n")
}

/// One line of rsync's stdout.
#[derive(Debug, PartialEq, Eq)]
pub(super) enum Line {
    /// Our `--out-format` line: a file complete at its final name.
    Done {
        /// Bytes rsync sent for it (`%b`).
        bytes_sent: u64,
        /// The file's length (`%l`).
        length: u64,
        /// Its path relative to the transfer's root, without a trailing `/`.
        name: String,
    },
    /// A `--info=progress2` line: bytes sent so far.
    Progress(u64),
    /// Anything else rsync prints.
    Other,
}

/// Reads one line of rsync's stdout (without its line end).
pub(super) fn parse_line(raw: &[u8]) -> Line {
    if let Some(rest) = raw.strip_prefix(MARKER.as_bytes()) {
        let mut parts = rest.splitn(3, |&b| b == b' ');
        let number = |p: Option<&[u8]>| std::str::from_utf8(p?).ok()?.parse::<u64>().ok();
        if let (Some(bytes_sent), Some(length), Some(name)) =
            (number(parts.next()), number(parts.next()), parts.next())
        {
            let name = decode_name(name);
            let name = String::from_utf8_lossy(&name);
            return Line::Done {
                bytes_sent,
                length,
                name: name.trim_end_matches('/').to_string(),
            };
        }
        return Line::Other;
    }
    let text = String::from_utf8_lossy(raw);
    let first = text.split_whitespace().next().unwrap_or("");
    match first.parse::<u64>() {
        Ok(bytes) if text.contains('%') => Line::Progress(bytes),
        _ => Line::Other,
    }
}

/// Undoes rsync's `\#ooo` escapes (octal byte values) in a printed name.
fn decode_name(raw: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(raw.len());
    let mut i = 0;
    while i < raw.len() {
        if raw[i] == b'\\' && raw.get(i + 1) == Some(&b'#') {
            let digits = raw
                .get(i + 2..i + 5)
                .filter(|d| d.iter().all(|b| (b'0'..=b'7').contains(b)));
            if let Some(d) = digits {
                let value = d.iter().fold(0u32, |v, b| v * 8 + u32::from(b - b'0'));
                if let Ok(byte) = u8::try_from(value) {
                    out.push(byte);
                    i += 5;
                    continue;
                }
            }
        }
        out.push(raw[i]);
        i += 1;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_done_lines_with_escaped_names() {
        let line = b"pgreplica-done 1234 1000 base/1/odd name \\#303\\#251t\\#303\\#251";
        assert_eq!(
            parse_line(line),
            Line::Done {
                bytes_sent: 1234,
                length: 1000,
                name: "base/1/odd name \u{e9}t\u{e9}".into()
            }
        );
        assert_eq!(
            parse_line(b"pgreplica-done 0 4096 base/"),
            Line::Done {
                bytes_sent: 0,
                length: 4096,
                name: "base".into()
            }
        );
        // A backslash that is not an escape stays.
        assert_eq!(decode_name(b"a\\#9x\\b"), b"a\\#9x\\b");
        assert_eq!(decode_name(b"\\#012"), b"\n");
    }

    #[test]
    fn parses_progress_lines_and_ignores_the_rest() {
        assert_eq!(
            parse_line(b"        4292611  21%    3.94MB/s    0:00:03"),
            Line::Progress(4_292_611)
        );
        assert_eq!(
            parse_line(b"  3 0%  0.00kB/s  0:00:00 (xfr#1, to-chk=2/3)"),
            Line::Progress(3)
        );
        assert_eq!(parse_line(b"sending incremental file list"), Line::Other);
        assert_eq!(parse_line(b"pgreplica-done x 1 a"), Line::Other);
        assert_eq!(parse_line(b""), Line::Other);
    }

    #[test]
    fn lines_in_our_out_format_parse_as_done() {
        let arg = out_format_arg();
        let format = arg
            .strip_prefix("--out-format=")
            .expect("an --out-format option");
        let line = format
            .replace("%b", "17")
            .replace("%l", "4096")
            .replace("%n", "base/1/name with spaces");
        assert_eq!(
            parse_line(line.as_bytes()),
            Line::Done {
                bytes_sent: 17,
                length: 4096,
                name: "base/1/name with spaces".into()
            }
        );
    }
}
