//! SOCKS5 proxies (`--proxy socks5://`, `socks5h://`, `ALL_PROXY`) for
//! HTTP, FTP (control and data connections) and SFTP, through a real
//! SOCKS5 server: Debian's microsocks on loopback, whose log line per
//! connection ("connected to ADDR:PORT") proves the traffic went through
//! it. For `socks5h`, the proxy runs in a mount namespace of its own with a
//! hosts file that alone knows the test's host name: the download can only
//! succeed if the name is resolved on the proxy's side.

use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::time::{Duration, Instant};

use pymatris_harness::{Servers, Which};
use pymatris_tests::fault_server::{FaultServer, Route};
use pymatris_tests::{list_dir, pymatris_bin, random_bytes, sha256_hex};

const MIB: usize = 1 << 20;
const USER: &str = "proxyuser";
const PASSWORD: &str = "Pr0xy-s3cret";
/// A name only the proxy's hosts file knows.
const PROXY_ONLY_NAME: &str = "pymatris-socks-only.test";

/// A microsocks process on loopback, killed on drop.
struct Socks {
    child: Child,
    port: u16,
    log: PathBuf,
    _dir: tempfile::TempDir,
}

impl Socks {
    /// Starts microsocks with the test's user and password, in a mount
    /// namespace where `PROXY_ONLY_NAME` is 127.0.0.1.
    fn start() -> Socks {
        let dir = tempfile::tempdir().unwrap();
        let port = free_port();
        let hosts = dir.path().join("hosts");
        let mut text = std::fs::read_to_string("/etc/hosts").unwrap_or_default();
        assert!(!text.contains(PROXY_ONLY_NAME));
        text.push_str(&format!("\n127.0.0.1 {PROXY_ONLY_NAME}\n"));
        std::fs::write(&hosts, text).unwrap();
        let log = dir.path().join("socks.log");
        let script = format!(
            "mount --bind {} /etc/hosts && exec microsocks -i 127.0.0.1 -p {port} -u {USER} -P {PASSWORD}",
            hosts.display()
        );
        let child = Command::new("unshare")
            .args(["--mount", "--propagation", "private", "sh", "-c", &script])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(std::fs::File::create(&log).unwrap())
            .spawn()
            .expect("unshare and microsocks (cargo xtask deps)");
        let socks = Socks {
            child,
            port,
            log,
            _dir: dir,
        };
        let deadline = Instant::now() + Duration::from_secs(10);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "microsocks did not start: {}",
                socks.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        socks
    }

    fn url(&self, scheme: &str) -> String {
        format!("{scheme}://{USER}:{PASSWORD}@127.0.0.1:{}", self.port)
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }

    /// The destinations of the connections the proxy made, as the client
    /// named them (a name, for socks5h) and the proxy logged them.
    fn destinations(&self) -> Vec<String> {
        self.log_text()
            .lines()
            .filter_map(|l| l.split("connected to ").nth(1))
            .map(|a| a.trim().to_owned())
            .collect()
    }
}

