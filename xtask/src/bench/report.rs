//! What `cargo xtask bench` prints: per contender the median and minimum time, MB/s and the
//! ratios against the baseline (rsync) and repmgr, pgreplica's time per step and what its
//! resume re-sent; as a table or as JSON, with the facts of the machine and lab.

use std::fmt::Write as _;
use std::process::Command;

use lab::REPMGR;
use serde_json::{json, Value};

use super::contenders::{Contender, ResumeFacts, Sample};
use super::process::version_of;
use super::{Bench, BenchOptions, ONE_MB};
use crate::Failure;

/// Median and minimum of a contender's times.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(super) struct Summary {
    pub(super) median: f64,
    min: f64,
}

impl Summary {
    pub(super) fn of(seconds: &[f64]) -> Summary {
        let mut sorted = seconds.to_vec();
        sorted.sort_by(f64::total_cmp);
        let n = sorted.len();
        let median = match n {
            0 => f64::NAN,
            _ if n % 2 == 1 => sorted[n / 2],
            _ => (sorted[n / 2 - 1] + sorted[n / 2]) / 2.0,
        };
        Summary {
            median,
            min: sorted.first().copied().unwrap_or(f64::NAN),
        }
    }
}

/// The results of a run, with the facts of the machine and lab they were measured on.
pub(super) struct Report {
    facts: Value,
    backup_bytes: u64,
    rows: Vec<(Contender, Summary, Vec<Sample>)>,
}

impl Report {
    pub(super) fn new(
        bench: &Bench,
        options: &BenchOptions,
        samples: &[Vec<Sample>],
    ) -> Result<Report, Failure> {
        let cores = std::thread::available_parallelism().map_or(0, |n| n.get());
        let date = version_of(Command::new("/usr/bin/date").args(["-u", "+%Y-%m-%dT%H:%M:%SZ"]));
        let barman_version = bench
            .lab
            .barman(["--version"])
            .map(|out| String::from_utf8_lossy(&out.stdout).trim().to_string())
            .map_err(|e| Failure::new("report", e))?;
        let facts = json!({
            "date": date,
            "cores": cores,
            "scale": options.lab.scale,
            "repeat": options.repeat,
            "backup_bytes": bench.backup.bytes,
            "backup_files": bench.backup.files,
            "barman": barman_version,
            "repmgr": version_of(Command::new(REPMGR).arg("--version")),
            "rsync": version_of(Command::new("/usr/bin/rsync").arg("--version")),
            "pgreplica": version_of(Command::new(&bench.pgreplica).arg("--version")),
        });
        let rows = Contender::ALL
            .iter()
            .zip(samples)
            .map(|(c, s)| {
                let times: Vec<f64> = s.iter().map(|s| s.seconds).collect();
                (*c, Summary::of(&times), s.clone())
            })
            .collect();
        Ok(Report {
            facts,
            backup_bytes: bench.backup.bytes,
            rows,
        })
    }

    /// A pgreplica row's median seconds per step, in the steps' order, then the median time
    /// outside the steps (process start, store, exit) as `outside steps`.
    fn step_medians(samples: &[Sample]) -> Vec<(String, f64)> {
        let Some(first) = samples.iter().find(|s| !s.steps.is_empty()) else {
            return Vec::new();
        };
        let mut medians: Vec<(String, f64)> = first
            .steps
            .iter()
            .map(|(step, _)| {
                let times: Vec<f64> = samples
                    .iter()
                    .filter_map(|s| s.steps.iter().find(|(n, _)| n == step).map(|(_, t)| *t))
                    .collect();
                (step.clone(), Summary::of(&times).median)
            })
            .collect();
        let outside: Vec<f64> = samples
            .iter()
            .map(|s| s.seconds - s.steps.iter().map(|(_, t)| t).sum::<f64>())
            .collect();
        medians.push(("outside steps".to_string(), Summary::of(&outside).median));
        medians
    }

    fn median_of(&self, wanted: Contender) -> f64 {
        self.rows
            .iter()
            .find(|(c, _, _)| *c == wanted)
            .map_or(f64::NAN, |(_, s, _)| s.median)
    }

    /// Medians over the resumes: bytes re-sent, bytes kept, bytes on disk at the kill.
    fn resume_facts(&self) -> Option<(u64, u64, u64)> {
        let facts: Vec<ResumeFacts> = self
            .rows
            .iter()
            .flat_map(|(_, _, samples)| samples.iter().filter_map(|s| s.resume))
            .collect();
        if facts.is_empty() {
            return None;
        }
        let median = |mut v: Vec<u64>| {
            v.sort_unstable();
            v[v.len() / 2]
        };
        Some((
            median(facts.iter().map(|f| f.resent).collect()),
            median(facts.iter().map(|f| f.kept).collect()),
            median(facts.iter().map(|f| f.on_disk_at_kill).collect()),
        ))
    }

