//! `zurg logs`: a service's latest output lines from zurg's ring
//! (README "Service output", docs/control-protocol.md "logs").
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader, Read, Write};
use std::os::unix::net::UnixStream;

use std::sync::mpsc::Receiver;
use std::time::{Duration, Instant};

use common::{eventually, sh_unit, wait_child, Mode, TempDir, Zurg, BIN, DEADLINE};

fn run(units: &[(&str, &str)]) -> (Zurg, TempDir) {
    let dir = TempDir::new("logs");
    for (name, text) in units {
        dir.write(&format!("units/{name}.toml"), text);
    }
    let z = start(&dir);
    (z, dir)
}

fn start(dir: &TempDir) -> Zurg {
    common::run_in(dir, Mode::Pid1, &["--grace", "1s"])
}

fn logs(dir: &TempDir, args: &[&str]) -> (Option<i32>, Vec<u8>, String) {
    let mut all = vec!["logs"];
    all.extend_from_slice(args);
    let out = common::cli(dir, &all);
    (
        out.status.code(),
        out.stdout,
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn logs_text(dir: &TempDir, args: &[&str]) -> String {
    let (code, out, err) = logs(dir, args);
    assert_eq!(code, Some(0), "zurg logs {args:?}: {err}");
    String::from_utf8(out).unwrap()
}

/// Waits until `zurg logs ARGS` prints exactly `want` (zurg may not be
/// listening yet at first).
fn logs_become(dir: &TempDir, args: &[&str], want: &str) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (code, out, err) = logs(dir, args);
        let last = String::from_utf8_lossy(&out);
        if code == Some(0) && last == want {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "zurg logs {args:?} never printed {want:?}; last: {last:?} {err}"
        );
        std::thread::sleep(Duration::from_millis(20));
    }
}

#[test]
fn a_crashing_services_lines_outlive_its_restarts_and_a_reload() {
    // Each run prints its number and dies at once.
    let dir = TempDir::new("logs-crash");
    let count = dir.path().join("count");
    dir.write(
        "units/crash.toml",
        &sh_unit(
            &format!(
                "n=$(cat {c} 2>/dev/null || echo 0); n=$((n+1)); echo $n > {c}; echo \"run $n dying\"; exit 3",
                c = count.display()
            ),
            "restart = \"on-failure\"\n",
        ),
    );
    let _z = start(&dir);
    // Three runs have been started and printed.
    eventually("three runs", || {
        let (_, out, _) = logs(&dir, &["crash"]);
        String::from_utf8_lossy(&out).contains("run 3 dying\n")
    });
    let out = logs_text(&dir, &["crash"]);
    assert!(
        out.starts_with("run 1 dying\nrun 2 dying\nrun 3 dying\n"),
        "{out:?}"
    );
    // An unchanged unit keeps its lines across a reload.
    let r = common::cli(&dir, &["reload"]);
    assert!(r.status.success());
    let after = logs_text(&dir, &["crash", "-n", "100000"]);
    assert!(after.starts_with("run 1 dying\n"), "{after:?}");
}

#[test]
fn lines_takes_the_last_n_and_since_filters_by_age() {
    let (_z, dir) = run(&[(
        "talk",
        &sh_unit(
            "for i in 1 2 3 4 5 6; do echo line$i; done; sleep 3; echo late; exec sleep 1000",
            "",
        ),
    )]);
    logs_become(
        &dir,
        &["talk"],
        "line1\nline2\nline3\nline4\nline5\nline6\n",
    );
    assert_eq!(
        logs_text(&dir, &["talk", "-n", "3"]),
        "line4\nline5\nline6\n"
    );
    assert_eq!(logs_text(&dir, &["talk", "--lines", "1"]), "line6\n");
    assert_eq!(logs_text(&dir, &["talk", "-n", "0"]), "");
    // `late` comes 3 s after the others: within 2 s of it, only it is
    // newer than 2 s.
    logs_become(&dir, &["talk", "--since", "2s"], "late\n");
    let all = logs_text(&dir, &["talk", "--since", "1h"]);
    assert!(
        all.starts_with("line1\n") && all.ends_with("line6\nlate\n"),
        "{all:?}"
    );
    // An unknown service is an error that names it.
    let (code, _, err) = logs(&dir, &["nosuch"]);
    assert_eq!(code, Some(1));
    assert!(err.contains("no service named `nosuch`"), "{err}");
}

