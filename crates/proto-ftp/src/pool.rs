#![doc = include_str!("pool.md")]

use std::collections::HashMap;
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::{Duration, Instant};

use suppaftp::tokio::{AsyncRustlsStream, ImplAsyncFtpStream};
use tokio::sync::{Notify, OwnedSemaphorePermit, Semaphore, TryAcquireError, oneshot};

pub(crate) use crate::caps::Caps;
use crate::target::{HostId, Login};
use crate::window::{DataWindow, RoundTrip};

/// The FTP client of one control connection (plain or TLS).
pub(crate) type Ftp = ImplAsyncFtpStream<AsyncRustlsStream>;

/// How long an idle session is trusted: servers drop idle clients (vsftpd
/// after 300 s by default, others sooner), and a stale one costs a failed
/// command before a new login.
const IDLE_MAX: Duration = Duration::from_secs(30);

/// How long to wait for a session that is finishing a transfer in the
/// background rather than log in anew.
const DRAIN_WAIT: Duration = Duration::from_millis(250);

/// A quicker round trip is a server next door, where the CPUs, not the
/// sessions, bound how many files move at once.
const SHORT_LINK: Duration = Duration::from_micros(500);

/// The sessions to such a server at most: more only add logins, each a
/// process and a password hash for the server (vsftpd with yescrypt: 27
/// ms of CPU), and gain nothing (`docs/benchmarks.md`, "FTP: one write a
/// file, and four sessions next door").
const SHORT_LINK_SESSIONS: usize = 4;

/// How long a goodbye waits for the server's answer.
const QUIT_WAIT: Duration = Duration::from_secs(1);

/// The servers of one batch.
#[derive(Debug)]
pub(crate) struct Pool {
    hosts: Mutex<HashMap<HostId, Arc<Host>>>,
    max_per_host: Option<usize>,
}

impl Pool {
    pub(crate) fn new(max_per_host: Option<usize>) -> Pool {
        Pool {
            hosts: Mutex::new(HashMap::new()),
            max_per_host,
        }
    }

    /// Says goodbye (`QUIT`) on every idle session, at the end of the
    /// batch.
    pub(crate) async fn close(&self) {
        let hosts: Vec<Arc<Host>> = (self.hosts.lock())
            .expect("hosts poisoned")
            .values()
            .cloned()
            .collect();
        // Sessions finishing a cut transfer come back first.
        let settled = futures_util::future::join_all(hosts.iter().map(|h| h.drained()));
        let _ = tokio::time::timeout(QUIT_WAIT, settled).await;
        let idle: Vec<Session> = hosts
            .iter()
            .flat_map(|h| std::mem::take(&mut h.lock().idle))
            .collect();
        futures_util::future::join_all(idle.into_iter().map(Session::quit)).await;
    }

    /// The state of server `id`.
    pub(crate) fn host(&self, id: &HostId) -> Arc<Host> {
        let mut hosts = self.hosts.lock().expect("hosts poisoned");
        hosts
            .entry(id.clone())
            .or_insert_with(|| Arc::new(Host::new(id.clone(), self.max_per_host)))
            .clone()
    }
}

/// One server: its connection limit, its idle sessions, what it supports.
#[derive(Debug)]
pub(crate) struct Host {
    pub(crate) id: HostId,
    sem: Arc<Semaphore>,
    state: Mutex<HostState>,
    /// Fired when a session goes idle or a background drain ends.
    changed: Notify,
    pub(crate) caps: Caps,
    /// The shortest round trip seen to it, which sizes data windows.
    pub(crate) rtt: Arc<RoundTrip>,
    /// Whether the user set the limit, which then holds next door too.
    user_limit: bool,
}

#[derive(Debug)]
struct HostState {
    /// The number of connections allowed at once.
    limit: usize,
    /// Connections that got past the greeting and are not closed.
    open: usize,
    /// Permits to forget as they come back (the limit was lowered while
    /// they were in use).
    debt: usize,
    /// Sessions finishing a dropped transfer in the background.
    draining: usize,
    /// Requests waiting for a session (in [`Host::acquire`] or
    /// [`Host::first_of`]).
    waiting: usize,
    /// Logins under way.
    logging_in: usize,
    /// Connections opened or being opened (live [`Slot`]s).
    slots: usize,
    idle: Vec<Session>,
}

