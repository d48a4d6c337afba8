//! The systemd notify protocol (docs/zurg.service): zurg run as a Type=notify
//! service, against a datagram socket the test listens on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::{Duration, Instant};

use common::{Mode, TempDir, Zurg, DEADLINE};

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let n = sock.recv(&mut buf).expect("no notify message in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

fn start(dir: &TempDir, notify_socket: &str, watchdog_usec: Option<&str>) -> Zurg {
    dir.write("units/a.toml", "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n");
    dir.write("units/b.toml", "exec = \"/bin/sleep\"\nargs = [\"1000\"]\n");
    let notify = notify_socket.to_string();
    let wd = watchdog_usec.map(str::to_string);
    common::run_in_with(dir, Mode::Plain, &[], move |cmd| {
        cmd.env("NOTIFY_SOCKET", &notify);
        if let Some(w) = &wd {
            cmd.env("WATCHDOG_USEC", w);
        }
    })
}

#[test]
fn ready_status_watchdog_and_stopping() {
    let dir = TempDir::new("notify");
    let path = dir.path().join("notify.sock");
    let sock = UnixDatagram::bind(&path).unwrap();
    let mut z = start(&dir, path.to_str().unwrap(), Some("1000000"));

    let ready = recv(&sock);
    assert!(ready.contains("READY=1"), "{ready}");
    assert!(ready.contains("STATUS=2 running, 0 not running"), "{ready}");
    // READY comes only once the initial services have been started: its
    // STATUS (above) already counts both as running
    z.saw("[a] started pid");
    z.saw("[b] started pid");

    // WATCHDOG=1 at half of WATCHDOG_USEC (500 ms), within 10%
    let first = recv(&sock);
    assert!(first.starts_with("WATCHDOG=1"), "{first}");
    let mut last = Instant::now();
    for _ in 0..3 {
        let msg = recv(&sock);
        let gap = last.elapsed();
        last = Instant::now();
        assert!(
            msg.starts_with("WATCHDOG=1") && msg.contains("STATUS="),
            "{msg}"
        );
        assert!(
            gap >= Duration::from_millis(450) && gap <= Duration::from_millis(550),
            "watchdog interval {gap:?}, want 500 ms ± 10%"
        );
    }

    z.signal(15);
    loop {
        let msg = recv(&sock);
        if msg.contains("STOPPING=1") {
            break;
        }
        assert!(msg.starts_with("WATCHDOG=1"), "unexpected {msg}");
    }
    assert_eq!(z.wait_exit().code(), Some(0));
}

#[test]
fn abstract_socket_and_no_watchdog_means_no_pings() {
    let name = format!("zurg-test-notify-{}", std::process::id());
    let addr = SocketAddr::from_abstract_name(name.as_bytes()).unwrap();
    let sock = UnixDatagram::bind_addr(&addr).unwrap();
    let dir = TempDir::new("notify-abstract");
    let mut z = start(&dir, &format!("@{name}"), None);
    assert!(recv(&sock).contains("READY=1"));
    // without WATCHDOG_USEC nothing more is sent until shutdown
    sock.set_read_timeout(Some(Duration::from_millis(700)))
        .unwrap();
    let mut buf = [0u8; 256];
    assert!(
        sock.recv(&mut buf).is_err(),
        "a message arrived without a watchdog"
    );
    z.signal(15);
    assert!(recv(&sock).contains("STOPPING=1"));
    z.wait_exit();
}
