//! Logging in: the URL's (or netrc's) password, then `--identity`, the
//! ssh-agent, and the default keys, as OpenSSH's client would; with
//! keyboard-interactive for servers that ask for the password that way.
//!
//! Nothing here prompts: an encrypted key is skipped with a note that says
//! how to use it (through ssh-agent), so a run never hangs on a passphrase.
//! Error messages name the methods and key files tried, never a secret.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use pymatris_core::Result;
use russh::client::{AuthResult, Handle, KeyboardInteractiveAuthResponse};
use russh::keys::agent::AgentIdentity;
use russh::keys::agent::client::AgentClient;
use russh::keys::{HashAlg, PrivateKey, PrivateKeyWithHashAlg, PublicKey};
use russh::{MethodKind, MethodSet};

use crate::error;
use crate::ssh::Client;
use crate::target::Target;

/// Where keys come from, besides the URL's password.
#[derive(Debug, Clone)]
pub(crate) struct KeySources {
    /// `--identity FILE`, tried first.
    pub(crate) identity: Option<PathBuf>,
    /// Ask the ssh-agent of `SSH_AUTH_SOCK`.
    pub(crate) agent: bool,
    /// `~/.ssh/id_ed25519`, `id_ecdsa`, `id_rsa`, tried when present.
    pub(crate) default_keys: Vec<PathBuf>,
}

impl KeySources {
    /// The usual sources: the given identity, the agent, and the default
    /// keys under the home directory.
    pub(crate) fn new(identity: Option<PathBuf>) -> Self {
        let default_keys = std::env::home_dir()
            .map(|home| {
                ["id_ed25519", "id_ecdsa", "id_rsa"]
                    .iter()
                    .map(|name| home.join(".ssh").join(name))
                    .collect()
            })
            .unwrap_or_default();
        KeySources {
            identity,
            agent: true,
            default_keys,
        }
    }
}

/// What was tried and learned along the way, for the error message.
struct Attempts {
    who: String,
    tried: Vec<String>,
    notes: Vec<String>,
    /// The methods the server said it accepts, once it said so.
    methods: Option<MethodSet>,
    /// Public keys already offered, so the agent's copy of `--identity` is
    /// not offered twice.
    offered: Vec<PublicKey>,
    /// The server hung up (too many attempts, `MaxAuthTries`).
    closed: bool,
}

impl Attempts {
    fn allows(&self, method: MethodKind) -> bool {
        !self.closed && self.methods.as_ref().is_none_or(|m| m.contains(&method))
    }

    /// Records a failed attempt; `true` when it succeeded.
    fn record(&mut self, result: AuthResult, handle: &Handle<Client>) -> bool {
        match result {
            AuthResult::Success => true,
            AuthResult::Failure {
                remaining_methods,
                partial_success,
            } => {
                if partial_success {
                    self.notes.push(
                        "the server wants a second method after the first (not supported)".into(),
                    );
                }
                if remaining_methods.is_empty() && handle.is_closed() {
                    self.closed = true;
                    self.notes.push(format!(
                        "the server closed the connection after {} attempts (its MaxAuthTries?)",
                        self.tried.len()
                    ));
                } else {
                    self.methods = Some(remaining_methods);
                }
                false
            }
        }
    }

    fn failure(self) -> pymatris_core::Error {
        let accepts = self
            .methods
            .as_ref()
            .map(|m| m.iter().map(<&str>::from).collect::<Vec<_>>().join(","));
        error::auth_failed(&self.who, &self.tried, &self.notes, accepts.as_deref())
    }
}

/// Logs `target.user` in on `handle`, or fails with an `Auth` error naming
/// every method tried.
pub(crate) async fn authenticate(
    handle: &mut Handle<Client>,
    target: &Target,
    keys: &KeySources,
) -> Result<()> {
    let user = target.user.as_str();
    let mut att = Attempts {
        who: format!("{}@{}", target.user, target.host_port()),
        tried: Vec::new(),
        notes: Vec::new(),
        methods: None,
        offered: Vec::new(),
        closed: false,
    };
    let transport = |e: russh::Error| error::ssh("logging in", e);

    if let Some(password) = &target.password {
        if att.allows(MethodKind::Password) {
            att.tried.push("password".into());
            let r = handle
                .authenticate_password(user, password.as_str())
                .await
                .map_err(transport)?;
            if att.record(r, handle) {
                return Ok(());
            }
        }
        if att.allows(MethodKind::KeyboardInteractive)
            && att.methods.is_some()
            && keyboard_interactive(handle, user, password, &mut att).await?
        {
            return Ok(());
        }
    }

    if let Some(path) = &keys.identity
        && try_key_file(handle, user, path, true, &mut att).await?
    {
        return Ok(());
    }

    if keys.agent && att.allows(MethodKind::PublicKey) && try_agent(handle, user, &mut att).await? {
        return Ok(());
    }

    for path in &keys.default_keys {
        if Some(path) == keys.identity.as_ref() || !path.exists() {
            continue;
        }
        if try_key_file(handle, user, path, false, &mut att).await? {
            return Ok(());
        }
    }
    Err(att.failure())
}

