//! Helpers of the end-to-end tests: running the `pymatris` binary, looking
//! at what it left in a directory, and an in-process HTTP server that
//! misbehaves on demand ([`fault_server`]).

#![allow(missing_docs, unreachable_pub)]

pub mod fake_ftp;
pub mod fault_server;

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

// Name the HTTP protocol crate so its `inventory` registration is linked
// into the test binaries that use the library directly.
extern crate pymatris_proto_http as _;

/// The `pymatris` binary of this build. `cargo test --workspace` builds it
/// beside the test binaries.
pub fn pymatris_bin() -> PathBuf {
    let exe = std::env::current_exe().expect("test binary path");
    // target/<profile>/deps/e2e-HASH -> target/<profile>/pymatris
    let dir = exe.parent().and_then(Path::parent).expect("target dir");
    let bin = dir.join(format!("pymatris{}", std::env::consts::EXE_SUFFIX));
    assert!(
        bin.exists(),
        "{} is missing: build it with `cargo build -p pymatris-cli` (or run `cargo test --workspace`)",
        bin.display()
    );
    bin
}

/// Runs `pymatris` with `args`, with no terminal and no stdin.
pub fn run_pymatris<I, S>(args: I) -> Output
where
    I: IntoIterator<Item = S>,
    S: AsRef<std::ffi::OsStr>,
{
    Command::new(pymatris_bin())
        .args(args)
        .env_remove("HTTP_PROXY")
        .env_remove("HTTPS_PROXY")
        .env_remove("http_proxy")
        .env_remove("https_proxy")
        .env_remove("ALL_PROXY")
        .env_remove("all_proxy")
        // The machine's config file is no part of a test.
        .env("PYMATRIS_NO_CONFIG", "1")
        .stdin(std::process::Stdio::null())
        .output()
        .expect("run pymatris")
}

/// The names of the files in `dir`, sorted.
pub fn list_dir(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = match std::fs::read_dir(dir) {
        Ok(rd) => rd
            .map(|e| {
                e.expect("dir entry")
                    .file_name()
                    .to_string_lossy()
                    .into_owned()
            })
            .collect(),
        Err(_) => Vec::new(),
    };
    names.sort();
    names
}

/// Hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    use sha2::Digest;
    hex::encode(sha2::Sha256::digest(bytes))
}

/// Deterministic pseudo-random bytes.
pub fn random_bytes(len: usize, seed: u64) -> Vec<u8> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    (0..len)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x >> 24) as u8
        })
        .collect()
}
