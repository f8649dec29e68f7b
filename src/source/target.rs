//! Where and how to connect to the source (or upstream) node, resolved as libpq resolves it:
//! `-h -p -U` first, then the keywords of `-d` (a conninfo or URI), then libpq's environment
//! variables (`PGHOST`, `PGSSLMODE`, …), then libpq's defaults. Every keyword is checked against
//! [`keywords`](super::keywords): honoured ones are validated here (libpq's own words for a bad
//! value), refused ones stop the clone with the reason, unknown ones are refused as libpq
//! refuses them. Nothing is dropped.
//!
//! A [`Target`] never holds a password: [`Target::conninfo`] is what the store keeps and what
//! `primary_conninfo` is built from.

use std::path::{Path, PathBuf};
use std::time::Duration;

use states::SourceConn;

use super::keywords::{keyword, Use, KEYWORDS};
use crate::conninfo::Conninfo;
use crate::error::{Error, ErrorKind, Result};

/// How long a connection attempt may take when `connect_timeout` is not given.
pub const DEFAULT_CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Keywords whose value is a file that the standby's PostgreSQL (whose working directory is
/// its data directory) opens too: kept as absolute paths.
const FILE_KEYWORDS: [&str; 6] = [
    "passfile",
    "sslcert",
    "sslkey",
    "sslrootcert",
    "sslcrl",
    "sslcrldir",
];

/// Where and as whom to connect, with every other keyword in force; never a password.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host name, IP address, or Unix socket directory (starting with `/`); `hostaddr` when
    /// only that was given.
    pub host: String,
    /// The IP address to connect to instead of resolving `host` (libpq's `hostaddr`); `host`
    /// then only names the server, for TLS verification.
    pub hostaddr: Option<String>,
    /// TCP port (or socket file suffix).
    pub port: u16,
    /// Database user.
    pub user: String,
    /// Database name.
    pub dbname: String,
    /// The other keywords in force, validated, in the order given (`-d` first, then the
    /// environment).
    settings: Conninfo,
    /// The environment variables the settings above came from, for messages.
    from_env: Vec<(&'static str, &'static str)>,
}

