//! Every failure of russh and of our SFTP client becomes a `pymatris_core::Error`
//! here, and nowhere else, so the rules of what is retried live in one
//! place.
//!
//! The rules: a missing file and a refused permission are permanent;
//! authentication and host-key failures are permanent; resets, timeouts,
//! disconnects and channel failures are retried (the engine resumes from
//! the last byte written).

use std::io;
use std::time::Duration;

use crate::client::{SftpError, StatusCode};
use pymatris_core::proto_util::connection_error;
use pymatris_core::{Error, ErrorKind, Hint};

/// What a failure did to the SSH connection it happened on.
pub(crate) fn breaks_connection(err: &Error) -> bool {
    matches!(err.kind(), ErrorKind::Network | ErrorKind::Timeout)
}

/// An error of the SSH transport (connecting, key exchange, channels).
/// `what` says what was being done, e.g. "connecting to host:22".
pub(crate) fn ssh(what: &str, err: russh::Error) -> Error {
    use russh::Error as E;
    // The network: a reset, a closed socket, a dead peer. Another attempt
    // on a new connection may well work.
    let err = match err {
        E::IO(io) => return connection_error(what, io),
        other => other,
    };
    let (kind, retry) = match &err {
        E::Disconnect
        | E::HUP
        | E::SendError
        | E::RecvError
        | E::Pending
        | E::Join(_)
        | E::PacketAuth
        | E::DecryptionError => (ErrorKind::Network, true),
        E::ConnectionTimeout | E::KeepaliveTimeout | E::InactivityTimeout | E::Elapsed(_) => {
            (ErrorKind::Timeout, true)
        }
        // The server would not open a channel (MaxSessions, resource
        // shortage): other connections may go on; this one may retry.
        E::ChannelOpenFailure(_) | E::WrongChannel => (ErrorKind::Busy, true),
        // A handshake that went wrong half-way can go right next time.
        E::Kex | E::KexInit | E::Inconsistent | E::StrictKeyExchangeViolation { .. } => {
            (ErrorKind::Protocol, true)
        }
        // A server whose signature does not verify against its own key is
        // either broken or an impostor: never retried.
        E::WrongServerSig | E::UnknownKey | E::KeyChanged { .. } => {
            (ErrorKind::PeerIdentity, false)
        }
        E::NotAuthenticated | E::NoAuthMethod | E::UnsupportedAuthMethod => {
            (ErrorKind::Auth, false)
        }
        // No common algorithm, a bad version string, a bad key: the same
        // server will answer the same way.
        _ => (ErrorKind::Protocol, false),
    };
    Error::new(kind, format!("{what}: {err}"))
        .retryable(retry)
        .with_source(err)
}

/// An error of an SFTP request. `what` names the request and the path,
/// e.g. "opening /srv/a.bin".
pub(crate) fn sftp(what: &str, err: SftpError) -> Error {
    let (kind, retry) = match &err {
        SftpError::Status { code, .. } => match *code {
            StatusCode::NO_SUCH_FILE | StatusCode::NO_SUCH_PATH => (ErrorKind::NotFound, false),
            StatusCode::PERMISSION_DENIED => (ErrorKind::PermissionDenied, false),
            // OpenSSH's sftp-server answers a plain "Failure" both for
            // reading a directory and for transient trouble (EIO, its handle
            // table full): worth one more try, which the engine bounds.
            StatusCode::FAILURE => (ErrorKind::Protocol, true),
            StatusCode::NO_CONNECTION | StatusCode::CONNECTION_LOST => (ErrorKind::Network, true),
            // EOF never reaches here (reads handle it); these are a server
            // that does not speak our SFTP.
            StatusCode::EOF
            | StatusCode::OK
            | StatusCode::BAD_MESSAGE
            | StatusCode::OP_UNSUPPORTED => (ErrorKind::Protocol, false),
            // The codes of later drafts, from a server that mixes them in:
            // as for "Failure".
            _ => (ErrorKind::Protocol, true),
        },
        SftpError::Timeout => (ErrorKind::Timeout, true),
        // The channel under the session ended or broke: the SSH connection
        // went away, or the session is unusable (a garbled reply ends it).
        SftpError::Closed(_) => (ErrorKind::Network, true),
        SftpError::Protocol(_) => (ErrorKind::Protocol, true),
    };
    let text = err.to_string();
    Error::new(kind, format!("{what}: {text}"))
        .retryable(retry)
        .with_source(err)
}

