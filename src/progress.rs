//! Live progress of the running step: counters the copy engines update, a bar on a terminal,
//! progress lines elsewhere, and the numbers (rate, ETA) that `clone status` shows from another
//! terminal.
//!
//! # How a copy engine reports (the whole interface)
//! 1. [`Progress::set_totals`] once it knows its size: bytes and files in the step's work, and
//!    what of them an earlier run already did (never counted in the rate);
//! 2. [`Progress::set_bytes_done`] as bytes arrive, with the position in the whole work — done
//!    files plus the bytes of files still in flight — and, of that position, how many bytes this
//!    run found already in place rather than received (kept partial data read back by rsync's
//!    `--append-verify`; 0 for an engine that only receives);
//! 3. [`Progress::add_file`] for each file complete at its final name;
//! 4. [`Progress::set_bytes_total`] when a better estimate of the size arrives (pg_basebackup's
//!    own), which updates the figures in place.
//!
//! The runner calls [`Progress::begin_step`], [`Progress::tick`] (twice a second) and
//! [`Progress::end_step`]; engines never draw or log progress themselves.
//!
//! # Numbers
//! The rate is what crossed the wire in this run — the position less what was done before and
//! less what was found in place — averaged over about the last [`RATE_WINDOW`] ([`Rate`]); the
//! ETA is what remains at that rate. Sizes are IEC binary units (KiB, MiB, GiB: powers of 1024)
//! everywhere pgreplica prints them ([`human_bytes`]).
//!
//! Must not: touch the store (the runner copies [`Progress::live`] into the status snapshot).

use crate::store::LiveProgress;
use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};
use states::Step;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// The rate is averaged over about this long: long enough to smooth rsync's once-a-second
/// counters and pg_basebackup's bursts, short enough to follow a change of `--bwlimit`.
pub const RATE_WINDOW: Duration = Duration::from_secs(10);

/// Seconds without a new count after which [`Rate`] takes the copy for stalled (rsync and
/// pg_basebackup count once a second).
const QUIET_SECS: f64 = 2.0;

/// Default interval between progress lines when stderr is not a terminal.
pub const DEFAULT_LINE_INTERVAL_SECS: u64 = 10;

/// Seconds between progress lines when stderr is not a terminal; 0 turns them off.
static LINE_INTERVAL_SECS: AtomicU64 = AtomicU64::new(DEFAULT_LINE_INTERVAL_SECS);

/// Sets the interval of the progress lines printed when stderr is not a terminal (0: none).
pub fn set_line_interval(seconds: u64) {
    LINE_INTERVAL_SECS.store(seconds, Ordering::Relaxed);
}

/// Counters of the running step, shared between the step and the runner.
pub struct Progress {
    bytes_done: AtomicU64,
    bytes_total: AtomicU64,
    files_done: AtomicU64,
    files_total: AtomicU64,
    /// Bytes already done when the step (re)started: never counted in the rate, so a resumed
    /// transfer's rate and ETA are not flattered by files copied in an earlier run.
    bytes_at_start: AtomicU64,
    /// Bytes of the position that this run found in place rather than received.
    bytes_present: AtomicU64,
    state: Mutex<State>,
}

struct State {
    step: Option<Step>,
    /// When the step's totals were set: the origin of the rate's clock.
    started: Instant,
    /// Fed with the engine's counts as they come (not at the runner's ticks, which would add up
    /// to half a second of error to each).
    rate: Rate,
    /// Whether the step reported totals (only then are there figures to show).
    sized: bool,
    /// When the next progress line is due (stderr not a terminal).
    next_line: Option<Instant>,
    bar: Option<ProgressBar>,
}

