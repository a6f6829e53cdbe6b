//! `pymatris completions SHELL`: the shell's completion script, made by
//! clap_complete from the same definition that parses the flags, so it
//! never lists a flag that is gone nor misses a new one.

use std::io::Write as _;

/// Writes the completion script of `shell` to standard output.
pub(crate) fn print(shell: clap_complete::Shell) -> u8 {
    let mut script = Vec::new();
    clap_complete::generate(
        shell,
        &mut crate::config::command(),
        "pymatris",
        &mut script,
    );
    match std::io::stdout().lock().write_all(&script) {
        Ok(()) => 0,
        Err(e) => {
            err!("pymatris: cannot write the completion script: {e}");
            1
        }
    }
}
