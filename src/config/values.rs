//! Value parsers for the typed keys: booleans, node ids, durations, PostgreSQL time units,
//! tablespace mappings and `--waldir` in pg_basebackup_options.
//!
//! Pure functions from a decoded value to a typed one or a one-line reason. They must not know
//! files or lines (the caller adds the location) and must not echo values that may be secret.

use std::time::Duration;

/// repmgr's booleans: 0/1, true/false, on/off, yes/no, in any case.
pub(crate) fn boolean(key: &str, value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "on" | "yes" => Ok(true),
        "0" | "false" | "off" | "no" => Ok(false),
        _ => Err(format!(
            "\"{key}\" must be a boolean (true/false, on/off, yes/no, 1/0), not \"{value}\""
        )),
    }
}

/// A decimal integer ≥ 1 that fits in an i32, as repmgr's node ids.
pub(crate) fn node_id(value: &str) -> Result<i32, String> {
    let digits = value.strip_prefix('+').unwrap_or(value);
    match digits.parse::<i32>() {
        Ok(id) if id >= 1 && digits.bytes().all(|b| b.is_ascii_digit()) => Ok(id),
        _ => Err(format!(
            "\"node_id\" must be a positive integer, not \"{value}\""
        )),
    }
}

/// Splits `123unit` into the number and the unit; None when there are no leading digits.
fn number_and_unit(value: &str) -> Option<(u64, &str)> {
    let end = value
        .bytes()
        .position(|b| !b.is_ascii_digit())
        .unwrap_or(value.len());
    let number = value[..end].parse().ok()?;
    Some((number, &value[end..]))
}

/// `recovery_min_apply_delay`: a whole number with an optional unit ms, s, min, h or d, as
/// repmgr checks it (PostgreSQL itself would also accept `us` and spaces; repmgr does not).
pub(crate) fn time_units(key: &str, value: &str) -> Result<(), String> {
    match number_and_unit(value) {
        Some((_, "" | "ms" | "s" | "min" | "h" | "d")) => Ok(()),
        _ => Err(format!(
            "\"{key}\" must be a whole number with an optional unit ms, s, min, h or d, not \"{value}\""
        )),
    }
}

/// A whole number of seconds ≥ 1, optionally written with a unit s, min, h or d.
pub(crate) fn seconds(key: &str, value: &str) -> Result<Duration, String> {
    let scaled = number_and_unit(value).and_then(|(n, unit)| {
        let factor = match unit {
            "" | "s" => 1,
            "min" => 60,
            "h" => 3600,
            "d" => 86_400,
            _ => return None,
        };
        n.checked_mul(factor)
    });
    match scaled {
        Some(secs) if secs >= 1 => Ok(Duration::from_secs(secs)),
        _ => Err(format!(
            "\"{key}\" must be a whole number of seconds of at least 1, optionally with a unit s, min, h or d, not \"{value}\""
        )),
    }
}

/// Credentials a proxy in front of pg-backup-api checks (HTTP basic authentication), taken
/// from `user:password@` in `pg_backupapi_host`. Never recorded: its `Debug` hides them.
#[derive(Clone, PartialEq, Eq)]
pub struct ApiCredentials {
    /// The user name (percent-decoded).
    pub user: String,
    /// The password (percent-decoded), if one was given.
    pub password: Option<String>,
}

impl std::fmt::Debug for ApiCredentials {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("ApiCredentials(<redacted>)")
    }
}

