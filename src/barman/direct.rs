//! Barman's catalogue read directly, in one ssh round trip and without Barman's Python: one
//! small POSIX sh script ([`CATALOGUE_SCRIPT`]) prints Barman's configuration files, every
//! backup.info of the server and what each backup's directory holds; the functions here read
//! that output ([`ScriptOutput::parse`]), compute the server's directories as Barman does
//! ([`conf`](super::conf)), and pin a selector to a backup as `barman show-backup` would
//! ([`DirectCatalogue::pin`]).
//!
//! The script cannot know the server's directories before the configuration is parsed here, so
//! it reads the catalogue where Barman's defaults put it (`<barman_home>/<server>`, barman_home
//! as the main file's `[barman]` section spells it); when the directories computed here differ,
//! the client runs it again with them.
//!
//! Must not: guess. Whatever it cannot reproduce exactly — a configuration it cannot read,
//! `barman` missing on the host, `.barman.auto.conf` (3.19's `config-update`), a selector
//! Barman would refuse or resolve with a version-dependent rule, a chain member missing — is an
//! `Err` saying why, and the client asks Barman itself, whose answers and refusals stay those of
//! today.

use std::collections::BTreeMap;

use super::conf::BarmanConf;
use super::info::BackupInfo;
use super::probe::{probe_facts, Probe};
use super::{ServerDirs, ShowBackup};

/// The catalogue script: `$1` the configuration file (empty: Barman's search), `$2` the server,
/// `$3 $4 $5` barman_home, basebackups_directory and backup_directory (empty: from the main
/// file's `barman_home`, with Barman's defaults). Each file's lines are printed prefixed with
/// `|` after a header line, so no content can pass for a header; `end` closes a complete answer.
/// `probe_facts!` (in [`probe`](super::probe)) prints each backup directory's facts, as the one-backup probe
/// does.
pub(super) const CATALOGUE_SCRIPT: &str = concat!(
    r#"printf 'barman %s\nuserhome %s\n' "$(command -v barman || echo -)" "$HOME"
show() { if [ -r "$2" ]; then printf '%s %s\n' "$1" "$2"; awk '{print "|" $0}' "$2"; else printf 'unreadable %s\n' "$2"; fi; }
tilde() { case $1 in "~/"*) printf '%s/%s' "$HOME" "${1#??}";; *) printf '%s' "$1";; esac; }
c=$1
if [ -z "$c" ]; then
  for f in "$HOME/.barman.conf" /etc/barman.conf /etc/barman/barman.conf; do
    if [ -r "$f" ]; then c=$f; break; fi
  done
fi
if [ -z "$c" ]; then echo noconf; echo end; exit 0; fi
show conf "$c"
get() { awk -v k="$1" '/^\[/ { s = $0; sub(/[ \t\r]+$/, "", s); next }
  s == "[barman]" && tolower($0) ~ ("^" k "[ \t]*[=:]") { v = $0; sub(/^[^=:]*[=:][ \t]*/, "", v); sub(/[ \t\r]+$/, "", v) }
  END { print v }' "$c"; }
d=$(tilde "$(get configuration_files_directory)")
printf 'confdir %s\n' "$d"
if [ -n "$d" ] && [ -d "$d" ]; then
  for f in "$d"/*.conf; do if [ -f "$f" ]; then show confd "$f"; fi; done
fi
h=$3 bb=$4 m=$5
if [ -z "$h" ]; then h=$(get barman_home) m=$(get barman_home)/$2 bb=$(get barman_home)/$2/base; fi
printf 'home %s\nbbdir %s\nbkdir %s\n' "$h" "$bb" "$m"
if [ -e "$h/.barman.auto.conf" ]; then echo autoconf; fi
for f in "$m"/meta/*-backup.info; do
  if [ -f "$f" ]; then i=${f##*/}; show "meta ${i%-backup.info}" "$f"; fi
