//! Fault injection (issue 20): real faults, not mocks, against zurg as
//! PID 1 of a pid namespace (or as a plain process in one). Each test
//! asserts that zurg keeps supervising and that nothing is lost; the table
//! in docs/security.md ("Faults: what zurg does today") names them.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use common::{
    cli, cpu_ticks, eventually, history, host_pid_in, json, ok, status_of, Mode, Namespace,
    TempDir, Zurg, BIN, DEADLINE,
};
use serde_json::Value;

const SLEEPER: &str = "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nstop_timeout_ms = 2000\n";

/// `zurg run` as PID 1 on DIR, in a mount namespace of its own where the
/// shell command `mount` runs first with `$state` set to the (absolute)
/// state directory. Returns zurg and the state directory as the test
/// reaches it, through /proc/PID/root.
fn run_with_state_mount(dir: &TempDir, mount: &str) -> (Zurg, PathBuf) {
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let [units, sock, state_s] = [
        dir.path().join("units"),
        dir.path().join("control.sock"),
        state.clone(),
    ]
    .map(|p| p.to_str().unwrap().to_string());
    let mut cmd = common::unshare_sh(&format!("state=\"$1\"; shift; {mount} && exec \"$@\""));
    cmd.args([&state_s, BIN, "run", "--units", &units])
        .args(["--socket", &sock, "--state", &state_s]);
    let mut z = Zurg::spawn(cmd);
    z.expect("loaded");
    let inside = PathBuf::from(format!("/proc/{}/root", z.host_pid()))
        .join(state.strip_prefix("/").unwrap());
    (z, inside)
}

/// Runs the shell command `script` in zurg's mount namespace, with
/// `$state` set to DIR's state directory.
fn in_zurgs_mounts(z: &Zurg, dir: &TempDir, script: &str) {
    let state = dir.path().join("state");
    let out = Command::new("nsenter")
        .args(["--target", &z.host_pid().to_string(), "--mount"])
        .args(["sh", "-c", &format!("state=\"$1\"; {script}"), "sh"])
        .arg(&state)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{script}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

/// How many of zurg's lines so far contain `needle`.
fn count(z: &mut Zurg, needle: &str) -> usize {
    z.lines_now().iter().filter(|l| l.contains(needle)).count()
}

fn restart(dir: &TempDir, name: &str) {
    ok(dir, &["restart", name]);
}

/// Restarts `name` until `cond` holds (bounded by DEADLINE): for states
/// that only the next start or a later one brings about (the GPID clock is
/// saved when a start time passes half of the reserve it holds).
fn restart_until(dir: &TempDir, name: &str, what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        restart(dir, name);
    }
}

const RO_BIND: &str = "mount --bind \"$state\" \"$state\" && mount -o remount,bind,ro \"$state\"";

#[test]
fn a_read_only_state_dir_is_reported_once_and_history_resumes_once_writable() {
    let dir = TempDir::new("ro-state");
    dir.write("units/svc.toml", SLEEPER);
    let (mut z, state) = run_with_state_mount(&dir, RO_BIND);
    z.expect("[svc] started pid");
    for _ in 0..3 {
        restart(&dir, "svc");
    }
    // Supervision goes on: the service runs, and was restarted each time.
    let st = status_of(&dir, "svc");
    assert_eq!(st["state"], "running", "{st}");
    assert!(history(&dir, "svc").is_empty());
    // One line for each thing that cannot be written, however many
    // events there were.
    z.saw("cannot save the GPID clock");
    assert_eq!(count(&mut z, "cannot open journal"), 1, "{:?}", z.seen);
    assert_eq!(
        count(&mut z, "cannot save the GPID clock"),
        1,
        "{:?}",
        z.seen
    );
    assert_eq!(count(&mut z, "state/lock: Read-only"), 1, "{:?}", z.seen);
    assert!(z.seen.iter().any(|l| l.contains("Read-only file system")));

    // Writable again: the next event opens the journal, which says how
    // many records it could not keep (a start, three exits and starts).
    in_zurgs_mounts(&z, &dir, "umount \"$state\"");
    restart(&dir, "svc");
    let line = z.expect("journal writes again");
    assert!(line.contains("7 record(s) were lost"), "{line}");
    let h = history(&dir, "svc");
    assert_eq!(
        h.len(),
        2,
        "the exit and the start of the last restart: {h:?}"
    );
    assert_eq!(h[1]["gpid"], status_of(&dir, "svc")["gpid"]);
    // ... and the GPID clock is saved again.
    restart_until(&dir, "svc", "the clock file", || {
        state.join("clock").exists()
    });
    assert_eq!(
        count(&mut z, "cannot save the GPID clock"),
        1,
        "{:?}",
        z.seen
    );
    assert_eq!(count(&mut z, "cannot open journal"), 1, "{:?}", z.seen);
}

