//! SSH connections and their SFTP sessions, per (host, port, user,
//! password), reused by every file of a batch: one, and more while more
//! are measured to pay (`growth.rs`).
//!
//! Opening an SSH connection costs a key exchange and a login (several
//! round trips and public-key operations), so files share connections: an
//! SFTP session serves many open files at once, each read pipelined. The
//! pool reconnects when a connection died, remembers a permanent login or
//! host-key failure so that 200 files do not try a wrong password 200
//! times, and caps the connections to one host at `max_per_host`. Parts
//! move to a connection less busy than theirs (`read.rs`), so a connection
//! opened while they run gets its share at once.

use std::collections::HashMap;
use std::fmt;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use pymatris_core::{Error, ErrorKind, Result};
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::auth::KeySources;
use crate::client::Sftp;
use crate::growth::{self, CoresSample, Growth, Step};
use crate::known_hosts::Policy;
use crate::meter::Meter;
use crate::ssh::Client;
use crate::target::Target;

/// SSH connections per (host, port, user) at most when the engine sets no
/// `max_per_host`: the engine's own ceiling for a host
/// (`pymatris_core::config::DEFAULT_GROWTH_CEILING`, 16), reached only
/// where each connection added paid (a cap per connection: at 40 ms and 6
/// MB/s per connection, eight connections were level with lftp's eight).
/// How many of them are opened is measured (`growth.rs`), and they open
/// at most [`growth::AT_ONCE`] at a time: on loopback, where the CPU is
/// the bound, one connection moves a file faster than several (every
/// connection adds an sshd and a cipher stream to the same cores), and
/// the pool stays at one.
pub(crate) const CONNS_PER_KEY: usize = 16;

/// How often the pool's growth and the connections' rates are looked at.
const TICK: Duration = Duration::from_millis(50);

/// The settings every connection of a batch shares.
#[derive(Debug)]
pub(crate) struct Settings {
    pub(crate) timeout: Duration,
    pub(crate) max_per_host: Option<usize>,
    pub(crate) policy: Arc<Policy>,
    pub(crate) keys: KeySources,
    /// The SOCKS5 proxy SSH connections go through (`NO_PROXY` aside).
    pub(crate) socks: Option<pymatris_core::socks::SocksProxy>,
}

static NEXT_ID: AtomicU64 = AtomicU64::new(1);

mod connect;
use connect::{Limits, connect};

/// One logged-in SSH connection and its SFTP session.
pub(crate) struct Conn {
    id: u64,
    // Kept so the connection lives as long as its SFTP session.
    ssh: russh::client::Handle<Client>,
    pub(crate) sftp: Arc<Sftp>,
    /// The read size to ask for.
    pub(crate) read_len: u32,
    limits: Limits,
    pub(crate) meter: Arc<Meter>,
    dead: AtomicBool,
    /// A probe that did not pay: no new part goes to it, and it closes
    /// once its parts are done.
    retiring: AtomicBool,
    active: AtomicUsize,
    _permit: Option<OwnedSemaphorePermit>,
}

impl fmt::Debug for Conn {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Conn")
            .field("id", &self.id)
            .field("read_len", &self.read_len)
            .field("dead", &self.dead)
            .field("active", &self.active)
            .finish_non_exhaustive()
    }
}

impl Conn {
    fn alive(&self) -> bool {
        !self.dead.load(Ordering::SeqCst) && !self.ssh.is_closed() && !self.sftp.is_closed()
    }

    fn active(&self) -> usize {
        self.active.load(Ordering::SeqCst)
    }

    fn retiring(&self) -> bool {
        self.retiring.load(Ordering::SeqCst)
    }

    /// Marks the connection as broken: the next request for its host opens
    /// a new one.
    pub(crate) fn mark_dead(&self) {
        if !self.dead.swap(true, Ordering::SeqCst) {
            tracing::debug!(conn = self.id, "SSH connection marked dead");
        }
    }
}

/// A connection in use by one transfer; the pool hands the least busy one.
#[derive(Debug)]
pub(crate) struct Lease {
    conn: Arc<Conn>,
    slot: Arc<Slot>,
    /// Whether the connection was opened for this lease (a failure on a
    /// reused one may just mean the server closed it while idle).
    pub(crate) fresh: bool,
    /// Whether it is counted among the key's movable parts.
    movable: AtomicBool,
}

