//! The names repmgr knows but pgreplica does not read, and the names repmgr itself warns about.
//!
//! Taken from repmgr's settings table (`configdata.c`, repmgr 4.x–5.5) and its list of
//! deprecated names (`configfile.c`). A key listed here is accepted without a word, because a
//! production repmgr.conf is full of them; only names nobody knows earn a warning. This module
//! also names the keys pgreplica reads, for the test that keeps docs/configuration.md complete;
//! their parsing lives, typed, in `mod.rs`.

/// Every key pgreplica reads (repmgr's clone keys and pgreplica's own), in documentation order.
#[cfg(test)]
pub(crate) const PGREPLICA: &[&str] = &[
    "node_id",
    "node_name",
    "conninfo",
    "data_directory",
    "pg_bindir",
    "use_replication_slots",
    "replication_user",
    "restore_command",
    "archive_cleanup_command",
    "recovery_min_apply_delay",
    "passfile",
    "use_primary_conninfo_password",
    "pg_basebackup_options",
    "tablespace_mapping",
    "rsync_options",
    "ssh_options",
    "barman_host",
    "barman_server",
    "barman_config",
    "pgreplica_staging_dir",
    "pg_backupapi_host",
    "pg_backupapi_node_name",
    "pg_backupapi_remote_ssh_command",
    "pg_backupapi_backup_id",
    "pg_backupapi_ca_file",
    "pg_backupapi_cert_file",
    "pg_backupapi_key_file",
    "pg_backupapi_stall_timeout",
    "pg_backupapi_start_timeout",
    "pg_backupapi_poll_interval",
    "log_level",
    "log_file",
    "event_notification_command",
    "event_notifications",
];

/// repmgr's settings that have nothing to do with cloning (repmgrd, failover, switchover, event
/// notification, service commands, monitoring, logging, witness, BDR …).
pub(crate) const REPMGR_ONLY: &[&str] = &[
    // node and server
    "config_directory",
    "repmgr_bindir",
    "replication_type",
    "location",
    "priority",
    // logging (log_level and log_file are read)
    "log_facility",
    "log_status_interval",
    // external command options pgreplica does not pass on: pg_ctl is never run
    "pg_ctl_options",
    // standby promote / follow / switchover / node rejoin
    "promote_check_timeout",
    "promote_check_interval",
    "primary_follow_timeout",
    "standby_follow_timeout",
    "standby_follow_restart",
    "shutdown_check_timeout",
    "standby_reconnect_timeout",
    "wal_receive_check_timeout",
    "node_rejoin_timeout",
    // node check thresholds
    "archive_ready_warning",
    "archive_ready_critical",
    "replication_lag_warning",
    "replication_lag_critical",
    // witness
    "witness_sync_interval",
    // repmgrd and failover
    "failover",
    "promote_command",
    "follow_command",
    "monitor_interval_secs",
    "reconnect_attempts",
    "reconnect_interval",
    "monitoring_history",
    "degraded_monitoring_timeout",
    "async_query_timeout",
    "primary_notification_timeout",
    "repmgrd_standby_startup_timeout",
    "repmgrd_pid_file",
    "standby_disconnect_on_failover",
    "sibling_nodes_disconnect_timeout",
    "connection_check_type",
    "connection_check_query",
    "primary_visibility_consensus",
    "always_promote",
    "failover_validation_command",
    "election_rerun_interval",
    "child_nodes_check_interval",
    "child_nodes_disconnect_min_count",
    "child_nodes_connected_min_count",
    "child_nodes_connected_include_witness",
    "child_nodes_disconnect_timeout",
    "child_nodes_disconnect_command",
    "reconnect_loop_sync",
    "promote_delay",
    "failover_delay",
    // service commands
    "service_start_command",
    "service_stop_command",
    "service_restart_command",
    "service_reload_command",
    "service_promote_command",
    "repmgrd_service_start_command",
    "repmgrd_service_stop_command",
    // BDR (repmgr 4)
    "bdr_local_monitoring_only",
    "bdr_recovery_timeout",
];

/// repmgr's own advice for names it has renamed or removed; repmgr warns about these too.
pub(crate) fn deprecated(key: &str) -> Option<&'static str> {
    Some(match key {
        "cluster" => "parameter \"cluster\" is deprecated and will be ignored",
        "node" => "parameter \"node\" has been renamed to \"node_id\"",
        "upstream_node" => {
            "parameter \"upstream_node\" has been removed; use \"--upstream-node-id\" when cloning a standby"
        }
        "loglevel" => "parameter \"loglevel\" has been renamed to \"log_level\"",
        "logfacility" => "parameter \"logfacility\" has been renamed to \"log_facility\"",
        "logfile" => "parameter \"logfile\" has been renamed to \"log_file\"",
        // repmgr checks the misspelt name; accept both spellings.
        "master_response_timeout" | "master_reponse_timeout" => {
            "parameter \"master_response_timeout\" has been removed; use \"async_query_timeout\" instead"
        }
        "retry_promote_interval_secs" => {
            "parameter \"retry_promote_interval_secs\" has been removed; use \"primary_notification_timeout\" instead"
        }
        _ => return None,
    })
}
