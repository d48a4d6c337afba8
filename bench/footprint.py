#!/usr/bin/env python3
"""Where zurg's memory goes with N sleeping services (needs root).

    python3 bench/footprint.py [ZURG_BINARY] [N ...]

Runs `zurg run` as PID 1 in a new pid namespace on N units of
`exec = <sleeper>` (a static C program that only pauses, built here), waits
until all N run, and prints zurg's smaps split by what is resident:
  text     file-backed executable mappings (the binary's code, libc's)
  file     other file-backed mappings (rodata, relro, data)
  heap     [heap] plus anonymous mappings (malloc's arenas and big blocks)
  stack    [stack] (the main thread)
with Rss and Pss in kB for each, and Pss as peers.py counts it. With two or
more N it also prints the heap per service between the first and the last.
The binary defaults to target/release/zurg.

Each N gets two rows: "idle", one second after the last service started
(what peers.py's pss_kb sees), and "used", after RESTARTS services were
SIGKILLed one at a time (each replacement waited for) and one `zurg status`
answered: zurg drops its start-up code's mappings after loading, and the
code that restarts services and answers the socket maps back in on use, so
"used" is what a supervisor that has done its work keeps. It also prints
zurg's CPU time per restart over those restarts (all its threads, from
/proc/PID/task/*/schedstat); use a few hundred for that figure.
    FOOTPRINT_RESTARTS=N (default 10)
"""

import os
import shutil
import subprocess
import sys
import tempfile
import time

SLEEPER_C = "#include <unistd.h>\nint main(void) { for (;;) pause(); }\n"


def build_sleeper(work):
    src, dst = os.path.join(work, "sleeper.c"), os.path.join(work, "sleeper")
    with open(src, "w") as f:
        f.write(SLEEPER_C)
    if subprocess.run(["gcc", "-O2", "-static", "-o", dst, src], capture_output=True).returncode != 0:
        subprocess.run(["gcc", "-O2", "-o", dst, src], check=True)
    return dst


def children(pid):
    kids = []
    try:
        for tid in os.listdir("/proc/%d/task" % pid):
            with open("/proc/%d/task/%s/children" % (pid, tid)) as f:
                kids += [int(x) for x in f.read().split()]
    except OSError:
        pass
    return kids


def smaps(pid):
    """{class: [rss_kb, pss_kb]} over /proc/PID/smaps."""
    out = {k: [0, 0] for k in ("text", "file", "heap", "stack")}
    cls = None
    with open("/proc/%d/smaps" % pid) as f:
        for line in f:
            head = line.split()
            if not head:
                continue
            if "-" in head[0] and not head[0].endswith(":"):
                perms, path = head[1], head[5] if len(head) > 5 else ""
                if path == "[stack]":
                    cls = "stack"
                elif path in ("", "[heap]"):
                    cls = "heap"
                elif path.startswith("["):
                    cls = None  # vdso, vvar, vsyscall
                elif "x" in perms:
                    cls = "text"
                else:
                    cls = "file"
            elif cls and head[0] in ("Rss:", "Pss:"):
                out[cls][0 if head[0] == "Rss:" else 1] += int(head[1])
    return out


def rollup_pss(pid):
    with open("/proc/%d/smaps_rollup" % pid) as f:
        for line in f:
            if line.startswith("Pss:"):
                return int(line.split()[1])
    return 0


RESTARTS = int(os.environ.get("FOOTPRINT_RESTARTS", "10"))


def run_ns(pid):
    """CPU time of all of pid's threads in ns (schedstat: finer than ticks)."""
    total = 0
    for tid in os.listdir("/proc/%d/task" % pid):
        with open("/proc/%d/task/%s/schedstat" % (pid, tid)) as f:
            total += int(f.read().split()[0])
    return total


