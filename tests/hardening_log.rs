//! zurg's own log output must never block its loop (issue "Hardening"):
//! against zurg as PID 1 in a pid namespace.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;
use std::process::Stdio;
use std::time::{Duration, Instant};

use common::{Mode, TempDir, DEADLINE};

/// The GPID of each service's current or last process, from `status` over
/// the socket; None when zurg does not answer within a second (its loop is
/// stuck).
fn gpids(dir: &TempDir) -> Option<Vec<(String, Option<String>)>> {
    let s = UnixStream::connect(dir.path().join("control.sock")).ok()?;
    s.set_read_timeout(Some(Duration::from_secs(1))).ok()?;
    let mut w = s.try_clone().ok()?;
    w.write_all(b"{\"id\":1,\"verb\":\"status\"}\n").ok()?;
    let mut line = String::new();
    BufReader::new(s).read_line(&mut line).ok()?;
    let v: serde_json::Value = serde_json::from_str(&line).ok()?;
    Some(
        v["result"]
            .as_array()?
            .iter()
            .map(|r| {
                let gpid = r["gpid"].as_str().map(str::to_string);
                (r["name"].as_str().unwrap().to_string(), gpid)
            })
            .collect(),
    )
}

fn gpid_of(dir: &TempDir, name: &str) -> Option<String> {
    gpids(dir)?.into_iter().find(|(n, _)| n == name)?.1
}

/// Whether `pid` is cat blocked writing to a full pipe: it has read from
/// /dev/zero (rchar counts that; a write still blocked is not in wchar yet)
/// and sleeps, which cat only does in write.
fn blocked_in_write(pid: i32) -> bool {
    let read: u64 = std::fs::read_to_string(format!("/proc/{pid}/io"))
        .unwrap_or_default()
        .lines()
        .find_map(|l| l.strip_prefix("rchar: "))
        .and_then(|n| n.trim().parse().ok())
        .unwrap_or(0);
    common::comm(pid).as_deref() == Some("cat")
        && read >= 128 << 10
        && common::state(pid) == Some('S')
}

#[test]
fn restarts_go_on_while_nobody_reads_stderr() {
    let dir = TempDir::new("log-blocked");
    // Fills the shared stderr pipe, then blocks in write forever.
    dir.write(
        "units/filler.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"exec cat /dev/zero >&2\"]\nrestart = \"never\"\n",
    );
    // Each exit and start is a log line of zurg's.
    dir.write(
        "units/flaky.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"exit 1\"]\nrestart_delay_ms = 0\n",
    );
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    let z = common::run_in_with(&dir, Mode::Pid1, &[], |cmd| {
        cmd.stderr(Stdio::from(write_end));
    });
    let cat = common::find_below(&z, "cat /dev/zero");
    common::eventually("the stderr pipe is full", || blocked_in_write(cat));

    // Before, zurg's next log line blocked its loop: no restart, no answer.
    let mut seen = HashSet::new();
    let deadline = Instant::now() + DEADLINE;
    // Four processes: the crash-loop backoff (100, 200, 400 ms) allows that
    // well within the deadline.
    while seen.len() < 4 {
        assert!(
            Instant::now() < deadline,
            "flaky restarted only {} time(s) with stderr blocked",
            seen.len()
        );
        if let Some(gpid) = gpid_of(&dir, "flaky") {
            seen.insert(gpid);
        }
        std::thread::sleep(Duration::from_millis(20));
    }

    // Once someone reads, zurg's lines arrive again.
    common::kill(cat, 9);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(read_end);
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut text = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    let wanted = "[flaky] started pid";
    while !String::from_utf8_lossy(&text).contains(wanted) {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => text.extend(chunk),
            Err(_) => panic!("no {wanted:?} line after stderr drained"),
        }
    }
    drop(z);
}

#[test]
fn lines_that_do_not_fit_are_dropped_counted_and_reported() {
    let dir = TempDir::new("log-dropped");
    dir.write(
        // The filler writes straight into zurg's stderr (not through zurg's
        // queue, as `prefix` would), so the queue holds zurg's lines alone.
        "units/filler.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"exec cat /dev/zero >&2\"]\nrestart = \"never\"\nstderr = \"inherit\"\n",
    );
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    let z = common::run_in_with(&dir, Mode::Pid1, &[], |cmd| {
        cmd.stderr(Stdio::from(write_end));
    });
    let cat = common::find_below(&z, "cat /dev/zero");
    common::eventually("the stderr pipe is full", || blocked_in_write(cat));

    // Real-time signals queue one by one, and zurg logs each it ignores:
    // far more lines (36 bytes each) than the 256 KiB queue holds.
    const SENT: usize = 20_000;
    let status = std::process::Command::new("bash")
        .arg("-c")
        .arg(format!(
            "for ((i = 0; i < {SENT}; i++)); do kill -s RTMIN+2 {} || exit 1; done",
            z.host_pid()
        ))
        .status()
        .unwrap();
    assert!(status.success());

    // Read everything; every signal is accounted for, as a line or in a
    // drop count, and some were dropped.
    common::kill(cat, 9);
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut f = std::fs::File::from(read_end);
        let mut buf = vec![0u8; 64 << 10];
        while let Ok(n) = f.read(&mut buf) {
            if n == 0 || tx.send(buf[..n].to_vec()).is_err() {
                break;
            }
        }
    });
    let mut text = Vec::new();
    let (mut logged, mut dropped) = (0, 0);
    let deadline = Instant::now() + DEADLINE;
    while logged + dropped < SENT {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(chunk) => text.extend(chunk),
            Err(_) => panic!("only {logged} lines and {dropped} dropped of {SENT} signals"),
        }
        let all = String::from_utf8_lossy(&text);
        logged = all.matches("received SIGRTMIN+2: ignored").count();
        dropped = all
            .lines()
            .filter_map(|l| l.strip_suffix(" log lines dropped (stderr not being read)"))
            .filter_map(|l| l.rsplit("zurg: ").next()?.parse::<usize>().ok())
            .sum();
    }
    assert_eq!(logged + dropped, SENT);
    assert!(
        dropped > 0 && logged > 0,
        "{logged} logged, {dropped} dropped"
    );
    // The queue bounds what zurg holds: about 256 KiB of 36-byte lines.
    assert!(logged < 8_000, "{logged} lines were kept");
    drop(z);
}

#[test]
fn the_last_lines_before_exit_are_written() {
    let dir = TempDir::new("log-flush");
    dir.write(
        "units/svc.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("[svc] started pid");
    z.signal(15);
    z.wait_exit();
    z.expect("shutdown complete");
}