/// `zurg logs ARGS` running, its stdout as lines.
fn follower(dir: &TempDir, args: &[&str]) -> (std::process::Child, Receiver<String>) {
    let args: Vec<&str> = std::iter::once("logs")
        .chain(args.iter().copied())
        .collect();
    common::cli_lines(dir, &args)
}

fn next_line(rx: &Receiver<String>, what: &str) -> String {
    rx.recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("no line from the follower: expected {what}"))
}

#[test]
fn follow_sees_new_lines_and_ends_cleanly_on_shutdown() {
    // Every run says hello once and stays.
    let (mut z, dir) = run(&[("greet", &sh_unit("echo hello $$; exec sleep 1000", ""))]);
    z.expect("[greet] started");
    let (mut child, rx) = follower(&dir, &["greet", "-f"]);
    let first = next_line(&rx, "the first run's line");
    assert!(first.starts_with("hello "), "{first}");
    let r = common::cli(&dir, &["restart", "greet"]);
    assert!(r.status.success());
    let second = next_line(&rx, "the second run's line");
    assert!(second.starts_with("hello ") && second != first, "{second}");
    let out = common::cli(&dir, &["shutdown"]);
    assert!(out.status.success());
    let (code, err) = wait_child(&mut child);
    assert_eq!(code, Some(0), "{err}");
    assert!(err.contains("stopped"), "{err}");
    assert_eq!(z.wait_exit().code(), Some(0));
}

#[test]
fn follow_fails_when_zurg_dies() {
    let (mut z, dir) = run(&[("greet", &sh_unit("echo hello; exec sleep 1000", ""))]);
    z.expect("[greet] started");
    let (mut child, rx) = follower(&dir, &["greet", "--follow"]);
    assert_eq!(next_line(&rx, "hello"), "hello");
    z.signal(9);
    let (code, err) = wait_child(&mut child);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("closed the connection"), "{err}");
}

#[test]
fn without_a_name_every_service_is_interleaved_in_time_order() {
    // Each line waits until the one before it is in zurg's ring, so the
    // order is a1 b1 a2 b2 whatever the scheduler does.
    let dir = TempDir::new("logs-all");
    let sock = dir.path().join("control.sock");
    let wait_for = |svc: &str, text: &str| {
        format!(
            "until ZURG_SOCKET={} {BIN} logs {svc} | grep -qx {text}; do sleep 0.02; done",
            sock.display()
        )
    };
    dir.write(
        "units/a.toml",
        &sh_unit(
            &format!("echo a1; {}; echo a2; exec sleep 1000", wait_for("b", "b1")),
            "",
        ),
    );
    dir.write(
        "units/b.toml",
        &sh_unit(
            &format!(
                "{}; echo b1; {}; echo b2; exec sleep 1000",
                wait_for("a", "a1"),
                wait_for("a", "a2")
            ),
            "",
        ),
    );
    let _z = start(&dir);
    logs_become(&dir, &[], "a | a1\nb | b1\na | a2\nb | b2\n");
    assert_eq!(logs_text(&dir, &["-n", "2"]), "a | a2\nb | b2\n");
    // One service's lines carry no prefix.
    assert_eq!(logs_text(&dir, &["b"]), "b1\nb2\n");
}

#[test]
fn json_escapes_nul_and_invalid_utf8_and_plain_output_keeps_the_bytes() {
    let (mut z, dir) = run(&[(
        "odd",
        &sh_unit("printf 'a\\000b\\n\\377\\376ok\\n'; exec sleep 1000", ""),
    )]);
    z.expect("[odd] started");
    let want: &[u8] = b"a\0b\n\xff\xfeok\n";
    let deadline = Instant::now() + DEADLINE;
    loop {
        let (code, out, err) = logs(&dir, &["odd"]);
        assert_eq!(code, Some(0), "{err}");
        if out == want {
            break;
        }
        assert!(Instant::now() < deadline, "plain bytes: {out:?}");
        std::thread::sleep(Duration::from_millis(20));
    }
    let json = logs_text(&dir, &["odd", "--json"]);
    let lines: Vec<serde_json::Value> = json
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines.len(), 2, "{json}");
    assert!(
        json.lines()
            .next()
            .unwrap()
            .contains(r#""text":"a\u0000b""#),
        "{json}"
    );
    assert_eq!(lines[0]["service"], "odd");
    assert_eq!(lines[0]["stream"], "stdout");
    assert!(lines[0].get("bytes_b64").is_none(), "{json}");
    let time = lines[0]["time"].as_str().unwrap();
    assert!(
        time.len() == 24 && time.ends_with('Z') && time.contains('T'),
        "{time}"
    );
    assert_eq!(lines[1]["text"], "\u{fffd}\u{fffd}ok");
    assert_eq!(lines[1]["bytes_b64"], "//5vaw==");
}

