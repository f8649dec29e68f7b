//! What is on the Barman host: Barman's version ([`Barman::version`],
//! [`Barman::check_reachable`]), and what a backup's directory holds — its layout, a manifest,
//! tar or encrypted files, and its backup.info wherever the release wrote it — read by one
//! small script run there ([`Probe`]).
//!
//! Must not: judge what it found (that is `restorability`); it only
//! reports.

use super::info::BackupInfo;
use super::{catalogue, exec, Barman, ServerDirs};
use crate::error::{Error, ErrorKind, Result};

/// The facts of one backup directory `$b`, one word per line (`dir data`, `dir pgdata`,
/// `manifest`, `tar`, `gpg`): shared by the one-backup probe and the catalogue script
/// ([`direct`](super::direct)), read by [`Probe::read_fact`].
macro_rules! probe_facts {
    () => {
        r#"for d in data pgdata; do if [ -d "$b/$d" ]; then echo "dir $d"; fi; done
if [ -f "$b/data/backup_manifest" ]; then echo manifest; fi
for f in "$b"/data/base.tar*; do if [ -e "$f" ]; then echo tar; fi; break; done
if [ -n "$(find "$b" -maxdepth 2 -name '*.gpg' -print -quit 2>/dev/null)" ]; then echo gpg; fi
"#
    };
}
pub(super) use probe_facts;

/// The backup probe run on the Barman host: `$1` basebackups_directory, `$2` backup_directory,
/// `$3` backup id. It prints the backup directory's facts (`probe_facts!`), then `info`
/// followed by the backup.info text, or `noinfo`. The values arrive as positional parameters,
/// never spliced into the script. backup.info is looked up where Barman ≥ 3.13.2 writes it
/// (`meta/<id>-backup.info`) first, then where older releases left it.
const PROBE_SCRIPT: &str = concat!(
    "b=\"$1/$3\"\n",
    probe_facts!(),
    r#"for f in "$2/meta/$3-backup.info" "$b/backup.info"; do
  if [ -f "$f" ]; then echo info; exec cat -- "$f"; fi
done
echo noinfo"#
);

impl Barman {
    /// Barman's version on the host (`3.4.0`), from `barman --version`.
    pub async fn version(&self) -> Result<String> {
        let out = self.run(&self.barman_argv(&["--version"])).await?;
        let text = format!("{}\n{}", out.stdout_text(), out.stderr);
        match catalogue::parse_version(&text) {
            Some(version) if out.status == 0 => Ok(version),
            _ => Err(Error::new(
                ErrorKind::Barman,
                format!(
                    "\"barman --version\" failed on the Barman host \"{}\"",
                    self.host
                ),
            )
            .detail(exec::output_detail(text.trim()))
            .hint(format!(
                "check that Barman is installed and works for the ssh user: {}",
                self.manual_command(&["--version"])
            ))),
        }
    }

    /// Checks that ssh reaches the host and Barman runs there; returns Barman's version.
    /// Barman releases older than 3.4 (Debian bookworm's) are accepted with a warning: their
    /// output formats are untested.
    pub async fn check_reachable(&self) -> Result<String> {
        let version = self.version().await?;
        let mut parts = version.split('.').map(|p| p.parse::<u32>().unwrap_or(0));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        if (major, minor) < (3, 4) {
            crate::warning!("Barman {version} on \"{}\" is older than 3.4, the oldest release pgreplica is tested with", self.host);
        }
        crate::debug!("Barman {version} answers on \"{}\"", self.host);
        Ok(version)
    }

    /// Runs [`PROBE_SCRIPT`] for one backup and reads its answer.
    pub(super) async fn probe(&self, dirs: &ServerDirs, backup_id: &str) -> Result<Probe> {
        let remote = [
            "sh",
            "-c",
            PROBE_SCRIPT,
            "pgreplica-probe",
            &dirs.basebackups_directory,
            &dirs.backup_directory,
            backup_id,
        ];
        let out = self.run(&remote).await?;
        let text = out.stdout_text();
        if out.status != 0 {
            return Err(Error::new(ErrorKind::Barman, format!("cannot inspect backup {backup_id} on the Barman host \"{}\"", self.host))
                .detail(exec::output_detail(&out.stderr))
                .hint("check that the ssh user can read Barman's catalogue (usually: log in as the barman user)"));
        }
        Probe::parse(&text).map_err(|why| {
            Error::new(ErrorKind::Barman, format!("cannot read backup.info of backup {backup_id} on \"{}\": {why}", self.host))
                .hint(format!(
                    "look for {}/meta/{backup_id}-backup.info or {}/{backup_id}/backup.info on the Barman host",
                    dirs.backup_directory, dirs.basebackups_directory
                ))
        })
    }
}

