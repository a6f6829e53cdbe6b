//! The shaping proxy measured against a tiny local server: latency, caps,
//! window, ceiling and counters. The bounds physics guarantees (a byte
//! cannot arrive before its delays, a cap cannot be beaten) are strict;
//! the others are generous, for a shared machine with few cores. Each
//! measurement is printed, to see how close to a bound it came.
#![allow(clippy::print_stderr)]

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::thread;
use std::time::{Duration, Instant};

use pymatris_harness::{Counters, Servers, Shape, Shaper, Which};

const MS: Duration = Duration::from_millis(1);

/// A server on a free loopback port, a thread per connection, answering
/// lines: `GET n` with n bytes, `PUT n` by reading n bytes and answering
/// `ok\n`.
fn server() -> SocketAddr {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).unwrap();
    let addr = listener.local_addr().unwrap();
    thread::spawn(move || {
        for conn in listener.incoming() {
            let Ok(conn) = conn else { continue };
            thread::spawn(move || serve(conn));
        }
    });
    addr
}

fn serve(conn: TcpStream) {
    conn.set_nodelay(true).unwrap();
    let mut out = conn.try_clone().unwrap();
    let mut input = BufReader::new(conn);
    let block = vec![7u8; 1 << 20];
    let mut line = String::new();
    loop {
        line.clear();
        if input.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let (verb, n) = line.trim().split_once(' ').unwrap();
        let mut n: usize = n.parse().unwrap();
        match verb {
            "GET" => {
                while n > 0 {
                    let k = n.min(block.len());
                    if out.write_all(&block[..k]).is_err() {
                        return;
                    }
                    n -= k;
                }
            }
            "PUT" => {
                let mut buf = vec![0u8; 1 << 16];
                while n > 0 {
                    let k = n.min(buf.len());
                    if input.read_exact(&mut buf[..k]).is_err() {
                        return;
                    }
                    n -= k;
                }
                if out.write_all(b"ok\n").is_err() {
                    return;
                }
            }
            _ => panic!("unknown request {line:?}"),
        }
    }
}

fn connect(shaper: &Shaper) -> TcpStream {
    let s = TcpStream::connect((Ipv4Addr::LOCALHOST, shaper.port())).unwrap();
    s.set_nodelay(true).unwrap();
    s
}

/// Asks for `n` bytes on `conn`; returns when the first arrived and when
/// the last did, from the request.
fn get(conn: &mut TcpStream, n: usize) -> (Duration, Duration) {
    let start = Instant::now();
    writeln!(conn, "GET {n}").unwrap();
    let mut buf = vec![0u8; 1 << 20];
    let mut first = None;
    let mut left = n;
    while left > 0 {
        let k = conn.read(&mut buf[..left.min(1 << 20)]).unwrap();
        assert!(k > 0, "the proxy closed with {left} bytes to go");
        first.get_or_insert_with(|| start.elapsed());
        left -= k;
    }
    (first.unwrap_or_default(), start.elapsed())
}

/// `k` connections at once, each fetching `n` bytes; the wall time.
fn parallel_gets(shaper: &Shaper, k: usize, n: usize) -> Duration {
    let start = Instant::now();
    thread::scope(|s| {
        for _ in 0..k {
            s.spawn(|| get(&mut connect(shaper), n));
        }
    });
    start.elapsed()
}

fn within(what: &str, took: Duration, low: Duration, high: Duration) {
    eprintln!("{what}: {took:?} (bounds {low:?} .. {high:?})");
    assert!(
        took >= low && took <= high,
        "{what}: took {took:?}, not within {low:?} .. {high:?}"
    );
}

fn seconds(bytes: f64, rate: f64) -> Duration {
    Duration::from_secs_f64(bytes / rate)
}

#[test]
fn a_fresh_request_waits_four_delays_and_a_warm_one_two() {
    let d = 40 * MS;
    let shaper = Shaper::start(server(), Shape::new().delay(d)).unwrap();
    let start = Instant::now();
    let mut conn = connect(&shaper);
    writeln!(conn, "GET 1").unwrap();
    let mut one = [0u8; 1];
    conn.read_exact(&mut one).unwrap();
    within("fresh", start.elapsed(), 4 * d, 10 * d);
    let (first, _) = get(&mut conn, 1);
    within("warm", first, 2 * d, 5 * d);
    assert_eq!(shaper.counters().connections, 1);
}

#[test]
fn one_connection_runs_at_its_cap() {
    let rate = 4e6;
    let n = 2_000_000;
    let shaper =
        Shaper::start(server(), Shape::new().delay(5 * MS).rate(Some(rate as u64))).unwrap();
    let (_, took) = get(&mut connect(&shaper), n);
    // The burst passes at once; the rest at the rate.
    let low = seconds(n as f64 - 40_000.0, rate);
    within("one connection", took, low, seconds(n as f64, rate) * 5 / 2);
}

#[test]
fn n_connections_run_at_n_caps() {
    let rate = 4e6;
    let n = 2_000_000;
    let shaper =
        Shaper::start(server(), Shape::new().delay(5 * MS).rate(Some(rate as u64))).unwrap();
    let took = parallel_gets(&shaper, 4, n);
    // One at a time would take four times as long as the upper bound.
    let alone = seconds(n as f64, rate);
    within(
        "four connections",
        took,
        seconds(n as f64 - 40_000.0, rate),
        alone * 2,
    );
    assert_eq!(shaper.counters().connections, 4);
}

