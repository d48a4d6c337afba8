//! The systemd notify protocol, spoken directly: one datagram per message to
//! `$NOTIFY_SOCKET` (a path, or an abstract name when it starts with '@').
//!
//! Only active when systemd (or anything else) set NOTIFY_SOCKET; the
//! variables are removed from zurg's environment so services do not talk to
//! zurg's supervisor by mistake. Sending never blocks the loop: the socket is
//! non-blocking and a lost datagram is only logged.

use std::io;
use std::os::fd::AsRawFd;
use std::os::unix::net::{SocketAddr, UnixDatagram};

#[derive(Debug)]
pub struct Notifier {
    sock: UnixDatagram,
    addr: SocketAddr,
    /// Half of $WATCHDOG_USEC, when the watchdog is on and meant for us.
    pub watchdog_interval_ms: Option<u64>,
}

fn address(path: &str) -> io::Result<SocketAddr> {
    if let Some(name) = path.strip_prefix('@') {
        use std::os::linux::net::SocketAddrExt;
        SocketAddr::from_abstract_name(name.as_bytes())
    } else {
        SocketAddr::from_pathname(path)
    }
}

impl Notifier {
    /// Reads and clears NOTIFY_SOCKET, WATCHDOG_USEC and WATCHDOG_PID.
    /// `None` when zurg is not run under a notify-aware manager.
    pub fn from_env() -> Option<io::Result<Notifier>> {
        let path = std::env::var("NOTIFY_SOCKET").ok()?;
        let usec = std::env::var("WATCHDOG_USEC").ok();
        let wpid = std::env::var("WATCHDOG_PID").ok();
        // Safe here: called during set-up, before any thread or child exists.
        std::env::remove_var("NOTIFY_SOCKET");
        std::env::remove_var("WATCHDOG_USEC");
        std::env::remove_var("WATCHDOG_PID");
        let for_us = wpid.is_none_or(|p| p.parse::<u32>().ok() == Some(std::process::id()));
        let watchdog_interval_ms = usec
            .and_then(|u| u.parse::<u64>().ok())
            .filter(|u| *u > 0 && for_us)
            .map(|u| (u / 2000).max(1));
        Some((|| {
            let sock = UnixDatagram::unbound()?;
            sock.set_nonblocking(true)?;
            Ok(Notifier {
                sock,
                addr: address(&path)?,
                watchdog_interval_ms,
            })
        })())
    }

    pub fn send(&self, msg: &str) -> io::Result<()> {
        self.sock
            .send_to_addr(msg.as_bytes(), &self.addr)
            .map(|_| ())
    }
}

/// When the watchdog ping after the one due at `due_ms` is due, `now_ms`
/// being when that one was sent: a fixed rate from the pings' own
/// deadlines, so the loop's lateness in sending one (a busy turn, a
/// loaded CPU) is not added to every period after it. After a stall of a
/// whole period or more the next comes a full period after this one,
/// rather than a burst of pings making up for the missed ones.
pub fn next_watchdog_ping(due_ms: u64, now_ms: u64, interval_ms: u64) -> u64 {
    let next = due_ms.saturating_add(interval_ms);
    if next > now_ms {
        next
    } else {
        now_ms.saturating_add(interval_ms)
    }
}

/// The receiving side: a service's own notify socket (`ready = "notify"`,
/// `watchdog_ms`), a non-blocking datagram socket with SO_PASSCRED so each
/// message carries its sender's pid as the kernel saw it.
#[derive(Debug)]
pub struct NotifySocket {
    sock: UnixDatagram,
    /// What `NOTIFY_SOCKET` says: the path, or `@name` for an abstract one.
    pub address: String,
}

/// One datagram and the pid that sent it (0 when the sender is outside
/// zurg's pid namespace, or sent no credentials).
#[derive(Debug)]
pub struct Received {
    pub len: usize,
    pub pid: i32,
    /// The sender's uid as the kernel saw it (`u32::MAX` without
    /// credentials): still true when the sender has exited since.
    pub uid: u32,
}

impl NotifySocket {
    /// Binds `path` (replacing a stale socket file) with mode 0666: anyone
    /// may send, the credentials decide what counts, and a service that
    /// drops privileges can still reach it. A path too long for a socket
    /// address (108 bytes) falls back to the abstract name `fallback`.
    pub fn bind(path: &std::path::Path, fallback: &str) -> io::Result<NotifySocket> {
        use std::os::unix::ffi::OsStrExt;
        if path.as_os_str().as_bytes().len() >= 108 {
            return NotifySocket::bind_abstract(fallback);
        }
        match std::fs::remove_file(path) {
            Ok(()) => {}
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(e),
        }
        let sock = super::with_umask(0o111, || UnixDatagram::bind(path))?;
        NotifySocket::ready(sock, path.to_string_lossy().into_owned())
    }

    /// Binds the abstract name `name` (`@name` in `NOTIFY_SOCKET`).
    pub fn bind_abstract(name: &str) -> io::Result<NotifySocket> {
        use std::os::linux::net::SocketAddrExt;
        let addr = SocketAddr::from_abstract_name(name.as_bytes())?;
        NotifySocket::ready(UnixDatagram::bind_addr(&addr)?, format!("@{name}"))
    }

