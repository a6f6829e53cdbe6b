//! How many SSH connections a download opens, counted by the harness's
//! shaping proxy in front of its sshd: several through a link that caps
//! each connection (each added one pays), few on plain loopback (where
//! the CPU is the bound and a second one does not pay).

#![allow(missing_docs, clippy::print_stderr)]

use std::time::{Duration, Instant};

use pymatris_core::camino::Utf8PathBuf;
use pymatris_core::{Config, Downloader};
use pymatris_harness::{Servers, Shape, Which};

// Link this crate's registration into the test binary.
extern crate pymatris_proto_sftp as _;
use pymatris_proto_sftp::SftpOptions;

const SIZE: u64 = 32 << 20;

/// Downloads `SIZE` bytes over SFTP through `shape` with the engine's
/// default parts; returns the connections the proxy saw and the time.
fn download_through(shape: Shape) -> (u64, Duration) {
    let servers = Servers::start(Which::sftp_only()).expect("start sshd");
    let src = servers.write_random("big.bin", SIZE, 7);
    let shaper = servers
        .shaped(servers.sftp_port(), shape)
        .expect("shaping proxy");
    // The URL names the proxy's port, which known_hosts does not know.
    let url = servers.sftp_url("big.bin").replace(
        &format!(":{}/", servers.sftp_port()),
        &format!(":{}/", shaper.port()),
    );
    let out = tempfile::tempdir().unwrap();
    let dir = Utf8PathBuf::from_path_buf(out.path().to_owned()).unwrap();
    let config = Config::default()
        .with(SftpOptions::default().identity(Some(servers.ssh_client_key().to_owned())))
        .insecure(true)
        .overwrite(true);
    let mut dl = Downloader::new(config);
    dl.enqueue_file(&url, &dir);
    let started = Instant::now();
    let results = dl.download_blocking();
    let took = started.elapsed();
    assert!(results.errors.is_empty(), "{results}");
    assert_eq!(
        std::fs::read(&src).unwrap(),
        std::fs::read(out.path().join("big.bin")).unwrap(),
        "bytes differ"
    );
    (shaper.counters().connections, took)
}

#[test]
fn a_link_capped_per_connection_gets_more_connections() {
    let cap: u64 = 4_000_000;
    let (conns, took) = download_through(
        Shape::new()
            .delay(Duration::from_millis(20))
            .rate(Some(cap)),
    );
    eprintln!("{conns} connection(s), {took:?}");
    assert!(conns > 1, "one connection through a capped link");
    // One connection cannot move the file faster than its cap; nor can
    // `conns` of them faster than theirs.
    let one = Duration::from_secs_f64(SIZE as f64 / cap as f64);
    assert!(
        took < one,
        "{took:?}: no faster than one connection ({one:?})"
    );
    let all = Duration::from_secs_f64(SIZE as f64 / (conns * cap) as f64);
    assert!(took >= all, "{took:?} beat {conns} caps ({all:?})");
}

#[test]
fn plain_loopback_keeps_to_one_connection_or_a_probe() {
    // Unshaped: the proxy only counts. A second connection is a probe,
    // opened when the download lasts longer than a measuring window; on
    // loopback it does not pay, and no third follows.
    let (conns, took) = download_through(Shape::new());
    eprintln!("{conns} connection(s), {took:?}");
    assert!(conns <= 2, "{conns} connections on loopback");
}
