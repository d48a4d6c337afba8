//! The registry kept in etcd (feature `etcd`), so several publishers share
//! one view and a forwarder can fail over between them without losing its
//! place in the sequence.
//!
//! # Threads
//!
//! The publisher's loop is single-threaded and must never wait on the
//! network. `EtcdStore` therefore runs a tokio current-thread runtime on one
//! background thread and talks to it in two directions:
//!
//! - loop -> task: every `Store` call becomes an `Op` on an unbounded
//!   channel. One task takes them one at a time and applies each to etcd
//!   before starting the next, so a forwarder's events reach etcd in
//!   sequence order.
//! - task -> loop: results (`Done::Welcome`, `Done::Ack`, `Done::Fail`) and
//!   raw watch events go into a queue behind a mutex (this is the publisher,
//!   not PID 1), and the task wakes the loop through its `mio::Waker` at once:
//!   no timer batches anything, because a death must reach watchers fast.
//!   `drain` empties the queue on the loop thread.
//!
//! # Keys
//!
//! Under the prefix (default `/zurg`):
//!
//! - `{prefix}/services/{name}/{gpid}`: an `Endpoint` as JSON.
//! - `{prefix}/hosts/{zurg}`: a `HostRecord`, the host's `HostInfo` (with its
//!   sequence bookkeeping: seq, applied, duplicates, gaps), its lease id and
//!   why the endpoint keys written with it changed (see below). `connected`
//!   there means "said hello to some publisher and its lease holds": no
//!   publisher clears it on a disconnect, since the forwarder may already be
//!   connected to another.
//!
//! Every key of a host hangs on that host's one lease, with a TTL of
//! `ceil(lease_ms / 1000)` seconds, at least 1. etcd rounds a TTL below its
//! minimum (1.5 election timeouts, 2 s with default settings) up to that
//! minimum, so a host may outlive `lease_ms` by a little; etcd then deletes
//! the host and all its endpoints in one revision.
//!
//! # Requests
//!
//! - hello: read the host key. If it is there and its lease still answers a
//!   keep-alive, keep that lease; otherwise grant a new one. Put the host
//!   record (counters from etcd, the rest from the hello) and welcome the
//!   forwarder with the stored seq. Any publisher on the same etcd answers
//!   the same, so each sequence number is applied once across publishers.
//! - event: a seq at or below the stored one is a duplicate (counted in the
//!   host record). Otherwise one transaction puts or deletes the endpoint
//!   key and puts the advanced host record, guarded by the host key's
//!   mod_revision as this task last saw it; if another publisher wrote the
//!   host meanwhile, the record is read again and the event decided anew.
//!   The host record is cached in the task, so an event costs one request.
//!   Events of one host that queued up meanwhile (a burst of starts or
//!   deaths) share one transaction when they have the same kind and exit
//!   status, since the record's `why` is one per revision (`joins`); a
//!   burst of 1,000 starts is some ten round trips, not 1,000.
//!   Puts do not refresh a lease; the forwarder's heartbeats keep it alive,
//!   and after an event the task sends a keep-alive only when the last one
//!   is older than half the TTL (heartbeats came late), after answering.
//! - snapshot: chunks accumulate in the task; the last one makes the host's
//!   endpoint keys exactly the listed set. The keys a host has are the keys
//!   on its lease (`LeaseTimeToLive` with keys), so no scan of the prefix.
//! - heartbeat: one keep-alive on the host's lease (a stream kept open per
//!   host); a lease that is gone fails the connection. The ack carries the
//!   cached seq: a forwarder that used another publisher since has said
//!   hello here again, which re-reads the record.
//! - bye: put the record saying `bye`, then revoke the lease: etcd deletes
//!   the host's keys.
//! - disconnected: only drops a half-received snapshot; the lease runs out
//!   unless the forwarder comes back. `tick` has nothing to do: etcd expires
//!   leases itself.
//!
//! Any etcd error is logged and answered with `Done::Fail` for the
//! forwarder concerned: its connection closes, it reconnects and resends,
//! and nothing is lost. The task forgets what it cached about that host and
//! reads it again on the next hello. The etcd client reconnects on its own;
//! every request is bounded by a timeout.
//!
//! # The view
//!
//! `view()` is a `Registry` mirrored from etcd: a task reads the whole
//! prefix, then watches it from the next revision. Watch events are applied
//! in `drain`, on the loop thread, so the registry is never shared between
//! threads. Every publisher on one etcd sees every change and serves the
//! same view.
//!
//! A publisher's own writes are reported from etcd's answer to them, not
//! when the watch brings them back (which is later, and a second wake-up of
//! the loop): the answer carries the revision, and the task knows what the
//! transaction wrote. The mirror tracks the revision it stands at, and
//! applies a write's revision only when it is the very next one, so the
//! result is what the watch would have produced and every publisher still
//! reports every change in revision order; the watch's copy of a revision
//! already applied is skipped. Behind a gap (a write of another publisher
//! not yet seen, or one outside the prefix) the write waits for the watch.
//!
//! etcd does not say why a key changed, so every transaction that changes
//! endpoint keys also puts the host record with a `why`: the reason (start,
//! exit, snapshot) and, for an exit, how the process ended. A transaction's
//! events share one revision and etcd never splits a revision across watch
//! responses (no fragmenting is asked for), so the mirror reads the `why` of a revision before applying
//! its endpoint events, and every publisher reports the same reason. A
//! `bye` puts the record with `why: bye` before revoking the lease. Deletes
//! with no `why` (a lease ran out) are reported with `Reason::Lease`. If the
//! watch breaks, it resumes from the next revision; if that revision was
//! compacted, the prefix is read again and the mirror brought to it.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::future::Future;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use etcd_client::{
    Client, Compare, CompareOp, ConnectOptions, EventType, GetOptions, LeaseKeepAliveStream,
    LeaseKeeper, LeaseTimeToLiveOptions, PutOptions, Txn, TxnOp, TxnOpResponse, WatchOptions,
};
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::proto::{Endpoint, EventKind, ExitInfo, HostInfo, Reason};
use super::registry::{count_seq, Change, Registry};
use super::store::{ConnId, Done, Store};

pub const DEFAULT_PREFIX: &str = "/zurg";
/// Bound on every request to etcd, and on connecting.
const TIMEOUT: Duration = Duration::from_secs(5);
const CONNECT_TIMEOUT: Duration = Duration::from_secs(3);
/// How often a connect in progress looks whether it is to be given up.
const STOP_LOOK: Duration = Duration::from_millis(50);
/// Operations per transaction in a snapshot; etcd refuses more than 128 by
/// default.
const TXN_OPS: usize = 100;
/// Attempts at an event or snapshot when another publisher keeps writing
/// the same host record.
const ATTEMPTS: usize = 3;
const WATCH_BACKOFF_MIN: Duration = Duration::from_millis(100);
const WATCH_BACKOFF_MAX: Duration = Duration::from_secs(2);

