//! `EtcdStore` against a real etcd (`/usr/bin/etcd`) on loopback: two
//! publishers share one etcd, and so one view and one sequence per host.
//! Driven through the `Store` trait with a mio `Poll` and `Waker`, as the
//! publisher's loop drives it. Needs `--features etcd`.
#![cfg(feature = "etcd")]
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::etcd::Etcd;
use common::naming::free_port;
use common::DEADLINE;
use mio::{Events, Poll, Token, Waker};
use zurg::publish::etcd::EtcdStore;
use zurg::publish::proto::{ChangeKind, Endpoint, EventKind, ExitInfo, HostInfo, Reason};
use zurg::publish::store::{ConnId, Done, Store};

const H: &str = "10.0.0.1:0:100:1";

/// One publisher: a store, the poll its waker wakes, and what it drained.
struct Pub {
    store: EtcdStore,
    poll: Poll,
    events: Events,
    done: Vec<Done>,
}

impl Pub {
    fn new(etcd: &Etcd, prefix: &str, lease_ms: u64) -> Pub {
        let poll = Poll::new().unwrap();
        let waker = std::sync::Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
        let store = EtcdStore::connect(std::slice::from_ref(&etcd.url), prefix, lease_ms, waker)
            .unwrap_or_else(|e| panic!("{e}\n{}", etcd.log()));
        Pub {
            store,
            poll,
            events: Events::with_capacity(8),
            done: Vec::new(),
        }
    }

    /// Waits up to `wait` for the waker, then drains.
    fn pump(&mut self, wait: Duration) {
        self.poll.poll(&mut self.events, Some(wait)).unwrap();
        self.store.drain(&mut self.done);
    }

    /// Takes the first reply (not a change) for `conn`.
    fn take_reply(&mut self, conn: ConnId) -> Option<Done> {
        let at = self.done.iter().position(|d| match d {
            Done::Welcome { conn: c, .. }
            | Done::Ack { conn: c, .. }
            | Done::Fail { conn: c, .. } => *c == conn,
            Done::Change(_) => false,
        })?;
        Some(self.done.remove(at))
    }

    /// The changes drained so far, as (kind, reason, gpid, exit), cleared.
    fn take_changes(&mut self) -> Vec<(ChangeKind, Reason, String, Option<ExitInfo>)> {
        let mut out = Vec::new();
        self.done.retain(|d| match d {
            Done::Change(c) => {
                out.push((c.change, c.reason, c.endpoint.gpid.clone(), c.exit.clone()));
                false
            }
            _ => true,
        });
        out
    }

    fn gpids(&self, name: &str) -> Vec<String> {
        let mut g: Vec<String> = self
            .store
            .view()
            .endpoints(name)
            .into_iter()
            .map(|e| e.gpid)
            .collect();
        g.sort();
        g
    }

    /// (seq, applied, duplicates, gaps) of host H in the view.
    fn counters(&self) -> Option<(u64, u64, u64, u64)> {
        let h = self.store.view().host(H)?;
        Some((h.seq, h.applied, h.duplicates, h.gaps))
    }
}

/// Pumps every publisher until `cond` holds, within `within`.
fn wait_until(
    pubs: &mut [Pub],
    within: Duration,
    what: &str,
    mut cond: impl FnMut(&[Pub]) -> bool,
) {
    let deadline = Instant::now() + within;
    loop {
        for p in pubs.iter_mut() {
            p.pump(Duration::ZERO);
        }
        if cond(pubs) {
            return;
        }
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        // Block on one publisher's waker; the others are pumped right after.
        for p in pubs.iter_mut() {
            p.pump(Duration::from_millis(5));
        }
    }
}

/// Waits for `pubs[i]`'s reply to `conn`.
fn reply(pubs: &mut [Pub], i: usize, conn: ConnId) -> Done {
    let deadline = Instant::now() + DEADLINE;
    loop {
        for p in pubs.iter_mut() {
            p.pump(Duration::ZERO);
        }
        if let Some(d) = pubs[i].take_reply(conn) {
            return d;
        }
        assert!(Instant::now() < deadline, "no reply to conn {conn}");
        for p in pubs.iter_mut() {
            p.pump(Duration::from_millis(5));
        }
    }
}

fn host() -> HostInfo {
    HostInfo {
        zurg: H.into(),
        ip: "10.0.0.1".into(),
        boot: "b1".into(),
        hostname: "node1".into(),
        ..HostInfo::default()
    }
}

