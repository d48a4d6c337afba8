//! The journal is written off the event loop (src/journal_writer.rs): a
//! journal whose writes block stalls neither restarts, nor the control
//! socket, nor shutdown; and `history` still sees every event that came
//! before it. zurg runs as PID 1 in a pid namespace.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing
)]

mod common;

use std::fs::File;
use std::io::Read;
use std::os::fd::AsFd;
use std::os::unix::fs::OpenOptionsExt;
use std::sync::mpsc::{channel, Receiver};
use std::time::{Duration, Instant};

use common::{json, ok, slowest_timed, timed_status, TempDir, DEADLINE};

fn journal_queued(dir: &TempDir) -> u64 {
    json(dir, &["version"])["journal"]["queued"]
        .as_u64()
        .unwrap_or(0)
}

fn restarts(row: &serde_json::Value) -> u64 {
    row["restarts"].as_u64().unwrap_or(0)
}

/// Reads the FIFO on a thread until the test says stop (by dropping the
/// receiver) or zurg closes it; each read's bytes go to the test.
fn drain(fifo: File) -> Receiver<Vec<u8>> {
    let (tx, rx) = channel();
    std::thread::spawn(move || {
        let mut fifo = fifo;
        let mut buf = vec![0u8; 64 << 10];
        loop {
            match fifo.read(&mut buf) {
                Ok(0) => return,
                Ok(n) => {
                    if tx.send(buf[..n].to_vec()).is_err() {
                        return;
                    }
                }
                Err(e) if e.kind() == std::io::ErrorKind::Interrupted => {}
                Err(e) => panic!("reading the journal FIFO: {e}"),
            }
        }
    });
    rx
}

