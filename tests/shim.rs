//! `zurg [opts] -- CMD`: the tini/dumb-init face (README "Shim init").
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Write;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use common::{eventually, kill, state, Mode, TempDir, Zurg, BIN};

fn shim(args: &[&str]) -> Zurg {
    let mut all = vec!["--"];
    all.extend_from_slice(args);
    Zurg::start(Mode::Pid1, &all)
}

#[test]
fn exit_code_of_the_child_is_zurgs() {
    let mut z = shim(&["sh", "-c", "exit 3"]);
    assert_eq!(z.wait_exit().code(), Some(3));
}

#[test]
fn death_by_signal_becomes_128_plus_signal() {
    let mut z = shim(&["sh", "-c", "kill -TERM $$"]);
    assert_eq!(z.wait_exit().code(), Some(143));
    let mut z = shim(&["sh", "-c", "kill -KILL $$"]);
    assert_eq!(z.wait_exit().code(), Some(137));
}

#[test]
fn exec_failures_are_127_and_126_and_name_the_command() {
    let mut z = shim(&["no-such-program-zurg"]);
    assert_eq!(z.wait_exit().code(), Some(127));
    // the process is gone; its last stderr line may still be in the pipe
    let line = z.saw("no-such-program-zurg");
    assert!(line.contains("not found"), "{line}");

    let dir = TempDir::new("noexec");
    let f = dir.write("script", "#!/bin/sh\necho hi\n");
    let mut z = shim(&[f.to_str().unwrap()]);
    assert_eq!(z.wait_exit().code(), Some(126));
    let line = z.saw("script");
    assert!(line.contains("permission denied"), "{line}");

    // There, but its #! interpreter is not: 127 as for bash, and the
    // message says what is missing, not "command not found".
    let f = dir.write("interp", "#!/nonexistent/interpreter\n");
    common::set_mode(&f, 0o755);
    let mut z = shim(&[f.to_str().unwrap()]);
    assert_eq!(z.wait_exit().code(), Some(127));
    let line = z.saw("interp");
    assert!(line.contains("interpreter its #! line names"), "{line}");
}

#[test]
fn no_command_is_a_usage_error() {
    for args in [&["--"][..], &[]] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains("usage:"), "{err}");
    }
}

/// A shell that records each signal it receives in `log`, once it is ready.
fn recorder(log: &std::path::Path, signals: &[&str]) -> String {
    let mut s = String::new();
    for sig in signals {
        s.push_str(&format!("trap 'echo {sig} >> {}' {sig}; ", log.display()));
    }
    s.push_str(&format!(
        "echo ready >> {}; while :; do sleep 0.02; done",
        log.display()
    ));
    s
}

fn wait_for_word(path: &std::path::Path, word: &str) {
    eventually(&format!("{word} in {}", path.display()), || {
        std::fs::read_to_string(path)
            .unwrap_or_default()
            .lines()
            .any(|l| l == word)
    });
}

#[test]
fn every_catchable_signal_is_forwarded() {
    let dir = TempDir::new("fwd");
    let log = dir.path().join("log");
    let sigs = [
        "HUP", "INT", "QUIT", "USR1", "USR2", "WINCH", "ALRM", "CONT", "TERM",
    ];
    let mut z = shim(&["sh", "-c", &recorder(&log, &sigs)]);
    wait_for_word(&log, "ready");
    let pid = z.host_pid();
    for sig in sigs {
        kill(pid, zurg::sig::parse(sig).unwrap());
        wait_for_word(&log, sig);
    }
    // TERM was trapped, so the child lives on; end it.
    kill(pid, 9);
    z.wait_exit();
}

