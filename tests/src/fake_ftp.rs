//! A tiny FTP server that says what the test wants it to say: `MLSD`
//! listings written by the test (hostile ones: names that are paths, links
//! out of the tree), files by path, and a log of every command. Enough of
//! FTP for pymatris's client: login, `TYPE`, `EPSV`, `SIZE`, `MDTM`,
//! `MLSD`, `RETR`, `QUIT`; anything else is `500`. One thread per
//! connection, loopback only, stopped when dropped (its threads end with
//! the test process).

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::net::{TcpListener, TcpStream};
use std::sync::{Arc, Mutex};

/// What the server serves.
#[derive(Debug, Default, Clone)]
pub struct FakeFtpTree {
    /// `MLSD` text by directory path (as the client sends it, no slashes
    /// at either end).
    pub dirs: HashMap<String, String>,
    /// File contents by path.
    pub files: HashMap<String, Vec<u8>>,
    /// How long each login but the first takes (a server hashing
    /// passwords on a busy machine).
    pub slow_logins: Option<std::time::Duration>,
    /// How long each `RETR` waits between its data and its `226` (a
    /// server still sending): the client's next commands may arrive
    /// meanwhile ([`FakeFtp::retrs_with_commands_behind`]).
    pub hold_226: Option<std::time::Duration>,
    /// What the server does with the commands that arrived during a
    /// transfer, before its `226` (with `hold_226`); `None`: it leaves them
    /// for after, as vsftpd and ProFTPD do.
    pub during_transfers: Option<DuringTransfers>,
}

/// What a server that reads its control connection while it sends does
/// with the commands it finds there.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DuringTransfers {
    /// Answers each `503`: it takes no command then.
    Refuse,
    /// Answers the first, an `MDTM`, with its `213` (out of step with a
    /// client that reads replies in order).
    AnswerMdtm,
    /// Answers one `500` for all of them, which are lost (pure-ftpd 1.0.50:
    /// it looks for `ABOR` in each read while it sends).
    LoseWith500,
    /// Answers nothing: they are lost without a word.
    Lose,
}

/// A running fake server.
#[derive(Debug)]
pub struct FakeFtp {
    port: u16,
    log: Arc<Log>,
    behind: Arc<Mutex<Vec<String>>>,
}

/// Each command, whether the server had to wait for it (it was not read
/// already with the command before it, from the same write), and the
/// connection it came on (0 for the first).
type Log = Mutex<Vec<(String, bool, usize)>>;

impl FakeFtp {
    pub fn start(tree: FakeFtpTree) -> FakeFtp {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
        let port = listener.local_addr().unwrap().port();
        let commands = Arc::new(Mutex::new(Vec::new()));
        let behind = Arc::new(Mutex::new(Vec::new()));
        let tree = Arc::new(tree);
        let (log, seen) = (commands.clone(), behind.clone());
        std::thread::spawn(move || {
            for (n, conn) in listener.incoming().flatten().enumerate() {
                let (tree, log, seen) = (tree.clone(), log.clone(), seen.clone());
                std::thread::spawn(move || {
                    let _ = serve(conn, n, &tree, &log, &seen);
                });
            }
        });
        FakeFtp {
            port,
            log: commands,
            behind,
        }
    }

    /// Each path whose `RETR` found the client's next commands already
    /// there when its data had been sent, before its `226`.
    pub fn retrs_with_commands_behind(&self) -> Vec<String> {
        self.behind.lock().unwrap().clone()
    }

    /// `ftp://127.0.0.1:PORT/rel`.
    pub fn url(&self, rel: &str) -> String {
        format!("ftp://127.0.0.1:{}/{rel}", self.port)
    }

    /// Every path asked for with `RETR`, in order.
    pub fn retrs(&self) -> Vec<String> {
        let log = self.commands();
        let retrs = log.iter().filter_map(|c| c.strip_prefix("RETR "));
        retrs.map(str::to_owned).collect()
    }

    /// Every command received (verb upper-cased, argument without the
    /// slashes at its ends), in order; passwords as `PASS ***`.
    pub fn commands(&self) -> Vec<String> {
        let log = self.log.lock().unwrap();
        log.iter().map(|(c, ..)| c.clone()).collect()
    }

    /// The commands as [`FakeFtp::commands`], each with whether the server
    /// waited for it: `false` when it came in the same write as the
    /// command before it (pipelined), so that the client did not wait
    /// for the reply before sending it.
    pub fn commands_waited_for(&self) -> Vec<(String, bool)> {
        let log = self.log.lock().unwrap();
        log.iter()
            .map(|(c, waited, _)| (c.clone(), *waited))
            .collect()
    }

    /// The commands as [`FakeFtp::commands`], each with the connection it
    /// came on, numbered from 0 in the order they were accepted.
    pub fn commands_by_connection(&self) -> Vec<(String, usize)> {
        let log = self.log.lock().unwrap();
        log.iter().map(|(c, _, n)| (c.clone(), *n)).collect()
    }
}

