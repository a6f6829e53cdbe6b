//! The CLI's words for a failure. The library says what went wrong and,
//! as a [`Hint`], what the user could change; only the CLI knows which of
//! its flags does that, so the sentence that names the flag is made here.
//!
//! The kind names of `--json` are the CLI's too: they stay as scripts know
//! them when the library renames a kind.

use pymatris_core::{Error, Hint};

/// What to do about `hint`, naming the flags of this command.
pub(crate) fn hint_text(hint: &Hint) -> Option<String> {
    Some(match hint {
        Hint::TrustCa => {
            "to trust the server's CA pass --ca-cert FILE, or skip the check with --insecure".into()
        }
        Hint::AcceptNewHostKey => {
            "if that fingerprint is right, run again with --accept-new-host-keys to add it".into()
        }
        Hint::KnownHostsFile => "give --known-hosts FILE".into(),
        Hint::Credentials => "give a password (in the URL or with --netrc), a key with \
                              --identity, or load a key into ssh-agent"
            .into(),
        Hint::EnableProtocol(scheme) => {
            format!("`{scheme}://` is not supported by this build of pymatris")
        }
        // A hint this CLI does not know yet: the message stands alone.
        _ => return None,
    })
}

/// The error as the summary and `--json` show it: its message (or its
/// whole chain), then what to do about it.
pub(crate) fn error_text(error: &Error, whole_chain: bool) -> String {
    error.text_with_hint(whole_chain, hint_text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pymatris_core::ErrorKind;

    #[test]
    fn hints_become_the_flags_of_this_command() {
        let tls = Error::new(ErrorKind::Tls, "invalid peer certificate").with_hint(Hint::TrustCa);
        let text = error_text(&tls, false);
        assert!(
            text.ends_with(
                "; to trust the server's CA pass --ca-cert FILE, or skip the check with --insecure"
            ),
            "{text}"
        );
        let unknown =
            Error::new(ErrorKind::PeerIdentity, "not known").with_hint(Hint::AcceptNewHostKey);
        assert!(error_text(&unknown, true).contains("--accept-new-host-keys"));
        let none = Error::new(ErrorKind::Auth, "no way").with_hint(Hint::Credentials);
        assert!(error_text(&none, false).contains("--identity"));
        let home = Error::new(ErrorKind::PeerIdentity, "no home").with_hint(Hint::KnownHostsFile);
        assert!(error_text(&home, false).contains("--known-hosts FILE"));
        let scheme = Error::new(ErrorKind::UnsupportedScheme, "no protocol")
            .with_hint(Hint::EnableProtocol("gopher".into()));
        assert!(
            error_text(&scheme, false)
                .contains("`gopher://` is not supported by this build of pymatris")
        );
        let plain = Error::new(ErrorKind::NotFound, "HTTP 404 Not Found");
        assert_eq!(error_text(&plain, false), "not found: HTTP 404 Not Found");
    }

    #[test]
    fn json_kind_names_stay_as_scripts_know_them() {
        assert_eq!(ErrorKind::PeerIdentity.public_name(), "HostKey");
        assert_eq!(ErrorKind::Tls.public_name(), "Tls");
        assert_eq!(ErrorKind::NotFound.public_name(), "NotFound");
    }
}