#[test]
fn a_state_dir_turned_read_only_while_running_costs_the_clock_file_once() {
    let dir = TempDir::new("ro-later");
    dir.write("units/svc.toml", SLEEPER);
    let (mut z, state) = run_with_state_mount(&dir, "true");
    z.expect("[svc] started pid");
    eventually("the clock file", || state.join("clock").exists());
    // Linux refuses to remount a file system read-only while a file on it
    // is open for writing (the journal), so what turns read-only is the
    // state directory's mount: a read-only bind mount over it.
    in_zurgs_mounts(&z, &dir, RO_BIND);
    let saved = std::fs::read_to_string(state.join("clock")).unwrap();
    restart_until(&dir, "svc", "the clock write to fail", || {
        count(&mut z, "cannot save the GPID clock") > 0
    });
    for _ in 0..5 {
        restart(&dir, "svc");
    }
    let restarts = history(&dir, "svc").len();
    assert_eq!(status_of(&dir, "svc")["state"], "running");
    // The journal's open file still writes through the old mount: history
    // goes on, every start and exit in it.
    assert!(restarts >= 11, "{restarts}");
    assert_eq!(
        history(&dir, "svc").last().unwrap()["gpid"],
        status_of(&dir, "svc")["gpid"]
    );
    assert_eq!(
        count(&mut z, "cannot save the GPID clock"),
        1,
        "{:?}",
        z.seen
    );
    assert_eq!(std::fs::read_to_string(state.join("clock")).unwrap(), saved);

    in_zurgs_mounts(&z, &dir, "umount \"$state\"");
    restart_until(&dir, "svc", "the clock file to move on", || {
        std::fs::read_to_string(state.join("clock")).unwrap() != saved
    });
    assert_eq!(
        count(&mut z, "cannot save the GPID clock"),
        1,
        "{:?}",
        z.seen
    );
}

/// Writes `path` until the file system is full.
fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x55u8; 64 << 10];
    // bounded: the tmpfs is far smaller than this
    for _ in 0..1024 {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            return;
        }
    }
    panic!("{} never filled up", path.display());
}