/// What `{prefix}/hosts/{zurg}` holds.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct HostRecord {
    info: HostInfo,
    lease: i64,
    /// Why the endpoint keys changed in the revision that wrote this record.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    why: Option<Why>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
struct Why {
    reason: Reason,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    exit: Option<ExitInfo>,
}

/// A key under the prefix, parsed.
#[derive(Debug, PartialEq, Eq)]
enum Key<'a> {
    Endpoint { name: &'a str, gpid: &'a str },
    Host { zurg: &'a str },
}

#[derive(Debug, Clone)]
struct Keys {
    /// The prefix, without a trailing slash.
    prefix: String,
}

impl Keys {
    fn new(prefix: &str) -> Keys {
        let prefix = prefix.trim_end_matches('/');
        Keys {
            prefix: if prefix.is_empty() {
                DEFAULT_PREFIX.into()
            } else {
                prefix.into()
            },
        }
    }

    /// Everything this store owns: the prefix and a slash.
    fn all(&self) -> String {
        format!("{}/", self.prefix)
    }

    fn services(&self) -> String {
        format!("{}/services/", self.prefix)
    }

    fn endpoint(&self, name: &str, gpid: &str) -> String {
        format!("{}/services/{name}/{gpid}", self.prefix)
    }

    fn host(&self, zurg: &str) -> String {
        format!("{}/hosts/{zurg}", self.prefix)
    }

    /// A service name may hold a slash; a GPID never does.
    fn parse<'a>(&self, key: &'a str) -> Option<Key<'a>> {
        let rest = key.strip_prefix(self.prefix.as_str())?;
        if let Some(rest) = rest.strip_prefix("/services/") {
            let (name, gpid) = rest.rsplit_once('/')?;
            (!name.is_empty() && !gpid.is_empty()).then_some(Key::Endpoint { name, gpid })
        } else if let Some(zurg) = rest.strip_prefix("/hosts/") {
            (!zurg.is_empty()).then_some(Key::Host { zurg })
        } else {
            None
        }
    }
}

/// A `Store` call, for the task.
#[derive(Debug)]
enum Op {
    Hello {
        conn: ConnId,
        info: HostInfo,
    },
    /// Events of one host, in order; several when they queued up behind a
    /// transaction (see `join`).
    Event {
        conn: ConnId,
        zurg: String,
        events: Vec<Event>,
    },
    Snapshot {
        conn: ConnId,
        zurg: String,
        seq: u64,
        endpoints: Vec<Endpoint>,
        last: bool,
    },
    Heartbeat {
        conn: ConnId,
        zurg: String,
    },
    Bye {
        zurg: String,
    },
    Disconnected {
        zurg: String,
    },
}

impl Op {
    fn conn(&self) -> Option<ConnId> {
        match self {
            Op::Hello { conn, .. }
            | Op::Event { conn, .. }
            | Op::Snapshot { conn, .. }
            | Op::Heartbeat { conn, .. } => Some(*conn),
            Op::Bye { .. } | Op::Disconnected { .. } => None,
        }
    }
}

/// One lifecycle event.
#[derive(Debug)]
struct Event {
    seq: u64,
    kind: EventKind,
    endpoint: Endpoint,
    exit: Option<ExitInfo>,
}

/// Whether `more` may share a transaction with `events`: the same kind and
/// exit, so the one `why` the host record carries for the revision is
/// every endpoint's, and no key twice (etcd refuses that in one
/// transaction). At most `TXN_OPS - 1` events, with the host record.
fn joins(events: &[Event], more: &[Event]) -> bool {
    let Some(first) = events.first() else {
        return false;
    };
    fn why(e: &Event) -> (EventKind, Option<&ExitInfo>) {
        (
            e.kind,
            e.exit.as_ref().filter(|_| e.kind == EventKind::Exit),
        )
    }
    events.len().saturating_add(more.len()) < TXN_OPS
        && more.iter().all(|m| {
            why(m) == why(first)
                && !events.iter().any(|e| {
                    e.endpoint.service == m.endpoint.service && e.endpoint.gpid == m.endpoint.gpid
                })
        })
}

/// What the background thread hands the loop, in order.
#[derive(Debug)]
enum Msg {
    Done(Done),
    /// Everything under the prefix, as of revision `rev`.
    Resync {
        rev: i64,
        kvs: Vec<(String, Vec<u8>)>,
    },
    /// One watch response: whole revisions, in order.
    Watch(Vec<Changed>),
    /// What this publisher's own write changed, from etcd's answer to it:
    /// the whole of revision `rev` (a transaction is one revision). The
    /// watch brings the same revision back later.
    Committed {
        rev: i64,
        changed: Vec<Changed>,
    },
}

/// A key that changed: `value` is `None` when it was deleted.
#[derive(Debug)]
struct Changed {
    rev: i64,
    key: String,
    value: Option<Vec<u8>>,
}

/// The queue between the background thread and the loop.
#[derive(Debug)]
struct Shared {
    queue: Mutex<Vec<Msg>>,
    waker: Arc<mio::Waker>,
    /// The mirror's revision, as the loop last left it. The watch does not
    /// wake the loop for revisions at or below it: the loop would skip
    /// them (this publisher's own writes, already applied). It does not go
    /// down (a resync lists the current revision), so skipping here never
    /// loses a revision the loop would have applied.
    applied: AtomicI64,
}

impl Shared {
    fn push(&self, msgs: impl IntoIterator<Item = Msg>) {
        let mut queue = self.queue.lock().unwrap_or_else(|e| e.into_inner());
        let before = queue.len();
        queue.extend(msgs);
        let added = queue.len() > before;
        drop(queue);
        if added {
            if let Err(e) = self.waker.wake() {
                crate::log!("publisher: cannot wake the loop: {e}");
            }
        }
    }

    fn take(&self) -> Vec<Msg> {
        std::mem::take(&mut *self.queue.lock().unwrap_or_else(|e| e.into_inner()))
    }
}

/// The registry in etcd; see the module header.
pub struct EtcdStore {
    ops: mpsc::UnboundedSender<Op>,
    shared: Arc<Shared>,
    keys: Keys,
    urls: Vec<String>,
    /// The mirror of etcd that resolve clients read.
    registry: Registry,
    /// Hosts whose record said `bye`: their deletes are for that reason.
    leaving: BTreeSet<String>,
    /// The revision the mirror stands at: every change under the prefix up
    /// to it is applied, none after it.
    rev: i64,
    /// Done before the next drain, made on the loop thread.
    pending: Vec<Done>,
}

