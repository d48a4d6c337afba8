//! Where the publisher keeps the registry: the `Store` interface the
//! publisher's loop talks to, and the in-memory store.
//!
//! A store takes forwarder requests and answers later through `drain`
//! (welcome, acks, and the view's changes), so a store that waits on the
//! network (etcd) and one that answers at once share one loop. `view` is
//! what resolve clients read: the registry itself in memory, a mirror of
//! etcd otherwise.

use super::proto::{Endpoint, EventKind, ExitInfo, HostInfo, Reason};
use super::registry::{Change, Registry};

/// Connection id of a forwarder, for the replies meant for it. The server
/// never reuses one, so an answer that comes late finds its connection gone
/// rather than reaching another peer.
pub type ConnId = usize;

#[derive(Debug)]
pub enum Done {
    Welcome {
        conn: ConnId,
        last_seq: u64,
    },
    Ack {
        conn: ConnId,
        seq: u64,
    },
    Change(Change),
    /// The store cannot serve this forwarder; its connection is closed.
    Fail {
        conn: ConnId,
        message: String,
    },
}

pub trait Store {
    fn hello(&mut self, conn: ConnId, info: HostInfo, now_ms: u64);
    #[allow(clippy::too_many_arguments)]
    fn event(
        &mut self,
        conn: ConnId,
        zurg: &str,
        seq: u64,
        kind: EventKind,
        endpoint: Endpoint,
        exit: Option<ExitInfo>,
        now_ms: u64,
    );
    fn snapshot(
        &mut self,
        conn: ConnId,
        zurg: &str,
        seq: u64,
        endpoints: Vec<Endpoint>,
        last: bool,
        now_ms: u64,
    );
    fn heartbeat(&mut self, conn: ConnId, zurg: &str, now_ms: u64);
    /// The host's zurg shut down cleanly.
    fn bye(&mut self, zurg: &str);
    fn disconnected(&mut self, zurg: &str);
    /// Time passed: expire silent hosts.
    fn tick(&mut self, now_ms: u64);
    /// When `tick` next has work, if ever.
    fn next_deadline(&self) -> Option<u64>;
    /// Replies and changes ready since the last call.
    fn drain(&mut self, out: &mut Vec<Done>);
    fn view(&self) -> &Registry;
    /// For the log: "memory" or the etcd endpoints.
    fn describe(&self) -> String;
}

/// The registry in the publisher's memory: answers at once, gone with the
/// process (forwarders resend their snapshot to a new one).
#[derive(Debug)]
pub struct MemoryStore {
    registry: Registry,
    lease_ms: u64,
    done: Vec<Done>,
}

impl MemoryStore {
    pub fn new(lease_ms: u64) -> MemoryStore {
        MemoryStore {
            registry: Registry::new(),
            lease_ms,
            done: Vec::new(),
        }
    }

    fn changes(&mut self, changes: Vec<Change>) {
        self.done.extend(changes.into_iter().map(Done::Change));
    }

    fn ack(&mut self, conn: ConnId, zurg: &str) {
        let seq = self.registry.host(zurg).map_or(0, |h| h.seq);
        self.done.push(Done::Ack { conn, seq });
    }
}

impl Store for MemoryStore {
    fn hello(&mut self, conn: ConnId, info: HostInfo, now_ms: u64) {
        let last_seq = self.registry.hello(info, now_ms);
        self.done.push(Done::Welcome { conn, last_seq });
    }

    fn event(
        &mut self,
        conn: ConnId,
        zurg: &str,
        seq: u64,
        kind: EventKind,
        endpoint: Endpoint,
        exit: Option<ExitInfo>,
        now_ms: u64,
    ) {
        let applied = self.registry.event(zurg, seq, kind, endpoint, exit, now_ms);
        self.changes(applied.changes);
        self.ack(conn, zurg);
    }

    fn snapshot(
        &mut self,
        conn: ConnId,
        zurg: &str,
        seq: u64,
        endpoints: Vec<Endpoint>,
        last: bool,
        now_ms: u64,
    ) {
        let changes = self.registry.snapshot(zurg, seq, endpoints, last, now_ms);
        self.changes(changes);
        if last {
            self.ack(conn, zurg);
        }
    }

    fn heartbeat(&mut self, conn: ConnId, zurg: &str, now_ms: u64) {
        self.registry.heartbeat(zurg, now_ms);
        self.ack(conn, zurg);
    }

    fn bye(&mut self, zurg: &str) {
        let changes = self.registry.drop_host(zurg, Reason::Bye);
        self.changes(changes);
    }

    fn disconnected(&mut self, zurg: &str) {
        self.registry.disconnected(zurg);
    }

    fn tick(&mut self, now_ms: u64) {
        let (hosts, changes) = self.registry.expire(now_ms, self.lease_ms);
        for h in hosts {
            crate::log!(
                "host {h} silent for {} ms: its lease expired, its endpoints are gone",
                self.lease_ms
            );
        }
        self.changes(changes);
    }

    fn next_deadline(&self) -> Option<u64> {
        self.registry.next_expiry(self.lease_ms)
    }

    fn drain(&mut self, out: &mut Vec<Done>) {
        out.append(&mut self.done);
    }

    fn view(&self) -> &Registry {
        &self.registry
    }

    fn describe(&self) -> String {
        "memory".into()
    }
}
