//! What a service says on its notify socket: newline-separated
//! `KEY=VALUE` assignments, systemd's sd_notify protocol. Only the keys
//! zurg acts on are read; the rest (RELOADING, ERRNO, FDSTORE...) are
//! ignored, as a service written for systemd may send them.
//!
//! Pure: bytes in, one `Notice` per assignment out.

/// Longest `STATUS=` text kept; a longer one is cut at a character.
pub const MAX_STATUS: usize = 256;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Notice {
    /// `READY=1`.
    Ready,
    /// `STOPPING=1`: an exit that follows was asked for.
    Stopping,
    /// `STATUS=...`: free text for `zurg status`.
    Status(String),
    /// `WATCHDOG=1`: a keep-alive ping.
    Ping,
    /// `WATCHDOG=trigger`: the service asks to be treated as hung.
    Trigger,
    /// `MAINPID=N`: the process the service says is its main one.
    MainPid(i32),
}

/// Every notice of one datagram, in order. Lines that are not UTF-8, not
/// an assignment, or not one zurg knows are skipped.
pub fn parse(datagram: &[u8]) -> Vec<Notice> {
    let mut out = Vec::new();
    for line in datagram.split(|b| *b == b'\n') {
        let Ok(line) = std::str::from_utf8(line) else {
            continue;
        };
        let Some((key, value)) = line.split_once('=') else {
            continue;
        };
        let notice = match (key, value) {
            ("READY", "1") => Notice::Ready,
            ("STOPPING", "1") => Notice::Stopping,
            ("WATCHDOG", "1") => Notice::Ping,
            ("WATCHDOG", "trigger") => Notice::Trigger,
            ("STATUS", text) => Notice::Status(cut(text, MAX_STATUS).to_string()),
            ("MAINPID", pid) => match pid.parse::<i32>() {
                Ok(p) if p > 0 => Notice::MainPid(p),
                _ => continue,
            },
            _ => continue,
        };
        out.push(notice);
    }
    out
}

/// `text` cut to at most `max` bytes, at a character boundary.
fn cut(text: &str, max: usize) -> &str {
    if text.len() <= max {
        return text;
    }
    let mut end = max;
    while !text.is_char_boundary(end) {
        end -= 1;
    }
    text.get(..end).unwrap_or("")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_keys_zurg_acts_on_and_skips_the_rest() {
        assert_eq!(
            parse(b"READY=1\nSTATUS=accepting connections\nMAINPID=42\n"),
            vec![
                Notice::Ready,
                Notice::Status("accepting connections".into()),
                Notice::MainPid(42)
            ]
        );
        assert_eq!(parse(b"WATCHDOG=1"), vec![Notice::Ping]);
        assert_eq!(parse(b"WATCHDOG=trigger\n"), vec![Notice::Trigger]);
        assert_eq!(parse(b"STOPPING=1"), vec![Notice::Stopping]);
        // not ours, malformed, or not UTF-8
        assert_eq!(
            parse(b"RELOADING=1\nERRNO=2\nREADY=0\nREADY\nMAINPID=-3\nMAINPID=x\n\xff\xfe=1\n"),
            vec![]
        );
        assert_eq!(parse(b""), vec![]);
        assert_eq!(parse(b"STATUS="), vec![Notice::Status(String::new())]);
    }

    #[test]
    fn a_long_status_is_cut_at_a_character() {
        let long = format!("STATUS={}", "é".repeat(200));
        let [Notice::Status(text)] = &parse(long.as_bytes())[..] else {
            panic!("one status")
        };
        assert!(text.len() <= MAX_STATUS && text.len() >= MAX_STATUS - 1);
        assert!(text.chars().all(|c| c == 'é'));
    }
}
