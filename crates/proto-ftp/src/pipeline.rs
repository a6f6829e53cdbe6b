//! A file's commands in one write: `[SIZE] [MDTM] EPSV [REST] RETR`, the
//! replies read in order, the data connection opened once `EPSV` answered.
//! A file costs two round trips (the commands, then the data connection
//! and `150`) instead of four or five one command at a time (`SIZE`,
//! `MDTM`, `EPSV`, `RETR`), and its server and client each wake half as
//! often: on loopback, where every round trip is a wake-up of each
//! side, that is most of a small file's cost. RFC 959 lets a client send
//! a command before the previous reply (the server reads them in order),
//! as lftp does with `ftp:sync-mode off`.
//!
//! Only where nothing can go out of step: plain FTP (the control bytes
//! are written to the socket under suppaftp, which TLS would not allow),
//! no SOCKS proxy, a server whose `EPSV` transfers already worked and
//! whose `SIZE` answered (or a size known from the listing). A server that
//! answers in a way the old path would retry, or breaks the exchange,
//! makes the host go back to one command at a time.
//!
//! Next door, a session also takes the next file's commands while a
//! small file's data still flows ([`EARLY_MAX`]): they wait at
//! the server behind that transfer, whose final reply is read first
//! ([`settle`]).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pymatris_core::{ByteRange, Fetched, FileOptions};
use suppaftp::{FtpError, FtpResult, Status};
use tokio::net::TcpStream;

use crate::body::{Body, Data, final_reply};
use crate::error::{ftp_error, is_unsupported, keeps_session, reply_code, reply_text};
use crate::pool::{Caps, Host, Session};
use crate::session::{Probe, parse_mdtm, within};
use crate::target::Target;
use crate::window::Tail;
use crate::{FtpProtocol, meta, part_end, rest_refused};

/// What to ask of a file.
pub(crate) struct Ask<'a> {
    pub(crate) path: &'a str,
    pub(crate) size: bool,
    pub(crate) mtime: bool,
    pub(crate) start: u64,
}

/// Why the exchange gave no transfer.
pub(crate) enum Failed {
    /// The server refused the file (`RETR`'s reply); the session is in
    /// step.
    Refused(FtpError),
    /// `REST` was refused: the server would send the file from its start.
    /// The session is out of step.
    NoRest(FtpError),
    /// Anything else: the session is out of step and must be closed.
    Broken(FtpError),
}

/// Whether `host` may take `ask` pipelined (see the module's notes), on
/// a session that uses `EPSV`.
pub(crate) fn usable_on(host: &Host, ask: &Ask<'_>, plain: bool) -> bool {
    plain
        && Caps::get(&host.caps.epsv_ok)
        && !Caps::get(&host.caps.no_pipelining)
        && (!ask.size || Caps::get(&host.caps.size_ok))
        && (ask.start == 0 || !Caps::get(&host.caps.no_rest))
        && !ask.path.contains(['\r', '\n', '\0'])
}

/// A listed file up to this size, on a server next door, gives its
/// session back to the pool as soon as its transfer begins: the next file
/// sends its commands at once, behind it, and reads this one's final
/// reply before its own ([`settle`]). The server then goes from
/// one file to the next without waiting for the client, and each session
/// carries two files at once without another login. The bytes are checked
/// against the listing as before; a file cut short is the engine's to
/// retry. Larger files keep their session to the end: the next file
/// would wait behind all of their bytes.
const EARLY_MAX: u64 = 4 << 20;

/// How long the first reply to commands sent behind a transfer may take
/// once that transfer's final reply came: a server next door answers in
/// milliseconds, and one that read the commands during the transfer and
/// dropped them without a word never answers (the exchange is then out of
/// step, as for the servers that answer them wrongly).
const LOST_AFTER: Duration = Duration::from_secs(5);