    pub(super) fn table(&self) -> String {
        let baseline = self.median_of(Contender::Rsync);
        let repmgr = self.median_of(Contender::Repmgr);
        let f = &self.facts;
        let mut out = String::new();
        let _ = writeln!(
            out,
            "\npgreplica bench {} — {} cores, backup {:.0} MB in {} files (pgbench scale {}), \
             {} run(s) each\n{}; {}; {}\n",
            f["date"].as_str().unwrap_or_default(),
            f["cores"],
            self.backup_bytes as f64 / ONE_MB,
            f["backup_files"],
            f["scale"],
            f["repeat"],
            f["barman"].as_str().unwrap_or_default(),
            f["repmgr"].as_str().unwrap_or_default(),
            f["rsync"].as_str().unwrap_or_default(),
        );
        let _ = writeln!(
            out,
            "{:<34} {:>8} {:>8} {:>8} {:>9} {:>10}",
            "contender", "median s", "min s", "MB/s", "vs rsync", "vs repmgr"
        );
        for (contender, summary, _) in &self.rows {
            let _ = writeln!(
                out,
                "{:<34} {:>8.2} {:>8.2} {:>8.1} {:>9.2} {:>10.2}",
                contender.label(),
                summary.median,
                summary.min,
                self.backup_bytes as f64 / ONE_MB / summary.median,
                summary.median / baseline,
                summary.median / repmgr,
            );
        }
        let _ = writeln!(
            out,
            "\nratios are median times over the baseline's (rsync -a over ssh) and repmgr's: \
             below 1 is faster.\nMB/s is the backup's size over the median time (for the \
             resume: over the time to finish)."
        );
        for (contender, _, samples) in &self.rows {
            let steps = Report::step_medians(samples);
            if steps.is_empty() {
                continue;
            }
            let shown: Vec<String> = steps
                .iter()
                .map(|(step, t)| format!("{step} {t:.2}"))
                .collect();
            let _ = writeln!(
                out,
                "{} steps (s, median): {}",
                contender.label(),
                shown.join(", ")
            );
        }
        if let Some((resent, kept, at_kill)) = self.resume_facts() {
            let full = self.median_of(Contender::Pgreplica { jobs: 1 });
            let resume = self.median_of(Contender::Resume { jobs: 1 });
            let _ = writeln!(
                out,
                "after a SIGKILL with {:.0} % of the backup on disk: pgreplica finishes in {resume:.2} s \
                 ({:.0} % of its full clone), re-sending {:.0} MB ({:.0} % of the backup) and keeping \
                 {:.0} MB of the file(s) in flight;\n\
                 repmgr cannot resume: it starts over, {repmgr:.2} s (a full clone).",
                at_kill as f64 * 100.0 / self.backup_bytes as f64,
                resume * 100.0 / full,
                resent as f64 / ONE_MB,
                resent as f64 * 100.0 / self.backup_bytes as f64,
                kept as f64 / ONE_MB,
            );
        }
        out
    }

    pub(super) fn json(&self) -> Value {
        let baseline = self.median_of(Contender::Rsync);
        let repmgr = self.median_of(Contender::Repmgr);
        let contenders: Vec<Value> = self
            .rows
            .iter()
            .map(|(contender, summary, samples)| {
                let mut row = json!({
                    "key": contender.key(),
                    "label": contender.label(),
                    "median_s": summary.median,
                    "min_s": summary.min,
                    "mb_per_s": self.backup_bytes as f64 / ONE_MB / summary.median,
                    "vs_baseline": summary.median / baseline,
                    "vs_repmgr": summary.median / repmgr,
                    "runs_s": samples.iter().map(|s| s.seconds).collect::<Vec<_>>(),
                });
                let resumes: Vec<Value> = samples
                    .iter()
                    .filter_map(|s| s.resume)
                    .map(|r| json!({"resent_bytes": r.resent, "kept_bytes": r.kept, "on_disk_at_kill_bytes": r.on_disk_at_kill}))
                    .collect();
                if !resumes.is_empty() {
                    row["resumes"] = Value::Array(resumes);
                }
                let steps = Report::step_medians(samples);
                if !steps.is_empty() {
                    row["steps_median_s"] = steps
                        .into_iter()
                        .map(|(step, t)| (step, json!(t)))
                        .collect::<serde_json::Map<_, _>>()
                        .into();
                }
                row
            })
            .collect();
        json!({
            "machine": self.facts,
            "baseline": Contender::Rsync.key(),
            "contenders": contenders,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_and_min() {
        assert_eq!(
            Summary::of(&[3.0, 1.0, 2.0]),
            Summary {
                median: 2.0,
                min: 1.0
            }
        );
        assert_eq!(Summary::of(&[4.0, 1.0, 2.0, 3.0]).median, 2.5);
    }
}
