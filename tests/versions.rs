//! Versioned binaries and checksums (docs/units.md `version`, `md5`,
//! `sha256`; `zurg check`; `zurg run --strict`).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use common::{eventually, gpid_of, status_of, Mode, TempDir, Zurg, BIN};

/// Deploys a copy of /bin/sleep as build `version` of `name`; returns its
/// path and md5.
fn deploy(dir: &TempDir, name: &str, version: &str) -> (PathBuf, String) {
    let path = dir.path().join(format!("opt/{name}/{version}/bin/{name}"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    std::fs::copy("/bin/sleep", &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sum = common::md5(&path);
    (path, sum)
}

fn unit(exec: &Path, version: &str, md5: &str) -> String {
    common::build_unit(exec, version, md5)
}

fn run(dir: &TempDir, extra: &[&str]) -> Zurg {
    common::run_in(dir, Mode::Pid1, extra)
}

#[test]
fn correct_md5_starts_and_a_wrong_one_fails_without_a_restart_loop() {
    let dir = TempDir::new("md5");
    let (good, sum) = deploy(&dir, "good", "1.0.0");
    let (bad, _) = deploy(&dir, "bad", "2.0.0");
    dir.write("units/good.toml", &unit(&good, "1.0.0", &sum));
    let wrong = "0123456789abcdef0123456789abcdef";
    dir.write("units/bad.toml", &unit(&bad, "2.0.0", wrong));
    let mut z = run(&dir, &[]);
    z.saw("[good] started pid");
    let line = z.saw("[bad] refused to start");
    assert!(
        line.contains(&format!("expected {wrong}, found {sum}")),
        "{line}"
    );
    eventually("bad is failed", || {
        status_of(&dir, "bad")["state"] == "failed"
    });
    // no restart loop: nothing more about `bad` for a while
    assert!(z
        .try_wait_line(Duration::from_millis(500), &|l: &str| l.contains("[bad]"))
        .is_none());
    assert_eq!(status_of(&dir, "good")["version"], "1.0.0");
}

#[test]
fn a_binary_replaced_in_place_is_refused_at_the_next_start() {
    let dir = TempDir::new("swap");
    let (exec, sum) = deploy(&dir, "api", "1.1.0");
    dir.write("units/api.toml", &unit(&exec, "1.1.0", &sum));
    let mut z = run(&dir, &[]);
    let first = z.saw("[api] started pid");
    // overwrite the deployed build with another binary (what the rule forbids)
    let tmp = exec.with_extension("new");
    std::fs::copy("/bin/true", &tmp).unwrap();
    std::fs::rename(&tmp, &exec).unwrap();
    let out = Command::new(BIN)
        .args(["restart", "api"])
        .env("ZURG_SOCKET", dir.path().join("control.sock"))
        .output()
        .unwrap();
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("api: failed"),
        "{out:?} after {first}"
    );
    z.saw("[api] refused to start: md5 mismatch");
}

#[test]
fn versioned_path_rule_at_load_and_strict_mode() {
    let dir = TempDir::new("strict");
    let (exec, sum) = deploy(&dir, "web", "3.0.0");
    dir.write("units/web.toml", &unit(&exec, "3.0.1", &sum));
    dir.write(
        "units/plain.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    let (ok_exec, ok_sum) = deploy(&dir, "ok", "1.0");
    dir.write("units/ok.toml", &unit(&ok_exec, "1.0", &ok_sum));
    let mut z = run(&dir, &["--strict"]);
    let line = z.saw("web.toml");
    assert!(
        line.contains("is not a versioned path: no path component equals version \"3.0.1\""),
        "{line}"
    );
    z.saw("plain.toml: strict mode: a unit needs `version` and `md5` or `sha256`");
    z.saw("[ok] started pid");
}

#[test]
fn check_validates_units_offline() {
    let dir = TempDir::new("check");
    let (exec, sum) = deploy(&dir, "svc", "1.2.3");
    dir.write("units/svc.toml", &unit(&exec, "1.2.3", &sum));
    let units = dir.path().join("units");
    let out = Command::new(BIN)
        .args(["check", "--units", units.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{out:?}");

    dir.write(
        "units/wrong.toml",
        &unit(&exec, "1.2.3", "ffffffffffffffffffffffffffffffff"),
    );
    dir.write("units/unversioned.toml", &unit(&exec, "9.9", &sum));
    dir.write("units/missing.toml", "exec = \"/nonexistent/bin/x\"\n");
    let out = Command::new(BIN)
        .args(["check", "--units", units.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let text = String::from_utf8_lossy(&out.stdout);
    let lines: Vec<&str> = text.lines().collect();
    assert_eq!(lines.len(), 3, "{text}");
    assert!(
        text.contains(&format!(
            "md5 mismatch for {}: expected ffffffffffffffffffffffffffffffff, found {sum}",
            exec.display()
        )),
        "{text}"
    );
    assert!(
        text.contains("unversioned.toml:3:11: key `version`"),
        "{text}"
    );
    assert!(
        text.contains("missing.toml: exec /nonexistent/bin/x: No such file"),
        "{text}"
    );
    let out = Command::new(BIN)
        .args([
            "check",
            "--units",
            units.to_str().unwrap(),
            "--json",
            "--strict",
        ])
        .output()
        .unwrap();
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["ok"], false);
    assert_eq!(v["problems"].as_array().unwrap().len(), 4, "{v}");
}

fn zurg(dir: &TempDir, args: &[&str]) -> std::process::Output {
    common::cli(dir, args)
}

#[test]
fn upgrade_then_rollback_and_a_failed_upgrade_rolls_back_by_itself() {
    let dir = TempDir::new("upgrade");
    let (v1, sum1) = common::deploy_build(&dir, "api", "1.0", "/bin/sleep");
    let (_v2, sum2) = common::deploy_build(&dir, "api", "2.0", "/bin/sleep");
    let (_v3, sum3) = common::deploy_build(&dir, "api", "3.0", "/bin/false");
    dir.write("units/api.toml", &unit(&v1, "1.0", &sum1));
    let mut z = run(&dir, &[]);
    z.saw("[api] started pid");
    let gpid1 = status_of(&dir, "api")["gpid"].clone();

    // a build whose checksum does not match is refused before anything changes
    let out = zurg(
        &dir,
        &["upgrade", "api", "--version", "2.0", "--md5", &sum1],
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stderr)
            .contains("new build refused, nothing changed: md5 mismatch"),
        "{out:?}"
    );
    assert_eq!(status_of(&dir, "api")["gpid"], gpid1);

    let out = common::upgrade(&dir, "api", "2.0", &sum2, "300ms");
    assert!(out.status.success(), "{out:?}");
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("api: running version 2.0"),
        "{out:?}"
    );
    let st = status_of(&dir, "api");
    assert_eq!(st["version"], "2.0");
    assert_ne!(st["gpid"], gpid1);
    let pid = common::find_below(&z, "/2.0/bin/api");
    assert!(common::cmdline(pid).contains("/opt/api/2.0/bin/api"));
    // the answer's pid (from the host: the host's, then zurg's) is that
    // process, and zurg's number is status's
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    assert_eq!(
        common::both_pids(&answer),
        (pid, st["pid"].as_i64().unwrap() as i32),
        "{answer}"
    );

    let out = zurg(&dir, &["rollback", "api"]);
    assert!(out.status.success(), "{out:?}");
    let answer = String::from_utf8_lossy(&out.stdout).into_owned();
    assert!(
        answer.starts_with("api: rolled back, running, pid "),
        "{answer}"
    );
    let (host, inner) = common::both_pids(&answer);
    assert!(
        common::cmdline(host).contains("/opt/api/1.0/bin/api"),
        "{answer}"
    );
    assert_eq!(common::ns_pid(host), Some(inner), "{answer}");
    eventually("back on 1.0", || {
        status_of(&dir, "api")["version"] == "1.0" && status_of(&dir, "api")["state"] == "running"
    });
    common::find_below(&z, "/1.0/bin/api");

    // 3.0 exits at once: zurg goes back to 1.0 by itself
    let out = common::upgrade(&dir, "api", "3.0", &sum3, "500ms");
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("upgrade to 3.0 failed") && err.contains("rolled back to 1.0"),
        "{err}"
    );
    eventually("running 1.0 again", || {
        let st = status_of(&dir, "api");
        st["version"] == "1.0" && st["state"] == "running"
    });
    let history = String::from_utf8_lossy(&zurg(&dir, &["history", "api"]).stdout).into_owned();
    assert!(
        history.contains("api upgrade") && history.contains("api rollback"),
        "{history}"
    );

    // the build in force survives a restart of zurg (state dir, not units dir)
    let out = common::upgrade(&dir, "api", "2.0", &sum2, "200ms");
    assert!(out.status.success(), "{out:?}");
    z.signal(15);
    z.wait_exit();
    drop(z);
    let mut z = run(&dir, &[]);
    z.saw("[api] started pid");
    assert_eq!(status_of(&dir, "api")["version"], "2.0");
}

#[test]
fn a_rollback_to_a_build_changed_on_disk_is_refused_and_nothing_changes() {
    let dir = TempDir::new("rollback-refused");
    let (v1, sum1) = common::deploy_build(&dir, "api", "1.0", "/bin/sleep");
    let (_v2, sum2) = common::deploy_build(&dir, "api", "2.0", "/bin/sleep");
    dir.write("units/api.toml", &unit(&v1, "1.0", &sum1));
    let mut z = run(&dir, &[]);
    z.saw("[api] started pid");
    let out = common::upgrade(&dir, "api", "2.0", &sum2, "200ms");
    assert!(out.status.success(), "{out:?}");
    let gpid2 = status_of(&dir, "api")["gpid"].clone();
    // 1.0's binary is replaced by something else behind zurg's back.
    std::fs::remove_file(&v1).unwrap();
    std::fs::copy("/bin/true", &v1).unwrap();

    let out = zurg(&dir, &["rollback", "api"]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("previous build 1.0 refused"), "{err}");
    assert!(err.contains("mismatch"), "{err}");
    let st = status_of(&dir, "api");
    assert_eq!(
        (st["version"].as_str(), &st["gpid"]),
        (Some("2.0"), &gpid2),
        "{st}"
    );
    // And the way back is still there once the file is right again.
    std::fs::remove_file(&v1).unwrap();
    common::deploy_build(&dir, "api", "1.0", "/bin/sleep");
    let out = zurg(&dir, &["rollback", "api"]);
    assert!(out.status.success(), "{out:?}");
    assert_eq!(status_of(&dir, "api")["version"], "1.0");
}

#[test]
fn a_running_binary_modified_or_replaced_on_disk_raises_a_warning() {
    let dir = TempDir::new("inotify");
    let (exec, sum) = deploy(&dir, "api", "1.0");
    dir.write("units/api.toml", &unit(&exec, "1.0", &sum));
    // a script service: its file is not write-protected while it runs
    let script = dir.write("opt/job/1.0/job.sh", "#!/bin/sh\nexec sleep 1000\n");
    std::fs::set_permissions(&script, std::fs::Permissions::from_mode(0o755)).unwrap();
    dir.write(
        "units/job.toml",
        &format!("exec = \"{}\"\n", script.display()),
    );
    let mut z = run(&dir, &[]);
    z.saw("[api] started pid");
    z.saw("[job] started pid");
    let gpid = gpid_of(&dir, "api");

    // deploy over the running build (what versioned directories prevent)
    let tmp = exec.with_extension("new");
    std::fs::copy("/bin/true", &tmp).unwrap();
    std::fs::rename(&tmp, &exec).unwrap();
    let line = z.saw("[api] warning: binary");
    assert!(
        line.contains("was replaced or removed while running") && line.contains(&gpid),
        "{line}"
    );

    use std::io::Write;
    std::fs::OpenOptions::new()
        .append(true)
        .open(&script)
        .unwrap()
        .write_all(b"# edited\n")
        .unwrap();
    let line = z.saw("[job] warning: binary");
    assert!(
        line.contains("was modified in place while running"),
        "{line}"
    );

    let events = String::from_utf8_lossy(&zurg(&dir, &["events", "--json"]).stdout).into_owned();
    let v: serde_json::Value = serde_json::from_str(&events).unwrap();
    let warnings: Vec<_> = v["result"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| e["kind"] == "warning")
        .collect();
    assert_eq!(warnings.len(), 2, "{events}");
    assert!(warnings.iter().any(|w| w["gpid"] == gpid.as_str()));
    // once per process: more changes do not repeat the warning
    std::fs::OpenOptions::new()
        .append(true)
        .open(&script)
        .unwrap()
        .write_all(b"# again\n")
        .unwrap();
    assert!(z
        .try_wait_line(Duration::from_millis(300), &|l: &str| l.contains("warning"))
        .is_none());
}