fn ep(name: &str, gpid: &str) -> Endpoint {
    Endpoint {
        service: name.into(),
        ip: "10.0.0.1".into(),
        port: 8080,
        gpid: gpid.into(),
        version: Some("1.0".into()),
        since_us: 1,
        host: String::new(),
    }
}

/// Host H says hello to publisher 0 on connection 1 and starts web as g1,
/// and both publishers see it.
fn start_g1(p: &mut [Pub]) {
    p[0].store.hello(1, host(), 0);
    assert_eq!(welcome(reply(p, 0, 1)), 0);
    p[0].store
        .event(1, H, 1, EventKind::Start, ep("web", "g1"), None, 0);
    assert_eq!(ack(reply(p, 0, 1)), 1);
    wait_until(p, DEADLINE, "g1 in both views", |p| {
        p.iter().all(|p| p.gpids("web") == ["g1"])
    });
}

fn welcome(d: Done) -> u64 {
    match d {
        Done::Welcome { last_seq, .. } => last_seq,
        other => panic!("expected a welcome, got {other:?}"),
    }
}

fn ack(d: Done) -> u64 {
    match d {
        Done::Ack { seq, .. } => seq,
        other => panic!("expected an ack, got {other:?}"),
    }
}

#[test]
fn two_publishers_share_one_view_and_one_sequence() {
    let Some(etcd) = Etcd::start("etcd-share", None) else {
        return;
    };
    let mut p = [
        Pub::new(&etcd, "/zt", 10_000),
        Pub::new(&etcd, "/zt", 10_000),
    ];
    let (a, b) = (0, 1);

    // The forwarder says hello to A and publishes a start.
    p[a].store.hello(1, host(), 0);
    assert_eq!(welcome(reply(&mut p, a, 1)), 0);
    p[a].store
        .event(1, H, 1, EventKind::Start, ep("web", "g1"), None, 0);
    assert_eq!(ack(reply(&mut p, a, 1)), 1);
    wait_until(&mut p, DEADLINE, "g1 in both views", |p| {
        p.iter().all(|p| p.gpids("web") == ["g1"])
    });
    for x in &mut p {
        assert_eq!(
            x.take_changes(),
            [(ChangeKind::Up, Reason::Start, "g1".into(), None)]
        );
        assert_eq!(x.store.view().endpoints("web")[0].host, H);
    }

    // Its exit: gone from both views, with the exit status on both.
    let died = ExitInfo {
        code: None,
        signal: Some("SIGKILL".into()),
    };
    p[a].store.event(
        1,
        H,
        2,
        EventKind::Exit,
        ep("web", "g1"),
        Some(died.clone()),
        0,
    );
    assert_eq!(ack(reply(&mut p, a, 1)), 2);
    wait_until(&mut p, DEADLINE, "g1 gone from both views", |p| {
        p.iter().all(|p| p.gpids("web").is_empty())
    });
    for x in &mut p {
        assert_eq!(
            x.take_changes(),
            [(
                ChangeKind::Down,
                Reason::Exit,
                "g1".into(),
                Some(died.clone())
            )]
        );
    }

    // The forwarder fails over to B: B knows where it stands from etcd, and
    // a resend of seq 2 is acknowledged but not applied again.
    p[b].store.hello(7, host(), 0);
    assert_eq!(welcome(reply(&mut p, b, 7)), 2);
    p[b].store
        .event(7, H, 2, EventKind::Exit, ep("web", "g1"), None, 0);
    assert_eq!(ack(reply(&mut p, b, 7)), 2);
    wait_until(&mut p, DEADLINE, "the duplicate counted", |p| {
        p.iter().all(|p| p.counters() == Some((2, 2, 1, 0)))
    });
    p[b].store
        .event(7, H, 3, EventKind::Start, ep("web", "g2"), None, 0);
    assert_eq!(ack(reply(&mut p, b, 7)), 3);
    wait_until(&mut p, DEADLINE, "g2 in both views", |p| {
        p.iter()
            .all(|p| p.gpids("web") == ["g2"] && p.counters() == Some((3, 3, 1, 0)))
    });

    // A still caches seq 2: its guarded transaction fails, it reads the
    // host again and sees seq 3 is applied. Exactly once across publishers.
    p[a].store
        .event(1, H, 3, EventKind::Start, ep("web", "g2"), None, 0);
    assert_eq!(ack(reply(&mut p, a, 1)), 3);
    wait_until(&mut p, DEADLINE, "the second duplicate counted", |p| {
        p.iter().all(|p| p.counters() == Some((3, 3, 2, 0)))
    });

    // A snapshot through A in two chunks: the host's keys become exactly
    // g3 and g4, and seqs 4..=5 count as gaps.
    p[a].store.hello(2, host(), 0);
    assert_eq!(welcome(reply(&mut p, a, 2)), 3);
    p[a].store
        .snapshot(2, H, 5, vec![ep("web", "g3")], false, 0);
    p[a].store.snapshot(2, H, 5, vec![ep("db", "g4")], true, 0);
    assert_eq!(ack(reply(&mut p, a, 2)), 5);
    wait_until(&mut p, DEADLINE, "the snapshot in both views", |p| {
        p.iter().all(|p| {
            p.gpids("web") == ["g3"]
                && p.gpids("db") == ["g4"]
                && p.counters() == Some((5, 3, 2, 2))
        })
    });
    for x in &mut p {
        let mut c = x.take_changes();
        c.sort_by(|l, r| l.2.cmp(&r.2));
        assert_eq!(
            c,
            [
                (ChangeKind::Up, Reason::Start, "g2".into(), None),
                (ChangeKind::Down, Reason::Snapshot, "g2".into(), None),
                (ChangeKind::Up, Reason::Snapshot, "g3".into(), None),
                (ChangeKind::Up, Reason::Snapshot, "g4".into(), None),
            ]
        );
    }

    // A heartbeat is acknowledged with the stored seq.
    p[a].store.heartbeat(2, H, 0);
    assert_eq!(ack(reply(&mut p, a, 2)), 5);

    // Bye: the lease is revoked; both views drop the host, for that reason.
    p[a].store.bye(H);
    wait_until(&mut p, DEADLINE, "the host gone from both views", |p| {
        p.iter()
            .all(|p| p.store.view().hosts().is_empty() && p.store.view().names().count() == 0)
    });
    for x in &mut p {
        let c = x.take_changes();
        assert_eq!(c.len(), 2, "{c:?}");
        assert!(
            c.iter()
                .all(|(k, r, _, _)| *k == ChangeKind::Down && *r == Reason::Bye),
            "{c:?}"
        );
    }
    // With the lease gone, a heartbeat on B's stale connection fails it.
    p[b].store.heartbeat(7, H, 0);
    assert!(matches!(reply(&mut p, b, 7), Done::Fail { .. }));
}

