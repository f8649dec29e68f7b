//! What a campaign tells: one [`Kill`] as it happened, one round's [`RoundReport`] (a line of
//! `cargo xtask chaos`'s output, with the reason of a failure), and the [`summary`] of a
//! campaign's rounds.

use std::fmt;
use std::path::PathBuf;
use std::time::Duration;

use states::{Phase, Step};

use super::kill::Action;
use super::options::ChaosMode;
use crate::status::phase_name;

/// One kill of a round, as it happened.
#[derive(Clone, Debug, PartialEq)]
pub struct Kill {
    /// How it was delivered.
    pub action: Action,
    /// The step it aimed at.
    pub aimed: Step,
    /// Where the clone was when the kill landed (its phase after the kill, for SIGKILL); None
    /// when its status showed no phase.
    pub landed: Option<Phase>,
    /// The Transfer's progress (bytes done / total) when it landed in Transfer.
    pub fraction: Option<f64>,
    /// The kill caught the copy in the middle: rsync temporary files were left (Barman mode),
    /// the recovery operation was still running (pg-backup-api mode), or the copy was partial
    /// (pg_basebackup mode).
    pub mid_file: bool,
}

impl fmt::Display for Kill {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}@{}", self.action, phase_name(self.landed))?;
        if let Some(fraction) = self.fraction {
            write!(f, " {:.0}%", fraction * 100.0)?;
        }
        if self.mid_file {
            f.write_str(" mid-file")?;
        }
        if self.landed != Some(Phase::At(self.aimed)) {
            write!(f, " (aimed {})", self.aimed)?;
        }
        Ok(())
    }
}

/// What one round did and how it ended.
#[derive(Clone, Debug)]
pub struct RoundReport {
    /// The copying mode.
    pub mode: ChaosMode,
    /// The steps of the campaign's plan ([`ChaosOptions::steps`](super::ChaosOptions::steps)):
    /// the mode's, for the campaign's kind of backup.
    pub steps: &'static [Step],
    /// The round's number (with the campaign's seed, it replays the round).
    pub round: u32,
    /// The campaign's seed.
    pub seed: u64,
    /// The clone's `--jobs` (Barman mode).
    pub jobs: u32,
    /// The copy's rate limit: KiB/s per rsync in Barman mode, kB/s in pg_basebackup mode (see
    /// [`ChaosOptions::bwlimit_kbps`](super::ChaosOptions::bwlimit_kbps)).
    pub bwlimit_kbps: u32,
    /// The kills, in order.
    pub kills: Vec<Kill>,
    /// `clone resume` runs the round needed.
    pub resumes: u32,
    /// Resumes that needed the operator's choice of operation (pg-backup-api mode: the
    /// spawn-failure fault fixed, `--api-operation new`; or which operation is the clone's
    /// when pgreplica cannot tell).
    pub operator_choices: u32,
    /// pg-backup-api mode: the round began with the API server unable to start workers, as
    /// pg-backup-api 2.2 without `pg-backup-api` on its PATH (`--spawn-fails`), fixed when
    /// pgreplica stopped for it.
    pub spawn_failure: bool,
    /// Ok, or why the round failed.
    pub outcome: Result<(), String>,
    /// How long the round took.
    pub duration: Duration,
    /// The round's data directory (removed after a round that passed).
    pub data_dir: PathBuf,
}

impl fmt::Display for RoundReport {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let kills: Vec<String> = self.kills.iter().map(Kill::to_string).collect();
        let settings = match self.mode {
            ChaosMode::Barman => {
                format!("jobs {} bwlimit {:>4} KiB/s", self.jobs, self.bwlimit_kbps)
            }
            ChaosMode::Api if self.spawn_failure => "API, spawn failure".to_string(),
            ChaosMode::Api => "API".to_string(),
            ChaosMode::BaseBackup => format!("max-rate {:>5} kB/s", self.bwlimit_kbps),
        };
        let faults = self.kills.iter().filter(|k| k.action.is_fault()).count();
        let count = match faults {
            0 => format!("{} kill(s)", self.kills.len()),
            _ => format!("{} kill(s) + {faults} fault(s)", self.kills.len() - faults),
        };
        write!(
            f,
            "round {:>3} (seed {}, {}): {settings} | {count}: {} | {} resume(s){} | {} in {:.1} s",
            self.round,
            self.seed,
            self.mode.name(),
            if kills.is_empty() {
                "-".to_string()
            } else {
                kills.join(", ")
            },
            self.resumes,
            if self.operator_choices > 0 {
                format!(", {} operator choice(s)", self.operator_choices)
            } else {
                String::new()
            },
            if self.outcome.is_ok() { "OK" } else { "FAILED" },
            self.duration.as_secs_f64()
        )?;
        if let Err(why) = &self.outcome {
            write!(
                f,
                "\n    {why}\n    kept {} (pgreplica's output in {})",
                self.data_dir.display(),
                self.data_dir.with_extension("log").display()
            )?;
        }
        Ok(())
    }
}

