//! The contenders of `cargo xtask bench` ([`Contender`]) and how each runs: a local `cp -a`,
//! plain `rsync -a` over ssh (with ssh's default cipher, and with AES-GCM), `repmgr standby
//! clone` (through an `ssh` wrapper that carries the lab's options), `barman recover`,
//! `pgreplica clone start` with each copy engine ([`Engine`]), pgreplica's resume after a kill,
//! and the slow-link pair; each run timed into a fresh directory ([`Bench::timed`]), with its
//! CPU time at both ends and its peak memory, and checked whole.

use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use lab::clone_check::{self, kill_group, wait_until_stopped};
use lab::status::{self, Phase};
use lab::{PG_BIN, REPMGR, SSH};
use serde_json::Value;

use super::process::{reaped_children_cpu, run_to_end, spawn_logged, sync, tree_size, Cost};
use super::{Bench, KILL_AT, RUN_LIMIT};

/// The cipher the AES-GCM rsync row asks ssh for: what pgreplica offers first on a CPU with
/// AES instructions (`pgreplica::barman::ssh::AES_GCM_FIRST`), so that row is the same
/// transport as pgreplica's own rsync.
const AES_GCM: &str = "aes128-gcm@openssh.com";

/// The slow link the slow-link pair copies over: rsync's `--bwlimit` (KiB/s) for 20 MB/s.
pub(super) const SLOW_LINK_KBPS: u32 = 19_531;

/// The compression in transit the slow-link pair turns on (`PGREPLICA_RSYNC_COMPRESS`).
pub(super) const SLOW_LINK_COMPRESSION: &str = "zstd";

/// A copy engine pgreplica can be told to use. Each is timed at `--jobs 1, 2, 4` (and the
/// default's).
///
/// A new engine adds its variant here, with the environment of `clone start` that selects it
/// ([`Engine::env`]); the table and JSON name it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Engine {
    /// rsync over ssh, pgreplica's default engine.
    Rsync,
    /// The in-process streaming engine (`PGREPLICA_COPY_ENGINE=stream`): tar over ssh, each
    /// file written, checkpointed and checked against backup_manifest as it arrives.
    Stream,
}

impl Engine {
    /// Every engine the bench times.
    pub(super) const ALL: [Engine; 2] = [Engine::Rsync, Engine::Stream];

    /// The engine's name in labels and keys; none for pgreplica's default engine, whose rows
    /// keep their names.
    fn tag(self) -> Option<&'static str> {
        match self {
            Engine::Rsync => None,
            Engine::Stream => Some("stream"),
        }
    }

    /// The environment variable that selects the engine; none for the default.
    fn env(self) -> Option<(&'static str, &'static str)> {
        match self {
            Engine::Rsync => None,
            Engine::Stream => Some(("PGREPLICA_COPY_ENGINE", "stream")),
        }
    }
}

/// One way of cloning the backup into a fresh directory.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(super) enum Contender {
    /// `cp -a` of the backup's data directory on this machine: the local-copy baseline (no
    /// network, no encryption), what any copy over ssh is bounded by.
    LocalCopy,
    /// `rsync -a` over ssh of the backup's data directory, ssh's default cipher: the baseline.
    Rsync,
    /// The same with `-c aes128-gcm@openssh.com`: the transport pgreplica's rsync uses, hence
    /// the floor for its Transfer step.
    RsyncAesGcm,
    /// `repmgr standby clone` in Barman mode.
    Repmgr,
    /// `barman recover --remote-ssh-command … --jobs N`, pushing to the standby host.
    BarmanRecover { jobs: u32 },
    /// `pgreplica clone start --jobs N` with `engine`.
    Pgreplica { jobs: u32, engine: Engine },
    /// `pgreplica clone start --jobs N`, SIGKILLed at [`KILL_AT`], then `clone resume`: only
    /// the resume is timed.
    Resume { jobs: u32 },
    /// `pgreplica clone start --jobs 1 --bwlimit` [`SLOW_LINK_KBPS`], with or without
    /// compression in transit.
    SlowLink { compress: bool },
}