impl Progress {
    /// Progress that draws a bar when stderr is a terminal and prints lines otherwise.
    pub fn new() -> Progress {
        Progress {
            bytes_done: AtomicU64::new(0),
            bytes_total: AtomicU64::new(0),
            files_done: AtomicU64::new(0),
            files_total: AtomicU64::new(0),
            bytes_at_start: AtomicU64::new(0),
            bytes_present: AtomicU64::new(0),
            state: Mutex::new(State {
                step: None,
                started: Instant::now(),
                rate: Rate::default(),
                sized: false,
                next_line: None,
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
        state.rate = Rate::default();
        state.sized = false;
        state.next_line = None;
        for counter in [
            &self.bytes_done,
            &self.bytes_total,
            &self.files_done,
            &self.files_total,
            &self.bytes_at_start,
            &self.bytes_present,
        ] {
            counter.store(0, Ordering::Relaxed);
        }
    }

    /// The step knows its size; `already_*` were done by an earlier run. Call once per step;
    /// a later estimate of the size goes to [`Progress::set_bytes_total`].
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
        self.bytes_present.store(0, Ordering::Relaxed);
        let mut state = self.state.lock().expect("progress lock");
        state.started = Instant::now();
        state.rate = Rate::default();
        state.sized = true;
        if let Some(bar) = state.bar.take() {
            bar.finish_and_clear();
        }
        if !crate::log::enabled(crate::log::Level::Info) {
            return;
        }
        if std::io::stderr().is_terminal() {
            let bar =
                ProgressBar::with_draw_target(Some(bytes_total), ProgressDrawTarget::stderr());
            // Sizes and rate are ours ({msg}), not indicatif's: its rate would count the bytes
            // an earlier run copied.
            bar.set_style(
                ProgressStyle::with_template("{spinner} {wide_bar} {msg}")
                    .expect("static template")
                    .progress_chars("=> "),
            );
            bar.set_position(already_bytes);
            bar.enable_steady_tick(Duration::from_millis(200));
            state.bar = Some(bar);
        } else {
            let interval = LINE_INTERVAL_SECS.load(Ordering::Relaxed);
            state.next_line = (interval > 0).then(|| state.started + Duration::from_secs(interval));
        }
    }

    /// A better estimate of the step's size (pg_basebackup's own): the figures, the bar and the
    /// ETA follow it in place.
    pub fn set_bytes_total(&self, bytes_total: u64) {
        self.bytes_total.store(bytes_total, Ordering::Relaxed);
        if let Some(bar) = &self.state.lock().expect("progress lock").bar {
            bar.set_length(bytes_total);
        }
    }

    /// Where the step stands: `bytes` of the whole work are done, bytes in flight included
    /// (for a method that measures rather than counts, e.g. the size of the data directory
    /// while pg-backup-api restores into it, what it measured). Of those, `present` bytes (over
    /// the whole step so far) were found in place by this run rather than received — kept
    /// partial data that rsync read back — and are not counted in the rate.
    pub fn set_bytes_done(&self, bytes: u64, present: u64) {
        self.set_bytes_done_at(bytes, present, Instant::now());
    }

    fn set_bytes_done_at(&self, bytes: u64, present: u64, now: Instant) {
        self.bytes_done.store(bytes, Ordering::Relaxed);
        self.bytes_present.store(present, Ordering::Relaxed);
        let moved = self.moved();
        let mut state = self.state.lock().expect("progress lock");
        let at = now.saturating_duration_since(state.started).as_secs_f64();
        state.rate.count(at, moved);
        if let Some(bar) = &state.bar {
            bar.set_position(bytes);
        }
    }

    /// One more file is complete.
    pub fn add_file(&self) {
        self.files_done.fetch_add(1, Ordering::Relaxed);
    }

    /// Bytes that crossed the wire in this run so far.
    fn moved(&self) -> u64 {
        self.bytes_done
            .load(Ordering::Relaxed)
            .saturating_sub(self.bytes_at_start.load(Ordering::Relaxed))
            .saturating_sub(self.bytes_present.load(Ordering::Relaxed))
    }

    /// Samples the rate and refreshes what is shown: the bar's figures on a terminal, a
    /// progress line (INFO) when one is due otherwise. The runner calls it twice a second.
    pub fn tick(&self) {
        self.tick_at(Instant::now());
    }

    fn tick_at(&self, now: Instant) {
        let mut state = self.state.lock().expect("progress lock");
        if state.step.is_none() || !state.sized {
            return;
        }
        let at = now.saturating_duration_since(state.started).as_secs_f64();
        state.rate.idle(at);
        let Some(live) = self.live_of(&state) else {
            return;
        };
        if let Some(bar) = &state.bar {
            bar.set_message(figures(&live));
        }
        if state.next_line.is_some_and(|due| now >= due) {
            let interval = Duration::from_secs(LINE_INTERVAL_SECS.load(Ordering::Relaxed).max(1));
            state.next_line = Some(now + interval);
            crate::info!("{}: {}", live.step, figures(&live));
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

    /// What `clone status` shows while the step runs.
    pub fn live(&self) -> Option<LiveProgress> {
        self.live_of(&self.state.lock().expect("progress lock"))
    }

    fn live_of(&self, state: &State) -> Option<LiveProgress> {
        let step = state.step?;
        let bytes_done = self.bytes_done.load(Ordering::Relaxed);
        let bytes_total = self.bytes_total.load(Ordering::Relaxed);
        let rate = state.rate.per_sec().unwrap_or(0);
        let eta_secs = (rate > 0).then(|| bytes_total.saturating_sub(bytes_done) / rate);
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

/// The figures of a progress line, the bar and `clone status`:
/// `12.0 MiB of 40.0 MiB (30%), 312 of 1587 files, 1000.0 KiB/s, ETA 28s`; the files when the
/// step counts them, the ETA once there is a rate.
pub fn figures(live: &LiveProgress) -> String {
    let percent = (live.bytes_done.min(live.bytes_total) * 100)
        .checked_div(live.bytes_total)
        .map(|p| format!(" ({p}%)"))
        .unwrap_or_default();
    let files = if live.files_total > 0 {
        format!(", {} of {} files", live.files_done, live.files_total)
    } else {
        String::new()
    };
    let eta = match live.eta_secs {
        Some(secs) => format!(", ETA {}", human_duration(secs)),
        None => String::new(),
    };
    format!(
        "{} of {}{percent}{files}, {}/s{eta}",
        human_bytes(live.bytes_done),
        human_bytes(live.bytes_total),
        human_bytes(live.rate_bytes_per_sec),
    )
}

/// The rate of bytes crossing the wire: an exponentially weighted average over about
/// [`RATE_WINDOW`] of the bytes moved between the engine's counts, divided by the equally
/// weighted time they took. Dividing by the weighted time (rather than starting from a rate of 0) makes the
/// first figures the plain average since the bytes began to move, so a resumed copy shows its
/// true rate from its first line; time before the first byte moved (ssh's handshake, rsync's
/// read-back of kept data) is not counted.
#[derive(Debug, Default)]
pub struct Rate {
    /// The last sample: seconds since the step began, bytes moved.
    last: Option<(f64, u64)>,
    /// Decayed sum of the bytes moved between samples.
    bytes: f64,
    /// Decayed sum of the seconds those samples spanned, since the first byte moved.
    seconds: f64,
}

impl Rate {
    /// The engine's count: `moved` bytes had crossed the wire `at` seconds into the step. A
    /// count that is not new moves the start of the clock while nothing has moved yet, and is
    /// otherwise left to [`Rate::idle`].
    pub fn count(&mut self, at: f64, moved: u64) {
        let Some((last_at, last_moved)) = self.last else {
            self.last = Some((at, moved));
            return;
        };
        let span = at - last_at;
        if span <= 0.0 || moved < last_moved {
            return;
        }
        if moved == last_moved {
            if self.seconds == 0.0 {
                // Nothing has moved yet: the clock starts with the first bytes.
                self.last = Some((at, moved));
            } else if span >= QUIET_SECS {
                self.add(at, moved, span);
            }
            return;
        }
        self.add(at, moved, span);
    }

    /// No count since the last: once none came for [`QUIET_SECS`] after bytes began to move,
    /// the copy has stalled, and the rate falls.
    pub fn idle(&mut self, at: f64) {
        if let Some((last_at, moved)) = self.last {
            if self.seconds > 0.0 && at - last_at >= QUIET_SECS {
                self.add(at, moved, at - last_at);
            }
        }
    }

    /// Adds the bytes from the last sample to `moved`, over `span` seconds ending `at`.
    fn add(&mut self, at: f64, moved: u64, span: f64) {
        let last_moved = self.last.map_or(0, |(_, m)| m);
        let keep = (-span / RATE_WINDOW.as_secs_f64()).exp();
        self.bytes = self.bytes * keep + moved.saturating_sub(last_moved) as f64;
        self.seconds = self.seconds * keep + span;
        self.last = Some((at, moved.max(last_moved)));
    }

    /// Bytes per second, once bytes have moved.
    pub fn per_sec(&self) -> Option<u64> {
        (self.seconds > 0.0).then(|| (self.bytes / self.seconds).round() as u64)
    }
}

/// Sizes in IEC binary units, as everywhere pgreplica prints them: `512 bytes`, `1.5 KiB`,
/// `186.0 MiB`, `2.3 GiB`.
pub fn human_bytes(bytes: u64) -> String {
    const UNITS: [&str; 6] = ["bytes", "KiB", "MiB", "GiB", "TiB", "PiB"];
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

/// A PostgreSQL version number as PostgreSQL prints it: 150018 → `15.18`, 90624 → `9.6.24`.
pub fn pg_version(number: u32) -> String {
    if number >= 100_000 {
        format!("{}.{}", number / 10_000, number % 10_000)
    } else {
        format!(
            "{}.{}.{}",
            number / 10_000,
            number / 100 % 100,
            number % 100
        )
    }
}

/// A duration for an ETA: `45s`, `2m05s`, `3h07m`.
pub fn human_duration(secs: u64) -> String {
    match secs {
        0..=59 => format!("{secs}s"),
        60..=3599 => format!("{}m{:02}s", secs / 60, secs % 60),
        _ => format!("{}h{:02}m", secs / 3600, secs % 3600 / 60),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sizes_are_iec_binary_units() {
        assert_eq!(human_bytes(512), "512 bytes");
        assert_eq!(human_bytes(1536), "1.5 KiB");
        assert_eq!(human_bytes(186 * 1024 * 1024), "186.0 MiB");
        assert_eq!(human_bytes(5 << 40), "5.0 TiB");
        assert_eq!(pg_version(150018), "15.18");
        assert_eq!(pg_version(180000), "18.0");
        assert_eq!(pg_version(90624), "9.6.24");
        assert_eq!(human_duration(45), "45s");
        assert_eq!(human_duration(125), "2m05s");
        assert_eq!(human_duration(3 * 3600 + 7 * 60 + 59), "3h07m");
    }

    #[test]
    fn live_counts_files_and_bytes() {
        let progress = Progress::new();
        assert!(progress.live().is_none());
        progress.begin_step(Step::Transfer);
        progress.set_totals(1000, 10, 100, 1);
        progress.add_file();
        progress.set_bytes_done(150, 0);
        let live = progress.live().unwrap();
        assert_eq!(live.step, Step::Transfer);
        assert_eq!((live.bytes_done, live.files_done), (150, 2));
        assert_eq!((live.bytes_total, live.files_total), (1000, 10));
        progress.set_bytes_total(2000);
        assert_eq!(progress.live().unwrap().bytes_total, 2000);
    }

    /// A resumed copy at 1 MiB/s: 40 MiB done by an earlier run, 8 MiB of a kept partial file
    /// read back in the first second. Neither counts: the rate is 1 MiB/s from the start.
    #[test]
    fn the_rate_counts_only_what_crossed_the_wire() {
        const MIB: u64 = 1 << 20;
        let progress = Progress::new();
        progress.begin_step(Step::Transfer);
        progress.set_totals(100 * MIB, 10, 40 * MIB, 4);
        let start = progress.state.lock().unwrap().started;
        let at = |secs: f64| start + Duration::from_secs_f64(secs);
        // ssh's handshake: nothing moves for a second and a half (a stall of nothing).
        progress.tick_at(at(0.5));
        progress.tick_at(at(1.0));
        progress.tick_at(at(1.5));
        assert_eq!(progress.live().unwrap().rate_bytes_per_sec, 0);
        assert_eq!(progress.live().unwrap().eta_secs, None);
        // rsync reports 0, reads the kept 8 MiB back, then receives 1 MiB a second, reported
        // each second; the runner's ticks fall between the reports.
        progress.set_bytes_done_at(40 * MIB, 0, at(1.6));
        progress.set_bytes_done_at(40 * MIB + 8 * MIB, 8 * MIB, at(1.7));
        for second in 1..=12_u64 {
            let report = 1.7 + second as f64;
            progress.set_bytes_done_at(40 * MIB + 8 * MIB + second * MIB, 8 * MIB, at(report));
            progress.tick_at(at(report + 0.3));
            let rate = progress.live().unwrap().rate_bytes_per_sec as f64 / MIB as f64;
            assert!(
                (0.99..=1.01).contains(&rate),
                "second {second}: {rate} MiB/s"
            );
            progress.tick_at(at(report + 0.8));
        }
        let live = progress.live().unwrap();
        let eta = live.eta_secs.unwrap();
        assert!((39..=41).contains(&eta), "ETA {eta} s");
        assert_eq!(
            figures(&live),
            format!(
                "60.0 MiB of 100.0 MiB (60%), 4 of 10 files, {}/s, ETA {}",
                human_bytes(live.rate_bytes_per_sec),
                human_duration(eta)
            )
        );
    }

    #[test]
    fn the_rate_follows_a_change_within_its_window() {
        let mut rate = Rate::default();
        let mut moved = 0;
        for tenth in 0..=600_u64 {
            // 1000 bytes/s for 30 s, then 4000 bytes/s.
            moved += if tenth <= 300 { 100 } else { 400 };
            rate.count(tenth as f64 / 10.0, moved);
        }
        let after = rate.per_sec().unwrap();
        assert!((3700..=4000).contains(&after), "{after}");
        // A stall: the rate decays towards 0 instead of keeping its last value.
        for tenth in 601..=900_u64 {
            rate.idle(tenth as f64 / 10.0);
        }
        assert!(rate.per_sec().unwrap() < after / 2);
    }

    #[test]
    fn pg_basebackup_figures_without_files() {
        let live = LiveProgress {
            step: Step::Transfer,
            bytes_done: 3 << 30,
            bytes_total: 4 << 30,
            files_done: 0,
            files_total: 0,
            rate_bytes_per_sec: 50 << 20,
            eta_secs: Some(20),
        };
        assert_eq!(
            figures(&live),
            "3.0 GiB of 4.0 GiB (75%), 50.0 MiB/s, ETA 20s"
        );
    }
}
