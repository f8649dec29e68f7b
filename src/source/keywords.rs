//! libpq's connection keywords, and what pgreplica does with each: every keyword PostgreSQL 15
//! to 18 knows is either honoured — on pgreplica's own connection and in the standby's
//! `primary_conninfo` — or refused with the reason; none is dropped. An unknown keyword is
//! refused as libpq refuses it.
//!
//! This table is the one place that says so; docs/configuration.md ("Connection keywords")
//! is checked against it by a test.

/// How pgreplica treats one keyword.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Use {
    /// Where to connect and as whom (`host`, `hostaddr`, `port`, `user`, `dbname`).
    Address,
    /// The password: used for this connection only, never stored, written, or shown.
    Password,
    /// Honoured on pgreplica's connection and carried into `primary_conninfo`.
    Carried,
    /// Honoured on pgreplica's connection only, for the reason given: repmgr does not write it
    /// into `primary_conninfo` either.
    Own(&'static str),
    /// Refused: pgreplica cannot honour it, for the reason given.
    Refused(&'static str),
}

/// One keyword: its name, the environment variable libpq reads for it, and its [`Use`].
#[derive(Clone, Copy, Debug)]
pub struct Keyword {
    /// The conninfo keyword.
    pub name: &'static str,
    /// libpq's environment variable for it, if any.
    pub env: Option<&'static str>,
    /// What pgreplica does with it.
    pub usage: Use,
}

const fn kw(name: &'static str, env: Option<&'static str>, usage: Use) -> Keyword {
    Keyword { name, env, usage }
}

const GSSAPI: &str = "pgreplica's connection cannot use GSSAPI or Kerberos";
const PG18: &str = "PostgreSQL 18's libpq keyword is not supported by pgreplica's connection";

/// Every keyword libpq knows (PostgreSQL 15 to 18), in libpq's order.
pub const KEYWORDS: &[Keyword] = &[
    kw(
        "service",
        Some("PGSERVICE"),
        Use::Refused("pgreplica does not read pg_service.conf: give the service's keywords in -d"),
    ),
    kw("servicefile", None, Use::Refused(PG18)),
    kw("user", Some("PGUSER"), Use::Address),
    kw("password", Some("PGPASSWORD"), Use::Password),
    kw("passfile", Some("PGPASSFILE"), Use::Carried),
    kw("channel_binding", Some("PGCHANNELBINDING"), Use::Carried),
    kw("connect_timeout", Some("PGCONNECT_TIMEOUT"), Use::Carried),
    kw("dbname", Some("PGDATABASE"), Use::Address),
    kw("host", Some("PGHOST"), Use::Address),
    kw("hostaddr", Some("PGHOSTADDR"), Use::Address),
    kw("port", Some("PGPORT"), Use::Address),
    kw(
        "client_encoding",
        Some("PGCLIENTENCODING"),
        Use::Own("a walreceiver sends no text; pgreplica's connection speaks UTF8 only"),
    ),
    kw("options", Some("PGOPTIONS"), Use::Carried),
    kw(
        "application_name",
        Some("PGAPPNAME"),
        Use::Own("the standby's application_name is node_name, as repmgr writes it"),
    ),
    kw(
        "fallback_application_name",
        None,
        Use::Own("the standby's application_name is node_name, as repmgr writes it"),
    ),
    kw("keepalives", None, Use::Carried),
    kw("keepalives_idle", None, Use::Carried),
    kw("keepalives_interval", None, Use::Carried),
    kw("keepalives_count", None, Use::Carried),
    kw("tcp_user_timeout", None, Use::Carried),
    kw(
        "replication",
        None,
        Use::Refused("a replication connection cannot run pgreplica's queries; the walreceiver sets it itself"),
    ),
    kw("sslmode", Some("PGSSLMODE"), Use::Carried),
    kw("sslnegotiation", Some("PGSSLNEGOTIATION"), Use::Carried),
    kw("sslcompression", Some("PGSSLCOMPRESSION"), Use::Carried),
    kw("sslcert", Some("PGSSLCERT"), Use::Carried),
    kw("sslkey", Some("PGSSLKEY"), Use::Carried),
    kw("sslcertmode", Some("PGSSLCERTMODE"), Use::Carried),
    kw(
        "sslpassword",
        None,
        Use::Refused("pgreplica cannot read an encrypted client key: decrypt it (openssl pkey -in KEY -out KEY.plain) and name that file in sslkey"),
    ),
    kw("sslrootcert", Some("PGSSLROOTCERT"), Use::Carried),
    kw("sslcrl", Some("PGSSLCRL"), Use::Carried),
    kw("sslcrldir", Some("PGSSLCRLDIR"), Use::Carried),
    kw("sslsni", Some("PGSSLSNI"), Use::Carried),
    kw("sslkeylogfile", None, Use::Refused(PG18)),
    kw(
        "requirepeer",
        Some("PGREQUIREPEER"),
        Use::Refused("pgreplica's connection cannot check the peer of a Unix socket"),
    ),
    kw(
        "require_auth",
        Some("PGREQUIREAUTH"),
        Use::Refused("pgreplica's connection cannot restrict the authentication methods"),
    ),
    kw(
        "ssl_min_protocol_version",
        Some("PGSSLMINPROTOCOLVERSION"),
        Use::Carried,
    ),
    kw(
        "ssl_max_protocol_version",
        Some("PGSSLMAXPROTOCOLVERSION"),
        Use::Carried,
    ),
    kw("min_protocol_version", None, Use::Refused(PG18)),
    kw("max_protocol_version", None, Use::Refused(PG18)),
    kw("gssencmode", Some("PGGSSENCMODE"), Use::Carried),
    kw("krbsrvname", Some("PGKRBSRVNAME"), Use::Refused(GSSAPI)),
    kw("gsslib", Some("PGGSSLIB"), Use::Refused(GSSAPI)),
    kw("gssdelegation", Some("PGGSSDELEGATION"), Use::Refused(GSSAPI)),
    kw("target_session_attrs", Some("PGTARGETSESSIONATTRS"), Use::Carried),
    kw("load_balance_hosts", Some("PGLOADBALANCEHOSTS"), Use::Carried),
    kw("scram_client_key", None, Use::Refused(PG18)),
    kw("scram_server_key", None, Use::Refused(PG18)),
    kw("oauth_issuer", None, Use::Refused(PG18)),
    kw("oauth_client_id", None, Use::Refused(PG18)),
    kw("oauth_client_secret", None, Use::Refused(PG18)),
    kw("oauth_scope", None, Use::Refused(PG18)),
];

/// The keyword named `name`, if libpq knows it.
pub fn keyword(name: &str) -> Option<&'static Keyword> {
    KEYWORDS.iter().find(|k| k.name == name)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_and_variables_are_unique() {
        let mut names = std::collections::HashSet::new();
        let mut vars = std::collections::HashSet::new();
        for k in KEYWORDS {
            assert!(names.insert(k.name), "{} twice", k.name);
            if let Some(env) = k.env {
                assert!(vars.insert(env), "{env} twice");
            }
        }
    }

    /// docs/configuration.md lists every keyword with what pgreplica does with it.
    #[test]
    fn every_keyword_is_documented() {
        let doc = include_str!("../../docs/configuration.md");
        let doc = &doc[doc.find("## The source node").expect("the section")..];
        for k in KEYWORDS {
            let verdict = match k.usage {
                Use::Address | Use::Password | Use::Carried | Use::Own(_) => "honoured",
                Use::Refused(_) => "refused",
            };
            let row = format!("| `{}` |", k.name);
            let line = doc
                .lines()
                .find(|l| l.starts_with(&row))
                .unwrap_or_else(|| panic!("docs/configuration.md has no row for {}", k.name));
            assert!(line.contains(verdict), "{}: {line}", k.name);
            if let Some(env) = k.env {
                assert!(line.contains(env), "{}: {line}", k.name);
            }
        }
    }
}
