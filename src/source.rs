//! The source (and upstream) node over tokio-postgres: connecting the way libpq would, and the
//! few queries a clone needs.
//!
//! tokio-postgres does not read libpq's environment or password file, so this module does: `-h
//! -p -U -d` first, then `PGHOST`, `PGPORT`, `PGUSER`, `PGDATABASE`, then libpq's defaults; the
//! password from `PGPASSWORD` or the password file (`passfile`, `PGPASSFILE`, `~/.pgpass`).
//! Passwords never leave this module: [`Target::conninfo`] has none.
//!
//! It must not decide anything about the clone; it answers questions.

use crate::error::{Error, ErrorKind, Result};
use states::SourceConn;
use std::time::Duration;
use tokio_postgres::config::Host;
use tokio_postgres::{Client, Config, NoTls};

/// How long a connection attempt may take before it counts as a failure.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

/// Where and as whom to connect, resolved from the command line and the environment.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Target {
    /// Host name, IP address, or Unix socket directory (starting with `/`).
    pub host: String,
    /// TCP port (or socket file suffix).
    pub port: u16,
    /// Database user.
    pub user: String,
    /// Database name.
    pub dbname: String,
}

impl Target {
    /// Resolves `-h -p -U -d` (where `-d` may itself be a conninfo) with libpq's environment
    /// variables and defaults.
    pub fn resolve(conn: &SourceConn) -> Result<Target> {
        let mut from_dbname = Config::new();
        let mut dbname = conn.dbname.clone();
        if let Some(text) = conn.dbname.as_deref().filter(|d| is_conninfo(d)) {
            from_dbname = text.parse::<Config>().map_err(|e| {
                Error::new(
                    ErrorKind::Config,
                    format!("invalid conninfo given with -d/--dbname: {e}"),
                )
                .hint("use key=value pairs, e.g. -d \"host=node1 dbname=repmgr\"")
            })?;
            dbname = from_dbname.get_dbname().map(str::to_string);
        }
        let env = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let host = conn
            .host
            .clone()
            .or_else(|| from_dbname.get_hosts().first().map(host_text))
            .or_else(|| env("PGHOST"))
            .unwrap_or_else(|| "/var/run/postgresql".to_string());
        let port = match conn
            .port
            .or_else(|| from_dbname.get_ports().first().copied())
        {
            Some(port) => port,
            None => match env("PGPORT") {
                Some(text) => text.parse().map_err(|_| {
                    Error::new(
                        ErrorKind::Config,
                        format!("PGPORT is not a port number: {text}"),
                    )
                })?,
                None => 5432,
            },
        };
        let user = conn
            .user
            .clone()
            .or_else(|| from_dbname.get_user().map(str::to_string))
            .or_else(|| env("PGUSER"))
            .unwrap_or_else(os_user_name);
        let dbname = dbname
            .or_else(|| env("PGDATABASE"))
            .unwrap_or_else(|| user.clone());
        Ok(Target {
            host,
            port,
            user,
            dbname,
        })
    }

    /// The conninfo of this target, without any password, suitable for primary_conninfo and
    /// for the store.
    pub fn conninfo(&self) -> String {
        let mut conninfo = crate::conninfo::Conninfo::new();
        conninfo.set("host", &self.host);
        conninfo.set("port", &self.port.to_string());
        conninfo.set("user", &self.user);
        conninfo.set("dbname", &self.dbname);
        conninfo.render()
    }

    /// `host:port`, for messages.
    pub fn describe(&self) -> String {
        format!(
            "host={} port={} user={} dbname={}",
            self.host, self.port, self.user, self.dbname
        )
    }
}

fn host_text(host: &Host) -> String {
    match host {
        Host::Tcp(name) => name.clone(),
        Host::Unix(path) => path.display().to_string(),
    }
}

fn is_conninfo(text: &str) -> bool {
    text.contains('=') || text.starts_with("postgres://") || text.starts_with("postgresql://")
}

