#!/usr/bin/env bash
# CPU per GB of 100-byte lines written to a file, by the process that writes
# the file: `cat > file` (the floor: no line splitting, no rotation) against
# zurg's file sink, svlogd (runit) and s6-log (s6), the last three rotating
# at 10 MiB and keeping 5 files. zurg runs twice: as configured by default
# (every line also kept in the service's 256 KiB ring for `zurg logs`) and
# with `log_ring_bytes = 0`, which shows what the ring costs. The producer
# (`yes | head -c`) is the same for all and not counted. Also zurg's peak
# PSS during its run.
# Usage: bench/output.sh [MB] [RUNS]     (needs root for zurg's pid namespace)
#   ZURG_BIN=path  the zurg to measure (default: a release build made here)
set -euo pipefail
cd "$(dirname "$0")/.."
mb=${1:-256}
runs=${2:-3}
need=()
for pkg_bin in runit:svlogd s6:s6-log; do
  command -v "${pkg_bin#*:}" >/dev/null || need+=("${pkg_bin%%:*}")
done
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${need[@]}" >/dev/null
fi
if [ -z "${ZURG_BIN:-}" ]; then
  cargo build --release --bin zurg >&2
  ZURG_BIN=$PWD/target/release/zurg
fi
export ZURG_BIN MB=$mb RUNS=$runs
exec python3 - <<'EOF'
import os, subprocess, sys, time, tempfile, shutil

MB = int(os.environ["MB"]); RUNS = int(os.environ["RUNS"])
ZURG = os.environ["ZURG_BIN"]
SIZE = MB * 1_000_000
LINE = "x" * 99  # yes adds the newline: 100-byte lines
PRODUCER = f"yes {LINE} | head -c {SIZE}; echo END"
TICK = os.sysconf("SC_CLK_TCK")

def cpu_of_child(cmd, tmp):
    """Runs `producer | cmd`; CPU seconds of cmd alone (its rusage)."""
    prod = subprocess.Popen(["sh", "-c", PRODUCER], stdout=subprocess.PIPE)
    cons = subprocess.Popen(cmd, stdin=prod.stdout, shell=isinstance(cmd, str), cwd=tmp)
    prod.stdout.close()
    _, status, ru = os.wait4(cons.pid, 0)
    prod.wait()
    cons.returncode = status
    return ru.ru_utime + ru.ru_stime

def ended(log):
    """The last line, END, is in the current file or was just rotated."""
    for path in (log, log + ".1"):
        try:
            with open(path, "rb") as f:
                f.seek(0, 2)
                if f.tell() >= 4:
                    f.seek(-4, 2)
                    if f.read() == b"END\n":
                        return True
        except OSError:
            pass
    return False

def zurg_run(tmp, ring=True):
    """zurg as PID 1 of a pid namespace, one unit whose stdout is a
    rotating file; CPU of zurg itself (/proc stat, children excluded)
    until the file holds every byte, and its peak PSS meanwhile."""
    units = os.path.join(tmp, "units"); os.makedirs(units)
    logdir = os.path.join(tmp, "zlog"); os.makedirs(logdir)
    log = os.path.join(logdir, "current")
    with open(os.path.join(units, "gen.toml"), "w") as f:
        f.write(f'exec = "/bin/sh"\nargs = ["-c", "{PRODUCER}"]\nrestart = "never"\n'
                f'stdout = {{ file = "{log}", max_bytes = 10485760, keep = 5 }}\n'
                + ("" if ring else "log_ring_bytes = 0\n"))
    z = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", ZURG,
                          "run", "--units", units, "--socket", os.path.join(tmp, "sock"),
                          "--state", os.path.join(tmp, "state")],
                         stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    pid = None
    deadline = time.time() + 30
    while pid is None and time.time() < deadline:
        try:
            for kid in open(f"/proc/{z.pid}/task/{z.pid}/children").read().split():
                if open(f"/proc/{kid}/comm").read().strip() == "zurg":
                    pid = int(kid)
        except OSError:
            pass
        time.sleep(0.01)
    if pid is None:
        z.kill(); sys.exit("zurg did not start")
    peak = 0
    deadline = time.time() + 600
    while not ended(log) and time.time() < deadline:
        try:
            for l in open(f"/proc/{pid}/smaps_rollup"):
                if l.startswith("Pss:"):
                    peak = max(peak, int(l.split()[1]))
        except OSError:
            pass
        time.sleep(0.05)
    st = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
    cpu = (int(st[11]) + int(st[12])) / TICK  # utime, stime: zurg only
    done = ended(log)
    # unshare ignores SIGTERM while it waits; zurg shuts down on it.
    os.kill(pid, 15)
    try:
        z.wait(timeout=30)
    except subprocess.TimeoutExpired:
        os.kill(pid, 9); z.wait()
    if not done:
        sys.exit("zurg did not write every line within 600 s")
    return cpu, peak

def svlogd(tmp):
    d = os.path.join(tmp, "sv"); os.makedirs(d)
    open(os.path.join(d, "config"), "w").write("s10485760\nn5\n")
    return cpu_of_child(["svlogd", d], tmp)

def s6log(tmp):
    d = os.path.join(tmp, "s6")
    return cpu_of_child(["s6-log", "n5", "s10485760", d], tmp)

def cat(tmp):
    return cpu_of_child(f"cat > {os.path.join(tmp, 'cat.out')}", tmp)

results = {"cat > file": [], "zurg file sink": [], "zurg, no ring": [], "svlogd": [], "s6-log": []}
peaks = []
for _ in range(RUNS):
    for name, fn in [("cat > file", cat), ("zurg file sink", True), ("zurg, no ring", False),
                     ("svlogd", svlogd), ("s6-log", s6log)]:
        tmp = tempfile.mkdtemp(prefix="zurg-output-bench-")
        try:
            if isinstance(fn, bool):
                cpu, peak = zurg_run(tmp, ring=fn)
                if fn:
                    peaks.append(peak)
            else:
                cpu = fn(tmp)
            results[name].append(cpu)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
gb = SIZE / 1e9
floor = min(results["cat > file"]) / gb
print(f"{MB} MB of 100-byte lines, best of {RUNS}; zurg: {ZURG}")
print(f"{'writer':16} {'CPU s/GB':>9} {'x cat':>7}   runs (CPU s)")
for name, cpus in results.items():
    per = min(cpus) / gb
    ratio = per / floor if floor > 0 else float("nan")
    print(f"{name:16} {per:9.2f} {ratio:7.1f}   {' '.join(f'{c:.2f}' for c in cpus)}")
print(f"zurg peak PSS: {max(peaks)} KiB (runs: {' '.join(map(str, peaks))})")
EOF
