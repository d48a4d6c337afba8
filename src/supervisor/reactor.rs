//! The event loop's one blocking call: mio's Poll over the signalfd, every
//! child's pidfd and the control socket, with the earliest timer as timeout.
//!
//! EINTR is retried here so callers never see it; a failed poll is returned
//! and the caller decides (PID 1 must not exit on it).

use std::io;
use std::os::fd::AsRawFd;
use std::time::{Duration, Instant};

use mio::unix::SourceFd;
use mio::{Events, Interest, Poll, Registry, Token};

use super::timers::Timers;

pub const SIGNAL_TOKEN: Token = Token(0);
/// Tokens from here up name a child's pidfd: `PIDFD_BASE + slot`.
pub const PIDFD_BASE: usize = 1 << 40;

/// How long the loop sleeps between turns of leftover work. Sleeping at
/// all, rather than polling without a timeout, is what keeps restarts
/// prompt during a flood of output: a thread that waits in epoll is woken
/// (and given the CPU) by a child's exit, where one that is always
/// runnable waits for its turn behind the flood's writer.
pub const PACE: Duration = Duration::from_millis(1);

#[derive(Debug)]
pub struct Reactor<K: Ord> {
    poll: Poll,
    events: Events,
    start: Instant,
    pub timers: Timers<K>,
    /// Work is due every turn (a paced output pipe, its readiness ignored):
    /// the next wait sleeps at most `PACE`.
    pub poll_now: bool,
}

impl<K: Ord> Reactor<K> {
    pub fn new(signal_fd: &impl AsRawFd) -> io::Result<Reactor<K>> {
        let poll = Poll::new()?;
        poll.registry().register(
            &mut SourceFd(&signal_fd.as_raw_fd()),
            SIGNAL_TOKEN,
            Interest::READABLE,
        )?;
        Ok(Reactor {
            poll,
            events: Events::with_capacity(1024),
            start: Instant::now(),
            timers: Timers::default(),
            poll_now: false,
        })
    }

    pub fn registry(&self) -> &Registry {
        self.poll.registry()
    }

    /// Milliseconds on the monotonic clock since the reactor was made.
    pub fn now_ms(&self) -> u64 {
        u64::try_from(self.start.elapsed().as_millis()).unwrap_or(u64::MAX)
    }

    pub fn watch_fd(&self, fd: &impl AsRawFd, token: Token) -> io::Result<()> {
        self.registry()
            .register(&mut SourceFd(&fd.as_raw_fd()), token, Interest::READABLE)
    }

    pub fn unwatch_fd(&self, fd: &impl AsRawFd) -> io::Result<()> {
        self.registry().deregister(&mut SourceFd(&fd.as_raw_fd()))
    }

    /// Blocks until an fd is ready or the earliest timer is due; returns the
    /// ready tokens (empty when a timer woke us).
    pub fn wait(&mut self, tokens: &mut Vec<Token>) -> io::Result<()> {
        tokens.clear();
        let timeout = if std::mem::take(&mut self.poll_now) {
            Some(PACE)
        } else {
            self.timers.next_deadline().map(|at| {
                // Round up so a timer is never fired a millisecond early.
                Duration::from_millis(at.saturating_sub(self.now_ms())) + Duration::from_micros(500)
            })
        };
        loop {
            match self.poll.poll(&mut self.events, timeout) {
                Ok(()) => break,
                Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
                Err(e) => return Err(e),
            }
        }
        tokens.extend(self.events.iter().map(|e| e.token()));
        Ok(())
    }
}