impl Target {
    /// Resolves `-h -p -U -d` (where `-d` may itself be a conninfo or URI) with libpq's
    /// environment variables and defaults. A refused or unknown keyword, or a bad value, is a
    /// configuration error (exit 1).
    pub fn resolve(conn: &SourceConn) -> Result<Target> {
        let given = given_conninfo(conn.dbname.as_deref())?;
        let mut address = Conninfo::new();
        let mut settings = Conninfo::new();
        for (name, value) in given.iter() {
            let keyword = checked_keyword(name, None)?;
            match keyword.usage {
                Use::Address => address.set(name, value),
                // Taken out before the request is recorded; a recorded conninfo has none.
                Use::Password => {}
                _ => settings.set(name, value),
            }
        }
        let mut cli = |name: &str, value: Option<String>| {
            if let Some(value) = value {
                address.set(name, &value);
            }
        };
        cli("host", conn.host.clone());
        cli("port", conn.port.map(|p| p.to_string()));
        cli("user", conn.user.clone());
        let mut from_env = Vec::new();
        for keyword in KEYWORDS {
            let Some(var) = keyword.env else { continue };
            let known = address.get(keyword.name).is_some() || settings.get(keyword.name).is_some();
            if known || keyword.usage == Use::Password {
                continue;
            }
            let Some(value) = env(var) else { continue };
            checked_keyword(keyword.name, Some(var))?;
            if keyword.usage == Use::Address {
                address.set(keyword.name, &value);
            } else {
                settings.set(keyword.name, &value);
                from_env.push((keyword.name, var));
            }
        }
        // libpq's deprecated PGREQUIRESSL: 1 means sslmode=require, 0 prefer.
        if settings.get("sslmode").is_none() {
            if let Some(value) = env("PGREQUIRESSL") {
                let mode = if value.starts_with('1') {
                    "require"
                } else {
                    "prefer"
                };
                settings.set("sslmode", mode);
                from_env.push(("sslmode", "PGREQUIRESSL"));
            }
        }
        for (name, value) in settings.clone().iter() {
            check_value(name, value).map_err(|e| origin(e, name, &from_env))?;
            if FILE_KEYWORDS.contains(&name) && !(name == "sslrootcert" && value == "system") {
                settings.set(name, &absolute(value)?);
            }
        }
        let strong = matches!(
            settings.get("sslmode"),
            Some("require" | "verify-ca" | "verify-full")
        );
        if settings.get("sslnegotiation") == Some("direct") && !strong {
            return Err(Error::new(
                ErrorKind::Config,
                format!(
                    "weak sslmode \"{}\" may not be used with sslnegotiation=direct (use \"require\", \"verify-ca\", or \"verify-full\")",
                    settings.get("sslmode").unwrap_or("prefer")
                ),
            )
            .hint("set sslmode=require (or stronger) with sslnegotiation=direct, or leave sslnegotiation out"));
        }
        let hostaddr = address.get("hostaddr").map(str::to_string);
        for name in ["host", "hostaddr", "port"] {
            if address.get(name).is_some_and(|v| v.contains(',')) {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!(
                        "several values for \"{name}\" in the source node's connection settings"
                    ),
                )
                .hint("pgreplica clones from one source node: give one host and port (-h, -p)"));
            }
        }
        if let Some(addr) = &hostaddr {
            if addr.parse::<std::net::IpAddr>().is_err() {
                return Err(Error::new(
                    ErrorKind::Config,
                    format!("could not parse network address \"{addr}\" (hostaddr)"),
                )
                .hint("hostaddr takes an IP address; give a host name with host= or -h"));
            }
        }
        let host = address
            .get("host")
            .map(str::to_string)
            .or_else(|| hostaddr.clone())
            .unwrap_or_else(|| "/var/run/postgresql".to_string());
        let port = match address.get("port") {
            Some(text) => text.parse().map_err(|_| {
                Error::new(
                    ErrorKind::Config,
                    format!("invalid integer value \"{text}\" for connection option \"port\""),
                )
                .hint("give the source node's port as a number, e.g. -p 5432")
            })?,
            None => 5432,
        };
        let user = address
            .get("user")
            .map(str::to_string)
            .unwrap_or_else(os_user_name);
        let dbname = address
            .get("dbname")
            .map(str::to_string)
            .unwrap_or_else(|| user.clone());
        Ok(Target {
            host,
            hostaddr,
            port,
            user,
            dbname,
            settings,
            from_env,
        })
    }

    /// The value of setting `name` (a keyword other than host, hostaddr, port, user, dbname
    /// and password), if in force.
    pub fn setting(&self, name: &str) -> Option<&str> {
        self.settings.get(name)
    }

    /// Whether setting `name` came from its environment variable rather than `-d`.
    pub fn from_env(&self, name: &str) -> bool {
        self.from_env.iter().any(|(n, _)| *n == name)
    }

    /// `sslmode=verify-full` for messages (`sslmode=verify-full (from PGSSLMODE)`, or
    /// `sslmode=prefer (the default)` when not set): the setting as in force.
    pub fn sslmode_shown(&self) -> String {
        match self.setting("sslmode") {
            Some(mode) => format!(
                "sslmode={mode}{}",
                match self.from_env.iter().find(|(n, _)| *n == "sslmode") {
                    Some((_, var)) => format!(" (from {var})"),
                    None => String::new(),
                }
            ),
            None => "sslmode=prefer (the default)".to_string(),
        }
    }

    /// `name` for messages, with the environment variable it came from: `sslmode`, or
    /// `sslmode (from PGSSLMODE)`.
    pub fn setting_origin(&self, name: &str) -> String {
        match self.from_env.iter().find(|(n, _)| *n == name) {
            Some((_, var)) => format!("{name} (from {var})"),
            None => name.to_string(),
        }
    }

    /// The conninfo of this target, without any password: host, hostaddr, port, user, dbname
    /// and every other keyword in force. What the store keeps and what `primary_conninfo` is
    /// built from.
    pub fn conninfo(&self) -> String {
        let mut conninfo = Conninfo::new();
        conninfo.set("host", &self.host);
        if let Some(hostaddr) = &self.hostaddr {
            conninfo.set("hostaddr", hostaddr);
        }
        conninfo.set("port", &self.port.to_string());
        conninfo.set("user", &self.user);
        conninfo.set("dbname", &self.dbname);
        conninfo.merge(&self.settings);
        conninfo.render()
    }

    /// `hostaddr` and every keyword in force but the address, user, database and password:
    /// what another libpq program (pg_basebackup) needs beside `-h -p -U`.
    pub fn libpq_options(&self) -> Conninfo {
        let mut options = Conninfo::new();
        if let Some(hostaddr) = &self.hostaddr {
            options.set("hostaddr", hostaddr);
        }
        options.merge(&self.settings);
        options
    }

    /// The TLS keywords in force (`ssl*`, `channel_binding`, `gssencmode`): what an upstream
    /// conninfo from `repmgr.nodes` lacks is filled in from these, so that the standby and the
    /// slot's connection reach the upstream as securely as pgreplica reached the source.
    pub fn tls_conninfo(&self) -> Conninfo {
        let mut tls = self.settings.clone();
        tls.retain(|name, _| is_tls_keyword(name));
        tls
    }

    /// `host=… port=… user=… dbname=…` (and `sslmode=…` when set), for messages.
    pub fn describe(&self) -> String {
        let mut text = format!(
            "host={} port={} user={} dbname={}",
            self.host, self.port, self.user, self.dbname
        );
        if let Some(hostaddr) = &self.hostaddr {
            text.push_str(&format!(" hostaddr={hostaddr}"));
        }
        if let Some(mode) = self.setting("sslmode") {
            text.push_str(&format!(" sslmode={mode}"));
        }
        text
    }

    /// tokio-postgres's configuration of this target's session (without TLS mode or password):
    /// address, user, database, application_name (`pgreplica` unless given), options,
    /// timeouts, keepalives, channel binding, target_session_attrs, load balancing.
    pub(super) fn session_config(&self) -> tokio_postgres::Config {
        use tokio_postgres::config::{
            ChannelBinding, LoadBalanceHosts, SslNegotiation, TargetSessionAttrs,
        };
        let mut config = tokio_postgres::Config::new();
        if self.host.starts_with('/') {
            config.host_path(&self.host);
        } else {
            config.host(&self.host);
        }
        if let Some(hostaddr) = self.hostaddr.as_deref().and_then(|a| a.parse().ok()) {
            config.hostaddr(hostaddr);
        }
        config.port(self.port).user(&self.user).dbname(&self.dbname);
        let name = self
            .setting("application_name")
            .or(self.setting("fallback_application_name"))
            .unwrap_or("pgreplica");
        config.application_name(name);
        if let Some(options) = self.setting("options") {
            config.options(options);
        }
        // libpq: 0 or less waits forever, and less than 2 seconds counts as 2.
        match self.number("connect_timeout") {
            None => {
                config.connect_timeout(DEFAULT_CONNECT_TIMEOUT);
            }
            Some(seconds) if seconds > 0 => {
                config.connect_timeout(Duration::from_secs(seconds.max(2).unsigned_abs()));
            }
            Some(_) => {}
        }
        if let Some(on) = self.number("keepalives") {
            config.keepalives(on != 0);
        }
        let seconds = |n: i64| Duration::from_secs(n.unsigned_abs());
        if let Some(n) = self.number("keepalives_idle") {
            config.keepalives_idle(seconds(n));
        }
        if let Some(n) = self.number("keepalives_interval") {
            config.keepalives_interval(seconds(n));
        }
        if let Some(n) = self.number("keepalives_count") {
            config.keepalives_retries(u32::try_from(n).unwrap_or(u32::MAX));
        }
        if let Some(n) = self.number("tcp_user_timeout") {
            config.tcp_user_timeout(Duration::from_millis(n.unsigned_abs()));
        }
        config.channel_binding(match self.setting("channel_binding") {
            Some("disable") => ChannelBinding::Disable,
            Some("require") => ChannelBinding::Require,
            _ => ChannelBinding::Prefer,
        });
        if self.setting("sslnegotiation") == Some("direct") {
            config.ssl_negotiation(SslNegotiation::Direct);
        }
        config.target_session_attrs(match self.setting("target_session_attrs") {
            Some("read-write") => TargetSessionAttrs::ReadWrite,
            Some("read-only") => TargetSessionAttrs::ReadOnly,
            _ => TargetSessionAttrs::Any,
        });
        if self.setting("load_balance_hosts") == Some("random") {
            config.load_balance_hosts(LoadBalanceHosts::Random);
        }
        config
    }

    /// A numeric setting (validated by [`Target::resolve`]).
    fn number(&self, name: &str) -> Option<i64> {
        self.setting(name).and_then(|v| v.trim().parse().ok())
    }
}

