//! Human log lines on stderr (the console when zurg is PID 1), one write(2)
//! per line so lines from zurg and its children never interleave mid-line.
//! A failed write is dropped: logging must never stop the supervisor.

use std::io::Write;

pub fn line(args: std::fmt::Arguments<'_>) {
    let text = std::fmt::format(args);
    let mut buf = Vec::with_capacity(text.len() + 8);
    let _ = buf.write_all(b"zurg: ");
    buf.extend_from_slice(escape_controls(&text).as_bytes());
    buf.push(b'\n');
    let _ = std::io::stderr().write_all(&buf);
}

/// Control characters shown as escapes: names, paths and arguments come
/// from unit files and file names, and a newline or NUL in one must not
/// forge a second log line or cut the line short on a console.
pub fn escape_controls(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(char::is_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len() + 8);
    for c in text.chars() {
        match c {
            '\n' => out.push_str("\\n"),
            '\r' => out.push_str("\\r"),
            '\t' => out.push_str("\\t"),
            '\0' => out.push_str("\\0"),
            c if c.is_control() => {
                use std::fmt::Write as _;
                let _ = write!(out, "\\x{:02x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    std::borrow::Cow::Owned(out)
}

/// `log!("started {}", pid)` writes `zurg: started 42` to stderr.
#[macro_export]
macro_rules! log {
    ($($arg:tt)*) => { $crate::log::line(format_args!($($arg)*)) };
}

#[cfg(test)]
mod tests {
    use super::escape_controls;

    #[test]
    fn control_characters_are_escaped_and_the_rest_kept() {
        assert_eq!(
            escape_controls("[web] started pid 4"),
            "[web] started pid 4"
        );
        assert_eq!(
            escape_controls("[a\nzurg: fake] x\0y\tz\r\u{1b}[31m\u{7f}\u{85}"),
            "[a\\nzurg: fake] x\\0y\\tz\\r\\x1b[31m\\x7f\\x85"
        );
        assert_eq!(escape_controls("résumé ✓"), "résumé ✓");
    }
}
