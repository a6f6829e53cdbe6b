//! A part of an FTP download cut while it runs stops near its new end:
//! `REST` + `RETR` has no end, so the engine tells the transfer where its
//! part now ends, and the transfer shrinks its receive window in time and
//! closes its data connection there. Counted on the wire (nftables, the
//! harness's `WireMeter`) against a real vsftpd, with the cuts forced: a
//! planted `--continue` state of one short and one long part, under a
//! bandwidth cap, so that the short part's connection is idle early and
//! takes the back half of the long one, far from done.

use pymatris_harness::{Server, Servers, Which, WireMeter, random_bytes};
use pymatris_tests::{list_dir, run_pymatris, sha256_hex};

const MIB: u64 = 1024 * 1024;

#[test]
fn a_part_cut_while_it_runs_stops_near_its_new_end() {
    const SIZE: u64 = 48 * MIB;
    let s = Servers::start(Which::ftp_only()).expect("starting vsftpd");
    let source = random_bytes(SIZE as usize, 41);
    s.write_file("cut.bin", &source);
    let out = tempfile::tempdir().unwrap();
    let part = out.path().join("cut.bin.pymatris-part");
    std::fs::File::create(&part).unwrap().set_len(SIZE).unwrap();
    let state = serde_json::json!({
        "url": "planted by the test",
        "size": SIZE,
        "validator": {"etag": null, "modified": null},
        "spans": [[0, 0, 2 * MIB], [2 * MIB, 2 * MIB, SIZE]],
    });
    std::fs::write(
        out.path().join("cut.bin.pymatris-part.state"),
        state.to_string(),
    )
    .unwrap();
    let (lo, hi) = s.wire_ports(Server::Vsftpd).unwrap();
    let meter = WireMeter::ports(lo, hi).expect("count the data ports with nft (see .ci/run)");
    let run = run_pymatris([
        "--quiet",
        "-c",
        "--max-speed",
        "12M",
        "--dir",
        out.path().to_str().unwrap(),
        &s.ftp_url("cut.bin"),
    ]);
    assert_eq!(run.status.code(), Some(0), "{run:?}");
    assert_eq!(list_dir(out.path()), ["cut.bin"]);
    let got = std::fs::read(out.path().join("cut.bin")).unwrap();
    assert_eq!(sha256_hex(&got), sha256_hex(&source));
    // vsftpd logs a transfer once it answered for it.
    std::thread::sleep(std::time::Duration::from_millis(300));
    let log = std::fs::read_to_string(s.root_dir().join("vsftpd/vsftpd.log")).unwrap();
    let transfers = log.matches("DOWNLOAD: Client").count();
    assert!(
        transfers >= 3,
        "no part was cut: {transfers} transfers\n{log}"
    );
    // The last window of each transfer that ends before the file does
    // (two segments at least, 64 KiB each on loopback), and what a
    // bandwidth cap costs besides on loopback (segments sent again after
    // the full receive buffer dropped them): the same bound as the
    // resume-cost tests (`conformance.rs`). A window that reached past
    // the new end when the cut came would waste itself (megabytes).
    const SLACK: u64 = 64 << 10;
    let wire = meter.bytes().unwrap();
    assert!(
        wire <= SIZE + SIZE / 20 + SLACK,
        "vsftpd sent {wire} bytes ({:.3}x) for a file of {SIZE} in {transfers} transfers",
        wire as f64 / SIZE as f64
    );
    #[allow(clippy::print_stderr)]
    {
        eprintln!(
            "{transfers} transfers, {:.4}x the file on the wire",
            wire as f64 / SIZE as f64
        );
    }
}
