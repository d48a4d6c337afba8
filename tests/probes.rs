//! Readiness (`ready`, `ready_timeout_ms`), health checks (`health`) and
//! the watchdog (`watchdog_ms`), with zurg as PID 1: what `status`,
//! `events` and `history` show, and that hung probes are killed.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;
use std::process::Command;

use common::run::{start, Run};
use common::*;
use serde_json::Value;

const PYTHON: &str = "/usr/bin/python3";

fn python() -> &'static str {
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} is missing (scripts/test installs it)"
    );
    PYTHON
}

/// A unit running `script` with python3.
fn py_unit(script: &str, extra: &str) -> String {
    format!(
        "exec = \"{}\"\nargs = [\"-c\", '''{script}''']\n{extra}\n",
        python()
    )
}

fn row(r: &Run, name: &str) -> Value {
    status_of(&r.dir, name)
}

fn events(r: &Run, name: &str) -> Vec<Value> {
    let v: Value = serde_json::from_str(&r.ok(&["events", "--json"])).unwrap();
    v["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["service"] == name)
        .cloned()
        .collect()
}

fn alive(host_pid: i32) -> bool {
    state(host_pid).is_some_and(|s| s != 'Z')
}

#[test]
fn notify_ready_after_a_delay_counts_only_from_the_service() {
    let dir_probe = TempDir::new("notify-go");
    let go = dir_probe.path().join("go");
    // Waits at least 300 ms, then for the test's go-ahead, then says it
    // is ready (with a status line) from its main process.
    let script = format!(
        r#"import os, socket, time
time.sleep(0.3)
while not os.path.exists("{go}"):
    time.sleep(0.01)
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"STATUS=accepting connections\nREADY=1\n", os.environ["NOTIFY_SOCKET"])
time.sleep(1000)"#,
        go = go.display()
    );
    let mut r = start(&[("db", &py_unit(&script, "ready = \"notify\""))], &[]);
    r.z.expect("[db] started pid");
    let s = row(&r, "db");
    assert_eq!(s["state"], "starting", "{s}");
    assert_eq!(s["ready_after_ms"], Value::Null);
    assert!(r.ok(&["status"]).contains("starting"));

    // A process outside the service (outside zurg's pid namespace, even)
    // that knows the socket's path is not the service.
    let sock = r.dir.path().join("state/notify/db");
    assert!(sock.exists(), "no notify socket at {}", sock.display());
    let out = Command::new(python())
        .args([
            "-c",
            "import socket, sys; s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM); s.sendto(b'READY=1', sys.argv[1])",
        ])
        .arg(&sock)
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    r.z.expect("[db] ignored a message on its notify socket");
    assert_eq!(row(&r, "db")["state"], "starting");

    std::fs::write(&go, "").unwrap();
    r.z.expect("[db] pid");
    eventually("db to be ready", || row(&r, "db")["state"] == "running");
    let s = row(&r, "db");
    let after = s["ready_after_ms"].as_u64().unwrap();
    assert!(
        after >= 300,
        "ready after {after} ms, before its 300 ms delay"
    );
    assert_eq!(s["status_text"], "accepting connections");
    let table = r.ok(&["status"]);
    assert!(table.contains("READY"), "{table}");
    assert!(table.contains("db: accepting connections"), "{table}");
    let ready: Vec<Value> = events(&r, "db")
        .into_iter()
        .filter(|e| e["kind"] == "ready")
        .collect();
    assert_eq!(ready.len(), 1, "{ready:?}");
    assert_eq!(ready[0]["delay_ms"].as_u64(), Some(after));
}

/// A service's `STATUS=` is its own text: `zurg status` shows a control
/// character in it escaped, so it cannot retitle or clear the terminal;
/// `--json` keeps the text exactly.
#[test]
fn a_status_line_with_escape_sequences_is_shown_escaped() {
    let script = r#"import os, socket, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.sendto(b"STATUS=\x1b]0;pwned\x07\x1b[2Jserving\xc2\x9b31m\nREADY=1\n", os.environ["NOTIFY_SOCKET"])
time.sleep(1000)"#;
    let r = start(&[("db", &py_unit(script, "ready = \"notify\""))], &[]);
    eventually("db to be ready", || row(&r, "db")["state"] == "running");
    assert_eq!(
        row(&r, "db")["status_text"],
        "\u{1b}]0;pwned\u{7}\u{1b}[2Jserving\u{9b}31m"
    );
    let table = r.ok(&["status"]);
    assert!(!table.contains(['\u{1b}', '\u{7}', '\u{9b}']), "{table:?}");
    assert!(
        table.contains("db: \\x1b]0;pwned\\x07\\x1b[2Jserving\\x9b31m"),
        "{table}"
    );
}

