//! One ssh connection per run, multiplexed: every ssh a clone run starts to the Barman host —
//! the catalogue read, the probes, the file lists, rsync's `-e` — shares one master connection
//! (ssh's `ControlMaster`, `ControlPersist`), so only the first pays for the TCP and key
//! exchange handshake. Only an ssh pgreplica waits for itself may start the master
//! ([`Role`]); rsync's and the streaming engine's use it when it is there.
//!
//! The control socket lives in a private directory: the clone's own directory in the state
//! directory (mode 0700, checked by the store), or a 0700 directory made in the temporary
//! directory when that path is too long for a socket (`sun_path` holds 108 bytes) or holds
//! characters ssh's `ControlPath` would read otherwise (blanks, quotes, `%`). The master is
//! closed when the run ends, failed or not ([`SharedConnection`]'s drop): asked to exit over its
//! socket in ssh's own multiplexing protocol (what `ssh -O exit` sends, without starting ssh),
//! or by `ssh -O exit` where that fails. A
//! run killed with SIGKILL leaves its master (which exits after [`PERSIST`] idle, and which the
//! next run of the clone shares) or a dead socket behind, which the next run removes as it
//! starts (ssh itself would connect directly beside it).
//!
//! `ssh_options` that set `ControlMaster` or `ControlPath` themselves win: pgreplica then adds
//! nothing ([`Multiplexing::SshOptions`]).
//!
//! Must not: share a connection beyond one run (the directory is the run's), or leave a master
//! running after a run that ends normally.

use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::Mutex;

use super::ssh::option_names;
use super::Barman;

/// How long an idle master waits for the next session: longer than any pause between two
/// steps of a run, short enough that one left by a killed run goes soon.
pub const PERSIST: &str = "60";

/// How long the master may take to tear down once asked to exit (it removes its socket within
/// a few milliseconds): polled every 2 ms, for 2 s at most.
const TEARDOWN: states::RetryPolicy = states::RetryPolicy {
    max_attempts: u32::MAX,
    first_delay_ms: 2,
    max_delay_ms: 2,
    give_up_after_ms: Some(2_000),
    jitter_percent: 0,
};

/// The longest socket path: `sun_path` is 108 bytes with its NUL.
const SUN_PATH_MAX: usize = 107;

/// What ssh adds to the socket's name while it creates it: `.` and 16 random characters.
const SSH_TEMP_SUFFIX: usize = 17;

/// The socket's name: `ssh-` and 8 hex digits of a hash of the destination and `ssh_options`
/// ([`socket_name`]), so that a clone resumed against another host never talks to a master
/// left by the old one. ssh's own `%C` would do too, but its 40 characters leave too little of
/// `sun_path` for a clone's directory.
const NAME_LEN: usize = 12;

/// The control directory of the run in this process, when one is shared.
static CONTROL_DIR: Mutex<Option<PathBuf>> = Mutex::new(None);

/// Which part an ssh takes in the shared connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// It may start the master (`ControlMaster=auto`, `ControlPersist`): only an ssh pgreplica
    /// runs and waits for itself. The master outlives that ssh (it is reparented to init); one
    /// forked under a guardian (rsync's ssh, the streaming engine's) would be the guardian's to
    /// wait for, and the guardian would wait until the master's persistence ends.
    Master,
    /// It uses the master when there is one and connects on its own otherwise
    /// (`ControlMaster=no` with the `ControlPath`).
    Client,
}

/// Whether and how ssh connections to the Barman host are shared.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Multiplexing {
    /// pgreplica adds `ControlMaster=auto`, `ControlPath=<this socket>`, `ControlPersist`.
    Shared(PathBuf),
    /// `ssh_options` set `ControlMaster` or `ControlPath`: theirs stands.
    SshOptions,
    /// Each ssh connects on its own (the reason).
    Off(String),
}

impl Multiplexing {
    /// The choice for `host` with `ssh_options` and the run's control directory, if any.
    pub fn decide(host: &str, ssh_options: &[String], control_dir: Option<&Path>) -> Multiplexing {
        let names = option_names(ssh_options);
        if names
            .iter()
            .any(|n| n == "controlmaster" || n == "controlpath")
        {
            return Multiplexing::SshOptions;
        }
        match control_dir {
            Some(dir) => Multiplexing::Shared(dir.join(socket_name(host, ssh_options))),
            None => Multiplexing::Off("outside a clone run".into()),
        }
    }

