//! The source (and upstream) node over tokio-postgres: connecting the way libpq would, and the
//! few queries a clone needs.
//!
//! tokio-postgres reads neither libpq's environment, its password file nor its TLS settings, so
//! this module does:
//! * `keywords` — every libpq connection keyword, honoured or refused (the one table).
//! * `target` — [`Target`]: `-h -p -U -d`, then `PG*` environment variables, then defaults.
//! * `tls` — `sslmode` and the other TLS settings with libpq's semantics, over rustls.
//! * `password` — [`password_for`]: `-d`, `PGPASSWORD`, or the password file (libpq's rules).
//! * `failure` — the server's own words (SQLSTATE, DETAIL, HINT), a transport failure's cause,
//!   and which failures a retry may fix.
//!
//! Passwords never leave this module but through [`password_for`]: [`Target::conninfo`] has
//! none. It must not decide anything about the clone; it answers questions.

mod failure;
pub mod keywords;
mod password;
mod target;
mod tls;

pub use password::{password_for, take_password_from_dbname};
pub(crate) use target::user_entry;
pub use target::{is_tls_keyword, with_absolute_paths, Target, DEFAULT_CONNECT_TIMEOUT};
pub use tls::SslMode;

use crate::error::Result;
use tokio_postgres::tls::MakeTlsConnect;
use tokio_postgres::{Client, Socket};

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
    /// Connects as libpq would (its sslmode attempts included), mapping failures to exit
    /// code 6 with the server's words and the target named (never its password); a failure a
    /// retry may fix is marked retryable.
    pub async fn connect(target: &Target, passfile: Option<&str>) -> Result<SourceNode> {
        let tls = tls::Tls::for_target(target)?;
        let mut config = target.session_config();
        if let Some(password) = password_for(target, passfile) {
            config.password(password);
        }
        let attempts = tls.mode.attempts();
        let mut failed = None;
        for (n, mode) in attempts.iter().enumerate() {
            config.ssl_mode(*mode);
            match open(&config, tls.connector.clone()).await {
                Ok((client, connection)) => {
                    return Ok(SourceNode {
                        client,
                        target: target.clone(),
                        connection,
                    })
                }
                Err(e) if n + 1 < attempts.len() => {
                    // libpq's allow and prefer: the other way may be the one the server takes.
                    crate::debug!(
                        "connection to {} with sslmode {:?} failed ({e}); trying again {}",
                        target.describe(),
                        tls.mode,
                        if n == 0 && tls.mode == SslMode::Allow {
                            "with TLS"
                        } else {
                            "without TLS"
                        }
                    );
                    failed = Some(e);
                }
                Err(e) => {
                    failed = Some(e);
                    break;
                }
            }
        }
        let error = failed.expect("at least one attempt was made");
        Err(failure::connect_error(target, &tls, error))
    }

    /// The target this node was reached at.
    pub fn target(&self) -> &Target {
        &self.target
    }

    fn query_error(&self, what: &str, e: tokio_postgres::Error) -> crate::error::Error {
        failure::query_error(&self.target, &format!("read {what}"), e)
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
                failure::query_error(
                    &self.target,
                    &format!("create replication slot \"{name}\""),
                    e,
                )
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

/// Connects with `config` through `tls` and drives the connection on a task of its own.
async fn open<T>(
    config: &tokio_postgres::Config,
    tls: T,
) -> std::result::Result<(Client, tokio::task::JoinHandle<()>), tokio_postgres::Error>
where
    T: MakeTlsConnect<Socket>,
    T::Stream: Send + 'static,
{
    let (client, connection) = config.connect(tls).await?;
    let connection = tokio::spawn(async move {
        if let Err(e) = connection.await {
            crate::debug!("source connection closed: {e}");
        }
    });
    Ok((client, connection))
}
