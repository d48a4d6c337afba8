//! bench/stats: zurg's /proc readers over N processes against a minimal
//! hand-written read of the same files (open + read, std only, no parsing).
//! Usage: cargo run --release --example stats_bench [N]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::io::Read;
use std::process::{Child, Command};
use std::time::Instant;

fn hand_read(pid: u32, buf: &mut Vec<u8>) -> usize {
    let mut total = 0;
    for f in ["stat", "status", "smaps_rollup", "io"] {
        buf.clear();
        if let Ok(mut file) = std::fs::File::open(format!("/proc/{pid}/{f}")) {
            total += file.read_to_end(buf).unwrap_or(0);
        }
    }
    total + std::fs::read_dir(format!("/proc/{pid}/fd")).map_or(0, |d| d.count())
}

fn main() {
    let n: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(1000);
    let mut kids: Vec<Child> = (0..n)
        .map(|_| Command::new("sleep").arg("600").spawn().unwrap())
        .collect();
    let pids: Vec<u32> = kids.iter().map(|k| k.id()).collect();
    let mut buf = Vec::with_capacity(8192);
    // warm the dentry cache, then alternate rounds, best of each
    for &p in &pids {
        hand_read(p, &mut buf);
    }
    let (mut best_zurg, mut best_hand) = (f64::MAX, f64::MAX);
    for _ in 0..7 {
        let t = Instant::now();
        let mut rss = 0;
        for &p in &pids {
            rss += zurg::stats::sample_pid(p as i32, 0).map_or(0, |s| s.rss_kb);
        }
        best_zurg = best_zurg.min(t.elapsed().as_secs_f64());
        let t = Instant::now();
        let mut bytes = 0;
        for &p in &pids {
            bytes += hand_read(p, &mut buf);
        }
        best_hand = best_hand.min(t.elapsed().as_secs_f64());
        assert!(rss > 0 && bytes > 0);
    }
    for k in &mut kids {
        let _ = k.kill();
        let _ = k.wait();
    }
    println!(
        "stats over {n} processes: zurg {:.1} ms, hand-written read {:.1} ms, ratio {:.2}x",
        best_zurg * 1e3,
        best_hand * 1e3,
        best_zurg / best_hand
    );
}
