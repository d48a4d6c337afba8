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
