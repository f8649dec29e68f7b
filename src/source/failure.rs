//! tokio-postgres's errors in the operator's terms: the server's own message, SQLSTATE, DETAIL
//! and HINT when the server said no; the cause of a transport failure (refused, timed out,
//! reset) as the error's cause chain; TLS failures named by the setting that fixes them.
//!
//! It also decides what a retry may fix: a server starting up or shutting down, too many
//! connections, a network that failed — yes; a refused login, a missing role or database, a
//! certificate — no, they are final.

use tokio_postgres::error::{DbError, SqlState};

use super::target::Target;
use super::tls::{handshake_error, Tls};
use crate::error::{Error, ErrorKind};
use crate::tls_errors::rustls_error;

/// The error for a failed connection to `target`.
pub(super) fn connect_error(target: &Target, tls: &Tls, error: tokio_postgres::Error) -> Error {
    if let Some(db) = error.as_db_error() {
        return server_refused(target, db);
    }
    if let Some(tls_error) = rustls_error(&error) {
        return handshake_error(target, tls, tls_error);
    }
    let text = error.to_string();
    let cause = std::error::Error::source(&error).map(ToString::to_string);
    let context = format!(
        "connection to the source node failed ({})",
        target.describe()
    );
    match text.as_str() {
        "error performing TLS handshake" if cause.as_deref() == Some("server does not support TLS") => {
            Error::new(ErrorKind::DbConnection, format!("{context}: the server does not offer TLS"))
                .detail(format!("the server answered that it does not support TLS (ssl = off), and {} needs it", target.sslmode_shown()))
                .hint("set ssl = on on the source node, or use sslmode=prefer or sslmode=disable in -d")
        }
        "authentication error" | "invalid configuration"
            if cause.as_deref() == Some("password missing") =>
        {
            Error::new(
                ErrorKind::DbConnection,
                format!("{context}: the server asks for a password and none was found"),
            )
            .detail("looked in -d, PGPASSWORD and the password file (passfile in -d, passfile in repmgr.conf, PGPASSFILE, ~/.pgpass)")
            .hint("give the password with PGPASSWORD, or in a password file readable only by its owner (chmod 0600)")
        }
        "authentication error" => Error::new(
            ErrorKind::DbConnection,
            format!("{context}: {}", cause.as_deref().unwrap_or("authentication error")),
        )
        .detail("the server asked for a password and none was found")
        .hint("give the password with PGPASSWORD, or in a password file (passfile in repmgr.conf, PGPASSFILE, ~/.pgpass) readable only by its owner (chmod 0600)"),
        "invalid configuration" | "invalid connection string" => Error::new(
            ErrorKind::Config,
            format!("{context}: {}", cause.as_deref().unwrap_or(&text)),
        )
        .hint("check the connection settings given with -h/-p/-U/-d"),
        "timeout waiting for server" => Error::new(ErrorKind::DbConnection, context)
            .caused_by(error)
            .detail(format!("no answer within connect_timeout ({})", target.setting("connect_timeout").map_or("10 s, pgreplica's default".to_string(), |s| format!("{s} s"))))
            .hint("check that the source node is up and that nothing between drops packets; connect_timeout in -d sets the wait")
            .retryable(),
        _ => Error::new(ErrorKind::DbConnection, context)
            .caused_by(error)
            .detail(target.describe())
            .hint("check -h/-p of the source node and that it is running and accepts connections (listen_addresses, firewall)")
            .retryable(),
    }
}

/// The error for a query that failed on `target` while reading `what`: the server's words when
/// it answered, else a lost connection (retryable).
pub(super) fn query_error(target: &Target, what: &str, error: tokio_postgres::Error) -> Error {
    match error.as_db_error() {
        Some(db) => Error::new(
            ErrorKind::DbQuery,
            format!("cannot {what} on the source node: {}", db.message()),
        )
        .detail(server_detail(target, db))
        .hint(db.hint().map_or_else(
            || "the DETAIL shows what the server said".to_string(),
            |hint| format!("the server says: {hint}"),
        )),
        None => Error::new(
            ErrorKind::DbConnection,
            format!("lost the connection to the source node while trying to {what}"),
        )
        .caused_by(error)
        .detail(target.describe())
        .hint(format!(
            "check that the source node is running; \"{}\" continues the clone",
            crate::paste::resume()
        ))
        .retryable(),
    }
}