/// What [`Host::acquire`] got.
pub(crate) enum Acquired {
    /// A logged-in session of the same login.
    Idle(Box<Session>),
    /// The right to open a new connection.
    Fresh(Slot),
}

impl Host {
    fn new(id: HostId, max: Option<usize>) -> Host {
        let limit = max
            .unwrap_or(Semaphore::MAX_PERMITS)
            .clamp(1, Semaphore::MAX_PERMITS);
        Host {
            id,
            sem: Arc::new(Semaphore::new(limit)),
            state: Mutex::new(HostState {
                limit,
                open: 0,
                debt: 0,
                draining: 0,
                waiting: 0,
                logging_in: 0,
                slots: 0,
                idle: Vec::new(),
            }),
            changed: Notify::new(),
            caps: Caps::default(),
            rtt: Arc::default(),
            user_limit: max.is_some(),
        }
    }

    fn lock(&self) -> MutexGuard<'_, HostState> {
        self.state.lock().expect("host state poisoned")
    }

    /// Counts a request as waiting for a session until the guard is
    /// dropped: logins under way never outnumber the requests that wait.
    pub(crate) fn waiting(self: &Arc<Self>) -> Waiting {
        self.lock().waiting += 1;
        Waiting(self.clone())
    }

    /// A session for `login`: an idle one if there is one, else a slot for
    /// a new connection, waiting for one when the host is at its limit
    /// (closing idle sessions of other logins to make room). No new
    /// connection while the logins under way are as many as the requests
    /// that wait (under a [`Host::waiting`] guard): the first of them to
    /// end serves this request.
    pub(crate) async fn acquire(self: &Arc<Self>, login: &Login) -> Acquired {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();

            let (session, stale, draining) = self.take_idle(login);
            stale.into_iter().for_each(Session::close);
            if let Some(session) = session {
                return Acquired::Idle(Box::new(session));
            }
            if draining {
                // A session is about to come back: it beats a new login.
                if tokio::time::timeout(DRAIN_WAIT, changed.as_mut())
                    .await
                    .is_ok()
                {
                    continue;
                }
            }
            if self.logins_cover_waiters() {
                changed.as_mut().await;
                continue;
            }
            if self.at_short_link_cap() {
                // Room for another login goes to an idle session of
                // another login first, as at the host's limit.
                if let Some(evicted) = self.lock_and_pop_oldest_idle() {
                    evicted.close();
                }
                changed.as_mut().await;
                continue;
            }
            match self.sem.clone().try_acquire_owned() {
                Ok(permit) => return Acquired::Fresh(Slot::new(permit, self)),
                Err(TryAcquireError::NoPermits) => {}
                Err(TryAcquireError::Closed) => unreachable!("host semaphores are never closed"),
            }
            if let Some(evicted) = self.lock_and_pop_oldest_idle() {
                evicted.close();
                continue;
            }
            tokio::select! {
                permit = self.sem.clone().acquire_owned() => {
                    let permit = permit.expect("host semaphores are never closed");
                    if self.logins_cover_waiters() {
                        // Another login began meanwhile: it is this one's.
                        continue;
                    }
                    return Acquired::Fresh(Slot::new(permit, self));
                }
                () = changed.as_mut() => {}
            }
        }
    }

    /// Whether the server is on a short link ([`SHORT_LINK`]) and has as
    /// many sessions as such a server gets, when the user set no limit of
    /// their own.
    fn at_short_link_cap(&self) -> bool {
        !self.user_limit && self.is_short_link() && self.lock().slots >= SHORT_LINK_SESSIONS
    }

    /// Whether the server is next door ([`SHORT_LINK`]).
    pub(crate) fn is_short_link(&self) -> bool {
        self.rtt.get().is_some_and(|rtt| rtt < SHORT_LINK)
    }

    /// Whether the logins under way are as many as the requests waiting.
    fn logins_cover_waiters(&self) -> bool {
        let st = self.lock();
        st.logging_in > 0 && st.logging_in >= st.waiting
    }

    /// Whichever comes first: the session of the login that `login_done`
    /// reports, or an idle session of `login` (another request let it go).
    /// A login that ends after that is the login task's to pool.
    pub(crate) async fn first_of(
        &self,
        login: &Login,
        mut login_done: oneshot::Receiver<Result<Session, pymatris_core::Error>>,
    ) -> Result<Session, pymatris_core::Error> {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            let (session, stale, _) = self.take_idle(login);
            stale.into_iter().for_each(Session::close);
            if let Some(session) = session {
                login_done.close();
                if let Ok(Ok(logged_in)) = login_done.try_recv() {
                    logged_in.release();
                }
                return Ok(session);
            }
            tokio::select! {
                biased;
                done = &mut login_done => {
                    return done.map(|r| r.map(|mut session| {
                        session.slot.login_over();
                        session
                    })).unwrap_or_else(|_| Err(pymatris_core::Error::new(
                        pymatris_core::ErrorKind::Network,
                        format!("logging in to {}: the login task ended", self.id),
                    )));
                }
                () = changed.as_mut() => {}
            }
        }
    }

    /// The most recently used idle session of `login`, the stale idle
    /// sessions (to be dropped by the caller, outside the lock), and
    /// whether a session is draining.
    fn take_idle(&self, login: &Login) -> (Option<Session>, Vec<Session>, bool) {
        let mut st = self.lock();
        let now = Instant::now();
        let mut stale = Vec::new();
        let mut i = 0;
        while i < st.idle.len() {
            if now.duration_since(st.idle[i].idle_since) > IDLE_MAX {
                stale.push(st.idle.remove(i));
            } else {
                i += 1;
            }
        }
        let found = st
            .idle
            .iter()
            .rposition(|s| s.login == *login)
            .map(|i| st.idle.remove(i));
        (found, stale, st.draining > 0)
    }

    fn lock_and_pop_oldest_idle(&self) -> Option<Session> {
        let mut st = self.lock();
        (!st.idle.is_empty()).then(|| st.idle.remove(0))
    }

    /// Takes back a session whose transfer is over.
    fn put_idle(&self, mut session: Session) {
        session.reused = true;
        session.idle_since = Instant::now();
        let mut st = self.lock();
        if std::mem::take(&mut session.slot.logging_in) {
            st.logging_in -= 1;
        }
        if st.debt > 0 {
            // Over the (lowered) limit: close it rather than keep it.
            drop(st);
            session.close();
        } else {
            st.idle.push(session);
            drop(st);
        }
        self.changed.notify_waiters();
    }

    /// The server refused a connection: allow only as many as are open.
    pub(crate) fn lower_limit(&self) {
        let mut st = self.lock();
        let open = st.open;
        self.lower_to(&mut st, open, "the server refused a connection");
    }

    /// The server refused a data connection for lack of room: allow one
    /// connection fewer than are open (the one that was refused is
    /// closed).
    pub(crate) fn refused_data_connection(&self) {
        let mut st = self.lock();
        let open = st.open.saturating_sub(1);
        self.lower_to(&mut st, open, "the server refused a data connection");
    }

    fn lower_to(&self, st: &mut HostState, new: usize, why: &str) {
        let new = new.max(1);
        if new < st.limit {
            let cut = st.limit - new;
            let forgotten = self.sem.forget_permits(cut);
            st.debt += cut - forgotten;
            tracing::debug!(
                host = %self.id,
                from = st.limit,
                to = new,
                "{why}; lowering its connection limit"
            );
            st.limit = new;
        }
    }

    /// Connections open to this server.
    pub(crate) fn open(&self) -> usize {
        self.lock().open
    }

    /// The current connection limit.
    #[cfg(test)]
    pub(crate) fn limit(&self) -> usize {
        self.lock().limit
    }

    /// Returns once no session of this host is draining.
    async fn drained(&self) {
        loop {
            let changed = self.changed.notified();
            tokio::pin!(changed);
            changed.as_mut().enable();
            if self.lock().draining == 0 {
                return;
            }
            changed.await;
        }
    }

    fn begin_drain(&self) {
        self.lock().draining += 1;
    }

    fn end_drain(&self) {
        self.lock().draining -= 1;
        self.changed.notify_waiters();
    }
}

