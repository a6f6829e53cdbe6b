//! Opening one connection of the pool: TCP (or SOCKS5), the key exchange
//! and the login, then the SFTP session and what the server says of its
//! limits (asked once per key: a probe's connections are told).

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::time::Instant;

use pymatris_core::{Error, Result};
use tokio::sync::OwnedSemaphorePermit;

use super::{Conn, NEXT_ID, Settings};
use crate::auth;
use crate::client::{self, Sftp};
use crate::error;
use crate::meter::Meter;
use crate::ssh::{Client, ClientError, client_config};
use crate::target::Target;

/// The largest read OpenSSH's sftp-server serves (its `limits@openssh.com`
/// says so), used when a server does not tell.
const DEFAULT_READ_LEN: u32 = 255 * 1024;

/// The SFTP packet size we accept: a full read of 255 KiB and its header.
/// Every read asks for at most `DEFAULT_READ_LEN`, and a server answers
/// with no more than asked.
const SFTP_MAX_PACKET: u32 = 256 * 1024 + 1024;

/// What a server's `limits@openssh.com` said, as the pool applies it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Limits {
    /// The read size to ask for.
    read_len: u32,
    /// Open handles the server allows per session, if it says.
    open_handles: Option<usize>,
}

/// Opens, logs in and starts SFTP, each step bounded by the timeout.
pub(super) async fn connect(
    target: &Target,
    settings: &Settings,
    key_received: Arc<AtomicU64>,
    permit: Option<OwnedSemaphorePermit>,
    told: Option<Limits>,
) -> Result<Conn> {
    let t = settings.timeout;
    let hp = target.host_port();
    let known = settings
        .policy
        .preferred_algorithms(&target.host, target.port);
    let config = Arc::new(client_config(t, &known));
    let handler = Client {
        host: target.host.clone(),
        port: target.port,
        policy: settings.policy.clone(),
    };
    let what = format!("connecting to {hp}");
    let socks = (settings.socks.as_ref()).filter(|_| !pymatris_core::socks::no_proxy(&target.host));
    let connecting = async {
        match socks {
            Some(proxy) => {
                let tcp = (proxy.connect(&target.host, target.port).await)
                    .map_err(|e| ClientError::Ssh(russh::Error::IO(e)))?;
                let _ = tcp.set_nodelay(true);
                russh::client::connect_stream(config, tcp, handler).await
            }
            None => {
                russh::client::connect(config, (target.host.as_str(), target.port), handler).await
            }
        }
    };
    let mut ssh = match tokio::time::timeout(t, connecting).await {
        Err(_) => return Err(error::timed_out(&what, t)),
        Ok(Err(ClientError::HostKey(e))) => return Err(e),
        Ok(Err(ClientError::Ssh(e))) => return Err(error::ssh(&what, e)),
        Ok(Ok(h)) => h,
    };
    let what = format!("logging in to {hp} as {}", target.user);
    tokio::time::timeout(t, auth::authenticate(&mut ssh, target, &settings.keys))
        .await
        .map_err(|_| error::timed_out(&what, t))??;

    let what = format!("starting SFTP on {hp}");
    let start = async {
        let channel = ssh
            .channel_open_session()
            .await
            .map_err(|e| error::ssh(&what, e))?;
        channel
            .request_subsystem(true, "sftp")
            .await
            .map_err(|e| error::ssh(&what, e))?;
        let mut sftp = Sftp::start(channel.into_stream(), t, SFTP_MAX_PACKET)
            .await
            .map_err(|e| error::sftp(&what, e))?;
        let meter = Meter::new(key_received);
        let mut limits = Limits {
            read_len: DEFAULT_READ_LEN,
            open_handles: None,
        };
        if let Some(told) = told {
            limits = told;
        } else if sftp.has_extension(client::LIMITS, b"1") {
            // A small request on an idle connection: its turnaround is the
            // round trip.
            let asked = Instant::now();
            let said = sftp.limits().await.map_err(|e| error::sftp(&what, e))?;
            meter.saw_round_trip(asked.elapsed());
            // 0 means no limit.
            if said.max_read_len > 0 {
                let max = said.max_read_len.min(u64::from(u32::MAX)) as u32;
                limits.read_len = limits.read_len.min(max).max(512);
            }
            if said.max_open_handles > 0 {
                limits.open_handles =
                    Some(usize::try_from(said.max_open_handles).unwrap_or(usize::MAX));
            }
        }
        if let Some(n) = limits.open_handles {
            sftp.limit_open_handles(n);
        }
        Ok::<_, Error>((sftp, limits, meter))
    };
    let (sftp, limits, meter) = tokio::time::timeout(t, start)
        .await
        .map_err(|_| error::timed_out(&what, t))??;
    let id = NEXT_ID.fetch_add(1, Ordering::Relaxed);
    let read_len = limits.read_len;
    tracing::debug!(conn = id, host = %hp, user = %target.user, read_len, "SFTP session ready");
    Ok(Conn {
        id,
        ssh,
        sftp: Arc::new(sftp),
        read_len,
        limits,
        meter: Arc::new(meter),
        dead: AtomicBool::new(false),
        retiring: AtomicBool::new(false),
        active: AtomicUsize::new(0),
        _permit: permit,
    })
}
