//! `depends_on` (docs/units.md "Dependencies"): start order, waiting and
//! blocked services, refused cycles and names, `zurg start`/`stop` across
//! the graph, and shutdown in reverse order; zurg as PID 1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::run::{start, Run};
use common::{eventually, find_below, kill, TempDir, SLEEPER};

/// A unit running `script` in sh, depending on `deps`.
fn sh(script: &str, deps: &[&str]) -> String {
    let deps: Vec<String> = deps.iter().map(|d| format!("\"{d}\"")).collect();
    format!(
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"{script}\"]\ndepends_on = [{}]\n",
        deps.join(", ")
    )
}

fn sleeper(deps: &[&str]) -> String {
    let deps: Vec<String> = deps.iter().map(|d| format!("\"{d}\"")).collect();
    format!("{SLEEPER}depends_on = [{}]\n", deps.join(", "))
}

/// The services in the order of their `started` events.
fn start_order(r: &Run) -> Vec<String> {
    let events = common::json(&r.dir, &["events"]);
    events
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "started")
        .map(|e| e["service"].as_str().unwrap().to_string())
        .collect()
}

/// An executable shell script at `path`.
fn write_program(path: &std::path::Path, body: &str) {
    std::fs::write(path, format!("#!/bin/sh\n{body}\n")).unwrap();
    let mut perms = std::fs::metadata(path).unwrap().permissions();
    std::os::unix::fs::PermissionsExt::set_mode(&mut perms, 0o755);
    std::fs::set_permissions(path, perms).unwrap();
}

fn state_of(r: &Run, name: &str) -> serde_json::Value {
    common::status_of(&r.dir, name)
}

#[test]
fn dependencies_start_first_and_independent_services_do_not_wait() {
    // File order is a, b, c, free: without the graph, a would start first.
    let mut r = start(
        &[
            ("a", &sleeper(&["b"])),
            ("b", &sleeper(&["c"])),
            ("c", SLEEPER),
            ("free", SLEEPER),
        ],
        &[],
    );
    r.z.saw("[a] waiting for b");
    r.z.saw("[b] waiting for c");
    r.z.saw("[a] started pid");
    let order = start_order(&r);
    let at = |n: &str| order.iter().position(|x| x == n).unwrap();
    assert!(at("c") < at("b") && at("b") < at("a"), "{order:?}");
    // free has no dependency: it did not wait for anyone
    assert!(at("free") < at("a"), "{order:?}");
    assert!(!r.z.lines_now().iter().any(|l| l.contains("[free] waiting")));
}

#[test]
fn a_service_waits_while_its_dependency_cannot_start_then_follows_it() {
    let bin = TempDir::new("depbin");
    let db = bin.path().join("db");
    let r = start(
        &[
            ("db", &format!("exec = \"{}\"\n", db.display())),
            ("web", &sleeper(&["db"])),
        ],
        &[],
    );
    // db fails to start (no binary yet) and is retried; web waits for it
    eventually("web waiting", || state_of(&r, "web")["state"] == "waiting");
    assert_eq!(
        state_of(&r, "web")["waiting_for"],
        serde_json::json!(["db"])
    );
    // db's failing starts are a problem: status says so and exits 1
    let out = r.cli(&["status"]);
    let table = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{table}");
    assert!(table.contains("web: waiting for db"), "{table}");
    let events = r.ok(&["events"]);
    assert!(events.contains("web waiting: db"), "{events}");
    // once db can start, web follows
    write_program(&db, "exec sleep 1000");
    eventually("web running", || r.pid_of("web").is_some());
    let order = start_order(&r);
    assert_eq!(order, ["db", "web"]);
}