/// The server refused the connection: its own words, final unless a retry can fix it.
fn server_refused(target: &Target, db: &DbError) -> Error {
    let code = db.code();
    let message = db.message();
    let (hint, retryable) = if *code == SqlState::INVALID_PASSWORD {
        (
            "check the password for this user: PGPASSWORD, or the password file (passfile in repmgr.conf, PGPASSFILE, ~/.pgpass)".to_string(),
            false,
        )
    } else if *code == SqlState::INVALID_AUTHORIZATION_SPECIFICATION {
        (authorization_hint(target, message), false)
    } else if *code == SqlState::INVALID_CATALOG_NAME {
        (
            format!("database \"{}\" does not exist on the source node: give one that does with -d (e.g. -d postgres)", target.dbname),
            false,
        )
    } else if *code == SqlState::CANNOT_CONNECT_NOW
        || *code == SqlState::TOO_MANY_CONNECTIONS
        || code.code().starts_with("57P")
        || code.code().starts_with("08")
    {
        (
            format!("the source node is not accepting connections right now; pgreplica retries, and \"{}\" continues the clone", crate::paste::resume()),
            true,
        )
    } else {
        (
            "the DETAIL shows what the server said; fix that on the source node or in -h/-p/-U/-d"
                .to_string(),
            false,
        )
    };
    let error = Error::new(
        ErrorKind::DbConnection,
        format!(
            "connection to the source node refused: {}: {message}",
            db.severity()
        ),
    )
    .detail(server_detail(target, db))
    .hint(hint);
    if retryable {
        error.retryable()
    } else {
        error
    }
}

/// A DETAIL with the SQLSTATE, the server's own DETAIL and HINT, and where we connected.
fn server_detail(target: &Target, db: &DbError) -> String {
    let mut detail = format!("SQLSTATE {}", db.code().code());
    if let Some(server) = db.detail() {
        detail.push_str(&format!("; server DETAIL: {server}"));
    }
    if let Some(hint) = db.hint() {
        detail.push_str(&format!("; server HINT: {hint}"));
    }
    detail.push_str(&format!("; {}", target.describe()));
    detail
}

/// What to do about an authorization refusal (28000): pg_hba.conf, TLS, a missing role, a
/// client certificate.
fn authorization_hint(target: &Target, message: &str) -> String {
    let hba = message.contains("pg_hba.conf");
    if hba && message.ends_with("no encryption") {
        format!(
            "the source node accepts this user only over TLS: set sslmode=require (or verify-full with sslrootcert) in -d or PGSSLMODE instead of {}",
            target.sslmode_shown()
        )
    } else if hba && message.ends_with("SSL encryption") {
        "the source node refuses this user over TLS: set sslmode=disable (or allow) in -d"
            .to_string()
    } else if hba {
        format!(
            "allow it with a pg_hba.conf line for host {}, user \"{}\", database \"{}\" on the source node, or connect as another user (-U)",
            target.hostaddr.as_deref().unwrap_or(&target.host),
            target.user,
            target.dbname
        )
    } else if message.starts_with("role") && message.ends_with("does not exist") {
        format!(
            "role \"{}\" does not exist on the source node: connect as a role that does with -U (repmgr's user, or a superuser)",
            target.user
        )
    } else if message.contains("certificate") {
        "the server refused the client certificate: sslcert and sslkey in -d must name a certificate whose common name is the user, signed by a CA the server trusts".to_string()
    } else {
        "the DETAIL shows what the server said; check pg_hba.conf on the source node and -U"
            .to_string()
    }
}
