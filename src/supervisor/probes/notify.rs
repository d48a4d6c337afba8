//! A service's notify socket on the loop: messages read as `message.rs`
//! says, counted only from the service's own processes.

use std::collections::VecDeque;

use super::message::{self, Notice};
use crate::os::notify::{is_gone, session_of, uid_of};
use crate::service::{Input, State};
use crate::supervisor::Supervisor;
use crate::unit::probe::Ready;

/// Bytes of one notify message read; sd_notify messages are far smaller.
const NOTIFY_BUF: usize = 4096;

impl Supervisor {
    /// Messages on a notify socket: from the service's own processes only.
    pub(super) fn on_notify(&mut self, slot: usize, work: &mut VecDeque<(usize, Input)>) {
        let mut buf = std::mem::take(&mut self.probes.buf);
        buf.resize(NOTIFY_BUF, 0);
        loop {
            let received = match self
                .probes
                .get(slot)
                .and_then(|p| p.notify.as_ref())
                .map(|(_, sock)| sock.recv(&mut buf))
            {
                Some(Ok(Some(r))) => r,
                Some(Err(e)) => {
                    crate::log!(
                        "[{}] cannot read its notify socket: {e}",
                        self.slot_name(slot)
                    );
                    break;
                }
                _ => break,
            };
            let notices = message::parse(buf.get(..received.len).unwrap_or(&[]));
            self.notified(slot, received.pid, received.uid, notices, work);
        }
        self.probes.buf = buf;
    }

    /// Acts on one message's notices, if its sender belongs to the service:
    /// its main process, the pid it announced, or any process of the
    /// session the main process leads (a helper such as `systemd-notify`
    /// or python run by a start script). A helper that sent and exited
    /// before zurg read its message has no session left to look at: it
    /// counts when the kernel says it ran as root or as the service's own
    /// user, who could signal or trace the service anyway (on a loaded
    /// machine such a READY=1 was ignored and the service never became
    /// ready).
    fn notified(
        &mut self,
        slot: usize,
        sender: i32,
        sender_uid: u32,
        notices: Vec<Notice>,
        work: &mut VecDeque<(usize, Input)>,
    ) {
        let name = self.slot_name(slot).to_string();
        let (wants_ready, watchdog) = match self.slots.get(slot) {
            Some(s) => (
                s.service.unit.rare.ready == Some(Ready::Notify),
                s.service.unit.rare.watchdog_ms,
            ),
            None => return,
        };
        let running = self.slots.get(slot).and_then(|s| match s.service.state {
            State::Running { pid, .. } | State::Stopping { pid, .. } => Some(pid),
            _ => None,
        });
        let now = self.reactor.now_ms();
        let Some(p) = self.probes.get_mut(slot) else {
            return;
        };
        let Some(main) = running.filter(|m| p.pid == Some(*m)) else {
            return;
        };
        let ours = sender > 0
            && (sender == main
                || p.main_pid == Some(sender)
                || session_of(sender) == Some(main)
                || (is_gone(sender) && (sender_uid == 0 || uid_of(main) == Some(sender_uid))));
        if !ours {
            if !p.warned_stranger {
                p.warned_stranger = true;
                crate::log!(
                    "[{name}] ignored a message on its notify socket from {}: not a process of the service (pid {main} and its session)",
                    if sender > 0 { format!("pid {sender}") } else { "a process outside zurg's pid namespace".to_string() }
                );
            }
            return;
        }
        for notice in notices {
            match notice {
                Notice::Ready if wants_ready && p.readying => {
                    work.push_back((slot, Input::Ready { pid: main }));
                }
                Notice::Ready => {}
                Notice::Status(text) => p.status_text = Some(text),
                Notice::Stopping => {
                    if !p.stopping {
                        p.stopping = true;
                        crate::log!("[{name}] pid {main} says it is stopping");
                    }
                }
                Notice::Ping => {
                    if p.watchdog_last_ms.is_some() {
                        p.watchdog_last_ms = Some(now);
                    }
                }
                Notice::Trigger => {
                    if let Some(ms) = watchdog {
                        p.watchdog_last_ms = None;
                        work.push_back((
                            slot,
                            Input::Unhealthy {
                                pid: main,
                                reason: format!(
                                    "watchdog: it sent WATCHDOG=trigger (watchdog_ms {ms})"
                                ),
                            },
                        ));
                    }
                }
                Notice::MainPid(pid) => {
                    if pid != main && session_of(pid) == Some(main) && p.main_pid != Some(pid) {
                        p.main_pid = Some(pid);
                        crate::log!(
                            "[{name}] says its main process is pid {pid}; zurg goes on watching pid {main} (MAINPID is only noted)"
                        );
                    }
                }
            }
        }
    }
}
