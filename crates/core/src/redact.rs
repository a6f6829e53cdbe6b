//! Keeps passwords out of everything a user or a log sees: URLs are shown
//! as `scheme://user:***@host/path`, and a log line passes through
//! [`redact_text`] before it is written.
//!
//! Logs are filtered as text, after formatting, because the libraries
//! below pymatris log what they send in their own words (suppaftp traces
//! `PASS <password>`), and no setting of theirs turns that off. Two nets:
//! the secrets this process knows by value ([`register_secret`]: URL and
//! netrc passwords, header values), and patterns for the rest (URL user
//! info, FTP `PASS`/`ACCT`, `Authorization`, `Cookie`, `password` fields).

use std::borrow::Cow;
use std::cmp::Reverse;
use std::collections::BTreeSet;
use std::sync::{PoisonError, RwLock};

use base64::Engine as _;
use percent_encoding::percent_decode_str;
use url::Url;

/// What a hidden secret is replaced with.
const HIDDEN: &str = "***";

/// Secrets shorter than this are hidden by the patterns only: hiding every
/// `a` or `pw` of a log by value would make it unreadable.
pub const MIN_SECRET_LEN: usize = 3;

/// Secrets known by value, longest first (so that a secret holding another
/// is hidden whole); a set, so that a batch of many URLs with passwords
/// registers them in `O(n log n)`. The process has one ([`SECRETS`]); a
/// test makes its own, so that what other tests register (netrc's
/// property tests register arbitrary words) never reaches its assertions.
struct Secrets(RwLock<BTreeSet<(Reverse<usize>, String)>>);

/// The secrets of this process, for every log line it writes.
static SECRETS: Secrets = Secrets::new();

impl Secrets {
    const fn new() -> Self {
        Secrets(RwLock::new(BTreeSet::new()))
    }

    fn register(&self, secret: &str) {
        if secret.chars().count() < MIN_SECRET_LEN {
            return;
        }
        let entry = (Reverse(secret.len()), secret.to_owned());
        let known = self
            .0
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .contains(&entry);
        if !known {
            self.0
                .write()
                .unwrap_or_else(PoisonError::into_inner)
                .insert(entry);
        }
    }

    fn register_url(&self, url: &Url) {
        let Some(password) = url.password() else {
            return;
        };
        self.register(password);
        let decoded = percent_decode_str(password).decode_utf8_lossy();
        self.register(&decoded);
        let user = percent_decode_str(url.username()).decode_utf8_lossy();
        self.register(
            &base64::engine::general_purpose::STANDARD.encode(format!("{user}:{decoded}")),
        );
    }

    fn redact<'a>(&self, text: &'a str) -> Cow<'a, str> {
        let mut out = Cow::Borrowed(text);
        {
            let secrets = self.0.read().unwrap_or_else(PoisonError::into_inner);
            for (_, secret) in secrets.iter() {
                if out.contains(secret.as_str()) {
                    out = Cow::Owned(out.replace(secret.as_str(), HIDDEN));
                }
            }
        }
        let patterned = redact_patterns(&out);
        match patterned {
            Cow::Borrowed(_) => out,
            Cow::Owned(changed) => Cow::Owned(changed),
        }
    }
}

/// Remembers `secret` so that [`redact_text`] hides it wherever it appears,
/// for the rest of the process. Secrets shorter than [`MIN_SECRET_LEN`]
/// are ignored.
pub fn register_secret(secret: &str) {
    SECRETS.register(secret);
}

/// Registers the password of `url`, as written and percent-decoded, and
/// the `Basic` credentials made of it.
pub fn register_url_secrets(url: &Url) {
    SECRETS.register_url(url);
}

/// `text` (log lines) with every secret hidden: those registered with
/// [`register_secret`], the password of any URL in it, the argument of FTP
/// `PASS` and `ACCT`, and the values of `Authorization`,
/// `Proxy-Authorization`, `Cookie`, `Set-Cookie` and fields named like
/// passwords, tokens or keys.
pub fn redact_text(text: &str) -> Cow<'_, str> {
    SECRETS.redact(text)
}

/// [`redact_text`] without the registered secrets.
fn redact_patterns(text: &str) -> Cow<'_, str> {
    let mut hide: Vec<(usize, usize)> = Vec::new();
    let mut start = 0;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        for (from, to) in line_secrets(body) {
            hide.push((start + from, start + to));
        }
        start += line.len();
    }
    if hide.is_empty() {
        return Cow::Borrowed(text);
    }
    hide.sort_unstable();
    let mut out = String::with_capacity(text.len());
    let mut at = 0;
    for (from, to) in hide {
        if to <= at {
            continue;
        }
        let from = from.max(at);
        out.push_str(&text[at..from]);
        out.push_str(HIDDEN);
        at = to;
    }
    out.push_str(&text[at..]);
    Cow::Owned(out)
}

/// Field and header names whose values are secret (lower case). Matched
/// inside longer names too: `proxy-authorization`, `set-cookie`,
/// `x-api-key`, `access_token`.
const SECRET_KEYS: [&str; 9] = [
    "authorization",
    "cookie",
    "password",
    "passwd",
    "passphrase",
    "secret",
    "token",
    "api-key",
    "apikey",
];

