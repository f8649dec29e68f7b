//! Barman's `backup.info` file: a FieldListFile of sorted `key=value` lines, `None` for null,
//! Python literals (`repr`) for structured values such as `tablespaces`.
//!
//! Must not: reject keys it does not know. Every Barman release adds fields (3.13 added
//! `backup_name` handling, 3.14 `encryption`…); a reader that rejects them breaks on upgrade,
//! which is what happened to repmgr. Values are kept raw and interpreted on demand.

use states::Tablespace;
use std::collections::BTreeMap;

/// A parsed backup.info: raw values by key; `None` values are absent.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct BackupInfo {
    fields: BTreeMap<String, String>,
}

impl BackupInfo {
    /// Parses the file's text the way Barman's `FieldListFile.load` does: blank lines and `#`
    /// comments skipped, split at the first `=`, both sides trimmed.
    pub fn parse(text: &str) -> Result<BackupInfo, String> {
        let mut fields = BTreeMap::new();
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            if trimmed.is_empty() || trimmed.starts_with('#') {
                continue;
            }
            let (key, value) = line
                .split_once('=')
                .ok_or_else(|| format!("line {} is not key=value: {trimmed:?}", n + 1))?;
            let value = value.trim();
            if value != "None" {
                fields.insert(key.trim().to_string(), value.to_string());
            }
        }
        if fields.is_empty() {
            return Err("the file holds no key=value lines".to_string());
        }
        Ok(BackupInfo { fields })
    }

    /// The raw value of `key`, or `None` when absent or `None`.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.fields.get(key).map(String::as_str)
    }

    /// `key` as a number; an absent key is `Ok(None)`, a malformed one an error naming it.
    pub fn number<T: std::str::FromStr>(&self, key: &str) -> Result<Option<T>, String> {
        self.get(key)
            .map(|v| {
                v.parse::<T>()
                    .map_err(|_| format!("{key}={v} is not a number"))
            })
            .transpose()
    }

    /// The `tablespaces` list: `[('tbs1', 16400, '/srv/tbs1'), …]` or absent.
    pub fn tablespaces(&self) -> Result<Vec<Tablespace>, String> {
        let Some(raw) = self.get("tablespaces") else {
            return Ok(Vec::new());
        };
        let bad = |why: &str| format!("tablespaces={raw} cannot be read: {why}");
        let PyLit::Seq(items) = parse_literal(raw).map_err(|e| bad(&e))? else {
            return Err(bad("not a list"));
        };
        items
            .into_iter()
            .map(|item| match item {
                PyLit::Seq(t) => match t.as_slice() {
                    [PyLit::Str(name), PyLit::Int(oid), PyLit::Str(location)] => Ok(Tablespace {
                        name: name.clone(),
                        oid: u32::try_from(*oid).map_err(|_| bad("OID out of range"))?,
                        location: location.clone(),
                    }),
                    _ => Err(bad("an entry is not (name, oid, location)")),
                },
                _ => Err(bad("an entry is not a tuple")),
            })
            .collect()
    }
}

/// The subset of Python literals Barman writes with `repr` for the fields pgreplica reads.
#[derive(Clone, Debug, PartialEq)]
enum PyLit {
    None,
    Bool(bool),
    Int(i64),
    Str(String),
    /// A list or a tuple: the difference does not matter to a reader.
    Seq(Vec<PyLit>),
}

/// Parses one Python literal (the whole input).
fn parse_literal(text: &str) -> Result<PyLit, String> {
    let mut p = LitParser {
        chars: text.chars().collect(),
        pos: 0,
    };
    let value = p.value()?;
    p.skip_ws();
    if p.pos != p.chars.len() {
        return Err(format!("unexpected text at offset {}", p.pos));
    }
    Ok(value)
}

struct LitParser {
    chars: Vec<char>,
    pos: usize,
}

