//! Fuzz harnesses: each decoder that reads bytes from outside (unit files,
//! control lines, publish frames, journals, GPIDs) run on arbitrary input,
//! checking what must hold for every input, not only that nothing panics.
//!
//! They live in the library rather than in `fuzz/` so that two runners
//! share them: the cargo-fuzz targets in `fuzz/fuzz_targets/` (libFuzzer,
//! `scripts/fuzz`) and a plain unit test below that replays every file of
//! the seed corpus `fuzz/corpus/<target>/` on stable `cargo test`, so each
//! crash once found and added to the corpus stays a regression test.
//!
//! A harness returns the property an input broke instead of panicking: the
//! crate denies panics, and a fuzz target turns the `Violation` into its
//! crash. Nothing here is reached by the daemon.

mod registry;

use std::net::IpAddr;
use std::path::Path;

use crate::control::proto as control;
use crate::gpid::{Gpid, StartClock};
use crate::journal;
use crate::publish::proto::{self as publish, Decoder, Frame};
use crate::sig;
use crate::unit::parse_unit;

/// What a fuzz target feeds its bytes to; the name is its directory under
/// `fuzz/corpus/` and its file in `fuzz/fuzz_targets/`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Target {
    /// A unit file's text through `parse_unit`.
    Unit,
    /// A control line as a request (the server's side) and as a reply
    /// (the client's side).
    Control,
    /// A byte stream through the publish frame `Decoder`.
    PublishFrames,
    /// A session of several forwarders and clients against the registry.
    PublishRegistry,
    /// A journal file's bytes through the reader.
    Journal,
    /// A GPID's text, and wall-clock readings through the start clock.
    Gpid,
    /// An `env_file`'s bytes through `parse_env_file`.
    EnvFile,
}

/// Every target; `scripts/fuzz` runs those `cargo fuzz list` names.
pub const TARGETS: [Target; 7] = [
    Target::Unit,
    Target::Control,
    Target::PublishFrames,
    Target::PublishRegistry,
    Target::Journal,
    Target::Gpid,
    Target::EnvFile,
];

impl Target {
    pub fn name(self) -> &'static str {
        match self {
            Target::Unit => "unit",
            Target::Control => "control",
            Target::PublishFrames => "publish_frames",
            Target::PublishRegistry => "publish_registry",
            Target::Journal => "journal",
            Target::Gpid => "gpid",
            Target::EnvFile => "env_file",
        }
    }

    /// Runs this target's harness on one input.
    pub fn run(self, data: &[u8]) -> Result<(), Violation> {
        let broke = |property: String| Violation {
            target: self,
            property,
        };
        match self {
            Target::Unit => unit(data),
            Target::Control => control_line(data),
            Target::PublishFrames => publish_frames(data),
            Target::PublishRegistry => registry::session(data),
            Target::Journal => journal_bytes(data),
            Target::Gpid => gpid(data),
            Target::EnvFile => env_file(data),
        }
        .map_err(broke)
    }
}

/// An input that broke a property the target checks.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("fuzz target {}: {property}", target.name())]
pub struct Violation {
    pub target: Target,
    pub property: String,
}

/// `Err(what)` unless `holds`.
fn check(holds: bool, what: impl FnOnce() -> String) -> Result<(), String> {
    if holds {
        Ok(())
    } else {
        Err(what())
    }
}

fn unit(data: &[u8]) -> Result<(), String> {
    // The loader refuses a file that is not UTF-8 before parsing it.
    let Ok(text) = std::str::from_utf8(data) else {
        return Ok(());
    };
    let path = Path::new("/units/fuzz.toml");
    let lines = text.matches('\n').count() + 1;
    match parse_unit("fuzz", path, text) {
        Ok(unit) => {
            check(&*unit.name == "fuzz", || {
                format!("a unit parsed as {:?}, not fuzz", unit.name)
            })?;
            check((1..=sig::SIGRTMAX).contains(&unit.stop_signal), || {
                format!("stop_signal {} is no signal", unit.stop_signal)
            })
        }
        Err(errors) => {
            let errors = errors.as_slice();
            check(!errors.is_empty(), || "an empty error list".into())?;
            for e in errors {
                check(e.path == path, || format!("an error names {:?}", e.path))?;
                check(e.line <= lines && (e.line == 0) == (e.col == 0), || {
                    format!(
                        "an error at {}:{} of a {lines}-line file: {e}",
                        e.line, e.col
                    )
                })?;
                check(!e.msg.is_empty(), || format!("an empty message: {e}"))?;
            }
            let sorted = errors
                .windows(2)
                .all(|w| matches!(w, [a, b] if (a.line, a.col) <= (b.line, b.col)));
            check(sorted, || "errors out of line order".into())
        }
    }
}