done
for f in "$bb"/*/backup.info; do
  if [ -f "$f" ]; then i=${f%/backup.info}; show "info ${i##*/}" "$f"; fi
done
for b in "$bb"/*/; do
  if [ -d "$b" ]; then b=${b%/}; echo "probe ${b##*/}"
"#,
    probe_facts!(),
    r#"  fi
done
echo end"#
);

/// What the script printed, read but not yet judged.
#[derive(Debug, Default, PartialEq, Eq)]
pub(super) struct ScriptOutput {
    /// Where `barman` is on the host's PATH, if anywhere.
    barman: Option<String>,
    /// The ssh user's home there (`~/` in configuration_files_directory).
    user_home: String,
    /// No configuration file was found where Barman looks.
    no_config: bool,
    /// The main configuration file, then configuration_files_directory's `*.conf` in Python's
    /// `sorted()` order (fixed here, not by the shell's glob): (path, text).
    files: Vec<(String, String)>,
    /// A file that exists but cannot be read (Barman would skip it silently, or fail).
    unreadable: Option<String>,
    /// The configuration_files_directory the script listed.
    confdir: String,
    /// The directories whose catalogue the script read: barman_home, basebackups_directory,
    /// backup_directory.
    read_from: [String; 3],
    /// `<barman_home>/.barman.auto.conf` exists.
    autoconf: bool,
    /// backup.info text by id: from `meta/` (Barman ≥ 3.13.2) where there is one, as Barman's
    /// `_load_backup_cache` prefers it, else from `base/<id>/`.
    infos: BTreeMap<String, String>,
    /// What each backup directory holds, by id.
    probes: BTreeMap<String, Probe>,
}

/// Which file the `|` lines being read belong to.
enum Body {
    Nothing,
    Main,
    Confd(String),
    Info { id: String, from_meta: bool },
    Probe(String),
}

impl ScriptOutput {
    /// Reads the script's output; an incomplete or unexpected answer is an error.
    pub(super) fn parse(text: &str) -> Result<ScriptOutput, String> {
        let mut out = ScriptOutput::default();
        let mut confd = Vec::new();
        let mut meta_ids = Vec::new();
        let mut body = Body::Nothing;
        let mut content = String::new();
        let mut ended = false;
        for line in text.lines() {
            if ended {
                return Err(format!("text after the end: {line:?}"));
            }
            if let Some(rest) = line.strip_prefix('|') {
                if matches!(body, Body::Nothing | Body::Probe(_)) {
                    return Err(format!("file content outside a file: {line:?}"));
                }
                content.push_str(rest);
                content.push('\n');
                continue;
            }
            if let Body::Probe(id) = &body {
                if out.probes.get_mut(id).is_some_and(|p| p.read_fact(line)) {
                    continue;
                }
            }
            let text = std::mem::take(&mut content);
            match std::mem::replace(&mut body, Body::Nothing) {
                Body::Main => out.files.push((out.confdir.clone(), text)),
                Body::Confd(path) => confd.push((path, text)),
                Body::Info { id, from_meta } => {
                    if from_meta {
                        meta_ids.push(id.clone());
                        out.infos.insert(id, text);
                    } else if !meta_ids.contains(&id) {
                        out.infos.insert(id, text);
                    }
                }
                Body::Probe(_) | Body::Nothing => {}
            }
            let (word, rest) = line.split_once(' ').unwrap_or((line, ""));
            let rest = rest.to_string();
            match word {
                "barman" => out.barman = (rest != "-" && !rest.is_empty()).then_some(rest),
                "userhome" => out.user_home = rest,
                "noconf" => out.no_config = true,
                "conf" => {
                    // The main file's path rides in `confdir` until its text is complete.
                    out.confdir = rest;
                    body = Body::Main;
                }
                "confd" => body = Body::Confd(rest),
                "unreadable" => out.unreadable = Some(rest),
                "confdir" => out.confdir = rest,
                "home" => out.read_from[0] = rest,
                "bbdir" => out.read_from[1] = rest,
                "bkdir" => out.read_from[2] = rest,
                "autoconf" => out.autoconf = true,
                "meta" | "info" => {
                    let (id, _path) = rest
                        .split_once(' ')
                        .ok_or_else(|| format!("a header without a path: {line:?}"))?;
                    body = Body::Info {
                        id: id.to_string(),
                        from_meta: word == "meta",
                    };
                }
                "probe" => {
                    out.probes.insert(rest.clone(), Probe::default());
                    body = Body::Probe(rest);
                }
                "end" => ended = true,
                _ => return Err(format!("an unexpected line: {line:?}")),
            }
        }
        if !ended {
            return Err("the answer stopped early".into());
        }
        confd.sort();
        out.files.extend(confd);
        Ok(out)
    }
}

