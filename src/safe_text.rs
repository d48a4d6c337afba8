//! Text that others wrote, made safe to show on a terminal or to keep in a
//! journal (pure).
//!
//! A host's error text, a unit's `STATUS=`, a health check's status line or
//! a publisher's refusal may carry ESC and other control characters: shown
//! raw, they move the cursor, retitle the window, hide lines or make a
//! terminal answer with keystrokes. Every control character (C0, DEL, C1)
//! and every bidirectional override is shown as an escape instead (`\x1b`,
//! `\x9b`, `\u{202e}`); everything else, backslashes included, stays as
//! it is, so ordinary text reads unchanged and escaping twice changes
//! nothing. zurg's own log lines use the same escapes
//! (`log::escape_controls`), so that a newline in a name cannot forge a
//! second line there either.

use std::borrow::Cow;
use std::fmt::Write as _;

/// Characters that reorder how a terminal lays out the text around them:
/// a line could show one thing and say another.
fn is_bidi(c: char) -> bool {
    matches!(
        c,
        '\u{61c}' | '\u{200e}' | '\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2066}'..='\u{2069}'
    )
}

fn is_unsafe(c: char) -> bool {
    c.is_control() || is_bidi(c)
}

/// How `c` is shown: itself, or an escape for a character a terminal
/// would act on.
fn push_shown(out: &mut String, c: char) {
    match c {
        '\n' => out.push_str("\\n"),
        '\r' => out.push_str("\\r"),
        '\t' => out.push_str("\\t"),
        '\0' => out.push_str("\\0"),
        c if u32::from(c) < 0x100 && is_unsafe(c) => {
            let _ = write!(out, "\\x{:02x}", u32::from(c));
        }
        c if is_unsafe(c) => {
            let _ = write!(out, "\\u{{{:x}}}", u32::from(c));
        }
        c => out.push(c),
    }
}

/// `text` with its control characters shown as escapes; borrowed when it
/// has none (the usual case, which costs a scan).
pub fn escaped(text: &str) -> Cow<'_, str> {
    if !text.chars().any(is_unsafe) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().saturating_add(8));
    for c in text.chars() {
        push_shown(&mut out, c);
    }
    Cow::Owned(out)
}

/// The room `bounded` leaves for its marker: " …[cut: N bytes]" with N up
/// to 20 digits.
const MARKER_ROOM: usize = 40;

/// `escaped(text)`, at most `max` bytes (but never under `MARKER_ROOM`):
/// when longer, cut at a whole character or escape and ended by a marker
/// that says so and how long the text was, `…[cut: 70000 bytes]`.
pub fn bounded(text: &str, max: usize) -> Cow<'_, str> {
    let max = max.max(MARKER_ROOM);
    let shown = escaped(text);
    if shown.len() <= max {
        return shown;
    }
    let marker = format!(" …[cut: {} bytes]", text.len());
    let budget = max.saturating_sub(marker.len());
    let mut out = String::with_capacity(max);
    for c in text.chars() {
        let before = out.len();
        push_shown(&mut out, c);
        if out.len() > budget {
            out.truncate(before);
            break;
        }
    }
    out.push_str(&marker);
    Cow::Owned(out)
}

/// JSON text (as serde_json writes it, which escapes only C0) with the
/// other control characters and bidirectional overrides as `\u` escapes
/// too: the same document to a JSON reader, nothing a terminal acts on.
/// Such a character can only stand inside a JSON string, where `\uXXXX`
/// means it exactly; JSON's own whitespace between tokens (a line's end)
/// stays.
pub fn json(text: &str) -> Cow<'_, str> {
    let unsafe_in_json = |c: char| is_unsafe(c) && !matches!(c, '\n' | '\r' | '\t');
    if !text.chars().any(unsafe_in_json) {
        return Cow::Borrowed(text);
    }
    let mut out = String::with_capacity(text.len().saturating_add(8));
    for c in text.chars() {
        if unsafe_in_json(c) {
            // Every one of them is in the Basic Multilingual Plane.
            let _ = write!(out, "\\u{:04x}", u32::from(c));
        } else {
            out.push(c);
        }
    }
    Cow::Owned(out)
}

