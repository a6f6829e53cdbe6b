//! Programs that embed pymatris, one per file beside this one, run with
//! `cargo run -p pymatris-examples --example NAME -- ARGS`:
//!
//! - `download`: download URLs over HTTP(S) with `pymatris-core` and
//!   `pymatris-proto-http` only.
//! - `reporter`: a [`Reporter`](pymatris_core::Reporter) of one's own that
//!   prints a line per file.
//! - `custom_protocol`: a protocol of one's own (`file:` URLs) in a few
//!   lines, registered explicitly.
//!
//! The package holds no library code: it exists so that
//! `cargo build --workspace --all-targets` compiles the examples, and an
//! API change that breaks them fails the build.
