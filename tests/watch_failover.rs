//! `zurg resolve --publisher P1,P2`: a watch follows a list of publishers
//! as a host's forwarder does. When P1 stops (SIGTERM: it says so) the
//! watcher and the host move to P2 at once; when P1 dies (SIGKILL) they
//! move after their backoff. Either way the watch lists again on P2 and
//! then prints each later change exactly once. One-shot verbs try the next
//! address when one cannot be reached; a bad list is a usage error naming
//! the bad entry.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::{Child, Command, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

use common::naming::*;
use common::*;
use serde_json::Value;

/// How soon the host and the watcher must be on P2: generous for a loaded
/// machine, far below the 10 s lease after which a silent publisher is
/// given up.
const MOVE_BOUND: Duration = Duration::from_secs(2);

/// `zurg resolve ARGS --watch --publisher LIST`, stdout and stderr apart.
struct ListWatcher {
    child: Child,
    out: Receiver<String>,
    err: Receiver<String>,
    /// Every stdout line read so far, in order.
    seen: Vec<String>,
    /// Every stderr line read so far.
    said: Vec<String>,
}

impl ListWatcher {
    fn start(list: &str, args: &[&str]) -> ListWatcher {
        let mut child = Command::new(BIN)
            .arg("resolve")
            .args(args)
            .args(["--watch", "--publisher", list])
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let out = lines_of(child.stdout.take().unwrap());
        let err = lines_of(child.stderr.take().unwrap());
        ListWatcher {
            child,
            out,
            err,
            seen: Vec::new(),
            said: Vec::new(),
        }
    }

    /// Reads stdout until a line matches `pred`; returns it.
    fn until(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.out.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return line;
                    }
                }
                Err(RecvTimeoutError::Timeout) => panic!(
                    "timed out waiting for {what}; the watch printed:\n{}\nstderr:\n{}",
                    self.seen.join("\n"),
                    self.stderr_now().join("\n")
                ),
                Err(RecvTimeoutError::Disconnected) => panic!(
                    "the watch ended waiting for {what}; it printed:\n{}",
                    self.seen.join("\n")
                ),
            }
        }
    }

    fn until_json(&mut self, what: &str, pred: impl Fn(&Value) -> bool) -> Value {
        let line = self.until(what, |l| {
            let v: Value = serde_json::from_str(l)
                .unwrap_or_else(|e| panic!("watch printed non-JSON {l:?}: {e}"));
            pred(&v)
        });
        serde_json::from_str(&line).unwrap()
    }

    /// Waits for a stderr line containing `needle`.
    fn says(&mut self, needle: &str) -> String {
        let deadline = Instant::now() + DEADLINE;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.err.recv_timeout(left) {
                Ok(line) => {
                    self.said.push(line.clone());
                    if line.contains(needle) {
                        return line;
                    }
                }
                Err(_) => panic!(
                    "the watch never said {needle:?} on stderr; it said:\n{}",
                    self.said.join("\n")
                ),
            }
        }
    }

    fn stderr_now(&mut self) -> Vec<String> {
        self.said.extend(self.err.try_iter());
        self.said.clone()
    }
}

impl Drop for ListWatcher {
    fn drop(&mut self) {
        kill(self.child.id() as i32, 9);
        let _ = self.child.wait();
    }
}

fn host(tag: &str, publish: &str) -> (TempDir, Zurg) {
    publishing_host(tag, &["alpha", "marker"], publish)
}

fn listed(addr: &str, name: &str) -> Option<String> {
    let v = resolve(None, addr, &[name]);
    v["endpoints"][0]["gpid"].as_str().map(str::to_string)
}