/// What a campaign found over its rounds: the mode, kills per step and action, failures.
pub fn summary(reports: &[RoundReport]) -> String {
    let mode = reports.first().map_or(ChaosMode::Barman, |r| r.mode);
    let steps = reports.first().map_or(mode.steps(), |r| r.steps);
    let actions = mode.actions();
    let mut per_step: Vec<(Option<Phase>, Vec<u32>)> = steps
        .iter()
        .map(|s| Phase::At(*s))
        .chain(std::iter::once(Phase::Done))
        .map(|phase| (Some(phase), vec![0; actions.len()]))
        .collect();
    let mut mid_file = 0;
    for kill in reports.iter().flat_map(|r| &r.kills) {
        let column = actions.iter().position(|a| *a == kill.action).unwrap_or(0);
        match per_step.iter_mut().find(|(step, _)| *step == kill.landed) {
            Some((_, counts)) => counts[column] += 1,
            None => {
                let mut counts = vec![0; actions.len()];
                counts[column] = 1;
                per_step.push((kill.landed, counts));
            }
        }
        mid_file += u32::from(kill.mid_file);
    }
    let failed: Vec<u32> = reports
        .iter()
        .filter(|r| r.outcome.is_err())
        .map(|r| r.round)
        .collect();
    let all = || reports.iter().flat_map(|r| &r.kills);
    let faults = all().filter(|k| k.action.is_fault()).count();
    let kills = all().count() - faults;
    let seconds: f64 = reports.iter().map(|r| r.duration.as_secs_f64()).sum();
    let spawn_failures = reports.iter().filter(|r| r.spawn_failure).count();
    let mut out = format!(
        "{} mode: {} round(s), {} failed{}; {kills} kill(s) and {faults} fault(s), {mid_file} of them mid-file;{} {seconds:.0} s of rounds\n\
         kills and faults by the step they landed in: ",
        mode.label(),
        reports.len(),
        failed.len(),
        if failed.is_empty() {
            String::new()
        } else {
            format!(" (rounds {failed:?})")
        },
        if mode == ChaosMode::Api {
            format!(" the spawn-failure fault in {spawn_failures};")
        } else {
            String::new()
        },
    );
    for action in actions {
        out.push_str(&format!(" {:>11}", action.to_string()));
    }
    out.push('\n');
    for (step, counts) in per_step {
        out.push_str(&format!("  {:<32}", phase_name(step)));
        for count in counts {
            out.push_str(&format!(" {count:>11}"));
        }
        out.push('\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(step: Step) -> Option<Phase> {
        Some(Phase::At(step))
    }

    fn kill(action: Action, aimed: Step, landed: Option<Phase>) -> Kill {
        Kill {
            action,
            aimed,
            landed,
            fraction: None,
            mid_file: false,
        }
    }

    fn round(round: u32, kills: Vec<Kill>, outcome: Result<(), String>) -> RoundReport {
        RoundReport {
            mode: ChaosMode::Barman,
            steps: ChaosMode::Barman.steps(),
            round,
            seed: 7,
            jobs: 2,
            bwlimit_kbps: 4000,
            kills,
            resumes: 1,
            operator_choices: 0,
            spawn_failure: false,
            outcome,
            duration: Duration::from_millis(2500),
            data_dir: PathBuf::from("/tmp/lab/data/chaos-round-1"),
        }
    }

    #[test]
    fn a_kill_says_how_where_how_far_and_where_it_was_aimed() {
        let on_target = kill(Action::Terminate, Step::PrepareDirs, at(Step::PrepareDirs));
        assert_eq!(on_target.to_string(), "SIGTERM@PrepareDirs");
        let late = Kill {
            fraction: Some(0.424),
            mid_file: true,
            ..kill(Action::KillGroup, Step::Transfer, at(Step::VerifyCopy))
        };
        assert_eq!(
            late.to_string(),
            "SIGKILL@VerifyCopy 42% mid-file (aimed Transfer)"
        );
    }

    #[test]
    fn a_round_is_one_line_and_a_failed_one_says_why_and_what_was_kept() {
        let passed = round(
            3,
            vec![kill(Action::KillRsync, Step::Transfer, at(Step::Transfer))],
            Ok(()),
        );
        assert_eq!(
            passed.to_string(),
            "round   3 (seed 7, barman): jobs 2 bwlimit 4000 KiB/s | 1 kill(s): rsync-KILL@Transfer \
             | 1 resume(s) | OK in 2.5 s"
        );
        let failed = round(4, Vec::new(), Err("2 path(s) differ".to_string()));
        let api = RoundReport {
            mode: ChaosMode::Api,
            spawn_failure: true,
            operator_choices: 1,
            ..round(5, Vec::new(), Ok(()))
        };
        assert_eq!(
            api.to_string(),
            "round   5 (seed 7, api): API, spawn failure | 0 kill(s): - | 1 resume(s), 1 operator \
             choice(s) | OK in 2.5 s"
        );
        assert!(summary(&[api]).starts_with(
            "pg-backup-api mode: 1 round(s), 0 failed; 0 kill(s) and 0 fault(s), 0 of them \
             mid-file; the spawn-failure fault in 1; 2 s of rounds"
        ));
        assert_eq!(
            failed.to_string(),
            "round   4 (seed 7, barman): jobs 2 bwlimit 4000 KiB/s | 0 kill(s): - | 1 resume(s) \
             | FAILED in 2.5 s\n    2 path(s) differ\n    kept /tmp/lab/data/chaos-round-1 \
             (pgreplica's output in /tmp/lab/data/chaos-round-1.log)"
        );
    }

    #[test]
    fn the_summary_counts_kills_by_the_step_they_landed_in_and_the_action() {
        let reports = [
            round(
                1,
                vec![
                    kill(Action::KillGroup, Step::Transfer, at(Step::Transfer)),
                    Kill {
                        mid_file: true,
                        ..kill(Action::KillRsync, Step::Transfer, at(Step::Transfer))
                    },
                ],
                Ok(()),
            ),
            round(
                2,
                vec![
                    kill(
                        Action::Terminate,
                        Step::VerifyBackup,
                        at(Step::VerifyBackup),
                    ),
                    kill(
                        Action::KillGroup,
                        Step::WriteReplicationConf,
                        Some(Phase::Done),
                    ),
                    kill(Action::SourceDown, Step::VerifyCopy, None),
                ],
                Err("not Done".to_string()),
            ),
        ];
        let text = summary(&reports);
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(
            lines[0],
            "Barman (rsync) mode: 2 round(s), 1 failed (rounds [2]); 4 kill(s) and 1 fault(s), \
             1 of them mid-file; 5 s of rounds"
        );
        assert_eq!(
            lines[1].split_whitespace().collect::<Vec<_>>(),
            [
                "kills",
                "and",
                "faults",
                "by",
                "the",
                "step",
                "they",
                "landed",
                "in:",
                "SIGKILL",
                "SIGTERM",
                "rsync-KILL",
                "net-silent",
                "sshd-down",
                "ssh-refused",
                "source-down",
                "TLS-only"
            ]
        );
        let rows: Vec<Vec<&str>> = lines[2..]
            .iter()
            .map(|l| l.split_whitespace().collect())
            .collect();
        assert_eq!(
            rows,
            [
                ["VerifyBackup", "0", "1", "0", "0", "0", "0", "0", "0"],
                ["FetchParams", "0", "0", "0", "0", "0", "0", "0", "0"],
                ["PrepareDirs", "0", "0", "0", "0", "0", "0", "0", "0"],
                ["Transfer", "1", "0", "1", "0", "0", "0", "0", "0"],
                ["VerifyCopy", "0", "0", "0", "0", "0", "0", "0", "0"],
                [
                    "WriteReplicationConf",
                    "0",
                    "0",
                    "0",
                    "0",
                    "0",
                    "0",
                    "0",
                    "0"
                ],
                ["Done", "1", "0", "0", "0", "0", "0", "0", "0"],
                ["unknown", "0", "0", "0", "0", "0", "0", "1", "0"],
            ]
        );
    }
}