    /// The ssh arguments the choice adds for an ssh in `role`.
    pub fn args(&self, role: Role) -> Vec<String> {
        let Multiplexing::Shared(socket) = self else {
            return Vec::new();
        };
        let mut args = vec![
            "-o".into(),
            match role {
                Role::Master => "ControlMaster=auto".into(),
                Role::Client => "ControlMaster=no".into(),
            },
            "-o".into(),
            format!("ControlPath={}", socket.display()),
        ];
        if role == Role::Master {
            args.extend(["-o".into(), format!("ControlPersist={PERSIST}")]);
        }
        args
    }

    /// What `--dry-run` says of it.
    pub fn describe(&self) -> String {
        match self {
            Multiplexing::Shared(socket) => format!(
                "one multiplexed connection per run (ControlMaster, socket {})",
                socket.display()
            ),
            Multiplexing::SshOptions => "as ssh_options choose (ControlMaster/ControlPath)".into(),
            Multiplexing::Off(reason) => format!("one connection per ssh ({reason})"),
        }
    }
}

/// What a clone run with `ssh_options` does, for `--dry-run` (which runs no clone).
pub fn describe_for_run(ssh_options: &[String]) -> String {
    match Multiplexing::decide("", ssh_options, None) {
        Multiplexing::SshOptions => Multiplexing::SshOptions.describe(),
        _ => format!(
            "one multiplexed connection per run (ControlMaster=auto, ControlPersist={PERSIST} s; socket in the clone's directory of the state directory, or a private temporary directory when that path is too long), closed when the run ends"
        ),
    }
}

/// Whether `dir` can hold the control socket: short enough for `sun_path` with ssh's name and
/// temporary suffix, and nothing ssh's option parser or `%` expansion would change.
pub fn fits(dir: &Path) -> bool {
    let Some(text) = dir.to_str() else {
        return false;
    };
    text.len() + 1 + NAME_LEN + SSH_TEMP_SUFFIX <= SUN_PATH_MAX
        && text.starts_with('/')
        && !text
            .chars()
            .any(|c| c.is_whitespace() || matches!(c, '"' | '\'' | '%' | '\\'))
}

/// The run's control directory, if one is shared.
pub(super) fn control_dir() -> Option<PathBuf> {
    CONTROL_DIR.lock().ok().and_then(|d| d.clone())
}

/// The connection a run shares; closed and forgotten when dropped.
#[derive(Debug)]
pub struct SharedConnection {
    /// A client with the run's options: `ssh -O exit` must name the same destination.
    barman: Barman,
    /// The control directory.
    dir: PathBuf,
    /// A directory made for the socket (removed at the end), not the clone's own.
    made: bool,
}

impl SharedConnection {
    /// Shares one connection for the run whose clone directory is `clone_dir`, unless
    /// `barman`'s `ssh_options` decide themselves; `None` when nothing is shared (said at
    /// DEBUG).
    pub fn start(barman: &Barman, clone_dir: &Path) -> Option<SharedConnection> {
        if Multiplexing::decide(&barman.host, &barman.ssh_options, None) == Multiplexing::SshOptions
        {
            return None;
        }
        let (dir, made) = if fits(clone_dir) {
            (clone_dir.to_path_buf(), false)
        } else {
            match private_temp_dir() {
                Some(dir) => (dir, true),
                None => {
                    crate::debug!("no directory short enough for an ssh control socket: one connection per ssh");
                    return None;
                }
            }
        };
        if let Ok(mut shared) = CONTROL_DIR.lock() {
            *shared = Some(dir.clone());
        }
        // A killed run's master may still answer there (it is shared), or be dead: then its
        // socket goes, or only a `ControlMaster=auto` ssh would clear it.
        if let Multiplexing::Shared(socket) = barman.multiplexing() {
            master_answers(&socket);
        }
        crate::debug!(
            "ssh connections to \"{}\" share one master (socket in {})",
            barman.host,
            dir.display()
        );
        Some(SharedConnection {
            barman: barman.clone(),
            dir,
            made,
        })
    }
}

