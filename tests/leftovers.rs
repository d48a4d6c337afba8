//! A `zurg run` that is not PID 1 and gets SIGKILLed: its services die with
//! it (their death signal), and what survives is stopped by the next zurg
//! on the same state directory before it starts its own (docs/design.md,
//! "Services a killed zurg leaves behind"). Each zurg here runs as a plain
//! process inside a pid namespace of its own, so nothing leaks.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{
    cmdline, eventually, find_below, ns_pid, pid_in, run_in, state, Mode, Namespace, TempDir, Zurg,
};
use zurg::journal::{Appended, Journal, Record, DEFAULT_LIMIT};

/// Gone, or dead and waiting for the namespace's PID 1 to reap it.
fn dead(host: i32) -> bool {
    matches!(state(host), None | Some('Z'))
}

/// Processes of the namespace running exactly `cmd` (zombies have no
/// cmdline).
fn running(ns: &Namespace, cmd: &str) -> Vec<i32> {
    ns.processes()
        .into_iter()
        .filter(|p| cmdline(*p) == cmd)
        .collect()
}

/// zurg (not PID 1) in `ns` on DIR's units, with a short grace period.
fn zurg_in(ns: &Namespace, dir: &TempDir) -> Zurg {
    run_in(dir, Mode::PlainInPidNs(ns.init()), &["--grace", "1s"])
}