fn control_line(data: &[u8]) -> Result<(), String> {
    match control::decode_request(data) {
        Ok(request) => {
            // The signal verb's name is parsed by the supervisor.
            if let control::Verb::Signal { signal, .. } = &request.verb {
                let signo = sig::parse(signal);
                check(
                    signo.is_none_or(|n| (1..=sig::SIGRTMAX).contains(&n)),
                    || format!("signal {signal:?} parsed as {signo:?}"),
                )?;
            }
            let line = control::encode_request(&request);
            let body = line.strip_suffix(b"\n").unwrap_or(&line);
            check(!body.contains(&b'\n'), || {
                "an encoded request spans lines".into()
            })?;
            let back = control::decode_request(body);
            check(back.as_ref() == Ok(&request), || {
                format!("request {request:?} encoded as {line:?} decodes as {back:?}")
            })?;
        }
        Err(e) => {
            check(!e.message.is_empty(), || "an error with no message".into())?;
            let too_large = e.code == control::ErrorCode::TooLarge;
            check(too_large == (data.len() > control::MAX_LINE), || {
                format!("{} bytes refused as {:?}", data.len(), e.code)
            })?;
        }
    }
    // The client reads whatever answers on the socket path.
    if let Ok(reply) = control::decode_reply(data) {
        // Not checked to be one line: a result is passed on as the text
        // it came as, whitespace and all (zurg's own are compact).
        let line = control::encode_reply(&reply);
        let body = line.strip_suffix(b"\n").unwrap_or(&line);
        let back = control::decode_reply(body);
        check(back.as_ref() == Ok(&reply), || {
            format!("reply {reply:?} encoded as {line:?} decodes as {back:?}")
        })?;
    }
    Ok(())
}

/// What a decoder made of a stream: its frames, and the error that ended
/// it, if one did.
type Decoded = (Vec<Frame>, Option<publish::FrameError>);

/// Takes every frame out of `decoder`; stops at the first error, as a
/// connection does.
fn drain(decoder: &mut Decoder, out: &mut Decoded) -> bool {
    loop {
        match decoder.next_frame() {
            Ok(Some(frame)) => out.0.push(frame),
            Ok(None) => return true,
            Err(e) => {
                out.1 = Some(e);
                return false;
            }
        }
    }
}

fn decode_in_pieces(stream: &[u8], piece: usize) -> Decoded {
    let mut decoder = Decoder::new(publish::MAX_FRAME);
    let mut out = (Vec::new(), None);
    for chunk in stream.chunks(piece.max(1)) {
        decoder.feed(chunk);
        if !drain(&mut decoder, &mut out) {
            break;
        }
    }
    out
}

/// The first byte says in what pieces the rest arrives.
fn publish_frames(data: &[u8]) -> Result<(), String> {
    let Some((&piece, stream)) = data.split_first() else {
        return Ok(());
    };
    let whole = decode_in_pieces(stream, stream.len());
    let pieces = decode_in_pieces(stream, usize::from(piece));
    check(whole == pieces, || {
        format!("in one piece {whole:?}, in pieces of {piece}: {pieces:?}")
    })?;
    for frame in &whole.0 {
        let bytes = publish::to_bytes(frame);
        // Defaults written out can make a frame longer than it came in, so
        // the round trip does not hold it to the 64 KiB limit.
        let mut decoder = Decoder::new(usize::MAX);
        decoder.feed(&bytes);
        let back = decoder.next_frame();
        check(back.as_ref() == Ok(&Some(frame.clone())), || {
            format!("{frame:?} encoded and decoded is {back:?}")
        })?;
        check(decoder.pending() == 0, || {
            format!("{frame:?} encoded leaves bytes behind")
        })?;
    }
    Ok(())
}

fn journal_bytes(data: &[u8]) -> Result<(), String> {
    // Arbitrary bytes as a journal file, as `history` and `open` read them.
    let (records, good, _) = journal::decode_all(data);
    check(good <= data.len(), || {
        format!("good prefix {good} past the end")
    })?;
    // `open` reads the file in chunks, not whole: it must find the same.
    let (_, _, warning) = journal::decode_all(data);
    for chunk in [1, 5, 4096] {
        let scanned = journal::scan_bytes(data, chunk).map_err(|e| e.to_string())?;
        check(scanned == (good, data.len(), warning.clone()), || {
            format!("a scan in {chunk}-byte chunks finds {scanned:?}, the whole read {good}")
        })?;
    }
    // Reopening cuts the file to its good prefix: that keeps every record.
    let kept = data.get(..good).unwrap_or_default();
    let (again, again_good, _) = journal::decode_all(kept);
    check(again == records && again_good == good, || {
        format!(
            "cut to {good} bytes, {} of {} records and good {again_good}",
            again.len(),
            records.len()
        )
    })?;
    // What the `history NAME` reader decodes is what the full read has.
    let only = journal::Only::field("service", "s1");
    let (some, some_good, _) = journal::decode_matching(data, Some(&only));
    check(some_good == good, || {
        format!("filtered read keeps {some_good}, full read {good}")
    })?;
    let mut rest = records.iter();
    check(some.iter().all(|r| rest.any(|s| s == r)), || {
        "the filtered read has records the full read has not".into()
    })?;
    journal_head(data)?;
    journal_damage(data)
}

