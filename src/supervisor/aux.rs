//! Helper processes of a service (exec probes, hooks): spawned through the
//! service's spawn path in their own process group, their output in the
//! service's log, their pidfd watched in mio under the caller's token and
//! reaped from it, or by the waitpid sweep that hands their pid back.

use std::os::fd::OwnedFd;

use mio::Token;

use super::Supervisor;
use crate::os::pidfd::PidFd;
use crate::os::spawn::SpawnSpec;

impl Supervisor {
    /// Spawns `spec` for `slot` (which gets the service's output and, when
    /// zurg is not PID 1, dies with zurg) and watches its pidfd under
    /// `token`.
    pub(in crate::supervisor) fn spawn_aux(
        &mut self,
        slot: usize,
        mut spec: SpawnSpec,
        token: Token,
    ) -> Result<(i32, Option<PidFd>), String> {
        let (stdout, stderr) = self.child_outputs(slot);
        spec.new_pgroup = true;
        spec.null_stdin = true;
        spec.stdout = stdout;
        spec.stderr = stderr;
        if !crate::os::pid1::is_pid1() {
            spec.death_signal = libc::SIGKILL;
        }
        // What a hook or probe leaves running is a leftover too.
        if let Some(mark) = &self.state_mark {
            mark.put_in(&mut spec.env);
        }
        let child = self
            .spawner
            .spawn(&spec, &self.child_signals, None::<&OwnedFd>)
            .map_err(|e| e.to_string())?;
        if let Some(fd) = &child.pidfd {
            if let Err(e) = self.reactor.watch_fd(fd, token) {
                let name = self.slots.get(slot).map_or("?", |s| s.service.name());
                crate::log!("[{name}] cannot watch helper pid {}: {e}", child.pid);
            }
        }
        Ok((child.pid, child.pidfd))
    }
}