#[test]
fn a_clock_file_that_cannot_be_saved_on_a_full_disk_is_warned_once_and_saved_again() {
    let dir = TempDir::new("clock-full");
    dir.write("units/svc.toml", SLEEPER);
    let (mut z, state) = run_with_state_mount(
        &dir,
        "mount -t tmpfs -o size=256k zurg-test-state \"$state\"",
    );
    z.expect("[svc] started pid");
    eventually("the clock file", || state.join("clock").exists());
    fill(&state.join("filler"));
    let saved = std::fs::read_to_string(state.join("clock")).unwrap();
    restart_until(&dir, "svc", "the clock write to fail", || {
        count(&mut z, "cannot save the GPID clock") > 0
    });
    let line = z.saw("cannot save the GPID clock");
    assert!(line.contains("No space left on device"), "{line}");
    // More saves fail (one per half second of start times): still one line.
    let until = Instant::now() + Duration::from_millis(1500);
    while Instant::now() < until {
        restart(&dir, "svc");
    }
    assert_eq!(
        count(&mut z, "cannot save the GPID clock"),
        1,
        "{:?}",
        z.seen
    );
    assert_eq!(std::fs::read_to_string(state.join("clock")).unwrap(), saved);
    assert_eq!(status_of(&dir, "svc")["state"], "running");

    std::fs::remove_file(state.join("filler")).unwrap();
    restart_until(&dir, "svc", "the clock file to move on", || {
        std::fs::read_to_string(state.join("clock")).unwrap() != saved
    });
    let now: u64 = std::fs::read_to_string(state.join("clock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(now > saved.trim().parse::<u64>().unwrap());
    // Every start time handed out while the file could not be written is
    // below the mark it holds now.
    for r in history(&dir, "svc") {
        let start_us: u64 = r["gpid"]
            .as_str()
            .unwrap()
            .split(':')
            .nth(2)
            .unwrap()
            .parse()
            .unwrap();
        assert!(start_us < now, "{r}");
    }
}

/// Tasks (processes and threads) whose real uid is `uid`: what
/// RLIMIT_NPROC counts.
fn tasks_of(uid: u32) -> usize {
    let mut n = 0;
    for p in std::fs::read_dir("/proc").unwrap().flatten() {
        if p.file_name()
            .to_str()
            .and_then(|s| s.parse::<u32>().ok())
            .is_none()
        {
            continue;
        }
        let Ok(tasks) = std::fs::read_dir(p.path().join("task")) else {
            continue;
        };
        for t in tasks.flatten() {
            let Ok(status) = std::fs::read_to_string(t.path().join("status")) else {
                continue;
            };
            let real = status
                .lines()
                .find_map(|l| l.strip_prefix("Uid:"))
                .and_then(|l| l.split_whitespace().next())
                .and_then(|u| u.parse::<u32>().ok());
            if real == Some(uid) {
                n += 1;
            }
        }
    }
    n
}

/// Processes SIGKILLed when the test ends, however it ends: zurg as
/// another uid loses the parent-death signal unshare gave it (a change of
/// credentials clears it), so dropping the `Zurg` alone would leave it.
struct KillOnDrop(Vec<i32>);

impl Drop for KillOnDrop {
    fn drop(&mut self) {
        for pid in &self.0 {
            common::kill(*pid, 9);
        }
    }
}

/// `sleep 1000` as `uid`, started by root (so not itself held back by a
/// limit), counted against `uid`'s processes.
fn sleep_as(uid: u32) -> Child {
    let id = uid.to_string();
    Command::new("setpriv")
        .args([
            "--reuid",
            &id,
            "--regid",
            &id,
            "--clear-groups",
            "sleep",
            "1000",
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap()
}

#[test]
fn a_fork_refused_for_the_process_limit_is_retried_with_backoff_until_it_works() {
    // A uid nothing else on the machine uses: RLIMIT_NPROC counts every
    // task of the uid, and root is exempt, so zurg runs as this uid.
    const UID: u32 = 64_123;
    const LIMIT: usize = 40;
    assert_eq!(tasks_of(UID), 0, "uid {UID} is in use");
    let dir = TempDir::new("nproc");
    dir.write(
        "units/svc.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nbackoff = { initial_ms = 100, max_ms = 400 }\n",
    );
    let id = UID.to_string();
    let chown = Command::new("chown")
        .args(["-R", &format!("{id}:{id}")])
        .arg(dir.path())
        .status()
        .unwrap();
    assert!(chown.success());
    let wrapper: Vec<String> = [
        "setpriv",
        "--reuid",
        &id,
        "--regid",
        &id,
        "--clear-groups",
        "--inh-caps=-all",
        "prlimit",
        &format!("--nproc={LIMIT}:{LIMIT}"),
    ]
    .map(String::from)
    .to_vec();
    // unshare (root) first, then the uid and the limit, then zurg as PID 1.
    let mut z = common::run_in_with(&dir, Mode::Pid1, &[], |cmd| {
        let args: Vec<_> = cmd.get_args().map(|a| a.to_owned()).collect();
        let mut c = Command::new("unshare");
        c.args(["--pid", "--fork", "--kill-child", "--mount-proc"])
            .args(&wrapper)
            .arg(BIN)
            .args(&args[5..])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        *cmd = c;
    });
    let _zurg = KillOnDrop(vec![z.host_pid()]);
    z.expect("[svc] started pid");
    ok(&dir, &["stop", "svc"]);

    // Every process the uid may have is taken: the next fork gets EAGAIN.
    let mut hogs = Vec::new();
    let room = LIMIT
        .checked_sub(tasks_of(UID))
        .expect("zurg within the limit");
    for _ in 0..room {
        hogs.push(sleep_as(UID));
    }
    let _hogs = KillOnDrop(hogs.iter().map(|h| h.id() as i32).collect());
    eventually("the uid at its process limit", || tasks_of(UID) >= LIMIT);
    let _ = cli(&dir, &["start", "svc"]);
    let line = z.expect("cannot create a process for /bin/sleep");
    assert!(line.contains("Resource temporarily unavailable"), "{line}");
    // Retried, with a growing backoff between tries (the first retry is
    // at once), and zurg keeps answering.
    z.expect("[svc] restarting in 100 ms");
    z.expect("[svc] restarting in 200 ms");
    let failures = count(&mut z, "cannot create a process for /bin/sleep");
    assert!(failures >= 3, "{:?}", z.seen);
    let st = status_of(&dir, "svc");
    assert_ne!(st["state"], "running", "{st}");
    assert!(
        st["last_error"]
            .as_str()
            .is_some_and(|e| e.contains("cannot create a process for /bin/sleep")),
        "{st}"
    );
    assert!(z.child.try_wait().unwrap().is_none(), "zurg exited");
    // ... and the events say so, naming the failure, each followed by a
    // restart after a growing delay.
    let events = json(&dir, &["events"]);
    let events = events.as_array().unwrap();
    let failed: Vec<_> = events
        .iter()
        .filter(|e| e["kind"] == "spawn_failed")
        .collect();
    assert!(failed.len() >= 3, "{events:?}");
    for e in &failed {
        let message = e["message"].as_str().unwrap();
        assert!(
            message.contains(
                "cannot create a process for /bin/sleep: Resource temporarily unavailable"
            ),
            "{e}"
        );
    }
    let delays: Vec<u64> = events
        .iter()
        .filter(|e| e["kind"] == "restarting")
        .map(|e| e["delay_ms"].as_u64().unwrap())
        .collect();
    assert_eq!(delays[..3], [0, 100, 200], "{events:?}");

    // The limit lifted (its other processes exit): the service runs again.
    for mut h in hogs {
        common::kill(h.id() as i32, 9);
        let _ = h.wait();
    }
    z.expect("[svc] started pid");
    let st = status_of(&dir, "svc");
    assert_eq!(st["state"], "running", "{st}");
    assert_eq!(st["last_error"], Value::Null, "{st}");
}

#[test]
fn out_of_descriptors_under_a_client_flood_services_keep_restarting_and_zurg_recovers() {
    use std::io::{BufRead, BufReader};
    use std::os::unix::net::UnixStream;
    let dir = TempDir::new("emfile-flood");
    for i in 0..5 {
        dir.write(
            &format!("units/c{i}.toml"),
            "exec = \"/bin/sh\"\nargs = [\"-c\", \"sleep 0.2; exit 3\"]\nbackoff = { initial_ms = 50, max_ms = 50 }\n",
        );
    }
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("[c4] started pid");
    let out = Command::new("prlimit")
        .args(["--pid", &z.host_pid().to_string(), "--nofile=64:64"])
        .output()
        .unwrap();
    assert!(out.status.success(), "prlimit: {out:?}");

    // 200 clients connect and hold on: more than zurg has descriptors.
    // Connecting runs on a thread, since a full backlog would block it.
    let (tx, rx) = std::sync::mpsc::channel();
    let sock = dir.path().join("control.sock");
    std::thread::spawn(move || {
        let held: Vec<UnixStream> = (0..200)
            .map(|_| UnixStream::connect(&sock).unwrap())
            .collect();
        let _ = tx.send(held);
    });
    let held = rx
        .recv_timeout(DEADLINE)
        .expect("200 connects did not complete: zurg stopped accepting");
    let last = held.last().unwrap();
    last.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut line = String::new();
    BufReader::new(last).read_line(&mut line).unwrap();
    assert!(line.contains("out of file descriptors"), "{line:?}");

    // While no descriptor is free, every service is restarted again and
    // again, each exit with its status.
    let restarted = |z: &mut Zurg, i: usize| count(z, &format!("[c{i}] started pid"));
    let before: Vec<usize> = (0..5).map(|i| restarted(&mut z, i)).collect();
    let t = Instant::now();
    while (0..5).any(|i| restarted(&mut z, i) < before[i] + 3) {
        assert!(t.elapsed() < DEADLINE, "restarts stalled: {:?}", z.seen);
        let _ = z.try_wait_line(Duration::from_millis(100), &|_: &str| false);
    }
    drop(held);
    // Descriptors back: zurg answers again, and nothing was lost.
    eventually("zurg answering again", || {
        serde_json::from_slice::<Value>(&cli(&dir, &["status", "--json"]).stdout)
            .is_ok_and(|v| v["ok"] == true)
    });
    let said = z.lines_now().join("\n");
    assert!(!said.contains("cannot create a process"), "{said}");
    for (i, before) in before.iter().enumerate() {
        let name = format!("c{i}");
        let h = history(&dir, &name);
        let exits: Vec<_> = h.iter().filter(|r| r["kind"] == "exit").collect();
        let starts = h.iter().filter(|r| r["kind"] == "start").count();
        assert!(exits.len() >= before + 2, "{name}: {h:?}");
        assert!(starts >= exits.len(), "{name}: {h:?}");
        assert!(
            exits.iter().all(|r| r["exit"]["code"] == 3),
            "{name}: {h:?}"
        );
    }
}

/// Host pids of the processes zurg (host pid `zurg`) holds a pidfd for.
fn pidfd_targets(zurg: i32) -> BTreeSet<i32> {
    let mut out = BTreeSet::new();
    for fd in std::fs::read_dir(format!("/proc/{zurg}/fd"))
        .unwrap()
        .flatten()
    {
        let is_pidfd =
            std::fs::read_link(fd.path()).is_ok_and(|t| t.to_string_lossy().contains("pidfd"));
        if !is_pidfd {
            continue;
        }
        let info = std::fs::read_to_string(format!(
            "/proc/{zurg}/fdinfo/{}",
            fd.file_name().to_string_lossy()
        ))
        .unwrap_or_default();
        if let Some(pid) = info
            .lines()
            .find_map(|l| l.strip_prefix("Pid:"))
            .and_then(|p| p.trim().parse().ok())
        {
            out.insert(pid);
        }
    }
    out
}

#[test]
fn a_service_without_a_pidfd_exits_with_its_status_restarts_and_gets_one_once_fds_return() {
    const UNITS: usize = 100;
    let dir = TempDir::new("no-pidfd");
    for i in 0..UNITS {
        dir.write(&format!("units/s{i:03}.toml"), SLEEPER);
    }
    let wrapper = ["prlimit", "--nofile=64:64"].map(String::from).to_vec();
    let mut z = common::run_in(&dir, Mode::Pid1Under(wrapper), &[]);
    z.expect("loaded 100 services");
    eventually("all 100 running", || {
        json(&dir, &["status"])
            .as_array()
            .unwrap()
            .iter()
            .filter(|r| r["state"] == "running")
            .count()
            == UNITS
    });
    z.saw("exits are still caught by SIGCHLD");
    let zurg = z.host_pid();
    let watched = pidfd_targets(zurg);
    let host_of = |name: &str| {
        let pid = status_of(&dir, name)["pid"].as_i64().unwrap();
        host_pid_in(&z, pid)
    };
    let name = (0..UNITS)
        .map(|i| format!("s{i:03}"))
        .find(|n| !watched.contains(&host_of(n)))
        .expect("a service without a pidfd");
    let old = status_of(&dir, &name)["gpid"].clone();

    // Its exit is reaped, with the right status, and it restarts.
    common::kill(host_of(&name), libc::SIGUSR1);
    eventually("the pidfd-less service restarted", || {
        let st = status_of(&dir, &name);
        st["state"] == "running" && st["gpid"] != old
    });
    let h = history(&dir, &name);
    let exit = h
        .iter()
        .find(|r| r["kind"] == "exit" && r["gpid"] == old)
        .unwrap_or_else(|| panic!("no exit of {old} in {h:?}"));
    assert_eq!(exit["exit"]["signal"], "SIGUSR1", "{exit}");

    // Descriptors return: most services are removed (their output pipes
    // close with them). The next start of the same service gets a pidfd.
    for i in 1..=95 {
        std::fs::remove_file(dir.path().join(format!("units/s{i:03}.toml"))).unwrap();
    }
    ok(&dir, &["reload"]);
    restart(&dir, &name);
    let pid = host_of(&name);
    assert!(
        pidfd_targets(zurg).contains(&pid),
        "{name} (host pid {pid}) has no pidfd after descriptors returned: {:?}",
        std::fs::read_dir(format!("/proc/{zurg}/fd"))
            .unwrap()
            .flatten()
            .map(|f| std::fs::read_link(f.path()).unwrap())
            .collect::<Vec<_>>()
    );
    // And its exit through the pidfd is as right as the one without.
    let old = status_of(&dir, &name)["gpid"].clone();
    common::kill(pid, libc::SIGUSR2);
    eventually("the restart", || {
        let st = status_of(&dir, &name);
        st["state"] == "running" && st["gpid"] != old
    });
    let h = history(&dir, &name);
    let exit = h
        .iter()
        .find(|r| r["kind"] == "exit" && r["gpid"] == old)
        .unwrap();
    assert_eq!(exit["exit"]["signal"], "SIGUSR2", "{exit}");
}

#[test]
fn a_service_that_ignores_sigterm_is_killed_after_stop_timeout_and_shown_stopping_meanwhile() {
    let dir = TempDir::new("stubborn");
    dir.write(
        "units/stubborn.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"trap '' TERM; exec sleep 1001\"]\nstop_timeout_ms = 1500\n",
    );
    dir.write("units/other.toml", SLEEPER);
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("[stubborn] started pid");
    let pid = common::find_below(&z, "sleep 1001");
    eventually("the exec past the trap", || {
        common::cmdline(pid) == "sleep 1001"
    });
    let gpid = status_of(&dir, "stubborn")["gpid"].clone();
    let t0 = Instant::now();
    let mut stop = Command::new(BIN)
        .args(["stop", "stubborn"])
        .env("ZURG_SOCKET", dir.path().join("control.sock"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    eventually("stubborn stopping", || {
        status_of(&dir, "stubborn")["state"] == "stopping"
    });
    // While it waits: honest status, the process alive, zurg answering
    // and supervising the rest.
    assert!(common::state(pid).is_some_and(|s| s != 'Z'));
    restart(&dir, "other");
    assert_eq!(status_of(&dir, "stubborn")["state"], "stopping");
    assert_eq!(status_of(&dir, "stubborn")["gpid"], gpid);
    let (code, _) = common::wait_child(&mut stop);
    let took = t0.elapsed();
    assert_eq!(code, Some(0));
    assert!(took >= Duration::from_millis(1400), "{took:?}");
    assert!(
        took < Duration::from_millis(1400) + DEADLINE / 3,
        "{took:?}"
    );
    eventually("the process gone", || {
        matches!(common::state(pid), None | Some('Z'))
    });
    assert_eq!(status_of(&dir, "stubborn")["state"], "stopped");
    let h = history(&dir, "stubborn");
    let exit = h.iter().find(|r| r["kind"] == "exit").unwrap();
    assert_eq!(exit["exit"]["signal"], "SIGKILL", "{exit}");
}

#[test]
fn a_daemon_that_double_forks_is_reported_and_its_orphan_reaped() {
    let dir = TempDir::new("double-fork");
    dir.write(
        "units/d.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"(sleep 0.5 &) ; exit 0\"]\n",
    );
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("forked into the background");
    assert_eq!(status_of(&dir, "d")["state"], "failed");
    // The grandchild, orphaned to zurg, exits: reaped, no zombie left.
    eventually("no process left below zurg", || z.descendants().is_empty());
}

#[test]
fn a_service_that_closes_its_output_does_not_make_zurg_spin() {
    let dir = TempDir::new("closed-out");
    dir.write(
        "units/mute.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"echo bye >&2; exec sleep 1000 >&- 2>&-\"]\n",
    );
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("mute | bye");
    let zurg = z.host_pid();
    let sleeper = common::find_below(&z, "sleep 1000");
    eventually("the service past its exec", || {
        common::cmdline(sleeper) == "sleep 1000"
    });
    // Both pipes at end of file, the process still running: zurg must
    // not poll them in a loop. Measured over a second of its CPU time.
    let before = cpu_ticks(zurg);
    let window = Instant::now();
    std::thread::sleep(Duration::from_secs(1));
    let used = cpu_ticks(zurg) - before;
    let ticks = common::clock_ticks();
    assert!(
        used * 100 <= ticks * 2 * window.elapsed().as_secs().max(1),
        "zurg used {used} ticks ({ticks}/s) in {:?} while idle",
        window.elapsed()
    );
    assert_eq!(status_of(&dir, "mute")["state"], "running");
}

#[test]
fn a_service_with_ten_thousand_children_does_not_hold_zurg_up_and_stop_kills_them_all() {
    const CHILDREN: usize = 10_000;
    let dir = TempDir::new("many-children");
    let fifo = dir.path().join("fifo");
    let made = Command::new("mkfifo").arg(&fifo).status().unwrap();
    assert!(made.success());
    // Each child is a forked shell blocked opening a fifo nobody writes:
    // no exec, so 10,000 of them start in seconds.
    dir.write(
        "units/swarm.toml",
        &format!(
            "exec = \"/bin/sh\"\nargs = [\"-c\", \"i=0; while [ $i -lt {CHILDREN} ]; do : < {} & i=$((i+1)); done; echo spawned >&2; wait\"]\nkill_mode = \"group\"\nstop_timeout_ms = 5000\n",
            fifo.display()
        ),
    );
    dir.write("units/other.toml", SLEEPER);
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("[other] started pid");
    // zurg answers and restarts another service while the swarm grows.
    let deadline = Instant::now() + Duration::from_secs(120);
    while !z.lines_now().iter().any(|l| l.contains("swarm | spawned")) {
        let t = Instant::now();
        restart(&dir, "other");
        assert!(
            t.elapsed() < Duration::from_secs(5),
            "a restart took {:?}",
            t.elapsed()
        );
        assert!(
            Instant::now() < deadline,
            "the swarm never finished spawning: {} processes",
            z.descendants().len()
        );
        // The rhythm of the restarts, not a wait for anything: the swarm
        // needs the CPU more than the restarts do.
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(
        z.descendants().len() > CHILDREN,
        "{}",
        z.descendants().len()
    );
    let t = Instant::now();
    assert_eq!(status_of(&dir, "other")["state"], "running");
    restart(&dir, "other");
    assert!(t.elapsed() < Duration::from_secs(2), "{:?}", t.elapsed());

    ok(&dir, &["stop", "swarm"]);
    assert_eq!(status_of(&dir, "swarm")["state"], "stopped");
    // Every child got the stop signal and was reaped; `other` alone runs.
    eventually("only other left", || z.descendants().len() == 1);
    assert_eq!(status_of(&dir, "other")["state"], "running");
}

/// The records of `zurg history` (every service) against DIR's zurg.
fn all_records(dir: &TempDir) -> Vec<Value> {
    json(dir, &["history"]).as_array().unwrap().clone()
}

#[test]
fn a_zurg_killed_mid_write_keeps_history_up_to_the_torn_record_and_appends_after_it() {
    let ns = Namespace::new();
    let dir = TempDir::new("killed-mid-write");
    for i in 0..4 {
        dir.write(
            &format!("units/c{i}.toml"),
            "exec = \"/bin/false\"\nbackoff = { initial_ms = 1, max_ms = 1 }\n",
        );
    }
    let mut kept: Vec<Value> = Vec::new();
    for round in 0..3 {
        let mut z = common::run_in(&dir, Mode::PlainInPidNs(ns.init()), &[]);
        z.expect("loaded");
        // A crash loop writes a record every few ms; `before` is what the
        // journal held at some point before the kill.
        eventually("a few hundred more records", || {
            all_records(&dir).len() >= kept.len() + 200
        });
        let before = all_records(&dir);
        let killed = z.host_pid();
        z.signal(9);
        z.wait_exit();
        drop(z);
        // Its threads gone too, so its lock is free.
        eventually("the killed zurg gone", || common::state(killed).is_none());
        let lock = dir.path().join("state/lock");
        let holders = || -> Vec<(i32, String, Option<char>)> {
            ns.processes()
                .into_iter()
                .filter(|p| {
                    std::fs::read_dir(format!("/proc/{p}/fd")).is_ok_and(|fds| {
                        fds.flatten()
                            .any(|f| std::fs::read_link(f.path()).is_ok_and(|t| t == lock))
                    })
                })
                .map(|p| (p, common::cmdline(p), common::state(p)))
                .collect()
        };
        let t = Instant::now();
        while !holders().is_empty() {
            assert!(t.elapsed() < DEADLINE, "lock still held by {:?}", holders());
            std::thread::sleep(Duration::from_millis(10));
        }

        // What the killed zurg left: everything listed before the kill, in
        // order. SIGKILL cannot tear a record (each is one write(2), which
        // the kernel finishes before the signal takes effect), so rounds 1
        // and 2 tear the last one by hand, as a power cut would.
        let left = all_records_offline(&dir);
        assert_eq!(left[..before.len()], before[..], "round {round}");
        let torn = round > 0;
        if torn {
            let journal = dir.path().join("state/journal");
            let len = std::fs::metadata(&journal).unwrap().len();
            let f = std::fs::OpenOptions::new()
                .write(true)
                .open(&journal)
                .unwrap();
            f.set_len(len - 5 - 20 * round as u64).unwrap();
        }
        let intact = if torn { left.len() - 1 } else { left.len() };

        let mut z = common::run_in(&dir, Mode::PlainInPidNs(ns.init()), &[]);
        z.expect("loaded");
        z.expect("[c0] started pid");
        if torn {
            z.saw("cut off");
        }
        let after = all_records(&dir);
        // Every record up to the torn one is there, in order, and nothing
        // in the middle was lost.
        assert!(after.len() > intact, "round {round}");
        assert_eq!(after[..intact], left[..intact], "round {round}");
        assert_eq!(after[..kept.len()], kept[..], "round {round}");
        if torn {
            assert!(!after.contains(left.last().unwrap()), "round {round}");
        }
        // The torn tail is all that was skipped.
        let damaged: Vec<_> = z
            .lines_now()
            .iter()
            .filter(|l| l.contains("skipped") && !l.contains("torn record"))
            .collect();
        assert!(damaged.is_empty(), "round {round}: {damaged:?}");
        // New records append after it: this zurg's first start of c0 is
        // past everything the killed one wrote.
        let newest = after
            .iter()
            .rposition(|r| r["service"] == "c0" && r["kind"] == "start")
            .unwrap();
        assert!(newest >= intact, "round {round}");
        z.signal(15);
        z.wait_exit();
        kept = all_records_offline(&dir);
    }
}

/// `zurg history --state DIR/state --json`, with no zurg running.
fn all_records_offline(dir: &TempDir) -> Vec<Value> {
    let state = dir.path().join("state");
    let out = Command::new(BIN)
        .args(["history", "--state", state.to_str().unwrap(), "--json"])
        .env("ZURG_SOCKET", dir.path().join("nobody.sock"))
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["result"].as_array().unwrap().clone()
}

/// A crash loop of `exits` exits (exit 1, then exit 0 at the last, so
/// `on-failure` ends it), counted in a file so the test can follow it.
fn crash_loop_unit(dir: &TempDir, exits: usize) -> String {
    let counter = dir.path().join("count");
    format!(
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"n=0; [ -f {c} ] && read n < {c}; n=$((n+1)); echo $n > {c}; [ $n -lt {exits} ] || exit 0; exit 1\"]\nrestart = \"on-failure\"\nport = 8080\nbackoff = {{ initial_ms = 1, max_ms = 1 }}\n",
        c = counter.display()
    )
}

fn exits_so_far(dir: &TempDir) -> usize {
    std::fs::read_to_string(dir.path().join("count"))
        .ok()
        .and_then(|s| s.trim().parse().ok())
        .unwrap_or(0)
}

/// Starts and exits of `service` in the publisher's journal, per GPID.
fn publisher_counts(ns: Option<&str>, addr: &str, service: &str) -> BTreeMap<String, (u32, u32)> {
    let out = common::naming::command_in(ns, BIN)
        .args(["history", service, "--publisher", addr, "--json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    let mut counts: BTreeMap<String, (u32, u32)> = BTreeMap::new();
    for r in v["result"].as_array().unwrap() {
        let e = counts
            .entry(r["gpid"].as_str().unwrap().to_string())
            .or_default();
        match r["kind"].as_str().unwrap() {
            "start" => e.0 += 1,
            "exit" => e.1 += 1,
            _ => {}
        }
    }
    counts
}

/// Every one of the `exits` processes of `service` has exactly one start
/// and one exit at the publisher, the same GPIDs as in zurg's own journal.
fn assert_exactly_once(dir: &TempDir, ns: Option<&str>, addr: &str, service: &str, exits: usize) {
    let at_publisher = publisher_counts(ns, addr, service);
    let bad: Vec<_> = at_publisher.iter().filter(|(_, c)| **c != (1, 1)).collect();
    assert!(bad.is_empty(), "not exactly once: {bad:?}");
    assert_eq!(at_publisher.len(), exits);
    let local: BTreeSet<String> = history(dir, service)
        .iter()
        .map(|r| r["gpid"].as_str().unwrap().to_string())
        .collect();
    let published: BTreeSet<String> = at_publisher.into_keys().collect();
    assert_eq!(local, published);
}

#[test]
fn a_publisher_killed_every_few_hundred_ms_gets_each_of_1000_exits_once() {
    use common::naming::{forwarder_state, free_port, Publisher};
    const EXITS: usize = 1000;
    let dir = TempDir::new("pub-kills");
    dir.write("units/crash.toml", &crash_loop_unit(&dir, EXITS));
    let journal = TempDir::new("pub-kills-journal");
    let jdir = journal.path().to_str().unwrap().to_string();
    let addr = format!("127.0.0.1:{}", free_port());
    let args = ["--journal", jdir.as_str(), "--lease-ms", "5000"];
    let mut p = Publisher::start_at(None, &addr, &args);
    let mut z = common::run_in(
        &dir,
        Mode::Pid1,
        &["--publish", &addr, "--host-ip", "127.0.0.1"],
    );
    z.expect("[crash] started pid");
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut kills = 0;
    while exits_so_far(&dir) < EXITS {
        assert!(Instant::now() < deadline, "{} exits", exits_so_far(&dir));
        // The fault's rhythm, not a wait for anything.
        std::thread::sleep(Duration::from_millis(250));
        p.kill();
        kills += 1;
        p = Publisher::start_at(None, &addr, &args);
    }
    assert!(kills >= 3, "the loop outran the faults: {kills} kills");
    eventually("the crash loop's end", || {
        status_of(&dir, "crash")["state"] == "exited"
    });
    let fwd = forwarder_state(&dir, |s| s["connected"] == true && s["acked"] == s["seq"]);
    assert_eq!(fwd["dropped"], 0, "{fwd}");
    assert_exactly_once(&dir, None, &addr, "crash", EXITS);
    drop(p);
}

#[test]
fn a_link_cut_during_a_crash_loop_loses_and_repeats_no_event() {
    use common::naming::{forwarder_state, Net, Publisher};
    const EXITS: usize = 600;
    let net = Net::new(1);
    let hub = Some(net.hub.as_str());
    let addr = format!("{}:7301", net.hub_ip());
    let journal = TempDir::new("cut-journal");
    let jdir = journal.path().to_str().unwrap().to_string();
    let _p = Publisher::start_at(hub, &addr, &["--journal", &jdir, "--lease-ms", "1000"]);
    let dir = TempDir::new("cut");
    dir.write("units/crash.toml", &crash_loop_unit(&dir, EXITS));
    let mut z = common::run_in(
        &dir,
        Mode::Pid1In(net.hosts[0].clone()),
        &["--publish", &addr],
    );
    z.expect("[crash] started pid");
    forwarder_state(&dir, |s| s["connected"] == true);
    eventually("50 exits", || exits_so_far(&dir) >= 50);
    // Cut at the hub's end of the cable: packets vanish, no error anywhere.
    let link = |state: &str| {
        let out = Command::new("ip")
            .args(["-n", &net.hub, "link", "set", "v1", state])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "{}",
            String::from_utf8_lossy(&out.stderr)
        );
    };
    link("down");
    // Down long enough for the forwarder to notice the silence (a lease).
    forwarder_state(&dir, |s| s["connected"] == false);
    let noticed = exits_so_far(&dir);
    assert!(
        noticed < EXITS,
        "the crash loop ended before the cut was noticed"
    );
    // The crash loop goes on meanwhile.
    eventually("exits while cut", || exits_so_far(&dir) >= noticed + 20);
    link("up");
    eventually("the crash loop's end", || {
        status_of(&dir, "crash")["state"] == "exited"
    });
    let fwd = forwarder_state(&dir, |s| s["connected"] == true && s["acked"] == s["seq"]);
    assert_eq!(fwd["dropped"], 0, "{fwd}");
    assert_exactly_once(&dir, hub, &addr, "crash", EXITS);
}
