//! Restart policy, success, crash-loop backoff and the start limit (pure;
//! `now` and uptimes are passed in).
//!
//! A service that dies after a healthy run is restarted at once: restart
//! latency is what zurg is judged on. Only a loop of short runs is slowed:
//! from the second consecutive run shorter than `RESET_AFTER_MS`, each
//! restart waits the unit's `backoff.initial_ms` (100 ms by default), then
//! twice that, doubling up to `backoff.max_ms` (30 s), so a binary that
//! exits at once costs a few wake-ups a minute instead of a core. One run
//! that lasts `RESET_AFTER_MS` forgives the streak. A unit's `start_limit`
//! (none by default) fails a service that starts more than `burst` times
//! within `interval_ms`.

use std::collections::VecDeque;

use crate::unit::{BackoffSteps, RestartPolicy, StartLimit};

use super::Exit;

/// A run at least this long resets the crash-loop streak.
pub const RESET_AFTER_MS: u64 = 10_000;

/// Whether `exit` is a success for a unit that counts `codes` as success.
/// A death by signal never is.
pub fn succeeded(codes: &[u8], exit: Exit) -> bool {
    match exit {
        Exit::Code(c) => u8::try_from(c).is_ok_and(|c| codes.contains(&c)),
        Exit::Signal(_) => false,
    }
}

/// Whether `policy` starts again a service whose run ended, successfully
/// or not.
pub fn should_restart(policy: RestartPolicy, success: bool) -> bool {
    match policy {
        RestartPolicy::Always => true,
        RestartPolicy::OnFailure => !success,
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
    /// next start, in `steps`.
    pub fn after_run(&mut self, uptime_ms: u64, steps: BackoffSteps) -> u64 {
        if uptime_ms >= RESET_AFTER_MS {
            self.streak = 0;
        }
        self.streak = self.streak.saturating_add(1);
        self.delay_ms(steps)
    }

    /// Forgets the streak, e.g. after a restart someone asked for.
    pub fn reset(&mut self) {
        self.streak = 0;
    }

    pub fn streak(&self) -> u32 {
        self.streak
    }

    fn delay_ms(&self, steps: BackoffSteps) -> u64 {
        match self.streak {
            0 | 1 => 0,
            n => {
                let shift = (n - 2).min(40);
                steps
                    .initial_ms
                    .saturating_mul(1u64 << shift)
                    .min(steps.max_ms)
            }
        }
    }
}

/// The start times that count against a unit's `start_limit`: at most
/// `burst` of them, none older than `interval_ms`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct StartLog {
    /// Boxed: only units with a `start_limit` keep any (8 bytes a service
    /// instead of 32; clippy's box_collection weighs the indirection, not
    /// the size of an empty deque in every service).
    #[allow(clippy::box_collection)]
    times: Option<Box<VecDeque<u64>>>,
}

impl StartLog {
    /// Whether a start at `at` keeps within `limit`; if so it is counted.
    /// Without a limit nothing is kept.
    pub fn admit(&mut self, limit: Option<StartLimit>, at: u64) -> bool {
        let Some(limit) = limit else {
            self.times = None;
            return true;
        };
        let times = self.times.get_or_insert_default();
        while times
            .front()
            .is_some_and(|t| at.saturating_sub(*t) >= limit.interval_ms)
        {
            times.pop_front();
        }
        if times.len() >= usize::try_from(limit.burst).unwrap_or(usize::MAX) {
            return false;
        }
        times.push_back(at);
        true
    }

    /// Forgets every start: `zurg start`, `restart` or a reload asked anew.
    pub fn reset(&mut self) {
        if let Some(times) = &mut self.times {
            times.clear();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const STEPS: BackoffSteps = BackoffSteps {
        initial_ms: 100,
        max_ms: 30_000,
    };

    #[test]
    fn policies() {
        use RestartPolicy::*;
        let cases = [
            (Always, true, true),
            (Always, false, true),
            (OnFailure, true, false),
            (OnFailure, false, true),
            (Never, true, false),
            (Never, false, false),
        ];
        for (p, success, want) in cases {
            assert_eq!(should_restart(p, success), want, "{p:?} {success}");
        }
    }

    #[test]
    fn success_is_a_listed_code_never_a_signal() {
        assert!(succeeded(&[0], Exit::Code(0)));
        assert!(!succeeded(&[0], Exit::Code(1)));
        assert!(succeeded(&[0, 3], Exit::Code(3)));
        assert!(!succeeded(&[0, 143], Exit::Signal(15)));
        assert!(succeeded(&[0, 143], Exit::Code(143)));
        assert!(!succeeded(&[0], Exit::Code(256)));
        assert!(!succeeded(&[0], Exit::Code(-1)));
    }

    #[test]
    fn healthy_runs_restart_at_once() {
        let mut b = Backoff::default();
        for _ in 0..5 {
            assert_eq!(b.after_run(RESET_AFTER_MS, STEPS), 0);
        }
    }

    #[test]
    fn crash_loop_grows_then_caps() {
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..12).map(|_| b.after_run(5, STEPS)).collect();
        assert_eq!(
            delays,
            [0, 100, 200, 400, 800, 1600, 3200, 6400, 12800, 25600, 30000, 30000]
        );
        // still capped after a very long streak
        for _ in 0..100 {
            assert_eq!(b.after_run(5, STEPS), STEPS.max_ms);
        }
    }

    #[test]
    fn a_unit_chooses_its_steps() {
        let steps = BackoffSteps {
            initial_ms: 20,
            max_ms: 50,
        };
        let mut b = Backoff::default();
        let delays: Vec<u64> = (0..5).map(|_| b.after_run(5, steps)).collect();
        assert_eq!(delays, [0, 20, 40, 50, 50]);
        // a huge first step does not overflow
        let steps = BackoffSteps {
            initial_ms: u64::MAX / 2,
            max_ms: u64::MAX,
        };
        for _ in 0..100 {
            b.after_run(1, steps);
        }
        assert_eq!(b.after_run(1, steps), u64::MAX);
    }

    #[test]
    fn one_long_run_forgives_the_streak() {
        let mut b = Backoff::default();
        for _ in 0..6 {
            b.after_run(1, STEPS);
        }
        assert_eq!(b.after_run(RESET_AFTER_MS + 1, STEPS), 0);
        assert_eq!(b.after_run(1, STEPS), 100);
    }

    #[test]
    fn start_limit_counts_starts_within_the_interval() {
        let limit = Some(StartLimit {
            burst: 3,
            interval_ms: 1000,
        });
        let mut log = StartLog::default();
        assert!(log.admit(limit, 0));
        assert!(log.admit(limit, 100));
        assert!(log.admit(limit, 200));
        // the fourth within 1000 ms is one too many
        assert!(!log.admit(limit, 999));
        // once the first has aged out, one more fits
        assert!(log.admit(limit, 1000));
        assert!(!log.admit(limit, 1001));
        log.reset();
        assert!(log.admit(limit, 1002));
        // no limit: always admitted
        let mut log = StartLog::default();
        for t in 0..1000 {
            assert!(log.admit(None, t));
        }
    }
}
