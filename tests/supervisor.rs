//! `zurg run --units DIR`: the supervisor face (README "Supervisor").
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::Duration;

use common::{cmdline, eventually, find_below, kill, pid_in, state, Mode, TempDir, Zurg, SLEEPER};

struct Run {
    z: Zurg,
    dir: TempDir,
}

fn run_units(mode: Mode, units: &[(&str, &str)]) -> Run {
    let dir = TempDir::new("run");
    for (name, text) in units {
        dir.write(&format!("units/{name}.toml"), text);
    }
    let z = common::run_in(&dir, mode, &["--grace", "1s"]);
    Run { z, dir }
}

#[test]
fn a_sigkilled_service_is_restarted_with_a_new_pid() {
    let mut r = run_units(Mode::Pid1, &[("web", SLEEPER)]);
    let first = pid_in(&r.z.expect("[web] started pid"));
    let host = find_below(&r.z, "sleep 1000");
    kill(host, 9);
    r.z.expect(&format!("[web] pid {first} exited with signal SIGKILL"));
    r.z.expect("[web] restarting now");
    let second = pid_in(&r.z.expect("[web] started pid"));
    assert_ne!(first, second);
}

#[test]
fn restart_never_and_on_failure() {
    let mut r = run_units(
        Mode::Pid1,
        &[
            ("once", "exec = \"/bin/sh\"\nargs = [\"-c\", \"exit 1\"]\nrestart = \"never\"\n"),
            ("fine", "exec = \"/bin/sh\"\nargs = [\"-c\", \"exit 0\"]\nrestart = \"on-failure\"\n"),
            ("flaky", "exec = \"/bin/sh\"\nargs = [\"-c\", \"exit 2\"]\nrestart = \"on-failure\"\nrestart_delay_ms = 50\n"),
        ],
    );
    r.z.saw("[once] ended with code 1; restart policy keeps it down");
    r.z.saw("[fine] ended with code 0; restart policy keeps it down");
    // flaky (on-failure, exit code 2) keeps being restarted
    eventually("flaky started 3 times", || {
        r.z.lines_now()
            .iter()
            .filter(|l| l.contains("[flaky] started pid"))
            .count()
            >= 3
    });
    let seen = r.z.lines_now().to_vec();
    assert_eq!(
        seen.iter().filter(|l| l.contains("[once] started")).count(),
        1,
        "{seen:?}"
    );
    assert_eq!(
        seen.iter().filter(|l| l.contains("[fine] started")).count(),
        1,
        "{seen:?}"
    );
}

#[test]
fn backoff_grows_in_a_crash_loop() {
    let mut r = run_units(Mode::Pid1, &[("crash", "exec = \"/bin/false\"\n")]);
    r.z.expect("[crash] restarting now");
    r.z.expect("[crash] restarting in 100 ms");
    r.z.expect("[crash] restarting in 200 ms");
    r.z.expect("[crash] restarting in 400 ms");
    r.z.expect("[crash] restarting in 800 ms");
}

#[test]
fn sigterm_stops_every_service_then_exits_0() {
    let marks = TempDir::new("marks");
    let mut r = run_units(
        Mode::Pid1,
        &[
            ("a", SLEEPER),
            ("stubborn", &format!("exec = \"/bin/sh\"\nargs = [\"-c\", \"trap '' TERM; touch {}/stubborn; while :; do sleep 0.05; done\"]\nstop_timeout_ms = 300\n", marks.path().display())),
            ("quitter", &format!("exec = \"/bin/sh\"\nargs = [\"-c\", \"trap 'exit 0' QUIT; touch {}/quitter; while :; do sleep 0.05; done\"]\nstop_signal = \"QUIT\"\n", marks.path().display())),
        ],
    );
    r.z.saw("[a] started pid");
    // the traps are set once the marker files exist
    eventually("services ready", || {
        marks.path().join("stubborn").exists() && marks.path().join("quitter").exists()
    });
    r.z.signal(15);
    r.z.expect("received SIGTERM: stopping all services");
    r.z.expect("[stubborn] pid");
    r.z.expect("shutdown complete");
    assert_eq!(r.z.wait_exit().code(), Some(0));
    let seen = r.z.lines_now().join("\n");
    assert!(
        seen.contains("did not stop within 300 ms: sent SIGKILL"),
        "{seen}"
    );
    assert!(
        seen.contains("[quitter] stopped pid") && seen.contains("(code 0)"),
        "{seen}"
    );
    assert!(seen.contains("[a] stopped pid"), "{seen}");
}

