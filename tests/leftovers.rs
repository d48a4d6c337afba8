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
    cmdline, eventually, find_below, gpid_of, history, ns_pid, pid_in, run_in, state, Mode,
    Namespace, TempDir, Zurg,
};
use serde_json::Value;
use std::os::unix::fs::MetadataExt;
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

/// Exactly one `sleep 1001` runs in `ns`, and it is zurg's `new_pid`
/// (the new copy may not have reached its exec yet: waited for).
fn only_the_new_copy_runs(ns: &Namespace, new_pid: i32) {
    let mut now = Vec::new();
    eventually("the new copy to run sleep", || {
        now = running(ns, "sleep 1001");
        !now.is_empty()
    });
    assert_eq!(now.len(), 1, "exactly one copy runs: {now:?}");
    assert_eq!(ns_pid(now[0]), Some(new_pid));
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
    only_the_new_copy_runs(&ns, new_pid);
}

/// The lost start record: the first zurg's journal is a FIFO nobody reads,
/// so its writer never writes the start of `stubborn` before the SIGKILL
/// (as a writer thread that had not yet run does under load). The next zurg
/// finds no open start, and stops the leftover all the same by the
/// `ZURG_STATE_ID` it carries.
#[test]
fn a_leftover_whose_start_was_never_written_is_stopped_too() {
    let ns = Namespace::new();
    let dir = TempDir::new("unrecorded");
    dir.write("units/stubborn.toml", STUBBORN);
    let journal = dir.path().join("state/journal");
    std::fs::create_dir_all(journal.parent().unwrap()).unwrap();
    nix::unistd::mkfifo(&journal, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    let mut first = zurg_in(&ns, &dir);
    let old_pid = pid_in(&first.expect("[stubborn] started pid"));
    let old = spawned(&ns, "sleep 1001");
    // What it carries, as docs/units.md gives it: `stat -c %d:%i STATE`.
    let dir_meta = std::fs::metadata(dir.path().join("state")).unwrap();
    let id = format!("ZURG_STATE_ID={}:{}", dir_meta.dev(), dir_meta.ino());
    let environ = std::fs::read(format!("/proc/{old}/environ")).unwrap();
    assert!(
        environ.split(|b| *b == 0).any(|e| e == id.as_bytes()),
        "no {id} in {:?}",
        String::from_utf8_lossy(&environ)
    );
    first.signal(9);
    first.wait_exit();
    assert!(!dead(old), "the service ignores its death signal");
    // Nothing of the first zurg's life reached a journal.
    std::fs::remove_file(&journal).unwrap();

    let mut second = zurg_in(&ns, &dir);
    let line = second.expect(&format!(
        "stopping stubborn pid {old_pid} left by a previous zurg (SIGTERM, SIGKILL after 300 ms)"
    ));
    assert!(line.contains("no open start"), "{line}");
    second.expect(&format!(
        "stubborn pid {old_pid} left by a previous zurg is gone"
    ));
    let new_pid = pid_in(&second.expect("[stubborn] started pid"));
    assert!(dead(old), "the leftover still runs: {:?}", state(old));
    only_the_new_copy_runs(&ns, new_pid);
    // No start, so no exit is made up for it: the new start alone.
    let h = history(&dir, "stubborn");
    assert_eq!(h.len(), 1, "{h:?}");
    assert_eq!(h[0]["kind"], "start", "{h:?}");
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
    journaled_start(&dir, "web");
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
    // Its start is closed as stopped, though its recorded process was
    // gone: what it started ran until this boot stopped it.
    let h = history(&dir, "web");
    assert_eq!(h[1]["kind"], "exit", "{h:?}");
    assert_eq!(h[1]["gpid"], h[0]["gpid"], "{h:?}");
    assert_eq!(
        h[1]["reason"],
        "stopped at boot: left running by a previous zurg (sent SIGTERM)"
    );
}

/// `service`'s GPID once its start record is in the journal, for a test
/// of how boot closes it: the journal's writer is a thread, and a zurg
/// SIGKILLed before it wrote the start leaves none to close (that case is
/// `a_leftover_whose_start_was_never_written_is_stopped_too`).
fn journaled_start(dir: &TempDir, service: &str) -> String {
    let gpid = gpid_of(dir, service);
    eventually("the start to reach the journal", || {
        !records_of(dir, service, &gpid).is_empty()
    });
    gpid
}

/// `service`'s history records of `gpid`, as `zurg history --json` shows
/// them, and where in the whole history each is.
fn records_of(dir: &TempDir, service: &str, gpid: &str) -> Vec<(usize, Value)> {
    history(dir, service)
        .into_iter()
        .enumerate()
        .filter(|(_, r)| r["gpid"] == gpid)
        .collect()
}

/// What the journal says zurg wrote when it closed a previous zurg's
/// open starts (an `info` line of zurg's log).
const CLOSED: &str = "a previous zurg left open";

#[test]
fn a_stopped_leftover_gets_its_exit_and_is_not_looked_for_again() {
    let ns = Namespace::new();
    let dir = TempDir::new("leftover-exit");
    dir.write("units/stubborn.toml", STUBBORN);
    let mut first = zurg_in(&ns, &dir);
    first.expect("[stubborn] started pid");
    let old_gpid = journaled_start(&dir, "stubborn");
    let old = spawned(&ns, "sleep 1001");
    first.signal(9);
    first.wait_exit();
    assert!(!dead(old), "the service ignores its death signal");

    let mut second = zurg_in(&ns, &dir);
    second.expect("left by a previous zurg did not stop: sent SIGKILL");
    second.expect(&format!(
        "journal: wrote the exits of 1 start(s) {CLOSED}: 1 stopped at boot, 0 no longer running"
    ));
    second.expect("[stubborn] started pid");
    let new_gpid = gpid_of(&dir, "stubborn");
    let old_records = records_of(&dir, "stubborn", &old_gpid);
    let kinds: Vec<&Value> = old_records.iter().map(|(_, r)| &r["kind"]).collect();
    assert_eq!(kinds, ["start", "exit"], "{old_records:?}");
    let (exit_at, exit) = &old_records[1];
    assert_eq!(
        exit["reason"],
        "stopped at boot: left running by a previous zurg (sent SIGTERM, then SIGKILL)"
    );
    assert_eq!(exit["exit"]["signal"], "SIGKILL");
    let new_records = records_of(&dir, "stubborn", &new_gpid);
    assert!(
        new_records
            .first()
            .is_some_and(|(at, r)| r["kind"] == "start" && at > exit_at),
        "the exit comes before this boot's start: {:?}",
        history(&dir, "stubborn")
    );
    second.signal(15);
    assert!(second.wait_exit().success());
    // A clean shutdown takes its pid out of the lock file: the next boot
    // has nothing to look for by ZURG_STATE_ID.
    let lock = std::fs::read_to_string(dir.path().join("state/lock")).unwrap();
    assert_eq!(lock, "", "a clean shutdown left its pid");

    let mut third = zurg_in(&ns, &dir);
    third.expect("[stubborn] started pid");
    let said = third.lines_now().join("\n");
    assert!(
        !said.contains(CLOSED) && !said.contains("left by a previous zurg"),
        "the third boot looked at the old start again:\n{said}"
    );
    let exits = records_of(&dir, "stubborn", &old_gpid)
        .into_iter()
        .filter(|(_, r)| r["kind"] == "exit")
        .count();
    assert_eq!(exits, 1, "{:?}", history(&dir, "stubborn"));
    third.signal(15);
    assert!(third.wait_exit().success());
}

#[test]
fn a_leftover_that_died_before_the_next_boot_is_written_as_lost() {
    let ns = Namespace::new();
    let dir = TempDir::new("leftover-lost");
    dir.write(
        "units/web.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1007\"]\n",
    );
    let mut first = zurg_in(&ns, &dir);
    first.expect("[web] started pid");
    let old_gpid = journaled_start(&dir, "web");
    let service = find_below(&first, "sleep 1007");
    first.signal(9);
    first.wait_exit();
    eventually("the service to die with its zurg", || dead(service));

    let mut second = zurg_in(&ns, &dir);
    second.expect(&format!(
        "journal: wrote the exits of 1 start(s) {CLOSED}: 0 stopped at boot, 1 no longer running"
    ));
    second.expect("[web] started pid");
    let said = second.lines_now().join("\n");
    assert!(
        !said.contains("left by a previous zurg"),
        "stopped something:\n{said}"
    );
    let old_records = records_of(&dir, "web", &old_gpid);
    let kinds: Vec<&Value> = old_records.iter().map(|(_, r)| &r["kind"]).collect();
    assert_eq!(kinds, ["start", "exit"], "{old_records:?}");
    let exit = &old_records[1].1;
    assert_eq!(exit["reason"], "lost: not running at boot");
    assert!(exit.get("exit").is_none(), "a status was made up: {exit}");
    second.signal(15);
    assert!(second.wait_exit().success());
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
    // The start whose pid another process holds now is closed as lost,
    // the one stopped as stopped.
    let old = history(&dir, "old");
    assert_eq!(old.len(), 2, "{old:?}");
    assert_eq!(old[1]["reason"], "lost: not running at boot");
    let gone = history(&dir, "gone");
    assert_eq!(gone.len(), 2, "{gone:?}");
    assert_eq!(
        gone[1]["reason"],
        "stopped at boot: left running by a previous zurg (sent SIGTERM)"
    );
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