fn rss_kib(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

#[test]
fn a_follower_that_never_reads_does_not_grow_zurg() {
    // 20 MB of 100-byte lines, then `done`; the service waits for the go
    // file so the follower is attached first.
    let dir = TempDir::new("logs-stuck");
    let go = dir.path().join("go");
    dir.write(
        "units/noisy.toml",
        &sh_unit(
            &format!(
                "while [ ! -e {go} ]; do sleep 0.02; done; \
                 yes 0123456789012345678901234567890123456789012345678901234567890123456789012345678901234567890123456789 \
                 | head -c 20000000 | cut -c1-99; echo done; exec sleep 1000",
                go = go.display()
            ),
            "",
        ),
    );
    let mut z = start(&dir);
    z.expect("[noisy] started");
    let zurg = z.host_pid();
    let mut stuck = UnixStream::connect(dir.path().join("control.sock")).unwrap();
    stuck
        .write_all(b"{\"id\":1,\"verb\":\"logs\",\"name\":\"noisy\",\"follow\":true}\n")
        .unwrap();
    // Its first reply is there: it is following.
    let mut ack = [0u8; 1];
    stuck.read_exact(&mut ack).unwrap();
    let before = rss_kib(zurg);
    dir.write("go", "");
    logs_become(&dir, &["noisy", "-n", "1"], "done\n");
    let after = rss_kib(zurg);
    eprintln!("zurg's RSS: {before} KiB before, {after} KiB after 20 MB through a stuck follower");
    assert!(
        after < before + 8 * 1024,
        "zurg grew from {before} KiB to {after} KiB with a follower that does not read"
    );
    // Reading now, it is told how much it missed rather than given it all.
    stuck.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut reader = BufReader::new(stuck);
    let mut line = String::new();
    let mut read = 0usize;
    loop {
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "connection closed before a missed marker");
        read += n;
        if line.contains("\"kind\":\"missed\"") {
            let v: serde_json::Value = serde_json::from_str(&line).unwrap();
            assert!(v["log"]["lines"].as_u64().unwrap() > 1000, "{line}");
            break;
        }
        assert!(read < 8 << 20, "8 MiB read and no missed marker");
    }
    // Then it goes on from the oldest line the ring still holds, up to the
    // last one.
    loop {
        line.clear();
        let n = reader.read_line(&mut line).unwrap();
        assert!(n > 0, "connection closed before the last line");
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert_eq!(v["log"]["kind"], "line", "{line}");
        if v["log"]["text"] == "done" {
            break;
        }
    }
}

#[test]
fn a_follower_of_a_removed_service_never_sees_the_unit_that_takes_its_slot() {
    let (mut z, dir) = run(&[("old", &sh_unit("echo from old; exec sleep 1000", ""))]);
    z.expect("[old] started");
    let (mut child, rx) = follower(&dir, &["old", "-f"]);
    assert_eq!(next_line(&rx, "the old service's line"), "from old");
    let units = dir.path().join("units");
    std::fs::remove_file(units.join("old.toml")).unwrap();
    assert!(common::cli(&dir, &["reload"]).status.success());
    z.saw("[old] stopped pid");
    // The next added unit takes the removed one's slot.
    dir.write(
        "units/new.toml",
        &sh_unit("echo from new; exec sleep 1000", ""),
    );
    assert!(common::cli(&dir, &["reload"]).status.success());
    logs_become(&dir, &["new"], "from new\n");
    assert!(common::cli(&dir, &["shutdown"]).status.success());
    let (code, err) = wait_child(&mut child);
    assert_eq!(code, Some(0), "{err}");
    let rest = common::rest_of(&rx);
    assert!(rest.is_empty(), "the follower of `old` got {rest:?}");
}
