//! Reading Barman's answers: `show-server` (JSON or console), `show-backup -f json`,
//! `list-backups -f json`, and the `_ERROR`/`_WARNING` messages of its JSON writer.
//!
//! Tested on real outputs of Barman 3.4.0 and 3.19.1 (tests/fixtures/barman/). Every reader is
//! tolerant: unknown keys are ignored and keys that moved between releases are looked up in
//! each of their places.
//!
//! Must not: run commands or decide whether a backup can be restored (that is `mod.rs`).

use serde::Deserialize;
use serde_json::Value;
use states::Tablespace;

/// Where a Barman server keeps its catalogue, from `show-server`.
///
/// Only these settings are kept: `show-server` also prints `conninfo`, which may hold a password
/// and must not travel further.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ServerDirs {
    /// `backup_directory`: `<barman_home>/<server>`; holds `meta/` since Barman 3.13.2.
    pub backup_directory: String,
    /// `basebackups_directory`: holds one `<backup_id>/` directory per backup.
    pub basebackups_directory: String,
    /// `wals_directory`: the WAL archive.
    pub wals_directory: String,
    /// `backup_method` (`postgres`, `rsync`, `local-rsync`, `snapshot`), when printed.
    pub backup_method: Option<String>,
    /// `backup_compression` for new backups (tar format when set), when printed.
    pub backup_compression: Option<String>,
}

/// Why `show-server` output could not be used.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ShowServerError {
    /// The output does not describe the server, or lacks a directory.
    Unreadable(String),
    /// A directory is a cloud URL (Barman ≥ 3.19 can keep backups in object storage).
    Cloud(String),
}

/// Parses `show-server <server>` output, JSON (`{"pg": {…}}`) or console (`Server pg:` then
/// tab-indented `key: value` lines); values `None`/null count as absent.
pub fn parse_show_server(server: &str, output: &str) -> Result<ServerDirs, ShowServerError> {
    let settings: Vec<(String, String)> = match parse_json_reply(output) {
        Some(json) => {
            let Some(Value::Object(map)) = server_entry(&json, server) else {
                return Err(ShowServerError::Unreadable(format!(
                    "the JSON output has no entry for server \"{server}\""
                )));
            };
            map.iter()
                .filter_map(|(k, v)| match v {
                    Value::String(s) => Some((k.clone(), s.clone())),
                    Value::Null => None,
                    other => Some((k.clone(), other.to_string())),
                })
                .collect()
        }
        None => console_settings(server, output).ok_or_else(|| {
            ShowServerError::Unreadable(format!("the output has no \"Server {server}:\" section"))
        })?,
    };
    let get = |key: &str| {
        settings
            .iter()
            .find(|(k, _)| k == key)
            .map(|(_, v)| v.clone())
            .filter(|v| v != "None" && !v.is_empty())
    };
    let need = |key: &str| {
        get(key).ok_or_else(|| ShowServerError::Unreadable(format!("the output has no {key}")))
    };
    let dirs = ServerDirs {
        backup_directory: need("backup_directory")?,
        basebackups_directory: need("basebackups_directory")?,
        wals_directory: need("wals_directory")?,
        backup_method: get("backup_method"),
        backup_compression: get("backup_compression"),
    };
    for dir in [&dirs.basebackups_directory, &dirs.backup_directory] {
        if dir.contains("://") {
            return Err(ShowServerError::Cloud(dir.clone()));
        }
    }
    Ok(dirs)
}

/// The `key: value` lines of the console section `Server <server>:`.
fn console_settings(server: &str, output: &str) -> Option<Vec<(String, String)>> {
    let header = format!("Server {server}:");
    let mut lines = output.lines().skip_while(|l| l.trim_end() != header);
    lines.next()?;
    Some(
        lines
            .take_while(|l| l.starts_with(char::is_whitespace) || l.trim().is_empty())
            .filter_map(|l| l.trim().split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect(),
    )
}

/// The object of `server` in a Barman JSON reply (`{"pg": …}`), or the only non-message entry.
fn server_entry<'a>(json: &'a Value, server: &str) -> Option<&'a Value> {
    let map = json.as_object()?;
    map.get(server).or_else(|| {
        let mut others = map.iter().filter(|(k, _)| !k.starts_with('_'));
        match (others.next(), others.next()) {
            (Some((_, v)), None) => Some(v),
            _ => None,
        }
    })
}

