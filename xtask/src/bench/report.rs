//! What `cargo xtask bench` prints: per contender the median and minimum time, MB/s, the CPU
//! time at both ends, the peak memory and the ratios against the baseline (rsync) and repmgr,
//! pgreplica's time per step, what its resume re-sent, `clone status` at scale, and each of
//! issue 13's targets with the figure that meets it or not ([`Targets`]); as a table or as
//! JSON, with the facts of the machine and lab.

use std::fmt::Write as _;
use std::process::Command;

use lab::REPMGR;
use serde_json::{json, Value};

use super::contenders::{Contender, ResumeFacts, Sample};
use super::process::version_of;
use super::status::StatusFacts;
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
    status: StatusFacts,
}

/// The medians of one contender's CPU times (this end, far end) and its largest peak memory.
#[derive(Clone, Copy, Debug, PartialEq)]
struct Usage {
    cpu_s: f64,
    remote_cpu_s: f64,
    peak_mib: f64,
}

impl Usage {
    fn of(samples: &[Sample]) -> Usage {
        let median =
            |f: fn(&Sample) -> f64| Summary::of(&samples.iter().map(f).collect::<Vec<_>>()).median;
        Usage {
            cpu_s: median(|s| s.cost.cpu_seconds),
            remote_cpu_s: median(|s| s.remote_cpu_seconds),
            peak_mib: samples
                .iter()
                .map(|s| s.cost.peak_rss_bytes)
                .max()
                .unwrap_or(0) as f64
                / (1024.0 * 1024.0),
        }
    }
}

/// One of issue 13's targets: its name, the figure measured, the bound and whether a lower
/// figure is the better one.
#[derive(Clone, Debug, PartialEq)]
pub(super) struct Target {
    pub(super) name: &'static str,
    pub(super) measured: f64,
    pub(super) bound: f64,
    /// The unit the figure is shown in (`×`, `s`, `%`, `ms`, `MiB`).
    pub(super) unit: &'static str,
    /// True when the target is an upper bound (most are); false for "at least".
    pub(super) at_most: bool,
}

impl Target {
    /// Whether the figure meets the target (a figure that could not be measured does not).
    pub(super) fn met(&self) -> bool {
        if self.at_most {
            self.measured <= self.bound
        } else {
            self.measured >= self.bound
        }
    }
}