/// The right to one connection to a host: a semaphore permit, and the
/// connection's place in the host's count of open connections.
#[derive(Debug)]
pub(crate) struct Slot {
    permit: Option<OwnedSemaphorePermit>,
    host: Weak<Host>,
    counted: bool,
    /// Counted among the host's logins under way.
    logging_in: bool,
}

impl Slot {
    fn new(permit: OwnedSemaphorePermit, host: &Arc<Host>) -> Slot {
        let mut st = host.lock();
        st.logging_in += 1;
        st.slots += 1;
        drop(st);
        Slot {
            permit: Some(permit),
            host: Arc::downgrade(host),
            counted: false,
            logging_in: true,
        }
    }

    /// The login on this slot is over and its session taken: waiters may
    /// start another.
    pub(crate) fn login_over(&mut self) {
        if std::mem::take(&mut self.logging_in)
            && let Some(host) = self.host.upgrade()
        {
            host.lock().logging_in -= 1;
            host.changed.notify_waiters();
        }
    }

    /// The connection got past the greeting: it counts as open.
    pub(crate) fn count_open(&mut self) {
        if !self.counted
            && let Some(host) = self.host.upgrade()
        {
            host.lock().open += 1;
            self.counted = true;
        }
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let Some(host) = self.host.upgrade() else {
            return;
        };
        let mut st = host.lock();
        if self.counted {
            st.open -= 1;
        }
        if self.logging_in {
            st.logging_in -= 1;
        }
        st.slots -= 1;
        if st.debt > 0 {
            st.debt -= 1;
            if let Some(permit) = self.permit.take() {
                permit.forget();
            }
        }
        drop(st);
        // A login or a place at the short link's cap is free.
        host.changed.notify_waiters();
    }
}

