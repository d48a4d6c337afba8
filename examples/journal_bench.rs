//! The event loop's cost per journal record: appending it itself (as zurg
//! did before the writer thread) against handing it to the writer thread
//! (`JournalWriter::send`), and the thread's time until all are written.
//! Figures in docs/performance.md ("Journal appends leave the loop").
//! Usage: cargo run --release --example journal_bench [RECORDS]
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::time::{Duration, Instant};

use zurg::control::proto::ExitInfo;
use zurg::journal::{self, Journal, Kind, Record};
use zurg::journal_writer::JournalWriter;

fn record(i: u64) -> Record {
    Record {
        time_us: 1_000 + i,
        service: format!("service-{}", i % 50),
        kind: if i.is_multiple_of(2) {
            Kind::Start
        } else {
            Kind::Exit
        },
        gpid: format!("10.0.0.7:8080:{}:{}", 1_000 + i, 10 + i),
        exit: (i % 2 == 1).then_some(ExitInfo {
            code: Some(1),
            signal: None,
            oom: false,
        }),
        ..Default::default()
    }
}

fn fresh_dir(tag: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("zurg-journal-bench-{tag}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn main() {
    // Under the writer's queue bound (QUEUE_RECORDS): nothing is dropped.
    let n: u64 = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(10_000)
        .min(zurg::journal_writer::QUEUE_RECORDS as u64);
    let records: Vec<Record> = (0..n).map(record).collect();
    let per = |d: Duration| d.as_secs_f64() * 1e6 / n as f64;

    let dir = fresh_dir("inline");
    let (mut j, _) = Journal::open(&dir, 64 << 20).unwrap();
    let t = Instant::now();
    for r in &records {
        let _ = j.append(r);
    }
    let inline = t.elapsed();
    std::fs::remove_dir_all(&dir).unwrap();

    let dir = fresh_dir("thread");
    let (j, _) = Journal::open(&dir, 64 << 20).unwrap();
    let mut w = JournalWriter::start(j, "journal-bench", "journal");
    let t = Instant::now();
    for r in &records {
        w.send(r);
    }
    let queued = t.elapsed();
    w.flush(Duration::from_secs(60));
    let written = t.elapsed();
    let kept = journal::read_all(&dir).0.len() as u64;
    std::fs::remove_dir_all(&dir).unwrap();
    println!(
        "{n} records: append on the loop {:.2} µs each; send to the thread {:.2} µs each on the loop ({:.2} µs each until written; {kept} of {n} in the journal)",
        per(inline),
        per(queued),
        per(written)
    );
}