/// FTP commands whose argument is secret (as sent, upper case).
const SECRET_COMMANDS: [&str; 2] = ["PASS ", "ACCT "];

/// The byte ranges of one line (no line end) that hold secrets.
fn line_secrets(line: &str) -> Vec<(usize, usize)> {
    let mut found = Vec::new();
    let bytes = line.as_bytes();
    let lower = line.to_ascii_lowercase();
    // FTP commands: the rest of the line.
    for command in SECRET_COMMANDS {
        for (i, _) in line.match_indices(command) {
            let boundary = i == 0 || !bytes[i - 1].is_ascii_alphanumeric();
            let from = skip_spaces(bytes, i + command.len());
            if boundary && from < bytes.len() {
                found.push((from, bytes.len()));
            }
        }
    }
    // `key: value`, `key=value`, `"key": "value"`.
    for key in SECRET_KEYS {
        for (i, _) in lower.match_indices(key) {
            let mut at = i + key.len();
            // The rest of a longer name (`authorization_header`), a
            // closing quote.
            while at < bytes.len()
                && (bytes[at].is_ascii_alphanumeric() || b"_-".contains(&bytes[at]))
            {
                at += 1;
            }
            if at < bytes.len() && (bytes[at] == b'"' || bytes[at] == b'\'') {
                at += 1;
            }
            at = skip_spaces(bytes, at);
            let Some(&sep) = bytes.get(at) else { continue };
            if sep != b':' && sep != b'=' {
                continue;
            }
            // `::` is a Rust path, not a value.
            if bytes.get(at + 1) == Some(&b':') {
                continue;
            }
            let from = skip_spaces(bytes, at + 1);
            if let Some(range) = value_at(bytes, from, sep == b'=') {
                found.push(range);
            }
        }
    }
    // URL user info: `scheme://user:password@host`.
    for (i, _) in line.match_indices("://") {
        let from = i + 3;
        let end = bytes[from..]
            .iter()
            .position(|b| b"/?#\"'<> \t\\".contains(b))
            .map_or(bytes.len(), |n| from + n);
        let authority = &line[from..end];
        if let Some(at) = authority.rfind('@')
            && let Some(colon) = authority[..at].find(':')
        {
            found.push((from + colon + 1, from + at));
        }
    }
    found.retain(|(from, to)| from < to);
    found
}

fn skip_spaces(bytes: &[u8], mut at: usize) -> usize {
    while at < bytes.len() && (bytes[at] == b' ' || bytes[at] == b'\t') {
        at += 1;
    }
    at
}

/// The value starting at `from`: a quoted string up to its closing quote,
/// else (after `=`, a `key=value` field) up to the next space, else up to
/// the end of the line.
fn value_at(bytes: &[u8], from: usize, field: bool) -> Option<(usize, usize)> {
    let first = *bytes.get(from)?;
    if first == b'"' || first == b'\'' {
        let mut at = from + 1;
        while at < bytes.len() && bytes[at] != first {
            at += if bytes[at] == b'\\' { 2 } else { 1 };
        }
        return Some((from + 1, at.min(bytes.len())));
    }
    let end = if field {
        bytes[from..]
            .iter()
            .position(|b| b.is_ascii_whitespace())
            .map_or(bytes.len(), |n| from + n)
    } else {
        bytes.len()
    };
    Some((from, end))
}

/// The URL as it may be shown: its password, if any, replaced by `***`.
pub fn redact_url(url: &Url) -> String {
    if url.password().is_some() {
        let mut shown = url.clone();
        // Setting a password only fails for URLs that cannot have one, and
        // this one has one.
        let _ = shown.set_password(Some("***"));
        shown.to_string()
    } else {
        url.to_string()
    }
}