#[test]
fn a_killed_zurg_takes_its_services_with_it() {
    let ns = Namespace::new();
    let dir = TempDir::new("pdeath");
    dir.write(
        "units/web.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    let mut z = zurg_in(&ns, &dir);
    z.expect("[web] started pid");
    let service = find_below(&z, "sleep 1000");
    z.signal(9);
    z.wait_exit();
    eventually("the service to die with its zurg", || dead(service));
    assert!(running(&ns, "sleep 1000").is_empty());
}

/// Ignores SIGTERM, its stop and death signal, across the exec.
const STUBBORN: &str = "exec = \"/bin/sh\"\nargs = [\"-c\", \"trap '' TERM; exec sleep 1001\"]\nstop_timeout_ms = 300\n";

#[test]
fn a_leftover_is_stopped_before_the_next_zurg_starts_its_own() {
    let ns = Namespace::new();
    let dir = TempDir::new("leftover");
    dir.write("units/stubborn.toml", STUBBORN);
    let mut first = zurg_in(&ns, &dir);
    let old_pid = pid_in(&first.expect("[stubborn] started pid"));
    // Exactly `sleep 1001`: past the exec, so the shell's trap is in place
    // (the shell's own command line also contains "sleep 1001").
    let old = spawned(&ns, "sleep 1001");
    first.signal(9);
    first.wait_exit();
    assert!(!dead(old), "the service ignores its death signal");

    let mut second = zurg_in(&ns, &dir);
    second.expect(&format!(
        "stopping stubborn pid {old_pid} left by a previous zurg (SIGTERM, SIGKILL after 300 ms)"
    ));
    second.expect(&format!(
        "stubborn pid {old_pid} left by a previous zurg did not stop: sent SIGKILL"
    ));
    second.expect(&format!(
        "stubborn pid {old_pid} left by a previous zurg is gone"
    ));
    let new_pid = pid_in(&second.expect("[stubborn] started pid"));
    assert_ne!(new_pid, old_pid);
    // Waited for before the start: at most a zombie for PID 1 to reap.
    assert!(dead(old), "the leftover still runs: {:?}", state(old));
    // The new copy may not have reached its exec yet.
    let mut now = Vec::new();
    eventually("the new copy to run sleep", || {
        now = running(&ns, "sleep 1001");
        !now.is_empty()
    });
    assert_eq!(now.len(), 1, "exactly one copy runs: {now:?}");
    assert_eq!(ns_pid(now[0]), Some(new_pid));
}

#[test]
fn what_a_killed_zurgs_service_started_is_stopped_too() {
    let ns = Namespace::new();
    let dir = TempDir::new("helper");
    // A helper in a session of its own, which the death signal of the
    // service's main process does not reach.
    dir.write(
        "units/web.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"setsid sleep 1005 & exec sleep 1006\"]\n",
    );
    let mut first = zurg_in(&ns, &dir);
    first.expect("[web] started pid");
    let helper = spawned(&ns, "sleep 1005");
    let main = spawned(&ns, "sleep 1006");
    let helper_ns = ns_pid(helper).unwrap();
    first.signal(9);
    first.wait_exit();
    eventually("the main process to die with its zurg", || dead(main));
    assert!(!dead(helper), "the helper has no death signal");

    let mut second = zurg_in(&ns, &dir);
    second.expect(&format!(
        "stopping web pid {helper_ns} left by a previous zurg (SIGTERM"
    ));
    second.expect(&format!(
        "web pid {helper_ns} left by a previous zurg is gone"
    ));
    second.expect("[web] started pid");
    assert!(dead(helper), "the helper still runs: {:?}", state(helper));
}

/// A journal start record, as zurg writes it, for pid `pid` started at
/// `start_us`.
fn start_record(service: &str, start_us: u64, pid: i32) -> Record {
    Record {
        time_us: start_us,
        service: service.into(),
        kind: zurg::journal::Kind::Start,
        gpid: format!("127.0.0.1:0:{start_us}:{pid}"),
        ..Default::default()
    }
}

/// Finds the host pid of the namespace process running exactly `cmd`.
fn spawned(ns: &Namespace, cmd: &str) -> i32 {
    let mut found = None;
    eventually(&format!("{cmd} in the namespace"), || {
        found = running(ns, cmd).first().copied();
        found.is_some()
    });
    found.unwrap()
}

#[test]
fn a_reused_pid_is_not_killed() {
    let ns = Namespace::new();
    let dir = TempDir::new("reused");
    dir.write(
        "units/web.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1004\"]\n",
    );
    let now_us = zurg::os::wall_clock_us();
    // Unrelated to any zurg: one has the pid a record names, but started an
    // hour after it; the other matches its record's start time, which shows
    // the check ran at all.
    let mut unrelated = ns.spawn(&["sleep", "1002"]);
    let mut matching = ns.spawn(&["sleep", "1003"]);
    let reused = spawned(&ns, "sleep 1002");
    let matched = spawned(&ns, "sleep 1003");
    let (reused_ns, matched_ns) = (ns_pid(reused).unwrap(), ns_pid(matched).unwrap());
    let (mut journal, _) = Journal::open(&dir.path().join("state"), DEFAULT_LIMIT).unwrap();
    for record in [
        start_record("old", now_us - 3_600_000_000, reused_ns),
        start_record("gone", now_us, matched_ns),
    ] {
        assert!(matches!(journal.append(&record), Appended::Written));
    }
    drop(journal);

    let mut z = zurg_in(&ns, &dir);
    z.expect(&format!(
        "stopping gone pid {matched_ns} left by a previous zurg (SIGTERM"
    ));
    z.expect("[web] started pid");
    assert!(dead(matched), "the matching process still runs");
    let said = z.lines_now().join("\n");
    assert!(
        !said.contains(&format!("pid {reused_ns} left")),
        "touched the reused pid:\n{said}"
    );
    assert_eq!(state(reused).map(|s| s != 'Z'), Some(true), "killed it");
    assert!(unrelated.try_wait().unwrap().is_none());
    assert!(matching.try_wait().is_ok());
}

#[test]
fn a_clock_file_write_that_hangs_holds_up_no_start_or_restart() {
    let dir = TempDir::new("clock-fifo");
    dir.write(
        "units/flap.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"exit 1\"]\n",
    );
    // Opening a FIFO nobody reads for writing never returns: the clock
    // file's write hangs the way a stuck file system would.
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    nix::unistd::mkfifo(
        &dir.path().join("state/clock.tmp"),
        nix::sys::stat::Mode::from_bits_truncate(0o600),
    )
    .unwrap();
    let mut z = run_in(&dir, Mode::Pid1, &["--grace", "1s"]);
    for _ in 0..3 {
        z.expect("[flap] started pid");
        z.expect("[flap] restarting");
    }
    z.signal(15);
    z.expect("the GPID clock file was not written within 300 ms of exit");
    assert!(z.wait_exit().success());
}
