//! Where a setting comes from when the command line does not give it: a
//! `PYMATRIS_*` environment variable, then the config file, then the
//! built-in default. A flag always wins.
//!
//! Both take the flags' own names and values, checked by the same clap
//! definitions as the flags, so they can never drift apart: the variable of
//! `--max-parallel` is `PYMATRIS_MAX_PARALLEL`, and its config line is
//! `max-parallel = 8`. The config file is TOML, at
//! `$XDG_CONFIG_HOME/pymatris/config.toml` (`~/.config/pymatris/config.toml`
//! when that is unset), or the file of `--config`; `--no-config` reads none.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::{Context as _, bail};
use clap::parser::ValueSource;
use clap::{ArgAction, ArgMatches, Command, CommandFactory as _, FromArgMatches as _};

use crate::args::Args;

/// The prefix of the environment variables that stand for flags.
const ENV_PREFIX: &str = "PYMATRIS_";

/// Options that make no sense in a config file: the file's own, and those
/// that print something and end.
const NOT_IN_FILE: &[&str] = &["config", "no-config", "help", "version"];

/// The command line's definition, with an environment variable for every
/// long option: what parsing, `--help`, completions and the man page use.
pub fn command() -> Command {
    Args::command().mut_args(|arg| {
        let Some(long) = arg.get_long() else {
            return arg;
        };
        if matches!(long, "help" | "version") {
            return arg;
        }
        let var = format!("{ENV_PREFIX}{}", long.to_uppercase().replace('-', "_"));
        let flag = matches!(arg.get_action(), ArgAction::SetTrue);
        // A variable's value may be a password (PYMATRIS_PROXY): --help
        // names the variable only.
        let arg = arg.env(var).hide_env_values(true);
        if flag {
            // `PYMATRIS_QUIET=1` (or yes, on, true; 0, no, off, false) as
            // in most programs, not only `true`/`false`.
            arg.value_parser(clap::builder::BoolishValueParser::new())
        } else {
            arg
        }
    })
}

/// Parses the command line, filling in what it leaves out from the
/// environment and the config file. `--help`, `--version` and a flag clap
/// rejects end the process, as in any clap program; a config file that
/// cannot be used is an error naming the file (and the key).
pub(crate) fn parse(argv: Vec<OsString>) -> anyhow::Result<Args> {
    let cmd = command();
    let first = cmd.clone().get_matches_from(argv.clone());
    if first.subcommand().is_some() {
        return Ok(from_matches(&first));
    }
    let Some(path) = config_path(&first) else {
        return Ok(from_matches(&first));
    };
    let text = match std::fs::read_to_string(&path) {
        Ok(text) => text,
        // The default file is optional; one named on purpose is not.
        Err(e)
            if e.kind() == std::io::ErrorKind::NotFound
                && first.get_one::<PathBuf>("config").is_none() =>
        {
            return Ok(from_matches(&first));
        }
        Err(e) => {
            return Err(e)
                .with_context(|| format!("config file {}: cannot read it", path.display()));
        }
    };
    let extra = file_args(&cmd, &first, &text, home().as_deref())
        .with_context(|| format!("config file {}", path.display()))?;
    let mut all = Vec::with_capacity(argv.len() + extra.len());
    all.extend(argv.first().cloned());
    all.extend(extra.into_iter().map(OsString::from));
    all.extend(argv.into_iter().skip(1));
    Ok(from_matches(&cmd.get_matches_from(all)))
}

fn from_matches(matches: &ArgMatches) -> Args {
    let mut args = Args::from_arg_matches(matches).unwrap_or_else(|e| e.exit());
    // Set by a flag, a variable or the config file (whose values come in
    // as flags): what was not, the batch grows.
    let given = |id| {
        matches
            .value_source(id)
            .is_some_and(|s| s != clap::parser::ValueSource::DefaultValue)
    };
    args.given = crate::args::Given {
        max_parallel: given("max_parallel"),
        max_splits: given("max_splits"),
    };
    args
}

