//! Helpers for the naming tests: a publisher, a `resolve --watch` stream,
//! one-shot lookups, and network namespaces joined by a bridge.

use std::io::{BufRead, BufReader};
use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::Instant;

use serde_json::Value;

use super::{cli, eventually, kill, Mode, TempDir, Zurg, BIN, DEADLINE};

/// A loopback port nobody listens on right now.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// `cmd` run inside network namespace `ns`, when given.
pub fn command_in(ns: Option<&str>, program: &str) -> Command {
    match ns {
        None => Command::new(program),
        Some(ns) => {
            let mut c = Command::new("ip");
            c.args(["netns", "exec", ns, program]);
            c
        }
    }
}

pub struct Publisher {
    pub z: Zurg,
    pub addr: String,
}

impl Publisher {
    pub fn start(ns: Option<&str>, extra: &[&str]) -> Publisher {
        Publisher::start_at(ns, &format!("127.0.0.1:{}", free_port()), extra)
    }

    pub fn start_at(ns: Option<&str>, addr: &str, extra: &[&str]) -> Publisher {
        let mut args = vec!["publisher", "--listen", addr];
        args.extend_from_slice(extra);
        let mode = match ns {
            None => Mode::Plain,
            Some(ns) => Mode::PlainIn(ns.to_string()),
        };
        let mut z = Zurg::start(mode, &args);
        z.expect("publisher listening on");
        Publisher {
            z,
            addr: addr.to_string(),
        }
    }

    /// SIGKILL: no goodbyes.
    pub fn kill(&mut self) {
        kill(self.z.child.id() as i32, 9);
        let _ = self.z.child.wait();
    }
}

/// A running `zurg resolve ... --watch --json`, one JSON document per line.
pub struct Watcher {
    child: Child,
    lines: Receiver<String>,
}

impl Watcher {
    pub fn start(ns: Option<&str>, addr: &str, args: &[&str]) -> Watcher {
        let mut child = command_in(ns, BIN)
            .arg("resolve")
            .args(args)
            .args(["--watch", "--json", "--publisher", addr])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let out = child.stdout.take().unwrap();
        let (tx, rx) = channel();
        std::thread::spawn(move || {
            for line in BufReader::new(out).lines() {
                let Ok(line) = line else { break };
                if tx.send(line).is_err() {
                    break;
                }
            }
        });
        Watcher { child, lines: rx }
    }

    /// The next document matching `pred`; earlier ones are skipped.
    pub fn until(&self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let deadline = Instant::now() + DEADLINE;
        let mut seen = Vec::new();
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    let v: Value = serde_json::from_str(&line)
                        .unwrap_or_else(|e| panic!("watch printed non-JSON {line:?}: {e}"));
                    if pred(&v) {
                        return v;
                    }
                    seen.push(line);
                }
                Err(RecvTimeoutError::Timeout) => {
                    panic!(
                        "timed out waiting for {what}; the watch printed:\n{}",
                        seen.join("\n")
                    )
                }
                Err(RecvTimeoutError::Disconnected) => {
                    panic!(
                        "the watch ended waiting for {what}; it printed:\n{}",
                        seen.join("\n")
                    )
                }
            }
        }
    }

    /// Receive instant of the next matching document, for latency figures.
    pub fn until_timed(&self, what: &str, pred: impl Fn(&Value) -> bool) -> (Value, Instant) {
        let v = self.until(what, pred);
        (v, Instant::now())
    }
}

impl Drop for Watcher {
    fn drop(&mut self) {
        kill(self.child.id() as i32, 9);
        let _ = self.child.wait();
    }
}

pub fn is_change(v: &Value, change: &str, service: &str) -> bool {
    v["t"] == "change" && v["change"] == change && v["endpoint"]["service"] == service
}