/// The same bytes as one record's payload, as the publisher's history
/// reads its head (`journal::Head`): whenever serde
/// reads them as a record, the head holds that record's fields.
fn journal_head(data: &[u8]) -> Result<(), String> {
    let Ok(r) = serde_json::from_slice::<journal::Record>(data) else {
        // Only that it does not panic.
        let _ = journal::Head::of(data, &mut None);
        return Ok(());
    };
    head_holds(data, &r)
}

fn head_holds(payload: &[u8], r: &journal::Record) -> Result<(), String> {
    let mut spill = None;
    let head = journal::Head::of(payload, &mut spill);
    let want = journal::Head {
        time_us: r.time_us,
        service: &r.service,
        seq: r.seq,
        zurg: r.zurg.as_deref(),
    };
    check(head == Some(want), || {
        format!(
            "the head of {} reads {head:?}, the record {want:?}",
            String::from_utf8_lossy(payload)
        )
    })
}

/// The same bytes as a recipe: records written by zurg, then one byte
/// flipped and the tail torn, as a crash or a bad disk would.
fn journal_damage(data: &[u8]) -> Result<(), String> {
    let [flip_at, mask, cut_at, rest @ ..] = data else {
        return Ok(());
    };
    let written: Vec<journal::Record> = rest
        .chunks(7)
        .take(32)
        .enumerate()
        .map(|(i, chunk)| {
            let text: String = chunk.iter().map(|&b| char::from(b)).collect();
            journal::Record {
                time_us: u64::try_from(i).unwrap_or(0),
                service: format!("s{}", chunk.first().copied().unwrap_or(0) % 3),
                gpid: text.clone(),
                version: chunk.len().is_multiple_of(2).then_some(text.clone()),
                seq: chunk.get(1).map(|&b| u64::from(b)),
                zurg: chunk.get(2).is_some_and(|b| b % 2 == 0).then_some(text),
                ..Default::default()
            }
        })
        .collect();
    for r in &written {
        head_holds(&serde_json::to_vec(r).unwrap_or_default(), r)?;
    }
    let mut file = Vec::new();
    let mut spans = Vec::new();
    for r in &written {
        let framed = journal::frame(r);
        spans.push(file.len()..file.len() + framed.len());
        file.extend(framed);
    }
    if file.is_empty() {
        return Ok(());
    }
    let flip = usize::from(*flip_at) * file.len() / 256;
    if let Some(b) = file.get_mut(flip) {
        *b ^= mask;
    }
    let hit = spans.iter().position(|s| s.contains(&flip));
    let cut = file.len() - usize::from(*cut_at) * file.len() / 256 / 4;
    let torn = file.get(..cut).unwrap_or_default();
    let (records, _, _) = journal::decode_all(torn);
    let want: Vec<&journal::Record> = written
        .iter()
        .zip(&spans)
        .enumerate()
        .filter(|(i, (_, span))| span.end <= cut && (*mask == 0 || Some(*i) != hit))
        .map(|(_, (r, _))| r)
        .collect();
    // The flipped record may still read (a flip inside a record that the
    // tear cut anyway), so: everything else, and nothing that was not
    // written.
    let missing = want.iter().filter(|r| !records.contains(r)).count();
    check(missing == 0, || {
        format!(
            "a flip at {flip} (mask {mask:#x}) and a tear at {cut} lost {missing} other record(s)"
        )
    })?;
    check(records.iter().all(|r| written.contains(r)), || {
        "a record read back that was never written".into()
    })
}