impl Contender {
    /// Every contender, in the order of the table.
    pub(super) fn all() -> Vec<Contender> {
        let mut all = vec![
            Contender::LocalCopy,
            Contender::Rsync,
            Contender::RsyncAesGcm,
            Contender::Repmgr,
            Contender::BarmanRecover { jobs: 1 },
            Contender::BarmanRecover { jobs: 2 },
        ];
        let mut streams = vec![1, 2, 4];
        if !streams.contains(&default_jobs()) {
            streams.push(default_jobs());
            streams.sort_unstable();
        }
        for engine in Engine::ALL {
            all.extend(
                streams
                    .iter()
                    .map(|&jobs| Contender::Pgreplica { jobs, engine }),
            );
        }
        all.push(Contender::Resume { jobs: 1 });
        all.extend([false, true].map(|compress| Contender::SlowLink { compress }));
        all
    }

    /// pgreplica's default clone, as an operator gets it with no `--jobs`: rsync engine, the
    /// streams `clone start` picks on this host. The ratios to repmgr and rsync and the fixed
    /// costs are read from it.
    pub(super) fn pgreplica_default() -> Contender {
        Contender::Pgreplica {
            jobs: default_jobs(),
            engine: Engine::Rsync,
        }
    }

    /// pgreplica with one stream: the same single rsync as the AES-GCM baseline (the
    /// checkpoint overhead) and the full clone the resume at `-j1` is compared with.
    pub(super) const PGREPLICA_ONE_STREAM: Contender = Contender::Pgreplica {
        jobs: 1,
        engine: Engine::Rsync,
    };

    /// How the table names the contender.
    pub(super) fn label(self) -> String {
        match self {
            Contender::LocalCopy => "cp -a, local (no network)".to_string(),
            Contender::Rsync => "rsync -a over ssh (baseline)".to_string(),
            Contender::RsyncAesGcm => "rsync -a over ssh, AES-GCM".to_string(),
            Contender::Repmgr => "repmgr standby clone".to_string(),
            Contender::BarmanRecover { jobs } => format!("barman recover --jobs {jobs}"),
            Contender::Pgreplica { jobs, engine } => match engine.tag() {
                None => format!("pgreplica --jobs {jobs}"),
                Some(tag) => format!("pgreplica --jobs {jobs} ({tag} engine)"),
            },
            Contender::Resume { jobs } => format!("pgreplica resume at 50% (-j{jobs})"),
            Contender::SlowLink { compress: false } => "pgreplica, 20 MB/s link".to_string(),
            Contender::SlowLink { compress: true } => {
                format!("pgreplica, 20 MB/s link, {SLOW_LINK_COMPRESSION}")
            }
        }
    }

    /// A short name for directories, logs and JSON.
    pub(super) fn key(self) -> String {
        match self {
            Contender::LocalCopy => "cp".to_string(),
            Contender::Rsync => "rsync".to_string(),
            Contender::RsyncAesGcm => "rsync-aes-gcm".to_string(),
            Contender::Repmgr => "repmgr".to_string(),
            Contender::BarmanRecover { jobs } => format!("barman-recover-j{jobs}"),
            Contender::Pgreplica { jobs, engine } => match engine.tag() {
                None => format!("pgreplica-j{jobs}"),
                Some(tag) => format!("pgreplica-{tag}-j{jobs}"),
            },
            Contender::Resume { jobs } => format!("pgreplica-resume-j{jobs}"),
            Contender::SlowLink { compress: false } => "pgreplica-slow-link".to_string(),
            Contender::SlowLink { compress: true } => {
                format!("pgreplica-slow-link-{SLOW_LINK_COMPRESSION}")
            }
        }
    }
}

/// One timed run.
#[derive(Clone, Debug)]
pub(super) struct Sample {
    /// Wall time, CPU time and peak memory on this end (the timed command's process tree).
    pub(super) cost: Cost,
    /// CPU seconds at the far end of its ssh connections (the sessions of the lab's sshd).
    pub(super) remote_cpu_seconds: f64,
    /// Resume only: bytes the resume sent again and kept, and bytes on disk at the kill.
    pub(super) resume: Option<ResumeFacts>,
    /// pgreplica only: seconds per step, from the clone's own history, in order.
    pub(super) steps: Vec<(String, f64)>,
    /// pgreplica only: seconds the Transfer step's copy spent in the store (its checkpoints),
    /// from the clone's `facts.transfer.checkpoint_ms`.
    pub(super) checkpoint_s: Option<f64>,
}

