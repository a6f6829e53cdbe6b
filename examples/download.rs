//! Downloads the URLs given on the command line into the current directory,
//! with `pymatris-core` and `pymatris-proto-http` as the only pymatris
//! dependencies.
//!
//! `cargo run -p pymatris-examples --example download -- https://example.org/a.bin`

#![allow(clippy::print_stdout, clippy::print_stderr)] // a command-line program

use pymatris_core::{Config, Downloader};
use pymatris_proto_http::HttpOptions;

fn main() {
    let urls: Vec<String> = std::env::args().skip(1).collect();
    if urls.is_empty() {
        eprintln!("usage: download URL...");
        std::process::exit(2);
    }
    let config = Config::default()
        .max_splits(4)
        // What only HTTP reads goes in its own options.
        .with(HttpOptions::default().user_agent("pymatris-example/1"));
    // Registering the protocol names the crate, so the linker keeps it:
    // nothing else is needed for `http://` and `https://` to work.
    let mut dl = Downloader::builder(config)
        .protocol(pymatris_proto_http::PLUGIN)
        .build();
    for url in &urls {
        dl.enqueue_file(url, ".");
    }
    let results = dl.download_blocking();
    print!("{results}");
    if !results.errors.is_empty() {
        std::process::exit(1);
    }
}