impl FtpProtocol {
    /// A file's commands at once (see the module's notes); `None` where
    /// the server or the session must take them one at a time.
    pub(crate) async fn fetch_pipelined(
        &self,
        host: &Arc<Host>,
        target: &Target,
        ask: &Ask<'_>,
        range: ByteRange,
        listed: Option<u64>,
        file: &FileOptions,
    ) -> pymatris_core::Result<Option<Fetched>> {
        let plain = !target.login.security.is_tls() && self.socks.is_none();
        if !usable_on(host, ask, plain) {
            return Ok(None);
        }
        let what = format!("RETR {}", target.shown);
        loop {
            let mut session = self.session_owing(host, target).await?;
            if session.passive {
                session.release();
                return Ok(None);
            }
            let end = part_end(file, range, listed);
            let plan = session
                .window
                .set(end.as_ref().map(|e| e.get().saturating_sub(range.start)));
            let behind = session.owed.is_some();
            match exchange(&mut session, host, ask, self.timeout).await {
                Ok((mut probe, data)) => {
                    if listed.is_some() {
                        probe.size = listed;
                    }
                    let tail = end.map(|end| Tail::new(end, range.start, plan, &data));
                    let early = range.start == 0
                        && listed.is_some_and(|size| size <= EARLY_MAX)
                        && host.is_short_link()
                        && !Caps::get(&host.caps.no_early);
                    tracing::debug!(url = %target.shown, start = range.start, behind, early, "transfer started (pipelined)");
                    let session = match early {
                        true => {
                            session.owed = Some(what.clone());
                            session.release();
                            None
                        }
                        false => Some(session),
                    };
                    let body = Body::new(Data::Own(data), session, tail, self.timeout, what);
                    return Ok(Some(Fetched::new(
                        meta(host, probe),
                        range.start,
                        Box::pin(body.ending_at(listed)),
                    )));
                }
                Err(Failed::Refused(e)) => {
                    session.release();
                    return Err(ftp_error(e, &what));
                }
                Err(Failed::NoRest(e)) => {
                    drop(session);
                    let reply = match &e {
                        FtpError::UnexpectedResponse(r) => reply_text(r),
                        other => other.to_string(),
                    };
                    return Err(rest_refused(range.start, target, &reply));
                }
                Err(Failed::Broken(e)) => {
                    let reused = session.reused;
                    drop(session);
                    if behind {
                        // Maybe a server that reads commands during a
                        // transfer and refuses them.
                        tracing::debug!(host = %host.id, error = %e, "commands behind a transfer went wrong; files wait for the end of the one before");
                        Caps::set(&host.caps.no_early, true);
                        continue;
                    }
                    if reused && !keeps_session(&e) {
                        tracing::debug!(host = %host.id, error = %e, "a pooled session went stale");
                        continue;
                    }
                    return Err(ftp_error(e, &what));
                }
            }
        }
    }
}

/// Sends the file's commands at once and reads their replies, opening
/// the data connection on `EPSV`'s port.
pub(crate) async fn exchange(
    session: &mut Session,
    host: &Host,
    ask: &Ask<'_>,
    timeout: Duration,
) -> Result<(Probe, TcpStream), Failed> {
    let mut text = String::new();
    if ask.size {
        text.push_str(&format!("SIZE {}\r\n", ask.path));
    }
    if ask.mtime {
        text.push_str(&format!("MDTM {}\r\n", ask.path));
    }
    text.push_str("EPSV\r\n");
    if ask.start > 0 {
        text.push_str(&format!("REST {}\r\n", ask.start));
    }
    text.push_str(&format!("RETR {}\r\n", ask.path));
    let asked = Instant::now();
    let peer = within(timeout, write_all(session, text.as_bytes()))
        .await
        .map_err(Failed::Broken)?;
    // The previous file's final reply comes first.
    let behind = session.owed.is_some();
    settle(session, timeout).await.map_err(Failed::Broken)?;
    // Behind a transfer, the server has had the commands since before its
    // final reply, and answers the first at once: if not, it lost them.
    let mut wait = match behind {
        true => timeout.min(LOST_AFTER),
        false => timeout,
    };

    let ftp = &mut session.ftp;
    let caps = &host.caps;
    let mut probe = Probe::default();
    let mut first = true;
    if ask.size {
        let read = within(wait, ftp.read_response_in(&[Status::File])).await;
        wait = timeout;
        match read {
            Ok(reply) => {
                probe.size = reply_text(&reply)
                    .strip_prefix("213")
                    .and_then(|t| t.trim().parse().ok());
            }
            Err(FtpError::UnexpectedResponse(r)) if reply_code(&r) == 550 => {
                probe.size_refused = Some(r);
            }
            Err(e @ FtpError::UnexpectedResponse(_)) if is_unsupported(&e) => {
                Caps::set(&caps.no_size, true)
            }
            Err(FtpError::UnexpectedResponse(r)) if reply_code(&r) != 421 => {}
            Err(e) => return Err(Failed::Broken(e)),
        }
        if first {
            host.rtt.note(asked.elapsed());
            first = false;
        }
    }
    if ask.mtime {
        let read = within(wait, ftp.read_response_in(&[Status::File])).await;
        wait = timeout;
        match read {
            Ok(reply) => probe.modified = parse_mdtm(&reply_text(&reply)),
            Err(e @ FtpError::UnexpectedResponse(_)) if is_unsupported(&e) => {
                Caps::set(&caps.no_mdtm, true)
            }
            Err(FtpError::UnexpectedResponse(r)) if reply_code(&r) != 421 => {}
            Err(e) => return Err(Failed::Broken(e)),
        }
        if first {
            host.rtt.note(asked.elapsed());
        }
    }
    // Any other answer to `EPSV` (which worked before) leaves the replies
    // to what follows in doubt: the session is closed.
    let epsv = within(wait, ftp.read_response_in(&[Status::ExtendedPassiveMode]))
        .await
        .map_err(Failed::Broken)?;
    let port = epsv_port(&reply_text(&epsv)).ok_or(Failed::Broken(FtpError::BadResponse))?;
    let data = (session.window.builder(None))(SocketAddr::new(peer.ip(), port));
    let data = within(timeout, data).await.map_err(Failed::Broken)?;
    let ftp = &mut session.ftp;
    if ask.start > 0 {
        // A refused `REST` would make `RETR` send the file from its start.
        match within(timeout, ftp.read_response_in(&[Status::RequestFilePending])).await {
            Ok(_) => {}
            Err(e @ FtpError::UnexpectedResponse(_)) => {
                Caps::set(&caps.no_rest, true);
                return Err(Failed::NoRest(e));
            }
            Err(e) => return Err(Failed::Broken(e)),
        }
    }
    match within(
        timeout,
        ftp.read_response_in(&[Status::AboutToSend, Status::AlreadyOpen]),
    )
    .await
    {
        Ok(_) => Ok((probe, data)),
        Err(e @ FtpError::UnexpectedResponse(_)) => {
            if is_unsupported(&e) {
                Caps::set(&caps.no_pipelining, true);
            }
            Err(Failed::Refused(e))
        }
        Err(e) => Err(Failed::Broken(e)),
    }
}

