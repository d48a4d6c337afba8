//! `pre_start` and `post_stop` hooks with zurg as PID 1: when they run,
//! what a failing or hung `pre_start` does to the start, what `post_stop`
//! is told, where their output goes, and bad values.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::run::start;
use common::*;

fn read(path: &std::path::Path) -> String {
    std::fs::read_to_string(path).unwrap_or_default()
}

#[test]
fn pre_start_runs_before_every_start_and_post_stop_after_every_exit() {
    let d = TempDir::new("hooks-every");
    let pre = d.path().join("pre");
    let post = d.path().join("post");
    let unit = format!(
        "exec = \"/bin/sh\"\n\
         args = [\"-c\", \"test -f {pre} && exec sleep 1000\"]\n\
         pre_start = [\"/bin/sh\", \"-c\", \"echo ran >> {pre}; echo hook says hi\"]\n\
         post_stop = [\"/bin/sh\", \"-c\", \"echo code=$ZURG_EXIT_CODE signal=$ZURG_EXIT_SIGNAL >> {post}\"]\n",
        pre = pre.display(),
        post = post.display(),
    );
    let crash = format!(
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"exit 7\"]\nrestart = \"never\"\n\
         post_stop = [\"/bin/sh\", \"-c\", \"echo code=$ZURG_EXIT_CODE >> {}\"]\n",
        d.path().join("crash").display()
    );
    let mut r = start(&[("svc", &unit), ("crash", &crash)], &[]);
    r.z.expect("[svc] started pid");
    // The service found the file pre_start wrote: it runs, not crashes.
    assert_eq!(status_of(&r.dir, "svc")["state"], "running");
    assert_eq!(read(&pre), "ran\n");
    eventually("hook output in zurg logs", || {
        r.ok(&["logs", "svc"]).contains("hook says hi")
    });

    r.ok(&["stop", "svc"]);
    eventually("post_stop after the stop", || {
        read(&post) == "code= signal=SIGTERM\n"
    });
    r.ok(&["start", "svc"]);
    eventually("pre_start again", || read(&pre) == "ran\nran\n");
    eventually("running again", || {
        status_of(&r.dir, "svc")["state"] == "running"
    });

    // After a crash, with its exit code.
    eventually("post_stop after the crash", || {
        read(&d.path().join("crash")) == "code=7\n"
    });
    eventually("crash kept down once post_stop ended", || {
        status_of(&r.dir, "crash")["state"] == "exited"
    });
}

