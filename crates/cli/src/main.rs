//! The `pymatris` binary: everything is in the library (`src/lib.rs`), which
//! the Python package's `pymatris` command runs too.

fn main() -> std::process::ExitCode {
    std::process::ExitCode::from(pymatris_cli::main(std::env::args_os()))
}
