//! A health check's record: consecutive failures against `retries`, the
//! last result, and the grace of `start_period_ms` after readiness; and
//! what its one timer means each time it fires.
//!
//! Pure: results and times in, a verdict or a step out.

use crate::unit::probe::Health;

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Tally {
    /// Failures in a row that counted.
    pub failures: u32,
    /// The last check passed; `None` before the first one ended.
    pub ok: Option<bool>,
    /// The last result as a user reads it ("200 OK", "connection refused").
    pub last: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict {
    Healthy,
    /// Failed, fewer than `retries` times in a row (or within the start
    /// period, where failures do not count).
    Failing,
    /// Failed `retries` times in a row: the reason for `Input::Unhealthy`.
    Unhealthy(String),
}

impl Tally {
    /// Records one check's result. `since_ready_ms`: how long the process
    /// has been ready when the check ended.
    pub fn record(
        &mut self,
        health: &Health,
        result: Result<String, String>,
        since_ready_ms: u64,
    ) -> Verdict {
        match result {
            Ok(line) => {
                self.ok = Some(true);
                self.failures = 0;
                self.last = line;
                Verdict::Healthy
            }
            Err(why) => {
                self.ok = Some(false);
                if since_ready_ms >= health.start_period_ms {
                    self.failures = self.failures.saturating_add(1);
                }
                self.last = why;
                if self.failures >= health.retries {
                    Verdict::Unhealthy(format!(
                        "health check {} failed {} times: {}",
                        health.check, self.failures, self.last
                    ))
                } else {
                    Verdict::Failing
                }
            }
        }
    }
}

/// What the health timer means when it fires.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TimerStep {
    /// Nothing due yet: arm again for this time.
    Wait(u64),
    /// The running check passed its `timeout_ms`: it failed.
    TimedOut,
    /// Start a check now; arm the timer for `arm_at` (its timeout or the
    /// next check, whichever comes first); the next check is due at
    /// `next_ms`.
    Check { arm_at: u64, next_ms: u64 },
}

/// One timer serves a check's timeout and the wait for the next check, so
/// a check costs no stale timer. `started`: when the running check began,
/// if one runs; `next_ms`: when the next one is due.
pub fn on_timer(health: &Health, started: Option<u64>, next_ms: u64, now: u64) -> TimerStep {
    if let Some(started) = started {
        let deadline = started.saturating_add(health.timeout_ms);
        return if now < deadline {
            TimerStep::Wait(deadline)
        } else {
            TimerStep::TimedOut
        };
    }
    if now < next_ms {
        return TimerStep::Wait(next_ms);
    }
    TimerStep::Check {
        arm_at: now.saturating_add(health.timeout_ms.min(health.interval_ms)),
        next_ms: now.saturating_add(health.interval_ms),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::unit::probe::{http_url, Check};

    fn health(retries: u32, start_period_ms: u64) -> Health {
        Health {
            check: Check::Http(http_url("http://127.0.0.1:8080/health").unwrap()),
            interval_ms: 1000,
            timeout_ms: 100,
            retries,
            start_period_ms,
        }
    }

    #[test]
    fn retries_failures_in_a_row_make_it_unhealthy() {
        let h = health(3, 0);
        let mut t = Tally::default();
        let fail = || Err("500 Internal Server Error".to_string());
        assert_eq!(t.record(&h, fail(), 10), Verdict::Failing);
        assert_eq!(t.record(&h, fail(), 20), Verdict::Failing);
        // a pass in between starts the count again
        assert_eq!(t.record(&h, Ok("200 OK".into()), 30), Verdict::Healthy);
        assert_eq!((t.failures, t.ok), (0, Some(true)));
        assert_eq!(t.record(&h, fail(), 40), Verdict::Failing);
        assert_eq!(t.record(&h, fail(), 50), Verdict::Failing);
        assert_eq!(
            t.record(&h, fail(), 60),
            Verdict::Unhealthy(
                "health check http://127.0.0.1:8080/health failed 3 times: 500 Internal Server Error"
                    .into()
            )
        );
        assert_eq!((t.failures, t.ok), (3, Some(false)));
    }

    #[test]
    fn failures_in_the_start_period_do_not_count() {
        let h = health(1, 500);
        let mut t = Tally::default();
        assert_eq!(
            t.record(&h, Err("connection refused".into()), 100),
            Verdict::Failing
        );
        assert_eq!((t.failures, t.ok), (0, Some(false)));
        assert_eq!(t.last, "connection refused");
        assert!(matches!(
            t.record(&h, Err("connection refused".into()), 500),
            Verdict::Unhealthy(_)
        ));
    }

    #[test]
    fn one_timer_serves_timeout_and_interval() {
        // timeout shorter than the interval: the timer first waits for the
        // timeout, then for the next check
        let mut h = health(3, 0);
        h.interval_ms = 1000;
        h.timeout_ms = 100;
        assert_eq!(
            on_timer(&h, None, 1000, 1000),
            TimerStep::Check {
                arm_at: 1100,
                next_ms: 2000
            }
        );
        assert_eq!(on_timer(&h, Some(1000), 2000, 1100), TimerStep::TimedOut);
        // the check ended in time: the timer waits for the next one
        assert_eq!(on_timer(&h, None, 2000, 1100), TimerStep::Wait(2000));
        // timeout longer than the interval: the timer fires at the next
        // check, and a check still running then gets the rest of its time
        h.timeout_ms = 5000;
        assert_eq!(
            on_timer(&h, None, 0, 0),
            TimerStep::Check {
                arm_at: 1000,
                next_ms: 1000
            }
        );
        assert_eq!(on_timer(&h, Some(0), 1000, 1000), TimerStep::Wait(5000));
        assert_eq!(on_timer(&h, Some(0), 1000, 5000), TimerStep::TimedOut);
        assert_eq!(
            on_timer(&h, None, 1000, 1000),
            TimerStep::Check {
                arm_at: 2000,
                next_ms: 2000
            }
        );
    }
}
