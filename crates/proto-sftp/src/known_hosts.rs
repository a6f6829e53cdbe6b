//! Host key checking against OpenSSH `known_hosts` files.
//!
//! russh has `check_known_hosts_path`, but it splits lines on single spaces,
//! fails the whole check on one unparsable key of the host, and knows
//! neither `@revoked` markers, negated patterns nor wildcards. This reads the
//! format as `sshd(8)` documents it: comma-separated host patterns (plain,
//! `[host]:port`, `*`/`?` wildcards, `!negated`, hashed `|1|salt|hmac`), an
//! optional `@revoked` or `@cert-authority` marker, then the key.
//!
//! The decision is OpenSSH's: the key is known when any line of the host
//! holds it; changed when a line of the host holds another key of the same
//! type; unknown otherwise.

use std::fs;
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use base64::Engine;
use base64::engine::general_purpose::STANDARD as BASE64;
use russh::keys::{Algorithm, HashAlg, PublicKey};

use crate::target::SSH_PORT;

/// What `known_hosts` says of a host's key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// A line of the host holds this key.
    Known,
    /// Lines of the host hold other keys of this key's type: the first one
    /// is at `path:line`.
    Changed { path: PathBuf, line: usize },
    /// The key is marked `@revoked`.
    Revoked { path: PathBuf, line: usize },
    /// No line of the host holds a key of this type.
    Unknown,
}

/// One usable line of a `known_hosts` file.
#[derive(Debug)]
struct Line {
    line: usize,
    marker: Marker,
    patterns: String,
    key: Option<PublicKey>,
}

#[derive(Debug, PartialEq, Eq)]
enum Marker {
    None,
    Revoked,
    CertAuthority,
}

/// The name a host goes by in `known_hosts`: `host` on port 22,
/// `[host]:port` otherwise.
pub(crate) fn host_name(host: &str, port: u16) -> String {
    if port == SSH_PORT {
        host.to_owned()
    } else {
        format!("[{host}]:{port}")
    }
}

/// `ssh-ed25519 SHA256:…`: how a key is shown to users.
pub(crate) fn describe(key: &PublicKey) -> String {
    format!(
        "{} key {}",
        key.algorithm().as_str(),
        key.fingerprint(HashAlg::Sha256)
    )
}

fn read_lines(path: &Path) -> io::Result<Vec<Line>> {
    let text = match fs::read_to_string(path) {
        Ok(t) => t,
        Err(e) if e.kind() == io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(e) => return Err(e),
    };
    let mut out = Vec::new();
    for (i, raw) in text.lines().enumerate() {
        let raw = raw.trim();
        if raw.is_empty() || raw.starts_with('#') {
            continue;
        }
        let mut fields = raw.split_whitespace();
        let mut first = fields.next().unwrap_or_default();
        let marker = match first {
            "@revoked" => Marker::Revoked,
            "@cert-authority" => Marker::CertAuthority,
            _ => Marker::None,
        };
        if marker != Marker::None {
            first = fields.next().unwrap_or_default();
        }
        let _algorithm = fields.next();
        // A line whose key does not parse cannot match; it must not make
        // the other lines unusable either.
        let key = fields
            .next()
            .and_then(|b64| russh::keys::parse_public_key_base64(b64).ok());
        out.push(Line {
            line: i + 1,
            marker,
            patterns: first.to_owned(),
            key,
        });
    }
    Ok(out)
}

/// Checks `key` for `host:port` against `files`, in order (missing files
/// are empty).
pub(crate) fn check(
    files: &[PathBuf],
    host: &str,
    port: u16,
    key: &PublicKey,
) -> io::Result<Verdict> {
    let name = host_name(host, port);
    let mut changed = None;
    let mut known = false;
    for path in files {
        for line in read_lines(path)? {
            let Some(recorded) = &line.key else { continue };
            if line.marker == Marker::Revoked {
                // `@revoked` lines apply whatever their host patterns.
                if recorded.key_data() == key.key_data() {
                    return Ok(Verdict::Revoked {
                        path: path.clone(),
                        line: line.line,
                    });
                }
                continue;
            }
            if line.marker == Marker::CertAuthority || !host_matches(&line.patterns, &name) {
                continue;
            }
            if recorded.key_data() == key.key_data() {
                known = true;
            } else if recorded.algorithm() == key.algorithm() && changed.is_none() {
                changed = Some(Verdict::Changed {
                    path: path.clone(),
                    line: line.line,
                });
            }
        }
    }
    Ok(if known {
        Verdict::Known
    } else {
        changed.unwrap_or(Verdict::Unknown)
    })
}

