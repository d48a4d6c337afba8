//! Services' stdout and stderr: read from pipes on the loop, cut into lines
//! (`lines`), and written to zurg's own stdout/stderr as `NAME | line`
//! (`prefix`) or to a rotating file (`sink`); every line is also handed to
//! `record_output` for `zurg logs`.
//!
//! Each piped stream has one pipe for the life of its service: zurg keeps
//! both ends and dups the write end into each new process as fd 1 or 2, so
//! what a process wrote just before it crashed is still read afterwards,
//! and a restart costs no pipe. The read end is O_NONBLOCK (the write end
//! stays blocking: its file description is the child's, and a full pipe
//! slowing the child down is the backpressure we want).
//!
//! Fairness and cost: a pipe is read after the turn's restarts (at the end
//! of the turn, `output_turn`), at most `TURN_BYTES` when its readiness
//! woke the loop. A pipe that had `FLOOD_BYTES` (its budget) is *paced*:
//! read once per turn, up to `PACED_BYTES`, its readiness ignored, the
//! loop sleeping at most `reactor::PACE` between turns, until a turn finds
//! less. A pipe's turn also ends after `TURN_TIME`, so a flood cannot
//! delay a restart by more than that and one read.
//!
//! Whole lines of a read bypass the assembler (`lines::split_run`): a file
//! sink without timestamps writes them as read, in one write, while they
//! fit the current file, and the ring takes them in one copy
//! (`Ring::push_spans`) unless a `logs` client follows.
//! A partial line waits `lines::FLUSH_AFTER_MS` for its newline on the
//! timer heap; that timer exists only while such a line is held.

pub mod lines;
pub mod sink;

use std::os::fd::{AsRawFd, OwnedFd};

use mio::Token;

use super::{Supervisor, TimerKey};
use crate::log::Dest;
use crate::os::spawn::ChildOut;
use crate::service::ring::Stream;
use crate::unit::Output;
use lines::{Assembler, Piece, Span};
use sink::{FileSink, Shared};

/// Tokens from here up name a service's pipe: `OUTPUT_BASE + 2 * slot +
/// stream` (above the pidfd range, which starts at 1 << 40).
pub const OUTPUT_BASE: usize = 1 << 41;
/// Bytes read from a pipe whose readiness woke the loop, per turn.
pub const TURN_BYTES: usize = 64 * 1024;
/// Bytes read from a paced pipe per turn.
pub const PACED_BYTES: usize = 256 * 1024;
/// A pipe's turn ends after this long, whatever its budget: a flood never
/// delays the loop's next turn (a restart) by more than this and one read.
const TURN_TIME: std::time::Duration = std::time::Duration::from_micros(250);
/// A turn that read this much paces its pipe; a paced one that reads less
/// is left to its readiness again.
pub const FLOOD_BYTES: usize = TURN_BYTES;
/// Pipe capacity asked for once a pipe is found full: with the loop
/// pacing itself (`reactor::PACE`) during a flood, a pipe holds what a
/// fast writer writes meanwhile.
const PIPE_BYTES: i32 = 1 << 20;
/// What one read(2) asks for.
const READ_CHUNK: usize = 64 * 1024;
/// At shutdown, what is still in a pipe is read up to this much.
const FINAL_BYTES: usize = 1 << 20;

const STREAMS: [Stream; 2] = [Stream::Stdout, Stream::Stderr];

fn index(stream: Stream) -> usize {
    match stream {
        Stream::Stdout => 0,
        Stream::Stderr => 1,
    }
}

fn token(slot: usize, stream: Stream) -> Token {
    Token(OUTPUT_BASE + 2 * slot + index(stream))
}

/// The pipe a token names.
pub fn of_token(token: Token) -> Option<(usize, Stream)> {
    let n = token.0.checked_sub(OUTPUT_BASE)?;
    let stream = if n % 2 == 0 {
        Stream::Stdout
    } else {
        Stream::Stderr
    };
    Some((n / 2, stream))
}

