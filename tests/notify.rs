//! The systemd notify protocol (docs/zurg.service): zurg run as a Type=notify
//! service, against a datagram socket the test listens on.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::io::IoSliceMut;
use std::os::fd::AsRawFd;
use std::os::linux::net::SocketAddrExt;
use std::os::unix::net::{SocketAddr, UnixDatagram};
use std::time::Duration;

use nix::sys::socket::sockopt::ReceiveTimestampns;
use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags};
use nix::sys::time::TimeSpec;

use common::{Mode, TempDir, Zurg, DEADLINE};

fn recv(sock: &UnixDatagram) -> String {
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let n = sock.recv(&mut buf).expect("no notify message in time");
    String::from_utf8_lossy(&buf[..n]).into_owned()
}

/// The next datagram and when the kernel queued it (SO_TIMESTAMPNS, on
/// the wall clock), which for a local datagram is when it was sent.
fn recv_stamped(sock: &UnixDatagram) -> (String, Duration) {
    let mut buf = [0u8; 4096];
    sock.set_read_timeout(Some(DEADLINE)).unwrap();
    let mut iov = [IoSliceMut::new(&mut buf)];
    let mut space = nix::cmsg_space!(TimeSpec);
    let msg = recvmsg::<()>(
        sock.as_raw_fd(),
        &mut iov,
        Some(&mut space),
        MsgFlags::empty(),
    )
    .expect("no notify message in time");
    let stamp = msg
        .cmsgs()
        .unwrap()
        .find_map(|c| match c {
            ControlMessageOwned::ScmTimestampns(t) => Some(Duration::from(t)),
            _ => None,
        })
        .expect("a datagram without its SO_TIMESTAMPNS stamp");
    let n = msg.bytes;
    (String::from_utf8_lossy(&buf[..n]).into_owned(), stamp)
}

/// How long process `pid`'s main thread has waited on a run queue, in
/// all (the second field of /proc/PID/schedstat, in ns).
fn run_delay(pid: u32) -> Duration {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/schedstat")).unwrap();
    let ns = stat
        .split_whitespace()
        .nth(1)
        .and_then(|f| f.parse().ok())
        .unwrap_or_else(|| panic!("no run_delay in /proc/{pid}/schedstat: {stat:?}"));
    Duration::from_nanos(ns)
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

    // WATCHDOG=1 at half of WATCHDOG_USEC (500 ms), within 10%. Timed by
    // the kernel's stamp of each datagram, taken as zurg sends it: when
    // the test itself is woken to read one is the test's scheduling, not
    // zurg's period. And zurg's own: on a loaded machine a ping is sent
    // late by however long zurg, woken on time, waited for a CPU, which
    // the kernel counts (run_delay): a gap may be longer by the wait
    // before its ping, and shorter by the wait before the previous one
    // (pings keep their rate from their deadlines). Idle, both are ~0.
    let pid = z.child.id();
    let mut waited = run_delay(pid);
    nix::sys::socket::setsockopt(&sock, ReceiveTimestampns, &true).unwrap();
    let (first, mut last) = recv_stamped(&sock);
    assert!(first.starts_with("WATCHDOG=1"), "{first}");
    let mut late_before = run_delay(pid) - waited;
    waited += late_before;
    let mut gaps = Vec::new();
    for _ in 0..3 {
        let (msg, at) = recv_stamped(&sock);
        let late = run_delay(pid) - waited;
        waited += late;
        let gap = at.checked_sub(last).expect("datagram stamps go forward");
        last = at;
        gaps.push((gap, late));
        assert!(
            msg.starts_with("WATCHDOG=1") && msg.contains("STATUS="),
            "{msg}"
        );
        assert!(
            gap + late_before >= Duration::from_millis(450)
                && gap <= Duration::from_millis(550) + late,
            "watchdog interval {gap:?}, want 500 ms ± 10% \
             (zurg waited {late_before:?} for a CPU before the previous ping, {late:?} before this; \
             intervals and waits so far {gaps:?})"
        );
        late_before = late;
    }
    eprintln!("watchdog intervals by the kernel's stamps, with zurg's wait for a CPU before each ping: {gaps:?}");
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
