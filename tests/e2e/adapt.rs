//! How many connections the CLI holds open at once with its default flags,
//! counted by the harness's shaping proxy in front of nginx: more than the
//! defaults' five through a link that caps each connection or makes each
//! request wait a round trip (each added one pays), the defaults' when the
//! user gave `--max-parallel` and `--max-splits`. The CLI runs its batch
//! through the streaming loop (`download_each`), so that is what grows.
//! Connections at once, not opened: a part taken over near the end opens
//! one that replaces another. No time is asserted (the machine may be
//! busy); the times are in the messages.

use std::path::Path;
use std::time::{Duration, Instant};

use pymatris_harness::{Servers, Shape, Shaper, Which};
use pymatris_tests::run_pymatris;

const BIG: u64 = 32 << 20;

fn nginx() -> Servers {
    Servers::start(Which::http_only()).expect("start nginx (apt-get install nginx-light)")
}

/// `servers`' URL of `rel`, through `shaper`.
fn via(servers: &Servers, shaper: &Shaper, rel: &str) -> String {
    servers.http_url(rel).replace(
        &format!(":{}/", servers.http_port()),
        &format!(":{}/", shaper.port()),
    )
}

/// Runs the CLI on `urls` with `flags` into `out`; returns the time it took.
fn download(out: &Path, urls: &[String], flags: &[&str]) -> Duration {
    let mut args: Vec<String> = vec!["--quiet".into(), "--dir".into()];
    args.push(out.to_str().unwrap().to_owned());
    args.extend(flags.iter().map(|f| (*f).to_owned()));
    args.extend(urls.iter().cloned());
    let started = Instant::now();
    let output = run_pymatris(&args);
    let took = started.elapsed();
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    took
}

/// 2 MB/s per connection, 10 ms each way.
fn capped() -> Shape {
    Shape::new()
        .delay(Duration::from_millis(10))
        .rate(Some(2_000_000))
}

