//! A state directory whose disk hangs at boot (src/supervisor/boot_read.rs):
//! services start all the same within a bound, `status` answers, the
//! warning names the file that hangs, and GPIDs stay unique and later than
//! the previous run's. The hung disk is a FIFO in the journal's place that
//! nobody writes: opening it for reading blocks, as a read on a dead NFS
//! server does. zurg runs as PID 1 in a pid namespace.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashSet;
use std::time::{Duration, Instant};

use common::{cli, gpid_fields, timed_cli, Mode, TempDir, Zurg};

const SERVICES: [&str; 3] = ["a", "b", "c"];
/// boot_read's 3 s deadline, and room for a debug build on 2 shared cores.
/// A boot that waits on the disk never starts them.
const STARTED_WITHIN: Duration = Duration::from_secs(10);

fn units(dir: &TempDir) {
    for name in SERVICES {
        dir.write(
            &format!("units/{name}.toml"),
            "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
        );
    }
}

/// Each service's GPID from `status`, which must answer within its bound.
fn gpids(dir: &TempDir) -> Vec<String> {
    let out = timed_cli(dir, &["status", "--json"]);
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let rows = reply["result"].as_array().unwrap();
    SERVICES
        .iter()
        .map(|name| {
            let row = rows.iter().find(|r| r["name"] == *name).unwrap();
            row["gpid"]
                .as_str()
                .unwrap_or_else(|| panic!("{name} has no GPID: {row}"))
                .to_string()
        })
        .collect()
}

/// Starts zurg and waits for every service's start; how long that took.
fn boot(dir: &TempDir) -> (Zurg, Duration) {
    let t = Instant::now();
    let mut z = common::run_in(dir, Mode::Pid1, &[]);
    for name in SERVICES {
        let needle = format!("[{name}] started pid");
        let left = STARTED_WITHIN.saturating_sub(t.elapsed());
        if z.try_wait_line(left, &|l: &str| l.contains(&needle))
            .is_none()
        {
            panic!(
                "{name} did not start within {STARTED_WITHIN:?}; zurg said:\n{}",
                z.lines_now().join("\n")
            );
        }
    }
    (z, t.elapsed())
}

fn stop(mut z: Zurg) {
    z.signal(libc::SIGTERM);
    assert!(z.wait_exit().success(), "{:?}", z.seen);
}

/// A healthy run, stopped; the start times it issued.
fn previous_run(dir: &TempDir) -> Vec<u64> {
    let (z, took) = boot(dir);
    eprintln!("healthy state dir: 3 services started {took:?} after spawn");
    let starts = gpids(dir).iter().map(|g| gpid_fields(g).start_us).collect();
    stop(z);
    starts
}