/// The key types `files` record for `host:port`, to be preferred in the
/// key exchange (as OpenSSH does) so that a host known by its RSA key is
/// not met with its Ed25519 key and called unknown.
pub(crate) fn known_algorithms(files: &[PathBuf], host: &str, port: u16) -> Vec<Algorithm> {
    let name = host_name(host, port);
    let mut out: Vec<Algorithm> = Vec::new();
    for path in files {
        for line in read_lines(path).unwrap_or_default() {
            if line.marker != Marker::None || !host_matches(&line.patterns, &name) {
                continue;
            }
            if let Some(key) = line.key {
                let alg = key.algorithm();
                if !out.contains(&alg) {
                    out.push(alg);
                }
            }
        }
    }
    out
}

/// Appends `host_name key` to `path` in one write, creating the file (and
/// its directory, mode 0700 as ssh wants) when missing.
pub(crate) fn learn(path: &Path, host: &str, port: u16, key: &PublicKey) -> io::Result<()> {
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty())
        && !dir.exists()
    {
        let mut builder = fs::DirBuilder::new();
        builder.recursive(true);
        #[cfg(unix)]
        std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
        builder.create(dir)?;
    }
    let openssh = key.to_openssh().map_err(io::Error::other)?;
    let needs_newline = match fs::read(path) {
        Ok(bytes) => bytes.last().is_some_and(|&b| b != b'\n'),
        Err(_) => false,
    };
    let line = format!(
        "{}{} {}\n",
        if needs_newline { "\n" } else { "" },
        host_name(host, port),
        openssh.trim()
    );
    let mut file = fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)?;
    file.write_all(line.as_bytes())
}

/// Whether `name` matches a comma-separated pattern list: some positive
/// pattern matches and no negated one does.
fn host_matches(patterns: &str, name: &str) -> bool {
    let mut matched = false;
    for pattern in patterns.split(',') {
        if let Some(hashed) = pattern.strip_prefix("|1|") {
            if hashed_matches(hashed, name) {
                matched = true;
            }
        } else if let Some(negated) = pattern.strip_prefix('!') {
            if wildcard_matches(&negated.to_ascii_lowercase(), &name.to_ascii_lowercase()) {
                return false;
            }
        } else if wildcard_matches(&pattern.to_ascii_lowercase(), &name.to_ascii_lowercase()) {
            matched = true;
        }
    }
    matched
}

/// `salt|hash`, both base64: HMAC-SHA1 of the name keyed by the salt.
fn hashed_matches(hashed: &str, name: &str) -> bool {
    let Some((salt, hash)) = hashed.split_once('|') else {
        return false;
    };
    let (Ok(salt), Ok(hash)) = (BASE64.decode(salt), BASE64.decode(hash)) else {
        return false;
    };
    let key = ring::hmac::Key::new(ring::hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY, &salt);
    ring::hmac::verify(&key, name.as_bytes(), &hash).is_ok()
}

/// `*` matches any run of characters, `?` any one.
fn wildcard_matches(pattern: &str, text: &str) -> bool {
    let p: Vec<char> = pattern.chars().collect();
    let t: Vec<char> = text.chars().collect();
    let (mut pi, mut ti) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while ti < t.len() {
        match p.get(pi) {
            Some('*') => {
                star = Some((pi, ti));
                pi += 1;
            }
            Some(&c) if c == '?' || c == t[ti] => {
                pi += 1;
                ti += 1;
            }
            _ => match star {
                Some((sp, st)) => {
                    pi = sp + 1;
                    ti = st + 1;
                    star = Some((sp, st + 1));
                }
                None => return false,
            },
        }
    }
    p[pi..].iter().all(|&c| c == '*')
}

/// How a batch treats host keys: the files to check, where to add keys,
/// and the `--insecure` / `--accept-new-host-keys` switches.
#[derive(Debug)]
pub(crate) struct Policy {
    insecure: bool,
    accept_new: bool,
    /// Checked in order: `--known-hosts`, or `~/.ssh/known_hosts` then
    /// `/etc/ssh/ssh_known_hosts`.
    files: Vec<PathBuf>,
    /// Where accepted keys go: `--known-hosts` or `~/.ssh/known_hosts`.
    learn_to: Option<PathBuf>,
    /// Whether an accepted key is written there (not in a dry run).
    record: bool,
    /// Serialises check-then-append, so two connections to one new host
    /// add its key once.
    learning: std::sync::Mutex<()>,
}