#[test]
fn a_silent_host_expires_from_both_views() {
    let Some(etcd) = Etcd::start("etcd-lease", None) else {
        return;
    };
    let mut p = [Pub::new(&etcd, "/zl", 1000), Pub::new(&etcd, "/zl", 1000)];
    start_g1(&mut p);
    let started = Instant::now();
    p[0].store.disconnected(H);
    // No heartbeats: etcd expires the lease (its minimum TTL may be above
    // the 1 s asked for).
    wait_until(
        &mut p,
        Duration::from_secs(10),
        "the lease to expire",
        |p| {
            p.iter()
                .all(|p| p.gpids("web").is_empty() && p.store.view().hosts().is_empty())
        },
    );
    eprintln!("lease of 1 s expired after {:?}", started.elapsed());
    for x in &mut p {
        assert_eq!(
            x.take_changes(),
            [
                (ChangeKind::Up, Reason::Start, "g1".into(), None),
                (ChangeKind::Down, Reason::Lease, "g1".into(), None)
            ]
        );
    }
    // The host starts over: a new lease, and nothing applied.
    p[1].store.hello(2, host(), 0);
    assert_eq!(welcome(reply(&mut p, 1, 2)), 0);
}

#[test]
fn both_publishers_carry_on_after_etcd_restarts() {
    let Some(mut etcd) = Etcd::start("etcd-restart", None) else {
        return;
    };
    let mut p = [
        Pub::new(&etcd, "/zr", 10_000),
        Pub::new(&etcd, "/zr", 10_000),
    ];
    start_g1(&mut p);

    etcd.restart();
    // The forwarder reconnects until a hello gets through (an attempt may
    // fail while the client reconnects), then carries on from seq 1.
    let deadline = Instant::now() + DEADLINE;
    let mut conn = 10;
    loop {
        conn += 1;
        p[0].store.hello(conn, host(), 0);
        match reply(&mut p, 0, conn) {
            Done::Welcome { last_seq, .. } => {
                assert_eq!(last_seq, 1);
                break;
            }
            Done::Fail { .. } => p[0].store.disconnected(H),
            other => panic!("{other:?}"),
        }
        assert!(Instant::now() < deadline, "no hello got through");
    }
    p[0].store
        .event(conn, H, 2, EventKind::Exit, ep("web", "g1"), None, 0);
    assert_eq!(ack(reply(&mut p, 0, conn)), 2);
    // Both watches resumed: the exit reaches both views.
    wait_until(&mut p, DEADLINE, "g1 gone from both views", |p| {
        p.iter().all(|p| p.gpids("web").is_empty())
    });
    for x in &mut p {
        let c = x.take_changes();
        assert_eq!(
            c.last(),
            Some(&(ChangeKind::Down, Reason::Exit, "g1".into(), None)),
            "{c:?}"
        );
    }
}

