//! `instances = N`: one unit file runs as `NAME@0` ... `NAME@N-1`, each with
//! its own port and GPID; `restart NAME` rolls through them one at a time.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use common::*;
use serde_json::Value;

fn gpid(dir: &TempDir, name: &str) -> String {
    let v: Value = serde_json::from_slice(&cli(dir, &["gpid", name, "--json"]).stdout).unwrap();
    v["result"]["gpid"].as_str().unwrap().to_string()
}

fn pid(dir: &TempDir, name: &str) -> i64 {
    status_of(dir, name)["pid"].as_i64().unwrap_or(0)
}

fn web(out: &std::path::Path) -> String {
    format!(
        r#"exec = "/bin/sh"
args = ["-c", "echo $1 $WHICH $PORT >> {}; exec sleep 1000", "sh", "${{INSTANCE}}"]
env = {{ WHICH = "w${{INSTANCE}}" }}
port = "auto"
instances = 3
"#,
        out.display()
    )
}

#[test]
fn instances_get_their_own_port_gpid_and_instance_number() {
    let dir = TempDir::new("instances");
    let out = dir.path().join("started");
    dir.write("units/web.toml", &web(&out));
    let _z = run_in(&dir, Mode::Pid1, &[]);
    let read = || std::fs::read_to_string(&out).unwrap_or_default();
    eventually("three instances to start", || read().lines().count() == 3);
    let text = read();
    let mut lines: Vec<&str> = text.lines().collect();
    lines.sort_unstable();
    let mut ports = Vec::new();
    for (i, line) in lines.iter().enumerate() {
        let f: Vec<&str> = line.split(' ').collect();
        assert_eq!(f[0], i.to_string(), "{text}");
        assert_eq!(f[1], format!("w{i}"), "{text}");
        let port: u16 = f[2].parse().unwrap();
        let g = gpid(&dir, &format!("web@{i}"));
        assert!(g.contains(&format!(":{port}:")), "{g} has port {port}");
        ports.push(port);
    }
    ports.sort_unstable();
    ports.dedup();
    assert_eq!(ports.len(), 3, "distinct ports: {text}");
    let gpids: std::collections::HashSet<String> =
        (0..3).map(|i| gpid(&dir, &format!("web@{i}"))).collect();
    assert_eq!(gpids.len(), 3);
    // `status web` lists the three.
    let v = json(&dir, &["status", "web"]);
    let names: Vec<&str> = v
        .as_array()
        .unwrap()
        .iter()
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    assert_eq!(names, ["web@0", "web@1", "web@2"]);
}

#[test]
fn restart_rolls_one_instance_at_a_time_and_name_at_i_restarts_one() {
    let dir = TempDir::new("instances-roll");
    let out = dir.path().join("started");
    dir.write("units/web.toml", &web(&out));
    let mut z = run_in(&dir, Mode::Pid1, &[]);
    for i in 0..3 {
        z.expect(&format!("[web@{i}] started pid"));
    }
    let before: Vec<i64> = (0..3).map(|i| pid(&dir, &format!("web@{i}"))).collect();
    ok(&dir, &["restart", "web@1"]);
    let after: Vec<i64> = (0..3).map(|i| pid(&dir, &format!("web@{i}"))).collect();
    assert_eq!(after[0], before[0]);
    assert_ne!(after[1], before[1]);
    assert_eq!(after[2], before[2]);

    // The first restart's lines may still be on their way: the roll's
    // lines start after them.
    z.saw(&format!("[web@1] started pid {}", after[1]));
    let mark = z.lines_now().len();
    ok(&dir, &["restart", "web"]);
    let now: Vec<i64> = (0..3).map(|i| pid(&dir, &format!("web@{i}"))).collect();
    for i in 0..3 {
        assert_ne!(now[i], after[i], "web@{i} restarted");
    }
    // Each instance is back before the next one is stopped: never two
    // down at once.
    let lines: Vec<String> = z.lines_now()[mark..]
        .iter()
        .filter(|l| l.contains("[web@"))
        .cloned()
        .collect();
    let at = |what: &str| {
        lines
            .iter()
            .position(|l| l.contains(what))
            .unwrap_or_else(|| panic!("{what} in {lines:#?}"))
    };
    for i in 0..2 {
        assert!(
            at(&format!("[web@{i}] started pid")) < at(&format!("[web@{}] stopped pid", i + 1)),
            "{lines:#?}"
        );
    }
}

