//! Restoring what the fixtures made, the way Barman users (and pg-backup-api) do: `barman
//! restore` of a backup into a directory on the "standby host" ([`Lab::barman_restore`], the
//! reference an uninterrupted clone is compared with), a standby of the backup's major started
//! from such a directory and seen streaming ([`Lab::start_restored_standby`]), and reading a
//! backup's `backup.info` and directory in the catalogue.

use std::path::{Path, PathBuf};
use std::time::Duration;

use super::{Lab, BARMAN_BACKUP};
use crate::kinds::{BackupFixture, BackupInfo, Restored};
use crate::postgres::Standby;
use crate::{free_port, LabError};

/// How long a standby started from a restored directory gets to stream from the primary.
const STREAMING_TIMEOUT: Duration = Duration::from_secs(120);

impl Lab {
    /// `barman restore` of `fixture`'s backup ([`BackupFixture::backup_id`]; Barman decrypts,
    /// decompresses and combines its chain in its staging directory) into `target`, pushed over
    /// ssh to postgres@127.0.0.1 (`--remote-ssh-command`) so the files belong to postgres as a
    /// clone's do. The lab's tablespace, if the backup holds it, goes to a new directory beside
    /// `target` (`--tablespace`), never onto the primary's. `target` must not exist or be
    /// empty; it is best a [`Lab::new_dir`] path.
    pub fn barman_restore(
        &self,
        fixture: &BackupFixture,
        target: &Path,
    ) -> Result<Restored, LabError> {
        let stage = "barman restore";
        let mut args = vec![
            "restore".to_string(),
            "--remote-ssh-command".to_string(),
            self.barman_remote_ssh_command(),
        ];
        let mut tablespaces = Vec::new();
        if let Some(tablespace) = &fixture.tablespace {
            let name = target
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_else(|| "restore".to_string());
            let location = self.new_dir(&format!("{name}-{}", tablespace.name));
            args.push("--tablespace".to_string());
            args.push(format!("{}:{}", tablespace.name, location.display()));
            tablespaces.push((tablespace.name.clone(), location));
        }
        args.extend([
            fixture.server.clone(),
            fixture.backup_id.clone(),
            target.display().to_string(),
        ]);
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        self.barman.checked(stage, &args, BARMAN_BACKUP)?;
        Ok(Restored {
            data_dir: target.to_path_buf(),
            tablespaces,
        })
    }

    /// Makes the restored `data_dir` a standby of the primary (`primary_conninfo` appended to
    /// postgresql.auto.conf, `standby.signal`), starts it with the binaries of its own major
    /// version (its `PG_VERSION`) on a free port, and waits until it streams from the primary.
    /// The lab stops it on drop.
    pub fn start_restored_standby(&self, data_dir: &Path) -> Result<Standby, LabError> {
        let stage = "restored standby";
        let name = data_dir
            .file_name()
            .map(|n| {
                n.to_string_lossy()
                    .replace(|c: char| !c.is_ascii_alphanumeric(), "_")
            })
            .unwrap_or_else(|| "restored".to_string());
        let auto_conf = data_dir.join("postgresql.auto.conf");
        let mut settings = std::fs::read_to_string(&auto_conf)
            .map_err(|e| LabError::io(stage, format!("read {}", auto_conf.display()), e))?;
        settings.push_str(&format!(
            "primary_conninfo = 'host=127.0.0.1 port={} user=barman application_name={name}'\n",
            self.primary_port
        ));
        self.write_file_as_postgres(&auto_conf, &settings)?;
        self.write_file_as_postgres(&data_dir.join("standby.signal"), "")?;
        let standby = self.start_standby(data_dir, free_port())?;
        standby.wait_streaming(STREAMING_TIMEOUT)?;
        Ok(standby)
    }

    /// The `backup.info` of backup `id` on Barman server `server` (from `meta/` or the backup's
    /// own directory, whichever this Barman writes).
    pub fn backup_info(&self, server: &str, id: &str) -> Result<BackupInfo, LabError> {
        BackupInfo::read(&self.barman_home().join(server), id)
    }

    /// The directory of backup `id` on Barman server `server` in the catalogue:
    /// `<barman_home>/<server>/base/<id>` (its files are under `data/`).
    pub fn backup_directory(&self, server: &str, id: &str) -> PathBuf {
        self.barman_home().join(server).join("base").join(id)
    }
}