#[test]
fn an_unreachable_etcd_is_an_error_naming_it() {
    let poll = Poll::new().unwrap();
    let waker = std::sync::Arc::new(Waker::new(poll.registry(), Token(0)).unwrap());
    let url = format!("http://127.0.0.1:{}", free_port());
    let err = EtcdStore::connect(std::slice::from_ref(&url), "/z", 1000, waker).unwrap_err();
    assert!(err.contains(&url), "{err}");
}

const H2: &str = "10.0.0.2:0:100:1";

fn host2() -> HostInfo {
    HostInfo {
        zurg: H2.into(),
        ip: "10.0.0.2".into(),
        boot: "b2".into(),
        hostname: "node2".into(),
        ..HostInfo::default()
    }
}

/// `pubs[i]` starts `name` as `gpid` for host `zurg` (seq `seq`, connection
/// `conn`) and waits for the ack.
fn start_on(
    pubs: &mut [Pub],
    i: usize,
    conn: ConnId,
    zurg: &str,
    seq: u64,
    name: &str,
    gpid: &str,
) {
    pubs[i]
        .store
        .event(conn, zurg, seq, EventKind::Start, ep(name, gpid), None, 0);
    assert_eq!(ack(reply(pubs, i, conn)), seq);
}

/// Waits until every publisher lists `gpid` under `name`. A write of
/// another publisher reaches a publisher through its watch only, and the
/// watch brings revisions in order: once there, the watch has brought back
/// every earlier revision too.
fn wait_for_gpid(pubs: &mut [Pub], name: &str, gpid: &str) {
    wait_until(pubs, DEADLINE, gpid, |p| {
        p.iter().all(|p| p.gpids(name).iter().any(|g| g == gpid))
    });
}

#[test]
fn the_writing_publisher_reports_a_change_with_its_ack() {
    let Some(etcd) = Etcd::start("etcd-own", None) else {
        return;
    };
    let mut p = [
        Pub::new(&etcd, "/zo", 10_000),
        Pub::new(&etcd, "/zo", 10_000),
    ];
    p[0].store.hello(1, host(), 0);
    assert_eq!(welcome(reply(&mut p, 0, 1)), 0);
    start_on(&mut p, 0, 1, H, 1, "web", "g1");
    // Already in the view when the event is acknowledged: reported from
    // etcd's answer, not after the watch brings it back.
    assert_eq!(p[0].gpids("web"), ["g1"]);
    p[0].store
        .event(1, H, 2, EventKind::Exit, ep("web", "g1"), None, 0);
    assert_eq!(ack(reply(&mut p, 0, 1)), 2);
    assert!(p[0].gpids("web").is_empty());
    // The exit of a process etcd no longer lists deletes nothing: no change.
    p[0].store
        .event(1, H, 3, EventKind::Exit, ep("web", "g1"), None, 0);
    assert_eq!(ack(reply(&mut p, 0, 1)), 3);
    start_on(&mut p, 0, 1, H, 4, "web", "g2");
    // Publisher 1 writes after all that; when publisher 0 has it, its watch
    // has brought back its own four revisions, each reported only once.
    p[1].store.hello(2, host2(), 0);
    assert_eq!(welcome(reply(&mut p, 1, 2)), 0);
    start_on(&mut p, 1, 2, H2, 1, "db", "d1");
    wait_for_gpid(&mut p, "db", "d1");
    let seen = [
        (ChangeKind::Up, Reason::Start, "g1".into(), None),
        (ChangeKind::Down, Reason::Exit, "g1".into(), None),
        (ChangeKind::Up, Reason::Start, "g2".into(), None),
        (ChangeKind::Up, Reason::Start, "d1".into(), None),
    ];
    for x in &mut p {
        assert_eq!(x.take_changes(), seen);
    }
    assert_eq!(p[0].counters(), Some((4, 4, 0, 0)));
}

