//! Naming on one host (loopback): `zurg run --publish` feeds a
//! `zurg publisher`, and `zurg resolve --watch` sees every change.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::*;
use serde_json::Value;

use common::naming::read_frame as next_frame;
use common::naming::*;

fn units(dir: &TempDir, names: &[&str]) {
    for n in names {
        dir.write(
            &format!("units/{n}.toml"),
            "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nport = 8080\n",
        );
    }
}

fn run_publishing(dir: &TempDir, addr: &str, extra: &[&str]) -> Zurg {
    let mut args = vec!["--publish", addr, "--host-ip", "127.0.0.1"];
    args.extend_from_slice(extra);
    run_in(dir, Mode::Pid1, &args)
}

#[test]
fn watch_sees_an_exit_and_the_restart_with_a_new_gpid() {
    let dir = TempDir::new("pub-watch");
    units(&dir, &["web"]);
    let p = Publisher::start(None, &["--lease-ms", "3000"]);
    let mut z = run_publishing(&dir, &p.addr, &[]);
    z.expect("[web] started pid");
    let w = Watcher::start(None, &p.addr, &["web"]);
    // Listed at once if the forwarder got there first, else announced.
    let seen = w.until("web listed or up", |v| {
        (v["t"] == "endpoints" && !v["endpoints"].as_array().unwrap().is_empty())
            || is_change(v, "up", "web")
    });
    let ep = if seen["t"] == "endpoints" {
        seen["endpoints"][0].clone()
    } else {
        seen["endpoint"].clone()
    };
    let first = ep["gpid"].as_str().unwrap().to_string();
    assert_eq!(ep["port"], 8080);
    assert_eq!(ep["ip"], "127.0.0.1");

    cli(&dir, &["signal", "web", "KILL"]);
    let down = w.until("web down", |v| is_change(v, "down", "web"));
    assert_eq!(down["endpoint"]["gpid"], first.as_str());
    assert_eq!(down["reason"], "exit");
    assert_eq!(down["exit"]["signal"], "SIGKILL");
    let again = w.until("web up again", |v| is_change(v, "up", "web"));
    let second = again["endpoint"]["gpid"].as_str().unwrap();
    assert_ne!(second, first, "a restart has a new GPID");
    assert_eq!(again["reason"], "start");

    let listed = resolve(None, &p.addr, &["web"]);
    let eps = listed["endpoints"].as_array().unwrap();
    assert_eq!(eps.len(), 1, "{listed}");
    assert_eq!(eps[0]["gpid"], second);
    // zurg's own view agrees.
    let status: Value =
        serde_json::from_slice(&cli(&dir, &["status", "web", "--json"]).stdout).unwrap();
    assert_eq!(status["result"][0]["gpid"], second);
}

#[test]
fn a_restarted_publisher_gets_every_missed_event_once_and_the_exact_live_set() {
    let dir = TempDir::new("pub-restart");
    units(&dir, &["a", "b"]);
    let mut p = Publisher::start(None, &["--lease-ms", "5000"]);
    let mut z = run_publishing(&dir, &p.addr, &[]);
    z.expect("[a] started pid");
    z.expect("[b] started pid");
    let before = forwarder_state(&dir, |s| s["connected"] == true && s["acked"] == s["seq"]);
    let seq_before = before["seq"].as_u64().unwrap();

    // The publisher dies; events keep happening meanwhile.
    p.kill();
    for _ in 0..5 {
        assert!(cli(&dir, &["restart", "a"]).status.success());
    }
    assert!(cli(&dir, &["stop", "b"]).status.success());
    let addr = p.addr.clone();
    let p2 = Publisher::start_at(None, &addr, &["--lease-ms", "5000"]);
    let after = forwarder_state(&dir, |s| s["connected"] == true && s["acked"] == s["seq"]);
    let seq = after["seq"].as_u64().unwrap();
    // 5 restarts (exit + start each) and one stop.
    assert_eq!(seq - seq_before, 11, "{after}");
    assert_eq!(after["queued"], 0);
    assert_eq!(after["dropped"], 0);

    let all = resolve(None, &p2.addr, &["--all"]);
    let hosts = all["hosts"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "{all}");
    let h = &hosts[0];
    // Every sequence number the new publisher was missing arrived, once.
    assert_eq!(h["seq"], seq, "{h}");
    assert_eq!(h["applied"], seq - seq_before, "{h}");
    assert_eq!(h["duplicates"], 0, "{h}");
    assert_eq!(h["gaps"], 0, "{h}");
    // ... and the registry holds exactly what runs.
    let status: Value =
        serde_json::from_slice(&cli(&dir, &["status", "a", "--json"]).stdout).unwrap();
    let a_gpid = status["result"][0]["gpid"].as_str().unwrap();
    let a = all["services"]["a"].as_array().unwrap();
    assert_eq!(a.len(), 1, "{all}");
    assert_eq!(a[0]["gpid"], a_gpid);
    assert!(all["services"].get("b").is_none(), "{all}");
    drop(p2);
}

#[test]
fn a_killed_host_vanishes_after_its_lease_and_a_clean_one_at_once() {
    let p = Publisher::start(None, &["--lease-ms", "1000"]);
    let w = Watcher::start(None, &p.addr, &["--all"]);
    w.until("the listing", |v| v["t"] == "synced");

    let dir = TempDir::new("pub-lease");
    units(&dir, &["web"]);
    let mut z = run_publishing(&dir, &p.addr, &[]);
    w.until("web up", |v| is_change(v, "up", "web"));
    // SIGKILL of the whole namespace: zurg gets no chance to say bye.
    let t0 = Instant::now();
    kill(z.child.id() as i32, 9);
    let _ = z.child.wait();
    let down = w.until("web down by lease", |v| is_change(v, "down", "web"));
    let took = t0.elapsed();
    assert_eq!(down["reason"], "lease", "{down}");
    assert!(took >= Duration::from_millis(900), "expired after {took:?}");
    assert!(resolve(None, &p.addr, &["--all"])["hosts"]
        .as_array()
        .unwrap()
        .is_empty());

    let dir2 = TempDir::new("pub-bye");
    units(&dir2, &["db"]);
    let mut z2 = run_publishing(&dir2, &p.addr, &[]);
    w.until("db up", |v| is_change(v, "up", "db"));
    z2.signal(15);
    z2.wait_exit();
    let down = w.until("db down", |v| is_change(v, "down", "db"));
    assert_eq!(down["reason"], "exit", "{down}");
    assert_eq!(down["exit"]["signal"], "SIGTERM");
    eventually("the host to be gone at once", || {
        resolve(None, &p.addr, &["--all"])["hosts"]
            .as_array()
            .unwrap()
            .is_empty()
    });
}