    fn ready(sock: UnixDatagram, address: String) -> io::Result<NotifySocket> {
        sock.set_nonblocking(true)?;
        nix::sys::socket::setsockopt(&sock, nix::sys::socket::sockopt::PassCred, &true)?;
        Ok(NotifySocket { sock, address })
    }

    /// The next datagram into `buf` (cut at its size), or `None` when
    /// there is none now.
    pub fn recv(&self, buf: &mut [u8]) -> io::Result<Option<Received>> {
        use nix::sys::socket::{recvmsg, ControlMessageOwned, MsgFlags, UnixAddr};
        loop {
            let mut iov = [io::IoSliceMut::new(buf)];
            let mut space = nix::cmsg_space!(nix::sys::socket::UnixCredentials);
            let msg = match recvmsg::<UnixAddr>(
                self.sock.as_raw_fd(),
                &mut iov,
                Some(&mut space),
                MsgFlags::MSG_DONTWAIT | MsgFlags::MSG_CMSG_CLOEXEC,
            ) {
                Ok(m) => m,
                Err(nix::errno::Errno::EINTR) => continue,
                Err(nix::errno::Errno::EAGAIN) => return Ok(None),
                Err(e) => return Err(e.into()),
            };
            let (mut pid, mut uid) = (0, u32::MAX);
            if let Ok(cmsgs) = msg.cmsgs() {
                for c in cmsgs {
                    match c {
                        ControlMessageOwned::ScmCredentials(cred) => {
                            pid = cred.pid();
                            uid = cred.uid();
                        }
                        // A descriptor sent along (FDSTORE=1) is not kept:
                        // it closes when this drops.
                        ControlMessageOwned::ScmRights(fds) => {
                            for fd in fds {
                                let _ = nix::unistd::close(fd);
                            }
                        }
                        _ => {}
                    }
                }
            }
            return Ok(Some(Received {
                len: msg.bytes,
                pid,
                uid,
            }));
        }
    }
}

impl std::os::fd::AsRawFd for NotifySocket {
    fn as_raw_fd(&self) -> std::os::fd::RawFd {
        self.sock.as_raw_fd()
    }
}

/// The session a process is in, or `None` when it is gone.
pub fn session_of(pid: i32) -> Option<i32> {
    nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid)))
        .ok()
        .map(|p| p.as_raw())
}

/// Whether no process has `pid` any more (exited and reaped).
pub fn is_gone(pid: i32) -> bool {
    nix::unistd::getsid(Some(nix::unistd::Pid::from_raw(pid))) == Err(nix::errno::Errno::ESRCH)
}

/// The uid a live process runs as (its /proc entry's owner), or `None`.
pub fn uid_of(pid: i32) -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata(format!("/proc/{pid}"))
        .ok()
        .map(|m| m.uid())
}

#[cfg(test)]
mod listen_tests {
    use super::*;

    #[test]
    fn a_message_arrives_with_its_senders_pid() {
        let dir = std::env::temp_dir().join(format!("zurg-notify-unit-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let path = dir.join("svc");
        // a stale file in the way is replaced
        std::fs::write(&path, "").unwrap();
        let sock = NotifySocket::bind(&path, "unused").unwrap();
        assert_eq!(sock.address, path.to_string_lossy());
        let mut buf = [0u8; 64];
        assert!(sock.recv(&mut buf).unwrap().is_none(), "nothing yet");
        UnixDatagram::unbound()
            .unwrap()
            .send_to(b"READY=1", &path)
            .unwrap();
        let got = sock.recv(&mut buf).unwrap().unwrap();
        assert_eq!(&buf[..got.len], b"READY=1");
        assert_eq!(got.pid, std::process::id() as i32);
        assert_eq!(
            session_of(std::process::id() as i32),
            nix::unistd::getsid(None).ok().map(|p| p.as_raw())
        );
        // a path past the 108 bytes of a socket address: the abstract name
        let long = dir.join("x".repeat(120));
        let name = format!("zurg-unit-test/{}", std::process::id());
        let sock = NotifySocket::bind(&long, &name).unwrap();
        assert_eq!(sock.address, format!("@{name}"));
        std::fs::remove_dir_all(&dir).unwrap();
    }
}

#[cfg(test)]
mod tests {
    use super::next_watchdog_ping;

    #[test]
    fn pings_keep_a_fixed_rate_from_their_deadlines() {
        // Sent on time, or late within the period: the next is due a
        // period after this one's deadline, not after its sending.
        assert_eq!(next_watchdog_ping(500, 500, 500), 1000);
        assert_eq!(next_watchdog_ping(500, 560, 500), 1000);
        assert_eq!(next_watchdog_ping(500, 999, 500), 1000);
        // A whole period late: no burst of catch-up pings.
        assert_eq!(next_watchdog_ping(500, 1000, 500), 1500);
        assert_eq!(next_watchdog_ping(500, 2700, 500), 3200);
        assert_eq!(next_watchdog_ping(u64::MAX - 1, u64::MAX, 500), u64::MAX);
    }
}
