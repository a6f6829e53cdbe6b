//! Credentials from a netrc file (`--netrc`), as curl and ftp read it, for
//! URLs of any protocol that carry no password: the engine puts them into
//! the URL before a protocol sees it.
//!
//! The crates.io `netrc` crate was last released in 2017 (edition 2015), so
//! this is the small parser of the format: `machine NAME`, `default`,
//! `login`, `password`, `account` tokens, double-quoted tokens with `\`
//! escapes, `macdef` bodies skipped up to the next blank line.

use std::fmt;
use std::path::Path;

use percent_encoding::{AsciiSet, NON_ALPHANUMERIC, percent_decode_str, utf8_percent_encode};
use url::Url;

/// What is escaped of a login or password put into a URL: all but RFC
/// 3986's unreserved characters.
const USERINFO: &AsciiSet = &NON_ALPHANUMERIC
    .remove(b'-')
    .remove(b'.')
    .remove(b'_')
    .remove(b'~');

/// One `machine` (or `default`) entry.
#[derive(Clone, Default, PartialEq, Eq)]
pub(crate) struct Entry {
    /// `None` for the `default` entry.
    pub(crate) machine: Option<String>,
    pub(crate) login: Option<String>,
    pub(crate) password: Option<String>,
}

impl fmt::Debug for Entry {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Entry")
            .field("machine", &self.machine)
            .field("login", &self.login)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// The entries of a netrc file, in order.
#[derive(Debug, Clone, Default)]
pub(crate) struct Netrc {
    entries: Vec<Entry>,
}

impl Netrc {
    /// Reads `path`; a missing file is an empty netrc, as curl treats it.
    pub(crate) fn load(path: &Path) -> std::io::Result<Netrc> {
        match std::fs::read_to_string(path) {
            Ok(text) => Ok(Netrc::parse(&text)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Netrc::default()),
            Err(e) => Err(e),
        }
    }

    /// Puts the login and password for the URL's host (and user, when the
    /// URL names one) into a URL that has no password.
    pub(crate) fn apply(&self, url: &mut Url) {
        if url.password().is_some() {
            return;
        }
        let user = match url.username() {
            "" => None,
            u => Some(percent_decode_str(u).decode_utf8_lossy().into_owned()),
        };
        let Some(entry) = url.host_str().and_then(|h| self.lookup(h, user.as_deref())) else {
            return;
        };
        let entry = entry.clone();
        // The URL holds its user info percent-encoded, and the protocols
        // decode it: a `%` of the file must reach them as `%`, not as the
        // start of an escape (`p%41ss` is not `pAss`).
        if user.is_none()
            && let Some(login) = &entry.login
        {
            let _ = url.set_username(&utf8_percent_encode(login, USERINFO).to_string());
        }
        if let Some(password) = &entry.password {
            let _ = url.set_password(Some(&utf8_percent_encode(password, USERINFO).to_string()));
            // Libraries below may log it in their own words: the log
            // writer hides it by value (`redact.rs`).
            crate::redact::register_secret(password);
            crate::redact::register_url_secrets(url);
        }
    }

    /// Parses netrc text. Unknown tokens are skipped, like curl does.
    pub(crate) fn parse(text: &str) -> Netrc {
        let mut entries: Vec<Entry> = Vec::new();
        let mut in_macdef = false;
        // A keyword waiting for its value, across line ends.
        let mut expect: Option<String> = None;
        for line in text.lines() {
            if in_macdef {
                if line.trim().is_empty() {
                    in_macdef = false;
                }
                continue;
            }
            for token in tokens(line) {
                if let Some(key) = expect.take() {
                    match key.as_str() {
                        "machine" => entries.push(Entry {
                            machine: Some(token),
                            ..Entry::default()
                        }),
                        "login" => {
                            if let Some(e) = entries.last_mut() {
                                e.login = Some(token);
                            }
                        }
                        "password" => {
                            if let Some(e) = entries.last_mut() {
                                e.password = Some(token);
                            }
                        }
                        _ => {}
                    }
                    continue;
                }
                match token.as_str() {
                    "default" => entries.push(Entry::default()),
                    "macdef" => {
                        // The macro's name is on this line; its body follows.
                        in_macdef = true;
                        break;
                    }
                    "machine" | "login" | "password" | "account" => expect = Some(token),
                    _ => {}
                }
            }
        }
        Netrc { entries }
    }

