//! What zurg keeps resident once it runs (docs/performance.md "Footprint").
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{eventually, find_below, kill, pid_in, Mode, TempDir};

/// Size and Rss in kB of `pid`'s executable mappings of zurg's own binary.
fn own_code_kb(pid: i32) -> (u64, u64) {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let bin = std::fs::canonicalize(common::BIN).unwrap();
    let (mut size, mut rss, mut ours) = (0, 0, false);
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            ours = fields.len() > 5
                && fields[1].contains('x')
                && std::path::Path::new(fields[5]) == bin;
        } else if ours && fields.len() > 1 {
            match fields[0] {
                "Size:" => size += fields[1].parse::<u64>().unwrap(),
                "Rss:" => rss += fields[1].parse::<u64>().unwrap(),
                _ => {}
            }
        }
    }
    (size, rss)
}

#[test]
fn start_up_code_is_not_kept_resident_and_services_still_restart() {
    let dir = TempDir::new("footprint");
    for (name, secs) in [("a", 1001), ("b", 1002), ("c", 1003)] {
        dir.write(
            &format!("units/{name}.toml"),
            &format!("exec = \"/bin/sleep\"\nargs = [\"{secs}\"]\n"),
        );
    }
    let mut z = common::run_in(&dir, Mode::Pid1, &["--grace", "1s"]);
    let first = pid_in(&z.expect("[a] started pid"));
    z.expect("[c] started pid");
    let zurg = z.host_pid();
    // Loading mapped most of the binary (the kernel maps 64 KB around
    // every fault); once the units are loaded zurg lets those mappings go.
    eventually(
        "zurg's resident code to fall below half of its code",
        || {
            let (size, rss) = own_code_kb(zurg);
            size > 0 && rss * 2 < size
        },
    );

    // The code a restart needs comes back on use.
    kill(find_below(&z, "sleep 1001"), 9);
    z.expect("[a] restarting now");
    let second = pid_in(&z.expect("[a] started pid"));
    assert_ne!(first, second);
}

/// Rss in kB of `pid`'s heap: [heap] and anonymous mappings.
fn heap_kb(pid: i32) -> u64 {
    let smaps = std::fs::read_to_string(format!("/proc/{pid}/smaps")).unwrap();
    let (mut rss, mut heap) = (0, false);
    for line in smaps.lines() {
        let fields: Vec<&str> = line.split_whitespace().collect();
        if fields
            .first()
            .is_some_and(|f| f.contains('-') && !f.ends_with(':'))
        {
            heap = fields.len() == 5 || fields.get(5) == Some(&"[heap]");
        } else if heap && fields.first() == Some(&"Rss:") {
            rss += fields[1].parse::<u64>().unwrap();
        }
    }
    rss
}

#[test]
fn a_large_answer_does_not_stay_in_zurg_s_heap() {
    const N: usize = 1000;
    let dir = TempDir::new("footprint-answer");
    for i in 0..N {
        dir.write(
            &format!("units/s{i}.toml"),
            "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
        );
    }
    let z = common::run_in(&dir, Mode::Pid1, &["--grace", "1s"]);
    let zurg = z.host_pid();
    eventually("every service to run", || common::children(zurg).len() >= N);
    let before = heap_kb(zurg);
    let answer = common::ok(&dir, &["status", "--json"]);
    assert!(
        answer.len() > 100_000,
        "status answered {} bytes",
        answer.len()
    );
    for _ in 0..3 {
        common::ok(&dir, &["status", "--json"]);
    }
    let after = heap_kb(zurg);
    // Building an answer of a few hundred kB must not leave its buffers
    // resident once it is sent (debug build, 1,000 services: +250 kB with
    // malloc's thresholds fixed, +1,000 kB without).
    assert!(
        after < before + 512,
        "zurg's heap grew from {before} to {after} kB over three answers of {} bytes",
        answer.len()
    );
}
