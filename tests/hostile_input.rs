//! Hostile input (issue 20): unit files that are huge, deeply nested, not
//! UTF-8, symlinked away or drowned among 100,000 entries; files that
//! someone other than root can write (strict modes); control requests from
//! other uids; and a publisher's peers that drip, or lie about their
//! sequence numbers. Each costs only itself, with a message that names it,
//! and the other services keep running and restarting promptly.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::Write;
use std::net::TcpStream;
use std::process::{Command, Output};
use std::time::{Duration, Instant};

use common::naming::*;
use common::run::{start, Run};
use common::{median, set_mode, Mode, TempDir, BIN, DEADLINE, SLEEPER};
use serde_json::Value;

/// `n` sleepers `web0`, `web1`, ... in DIR's units directory.
fn write_sleepers(dir: &TempDir, n: usize) -> Vec<String> {
    (0..n)
        .map(|i| {
            dir.write(&format!("units/web{i}.toml"), SLEEPER);
            format!("web{i}")
        })
        .collect()
}

fn run_on(dir: TempDir) -> Run {
    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    z.expect("loaded");
    Run::on(dir, z)
}

fn text_of(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

/// `zurg check` on DIR's units directory: its exit code and output.
fn check(dir: &TempDir) -> (Option<i32>, String) {
    let units = dir.path().join("units");
    let out = Command::new(BIN)
        .args(["check", "--units", units.to_str().unwrap()])
        .output()
        .unwrap();
    (out.status.code(), text_of(&out))
}

/// The line of TEXT that mentions PATH, or a panic showing TEXT.
fn line_about<'a>(text: &'a str, path: &std::path::Path) -> &'a str {
    let p = path.display().to_string();
    text.lines()
        .find(|l| l.contains(&format!("{p}:")))
        .unwrap_or_else(|| panic!("nothing about {p} in:\n{text}"))
}

// ------------------------------------------------------------ unit files

#[test]
fn huge_deep_binary_and_looping_unit_files_cost_only_themselves() {
    let dir = TempDir::in_memory("hostile-units");
    let names = write_sleepers(&dir, 10);
    let units = dir.path().join("units");
    // A 10 MB string: past the 1 MiB bound, so never read whole.
    let huge = dir.write(
        "units/huge.toml",
        &format!(
            "exec = \"/bin/sleep\"\nargs = [\"{}\"]\n",
            "x".repeat(10 << 20)
        ),
    );
    // A 1 MB args array: within the bound, so it is a unit like any other.
    let many = vec!["\"1\""; 250_000].join(",");
    assert!(many.len() > 900_000 && many.len() < 1 << 20);
    dir.write(
        "units/manyargs.toml",
        &format!("exec = \"/bin/true\"\nrestart = \"never\"\nargs = [{many}]\n"),
    );
    // Arrays nested 10,000 deep.
    let deep = dir.write(
        "units/deep.toml",
        &format!(
            "exec = \"/bin/sleep\"\nargs = {}{}\n",
            "[".repeat(10_000),
            "]".repeat(10_000)
        ),
    );
    // A byte that is not UTF-8 on line 2.
    let binary = units.join("binary.toml");
    std::fs::write(&binary, b"exec = \"/bin/sleep\"\nargs = [\"\xff\xfe\"]\n").unwrap();
    set_mode(&binary, 0o644);
    // A symlink to itself, and one to a unit outside the directory.
    let looping = units.join("loop.toml");
    std::os::unix::fs::symlink("loop.toml", &looping).unwrap();
    dir.write("elsewhere/outside.toml", SLEEPER);
    std::os::unix::fs::symlink("../elsewhere/outside.toml", units.join("outside.toml")).unwrap();
    // 100,000 more entries that are not units (editor backups).
    for i in 0..100_000 {
        std::fs::File::create(units.join(format!("old{i}.toml.bak"))).unwrap();
    }

    let want = |text: &str| {
        let l = line_about(text, &huge);
        assert!(
            l.ends_with(&format!(
                "{}: larger than 1048576 bytes, the most zurg reads of a unit file; skipped",
                huge.display()
            )),
            "{l}"
        );
        let l = line_about(text, &deep);
        assert!(l.contains(&format!("{}:2:", deep.display())), "{l}");
        assert!(l.contains("recurs"), "{l}");
        let l = line_about(text, &binary);
        assert!(
            l.contains(&format!("{}:2:10: not valid UTF-8", binary.display())),
            "{l}"
        );
        let l = line_about(text, &looping);
        assert!(l.contains("Too many levels of symbolic links"), "{l}");
    };
    let (code, said) = check(&dir);
    assert_eq!(code, Some(1), "{said}");
    want(&said);
    assert!(!said.contains("outside.toml"), "{said}");

    let t0 = Instant::now();
    let r = run_on(dir);
    eprintln!("loaded in {:?}", t0.elapsed());
    for n in names.iter().chain([&"outside".to_string()]) {
        r.wait_pid(n, None);
    }
    let quiet = median(names[..5].iter().map(|n| r.restart_latency(n)).collect());

    // Reloading it all (on the worker thread) while five restarts are timed.
    let victims: Vec<i64> = names[5..].iter().map(|n| r.wait_pid(n, None)).collect();
    let reload = common::cli_in_background(&r.dir, &["reload"]);
    let during = names[5..]
        .iter()
        .zip(&victims)
        .map(|(n, pid)| r.restart_latency_of(n, *pid))
        .max()
        .unwrap();
    let out = reload.join().unwrap();
    let said = text_of(&out);
    want(&said);
    eprintln!("restart quiet {quiet:?}, slowest during the reload {during:?}");
    assert!(
        during <= quiet * 10 + Duration::from_millis(300),
        "restart took {during:?} during the reload against {quiet:?} quiet"
    );
    for n in names.iter().chain([&"outside".to_string()]) {
        r.wait_pid(n, None);
    }
}

