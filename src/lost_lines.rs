//! The lines a writer lost to failing writes, and when to say so: the
//! first failure once, then, once a write succeeds again, how many lines
//! were lost, once. zurg's own stdout/stderr writers (`log.rs`) and
//! services' log files (`supervisor/output/sink.rs`) both keep this count;
//! what a failed write lost (which bytes, which lines) is each writer's
//! own business, and so is how it says it (pure).

/// Lines lost since writes last succeeded, with the first failure's error.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LostLines<E> {
    lines: u64,
    /// The first failure's error, since writes last succeeded (reported).
    error: Option<E>,
    /// The failure is not told yet.
    untold: bool,
    /// A write succeeded since the last failure.
    succeeded: bool,
}

impl<E> Default for LostLines<E> {
    fn default() -> Self {
        LostLines {
            lines: 0,
            error: None,
            untold: false,
            succeeded: false,
        }
    }
}

impl<E: Clone> LostLines<E> {
    /// A write failed with `e`, losing `lines` lines. Only the first error
    /// of a run of failures is kept: it is the one worth telling.
    pub fn failed(&mut self, lines: u64, e: E) {
        self.lines = self.lines.saturating_add(lines);
        if self.error.is_none() {
            self.error = Some(e);
            self.untold = true;
        }
        self.succeeded = false;
    }

    /// `lines` lines lost without a write failing (nowhere to write them):
    /// counted, and told with the next recovery from a failure.
    pub fn count(&mut self, lines: u64) {
        self.lines = self.lines.saturating_add(lines);
    }

    /// A write succeeded. The recovery is told by `recovered`, so a writer
    /// may end a batch of writes before it looks.
    pub fn wrote(&mut self) {
        self.succeeded = true;
    }

    /// Once per run of failures, at its first: its error.
    pub fn first_failure(&mut self) -> Option<E> {
        if !self.untold {
            return None;
        }
        self.untold = false;
        self.error.clone()
    }

    /// Once writes succeed again after failures: how many lines were lost,
    /// and the first failure's error. The count starts again from zero,
    /// and a later failure is told again.
    pub fn recovered(&mut self) -> Option<(u64, E)> {
        if !self.succeeded {
            return None;
        }
        let e = self.error.take()?;
        self.untold = false;
        Some((std::mem::take(&mut self.lines), e))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn failures_are_counted_and_the_first_one_told_once() {
        let mut lost = LostLines::default();
        assert_eq!(lost.first_failure(), None);
        lost.failed(2, "ENOSPC");
        lost.failed(3, "EIO");
        assert_eq!(lost.first_failure(), Some("ENOSPC"));
        assert_eq!(lost.first_failure(), None);
        lost.failed(1, "EIO");
        assert_eq!(lost.first_failure(), None, "still the same run");
        assert_eq!(lost.recovered(), None, "no write succeeded yet");
        lost.wrote();
        assert_eq!(lost.recovered(), Some((6, "ENOSPC")));
        assert_eq!(lost.recovered(), None, "told once");
        lost.wrote();
        assert_eq!(lost.recovered(), None);
    }

    #[test]
    fn a_failure_after_a_recovery_starts_a_new_count_told_anew() {
        let mut lost = LostLines::default();
        lost.failed(4, "ENOSPC");
        lost.wrote();
        assert_eq!(lost.recovered(), Some((4, "ENOSPC")));
        lost.failed(1, "EIO");
        assert_eq!(lost.first_failure(), Some("EIO"));
        lost.wrote();
        assert_eq!(lost.recovered(), Some((1, "EIO")));
    }

    #[test]
    fn a_failure_after_a_success_waits_for_the_next_success() {
        let mut lost = LostLines::default();
        lost.wrote();
        lost.failed(2, "EIO");
        assert_eq!(lost.recovered(), None, "the last write failed");
        lost.wrote();
        // Recovered before the failure was told: it is not told after.
        assert_eq!(lost.recovered(), Some((2, "EIO")));
        assert_eq!(lost.first_failure(), None);
    }

    #[test]
    fn lines_lost_without_a_failure_are_told_with_the_next_recovery() {
        let mut lost = LostLines::default();
        lost.count(5);
        lost.wrote();
        assert_eq!(lost.recovered(), None, "no failure to recover from");
        assert_eq!(lost.first_failure(), None);
        lost.failed(1, "ENOSPC");
        lost.wrote();
        assert_eq!(lost.recovered(), Some((6, "ENOSPC")));
    }
}
