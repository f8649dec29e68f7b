//! The tokens of one repmgr.conf line, as repmgr's `configfile-scan.l` (PostgreSQL's
//! `guc-file.l`) defines them, and the decoding of single-quoted strings.
//!
//! Works on one line of bytes at a time: no token of the format can span a newline. Knows
//! nothing about keys, includes or files; it must not allocate anything but the token texts.

/// What a run of bytes on a line is.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) enum Token {
    /// A name: `[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff]*`, optionally `name.name`.
    Id(String),
    /// A single-quoted string, already decoded (quotes stripped, escapes applied).
    Quoted(String),
    /// An integer with optional unit letters (`5`, `-1`, `0x1F`, `5min`).
    Integer(String),
    /// A decimal number (`1.5`, `.5e3`).
    Real(String),
    /// An unquoted string that is more than a name: `[A-Za-z_\x80-\xff][A-Za-z0-9_\x80-\xff\-._:/]*`.
    Unquoted(String),
    /// `=`
    Equals,
    /// Anything else: the byte that no rule matches, or an unterminated quote.
    Error(String),
}

impl Token {
    /// The value a token stands for, if it can be a value at all.
    pub(crate) fn value(&self) -> Option<&str> {
        match self {
            Token::Id(s)
            | Token::Quoted(s)
            | Token::Integer(s)
            | Token::Real(s)
            | Token::Unquoted(s) => Some(s),
            Token::Equals | Token::Error(_) => None,
        }
    }

    /// How the token reads in a syntax error.
    pub(crate) fn text(&self) -> &str {
        match self {
            Token::Id(s) | Token::Integer(s) | Token::Real(s) | Token::Unquoted(s) => s,
            Token::Error(s) => s,
            // A decoded string may hold a secret (a conninfo password): never echo it.
            Token::Quoted(_) => "'…'",
            Token::Equals => "=",
        }
    }
}

fn is_letter(b: u8) -> bool {
    b.is_ascii_alphabetic() || b == b'_' || b >= 0x80
}

fn is_letter_or_digit(b: u8) -> bool {
    is_letter(b) || b.is_ascii_digit()
}

fn is_unquoted_extra(b: u8) -> bool {
    matches!(b, b'-' | b'.' | b'_' | b':' | b'/')
}

/// Splits one line (without its newline) into tokens; a `#` outside quotes ends the line.
///
/// Fails only when a quoted string decodes to bytes that are not UTF-8 (octal escapes can
/// produce any byte); the error names what is wrong.
pub(crate) fn tokenize(line: &[u8]) -> Result<Vec<Token>, String> {
    let mut tokens = Vec::new();
    let mut i = 0;
    while i < line.len() {
        let b = line[i];
        if matches!(b, b' ' | b'\t' | b'\r') {
            i += 1;
            continue;
        }
        if b == b'#' {
            break;
        }
        let (token, len) = next_token(&line[i..])?;
        tokens.push(token);
        i += len;
    }
    Ok(tokens)
}

/// The longest token at the start of `s` (flex's rule), with its length in bytes.
fn next_token(s: &[u8]) -> Result<(Token, usize), String> {
    let b = s[0];
    if b == b'=' {
        return Ok((Token::Equals, 1));
    }
    if b == b'\'' {
        return Ok(match quoted_len(s) {
            Some(len) => (Token::Quoted(decode_quoted(&s[1..len - 1])?), len),
            None => (Token::Error("'".into()), 1),
        });
    }
    if is_letter(b) {
        let id = 1 + s[1..]
            .iter()
            .take_while(|&&c| is_letter_or_digit(c))
            .count();
        let unquoted = 1 + s[1..]
            .iter()
            .take_while(|&&c| is_letter_or_digit(c) || is_unquoted_extra(c))
            .count();
        // ID "." ID is a qualified name (e.g. a custom `extension.key`).
        let qualified = if s.get(id) == Some(&b'.') && s.get(id + 1).is_some_and(|&c| is_letter(c))
        {
            id + 2
                + s[id + 2..]
                    .iter()
                    .take_while(|&&c| is_letter_or_digit(c))
                    .count()
        } else {
            0
        };
        let text = lossless(&s[..unquoted]);
        let token = if unquoted == id || unquoted == qualified {
            Token::Id(text)
        } else {
            Token::Unquoted(text)
        };
        return Ok((token, unquoted));
    }
    let integer = integer_len(s);
    let real = real_len(s);
    if integer == 0 && real == 0 {
        // Bytes >= 0x80 are letters, so what no rule matches is one ASCII byte.
        return Ok((Token::Error(lossless(&s[..1])), 1));
    }
    Ok(if real > integer {
        (Token::Real(lossless(&s[..real])), real)
    } else {
        (Token::Integer(lossless(&s[..integer])), integer)
    })
}

/// Unquoted tokens are ASCII except for bytes >= 0x80, which the format takes as letters.
fn lossless(s: &[u8]) -> String {
    String::from_utf8_lossy(s).into_owned()
}

fn sign_len(s: &[u8]) -> usize {
    usize::from(matches!(s.first(), Some(b'-' | b'+')))
}

/// `{SIGN}?({DIGIT}+|0x{HEXDIGIT}+){UNIT_LETTER}*`
fn integer_len(s: &[u8]) -> usize {
    let start = sign_len(s);
    let digits = s[start..].iter().take_while(|c| c.is_ascii_digit()).count();
    let hex = if s[start..].starts_with(b"0x") {
        s[start + 2..]
            .iter()
            .take_while(|c| c.is_ascii_hexdigit())
            .count()
    } else {
        0
    };
    let number = if hex > 0 { 2 + hex } else { digits };
    if number == 0 {
        return 0;
    }
    let end = start + number;
    end + s[end..]
        .iter()
        .take_while(|c| c.is_ascii_alphabetic())
        .count()
}