#[test]
fn rewrite_changes_the_forwarded_signal() {
    let dir = TempDir::new("rewrite");
    let log = dir.path().join("log");
    let script = format!(
        "trap 'echo USR2 >> {0}; exit 4' USR2; trap 'echo TERM >> {0}' TERM; {1}",
        log.display(),
        "echo ready >> ".to_string()
            + &log.display().to_string()
            + "; while :; do sleep 0.02; done"
    );
    let mut z = Zurg::start(
        Mode::Pid1,
        &["--rewrite", "TERM:USR2", "--", "sh", "-c", &script],
    );
    wait_for_word(&log, "ready");
    z.signal(15);
    assert_eq!(z.wait_exit().code(), Some(4));
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("TERM"), "{text}");
}

/// A shell (CMD) with a grandchild in its process group: each logs
/// `ready`/`gready` to `log`, then `child`/`grandchild` when it gets USR1.
fn child_and_grandchild(log: &std::path::Path) -> String {
    let grandchild = format!(
        "trap 'echo grandchild >> {0}; exit 0' USR1; echo gready >> {0}; while :; do sleep 0.02; done",
        log.display()
    );
    format!(
        "sh -c \"{}\" & trap 'echo child >> {1}' USR1; echo ready >> {1}; while :; do sleep 0.02; done",
        grandchild.replace('"', "\\\""),
        log.display()
    )
}

/// USR1 to zurg reaches both of `child_and_grandchild`'s processes.
fn usr1_reaches_child_and_grandchild(z: &mut Zurg, log: &std::path::Path) {
    wait_for_word(log, "ready");
    wait_for_word(log, "gready");
    z.signal(10);
    wait_for_word(log, "child");
    wait_for_word(log, "grandchild");
    z.signal(9);
    z.wait_exit();
}

#[test]
fn pgroup_forwards_to_the_whole_group() {
    let dir = TempDir::new("pgroup");
    let log = dir.path().join("log");
    let script = child_and_grandchild(&log);
    let mut z = Zurg::start(Mode::Pid1, &["--pgroup", "--", "sh", "-c", &script]);
    usr1_reaches_child_and_grandchild(&mut z, &log);
}

#[test]
fn a_thousand_orphans_are_reaped_while_zurg_stays_up() {
    let dir = TempDir::new("orphans");
    let spawned = dir.path().join("spawned");
    let done = dir.path().join("done");
    // Each `(sleep 0.2 &)` is a subshell that starts sleep and exits at
    // once, so every sleep is re-parented to PID 1 (zurg) and dies there.
    let script = format!(
        "i=0; while [ $i -lt 1000 ]; do (sleep 0.2 &); i=$((i+1)); done; touch {}; \
         n=0; while [ ! -e {} ] && [ $n -lt 2000 ]; do sleep 0.01; n=$((n+1)); done; exit 7",
        spawned.display(),
        done.display()
    );
    let mut z = shim(&["sh", "-c", &script]);
    eventually("1000 orphans spawned", || spawned.exists());
    let zpid = z.host_pid();
    eventually("every orphan reaped", || {
        let kids = common::children(zpid);
        // Only the shell itself (and its short sleep) may remain; no zombie.
        kids.iter().all(|p| state(*p) != Some('Z'))
            && !kids
                .iter()
                .any(|p| common::cmdline(*p).starts_with("sleep 0.2"))
    });
    assert!(
        z.wait_exit_within(Duration::from_millis(1)).is_none(),
        "zurg exited early"
    );
    std::fs::write(&done, "").unwrap();
    assert_eq!(z.wait_exit().code(), Some(7));
}

#[test]
fn leftovers_get_term_then_kill_after_grace() {
    let script = "sh -c 'trap \"\" TERM; sleep 100' & sleep 0.2; exit 5";
    let mut z = Zurg::start(Mode::Pid1, &["--grace", "700ms", "--", "sh", "-c", script]);
    let t0 = Instant::now();
    assert_eq!(z.wait_exit().code(), Some(5));
    let took = t0.elapsed();
    assert!(
        took >= Duration::from_millis(700),
        "exited before the grace period: {took:?}"
    );
    assert!(took < Duration::from_secs(8), "took {took:?}");
}

