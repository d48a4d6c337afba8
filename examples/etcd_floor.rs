//! bench/naming.py --etcd: etcd's own put -> watch latency, the floor for
//! zurg's figure through etcd. Two roles, each its own process, with the
//! etcd-client crate zurg's etcd store uses:
//!
//! - `etcd_floor put URL PREFIX`: reads a pid per line on stdin, opens a
//!   pidfd on it, prints `armed`, waits for the pidfd to turn readable (the
//!   process died) and puts `PREFIX/N` (a small JSON value, as zurg's keys
//!   hold). Like the publisher, it keeps one client and one HTTP/2 channel.
//! - `etcd_floor watch URL PREFIX`: watches the prefix, prints `ready` once
//!   the watch is created, then one line per event.
//!
//! So the chain is kill -> pidfd -> put -> etcd commits -> the watch stream
//! -> a line on a pipe, the shape of zurg's (kill -> reap -> forwarder ->
//! publisher's put -> the publisher's watch -> `resolve --watch`'s line)
//! with zurg's two extra process hops left out.
//!
//! Usage: cargo build --release --features etcd --example etcd_floor
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::{BufRead, Write};
use std::os::fd::AsFd;

use etcd_client::{Client, WatchOptions};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use zurg::os::pidfd::PidFd;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (role, url, prefix) = match args.as_slice() {
        [_, role, url, prefix] => (role.as_str(), url.clone(), prefix.clone()),
        _ => {
            eprintln!("usage: etcd_floor put|watch URL PREFIX");
            std::process::exit(2);
        }
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a tokio runtime");
    let mut client = runtime
        .block_on(Client::connect([url.as_str()], None))
        .expect("connect to etcd");
    let mut out = std::io::stdout().lock();
    match role {
        "put" => {
            let value = br#"{"service":"s0","ip":"127.0.0.1","port":10000,"gpid":"127.0.0.1:10000:1764000000000000:1","version":"","since_us":1764000000000000,"host":"127.0.0.1:0:1764000000000000:1"}"#;
            let stdin = std::io::stdin();
            for (n, line) in stdin.lock().lines().enumerate() {
                let pid: i32 = line.expect("a line").trim().parse().expect("a pid");
                let fd = PidFd::open(pid).expect("pidfd_open");
                writeln!(out, "armed").expect("stdout");
                out.flush().expect("stdout");
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                poll(&mut fds, PollTimeout::NONE).expect("poll");
                runtime
                    .block_on(client.put(format!("{prefix}/{n}"), value.as_slice(), None))
                    .expect("put");
            }
        }
        "watch" => runtime.block_on(async {
            let mut stream = client
                .watch(prefix.as_str(), Some(WatchOptions::new().with_prefix()))
                .await
                .expect("watch");
            writeln!(out, "ready").expect("stdout");
            out.flush().expect("stdout");
            while let Some(resp) = stream.message().await.expect("watch stream") {
                for event in resp.events() {
                    let key = event
                        .kv()
                        .map(|kv| kv.key_str().unwrap_or("?"))
                        .unwrap_or("?");
                    writeln!(out, "{key}").expect("stdout");
                }
                out.flush().expect("stdout");
            }
        }),
        other => {
            eprintln!("etcd_floor: no role {other}: put or watch");
            std::process::exit(2);
        }
    }
}
