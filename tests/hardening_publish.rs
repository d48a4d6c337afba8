//! Publishing must never hold up the supervisor's loop (issue "Hardening"):
//! against zurg as PID 1 in a pid namespace.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::net::UdpSocket;
use std::time::Duration;

use common::{TempDir, Zurg, BIN};

/// A DNS server on loopback that takes queries and never answers.
fn silent_dns() -> (UdpSocket, String) {
    for last in 77..100 {
        let ip = format!("127.0.0.{last}");
        if let Ok(s) = UdpSocket::bind((ip.as_str(), 53)) {
            return (s, ip);
        }
    }
    panic!("no free loopback address for port 53");
}

#[test]
fn a_publisher_name_that_resolves_slowly_holds_up_no_service() {
    let (dns, ip) = silent_dns();
    let dir = TempDir::new("publish-dns");
    // Only this resolver, and it is waited for as long as glibc allows.
    let resolv = dir.write(
        "resolv.conf",
        &format!("nameserver {ip}\noptions timeout:30 attempts:1\n"),
    );
    dir.write(
        "units/svc.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n",
    );
    dir.write(
        "units/flaky.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"exit 1\"]\n",
    );
    let [units, sock, state] = ["units", "control.sock", "state"]
        .map(|p| dir.path().join(p).to_str().unwrap().to_string());
    // The namespace's own /etc/resolv.conf (unshare's mount namespace is
    // private): nothing changes for the host.
    let mut cmd =
        common::unshare_sh("mount --bind \"$1\" /etc/resolv.conf && shift && exec \"$@\"");
    cmd.args([resolv.to_str().unwrap(), BIN, "run"])
        .args(["--units", &units, "--socket", &sock, "--state", &state])
        .args(["--publish", "publisher.zurg-test.example:7000"]);
    let mut z = Zurg::spawn(cmd);

    // Before, zurg resolved the name before starting anything: 30 s, past
    // the harness's deadline.
    z.saw("[svc] started pid");
    for _ in 0..3 {
        z.expect("[flaky] started pid");
    }
    // The name really is being resolved, by the silent server.
    dns.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut buf = [0u8; 512];
    let (n, _) = dns
        .recv_from(&mut buf)
        .expect("zurg's query to reach the DNS server");
    assert!(n > 12, "a DNS query");
    assert!(
        !z.lines_now()
            .iter()
            .any(|l| l.contains("publisher") && l.contains("connected")),
        "{:?}",
        z.seen
    );
}
