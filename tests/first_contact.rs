//! Bugs found on first contact with zurg (start, restart, upgrade, check,
//! state dir, daemons that fork) and hardening items, each as a user sees
//! it: through the client, the log, status and /proc.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{eventually, history, status_of, text, Mode, TempDir, Zurg, SLEEPER};

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

/// A second `zurg run` on DIR's units and state directory, with a socket
/// of its own.
fn second_zurg_on(dir: &TempDir) -> Zurg {
    second_zurg_as(dir, Mode::Plain)
}

fn second_zurg_as(dir: &TempDir, mode: Mode) -> Zurg {
    let units = dir.path().join("units");
    let sock = dir.path().join("other.sock");
    let state = dir.path().join("state");
    Zurg::start(
        mode,
        &[
            "run",
            "--units",
            units.to_str().unwrap(),
            "--socket",
            sock.to_str().unwrap(),
            "--state",
            state.to_str().unwrap(),
        ],
    )
}

#[test]
fn a_second_zurg_on_the_same_state_dir_is_refused_naming_the_first() {
    let dir = TempDir::new("lock");
    dir.write("units/s.toml", SLEEPER);
    let mut first = common::run_in(&dir, Mode::Plain, &[]);
    first.expect("[s] started pid");
    // Plain mode: the process started is zurg itself.
    let holder = first.child.id();
    let mut second = second_zurg_on(&dir);
    let line = second.expect("is in use by another zurg");
    assert!(
        line.contains(&format!("is in use by another zurg (pid {holder}")),
        "{line}"
    );
    let status = second.wait_exit();
    assert_eq!(status.code(), Some(1), "{:?}", second.lines_now());
    // Stamped like every other line of `zurg run` (stderr is a pipe here).
    let (stamp, _) = line.split_once(" zurg: state directory").expect(&line);
    assert!(
        stamp.len() == 24 && stamp.ends_with('Z') && stamp.starts_with("20"),
        "{line}"
    );
    // The refusal is all it says: no cgroups line (nor anything else of a
    // set-up it never gets to) before it.
    assert_eq!(
        second.lines_now(),
        [line.as_str()],
        "the refusal should be the second zurg's only line"
    );
    // the first one is untouched and still answers
    let out = common::cli(&dir, &["status", "s"]);
    assert!(out.status.success(), "{}", text(&out));
    // not in a pid namespace: shut down so its service goes with it
    first.signal(15);
    assert_eq!(first.wait_exit().code(), Some(0));
}

#[test]
fn a_second_zurg_outside_the_first_ones_pid_namespace_names_a_pid_it_can_kill() {
    let dir = TempDir::new("lock-ns");
    dir.write("units/s.toml", SLEEPER);
    let mut first = common::run_in(&dir, Mode::Pid1, &[]);
    first.expect("[s] started pid");
    let holder = first.host_pid();
    let mut second = second_zurg_on(&dir);
    let line = second.expect("is in use by another zurg");
    assert!(
        line.contains(&format!(
            "is in use by another zurg (pid {holder}, pid 1 in its own pid namespace"
        )),
        "{line}"
    );
    assert_eq!(second.wait_exit().code(), Some(1));
}

/// Two containers' zurgs, each PID 1 of its own pid namespace, on one
/// state directory: the second cannot see the first, whose lock file says
/// "1". It said "in use by another zurg (pid 1, ...)", which in its own
/// namespace is itself.
#[test]
fn a_second_zurg_that_cannot_see_the_first_does_not_name_itself() {
    let dir = TempDir::new("lock-hidden");
    dir.write("units/s.toml", SLEEPER);
    let mut first = common::run_in(&dir, Mode::Pid1, &[]);
    first.expect("[s] started pid");
    // The line is what counts (as a container's PID 1 the refused zurg then
    // exits 1: a_containers_pid1_whose_set_up_fails_exits_1_...).
    let mut second = second_zurg_as(&dir, Mode::Pid1);
    let line = second.expect("is in use by another zurg");
    assert!(
        line.contains(
            "is in use by another zurg (pid 1 in a pid namespace this zurg cannot see into,"
        ),
        "{line}"
    );
}

