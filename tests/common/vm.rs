//! zurg as /init of a real kernel under qemu (software emulation): what the
//! VM tests share. An initramfs holds the static zurg as /init, busybox and
//! the test's units and scripts; the test reads the serial console.
//!
//! Needs ZURG_STATIC_BIN (scripts/static) and ZURG_VM_KERNEL
//! (scripts/vm-kernel), qemu-system-x86_64, busybox and cpio; scripts/test
//! provides them all. Where any is missing `prerequisites` says so through
//! `super::skip` (loud, and fatal under ZURG_TEST_ALL).

use std::io::{BufRead, BufReader};
use std::os::unix::fs::PermissionsExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::channel;
use std::time::{Duration, Instant};

use super::TempDir;

/// A software-emulated boot of the cloud kernel takes seconds; generous for
/// a loaded 2-core machine.
pub const VM_DEADLINE: Duration = Duration::from_secs(120);

pub fn which(name: &str) -> Option<PathBuf> {
    std::env::var_os("PATH")?
        .to_str()?
        .split(':')
        .map(|d| Path::new(d).join(name))
        .find(|p| p.is_file())
}

/// What a VM test needs from the machine.
pub struct Prerequisites {
    pub zurg: PathBuf,
    pub kernel: PathBuf,
    pub qemu: PathBuf,
    pub busybox: PathBuf,
}

/// The prerequisites, or None once `test` has said which one is missing.
pub fn prerequisites(test: &str) -> Option<Prerequisites> {
    let skip = |why: &str| {
        super::skip(test, why);
        None
    };
    let Some(zurg) = std::env::var_os("ZURG_STATIC_BIN").map(PathBuf::from) else {
        return skip("ZURG_STATIC_BIN is not set (scripts/test builds it with scripts/static)");
    };
    let Some(kernel) = std::env::var_os("ZURG_VM_KERNEL").map(PathBuf::from) else {
        return skip("ZURG_VM_KERNEL is not set (scripts/test fetches it with scripts/vm-kernel)");
    };
    let Some(qemu) = which("qemu-system-x86_64") else {
        return skip("qemu-system-x86_64 is not installed (apt-get install qemu-system-x86)");
    };
    let Some(busybox) = ["/bin/busybox", "/usr/bin/busybox"]
        .iter()
        .map(PathBuf::from)
        .find(|p| p.is_file())
    else {
        return skip("busybox is not installed (apt-get install busybox-static)");
    };
    if which("cpio").is_none() {
        return skip("cpio is not installed");
    }
    Some(Prerequisites {
        zurg,
        kernel,
        qemu,
        busybox,
    })
}

/// The initramfs's root in DIR/root: zurg as /init, busybox with these
/// applets in /bin, and the empty directories an init needs. The test adds
/// its files (`add`), then packs it (`pack`).
pub fn root(dir: &TempDir, p: &Prerequisites, applets: &[&str]) -> PathBuf {
    let root = dir.path().join("root");
    for d in ["bin", "etc/zurg/units", "proc", "sys", "dev", "run", "tmp"] {
        std::fs::create_dir_all(root.join(d)).unwrap();
    }
    std::fs::copy(&p.zurg, root.join("init")).unwrap();
    std::fs::copy(&p.busybox, root.join("bin/busybox")).unwrap();
    for applet in applets {
        std::os::unix::fs::symlink("busybox", root.join("bin").join(applet)).unwrap();
    }
    std::fs::write(root.join("etc/hostname"), "zurgvm\n").unwrap();
    root
}

/// Writes `text` at `path` under ROOT; executable when `exec`.
pub fn add(root: &Path, path: &str, text: &str, exec: bool) {
    let p = root.join(path);
    std::fs::create_dir_all(p.parent().unwrap()).unwrap();
    std::fs::write(&p, text).unwrap();
    if exec {
        std::fs::set_permissions(&p, std::fs::Permissions::from_mode(0o755)).unwrap();
    }
}

/// Packs ROOT as a newc cpio archive in DIR; returns its path.
pub fn pack(dir: &TempDir, root: &Path) -> PathBuf {
    let image = dir.path().join("initramfs.cpio");
    let status = Command::new("sh")
        .arg("-c")
        .arg(format!(
            "cd {} && find . | cpio -o -H newc --quiet > {}",
            root.display(),
            image.display()
        ))
        .status()
        .unwrap();
    assert!(status.success(), "cpio failed");
    image
}

/// What a boot showed: qemu's exit, the console's lines with the time each
/// arrived, and when qemu ended.
pub struct Boot {
    pub status: ExitStatus,
    pub started: Instant,
    pub ended: Instant,
    pub console: Vec<(Instant, String)>,
}

impl Boot {
    pub fn text(&self) -> String {
        self.console
            .iter()
            .map(|(_, l)| l.as_str())
            .collect::<Vec<_>>()
            .join("\n")
    }

    /// The rest of the first console line holding `marker`.
    pub fn after(&self, marker: &str) -> Option<&str> {
        self.console
            .iter()
            .find_map(|(_, l)| l.split_once(marker).map(|(_, rest)| rest))
    }
}

/// Boots KERNEL with IMAGE under software emulation until the machine
/// powers off (panics past VM_DEADLINE, with the console).
pub fn boot(p: &Prerequisites, image: &Path) -> Boot {
    let started = Instant::now();
    let mut vm = Command::new(&p.qemu)
        .args([
            "-machine",
            "pc",
            "-accel",
            "tcg",
            "-m",
            "256",
            "-smp",
            "1",
            "-nographic",
            "-no-reboot",
        ])
        .arg("-kernel")
        .arg(&p.kernel)
        .arg("-initrd")
        .arg(image)
        .args(["-append", "console=ttyS0 panic=-1 quiet"])
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let (tx, rx) = channel();
    let out = vm.stdout.take().unwrap();
    let reader = std::thread::spawn(move || {
        for line in BufReader::new(out).lines() {
            let Ok(line) = line else { break };
            if tx.send((Instant::now(), line)).is_err() {
                break;
            }
        }
    });
    let mut console = Vec::new();
    let deadline = started + VM_DEADLINE;
    let status = loop {
        while let Ok(line) = rx.try_recv() {
            console.push(line);
        }
        if let Some(s) = vm.try_wait().unwrap() {
            break s;
        }
        if Instant::now() > deadline {
            let _ = vm.kill();
            let _ = vm.wait();
            let text: Vec<_> = console
                .iter()
                .map(|(_, l): &(Instant, String)| l.clone())
                .collect();
            panic!(
                "qemu did not power off within {VM_DEADLINE:?}; console:\n{}",
                text.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    let ended = Instant::now();
    // qemu has exited: its stdout ends, and the reader passes on the rest.
    let _ = reader.join();
    while let Ok(line) = rx.try_recv() {
        console.push(line);
    }
    Boot {
        status,
        started,
        ended,
        console,
    }
}