/// What the probe found in a backup's directory.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub(super) struct Probe {
    /// `data` (Barman's current layout) or `pgdata` (backup_version 1); `None` when neither
    /// directory exists.
    pub(super) data_subdir: Option<String>,
    /// `data/backup_manifest` exists.
    pub(super) has_manifest: bool,
    /// A `base.tar*` file: a tar-format backup.
    pub(super) tar: bool,
    /// A `*.gpg` file: an encrypted backup.
    pub(super) gpg: bool,
    /// The backup.info found.
    pub(super) info: Option<BackupInfo>,
}

impl Probe {
    /// Reads the probe script's output.
    pub(super) fn parse(text: &str) -> Result<Probe, String> {
        let mut probe = Probe::default();
        let mut lines = text.split_inclusive('\n');
        for line in lines.by_ref() {
            match line.trim_end() {
                "noinfo" => return Err("no backup.info found in either location".into()),
                "info" => {
                    let rest: String = lines.collect();
                    probe.info = Some(BackupInfo::parse(&rest)?);
                    return Ok(probe);
                }
                other if probe.read_fact(other) => {}
                other => return Err(format!("unexpected probe line {other:?}")),
            }
        }
        Err("the probe stopped early".into())
    }

    /// Takes one line of `probe_facts!`'s output; whether it was one.
    pub(super) fn read_fact(&mut self, line: &str) -> bool {
        match line {
            // Barman reads `pgdata/` as the layout marker when it exists (backup_version 1).
            "dir data" if self.data_subdir.is_none() => self.data_subdir = Some("data".into()),
            "dir data" => {}
            "dir pgdata" => self.data_subdir = Some("pgdata".into()),
            "manifest" => self.has_manifest = true,
            "tar" => self.tar = true,
            "gpg" => self.gpg = true,
            _ => return false,
        }
        true
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barman::{data_dir, tablespace_dir, Transport};
    use states::BackupFacts;

    #[test]
    fn probe_output_and_legacy_layout() {
        let p = Probe::parse("dir data\ndir pgdata\ninfo\nstatus=DONE\nmode=rsync-exclusive\n")
            .expect("parses");
        assert_eq!(p.data_subdir.as_deref(), Some("pgdata"));
        assert!(!p.has_manifest);
        assert!(Probe::parse("dir data\nnoinfo\n")
            .expect_err("no info")
            .contains("no backup.info"));
        assert_eq!(
            Probe::parse("dir data\n"),
            Err("the probe stopped early".to_string())
        );
        assert_eq!(
            Probe::parse("surprise\n"),
            Err("unexpected probe line \"surprise\"".to_string())
        );
        let legacy = BackupFacts {
            backup_dir: "/b/base/X".into(),
            data_subdir: "pgdata".into(),
            ..BackupFacts::default()
        };
        assert_eq!(
            tablespace_dir(&legacy, 16400),
            "/b/base/X/pgdata/pg_tblspc/16400"
        );
        assert_eq!(data_dir(&legacy), "/b/base/X/pgdata");
    }

    /// Runs the real probe script through `sh` on a catalogue laid out on disk in both layouts,
    /// with a path that needs quoting.
    #[test]
    fn probe_script_on_real_directories() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let home = tmp.path().join("it's $HOME; a dir");
        let id = "20261125T150740";
        let bb = home.join("pg/base");
        std::fs::create_dir_all(bb.join(id).join("data")).expect("mkdir");
        std::fs::write(bb.join(id).join("data/backup_manifest"), "{}").expect("write");
        std::fs::write(bb.join(id).join("backup.info"), "status=DONE\nsize=1\n").expect("write");
        let b = Barman::new("local", "pg", None, vec![])
            .with_transport(Transport::Local(vec!["sh".into(), "-c".into()]));
        let d = ServerDirs {
            backup_directory: home.join("pg").to_str().expect("utf-8").into(),
            basebackups_directory: bb.to_str().expect("utf-8").into(),
            ..ServerDirs::default()
        };
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let legacy_place = rt.block_on(b.probe(&d, id)).expect("probe runs");
        assert_eq!(legacy_place.data_subdir.as_deref(), Some("data"));
        assert!(legacy_place.has_manifest && !legacy_place.tar && !legacy_place.gpg);
        assert_eq!(
            legacy_place.info.as_ref().and_then(|i| i.get("size")),
            Some("1")
        );
        // 3.13.2+ layout wins when both exist; tar and gpg files are noticed.
        std::fs::create_dir_all(home.join("pg/meta")).expect("mkdir");
        std::fs::write(
            home.join(format!("pg/meta/{id}-backup.info")),
            "status=DONE\nsize=2\n",
        )
        .expect("write");
        std::fs::write(bb.join(id).join("data/base.tar.gpg"), "").expect("write");
        let meta = rt.block_on(b.probe(&d, id)).expect("probe runs");
        assert_eq!(meta.info.as_ref().and_then(|i| i.get("size")), Some("2"));
        assert!(meta.tar && meta.gpg);
        let err = rt
            .block_on(b.probe(&d, "20000101T000000"))
            .expect_err("no such backup");
        assert_eq!(err.kind, ErrorKind::Barman);
        assert!(err.message.contains("backup.info"), "{}", err.message);
    }
}