impl std::fmt::Debug for EtcdStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdStore")
            .field("urls", &self.urls)
            .field("prefix", &self.keys.prefix)
            .finish_non_exhaustive()
    }
}

impl EtcdStore {
    /// Connects to etcd at `urls` and reads the prefix once before
    /// returning, so the view starts complete. Blocks the caller for at most
    /// a few seconds (startup only); everything after is asynchronous.
    pub fn connect(
        urls: &[String],
        prefix: &str,
        lease_ms: u64,
        waker: Arc<mio::Waker>,
    ) -> Result<EtcdStore, String> {
        EtcdStore::connect_unless(urls, prefix, lease_ms, waker, &|| false)?
            .ok_or_else(|| "etcd: the connect was given up".to_string())
    }

    /// `connect`, given up (`Ok(None)`) as soon as `stop` says so, looked
    /// at every `STOP_LOOK`: a publisher asked to stop while etcd is slow
    /// to answer (up to `CONNECT_TIMEOUT` and `TIMEOUT`) stops within that,
    /// not when etcd's answer or its timeout comes. The client thread is
    /// left to end with the process.
    pub fn connect_unless(
        urls: &[String],
        prefix: &str,
        lease_ms: u64,
        waker: Arc<mio::Waker>,
        stop: &dyn Fn() -> bool,
    ) -> Result<Option<EtcdStore>, String> {
        let keys = Keys::new(prefix);
        let shared = Arc::new(Shared {
            queue: Mutex::new(Vec::new()),
            waker,
            applied: AtomicI64::new(0),
        });
        let ttl = i64::try_from(lease_ms.div_ceil(1000).max(1)).unwrap_or(i64::MAX);
        let (ops, rx) = mpsc::unbounded_channel();
        let (ready_tx, ready_rx) = std::sync::mpsc::sync_channel::<Result<(), String>>(1);
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|e| format!("etcd: cannot start a runtime: {e}"))?;
        let task_urls = urls.to_vec();
        let task_keys = keys.clone();
        let task_shared = Arc::clone(&shared);
        std::thread::Builder::new()
            .name("zurg-etcd".into())
            .spawn(move || {
                runtime.block_on(background(
                    task_urls,
                    task_keys,
                    ttl,
                    task_shared,
                    rx,
                    ready_tx,
                ));
            })
            .map_err(|e| format!("etcd: cannot start a thread: {e}"))?;
        let shown = urls.join(",");
        loop {
            match ready_rx.recv_timeout(STOP_LOOK) {
                Ok(Ok(())) => break,
                Ok(Err(e)) => return Err(format!("etcd at {shown}: {e}")),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) if stop() => return Ok(None),
                Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {}
                Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => {
                    return Err(format!("etcd at {shown}: the client thread ended"))
                }
            }
        }
        let mut store = EtcdStore {
            ops,
            shared,
            keys,
            urls: urls.to_vec(),
            registry: Registry::new(),
            leaving: BTreeSet::new(),
            rev: 0,
            pending: Vec::new(),
        };
        // The first listing is already queued: make the view complete now,
        // and keep its changes for the first drain.
        let mut first = Vec::new();
        store.apply_all(&mut first);
        store.pending = first;
        Ok(Some(store))
    }

    fn send(&mut self, op: Op) {
        let conn = op.conn();
        if self.ops.send(op).is_err() {
            crate::log!("publisher: the etcd client thread is gone");
            if let Some(conn) = conn {
                self.pending.push(Done::Fail {
                    conn,
                    message: "etcd store stopped".into(),
                });
                if let Err(e) = self.shared.waker.wake() {
                    crate::log!("publisher: cannot wake the loop: {e}");
                }
            }
        }
    }

    fn apply_all(&mut self, out: &mut Vec<Done>) {
        for msg in self.shared.take() {
            self.apply(msg, out);
        }
        self.shared.applied.store(self.rev, Ordering::Release);
    }

    fn apply(&mut self, msg: Msg, out: &mut Vec<Done>) {
        match msg {
            Msg::Done(done) => out.push(done),
            Msg::Watch(events) => {
                let mut rest = events.as_slice();
                while let Some(first) = rest.first() {
                    let n = rest.iter().take_while(|c| c.rev == first.rev).count();
                    let (revision, after) = rest.split_at(n);
                    // A revision already applied from this publisher's own
                    // write: reported once.
                    if first.rev > self.rev {
                        let changes = self.revision(revision);
                        out.extend(changes.into_iter().map(Done::Change));
                        self.rev = first.rev;
                    }
                    rest = after;
                }
            }
            Msg::Committed { rev, changed } => {
                // Only the very next revision: then the mirror is etcd's
                // state at `rev` after applying it, exactly as when the
                // watch brings it, and every publisher still reports in
                // revision order. Behind a gap (another publisher's write
                // not yet seen, or a write outside the prefix) the watch
                // brings it, in order.
                if rev == self.rev.saturating_add(1) {
                    let changes = self.revision(&changed);
                    out.extend(changes.into_iter().map(Done::Change));
                    self.rev = rev;
                }
            }
            Msg::Resync { rev, kvs } => {
                let changes = self.resync(kvs);
                out.extend(changes.into_iter().map(Done::Change));
                self.rev = rev;
            }
        }
    }

    /// The events of one revision: host records first (they say why),
    /// then endpoints, then hosts that went away.
    fn revision(&mut self, events: &[Changed]) -> Vec<Change> {
        let mut why: HashMap<String, Why> = HashMap::new();
        for c in events {
            let (Some(Key::Host { zurg }), Some(value)) = (self.keys.parse(&c.key), &c.value)
            else {
                continue;
            };
            let Some(record) = parse::<HostRecord>(&c.key, value) else {
                continue;
            };
            if record.why.as_ref().map(|w| w.reason) == Some(Reason::Bye) {
                self.leaving.insert(zurg.into());
            } else {
                self.leaving.remove(zurg);
            }
            if let Some(w) = record.why {
                why.insert(zurg.into(), w);
            }
            self.registry.set_host(record.info, 0);
        }
        let mut changes = Vec::new();
        for c in events {
            let Some(Key::Endpoint { name, gpid }) = self.keys.parse(&c.key) else {
                continue;
            };
            match &c.value {
                Some(value) => {
                    let Some(endpoint) = parse::<Endpoint>(&c.key, value) else {
                        continue;
                    };
                    let reason = why.get(&endpoint.host).map_or(Reason::Start, |w| w.reason);
                    changes.extend(self.registry.upsert(endpoint, reason));
                }
                None => {
                    let host = self
                        .registry
                        .endpoints(name)
                        .into_iter()
                        .find(|e| e.gpid == gpid)
                        .map(|e| e.host)
                        .unwrap_or_default();
                    let (reason, exit) = match why.get(&host) {
                        Some(w) => (w.reason, w.exit.clone()),
                        None if self.leaving.contains(&host) => (Reason::Bye, None),
                        None => (Reason::Lease, None),
                    };
                    changes.extend(self.registry.remove(name, gpid, reason, exit));
                }
            }
        }
        for c in events {
            if let (Some(Key::Host { zurg }), None) = (self.keys.parse(&c.key), &c.value) {
                let reason = if self.leaving.remove(zurg) {
                    Reason::Bye
                } else {
                    Reason::Lease
                };
                changes.extend(self.registry.drop_host(zurg, reason));
            }
        }
        changes
    }

    /// Brings the mirror to a full listing of the prefix.
    fn resync(&mut self, kvs: Vec<(String, Vec<u8>)>) -> Vec<Change> {
        let mut endpoints = Vec::new();
        let mut hosts = Vec::new();
        for (key, value) in &kvs {
            match self.keys.parse(key) {
                Some(Key::Endpoint { .. }) => endpoints.extend(parse::<Endpoint>(key, value)),
                Some(Key::Host { .. }) => hosts.extend(parse::<HostRecord>(key, value)),
                None => {}
            }
        }
        let wanted: BTreeSet<(String, String)> = endpoints
            .iter()
            .map(|e| (e.service.clone(), e.gpid.clone()))
            .collect();
        let known: Vec<Endpoint> = self
            .registry
            .names()
            .flat_map(|name| self.registry.endpoints(name))
            .collect();
        // What went missing while the watch was down: gone for the reason
        // its host gave last, if it said bye, else its lease ran out.
        let why = |leaving: &BTreeSet<String>, host: &str| {
            if leaving.contains(host) {
                Reason::Bye
            } else {
                Reason::Lease
            }
        };
        let mut changes = Vec::new();
        for e in known {
            if !wanted.contains(&(e.service.clone(), e.gpid.clone())) {
                let reason = why(&self.leaving, &e.host);
                changes.extend(self.registry.remove(&e.service, &e.gpid, reason, None));
            }
        }
        let live: BTreeSet<&str> = hosts.iter().map(|h| h.info.zurg.as_str()).collect();
        for gone in self
            .registry
            .hosts()
            .into_iter()
            .filter(|h| !live.contains(h.zurg.as_str()))
        {
            let reason = why(&self.leaving, &gone.zurg);
            changes.extend(self.registry.drop_host(&gone.zurg, reason));
        }
        self.leaving = hosts
            .iter()
            .filter(|h| h.why.as_ref().map(|w| w.reason) == Some(Reason::Bye))
            .map(|h| h.info.zurg.clone())
            .collect();
        for record in hosts {
            self.registry.set_host(record.info, 0);
        }
        for endpoint in endpoints {
            changes.extend(self.registry.upsert(endpoint, Reason::Snapshot));
        }
        changes
    }
}

