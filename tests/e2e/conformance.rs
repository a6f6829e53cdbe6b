//! The cases every protocol must pass alike, run over the same files on
//! nginx (HTTP and HTTPS), vsftpd (FTP) and OpenSSH's sshd (SFTP), all
//! started together by the harness: whole files, parts, a zero-byte file,
//! a missing file, bad credentials, many small files, and a resume that
//! fetches only what is missing.

use std::path::Path;
use std::process::{Command, Output, Stdio};

use pymatris_harness::{Servers, Which};
use pymatris_tests::{list_dir, pymatris_bin, random_bytes};
use serde_json::Value;

#[derive(Debug, Clone, Copy)]
enum Proto {
    Http,
    Https,
    Ftp,
    Sftp,
}

const ALL: [Proto; 4] = [Proto::Http, Proto::Https, Proto::Ftp, Proto::Sftp];

impl Proto {
    fn url(self, servers: &Servers, rel: &str) -> String {
        match self {
            Proto::Http => servers.http_url(rel),
            Proto::Https => servers.https_url(rel),
            Proto::Ftp => servers.ftp_url(rel),
            Proto::Sftp => servers.sftp_url(rel),
        }
    }
}

fn servers() -> Servers {
    Servers::start(Which::all()).expect("start nginx, vsftpd and sshd (see .ci/run)")
}

/// `pymatris --json` with what every protocol needs to trust the servers,
/// an empty HOME and no ssh-agent.
fn pymatris(servers: &Servers, home: &Path, args: &[&str]) -> (Output, Value) {
    let out = Command::new(pymatris_bin())
        .arg("--json")
        .arg("--ca-cert")
        .arg(servers.ca_cert())
        .arg("--identity")
        .arg(servers.ssh_client_key())
        .arg("--known-hosts")
        .arg(servers.ssh_known_hosts())
        .args(args)
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .stdin(Stdio::null())
        .output()
        .expect("run pymatris");
    let json = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "--json: {e}; stderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out, json)
}