impl Policy {
    /// Accepted keys are trusted for this batch alone, written nowhere
    /// (a dry run touches no file).
    pub(crate) fn without_recording(mut self) -> Self {
        self.record = false;
        self
    }

    pub(crate) fn new(known_hosts: Option<PathBuf>, insecure: bool, accept_new: bool) -> Self {
        let (files, learn_to) = match known_hosts {
            Some(path) => (vec![path.clone()], Some(path)),
            None => {
                let user = std::env::home_dir().map(|h| h.join(".ssh").join("known_hosts"));
                let mut files: Vec<PathBuf> = user.iter().cloned().collect();
                files.push(PathBuf::from("/etc/ssh/ssh_known_hosts"));
                (files, user)
            }
        };
        Policy {
            insecure,
            accept_new,
            files,
            learn_to,
            record: true,
            learning: std::sync::Mutex::new(()),
        }
    }

    /// The key types to prefer in the key exchange with `host:port`.
    pub(crate) fn preferred_algorithms(&self, host: &str, port: u16) -> Vec<Algorithm> {
        if self.insecure {
            return Vec::new();
        }
        known_algorithms(&self.files, host, port)
    }

    fn files_shown(&self) -> String {
        let names: Vec<String> = self.files.iter().map(|p| p.display().to_string()).collect();
        names.join(" or ")
    }