/// An env file parses into valid, distinct names and NUL-free values
/// (they become C strings at spawn), and what it parsed to, written back
/// with double quotes, parses to the same; a refusal names a line the file
/// has.
fn env_file(data: &[u8]) -> Result<(), String> {
    use crate::unit::envfile::parse_env_file;
    let vars = match parse_env_file(data) {
        Ok(vars) => vars,
        Err(e) => {
            let lines = data.split(|b| *b == b'\n').count();
            return check(e.line >= 1 && e.line <= lines, || {
                format!("error on line {} of a {lines}-line file", e.line)
            });
        }
    };
    let mut seen = std::collections::HashSet::new();
    for (key, value) in &vars {
        let mut chars = key.chars();
        let valid = chars
            .next()
            .is_some_and(|c| c.is_ascii_alphabetic() || c == '_')
            && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
        check(valid, || format!("accepted the name {key:?}"))?;
        check(seen.insert(key.as_str()), || format!("{key:?} twice"))?;
        check(!value.contains('\0'), || format!("{key:?} holds a NUL"))?;
    }
    let mut text = String::new();
    for (key, value) in &vars {
        text.push_str(key);
        text.push_str("=\"");
        for c in value.chars() {
            match c {
                '"' | '\\' | '$' | '`' => {
                    text.push('\\');
                    text.push(c);
                }
                '\n' => text.push_str("\\n"),
                '\t' => text.push_str("\\t"),
                c => text.push(c),
            }
        }
        text.push_str("\"\n");
    }
    let back = parse_env_file(text.as_bytes());
    check(back.as_ref() == Ok(&vars), || {
        format!("{vars:?} written as {text:?} reads back as {back:?}")
    })
}

fn gpid(data: &[u8]) -> Result<(), String> {
    if let Ok(text) = std::str::from_utf8(data) {
        if let Ok(g) = text.parse::<Gpid>() {
            let shown = g.to_string();
            let back = shown.parse::<Gpid>();
            check(back.as_ref() == Ok(&g), || {
                format!("{text:?} parsed as {g:?}, shown as {shown:?}, parses as {back:?}")
            })?;
            let prefix = Gpid::prefix(g.ip, g.port, g.start_us);
            check(format!("{prefix}{}", g.pid) == shown, || {
                format!("prefix {prefix:?} does not begin {shown:?}")
            })?;
            let json = serde_json::to_string(&g).unwrap_or_default();
            let from_json = serde_json::from_str::<Gpid>(&json).ok();
            check(from_json == Some(g), || format!("{g:?} as JSON {json:?}"))?;
            check(
                matches!(
                    (g.ip, shown.starts_with('[')),
                    (IpAddr::V6(_), true) | (IpAddr::V4(_), false)
                ),
                || format!("{shown:?} brackets the wrong address family"),
            )?;
        }
    }
    // The same bytes as wall-clock readings that jump back and forth: the
    // start clock still issues strictly increasing times.
    let mut words = data.chunks_exact(8).map(|w| {
        let mut b = [0u8; 8];
        b.copy_from_slice(w);
        u64::from_le_bytes(b)
    });
    let Some(first) = words.next() else {
        return Ok(());
    };
    let mut clock = StartClock::after(first);
    let mut last = first;
    for now in words {
        match clock.issue(now) {
            Ok(t) => {
                check(t > last && t >= now, || {
                    format!("issued {t} after {last} at wall clock {now}")
                })?;
                last = t;
            }
            Err(e) => check(e.last_us == u64::MAX && clock.last() == last, || {
                format!("exhausted at {} after {last}", e.last_us)
            })?,
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn corpus(target: Target) -> Vec<(std::path::PathBuf, Vec<u8>)> {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("fuzz/corpus")
            .join(target.name());
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        files
            .into_iter()
            .map(|p| {
                let bytes = std::fs::read(&p).unwrap();
                (p, bytes)
            })
            .collect()
    }

    /// Every seed and every crash input kept in the repository holds on
    /// stable Rust, without cargo-fuzz.
    #[test]
    fn the_corpus_replays_clean() {
        for target in TARGETS {
            let files = corpus(target);
            assert!(
                files.len() >= 3,
                "{}: a seed corpus of {} file(s)",
                target.name(),
                files.len()
            );
            for (path, bytes) in files {
                if let Err(v) = target.run(&bytes) {
                    panic!("{}: {v}", path.display());
                }
            }
        }
    }

    #[test]
    fn every_target_has_a_fuzz_target_file() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/fuzz_targets");
        for target in TARGETS {
            let file = dir.join(format!("{}.rs", target.name()));
            let text = std::fs::read_to_string(&file).unwrap_or_default();
            let variant = format!("{target:?}");
            assert!(
                text.contains(&format!("Target::{variant}")),
                "{} must run Target::{variant}",
                file.display()
            );
        }
    }

    #[test]
    fn empty_and_tiny_inputs_hold() {
        for target in TARGETS {
            for data in [&b""[..], b"\0", b"\n", b"{}", &[0xff; 9]] {
                assert_eq!(target.run(data), Ok(()), "{} on {data:?}", target.name());
            }
        }
    }
}
