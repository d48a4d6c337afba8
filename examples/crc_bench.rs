//! bench/crc.sh: the journal's CRC-32 over 16 MiB, the table-driven form the
//! journal had against crc32fast (what it uses now), and a whole read of a
//! 16 MiB journal through `journal::read_all`, and a `Journal::open` of its
//! 8 MiB current file. Best of ROUNDS, in ms.
//! Usage: crc_bench [ROUNDS]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::time::Instant;

/// The journal's CRC before crc32fast, kept here to compare against.
const TABLE: [u32; 256] = {
    let mut table = [0u32; 256];
    let mut i = 0;
    while i < 256 {
        let mut crc = i as u32;
        let mut bit = 0;
        while bit < 8 {
            let mask = (crc & 1).wrapping_neg();
            crc = (crc >> 1) ^ (0xEDB8_8320 & mask);
            bit += 1;
        }
        table[i] = crc;
        i += 1;
    }
    table
};

fn table_crc32(data: &[u8]) -> u32 {
    let mut crc = !0u32;
    for &b in data {
        crc = (crc >> 8) ^ TABLE[usize::from((crc as u8) ^ b)];
    }
    !crc
}

fn best(rounds: usize, mut f: impl FnMut() -> u32) -> (f64, u32) {
    let mut best = f64::MAX;
    let mut out = 0;
    for _ in 0..rounds {
        let t = Instant::now();
        out = std::hint::black_box(f());
        best = best.min(t.elapsed().as_secs_f64() * 1000.0);
    }
    (best, out)
}

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|r| r.parse().ok())
        .unwrap_or(5);
    // Not zeros: a pattern the optimiser cannot see through.
    let mut data = vec![0u8; 16 << 20];
    let mut x = 0x9E37_79B9u32;
    for b in &mut data {
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        *b = x as u8;
    }
    let (t_table, c_table) = best(rounds, || table_crc32(&data));
    let (t_fast, c_fast) = best(rounds, || zurg::journal::crc32(&data));
    assert_eq!(c_table, c_fast, "the two CRCs must agree");
    println!("crc32 16 MiB: table {t_table:.2} ms, crc32fast {t_fast:.2} ms");

    // A journal of about 16 MiB, read back the way `zurg history` does.
    let dir = std::env::temp_dir().join(format!("zurg-crc-bench-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let (mut j, _) = zurg::journal::Journal::open(&dir, zurg::journal::DEFAULT_LIMIT).unwrap();
    let mut n = 0u64;
    while std::fs::metadata(dir.join("journal.1")).is_err()
        || std::fs::metadata(dir.join("journal")).unwrap().len() < (8 << 20) - 4096
    {
        let r = zurg::journal::Record {
            time_us: 1_795_000_000_000_000 + n,
            service: format!("svc{}", n % 100),
            kind: if n.is_multiple_of(2) {
                zurg::journal::Kind::Start
            } else {
                zurg::journal::Kind::Exit
            },
            gpid: format!("10.0.0.7:8080:{}:{}", 1_795_000_000_000_000 + n, 1000 + n),
            stats: Some(zurg::stats::Sample::default()),
            ..Default::default()
        };
        let _ = j.append(&r);
        n += 1;
    }
    let (t_read, count) = best(rounds, || zurg::journal::read_all(&dir).0.len() as u32);
    println!("read_all of a 16 MiB journal ({count} records): {t_read:.1} ms");
    // What a restart pays before it serves: the current 8 MiB generation
    // scanned for its good prefix.
    let (t_open, _) = best(rounds, || {
        let (_, warning) =
            zurg::journal::Journal::open(&dir, zurg::journal::DEFAULT_LIMIT).unwrap();
        u32::from(warning.is_some())
    });
    println!("Journal::open of its 8 MiB current file: {t_open:.1} ms");
    let _ = std::fs::remove_dir_all(&dir);
}
