//! `zurg publisher`: the naming service. Forwarders push their hosts'
//! lifecycle events; resolve clients list names and watch them change.
//!
//! One thread, one mio loop, like `zurg run`: every connection is
//! non-blocking with bounded buffers, so a garbage, oversized or stalled
//! peer costs its own connection and nobody else's. The registry lives in a
//! `Store` (memory, or etcd with the `etcd` feature); the loop turns the
//! store's changes into frames for watchers the moment they happen.

use std::collections::{BTreeMap, HashMap};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, Instant};

use lexopt::prelude::*;
use mio::net::{TcpListener, TcpStream};
use mio::{Events, Interest, Poll, Token};

use crate::control::proto::{ErrorCode, RemoteVerb, Verb};
use crate::journal::RemoteNote;
use crate::os::signals::{self, SignalFd};

use super::history::{History, Query};
use super::http::{Ctx, Http};
use super::listen::{write_out, Accepting, Acceptor, Written};
use super::proto::{self, Decoder, Frame, Role, CHUNK};
use super::registry::{Change, EpKey};
use super::relay::{Finished, PartOutcome, Relay};
use super::session::{self, FromHost, Hosts};
use super::store::{ConnId, Done, MemoryStore, Store};

const LISTENER: Token = Token(0);
/// Woken by a store that answers from another thread.
pub const WAKER: Token = Token(1);
/// The status page's listener (`--http`).
const HTTP_LISTENER: Token = Token(2);
/// SIGTERM and SIGINT, from the signalfd.
const SIGNALS: Token = Token(3);
const FIRST_CONN: usize = 4;
/// How long a stopping publisher lets its peers read their goodbye (and
/// what was queued for them before it); then it closes what is left. With
/// the journal's `FLUSH_DEADLINE` after it, a stop takes 4 s at most, below
/// the 10 s a service manager or `docker stop` waits before SIGKILL.
const STOP_DEADLINE_MS: u64 = 3_000;
/// What the peers of a stopping publisher are told.
const STOPPING: &str =
    "this publisher is stopping; connect to another one (zurg run moves to its next --publish address)";

pub const DEFAULT_LEASE_MS: u64 = 10_000;
const MAX_CONNS: usize = 4096;
/// Watchers are kept however long they stay silent (they only read), so
/// they have a cap of their own below `MAX_CONNS`.
/// The status page's event streams count among them.
pub(super) const MAX_WATCHERS: usize = 1024;
/// Endpoints of a snapshot still arriving (`last: false`), per connection
/// and across all of them: far above any host's process count, and a bound
/// on what unfinished snapshots can make the publisher hold.
const MAX_SNAPSHOT: usize = 65_536;
const MAX_SNAPSHOTS_PENDING: usize = 262_144;
/// A connection must say hello (and authenticate) within this.
const HANDSHAKE_MS: u64 = 10_000;
/// Queued output a peer may leave unread before it is dropped: a watcher
/// that cannot keep up reconnects and lists again rather than holding the
/// publisher's memory.
const MAX_OUTPUT: usize = 8 * 1024 * 1024;
/// What all watchers together may leave unread of changes. Each gets an
/// equal share of it, between `MIN_WATCHER_OUTPUT` and `MAX_WATCHER_OUTPUT`;
/// one past its share (plus what is left of its listing) is dropped.
/// `MAX_WATCHERS` times the minimum is this budget.
const WATCHERS_OUTPUT: usize = 32 * 1024 * 1024;
const MIN_WATCHER_OUTPUT: usize = 32 * 1024;
const MAX_WATCHER_OUTPUT: usize = 4 * 1024 * 1024;
/// Changes for a watcher are written once this much waits, or at the end
/// of the wake-up: one write per change and watcher cost seconds when a
/// forwarder sent thousands of events at once.
const WATCHER_WRITE_AT: usize = 16 * 1024;
/// Acks are cumulative, so one per forwarder every few milliseconds says as
/// much as one per event; sending them later keeps the forwarder's zurg
/// asleep while a change is still on its way to the watchers.
const ACK_DELAY_MS: u64 = 5;
/// Acks held for the journal's writer are looked at again after this,
/// doubling up to `ACK_RETRY_MAX_MS` while its disk lags.
const ACK_RETRY_MS: u64 = 1;
const ACK_RETRY_MAX_MS: u64 = 200;
/// A listing's next page is produced once less than this is left unsent.
const LISTING_LOW_WATER: usize = 64 * 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Options {
    pub listen: SocketAddr,
    pub etcd: Vec<String>,
    pub prefix: String,
    pub lease_ms: u64,
    pub token_file: Option<PathBuf>,
    /// Where the status page and its JSON API listen (`--http`).
    pub http: Option<SocketAddr>,
    /// Where the publisher keeps its journal of every host's starts and
    /// exits (`--journal`).
    pub journal: Option<PathBuf>,
    /// The operator token (`--operator-token-file`): remote control
    /// through this publisher is off without it.
    pub operator_token_file: Option<PathBuf>,
}

pub fn parse_options(args: &[String]) -> Result<Options, String> {
    let mut listen = None;
    let mut etcd = Vec::new();
    let mut prefix = "/zurg".to_string();
    let mut lease_ms = DEFAULT_LEASE_MS;
    let mut token_file = None;
    let mut http = None;
    let mut journal = None;
    let mut operator_token_file = None;
    let mut p = lexopt::Parser::from_args(args.iter().skip(1));
    while let Some(arg) = p.next().map_err(|e| e.to_string())? {
        match arg {
            Long("listen") => {
                let v = string_value(&mut p)?;
                listen = Some(
                    v.parse::<SocketAddr>()
                        .map_err(|_| format!("--listen {v:?}: expected IP:PORT"))?,
                );
            }
            Long("etcd") => etcd.extend(etcd_urls(&string_value(&mut p)?)?),
            Long("prefix") => prefix = string_value(&mut p)?,
            Long("lease-ms") => {
                let v = string_value(&mut p)?;
                lease_ms = v.parse::<u64>().ok().filter(|n| *n >= 100).ok_or_else(|| {
                    format!("--lease-ms {v:?}: expected milliseconds, at least 100")
                })?;
            }
            Long("token-file") => token_file = Some(PathBuf::from(string_value(&mut p)?)),
            Long("http") => {
                let v = string_value(&mut p)?;
                http = Some(
                    v.parse::<SocketAddr>()
                        .map_err(|_| format!("--http {v:?}: expected IP:PORT"))?,
                );
            }
            Long("journal") => journal = Some(PathBuf::from(string_value(&mut p)?)),
            Long("operator-token-file") => {
                operator_token_file = Some(PathBuf::from(string_value(&mut p)?))
            }
            other => return Err(other.unexpected().to_string()),
        }
    }
    let listen = listen.ok_or("--listen ADDR is required")?;
    // A usage error (exit 2), found before anything starts: the page off
    // loopback without a token would be open to anyone who can reach it.
    if let (Some(addr), None) = (http, &token_file) {
        if !addr.ip().is_loopback() {
            return Err(super::http::HttpError::NeedsToken(addr).to_string());
        }
    }
    Ok(Options {
        listen,
        etcd,
        prefix,
        lease_ms,
        token_file,
        http,
        journal,
        operator_token_file,
    })
}

/// `--etcd`'s list: a stray comma or a blank entry is refused by its place
/// (as `--publish` does), not skipped, so a typo does not leave a cluster
/// with one etcd member fewer than the operator wrote.
fn etcd_urls(list: &str) -> Result<Vec<String>, String> {
    list.split(',')
        .enumerate()
        .map(|(i, url)| {
            if url.trim().is_empty() {
                Err(format!("--etcd {list:?}: entry {} is empty", i + 1))
            } else if url.chars().any(char::is_whitespace) {
                Err(format!(
                    "--etcd {list:?}: entry {} ({url:?}) holds a space",
                    i + 1
                ))
            } else {
                Ok(url.to_string())
            }
        })
        .collect()
}

