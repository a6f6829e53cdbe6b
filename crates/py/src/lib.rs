//! The native half of the Python package `pymatris`: the Rust engine
//! (`pymatris-core` with every protocol) behind a small module,
//! `pymatris._native`, that the Python layer (`python/pymatris`) turns into
//! pymatris 0.0.10's API.
//!
//! A download runs on a thread of its own with its own tokio runtime, while
//! the calling thread waits without the GIL. Ten times a second it takes
//! the GIL back for a moment to hand progress and log events to Python
//! (so a tqdm bar is updated at most ten times a second) and to see
//! whether Ctrl-C was pressed; other Python threads run freely meanwhile.

mod iter;
mod job;
mod logs;
mod words;

use pyo3::prelude::*;

// Each protocol crate registers itself with `inventory`, and rustc links
// only crates that something names.
extern crate pymatris_proto_ftp as _;
extern crate pymatris_proto_http as _;
extern crate pymatris_proto_sftp as _;

/// The URL schemes this build downloads.
#[pyfunction]
fn schemes() -> Vec<&'static str> {
    pymatris_core::registry::schemes()
}

/// The engine's version.
#[pyfunction]
fn version() -> &'static str {
    env!("CARGO_PKG_VERSION")
}

/// The shard, in `0..count`, that `url` belongs to: the engine's
/// `pymatris_core::shard_of`, the same as the CLI's `--shard`.
#[pyfunction]
fn shard_of(url: &str, count: u64) -> u64 {
    pymatris_core::shard_of(url, count)
}

/// Runs the Rust command line tool with `argv` (the program's name first)
/// and returns its exit status: the `pymatris` command of the wheel is the
/// same code as the one `cargo install` builds.
#[pyfunction]
fn cli_main(py: Python<'_>, argv: Vec<String>) -> u8 {
    py.detach(|| pymatris_cli::main(argv))
}

/// `pymatris._native`: the engine for the Python package.
#[pymodule]
fn _native(m: &Bound<'_, PyModule>) -> PyResult<()> {
    m.add_function(wrap_pyfunction!(schemes, m)?)?;
    m.add_function(wrap_pyfunction!(version, m)?)?;
    m.add_function(wrap_pyfunction!(cli_main, m)?)?;
    m.add_function(wrap_pyfunction!(shard_of, m)?)?;
    m.add_class::<job::Job>()?;
    m.add_class::<iter::OutcomeIter>()?;
    Ok(())
}