#[derive(Debug)]
enum Sink {
    /// `NAME | line` to zurg's own stream, collected over one read so the
    /// writer's queue is taken once per read rather than once per line.
    Prefix {
        dest: Dest,
        batch: Vec<u8>,
        lines: u64,
    },
    /// Boxed: larger than `Prefix`, which most streams use.
    File(Box<FileWriter>),
}

/// A stream writing to a log file, whose sink it may share with others.
#[derive(Debug)]
struct FileWriter {
    /// As its unit says (a reload compares it).
    cfg: crate::unit::FileOutput,
    file: Shared,
    w: sink::Writer,
    /// While the file cannot be opened its lines go to zurg's own stream
    /// of the same name, labelled, as with `prefix`: not lost.
    fallback: Dest,
    batch: Vec<u8>,
    lines: u64,
}

impl FileWriter {
    /// The sink, unless it is in use: never, as only the loop's thread
    /// writes and no sink call writes to another sink; a piece is dropped
    /// rather than zurg panicking should that change.
    fn with<R>(&self, f: impl FnOnce(&mut FileSink) -> R) -> Option<R> {
        self.file.try_borrow_mut().ok().map(|mut s| f(&mut s))
    }
}

/// Every open log file's sink, by canonical path (`sink::canonical`): a
/// stream whose file is open already writes through the same sink.
#[derive(Debug, Default)]
struct Files(
    std::collections::HashMap<std::path::PathBuf, std::rc::Weak<std::cell::RefCell<FileSink>>>,
);

impl Files {
    fn open(&mut self, cfg: &crate::unit::FileOutput, who: String) -> Shared {
        let key = sink::canonical(&cfg.path);
        if let Some(open) = self.0.get(&key).and_then(std::rc::Weak::upgrade) {
            if let Ok(f) = open.try_borrow() {
                if !f.is_open() {
                    crate::log!(
                        "warning: {who}: log file {} is not open; its lines go to zurg's own stream of that name, labelled, until `zurg reload` or SIGUSR1 opens it",
                        cfg.path.display()
                    );
                }
                if (f.cfg.max_bytes, f.cfg.keep) != (cfg.max_bytes, cfg.keep) {
                    crate::log!(
                        "warning: {who} logs to {}, which is rotated as its first writer's unit says (max_bytes = {}, keep = {})",
                        cfg.path.display(),
                        f.cfg.max_bytes,
                        f.cfg.keep
                    );
                }
            }
            return open;
        }
        // Sinks whose last writer is gone.
        self.0.retain(|_, w| w.strong_count() > 0);
        let file = std::rc::Rc::new(std::cell::RefCell::new(FileSink::open(cfg.clone(), who)));
        self.0.insert(key, std::rc::Rc::downgrade(&file));
        file
    }

    /// Every sink still written to.
    fn all(&self) -> impl Iterator<Item = Shared> + '_ {
        self.0.values().filter_map(std::rc::Weak::upgrade)
    }
}

impl Sink {
    /// Hands on what this read collected.
    fn finish(&mut self) {
        match self {
            Sink::Prefix { dest, batch, lines } => {
                if *lines > 0 {
                    crate::log::raw_lines(*dest, std::mem::take(batch), std::mem::take(lines));
                }
            }
            Sink::File(f) => {
                f.with(FileSink::write_out);
                if f.lines > 0 {
                    crate::log::raw_lines(
                        f.fallback,
                        std::mem::take(&mut f.batch),
                        std::mem::take(&mut f.lines),
                    );
                }
            }
        }
    }
}

/// A piped stream: its pipe, made at load and kept for the service's
/// life, and what handles the lines read from it.
#[derive(Debug)]
struct Pipe {
    read: OwnedFd,
    write: OwnedFd,
    /// Made at the first bytes read (a file sink's at load, so its file is
    /// there and an error shows at once): most services seldom or never
    /// write, and a channel for each of their streams was ~300 bytes of
    /// heap per service (issue 22).
    ch: Option<Box<Channel>>,
}

#[derive(Debug)]
struct Channel {
    asm: Assembler,
    sink: Sink,
    /// The service's name: its lines start `NAME | `, or `NAME + ` for a
    /// piece that continues a line.
    label: Box<[u8]>,
    /// Read every turn (`Outputs::pending`), its readiness ignored.
    paced: bool,
    /// Listed in `Outputs::held`.
    held_listed: bool,
}

