//! bench/hash: zurg's checksum of a file (the code that runs before every
//! start of a checksummed unit). Usage: hash_bench FILE md5|sha256 ROUNDS
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::Instant;

fn main() {
    let args: Vec<String> = std::env::args().collect();
    let path = args
        .get(1)
        .expect("usage: hash_bench FILE md5|sha256 ROUNDS");
    let kind = args.get(2).map_or("md5", String::as_str);
    let rounds: usize = args.get(3).and_then(|r| r.parse().ok()).unwrap_or(5);
    let like =
        zurg::version::Checksum::parse(kind, &"0".repeat(if kind == "md5" { 32 } else { 64 }))
            .unwrap();
    let mut best = f64::MAX;
    let mut sum = String::new();
    for _ in 0..rounds {
        let mut f = std::fs::File::open(path).unwrap();
        let t = Instant::now();
        sum = zurg::version::digest(&mut f, &like).unwrap().to_string();
        best = best.min(t.elapsed().as_secs_f64());
    }
    println!("{sum} {best:.4}");
}