#[test]
fn an_answer_owed_to_a_closed_connection_never_reaches_the_next_one() {
    // A forwarder's last event is acknowledged a few ms late; if it says
    // bye first, that ack must die with its connection, not be handed to
    // whoever connects next.
    let p = Publisher::start(None, &[]);
    let mut fwd = TcpStream::connect(&p.addr).unwrap();
    fwd.write_all(&frame(
        r#"{"t":"hello","proto":1,"role":"forwarder","host":"127.0.0.1","zurg":"127.0.0.1:0:1:1","boot":"b","hostname":"h","nonce":"00","instance":"00112233445566778899aabbccddeeff"}"#,
    ))
    .unwrap();
    let welcome = next_frame(&mut fwd, DEADLINE).expect("a welcome");
    assert_eq!(welcome["t"], "welcome", "{welcome}");
    let mut last_words = frame(
        r#"{"t":"event","seq":1,"kind":"start","time_us":1,"endpoint":{"service":"web","ip":"127.0.0.1","port":80,"gpid":"127.0.0.1:80:1:9","since_us":1,"host":""},"pid":9}"#,
    );
    last_words.extend(frame(r#"{"t":"bye"}"#));
    fwd.write_all(&last_words).unwrap();
    // The publisher closes the connection after the bye.
    let rest = until_closed(fwd);
    assert!(
        !rest.contains("\"ack\""),
        "no ack before the close: {rest:?}"
    );

    let mut client = TcpStream::connect(&p.addr).unwrap();
    client
        .write_all(&frame(
            r#"{"t":"hello","proto":1,"role":"client","nonce":"00"}"#,
        ))
        .unwrap();
    let welcome = next_frame(&mut client, DEADLINE).expect("a welcome");
    assert_eq!(welcome["t"], "welcome", "{welcome}");
    // 60 times the ack delay: long enough for the stray ack to show.
    let stray = next_frame(&mut client, Duration::from_millis(300));
    assert!(stray.is_none(), "the client got {stray:?}");
    client
        .write_all(&frame(r#"{"t":"resolve","name":"web","watch":false}"#))
        .unwrap();
    let listing = next_frame(&mut client, DEADLINE).expect("the listing");
    assert_eq!(listing["t"], "endpoints", "{listing}");
    assert_eq!(
        listing["endpoints"].as_array().unwrap().len(),
        0,
        "bye took web away: {listing}"
    );
}

/// A listener that takes the connection and never says a word (a stopped
/// publisher, or something else on its port): the client gives up at its
/// `--timeout` and names the publisher and how long it waited.
#[test]
fn a_publisher_that_never_answers_is_named_with_the_time_waited() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = silent.local_addr().unwrap().to_string();
    let out = resolve_plain(None, &addr, &["web", "--timeout", "300ms"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!(
            "the publisher at {addr} did not answer within 0.3s (it took the connection and said nothing"
        )),
        "{err}"
    );
    drop(silent);
}

/// A name with control characters (from a script, a paste) comes back in
/// the message escaped, as every other verb shows it, not acted on.
#[test]
fn resolve_shows_an_unknown_name_escaped() {
    let p = Publisher::start(None, &[]);
    let out = resolve_raw(None, &p.addr, &["x\u{1b}[2J\u{1b}]0;owned\u{7}y"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains("x\\x1b[2J\\x1b]0;owned\\x07y: no live endpoints"),
        "{err}"
    );
    assert!(!out.stderr.contains(&0x1b), "{err:?}");
}

/// A name with no live endpoint: the message alone on stderr, no table
/// header over no rows on stdout; `--json` still prints its document.
#[test]
fn resolve_of_a_name_with_no_endpoint_prints_only_the_message() {
    let p = Publisher::start(None, &[]);
    let out = resolve_plain(None, &p.addr, &["nothing-here"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(err, "zurg resolve: nothing-here: no live endpoints\n");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "");
    let doc = resolve(None, &p.addr, &["nothing-here"]);
    assert_eq!(doc["name"], "nothing-here");
    assert_eq!(doc["endpoints"], serde_json::json!([]));
}

/// `--all` with nothing live: the one message on stderr, neither table's
/// header on stdout; `--json` still prints its document.
#[test]
fn resolve_all_with_nothing_live_prints_only_the_message() {
    let p = Publisher::start(None, &[]);
    let out = resolve_plain(None, &p.addr, &["--all"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert_eq!(String::from_utf8_lossy(&out.stdout), "", "{err}");
    assert_eq!(
        err,
        "zurg resolve: no live endpoints: no host has published any\n"
    );
    let doc = resolve(None, &p.addr, &["--all"]);
    assert_eq!(doc["hosts"], serde_json::json!([]));
    assert_eq!(doc["services"], serde_json::json!({}));
}

#[test]
fn garbage_and_oversized_frames_cost_only_their_own_connection() {
    let dir = TempDir::new("pub-garbage");
    units(&dir, &["web"]);
    let p = Publisher::start(None, &[]);
    let mut z = run_publishing(&dir, &p.addr, &[]);
    z.expect("[web] started pid");
    forwarder_state(&dir, |s| s["connected"] == true);
    let w = Watcher::start(None, &p.addr, &["web"]);
    w.until("the listing", |v| v["t"] == "synced");

    let cases: [(&str, Vec<u8>, &str); 5] = [
        (
            "http",
            b"GET / HTTP/1.1\r\nHost: x\r\n\r\n".to_vec(),
            "over the",
        ),
        ("oversized", vec![0, 0x10, 0, 0, b'{'], "over the"),
        ("not json", frame("hello there"), "bad frame"),
        ("unknown type", frame("{\"t\":\"launch\"}"), "bad frame"),
        (
            "event before hello",
            frame("{\"t\":\"heartbeat\",\"seq\":1}"),
            "unexpected heartbeat",
        ),
    ];
    for (what, bytes, expect) in cases {
        let mut s = TcpStream::connect(&p.addr).unwrap();
        s.write_all(&bytes).unwrap();
        let text = until_closed(s);
        assert!(
            text.contains("\"t\":\"error\"") && text.contains(expect),
            "{what}: got {text:?}"
        );
    }
    // A peer that connects and says nothing is not waited on forever, and
    // does not hold anyone else up meanwhile.
    let _silent = TcpStream::connect(&p.addr).unwrap();
    cli(&dir, &["signal", "web", "KILL"]);
    w.until("web down", |v| is_change(v, "down", "web"));
    w.until("web up", |v| is_change(v, "up", "web"));
    let state = forwarder_state(&dir, |s| s["connected"] == true && s["acked"] == s["seq"]);
    assert_eq!(
        state["connects"], 1,
        "the forwarder's connection survived: {state}"
    );
    assert_eq!(
        resolve(None, &p.addr, &["web"])["endpoints"]
            .as_array()
            .unwrap()
            .len(),
        1
    );
}

#[test]
fn a_token_is_proven_never_sent_and_required_of_everyone() {
    let dir = TempDir::new("pub-token");
    units(&dir, &["web"]);
    let secret = dir.write("token", "correct horse battery staple\n");
    let wrong = dir.write("wrong", "tr0ub4dor&3\n");
    let p = Publisher::start(None, &["--token-file", secret.to_str().unwrap()]);

    // Without a token, or with the wrong one, a client learns nothing.
    let out = resolve_raw(None, &p.addr, &["web"]);
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("requires a token"));
    let out = resolve_raw(
        None,
        &p.addr,
        &["web", "--token-file", wrong.to_str().unwrap()],
    );
    assert_eq!(out.status.code(), Some(3));
    assert!(String::from_utf8_lossy(&out.stderr).contains("authentication failed"));

    // A forwarder with the wrong token is refused and says so.
    let dir_bad = TempDir::new("pub-token-bad");
    units(&dir_bad, &["rogue"]);
    let mut bad = run_publishing(
        &dir_bad,
        &p.addr,
        &["--publish-token-file", wrong.to_str().unwrap()],
    );
    bad.expect("authentication failed");

    let mut z = run_publishing(
        &dir,
        &p.addr,
        &["--publish-token-file", secret.to_str().unwrap()],
    );
    z.expect("[web] started pid");
    forwarder_state(&dir, |s| s["connected"] == true && s["acked"] == s["seq"]);
    let tok = ["--token-file", secret.to_str().unwrap()];
    let all = resolve(None, &p.addr, &["--all", tok[0], tok[1]]);
    assert_eq!(all["services"]["web"].as_array().unwrap().len(), 1, "{all}");
    assert!(all["services"].get("rogue").is_none(), "{all}");

    // The secret itself never crosses the wire: a client's whole session,
    // proven, welcomed and ended by the client (a session left open after
    // the challenge would end only at the publisher's 10 s deadline).
    let mut s = TcpStream::connect(&p.addr).unwrap();
    s.write_all(&frame(
        "{\"t\":\"hello\",\"proto\":1,\"role\":\"client\",\"nonce\":\"00\"}",
    ))
    .unwrap();
    let challenge = next_frame(&mut s, DEADLINE).expect("a challenge");
    assert_eq!(challenge["t"], "challenge", "{challenge}");
    let nonce = challenge["nonce"].as_str().unwrap();
    let mac = zurg::publish::proto::proof(b"correct horse battery staple", "client", nonce);
    s.write_all(&frame(&format!(r#"{{"t":"auth","mac":"{mac}"}}"#)))
        .unwrap();
    s.shutdown(std::net::Shutdown::Write).unwrap();
    let text = format!("{challenge}{}", until_closed(s));
    assert!(text.contains("\"t\":\"welcome\""), "{text}");
    assert!(!text.contains("horse"), "{text}");
}

#[test]
fn a_stalled_publisher_does_not_delay_restarts() {
    // Accepts connections (the kernel does) but never reads or answers.
    let stalled = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = stalled.local_addr().unwrap().to_string();
    let dir = TempDir::new("pub-stalled");
    // One first crash each: the crash-loop backoff does not come into it.
    let names: Vec<String> = (0..20).map(|i| format!("s{i}")).collect();
    for (i, n) in names.iter().enumerate() {
        dir.write(
            &format!("units/{n}.toml"),
            &format!("exec = \"/bin/sleep\"\nargs = [\"{}\"]\n", 100_000 + i),
        );
    }
    let mut z = run_publishing(&dir, &addr, &[]);
    for n in &names {
        z.saw(&format!("[{n}] started pid"));
    }
    for (i, n) in names.iter().enumerate() {
        kill(find_below(&z, &format!("sleep {}", 100_000 + i)), 9);
        z.wait_line("a restart", |l| {
            l.contains(&format!("[{n}] restarting now"))
        });
    }
    let events: Value = serde_json::from_slice(&cli(&dir, &["events", "--json"]).stdout).unwrap();
    let events = events["result"].as_array().unwrap();
    let mut worst = 0;
    let mut restarts = 0;
    for n in &names {
        let mut exit_at = None;
        for e in events.iter().filter(|e| e["service"] == n.as_str()) {
            let t = e["time_us"].as_u64().unwrap();
            match e["kind"].as_str().unwrap() {
                "exited" => exit_at = Some(t),
                "started" => {
                    if let Some(x) = exit_at.take() {
                        worst = worst.max(t - x);
                        restarts += 1;
                    }
                }
                _ => {}
            }
        }
    }
    assert_eq!(restarts, 20);
    assert!(
        worst < 50_000,
        "a restart took {worst} µs from exit to start with a stalled publisher"
    );
    let state = forwarder_state(&dir, |_| true);
    assert_eq!(state["connected"], false, "{state}");
    assert_eq!(
        state["queued"], 60,
        "every event is kept for the resend: {state}"
    );
}

#[test]
fn events_beyond_the_memory_queue_are_read_back_from_the_journal() {
    let dir = TempDir::new("pub-journal");
    units(&dir, &["web"]);
    let addr = format!("127.0.0.1:{}", free_port());
    // Nobody listens yet; only 4 events stay in memory.
    let mut z = run_publishing(&dir, &addr, &["--publish-queue", "4"]);
    z.expect("[web] started pid");
    for _ in 0..6 {
        assert!(cli(&dir, &["restart", "web"]).status.success());
    }
    let before = forwarder_state(&dir, |_| true);
    assert_eq!(before["seq"], 13, "{before}");
    assert_eq!(before["queued"], 4, "{before}");
    assert_eq!(before["dropped"], 9, "{before}");

    let p = Publisher::start_at(None, &addr, &[]);
    forwarder_state(&dir, |s| s["connected"] == true && s["acked"] == 13);
    z.saw("(9 from the journal)");
    let all = resolve(None, &p.addr, &["--all"]);
    let h = &all["hosts"][0];
    assert_eq!(h["seq"], 13, "{all}");
    assert_eq!(h["applied"], 13, "every event arrived, none twice: {all}");
    assert_eq!(h["gaps"], 0, "{all}");
    assert_eq!(all["services"]["web"].as_array().unwrap().len(), 1, "{all}");
}

#[test]
fn connections_queued_while_out_of_descriptors_are_served_once_some_close() {
    let mut p = Publisher::start(None, &[]);
    let pid = p.z.child.id().to_string();
    let out = std::process::Command::new("prlimit")
        .args(["--pid", &pid, "--nofile=32:32"])
        .output()
        .unwrap();
    assert!(out.status.success(), "prlimit: {out:?}");
    let hello = frame(r#"{"t":"hello","proto":1,"role":"client","nonce":"00"}"#);
    // More connections than descriptors: the last ones stay in the
    // listener's queue.
    let mut crowd = Vec::new();
    for _ in 0..40 {
        let mut s = TcpStream::connect(&p.addr).unwrap();
        s.write_all(&hello).unwrap();
        crowd.push(s);
    }
    p.z.expect("cannot accept");
    let mut late = TcpStream::connect(&p.addr).unwrap();
    late.write_all(&hello).unwrap();
    // Descriptors come free; nobody new connects to wake the listener.
    drop(crowd);
    let welcome = next_frame(&mut late, DEADLINE).expect("a welcome once descriptors are free");
    assert_eq!(welcome["t"], "welcome", "{welcome}");
    late.write_all(&frame(r#"{"t":"resolve","watch":false}"#))
        .unwrap();
    let hosts = next_frame(&mut late, DEADLINE).expect("the listing");
    assert_eq!(hosts["t"], "hosts", "{hosts}");
}

fn forwarder_hello(zurg: &str, instance: &str) -> Vec<u8> {
    frame(&format!(
        r#"{{"t":"hello","proto":1,"role":"forwarder","host":"127.0.0.1","zurg":"{zurg}","boot":"b","hostname":"h","nonce":"00","instance":"{instance}"}}"#
    ))
}

fn start_event(seq: u64, zurg: &str, gpid: &str) -> Vec<u8> {
    frame(&format!(
        r#"{{"t":"event","seq":{seq},"kind":"start","time_us":1,"endpoint":{{"service":"web","ip":"127.0.0.1","port":80,"gpid":"{gpid}","since_us":1,"host":"{zurg}"}},"pid":9}}"#
    ))
}

/// Frames until an error frame (returned) or the end of the connection.
fn error_of(s: TcpStream) -> String {
    let text = until_closed(s);
    assert!(
        text.contains("\"t\":\"error\""),
        "no error frame in {text:?}"
    );
    text
}

/// A raw forwarder for `zurg` that said hello and had a start (seq
/// `seq`, endpoint `gpid` of `web`) acknowledged.
fn raw_host(addr: &str, zurg: &str, secret: &str, seq: u64, gpid: &str) -> TcpStream {
    let mut fwd = TcpStream::connect(addr).unwrap();
    fwd.write_all(&forwarder_hello(zurg, secret)).unwrap();
    let welcome = next_frame(&mut fwd, DEADLINE).unwrap();
    assert_eq!(welcome["t"], "welcome", "{welcome}");
    fwd.write_all(&start_event(seq, zurg, gpid)).unwrap();
    assert_eq!(next_frame(&mut fwd, DEADLINE).unwrap()["seq"], seq);
    fwd
}

/// The zurg of host `zurg` reconnects: the publisher welcomes it at
/// `last_seq`, and its next start (`gpid`) is applied. The GPIDs of `web`
/// that resolve lists then.
fn goes_on_from(addr: &str, zurg: &str, secret: &str, last_seq: u64, gpid: &str) -> Vec<String> {
    let mut again = TcpStream::connect(addr).unwrap();
    again.write_all(&forwarder_hello(zurg, secret)).unwrap();
    let welcome = next_frame(&mut again, DEADLINE).unwrap();
    assert_eq!(welcome["last_seq"], last_seq, "{welcome}");
    again
        .write_all(&start_event(last_seq + 1, zurg, gpid))
        .unwrap();
    assert_eq!(
        next_frame(&mut again, DEADLINE).unwrap()["seq"],
        last_seq + 1
    );
    let listed = resolve(None, addr, &["web"]);
    listed["endpoints"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["gpid"].as_str().unwrap().to_string())
        .collect()
}

#[test]
fn a_stranger_cannot_take_over_a_live_host() {
    let dir = TempDir::new("pub-takeover");
    units(&dir, &["web"]);
    let p = Publisher::start(None, &[]);
    let mut z = run_publishing(&dir, &p.addr, &[]);
    z.expect("[web] started pid");
    forwarder_state(&dir, |s| s["connected"] == true && s["acked"] == s["seq"]);
    let all = resolve(None, &p.addr, &["--all"]);
    let zurg = all["hosts"][0]["zurg"].as_str().unwrap().to_string();

    // Someone who knows the host's GPID (resolve shows it to anyone) says
    // hello as that host, then claims the largest sequence number there is.
    let mut rogue = TcpStream::connect(&p.addr).unwrap();
    let mut words = forwarder_hello(&zurg, "deadbeefdeadbeefdeadbeefdeadbeef");
    words.extend(start_event(u64::MAX, &zurg, "127.0.0.1:80:1:999999"));
    rogue.write_all(&words).unwrap();
    let refused = error_of(rogue);
    assert!(refused.contains("instance"), "{refused}");
    // Without any instance secret at all: refused too.
    let mut bare = TcpStream::connect(&p.addr).unwrap();
    bare.write_all(&frame(&format!(
        r#"{{"t":"hello","proto":1,"role":"forwarder","host":"127.0.0.1","zurg":"{zurg}","nonce":"00"}}"#
    )))
    .unwrap();
    assert!(error_of(bare).contains("needs host, zurg and instance"));

    // The real zurg kept its connection, and its next events still count.
    cli(&dir, &["signal", "web", "KILL"]);
    let state = forwarder_state(&dir, |s| {
        s["connected"] == true && s["acked"] == s["seq"] && s["seq"].as_u64() >= Some(3)
    });
    assert_eq!(state["connects"], 1, "{state}");
    let status: Value =
        serde_json::from_slice(&cli(&dir, &["status", "web", "--json"]).stdout).unwrap();
    let live = status["result"][0]["gpid"].as_str().unwrap().to_string();
    eventually("resolve to name the live process", || {
        let eps = resolve(None, &p.addr, &["web"]);
        eps["endpoints"].as_array().unwrap().len() == 1
            && eps["endpoints"][0]["gpid"] == live.as_str()
    });
    let h = resolve(None, &p.addr, &["--all"])["hosts"][0].clone();
    assert_eq!(h["duplicates"], 0, "{h}");
    assert_eq!(h["seq"], state["seq"], "{h}");
}

#[test]
fn the_same_instance_replaces_its_own_connection_and_nobody_else_does() {
    let p = Publisher::start(None, &[]);
    let zurg = "127.0.0.1:0:7:7";
    let secret = "0123456789abcdef0123456789abcdef";
    let mut first = TcpStream::connect(&p.addr).unwrap();
    first.write_all(&forwarder_hello(zurg, secret)).unwrap();
    assert_eq!(next_frame(&mut first, DEADLINE).unwrap()["t"], "welcome");
    first
        .write_all(&start_event(1, zurg, "127.0.0.1:80:1:9"))
        .unwrap();
    assert_eq!(next_frame(&mut first, DEADLINE).unwrap()["seq"], 1);

    // The same zurg after a dropped connection the publisher has not noticed.
    let mut second = TcpStream::connect(&p.addr).unwrap();
    second.write_all(&forwarder_hello(zurg, secret)).unwrap();
    let welcome = next_frame(&mut second, DEADLINE).unwrap();
    assert_eq!(welcome["t"], "welcome", "{welcome}");
    assert_eq!(welcome["last_seq"], 1, "{welcome}");
    assert!(error_of(first).contains("replaced by a newer connection"));

    // A different instance is refused and the current connection stays.
    let mut other = TcpStream::connect(&p.addr).unwrap();
    other
        .write_all(&forwarder_hello(zurg, "ffffffffffffffffffffffffffffffff"))
        .unwrap();
    assert!(error_of(other).contains("not its zurg instance"));
    second
        .write_all(&frame(r#"{"t":"heartbeat","seq":1}"#))
        .unwrap();
    let ack = next_frame(&mut second, DEADLINE).unwrap();
    assert_eq!(
        (ack["t"].as_str(), ack["seq"].as_u64()),
        (Some("ack"), Some(1))
    );
}

#[test]
fn a_sequence_number_far_past_the_window_is_refused() {
    let p = Publisher::start(None, &[]);
    let zurg = "127.0.0.1:0:8:8";
    let secret = "0123456789abcdef0123456789abcdef";
    let mut fwd = raw_host(&p.addr, zurg, secret, 5, "127.0.0.1:80:1:9");
    fwd.write_all(&start_event(u64::MAX, zurg, "127.0.0.1:80:1:10"))
        .unwrap();
    let refused = error_of(fwd);
    assert!(refused.contains("jumps more than"), "{refused}");

    // The host still stands at 5, and its zurg goes on from there.
    let gpids = goes_on_from(&p.addr, zurg, secret, 5, "127.0.0.1:80:1:11");
    assert_eq!(gpids, ["127.0.0.1:80:1:11", "127.0.0.1:80:1:9"]);
}

#[test]
fn a_field_over_its_limit_is_refused_by_name_and_nothing_of_it_is_kept() {
    let p = Publisher::start(None, &[]);
    let zurg = "127.0.0.1:0:9:9";
    let secret = "0123456789abcdef0123456789abcdef";
    let mut fwd = raw_host(&p.addr, zurg, secret, 1, "127.0.0.1:80:1:9");
    // A version a unit file could not hold (64 at most), in an event that
    // is otherwise fine.
    let long = "v".repeat(65);
    fwd.write_all(&frame(&format!(
        r#"{{"t":"event","seq":2,"kind":"start","time_us":1,"endpoint":{{"service":"web","ip":"127.0.0.1","port":80,"gpid":"127.0.0.1:80:1:10","version":"{long}","since_us":1,"host":"{zurg}"}},"pid":10}}"#
    )))
    .unwrap();
    let refused = error_of(fwd);
    assert!(
        refused.contains("endpoint.version of 65 bytes is over its 64-byte limit"),
        "{refused}"
    );

    // A hello's free-form field too, before anything is registered.
    let mut named = TcpStream::connect(&p.addr).unwrap();
    named
        .write_all(&frame(&format!(
            r#"{{"t":"hello","proto":1,"role":"forwarder","host":"127.0.0.1","zurg":"127.0.0.1:0:10:10","hostname":"{}","instance":"{secret}"}}"#,
            "h".repeat(65)
        )))
        .unwrap();
    let refused = error_of(named);
    assert!(
        refused.contains("hello.hostname of 65 bytes is over its 64-byte limit"),
        "{refused}"
    );

    // The registry holds what came before, and only that: the host
    // reconnects where it stood and goes on.
    let listed = resolve(None, &p.addr, &["--all"]);
    let hosts: Vec<&str> = listed["hosts"]
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["zurg"].as_str().unwrap())
        .collect();
    assert_eq!(hosts, [zurg], "{listed}");
    let gpids = goes_on_from(&p.addr, zurg, secret, 1, "127.0.0.1:80:1:11");
    assert_eq!(gpids, ["127.0.0.1:80:1:11", "127.0.0.1:80:1:9"]);
}

#[test]
fn a_listing_of_every_name_past_the_output_bound_reaches_a_prompt_reader() {
    let p = Publisher::start(None, &[]);
    let mut fwd = RawForwarder::connect(&p.addr, 11);
    // About 12 MB of listing: more than the 8 MiB a peer may leave unread.
    fwd.snapshot(500, 50_000);
    let out = resolve_raw(None, &p.addr, &["--all"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        out.stdout.len() > 8 * 1024 * 1024,
        "{} bytes",
        out.stdout.len()
    );
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let services = all["services"].as_object().unwrap();
    assert_eq!(services.len(), 500);
    let total: usize = services.values().map(|v| v.as_array().unwrap().len()).sum();
    assert_eq!(total, 50_000);
    assert_eq!(all["hosts"][0]["endpoints"], 50_000, "{}", all["hosts"]);
}

#[test]
fn silent_peers_are_closed_but_watchers_are_kept() {
    let p = Publisher::start(None, &["--lease-ms", "1000"]);
    let fwd = RawForwarder::connect(&p.addr, 21);
    let client = raw_client(&p.addr);
    let mut watcher = raw_client(&p.addr);
    watcher
        .write_all(&frame(r#"{"t":"resolve","name":"web","watch":true}"#))
        .unwrap();
    assert_eq!(
        next_frame(&mut watcher, DEADLINE).unwrap()["t"],
        "endpoints"
    );
    assert_eq!(next_frame(&mut watcher, DEADLINE).unwrap()["t"], "synced");

    // A forwarder that sends nothing for a lease, and a client that said
    // hello and then nothing: both closed, so such connections cannot pile
    // up until nobody else gets in.
    let t0 = Instant::now();
    let said = until_closed(fwd.stream);
    assert!(said.contains("silent for a lease"), "{said:?}");
    assert!(
        t0.elapsed() >= Duration::from_millis(900),
        "{:?}",
        t0.elapsed()
    );
    let said = until_closed(client);
    assert!(said.contains("without a resolve or a watch"), "{said:?}");

    // The watcher, just as silent, is still served.
    let mut other = RawForwarder::connect(&p.addr, 22);
    other.churn("web", 1);
    let up = next_frame(&mut watcher, DEADLINE).expect("a change");
    assert_eq!(
        (up["t"].as_str(), up["change"].as_str()),
        (Some("change"), Some("up")),
        "{up}"
    );
}

#[test]
fn an_endless_snapshot_is_refused_at_its_cap() {
    let p = Publisher::start(None, &[]);
    let mut fwd = RawForwarder::connect(&p.addr, 31);
    let before = vm_rss_kib(p.z.child.id());
    // Chunks that never say last, one chunk past 65,536 endpoints.
    let mut bytes = Vec::new();
    let mut n = 0;
    while n <= 65_536 {
        let chunk: Vec<String> = (n..n + 128).map(|i| fwd.endpoint("web", i)).collect();
        bytes.extend(frame(&format!(
            r#"{{"t":"snapshot","seq":0,"endpoints":[{}],"last":false}}"#,
            chunk.join(",")
        )));
        n += 128;
    }
    fwd.stream.write_all(&bytes).unwrap();
    let said = until_closed(fwd.stream);
    assert!(
        said.contains("snapshot of more than 65536 endpoints"),
        "{said:?}"
    );
    let after = vm_rss_kib(p.z.child.id());
    assert!(
        after < before + 100 * 1024,
        "the publisher grew from {before} to {after} KiB"
    );
    // Nothing of it was applied, and the publisher serves on.
    let all = resolve(None, &p.addr, &["--all"]);
    assert!(all["services"].as_object().unwrap().is_empty(), "{all}");
}

#[test]
fn slow_watchers_are_dropped_and_cost_bounded_memory_and_no_stall() {
    let p = Publisher::start(None, &[]);
    let pid = p.z.child.id();
    let mut stalled = Vec::new();
    for _ in 0..200 {
        let mut s = raw_client(&p.addr);
        s.write_all(&frame(r#"{"t":"resolve","watch":true}"#))
            .unwrap();
        stalled.push(s);
    }
    let w = Watcher::start(None, &p.addr, &["--all"]);
    w.until("the listing", |v| v["t"] == "synced");
    let mut fwd = RawForwarder::connect(&p.addr, 41);
    // 30,000 changes in one burst, acknowledged within the deadline (a
    // debug build needs some 9 s for them with 200 watchers, 5 s without;
    // one write per change and watcher made it minutes) ...
    let t0 = Instant::now();
    fwd.churn_within("hot", 15_000, DEADLINE * 4);
    let took = t0.elapsed();
    let mut last = RawForwarder::connect(&p.addr, 42);
    last.churn("sentinel", 1);
    // ... and a prompt watcher still gets to the end.
    w.until("the sentinel", |v| {
        (v["t"] == "change" && v["endpoint"]["service"] == "sentinel")
            || (v["t"] == "endpoints" && v["name"] == "sentinel")
    });
    let rss = vm_rss_kib(pid);
    eprintln!("30,000 changes to 200 stalled watchers: {took:?}, publisher VmRSS {rss} KiB");
    // 32 MiB for all watchers' output, plus the registry and the burst.
    assert!(rss < 128 * 1024, "publisher VmRSS {rss} KiB");
    // The stalled ones were let go rather than buffered for.
    for s in stalled.drain(..5) {
        until_closed(s);
    }
}

#[test]
fn hellos_that_go_nowhere_cannot_lock_forwarders_out() {
    let p = Publisher::start(None, &[]);
    // Every connection the publisher allows, each welcomed and then silent;
    // in batches that fit the listen backlog, so none is lost on the way.
    let hello = frame(r#"{"t":"hello","proto":1,"role":"client","nonce":"00"}"#);
    let mut crowd: Vec<TcpStream> = Vec::new();
    let t0 = Instant::now();
    for _ in 0..8 {
        let mut batch: Vec<TcpStream> = (0..512)
            .map(|_| {
                let mut s = TcpStream::connect(&p.addr).unwrap();
                s.write_all(&hello).unwrap();
                s
            })
            .collect();
        for s in &mut batch {
            assert_eq!(next_frame(s, DEADLINE).unwrap()["t"], "welcome");
        }
        crowd.extend(batch);
    }
    let forwarder_hello = frame(
        r#"{"t":"hello","proto":1,"role":"forwarder","host":"127.0.0.1","zurg":"127.0.0.1:0:51:51","nonce":"00","instance":"00000000000000000000000000000051"}"#,
    );
    // Meanwhile a forwarder is turned away (checked only while the crowd is
    // surely within its 10 s).
    if t0.elapsed() < Duration::from_secs(8) {
        let mut s = TcpStream::connect(&p.addr).unwrap();
        s.write_all(&forwarder_hello).unwrap();
        let said = until_closed(s);
        assert!(said.contains("too many connections"), "{said:?}");
    }
    // 10 s after its hello the first of the crowd is let go, and its place
    // is free for a forwarder.
    let first = crowd.remove(0);
    let said = until_closed(first);
    assert!(said.contains("without a resolve or a watch"), "{said:?}");
    let mut s = TcpStream::connect(&p.addr).unwrap();
    s.write_all(&forwarder_hello).unwrap();
    let welcome = next_frame(&mut s, DEADLINE).unwrap();
    assert_eq!(welcome["t"], "welcome", "{welcome}");
    drop(crowd);
}

#[test]
fn watchers_have_a_cap_of_their_own() {
    let p = Publisher::start(None, &[]);
    let watch = frame(r#"{"t":"resolve","watch":true}"#);
    let mut watchers = Vec::new();
    for _ in 0..1024 {
        let mut s = raw_client(&p.addr);
        s.write_all(&watch).unwrap();
        watchers.push(s);
    }
    for s in watchers.iter_mut().take(3) {
        assert_eq!(next_frame(s, DEADLINE).unwrap()["t"], "hosts");
    }
    let mut one_more = raw_client(&p.addr);
    one_more.write_all(&watch).unwrap();
    assert!(until_closed(one_more).contains("too many watchers (1024)"));
    // A plain lookup still works.
    assert!(resolve(None, &p.addr, &["--all"])["hosts"].is_array());
}

#[test]
fn a_watcher_listing_in_progress_misses_no_change_and_sees_none_twice() {
    let p = Publisher::start(None, &[]);
    let mut fwd = RawForwarder::connect(&p.addr, 61);
    // A listing far larger than the socket buffers, so it is still being
    // produced when the changes come.
    fwd.snapshot(100, 60_000);
    let mut w = raw_client(&p.addr);
    w.write_all(&frame(r#"{"t":"resolve","watch":true}"#))
        .unwrap();
    assert_eq!(next_frame(&mut w, DEADLINE).unwrap()["t"], "hosts");
    let first = next_frame(&mut w, DEADLINE).unwrap();
    assert_eq!(first["name"], "svc0000", "{first}");
    // One endpoint the listing has shown goes, one past it appears.
    let shown = first["endpoints"][0]["gpid"].as_str().unwrap().to_string();
    let shown_i: u64 = shown.rsplit(':').next().unwrap().parse().unwrap();
    fwd.seq += 1;
    let gone = frame(&format!(
        r#"{{"t":"event","seq":{},"kind":"exit","time_us":1,"endpoint":{},"pid":9}}"#,
        fwd.seq,
        fwd.endpoint("svc0000", shown_i)
    ));
    fwd.seq += 1;
    let late = frame(&format!(
        r#"{{"t":"event","seq":{},"kind":"start","time_us":1,"endpoint":{},"pid":9}}"#,
        fwd.seq,
        fwd.endpoint("zzz", 7)
    ));
    fwd.stream.write_all(&[gone, late].concat()).unwrap();
    loop {
        let ack = next_frame(&mut fwd.stream, DEADLINE).expect("an ack");
        if ack["seq"].as_u64() == Some(fwd.seq) {
            break;
        }
    }
    // The rest of the listing: every endpoint once, zzz among them.
    let mut listed = first["endpoints"].as_array().unwrap().len();
    let mut zzz = 0;
    loop {
        let f = next_frame(&mut w, DEADLINE).expect("the listing");
        match f["t"].as_str().unwrap() {
            "endpoints" => {
                listed += f["endpoints"].as_array().unwrap().len();
                if f["name"] == "zzz" {
                    zzz += 1;
                }
            }
            "synced" => break,
            other => panic!("{other} frame inside the listing: {f}"),
        }
    }
    assert_eq!(listed, 60_001);
    assert_eq!(zzz, 1);
    // Then the change the listing had already passed, and only it.
    let down = next_frame(&mut w, DEADLINE).expect("the deferred change");
    assert_eq!(down["t"], "change", "{down}");
    assert_eq!(down["change"], "down", "{down}");
    assert_eq!(down["endpoint"]["gpid"], shown.as_str(), "{down}");
    let more = next_frame(&mut w, Duration::from_millis(300));
    assert!(
        more.is_none(),
        "zzz's start was in the listing already: {more:?}"
    );
}

#[test]
fn hosts_are_listed_in_frames_under_the_frame_limit() {
    let p = Publisher::start(None, &[]);
    // 300 hosts of some 250 bytes each: more than one 64 KiB frame holds.
    let hosts: Vec<RawForwarder> = (0..300)
        .map(|i| RawForwarder::connect(&p.addr, 1000 + i))
        .collect();
    let mut c = raw_client(&p.addr);
    c.write_all(&frame(r#"{"t":"resolve","watch":false}"#))
        .unwrap();
    let mut seen = 0;
    let mut frames = 0;
    loop {
        let f = next_frame(&mut c, DEADLINE).expect("the listing");
        assert!(serde_json::to_vec(&f).unwrap().len() <= 64 * 1024);
        match f["t"].as_str().unwrap() {
            "hosts" => {
                seen += f["hosts"].as_array().unwrap().len();
                frames += 1;
            }
            "synced" => break,
            other => panic!("unexpected {other}: {f}"),
        }
    }
    assert_eq!(seen, 300);
    assert_eq!(frames, 3, "in chunks of 128");
    let all = resolve(None, &p.addr, &["--all"]);
    assert_eq!(all["hosts"].as_array().unwrap().len(), 300);
    drop(hosts);
}

#[test]
fn a_zurg_whose_connection_drops_speaks_for_its_host_again() {
    let dir = TempDir::new("pub-redial");
    units(&dir, &["web"]);
    let mut p = Publisher::start(None, &[]);
    let mut z = run_publishing(&dir, &p.addr, &[]);
    z.expect("[web] started pid");
    let before = forwarder_state(&dir, |s| s["connected"] == true && s["acked"] == s["seq"]);
    assert_eq!(before["connects"], 1, "{before}");
    // Abort the forwarder's socket under it (SOCK_DESTROY); the host stays
    // live at the publisher, which must take the same instance back.
    let out = std::process::Command::new("ss")
        .args(["-K", "dst", &p.addr])
        .output()
        .unwrap();
    assert!(out.status.success(), "ss -K: {out:?}");
    let after = forwarder_state(&dir, |s| {
        s["connected"] == true && s["connects"] == 2 && s["acked"] == s["seq"]
    });
    cli(&dir, &["signal", "web", "KILL"]);
    let seq = after["seq"].as_u64().unwrap() + 2;
    forwarder_state(&dir, |s| s["acked"].as_u64() == Some(seq));
    let all = resolve(None, &p.addr, &["--all"]);
    assert_eq!(all["hosts"].as_array().unwrap().len(), 1, "{all}");
    assert_eq!(all["hosts"][0]["seq"], seq, "{all}");
    assert_eq!(all["services"]["web"].as_array().unwrap().len(), 1, "{all}");
    let refused =
        p.z.lines_now()
            .iter()
            .any(|l| l.contains("another instance secret"));
    assert!(!refused, "{:?}", p.z.seen);
}

/// `zurg run --publish` takes the same list as a client's `--publisher`:
/// a stray comma or an entry that is not HOST:PORT stops it at start with
/// a usage error naming the option and the entry, before any service
/// starts; names and bracketed IPv6 addresses are taken.
#[test]
fn a_bad_publish_list_is_refused_at_start_naming_the_entry() {
    let cases = [
        (
            "127.0.0.1:1,,127.0.0.1:2",
            "--publish \"127.0.0.1:1,,127.0.0.1:2\": entry 2 is empty",
        ),
        (
            "127.0.0.1:1,",
            "--publish \"127.0.0.1:1,\": entry 2 is empty",
        ),
        (
            "127.0.0.1:1,nope",
            "--publish \"127.0.0.1:1,nope\": \"nope\" is not HOST:PORT",
        ),
        (
            "::1:7300",
            "--publish \"::1:7300\": \"::1:7300\" is not HOST:PORT",
        ),
    ];
    for (list, message) in cases {
        let dir = TempDir::new("pub-badlist");
        let marker = dir.path().join("started");
        dir.write(
            "units/web.toml",
            &format!(
                "exec = \"/bin/sh\"\nargs = [\"-c\", \"touch {} && exec sleep 1000\"]\n",
                marker.display()
            ),
        );
        let mut z = run_in(&dir, Mode::Pid1, &["--publish", list]);
        z.expect(message);
        let status = z.wait_exit();
        let said = z.lines_now().join("\n");
        assert_eq!(status.code(), Some(2), "{list}: {said}");
        assert!(!marker.exists(), "{list}: a service started: {said}");
        assert!(
            !dir.path().join("control.sock").exists(),
            "{list}: the control socket was bound: {said}"
        );
    }

    // A host name and a bracketed IPv6 address are publishers too (the
    // name is resolved later, on the forwarder's thread).
    let dir = TempDir::new("pub-goodlist");
    units(&dir, &["web"]);
    let mut z = run_publishing(&dir, "[::1]:1,publisher.invalid:7300", &[]);
    z.expect("[web] started pid");
    z.signal(libc::SIGTERM);
    assert_eq!(z.wait_exit().code(), Some(0), "{}", z.seen.join("\n"));
}
