//! Credentials for a proxy in front of pg-backup-api: `https://user:password@host` in
//! `pg_backupapi_host`. They are never recorded (the store and `clone status` are readable by
//! whoever reads the state directory), so the recorded target names the repmgr.conf that holds
//! them and every run — `clone start`, each `clone resume` — reads them from there, the way
//! libpq reads a password file.
//!
//! It must not return credentials for another API than the one the clone was started with: the
//! file's `pg_backupapi_host`, without its credentials, must still be the recorded host.

use crate::config::{ApiCredentials, Config};
use crate::error::{Error, ErrorKind, Result};
use states::ApiTarget;
use std::path::Path;

/// The credentials for `target`, from the repmgr.conf it names; None when it names none.
pub(super) fn read(target: &ApiTarget) -> Result<Option<ApiCredentials>> {
    let Some(file) = &target.credentials_file else {
        return Ok(None);
    };
    let unusable = |why: String| {
        Error::new(
            ErrorKind::Config,
            format!(
                "cannot read the credentials for pg-backup-api at {} from \"{file}\": {why}",
                target.host
            ),
        )
        .hint(format!(
            "the clone was started with credentials in pg_backupapi_host of \"{file}\" and reads them from there at every run; restore that setting (https://USER:PASSWORD@host), or start the clone again"
        ))
    };
    let (config, _warnings) =
        Config::load(Path::new(file)).map_err(|e| unusable(e.full_message()))?;
    if config.pg_backupapi_host.as_deref() != Some(target.host.as_str()) {
        return Err(unusable(
            "its pg_backupapi_host no longer names that API".to_string(),
        ));
    }
    match config.pg_backupapi_credentials() {
        Some(credentials) => Ok(Some(credentials.clone())),
        None => Err(unusable(
            "its pg_backupapi_host no longer carries credentials".to_string(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn target(file: Option<&Path>) -> ApiTarget {
        ApiTarget {
            host: "https://b1:7443".to_string(),
            node_name: "pg".to_string(),
            credentials_file: file.map(|f| f.display().to_string()),
            ..ApiTarget::default()
        }
    }

    fn conf(host: &str) -> String {
        format!(
            "node_id=2\npg_backupapi_host='{host}'\npg_backupapi_node_name='pg'\n\
             pg_backupapi_remote_ssh_command='ssh postgres@standby'\npg_backupapi_backup_id='latest'\n"
        )
    }

    #[test]
    fn credentials_are_read_again_from_the_named_file_for_the_recorded_host_only() {
        assert_eq!(read(&target(None)).unwrap(), None);
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("repmgr.conf");
        std::fs::write(&path, conf("https://pgreplica:s3cret@b1:7443")).unwrap();
        let credentials = read(&target(Some(&path))).unwrap().unwrap();
        assert_eq!(credentials.user, "pgreplica");
        assert_eq!(credentials.password.as_deref(), Some("s3cret"));

        for (text, why) in [
            (
                conf("https://pgreplica:s3cret@b2:7443"),
                "no longer names that API",
            ),
            (conf("https://b1:7443"), "no longer carries credentials"),
        ] {
            std::fs::write(&path, text).unwrap();
            let error = read(&target(Some(&path))).unwrap_err();
            assert_eq!(error.kind, ErrorKind::Config);
            assert!(error.message.ends_with(why), "{}", error.message);
            assert!(!error.message.contains("s3cret"), "{}", error.message);
        }
        std::fs::remove_file(&path).unwrap();
        let error = read(&target(Some(&path))).unwrap_err();
        assert!(
            error.message.starts_with(&format!(
                "cannot read the credentials for pg-backup-api at https://b1:7443 from \"{}\"",
                path.display()
            )),
            "{}",
            error.message
        );
    }
}
