//! Control of a host through the publisher (`zurg run --publish-control`,
//! `zurg publisher --operator-token-file`, `zurg --publisher ADDR --host H
//! VERB`): three hosts in network namespaces; the hosts never listen.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::time::{Duration, Instant};

use common::naming::*;
use common::*;
use serde_json::Value;

/// `zurg --publisher ADDR --operator-token-file F ARGS...`, run in the hub.
fn remote(hub: &str, addr: &str, token: &str, args: &[&str]) -> std::process::Output {
    command_in(Some(hub), BIN)
        .args(["--publisher", addr, "--operator-token-file", token])
        .args(args)
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap()
}

fn text(b: &[u8]) -> String {
    String::from_utf8_lossy(b).into_owned()
}

#[test]
fn operators_control_the_hosts_that_allow_it_and_only_those() {
    let net = Net::new(3);
    let hub = net.hub.clone();
    let addr = format!("{}:7300", net.hub_ip());
    let secrets = TempDir::new("remote-secrets");
    let host_token = secrets.write("host.token", "host-secret-1\n");
    let op_token = secrets.write("operator.token", "operator-secret-2\n");
    let (host_token, op_token) = (
        host_token.to_str().unwrap().to_string(),
        op_token.to_str().unwrap().to_string(),
    );
    let journal = TempDir::new("remote-journal");
    let jdir = journal.path().to_str().unwrap().to_string();
    let mut publisher = Publisher::start_at(
        Some(&hub),
        &addr,
        &[
            "--token-file",
            &host_token,
            "--operator-token-file",
            &op_token,
            "--journal",
            &jdir,
        ],
    );
    publisher.z.expect("remote control on: operator key op:");
    // Host 1 allows nothing; host 2 only status; host 3 status and restart.
    let control = [None, Some("status"), Some("status,restart")];
    let mut hosts: Vec<(TempDir, Zurg)> = control
        .iter()
        .enumerate()
        .map(|(i, verbs)| {
            let dir = TempDir::new(&format!("remote{i}"));
            dir.write(
                "units/api.toml",
                "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nport = 8080\n",
            );
            let mut extra = vec!["--publish", &addr, "--publish-token-file", &host_token];
            if let Some(v) = verbs {
                extra.extend(["--publish-control", v]);
            }
            let z = run_in(&dir, Mode::Pid1In(net.hosts[i].clone()), &extra);
            (dir, z)
        })
        .collect();
    for (dir, _) in &hosts {
        forwarder_state(dir, |s| s["connected"] == true);
        eventually("api running", || {
            status_of(dir, "api")["state"] == "running"
        });
    }
    let (h1, h2, h3) = (net.host_ip(0), net.host_ip(1), net.host_ip(2));

    // restart api on host 3: a new process, so a new GPID.
    let before = status_of(&hosts[2].0, "api")["gpid"].clone();
    let out = remote(&hub, &addr, &op_token, &["--host", &h3, "restart", "api"]);
    assert_eq!(
        out.status.code(),
        Some(0),
        "{}{}",
        text(&out.stdout),
        text(&out.stderr)
    );
    assert!(text(&out.stdout).contains("api"), "{}", text(&out.stdout));
    let after = status_of(&hosts[2].0, "api")["gpid"].clone();
    assert!(after.is_string() && after != before, "{before} -> {after}");

    // Host 1 did not opt in: refused, exit 4, and its api is untouched.
    let h1_before = status_of(&hosts[0].0, "api")["gpid"].clone();
    let out = remote(&hub, &addr, &op_token, &["--host", &h1, "restart", "api"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("does not allow remote `restart`"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(status_of(&hosts[0].0, "api")["gpid"], h1_before);
    // Host 2 allows status but not restart.
    let out = remote(&hub, &addr, &op_token, &["--host", &h2, "restart", "api"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));

    // The host token is not an operator token.
    let out = remote(&hub, &addr, &host_token, &["--host", &h3, "restart", "api"]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("host token, not the operator token"),
        "{}",
        text(&out.stderr)
    );
    assert_eq!(status_of(&hosts[2].0, "api")["gpid"], after);

    // Every host's services in one table, with a HOST column.
    let out = remote(&hub, &addr, &op_token, &["status", "--all-hosts"]);
    let table = text(&out.stdout);
    assert_eq!(out.status.code(), Some(0), "{table}{}", text(&out.stderr));
    assert!(table.starts_with("HOST"), "{table}");
    for ip in [&h1, &h2, &h3] {
        assert!(
            table
                .lines()
                .any(|l| l.starts_with(ip.as_str()) && l.contains("api")),
            "{ip} missing:\n{table}"
        );
    }
    assert!(
        text(&out.stderr).contains(&format!("host {h1} does not allow remote status")),
        "{}",
        text(&out.stderr)
    );

    // Both journals hold the requests, with the operator key and outcome.
    let local = json(&hosts[2].0, &["history"]);
    let remote_rec = local
        .as_array()
        .unwrap()
        .iter()
        .find(|r| r["kind"] == "remote_request")
        .cloned()
        .unwrap_or_else(|| panic!("no remote_request in {local}"));
    assert_eq!(remote_rec["service"], "api", "{remote_rec}");
    assert_eq!(remote_rec["remote"]["verb"], "restart", "{remote_rec}");
    assert_eq!(remote_rec["remote"]["ok"], true, "{remote_rec}");
    let key = remote_rec["remote"]["operator"]
        .as_str()
        .unwrap()
        .to_string();
    assert!(key.starts_with("op:"), "{key}");
    assert!(!remote_rec.to_string().contains("operator-secret"));
    let plain = ok(&hosts[2].0, &["history"]);
    assert!(
        plain.contains(&format!("restart by operator {key}: ok")),
        "{plain}"
    );

    let mut seen = Vec::new();
    eventually("the publisher's journal of the requests", || {
        seen = publisher_history(Some(&hub), &addr, &["--token-file", &host_token])
            .into_iter()
            .filter(|r| r["kind"] == "remote_request")
            .collect();
        seen.len() >= 3
    });
    let done = seen
        .iter()
        .find(|r| r["remote"]["ok"] == true && r["zurg"].as_str().unwrap().starts_with(&h3))
        .unwrap_or_else(|| panic!("{seen:?}"));
    assert_eq!(done["remote"]["operator"], key.as_str(), "{done}");
    assert!(
        seen.iter().any(|r| r["remote"]["ok"] == false
            && r["remote"]["error"] == "forbidden"
            && r["zurg"].as_str().unwrap().starts_with(&h1)),
        "{seen:?}"
    );

    // Host 2's zurg stops: "not connected", at once, exit 3.
    hosts[1].1.signal(libc::SIGTERM);
    hosts[1].1.wait_exit();
    eventually("host 2 gone from the publisher", || {
        let out = remote(&hub, &addr, &op_token, &["--host", &h2, "status"]);
        out.status.code() == Some(3)
    });
    let started = Instant::now();
    let out = remote(&hub, &addr, &op_token, &["--host", &h2, "status"]);
    assert!(
        started.elapsed() < Duration::from_secs(2),
        "{:?}",
        started.elapsed()
    );
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("is not connected"),
        "{}",
        text(&out.stderr)
    );
}

#[test]
fn remote_control_is_off_without_an_operator_token_and_verbs_are_checked_at_start() {
    let p = Publisher::start(None, &[]);
    let secrets = TempDir::new("remote-off");
    let token = secrets.write("op.token", "x");
    let out = std::process::Command::new(BIN)
        .args(["--publisher", &p.addr, "--operator-token-file"])
        .arg(&token)
        .args(["--host", "10.0.0.1", "status"])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("remote control is off"),
        "{}",
        text(&out.stderr)
    );
    // A client (no operator token) that sends a control request anyway is
    // refused and dropped.
    let secrets2 = TempDir::new("remote-client");
    let op = secrets2.write("op.token", "operator-only");
    let with_ops = Publisher::start(None, &["--operator-token-file", op.to_str().unwrap()]);
    let mut c = raw_client(&with_ops.addr);
    use std::io::Write;
    c.write_all(&frame(
        r#"{"t":"request","id":1,"host":"10.0.0.1","verb":{"verb":"restart","names":["api"]}}"#,
    ))
    .unwrap();
    let said = until_closed(c);
    assert!(said.contains("need the operator token"), "{said}");

    // An operator that gives no token, or a wrong one to each publisher of
    // a list, reached them and was refused: exit 4 (docs/exit-codes.md), as
    // for one refusing publisher, not 3 (unreachable).
    let ask = |args: &[&str]| {
        std::process::Command::new(BIN)
            .args(args)
            .args(["--host", "10.0.0.1", "status"])
            .stdin(std::process::Stdio::null())
            .output()
            .unwrap()
    };
    let out = ask(&["--publisher", &with_ops.addr]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("requires the operator token: give --operator-token-file"),
        "{}",
        text(&out.stderr)
    );
    // A host the publisher does not know: exit 3, and with --json the
    // error document a local error prints too.
    let out = std::process::Command::new(BIN)
        .args(["--publisher", &with_ops.addr, "--operator-token-file"])
        .arg(&op)
        .args(["--host", "10.0.0.1", "status", "--json"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(3), "{}", text(&out.stderr));
    let doc: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {:?}", text(&out.stdout)));
    assert_eq!(doc["ok"], false, "{doc}");
    assert_eq!(doc["error"]["code"], "host_not_connected", "{doc}");
    assert!(
        text(&out.stderr).contains("host 10.0.0.1 is not connected"),
        "{}",
        text(&out.stderr)
    );
    let both = format!("{0},{0}", with_ops.addr);
    let out = ask(&[
        "--publisher",
        &both,
        "--operator-token-file",
        token.to_str().unwrap(),
    ]);
    assert_eq!(out.status.code(), Some(4), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("no publisher answered"),
        "{}",
        text(&out.stderr)
    );

    // An unknown verb in --publish-control is a usage error naming it.
    let out = std::process::Command::new(BIN)
        .args([
            "run",
            "--units",
            "/nonexistent",
            "--publish",
            "127.0.0.1:1",
            "--publish-control",
            "restart,reboot",
        ])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(
        text(&out.stderr).contains("`reboot`"),
        "{}",
        text(&out.stderr)
    );
}

/// A raw publish-protocol connection that proved the operator token.
fn raw_operator(addr: &str, token: &str) -> std::net::TcpStream {
    use std::io::Write;
    let mut s = std::net::TcpStream::connect(addr).unwrap();
    s.write_all(&frame(
        r#"{"t":"hello","proto":1,"role":"operator","nonce":"00"}"#,
    ))
    .unwrap();
    let challenge = read_frame(&mut s, DEADLINE).expect("a challenge");
    let nonce = challenge["nonce"].as_str().unwrap();
    let mac = zurg::publish::proto::proof(token.as_bytes(), "operator", nonce);
    s.write_all(&frame(&format!(r#"{{"t":"auth","mac":"{mac}"}}"#)))
        .unwrap();
    let welcome = read_frame(&mut s, DEADLINE).expect("a welcome");
    assert_eq!(welcome["t"], "welcome", "{welcome}");
    s
}

/// Status rows without what changes between two calls (uptime).
fn steady(rows: &Value) -> Vec<Value> {
    rows.as_array()
        .unwrap_or_else(|| panic!("not rows: {rows}"))
        .iter()
        .map(|r| {
            let mut r = r.clone();
            let r_mut = r.as_object_mut().unwrap();
            r_mut.remove("uptime_ms");
            // The local client adds the pid as it sees it (it runs outside
            // zurg's pid namespace); a relayed answer is zurg's own.
            r_mut.remove("caller_pid");
            r
        })
        .collect()
}

#[test]
fn a_status_of_a_thousand_services_arrives_whole_through_the_publisher() {
    let secrets = TempDir::new("remote-big-secrets");
    let op_token = secrets.write("operator.token", "operator-secret-big\n");
    let op_token = op_token.to_str().unwrap().to_string();
    let p = Publisher::start(None, &["--operator-token-file", &op_token]);
    let dir = TempDir::new("remote-big");
    dir.write(
        "units/many.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\ninstances = 1000\n",
    );
    let _z = run_in(
        &dir,
        Mode::Pid1,
        &[
            "--publish",
            &p.addr,
            "--host-ip",
            "127.0.0.1",
            "--publish-control",
            "status",
        ],
    );
    forwarder_state(&dir, |s| s["connected"] == true);
    let mut local = Value::Null;
    eventually("1,000 services running", || {
        local = json(&dir, &["status"]);
        local
            .as_array()
            .is_some_and(|rows| rows.len() == 1000 && rows.iter().all(|r| r["state"] == "running"))
    });
    let local_size = local.to_string().len();
    assert!(local_size > 3 * 64 * 1024, "only {local_size} bytes");

    let out = std::process::Command::new(BIN)
        .args(["--publisher", &p.addr, "--operator-token-file", &op_token])
        .args(["--host", "127.0.0.1", "status", "--json"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let remote: Value = serde_json::from_slice(&out.stdout)
        .unwrap_or_else(|e| panic!("{e}: {}", text(&out.stdout)));
    assert_eq!(remote["ok"], true, "{remote}");
    assert_eq!(steady(&remote["result"]), steady(&local));

    let out = std::process::Command::new(BIN)
        .args(["--publisher", &p.addr, "--operator-token-file", &op_token])
        .args(["status", "--all-hosts", "--json"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out.stderr));
    let all: Value = serde_json::from_slice(&out.stdout).unwrap();
    let hosts = all["result"].as_array().unwrap();
    assert_eq!(hosts.len(), 1, "{}", text(&out.stderr));
    assert!(hosts[0]["host"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(steady(&hosts[0]["services"]), steady(&local));

    // On the wire: an operator that does not say `parts` (an older zurg)
    // gets the old answer, `too_large`, and one that does gets parts, each
    // within the 64 KiB frame limit, then the answer without a result.
    let mut op = raw_operator(&p.addr, "operator-secret-big");
    use std::io::Write;
    op.write_all(&frame(
        r#"{"t":"request","id":9,"host":"127.0.0.1","verb":{"verb":"status","names":[]}}"#,
    ))
    .unwrap();
    let old = read_frame(&mut op, DEADLINE).expect("an answer");
    assert_eq!(
        (&old["t"], &old["id"], &old["ok"], &old["error"]["code"]),
        (
            &Value::from("answer"),
            &Value::from(9),
            &Value::from(false),
            &Value::from("too_large")
        ),
        "{old}"
    );
    op.write_all(&frame(
        r#"{"t":"request","id":10,"host":"127.0.0.1","verb":{"verb":"status","names":[]},"parts":true}"#,
    ))
    .unwrap();
    let mut text_of_result = String::new();
    let mut index = 0;
    let answer = loop {
        let f = read_frame(&mut op, DEADLINE).expect("a part or the answer");
        if f["t"] != "part" {
            break f;
        }
        assert!(f.to_string().len() <= 64 * 1024, "part {index} too big");
        assert_eq!(
            (&f["id"], &f["index"]),
            (&Value::from(10), &Value::from(index))
        );
        text_of_result.push_str(f["data"].as_str().unwrap());
        index += 1;
    };
    assert!(index > 3, "{index} parts");
    assert_eq!(
        (&answer["t"], &answer["ok"]),
        (&Value::from("answer"), &Value::from(true))
    );
    assert!(answer.get("result").is_none(), "{answer}");
    let rows: Value = serde_json::from_str(&text_of_result).unwrap();
    assert_eq!(steady(&rows), steady(&local));

    // The table too: one line per service under the header.
    let out = std::process::Command::new(BIN)
        .args(["--publisher", &p.addr, "--operator-token-file", &op_token])
        .args(["status", "--all-hosts"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    let table = text(&out.stdout);
    assert_eq!(
        table.lines().filter(|l| l.contains("many@")).count(),
        1000,
        "{}",
        text(&out.stderr)
    );
}

/// A host holding a stolen host token, as a test-side client speaking the
/// host protocol: it allows `status` and `restart`, and answers each `run`
/// with what `answer` makes of the request.
struct HostileHost {
    stream: std::net::TcpStream,
}

impl HostileHost {
    fn connect(addr: &str, host_token: &str) -> HostileHost {
        use std::io::Write;
        let mut stream = std::net::TcpStream::connect(addr).unwrap();
        stream
            .write_all(&frame(
                r#"{"t":"hello","proto":1,"role":"forwarder","host":"127.0.0.1","zurg":"127.0.0.1:0:77:77","boot":"b","hostname":"stolen","nonce":"00","instance":"0123456789abcdef0123456789abcdef","control":["status","restart"]}"#,
            ))
            .unwrap();
        let challenge = read_frame(&mut stream, DEADLINE).expect("a challenge");
        let nonce = challenge["nonce"].as_str().unwrap();
        let mac = zurg::publish::proto::proof(host_token.as_bytes(), "forwarder", nonce);
        stream
            .write_all(&frame(&format!(r#"{{"t":"auth","mac":"{mac}"}}"#)))
            .unwrap();
        let welcome = read_frame(&mut stream, DEADLINE).expect("a welcome");
        assert_eq!(welcome["t"], "welcome", "{welcome}");
        HostileHost { stream }
    }

    /// Waits for the next `run` and sends `answer(run)` under its id.
    fn answer(&mut self, answer: impl Fn(&Value) -> Value) {
        use std::io::Write;
        let deadline = Instant::now() + DEADLINE;
        let run = loop {
            let left = deadline.saturating_duration_since(Instant::now());
            assert!(!left.is_zero(), "no run frame in time");
            if let Some(f) = read_frame(&mut self.stream, left) {
                if f["t"] == "run" {
                    break f;
                }
            }
        };
        let mut reply = answer(&run);
        reply["t"] = "answer".into();
        reply["id"] = run["id"].clone();
        self.stream.write_all(&frame(&reply.to_string())).unwrap();
    }
}

/// `zurg --publisher ADDR ARGS...` run while `host` answers: exit code,
/// stdout, stderr, as bytes.
fn operator_while(
    addr: &str,
    op_token: &str,
    args: &[&str],
    host: &mut HostileHost,
    answer: impl Fn(&Value) -> Value,
) -> (Option<i32>, Vec<u8>, Vec<u8>) {
    use std::io::Read;
    let mut child = std::process::Command::new(BIN)
        .args(["--publisher", addr, "--operator-token-file", op_token])
        .args(args)
        .stdin(std::process::Stdio::null())
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    host.answer(answer);
    let deadline = Instant::now() + DEADLINE;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        assert!(
            Instant::now() < deadline,
            "the operator's zurg did not exit"
        );
        std::thread::sleep(Duration::from_millis(5));
    };
    let (mut out, mut err) = (Vec::new(), Vec::new());
    child.stdout.take().unwrap().read_to_end(&mut out).unwrap();
    child.stderr.take().unwrap().read_to_end(&mut err).unwrap();
    (status.code(), out, err)
}

/// No byte a terminal would act on: ESC, the other C0 controls but
/// newline, and C1 (UTF-8 C2 80..9F).
fn terminal_safe(bytes: &[u8]) -> bool {
    let text = String::from_utf8_lossy(bytes);
    !text
        .chars()
        .any(|c| c.is_control() && c != '\n' || ('\u{202a}'..='\u{202e}').contains(&c))
}

#[test]
fn a_host_with_a_stolen_token_writes_neither_a_huge_text_nor_escapes_into_journal_or_terminal() {
    let secrets = TempDir::new("relay-bounds-secrets");
    let host_token = secrets.write("host.token", "host-secret-stolen\n");
    let op_token = secrets.write("operator.token", "operator-secret-7\n");
    let (host_token, op_token) = (
        host_token.to_str().unwrap().to_string(),
        op_token.to_str().unwrap().to_string(),
    );
    let journal = TempDir::new("relay-bounds-journal");
    let p = Publisher::start(
        None,
        &[
            "--token-file",
            &host_token,
            "--operator-token-file",
            &op_token,
            "--journal",
            journal.path().to_str().unwrap(),
        ],
    );
    let mut host = HostileHost::connect(&p.addr, "host-secret-stolen");

    // An error of some 60 KiB that retitles the window, clears the screen
    // and turns the rest red, in C0 and C1 forms.
    let hostile = format!(
        "\u{1b}]0;pwned\u{7}\u{1b}[2J\u{9b}31m{}",
        "x".repeat(60_000)
    );
    let marker = format!(" …[cut: {} bytes]", hostile.len());
    let said = hostile.clone();
    let (code, out, err) = operator_while(
        &p.addr,
        &op_token,
        &["--host", "127.0.0.1", "restart", "api"],
        &mut host,
        move |_| serde_json::json!({"ok": false, "error": {"code": "failed", "message": said}}),
    );
    let err_text = text(&err);
    assert_eq!(code, Some(1), "{err_text}");
    assert!(terminal_safe(&out) && terminal_safe(&err), "{err:?}");
    assert!(
        err_text.starts_with("zurg: \\x1b]0;pwned\\x07\\x1b[2J\\x9b31mxxx"),
        "{err_text}"
    );
    assert!(err_text.trim_end().ends_with(&marker), "{err_text}");
    assert!(err_text.len() < 1100, "{} bytes", err_text.len());

    // A status whose fields carry escapes: the table shows them escaped;
    // the JSON keeps the host's text exactly, and no raw C1 byte.
    let rows = serde_json::json!([{
        "name": "api\u{1b}[8m",
        "state": "running\u{9b}2J",
        "restarts": 0,
        "status_text": "\u{1b}]0;title\u{7}serving",
        "last_error": "\u{202e}gnp.exe",
    }]);
    let result = rows.clone();
    let (code, out, err) = operator_while(
        &p.addr,
        &op_token,
        &["--host", "127.0.0.1", "status"],
        &mut host,
        move |_| serde_json::json!({"ok": true, "result": result}),
    );
    assert_eq!(code, Some(0), "{}", text(&err));
    assert!(terminal_safe(&out) && terminal_safe(&err), "{out:?}");
    let table = text(&out);
    assert!(table.contains("api\\x1b[8m"), "{table}");
    assert!(table.contains("running\\x9b2J"), "{table}");
    assert!(table.contains("\\x1b]0;title\\x07serving"), "{table}");
    let result = rows.clone();
    let (code, out, _) = operator_while(
        &p.addr,
        &op_token,
        &["--host", "127.0.0.1", "status", "--json"],
        &mut host,
        move |_| serde_json::json!({"ok": true, "result": result}),
    );
    assert_eq!(code, Some(0));
    assert!(terminal_safe(&out), "{out:?}");
    let doc: Value = serde_json::from_slice(&out).unwrap_or_else(|e| panic!("{e}: {}", text(&out)));
    assert_eq!(doc["result"][0]["status_text"], rows[0]["status_text"]);
    assert_eq!(doc["result"][0]["state"], rows[0]["state"]);

    // The publisher's journal: the record holds the error cut and escaped,
    // and the journal on disk stays small.
    let history = |json: bool| {
        let mut c = std::process::Command::new(BIN);
        c.args([
            "history",
            "--publisher",
            &p.addr,
            "--token-file",
            &host_token,
        ]);
        if json {
            c.arg("--json");
        }
        let out = c.stdin(std::process::Stdio::null()).output().unwrap();
        assert!(out.status.success(), "{}", text(&out.stderr));
        out.stdout
    };
    let mut record = Value::Null;
    eventually("the publisher's journal of the restart", || {
        let doc: Value = serde_json::from_slice(&history(true)).unwrap();
        record = doc["result"]
            .as_array()
            .unwrap()
            .iter()
            .find(|r| r["kind"] == "remote_request" && r["remote"]["verb"] == "restart")
            .cloned()
            .unwrap_or(Value::Null);
        !record.is_null()
    });
    assert_eq!(record["remote"]["error"], "failed", "{record}");
    let reason = record["reason"].as_str().unwrap();
    assert!(reason.len() <= 1024, "{} bytes", reason.len());
    assert!(reason.starts_with("\\x1b]0;pwned\\x07"), "{reason}");
    assert!(reason.ends_with(&marker), "{reason}");
    assert!(!reason.chars().any(char::is_control), "{reason}");
    let plain = history(false);
    assert!(terminal_safe(&plain), "{plain:?}");
    let plain = text(&plain);
    let line = plain
        .lines()
        .find(|l| l.contains("restart by operator op:"))
        .unwrap_or_else(|| panic!("{plain}"));
    assert!(line.contains(&marker), "{line}");
    assert!(line.len() < 1300, "{} bytes", line.len());
    let on_disk: u64 = std::fs::read_dir(journal.path())
        .unwrap()
        .map(|e| e.unwrap().metadata().unwrap().len())
        .sum();
    assert!(on_disk < 8 * 1024, "{on_disk} bytes of journal");

    // A host name no host has is the operator's mistake, said at once.
    let out = std::process::Command::new(BIN)
        .args(["--publisher", &p.addr, "--operator-token-file", &op_token])
        .args(["--host", &"h".repeat(200), "status"])
        .stdin(std::process::Stdio::null())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(2), "{}", text(&out.stderr));
    assert!(text(&out.stderr).contains("--host of 200 bytes"));
}