    /// The entry for `host` (and `user`, when the URL names one), else the
    /// `default` entry.
    pub(crate) fn lookup(&self, host: &str, user: Option<&str>) -> Option<&Entry> {
        let user_ok = |e: &&Entry| match (user, &e.login) {
            (Some(u), Some(l)) => u == l,
            _ => true,
        };
        self.entries
            .iter()
            .filter(|e| {
                e.machine
                    .as_deref()
                    .is_some_and(|m| m.eq_ignore_ascii_case(host))
            })
            .find(user_ok)
            .or_else(|| {
                self.entries
                    .iter()
                    .filter(|e| e.machine.is_none())
                    .find(user_ok)
            })
    }
}

/// The whitespace-separated tokens of a line; `"…"` quotes spaces, `\`
/// escapes the next character inside quotes.
fn tokens(line: &str) -> Vec<String> {
    let mut out = Vec::new();
    let mut chars = line.chars().peekable();
    loop {
        while chars.next_if(|c| c.is_whitespace()).is_some() {}
        let Some(&first) = chars.peek() else { break };
        let mut tok = String::new();
        if first == '"' {
            chars.next();
            while let Some(c) = chars.next() {
                match c {
                    '"' => break,
                    '\\' => tok.extend(chars.next()),
                    c => tok.push(c),
                }
            }
        } else {
            while let Some(c) = chars.next_if(|c| !c.is_whitespace()) {
                tok.push(c);
            }
        }
        out.push(tok);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn machines_default_quotes_and_macros() {
        let n = Netrc::parse(
            "machine a.example login alice password \"p w\\\"x\"\n\
             macdef init\n  machine evil login mallory password no\n\n\
             machine b.example\n  login bob\n  password\n  secret account acct\n\
             default login anonymous password me@example.org\n",
        );
        let a = n.lookup("A.example", None).unwrap();
        assert_eq!(a.login.as_deref(), Some("alice"));
        assert_eq!(a.password.as_deref(), Some("p w\"x"));
        let b = n.lookup("b.example", Some("bob")).unwrap();
        assert_eq!(b.password.as_deref(), Some("secret"));
        assert!(n.lookup("evil", None).unwrap().machine.is_none());
        // Other hosts fall to `default`; a user no entry names gets nothing
        // (another login's password is not theirs).
        let d = n.lookup("c.example", None);
        assert_eq!(d.and_then(|e| e.login.as_deref()), Some("anonymous"));
        assert!(n.lookup("b.example", Some("carol")).is_none());
        assert!(!format!("{n:?}").contains("secret"));
    }

    #[test]
    fn credentials_go_into_urls_without_a_password() {
        let n = Netrc::parse(
            "machine h login alice password s3cret\ndefault login anonymous password a@b\n",
        );
        let mut url = Url::parse("ftp://h/f").unwrap();
        n.apply(&mut url);
        assert_eq!((url.username(), url.password()), ("alice", Some("s3cret")));
        let mut url = Url::parse("sftp://alice@h:2222/f").unwrap();
        n.apply(&mut url);
        assert_eq!(url.password(), Some("s3cret"));
        let mut url = Url::parse("ftp://carol:mine@h/f").unwrap();
        n.apply(&mut url);
        assert_eq!((url.username(), url.password()), ("carol", Some("mine")));
        // Userinfo is stored percent-encoded; protocols decode it.
        let mut url = Url::parse("ftp://elsewhere/f").unwrap();
        n.apply(&mut url);
        assert_eq!(
            (url.username(), url.password()),
            ("anonymous", Some("a%40b"))
        );
    }

    /// Found by the property test: `%41` in a password reached the server
    /// as `A`.
    #[test]
    fn percent_signs_and_at_signs_reach_the_url_as_written() {
        let n = Netrc::parse("machine h login \"a@b\" password \"p%41ss:/@\"\n");
        let mut url = Url::parse("ftp://h/x").unwrap();
        n.apply(&mut url);
        assert_eq!(
            percent_decode_str(url.password().unwrap()).decode_utf8_lossy(),
            "p%41ss:/@"
        );
        assert_eq!(
            percent_decode_str(url.username()).decode_utf8_lossy(),
            "a@b"
        );
        assert_eq!(url.host_str(), Some("h"));
    }

    #[test]
    fn empty_and_garbage_files_have_no_entries() {
        assert!(Netrc::parse("").lookup("h", None).is_none());
        assert!(
            Netrc::parse("login x password y")
                .lookup("h", None)
                .is_none()
        );
    }
}

/// Property tests: any file parses without a panic, and entries written
/// in the format read back, also through a URL.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    /// `text` as a netrc token: quoted, with `"` and `\` escaped.
    fn quoted(text: &str) -> String {
        format!("\"{}\"", text.replace('\\', "\\\\").replace('"', "\\\""))
    }

    proptest! {
        #[test]
        fn any_text_parses_without_panic(
            text in prop_oneof![
                "\\PC{0,300}",
                "((machine|login|password|account|macdef|default|\"|\\\\|\n| |x)){0,60}",
            ],
            host in "[a-z]{1,3}",
        ) {
            let netrc = Netrc::parse(&text);
            let _ = netrc.lookup(&host, None);
            let mut url = Url::parse(&format!("ftp://{host}/x")).unwrap();
            netrc.apply(&mut url);
            prop_assert_eq!(url.host_str(), Some(host.as_str()));
        }

        #[test]
        fn written_entries_read_back(
            entries in proptest::collection::vec(
                ("[a-z0-9-]{1,10}", "[a-zA-Z0-9_.@-]{1,10}", "[^\\x00-\\x1f\\x7f]{1,20}", any::<bool>()),
                1..5,
            ),
        ) {
            let mut text = String::new();
            for (i, (machine, login, password, one_line)) in entries.iter().enumerate() {
                let sep = if *one_line { " " } else { "\n  " };
                text.push_str(&format!(
                    "machine m{i}.{machine}{sep}login {}{sep}password {}\n",
                    quoted(login),
                    quoted(password)
                ));
            }
            let netrc = Netrc::parse(&text);
            for (i, (machine, login, password, _)) in entries.iter().enumerate() {
                let host = format!("m{i}.{machine}");
                let entry = netrc.lookup(&host, None).unwrap();
                prop_assert_eq!(entry.login.as_deref(), Some(login.as_str()));
                prop_assert_eq!(entry.password.as_deref(), Some(password.as_str()));
                let mut url = Url::parse(&format!("sftp://{host}/x")).unwrap();
                netrc.apply(&mut url);
                let got = percent_decode_str(url.password().unwrap()).decode_utf8_lossy();
                prop_assert_eq!(got.as_ref(), password.as_str());
                let got = percent_decode_str(url.username()).decode_utf8_lossy();
                prop_assert_eq!(got.as_ref(), login.as_str());
            }
        }
    }
}
