//! libpq connection strings: parsing (`key=value` and `postgresql://` URIs), rendering with
//! libpq's quoting, and the edits pgreplica makes to them (drop the password, merge, set keys).
//!
//! This module only manipulates strings: it never connects, never reads the environment or a
//! passfile, and never logs. It does not validate key names against libpq's list, because the
//! set grows with each PostgreSQL release and the server is the authority on it.

use std::fmt;

use crate::error::{Error, ErrorKind, Result};

/// A parsed connection string: an ordered list of distinct keys with their values.
///
/// Order is kept as written (later duplicates replace the earlier value in place, as libpq's
/// "last one wins"), so rendering a parsed string gives a stable, recognisable result.
#[derive(Clone, Default, PartialEq, Eq)]
pub struct Conninfo {
    params: Vec<(String, String)>,
}

impl Conninfo {
    /// An empty conninfo.
    pub fn new() -> Conninfo {
        Conninfo::default()
    }

    /// Parses a `key=value` string or a `postgresql://` / `postgres://` URI.
    ///
    /// Errors never quote the input, since it may hold a password.
    pub fn parse(input: &str) -> Result<Conninfo> {
        let trimmed = input.trim_start();
        for scheme in ["postgresql://", "postgres://"] {
            if let Some(rest) = trimmed.strip_prefix(scheme) {
                return parse_uri(rest);
            }
        }
        parse_keyword_value(input)
    }

    /// The value of `key`, if set.
    pub fn get(&self, key: &str) -> Option<&str> {
        self.params
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.as_str())
    }

    /// Sets `key`: replaces its value in place when present, otherwise appends it.
    pub fn set(&mut self, key: &str, value: &str) {
        match self.params.iter_mut().find(|(k, _)| k == key) {
            Some((_, v)) => *v = value.to_string(),
            None => self.params.push((key.to_string(), value.to_string())),
        }
    }

    /// Sets `key` only when it is not present yet.
    pub fn set_default(&mut self, key: &str, value: &str) {
        if self.get(key).is_none() {
            self.set(key, value);
        }
    }

    /// Removes `key`, returning its value.
    pub fn remove(&mut self, key: &str) -> Option<String> {
        let pos = self.params.iter().position(|(k, _)| k == key)?;
        Some(self.params.remove(pos).1)
    }

    /// Keeps only the pairs for which `keep(key, value)` is true.
    pub fn retain(&mut self, mut keep: impl FnMut(&str, &str) -> bool) {
        self.params.retain(|(k, v)| keep(k, v));
    }

    /// Applies every pair of `other` over `self` (`other` wins; new keys are appended in
    /// `other`'s order).
    pub fn merge(&mut self, other: &Conninfo) {
        for (k, v) in other.iter() {
            self.set(k, v);
        }
    }

    /// Fills in the pairs of `defaults` whose keys `self` lacks; `self` wins.
    pub fn merge_defaults(&mut self, defaults: &Conninfo) {
        for (k, v) in defaults.iter() {
            self.set_default(k, v);
        }
    }

    /// The pairs, in order.
    pub fn iter(&self) -> impl Iterator<Item = (&str, &str)> {
        self.params.iter().map(|(k, v)| (k.as_str(), v.as_str()))
    }

    /// Whether no key is set.
    pub fn is_empty(&self) -> bool {
        self.params.is_empty()
    }

    /// A copy without `password`, for storing, logging and `clone status`.
    pub fn without_password(&self) -> Conninfo {
        let mut copy = self.clone();
        copy.remove("password");
        copy
    }

    /// The `key=value …` form, values quoted where libpq needs it.
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (k, v) in self.iter() {
            if !out.is_empty() {
                out.push(' ');
            }
            out.push_str(k);
            out.push('=');
            out.push_str(&quote_value(v));
        }
        out
    }
}

impl fmt::Display for Conninfo {
    /// Renders the string; use [`Conninfo::without_password`] first for anything an operator
    /// may see.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render())
    }
}

impl fmt::Debug for Conninfo {
    /// Debug output hides the password so a stray `{:?}` cannot leak it.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut list = f.debug_map();
        for (k, v) in self.iter() {
            if k == "password" {
                list.entry(&k, &"********");
            } else {
                list.entry(&k, &v);
            }
        }
        list.finish()
    }
}

