//! Fault injection (issue 20), naming: the publisher killed and restarted
//! every 250 ms during a crash loop of 1,000 exits, and a link cut with
//! `ip link set down` in network namespaces. Every start and exit must
//! arrive exactly once: counted by GPID in the publisher's journal
//! (`zurg history --publisher`) against zurg's own.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::process::Command;
use std::time::{Duration, Instant};

use common::naming::{forwarder_state, free_port, publisher_history, Net, Publisher};
use common::{eventually, history, status_of, Mode, TempDir};

/// A crash loop of `exits` exits (exit 1, then exit 0 at the last, so
/// `on-failure` ends it), counted in a file so the test can follow it.
fn crash_loop_unit(dir: &TempDir, exits: usize) -> String {
    let counter = dir.path().join("count");
    format!(
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"n=0; [ -f {c} ] && read n < {c}; n=$((n+1)); echo $n > {c}; [ $n -lt {exits} ] || exit 0; exit 1\"]\nrestart = \"on-failure\"\nport = 8080\nbackoff = {{ initial_ms = 1, max_ms = 1 }}\n",
        c = counter.display()
    )
}

fn exits_so_far(dir: &TempDir) -> usize {
    std::fs::read_to_string(dir.path().join("count"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Starts and exits of `service` in the publisher's journal, per GPID.
fn publisher_counts(ns: Option<&str>, addr: &str, service: &str) -> BTreeMap<String, (u32, u32)> {
    let mut counts: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for r in publisher_history(ns, addr, &[service]) {
        let e = counts
            .entry(r["gpid"].as_str().unwrap().to_string())
            .or_default();
        match r["kind"].as_str().unwrap() {
            "start" => e.0 += 1,
            "exit" => e.1 += 1,
            _ => {}
        }
    }
    counts
}

/// Every one of the `exits` processes of `service` has exactly one start
/// and one exit at the publisher, the same GPIDs as in zurg's own journal.
fn assert_exactly_once(dir: &TempDir, ns: Option<&str>, addr: &str, service: &str, exits: usize) {
    let at_publisher = publisher_counts(ns, addr, service);
    let bad: Vec<_> = at_publisher.iter().filter(|(_, c)| **c != (1, 1)).collect();
    assert!(bad.is_empty(), "not exactly once: {bad:?}");
    assert_eq!(at_publisher.len(), exits);
    let local: BTreeSet<String> = history(dir, service)
        .iter()
        .map(|r| r["gpid"].as_str().unwrap().to_string())
        .collect();
    let published: BTreeSet<String> = at_publisher.into_keys().collect();
    assert_eq!(local, published);
}

#[test]
fn a_publisher_killed_every_few_hundred_ms_gets_each_of_1000_exits_once() {
    const EXITS: usize = 1000;
    let dir = TempDir::new("pub-kills");
    dir.write("units/crash.toml", &crash_loop_unit(&dir, EXITS));
    let journal = TempDir::new("pub-kills-journal");
    let jdir = journal.path().to_str().unwrap().to_string();
    let addr = format!("127.0.0.1:{}", free_port());
    let args = ["--journal", jdir.as_str(), "--lease-ms", "5000"];
    let mut p = Publisher::start_at(None, &addr, &args);
    let mut z = common::run_in(
        &dir,
        Mode::Pid1,
        &["--publish", &addr, "--host-ip", "127.0.0.1"],
    );
    z.expect("[crash] started pid");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut kills = 0;
    while exits_so_far(&dir) < EXITS {
        assert!(Instant::now() < deadline, "{} exits", exits_so_far(&dir));
        // The fault's rhythm, not a wait for anything.
        std::thread::sleep(Duration::from_millis(250));
        p.kill();
        kills += 1;
        p = Publisher::start_at(None, &addr, &args);
    }
    assert!(kills >= 3, "the loop outran the faults: {kills} kills");
    eventually("the crash loop's end", || {
        status_of(&dir, "crash")["state"] == "exited"
    });
    let fwd = forwarder_state(&dir, |s| s["connected"] == true && s["acked"] == s["seq"]);
    assert_eq!(fwd["dropped"], 0, "{fwd}");
    assert_exactly_once(&dir, None, &addr, "crash", EXITS);
    drop(p);
}

#[test]
fn a_link_cut_during_a_crash_loop_loses_and_repeats_no_event() {
    const EXITS: usize = 600;
    let net = Net::new(1);
    let hub = Some(net.hub.as_str());
    let addr = format!("{}:7301", net.hub_ip());
    let journal = TempDir::new("cut-journal");
    let jdir = journal.path().to_str().unwrap().to_string();
    let _p = Publisher::start_at(hub, &addr, &["--journal", &jdir, "--lease-ms", "1000"]);
    let dir = TempDir::new("cut");
    dir.write("units/crash.toml", &crash_loop_unit(&dir, EXITS));
    let mut z = common::run_in(
        &dir,
        Mode::Pid1In(net.hosts[0].clone()),
        &["--publish", &addr],
    );
    z.expect("[crash] started pid");
    forwarder_state(&dir, |s| s["connected"] == true);
    eventually("50 exits", || exits_so_far(&dir) >= 50);
    // Cut at the hub's end of the cable: packets vanish, no error anywhere.
    let link = |state: &str| {
        let out = Command::new("ip")
            .args(["-n", &net.hub, "link", "set", "v1", state])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    link("down");
    // Down long enough for the forwarder to notice the silence (a lease).
    forwarder_state(&dir, |s| s["connected"] == false);
    let noticed = exits_so_far(&dir);
    assert!(
        noticed < EXITS,
        "the crash loop ended before the cut was noticed"
    );
    // The crash loop goes on meanwhile.
    eventually("exits while cut", || exits_so_far(&dir) >= noticed + 20);
    link("up");
    eventually("the crash loop's end", || {
        status_of(&dir, "crash")["state"] == "exited"
    });
    let fwd = forwarder_state(&dir, |s| s["connected"] == true && s["acked"] == s["seq"]);
    assert_eq!(fwd["dropped"], 0, "{fwd}");
    assert_exactly_once(&dir, hub, &addr, "crash", EXITS);
}