/// `-d` as recorded with a clone: a conninfo's file keywords (`sslrootcert`, `passfile`, …) made
/// absolute against the working directory, so that a resume from elsewhere, and the standby
/// (whose working directory is its data directory), open the same files; anything else as
/// given.
pub fn with_absolute_paths(dbname: &str) -> Result<String> {
    if !is_conninfo(dbname) {
        return Ok(dbname.to_string());
    }
    let mut conninfo = given_conninfo(Some(dbname))?;
    for (name, value) in conninfo.clone().iter() {
        if FILE_KEYWORDS.contains(&name) && !(name == "sslrootcert" && value == "system") {
            conninfo.set(name, &absolute(value)?);
        }
    }
    Ok(conninfo.render())
}

/// Whether `name` is a TLS keyword (see [`Target::tls_conninfo`]).
pub fn is_tls_keyword(name: &str) -> bool {
    name.starts_with("ssl") || matches!(name, "channel_binding" | "gssencmode")
}

/// `-d` as a conninfo: its keywords when it is a conninfo or URI, else `dbname=<it>`.
fn given_conninfo(dbname: Option<&str>) -> Result<Conninfo> {
    let mut conninfo = Conninfo::new();
    match dbname {
        Some(text) if is_conninfo(text) => {
            conninfo = Conninfo::parse(text).map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("-d/--dbname: {}", e.message),
                )
                .hint(
                    "use key=value pairs or a postgresql:// URI, e.g. -d \"host=node1 dbname=repmgr sslmode=require\"",
                )
            })?;
        }
        Some(name) if !name.is_empty() => conninfo.set("dbname", name),
        _ => {}
    }
    Ok(conninfo)
}