/// The config file to read, if any.
fn config_path(matches: &ArgMatches) -> Option<PathBuf> {
    if matches.get_flag("no_config") {
        return None;
    }
    if let Some(path) = matches.get_one::<PathBuf>("config") {
        return Some(path.clone());
    }
    default_path(
        std::env::var_os("XDG_CONFIG_HOME").map(PathBuf::from),
        home(),
        std::env::var_os("APPDATA").map(PathBuf::from),
    )
}

/// `$XDG_CONFIG_HOME/pymatris/config.toml`, else `~/.config/...` (the XDG
/// rule: a relative `XDG_CONFIG_HOME` is ignored), else on Windows
/// `%APPDATA%\pymatris\config.toml`.
fn default_path(
    xdg: Option<PathBuf>,
    home: Option<PathBuf>,
    appdata: Option<PathBuf>,
) -> Option<PathBuf> {
    let base = xdg
        .filter(|p| p.is_absolute())
        .or_else(|| home.map(|h| h.join(".config")))
        .or(appdata)?;
    Some(base.join("pymatris").join("config.toml"))
}

fn home() -> Option<PathBuf> {
    std::env::var_os("HOME")
        .or_else(|| std::env::var_os("USERPROFILE"))
        .filter(|h| !h.is_empty())
        .map(PathBuf::from)
}

/// The flags the config file `text` stands for, leaving out every setting
/// the command line or the environment already gave (`first`). Each value
/// is checked on its own, so an error names its key.
fn file_args(
    cmd: &Command,
    first: &ArgMatches,
    text: &str,
    home: Option<&Path>,
) -> anyhow::Result<Vec<String>> {
    let table: toml::Table = text.parse().map_err(|e: toml::de::Error| {
        // toml's message already says where (line and column).
        anyhow::anyhow!("not valid TOML: {}", e.to_string().trim_end())
    })?;
    let mut out = Vec::new();
    for (key, value) in &table {
        let name = key.replace('_', "-");
        let Some(arg) = cmd
            .get_arguments()
            .find(|a| a.get_long() == Some(name.as_str()))
            .filter(|_| !NOT_IN_FILE.contains(&name.as_str()))
        else {
            bail!("unknown key `{key}` (keys are the long flags' names, e.g. max-parallel)");
        };
        let given = matches!(
            first.value_source(arg.get_id().as_str()),
            Some(ValueSource::CommandLine | ValueSource::EnvVariable)
        );
        if given {
            continue;
        }
        let flags = key_args(&name, arg.get_action(), value, home)
            .with_context(|| format!("key `{key}`"))?;
        // Checked alone, so that clap's complaint is about this key.
        let mut alone = vec!["pymatris".to_owned()];
        alone.extend(flags.iter().cloned());
        if let Err(e) = cmd.clone().try_get_matches_from(&alone) {
            let text = e.render().to_string();
            let first_line = text.lines().next().unwrap_or_default();
            bail!(
                "key `{key}`: {}",
                first_line.strip_prefix("error: ").unwrap_or(first_line)
            );
        }
        out.extend(flags);
    }
    Ok(out)
}

/// The flags for one key of the config file.
fn key_args(
    name: &str,
    action: &ArgAction,
    value: &toml::Value,
    home: Option<&Path>,
) -> anyhow::Result<Vec<String>> {
    use toml::Value as V;
    match (action, value) {
        (ArgAction::SetTrue, V::Boolean(true)) => Ok(vec![format!("--{name}")]),
        (ArgAction::SetTrue, V::Boolean(false)) => Ok(Vec::new()),
        (ArgAction::SetTrue, _) => bail!("expects true or false"),
        (ArgAction::Append, V::Array(items)) => items
            .iter()
            .map(|v| Ok(format!("--{name}={}", scalar(v, home)?)))
            .collect(),
        (_, V::Array(_)) => bail!("takes one value, not a list"),
        (_, v) => Ok(vec![format!("--{name}={}", scalar(v, home)?)]),
    }
}