/// What the script's output says, judged.
#[derive(Debug)]
pub(super) enum Reading {
    /// The catalogue, read where Barman keeps it.
    Ready(DirectCatalogue),
    /// The script read the catalogue where Barman's defaults put it, but the configuration puts
    /// it elsewhere: run it again with these arguments (barman_home, basebackups_directory,
    /// backup_directory).
    Again([String; 3]),
}

/// The server's catalogue as Barman would load it.
#[derive(Debug, Default)]
pub(super) struct DirectCatalogue {
    /// The server's directories, computed from the configuration as Barman does.
    pub(super) dirs: ServerDirs,
    /// Every backup with a backup.info, by id: what its directory holds and the backup.info.
    backups: BTreeMap<String, Probe>,
}

/// Judges the script's output for server `server`: the catalogue, a second reading elsewhere,
/// or why the direct read cannot be trusted.
pub(super) fn judge(out: ScriptOutput, server: &str) -> Result<Reading, String> {
    if out.barman.is_none() {
        return Err("no \"barman\" on the ssh user's PATH on the Barman host".into());
    }
    if out.no_config {
        return Err("no Barman configuration file where Barman looks for one".into());
    }
    if let Some(path) = out.unreadable {
        return Err(format!("cannot read {path}"));
    }
    let (main, _) = out
        .files
        .first()
        .ok_or("the script printed no configuration")?;
    let mut conf = BarmanConf::default();
    let mut first = BarmanConf::default();
    first.read(main, &out.files[0].1)?;
    for (path, text) in &out.files {
        conf.read(path, text)?;
    }
    // The script listed the directory the main file names, as its shell spelled it: it must be
    // the one Barman reads.
    let confdir = first
        .configuration_files_directory(&out.user_home)?
        .unwrap_or_default();
    if confdir != out.confdir {
        return Err(format!(
            "configuration_files_directory is {confdir:?}, the script listed {:?}",
            out.confdir
        ));
    }
    // A [barman] section in an included file is fatal to Barman.
    if !conf.same_global_section(&first) {
        return Err("an included file changes the [barman] section".into());
    }
    let dirs = conf.server_dirs(server)?;
    let wanted = [
        conf.barman_home()?,
        dirs.basebackups_directory.clone(),
        dirs.backup_directory.clone(),
    ];
    if wanted != out.read_from {
        return Ok(Reading::Again(wanted));
    }
    if out.autoconf {
        return Err(format!(
            "{}/.barman.auto.conf holds changes made by \"barman config-update\"",
            wanted[0]
        ));
    }
    let mut backups = BTreeMap::new();
    for (id, text) in out.infos {
        let info = BackupInfo::parse(&text).map_err(|why| format!("backup.info of {id}: {why}"))?;
        let mut probe = out.probes.get(&id).cloned().unwrap_or_default();
        probe.info = Some(info);
        backups.insert(id, probe);
    }
    Ok(Reading::Ready(DirectCatalogue { dirs, backups }))
}