#[test]
fn a_link_capped_per_connection_gets_more_parts_with_default_flags() {
    let servers = nginx();
    let src = servers.write_random("big.bin", BIG, 3);
    let shaper = servers.shaped(servers.http_port(), capped()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let took = download(out.path(), &[via(&servers, &shaper, "big.bin")], &[]);
    let conns = shaper.most_open();
    assert_eq!(
        std::fs::read(&src).unwrap(),
        std::fs::read(out.path().join("big.bin")).unwrap()
    );
    assert!(
        conns > 5,
        "{conns} connections through a capped link ({took:?})"
    );
    let ceiling = 16;
    assert!(conns <= ceiling, "{conns} connections, above the ceiling");
}

/// The bytes that went through `shaper` when it accepted more than `n`
/// connections, while `run` runs; and what `run` returned.
fn bytes_at_connection<T>(shaper: &Shaper, n: u64, run: impl FnOnce() -> T) -> (Option<u64>, T) {
    let done = std::sync::atomic::AtomicBool::new(false);
    std::thread::scope(|scope| {
        let watch = scope.spawn(|| {
            while !done.load(std::sync::atomic::Ordering::SeqCst) {
                let c = shaper.counters();
                if c.connections > n {
                    return Some(c.to_client);
                }
                std::thread::sleep(Duration::from_millis(2));
            }
            None
        });
        let out = run();
        done.store(true, std::sync::atomic::Ordering::SeqCst);
        (watch.join().unwrap(), out)
    })
}

#[test]
fn a_large_file_over_a_capped_long_link_reaches_the_ceiling_in_one_step() {
    // Each connection capped, answers after four delays: every added
    // connection pays in full, so the first probe goes from five to the
    // ceiling at once, not by doubling (ten, then sixteen a probe later,
    // after about a quarter of the bytes). Bytes, not times, are compared.
    let servers = nginx();
    let src = servers.write_random("big.bin", 48 << 20, 6);
    let shaper = servers.shaped(servers.http_port(), capped()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let url = via(&servers, &shaper, "big.bin");
    let (at_eleventh, took) =
        bytes_at_connection(&shaper, 10, || download(out.path(), &[url], &[]));
    assert_eq!(
        std::fs::read(&src).unwrap(),
        std::fs::read(out.path().join("big.bin")).unwrap()
    );
    let total = shaper.counters().to_client;
    let at_eleventh = at_eleventh.expect("an eleventh connection");
    assert!(
        at_eleventh < total * 18 / 100,
        "the eleventh connection after {at_eleventh} of {total} bytes ({took:?})"
    );
}

#[test]
fn explicit_splits_and_files_at_once_are_kept() {
    let servers = nginx();
    servers.write_random("big.bin", BIG, 4);
    let shaper = servers.shaped(servers.http_port(), capped()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let url = via(&servers, &shaper, "big.bin");
    download(
        out.path(),
        &[url],
        &["--max-splits", "5", "--max-parallel", "5"],
    );
    let conns = shaper.most_open();
    assert!(
        conns <= 5,
        "{conns} connections at once with --max-splits 5"
    );
}

#[test]
fn many_small_files_over_a_long_link_run_more_at_once() {
    let servers = nginx();
    let shaper = servers
        .shaped(
            servers.http_port(),
            Shape::new().delay(Duration::from_millis(20)),
        )
        .unwrap();
    let urls: Vec<String> = (0..400)
        .map(|i| {
            let rel = format!("small/{i:03}.bin");
            servers.write_random(&rel, 16 << 10, i);
            via(&servers, &shaper, &rel)
        })
        .collect();
    let out = tempfile::tempdir().unwrap();
    let took = download(out.path(), &urls, &[]);
    let conns = shaper.most_open();
    assert_eq!(std::fs::read_dir(out.path()).unwrap().count(), 400);
    assert!(
        conns > 5,
        "{conns} connections for 400 files over 40 ms ({took:?})"
    );
}

/// Run alone by `cargo xtask ci` (`ALONE` in `xtask/src/ci.rs`): beside
/// another test, the debug client is short of CPU, added connections do
/// not pay, and the batch rightly grows late (the sixth connection after
/// 60 % of the bytes, seen in a full CI run; at most 25 % alone, 35 %
/// before the change this tests).
#[test]
#[ignore = "compares growth against the link: `cargo xtask ci` runs it alone"]
fn a_long_list_over_a_capped_link_grows_early() {
    // 300 small files from `-i`, read a window ahead of the downloads: the
    // batch must count the requests read ahead as work waiting, and decide
    // within a few round trips, not after a second. Each file waits a
    // round trip (40 ms) for a few milliseconds of bytes, so every
    // connection added pays in full: the sixth connection is to open
    // before a quarter of the bytes went through (at five connections a
    // quarter is 75 files, 15 round trips), and growth to go past its
    // first probe. Bytes, not times, are compared: a busy machine slows
    // both alike.
    let servers = nginx();
    let shape = Shape::new()
        .delay(Duration::from_millis(20))
        .rate(Some(8_000_000));
    let shaper = servers.shaped(servers.http_port(), shape).unwrap();
    let out = tempfile::tempdir().unwrap();
    let list = out.path().join("list.txt");
    let urls: Vec<String> = (0..300)
        .map(|i| {
            let rel = format!("list/{i:03}.bin");
            servers.write_random(&rel, 16 << 10, 1000 + i);
            via(&servers, &shaper, &rel)
        })
        .collect();
    std::fs::write(&list, urls.join("\n") + "\n").unwrap();
    let files = out.path().join("files");
    let (at_sixth, took) = bytes_at_connection(&shaper, 5, || {
        download(&files, &[], &["-i", list.to_str().unwrap()])
    });
    let total = shaper.counters().to_client;
    let conns = shaper.most_open();
    assert_eq!(std::fs::read_dir(&files).unwrap().count(), 300);
    let at_sixth = at_sixth.expect("a sixth connection");
    assert!(
        at_sixth < total / 4,
        "the sixth connection after {at_sixth} of {total} bytes ({took:?})"
    );
    assert!(
        (11..=16).contains(&conns),
        "{conns} connections at most for 300 files from a list ({took:?})"
    );
}

#[test]
fn plain_loopback_stays_near_the_defaults() {
    // Unshaped: the proxy only counts. Where the CPU is the bound, a probe
    // (5 to 8) does not pay, and no more follow. On a machine busy with
    // other work a window's rate can swing by more than the probe's gain
    // and let one more step go: the bound is that growth never runs to
    // the ceiling.
    let servers = nginx();
    let src = servers.write_random("big.bin", 16 * BIG, 5);
    let shaper = servers.shaped(servers.http_port(), Shape::new()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let took = download(out.path(), &[via(&servers, &shaper, "big.bin")], &[]);
    let conns = shaper.most_open();
    assert_eq!(
        std::fs::read(&src).unwrap(),
        std::fs::read(out.path().join("big.bin")).unwrap()
    );
    assert!(conns < 16, "{conns} connections on loopback ({took:?})");
}