fn os_user_name() -> String {
    // SAFETY: getpwuid returns a pointer into static storage or null; we copy it out at once.
    unsafe {
        let pw = libc::getpwuid(libc::geteuid());
        if pw.is_null() {
            return "postgres".to_string();
        }
        std::ffi::CStr::from_ptr((*pw).pw_name)
            .to_string_lossy()
            .into_owned()
    }
}

/// A password given on the command line inside `-d "… password=…"`: kept in this process's
/// memory only, never in the clone record (see [`take_password_from_dbname`]).
static COMMAND_LINE_PASSWORD: std::sync::OnceLock<String> = std::sync::OnceLock::new();

/// Removes `password=` from a `-d` conninfo so that the clone record never holds it; the
/// password is remembered for this run only. A resumed run needs `PGPASSWORD` or a password
/// file instead, which the returned flag lets the caller say.
pub fn take_password_from_dbname(dbname: Option<&str>) -> (Option<String>, bool) {
    let Some(text) = dbname.filter(|d| is_conninfo(d)) else {
        return (dbname.map(str::to_string), false);
    };
    let Ok(mut conninfo) = crate::conninfo::Conninfo::parse(text) else {
        // Not parseable here: Target::resolve reports it with a clear error.
        return (Some(text.to_string()), false);
    };
    match conninfo.remove("password") {
        Some(password) => {
            let _ = COMMAND_LINE_PASSWORD.set(password);
            (Some(conninfo.render()), true)
        }
        None => (Some(text.to_string()), false),
    }
}

/// Looks the password up in the password file, as libpq does (`host:port:db:user:password`,
/// `*` wildcards, `\:` and `\\` escapes; the file must not be group/world readable).
pub fn password_for(target: &Target, passfile: Option<&str>) -> Option<String> {
    if let Some(password) = COMMAND_LINE_PASSWORD.get() {
        return Some(password.clone());
    }
    if let Ok(password) = std::env::var("PGPASSWORD") {
        return Some(password);
    }
    let path = passfile
        .map(std::path::PathBuf::from)
        .or_else(|| std::env::var_os("PGPASSFILE").map(Into::into))
        .or_else(|| std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".pgpass")))?;
    let text = std::fs::read_to_string(path).ok()?;
    let host = if target.host.starts_with('/') {
        "localhost"
    } else {
        &target.host
    };
    let wanted = [host, &target.port.to_string(), &target.dbname, &target.user];
    text.lines()
        .filter(|line| !line.starts_with('#'))
        .find_map(|line| {
            let fields = split_pgpass_line(line);
            (fields.len() == 5
                && fields
                    .iter()
                    .zip(wanted.iter())
                    .all(|(field, value)| field == "*" || field == value))
            .then(|| fields[4].clone())
        })
}

fn split_pgpass_line(line: &str) -> Vec<String> {
    let mut fields = vec![String::new()];
    let mut chars = line.chars();
    while let Some(c) = chars.next() {
        match c {
            '\\' => {
                if let Some(next) = chars.next() {
                    fields.last_mut().expect("never empty").push(next);
                }
            }
            ':' if fields.len() < 5 => fields.push(String::new()),
            _ => fields.last_mut().expect("never empty").push(c),
        }
    }
    fields
}

/// A connected source node.
pub struct SourceNode {
    client: Client,
    target: Target,
    connection: tokio::task::JoinHandle<()>,
}

impl Drop for SourceNode {
    fn drop(&mut self) {
        self.connection.abort();
    }
}

/// What the clone needs to know about the source node.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct NodeFacts {
    /// `server_version_num`.
    pub server_version_num: u32,
    /// `pg_control_system().system_identifier`.
    pub system_identifier: String,
    /// `sum(pg_database_size(…))`.
    pub installation_size: u64,
    /// `wal_level`.
    pub wal_level: String,
    /// `max_wal_senders`.
    pub max_wal_senders: i64,
    /// `hot_standby`.
    pub hot_standby: bool,
    /// Whether the node is in recovery (a standby used as source).
    pub in_recovery: bool,
}

/// An upstream node as recorded in `repmgr.nodes`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RepmgrNode {
    /// node_id.
    pub node_id: i32,
    /// conninfo (as stored by repmgr).
    pub conninfo: String,
}

