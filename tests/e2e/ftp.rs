//! `pymatris` against a real vsftpd on loopback (started by
//! `pymatris-harness`; needs root and Debian's vsftpd): whole files, parts
//! on several connections, a zero-byte file, a missing file, a wrong
//! password, anonymous login, a server that allows two connections per
//! client, and transfers broken mid-way.
//!
//! Logins and connections are counted in vsftpd's own log. The broken
//! transfers go through [`FtpCutter`], a small relay between the client and
//! vsftpd that forwards everything unchanged except that it cuts the first
//! data connection (and, if asked, its control connection) after a set
//! number of bytes: the server is real, the fault is a real broken TCP
//! connection.

use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use pymatris_harness::{Options, PyftpdlibOptions, Server, Servers, Which, random_bytes};
use pymatris_tests::{list_dir, run_pymatris, sha256_hex};
use tokio::io::{AsyncBufReadExt, AsyncReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Notify, Semaphore};

const MIB: u64 = 1024 * 1024;

/// What vsftpd's log says.
#[derive(Debug, Default)]
struct Log {
    connects: usize,
    logins: usize,
    failed_logins: usize,
    /// Transfers, complete or cut.
    downloads: usize,
}

/// Reads the log once vsftpd had time to write it: its session processes
/// log a transfer after they answer for it, so a client may be gone first.
fn log(s: &Servers) -> Log {
    std::thread::sleep(std::time::Duration::from_millis(300));
    let text = std::fs::read_to_string(s.root_dir().join("vsftpd/vsftpd.log")).unwrap_or_default();
    Log {
        connects: text.matches("CONNECT: Client").count(),
        logins: text.matches("OK LOGIN: Client").count(),
        failed_logins: text.matches("FAIL LOGIN: Client").count(),
        downloads: text.matches("DOWNLOAD: Client").count(),
    }
}

fn ftp_servers() -> Servers {
    Servers::start(Which::ftp_only()).expect("starting vsftpd")
}

/// Runs `pymatris --quiet --json --dir DIR ARGS…`; returns the exit code,
/// the JSON results and stderr.
fn pymatris(dir: &Path, args: &[&str]) -> (i32, serde_json::Value, String) {
    let mut all = vec![
        "--quiet",
        "--json",
        "--dir",
        dir.to_str().expect("UTF-8 dir"),
    ];
    all.extend_from_slice(args);
    let out = run_pymatris(&all);
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    let json = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("JSON results ({e}):\n{stdout}\nstderr:\n{stderr}"));
    (out.status.code().unwrap_or(-1), json, stderr)
}

fn assert_success(code: i32, json: &serde_json::Value, stderr: &str) {
    assert_eq!(code, 0, "{json:#}\n{stderr}");
    assert_eq!(json["errors"].as_array().map(Vec::len), Some(0), "{json:#}");
}