/// The statuses `latest`, `oldest` and a backup name consider (Barman's
/// `BackupManager.DEFAULT_STATUS_FILTER`, `STATUS_COPY_DONE`, the same in 3.4 and 3.19).
const COPY_DONE: [&str; 2] = ["WAITING_FOR_WALS", "DONE"];

/// The backup.info fields [`restorability`](super::restorability) reads from `show-backup`
/// when backup.info lacks them: a direct read needs them all in backup.info.
const NEEDED: [&str; 5] = ["version", "size", "timeline", "begin_wal", "end_wal"];

impl DirectCatalogue {
    /// A backup's probe (its directory's facts and backup.info).
    pub(super) fn probe(&self, id: &str) -> Option<&Probe> {
        self.backups.get(id)
    }

    fn status(probe: &Probe) -> &str {
        // FieldListFile's default for a missing status.
        probe
            .info
            .as_ref()
            .and_then(|i| i.get("status"))
            .unwrap_or("EMPTY")
    }

    /// The last (or first) id, in id order, among the backups with one of `statuses`.
    fn extreme(&self, statuses: &[&str], last: bool) -> Option<&str> {
        let mut ids = self
            .backups
            .iter()
            .filter(|(_, p)| statuses.contains(&Self::status(p)))
            .map(|(id, _)| id.as_str());
        if last {
            ids.next_back()
        } else {
            ids.next()
        }
    }

    /// Pins `selector` as Barman's `parse_backup_id` does (3.4 and 3.19 alike) and returns what
    /// `show-backup` would have said of it. Everything Barman would refuse (unknown, ambiguous
    /// name) or resolve by a rule of one release only (`latest-full`), and a backup whose
    /// backup.info or chain is incomplete, is an `Err`: Barman is asked instead, and its
    /// answer or refusal stands.
    pub(super) fn pin(&self, selector: &str, max_chain: usize) -> Result<ShowBackup, String> {
        let id = match selector {
            "latest" | "last" => self.extreme(&COPY_DONE, true),
            "oldest" | "first" => self.extreme(&COPY_DONE, false),
            "latest-full" | "last-full" => {
                return Err(format!(
                    "\"{selector}\" exists only in newer Barman releases"
                ))
            }
            // Barman tests `shortcut in ("last-failed")`: a substring of that string.
            s if !s.is_empty() && "last-failed".contains(s) => self.extreme(&["FAILED"], true),
            s if is_backup_id(s) => Some(s),
            name => {
                let mut named = self.backups.iter().filter(|(_, p)| {
                    COPY_DONE.contains(&Self::status(p))
                        && p.info.as_ref().and_then(|i| i.get("backup_name")) == Some(name)
                });
                match (named.next(), named.next()) {
                    (Some((id, _)), None) => Some(id.as_str()),
                    (Some(_), Some(_)) => {
                        return Err(format!("several backups are named \"{name}\""))
                    }
                    (None, _) => None,
                }
            }
        };
        let id = id.ok_or_else(|| format!("no backup \"{selector}\" in the catalogue"))?;
        let probe = self
            .probe(id)
            .ok_or_else(|| format!("no backup.info for backup {id}"))?;
        let info = probe.info.clone().unwrap_or_default();
        if let Some(key) = NEEDED.iter().find(|k| info.get(k).is_none()) {
            return Err(format!("backup.info of {id} has no {key}"));
        }
        // The chain's members must all be here, as the Barman path would find them.
        let mut parent = info.get("parent_backup_id");
        for _ in 0..max_chain {
            let Some(p) = parent else { break };
            parent = self
                .probe(p)
                .ok_or_else(|| format!("backup {p} of the chain of {id} has no backup.info"))?
                .info
                .as_ref()
                .and_then(|i| i.get("parent_backup_id"));
        }
        Ok(ShowBackup {
            backup_id: id.to_string(),
            backup_name: info.get("backup_name").map(str::to_string),
            status: Self::status(probe).to_string(),
            ..ShowBackup::default()
        })
    }
}