/// A logged-in control connection.
pub(crate) struct Session {
    pub(crate) ftp: Ftp,
    pub(crate) login: Login,
    /// It served a transfer before (so a failure of its first command may
    /// just mean the server dropped it while idle).
    pub(crate) reused: bool,
    /// `PASV` rather than `EPSV`.
    pub(crate) passive: bool,
    /// The receive window of the next data connection.
    pub(crate) window: DataWindow,
    /// The transfer (`RETR <url>`) whose final reply is still to be read:
    /// a small listed file's session goes back to the pool as its transfer
    /// begins (`EARLY_MAX` in `pipeline.rs`), and its next user reads that
    /// reply before its own (`pipeline::settle`).
    pub(crate) owed: Option<String>,
    idle_since: Instant,
    // Dropped after `ftp`: the permit is given back once the socket is
    // closed.
    slot: Slot,
}

impl std::fmt::Debug for Session {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Session")
            .field("login", &self.login)
            .field("reused", &self.reused)
            .field("passive", &self.passive)
            .finish_non_exhaustive()
    }
}

impl Session {
    pub(crate) fn new(
        ftp: Ftp,
        login: Login,
        slot: Slot,
        passive: bool,
        window: DataWindow,
    ) -> Session {
        Session {
            ftp,
            login,
            reused: false,
            passive,
            window,
            owed: None,
            idle_since: Instant::now(),
            slot,
        }
    }

    /// Gives the session back to its host's pool (or closes it when the
    /// batch is over).
    pub(crate) fn release(self) {
        if let Some(host) = self.slot.host.upgrade() {
            host.put_idle(self);
        }
    }

    /// Closes the session politely in the background: servers that
    /// count sessions free its place at once.
    pub(crate) fn close(self) {
        match tokio::runtime::Handle::try_current() {
            Ok(rt) => {
                rt.spawn(self.quit());
            }
            Err(_) => drop(self),
        }
    }