/// Whether `-d` is a conninfo or URI rather than a database name (libpq's rule).
pub(super) fn is_conninfo(text: &str) -> bool {
    text.contains('=') || text.starts_with("postgres://") || text.starts_with("postgresql://")
}

/// The keyword `name` if pgreplica honours it; else why not. `var` is the environment
/// variable it came from.
fn checked_keyword(name: &str, var: Option<&str>) -> Result<&'static super::keywords::Keyword> {
    let where_ = match var {
        Some(var) => format!("{var} (connection option \"{name}\")"),
        None => format!("connection option \"{name}\""),
    };
    let keyword = keyword(name).ok_or_else(|| {
        Error::new(ErrorKind::Config, format!("invalid connection option \"{name}\""))
            .hint("check the spelling in -d; docs/configuration.md lists the connection keywords pgreplica honours")
    })?;
    match keyword.usage {
        Use::Refused(why) => Err(Error::new(
            ErrorKind::Config,
            format!("{where_} is not supported: {why}"),
        )
        .hint(match var {
            Some(var) => format!("unset {var} for pgreplica"),
            None => format!("remove {name} from -d"),
        })),
        _ => Ok(keyword),
    }
}

/// The values libpq accepts for `name`, checked as libpq checks them (with its messages), less
/// the few pgreplica's connection cannot honour.
fn check_value(name: &str, value: &str) -> Result<()> {
    let one_of = |allowed: &[&str]| -> Result<()> {
        if allowed.contains(&value) {
            return Ok(());
        }
        Err(Error::new(
            ErrorKind::Config,
            format!("invalid {name} value: \"{value}\""),
        )
        .hint(format!("{name} takes one of: {}", allowed.join(", "))))
    };
    let cannot = |why: &str| -> Result<()> {
        Err(Error::new(
            ErrorKind::Config,
            format!("{name}={value} is not supported: {why}"),
        )
        .hint(format!("use another value of {name}, or leave it out")))
    };
    match name {
        "sslmode" => one_of(&[
            "disable",
            "allow",
            "prefer",
            "require",
            "verify-ca",
            "verify-full",
        ]),
        "sslnegotiation" => one_of(&["postgres", "direct"]),
        "sslcertmode" if value == "require" => {
            cannot("pgreplica's connection cannot tell whether the server asked for a certificate")
        }
        "sslcertmode" => one_of(&["disable", "allow", "require"]),
        "gssencmode" if value == "require" => {
            cannot("pgreplica's connection cannot use GSSAPI encryption")
        }
        "gssencmode" => one_of(&["disable", "prefer", "require"]),
        "channel_binding" => one_of(&["disable", "prefer", "require"]),
        "target_session_attrs" if matches!(value, "primary" | "standby" | "prefer-standby") => {
            cannot("pgreplica's connection knows any, read-write and read-only")
        }
        "target_session_attrs" => one_of(&["any", "read-write", "read-only"]),
        "load_balance_hosts" => one_of(&["disable", "random"]),
        "sslsni" | "sslcompression" | "keepalives" => one_of(&["0", "1"]),
        "ssl_max_protocol_version" if matches!(value, "TLSv1" | "TLSv1.1") => {
            cannot("pgreplica's TLS (rustls) speaks TLS 1.2 and 1.3 only")
        }
        "ssl_min_protocol_version" | "ssl_max_protocol_version" => {
            one_of(&["TLSv1", "TLSv1.1", "TLSv1.2", "TLSv1.3"])
        }
        "client_encoding"
            if !matches!(
                value.to_ascii_lowercase().as_str(),
                "utf8" | "utf-8" | "unicode"
            ) =>
        {
            cannot("pgreplica's connection speaks UTF8 only")
        }
        "connect_timeout"
        | "keepalives_idle"
        | "keepalives_interval"
        | "keepalives_count"
        | "tcp_user_timeout" => match value.trim().parse::<i64>() {
            Ok(n) if n >= 0 || name == "connect_timeout" => Ok(()),
            _ => Err(Error::new(
                ErrorKind::Config,
                format!("invalid integer value \"{value}\" for connection option \"{name}\""),
            )
            .hint(format!("{name} takes a whole number"))),
        },
        _ => Ok(()),
    }
}

