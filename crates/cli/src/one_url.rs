//! The flags that set options of the one URL given (`--checksum`,
//! `--output`, `--mirror`), as an input list's option lines set them for
//! each of its URLs; kept apart from `args.rs` so that it fits tidy's
//! limit.

use anyhow::bail;

use crate::args::Args;
use crate::input::{Item, check_relative};

impl Args {
    /// Checks the one-URL flags and applies them to the one entry of
    /// `head`; an error when there are several URLs (`listed`: an input
    /// list too).
    pub(crate) fn one_url_flags(&self, head: &mut [Item], listed: bool) -> anyhow::Result<()> {
        for (flag, given) in [
            ("--checksum", self.checksum.is_some()),
            ("--output", self.output.is_some()),
            ("--mirror", !self.mirror.is_empty()),
        ] {
            if given && (head.len() != 1 || listed) {
                bail!("{flag} applies to one URL; for several, give the option in --input-file");
            }
        }
        if let Some(text) = &self.checksum {
            let sum = parse_any_checksum(text)?;
            if let Some(Ok(entry)) = head.first_mut() {
                entry.checksum = Some(sum);
            }
        }
        for mirror in &self.mirror {
            let url = pymatris_core::Url::parse(mirror).map_err(|e| {
                anyhow::anyhow!("--mirror {}: {e}", pymatris_core::redact_url_str(mirror))
            })?;
            if !pymatris_core::registry::schemes().contains(&url.scheme()) {
                bail!(
                    "--mirror: {}:// is not supported by this build",
                    url.scheme()
                );
            }
        }
        if let Some(Ok(entry)) = head.first_mut() {
            entry.mirrors.extend(self.mirror.iter().cloned());
        }
        if let Some(output) = &self.output {
            check_relative(output).map_err(|e| anyhow::anyhow!("--output {output}: {e}"))?;
            if let Some(Ok(entry)) = head.first_mut() {
                entry.out = Some(output.clone());
            }
        }
        Ok(())
    }
}

/// `--checksum`: `ALGO=HEX`, or a bare hex digest of an algorithm's
/// length.
fn parse_any_checksum(text: &str) -> anyhow::Result<pymatris_core::Checksum> {
    let bare = (!text.contains('='))
        .then(|| pymatris_core::Algo::of_hex_len(text.trim().len()))
        .flatten();
    let sum = match bare {
        Some(algo) => pymatris_core::Checksum::new(algo, text),
        None => text.parse(),
    };
    sum.map_err(|e| anyhow::anyhow!("--checksum: {e}"))
}
