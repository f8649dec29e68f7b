//! Reads a repmgr.conf and the files it includes into an ordered list of settings, problems
//! and notes.
//!
//! Owns the line grammar (`name [=] value`), the three include directives, relative include
//! paths and the nesting limit. It must not interpret keys or values: that is `mod.rs`'s job,
//! so this stays a faithful reader of the format whatever keys a file holds.

use super::lexer::{tokenize, Token};
use super::{Location, Problem, Warning};
use crate::error::{Error, ErrorKind};
use crate::log::Level;
use std::io;
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};

/// How deep includes may nest below the main file (PostgreSQL's and repmgr's limit). It is
/// also what stops include cycles: a file that includes itself runs into it.
pub const MAX_DEPTH: usize = 10;

/// repmgr gives up on a file after this many syntax errors, to keep a binary file from
/// flooding the output.
const MAX_SYNTAX_ERRORS: usize = 100;

/// One `name = value` line.
#[derive(Debug)]
pub(crate) struct Setting {
    pub(crate) key: String,
    pub(crate) value: String,
    pub(crate) location: Location,
}

/// What reading found, in file order (includes expanded where they stand).
#[derive(Debug)]
pub(crate) enum Item {
    Setting(Setting),
    Problem(Problem),
    Note(Warning),
}

/// Reads `main` and everything it includes.
///
/// Only an unreadable main file is an immediate error; every other problem is an item, so
/// that all of them can be reported together.
pub(crate) fn read(main: &Path) -> Result<Vec<Item>, Error> {
    let bytes = std::fs::read(main).map_err(|e| {
        let message = if e.kind() == io::ErrorKind::NotFound {
            format!("configuration file \"{}\" not found", main.display())
        } else {
            format!(
                "could not read configuration file \"{}\": {}",
                main.display(),
                io_reason(&e)
            )
        };
        Error::new(ErrorKind::Config, message)
            .hint("check the path given with -f/--config-file and that this user can read it")
    })?;
    let mut reader = Reader { items: Vec::new() };
    reader.parse(main, &bytes, &mut Vec::new());
    Ok(reader.items)
}