    /// `QUIT`, waiting a little for the server's `221`.
    pub(crate) async fn quit(mut self) {
        let said = tokio::time::timeout(QUIT_WAIT, async {
            crate::pipeline::settle(&mut self, QUIT_WAIT).await?;
            self.ftp.quit().await
        })
        .await;
        tracing::debug!(login = %self.login.user, ok = matches!(said, Ok(Ok(()))), "QUIT");
    }

    /// The host, while the batch lives.
    pub(crate) fn host(&self) -> Option<Arc<Host>> {
        self.slot.host.upgrade()
    }
}

/// A request waiting for a session ([`Host::waiting`]).
#[derive(Debug)]
pub(crate) struct Waiting(Arc<Host>);

impl Drop for Waiting {
    fn drop(&mut self) {
        self.0.lock().waiting -= 1;
    }
}

/// Marks a session as finishing a transfer in the background, so that a
/// transfer of the same login waits for it rather than log in anew.
#[derive(Debug)]
pub(crate) struct Draining(Option<Arc<Host>>);

impl Draining {
    pub(crate) fn new(session: &Session) -> Draining {
        let host = session.host();
        if let Some(h) = &host {
            h.begin_drain();
        }
        Draining(host)
    }
}

impl Drop for Draining {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.end_drain();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::target::Security;

    fn host(max: Option<usize>) -> Arc<Host> {
        Arc::new(Host::new(
            HostId {
                host: "h".into(),
                port: 21,
            },
            max,
        ))
    }

    fn login() -> Login {
        Login {
            user: "u".into(),
            password: "p".into(),
            security: Security::Plain,
        }
    }

    async fn fresh(h: &Arc<Host>) -> Slot {
        let _waiting = h.waiting();
        match h.acquire(&login()).await {
            Acquired::Fresh(mut slot) => {
                slot.login_over();
                slot
            }
            Acquired::Idle(_) => panic!("no idle session expected"),
        }
    }

    #[tokio::test]
    async fn slots_are_bounded_by_max_per_host() {
        let h = host(Some(2));
        let mut a = fresh(&h).await;
        let b = fresh(&h).await;
        a.count_open();
        assert_eq!(h.open(), 1);
        let waiting = tokio::time::timeout(Duration::from_millis(50), fresh(&h)).await;
        assert!(waiting.is_err(), "a third slot must wait");
        drop(a);
        assert_eq!(h.open(), 0);
        let c = tokio::time::timeout(Duration::from_secs(1), fresh(&h))
            .await
            .expect("a slot freed");
        drop((b, c));
    }

    #[tokio::test]
    async fn a_refusal_lowers_the_limit_to_what_is_open() {
        let h = host(Some(8));
        let mut held = Vec::new();
        for _ in 0..3 {
            let mut s = fresh(&h).await;
            s.count_open();
            held.push(s);
        }
        let refused = fresh(&h).await;
        h.lower_limit();
        drop(refused);
        assert_eq!(h.limit(), 3);
        let waiting = tokio::time::timeout(Duration::from_millis(50), fresh(&h)).await;
        assert!(waiting.is_err(), "the limit is now 3, all in use");
        held.pop();
        let s = tokio::time::timeout(Duration::from_secs(1), fresh(&h))
            .await
            .expect("one came back");
        drop(s);
        drop(held);
        // Exactly three permits remain.
        let slots = [fresh(&h).await, fresh(&h).await, fresh(&h).await];
        assert!(
            tokio::time::timeout(Duration::from_millis(50), fresh(&h))
                .await
                .is_err()
        );
        drop(slots);
    }

    #[tokio::test]
    async fn lowering_while_slots_are_out_takes_them_back_as_they_return() {
        let h = host(None);
        let mut a = fresh(&h).await;
        a.count_open();
        let b = fresh(&h).await; // connecting
        let c = fresh(&h).await; // connecting, then refused
        h.lower_limit();
        assert_eq!(h.limit(), 1);
        drop(c);
        drop(b);
        // Only `a`'s permit is left in the semaphore.
        assert!(
            tokio::time::timeout(Duration::from_millis(50), fresh(&h))
                .await
                .is_err()
        );
        drop(a);
        let _d = fresh(&h).await;
    }
}
