//! `cargo xtask demo`: pgreplica end to end on a lab — install what the lab needs (as root, on a
//! fresh machine), build (release), clone a standby from the lab's Barman as postgres, start it,
//! watch it stream and receive a row, show `clone status`. Every failure names its stage. It must not work around a failing pgreplica: the
//! demo shows what pgreplica does, nothing more.

use std::time::Duration;

use lab::{Lab, LabOptions};

use crate::{build_pgreplica_release, run_visible, stage, Failure, StandbyConf};

const CLONE_TIMEOUT: Duration = Duration::from_secs(900);

/// Runs `cargo xtask demo`.
pub(crate) fn run(options: LabOptions) -> Result<(), Failure> {
    stage("prerequisites", crate::prerequisites)?;
    let built = build_pgreplica_release()?;

    let lab = stage("start lab", || Lab::start(options))?;
    eprintln!(
        "   lab in {} (primary on port {})",
        lab.dir().display(),
        lab.primary_port()
    );
    let pgreplica = lab.install_binary(&built);
    let conf = StandbyConf::write(&lab)?;
    let (data_dir, standby_port) = (&conf.data_dir, conf.port);
    eprintln!("{}", conf.text);

    let cloned = stage("pgreplica clone start", || {
        run_visible(
            lab.command_as_postgres(&pgreplica)
                .args(lab.clone_start_args(&conf.path)),
            CLONE_TIMEOUT,
        )
    });
    if let Err(failure) = cloned {
        // What pgreplica recorded is the best diagnosis of a failed clone.
        let _ = show_status(&lab, &pgreplica);
        return Err(failure);
    }

    let standby = stage("start standby", || {
        lab.start_standby(data_dir, standby_port)
    })?;
    stage("wait for streaming", || {
        standby.wait_streaming(Duration::from_secs(60))
    })?;
    let id = stage("insert a row on the primary", || {
        lab.psql(
            lab.primary_port(),
            "CREATE TABLE IF NOT EXISTS pgreplica_demo (id serial PRIMARY KEY, note text, \
             at timestamptz DEFAULT now()); \
             INSERT INTO pgreplica_demo (note) VALUES ('hello from the primary') RETURNING id",
        )
    })?;
    let id = id.lines().next().unwrap_or_default().to_string();
    let row = stage("see it on the standby", || {
        let query = format!("SELECT note || ' @ ' || at FROM pgreplica_demo WHERE id = {id}");
        let mut row = String::new();
        lab::wait_for("row on the standby", Duration::from_secs(30), || {
            // The table itself arrives by replication too: until then there is no row to read.
            if standby.psql("SELECT to_regclass('pgreplica_demo') IS NULL")? == "t" {
                return Ok(false);
            }
            row = standby.psql(&query)?;
            Ok(!row.is_empty())
        })
        .map(|()| row)
    })?;
    println!("standby on port {standby_port} has row {id}: {row}");
    stage("pgreplica clone status", || show_status(&lab, &pgreplica))?;
    stage("stop standby", || standby.stop())?;
    println!("demo: OK");
    Ok(())
}

fn show_status(lab: &Lab, pgreplica: &std::path::Path) -> Result<(), String> {
    run_visible(
        lab.command_as_postgres(pgreplica).args(["clone", "status"]),
        Duration::from_secs(60),
    )
}