impl Drop for SharedConnection {
    fn drop(&mut self) {
        if let Multiplexing::Shared(socket) = self.barman.multiplexing() {
            // The master answers before it tears down, and removes its socket as it exits:
            // wait (briefly) for that, so that nothing of the run is left when pgreplica exits.
            let asked = match terminate(&socket) {
                // No master was started, or none answers any more: nothing to close (a dead
                // socket is removed below).
                Err(e)
                    if matches!(
                        e.kind(),
                        std::io::ErrorKind::NotFound | std::io::ErrorKind::ConnectionRefused
                    ) =>
                {
                    false
                }
                Ok(()) => {
                    crate::debug!("the shared ssh connection's master was asked to exit");
                    true
                }
                Err(e) => {
                    crate::debug!("the ssh master did not take the request to exit ({e}): asking with ssh -O exit");
                    self.exit_by_ssh()
                }
            };
            if asked {
                let gone = crate::retry::poll_blocking(
                    &TEARDOWN,
                    |_: &()| true,
                    || if socket.exists() { Err(()) } else { Ok(()) },
                );
                if gone.is_err() {
                    crate::debug!("the ssh master still holds {} after 2 s", socket.display());
                }
            }
            master_answers(&socket);
        }
        if let Ok(mut shared) = CONTROL_DIR.lock() {
            *shared = None;
        }
        if self.made {
            let _ = std::fs::remove_dir_all(&self.dir);
        }
    }
}

