//! The naming registry (pure): service name -> live endpoints, and the hosts
//! (zurg instances) that report them, with their sequence bookkeeping.
//!
//! Every mutation returns the `Change`s watchers must see, so whoever owns
//! the registry (the publisher's in-memory store, or the mirror of etcd)
//! fans them out without diffing. `now_ms` is passed in; nothing here reads
//! a clock or touches the OS.

use std::collections::{BTreeMap, BTreeSet};

use super::proto::{ChangeKind, Endpoint, EventKind, ExitInfo, HostInfo, Reason};

/// One change of the view, as watchers receive it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub change: ChangeKind,
    pub reason: Reason,
    pub endpoint: Endpoint,
    pub exit: Option<ExitInfo>,
}

#[derive(Debug, Clone, Default)]
struct Host {
    info: HostInfo,
    last_seen_ms: u64,
    /// Chunks of a snapshot still arriving.
    snapshot: Vec<Endpoint>,
}

/// Key of an endpoint: its service and its GPID.
pub type EpKey = (String, String);

#[derive(Debug, Default)]
pub struct Registry {
    hosts: BTreeMap<String, Host>,
    names: BTreeMap<String, BTreeMap<String, Endpoint>>,
    by_host: BTreeMap<String, BTreeSet<EpKey>>,
}

/// What applying one event did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct Applied {
    pub changes: Vec<Change>,
    /// It was a resend of a sequence number already applied.
    pub duplicate: bool,
}

impl Registry {
    pub fn new() -> Registry {
        Registry::default()
    }

    /// Adds or replaces an endpoint; a change only when it is new.
    ///
    /// An endpoint another host had published (the same service and GPID)
    /// becomes this host's: the last to publish it owns it, as with etcd's
    /// one key per GPID, and the other host's bye or lease no longer takes
    /// it away.
    pub fn upsert(&mut self, endpoint: Endpoint, reason: Reason) -> Option<Change> {
        let key = (endpoint.service.clone(), endpoint.gpid.clone());
        let by_gpid = self.names.entry(endpoint.service.clone()).or_default();
        let before = by_gpid.insert(endpoint.gpid.clone(), endpoint.clone());
        if let Some(old) = before.as_ref().filter(|old| old.host != endpoint.host) {
            if let Some(set) = self.by_host.get_mut(&old.host) {
                set.remove(&key);
                if set.is_empty() {
                    self.by_host.remove(&old.host);
                }
            }
        }
        self.by_host
            .entry(endpoint.host.clone())
            .or_default()
            .insert(key);
        before.is_none().then_some(Change {
            change: ChangeKind::Up,
            reason,
            endpoint,
            exit: None,
        })
    }

    pub fn remove(
        &mut self,
        service: &str,
        gpid: &str,
        reason: Reason,
        exit: Option<ExitInfo>,
    ) -> Option<Change> {
        let by_gpid = self.names.get_mut(service)?;
        let endpoint = by_gpid.remove(gpid)?;
        if by_gpid.is_empty() {
            self.names.remove(service);
        }
        if let Some(set) = self.by_host.get_mut(&endpoint.host) {
            set.remove(&(service.to_string(), gpid.to_string()));
            if set.is_empty() {
                self.by_host.remove(&endpoint.host);
            }
        }
        Some(Change {
            change: ChangeKind::Down,
            reason,
            endpoint,
            exit,
        })
    }

    /// A forwarder said hello: returns the highest sequence number applied
    /// from this instance, so it resends only what is missing.
    pub fn hello(&mut self, mut info: HostInfo, now_ms: u64) -> u64 {
        let host = self.hosts.entry(info.zurg.clone()).or_default();
        // Counters belong to the registry, not to what the host claims.
        info.seq = host.info.seq;
        info.applied = host.info.applied;
        info.duplicates = host.info.duplicates;
        info.gaps = host.info.gaps;
        info.connected = true;
        host.info = info;
        host.last_seen_ms = now_ms;
        host.snapshot.clear();
        host.info.seq
    }

    /// Marks a host's seq as applied; `false` when it was a duplicate.
    fn advance(&mut self, zurg: &str, seq: u64, now_ms: u64) -> bool {
        let Some(host) = self.hosts.get_mut(zurg) else {
            return false;
        };
        host.last_seen_ms = now_ms;
        count_seq(&mut host.info, seq)
    }

