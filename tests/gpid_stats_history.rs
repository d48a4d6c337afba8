//! GPIDs, resource stats and the start history (README "GPIDs, stats and
//! history"), against zurg as PID 1 in a pid namespace.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Write};
use std::os::unix::net::UnixStream;
use std::path::{Path, PathBuf};

use common::{
    eventually, find_below, gpid_fields, history, json, ok, GpidFields, Mode, TempDir, Zurg,
    DEADLINE,
};

fn start_in(dir: &TempDir, extra: &[&str]) -> Zurg {
    let mut args = vec!["--host-ip", "10.1.2.3"];
    args.extend_from_slice(extra);
    let mut z = common::run_in(dir, Mode::Pid1, &args);
    z.expect("loaded");
    z
}

#[test]
fn the_child_knows_its_gpid_and_zurg_reports_the_same() {
    let dir = TempDir::new("gpid-env");
    let out = dir.path().join("env");
    dir.write(
        "units/api.toml",
        &format!(
            "exec = \"/bin/sh\"\nargs = [\"-c\", \"echo $ZURG_GPID $ZURG_SERVICE $ZURG_VERSION $$ > {}; exec sleep 1000\"]\nport = 8080\n",
            out.display()
        ),
    );
    let _z = start_in(&dir, &[]);
    eventually("the service wrote its identity", || {
        std::fs::read_to_string(&out).is_ok_and(|s| s.ends_with('\n'))
    });
    let text = std::fs::read_to_string(&out).unwrap();
    let f: Vec<&str> = text.split_whitespace().collect();
    let (gpid, service, pid) = (f[0], f[1], f[2]);
    assert_eq!(service, "api");
    let GpidFields {
        ip,
        port,
        start_us,
        pid: gpid_pid,
    } = gpid_fields(gpid);
    assert_eq!((ip.as_str(), port), ("10.1.2.3", 8080));
    assert_eq!(
        gpid_pid.to_string(),
        pid,
        "the pid in ZURG_GPID is the child's own"
    );
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    assert!(
        start_us <= now_us && now_us - start_us < 60_000_000,
        "{start_us} vs {now_us}"
    );
    assert_eq!(ok(&dir, &["gpid", "api"]).trim(), gpid);
    let rows = json(&dir, &["status"]);
    assert_eq!(rows[0]["gpid"], gpid);
}

#[test]
fn gpids_never_repeat_across_1000_rapid_restarts() {
    let dir = TempDir::new("gpid-1000");
    dir.write(
        "units/svc.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nstop_timeout_ms = 2000\n",
    );
    let _z = start_in(&dir, &[]);
    eventually("svc running", || {
        json(&dir, &["status"])[0]["pid"].is_number()
    });

    let s = UnixStream::connect(dir.path().join("control.sock")).unwrap();
    s.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut w = s.try_clone().unwrap();
    let mut r = BufReader::new(s);
    let mut line = String::new();
    w.write_all(b"{\"id\":1,\"verb\":\"events\",\"follow\":true}\n")
        .unwrap();
    r.read_line(&mut line).unwrap();
    let mut gpids = HashSet::new();
    let mut last_start = 0u64;
    let mut restarts = 0;
    let mut id = 10u64;
    // restarts in flight at once, answered as they complete
    let mut in_flight = 0;
    while gpids.len() < 1000 {
        while in_flight < 1 && restarts < 1000 {
            id += 1;
            w.write_all(
                format!("{{\"id\":{id},\"verb\":\"restart\",\"names\":[\"svc\"]}}\n").as_bytes(),
            )
            .unwrap();
            in_flight += 1;
            restarts += 1;
        }
        line.clear();
        r.read_line(&mut line).unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        if v["event"]["kind"] == "started" {
            let g = v["event"]["gpid"].as_str().unwrap().to_string();
            let start_us = gpid_fields(&g).start_us;
            assert!(
                start_us > last_start,
                "start times must strictly increase: {g}"
            );
            last_start = start_us;
            assert!(gpids.insert(g.clone()), "GPID {g} issued twice");
        } else if v["ok"] == true && v["id"] != 1 {
            in_flight -= 1;
        } else if v["ok"] == false {
            panic!("restart failed: {line}");
        }
    }
    assert_eq!(gpids.len(), 1000);
}

