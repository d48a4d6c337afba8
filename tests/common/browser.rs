//! Headless Chromium driven over the DevTools protocol on a pipe
//! (`--remote-debugging-pipe`: it reads fd 3 and writes fd 4, one JSON
//! message per NUL-terminated chunk), so a test reads the page's DOM as a
//! user sees it, with neither a websocket client nor pixels.

use std::io::{Read, Write};
use std::process::{Child, ChildStdin, Stdio};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use serde_json::{json, Value};

use super::naming::command_in;
use super::{kill, TempDir, DEADLINE};

/// How long Chromium may take to answer its first DevTools call, its
/// start-up. Not zurg's time: three Chromiums started at once on this
/// machine took 21.2 s each to answer `Target.getTargets` (the same three
/// started again: 0.6-1.3 s); their first log line came ~20 s after the
/// exec, so the wait is inside Chromium's own start, before any page. The
/// suite's DEADLINE (15 s) failed status_page tests now and then on it.
const STARTUP: Duration = Duration::from_secs(60);

pub struct Browser {
    child: Child,
    to: ChildStdin,
    from: Receiver<Value>,
    next_id: u64,
    session: String,
    _profile: TempDir,
}

/// Fails (never skips) without Chromium: scripts/test installs it.
fn chromium() -> &'static str {
    let found = std::process::Command::new("sh")
        .args(["-c", "command -v chromium"])
        .output()
        .is_ok_and(|o| o.status.success());
    assert!(
        found,
        "chromium is not installed: `apt-get install chromium` (scripts/test does)"
    );
    "chromium"
}

impl Browser {
    /// Chromium (inside network namespace `ns`, when given) with one tab
    /// on `url`, attached to.
    pub fn open(ns: Option<&str>, url: &str) -> Browser {
        let profile = TempDir::new("chromium");
        // sh moves the pipes to fds 3 and 4, where Chromium wants them.
        let script = format!(
            "exec {} --headless=new --no-sandbox --disable-gpu --disable-dev-shm-usage \
             --no-first-run --no-default-browser-check --disable-extensions \
             --remote-debugging-pipe --user-data-dir={} --window-size=1200,800 '{url}' \
             3<&0 4>&1 0</dev/null 1>/dev/null 2>/dev/null",
            chromium(),
            profile.path().display()
        );
        let mut child = command_in(ns, "sh")
            .args(["-c", &script])
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let to = child.stdin.take().unwrap();
        let mut out = child.stdout.take().unwrap();
        let (tx, from) = channel();
        std::thread::spawn(move || {
            let mut pending = Vec::new();
            let mut buf = [0u8; 64 * 1024];
            loop {
                let n = match out.read(&mut buf) {
                    Ok(0) | Err(_) => return,
                    Ok(n) => n,
                };
                pending.extend_from_slice(&buf[..n]);
                while let Some(end) = pending.iter().position(|b| *b == 0) {
                    let msg: Vec<u8> = pending.drain(..=end).collect();
                    if let Ok(v) = serde_json::from_slice::<Value>(&msg[..msg.len() - 1]) {
                        if tx.send(v).is_err() {
                            return;
                        }
                    }
                }
            }
        });
        let mut b = Browser {
            child,
            to,
            from,
            next_id: 0,
            session: String::new(),
            _profile: profile,
        };
        let deadline = Instant::now() + STARTUP;
        let target = loop {
            let targets = b.call_within("Target.getTargets", json!({}), STARTUP);
            let page = targets["targetInfos"]
                .as_array()
                .unwrap()
                .iter()
                .find(|t| t["type"] == "page")
                .map(|t| t["targetId"].as_str().unwrap().to_string());
            if let Some(id) = page {
                break id;
            }
            assert!(Instant::now() < deadline, "Chromium opened no tab");
            std::thread::sleep(Duration::from_millis(50));
        };
        let attached = b.call(
            "Target.attachToTarget",
            json!({"targetId": target, "flatten": true}),
        );
        b.session = attached["sessionId"].as_str().unwrap().to_string();
        b
    }

    fn send(&mut self, method: &str, params: Value) -> u64 {
        self.next_id += 1;
        let mut msg = json!({"id": self.next_id, "method": method, "params": params});
        if !self.session.is_empty() {
            msg["sessionId"] = json!(self.session);
        }
        let mut bytes = serde_json::to_vec(&msg).unwrap();
        bytes.push(0);
        self.to.write_all(&bytes).unwrap();
        self.next_id
    }

    /// One DevTools call, its result; events in between are skipped.
    pub fn call(&mut self, method: &str, params: Value) -> Value {
        self.call_within(method, params, DEADLINE)
    }

    fn call_within(&mut self, method: &str, params: Value, within: Duration) -> Value {
        let id = self.send(method, params);
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.from.recv_timeout(left) {
                Ok(v) if v["id"] == id => {
                    assert!(v.get("error").is_none(), "{method}: {v}");
                    return v["result"].clone();
                }
                Ok(_) => {}
                Err(RecvTimeoutError::Timeout) => panic!("Chromium did not answer {method}"),
                Err(RecvTimeoutError::Disconnected) => panic!("Chromium exited during {method}"),
            }
        }
    }

    /// Evaluates a JavaScript expression in the page; its value.
    pub fn eval(&mut self, expr: &str) -> Value {
        let r = self.call(
            "Runtime.evaluate",
            json!({"expression": expr, "returnByValue": true}),
        );
        r["result"]["value"].clone()
    }
}

impl Drop for Browser {
    fn drop(&mut self) {
        self.session.clear();
        self.send("Browser.close", json!({}));
        let deadline = Instant::now() + Duration::from_secs(5);
        while Instant::now() < deadline {
            if let Ok(Some(_)) = self.child.try_wait() {
                return;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        kill(self.child.id() as i32, 9);
        let _ = self.child.wait();
    }
}
