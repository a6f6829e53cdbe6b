//! The Python package's words for a failure: the library's hint (what the
//! user could change) said as the `SessionConfig` field that does it, and
//! the kind names its exceptions are keyed by (`pymatris.exceptions`),
//! which stay as Python code knows them when the library renames a kind.

use pymatris_core::{Error, Hint};

/// What to do about `hint`, in terms of this package's API.
fn hint_text(hint: &Hint) -> Option<String> {
    Some(match hint {
        Hint::TrustCa => "to trust the server's CA pass SessionConfig(ca_cert=FILE), or skip the \
                          check with SessionConfig(insecure=True)"
            .into(),
        Hint::AcceptNewHostKey => "if that fingerprint is right, pass \
                                   SessionConfig(accept_new_host_keys=True) to add it"
            .into(),
        Hint::KnownHostsFile => "pass SessionConfig(known_hosts=FILE)".into(),
        Hint::Credentials => "give a password (in the URL or with SessionConfig(netrc=True)), a \
                              key with SessionConfig(identity=FILE), or load a key into ssh-agent"
            .into(),
        Hint::EnableProtocol(scheme) => {
            format!("`{scheme}://` is not supported by this build of pymatris")
        }
        // A hint this package does not know yet: the message stands alone.
        _ => return None,
    })
}

/// The error's text (or its whole chain), then what to do about it.
pub(crate) fn error_text(error: &Error, whole_chain: bool) -> String {
    error.text_with_hint(whole_chain, hint_text)
}

#[cfg(test)]
mod tests {
    use super::*;
    use pymatris_core::ErrorKind;

    #[test]
    fn hints_name_session_config_fields_not_cli_flags() {
        let unknown =
            Error::new(ErrorKind::PeerIdentity, "not known").with_hint(Hint::AcceptNewHostKey);
        let text = error_text(&unknown, false);
        assert!(text.contains("accept_new_host_keys=True"), "{text}");
        assert!(!text.contains("--"), "{text}");
        let tls = Error::new(ErrorKind::Tls, "bad cert").with_hint(Hint::TrustCa);
        assert!(error_text(&tls, true).contains("SessionConfig(ca_cert=FILE)"));
    }
}