    /// Applies one lifecycle event from a host that said hello.
    pub fn event(
        &mut self,
        zurg: &str,
        seq: u64,
        kind: EventKind,
        mut endpoint: Endpoint,
        exit: Option<ExitInfo>,
        now_ms: u64,
    ) -> Applied {
        if !self.advance(zurg, seq, now_ms) {
            return Applied {
                changes: Vec::new(),
                duplicate: self.hosts.contains_key(zurg),
            };
        }
        endpoint.host = zurg.to_string();
        let change = match kind {
            EventKind::Start => self.upsert(endpoint, Reason::Start),
            EventKind::Exit => self.remove(&endpoint.service, &endpoint.gpid, Reason::Exit, exit),
        };
        Applied {
            changes: change.into_iter().collect(),
            duplicate: false,
        }
    }

    /// One chunk of a host's snapshot; the last chunk makes the host's
    /// endpoints exactly the snapshot's set.
    pub fn snapshot(
        &mut self,
        zurg: &str,
        seq: u64,
        endpoints: Vec<Endpoint>,
        last: bool,
        now_ms: u64,
    ) -> Vec<Change> {
        let Some(host) = self.hosts.get_mut(zurg) else {
            return Vec::new();
        };
        host.last_seen_ms = now_ms;
        host.snapshot.extend(endpoints);
        if !last {
            return Vec::new();
        }
        let listed = std::mem::take(&mut host.snapshot);
        let info = &mut host.info;
        if seq > info.seq {
            // Sequence numbers the snapshot stands in for were never applied.
            if info.applied > 0 {
                info.gaps = info.gaps.saturating_add(seq.saturating_sub(info.seq));
            }
            info.seq = seq;
        }
        let wanted: BTreeSet<EpKey> = listed
            .iter()
            .map(|e| (e.service.clone(), e.gpid.clone()))
            .collect();
        let stale: Vec<EpKey> = self
            .by_host
            .get(zurg)
            .map(|set| set.difference(&wanted).cloned().collect())
            .unwrap_or_default();
        let mut changes: Vec<Change> = stale
            .iter()
            .filter_map(|(name, gpid)| self.remove(name, gpid, Reason::Snapshot, None))
            .collect();
        for mut e in listed {
            e.host = zurg.to_string();
            changes.extend(self.upsert(e, Reason::Snapshot));
        }
        changes
    }

    pub fn heartbeat(&mut self, zurg: &str, now_ms: u64) {
        if let Some(host) = self.hosts.get_mut(zurg) {
            host.last_seen_ms = now_ms;
        }
    }

    /// The host's connection closed; its lease keeps running from the last
    /// time it was heard.
    pub fn disconnected(&mut self, zurg: &str) {
        if let Some(host) = self.hosts.get_mut(zurg) {
            host.info.connected = false;
            host.snapshot.clear();
        }
    }

    /// Forgets a host and everything it ran.
    pub fn drop_host(&mut self, zurg: &str, reason: Reason) -> Vec<Change> {
        self.hosts.remove(zurg);
        let keys: Vec<EpKey> = self
            .by_host
            .get(zurg)
            .map(|s| s.iter().cloned().collect())
            .unwrap_or_default();
        keys.iter()
            .filter_map(|(name, gpid)| self.remove(name, gpid, reason, None))
            .collect()
    }

    /// Drops every host silent for `lease_ms` or longer; returns them and
    /// the changes.
    pub fn expire(&mut self, now_ms: u64, lease_ms: u64) -> (Vec<String>, Vec<Change>) {
        let dead: Vec<String> = self
            .hosts
            .iter()
            .filter(|(_, h)| now_ms.saturating_sub(h.last_seen_ms) >= lease_ms)
            .map(|(k, _)| k.clone())
            .collect();
        let changes = dead
            .iter()
            .flat_map(|k| self.drop_host(k, Reason::Lease))
            .collect();
        (dead, changes)
    }

    /// When the next host would expire, if any host is known.
    pub fn next_expiry(&self, lease_ms: u64) -> Option<u64> {
        self.hosts
            .values()
            .map(|h| h.last_seen_ms.saturating_add(lease_ms))
            .min()
    }