fn parse<T: serde::de::DeserializeOwned>(key: &str, value: &[u8]) -> Option<T> {
    match serde_json::from_slice(value) {
        Ok(v) => Some(v),
        Err(e) => {
            crate::log!("publisher: etcd key {key}: ignoring a bad value: {e}");
            None
        }
    }
}

impl Store for EtcdStore {
    fn hello(&mut self, conn: ConnId, info: HostInfo, _now_ms: u64) {
        self.send(Op::Hello { conn, info });
    }

    fn event(
        &mut self,
        conn: ConnId,
        zurg: &str,
        seq: u64,
        kind: EventKind,
        endpoint: Endpoint,
        exit: Option<ExitInfo>,
        _now_ms: u64,
    ) {
        self.send(Op::Event {
            conn,
            zurg: zurg.into(),
            events: vec![Event {
                seq,
                kind,
                endpoint,
                exit,
            }],
        });
    }

    fn snapshot(
        &mut self,
        conn: ConnId,
        zurg: &str,
        seq: u64,
        endpoints: Vec<Endpoint>,
        last: bool,
        _now_ms: u64,
    ) {
        self.send(Op::Snapshot {
            conn,
            zurg: zurg.into(),
            seq,
            endpoints,
            last,
        });
    }

    fn heartbeat(&mut self, conn: ConnId, zurg: &str, _now_ms: u64) {
        self.send(Op::Heartbeat {
            conn,
            zurg: zurg.into(),
        });
    }

    fn bye(&mut self, zurg: &str) {
        self.send(Op::Bye { zurg: zurg.into() });
    }

    fn disconnected(&mut self, zurg: &str) {
        self.send(Op::Disconnected { zurg: zurg.into() });
    }

    fn tick(&mut self, _now_ms: u64) {}

    fn next_deadline(&self) -> Option<u64> {
        None
    }

    fn drain(&mut self, out: &mut Vec<Done>) {
        out.append(&mut self.pending);
        self.apply_all(out);
    }

    fn view(&self) -> &Registry {
        &self.registry
    }

    fn describe(&self) -> String {
        format!("etcd {} under {}", self.urls.join(","), self.keys.prefix)
    }
}

// ---------------------------------------------------------------------
// The background thread.

type Keeper = (LeaseKeeper, LeaseKeepAliveStream);

/// What the task knows of a host it serves.
struct HostState {
    record: HostRecord,
    /// The host key's mod_revision when the task last read or wrote it.
    rev: i64,
    keeper: Option<Keeper>,
    kept_at: Instant,
}

struct Task {
    client: Client,
    keys: Keys,
    ttl: i64,
    shared: Arc<Shared>,
    hosts: HashMap<String, HostState>,
    chunks: HashMap<String, Vec<Endpoint>>,
    /// `Msg::Committed` for the writes of the op being run, handed to the
    /// loop with its answer in one wake-up.
    committed: Vec<Msg>,
}

/// One key a transaction writes.
enum Write {
    Put { key: String, value: Vec<u8> },
    Delete { key: String },
}

async fn bounded<T, E: std::fmt::Display>(
    what: &str,
    fut: impl Future<Output = Result<T, E>>,
) -> Result<T, String> {
    match tokio::time::timeout(TIMEOUT, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(format!("{what}: {e}")),
        Err(_) => Err(format!("{what}: no answer in {} s", TIMEOUT.as_secs())),
    }
}

fn json<T: Serialize>(value: &T) -> Vec<u8> {
    // Plain data into a Vec cannot fail.
    serde_json::to_vec(value).unwrap_or_default()
}

