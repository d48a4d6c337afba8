//! Issue 17's end-to-end test: the stack of units/stack in small (a
//! one-shot `migrate`, a `db` ready through notify after a delay, an
//! essential `api` with tcp readiness and an http health check, a `worker`
//! with fd readiness), zurg as PID 1 in a pid namespace.
//!
//! Cases tested one at a time elsewhere and not repeated here: a crashed
//! dependency's dependants keep running (dependencies.rs
//! `a_crashed_dependency_restarts_without_touching_its_dependants`, here in
//! the stack with notify readiness), shutdown by SIGTERM in reverse order
//! (dependencies.rs `shutdown_stops_dependants_before_their_dependencies`),
//! an essential exit's code (service_model.rs
//! `an_essential_service_that_exits_ends_zurg_with_its_code_after_stopping_the_others`,
//! here with the reverse dependency order of the stop), http checks that
//! fail and restart (probes.rs).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::Path;

use common::run::Run;
use common::{eventually, history, host_pid_in, json, kill, status_of, Mode, TempDir};
use serde_json::Value;

const PYTHON: &str = "/usr/bin/python3";

/// The stack's units (api: restarted when unhealthy or after a crash, while
/// its exit 7, a success, keeps it down and so ends zurg); `{DIR}` is the test's directory, where the services
/// write the order in which they got SIGTERM (`stopped`) and the api reads
/// `sick` (answer 500 on /health) and `exit7` (exit with code 7).
fn units(migrate_code: i32) -> Vec<(&'static str, String)> {
    assert!(
        Path::new(PYTHON).exists(),
        "{PYTHON} is missing (scripts/test installs it)"
    );
    let trap = |name: &str| format!("trap 'echo {name} >> {{DIR}}/stopped; exit 0' TERM");
    let migrate = format!(
        "type = \"oneshot\"\nrestart = \"never\"\nexec = \"/bin/sh\"\nargs = [\"-c\", \"sleep 0.3; exit {migrate_code}\"]\n"
    );
    // Ready 0.5 s after its start, from a helper of its session.
    let db = format!(
        "depends_on = [\"migrate\"]\nready = \"notify\"\nexec = \"/bin/sh\"\nargs = [\"-c\", {:?}]\n",
        format!(
            "{}; sleep 0.5; {PYTHON} -c 'import os, socket; socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM).sendto(b\"READY=1\", os.environ[\"NOTIFY_SOCKET\"])'; while :; do sleep 0.05; done",
            trap("db")
        )
    );
    let api_py = r#"
import http.server, os, signal, sys, threading, time
D = "{DIR}"
def term(*_):
    with open(D + "/stopped", "a") as f:
        f.write("api\n")
    os._exit(0)
signal.signal(signal.SIGTERM, term)
def watch():
    while not os.path.exists(D + "/exit7"):
        time.sleep(0.02)
    os._exit(7)
threading.Thread(target=watch, daemon=True).start()
class H(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        code = 500 if os.path.exists(D + "/sick") else 200
        self.send_response(code)
        self.send_header("Content-Length", "0")
        self.end_headers()
    def log_message(self, *a):
        pass
http.server.HTTPServer(("127.0.0.1", int(os.environ["PORT"])), H).serve_forever()
"#;
    let api = format!(
        "depends_on = [\"db\"]\nport = \"auto\"\nready = {{ tcp = \"$PORT\" }}\n\
         health = {{ http = \"http://127.0.0.1:$PORT/health\", interval_ms = 100, timeout_ms = 1000, retries = 2 }}\n\
         essential = true\nrestart = \"on-failure\"\nsuccess_exit_codes = [0, 7]\nexec = \"{PYTHON}\"\nargs = [\"-c\", '''{api_py}''']\n"
    );
    let worker = format!(
        "depends_on = [\"db\"]\nready = {{ fd = 3 }}\nexec = \"/bin/sh\"\nargs = [\"-c\", {:?}]\n",
        format!(
            "{}; echo ready >&3; exec 3>&-; while :; do sleep 0.05; done",
            trap("worker")
        )
    );
    vec![
        ("migrate", migrate),
        ("db", db),
        ("api", api),
        ("worker", worker),
    ]
}

fn stack(migrate_code: i32) -> Run {
    let dir = TempDir::new("stack");
    std::fs::create_dir_all(dir.path().join("units")).unwrap();
    let root = dir.path().to_str().unwrap().to_string();
    for (name, text) in units(migrate_code) {
        dir.write(&format!("units/{name}.toml"), &text.replace("{DIR}", &root));
    }
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("loaded");
    Run::on(dir, z)
}

fn wait_state(r: &Run, name: &str, state: &str) -> Value {
    let mut row = Value::Null;
    eventually(&format!("{name} {state}"), || {
        row = status_of(&r.dir, name);
        row["state"] == state
    });
    row
}

/// `zurg status`'s exit code.
fn status_code(r: &Run) -> Option<i32> {
    r.cli(&["status"]).status.code()
}

/// time_us of `name`'s journal records of KIND (`start`, `exit`).
fn journal_times(r: &Run, name: &str, kind: &str) -> Vec<u64> {
    history(&r.dir, name)
        .iter()
        .filter(|e| e["kind"] == kind)
        .map(|e| e["time_us"].as_u64().unwrap())
        .collect()
}

/// time_us of `name`'s events of KIND from `zurg events --json`.
fn event_times(r: &Run, name: &str, kind: &str) -> Vec<u64> {
    json(&r.dir, &["events"])
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["service"] == name && e["kind"] == kind)
        .map(|e| e["time_us"].as_u64().unwrap())
        .collect()
}