pub fn string_value(p: &mut lexopt::Parser) -> Result<String, String> {
    p.value()
        .map_err(|e| e.to_string())?
        .string()
        .map_err(|e| e.to_string())
}

/// Reads a shared secret: the file's content without surrounding whitespace.
pub fn read_token(path: &std::path::Path) -> Result<Vec<u8>, String> {
    let text = std::fs::read(path).map_err(|e| format!("{}: {e}", path.display()))?;
    let token = text.trim_ascii().to_vec();
    if token.is_empty() {
        return Err(format!("{}: the token file is empty", path.display()));
    }
    Ok(token)
}

/// The kernel's random generator failed: without it there is no nonce an
/// attacker cannot predict, so the connection that needed one is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("cannot draw a random nonce from getrandom(2): {0}; check that the kernel's random generator is available")]
pub struct NonceError(String);

/// 16 random bytes in hex, from getrandom(2), for challenges, hellos and
/// instance secrets. Never a time-based fallback: a guessable nonce would
/// let a recorded proof be replayed.
pub fn nonce() -> Result<String, NonceError> {
    let mut bytes = [0u8; 16];
    getrandom::fill(&mut bytes).map_err(|e| NonceError(e.to_string()))?;
    Ok(proto::hex(&bytes))
}

#[derive(Debug)]
enum Peer {
    /// Nothing said yet.
    New,
    /// Challenged; waiting for the MAC.
    Challenged { ours: String, hello: Box<Frame> },
    /// Accepted forwarder, waiting for its store welcome or streaming.
    Forwarder { zurg: String },
    /// A resolve client; `watch` says which names it follows after listing.
    Client { watch: Option<Watch> },
}

#[derive(Debug, Clone)]
enum Watch {
    All,
    Name(String),
}

#[derive(Debug)]
struct Conn {
    stream: TcpStream,
    addr: SocketAddr,
    decoder: Decoder,
    out: Vec<u8>,
    peer: Peer,
    opened_ms: u64,
    /// Set when the connection is to be closed once its output is flushed.
    closing: bool,
    /// The proof of the token for a forwarder's welcome, until the store
    /// answers its hello.
    welcome_mac: Option<String>,
    /// A resolve answer still being produced.
    listing: Option<Listing>,
    /// When the peer last sent a frame or took bytes from us: the idle
    /// deadlines count from it.
    active_ms: u64,
    /// The socket took everything last time (no EAGAIN since): writing is
    /// worth a try. Without it every change would retry a full socket.
    writable: bool,
    /// Endpoints of this forwarder's snapshot that are still arriving.
    snapshot_pending: usize,
    /// It proved the operator token: it may relay control requests.
    operator: bool,
    /// Listed in `Server::unflushed`.
    unflushed: bool,
}

/// A resolve answer produced page by page as its client reads it, so a
/// listing of any size costs the publisher `LISTING_LOW_WATER` bytes of
/// buffer, and a prompt reader gets all of it.
#[derive(Debug)]
struct Listing {
    /// One name, or every name (then the hosts come first).
    name: Option<String>,
    /// The last endpoint sent: the next page starts after it.
    after: Option<EpKey>,
    /// The first page of endpoints went out.
    started: bool,
    /// A listing of every name starts with the hosts, a page at a time:
    /// `None` before the first page, then the last host sent, until
    /// `hosts_done`.
    hosts_after: Option<String>,
    hosts_done: bool,
    /// Changes to endpoints at or before the cursor, which the listing has
    /// already shown; they follow `synced`. Changes past the cursor are
    /// left out: the pages still to come show their outcome.
    deferred: Vec<u8>,
}

/// A stop in progress: a request to stop came (SIGTERM or SIGINT).
#[derive(Debug)]
struct Stopping {
    signo: i32,
    since: Instant,
    /// When the connections that have not taken their goodbye are closed.
    deadline_ms: u64,
    hosts: usize,
    clients: usize,
    /// A second request to stop: exit at once.
    forced: Option<i32>,
}

struct Server {
    poll: Poll,
    /// Gone once the publisher is stopping.
    listener: Option<TcpListener>,
    signals: SignalFd,
    stopping: Option<Stopping>,
    /// Ids are never reused: a store answers later (etcd: much later), and
    /// its answer must not reach whoever took a closed connection's place.
    conns: BTreeMap<ConnId, Conn>,
    next_conn: ConnId,
    /// Which connection speaks for a zurg instance, and each instance's
    /// secret: the session rules.
    hosts: Hosts,
    store: Box<dyn Store>,
    token: Option<Vec<u8>>,
    lease_ms: u64,
    start: Instant,
    /// The highest seq each forwarder connection is owed an ack for, and
    /// the journal's mark when it was (`--journal`): the ack waits until
    /// the journal has what it acknowledges, since a host forgets what is
    /// acked and a publisher killed in between would have lost it. One
    /// that closes meanwhile gets nothing, as its id is never handed out
    /// again.
    acks_owed: HashMap<ConnId, (u64, u64)>,
    /// When the owed acks go out.
    acks_due: Option<u64>,
    /// How long acks held for the journal wait before the next look
    /// (doubling while the journal's disk lags, back to the first after).
    ack_retry_ms: u64,
    /// Accepting failed (out of descriptors): when to try again.
    acceptor: Acceptor,
    /// Connections that watch, for the fan-out.
    watchers: BTreeMap<ConnId, Watch>,
    /// Watchers with changes not yet written, flushed at the end of the
    /// wake-up.
    unflushed: Vec<ConnId>,
    /// This wake-up's changes (with their time) for the status page's
    /// streams, handed over once the watchers have theirs.
    page_changes: Vec<(Change, u64)>,
    /// The status page (`--http`).
    http: Option<Http>,
    /// The journal of every host's starts and exits (`--journal`).
    history: Option<History>,
    /// Control requests relayed from operators to hosts.
    relay: Relay,
}

/// `--help` never reaches it: `cli::parse` answers it from the table.
pub fn run(args: &[String]) -> i32 {
    let opts = match parse_options(args) {
        Ok(o) => o,
        Err(e) => {
            eprintln!("zurg: {e}\n{}", crate::cli::render::help_for("publisher"));
            return 2;
        }
    };
    // Before any thread starts (the journal's, etcd's): they inherit the
    // mask, so TERM and INT reach nobody but the signalfd.
    let signals = match signals::take_over_publisher() {
        Ok(fd) => fd,
        Err(e) => {
            eprintln!("zurg publisher: cannot take over SIGTERM and SIGINT: {e}");
            return 1;
        }
    };
    // A request to stop that came while the signals were held (`main`
    // holds them from its first line): nothing is set up yet, so there is
    // nobody to tell and nothing to write; stopping is not starting.
    // One that comes during the set-up (binding, the journal, etcd) waits
    // on the signalfd and is the loop's first event: the usual clean stop.
    if let Some(got) = signals.drain().first() {
        crate::log!(
            "received {} before it started: publisher stopped (nothing was set up)",
            crate::sig::name(got.signo)
        );
        return 0;
    }
    match Server::start(&opts, signals) {
        Ok(Started::Stopped(signo)) => {
            crate::log!(
                "received {} while connecting to etcd: publisher stopped (it served nobody)",
                crate::sig::name(signo)
            );
            0
        }
        Ok(Started::Serving(mut server)) => {
            crate::log!(
                "publisher listening on {} (registry: {}, lease {} ms{})",
                opts.listen,
                server.store.describe(),
                opts.lease_ms,
                if server.token.is_some() {
                    ", token required"
                } else {
                    ""
                }
            );
            if server.relay.token().is_some() {
                crate::log!(
                    "remote control on: operator key {} may run what each host allows",
                    server.relay.key()
                );
            } else {
                crate::log!("remote control off (no --operator-token-file)");
            }
            if let Some(addr) = server.http.as_ref().and_then(Http::local_addr) {
                crate::log!(
                    "status page on http://{addr}/{}",
                    if server.token.is_some() {
                        " (token required)"
                    } else {
                        ""
                    }
                );
            }
            server.serve()
        }
        Err(e) => {
            eprintln!("zurg publisher: {e}");
            1
        }
    }
}

