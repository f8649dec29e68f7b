//! The options of xtask's commands, parsed by hand (xtask takes no dependencies): [`Args`]
//! walks a command line option by option and reads their values, and [`LabArgs`] takes the lab
//! options that `lab`, `demo`, `bench` and `chaos` share (`--barman`, `--scale`). Each command
//! keeps its own options, defaults and message for an unknown option; the caller adds the usage
//! text to a refusal.

use std::str::FromStr;

use lab::{BarmanFlavor, LabOptions};

/// A command line's words, read option after option.
pub(crate) struct Args<'a> {
    words: std::slice::Iter<'a, String>,
}

impl<'a> Args<'a> {
    /// The words after the command's name.
    pub(crate) fn new(words: &'a [String]) -> Args<'a> {
        Args {
            words: words.iter(),
        }
    }

    /// The next option; None once every word is read.
    pub(crate) fn next_option(&mut self) -> Option<&'a str> {
        self.words.next().map(String::as_str)
    }

    /// The value of `option`: the next word.
    pub(crate) fn value(&mut self, option: &str) -> Result<&'a str, String> {
        self.next_option()
            .ok_or_else(|| format!("{option} needs a value"))
    }

    /// The value of `option` as a number (of whatever width the option takes).
    pub(crate) fn number<T: FromStr>(&mut self, option: &str) -> Result<T, String> {
        let value = self.value(option)?;
        value
            .parse()
            .map_err(|_| format!("{option} {value}: expected a number"))
    }

    /// The value of `option` as an integer of 1 or more.
    pub(crate) fn positive(&mut self, option: &str) -> Result<u32, String> {
        let value = self.value(option)?;
        value
            .parse()
            .ok()
            .filter(|&n| n > 0)
            .ok_or_else(|| format!("{option} {value}: expected a positive integer"))
    }
}

/// The lab options a command line gave: which Barman, and the pgbench scale when one was given
/// (a command's default scale is its own).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub(crate) struct LabArgs {
    /// `--barman debian|pypi`.
    pub(crate) barman: BarmanFlavor,
    /// `--scale N`.
    pub(crate) scale: Option<u32>,
}

impl LabArgs {
    /// Takes `option` (and its value from `args`) when it is `--barman` or `--scale`. Ok(false)
    /// when it is another option, for the command to handle.
    pub(crate) fn take(&mut self, option: &str, args: &mut Args) -> Result<bool, String> {
        match option {
            "--barman" => {
                let value = args.value(option)?;
                self.barman = BarmanFlavor::parse(value)
                    .ok_or_else(|| format!("--barman {value}: expected debian or pypi"))?;
            }
            "--scale" => self.scale = Some(args.positive(option)?),
            _ => return Ok(false),
        }
        Ok(true)
    }

    /// The lab to start: the flavour given, the scale given or else `default_scale`, no
    /// tablespace.
    pub(crate) fn options(self, default_scale: u32) -> LabOptions {
        LabOptions {
            barman: self.barman,
            tablespace: false,
            scale: self.scale.unwrap_or(default_scale),
            ..LabOptions::default()
        }
    }
}

/// A command line from literals, for the tests of every command's options.
#[cfg(test)]
pub(crate) fn words(args: &[&str]) -> Vec<String> {
    args.iter().map(|s| s.to_string()).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Reads every option of `line` into lab options, refusing any other.
    fn lab_args(line: &[&str]) -> Result<LabArgs, String> {
        let line = words(line);
        let mut args = Args::new(&line);
        let mut lab = LabArgs::default();
        while let Some(option) = args.next_option() {
            if !lab.take(option, &mut args)? {
                return Err(format!("not a lab option: {option}"));
            }
        }
        Ok(lab)
    }

    #[test]
    fn lab_options_are_read_and_the_scale_defaults_per_command() {
        let given = lab_args(&["--scale", "7", "--barman", "PyPI"]).unwrap();
        assert_eq!(
            given,
            LabArgs {
                barman: BarmanFlavor::PyPI,
                scale: Some(7)
            }
        );
        assert_eq!(
            given.options(20),
            LabOptions {
                barman: BarmanFlavor::PyPI,
                tablespace: false,
                scale: 7,
                ..LabOptions::default()
            }
        );
        let none = lab_args(&[]).unwrap();
        assert_eq!(none.options(20).scale, 20);
        assert_eq!(none.options(1), LabOptions::default());
        assert_eq!(
            lab_args(&["--tablespace"]).unwrap_err(),
            "not a lab option: --tablespace"
        );
    }

    #[test]
    fn a_refused_value_names_the_option_the_value_and_what_was_expected() {
        for (line, message) in [
            (&["--barman"][..], "--barman needs a value"),
            (
                &["--barman", "conda"],
                "--barman conda: expected debian or pypi",
            ),
            (&["--scale"], "--scale needs a value"),
            (&["--scale", "0"], "--scale 0: expected a positive integer"),
            (
                &["--scale", "-3"],
                "--scale -3: expected a positive integer",
            ),
            (&["--scale", "x"], "--scale x: expected a positive integer"),
        ] {
            assert_eq!(lab_args(line).unwrap_err(), message, "{line:?}");
        }
    }

    #[test]
    fn numbers_take_the_width_asked_for() {
        let line = words(&["--seed", "18446744073709551615", "--round", "4294967296"]);
        let mut args = Args::new(&line);
        assert_eq!(args.next_option(), Some("--seed"));
        assert_eq!(args.number::<u64>("--seed"), Ok(u64::MAX));
        assert_eq!(args.next_option(), Some("--round"));
        assert_eq!(
            args.number::<u32>("--round"),
            Err("--round 4294967296: expected a number".to_string())
        );
        assert_eq!(args.next_option(), None);
        assert_eq!(
            args.number::<u64>("--seed"),
            Err("--seed needs a value".to_string())
        );
    }
}