// ------------------------------------------------------------ strict modes

#[test]
fn strict_modes_cover_env_files_and_probe_commands_too() {
    let dir = TempDir::new("strict-more");
    let script = "#!/bin/sh\nexit 0\n";
    let env = dir.write("etc/api.env", "LD_PRELOAD=/tmp/x.so\n");
    set_mode(&env, 0o666);
    dir.write(
        "units/envw.toml",
        &format!("{SLEEPER}env_file = [\"{}\"]\n", env.display()),
    );
    let probe = dir.write("bin/check.sh", script);
    set_mode(&probe, 0o757);
    dir.write(
        "units/healthw.toml",
        &format!(
            "{SLEEPER}health = {{ exec = [\"{}\"], interval_ms = 1000 }}\n",
            probe.display()
        ),
    );
    let ready = dir.write("opendir/ready.sh", script);
    set_mode(&ready, 0o755);
    set_mode(&dir.path().join("opendir"), 0o777);
    dir.write(
        "units/readyw.toml",
        &format!("{SLEEPER}ready = {{ exec = [\"{}\"] }}\n", ready.display()),
    );
    // Well kept, and a command found by $PATH: both accepted.
    let kept = dir.write("etc/kept.env", "A=1\n");
    dir.write(
        "units/fine.toml",
        &format!(
            "{SLEEPER}env_file = [\"{}\"]\nready = {{ exec = [\"true\"] }}\n",
            kept.display()
        ),
    );
    let (code, said) = check(&dir);
    assert_eq!(code, Some(1), "{said}");
    let units = dir.path().join("units");
    let l = line_about(&said, &units.join("envw.toml"));
    assert!(
        l.contains("key `env_file`: strict modes:")
            && l.contains(&format!(
                "{} is writable by its group and others (mode 0666)",
                env.display()
            )),
        "{l}"
    );
    let l = line_about(&said, &units.join("healthw.toml"));
    assert!(
        l.contains("key `health`: strict modes:")
            && l.contains(&format!("`chmod go-w {}`", probe.display())),
        "{l}"
    );
    let l = line_about(&said, &units.join("readyw.toml"));
    assert!(
        l.contains("key `ready`: strict modes:")
            && l.contains(&format!(
                "{}, a directory above the program",
                dir.path().join("opendir").display()
            )),
        "{l}"
    );
    assert!(!said.contains("fine.toml"), "{said}");
}