/// A SIGTERM from the moment zurg holds it (the first line of `main`),
/// through its set-up (cgroups, the state lock, the socket) into its
/// first services, is a clean shutdown with exit 0 every time: as PID 1 a
/// signal it did not hold yet would be dropped (zurg would run on), as a
/// plain process it would kill zurg without a shutdown.
#[test]
fn a_sigterm_during_set_up_is_a_clean_shutdown_every_time() {
    for i in 0..10u64 {
        let mode = if i % 2 == 0 { Mode::Pid1 } else { Mode::Plain };
        let mut r = run_units(mode, &[("a", SLEEPER)]);
        let pid = r.z.host_pid();
        common::until_blocks(pid, 15);
        // Not a wait for anything: it moves where in the start the signal
        // lands.
        let land = std::time::Instant::now() + Duration::from_micros(i * 400);
        while std::time::Instant::now() < land {
            std::hint::spin_loop();
        }
        kill(pid, 15);
        r.z.expect("shutdown complete");
        assert_eq!(r.z.wait_exit().code(), Some(0), "run {i}: {:?}", r.z.seen);
        let said = r.z.lines_now().join("\n");
        assert!(said.contains("received SIGTERM"), "run {i}: {said}");
        if let Some(line) = r.z.seen.iter().find(|l| l.contains("[a] started pid")) {
            let started = pid_in(line);
            assert!(
                said.contains(&format!("[a] stopped pid {started}")),
                "run {i}: {said}"
            );
        }
    }
}

/// zurg holds TERM and INT from its first line; its services start with
/// the mask zurg was started with (nothing blocked), not the held one.
/// perl, not sh, reads the mask (dash clears its mask when it starts) and
/// says it on stderr, which the test reads.
#[test]
fn a_service_starts_with_no_signal_blocked() {
    for mode in [Mode::Pid1, Mode::Plain] {
        let unit = "exec = \"/usr/bin/perl\"\nargs = [\"-ne\", \"print STDERR $_ if /^SigBlk/\", \"/proc/self/status\"]\nrestart = \"never\"\n";
        let mut r = run_units(mode, &[("m", unit)]);
        let line = r.z.expect("SigBlk:");
        assert!(line.ends_with("SigBlk:\t0000000000000000"), "{line}");
        r.z.signal(15);
        assert_eq!(r.z.wait_exit().code(), Some(0));
    }
}

#[test]
fn not_pid1_shutdown_leaves_no_process_behind() {
    let mut r = run_units(
        Mode::Plain,
        &[
            ("svc", SLEEPER),
            // leaves a double-forked orphan that ignores TERM: zurg, as
            // subreaper, inherits it and must SIGKILL it at the end
            ("forker", "exec = \"/bin/sh\"\nargs = [\"-c\", \"(sh -c 'trap \\\"\\\" TERM; sleep 1000' &); sleep 1000\"]\n"),
        ],
    );
    r.z.saw("[svc] started pid");
    r.z.saw("[forker] started pid");
    let zpid = r.z.host_pid();
    eventually("the orphan re-parented to zurg", || {
        common::children(zpid)
            .iter()
            .any(|p| cmdline(*p).contains("trap"))
    });
    eventually("three sleeps running", || {
        r.z.descendants()
            .iter()
            .filter(|p| cmdline(**p).ends_with("sleep 1000"))
            .count()
            >= 3
    });
    let before = r.z.descendants();
    r.z.signal(15);
    r.z.expect("shutdown complete");
    assert_eq!(r.z.wait_exit().code(), Some(0));
    for p in before {
        assert!(state(p).is_none(), "pid {p} ({}) outlived zurg", cmdline(p));
    }
    drop(r.dir);
}