async fn background(
    urls: Vec<String>,
    keys: Keys,
    ttl: i64,
    shared: Arc<Shared>,
    mut rx: mpsc::UnboundedReceiver<Op>,
    ready: std::sync::mpsc::SyncSender<Result<(), String>>,
) {
    let options = ConnectOptions::new()
        .with_connect_timeout(CONNECT_TIMEOUT)
        .with_timeout(TIMEOUT)
        .with_keep_alive(Duration::from_secs(5), Duration::from_secs(3));
    let started = async {
        let mut client = bounded("connect", Client::connect(&urls, Some(options))).await?;
        let rev = resync(&mut client, &keys, &shared).await?;
        Ok::<_, String>((client, rev))
    }
    .await;
    let (client, rev) = match started {
        Ok(v) => v,
        Err(e) => {
            let _ = ready.send(Err(e));
            return;
        }
    };
    if ready.send(Ok(())).is_err() {
        return;
    }
    let watcher = tokio::spawn(watch(
        client.clone(),
        keys.clone(),
        Arc::clone(&shared),
        rev,
    ));
    let mut task = Task {
        client,
        keys,
        ttl,
        shared,
        hosts: HashMap::new(),
        chunks: HashMap::new(),
        committed: Vec::new(),
    };
    let mut next = None;
    loop {
        let op = match next.take() {
            Some(op) => op,
            None => match rx.recv().await {
                Some(op) => op,
                None => break,
            },
        };
        // Events that queued up behind the last transaction (a burst of
        // starts or deaths) go to etcd in one, not one round trip each.
        // Nothing waits for them: only what is already queued joins.
        let op = match op {
            Op::Event {
                conn,
                zurg,
                mut events,
            } => {
                loop {
                    match rx.try_recv() {
                        Ok(Op::Event {
                            conn: c,
                            zurg: z,
                            events: more,
                        }) if c == conn && z == zurg && joins(&events, &more) => {
                            events.extend(more);
                        }
                        Ok(other) => {
                            next = Some(other);
                            break;
                        }
                        Err(_) => break,
                    }
                }
                Op::Event { conn, zurg, events }
            }
            other => other,
        };
        task.run(op).await;
    }
    watcher.abort();
}

/// Reads everything under the prefix into the queue; returns its revision.
async fn resync(client: &mut Client, keys: &Keys, shared: &Shared) -> Result<i64, String> {
    let mut resp = bounded(
        "read the prefix",
        client.get(keys.all(), Some(GetOptions::new().with_prefix())),
    )
    .await?;
    let rev = resp.header().map_or(0, |h| h.revision());
    let kvs = resp
        .take_kvs()
        .into_iter()
        .map(|kv| {
            let (k, v) = kv.into_key_value();
            (String::from_utf8_lossy(&k).into_owned(), v)
        })
        .collect();
    shared.push([Msg::Resync { rev, kvs }]);
    Ok(rev)
}

/// Follows the prefix from `rev` on, forever: resumes a broken watch from
/// the next revision, and reads the prefix again if that was compacted.
async fn watch(mut client: Client, keys: Keys, shared: Arc<Shared>, rev: i64) {
    let mut next = Some(rev.saturating_add(1));
    let mut backoff = WATCH_BACKOFF_MIN;
    loop {
        let from = match next {
            Some(from) => from,
            None => match resync(&mut client, &keys, &shared).await {
                Ok(rev) => rev.saturating_add(1),
                Err(e) => {
                    crate::log!("publisher: etcd: {e}; retrying");
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(WATCH_BACKOFF_MAX);
                    continue;
                }
            },
        };
        next = Some(from);
        match follow(&mut client, &keys, &shared, from, &mut next, &mut backoff).await {
            Ok(()) => {
                crate::log!("publisher: etcd: watch revision compacted; reading the prefix again");
                next = None;
            }
            Err(e) => {
                crate::log!("publisher: etcd watch: {e}; retrying");
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(WATCH_BACKOFF_MAX);
            }
        }
    }
}

/// One watch stream. `Ok` when etcd cancelled it for compaction; `next`
/// tracks the first revision not yet seen.
async fn follow(
    client: &mut Client,
    keys: &Keys,
    shared: &Shared,
    from: i64,
    next: &mut Option<i64>,
    backoff: &mut Duration,
) -> Result<(), String> {
    let options = WatchOptions::new().with_prefix().with_start_revision(from);
    let mut stream = bounded("watch", client.watch(keys.all(), Some(options))).await?;
    loop {
        let resp = stream
            .message()
            .await
            .map_err(|e| e.to_string())?
            .ok_or_else(|| "the watch stream ended".to_string())?;
        if resp.canceled() {
            if resp.compact_revision() > 0 {
                return Ok(());
            }
            return Err(format!("watch cancelled: {}", resp.cancel_reason()));
        }
        *backoff = WATCH_BACKOFF_MIN;
        let mut changed = Vec::with_capacity(resp.events().len());
        for event in resp.events() {
            let Some(kv) = event.kv() else { continue };
            *next = Some(kv.mod_revision().saturating_add(1));
            changed.push(Changed {
                rev: kv.mod_revision(),
                key: String::from_utf8_lossy(kv.key()).into_owned(),
                value: match event.event_type() {
                    EventType::Put => Some(kv.value().to_vec()),
                    EventType::Delete => None,
                },
            });
        }
        let seen = shared.applied.load(Ordering::Acquire);
        if changed.last().is_some_and(|c| c.rev > seen) {
            shared.push([Msg::Watch(changed)]);
        }
    }
}

/// Keeps `lease` alive once. `Ok(false)` when etcd no longer has it.
async fn keep_alive(
    client: &mut Client,
    slot: &mut Option<Keeper>,
    lease: i64,
) -> Result<bool, String> {
    if slot.as_ref().map(|(k, _)| k.id()) != Some(lease) {
        *slot = None;
    }
    if let Some((keeper, stream)) = slot.as_mut() {
        let answer = bounded("lease keep-alive", async {
            keeper.keep_alive().await?;
            stream.message().await
        })
        .await;
        return match answer {
            Ok(Some(resp)) => {
                if resp.ttl() <= 0 {
                    *slot = None;
                }
                Ok(resp.ttl() > 0)
            }
            Ok(None) => {
                *slot = None;
                Err("lease keep-alive: the stream ended".into())
            }
            Err(e) => {
                *slot = None;
                Err(e)
            }
        };
    }
    // Opening the stream sends the first keep-alive.
    match tokio::time::timeout(TIMEOUT, client.lease_keep_alive(lease)).await {
        Ok(Ok(keeper)) => {
            *slot = Some(keeper);
            Ok(true)
        }
        Ok(Err(etcd_client::Error::LeaseKeepAliveError(e))) if e.contains("not found") => Ok(false),
        Ok(Err(e)) => Err(format!("lease keep-alive: {e}")),
        Err(_) => Err(format!(
            "lease keep-alive: no answer in {} s",
            TIMEOUT.as_secs()
        )),
    }
}