impl Lease {
    fn new(conn: Arc<Conn>, slot: Arc<Slot>, fresh: bool) -> Lease {
        conn.active.fetch_add(1, Ordering::SeqCst);
        Lease {
            conn,
            slot,
            fresh,
            movable: AtomicBool::new(false),
        }
    }

    /// Whether this lease's part has enough left to move to another
    /// connection: what the pool's growth counts a probe for.
    pub(crate) fn set_movable(&self, movable: bool) {
        if self.movable.swap(movable, Ordering::SeqCst) != movable {
            match movable {
                // The key's first part that could move: the growth looks
                // now, not at the next tick of bytes arriving (on a long
                // link the next chunk may be a round trip away, and a tick
                // just taken skips it: a probe went 80 ms late at 40 ms).
                true if self.slot.movable.fetch_add(1, Ordering::SeqCst) == 0 => {
                    self.slot.tick(true)
                }
                true => {}
                false => {
                    self.slot.movable.fetch_sub(1, Ordering::SeqCst);
                }
            }
        }
    }

    /// Read requests in flight for each part on this connection: what its
    /// rate and round trip need (those of its measured siblings until its
    /// own are measured, `growth::sizing`), shared by its parts, at most
    /// `max`.
    pub(crate) fn read_depth(&self, max: usize) -> usize {
        let own = (self.meter.rate(), self.meter.rtt());
        let (rate, rtt) = match own {
            (Some(_), Some(_)) => own,
            _ => {
                let conns = self.slot.conns.lock().expect("slot poisoned");
                let siblings = (conns.iter())
                    .filter(|c| !Arc::ptr_eq(c, &self.conn) && c.alive())
                    .map(|c| (c.meter.rate(), c.meter.rtt()));
                growth::sizing(own, siblings)
            }
        };
        growth::read_depth(rate, rtt, self.active(), self.read_len, max)
    }

    /// Lets the pool grow or shrink (at most once per [`TICK`]): called as
    /// bytes arrive, so that a probe goes within a tick of bytes flowing.
    pub(crate) fn tick(&self) {
        self.slot.tick(false);
    }

    /// Another connection of the same key, less busy by two parts or more
    /// (or any, when this one is retiring), for this lease's part to move
    /// to.
    pub(crate) fn better(&self) -> Option<Lease> {
        self.slot.better(&self.conn)
    }
}

impl std::ops::Deref for Lease {
    type Target = Conn;
    fn deref(&self) -> &Conn {
        &self.conn
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        self.set_movable(false);
        self.conn.active.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Connections are shared by those who log in the same way.
#[derive(Clone, PartialEq, Eq, Hash)]
struct Key {
    host: String,
    port: u16,
    user: String,
    password: Option<String>,
}

/// The connections of one key.
struct Slot {
    settings: Arc<Settings>,
    /// Where and as whom to connect (its path is that of the first file).
    target: Target,
    /// The host's `max_per_host` permits, if capped.
    host: Option<Arc<Semaphore>>,
    conns: Mutex<Vec<Arc<Conn>>>,
    /// Held while the first connection opens, so that the files that start
    /// together wait for it instead of each opening its own.
    opening: tokio::sync::Mutex<()>,
    growth: Mutex<Growth>,
    /// Every byte read over this key's connections.
    received: Arc<AtomicU64>,
    /// Parts with enough left to move to another connection.
    movable: AtomicUsize,
    last_tick: Mutex<Option<Instant>>,
    /// A permanent failure to log in or trust the host: (kind, message).
    failed: Mutex<Option<(ErrorKind, String)>>,
}

impl fmt::Debug for Slot {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Slot")
            .field("host", &self.target.host_port())
            .finish_non_exhaustive()
    }
}

impl Slot {
    fn cap(&self) -> usize {
        CONNS_PER_KEY
            .min(self.settings.max_per_host.unwrap_or(usize::MAX))
            .max(1)
    }

    /// The least busy live connection, not retiring if one is not, leased.
    fn least_busy(self: &Arc<Slot>) -> Option<Lease> {
        let mut conns = self.conns.lock().expect("slot poisoned");
        conns.retain(|c| c.alive() && !(c.retiring() && c.active() == 0));
        let best = conns
            .iter()
            .min_by_key(|c| (c.retiring(), c.active()))?
            .clone();
        Some(Lease::new(best, self.clone(), false))
    }