/// `{SIGN}?{DIGIT}*"."{DIGIT}*([Ee]{SIGN}?{DIGIT}+)?`
fn real_len(s: &[u8]) -> usize {
    let mut i = sign_len(s);
    i += s[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if s.get(i) != Some(&b'.') {
        return 0;
    }
    i += 1;
    i += s[i..].iter().take_while(|c| c.is_ascii_digit()).count();
    if matches!(s.get(i), Some(b'e' | b'E')) {
        let mut j = i + 1;
        j += sign_len(&s[j..]);
        let exp = s[j..].iter().take_while(|c| c.is_ascii_digit()).count();
        if exp > 0 {
            i = j + exp;
        }
    }
    i
}

/// Length of `'([^'\\\n]|\\.|'')*'` at the start of `s`, or None when the quote is not closed.
fn quoted_len(s: &[u8]) -> Option<usize> {
    let mut i = 1;
    while i < s.len() {
        match s[i] {
            b'\\' if i + 1 < s.len() => i += 2,
            b'\\' => return None,
            b'\'' if s.get(i + 1) == Some(&b'\'') => i += 2,
            b'\'' => return Some(i + 1),
            _ => i += 1,
        }
    }
    None
}

/// Decodes the inside of a quoted string: `''` and `\'` are a quote, `\b \f \n \r \t`, octal
/// `\ooo` (up to three digits), and a backslash before any other byte stands for that byte.
fn decode_quoted(inner: &[u8]) -> Result<String, String> {
    let mut out = Vec::with_capacity(inner.len());
    let mut i = 0;
    while i < inner.len() {
        let b = inner[i];
        if b == b'\\' {
            i += 1;
            let e = inner[i];
            match e {
                b'b' => out.push(0x08),
                b'f' => out.push(0x0c),
                b'n' => out.push(b'\n'),
                b'r' => out.push(b'\r'),
                b't' => out.push(b'\t'),
                b'0'..=b'7' => {
                    let digits = inner[i..]
                        .iter()
                        .take(3)
                        .take_while(|c| (b'0'..=b'7').contains(*c))
                        .count();
                    // Three octal digits can exceed a byte; C keeps the low 8 bits, and so do we.
                    let value = inner[i..i + digits]
                        .iter()
                        .fold(0u32, |acc, c| (acc << 3) + u32::from(c - b'0'));
                    out.push((value & 0xff) as u8);
                    i += digits - 1;
                }
                other => out.push(other),
            }
        } else if b == b'\'' {
            // The scanner only lets a quote through inside as the first of a doubled pair.
            out.push(b'\'');
            i += 1;
        } else {
            out.push(b);
        }
        i += 1;
    }
    String::from_utf8(out)
        .map_err(|_| "the quoted value is not valid UTF-8 (check its octal escapes)".to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn toks(s: &str) -> Vec<Token> {
        tokenize(s.as_bytes()).unwrap()
    }

    #[test]
    fn names_numbers_and_unquoted_strings() {
        assert_eq!(
            toks("node_id = 5"),
            vec![
                Token::Id("node_id".into()),
                Token::Equals,
                Token::Integer("5".into())
            ]
        );
        assert_eq!(toks("x 5min")[1], Token::Integer("5min".into()));
        assert_eq!(toks("x -1")[1], Token::Integer("-1".into()));
        assert_eq!(toks("x 0x1F")[1], Token::Integer("0x1F".into()));
        assert_eq!(toks("x 1.5")[1], Token::Real("1.5".into()));
        assert_eq!(toks("x .5e3")[1], Token::Real(".5e3".into()));
        assert_eq!(
            toks("x db1.example.com")[1],
            Token::Unquoted("db1.example.com".into())
        );
        assert_eq!(toks("x a.b")[1], Token::Id("a.b".into()));
        assert_eq!(
            toks("x host:5432/x-y")[1],
            Token::Unquoted("host:5432/x-y".into())
        );
    }

    #[test]
    fn comments_end_the_line_outside_quotes_only() {
        assert_eq!(toks("# all comment"), vec![]);
        assert_eq!(toks("a=1# c").len(), 3);
        assert_eq!(toks("a='x # y'")[2], Token::Quoted("x # y".into()));
    }

    #[test]
    fn quoted_strings_decode_every_escape() {
        assert_eq!(toks(r"a 'it''s'")[1], Token::Quoted("it's".into()));
        assert_eq!(toks(r"a 'it\'s'")[1], Token::Quoted("it's".into()));
        assert_eq!(
            toks(r"a '\n\t\\\b\f\r'")[1],
            Token::Quoted("\n\t\\\u{8}\u{c}\r".into())
        );
        assert_eq!(toks(r"a '\101\60x\7'")[1], Token::Quoted("A0x\u{7}".into()));
        assert_eq!(toks(r"a '\q'")[1], Token::Quoted("q".into()));
        assert_eq!(toks("a ''")[1], Token::Quoted(String::new()));
    }

    #[test]
    fn what_no_rule_matches_is_an_error_token() {
        assert_eq!(toks("a /usr/bin")[1], Token::Error("/".into()));
        assert_eq!(toks("a 'open")[1], Token::Error("'".into()));
        assert_eq!(toks("a b@c")[2], Token::Error("@".into()));
        assert_eq!(toks("a é")[1], Token::Id("é".into()));
        assert!(tokenize(br"a '\377'").is_err());
    }
}
