//! Bugs found on first contact with zurg (start, restart, upgrade, check,
//! state dir, daemons that fork) and hardening items, each as a user sees
//! it: through the client, the log, status and /proc.
#![allow(
    dead_code,
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

#[test]
fn a_second_zurg_on_the_same_state_dir_is_refused_naming_the_first() {
    let dir = TempDir::new("lock");
    dir.write("units/s.toml", SLEEPER);
    let mut first = common::run_in(&dir, Mode::Plain, &[]);
    first.expect("[s] started pid");
    let holder = first.host_pid();
    let units = dir.path().join("units");
    let sock = dir.path().join("other.sock");
    let state = dir.path().join("state");
    let mut second = Zurg::start(
        Mode::Plain,
        &[
            "run",
            "--units",
            units.to_str().unwrap(),
            "--socket",
            sock.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ],
    );
    let status = second.wait_exit();
    assert_eq!(status.code(), Some(1), "{:?}", second.lines_now());
    let said = second.lines_now().join("\n");
    assert!(
        said.contains(&format!("is in use by another zurg (pid {holder}")),
        "{said}"
    );
    assert!(!said.contains("started pid"), "{said}");
    // the first one is untouched and still answers
    let out = common::cli(&dir, &["status", "s"]);
    assert!(out.status.success(), "{}", text(&out));
}

#[test]
fn zurg_run_leaves_its_start_directory_and_services_keep_it() {
    let dir = TempDir::new("cwd");
    dir.write("units/s.toml", SLEEPER);
    let mut z = Zurg::start_with(
        Mode::Plain,
        &[
            "run",
            "--units",
            "units",
            "--socket",
            "control.sock",
            "--state",
            "state",
        ],
        |c| {
            c.current_dir(dir.path());
        },
    );
    let line = z.expect("[s] started pid");
    let zurg_cwd = std::fs::read_link(format!("/proc/{}/cwd", z.host_pid())).unwrap();
    assert_eq!(zurg_cwd, std::path::Path::new("/"));
    // Plain mode: the pid in the log is a host pid.
    let pid = common::pid_in(&line);
    let service_cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert_eq!(service_cwd, dir.path());
    // the relative --socket and --state still work from elsewhere
    let out = common::cli(&dir, &["status", "s"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.path().join("state/lock").exists());
}

#[test]
fn a_missing_cwd_is_blamed_on_the_cwd_at_start_and_by_check() {
    let dir = TempDir::new("nocwd");
    dir.write(
        "units/s.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\ncwd = \"/nonexistent\"\n",
    );
    let units = dir.path().join("units");
    let out = std::process::Command::new(common::BIN)
        .args(["check", "--units", units.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let said = String::from_utf8_lossy(&out.stdout);
    assert!(
        said.contains(&format!(
            "{}: key `cwd`: directory /nonexistent does not exist",
            units.join("s.toml").display()
        )),
        "{said}"
    );

    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    let line = z.expect("[s] cannot");
    assert!(
        line.contains("cannot change to cwd /nonexistent: No such file or directory"),
        "{line}"
    );
    assert!(!line.contains("/bin/sleep"), "{line}");
}

fn running_pids(dir: &TempDir) -> Vec<(String, Option<i64>)> {
    let out = common::cli(dir, &["status", "--json"]);
    assert!(out.status.success(), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    v["result"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| {
            let pid = (r["state"] == "running")
                .then(|| r["pid"].as_i64())
                .flatten();
            (r["name"].as_str().unwrap().to_string(), pid)
        })
        .collect()
}

#[test]
fn out_of_descriptors_every_service_still_starts_and_restarts() {
    const UNITS: usize = 100;
    let dir = TempDir::new("nofile");
    for i in 0..UNITS {
        dir.write(&format!("units/s{i:03}.toml"), SLEEPER);
    }
    let wrapper = ["prlimit", "--nofile=64:64"].map(String::from).to_vec();
    let mut z = common::run_in(&dir, Mode::Pid1Under(wrapper), &[]);
    z.expect("loaded 100 services");
    let mut before = Vec::new();
    eventually("all 100 running", || {
        before = running_pids(&dir);
        before.len() == UNITS && before.iter().all(|(_, p)| p.is_some())
    });
    // Kill every service process, with a pidfd or without: all come back.
    for pid in z.descendants() {
        common::kill(pid, 9);
    }
    eventually("all 100 restarted with new pids", || {
        let now = running_pids(&dir);
        now.len() == UNITS
            && now
                .iter()
                .zip(&before)
                .all(|((_, p), (_, old))| p.is_some() && p != old)
    });
    let said = z.lines_now().join("\n");
    assert!(!said.contains("cannot create a process"), "{said}");
}
