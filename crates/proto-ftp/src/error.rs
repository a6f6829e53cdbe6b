//! Every failure of the FTP client, mapped to a [`pymatris_core::Error`]
//! in one place: server replies by their code, connection failures,
//! timeouts and TLS.
//!
//! | reply / failure | kind | retried |
//! |---|---|---|
//! | 550 | NotFound | no |
//! | 530 | Auth | no |
//! | 553 | PermissionDenied | no |
//! | 421, 425 | Busy | yes |
//! | 426, 451 during a transfer | Truncated | yes |
//! | other 4xx | Protocol | yes |
//! | other 5xx, unexpected 1xx-3xx | Protocol | no |
//! | reset, refused, closed | Network | yes |
//! | no reply in time | Timeout | yes |
//! | TLS | Tls | no |

use std::io;
use std::time::Duration;

use pymatris_core::proto_util::connection_error;
use pymatris_core::{Error, ErrorKind, Hint};
use suppaftp::FtpError;
use suppaftp::types::Response;

/// The numeric code of a reply, read from its text (suppaftp's `Status`
/// turns codes it does not know into 0).
pub(crate) fn reply_code(reply: &Response) -> u32 {
    let b = &reply.body;
    if b.len() >= 3 && b[..3].iter().all(u8::is_ascii_digit) {
        b[..3].iter().fold(0, |n, d| n * 10 + u32::from(d - b'0'))
    } else {
        reply.status.code()
    }
}

/// The server's reply as one line of text: `550 Failed to open file.`
pub(crate) fn reply_text(reply: &Response) -> String {
    let text = String::from_utf8_lossy(&reply.body);
    let mut out = String::new();
    for line in text.lines().map(str::trim).filter(|l| !l.is_empty()) {
        if !out.is_empty() {
            out.push(' ');
        }
        out.push_str(line);
    }
    if out.is_empty() {
        out = reply_code(reply).to_string();
    }
    // A hostile server must not flood an error message.
    if out.len() > 300 {
        let mut cut = 300;
        while !out.is_char_boundary(cut) {
            cut -= 1;
        }
        out.truncate(cut);
        out.push('…');
    }
    out
}

/// The kind of a negative (or unexpected) reply, and whether trying again
/// could help.
pub(crate) fn kind_of_code(code: u32) -> (ErrorKind, bool) {
    match code {
        550 => (ErrorKind::NotFound, false),
        530 | 532 => (ErrorKind::Auth, false),
        553 => (ErrorKind::PermissionDenied, false),
        // 421: no more sessions; 425: no data connection, which servers
        // that count data connections among their connections (pyftpdlib,
        // pure-ftpd) answer when full.
        421 | 425 => (ErrorKind::Busy, true),
        400..=499 => (ErrorKind::Protocol, true),
        _ => (ErrorKind::Protocol, false),
    }
}

/// The error for a reply the server gave to `what` (e.g. `RETR
/// ftp://host/a.bin`, the URL already redacted).
pub(crate) fn reply_error(reply: &Response, what: &str) -> Error {
    let code = reply_code(reply);
    let (kind, retryable) = kind_of_code(code);
    Error::new(
        kind,
        format!("{what}: the server replied {}", reply_text(reply)),
    )
    .retryable(retryable)
}

/// The error for a failed transfer reply after the data (`426`, `451`…):
/// the bytes may be incomplete, so it is worth another attempt.
pub(crate) fn transfer_reply_error(reply: &Response, what: &str) -> Error {
    let code = reply_code(reply);
    let (kind, retryable) = match code {
        425 | 426 | 451 => (ErrorKind::Truncated, true),
        _ => kind_of_code(code),
    };
    Error::new(
        kind,
        format!("{what}: the transfer failed: {}", reply_text(reply)),
    )
    .retryable(retryable)
}

/// Any failure of the client while doing `what`.
pub(crate) fn ftp_error(err: FtpError, what: &str) -> Error {
    match err {
        FtpError::UnexpectedResponse(reply) => reply_error(&reply, what),
        FtpError::ConnectionError(e) => io_error(e, what),
        FtpError::SecureError(e) => {
            let untrusted = e.to_string().contains("certificate");
            let err = Error::new(ErrorKind::Tls, format!("{what}: {e}"));
            if untrusted {
                err.with_hint(Hint::TrustCa)
            } else {
                err
            }
        }
        FtpError::BadResponse => Error::new(
            ErrorKind::Protocol,
            format!("{what}: the server sent a reply that is not FTP"),
        )
        .retryable(true),
        FtpError::InvalidAddress(e) => Error::new(
            ErrorKind::Protocol,
            format!("{what}: the server sent a bad passive address"),
        )
        .with_source(e),
        FtpError::DataConnectionAlreadyOpen => Error::new(
            ErrorKind::Protocol,
            format!("{what}: a data connection is already open"),
        )
        .retryable(true),
    }
}

/// A connection failure while doing `what`.
pub(crate) fn io_error(err: io::Error, what: &str) -> Error {
    // A command line suppaftp refuses to send (CR/LF): the URL's fault.
    if err.kind() == io::ErrorKind::InvalidInput {
        return Error::new(ErrorKind::InvalidUrl, format!("{what}: {err}")).with_source(err);
    }
    connection_error(what, err)
}

/// No reply within the timeout.
pub(crate) fn timeout_error(timeout: Duration, what: &str) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("{what}: no reply within {}s", timeout.as_secs_f32()),
    )
}

/// The server refused one more connection: the file goes on with the
/// connections it has.
pub(crate) fn busy_error(what: &str, detail: &str) -> Error {
    Error::new(ErrorKind::Busy, format!("{what}: {detail}"))
}

