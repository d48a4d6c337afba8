//! The shim on a terminal (README "Shim init"): ^C reaches the child once,
//! ^Z and `fg` stop and resume zurg and its child as one job, and the
//! terminal comes back when zurg exits. Each test runs under `script`, which
//! gives the command a pseudo-terminal as its controlling terminal; what the
//! test writes to script's stdin is typed on that terminal.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{Read, Write};
use std::path::Path;
use std::process::{Child, ChildStdin, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use common::{eventually, kill, state, TempDir, BIN, DEADLINE};

const PYTHON: &str = "/usr/bin/python3";

/// `script -qec CMD`: CMD runs as a session leader with a pty as its
/// controlling terminal. script runs CMD with `$SHELL -c`; the tests name
/// that shell, so they see the same process tree whatever the caller's
/// login shell is (CI has none, and script falls back to /bin/sh).
/// Dropping it kills script and every pid noted with `own`, so a failed
/// test leaves nothing behind.
struct Pty {
    child: Child,
    input: ChildStdin,
    output: Arc<Mutex<Vec<u8>>>,
    owned: Vec<i32>,
}

impl Pty {
    fn run(cmd: &str) -> Pty {
        let mut child = Command::new("script")
            .args(["-qec", cmd, "/dev/null"])
            .env("SHELL", "/bin/sh")
            .env("PS1", "$ ")
            .env("TERM", "dumb")
            .env("INPUTRC", "/dev/null")
            .env("HISTFILE", "/dev/null")
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start script");
        let input = child.stdin.take().unwrap();
        let mut stdout = child.stdout.take().unwrap();
        let output = Arc::new(Mutex::new(Vec::new()));
        let sink = Arc::clone(&output);
        // script blocks once its stdout pipe is full: keep draining it.
        std::thread::spawn(move || {
            let mut buf = [0u8; 4096];
            while let Ok(n) = stdout.read(&mut buf) {
                if n == 0 {
                    break;
                }
                sink.lock().unwrap().extend_from_slice(&buf[..n]);
            }
        });
        Pty {
            child,
            input,
            output,
            owned: Vec::new(),
        }
    }

    fn own(&mut self, pid: i32) {
        self.owned.push(pid);
    }

    fn typed(&mut self, bytes: &[u8]) {
        self.input.write_all(bytes).unwrap();
        self.input.flush().unwrap();
    }

    fn screen(&self) -> String {
        String::from_utf8_lossy(&self.output.lock().unwrap()).into_owned()
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "script did not exit; the terminal shows:\n{}",
                self.screen()
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Pty {
    fn drop(&mut self) {
        for pid in &self.owned {
            kill(*pid, 9);
        }
        if self.child.try_wait().ok().flatten().is_none() {
            kill(self.child.id() as i32, 9);
            let _ = self.child.wait();
        }
    }
}

fn have(test: &str, program: &str) -> bool {
    let found = Command::new("sh")
        .args(["-c", &format!("command -v {program}")])
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !found {
        common::skip(test, &format!("no {program}"));
    }
    found
}

fn lines(path: &Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap_or_default()
        .lines()
        .map(str::to_string)
        .collect()
}

/// Field `n` (1-based, as in proc(5)) of /proc/PID/stat.
fn stat_field(pid: i32, n: usize) -> i32 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let after = stat.rsplit_once(')').unwrap().1;
    after
        .split_whitespace()
        .nth(n - 3)
        .unwrap()
        .parse()
        .unwrap()
}

/// Logs "ready", then every SIGINT and SIGUSR1 it takes as "NAME
/// SI_CODE"; exits 5 after SIGUSR1. Waiting with sigwaitinfo on blocked
/// signals counts deliveries the way a handler flag would not.
const INT_COUNTER: &str = r#"
import signal, sys
log = sys.argv[1]
sigs = {signal.SIGINT, signal.SIGUSR1}
signal.pthread_sigmask(signal.SIG_BLOCK, sigs)
open(log, "a").write("ready\n")
while True:
    info = signal.sigwaitinfo(sigs)
    open(log, "a").write("%s %d\n" % (signal.Signals(info.si_signo).name, info.si_code))
    if info.si_signo == signal.SIGUSR1:
        sys.exit(5)
"#;

/// INT_COUNTER run as `zurg -- counter`, made into the terminal's command
/// by `command`, once it is ready: the terminal (which ends zurg and the
/// child), the counter's log, and zurg's and the child's host pids (the
/// child's own view may be a pid namespace's). Dropped terminal first.
struct Counter {
    pty: Pty,
    log: std::path::PathBuf,
    zurg: i32,
    child: i32,
    _dir: TempDir,
}

/// None (the test skipped, saying so) without `script` or Python.
fn counter_on_a_terminal(test: &str, command: impl Fn(&str) -> String) -> Option<Counter> {
    if !have(test, "script") || !have(test, PYTHON) {
        return None;
    }
    let dir = TempDir::new("ctrlc");
    let log = dir.path().join("log");
    let code = dir.write("counter.py", INT_COUNTER);
    let mut pty = Pty::run(&command(&format!(
        "{BIN} -- {PYTHON} {} {}",
        code.display(),
        log.display()
    )));
    eventually("the child is ready", || {
        lines(&log).first().is_some_and(|l| l.starts_with("ready"))
    });
    let script = pty.child.id() as i32;
    let zurg = *common::descendants(script)
        .iter()
        .find(|p| common::comm(**p).as_deref() == Some("zurg"))
        .expect("zurg below script");
    let child = *common::children(zurg).first().expect("zurg's child");
    pty.own(child);
    pty.own(zurg);
    Some(Counter {
        pty,
        log,
        zurg,
        child,
        _dir: dir,
    })
}

/// Runs INT_COUNTER under `{launcher} zurg --` on a terminal, types ^C three
/// times, then sends zurg SIGUSR1.
fn ctrl_c_reaches_the_child_once(test: &str, launcher: &str) {
    let Some(Counter {
        ref mut pty,
        ref log,
        zurg,
        child,
        ..
    }) = counter_on_a_terminal(test, |zurg| format!("{launcher} {zurg}"))
    else {
        return;
    };
    // The child leads its own group, and that group holds the terminal;
    // zurg's group does not, so the terminal's SIGINT never reaches zurg.
    const PGRP: usize = 5;
    const TPGID: usize = 8;
    assert_eq!(stat_field(child, TPGID), stat_field(child, PGRP));
    assert_ne!(stat_field(zurg, PGRP), stat_field(child, PGRP));

    const SI_KERNEL: &str = "128";
    for round in 1..=3 {
        pty.typed(b"\x03");
        eventually(&format!("SIGINT number {round}"), || {
            lines(log)
                .iter()
                .filter(|l| l.starts_with("SIGINT"))
                .count()
                >= round
        });
    }
    // Signals zurg forwards arrive in order, so once USR1 (sent to zurg now)
    // is in, any extra SIGINT zurg passed on would be in too.
    kill(zurg, libc::SIGUSR1);
    assert_eq!(pty.wait_exit().code(), Some(5), "{}", pty.screen());
    let got = lines(log);
    assert_eq!(
        &got[1..],
        &[
            format!("SIGINT {SI_KERNEL}"),
            format!("SIGINT {SI_KERNEL}"),
            format!("SIGINT {SI_KERNEL}"),
            "SIGUSR1 0".to_string()
        ],
        "three ^C, each once and from the terminal, then zurg's USR1"
    );
}

#[test]
fn ctrl_c_on_a_terminal_reaches_the_child_exactly_once() {
    ctrl_c_reaches_the_child_once("ctrl_c_on_a_terminal_reaches_the_child_exactly_once", "");
}

/// `docker run -it`: zurg is PID 1 and leads the session of the terminal.
#[test]
fn ctrl_c_reaches_the_child_exactly_once_with_zurg_as_pid1_of_the_terminal() {
    ctrl_c_reaches_the_child_once(
        "ctrl_c_reaches_the_child_exactly_once_with_zurg_as_pid1_of_the_terminal",
        "unshare --pid --fork --kill-child --mount-proc setsid --ctty",
    );
}

#[test]
fn the_terminal_comes_back_when_zurg_exits() {
    let test = "the_terminal_comes_back_when_zurg_exits";
    if !have(test, "script") {
        return;
    }
    let dir = TempDir::new("giveback");
    let marker = dir.path().join("marker");
    let result = dir.path().join("result");
    // A plain sh does no job control: it can read the terminal after zurg
    // only if zurg handed the foreground back from its child's group.
    let mut pty = Pty::run(&format!(
        "sh -c '{BIN} -- sh -c \"exit 3\"; echo $? > {m}; read x; echo \"got=$x rc=$?\" > {r}'",
        m = marker.display(),
        r = result.display()
    ));
    eventually("zurg exited", || lines(&marker) == ["3"]);
    pty.typed(b"hello\n");
    eventually("sh read the terminal", || !lines(&result).is_empty());
    assert_eq!(lines(&result), ["got=hello rc=0"], "{}", pty.screen());
    pty.wait_exit();
}

#[test]
fn ctrl_z_and_fg_stop_and_resume_zurg_and_the_child_as_one_job() {
    ctrl_z_and_fg(
        "ctrl_z_and_fg_stop_and_resume_zurg_and_the_child_as_one_job",
        "read x",
        "",
    );
}

/// Off the terminal's stdin the child stays in zurg's group: the terminal
/// stops both, and zurg must stop itself rather than leave bash waiting.
#[test]
fn ctrl_z_and_fg_stop_and_resume_zurg_and_the_child_in_zurgs_own_group() {
    ctrl_z_and_fg(
        "ctrl_z_and_fg_stop_and_resume_zurg_and_the_child_in_zurgs_own_group",
        "read x < /dev/tty",
        "< /dev/null",
    );
}

/// Starts `zurg -- sh -c '...; READ; exit 7' REDIRECT` at an interactive
/// bash, types ^Z, then `fg` and a line for READ.
fn ctrl_z_and_fg(test: &str, read: &str, redirect: &str) {
    if !have(test, "script") || !have(test, "bash") {
        return;
    }
    let dir = TempDir::new("jobctl");
    let pidfile = dir.path().join("pid");
    let rcfile = dir.path().join("rc");
    let mut pty = Pty::run("bash --norc --noprofile -i");
    pty.typed(
        format!(
            "{BIN} -- sh -c 'echo $$ > {}; {read}; exit 7' {redirect}\n",
            pidfile.display()
        )
        .as_bytes(),
    );
    eventually("the child started", || lines(&pidfile).len() == 1);
    let child: i32 = lines(&pidfile)[0].parse().unwrap();
    const PPID: usize = 4;
    let zurg = stat_field(child, PPID);
    pty.own(child);
    pty.own(zurg);
    assert_eq!(common::comm(zurg).as_deref(), Some("zurg"));

    pty.typed(b"\x1a");
    eventually("zurg and the child stopped", || {
        state(child) == Some('T') && state(zurg) == Some('T')
    });
    eventually("bash reports the job stopped", || {
        pty.screen().contains("Stopped")
    });

    pty.typed(b"fg\n");
    eventually("zurg and the child run again", || {
        !matches!(state(child), Some('T')) && !matches!(state(zurg), Some('T'))
    });
    // The child is back in the foreground: it reads the line and ends.
    pty.typed(b"go\n");
    eventually("zurg and the child ended", || {
        state(zurg).is_none() && state(child).is_none()
    });
    pty.typed(format!("echo rc=$? > {}\n", rcfile.display()).as_bytes());
    eventually("bash saw the job end", || !lines(&rcfile).is_empty());
    assert_eq!(lines(&rcfile), ["rc=7"], "{}", pty.screen());
    pty.typed(b"exit\n");
    pty.wait_exit();
}

/// With stdin redirected zurg does not hand out the terminal, so the child
/// stays in zurg's group, which holds the terminal: ^C reaches both. zurg
/// is stopped while ^C is typed, so the child has taken the terminal's
/// SIGINT before zurg could pass on a copy; a copy would then come as a
/// second SIGINT, sent by zurg, ahead of zurg's USR1.
#[test]
fn ctrl_c_in_zurgs_own_group_is_not_forwarded_a_second_time() {
    let test = "ctrl_c_in_zurgs_own_group_is_not_forwarded_a_second_time";
    if !have(test, "bash") {
        return;
    }
    let Some(Counter {
        ref mut pty,
        ref log,
        zurg,
        child,
        ..
    }) = counter_on_a_terminal(test, |zurg| {
        // A shell stays between script and zurg: script stops itself when
        // its child stops, and would then no longer pass on the ^C typed
        // while zurg is stopped. That shell is in the terminal's group and
        // takes the ^C too; bash (which forks for a command with a
        // redirection) lives on when the command it waits for then exits
        // normally, and exits with its code, where dash dies of the ^C.
        format!("exec bash -c '{zurg} < /dev/null'")
    })
    else {
        return;
    };
    const PGRP: usize = 5;
    const TPGID: usize = 8;
    assert_eq!(stat_field(child, PGRP), stat_field(zurg, PGRP));
    assert_eq!(stat_field(child, TPGID), stat_field(child, PGRP));

    kill(zurg, libc::SIGSTOP);
    eventually("zurg stopped", || state(zurg) == Some('T'));
    pty.typed(b"\x03");
    eventually("the terminal's SIGINT", || {
        lines(log).iter().any(|l| l.starts_with("SIGINT"))
    });
    kill(zurg, libc::SIGCONT);
    kill(zurg, libc::SIGUSR1);
    assert_eq!(pty.wait_exit().code(), Some(5), "{}", pty.screen());
    assert_eq!(
        &lines(log)[1..],
        &["SIGINT 128".to_string(), "SIGUSR1 0".to_string()],
        "^C once, from the terminal, then zurg's USR1"
    );
}