#[test]
fn fd_readiness_a_line_is_ready_and_eof_is_a_failed_start() {
    let r = start(
        &[
            (
                "good",
                "exec = \"/bin/sh\"\nargs = [\"-c\", \"sleep 0.2; echo ready >&5; exec sleep 1000\"]\nready = { fd = 5 }\n",
            ),
            (
                "quitter",
                "exec = \"/bin/sh\"\nargs = [\"-c\", \"exec 5>&-; exec sleep 1000\"]\nready = { fd = 5 }\nrestart = \"never\"\n",
            ),
        ],
        &[],
    );
    eventually("good to be ready", || row(&r, "good")["state"] == "running");
    assert!(row(&r, "good")["ready_after_ms"].as_u64().unwrap() >= 200);
    eventually("quitter's failed start", || {
        events(&r, "quitter")
            .iter()
            .any(|e| e["kind"] == "not_ready")
    });
    let e = events(&r, "quitter")
        .into_iter()
        .find(|e| e["kind"] == "not_ready")
        .unwrap();
    assert_eq!(
        e["message"],
        "it closed its readiness fd 5 without writing a line"
    );
    eventually("quitter's process to be stopped", || {
        row(&r, "quitter")["pid"].is_null()
    });
    let h = history(&r.dir, "quitter");
    assert!(
        h.iter().any(|r| r["kind"] == "not_ready"
            && r["reason"] == "it closed its readiness fd 5 without writing a line"),
        "{h:?}"
    );
}

#[test]
fn tcp_and_exec_readiness_wait_for_the_service() {
    let flag_dir = TempDir::new("exec-ready");
    let flag = flag_dir.path().join("up");
    let listener = r#"import os, socket, time
time.sleep(0.3)
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"])))
s.listen(16)
while True:
    c, _ = s.accept()
    c.close()"#;
    let r = start(
        &[
            (
                "web",
                &py_unit(listener, "port = \"auto\"\nready = { tcp = \"$PORT\" }"),
            ),
            (
                "batch",
                &format!(
                    "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nready = {{ exec = [\"/bin/sh\", \"-c\", \"test -e {}\"] }}\n",
                    flag.display()
                ),
            ),
        ],
        &[],
    );
    eventually("web to be ready", || row(&r, "web")["state"] == "running");
    assert!(row(&r, "web")["ready_after_ms"].as_u64().unwrap() >= 300);
    assert_eq!(row(&r, "batch")["state"], "starting");
    std::fs::write(&flag, "").unwrap();
    eventually("batch to be ready", || {
        row(&r, "batch")["state"] == "running"
    });
    // the probes are gone once the service is ready
    let zurg = r.z.host_pid();
    eventually("no probe process left", || {
        descendants(zurg)
            .iter()
            .all(|p| !cmdline(*p).contains("test -e"))
    });
}

#[test]
fn a_ready_timeout_is_a_failed_start_with_its_reason() {
    let mut r = start(
        &[(
            "slow",
            "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nready = { tcp = 1 }\nready_timeout_ms = 400\n",
        )],
        &[],
    );
    let started = r.z.expect("[slow] started pid");
    let pid = pid_in(&started);
    let line = r.z.expect("[slow] pid");
    assert!(
        line.contains("not ready: not ready after 400 ms (tcp port 1: connection refused)"),
        "{line}"
    );
    eventually("the not-ready process to be gone", || {
        row(&r, "slow")["pid"].as_i64() != Some(i64::from(pid))
    });
    let e = events(&r, "slow")
        .into_iter()
        .find(|e| e["kind"] == "not_ready")
        .unwrap();
    assert_eq!(e["pid"].as_i64(), Some(i64::from(pid)));
    assert_eq!(
        e["message"],
        "not ready after 400 ms (tcp port 1: connection refused)"
    );
}

