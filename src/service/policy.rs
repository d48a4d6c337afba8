//! Restart policy and crash-loop backoff (pure; `now` and uptimes are passed in).
//!
//! A service that dies after a healthy run is restarted at once: restart
//! latency is what zurg is judged on. Only a loop of short runs is slowed:
//! from the second consecutive run shorter than `RESET_AFTER_MS`, each
//! restart waits 100 ms more, doubling up to 30 s, so a binary that exits at
//! once costs a few wake-ups a minute instead of a core. One run that lasts
//! `RESET_AFTER_MS` forgives the streak.

use crate::unit::RestartPolicy;

use super::Exit;

/// A run at least this long resets the crash-loop streak.
pub const RESET_AFTER_MS: u64 = 10_000;
/// First backoff step once a crash loop is detected.
pub const BACKOFF_BASE_MS: u64 = 100;
/// Longest backoff step.
pub const BACKOFF_CAP_MS: u64 = 30_000;

/// Whether `policy` restarts a service that ended with `exit`.
pub fn should_restart(policy: RestartPolicy, exit: Exit) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !matches!(exit, Exit::Code(0)),
        RestartPolicy::Never => false,
    }
}

/// Counts consecutive short runs.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Backoff {
    streak: u32,
}

impl Backoff {
    /// Records a run of `uptime_ms` and returns the extra delay before the
    /// next start.
    pub fn after_run(&mut self, uptime_ms: u64) -> u64 {
        if uptime_ms >= RESET_AFTER_MS {
            self.streak = 0;
        }
        self.streak = self.streak.saturating_add(1);
        self.delay_ms()
    }

    /// Forgets the streak, e.g. after a restart someone asked for.
    pub fn reset(&mut self) {
        self.streak = 0;
    }

    pub fn streak(&self) -> u32 {
        self.streak
    }

    fn delay_ms(&self) -> u64 {
        match self.streak {
            0 | 1 => 0,
            n => {
                let shift = (n - 2).min(20);
                BACKOFF_BASE_MS
                    .saturating_mul(1u64 << shift)
                    .min(BACKOFF_CAP_MS)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn policies() {
        use RestartPolicy::*;
        let cases = [
            (Always, Exit::Code(0), true),
            (Always, Exit::Code(1), true),
            (Always, Exit::Signal(9), true),
            (OnFailure, Exit::Code(0), false),
            (OnFailure, Exit::Code(3), true),
            (OnFailure, Exit::Signal(15), true),
            (Never, Exit::Code(1), false),
            (Never, Exit::Signal(9), false),
        ];
        for (p, e, want) in cases {
            assert_eq!(should_restart(p, e), want, "{p:?} {e:?}");
        }
    }

    #[test]
    fn healthy_runs_restart_at_once() {
        let mut b = Backoff::default();
        for _ in 0..5 {
            assert_eq!(b.after_run(RESET_AFTER_MS), 0);
        }
    }

    #[test]
    fn crash_loop_grows_then_caps() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..12).map(|_| b.after_run(5)).collect();
        assert_eq!(
            delays,
            [0, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
        // still capped after a very long streak
        for _ in 0..100 {
            assert_eq!(b.after_run(5), BACKOFF_CAP_MS);
        }
    }

    #[test]
    fn one_long_run_forgives_the_streak() {
        let mut b = Backoff::default();
        for _ in 0..6 {
            b.after_run(1);
        }
        assert_eq!(b.after_run(RESET_AFTER_MS + 1), 0);
        assert_eq!(b.after_run(1), 100);
    }
}
