//! The publish registry under a session of several peers at once.
//!
//! An input is text, one step per line:
//!
//! - `N {json}`: connection N (0 to 3) sends this frame body; the harness
//!   frames it (length header) and feeds it to that connection's decoder,
//!   as the publisher's socket would;
//! - `t MS`: MS milliseconds pass and silent hosts' leases expire;
//! - `c N`: connection N drops.
//!
//! The connections run the publisher's own session rules
//! (`publish/session.rs`, as `publish/server.rs` does, without a token or
//! an operator token: the publisher's decoder with its field bounds, a
//! hello first, the forwarder's checks and instance secrets, the seq
//! window, bye) and apply to a `Registry` as the memory store does. After
//! every step the registry must agree with itself and with the changes it
//! handed out: a watcher that applied every change holds exactly the
//! registry's endpoints.

use std::collections::{BTreeMap, BTreeSet};

use crate::publish::proto::{ChangeKind, Decoder, Frame, Reason, Role};
use crate::publish::registry::{Change, EpKey, Registry};
use crate::publish::session::{self, FromHost, Hosts};

use super::check;

const CONNECTIONS: usize = 4;
const LEASE_MS: u64 = 10_000;

#[derive(Debug, Clone, PartialEq, Eq)]
enum Peer {
    New,
    Forwarder(String),
    Client,
    Closed,
}

struct Conn {
    decoder: Decoder,
    peer: Peer,
}

struct Session {
    registry: Registry,
    conns: Vec<Conn>,
    hosts: Hosts,
    now_ms: u64,
    /// What a watcher that applied every change holds.
    watched: BTreeSet<EpKey>,
    /// Each host's highest applied seq, while it stays known.
    seqs: BTreeMap<String, u64>,
}

pub(super) fn session(data: &[u8]) -> Result<(), String> {
    let mut s = Session {
        registry: Registry::new(),
        conns: (0..CONNECTIONS)
            .map(|_| Conn {
                decoder: Decoder::publisher(),
                peer: Peer::New,
            })
            .collect(),
        hosts: Hosts::default(),
        now_ms: 1_000_000,
        watched: BTreeSet::new(),
        seqs: BTreeMap::new(),
    };
    for line in data.split(|&b| b == b'\n').take(256) {
        let Some((&op, rest)) = line.split_first() else {
            continue;
        };
        let arg = rest.strip_prefix(b" ").unwrap_or(rest);
        let number = || {
            std::str::from_utf8(arg)
                .ok()
                .and_then(|t| t.trim().parse::<u64>().ok())
        };
        match op {
            b'0'..=b'3' => s.bytes(usize::from(op - b'0'), arg)?,
            b't' => {
                s.now_ms = s.now_ms.saturating_add(number().unwrap_or(0));
                let (_, changes) = s.registry.expire(s.now_ms, LEASE_MS);
                s.watch(changes)?;
            }
            b'c' => {
                if let Some(n) = number().and_then(|n| usize::try_from(n).ok()) {
                    s.close(n);
                }
            }
            _ => continue,
        }
        s.consistent()?;
    }
    Ok(())
}

impl Session {
    fn bytes(&mut self, id: usize, body: &[u8]) -> Result<(), String> {
        let Some(conn) = self.conns.get_mut(id) else {
            return Ok(());
        };
        if conn.peer == Peer::Closed {
            return Ok(());
        }
        let len = u32::try_from(body.len()).unwrap_or(u32::MAX);
        conn.decoder.feed(&len.to_be_bytes());
        conn.decoder.feed(body);
        loop {
            let Some(conn) = self.conns.get_mut(id) else {
                return Ok(());
            };
            if conn.peer == Peer::Closed {
                return Ok(());
            }
            match conn.decoder.next_frame() {
                Ok(Some(frame)) => self.frame(id, frame)?,
                Ok(None) => return Ok(()),
                Err(_) => {
                    self.close(id);
                    return Ok(());
                }
            }
        }
    }

    fn peer(&self, id: usize) -> Peer {
        self.conns.get(id).map_or(Peer::Closed, |c| c.peer.clone())
    }

    fn set_peer(&mut self, id: usize, peer: Peer) {
        if let Some(c) = self.conns.get_mut(id) {
            c.peer = peer;
        }
    }

    /// The server's `close`: a forwarder's host is disconnected when this
    /// was its live connection.
    fn close(&mut self, id: usize) {
        if let Peer::Forwarder(zurg) = self.peer(id) {
            if self.hosts.release(id, &zurg) {
                self.registry.disconnected(&zurg);
            }
        }
        // The connection's slot is reused by the next one.
        if let Some(c) = self.conns.get_mut(id) {
            c.decoder = Decoder::publisher();
            c.peer = Peer::New;
        }
    }

