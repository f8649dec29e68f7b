//! A TCP relay on 127.0.0.1 that forwards to a lab server (sshd, PostgreSQL) and can fail the
//! way networks and hosts fail: go silent ([`Relay::go_silent`]: connections stay open, nothing
//! is delivered — a router dropping packets), refuse ([`Relay::refuse`]: the port is closed, the
//! kernel refuses — a host that is down), or refuse from the n-th connection on
//! ([`Relay::refuse_after`]: a host that goes down at a precise moment of a clone), and recover
//! ([`Relay::forward`]).
//!
//! It must not reach anything but 127.0.0.1. Every thread ends when the relay is dropped.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::LabError;

/// How often the accept loop looks at its state.
const TICK: Duration = Duration::from_millis(10);

/// What the relay does with traffic.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum RelayMode {
    /// Forwards both ways.
    Forward,
    /// Accepts connections and holds every byte: nothing arrives either way.
    Silent,
    /// The port is closed: connections are refused.
    Refuse,
}

/// State shared with the relay's threads.
struct Shared {
    mode: Mutex<RelayMode>,
    changed: Condvar,
    /// Connections accepted so far.
    accepted: AtomicU64,
    /// Close the port once this many connections were accepted (0: never).
    refuse_after: AtomicU64,
    stopping: AtomicBool,
    /// Both ends of every connection, to cut them when the relay stops.
    streams: Mutex<Vec<TcpStream>>,
}