/// Reads the final reply of the transfer this session still owes one
/// for, if any, once that transfer ends. Its body judged its bytes
/// against the listing by themselves, so a failing reply (`426` for a
/// transfer cut, `451`) is only logged, as the background drain of a cut
/// transfer does; the session stays in step. An error is a control
/// connection out of step or gone.
pub(crate) async fn settle(session: &mut Session, timeout: Duration) -> FtpResult<()> {
    let Some(what) = session.owed.take() else {
        return Ok(());
    };
    match within(timeout, final_reply(session)).await {
        // A transfer's failure (`426`, `451`, ...). Any other reply belongs
        // to the commands behind it, answered during the transfer: a
        // positive one, or a `500` for commands the server read and dropped
        // (pure-ftpd). Out of step.
        Err(FtpError::UnexpectedResponse(r)) if ends_a_transfer(reply_code(&r)) => {
            tracing::debug!(transfer = %what, reply = %reply_text(&r), "a failing final reply");
            Ok(())
        }
        other => other,
    }
}

/// Whether `code` can be the failing final reply of a transfer, after its
/// `150` (RFC 959): a `42x` of the data connection (`425`, `426`; `421`
/// closes the session), a `45x` or `55x` of the file or the disk. Not a
/// `50x` (a command's syntax) nor a `53x` (its login): those answer a
/// command.
fn ends_a_transfer(code: u32) -> bool {
    matches!(code / 10, 42 | 45 | 55) && code != 421
}

/// Writes `bytes` on the (plain) control connection; the peer's address,
/// which data connections go to.
async fn write_all(session: &Session, mut bytes: &[u8]) -> FtpResult<SocketAddr> {
    let socket = session.ftp.get_ref().await;
    let peer = socket.peer_addr().map_err(FtpError::ConnectionError)?;
    while !bytes.is_empty() {
        socket.writable().await.map_err(FtpError::ConnectionError)?;
        match socket.try_write(bytes) {
            Ok(0) => {
                return Err(FtpError::ConnectionError(io::Error::from(
                    io::ErrorKind::WriteZero,
                )));
            }
            Ok(n) => bytes = &bytes[n..],
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
            Err(e) => return Err(FtpError::ConnectionError(e)),
        }
    }
    Ok(peer)
}

/// The port of `229 Entering Extended Passive Mode (|||port|)`.
fn epsv_port(reply: &str) -> Option<u16> {
    let open = reply.find('(')?;
    let inner = &reply[open + 1..];
    let close = inner.find(')')?;
    let inner = &inner[..close];
    let delim = inner.chars().next()?;
    let mut fields = inner.split(delim);
    // `|||port|`: empty, empty, empty, port, empty.
    let (_, _, _) = (fields.next()?, fields.next()?, fields.next()?);
    fields.next()?.parse().ok().filter(|&p| p != 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_transfer_failures_end_a_transfer() {
        for code in [425, 426, 450, 451, 452, 550, 551, 552, 553] {
            assert!(ends_a_transfer(code), "{code}");
        }
        for code in [213, 226, 229, 421, 500, 501, 502, 503, 504, 530, 532] {
            assert!(!ends_a_transfer(code), "{code}");
        }
    }

    #[test]
    fn epsv_ports() {
        assert_eq!(
            epsv_port("229 Entering Extended Passive Mode (|||29825|)"),
            Some(29825)
        );
        assert_eq!(epsv_port("229 ok (!!!21!)"), Some(21));
        assert_eq!(epsv_port("229 (||6446|)"), None);
        assert_eq!(epsv_port("229 no port"), None);
        assert_eq!(epsv_port("229 (|||0|)"), None);
    }
}