/// A step that took longer than the timeout.
pub(crate) fn timed_out(what: &str, after: Duration) -> Error {
    Error::new(
        ErrorKind::Timeout,
        format!("{what}: no answer within {}s", after.as_secs_f32()),
    )
}

/// The server's key is not in `known_hosts`: the message shows its
/// fingerprint, and the hint says it may be accepted once checked.
pub(crate) fn unknown_host(host_port: &str, key_desc: &str, files: &str) -> Error {
    Error::new(
        ErrorKind::PeerIdentity,
        format!(
            "the host key of {host_port} is not known: the server offered {key_desc}, which is \
             not in {files}. Check that fingerprint (ask the server's administrator, or compare \
             with `ssh-keygen -lf` of the server's key) before accepting it"
        ),
    )
    .with_hint(Hint::AcceptNewHostKey)
}

/// The server's key differs from the one recorded for it.
pub(crate) fn host_key_changed(host_port: &str, key_desc: &str, recorded_at: &str) -> Error {
    Error::new(
        ErrorKind::PeerIdentity,
        format!(
            "HOST KEY CHANGED for {host_port}! The server offered {key_desc}, but {recorded_at} \
             records a different key for it. Someone may be intercepting the connection (a \
             possible man-in-the-middle attack), or the server's key was replaced. pymatris will \
             not connect; if the change is expected, remove the old entry (ssh-keygen -R) and \
             check the new fingerprint"
        ),
    )
}

/// The server's key is listed as `@revoked`.
pub(crate) fn host_key_revoked(host_port: &str, key_desc: &str, recorded_at: &str) -> Error {
    Error::new(
        ErrorKind::PeerIdentity,
        format!(
            "the host key of {host_port} ({key_desc}) is REVOKED ({recorded_at}): pymatris will \
             not connect"
        ),
    )
}

/// `known_hosts` could not be read or written.
pub(crate) fn known_hosts_io(what: &str, err: io::Error) -> Error {
    Error::new(ErrorKind::PeerIdentity, format!("{what}: {err}")).with_source(err)
}

