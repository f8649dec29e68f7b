//! The command handlers behind `pgreplica clone start|resume|status`.

use crate::cli::{Cli, Command};
use crate::error::{Error, ErrorKind};
use clap::Parser;
use std::process::ExitCode;

/// Parses the command line, runs the command and maps its outcome to an exit code.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    crate::log::set_level(cli.log_level);
    match run(cli) {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            crate::log::error(&err);
            ExitCode::from(err.exit_code())
        }
    }
}

fn run(cli: Cli) -> Result<(), Error> {
    match cli.command {
        Command::Generate { what } => crate::cli::generate(what, &mut std::io::stdout().lock())
            .map_err(|e| Error::new(ErrorKind::System, format!("cannot write output: {e}"))),
        Command::Clone(_) => Err(Error::not_implemented("clone")),
    }
}
