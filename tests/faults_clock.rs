//! Fault injection (issue 20): the wall clock jumps back an hour and forward
//! a day while timers are armed. The host's clock is shared, so this runs
//! zurg as /init of a qemu VM (tests/common/vm.rs) whose busybox `date -s`
//! changes only the VM's clock. Time namespaces do not cover
//! CLOCK_REALTIME, so there is no lighter way.
//!
//! Armed across the jumps: a crash loop's backoff (2 s), a stop's
//! `stop_timeout_ms` (3 s, the service ignores SIGTERM) and a health
//! probe's interval (1 s). Each one notes /proc/uptime (a clock the jumps
//! do not move) when it fires; the test checks every interval, and that
//! the GPIDs of the starts stay unique and increasing.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::vm::{add, boot, pack, prerequisites, root};
use common::TempDir;

const DRIVER: &str = r#"#!/bin/sh
up() { read u _ < /proc/uptime; echo "$u"; }
count() { if [ -f "$1" ]; then wc -l < "$1"; else echo 0; fi; }
waitfor() {
  i=0
  while [ "$(count "$1")" -lt "$2" ] && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
}
# the backoff is armed once the loop is past its first, immediate restart
waitfor /tmp/crash 3
echo "begin $(up)" > /tmp/stop
( /init stop stubborn >/dev/null; echo "end $(up)" >> /tmp/stop ) &
w0=$(date +%s); date -s "@$((w0 - 3600))" >/dev/null
w1=$(date +%s)
echo "VMTEST jumped back an hour at $(up)"
i=0
while ! grep -q end /tmp/stop && [ $i -lt 1200 ]; do sleep 0.05; i=$((i+1)); done
n=$(count /tmp/crash)
w2=$(date +%s); date -s "@$((w2 + 86400))" >/dev/null
w3=$(date +%s)
echo "VMTEST jumped forward a day at $(up)"
echo VMTEST-WALL $w0 $w1 $w2 $w3
waitfor /tmp/crash $((n + 3))
echo VMTEST-CRASH $(cat /tmp/crash)
echo VMTEST-PROBE $(cat /tmp/probe)
echo VMTEST-STOP $(cat /tmp/stop)
echo VMTEST-HISTORY $(/init history crash --json)
echo "VMTEST powering off"
exec /init shutdown --poweroff
"#;

/// Notes the uptime in FILE, for a unit's `sh -c`.
fn note(file: &str) -> String {
    format!("read u _ < /proc/uptime; echo $u >> {file}")
}

/// The numbers after `marker` on the console.
fn numbers(vm: &common::vm::Boot, marker: &str) -> Vec<f64> {
    vm.after(marker)
        .unwrap_or_else(|| panic!("no {marker} line; console:\n{}", vm.text()))
        .split_whitespace()
        .filter_map(|w| w.parse().ok())
        .collect()
}

fn gaps(times: &[f64]) -> Vec<f64> {
    times.windows(2).map(|w| w[1] - w[0]).collect()
}

#[test]
fn timers_keep_their_durations_and_gpids_increase_across_wall_clock_jumps() {
    let Some(p) = prerequisites("VM clock-jump test") else {
        return;
    };
    let dir = TempDir::new("vm-clock");
    let root = root(
        &dir,
        &p,
        &["sh", "sleep", "cat", "echo", "grep", "date", "wc"],
    );
    add(&root, "driver.sh", DRIVER, true);
    add(
        &root,
        "etc/zurg/units/driver.toml",
        "exec = \"/driver.sh\"\nrestart = \"never\"\n",
        false,
    );
    add(
        &root,
        "etc/zurg/units/crash.toml",
        &format!(
            "exec = \"/bin/sh\"\nargs = [\"-c\", \"{}; exit 1\"]\nbackoff = {{ initial_ms = 2000, max_ms = 2000 }}\n",
            note("/tmp/crash")
        ),
        false,
    );
    add(
        &root,
        "etc/zurg/units/stubborn.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"trap '' TERM; exec sleep 1001\"]\nstop_timeout_ms = 3000\n",
        false,
    );
    add(
        &root,
        "etc/zurg/units/probed.toml",
        &format!(
            "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nhealth = {{ exec = [\"/bin/sh\", \"-c\", \"{}\"], interval_ms = 1000 }}\n",
            note("/tmp/probe")
        ),
        false,
    );
    let image = pack(&dir, &root);
    let vm = boot(&p, &image);
    let text = vm.text();
    assert!(
        vm.status.success(),
        "qemu exited with {:?}; console:\n{text}",
        vm.status
    );
    assert!(text.contains("VMTEST jumped back an hour"), "{text}");
    assert!(text.contains("VMTEST jumped forward a day"), "{text}");
    // The wall clock did jump.
    let wall = numbers(&vm, "VMTEST-WALL");
    assert_eq!(wall.len(), 4, "{text}");
    assert!(wall[0] - wall[1] > 3500.0, "no jump back: {wall:?}");
    assert!(wall[3] - wall[2] > 86000.0, "no jump forward: {wall:?}");

    // The stop waited its 3 s for SIGKILL, though the clock went back an
    // hour meanwhile.
    let stop = numbers(&vm, "VMTEST-STOP");
    assert_eq!(stop.len(), 2, "{text}");
    let took = stop[1] - stop[0];
    assert!(
        (2.9..6.0).contains(&took),
        "the stop took {took} s; console:\n{text}"
    );

    // Every backoff was 2 s (plus the run of the shell), across both jumps;
    // the first restart of a crash loop is at once.
    let crash = numbers(&vm, "VMTEST-CRASH");
    assert!(crash.len() >= 6, "{crash:?}; console:\n{text}");
    for gap in &gaps(&crash)[1..] {
        assert!((1.9..4.5).contains(gap), "backoff gaps {:?}", gaps(&crash));
    }
    // The probe ran every second throughout (give or take the emulated
    // machine's hiccups: a jump would show as no wait at all, or hours).
    let probe = numbers(&vm, "VMTEST-PROBE");
    assert!(probe.len() >= 6, "{probe:?}; console:\n{text}");
    for gap in gaps(&probe) {
        assert!((0.5..3.0).contains(&gap), "probe gaps {:?}", gaps(&probe));
    }

    // Start times in the GPIDs: unique and increasing, across the jumps.
    let history: serde_json::Value =
        serde_json::from_str(vm.after("VMTEST-HISTORY ").unwrap()).unwrap();
    let starts: Vec<u64> = history["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["kind"] == "start")
        .map(|r| common::gpid_fields(r["gpid"].as_str().unwrap()).start_us)
        .collect();
    assert!(starts.len() >= crash.len(), "{history}");
    for w in starts.windows(2) {
        assert!(w[0] < w[1], "start times not increasing: {starts:?}");
    }
    for line in text.lines().filter(|l| l.contains("VMTEST")) {
        eprintln!("VM console: {line}");
    }
}