#[test]
fn not_pid1_it_is_a_subreaper_and_leaves_nothing_behind() {
    let dir = TempDir::new("subreaper");
    let pidfile = dir.path().join("pid");
    let script = format!(
        "(sleep 30 & echo $! > {}) ; sleep 0.1; exit 0",
        pidfile.display()
    );
    let mut z = Zurg::start(Mode::Plain, &["--grace", "2s", "--", "sh", "-c", &script]);
    assert_eq!(z.wait_exit().code(), Some(0));
    let orphan: i32 = std::fs::read_to_string(&pidfile)
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    // The orphan was re-parented to zurg, signalled and reaped: gone.
    assert!(
        state(orphan).is_none() || !common::cmdline(orphan).contains("sleep 30"),
        "orphan {orphan} still alive"
    );
}

fn status_fields(text: &str) -> Vec<String> {
    text.lines()
        .filter(|l| l.starts_with("SigBlk:") || l.starts_with("SigIgn:"))
        .map(str::to_string)
        .collect()
}

#[test]
fn child_gets_the_signal_state_zurg_inherited() {
    let direct = Command::new("cat")
        .arg("/proc/self/status")
        .output()
        .unwrap();
    let via = Command::new(BIN)
        .args(["--", "cat", "/proc/self/status"])
        .output()
        .unwrap();
    assert!(via.status.success());
    let (d, v) = (
        status_fields(&String::from_utf8_lossy(&direct.stdout)),
        status_fields(&String::from_utf8_lossy(&via.stdout)),
    );
    assert_eq!(d.len(), 2);
    assert_eq!(d, v, "signal mask or ignored set leaked into the child");
    assert!(v[0].ends_with("0000000000000000"), "{v:?}");
}