/// A value as the flag would take it. A leading `~/` is the home
/// directory, as in a shell: a config file has no shell to expand it.
fn scalar(value: &toml::Value, home: Option<&Path>) -> anyhow::Result<String> {
    use toml::Value as V;
    Ok(match value {
        V::String(s) => match (s.strip_prefix("~/"), home) {
            (Some(rest), Some(home)) => home.join(rest).to_string_lossy().into_owned(),
            _ => s.clone(),
        },
        V::Integer(n) => n.to_string(),
        V::Float(f) => f.to_string(),
        V::Boolean(b) => b.to_string(),
        V::Datetime(_) | V::Array(_) | V::Table(_) => {
            bail!("expects a string or a number")
        }
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn matches(argv: &[&str]) -> ArgMatches {
        command().try_get_matches_from(argv).unwrap()
    }

    fn args(text: &str, argv: &[&str]) -> anyhow::Result<Vec<String>> {
        file_args(&command(), &matches(argv), text, Some(Path::new("/h")))
    }

    #[test]
    fn keys_become_flags_unless_given() {
        let text = "max-parallel = 8\nmax_splits = 3\nquiet = true\ninsecure = false\n\
                    header = ['A: 1', 'B: 2']\ndir = '~/dl'\ntimeouts = 2.5\n";
        let got = args(text, &["pymatris"]).unwrap();
        assert_eq!(
            got,
            [
                "--dir=/h/dl",
                "--header=A: 1",
                "--header=B: 2",
                "--max-parallel=8",
                "--max-splits=3",
                "--quiet",
                "--timeouts=2.5"
            ]
        );
        let got = args(text, &["pymatris", "--max-parallel", "2", "-H", "C: 3"]).unwrap();
        assert!(
            !got.iter().any(|a| a.starts_with("--max-parallel")),
            "{got:?}"
        );
        assert!(!got.iter().any(|a| a.starts_with("--header")), "{got:?}");
    }

    #[test]
    fn bad_files_name_the_key() {
        let err = |text: &str| format!("{:#}", args(text, &["pymatris"]).unwrap_err());
        assert!(err("max-parallel = 0").contains("key `max-parallel`"));
        assert!(
            err("max-parallel = 0").contains("1..=1024"),
            "{}",
            err("max-parallel = 0")
        );
        assert!(err("quiet = 'yes'").contains("key `quiet`: expects true or false"));
        assert!(err("max-paralel = 3").contains("unknown key `max-paralel`"));
        assert!(err("config = 'x'").contains("unknown key `config`"));
        assert!(err("dir = ['a', 'b']").contains("key `dir`: takes one value"));
        assert!(err("dir = \n").contains("not valid TOML"));
        assert!(err("dir = \n").contains("line 1"), "{}", err("dir = \n"));
    }

    #[test]
    fn the_default_path_follows_xdg() {
        let p = |x: Option<&str>, h: Option<&str>, a: Option<&str>| {
            default_path(
                x.map(PathBuf::from),
                h.map(PathBuf::from),
                a.map(PathBuf::from),
            )
        };
        let file = |s: &str| Some(Path::new(s).join("pymatris").join("config.toml"));
        assert_eq!(p(Some("/x"), Some("/h"), None), file("/x"));
        assert_eq!(p(Some("rel"), Some("/h"), None), file("/h/.config"));
        assert_eq!(p(None, None, Some("/a")), file("/a"));
        assert_eq!(p(None, None, None), None);
    }

    #[test]
    fn every_long_option_has_a_variable() {
        let cmd = command();
        let quiet = cmd.get_arguments().find(|a| a.get_id() == "quiet").unwrap();
        assert_eq!(
            quiet.get_env(),
            Some(std::ffi::OsStr::new("PYMATRIS_QUIET"))
        );
        let mp = cmd
            .get_arguments()
            .find(|a| a.get_id() == "max_parallel")
            .unwrap();
        assert_eq!(
            mp.get_env(),
            Some(std::ffi::OsStr::new("PYMATRIS_MAX_PARALLEL"))
        );
    }
}