/// The JSON object Barman printed (`-f json` writes one object at exit), also when a login
/// script of the ssh user printed something before it.
pub fn parse_json_reply(output: &str) -> Option<Value> {
    let output = output.trim();
    serde_json::from_str(output).ok().or_else(|| {
        let start = output.rfind("\n{")?;
        serde_json::from_str(&output[start + 1..]).ok()
    })
}

/// Messages of one level (`_ERROR`, `_WARNING`, `_INFO`) in a Barman JSON reply.
pub fn json_messages(json: &Value, level: &str) -> Vec<String> {
    json.get(level)
        .and_then(Value::as_array)
        .map(|msgs| {
            msgs.iter()
                .map(|m| m.as_str().map_or_else(|| m.to_string(), str::to_string))
                .collect()
        })
        .unwrap_or_default()
}

/// What pgreplica reads from `show-backup -f json`.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ShowBackup {
    /// The concrete id the selector resolved to.
    pub backup_id: String,
    /// The backup's name (Barman ≥ 3.3 with `--name`).
    pub backup_name: Option<String>,
    /// `DONE`, `FAILED`, `WAITING_FOR_WALS`, …
    pub status: String,
    /// `full`, `incremental`, `rsync`, `snapshot` (Barman ≥ 3.11).
    pub backup_type: Option<String>,
    /// `postgresql_version` (`150018`).
    pub pg_version: Option<u32>,
    /// `system_id` (Barman ≥ 3.11).
    pub system_id: Option<String>,
    /// `base_backup_information.timeline`.
    pub timeline: Option<u32>,
    /// `base_backup_information.begin_wal`.
    pub begin_wal: Option<String>,
    /// `base_backup_information.end_wal`.
    pub end_wal: Option<String>,
    /// Bytes without WAL: `backup_size_bytes` (≥ 3.11) or `disk_usage_bytes` (older).
    pub size_bytes: Option<u64>,
    /// `base_backup_information.compression` (shown since Barman 3.16; null for plain
    /// backups). Older releases leave it out: backup.info and the files decide.
    pub compression: Option<String>,
    /// `base_backup_information.encryption` (shown since Barman 3.14, which brought
    /// encryption).
    pub encryption: Option<String>,
    /// Tablespaces; 3.4.0 prints the OID here too.
    pub tablespaces: Vec<Tablespace>,
}

#[derive(Deserialize)]
struct RawShowBackup {
    backup_id: String,
    backup_name: Option<String>,
    status: String,
    backup_type: Option<String>,
    postgresql_version: Option<u32>,
    system_id: Option<String>,
    #[serde(default)]
    tablespaces: Vec<RawTablespace>,
    #[serde(default)]
    base_backup_information: RawBaseInfo,
}

#[derive(Deserialize)]
struct RawTablespace {
    name: String,
    oid: Option<u32>,
    location: String,
}

#[derive(Default, Deserialize)]
struct RawBaseInfo {
    timeline: Option<u32>,
    begin_wal: Option<String>,
    end_wal: Option<String>,
    backup_size_bytes: Option<u64>,
    disk_usage_bytes: Option<u64>,
    compression: Option<String>,
    encryption: Option<String>,
}

/// Parses the server's entry of a `show-backup -f json` reply.
pub fn parse_show_backup(server: &str, json: &Value) -> Result<ShowBackup, String> {
    let entry = server_entry(json, server)
        .ok_or_else(|| format!("the JSON reply has no entry for server \"{server}\""))?;
    let raw: RawShowBackup = serde_json::from_value(entry.clone())
        .map_err(|e| format!("unexpected show-backup JSON: {e}"))?;
    let info = raw.base_backup_information;
    Ok(ShowBackup {
        backup_id: raw.backup_id,
        backup_name: raw.backup_name,
        status: raw.status,
        backup_type: raw.backup_type,
        pg_version: raw.postgresql_version,
        system_id: raw.system_id,
        timeline: info.timeline,
        begin_wal: info.begin_wal,
        end_wal: info.end_wal,
        size_bytes: info.backup_size_bytes.or(info.disk_usage_bytes),
        compression: info.compression,
        encryption: info.encryption,
        tablespaces: raw
            .tablespaces
            .into_iter()
            .map(|t| Tablespace {
                name: t.name,
                oid: t.oid.unwrap_or(0),
                location: t.location,
            })
            .collect(),
    })
}

