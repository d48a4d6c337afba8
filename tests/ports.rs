//! `port = "auto"` and `socket = true`: zurg picks the port, or listens on
//! it itself and passes the socket as fd 3 (systemd's LISTEN_FDS).
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::{BufRead, BufReader};
use std::net::TcpStream;

use common::*;
use serde_json::Value;

fn gpid_port(dir: &TempDir, name: &str) -> u16 {
    let v: Value = serde_json::from_slice(&cli(dir, &["gpid", name, "--json"]).stdout).unwrap();
    let gpid = v["result"]["gpid"].as_str().unwrap();
    gpid_fields(gpid).port
}

fn main_pid(dir: &TempDir, name: &str) -> i64 {
    let v: Value = serde_json::from_slice(&cli(dir, &["status", name, "--json"]).stdout).unwrap();
    v["result"][0]["pid"].as_i64().unwrap()
}

#[test]
fn auto_port_reaches_env_args_and_gpid_and_survives_a_restart() {
    let dir = TempDir::new("port-auto");
    let out = dir.path().join("ports");
    dir.write(
        "units/web.toml",
        &format!(
            r#"exec = "/bin/sh"
args = ["-c", "echo $PORT $1 >> {}; exec sleep 1000", "sh", "${{PORT}}"]
port = "auto"
"#,
            out.display()
        ),
    );
    let mut z = run_in(&dir, Mode::Pid1, &[]);
    z.expect("[web] started pid");
    let read = || -> Vec<String> {
        std::fs::read_to_string(&out)
            .unwrap_or_default()
            .lines()
            .map(str::to_string)
            .collect()
    };
    eventually("the service to write its port", || read().len() == 1);
    let line = read()[0].clone();
    let (env_port, arg_port) = line.split_once(' ').unwrap();
    assert_eq!(env_port, arg_port, "{line}");
    let port: u16 = env_port.parse().unwrap();
    assert_ne!(port, 0);
    assert_eq!(gpid_port(&dir, "web"), port);

    assert!(cli(&dir, &["restart", "web"]).status.success());
    eventually("the restarted service to write its port", || {
        read().len() == 2
    });
    assert_eq!(read()[1], line, "the port stays while it is free");
    assert_eq!(gpid_port(&dir, "web"), port);
}

#[test]
fn socket_is_fd_3_with_listen_fds_and_keeps_connections_across_a_restart() {
    if !std::path::Path::new("/usr/bin/perl").exists() {
        skip(
            "socket activation test",
            "/usr/bin/perl (Debian's essential perl-base) is missing",
        );
        return;
    }
    let dir = TempDir::new("port-socket");
    // Answers each connection with its pid, from the socket it inherited;
    // says first what the environment told it.
    let server = r#"open(my $l, "+<&=", 3) or die "no fd 3: $!"; print STDERR "listen fds=$ENV{LISTEN_FDS} pid=$ENV{LISTEN_PID} me=$$ names=$ENV{LISTEN_FDNAMES}\n"; while (accept(my $c, $l)) { print $c "$$\n"; close $c }"#;
    dir.write(
        "units/echo.toml",
        &format!(
            "exec = \"/usr/bin/perl\"\nargs = [\"-e\", {}]\nport = \"auto\"\nsocket = true\nbind = \"127.0.0.1\"\nrestart_delay_ms = 300\n",
            toml_string(server)
        ),
    );
    let mut z = run_in(&dir, Mode::Pid1, &[]);
    let line = z.wait_line("the server's environment", |l| {
        l.starts_with("echo | listen fds=")
    });
    let me = line.split("me=").nth(1).unwrap().split(' ').next().unwrap();
    assert!(line.contains("fds=1 "), "{line}");
    assert!(
        line.contains(&format!("pid={me} ")),
        "LISTEN_PID is the service's own pid: {line}"
    );
    assert!(line.ends_with("names=echo"), "{line}");
    let port = gpid_port(&dir, "echo");
    assert_ne!(port, 0);

    let ask = || {
        let s = TcpStream::connect(("127.0.0.1", port)).unwrap();
        s.set_read_timeout(Some(DEADLINE)).unwrap();
        let mut answer = String::new();
        BufReader::new(s).read_line(&mut answer).unwrap();
        answer
            .trim()
            .parse::<i64>()
            .unwrap_or_else(|_| panic!("no pid in the answer {answer:?}"))
    };
    let first = main_pid(&dir, "echo");
    assert_eq!(ask(), first);

    // Killed: a connection made while no server runs (the restart waits
    // 300 ms) waits in the socket's backlog, because zurg holds the socket,
    // and the restarted process answers it. The connection is made only
    // once the old process is gone: one that is dying may still accept it.
    let host_pid = find_below(&z, "perl");
    kill(host_pid, 9);
    eventually("the killed server to be gone", || {
        matches!(state(host_pid), None | Some('Z'))
    });
    let answer = ask();
    assert_ne!(answer, first);
    assert_eq!(answer, main_pid(&dir, "echo"));
    assert_eq!(gpid_port(&dir, "echo"), port, "same port after the restart");
}

#[test]
fn a_taken_port_fails_the_start_with_a_clear_error() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().port();
    let dir = TempDir::new("port-taken");
    dir.write(
        "units/web.toml",
        &format!("exec = \"/bin/sleep\"\nargs = [\"1000\"]\nport = {port}\nsocket = true\nbind = \"127.0.0.1\"\n"),
    );
    let mut z = run_in(&dir, Mode::Pid1, &[]);
    let line = z.expect("[web] cannot listen on");
    assert!(line.contains(&format!("127.0.0.1:{port}")), "{line}");
    assert!(line.contains("in use"), "{line}");
    drop(taken);
}
