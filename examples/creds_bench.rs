//! bench/creds.sh, part 2: the spawn path alone, with every identity and
//! limit key set against none. Each sample is what zurg does per start:
//! for the keys, the stats of /etc/passwd, /etc/group and the env file, the
//! name lookup and the `Credentials` (as supervisor/creds.rs does when
//! nothing changed), then `Spawner::spawn` of /bin/true, which returns once
//! the child has exec'd. The wait for the child is not timed. Alternating
//! rounds; the median of each round, then the best round of each kind.
//! Usage (root): cargo run --release --example creds_bench [SPAWNS_PER_ROUND] [ROUNDS]
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::indexing_slicing)]

use std::ffi::CString;
use std::path::Path;
use std::time::Instant;

use zurg::os::creds::Credentials;
use zurg::os::signals::ChildSignals;
use zurg::os::spawn::{SpawnSpec, Spawner};
use zurg::unit::creds::{Creds, Id};

fn signals() -> ChildSignals {
    let empty = *nix::sys::signal::SigSet::empty().as_ref();
    ChildSignals {
        mask: empty,
        reset_to_default: empty,
    }
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    v[v.len() / 2]
}

fn main() {
    let mut args = std::env::args().skip(1);
    let per_round: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(300);
    let rounds: usize = args.next().and_then(|a| a.parse().ok()).unwrap_or(7);
    let env_file =
        std::env::temp_dir().join(format!("zurg-creds-bench-{}.env", std::process::id()));
    std::fs::write(&env_file, "A=1\nB=\"two words\"\n").unwrap();
    let sig = signals();
    let mut spawner = Spawner::new();
    let plain = SpawnSpec::new(c"/bin/true".into(), vec![c"/bin/true".into()]);
    let creds = Creds {
        user: Some(Id::Name("root".into())),
        group: Some(Id::Name("root".into())),
        supplementary_groups: Some(vec![Id::Name("root".into()), Id::Num(4242)]),
        ..Creds::default()
    };
    let accounts = zurg::unit::load::read_accounts().unwrap();
    let keyed = |spec: &mut SpawnSpec| {
        for p in ["/etc/passwd", "/etc/group"] {
            let _ = std::fs::metadata(Path::new(p));
        }
        let _ = std::fs::metadata(&env_file);
        let r = accounts.resolve(&creds).unwrap();
        let off = |k: &str| std::env::var_os(k).is_some();
        let mut c = Credentials {
            rlimits: vec![
                (libc::RLIMIT_NOFILE as i32, 4096, 4096, "nofile"),
                (libc::RLIMIT_CORE as i32, 0, 0, "core"),
                (libc::RLIMIT_NPROC as i32, 4096, 8192, "nproc"),
                (libc::RLIMIT_MEMLOCK as i32, 65536, 65536, "memlock"),
                (libc::RLIMIT_AS as i32, u64::MAX, u64::MAX, "as"),
                (libc::RLIMIT_STACK as i32, 8388608, 8388608, "stack"),
            ],
            // 0: a positive nice makes the child queue for the CPU, which
            // is nice's purpose, not the spawn path's cost.
            nice: Some(0),
            oom_score_adj: Some(CString::new("0").unwrap()),
            umask: Some(0o027),
            groups: r.groups,
            gid: r.gid,
            uid: r.uid,
            caps: Some((1 << 10) | (1 << 5) | (1 << 6) | (1 << 7) | (1 << 1)),
            no_new_privs: true,
        };
        if off("NO_CAPS") {
            c.caps = None;
        }
        if off("NO_IDS") {
            c.uid = None;
            c.gid = None;
            c.groups = None;
        }
        if off("NO_RLIM") {
            c.rlimits.clear();
        }
        if off("NO_NICE") {
            c.nice = None;
        }
        if off("NO_OOM") {
            c.oom_score_adj = None;
        }
        if off("NO_NNP") {
            c.no_new_privs = false;
        }
        spec.creds = Some(c);
    };
    let mut best = [f64::MAX; 2];
    for round in 0..rounds * 2 {
        let with_keys = round % 2 == 1;
        let mut times = Vec::with_capacity(per_round);
        for _ in 0..per_round {
            let mut spec = plain.clone();
            let t = Instant::now();
            if with_keys {
                keyed(&mut spec);
            }
            let child = spawner.spawn(&spec, &sig, None::<&std::fs::File>).unwrap();
            times.push(t.elapsed().as_secs_f64() * 1e6);
            let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child.pid), None);
            assert!(
                matches!(status, Ok(nix::sys::wait::WaitStatus::Exited(_, 0))),
                "/bin/true failed: {status:?}"
            );
        }
        let m = median(times);
        let i = usize::from(with_keys);
        best[i] = best[i].min(m);
    }
    // The supervisor's share, alone: what a start costs when nothing
    // changed (stats), and what a change costs (the reads and parses).
    let per = |f: &mut dyn FnMut()| {
        let n = 20_000;
        let t = Instant::now();
        for _ in 0..n {
            f();
        }
        t.elapsed().as_secs_f64() * 1e6 / f64::from(n)
    };
    let stats = per(&mut || {
        for p in ["/etc/passwd", "/etc/group"] {
            let _ = std::fs::metadata(Path::new(p));
        }
        let _ = std::fs::metadata(&env_file);
    });
    let lookup = per(&mut || {
        let _ = accounts.resolve(&creds);
    });
    let reread = per(&mut || {
        let _ = zurg::unit::load::read_accounts();
    });
    let envfile = per(&mut || {
        let bytes = zurg::unit::load::read_small(&env_file, 1 << 20).unwrap();
        let _ = zurg::unit::envfile::parse_env_file(&bytes);
    });
    let _ = std::fs::remove_file(&env_file);
    println!("spawn path, median µs per start (best of {rounds} rounds of {per_round}):");
    println!("  no keys:    {:8.1}", best[0]);
    println!("  every key:  {:8.1}", best[1]);
    println!("  ratio:      {:8.2}×", best[1] / best[0]);
    println!("supervisor side, µs each:");
    println!("  3 stats (passwd, group, env file), nothing changed: {stats:.2}");
    println!("  name lookup in the parsed databases:               {lookup:.2}");
    println!("  re-read and parse /etc/passwd and /etc/group:       {reread:.2}");
    println!("  re-read and parse a 2-line env file:                {envfile:.2}");
}