/// Whether a failure leaves the control connection in step with the
/// server: a negative reply does (except 421, after which the server
/// closes), a broken or timed-out connection does not.
pub(crate) fn keeps_session(err: &FtpError) -> bool {
    matches!(err, FtpError::UnexpectedResponse(r) if reply_code(r) != 421)
}

/// Whether a reply says the command itself is unknown or not implemented
/// (so asking again is useless).
pub(crate) fn is_unsupported(err: &FtpError) -> bool {
    matches!(err, FtpError::UnexpectedResponse(r) if matches!(reply_code(r), 500 | 502 | 504 | 202))
}

#[cfg(test)]
mod tests {
    use super::*;
    use suppaftp::Status;

    fn reply(text: &str) -> Response {
        let code: u32 = text[..3].parse().unwrap();
        Response::new(Status::from(code), text.as_bytes().to_vec())
    }

    #[test]
    fn reply_codes_map_to_kinds() {
        let cases = [
            ("550 Failed to open file.\r\n", ErrorKind::NotFound, false),
            ("530 Login incorrect.\r\n", ErrorKind::Auth, false),
            (
                "553 Could not create file.\r\n",
                ErrorKind::PermissionDenied,
                false,
            ),
            (
                "421 There are too many connections from your internet address.\r\n",
                ErrorKind::Busy,
                true,
            ),
            ("450 Busy, try later.\r\n", ErrorKind::Protocol, true),
            (
                "425 Too many connections. Can't open data channel.\r\n",
                ErrorKind::Busy,
                true,
            ),
            ("500 Unknown command.\r\n", ErrorKind::Protocol, false),
            ("534 Policy.\r\n", ErrorKind::Protocol, false),
            ("552 Exceeded.\r\n", ErrorKind::Protocol, false),
            ("331 Need password.\r\n", ErrorKind::Protocol, false),
        ];
        for (text, kind, retryable) in cases {
            let err = reply_error(&reply(text), "RETR ftp://h/a");
            assert_eq!(err.kind(), kind, "{text}");
            assert_eq!(err.is_retryable(), retryable, "{text}");
            assert!(
                err.to_string().contains(text.trim_end()),
                "{err} should name the reply"
            );
            assert!(err.to_string().contains("ftp://h/a"));
        }
    }

    #[test]
    fn unknown_codes_are_read_from_the_text() {
        // suppaftp has no `Status` for 534: the code comes from the text.
        let r = Response::new(Status::Unknown, b"534 Policy.\r\n".to_vec());
        assert_eq!(reply_code(&r), 534);
        let r = reply("230-Welcome\r\n to the server\r\n230 Login successful.\r\n");
        assert_eq!(
            reply_text(&r),
            "230-Welcome to the server 230 Login successful."
        );
    }

    #[test]
    fn transfer_replies_after_the_data_are_truncations() {
        let err = transfer_reply_error(
            &reply("426 Failure writing network stream.\r\n"),
            "RETR ftp://h/a",
        );
        assert_eq!(err.kind(), ErrorKind::Truncated);
        assert!(err.is_retryable());
        let err = transfer_reply_error(&reply("451 Local error.\r\n"), "RETR x");
        assert_eq!(err.kind(), ErrorKind::Truncated);
        let err = transfer_reply_error(&reply("550 Gone.\r\n"), "RETR x");
        assert_eq!(err.kind(), ErrorKind::NotFound);
    }

    #[test]
    fn connection_failures_are_retried_and_tls_is_not() {
        let reset = FtpError::ConnectionError(io::Error::from(io::ErrorKind::ConnectionReset));
        let err = ftp_error(reset, "connecting");
        assert_eq!(err.kind(), ErrorKind::Network);
        assert!(err.is_retryable());
        let slow = FtpError::ConnectionError(io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(ftp_error(slow, "x").kind(), ErrorKind::Timeout);
        let tls = FtpError::SecureError("invalid peer certificate: UnknownIssuer".into());
        let err = ftp_error(tls, "x");
        assert_eq!(err.kind(), ErrorKind::Tls);
        assert!(!err.is_retryable());
        // The words of the hint are the front end's: no flag here.
        assert_eq!(err.hint(), Some(&Hint::TrustCa));
        assert!(!err.to_string().contains("--"), "{err}");
        let refused = FtpError::SecureError("handshake failure".into());
        assert_eq!(ftp_error(refused, "x").hint(), None);
        let crlf = FtpError::ConnectionError(io::Error::from(io::ErrorKind::InvalidInput));
        let err = ftp_error(crlf, "x");
        assert_eq!(err.kind(), ErrorKind::InvalidUrl);
        assert!(!err.is_retryable());
        assert_eq!(
            timeout_error(Duration::from_secs(3), "x").kind(),
            ErrorKind::Timeout
        );
        assert!(busy_error("x", "y").is_retryable());
    }

    #[test]
    fn which_failures_keep_the_session() {
        assert!(keeps_session(&FtpError::UnexpectedResponse(reply(
            "550 No.\r\n"
        ))));
        assert!(!keeps_session(&FtpError::UnexpectedResponse(reply(
            "421 Timeout.\r\n"
        ))));
        assert!(!keeps_session(&FtpError::BadResponse));
        assert!(is_unsupported(&FtpError::UnexpectedResponse(reply(
            "500 Unknown command.\r\n"
        ))));
        assert!(!is_unsupported(&FtpError::UnexpectedResponse(reply(
            "550 No.\r\n"
        ))));
    }
}