impl Task {
    async fn run(&mut self, op: Op) {
        let conn = op.conn();
        let is_heartbeat = matches!(op, Op::Heartbeat { .. });
        let zurg = match &op {
            Op::Hello { info, .. } => info.zurg.clone(),
            Op::Event { zurg, .. }
            | Op::Snapshot { zurg, .. }
            | Op::Heartbeat { zurg, .. }
            | Op::Bye { zurg }
            | Op::Disconnected { zurg } => zurg.clone(),
        };
        let result = match op {
            Op::Hello { conn, info } => self.hello(conn, info).await,
            Op::Event { conn, zurg, events } => self.event(conn, &zurg, events).await,
            Op::Snapshot {
                conn,
                zurg,
                seq,
                endpoints,
                last,
            } => self.snapshot(conn, &zurg, seq, endpoints, last).await,
            Op::Heartbeat { conn, zurg } => self.heartbeat(conn, &zurg).await,
            Op::Bye { zurg } => self.bye(&zurg).await,
            Op::Disconnected { zurg } => {
                self.chunks.remove(&zurg);
                Ok(None)
            }
        };
        let wrote = result
            .as_ref()
            .is_ok_and(|d| matches!(d, Some(Done::Ack { .. })));
        let mut msgs = std::mem::take(&mut self.committed);
        match result {
            Ok(done) => msgs.extend(done.map(Msg::Done)),
            Err(e) => msgs.extend(self.failed(&zurg, conn, &e)),
        }
        self.shared.push(msgs);
        // After the answer, not before it: the keep-alive is for the lease,
        // not for this event, and a change waits for nothing but etcd.
        if wrote && !is_heartbeat {
            if let Err(e) = self.refresh(&zurg).await {
                let failed = self.failed(&zurg, conn, &e);
                self.shared.push(failed);
            }
        }
    }

    /// Forgets what was cached about a host after an error, and fails its
    /// connection.
    fn failed(&mut self, zurg: &str, conn: Option<ConnId>, e: &str) -> Option<Msg> {
        crate::log!("publisher: etcd, host {zurg}: {e}");
        self.hosts.remove(zurg);
        self.chunks.remove(zurg);
        conn.map(|conn| {
            Msg::Done(Done::Fail {
                conn,
                message: format!("etcd: {e}"),
            })
        })
    }

    /// The host record and its mod_revision, from etcd.
    async fn read_host(&mut self, zurg: &str) -> Result<Option<(HostRecord, i64)>, String> {
        let key = self.keys.host(zurg);
        let resp = bounded("read the host", self.client.get(key.as_str(), None)).await?;
        let Some(kv) = resp.kvs().first() else {
            return Ok(None);
        };
        let record = serde_json::from_slice::<HostRecord>(kv.value())
            .map_err(|e| format!("bad host record at {key}: {e}"))?;
        Ok(Some((record, kv.mod_revision())))
    }

    /// The cached state of a host, read from etcd when not cached.
    async fn state(&mut self, zurg: &str) -> Result<&mut HostState, String> {
        if !self.hosts.contains_key(zurg) {
            let Some((record, rev)) = self.read_host(zurg).await? else {
                return Err("host unknown to etcd (lease ran out?)".into());
            };
            self.hosts.insert(
                zurg.into(),
                HostState {
                    record,
                    rev,
                    keeper: None,
                    kept_at: Instant::now(),
                },
            );
        }
        self.hosts
            .get_mut(zurg)
            .ok_or_else(|| "host state vanished".to_string())
    }

    async fn hello(&mut self, conn: ConnId, info: HostInfo) -> Result<Option<Done>, String> {
        let zurg = info.zurg.clone();
        self.chunks.remove(&zurg);
        self.hosts.remove(&zurg);
        let stored = self.read_host(&zurg).await?;
        let mut keeper = None;
        let (old, lease) = match stored {
            Some((record, _))
                if keep_alive(&mut self.client, &mut keeper, record.lease).await? =>
            {
                let lease = record.lease;
                (record.info, lease)
            }
            stored => {
                let grant =
                    bounded("grant a lease", self.client.lease_grant(self.ttl, None)).await?;
                (stored.map(|(r, _)| r.info).unwrap_or_default(), grant.id())
            }
        };
        let record = HostRecord {
            info: HostInfo {
                seq: old.seq,
                applied: old.applied,
                duplicates: old.duplicates,
                gaps: old.gaps,
                connected: true,
                endpoints: 0,
                ..info
            },
            lease,
            why: None,
        };
        let key = self.keys.host(&zurg);
        let value = json(&record);
        let resp = bounded(
            "put the host",
            self.client.put(
                key.as_str(),
                value.as_slice(),
                Some(PutOptions::new().with_lease(lease)),
            ),
        )
        .await?;
        let rev = resp.header().map_or(0, |h| h.revision());
        self.committed.push(Msg::Committed {
            rev,
            changed: vec![Changed {
                rev,
                key,
                value: Some(value),
            }],
        });
        let last_seq = record.info.seq;
        self.hosts.insert(
            zurg,
            HostState {
                record,
                rev,
                keeper,
                kept_at: Instant::now(),
            },
        );
        Ok(Some(Done::Welcome { conn, last_seq }))
    }