#[test]
fn strict_modes_refuse_what_another_user_could_write() {
    let dir = TempDir::new("strict");
    dir.write("units/good.toml", SLEEPER);
    let units = dir.path().join("units");
    let group_w = dir.write("units/groupw.toml", SLEEPER);
    set_mode(&group_w, 0o664);
    let theirs = dir.write("units/theirs.toml", SLEEPER);
    std::os::unix::fs::chown(&theirs, Some(65534), None).unwrap();
    // A unit reached through a symlink is judged where it really is.
    let shared = dir.path().join("shared");
    dir.write("shared/linked.toml", SLEEPER);
    set_mode(&shared, 0o777);
    std::os::unix::fs::symlink(shared.join("linked.toml"), units.join("linked.toml")).unwrap();
    // Programs: one writable by others, one in a directory anyone can
    // write, and one the unit's own user owns (allowed).
    let script = "#!/bin/sh\nexec /bin/sleep 1000\n";
    let open_prog = dir.write("bin/open.sh", script);
    set_mode(&open_prog, 0o757);
    dir.write(
        "units/open.toml",
        &format!("exec = \"{}\"\n", open_prog.display()),
    );
    let in_open_dir = dir.write("opendir/prog.sh", script);
    set_mode(&in_open_dir, 0o755);
    set_mode(&dir.path().join("opendir"), 0o777);
    dir.write(
        "units/opendir.toml",
        &format!(
            "# the program's directory is 0777\nexec = \"{}\"\n",
            in_open_dir.display()
        ),
    );
    let own = dir.write("bin/own.sh", script);
    set_mode(&own, 0o755);
    std::os::unix::fs::chown(&own, Some(65534), Some(65534)).unwrap();
    dir.write(
        "units/own.toml",
        &format!("exec = \"{}\"\nuser = \"65534\"\n", own.display()),
    );

    let want = |text: &str| {
        let l = line_about(text, &group_w);
        let g = group_w.display();
        assert!(
            l.ends_with(&format!(
                "{g}: strict modes: {g} is writable by its group (mode 0664), and zurg runs as root; fix with `chmod go-w {g}`; skipped"
            )),
            "{l}"
        );
        let l = line_about(text, &theirs);
        let t = theirs.display();
        assert!(
            l.ends_with(&format!(
                "{t}: strict modes: {t} is owned by uid 65534, not root, and zurg runs as root; fix with `chown root {t}`; skipped"
            )),
            "{l}"
        );
        let l = line_about(text, &units.join("linked.toml"));
        assert!(
            l.contains(&format!(
                "strict modes: {}, a directory above the unit file",
                shared.display()
            )) && l.contains("is writable by its group and others (mode 0777)"),
            "{l}"
        );
        let l = line_about(text, &units.join("open.toml"));
        assert!(
            l.contains(&format!(
                "open.toml:1:8: key `exec`: strict modes: {} is writable by others (mode 0757)",
                open_prog.display()
            )) && l.contains(&format!("`chmod go-w {}`", open_prog.display())),
            "{l}"
        );
        let l = line_about(text, &units.join("opendir.toml"));
        assert!(
            l.contains(&format!(
                "opendir.toml:2:8: key `exec`: strict modes: {}, a directory above the program {},",
                dir.path().join("opendir").display(),
                in_open_dir.display()
            )),
            "{l}"
        );
        assert!(
            !text.contains("good.toml") && !text.contains("own.toml"),
            "{text}"
        );
    };
    let (code, said) = check(&dir);
    assert_eq!(code, Some(1), "{said}");
    want(&said);

    // Not root: nothing of this is enforced.
    let out = Command::new("setpriv")
        .args(["--reuid", "65534", "--regid", "65534", "--clear-groups"])
        .args([BIN, "check", "--units", units.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(!text_of(&out).contains("strict modes"), "{}", text_of(&out));

    let mut z = common::run_in(&dir, Mode::Pid1, &[]);
    let log: Vec<String> = (0..5).map(|_| z.expect("strict modes: ")).collect();
    want(&log.join("\n"));
    z.expect("2 added, 0 changed, 0 removed, 0 unchanged, 5 rejected");
    let r = Run::on(dir, z);
    let good = r.wait_pid("good", None);
    let own_pid = r.wait_pid("own", None);

    // The units directory itself turns group-writable: a reload refuses
    // all of it, names it, and leaves every running service as it was.
    set_mode(&units, 0o775);
    let out = r.cli(&["reload"]);
    let said = text_of(&out);
    assert!(
        said.contains(&format!(
            "strict modes: {} is writable by its group (mode 0775), and zurg runs as root; fix with `chmod go-w {}`; no unit is loaded from it",
            units.display(),
            units.display()
        )),
        "{said}"
    );
    assert_eq!(r.pid_of("good"), Some(good));
    assert_eq!(r.pid_of("own"), Some(own_pid));
    // Fixed, the files fixed too: everything runs.
    set_mode(&units, 0o755);
    set_mode(&group_w, 0o644);
    set_mode(&open_prog, 0o755);
    // (linked, opendir and theirs are still refused.)
    let said = text_of(&r.cli(&["reload"]));
    assert!(said.contains("added:     groupw open\n"), "{said}");
    r.wait_pid("groupw", None);
    r.wait_pid("open", None);
    assert_eq!(r.pid_of("good"), Some(good));
}

// ------------------------------------------------------------ other uids

#[test]
fn another_uid_may_read_at_most_and_a_stranger_cannot_connect() {
    let r = start(&[("web", SLEEPER)], &["--readers", "65534"]);
    let pid = r.wait_pid("web", None);
    for (args, verb) in [
        (&["signal", "web", "KILL"][..], "signal"),
        (
            &["upgrade", "web", "--version", "2", "--exec", "/bin/sleep"],
            "upgrade",
        ),
        (&["rollback", "web"], "rollback"),
        (&["shutdown"], "shutdown"),
    ] {
        let out = r.as_nobody(args);
        assert_eq!(out.status.code(), Some(1), "{args:?}: {out:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains(&format!("uid 65534 may not use `{verb}`")),
            "{args:?}: {err}"
        );
    }
    assert_eq!(r.pid_of("web"), Some(pid));
    assert!(r.as_nobody(&["status"]).status.success());

    // Without --readers the socket is 0600: another uid cannot connect.
    let r = start(&[("web", SLEEPER)], &[]);
    let pid = r.wait_pid("web", None);
    let out = r.as_nobody(&["status"]);
    assert_ne!(out.status.code(), Some(0), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.to_lowercase().contains("permission denied"), "{err}");
    assert_eq!(r.pid_of("web"), Some(pid));
}

// ------------------------------------------------------------ publisher

/// Writes BYTES one at a time every `gap` until the peer closes; how long
/// that took.
fn drip_until_closed(s: &mut TcpStream, bytes: &[u8], gap: Duration) -> Duration {
    let t0 = Instant::now();
    for b in bytes.iter().cycle() {
        if s.write_all(&[*b]).is_err() {
            break;
        }
        s.set_nonblocking(true).unwrap();
        let mut buf = [0u8; 4096];
        let closed = matches!(std::io::Read::read(s, &mut buf), Ok(0));
        s.set_nonblocking(false).unwrap();
        if closed {
            break;
        }
        assert!(t0.elapsed() < DEADLINE, "a dripping peer was never closed");
        // The attacker's pace, not a synchronisation.
        std::thread::sleep(gap);
    }
    t0.elapsed()
}

#[test]
fn a_hello_or_a_frame_that_drips_is_closed_at_its_deadline() {
    let p = Publisher::start(None, &["--lease-ms", "1000"]);
    let mut watcher = raw_client(&p.addr);
    watcher
        .write_all(&frame(r#"{"t":"resolve","name":"web","watch":true}"#))
        .unwrap();
    assert_eq!(next(&mut watcher)["t"], "endpoints");
    assert_eq!(next(&mut watcher)["t"], "synced");

    // A forwarder, welcomed, that drips an event a byte at a time: never a
    // whole frame, so it is silent, and closed after its lease.
    let mut fwd = RawForwarder::connect(&p.addr, 61);
    let event = frame(&format!(
        r#"{{"t":"event","seq":1,"kind":"start","time_us":1,"endpoint":{},"pid":9}}"#,
        fwd.endpoint("web", 1)
    ));
    let took = drip_until_closed(&mut fwd.stream, &event, Duration::from_millis(50));
    assert!(
        took >= Duration::from_millis(900) && took < Duration::from_secs(5),
        "{took:?}"
    );

    // A hello dripped a byte every 200 ms: closed 10 s after connecting,
    // while an honest forwarder is served meanwhile.
    let hello = frame(
        r#"{"t":"hello","proto":1,"role":"forwarder","host":"127.0.0.1","zurg":"127.0.0.1:0:62:62","nonce":"00","instance":"00000000000000000000000000000062"}"#,
    );
    let addr = p.addr.clone();
    let dripper = std::thread::spawn(move || {
        let mut s = TcpStream::connect(&addr).unwrap();
        drip_until_closed(
            &mut s,
            &hello[..hello.len() - 1],
            Duration::from_millis(200),
        )
    });
    let mut honest = RawForwarder::connect(&p.addr, 63);
    honest.churn("web", 1);
    let up = next(&mut watcher);
    assert_eq!(
        (up["t"].as_str(), up["change"].as_str()),
        (Some("change"), Some("up")),
        "{up}"
    );
    let took = dripper.join().unwrap();
    assert!(
        took >= Duration::from_millis(9500) && took < Duration::from_secs(14),
        "{took:?}"
    );
}

fn next(s: &mut TcpStream) -> Value {
    read_frame(s, DEADLINE).expect("a frame")
}

/// GPID -> how many records of KIND name it.
fn counts(records: &[Value], kind: &str) -> std::collections::BTreeMap<String, usize> {
    let mut m = std::collections::BTreeMap::new();
    for r in records.iter().filter(|r| r["kind"] == kind) {
        *m.entry(r["gpid"].as_str().unwrap().to_string())
            .or_default() += 1;
    }
    m
}

#[test]
fn a_forwarder_that_lies_about_seqs_applies_nothing_twice() {
    let journal = TempDir::new("liar-journal");
    let jdir = journal.path().to_str().unwrap().to_string();
    let p = Publisher::start(None, &["--journal", &jdir]);
    let dir = TempDir::new("liar-honest");
    dir.write(
        "units/api.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nport = 8080\n",
    );
    let mut z = common::run_in(
        &dir,
        Mode::Pid1,
        &["--publish", &p.addr, "--host-ip", "127.0.0.1"],
    );
    z.expect("[api] started pid");

    // The liar: start and exit of one process, then the exit again under
    // the same seq, the start again under an older one, and a jump.
    let mut liar = RawForwarder::connect(&p.addr, 71);
    let eps = [liar.endpoint("web", 1), liar.endpoint("web", 2)];
    let ev = |seq: u64, kind: &str, i: usize| {
        frame(&format!(
            r#"{{"t":"event","seq":{seq},"kind":"{kind}","time_us":1,"endpoint":{},"pid":9}}"#,
            eps[i - 1]
        ))
    };
    let lies = [
        (1, "start", 1),
        (2, "exit", 1),
        (2, "exit", 1),
        (1, "start", 1),
        (10, "start", 2),
    ];
    for (seq, kind, i) in lies {
        let bytes = ev(seq, kind, i);
        liar.stream.write_all(&bytes).unwrap();
        let ack = next(&mut liar.stream);
        assert_eq!(ack["t"], "ack", "{ack}");
    }

    // Meanwhile the honest zurg's service dies three times.
    for _ in 0..3 {
        let before = common::status_of(&dir, "api")["gpid"].clone();
        assert!(common::cli(&dir, &["signal", "api", "KILL"])
            .status
            .success());
        common::eventually("api restarted", || {
            let s = common::status_of(&dir, "api");
            s["state"] == "running" && s["gpid"] != before
        });
    }
    forwarder_state(&dir, |s| s["connected"] == true && s["acked"] == s["seq"]);

    let hosts = resolve(None, &p.addr, &["--all"])["hosts"].clone();
    let host = |zurg: &str| {
        hosts
            .as_array()
            .unwrap()
            .iter()
            .find(|h| h["zurg"] == zurg)
            .unwrap_or_else(|| panic!("no host {zurg} in {hosts}"))
            .clone()
    };
    let l = host(&liar.zurg);
    assert_eq!(
        (
            l["seq"].as_u64(),
            l["duplicates"].as_u64(),
            l["gaps"].as_u64()
        ),
        (Some(10), Some(2), Some(7)),
        "{l}"
    );
    let own = common::json(&dir, &["version"])["publish"].clone();
    let honest_zurg = common::json(&dir, &["version"])["gpid"]
        .as_str()
        .unwrap()
        .to_string();
    let h = host(&honest_zurg);
    assert_eq!(
        (h["duplicates"].as_u64(), h["gaps"].as_u64()),
        (Some(0), Some(0)),
        "{h} {own}"
    );

    // Exactly once at the publisher: the honest host's exits are zurg's
    // own, each once; the liar's one process has one start and one exit.
    let local = common::history(&dir, "api");
    let remote = publisher_history(None, &p.addr, &["api"]);
    let local_exits = counts(&local, "exit");
    assert_eq!(local_exits.len(), 3, "{local:?}");
    assert_eq!(counts(&remote, "exit"), local_exits, "{remote:?}");
    assert_eq!(
        counts(&remote, "start"),
        counts(&local, "start"),
        "{remote:?}"
    );
    let lied = publisher_history(None, &p.addr, &["web"]);
    let g = "127.0.0.1:8080:1764000000000000:1".to_string();
    assert_eq!(counts(&lied, "exit").get(&g), Some(&1), "{lied:?}");
    assert_eq!(counts(&lied, "start").get(&g), Some(&1), "{lied:?}");
    assert_eq!(
        counts(&lied, "start").len(),
        2,
        "the jump's start counts: {lied:?}"
    );
}