/// No method got the user in. `tried` names each method (never a secret).
pub(crate) fn auth_failed(
    who: &str,
    tried: &[String],
    notes: &[String],
    server_accepts: Option<&str>,
) -> Error {
    let mut msg = if tried.is_empty() {
        format!("no way to log in as {who}: no password, no private key and no key in ssh-agent")
    } else {
        format!("{who} refused; tried {}", tried.join(", "))
    };
    if let Some(methods) = server_accepts {
        msg.push_str(&format!("; the server accepts: {methods}"));
    }
    for note in notes {
        msg.push_str("; ");
        msg.push_str(note);
    }
    let err = Error::new(ErrorKind::Auth, msg);
    if tried.is_empty() {
        err.with_hint(Hint::Credentials)
    } else {
        err
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(code: StatusCode) -> SftpError {
        SftpError::Status {
            code,
            message: format!("{code}"),
        }
    }

    #[test]
    fn sftp_statuses_map_to_kinds_and_retry_policies() {
        let cases = [
            (status(StatusCode::NO_SUCH_FILE), ErrorKind::NotFound, false),
            (status(StatusCode::NO_SUCH_PATH), ErrorKind::NotFound, false),
            (
                status(StatusCode::PERMISSION_DENIED),
                ErrorKind::PermissionDenied,
                false,
            ),
            (status(StatusCode::FAILURE), ErrorKind::Protocol, true),
            (status(StatusCode(9)), ErrorKind::Protocol, true),
            (
                status(StatusCode::OP_UNSUPPORTED),
                ErrorKind::Protocol,
                false,
            ),
            (
                status(StatusCode::CONNECTION_LOST),
                ErrorKind::Network,
                true,
            ),
            (SftpError::Timeout, ErrorKind::Timeout, true),
            (
                SftpError::Closed("the server ended the channel".into()),
                ErrorKind::Network,
                true,
            ),
        ];
        for (err, kind, retry) in cases {
            let text = err.to_string();
            let e = sftp("opening /x", err);
            assert_eq!(e.kind(), kind, "{text}");
            assert_eq!(e.is_retryable(), retry, "{text}");
            assert!(e.to_string().starts_with(&format!("{kind}: opening /x: ")));
        }
    }

    #[test]
    fn transport_failures_are_retried_and_trust_failures_are_not() {
        let reset = io::Error::new(io::ErrorKind::ConnectionReset, "reset by peer");
        let cases = [
            (russh::Error::IO(reset), ErrorKind::Network, true),
            (russh::Error::HUP, ErrorKind::Network, true),
            (russh::Error::Disconnect, ErrorKind::Network, true),
            (russh::Error::KeepaliveTimeout, ErrorKind::Timeout, true),
            (russh::Error::WrongServerSig, ErrorKind::PeerIdentity, false),
            (russh::Error::Version, ErrorKind::Protocol, false),
        ];
        for (err, kind, retry) in cases {
            let text = err.to_string();
            let e = ssh("connecting to h:22", err);
            assert_eq!((e.kind(), e.is_retryable()), (kind, retry), "{text}");
        }
        let timed = io::Error::new(io::ErrorKind::TimedOut, "slow");
        assert_eq!(ssh("x", russh::Error::IO(timed)).kind(), ErrorKind::Timeout);
        assert!(breaks_connection(&ssh("x", russh::Error::HUP)));
        assert!(!breaks_connection(&sftp(
            "x",
            status(StatusCode::NO_SUCH_FILE)
        )));
    }

    #[test]
    fn auth_messages_name_methods_not_secrets() {
        let e = auth_failed(
            "u@h:22",
            &["password".into(), "publickey (ssh-agent, 1 key)".into()],
            &["/k is encrypted".into()],
            Some("publickey,password"),
        );
        assert_eq!(e.kind(), ErrorKind::Auth);
        assert!(!e.is_retryable());
        let text = e.to_string();
        assert!(
            text.contains("tried password, publickey (ssh-agent, 1 key)"),
            "{text}"
        );
        assert!(
            text.contains("the server accepts: publickey,password"),
            "{text}"
        );
        assert_eq!(e.hint(), None);
        let none = auth_failed("u@h:22", &[], &[], None);
        assert_eq!(none.hint(), Some(&Hint::Credentials));
        assert!(!none.to_string().contains("--"), "{none}");
    }

    #[test]
    fn host_key_messages_are_loud_and_hint_without_naming_a_flag() {
        let changed = host_key_changed("h:22", "ssh-ed25519 SHA256:abc", "kh line 3");
        assert!(changed.to_string().contains("HOST KEY CHANGED for h:22"));
        assert!(changed.to_string().contains("man-in-the-middle"));
        assert!(!changed.is_retryable());
        assert_eq!(changed.hint(), None);
        let unknown = unknown_host("h:22", "ssh-ed25519 SHA256:abc", "kh");
        assert!(!unknown.to_string().contains("--"), "{unknown}");
        assert_eq!(unknown.hint(), Some(&Hint::AcceptNewHostKey));
        assert!(unknown.to_string().contains("SHA256:abc"));
        assert_eq!(unknown.kind(), ErrorKind::PeerIdentity);
        assert!(!unknown.is_retryable());
    }
}
