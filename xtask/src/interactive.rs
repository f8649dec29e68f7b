//! `cargo xtask lab`: stands a lab up, prints how to reach it (ports, ssh options, a ready
//! repmgr.conf, the clone command) and keeps it until Ctrl-C. It must not change the lab.

use lab::{shell_quote, Lab, LabOptions, PG_BIN};

use crate::{stage, Failure, StandbyConf};

/// Runs `cargo xtask lab`.
pub(crate) fn run(options: LabOptions) -> Result<(), Failure> {
    stage("prerequisites", crate::prerequisites)?;
    let lab = stage("start lab", || Lab::start(options))?;
    let conf = StandbyConf::write(&lab)?;
    println!("{}", describe(&lab, &conf));
    println!(
        "Press Ctrl-C to stop the lab and remove it ({}=1 keeps its directory).",
        lab::KEEP_ENV
    );
    lab::wait_for_interrupt();
    eprintln!("stopping the lab…");
    Ok(())
}

/// What a user needs to reach the lab, with commands to paste.
fn describe(lab: &Lab, conf: &StandbyConf) -> String {
    let q = |s: &str| shell_quote(s);
    let config = lab.barman_config().display().to_string();
    let barman = lab.barman_flavor().program().display().to_string();
    let port = lab.primary_port();
    let clone_start: Vec<String> = lab
        .clone_start_args(&conf.path)
        .iter()
        .map(|word| q(word))
        .collect();
    format!(
        "\nLab ready in {took:.1?}: {dir}\n\
         \n  primary        {conninfo}  (data {data})\
         \n  psql           runuser -u postgres -- {PG_BIN}/psql -h 127.0.0.1 -p {port} -U postgres\
         \n  barman         {flavour:?} {barman}, server {server}, config {config}\
         \n  barman here    runuser -u barman -- {barman} -c {config} list-backups {server}\
         \n  barman by ssh  runuser -u postgres -- ssh {ssh} {host} barman -c {config} list-backups {server}\
         \n  ssh_options    {ssh}\
         \n  barman → postgres@ (--remote-ssh-command)\
         \n                 {remote}\
         \n  logs           {logs}\
         \n\nrepmgr.conf for a standby (node 2, port {standby_port}) at {conf_path}:\n\n{text}\
         \nClone and start it:\
         \n  runuser -u postgres -- env PGREPLICA_STATE_DIR={state} pgreplica {clone_start}\
         \n  runuser -u postgres -- {PG_BIN}/pg_ctl -w -D {standby_dir} -o {opt} -l {logs}/standby-{standby_port}.log start\n",
        took = lab.startup_time(),
        dir = lab.dir().display(),
        conninfo = lab.primary_conninfo(),
        data = lab.primary_data_dir().display(),
        flavour = lab.barman_flavor(),
        server = lab.barman_server(),
        ssh = lab.ssh_options(),
        host = lab.barman_ssh_host(),
        remote = lab.barman_remote_ssh_command(),
        logs = lab.log_dir().display(),
        conf_path = conf.path.display(),
        text = conf.text,
        clone_start = clone_start.join(" "),
        standby_dir = conf.data_dir.display(),
        standby_port = conf.port,
        state = lab.state_dir().display(),
        opt = q(&format!("-p {}", conf.port)),
    )
}