/// Quotes one value as libpq reads it back: single quotes when the value is empty or holds
/// whitespace, `'` or `\`, with `'` and `\` backslash-escaped inside.
pub fn quote_value(value: &str) -> String {
    let needs_quotes =
        value.is_empty() || value.chars().any(|c| is_space(c) || c == '\'' || c == '\\');
    if !needs_quotes {
        return value.to_string();
    }
    let mut out = String::with_capacity(value.len() + 2);
    out.push('\'');
    for c in value.chars() {
        if c == '\'' || c == '\\' {
            out.push('\\');
        }
        out.push(c);
    }
    out.push('\'');
    out
}

/// Renders `input` without its password, for messages; a string that does not parse is
/// replaced by a placeholder rather than shown, since it may hold a password.
pub fn redact(input: &str) -> String {
    match Conninfo::parse(input) {
        Ok(c) => c.without_password().render(),
        Err(_) => "<unparsable conninfo>".to_string(),
    }
}

fn syntax_error(what: &str) -> Error {
    Error::new(
        ErrorKind::Config,
        format!("invalid connection string: {what}"),
    )
    .hint(
        "use key=value pairs (quote values containing spaces with single quotes) or a \
         postgresql:// URI",
    )
}

/// C's `isspace`, which libpq uses to end unquoted values (Rust's ASCII whitespace lacks `\v`).
fn is_space(c: char) -> bool {
    matches!(c, ' ' | '\t' | '\n' | '\x0b' | '\x0c' | '\r')
}