/// One backup as `list-backups -f json` shows it (newest first).
#[derive(Clone, Debug, PartialEq, Eq, Deserialize)]
pub struct BackupSummary {
    /// Concrete backup id.
    pub backup_id: String,
    /// Its name, if it has one.
    #[serde(default)]
    pub backup_name: Option<String>,
    /// `DONE`, `FAILED`, …
    pub status: String,
    /// End time as Barman prints it (absent for unfinished backups).
    #[serde(default)]
    pub end_time: Option<String>,
    /// Size including the WAL the backup needs.
    #[serde(default)]
    pub size_bytes: Option<u64>,
}

/// Parses a `list-backups -f json` reply.
pub fn parse_list_backups(server: &str, json: &Value) -> Result<Vec<BackupSummary>, String> {
    match server_entry(json, server) {
        Some(list) => serde_json::from_value(list.clone())
            .map_err(|e| format!("unexpected list-backups JSON: {e}")),
        // A server without backups may be printed with no entry at all.
        None if json
            .as_object()
            .is_some_and(|m| m.keys().all(|k| k.starts_with('_'))) =>
        {
            Ok(Vec::new())
        }
        None => Err(format!(
            "the JSON reply has no entry for server \"{server}\""
        )),
    }
}

/// The version number in `barman --version` output (`3.19.1 Barman by EnterpriseDB …`).
pub fn parse_version(output: &str) -> Option<String> {
    output
        .split_whitespace()
        .find(|w| w.starts_with(|c: char| c.is_ascii_digit()) && w.contains('.'))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    macro_rules! fixture {
        ($path:literal) => {
            include_str!(concat!("../../tests/fixtures/barman/", $path))
        };
    }

    fn json(text: &str) -> Value {
        serde_json::from_str(text).expect("fixture is JSON")
    }

    #[test]
    fn show_server_console_and_json_of_both_versions() {
        for (output, home) in [
            (fixture!("3.4.0/show-server.stdout"), "/tmp/bmcap/bh34"),
            (fixture!("3.4.0/show-server.json.stdout"), "/tmp/bmcap/bh34"),
            (fixture!("3.19.1/show-server.stdout"), "/tmp/bmcap/bh319"),
            (
                fixture!("3.19.1/show-server.json.stdout"),
                "/tmp/bmcap/bh319",
            ),
        ] {
            let dirs = parse_show_server("pg", output).expect("parses");
            assert_eq!(dirs.backup_directory, format!("{home}/pg"));
            assert_eq!(dirs.basebackups_directory, format!("{home}/pg/base"));
            assert_eq!(dirs.wals_directory, format!("{home}/pg/wals"));
            assert_eq!(dirs.backup_method.as_deref(), Some("postgres"));
            assert_eq!(dirs.backup_compression, None);
        }
        let tar = parse_show_server("pgtar", fixture!("3.19.1/show-server-pgtar.stdout"))
            .expect("parses");
        assert_eq!(tar.backup_compression.as_deref(), Some("gzip"));
    }

    #[test]
    fn show_server_is_tolerant_and_strict_where_it_matters() {
        let two = "Server other:\n\tbackup_directory: /x\nServer pg:\n\tbackup_directory: /b/pg\n\tbasebackups_directory: /b/pg/base\n\twals_directory: /b/pg/wals\n\tnew_key: a: b\n";
        let dirs = parse_show_server("pg", two).expect("parses");
        assert_eq!(dirs.backup_directory, "/b/pg");
        assert!(matches!(
            parse_show_server("nope", two),
            Err(ShowServerError::Unreadable(_))
        ));
        let missing = "Server pg:\n\tbackup_directory: /b\n\tbasebackups_directory: None\n";
        assert!(
            matches!(parse_show_server("pg", missing), Err(ShowServerError::Unreadable(m)) if m.contains("basebackups_directory"))
        );
        let cloud = "Server pg:\n\tbackup_directory: /b/pg\n\tbasebackups_directory: s3://bucket/pg/base\n\twals_directory: /b/pg/wals\n";
        assert_eq!(
            parse_show_server("pg", cloud),
            Err(ShowServerError::Cloud("s3://bucket/pg/base".into()))
        );
    }

    #[test]
    fn show_backup_340() {
        let with_tbs = parse_show_backup(
            "pg",
            &json(fixture!("3.4.0/show-backup-20261125T150710.json.stdout")),
        )
        .expect("parses");
        assert_eq!(with_tbs.backup_id, "20261125T150710");
        assert_eq!(with_tbs.status, "DONE");
        assert_eq!(with_tbs.pg_version, Some(150018));
        assert_eq!(with_tbs.timeline, Some(1));
        assert_eq!(
            with_tbs.begin_wal.as_deref(),
            Some("000000010000000000000003")
        );
        assert_eq!(with_tbs.size_bytes, Some(23196062));
        assert_eq!(with_tbs.tablespaces, vec![crate::barman::fixture_tbs1()]);
        assert_eq!(with_tbs.backup_type, None);
        assert_eq!(with_tbs.system_id, None);
        let latest = parse_show_backup(
            "pg",
            &json(fixture!("3.4.0/show-backup-latest.json.stdout")),
        )
        .expect("parses");
        assert_eq!(latest.backup_id, "20261125T150746");
        assert!(latest.tablespaces.is_empty());
        let oldest = parse_show_backup(
            "pg",
            &json(fixture!("3.4.0/show-backup-oldest.json.stdout")),
        )
        .expect("parses");
        assert_eq!(oldest.backup_id, "20261125T150710");
    }

    #[test]
    fn show_backup_3191() {
        let named = parse_show_backup(
            "pg",
            &json(fixture!("3.19.1/show-backup-named.json.stdout")),
        )
        .expect("parses");
        assert_eq!(named.backup_id, "20261125T150740");
        assert_eq!(named.backup_name.as_deref(), Some("named 319"));
        assert_eq!(named.backup_type.as_deref(), Some("full"));
        assert_eq!(named.system_id.as_deref(), Some("7712125799867076052"));
        assert_eq!(named.size_bytes, Some(23195442));
        assert_eq!(named.compression, None);
        assert_eq!(named.tablespaces, vec![crate::barman::fixture_tbs1()]);
        let latest = parse_show_backup(
            "pg",
            &json(fixture!("3.19.1/show-backup-latest.json.stdout")),
        )
        .expect("parses");
        assert_eq!(latest.backup_id, "20261125T150747");
        assert_eq!(latest.end_wal.as_deref(), Some("00000001000000000000000D"));
        let tar = parse_show_backup(
            "pgtar",
            &json(fixture!("3.19.1/show-backup-pgtar.json.stdout")),
        )
        .expect("parses");
        assert_eq!(tar.compression.as_deref(), Some("gzip"));
    }

    #[test]
    fn errors_of_both_versions() {
        for text in [
            fixture!("3.4.0/show-backup-unknown.json.stdout"),
            fixture!("3.19.1/show-backup-unknown.json.stdout"),
        ] {
            let reply = json(text);
            assert_eq!(
                json_messages(&reply, "_ERROR"),
                ["Unknown backup '20200101T000000' for server 'pg'"]
            );
            assert!(parse_show_backup("pg", &reply).is_err());
        }
        let bad = json(fixture!("3.19.1/show-backup-badserver.json.stdout"));
        assert_eq!(json_messages(&bad, "_ERROR"), ["Unknown server 'nosrv'"]);
        assert!(json_messages(&bad, "_WARNING").is_empty());
    }

    #[test]
    fn list_backups_of_both_versions() {
        for (text, newest, oldest_name) in [
            (
                fixture!("3.4.0/list-backups.json.stdout"),
                "20261125T150746",
                None,
            ),
            (
                fixture!("3.19.1/list-backups.json.stdout"),
                "20261125T150747",
                Some("named 319"),
            ),
        ] {
            let list = parse_list_backups("pg", &json(text)).expect("parses");
            assert_eq!(list.len(), 2);
            assert_eq!(list[0].backup_id, newest);
            assert!(list
                .iter()
                .all(|b| b.status == "DONE" && b.size_bytes.is_some()));
            assert_eq!(list[1].backup_name.as_deref(), oldest_name);
        }
        assert_eq!(parse_list_backups("pg", &json("{}")), Ok(vec![]));
    }

    #[test]
    fn json_reply_after_login_noise() {
        let noisy = format!(
            "Welcome to barmansrv\n{}",
            fixture!("3.4.0/show-backup-unknown.json.stdout")
        );
        let reply = parse_json_reply(&noisy).expect("found");
        assert_eq!(json_messages(&reply, "_ERROR").len(), 1);
        assert!(parse_json_reply("Server pg:\n\tactive: True").is_none());
    }

    #[test]
    fn versions() {
        assert_eq!(
            parse_version(fixture!("3.4.0/version.stdout")).as_deref(),
            Some("3.4.0")
        );
        assert_eq!(
            parse_version(fixture!("3.19.1/version.stdout")).as_deref(),
            Some("3.19.1")
        );
        assert_eq!(parse_version("barman: command not found"), None);
    }
}