/// Answers the server's password prompts with the password. A second
/// password prompt after the answer means it was wrong: stop there.
async fn keyboard_interactive(
    handle: &mut Handle<Client>,
    user: &str,
    password: &str,
    att: &mut Attempts,
) -> Result<bool> {
    att.tried.push("keyboard-interactive".into());
    let transport = |e: russh::Error| error::ssh("logging in", e);
    let mut reply = handle
        .authenticate_keyboard_interactive_start(user, None)
        .await
        .map_err(transport)?;
    let mut answered = false;
    // Servers may send a few rounds (a banner with no prompt, then the
    // password); bound them so a looping server cannot hold us.
    for _ in 0..8 {
        match reply {
            KeyboardInteractiveAuthResponse::Success => return Ok(true),
            KeyboardInteractiveAuthResponse::Failure {
                remaining_methods,
                partial_success,
            } => {
                let r = AuthResult::Failure {
                    remaining_methods,
                    partial_success,
                };
                return Ok(att.record(r, handle));
            }
            KeyboardInteractiveAuthResponse::InfoRequest { prompts, .. } => {
                let secret_prompts = prompts.iter().filter(|p| !p.echo).count();
                if secret_prompts > 0 && answered {
                    // Asked again: the password was refused.
                    break;
                }
                if prompts.iter().any(|p| p.echo) || secret_prompts > 1 {
                    att.notes.push(
                        "keyboard-interactive asked more than a password (not supported)".into(),
                    );
                    break;
                }
                answered |= secret_prompts == 1;
                let answers = prompts.iter().map(|_| password.to_owned()).collect();
                reply = handle
                    .authenticate_keyboard_interactive_respond(answers)
                    .await
                    .map_err(transport)?;
            }
        }
    }
    Ok(false)
}

/// Loads a private key without a passphrase; encrypted or unreadable keys
/// become notes.
fn load_key(path: &Path, att: &mut Attempts, explicit: bool) -> Option<PrivateKey> {
    match russh::keys::load_secret_key(path, None) {
        Ok(key) => Some(key),
        Err(russh::keys::Error::KeyIsEncrypted) => {
            att.notes.push(format!(
                "{} is encrypted and pymatris does not ask for passphrases: load it into \
                 ssh-agent (ssh-add {})",
                path.display(),
                path.display()
            ));
            None
        }
        Err(e) => {
            // A missing default key is normal; a missing --identity is not.
            if explicit || path.exists() {
                att.notes
                    .push(format!("cannot use key {}: {e}", path.display()));
            }
            None
        }
    }
}

async fn rsa_hash(handle: &Handle<Client>, key: &PublicKey) -> Option<HashAlg> {
    if !key.algorithm().is_rsa() {
        return None;
    }
    match handle.best_supported_rsa_hash().await {
        Ok(Some(hash)) => hash,
        // No `server-sig-algs`: an old server, which knows only SHA-1.
        _ => None,
    }
}

async fn try_key_file(
    handle: &mut Handle<Client>,
    user: &str,
    path: &Path,
    explicit: bool,
    att: &mut Attempts,
) -> Result<bool> {
    if !att.allows(MethodKind::PublicKey) {
        return Ok(false);
    }
    let Some(key) = load_key(path, att, explicit) else {
        return Ok(false);
    };
    let public = key.public_key().clone();
    if att
        .offered
        .iter()
        .any(|k| k.key_data() == public.key_data())
    {
        return Ok(false);
    }
    att.offered.push(public.clone());
    att.tried.push(format!("publickey ({})", path.display()));
    let hash = rsa_hash(handle, &public).await;
    let r = handle
        .authenticate_publickey(user, PrivateKeyWithHashAlg::new(Arc::new(key), hash))
        .await
        .map_err(|e| error::ssh("logging in", e))?;
    Ok(att.record(r, handle))
}

async fn try_agent(handle: &mut Handle<Client>, user: &str, att: &mut Attempts) -> Result<bool> {
    if std::env::var_os("SSH_AUTH_SOCK").is_none() {
        return Ok(false);
    }
    let mut agent = match AgentClient::connect_env().await {
        Ok(a) => a,
        Err(e) => {
            att.notes.push(format!("cannot reach ssh-agent: {e}"));
            return Ok(false);
        }
    };
    if let Some(binding) = handle.agent_session_binding() {
        // Lets OpenSSH's agent use destination-constrained keys; older
        // agents refuse the extension, which changes nothing else.
        let _ = agent.bind_session(binding, false).await;
    }
    let identities = match agent.request_identities().await {
        Ok(ids) => ids,
        Err(e) => {
            att.notes
                .push(format!("ssh-agent did not list its keys: {e}"));
            return Ok(false);
        }
    };
    let keys: Vec<PublicKey> = identities
        .into_iter()
        .filter_map(|id| match id {
            AgentIdentity::PublicKey { key, .. } => Some(key),
            AgentIdentity::Certificate { .. } => None,
        })
        .filter(|k| !att.offered.iter().any(|o| o.key_data() == k.key_data()))
        .collect();
    if keys.is_empty() {
        att.notes.push("ssh-agent holds no keys".into());
        return Ok(false);
    }
    att.tried.push(format!(
        "publickey (ssh-agent, {} key{})",
        keys.len(),
        if keys.len() == 1 { "" } else { "s" }
    ));
    for key in keys {
        if !att.allows(MethodKind::PublicKey) {
            break;
        }
        att.offered.push(key.clone());
        let hash = rsa_hash(handle, &key).await;
        match handle
            .authenticate_publickey_with(user, key, hash, &mut agent)
            .await
        {
            Ok(r) => {
                if att.record(r, handle) {
                    return Ok(true);
                }
            }
            Err(e) => att.notes.push(format!("ssh-agent could not sign: {e}")),
        }
    }
    Ok(false)
}
