//! pymatris's defaults as its `--help` states them, so the tools it is
//! compared with get the same settings when the defaults change.

use std::path::Path;
use std::process::Command;

use anyhow::Context as _;

/// pymatris's defaults, read from its `--help` so the peers stay matched
/// when they change.
#[derive(Clone, Debug)]
pub(super) struct Defaults {
    pub(super) max_parallel: u32,
    pub(super) max_splits: u32,
    /// As pymatris spells it (`1M`); aria2c's `-k` reads the same units.
    pub(super) min_split_size: String,
}

impl Defaults {
    pub(super) fn from_help(cli: &Path) -> anyhow::Result<Defaults> {
        let out = Command::new(cli)
            .arg("--help")
            .output()
            .with_context(|| format!("running {} --help", cli.display()))?;
        let help = String::from_utf8_lossy(&out.stdout);
        let get = |flag: &str| -> anyhow::Result<String> {
            help_default(&help, flag)
                .with_context(|| format!("no `[default: …]` for {flag} in pymatris --help"))
        };
        Ok(Defaults {
            max_parallel: get("--max-parallel")?.parse()?,
            max_splits: get("--max-splits")?.parse()?,
            min_split_size: get("--min-split-size")?,
        })
    }
}

/// The `[default: X]` of `flag` in clap's long help.
fn help_default(help: &str, flag: &str) -> Option<String> {
    let mut lines = help.lines().skip_while(|l| {
        let l = l.trim_start();
        !(l.starts_with(flag) || l.contains(&format!(", {flag}")))
    });
    lines.next()?;
    for line in lines {
        let t = line.trim_start();
        // The next option; a wrapped description line may start with a
        // flag too, indented as deep as the description.
        let indent = line.len() - t.len();
        if t.starts_with('-') && indent < 8 {
            return None;
        }
        if let Some(rest) = t.split("[default: ").nth(1) {
            return rest.split(']').next().map(str::to_owned);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_clap_defaults() {
        let help = "Options:\n  -i, --input-file <FILE>\n          Read\n\n      --max-parallel <N>\n          Files downloaded at once\n          \n          [default: 5]\n\n      --max-splits <N>\n          Parts\n\n      --min-split-size <SIZE>\n          Never\n          \n          [default: 1M]\n";
        assert_eq!(help_default(help, "--max-parallel").as_deref(), Some("5"));
        assert_eq!(help_default(help, "--max-splits"), None);
        let wrapped = "      --max-parallel <N>\n          Files at once. Unless given, more (up to\n          --max-per-host, or 16)\n          \n          [default: 5]\n\n      --max-splits <N>\n";
        assert_eq!(
            help_default(wrapped, "--max-parallel").as_deref(),
            Some("5")
        );
        assert_eq!(
            help_default(help, "--min-split-size").as_deref(),
            Some("1M")
        );
    }
}
