//! What the machine's test files share: a well-formed request of each mode.

use states::*;

/// A well-formed request of `mode`: the backup server its plan asks is named.
pub fn request(mode: Mode) -> CloneRequest {
    CloneRequest {
        mode,
        data_dir: "/srv/standby".into(),
        backup_selector: "latest".into(),
        jobs: 2,
        barman: (mode == Mode::BarmanRsync).then(|| BarmanTarget {
            host: "barman@backup".into(),
            server: "pg".into(),
            config: None,
        }),
        backup_api: (mode == Mode::BackupApi).then(|| ApiTarget {
            host: "backup:7480".into(),
            node_name: "pg".into(),
            remote_ssh_command: "ssh postgres@standby".into(),
            backup_id: "latest".into(),
            ..ApiTarget::default()
        }),
        ..CloneRequest::default()
    }
}
