//! One zurg as PID 1 on a units directory of the test's own, driven through
//! its control socket: the harness of the control-socket tests.

use std::io::{BufRead, BufReader};
use std::os::unix::net::UnixStream;
use std::path::PathBuf;
use std::process::{Command, Output, Stdio};

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
