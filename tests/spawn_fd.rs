//! The spawner executes the very file that was opened (and verified), not
//! whatever the path names by the time of the exec.
#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    clippy::indexing_slicing,
    unsafe_code
)]

mod common;

use std::ffi::CString;
use std::os::unix::fs::PermissionsExt;

use common::TempDir;
use zurg::os::signals::ChildSignals;
use zurg::os::spawn::{SpawnSpec, Spawner};

fn empty_signals() -> ChildSignals {
    let mut mask = std::mem::MaybeUninit::<libc::sigset_t>::uninit();
    // SAFETY: sigemptyset initialises the set.
    let mask = unsafe {
        libc::sigemptyset(mask.as_mut_ptr());
        mask.assume_init()
    };
    ChildSignals {
        mask,
        reset_to_default: mask,
    }
}

#[test]
fn a_file_swapped_after_open_does_not_change_what_runs() {
    let dir = TempDir::new("fdexec");
    let path = dir.path().join("prog");
    std::fs::copy("/bin/true", &path).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o755)).unwrap();
    let opened = std::fs::File::open(&path).unwrap();
    // swap the path to a program that fails
    let other = dir.path().join("other");
    std::fs::copy("/bin/false", &other).unwrap();
    std::fs::set_permissions(&other, std::fs::Permissions::from_mode(0o755)).unwrap();
    std::fs::rename(&other, &path).unwrap();

    let prog = CString::new(path.to_str().unwrap()).unwrap();
    let spec = SpawnSpec::new(prog.clone(), vec![prog]);
    let mut spawner = Spawner::new();
    let child = spawner
        .spawn(&spec, &empty_signals(), Some(&opened))
        .unwrap();
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child.pid), None).unwrap();
    assert_eq!(
        status,
        nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(child.pid), 0),
        "the swapped-in file ran"
    );

    // and by path, the new file is what runs
    let child = spawner
        .spawn(&spec, &empty_signals(), None::<&std::fs::File>)
        .unwrap();
    let status = nix::sys::wait::waitpid(nix::unistd::Pid::from_raw(child.pid), None).unwrap();
    assert_eq!(
        status,
        nix::sys::wait::WaitStatus::Exited(nix::unistd::Pid::from_raw(child.pid), 1)
    );
}

/// Reads `fd` to EOF, failing after `secs`: EOF only comes once no process
/// (zurg's spawner included) holds the write end any more.
fn read_to_eof(fd: &std::os::fd::OwnedFd, secs: u64) -> String {
    use std::os::fd::AsFd;
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(secs);
    let mut out = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(std::time::Instant::now());
        assert!(
            !left.is_zero(),
            "no EOF within {secs} s; read so far: {out:?}"
        );
        let mut fds = [nix::poll::PollFd::new(
            fd.as_fd(),
            nix::poll::PollFlags::POLLIN,
        )];
        let ms = u16::try_from(left.as_millis()).unwrap_or(u16::MAX);
        nix::poll::poll(&mut fds, ms).unwrap();
        let mut buf = [0u8; 4096];
        match nix::unistd::read(fd, &mut buf) {
            Ok(0) => return String::from_utf8(out).unwrap(),
            Ok(n) => out.extend_from_slice(&buf[..n]),
            Err(nix::errno::Errno::EAGAIN | nix::errno::Errno::EINTR) => {}
            Err(e) => panic!("read: {e}"),
        }
    }
}

#[test]
fn a_child_gets_its_own_descriptors_and_none_of_a_large_table() {
    use nix::fcntl::OFlag;
    use std::os::fd::AsRawFd;
    // Made at start-up, as zurg makes it, before the services' descriptors.
    let mut spawner = Spawner::new();
    // A large table, as zurg has with thousands of services (pidfds,
    // pipes), at 1000 and up so the child's own numbers cannot be among it.
    let crowd: Vec<std::os::fd::OwnedFd> = (0..3000)
        .map(|_| {
            let (r, _w) = nix::unistd::pipe2(OFlag::O_CLOEXEC).unwrap();
            let high = nix::fcntl::fcntl(&r, nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(1000)).unwrap();
            // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor.
            unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(high) }
        })
        .collect();
    assert!(crowd.iter().all(|fd| fd.as_raw_fd() >= 1000));
    let (out_r, out_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
    let (ready_r, ready_pipe_w) = nix::unistd::pipe2(OFlag::O_CLOEXEC | OFlag::O_NONBLOCK).unwrap();
    let ready_w = nix::fcntl::fcntl(
        &ready_pipe_w,
        nix::fcntl::FcntlArg::F_DUPFD_CLOEXEC(zurg::os::spawn::READY_FD_FLOOR),
    )
    // SAFETY: F_DUPFD_CLOEXEC just returned this new descriptor.
    .map(|fd| unsafe { <std::os::fd::OwnedFd as std::os::fd::FromRawFd>::from_raw_fd(fd) })
    .unwrap();
    drop(ready_pipe_w);
    let listen = std::net::TcpListener::bind("127.0.0.1:0").unwrap();

    let sh = CString::new("/bin/sh").unwrap();
    let script = "ls /proc/self/fd; echo ready >&7";
    let argv = vec![
        sh.clone(),
        CString::new("-c").unwrap(),
        CString::new(script).unwrap(),
    ];
    let mut spec = SpawnSpec::new(sh, argv);
    spec.stdout = zurg::os::spawn::ChildOut::Fd(out_w.as_raw_fd());
    spec.ready_fd = Some((ready_w.as_raw_fd(), 7));
    spec.listen_fd = Some(listen.as_raw_fd());
    let child = spawner
        .spawn(&spec, &empty_signals(), None::<&std::fs::File>)
        .unwrap();
    // Our write ends go: the spawner must hold no copy of its own.
    drop(out_w);
    drop(ready_w);
    let listed = read_to_eof(&out_r, 10);
    assert_eq!(read_to_eof(&ready_r, 10), "ready\n");
    let fds: Vec<i32> = listed
        .split_whitespace()
        .map(|f| f.parse().unwrap())
        .collect();
    // 0 1 2, the socket as 3, the readiness pipe as 7 (and the directory
    // ls reads, and what the test runner passed on): none of the crowd.
    for want in [0, 1, 2, 3, 7] {
        assert!(fds.contains(&want), "fd {want} missing: {fds:?}");
    }
    assert!(
        fds.iter().all(|&fd| fd < 1000),
        "inherited zurg's own descriptors: {fds:?}"
    );

    // Reaped through its pidfd.
    let pidfd = child.pidfd.expect("a pidfd");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    let status = loop {
        if let Some(status) = zurg::os::reap::reap_one(&pidfd).unwrap() {
            break status;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the child never ended"
        );
        let mut fds = [nix::poll::PollFd::new(
            std::os::fd::AsFd::as_fd(&pidfd),
            nix::poll::PollFlags::POLLIN,
        )];
        nix::poll::poll(&mut fds, 1000u16).unwrap();
    };
    assert_eq!(status, zurg::os::reap::ExitStatus::Code(0));

    // A program that cannot run is still reported as the spawn's error.
    let missing = CString::new("/nonexistent/prog").unwrap();
    let err = spawner
        .spawn(
            &SpawnSpec::new(missing.clone(), vec![missing]),
            &empty_signals(),
            None::<&std::fs::File>,
        )
        .unwrap_err();
    assert_eq!(err.raw_os_error(), Some(libc::ENOENT));
    drop(crowd);
}
