//! Helpers for the naming tests: a publisher, a `resolve --watch` stream,
//! one-shot lookups, and network namespaces joined by a bridge.

use std::process::{Child, Command, Output, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::Instant;

use serde_json::Value;

use super::{cli, eventually, kill, Mode, TempDir, Zurg, BIN, DEADLINE};

/// A loopback port nobody listens on right now, for a process to bind a
/// moment later. Taken below the kernel's ephemeral range: a port the
/// kernel hands out (bind to port 0) is also what it hands any outgoing
/// connection as its source port, and one did take such a port between
/// this probe and the publisher's bind ("Address already in use", under
/// load). Each call of a test binary gets a port of its own; binaries
/// start at places of their own (by pid).
pub fn free_port() -> u16 {
    use std::sync::atomic::{AtomicU32, Ordering};
    static NEXT: AtomicU32 = AtomicU32::new(0);
    const LOW: u32 = 10_000;
    let ephemeral_low = std::fs::read_to_string("/proc/sys/net/ipv4/ip_local_port_range")
        .ok()
        .and_then(|r| r.split_whitespace().next()?.parse::<u32>().ok())
        .unwrap_or(32_768);
    let span = ephemeral_low.saturating_sub(LOW);
    if span < 1_000 {
        return std::net::TcpListener::bind("127.0.0.1:0")
            .unwrap()
            .local_addr()
            .unwrap()
            .port();
    }
    let start = std::process::id().wrapping_mul(7_919) % span;
    for _ in 0..span {
        let port = LOW + (start + NEXT.fetch_add(1, Ordering::Relaxed)) % span;
        let port = u16::try_from(port).unwrap();
        if std::net::TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {LOW}..{ephemeral_low}");
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
    /// On a free loopback port. free_port's probe and the publisher's bind
    /// are two moments, and another process may take the port between
    /// them (a suite run saw "Address already in use" once): a publisher
    /// that says so is started again on another port.
    pub fn start(ns: Option<&str>, extra: &[&str]) -> Publisher {
        const TRIES: usize = 3;
        for _ in 1..TRIES {
            let addr = format!("127.0.0.1:{}", free_port());
            let mut z = Publisher::spawn(ns, &addr, extra);
            let said = z.try_wait_line(DEADLINE, &|l| {
                l.contains("publisher listening on") || l.contains("Address already in use")
            });
            match said {
                Some(line) if line.contains("Address already in use") => continue,
                Some(_) => return Publisher { z, addr },
                None => panic!(
                    "timed out waiting for the publisher on {addr}; zurg said:\n{}",
                    z.lines_now().join("\n")
                ),
            }
        }
        Publisher::start_at(ns, &format!("127.0.0.1:{}", free_port()), extra)
    }

    pub fn start_at(ns: Option<&str>, addr: &str, extra: &[&str]) -> Publisher {
        let mut z = Publisher::spawn(ns, addr, extra);
        z.expect("publisher listening on");
        Publisher {
            z,
            addr: addr.to_string(),
        }
    }

    fn spawn(ns: Option<&str>, addr: &str, extra: &[&str]) -> Zurg {
        let mut args = vec!["publisher", "--listen", addr];
        args.extend_from_slice(extra);
        let mode = match ns {
            None => Mode::Plain,
            Some(ns) => Mode::PlainIn(ns.to_string()),
        };
        Zurg::start(mode, &args)
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
        let lines = super::lines_of(child.stdout.take().unwrap());
        Watcher { child, lines }
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
    let mut json = args.to_vec();
    json.push("--json");
    resolve_plain(ns, addr, &json)
}

/// `zurg resolve ARGS --publisher ADDR` as a user types it: its output as
/// is, text unless ARGS ask for JSON.
pub fn resolve_plain(ns: Option<&str>, addr: &str, args: &[&str]) -> Output {
    command_in(ns, BIN)
        .arg("resolve")
        .args(args)
        .args(["--publisher", addr])
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

/// The records of `zurg history ARGS --publisher ADDR --json`, run inside
/// network namespace `ns` when given; the command must succeed.
pub fn publisher_history(ns: Option<&str>, addr: &str, args: &[&str]) -> Vec<Value> {
    let out = command_in(ns, BIN)
        .arg("history")
        .args(args)
        .args(["--publisher", addr, "--json"])
        .stdin(Stdio::null())
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "history {args:?} --publisher {addr}: {}",
        super::text(&out)
    );
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    v["result"].as_array().unwrap().clone()
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

/// One length-prefixed frame of the publish protocol.
pub fn frame(json: &str) -> Vec<u8> {
    let mut v = u32::try_from(json.len()).unwrap().to_be_bytes().to_vec();
    v.extend_from_slice(json.as_bytes());
    v
}

/// The next frame on a raw connection, or `None` when nothing came within
/// `wait`; a panic when the connection ends.
pub fn read_frame(s: &mut std::net::TcpStream, wait: std::time::Duration) -> Option<Value> {
    use std::io::Read;
    s.set_read_timeout(Some(wait)).unwrap();
    let mut len = [0u8; 4];
    match s.read_exact(&mut len) {
        Ok(()) => {}
        Err(e)
            if matches!(
                e.kind(),
                std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
            ) =>
        {
            return None
        }
        Err(e) => panic!("reading a frame: {e}"),
    }
    let mut body = vec![0u8; u32::from_be_bytes(len) as usize];
    s.read_exact(&mut body).unwrap();
    Some(serde_json::from_slice(&body).unwrap())
}

/// A forwarder scripted over a raw connection, for filling a publisher
/// with more endpoints or changes than real services would make quickly.
pub struct RawForwarder {
    pub stream: std::net::TcpStream,
    pub zurg: String,
    pub seq: u64,
}

impl RawForwarder {
    /// Connects and says hello as zurg instance `n` (a fresh host).
    pub fn connect(addr: &str, n: u32) -> RawForwarder {
        use std::io::Write;
        let zurg = format!("127.0.0.1:0:{n}:{n}");
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(&frame(&format!(
                r#"{{"t":"hello","proto":1,"role":"forwarder","host":"127.0.0.1","zurg":"{zurg}","boot":"b","hostname":"raw{n}","nonce":"00","instance":"{n:032x}"}}"#
            )))
            .unwrap();
        let welcome = read_frame(&mut stream, DEADLINE).expect("a welcome");
        assert_eq!(welcome["t"], "welcome", "{welcome}");
        RawForwarder {
            stream,
            zurg,
            seq: 0,
        }
    }

    pub fn endpoint(&self, service: &str, i: u64) -> String {
        format!(
            r#"{{"service":"{service}","ip":"127.0.0.1","port":8080,"gpid":"127.0.0.1:8080:1764000000000000:{i}","version":"1.0.0-build.20261202.1","since_us":1764000000000000,"host":"{}"}}"#,
            self.zurg
        )
    }

    /// A snapshot of `count` endpoints spread over `names` services, in
    /// chunks of 128, then waits for its ack.
    pub fn snapshot(&mut self, names: u64, count: u64) {
        use std::io::Write;
        let all: Vec<String> = (0..count)
            .map(|i| self.endpoint(&format!("svc{:04}", i % names), i))
            .collect();
        let chunks: Vec<&[String]> = all.chunks(128).collect();
        let mut bytes = Vec::new();
        for (k, c) in chunks.iter().enumerate() {
            bytes.extend(frame(&format!(
                r#"{{"t":"snapshot","seq":{},"endpoints":[{}],"last":{}}}"#,
                self.seq,
                c.join(","),
                k + 1 == chunks.len()
            )));
        }
        self.stream.write_all(&bytes).unwrap();
        // Tens of thousands of endpoints take a debug build seconds, more
        // when other tests share the machine.
        self.await_ack(DEADLINE * 4);
    }

    /// `pairs` start and exit events of one service, then waits for the ack
    /// of the last.
    pub fn churn(&mut self, service: &str, pairs: u64) {
        self.churn_within(service, pairs, DEADLINE);
    }

    /// `churn`, for a burst a debug build needs longer than `DEADLINE` for.
    pub fn churn_within(&mut self, service: &str, pairs: u64, within: std::time::Duration) {
        use std::io::Write;
        let mut bytes = Vec::new();
        for i in 0..pairs {
            for kind in ["start", "exit"] {
                self.seq += 1;
                bytes.extend(frame(&format!(
                    r#"{{"t":"event","seq":{},"kind":"{kind}","time_us":1,"endpoint":{},"pid":9}}"#,
                    self.seq,
                    self.endpoint(service, 1_000_000 + i)
                )));
            }
        }
        self.stream.write_all(&bytes).unwrap();
        self.await_ack(within);
    }

    fn await_ack(&mut self, within: std::time::Duration) {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no ack of seq {} in time", self.seq);
            if let Some(f) = read_frame(&mut self.stream, left) {
                assert_eq!(f["t"], "ack", "{f}");
                if f["seq"].as_u64() == Some(self.seq) {
                    return;
                }
            }
        }
    }
}

/// Resident memory of process `pid` in KiB (VmRSS in /proc/PID/status).
pub fn vm_rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or_else(|| panic!("no VmRSS in /proc/{pid}/status"))
}

/// A raw client connection that said hello and was welcomed.
pub fn raw_client(addr: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(&frame(
        r#"{"t":"hello","proto":1,"role":"client","nonce":"00"}"#,
    ))
    .unwrap();
    let welcome = read_frame(&mut s, DEADLINE).expect("a welcome");
    assert_eq!(welcome["t"], "welcome", "{welcome}");
    s
}

/// Reads until the publisher closes the connection; the text of all it
/// sent. Panics when it is still open after the deadline.
pub fn until_closed(mut s: std::net::TcpStream) -> String {
    use std::io::Read;
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut got = Vec::new();
    match s.read_to_end(&mut got) {
        Ok(_) => {}
        Err(e) if e.kind() == std::io::ErrorKind::ConnectionReset => {}
        Err(e) => panic!(
            "the publisher did not close the connection: {e}; it sent {:?}",
            String::from_utf8_lossy(&got)
        ),
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// An HTTP connection to the status page at `addr` reading its event
/// stream, past the first event (the whole state).
pub fn event_stream(addr: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(format!("GET /events HTTP/1.1\r\nHost: {addr}\r\n\r\n").as_bytes())
        .unwrap();
    read_past(&mut s, "event: state");
    s
}

/// Reads `s` until what came holds `marker` (within DEADLINE); all that
/// came, as text.
pub fn read_past(s: &mut std::net::TcpStream, marker: &str) -> String {
    use std::io::Read;
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut got = Vec::new();
    let mut buf = [0u8; 4096];
    while !String::from_utf8_lossy(&got).contains(marker) {
        let n = s.read(&mut buf).unwrap();
        assert!(n > 0, "the stream ended: {}", String::from_utf8_lossy(&got));
        got.extend_from_slice(&buf[..n]);
    }
    String::from_utf8_lossy(&got).into_owned()
}

/// A `zurg run` as PID 1 publishing to `publish` (an address or a list),
/// with 127.0.0.1 as its host address and each of `services` a sleeper on
/// port 8080.
pub fn publishing_host(tag: &str, services: &[&str], publish: &str) -> (TempDir, Zurg) {
    let dir = TempDir::new(tag);
    for name in services {
        dir.write(
            &format!("units/{name}.toml"),
            "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nport = 8080\n",
        );
    }
    let z = super::run_in(
        &dir,
        Mode::Pid1,
        &["--publish", publish, "--host-ip", "127.0.0.1"],
    );
    (dir, z)
}