impl Drop for Socks {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn run(args: &[&str], env: &[(&str, String)], home: &Path) -> Output {
    let mut cmd = Command::new(pymatris_bin());
    for (name, _) in std::env::vars_os() {
        let name = name.to_string_lossy().into_owned();
        if name.starts_with("PYMATRIS_") || name.to_lowercase().ends_with("_proxy") {
            cmd.env_remove(&name);
        }
    }
    cmd.env("PYMATRIS_NO_CONFIG", "1")
        .env("HOME", home)
        .env_remove("SSH_AUTH_SOCK")
        .envs(env.iter().map(|(k, v)| (k, v)))
        .args(args)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

#[test]
fn http_through_socks5h_resolves_names_on_the_proxy() {
    let socks = Socks::start();
    let body = random_bytes(3 * MIB, 31);
    let server = FaultServer::start([("/f.bin", Route::new(body.clone()))]);
    let port = server.addr().port();
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let dir = out.path().to_str().unwrap();
    let url = format!("http://{PROXY_ONLY_NAME}:{port}/f.bin");
    let proxy = socks.url("socks5h");
    let args = [
        "--proxy",
        &proxy,
        "--dir",
        dir,
        "--max-splits",
        "3",
        "--min-split-size",
        "1M",
        &url,
    ];
    let result = run(&args, &[], home.path());
    assert!(
        result.status.success(),
        "{}\n{}",
        text(&result),
        socks.log_text()
    );
    assert_eq!(std::fs::read(out.path().join("f.bin")).unwrap(), body);
    // The proxy got the name, not an address.
    let named = format!("{PROXY_ONLY_NAME}:{port}");
    let through = socks.destinations().iter().filter(|a| **a == named).count();
    assert!(through >= 1, "{}", socks.log_text());
    assert_eq!(
        through,
        server.connections(),
        "every connection went through the proxy"
    );
    assert!(!text(&result).contains(PASSWORD));

    // ALL_PROXY, with socks5 (names resolved here): the same, without
    // --proxy.
    let before = socks.destinations().len();
    let addr = format!("127.0.0.1:{port}");
    let out2 = tempfile::tempdir().unwrap();
    let url = server.url("/f.bin");
    let args = ["--dir", out2.path().to_str().unwrap(), &url];
    let result = run(&args, &[("ALL_PROXY", socks.url("socks5"))], home.path());
    assert!(result.status.success(), "{}", text(&result));
    assert_eq!(list_dir(out2.path()), ["f.bin"]);
    assert!(
        socks.destinations()[before..].contains(&addr),
        "{}",
        socks.log_text()
    );

    // A wrong password: a failure whose message names the proxy but not
    // the password.
    let wrong = format!("socks5h://{USER}:wrong-{PASSWORD}@127.0.0.1:{}", socks.port);
    let args = [
        "--proxy",
        &wrong,
        "--max-tries",
        "1",
        "--show-errors",
        "--json",
        &url,
    ];
    let result = run(&args, &[], home.path());
    assert_eq!(result.status.code(), Some(1), "{}", text(&result));
    assert!(
        text(&result).contains(&format!("127.0.0.1:{}", socks.port)),
        "{}",
        text(&result)
    );
    assert!(!text(&result).contains(PASSWORD), "{}", text(&result));
}

#[test]
fn ftp_control_and_data_connections_go_through_the_proxy() {
    let socks = Socks::start();
    let servers = Servers::start(Which::ftp_only()).expect("start vsftpd");
    let body = std::fs::read(servers.write_random("s/ftp.bin", 4 << 20, 32)).unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let proxy = socks.url("socks5");
    let url = servers.ftp_url("s/ftp.bin");
    let args = [
        "--proxy",
        &proxy,
        "--dir",
        out.path().to_str().unwrap(),
        "--max-splits",
        "2",
        "--min-split-size",
        "1M",
        &url,
    ];
    let result = run(&args, &[], home.path());
    assert!(
        result.status.success(),
        "{}\n{}",
        text(&result),
        socks.log_text()
    );
    let got = std::fs::read(out.path().join("ftp.bin")).unwrap();
    assert_eq!(sha256_hex(&got), sha256_hex(&body));
    let ftp_port = servers.ftp_port();
    let dests: Vec<SocketAddr> = (socks.destinations().iter())
        .map(|a| a.parse().unwrap())
        .collect();
    assert!(
        dests.iter().any(|a| a.port() == ftp_port),
        "no control connection: {dests:?}"
    );
    assert!(
        dests
            .iter()
            .any(|a| a.port() != ftp_port && a.ip().is_loopback()),
        "no data connection: {dests:?}"
    );
    assert!(!text(&result).contains(PASSWORD));
}

#[test]
fn sftp_goes_through_the_proxy() {
    let socks = Socks::start();
    let servers = Servers::start(Which::sftp_only()).expect("start sshd");
    let body = std::fs::read(servers.write_random("s/sftp.bin", 2 << 20, 33)).unwrap();
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let proxy = socks.url("socks5h");
    let url = servers.sftp_url("s/sftp.bin");
    let key = servers.ssh_client_key().to_str().unwrap();
    let kh = servers.ssh_known_hosts().to_str().unwrap();
    let args = [
        "--proxy",
        &proxy,
        "--identity",
        key,
        "--known-hosts",
        kh,
        "--dir",
        out.path().to_str().unwrap(),
        &url,
    ];
    let result = run(&args, &[], home.path());
    assert!(
        result.status.success(),
        "{}\n{}",
        text(&result),
        socks.log_text()
    );
    assert_eq!(std::fs::read(out.path().join("sftp.bin")).unwrap(), body);
    let ssh = format!("127.0.0.1:{}", servers.sftp_port());
    assert!(socks.destinations().contains(&ssh), "{}", socks.log_text());
}

/// The JSON failures of a run, each as (url, kind, retryable, error).
fn failures(out: &Output) -> Vec<(String, String, bool, String)> {
    let json: serde_json::Value =
        serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{e}: {}", text(out)));
    let errors = json["errors"].as_array().expect("errors").iter();
    errors
        .map(|e| {
            (
                e["url"].as_str().unwrap().to_owned(),
                e["kind"].as_str().unwrap().to_owned(),
                e["retryable"].as_bool().unwrap(),
                e["error"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

/// URLs of the three protocols whose servers are never reached: the proxy
/// answers first.
fn unreached_urls() -> Vec<String> {
    let port = free_port();
    ["http", "ftp", "sftp"]
        .iter()
        .map(|scheme| format!("{scheme}://127.0.0.1:{port}/f.bin"))
        .collect()
}

#[test]
fn a_refused_proxy_login_fails_at_once_naming_the_proxy() {
    let socks = Socks::start();
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let urls = unreached_urls();
    let bad = format!("wrong-{PASSWORD}");
    let wrong = format!("socks5h://{USER}:{bad}@127.0.0.1:{}", socks.port);
    let shown = format!("socks5h://{USER}:***@127.0.0.1:{}", socks.port);
    let dir = out.path().to_str().unwrap();
    let mut args = vec!["--proxy", &wrong, "--max-tries", "4", "--json", "--verbose"];
    args.extend(["--dir", dir]);
    args.extend(urls.iter().map(String::as_str));
    let result = run(&args, &[], home.path());
    assert_eq!(result.status.code(), Some(1), "{}", text(&result));
    let failed = failures(&result);
    assert_eq!(failed.len(), urls.len(), "{}", text(&result));
    for (url, kind, retryable, error) in &failed {
        assert!(urls.contains(url), "{url}");
        assert_eq!((kind.as_str(), *retryable), ("Auth", false), "{error}");
        assert!(error.contains(&shown), "{error}");
        assert!(
            error.contains("refused the user name and password"),
            "{error}"
        );
    }
    // Not retried: no second attempt was ever scheduled.
    assert!(!text(&result).contains("retrying"), "{}", text(&result));
    assert!(!text(&result).contains(&bad), "{}", text(&result));
    assert!(list_dir(out.path()).is_empty());

    // No login at all, to a proxy that wants one: said so, not retried.
    let bare = format!("socks5://127.0.0.1:{}", socks.port);
    let args = ["--proxy", &bare, "--max-tries", "4", "--json", &urls[0]];
    let result = run(&args, &[], home.path());
    let failed = failures(&result);
    let (_, kind, retryable, error) = &failed[0];
    assert_eq!((kind.as_str(), *retryable), ("Auth", false), "{error}");
    assert!(error.contains("wants a login"), "{error}");
}

#[test]
fn a_proxy_that_is_not_listening_is_named_in_the_error() {
    let home = tempfile::tempdir().unwrap();
    let out = tempfile::tempdir().unwrap();
    let port = free_port();
    let proxy = format!("socks5://{USER}:{PASSWORD}@127.0.0.1:{port}");
    let shown = format!("connecting to the SOCKS proxy socks5://{USER}:***@127.0.0.1:{port}");
    let urls = unreached_urls();
    let dir = out.path().to_str().unwrap();
    let mut args = vec!["--proxy", &proxy, "--max-tries", "1", "--json"];
    args.extend(["--dir", dir]);
    args.extend(urls.iter().map(String::as_str));
    let result = run(&args, &[], home.path());
    assert_eq!(result.status.code(), Some(1), "{}", text(&result));
    let failed = failures(&result);
    assert_eq!(failed.len(), urls.len(), "{}", text(&result));
    for (url, kind, _, error) in &failed {
        assert!(urls.contains(url), "{url}");
        // A proxy that is down may come back: a network failure, retried
        // like any refused connection.
        assert_eq!(kind, "Network", "{error}");
        assert!(error.contains(&shown), "{error}");
        assert!(error.contains("refused"), "{error}");
    }
    assert!(!text(&result).contains(PASSWORD), "{}", text(&result));
    assert!(list_dir(out.path()).is_empty());
}