#[test]
fn bad_instances_values_name_the_file_and_key_and_the_others_run() {
    let dir = TempDir::new("instances-bad");
    let unit = |extra: &str| format!("exec = \"/bin/sleep\"\nargs = [\"1000\"]\n{extra}\n");
    dir.write("units/zero.toml", &unit("instances = 0"));
    dir.write("units/neg.toml", &unit("instances = -2"));
    dir.write("units/huge.toml", &unit("instances = 5000"));
    dir.write("units/fixed.toml", &unit("port = 8080\ninstances = 2"));
    dir.write(
        "units/noinst.toml",
        "exec = \"/bin/sleep\"\nargs = [\"${INSTANCE}\"]\n",
    );
    dir.write("units/good.toml", &unit("instances = 2"));
    let mut z = run_in(&dir, Mode::Pid1, &[]);
    z.expect("zero.toml:3:13: key `instances`: must be 1 to 1024, found 0");
    z.saw("neg.toml:3:13: key `instances`: must be 1 to 1024, found -2");
    z.saw("huge.toml:3:13: key `instances`: must be 1 to 1024, found 5000");
    z.saw("fixed.toml:4:13: key `instances`: instances would all serve on port 8080");
    z.saw("noinst.toml:2:8: key `args`: uses ${INSTANCE}");
    z.saw("[good@1] started pid");
    assert_eq!(status_of(&dir, "good@0")["state"], "running");
}

#[test]
fn reload_with_another_count_adds_or_retires_only_the_surplus() {
    let dir = TempDir::new("instances-reload");
    let out = dir.path().join("started");
    dir.write("units/web.toml", &web(&out));
    let mut z = run_in(&dir, Mode::Pid1, &[]);
    for i in 0..3 {
        z.expect(&format!("[web@{i}] started pid"));
    }
    let before: Vec<i64> = (0..2).map(|i| pid(&dir, &format!("web@{i}"))).collect();
    dir.write(
        "units/web.toml",
        &web(&out).replace("instances = 3", "instances = 2"),
    );
    ok(&dir, &["reload"]);
    eventually("web@2 to be retired", || status_of(&dir, "web@2").is_null());
    let after: Vec<i64> = (0..2).map(|i| pid(&dir, &format!("web@{i}"))).collect();
    assert_eq!(after, before, "the kept instances run on");
    dir.write(
        "units/web.toml",
        &web(&out).replace("instances = 3", "instances = 4"),
    );
    ok(&dir, &["reload"]);
    z.expect("[web@3] started pid");
    let now: Vec<i64> = (0..2).map(|i| pid(&dir, &format!("web@{i}"))).collect();
    assert_eq!(now, before);
}

#[test]
fn an_instance_that_does_not_come_back_stops_the_roll() {
    // Ready only while the flag is absent: once it is, web@0's restart
    // exits before it is ready, whatever the timing.
    let dir = TempDir::new("instances-stop");
    let flag = dir.path().join("broken");
    dir.write(
        "units/web.toml",
        &format!(
            "exec = \"/bin/sh\"\nargs = [\"-c\", \"test -e {f} && exit 3; exec sleep 1000\"]\n\
             instances = 2\nready = {{ exec = [\"/bin/sh\", \"-c\", \"! test -e {f}\"] }}\n",
            f = flag.display()
        ),
    );
    let mut z = run_in(&dir, Mode::Pid1, &[]);
    z.expect("[web@1] started pid");
    ok(&dir, &["wait", "web"]);
    // Ready says the probe passed, not that each shell got past its own
    // `test`: a shell slower than its probe (under load) would find the
    // flag and exit 3, and web@1 would be gone before the restart is
    // asked. Both have exec'd sleep before the flag appears.
    for name in ["web@0", "web@1"] {
        eventually(&format!("{name} to run sleep"), || {
            comm(host_pid_in(&z, pid(&dir, name))).as_deref() == Some("sleep")
        });
    }
    let before = pid(&dir, "web@1");
    std::fs::write(&flag, "").unwrap();
    let out = cli(&dir, &["restart", "web"]);
    let text =
        String::from_utf8_lossy(&out.stderr).into_owned() + &String::from_utf8_lossy(&out.stdout);
    assert!(!out.status.success(), "{text}");
    assert!(text.contains("rolling restart stopped: web@0 is"), "{text}");
    assert!(text.contains("not restarted: web@1"), "{text}");
    assert_eq!(pid(&dir, "web@1"), before, "web@1 was left running");
}

