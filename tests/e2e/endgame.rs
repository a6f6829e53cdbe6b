//! Bytes the server sends for one file, counted by the harness's shaping
//! proxy in front of nginx, against the file's size: parts cut when a
//! connection joins, and split or taken over at the end, must not make the
//! server send bytes twice (issue 14, point 5). The link is long and
//! uncapped, so a connection holds megabytes in flight: a cut part whose
//! request asked past the cut wastes them all. No time is asserted.

use std::time::{Duration, Instant};

use pymatris_harness::{Servers, Shape, Which};
use pymatris_tests::run_pymatris;

/// Bytes over the file's size a run may fetch besides 2 %: the headers of
/// its requests and answers.
const HEADERS: u64 = 256 << 10;

#[test]
fn an_end_game_on_a_long_link_fetches_each_byte_once() {
    let size: u64 = 96 << 20;
    let servers =
        Servers::start(Which::http_only()).expect("start nginx (apt-get install nginx-light)");
    let src = servers.write_random("big.bin", size, 14);
    // About 10 MB/s per connection, bound by the window and the round trip
    // as a real TCP connection is: each holds 2 MiB in flight, which a cut
    // inside its request would lose.
    let shape = Shape::new()
        .delay(Duration::from_millis(100))
        .window(Some(2 << 20));
    let shaper = servers.shaped(servers.http_port(), shape).unwrap();
    let url = servers.http_url("big.bin").replace(
        &format!(":{}/", servers.http_port()),
        &format!(":{}/", shaper.port()),
    );
    let out = tempfile::tempdir().unwrap();
    let started = Instant::now();
    let output = run_pymatris(&[
        "--quiet".to_owned(),
        "--dir".to_owned(),
        out.path().to_str().unwrap().to_owned(),
        url,
    ]);
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    assert_eq!(
        std::fs::read(&src).unwrap(),
        std::fs::read(out.path().join("big.bin")).unwrap()
    );
    let counters = shaper.counters();
    let bound = size + size / 50 + HEADERS;
    assert!(
        counters.to_client <= bound,
        "the server sent {} bytes for a file of {size} ({:.4} per byte; {} connections, {took:?})",
        counters.to_client,
        counters.to_client as f64 / size as f64,
        counters.connections,
    );
}
