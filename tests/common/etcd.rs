//! A single-member etcd (`/usr/bin/etcd`, Debian's etcd-server) for tests:
//! random loopback ports, optionally inside a network namespace, killed on
//! drop.

use std::path::Path;
use std::process::{Child, Stdio};
use std::time::{Duration, Instant};

use super::naming::{command_in, free_port};
use super::{kill, TempDir, DEADLINE};

pub const ETCD: &str = "/usr/bin/etcd";

pub struct Etcd {
    child: Child,
    pub url: String,
    peer_url: String,
    ns: Option<String>,
    dir: TempDir,
}

impl Etcd {
    /// `None` (after a loud SKIP) when etcd is not installed.
    pub fn start(tag: &str, ns: Option<&str>) -> Option<Etcd> {
        if !Path::new(ETCD).exists() {
            super::skip(
                &format!("etcd test {tag}"),
                &format!("{ETCD} is not installed (apt-get install etcd-server)"),
            );
            return None;
        }
        let dir = TempDir::new(tag);
        // Free in this namespace; a fresh namespace has every port free.
        let url = format!("http://127.0.0.1:{}", free_port());
        let peer_url = format!("http://127.0.0.1:{}", free_port());
        let ns = ns.map(str::to_string);
        let child = Etcd::spawn(&dir, &url, &peer_url, ns.as_deref());
        let etcd = Etcd {
            child,
            url,
            peer_url,
            ns,
            dir,
        };
        etcd.wait_ready();
        Some(etcd)
    }

    fn spawn(dir: &TempDir, url: &str, peer_url: &str, ns: Option<&str>) -> Child {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(dir.path().join("etcd.log"))
            .unwrap();
        command_in(ns, ETCD)
            .args(["--name", "default", "--data-dir"])
            .arg(dir.path().join("data"))
            .args(["--listen-client-urls", url, "--advertise-client-urls", url])
            .args(["--listen-peer-urls", peer_url])
            .args(["--initial-advertise-peer-urls", peer_url])
            .arg("--initial-cluster")
            .arg(format!("default={peer_url}"))
            .stdin(Stdio::null())
            .stdout(log.try_clone().unwrap())
            .stderr(log)
            .spawn()
            .unwrap()
    }

    /// Waits for etcd's own word that it serves clients: a connect from
    /// here would not reach into another network namespace.
    fn wait_ready(&self) {
        let deadline = Instant::now() + DEADLINE;
        let serving = || {
            let log = self.log();
            log.matches("ready to serve client requests").count() > self.restarts()
        };
        while !serving() {
            assert!(
                Instant::now() < deadline,
                "etcd never became ready:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// How many times this member was restarted (its log is appended to).
    fn restarts(&self) -> usize {
        self.log().matches("--- restart ---").count()
    }

    pub fn stop(&mut self) {
        kill(self.child.id() as i32, 9);
        let _ = self.child.wait();
    }

    /// SIGKILL, then the same member again on the same ports and data.
    pub fn restart(&mut self) {
        self.stop();
        let _ = std::fs::OpenOptions::new()
            .append(true)
            .open(self.dir.path().join("etcd.log"))
            .and_then(|mut f| std::io::Write::write_all(&mut f, b"--- restart ---\n"));
        self.child = Etcd::spawn(&self.dir, &self.url, &self.peer_url, self.ns.as_deref());
        self.wait_ready();
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("etcd.log")).unwrap_or_default()
    }
}

impl Drop for Etcd {
    fn drop(&mut self) {
        self.stop();
    }
}