#[test]
fn logs_of_a_unit_with_instances_shows_each_instance_labelled() {
    let dir = TempDir::new("instances-logs");
    dir.write(
        "units/web.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"echo shard ${INSTANCE}; exec sleep 1000\"]\ninstances = 2\nport = \"auto\"\n",
    );
    let _z = run_in(&dir, Mode::Pid1, &[]);
    let logs = |name: &str| {
        let out = cli(&dir, &["logs", name]);
        (
            out.status.code(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
        )
    };
    eventually("both instances' lines under `logs web`", || {
        let (code, text) = logs("web");
        code == Some(0) && text.contains("web@0 | shard 0\n") && text.contains("web@1 | shard 1\n")
    });
    // one instance by its name: its own lines, unlabelled
    assert_eq!(logs("web@1"), (Some(0), "shard 1\n".to_string()));
}

#[test]
fn a_verb_for_one_service_given_a_unit_with_instances_says_to_name_one() {
    let dir = TempDir::new("instances-one");
    dir.write(
        "units/web.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\ninstances = 3\nport = \"auto\"\n",
    );
    let mut z = run_in(&dir, Mode::Pid1, &[]);
    z.expect("[web@2] started pid");
    for verb in [
        &["gpid", "web"][..],
        &["signal", "web", "HUP"],
        &["rollback", "web"],
    ] {
        let out = cli(&dir, verb);
        assert_eq!(out.status.code(), Some(1), "{verb:?}");
        let err = String::from_utf8_lossy(&out.stderr);
        assert!(
            err.contains("`web` is a unit with 3 instances: name one, web@0 to web@2"),
            "{verb:?}: {err}"
        );
    }
    // an unknown name is still just unknown
    let err = String::from_utf8_lossy(&cli(&dir, &["gpid", "api"]).stderr).into_owned();
    assert!(err.contains("no service named `api`"), "{err}");
}

#[test]
fn history_of_a_unit_with_instances_shows_each_instance() {
    let dir = TempDir::new("instances-history");
    // Each instance sleeps for its own time, so that its process is found.
    dir.write(
        "units/web.toml",
        "exec = \"/bin/sleep\"\nargs = [\"100${INSTANCE}\"]\ninstances = 3\nport = \"auto\"\nrestart = \"never\"\n",
    );
    let mut z = run_in(&dir, Mode::Pid1, &[]);
    for i in 0..3 {
        z.expect(&format!("[web@{i}] started pid"));
    }
    kill(find_below(&z, "sleep 1001"), 9);
    z.expect("[web@1] ended with");
    let services = |records: &[Value]| -> Vec<(String, String)> {
        records
            .iter()
            .map(|r| {
                (
                    r["service"].as_str().unwrap().to_string(),
                    r["kind"].as_str().unwrap().to_string(),
                )
            })
            .collect()
    };
    eventually("web@1's exit in `history web`", || {
        services(&history(&dir, "web")).contains(&("web@1".into(), "exit".into()))
    });
    let all = history(&dir, "web");
    let mut starts: Vec<String> = services(&all)
        .into_iter()
        .filter(|(_, kind)| kind == "start")
        .map(|(name, _)| name)
        .collect();
    starts.sort_unstable();
    assert_eq!(starts, ["web@0", "web@1", "web@2"], "{all:?}");
    let exit = all.iter().find(|r| r["kind"] == "exit").unwrap();
    assert_eq!(
        (&exit["service"], &exit["exit"]["signal"]),
        (&Value::from("web@1"), &Value::from("SIGKILL"))
    );
    // as text, each line names its instance
    let text = ok(&dir, &["history", "web"]);
    assert_eq!(text.lines().count(), 4, "{text}");
    assert!(text.contains(" web@1 exit (SIGKILL) "), "{text}");
    for i in 0..3 {
        assert!(text.contains(&format!(" web@{i} start ")), "{text}");
    }
    // one instance by its name: its records alone
    assert_eq!(
        services(&history(&dir, "web@1")),
        [
            ("web@1".into(), "start".into()),
            ("web@1".into(), "exit".into())
        ]
    );
    // a name zurg does not run and never ran: said, as `logs` says it
    let out = cli(&dir, &["history", "nosuch"]);
    let err = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{err}");
    assert!(err.contains("no service named `nosuch`"), "{err}");
    assert!(out.stdout.is_empty());

    // the unit removed: its records still show under its name
    std::fs::remove_file(dir.path().join("units/web.toml")).unwrap();
    ok(&dir, &["reload"]);
    eventually("web@0 to be retired", || status_of(&dir, "web@0").is_null());
    let after = history(&dir, "web");
    assert!(after.len() >= 4, "{after:?}");
    assert!(after
        .iter()
        .all(|r| r["service"].as_str().is_some_and(|s| s.starts_with("web@"))));
    // records, none since now: an empty answer, not an unknown name
    assert_eq!(ok(&dir, &["history", "web", "--since", "0s"]), "");
}