#[test]
fn a_broken_unit_is_reported_and_the_others_run() {
    let mut r = run_units(
        Mode::Pid1,
        &[
            ("good", SLEEPER),
            ("bad", "exec = \"/bin/sleep\"\nrestrat = \"always\"\n"),
            ("worse", "exec = [\n"),
        ],
    );
    let err = r.z.expect("bad.toml");
    assert!(
        err.contains("bad.toml:2:1: key `restrat`: unknown field `restrat`"),
        "{err}"
    );
    let err = r.z.expect("worse.toml");
    assert!(err.contains("worse.toml:1:"), "{err}");
    r.z.expect("[good] started pid");
    r.z.saw("2 rejected");
}

#[test]
fn orphans_of_a_service_are_reaped_while_it_runs() {
    let dir = TempDir::new("svc-orphans");
    let marker = dir.path().join("spawned");
    let script = format!(
        "i=0; while [ $i -lt 1000 ]; do (sleep 0.2 &); i=$((i+1)); done; touch {}; exec sleep 1000",
        marker.display()
    );
    let unit = format!("exec = \"/bin/sh\"\nargs = [\"-c\", {script:?}]\n");
    let mut r = run_units(Mode::Pid1, &[("spawner", &unit)]);
    let pid = pid_in(&r.z.expect("[spawner] started pid"));
    eventually("1000 orphans spawned", || marker.exists());
    let zpid = r.z.host_pid();
    eventually("every orphan reaped", || {
        let kids = common::children(zpid);
        kids.len() == 1 && kids.iter().all(|p| state(*p) != Some('Z'))
    });
    // the service itself was neither restarted nor confused with an orphan
    let seen = r.z.lines_now().join("\n");
    assert!(!seen.contains("exited"), "{seen}");
    assert!(seen.contains(&format!("[spawner] started pid {pid}")));
}

#[test]
fn sighup_reloads_keeping_unchanged_services() {
    let mut r = run_units(
        Mode::Pid1,
        &[("keep", SLEEPER), ("change", SLEEPER), ("drop", SLEEPER)],
    );
    let keep = pid_in(&r.z.saw("[keep] started pid"));
    let change = pid_in(&r.z.saw("[change] started pid"));
    r.z.saw("[drop] started pid");
    let units = r.dir.path().join("units");
    std::fs::write(
        units.join("change.toml"),
        "exec = \"/bin/sleep\"\nargs = [\"999\"]\n",
    )
    .unwrap();
    std::fs::remove_file(units.join("drop.toml")).unwrap();
    std::fs::write(units.join("new.toml"), SLEEPER).unwrap();
    std::fs::write(units.join("broken.toml"), "exec = 5\n").unwrap();
    r.z.signal(1);
    r.z.expect("1 added, 1 changed, 1 removed, 1 unchanged, 1 rejected");
    r.z.saw("[drop] stopped pid");
    r.z.saw(&format!("[change] stopped pid {change}"));
    eventually("change started again", || {
        r.z.lines_now()
            .iter()
            .any(|l| l.contains("[change] started pid") && pid_in(l) != change)
    });
    r.z.saw("[new] started pid");
    assert!(r
        .z
        .try_wait_line(Duration::from_millis(200), &|l: &str| l.contains("[keep]"))
        .is_none());
    assert!(r
        .z
        .seen
        .iter()
        .all(|l| !l.contains("[keep]") || l.contains(&format!("started pid {keep}"))));
}
