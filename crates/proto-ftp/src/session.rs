//! Opening a control connection (TCP, TLS, greeting, login, `TYPE I`) and
//! the commands that describe a file (`SIZE`, `MDTM`, `MLST`).

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use pymatris_core::socks::SocksProxy;
use pymatris_core::{Error, ErrorKind};
use rustls::ClientConfig;
use rustls::client::Resumption;
use suppaftp::tokio::AsyncRustlsConnector;
use suppaftp::tokio_rustls::TlsConnector;
use suppaftp::types::FileType;
use suppaftp::{FtpError, FtpResult, Mode, Status};
use tokio::net::TcpStream;

use crate::error::{self, busy_error, ftp_error, is_unsupported, reply_code, reply_text};
use crate::pool::{Caps, Ftp, Host, Session, Slot};
use crate::target::{Security, Target};
use crate::window::DataWindow;

/// Runs one exchange with the server, failing with a timed-out connection
/// error when it takes longer than `timeout`.
pub(crate) async fn within<T>(
    timeout: Duration,
    fut: impl Future<Output = FtpResult<T>>,
) -> FtpResult<T> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(r) => r,
        Err(_) => Err(FtpError::ConnectionError(io::Error::new(
            io::ErrorKind::TimedOut,
            format!("no reply within {}s", timeout.as_secs_f32()),
        ))),
    }
}

/// Where a connection attempt failed.
enum Failure {
    /// Before or at the greeting: the server may be refusing clients.
    Greeting(FtpError),
    /// During `AUTH TLS`.
    Tls(FtpError),
    /// During `USER`/`PASS`.
    Login(FtpError),
    /// Setting the session up after login.
    Setup(FtpError),
}

/// Opens and logs in a new control connection for `target` on `slot`.
pub(crate) async fn connect(
    host: &Arc<Host>,
    target: &Target,
    mut slot: Slot,
    tls: Option<Arc<ClientConfig>>,
    timeout: Duration,
    socks: Option<&SocksProxy>,
) -> Result<Session, Error> {
    let login = &target.login;
    // Control and data connections alike go through the proxy.
    let socks = socks
        .filter(|_| !pymatris_core::socks::no_proxy(&host.id.host))
        .cloned();
    let passive = Caps::get(&host.caps.no_epsv);
    let tls = tls.map(|base| own_session_cache(&base));
    let attempt = async {
        let implicit = tls
            .as_ref()
            .filter(|_| login.security == Security::Implicit);
        let (mut ftp, handshake) = greet(host, implicit, socks.as_ref()).await?;
        slot.count_open();
        if login.security == Security::Explicit {
            let config = tls.as_ref().expect("TLS configured for FTPS");
            ftp = secure(ftp, config, host).await.map_err(Failure::Tls)?;
        }
        ftp.login(login.user.as_str(), login.password.as_str())
            .await
            .map_err(Failure::Login)?;
        // The round trip sizes the data connections' windows: TCP's
        // handshake, answered by the server's kernel, or where there is none
        // to time, a command with nothing to do on the server (its time
        // includes the server's own, which on a busy or slow server is most
        // of it).
        let asked = Instant::now();
        ftp.transfer_type(FileType::Binary)
            .await
            .map_err(Failure::Setup)?;
        host.rtt.note(asked.elapsed());
        if let Some(handshake) = handshake {
            host.rtt.note(handshake);
        }
        let window = DataWindow::new(host.rtt.clone());
        if login.security == Security::Implicit {
            // Implicit FTPS leaves data protection to negotiate, as
            // explicit FTPS does (vsftpd expects it).
            protect_data(&mut ftp).await.map_err(Failure::Setup)?;
        }
        ftp.set_mode(if passive {
            Mode::Passive
        } else {
            Mode::ExtendedPassive
        });
        // PASV answers may carry a private or bogus address: use the
        // control connection's peer, as curl does.
        ftp.set_passive_nat_workaround(true);
        let through = socks.map(|p| (p, host.id.host.clone()));
        Ok::<(Ftp, DataWindow), Failure>((
            ftp.passive_stream_builder(window.builder(through)),
            window,
        ))
    };
    let (ftp, window) = match tokio::time::timeout(timeout, attempt).await {
        Ok(Ok(done)) => done,
        Ok(Err(failure)) => return Err(connect_error(host, target, failure)),
        Err(_) => {
            return Err(error::timeout_error(
                timeout,
                &format!("{}: connecting and logging in", target.shown),
            ));
        }
    };
    tracing::debug!(host = %host.id, user = %login.user, "logged in");
    Ok(Session::new(ftp, login.clone(), slot, passive, window))
}

