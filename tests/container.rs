//! zurg as the init of an OCI container under runc: a rootfs of the static
//! zurg plus busybox. Needs root, runc, busybox and ZURG_STATIC_BIN
//! (scripts/test provides them); where one is missing the test says so
//! loudly and passes without running.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Output, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::{eventually, send_lines, TempDir, DEADLINE};

static IDS: AtomicUsize = AtomicUsize::new(0);

fn skip(why: &str) {
    common::skip("runc container test", why);
}

fn prerequisites() -> Option<(PathBuf, PathBuf)> {
    let Some(zurg) = std::env::var_os("ZURG_STATIC_BIN").map(PathBuf::from) else {
        skip("ZURG_STATIC_BIN is not set (scripts/test builds it with scripts/static)");
        return None;
    };
    if Command::new("runc").arg("--version").output().is_err() {
        skip("runc is not installed (apt-get install runc)");
        return None;
    }
    let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    else {
        skip("busybox is not installed (apt-get install busybox-static)");
        return None;
    };
    Some((zurg, busybox))
}

struct Container {
    id: String,
    bundle: TempDir,
    run: Option<Child>,
    lines: Option<Receiver<String>>,
    seen: Vec<String>,
}

impl Container {
    fn new(zurg: &Path, busybox: &Path, args: &[&str], units: &[(&str, &str)]) -> Container {
        let bundle = TempDir::new("oci");
        let root = bundle.path().join("rootfs");
        for d in ["bin", "units", "tmp", "proc", "dev", "sys", "run"] {
            std::fs::create_dir_all(root.join(d)).unwrap();
        }
        std::fs::copy(zurg, root.join("zurg")).unwrap();
        std::fs::copy(busybox, root.join("bin/busybox")).unwrap();
        for applet in ["sh", "sleep", "cat", "grep", "wc", "touch", "ls", "kill"] {
            std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
        }
        for (name, text) in units {
            std::fs::write(root.join("units").join(format!("{name}.toml")), text).unwrap();
        }
        let spec = Command::new("runc")
            .arg("spec")
            .current_dir(bundle.path())
            .output()
            .unwrap();
        assert!(spec.status.success(), "runc spec: {spec:?}");
        let path = bundle.path().join("config.json");
        let mut config: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&path).unwrap()).unwrap();
        config["process"]["terminal"] = false.into();
        config["process"]["args"] = args.iter().map(|a| serde_json::Value::from(*a)).collect();
        config["root"]["readonly"] = false.into();
        std::fs::write(&path, serde_json::to_vec_pretty(&config).unwrap()).unwrap();
        let id = format!(
            "zurg-test-{}-{}",
            std::process::id(),
            IDS.fetch_add(1, Ordering::SeqCst)
        );
        Container {
            id,
            bundle,
            run: None,
            lines: None,
            seen: Vec::new(),
        }
    }

    fn start(&mut self) {
        let mut child = Command::new("runc")
            .args(["run", "-b"])
            .arg(self.bundle.path())
            .arg(&self.id)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let (tx, rx) = channel();
        send_lines(child.stdout.take().unwrap(), tx.clone());
        send_lines(child.stderr.take().unwrap(), tx);
        self.run = Some(child);
        self.lines = Some(rx);
    }

    fn expect(&mut self, needle: &str) {
        if self.seen.iter().any(|l| l.contains(needle)) {
            return;
        }
        let deadline = Instant::now() + DEADLINE;
        let rx = self.lines.as_ref().unwrap();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match rx.recv_timeout(left) {
                Ok(line) => {
                    let hit = line.contains(needle);
                    self.seen.push(line);
                    if hit {
                        return;
                    }
                }
                Err(_) => panic!(
                    "container never said {needle:?}; it said:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn wait(&mut self, within: Duration) -> std::process::ExitStatus {
        let run = self.run.as_mut().unwrap();
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = run.try_wait().unwrap() {
                return s;
            }
            assert!(
                Instant::now() < deadline,
                "runc run did not end within {within:?}"
            );
            std::thread::sleep(Duration::from_millis(10));
        }
    }

    fn exec(&self, script: &str) -> Output {
        Command::new("runc")
            .args(["exec", &self.id, "/bin/sh", "-c", script])
            .output()
            .unwrap()
    }
}

impl Drop for Container {
    fn drop(&mut self) {
        let _ = Command::new("runc")
            .args(["kill", &self.id, "KILL"])
            .output();
        if let Some(mut c) = self.run.take() {
            let _ = c.wait();
        }
        let _ = Command::new("runc")
            .args(["delete", "-f", &self.id])
            .output();
    }
}

#[test]
fn shim_exit_codes_propagate_to_runc_run() {
    let Some((zurg, busybox)) = prerequisites() else {
        return;
    };
    for (script, code) in [("exit 7", 7), ("kill -TERM $$", 143)] {
        let mut c = Container::new(
            &zurg,
            &busybox,
            &["/zurg", "--", "/bin/sh", "-c", script],
            &[],
        );
        c.start();
        assert_eq!(
            c.wait(DEADLINE).code(),
            Some(code),
            "{script}: {:?}",
            c.seen
        );
    }
}

#[test]
fn supervisor_reaps_orphans_and_stops_cleanly_on_runc_kill_term() {
    let Some((zurg, busybox)) = prerequisites() else {
        return;
    };
    let units = [
        ("svc", "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nstop_timeout_ms = 3000\n"),
        (
            "forker",
            "exec = \"/bin/sh\"\nargs = [\"-c\", \"i=0; while [ $i -lt 100 ]; do (sleep 0.2 &); i=$((i+1)); done; touch /tmp/spawned; exec sleep 1000\"]\n",
        ),
    ];
    let args = [
        "/zurg",
        "run",
        "--units",
        "/units",
        "--socket",
        "/run/zurg/control.sock",
        "--state",
        "/tmp/state",
    ];
    let mut c = Container::new(&zurg, &busybox, &args, &units);
    c.start();
    c.expect("[svc] started pid");
    c.expect("[forker] started pid");
    eventually("the orphans spawned", || {
        c.exec("test -e /tmp/spawned").status.success()
    });
    // every orphan is re-parented to zurg (PID 1) and reaped: no zombie,
    // and only the two long sleeps left
    eventually("every orphan reaped", || {
        let out = c.exec("grep -h '' /proc/[0-9]*/stat 2>/dev/null > /tmp/ps; grep -c ') Z ' /tmp/ps; grep -c '(sleep)' /tmp/ps");
        String::from_utf8_lossy(&out.stdout)
            .split_whitespace()
            .collect::<Vec<_>>()
            == ["0", "2"]
    });
    let t0 = Instant::now();
    let kill = Command::new("runc")
        .args(["kill", &c.id, "TERM"])
        .output()
        .unwrap();
    assert!(kill.status.success(), "{kill:?}");
    let status = c.wait(Duration::from_secs(10));
    assert_eq!(status.code(), Some(0), "{:?}", c.seen);
    assert!(
        t0.elapsed() < Duration::from_secs(3),
        "stop took {:?}",
        t0.elapsed()
    );
    c.expect("received SIGTERM: stopping all services");
    c.expect("[svc] stopped pid");
    c.expect("PID 1 of a container: exiting with 0");
}