#[test]
fn argv_env_and_stdio_pass_through() {
    let out = Command::new(BIN)
        .args(["--", "printf", "%s|", "a", "b c", "", "--pgroup"])
        .output()
        .unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "a|b c||--pgroup|");

    let direct = Command::new("env")
        .env("ZURG_TEST_VAR", "x y")
        .output()
        .unwrap();
    let via = Command::new(BIN)
        .args(["--", "env"])
        .env("ZURG_TEST_VAR", "x y")
        .output()
        .unwrap();
    let sorted = |b: &[u8]| {
        let mut v: Vec<String> = String::from_utf8_lossy(b)
            .lines()
            .map(str::to_string)
            .collect();
        v.sort();
        v
    };
    assert_eq!(sorted(&direct.stdout), sorted(&via.stdout));

    let mut child = Command::new(BIN)
        .args(["--", "sh", "-c", "cat; echo err >&2"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child.stdin.take().unwrap().write_all(b"hello\n").unwrap();
    let out = child.wait_with_output().unwrap();
    assert_eq!(String::from_utf8_lossy(&out.stdout), "hello\n");
    assert_eq!(String::from_utf8_lossy(&out.stderr), "err\n");
}

/// A python3 child that blocks every catchable signal but CHLD, then logs
/// each one it takes with sigwaitinfo, one number a line, in `log`. Blocking
/// and waiting, rather than handlers, keeps TSTP, TTIN and TTOU from
/// stopping it and the fault numbers from killing it.
const SIGNAL_LOGGER: &str = r#"
import signal, sys
log = sys.argv[1]
sigs = {s for s in range(1, 32) if s not in (signal.SIGKILL, signal.SIGSTOP, signal.SIGCHLD)}
signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
open(log, "a").write("ready\n")
while True:
    info = signal.sigwaitinfo(sigs)
    with open(log, "a") as f:
        f.write("%d\n" % info.si_signo)
"#;

const PYTHON: &str = "/usr/bin/python3";

#[test]
fn every_signal_a_process_sends_is_forwarded_faults_and_pipe_too() {
    if !std::path::Path::new(PYTHON).exists() {
        common::skip(
            "every_signal_a_process_sends_is_forwarded_faults_and_pipe_too",
            "no /usr/bin/python3",
        );
        return;
    }
    // Not PID 1, a fault number sent with kill(2) used to kill zurg and
    // orphan the child; as PID 1 it was dropped. Both must forward.
    for mode in ["pid1", "plain"] {
        let dir = TempDir::new("allsigs");
        let log = dir.path().join("log");
        let args = ["--", PYTHON, "-c", SIGNAL_LOGGER, log.to_str().unwrap()];
        let z = if mode == "pid1" {
            Zurg::start(Mode::Pid1, &args)
        } else {
            Zurg::start(Mode::Plain, &args)
        };
        wait_for_word(&log, "ready");
        let pid = z.host_pid();
        let mut sent = Vec::new();
        for signo in 1..=31 {
            if [libc::SIGKILL, libc::SIGSTOP, libc::SIGCHLD].contains(&signo) {
                continue;
            }
            kill(pid, signo);
            wait_for_word(&log, &signo.to_string());
            sent.push(signo.to_string());
        }
        assert_eq!(
            state(pid).map(|s| s != 'Z'),
            Some(true),
            "{mode}: zurg died"
        );
        let got: Vec<String> = std::fs::read_to_string(&log)
            .unwrap()
            .lines()
            .skip(1)
            .map(str::to_string)
            .collect();
        assert_eq!(got, sent, "{mode}: each signal exactly once, in order");
        end_with_its_child(z);
    }
}

/// SIGKILLs zurg and what runs below it: not PID 1, a killed zurg leaves
/// its child running (as tini does), and a test must not leave it behind.
fn end_with_its_child(mut z: Zurg) {
    let below = z.descendants();
    z.signal(9);
    z.wait_exit();
    for pid in below {
        kill(pid, 9);
    }
}

#[test]
fn zurg_leaves_its_starting_directory_to_the_child() {
    let dir = TempDir::new("cwd");
    let log = dir.path().join("log");
    let script = format!(
        "echo ready >> {}; while :; do sleep 0.02; done",
        log.display()
    );
    for mode in [Mode::Pid1, Mode::Plain] {
        let _ = std::fs::remove_file(&log);
        let z = Zurg::start_with(mode, &["--", "sh", "-c", &script], |c| {
            c.current_dir(dir.path());
        });
        wait_for_word(&log, "ready");
        let zpid = z.host_pid();
        let child = *common::children(zpid).first().expect("zurg's child");
        let cwd = |pid: i32| std::fs::read_link(format!("/proc/{pid}/cwd")).unwrap();
        eventually("zurg in /", || cwd(zpid) == std::path::Path::new("/"));
        assert_eq!(cwd(child), dir.path().canonicalize().unwrap());
        end_with_its_child(z);
    }
}

/// zurg's own SIGPIPE (its stderr is a pipe nobody reads) is not a signal
/// sent to it: forwarding it used to kill a child that never touched the
/// pipe.
#[test]
fn zurgs_own_sigpipe_is_not_forwarded() {
    if !std::path::Path::new(PYTHON).exists() {
        common::skip("zurgs_own_sigpipe_is_not_forwarded", "no /usr/bin/python3");
        return;
    }
    let dir = TempDir::new("ownpipe");
    let log = dir.path().join("log");
    let (read_end, write_end) = nix::unistd::pipe().unwrap();
    drop(read_end);
    // -v makes zurg write to its dead stderr right after the spawn.
    let child = Command::new(BIN)
        .args([
            "-v",
            "--",
            PYTHON,
            "-c",
            SIGNAL_LOGGER,
            log.to_str().unwrap(),
        ])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::from(write_end))
        .spawn()
        .unwrap();
    let zurg = child.id() as i32;
    /// Not PID 1: killing zurg alone would leave its child running.
    struct Reap(std::process::Child);
    impl Drop for Reap {
        fn drop(&mut self) {
            for pid in common::descendants(self.0.id() as i32) {
                kill(pid, 9);
            }
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
    let mut guard = Reap(child);
    wait_for_word(&log, "ready");
    kill(zurg, libc::SIGUSR1);
    wait_for_word(&log, "10");
    kill(zurg, libc::SIGHUP);
    wait_for_word(&log, "1");
    let got = std::fs::read_to_string(&log).unwrap();
    assert_eq!(got, "ready\n10\n1\n", "only the signals sent to zurg");
    for pid in common::children(zurg) {
        kill(pid, 9);
    }
    let deadline = Instant::now() + common::DEADLINE;
    let status = loop {
        if let Some(s) = guard.0.try_wait().unwrap() {
            break s;
        }
        assert!(Instant::now() < deadline, "zurg did not exit");
        std::thread::sleep(Duration::from_millis(10));
    };
    assert_eq!(status.code(), Some(137));
}

/// As a container's PID 1, a SIGTERM from the moment zurg holds it (the
/// first line of `main`, before the command is even started) reaches the
/// command: it would be dropped by the kernel otherwise, and `docker stop`
/// would wait for its SIGKILL.
#[test]
fn as_pid1_a_sigterm_before_the_command_starts_reaches_it() {
    for i in 0..10u64 {
        let mut z = shim(&["sleep", "1000"]);
        let pid = z.host_pid();
        common::until_blocks(pid, libc::SIGTERM);
        // Not a wait for anything: it moves where in the start the signal
        // lands.
        let land = Instant::now() + Duration::from_micros(i * 200);
        while Instant::now() < land {
            std::hint::spin_loop();
        }
        kill(pid, libc::SIGTERM);
        assert_eq!(
            z.wait_exit().code(),
            Some(143),
            "run {i}: {:?}",
            z.lines_now()
        );
    }
}

#[test]
fn as_pid1_the_child_starts_with_no_signal_blocked() {
    let out = Command::new("unshare")
        .args(["--pid", "--fork", "--kill-child", "--mount-proc", BIN, "--"])
        .args(["cat", "/proc/self/status"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    let fields = status_fields(&String::from_utf8_lossy(&out.stdout));
    assert!(
        fields.iter().any(|f| f == "SigBlk:\t0000000000000000"),
        "{fields:?}"
    );
}

/// `-v` says how CMD ended also when it left nothing behind (it said
/// only "started sh as pid 2", then exited without a word).
#[test]
fn verbose_says_how_the_command_ended_when_nothing_is_left() {
    let mut z = Zurg::start(Mode::Pid1, &["-v", "--", "sh", "-c", "exit 4"]);
    assert_eq!(z.wait_exit().code(), Some(4));
    z.saw("started sh as pid 2");
    z.saw("pid 2 ended (exit code 4); nothing left behind");
    let mut z = Zurg::start(Mode::Pid1, &["-v", "--", "sh", "-c", "kill -TERM $$"]);
    assert_eq!(z.wait_exit().code(), Some(143));
    z.saw("pid 2 ended (");
}

/// `-v` says how the leftovers went: the SIGTERM, and the SIGKILL when the
/// grace ran out.
#[test]
fn verbose_says_when_leftovers_get_sigkill() {
    // The background sleep inherits the ignored TERM, so only SIGKILL ends it.
    let mut z = Zurg::start(
        Mode::Pid1,
        &[
            "-v",
            "--grace",
            "300ms",
            "--",
            "sh",
            "-c",
            "trap '' TERM; sleep 100 & exit 3",
        ],
    );
    z.expect("ended (exit code 3); stopping what is left");
    z.expect("1 process(es) still there after the 300 ms grace: sent SIGKILL");
    assert_eq!(z.wait_exit().code(), Some(3));
}

/// Sends its own process group one SIGRTMIN+1 (kill(0, sig)), then zurg
/// RTMIN+2 as a marker, and exits 10 + how many RTMIN+1 it took before the
/// marker came back. Real-time signals queue instead of merging, so a
/// second copy cannot hide in the first; and zurg forwards and the child
/// takes them lowest number first, so any copy zurg passed on arrives
/// before the marker.
const GROUP_KILLER: &str = r#"
import os, signal, sys
once, marker = signal.SIGRTMIN + 1, signal.SIGRTMIN + 2
signal.pthread_sigmask(signal.SIG_BLOCK, {once, marker})
os.kill(0, once)
n = 0
while True:
    info = signal.sigwaitinfo({once, marker})
    if info.si_signo == marker:
        sys.exit(10 + n)
    n += 1
    if n == 1:
        os.kill(os.getppid(), marker)
"#;

#[test]
fn as_pid1_a_signal_the_command_sends_its_group_does_not_come_back_through_zurg() {
    let test = "as_pid1_a_signal_the_command_sends_its_group_does_not_come_back_through_zurg";
    if !std::path::Path::new(PYTHON).exists() {
        common::skip(test, "no /usr/bin/python3");
        return;
    }
    // In zurg's group, the kill(0) reached zurg too, which forwarded it
    // (the child got its own signal twice, and one that answers a signal by
    // signalling its group never stops), and every process of that group:
    // under unshare, unshare itself, killed by the default action. zurg
    // starts in a group of its own here so that the test runner is not.
    let args = ["--", PYTHON, "-c", GROUP_KILLER];
    let mut z = Zurg::start_with(Mode::Pid1, &args, |c| {
        std::os::unix::process::CommandExt::process_group(c, 0);
    });
    assert_eq!(z.wait_exit().code(), Some(11), "{:?}", z.seen);
}

#[test]
fn remap_exit_turns_the_listed_codes_into_0() {
    for (args, code) in [
        (&["-e", "3", "--", "sh", "-c", "exit 3"][..], 0),
        (&["-e", "3", "--", "sh", "-c", "exit 4"], 4),
        // a signal's 128+N, as tini: a JVM's 143 after SIGTERM
        (
            &[
                "-e",
                "3",
                "--remap-exit",
                "143",
                "--",
                "sh",
                "-c",
                "kill -TERM $$",
            ],
            0,
        ),
    ] {
        let mut z = Zurg::start(Mode::Pid1, args);
        assert_eq!(z.wait_exit().code(), Some(code), "{args:?}: {:?}", z.seen);
    }
}

#[test]
fn a_bad_tini_flag_value_is_a_usage_error_naming_flag_and_value() {
    for (args, says) in [
        (
            &["-e", "300", "--", "true"][..],
            "-e/--remap-exit \"300\": expected an exit code from 0 to 255",
        ),
        (
            &["-p", "SIGNOPE", "--", "true"],
            "-p/--parent-death-signal \"SIGNOPE\": not a signal",
        ),
    ] {
        let out = Command::new(BIN).args(args).output().unwrap();
        assert_eq!(out.status.code(), Some(2), "{args:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(err.contains(says), "{args:?}: {err}");
    }
}

#[test]
fn warn_reap_names_each_orphan_reaped_but_not_cmd() {
    let dir = TempDir::new("warnreap");
    let done = dir.path().join("done");
    // `(true &)`: the subshell exits without waiting for its child, which
    // is handed to zurg (PID 1) and reaped there.
    let script = format!(
        "(true &); n=0; while [ ! -e {} ] && [ $n -lt 1500 ]; do sleep 0.01; n=$((n+1)); done; exit 6",
        done.display()
    );
    let mut z = Zurg::start(Mode::Pid1, &["-w", "--", "sh", "-c", &script]);
    let line = z.expect("an orphan, not CMD");
    assert!(line.contains("warning: reaped pid "), "{line}");
    std::fs::write(&done, "").unwrap();
    assert_eq!(z.wait_exit().code(), Some(6));
    // CMD itself (pid 2 in the namespace) is not warned about
    let cmd_warned = z.seen.iter().any(|l| l.contains("reaped pid 2 "));
    assert!(!cmd_warned, "{:?}", z.seen);
}

#[test]
fn parent_death_signal_reaches_cmd_when_zurgs_parent_dies() {
    let dir = TempDir::new("pdeath");
    let log = dir.path().join("log");
    let script = format!(
        "trap 'echo USR1 >> {0}; exit 0' USR1; echo ready >> {0}; while :; do sleep 0.02; done",
        log.display()
    );
    // zurg's parent is unshare: its --kill-child death signal (KILL) is
    // replaced by -p's USR1, which zurg forwards.
    let mut z = Zurg::start(Mode::Pid1, &["-p", "USR1", "--", "sh", "-c", &script]);
    wait_for_word(&log, "ready");
    let zurg = z.host_pid();
    kill(z.child.id() as i32, 9);
    z.wait_exit();
    wait_for_word(&log, "USR1");
    eventually("zurg ended with its child", || {
        state(zurg).is_none_or(|s| s == 'Z')
    });
}

#[test]
fn tini_kill_process_group_in_the_environment_signals_the_whole_group() {
    let dir = TempDir::new("tinipgroup");
    let log = dir.path().join("log");
    let script = child_and_grandchild(&log);
    let mut z = Zurg::start_with(Mode::Pid1, &["--", "sh", "-c", &script], |c| {
        c.env("TINI_KILL_PROCESS_GROUP", "1");
    });
    usr1_reaches_child_and_grandchild(&mut z, &log);
}

#[test]
fn rewrite_to_0_drops_the_signal() {
    let dir = TempDir::new("rewrite0");
    let log = dir.path().join("log");
    let script = format!(
        "trap 'echo USR1 >> {0}' USR1; trap 'echo USR2 >> {0}; exit 4' USR2; echo ready >> {0}; while :; do sleep 0.02; done",
        log.display()
    );
    let mut z = Zurg::start(
        Mode::Pid1,
        &["--rewrite", "USR1:0", "--", "sh", "-c", &script],
    );
    wait_for_word(&log, "ready");
    // zurg takes them in order, so USR2 ends the child after USR1 was
    // handled (dropped) or would have been forwarded.
    z.signal(libc::SIGUSR1);
    z.signal(libc::SIGUSR2);
    assert_eq!(z.wait_exit().code(), Some(4));
    let text = std::fs::read_to_string(&log).unwrap();
    assert_eq!(text, "ready\nUSR2\n");
}

#[test]
fn single_child_signals_cmd_alone_despite_tini_kill_process_group() {
    let dir = TempDir::new("singlechild");
    let log = dir.path().join("log");
    let grandchild = format!(
        "trap 'echo grandchild USR1 >> {0}' USR1; trap 'echo grandchild USR2 >> {0}; exit 0' USR2; echo gready >> {0}; while :; do sleep 0.02; done",
        log.display()
    );
    let script = format!(
        "sh -c \"{}\" & trap 'echo child >> {1}' USR1; echo ready >> {1}; while :; do sleep 0.02; done",
        grandchild.replace('"', "\\\""),
        log.display()
    );
    let mut z = Zurg::start_with(Mode::Pid1, &["-c", "--", "sh", "-c", &script], |c| {
        c.env("TINI_KILL_PROCESS_GROUP", "1");
    });
    wait_for_word(&log, "ready");
    wait_for_word(&log, "gready");
    z.signal(libc::SIGUSR1);
    wait_for_word(&log, "child");
    // A signal to the group reaches each member in the one kill(2), so by
    // now the grandchild's USR1 would be pending; sh runs pending traps in
    // signal number order, USR1 before the USR2 sent to it now.
    let g_host = *z
        .descendants()
        .iter()
        .find(|p| common::cmdline(**p).starts_with("sh -c trap 'echo grandchild"))
        .expect("the grandchild");
    kill(g_host, libc::SIGUSR2);
    wait_for_word(&log, "grandchild USR2");
    let text = std::fs::read_to_string(&log).unwrap();
    assert!(!text.contains("grandchild USR1"), "{text}");
    z.signal(9);
    z.wait_exit();
}
