//! Test harness: runs the real zurg binary as PID 1 of a fresh pid namespace
//! (`unshare --pid --fork --kill-child --mount-proc`), collects its stderr
//! lines, and lets tests wait for lines, exits and /proc states, each with a
//! deadline. Dropping a `Zurg` SIGKILLs the unshare process, which takes the
//! whole namespace down with it, so no test leaves processes behind.
#![allow(
    dead_code,
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

pub mod browser;
pub mod etcd;
pub mod naming;
pub mod run;
pub mod vm;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::mpsc::{channel, Receiver, RecvTimeoutError};
use std::time::{Duration, Instant};

pub const BIN: &str = env!("CARGO_BIN_EXE_zurg");
/// Generous for 2 shared cores; the happy path never waits this long.
pub const DEADLINE: Duration = Duration::from_secs(15);
/// A unit that runs a long sleep: a service that stays up.
pub const SLEEPER: &str = "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n";

static COUNTER: AtomicUsize = AtomicUsize::new(0);

/// A test whose prerequisite is missing says so loudly and passes, so
/// `cargo test` works on a bare machine. scripts/test installs every
/// prerequisite and sets ZURG_TEST_ALL, and there a missing one fails the
/// test: a broken install must not pass as green.
pub fn skip(test: &str, why: &str) {
    if std::env::var_os("ZURG_TEST_ALL").is_some() {
        panic!("{test} cannot run: {why}; ZURG_TEST_ALL is set, so scripts/test should have provided it");
    }
    eprintln!("\n**************** SKIPPED: {test}: {why} ****************\n");
}

/// chmod: test files and directories get modes that a root zurg's strict
/// modes accept whatever the umask.
pub fn set_mode(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::os::unix::fs::PermissionsExt::from_mode(mode)).unwrap();
}

