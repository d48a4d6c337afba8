//! overrides.json is read and written off the event loop
//! (src/supervisor/overrides_read.rs, clock_writer.rs): a state disk that
//! hangs on it stalls neither `status` nor restarts; an upgrade whose save
//! hangs is answered and says so; a reload that cannot read the file says
//! so and changes nothing, rather than putting the unit files' builds back
//! over upgraded ones. The hung disk is a FIFO that nobody opens at the
//! other end: opening it blocks, as a dead NFS server does. zurg runs as
//! PID 1 in a pid namespace.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::Path;
use std::time::{Duration, Instant};

use common::{cli, eventually, status_of, text, timed_status, Mode, TempDir, Zurg};

/// The 3 s read deadline, and room for a debug build on 2 shared cores.
const DEADLINE_AND_ROOM: Duration = Duration::from_secs(10);

fn pid_of(dir: &TempDir, name: &str) -> i64 {
    let st = timed_status(dir, name);
    st["pid"].as_i64().unwrap_or_else(|| panic!("{name}: {st}"))
}

/// api at build 1.0 (2.0 deployed beside it) and `other`, a plain service.
fn units(dir: &TempDir) -> String {
    let (v1, sum1) = common::deploy_build(dir, "api", "1.0", "/bin/sleep");
    let (_v2, sum2) = common::deploy_build(dir, "api", "2.0", "/bin/sleep");
    dir.write("units/api.toml", &common::build_unit(&v1, "1.0", &sum1));
    dir.write(
        "units/other.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    sum2
}

fn boot(dir: &TempDir) -> Zurg {
    let t = Instant::now();
    let mut z = common::run_in(dir, Mode::Pid1, &[]);
    for name in ["api", "other"] {
        let needle = format!("[{name}] started pid");
        // In either order: a line seen while waiting for the other counts.
        let seen = z.lines_now().iter().any(|l| l.contains(&needle));
        let left = DEADLINE_AND_ROOM.saturating_sub(t.elapsed());
        if !seen
            && z.try_wait_line(left, &|l: &str| l.contains(&needle))
                .is_none()
        {
            panic!(
                "{name} did not start within {DEADLINE_AND_ROOM:?}; zurg said:\n{}",
                z.lines_now().join("\n")
            );
        }
    }
    z
}

fn stop(mut z: Zurg) {
    z.signal(libc::SIGTERM);
    assert!(z.wait_exit().success(), "{:?}", z.seen);
}

fn fifo(path: &Path) {
    let _ = std::fs::remove_file(path);
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
}

/// `zurg restart NAME` gives a new pid, promptly.
fn restarts(dir: &TempDir, name: &str) {
    let before = pid_of(dir, name);
    let t = Instant::now();
    let out = cli(dir, &["restart", name]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        t.elapsed() < DEADLINE_AND_ROOM,
        "restart took {:?}",
        t.elapsed()
    );
    assert_ne!(pid_of(dir, name), before, "{name} was not restarted");
}

/// Runs `zurg reload` on a thread while the test checks `status`; its
/// output and how long it took.
fn reload_while_status_answers(dir: &TempDir) -> (std::process::Output, Duration) {
    let t = Instant::now();
    let reload = common::cli_in_background(dir, &["reload"]);
    // The reload waits on the file; the loop does not.
    timed_status(dir, "other");
    timed_status(dir, "api");
    let out = reload.join().unwrap();
    (out, t.elapsed())
}

#[test]
fn a_hung_overrides_json_stalls_nothing_and_a_reload_says_it_was_not_applied() {
    let dir = TempDir::new("ovr-hung-read");
    let sum2 = units(&dir);
    let overrides = dir.path().join("state/overrides.json");

    // A healthy run that upgrades api to 2.0: overrides.json says so.
    let z = boot(&dir);
    let out = common::upgrade(&dir, "api", "2.0", &sum2, "200ms");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        !String::from_utf8_lossy(&out.stdout).contains("warning"),
        "{}",
        text(&out)
    );
    stop(z);
    let saved = std::fs::read(&overrides).unwrap();
    assert!(String::from_utf8_lossy(&saved).contains("2.0"));

    // The next boot finds overrides.json hung.
    fifo(&overrides);
    let t = Instant::now();
    let mut z = boot(&dir);
    eprintln!(
        "hung overrides.json: services started {:?} after spawn",
        t.elapsed()
    );
    let line = z.saw("did not answer within 3 s");
    assert!(
        line.contains(&overrides.display().to_string())
            && line.contains("services start on their unit files' builds"),
        "{line}"
    );
    // Loudly on the unit file's build, and an upgrade now would save over
    // builds it does not know: refused.
    assert_eq!(timed_status(&dir, "api")["version"], "1.0");
    let out = common::upgrade(&dir, "api", "2.0", &sum2, "200ms");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stderr).contains("has not been read"),
        "{}",
        text(&out)
    );
    restarts(&dir, "other");

    // A reload waits for the file off the loop, then says it did nothing.
    let (out, took) = reload_while_status_answers(&dir);
    eprintln!("reload with a hung overrides.json answered in {took:?}");
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("overrides.json unreadable") && err.contains("reload not applied"),
        "{}",
        text(&out)
    );
    assert!(took < DEADLINE_AND_ROOM, "reload took {took:?}");
    restarts(&dir, "api");
    assert_eq!(timed_status(&dir, "api")["version"], "1.0");

    // The disk comes back: the read still waiting gets the file, and the
    // next reload puts the upgraded build back.
    let mut w = std::fs::OpenOptions::new()
        .write(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&overrides)
        .expect("zurg's read of overrides.json is waiting on the FIFO");
    w.write_all(&saved).unwrap();
    drop(w);
    let out = cli(&dir, &["reload"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("changed:   api"),
        "{}",
        text(&out)
    );
    eventually("api back on 2.0", || {
        let st = status_of(&dir, "api");
        st["version"] == "2.0" && st["state"] == "running"
    });
    // Known again: upgrades and rollbacks are allowed.
    let out = cli(&dir, &["rollback", "api"]);
    assert!(out.status.success(), "{}", text(&out));
    stop(z);
}

