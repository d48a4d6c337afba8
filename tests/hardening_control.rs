//! Hardening of the control socket and the unit loader: whatever a client
//! or a file in the units directory does, PID 1 keeps serving and restarts
//! stay prompt. Each test here is the regression test of one hole.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{kill, Mode, TempDir, Zurg, BIN, DEADLINE};

struct Run {
    z: Zurg,
    dir: TempDir,
    sock: PathBuf,
}

const SLEEPER: &str = "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n";

fn start_with(units: &[(&str, &str)], extra: &[&str], setup: impl FnOnce(&mut Command)) -> Run {
    let dir = TempDir::new("hard");
    std::fs::create_dir_all(dir.path().join("units")).unwrap();
    for (name, text) in units {
        dir.write(&format!("units/{name}.toml"), text);
    }
    let sock = dir.path().join("control.sock");
    let mut z = common::run_in_with(&dir, Mode::Pid1, extra, setup);
    z.expect("loaded");
    Run { z, dir, sock }
}

fn start(units: &[(&str, &str)], extra: &[&str]) -> Run {
    start_with(units, extra, |_| {})
}

impl Run {
    fn cli(&self, args: &[&str]) -> Output {
        common::cli(&self.dir, args)
    }

    fn ok(&self, args: &[&str]) -> String {
        let out = self.cli(args);
        assert!(
            out.status.success(),
            "zurg {args:?} failed with {:?}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        );
        String::from_utf8_lossy(&out.stdout).into_owned()
    }

    fn status_json(&self) -> serde_json::Value {
        let out = self.ok(&["status", "--json"]);
        let v: serde_json::Value = serde_json::from_str(&out).unwrap();
        v["result"].clone()
    }

    fn pid_of(&self, name: &str) -> Option<i64> {
        self.status_json()
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .and_then(|r| r["pid"].as_i64())
    }

    fn raw(&self) -> UnixStream {
        let s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s
    }

    /// Kills `name`'s process and returns how long until `status` shows
    /// its successor: what a user watching a restart sees.
    fn restart_latency(&self, name: &str) -> Duration {
        let old = self.wait_pid(name, None);
        let t0 = Instant::now();
        kill(host_pid_of(self, old), 9);
        self.wait_pid(name, Some(old));
        t0.elapsed()
    }

    /// Polls `status` until `name` runs with a pid other than `not`.
    fn wait_pid(&self, name: &str, not: Option<i64>) -> i64 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let out = self.cli(&["status", "--json"]);
            if out.status.success() {
                let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
                let pid = v["result"]
                    .as_array()
                    .unwrap()
                    .iter()
                    .find(|r| r["name"] == name && r["state"] == "running")
                    .and_then(|r| r["pid"].as_i64());
                if let Some(pid) = pid.filter(|p| Some(*p) != not) {
                    return pid;
                }
            }
            assert!(Instant::now() < deadline, "{name} never ran (again)");
            std::thread::sleep(Duration::from_millis(1));
        }
    }
}

/// The host pid of the namespace pid `pid` below zurg.
fn host_pid_of(r: &Run, pid: i64) -> i32 {
    let mut found = None;
    common::eventually(&format!("namespace pid {pid} below zurg"), || {
        found = r.z.descendants().into_iter().find(|h| {
            std::fs::read_to_string(format!("/proc/{h}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("NSpid:"))
                        .and_then(|l| l.split_whitespace().last().map(str::to_string))
                })
                .is_some_and(|p| p == pid.to_string())
        });
        found.is_some()
    });
    found.unwrap()
}

fn read_reply(r: &mut BufReader<UnixStream>) -> serde_json::Value {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"))
}

fn mkfifo(path: &std::path::Path) {
    nix::unistd::mkfifo(path, nix::sys::stat::Mode::S_IRWXU).unwrap();
}

// ------------------------------------------------------------ unit loading