#[test]
fn publishers_writing_at_once_report_every_change_once_in_one_order() {
    let Some(etcd) = Etcd::start("etcd-order", None) else {
        return;
    };
    let mut p = [
        Pub::new(&etcd, "/zn", 10_000),
        Pub::new(&etcd, "/zn", 10_000),
    ];
    p[0].store.hello(1, host(), 0);
    assert_eq!(welcome(reply(&mut p, 0, 1)), 0);
    p[1].store.hello(2, host2(), 0);
    assert_eq!(welcome(reply(&mut p, 1, 2)), 0);
    // Each publisher writes for its own host, without waiting for acks, so
    // their transactions interleave in etcd.
    const N: u64 = 40;
    for seq in 1..=N {
        let (kind, g) = if seq % 2 == 1 {
            (EventKind::Start, seq)
        } else {
            (EventKind::Exit, seq - 1)
        };
        p[0].store
            .event(1, H, seq, kind, ep("a", &format!("a{g}")), None, 0);
        p[1].store
            .event(2, H2, seq, kind, ep("b", &format!("b{g}")), None, 0);
    }
    for (i, conn) in [(0, 1), (1, 2)] {
        let mut acked = 0;
        while acked < N {
            acked = ack(reply(&mut p, i, conn));
        }
    }
    // A last write each, one after the other: when both publishers list
    // both, each watch has brought back every revision before them.
    start_on(&mut p, 0, 1, H, N + 1, "a", "a-end");
    start_on(&mut p, 1, 2, H2, N + 1, "b", "b-end");
    wait_for_gpid(&mut p, "a", "a-end");
    wait_for_gpid(&mut p, "b", "b-end");
    let a = p[0].take_changes();
    let b = p[1].take_changes();
    assert_eq!(a.len(), usize::try_from(2 * N + 2).unwrap(), "{a:?}");
    assert_eq!(a, b, "the two publishers reported in different orders");
}

#[test]
fn a_burst_of_events_is_applied_in_order_and_reported_once() {
    let Some(etcd) = Etcd::start("etcd-burst", None) else {
        return;
    };
    let mut p = [
        Pub::new(&etcd, "/zb", 10_000),
        Pub::new(&etcd, "/zb", 10_000),
    ];
    p[0].store.hello(1, host(), 0);
    assert_eq!(welcome(reply(&mut p, 0, 1)), 0);
    // Queued all at once, as a host's start or a mass crash sends them:
    // they share transactions, but each is applied and reported once, in
    // order, with its own reason and exit.
    const N: u64 = 150;
    let killed = ExitInfo {
        code: None,
        signal: Some("SIGKILL".into()),
    };
    let failed = ExitInfo {
        code: Some(1),
        signal: None,
    };
    let exit_of = |i: u64| {
        if i.is_multiple_of(3) {
            failed.clone()
        } else {
            killed.clone()
        }
    };
    for i in 1..=N {
        p[0].store.event(
            1,
            H,
            i,
            EventKind::Start,
            ep("web", &format!("g{i}")),
            None,
            0,
        );
    }
    // A resend of one already queued is a duplicate, not a second start.
    p[0].store
        .event(1, H, 2, EventKind::Start, ep("web", "g2"), None, 0);
    for i in 1..=N {
        p[0].store.event(
            1,
            H,
            N + i,
            EventKind::Exit,
            ep("web", &format!("g{i}")),
            Some(exit_of(i)),
            0,
        );
    }
    let mut acked = 0;
    while acked < 2 * N {
        acked = ack(reply(&mut p, 0, 1));
    }
    start_on(&mut p, 0, 1, H, 2 * N + 1, "web", "end");
    // Publisher 1 sees them through its watch only.
    wait_for_gpid(&mut p, "web", "end");
    let mut want: Vec<(ChangeKind, Reason, String, Option<ExitInfo>)> = (1..=N)
        .map(|i| (ChangeKind::Up, Reason::Start, format!("g{i}"), None))
        .collect();
    want.extend((1..=N).map(|i| {
        (
            ChangeKind::Down,
            Reason::Exit,
            format!("g{i}"),
            Some(exit_of(i)),
        )
    }));
    want.push((ChangeKind::Up, Reason::Start, "end".into(), None));
    for x in &mut p {
        assert_eq!(x.take_changes(), want);
        assert_eq!(x.counters(), Some((2 * N + 1, 2 * N + 1, 1, 0)));
    }
}