impl Channel {
    fn new(sink: Sink, name: &str) -> Box<Channel> {
        Box::new(Channel {
            asm: Assembler::default(),
            sink,
            label: name.as_bytes().into(),
            paced: false,
            held_listed: false,
        })
    }
}

/// Every service's pipes, by slot.
#[derive(Debug, Default)]
pub struct Outputs {
    /// 16 bytes a stream, piped or not; the channel behind is made when
    /// needed.
    slots: Vec<[Option<Pipe>; 2]>,
    /// Pipes whose readiness woke the loop this turn, read at its end.
    ready: Vec<(usize, Stream)>,
    /// Paced pipes, read every turn.
    pending: Vec<(usize, Stream)>,
    /// Channels that may hold a partial line, so that arming and running
    /// the flush timer looks at them and not at every service's channels
    /// (10,000 services, 20,000 channels, every output turn).
    held: Vec<(usize, Stream)>,
    /// When the flush timer is armed for, if it is.
    flush_at: Option<u64>,
    buf: Vec<u8>,
    /// The pieces of a read's whole lines.
    spans: Vec<Span>,
    /// A pipe was refused near the open-file limit (warned once).
    warned_limit: bool,
    files: Files,
}

impl Outputs {
    fn get_mut(&mut self, slot: usize, stream: Stream) -> Option<&mut Option<Pipe>> {
        self.slots.get_mut(slot)?.get_mut(index(stream))
    }

    /// Paced pipes: the loop comes back within `reactor::PACE`.
    pub fn busy(&self) -> bool {
        !self.pending.is_empty()
    }
}

fn make_sink(
    files: &mut Files,
    slot: usize,
    out: &Output,
    stream: Stream,
    name: &str,
) -> Option<Sink> {
    match out {
        Output::Prefix => Some(Sink::Prefix {
            dest: dest_of(stream),
            batch: Vec::new(),
            lines: 0,
        }),
        Output::File(cfg) => Some(Sink::File(Box::new(FileWriter {
            cfg: cfg.clone(),
            file: files.open(cfg, format!("[{name}] key `{}`", stream_name(stream))),
            w: sink::Writer {
                id: token(slot, stream).0,
                timestamps: cfg.timestamps,
            },
            fallback: dest_of(stream),
            batch: Vec::new(),
            lines: 0,
        }))),
        Output::Inherit | Output::Null => None,
    }
}

/// A stream's channel at load: a file sink's only (see `Pipe::ch`).
fn eager_channel(
    files: &mut Files,
    slot: usize,
    out: &Output,
    stream: Stream,
    name: &str,
) -> Option<Box<Channel>> {
    match out {
        Output::File(_) => {
            make_sink(files, slot, out, stream, name).map(|sink| Channel::new(sink, name))
        }
        _ => None,
    }
}

/// zurg's own stream of the same name.
fn dest_of(stream: Stream) -> Dest {
    match stream {
        Stream::Stdout => Dest::Stdout,
        Stream::Stderr => Dest::Stderr,
    }
}

fn stream_name(stream: Stream) -> &'static str {
    match stream {
        Stream::Stdout => "stdout",
        Stream::Stderr => "stderr",
    }
}

/// The pipe: (read end, O_NONBLOCK; write end, blocking), both close-on-exec.
/// Of the default size: it grows at its first flood (`grow`).
fn pipe() -> nix::Result<(OwnedFd, OwnedFd)> {
    use nix::fcntl::{fcntl, FcntlArg, OFlag};
    let (r, w) = nix::unistd::pipe2(OFlag::O_CLOEXEC)?;
    fcntl(&r, FcntlArg::F_SETFL(OFlag::O_NONBLOCK))?;
    Ok((r, w))
}