impl Report {
    pub(super) fn new(
        bench: &Bench,
        options: &BenchOptions,
        contenders: &[Contender],
        samples: &[Vec<Sample>],
        status: StatusFacts,
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
        let rows = contenders
            .iter()
            .zip(samples)
            .map(|(c, s)| {
                let times: Vec<f64> = s.iter().map(|s| s.cost.seconds).collect();
                (*c, Summary::of(&times), s.clone())
            })
            .collect();
        Ok(Report {
            facts,
            backup_bytes: bench.backup.bytes,
            rows,
            status,
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
            .map(|s| s.cost.seconds - s.steps.iter().map(|(_, t)| t).sum::<f64>())
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

    /// The median of `step` in `contender`'s per-step times (NaN when it has none).
    fn step_median(&self, contender: Contender, step: &str) -> f64 {
        self.rows
            .iter()
            .find(|(c, _, _)| *c == contender)
            .and_then(|(_, _, samples)| {
                Report::step_medians(samples)
                    .into_iter()
                    .find(|(name, _)| name == step)
                    .map(|(_, t)| t)
            })
            .unwrap_or(f64::NAN)
    }

    /// The median of `contender`'s checkpoint seconds (NaN when it has none).
    fn checkpoint_median(&self, contender: Contender) -> f64 {
        self.rows
            .iter()
            .find(|(c, _, _)| *c == contender)
            .map_or(f64::NAN, |(_, _, samples)| {
                let times: Vec<f64> = samples.iter().filter_map(|s| s.checkpoint_s).collect();
                Summary::of(&times).median
            })
    }

    /// How much longer, in %, the one-stream clone's Transfer step takes than plain rsync with
    /// the same cipher (`rsync -a over ssh, AES-GCM`): everything the step adds to the same
    /// rsync — the file list, the checkpoints, the verifier reading each file back,
    /// `pg_control` sent last. Not a target: it holds far more than the checkpoints, which the
    /// checkpoint target measures directly.
    pub(super) fn transfer_over_rsync(&self) -> f64 {
        let transfer = self.step_median(Contender::PGREPLICA_ONE_STREAM, "Transfer");
        (transfer / self.median_of(Contender::RsyncAesGcm) - 1.0) * 100.0
    }

    /// Issue 13's targets, each with the figure of this run.
    ///
    /// * pgreplica's ratios to repmgr and plain rsync: its default clone (the `--jobs` it picks
    ///   on this host, as an operator runs it);
    /// * fixed costs: every step of that clone but Transfer, plus its time outside the steps
    ///   (process start, store, exit);
    /// * checkpoint overhead: the wall time the one-stream clone's copy spent in the store
    ///   (marks, checks, flushes: `facts.transfer.checkpoint_ms`) over its Transfer step's
    ///   time, measured directly ([`Report::transfer_over_rsync`] is printed beside the
    ///   targets, not as one);
    /// * the resume: its time over the full clone's at the same `--jobs` (1).
    pub(super) fn targets(&self) -> Vec<Target> {
        let default = Contender::pgreplica_default();
        let pgreplica = self.median_of(default);
        let one_stream = self.median_of(Contender::PGREPLICA_ONE_STREAM);
        let transfer = self.step_median(Contender::PGREPLICA_ONE_STREAM, "Transfer");
        let checkpoints = self.checkpoint_median(Contender::PGREPLICA_ONE_STREAM);
        let fixed =
            self.rows
                .iter()
                .find(|(c, _, _)| *c == default)
                .map_or(f64::NAN, |(_, _, samples)| {
                    Report::step_medians(samples)
                        .iter()
                        .filter(|(step, _)| step != "Transfer")
                        .map(|(_, t)| t)
                        .sum()
                });
        let ratio = |unit, at_most, name, measured, bound| Target {
            name,
            measured,
            bound,
            unit,
            at_most,
        };
        vec![
            ratio(
                "×",
                true,
                "pgreplica / repmgr (stretch 0.5)",
                pgreplica / self.median_of(Contender::Repmgr),
                0.6,
            ),
            ratio(
                "×",
                true,
                "pgreplica / rsync -a over ssh",
                pgreplica / self.median_of(Contender::Rsync),
                0.85,
            ),
            ratio(
                "s",
                true,
                "fixed costs (all steps but Transfer, and outside)",
                fixed,
                0.3,
            ),
            ratio(
                "×",
                true,
                "resume after a kill at half / full clone",
                self.median_of(Contender::Resume { jobs: 1 }) / one_stream,
                0.55,
            ),
            ratio(
                "%",
                true,
                "checkpoint overhead (the copy's store time / Transfer)",
                checkpoints / transfer * 100.0,
                2.0,
            ),
            ratio(
                "ms",
                true,
                "clone status time",
                self.status.median_s * 1000.0,
                50.0,
            ),
            ratio(
                "MiB",
                true,
                "clone status peak memory",
                self.status.peak_rss_bytes as f64 / (1024.0 * 1024.0),
                32.0,
            ),
            ratio(
                "×",
                false,
                "compression's speed-up on the 20 MB/s link",
                self.median_of(Contender::SlowLink { compress: false })
                    / self.median_of(Contender::SlowLink { compress: true }),
                2.5,
            ),
        ]
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
            "{:<36} {:>8} {:>8} {:>7} {:>7} {:>7} {:>8} {:>8} {:>9}",
            "contender",
            "median s",
            "min s",
            "MB/s",
            "CPU s",
            "far s",
            "peak MiB",
            "vs rsync",
            "vs repmgr"
        );
        for (contender, summary, samples) in &self.rows {
            let usage = Usage::of(samples);
            let _ = writeln!(
                out,
                "{:<36} {:>8.2} {:>8.2} {:>7.1} {:>7.2} {:>7.2} {:>8.1} {:>8.2} {:>9.2}",
                contender.label(),
                summary.median,
                summary.min,
                self.backup_bytes as f64 / ONE_MB / summary.median,
                usage.cpu_s,
                usage.remote_cpu_s,
                usage.peak_mib,
                summary.median / baseline,
                summary.median / repmgr,
            );
        }
        let _ = writeln!(
            out,
            "\nratios are median times over the baseline's (rsync -a over ssh, ssh's default cipher) \
             and repmgr's: below 1 is faster.\nMB/s is the backup's size over the median time (for \
             the resume: over the time to finish). CPU s: user + system time of the command and \
             every process it waited for (median); far s: the same for the far end of its ssh \
             connections (the lab sshd's sessions); peak MiB: the largest resident set of one \
             process of the tree (largest run)."
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
            let full = self.median_of(Contender::PGREPLICA_ONE_STREAM);
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
        let _ = writeln!(
            out,
            "clone status --json of a finished clone of {} files: {:.1} ms (median of 5), peak {:.1} MiB",
            self.status.files,
            self.status.median_s * 1000.0,
            self.status.peak_rss_bytes as f64 / (1024.0 * 1024.0)
        );
        let _ = writeln!(
            out,
            "the --jobs 1 Transfer step over {}: {:+.1} % (the file list, the checkpoints, the \
             verifier reading each file back, pg_control last: not the checkpoint target)",
            Contender::RsyncAesGcm.label(),
            self.transfer_over_rsync()
        );
        let _ = writeln!(out, "\nissue 13's targets:");
        for target in self.targets() {
            let _ = writeln!(
                out,
                "  {:<4} {:<66} {:>8.2} {:<3} (target {} {})",
                if target.met() { "met" } else { "NOT" },
                target.name,
                target.measured,
                target.unit,
                if target.at_most { "≤" } else { "≥" },
                target.bound
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
                let usage = Usage::of(samples);
                let mut row = json!({
                    "key": contender.key(),
                    "label": contender.label(),
                    "median_s": summary.median,
                    "min_s": summary.min,
                    "mb_per_s": self.backup_bytes as f64 / ONE_MB / summary.median,
                    "cpu_s_median": usage.cpu_s,
                    "far_end_cpu_s_median": usage.remote_cpu_s,
                    "peak_rss_mib": usage.peak_mib,
                    "vs_baseline": summary.median / baseline,
                    "vs_repmgr": summary.median / repmgr,
                    "runs_s": samples.iter().map(|s| s.cost.seconds).collect::<Vec<_>>(),
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
        let targets: Vec<Value> = self
            .targets()
            .into_iter()
            .map(|t| {
                json!({
                    "target": t.name,
                    "measured": t.measured,
                    "unit": t.unit,
                    "bound": t.bound,
                    "at_most": t.at_most,
                    "met": t.met(),
                })
            })
            .collect();
        json!({
            "machine": self.facts,
            "baseline": Contender::Rsync.key(),
            "contenders": contenders,
            "clone_status": {
                "files": self.status.files,
                "median_s": self.status.median_s,
                "peak_rss_bytes": self.status.peak_rss_bytes,
            },
            "targets": targets,
            "transfer_over_rsync_aes_gcm_percent": self.transfer_over_rsync(),
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

    #[test]
    fn a_target_is_met_on_its_side_of_the_bound_and_never_by_a_missing_figure() {
        let target = |measured, at_most| Target {
            name: "t",
            measured,
            bound: 2.5,
            unit: "×",
            at_most,
        };
        assert!(target(2.5, true).met() && target(1.0, true).met());
        assert!(!target(2.6, true).met());
        assert!(target(2.5, false).met() && target(3.0, false).met());
        assert!(!target(2.4, false).met());
        assert!(!target(f64::NAN, true).met() && !target(f64::NAN, false).met());
    }
}