#[derive(Clone, Copy, Debug)]
pub(super) struct ResumeFacts {
    pub(super) resent: u64,
    /// Bytes of the files in flight at the kill that the resume kept and completed.
    pub(super) kept: u64,
    pub(super) on_disk_at_kill: u64,
}
impl Bench {
    /// One run of `contender` into a fresh directory: timed, checked, then removed.
    pub(super) fn timed(&self, contender: Contender, round: &str) -> Result<Sample, String> {
        let dest = self.lab.new_dir(&contender.key());
        let log = self.work.join(format!("{}-{round}.log", contender.key()));
        // Writes of the previous run still in the page cache would be flushed during this one.
        sync()?;
        let sample = match contender {
            Contender::LocalCopy => self.run_local_copy(&dest, &log),
            Contender::Rsync => self.run_rsync(&dest, &log, None),
            Contender::RsyncAesGcm => self.run_rsync(&dest, &log, Some(AES_GCM)),
            Contender::Repmgr => self.run_repmgr(&dest, &log),
            Contender::BarmanRecover { jobs } => self.run_barman_recover(&dest, &log, jobs),
            Contender::Pgreplica { jobs, engine } => {
                let mut cmd = self.pgreplica_start(&dest, jobs, &[])?;
                cmd.envs(engine.env());
                self.run_pgreplica(cmd, &dest, &log)
            }
            Contender::Resume { jobs } => self.run_resume(&dest, &log, jobs),
            Contender::SlowLink { compress } => {
                let limit = SLOW_LINK_KBPS.to_string();
                let mut cmd = self.pgreplica_start(&dest, 1, &["--bwlimit", &limit])?;
                if compress {
                    cmd.env("PGREPLICA_RSYNC_COMPRESS", SLOW_LINK_COMPRESSION);
                }
                self.run_pgreplica(cmd, &dest, &log)
            }
        }
        .and_then(|sample| self.check_whole(&dest).map(|()| sample))
        .map_err(|e| format!("{e}\n(log: {})", log.display()))?;
        std::fs::remove_dir_all(&dest).map_err(|e| format!("rm -r {}: {e}", dest.display()))?;
        Ok(sample)
    }

    /// `cmd` run to its end with what it cost at both ends.
    pub(super) fn measured(&self, cmd: &mut Command, log: &Path) -> Result<Sample, String> {
        let remote_before = self.remote_cpu()?;
        let cost = run_to_end(cmd, log)?;
        Ok(Sample {
            cost,
            remote_cpu_seconds: self.remote_cpu()? - remote_before,
            resume: None,
            steps: Vec::new(),
            checkpoint_s: None,
        })
    }

    /// CPU seconds of every ssh session of the lab's sshd that has ended.
    fn remote_cpu(&self) -> Result<f64, String> {
        let pid = self.lab.sshd_pid().ok_or("the lab's sshd is not running")?;
        reaped_children_cpu(pid)
    }

    fn run_local_copy(&self, dest: &Path, log: &Path) -> Result<Sample, String> {
        let mut cmd = Command::new("/bin/cp");
        cmd.arg("-a").arg(self.backup.data_dir.join(".")).arg(dest);
        std::fs::create_dir_all(dest).map_err(|e| format!("mkdir {}: {e}", dest.display()))?;
        self.measured(&mut cmd, log)
    }

    /// `rsync -a` over ssh with the lab's options, and `-c cipher` when given.
    fn run_rsync(&self, dest: &Path, log: &Path, cipher: Option<&str>) -> Result<Sample, String> {
        let mut ssh_args = self.lab.ssh_args();
        if let Some(cipher) = cipher {
            ssh_args.extend(["-c".to_string(), cipher.to_string()]);
        }
        let rsh = ssh_command_line(&ssh_args);
        let source = format!(
            "{}:{}/",
            self.lab.barman_ssh_host(),
            self.backup.data_dir.display()
        );
        let mut cmd = self.lab.command_as_postgres("/usr/bin/rsync");
        cmd.args(["-a", "-e", &rsh, &source])
            .arg(format!("{}/", dest.display()));
        self.measured(&mut cmd, log)
    }

    fn run_repmgr(&self, dest: &Path, log: &Path) -> Result<Sample, String> {
        let conf = self.repmgr_conf(dest)?;
        let mut cmd = self.lab.command_as_postgres(REPMGR);
        // repmgr applies no ssh options to its Barman calls nor to its rsync: it runs plain
        // `ssh`, so the wrapper first on PATH is how it reaches the lab's sshd.
        cmd.env(
            "PATH",
            format!(
                "{}:{PG_BIN}:/usr/local/bin:/usr/bin:/bin",
                self.wrapper_bin.display()
            ),
        )
        .arg("-f")
        .arg(&conf)
        .args(self.lab.source_args())
        .args(["standby", "clone"]);
        self.measured(&mut cmd, log)
    }