/// A temporary directory removed on drop.
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(tag: &str) -> TempDir {
        TempDir::under(&std::env::temp_dir(), tag)
    }

    /// A temporary directory in /dev/shm (tmpfs), for a test that makes
    /// many thousands of files: on the shared machine's loaded disk that
    /// takes minutes, in memory seconds.
    pub fn in_memory(tag: &str) -> TempDir {
        let shm = Path::new("/dev/shm");
        assert!(shm.is_dir(), "this test needs a tmpfs at /dev/shm");
        TempDir::under(shm, tag)
    }

    fn under(base: &Path, tag: &str) -> TempDir {
        let n = COUNTER.fetch_add(1, Ordering::SeqCst);
        let p = base.join(format!("zurg-test-{}-{n}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&p);
        std::fs::create_dir_all(&p).unwrap();
        set_mode(&p, 0o755);
        TempDir(p)
    }

    pub fn path(&self) -> &Path {
        &self.0
    }

    pub fn write(&self, name: &str, text: &str) -> PathBuf {
        let p = self.0.join(name);
        if let Some(dir) = p.parent() {
            std::fs::create_dir_all(dir).unwrap();
            for d in dir.ancestors().take_while(|d| d.starts_with(&self.0)) {
                set_mode(d, 0o755);
            }
        }
        let old = std::fs::metadata(&p).ok();
        std::fs::write(&p, text).unwrap();
        // Not writable by group or others whatever the umask: a root zurg
        // refuses such a unit file (strict modes, src/unit/modes.rs).
        let mode = old.map_or(0o644, |m| {
            std::os::unix::fs::PermissionsExt::mode(&m.permissions()) & 0o7755
        });
        set_mode(&p, mode);
        p
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

pub struct Zurg {
    pub child: Child,
    lines: Receiver<String>,
    pub seen: Vec<String>,
    status: Option<ExitStatus>,
}

/// How to start zurg.
pub enum Mode {
    /// As PID 1 of a new pid namespace.
    Pid1,
    /// As a plain process (it makes itself a child subreaper).
    Plain,
    /// As PID 1 of a new pid namespace, inside network namespace NAME.
    Pid1In(String),
    /// As a plain process inside network namespace NAME.
    PlainIn(String),
    /// As PID 1 of a new pid namespace, started through a wrapper command
    /// (e.g. `prlimit --nofile=64:64`).
    Pid1Under(Vec<String>),
    /// As a plain process (not PID 1) inside the pid namespace whose PID 1
    /// has this host pid (`Namespace::init`).
    PlainInPidNs(i32),
}

impl Zurg {
    pub fn start(mode: Mode, args: &[&str]) -> Zurg {
        Self::start_with(mode, args, |_| {})
    }

    pub fn start_with(mode: Mode, args: &[&str], setup: impl FnOnce(&mut Command)) -> Zurg {
        let mut cmd = match mode {
            Mode::Pid1 => {
                let mut c = Command::new("unshare");
                c.args(["--pid", "--fork", "--kill-child", "--mount-proc", BIN]);
                c
            }
            Mode::Pid1Under(wrapper) => {
                let (program, args) = wrapper.split_first().expect("a wrapper command");
                let mut c = Command::new(program);
                c.args(args);
                c.args([
                    "unshare",
                    "--pid",
                    "--fork",
                    "--kill-child",
                    "--mount-proc",
                    BIN,
                ]);
                c
            }
            Mode::Plain => Command::new(BIN),
            Mode::Pid1In(ns) => {
                let mut c = Command::new("ip");
                c.args([
                    "netns",
                    "exec",
                    &ns,
                    "unshare",
                    "--pid",
                    "--fork",
                    "--kill-child",
                ]);
                c.args(["--mount-proc", BIN]);
                c
            }
            Mode::PlainIn(ns) => {
                let mut c = Command::new("ip");
                c.args(["netns", "exec", &ns, BIN]);
                c
            }
            Mode::PlainInPidNs(init) => {
                let mut c = nsenter(init);
                c.arg(BIN);
                c
            }
        };
        cmd.args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        setup(&mut cmd);
        Self::spawn_as_set_up(cmd)
    }

    /// Runs `cmd` (which must end up exec'ing zurg) and collects its
    /// stderr lines; for tests that need their own wrapper around zurg.
    pub fn spawn(mut cmd: Command) -> Zurg {
        cmd.stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped());
        Self::spawn_as_set_up(cmd)
    }

    fn spawn_as_set_up(mut cmd: Command) -> Zurg {
        let mut child = cmd.spawn().expect("start zurg");
        let lines = match child.stderr.take() {
            Some(stderr) => lines_of(stderr),
            // A test may send stderr elsewhere; then no lines arrive.
            None => channel().1,
        };
        Zurg {
            child,
            lines,
            seen: Vec::new(),
            status: None,
        }
    }

    /// Host pid of zurg itself: the unshare process's only child, or the
    /// process itself when not in a namespace.
    pub fn host_pid(&self) -> i32 {
        let me = self.child.id() as i32;
        let deadline = Instant::now() + DEADLINE;
        loop {
            // zurg itself first: a service it has just started may still
            // be named "zurg" between clone and the end of its exec.
            if comm(me).as_deref() == Some("zurg") {
                return me;
            }
            if let Some(kid) = children(me).first() {
                if comm(*kid).as_deref() == Some("zurg") {
                    return *kid;
                }
            }
            assert!(
                Instant::now() < deadline,
                "zurg never appeared under pid {me}"
            );
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    /// Waits for a stderr line matching `pred`; returns it. Lines seen while
    /// waiting are kept in `seen`. On timeout, panics with everything seen.
    pub fn wait_line(&mut self, what: &str, pred: impl Fn(&str) -> bool) -> String {
        self.try_wait_line(DEADLINE, &pred).unwrap_or_else(|| {
            panic!(
                "timed out waiting for {what}; zurg said:\n{}",
                self.seen.join("\n")
            )
        })
    }

    pub fn try_wait_line(
        &mut self,
        within: Duration,
        pred: &impl Fn(&str) -> bool,
    ) -> Option<String> {
        let deadline = Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.lines.recv_timeout(left) {
                Ok(line) => {
                    self.seen.push(line.clone());
                    if pred(&line) {
                        return Some(line);
                    }
                }
                Err(RecvTimeoutError::Timeout) | Err(RecvTimeoutError::Disconnected) => {
                    return None
                }
            }
        }
    }

    /// Waits for a line containing `needle`.
    pub fn expect(&mut self, needle: &str) -> String {
        self.wait_line(needle, |l| l.contains(needle))
    }

    /// Waits until some line, seen before or arriving now, contains
    /// `needle`; for events whose order relative to others is not defined.
    pub fn saw(&mut self, needle: &str) -> String {
        self.lines_now();
        if let Some(l) = self.seen.iter().find(|l| l.contains(needle)) {
            return l.clone();
        }
        self.expect(needle)
    }

    /// Lines seen so far (and any that are already queued).
    pub fn lines_now(&mut self) -> &[String] {
        while let Ok(line) = self.lines.try_recv() {
            self.seen.push(line);
        }
        &self.seen
    }

    /// Waits for zurg (or unshare) to exit; panics after the deadline.
    pub fn wait_exit(&mut self) -> ExitStatus {
        self.wait_exit_within(DEADLINE).unwrap_or_else(|| {
            let seen = self.lines_now().join("\n");
            panic!("zurg did not exit in time; it said:\n{seen}")
        })
    }

    pub fn wait_exit_within(&mut self, within: Duration) -> Option<ExitStatus> {
        if let Some(s) = self.status {
            return Some(s);
        }
        let deadline = Instant::now() + within;
        loop {
            if let Some(s) = self.child.try_wait().unwrap() {
                self.status = Some(s);
                return Some(s);
            }
            if Instant::now() >= deadline {
                return None;
            }
            std::thread::sleep(Duration::from_millis(5));
        }
    }

    pub fn signal(&self, signo: i32) {
        kill(self.host_pid(), signo);
    }

    /// Host pids of every process below zurg.
    pub fn descendants(&self) -> Vec<i32> {
        descendants(self.host_pid())
    }
}

impl Drop for Zurg {
    fn drop(&mut self) {
        if self.status.is_none() {
            let me = self.child.id() as i32;
            // zurg below unshare dies after unshare does (its parent-death
            // signal): wait for it too, so the next zurg on the same state
            // directory does not find its lock still held.
            let inner: Vec<i32> = children(me)
                .into_iter()
                .filter(|p| comm(*p).as_deref() == Some("zurg"))
                .collect();
            kill(me, 9);
            let _ = self.child.wait();
            // Below nsenter (PlainInPidNs) nothing passes the kill on: the
            // wait below ran out its whole DEADLINE (15 s a test).
            for &pid in &inner {
                kill(pid, 9);
            }
            let deadline = Instant::now() + DEADLINE;
            for pid in inner {
                while holds_files(pid) && Instant::now() < deadline {
                    std::thread::sleep(Duration::from_millis(5));
                }
            }
        }
    }
}

/// A pid namespace for zurgs that are not its PID 1, so that what they
/// leave behind when killed stays inside it. Its PID 1 is zurg's shim over
/// a long sleep, which reaps the orphans that land on it. Dropping it
/// SIGKILLs unshare, which takes the namespace and everything in it down.
pub struct Namespace {
    child: Child,
    init: i32,
}

impl Namespace {
    pub fn new() -> Namespace {
        let child = Command::new("unshare")
            .args(["--pid", "--fork", "--kill-child", "--mount-proc", BIN])
            .args(["--", "sleep", "1000000"])
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start unshare");
        let me = child.id() as i32;
        let mut init = None;
        // Ready once the shim has started its sleep: /proc is mounted by then.
        eventually("the namespace's PID 1 and its sleep", || {
            init = children(me)
                .into_iter()
                .find(|p| comm(*p).as_deref() == Some("zurg"))
                .filter(|p| children(*p).iter().any(|k| cmdline(*k) == "sleep 1000000"));
            init.is_some()
        });
        Namespace {
            child,
            init: init.unwrap(),
        }
    }

    /// Host pid of the namespace's PID 1.
    pub fn init(&self) -> i32 {
        self.init
    }

    /// Host pids of every process in the namespace but its PID 1, whoever
    /// started them (nsenter's children are not PID 1's descendants).
    pub fn processes(&self) -> Vec<i32> {
        let ns = |p: i32| std::fs::read_link(format!("/proc/{p}/ns/pid")).ok();
        let Some(mine) = ns(self.init) else {
            return Vec::new();
        };
        let Ok(entries) = std::fs::read_dir("/proc") else {
            return Vec::new();
        };
        entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
            .filter(|p| *p != self.init && ns(*p).as_ref() == Some(&mine))
            .collect()
    }

    /// Starts `args` inside the namespace (not as a child of zurg).
    pub fn spawn(&self, args: &[&str]) -> Child {
        nsenter(self.init)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("start nsenter")
    }
}

impl Drop for Namespace {
    fn drop(&mut self) {
        kill(self.child.id() as i32, 9);
        let _ = self.child.wait();
    }
}

/// unshare into a new pid namespace (and a private mount namespace) whose
/// first process is the shell `script`; it gets the arguments added to the
/// command as $1..., and ends with `exec "$@"` into zurg.
pub fn unshare_sh(script: &str) -> Command {
    let mut cmd = Command::new("unshare");
    cmd.args(["--pid", "--fork", "--kill-child", "--mount-proc"])
        .args(["sh", "-c", script, "wrap"]);
    cmd
}

/// nsenter into the pid and mount namespaces of host pid `init`, so the
/// program sees that namespace's /proc.
fn nsenter(init: i32) -> Command {
    let mut c = Command::new("nsenter");
    c.args(["--target", &init.to_string(), "--pid", "--mount"]);
    c
}

/// The pid a process has in its own (innermost) pid namespace.
pub fn ns_pid(host: i32) -> Option<i32> {
    let status = std::fs::read_to_string(format!("/proc/{host}/status")).ok()?;
    status
        .lines()
        .find_map(|l| l.strip_prefix("NSpid:"))?
        .split_whitespace()
        .last()?
        .parse()
        .ok()
}

/// `zurg run` on DIR/units, with its control socket and state in DIR.
pub fn run_in(dir: &TempDir, mode: Mode, extra: &[&str]) -> Zurg {
    run_in_with(dir, mode, extra, |_| {})
}

pub fn run_in_with(
    dir: &TempDir,
    mode: Mode,
    extra: &[&str],
    setup: impl FnOnce(&mut Command),
) -> Zurg {
    let paths = [
        dir.path().join("units"),
        dir.path().join("control.sock"),
        dir.path().join("state"),
    ];
    let [units, sock, state] = paths.each_ref().map(|p| p.to_str().unwrap());
    let mut args = vec!["run", "--units", units, "--socket", sock, "--state", state];
    args.extend_from_slice(extra);
    Zurg::start_with(mode, &args, setup)
}

/// Runs a client verb against the zurg whose socket is in DIR.
pub fn cli(dir: &TempDir, args: &[&str]) -> std::process::Output {
    cli_at(&dir.path().join("control.sock"), args)
}

fn cli_at(sock: &Path, args: &[&str]) -> std::process::Output {
    Command::new(BIN)
        .args(args)
        .env("ZURG_SOCKET", sock)
        .stdin(Stdio::null())
        .output()
        .unwrap()
}

/// `cli` on a thread of its own, so that the test can time restarts or
/// ask other things while zurg works on it.
pub fn cli_in_background(
    dir: &TempDir,
    args: &[&str],
) -> std::thread::JoinHandle<std::process::Output> {
    let sock = dir.path().join("control.sock");
    let args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
    std::thread::spawn(move || {
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        cli_at(&sock, &args)
    })
}

/// What a command said, for a failure message: its exit code, stdout and
/// stderr.
pub fn text(out: &std::process::Output) -> String {
    format!(
        "exit {:?}\nstdout: {}\nstderr: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// Stdout of a client verb against the zurg whose socket is in DIR, which
/// must succeed.
pub fn ok(dir: &TempDir, args: &[&str]) -> String {
    let out = cli(dir, args);
    assert!(
        out.status.success(),
        "zurg {args:?} failed with {:?}: {}",
        out.status.code(),
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

/// The `result` of a client verb run with `--json`, which must succeed.
/// `status` exits 1 when a service is failed (its answer is whole all the
/// same), so for it only the reply must be `ok`.
pub fn json(dir: &TempDir, args: &[&str]) -> serde_json::Value {
    let mut a = args.to_vec();
    a.push("--json");
    if a.first() != Some(&"status") {
        return serde_json::from_str::<serde_json::Value>(&ok(dir, &a)).unwrap()["result"].clone();
    }
    let out = cli(dir, &a);
    let reply: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap_or_else(|e| {
        panic!(
            "zurg {a:?} ({:?}) did not answer JSON: {e}: {}",
            out.status.code(),
            String::from_utf8_lossy(&out.stderr)
        )
    });
    assert!(
        reply["ok"] == true && matches!(out.status.code(), Some(0 | 1)),
        "zurg {a:?} failed with {:?}: {reply}",
        out.status.code()
    );
    reply["result"].clone()
}

/// `name`'s row of `zurg status --json` (null when there is none).
pub fn status_of(dir: &TempDir, name: &str) -> serde_json::Value {
    let out = cli(dir, &["status", name, "--json"]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["result"][0].clone()
}

/// What a client verb takes at most while something hangs off zurg's loop
/// (a journal, overrides.json, the state disk at boot): on 2 shared cores
/// a debug build answers in tens of ms; a loop stuck on the disk never
/// answers.
pub const ANSWER_WITHIN: Duration = Duration::from_secs(3);

/// The slowest `timed_cli` of this test process, for the figure a test
/// prints.
static SLOWEST_TIMED_US: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);

/// `cli`, which must answer within `ANSWER_WITHIN` (whether it succeeds is
/// the caller's to judge).
pub fn timed_cli(dir: &TempDir, args: &[&str]) -> std::process::Output {
    let t = Instant::now();
    let out = cli(dir, args);
    let took = t.elapsed();
    SLOWEST_TIMED_US.fetch_max(
        u64::try_from(took.as_micros()).unwrap_or(u64::MAX),
        Ordering::Relaxed,
    );
    assert!(took < ANSWER_WITHIN, "zurg {args:?} took {took:?}");
    out
}

/// The slowest `timed_cli` so far in this test process.
pub fn slowest_timed() -> Duration {
    Duration::from_micros(SLOWEST_TIMED_US.load(Ordering::Relaxed))
}

/// `status_of`, which must answer within `ANSWER_WITHIN`.
pub fn timed_status(dir: &TempDir, name: &str) -> serde_json::Value {
    let out = timed_cli(dir, &["status", name, "--json"]);
    serde_json::from_slice::<serde_json::Value>(&out.stdout).unwrap()["result"][0].clone()
}

/// `name`'s GPID from `zurg status --json`; it must have one.
pub fn gpid_of(dir: &TempDir, name: &str) -> String {
    let row = status_of(dir, name);
    row["gpid"]
        .as_str()
        .unwrap_or_else(|| panic!("{name} has no GPID: {row}"))
        .to_string()
}

/// `name`'s records from `zurg history --json`, which must succeed.
pub fn history(dir: &TempDir, name: &str) -> Vec<serde_json::Value> {
    json(dir, &["history", name]).as_array().unwrap().clone()
}

/// `s` as a TOML string, for a script or program text in a unit file.
pub fn toml_string(s: &str) -> String {
    toml::Value::String(s.to_string()).to_string()
}

/// A unit running `sh -c SCRIPT`, plus `extra` lines.
pub fn sh_unit(script: &str, extra: &str) -> String {
    format!(
        "exec = \"/bin/sh\"\nargs = [\"-c\", {}]\n{extra}",
        toml_string(script)
    )
}

/// Framed journal records of an earlier life: starts and exits of services
/// old0..old49 at build 1.0.0, numbered by `numbers`. Each record has a
/// GPID of its own, so no start has its exit (as a crash loop that never
/// wrote them leaves it), and boot closes the newest as lost.
pub fn old_journal(numbers: std::ops::Range<u64>) -> Vec<u8> {
    old_records(numbers, false)
}

/// `old_journal`, but each exit (an odd number) closes the start before
/// it: a journal boot has nothing to close in.
pub fn old_journal_closed(numbers: std::ops::Range<u64>) -> Vec<u8> {
    old_records(numbers, true)
}

fn old_records(numbers: std::ops::Range<u64>, closed: bool) -> Vec<u8> {
    let mut data = Vec::new();
    for i in numbers {
        let n = if closed && i % 2 == 1 { i - 1 } else { i };
        data.extend(zurg::journal::frame(&zurg::journal::Record {
            time_us: 1_000_000 + i,
            service: format!("old{}", i % 50),
            kind: if i % 2 == 0 {
                zurg::journal::Kind::Start
            } else {
                zurg::journal::Kind::Exit
            },
            gpid: format!("10.1.2.3:0:{}:{}", 1_000_000 + n, 100 + n),
            version: Some("1.0.0".into()),
            ..Default::default()
        }));
    }
    data
}

pub fn kill(pid: i32, signo: i32) {
    let sig = nix::sys::signal::Signal::try_from(signo).unwrap();
    let _ = nix::sys::signal::kill(nix::unistd::Pid::from_raw(pid), sig);
}

pub fn children(pid: i32) -> Vec<i32> {
    let mut out = Vec::new();
    if let Ok(tasks) = std::fs::read_dir(format!("/proc/{pid}/task")) {
        for t in tasks.flatten() {
            if let Ok(s) = std::fs::read_to_string(t.path().join("children")) {
                out.extend(s.split_whitespace().filter_map(|x| x.parse::<i32>().ok()));
            }
        }
    }
    out
}

pub fn descendants(root: i32) -> Vec<i32> {
    let mut out = Vec::new();
    let mut stack = children(root);
    while let Some(p) = stack.pop() {
        out.push(p);
        stack.extend(children(p));
    }
    out
}

pub fn comm(pid: i32) -> Option<String> {
    std::fs::read_to_string(format!("/proc/{pid}/comm"))
        .ok()
        .map(|s| s.trim().to_string())
}

pub fn cmdline(pid: i32) -> String {
    std::fs::read(format!("/proc/{pid}/cmdline"))
        .map(|b| {
            String::from_utf8_lossy(&b)
                .replace('\0', " ")
                .trim()
                .to_string()
        })
        .unwrap_or_default()
}

/// Whether `pid` may still hold open files (a lock): it has not exited, or
/// it has but threads of it still run. A process whose first thread has
/// exited shows as a zombie while its other threads (zurg's worker) are
/// still on their way out, and those still hold its descriptors.
fn holds_files(pid: i32) -> bool {
    let threads = std::fs::read_dir(format!("/proc/{pid}/task")).map_or(0, |d| d.count());
    state(pid).is_some_and(|s| s != 'Z') || threads > 1
}

/// Process state letter from /proc/PID/stat ('Z' for a zombie).
pub fn state(pid: i32) -> Option<char> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    stat.rsplit_once(')')?
        .1
        .split_whitespace()
        .next()?
        .chars()
        .next()
}

/// Whether process `pid` (a host pid) blocks signal `signo` now, from the
/// SigBlk mask of /proc/PID/status.
pub fn blocks(pid: i32, signo: i32) -> bool {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix("SigBlk:"))
                .and_then(|hex| u64::from_str_radix(hex.trim(), 16).ok())
        })
        .is_some_and(|mask| mask & (1u64 << (signo - 1)) != 0)
}

/// Waits, without pausing between looks, until `pid` blocks `signo`: the
/// first moment a signal sent to it can no longer get the default action.
pub fn until_blocks(pid: i32, signo: i32) {
    let deadline = Instant::now() + DEADLINE;
    while !blocks(pid, signo) {
        assert!(
            Instant::now() < deadline,
            "pid {pid} never blocked signal {signo}"
        );
        std::hint::spin_loop();
    }
}

/// Polls `cond` every few ms until it holds or the deadline passes. For
/// states that no event announces (a /proc entry, a file's content).
pub fn eventually(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + DEADLINE;
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// The pid number at the end of a line like "... started pid 42".
pub fn pid_in(line: &str) -> i32 {
    line.split_whitespace()
        .skip_while(|w| *w != "pid")
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no pid in {line:?}"))
}

/// The pids in an answer read from outside zurg's pid namespace, "api:
/// running, pid 4242 (zurg-pid 16)": the caller's (what the host's `kill`
/// takes) and zurg's own.
pub fn both_pids(answer: &str) -> (i32, i32) {
    let caller = pid_in(answer);
    let zurg = answer
        .split("(zurg-pid ")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("no zurg-pid in {answer:?}"));
    (caller, zurg)
}

/// A GPID's fields, read from its text `IP:PORT:START_US:PID`.
#[derive(Debug)]
pub struct GpidFields {
    pub ip: String,
    pub port: u16,
    pub start_us: u64,
    pub pid: u32,
}

/// The fields of GPID text `g`, which must have all four.
pub fn gpid_fields(g: &str) -> GpidFields {
    let p: Vec<&str> = g.split(':').collect();
    assert_eq!(p.len(), 4, "{g}");
    GpidFields {
        ip: p[0].to_string(),
        port: p[1].parse().unwrap(),
        start_us: p[2].parse().unwrap(),
        pid: p[3].parse().unwrap(),
    }
}

/// Host pid of a process below zurg whose command line contains `needle`.
pub fn find_below(z: &Zurg, needle: &str) -> i32 {
    let mut found = None;
    eventually(&format!("a process matching {needle:?}"), || {
        found = z
            .descendants()
            .into_iter()
            .find(|p| cmdline(*p).contains(needle));
        found.is_some()
    });
    found.unwrap()
}

/// Deploys a copy of `source` as build `version` of `name` under
/// DIR/opt/NAME/VERSION/bin/NAME; returns its path and md5. Each build
/// differs (trailing bytes do not change what an ELF runs).
pub fn deploy_build(dir: &TempDir, name: &str, version: &str, source: &str) -> (PathBuf, String) {
    use std::os::unix::fs::PermissionsExt;
    let path = dir.path().join(format!("opt/{name}/{version}/bin/{name}"));
    std::fs::create_dir_all(path.parent().unwrap()).unwrap();
    let mut bytes = std::fs::read(source).unwrap();
    bytes.extend_from_slice(version.as_bytes());
    std::fs::write(&path, bytes).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let sum = md5(&path);
    (path, sum)
}

/// The md5 of the file at `path`, as md5sum prints it.
pub fn md5(path: &Path) -> String {
    let out = Command::new("md5sum").arg(path).output().unwrap();
    String::from_utf8_lossy(&out.stdout)
        .split_whitespace()
        .next()
        .unwrap()
        .to_string()
}

/// `zurg upgrade NAME --version VERSION --md5 MD5 --window WINDOW` against
/// the zurg whose socket is in DIR.
pub fn upgrade(
    dir: &TempDir,
    name: &str,
    version: &str,
    md5: &str,
    window: &str,
) -> std::process::Output {
    cli(
        dir,
        &[
            "upgrade",
            name,
            "--version",
            version,
            "--md5",
            md5,
            "--window",
            window,
        ],
    )
}

/// A unit running `exec 1000` as build `version` with its md5.
pub fn build_unit(exec: &Path, version: &str, md5: &str) -> String {
    format!(
        "exec = \"{}\"\nargs = [\"1000\"]\nversion = \"{version}\"\nmd5 = \"{md5}\"\n",
        exec.display()
    )
}

/// zurg's stdout as lines (bytes, without the newline), read by a thread;
/// zurg must have been started with `cmd.stdout(Stdio::piped())`.
pub fn stdout_lines(z: &mut Zurg) -> Receiver<Vec<u8>> {
    let out = z
        .child
        .stdout
        .take()
        .expect("zurg started with a piped stdout");
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(out);
        loop {
            let mut line = Vec::new();
            match r.read_until(b'\n', &mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) => {
                    if line.last() == Some(&b'\n') {
                        line.pop();
                    }
                    if tx.send(line).is_err() {
                        break;
                    }
                }
            }
        }
    });
    rx
}