    /// Runs `writes` and the put of the host's `record` (saying `why`) in
    /// one transaction guarded by the cached mod_revision. `false` when
    /// another publisher wrote the host meanwhile (the cache is dropped).
    /// What it changed goes to `committed`, for the loop to report without
    /// waiting for the watch.
    async fn commit(
        &mut self,
        zurg: &str,
        record: HostRecord,
        why: Option<Why>,
        mut writes: Vec<Write>,
    ) -> Result<bool, String> {
        let host_key = self.keys.host(zurg);
        let rev = self.state(zurg).await?.rev;
        let written = HostRecord {
            why,
            ..record.clone()
        };
        writes.push(Write::Put {
            key: host_key.clone(),
            value: json(&written),
        });
        let lease = Some(PutOptions::new().with_lease(record.lease));
        let ops: Vec<TxnOp> = writes
            .iter()
            .map(|w| match w {
                Write::Put { key, value } => {
                    TxnOp::put(key.as_str(), value.as_slice(), lease.clone())
                }
                Write::Delete { key } => TxnOp::delete(key.as_str(), None),
            })
            .collect();
        let txn = Txn::new()
            .when([Compare::mod_revision(
                host_key.as_str(),
                CompareOp::Equal,
                rev,
            )])
            .and_then(ops);
        let resp = bounded("transaction", self.client.txn(txn)).await?;
        if !resp.succeeded() {
            self.hosts.remove(zurg);
            return Ok(false);
        }
        let new_rev = resp.header().map_or(0, |h| h.revision());
        // The watch reports a delete only when there was a key to delete.
        let changed = writes
            .into_iter()
            .zip(resp.op_responses())
            .filter_map(|(w, answer)| match (w, answer) {
                (Write::Put { key, value }, _) => Some(Changed {
                    rev: new_rev,
                    key,
                    value: Some(value),
                }),
                (Write::Delete { key }, TxnOpResponse::Delete(d)) if d.deleted() > 0 => {
                    Some(Changed {
                        rev: new_rev,
                        key,
                        value: None,
                    })
                }
                (Write::Delete { .. }, _) => None,
            })
            .collect();
        self.committed.push(Msg::Committed {
            rev: new_rev,
            changed,
        });
        let state = self.state(zurg).await?;
        state.record = record;
        state.rev = new_rev;
        Ok(true)
    }

    /// A keep-alive when the last is older than half the TTL: puts do not
    /// refresh a lease. A forwarder's heartbeats (every third of the lease,
    /// however busy it is) keep it alive; this is for heartbeats that come
    /// late. At a third it raced the heartbeats, and a keep-alive every
    /// few seconds held up the next event's transaction behind it.
    async fn refresh(&mut self, zurg: &str) -> Result<(), String> {
        let ttl = self.ttl;
        let Some(state) = self.hosts.get_mut(zurg) else {
            return Ok(());
        };
        let due = Duration::from_millis(u64::try_from(ttl).unwrap_or(1).saturating_mul(1000) / 2);
        if state.kept_at.elapsed() < due {
            return Ok(());
        }
        if !keep_alive(&mut self.client, &mut state.keeper, state.record.lease).await? {
            return Err("the host's lease ran out".into());
        }
        state.kept_at = Instant::now();
        Ok(())
    }

    /// Applies a host's events in order, in one transaction: its `why` is
    /// every event's (`joins`), and the ack is for the last.
    async fn event(
        &mut self,
        conn: ConnId,
        zurg: &str,
        mut events: Vec<Event>,
    ) -> Result<Option<Done>, String> {
        for e in &mut events {
            e.endpoint.host = zurg.into();
        }
        for _ in 0..ATTEMPTS {
            let mut record = self.state(zurg).await?.record.clone();
            let mut ops = Vec::new();
            let mut why = None;
            for e in &events {
                if !count_seq(&mut record.info, e.seq) {
                    continue;
                }
                let key = self.keys.endpoint(&e.endpoint.service, &e.endpoint.gpid);
                let (op, reason) = match e.kind {
                    EventKind::Start => (
                        Write::Put {
                            key,
                            value: json(&e.endpoint),
                        },
                        Reason::Start,
                    ),
                    EventKind::Exit => (Write::Delete { key }, Reason::Exit),
                };
                ops.push(op);
                why = Some(Why {
                    reason,
                    exit: e.exit.clone().filter(|_| reason == Reason::Exit),
                });
            }
            let stored = record.info.seq;
            if self.commit(zurg, record, why, ops).await? {
                return Ok(Some(Done::Ack { conn, seq: stored }));
            }
        }
        Err("the host record keeps changing under another publisher".into())
    }

    async fn snapshot(
        &mut self,
        conn: ConnId,
        zurg: &str,
        seq: u64,
        endpoints: Vec<Endpoint>,
        last: bool,
    ) -> Result<Option<Done>, String> {
        self.chunks
            .entry(zurg.into())
            .or_default()
            .extend(endpoints);
        if !last {
            return Ok(None);
        }
        let listed = self.chunks.remove(zurg).unwrap_or_default();
        let wanted: BTreeMap<String, Endpoint> = listed
            .into_iter()
            .map(|mut e| {
                e.host = zurg.into();
                (self.keys.endpoint(&e.service, &e.gpid), e)
            })
            .collect();
        for _ in 0..ATTEMPTS {
            let lease = self.state(zurg).await?.record.lease;
            // The host's endpoint keys are the keys on its lease.
            let alive = bounded(
                "list the host's keys",
                self.client
                    .lease_time_to_live(lease, Some(LeaseTimeToLiveOptions::new().with_keys())),
            )
            .await?;
            if alive.ttl() <= 0 {
                return Err("the host's lease ran out".into());
            }
            let services = self.keys.services();
            let existing: BTreeSet<String> = alive
                .keys()
                .iter()
                .map(|k| String::from_utf8_lossy(k).into_owned())
                .filter(|k| k.starts_with(&services))
                .collect();
            let mut ops: Vec<Write> = existing
                .iter()
                .filter(|k| !wanted.contains_key(*k))
                .map(|k| Write::Delete { key: k.clone() })
                .collect();
            ops.extend(
                wanted
                    .iter()
                    .filter(|(k, _)| !existing.contains(*k))
                    .map(|(k, e)| Write::Put {
                        key: k.clone(),
                        value: json(e),
                    }),
            );
            if self.apply_snapshot(zurg, seq, ops).await? {
                let seq = self.state(zurg).await?.record.info.seq;
                return Ok(Some(Done::Ack { conn, seq }));
            }
        }
        Err("the host record keeps changing under another publisher".into())
    }

    /// The snapshot's key changes in transactions etcd accepts (at most
    /// `TXN_OPS` operations each), each with the host record saying
    /// `snapshot`; the last also advances the host's seq as
    /// `Registry::snapshot` does. `false` when another publisher wrote the
    /// host meanwhile.
    async fn apply_snapshot(
        &mut self,
        zurg: &str,
        seq: u64,
        mut ops: Vec<Write>,
    ) -> Result<bool, String> {
        let why = Some(Why {
            reason: Reason::Snapshot,
            exit: None,
        });
        while ops.len() >= TXN_OPS {
            let rest = ops.split_off(TXN_OPS.saturating_sub(1));
            let batch = std::mem::replace(&mut ops, rest);
            let record = self.state(zurg).await?.record.clone();
            if !self.commit(zurg, record, why.clone(), batch).await? {
                return Ok(false);
            }
        }
        let mut record = self.state(zurg).await?.record.clone();
        let info = &mut record.info;
        if seq > info.seq {
            // Sequence numbers the snapshot stands in for were never applied.
            if info.applied > 0 {
                info.gaps = info.gaps.saturating_add(seq.saturating_sub(info.seq));
            }
            info.seq = seq;
        }
        self.commit(zurg, record, why, ops).await
    }