/// `Ok(None)`: `stop` said to give up before the store was ready.
fn make_store(
    opts: &Options,
    waker: &Arc<mio::Waker>,
    stop: &dyn Fn() -> bool,
) -> Result<Option<Box<dyn Store>>, String> {
    if opts.etcd.is_empty() {
        return Ok(Some(Box::new(MemoryStore::new(opts.lease_ms))));
    }
    #[cfg(feature = "etcd")]
    {
        let store = super::etcd::EtcdStore::connect_unless(
            &opts.etcd,
            &opts.prefix,
            opts.lease_ms,
            Arc::clone(waker),
            stop,
        )?;
        Ok(store.map(|s| Box::new(s) as Box<dyn Store>))
    }
    #[cfg(not(feature = "etcd"))]
    {
        let _ = (waker, stop);
        Err("--etcd: this zurg was built without etcd support; build it with `cargo build --release --features etcd`".into())
    }
}

/// What the set-up came to.
enum Started {
    Serving(Box<Server>),
    /// A request to stop (this signal) came while the set-up waited for
    /// etcd: nothing was served, so there is nobody to tell.
    Stopped(i32),
}

impl Server {
    fn start(opts: &Options, signals: SignalFd) -> Result<Started, String> {
        let token = opts
            .token_file
            .as_deref()
            .map(read_token)
            .transpose()
            .map_err(|e| format!("--token-file {e}"))?;
        let operator_token = opts
            .operator_token_file
            .as_deref()
            .map(read_token)
            .transpose()
            .map_err(|e| format!("--operator-token-file {e}"))?;
        if operator_token.is_some() && operator_token == token {
            return Err("--operator-token-file holds the same secret as --token-file; the operator token must differ from the host token (a host that leaks its token must not be able to control other hosts)".into());
        }
        let poll = Poll::new().map_err(|e| format!("cannot create the event loop: {e}"))?;
        let mut listener = crate::os::listen::listen_polled(opts.listen)
            .map_err(|e| format!("cannot listen on {}: {e}", opts.listen))?;
        poll.registry()
            .register(&mut listener, LISTENER, Interest::READABLE)
            .map_err(|e| e.to_string())?;
        poll.registry()
            .register(
                &mut mio::unix::SourceFd(&std::os::fd::AsRawFd::as_raw_fd(&signals)),
                SIGNALS,
                Interest::READABLE,
            )
            .map_err(|e| format!("cannot watch the signalfd: {e}"))?;
        // One Waker per Poll: the etcd store's thread and the journal's
        // readers share it.
        let waker = Arc::new(
            mio::Waker::new(poll.registry(), WAKER)
                .map_err(|e| format!("cannot create the event loop's waker: {e}"))?,
        );
        // etcd may take seconds to answer (or time out): a stop asked for
        // meanwhile is not kept waiting for it.
        let Some(store) = make_store(opts, &waker, &|| signals.pending())? else {
            let signo = signals
                .drain()
                .first()
                .map_or(crate::sig::SIGTERM, |r| r.signo);
            return Ok(Started::Stopped(signo));
        };
        let history = opts
            .journal
            .as_deref()
            .map(|dir| History::open(dir, Arc::clone(&waker)))
            .transpose()?;
        let http = opts
            .http
            .map(|addr| Http::bind(addr, token.clone(), poll.registry(), HTTP_LISTENER))
            .transpose()
            .map_err(|e| e.to_string())?;
        Ok(Started::Serving(Box::new(Server {
            poll,
            listener: Some(listener),
            signals,
            stopping: None,
            conns: BTreeMap::new(),
            next_conn: 0,
            hosts: Hosts::default(),
            store,
            token,
            lease_ms: opts.lease_ms,
            start: Instant::now(),
            acks_owed: HashMap::new(),
            acks_due: None,
            ack_retry_ms: ACK_RETRY_MS,
            acceptor: Acceptor::default(),
            watchers: BTreeMap::new(),
            unflushed: Vec::new(),
            page_changes: Vec::new(),
            http,
            history,
            relay: Relay::new(operator_token),
        })))
    }

    fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    fn serve(&mut self) -> i32 {
        let mut events = Events::with_capacity(1024);
        let mut done = Vec::new();
        loop {
            let now = self.now_ms();
            let handshake = self
                .conns
                .iter()
                .filter_map(|(id, c)| self.idle_deadline(*id, c))
                .min();
            let deadline = [
                handshake,
                self.store.next_deadline(),
                self.acks_due,
                self.acceptor.next_deadline(),
                self.http.as_ref().and_then(Http::next_deadline),
                self.relay.next_deadline(),
                self.stopping.as_ref().map(|s| s.deadline_ms),
            ]
            .into_iter()
            .flatten()
            .min();
            let timeout = if self.http.as_ref().is_some_and(Http::flushing) {
                // Streams still to write: look for new input first, then
                // write the next few.
                Some(Duration::ZERO)
            } else {
                deadline.map(|at| {
                    Duration::from_millis(at.saturating_sub(now)) + Duration::from_micros(500)
                })
            };
            if let Err(e) = self.poll.poll(&mut events, timeout) {
                if e.kind() != io::ErrorKind::Interrupted {
                    crate::log!("event loop error: {e}");
                }
                continue;
            }
            for event in events.iter() {
                match event.token() {
                    LISTENER => self.accept(),
                    WAKER => {}
                    SIGNALS => self.on_signals(),
                    HTTP_LISTENER => self.accept_http(),
                    Token(t) => {
                        if let Some(id) = t.checked_sub(FIRST_CONN) {
                            if self.http.as_ref().is_some_and(|h| h.owns(id)) {
                                self.http_ready(id, event.is_writable());
                                continue;
                            }
                            if event.is_writable() || event.is_write_closed() {
                                if let Some(conn) = self.conn(id) {
                                    conn.writable = true;
                                }
                            }
                            self.service_conn(id);
                        }
                    }
                }
            }
            let now = self.now_ms();
            if self.acceptor.due(now) {
                self.accept();
            }
            if self.http.as_ref().is_some_and(|h| h.accept_due(now)) {
                self.accept_http();
            }
            if let Some(http) = self.http.as_mut() {
                http.expire(now);
            }
            self.store.tick(now);
            self.expire_idle(now);
            let late = self.relay.expire(now);
            self.relay_finished(late);
            // Store answers may produce more requests only through peers, so
            // one drain per wake-up is enough.
            self.store.drain(&mut done);
            for d in done.drain(..) {
                self.on_done(d);
            }
            self.history_answers();
            if self.acks_due.is_some_and(|at| at <= self.now_ms()) {
                self.send_acks();
            }
            for id in std::mem::take(&mut self.unflushed) {
                if let Some(conn) = self.conn(id) {
                    conn.unflushed = false;
                }
                self.flush(id);
            }
            // The status page's streams only after the watchers, a few
            // streams a turn, a burst's changes in one write a stream
            // (`Http::flush_dirty`):
            // encoding a change for them and writing it to each (some
            // 10 µs a stream, a millisecond at 100) is the loop's longest
            // work per change, and a notice waiting behind it is what
            // `resolve --watch` users would notice.
            let now = self.now_ms();
            let share = self.watcher_share();
            let page_changes = std::mem::take(&mut self.page_changes);
            if let Some(http) = self.http.as_mut() {
                for (change, time_us) in &page_changes {
                    http.on_change(change, *time_us, share, now);
                }
                http.flush_dirty(share, now);
            }
            if self.stopping.is_some() {
                // Connections leave as their goodbye is written, or at the
                // stop's deadline; not after one try as in `reap_closed`.
                if let Some(code) = self.stop_progress() {
                    return code;
                }
            } else {
                self.reap_closed();
            }
        }
    }

