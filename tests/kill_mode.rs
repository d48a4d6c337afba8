//! `kill_mode` on a host where zurg does not manage cgroups (zurg shares
//! the test runner's cgroup, so it never does here): zurg says so once, the
//! default is `"group"`, a stop reaches the service's process group but not
//! a helper in a session of its own, `"main"` reaches the main process
//! alone, and units that need a cgroup are refused, naming file and key,
//! while the others run. The cgroup mode itself is tested in tests/vm.rs,
//! where zurg is a machine's init and mounts cgroup2.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::{cmdline, eventually, run, state, Zurg};

/// Gone, or dead and waiting for zurg to reap it.
fn dead(host: i32) -> bool {
    matches!(state(host), None | Some('Z'))
}

/// Host pid of the process below zurg running exactly `cmd` (the shell
/// that starts it has the same words in its command line until it execs).
fn running_exactly(z: &Zurg, cmd: &str) -> i32 {
    let mut found = None;
    eventually(&format!("a process running {cmd:?}"), || {
        found = z.descendants().into_iter().find(|p| cmdline(*p) == cmd);
        found.is_some()
    });
    found.unwrap()
}

/// A service whose main process (`sleep N`) has a helper in its process
/// group (`sleep N+1`) and one in a session of its own (`sleep N+2`).
fn with_helpers(n: u32, kill_mode: Option<&str>) -> String {
    let mode = kill_mode.map_or(String::new(), |m| format!("kill_mode = \"{m}\"\n"));
    format!(
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"sleep {} & setsid sleep {} & exec sleep {n}\"]\nstop_timeout_ms = 3000\n{mode}",
        n + 1,
        n + 2
    )
}

#[test]
fn group_mode_stops_the_group_and_main_mode_the_main_process_only() {
    let mut r = run::start(
        &[
            ("grp", &with_helpers(1100, Some("group"))),
            ("dflt", &with_helpers(1200, None)),
            ("mainonly", &with_helpers(1300, Some("main"))),
        ],
        &[],
    );
    r.z.saw("cgroups: not managed:");
    let mut pids = std::collections::HashMap::new();
    for n in [1100, 1101, 1102, 1200, 1201, 1202, 1300, 1301, 1302] {
        pids.insert(n, running_exactly(&r.z, &format!("sleep {n}")));
    }
    for (name, base) in [("grp", 1100), ("dflt", 1200), ("mainonly", 1300)] {
        r.ok(&["stop", name]);
        eventually(&format!("{name}'s main process to die"), || {
            dead(pids[&base])
        });
        let group_helper = pids[&(base + 1)];
        if name == "mainonly" {
            assert!(
                !dead(group_helper),
                "kill_mode \"main\": the helper in the group got the stop too"
            );
        } else {
            eventually(&format!("{name}'s group helper to die with it"), || {
                dead(group_helper)
            });
        }
        assert!(
            !dead(pids[&(base + 2)]),
            "{name}: a helper in a session of its own is outside the group"
        );
    }
    // Only TERM went out: nothing was escalated to SIGKILL.
    assert!(
        !r.z.lines_now().iter().any(|l| l.contains("sent SIGKILL")),
        "{:?}",
        r.z.lines_now()
    );
}

#[test]
fn units_that_need_a_cgroup_are_refused_here_and_the_others_run() {
    let mut r = run::start(
        &[
            ("limited", "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nmemory_max = \"64M\"\n"),
            ("cpu", "exec = \"/bin/sleep\"\nargs = [\"1000\"]\ncpu_max = \"50%\"\n"),
            ("cg", "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nkill_mode = \"cgroup\"\n"),
            ("typo", "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nkill_mode = \"process\"\npids_max = -3\nio_weight = 0\n"),
            ("ok", "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nkill_mode = \"main\"\n"),
        ],
        &[],
    );
    let said = r.z.saw("cgroups: not managed:");
    assert!(said.contains("cgroup"), "{said}");
    for (file, key) in [
        ("limited.toml", "memory_max"),
        ("cpu.toml", "cpu_max"),
        ("cg.toml", "kill_mode"),
    ] {
        let line = r.z.saw(&format!("{file}: key `{key}`: needs a cgroup"));
        assert!(line.contains("zurg cannot manage cgroups here"), "{line}");
    }
    r.z.saw("typo.toml:3:13: key `kill_mode`: expected \"cgroup\", \"group\" or \"main\", found \"process\"");
    r.z.saw("typo.toml:4:12: key `pids_max`: must be at least 1, found -3");
    r.z.saw("typo.toml:5:13: key `io_weight`: must be 1 to 10000, found 0");
    r.z.saw("1 added, 0 changed, 0 removed, 0 unchanged, 4 rejected");
    running_exactly(&r.z, "/bin/sleep 1000");
    assert_eq!(common::status_of(&r.dir, "ok")["state"], "running");
    // zurg said it once, not once per unit.
    let told =
        r.z.lines_now()
            .iter()
            .filter(|l| l.contains("cgroups: not managed"))
            .count();
    assert_eq!(told, 1);
}
