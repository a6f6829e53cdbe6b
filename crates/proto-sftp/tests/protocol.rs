//! The `Protocol` of this crate against the harness's sshd, without the
//! engine: what `stat` and `fetch` return for ranges, validators,
//! directories and paths relative to the login directory.

#![allow(missing_docs)]

use bytes::Bytes;
use futures_util::StreamExt;
use std::time::Duration;

use pymatris_core::camino::Utf8Path;
use pymatris_core::{
    ByteRange, Config, Downloader, ErrorKind, Fetched, Protocol, ProtocolConfig, Url, Validator,
};
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

    // A stale validator: the protocol reports the version it found, and
    // the engine decides (`a_file_touched_between_parts_fails_as_changed`).
    let stale = Validator {
        etag: None,
        modified: Some("1".into()),
    };
    let found = p
        .fetch(&url, ByteRange::new(10, 20), Some(&stale))
        .await
        .unwrap();
    assert_eq!(found.meta.validator, meta.validator);
    assert_eq!(body(found).await, &data[10..20]);
}

/// The path that [`Touching`] gives another modification time.
#[derive(Debug)]
struct TouchAfterFirst(std::path::PathBuf);

/// This crate's protocol, with the served file given another modification
/// time once the first transfer has started (and that transfer slowed, so
/// that the engine asks for more parts): the bytes stay the same, the
/// version does not.
#[derive(Debug)]
struct Touching {
    sftp: SftpProtocol,
    path: std::path::PathBuf,
    fetches: std::sync::atomic::AtomicUsize,
}

#[async_trait::async_trait]
impl Protocol for Touching {
    async fn stat(&self, url: &Url) -> pymatris_core::Result<pymatris_core::RemoteMeta> {
        self.sftp.stat(url).await
    }

    async fn fetch(
        &self,
        url: &Url,
        range: ByteRange,
        validator: Option<&Validator>,
    ) -> pymatris_core::Result<Fetched> {
        let n = (self.fetches).fetch_add(1, std::sync::atomic::Ordering::SeqCst);
        if n == 1 {
            let earlier = std::time::SystemTime::UNIX_EPOCH + Duration::from_secs(1_000_000_000);
            let file = std::fs::File::options()
                .write(true)
                .open(&self.path)
                .unwrap();
            file.set_modified(earlier).unwrap();
        }
        let mut fetched = self.sftp.fetch(url, range, validator).await?;
        if n == 0 {
            fetched.body = Box::pin(fetched.body.then(|chunk| async {
                tokio::time::sleep(Duration::from_millis(20)).await;
                chunk
            }));
        }
        Ok(fetched)
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_file_touched_between_parts_fails_as_changed() {
    let servers = Servers::start(Which::sftp_only()).unwrap();
    let path = servers.write_random("moving.bin", 4 << 20, 5);
    let tmp = tempfile::tempdir().unwrap();
    let dir = Utf8Path::from_path(tmp.path()).unwrap();
    let config = Config::default()
        .max_splits(4)
        .min_split_size(64 * 1024)
        .max_tries(1)
        .with(
            SftpOptions::default()
                .identity(Some(servers.ssh_client_key().to_owned()))
                .known_hosts(Some(servers.ssh_known_hosts().to_owned())),
        )
        .with(TouchAfterFirst(path));
    let plugin = pymatris_core::ProtocolPlugin {
        schemes: &["sftp"],
        build: |cfg| {
            let path = cfg.get::<TouchAfterFirst>().unwrap().0.clone();
            Ok(std::sync::Arc::new(Touching {
                sftp: SftpProtocol::new(cfg)?,
                path,
                fetches: Default::default(),
            }))
        },
    };
    let mut dl = Downloader::builder(config).protocol(plugin).build();
    dl.enqueue_file(&servers.sftp_url("moving.bin"), dir);
    let results = dl.download().await;
    assert!(results.success.is_empty(), "{results}");
    let failed = &results.errors[0];
    assert_eq!(failed.error.kind(), ErrorKind::Changed, "{}", failed.error);
    assert!(!failed.error.is_retryable());
    assert_eq!(std::fs::read_dir(dir).unwrap().count(), 0);
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