    /// Registers or replaces a host record as another store holds it (the
    /// etcd mirror), without touching endpoints.
    pub fn set_host(&mut self, info: HostInfo, now_ms: u64) {
        let host = self.hosts.entry(info.zurg.clone()).or_default();
        host.info = info;
        host.last_seen_ms = now_ms;
    }

    pub fn host_count(&self) -> usize {
        self.hosts.len()
    }

    pub fn host(&self, zurg: &str) -> Option<&HostInfo> {
        self.hosts.get(zurg).map(|h| &h.info)
    }

    pub fn endpoints(&self, name: &str) -> Vec<Endpoint> {
        self.names
            .get(name)
            .map(|m| m.values().cloned().collect())
            .unwrap_or_default()
    }

    /// Up to `limit` endpoints in (service, gpid) order after `after`,
    /// only of service `only` when given: one page of a listing that is
    /// produced as the client reads it. The cursor is a key, not a position,
    /// so changes between pages neither skip nor repeat an endpoint.
    pub fn page(&self, only: Option<&str>, after: Option<&EpKey>, limit: usize) -> Vec<Endpoint> {
        use std::ops::Bound::{Excluded, Included, Unbounded};
        let names: Box<dyn Iterator<Item = (&String, &BTreeMap<String, Endpoint>)>> =
            match (only, after) {
                (Some(n), _) => Box::new(self.names.get_key_value(n).into_iter()),
                (None, Some((n, _))) => {
                    Box::new(self.names.range::<String, _>((Included(n), Unbounded)))
                }
                (None, None) => Box::new(self.names.iter()),
            };
        let mut out = Vec::new();
        for (name, by_gpid) in names {
            let left = limit.saturating_sub(out.len());
            if left == 0 {
                break;
            }
            let eps: Box<dyn Iterator<Item = &Endpoint>> = match after {
                Some((n, g)) if n == name => Box::new(
                    by_gpid
                        .range::<String, _>((Excluded(g), Unbounded))
                        .map(|(_, e)| e),
                ),
                _ => Box::new(by_gpid.values()),
            };
            out.extend(eps.take(left).cloned());
        }
        out
    }

    pub fn names(&self) -> impl Iterator<Item = &String> {
        self.names.keys()
    }

    pub fn endpoints_of_host(&self, zurg: &str) -> Vec<Endpoint> {
        let Some(keys) = self.by_host.get(zurg) else {
            return Vec::new();
        };
        keys.iter()
            .filter_map(|(name, gpid)| self.names.get(name).and_then(|m| m.get(gpid)).cloned())
            .collect()
    }

    pub fn hosts(&self) -> Vec<HostInfo> {
        self.hosts_page(None, usize::MAX)
    }

    /// Up to `limit` hosts in zurg order after `after`: a page of a listing.
    pub fn hosts_page(&self, after: Option<&str>, limit: usize) -> Vec<HostInfo> {
        use std::ops::Bound::{Excluded, Unbounded};
        let range = match after {
            Some(z) => self.hosts.range::<str, _>((Excluded(z), Unbounded)),
            None => self.hosts.range::<str, _>(..),
        };
        range
            .take(limit)
            .map(|(k, h)| {
                let mut info = h.info.clone();
                info.endpoints = self.by_host.get(k).map_or(0, BTreeSet::len);
                info
            })
            .collect()
    }
}

/// The per-host sequence bookkeeping every store shares: `seq` is applied
/// once (`true`), counted as a duplicate when not above the last one, and a
/// jump past the next one counts the missing numbers as gaps.
pub fn count_seq(info: &mut HostInfo, seq: u64) -> bool {
    if seq <= info.seq {
        info.duplicates = info.duplicates.saturating_add(1);
        return false;
    }
    if info.applied > 0 {
        info.gaps = info
            .gaps
            .saturating_add(seq.saturating_sub(info.seq).saturating_sub(1));
    }
    info.seq = seq;
    info.applied = info.applied.saturating_add(1);
    true
}

#[cfg(test)]
mod tests {
    use super::*;

    const H: &str = "10.0.0.1:0:100:1";

    fn ep(name: &str, gpid: &str) -> Endpoint {
        Endpoint {
            service: name.into(),
            ip: "10.0.0.1".into(),
            port: 80,
            gpid: gpid.into(),
            version: None,
            since_us: 1,
            host: String::new(),
        }
    }

