//! Fault injection (issue 20), hostile services: one that ignores SIGTERM,
//! one that double-forks and exits, one that closes its output, one with
//! 10,000 children. Each against zurg as PID 1 of a pid namespace; each
//! asserts that zurg keeps supervising. docs/security.md names them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{cpu_ticks, eventually, history, ok, status_of, Mode, TempDir, BIN, DEADLINE};

const SLEEPER: &str = "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nstop_timeout_ms = 2000\n";

fn restart(dir: &TempDir, name: &str) {
    ok(dir, &["restart", name]);
}

#[test]
fn a_service_that_ignores_sigterm_is_killed_after_stop_timeout_and_shown_stopping_meanwhile() {
    let dir = TempDir::new("stubborn");
    dir.write(
        "units/stubborn.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"trap '' TERM; exec sleep 1001\"]\nstop_timeout_ms = 1500\n",
    );
    dir.write("units/other.toml", SLEEPER);
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("[stubborn] started pid");
    let pid = common::find_below(&z, "sleep 1001");
    eventually("the exec past the trap", || {
        common::cmdline(pid) == "sleep 1001"
    });
    let gpid = status_of(&dir, "stubborn")["gpid"].clone();
    let t0 = Instant::now();
    let mut stop = Command::new(BIN)
        .args(["stop", "stubborn"])
        .env("ZURG_SOCKET", dir.path().join("control.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("stubborn stopping", || {
        status_of(&dir, "stubborn")["state"] == "stopping"
    });
    // While it waits: honest status, the process alive, zurg answering
    // and supervising the rest.
    assert!(common::state(pid).is_some_and(|s| s != 'Z'));
    restart(&dir, "other");
    assert_eq!(status_of(&dir, "stubborn")["state"], "stopping");
    assert_eq!(status_of(&dir, "stubborn")["gpid"], gpid);
    let (code, _) = common::wait_child(&mut stop);
    let took = t0.elapsed();
    assert_eq!(code, Some(0));
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    assert!(
        took < Duration::from_millis(1400) + DEADLINE / 3,
        "{took:?}"
    );
    eventually("the process gone", || {
        matches!(common::state(pid), None | Some('Z'))
    });
    assert_eq!(status_of(&dir, "stubborn")["state"], "stopped");
    let h = history(&dir, "stubborn");
    let exit = h.iter().find(|r| r["kind"] == "exit").unwrap();
    assert_eq!(exit["exit"]["signal"], "SIGKILL", "{exit}");
}

#[test]
fn a_daemon_that_double_forks_is_reported_and_its_orphan_reaped() {
    let dir = TempDir::new("double-fork");
    dir.write(
        "units/d.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"(sleep 0.5 &) ; exit 0\"]\n",
    );
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("forked into the background");
    assert_eq!(status_of(&dir, "d")["state"], "failed");
    // The grandchild, orphaned to zurg, exits: reaped, no zombie left.
    eventually("no process left below zurg", || z.descendants().is_empty());
}

#[test]
fn a_service_that_closes_its_output_does_not_make_zurg_spin() {
    let dir = TempDir::new("closed-out");
    dir.write(
        "units/mute.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"echo bye >&2; exec sleep 1000 >&- 2>&-\"]\n",
    );
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("mute | bye");
    let zurg = z.host_pid();
    let sleeper = common::find_below(&z, "sleep 1000");
    eventually("the service past its exec", || {
        common::cmdline(sleeper) == "sleep 1000"
    });
    // Both pipes at end of file, the process still running: zurg must
    // not poll them in a loop. Measured over a second of its CPU time.
    let before = cpu_ticks(zurg);
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(zurg) - before;
    eprintln!(
        "zurg beside a service with closed output: {used} CPU ticks in {:?}",
        window.elapsed()
    );
    let ticks = common::clock_ticks();
    assert!(
        used * 100 <= ticks * 2 * window.elapsed().as_secs().max(1),
        "zurg used {used} ticks ({ticks}/s) in {:?} while idle",
        window.elapsed()
    );
    assert_eq!(status_of(&dir, "mute")["state"], "running");
}

#[test]
fn a_service_with_ten_thousand_children_does_not_hold_zurg_up_and_stop_kills_them_all() {
    const CHILDREN: usize = 10_000;
    let dir = TempDir::new("many-children");
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // Each child is a forked shell blocked opening a fifo nobody writes:
    // no exec, so 10,000 of them start in seconds.
    dir.write(
        "units/swarm.toml",
        &format!(
            "exec = \"/bin/sh\"\nargs = [\"-c\", \"i=0; while [ $i -lt {CHILDREN} ]; do : < {} & i=$((i+1)); done; echo spawned >&2; wait\"]\nkill_mode = \"group\"\nstop_timeout_ms = 5000\n",
            fifo.display()
        ),
    );
    dir.write("units/other.toml", SLEEPER);
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("[other] started pid");
    // zurg answers and restarts another service while the swarm grows.
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut restarts = 0;
    while !z.lines_now().iter().any(|l| l.contains("swarm | spawned")) {
        let t = Instant::now();
        restart(&dir, "other");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a restart took {:?}",
            t.elapsed()
        );
        assert!(
            Instant::now() < deadline,
            "the swarm never finished spawning: {} processes",
            z.descendants().len()
        );
        restarts += 1;
        // The rhythm of the restarts, not a wait for anything: the swarm
        // needs the CPU more than the restarts do.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        z.descendants().len() > CHILDREN,
        "{}",
        z.descendants().len()
    );
    let t = Instant::now();
    assert_eq!(status_of(&dir, "other")["state"], "running");
    restart(&dir, "other");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    let stopping = Instant::now();
    ok(&dir, &["stop", "swarm"]);
    let stopped = stopping.elapsed();
    assert_eq!(status_of(&dir, "swarm")["state"], "stopped");
    // Every child got the stop signal and was reaped; `other` alone runs.
    eventually("only other left", || z.descendants().len() == 1);
    eprintln!(
        "10,000 children: {restarts} restarts of another service while they were forked; stop answered in {stopped:?}, all reaped in {:?}",
        stopping.elapsed()
    );
    assert_eq!(status_of(&dir, "other")["state"], "running");
}