/// A pipe a read found full grows to `PIPE_BYTES`. Asked for then rather
/// than at creation: the larger ring is 16 KiB of kernel memory, allocated
/// and zeroed, for each of two pipes per service, and most services never
/// fill the default 64 KiB (at 10,000 services about 300 MB of
/// unreclaimable slab, and 40% of the pipes' creation time).
fn grow(read: &OwnedFd) {
    use nix::fcntl::{fcntl, FcntlArg};
    if fcntl(read, FcntlArg::F_GETPIPE_SZ).is_ok_and(|size| size < PIPE_BYTES) {
        // Best effort: a smaller pipe only slows the service down sooner.
        let _ = fcntl(read, FcntlArg::F_SETPIPE_SZ(PIPE_BYTES));
    }
}

impl Supervisor {
    /// Makes a slot's pipes and sinks match its unit (after a load that
    /// added or changed it). A pipe is kept while its stream stays piped,
    /// so bytes in it are not lost; the sink is replaced when it changed.
    pub(super) fn configure_output(&mut self, slot: usize) {
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        let name = s.service.name().to_string();
        let wanted = [
            s.service.unit.rare.stdout.clone(),
            s.service.unit.rare.stderr.clone(),
        ];
        if self.outputs.slots.len() <= slot {
            // Every slot of the load at once (they are all in place by
            // now), so the vector is sized once rather than doubled.
            let len = self.slots.len().max(slot.saturating_add(1));
            self.outputs.slots.resize_with(len, || [None, None]);
        }
        for (stream, want) in STREAMS.into_iter().zip(wanted) {
            let files = &mut self.outputs.files;
            let Some(current) = self
                .outputs
                .slots
                .get_mut(slot)
                .and_then(|p| p.get_mut(index(stream)))
            else {
                continue;
            };
            if !want.piped() {
                if let Some(pipe) = current.take() {
                    let _ = self.reactor.unwatch_fd(&pipe.read);
                    if let Some(mut ch) = pipe.ch {
                        ch.sink.finish();
                    }
                }
                continue;
            }
            if let Some(pipe) = current {
                match &mut pipe.ch {
                    Some(ch) => {
                        let same = match (&ch.sink, &want) {
                            (Sink::Prefix { .. }, Output::Prefix) => true,
                            (Sink::File(f), Output::File(cfg)) => f.cfg == *cfg,
                            _ => false,
                        };
                        ch.label = name.as_bytes().into();
                        if !same {
                            ch.sink.finish();
                            if let Some(sink) = make_sink(files, slot, &want, stream, &name) {
                                ch.sink = sink;
                            }
                        }
                    }
                    None => pipe.ch = eager_channel(files, slot, &want, stream, &name),
                }
                continue;
            }
            let near_limit = |w: &OwnedFd| {
                u64::try_from(w.as_raw_fd())
                    .unwrap_or(u64::MAX)
                    .saturating_add(super::RESERVED_FDS)
                    >= self.nofile
            };
            let (read, write) = match pipe() {
                // Near the limit a pipe would take the descriptor a control
                // connection needs: this stream goes unlabelled instead.
                Ok((_, w)) if near_limit(&w) => {
                    if !self.outputs.warned_limit {
                        self.outputs.warned_limit = true;
                        crate::log!(
                            "warning: near the open-file limit ({}): [{name}] and later services write to zurg's own stdout and stderr unlabelled",
                            self.nofile
                        );
                    }
                    continue;
                }
                Ok(p) => p,
                Err(e) => {
                    crate::log!(
                        "[{name}] cannot create a pipe for its {}: {e}; it goes to zurg's own {} unlabelled",
                        stream_name(stream),
                        stream_name(stream)
                    );
                    continue;
                }
            };
            if let Err(e) = self.reactor.watch_fd(&read, token(slot, stream)) {
                crate::log!(
                    "[{name}] cannot watch the pipe of its {}: {e}; it goes to zurg's own {} unlabelled",
                    stream_name(stream),
                    stream_name(stream)
                );
                continue;
            }
            let ch = eager_channel(&mut self.outputs.files, slot, &want, stream, &name);
            if let Some(current) = self.outputs.get_mut(slot, stream) {
                *current = Some(Pipe { read, write, ch });
            }
        }
    }

