//! HTTP/2 against nginx's TLS server (which offers it by ALPN): small
//! files share one connection, the parts of a large file keep to HTTP/1.1
//! connections of their own, `--http1.1` never offers HTTP/2, and ranges
//! and errors behave as over HTTP/1.1. nginx's access log tells which
//! version carried each request; the harness's shaping proxy, used here
//! only to count, tells how many connections were opened.

use pymatris_harness::{Servers, Shape, Shaper, Which};
use pymatris_tests::run_pymatris;

fn nginx() -> Servers {
    Servers::start(Which::http_only()).expect("start nginx (apt-get install nginx-light)")
}

/// `servers`' https:// URL of `rel`, through `shaper`.
fn via(servers: &Servers, shaper: &Shaper, rel: &str) -> String {
    servers.https_url(rel).replace(
        &format!(":{}/", servers.https_port()),
        &format!(":{}/", shaper.port()),
    )
}

/// The access log's request lines for paths under `/dir/`, as
/// `(version, status)`.
fn requests(servers: &Servers, dir: &str) -> Vec<(String, String)> {
    let log = std::fs::read_to_string(servers.root_dir().join("nginx/access.log")).unwrap();
    log.lines()
        .filter_map(|line| {
            let (_, rest) = line.split_once('"')?;
            let (request, after) = rest.split_once('"')?;
            let mut words = request.split(' ');
            let (_, path, version) = (words.next()?, words.next()?, words.next()?);
            path.starts_with(&format!("/{dir}/")).then(|| {
                let status = after.split_whitespace().next().unwrap_or("");
                (version.to_owned(), status.to_owned())
            })
        })
        .collect()
}

/// Runs the CLI on `urls` (trusting the harness's CA) with `flags`;
/// returns its stderr and exit status.
fn run(servers: &Servers, out: &std::path::Path, urls: &[String], flags: &[&str]) -> (String, i32) {
    let ca = servers.ca_cert().to_str().unwrap().to_owned();
    let mut args: Vec<String> = vec!["--quiet".into(), "--ca-cert".into(), ca, "--dir".into()];
    args.push(out.to_str().unwrap().to_owned());
    args.extend(flags.iter().map(|f| (*f).to_owned()));
    args.extend(urls.iter().cloned());
    let output = run_pymatris(&args);
    let err = String::from_utf8_lossy(&output.stderr).into_owned();
    (err, output.status.code().unwrap_or(-1))
}

fn small_files(servers: &Servers, shaper: &Shaper, dir: &str) -> Vec<String> {
    (0..40)
        .map(|i| {
            let rel = format!("{dir}/{i:02}.bin");
            servers.write_random(&rel, 16 << 10, i);
            via(servers, shaper, &rel)
        })
        .collect()
}

#[test]
fn small_files_share_an_http2_connection() {
    let servers = nginx();
    let shaper = servers.shaped(servers.https_port(), Shape::new()).unwrap();
    let urls = small_files(&servers, &shaper, "s");
    let out = tempfile::tempdir().unwrap();
    let (err, code) = run(&servers, out.path(), &urls, &[]);
    assert_eq!(code, 0, "{err}");
    for i in 0..40 {
        let rel = format!("s/{i:02}.bin");
        assert_eq!(
            std::fs::read(servers.data_dir().join(&rel)).unwrap(),
            std::fs::read(out.path().join(format!("{i:02}.bin"))).unwrap(),
            "{rel}"
        );
    }
    let log = requests(&servers, "s");
    assert_eq!(log.len(), 40, "{log:?}");
    assert!(log.iter().all(|(v, _)| v == "HTTP/2.0"), "{log:?}");
    // Five files at once, eight streams a connection: one connection.
    let conns = shaper.counters().connections;
    assert!(conns <= 2, "{conns} connections for 40 small files");
}

#[test]
fn http1_1_never_offers_http2() {
    let servers = nginx();
    let shaper = servers.shaped(servers.https_port(), Shape::new()).unwrap();
    let urls = small_files(&servers, &shaper, "o");
    let out = tempfile::tempdir().unwrap();
    let (err, code) = run(&servers, out.path(), &urls, &["--http1.1"]);
    assert_eq!(code, 0, "{err}");
    let log = requests(&servers, "o");
    assert_eq!(log.len(), 40, "{log:?}");
    assert!(log.iter().all(|(v, _)| v == "HTTP/1.1"), "{log:?}");
    assert!(shaper.counters().connections >= 5);
}

#[test]
fn a_large_file_starts_on_http2_and_its_parts_keep_to_http1() {
    let servers = nginx();
    let src = servers.write_random("l/big.bin", 24 << 20, 9);
    let shaper = servers.shaped(servers.https_port(), Shape::new()).unwrap();
    let out = tempfile::tempdir().unwrap();
    let url = via(&servers, &shaper, "l/big.bin");
    let (err, code) = run(&servers, out.path(), &[url], &[]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(
        std::fs::read(&src).unwrap(),
        std::fs::read(out.path().join("big.bin")).unwrap()
    );
    let log = requests(&servers, "l");
    // The first request (from byte 0) over HTTP/2, the parts over
    // HTTP/1.1, every answer a 206.
    assert_eq!(log[0].0, "HTTP/2.0", "{log:?}");
    assert!(log.len() > 1, "{log:?}");
    assert!(log[1..].iter().all(|(v, _)| v == "HTTP/1.1"), "{log:?}");
    assert!(log.iter().all(|(_, status)| status == "206"), "{log:?}");
}

#[test]
fn errors_read_the_same_over_http2() {
    let servers = nginx();
    servers.write_file("e/here.txt", b"here");
    let shaper = servers.shaped(servers.https_port(), Shape::new()).unwrap();
    let urls = [
        via(&servers, &shaper, "e/missing.txt"),
        via(&servers, &shaper, "e/here.txt"),
    ];
    let messages: Vec<String> = [&[][..], &["--http1.1"][..]]
        .iter()
        .map(|flags| {
            let out = tempfile::tempdir().unwrap();
            let (err, code) = run(&servers, out.path(), &urls, flags);
            assert_eq!(code, 1, "{err}");
            assert_eq!(std::fs::read(out.path().join("here.txt")).unwrap(), b"here");
            err
        })
        .collect();
    assert!(messages[0].contains("404"), "{}", messages[0]);
    assert_eq!(messages[0], messages[1]);
    let log = requests(&servers, "e");
    let versions: Vec<&str> = log.iter().map(|(v, _)| v.as_str()).collect();
    assert!(versions.contains(&"HTTP/2.0") && versions.contains(&"HTTP/1.1"));
}