/// Like [`redact_url`], for text that may not parse as a URL: the part
/// between `:` and `@` of the authority is hidden anyway.
pub fn redact_url_str(text: &str) -> String {
    if let Ok(url) = Url::parse(text) {
        return redact_url(&url);
    }
    // Unparsable: hide whatever looks like `user:password@` in the
    // authority, so a malformed URL cannot leak its password in an error.
    let (scheme, rest) = match text.find("://") {
        Some(i) => (&text[..i + 3], &text[i + 3..]),
        None => ("", text),
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let authority = &rest[..authority_end];
    match (authority.rfind('@'), authority.find(':')) {
        (Some(at), Some(colon)) if colon < at => {
            format!("{scheme}{}:***{}", &authority[..colon], &rest[at..])
        }
        _ => text.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hides_passwords() {
        let url = Url::parse("sftp://belle:s3cret@host/files/a.txt").unwrap();
        assert_eq!(redact_url(&url), "sftp://belle:***@host/files/a.txt");
        let url = Url::parse("https://host/a?x=1").unwrap();
        assert_eq!(redact_url(&url), "https://host/a?x=1");
        assert_eq!(
            redact_url_str("ftp://bob:pw@[bad/x"),
            "ftp://bob:***@[bad/x"
        );
        assert_eq!(redact_url_str("not a url"), "not a url");
        assert!(!redact_url_str("ftp://u:p%40ss@h:99999/x").contains("p%40ss"));
    }

    /// What a log line shows with only the patterns and the secrets this
    /// test registers in its own `Secrets`.
    fn hidden(secrets: &Secrets, text: &str) -> String {
        secrets.redact(text).into_owned()
    }

    #[test]
    fn log_lines_lose_their_secrets_by_pattern() {
        let hidden = |text| hidden(&Secrets::new(), text);
        // suppaftp's trace of the login.
        assert_eq!(
            hidden("TRACE suppaftp: CC OUT: PASS hunter2 x\n"),
            "TRACE suppaftp: CC OUT: PASS ***\n"
        );
        assert_eq!(hidden("CC OUT: ACCT acc0unt"), "CC OUT: ACCT ***");
        // Not a command: a word that ends in PASS, or a bare PASS.
        assert_eq!(hidden("BYPASS x; PASS"), "BYPASS x; PASS");
        assert_eq!(
            hidden("headers: {\"authorization\": \"Basic YTpi\", \"host\": \"h\"}"),
            "headers: {\"authorization\": \"***\", \"host\": \"h\"}"
        );
        assert_eq!(
            hidden("Proxy-Authorization: Basic xyz"),
            "Proxy-Authorization: ***"
        );
        assert_eq!(hidden("set-cookie: a=b; Path=/"), "set-cookie: ***");
        assert_eq!(
            hidden("login password=pw1 user=bob"),
            "login password=*** user=bob"
        );
        assert_eq!(hidden("X-Api-Key: k3y"), "X-Api-Key: ***");
        assert_eq!(
            hidden("GET https://bob:pw@h/a and ftp://u:p%40ss@[::1]:21/x"),
            "GET https://bob:***@h/a and ftp://u:***@[::1]:21/x"
        );
        // Plain text and Rust paths are left alone.
        for plain in [
            "Password is required",
            "tokio_util::sync::CancellationToken::cancel",
            "userauth_password method tried",
            "sftp://bob@h/x",
            "",
        ] {
            assert_eq!(hidden(plain), plain);
        }
        // Lines are redacted one by one: a secret does not eat the next.
        assert_eq!(hidden("PASS a\nnext line\n"), "PASS ***\nnext line\n");
    }

    #[test]
    fn registered_secrets_are_hidden_anywhere() {
        let secrets = Secrets::new();
        let hidden = |text: &str| hidden(&secrets, text);
        secrets.register("Zx9-registered");
        secrets.register("ab"); // too short: patterns only
        assert_eq!(
            hidden("sent Zx9-registered twice: Zx9-registered"),
            "sent *** twice: ***"
        );
        assert_eq!(hidden("ab cab"), "ab cab");
        let url = Url::parse("sftp://bob:Zx9%20url-pw@h/x").unwrap();
        secrets.register_url(&url);
        assert_eq!(
            hidden("raw Zx9%20url-pw decoded Zx9 url-pw"),
            "raw *** decoded ***"
        );
        let basic = base64::engine::general_purpose::STANDARD.encode("bob:Zx9 url-pw");
        assert_eq!(hidden(&format!("auth {basic}")), "auth ***");
    }

    /// The process-wide functions reach the one list every log line goes
    /// through. Other tests register into it too, which can only hide more:
    /// hence `contains`, not the exact line.
    #[test]
    fn the_process_list_hides_what_is_registered() {
        register_secret("Zx9-process-wide");
        register_url_secrets(&Url::parse("ftp://u:Zx9-from-url@h/x").unwrap());
        let shown = redact_text("a Zx9-process-wide b Zx9-from-url");
        assert!(!shown.contains("Zx9-"), "{shown}");
    }
}

/// Property tests: any text, any secret.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    proptest! {
        #[test]
        fn never_panics(text in "\\PC{0,200}") {
            let _ = redact_text(&text);
            let _ = redact_url_str(&text);
        }

        /// A registered secret never survives, wherever it sits.
        #[test]
        fn registered_secrets_never_survive(
            secret in "QZ[a-zA-Z0-9%+/=-]{3,16}",
            before in "\\PC{0,40}",
            after in "\\PC{0,40}",
        ) {
            let secrets = Secrets::new();
            secrets.register(&secret);
            let text = format!("{before}{secret}{after}");
            prop_assert!(!secrets.redact(&text).contains(&secret));
        }

        /// The password of a URL never survives in a log line, whether or
        /// not it was registered.
        #[test]
        fn url_passwords_never_survive(
            user in "[a-z]{1,8}",
            password in "[a-zA-Z0-9._~!$&()*+,;=%-]{1,16}",
            before in "[a-z ]{0,20}",
        ) {
            let text = format!("{before} ftp://{user}:{password}@host:21/path");
            let shown = Secrets::new().redact(&text);
            prop_assert!(shown.contains(&format!("{user}:***@host")), "{}", shown);
        }
    }
}