#[test]
fn a_dependency_that_fails_for_good_blocks_its_dependants_until_it_runs() {
    // migrate's program is missing: it cannot start, and its restart
    // policy keeps it down
    let bin = TempDir::new("depmigrate");
    let prog = bin.path().join("migrate");
    let migrate = format!("exec = \"{}\"\nrestart = \"never\"\n", prog.display());
    let mut r = start(
        &[
            ("migrate", &migrate),
            ("api", &sleeper(&["migrate"])),
            ("web", &sleeper(&["api"])),
        ],
        &[],
    );
    r.z.saw("[api] not started: migrate failed (exit 127)");
    // and what depends on api, in turn
    r.z.saw("[web] not started: api cannot start: migrate failed (exit 127)");
    let api = state_of(&r, "api");
    assert_eq!(api["state"], "waiting");
    assert_eq!(api["last_error"], "not started: migrate failed (exit 127)");
    let events = r.ok(&["events"]);
    assert!(
        events.contains("api blocked: migrate failed (exit 127)"),
        "{events}"
    );
    // asked to start, api says why it cannot
    let out = r.cli(&["start", "api"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("not started: migrate failed (exit 127)"),
        "{text}"
    );
    // migrate is fixed and run again: api, which was asked to run, starts
    write_program(&prog, "exec sleep 1000");
    r.ok(&["start", "migrate"]);
    eventually("api and web running", || {
        r.pid_of("api").is_some() && r.pid_of("web").is_some()
    });
    assert!(state_of(&r, "api")["last_error"].is_null());
}

#[test]
fn a_crashed_dependency_restarts_without_touching_its_dependants() {
    let mut r = start(
        &[
            ("db", "exec = \"/bin/sleep\"\nargs = [\"1001\"]\n"),
            ("web", &sleeper(&["db"])),
        ],
        &[],
    );
    eventually("both running", || {
        r.pid_of("db").is_some() && r.pid_of("web").is_some()
    });
    let web = r.pid_of("web").unwrap();
    let db = r.pid_of("db").unwrap();
    kill(find_below(&r.z, "sleep 1001"), 9);
    r.z.expect("[db] restarting now");
    eventually("db back", || r.pid_of("db").is_some_and(|p| p != db));
    assert_eq!(r.pid_of("web"), Some(web), "web was restarted");
    let restarts = state_of(&r, "web")["restarts"].as_u64();
    assert_eq!(restarts, Some(0));
    // restart db on request: its dependants keep running too
    r.ok(&["restart", "db"]);
    assert_eq!(r.pid_of("web"), Some(web));
}

#[test]
fn cycles_and_unknown_names_are_refused_and_the_rest_runs() {
    let mut r = start(
        &[
            ("a", &sleeper(&["b"])),
            ("b", &sleeper(&["c"])),
            ("c", &sleeper(&["a"])),
            ("web", &sleeper(&["dbx"])),
            ("over", &sleeper(&["web"])),
            ("fine", SLEEPER),
        ],
        &[],
    );
    r.z.saw("a.toml:3:14: key `depends_on`: dependency cycle a -> b -> c -> a");
    r.z.saw("c.toml:3:14: key `depends_on`: dependency cycle c -> a -> b -> c");
    r.z.saw("web.toml:3:14: key `depends_on`: no unit named `dbx`");
    r.z.saw("over.toml:3:14: key `depends_on`: depends on `web`, which is refused");
    eventually("fine running", || r.pid_of("fine").is_some());
    // Refused units are not loaded, and status lists them as rejected.
    for name in ["a", "b", "c", "web", "over"] {
        let row = state_of(&r, name);
        assert_eq!(row["state"], "rejected", "{name} was loaded: {row}");
        assert!(row["pid"].is_null(), "{row}");
    }
    // zurg check says the same, offline
    let out = std::process::Command::new(common::BIN)
        .args(["check", "--units"])
        .arg(r.dir.path().join("units"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    for want in [
        "b.toml:3:14: key `depends_on`: dependency cycle b -> c -> a -> b",
        "web.toml:3:14: key `depends_on`: no unit named `dbx`",
        "over.toml:3:14: key `depends_on`: depends on `web`",
    ] {
        assert!(text.contains(want), "{want} in {text}");
    }
    assert!(!text.contains("fine.toml"), "{text}");
}

#[test]
fn stop_takes_dependants_down_first_and_start_brings_dependencies_up_first() {
    let marks = TempDir::new("depstop");
    // web stops slowly: db must not get its signal before web is down
    let web = sh(
        &format!(
            "trap 'sleep 0.3; exit 0' TERM; touch {}/web; while :; do sleep 0.05; done",
            marks.path().display()
        ),
        &["db"],
    );
    let mut r = start(
        &[
            ("db", SLEEPER),
            ("web", &web),
            ("worker", &sleeper(&["db"])),
            ("side", SLEEPER),
        ],
        &[],
    );
    eventually("web's trap set", || marks.path().join("web").exists());
    eventually("worker running", || r.pid_of("worker").is_some());
    let side = r.pid_of("side").unwrap();
    let out = r.ok(&["stop", "db"]);
    let lines: Vec<&str> = out.lines().collect();
    assert_eq!(
        lines,
        [
            "web: stopped (stopped first: depends on db)",
            "worker: stopped (stopped first: depends on db)",
            "db: stopped"
        ],
        "{out}"
    );
    r.z.saw("stopping web, worker first (they depend on db)");
    // The reply can come before the log writer has written db's line.
    r.z.saw("[db] stopped pid");
    let seen = r.z.lines_now().to_vec();
    let at = |needle: &str| seen.iter().position(|l| l.contains(needle)).unwrap();
    assert!(at("[web] stopped pid") < at("[db] stopped pid"), "{seen:?}");
    assert_eq!(r.pid_of("side"), Some(side));
    // start web: db comes first; worker stays down (nobody asked)
    let out = r.ok(&["start", "web"]);
    assert!(
        out.contains("db: running, pid ") && out.contains("(started first: needed by web)"),
        "{out}"
    );
    assert!(out.contains("web: running, pid "), "{out}");
    r.z.saw("starting db first (needed by web)");
    assert_eq!(state_of(&r, "worker")["state"], "stopped");
    // restart of a stopped service does the same
    r.ok(&["stop", "db"]);
    let out = r.ok(&["restart", "web"]);
    assert!(
        out.contains("db: running, pid ") && out.contains("(started first: needed by web)"),
        "{out}"
    );
    assert!(out.contains("web: running, pid "), "{out}");
}

#[test]
fn shutdown_stops_dependants_before_their_dependencies() {
    let marks = TempDir::new("depdown");
    let log = marks.path().join("order");
    // The deepest service is the slowest to stop: stopped all at once,
    // the file would read a, b, c.
    let unit = |name: &str, delay: &str, deps: &[&str]| {
        sh(
            &format!(
                "trap 'sleep {delay}; echo {name} >> {log}; exit 0' TERM; touch {m}/{name}; while :; do sleep 0.05; done",
                log = log.display(),
                m = marks.path().display()
            ),
            deps,
        )
    };
    let mut r = start(
        &[
            ("a", &unit("a", "0", &[])),
            ("b", &unit("b", "0.2", &["a"])),
            ("c", &unit("c", "0.4", &["b"])),
        ],
        &[],
    );
    eventually("traps set", || {
        ["a", "b", "c"]
            .iter()
            .all(|n| marks.path().join(n).exists())
    });
    r.z.signal(15);
    r.z.expect("stopping dependants before their dependencies (3 levels)");
    r.z.expect("shutdown complete");
    assert_eq!(r.z.wait_exit().code(), Some(0));
    let order = std::fs::read_to_string(&log).unwrap();
    assert_eq!(order, "c\nb\na\n");
}

#[test]
fn a_reload_that_makes_a_cycle_keeps_the_old_definitions_running() {
    let mut r = start(&[("a", SLEEPER), ("b", &sleeper(&["a"]))], &[]);
    eventually("both running", || {
        r.pid_of("a").is_some() && r.pid_of("b").is_some()
    });
    let (a, b) = (r.pid_of("a").unwrap(), r.pid_of("b").unwrap());
    r.dir.write("units/a.toml", &sleeper(&["b"]));
    let out = r.cli(&["reload"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("a.toml:3:14: key `depends_on`: dependency cycle a -> b -> a"),
        "{err}"
    );
    r.z.saw("dependency cycle b -> a -> b");
    assert_eq!((r.pid_of("a"), r.pid_of("b")), (Some(a), Some(b)));
    // a new dependency list alone does not restart the service
    r.dir.write("units/a.toml", SLEEPER);
    r.dir.write("units/b.toml", &sleeper(&[]));
    r.ok(&["reload"]);
    r.z.saw("[b] depends_on is now []; it applies from its next start");
    assert_eq!((r.pid_of("a"), r.pid_of("b")), (Some(a), Some(b)));
}
