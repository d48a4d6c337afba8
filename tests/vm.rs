//! zurg as /init of a real kernel under qemu (software emulation): the
//! initramfs holds the static zurg, busybox and a few units. On the serial
//! console the test checks that a service ran, was restarted after being
//! killed, and that `zurg shutdown --poweroff` ends qemu with a clean power
//! off and no kernel panic. In the same boot, with the cgroup2 that zurg
//! mounts as the machine's init: a double-forked, setsid'd grandchild dies
//! with its service under the default kill mode (cgroup) and survives under
//! `kill_mode = "main"`, and a service over its `memory_max` is reported
//! OOM-killed (log line and `zurg history`).
//!
//! Needs ZURG_STATIC_BIN (scripts/static) and ZURG_VM_KERNEL
//! (scripts/vm-kernel), qemu-system-x86_64, busybox and cpio; scripts/test
//! provides them all. Where any is missing the test says so loudly and
//! passes without running, so a plain `cargo test` still works.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::path::PathBuf;

use common::vm::{add, boot, pack, prerequisites, root, Prerequisites};
use common::TempDir;

const DRIVER: &str = r#"#!/bin/sh
# waits for svc, kills it, waits for zurg to restart it, then powers off
old=""
i=0
while [ -z "$old" ] && [ $i -lt 400 ]; do
  g=$(/init gpid svc 2>/dev/null); old=${g##*:}; i=$((i+1)); sleep 0.05
done
echo "VMTEST killing svc pid $old"
kill -9 "$old"
i=0
while [ $i -lt 400 ]; do
  g=$(/init gpid svc 2>/dev/null); new=${g##*:}
  if [ -n "$new" ] && [ "$new" != "$old" ]; then echo "VMTEST restarted $old -> $new"; break; fi
  sleep 0.05; i=$((i+1))
done
# cgroups: each of cgkill and cgmain leaves a setsid'd grandchild
alive() { [ -n "$1" ] && [ -d /proc/$1 ] && ! grep -q ') Z' /proc/$1/stat; }
i=0
while { [ ! -s /tmp/gc-cgkill ] || [ ! -s /tmp/gc-cgmain ]; } && [ $i -lt 400 ]; do
  sleep 0.05; i=$((i+1))
done
k=$(cat /tmp/gc-cgkill); m=$(cat /tmp/gc-cgmain)
alive "$k" && alive "$m" && echo "VMTEST grandchildren up $k $m"
/init stop cgkill cgmain >/dev/null
i=0
while alive "$k" && [ $i -lt 200 ]; do sleep 0.05; i=$((i+1)); done
alive "$k" || echo "VMTEST cgroup mode: grandchild $k gone"
alive "$m" && echo "VMTEST main mode: grandchild $m survived"
i=0
while [ $i -lt 400 ]; do
  if /init history hog 2>/dev/null | grep -q oom-killed; then echo "VMTEST history says oom-killed"; break; fi
  sleep 0.05; i=$((i+1))
done
echo "VMTEST-STATS $(/init stats svc --json)"
echo "VMTEST powering off"
exec /init shutdown --poweroff
"#;

/// A service whose main process leaves a double-forked grandchild in a
/// session of its own, its pid in /tmp/gc-NAME.
fn forking_unit(name: &str, kill_mode: &str) -> String {
    format!(
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"setsid sh -c 'sleep 1001 & echo $! > /tmp/gc-{name}'; exec sleep 1000\"]\nrestart = \"never\"\n{kill_mode}"
    )
}

fn build_initramfs(dir: &TempDir, p: &Prerequisites) -> PathBuf {
    let root = root(
        dir,
        p,
        &["sh", "sleep", "cat", "echo", "ls", "setsid", "grep", "dd"],
    );
    add(&root, "driver.sh", DRIVER, true);
    add(
        &root,
        "etc/zurg/units/svc.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"echo VMTEST svc up pid $$; exec sleep 1000\"]\n",
        false,
    );
    add(
        &root,
        "etc/zurg/units/driver.toml",
        "exec = \"/driver.sh\"\nrestart = \"never\"\n",
        false,
    );
    add(
        &root,
        "etc/zurg/units/cgkill.toml",
        &forking_unit("cgkill", ""),
        false,
    );
    add(
        &root,
        "etc/zurg/units/cgmain.toml",
        &forking_unit("cgmain", "kill_mode = \"main\"\n"),
        false,
    );
    // dd's 64 MiB buffer, filled from /dev/zero, against a 16 MiB limit.
    add(
        &root,
        "etc/zurg/units/hog.toml",
        "exec = \"/bin/dd\"\nargs = [\"if=/dev/zero\", \"of=/dev/null\", \"bs=64M\", \"count=1\"]\nrestart = \"never\"\nmemory_max = \"16M\"\n",
        false,
    );
    pack(dir, &root)
}

#[test]
fn boots_as_init_restarts_a_killed_service_and_powers_off() {
    let Some(p) = prerequisites("VM boot test") else {
        return;
    };
    let dir = TempDir::new("vm");
    let image = build_initramfs(&dir, &p);
    let vm = boot(&p, &image);
    let status = vm.status;
    let t0 = vm.started;
    let ended = vm.ended;
    let first_service = vm
        .console
        .iter()
        .find(|(_, l)| l.contains("VMTEST svc up"))
        .map(|(at, _)| *at - t0);
    let power_off_at = vm
        .console
        .iter()
        .find(|(_, l)| l.contains("VMTEST powering off"))
        .map(|(at, _)| *at);
    let text = vm.text();
    assert!(
        status.success(),
        "qemu exited with {status:?}; console:\n{text}"
    );
    assert!(
        !text.contains("Kernel panic"),
        "kernel panic; console:\n{text}"
    );
    assert!(text.contains("init of this machine"), "{text}");
    assert!(text.contains("VMTEST svc up"), "{text}");
    assert!(
        text.contains("VMTEST restarted"),
        "the killed service was not restarted; console:\n{text}"
    );
    assert!(text.contains("exited with signal SIGKILL"), "{text}");
    assert!(
        text.contains("cgroups: managing /sys/fs/cgroup"),
        "zurg did not manage the cgroup2 it mounted; console:\n{text}"
    );
    assert!(text.contains("VMTEST grandchildren up"), "{text}");
    assert!(
        text.contains("VMTEST cgroup mode: grandchild"),
        "a setsid'd grandchild outlived its service under kill_mode cgroup; console:\n{text}"
    );
    assert!(
        text.contains("VMTEST main mode: grandchild"),
        "under kill_mode main the grandchild should outlive the stop; console:\n{text}"
    );
    assert!(
        text.contains("(the OOM killer ended a process of the service)"),
        "the memory_max service's exit was not reported as an OOM kill; console:\n{text}"
    );
    assert!(text.contains("VMTEST history says oom-killed"), "{text}");
    // stats of a service with a cgroup come from it: memory.current (page
    // cache included) for the whole, and no per-process walk (fds 0).
    let stats = text
        .lines()
        .find_map(|l| l.split_once("VMTEST-STATS ").map(|(_, j)| j))
        .expect("no stats line");
    let stats: serde_json::Value = serde_json::from_str(stats).unwrap();
    let row = &stats["result"][0];
    assert!(row["tree"]["rss_kb"].as_u64().unwrap() > 0, "{row}");
    assert_eq!(row["tree"]["fds"], 0, "not read from the cgroup: {row}");
    assert!(row["process"]["fds"].as_u64().unwrap() > 0, "{row}");
    assert!(
        text.contains("reboot: Power down"),
        "no clean power off; console:\n{text}"
    );
    let boot = first_service.unwrap();
    let shutdown = power_off_at.map(|at| ended - at).unwrap();
    eprintln!(
        "VM: qemu start to first service {boot:?}; poweroff request to qemu exit {shutdown:?}"
    );
    for line in text
        .lines()
        .filter(|l| l.contains("VMTEST") || l.contains("cgroups:") || l.contains("OOM"))
    {
        eprintln!("VM console: {line}");
    }
}