impl SharedConnection {
    /// `ssh <options> -O exit -- <host>`: the same options (the socket's name hashes them).
    /// It only talks to the local socket, and returns at once, master or not. Whether the
    /// master said yes.
    fn exit_by_ssh(&self) -> bool {
        let mut argv = self.barman.ssh_argv();
        let tail = argv.split_off(argv.len().saturating_sub(2));
        argv.extend(["-O".to_string(), "exit".to_string()]);
        argv.extend(tail);
        let closed = Command::new(&argv[0])
            .args(&argv[1..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        crate::debug!("closed the shared ssh connection: {closed:?}");
        closed.is_ok_and(|status| status.success())
    }
}

impl Barman {
    /// Opens the run's shared connection when no master answers on its socket (a dead socket is
    /// removed first): an ssh pgreplica awaits (`ssh … true`) becomes the master. The copy's
    /// own ssh — rsync's, the tails', the decryptions' — only use a master and never start
    /// one, so a resume, whose file list is stored and whose first ssh is one of them, calls
    /// this before it copies; otherwise each stream would connect on its own. A host that
    /// cannot be reached fails here, in ssh's words, as the step's failure. Nothing to do when
    /// connections are not shared or a master answers.
    pub async fn open_shared_connection(&self) -> crate::error::Result<()> {
        let Multiplexing::Shared(socket) = self.multiplexing() else {
            return Ok(());
        };
        if self.transport != super::Transport::Ssh || master_answers(&socket) {
            return Ok(());
        }
        self.run(&["true"]).await.map(|_| ())
    }
}

/// OpenSSH's multiplexing protocol (its PROTOCOL.mux): the hello both ends send first, the
/// request to terminate the master, and the master's yes.
const MUX_MSG_HELLO: u32 = 0x0000_0001;
const MUX_PROTOCOL_VERSION: u32 = 4;
const MUX_C_TERMINATE: u32 = 0x1000_0005;
const MUX_S_OK: u32 = 0x8000_0001;

/// Asks the master on `socket` to exit, as `ssh -O exit` does but without starting ssh:
/// hello, then MUX_C_TERMINATE; Ok once the master said yes.
fn terminate(socket: &Path) -> std::io::Result<()> {
    use std::io::{ErrorKind, Read, Write};
    let stream = std::os::unix::net::UnixStream::connect(socket)?;
    stream.set_read_timeout(Some(std::time::Duration::from_secs(2)))?;
    stream.set_write_timeout(Some(std::time::Duration::from_secs(2)))?;
    let packet = |words: &[u32]| {
        let body: Vec<u8> = words.iter().flat_map(|w| w.to_be_bytes()).collect();
        let mut framed = u32::try_from(body.len())
            .unwrap_or(0)
            .to_be_bytes()
            .to_vec();
        framed.extend(body);
        framed
    };
    let read_packet = || -> std::io::Result<Vec<u8>> {
        let mut reader = &stream;
        let mut len = [0; 4];
        reader.read_exact(&mut len)?;
        let len = u32::from_be_bytes(len) as usize;
        if len > 1 << 16 {
            return Err(std::io::Error::new(
                ErrorKind::InvalidData,
                "oversized packet",
            ));
        }
        let mut body = vec![0; len];
        reader.read_exact(&mut body)?;
        Ok(body)
    };
    let word = |body: &[u8], at: usize| {
        body.get(at..at + 4)
            .map(|b| u32::from_be_bytes([b[0], b[1], b[2], b[3]]))
    };
    let hello = read_packet()?;
    if word(&hello, 0) != Some(MUX_MSG_HELLO) {
        return Err(std::io::Error::new(
            ErrorKind::InvalidData,
            "no hello from the master",
        ));
    }
    let request_id = std::process::id();
    let mut writer = &stream;
    writer.write_all(&packet(&[MUX_MSG_HELLO, MUX_PROTOCOL_VERSION]))?;
    writer.write_all(&packet(&[MUX_C_TERMINATE, request_id]))?;
    match read_packet() {
        Ok(reply) if word(&reply, 0) == Some(MUX_S_OK) && word(&reply, 4) == Some(request_id) => {
            Ok(())
        }
        // The master may exit before its answer leaves (ssh -O exit takes that as a yes).
        Err(e) if e.kind() == ErrorKind::UnexpectedEof => Ok(()),
        Ok(_) => Err(std::io::Error::new(
            ErrorKind::PermissionDenied,
            "the master refused",
        )),
        Err(e) => Err(e),
    }
}

/// Whether a master answers on `socket`; a socket none answers (one a SIGKILL left behind) is
/// removed, so that the next `ControlMaster=auto` ssh can bind it.
fn master_answers(socket: &Path) -> bool {
    match std::os::unix::net::UnixStream::connect(socket) {
        Ok(_) => true,
        Err(e) => {
            if e.kind() == std::io::ErrorKind::ConnectionRefused {
                crate::debug!("removing the dead ssh control socket {}", socket.display());
                let _ = std::fs::remove_file(socket);
            }
            false
        }
    }
}

/// The socket's name for `host` and `ssh_options`: `ssh-` and the FNV-1a hash of them, 8 hex
/// digits.
fn socket_name(host: &str, ssh_options: &[String]) -> String {
    let mut hash: u32 = 0x811c_9dc5;
    for word in std::iter::once(host).chain(ssh_options.iter().map(String::as_str)) {
        for byte in word.bytes().chain([0]) {
            hash = (hash ^ u32::from(byte)).wrapping_mul(0x0100_0193);
        }
    }
    format!("ssh-{hash:08x}")
}

/// A new 0700 directory in the temporary directory (`$TMPDIR`, else /tmp) that fits a socket.
fn private_temp_dir() -> Option<PathBuf> {
    use std::os::unix::fs::DirBuilderExt;
    let base = std::env::temp_dir();
    for attempt in 0..8u32 {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map(|d| d.subsec_nanos())
            .unwrap_or(0);
        let dir = base.join(format!(
            "pgreplica-ssh-{}-{:x}",
            std::process::id(),
            nanos ^ attempt
        ));
        if !fits(&dir) {
            return None;
        }
        if std::fs::DirBuilder::new().mode(0o700).create(&dir).is_ok() {
            return Some(dir);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::{Read, Write};
    use std::os::unix::net::UnixListener;

    /// A master on a socket in a fresh directory that sends its hello, reads the client's
    /// packets (returned by the thread) and answers the second with `answer` (none: it hangs up).
    fn fake_master(answer: Option<[u32; 2]>) -> (PathBuf, std::thread::JoinHandle<Vec<Vec<u32>>>) {
        let dir = std::env::temp_dir().join(format!(
            "pgreplica-mux-{}-{}",
            std::process::id(),
            answer.map_or(0, |a| a[0])
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("mkdir");
        let socket = dir.join("s");
        let listener = UnixListener::bind(&socket).expect("bind");
        let thread = std::thread::spawn(move || {
            let (mut conn, _) = listener.accept().expect("accept");
            let send = |conn: &mut std::os::unix::net::UnixStream, words: &[u32]| {
                let mut packet = ((words.len() * 4) as u32).to_be_bytes().to_vec();
                packet.extend(words.iter().flat_map(|w| w.to_be_bytes()));
                conn.write_all(&packet).expect("write");
            };
            send(&mut conn, &[MUX_MSG_HELLO, MUX_PROTOCOL_VERSION]);
            let mut packets = Vec::new();
            for _ in 0..2 {
                let mut len = [0; 4];
                conn.read_exact(&mut len).expect("length");
                let mut body = vec![0; u32::from_be_bytes(len) as usize];
                conn.read_exact(&mut body).expect("body");
                packets.push(
                    body.chunks(4)
                        .map(|c| u32::from_be_bytes([c[0], c[1], c[2], c[3]]))
                        .collect(),
                );
            }
            if let Some(answer) = answer {
                send(&mut conn, &answer);
            }
            packets
        });
        (socket, thread)
    }

    /// The request `ssh -O exit` sends, as PROTOCOL.mux frames it: the client's hello
    /// (version 4), then MUX_C_TERMINATE with a request id the master's yes repeats. A master
    /// that hangs up before answering has taken it too, as ssh -O exit reads it; a refusal is
    /// not a yes.
    #[test]
    fn the_master_is_asked_to_exit_as_ssh_o_exit_asks() {
        let id = std::process::id();
        for (answer, taken) in [
            (Some([MUX_S_OK, id]), true),
            (None, true),
            (Some([0x8000_0002, id]), false),
        ] {
            let (socket, master) = fake_master(answer);
            assert_eq!(terminate(&socket).is_ok(), taken, "{answer:?}");
            let packets = master.join().expect("master");
            assert_eq!(
                packets,
                vec![vec![MUX_MSG_HELLO, 4], vec![MUX_C_TERMINATE, id]]
            );
            assert!(terminate(&socket.with_file_name("none")).is_err());
            std::fs::remove_dir_all(socket.parent().unwrap()).expect("rm");
        }
    }

    #[test]
    fn the_operator_s_choice_wins_and_the_socket_must_fit() {
        let own = |o: &[&str]| o.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        let dir = Path::new("/var/lib/pgreplica/clones/abc");
        assert_eq!(
            Multiplexing::decide("h", &own(&["-o", "ControlMaster=no"]), Some(dir)),
            Multiplexing::SshOptions
        );
        assert_eq!(
            Multiplexing::decide("h", &own(&["-oControlPath=/x/%C"]), Some(dir)),
            Multiplexing::SshOptions
        );
        let shared = Multiplexing::decide("b@h", &own(&["-p", "22"]), Some(dir));
        let name = socket_name("b@h", &own(&["-p", "22"]));
        assert_eq!(name.len(), NAME_LEN);
        assert_ne!(name, socket_name("b@h", &own(&["-p", "2222"])));
        assert_ne!(name, socket_name("b@h2", &own(&["-p", "22"])));
        let path = format!("ControlPath=/var/lib/pgreplica/clones/abc/{name}");
        assert_eq!(
            shared.args(Role::Master),
            own(&[
                "-o",
                "ControlMaster=auto",
                "-o",
                &path,
                "-o",
                "ControlPersist=60"
            ])
        );
        assert_eq!(
            shared.args(Role::Client),
            own(&["-o", "ControlMaster=no", "-o", &path])
        );
        assert!(Multiplexing::decide("h", &[], None)
            .args(Role::Master)
            .is_empty());
        assert!(fits(dir));
        // 77 bytes of directory + "/" + 12 + 17 = 107: the longest that fits.
        assert!(fits(Path::new(&format!("/{}", "a".repeat(76)))));
        assert!(!fits(Path::new(&format!("/{}", "a".repeat(77)))));
        assert!(!fits(Path::new("/a b")) && !fits(Path::new("/100%")) && !fits(Path::new("rel")));
    }
}
