//! One zurg as PID 1 on a units directory of the test's own, driven through
//! its control socket: the harness of the control-socket tests.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use super::{Mode, TempDir, Zurg, DEADLINE};

pub struct Run {
    pub z: Zurg,
    pub dir: TempDir,
    pub sock: PathBuf,
}

/// Starts zurg as PID 1 on UNITS (name, unit text) with EXTRA arguments to
/// `zurg run`, once it has loaded them; SETUP adjusts the command first.
pub fn start_with(units: &[(&str, &str)], extra: &[&str], setup: impl FnOnce(&mut Command)) -> Run {
    let dir = TempDir::new("run");
    std::fs::create_dir_all(dir.path().join("units")).unwrap();
    for (name, text) in units {
        dir.write(&format!("units/{name}.toml"), text);
    }
    let mut z = super::run_in_with(&dir, Mode::Pid1, extra, setup);
    z.expect("loaded");
    Run::on(dir, z)
}

/// The next reply line on a raw connection, parsed.
pub fn read_reply(r: &mut BufReader<UnixStream>) -> serde_json::Value {
    let mut line = String::new();
    r.read_line(&mut line).unwrap();
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("bad reply {line:?}: {e}"))
}

impl Run {
    /// The harness around `z`, started by the test itself on DIR (with
    /// `super::run_in` or the like).
    pub fn on(dir: TempDir, z: Zurg) -> Run {
        let sock = dir.path().join("control.sock");
        Run { z, dir, sock }
    }
}

pub fn start(units: &[(&str, &str)], extra: &[&str]) -> Run {
    start_with(units, extra, |_| {})
}

impl Run {
    pub fn cli(&self, args: &[&str]) -> Output {
        super::cli(&self.dir, args)
    }

    /// Stdout of a client verb that must succeed.
    pub fn ok(&self, args: &[&str]) -> String {
        super::ok(&self.dir, args)
    }

    /// Every row of `status --json` (whose exit code says whether a
    /// service has a problem, not whether the request worked).
    pub fn status_json(&self) -> serde_json::Value {
        super::json(&self.dir, &["status"])
    }

    pub fn pid_of(&self, name: &str) -> Option<i64> {
        self.status_json()
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["name"] == name)
            .and_then(|r| r["pid"].as_i64())
    }

    /// Runs a client verb as uid/gid 65534 (nobody/nogroup), a readers
    /// member when zurg runs with `--readers 65534`.
    pub fn as_nobody(&self, args: &[&str]) -> Output {
        Command::new("setpriv")
            .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
            .arg(super::BIN)
            .args(args)
            .env("ZURG_SOCKET", &self.sock)
            .stdin(Stdio::null())
            .output()
            .unwrap()
    }

    /// A connection to the control socket, for speaking the protocol by hand.
    pub fn raw(&self) -> UnixStream {
        let s = UnixStream::connect(&self.sock).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        s
    }
}

impl Run {
    /// Kills `name`'s process and returns how long until `status` shows
    /// its successor: what a user watching a restart sees.
    pub fn restart_latency(&self, name: &str) -> Duration {
        let old = self.wait_pid(name, None);
        self.restart_latency_of(name, old)
    }

    /// `restart_latency` of `name` running as `old`, asking nothing first:
    /// for measuring while zurg may be busy.
    pub fn restart_latency_of(&self, name: &str, old: i64) -> Duration {
        let host = host_pid_of(self, old);
        let t0 = Instant::now();
        super::kill(host, 9);
        self.wait_pid(name, Some(old));
        t0.elapsed()
    }

    /// Polls `status` until `name` runs with a pid other than `not`.
    pub fn wait_pid(&self, name: &str, not: Option<i64>) -> i64 {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let out = self.cli(&["status", "--json", name]);
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
pub fn host_pid_of(r: &Run, pid: i64) -> i32 {
    let mut found = None;
    super::eventually(&format!("namespace pid {pid} below zurg"), || {
        found =
            r.z.descendants()
                .into_iter()
                .find(|h| super::ns_pid(*h).is_some_and(|p| i64::from(p) == pid));
        found.is_some()
    });
    found.unwrap()
}
