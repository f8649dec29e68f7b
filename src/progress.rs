//! Live progress of the running step: counters the steps update, a bar on a terminal, and the
//! numbers (rate, ETA) that `clone status` shows from another terminal.
//!
//! Steps only add bytes and files; this module owns the arithmetic and the display. It must not
//! touch the store: the runner copies [`Progress::live`] into the status snapshot.

use crate::store::LiveProgress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use states::Step;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// Counters of the running step, shared between the step and the runner.
pub struct Progress {
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    files_done: AtomicU64,
    files_total: AtomicU64,
    /// Bytes already done when the step (re)started: excluded from the rate, so a resumed
    /// transfer's ETA is not flattered by files copied in an earlier run.
    bytes_at_start: AtomicU64,
    state: Mutex<State>,
}

struct State {
    step: Option<Step>,
    started: Instant,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Progress that draws a bar when stderr is a terminal.
    pub fn new() -> Progress {
        Progress {
            bytes_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            files_total: AtomicU64::new(0),
            bytes_at_start: AtomicU64::new(0),
            state: Mutex::new(State {
                step: None,
                started: Instant::now(),
                bar: None,
            }),
        }
    }

    /// A step begins: counters reset.
    pub fn begin_step(&self, step: Step) {
        let mut state = self.state.lock().expect("progress lock");
        if let Some(bar) = state.bar.take() {
            bar.finish_and_clear();
        }
        state.step = Some(step);
        state.started = Instant::now();
        for counter in [
            &self.bytes_done,
            &self.bytes_total,
            &self.files_done,
            &self.files_total,
            &self.bytes_at_start,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// The step knows its size; `already_*` were done by an earlier run.
    pub fn set_totals(
        &self,
        bytes_total: u64,
        files_total: u64,
        already_bytes: u64,
        already_files: u64,
    ) {
        self.bytes_total.store(bytes_total, Ordering::Relaxed);
        self.files_total.store(files_total, Ordering::Relaxed);
        self.bytes_done.store(already_bytes, Ordering::Relaxed);
        self.files_done.store(already_files, Ordering::Relaxed);
        self.bytes_at_start.store(already_bytes, Ordering::Relaxed);
        let mut state = self.state.lock().expect("progress lock");
        state.started = Instant::now();
        if std::io::stderr().is_terminal() && crate::log::enabled(crate::log::Level::Info) {
            let bar =
                ProgressBar::with_draw_target(Some(bytes_total), ProgressDrawTarget::stderr());
            bar.set_style(
                ProgressStyle::with_template(
                    "{spinner} {bytes}/{total_bytes} [{wide_bar}] {bytes_per_sec} ETA {eta}",
                )
                .expect("static template")
                .progress_chars("=> "),
            );
            bar.set_position(already_bytes);
            bar.enable_steady_tick(Duration::from_millis(200));
            state.bar = Some(bar);
        }
    }

    /// Sets the bytes done so far (for methods that measure rather than count, e.g. the size of
    /// the data directory while pg-backup-api restores into it).
    pub fn set_bytes_done(&self, bytes: u64) {
        self.bytes_done.store(bytes, Ordering::Relaxed);
        self.draw(bytes);
    }

    /// One more file is complete (its bytes are counted by [`Progress::set_bytes_done`], which
    /// also sees the bytes of files still in flight).
    pub fn add_file(&self) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
    }

    fn draw(&self, position: u64) {
        if let Some(bar) = &self.state.lock().expect("progress lock").bar {
            bar.set_position(position);
        }
    }

    /// The step is over: the bar goes away.
    pub fn end_step(&self) {
        let mut state = self.state.lock().expect("progress lock");
        if let Some(bar) = state.bar.take() {
            bar.finish_and_clear();
        }
        state.step = None;
    }

    /// Elapsed time of the current step.
    pub fn elapsed(&self) -> Duration {
        self.state.lock().expect("progress lock").started.elapsed()
    }

    /// Bytes done so far in the current step.
    pub fn bytes_done(&self) -> u64 {
        self.bytes_done.load(Ordering::Relaxed)
    }

    /// What `clone status` shows while the step runs.
    pub fn live(&self) -> Option<LiveProgress> {
        let state = self.state.lock().expect("progress lock");
        let step = state.step?;
        let bytes_done = self.bytes_done.load(Ordering::Relaxed);
        let bytes_total = self.bytes_total.load(Ordering::Relaxed);
        let moved = bytes_done.saturating_sub(self.bytes_at_start.load(Ordering::Relaxed));
        let seconds = state.started.elapsed().as_secs_f64();
        let rate = if seconds > 0.5 {
            (moved as f64 / seconds) as u64
        } else {
            0
        };
        let eta_secs =
            (rate > 0 && bytes_total >= bytes_done).then(|| (bytes_total - bytes_done) / rate);
        Some(LiveProgress {
            step,
            bytes_done,
            bytes_total,
            files_done: self.files_done.load(Ordering::Relaxed),
            files_total: self.files_total.load(Ordering::Relaxed),
            rate_bytes_per_sec: rate,
            eta_secs,
        })
    }
}

impl Default for Progress {
    fn default() -> Self {
        Progress::new()
    }
}

/// `1.5 GB`-style sizes, as repmgr prints installation sizes.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 5] = ["bytes", "kB", "MB", "GB", "TB"];
    let mut value = bytes as f64;
    let mut unit = 0;
    while value >= 1024.0 && unit < UNITS.len() - 1 {
        value /= 1024.0;
        unit += 1;
    }
    if unit == 0 {
        format!("{bytes} bytes")
    } else {
        format!("{value:.1} {}", UNITS[unit])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_read_like_repmgr() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(186 * 1024 * 1024), "186.0 MB");
    }

    #[test]
    fn live_counts_files_and_bytes() {
        let progress = Progress::new();
        assert!(progress.live().is_none());
        progress.begin_step(Step::Transfer);
        progress.set_totals(1000, 10, 100, 1);
        progress.add_file();
        progress.set_bytes_done(150);
        let live = progress.live().unwrap();
        assert_eq!(live.step, Step::Transfer);
        assert_eq!((live.bytes_done, live.files_done), (150, 2));
        assert_eq!((live.bytes_total, live.files_total), (1000, 10));
    }
}
