//! POSIX-shell-like word splitting for option strings from repmgr.conf (`ssh_options`,
//! `pg_basebackup_options`), so they become argument vectors and never reach a shell.
//!
//! Quoting is honoured (single quotes, double quotes, backslash); nothing is expanded. Because
//! no shell runs, what a shell would expand or interpret (`$`, backquotes, `;`, `|`, `&`, `<`,
//! `>`, parentheses) is refused unless quoted, instead of being passed on silently with a
//! different meaning. This module must not run anything.

use std::fmt;

/// Why a string could not be split into arguments.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SplitError(String);

impl fmt::Display for SplitError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for SplitError {}

/// Splits `s` into words as a POSIX shell would, without expanding anything.
///
/// * Blanks (space, tab, newline) separate words.
/// * `'…'` keeps everything literally; `"…"` keeps everything but `\` before `$`, `` ` ``,
///   `"`, `\` or a newline; outside quotes `\x` is `x` and backslash-newline disappears.
/// * `''` and `""` make an empty word.
/// * Unquoted `$ \` ; | & < > ( )` and `$`/backquote inside double quotes are errors: no
///   shell runs, so they could not mean what they would mean in a shell.
///
/// ```
/// use pgreplica::config::split_args;
/// let args = split_args(r#"-o "ProxyCommand=ssh -W %h:%p bastion" -p 2222"#).unwrap();
/// assert_eq!(args, ["-o", "ProxyCommand=ssh -W %h:%p bastion", "-p", "2222"]);
/// ```
pub fn split_args(s: &str) -> Result<Vec<String>, SplitError> {
    let mut words = Vec::new();
    let mut word = String::new();
    // A word exists once anything (even an empty quote) has been seen since the last blank.
    let mut in_word = false;
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            ' ' | '\t' | '\n' => {
                if in_word {
                    words.push(std::mem::take(&mut word));
                    in_word = false;
                }
            }
            '\'' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('\'') => break,
                        Some(c) => word.push(c),
                        None => return Err(SplitError("unterminated single quote".into())),
                    }
                }
            }
            '"' => {
                in_word = true;
                loop {
                    match chars.next() {
                        Some('"') => break,
                        Some('\\') => match chars.next() {
                            Some('\n') => {}
                            Some(e @ ('$' | '`' | '"' | '\\')) => word.push(e),
                            Some(other) => {
                                word.push('\\');
                                word.push(other);
                            }
                            None => return Err(SplitError("unterminated double quote".into())),
                        },
                        Some(e @ ('$' | '`')) => return Err(not_expanded(e)),
                        Some(c) => word.push(c),
                        None => return Err(SplitError("unterminated double quote".into())),
                    }
                }
            }
            '\\' => match chars.next() {
                Some('\n') => {}
                Some(e) => {
                    in_word = true;
                    word.push(e);
                }
                None => return Err(SplitError("trailing backslash".into())),
            },
            '$' | '`' => return Err(not_expanded(c)),
            ';' | '|' | '&' | '<' | '>' | '(' | ')' => {
                return Err(SplitError(format!(
                    "\"{c}\" would be a shell operator, but no shell runs these options; quote it if it is meant literally"
                )))
            }
            c => {
                in_word = true;
                word.push(c);
            }
        }
    }
    if in_word {
        words.push(word);
    }
    Ok(words)
}

fn not_expanded(c: char) -> SplitError {
    SplitError(format!(
        "\"{c}\" would be expanded by a shell, but no shell runs these options; write the value itself, or single-quote it if it is meant literally"
    ))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn split(s: &str) -> Vec<String> {
        split_args(s).unwrap()
    }

    #[test]
    fn blanks_separate_words() {
        assert_eq!(
            split("  -q  -o\tConnectTimeout=10\n"),
            ["-q", "-o", "ConnectTimeout=10"]
        );
        assert!(split("").is_empty());
        assert!(split("   ").is_empty());
    }

    #[test]
    fn quotes_group_and_concatenate() {
        assert_eq!(
            split(r#"-o "StrictHostKeyChecking no" -o 'User=barman'"#),
            ["-o", "StrictHostKeyChecking no", "-o", "User=barman"]
        );
        assert_eq!(split(r#"a'b c'"d e"f"#), ["ab cd ef"]);
        assert_eq!(split(r#"'' "" x"#), ["", "", "x"]);
        assert_eq!(split(r#"'$HOME \n'"#), [r"$HOME \n"]);
    }

    #[test]
    fn backslashes_as_in_posix_sh() {
        assert_eq!(split(r"a\ b \'c"), ["a b", "'c"]);
        assert_eq!(split(r#""a\"b\\c\d""#), [r#"a"b\c\d"#]);
        assert_eq!(split(r#""\$x""#), ["$x"]);
        assert_eq!(split("a\\\nb"), ["ab"]);
    }

    #[test]
    fn what_only_a_shell_could_do_is_refused() {
        assert!(split_args("'open")
            .unwrap_err()
            .to_string()
            .contains("single quote"));
        assert!(split_args("\"open")
            .unwrap_err()
            .to_string()
            .contains("double quote"));
        assert!(split_args("x\\")
            .unwrap_err()
            .to_string()
            .contains("backslash"));
        for bad in [
            "-i $HOME/id",
            "`id`",
            "\"$X\"",
            "a;b",
            "a|b",
            "a && b",
            "a>b",
            "(a)",
        ] {
            assert!(split_args(bad).is_err(), "{bad}");
        }
        assert_eq!(split("'a;b|c$d'"), ["a;b|c$d"]);
    }
}
