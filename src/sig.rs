//! Signal names and numbers for Linux (x86_64 / aarch64 numbering), pure.
//!
//! Unit files, CLI flags (`--rewrite TERM:QUIT`) and log lines speak in
//! names; the OS layer speaks in numbers. This table is the one place that
//! maps between them, so no pure module needs libc.

/// (number, name without the SIG prefix), in number order.
const TABLE: &[(i32, &str)] = &[
    (1, "HUP"),
    (2, "INT"),
    (3, "QUIT"),
    (4, "ILL"),
    (5, "TRAP"),
    (6, "ABRT"),
    (7, "BUS"),
    (8, "FPE"),
    (9, "KILL"),
    (10, "USR1"),
    (11, "SEGV"),
    (12, "USR2"),
    (13, "PIPE"),
    (14, "ALRM"),
    (15, "TERM"),
    (16, "STKFLT"),
    (17, "CHLD"),
    (18, "CONT"),
    (19, "STOP"),
    (20, "TSTP"),
    (21, "TTIN"),
    (22, "TTOU"),
    (23, "URG"),
    (24, "XCPU"),
    (25, "XFSZ"),
    (26, "VTALRM"),
    (27, "PROF"),
    (28, "WINCH"),
    (29, "IO"),
    (30, "PWR"),
    (31, "SYS"),
];

/// Highest real-time signal number on Linux.
pub const SIGRTMAX: i32 = 64;

pub const SIGHUP: i32 = 1;
pub const SIGINT: i32 = 2;
pub const SIGQUIT: i32 = 3;
pub const SIGKILL: i32 = 9;
pub const SIGUSR1: i32 = 10;
pub const SIGUSR2: i32 = 12;
pub const SIGTERM: i32 = 15;
pub const SIGCHLD: i32 = 17;
pub const SIGCONT: i32 = 18;
pub const SIGSTOP: i32 = 19;
pub const SIGWINCH: i32 = 28;
pub const SIGPWR: i32 = 30;

/// Parses "TERM", "SIGTERM", "term" or "15" into a signal number.
/// Real-time signals are accepted as "RTMIN+N" or their number (32..=64).
pub fn parse(text: &str) -> Option<i32> {
    let t = text.trim();
    if let Ok(n) = t.parse::<i32>() {
        return (1..=SIGRTMAX).contains(&n).then_some(n);
    }
    let upper = t.to_ascii_uppercase();
    let bare = upper.strip_prefix("SIG").unwrap_or(&upper);
    if let Some(off) = bare.strip_prefix("RTMIN+") {
        // Unsigned and small: "RTMIN+-40" is no signal, and
        // "RTMIN+2147483647" must not overflow.
        let n = 34 + i32::from(off.parse::<u8>().ok()?);
        return (n <= SIGRTMAX).then_some(n);
    }
    if bare == "RTMIN" {
        return Some(34);
    }
    if bare == "IOT" {
        return Some(6);
    }
    if bare == "POLL" {
        return Some(29);
    }
    TABLE
        .iter()
        .find(|(_, name)| *name == bare)
        .map(|(n, _)| *n)
}

/// Every signal's name without the SIG prefix, in number order (the
/// real-time ones excepted), for "did you mean".
pub fn names() -> impl Iterator<Item = &'static str> {
    TABLE.iter().map(|(_, name)| *name)
}

/// "SIGTERM" for 15, "SIGRTMIN+2" for 36, "SIG99" for anything unknown.
pub fn name(signo: i32) -> String {
    if let Some((_, n)) = TABLE.iter().find(|(num, _)| *num == signo) {
        return format!("SIG{n}");
    }
    if (34..=SIGRTMAX).contains(&signo) {
        return format!("SIGRTMIN+{}", signo - 34);
    }
    format!("SIG{signo}")
}

/// Signals whose default action cannot be changed or that the kernel raises
/// synchronously on a fault: an init must neither block nor forward them.
pub fn is_uncatchable_or_fault(signo: i32) -> bool {
    matches!(signo, 4 | 5 | 6 | 7 | 8 | 9 | 11 | 19 | 31)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_names_numbers_and_prefixes() {
        assert_eq!(parse("TERM"), Some(15));
        assert_eq!(parse("SIGTERM"), Some(15));
        assert_eq!(parse("term"), Some(15));
        assert_eq!(parse("9"), Some(9));
        assert_eq!(parse("RTMIN+2"), Some(36));
        assert_eq!(parse("SIGRTMIN"), Some(34));
        assert_eq!(parse("nope"), None);
        assert_eq!(parse("0"), None);
        assert_eq!(parse("65"), None);
        assert_eq!(parse("RTMIN+40"), None);
    }

    /// Found while adding the signal checks to the unit and control fuzz
    /// targets: the offset was a signed i32 added unchecked, so
    /// `stop_signal = "RTMIN+-43"` read as -9 (a service that could not
    /// start: its death signal was refused), "RTMIN+-34" as 0 (no stop
    /// signal at all), and "RTMIN+2147483647" overflowed: a panic in a
    /// debug build, from a unit file or a `signal` request.
    #[test]
    fn an_rtmin_offset_is_small_and_never_negative() {
        for text in [
            "RTMIN+-1",
            "RTMIN+-34",
            "RTMIN+-43",
            "RTMIN+2147483647",
            "RTMIN+31",
            "RTMIN+",
        ] {
            assert_eq!(parse(text), None, "{text}");
        }
        assert_eq!(parse("RTMIN+30"), Some(SIGRTMAX));
        assert_eq!(parse("RTMIN+0"), Some(34));
    }

    #[test]
    fn names_round_trip() {
        for n in 1..=SIGRTMAX {
            if (32..34).contains(&n) {
                continue;
            }
            assert_eq!(parse(&name(n)), Some(n), "{n}");
        }
    }
}
