//! What the publisher's two listeners (the publish protocol and `--http`)
//! share: accepting connections within the connection bound and through
//! running out of descriptors, and writing a connection's queued output
//! without blocking. Each listener keeps its own connections, refusal and
//! deadlines; these are the parts that were the same twice.

use std::io::{self, Write};
use std::net::SocketAddr;

use mio::net::{TcpListener, TcpStream};
use mio::{Interest, Registry, Token};

use super::store::ConnId;

/// After accept fails for want of a descriptor (EMFILE, ENFILE, ENOBUFS),
/// try again this soon, or as soon as a connection closes. Nothing else
/// would: the listener is edge-triggered, and the connections already
/// queued raise no new edge.
pub const ACCEPT_RETRY_MS: u64 = 100;

/// One listener's accepting: when to retry after running out of
/// descriptors.
#[derive(Debug, Default)]
pub struct Acceptor {
    retry_at: Option<u64>,
}

/// The bounds and words of one call to `Acceptor::accept`.
pub struct Accepting<'a> {
    pub registry: &'a Registry,
    /// The publisher's id counter: ids are never reused across both kinds
    /// of connection. A connection's token is its id plus `first_token`.
    pub next_id: &'a mut ConnId,
    pub first_token: usize,
    /// Connections open now (of both kinds), and the most there may be.
    pub open: usize,
    pub max: usize,
    /// What a connection past `max` is sent before it is closed.
    pub refusal: &'a [u8],
    /// What is accepted, for the log ("connection", "HTTP connection").
    pub what: &'a str,
    pub now_ms: u64,
}

impl Acceptor {
    /// Accepts what `listener` has queued: each connection gets TCP_NODELAY
    /// and is registered for reading and writing under a new id, then
    /// handed to `take`. Past `max` a connection gets `refusal` and is
    /// closed. Out of descriptors, the rest stay queued: `accept` is due
    /// again in `ACCEPT_RETRY_MS`, or at once when a connection closes
    /// (`freed`); that is logged once per episode.
    pub fn accept(
        &mut self,
        listener: &TcpListener,
        a: Accepting<'_>,
        mut take: impl FnMut(ConnId, TcpStream, SocketAddr),
    ) {
        let was_blocked = self.retry_at.take().is_some();
        let mut open = a.open;
        loop {
            match listener.accept() {
                Ok((mut stream, addr)) => {
                    if open >= a.max {
                        let _ = stream.write(a.refusal);
                        continue;
                    }
                    let _ = stream.set_nodelay(true);
                    let id = *a.next_id;
                    *a.next_id = a.next_id.saturating_add(1);
                    if let Err(e) = a.registry.register(
                        &mut stream,
                        Token(id.saturating_add(a.first_token)),
                        Interest::READABLE | Interest::WRITABLE,
                    ) {
                        crate::log!("cannot watch {} from {addr}: {e}", a.what);
                        continue;
                    }
                    open = open.saturating_add(1);
                    take(id, stream, addr);
                }
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => return,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => {
                    // Retrying at once would spin, and waiting for the
                    // listener's next edge could wait forever.
                    if !was_blocked {
                        crate::log!(
                            "cannot accept a {}: {e}; retrying every {ACCEPT_RETRY_MS} ms and whenever a connection closes",
                            a.what
                        );
                    }
                    self.retry_at = Some(a.now_ms.saturating_add(ACCEPT_RETRY_MS));
                    return;
                }
            }
        }
    }

    /// A connection closed: its descriptor is free, so a blocked accept
    /// can go on at once.
    pub fn freed(&mut self) {
        if self.retry_at.is_some() {
            self.retry_at = Some(0);
        }
    }

    pub fn due(&self, now_ms: u64) -> bool {
        self.retry_at.is_some_and(|at| at <= now_ms)
    }

    pub fn next_deadline(&self) -> Option<u64> {
        self.retry_at
    }
}

/// What `write_out` did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Written {
    pub bytes: usize,
    /// The socket failed: the connection is done for.
    pub failed: bool,
}

/// Writes `out` to `stream` until it is empty or the socket is full, and
/// takes what was written off its front. `writable` is the connection's
/// flag: when clear, nothing is tried until the next writable event sets
/// it; a full socket clears it. Bytes are drained once per call, not once
/// per write: a big buffer written in small pieces would be moved each
/// time. A failed socket empties `out`.
pub fn write_out(stream: &mut impl Write, out: &mut Vec<u8>, writable: &mut bool) -> Written {
    let mut bytes = 0usize;
    let mut failed = false;
    if !*writable {
        return Written { bytes, failed };
    }
    while let Some(rest) = out.get(bytes..).filter(|r| !r.is_empty()) {
        match stream.write(rest) {
            Ok(0) => break,
            Ok(n) => bytes = bytes.saturating_add(n),
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                *writable = false;
                break;
            }
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(_) => {
                failed = true;
                break;
            }
        }
    }
    out.drain(..bytes.min(out.len()));
    if failed {
        out.clear();
    }
    Written { bytes, failed }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A socket that takes `room` bytes in pieces of `piece`, then says
    /// EAGAIN, or fails.
    struct Sock {
        taken: Vec<u8>,
        room: usize,
        piece: usize,
        broken: bool,
    }

    impl Write for Sock {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            if self.broken {
                return Err(io::ErrorKind::BrokenPipe.into());
            }
            let n = buf.len().min(self.piece).min(self.room - self.taken.len());
            if n == 0 {
                return Err(io::ErrorKind::WouldBlock.into());
            }
            self.taken.extend_from_slice(&buf[..n]);
            Ok(n)
        }

        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn output_goes_until_the_socket_is_full_and_the_rest_waits() {
        let mut s = Sock {
            taken: Vec::new(),
            room: 10,
            piece: 3,
            broken: false,
        };
        let mut out = b"0123456789abcdef".to_vec();
        let mut writable = true;
        let w = write_out(&mut s, &mut out, &mut writable);
        assert_eq!(
            w,
            Written {
                bytes: 10,
                failed: false
            }
        );
        assert_eq!(s.taken, b"0123456789");
        assert_eq!(out, b"abcdef");
        assert!(!writable, "a full socket waits for its writable event");
        let w = write_out(&mut s, &mut out, &mut writable);
        assert_eq!(w.bytes, 0, "not tried until writable again");
        s.room = 100;
        writable = true;
        write_out(&mut s, &mut out, &mut writable);
        assert!(out.is_empty() && writable);
        assert_eq!(s.taken, b"0123456789abcdef");
    }

    #[test]
    fn a_failed_socket_drops_its_output() {
        let mut s = Sock {
            taken: Vec::new(),
            room: 10,
            piece: 3,
            broken: true,
        };
        let mut out = b"abc".to_vec();
        let w = write_out(&mut s, &mut out, &mut true);
        assert!(w.failed && out.is_empty());
    }

    #[test]
    fn a_blocked_accept_is_due_again_at_its_retry_or_when_a_connection_closes() {
        let mut a = Acceptor::default();
        a.freed();
        assert_eq!(a.next_deadline(), None, "nothing blocked");
        a.retry_at = Some(500);
        assert!(!a.due(400) && a.due(500));
        a.freed();
        assert!(a.due(0));
    }
}
