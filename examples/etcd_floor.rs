//! bench/naming.py --etcd: etcd's own put -> watch latency, the floor for
//! zurg's figure through etcd. Two roles, each its own process, with the
//! etcd-client crate zurg's etcd store uses:
//!
//! - `etcd_floor put URL PREFIX`: reads a pid per line on stdin, opens a
//!   pidfd on it, prints `armed`, waits for the pidfd to turn readable (the
//!   process died) and puts `PREFIX/N` (a small JSON value, as zurg's keys
//!   hold). Like the publisher, it keeps one client and one HTTP/2 channel.
//! - `etcd_floor txn URL PREFIX`: the same, but each death writes what
//!   zurg's etcd store writes for an exit: one transaction, guarded by the
//!   host key's mod_revision, that deletes the endpoint key and puts the
//!   host record, both on a lease. It tells etcd's cost of zurg's
//!   transaction from zurg's own hops.
//! - `etcd_floor watch URL PREFIX`: watches `PREFIX/`, prints `ready` once
//!   the watch is created, then one line per event, `put KEY` or
//!   `delete KEY`.
//!
//! - `etcd_floor answer URL N`: one client puts N keys one after another
//!   and watches them, as a publisher does, and prints how much later than
//!   etcd's answer the watch brings each put back.
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

use etcd_client::{Client, Compare, CompareOp, EventType, PutOptions, Txn, TxnOp, WatchOptions};
use nix::poll::{poll, PollFd, PollFlags, PollTimeout};
use zurg::os::pidfd::PidFd;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let (role, url, prefix) = match args.as_slice() {
        [_, role, url, prefix] => (role.as_str(), url.clone(), prefix.clone()),
        _ => {
            eprintln!("usage: etcd_floor put|txn|watch URL PREFIX");
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
        "put" | "txn" => {
            let value = br#"{"service":"s0","ip":"127.0.0.1","port":10000,"gpid":"127.0.0.1:10000:1764000000000000:1","version":"","since_us":1764000000000000,"host":"127.0.0.1:0:1764000000000000:1"}"#;
            let record = br#"{"info":{"zurg":"127.0.0.1:0:1764000000000000:1","ip":"127.0.0.1","boot":"7c035e25-e063-4df8-9770-2b2b2b2b2b2b","hostname":"bench","seq":1,"applied":1,"duplicates":0,"gaps":0,"connected":true,"endpoints":0},"lease":7587890000000000000,"why":{"reason":"exit","exit":{"signal":"SIGKILL"}}}"#;
            let host = format!("{prefix}-host");
            let (lease, mut rev) = if role == "txn" {
                let lease = runtime
                    .block_on(client.lease_grant(60, None))
                    .expect("lease")
                    .id();
                let put = PutOptions::new().with_lease(lease);
                let resp = runtime
                    .block_on(client.put(host.as_str(), record.as_slice(), Some(put)))
                    .expect("put the host");
                (lease, resp.header().map_or(0, |h| h.revision()))
            } else {
                (0, 0)
            };
            let stdin = std::io::stdin();
            for (n, line) in stdin.lock().lines().enumerate() {
                let pid: i32 = line.expect("a line").trim().parse().expect("a pid");
                let fd = PidFd::open(pid).expect("pidfd_open");
                let key = format!("{prefix}/{n}");
                if role == "txn" {
                    // The endpoint the exit deletes, as zurg's start put it.
                    let put = PutOptions::new().with_lease(lease);
                    runtime
                        .block_on(client.put(key.as_str(), value.as_slice(), Some(put)))
                        .expect("put the endpoint");
                }
                writeln!(out, "armed").expect("stdout");
                out.flush().expect("stdout");
                let mut fds = [PollFd::new(fd.as_fd(), PollFlags::POLLIN)];
                poll(&mut fds, PollTimeout::NONE).expect("poll");
                if role == "put" {
                    runtime
                        .block_on(client.put(key, value.as_slice(), None))
                        .expect("put");
                    continue;
                }
                let put = PutOptions::new().with_lease(lease);
                let txn = Txn::new()
                    .when([Compare::mod_revision(host.as_str(), CompareOp::Equal, rev)])
                    .and_then([
                        TxnOp::delete(key.as_str(), None),
                        TxnOp::put(host.as_str(), record.as_slice(), Some(put)),
                    ]);
                let resp = runtime.block_on(client.txn(txn)).expect("txn");
                assert!(resp.succeeded(), "the host key changed under the floor");
                rev = resp.header().map_or(0, |h| h.revision());
            }
        }
        "watch" => runtime.block_on(async {
            // `PREFIX/`: the txn role's host key, `PREFIX-host`, is not
            // watched, as zurg's watchers read endpoints.
            let mut stream = client
                .watch(
                    format!("{prefix}/"),
                    Some(WatchOptions::new().with_prefix()),
                )
                .await
                .expect("watch");
            writeln!(out, "ready").expect("stdout");
            out.flush().expect("stdout");
            while let Some(resp) = stream.message().await.expect("watch stream") {
                for event in resp.events() {
                    let kind = match event.event_type() {
                        EventType::Put => "put",
                        EventType::Delete => "delete",
                    };
                    let key = event.kv().and_then(|kv| kv.key_str().ok()).unwrap_or("?");
                    writeln!(out, "{kind} {key}").expect("stdout");
                }
                out.flush().expect("stdout");
            }
        }),
        "answer" => runtime.block_on(async {
            // One client that writes and watches, as a publisher does:
            // how much sooner etcd's answer to a put arrives than the
            // watch's copy of it. `PREFIX` here is a count of puts.
            let n: usize = prefix.parse().expect("a count");
            let mut stream = client
                .watch("/answer/", Some(WatchOptions::new().with_prefix()))
                .await
                .expect("watch");
            // The watch runs as its own task on the same thread, as the
            // publisher's does, stamping when each response arrives.
            let (tx, mut rx) = tokio::sync::mpsc::unbounded_channel();
            tokio::spawn(async move {
                while let Ok(Some(m)) = stream.message().await {
                    if !m.events().is_empty() && tx.send(std::time::Instant::now()).is_err() {
                        return;
                    }
                }
            });
            let mut answer_us = Vec::with_capacity(n);
            let mut watch_us = Vec::with_capacity(n);
            for i in 0..n {
                let t0 = std::time::Instant::now();
                client
                    .put(format!("/answer/{i}"), "x", None)
                    .await
                    .expect("put");
                answer_us.push(t0.elapsed().as_micros());
                let at = rx.recv().await.expect("the watch ended");
                watch_us.push(at.duration_since(t0).as_micros());
            }
            let pct = |v: &mut Vec<u128>, p: usize| {
                v.sort_unstable();
                v[(v.len() * p / 100).min(v.len() - 1)]
            };
            let mut later: Vec<i128> = watch_us
                .iter()
                .zip(&answer_us)
                .map(|(w, a)| *w as i128 - *a as i128)
                .collect();
            later.sort_unstable();
            let first = later.iter().filter(|d| **d > 0).count();
            writeln!(
                out,
                "put -> answer p50 {} p99 {}; put -> watch p50 {} p99 {}; \
                 watch later than the answer: p50 {} p99 {} µs, in {first} of {n}",
                pct(&mut answer_us, 50),
                pct(&mut answer_us, 99),
                pct(&mut watch_us, 50),
                pct(&mut watch_us, 99),
                later[n / 2],
                later[(n * 99 / 100).min(n - 1)],
            )
            .expect("stdout");
        }),
        other => {
            eprintln!("etcd_floor: no role {other}: put, txn, watch or answer");
            std::process::exit(2);
        }
    }
}
