//! Unit file errors (docs/units.md "Errors"): every mistake in a file is
//! reported in one round, in line order, by `zurg check` and by `zurg run`,
//! and a unit with several mistakes is still one rejected unit.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::Command;

use common::{Mode, TempDir, BIN, SLEEPER};

/// Four different mistakes: a missing `exec`, a wrong type, an unknown key
/// and a bad value.
const FOUR_MISTAKES: &str = "\
# forgot exec
args = \"1000\"
restrat = \"always\"
stop_timeout_ms = -1
";

/// What zurg says about FOUR_MISTAKES in `path`, in this order.
fn four_errors(path: &str) -> Vec<String> {
    vec![
        format!("{path}:1:1: missing required key `exec`"),
        format!("{path}:2:8: key `args`: expected an array of strings, found a string"),
        format!(
            "{path}:3:1: key `restrat`: {}",
            zurg::unit::keys::unknown("restrat")
        ),
        format!("{path}:4:19: key `stop_timeout_ms`: must not be negative, found -1"),
    ]
}

fn units_with_four_mistakes(tag: &str) -> (TempDir, String) {
    let dir = TempDir::new(tag);
    dir.write(
        "units/good.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    let bad = dir.write("units/bad.toml", FOUR_MISTAKES);
    (dir, bad.to_str().unwrap().to_string())
}

/// `zurg check --units DIR/units EXTRA...`.
fn check(dir: &TempDir, extra: &[&str]) -> std::process::Output {
    let units = dir.path().join("units");
    Command::new(BIN)
        .args(["check", "--units", units.to_str().unwrap()])
        .args(extra)
        .output()
        .unwrap()
}

/// A unit file's name is the one text of a problem line zurg did not
/// write: with an ESC or a bidi override in it, `check` shows it escaped,
/// as `status` shows a service's texts, and never acts on the terminal.
#[test]
fn check_shows_a_file_name_with_control_characters_escaped() {
    let dir = TempDir::new("check-escape");
    let body = "exec = \"/bin/sleep\"\nargs = [\"1\"]\n";
    dir.write("units/x\u{1b}]0;owned\u{7}y.toml", body);
    dir.write("units/w\u{202e}eb.toml", body);
    let out = check(&dir, &[]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    assert!(
        text.contains("x\\x1b]0;owned\\x07y.toml: invalid service name"),
        "{text}"
    );
    assert!(
        text.contains("w\\u{202e}eb.toml: invalid service name"),
        "{text}"
    );
    let json = check(&dir, &["--json"]);
    let doc = String::from_utf8_lossy(&json.stdout);
    assert!(doc.contains("w\\u202eeb.toml"), "{doc}");
    for said in [&out.stdout, &json.stdout] {
        let said = String::from_utf8_lossy(said);
        assert!(!said.contains(['\u{1b}', '\u{7}', '\u{202e}']), "{said:?}");
    }
}

#[test]
fn check_reports_all_four_mistakes_of_a_unit_at_once_in_line_order() {
    let (dir, bad) = units_with_four_mistakes("check-four");
    let out = check(&dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines, four_errors(&bad), "{text}");
    assert!(
        lines[2].ends_with("; did you mean `restart`?"),
        "{}",
        lines[2]
    );

    let out = check(&dir, &["--json"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["units"], 1, "{v}");
    let messages: Vec<&str> = v["problems"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["message"].as_str().unwrap())
        .collect();
    assert_eq!(messages, four_errors(&bad), "{v}");
}

/// An unknown user or group is reported beside the file's other mistakes,
/// in line order: it was looked up only once the rest of the file was
/// right, so `check` needed a second round to find it.
#[test]
fn check_reports_an_unknown_user_beside_the_other_mistakes() {
    let dir = TempDir::new("check-user");
    let bad = dir.write(
        "units/bad.toml",
        "exec = \"/bin/sleep\"\nuser = \"no-such-user-zurg\"\nnice = 20\ngroup = \"no-such-group-zurg\"\n",
    );
    let bad = bad.to_str().unwrap();
    let out = check(&dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(
        lines,
        [
            format!("{bad}:2:8: key `user`: no user \"no-such-user-zurg\" in /etc/passwd"),
            format!("{bad}:3:8: key `nice`: must be -20 to 19, found 20"),
            format!("{bad}:4:9: key `group`: no group \"no-such-group-zurg\" in /etc/group"),
        ],
        "{text}"
    );
}

/// A one-shot is done when it exits; `ready`, `health` or `watchdog_ms`
/// on it could only stop a slow run half-way (a health check restarted a
/// two-second migration every interval, and a `ready` it never gave
/// killed it at the ready timeout), so they are refused where they are.
#[test]
fn probes_on_a_oneshot_are_refused_naming_each_key() {
    let dir = TempDir::new("check-oneshot");
    let bad = dir.write(
        "units/migrate.toml",
        "exec = \"/bin/true\"\ntype = \"oneshot\"\nready = \"notify\"\n\
         health = { exec = [\"/bin/true\"] }\nwatchdog_ms = 1000\n",
    );
    dir.write(
        "units/fine.toml",
        "exec = \"/bin/true\"\ntype = \"oneshot\"\nready_timeout_ms = 1000\n",
    );
    let bad = bad.to_str().unwrap();
    let out = check(&dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    let why = "does not apply to type = \"oneshot\": a one-shot counts once it has completed";
    assert_eq!(lines.len(), 3, "{text}");
    for (line, want) in lines.iter().zip([
        format!("{bad}:3:9: key `ready`: {why}"),
        format!("{bad}:4:10: key `health`: {why}"),
        format!("{bad}:5:15: key `watchdog_ms`: {why}"),
    ]) {
        assert!(line.starts_with(&want), "{line}\nwanted {want}");
    }
}

#[test]
fn run_logs_all_four_mistakes_in_line_order_and_rejects_one_unit() {
    let (dir, bad) = units_with_four_mistakes("run-four");
    let mut z = common::run_in(&dir, Mode::Pid1, &["--grace", "1s"]);
    // Each expect consumes the lines up to its match, so the four are
    // found only if they come in this order.
    for want in four_errors(&bad) {
        let line = z.expect(&want);
        assert!(line.ends_with(&want), "{line}");
    }
    z.expect("1 added, 0 changed, 0 removed, 0 unchanged, 1 rejected");
    z.saw("[good] started pid");
}

#[test]
fn status_lists_a_rejected_unit_and_fails_until_its_file_is_fixed() {
    let (dir, bad) = units_with_four_mistakes("status-rejected");
    let mut z = common::run_in(&dir, Mode::Pid1, &["--grace", "1s"]);
    z.expect("[good] started pid");
    let out = common::cli(&dir, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let want = format!("bad: its unit file was rejected: {}", four_errors(&bad)[0]);
    assert!(text.contains(&want), "{text}");
    assert!(
        text.lines()
            .any(|l| l.starts_with("bad") && l.contains("rejected")),
        "{text}"
    );
    // Asked by name, it is not an unknown service either.
    let row = common::status_of(&dir, "bad");
    assert_eq!(row["state"], "rejected", "{row}");

    // A reload that breaks the file of a running unit keeps that unit
    // running, and status says why it was not updated.
    dir.write(
        "units/bad.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    common::ok(&dir, &["reload"]);
    z.expect("[bad] started pid");
    assert_eq!(common::cli(&dir, &["status"]).status.code(), Some(0));
    let good = dir.write("units/good.toml", "exec = 7\n");
    let out = common::cli(&dir, &["reload"]);
    assert_eq!(out.status.code(), Some(1));
    let out = common::cli(&dir, &["status"]);
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(out.status.code(), Some(1), "{text}");
    let want = format!(
        "good: its unit file was rejected, the unit loaded before runs on: {}:1:8",
        good.display()
    );
    assert!(text.contains(&want), "{text}");
    assert_eq!(common::status_of(&dir, "good")["state"], "running");
}

#[test]
fn check_blames_the_file_of_an_instanced_unit_once() {
    let dir = TempDir::new("check-instances");
    let web = dir.write(
        "units/web.toml",
        "exec = \"/nonexistent/bin/web\"\ninstances = 3\nport = \"auto\"\n",
    );
    let out = check(&dir, &[]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 1, "{text}");
    let want = format!("{}: exec /nonexistent/bin/web: No such file", web.display());
    assert!(lines[0].starts_with(&want), "{text}");
}

#[test]
fn check_counts_a_unit_with_instances_as_one_file() {
    let dir = TempDir::new("check-count");
    dir.write("units/web.toml", &format!("{SLEEPER}instances = 3\n"));
    dir.write("units/db.toml", SLEEPER);
    let units = dir.path().join("units");
    let out = check(&dir, &[]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let text = String::from_utf8_lossy(&out.stdout);
    assert_eq!(
        text.trim(),
        format!("2 unit(s) (4 services) in {} are fine", units.display())
    );
    let out = check(&dir, &["--json"]);
    let doc: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(
        (doc["units"].as_u64(), doc["services"].as_u64()),
        (Some(2), Some(4))
    );
}