#[test]
fn an_upgrade_whose_save_hangs_is_answered_and_says_so() {
    let dir = TempDir::new("ovr-hung-save");
    let sum2 = units(&dir);
    let z = boot(&dir);
    // The save goes through overrides.tmp: a FIFO there hangs it.
    let tmp = dir.path().join("state/overrides.tmp");
    fifo(&tmp);

    let t = Instant::now();
    let out = common::upgrade(&dir, "api", "2.0", &sum2, "200ms");
    let took = t.elapsed();
    eprintln!("upgrade with a hung save answered in {took:?}");
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("api: running version 2.0")
            && stdout.contains("has not been written yet")
            && stdout.contains("will not survive a restart of zurg"),
        "{}",
        text(&out)
    );
    assert!(took < DEADLINE_AND_ROOM, "upgrade took {took:?}");
    assert_eq!(timed_status(&dir, "api")["version"], "2.0");
    restarts(&dir, "other");
    restarts(&dir, "api");

    // The file lacks the upgrade: a reload keeps the one in force.
    let (out, took) = reload_while_status_answers(&dir);
    eprintln!("reload with a save pending answered in {took:?}");
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unchanged: 2"),
        "{}",
        text(&out)
    );
    assert_eq!(timed_status(&dir, "api")["version"], "2.0");

    // A rollback while the save still hangs: answered, and says so too.
    let out = cli(&dir, &["rollback", "api"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("api: rolled back, running") && stdout.contains("has not been written yet"),
        "{}",
        text(&out)
    );
    assert_eq!(timed_status(&dir, "api")["version"], "1.0");

    // The disk comes back: the write that waited (the upgrade's) goes
    // through, then the rollback's, which must end on disk: a later save
    // is never overtaken by an earlier one.
    let mut r = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&tmp)
        .unwrap();
    let mut got = Vec::new();
    let deadline = Instant::now() + common::DEADLINE;
    loop {
        let mut buf = [0u8; 4096];
        match r.read(&mut buf) {
            Ok(0) if !got.is_empty() => break,
            Ok(n) => got.extend_from_slice(&buf[..n]),
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {}
            Err(e) => panic!("reading overrides.tmp: {e}"),
        }
        assert!(Instant::now() < deadline, "the save never came");
        std::thread::yield_now();
    }
    let saved: serde_json::Value = serde_json::from_slice(&got).unwrap();
    assert_eq!(
        saved["services"]["api"]["current"]["version"], "2.0",
        "{saved}"
    );
    // The FIFO was renamed over overrides.json; the rollback's save replaces
    // it with a file.
    let overrides = dir.path().join("state/overrides.json");
    eventually("the rollback's save on disk", || {
        std::fs::metadata(&overrides).is_ok_and(|m| m.is_file())
            && serde_json::from_slice::<serde_json::Value>(
                &std::fs::read(&overrides).unwrap_or_default(),
            )
            .is_ok_and(|v| v["services"]["api"]["current"]["version"] == "1.0")
    });
    stop(z);
}

#[test]
fn a_hung_journal_and_overrides_json_cost_boot_one_deadline_not_two() {
    let dir = TempDir::new("ovr-hung-both");
    units(&dir);
    stop(boot(&dir));
    // The whole state directory's reads hang, as on a dead disk; without a
    // clock file, the GPID floor waits for the journal's deadline too.
    std::fs::remove_file(dir.path().join("state/clock")).unwrap();
    fifo(&dir.path().join("state/journal"));
    fifo(&dir.path().join("state/overrides.json"));
    let t = Instant::now();
    let mut z = boot(&dir);
    let took = t.elapsed();
    eprintln!("hung journal and overrides.json: services started {took:?} after spawn");
    z.saw("are not looked for");
    z.saw("services start on their unit files' builds");
    // The two 3 s deadlines run side by side: one after the other would
    // be 6 s at least.
    assert!(
        took < Duration::from_secs(6),
        "services started {took:?} after spawn"
    );
    restarts(&dir, "other");
    stop(z);
}