#[test]
fn a_failing_pre_start_is_a_failed_start_with_its_output_retried_with_backoff() {
    let d = TempDir::new("hooks-fail");
    let ran = d.path().join("ran");
    let unit = format!(
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n\
         pre_start = [\"/bin/sh\", \"-c\", \"echo x >> {}; echo db not reachable; exit 3\"]\n\
         backoff = {{ initial_ms = 100 }}\n",
        ran.display()
    );
    let mut r = start(&[("db", &unit)], &[]);
    let line =
        r.z.expect("[db] pre_start exited with code 3: db not reachable");
    assert!(!line.contains("started pid"), "{line}");
    // Said once, with its output line, not also on a line of its own.
    let bare =
        r.z.lines_now()
            .iter()
            .filter(|l| l.ends_with("[db] pre_start exited with code 3"))
            .count();
    assert_eq!(bare, 0, "{:?}", r.z.seen);
    eventually("retried", || read(&ran).lines().count() >= 3);
    let s = status_of(&r.dir, "db");
    assert_eq!(
        s["last_error"], "pre_start exited with code 3: db not reachable",
        "{s}"
    );
    assert!(r
        .z
        .lines_now()
        .iter()
        .all(|l| !l.contains("[db] started pid")));
    let events = r.ok(&["events"]);
    assert!(events.contains("spawn_failed"), "{events}");
}

#[test]
fn post_stop_cleans_up_after_a_start_that_failed() {
    let d = TempDir::new("hooks-cleanup");
    let post = d.path().join("post");
    let lock = d.path().join("lock");
    // pre_start leaves a lock behind and fails; the next unit's program
    // cannot be run at all. post_stop runs after both, as ExecStopPost.
    let failing_pre = format!(
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nrestart = \"never\"\n\
         pre_start = [\"/bin/sh\", \"-c\", \"touch {lock}; exit 3\"]\n\
         post_stop = [\"/bin/sh\", \"-c\", \"rm {lock}; echo pre code=$ZURG_EXIT_CODE >> {post}\"]\n",
        lock = lock.display(),
        post = post.display()
    );
    let missing = format!(
        "exec = \"/nonexistent/program\"\nrestart = \"never\"\n\
         post_stop = [\"/bin/sh\", \"-c\", \"echo missing code=$ZURG_EXIT_CODE >> {}\"]\n",
        post.display()
    );
    let r = start(&[("locked", &failing_pre), ("missing", &missing)], &[]);
    eventually("post_stop after both failed starts", || {
        let text = read(&post);
        text.contains("pre code=3\n") && text.contains("missing code=127\n")
    });
    assert!(!lock.exists(), "post_stop did not clean up");
    eventually("both failed once post_stop ended", || {
        status_of(&r.dir, "locked")["state"] == "failed"
            && status_of(&r.dir, "missing")["problem"].is_string()
    });
}

#[test]
fn a_hung_pre_start_is_killed_at_its_timeout() {
    let d = TempDir::new("hooks-hung");
    let pidfile = d.path().join("hook.pid");
    let unit = format!(
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nrestart = \"never\"\nhook_timeout_ms = 300\n\
         pre_start = [\"/bin/sh\", \"-c\", \"echo $$ > {}; exec sleep 1000\"]\n",
        pidfile.display()
    );
    let mut r = start(&[("slow", &unit)], &[]);
    r.z.expect("[slow] pre_start did not finish within 300 ms (hook_timeout_ms) and was killed");
    // Not also as a hook killed by SIGKILL, on a line of its own.
    assert!(
        !r.z.seen.iter().any(|l| l.contains("pre_start exited with")),
        "{:?}",
        r.z.seen
    );
    let s = status_of(&r.dir, "slow");
    assert_eq!(s["state"], "failed", "{s}");
    // The hook is gone: no sleep left under zurg.
    eventually("hook killed", || {
        r.z.descendants().iter().all(|p| {
            std::fs::read_to_string(format!("/proc/{p}/cmdline"))
                .map_or(true, |c| !c.starts_with("sleep"))
        })
    });
}

/// A stop while `pre_start` runs kills it, and the log says so: the start
/// did not fail, so only this line tells what became of the hook.
#[test]
fn a_pre_start_killed_by_a_stop_is_logged() {
    let unit = "exec = \"/bin/sleep\"\nargs = [\"1000\"]\npre_start = [\"/bin/sleep\", \"1000\"]\n";
    let mut r = start(&[("slow", unit)], &[]);
    eventually("pre_start running", || {
        status_of(&r.dir, "slow")["state"] == "starting"
    });
    r.ok(&["stop", "slow"]);
    r.z.saw("[slow] pre_start exited with signal SIGKILL");
    assert!(
        !r.z.seen.iter().any(|l| l.contains("[slow] failed")),
        "{:?}",
        r.z.seen
    );
}

#[test]
fn bad_hook_values_name_the_place_and_key_and_the_other_units_run() {
    let d = TempDir::new("hooks-bad");
    d.write(
        "units/good.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    let bad = d.write(
        "units/bad.toml",
        "exec = \"/bin/true\"\npre_start = [\"sh\", \"-c\"]\nhook_timeout_ms = 0\n",
    );
    let bad = bad.display();
    let mut z = run_in(&d, Mode::Pid1, &["--grace", "1s"]);
    z.expect(&format!(
        "{bad}:2:13: key `pre_start`: the command must start with an absolute path, found \"sh\""
    ));
    z.expect(&format!(
        "{bad}:3:19: key `hook_timeout_ms`: must be at least 1"
    ));
    z.saw("[good] started pid");
}
