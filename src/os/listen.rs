//! TCP ports for services: picking a free one, and listening sockets that
//! zurg holds across restarts and hands to the service as fd 3; and the
//! publisher's own listening sockets.

use std::io;
use std::net::{IpAddr, SocketAddr, TcpListener};
use std::os::fd::AsRawFd;

/// A listening socket with the kernel's largest backlog, so connections
/// that arrive while the service restarts wait rather than fail.
/// Close-on-exec in zurg (std sets it); the spawner dups it to fd 3.
pub fn listen(addr: SocketAddr) -> io::Result<TcpListener> {
    // std sets SO_REUSEADDR on Unix, so a port in TIME_WAIT is no obstacle.
    let listener = TcpListener::bind(addr)?;
    // SAFETY: listen(2) on a socket we own; calling it again only raises
    // the backlog.
    super::cvt(unsafe { libc::listen(listener.as_raw_fd(), libc::SOMAXCONN) })?;
    Ok(listener)
}

/// `listen`, non-blocking, for a mio event loop (the publisher's listeners).
/// Not mio's own `TcpListener::bind`, whose backlog is 128: a burst of
/// hosts reconnecting or browsers opening the page overflows that, and the
/// kernel drops the SYNs it has no room for, so those clients wait out a
/// 1 s (then 3 s, 7 s...) retransmit instead of a turn of the loop.
pub fn listen_polled(addr: SocketAddr) -> io::Result<mio::net::TcpListener> {
    let listener = listen(addr)?;
    listener.set_nonblocking(true)?;
    Ok(mio::net::TcpListener::from_std(listener))
}

/// Whether nothing listens on `ip:port` (and we may bind it).
pub fn port_is_free(ip: IpAddr, port: u16) -> bool {
    TcpListener::bind((ip, port)).is_ok()
}

/// A port the kernel considers free on `ip` right now.
pub fn free_port(ip: IpAddr) -> io::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::{Ipv4Addr, TcpStream};
    use std::time::Duration;

    /// More connections than mio's backlog of 128 arrive while nothing
    /// accepts (a loop busy elsewhere): each completes at once, none is
    /// left to a SYN retransmit.
    #[test]
    fn a_burst_past_128_connections_waits_in_the_backlog() {
        let listener = listen_polled(SocketAddr::new(IpAddr::V4(Ipv4Addr::LOCALHOST), 0)).unwrap();
        let addr = listener.local_addr().unwrap();
        let held: Vec<TcpStream> = (0..300)
            .map(|i| {
                TcpStream::connect_timeout(&addr, Duration::from_millis(500))
                    .unwrap_or_else(|e| panic!("connection {i} did not complete: {e}"))
            })
            .collect();
        assert_eq!(held.len(), 300);
    }
}
