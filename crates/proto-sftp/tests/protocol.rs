//! The `Protocol` of this crate against the harness's sshd, without the
//! engine: what `stat` and `fetch` return for ranges, validators,
//! directories and paths relative to the login directory.

#![allow(missing_docs)]

use bytes::Bytes;
use futures_util::StreamExt;
use pymatris_core::{ByteRange, ErrorKind, Fetched, Protocol, ProtocolConfig, Url, Validator};
use pymatris_harness::{Servers, Which};
use pymatris_proto_sftp::{SftpOptions, SftpProtocol};

fn protocol(servers: &Servers) -> SftpProtocol {
    let mut cfg = ProtocolConfig::default();
    cfg.set(
        SftpOptions::default()
            .identity(Some(servers.ssh_client_key().to_owned()))
            .known_hosts(Some(servers.ssh_known_hosts().to_owned())),
    );
    SftpProtocol::new(&cfg).unwrap()
}

async fn body(fetched: Fetched) -> Vec<u8> {
    let chunks: Vec<Bytes> = fetched.body.map(|c| c.expect("a chunk")).collect().await;
    chunks.concat()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stat_and_ranges() {
    let servers = Servers::start(Which::sftp_only()).unwrap();
    let data = std::fs::read(servers.write_random("r.bin", 3 << 20, 4)).unwrap();
    let p = protocol(&servers);
    let url = Url::parse(&servers.sftp_url("r.bin")).unwrap();

    let meta = p.stat(&url).await.unwrap();
    assert_eq!(meta.size, Some(3 << 20));
    assert!(meta.ranges);
    let mtime = meta.validator.modified.clone().expect("an mtime");
    assert!(mtime.parse::<u64>().is_ok(), "{mtime}");

    // The whole file, then ranges: exactly their bytes, none past the end.
    let whole = p.fetch(&url, ByteRange::from(0), None).await.unwrap();
    assert_eq!(whole.offset, 0);
    assert_eq!(whole.meta.size, Some(3 << 20));
    assert_eq!(body(whole).await, data);
    for (a, b) in [(0, 1), (100, 300_000), (1 << 20, 3 << 20), (5, 5)] {
        let part = p
            .fetch(&url, ByteRange::new(a, b), Some(&meta.validator))
            .await
            .unwrap();
        assert_eq!(part.offset, a);
        assert_eq!(body(part).await, &data[a as usize..b as usize], "{a}..{b}");
    }
    // From an offset to the end.
    let tail = p
        .fetch(&url, ByteRange::from(3_000_000), None)
        .await
        .unwrap();
    assert_eq!(body(tail).await, &data[3_000_000..]);

    // Another version of the file is refused, not mixed in.
    let stale = Validator {
        etag: None,
        modified: Some("1".into()),
    };
    let err = p
        .fetch(&url, ByteRange::new(10, 20), Some(&stale))
        .await
        .unwrap_err();
    assert_eq!(err.kind(), ErrorKind::Changed);
    assert!(!err.is_retryable());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn directories_and_missing_files_are_not_found() {
    let servers = Servers::start(Which::sftp_only()).unwrap();
    servers.write_file("dir/inside.txt", b"x");
    let p = protocol(&servers);
    for rel in ["dir", "dir/missing.txt"] {
        let url = Url::parse(&servers.sftp_url(rel)).unwrap();
        let err = p.fetch(&url, ByteRange::from(0), None).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{rel}: {err}");
        assert!(!err.is_retryable());
        let err = p.stat(&url).await.unwrap_err();
        assert_eq!(err.kind(), ErrorKind::NotFound, "{rel}: {err}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_concurrent_fetches_share_the_session() {
    let servers = Servers::start(Which::sftp_only()).unwrap();
    let mut expected = Vec::new();
    for i in 0..64u64 {
        let bytes = format!("file number {i}\n").repeat(i as usize * 50);
        servers.write_file(&format!("c/{i}.txt"), bytes.as_bytes());
        expected.push(bytes.into_bytes());
    }
    let p = std::sync::Arc::new(protocol(&servers));
    let mut tasks = Vec::new();
    for i in 0..64u64 {
        let p = p.clone();
        let url = Url::parse(&servers.sftp_url(&format!("c/{i}.txt"))).unwrap();
        tasks.push(tokio::spawn(async move {
            body(p.fetch(&url, ByteRange::from(0), None).await.unwrap()).await
        }));
    }
    for (i, task) in tasks.into_iter().enumerate() {
        assert_eq!(task.await.unwrap(), expected[i], "file {i}");
    }
    let log = std::fs::read_to_string(servers.root_dir().join("sshd/sshd.log")).unwrap();
    assert_eq!(log.matches("Accepted publickey").count(), 1, "{log}");
}

/// The engine's per-host limit counts `sftp://h/` and `sftp://h:22/` as
/// one host only if the protocol says its port (the `url` crate knows
/// none for `sftp`).
#[test]
fn says_its_default_port() {
    let sftp = SftpProtocol::new(&ProtocolConfig::default()).unwrap();
    assert_eq!(sftp.default_port("sftp"), Some(22));
}