#[test]
fn a_failing_http_check_restarts_the_service_and_says_why() {
    let dir_flag = TempDir::new("http-sick");
    let sick = dir_flag.path().join("sick");
    let server = format!(
        r#"import os, http.server
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 500 if os.path.exists("{sick}") else 200
        self.send_response(code)
        self.end_headers()
        self.wfile.write(b"x")
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()"#,
        sick = sick.display()
    );
    let mut r = start(
        &[(
            "api",
            &py_unit(
                &server,
                "port = \"auto\"\nready = { tcp = \"$PORT\" }\nhealth = { http = \"http://127.0.0.1:$PORT/health\", interval_ms = 100, timeout_ms = 2000, retries = 2 }",
            ),
        )],
        &[],
    );
    eventually("api to be ready", || row(&r, "api")["state"] == "running");
    eventually("a passing health check", || {
        row(&r, "api")["health"]["last"] == "200 OK"
    });
    let first = row(&r, "api")["pid"].as_i64().unwrap();
    let h = &row(&r, "api")["health"];
    assert_eq!(
        (h["ok"].as_bool(), h["failures"].as_u64()),
        (Some(true), Some(0))
    );

    std::fs::write(&sick, "").unwrap();
    let line = r.z.expect("unhealthy:");
    assert!(
        line.contains(&format!("[api] pid {first} unhealthy: health check http://127.0.0.1:$PORT/health failed 2 times: 500 Internal Server Error")),
        "{line}"
    );
    std::fs::remove_file(&sick).unwrap();
    eventually("api to run again under a new pid", || {
        let s = row(&r, "api");
        s["state"] == "running" && s["pid"].as_i64().is_some_and(|p| p != first)
    });
    let e = events(&r, "api")
        .into_iter()
        .find(|e| e["kind"] == "unhealthy")
        .unwrap();
    assert!(e["message"]
        .as_str()
        .unwrap()
        .ends_with("failed 2 times: 500 Internal Server Error"));
    let h = history(&r.dir, "api");
    assert!(
        h.iter().any(|r| r["kind"] == "unhealthy"
            && r["reason"]
                .as_str()
                .is_some_and(|w| w.contains("500 Internal Server Error"))),
        "{h:?}"
    );
    let text = r.ok(&["history", "api"]);
    assert!(text.contains("unhealthy"), "{text}");
}

#[test]
fn a_hung_exec_check_is_killed_at_its_timeout_and_counts_as_a_failure() {
    let mut r = start(
        &[(
            "worker",
            "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nhealth = { exec = [\"sleep\", \"100\"], interval_ms = 100, timeout_ms = 300, retries = 2 }\n",
        )],
        &[],
    );
    let zurg = r.z.host_pid();
    let probe = {
        let mut found = None;
        eventually("the hung probe to run", || {
            found = descendants(zurg)
                .into_iter()
                .find(|p| cmdline(*p) == "sleep 100");
            found.is_some()
        });
        found.unwrap()
    };
    let line =
        r.z.expect("[worker] health check exec sleep 100 failed (1 of 2 in a row)");
    assert!(line.ends_with("timed out after 300 ms (killed)"), "{line}");
    eventually("the hung probe to be killed and reaped", || {
        !alive(probe) && state(probe).is_none()
    });
    let line = r.z.expect("[worker] pid");
    assert!(
        line.contains("unhealthy: health check exec sleep 100 failed 2 times: timed out after 300 ms (killed)"),
        "{line}"
    );
}

