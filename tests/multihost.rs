//! Naming across hosts: three network namespaces joined by a bridge, each
//! with its own `zurg run` as PID 1, publishing to one publisher in the hub.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::BTreeSet;

use common::naming::*;
use common::*;
use serde_json::Value;

struct Host {
    dir: TempDir,
    z: Zurg,
}

fn start_host(net: &Net, i: usize, publish: &str, services: &[&str]) -> Host {
    let dir = TempDir::new(&format!("mh{i}"));
    for s in services {
        dir.write(
            &format!("units/{s}.toml"),
            "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nport = 8080\n",
        );
    }
    // No --host-ip: zurg finds its address from the default route.
    let z = run_in(
        &dir,
        Mode::Pid1In(net.hosts[i].clone()),
        &["--publish", publish],
    );
    Host { dir, z }
}

fn ips(eps: &Value) -> BTreeSet<String> {
    eps.as_array()
        .unwrap()
        .iter()
        .map(|e| e["ip"].as_str().unwrap().to_string())
        .collect()
}

/// Host `i`'s record in a `resolve --all --json` listing.
fn host_in(all: &Value, net: &Net, i: usize) -> Value {
    all["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .find(|x| x["ip"] == net.host_ip(i).as_str())
        .unwrap_or_else(|| panic!("host {i} missing: {all}"))
        .clone()
}

/// The GPIDs of host `i`'s `web` endpoints in a listing.
fn web_on(all: &Value, net: &Net, i: usize) -> Vec<String> {
    all["services"]["web"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["ip"] == net.host_ip(i).as_str())
        .map(|e| e["gpid"].as_str().unwrap().to_string())
        .collect()
}

fn settled(h: &Host) -> Value {
    forwarder_state(&h.dir, |s| s["connected"] == true && s["acked"] == s["seq"])
}

#[test]
fn three_hosts_one_publisher() {
    let net = Net::new(3);
    let hub = Some(net.hub.as_str());
    let addr = format!("{}:7300", net.hub_ip());
    let mut p = Publisher::start_at(hub, &addr, &["--lease-ms", "1500"]);
    let mut hosts: Vec<Host> = (0..3)
        .map(|i| {
            let services: &[&str] = if i == 2 { &["web", "db"] } else { &["web"] };
            start_host(&net, i, &addr, services)
        })
        .collect();
    for h in &hosts {
        settled(h);
    }
    let all = resolve(hub, &addr, &["--all"]);
    assert_eq!(all["hosts"].as_array().unwrap().len(), 3, "{all}");
    let want: BTreeSet<String> = (0..3).map(|i| net.host_ip(i)).collect();
    assert_eq!(ips(&all["services"]["web"]), want, "{all}");
    assert_eq!(
        ips(&all["services"]["db"]),
        [net.host_ip(2)].into(),
        "{all}"
    );

    // A service dies on host 2: the watch shows the exit, then the restart
    // with its new GPID, on that host's address.
    let w = Watcher::start(hub, &addr, &["web"]);
    w.until("the listing", |v| v["t"] == "synced");
    let old = gpid_of(&hosts[1].dir, "web");
    cli(&hosts[1].dir, &["signal", "web", "KILL"]);
    let down = w.until("web down on host 2", |v| is_change(v, "down", "web"));
    assert_eq!(down["endpoint"]["gpid"], old.as_str());
    assert_eq!(down["endpoint"]["ip"], net.host_ip(1).as_str());
    assert_eq!(down["exit"]["signal"], "SIGKILL");
    let up = w.until("web up on host 2", |v| is_change(v, "up", "web"));
    assert_eq!(up["endpoint"]["ip"], net.host_ip(1).as_str());
    assert_eq!(
        up["endpoint"]["gpid"],
        gpid_of(&hosts[1].dir, "web").as_str()
    );
    assert_ne!(up["endpoint"]["gpid"], old.as_str());

    // The publisher restarts mid-stream: every host keeps its events, and
    // the new publisher gets each missing sequence number exactly once.
    let acked: Vec<u64> = hosts
        .iter()
        .map(|h| settled(h)["seq"].as_u64().unwrap())
        .collect();
    p.kill();
    for h in &hosts {
        assert!(cli(&h.dir, &["restart", "web"]).status.success());
    }
    assert!(cli(&hosts[2].dir, &["stop", "db"]).status.success());
    let _p2 = Publisher::start_at(hub, &addr, &["--lease-ms", "1500"]);
    let all = {
        let seqs: Vec<u64> = hosts
            .iter()
            .map(|h| settled(h)["seq"].as_u64().unwrap())
            .collect();
        let all = resolve(hub, &addr, &["--all"]);
        for (i, h) in hosts.iter().enumerate() {
            let me = host_in(&all, &net, i);
            assert_eq!(me["seq"], seqs[i], "host {i}: {me}");
            assert_eq!(me["applied"], seqs[i] - acked[i], "host {i}: {me}");
            assert_eq!(me["gaps"], 0, "host {i}: {me}");
            assert_eq!(me["duplicates"], 0, "host {i}: {me}");
            assert_eq!(
                web_on(&all, &net, i),
                [gpid_of(&h.dir, "web")],
                "host {i}: {all}"
            );
        }
        all
    };
    assert!(all["services"].get("db").is_none(), "{all}");

    // Host 3 dies whole (SIGKILL of its init): its endpoints vanish once
    // its lease runs out; the others stay.
    let w = Watcher::start(hub, &addr, &["web"]);
    w.until("the listing", |v| v["t"] == "synced");
    let dead = hosts.pop().unwrap();
    let gone = gpid_of(&dead.dir, "web");
    let mut dead_z = dead.z;
    kill(dead_z.child.id() as i32, 9);
    let _ = dead_z.child.wait();
    let down = w.until("host 3's web down", |v| {
        is_change(v, "down", "web") && v["endpoint"]["gpid"] == gone.as_str()
    });
    assert_eq!(down["reason"], "lease");
    assert_eq!(down["endpoint"]["ip"], net.host_ip(2).as_str());
    let all = resolve(hub, &addr, &["--all"]);
    assert_eq!(all["hosts"].as_array().unwrap().len(), 2, "{all}");
    assert_eq!(
        ips(&all["services"]["web"]),
        [net.host_ip(0), net.host_ip(1)].into(),
        "{all}"
    );
    drop(hosts);
}

/// The same three hosts, two publishers sharing one etcd: a watch on one
/// publisher sees what the hosts tell the other, and when that one dies the
/// hosts move over without any event applied twice or skipped.
#[cfg(feature = "etcd")]
#[test]
fn three_hosts_two_publishers_on_etcd() {
    use common::etcd::Etcd;
    let net = Net::new(3);
    let hub = Some(net.hub.as_str());
    let Some(etcd) = Etcd::start("mh-etcd", hub) else {
        return;
    };
    let (a1, a2) = (
        format!("{}:7300", net.hub_ip()),
        format!("{}:7301", net.hub_ip()),
    );
    let args = ["--etcd", etcd.url.as_str(), "--lease-ms", "1500"];
    let mut p1 = Publisher::start_at(hub, &a1, &args);
    let p2 = Publisher::start_at(hub, &a2, &args);
    let both = format!("{a1},{a2}");
    let mut hosts: Vec<Host> = (0..3)
        .map(|i| start_host(&net, i, &both, &["web"]))
        .collect();
    for h in &hosts {
        settled(h);
    }
    let w = Watcher::start(hub, &a2, &["web"]);
    let listing = w.until("the listing", |v| v["t"] == "endpoints");
    let want: BTreeSet<String> = (0..3).map(|i| net.host_ip(i)).collect();
    assert_eq!(ips(&listing["endpoints"]), want, "{listing}");

    // Host 2's web dies; the hosts talk to publisher 1, the watch is on 2.
    let old = gpid_of(&hosts[1].dir, "web");
    cli(&hosts[1].dir, &["signal", "web", "KILL"]);
    let down = w.until("web down on host 2", |v| is_change(v, "down", "web"));
    assert_eq!(down["endpoint"]["gpid"], old.as_str());
    assert_eq!(down["reason"], "exit");
    assert_eq!(down["exit"]["signal"], "SIGKILL");
    let up = w.until("web up on host 2", |v| is_change(v, "up", "web"));
    assert_eq!(
        up["endpoint"]["gpid"],
        gpid_of(&hosts[1].dir, "web").as_str()
    );

    // Publisher 1 dies mid-stream; the hosts fail over to publisher 2.
    p1.kill();
    for h in &hosts {
        assert!(cli(&h.dir, &["restart", "web"]).status.success());
    }
    let seqs: Vec<u64> = hosts
        .iter()
        .map(|h| settled(h)["seq"].as_u64().unwrap())
        .collect();
    let all = resolve(hub, &a2, &["--all"]);
    for (i, h) in hosts.iter().enumerate() {
        let me = host_in(&all, &net, i);
        // etcd kept the count across publishers: every event once.
        assert_eq!(me["seq"], seqs[i], "host {i}: {me}");
        assert_eq!(me["applied"], seqs[i], "host {i}: {me}");
        assert_eq!(me["gaps"], 0, "host {i}: {me}");
        assert_eq!(
            web_on(&all, &net, i),
            [gpid_of(&h.dir, "web")],
            "host {i}: {all}"
        );
    }

    // Host 3 dies whole: etcd expires its lease and every publisher's
    // watchers hear of it.
    let dead = hosts.pop().unwrap();
    let gone = gpid_of(&dead.dir, "web");
    let mut dead_z = dead.z;
    kill(dead_z.child.id() as i32, 9);
    let _ = dead_z.child.wait();
    let down = w.until("host 3's web down", |v| {
        is_change(v, "down", "web") && v["endpoint"]["gpid"] == gone.as_str()
    });
    assert_eq!(down["reason"], "lease", "{down}");
    drop(p2);
    drop(etcd);
}