    async fn heartbeat(&mut self, conn: ConnId, zurg: &str) -> Result<Option<Done>, String> {
        let state = self.state(zurg).await?;
        let lease = state.record.lease;
        let mut keeper = state.keeper.take();
        let alive = keep_alive(&mut self.client, &mut keeper, lease).await?;
        if !alive {
            return Err("the host's lease ran out".into());
        }
        let state = self.state(zurg).await?;
        state.keeper = keeper;
        state.kept_at = Instant::now();
        Ok(Some(Done::Ack {
            conn,
            seq: state.record.info.seq,
        }))
    }

    /// Says `bye` in the host record, so every publisher reports the
    /// endpoints gone for that reason, then revokes the lease.
    async fn bye(&mut self, zurg: &str) -> Result<Option<Done>, String> {
        let state = self.state(zurg).await?;
        let record = HostRecord {
            why: Some(Why {
                reason: Reason::Bye,
                exit: None,
            }),
            ..state.record.clone()
        };
        self.hosts.remove(zurg);
        self.chunks.remove(zurg);
        bounded(
            "put the host",
            self.client.put(
                self.keys.host(zurg),
                json(&record),
                Some(PutOptions::new().with_lease(record.lease)),
            ),
        )
        .await?;
        bounded("revoke the lease", self.client.lease_revoke(record.lease)).await?;
        Ok(None)
    }
}

#[cfg(test)]
mod tests {
    use super::super::proto::ChangeKind;
    use super::*;

    #[test]
    fn keys_round_trip() {
        let k = Keys::new("/zurg/");
        assert_eq!(
            k.endpoint("web", "1.2.3.4:0:5:6"),
            "/zurg/services/web/1.2.3.4:0:5:6"
        );
        assert_eq!(
            k.parse("/zurg/services/a/b/g1"),
            Some(Key::Endpoint {
                name: "a/b",
                gpid: "g1"
            })
        );
        assert_eq!(k.parse(&k.host("h1")), Some(Key::Host { zurg: "h1" }));
        assert_eq!(k.parse("/zurgx/hosts/h1"), None);
        assert_eq!(k.parse("/zurg/services/web"), None);
        assert_eq!(k.parse("/zurg/hosts/"), None);
        assert_eq!(Keys::new("").prefix, DEFAULT_PREFIX);
    }

    const H: &str = "10.0.0.1:0:100:1";

    /// A store with no etcd behind it: only the loop's side, fed by hand.
    fn offline() -> (EtcdStore, mio::Poll) {
        let poll = mio::Poll::new().unwrap();
        let waker = Arc::new(mio::Waker::new(poll.registry(), mio::Token(0)).unwrap());
        let (ops, _) = mpsc::unbounded_channel();
        let store = EtcdStore {
            ops,
            shared: Arc::new(Shared {
                queue: Mutex::new(Vec::new()),
                waker,
                applied: AtomicI64::new(0),
            }),
            keys: Keys::new("/z"),
            urls: Vec::new(),
            registry: Registry::new(),
            leaving: BTreeSet::new(),
            rev: 0,
            pending: Vec::new(),
        };
        (store, poll)
    }

    /// One revision of a host's transaction: `gpid` put (`up`) or deleted,
    /// and the host record saying why.
    fn txn(keys: &Keys, rev: i64, gpid: &str, up: bool) -> Vec<Changed> {
        let endpoint = Endpoint {
            service: "web".into(),
            ip: "10.0.0.1".into(),
            port: 80,
            gpid: gpid.into(),
            version: None,
            since_us: 1,
            host: H.into(),
        };
        let record = HostRecord {
            info: HostInfo {
                zurg: H.into(),
                ..HostInfo::default()
            },
            lease: 1,
            why: Some(Why {
                reason: if up { Reason::Start } else { Reason::Exit },
                exit: None,
            }),
        };
        vec![
            Changed {
                rev,
                key: keys.endpoint("web", gpid),
                value: up.then(|| json(&endpoint)),
            },
            Changed {
                rev,
                key: keys.host(H),
                value: Some(json(&record)),
            },
        ]
    }

    fn changes(store: &mut EtcdStore, msg: Msg) -> Vec<(ChangeKind, String)> {
        let mut out = Vec::new();
        store.apply(msg, &mut out);
        out.into_iter()
            .filter_map(|d| match d {
                Done::Change(c) => Some((c.change, c.endpoint.gpid)),
                _ => None,
            })
            .collect()
    }

    #[test]
    fn own_writes_are_applied_only_as_the_next_revision_and_once() {
        use ChangeKind::{Down, Up};
        let (mut s, _poll) = offline();
        let keys = s.keys.clone();
        let resync = Msg::Resync {
            rev: 5,
            kvs: Vec::new(),
        };
        assert_eq!(changes(&mut s, resync), []);
        // Revision 6 (another publisher's) is not seen yet: this
        // publisher's revision 7 waits for the watch, to keep the order.
        let committed = Msg::Committed {
            rev: 7,
            changed: txn(&keys, 7, "g2", true),
        };
        assert_eq!(changes(&mut s, committed), []);
        let mut watch = txn(&keys, 6, "g1", true);
        watch.extend(txn(&keys, 7, "g2", true));
        assert_eq!(
            changes(&mut s, Msg::Watch(watch)),
            [(Up, "g1".into()), (Up, "g2".into())]
        );
        // The next revision is reported from the answer, and its copy from
        // the watch, or a second answer, is not reported again.
        let committed = || Msg::Committed {
            rev: 8,
            changed: txn(&keys, 8, "g1", false),
        };
        assert_eq!(changes(&mut s, committed()), [(Down, "g1".into())]);
        assert_eq!(changes(&mut s, Msg::Watch(txn(&keys, 8, "g1", false))), []);
        assert_eq!(changes(&mut s, committed()), []);
        let mut left: Vec<String> = s
            .registry
            .endpoints("web")
            .into_iter()
            .map(|e| e.gpid)
            .collect();
        left.sort();
        assert_eq!(left, ["g2"]);
        // A full listing resets the revision: an older answer is dropped.
        let resync = Msg::Resync {
            rev: 20,
            kvs: Vec::new(),
        };
        assert_eq!(changes(&mut s, resync), [(Down, "g2".into())]);
        let late = Msg::Committed {
            rev: 9,
            changed: txn(&keys, 9, "g3", true),
        };
        assert_eq!(changes(&mut s, late), []);
    }
}
