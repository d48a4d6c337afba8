//! Who a service runs as and with what (docs/units.md "Running as another
//! user, limits"): `user`/`group` with the user's groups and passwd
//! variables, root gone for good, rlimits/umask/nice/oom_score_adj as
//! /proc shows them, an ambient capability that binds a low port as a
//! plain user, env files, and every bad value reported while the other
//! units keep running. zurg runs as PID 1 in a pid namespace, as root.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;

const PYTHON: &str = "/usr/bin/python3";

/// A unit that runs `script` in /bin/sh, once. Its output goes to
/// stderr, which zurg labels on its own stderr, where the test reads.
fn sh_unit(script: &str, extra: &str) -> String {
    common::sh_unit(
        &format!("exec 1>&2; {script}"),
        &format!("restart = \"never\"\n{extra}\n"),
    )
}

/// A unit that runs a python3 program as `nobody`, once.
fn python_unit(program: &str, extra: &str) -> String {
    format!(
        "exec = \"{PYTHON}\"\nargs = [\"-c\", {}]\nrestart = \"never\"\nuser = \"nobody\"\n{extra}\n",
        toml_string(&format!("import sys\nsys.stdout = sys.stderr\n{program}"))
    )
}

fn need_python() {
    assert!(
        std::path::Path::new(PYTHON).exists(),
        "{PYTHON} is missing (scripts/test installs python3)"
    );
}

#[test]
fn a_service_as_nobody_has_its_ids_groups_and_variables_and_cannot_regain_root() {
    need_python();
    let dir = TempDir::new("creds-nobody");
    dir.write(
        "units/who.toml",
        &sh_unit(
            "grep -E '^(Uid|Gid|Groups):' /proc/$$/status | tr -s '\\t ' ' '; \
             echo \"env $HOME $USER $LOGNAME $SHELL\"",
            "user = \"nobody\"",
        ),
    );
    dir.write(
        "units/regain.toml",
        &python_unit(
            "import os\ntry:\n    os.setuid(0)\n    print('regained root')\nexcept PermissionError:\n    print('root is gone uid', os.getuid(), os.geteuid())",
            "",
        ),
    );
    dir.write(
        "units/grouped.toml",
        &sh_unit(
            "grep -E '^(Uid|Gid|Groups):' /proc/$$/status | tr -s '\\t ' ' '; echo \"grouped HOME=$HOME\"",
            "user = 65534\ngroup = \"root\"\nsupplementary_groups = [4242, \"nogroup\"]\nenv = { HOME = \"/from-env\" }",
        ),
    );
    let mut z = run_in(&dir, Mode::Pid1, &[]);
    z.saw("who | Uid: 65534 65534 65534 65534");
    z.saw("who | Gid: 65534 65534 65534 65534");
    z.saw("who | Groups: 65534");
    z.saw("who | env /nonexistent nobody nobody /usr/sbin/nologin");
    z.saw("regain | root is gone uid 65534 65534");
    // `group` replaces the user's groups; `env` wins over the passwd entry
    z.saw("grouped | Gid: 0 0 0 0");
    z.saw("grouped | Groups: 0 4242 65534");
    z.saw("grouped | grouped HOME=/from-env");
    assert!(!z.seen.iter().any(|l| l.contains("regained root")));
}

#[test]
fn limits_umask_nice_and_oom_score_adj_read_back_from_proc() {
    let dir = TempDir::new("creds-limits");
    // Run as nobody: a negative nice needs root, so it must come before
    // the switch. (Raising a hard limit or lowering the OOM score needs
    // CAP_SYS_RESOURCE, which a test container may not have.)
    dir.write(
        "units/limited.toml",
        &sh_unit(
            "grep -E '^Max (open files|core file size|processes|stack size)' /proc/self/limits | tr -s ' ' ' '; \
             grep Umask /proc/self/status | tr -s '\\t ' ' '; \
             echo nice $(cut -d' ' -f19 /proc/$$/stat); \
             echo oom $(cat /proc/$$/oom_score_adj)",
            "user = \"nobody\"\numask = \"027\"\nnice = -5\noom_score_adj = 500\n\
             rlimits = { nofile = 1234, core = \"unlimited\", nproc = [100, 200], stack = [8388608, \"unlimited\"] }",
        ),
    );
    let mut z = run_in(&dir, Mode::Pid1, &[]);
    z.saw("limited | Max open files 1234 1234 files");
    z.saw("limited | Max core file size unlimited unlimited bytes");
    z.saw("limited | Max processes 100 200 processes");
    z.saw("limited | Max stack size 8388608 unlimited bytes");
    z.saw("limited | Umask: 0027");
    z.saw("limited | nice -5");
    z.saw("limited | oom 500");
    // The score was zurg's own only for the clone: it is back to what zurg
    // inherited from this test.
    let ours = std::fs::read_to_string("/proc/self/oom_score_adj").unwrap();
    let zurgs = std::fs::read_to_string(format!("/proc/{}/oom_score_adj", z.host_pid())).unwrap();
    assert_eq!(zurgs, ours);
}