fn serve(
    conn: TcpStream,
    n: usize,
    tree: &FakeFtpTree,
    log: &Log,
    behind: &Mutex<Vec<String>>,
) -> std::io::Result<()> {
    let mut out = conn.try_clone()?;
    let mut lines = BufReader::new(conn);
    let mut data: Option<TcpListener> = None;
    out.write_all(b"220 fake\r\n")?;
    let mut line = String::new();
    loop {
        line.clear();
        let waited = lines.buffer().is_empty();
        if lines.read_line(&mut line)? == 0 {
            return Ok(());
        }
        let line = line.trim_end_matches(['\r', '\n']);
        let (cmd, arg) = line.split_once(' ').unwrap_or((line, ""));
        let arg = arg.trim_matches('/');
        let verb = cmd.to_ascii_uppercase();
        let shown = if verb == "PASS" { "***" } else { arg };
        log.lock()
            .unwrap()
            .push((format!("{verb} {shown}"), waited, n));
        let reply = match cmd.to_ascii_uppercase().as_str() {
            "USER" => "331 password\r\n".to_owned(),
            "PASS" => {
                if let Some(slow) = tree.slow_logins.filter(|_| n > 0) {
                    std::thread::sleep(slow);
                }
                "230 in\r\n".to_owned()
            }
            "TYPE" => "200 ok\r\n".to_owned(),
            "EPSV" => {
                let l = TcpListener::bind("127.0.0.1:0")?;
                let port = l.local_addr()?.port();
                data = Some(l);
                format!("229 Entering Extended Passive Mode (|||{port}|)\r\n")
            }
            "SIZE" => match tree.files.get(arg) {
                Some(f) => format!("213 {}\r\n", f.len()),
                None => "550 no\r\n".to_owned(),
            },
            "MDTM" if tree.files.contains_key(arg) => "213 20260101000000\r\n".to_owned(),
            "MLSD" | "RETR" => {
                let body = match cmd {
                    "RETR" => tree.files.get(arg).cloned(),
                    _ => tree
                        .dirs
                        .get(arg)
                        .map(|t| t.replace('\n', "\r\n").into_bytes()),
                };
                match (body, data.take()) {
                    (Some(body), Some(l)) => {
                        out.write_all(b"150 here\r\n")?;
                        let (mut d, _) = l.accept()?;
                        d.write_all(&body)?;
                        drop(d);
                        if let Some(hold) = tree.hold_226 {
                            std::thread::sleep(hold);
                            if waiting(&lines, &out)? {
                                behind.lock().unwrap().push(arg.to_owned());
                            }
                            let early = (&mut lines, &mut out, n, log);
                            let replies = match tree.during_transfers {
                                Some(DuringTransfers::Refuse) => {
                                    let k = read_waiting(early, usize::MAX, "refused")?;
                                    vec!["503 a transfer is under way"; k]
                                }
                                Some(DuringTransfers::AnswerMdtm) => {
                                    let k = read_waiting(early, 1, "answered")?;
                                    vec!["213 20260101000000"; k]
                                }
                                Some(DuringTransfers::LoseWith500) => {
                                    let k = read_waiting(early, usize::MAX, "lost")?;
                                    vec!["500 Unknown command"; k.min(1)]
                                }
                                Some(DuringTransfers::Lose) => {
                                    read_waiting(early, usize::MAX, "lost")?;
                                    vec![]
                                }
                                None => vec![],
                            };
                            for reply in replies {
                                out.write_all(format!("{reply}\r\n").as_bytes())?;
                            }
                        }
                        "226 done\r\n".to_owned()
                    }
                    _ => "550 no\r\n".to_owned(),
                }
            }
            "QUIT" => {
                out.write_all(b"221 bye\r\n")?;
                return Ok(());
            }
            _ => "500 unknown\r\n".to_owned(),
        };
        out.write_all(reply.as_bytes())?;
    }
}

/// Whether the client's next bytes are already there (read into `lines`
/// or waiting in the socket).
fn waiting(lines: &BufReader<TcpStream>, out: &TcpStream) -> std::io::Result<bool> {
    if !lines.buffer().is_empty() {
        return Ok(true);
    }
    out.set_nonblocking(true)?;
    let peeked = out.peek(&mut [0u8; 1]);
    out.set_nonblocking(false)?;
    match peeked {
        Ok(n) => Ok(n > 0),
        Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => Ok(false),
        Err(e) => Err(e),
    }
}

/// Reads each whole command already there, `most` of them at most, and
/// logs each as `how` during a transfer; how many it read.
fn read_waiting(
    (lines, out, n, log): (&mut BufReader<TcpStream>, &mut TcpStream, usize, &Log),
    most: usize,
    how: &str,
) -> std::io::Result<usize> {
    let mut read = 0;
    while read < most && waiting(lines, out)? {
        let mut line = String::new();
        if lines.read_line(&mut line)? == 0 {
            break;
        }
        let verb = line
            .split_whitespace()
            .next()
            .unwrap_or("")
            .to_ascii_uppercase();
        log.lock()
            .unwrap()
            .push((format!("{verb} ({how} during a transfer)"), false, n));
        read += 1;
    }
    Ok(read)
}
