//! The service model (docs/units.md: one-shot services, start limit,
//! essential services; `zurg status`'s exit code, `zurg wait`), against zurg
//! as PID 1 in a pid namespace. Every wait has a deadline; services that
//! must end "later" poll for a file the test creates.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::run::{host_pid_of, Run};
use common::{
    cli_lines, eventually, find_below, kill, sh_unit, wait_child, Mode, TempDir, DEADLINE, SLEEPER,
};

/// zurg as PID 1 on UNITS, where `{DIR}` in a unit's text is the test's
/// directory (for the files services write and wait for).
fn stack(units: &[(&str, &str)]) -> Run {
    let dir = TempDir::new("model");
    std::fs::create_dir_all(dir.path().join("units")).unwrap();
    let root = dir.path().to_str().unwrap().to_string();
    for (name, text) in units {
        dir.write(&format!("units/{name}.toml"), &text.replace("{DIR}", &root));
    }
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("loaded");
    Run::on(dir, z)
}

impl Run {
    fn row(&self, name: &str) -> serde_json::Value {
        common::status_of(&self.dir, name)
    }

    fn wait_state(&self, name: &str, state: &str) -> serde_json::Value {
        let mut row = serde_json::Value::Null;
        eventually(&format!("{name} {state}"), || {
            row = self.row(name);
            row["state"] == state
        });
        row
    }

    fn touch(&self, file: &str) {
        self.dir.write(file, "");
    }

    /// How many times `name` started, from `zurg events`.
    fn starts(&self, name: &str) -> usize {
        let events = common::json(&self.dir, &["events"]);
        events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["service"] == name && e["kind"] == "started")
            .count()
    }

    fn events_of(&self, name: &str, kind: &str) -> Vec<serde_json::Value> {
        let events = common::json(&self.dir, &["events"]);
        events
            .as_array()
            .unwrap()
            .iter()
            .filter(|e| e["service"] == name && e["kind"] == kind)
            .cloned()
            .collect()
    }

    fn code(&self, args: &[&str]) -> (Option<i32>, String, String) {
        let out = self.cli(args);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    }
}

#[test]
fn a_oneshot_runs_once_is_done_and_reruns_on_start() {
    let r = stack(&[(
        "migrate",
        &sh_unit("echo run >> {DIR}/runs", "type = \"oneshot\"\n"),
    )]);
    let row = r.wait_state("migrate", "done");
    assert_eq!(row["last_exit"]["code"], 0, "{row}");
    assert_eq!(row["restarts"], 0, "{row}");
    let (code, table, err) = r.code(&["status"]);
    assert_eq!(code, Some(0), "a done one-shot is fine: {table}{err}");
    assert!(table.contains("done"), "{table}");
    assert_eq!(
        std::fs::read_to_string(r.dir.path().join("runs")).unwrap(),
        "run\n"
    );
    assert_eq!(r.events_of("migrate", "done").len(), 1);
    // `wait` on a done one-shot answers at once
    let (code, out, err) = r.code(&["wait", "migrate"]);
    assert_eq!(code, Some(0), "{out}{err}");
    // `zurg start` runs it again
    r.ok(&["start", "migrate"]);
    eventually("a second run", || {
        std::fs::read_to_string(r.dir.path().join("runs")).unwrap() == "run\nrun\n"
    });
    r.wait_state("migrate", "done");
    assert_eq!(r.starts("migrate"), 2);
}