#[test]
fn an_ambient_net_bind_service_binds_a_low_port_as_nobody() {
    need_python();
    let dir = TempDir::new("creds-caps");
    // Tries low ports until one is free here; EACCES is the answer that
    // matters, so it stops at the first.
    let program = "import errno, os, socket\n\
        caps = {l.split(':')[0]: int(l.split()[1], 16) for l in open('/proc/self/status') if l.startswith('Cap')}\n\
        print('caps amb=%x bnd=%x eff=%x uid=%d' % (caps['CapAmb'], caps['CapBnd'], caps['CapEff'], os.getuid()))\n\
        for port in range(1000, 1024):\n    s = socket.socket()\n    try:\n        s.bind(('127.0.0.1', port))\n        print('bound a low port')\n        break\n    except OSError as e:\n        s.close()\n        if e.errno == errno.EACCES:\n            print('denied')\n            break\n";
    dir.write(
        "units/web.toml",
        &python_unit(program, "capabilities = [\"NET_BIND_SERVICE\"]"),
    );
    dir.write("units/plain.toml", &python_unit(program, ""));
    let mut z = run_in(&dir, Mode::Pid1, &[]);
    z.saw("web | caps amb=400 bnd=400 eff=400 uid=65534");
    z.saw("web | bound a low port");
    z.saw("plain | denied");
}