/// Host pid of the process whose pid in zurg's namespace is `pid`.
pub fn host_pid_in(z: &Zurg, pid: i64) -> i32 {
    let mut found = None;
    eventually(&format!("namespace pid {pid} below zurg"), || {
        found = z.descendants().into_iter().find(|h| {
            std::fs::read_to_string(format!("/proc/{h}/status"))
                .ok()
                .and_then(|s| {
                    s.lines()
                        .find(|l| l.starts_with("NSpid:"))
                        .and_then(|l| l.split_whitespace().last().map(str::to_string))
                })
                .is_some_and(|last| last == pid.to_string())
        });
        found.is_some()
    });
    found.unwrap()
}

/// `zurg ARGS` against DIR's zurg, with its stdout as lines on a channel:
/// for the streaming verbs (`events --follow`, `logs -f`).
pub fn cli_lines(dir: &TempDir, args: &[&str]) -> (Child, Receiver<String>) {
    let mut child = Command::new(BIN)
        .args(args)
        .env("ZURG_SOCKET", dir.path().join("control.sock"))
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("start the zurg client");
    let out = child.stdout.take().expect("the client's stdout");
    let rx = lines_of(out);
    (child, rx)
}

/// The lines `r` gives, passed on by a thread of its own until `r` ends
/// or gives something that is not a line of text, or the receiver goes.
pub fn lines_of(r: impl std::io::Read + Send + 'static) -> Receiver<String> {
    let (tx, rx) = channel();
    send_lines(r, tx);
    rx
}