    /// The channel of a pipe that has its first bytes, as the unit says.
    fn lazy_channel(&mut self, slot: usize, stream: Stream) -> Option<Box<Channel>> {
        let s = self.slots.get(slot)?;
        let files = &mut self.outputs.files;
        let unit = &s.service.unit;
        let out = match stream {
            Stream::Stdout => &unit.rare.stdout,
            Stream::Stderr => &unit.rare.stderr,
        };
        // A pipe whose stream is no longer piped is gone already; `Prefix`
        // stands in should one still be read.
        let sink = make_sink(files, slot, out, stream, &unit.name)
            .or_else(|| make_sink(files, slot, &Output::Prefix, stream, &unit.name))?;
        Some(Channel::new(sink, &unit.name))
    }

    /// What the next process of `slot` gets as fd 1 and 2.
    pub(super) fn child_outputs(&self, slot: usize) -> (ChildOut, ChildOut) {
        let Some(s) = self.slots.get(slot) else {
            return (ChildOut::Inherit, ChildOut::Inherit);
        };
        let wanted = [&s.service.unit.rare.stdout, &s.service.unit.rare.stderr];
        let [out, err] = [0, 1].map(|i| {
            let pipe = self
                .outputs
                .slots
                .get(slot)
                .and_then(|c| c.get(i))
                .and_then(Option::as_ref);
            match (wanted.get(i), pipe) {
                (_, Some(pipe)) => ChildOut::Fd(pipe.write.as_raw_fd()),
                (Some(Output::Null), None) => ChildOut::Null,
                _ => ChildOut::Inherit,
            }
        });
        (out, err)
    }

    /// Reads what `slot`'s pipes hold now (a helper process that wrote
    /// there has ended), so its lines are in the log.
    pub(super) fn drain_slot_output(&mut self, slot: usize) {
        for stream in STREAMS {
            if self.read_pipe(slot, stream, FINAL_BYTES) >= FINAL_BYTES {
                self.pace(slot, stream, true);
            }
        }
        self.arm_output_flush();
    }

    /// A service's process ended: what it wrote is read now, and a line it
    /// left without a newline is ended (written with its newline), so it
    /// is neither held for the next process nor glued to that one's first
    /// line. Unless the pipe still holds more (a child of the process
    /// writes on): then its lines go on as read.
    pub(super) fn end_slot_output(&mut self, slot: usize) {
        for stream in STREAMS {
            if self.read_pipe(slot, stream, FINAL_BYTES) >= FINAL_BYTES {
                self.pace(slot, stream, true);
                continue;
            }
            self.end_line(slot, stream);
        }
        self.arm_output_flush();
    }

    fn end_line(&mut self, slot: usize, stream: Stream) {
        let Some(place) = self.outputs.get_mut(slot, stream) else {
            return;
        };
        let Some(mut ch) = place.as_mut().and_then(|pipe| pipe.ch.take()) else {
            return;
        };
        if !ch.asm.at_line_start() {
            let time_us = crate::os::wall_clock_us();
            let Channel {
                asm, sink, label, ..
            } = &mut *ch;
            asm.end_line(|piece, kind| {
                deliver(sink, label, piece, kind, time_us);
                // The newline alone of a line the ring has in full.
                if kind.starts || !piece.is_empty() {
                    self.record_output(slot, stream, piece, time_us);
                }
            });
            ch.sink.finish();
        }
        if let Some(Some(pipe)) = self.outputs.get_mut(slot, stream) {
            pipe.ch = Some(ch);
        }
    }

    /// A retired slot (its unit file removed) whose process is gone gives
    /// its pipes back: they were kept until the slot's reuse, and near the
    /// open-file limit they are the descriptors a pidfd or a control
    /// connection needs. A reused slot makes new ones.
    pub(super) fn release_retired_output(&mut self, slot: usize) {
        let Some(s) = self.slots.get(slot) else {
            return;
        };
        let open = self
            .outputs
            .slots
            .get(slot)
            .is_some_and(|pair| pair.iter().any(Option::is_some));
        if !s.retired || !s.service.state.is_down() || !open {
            return;
        }
        self.drain_slot_output(slot);
        self.outputs.pending.retain(|(pending, _)| *pending != slot);
        self.outputs.ready.retain(|(ready, _)| *ready != slot);
        for stream in STREAMS {
            let Some(current) = self.outputs.get_mut(slot, stream) else {
                continue;
            };
            if let Some(pipe) = current.take() {
                let _ = self.reactor.unwatch_fd(&pipe.read);
                if let Some(mut ch) = pipe.ch {
                    ch.sink.finish();
                }
            }
        }
    }

