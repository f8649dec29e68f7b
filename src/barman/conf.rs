//! Barman's configuration read the way Barman reads it, for the one thing pgreplica needs from
//! it: where a server's catalogue lies ([`ServerDirs`]) without starting Barman (a Python process
//! costs 0.4–0.8 s on the host).
//!
//! Barman 3.4 to 3.19 (`barman/config.py`) read their files with Python's
//! `ConfigParser(strict=False)`: the main file, then `configuration_files_directory`'s `*.conf` in
//! sorted order, later values winning; option names are case-insensitive; `%(key)s` is
//! interpolated (`BasicInterpolation`), a server section's values against the server's settings
//! computed so far (`name`, `barman_home`, then each directory in Barman's key order); surrounding
//! quotes are removed; `None` is null. The defaults are `backup_directory =
//! %(barman_home)s/%(name)s`, `basebackups_directory = %(backup_directory)s/base`, `wals_directory
//! = %(backup_directory)s/wals`.
//!
//! Must not: guess. Anything this reader does not reproduce exactly (a syntax ConfigParser would
//! reject, an interpolation of another setting, configuration models, a relative or cloud
//! directory, a null) is an `Err` saying why, and the caller asks Barman instead.

use std::collections::BTreeMap;

use super::ServerDirs;

/// ConfigParser's section of defaults, seen from every section.
const DEFAULT_SECTION: &str = "DEFAULT";

/// The merged configuration: section → lower-cased option → raw value, later files winning.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct BarmanConf {
    sections: BTreeMap<String, BTreeMap<String, String>>,
}