#[test]
fn the_stack_starts_in_order_rides_out_a_db_crash_heals_the_api_and_ends_with_its_code() {
    let mut r = stack(0);
    // `zurg wait api` returns once api is ready, i.e. after the whole chain.
    let out = r.cli(&["wait", "api", "--timeout", "20s"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    wait_state(&r, "worker", "running");
    assert_eq!(wait_state(&r, "migrate", "done")["state"], "done");
    assert_eq!(status_code(&r), Some(0), "all is well");
    let table = r.ok(&["status"]);
    assert!(
        table.contains("READY") && table.contains("HEALTH"),
        "{table}"
    );

    // Start order from the journal: migrate's exit before db's start; db's
    // ready event (events only: the journal keeps starts and exits) after
    // its notify delay and before api's and worker's starts.
    let migrate_exit = journal_times(&r, "migrate", "exit")[0];
    let db_start = journal_times(&r, "db", "start")[0];
    let db_ready = event_times(&r, "db", "ready")[0];
    let api_start = journal_times(&r, "api", "start")[0];
    let worker_start = journal_times(&r, "worker", "start")[0];
    assert!(migrate_exit <= db_start, "{migrate_exit} {db_start}");
    assert!(
        db_ready >= db_start + 500_000,
        "db was ready {} us after its start, before its 0.5 s delay",
        db_ready - db_start
    );
    assert!(db_ready <= api_start, "{db_ready} {api_start}");
    assert!(db_ready <= worker_start, "{db_ready} {worker_start}");
    assert!(event_times(&r, "api", "ready")[0] >= api_start);
    assert!(event_times(&r, "worker", "ready")[0] >= worker_start);

    // Killing db restarts db alone: api and worker keep their pids.
    let api_pid = r.pid_of("api").unwrap();
    let worker_pid = r.pid_of("worker").unwrap();
    let db_pid = r.pid_of("db").unwrap();
    kill(host_pid_in(&r.z, db_pid), 9);
    eventually("db back and ready", || {
        let row = status_of(&r.dir, "db");
        row["pid"].as_i64().is_some_and(|p| p != db_pid) && row["state"] == "running"
    });
    assert_eq!(event_times(&r, "db", "ready").len(), 2);
    assert_eq!(r.pid_of("api"), Some(api_pid));
    assert_eq!(r.pid_of("worker"), Some(worker_pid));

    // An api that stops answering well is restarted by its check.
    r.dir.write("sick", "");
    eventually("api unhealthy", || {
        !event_times(&r, "api", "unhealthy").is_empty()
    });
    std::fs::remove_file(r.dir.path().join("sick")).unwrap();
    eventually("api restarted and ready", || {
        let row = status_of(&r.dir, "api");
        row["pid"].as_i64().is_some_and(|p| p != api_pid) && row["state"] == "running"
    });
    assert_eq!(journal_times(&r, "api", "start").len(), 2);

    // The essential api's exit 7 ends zurg with code 7, once worker, then
    // db (which worker depends on) got SIGTERM; the restart above made api
    // write its name, so start the order afresh.
    let stopped = r.dir.path().join("stopped");
    let _ = std::fs::remove_file(&stopped);
    r.dir.write("exit7", "");
    let status = r.z.wait_exit();
    assert_eq!(status.code(), Some(7), "{:?}", r.z.seen);
    assert_eq!(std::fs::read_to_string(&stopped).unwrap(), "worker\ndb\n");
}

#[test]
fn a_failed_migrate_keeps_the_stack_down_and_status_exits_1() {
    let r = stack(3);
    let migrate = wait_state(&r, "migrate", "failed");
    assert!(
        migrate["last_error"]
            .as_str()
            .unwrap()
            .contains("exited with code 3"),
        "{migrate}"
    );
    for name in ["db", "api", "worker"] {
        let row = status_of(&r.dir, name);
        assert_eq!(row["state"], "waiting", "{row}");
        assert_eq!(row["pid"], Value::Null, "{row}");
    }
    eventually("db blocked", || {
        status_of(&r.dir, "db")["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("migrate failed"))
    });
    let out = r.cli(&["status"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("api: not started: db cannot start: migrate failed: exited with code 3"),
        "{table}"
    );
    // Nothing of the stack ever started.
    assert!(journal_times(&r, "db", "start").is_empty());
    assert!(journal_times(&r, "api", "start").is_empty());
}

/// The example in units/stack (README, "A real stack") as it is shipped:
/// the whole chain comes up, db's STATUS= shows, api answers, and SIGTERM
/// takes it down cleanly. It listens on loopback ports 4711 and 4712.
#[test]
fn the_example_stack_in_units_stack_comes_up_and_shuts_down() {
    use std::io::{Read, Write};

    let dir = TempDir::new("example");
    std::fs::create_dir_all(dir.path().join("units")).unwrap();
    let shipped = Path::new(env!("CARGO_MANIFEST_DIR")).join("units/stack");
    for name in ["migrate", "db", "api", "worker"] {
        let text = std::fs::read_to_string(shipped.join(format!("{name}.toml"))).unwrap();
        dir.write(&format!("units/{name}.toml"), &text);
    }
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("loaded 4 services");
    let mut r = Run::on(dir, z);
    let out = r.cli(&["wait", "api", "worker", "--timeout", "20s"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let out = r.cli(&["status"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let table = String::from_utf8_lossy(&out.stdout);
    assert!(
        table.contains("db: accepting connections on 4711"),
        "{table}"
    );
    assert_eq!(status_of(&r.dir, "migrate")["state"], "done");

    let mut api = std::net::TcpStream::connect(("127.0.0.1", 4712)).unwrap();
    api.set_read_timeout(Some(common::DEADLINE)).unwrap();
    api.write_all(b"GET / HTTP/1.0\r\n\r\n").unwrap();
    let mut reply = String::new();
    api.read_to_string(&mut reply).unwrap();
    assert!(reply.ends_with("hello from api\n"), "{reply}");

    r.z.signal(15);
    r.z.expect("stopping dependants before their dependencies");
    assert_eq!(r.z.wait_exit().code(), Some(0));
}
