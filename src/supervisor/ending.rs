//! Why `zurg run` ends, carried from the moment its shutdown begins to
//! main's exit code (docs/exit-codes.md), so the code and the log line that
//! explains it come from one value.

use crate::service::End;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ending {
    /// SIGTERM, SIGINT or SIGPWR, or a `shutdown` request: an orderly stop.
    Asked,
    /// An essential service ended for good, and how.
    Essential { service: String, end: End },
}

impl Ending {
    /// 0 for a stop someone asked for; an essential service's end gives
    /// its code (`End::exit_code`).
    pub fn exit_code(&self) -> i32 {
        match self {
            Ending::Asked => 0,
            Ending::Essential { end, .. } => end.exit_code(),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::service::{Exit, Failure};

    fn essential(end: End) -> i32 {
        Ending::Essential {
            service: "main".into(),
            end,
        }
        .exit_code()
    }

    #[test]
    fn codes() {
        assert_eq!(Ending::Asked.exit_code(), 0);
        assert_eq!(essential(End::Exited(Exit::Code(7))), 7);
        assert_eq!(essential(End::Exited(Exit::Code(0))), 0);
        assert_eq!(essential(End::Exited(Exit::Signal(9))), 137);
        let failed = |exit, failure| End::Failed { exit, failure };
        assert_eq!(
            essential(failed(
                Some(Exit::Code(3)),
                Failure::Unsuccessful(Exit::Code(3))
            )),
            3
        );
        assert_eq!(
            essential(failed(Some(Exit::Code(0)), Failure::Forked)),
            1,
            "exited 0, yet failed"
        );
        assert_eq!(essential(failed(None, Failure::Refused("x".into()))), 1);
        // stopped by zurg: the stop signal's 143 is not the service's code
        for failure in [
            Failure::NotReady("not ready after 300 ms".into()),
            Failure::Unhealthy("health check failed 2 times".into()),
        ] {
            assert_eq!(essential(failed(Some(Exit::Signal(15)), failure)), 1);
        }
    }
}