    /// A connection better for a part now on `mine`, leased.
    fn better(self: &Arc<Slot>, mine: &Arc<Conn>) -> Option<Lease> {
        let conns = self.conns.lock().expect("slot poisoned");
        let best = conns
            .iter()
            .filter(|c| c.alive() && !c.retiring())
            .min_by_key(|c| c.active())?;
        if Arc::ptr_eq(best, mine) {
            return None;
        }
        (mine.retiring() || best.active() + 2 <= mine.active())
            .then(|| Lease::new(best.clone(), self.clone(), false))
    }

    /// Measures the connections' rates and lets [`Growth`] decide, at
    /// most once per [`TICK`] unless `now_anyway`.
    fn tick(self: &Arc<Slot>, now_anyway: bool) {
        let now = Instant::now();
        {
            let mut last = self.last_tick.lock().expect("slot poisoned");
            if !now_anyway && last.is_some_and(|t| now.duration_since(t) < TICK) {
                return;
            }
            *last = Some(now);
        }
        let (conns, readers) = {
            let mut conns = self.conns.lock().expect("slot poisoned");
            conns.retain(|c| c.alive() && !(c.retiring() && c.active() == 0));
            let mut n = 0;
            let mut readers = 0;
            for c in conns.iter() {
                c.meter.update(now);
                readers += c.active();
                n += usize::from(!c.retiring());
            }
            (n, readers)
        };
        let room = self.cap().saturating_sub(conns).min(
            self.host
                .as_ref()
                .map_or(usize::MAX, |sem| sem.available_permits()),
        );
        let received = self.received.load(Ordering::Relaxed);
        let rtt = {
            let conns = self.conns.lock().expect("slot poisoned");
            conns.iter().filter_map(|c| c.meter.rtt()).min()
        };
        let mut growth = self.growth.lock().expect("slot poisoned");
        growth.saw_link(rtt, self.movable.load(Ordering::SeqCst));
        if growth.wants_cores(conns, readers) {
            growth.saw_cores(CoresSample::now());
        }
        match growth.tick(now, received, conns, readers, room) {
            Step::Wait => {}
            Step::Retire(n) => {
                let conns = self.conns.lock().expect("slot poisoned");
                let live: Vec<_> = conns.iter().filter(|c| !c.retiring()).collect();
                // The first connection stays, whatever the probe did.
                for c in live.iter().skip(1).rev().take(n) {
                    tracing::debug!(conn = c.id, "letting a probe SSH connection go");
                    c.retiring.store(true, Ordering::SeqCst);
                }
            }
            Step::Open(n) => {
                drop(growth);
                for _ in 0..n {
                    self.open_probe();
                }
            }
        }
    }

    /// Opens one connection of a probe, in the background.
    fn open_probe(self: &Arc<Slot>) {
        let permit = match &self.host {
            None => None,
            Some(sem) => match sem.clone().try_acquire_owned() {
                Ok(p) => Some(p),
                Err(_) => {
                    self.growth.lock().expect("slot poisoned").failed();
                    return;
                }
            },
        };
        let slot = self.clone();
        // The server said its limits on the first connection: a probe's
        // do not ask again (a round trip of its login).
        let known = (slot.conns.lock().expect("slot poisoned").first()).map(|c| c.limits);
        tokio::spawn(async move {
            match connect(
                &slot.target,
                &slot.settings,
                slot.received.clone(),
                permit,
                known,
            )
            .await
            {
                Ok(conn) => {
                    tracing::debug!(conn = conn.id, "probe SSH connection up");
                    let n = {
                        let mut conns = slot.conns.lock().expect("slot poisoned");
                        conns.push(Arc::new(conn));
                        conns.iter().filter(|c| !c.retiring()).count()
                    };
                    let mut growth = slot.growth.lock().expect("slot poisoned");
                    growth.opened(Instant::now(), n, slot.received.load(Ordering::Relaxed));
                }
                Err(e) => {
                    tracing::debug!(error = %e, "cannot open another SSH connection");
                    slot.growth.lock().expect("slot poisoned").failed();
                }
            }
        });
    }
}

/// All connections of a batch.
pub(crate) struct Pool {
    settings: Arc<Settings>,
    slots: Mutex<HashMap<Key, Arc<Slot>>>,
    /// `max_per_host` permits per `host:port`.
    hosts: Mutex<HashMap<(String, u16), Arc<Semaphore>>>,
}

impl fmt::Debug for Pool {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let slots = self.slots.lock().map(|s| s.len()).unwrap_or_default();
        f.debug_struct("Pool")
            .field("settings", &self.settings)
            .field("keys", &slots)
            .finish()
    }
}