/// The journal's place taken by a FIFO that nobody writes.
fn hang_journal(dir: &TempDir) -> String {
    let journal = dir.path().join("state/journal");
    std::fs::remove_file(&journal).unwrap();
    nix::unistd::mkfifo(&journal, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    journal.display().to_string()
}

/// The new run's GPIDs: unique, and each later than every earlier start.
fn assert_later_and_unique(dir: &TempDir, after_us: u64) {
    let now = gpids(dir);
    let unique: HashSet<&String> = now.iter().collect();
    assert_eq!(unique.len(), now.len(), "repeated GPIDs: {now:?}");
    for g in &now {
        assert!(
            gpid_fields(g).start_us > after_us,
            "{g} does not start after {after_us}"
        );
    }
}

#[test]
fn a_hung_journal_without_a_clock_file_starts_services_on_the_wall_clock() {
    let dir = TempDir::new("boot-hung");
    units(&dir);
    let before = previous_run(&dir);
    // No clock file: the journal alone would give the floor, and it hangs.
    std::fs::remove_file(dir.path().join("state/clock")).unwrap();
    let journal = hang_journal(&dir);

    let (mut z, took) = boot(&dir);
    eprintln!("hung journal, no clock file: 3 services started {took:?} after spawn");
    let clock_line = z.saw("the GPID clock goes by the wall clock alone");
    assert!(clock_line.contains(&journal), "{clock_line}");
    let leftovers_line = z.saw("are not looked for");
    assert!(leftovers_line.contains(&journal), "{leftovers_line}");
    assert!(
        leftovers_line.contains("did not answer within 3 s"),
        "{leftovers_line}"
    );
    assert_later_and_unique(&dir, *before.iter().max().unwrap());

    // A restart still gets a fresh, later GPID while the journal hangs.
    let old = gpids(&dir);
    let out = cli(&dir, &["restart", "a"]);
    assert!(out.status.success(), "{out:?}");
    let new = gpids(&dir);
    assert_ne!(new[0], old[0]);
    assert!(
        gpid_fields(&new[0]).start_us > gpid_fields(&old[0]).start_us,
        "{old:?} -> {new:?}"
    );
    stop(z);
}

#[test]
fn a_hung_journal_leaves_the_clock_file_in_charge() {
    let dir = TempDir::new("boot-hung-clock");
    units(&dir);
    previous_run(&dir);
    // As if the last run had issued start times an hour ahead of today's
    // wall clock (set back since): only the clock file knows.
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let mark = now_us + 3_600_000_000;
    dir.write("state/clock", &format!("{mark}\n"));
    let journal = hang_journal(&dir);

    let (mut z, took) = boot(&dir);
    eprintln!("hung journal, clock file: 3 services started {took:?} after spawn");
    let leftovers_line = z.saw("are not looked for");
    assert!(leftovers_line.contains(&journal), "{leftovers_line}");
    assert_later_and_unique(&dir, mark);
    assert!(
        !z.lines_now()
            .iter()
            .any(|l| l.contains("GPID clock goes by the wall clock")),
        "the clock file was read: {:?}",
        z.seen
    );
    stop(z);
}

#[test]
fn without_a_clock_file_the_journals_newest_believable_start_is_the_floor() {
    let dir = TempDir::new("boot-journal-floor");
    units(&dir);
    previous_run(&dir);
    std::fs::remove_file(dir.path().join("state/clock")).unwrap();
    // The last run issued start times an hour ahead of today's wall clock
    // (set back since), and one record says two days ahead, which a clock
    // set wrong once can leave and which is not believed.
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let hour = 3_600_000_000;
    let (believed, too_far) = (now_us + hour, now_us + 48 * hour);
    let mut data = Vec::new();
    for (t, pid) in [(believed, 7), (too_far, 8)] {
        data.extend(zurg::journal::frame(&zurg::journal::Record {
            time_us: t,
            service: "gone".into(),
            kind: zurg::journal::Kind::Exit,
            gpid: format!("10.1.2.3:0:{t}:{pid}"),
            ..Default::default()
        }));
    }
    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(dir.path().join("state/journal"))
        .unwrap()
        .write_all(&data)
        .unwrap();

    let (z, _) = boot(&dir);
    assert_later_and_unique(&dir, believed);
    for g in gpids(&dir) {
        assert!(
            gpid_fields(&g).start_us < too_far,
            "{g} followed an unbelievable start"
        );
    }
    stop(z);
}

#[test]
fn a_history_stuck_on_the_hung_journal_holds_up_no_reload_or_stats() {
    let dir = TempDir::new("boot-hung-history");
    units(&dir);
    previous_run(&dir);
    hang_journal(&dir);
    let (z, _) = boot(&dir);
    // `history` waits for the journal's disk, which never answers.
    let mut history = std::process::Command::new(common::BIN)
        .args(["history"])
        .env("ZURG_SOCKET", dir.path().join("control.sock"))
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap();
    // Asked before what follows (so that, sharing one thread, they would
    // queue behind it): the client has its socket and sleeps, waiting for
    // the answer.
    let waiting = || {
        let fds = std::fs::read_dir(format!("/proc/{}/fd", history.id()));
        let has_socket = fds.into_iter().flatten().flatten().any(|fd| {
            std::fs::read_link(fd.path()).is_ok_and(|l| l.to_string_lossy().starts_with("socket:"))
        });
        let stat =
            std::fs::read_to_string(format!("/proc/{}/stat", history.id())).unwrap_or_default();
        let sleeping = stat
            .rsplit(')')
            .next()
            .is_some_and(|r| r.trim_start().starts_with('S'));
        has_socket && sleeping
    };
    let deadline = Instant::now() + common::DEADLINE;
    while !waiting() {
        assert!(Instant::now() < deadline, "the history client never asked");
        std::thread::yield_now();
    }
    // What shared its thread before goes on: a reload (unit files read off
    // the loop) and stats (/proc sampled off the loop).
    for verb in [&["reload"][..], &["stats", "a"][..]] {
        let out = timed_cli(&dir, verb);
        assert!(out.status.success(), "{verb:?}: {out:?}");
    }
    assert!(
        history.try_wait().unwrap().is_none(),
        "history answered from a journal that cannot be read"
    );
    history.kill().unwrap();
    history.wait().unwrap();
    stop(z);
}