/// `pg_backupapi_host` without its `user:password@`, and the credentials. Credentials are
/// accepted only in an `https://` URL: over plain http they would cross the network in clear.
/// The reason never quotes the value.
pub(crate) fn api_host(value: &str) -> Result<(String, Option<ApiCredentials>), String> {
    let (scheme, rest) = match value.split_once("://") {
        Some((scheme, rest)) => (Some(scheme), rest),
        None => (None, value),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let Some(at) = rest[..authority_end].rfind('@') else {
        return Ok((value.to_string(), None));
    };
    if scheme != Some("https") {
        return Err(
            "\"pg_backupapi_host\" carries credentials (user:password@) but is not an https:// URL: they would cross the network in clear"
                .to_string(),
        );
    }
    let (user, password) = match rest[..at].split_once(':') {
        Some((user, password)) => (user, Some(percent_decoded(password)?)),
        None => (&rest[..at], None),
    };
    let host = format!("https://{}", &rest[at + 1..]);
    let credentials = ApiCredentials {
        user: percent_decoded(user)?,
        password,
    };
    Ok((host, Some(credentials)))
}

/// `%XX` escapes decoded, as URLs write reserved characters of a user name or password.
fn percent_decoded(text: &str) -> Result<String, String> {
    let bad = || "the credentials in \"pg_backupapi_host\" hold a malformed %-escape".to_string();
    let mut bytes = Vec::with_capacity(text.len());
    let mut rest = text.bytes();
    while let Some(byte) = rest.next() {
        if byte == b'%' {
            let hex: Vec<u8> = rest.by_ref().take(2).collect();
            let hex = std::str::from_utf8(&hex).map_err(|_| bad())?;
            let value = u8::from_str_radix(hex, 16).map_err(|_| bad())?;
            if hex.len() != 2 {
                return Err(bad());
            }
            bytes.push(value);
        } else {
            bytes.push(byte);
        }
    }
    String::from_utf8(bytes).map_err(|_| bad())
}

/// `OLD=NEW`, where `\=` stands for an `=` inside either path (pg_basebackup's
/// `--tablespace-mapping` syntax). Both must be absolute paths.
///
/// The escape is read from the decoded value, as repmgr does: inside a quoted string `\\`
/// is one backslash, so a file says `'/old\\=dir=/new'`.
pub(crate) fn tablespace_mapping(value: &str) -> Result<(String, String), (String, String)> {
    let mut old = String::new();
    let mut new = String::new();
    let mut seen_separator = false;
    let mut chars = value.chars().peekable();
    while let Some(c) = chars.next() {
        if c == '\\' && chars.peek() == Some(&'=') {
            let escaped = chars.next().unwrap_or('=');
            if seen_separator { &mut new } else { &mut old }.push(escaped);
        } else if c == '=' {
            if seen_separator {
                return Err((
                    format!("tablespace_mapping \"{value}\" has more than one \"=\""),
                    "escape an \"=\" inside a path as \\\\= in the quoted value".to_string(),
                ));
            }
            seen_separator = true;
        } else if seen_separator {
            new.push(c);
        } else {
            old.push(c);
        }
    }
    if !seen_separator || old.is_empty() || new.is_empty() {
        return Err((
            format!("tablespace_mapping \"{value}\" is not OLDDIR=NEWDIR"),
            "write tablespace_mapping='/old/location=/new/location', one line per tablespace"
                .to_string(),
        ));
    }
    for (what, path) in [("old", &old), ("new", &new)] {
        if !path.starts_with('/') {
            return Err((
                format!("tablespace_mapping \"{value}\": the {what} directory \"{path}\" is not an absolute path"),
                "both sides of tablespace_mapping must be absolute paths".to_string(),
            ));
        }
    }
    Ok((old, new))
}

/// The WAL directory named in pg_basebackup's arguments (`--waldir=X`, `--waldir X`, or the
/// pre-PostgreSQL-10 `--xlogdir`); the last one wins, as with getopt.
pub(crate) fn waldir(args: &[String]) -> Result<Option<String>, String> {
    let mut found = None;
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        for option in ["--waldir", "--xlogdir"] {
            if arg == option {
                match iter.next() {
                    Some(dir) => found = Some(dir.clone()),
                    None => return Err(format!("{option} in pg_basebackup_options has no value")),
                }
            } else if let Some(dir) = arg
                .strip_prefix(option)
                .and_then(|rest| rest.strip_prefix('='))
            {
                found = Some(dir.to_string());
            }
        }
    }
    match found {
        Some(dir) if !dir.starts_with('/') => Err(format!(
            "the WAL directory in pg_basebackup_options must be an absolute path, not \"{dir}\""
        )),
        other => Ok(other),
    }
}

