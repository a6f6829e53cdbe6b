//! One command line of a run, with the input files it reads, and how it is
//! quoted for the report.

use std::path::{Path, PathBuf};

use anyhow::Context as _;

/// One command line, with the input files it reads.
#[derive(Clone, Debug)]
pub(super) struct Invocation {
    pub(super) program: String,
    pub(super) args: Vec<String>,
    /// Files written before the runs: (path, contents).
    pub(super) inputs: Vec<(PathBuf, String)>,
    /// The parallelism, for the table.
    pub(super) settings: String,
}

impl Invocation {
    pub(super) fn new(program: impl Into<String>) -> Invocation {
        Invocation {
            program: program.into(),
            args: Vec::new(),
            inputs: Vec::new(),
            settings: String::new(),
        }
    }

    pub(super) fn arg(&mut self, a: impl Into<String>) -> &mut Invocation {
        self.args.push(a.into());
        self
    }

    pub(super) fn args<S: Into<String>>(
        &mut self,
        a: impl IntoIterator<Item = S>,
    ) -> &mut Invocation {
        self.args.extend(a.into_iter().map(Into::into));
        self
    }

    pub(super) fn input(&mut self, path: PathBuf, contents: String) -> String {
        let shown = path.display().to_string();
        self.inputs.push((path, contents));
        shown
    }

    /// Writes the input files.
    pub(super) fn write_inputs(&self) -> anyhow::Result<()> {
        for (path, contents) in &self.inputs {
            std::fs::write(path, contents)
                .with_context(|| format!("writing {}", path.display()))?;
        }
        Ok(())
    }
}

/// Shell-quotes `s` when it needs it.
pub(super) fn quote(s: &str) -> String {
    let plain = !s.is_empty()
        && s.chars()
            .all(|c| c.is_ascii_alphanumeric() || "-_./:=@,+%".contains(c));
    if plain {
        s.to_owned()
    } else {
        format!("'{}'", s.replace('\'', r"'\''"))
    }
}

pub(super) fn path(p: &Path) -> String {
    p.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quotes_for_the_shell() {
        assert_eq!(quote("/tmp/a.bin"), "/tmp/a.bin");
        assert_eq!(quote("a b"), "'a b'");
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