    fn on_signals(&mut self) {
        for got in self.signals.drain() {
            match &mut self.stopping {
                None => self.begin_stop(got.signo),
                Some(stopping) => {
                    stopping.forced.get_or_insert(got.signo);
                }
            }
        }
    }

    /// The first request to stop: no new connections; every peer is told
    /// the publisher is stopping (a forwarder then moves to its next
    /// publisher at once); status page streams end. The registry is left
    /// as it is: with etcd the hosts' keys stay on their leases, which the
    /// publisher the hosts move to takes over (docs/naming.md, "Stopping a
    /// publisher").
    fn begin_stop(&mut self, signo: i32) {
        crate::log!(
            "received {}: stopping the publisher (a second signal, or {} s, closes what is left)",
            crate::sig::name(signo),
            STOP_DEADLINE_MS / 1000
        );
        if let Some(mut listener) = self.listener.take() {
            let _ = self.poll.registry().deregister(&mut listener);
        }
        let now = self.now_ms();
        if let Some(http) = self.http.as_mut() {
            http.stop(now);
        }
        let ids: Vec<ConnId> = self.conns.keys().copied().collect();
        let (mut hosts, mut clients) = (0, 0);
        for id in ids {
            let Some(conn) = self.conn(id) else { continue };
            if conn.closing {
                continue;
            }
            match conn.peer {
                Peer::Forwarder { .. } => hosts += 1,
                _ => clients += 1,
            }
            // A listing in progress ends here: the client lists again
            // wherever it reconnects.
            conn.listing = None;
            let bye = Frame::Error {
                message: STOPPING.to_string(),
                stopping: true,
            };
            proto::encode(&bye, &mut conn.out);
            self.close(id, None);
            self.flush(id);
        }
        self.stopping = Some(Stopping {
            signo,
            since: Instant::now(),
            deadline_ms: now.saturating_add(STOP_DEADLINE_MS),
            hosts,
            clients,
            forced: None,
        });
    }

    /// Once stopping: the exit code when it is time to exit.
    fn stop_progress(&mut self) -> Option<i32> {
        let open = self
            .conns
            .len()
            .saturating_add(self.http.as_ref().map_or(0, Http::conn_count));
        let now = self.now_ms();
        let stopping = self.stopping.as_ref()?;
        if let Some(again) = stopping.forced {
            crate::log!(
                "received {} again: exiting now{}",
                crate::sig::name(again),
                if open > 0 {
                    format!(" ({open} connection(s) had not taken their goodbye)")
                } else {
                    String::new()
                }
            );
            let left = self.history.as_ref().map_or(0, History::unwritten);
            if left > 0 {
                crate::log!(
                    "warning: {left} publisher journal record(s) not written: the exit did not wait for them"
                );
            }
            crate::log!("publisher stopped (forced)");
            return Some(1);
        }
        if open > 0 && now < stopping.deadline_ms {
            return None;
        }
        let took = stopping.since.elapsed().as_millis();
        let (signo, since, hosts, clients) = (
            stopping.signo,
            stopping.since,
            stopping.hosts,
            stopping.clients,
        );
        if open > 0 {
            crate::log!(
                "told {hosts} host(s) and {clients} client(s) to go elsewhere; closed {open} connection(s) that did not take their goodbye within {STOP_DEADLINE_MS} ms"
            );
        } else {
            crate::log!(
                "told {hosts} host(s) and {clients} client(s) to go elsewhere; all connections closed in {took} ms"
            );
        }
        let mut code = 0;
        if let Some(history) = self.history.as_mut() {
            let started = Instant::now();
            let signals = &self.signals;
            let mut forced = None;
            let again = || {
                forced = signals
                    .drain()
                    .iter()
                    .find(|s| matches!(s.signo, libc::SIGTERM | libc::SIGINT))
                    .map(|s| s.signo);
                forced.is_some()
            };
            let left = history.finish(crate::journal_writer::FLUSH_DEADLINE, again);
            let took = started.elapsed().as_millis();
            match (left, forced) {
                (None, _) => crate::log!("publisher journal written in {took} ms"),
                (Some(left), Some(again)) => crate::log!(
                    "received {} again: exiting now; {left} publisher journal record(s) not written",
                    crate::sig::name(again)
                ),
                (Some(left), None) => crate::log!(
                    "warning: {left} publisher journal record(s) not written: its disk did not take them within {took} ms"
                ),
            }
            if left.is_some() {
                code = 1;
            }
        }
        crate::log!(
            "publisher stopped ({} after {} ms)",
            crate::sig::name(signo),
            since.elapsed().as_millis()
        );
        Some(code)
    }

    fn accept(&mut self) {
        let open = self
            .conns
            .len()
            .saturating_add(self.http.as_ref().map_or(0, Http::conn_count));
        let refusal = proto::to_bytes(&Frame::Error {
            message: format!("too many connections ({MAX_CONNS})"),
            stopping: false,
        });
        let now = self.now_ms();
        let Some(listener) = self.listener.as_ref() else {
            return;
        };
        let conns = &mut self.conns;
        self.acceptor.accept(
            listener,
            Accepting {
                registry: self.poll.registry(),
                next_id: &mut self.next_conn,
                first_token: FIRST_CONN,
                open,
                max: MAX_CONNS,
                refusal: &refusal,
                what: "connection",
                now_ms: now,
            },
            |id, stream, addr| {
                conns.insert(
                    id,
                    Conn {
                        stream,
                        addr,
                        decoder: Decoder::publisher(),
                        out: Vec::new(),
                        peer: Peer::New,
                        opened_ms: now,
                        closing: false,
                        welcome_mac: None,
                        listing: None,
                        active_ms: now,
                        writable: true,
                        snapshot_pending: 0,
                        unflushed: false,
                        operator: false,
                    },
                );
            },
        );
    }

