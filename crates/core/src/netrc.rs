//! Credentials from a netrc file (`--netrc`), for URLs that carry none.
//!
//! The format is curl's and ftp(1)'s: whitespace-separated tokens,
//! `machine NAME` (or `default`) followed by `login`, `password`, `account`,
//! and `macdef NAME` bodies that run to the next blank line. No crate of the
//! field is both maintained and small; this is the whole of it.

use std::path::Path;

use url::Url;

/// Login and password for one machine.
#[derive(Clone, PartialEq, Eq)]
pub(crate) struct Entry {
    login: Option<String>,
    password: Option<String>,
}

impl std::fmt::Debug for Entry {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Entry")
            .field("login", &self.login)
            .field("password", &self.password.as_ref().map(|_| "***"))
            .finish()
    }
}

/// A parsed netrc file.
#[derive(Debug, Default)]
pub(crate) struct Netrc {
    machines: Vec<(String, Entry)>,
    default: Option<Entry>,
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

    pub(crate) fn parse(text: &str) -> Netrc {
        let mut netrc = Netrc::default();
        // (machine name or None for `default`, entry)
        let mut current: Option<(Option<String>, Entry)> = None;
        let mut lines = text.lines();
        let mut pending: Vec<String> = Vec::new();
        let finish = |cur: Option<(Option<String>, Entry)>, netrc: &mut Netrc| match cur {
            Some((Some(name), entry)) => netrc.machines.push((name, entry)),
            Some((None, entry)) => netrc.default = netrc.default.take().or(Some(entry)),
            None => {}
        };
        loop {
            if pending.is_empty() {
                let Some(line) = lines.next() else { break };
                pending = line.split_whitespace().rev().map(str::to_owned).collect();
                continue;
            }
            let token = pending.pop().unwrap_or_default();
            let mut value = || pending.pop();
            match token.as_str() {
                "machine" => {
                    finish(current.take(), &mut netrc);
                    current = value().map(|name| {
                        (
                            Some(name),
                            Entry {
                                login: None,
                                password: None,
                            },
                        )
                    });
                }
                "default" => {
                    finish(current.take(), &mut netrc);
                    current = Some((
                        None,
                        Entry {
                            login: None,
                            password: None,
                        },
                    ));
                }
                "login" => {
                    let v = value();
                    if let Some((_, e)) = current.as_mut() {
                        e.login = v;
                    }
                }
                "password" => {
                    let v = value();
                    if let Some((_, e)) = current.as_mut() {
                        e.password = v;
                    }
                }
                "account" => {
                    value();
                }
                "macdef" => {
                    // The macro body runs to the next blank line.
                    pending.clear();
                    for line in lines.by_ref() {
                        if line.trim().is_empty() {
                            break;
                        }
                    }
                }
                _ => {}
            }
        }
        finish(current.take(), &mut netrc);
        netrc
    }

    fn lookup(&self, host: &str) -> Option<&Entry> {
        self.machines
            .iter()
            .find(|(name, _)| name.eq_ignore_ascii_case(host))
            .map(|(_, e)| e)
            .or(self.default.as_ref())
    }

    /// Puts the credentials for the URL's host into a URL that has none.
    pub(crate) fn apply(&self, url: &mut Url) {
        if !url.username().is_empty() || url.password().is_some() {
            return;
        }
        let Some(entry) = url.host_str().and_then(|h| self.lookup(h)) else {
            return;
        };
        let entry = entry.clone();
        if let Some(login) = &entry.login {
            let _ = url.set_username(login);
        }
        if let Some(password) = &entry.password {
            let _ = url.set_password(Some(password));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "machine files.example.org login alice password s3cret\n\
        macdef init\ncd /pub\n\n\
        machine other\n  login bob\n  password pw\n  account x\n\
        default login anonymous password guest@\n";

    #[test]
    fn machines_then_default() {
        let netrc = Netrc::parse(TEXT);
        let mut url = Url::parse("ftp://files.example.org/a").unwrap();
        netrc.apply(&mut url);
        assert_eq!((url.username(), url.password()), ("alice", Some("s3cret")));
        let mut url = Url::parse("sftp://OTHER:2222/a").unwrap();
        netrc.apply(&mut url);
        assert_eq!((url.username(), url.password()), ("bob", Some("pw")));
        let mut url = Url::parse("ftp://elsewhere/a").unwrap();
        netrc.apply(&mut url);
        // Userinfo is stored percent-encoded; protocols decode it.
        assert_eq!(
            (url.username(), url.password()),
            ("anonymous", Some("guest%40"))
        );
    }

    #[test]
    fn urls_with_credentials_are_left_alone() {
        let netrc = Netrc::parse(TEXT);
        let mut url = Url::parse("ftp://carol@files.example.org/a").unwrap();
        netrc.apply(&mut url);
        assert_eq!((url.username(), url.password()), ("carol", None));
        let netrc = Netrc::parse("machine a login x");
        let mut url = Url::parse("ftp://b/a").unwrap();
        netrc.apply(&mut url);
        assert_eq!(url.username(), "");
        assert!(!format!("{:?}", Netrc::parse(TEXT)).contains("s3cret"));
    }
}