fn assert_same(path: &Path, want: &[u8]) {
    let got = std::fs::read(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    assert_eq!(got.len(), want.len(), "{}", path.display());
    assert_eq!(sha256_hex(&got), sha256_hex(want), "{}", path.display());
}

#[test]
fn whole_file_and_anonymous_login() {
    let s = ftp_servers();
    let want = random_bytes(300_000, 1);
    s.write_file("pub/one file.bin", &want);
    let out = tempfile::tempdir().unwrap();

    let (code, json, stderr) = pymatris(out.path(), &[&s.ftp_url("pub/one%20file.bin")]);
    assert_success(code, &json, &stderr);
    assert_same(&out.path().join("one file.bin"), &want);
    let url = json["success"][0]["url"].as_str().unwrap();
    let (_, password) = s.ftp_user();
    assert!(url.contains(":***@") && !url.contains(password), "{url}");

    let anon = tempfile::tempdir().unwrap();
    let (code, json, stderr) = pymatris(anon.path(), &[&s.ftp_anon_url("pub/one%20file.bin")]);
    assert_success(code, &json, &stderr);
    assert_same(&anon.path().join("one file.bin"), &want);
    let text = std::fs::read_to_string(s.root_dir().join("vsftpd/vsftpd.log")).unwrap();
    assert!(text.contains("[ftp] OK LOGIN"), "anonymous login:\n{text}");
}

#[test]
fn parts_use_several_connections() {
    let s = ftp_servers();
    let size = 8 * MIB;
    s.write_random("big.bin", size, 2);
    let out = tempfile::tempdir().unwrap();
    let (code, json, stderr) = pymatris(
        out.path(),
        &[
            "--max-splits",
            "4",
            "--min-split-size",
            "1M",
            &s.ftp_url("big.bin"),
        ],
    );
    assert_success(code, &json, &stderr);
    assert_same(&out.path().join("big.bin"), &random_bytes(size as usize, 2));
    let l = log(&s);
    assert!(
        l.logins >= 2 && l.downloads >= 4,
        "one connection per part: {l:?}"
    );
    assert_eq!(list_dir(out.path()), ["big.bin"]);
}

/// A file that is not cut into parts comes in one transfer: `REST` has no
/// end, so a first transfer bounded like HTTP's first range (two minimum
/// parts) would be cut there and the rest asked for on a new data
/// connection, what the server sent past the cut lost (a third more CPU
/// for 32 x 16 MiB on loopback, W8).
#[test]
fn a_file_not_cut_into_parts_comes_in_one_transfer() {
    let s = ftp_servers();
    let size = 8 * MIB;
    s.write_random("whole.bin", size, 5);
    s.write_random("cut.bin", size, 6);
    let out = tempfile::tempdir().unwrap();
    let (code, json, stderr) = pymatris(
        out.path(),
        &[
            "--max-splits",
            "1",
            "--min-split-size",
            "1M",
            &s.ftp_url("whole.bin"),
        ],
    );
    assert_success(code, &json, &stderr);
    assert_same(
        &out.path().join("whole.bin"),
        &random_bytes(size as usize, 5),
    );
    let before = log(&s);
    assert_eq!(
        before.downloads, 1,
        "one transfer for a file in one part: {before:?}"
    );
    // Cut into parts, each part is one transfer, the first included.
    let (code, json, stderr) = pymatris(
        out.path(),
        &[
            "--max-splits",
            "4",
            "--min-split-size",
            "1M",
            &s.ftp_url("cut.bin"),
        ],
    );
    assert_success(code, &json, &stderr);
    assert_same(&out.path().join("cut.bin"), &random_bytes(size as usize, 6));
    let parts = log(&s).downloads - before.downloads;
    assert!(
        (2..=4).contains(&parts),
        "{parts} transfers for at most 4 parts"
    );
}

#[test]
fn zero_byte_file() {
    let s = ftp_servers();
    s.write_file("empty.dat", b"");
    let out = tempfile::tempdir().unwrap();
    let (code, json, stderr) = pymatris(out.path(), &[&s.ftp_url("empty.dat")]);
    assert_success(code, &json, &stderr);
    assert_same(&out.path().join("empty.dat"), b"");
    assert_eq!(json["success"][0]["size"], 0);
}

#[test]
fn missing_file_is_not_found_and_leaves_nothing() {
    let s = ftp_servers();
    let out = tempfile::tempdir().unwrap();
    let url = s.ftp_url("no/such.bin");
    let (code, json, stderr) = pymatris(out.path(), &["--max-tries", "3", &url]);
    assert_eq!(code, 1, "{json:#}");
    let err = &json["errors"][0];
    assert_eq!(err["kind"], "NotFound", "{err:#}");
    assert_eq!(err["retryable"], false);
    let text = err["error"].as_str().unwrap();
    assert!(
        text.contains("550") && text.contains("no/such.bin"),
        "{text}"
    );
    let (_, password) = s.ftp_user();
    assert!(!stderr.contains(password) && !json.to_string().contains(password));
    assert!(
        stderr.contains("such.bin"),
        "the summary names the URL: {stderr}"
    );
    assert!(
        list_dir(out.path()).is_empty(),
        "{:?}",
        list_dir(out.path())
    );
    // Not retried: one login, one refused RETR (which vsftpd logs as a
    // failed download).
    let l = log(&s);
    assert_eq!((l.logins, l.downloads), (1, 1), "{l:?}");
}

#[test]
fn wrong_password_is_an_auth_error_not_retried() {
    let s = ftp_servers();
    s.write_file("a.txt", b"a\n");
    let out = tempfile::tempdir().unwrap();
    let (user, _) = s.ftp_user();
    let secret = "Wr0ng-pass%21";
    let url = format!("ftp://{user}:{secret}@127.0.0.1:{}/a.txt", s.ftp_port());
    let (code, json, stderr) = pymatris(out.path(), &["--max-tries", "4", &url]);
    assert_eq!(code, 1, "{json:#}");
    let err = &json["errors"][0];
    assert_eq!(err["kind"], "Auth", "{err:#}");
    assert_eq!(err["retryable"], false);
    assert!(err["error"].as_str().unwrap().contains("530"), "{err:#}");
    for hidden in [secret, "Wr0ng-pass!"] {
        assert!(!stderr.contains(hidden), "{stderr}");
        assert!(!json.to_string().contains(hidden), "{json:#}");
    }
    let l = log(&s);
    assert_eq!((l.failed_logins, l.logins), (1, 0), "{l:?}");
    assert!(list_dir(out.path()).is_empty());
}

#[test]
fn server_allowing_two_connections_with_eight_splits() {
    let s = Servers::start_with(
        Which::ftp_only(),
        Options {
            ftp_max_per_ip: Some(2),
            ..Options::default()
        },
    )
    .expect("starting vsftpd");
    let size = 16 * MIB;
    s.write_random("big.bin", size, 3);
    let out = tempfile::tempdir().unwrap();
    let (code, json, stderr) = pymatris(
        out.path(),
        &[
            "--max-splits",
            "8",
            "--min-split-size",
            "1M",
            &s.ftp_url("big.bin"),
        ],
    );
    assert_success(code, &json, &stderr);
    assert_same(&out.path().join("big.bin"), &random_bytes(size as usize, 3));
    let l = log(&s);
    // The refused connections were asked for (vsftpd logs them) but the
    // file went on with the two it had.
    assert!(l.connects > 2 && l.logins >= 1, "{l:?}");
}

#[test]
fn explicit_ftps_needs_the_ca() {
    let s = ftp_servers();
    let size = 3 * MIB;
    s.write_random("tls.bin", size, 5);
    let url = s.ftp_url("tls.bin");
    let ca = s.ca_cert().to_str().unwrap().to_owned();

    let out = tempfile::tempdir().unwrap();
    let (code, json, stderr) = pymatris(
        out.path(),
        &["--ftp-tls", "--ca-cert", &ca, "--max-splits", "3", &url],
    );
    assert_success(code, &json, &stderr);
    assert_same(&out.path().join("tls.bin"), &random_bytes(size as usize, 5));

    let out = tempfile::tempdir().unwrap();
    let (code, json, _) = pymatris(out.path(), &["--ftp-tls", "--max-tries", "3", &url]);
    assert_eq!(code, 1, "{json:#}");
    let err = &json["errors"][0];
    assert_eq!(err["kind"], "Tls", "{err:#}");
    assert_eq!(err["retryable"], false);
    assert!(list_dir(out.path()).is_empty());
}

#[test]
fn many_small_files_with_max_per_host() {
    let s = ftp_servers();
    let n = 200;
    let mut list = String::new();
    for i in 0..n {
        let name = format!("many/f{i:03}.txt");
        s.write_file(&name, format!("file {i}\n").as_bytes());
        list.push_str(&s.ftp_url(&name));
        list.push('\n');
    }
    let dir = tempfile::tempdir().unwrap();
    let input = dir.path().join("urls.txt");
    std::fs::write(&input, list).unwrap();
    let out = dir.path().join("out");
    let (code, json, stderr) = pymatris(
        &out,
        &[
            "--max-parallel",
            "8",
            "--max-per-host",
            "3",
            "-i",
            input.to_str().unwrap(),
        ],
    );
    assert_success(code, &json, &stderr);
    assert_eq!(list_dir(&out).len(), n);
    for i in (0..n).step_by(17) {
        let got = std::fs::read_to_string(out.join(format!("f{i:03}.txt"))).unwrap();
        assert_eq!(got, format!("file {i}\n"));
    }
    let l = log(&s);
    assert!(l.logins <= 3 && l.connects <= 3, "{l:?}");
}

#[test]
fn data_connection_cut_mid_transfer_resumes_from_the_last_byte() {
    broken_transfer(false);
}

#[test]
fn session_cut_mid_transfer_resumes_on_a_new_connection() {
    broken_transfer(true);
}

fn broken_transfer(cut_control: bool) {
    let s = ftp_servers();
    let size = 4 * MIB;
    s.write_random("cut.bin", size, 4);
    let cut_at = 1_234_567;
    let cutter = FtpCutter::start(s.ftp_port(), cut_at, cut_control);
    let (user, password) = s.ftp_user();
    let url = format!("ftp://{user}:{password}@127.0.0.1:{}/cut.bin", cutter.port);
    let out = tempfile::tempdir().unwrap();
    let (code, json, stderr) =
        pymatris(out.path(), &["--max-splits", "1", "--max-tries", "3", &url]);
    assert!(cutter.cut.load(Ordering::SeqCst), "the fault happened");
    assert_success(code, &json, &stderr);
    assert_same(&out.path().join("cut.bin"), &random_bytes(size as usize, 4));
    // The second attempt asked for the rest only, from the exact byte.
    let rests = cutter.rests.lock().unwrap().clone();
    let verbs = cutter.verbs.lock().unwrap().clone();
    assert_eq!(
        rests,
        [cut_at],
        "REST commands seen; every command: {verbs:?}\nstderr: {stderr}"
    );
    let l = log(&s);
    let want_logins = if cut_control { 2 } else { 1 };
    assert_eq!(l.logins, want_logins, "{l:?}");
}

#[test]
fn continue_resumes_a_run_broken_mid_transfer() {
    let s = ftp_servers();
    let size = 3 * MIB;
    s.write_random("resume.bin", size, 6);
    let cut_at = 777_777;
    let cutter = FtpCutter::start(s.ftp_port(), cut_at, true);
    let (user, password) = s.ftp_user();
    let url = format!(
        "ftp://{user}:{password}@127.0.0.1:{}/resume.bin",
        cutter.port
    );
    let out = tempfile::tempdir().unwrap();
    let once = ["--continue", "--max-tries", "1", "--max-splits", "1", &url];

    let (code, json, _) = pymatris(out.path(), &once);
    assert_eq!(code, 1, "the only attempt is cut: {json:#}");
    assert_eq!(json["errors"][0]["retryable"], true, "{json:#}");
    let left = list_dir(out.path());
    assert!(
        left.iter().any(|n| n == "resume.bin.pymatris-part"),
        "kept for --continue: {left:?}"
    );

    let (code, json, stderr) = pymatris(
        out.path(),
        &[
            "--continue",
            "--max-splits",
            "3",
            "--min-split-size",
            "256K",
            &url,
        ],
    );
    assert_success(code, &json, &stderr);
    assert_same(
        &out.path().join("resume.bin"),
        &random_bytes(size as usize, 6),
    );
    assert_eq!(list_dir(out.path()), ["resume.bin"]);
    let rests = cutter.rests.lock().unwrap().clone();
    assert!(
        rests.contains(&cut_at) && rests.iter().all(|&r| r >= cut_at),
        "the second run only asked for bytes it lacked: {rests:?}"
    );
}

/// A relay in front of vsftpd that cuts one transfer: it forwards the
/// control connection, rewrites `229` (EPSV) answers to a data port of its
/// own, and forwards data connections; the first one is closed after
/// `cut_at` bytes, and with `cut_control` its control connection too.
/// It records the `REST` commands the client sends, and the verb of
/// every command.
struct FtpCutter {
    port: u16,
    rests: Arc<Mutex<Vec<u64>>>,
    verbs: Arc<Mutex<Vec<String>>>,
    cut: Arc<AtomicBool>,
    /// Control connections still relayed.
    open: Arc<AtomicUsize>,
    _rt: tokio::runtime::Runtime,
}

impl FtpCutter {
    fn start(upstream: u16, cut_at: u64, cut_control: bool) -> FtpCutter {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap();
        let listener = rt
            .block_on(TcpListener::bind("127.0.0.1:0"))
            .expect("bind the relay");
        let port = listener.local_addr().unwrap().port();
        let rests = Arc::new(Mutex::new(Vec::new()));
        let verbs = Arc::new(Mutex::new(Vec::new()));
        let cut = Arc::new(AtomicBool::new(false));
        let open = Arc::new(AtomicUsize::new(0));
        let (r, v, c, o) = (rests.clone(), verbs.clone(), cut.clone(), open.clone());
        rt.spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let (r, v, c, o) = (r.clone(), v.clone(), c.clone(), o.clone());
                o.fetch_add(1, Ordering::SeqCst);
                tokio::spawn(async move {
                    let _ = relay_control(client, upstream, cut_at, cut_control, r, v, c).await;
                    o.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        FtpCutter {
            port,
            rests,
            verbs,
            cut,
            open,
            _rt: rt,
        }
    }

    /// The verbs relayed, once every control connection has ended (the
    /// client gone, its last lines read): a busy machine may run the relay
    /// behind the client, which has exited by then. Waits 10 s at most.
    fn verbs_when_done(&self) -> Vec<String> {
        let until = std::time::Instant::now() + std::time::Duration::from_secs(10);
        while self.open.load(Ordering::SeqCst) > 0 && std::time::Instant::now() < until {
            std::thread::sleep(std::time::Duration::from_millis(5));
        }
        self.verbs.lock().unwrap().clone()
    }
}

async fn relay_control(
    client: TcpStream,
    upstream: u16,
    cut_at: u64,
    cut_control: bool,
    rests: Arc<Mutex<Vec<u64>>>,
    verbs: Arc<Mutex<Vec<String>>>,
    cut: Arc<AtomicBool>,
) -> std::io::Result<()> {
    let server = TcpStream::connect(("127.0.0.1", upstream)).await?;
    let (cr, mut cw) = client.into_split();
    let (sr, mut sw) = server.into_split();
    let kill = Arc::new(Notify::new());
    // A permit for each transfer the client has been told began (`150`
    // or `125`): a data connection is relayed only then, so the cut comes
    // after the client has a transfer to resume, whatever the machine's
    // load (otherwise the control connection could be killed before the
    // `150` reached the client, and the transfer fail before it began).
    let began = Arc::new(Semaphore::new(0));

    let to_server = async {
        let mut lines = BufReader::new(cr);
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok::<(), std::io::Error>(());
            }
            let verb = line.split_whitespace().next().unwrap_or_default();
            verbs.lock().unwrap().push(verb.to_ascii_uppercase());
            if let Some(n) = line.strip_prefix("REST ") {
                rests
                    .lock()
                    .unwrap()
                    .push(n.trim().parse().unwrap_or(u64::MAX));
            }
            sw.write_all(line.as_bytes()).await?;
        }
    };
    let to_client = async {
        let mut lines = BufReader::new(sr);
        let mut line = String::new();
        loop {
            line.clear();
            if lines.read_line(&mut line).await? == 0 {
                return Ok::<(), std::io::Error>(());
            }
            let mut out = line.clone();
            let begins = line.starts_with("150 ") || line.starts_with("125 ");
            if line.starts_with("229 ")
                && let Some(port) = epsv_port(&line)
            {
                let data = TcpListener::bind("127.0.0.1:0").await?;
                let ours = data.local_addr()?.port();
                out = format!("229 Entering Extended Passive Mode (|||{ours}|)\r\n");
                let (cut, kill, began) = (cut.clone(), kill.clone(), began.clone());
                tokio::spawn(async move {
                    let _ = relay_data(data, port, cut_at, cut_control, cut, kill, began).await;
                });
            }
            cw.write_all(out.as_bytes()).await?;
            if begins {
                began.add_permits(1);
            }
        }
    };
    tokio::select! {
        r = to_server => r,
        r = to_client => r,
        () = kill.notified() => Ok(()),
    }
}

fn epsv_port(line: &str) -> Option<u16> {
    let start = line.find("(|||")? + 4;
    let end = start + line[start..].find('|')?;
    line[start..end].parse().ok()
}

async fn relay_data(
    listener: TcpListener,
    upstream: u16,
    cut_at: u64,
    cut_control: bool,
    cut: Arc<AtomicBool>,
    kill: Arc<Notify>,
    began: Arc<Semaphore>,
) -> std::io::Result<()> {
    let (mut client, _) = listener.accept().await?;
    let mut server = TcpStream::connect(("127.0.0.1", upstream)).await?;
    began
        .acquire()
        .await
        .map_err(std::io::Error::other)?
        .forget();
    let faulty = !cut.swap(true, Ordering::SeqCst);
    let limit = if faulty { cut_at } else { u64::MAX };
    let mut sent = 0u64;
    let mut buf = vec![0u8; 64 * 1024];
    while sent < limit {
        let n = server.read(&mut buf).await?;
        if n == 0 {
            break;
        }
        let n = (n as u64).min(limit - sent) as usize;
        client.write_all(&buf[..n]).await?;
        sent += n as u64;
    }
    if faulty {
        // Both sides of the data connection go; the server sees its
        // writes fail, the client a short body.
        drop(client);
        drop(server);
        if cut_control {
            kill.notify_one();
        }
    }
    Ok(())
}

// Sessions end with QUIT, at the end of the batch too, so that servers
// that count sessions free their places at once: every login has its
// goodbye.
#[test]
fn every_session_ends_with_quit() {
    let s = ftp_servers();
    for i in 0..3 {
        s.write_random(&format!("q{i}.bin"), 3 * MIB, 30 + i);
    }
    let relay = FtpCutter::start(s.ftp_port(), u64::MAX, false);
    let (user, password) = s.ftp_user();
    let urls: Vec<String> = (0..3)
        .map(|i| format!("ftp://{user}:{password}@127.0.0.1:{}/q{i}.bin", relay.port))
        .collect();
    let out = tempfile::tempdir().unwrap();
    let mut args = vec!["--max-splits", "3", "--min-split-size", "1M"];
    args.extend(urls.iter().map(String::as_str));
    let (code, json, stderr) = pymatris(out.path(), &args);
    assert_success(code, &json, &stderr);
    let verbs = relay.verbs_when_done();
    let count = |verb: &str| verbs.iter().filter(|v| *v == verb).count();
    assert!(count("PASS") >= 1, "{verbs:?}");
    assert_eq!(count("QUIT"), count("PASS"), "{verbs:?}");
}

/// pyftpdlib alone, with `options`.
fn pyftpdlib(options: PyftpdlibOptions) -> Servers {
    Servers::start(Which::none())
        .and_then(|s| s.with_pyftpdlib(options))
        .expect("starting pyftpdlib")
}

/// What pyftpdlib's log says: logins, and sessions it turned away.
fn pyftpdlib_log(s: &Servers) -> (usize, usize) {
    std::thread::sleep(std::time::Duration::from_millis(300));
    let text =
        std::fs::read_to_string(s.root_dir().join(Server::Pyftpdlib.log())).unwrap_or_default();
    (
        text.matches("logged in").count(),
        text.matches("Too many connections").count(),
    )
}

// A server whose logins take seconds (pure-ftpd's password hashing) and
// that allows few connections: parts still logging in are no stalled
// parts (the stall clock starts with the transfer), and a part that the
// full server turns away (421 for a session, 425 for a data connection)
// waits for a session rather than spend its tries while the file's other
// sessions transfer. One file, cut into as many parts as asked, lands
// whole, without logins thrown away by the dozen.
fn slow_logins_and_a_full_server(options: PyftpdlibOptions) {
    let s = pyftpdlib(options);
    let want = s.write_random("slow.bin", 48 * MIB, 19);
    let want = std::fs::read(want).unwrap();
    let out = tempfile::tempdir().unwrap();
    let url = s.pyftpdlib_url("slow.bin");
    let (code, json, stderr) = pymatris(
        out.path(),
        &[
            "--max-splits",
            "8",
            "--min-split-size",
            "1M",
            "--max-tries",
            "2",
            "--timeouts",
            "20",
            // Slow enough that parts still run when the logins end.
            "--max-speed",
            "8M",
            &url,
        ],
    );
    let (logins, refused) = pyftpdlib_log(&s);
    assert_success(code, &json, &stderr);
    assert_same(&out.path().join("slow.bin"), &want);
    assert!(logins <= 8, "{logins} logins ({refused} refused)");
}

// pyftpdlib's `max_cons` counts data connections too: a full server
// refuses the data connection of a logged-in session with 425.
#[test]
fn slow_logins_and_a_full_server_fail_no_part() {
    slow_logins_and_a_full_server(PyftpdlibOptions {
        login_delay: std::time::Duration::from_secs(4),
        max_sessions: Some(4),
        max_sessions_per_ip: None,
    });
}

// Sessions per client address, as pure-ftpd caps logged-in users: the
// next session is refused with 421.
#[test]
fn slow_logins_and_a_session_cap_fail_no_part() {
    slow_logins_and_a_full_server(PyftpdlibOptions {
        login_delay: std::time::Duration::from_secs(4),
        max_sessions: None,
        max_sessions_per_ip: Some(3),
    });
}
