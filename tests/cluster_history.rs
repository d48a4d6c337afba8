//! The publisher's journal (`zurg publisher --journal`): every host's
//! starts and exits, kept across a publisher restart, and asked with
//! `zurg history --publisher` from anywhere.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::naming::*;
use common::*;
use serde_json::Value;

fn history_at(ns: Option<&str>, addr: &str, args: &[&str]) -> std::process::Output {
    command_in(ns, BIN)
        .arg("history")
        .args(args)
        .args(["--publisher", addr])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn history_from_the_publisher_shows_every_hosts_exits_after_a_restart() {
    let net = Net::new(2);
    let hub = Some(net.hub.as_str());
    let addr = format!("{}:7300", net.hub_ip());
    let journal = TempDir::new("pub-journal");
    let jdir = journal.path().to_str().unwrap().to_string();
    let mut p = Publisher::start_at(hub, &addr, &["--journal", &jdir]);
    let hosts: Vec<(TempDir, Zurg)> = (0..2)
        .map(|i| {
            let dir = TempDir::new(&format!("ch{i}"));
            dir.write(
                "units/api.toml",
                "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nport = 8080\n",
            );
            let z = run_in(
                &dir,
                Mode::Pid1In(net.hosts[i].clone()),
                &["--publish", &addr],
            );
            (dir, z)
        })
        .collect();
    let w = Watcher::start(hub, &addr, &["api"]);
    w.until("the listing", |v| v["t"] == "synced");
    let mut killed = Vec::new();
    for (dir, _) in &hosts {
        forwarder_state(dir, |s| s["connected"] == true);
        let gpid = gpid_of(dir, "api");
        assert!(cli(dir, &["signal", "api", "KILL"]).status.success());
        w.until("the exit", |v| {
            is_change(v, "down", "api") && v["endpoint"]["gpid"] == gpid.as_str()
        });
        killed.push(gpid);
    }
    for (dir, _) in &hosts {
        forwarder_state(dir, |s| s["connected"] == true && s["acked"] == s["seq"]);
    }
    drop(w);

    // The publisher dies and comes back on the same journal.
    p.kill();
    let _p2 = Publisher::start_at(hub, &addr, &["--journal", &jdir]);
    for (dir, _) in &hosts {
        forwarder_state(dir, |s| s["connected"] == true && s["acked"] == s["seq"]);
    }
    let all = publisher_history(hub, &addr, &["api"]);
    for (i, gpid) in killed.iter().enumerate() {
        let exits: Vec<&Value> = all
            .iter()
            .filter(|r| r["kind"] == "exit" && r["gpid"] == gpid.as_str())
            .collect();
        assert_eq!(exits.len(), 1, "host {i}'s exit once: {all:?}");
        let r = exits[0];
        assert_eq!(r["exit"]["signal"], "SIGKILL", "{r}");
        assert!(
            r["zurg"].as_str().unwrap().starts_with(&net.host_ip(i)),
            "{r}"
        );
        assert!(r["seq"].as_u64().unwrap() > 0, "{r}");
    }
    // Two starts and one exit per host, and nothing twice.
    assert_eq!(
        all.iter().filter(|r| r["kind"] == "start").count(),
        4,
        "{all:?}"
    );
    assert_eq!(
        all.iter().filter(|r| r["kind"] == "exit").count(),
        2,
        "{all:?}"
    );

    // One host, by its address; a window of time; plain text.
    let second = publisher_history(hub, &addr, &["--host", &net.host_ip(1)]);
    assert_eq!(second.len(), 3, "{second:?}");
    assert!(second
        .iter()
        .all(|r| r["zurg"].as_str().unwrap().starts_with(&net.host_ip(1))));
    assert_eq!(
        publisher_history(hub, &addr, &["api", "--since", "1h"]).len(),
        6
    );
    let text = history_at(hub, &addr, &["api"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines()
            .any(|l| l.contains(&net.host_ip(0)) && l.contains("exit (SIGKILL)")),
        "{text}"
    );
}

#[test]
fn a_publisher_without_a_journal_says_how_to_keep_one() {
    let p = Publisher::start(None, &[]);
    let out = history_at(None, &p.addr, &[]);
    // Reached and refused: the request failed (1), which is not the
    // unreachable publisher's 3.
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("--journal DIR"), "{err}");
    // --host without --publisher is a usage error.
    let out = std::process::Command::new(BIN)
        .args(["history", "--host", "10.0.0.1"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    // So is a token file that cannot be read (it was 3, "cannot be
    // reached", for a publisher that was never tried), and the message
    // names the option, as resolve's and the remote verbs' do.
    let out = history_at(None, &p.addr, &["--token-file", "/nonexistent/token"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("zurg history: --token-file /nonexistent/token: No such file"),
        "{err}"
    );
}

#[test]
fn publisher_history_of_a_unit_with_instances_shows_each_and_says_when_a_name_is_unknown() {
    let net = Net::new(1);
    let hub = Some(net.hub.as_str());
    let addr = format!("{}:7301", net.hub_ip());
    let journal = TempDir::new("pub-journal-inst");
    let jdir = journal.path().to_str().unwrap().to_string();
    let _p = Publisher::start_at(hub, &addr, &["--journal", &jdir]);
    let dir = TempDir::new("ch-inst");
    dir.write(
        "units/web.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nport = \"auto\"\ninstances = 3\nrestart = \"never\"\n",
    );
    dir.write(
        "units/webby.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    let mut z = run_in(
        &dir,
        Mode::Pid1In(net.hosts[0].clone()),
        &["--publish", &addr],
    );
    for i in 0..3 {
        z.expect(&format!("[web@{i}] started pid"));
    }
    assert!(cli(&dir, &["signal", "web@1", "KILL"]).status.success());
    z.expect("[web@1] ended with");
    forwarder_state(&dir, |s| s["connected"] == true && s["acked"] == s["seq"]);

    let services = |args: &[&str]| -> Vec<(String, String)> {
        let mut got: Vec<(String, String)> = publisher_history(hub, &addr, args)
            .iter()
            .map(|r| {
                (
                    r["service"].as_str().unwrap().to_string(),
                    r["kind"].as_str().unwrap().to_string(),
                )
            })
            .collect();
        got.sort_unstable();
        got
    };
    let pair = |s: &str, k: &str| (s.to_string(), k.to_string());
    assert_eq!(
        services(&["web"]),
        [
            pair("web@0", "start"),
            pair("web@1", "exit"),
            pair("web@1", "start"),
            pair("web@2", "start")
        ],
        "each instance, not webby"
    );
    assert_eq!(
        services(&["web@1"]),
        [pair("web@1", "exit"), pair("web@1", "start")]
    );
    assert_eq!(services(&["web", "--host", &net.host_ip(0)]).len(), 4);
    let text = history_at(hub, &addr, &["web"]);
    let text = String::from_utf8_lossy(&text.stdout);
    assert!(
        text.lines().any(|l| l.contains(" web@1 exit (SIGKILL) ")),
        "{text}"
    );

    // No record of the name: said, exit 1, as `zurg history NAME` says it.
    let out = history_at(hub, &addr, &["nosuch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no record of `nosuch`"), "{err}");
    let out = history_at(hub, &addr, &["web", "--host", "10.9.9.9"]);
    assert_eq!(out.status.code(), Some(1), "{}", common::text(&out));
    // Records, but none since: an empty answer, not an unknown name.
    let out = history_at(hub, &addr, &["web", "--since", "0s"]);
    assert_eq!(out.status.code(), Some(0), "{}", common::text(&out));
    assert!(out.stdout.is_empty());
}
