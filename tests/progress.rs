//! What an operator reads while a long clone runs with stderr going to a file (systemd, cron,
//! `| tee`): progress lines with bytes, percent, files, rate and ETA, whose rate is what crosses
//! the wire — the `--bwlimit` in force, not flattered by bytes already there after a resume.
//!
//! One lab, one clone, throttled so that it lasts: its first run is limited by repmgr.conf's
//! `rsync_options` and, after over 30 s of progress lines, killed in the middle of a big file;
//! `clone resume --bwlimit` raises the limit (recorded in the history) and continues that file
//! where it stopped. Each run's progress lines must show the limit of that run, from its first
//! line. Then a pg_basebackup clone of the same lab, throttled by its `--max-rate`: the same
//! lines (without files, which it does not count) and `clone status` showing them while it runs.
//! On a terminal (a real pty, through `script`), the bar instead: redrawn in place, at the limit.

mod common;

use common::{debian_lab, kill_group, wait_until_stopped, Bench};
use lab::status::{is_outcome, OutcomeKind};
use pgreplica::transfer::rsync::RESUME_PARTIAL_MIN_BYTES;
use std::fs::File;
use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

/// The first run's limit (KiB/s), from rsync_options: slow enough that a big file is still in
/// flight after 30 s.
const FIRST_KBPS: u64 = 500;
/// The resumed run's limit (KiB/s), from `clone resume --bwlimit`.
const RESUMED_KBPS: u64 = 1000;

/// Starts pgreplica with `args`, its stderr going to `log` (not a terminal), in a process group
/// of its own.
fn spawn_logging_to(bench: &Bench, args: &[&str], log: &Path) -> Child {
    use std::os::unix::process::CommandExt;
    let file = File::create(log).expect("create the log file");
    bench
        .command(args)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(file)
        .process_group(0)
        .spawn()
        .expect("spawn pgreplica")
}

/// A size as pgreplica prints it (`512 bytes`, `1.5 KiB`, `12.0 MiB`), in bytes.
fn bytes_of(number: &str, unit: &str) -> f64 {
    let value: f64 = number
        .parse()
        .unwrap_or_else(|_| panic!("not a number: {number}"));
    let power = match unit {
        "bytes" => 0,
        "KiB" => 1,
        "MiB" => 2,
        "GiB" => 3,
        other => panic!("not an IEC unit: {other}"),
    };
    value * 1024_f64.powi(power)
}

/// One progress line of the Transfer step, as read back.
#[derive(Debug)]
struct Line {
    done: f64,
    total: f64,
    percent: u64,
    /// Files done and in all, when the step counts them (pg_basebackup does not).
    files: Option<(u64, u64)>,
    rate: f64,
    eta: bool,
}

/// `INFO: Transfer: 7.1 MiB of 36.9 MiB (19%), 0 of 1587 files, 250.3 KiB/s, ETA 2m01s`, or
/// without the files.
fn parse(line: &str) -> Option<Line> {
    let rest = line.strip_prefix("INFO: Transfer: ")?;
    let words: Vec<&str> = rest.split([' ', ',']).filter(|w| !w.is_empty()).collect();
    let shape = || format!("a progress line not in the documented shape: {line}");
    let [done, done_unit, "of", total, total_unit, percent, rest @ ..] = words.as_slice() else {
        panic!("{}", shape());
    };
    let (files, rest) = match rest {
        [files_done, "of", files_total, "files", rest @ ..] => (
            Some((files_done.parse().unwrap(), files_total.parse().unwrap())),
            rest,
        ),
        rest => (None, rest),
    };
    let [rate, rate_unit, eta @ ..] = rest else {
        panic!("{}", shape());
    };
    Some(Line {
        done: bytes_of(done, done_unit),
        total: bytes_of(total, total_unit),
        percent: percent
            .trim_matches(|c| c == '(' || c == ')' || c == '%')
            .parse()
            .unwrap(),
        files,
        rate: bytes_of(rate, rate_unit.strip_suffix("/s").expect("a rate")),
        eta: eta.first() == Some(&"ETA"),
    })
}

/// Whether an rsync temp file (`.NAME.XXXXXX`) under `dir` holds more than rsync's kept
/// minimum: a big file is in flight, and a kill now leaves its first bytes to be continued.
fn big_file_in_flight(dir: &Path) -> bool {
    let Ok(listing) = std::fs::read_dir(dir) else {
        return false;
    };
    listing.flatten().any(|entry| {
        let Ok(meta) = entry.metadata() else {
            return false;
        };
        if meta.is_dir() {
            return big_file_in_flight(&entry.path());
        }
        let name = entry.file_name().to_string_lossy().into_owned();
        name.starts_with('.') && meta.len() >= 2 * RESUME_PARTIAL_MIN_BYTES
    })
}

fn progress_lines(log: &str) -> Vec<Line> {
    log.lines().filter_map(parse).collect()
}