    fn http_ctx(&self) -> Ctx<'_> {
        Ctx {
            view: self.store.view(),
            now_ms: self.now_ms(),
            conns: self.conns.len(),
            watchers: self.watchers.len(),
        }
    }

    fn accept_http(&mut self) {
        let Some(mut http) = self.http.take() else {
            return;
        };
        let mut next = self.next_conn;
        http.accept(&mut next, FIRST_CONN, MAX_CONNS, &self.http_ctx());
        self.next_conn = next;
        self.http = Some(http);
    }

    fn http_ready(&mut self, id: ConnId, writable: bool) {
        let Some(mut http) = self.http.take() else {
            return;
        };
        http.ready(id, writable, &self.http_ctx());
        self.http = Some(http);
    }

    /// Resolve watchers and status page streams: they share `MAX_WATCHERS`
    /// and `WATCHERS_OUTPUT`.
    fn all_watchers(&self) -> usize {
        self.watchers
            .len()
            .saturating_add(self.http.as_ref().map_or(0, Http::streams))
    }

    fn conn(&mut self, id: ConnId) -> Option<&mut Conn> {
        self.conns.get_mut(&id)
    }

    /// Reads what arrived, handles whole frames, writes what is queued.
    fn service_conn(&mut self, id: ConnId) {
        let mut buf = [0u8; 16 * 1024];
        loop {
            let Some(conn) = self.conn(id) else { return };
            if conn.closing {
                break;
            }
            match conn.stream.read(&mut buf) {
                Ok(0) => {
                    self.close(id, None);
                    return;
                }
                Ok(n) => {
                    conn.decoder.feed(buf.get(..n).unwrap_or_default());
                    self.handle_frames(id);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(_) => {
                    self.close(id, None);
                    return;
                }
            }
        }
        self.drive(id);
    }

    /// Writes what is queued and, as the socket takes it, produces more of
    /// a listing in progress.
    fn drive(&mut self, id: ConnId) {
        loop {
            self.flush(id);
            let Some(conn) = self.conns.get(&id) else {
                return;
            };
            if conn.closing || conn.listing.is_none() || conn.out.len() >= LISTING_LOW_WATER {
                return;
            }
            self.report_applied();
            self.pump(id);
        }
    }

    /// Reports what the store applied and has not reported yet. A listing
    /// page must not be encoded while such a change waits: the in-memory
    /// store changes its registry as a frame is read, but reports the
    /// change at the end of the loop's turn, so a page encoded in between
    /// would show the endpoint and the report would then show it again (a
    /// watcher that reconnected saw a host's snapshot twice: `live`, then
    /// `up`).
    fn report_applied(&mut self) {
        let mut done = Vec::new();
        self.store.drain(&mut done);
        for d in done {
            self.on_done(d);
        }
    }

    /// Encodes pages of the listing until `LISTING_LOW_WATER` bytes wait or
    /// the listing is complete (`synced`, then the deferred changes).
    fn pump(&mut self, id: ConnId) {
        let Some(conn) = self.conns.get_mut(&id) else {
            return;
        };
        let view = self.store.view();
        while conn.out.len() < LISTING_LOW_WATER {
            let Some(listing) = conn.listing.as_mut() else {
                return;
            };
            if !listing.hosts_done {
                let hosts = view.hosts_page(listing.hosts_after.as_deref(), CHUNK);
                listing.hosts_done = hosts.len() < CHUNK;
                // The first hosts frame goes out even when there are none; a
                // later empty page (the hosts ended on a page boundary) says
                // nothing.
                let first_page = listing.hosts_after.is_none();
                if let Some(last) = hosts.last() {
                    listing.hosts_after = Some(last.zurg.clone());
                }
                if first_page || !hosts.is_empty() {
                    proto::encode(&Frame::Hosts { hosts }, &mut conn.out);
                }
                continue;
            }
            let first = !listing.started;
            listing.started = true;
            let page = view.page(listing.name.as_deref(), listing.after.as_ref(), CHUNK);
            let Some(last) = page.last() else {
                if let (Some(name), true) = (&listing.name, first) {
                    let empty = Frame::Endpoints {
                        name: name.clone(),
                        endpoints: Vec::new(),
                    };
                    proto::encode(&empty, &mut conn.out);
                }
                proto::encode(&Frame::Synced, &mut conn.out);
                conn.out.append(&mut listing.deferred);
                conn.listing = None;
                return;
            };
            listing.after = Some((last.service.clone(), last.gpid.clone()));
            let mut rest = page.as_slice();
            while let Some(head) = rest.first() {
                let same = rest
                    .iter()
                    .take_while(|e| e.service == head.service)
                    .count();
                let (these, others) = rest.split_at(same.min(rest.len()));
                let frame = Frame::Endpoints {
                    name: head.service.clone(),
                    endpoints: these.to_vec(),
                };
                proto::encode(&frame, &mut conn.out);
                rest = others;
            }
        }
    }

    fn handle_frames(&mut self, id: ConnId) {
        loop {
            let Some(conn) = self.conn(id) else { return };
            if conn.closing {
                return;
            }
            match conn.decoder.next_frame() {
                Ok(Some(frame)) => self.on_frame(id, frame),
                Ok(None) => return,
                Err(e) => {
                    let addr = conn.addr;
                    crate::log!("connection from {addr}: {e}; closing it");
                    self.close(id, Some(e.to_string()));
                    return;
                }
            }
        }
    }

    fn send(&mut self, id: ConnId, frame: &Frame) {
        let Some(conn) = self.conn(id) else { return };
        if conn.closing {
            // Its error frame, or its goodbye, is the last thing it gets.
            return;
        }
        proto::encode(frame, &mut conn.out);
        if conn.out.len() > MAX_OUTPUT {
            let addr = conn.addr;
            conn.out.clear();
            crate::log!("connection from {addr} does not read what it is sent; closing it");
            self.close(id, Some("too slow: output buffer full".into()));
        }
    }

    fn flush(&mut self, id: ConnId) {
        let now = self.now_ms();
        let Some(conn) = self.conn(id) else { return };
        if !conn.writable {
            // Full until the next writable event says otherwise.
            return;
        }
        let Written { bytes, failed } =
            write_out(&mut conn.stream, &mut conn.out, &mut conn.writable);
        if bytes > 0 {
            conn.active_ms = now;
        }
        if failed {
            conn.closing = true;
        }
        if conn.closing && (conn.out.is_empty() || failed) {
            self.drop_conn(id);
        }
    }

    /// Sends an error (when given) and closes after it is written.
    fn close(&mut self, id: ConnId, error: Option<String>) {
        self.watchers.remove(&id);
        if let Some(message) = error {
            if let Some(conn) = self.conn(id) {
                proto::encode(
                    &Frame::Error {
                        message,
                        stopping: false,
                    },
                    &mut conn.out,
                );
            }
        }
        let zurg = match self.conn(id) {
            Some(conn) => {
                conn.closing = true;
                match &conn.peer {
                    Peer::Forwarder { zurg } => Some(zurg.clone()),
                    _ => None,
                }
            }
            None => None,
        };
        if let Some(zurg) = zurg {
            if self.hosts.release(id, &zurg) {
                self.store.disconnected(&zurg);
                let gone = self.relay.host_gone(&zurg);
                self.relay_finished(gone);
            }
        }
        self.relay.operator_gone(id);
    }

    fn drop_conn(&mut self, id: ConnId) {
        self.watchers.remove(&id);
        self.relay.operator_gone(id);
        if let Some(mut conn) = self.conns.remove(&id) {
            let _ = self.poll.registry().deregister(&mut conn.stream);
            self.acceptor.freed();
        }
    }

    fn reap_closed(&mut self) {
        let closing: Vec<ConnId> = self
            .conns
            .iter()
            .filter(|(_, c)| c.closing)
            .map(|(id, _)| *id)
            .collect();
        for id in closing {
            // One last attempt to deliver the error frame; best effort.
            if let Some(conn) = self.conn(id) {
                let _ = conn.stream.write(&conn.out);
            }
            self.drop_conn(id);
        }
    }

    /// When a connection that has not earned its place is closed: the
    /// handshake, and then identifying as forwarder or watcher, must each
    /// happen within `HANDSHAKE_MS`; a forwarder must send something
    /// (heartbeats come every lease/3) within a lease; a client that only
    /// lists must keep asking or reading. Watchers have no deadline: they
    /// have `MAX_WATCHERS`.
    fn idle_deadline(&self, id: ConnId, c: &Conn) -> Option<u64> {
        if c.closing {
            return None;
        }
        match &c.peer {
            Peer::New | Peer::Challenged { .. } => Some(c.opened_ms.saturating_add(HANDSHAKE_MS)),
            Peer::Forwarder { .. } => Some(c.active_ms.saturating_add(self.lease_ms)),
            Peer::Client { watch: Some(_) } => None,
            // An operator waits for a restart's answer, up to the relay's
            // deadline (a longer one if its request asked to wait longer).
            Peer::Client { watch: None } if c.operator => Some(
                c.active_ms
                    .saturating_add(super::relay::DEADLINE_MS)
                    .max(self.relay.latest_deadline_of(id).unwrap_or(0))
                    .saturating_add(HANDSHAKE_MS),
            ),
            Peer::Client { watch: None } => Some(c.active_ms.saturating_add(HANDSHAKE_MS)),
        }
    }

    fn expire_idle(&mut self, now: u64) {
        let late: Vec<(ConnId, String)> = self
            .conns
            .iter()
            .filter(|(id, c)| self.idle_deadline(**id, c).is_some_and(|at| at <= now))
            .map(|(id, c)| {
                let why = match c.peer {
                    Peer::New | Peer::Challenged { .. } => "no hello within 10 s".to_string(),
                    Peer::Forwarder { .. } => format!(
                        "a forwarder silent for a lease ({} ms): heartbeats are due every lease/3",
                        self.lease_ms
                    ),
                    Peer::Client { .. } => "idle for 10 s without a resolve or a watch".to_string(),
                };
                (*id, why)
            })
            .collect();
        for (id, why) in late {
            self.close(id, Some(why));
        }
    }

    fn on_frame(&mut self, id: ConnId, frame: Frame) {
        let now = self.now_ms();
        let Some(conn) = self.conn(id) else { return };
        conn.active_ms = now;
        let peer = std::mem::replace(&mut conn.peer, Peer::New);
        match (peer, frame) {
            (Peer::New, hello @ Frame::Hello { .. }) => {
                if let Frame::Hello { proto, .. } = &hello {
                    if let Err(refusal) = session::check_protocol(*proto) {
                        self.close(id, Some(refusal.to_string()));
                        return;
                    }
                }
                let operator = matches!(
                    &hello,
                    Frame::Hello {
                        role: Role::Operator,
                        ..
                    }
                );
                if operator && self.relay.token().is_none() {
                    let message = "remote control is off on this publisher: start it with --operator-token-file F".to_string();
                    self.close(id, Some(message));
                    return;
                }
                if self.token.is_some() || operator {
                    let ours = match nonce() {
                        Ok(n) => n,
                        Err(e) => {
                            crate::log!("{e}; refusing a connection");
                            self.close(id, Some(e.to_string()));
                            return;
                        }
                    };
                    self.send(
                        id,
                        &Frame::Challenge {
                            nonce: ours.clone(),
                        },
                    );
                    if let Some(conn) = self.conn(id) {
                        conn.peer = Peer::Challenged {
                            ours,
                            hello: Box::new(hello),
                        };
                    }
                } else {
                    self.accepted(id, hello);
                }
            }
            (Peer::Challenged { ours, hello }, Frame::Auth { mac }) => {
                let role = match &*hello {
                    Frame::Hello { role, .. } => *role,
                    _ => Role::Client,
                };
                let key = match role {
                    Role::Operator => self.relay.token(),
                    Role::Forwarder | Role::Client => self.token.as_deref(),
                };
                let proven = key.is_some_and(|t| proto::verify_proof(t, role.name(), &ours, &mac));
                let host_token_as_operator = role == Role::Operator
                    && self
                        .token
                        .as_deref()
                        .is_some_and(|t| proto::verify_proof(t, role.name(), &ours, &mac));
                if proven {
                    self.accepted(id, *hello);
                } else if host_token_as_operator {
                    let addr = self.conn(id).map(|c| c.addr);
                    crate::log!("connection from {addr:?}: an operator that proved the host token, not the operator token; refused");
                    self.close(id, Some("refused: this is the host token, not the operator token; control requests need the operator token (--operator-token-file)".into()));
                } else {
                    let addr = self.conn(id).map(|c| c.addr);
                    crate::log!("connection from {addr:?}: authentication failed");
                    self.close(id, Some("authentication failed".into()));
                }
            }
            (peer @ Peer::Forwarder { .. }, frame) => self.forwarder_frame(id, peer, frame),
            (Peer::Client { .. }, Frame::Resolve { name, watch }) => self.resolve(id, name, watch),
            (
                peer @ Peer::Client { .. },
                Frame::Request {
                    id: asked,
                    host,
                    verb,
                    parts,
                },
            ) => {
                if let Some(conn) = self.conn(id) {
                    conn.peer = peer;
                }
                self.relay_request(id, asked, &host, verb, parts);
            }
            (
                peer @ Peer::Client { .. },
                Frame::History {
                    name,
                    host,
                    since_us,
                },
            ) => {
                if let Some(conn) = self.conn(id) {
                    conn.peer = peer;
                }
                self.history_query(
                    id,
                    Query {
                        name,
                        host,
                        since_us,
                    },
                );
            }
            (_, frame) => {
                let message = format!("unexpected {} frame", frame.type_name());
                self.close(id, Some(message));
            }
        }
    }

    /// The peer passed the handshake.
    fn accepted(&mut self, id: ConnId, hello: Frame) {
        let Frame::Hello { role, nonce, .. } = &hello else {
            return;
        };
        let (role, nonce) = (*role, nonce.clone());
        let key = match role {
            Role::Operator => self.relay.token(),
            Role::Forwarder | Role::Client => self.token.as_deref(),
        };
        let mac = match (key, &nonce) {
            (Some(t), Some(n)) => Some(proto::proof(t, "publisher", n)),
            _ => None,
        };
        match role {
            Role::Client | Role::Operator => {
                let operator = role == Role::Operator;
                if let Some(conn) = self.conn(id) {
                    conn.operator = operator;
                }
                if operator {
                    let addr = self
                        .conn(id)
                        .map(|c| c.addr.to_string())
                        .unwrap_or_default();
                    crate::log!("operator {} connected from {addr}", self.relay.key());
                }
                if let Some(conn) = self.conn(id) {
                    conn.peer = Peer::Client { watch: None };
                }
                let lease_ms = self.lease_ms;
                self.send(
                    id,
                    &Frame::Welcome {
                        last_seq: 0,
                        lease_ms,
                        mac,
                    },
                );
            }
            Role::Forwarder => {
                let admitted = session::forwarder_hello(hello).and_then(|hello| {
                    let replaced = self.hosts.admit(
                        id,
                        &hello.info.zurg,
                        &hello.instance,
                        self.store.view(),
                    )?;
                    Ok((hello, replaced))
                });
                let (hello, replaced) = match admitted {
                    Ok(admitted) => admitted,
                    Err(refusal) => {
                        if let session::Refusal::NotItsInstance { zurg } = &refusal {
                            let addr = self.conn(id).map(|c| c.addr);
                            crate::log!(
                                "connection from {addr:?} said hello as live host {zurg} with another instance secret; refused"
                            );
                        }
                        self.close(id, Some(refusal.to_string()));
                        return;
                    }
                };
                let session::ForwarderHello { info, control, .. } = hello;
                let zurg = info.zurg.clone();
                // A reconnect from the same instance replaces a connection
                // the publisher has not noticed is dead yet.
                if let Some(old) = replaced {
                    if let Some(c) = self.conn(old) {
                        c.peer = Peer::New;
                    }
                    self.close(old, Some("replaced by a newer connection".into()));
                }
                let addr = self.conn(id).map(|c| c.addr);
                crate::log!(
                    "forwarder {zurg} ({}) connected from {}",
                    if info.hostname.is_empty() {
                        &info.ip
                    } else {
                        &info.hostname
                    },
                    addr.map(|a| a.to_string()).unwrap_or_default()
                );
                if let Some(conn) = self.conn(id) {
                    conn.peer = Peer::Forwarder { zurg: zurg.clone() };
                }
                self.relay.host_hello(&zurg, control);
                if let Some(conn) = self.conn(id) {
                    // Sent with the store's welcome, which carries last_seq.
                    conn.welcome_mac = mac;
                }
                let now = self.now_ms();
                self.store.hello(id, info, now);
            }
        }
    }

    fn forwarder_frame(&mut self, id: ConnId, peer: Peer, frame: Frame) {
        let Peer::Forwarder { zurg } = &peer else {
            return;
        };
        let zurg = zurg.clone();
        if let Some(conn) = self.conn(id) {
            conn.peer = peer;
        }
        let now = self.now_ms();
        let frame = match session::from_host(self.store.view(), &zurg, frame) {
            Ok(frame) => frame,
            Err(refusal) => {
                crate::log!("forwarder {zurg}: {refusal}; closing its connection");
                self.close(id, Some(refusal.to_string()));
                return;
            }
        };
        match frame {
            FromHost::Event {
                seq,
                kind,
                time_us,
                endpoint,
                exit,
            } => {
                let applied = self.store.view().host(&zurg).map_or(0, |h| h.seq);
                if let (Some(history), true) = (self.history.as_mut(), seq > applied) {
                    history.record(&zurg, seq, kind, time_us, &endpoint, exit.as_ref());
                }
                self.store.event(id, &zurg, seq, kind, endpoint, exit, now)
            }
            FromHost::Snapshot {
                seq,
                endpoints,
                last,
            } => {
                let pending_elsewhere: usize = self
                    .conns
                    .iter()
                    .filter(|(other, _)| **other != id)
                    .map(|(_, c)| c.snapshot_pending)
                    .sum();
                let Some(conn) = self.conn(id) else { return };
                let pending = conn.snapshot_pending.saturating_add(endpoints.len());
                conn.snapshot_pending = if last { 0 } else { pending };
                let refused = if pending > MAX_SNAPSHOT {
                    Some(format!(
                        "snapshot of more than {MAX_SNAPSHOT} endpoints; refusing it"
                    ))
                } else if !last && pending.saturating_add(pending_elsewhere) > MAX_SNAPSHOTS_PENDING
                {
                    Some(format!(
                        "unfinished snapshots hold more than {MAX_SNAPSHOTS_PENDING} endpoints; try again later"
                    ))
                } else {
                    None
                };
                if let Some(message) = refused {
                    crate::log!("forwarder {zurg}: {message}; closing its connection");
                    conn.snapshot_pending = 0;
                    self.close(id, Some(message));
                    return;
                }
                self.store.snapshot(id, &zurg, seq, endpoints, last, now)
            }
            FromHost::Heartbeat => self.store.heartbeat(id, &zurg, now),
            FromHost::Answer(answer) => {
                if let Some(done) = self.relay.answer(&zurg, answer) {
                    self.relay_finished(vec![done]);
                }
            }
            FromHost::Part(part) => match self.relay.part(&zurg, part) {
                PartOutcome::Relay { conn, frame } => {
                    if self.conn(conn).is_some_and(|c| !c.closing) {
                        self.send(conn, &frame);
                        self.flush(conn);
                    }
                }
                PartOutcome::Ended(done) => self.relay_finished(vec![done]),
                PartOutcome::Dropped => {}
            },
            FromHost::Bye => {
                crate::log!("forwarder {zurg} said bye: its zurg is shutting down");
                self.store.bye(&zurg);
                if self.hosts.release(id, &zurg) {
                    let gone = self.relay.host_gone(&zurg);
                    self.relay_finished(gone);
                }
                if let Some(conn) = self.conn(id) {
                    conn.peer = Peer::New;
                    conn.closing = true;
                }
            }
        }
    }

    fn resolve(&mut self, id: ConnId, name: Option<String>, watch: bool) {
        let Some(conn) = self.conn(id) else { return };
        if conn.listing.is_some() {
            let message = "one resolve at a time: the last listing is not complete".to_string();
            self.close(id, Some(message));
            return;
        }
        let watch = watch.then(|| match &name {
            Some(n) => Watch::Name(n.clone()),
            None => Watch::All,
        });
        conn.peer = Peer::Client {
            watch: watch.clone(),
        };
        if let Some(w) = watch {
            if !self.watchers.contains_key(&id) && self.all_watchers() >= MAX_WATCHERS {
                let message = format!("too many watchers ({MAX_WATCHERS}); try again later");
                crate::log!("{message}: refusing one");
                self.close(id, Some(message));
                return;
            }
            self.watchers.insert(id, w);
        } else {
            self.watchers.remove(&id);
        }
        let Some(conn) = self.conn(id) else { return };
        conn.listing = Some(Listing {
            hosts_done: name.is_some(),
            name,
            after: None,
            started: false,
            hosts_after: None,
            deferred: Vec::new(),
        });
        self.drive(id);
    }

    fn on_done(&mut self, done: Done) {
        match done {
            Done::Welcome { conn, last_seq } => {
                let mac = self.conn(conn).and_then(|c| c.welcome_mac.take());
                let lease_ms = self.lease_ms;
                self.send(
                    conn,
                    &Frame::Welcome {
                        last_seq,
                        lease_ms,
                        mac,
                    },
                );
                self.flush(conn);
            }
            Done::Ack { conn, seq } => {
                let mark = self.history.as_ref().map_or(0, History::mark);
                let owed = self.acks_owed.entry(conn).or_insert((seq, mark));
                *owed = (owed.0.max(seq), owed.1.max(mark));
                if self.acks_due.is_none() {
                    self.acks_due = Some(self.now_ms().saturating_add(ACK_DELAY_MS));
                }
            }
            Done::Fail { conn, message } => {
                self.close(conn, Some(message));
            }
            Done::Change(change) => {
                let time_us = crate::os::wall_clock_us();
                self.fan_out(&change, time_us);
                if self.http.is_some() {
                    self.page_changes.push((change, time_us));
                }
            }
        }
    }

    /// The connected host a `--host` names: its zurg GPID, its address or
    /// its hostname.
    fn find_host(&self, name: &str) -> Result<String, (ErrorCode, String)> {
        if self.hosts.speaker(name).is_some() {
            return Ok(name.to_string());
        }
        let view = self.store.view();
        let mut found: Vec<&String> = self
            .hosts
            .connected()
            .filter(|z| {
                z.split(':').next() == Some(name)
                    || view
                        .host(z)
                        .is_some_and(|h| h.ip == name || h.hostname == name)
            })
            .collect();
        found.sort();
        match found.as_slice() {
            [one] => Ok((*one).clone()),
            [] => Err((
                ErrorCode::HostNotConnected,
                format!("host {name} is not connected to this publisher (its zurg is stopped, unreachable, or does not publish here)"),
            )),
            many => Err((
                ErrorCode::BadRequest,
                format!(
                    "host {name} is ambiguous: name one of {} by its zurg GPID",
                    many.iter().map(|z| z.as_str()).collect::<Vec<_>>().join(", ")
                ),
            )),
        }
    }

    /// An operator's request: refused here when it must be, else sent down
    /// the host's connection.
    fn relay_request(&mut self, id: ConnId, asked: u64, host: &str, verb: Verb, parts: bool) {
        if !self.conn(id).is_some_and(|c| c.operator) {
            // Closed rather than answered, and not journaled: an
            // unauthenticated peer must not fill the journal.
            let addr = self.conn(id).map(|c| c.addr);
            crate::log!(
                "connection from {addr:?}: a control request without the operator token; refused"
            );
            let message = "forbidden: control requests need the operator token (say hello as an operator, --operator-token-file); this connection proved the host token or none".to_string();
            self.close(id, Some(message));
            return;
        }
        let sent = match self.find_host(host) {
            Ok(zurg) => {
                let now = self.now_ms();
                match self.relay.start(id, asked, &zurg, verb.clone(), parts, now) {
                    Ok(run) => {
                        if let Some(host_conn) = self.hosts.speaker(&zurg) {
                            self.send(host_conn, &run);
                            self.flush(host_conn);
                        }
                        return;
                    }
                    Err(e) => super::relay::refusal(asked, e.code, e.message, Some(zurg)),
                }
            }
            Err((code, message)) => super::relay::refusal(asked, code, message, None),
        };
        let key = self.relay.key().to_string();
        crate::log!("operator {key}: {} on {host} refused here", verb.name());
        if let (Some(history), Some(remote)) = (self.history.as_mut(), RemoteVerb::of(&verb)) {
            if let Frame::Answer { error, .. } = &sent {
                let note = RemoteNote {
                    operator: key,
                    verb: remote,
                    ok: false,
                    error: error.as_ref().map(|e| e.code),
                };
                let message = error.as_ref().map(|e| e.message.clone());
                history.record_remote(host, RemoteVerb::target(&verb), note, message);
            }
        }
        self.send(id, &sent);
        self.flush(id);
    }

    /// Answers for operators: to them, and into the journal.
    fn relay_finished(&mut self, finished: Vec<Finished>) {
        for Finished { pending, frame } in finished {
            if let (Some(history), Frame::Answer { ok, error, .. }) =
                (self.history.as_mut(), &frame)
            {
                let note = RemoteNote {
                    operator: self.relay.key().to_string(),
                    verb: pending.verb,
                    ok: *ok,
                    error: error.as_ref().map(|e| e.code),
                };
                let message = error.as_ref().map(|e| e.message.clone());
                history.record_remote(&pending.host, pending.target.clone(), note, message);
            }
            let conn = pending.operator_conn;
            if self.conn(conn).is_some_and(|c| !c.closing) {
                self.send(conn, &frame);
                self.flush(conn);
            }
        }
    }

    fn history_query(&mut self, id: ConnId, q: Query) {
        let Some(history) = self.history.as_mut() else {
            let message =
                "this publisher keeps no journal: start it with --journal DIR".to_string();
            self.close(id, Some(message));
            return;
        };
        if let Err(message) = history.query(id, q) {
            self.close(id, Some(message));
        }
    }

    /// Journal answers read since the last turn, queued for their clients.
    fn history_answers(&mut self) {
        let Some(history) = self.history.as_mut() else {
            return;
        };
        for (id, bytes) in history.drain() {
            let Some(conn) = self.conn(id).filter(|c| !c.closing) else {
                continue;
            };
            conn.out.extend_from_slice(&bytes);
            self.flush(id);
        }
    }

    fn send_acks(&mut self) {
        self.acks_due = None;
        let owed: Vec<(ConnId, (u64, u64))> = self.acks_owed.drain().collect();
        for (conn, (seq, mark)) in owed {
            if self.history.as_ref().is_some_and(|h| !h.reached(mark)) {
                self.acks_owed.insert(conn, (seq, mark));
                continue;
            }
            self.send(conn, &Frame::Ack { seq });
            self.flush(conn);
        }
        if self.acks_owed.is_empty() {
            self.ack_retry_ms = ACK_RETRY_MS;
        } else {
            self.acks_due = Some(self.now_ms().saturating_add(self.ack_retry_ms));
            self.ack_retry_ms = (self.ack_retry_ms * 2).min(ACK_RETRY_MAX_MS);
        }
    }

    /// Each watcher's share of the budget: a watcher that cannot keep up
    /// is dropped (it reconnects and lists again) before the watchers
    /// together hold more than WATCHERS_OUTPUT.
    fn watcher_share(&self) -> usize {
        (WATCHERS_OUTPUT / self.all_watchers().max(1)).clamp(MIN_WATCHER_OUTPUT, MAX_WATCHER_OUTPUT)
    }

    /// Sends one change to every watcher of its name (the status page's
    /// streams get it later in the wake-up, `page_changes`).
    fn fan_out(&mut self, change: &Change, time_us: u64) {
        let share = self.watcher_share();
        let name = &change.endpoint.service;
        let watchers: Vec<ConnId> = self
            .watchers
            .iter()
            .filter(|(_, w)| match w {
                Watch::All => true,
                Watch::Name(n) => n == name,
            })
            .map(|(id, _)| *id)
            .collect();
        if watchers.is_empty() {
            // Nobody to tell: a snapshot of thousands costs no encoding.
            return;
        }
        let frame = Frame::Change {
            change: change.change,
            reason: change.reason,
            endpoint: change.endpoint.clone(),
            exit: change.exit.clone(),
            time_us,
        };
        let mut bytes = Vec::new();
        proto::encode(&frame, &mut bytes);
        let key = (name.as_str(), change.endpoint.gpid.as_str());
        for id in watchers {
            let Some(conn) = self.conn(id).filter(|c| !c.closing) else {
                continue;
            };
            let queued = match conn.listing.as_mut() {
                Some(listing) => {
                    let shown = listing
                        .after
                        .as_ref()
                        .is_some_and(|(n, g)| key <= (n.as_str(), g.as_str()));
                    if shown {
                        listing.deferred.extend_from_slice(&bytes);
                    }
                    listing.deferred.len().saturating_add(conn.out.len())
                }
                None => {
                    conn.out.extend_from_slice(&bytes);
                    conn.out.len()
                }
            };
            // A listing's own pages (up to LISTING_LOW_WATER and a page)
            // may still sit in front of the changes: they are not lag.
            if queued > share.saturating_add(LISTING_LOW_WATER) {
                let addr = conn.addr;
                conn.out.clear();
                conn.listing = None;
                crate::log!(
                    "watcher at {addr} fell {queued} bytes behind (its share is {share}); dropping it"
                );
                self.close(id, Some("too slow: fell behind the changes".into()));
                continue;
            }
            if conn.out.len() >= WATCHER_WRITE_AT {
                self.flush(id);
            } else if !conn.out.is_empty() && !conn.unflushed {
                conn.unflushed = true;
                self.unflushed.push(id);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_etcd_list_with_a_blank_entry_is_refused_by_its_place() {
        assert_eq!(
            etcd_urls("http://a:2379,b:2379").unwrap(),
            ["http://a:2379", "b:2379"]
        );
        assert_eq!(
            etcd_urls("a:1,,b:2").unwrap_err(),
            r#"--etcd "a:1,,b:2": entry 2 is empty"#
        );
        assert!(etcd_urls("a:1,").unwrap_err().contains("entry 2 is empty"));
        assert!(etcd_urls("a :1").unwrap_err().contains("holds a space"));
    }

    #[test]
    fn nonces_are_random_hex_of_16_bytes() {
        let a = nonce().unwrap();
        let b = nonce().unwrap();
        assert_eq!(a.len(), 32);
        assert_eq!(proto::unhex(&a).map(|v| v.len()), Some(16));
        assert_ne!(a, b);
    }
}