/// State of a replication slot on the upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum SlotState {
    /// No such slot.
    Missing,
    /// It exists and nobody streams from it: reusable.
    Inactive,
    /// A walsender is using it: another standby owns it.
    Active,
}

impl SourceNode {
    /// Connects, mapping failures to exit code 6 with the target named (never its password).
    pub async fn connect(target: &Target, passfile: Option<&str>) -> Result<SourceNode> {
        let mut config = Config::new();
        if target.host.starts_with('/') {
            config.host_path(&target.host);
        } else {
            config.host(&target.host);
        }
        config
            .port(target.port)
            .user(&target.user)
            .dbname(&target.dbname)
            .application_name("pgreplica")
            .connect_timeout(CONNECT_TIMEOUT);
        if let Some(password) = password_for(target, passfile) {
            config.password(password);
        }
        let (client, connection) = config.connect(NoTls).await.map_err(|e| {
            Error::new(
                ErrorKind::DbConnection,
                format!("connection to database failed: {}", target.describe()),
            )
            .detail(e.to_string())
            .hint("check -h/-p/-U/-d, that the node is running, and pg_hba.conf")
            .retryable()
        })?;
        let connection = tokio::spawn(async move {
            if let Err(e) = connection.await {
                crate::debug!("source connection closed: {e}");
            }
        });
        Ok(SourceNode {
            client,
            target: target.clone(),
            connection,
        })
    }

    /// The target this node was reached at.
    pub fn target(&self) -> &Target {
        &self.target
    }

    fn query_error(&self, what: &str, e: tokio_postgres::Error) -> Error {
        Error::new(
            ErrorKind::DbQuery,
            format!(
                "cannot read {what} from the source node ({})",
                self.target.describe()
            ),
        )
        .detail(e.to_string())
    }

    /// Version, identity, size and replication settings.
    pub async fn facts(&self) -> Result<NodeFacts> {
        let row = self
            .client
            .query_one(
                "SELECT current_setting('server_version_num')::int,
                        (SELECT system_identifier::text FROM pg_control_system()),
                        (SELECT coalesce(sum(pg_database_size(oid)), 0)::bigint FROM pg_database),
                        current_setting('wal_level'),
                        current_setting('max_wal_senders')::bigint,
                        current_setting('hot_standby') = 'on',
                        pg_is_in_recovery()",
                &[],
            )
            .await
            .map_err(|e| self.query_error("server parameters", e))?;
        Ok(NodeFacts {
            server_version_num: u32::try_from(row.get::<_, i32>(0)).unwrap_or(0),
            system_identifier: row.get(1),
            installation_size: u64::try_from(row.get::<_, i64>(2)).unwrap_or(0),
            wal_level: row.get(3),
            max_wal_senders: row.get(4),
            hot_standby: row.get(5),
            in_recovery: row.get(6),
        })
    }

    /// How this node's server is recognised on its own host (see
    /// [`crate::running::refuse_source_dir`]): its port, its start time and the pid of the
    /// backend serving this connection. Readable by any user.
    pub async fn server(&self) -> Result<crate::running::SourceServer> {
        let row = self
            .client
            .query_one(
                "SELECT current_setting('port')::int,
                        floor(extract(epoch FROM pg_postmaster_start_time()))::bigint,
                        pg_backend_pid()",
                &[],
            )
            .await
            .map_err(|e| self.query_error("the server's port and start time", e))?;
        Ok(crate::running::SourceServer {
            port: u16::try_from(row.get::<_, i32>(0)).unwrap_or(0),
            started: row.get(1),
            backend_pid: row.get(2),
        })
    }

