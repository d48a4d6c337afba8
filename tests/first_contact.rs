//! Bugs found on first contact with zurg (start, restart, upgrade, check,
//! state dir, daemons that fork) and hardening items, each as a user sees
//! it: through the client, the log, status and /proc.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Output;

use common::{eventually, Mode, TempDir, Zurg};

const SLEEPER: &str = "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n";

fn text(out: &Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn status_of(dir: &TempDir, name: &str) -> serde_json::Value {
    let out = common::cli(dir, &["status", name, "--json"]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["result"][0].clone()
}

/// Live processes below zurg (zombies not counted). A process just past
/// exec may not show its command line yet, so tests whose only services
/// are sleepers count every process.
fn sleepers(z: &Zurg) -> usize {
    z.descendants()
        .into_iter()
        .filter(|p| common::state(*p).is_some_and(|s| s != 'Z'))
        .count()
}

#[test]
fn a_name_given_twice_acts_once() {
    let dir = TempDir::new("dup");
    dir.write("units/s.toml", SLEEPER);
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("[s] started pid");
    let out = common::cli(&dir, &["stop", "s"]);
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(sleepers(&z), 0);

    let out = common::cli(&dir, &["start", "s", "s"]);
    assert!(out.status.success(), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert_eq!(stdout.matches("s: ").count(), 1, "{stdout}");
    assert_eq!(sleepers(&z), 1, "{}", text(&out));

    let out = common::cli(&dir, &["restart", "s", "s"]);
    assert!(out.status.success(), "{}", text(&out));
    eventually("one sleeper after restart s s", || sleepers(&z) == 1);
    let out = common::cli(&dir, &["stop", "s"]);
    assert!(out.status.success(), "{}", text(&out));
    eventually("nothing left after stop", || sleepers(&z) == 0);
}
