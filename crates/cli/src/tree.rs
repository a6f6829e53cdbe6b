//! The flags of a recursive download (`-r`), kept apart from `args.rs`:
//! what they mean for the engine is a `TreeOptions`, built here once.

use anyhow::bail;
use clap::Args;
use pymatris_core::TreeOptions;

#[derive(Debug, Args)]
pub(crate) struct TreeArgs {
    /// Download whole directories: each URL names a directory (FTP, SFTP,
    /// or an HTTP index page of nginx, Apache or lighttpd), reproduced under
    /// --dir. Directories are listed in parallel (within --max-per-host)
    /// while files download. A file already there with the remote size and
    /// time is kept, a changed one replaced once its new version is
    /// complete; nothing is ever deleted. Names from the server are
    /// sanitised (no hidden files, no path outside --dir); links are
    /// followed only to files inside the tree.
    #[arg(short = 'r', long)]
    pub(crate) recursive: bool,

    /// With -r: download only files whose path below the URL matches GLOB
    /// (`*` also matches `/`, so `*.nc` matches at any depth). Repeatable:
    /// any of them.
    #[arg(long, value_name = "GLOB")]
    pub(crate) include: Vec<String>,

    /// With -r: leave out files, and directories with all below them, whose
    /// path below the URL matches GLOB. Repeatable.
    #[arg(long, value_name = "GLOB")]
    pub(crate) exclude: Vec<String>,

    /// With -r: list directories at most N levels below the URL (0: its
    /// files only). Default 64.
    #[arg(long, value_name = "N")]
    pub(crate) max_depth: Option<usize>,
}

impl TreeArgs {
    /// The engine's options with `-r`, `None` without it.
    pub(crate) fn options(&self) -> anyhow::Result<Option<TreeOptions>> {
        if !self.recursive {
            if !self.include.is_empty() || !self.exclude.is_empty() || self.max_depth.is_some() {
                bail!("--include, --exclude and --max-depth apply to --recursive downloads");
            }
            return Ok(None);
        }
        let mut options = TreeOptions::default();
        for glob in &self.include {
            options = options
                .include(glob)
                .map_err(|e| anyhow::anyhow!("--include {glob:?}: {e}"))?;
        }
        for glob in &self.exclude {
            options = options
                .exclude(glob)
                .map_err(|e| anyhow::anyhow!("--exclude {glob:?}: {e}"))?;
        }
        if let Some(depth) = self.max_depth {
            options = options.max_depth(depth);
        }
        Ok(Some(options))
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use crate::args::Args;

    fn plan(args: &[&str]) -> anyhow::Result<crate::args::Plan> {
        let args = Args::try_parse_from(["pymatris"].iter().chain(args))?;
        args.into_plan(std::io::empty())
    }

    #[test]
    fn recursive_urls_become_trees() {
        let p = plan(&["-r", "--include", "*.nc", "--max-depth", "2", "ftp://h/d/"]).unwrap();
        assert_eq!(p.trees.len(), 1);
        assert_eq!(p.source.known_total(), Some(0));
        let p = plan(&["ftp://h/d/f"]).unwrap();
        assert!(p.trees.is_empty() && p.source.known_total() == Some(1));
    }

    #[test]
    fn tree_flags_are_checked() {
        let Err(err) = plan(&["--include", "*.nc", "ftp://h/d/"]) else {
            panic!()
        };
        assert!(err.to_string().contains("--recursive"), "{err}");
        let Err(err) = plan(&["-r", "--exclude", "a[", "ftp://h/d/"]) else {
            panic!()
        };
        assert!(err.to_string().contains("--exclude \"a[\""), "{err}");
        let Err(err) = plan(&[
            "-r",
            "--checksum",
            &format!("sha256={}", "0".repeat(64)),
            "ftp://h/d/",
        ]) else {
            panic!()
        };
        assert!(err.to_string().contains("--recursive"), "{err}");
    }
}