#[test]
fn a_service_that_stops_pinging_its_watchdog_is_restarted() {
    let dir_flag = TempDir::new("watchdog-hang");
    let hang = dir_flag.path().join("hang");
    let pings = dir_flag.path().join("pings");
    // Pings at a third of WATCHDOG_USEC until told to hang, noting each.
    let script = format!(
        r#"import os, socket, time
every = int(os.environ["WATCHDOG_USEC"]) / 3e6
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
while not os.path.exists("{hang}"):
    s.sendto(b"WATCHDOG=1", os.environ["NOTIFY_SOCKET"])
    with open("{pings}", "a") as f:
        f.write("x\n")
    time.sleep(every)
time.sleep(1000)"#,
        hang = hang.display(),
        pings = pings.display()
    );
    let mut r = start(&[("pinger", &py_unit(&script, "watchdog_ms = 600"))], &[]);
    let first = pid_in(&r.z.expect("[pinger] started pid"));
    // Alive past several watchdog periods (ten pings, 2 s) while it pings.
    let count = || {
        std::fs::read_to_string(&pings)
            .unwrap_or_default()
            .lines()
            .count()
    };
    eventually("ten pings", || count() >= 10);
    assert_eq!(row(&r, "pinger")["pid"].as_i64(), Some(i64::from(first)));
    assert!(!r.z.lines_now().iter().any(|l| l.contains("unhealthy")));
    std::fs::write(&hang, "").unwrap();
    let line = r.z.expect("unhealthy:");
    assert!(
        line.contains(&format!(
            "[pinger] pid {first} unhealthy: watchdog: no WATCHDOG=1 for 600 ms"
        )),
        "{line}"
    );
    std::fs::remove_file(&hang).unwrap();
    eventually("pinger to run again", || {
        row(&r, "pinger")["pid"]
            .as_i64()
            .is_some_and(|p| p != i64::from(first))
    });
}

/// zurg's main thread's voluntary context switches: each one is a wake-up.
fn wakeups(pid: i32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("voluntary_ctxt_switches:"))
        .unwrap()
        .trim()
        .parse()
        .unwrap()
}

#[test]
fn a_health_check_costs_only_its_own_wake_ups() {
    let seen = TempDir::new("wake-count");
    let log = seen.path().join("checks");
    // Appends a line per health check it answers.
    let server = format!(
        r#"import os, socket
s = socket.socket()
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind(("127.0.0.1", int(os.environ["PORT"])))
s.listen(16)
while True:
    c, _ = s.accept()
    c.close()
    with open("{log}", "a") as f:
        f.write("x\n")"#,
        log = log.display()
    );
    let r = start(
        &[(
            "svc",
            &py_unit(
                &server,
                "port = \"auto\"\nready = { tcp = \"$PORT\" }\nhealth = { tcp = \"$PORT\", interval_ms = 50 }",
            ),
        )],
        &[],
    );
    let zurg = r.z.host_pid();
    let checks = || {
        std::fs::read_to_string(&log)
            .unwrap_or_default()
            .lines()
            .count()
    };
    eventually("the first checks", || checks() >= 2);
    let (c0, w0) = (checks(), wakeups(zurg));
    eventually("twenty more checks", || checks() >= c0 + 20);
    let (c1, w1) = (checks(), wakeups(zurg));
    let per_check = (w1 - w0) as f64 / (c1 - c0) as f64;
    eprintln!(
        "{per_check:.2} wake-ups of zurg's loop per tcp check ({} over {} checks)",
        w1 - w0,
        c1 - c0
    );
    // A check is its timer and the connect's completion (with a timeout
    // shorter than the interval, one more timer): nothing else.
    assert!(
        per_check <= 3.0,
        "{per_check:.1} wake-ups per check ({} over {} checks)",
        w1 - w0,
        c1 - c0
    );
}

#[test]
fn without_checks_zurg_does_not_wake_up() {
    let r = start(
        &[("plain", "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n")],
        &[],
    );
    eventually("plain to run", || row(&r, "plain")["state"] == "running");
    let zurg = r.z.host_pid();
    // The status request above woke it; let that settle, then watch a
    // window of time (a measurement, not a synchronisation).
    let settle = std::time::Instant::now() + std::time::Duration::from_millis(200);
    eventually("the request to settle", || {
        std::time::Instant::now() >= settle
    });
    let w0 = wakeups(zurg);
    let until = std::time::Instant::now() + std::time::Duration::from_millis(1000);
    eventually("a quiet second", || std::time::Instant::now() >= until);
    assert_eq!(wakeups(zurg) - w0, 0, "zurg woke up with nothing to do");
}