def restart_some(init, count):
    """SIGKILLs `count` of init's children one at a time, each time waiting
    until init has as many children as before with the killed one gone.
    The first started go first: like peers.py, only services up for over a
    second, so zurg restarts them at once instead of backing off."""
    first = children(init)[:count]
    time.sleep(0.3)
    for victim in first:
        want = len(children(init))
        os.kill(victim, 9)
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            now = children(init)
            if victim not in now and len(now) >= want:
                break
            time.sleep(0.01)
        else:
            raise SystemExit("service pid %d was not restarted within 10 s" % victim)


def measure(zurg, n, work, sleeper):
    tmp = tempfile.mkdtemp(prefix="fp-%d-" % n, dir=work)
    units = os.path.join(tmp, "units")
    os.makedirs(units)
    for i in range(n):
        with open(os.path.join(units, "p%d.toml" % i), "w") as f:
            f.write('exec = "%s"\nrestart = "always"\n' % sleeper)
    argv = ["unshare", "--pid", "--fork", "--kill-child", "--mount-proc", zurg, "run",
            "--units", units, "--socket", tmp + "/control.sock", "--state", tmp + "/state"]
    proc = subprocess.Popen(argv, stdin=subprocess.DEVNULL, stdout=open(tmp + "/out.log", "w"),
                            stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)
    try:
        deadline = time.monotonic() + 30 + n / 50.0
        init = None
        while time.monotonic() < deadline:
            kids = children(proc.pid)
            init = kids[0] if kids else None
            if init and len(children(init)) >= n:
                break
            time.sleep(0.1)
        else:
            raise SystemExit("only %d of %d services started" % (len(children(init)) if init else 0, n))
        time.sleep(1.0)  # let the start's last writes settle, as peers.py does
        idle = smaps(init), rollup_pss(init)
        cpu0 = run_ns(init)
        restart_some(init, RESTARTS)
        cpu_ms = (run_ns(init) - cpu0) / 1e6 / max(RESTARTS, 1)
        subprocess.run([zurg, "status", "--socket", tmp + "/control.sock"], stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL, timeout=30, check=True)
        time.sleep(1.0)
        return idle, (smaps(init), rollup_pss(init)), cpu_ms
    finally:
        proc.kill()
        proc.wait()


def main():
    args = sys.argv[1:]
    zurg = os.path.abspath(args.pop(0) if args and not args[0].isdigit() else "target/release/zurg")
    ns = [int(a) for a in args] or [200]
    os.makedirs("/tmp/zurg-footprint", exist_ok=True)
    # One directory per run: another run's gcc must not rewrite the sleeper
    # while this run's services exec it.
    work = tempfile.mkdtemp(prefix="run-", dir="/tmp/zurg-footprint")
    sleeper = build_sleeper(work)
    print("binary: %s (%d bytes); used = after %d restarts and a status" % (
        zurg, os.path.getsize(zurg), RESTARTS))
    print("| n | when | Pss (rollup) | text Rss/Pss | file Rss/Pss | heap Rss/Pss | stack Rss/Pss |")
    print("|---|---|---|---|---|---|---|")
    heaps = []
    try:
        runs = [(n, measure(zurg, n, work, sleeper)) for n in ns]
    finally:
        shutil.rmtree(work, ignore_errors=True)
    for n, (idle, used, cpu_ms) in runs:
        heaps.append((n, idle[0]["heap"][1]))
        print("n=%d: zurg's CPU per restart %.3f ms (%d restarts)" % (n, cpu_ms, RESTARTS))
        for when, (m, pss) in (("idle", idle), ("used", used)):
            print("| %d | %s | %d | %s | %s | %s | %s |" % (
                n, when, pss, *("%d/%d" % tuple(m[k]) for k in ("text", "file", "heap", "stack"))))
    if len(heaps) > 1:
        (n0, h0), (n1, h1) = heaps[0], heaps[-1]
        print("heap per service: %.0f bytes ((%d - %d) kB / (%d - %d))" % (
            (h1 - h0) * 1024.0 / (n1 - n0), h1, h0, n1, n0))


if __name__ == "__main__":
    main()