    fn host() -> HostInfo {
        HostInfo {
            zurg: H.into(),
            ip: "10.0.0.1".into(),
            ..HostInfo::default()
        }
    }

    /// Found by the publish_registry fuzz target
    /// (fuzz/corpus/publish_registry/same-gpid-two-hosts): a second host
    /// publishing an endpoint the first had left it in the first host's
    /// set, so the first host's bye took the second's live endpoint away and
    /// both hosts counted it.
    #[test]
    fn an_endpoint_published_again_by_another_host_moves_to_it() {
        let mut r = Registry::new();
        let other = "10.0.0.2:0:100:1";
        r.hello(host(), 1);
        r.hello(
            HostInfo {
                zurg: other.into(),
                ..host()
            },
            1,
        );
        let up = r.event(H, 1, EventKind::Start, ep("web", "g"), None, 1);
        assert_eq!(
            kinds(&up.changes),
            [(ChangeKind::Up, Reason::Start, "g".into())]
        );
        let again = r.event(other, 1, EventKind::Start, ep("web", "g"), None, 1);
        assert!(again.changes.is_empty(), "{again:?}");
        assert!(r.endpoints_of_host(H).is_empty());
        let counts: Vec<usize> = r.hosts().iter().map(|h| h.endpoints).collect();
        assert_eq!(counts, [0, 1]);
        assert!(r.drop_host(H, Reason::Bye).is_empty());
        assert_eq!(r.endpoints("web")[0].host, other);
        let gone = r.drop_host(other, Reason::Bye);
        assert_eq!(kinds(&gone), [(ChangeKind::Down, Reason::Bye, "g".into())]);
        assert!(r.endpoints("web").is_empty());
    }

    fn kinds(changes: &[Change]) -> Vec<(ChangeKind, Reason, String)> {
        changes
            .iter()
            .map(|c| (c.change, c.reason, c.endpoint.gpid.clone()))
            .collect()
    }

    #[test]
    fn start_exit_and_duplicates() {
        let mut r = Registry::new();
        assert_eq!(r.hello(host(), 0), 0);
        let a = r.event(H, 1, EventKind::Start, ep("web", "g1"), None, 1);
        assert_eq!(
            kinds(&a.changes),
            [(ChangeKind::Up, Reason::Start, "g1".into())]
        );
        assert_eq!(r.endpoints("web").len(), 1);
        assert_eq!(r.endpoints("web")[0].host, H);
        // A resend after a reconnect is acknowledged but not applied twice.
        let dup = r.event(H, 1, EventKind::Start, ep("web", "g1"), None, 2);
        assert!(dup.duplicate && dup.changes.is_empty());
        let b = r.event(H, 2, EventKind::Exit, ep("web", "g1"), None, 3);
        assert_eq!(
            kinds(&b.changes),
            [(ChangeKind::Down, Reason::Exit, "g1".into())]
        );
        assert!(r.endpoints("web").is_empty());
        assert_eq!(r.names().count(), 0);
        let h = r.host(H).unwrap();
        assert_eq!((h.seq, h.applied, h.duplicates, h.gaps), (2, 2, 1, 0));
        // A reconnect learns where the host stands.
        assert_eq!(r.hello(host(), 4), 2);
    }

    #[test]
    fn snapshot_makes_the_host_set_exact_and_counts_gaps() {
        let mut r = Registry::new();
        r.hello(host(), 0);
        r.event(H, 1, EventKind::Start, ep("web", "g1"), None, 0);
        r.event(H, 2, EventKind::Start, ep("db", "g2"), None, 0);
        // Events 3..=5 were lost; the snapshot says web g1 died and g3 runs.
        assert!(r.snapshot(H, 5, vec![ep("db", "g2")], false, 0).is_empty());
        let c = r.snapshot(H, 5, vec![ep("web", "g3")], true, 0);
        assert_eq!(
            kinds(&c),
            [
                (ChangeKind::Down, Reason::Snapshot, "g1".into()),
                (ChangeKind::Up, Reason::Snapshot, "g3".into())
            ]
        );
        assert_eq!(r.endpoints("db").len(), 1);
        let h = r.host(H).unwrap();
        assert_eq!((h.seq, h.gaps), (5, 3));
        assert_eq!(r.hosts()[0].endpoints, 2);
    }

