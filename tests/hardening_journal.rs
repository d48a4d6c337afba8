//! The journal and zurg's own output under stress (issue "Hardening"): a
//! full disk under --state, against zurg as PID 1 in a pid namespace.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::PathBuf;

use common::{json, ok, TempDir, Zurg};

/// `zurg run` as PID 1 with its --state on a tmpfs of `size`, mounted in
/// the namespace's own mount table (unshare makes it private), so nothing
/// leaks to the host.
fn run_with_small_state(dir: &TempDir, size: &str) -> (Zurg, PathBuf) {
    common::run_with_state_mount(
        dir,
        &format!("mount -t tmpfs -o size={size} zurg-test-state \"$state\""),
    )
}

fn restart(dir: &TempDir) {
    ok(dir, &["restart", "svc"]);
}

#[test]
fn history_resumes_after_a_full_disk_and_counts_what_it_lost() {
    let dir = TempDir::new("journal-full");
    dir.write(
        "units/svc.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nstop_timeout_ms = 2000\n",
    );
    let (mut z, state) = run_with_small_state(&dir, "256k");
    common::eventually("svc started and journaled", || {
        json(&dir, &["history", "svc"])
            .as_array()
            .is_some_and(|a| !a.is_empty())
    });
    common::fill(&state.join("filler"));

    // The journal's last page may still have room for a few records: restart
    // until a write fails (one restart = an exit and a start record).
    let mut restarts = 0;
    let failed = |z: &mut Zurg| {
        z.lines_now()
            .iter()
            .any(|l| l.contains("cannot write journal"))
    };
    while !failed(&mut z) {
        assert!(restarts < 100, "the journal never failed on a full disk");
        restart(&dir);
        restarts += 1;
    }
    for _ in 0..3 {
        restart(&dir);
        restarts += 1;
    }
    let warnings = z
        .lines_now()
        .iter()
        .filter(|l| l.contains("cannot write journal"))
        .count();
    assert_eq!(warnings, 1, "one line for the failure: {:?}", z.seen);

    std::fs::remove_file(state.join("filler")).unwrap();
    restart(&dir);
    restarts += 1;
    let line = z.expect("journal writes again");
    let lost: usize = line
        .split_whitespace()
        .find_map(|w| w.parse().ok())
        .unwrap_or_else(|| panic!("no count in {line:?}"));
    assert!(
        lost >= 6,
        "three restarts while failing lose six records: {line}"
    );

    // Everything not counted as lost is there, with no damaged record, and
    // the newest start is the running process.
    let history = json(&dir, &["history", "svc"]);
    let history = history.as_array().unwrap();
    assert_eq!(history.len(), 1 + 2 * restarts - lost, "{history:?}");
    let running = json(&dir, &["status", "svc"])[0]["gpid"].clone();
    assert_eq!(history.last().unwrap()["gpid"], running);
    assert!(
        !z.lines_now().iter().any(|l| l.contains("checksum")),
        "{:?}",
        z.seen
    );
}

#[test]
fn one_bad_byte_in_the_middle_of_the_journal_costs_one_record() {
    let dir = TempDir::new("journal-flip");
    dir.write(
        "units/svc.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nstop_timeout_ms = 2000\n",
    );
    let mut z = common::run_in(&dir, common::Mode::Pid1, &[]);
    z.expect("loaded");
    for _ in 0..20 {
        restart(&dir);
    }
    let before = json(&dir, &["history", "svc"]).as_array().unwrap().clone();
    assert_eq!(
        before.len(),
        41,
        "a start, then an exit and a start per restart"
    );
    z.signal(15);
    z.wait_exit();
    drop(z);

    // Flip one byte in the middle of a record's JSON, as a bad sector would.
    let path = dir.path().join("state/journal");
    let mut data = std::fs::read(&path).unwrap();
    let mid = data.len() / 2;
    data[mid] ^= 0x08;
    std::fs::write(&path, &data).unwrap();

    let mut z = common::run_in(&dir, common::Mode::Pid1, &[]);
    z.saw("skipped");
    z.saw("[svc] started pid");
    let after = json(&dir, &["history", "svc"]).as_array().unwrap().clone();
    // Before the fix everything after the bad byte was gone (41 -> 15).
    let kept: Vec<_> = before.iter().filter(|r| after.contains(r)).collect();
    assert_eq!(kept.len(), 40, "only the record holding the byte is lost");
    // A lost exit leaves its start open, which boot closes as lost (its
    // process is long gone) before this run's start.
    let damaged = before.iter().find(|r| !after.contains(r)).unwrap();
    let closed_at_boot = usize::from(damaged["kind"] == "exit");
    assert_eq!(
        after.len(),
        42 + closed_at_boot,
        "40 kept, the exit at the first run's shutdown, [the damaged exit's start closed at boot,] this run's start: {after:?}"
    );
    assert_eq!(after[..40].iter().collect::<Vec<_>>(), kept);
    if closed_at_boot == 1 {
        assert_eq!(after[41]["gpid"], damaged["gpid"], "{after:?}");
        assert_eq!(after[41]["reason"], "lost: not running at boot");
    }
}