impl Shared {
    fn mode(&self) -> RelayMode {
        *self.mode.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Blocks while the relay is silent; false when it stops meanwhile.
    fn wait_until_flowing(&self) -> bool {
        let mut mode = self.mode.lock().unwrap_or_else(|e| e.into_inner());
        while *mode == RelayMode::Silent && !self.stopping.load(Ordering::Relaxed) {
            mode = self
                .changed
                .wait_timeout(mode, TICK * 10)
                .unwrap_or_else(|e| e.into_inner())
                .0;
        }
        !self.stopping.load(Ordering::Relaxed)
    }
}

/// A relay from a port of its own on 127.0.0.1 to `127.0.0.1:<target>`.
pub struct Relay {
    port: u16,
    target: u16,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Relay {
    /// Starts a relay to `127.0.0.1:target` on a free port, forwarding.
    pub fn start(target: u16) -> Result<Relay, LabError> {
        let listener = TcpListener::bind(("127.0.0.1", 0))
            .map_err(|e| LabError::io("relay", "bind 127.0.0.1:0", e))?;
        let port = listener
            .local_addr()
            .map_err(|e| LabError::io("relay", "local address", e))?
            .port();
        let shared = Arc::new(Shared {
            mode: Mutex::new(RelayMode::Forward),
            changed: Condvar::new(),
            accepted: AtomicU64::new(0),
            refuse_after: AtomicU64::new(0),
            stopping: AtomicBool::new(false),
            streams: Mutex::new(Vec::new()),
        });
        let mut relay = Relay {
            port,
            target,
            shared,
            acceptor: None,
        };
        relay.acceptor = Some(relay.spawn_acceptor(listener)?);
        Ok(relay)
    }

    /// The relay's port on 127.0.0.1: point the client there.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// The connections accepted so far.
    pub fn connections(&self) -> u64 {
        self.shared.accepted.load(Ordering::Relaxed)
    }

    /// The current mode.
    pub fn mode(&self) -> RelayMode {
        self.shared.mode()
    }

    /// Holds every byte of every connection, open and new: the network went silent.
    pub fn go_silent(&self) {
        self.set_mode(RelayMode::Silent);
    }

    /// Closes the port (connections are refused) and cuts the open connections: the host
    /// behind it went down.
    pub fn refuse(&self) {
        self.set_mode(RelayMode::Refuse);
        self.cut_connections();
    }

    /// Forwards again (reopening the port after [`Relay::refuse`]); held bytes flow on.
    pub fn forward(&self) {
        self.shared.refuse_after.store(0, Ordering::Relaxed);
        self.set_mode(RelayMode::Forward);
    }

    /// Forwards `n` more connections, then refuses (as [`Relay::refuse`], without cutting the
    /// connections already open): the host goes down just when the client connects for the
    /// (n+1)-th time from now.
    pub fn refuse_after(&self, n: u64) {
        let limit = self.connections() + n;
        self.shared.refuse_after.store(limit, Ordering::Relaxed);
    }

    fn set_mode(&self, mode: RelayMode) {
        *self.shared.mode.lock().unwrap_or_else(|e| e.into_inner()) = mode;
        self.shared.changed.notify_all();
    }

    fn cut_connections(&self) {
        let mut streams = self
            .shared
            .streams
            .lock()
            .unwrap_or_else(|e| e.into_inner());
        for stream in streams.drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    /// The accept loop: binds and closes the port as the mode says, and starts a pair of
    /// pumps per connection.
    fn spawn_acceptor(&self, listener: TcpListener) -> Result<JoinHandle<()>, LabError> {
        listener
            .set_nonblocking(true)
            .map_err(|e| LabError::io("relay", "set_nonblocking", e))?;
        let shared = Arc::clone(&self.shared);
        let (port, target) = (self.port, self.target);
        std::thread::Builder::new()
            .name(format!("relay-{port}"))
            .spawn(move || {
                let mut listener = Some(listener);
                while !shared.stopping.load(Ordering::Relaxed) {
                    let limit = shared.refuse_after.load(Ordering::Relaxed);
                    if limit > 0 && shared.accepted.load(Ordering::Relaxed) >= limit {
                        *shared.mode.lock().unwrap_or_else(|e| e.into_inner()) = RelayMode::Refuse;
                        shared.refuse_after.store(0, Ordering::Relaxed);
                    }
                    match (shared.mode(), listener.is_some()) {
                        (RelayMode::Refuse, true) => listener = None,
                        (RelayMode::Forward | RelayMode::Silent, false) => {
                            // SO_REUSEADDR (std sets it) lets the same port be bound again.
                            listener = TcpListener::bind(("127.0.0.1", port))
                                .and_then(|l| l.set_nonblocking(true).map(|()| l))
                                .ok();
                        }
                        _ => {}
                    }
                    let accepted = listener.as_ref().map(TcpListener::accept);
                    match accepted {
                        Some(Ok((client, _))) => {
                            shared.accepted.fetch_add(1, Ordering::Relaxed);
                            start_pumps(&shared, client, target);
                        }
                        _ => std::thread::sleep(TICK),
                    }
                }
            })
            .map_err(|e| LabError::io("relay", "spawn the accept thread", e))
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.shared.stopping.store(true, Ordering::Relaxed);
        self.shared.changed.notify_all();
        self.cut_connections();
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// Connects `client` to the target (once the relay is not silent) and copies both ways on two
/// threads, each holding its bytes while the relay is silent.
fn start_pumps(shared: &Arc<Shared>, client: TcpStream, target: u16) {
    let shared = Arc::clone(shared);
    let _ = std::thread::Builder::new()
        .name("relay-connection".into())
        .spawn(move || {
            let _ = client.set_nonblocking(false);
            if !shared.wait_until_flowing() {
                return;
            }
            let address = SocketAddr::from(([127, 0, 0, 1], target));
            let Ok(server) = TcpStream::connect_timeout(&address, Duration::from_secs(5)) else {
                let _ = client.shutdown(Shutdown::Both);
                return;
            };
            let (Ok(client_back), Ok(server_back)) = (client.try_clone(), server.try_clone())
            else {
                return;
            };
            {
                let mut streams = shared.streams.lock().unwrap_or_else(|e| e.into_inner());
                streams.extend(
                    [client.try_clone(), server.try_clone()]
                        .into_iter()
                        .flatten(),
                );
            }
            let back = {
                let shared = Arc::clone(&shared);
                std::thread::Builder::new()
                    .name("relay-pump".into())
                    .spawn(move || pump(&shared, server_back, client_back))
            };
            pump(&shared, client, server);
            if let Ok(back) = back {
                let _ = back.join();
            }
        });
}

/// Copies `from` to `to` until either closes, holding each chunk while the relay is silent.
fn pump(shared: &Shared, mut from: TcpStream, mut to: TcpStream) {
    let mut buffer = [0u8; 64 * 1024];
    loop {
        let n = match from.read(&mut buffer) {
            Ok(0) | Err(_) => break,
            Ok(n) => n,
        };
        if !shared.wait_until_flowing() || to.write_all(&buffer[..n]).is_err() {
            break;
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    let _ = from.shutdown(Shutdown::Read);
}

#[cfg(test)]
mod tests {
    use super::*;

    /// An echo server on 127.0.0.1 for the relay to reach.
    fn echo_server() -> u16 {
        let listener = TcpListener::bind(("127.0.0.1", 0)).unwrap();
        let port = listener.local_addr().unwrap().port();
        std::thread::spawn(move || {
            for stream in listener.incoming().flatten() {
                std::thread::spawn(move || {
                    let mut stream = stream;
                    let mut buffer = [0u8; 1024];
                    while let Ok(n) = stream.read(&mut buffer) {
                        if n == 0 || stream.write_all(&buffer[..n]).is_err() {
                            break;
                        }
                    }
                });
            }
        });
        port
    }

    fn round_trip(stream: &mut TcpStream, text: &[u8]) -> std::io::Result<Vec<u8>> {
        stream.write_all(text)?;
        let mut answer = vec![0u8; text.len()];
        stream.read_exact(&mut answer)?;
        Ok(answer)
    }

    #[test]
    fn forwards_goes_silent_resumes_refuses_and_reopens() {
        let relay = Relay::start(echo_server()).unwrap();
        let mut client = TcpStream::connect(("127.0.0.1", relay.port())).unwrap();
        client
            .set_read_timeout(Some(Duration::from_millis(300)))
            .unwrap();
        assert_eq!(round_trip(&mut client, b"one").unwrap(), b"one");

        relay.go_silent();
        assert_eq!(relay.mode(), RelayMode::Silent);
        let held = round_trip(&mut client, b"two").unwrap_err();
        assert!(
            matches!(
                held.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ),
            "{held:?}"
        );
        relay.forward();
        client
            .set_read_timeout(Some(Duration::from_secs(5)))
            .unwrap();
        let mut late = [0u8; 3];
        client.read_exact(&mut late).unwrap();
        assert_eq!(&late, b"two", "held bytes flow on");

        relay.refuse();
        let refused = wait_until(|| TcpStream::connect(("127.0.0.1", relay.port())).is_err());
        assert!(refused, "the port stays open");
        relay.forward();
        assert!(wait_until(|| TcpStream::connect((
            "127.0.0.1",
            relay.port()
        ))
        .is_ok()));
    }

    #[test]
    fn refuses_from_the_chosen_connection_on() {
        let relay = Relay::start(echo_server()).unwrap();
        relay.refuse_after(2);
        for _ in 0..2 {
            let mut client = TcpStream::connect(("127.0.0.1", relay.port())).unwrap();
            assert_eq!(round_trip(&mut client, b"x").unwrap(), b"x");
        }
        assert!(wait_until(|| TcpStream::connect((
            "127.0.0.1",
            relay.port()
        ))
        .is_err()));
        assert_eq!(relay.mode(), RelayMode::Refuse);
        assert_eq!(relay.connections(), 2);
    }

    /// Polls `condition` for up to 5 s.
    fn wait_until(mut condition: impl FnMut() -> bool) -> bool {
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while std::time::Instant::now() < deadline {
            if condition() {
                return true;
            }
            std::thread::sleep(TICK);
        }
        false
    }
}