/// `lines_of` onto a channel of the caller's, for several streams on one.
pub fn send_lines(r: impl std::io::Read + Send + 'static, tx: std::sync::mpsc::Sender<String>) {
    std::thread::spawn(move || {
        for line in BufReader::new(r).lines() {
            let Ok(line) = line else { break };
            if tx.send(line).is_err() {
                break;
            }
        }
    });
}

/// Every line a `cli_lines` client has left, once it has exited: its
/// reader thread may still be passing on what the client wrote last, so
/// this waits (within DEADLINE) for the end of its output.
pub fn rest_of(rx: &Receiver<String>) -> Vec<String> {
    let deadline = Instant::now() + DEADLINE;
    let mut lines = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        match rx.recv_timeout(left) {
            Ok(line) => lines.push(line),
            Err(std::sync::mpsc::RecvTimeoutError::Disconnected) => return lines,
            Err(std::sync::mpsc::RecvTimeoutError::Timeout) => {
                panic!("the client's output did not end within {DEADLINE:?}: {lines:?}")
            }
        }
    }
}

/// Waits (within DEADLINE) for a `cli_lines` client to exit: its exit code
/// and what it wrote to stderr.
pub fn wait_child(child: &mut Child) -> (Option<i32>, String) {
    let deadline = Instant::now() + DEADLINE;
    loop {
        if let Some(status) = child.try_wait().expect("try_wait") {
            let mut err = String::new();
            if let Some(stderr) = child.stderr.as_mut() {
                let _ = std::io::Read::read_to_string(stderr, &mut err);
            }
            return (status.code(), err);
        }
        assert!(Instant::now() < deadline, "the client did not exit");
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// The median of timings `v` (the upper one of an even count).
pub fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

/// CPU time (user + system) a process has used, in clock ticks.
pub fn cpu_ticks(pid: i32) -> u64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
    let fields: Vec<&str> = stat
        .rsplit_once(')')
        .unwrap()
        .1
        .split_whitespace()
        .collect();
    // utime and stime are fields 14 and 15; after the comm, 12 and 13.
    fields[11].parse::<u64>().unwrap() + fields[12].parse::<u64>().unwrap()
}

/// Clock ticks per second (what /proc/PID/stat counts in): Linux shows
/// user space USER_HZ, which is 100 on every architecture.
pub fn clock_ticks() -> u64 {
    100
}

/// Writes `path` until its file system is full (ENOSPC).
pub fn fill(path: &Path) {
    use std::io::Write;
    let mut f = std::fs::File::create(path).unwrap();
    let chunk = vec![0x55u8; 64 << 10];
    // bounded: the tmpfs is far smaller than this
    for _ in 0..1024 {
        if let Err(e) = f.write_all(&chunk) {
            assert_eq!(e.raw_os_error(), Some(libc::ENOSPC), "{e}");
            return;
        }
    }
    panic!("{} never filled up", path.display());
}

/// `n` clients connected to the control socket `sock` and held: more than
/// a zurg short of descriptors can keep. They connect on a thread, since a
/// full backlog would block; the last one, which zurg could not keep, has
/// been told it is out of file descriptors.
pub fn hold_more_clients_than_descriptors(
    sock: PathBuf,
    n: usize,
) -> Vec<std::os::unix::net::UnixStream> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let held: Vec<std::os::unix::net::UnixStream> = (0..n)
            .map(|_| std::os::unix::net::UnixStream::connect(&sock).unwrap())
            .collect();
        let _ = tx.send(held);
    });
    let held = rx
        .recv_timeout(DEADLINE)
        .unwrap_or_else(|_| panic!("{n} connects did not complete: zurg stopped accepting"));
    let last = held.last().unwrap();
    last.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut line = String::new();
    BufReader::new(last).read_line(&mut line).unwrap();
    assert!(line.contains("out of file descriptors"), "{line:?}");
    held
}

/// `zurg run` as PID 1 on DIR, in a mount namespace of its own where the
/// shell command `mount` runs first with `$state` set to the (absolute)
/// state directory. Returns zurg and the state directory as the test
/// reaches it, through /proc/PID/root.
pub fn run_with_state_mount(dir: &TempDir, mount: &str) -> (Zurg, PathBuf) {
    let state = dir.path().join("state");
    std::fs::create_dir_all(&state).unwrap();
    let [units, sock, state_s] = [
        dir.path().join("units"),
        dir.path().join("control.sock"),
        state.clone(),
    ]
    .map(|p| p.to_str().unwrap().to_string());
    let mut cmd = unshare_sh(&format!("state=\"$1\"; shift; {mount} && exec \"$@\""));
    cmd.args([&state_s, BIN, "run", "--units", &units])
        .args(["--socket", &sock, "--state", &state_s]);
    let mut z = Zurg::spawn(cmd);
    z.expect("loaded");
    let inside = PathBuf::from(format!("/proc/{}/root", z.host_pid()))
        .join(state.strip_prefix("/").unwrap());
    (z, inside)
}