/// Every string in `value` (keys too) escaped, for printing its fields
/// as text.
pub fn value(value: &mut serde_json::Value) {
    use serde_json::Value;
    match value {
        Value::String(s) => {
            if let Cow::Owned(shown) = escaped(s) {
                *s = shown;
            }
        }
        Value::Array(items) => items.iter_mut().for_each(self::value),
        Value::Object(map) => {
            if map.keys().any(|k| k.chars().any(is_unsafe)) {
                let old = std::mem::take(map);
                *map = old
                    .into_iter()
                    .map(|(k, v)| (escaped(&k).into_owned(), v))
                    .collect();
            }
            map.values_mut().for_each(self::value);
        }
        Value::Null | Value::Bool(_) | Value::Number(_) => {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn control_characters_are_shown_escaped_and_the_rest_is_left_alone() {
        assert!(matches!(
            escaped("api: exited (code 1) é ✓"),
            Cow::Borrowed(_)
        ));
        assert_eq!(
            escaped("\u{1b}[31mred\u{1b}]0;title\u{7}\r\n\t\u{7f}\u{9b}2J\u{202e}txt"),
            "\\x1b[31mred\\x1b]0;title\\x07\\r\\n\\t\\x7f\\x9b2J\\u{202e}txt"
        );
        // Escaping what is escaped changes nothing: a relayed text may be
        // escaped by the publisher and again by the client.
        let once = escaped("a\u{1b}b\\x1b").into_owned();
        assert_eq!(escaped(&once), once);
    }

    #[test]
    fn a_long_text_is_cut_with_a_marker_within_its_bound() {
        assert_eq!(bounded("short", 100), "short");
        let long = format!("{}{}", "\u{1b}".repeat(10), "x".repeat(70_000));
        let cut = bounded(&long, 1024);
        assert!(cut.len() <= 1024, "{}", cut.len());
        assert!(cut.starts_with("\\x1b\\x1b"), "{cut}");
        assert!(cut.ends_with(" …[cut: 70010 bytes]"), "{cut}");
        assert!(!cut.contains('\u{1b}'));
        // Never half an escape or half a character.
        let mixed = "é\u{1b}".repeat(100);
        for max in 40..80 {
            let cut = bounded(&mixed, max);
            assert!(cut.len() <= max, "{max}: {cut}");
            let body = cut.split(" …[cut").next().unwrap();
            assert!(!body.ends_with("\\x1") && !body.ends_with("\\x"), "{cut}");
            assert_eq!(escaped(body), body);
        }
        // A text that fits only once escaped is not cut.
        assert_eq!(bounded("\u{1b}", 40), "\\x1b");
    }

    #[test]
    fn json_keeps_its_meaning_and_loses_what_a_terminal_acts_on() {
        let doc = serde_json::json!({"m": "\u{1b}[2J\u{9b}31m\u{7f}\u{202e}é"});
        let text = serde_json::to_string(&doc).unwrap() + "\n";
        assert!(text.contains('\u{9b}'), "serde_json leaves C1 raw: {text}");
        let safe = json(&text);
        assert!(safe.ends_with("}\n"), "a line stays a line: {safe}");
        assert!(!safe.trim_end().chars().any(is_unsafe), "{safe}");
        let back: serde_json::Value = serde_json::from_str(&safe).unwrap();
        assert_eq!(back, doc);
    }

    #[test]
    fn every_string_of_a_value_is_escaped() {
        let mut v = serde_json::json!([
            {"name": "api", "status_text": "\u{1b}[8mhidden", "n": 3, "ok": true},
            {"k\u{1b}": ["\u{9b}"]}
        ]);
        value(&mut v);
        assert_eq!(
            v,
            serde_json::json!([
                {"name": "api", "status_text": "\\x1b[8mhidden", "n": 3, "ok": true},
                {"k\\x1b": ["\\x9b"]}
            ])
        );
    }
}
