//! The systemd notify protocol, spoken directly: one datagram per message to
//! `$NOTIFY_SOCKET` (a path, or an abstract name when it starts with '@').
//!
//! Only active when systemd (or anything else) set NOTIFY_SOCKET; the
//! variables are removed from zurg's environment so services do not talk to
//! zurg's supervisor by mistake. Sending never blocks the loop: the socket is
//! non-blocking and a lost datagram is only logged.

use std::io;
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