    /// A pipe became readable: it is read at the end of the turn, after
    /// what the turn's other events (a service's exit) started.
    pub(super) fn on_output(&mut self, token: Token) {
        let Some(pipe) = of_token(token) else {
            return;
        };
        if !self.outputs.ready.contains(&pipe) {
            self.outputs.ready.push(pipe);
        }
    }

    /// The turn's reads: paced pipes, then those that woke the loop.
    pub(super) fn output_turn(&mut self) {
        if self.outputs.pending.is_empty() && self.outputs.ready.is_empty() {
            return;
        }
        for (slot, stream) in std::mem::take(&mut self.outputs.pending) {
            let flooding = self.read_pipe(slot, stream, PACED_BYTES) >= FLOOD_BYTES;
            self.pace(slot, stream, flooding);
        }
        for (slot, stream) in std::mem::take(&mut self.outputs.ready) {
            // An event from before it was paced: read with the paced.
            if self.outputs.pending.contains(&(slot, stream)) {
                continue;
            }
            if self.read_pipe(slot, stream, TURN_BYTES) >= FLOOD_BYTES {
                self.pace(slot, stream, true);
            }
        }
        self.arm_output_flush();
    }

    /// Paces a pipe (read every turn, its readiness ignored meanwhile) or
    /// leaves it to its readiness again. It stays in the poll: taking it
    /// out (so the writer's writes stop waking zurg) cost more than it
    /// saved, as the full pipe's bytes were then read cold from memory
    /// (docs/performance.md).
    fn pace(&mut self, slot: usize, stream: Stream, on: bool) {
        let Some(ch) = self
            .outputs
            .get_mut(slot, stream)
            .and_then(Option::as_mut)
            .and_then(|pipe| pipe.ch.as_mut())
        else {
            return;
        };
        ch.paced = on;
        if on && !self.outputs.pending.contains(&(slot, stream)) {
            self.outputs.pending.push((slot, stream));
        }
    }

    /// Reads up to `budget` bytes from a pipe and hands out its lines;
    /// returns how many it read (a read shorter than asked for emptied the
    /// pipe and ends its turn).
    fn read_pipe(&mut self, slot: usize, stream: Stream, budget: usize) -> usize {
        let Some(mut pipe) = self.outputs.get_mut(slot, stream).and_then(Option::take) else {
            return 0;
        };
        let mut buf = std::mem::take(&mut self.outputs.buf);
        let mut spans = std::mem::take(&mut self.outputs.spans);
        buf.resize(READ_CHUNK, 0);
        let mut read = 0;
        let now_ms = self.reactor.now_ms();
        let time_us = crate::os::wall_clock_us();
        // A drain (`FINAL_BYTES`) is wanted whole now; a turn is timed.
        let timed = budget < FINAL_BYTES;
        let started = std::time::Instant::now();
        let mut more_in_pipe = true;
        let mut filled = false;
        while more_in_pipe
            && read < budget
            && (!timed || read == 0 || started.elapsed() < TURN_TIME)
        {
            match nix::unistd::read(&pipe.read, &mut buf) {
                Ok(0) => break,
                Ok(n) => {
                    read += n;
                    // A short read emptied the pipe: the next write wakes
                    // the loop again (an edge), so no read to see EAGAIN.
                    more_in_pipe = n == buf.len();
                    filled |= more_in_pipe;
                    let data = buf.get(..n).unwrap_or(&[]);
                    if pipe.ch.is_none() {
                        pipe.ch = self.lazy_channel(slot, stream);
                    }
                    let Some(ch) = pipe.ch.as_deref_mut() else {
                        break;
                    };
                    self.take_read(slot, stream, ch, data, &mut spans, now_ms, time_us);
                }
                Err(nix::errno::Errno::EINTR) => continue,
                // EAGAIN: empty for now; anything else: nothing to read.
                Err(_) => break,
            }
        }
        if filled {
            grow(&pipe.read);
        }
        if let Some(ch) = &mut pipe.ch {
            ch.sink.finish();
            if ch.asm.flush_due().is_some() && !ch.held_listed {
                ch.held_listed = true;
                self.outputs.held.push((slot, stream));
            }
        }
        self.outputs.buf = buf;
        self.outputs.spans = spans;
        if let Some(place) = self.outputs.get_mut(slot, stream) {
            *place = Some(pipe);
        }
        read
    }