    /// Whether to trust `key` for `host:port`: `Ok` to go on, an error of
    /// kind `PeerIdentity` (permanent) not to.
    pub(crate) fn verify(
        &self,
        host: &str,
        port: u16,
        key: &PublicKey,
    ) -> pymatris_core::Result<()> {
        let host_port = crate::target::Target::display_host_port(host, port);
        let desc = describe(key);
        if self.insecure {
            tracing::warn!(host = %host_port, key = %desc, "host key NOT checked, as asked");
            return Ok(());
        }
        let _guard = self.learning.lock().unwrap_or_else(|p| p.into_inner());
        let verdict = check(&self.files, host, port, key).map_err(|e| {
            crate::error::known_hosts_io(&format!("reading {}", self.files_shown()), e)
        })?;
        match verdict {
            Verdict::Known => Ok(()),
            Verdict::Changed { path, line } => Err(crate::error::host_key_changed(
                &host_port,
                &desc,
                &format!("{}:{line}", path.display()),
            )),
            Verdict::Revoked { path, line } => Err(crate::error::host_key_revoked(
                &host_port,
                &desc,
                &format!("{}:{line}", path.display()),
            )),
            Verdict::Unknown if self.accept_new && !self.record => {
                tracing::warn!(
                    host = %host_port,
                    key = %desc,
                    "new host key accepted for this run, not recorded (a dry run writes no file)"
                );
                Ok(())
            }
            Verdict::Unknown if self.accept_new => {
                let Some(path) = &self.learn_to else {
                    return Err(crate::error::known_hosts_io(
                        "cannot add the host key: no home directory to keep known hosts in",
                        io::Error::from(io::ErrorKind::NotFound),
                    )
                    .with_hint(pymatris_core::Hint::KnownHostsFile));
                };
                learn(path, host, port, key).map_err(|e| {
                    crate::error::known_hosts_io(
                        &format!("adding the host key of {host_port} to {}", path.display()),
                        e,
                    )
                })?;
                tracing::warn!(
                    host = %host_port,
                    key = %desc,
                    file = %path.display(),
                    "new host key accepted and added, as asked"
                );
                Ok(())
            }
            Verdict::Unknown => Err(crate::error::unknown_host(
                &host_port,
                &desc,
                &self.files_shown(),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // Two ed25519 keys and one ecdsa key (public halves only).
    const ED_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const ED_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF";
    const ECDSA: &str = "AAAAE2VjZHNhLXNoYTItbmlzdHAyNTYAAAAIbmlzdHAyNTYAAABBBHMu/5WvoEpVsRgbIrCDNQs/KmkuwEUBsdDkBEGVZ+AiB7kjSjMPOBAFSL3blz3MJP2cbbIGfYaOkoQX8vYdTm8=";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    fn file(dir: &tempfile::TempDir, text: &str) -> PathBuf {
        let p = dir.path().join("known_hosts");
        fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn known_changed_and_unknown() {
        let dir = tempfile::tempdir().unwrap();
        let kh = file(
            &dir,
            &format!(
                "# comment\n\
                 [127.0.0.1]:2222 ssh-ed25519 {ED_A}\n\
                 example.org,10.0.0.1\tssh-ed25519   {ED_B} comment words\n\
                 broken ssh-ed25519 !!!notbase64\n"
            ),
        );
        let files = [kh.clone()];
        let check = |h: &str, p: u16, k: &str| check(&files, h, p, &key(k)).unwrap();
        assert_eq!(check("127.0.0.1", 2222, ED_A), Verdict::Known);
        assert_eq!(
            check("127.0.0.1", 2222, ED_B),
            Verdict::Changed {
                path: kh.clone(),
                line: 2
            }
        );
        // Another port is another host.
        assert_eq!(check("127.0.0.1", 22, ED_A), Verdict::Unknown);
        assert_eq!(check("10.0.0.1", 22, ED_B), Verdict::Known);
        assert_eq!(check("EXAMPLE.org", 22, ED_B), Verdict::Known);
        // A key of a type the file does not record for the host: unknown,
        // as in OpenSSH (and the exchange prefers recorded types anyway).
        assert_eq!(check("example.org", 22, ECDSA), Verdict::Unknown);
        assert_eq!(check("elsewhere", 22, ED_A), Verdict::Unknown);
        assert_eq!(
            known_algorithms(&files, "example.org", 22),
            vec![Algorithm::Ed25519]
        );
        // A missing file is an empty one.
        let missing = [dir.path().join("nope")];
        assert_eq!(
            super::check(&missing, "h", 22, &key(ED_A)).unwrap(),
            Verdict::Unknown
        );
    }

    #[test]
    fn hashed_entries_match() {
        // From russh's own test data: `example.com` on port 22.
        let dir = tempfile::tempdir().unwrap();
        let kh = file(
            &dir,
            &format!(
                "|1|O33ESRMWPVkMYIwJ1Uw+n877jTo=|nuuC5vEqXlEZ/8BXQR7m619W6Ak= ssh-ed25519 {ED_B}\n"
            ),
        );
        let files = [kh];
        assert_eq!(
            check(&files, "example.com", 22, &key(ED_B)).unwrap(),
            Verdict::Known
        );
        assert!(matches!(
            check(&files, "example.com", 22, &key(ED_A)).unwrap(),
            Verdict::Changed { line: 1, .. }
        ));
        assert_eq!(
            check(&files, "example.net", 22, &key(ED_B)).unwrap(),
            Verdict::Unknown
        );
    }

    #[test]
    fn patterns_negation_and_revocation() {
        assert!(host_matches("*.example.org", "a.example.org"));
        assert!(host_matches("a?c", "abc"));
        assert!(!host_matches(
            "*.example.org,!bad.example.org",
            "bad.example.org"
        ));
        assert!(host_matches("[h]:2222", "[h]:2222"));
        assert!(!host_matches("h", "[h]:2222"));
        let dir = tempfile::tempdir().unwrap();
        let kh = file(
            &dir,
            &format!(
                "h ssh-ed25519 {ED_A}\n@revoked * ssh-ed25519 {ED_B}\n@cert-authority h ssh-ed25519 {ED_B}\n"
            ),
        );
        let files = [kh];
        assert!(matches!(
            check(&files, "h", 22, &key(ED_B)).unwrap(),
            Verdict::Revoked { line: 2, .. }
        ));
        assert_eq!(check(&files, "h", 22, &key(ED_A)).unwrap(), Verdict::Known);
    }

    #[test]
    fn learning_appends_the_bracketed_form_then_the_key_is_known() {
        let dir = tempfile::tempdir().unwrap();
        let kh = dir.path().join("sub/known_hosts");
        learn(&kh, "127.0.0.1", 2222, &key(ED_A)).unwrap();
        learn(&kh, "example.org", 22, &key(ED_B)).unwrap();
        let text = fs::read_to_string(&kh).unwrap();
        assert_eq!(
            text,
            format!("[127.0.0.1]:2222 ssh-ed25519 {ED_A}\nexample.org ssh-ed25519 {ED_B}\n")
        );
        let files = [kh.clone()];
        assert_eq!(
            check(&files, "127.0.0.1", 2222, &key(ED_A)).unwrap(),
            Verdict::Known
        );
        // A file without a final newline gets one before the new line.
        fs::write(&kh, format!("h ssh-ed25519 {ED_A}")).unwrap();
        learn(&kh, "g", 22, &key(ED_B)).unwrap();
        assert_eq!(fs::read_to_string(&kh).unwrap().lines().count(), 2);
    }

    #[test]
    fn keys_are_described_by_type_and_sha256() {
        let d = describe(&key(ED_A));
        assert!(d.starts_with("ssh-ed25519 key SHA256:"), "{d}");
    }
}

/// Property tests: any known_hosts file is read without a panic and never
/// vouches for a key it does not hold; what `learn` writes is read back.
#[cfg(test)]
mod proptests {
    use proptest::prelude::*;

    use super::*;

    const ED_A: &str = "AAAAC3NzaC1lZDI1NTE5AAAAIJdD7y3aLq454yWBdwLWbieU1ebz9/cu7/QEXn9OIeZJ";
    const ED_B: &str = "AAAAC3NzaC1lZDI1NTE5AAAAILIG2T/B0l0gaqj3puu510tu9N1OkQ4znY3LYuEm5zCF";

    fn key(b64: &str) -> PublicKey {
        russh::keys::parse_public_key_base64(b64).unwrap()
    }

    /// Lines shaped like known_hosts lines (markers, patterns, hashed
    /// names, keys that parse or not), and raw text.
    fn known_hosts_text() -> impl Strategy<Value = String> {
        let line = prop_oneof![
            "\\PC{0,60}",
            "(@revoked |@cert-authority )?[a-z0-9.*?!,\\[\\]:|]{0,20} ssh-ed25519 [A-Za-z0-9+/=]{0,80}",
            Just(format!("* ssh-ed25519 {ED_B}")),
            Just(format!("@revoked * ssh-ed25519 {ED_B}")),
            "\\|1\\|[A-Za-z0-9+/=|]{0,40} ssh-ed25519 [A-Za-z0-9+/=]{0,20}",
        ];
        proptest::collection::vec(line, 0..12).prop_map(|lines| lines.join("\n"))
    }

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(128))]

        /// No file makes `check` panic, and a file that does not hold a key
        /// never says it is known.
        #[test]
        fn any_file_is_read_without_vouching_for_a_missing_key(
            text in known_hosts_text(),
            host in "[a-z0-9.]{1,12}",
            port in any::<u16>(),
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("known_hosts");
            fs::write(&path, &text).unwrap();
            let files = [path];
            let verdict = check(&files, &host, port, &key(ED_A)).unwrap();
            prop_assert_ne!(verdict, Verdict::Known);
            let _ = known_algorithms(&files, &host, port);
        }

        /// A learned key is known for its host and port, whatever else the
        /// file holds (short of a revocation of that very key); another key
        /// of the same type for that host is a change.
        #[test]
        fn learned_keys_read_back(
            text in known_hosts_text(),
            host in "[a-z0-9][a-z0-9.-]{0,20}",
            port in 1u16..,
        ) {
            let dir = tempfile::tempdir().unwrap();
            let path = dir.path().join("known_hosts");
            fs::write(&path, &text).unwrap();
            learn(&path, &host, port, &key(ED_A)).unwrap();
            let files = [path];
            prop_assert_eq!(check(&files, &host, port, &key(ED_A)).unwrap(), Verdict::Known);
            let other = check(&files, &host, port, &key(ED_B)).unwrap();
            prop_assert!(
                matches!(other, Verdict::Changed { .. } | Verdict::Known | Verdict::Revoked { .. }),
                "{:?}", other
            );
        }

        /// Pattern matching never panics; a name matches itself, `*`
        /// matches all, and a negation of a matching pattern wins.
        #[test]
        fn patterns_match_as_documented(
            patterns in "\\PC{0,40}",
            name in "[a-zA-Z0-9.:\\[\\]-]{1,30}",
        ) {
            let _ = host_matches(&patterns, &name);
            let _ = host_matches(&patterns, &patterns);
            prop_assert!(host_matches(&name, &name));
            prop_assert!(host_matches(&name.to_ascii_uppercase(), &name));
            prop_assert!(host_matches("*", &name));
            let negated = format!("*,!{}", name);
            prop_assert!(!host_matches(&negated, &name));
        }
    }
}