/// Asserts that every line's rate is within 20 % of `kbps` KiB/s, and its figures are sane.
fn assert_rates(lines: &[Line], kbps: u64, log: &str) {
    let limit = (kbps * 1024) as f64;
    for line in lines {
        assert!(
            (line.rate - limit).abs() <= 0.2 * limit,
            "rate {:.0} bytes/s, the limit is {limit:.0}: {line:?}\n{log}",
            line.rate
        );
        assert!(line.eta, "no ETA with a rate: {line:?}");
        assert!(line.done <= line.total && line.percent <= 100, "{line:?}");
        if let Some((done, total)) = line.files {
            assert!(done <= total, "{line:?}");
        }
    }
}

#[test]
fn progress_lines_show_the_rate_on_the_wire_after_a_kill_mid_file_and_with_pg_basebackup() {
    let bench = Bench::start(debian_lab());
    let data_dir = bench.lab.new_dir("progress");
    let conf = bench.repmgr_conf(
        "node2",
        &data_dir,
        &format!("rsync_options='--archive --bwlimit={FIRST_KBPS}'"),
    );
    let first_log = bench.lab.dir().join("progress-first.log");
    // One stream, so that the limit is the clone's rate.
    let args = bench.start_args(&conf, &["--jobs", "1", "--progress-interval", "10"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = spawn_logging_to(&bench, &args, &first_log);
    // Killed once it has printed three lines (30 s of copying) while a big file is in flight.
    let deadline = Instant::now() + Duration::from_secs(180);
    loop {
        let log = std::fs::read_to_string(&first_log).unwrap_or_default();
        if let Some(ended) = child.try_wait().unwrap() {
            panic!("the clone ended ({ended}) before the kill:\n{log}");
        }
        if progress_lines(&log).len() >= 3 && big_file_in_flight(&data_dir) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no big file in flight after three progress lines:\n{log}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
    kill_group(&mut child);
    wait_until_stopped(&bench, &data_dir);
    let log = std::fs::read_to_string(&first_log).unwrap();
    assert!(
        log.contains("NOTICE:") && log.contains("rsync_options: --archive left out"),
        "{log}"
    );
    let lines = progress_lines(&log);
    eprintln!("first run, limited to {FIRST_KBPS} KiB/s by rsync_options: {lines:#?}");
    assert_rates(&lines, FIRST_KBPS, &log);
    for pair in lines.windows(2) {
        assert!(pair[0].done <= pair[1].done, "{pair:?}");
    }

    // The resume: a higher limit, recorded; the kept first bytes of the big file are completed.
    let resumed_log = bench.lab.dir().join("progress-resumed.log");
    let data = data_dir.display().to_string();
    let resume = [
        "clone",
        "resume",
        data.as_str(),
        "--bwlimit",
        &RESUMED_KBPS.to_string(),
    ];
    let mut child = spawn_logging_to(&bench, &resume, &resumed_log);
    let status = child.wait().unwrap();
    let log = std::fs::read_to_string(&resumed_log).unwrap();
    assert!(status.success(), "the resume failed ({status}):\n{log}");
    assert!(
        log.contains(&format!(
            "continues with --bwlimit {FIRST_KBPS} → {RESUMED_KBPS} (recorded)"
        )),
        "{log}"
    );
    assert!(
        log.contains("continuing 1 partially copied file(s) where they stopped"),
        "the kill did not land mid-file:\n{log}"
    );
    let lines = progress_lines(&log);
    assert!(
        !lines.is_empty(),
        "the resumed run printed no progress line:\n{log}"
    );
    eprintln!("resumed run, limited to {RESUMED_KBPS} KiB/s: {lines:#?}");
    // From the first line on: the kept bytes and the files done before are not speed.
    assert_rates(&lines, RESUMED_KBPS, &log);

    let status = bench.status(&data_dir);
    assert_eq!(status["phase"], "done", "{status}");
    let history = status["history"].as_array().unwrap();
    let changes: Vec<_> = history
        .iter()
        .filter(|t| is_outcome(&t["outcome"], OutcomeKind::PaceChanged))
        .collect();
    assert_eq!(changes.len(), 1, "{status}");
    assert_eq!(
        changes[0]["message"],
        format!("--bwlimit {FIRST_KBPS} → {RESUMED_KBPS}")
    );
    assert_eq!(changes[0]["step"], "transfer");
    // pg_basebackup mode, on the same lab: its own estimate of the size updated in place, a
    // rate that is its --max-rate (2 MiB/s), no files (it counts none), and `clone status`
    // showing the same figures while it runs.
    let bb_dir = bench.lab.new_dir("progress-basebackup");
    let conf = bench.repmgr_conf("node3", &bb_dir, "pg_basebackup_options='--max-rate=2M'\n");
    let bb_log = bench.lab.dir().join("progress-basebackup.log");
    let args = bench.start_args(&conf, &["--without-barman", "--progress-interval", "5"]);
    let args: Vec<&str> = args.iter().map(String::as_str).collect();
    let mut child = spawn_logging_to(&bench, &args, &bb_log);
    let bb = bb_dir.display().to_string();
    let mut shown = None;
    let deadline = Instant::now() + Duration::from_secs(180);
    let ended = loop {
        if let Some(ended) = child.try_wait().unwrap() {
            break ended;
        }
        let output = bench.run(&["clone", "status", &bb]);
        let text = String::from_utf8_lossy(&output.stdout).into_owned();
        if let Some(line) = text.lines().find(|l| l.contains("progress:   Transfer: ")) {
            if !line.contains(" 0 bytes/s") {
                shown = Some(line.to_string());
            }
        }
        assert!(
            Instant::now() < deadline,
            "pg_basebackup mode took too long"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    let log = std::fs::read_to_string(&bb_log).unwrap();
    assert!(
        ended.success(),
        "the pg_basebackup clone failed ({ended}):\n{log}"
    );
    let shown = shown.unwrap_or_else(|| panic!("clone status never showed a rate:\n{log}"));
    assert!(
        shown.contains(" of ") && shown.contains("%), ") && !shown.contains("files"),
        "{shown}"
    );
    let lines = progress_lines(&log);
    eprintln!("pg_basebackup at --max-rate=2M: {lines:#?}");
    assert!(lines.len() >= 2, "{log}");
    assert_rates(&lines, 2048, &log);
    assert!(lines.iter().all(|l| l.files.is_none()), "{log}");
    for pair in lines.windows(2) {
        assert!(pair[0].done <= pair[1].done, "{pair:?}");
    }
}

/// The frames of the bar in a terminal transcript: what lies between carriage returns, without
/// ANSI escape sequences, that reads as progress figures (`… of … (N%), RATE/s…`).
fn bar_frames(transcript: &str) -> Vec<String> {
    let plain = strip_ansi(transcript);
    plain
        .split(['\r', '\n'])
        .filter_map(|piece| {
            let at = piece.find(|c: char| c.is_ascii_digit())?;
            let figures = piece[at..].trim_end();
            (figures.contains(" of ") && figures.contains("%), ") && figures.contains("/s"))
                .then(|| figures.to_string())
        })
        .collect()
}

/// `text` without CSI escape sequences (`ESC [ … final byte`), as a terminal shows it.
fn strip_ansi(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    let mut chars = text.chars();
    while let Some(c) = chars.next() {
        if c == '\u{1b}' {
            if chars.next() == Some('[') {
                for d in chars.by_ref() {
                    if ('@'..='~').contains(&d) {
                        break;
                    }
                }
            }
        } else {
            out.push(c);
        }
    }
    out
}

/// On a terminal (a real pty, through util-linux's `script`), a pg_basebackup clone at
/// `--max-rate` shows one bar redrawn in place — frames separated by carriage returns, never one
/// line each — whose rate is the limit once the copy is under way, and no progress lines
/// (those are for logs).
#[test]
fn on_a_terminal_the_bar_redraws_in_place_at_the_rate_on_the_wire() {
    let bench = Bench::start(debian_lab());
    let bb_dir = bench.lab.new_dir("terminal-basebackup");
    let conf = bench.repmgr_conf("node2", &bb_dir, "pg_basebackup_options='--max-rate=2M'\n");
    let mut words = vec![bench.binary.display().to_string()];
    words.extend(bench.start_args(&conf, &["--without-barman"]));
    let line = words
        .iter()
        .map(|w| lab::shell_quote(w))
        .collect::<Vec<_>>()
        .join(" ");
    // script(1): the command on a new pty, its output (the terminal's) on script's stdout.
    let output = bench
        .lab
        .command_as_postgres("script")
        .args(["-qefc", &line, "/dev/null"])
        .env("TERM", "xterm")
        .stdin(Stdio::null())
        .output()
        .expect("run script(1): util-linux's bsdutils must be installed");
    let transcript = String::from_utf8_lossy(&output.stdout).into_owned();
    assert!(
        output.status.success(),
        "the clone on a terminal failed ({}):\n{transcript}",
        output.status
    );
    assert!(
        !transcript.contains("INFO: Transfer: "),
        "progress lines on a terminal:\n{transcript}"
    );
    let frames = bar_frames(&transcript);
    let frame_lines = strip_ansi(&transcript)
        .lines()
        .filter(|l| !bar_frames(l).is_empty())
        .count();
    eprintln!("{} frames on {frame_lines} line(s)", frames.len());
    assert!(
        frames.len() >= 10,
        "too few frames of the bar:\n{transcript}"
    );
    // Redrawn in place: every frame of the step on one terminal line.
    assert_eq!(
        frame_lines, 1,
        "the bar is not redrawn in place:\n{transcript}"
    );
    // Once a fifth of the copy is done, each frame's rate is the limit (2 MiB/s) within 20 %.
    let limit = 2048.0 * 1024.0;
    let mut checked = 0;
    for frame in &frames {
        let parsed = parse(&format!("INFO: Transfer: {frame}")).expect("a frame's figures");
        assert!(
            parsed.done <= parsed.total && parsed.percent <= 100,
            "{frame}"
        );
        if parsed.percent >= 20 && parsed.percent < 100 {
            checked += 1;
            assert!(
                (parsed.rate - limit).abs() <= 0.2 * limit,
                "a frame's rate is not the limit: {frame}\n{transcript}"
            );
        }
    }
    assert!(checked >= 5, "too few frames past 20 %:\n{transcript}");
}