    #[test]
    fn a_fresh_registry_does_not_count_the_first_seq_as_a_gap() {
        let mut r = Registry::new();
        r.hello(host(), 0);
        r.event(H, 40, EventKind::Start, ep("web", "g1"), None, 0);
        r.event(H, 41, EventKind::Exit, ep("web", "g1"), None, 0);
        r.snapshot(H, 41, vec![], true, 0);
        let h = r.host(H).unwrap();
        assert_eq!((h.seq, h.applied, h.gaps), (41, 2, 0));
    }

    #[test]
    fn silent_hosts_expire_after_the_lease() {
        let mut r = Registry::new();
        r.hello(host(), 0);
        r.event(H, 1, EventKind::Start, ep("web", "g1"), None, 0);
        r.heartbeat(H, 900);
        r.disconnected(H);
        assert_eq!(r.next_expiry(1000), Some(1900));
        assert_eq!(r.expire(1899, 1000), (vec![], vec![]));
        let (hosts, c) = r.expire(1900, 1000);
        assert_eq!(hosts, [H]);
        assert_eq!(kinds(&c), [(ChangeKind::Down, Reason::Lease, "g1".into())]);
        assert!(r.hosts().is_empty());
        assert_eq!(r.next_expiry(1000), None);
    }

    #[test]
    fn pages_walk_every_endpoint_once_in_key_order_despite_changes() {
        let mut r = Registry::new();
        r.hello(host(), 0);
        for (i, (name, gpid)) in [("a", "1"), ("a", "2"), ("b", "1"), ("c", "1"), ("c", "2")]
            .iter()
            .enumerate()
        {
            r.event(H, i as u64 + 1, EventKind::Start, ep(name, gpid), None, 0);
        }
        let key = |e: &Endpoint| (e.service.clone(), e.gpid.clone());
        let p1 = r.page(None, None, 2);
        assert_eq!(
            p1.iter().map(key).collect::<Vec<_>>(),
            [("a".into(), "1".into()), ("a".into(), "2".into())]
        );
        // b goes away and a3, c0 arrive between pages: the cursor is a key.
        r.event(H, 6, EventKind::Exit, ep("b", "1"), None, 0);
        r.event(H, 7, EventKind::Start, ep("a", "3"), None, 0);
        r.event(H, 8, EventKind::Start, ep("c", "0"), None, 0);
        let p2 = r.page(None, p1.last().map(key).as_ref(), 10);
        assert_eq!(
            p2.iter().map(key).collect::<Vec<_>>(),
            [
                ("a".into(), "3".into()),
                ("c".into(), "0".into()),
                ("c".into(), "1".into()),
                ("c".into(), "2".into())
            ]
        );
        assert!(r.page(None, p2.last().map(key).as_ref(), 10).is_empty());
        let only_c = r.page(Some("c"), Some(&("c".into(), "0".into())), 1);
        assert_eq!(
            only_c.iter().map(key).collect::<Vec<_>>(),
            [("c".into(), "1".into())]
        );
        assert!(r.page(Some("nope"), None, 10).is_empty());
    }

    #[test]
    fn hosts_come_in_pages_in_zurg_order() {
        let mut r = Registry::new();
        for z in ["c", "a", "b"] {
            r.hello(
                HostInfo {
                    zurg: z.into(),
                    ..HostInfo::default()
                },
                0,
            );
        }
        let zurgs = |v: Vec<HostInfo>| v.into_iter().map(|h| h.zurg).collect::<Vec<_>>();
        assert_eq!(zurgs(r.hosts_page(None, 2)), ["a", "b"]);
        assert_eq!(zurgs(r.hosts_page(Some("b"), 2)), ["c"]);
        assert!(r.hosts_page(Some("c"), 2).is_empty());
        assert_eq!(zurgs(r.hosts()), ["a", "b", "c"]);
    }

    #[test]
    fn events_from_an_unknown_host_change_nothing() {
        let mut r = Registry::new();
        let a = r.event("nobody", 1, EventKind::Start, ep("web", "g1"), None, 0);
        assert_eq!(a, Applied::default());
        assert!(r
            .snapshot("nobody", 1, vec![ep("web", "g")], true, 0)
            .is_empty());
        assert!(r.drop_host("nobody", Reason::Bye).is_empty());
    }
}