/// What `rsync_options` asks of pgreplica's rsync.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RsyncOptions {
    /// `--bwlimit`, in KiB/s per rsync stream (as rsync means it), applied unless the command
    /// line gives `--bwlimit`.
    pub bwlimit_kbps: Option<u32>,
    /// Options that pgreplica's rsync does already, or whose purpose it serves otherwise
    /// (`--archive`, `--checksum`, `--progress` …): accepted and left out, as written.
    pub implied: Vec<String>,
}

/// Options repmgr's users put in `rsync_options` that pgreplica's own rsync command line
/// covers: what each is replaced by.
const IMPLIED_RSYNC_OPTIONS: &[(&str, &str)] = &[
    ("-a", "the copy keeps links, permissions and times"),
    ("--archive", "the copy keeps links, permissions and times"),
    ("-c", "VerifyCopy checks every file against backup_manifest"),
    (
        "--checksum",
        "VerifyCopy checks every file against backup_manifest",
    ),
    ("-z", "the copy chooses its own compression"),
    ("--compress", "the copy chooses its own compression"),
    ("--progress", "pgreplica reports progress itself"),
    (
        "-P",
        "pgreplica reports progress and keeps partial files itself",
    ),
    ("--partial", "pgreplica keeps partial files itself"),
    ("-v", "pgreplica reports progress itself"),
    ("--verbose", "pgreplica reports progress itself"),
];

/// Reads repmgr's `rsync_options` (already split into arguments): `--bwlimit` is applied, the
/// options pgreplica's rsync implies are accepted, any other is refused with the message and
/// the way to get what it asked for (pgreplica parses rsync's output and decides what is
/// copied, so an arbitrary option could break the copy or its checks).
pub(crate) fn rsync_options(args: &[String]) -> Result<RsyncOptions, (String, String)> {
    let mut options = RsyncOptions::default();
    let mut iter = args.iter();
    while let Some(arg) = iter.next() {
        let bwlimit = if arg == "--bwlimit" {
            let value = iter.next().ok_or_else(|| {
                (
                    "--bwlimit in rsync_options has no value".to_string(),
                    "write e.g. rsync_options='--bwlimit=10000' (KiB/s)".to_string(),
                )
            })?;
            Some(value.as_str())
        } else {
            arg.strip_prefix("--bwlimit=")
        };
        if let Some(value) = bwlimit {
            options.bwlimit_kbps = Some(bwlimit_kbps(value)?);
            continue;
        }
        if IMPLIED_RSYNC_OPTIONS.iter().any(|(flag, _)| flag == arg) {
            options.implied.push(arg.clone());
            continue;
        }
        // repmgr's own default is `--rsh=ssh`: pgreplica's rsync runs ssh too, with ssh_options.
        let rsh = match arg.as_str() {
            "-e" | "--rsh" => iter.next().map(String::as_str),
            _ => arg.strip_prefix("--rsh="),
        };
        if let Some(command) = rsh {
            if crate::barman::ssh::runs_ssh(command) {
                options.implied.push(format!("--rsh=\"{command}\""));
                continue;
            }
        }
        let flag = arg.split('=').next().unwrap_or(arg);
        let instead = match flag {
            "-e" | "--rsh" => {
                "set ssh_options in repmgr.conf (pgreplica's rsync runs ssh with them, and no other remote shell)"
            }
            "--timeout" => "set PGREPLICA_RSYNC_TIMEOUT (seconds without data before rsync gives up)",
            "--delete" => "use clone start --force, which removes what the backup lacks",
            "--exclude" | "--exclude-from" | "--include" | "--include-from" | "--filter" => {
                "nothing: pgreplica copies the backup whole (its file list, checked by VerifyCopy)"
            }
            _ => concat!(
                "remove it: pgreplica runs rsync with options of its own and reads its output; ",
                "--bwlimit is the option it applies (or clone start --bwlimit)"
            ),
        };
        return Err((
            format!("rsync_options: \"{flag}\" is not supported"),
            format!("instead, {instead}"),
        ));
    }
    Ok(options)
}