#[test]
fn a_failing_oneshot_is_failed_and_status_exits_1() {
    let r = stack(&[
        ("web", SLEEPER),
        (
            "migrate",
            &sh_unit("exit 3", "type = \"oneshot\"\nrestart = \"never\"\n"),
        ),
    ]);
    let row = r.wait_state("migrate", "failed");
    assert_eq!(row["last_error"], "exited with code 3", "{row}");
    assert_eq!(row["problem"], "exited with code 3", "{row}");
    let (code, table, err) = r.code(&["status"]);
    assert_eq!(code, Some(1), "{table}{err}");
    assert!(
        table.contains("migrate: exited with code 3"),
        "status says why: {table}"
    );
    // one service asked for, and it is fine: exit 0
    let (code, _, err) = r.code(&["status", "web"]);
    assert_eq!(code, Some(0), "{err}");
    // --json too, for scripts
    let (code, _, _) = r.code(&["status", "--json"]);
    assert_eq!(code, Some(1));
    let failed = r.events_of("migrate", "failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert_eq!(failed[0]["message"], "exited with code 3");
    assert_eq!(r.starts("migrate"), 1, "restart = never: no retry");
    // `wait` gives up at once, with the reason
    let started = Instant::now();
    let (code, _, err) = r.code(&["wait", "migrate", "web"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("will not become ready: migrate is failed: exited with code 3"),
        "{err}"
    );
    assert!(started.elapsed() < Duration::from_secs(5));
    // the journal keeps it
    let history = common::history(&r.dir, "migrate");
    assert!(
        history
            .iter()
            .any(|h| h["kind"] == "failed" && h["reason"] == "exited with code 3"),
        "{history:?}"
    );
}

#[test]
fn an_essential_service_that_exits_ends_zurg_with_its_code_after_stopping_the_others() {
    let mut r = stack(&[
        (
            "main",
            &sh_unit(
                "while [ ! -e {DIR}/go ]; do sleep 0.02; done; exit 7",
                "essential = true\nrestart = \"never\"\n",
            ),
        ),
        (
            "other",
            &sh_unit(
                "trap 'echo term > {DIR}/other.stopped; exit 0' TERM; while :; do sleep 0.02; done",
                "",
            ),
        ),
    ]);
    r.wait_state("other", "running");
    r.wait_state("main", "running");
    r.touch("go");
    let status = r.z.wait_exit();
    assert_eq!(status.code(), Some(7), "{:?}", r.z.seen);
    assert_eq!(
        std::fs::read_to_string(r.dir.path().join("other.stopped")).unwrap(),
        "term\n",
        "the other service got its stop signal"
    );
    r.z.saw("essential service exited");
}

#[test]
fn an_essential_service_killed_by_a_signal_ends_zurg_with_128_plus_n() {
    let mut r = stack(&[
        (
            "main",
            "exec = \"/bin/sleep\"\nargs = [\"1001\"]\nessential = true\nrestart = \"never\"\n",
        ),
        ("other", SLEEPER),
    ]);
    r.wait_state("other", "running");
    let pid = find_below(&r.z, "sleep 1001");
    kill(pid, libc::SIGKILL);
    assert_eq!(r.z.wait_exit().code(), Some(137), "{:?}", r.z.seen);
}

#[test]
fn an_essential_service_that_cannot_start_ends_zurg_at_once() {
    // Alone: no other service's exit wakes zurg's loop for the shutdown.
    let mut r = stack(&[(
        "main",
        "exec = \"/nonexistent/main\"\nessential = true\nrestart = \"never\"\n",
    )]);
    assert_eq!(r.z.wait_exit().code(), Some(127), "{:?}", r.z.seen);
}

#[test]
fn stopping_an_essential_service_on_request_does_not_end_zurg() {
    let mut r = stack(&[(
        "main",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nessential = true\n",
    )]);
    r.wait_state("main", "running");
    r.ok(&["stop", "main"]);
    assert!(r.z.wait_exit_within(Duration::from_millis(300)).is_none());
    let (code, _, err) = r.code(&["status"]);
    assert_eq!(code, Some(0), "stopped on request is not a problem: {err}");
    // a shutdown by request still exits 0
    r.ok(&["shutdown"]);
    assert_eq!(r.z.wait_exit().code(), Some(0));
}

#[test]
fn the_start_limit_fails_a_crash_loop_and_start_revives_it() {
    let r = stack(&[(
        "crash",
        "exec = \"/bin/false\"\nstart_limit = { burst = 3, interval_ms = 60000 }\nbackoff = { initial_ms = 10, max_ms = 20 }\n",
    )]);
    let row = r.wait_state("crash", "failed");
    assert!(
        row["last_error"]
            .as_str()
            .unwrap()
            .starts_with("start limit hit: more than 3 starts within 60000 ms"),
        "{row}"
    );
    assert_eq!(r.starts("crash"), 3);
    let failed = r.events_of("crash", "failed");
    assert_eq!(failed.len(), 1, "{failed:?}");
    assert!(failed[0]["message"]
        .as_str()
        .unwrap()
        .starts_with("start limit hit"));
    let (code, table, _) = r.code(&["status"]);
    assert_eq!(code, Some(1), "{table}");
    assert!(table.contains("crash: start limit hit"), "{table}");
    // `zurg start` gives it a fresh count: three more starts, failed again
    r.cli(&["start", "crash"]);
    eventually("three more starts", || r.starts("crash") == 6);
    r.wait_state("crash", "failed");
    assert_eq!(r.events_of("crash", "failed").len(), 2);
}

#[test]
fn a_listed_success_code_is_not_restarted_by_on_failure() {
    let r = stack(&[(
        "job",
        &sh_unit(
            "exit 3",
            "restart = \"on-failure\"\nsuccess_exit_codes = [0, 3]\n",
        ),
    )]);
    let row = r.wait_state("job", "exited");
    assert_eq!(row["last_exit"]["code"], 3, "{row}");
    assert_eq!(row["restarts"], 0, "{row}");
    assert_eq!(r.starts("job"), 1);
    let (code, _, err) = r.code(&["status"]);
    assert_eq!(code, Some(0), "a success is not a problem: {err}");
}

#[test]
fn wait_ready_and_down() {
    let r = stack(&[
        ("a", SLEEPER),
        (
            "slow",
            &sh_unit(
                "while [ ! -e {DIR}/go ]; do sleep 0.02; done",
                "type = \"oneshot\"\n",
            ),
        ),
    ]);
    let (code, out, err) = r.code(&["wait", "a", "--ready"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.contains("a: running, pid"), "{out}");
    let row = r.row("a");
    assert_eq!(row["ready"], true, "{row}");
    assert_eq!(
        row["ready_after_ms"], 0,
        "no readiness protocol: ready at start"
    );
    assert!(row["health"].is_null(), "{row}");
    // a one-shot is waited for until it is done
    let (mut waiter, _out) = cli_lines(&r.dir, &["wait", "slow", "a"]);
    assert!(waiter.try_wait().unwrap().is_none());
    r.touch("go");
    let (code, err) = wait_child(&mut waiter);
    assert_eq!(code, Some(0), "{err}");
    assert_eq!(r.row("slow")["state"], "done");
    // --down: answered once the service is down
    let (mut waiter, _out) = cli_lines(&r.dir, &["wait", "--down", "a"]);
    r.ok(&["stop", "a"]);
    let (code, err) = wait_child(&mut waiter);
    assert_eq!(code, Some(0), "{err}");
    // and now --ready on it cannot be met
    let (code, _, err) = r.code(&["wait", "a"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("a is stopped: it is stopped"), "{err}");
    // unknown names are refused
    let (code, _, err) = r.code(&["wait", "nope"]);
    assert_eq!(code, Some(1), "{err}");
    assert!(err.contains("no service named `nope`"), "{err}");
}

#[test]
fn wait_times_out_with_its_own_code() {
    let r = stack(&[(
        "forever",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\ntype = \"oneshot\"\n",
    )]);
    r.wait_state("forever", "running");
    let started = Instant::now();
    let (code, _, err) = r.code(&["wait", "forever", "--timeout", "200ms"]);
    assert_eq!(code, Some(124), "{err}");
    assert!(
        err.contains("not ready in time: forever is running"),
        "{err}"
    );
    let took = started.elapsed();
    assert!(
        took >= Duration::from_millis(200) && took < DEADLINE,
        "{took:?}"
    );
}

/// Busy loops on every CPU until dropped (a panic included).
struct CpuLoad {
    stop: std::sync::Arc<std::sync::atomic::AtomicBool>,
    threads: Vec<std::thread::JoinHandle<()>>,
}

impl CpuLoad {
    fn start() -> CpuLoad {
        let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
        let cpus = std::thread::available_parallelism().map_or(2, usize::from);
        let threads = (0..cpus)
            .map(|_| {
                let stop = stop.clone();
                std::thread::spawn(move || {
                    while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                        std::hint::spin_loop();
                    }
                })
            })
            .collect();
        CpuLoad { stop, threads }
    }
}

impl Drop for CpuLoad {
    fn drop(&mut self) {
        self.stop.store(true, std::sync::atomic::Ordering::Relaxed);
        for t in self.threads.drain(..) {
            let _ = t.join();
        }
    }
}

/// `kill -9 PID; zurg wait db && use db` must not talk to PID: once kill(2)
/// has returned, `wait` (and `wait --ready`) answers with db's next process,
/// whether zurg has not seen PID exit yet or has reaped it in the very turn
/// the request came in. db's two instances run as SCHED_IDLE beside busy
/// loops on every CPU, so a death waits for a CPU while zurg and the client
/// run: the window a loaded machine opens. Each round kills one instance
/// and waits on the unit (both instances) or on that instance (`--ready`).
/// main's zurg answered with the killed pid in 10 to 21 of the 50 rounds.
#[test]
fn wait_after_a_kill_never_answers_with_the_killed_process() {
    const ROUNDS: usize = 50;
    let r = stack(&[(
        "db",
        "exec = \"/usr/bin/chrt\"\n\
         args = [\"--idle\", \"0\", \"/bin/sh\", \"-c\", \"echo up >&3; exec sleep 1000\"]\n\
         ready = { fd = 3 }\n\
         instances = 2\n\
         backoff = { initial_ms = 1, max_ms = 1 }\n",
    )]);
    // Each answered instance's pid, by name.
    let mut pids = std::collections::HashMap::new();
    let answer = |args: &[&str]| -> Vec<(String, i64)> {
        let result = common::json(&r.dir, args);
        let rows = result.as_array().unwrap().iter().map(|row| {
            let pid = row["pid"]
                .as_i64()
                .unwrap_or_else(|| panic!("zurg {args:?} answered no pid: {result}"));
            (row["name"].as_str().unwrap().to_string(), pid)
        });
        rows.collect()
    };
    for (name, pid) in answer(&["wait", "db"]) {
        pids.insert(name, pid);
    }
    assert_eq!(pids.len(), 2, "{pids:?}");
    let _load = CpuLoad::start();
    let mut stale = Vec::new();
    for round in 0..ROUNDS {
        let name = format!("db@{}", round % 2);
        let killed = pids[&name];
        kill(host_pid_of(&r, killed), libc::SIGKILL);
        let answered = if round % 4 < 2 {
            answer(&["wait", "db"])
        } else {
            answer(&["wait", "--ready", &name])
        };
        for (n, pid) in answered {
            pids.insert(n, pid);
        }
        if pids[&name] == killed {
            stale.push(round);
            // The next kill of this instance needs its next process.
            pids.insert(name.clone(), r.wait_pid(&name, Some(killed)));
        }
    }
    assert!(
        stale.is_empty(),
        "{} of {ROUNDS} waits answered with the pid just killed (rounds {stale:?})",
        stale.len()
    );
}

/// `zurg start` on a one-shot answers once it is done, with its exit code,
/// as `systemctl start` does; `zurg restart` runs it again the same way,
/// and `zurg wait` on a done one-shot says how it ended.
#[test]
fn start_of_a_oneshot_waits_until_it_is_done() {
    let r = stack(&[(
        "mig",
        // The second run and later take a while: a start that answered
        // at once would find it running.
        &sh_unit(
            "[ -e {DIR}/runs ] && sleep 0.3; echo run >> {DIR}/runs",
            "type = \"oneshot\"\n",
        ),
    )]);
    r.wait_state("mig", "done");
    let (code, out, err) = r.code(&["wait", "mig"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.trim(), "mig: done (exit code 0)", "{err}");
    let runs = || std::fs::read_to_string(r.dir.path().join("runs")).unwrap();
    let (code, out, err) = r.code(&["start", "mig"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.trim(), "mig: done (exit code 0)", "{err}");
    assert_eq!(runs(), "run\nrun\n");
    let (code, out, err) = r.code(&["restart", "mig"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert_eq!(out.trim(), "mig: done (exit code 0)", "{err}");
    assert_eq!(runs(), "run\nrun\nrun\n");
    let v = common::json(&r.dir, &["start", "mig", "--json"]);
    assert_eq!(v[0]["exit"], 0, "{v}");
    assert_eq!(v[0]["state"], "done", "{v}");
}

/// A one-shot that fails: `zurg start` waits for its end, says how it
/// failed and exits 1.
#[test]
fn start_of_a_failing_oneshot_exits_1_with_its_reason() {
    let r = stack(&[(
        "mig",
        &sh_unit(
            "sleep 0.2; exit 3",
            "type = \"oneshot\"\nrestart = \"never\"\n",
        ),
    )]);
    r.wait_state("mig", "failed");
    let (code, out, err) = r.code(&["start", "mig"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert_eq!(out.trim(), "mig: failed: exited with code 3", "{err}");
    assert_eq!(r.events_of("mig", "started").len(), 2);
}

/// A service with a readiness check: `zurg start` answers once it is
/// ready; one that cannot become ready fails the start with the reason.
#[test]
fn start_of_a_ready_checked_service_waits_until_ready() {
    let r = stack(&[
        (
            "web",
            &sh_unit(
                "sleep 0.3; touch {DIR}/up; exec sleep 1000",
                "ready = { exec = [\"/bin/sh\", \"-c\", \"test -e {DIR}/up\"] }\n",
            ),
        ),
        (
            "never",
            &format!(
                "{SLEEPER}ready = {{ exec = [\"false\"] }}\nready_timeout_ms = 300\nrestart = \"never\"\n"
            ),
        ),
    ]);
    eventually("web ready", || r.row("web")["ready"] == true);
    r.ok(&["stop", "web"]);
    std::fs::remove_file(r.dir.path().join("up")).unwrap();
    let (code, out, err) = r.code(&["start", "web"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("web: running, pid "), "{out}{err}");
    let row = r.row("web");
    assert_eq!(row["ready"], true, "answered before it was ready: {row}");

    r.wait_state("never", "failed");
    let (code, out, err) = r.code(&["start", "never"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(out.starts_with("never: failed: not ready: "), "{out}{err}");
}

/// A service held for a dependency: `zurg start` fails naming the
/// dependency that failed.
#[test]
fn start_fails_naming_the_dependency_that_failed() {
    let r = stack(&[
        (
            "mig",
            &sh_unit(
                "sleep 0.2; exit 4",
                "type = \"oneshot\"\nrestart = \"never\"\n",
            ),
        ),
        ("app", &format!("{SLEEPER}depends_on = [\"mig\"]\n")),
    ]);
    r.wait_state("app", "waiting");
    r.wait_state("mig", "failed");
    let (code, out, err) = r.code(&["start", "app"]);
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        out.contains("mig: failed (started first: needed by app): exited with code 4"),
        "{out}{err}"
    );
}

/// `--no-block` answers as soon as the start is under way; `--timeout`
/// bounds the wait, and the start goes on after the client gave up.
#[test]
fn start_no_block_and_timeout() {
    let r = stack(&[(
        "slow",
        &sh_unit(
            "while [ ! -e {DIR}/go ]; do sleep 0.02; done",
            "type = \"oneshot\"\n",
        ),
    )]);
    r.wait_state("slow", "running");
    r.ok(&["stop", "slow"]);
    let (code, out, err) = r.code(&["start", "slow", "--no-block"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("slow: running, pid "), "{out}{err}");
    assert_eq!(r.row("slow")["state"], "running");

    let started = Instant::now();
    let (code, out, err) = r.code(&["start", "slow", "--timeout", "300ms"]);
    let took = started.elapsed();
    assert_eq!(code, Some(1), "{out}{err}");
    assert!(
        err.contains("gave up waiting after 0.3s: slow is running, not done yet")
            && err.contains("the start is still in progress"),
        "{err}"
    );
    assert!(
        took >= Duration::from_millis(300) && took < DEADLINE,
        "{took:?}"
    );
    // Nothing was stopped.
    let row = r.row("slow");
    assert_eq!(row["state"], "running", "{row}");
    // restart --no-block answers once it runs again, not done yet.
    let (code, out, err) = r.code(&["restart", "slow", "--no-block"]);
    assert_eq!(code, Some(0), "{out}{err}");
    assert!(out.starts_with("slow: running, pid "), "{out}{err}");
    assert_ne!(r.row("slow")["pid"], row["pid"]);
    r.touch("go");
    r.wait_state("slow", "done");
    assert_eq!(r.starts("slow"), 3);
}

/// An essential one-shot that a start waits for ends zurg when it is
/// done: the start is answered with how it ended, not "shutting down".
#[test]
fn start_of_an_essential_oneshot_says_how_it_ended() {
    use std::io::{BufReader, Write};
    let mut r = stack(&[(
        "mig",
        &sh_unit(
            "while [ ! -e {DIR}/go ]; do sleep 0.02; done; exit 5",
            "type = \"oneshot\"\nessential = true\nrestart = \"never\"\n",
        ),
    )]);
    r.wait_state("mig", "running");
    let mut conn = r.raw();
    conn.write_all(
        b"{\"id\":1,\"verb\":\"start\",\"names\":[\"mig\"]}\n{\"id\":2,\"verb\":\"version\"}\n",
    )
    .unwrap();
    let mut replies = BufReader::new(conn);
    // Requests on a connection are taken in order: the version's answer
    // means the start is parked.
    let version = common::run::read_reply(&mut replies);
    assert_eq!(version["id"], 2, "{version}");
    r.touch("go");
    let start = common::run::read_reply(&mut replies);
    assert_eq!(start["id"], 1, "{start}");
    assert_eq!(start["ok"], true, "{start}");
    assert_eq!(start["result"][0]["state"], "failed", "{start}");
    assert_eq!(start["result"][0]["error"], "exited with code 5", "{start}");
    assert_eq!(start["result"][0]["exit"], 5, "{start}");
    assert_eq!(r.z.wait_exit().code(), Some(5), "{:?}", r.z.seen);
}

/// An essential service zurg stopped because it failed (never ready, or
/// unhealthy) ends zurg with 1, whatever its process's stop signal made of
/// its exit: the code is a failure's, and the log names service and reason.
fn an_essential_service_stopped_for_failing(extra: &str, reason: &str) {
    for (script, how) in [
        // killed by the stop signal: 143 is zurg's doing, not the service's
        ("exec sleep 1000", "killed"),
        // catches it and exits 0, which must not read as success
        (
            "trap 'exit 0' TERM; while :; do sleep 0.02; done",
            "exits 0",
        ),
    ]
    .into_iter()
    .rev()
    {
        let mut r = stack(&[
            (
                "main",
                &sh_unit(
                    script,
                    &format!("essential = true\nrestart = \"never\"\n{extra}"),
                ),
            ),
            ("other", SLEEPER),
        ]);
        let status = r.z.wait_exit();
        assert_eq!(status.code(), Some(1), "{how}: {:?}", r.z.seen);
        let line = r.z.saw("[main] essential service");
        assert!(line.contains(reason), "{how}: {line}");
        assert!(line.contains("exiting with 1"), "{how}: {line}");
    }
}

#[test]
fn an_essential_service_never_ready_ends_zurg_with_1() {
    an_essential_service_stopped_for_failing(
        "ready = \"notify\"\nready_timeout_ms = 300\n",
        "not ready",
    );
}

/// Restarted when unhealthy until its start limit: the last run's exit is
/// zurg's SIGTERM too, so 1 again, and the log says how that run failed.
#[test]
fn an_essential_service_unhealthy_until_its_start_limit_ends_zurg_with_1() {
    let mut r = stack(&[(
        "main",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nessential = true\n\
         health = { exec = [\"/bin/false\"], interval_ms = 50, retries = 1 }\n\
         start_limit = { burst = 2, interval_ms = 60000 }\n\
         backoff = { initial_ms = 10, max_ms = 20 }\n",
    )]);
    assert_eq!(r.z.wait_exit().code(), Some(1), "{:?}", r.z.seen);
    let line = r.z.saw("[main] essential service failed");
    assert!(
        line.contains("start limit hit") && line.contains("the last run: unhealthy"),
        "{line}"
    );
}

#[test]
fn an_essential_unhealthy_service_ends_zurg_with_1() {
    an_essential_service_stopped_for_failing(
        "health = { exec = [\"/bin/false\"], interval_ms = 100, retries = 2 }\n",
        "unhealthy",
    );
}
