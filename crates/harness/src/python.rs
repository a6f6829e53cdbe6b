//! A Python virtual environment under the workspace's `target/`, with
//! packages from PyPI, for the servers written in Python (pyftpdlib,
//! asyncssh) and, later, the Python package's tests.
//!
//! One venv serves every caller: it is created once, and each set of
//! requirements is installed once (a marker file per set records it). A
//! file lock serialises creation and installs, so tests in several
//! processes can ask for it at once.

use std::fs::{self, File};
use std::path::{Path, PathBuf};
use std::process::Command;

use anyhow::{Context as _, Result, bail};

/// The workspace's target directory: `CARGO_TARGET_DIR`, else `target/`
/// beside the workspace's root manifest.
pub fn target_dir() -> PathBuf {
    if let Some(dir) = std::env::var_os("CARGO_TARGET_DIR") {
        return PathBuf::from(dir);
    }
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../target")
}

/// The venv's own `python`, with `requirements` (pip specifiers such as
/// `"pyftpdlib==2.0.1"`) installed. Creates `target/py-venv` with the
/// system's `python3` the first time.
pub fn venv_python(requirements: &[&str]) -> Result<PathBuf> {
    let target = target_dir();
    fs::create_dir_all(&target).with_context(|| format!("creating {}", target.display()))?;
    let venv = target.join("py-venv");
    let lock = File::create(target.join("py-venv.lock")).context("creating the venv lock")?;
    lock.lock().context("locking the venv")?;
    let python = venv.join("bin/python");
    if !python.exists() {
        run(
            Command::new("python3").arg("-m").arg("venv").arg(&venv),
            "python3 -m venv (Debian: apt-get install python3-venv)",
        )?;
    }
    let mut sorted: Vec<&str> = requirements.to_vec();
    sorted.sort_unstable();
    let marker = venv.join(format!(".installed-{:016x}", fnv1a(&sorted.join("\n"))));
    if !sorted.is_empty() && !marker.exists() {
        run(
            Command::new(&python)
                .args([
                    "-m",
                    "pip",
                    "install",
                    "--quiet",
                    "--disable-pip-version-check",
                ])
                .args(&sorted),
            "pip install",
        )?;
        fs::write(&marker, sorted.join("\n")).context("writing the install marker")?;
    }
    Ok(python)
}

fn run(command: &mut Command, what: &str) -> Result<()> {
    let out = command
        .output()
        .with_context(|| format!("running {what}"))?;
    if !out.status.success() {
        bail!(
            "{what} failed ({}):\n{}{}",
            out.status,
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(())
}

/// A stable hash of a requirement set, for its marker file's name.
fn fnv1a(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_venv_runs_python() {
        let python = venv_python(&[]).unwrap();
        let out = Command::new(python)
            .args(["-c", "import sys; print(sys.prefix)"])
            .output()
            .unwrap();
        assert!(out.status.success());
        assert!(String::from_utf8_lossy(&out.stdout).contains("py-venv"));
    }
}
