//! `zurg publisher` stops cleanly on SIGTERM and SIGINT: its hosts move
//! to the next publisher of their `--publish` list at once, its watchers
//! and status page streams are told, its journal keeps every record it
//! received, and it exits 0; a second signal exits at once.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::{Duration, Instant};

use common::naming::*;
use common::*;

/// The forwarders' lease (and so the silence after which a host gives up
/// on a publisher that is gone without a word): the default.
const LEASE: Duration = Duration::from_secs(10);
/// How soon both hosts must be on the next publisher: generous for a
/// loaded machine, and far below `LEASE`.
const MOVE_BOUND: Duration = Duration::from_secs(2);
/// A stopping publisher gives its peers 3 s, its journal 1 s.
const EXIT_BOUND: Duration = Duration::from_secs(5);

fn host(tag: &str, service: &str, publish: &str) -> (TempDir, Zurg) {
    publishing_host(tag, &[service], publish)
}

fn stops_cleanly_on(signo: i32, name: &str) {
    let journal = TempDir::new(&format!("stop-journal-{signo}"));
    let jdir = journal.path().to_str().unwrap().to_string();
    let http = format!("127.0.0.1:{}", free_port());
    let mut p1 = Publisher::start(None, &["--journal", &jdir, "--http", &http]);
    let p2 = Publisher::start(None, &[]);
    let list = format!("{},{}", p1.addr, p2.addr);
    let (_d1, mut h1) = host(&format!("stop-h1-{signo}"), "alpha", &list);
    let (_d2, mut h2) = host(&format!("stop-h2-{signo}"), "beta", &list);
    // Both hosts speak to P1, the first of their list, and it has their
    // starts.
    eventually("both services listed on P1", || {
        let all = resolve(None, &p1.addr, &["--all"]);
        all["services"]["alpha"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
            && all["services"]["beta"]
                .as_array()
                .is_some_and(|a| a.len() == 1)
    });
    let on_p2 = Watcher::start(None, &p2.addr, &["--all"]);
    on_p2.until("P2's listing", |v| v["t"] == "synced");
    let mut watching_p1 = raw_client(&p1.addr);
    watching_p1
        .write_all(&frame(r#"{"t":"resolve","watch":true}"#))
        .unwrap();
    while next_frame_is(&mut watching_p1) != "synced" {}
    let page = event_stream(&http);
    // A burst just before the signal, so that the journal's writer still
    // has records queued when the stop begins.
    let mut burst = RawForwarder::connect(&p1.addr, 7);
    burst.churn("burst", 500);

    let t0 = Instant::now();
    kill(p1.z.child.id() as i32, signo);
    let mut moved = std::collections::BTreeSet::new();
    while moved.len() < 2 {
        let up = on_p2.until("alpha and beta up on P2", |v| {
            is_change(v, "up", "alpha") || is_change(v, "up", "beta")
        });
        moved.insert(up["endpoint"]["service"].as_str().unwrap().to_string());
    }
    let took = t0.elapsed();
    eprintln!(
        "{name}: both hosts on P2 {} ms after the signal",
        took.as_millis()
    );
    assert!(
        took < MOVE_BOUND,
        "the hosts took {took:?} to reach P2 (bound {MOVE_BOUND:?}, lease {LEASE:?})"
    );
    for h in [&mut h1, &mut h2] {
        h.saw("is stopping");
    }

    let status = p1.z.wait_exit_within(EXIT_BOUND).unwrap_or_else(|| {
        panic!(
            "P1 still runs {EXIT_BOUND:?} after {name}:\n{}",
            p1.z.lines_now().join("\n")
        )
    });
    assert_eq!(status.code(), Some(0), "{}", p1.z.lines_now().join("\n"));
    p1.z.saw(&format!("received {name}: stopping the publisher"));
    p1.z.saw("told 3 host(s) and 1 client(s) to go elsewhere");
    p1.z.saw("publisher journal written");
    p1.z.saw("publisher stopped");

    // The watcher was told why its stream ended, and so was the page.
    let told = until_closed(watching_p1);
    assert!(told.contains("is stopping"), "{told:?}");
    let rest = String::from_utf8_lossy(&read_all(page)).to_string();
    assert!(rest.contains("event: stopping"), "{rest:?}");

    // Every record P1 received before the signal is in its journal.
    let p3 = Publisher::start(None, &["--journal", &jdir]);
    let kept = publisher_history(None, &p3.addr, &[]);
    for service in ["alpha", "beta"] {
        assert!(
            kept.iter()
                .any(|r| r["service"] == service && r["kind"] == "start"),
            "no start of {service} in P1's journal: {kept:?}"
        );
    }
    let burst_kept = kept.iter().filter(|r| r["service"] == "burst").count();
    assert_eq!(burst_kept, 1000, "records of the burst in P1's journal");
    drop(p3);
    drop(p2);
}

fn next_frame_is(s: &mut TcpStream) -> String {
    let f = read_frame(s, DEADLINE).expect("a frame within the deadline");
    f["t"].as_str().unwrap_or_default().to_string()
}

fn read_all(mut s: TcpStream) -> Vec<u8> {
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!("the stream did not end: {e}"),
    }
    got
}

#[test]
fn sigterm_moves_the_hosts_to_the_next_publisher_at_once_and_exits_0() {
    stops_cleanly_on(15, "SIGTERM");
}

#[test]
fn sigint_stops_the_publisher_as_sigterm_does() {
    stops_cleanly_on(2, "SIGINT");
}

/// A client connection with a receive buffer of a few KiB, so that what
/// it leaves unread stays in the publisher; said hello and was welcomed.
fn small_window_client(addr: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    // Before the publisher sends a byte: the window never grows past it.
    nix::sys::socket::setsockopt(&s, nix::sys::socket::sockopt::RcvBuf, &4096).unwrap();
    s.write_all(&frame(
        r#"{"t":"hello","proto":1,"role":"client","nonce":"00"}"#,
    ))
    .unwrap();
    assert_eq!(next_frame_is(&mut s), "welcome");
    s
}

/// A publisher with a client that asked for a listing far larger than the
/// sockets hold and reads none of it: its goodbye cannot be delivered.
fn publisher_with_a_stuck_reader(tag: &str) -> (Publisher, RawForwarder, TcpStream) {
    let p = Publisher::start(None, &[]);
    let mut fwd = RawForwarder::connect(&p.addr, 1);
    // Some 11 MB: past what the kernel holds for a socket (4 MiB at most
    // to send, with tcp_wmem's default) and the 64 KiB the publisher encodes
    // ahead.
    fwd.snapshot(200, 40_000);
    let mut stuck = small_window_client(&p.addr);
    stuck.write_all(&frame(r#"{"t":"resolve"}"#)).unwrap();
    // The listing has started: the publisher filled the socket and holds
    // the rest.
    assert_eq!(next_frame_is(&mut stuck), "hosts", "{tag}");
    (p, fwd, stuck)
}

#[test]
fn a_second_sigterm_exits_at_once() {
    let (mut p, _fwd, _stuck) = publisher_with_a_stuck_reader("second");
    p.z.signal(15);
    p.z.expect("received SIGTERM: stopping the publisher");
    let t0 = Instant::now();
    p.z.signal(15);
    let status = p.z.wait_exit_within(EXIT_BOUND).unwrap_or_else(|| {
        panic!(
            "still running after a second SIGTERM:\n{}",
            p.z.lines_now().join("\n")
        )
    });
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(1), "{}", p.z.lines_now().join("\n"));
    p.z.saw("received SIGTERM again: exiting now (1 connection(s)");
    // Well before the 3 s the stuck reader would otherwise be given.
    assert!(
        took < Duration::from_millis(1500),
        "exited {took:?} after the second signal"
    );
}

#[test]
fn a_peer_that_does_not_read_its_goodbye_holds_the_exit_only_until_the_deadline() {
    let (mut p, _fwd, _stuck) = publisher_with_a_stuck_reader("deadline");
    let t0 = Instant::now();
    p.z.signal(15);
    let status = p.z.wait_exit_within(EXIT_BOUND).unwrap_or_else(|| {
        panic!(
            "still running {EXIT_BOUND:?} after SIGTERM:\n{}",
            p.z.lines_now().join("\n")
        )
    });
    let took = t0.elapsed();
    assert_eq!(status.code(), Some(0), "{}", p.z.lines_now().join("\n"));
    p.z.saw("told 1 host(s) and 1 client(s) to go elsewhere; closed 1 connection(s) that did not take their goodbye within 3000 ms");
    assert!(took >= Duration::from_millis(2900), "exited after {took:?}");
}

/// A container's PID 1 ignores a signal it has no handler for, so before
/// the publisher read SIGTERM its `docker stop` waited out the 10 s
/// grace for SIGKILL; now it stops as a plain process does.
#[test]
fn as_a_containers_pid_1_the_publisher_stops_on_sigterm_too() {
    let addr = format!("127.0.0.1:{}", free_port());
    let mut p1 = Zurg::start(Mode::Pid1, &["publisher", "--listen", &addr]);
    p1.expect("publisher listening on");
    let p2 = Publisher::start(None, &[]);
    let (_d, mut h) = host("stop-pid1", "gamma", &format!("{addr},{}", p2.addr));
    eventually("gamma listed on P1", || {
        resolve(None, &addr, &["gamma"])["endpoints"]
            .as_array()
            .is_some_and(|a| a.len() == 1)
    });
    let on_p2 = Watcher::start(None, &p2.addr, &["gamma"]);
    on_p2.until("P2's listing", |v| v["t"] == "synced");
    let t0 = Instant::now();
    p1.signal(15);
    on_p2.until("gamma up on P2", |v| is_change(v, "up", "gamma"));
    let took = t0.elapsed();
    assert!(took < MOVE_BOUND, "the host took {took:?} to reach P2");
    h.saw("is stopping");
    let status = p1.wait_exit_within(EXIT_BOUND).unwrap_or_else(|| {
        panic!(
            "PID 1 publisher still runs {EXIT_BOUND:?} after SIGTERM:\n{}",
            p1.lines_now().join("\n")
        )
    });
    assert_eq!(status.code(), Some(0), "{}", p1.lines_now().join("\n"));
    p1.saw("publisher stopped");
}

/// On etcd a stopping publisher leaves its hosts' keys on their leases:
/// the hosts move to the other publisher, which keeps those leases, and
/// the other publisher's watchers see no name go down, not even once the
/// lease would have run out.
#[cfg(feature = "etcd")]
#[test]
fn on_etcd_the_names_of_a_stopped_publishers_hosts_do_not_flap() {
    use common::etcd::Etcd;
    let Some(etcd) = Etcd::start("stop-etcd", None) else {
        return;
    };
    let args = ["--etcd", etcd.url.as_str(), "--lease-ms", "1500"];
    let mut p1 = Publisher::start(None, &args);
    let p2 = Publisher::start(None, &args);
    let list = format!("{},{}", p1.addr, p2.addr);
    let (d1, _h1) = host("stop-etcd-h1", "alpha", &list);
    let (d2, _h2) = host("stop-etcd-h2", "beta", &list);
    for d in [&d1, &d2] {
        forwarder_state(d, |s| s["connected"] == true && s["acked"] == s["seq"]);
    }
    let on_p2 = Watcher::start(None, &p2.addr, &["--all"]);
    on_p2.until("P2's listing", |v| v["t"] == "synced");

    p1.z.signal(15);
    let status = p1.z.wait_exit_within(EXIT_BOUND).expect("P1 exits");
    assert_eq!(status.code(), Some(0), "{}", p1.z.lines_now().join("\n"));
    for d in [&d1, &d2] {
        forwarder_state(d, |s| s["connected"] == true && s["connects"] == 2);
    }
    // Past the lease P1 left alone (1.5 s, 2 s in etcd's rounding): had
    // nobody kept it, etcd would have deleted the names by now.
    let past = Instant::now() + Duration::from_secs(4);
    eventually("the lease's time to pass with both names listed", || {
        let all = resolve(None, &p2.addr, &["--all"]);
        let listed = ["alpha", "beta"]
            .iter()
            .all(|n| all["services"][n].as_array().is_some_and(|a| a.len() == 1));
        assert!(listed, "a name went missing: {all}");
        Instant::now() >= past
    });
    // A change of our own ends what the watcher printed since the stop: it
    // must be the first change.
    assert!(cli(&d1, &["restart", "alpha"]).status.success());
    let first = on_p2.until("a change", |v| v["t"] == "change");
    assert!(
        first["endpoint"]["service"] == "alpha" && first["reason"] == "exit",
        "a name changed after the stop: {first}"
    );
    drop(p2);
    drop(etcd);
}

/// A SIGTERM in the publisher's first moments, from the instant it holds
/// the signal (the first line of `main`) through its set-up (listening,
/// binding) into its loop, is a clean stop with exit 0 every time, as a
/// plain process and as a namespace's PID 1 (where a signal that is not
/// held is dropped, and the publisher would run on until SIGKILL).
#[test]
fn a_sigterm_in_the_first_moments_is_a_clean_stop_every_time() {
    let (mut early, mut loop_stops) = (0, 0);
    for i in 0..20u64 {
        let addr = format!("127.0.0.1:{}", free_port());
        let mode = if i % 2 == 0 { Mode::Plain } else { Mode::Pid1 };
        let mut z = Zurg::start(mode, &["publisher", "--listen", &addr]);
        let pid = z.host_pid();
        until_blocks(pid, libc::SIGTERM);
        // Not a wait for anything: it moves where in the start the signal
        // lands, from at once to well into the set-up.
        let land = Instant::now() + Duration::from_micros(i % 10 * 150);
        while Instant::now() < land {
            std::hint::spin_loop();
        }
        kill(pid, libc::SIGTERM);
        let status = z.wait_exit_within(EXIT_BOUND).unwrap_or_else(|| {
            panic!(
                "run {i}: still running {EXIT_BOUND:?} after SIGTERM: {:?}",
                z.lines_now()
            )
        });
        let said = z.saw("publisher stopped");
        assert_eq!(status.code(), Some(0), "run {i}: {:?}", z.lines_now());
        if said.contains("before it started") {
            early += 1;
        } else {
            assert!(
                said.contains("publisher stopped (SIGTERM"),
                "run {i}: {said}"
            );
            loop_stops += 1;
        }
    }
    eprintln!("20 SIGTERMs at start: {early} before the set-up, {loop_stops} during it or after");
}

/// A SIGTERM already pending when the publisher starts (its launcher held
/// it and was asked to stop before the exec) stops it before it sets
/// anything up: exit 0, and nothing ever listened.
#[test]
fn a_sigterm_pending_at_exec_stops_it_before_it_listens() {
    let addr = format!("127.0.0.1:{}", free_port());
    // perl (perl-base, in every Debian) holds TERM, sends it to itself, then
    // execs the publisher: the pending signal survives the exec.
    let mut cmd = std::process::Command::new("perl");
    cmd.args([
        "-MPOSIX",
        "-e",
        "sigprocmask(SIG_BLOCK, POSIX::SigSet->new(SIGTERM)) or die; kill 'TERM', $$; exec @ARGV or die",
        BIN,
        "publisher",
        "--listen",
        &addr,
    ]);
    let mut z = Zurg::spawn(cmd);
    let said = z.expect("publisher stopped");
    assert!(
        said.contains("received SIGTERM before it started"),
        "{said}"
    );
    assert_eq!(z.wait_exit().code(), Some(0), "{:?}", z.lines_now());
    assert!(
        !z.lines_now().iter().any(|l| l.contains("listening")),
        "{:?}",
        z.lines_now()
    );
    assert!(
        TcpStream::connect(&addr).is_err(),
        "something listens on {addr}"
    );
}

/// A SIGTERM while the publisher waits for an etcd that does not answer
/// (it accepts, then says nothing) stops it at once with exit 0, rather
/// than after etcd's answer or its timeout (seconds) and exit 1.
#[cfg(feature = "etcd")]
#[test]
fn a_sigterm_while_etcd_is_silent_stops_it_at_once() {
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let etcd = format!("http://{}", silent.local_addr().unwrap());
    let addr = format!("127.0.0.1:{}", free_port());
    let mut z = Zurg::start(
        Mode::Plain,
        &["publisher", "--listen", &addr, "--etcd", &etcd],
    );
    // The publisher is in its connect once etcd's port has its connection.
    silent.set_nonblocking(true).unwrap();
    let deadline = Instant::now() + DEADLINE;
    let _held = loop {
        match silent.accept() {
            Ok((conn, _)) => break conn,
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                assert!(
                    Instant::now() < deadline,
                    "the publisher never connected to etcd"
                );
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(e) => panic!("{e}"),
        }
    };
    let t0 = Instant::now();
    z.signal(libc::SIGTERM);
    let said = z.expect("publisher stopped");
    let status = z.wait_exit();
    let took = t0.elapsed();
    assert!(said.contains("while connecting to etcd"), "{said}");
    assert_eq!(status.code(), Some(0), "{:?}", z.lines_now());
    // etcd's connect timeout is 3 s, its request timeout 5 s.
    assert!(
        took < Duration::from_secs(1),
        "stopped {took:?} after SIGTERM"
    );
    eprintln!("SIGTERM during a silent etcd's connect: exit 0 after {took:?}");
}