#[test]
fn the_total_cap_holds_across_connections() {
    let total = 4e6;
    let n = 1_000_000;
    let shaper = Shaper::start(
        server(),
        Shape::new()
            .delay(5 * MS)
            .rate(Some(8_000_000))
            .total_rate(Some(total as u64)),
    )
    .unwrap();
    let took = parallel_gets(&shaper, 4, n);
    let all = 4.0 * n as f64;
    within(
        "four connections, total cap",
        took,
        seconds(all - 40_000.0, total),
        seconds(all, total) * 5 / 2,
    );
}

#[test]
fn the_upload_cap_holds() {
    let rate = 4e6;
    let n = 2_000_000;
    let shaper = Shaper::start(server(), Shape::new().rate_up(Some(rate as u64))).unwrap();
    let mut conn = connect(&shaper);
    let start = Instant::now();
    writeln!(conn, "PUT {n}").unwrap();
    conn.write_all(&vec![1u8; n]).unwrap();
    let mut ok = [0u8; 3];
    conn.read_exact(&mut ok).unwrap();
    assert_eq!(&ok, b"ok\n");
    within(
        "upload",
        start.elapsed(),
        seconds(n as f64 - 40_000.0, rate),
        seconds(n as f64, rate) * 5 / 2,
    );
}

#[test]
fn the_window_bounds_one_connection_to_a_window_per_round_trip() {
    let d = 20 * MS;
    let window = 256 * 1024;
    let n = 4_000_000;
    let shaper = Shaper::start(server(), Shape::new().delay(d).window(Some(window))).unwrap();
    let (_, took) = get(&mut connect(&shaper), n);
    let per_round_trip = window as f64 / (2 * d).as_secs_f64();
    within(
        "windowed",
        took,
        seconds(n as f64 - window as f64, per_round_trip),
        seconds(n as f64, per_round_trip) * 5 / 2 + 4 * d,
    );
}

#[test]
fn uncapped_it_is_far_faster_than_the_rates_it_emulates() {
    // The WAN bench caps connections at tens of MB/s and runs uncapped
    // rows at a few hundred; the proxy must not be what limits them.
    let n = 1 << 30;
    let shaper = Shaper::start(server(), Shape::new()).unwrap();
    let (_, took) = get(&mut connect(&shaper), n);
    let rate = n as f64 / took.as_secs_f64() / 1e6;
    eprintln!("uncapped, no delay: {rate:.0} MB/s");
    assert!(rate >= 200.0, "only {rate:.0} MB/s");
}

#[test]
fn most_open_counts_the_connections_open_at_once() {
    let shaper = Shaper::start(server(), Shape::new()).unwrap();
    let (mut a, mut b) = (connect(&shaper), connect(&shaper));
    get(&mut a, 10);
    get(&mut b, 10);
    assert_eq!(shaper.most_open(), 2);
    drop((a, b));
    // Once both have closed, a third replaces them: still two at most.
    // The server closes its side when it reads the end of the client's.
    thread::sleep(300 * MS);
    get(&mut connect(&shaper), 10);
    assert_eq!(shaper.counters().connections, 3);
    assert_eq!(shaper.most_open(), 2);
}

#[test]
fn counters_count_connections_and_bytes_each_way() {
    let shaper = Shaper::start(server(), Shape::new().delay(2 * MS)).unwrap();
    let before = shaper.counters();
    let mut conn = connect(&shaper);
    get(&mut conn, 1000);
    writeln!(conn, "PUT 500").unwrap();
    conn.write_all(&[0u8; 500]).unwrap();
    let mut ok = [0u8; 3];
    conn.read_exact(&mut ok).unwrap();
    get(&mut connect(&shaper), 10);
    let c = shaper.counters().since(&before);
    assert_eq!(
        c,
        Counters {
            connections: 2,
            to_server: ("GET 1000\n".len() + "PUT 500\n".len() + 500 + "GET 10\n".len()) as u64,
            to_client: 1000 + 3 + 10,
        }
    );
}

#[test]
fn it_forwards_to_loopback_only() {
    let far = SocketAddr::from(([192, 0, 2, 1], 80));
    let err = Shaper::start(far, Shape::new()).unwrap_err();
    assert!(err.to_string().contains("loopback"), "{err:#}");
}

#[test]
fn a_harness_server_behind_it_serves_the_same_bytes() {
    let servers = Servers::start(Which::http_only()).unwrap();
    let body = pymatris_harness::random_bytes(100_000, 3);
    servers.write_file("f.bin", &body);
    let shaper = servers
        .shaped(servers.http_port(), Shape::new().delay(5 * MS))
        .unwrap();
    let mut conn = connect(&shaper);
    write!(
        conn,
        "GET /f.bin HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
    )
    .unwrap();
    let mut response = Vec::new();
    conn.read_to_end(&mut response).unwrap();
    assert!(response.ends_with(&body), "the body came through changed");
    let c = shaper.counters();
    assert_eq!(c.connections, 1);
    assert_eq!(c.to_client, response.len() as u64);
}