/// Barman's `is_backup_id`: `re.match(r"(\d{8})T\d{6}$")`.
fn is_backup_id(s: &str) -> bool {
    let b = s.as_bytes();
    b.len() == 15
        && b[8] == b'T'
        && b.iter()
            .enumerate()
            .all(|(i, c)| i == 8 || c.is_ascii_digit())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::barman::{Barman, Transport};
    use states::BackupKind;
    use std::path::Path;

    macro_rules! fixture {
        ($path:literal) => {
            include_str!(concat!("../../tests/fixtures/barman/", $path))
        };
    }

    /// A backup.info of the real 3.19.1 fixture with its status (and name) changed.
    fn info_with(status: &str, name: Option<&str>) -> String {
        fixture!("3.19.1/20261125T150747-backup.info")
            .lines()
            .map(|l| match l.split_once('=') {
                Some(("status", _)) => format!("status={status}"),
                Some(("backup_name", _)) => format!("backup_name={}", name.unwrap_or("None")),
                _ => l.to_string(),
            })
            .chain(name.map(|n| format!("backup_name={n}")))
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The script's answer for a catalogue of `backups` (id, backup.info text), read at
    /// Barman's default place under /h.
    fn answer(backups: &[(&str, String)]) -> String {
        let mut text = String::from(
            "barman /usr/bin/barman\nuserhome /home/b\nconf /etc/barman.conf\n|[barman]\n|barman_home = /h\n|\n|[pg]\n|description = x\nconfdir \nhome /h\nbbdir /h/pg/base\nbkdir /h/pg\n",
        );
        for (id, info) in backups {
            text.push_str(&format!("meta {id} /h/pg/meta/{id}-backup.info\n"));
            for line in info.lines() {
                text.push_str(&format!("|{line}\n"));
            }
        }
        for (id, _) in backups {
            text.push_str(&format!("probe {id}\ndir data\nmanifest\n"));
        }
        text.push_str("end\n");
        text
    }

    fn catalogue(backups: &[(&str, String)]) -> DirectCatalogue {
        let out = ScriptOutput::parse(&answer(backups)).expect("parses");
        match judge(out, "pg").expect("trusted") {
            Reading::Ready(c) => c,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn selectors_resolve_as_barman_resolves_them() {
        let c = catalogue(&[
            ("20261125T100000", info_with("DONE", Some("monday"))),
            ("20261125T110000", info_with("WAITING_FOR_WALS", None)),
            ("20261125T120000", info_with("FAILED", Some("monday"))),
            ("20261125T090000", info_with("STARTED", None)),
        ]);
        assert_eq!(c.dirs.basebackups_directory, "/h/pg/base");
        assert_eq!(c.dirs.wals_directory, "/h/pg/wals");
        let id = |s: &str| c.pin(s, 100).map(|shown| (shown.backup_id, shown.status));
        let done = ("20261125T100000".to_string(), "DONE".to_string());
        let waiting = (
            "20261125T110000".to_string(),
            "WAITING_FOR_WALS".to_string(),
        );
        let failed = ("20261125T120000".to_string(), "FAILED".to_string());
        assert_eq!(id("latest"), Ok(waiting.clone()));
        assert_eq!(id("last"), Ok(waiting));
        assert_eq!(id("oldest"), Ok(done.clone()));
        assert_eq!(id("first"), Ok(done.clone()));
        assert_eq!(id("last-failed"), Ok(failed.clone()));
        // Barman's `in ("last-failed")` is a substring test, in 3.4 and 3.19 alike.
        assert_eq!(id("fail"), Ok(failed.clone()));
        assert_eq!(id("20261125T120000"), Ok(failed));
        assert_eq!(
            id("20261125T090000").map(|(_, s)| s),
            Ok("STARTED".to_string())
        );
        // A name counts only among copied backups: the FAILED one does not make it ambiguous.
        assert_eq!(id("monday"), Ok(done));
        assert!(id("tuesday").expect_err("unknown").contains("no backup"));
        assert!(id("20261125T130000")
            .expect_err("unknown")
            .contains("no backup"));
        assert!(id("latest-full").expect_err("newer only").contains("newer"));
        assert_eq!(
            c.pin("20261125T100000", 100).map(|s| s.backup_name),
            Ok(Some("monday".to_string()))
        );
        let twice = catalogue(&[
            ("20261125T100000", info_with("DONE", Some("x"))),
            ("20261125T110000", info_with("DONE", Some("x"))),
        ]);
        assert!(twice
            .pin("x", 100)
            .expect_err("ambiguous")
            .contains("several"));
        assert!(is_backup_id("20261125T061436"));
        assert!(!is_backup_id("20261125T06143") && !is_backup_id("2026112xT061436"));
    }

    #[test]
    fn an_incomplete_catalogue_is_not_trusted() {
        let child = fixture!("3.19.1/20261125T150747-backup.info")
            .replace("parent_backup_id=None", "parent_backup_id=20261125T000000");
        let c = catalogue(&[("20261125T150747", child)]);
        assert!(c
            .pin("latest", 100)
            .expect_err("no parent")
            .contains("chain"));
        let no_size = info_with("DONE", None).replace("\nsize=", "\nsize_was=");
        let c = catalogue(&[("20261125T150747", no_size)]);
        assert!(c
            .pin("latest", 100)
            .expect_err("no size")
            .contains("no size"));
        let judged = |text: String| {
            ScriptOutput::parse(&text)
                .and_then(|o| judge(o, "pg"))
                .map(|r| matches!(r, Reading::Ready(_)))
        };
        let base = answer(&[]);
        assert!(judged(base.replace("barman /usr/bin/barman", "barman -"))
            .expect_err("no barman")
            .contains("PATH"));
        assert!(judged(base.replace("end\n", "autoconf\nend\n"))
            .expect_err("auto")
            .contains("config-update"));
        // A file of configuration_files_directory that changes [barman] is fatal to Barman.
        let fatal = base.replace(
            "confdir \n",
            "confdir \nconfd /etc/barman.d/x.conf\n|[barman]\n|log_level = DEBUG\n",
        );
        assert!(judged(fatal).expect_err("fatal").contains("[barman]"));
        assert!(judged(base.replace("|[pg]", "|[pgx]"))
            .expect_err("no server")
            .contains("[pg]"));
        assert!(judged(base.replace("end\n", ""))
            .expect_err("cut")
            .contains("early"));
        assert!(judged(base.replace("home /h\n", "home /h\nsurprise\n"))
            .expect_err("odd")
            .contains("surprise"));
        assert!(
            judged(base.replace("confdir \n", "confdir /etc/barman.d\n"))
                .expect_err("confdir")
                .contains("configuration_files_directory")
        );
        assert_eq!(
            judged(base.replace(
                "|barman_home = /h",
                "|barman_home = /h\n|[pg]\n|backup_directory = /elsewhere"
            ))
            .ok(),
            Some(false),
            "a server elsewhere is read again there"
        );
    }

    /// The real script through `sh`, on catalogues laid out on disk as Barman 3.4 (backup.info
    /// in `base/<id>/`) and 3.19 (in `meta/`, a server moved by `backup_directory`) write them,
    /// with their real backup.info files, in paths that need quoting.
    #[test]
    fn the_script_reads_real_catalogues() {
        let tmp = tempfile::tempdir().expect("tempdir");
        let root = tmp.path().join("it's $HOME");
        let home = root.join("home");
        let write = |path: &Path, text: &str| {
            std::fs::create_dir_all(path.parent().expect("parent")).expect("mkdir");
            std::fs::write(path, text).expect("write");
        };
        let s = |p: &Path| p.to_str().expect("utf-8").to_string();
        write(
            &root.join("barman.conf"),
            &format!(
                "[barman]\nbarman_home = {}\nconfiguration_files_directory = {}\n",
                s(&home),
                s(&root.join("conf.d"))
            ),
        );
        write(
            &root.join("conf.d/pg.conf"),
            "[pg]\ndescription = Barman 3.4\n",
        );
        write(
            &root.join("conf.d/pg319.conf"),
            "[pg319]\nbackup_directory = %(barman_home)s/moved/%(name)s\n",
        );
        write(&root.join("conf.d/ignored.txt"), "[ignored]\n");
        let bin = root.join("bin/barman");
        write(&bin, "#!/bin/sh\nexit 0\n");
        std::fs::set_permissions(&bin, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .expect("chmod");
        for (id, info) in [
            (
                "20261125T150710",
                fixture!("3.4.0/backup.info-20261125T150710"),
            ),
            (
                "20261125T150746",
                fixture!("3.4.0/backup.info-20261125T150746"),
            ),
        ] {
            let dir = home.join("pg/base").join(id);
            write(&dir.join("backup.info"), info);
            write(&dir.join("data/backup_manifest"), "{}");
            std::fs::create_dir_all(dir.join("16386")).expect("mkdir");
        }
        let moved = home.join("moved/pg319");
        for (id, info) in [
            (
                "20261125T150740",
                fixture!("3.19.1/20261125T150740-backup.info"),
            ),
            (
                "20261125T150747",
                fixture!("3.19.1/20261125T150747-backup.info"),
            ),
        ] {
            write(&moved.join(format!("meta/{id}-backup.info")), info);
            write(&moved.join(format!("base/{id}/data/backup_manifest")), "{}");
        }
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let launcher = vec![
            "env".to_string(),
            format!("PATH={}:/usr/bin:/bin", s(&root.join("bin"))),
            "sh".into(),
            "-c".into(),
        ];
        let client = |server: &str| {
            Barman::new("local", server, Some(s(&root.join("barman.conf"))), vec![])
                .with_transport(Transport::Local(launcher.clone()))
        };
        let old = rt
            .block_on(client("pg").read_catalogue())
            .expect("runs")
            .expect("trusted");
        assert_eq!(old.dirs.backup_directory, s(&home.join("pg")));
        let facts = rt
            .block_on(client("pg").resolve_backup("oldest"))
            .expect("resolves");
        assert_eq!(facts.backup_id, "20261125T150710");
        assert_eq!(facts.backup_dir, s(&home.join("pg/base/20261125T150710")));
        assert_eq!(facts.wals_directory, s(&home.join("pg/wals")));
        assert_eq!(facts.tablespaces, vec![crate::barman::fixture_tbs1()]);
        assert!(facts.has_manifest && facts.kind == BackupKind::Plain);
        let latest = rt
            .block_on(client("pg").resolve_backup("latest"))
            .expect("resolves");
        assert_eq!(latest.backup_id, "20261125T150746");
        let new = rt
            .block_on(client("pg319").read_catalogue())
            .expect("runs")
            .expect("trusted");
        assert_eq!(new.dirs.basebackups_directory, s(&moved.join("base")));
        let named = rt
            .block_on(client("pg319").resolve_backup("named 319"))
            .expect("resolves");
        assert_eq!(named.backup_id, "20261125T150740");
        assert_eq!(named.backup_name.as_deref(), Some("named 319"));
        assert_eq!(named.pg_version, 150018);
        // No configuration where it is said to be: not trusted, and Barman is asked.
        let missing = Barman::new("local", "pg", Some(s(&root.join("none.conf"))), vec![])
            .with_transport(Transport::Local(launcher.clone()));
        let why = rt
            .block_on(missing.read_catalogue())
            .expect("runs")
            .expect_err("untrusted");
        assert!(why.contains("none.conf"), "{why}");
    }
}