    fn run_barman_recover(&self, dest: &Path, log: &Path, jobs: u32) -> Result<Sample, String> {
        let mut cmd = self.lab.barman_command([
            "recover",
            "--remote-ssh-command",
            &self.lab.barman_remote_ssh_command(),
            "--jobs",
            &jobs.to_string(),
            self.lab.barman_server(),
            &self.backup.id,
        ]);
        cmd.arg(dest);
        self.measured(&mut cmd, log)
    }

    fn run_pgreplica(&self, mut cmd: Command, dest: &Path, log: &Path) -> Result<Sample, String> {
        let sample = self.measured(&mut cmd, log)?;
        let status = self.check_verified(dest)?;
        Ok(Sample {
            steps: step_times(&status),
            checkpoint_s: status::fact(&status, "transfer")["checkpoint_ms"]
                .as_u64()
                .map(|ms| ms as f64 / 1000.0),
            ..sample
        })
    }

    /// Starts a clone, SIGKILLs its process group once half the backup is on disk, waits for
    /// every process of it to be gone, then times `clone resume`.
    fn run_resume(&self, dest: &Path, log: &Path, jobs: u32) -> Result<Sample, String> {
        let mut cmd = self.pgreplica_start(dest, jobs, &[])?;
        // Its own process group, so the kill reaches runuser, pgreplica and the guardians alike.
        cmd.process_group(0);
        let mut child = spawn_logged(&mut cmd, log)?;
        let target = (self.backup.bytes as f64 * KILL_AT) as u64;
        let deadline = Instant::now() + RUN_LIMIT;
        let on_disk_at_kill = loop {
            if let Some(status) = child.try_wait().map_err(|e| format!("wait: {e}"))? {
                return Err(format!(
                    "pgreplica ended ({status}) before {:.0} % of the backup was copied; \
                     the kill point cannot be reached on so small a lab",
                    KILL_AT * 100.0
                ));
            }
            let on_disk = tree_size(dest).0;
            if on_disk >= target {
                break on_disk;
            }
            if Instant::now() > deadline {
                // Failing already: a kill that fails too adds nothing to say.
                let _ = kill_group(&mut child);
                return Err(format!("no {KILL_AT} of the backup within {RUN_LIMIT:?}"));
            }
            std::thread::sleep(Duration::from_millis(10));
        };
        kill_group(&mut child).map_err(|e| format!("kill the clone's process group: {e}"))?;
        // Guardians exit once their rsyncs are gone, a moment after the kill.
        wait_until_stopped(&self.lab, &self.pgreplica, dest, Duration::from_secs(30))?;
        // As before every timed run: the killed run's writes are not the resume's to flush.
        sync()?;

        let dest_arg = dest.display().to_string();
        let mut resume =
            clone_check::pgreplica(&self.lab, &self.pgreplica, &["clone", "resume", &dest_arg]);
        let sample = self.measured(&mut resume, &log.with_extension("resume.log"))?;
        let status = self.check_verified(dest)?;
        let transfer = |key: &str| {
            status::fact(&status, "transfer")[key]
                .as_u64()
                .ok_or_else(|| format!("no transfer.{key} in the clone's status: {status}"))
        };
        Ok(Sample {
            resume: Some(ResumeFacts {
                resent: transfer("bytes_sent")?,
                kept: transfer("bytes_kept")?,
                on_disk_at_kill,
            }),
            ..sample
        })
    }

    /// `pgreplica clone start -f CONF -h … --jobs N <extra>` as postgres, for a clone into
    /// `dest`.
    pub(super) fn pgreplica_start(
        &self,
        dest: &Path,
        jobs: u32,
        extra: &[&str],
    ) -> Result<Command, String> {
        let conf = self.repmgr_conf(dest)?;
        let mut args = self.lab.clone_start_args(&conf);
        args.extend(["--jobs".to_string(), jobs.to_string()]);
        args.extend(extra.iter().map(|a| a.to_string()));
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        Ok(clone_check::pgreplica(&self.lab, &self.pgreplica, &args))
    }

    /// A repmgr.conf for a standby in `dest`, beside the run's logs.
    fn repmgr_conf(&self, dest: &Path) -> Result<PathBuf, String> {
        let name = dest
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_else(|| "standby".to_string());
        let path = self.work.join(format!("{name}.conf"));
        let text = self.lab.repmgr_conf(2, "node2", dest, lab::free_port());
        self.lab
            .write_file_as_postgres(&path, &text)
            .map_err(|e| e.to_string())?;
        Ok(path)
    }