impl BarmanConf {
    /// Reads one file's text into the configuration (ConfigParser's `read`): `[section]`
    /// headers, `key = value` or `key: value`, full-line `#`/`;` comments, indented
    /// continuation lines. What ConfigParser would refuse is an error naming the line.
    pub(super) fn read(&mut self, name: &str, text: &str) -> Result<(), String> {
        let mut section: Option<String> = None;
        let mut last_key: Option<String> = None;
        for (n, line) in text.lines().enumerate() {
            let trimmed = line.trim();
            let at = || format!("{name}:{}", n + 1);
            if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
                // A blank line inside a value would continue it (empty_lines_in_values): a
                // continuation after it is refused below, so ending the value here is exact
                // for what is read.
                if trimmed.is_empty() {
                    last_key = None;
                }
                continue;
            }
            if line.starts_with(char::is_whitespace) {
                let (Some(sec), Some(key)) = (&section, &last_key) else {
                    return Err(format!("{}: an indented line continues no value", at()));
                };
                let value = self
                    .sections
                    .get_mut(sec)
                    .and_then(|s| s.get_mut(key))
                    .ok_or_else(|| format!("{}: an indented line continues no value", at()))?;
                value.push('\n');
                value.push_str(trimmed);
                continue;
            }
            if let Some(rest) = line.strip_prefix('[') {
                let name = rest
                    .rfind(']')
                    .map(|end| &rest[..end])
                    .filter(|n| !n.is_empty())
                    .ok_or_else(|| format!("{}: a section header without \"]\"", at()))?;
                self.sections.entry(name.to_string()).or_default();
                section = Some(name.to_string());
                last_key = None;
                continue;
            }
            let Some(sec) = &section else {
                return Err(format!("{}: an option before any [section]", at()));
            };
            let split = line
                .find(['=', ':'])
                .ok_or_else(|| format!("{}: not \"key = value\": {trimmed:?}", at()))?;
            let key = line[..split].trim().to_lowercase();
            if key.is_empty() {
                return Err(format!("{}: an option without a name", at()));
            }
            let value = line[split + 1..].trim().to_string();
            if let Some(options) = self.sections.get_mut(sec) {
                options.insert(key.clone(), value);
            }
            last_key = Some(key);
        }
        Ok(())
    }

    /// The raw value of `key` in `section`, else in `[DEFAULT]`.
    fn raw(&self, section: &str, key: &str) -> Option<&str> {
        [section, DEFAULT_SECTION]
            .iter()
            .find_map(|s| self.sections.get(*s).and_then(|o| o.get(key)))
            .map(String::as_str)
    }

    /// `[barman] configuration_files_directory`, `~/` expanded with `home`, when set.
    pub(super) fn configuration_files_directory(
        &self,
        home: &str,
    ) -> Result<Option<String>, String> {
        let Some(dir) = self.global("configuration_files_directory")? else {
            return Ok(None);
        };
        Ok(Some(match dir.strip_prefix("~/") {
            Some(rest) => format!("{}/{rest}", home.trim_end_matches('/')),
            None => dir,
        }))
    }

    /// Whether `[barman]` is the same in both: Barman stops (FATAL) when a file of
    /// configuration_files_directory changes it.
    pub(super) fn same_global_section(&self, other: &BarmanConf) -> bool {
        self.sections.get("barman") == other.sections.get("barman")
    }

    /// `[barman] barman_home`, required: Barman has no default for it.
    pub(super) fn barman_home(&self) -> Result<String, String> {
        let home = self
            .global("barman_home")?
            .ok_or("[barman] sets no barman_home")?;
        absolute("barman_home", home)
    }

    /// An option of `[barman]`, interpolated against that section and `[DEFAULT]` as
    /// `Config.get` does; `None` when absent or null.
    fn global(&self, key: &str) -> Result<Option<String>, String> {
        if !self.sections.contains_key("barman") {
            return Err("the configuration has no [barman] section".into());
        }
        let Some(raw) = self.raw("barman", key) else {
            return Ok(None);
        };
        let value = self.interpolate(raw, &|name| match self.raw("barman", name) {
            Some(v) => Ok(v.to_string()),
            None => Err(format!("[barman] {key} names %({name})s, which is not set")),
        })?;
        Ok(unquote_or_null(&value))
    }

    /// The catalogue directories of server `server`, as `ServerConfig` computes them.
    pub(super) fn server_dirs(&self, server: &str) -> Result<ServerDirs, String> {
        if server == "barman" || server == DEFAULT_SECTION || !self.sections.contains_key(server) {
            return Err(format!("the configuration has no [{server}] section"));
        }
        // Barman ≥ 3.10 can switch a server's settings to a model at run time (`barman
        // config-switch`): what the files say is then not what Barman uses.
        if let Some((name, _)) = self.sections.iter().find(|(_, o)| o.contains_key("model")) {
            return Err(format!("section [{name}] is a configuration model"));
        }
        let home = self.barman_home()?;
        // The settings computed so far, in Barman's key order: what `%(…)s` may name.
        let mut vars: Vec<(&str, String)> =
            vec![("name", server.to_string()), ("barman_home", home)];
        for (key, default) in [
            ("backup_directory", "%(barman_home)s/%(name)s"),
            ("basebackups_directory", "%(backup_directory)s/base"),
            ("wals_directory", "%(backup_directory)s/wals"),
        ] {
            // A server's directories are not inherited from [barman]; an explicit null or
            // empty value would leave it unset, which Barman then refuses.
            let raw = self.raw(server, key).unwrap_or(default);
            let value = self.interpolate(raw, &|name| {
                vars.iter()
                    .find(|(k, _)| *k == name)
                    .map(|(_, v)| v.clone())
                    .ok_or_else(|| {
                        format!(
                            "[{server}] {key} names %({name})s, which pgreplica does not compute"
                        )
                    })
            })?;
            let value =
                unquote_or_null(&value).ok_or(format!("[{server}] {key} is empty or None"))?;
            if value.contains("://") {
                return Err(format!("[{server}] {key} is in the cloud ({value})"));
            }
            vars.push((key, absolute(key, value)?));
        }
        let get = |k: &str| {
            vars.iter()
                .find(|(n, _)| *n == k)
                .map(|(_, v)| v.clone())
                .unwrap_or_default()
        };
        Ok(ServerDirs {
            backup_directory: get("backup_directory"),
            basebackups_directory: get("basebackups_directory"),
            wals_directory: get("wals_directory"),
            backup_method: None,
            backup_compression: None,
        })
    }

    /// BasicInterpolation of `raw`: `%%` is `%`, `%(name)s` is `lookup(name)` (itself
    /// interpolated, ten levels deep at most, as ConfigParser allows).
    fn interpolate(
        &self,
        raw: &str,
        lookup: &dyn Fn(&str) -> Result<String, String>,
    ) -> Result<String, String> {
        self.interpolate_at(raw, lookup, 0)
    }

    fn interpolate_at(
        &self,
        raw: &str,
        lookup: &dyn Fn(&str) -> Result<String, String>,
        depth: usize,
    ) -> Result<String, String> {
        if depth > 10 {
            return Err(format!("interpolation deeper than 10 levels in {raw:?}"));
        }
        let mut out = String::new();
        let mut rest = raw;
        while let Some(at) = rest.find('%') {
            out.push_str(&rest[..at]);
            rest = &rest[at..];
            if let Some(after) = rest.strip_prefix("%%") {
                out.push('%');
                rest = after;
            } else if let Some(after) = rest.strip_prefix("%(") {
                let (name, after) = after
                    .split_once(")s")
                    .ok_or_else(|| format!("a bad interpolation in {raw:?}"))?;
                let value = lookup(&name.to_lowercase())?;
                out.push_str(&self.interpolate_at(&value, lookup, depth + 1)?);
                rest = after;
            } else {
                return Err(format!("a lone \"%\" in {raw:?}"));
            }
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// `Config.get`'s last steps: `none` (any case) is null, surrounding matching quotes go. Empty is
/// null too (`ServerConfig` turns "" into None).
fn unquote_or_null(value: &str) -> Option<String> {
    if value.eq_ignore_ascii_case("none") {
        return None;
    }
    let unquoted = ['"', '\'']
        .iter()
        .find_map(|q| {
            value
                .strip_prefix(*q)
                .and_then(|v| v.strip_suffix(*q))
                .filter(|_| value.len() >= 2)
        })
        .unwrap_or(value);
    (!unquoted.is_empty()).then(|| unquoted.to_string())
}

/// A directory Barman would resolve against its working directory is not trusted.
fn absolute(key: &str, value: String) -> Result<String, String> {
    if value.starts_with('/') && !value.contains('\n') {
        Ok(value)
    } else {
        Err(format!("{key} = {value:?} is not an absolute path"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conf(files: &[&str]) -> BarmanConf {
        let mut c = BarmanConf::default();
        for (i, text) in files.iter().enumerate() {
            c.read(&format!("f{i}"), text).expect("parses");
        }
        c
    }

    #[test]
    fn defaults_as_barman_computes_them() {
        let c = conf(&[
            "[barman]\nbarman_home = /var/lib/barman\nconfiguration_files_directory = ~/conf.d\n\n[pg]\ndescription = x\n",
        ]);
        let d = c.server_dirs("pg").expect("dirs");
        assert_eq!(d.backup_directory, "/var/lib/barman/pg");
        assert_eq!(d.basebackups_directory, "/var/lib/barman/pg/base");
        assert_eq!(d.wals_directory, "/var/lib/barman/pg/wals");
        assert_eq!(
            c.configuration_files_directory("/home/b/").expect("ok"),
            Some("/home/b/conf.d".into())
        );
        assert!(c
            .server_dirs("other")
            .expect_err("no section")
            .contains("[other]"));
        assert!(c.server_dirs("barman").is_err());
    }

    #[test]
    fn later_files_win_and_interpolation_follows_configparser() {
        let c = conf(&[
            "[barman]\nBARMAN_HOME: '/srv/%(sub)s'\nsub = bm\n[DEFAULT]\nx = 1\n",
            "# a comment\n; another\n[pg]\nbackup_directory = %(barman_home)s/custom/%(name)s\n  \
             \nbasebackups_directory = \"/b/100%%\"\n",
            "[pg]\nwals_directory = %(backup_directory)s/w\n",
        ]);
        let d = c.server_dirs("pg").expect("dirs");
        assert_eq!(d.backup_directory, "/srv/bm/custom/pg");
        assert_eq!(d.basebackups_directory, "/b/100%");
        assert_eq!(d.wals_directory, "/srv/bm/custom/pg/w");
    }

    #[test]
    fn what_is_not_reproduced_exactly_is_refused() {
        let refused = |text: &str| {
            let mut c = BarmanConf::default();
            c.read("f", text)
                .and_then(|()| c.server_dirs("pg"))
                .expect_err(text)
        };
        let base = "[barman]\nbarman_home = /h\n";
        assert!(refused("x = 1\n").contains("f:1: an option before any [section]"));
        assert!(refused(&format!("{base}[pg]\nnot an option\n")).contains("f:4"));
        assert!(
            refused(&format!("{base}[pg]\nbackup_directory = %(path_prefix)s\n"))
                .contains("%(path_prefix)s")
        );
        assert!(refused(&format!("{base}[pg]\nbackup_directory = None\n")).contains("None"));
        assert!(refused(&format!("{base}[pg]\nbackup_directory = rel\n")).contains("absolute"));
        assert!(
            refused(&format!("{base}[pg]\nbasebackups_directory = s3://b/x\n")).contains("cloud")
        );
        assert!(refused(&format!("{base}[pg]\n[pg:m]\nmodel = true\n")).contains("model"));
        assert!(refused("[barman]\nlog_level = INFO\n[pg]\n").contains("barman_home"));
        assert!(refused("[pg]\n").contains("[barman]"));
        assert!(refused(&format!("{base}[pg]\nbackup_directory = 5%\n")).contains("lone"));
        assert!(
            refused(&format!("{base}[pg]\nbackup_directory = /a\n  /b\n")).contains("absolute")
        );
    }
}