#[test]
fn env_files_quote_override_and_are_read_again_at_each_start() {
    let dir = TempDir::new("creds-envfile");
    let file = dir.write(
        "web.env",
        "# settings\nexport GREETING='hello # not a comment'\nQUOTED=\"say \\\"hi\\\"\"\nWHO=file\n",
    );
    let unit = |f: &std::path::Path| {
        sh_unit(
            "echo \"vars $GREETING|$QUOTED|$WHO|$EXTRA|$ZURG_SERVICE\"; exec sleep 1000",
            &format!(
                "restart = \"always\"\nenv_file = [\"{}\", \"-/nonexistent/optional.env\"]\nenv = {{ WHO = \"env\" }}",
                f.display()
            ),
        )
        .replace("restart = \"never\"\n", "")
    };
    dir.write("units/web.toml", &unit(&file));
    dir.write(
        "units/other.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    let mut z = run_in(&dir, Mode::Pid1, &[]);
    z.saw("web | vars hello # not a comment|say \"hi\"|env||web");

    // An edit takes effect at the next restart.
    std::fs::write(&file, "GREETING=changed\nEXTRA=new one\n").unwrap();
    assert!(cli(&dir, &["restart", "web"]).status.success());
    z.expect("web | vars changed||env|new one|web");

    // A bad line fails the start with the file and the line; the others run.
    std::fs::write(&file, "GOOD=1\n\nthis is not an assignment\n").unwrap();
    let _ = cli(&dir, &["restart", "web"]);
    z.expect(&format!(
        "[web] key `env_file`: {}:3: expected KEY=VALUE",
        file.display()
    ));
    assert_eq!(status_of(&dir, "other")["state"], "running");
}

#[test]
fn bad_values_are_reported_with_file_line_and_key_and_the_other_units_run() {
    let dir = TempDir::new("creds-bad");
    let bad = [
        (
            "user.toml",
            "user = \"no-such-user-zurg\"",
            "3:8: key `user`: no user \"no-such-user-zurg\" in /etc/passwd",
        ),
        (
            "group.toml",
            "group = \"no-such-group-zurg\"",
            "3:9: key `group`: no group \"no-such-group-zurg\" in /etc/group",
        ),
        (
            "rlimit.toml",
            "rlimits = { files = 10 }",
            "3:11: key `rlimits`: unknown limit `files` (known: as, core",
        ),
        (
            "soft.toml",
            "rlimits = { nofile = [20, 10] }",
            "key `rlimits`: `nofile`: the soft limit 20 is above the hard limit 10",
        ),
        (
            "nice.toml",
            "nice = -21",
            "3:8: key `nice`: must be -20 to 19, found -21",
        ),
        (
            "oom.toml",
            "oom_score_adj = 1001",
            "key `oom_score_adj`: must be -1000 to 1000, found 1001",
        ),
        (
            "umask.toml",
            "umask = \"0999\"",
            "key `umask`: must be an octal mode from 000 to 777",
        ),
        (
            "cap.toml",
            "capabilities = [\"NET_BIND\"]",
            "key `capabilities`: unknown capability \"NET_BIND\"",
        ),
        (
            "envfile.toml",
            "env_file = [\"relative.env\"]",
            "key `env_file`: must be an absolute path, found \"relative.env\"",
        ),
        (
            "var.toml",
            "env = { A = \"${NOPE}\" }",
            "key `env`: A: unknown variable ${NOPE} (zurg knows ${SERVICE}",
        ),
    ];
    for (name, line, _) in &bad {
        dir.write(
            &format!("units/{name}"),
            &format!("exec = \"/bin/sleep\"\nargs = [\"1000\"]\n{line}\n"),
        );
    }
    // Fails at start, not at load: the file is read at each start.
    dir.write(
        "units/unreadable.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nenv_file = [\"/nonexistent/zurg.env\"]\n",
    );
    dir.write("units/good.toml", "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nuser = \"nobody\"\nrlimits = { nofile = 1024 }\n");

    let units = dir.path().join("units");
    let out = std::process::Command::new(BIN)
        .args(["check", "--units", units.to_str().unwrap()])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    for (name, _, want) in &bad {
        let path = units.join(name);
        assert!(
            text.lines()
                .any(|l| l.starts_with(path.to_str().unwrap()) && l.contains(want)),
            "{name}: {want} in\n{text}"
        );
    }

    let mut z = run_in(&dir, Mode::Pid1, &[]);
    for (name, _, want) in &bad {
        let path = units.join(name);
        let line = z.saw(want);
        assert!(line.contains(path.to_str().unwrap()), "{line}");
    }
    z.saw(
        "[unreadable] key `env_file`: cannot read /nonexistent/zurg.env: No such file or directory",
    );
    eventually("good to run as nobody", || {
        status_of(&dir, "good")["state"] == "running"
    });
}

#[test]
fn a_user_added_later_is_found_at_reload_and_at_each_start() {
    let dir = TempDir::new("creds-later");
    let passwd = dir.write("passwd", &std::fs::read_to_string("/etc/passwd").unwrap());
    dir.write(
        "units/late.toml",
        &sh_unit(
            "echo \"late uid $(id -u) home $HOME\"; exec sleep 1000",
            "restart = \"always\"\nuser = \"zurg-late\"\ngroup = 0",
        )
        .replace("restart = \"never\"\n", ""),
    );
    dir.write(
        "units/other.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    // Our own /etc/passwd, in a mount namespace of zurg's own.
    let wrapper = [
        "unshare",
        "--mount",
        "sh",
        "-c",
        "mount --bind \"$0\" /etc/passwd && exec \"$@\"",
        passwd.to_str().unwrap(),
    ]
    .map(String::from)
    .to_vec();
    let mut z = run_in(&dir, Mode::Pid1Under(wrapper), &[]);
    z.saw("key `user`: no user \"zurg-late\" in /etc/passwd");
    eventually("other to run", || {
        status_of(&dir, "other")["state"] == "running"
    });

    // Added: a reload finds it (the file keeps its inode under the mount).
    let mut text = std::fs::read_to_string(&passwd).unwrap();
    text.push_str("zurg-late:x:4321:4321::/home/late:/bin/sh\n");
    std::fs::write(&passwd, &text).unwrap();
    assert!(cli(&dir, &["reload"]).status.success());
    z.expect("late | late uid 4321 home /home/late");

    // Changed: the next start reads the file again.
    std::fs::write(
        &passwd,
        text.replace("4321:4321::/home/late", "4322:4321::/home/later"),
    )
    .unwrap();
    assert!(cli(&dir, &["restart", "late"]).status.success());
    z.expect("late | late uid 4322 home /home/later");
}

#[test]
fn a_negative_nice_without_the_privilege_fails_the_start_naming_the_key() {
    // zurg without CAP_SYS_NICE, as a non-root zurg would be.
    let dir = TempDir::new("creds-nice");
    dir.write(
        "units/eager.toml",
        &sh_unit("echo should not run", "nice = -5"),
    );
    dir.write(
        "units/other.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    let wrapper = ["setpriv", "--bounding-set", "-sys_nice"]
        .map(String::from)
        .to_vec();
    let mut z = run_in(&dir, Mode::Pid1Under(wrapper), &[]);
    z.saw("[eager] cannot set `nice` for /bin/sh: Permission denied");
    eventually("other to run", || {
        status_of(&dir, "other")["state"] == "running"
    });
    assert!(!z.seen.iter().any(|l| l.contains("should not run")));
}

/// A limit the kernel refuses (`nofile` above fs.nr_open, even for root)
/// fails the start naming that limit and its value, not just the key: a
/// unit with several limits said "cannot set `rlimits`" and left the
/// guessing to the user.
#[test]
fn a_refused_rlimit_fails_the_start_naming_the_limit() {
    let nr_open: u64 = std::fs::read_to_string("/proc/sys/fs/nr_open")
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let too_many = nr_open + 1;
    let dir = TempDir::new("creds-rlimit");
    dir.write(
        "units/greedy.toml",
        &sh_unit(
            "echo should not run",
            &format!(
                "rlimits = {{ core = \"unlimited\", nofile = {too_many}, nproc = [512, 1024] }}"
            ),
        ),
    );
    let mut z = run_in(&dir, Mode::Pid1, &[]);
    z.saw(&format!(
        "[greedy] cannot set `rlimits` nofile = {too_many} for /bin/sh: Operation not permitted"
    ));
    assert!(!z.seen.iter().any(|l| l.contains("should not run")));
}

#[test]
fn service_version_and_port_variables_reach_args_env_and_cwd() {
    let dir = TempDir::new("creds-vars");
    std::fs::create_dir_all(dir.path().join("web-1.2")).unwrap();
    // `version` needs a versioned exec path.
    std::fs::create_dir_all(dir.path().join("1.2")).unwrap();
    std::os::unix::fs::symlink("/bin/sh", dir.path().join("1.2/sh")).unwrap();
    dir.write(
        "units/web.toml",
        &format!(
            "exec = \"{0}/1.2/sh\"\n\
             version = \"1.2\"\n\
             args = [\"-c\", \"exec 1>&2; echo \\\"vars $1 $X $(pwd) $PORT\\\"; exec sleep 1000\", \"sh\", \"${{SERVICE}}:${{PORT}}\"]\n\
             port = \"auto\"\n\
             env = {{ X = \"${{VERSION}}/${{PORT}}\" }}\n\
             cwd = \"{0}/${{SERVICE}}-${{VERSION}}\"\n",
            dir.path().display()
        ),
    );
    let mut z = run_in(&dir, Mode::Pid1, &[]);
    let line = z.saw("web | vars web:");
    // "web | vars web:PORT 1.2/PORT DIR/web-1.2 PORT"
    let words: Vec<&str> = line.split("vars ").nth(1).unwrap().split(' ').collect();
    let port = words[3];
    assert!(port.parse::<u16>().unwrap() > 0, "{line}");
    assert_eq!(words[0], format!("web:{port}"), "{line}");
    assert_eq!(words[1], format!("1.2/{port}"), "{line}");
    assert_eq!(
        words[2],
        format!("{}/web-1.2", dir.path().display()),
        "{line}"
    );
}