impl LitParser {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.pos).copied()
    }

    fn skip_ws(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.pos += 1;
        }
    }

    fn value(&mut self) -> Result<PyLit, String> {
        self.skip_ws();
        match self.peek() {
            Some('[') => self.seq(']'),
            Some('(') => self.seq(')'),
            Some('\'' | '"') => self.string().map(PyLit::Str),
            // Python 2's unicode prefix, written by very old Barman releases.
            Some('u') if matches!(self.chars.get(self.pos + 1), Some('\'' | '"')) => {
                self.pos += 1;
                self.string().map(PyLit::Str)
            }
            Some(c) if c == '-' || c.is_ascii_digit() => self.int(),
            Some(c) if c.is_ascii_alphabetic() => {
                let start = self.pos;
                while self
                    .peek()
                    .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
                {
                    self.pos += 1;
                }
                let word: String = self.chars[start..self.pos].iter().collect();
                match word.as_str() {
                    "None" => Ok(PyLit::None),
                    "True" => Ok(PyLit::Bool(true)),
                    "False" => Ok(PyLit::Bool(false)),
                    _ => Err(format!("unsupported name {word:?}")),
                }
            }
            Some(c) => Err(format!("unexpected {c:?} at offset {}", self.pos)),
            None => Err("unexpected end".to_string()),
        }
    }

    fn seq(&mut self, close: char) -> Result<PyLit, String> {
        self.pos += 1;
        let mut items = Vec::new();
        loop {
            self.skip_ws();
            if self.peek() == Some(close) {
                self.pos += 1;
                return Ok(PyLit::Seq(items));
            }
            items.push(self.value()?);
            self.skip_ws();
            match self.peek() {
                Some(',') => self.pos += 1,
                Some(c) if c == close => {}
                _ => return Err(format!("expected ',' or {close:?} at offset {}", self.pos)),
            }
        }
    }

    fn int(&mut self) -> Result<PyLit, String> {
        let start = self.pos;
        if self.peek() == Some('-') {
            self.pos += 1;
        }
        while self.peek().is_some_and(|c| c.is_ascii_digit()) {
            self.pos += 1;
        }
        // Python 2 longs (`16400L`).
        let digits: String = self.chars[start..self.pos].iter().collect();
        if self.peek() == Some('L') {
            self.pos += 1;
        }
        digits
            .parse()
            .map(PyLit::Int)
            .map_err(|_| format!("bad number {digits:?}"))
    }

    fn string(&mut self) -> Result<String, String> {
        let quote = self.peek().ok_or("unexpected end")?;
        self.pos += 1;
        let mut out = String::new();
        loop {
            let c = self.peek().ok_or("unterminated string")?;
            self.pos += 1;
            if c == quote {
                return Ok(out);
            }
            if c != '\\' {
                out.push(c);
                continue;
            }
            let e = self.peek().ok_or("unterminated escape")?;
            self.pos += 1;
            match e {
                'n' => out.push('\n'),
                't' => out.push('\t'),
                'r' => out.push('\r'),
                '0' => out.push('\0'),
                '\\' | '\'' | '"' => out.push(e),
                'x' => out.push(self.hex(2)?),
                'u' => out.push(self.hex(4)?),
                'U' => out.push(self.hex(8)?),
                other => {
                    // Python keeps unknown escapes verbatim.
                    out.push('\\');
                    out.push(other);
                }
            }
        }
    }

    fn hex(&mut self, len: usize) -> Result<char, String> {
        let digits: String = self
            .chars
            .get(self.pos..self.pos + len)
            .ok_or("short escape")?
            .iter()
            .collect();
        self.pos += len;
        u32::from_str_radix(&digits, 16)
            .ok()
            .and_then(char::from_u32)
            .ok_or_else(|| format!("bad escape \\{digits}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INFO_340: &str =
        include_str!("../../tests/fixtures/barman/3.4.0/backup.info-20261125T150710");
    const INFO_3191: &str =
        include_str!("../../tests/fixtures/barman/3.19.1/20261125T150740-backup.info");
    const INFO_3191_NOTBS: &str =
        include_str!("../../tests/fixtures/barman/3.19.1/20261125T150747-backup.info");

    #[test]
    fn real_340_backup_info() {
        let info = BackupInfo::parse(INFO_340).expect("parses");
        assert_eq!(info.get("status"), Some("DONE"));
        assert_eq!(info.get("compression"), None, "None is absent");
        assert_eq!(info.number::<u32>("version"), Ok(Some(150018)));
        assert_eq!(info.number::<u64>("size"), Ok(Some(23196062)));
        assert_eq!(info.get("systemid"), Some("7712125799867076052"));
        assert_eq!(info.tablespaces(), Ok(vec![crate::barman::fixture_tbs1()]));
        assert!(info
            .get("backup_label")
            .is_some_and(|l| l.contains("START WAL LOCATION")));
    }

    #[test]
    fn real_3191_backup_info_with_newer_keys() {
        let info = BackupInfo::parse(INFO_3191).expect("parses");
        assert_eq!(info.get("backup_name"), Some("named 319"));
        assert_eq!(info.get("parent_backup_id"), None);
        assert_eq!(info.get("encryption"), None);
        assert_eq!(info.get("data_checksums"), Some("off"));
        assert_eq!(info.tablespaces(), Ok(vec![crate::barman::fixture_tbs1()]));
        let none = BackupInfo::parse(INFO_3191_NOTBS).expect("parses");
        assert_eq!(none.tablespaces(), Ok(vec![]));
    }

    #[test]
    fn unknown_keys_and_comments_are_tolerated() {
        let info =
            BackupInfo::parse("# c\n\nfuture_key=[{'a': 1}]\nstatus = DONE\n").expect("parses");
        assert_eq!(info.get("status"), Some("DONE"));
        assert!(BackupInfo::parse("garbage line\n").is_err());
        assert!(BackupInfo::parse("\n").is_err());
    }

    #[test]
    fn tablespace_literals_in_all_their_shapes() {
        let info = |v: &str| BackupInfo::parse(&format!("tablespaces={v}\n")).expect("parses");
        let got = info(r#"[('a b', 1, "/it's"), (u'x\\y', 2L, '/t\xe9\n'), ('z', 3, '/q\'s',),]"#)
            .tablespaces()
            .expect("reads");
        assert_eq!(got[0].location, "/it's");
        assert_eq!(got[0].name, "a b");
        assert_eq!(got[1].name, "x\\y");
        assert_eq!(got[1].oid, 2);
        assert_eq!(got[1].location, "/t\u{e9}\n");
        assert_eq!(got[2].location, "/q's");
        assert_eq!(info("[]").tablespaces(), Ok(vec![]));
        assert!(info("[('a', 'x', '/b')]").tablespaces().is_err());
        assert!(info("[('a', 1, '/b')").tablespaces().is_err());
        assert!(info("{'a': 1}").tablespaces().is_err());
        assert!(info("[('a', -1, '/b')]").tablespaces().is_err());
    }
}