#[test]
fn a_hung_journal_stalls_no_restart_no_status_and_no_shutdown() {
    let dir = TempDir::new("journal-hung");
    dir.write(
        "units/crash.toml",
        "exec = \"/bin/sh\"\nargs = [\"-c\", \"exit 3\"]\nrestart = \"always\"\n\
         backoff = { initial_ms = 20, max_ms = 40 }\n",
    );
    // The journal cannot be opened at start (it is a directory), so zurg
    // tries again at each event; the FIFO put there meanwhile is what it
    // opens. (A FIFO there at start would be read by boot, which gives up
    // on it after 3 s and leaves the writer thread stuck in that read:
    // tests/hardening_boot.rs.)
    let state = dir.path().join("state");
    std::fs::create_dir_all(state.join("journal")).unwrap();
    let mut z = common::run_in(&dir, common::Mode::Pid1, &[]);
    z.expect("history is not kept until the journal can be opened");
    z.expect("[crash] started pid");

    // Swapped in at once: the crash loop's events try to open the journal
    // all the time, and would create a plain file in a gap.
    let fifo_path = state.join("journal.fifo");
    nix::unistd::mkfifo(&fifo_path, nix::sys::stat::Mode::from_bits_truncate(0o600)).unwrap();
    // Opened before zurg opens it (non-blocking: no writer yet), and kept
    // open unread: once its one page is full, every write blocks, as on a
    // hung NFS server.
    let fifo = std::fs::OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(&fifo_path)
        .unwrap();
    nix::fcntl::fcntl(fifo.as_fd(), nix::fcntl::FcntlArg::F_SETPIPE_SZ(4096)).unwrap();
    nix::fcntl::renameat2(
        nix::fcntl::AT_FDCWD,
        &fifo_path,
        nix::fcntl::AT_FDCWD,
        &state.join("journal"),
        nix::fcntl::RenameFlags::RENAME_EXCHANGE,
    )
    .unwrap();
    std::fs::remove_dir(&fifo_path).unwrap();
    z.expect("journal writes again");

    // The writer is stuck: records pile up in its queue.
    let deadline = Instant::now() + DEADLINE;
    while journal_queued(&dir) < 10 {
        assert!(Instant::now() < deadline, "the journal's queue never grew");
        timed_status(&dir, "crash");
    }
    // Restarts go on meanwhile, and status answers each time.
    let before = restarts(&timed_status(&dir, "crash"));
    let queued_before = journal_queued(&dir);
    let hung_at = Instant::now();
    let deadline = hung_at + DEADLINE;
    while restarts(&timed_status(&dir, "crash")) < before + 5 {
        assert!(
            Instant::now() < deadline,
            "restarts stopped under a hung journal"
        );
    }
    eprintln!(
        "hung journal: 5 restarts in {:?}; slowest status {} ms",
        hung_at.elapsed(),
        slowest_timed().as_millis()
    );
    let queued = journal_queued(&dir);
    assert!(
        queued > queued_before,
        "the restarts' records wait in the queue: {queued_before} -> {queued}"
    );
    let version = ok(&dir, &["version"]);
    assert!(version.contains("journal behind:"), "{version}");

    // The reader drains: every record comes out, in the order of events:
    // each exit follows the start of the same process.
    nix::fcntl::fcntl(
        fifo.as_fd(),
        nix::fcntl::FcntlArg::F_SETFL(nix::fcntl::OFlag::empty()),
    )
    .unwrap();
    let rx = drain(fifo);
    let deadline = Instant::now() + DEADLINE;
    while journal_queued(&dir) > 0 {
        assert!(Instant::now() < deadline, "the queue never drained");
        timed_status(&dir, "crash");
    }
    let mut bytes = Vec::new();
    let mut records = Vec::new();
    let deadline = Instant::now() + DEADLINE;
    while records.len() < queued as usize {
        let left = deadline.saturating_duration_since(Instant::now());
        bytes.extend(rx.recv_timeout(left).expect("the queued records"));
        // A read may end mid-record: the whole ones before it count.
        records = zurg::journal::decode_all(&bytes).0;
    }
    let mut open: Option<String> = None;
    let mut last_time = 0;
    for r in &records {
        assert!(r.time_us >= last_time, "out of order: {records:?}");
        last_time = r.time_us;
        match r.kind {
            zurg::journal::Kind::Start => {
                assert!(open.is_none(), "two starts in a row: {records:?}");
                open = Some(r.gpid.clone());
            }
            zurg::journal::Kind::Exit => {
                // The first record written may be an exit whose start was
                // lost while the journal could not be opened.
                if let Some(g) = open.take() {
                    assert_eq!(g, r.gpid, "an exit after another's start");
                }
            }
            other => panic!("unexpected record {other}: {r:?}"),
        }
    }

    // Hung again (nobody reads), then SIGTERM: zurg gives the journal its
    // deadline and exits, with the records it could not write counted.
    drop(rx);
    let deadline = Instant::now() + DEADLINE;
    while journal_queued(&dir) < 3 {
        assert!(Instant::now() < deadline, "the journal never hung again");
        timed_status(&dir, "crash");
    }
    let t = Instant::now();
    z.signal(libc::SIGTERM);
    let status = z
        .wait_exit_within(Duration::from_secs(10))
        .unwrap_or_else(|| panic!("no exit within 10 s of SIGTERM: {:?}", z.lines_now()));
    assert!(status.success(), "{status:?}");
    let took = t.elapsed();
    assert!(
        z.lines_now()
            .iter()
            .any(|l| l.contains("journal record(s) not written")),
        "{:?}",
        z.seen
    );
    eprintln!("shutdown with a hung journal took {took:?}");
}

#[test]
fn history_right_after_an_event_shows_it() {
    let dir = TempDir::new("journal-ryw");
    dir.write(
        "units/svc.toml",
        "exec = \"/bin/sleep\"\nargs = [\"1000\"]\nstop_timeout_ms = 2000\n",
    );
    let mut z = common::run_in(&dir, common::Mode::Pid1, &[]);
    z.expect("[svc] started pid");
    for i in 0..40 {
        let old = json(&dir, &["status", "svc"])[0].clone();
        if i % 2 == 0 {
            ok(&dir, &["restart", "svc"]);
        } else {
            // Killed from outside: the exit and the restart are zurg's own.
            common::kill(
                common::host_pid_in(&z, old["pid"].as_i64().unwrap()),
                libc::SIGKILL,
            );
            let deadline = Instant::now() + DEADLINE;
            while json(&dir, &["status", "svc"])[0]["gpid"] == old["gpid"] {
                assert!(Instant::now() < deadline, "svc was not restarted");
            }
        }
        let new = json(&dir, &["status", "svc"])[0]["gpid"].clone();
        let history = common::history(&dir, "svc");
        let n = history.len();
        assert!(n >= 3, "{history:?}");
        assert_eq!(history[n - 2]["kind"], "exit", "round {i}: {history:?}");
        assert_eq!(history[n - 2]["gpid"], old["gpid"], "round {i}");
        assert_eq!(history[n - 1]["kind"], "start", "round {i}");
        assert_eq!(history[n - 1]["gpid"], new, "round {i}");
    }
}