/// A container's PID 1 whose set-up fails (here: the state directory is
/// another zurg's) and that has no /etc/zurg/crash exits 1, saying so, so
/// the container ends and its runtime reports the failure. It used to reap
/// forever: a container that looked alive with nothing in it.
#[test]
fn a_containers_pid1_whose_set_up_fails_exits_1_without_a_crash_program() {
    if std::path::Path::new("/etc/zurg/crash").exists() {
        common::skip(
            "a_containers_pid1_whose_set_up_fails_exits_1_without_a_crash_program",
            "this machine has an /etc/zurg/crash",
        );
        return;
    }
    let dir = TempDir::new("setup-fails");
    dir.write("units/s.toml", SLEEPER);
    let mut first = common::run_in(&dir, Mode::Pid1, &[]);
    first.expect("[s] started pid");
    let mut second = second_zurg_as(&dir, Mode::Pid1);
    second.expect("is in use by another zurg");
    let status = second.wait_exit();
    assert_eq!(status.code(), Some(1), "{:?}", second.lines_now());
    let line = second.saw("no /etc/zurg/crash");
    assert!(
        line.contains("PID 1 of a container") && line.contains("exiting with 1"),
        "{line}"
    );
    assert!(
        !second.lines_now().iter().any(|l| l.contains("reaping")),
        "{:?}",
        second.lines_now()
    );
    // the first one is untouched
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
    // Plain mode: the process started is zurg itself.
    let zurg_cwd = std::fs::read_link(format!("/proc/{}/cwd", z.child.id())).unwrap();
    assert_eq!(zurg_cwd, std::path::Path::new("/"));
    // Plain mode: the pid in the log is a host pid.
    let pid = common::pid_in(&line);
    let service_cwd = std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
    assert_eq!(service_cwd, dir.path());
    // the relative --socket and --state still work from elsewhere
    let out = common::cli(&dir, &["status", "s"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(dir.path().join("state/lock").exists());
    // not in a pid namespace: shut down so its service goes with it
    z.signal(15);
    assert_eq!(z.wait_exit().code(), Some(0));
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

#[test]
fn a_refused_start_or_restart_fails_with_its_reason() {
    let dir = TempDir::new("refused");
    let (exec, sum) = common::deploy_build(&dir, "redis", "1.0", "/bin/sleep");
    dir.write("units/redis.toml", &common::build_unit(&exec, "1.0", &sum));
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("[redis] started pid");
    assert_eq!(
        status_of(&dir, "redis")["last_error"],
        serde_json::Value::Null
    );

    // the binary is replaced on disk: the restart is refused
    let replace = |bytes: &[u8]| {
        let tmp = exec.with_extension("new");
        std::fs::write(&tmp, bytes).unwrap();
        std::fs::set_permissions(&tmp, std::os::unix::fs::PermissionsExt::from_mode(0o755))
            .unwrap();
        std::fs::rename(&tmp, &exec).unwrap();
    };
    let mut bytes = std::fs::read(&exec).unwrap();
    bytes.extend_from_slice(b"tampered");
    replace(&bytes);
    let out = common::cli(&dir, &["restart", "redis"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        stdout.contains("redis: failed: refused to start: md5 mismatch"),
        "{}",
        text(&out)
    );
    let st = status_of(&dir, "redis");
    assert_eq!(st["state"], "failed");
    assert!(
        st["last_error"]
            .as_str()
            .unwrap()
            .starts_with("refused to start: md5 mismatch"),
        "{st}"
    );

    // start says the same, in --json too
    let out = common::cli(&dir, &["start", "redis", "--json"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert!(
        v["result"][0]["error"]
            .as_str()
            .unwrap()
            .contains("md5 mismatch"),
        "{v}"
    );

    // the refusals are in history, with their reason
    let refused: Vec<_> = history(&dir, "redis")
        .into_iter()
        .filter(|r| r["kind"] == "refused")
        .collect();
    assert_eq!(refused.len(), 2, "{refused:?}");
    assert!(
        refused[0]["reason"]
            .as_str()
            .unwrap()
            .contains("md5 mismatch"),
        "{refused:?}"
    );

    // the right binary back: a start succeeds and clears the reason
    bytes.truncate(bytes.len() - b"tampered".len());
    replace(&bytes);
    let out = common::cli(&dir, &["start", "redis"]);
    assert!(out.status.success(), "{}", text(&out));
    let st = status_of(&dir, "redis");
    assert_eq!(st["state"], "running");
    assert_eq!(st["last_error"], serde_json::Value::Null);
}

#[test]
fn a_start_that_cannot_run_fails_naming_the_cwd() {
    let dir = TempDir::new("startcwd");
    dir.write(
        "units/s.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\ncwd = \"/nonexistent\"\nrestart = \"never\"\n",
    );
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("[s] cannot change to cwd");
    let out = common::cli(&dir, &["start", "s"]);
    assert_eq!(out.status.code(), Some(1), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout)
            .contains("cannot change to cwd /nonexistent: No such file or directory"),
        "{}",
        text(&out)
    );
    assert!(status_of(&dir, "s")["last_error"]
        .as_str()
        .unwrap()
        .contains("cwd /nonexistent"));
}

/// A script whose `#!` interpreter is missing fails with ENOENT, as a
/// missing program does: zurg says what is missing instead of "No such
/// file or directory" about a file that is there.
#[test]
fn a_program_whose_interpreter_is_missing_is_blamed_on_the_interpreter() {
    let dir = TempDir::new("interp");
    let script = dir.write("bin/job", "#!/nonexistent/interpreter\n");
    common::set_mode(&script, 0o755);
    dir.write(
        "units/s.toml",
        &format!("exec = \"{}\"\nrestart = \"never\"\n", script.display()),
    );
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    let line = z.expect("[s] cannot run");
    assert!(
        line.contains(
            "the interpreter its #! line names, or the dynamic loader it needs, is missing"
        ),
        "{line}"
    );
}

/// zurg as PID 1 running api at build 1.0, once it has started; returns
/// it and the md5 of build 2.0, deployed beside it.
fn api_on_1_0(dir: &TempDir) -> (Zurg, String) {
    let (v1, sum1) = common::deploy_build(dir, "api", "1.0", "/bin/sleep");
    let (_v2, sum2) = common::deploy_build(dir, "api", "2.0", "/bin/sleep");
    dir.write("units/api.toml", &common::build_unit(&v1, "1.0", &sum1));
    let mut z = common::run_in(dir, Mode::Pid1, &[]);
    z.expect("[api] started pid");
    (z, sum2)
}

#[test]
fn exit_records_carry_the_version_of_the_process_that_exited() {
    let dir = TempDir::new("exitver");
    let (_z, sum2) = api_on_1_0(&dir);
    let gpid1 = status_of(&dir, "api")["gpid"].clone();
    let out = common::upgrade(&dir, "api", "2.0", &sum2, "200ms");
    assert!(out.status.success(), "{}", text(&out));
    let gpid2 = status_of(&dir, "api")["gpid"].clone();
    let out = common::cli(&dir, &["rollback", "api"]);
    assert!(out.status.success(), "{}", text(&out));
    eventually("back on 1.0", || {
        let st = status_of(&dir, "api");
        st["version"] == "1.0" && st["state"] == "running" && st["gpid"] != gpid2
    });
    let records = history(&dir, "api");
    let exit_of = |gpid: &serde_json::Value| {
        records
            .iter()
            .find(|r| r["kind"] == "exit" && r["gpid"] == *gpid)
            .unwrap_or_else(|| panic!("no exit of {gpid} in {records:?}"))
            .clone()
    };
    assert_eq!(exit_of(&gpid1)["version"], "1.0", "{records:?}");
    assert_eq!(exit_of(&gpid2)["version"], "2.0", "{records:?}");
}

#[test]
fn a_daemon_that_forks_and_exits_is_reported_not_restarted() {
    let dir = TempDir::new("forked");
    dir.write(
        "units/d.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"sleep 1000 & exit 0\"]\nrestart = \"always\"\n",
    );
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    let line = z.expect("[d] pid");
    assert!(line.contains("exited with code 0"), "{line}");
    let line = z.expect("forked into the background");
    assert!(
        line.contains("it forked into the background and exited; run it in the foreground"),
        "{line}"
    );
    let st = status_of(&dir, "d");
    assert_eq!(st["state"], "failed", "{st}");
    assert_eq!(
        st["last_error"],
        "it forked into the background and exited; run it in the foreground"
    );
    let out = common::cli(&dir, &["status"]);
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("d: it forked into the background"),
        "{}",
        text(&out)
    );
    // no restart loop: it was started once, and one daemon is left
    assert!(z
        .try_wait_line(std::time::Duration::from_millis(500), &|l: &str| l
            .contains("[d] started"))
        .is_none());
    assert_eq!(sleepers(&z), 1);
}

#[test]
fn strict_mode_holds_for_upgrades_and_a_stale_override_is_dropped() {
    let dir = TempDir::new("strictup");
    let (v1, sum1) = common::deploy_build(&dir, "api", "1.0", "/bin/sleep");
    let (v2, _) = common::deploy_build(&dir, "api", "2.0", "/bin/sleep");
    dir.write("units/api.toml", &common::build_unit(&v1, "1.0", &sum1));
    let overrides = dir.path().join("state/overrides.json");
    {
        let mut z = common::run_in(&dir, Mode::Pid1, &["--strict"]);
        z.expect("[api] started pid");
        let out = common::cli(&dir, &["upgrade", "api", "--version", "2.0"]);
        assert_eq!(out.status.code(), Some(1), "{}", text(&out));
        assert!(
            String::from_utf8_lossy(&out.stderr)
                .contains("strict mode: an upgrade needs --md5 or --sha256; nothing changed"),
            "{}",
            text(&out)
        );
        assert!(
            !std::fs::read_to_string(&overrides)
                .unwrap_or_default()
                .contains("2.0"),
            "the refused build was saved"
        );
        assert_eq!(status_of(&dir, "api")["version"], "1.0");
    }
    // An override without a checksum, as an earlier zurg (or a run without
    // --strict) saved it: under --strict it is dropped, and the unit file's
    // build runs instead of the unit disappearing.
    std::fs::write(
        &overrides,
        serde_json::json!({"services": {"api": {
            "current": {"exec": v2, "version": "2.0"},
            "previous": [{"exec": v1, "version": "1.0", "checksum": format!("md5:{sum1}")}]
        }}})
        .to_string(),
    )
    .unwrap();
    let mut z = common::run_in(&dir, Mode::Pid1, &["--strict"]);
    let line = z.expect("saved build 2.0 dropped");
    assert!(line.contains("strict mode"), "{line}");
    z.expect("[api] started pid");
    let st = status_of(&dir, "api");
    assert_eq!(
        (st["state"].as_str(), st["version"].as_str()),
        (Some("running"), Some("1.0"))
    );
    // Saved by a helper thread (supervisor/clock_writer.rs), not before
    // the start: at a load of 12 the file was read before it was written.
    eventually("the dropped build to leave overrides.json", || {
        !std::fs::read_to_string(&overrides)
            .unwrap_or_default()
            .contains("2.0")
    });
}

#[test]
fn deleting_overrides_json_and_reloading_goes_back_to_the_unit_file() {
    let dir = TempDir::new("rmover");
    let (_z, sum2) = api_on_1_0(&dir);
    let out = common::upgrade(&dir, "api", "2.0", &sum2, "200ms");
    assert!(out.status.success(), "{}", text(&out));
    assert_eq!(status_of(&dir, "api")["version"], "2.0");
    std::fs::remove_file(dir.path().join("state/overrides.json")).unwrap();
    let out = common::cli(&dir, &["reload"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("changed:   api"),
        "{}",
        text(&out)
    );
    eventually("api back on the unit file's 1.0", || {
        let st = status_of(&dir, "api");
        st["version"] == "1.0" && st["state"] == "running"
    });
}

#[test]
fn control_characters_from_unit_files_do_not_forge_log_lines() {
    let dir = TempDir::new("escape");
    dir.write(
        "units/s.toml",
        "exec = \"/nonexistent\\nzurg: [fake] started pid 1\"\nrestart = \"never\"\n",
    );
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    let line = z.expect("[s] cannot run");
    assert!(
        line.contains("/nonexistent\\nzurg: [fake] started pid 1: No such file or directory"),
        "{line}"
    );
    z.expect("[s] ended with code 127");
    assert!(
        !z.lines_now().iter().any(|l| l.starts_with("zurg: [fake]")),
        "{:?}",
        z.seen
    );
}

#[test]
fn shutdown_counts_the_remaining_processes_it_signals() {
    let dir = TempDir::new("count");
    dir.write(
        "units/spawner.toml",
        // `main`: the stop signal reaches the shell alone, so its sleepers
        // are what the shutdown's sweep finds (the default, `group`, would
        // stop them with the service)
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"for i in $(seq 30); do sleep 1000 & done; wait\"]\nkill_mode = \"main\"\n",
    );
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("[spawner] started pid");
    eventually("the shell and its 30 sleepers", || sleepers(&z) == 31);
    z.signal(15);
    let line = z.expect("all services stopped");
    assert!(
        line.contains("sent SIGTERM to 30 remaining process(es)"),
        "{line}"
    );
    assert_eq!(z.wait_exit().code(), Some(0));
}

/// The soft open-file limit of a process, from /proc/PID/limits.
fn soft_nofile(pid: i32) -> u64 {
    let limits = std::fs::read_to_string(format!("/proc/{pid}/limits")).unwrap();
    let line = limits
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .unwrap();
    line.split_whitespace().nth(3).unwrap().parse().unwrap()
}

#[test]
fn reloads_that_rename_a_unit_do_not_grow_the_service_table() {
    // zurg raises its open-file limit to one descriptor per service slot
    // plus 256; starting at 300, the limit shows whether slots pile up.
    const RENAMES: usize = 50;
    let dir = TempDir::new("renames");
    dir.write("units/a0.toml", SLEEPER);
    let wrapper = ["prlimit", "--nofile=300:4096"].map(String::from).to_vec();
    let mut z = common::run_in(&dir, Mode::Pid1Under(wrapper), &[]);
    z.expect("[a0] started pid");
    let zurg = z.host_pid();
    assert_eq!(soft_nofile(zurg), 300);
    for i in 1..=RENAMES {
        std::fs::remove_file(dir.path().join(format!("units/a{}.toml", i - 1))).unwrap();
        dir.write(&format!("units/a{i}.toml"), SLEEPER);
        let out = common::cli(&dir, &["reload"]);
        assert!(out.status.success(), "{}", text(&out));
        // the renamed unit's old process is gone and reaped
        let gone = format!("[a{}] stopped pid", i - 1);
        z.saw(&gone);
    }
    let st = status_of(&dir, &format!("a{RENAMES}"));
    assert_eq!(st["state"], "running");
    assert_eq!(sleepers(&z), 1);
    assert_eq!(soft_nofile(zurg), 300, "the service table grew");
}

#[test]
fn an_exit_that_leaves_only_a_zombie_child_is_an_ordinary_exit() {
    let dir = TempDir::new("zombie");
    // The child is done long before its parent exits, and the parent
    // never waits for it: a zombie that zurg inherits, not a daemon.
    let Some(python) = ["/usr/bin/python3", "/bin/python3"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
    else {
        return common::skip("zombie child", "no python3");
    };
    dir.write(
        "units/z.toml",
        &format!(
            "exec = \"{python}\"\nargs = [\"-c\", \"import os, time\\nif os.fork() == 0: os._exit(0)\\ntime.sleep(0.3)\"]\nrestart = \"on-failure\"\n"
        ),
    );
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("[z] pid");
    let line = z.expect("[z] ended with code 0");
    assert!(line.contains("restart policy keeps it down"), "{line}");
    let st = status_of(&dir, "z");
    assert_eq!(st["state"], "exited", "{st}");
    assert_eq!(st["last_error"], serde_json::Value::Null);
}

#[test]
fn an_upgrade_that_could_not_be_saved_survives_a_reload() {
    let dir = TempDir::new("unsaved");
    let (mut z, sum2) = api_on_1_0(&dir);
    // a directory where overrides.json's temporary file goes: saving fails
    std::fs::create_dir_all(dir.path().join("state/overrides.tmp")).unwrap();
    let out = common::upgrade(&dir, "api", "2.0", &sum2, "200ms");
    assert!(out.status.success(), "{}", text(&out));
    z.saw("will not survive a restart of zurg");
    let out = common::cli(&dir, &["reload"]);
    assert!(out.status.success(), "{}", text(&out));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("unchanged: 1"),
        "{}",
        text(&out)
    );
    assert_eq!(status_of(&dir, "api")["version"], "2.0");
}