    /// The repmgr node record of `node_id`, or of the connected node when `None`; `Ok(None)`
    /// when repmgr's schema is not installed or has no such record.
    pub async fn repmgr_node(&self, node_id: Option<i32>) -> Result<Option<RepmgrNode>> {
        let has_schema: bool = self
            .client
            .query_one("SELECT to_regclass('repmgr.nodes') IS NOT NULL", &[])
            .await
            .map_err(|e| self.query_error("the repmgr schema", e))?
            .get(0);
        if !has_schema {
            return Ok(None);
        }
        let row = match node_id {
            Some(id) => self
                .client
                .query_opt(
                    "SELECT node_id, conninfo FROM repmgr.nodes WHERE node_id = $1",
                    &[&id],
                )
                .await
                .map_err(|e| self.query_error("repmgr.nodes", e))?,
            None => self
                .client
                .query_opt(
                    "SELECT node_id, conninfo FROM repmgr.nodes
                      WHERE node_id = repmgr.get_local_node_id()",
                    &[],
                )
                .await
                .map_err(|e| self.query_error("repmgr.nodes", e))?,
        };
        Ok(row.map(|r| RepmgrNode {
            node_id: r.get(0),
            conninfo: r.get(1),
        }))
    }

    /// Whether `pg_wal` on this node still holds WAL segment `segment`; `None` when the node
    /// does not let us look (pg_ls_waldir needs pg_monitor).
    pub async fn holds_wal_segment(&self, segment: &str) -> Option<bool> {
        self.client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM pg_ls_waldir() WHERE name = $1)",
                &[&segment],
            )
            .await
            .ok()
            .map(|row| row.get(0))
    }

    /// State of physical replication slot `name`.
    pub async fn slot_state(&self, name: &str) -> Result<SlotState> {
        let row = self
            .client
            .query_opt(
                "SELECT active FROM pg_replication_slots WHERE slot_name = $1",
                &[&name],
            )
            .await
            .map_err(|e| self.query_error("pg_replication_slots", e))?;
        Ok(match row {
            None => SlotState::Missing,
            Some(r) if r.get::<_, bool>(0) => SlotState::Active,
            Some(_) => SlotState::Inactive,
        })
    }

    /// Creates physical slot `name` reserving WAL now (idempotent with [`Self::slot_state`]).
    pub async fn create_slot(&self, name: &str) -> Result<()> {
        self.client
            .execute(
                "SELECT pg_create_physical_replication_slot($1, true)",
                &[&name],
            )
            .await
            .map_err(|e| {
                Error::new(
                    ErrorKind::DbQuery,
                    format!("cannot create replication slot \"{name}\" on the upstream node"),
                )
                .detail(e.to_string())
                .hint("check max_replication_slots on the upstream and the user's privileges")
            })?;
        Ok(())
    }

    /// Drops physical slot `name` if it exists and is inactive.
    pub async fn drop_slot(&self, name: &str) -> Result<()> {
        self.client
            .execute(
                "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots
                  WHERE slot_name = $1 AND NOT active",
                &[&name],
            )
            .await
            .map_err(|e| self.query_error("pg_replication_slots", e))?;
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pgpass_lines_split_with_escapes() {
        assert_eq!(
            split_pgpass_line(r"db\:host:5432:*:rep:pa\:ss\\word"),
            vec!["db:host", "5432", "*", "rep", r"pa:ss\word"]
        );
    }

    #[test]
    fn a_password_in_dbname_is_never_kept_in_the_request() {
        let (dbname, taken) =
            take_password_from_dbname(Some("host=node1 user=repmgr password=s3cr3t dbname=repmgr"));
        assert!(taken);
        let dbname = dbname.unwrap();
        assert!(!dbname.contains("s3cr3t"), "{dbname}");
        assert!(dbname.contains("dbname=repmgr"), "{dbname}");
        assert_eq!(
            take_password_from_dbname(Some("repmgr")),
            (Some("repmgr".into()), false)
        );
    }

    #[test]
    fn command_line_wins_over_dbname_conninfo() {
        let conn = SourceConn {
            host: Some("node1".into()),
            port: None,
            user: None,
            dbname: Some("host=other port=5499 user=repmgr dbname=repmgr".into()),
        };
        let target = Target::resolve(&conn).unwrap();
        assert_eq!(target.host, "node1");
        assert_eq!(target.port, 5499);
        assert_eq!(target.user, "repmgr");
        assert_eq!(target.dbname, "repmgr");
        assert!(!target.conninfo().contains("password"));
    }
}