    fn frame(&mut self, id: usize, frame: Frame) -> Result<(), String> {
        let now = self.now_ms;
        match (self.peer(id), frame) {
            (Peer::New, hello @ Frame::Hello { .. }) => {
                let Frame::Hello { proto, role, .. } = &hello else {
                    return Ok(());
                };
                match (session::check_protocol(*proto), role) {
                    (Err(_), _) | (_, Role::Operator) => {
                        // No operator token: remote control is off.
                        self.close(id);
                        return Ok(());
                    }
                    (Ok(()), Role::Client) => {
                        self.set_peer(id, Peer::Client);
                        return Ok(());
                    }
                    (Ok(()), Role::Forwarder) => {}
                }
                let admitted = session::forwarder_hello(hello).and_then(|hello| {
                    let replaced =
                        self.hosts
                            .admit(id, &hello.info.zurg, &hello.instance, &self.registry)?;
                    Ok((hello, replaced))
                });
                let Ok((hello, replaced)) = admitted else {
                    self.close(id);
                    return Ok(());
                };
                if let Some(old) = replaced {
                    self.set_peer(old, Peer::New);
                    self.close(old);
                }
                self.set_peer(id, Peer::Forwarder(hello.info.zurg.clone()));
                self.registry.hello(hello.info, now);
                Ok(())
            }
            (Peer::Forwarder(zurg), frame) => self.forwarder(id, &zurg, frame),
            (Peer::Client, Frame::Resolve { name, .. }) => {
                // The listing a client gets, page by page, has each of the
                // name's endpoints once.
                let mut listed = Vec::new();
                let mut after: Option<EpKey> = None;
                loop {
                    let page = self.registry.page(name.as_deref(), after.as_ref(), 3);
                    let Some(last) = page.last() else { break };
                    after = Some((last.service.clone(), last.gpid.clone()));
                    listed.extend(page);
                    if listed.len() > 100_000 {
                        return Err("a listing that does not end".into());
                    }
                }
                let want: Vec<_> = match &name {
                    Some(n) => self.registry.endpoints(n),
                    None => self.all(),
                };
                check(listed == want, || {
                    format!("resolve {name:?} listed {listed:?}, the registry holds {want:?}")
                })
            }
            (_, _) => {
                self.close(id);
                Ok(())
            }
        }
    }

    fn forwarder(&mut self, id: usize, zurg: &str, frame: Frame) -> Result<(), String> {
        let now = self.now_ms;
        let Ok(frame) = session::from_host(&self.registry, zurg, frame) else {
            self.close(id);
            return Ok(());
        };
        match frame {
            FromHost::Event {
                seq,
                kind,
                endpoint,
                exit,
                ..
            } => {
                let applied = self.registry.event(zurg, seq, kind, endpoint, exit, now);
                self.watch(applied.changes)
            }
            FromHost::Snapshot {
                seq,
                endpoints,
                last,
            } => {
                let changes = self.registry.snapshot(zurg, seq, endpoints, last, now);
                self.watch(changes)
            }
            FromHost::Heartbeat => {
                self.registry.heartbeat(zurg, now);
                Ok(())
            }
            // No operator, so no request these could answer: the relay
            // drops them.
            FromHost::Answer(_) | FromHost::Part(_) => Ok(()),
            FromHost::Bye => {
                let changes = self.registry.drop_host(zurg, Reason::Bye);
                self.hosts.release(id, zurg);
                self.set_peer(id, Peer::New);
                self.close(id);
                self.watch(changes)
            }
        }
    }

    /// Applies changes as a watcher does; an `up` of an endpoint it has or
    /// a `down` of one it has not is a change that should not have been
    /// sent.
    fn watch(&mut self, changes: Vec<Change>) -> Result<(), String> {
        for c in changes {
            let key = (c.endpoint.service.clone(), c.endpoint.gpid.clone());
            let fits = match c.change {
                ChangeKind::Up => self.watched.insert(key),
                ChangeKind::Down => self.watched.remove(&key),
            };
            check(fits, || format!("a change the watcher cannot apply: {c:?}"))?;
        }
        Ok(())
    }

    fn all(&self) -> Vec<crate::publish::proto::Endpoint> {
        self.registry
            .names()
            .flat_map(|n| self.registry.endpoints(n))
            .collect()
    }

    fn consistent(&mut self) -> Result<(), String> {
        let all = self.all();
        let keys: BTreeSet<EpKey> = all
            .iter()
            .map(|e| (e.service.clone(), e.gpid.clone()))
            .collect();
        check(keys.len() == all.len(), || {
            "an endpoint listed twice".into()
        })?;
        check(keys == self.watched, || {
            format!("watchers hold {:?}, the registry {:?}", self.watched, keys)
        })?;
        let hosts = self.registry.hosts();
        let mut owned = 0usize;
        for h in &hosts {
            let of_host = self.registry.endpoints_of_host(&h.zurg);
            check(of_host.iter().all(|e| e.host == h.zurg), || {
                format!("host {} lists another host's endpoint: {of_host:?}", h.zurg)
            })?;
            check(h.endpoints == of_host.len(), || {
                format!(
                    "host {} counts {} endpoints and has {}",
                    h.zurg,
                    h.endpoints,
                    of_host.len()
                )
            })?;
            owned += of_host.len();
            if let Some(&before) = self.seqs.get(&h.zurg) {
                check(h.seq >= before, || {
                    format!("host {} went back from seq {before} to {}", h.zurg, h.seq)
                })?;
            }
        }
        check(owned == all.len(), || {
            format!("hosts own {owned} endpoints, the names hold {}", all.len())
        })?;
        for e in &all {
            check(self.registry.host(&e.host).is_some(), || {
                format!("an endpoint of an unknown host: {e:?}")
            })?;
        }
        self.seqs = hosts.into_iter().map(|h| (h.zurg, h.seq)).collect();
        Ok(())
    }
}