/// The TLS configuration of one control connection and its data
/// connections: `base` with a session cache of its own. Servers that
/// demand TLS session reuse on data connections (vsftpd's
/// `require_ssl_reuse`, on by default) accept only the session of *this*
/// control connection; with a cache shared by all connections to the
/// server, a data connection may offer another connection's session and be
/// refused with `522`.
fn own_session_cache(base: &Arc<ClientConfig>) -> Arc<ClientConfig> {
    let mut config = ClientConfig::clone(base);
    config.resumption = Resumption::in_memory_sessions(4);
    Arc::new(config)
}

/// TCP (and implicit TLS) up to the server's `220`, with the time TCP's
/// handshake took when it was timed alone (not through a proxy, nor under
/// implicit TLS).
async fn greet(
    host: &Host,
    tls: Option<&Arc<ClientConfig>>,
    socks: Option<&SocksProxy>,
) -> Result<(Ftp, Option<Duration>), Failure> {
    let addr = (host.id.host.as_str(), host.id.port);
    if let Some(proxy) = socks {
        if tls.is_some() {
            // suppaftp opens implicit-TLS connections itself.
            return Err(Failure::Greeting(FtpError::ConnectionError(
                io::Error::other(
                    "ftps:// (implicit TLS) through a SOCKS proxy is not supported: use ftp:// with TLS required",
                ),
            )));
        }
        let tcp = proxy
            .connect(&host.id.host, host.id.port)
            .await
            .map_err(|e| Failure::Greeting(FtpError::ConnectionError(e)))?;
        let _ = tcp.set_nodelay(true);
        let ftp = Ftp::connect_with_stream(tcp)
            .await
            .map_err(Failure::Greeting)?;
        return Ok((ftp, None));
    }
    if let Some(config) = tls {
        let connector = AsyncRustlsConnector::from(TlsConnector::from(config.clone()));
        let ftp = Ftp::connect_secure_implicit(addr, connector, &host.id.host)
            .await
            .map_err(Failure::Greeting)?;
        let _ = ftp.get_ref().await.set_nodelay(true);
        return Ok((ftp, None));
    }
    let broke = |e| Failure::Greeting(FtpError::ConnectionError(e));
    // Resolved first, so that the handshake is timed alone.
    let addrs: Vec<SocketAddr> = tokio::net::lookup_host(addr)
        .await
        .map_err(broke)?
        .collect();
    let dialed = Instant::now();
    let tcp = TcpStream::connect(&addrs[..]).await.map_err(broke)?;
    let handshake = dialed.elapsed();
    // Commands are small and each waits for its reply.
    let _ = tcp.set_nodelay(true);
    let ftp = Ftp::connect_with_stream(tcp)
        .await
        .map_err(Failure::Greeting)?;
    Ok((ftp, Some(handshake)))
}

/// `AUTH TLS`, then `PBSZ 0` and `PROT P` (suppaftp sends all three).
async fn secure(ftp: Ftp, config: &Arc<ClientConfig>, host: &Host) -> FtpResult<Ftp> {
    let connector = AsyncRustlsConnector::from(TlsConnector::from(config.clone()));
    ftp.into_secure(connector, &host.id.host).await
}

/// `PBSZ 0` and `PROT P`: data connections under TLS too.
async fn protect_data(ftp: &mut Ftp) -> FtpResult<()> {
    ftp.custom_command("PBSZ 0", &[Status::CommandOk]).await?;
    ftp.custom_command("PROT P", &[Status::CommandOk]).await?;
    Ok(())
}

/// The error of a failed connection attempt.
fn connect_error(host: &Host, target: &Target, failure: Failure) -> Error {
    let shown = &target.shown;
    match failure {
        Failure::Greeting(FtpError::UnexpectedResponse(reply)) if reply_code(&reply) == 421 => {
            host.lower_limit();
            busy_error(
                &format!("{shown}: connecting to {}", host.id),
                &format!("the server refused the connection: {}", reply_text(&reply)),
            )
        }
        Failure::Greeting(FtpError::ConnectionError(e))
            if host.open() > 0
                && matches!(
                    e.kind(),
                    io::ErrorKind::ConnectionRefused
                        | io::ErrorKind::ConnectionReset
                        | io::ErrorKind::UnexpectedEof
                ) =>
        {
            // Other connections to this server work: it refuses this one.
            host.lower_limit();
            busy_error(
                &format!("{shown}: connecting to {}", host.id),
                &format!("the server refused one more connection: {e}"),
            )
        }
        Failure::Greeting(e) => ftp_error(e, &format!("{shown}: connecting to {}", host.id)),
        Failure::Tls(FtpError::UnexpectedResponse(reply)) => Error::new(
            ErrorKind::Tls,
            format!(
                "{shown}: the server refused AUTH TLS (FTPS was required): {}",
                reply_text(&reply)
            ),
        ),
        Failure::Tls(e) => ftp_error(e, &format!("{shown}: TLS handshake with {}", host.id)),
        Failure::Login(FtpError::UnexpectedResponse(reply)) if reply_code(&reply) == 421 => {
            // pure-ftpd: "421 7 users (the maximum) are already logged in".
            host.lower_limit();
            busy_error(
                &format!("{shown}: logging in as {}", target.login.user),
                &format!(
                    "the server refused one more session: {}",
                    reply_text(&reply)
                ),
            )
        }
        Failure::Login(e) => {
            let what = format!("{shown}: logging in as {}", target.login.user);
            let err = ftp_error(e, &what);
            // Some servers refuse a login with 331/332 loops or a 500 to
            // PASS: whatever the code, a refused login is not worth retrying
            // unless the server said "try later".
            if err.kind() == ErrorKind::Protocol && !err.is_retryable() {
                Error::new(ErrorKind::Auth, err.message().to_owned())
            } else {
                err
            }
        }
        Failure::Setup(e) => ftp_error(e, &format!("{shown}: setting up the session")),
    }
}