/// rsync's `--bwlimit` value: KiB/s, or with rsync's K, M or G suffix (powers of 1024).
fn bwlimit_kbps(value: &str) -> Result<u32, (String, String)> {
    let (number, factor) = match value.char_indices().last() {
        Some((i, 'k' | 'K')) => (&value[..i], 1),
        Some((i, 'm' | 'M')) => (&value[..i], 1024),
        Some((i, 'g' | 'G')) => (&value[..i], 1024 * 1024),
        _ => (value, 1),
    };
    number
        .parse::<u32>()
        .ok()
        .and_then(|n| n.checked_mul(factor))
        .filter(|&kbps| kbps > 0)
        .ok_or_else(|| {
            (
                format!("--bwlimit in rsync_options is not a rate: \"{value}\""),
                "write KiB/s as a whole number, e.g. rsync_options='--bwlimit=10000' (or 10M)"
                    .to_string(),
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rsync_options_apply_bwlimit_accept_the_implied_and_refuse_the_rest() {
        let args = |text: &str| crate::config::split_args(text).unwrap();
        let read = |text: &str| rsync_options(&args(text));
        assert_eq!(
            read("--archive --checksum --bwlimit=5000 --progress").unwrap(),
            RsyncOptions {
                bwlimit_kbps: Some(5000),
                implied: args("--archive --checksum --progress"),
            }
        );
        assert_eq!(read("--bwlimit 2M").unwrap().bwlimit_kbps, Some(2048));
        assert_eq!(read("").unwrap(), RsyncOptions::default());
        let refused = |text: &str| read(text).unwrap_err();
        assert_eq!(
            read("-a --rsh=\"ssh -o X\"").unwrap().implied,
            ["-a", "--rsh=\"ssh -o X\""]
        );
        assert_eq!(
            read("-e /usr/bin/ssh").unwrap().implied,
            ["--rsh=\"/usr/bin/ssh\""]
        );
        assert_eq!(
            refused("-a --rsh=rsh"),
            (
                "rsync_options: \"--rsh\" is not supported".to_string(),
                "instead, set ssh_options in repmgr.conf (pgreplica's rsync runs ssh with them, and no other remote shell)".to_string()
            )
        );
        assert!(refused("--delete").1.contains("clone start --force"));
        assert!(refused("--exclude=postmaster.pid")
            .0
            .contains("\"--exclude\""));
        assert!(refused("--inplace").1.contains("--bwlimit"));
        assert!(refused("--bwlimit=fast").0.contains("not a rate"));
        assert!(refused("--bwlimit=0").0.contains("not a rate"));
        assert!(refused("--bwlimit").0.contains("no value"));
    }

    fn args(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn booleans_in_every_spelling() {
        for yes in ["1", "true", "TRUE", "On", "yes", "YES"] {
            assert_eq!(boolean("k", yes), Ok(true), "{yes}");
        }
        for no in ["0", "false", "False", "OFF", "no", "No"] {
            assert_eq!(boolean("k", no), Ok(false), "{no}");
        }
        assert!(boolean("k", "maybe")
            .unwrap_err()
            .contains("\"k\" must be a boolean"));
        assert!(boolean("k", "").is_err());
    }

    #[test]
    fn node_ids_are_positive_integers() {
        assert_eq!(node_id("7"), Ok(7));
        assert_eq!(node_id("+7"), Ok(7));
        for bad in ["0", "-1", "1.5", "x", "", "99999999999", "+-1", "3min"] {
            assert!(node_id(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn time_units_as_repmgr_checks_them() {
        for ok in ["0", "500", "500ms", "5s", "5min", "2h", "1d"] {
            assert!(time_units("k", ok).is_ok(), "{ok}");
        }
        for bad in ["5m", "-1", "x", "5 min", "1.5h", "5us"] {
            assert!(time_units("k", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn api_host_credentials_only_over_https_and_never_in_the_reason() {
        assert_eq!(
            api_host("backup1:7480"),
            Ok(("backup1:7480".to_string(), None))
        );
        let (host, credentials) = api_host("https://pg%40x:s3cr%3At@b1:7443/api").unwrap();
        assert_eq!(host, "https://b1:7443/api");
        let credentials = credentials.unwrap();
        assert_eq!(credentials.user, "pg@x");
        assert_eq!(credentials.password.as_deref(), Some("s3cr:t"));
        assert_eq!(format!("{credentials:?}"), "ApiCredentials(<redacted>)");
        let (_, user_only) = api_host("https://pg@b1").unwrap();
        assert_eq!(user_only.unwrap().password, None);
        // An @ after the authority is not userinfo.
        assert_eq!(
            api_host("https://b1/a@b"),
            Ok(("https://b1/a@b".to_string(), None))
        );
        for clear in [
            "http://pg:s3cret@b1",
            "pg:s3cret@b1:7480",
            "ftp://pg:s3cret@b1",
        ] {
            let reason = api_host(clear).unwrap_err();
            assert!(reason.contains("not an https:// URL"), "{reason}");
            assert!(!reason.contains("s3cret"), "{reason}");
        }
        assert!(api_host("https://pg:s3cret%4@b1")
            .unwrap_err()
            .contains("malformed %-escape"));
    }

    #[test]
    fn seconds_with_units() {
        assert_eq!(seconds("k", "3"), Ok(Duration::from_secs(3)));
        assert_eq!(seconds("k", "90s"), Ok(Duration::from_secs(90)));
        assert_eq!(seconds("k", "2min"), Ok(Duration::from_secs(120)));
        assert_eq!(seconds("k", "1h"), Ok(Duration::from_secs(3600)));
        assert_eq!(seconds("k", "1d"), Ok(Duration::from_secs(86_400)));
        for bad in ["0", "-5", "5ms", "x", "99999999999999999999d"] {
            assert!(seconds("k", bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn tablespace_mappings() {
        assert_eq!(
            tablespace_mapping("/old=/new"),
            Ok(("/old".into(), "/new".into()))
        );
        assert_eq!(
            tablespace_mapping(r"/o\=ld=/n\=ew"),
            Ok(("/o=ld".into(), "/n=ew".into()))
        );
        assert!(tablespace_mapping("/a=/b=/c")
            .unwrap_err()
            .0
            .contains("more than one"));
        assert!(tablespace_mapping("/a")
            .unwrap_err()
            .0
            .contains("OLDDIR=NEWDIR"));
        assert!(tablespace_mapping("=/b").is_err());
        assert!(tablespace_mapping("/a=").is_err());
        assert!(tablespace_mapping("a=/b")
            .unwrap_err()
            .0
            .contains("not an absolute path"));
        assert!(tablespace_mapping("/a=b")
            .unwrap_err()
            .0
            .contains("new directory"));
    }

    #[test]
    fn waldir_in_every_form() {
        assert_eq!(waldir(&args(&["--waldir=/w"])), Ok(Some("/w".into())));
        assert_eq!(waldir(&args(&["--waldir", "/w"])), Ok(Some("/w".into())));
        assert_eq!(waldir(&args(&["--xlogdir=/x"])), Ok(Some("/x".into())));
        assert_eq!(waldir(&args(&["--xlogdir", "/x"])), Ok(Some("/x".into())));
        assert_eq!(
            waldir(&args(&["--waldir=/a", "-c", "fast", "--waldir", "/b"])),
            Ok(Some("/b".into()))
        );
        assert_eq!(waldir(&args(&["--label=x", "--waldirx=/y"])), Ok(None));
        assert!(waldir(&args(&["--waldir"]))
            .unwrap_err()
            .contains("no value"));
        assert!(waldir(&args(&["--waldir=wal"]))
            .unwrap_err()
            .contains("absolute"));
        assert!(waldir(&args(&["--waldir="])).is_err());
    }
}