#[test]
fn a_clock_gone_backwards_still_issues_later_start_times() {
    let dir = TempDir::new("gpid-clock");
    dir.write(
        "units/svc.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    // As if the last run had issued GPIDs an hour in the future of today's
    // clock: a wall clock that has since jumped back by an hour.
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let future = now_us + 3_600_000_000;
    dir.write("state/clock", &format!("{future}\n"));
    let _z = start_in(&dir, &[]);
    eventually("svc running", || {
        json(&dir, &["status"])[0]["gpid"].is_string()
    });
    let g = json(&dir, &["status"])[0]["gpid"]
        .as_str()
        .unwrap()
        .to_string();
    let start_us = gpid_fields(&g).start_us;
    assert!(
        start_us > future,
        "{start_us} is not after the persisted {future}"
    );
}

#[test]
fn a_far_future_clock_file_is_ignored_and_start_times_still_increase() {
    let dir = TempDir::new("gpid-future");
    dir.write(
        "units/flaky.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"exit 1\"]\n",
    );
    // 2^64 - 1: before, the clock saturated there and every start got it.
    dir.write("state/clock", &format!("{}\n", u64::MAX));
    let now_us = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_micros() as u64;
    let mut z = start_in(&dir, &[]);
    z.saw("ignoring the GPID clock");
    eventually("three starts recorded", || {
        history(&dir, "flaky")
            .iter()
            .filter(|r| r["kind"] == "start")
            .count()
            >= 3
    });
    let starts: Vec<u64> = history(&dir, "flaky")
        .iter()
        .filter(|r| r["kind"] == "start")
        .map(|r| gpid_fields(r["gpid"].as_str().unwrap()).start_us)
        .collect();
    for pair in starts.windows(2) {
        assert!(pair[1] > pair[0], "start times repeat: {starts:?}");
    }
    for t in &starts {
        assert!(
            *t >= now_us && *t - now_us < 60_000_000,
            "start time {t} is not today's clock ({now_us}): {starts:?}"
        );
    }
    // the clock file is sane again for the next run of zurg
    let saved: u64 = std::fs::read_to_string(dir.path().join("state/clock"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    assert!(saved < now_us + 60_000_000, "{saved}");
}

fn vm_rss_kb(pid: i32) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    s.lines()
        .find(|l| l.starts_with("VmRSS:"))
        .unwrap()
        .split_whitespace()
        .nth(1)
        .unwrap()
        .parse()
        .unwrap()
}

#[test]
fn stats_match_proc_for_a_process_with_known_memory() {
    let dir = TempDir::new("stats");
    let ready = dir.path().join("ready");
    // a shell holding a 40 MB string, with a child of its own; it marks
    // itself ready by a redirection, not `touch`, whose process could still
    // be in the tree when the test counts it
    let script = dir.write(
        "fat.sh",
        &format!(
            "x=$(head -c 40000000 /dev/zero | tr '\\000' a)\nsleep 1000 &\n: > {}\nwait\n",
            ready.display()
        ),
    );
    dir.write(
        "units/fat.toml",
        &format!("exec = \"/bin/sh\"\nargs = [\"{}\"]\n", script.display()),
    );
    let z = start_in(&dir, &[]);
    eventually("fat ready", || ready.exists());
    // until its child has exec'd sleep, the shell's 40 MB are shared with
    // that child (copy-on-write) and its PSS is half
    find_below(&z, "sleep 1000");
    let host_pid = find_below(&z, "fat.sh");
    let rows = json(&dir, &["stats", "fat"]);
    let row = &rows[0];
    let rss = row["process"]["rss_kb"].as_u64().unwrap();
    let expected = vm_rss_kb(host_pid);
    assert!(
        rss >= 39_000,
        "rss {rss} kB is less than the 40 MB the shell holds"
    );
    let diff = rss.abs_diff(expected) as f64 / expected as f64;
    assert!(diff < 0.1, "zurg says {rss} kB, /proc says {expected} kB");
    assert!(row["process"]["pss_kb"].as_u64().unwrap() > 30_000);
    assert_eq!(row["tree"]["processes"], 2);
    assert!(row["tree"]["rss_kb"].as_u64().unwrap() > rss);
    assert!(row["process"]["fds"].as_u64().unwrap() >= 3);
    let table = ok(&dir, &["stats"]);
    assert!(
        table.starts_with("NAME") && table.contains("fat"),
        "{table}"
    );
}

fn journal_path(dir: &TempDir) -> PathBuf {
    dir.path().join("state/journal")
}

fn truncate_by(path: &Path, bytes: u64) {
    let len = std::fs::metadata(path).unwrap().len();
    let f = std::fs::OpenOptions::new().write(true).open(path).unwrap();
    f.set_len(len - bytes).unwrap();
}

#[test]
fn history_survives_a_restart_of_zurg_and_a_torn_record() {
    let dir = TempDir::new("history");
    dir.write(
        "units/job.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"exit 3\"]\nrestart = \"never\"\n",
    );
    dir.write(
        "units/svc.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nstats_interval_ms = 100\n",
    );
    let mut z = start_in(&dir, &[]);
    z.saw("[job] ended with code 3");
    eventually("svc started", || history(&dir, "svc").len() == 1);
    let first = history(&dir, "job");
    assert_eq!(first.len(), 2, "{first:?}");
    assert_eq!(
        (first[0]["kind"].as_str(), first[1]["kind"].as_str()),
        (Some("start"), Some("exit"))
    );
    assert_eq!(first[1]["exit"]["code"], 3);
    // let a periodic sample land, then kill svc: its exit record carries it
    // samples are taken every 100 ms: after 300 ms of uptime one exists
    eventually("svc up for 300 ms", || {
        json(&dir, &["status", "svc"])[0]["uptime_ms"]
            .as_u64()
            .is_some_and(|u| u >= 300)
    });
    common::kill(find_below(&z, "sleep 1000"), 9);
    eventually("svc exit recorded", || history(&dir, "svc").len() >= 2);
    let exit = &history(&dir, "svc")[1];
    assert_eq!(exit["exit"]["signal"], "SIGKILL");
    assert!(exit["stats"]["rss_kb"].as_u64().unwrap() > 0, "{exit}");
    z.signal(15);
    z.wait_exit();
    drop(z);

    // tear the last record, as a crash mid-write would
    truncate_by(&journal_path(&dir), 5);
    let mut z = start_in(&dir, &[]);
    z.saw("torn record");
    z.saw("[job] ended with code 3");
    let all = json(&dir, &["history"]).as_array().unwrap().clone();
    let job: Vec<_> = all.iter().filter(|r| r["service"] == "job").collect();
    assert_eq!(job.len(), 4, "both runs' records: {job:?}");
    assert_ne!(job[0]["gpid"], job[2]["gpid"]);
    let out = ok(&dir, &["history", "job", "--since", "1h"]);
    assert_eq!(out.lines().count(), 4, "{out}");
    assert!(out.contains("job exit (code 3) 10.1.2.3:0:"), "{out}");
}

#[test]
fn a_history_reply_larger_than_the_output_bound_arrives_whole() {
    // A journal near its 8 MiB limit answers `history` with megabytes: the
    // bound on unread output is for clients that stop reading, not for one
    // long reply.
    let dir = TempDir::new("history-big");
    dir.write(
        "units/svc.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    let old = 20_000u64;
    let journal = common::old_journal(0..old);
    assert!(journal.len() > 2 << 20, "{} bytes", journal.len());
    std::fs::create_dir_all(dir.path().join("state")).unwrap();
    std::fs::write(journal_path(&dir), &journal).unwrap();
    let _z = start_in(&dir, &[]);
    eventually("svc started", || history(&dir, "svc").len() == 1);
    let all = json(&dir, &["history"]);
    let all = all.as_array().unwrap();
    // No old start has its exit (the records' GPIDs differ), so boot
    // closes each of the 10,000 as lost before svc's start.
    let lost = old / 2;
    assert_eq!(all.len() as u64, old + lost + 1);
    assert_eq!(all[0]["service"], "old0");
    assert_eq!(all[all.len() - 2]["reason"], "lost: not running at boot");
    assert_eq!(all[all.len() - 1]["service"], "svc");
}