pub fn resolve_raw(ns: Option<&str>, addr: &str, args: &[&str]) -> Output {
    command_in(ns, BIN)
        .arg("resolve")
        .args(args)
        .args(["--json", "--publisher", addr])
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `zurg resolve ARGS --json`, parsed; exit 1 (no endpoints) is fine.
pub fn resolve(ns: Option<&str>, addr: &str, args: &[&str]) -> Value {
    let out = resolve_raw(ns, addr, args);
    assert!(
        matches!(out.status.code(), Some(0 | 1)),
        "resolve {args:?}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    serde_json::from_slice(&out.stdout).unwrap()
}

/// Waits until the forwarder of the zurg in DIR reports a state matching
/// `pred` (from `zurg version --json`); returns it.
pub fn forwarder_state(dir: &TempDir, pred: impl Fn(&Value) -> bool) -> Value {
    let mut last = Value::Null;
    eventually("the forwarder's state", || {
        let out = cli(dir, &["version", "--json"]);
        let Ok(v) = serde_json::from_slice::<Value>(&out.stdout) else {
            return false;
        };
        last = v["result"]["publish"].clone();
        !last.is_null() && pred(&last)
    });
    last
}

/// Network namespaces: a hub holding a bridge at 10.77.N.1, and hosts at
/// 10.77.N.11, .12, ... each joined to it by a veth pair, with a default
/// route through the hub. Removed on drop.
pub struct Net {
    pub hub: String,
    pub hosts: Vec<String>,
    pub subnet: u8,
}

fn ip(args: &[&str]) {
    let out = Command::new("ip").args(args).output().unwrap();
    assert!(
        out.status.success(),
        "ip {}: {}",
        args.join(" "),
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Net {
    pub fn new(hosts: usize) -> Net {
        static NETS: std::sync::atomic::AtomicU32 = std::sync::atomic::AtomicU32::new(0);
        let n = NETS.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        let pid = std::process::id();
        let tag = format!("{pid}{}", char::from(b'a' + u8::try_from(n % 26).unwrap()));
        // A subnet of its own per test, so tests and runs do not collide
        // (the namespaces keep them apart anyway; this keeps logs clear).
        let subnet = u8::try_from((pid + n * 37) % 200 + 20).unwrap();
        let hub = format!("zt{tag}hub");
        let net = Net {
            hub: hub.clone(),
            hosts: (1..=hosts).map(|i| format!("zt{tag}h{i}")).collect(),
            subnet,
        };
        ip(&["netns", "add", &hub]);
        ip(&["-n", &hub, "link", "set", "lo", "up"]);
        ip(&["-n", &hub, "link", "add", "br0", "type", "bridge"]);
        ip(&[
            "-n",
            &hub,
            "addr",
            "add",
            &format!("10.77.{subnet}.1/24"),
            "dev",
            "br0",
        ]);
        ip(&["-n", &hub, "link", "set", "br0", "up"]);
        for (i, h) in net.hosts.iter().enumerate() {
            ip(&["netns", "add", h]);
            let veth = format!("v{}", i + 1);
            ip(&[
                "-n", &hub, "link", "add", &veth, "type", "veth", "peer", "name", "eth0", "netns",
                h,
            ]);
            ip(&["-n", &hub, "link", "set", &veth, "master", "br0", "up"]);
            ip(&["-n", h, "link", "set", "lo", "up"]);
            ip(&[
                "-n",
                h,
                "addr",
                "add",
                &format!("{}/24", net.host_ip(i)),
                "dev",
                "eth0",
            ]);
            ip(&["-n", h, "link", "set", "eth0", "up"]);
            ip(&["-n", h, "route", "add", "default", "via", &net.hub_ip()]);
        }
        net
    }

    pub fn hub_ip(&self) -> String {
        format!("10.77.{}.1", self.subnet)
    }

    pub fn host_ip(&self, i: usize) -> String {
        format!("10.77.{}.{}", self.subnet, 11 + i)
    }
}

impl Drop for Net {
    fn drop(&mut self) {
        for ns in self.hosts.iter().chain(std::iter::once(&self.hub)) {
            let _ = Command::new("ip").args(["netns", "del", ns]).output();
        }
    }
}