/// What the server says of a file before the transfer.
#[derive(Debug, Default)]
pub(crate) struct Probe {
    pub(crate) size: Option<u64>,
    pub(crate) modified: Option<String>,
    /// `SIZE`'s refusal (a 550: most likely no such file).
    pub(crate) size_refused: Option<suppaftp::types::Response>,
}

/// `SIZE` (unless the size is known), then `MLST` when `SIZE` gave
/// nothing, then `MDTM` when `want_mtime`. Negative replies are absorbed (remembered per host when
/// they mean "unknown command"); only a broken connection fails.
pub(crate) async fn probe(
    session: &mut Session,
    host: &Host,
    path: &str,
    (want_mtime, known_size): (bool, Option<u64>),
    timeout: Duration,
) -> FtpResult<Probe> {
    let ftp = &mut session.ftp;
    let caps = &host.caps;
    let mut probe = Probe {
        size: known_size,
        ..Probe::default()
    };
    // Each command that asks the server no more than a look-up is a
    // round trip to time, for the data windows.
    let mut asked = Instant::now();
    if probe.size.is_none() && !Caps::get(&caps.no_size) {
        match within(timeout, ftp.size(path)).await {
            Ok(n) => {
                host.rtt.note(asked.elapsed());
                Caps::set(&caps.size_ok, true);
                probe.size = Some(n as u64);
            }
            Err(e) if is_unsupported(&e) => Caps::set(&caps.no_size, true),
            Err(FtpError::UnexpectedResponse(r)) if reply_code(&r) == 550 => {
                probe.size_refused = Some(r);
            }
            Err(FtpError::UnexpectedResponse(r)) if reply_code(&r) != 421 => {}
            Err(FtpError::BadResponse) => {}
            Err(e) => return Err(e),
        }
    }
    if probe.size.is_none() && !Caps::get(&caps.no_mlst) {
        match within(timeout, ftp.mlst(Some(path))).await {
            Ok(line) => {
                let facts = parse_mlst(&line);
                probe.size = facts.size;
                probe.modified = facts.modify;
                if probe.size.is_some() {
                    probe.size_refused = None;
                }
            }
            Err(e) if is_unsupported(&e) => Caps::set(&caps.no_mlst, true),
            Err(FtpError::UnexpectedResponse(r)) if reply_code(&r) != 421 => {}
            Err(FtpError::BadResponse) => {}
            Err(e) => return Err(e),
        }
    }
    if want_mtime && probe.size_refused.is_none() && !Caps::get(&caps.no_mdtm) {
        asked = Instant::now();
        match within(
            timeout,
            ftp.custom_command(format!("MDTM {path}"), &[Status::File]),
        )
        .await
        {
            Ok(reply) => {
                host.rtt.note(asked.elapsed());
                if let Some(t) = parse_mdtm(&reply_text(&reply)) {
                    probe.modified = Some(t);
                }
            }
            Err(e) if is_unsupported(&e) => Caps::set(&caps.no_mdtm, true),
            Err(FtpError::UnexpectedResponse(r)) if reply_code(&r) != 421 => {}
            Err(e) => return Err(e),
        }
    }
    Ok(probe)
}

/// The facts of an `MLST` line that matter here.
#[derive(Debug, Default, PartialEq, Eq)]
pub(crate) struct MlstFacts {
    pub(crate) size: Option<u64>,
    pub(crate) modify: Option<String>,
}