/// `error` with the environment variable the bad value came from named in its message.
fn origin(mut error: Error, name: &str, from_env: &[(&str, &str)]) -> Error {
    if let Some((_, var)) = from_env.iter().find(|(n, _)| *n == name) {
        error.message = format!("{} (from {var})", error.message);
    }
    error
}

/// An environment variable's value, unless unset or empty (libpq ignores empty ones).
fn env(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

/// `path` made absolute against the working directory: libpq opens relative paths from its
/// working directory, which for the standby's walreceiver is its data directory.
fn absolute(path: &str) -> Result<String> {
    if Path::new(path).is_absolute() {
        return Ok(path.to_string());
    }
    let here = std::env::current_dir().map_err(|e| {
        Error::new(
            ErrorKind::System,
            format!("cannot read the current directory: {e}"),
        )
        .hint(format!(
            "the working directory was removed or cannot be read: run pgreplica from a directory that exists, or write \"{path}\" (in -d's conninfo or its PG* variable) as an absolute path"
        ))
    })?;
    Ok(here.join(path).display().to_string())
}

/// The home directory libpq uses for `~/.pgpass` and `~/.postgresql/`: `$HOME`, else the
/// user database's.
pub(super) fn home_dir() -> Option<PathBuf> {
    match std::env::var_os("HOME").filter(|h| !h.is_empty()) {
        Some(home) => Some(PathBuf::from(home)),
        None => user_entry().map(|(_, home)| home),
    }
}

/// libpq's default user: the operating-system user's name.
fn os_user_name() -> String {
    user_entry().map_or_else(|| "postgres".to_string(), |(name, _)| name)
}

/// The effective user's name and home directory from the user database.
pub(crate) fn user_entry() -> Option<(String, PathBuf)> {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy it out at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() || (*pw).pw_name.is_null() || (*pw).pw_dir.is_null() {
            return None;
        }
        let text = |p| std::ffi::CStr::from_ptr(p).to_string_lossy().into_owned();
        Some((text((*pw).pw_name), PathBuf::from(text((*pw).pw_dir))))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn dbname(text: &str) -> SourceConn {
        SourceConn {
            dbname: Some(text.to_string()),
            ..SourceConn::default()
        }
    }

    #[test]
    fn command_line_wins_over_dbname_conninfo() {
        let conn = SourceConn {
            host: Some("node1".into()),
            port: None,
            user: None,
            dbname: Some("host=other port=5499 user=repmgr dbname=repmgr".into()),
        };
        let target = Target::resolve(&conn).unwrap();
        assert_eq!(target.host, "node1");
        assert_eq!(target.port, 5499);
        assert_eq!(target.user, "repmgr");
        assert_eq!(target.dbname, "repmgr");
        assert!(!target.conninfo().contains("password"));
    }

    #[test]
    fn every_honoured_keyword_is_kept_in_order_and_paths_made_absolute() {
        let target = Target::resolve(&dbname(
            "postgresql://rep@db1:5433/repmgr?sslmode=verify-full&sslrootcert=tls/ca.pem\
             &connect_timeout=5&options=-c%20statement_timeout%3D0&application_name=pgr\
             &keepalives_idle=30&target_session_attrs=read-write&channel_binding=require",
        ))
        .unwrap();
        let here = std::env::current_dir().unwrap();
        assert_eq!(
            target.conninfo(),
            format!(
                "host=db1 port=5433 user=rep dbname=repmgr sslmode=verify-full sslrootcert={}/tls/ca.pem \
                 connect_timeout=5 options='-c statement_timeout=0' application_name=pgr \
                 keepalives_idle=30 target_session_attrs=read-write channel_binding=require",
                here.display()
            )
        );
        assert_eq!(
            target.tls_conninfo().render(),
            format!(
                "sslmode=verify-full sslrootcert={}/tls/ca.pem channel_binding=require",
                here.display()
            )
        );
        assert_eq!(
            target.describe(),
            "host=db1 port=5433 user=rep dbname=repmgr sslmode=verify-full"
        );
        let config = target.session_config();
        assert_eq!(config.get_application_name(), Some("pgr"));
        assert_eq!(config.get_connect_timeout(), Some(&Duration::from_secs(5)));
        assert_eq!(config.get_options(), Some("-c statement_timeout=0"));
    }

    #[test]
    fn refused_and_unknown_keywords_and_bad_values_say_why() {
        for (text, message, hint) in [
            (
                "host=a sslpassword=x",
                "connection option \"sslpassword\" is not supported: pgreplica cannot read an encrypted client key",
                "remove sslpassword from -d",
            ),
            (
                "host=a service=main",
                "connection option \"service\" is not supported: pgreplica does not read pg_service.conf",
                "remove service from -d",
            ),
            (
                "host=a sslmod=require",
                "invalid connection option \"sslmod\"",
                "docs/configuration.md",
            ),
            (
                "host=a sslmode=verify",
                "invalid sslmode value: \"verify\"",
                "disable, allow, prefer, require, verify-ca, verify-full",
            ),
            (
                "host=a,b",
                "several values for \"host\"",
                "give one host and port",
            ),
            (
                "host=a hostaddr=node1",
                "could not parse network address \"node1\" (hostaddr)",
                "hostaddr takes an IP address",
            ),
            (
                "host=a replication=database",
                "connection option \"replication\" is not supported",
                "remove replication from -d",
            ),
            (
                "host=a gssencmode=require",
                "gssencmode=require is not supported",
                "use another value of gssencmode",
            ),
            (
                "host=a sslnegotiation=direct",
                "weak sslmode \"prefer\" may not be used with sslnegotiation=direct",
                "set sslmode=require",
            ),
            (
                "host=a connect_timeout=soon",
                "invalid integer value \"soon\" for connection option \"connect_timeout\"",
                "whole number",
            ),
        ] {
            let error = Target::resolve(&dbname(text)).expect_err(text);
            assert_eq!(error.kind, ErrorKind::Config, "{text}");
            error.assert_says(message, hint);
        }
    }

    #[test]
    fn libpq_timeouts() {
        let timeout = |text: &str| {
            Target::resolve(&dbname(text))
                .unwrap()
                .session_config()
                .get_connect_timeout()
                .copied()
        };
        assert_eq!(timeout("host=a"), Some(DEFAULT_CONNECT_TIMEOUT));
        assert_eq!(
            timeout("host=a connect_timeout=1"),
            Some(Duration::from_secs(2))
        );
        assert_eq!(timeout("host=a connect_timeout=0"), None);
    }

    #[test]
    fn a_plain_dbname_is_a_database_name() {
        let target = Target::resolve(&SourceConn {
            host: Some("127.0.0.1".into()),
            port: Some(5501),
            user: Some("barman".into()),
            dbname: Some("postgres".into()),
        })
        .unwrap();
        assert_eq!(
            target.conninfo(),
            "host=127.0.0.1 port=5501 user=barman dbname=postgres"
        );
    }
}