    /// The clone is Done and VerifyCopy checked every file against the backup manifest.
    pub(super) fn check_verified(&self, dest: &Path) -> Result<Value, String> {
        let status = clone_check::clone_status(&self.lab, &self.pgreplica, dest)?;
        match (status::phase(&status), status::verified_files(&status)) {
            (Some(Phase::Done), Some(files)) if files > 0 => Ok(status),
            _ => Err(format!(
                "the clone in {} is not Done and verified: phase {}, verification {}",
                dest.display(),
                status["phase"],
                status::fact(&status, "verification")
            )),
        }
    }

    /// Whatever the tool, the copy must be whole: pg_control present and at least the backup's
    /// bytes on disk (repmgr ignores rsync's exit status, so its success proves nothing).
    fn check_whole(&self, dest: &Path) -> Result<(), String> {
        if !dest.join("global/pg_control").is_file() {
            return Err(format!("{} has no global/pg_control", dest.display()));
        }
        let (bytes, _) = tree_size(dest);
        // WAL and configuration differ between tools; the relation files must all be there.
        if (bytes as f64) < self.backup.bytes as f64 * 0.95 {
            return Err(format!(
                "{} holds {bytes} bytes, the backup {}: the copy is incomplete",
                dest.display(),
                self.backup.bytes
            ));
        }
        Ok(())
    }
}

/// Seconds per step of a clone, from the `history` of its `clone status --json` entry.
pub(super) fn step_times(status: &Value) -> Vec<(String, f64)> {
    let mut steps: Vec<(String, f64)> = Vec::new();
    for transition in status::history(status) {
        let step = match status::step(&transition["step"]) {
            Some(step) => step.name().to_string(),
            None => transition["step"].to_string(),
        };
        let Some(millis) = transition["duration_ms"].as_u64() else {
            continue;
        };
        let seconds = millis as f64 / 1000.0;
        match steps.iter_mut().find(|(name, _)| *name == step) {
            Some((_, total)) => *total += seconds,
            None => steps.push((step, seconds)),
        }
    }
    steps
}

/// The lab's ssh client (by absolute path: the wrapper must not find itself) with `ssh_args`,
/// as one line of shell words.
fn ssh_command_line(ssh_args: &[String]) -> String {
    std::iter::once(SSH)
        .chain(ssh_args.iter().map(String::as_str))
        .map(lab::shell_quote)
        .collect::<Vec<_>>()
        .join(" ")
}

/// The `ssh` wrapper for repmgr: the lab's options, then whatever repmgr or its rsync pass.
///
/// repmgr has no way to give ssh options to its Barman calls (`ssh <barman_host> barman …`) or
/// to the rsync it runs; its users put them in `~/.ssh/config`. The bench must not touch any
/// home directory, so this wrapper comes first on PATH in repmgr's environment only.
pub(super) fn ssh_wrapper(ssh_args: &[String]) -> String {
    let words = ssh_command_line(ssh_args);
    format!(
        "#!/bin/sh\n\
         # Written by `cargo xtask bench`: repmgr takes no ssh options for Barman.\n\
         exec {words} \"$@\"\n"
    )
}

pub(super) fn write_executable(path: &Path, text: &str) -> Result<(), String> {
    use std::os::unix::fs::PermissionsExt;
    std::fs::write(path, text).map_err(|e| format!("write {}: {e}", path.display()))?;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755))
        .map_err(|e| format!("chmod {}: {e}", path.display()))
}

/// The `--jobs` `clone start` picks when none is given, by the same rule
/// ([`states::CloneRequest::default_jobs`] of this host's cores).
pub(super) fn default_jobs() -> u32 {
    states::CloneRequest::default_jobs(std::thread::available_parallelism().map_or(0, usize::from))
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::args::words;

    #[test]
    fn ssh_wrapper_passes_the_lab_options_then_the_callers_arguments() {
        let text = ssh_wrapper(&words(&[
            "-p",
            "2222",
            "-o",
            "BatchMode=yes",
            "-i",
            "/tmp/a b",
        ]));
        assert!(
            text.ends_with("exec /usr/bin/ssh -p 2222 -o BatchMode=yes -i '/tmp/a b' \"$@\"\n"),
            "{text}"
        );
        assert!(text.starts_with("#!/bin/sh\n"));
    }
}