impl Pool {
    pub(crate) fn new(settings: Settings) -> Pool {
        Pool {
            settings: Arc::new(settings),
            slots: Mutex::new(HashMap::new()),
            hosts: Mutex::new(HashMap::new()),
        }
    }

    fn slot(&self, key: &Key, target: &Target) -> Arc<Slot> {
        let host = self.host_permits(key);
        let mut slots = self.slots.lock().expect("pool poisoned");
        slots
            .entry(key.clone())
            .or_insert_with(|| {
                Arc::new(Slot {
                    settings: self.settings.clone(),
                    target: target.clone(),
                    host,
                    conns: Mutex::default(),
                    opening: tokio::sync::Mutex::default(),
                    growth: Mutex::default(),
                    received: Arc::default(),
                    movable: AtomicUsize::default(),
                    last_tick: Mutex::default(),
                    failed: Mutex::default(),
                })
            })
            .clone()
    }

    /// The host's `max_per_host` permits, if capped.
    fn host_permits(&self, key: &Key) -> Option<Arc<Semaphore>> {
        let max = self.settings.max_per_host?;
        let mut hosts = self.hosts.lock().expect("pool poisoned");
        Some(
            hosts
                .entry((key.host.clone(), key.port))
                .or_insert_with(|| Arc::new(Semaphore::new(max.max(1))))
                .clone(),
        )
    }

    /// A connection for `target`: the least busy live one, or a new one
    /// when there is none. More connections are opened as parts read
    /// (`Slot::tick`), when they pay.
    pub(crate) async fn get(&self, target: &Target) -> Result<Lease> {
        let key = Key {
            host: target.host.clone(),
            port: target.port,
            user: target.user.clone(),
            password: target.password.clone(),
        };
        let slot = self.slot(&key, target);
        if let Some((kind, msg)) = slot.failed.lock().expect("slot poisoned").clone() {
            return Err(Error::new(kind, msg).retryable(false));
        }
        slot.tick(false);
        if let Some(lease) = slot.least_busy() {
            return Ok(lease);
        }
        let _opening = slot.opening.lock().await;
        if let Some(lease) = slot.least_busy() {
            return Ok(lease);
        }
        let Some(permit) = self.permit(&key).await else {
            return Err(Error::new(
                ErrorKind::Busy,
                format!("no connection to {} allowed", target.host_port()),
            ));
        };
        match connect(target, &self.settings, slot.received.clone(), permit, None).await {
            Ok(conn) => {
                let conn = Arc::new(conn);
                slot.conns.lock().expect("slot poisoned").push(conn.clone());
                Ok(Lease::new(conn, slot.clone(), true))
            }
            Err(e) => {
                if matches!(e.kind(), ErrorKind::Auth | ErrorKind::PeerIdentity)
                    && !e.is_retryable()
                {
                    *slot.failed.lock().expect("slot poisoned") =
                        Some((e.kind(), e.message().to_owned()));
                }
                Err(e)
            }
        }
    }

    /// A permit to open one more connection to the key's host, under
    /// `max_per_host`: waits, closing idle connections of other users of
    /// the host to make room.
    async fn permit(&self, key: &Key) -> Option<Option<OwnedSemaphorePermit>> {
        let Some(sem) = self.host_permits(key) else {
            return Some(None);
        };
        loop {
            if let Ok(p) = sem.clone().try_acquire_owned() {
                return Some(Some(p));
            }
            self.evict_idle(key);
            tokio::select! {
                p = sem.clone().acquire_owned() => return p.ok().map(Some),
                () = tokio::time::sleep(Duration::from_millis(100)) => {}
            }
        }
    }

    /// Closes the idle connections of other keys of the same host.
    fn evict_idle(&self, key: &Key) {
        let slots: Vec<Arc<Slot>> = {
            let slots = self.slots.lock().expect("pool poisoned");
            slots
                .iter()
                .filter(|(k, _)| k.host == key.host && k.port == key.port && *k != key)
                .map(|(_, s)| s.clone())
                .collect()
        };
        for slot in slots {
            if let Ok(mut conns) = slot.conns.lock() {
                conns.retain(|c| c.active() > 0);
            }
        }
    }
}