    /// One read's bytes to the sink and the ring: the rest of a line begun
    /// earlier and a trailing partial line through the assembler, the
    /// whole lines between as one run.
    #[allow(clippy::too_many_arguments)]
    fn take_read(
        &mut self,
        slot: usize,
        stream: Stream,
        ch: &mut Channel,
        mut data: &[u8],
        spans: &mut Vec<Span>,
        now_ms: u64,
        time_us: u64,
    ) {
        if !ch.asm.at_line_start() {
            let end = memchr::memchr(b'\n', data).map_or(data.len(), |nl| nl + 1);
            let (head, rest) = data.split_at(end);
            self.feed(slot, stream, ch, head, now_ms, time_us);
            data = rest;
        }
        spans.clear();
        let (run, tail) = data.split_at(lines::split_run(data, spans));
        if !spans.is_empty() {
            match &mut ch.sink {
                Sink::File(f) if f.with(|s| s.takes_run(run.len(), f.w)) == Some(true) => {
                    let lines = spans.iter().filter(|s| s.kind.ends).count();
                    let lines = u64::try_from(lines).unwrap_or(u64::MAX);
                    f.with(|s| s.write_run(run, lines, f.w));
                }
                sink => {
                    for s in spans.iter() {
                        let piece = run.get(s.range.clone()).unwrap_or(&[]);
                        deliver(sink, &ch.label, piece, s.kind, time_us);
                    }
                }
            }
            self.record_run(slot, stream, run, spans, time_us);
        }
        self.feed(slot, stream, ch, tail, now_ms, time_us);
    }

    /// Bytes through the channel's assembler, its pieces to the sink and
    /// the ring.
    fn feed(
        &mut self,
        slot: usize,
        stream: Stream,
        ch: &mut Channel,
        data: &[u8],
        now_ms: u64,
        time_us: u64,
    ) {
        if data.is_empty() {
            return;
        }
        let Channel {
            asm, sink, label, ..
        } = ch;
        asm.feed(data, now_ms, |piece, kind| {
            deliver(sink, label, piece, kind, time_us);
            self.record_output(slot, stream, piece, time_us);
        });
    }

    /// Arms the flush timer for the earliest held partial line, if any
    /// and if not armed for then already.
    fn arm_output_flush(&mut self) {
        let mut due = None;
        let mut held = std::mem::take(&mut self.outputs.held);
        held.retain(|&(slot, stream)| {
            let ch = self
                .outputs
                .get_mut(slot, stream)
                .and_then(Option::as_mut)
                .and_then(|pipe| pipe.ch.as_deref_mut());
            let Some(ch) = ch else { return false };
            match ch.asm.flush_due() {
                Some(at) => {
                    due = Some(due.map_or(at, |d: u64| d.min(at)));
                    true
                }
                None => {
                    ch.held_listed = false;
                    false
                }
            }
        });
        self.outputs.held = held;
        if let Some(at) = due {
            if self.outputs.flush_at.is_none_or(|armed| armed > at) {
                self.outputs.flush_at = Some(at);
                self.reactor.timers.arm(at, TimerKey::OutputFlush);
            }
        }
    }

    /// The flush timer: partial lines that waited long enough go out.
    pub(super) fn on_output_flush(&mut self) {
        self.outputs.flush_at = None;
        let now = self.reactor.now_ms();
        self.flush_partial_lines(|due| due <= now);
        self.arm_output_flush();
    }