/// libpq's `conninfo_parse`: whitespace separates pairs, whitespace may surround `=`, a value
/// is single-quoted or runs to the next whitespace, and `\` escapes the next character in both.
fn parse_keyword_value(input: &str) -> Result<Conninfo> {
    let mut info = Conninfo::new();
    let mut chars = input.chars().peekable();
    loop {
        while chars.next_if(|c| is_space(*c)).is_some() {}
        if chars.peek().is_none() {
            return Ok(info);
        }
        let mut key = String::new();
        while let Some(c) = chars.next_if(|c| *c != '=' && !is_space(*c)) {
            key.push(c);
        }
        while chars.next_if(|c| is_space(*c)).is_some() {}
        if chars.next() != Some('=') {
            return Err(syntax_error(&format!("missing \"=\" after \"{key}\"")));
        }
        // libpq skips whitespace after "=" too, so "host= port=5" sets host to "port=5";
        // reproducing that keeps us reading strings exactly as PostgreSQL will.
        while chars.next_if(|c| is_space(*c)).is_some() {}
        let mut value = String::new();
        if chars.next_if_eq(&'\'').is_some() {
            loop {
                match chars.next() {
                    None => {
                        return Err(syntax_error(&format!(
                            "unterminated quoted value for \"{key}\""
                        )))
                    }
                    Some('\\') => {
                        if let Some(c) = chars.next() {
                            value.push(c);
                        }
                    }
                    Some('\'') => break,
                    Some(c) => value.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !is_space(*c)) {
                if c == '\\' {
                    if let Some(escaped) = chars.next() {
                        value.push(escaped);
                    }
                } else {
                    value.push(c);
                }
            }
        }
        info.set(&key, &value);
    }
}

/// libpq's `conninfo_uri_parse` for
/// `[user[:password]@][host[:port][,host[:port]…]][/dbname][?key=value&…]` (scheme stripped).
fn parse_uri(rest: &str) -> Result<Conninfo> {
    let mut info = Conninfo::new();
    let (before_query, query) = match rest.split_once('?') {
        Some((b, q)) => (b, Some(q)),
        None => (rest, None),
    };
    let (authority, dbname) = match before_query.split_once('/') {
        Some((a, d)) => (a, Some(d)),
        None => (before_query, None),
    };
    // The user part ends at the last "@": a password may not contain a raw "@", but a host
    // never does, so splitting at the last one is what libpq effectively accepts.
    let hostspec = match authority.rsplit_once('@') {
        Some((userspec, hostspec)) => {
            let (user, password) = match userspec.split_once(':') {
                Some((u, p)) => (u, Some(p)),
                None => (userspec, None),
            };
            if !user.is_empty() {
                info.set("user", &percent_decode(user)?);
            }
            if let Some(p) = password {
                info.set("password", &percent_decode(p)?);
            }
            hostspec
        }
        None => authority,
    };
    if !hostspec.is_empty() {
        let mut hosts = Vec::new();
        let mut ports = Vec::new();
        for spec in hostspec.split(',') {
            let (host, port) = split_host_port(spec)?;
            hosts.push(percent_decode(host)?);
            ports.push(percent_decode(port.unwrap_or(""))?);
        }
        if hosts.iter().any(|h| !h.is_empty()) {
            info.set("host", &hosts.join(","));
        }
        if ports.iter().any(|p| !p.is_empty()) {
            info.set("port", &ports.join(","));
        }
    }
    if let Some(db) = dbname {
        if !db.is_empty() {
            info.set("dbname", &percent_decode(db)?);
        }
    }
    for pair in query.into_iter().flat_map(|q| q.split('&')) {
        if pair.is_empty() {
            continue;
        }
        let (k, v) = pair
            .split_once('=')
            .ok_or_else(|| syntax_error("URI query parameter without \"=\""))?;
        let (k, v) = (percent_decode(k)?, percent_decode(v)?);
        // libpq's JDBC-compatible spelling.
        if k == "ssl" && v == "true" {
            info.set("sslmode", "require");
        } else {
            info.set(&k, &v);
        }
    }
    Ok(info)
}

/// Splits `host:port` or `[v6addr]:port`.
fn split_host_port(spec: &str) -> Result<(&str, Option<&str>)> {
    if let Some(rest) = spec.strip_prefix('[') {
        let (host, after) = rest
            .split_once(']')
            .ok_or_else(|| syntax_error("unterminated \"[\" around an IPv6 address in URI"))?;
        return match after {
            "" => Ok((host, None)),
            _ => match after.strip_prefix(':') {
                Some(port) => Ok((host, Some(port))),
                None => Err(syntax_error("unexpected text after \"]\" in URI")),
            },
        };
    }
    Ok(match spec.split_once(':') {
        Some((h, p)) => (h, Some(p)),
        None => (spec, None),
    })
}

fn percent_decode(s: &str) -> Result<String> {
    let bytes = s.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'%' {
            let hex = bytes
                .get(i + 1..i + 3)
                .and_then(|h| std::str::from_utf8(h).ok())
                .and_then(|h| u8::from_str_radix(h, 16).ok())
                .ok_or_else(|| syntax_error("invalid percent-encoding in URI"))?;
            if hex == 0 {
                return Err(syntax_error("forbidden %00 in URI"));
            }
            out.push(hex);
            i += 3;
        } else {
            out.push(bytes[i]);
            i += 1;
        }
    }
    String::from_utf8(out).map_err(|_| syntax_error("percent-encoding in URI is not UTF-8"))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(c: &Conninfo) -> Vec<(&str, &str)> {
        c.iter().collect()
    }

    #[test]
    fn parses_plain_pairs_with_spaces_around_equals() {
        let c = Conninfo::parse("  host=db1 port = 5432\tuser= repmgr dbname =repmgr ").unwrap();
        assert_eq!(
            pairs(&c),
            [
                ("host", "db1"),
                ("port", "5432"),
                ("user", "repmgr"),
                ("dbname", "repmgr")
            ]
        );
    }

    #[test]
    fn parses_quoted_values_and_escapes() {
        let c =
            Conninfo::parse(r"password='it\'s a \\secret' application_name='' host=a\ b").unwrap();
        assert_eq!(c.get("password"), Some(r"it's a \secret"));
        assert_eq!(c.get("application_name"), Some(""));
        assert_eq!(c.get("host"), Some("a b"));
    }

    #[test]
    fn later_duplicate_wins_in_place() {
        let c = Conninfo::parse("host=a port=1 host=b").unwrap();
        assert_eq!(pairs(&c), [("host", "b"), ("port", "1")]);
    }

    #[test]
    fn value_after_equals_and_space_is_read_like_libpq() {
        let c = Conninfo::parse("host= port=5").unwrap();
        assert_eq!(pairs(&c), [("host", "port=5")]);
        let c = Conninfo::parse("host=").unwrap();
        assert_eq!(c.get("host"), Some(""));
    }

    #[test]
    fn syntax_errors_are_config_errors_and_hide_the_value() {
        let e = Conninfo::parse("host=a password='s3cret").unwrap_err();
        assert_eq!(e.kind, ErrorKind::Config);
        assert!(!e.message.contains("s3cret"), "{}", e.message);
        let e = Conninfo::parse("host=a s3cret").unwrap_err();
        assert!(e.message.contains("missing \"=\""), "{}", e.message);
        assert!(Conninfo::parse("postgresql://h/db?sslmode").is_err());
        assert!(Conninfo::parse("postgresql://h%zz/db").is_err());
    }

    #[test]
    fn renders_with_quotes_only_where_needed() {
        let mut c = Conninfo::new();
        c.set("host", "db1");
        c.set("application_name", "");
        c.set("options", "-c search_path=x");
        c.set("password", r"a'b\c");
        assert_eq!(
            c.render(),
            r"host=db1 application_name='' options='-c search_path=x' password='a\'b\\c'"
        );
    }

    #[test]
    fn render_parse_round_trips_odd_values() {
        let odd = [
            "",
            " ",
            "'",
            "\\",
            "\\'",
            "a b\tc\nd",
            "x=y",
            "'quoted'",
            "trailing\\",
            "ünïcödé",
            "#hash",
        ];
        let mut c = Conninfo::new();
        for (i, v) in odd.iter().enumerate() {
            c.set(&format!("k{i}"), v);
        }
        let back = Conninfo::parse(&c.render()).unwrap();
        assert_eq!(back, c);
    }

    #[test]
    fn parses_uris() {
        let c = Conninfo::parse(
            "postgresql://rep%40user:p%3Ass@db1.example:5433/my%20db?sslmode=verify-full&connect_timeout=5",
        )
        .unwrap();
        assert_eq!(
            pairs(&c),
            [
                ("user", "rep@user"),
                ("password", "p:ss"),
                ("host", "db1.example"),
                ("port", "5433"),
                ("dbname", "my db"),
                ("sslmode", "verify-full"),
                ("connect_timeout", "5"),
            ]
        );
    }

    #[test]
    fn parses_uri_variants() {
        let c = Conninfo::parse("postgres://").unwrap();
        assert!(c.is_empty());
        let c = Conninfo::parse("postgresql://[::1]:5432,db2/postgres?ssl=true").unwrap();
        assert_eq!(
            pairs(&c),
            [
                ("host", "::1,db2"),
                ("port", "5432,"),
                ("dbname", "postgres"),
                ("sslmode", "require")
            ]
        );
        let c = Conninfo::parse("postgresql://%2Fvar%2Frun%2Fpostgresql/db").unwrap();
        assert_eq!(c.get("host"), Some("/var/run/postgresql"));
        let c = Conninfo::parse("postgresql://u@/db?host=/tmp&port=5501").unwrap();
        assert_eq!(
            pairs(&c),
            [
                ("user", "u"),
                ("dbname", "db"),
                ("host", "/tmp"),
                ("port", "5501")
            ]
        );
    }

    #[test]
    fn without_password_and_debug_hide_the_secret() {
        let c = Conninfo::parse("host=a password=s3cret user=u").unwrap();
        assert_eq!(c.without_password().render(), "host=a user=u");
        assert!(!format!("{c:?}").contains("s3cret"));
        assert_eq!(
            redact("postgresql://u:s3cret@h/d"),
            "user=u host=h dbname=d"
        );
        assert_eq!(redact("password='s3cret"), "<unparsable conninfo>");
    }

    #[test]
    fn merge_helpers() {
        let mut base = Conninfo::parse("host=a port=1").unwrap();
        base.merge(&Conninfo::parse("port=2 user=u").unwrap());
        assert_eq!(base.render(), "host=a port=2 user=u");
        base.merge_defaults(&Conninfo::parse("host=z dbname=d").unwrap());
        assert_eq!(base.render(), "host=a port=2 user=u dbname=d");
        base.set_default("user", "other");
        assert_eq!(base.get("user"), Some("u"));
        assert_eq!(base.remove("port").as_deref(), Some("2"));
        base.retain(|k, _| k != "dbname");
        assert_eq!(base.render(), "host=a user=u");
    }
}