/// Reads `size=1234;modify=20261126073800;type=file; name` (RFC 3659 7.2):
/// facts are `name=value;`, case-insensitive, before one space and the
/// path.
pub(crate) fn parse_mlst(line: &str) -> MlstFacts {
    let line = line.trim_start();
    let facts = match line.find(' ') {
        Some(i) => &line[..i],
        None => line,
    };
    let mut out = MlstFacts::default();
    for fact in facts.split(';') {
        let Some((name, value)) = fact.split_once('=') else {
            continue;
        };
        if name.eq_ignore_ascii_case("size") {
            out.size = value.trim().parse().ok();
        } else if name.eq_ignore_ascii_case("modify") && is_mdtm_time(value.trim()) {
            out.modify = Some(value.trim().to_owned());
        }
    }
    out
}

/// The time of an `MDTM` reply, `213 20261126073800` (fractions kept), as
/// the server wrote it.
pub(crate) fn parse_mdtm(reply: &str) -> Option<String> {
    let rest = reply.strip_prefix("213")?.trim();
    let time = rest.split_whitespace().next()?;
    is_mdtm_time(time).then(|| time.to_owned())
}

/// The instant of an `MDTM` time (`YYYYMMDDhhmmss[.sss]`, UTC, RFC 3659
/// 2.3), `None` for a date that does not exist.
pub(crate) fn mdtm_time(text: &str) -> Option<std::time::SystemTime> {
    if !is_mdtm_time(text) {
        return None;
    }
    let num = |range: std::ops::Range<usize>| text[range].parse::<i64>().ok();
    let (year, month, day) = (num(0..4)?, num(4..6)?, num(6..8)?);
    let (hour, min, sec) = (num(8..10)?, num(10..12)?, num(12..14)?);
    if !(1..=12).contains(&month) || !(1..=31).contains(&day) || hour > 23 || min > 59 || sec > 60 {
        return None;
    }
    // Days since 1970-01-01 of a proleptic Gregorian date (Howard
    // Hinnant's `days_from_civil`).
    let y = if month <= 2 { year - 1 } else { year };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + hour * 3600 + min * 60 + sec;
    let nanos = match text.split_once('.') {
        Some((_, frac)) => {
            let digits: String = frac.chars().chain(std::iter::repeat('0')).take(9).collect();
            digits.parse::<u32>().ok()?
        }
        None => 0,
    };
    let epoch = std::time::UNIX_EPOCH;
    let at = std::time::Duration::new(secs.unsigned_abs(), nanos);
    if secs >= 0 {
        epoch.checked_add(at)
    } else {
        epoch.checked_sub(std::time::Duration::from_secs(secs.unsigned_abs()))
    }
}

fn is_mdtm_time(text: &str) -> bool {
    let (whole, frac) = match text.split_once('.') {
        Some((w, f)) => (w, Some(f)),
        None => (text, None),
    };
    whole.len() == 14
        && whole.bytes().all(|b| b.is_ascii_digit())
        && frac.is_none_or(|f| !f.is_empty() && f.bytes().all(|b| b.is_ascii_digit()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mdtm_times_are_utc_instants() {
        let secs = |t: &str| {
            mdtm_time(t).map(|t| {
                t.duration_since(std::time::UNIX_EPOCH)
                    .unwrap()
                    .as_secs_f64()
            })
        };
        // `date -ud 2026-11-26T07:38:00 +%s`
        assert_eq!(secs("20261126073800"), Some(1_795_678_680.0));
        assert_eq!(secs("19700101000000"), Some(0.0));
        assert_eq!(secs("20000229235959.5"), Some(951_868_799.5));
        assert_eq!(secs("20261326073800"), None);
        assert_eq!(secs("2026112607380"), None);
    }

    #[test]
    fn mlst_facts() {
        assert_eq!(
            parse_mlst("Type=file;Size=1048576;Modify=20261126073800; /pub/a b.bin"),
            MlstFacts {
                size: Some(1_048_576),
                modify: Some("20261126073800".into())
            }
        );
        assert_eq!(
            parse_mlst(" size=0;type=file; empty"),
            MlstFacts {
                size: Some(0),
                modify: None
            }
        );
        assert_eq!(parse_mlst("type=dir;perm=el; pub"), MlstFacts::default());
        assert_eq!(parse_mlst("size=abc; x").size, None);
        assert_eq!(parse_mlst("").size, None);
        assert_eq!(
            parse_mlst("modify=20261126073800.123;size=5; x").modify,
            Some("20261126073800.123".into())
        );
    }

    #[test]
    fn mdtm_replies() {
        assert_eq!(
            parse_mdtm("213 20261126073800"),
            Some("20261126073800".into())
        );
        assert_eq!(
            parse_mdtm("213 20261126073800.5"),
            Some("20261126073800.5".into())
        );
        assert_eq!(parse_mdtm("213 yesterday"), None);
        assert_eq!(parse_mdtm("550 No such file"), None);
    }
}