    fn flush_partial_lines(&mut self, due: impl Fn(u64) -> bool) {
        let time_us = crate::os::wall_clock_us();
        // Every channel holding a partial line is listed (`read_pipe`);
        // `arm_output_flush` drops the ones flushed from the list.
        let held = std::mem::take(&mut self.outputs.held);
        for &(slot, stream) in &held {
            let Some(place) = self.outputs.get_mut(slot, stream) else {
                continue;
            };
            let Some(mut ch) = place.as_mut().and_then(|pipe| pipe.ch.take()) else {
                continue;
            };
            if ch.asm.flush_due().is_some_and(&due) {
                let Channel {
                    asm, sink, label, ..
                } = &mut *ch;
                asm.flush(|piece, kind| {
                    deliver(sink, label, piece, kind, time_us);
                    self.record_output(slot, stream, piece, time_us);
                });
                ch.sink.finish();
            }
            if let Some(Some(pipe)) = self.outputs.get_mut(slot, stream) {
                pipe.ch = Some(ch);
            }
        }
        self.outputs.held = held;
    }

    /// Opens every log file again (`zurg reload`, SIGUSR1): after an
    /// external logrotate moved them, lines go to new files.
    pub(super) fn reopen_output_files(&mut self) {
        for file in self.outputs.files.all() {
            if let Ok(mut f) = file.try_borrow_mut() {
                f.reopen();
            }
        }
    }

    /// Before zurg exits: what is still in the pipes, and partial lines.
    pub(super) fn drain_output(&mut self) {
        for slot in 0..self.outputs.slots.len() {
            for stream in STREAMS {
                self.read_pipe(slot, stream, FINAL_BYTES);
            }
        }
        self.outputs.pending.clear();
        self.outputs.ready.clear();
        self.flush_partial_lines(|_| true);
    }
}

/// One piece of a line to its sink.
fn deliver(sink: &mut Sink, label: &[u8], piece: &[u8], kind: Piece, t: u64) {
    match sink {
        Sink::Prefix { batch, lines, .. } => labelled(batch, lines, label, piece, kind),
        Sink::File(f) => {
            let pushed = f.with(|s| {
                let open = s.is_open();
                if open {
                    s.push(piece, kind, t, f.w);
                }
                open
            });
            if pushed != Some(true) {
                labelled(&mut f.batch, &mut f.lines, label, piece, kind);
            }
        }
    }
}

/// `NAME | piece` (`NAME + ` for a piece continuing a line) and a newline.
fn labelled(batch: &mut Vec<u8>, lines: &mut u64, label: &[u8], piece: &[u8], kind: Piece) {
    // The end of a line whose pieces went out, each on a line of its own.
    if !kind.starts && piece.is_empty() && kind.ends {
        return;
    }
    batch.extend_from_slice(label);
    batch.extend_from_slice(if kind.starts { b" | " } else { b" + " });
    batch.extend_from_slice(piece);
    batch.push(b'\n');
    *lines += 1;
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_pipe_starts_small_and_grows_once_found_full() {
        use nix::fcntl::{fcntl, FcntlArg};
        let (r, _w) = pipe().unwrap();
        let size = |fd: &OwnedFd| fcntl(fd, FcntlArg::F_GETPIPE_SZ).unwrap();
        assert!(size(&r) < PIPE_BYTES);
        grow(&r);
        // Refused only to an unprivileged user past the pipe quota.
        if nix::unistd::geteuid().is_root() {
            assert_eq!(size(&r), PIPE_BYTES);
        }
        let grown = size(&r);
        grow(&r);
        assert_eq!(size(&r), grown);
    }

    #[test]
    fn tokens_name_their_pipe_and_stay_above_the_pidfds() {
        for slot in [0, 1, 7, 100_000] {
            for stream in STREAMS {
                let t = token(slot, stream);
                assert!(t.0 > super::super::reactor::PIDFD_BASE + 1_000_000);
                assert_eq!(of_token(t), Some((slot, stream)));
            }
        }
        assert_eq!(of_token(Token(5)), None);
    }
}