/// P1 goes away by `signo` (15: it says it is stopping; 9: it just dies)
/// while a host and two watchers (one `--all --json`, one of a name in
/// text) use `P1,P2`; all of them end up on P2, and a service killed there
/// shows in both watchers as one down and one up.
fn watchers_follow_the_host_to_p2(signo: i32, tag: &str, publisher_args: &[&str]) {
    let mut p1 = Publisher::start(None, publisher_args);
    let mut p2 = Publisher::start(None, publisher_args);
    let list = format!("{},{}", p1.addr, p2.addr);
    let (dir, mut h) = host(&format!("wf-{tag}"), &list);
    eventually("alpha and marker listed on P1", || {
        listed(&p1.addr, "alpha").is_some() && listed(&p1.addr, "marker").is_some()
    });
    let before = gpid_of(&dir, "alpha");

    let mut all = ListWatcher::start(&list, &["--all", "--json"]);
    all.until_json("P1's listing", |v| v["t"] == "synced");
    let mut text = ListWatcher::start(&list, &["alpha"]);
    let first = text.until("alpha live on P1", |l| l.starts_with("live alpha "));
    assert!(first.ends_with(&before), "{first}");

    let t0 = Instant::now();
    kill(p1.z.child.id() as i32, signo);
    if signo == 9 {
        let _ = p1.z.child.wait();
    }

    // The watchers list again on P2: a second `synced`, a second `live`
    // line or the host's arrival there as an `up`.
    all.until_json("P2's listing", |v| v["t"] == "synced");
    let watcher_moved = t0.elapsed();
    for w in [&mut all, &mut text] {
        let said = w.says(&format!("moving to {}", p2.addr));
        assert!(said.contains(&p1.addr), "{said}");
        if signo == 15 {
            assert!(
                said.contains("is stopping") && said.ends_with(" now"),
                "no backoff after a stopping publisher: {said}"
            );
        } else {
            assert!(said.ends_with(" in 100 ms"), "{said}");
        }
    }
    h.expect(&format!("publisher {}: connected", p2.addr));
    let host_moved = t0.elapsed();
    eventually("the host listed on P2", || {
        listed(&p2.addr, "alpha").is_some()
    });
    eprintln!(
        "{tag}: watcher on P2 {} ms, host {} ms after the signal",
        watcher_moved.as_millis(),
        host_moved.as_millis()
    );
    assert!(
        watcher_moved < MOVE_BOUND && host_moved < MOVE_BOUND,
        "watcher {watcher_moved:?}, host {host_moved:?} to reach P2 (bound {MOVE_BOUND:?})"
    );
    if signo == 15 {
        h.saw("is stopping");
    }
    // Each watcher knows alpha's process on P2 once: in P2's listing if the
    // host got there first, else from the host's snapshot.
    let p2_listing = all
        .seen
        .iter()
        .rposition(|l| l.starts_with(r#"{"t":"hosts""#))
        .unwrap();
    let in_listing = all.seen[p2_listing..]
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .find(|v| v["t"] == "endpoints" && v["name"] == "alpha");
    let known = match in_listing {
        Some(v) => v["endpoints"][0]["gpid"].clone(),
        None => all.until_json("alpha up on P2", |v| is_change(v, "up", "alpha"))["endpoint"]
            ["gpid"]
            .clone(),
    };
    assert_eq!(known, before.as_str());
    let line = text.until("alpha on P2", |l| {
        l.starts_with("live alpha ") || l.starts_with("up   alpha ")
    });
    assert!(line.contains(&before), "{line}");
    let (all_mark, text_mark) = (all.seen.len(), text.seen.len());

    // Killed on P2's watch: one down, one up, and nothing else of alpha
    // until the marker's restart, which comes after them.
    assert!(cli(&dir, &["signal", "alpha", "KILL"]).status.success());
    let up = all.until_json("alpha up again", |v| is_change(v, "up", "alpha"));
    let after = up["endpoint"]["gpid"].as_str().unwrap().to_string();
    assert_ne!(after, before, "a restart has a new GPID");
    text.until("alpha up again in text", |l| l.starts_with("up   alpha "));
    assert!(cli(&dir, &["restart", "marker"]).status.success());
    all.until_json("marker up again", |v| is_change(v, "up", "marker"));

    let alpha: Vec<Value> = all.seen[all_mark..]
        .iter()
        .map(|l| serde_json::from_str::<Value>(l).unwrap())
        .filter(|v| v.to_string().contains("\"alpha\""))
        .collect();
    assert_eq!(alpha.len(), 2, "alpha on P2 after the kill: {alpha:#?}");
    assert!(is_change(&alpha[0], "down", "alpha"), "{}", alpha[0]);
    assert_eq!(alpha[0]["endpoint"]["gpid"], before.as_str());
    assert_eq!(alpha[0]["exit"]["signal"], "SIGKILL");
    assert!(is_change(&alpha[1], "up", "alpha"), "{}", alpha[1]);
    assert_eq!(alpha[1]["endpoint"]["gpid"], after.as_str());
    assert_eq!(alpha[1]["reason"], "start");
    assert_eq!(gpid_of(&dir, "alpha"), after);

    let text_said = text.stderr_now();
    let text_after = &text.seen[text_mark..];
    assert_eq!(
        text_after.len(),
        2,
        "after the kill: {text_after:#?}\nall it printed: {:#?}\nstderr: {:#?}\nP2: {:#?}\nhost: {:#?}\nall: {:#?}",
        text.seen,
        text_said,
        p2.z.lines_now(),
        h.lines_now(),
        all.seen,
    );
    assert!(
        text_after[0].starts_with("down alpha ") && text_after[0].contains(&before),
        "{text_after:?}"
    );
    assert!(
        text_after[1].starts_with("up   alpha ") && text_after[1].contains(&after),
        "{text_after:?}"
    );
    // The text watcher follows one name, so alpha's own restart is its end
    // mark: the next line it prints is that restart's down, with nothing
    // of alpha (a late duplicate) before it.
    assert!(cli(&dir, &["restart", "alpha"]).status.success());
    let down = text.until("alpha's restart", |l| l.starts_with("down alpha "));
    assert_eq!(
        text.seen.len(),
        text_mark + 3,
        "{:#?}",
        &text.seen[text_mark..]
    );
    assert!(down.contains(&after), "{down}");
}

#[test]
fn sigterm_of_the_first_publisher_moves_the_watch_to_the_next_at_once() {
    watchers_follow_the_host_to_p2(15, "term", &[]);
}

#[test]
fn a_publisher_that_dies_is_left_for_the_next_after_the_backoff() {
    watchers_follow_the_host_to_p2(9, "kill", &[]);
}

/// On etcd both publishers hold the whole registry: P2's listing already
/// has the host, and its move there changes nothing a watcher sees.
#[cfg(feature = "etcd")]
#[test]
fn on_etcd_the_watch_moves_too_and_sees_each_change_once() {
    let Some(etcd) = common::etcd::Etcd::start("wf-etcd", None) else {
        return;
    };
    watchers_follow_the_host_to_p2(15, "etcd-term", &["--etcd", etcd.url.as_str()]);
    watchers_follow_the_host_to_p2(
        9,
        "etcd-kill",
        &["--etcd", etcd.url.as_str(), "--prefix", "/zurg-kill"],
    );
}

#[test]
fn one_shot_verbs_try_the_next_publisher() {
    let p = Publisher::start(None, &[]);
    let dead = format!("127.0.0.1:{}", free_port());
    let (_dir, _h) = host("wf-oneshot", &p.addr);
    eventually("alpha listed", || listed(&p.addr, "alpha").is_some());
    let out = resolve_raw(None, &format!("{dead},{}", p.addr), &["alpha"]);
    assert_eq!(out.status.code(), Some(0), "{out:?}");
    let v: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["endpoints"].as_array().unwrap().len(), 1, "{v}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains(&format!("publisher {dead}: ")) && err.contains(&format!("trying {}", p.addr)),
        "{err}"
    );
    // None answers: each one's reason.
    let other = format!("127.0.0.1:{}", free_port());
    let out = resolve_raw(None, &format!("{dead},{other}"), &["alpha"]);
    assert_eq!(out.status.code(), Some(3), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("no publisher answered") && err.contains(&dead) && err.contains(&other),
        "{err}"
    );
}

#[test]
fn a_bad_publisher_list_is_a_usage_error_naming_the_entry() {
    let cases: [(&[&str], &str); 4] = [
        (
            &["resolve", "web", "--publisher", "127.0.0.1:1,nope"],
            "\"nope\" is not HOST:PORT",
        ),
        (
            &[
                "resolve",
                "--all",
                "--watch",
                "--publisher",
                "127.0.0.1:1,,127.0.0.1:2",
            ],
            "entry 2 is empty",
        ),
        (
            &["history", "--publisher", "127.0.0.1:1,h:99999"],
            "\"h:99999\" is not HOST:PORT",
        ),
        (
            &["--publisher", "a:1,b", "--host", "h", "restart", "web"],
            "\"b\" is not HOST:PORT",
        ),
    ];
    for (args, needle) in cases {
        let out = Command::new(BIN)
            .args(args)
            .env_remove("ZURG_PUBLISHER")
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let err = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {err}");
        assert!(err.contains(needle), "{args:?}: {err}");
    }
    let out = Command::new(BIN)
        .args(["resolve", "web"])
        .env("ZURG_PUBLISHER", "x")
        .stdin(Stdio::null())
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{err}");
    assert!(
        err.contains("$ZURG_PUBLISHER") && err.contains("\"x\""),
        "{err}"
    );
}