fn error_kinds(json: &Value) -> Vec<String> {
    json["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["kind"].as_str().unwrap().to_owned())
        .collect()
}

#[test]
fn whole_files_parts_and_empty_files_on_every_protocol() {
    let servers = servers();
    let big = random_bytes(3 << 20, 21);
    let small = random_bytes(1000, 22);
    servers.write_file("c/big.bin", &big);
    servers.write_file("c/small.bin", &small);
    servers.write_file("c/empty.bin", b"");
    for proto in ALL {
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        let urls: Vec<String> = ["c/big.bin", "c/small.bin", "c/empty.bin"]
            .iter()
            .map(|r| proto.url(&servers, r))
            .collect();
        let mut args = vec![
            "--dir",
            out.to_str().unwrap(),
            "--max-splits",
            "4",
            "--min-split-size",
            "512K",
        ];
        args.extend(urls.iter().map(String::as_str));
        let (run, json) = pymatris(&servers, home.path(), &args);
        assert_eq!(run.status.code(), Some(0), "{proto:?}: {json:#}");
        assert_eq!(
            list_dir(&out),
            ["big.bin", "empty.bin", "small.bin"],
            "{proto:?}"
        );
        assert!(
            std::fs::read(out.join("big.bin")).unwrap() == big,
            "{proto:?}: big.bin differs"
        );
        assert_eq!(
            std::fs::read(out.join("small.bin")).unwrap(),
            small,
            "{proto:?}"
        );
        assert!(
            std::fs::read(out.join("empty.bin")).unwrap().is_empty(),
            "{proto:?}"
        );
    }
}

#[test]
fn a_missing_file_is_not_found_on_every_protocol() {
    let servers = servers();
    for proto in ALL {
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        let url = proto.url(&servers, "c/no-such-file.bin");
        let (run, json) = pymatris(
            &servers,
            home.path(),
            &["--dir", out.to_str().unwrap(), &url],
        );
        assert_eq!(run.status.code(), Some(1), "{proto:?}");
        assert_eq!(error_kinds(&json), ["NotFound"], "{proto:?}: {json:#}");
        assert!(list_dir(&out).is_empty(), "{proto:?}: {:?}", list_dir(&out));
    }
}

#[test]
fn bad_credentials_fail_as_auth_and_never_show() {
    let servers = servers();
    servers.write_file("c/secret.bin", b"x");
    let bad = |url: String, user: &str, pass: &str| {
        url.replacen(&format!("{user}@"), &format!("{user}:{pass}@"), 1)
    };
    let (ftp_user, ftp_pass) = servers.ftp_user();
    let ftp = servers
        .ftp_url("c/secret.bin")
        .replace(&format!(":{ftp_pass}@"), ":wrong-pw-123@");
    let sftp = bad(
        servers.sftp_url("c/secret.bin"),
        servers.sftp_user(),
        "wrong-pw-123",
    );
    assert!(
        ftp.contains("wrong-pw-123") && ftp.contains(ftp_user) && sftp.contains("wrong-pw-123")
    );
    for url in [ftp, sftp] {
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        // Only the password may log in: the key of the harness is not given.
        let run = Command::new(pymatris_bin())
            .args(["--json", "--max-tries", "3", "--known-hosts"])
            .arg(servers.ssh_known_hosts())
            .args(["--dir", out.to_str().unwrap(), &url])
            .env("HOME", home.path())
            .env_remove("SSH_AUTH_SOCK")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let json: Value = serde_json::from_slice(&run.stdout).unwrap();
        assert_eq!(run.status.code(), Some(1), "{url}");
        assert_eq!(error_kinds(&json), ["Auth"], "{json:#}");
        assert_eq!(json["errors"][0]["retryable"], false);
        let all = format!(
            "{}{}",
            String::from_utf8_lossy(&run.stdout),
            String::from_utf8_lossy(&run.stderr)
        );
        assert!(!all.contains("wrong-pw-123"), "the password leaked: {all}");
    }
}

#[test]
fn many_small_files_on_every_protocol() {
    let servers = servers();
    let files: Vec<(String, Vec<u8>)> = (0..60)
        .map(|i| {
            (
                format!("many/f{i:03}.txt"),
                random_bytes(100 + i * 37, i as u64),
            )
        })
        .collect();
    for (rel, bytes) in &files {
        servers.write_file(rel, bytes);
    }
    for proto in ALL {
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        let urls: Vec<String> = files
            .iter()
            .map(|(rel, _)| proto.url(&servers, rel))
            .collect();
        let mut args = vec!["--dir", out.to_str().unwrap(), "--max-parallel", "8"];
        args.extend(urls.iter().map(String::as_str));
        let (run, json) = pymatris(&servers, home.path(), &args);
        assert_eq!(run.status.code(), Some(0), "{proto:?}: {json:#}");
        for (rel, bytes) in &files {
            let name = rel.rsplit('/').next().unwrap();
            assert_eq!(
                &std::fs::read(out.join(name)).unwrap(),
                bytes,
                "{proto:?} {name}"
            );
        }
    }
}

/// A part left by an earlier run is resumed, not fetched again: its first
/// half is planted as zeros, which a resumed download keeps and a restarted
/// one would replace.
#[test]
fn continue_fetches_only_what_is_missing_on_every_protocol() {
    let servers = servers();
    let size = 2 << 20;
    let source = random_bytes(size, 31);
    servers.write_file("c/resume.bin", &source);
    let half = size / 2;
    for proto in ALL {
        let home = tempfile::tempdir().unwrap();
        let out = home.path().join("out");
        std::fs::create_dir_all(&out).unwrap();
        let mut planted = vec![0u8; half];
        planted.resize(size, 0xAA);
        std::fs::write(out.join("resume.bin.pymatris-part"), &planted).unwrap();
        let state = serde_json::json!({
            "url": "planted by the test",
            "size": size,
            "validator": {"etag": null, "modified": null},
            "spans": [[0, half, size]],
        });
        std::fs::write(
            out.join("resume.bin.pymatris-part.state"),
            state.to_string(),
        )
        .unwrap();

        let url = proto.url(&servers, "c/resume.bin");
        let (run, json) = pymatris(
            &servers,
            home.path(),
            &["-c", "--dir", out.to_str().unwrap(), &url],
        );
        assert_eq!(run.status.code(), Some(0), "{proto:?}: {json:#}");
        assert_eq!(list_dir(&out), ["resume.bin"], "{proto:?}");
        let got = std::fs::read(out.join("resume.bin")).unwrap();
        assert!(
            got[..half].iter().all(|&b| b == 0),
            "{proto:?}: the first half was fetched again"
        );
        assert!(
            got[half..] == source[half..],
            "{proto:?}: the rest is not the remote bytes"
        );
    }
}
