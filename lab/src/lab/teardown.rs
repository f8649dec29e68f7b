//! Tearing a lab down ([`Lab::stop`], or drop): standbys, Barman's WAL receivers (one per
//! server), the gpg-agent of the lab's keyring, the primary and the sshd stopped newest first,
//! any process still running from inside the lab reaped and reported, the directory removed
//! (unless [`KEEP_ENV`] keeps it).

use std::path::Path;
use std::time::Duration;

use super::{Lab, BARMAN_QUICK, KEEP_ENV};
use crate::exec;
use crate::gpg;
use crate::postgres;
use crate::LabError;

impl Lab {
    /// Stops the lab and removes its directory (kept with [`KEEP_ENV`]`=1`), like drop, but
    /// reports problems: a step that failed, or processes that were still running inside the
    /// lab afterwards and had to be killed (a leak by the lab or by the test).
    pub fn stop(mut self) -> Result<(), LabError> {
        let mut errors = self.tear_down().into_iter();
        match errors.next() {
            None => Ok(()),
            Some(first) => Err(errors.fold(first, |all, e| all.detail(e.to_string()))),
        }
    }

    fn tear_down(&mut self) -> Vec<LabError> {
        if std::mem::replace(&mut self.torn_down, true) {
            return Vec::new();
        }
        let mut errors = self.shut_down();
        if std::env::var(KEEP_ENV).is_ok_and(|v| v == "1") {
            eprintln!("lab: kept {} ({KEEP_ENV}=1)", self.dir.display());
        } else if let Err(e) = remove_tree(&self.dir) {
            errors.push(LabError::io(
                "stop",
                format!("remove {}", self.dir.display()),
                e,
            ));
        }
        errors
    }

    /// Stops everything the lab started, newest first; returns what went wrong.
    fn shut_down(&mut self) -> Vec<LabError> {
        let mut errors = Vec::new();
        let standbys =
            std::mem::take(&mut *self.standbys.lock().unwrap_or_else(|e| e.into_inner()));
        for data_dir in standbys {
            errors.extend(postgres::stop(&data_dir, "stop standby").err());
        }
        if self.barman_started {
            let servers =
                std::mem::take(&mut *self.servers.lock().unwrap_or_else(|e| e.into_inner()));
            for server in servers.iter().rev() {
                errors.extend(
                    self.barman
                        .checked(
                            "stop receive-wal",
                            &["receive-wal", "--stop", &server.name],
                            BARMAN_QUICK,
                        )
                        .err(),
                );
            }
        }
        let keyring = self
            .fixtures
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .keyring;
        if keyring {
            errors.extend(gpg::stop_agent(&self.barman.gnupg_home).err());
        }
        if self.primary_started {
            errors.extend(postgres::stop(&self.primary_data_dir(), "stop primary").err());
        }
        if let Some(sshd) = self.sshd.take() {
            errors.extend(sshd.stop().err());
        }
        errors.extend(reap_leftovers(&self.dir).err());
        errors
    }
}

impl Drop for Lab {
    /// Stops everything (see [`Lab::stop`]), printing what went wrong instead of returning it.
    fn drop(&mut self) {
        for error in self.tear_down() {
            eprintln!("{error}");
        }
    }
}

/// Removes the lab directory. A process killed by `reap_leftovers` (pg_receivewal, say) may
/// still be closing a file in it for a moment, which makes `remove_dir_all` find a directory
/// refilled behind it: try again a few times before calling it a failure.
fn remove_tree(dir: &Path) -> std::io::Result<()> {
    let mut attempts = 0;
    loop {
        match std::fs::remove_dir_all(dir) {
            Err(e) if e.kind() == std::io::ErrorKind::DirectoryNotEmpty && attempts < 20 => {
                attempts += 1;
                std::thread::sleep(Duration::from_millis(100));
            }
            result => return result,
        }
    }
}

/// Stops any process still running from inside the lab (its command line names a path in the
/// lab directory: a pg_receivewal, a postgres, an ssh a test left behind). They are all
/// descendants of what the lab or its test started; each is signalled by pid.
fn reap_leftovers(dir: &Path) -> Result<(), LabError> {
    let needle = format!("{}/", dir.display()).into_bytes();
    let me = std::process::id();
    let leftovers = || -> Vec<u32> {
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .filter_map(|e| e.ok()?.file_name().to_str()?.parse::<u32>().ok())
            .filter(|&pid| pid != me)
            .filter(|pid| {
                std::fs::read(format!("/proc/{pid}/cmdline")).is_ok_and(|cmdline| {
                    cmdline
                        .windows(needle.len())
                        .any(|w| w == needle.as_slice())
                })
            })
            .collect()
    };
    // An ssh session or pg_receivewal may still be on its way out: give them a moment first.
    if exec::wait_for("processes exit", Duration::from_secs(3), || {
        Ok(leftovers().is_empty())
    })
    .is_ok()
    {
        return Ok(());
    }
    let first = leftovers();
    let described: Vec<String> = first
        .iter()
        .map(|pid| {
            let cmdline = std::fs::read(format!("/proc/{pid}/cmdline")).unwrap_or_default();
            format!(
                "{pid}: {}",
                String::from_utf8_lossy(&cmdline)
                    .replace('\0', " ")
                    .trim_end()
            )
        })
        .collect();
    for &pid in &first {
        exec::signal(pid, libc::SIGTERM);
    }
    let stopped = exec::wait_for("stop leftover processes", Duration::from_secs(10), || {
        Ok(leftovers().is_empty())
    });
    if stopped.is_err() {
        for pid in leftovers() {
            exec::signal(pid, libc::SIGKILL);
        }
    }
    Err(LabError::new(
        "stop",
        format!(
            "{} process(es) were still running in {}; stopped them",
            first.len(),
            dir.display()
        ),
    )
    .detail(described.join("\n")))
}