#[test]
fn fifos_in_the_units_directory_and_as_exec_do_not_hang_pid_1() {
    let dir = TempDir::new("fifo");
    let units = dir.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    dir.write("units/web.toml", SLEEPER);
    mkfifo(&units.join("pipe.toml"));
    let exec = dir.path().join("exec-fifo");
    mkfifo(&exec);
    dir.write(
        "units/hashed.toml",
        &format!(
            "exec = \"{}\"\nmd5 = \"d41d8cd98f00b204e9800998ecf8427e\"\n",
            exec.display()
        ),
    );
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    let line = z.expect("pipe.toml");
    assert!(
        line.contains("pipe.toml: is a FIFO, not a regular file; skipped"),
        "{line}"
    );
    z.expect("loaded");
    let line = z.expect("[hashed]");
    assert!(line.contains("is a FIFO, not a regular file"), "{line}");
    let r = Run {
        z,
        sock: dir.path().join("control.sock"),
        dir,
    };
    let web = r.wait_pid("web", None);

    // A unit file swapped for a FIFO during a reload: the reload answers,
    // says why, and leaves the service alone.
    std::fs::remove_file(units.join("web.toml")).unwrap();
    mkfifo(&units.join("web.toml"));
    let out = r.cli(&["reload"]);
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        text.contains("web.toml: is a FIFO, not a regular file; skipped"),
        "{text}"
    );
    assert_eq!(r.pid_of("web"), Some(web));

    // `zurg check` too returns instead of waiting on the FIFO.
    let mut check = Command::new(BIN)
        .args(["check", "--units", units.to_str().unwrap()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + DEADLINE;
    while check.try_wait().unwrap().is_none() {
        if Instant::now() > deadline {
            let _ = check.kill();
            panic!("zurg check hangs on a FIFO");
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let out = check.wait_with_output().unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        String::from_utf8_lossy(&out.stdout).contains("web.toml: is a FIFO"),
        "{out:?}"
    );
}

#[test]
fn a_missing_units_directory_says_it_does_not_exist() {
    let dir = TempDir::new("nodir");
    let missing = dir.path().join("nope");
    let out = Command::new(BIN)
        .args(["run", "--units", missing.to_str().unwrap()])
        .args(["--socket", dir.path().join("s").to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "units directory {} does not exist",
            missing.display()
        )),
        "{err}"
    );
    let file = dir.write("file", "");
    let out = Command::new(BIN)
        .args(["run", "--units", file.to_str().unwrap()])
        .args(["--socket", dir.path().join("s").to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("is a regular file, not a directory"), "{err}");
}

// ------------------------------------------------------------ the socket path

#[test]
fn socket_path_naming_a_regular_file_is_refused_not_deleted() {
    let dir = TempDir::new("precious");
    std::fs::create_dir_all(dir.path().join("units")).unwrap();
    let precious = dir.write("precious.txt", "keep me\n");
    let out = Command::new(BIN)
        .args(["run", "--units", dir.path().join("units").to_str().unwrap()])
        .args(["--socket", precious.to_str().unwrap()])
        .args(["--state", dir.path().join("state").to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!(
            "{} is a regular file, not a socket; refusing to replace it",
            precious.display()
        )),
        "{err}"
    );
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");

    // As PID 1 zurg runs on without a socket, and the file is still kept.
    let mut z = Zurg::start(
        Mode::Pid1,
        &[
            "run",
            "--units",
            dir.path().join("units").to_str().unwrap(),
            "--socket",
            precious.to_str().unwrap(),
            "--state",
            dir.path().join("state").to_str().unwrap(),
        ],
    );
    z.expect("not a socket; refusing to replace it");
    z.expect("loaded");
    drop(z);
    assert_eq!(std::fs::read_to_string(&precious).unwrap(), "keep me\n");
}

#[test]
fn a_stale_socket_is_replaced_and_a_live_one_is_not() {
    let dir = TempDir::new("stale");
    std::fs::create_dir_all(dir.path().join("units")).unwrap();
    let sock = dir.path().join("control.sock");
    // A socket nobody listens on any more.
    drop(std::os::unix::net::UnixListener::bind(&sock).unwrap());
    let r = {
        let mut z = common::run_in(&dir, Mode::Pid1, &[]);
        z.expect("loaded");
        Run { z, dir, sock }
    };
    r.ok(&["status"]);
    // A second zurg on the same socket finds it answering.
    let out = Command::new(BIN)
        .args([
            "run",
            "--units",
            r.dir.path().join("units").to_str().unwrap(),
        ])
        .args(["--socket", r.sock.to_str().unwrap()])
        .args(["--state", r.dir.path().join("state2").to_str().unwrap()])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stderr).contains("another process already listens"));
    r.ok(&["status"]);
}

// ------------------------------------------------------------ readers

/// Runs a client verb as uid/gid 65534 (nobody/nogroup), a readers member
/// when zurg runs with `--readers 65534`.
fn as_nobody(r: &Run, args: &[&str]) -> Output {
    Command::new("setpriv")
        .args([
            "--reuid",
            "65534",
            "--regid",
            "65534",
            "--clear-groups",
            BIN,
        ])
        .args(args)
        .env("ZURG_SOCKET", &r.sock)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

#[test]
fn readers_may_use_every_read_verb_and_no_other() {
    let r = start(&[("web", SLEEPER)], &["--readers", "65534"]);
    let pid = r.wait_pid("web", None);
    for args in [
        &["version"][..],
        &["status"],
        &["events"],
        &["gpid", "web"],
        &["stats"],
        &["history"],
    ] {
        let out = as_nobody(&r, args);
        assert!(out.status.success(), "a reader's {args:?}: {out:?}");
    }
    for (args, verb) in [
        (&["start", "web"][..], "start"),
        (&["stop", "web"], "stop"),
        (&["restart", "web"], "restart"),
        (&["reload"], "reload"),
    ] {
        let out = as_nobody(&r, args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("uid 65534 may not use `{verb}`")),
            "{err}"
        );
    }
    assert_eq!(r.pid_of("web"), Some(pid));
}
