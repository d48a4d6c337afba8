//! The command line as a person meets it (README "Command line"): verbs,
//! help, completions, the man page, what the client says when no zurg
//! answers, and zurg's start-up faces as PID 1.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Write;
use std::os::unix::net::UnixListener;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc::Receiver;

use common::{find_below, wait_child, Mode, TempDir, Zurg, BIN, DEADLINE};

fn zurg(args: &[&str]) -> Output {
    Command::new(BIN)
        .args(args)
        .env_remove("ZURG_SOCKET")
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

fn have(cmd: &str) -> bool {
    Command::new("sh")
        .args(["-c", &format!("command -v {cmd}")])
        .output()
        .is_ok_and(|o| o.status.success())
}

/// The verbs named in `zurg help`'s "verbs:" section.
fn verbs() -> Vec<String> {
    let out = zurg(&["help"]);
    assert!(out.status.success());
    text(&out.stdout)
        .lines()
        .skip_while(|l| *l != "verbs:")
        .skip(1)
        .take_while(|l| !l.is_empty())
        .map(|l| l.split_whitespace().next().unwrap().to_string())
        .collect()
}

#[test]
fn a_mistyped_verb_is_a_usage_error_that_names_the_nearest_verb() {
    let out = zurg(&["stauts"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("`stauts` is neither a zurg verb nor a program")
            && err.contains("did you mean `zurg status`?"),
        "{err}"
    );
    assert!(!err.contains("command not found"), "{err}");

    // `logs` was this example until it became a verb.
    let out = zurg(&["kubernetes"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(err.contains("`kubernetes` is neither"), "{err}");
    assert!(!err.contains("did you mean"), "{err}");

    // `help` runs no program, so it does not mention PATH
    let out = zurg(&["help", "stauts"]);
    assert_eq!(out.status.code(), Some(2));
    let err = text(&out.stderr);
    assert!(
        err.contains("help: `stauts` is not a zurg verb; did you mean `zurg help status`?"),
        "{err}"
    );
    assert!(!err.contains("PATH"), "{err}");
}

#[test]
fn a_program_on_path_still_runs_dumb_init_style() {
    let out = zurg(&["sh", "-c", "exit 7"]);
    assert_eq!(out.status.code(), Some(7));
    // after `--` the word is a command, as with tini: not found is 127
    let out = zurg(&["--", "stauts"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
    // and a path is never taken for a verb
    let out = zurg(&["./stauts"]);
    assert_eq!(out.status.code(), Some(127), "{}", text(&out.stderr));
}

#[test]
fn help_lists_every_verb_once_and_each_verb_has_its_own_help() {
    let verbs = verbs();
    for v in [
        "run",
        "status",
        "check",
        "version",
        "resolve",
        "publisher",
        "history",
        "help",
        "completions",
        "man",
    ] {
        assert!(verbs.iter().any(|x| x == v), "{v} missing from {verbs:?}");
    }
    assert_eq!(
        text(&zurg(&["--help"]).stdout),
        text(&zurg(&["help"]).stdout)
    );
    for v in &verbs {
        let out = zurg(&[v, "--help"]);
        assert_eq!(out.status.code(), Some(0), "zurg {v} --help");
        let help = text(&out.stdout);
        assert!(help.starts_with(&format!("usage: zurg {v}")), "{help}");
        assert_eq!(help, text(&zurg(&["help", v]).stdout), "zurg help {v}");
    }
    // options with their defaults, not an "invalid option" or the general usage
    let check = text(&zurg(&["check", "--help"]).stdout);
    assert!(
        check.contains("-u, --units DIR") && check.contains("(default: /etc/zurg/units)"),
        "{check}"
    );
    let run = text(&zurg(&["run", "-h"]).stdout);
    assert!(
        run.contains("--grace DUR") && run.contains("(default: 5s)") && !run.contains("verbs:"),
        "{run}"
    );
    let status = text(&zurg(&["status", "--help"]).stdout);
    assert!(
        status.contains("--socket PATH") && status.contains("$ZURG_SOCKET"),
        "{status}"
    );
    let out = zurg(&["help", "stauts"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(text(&out.stderr).contains("did you mean `zurg help status`?"));
}

/// The common form of a usage error, hand-written for none: `zurg: WHAT`,
/// then the help `zurg help VERB` prints (resolve and publisher had texts of
/// their own, which had drifted from their options).
#[test]
fn a_usage_error_of_every_verb_exits_2_with_that_verbs_own_help() {
    for v in verbs() {
        let out = zurg(&[&v, "--no-such-option"]);
        assert_eq!(out.status.code(), Some(2), "zurg {v}");
        let err = text(&out.stderr);
        let (first, rest) = err.split_once('\n').unwrap();
        assert_eq!(
            first, "zurg: invalid option '--no-such-option'",
            "zurg {v}: {err}"
        );
        let help = text(&zurg(&["help", &v]).stdout);
        assert_eq!(rest.trim_end(), help.trim_end(), "zurg {v}");
    }
    // And the usage errors only resolve and publisher find themselves.
    let resolve = zurg(&["resolve", "--timeout", "soon", "web"]);
    assert_eq!(resolve.status.code(), Some(2));
    let err = text(&resolve.stderr);
    assert!(
        err.starts_with("zurg: --timeout \"soon\": expected a duration")
            && err.contains("usage: zurg resolve NAME|--all [OPTIONS]"),
        "{err}"
    );
    let check = zurg(&["check", "--units"]);
    assert_eq!(check.status.code(), Some(2));
    let err = text(&check.stderr);
    assert!(
        err.starts_with("zurg: missing argument for option '--units'\nusage: zurg check"),
        "{err}"
    );
    let publisher = zurg(&["publisher"]);
    assert_eq!(publisher.status.code(), Some(2));
    let err = text(&publisher.stderr);
    assert!(
        err.starts_with("zurg: --listen ADDR is required\nusage: zurg publisher [OPTIONS]"),
        "{err}"
    );
}

#[test]
fn bash_completion_loads_and_completes_verbs_and_options() {
    let script = format!(
        "source <({BIN} completions bash) && complete -p zurg && \
         COMP_WORDS=(zurg sta) COMP_CWORD=1 && _zurg && echo \"${{COMPREPLY[*]}}\" && \
         COMP_WORDS=(zurg check --) COMP_CWORD=2 && _zurg && echo \"${{COMPREPLY[*]}}\""
    );
    let out = Command::new("bash").args(["-c", &script]).output().unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    let lines: Vec<String> = text(&out.stdout).lines().map(String::from).collect();
    assert_eq!(lines[0], "complete -F _zurg zurg");
    assert_eq!(lines[1], "status start stats");
    assert_eq!(lines[2], "--units --strict --json --help");
}

#[test]
fn zsh_and_fish_completions_parse() {
    for (shell, args) in [("zsh", &["-n"][..]), ("fish", &["-n"])] {
        if !have(shell) {
            common::skip("zsh_and_fish_completions_parse", &format!("no {shell}"));
            continue;
        }
        let script = zurg(&["completions", shell]);
        assert!(script.status.success());
        let mut child = Command::new(shell)
            .args(args)
            .stdin(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        child
            .stdin
            .take()
            .unwrap()
            .write_all(&script.stdout)
            .unwrap();
        let out = child.wait_with_output().unwrap();
        assert!(out.status.success(), "{shell}: {}", text(&out.stderr));
    }
    let out = zurg(&["completions", "tcsh"]);
    assert_eq!(out.status.code(), Some(2));
}

#[test]
fn the_man_page_renders_without_warnings() {
    let page = zurg(&["man"]);
    assert!(page.status.success());
    if !have("man") {
        common::skip("the_man_page_renders_without_warnings", "no man");
        return;
    }
    let dir = TempDir::new("man");
    let f = dir.write("zurg.8", &text(&page.stdout));
    let out = Command::new("man")
        .args(["--warnings", "-l"])
        .arg(&f)
        .env("MANPAGER", "cat")
        .env("MANWIDTH", "80")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(text(&out.stderr), "", "man warns");
    let shown = text(&out.stdout);
    assert!(
        shown.contains("zurg check") && shown.contains("--units"),
        "{shown}"
    );
}

fn client_at(sock: &Path, args: &[&str]) -> Output {
    let mut a = args.to_vec();
    let s = sock.to_str().unwrap();
    a.extend(["--socket", s]);
    zurg(&a)
}

fn assert_unreachable(out: &Output, sock: &Path, what: &str) {
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("no zurg answers at {}", sock.display())) && err.contains(what),
        "{err}"
    );
    assert!(
        !err.contains("Connection refused") && !err.contains("expected"),
        "{err}"
    );
}

#[test]
fn a_socket_path_where_no_zurg_answers_is_named_with_what_it_is() {
    let dir = TempDir::new("nozurg");
    let missing = dir.path().join("missing.sock");
    assert_unreachable(
        &client_at(&missing, &["status"]),
        &missing,
        "nothing is there",
    );

    let file = dir.write("file", "not a socket\n");
    assert_unreachable(&client_at(&file, &["status"]), &file, "regular file");

    assert_unreachable(&client_at(dir.path(), &["status"]), dir.path(), "directory");

    let stale = dir.path().join("stale.sock");
    drop(UnixListener::bind(&stale).unwrap());
    assert_unreachable(
        &client_at(&stale, &["status"]),
        &stale,
        "nothing listens on",
    );

    // a socket where something else answers
    let other = dir.path().join("other.sock");
    let listener = UnixListener::bind(&other).unwrap();
    let server = std::thread::spawn(move || {
        let (mut s, _) = listener.accept().unwrap();
        s.write_all(b"220 smtp.example ready\n").unwrap();
    });
    assert_unreachable(
        &client_at(&other, &["status"]),
        &other,
        "does not speak zurg's control protocol (it said: 220 smtp.example ready)",
    );
    server.join().unwrap();
}

/// A listener that takes the request and never answers (a stopped zurg):
/// the client gives up at its reply timeout and says so, not with the
/// kernel's "Resource temporarily unavailable".
#[test]
fn a_socket_that_never_answers_is_given_up_on_with_a_message_that_says_so() {
    let dir = TempDir::new("silent");
    let sock = dir.path().join("silent.sock");
    let listener = UnixListener::bind(&sock).unwrap();
    let server = std::thread::spawn(move || {
        let (s, _) = listener.accept().unwrap();
        // Held open, unanswered, until the client has gone.
        let _ = std::io::Read::read_to_end(&mut &s, &mut Vec::new());
    });
    // `wait --timeout 1ms` waits for its reply 5 s past its timeout.
    let out = client_at(&sock, &["wait", "web", "--timeout", "1ms"]);
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(
        err.contains(&format!("no answer from {} within 5.0s", sock.display()))
            && err.contains("took the request and said nothing"),
        "{err}"
    );
    assert!(!err.contains("temporarily unavailable"), "{err}");
    server.join().unwrap();
}

#[test]
fn a_user_the_socket_refuses_is_told_about_readers() {
    if !have("setpriv") {
        common::skip(
            "a_user_the_socket_refuses_is_told_about_readers",
            "no setpriv",
        );
        return;
    }
    let dir = TempDir::new("eacces");
    dir.write(
        "units/sleeper.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    // the test directory must be searchable for `nobody` to reach the socket
    std::fs::set_permissions(
        dir.path(),
        std::os::unix::fs::PermissionsExt::from_mode(0o755),
    )
    .unwrap();
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("loaded");
    let sock = dir.path().join("control.sock");
    let out = Command::new("setpriv")
        .args(["--reuid=65534", "--regid=65534", "--clear-groups", BIN])
        .args(["status", "--socket", sock.to_str().unwrap()])
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert_eq!(out.status.code(), Some(3), "{err}");
    assert!(
        err.contains(&format!("permission denied on {}", sock.display()))
            && err.contains("zurg run --readers GROUP"),
        "{err}"
    );
}

#[test]
fn a_missing_readers_group_is_a_warning_not_a_failed_start() {
    let dir = TempDir::new("readers");
    dir.write(
        "units/sleeper.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    let mut z = common::run_in(&dir, Mode::Pid1, &["--readers", "no-such-group-zurg"]);
    let line = z.expect("no-such-group-zurg");
    assert!(line.contains("warning"), "{line}");
    z.expect("loaded");
    let out = common::cli(&dir, &["status"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert!(text(&out.stdout).contains("sleeper"));
}

#[test]
fn history_reads_the_journal_when_zurg_is_down() {
    let dir = TempDir::new("offline");
    dir.write(
        "units/once.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"exit 4\"]\nrestart = \"never\"\n",
    );
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("exited with code 4");
    let out = common::cli(&dir, &["shutdown"]);
    assert!(out.status.success(), "{}", text(&out.stderr));
    assert_eq!(z.wait_exit().code(), Some(0));

    let state = dir.path().join("state");
    let out = common::cli(&dir, &["history", "--state", state.to_str().unwrap()]);
    let (stdout, stderr) = (text(&out.stdout), text(&out.stderr));
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("no zurg answers") && stderr.contains("reading the journal"),
        "{stderr}"
    );
    assert!(
        stdout.contains(" once start") && stdout.contains(" once exit (code 4)"),
        "{stdout}"
    );
    // --json gives the same shape as zurg's own answer
    let out = common::cli(
        &dir,
        &[
            "history",
            "once",
            "--json",
            "--state",
            state.to_str().unwrap(),
        ],
    );
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"].as_array().unwrap().len(), 2, "{v}");
    // a name the journal holds nothing of: said, exit 1, as zurg says it
    let out = common::cli(
        &dir,
        &["history", "nosuch", "--state", state.to_str().unwrap()],
    );
    let stderr = text(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("holds no record of `nosuch`"), "{stderr}");
    assert!(out.stdout.is_empty());
    // without --state the client still says that no zurg answers, and
    // how to read the journal anyway
    let out = common::cli(&dir, &["history"]);
    assert_eq!(out.status.code(), Some(3));
    let stderr = text(&out.stderr);
    assert!(
        stderr.contains("no zurg answers") && stderr.contains("`zurg history --state DIR`"),
        "{stderr}"
    );
}

/// `zurg events --follow --json` against DIR's zurg, its stdout as lines.
fn follow(dir: &TempDir) -> (std::process::Child, Receiver<String>) {
    let (child, rx) = common::cli_lines(dir, &["events", "--follow", "--json"]);
    let ack = rx.recv_timeout(DEADLINE).expect("no answer to --follow");
    assert!(ack.contains("\"following\":true"), "{ack}");
    (child, rx)
}

#[test]
fn events_follow_ends_cleanly_when_zurg_shuts_down() {
    let dir = TempDir::new("follow-ok");
    dir.write(
        "units/sleeper.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("[sleeper] started");
    let (mut child, rx) = follow(&dir);
    let out = common::cli(&dir, &["shutdown"]);
    assert!(out.status.success());
    let (code, err) = wait_child(&mut child);
    assert_eq!(code, Some(0), "{err}");
    assert!(
        err.contains("stopped") && !err.contains("without an answer"),
        "{err}"
    );
    let lines = common::rest_of(&rx);
    let last = lines.last().expect("no event before the end");
    assert!(last.contains("\"kind\":\"shutdown\""), "{lines:?}");
    assert!(
        lines.iter().any(|l| l.contains("\"service\":\"sleeper\"")),
        "{lines:?}"
    );
    // the log line names the mode in words, not as a Rust debug name
    let line = z.saw("shutdown requested over the control socket");
    assert!(!line.contains("Default"), "{line}");
    assert_eq!(z.wait_exit().code(), Some(0));
}

#[test]
fn events_follow_fails_when_zurg_dies() {
    let dir = TempDir::new("follow-crash");
    dir.write(
        "units/sleeper.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("[sleeper] started");
    let (mut child, _rx) = follow(&dir);
    z.signal(9);
    let (code, err) = wait_child(&mut child);
    assert_eq!(code, Some(1), "{err}");
    assert!(
        err.contains("closed the connection without an answer"),
        "{err}"
    );
}

#[test]
fn status_from_outside_the_pid_namespace_shows_the_callers_pids() {
    let dir = TempDir::new("nspid");
    dir.write(
        "units/sleeper.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    let inner = common::pid_in(&z.expect("[sleeper] started pid"));
    let host = find_below(&z, "sleep 1000");
    assert_ne!(inner, host);
    let out = common::cli(&dir, &["status"]);
    let table = text(&out.stdout);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    assert_eq!(
        header,
        [
            "NAME",
            "STATE",
            "PID",
            "UPTIME",
            "READY",
            "RESTARTS",
            "LAST-EXIT",
            "ZURG-PID"
        ],
        "{table}"
    );
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[2], host.to_string(), "{table}");
    assert_eq!(row[7], inner.to_string(), "{table}");
    // stats too
    let out = common::cli(&dir, &["stats"]);
    let table = text(&out.stdout);
    let header: Vec<&str> = table.lines().next().unwrap().split_whitespace().collect();
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    let col = |name: &str| header.iter().position(|h| *h == name).unwrap();
    assert_eq!(row[col("PID")], host.to_string(), "{table}");
    assert_eq!(row[col("ZURG-PID")], inner.to_string(), "{table}");
    // --json keeps zurg's own pid, and adds the caller's beside it
    let out = common::cli(&dir, &["status", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["result"][0]["pid"].as_i64(), Some(i64::from(inner)));
    assert_eq!(v["result"][0]["caller_pid"].as_i64(), Some(i64::from(host)));
}

#[test]
fn restart_and_the_other_verbs_from_outside_the_pid_namespace_answer_the_callers_pid() {
    let dir = TempDir::new("nspid-restart");
    dir.write(
        "units/api.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("[api] started pid");
    let out = common::cli(&dir, &["restart", "api"]);
    assert!(out.status.success(), "{}", common::text(&out));
    let answer = text(&out.stdout);
    assert!(answer.starts_with("api: running, pid "), "{answer}");
    let (pid, inner) = common::both_pids(&answer);
    // On the host, that pid is api's new process: below zurg, with api's
    // current GPID in its environment, and `inner` in zurg's namespace.
    let gpid = common::gpid_of(&dir, "api");
    let environ = std::fs::read(format!("/proc/{pid}/environ")).unwrap();
    assert!(
        environ
            .split(|b| *b == 0)
            .any(|e| e == format!("ZURG_GPID={gpid}").as_bytes()),
        "pid {pid} is not api ({gpid}): {answer}"
    );
    assert!(z.descendants().contains(&pid), "{answer}");
    assert_eq!(common::ns_pid(pid), Some(inner), "{answer}");
    assert_ne!(pid, inner);
    // status's PID column says the same
    let table = text(&common::cli(&dir, &["status"]).stdout);
    let row: Vec<&str> = table.lines().nth(1).unwrap().split_whitespace().collect();
    assert_eq!(row[2], pid.to_string(), "{table}");
    // and so do start, wait, signal and events
    for args in [&["start", "api"][..], &["wait", "api"]] {
        let answer = text(&common::cli(&dir, args).stdout);
        assert_eq!(
            common::both_pids(&answer),
            (pid, inner),
            "{args:?}: {answer}"
        );
    }
    let answer = text(&common::cli(&dir, &["signal", "api", "CONT"]).stdout);
    assert!(answer.starts_with("sent SIGCONT to api, pid "), "{answer}");
    assert_eq!(common::both_pids(&answer), (pid, inner), "{answer}");
    let events = text(&common::cli(&dir, &["events"]).stdout);
    let started = events
        .lines()
        .rfind(|l| l.contains(" api started pid "))
        .unwrap_or_else(|| panic!("{events}"));
    assert_eq!(common::both_pids(started), (pid, inner), "{events}");
    // The process the restart stopped is gone: its events say so rather
    // than give a number the host may have reused.
    let stopped = events
        .lines()
        .find(|l| l.contains(" api stopped pid "))
        .unwrap_or_else(|| panic!("{events}"));
    assert!(
        stopped.contains(" api stopped pid ? (zurg-pid "),
        "{events}"
    );
    // --json: zurg's pid as `pid`, the caller's as `caller_pid`, for
    // every verb
    let v: serde_json::Value =
        serde_json::from_slice(&common::cli(&dir, &["restart", "api", "--json"]).stdout).unwrap();
    let row = &v["result"][0];
    let host = row["caller_pid"].as_i64().unwrap_or_else(|| panic!("{v}"));
    let (host, inner) = (host as i32, row["pid"].as_i64().unwrap() as i32);
    assert_eq!(common::ns_pid(host), Some(inner), "{v}");
    assert!(z.descendants().contains(&host), "{v}");
    let v: serde_json::Value =
        serde_json::from_slice(&common::cli(&dir, &["signal", "api", "CONT", "--json"]).stdout)
            .unwrap();
    assert_eq!(
        v["result"]["caller_pid"].as_i64(),
        Some(i64::from(host)),
        "{v}"
    );
    assert_eq!(v["result"]["pid"].as_i64(), Some(i64::from(inner)), "{v}");
    // events --follow maps the processes that start after it began
    let (mut child, rx) = follow(&dir);
    let answer = text(&common::cli(&dir, &["restart", "api"]).stdout);
    let (host, inner) = common::both_pids(&answer);
    let deadline = std::time::Instant::now() + DEADLINE;
    let started = loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        let line = rx.recv_timeout(left).expect("no started event");
        if line.contains("\"kind\":\"started\"") {
            break line;
        }
    };
    let v: serde_json::Value = serde_json::from_str(&started).unwrap();
    assert_eq!(v["event"]["pid"].as_i64(), Some(i64::from(inner)), "{v}");
    assert_eq!(
        v["event"]["caller_pid"].as_i64(),
        Some(i64::from(host)),
        "{v}"
    );
    let _ = child.kill();
    let _ = child.wait();
    // version: zurg itself
    let version = text(&common::cli(&dir, &["version"]).stdout);
    assert!(
        version.contains(&format!("pid {} (zurg-pid 1))", z.host_pid())),
        "{version}"
    );
}

#[test]
fn pid1_of_a_container_with_nothing_to_run_prints_usage_and_exits_2() {
    if Path::new("/etc/zurg/units").exists() {
        common::skip(
            "pid1_of_a_container_with_nothing_to_run_prints_usage_and_exits_2",
            "this machine has /etc/zurg/units",
        );
        return;
    }
    let mut z = Zurg::start(Mode::Pid1, &[]);
    assert_eq!(z.wait_exit().code(), Some(2));
    let said = z.lines_now().join("\n");
    assert!(
        said.contains("no units in /etc/zurg/units") && said.contains("usage:"),
        "{said}"
    );
}

#[test]
fn log_lines_carry_timestamps_unless_told_not_to() {
    let dir = TempDir::new("stamps");
    dir.write(
        "units/sleeper.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    // stderr is a pipe here, as under a log collector: on by default
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    let line = z.expect("loaded");
    let (stamp, rest) = line.split_once(' ').unwrap();
    assert!(rest.starts_with("zurg: "), "{line}");
    assert_eq!(stamp.len(), "2026-12-02T01:02:03.456Z".len(), "{line}");
    assert!(
        stamp.ends_with('Z') && stamp.as_bytes()[10] == b'T' && stamp.as_bytes()[19] == b'.',
        "{line}"
    );
    drop(z);
    let mut z = common::run_in(&dir, Mode::Pid1, &["--no-log-timestamps"]);
    let line = z.expect("loaded");
    assert!(line.starts_with("zurg: "), "{line}");
    drop(z);
    // the shim too
    let mut z = Zurg::start(
        Mode::Pid1,
        &[
            "--no-log-timestamps",
            "-v",
            "--",
            "sh",
            "-c",
            "sleep 1000 & exit 0",
        ],
    );
    z.wait_exit();
    // how CMD ended, in words rather than a Rust debug name
    let line = z.saw("ended (");
    assert!(line.contains("ended (exit code 0)"), "{line}");
    let said = z.lines_now().to_vec();
    assert!(said.iter().all(|l| l.starts_with("zurg: ")), "{said:?}");
}

/// `zurg status --json | head -c 1`: the client ends by SIGPIPE when its
/// reader goes, as `cat` does, without a panic's message on stderr (Rust
/// ignores SIGPIPE, so the write failed and `print!` panicked).
#[test]
fn a_client_whose_reader_goes_away_ends_quietly_by_sigpipe() {
    let dir = TempDir::new("sigpipe");
    for i in 0..300 {
        dir.write(&format!("units/s{i:03}.toml"), common::SLEEPER);
    }
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("[s299] started pid");
    let sock = dir.path().join("control.sock");
    // The reader is gone before the client writes: it reads nothing.
    let (reader, writer) = std::io::pipe().unwrap();
    drop(reader);
    let out = Command::new(BIN)
        .args(["status", "--json", "--socket", sock.to_str().unwrap()])
        .stdout(writer)
        .stderr(Stdio::piped())
        .output()
        .unwrap();
    let err = text(&out.stderr);
    assert!(err.is_empty(), "{err}");
    assert_eq!(
        std::os::unix::process::ExitStatusExt::signal(&out.status),
        Some(libc::SIGPIPE),
        "{:?}",
        out.status
    );
}
