//! TCP ports for services: picking a free one, and listening sockets that
//! zurg holds across restarts and hands to the service as fd 3.

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

/// Whether nothing listens on `ip:port` (and we may bind it).
pub fn port_is_free(ip: IpAddr, port: u16) -> bool {
    TcpListener::bind((ip, port)).is_ok()
}

/// A port the kernel considers free on `ip` right now.
pub fn free_port(ip: IpAddr) -> io::Result<u16> {
    Ok(TcpListener::bind((ip, 0))?.local_addr()?.port())
}