/// `std::io::Error`'s text without the "(os error N)" suffix, as repmgr prints strerror().
fn io_reason(e: &io::Error) -> String {
    let text = e.to_string();
    match text.find(" (os error") {
        Some(i) => text[..i].to_string(),
        None => text,
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Include {
    File,
    IfExists,
    Dir,
}

impl Include {
    fn parse(name: &str) -> Option<Include> {
        // repmgr compares directive names case-insensitively, unlike parameter names.
        match name.to_ascii_lowercase().as_str() {
            "include" => Some(Include::File),
            "include_if_exists" => Some(Include::IfExists),
            "include_dir" => Some(Include::Dir),
            _ => None,
        }
    }

    fn name(self) -> &'static str {
        match self {
            Include::File => "include",
            Include::IfExists => "include_if_exists",
            Include::Dir => "include_dir",
        }
    }
}

struct Reader {
    items: Vec<Item>,
}

impl Reader {
    fn problem(&mut self, location: Location, message: String, hint: Option<&str>) {
        self.items.push(Item::Problem(Problem {
            location,
            message,
            hint: hint.map(str::to_string),
        }));
    }

    /// Parses one file's bytes. `chain` holds the include directives that led here.
    fn parse(&mut self, file: &Path, bytes: &[u8], chain: &mut Vec<Location>) {
        let mut syntax_errors = 0;
        for (index, line) in bytes.split(|&b| b == b'\n').enumerate() {
            let location = Location {
                file: file.to_path_buf(),
                line: u32::try_from(index + 1).unwrap_or(u32::MAX),
            };
            match parse_line(line) {
                Ok(None) => {}
                Ok(Some((name, value))) => match Include::parse(&name) {
                    Some(kind) => self.include(kind, &value, location, chain),
                    None => self.items.push(Item::Setting(Setting {
                        key: name,
                        value,
                        location,
                    })),
                },
                Err((message, hint)) => {
                    self.problem(location.clone(), message, hint);
                    syntax_errors += 1;
                    if syntax_errors >= MAX_SYNTAX_ERRORS {
                        self.problem(
                            location,
                            format!(
                                "too many syntax errors; the rest of \"{}\" was not read",
                                file.display()
                            ),
                            Some("is this really a repmgr.conf?"),
                        );
                        return;
                    }
                }
            }
        }
    }

    fn include(&mut self, kind: Include, value: &str, at: Location, chain: &mut Vec<Location>) {
        if value.trim().is_empty() {
            self.problem(
                at,
                format!("{} needs a file or directory name", kind.name()),
                None,
            );
            return;
        }
        let base = at.file.parent().unwrap_or(Path::new("/"));
        let target = base.join(value);
        if chain.len() >= MAX_DEPTH {
            let route: Vec<String> = chain
                .iter()
                .chain(std::iter::once(&at))
                .map(Location::to_string)
                .collect();
            let cycle = chain.iter().any(|l| l.file == target) || at.file == target;
            self.problem(
                at,
                format!(
                    "cannot include \"{}\": includes nest deeper than {MAX_DEPTH} levels ({})",
                    target.display(),
                    route.join(" → ")
                ),
                Some(if cycle {
                    "the files include each other in a cycle; remove one of the include lines"
                } else {
                    "flatten the includes"
                }),
            );
            return;
        }
        chain.push(at.clone());
        match kind {
            Include::File | Include::IfExists => self.include_file(kind, &target, &at, chain),
            Include::Dir => self.include_dir(&target, &at, chain),
        }
        chain.pop();
    }

    fn include_file(
        &mut self,
        kind: Include,
        target: &Path,
        at: &Location,
        chain: &mut Vec<Location>,
    ) {
        match std::fs::read(target) {
            Ok(bytes) => self.parse(target, &bytes, chain),
            // What include_if_exists is for; repmgr 5.3 rejects the file here, PostgreSQL
            // only notes it, and so do we.
            Err(e) if kind == Include::IfExists && e.kind() == io::ErrorKind::NotFound => {
                self.items.push(Item::Note(Warning {
                    level: Level::Notice,
                    location: at.clone(),
                    message: format!(
                        "skipping missing configuration file \"{}\"",
                        target.display()
                    ),
                }));
            }
            Err(e) => self.problem(
                at.clone(),
                format!(
                    "could not read configuration file \"{}\": {}",
                    target.display(),
                    io_reason(&e)
                ),
                Some("relative include paths are resolved against the directory of the including file"),
            ),
        }
    }

    fn include_dir(&mut self, dir: &Path, at: &Location, chain: &mut Vec<Location>) {
        let entries = match std::fs::read_dir(dir) {
            Ok(entries) => entries,
            Err(e) => {
                return self.problem(
                    at.clone(),
                    format!(
                        "could not open configuration directory \"{}\": {}",
                        dir.display(),
                        io_reason(&e)
                    ),
                    Some("relative include paths are resolved against the directory of the including file"),
                )
            }
        };
        let mut files: Vec<PathBuf> = Vec::new();
        for entry in entries {
            let entry = match entry {
                Ok(entry) => entry,
                Err(e) => {
                    return self.problem(
                        at.clone(),
                        format!(
                            "could not read configuration directory \"{}\": {}",
                            dir.display(),
                            io_reason(&e)
                        ),
                        None,
                    )
                }
            };
            let name = entry.file_name();
            let bytes = name.as_bytes();
            // Hidden files, editor backups and anything not *.conf are skipped, as PostgreSQL does.
            if bytes.starts_with(b".") || !bytes.ends_with(b".conf") {
                continue;
            }
            let path = entry.path();
            match std::fs::metadata(&path) {
                Ok(meta) if meta.is_dir() => {}
                Ok(_) => files.push(path),
                Err(e) => {
                    return self.problem(
                        at.clone(),
                        format!(
                            "could not stat file \"{}\": {}",
                            path.display(),
                            io_reason(&e)
                        ),
                        None,
                    )
                }
            }
        }
        // Byte order, like strcmp, so the result does not depend on the locale.
        files.sort_by(|a, b| a.as_os_str().as_bytes().cmp(b.as_os_str().as_bytes()));
        for file in files {
            self.include_file(Include::File, &file, at, chain);
        }
    }
}

/// A syntax error: the message and an optional hint.
type LineError = (String, Option<&'static str>);

const QUOTE_HINT: &str =
    "only names and numbers may be unquoted; write other values in single quotes, e.g. pg_bindir='/usr/bin'";

/// One line: nothing (blank or comment), a name with its value, or a syntax error.
fn parse_line(line: &[u8]) -> Result<Option<(String, String)>, LineError> {
    let tokens = tokenize(line).map_err(|m| (m, None))?;
    let Some(first) = tokens.first() else {
        return Ok(None);
    };
    let name = match first {
        Token::Id(name) => name.clone(),
        other => {
            return Err((
                format!(
                    "syntax error near \"{}\": expected a parameter name",
                    other.text()
                ),
                Some("each line is name = value; comments start with #"),
            ))
        }
    };
    let mut rest = &tokens[1..];
    if rest.first() == Some(&Token::Equals) {
        rest = &rest[1..];
    }
    let value =
        match rest.first() {
            None => {
                return Err((
                    format!("syntax error near end of line: \"{name}\" has no value"),
                    Some("an empty value is written ''"),
                ))
            }
            Some(Token::Error(quote)) if quote == "'" => return Err((
                format!("unterminated quoted string in the value of \"{name}\""),
                Some(
                    "close the quote on the same line; a quote inside a value is written '' or \\'",
                ),
            )),
            Some(token) => match token.value() {
                Some(value) => value.to_string(),
                None => {
                    return Err((
                        format!(
                        "syntax error near \"{}\": the value of \"{name}\" must be single-quoted",
                        token.text()
                    ),
                        Some(QUOTE_HINT),
                    ))
                }
            },
        };
    if let Some(extra) = rest.get(1) {
        return Err((
            format!(
                "syntax error near \"{}\": the value of \"{name}\" must be single-quoted",
                extra.text()
            ),
            Some(QUOTE_HINT),
        ));
    }
    Ok(Some((name, value)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn line(s: &str) -> Result<Option<(String, String)>, LineError> {
        parse_line(s.as_bytes())
    }

    #[test]
    fn equals_sign_is_optional() {
        let want = Some(("node_id".to_string(), "3".to_string()));
        assert_eq!(line("node_id=3").unwrap(), want);
        assert_eq!(line("  node_id \t 3  # three").unwrap(), want);
    }

    #[test]
    fn blank_and_comment_lines_are_nothing() {
        assert_eq!(line("").unwrap(), None);
        assert_eq!(line("   \t\r").unwrap(), None);
        assert_eq!(line("# node_id=3").unwrap(), None);
    }

    #[test]
    fn syntax_errors_say_what_to_do() {
        let (msg, hint) = line("pg_bindir=/usr/bin").unwrap_err();
        assert_eq!(
            msg,
            "syntax error near \"/\": the value of \"pg_bindir\" must be single-quoted"
        );
        assert!(hint.unwrap().contains("single quotes"));
        let (msg, _) = line("barman_host=barman@backup").unwrap_err();
        assert!(msg.contains("near \"@\""), "{msg}");
        let (msg, _) = line("node_name=").unwrap_err();
        assert!(msg.contains("has no value"), "{msg}");
        let (msg, _) = line("node_name='x").unwrap_err();
        assert!(msg.contains("unterminated"), "{msg}");
        let (msg, _) = line("= 3").unwrap_err();
        assert!(msg.contains("expected a parameter name"), "{msg}");
    }

    #[test]
    fn syntax_errors_never_echo_a_quoted_value() {
        let (msg, _) = line("conninfo 'password=secret' x").unwrap_err();
        assert!(!msg.contains("secret"), "{msg}");
        let (msg, _) = line("conninfo = x 'password=secret'").unwrap_err();
        assert!(!msg.contains("secret"), "{msg}");
    }
}
