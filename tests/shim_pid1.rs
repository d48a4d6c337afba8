//! PID-1 hardening (src/os/pid1.rs), checked with zurg as PID 1 of a pid and
//! mount namespace whose filesystem the test shapes first: no /proc, or an
//! /etc/zurg/crash laid over /etc. The namespace's shell execs zurg, so zurg
//! is PID 1 itself.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::process::{Child, Command, ExitStatus, Stdio};
use std::time::{Duration, Instant};

use common::{children, comm, eventually, kill, TempDir, BIN, DEADLINE};

/// `unshare --pid --mount` running `sh -c SETUP; exec CMD` as PID 1; killed
/// (and with it the namespace) on drop.
struct Namespace {
    child: Child,
}

impl Namespace {
    fn start(setup: &str, cmd: &str, extra_unshare: &[&str]) -> Namespace {
        let child = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "--mount", "--uts"])
            .args(extra_unshare)
            .args(["sh", "-c", &format!("set -e; {setup}; exec {cmd}")])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("start unshare");
        Namespace { child }
    }

    /// Host pid of zurg, PID 1 inside.
    fn zurg(&self) -> i32 {
        let me = self.child.id() as i32;
        let mut found = None;
        eventually("zurg as PID 1 of the namespace", || {
            found = children(me)
                .into_iter()
                .find(|p| comm(*p).as_deref() == Some("zurg"));
            found.is_some()
        });
        found.unwrap()
    }

    fn wait_exit(&mut self) -> ExitStatus {
        let deadline = Instant::now() + DEADLINE;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                return s;
            }
            assert!(Instant::now() < deadline, "PID 1 did not exit in time");
            std::thread::sleep(Duration::from_millis(10));
        }
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            kill(self.child.id() as i32, 9);
            let _ = self.child.wait();
        }
    }
}

fn run_args(dir: &TempDir) -> String {
    let units = dir.path().join("units");
    std::fs::create_dir_all(&units).unwrap();
    format!(
        "{BIN} run --units {} --socket {} --state {}",
        units.display(),
        dir.path().join("sock").display(),
        dir.path().join("state").display()
    )
}

fn have_setpriv() -> bool {
    let ok = Command::new("setpriv")
        .arg("--version")
        .stdout(Stdio::null())
        .status()
        .is_ok_and(|s| s.success());
    if !ok {
        common::skip("container_pid1_without_proc_exits_0", "no setpriv");
    }
    ok
}

/// A container's PID 1 without /proc and without CAP_SYS_BOOT (docker drops
/// it) used to take itself for a machine's init: it mounted /proc, /sys and
/// /dev, and at shutdown tried reboot(2), failed, and reaped forever.
#[test]
fn container_pid1_without_proc_exits_0() {
    if !have_setpriv() {
        return;
    }
    let dir = TempDir::new("noproc");
    let cmd = format!(
        "setpriv --bounding-set -sys_boot --inh-caps -sys_boot {}",
        run_args(&dir)
    );
    stops_with_exit_0_without_proc(&dir, &cmd);
}

/// The same with CAP_SYS_BOOT, where reboot(2) in a child pid namespace ends
/// the namespace as if its init were killed: a clean exit 0 proves zurg
/// took itself for a container.
#[test]
fn container_pid1_without_proc_but_with_cap_sys_boot_exits_0() {
    let dir = TempDir::new("noproc-boot");
    stops_with_exit_0_without_proc(&dir, &run_args(&dir));
}

/// Runs `cmd` (zurg with its socket in DIR) as PID 1 of a namespace with an
/// empty /proc, then asserts that SIGTERM ends it with exit code 0.
fn stops_with_exit_0_without_proc(dir: &TempDir, cmd: &str) {
    let mut ns = Namespace::start("mount -t tmpfs none /proc", cmd, &[]);
    let zurg = ns.zurg();
    eventually("the control socket", || dir.path().join("sock").exists());
    kill(zurg, libc::SIGTERM);
    let status = ns.wait_exit();
    assert_eq!(status.code(), Some(0), "{status:?}");
}

/// The crash program takes over PID 1 with the signal state of a fresh
/// init: nothing blocked, nothing ignored. It used to inherit zurg's mask,
/// which blocks nearly everything.
#[test]
fn crash_program_starts_with_a_clean_signal_state() {
    let dir = TempDir::new("crash");
    let upper = dir.path().join("upper");
    let work = dir.path().join("work");
    let out = dir.path().join("status");
    std::fs::create_dir_all(upper.join("zurg")).unwrap();
    std::fs::create_dir_all(&work).unwrap();
    let crash = upper.join("zurg/crash");
    std::fs::write(
        &crash,
        format!(
            // prlimit gives the shell back the descriptors that zurg's own
            // limit (below) took away; the signal state passes through exec.
            "#!/usr/bin/env -S prlimit --nofile=64:64 /bin/sh\nexec grep -E '^Sig(Blk|Ign)' /proc/self/status > {}\n",
            out.display()
        ),
    )
    .unwrap();
    std::fs::set_permissions(&crash, std::os::unix::fs::PermissionsExt::from_mode(0o755)).unwrap();
    // /etc/zurg/crash appears only inside the namespace, over the real /etc.
    let setup = format!(
        "mount -t overlay overlay -o lowerdir=/etc,upperdir={},workdir={} /etc",
        upper.display(),
        work.display()
    );
    // Five descriptors (a soft limit the crash program raises again) are
    // stdio, the state lock and the signalfd: creating the event loop fails
    // right after zurg took over its signals, and PID 1 hands over to the
    // crash program. (An unknown --readers group did this once; it is only a
    // warning now.)
    let cmd = format!("prlimit --nofile=5:64 {}", run_args(&dir));
    let mut ns = Namespace::start(&setup, &cmd, &["--mount-proc"]);
    ns.wait_exit();
    let text = std::fs::read_to_string(&out).unwrap();
    assert_eq!(
        text, "SigBlk:\t0000000000000000\nSigIgn:\t0000000000000000\n",
        "the crash program inherited zurg's signal state"
    );
}
