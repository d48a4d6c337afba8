#!/usr/bin/env python3
"""What starting N services costs in CPU work, not wall time: on a shared,
loaded machine wall time swings by tens of percent between runs, while
CPU time, context switches, page faults and system calls of one build
barely move.

The supervisor (zurg, or `raw` for shared/bench's rawloop.c) runs as PID 1
of its own pid namespace and starts N probes (shared/bench/probe.c), each
of which reports once on a private datagram socket. The measuring tool is
attached to PID 1 before it starts (it waits on a FIFO until then) and
stopped with SIGINT once the N-th probe has reported, so the namespace's
teardown is not counted. Counts inherit into children: they include each
probe's clone, exec and report, which the raw loop pays too.

  start_cost.py BIN N perf     perf stat (task-clock, context switches, page
                               faults) over PID 1 and its children; also
                               PID 1's own CPU (utime+stime, all its threads)
  start_cost.py BIN N strace   system calls per service, split into PID 1's
                               threads, spawned children up to their exec,
                               and the probes after it
  start_cost.py BIN N record   perf record -e cpu-clock -g into ./perf-start.data

BIN is a zurg binary or `raw`. SHARED_BENCH names shared/bench when it is
not beside the repository (a worktree elsewhere). Needs root, perf, strace, gcc (the probe and
rawloop are built into WORK on first use).
"""
import collections
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time

# shared/bench beside the repository, as bench/peers.sh finds it.
BENCH = os.environ.get("SHARED_BENCH") or os.path.join(
    os.path.dirname(os.path.abspath(__file__)), "..", "..", "shared", "bench")
WORK = "/tmp/zurg-start-cost"
SO_RCVBUFFORCE = 33


def build(name):
    src, dst = os.path.join(BENCH, name + ".c"), os.path.join(WORK, name)
    if not os.path.exists(dst) or os.path.getmtime(dst) < os.path.getmtime(src):
        if subprocess.run(["gcc", "-O2", "-static", "-o", dst, src]).returncode != 0:
            subprocess.run(["gcc", "-O2", "-o", dst, src], check=True)
    return dst


def main():
    if len(sys.argv) != 4 or sys.argv[3] not in ("perf", "strace", "record"):
        sys.exit(__doc__)
    binary, n, mode = sys.argv[1], int(sys.argv[2]), sys.argv[3]
    os.makedirs(WORK, exist_ok=True)
    probe, rawloop = build("probe"), build("rawloop")
    tmp = tempfile.mkdtemp(prefix="run-", dir=WORK)
    sock_path = os.path.join(tmp, "probe.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, SO_RCVBUFFORCE, 64 << 20)
    except OSError:
        pass
    sock.bind(sock_path)
    if binary == "raw":
        cmd = [rawloop, str(n), probe]
    else:
        units = os.path.join(tmp, "units")
        os.mkdir(units)
        for i in range(n):
            with open(os.path.join(units, "p%d.toml" % i), "w") as f:
                f.write('exec = "%s"\nargs = ["p%d", "%s"]\nrestart = "always"\n' % (probe, i, sock_path))
        cmd = [os.path.abspath(binary), "run", "--units", units, "--socket",
               os.path.join(tmp, "control.sock"), "--state", os.path.join(tmp, "state")]
    go = os.path.join(tmp, "go")
    os.mkfifo(go)
    # PID 1 is a shell that waits for the go-ahead and then execs the
    # supervisor: same pid, so the attached tool sees it from its start.
    script = 'read x < %s; exec "$@"' % go
    env = dict(os.environ, PROBE_SOCK=sock_path)
    ns = subprocess.Popen(["unshare", "--pid", "--fork", "--kill-child", "--mount-proc",
                           "sh", "-c", script, "sh"] + cmd,
                          stdin=subprocess.DEVNULL, stdout=open(os.path.join(tmp, "out.log"), "w"),
                          stderr=subprocess.STDOUT, env=env, start_new_session=True)
    init = None
    deadline = time.monotonic() + 10
    while init is None and time.monotonic() < deadline:
        try:
            with open("/proc/%d/task/%d/children" % (ns.pid, ns.pid)) as f:
                kids = f.read().split()
            init = int(kids[0]) if kids else None
        except OSError:
            pass
        time.sleep(0.01)
    if init is None:
        sys.exit("no PID 1 under unshare")
    out = os.path.join(tmp, "tool.out")
    if mode == "perf":
        tool = ["perf", "stat", "-x", ",", "-o", out,
                "-e", "task-clock,context-switches,page-faults", "-p", str(init)]
    elif mode == "strace":
        tool = ["strace", "-f", "-qq", "-o", out, "-p", str(init)]
    else:
        tool = ["perf", "record", "-e", "cpu-clock", "-F", "999", "-g", "-o", "perf-start.data",
                "-p", str(init)]
    t = subprocess.Popen(tool, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    time.sleep(1.0)  # perf and strace attach within this on an idle-ish machine
    t0 = time.monotonic()
    with open(go, "w") as f:
        f.write("go\n")
    seen = set()
    sock.settimeout(0.5)
    # strace slows a start of 10,000 to minutes.
    limit = time.monotonic() + max(120, n / (5 if mode == "strace" else 20))
    while len(seen) < n and time.monotonic() < limit:
        try:
            seen.add(sock.recv(256).split()[0])
        except socket.timeout:
            pass
    wall = time.monotonic() - t0
    own = None
    try:
        with open("/proc/%d/stat" % init) as f:
            fields = f.read().rsplit(")", 1)[1].split()
        own = (int(fields[11]) + int(fields[12])) * 1000.0 / os.sysconf("SC_CLK_TCK")
    except OSError:
        pass
    switches = collections.Counter()
    for tid in os.listdir("/proc/%d/task" % init):
        try:
            comm = open("/proc/%d/task/%s/comm" % (init, tid)).read().strip()
            for line in open("/proc/%d/task/%s/status" % (init, tid)):
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    switches[comm + ("/v" if line[0] == "v" else "/nv")] += int(line.split()[1])
        except OSError:
            pass
    t.send_signal(signal.SIGINT)
    t.wait(120)
    os.killpg(ns.pid, signal.SIGKILL)
    try:
        os.kill(init, signal.SIGKILL)
    except ProcessLookupError:
        pass
    ns.wait(30)
    load = open("/proc/loadavg").read().split()[0]
    print("bin=%s n=%d started=%d wall=%.2fs load=%s" % (binary, n, len(seen), wall, load))
    if own is not None:
        print("pid1 cpu (all its threads): %.0f ms, %.1f us/service" % (own, own * 1000 / n))
    print("pid1 switches by thread: %s" % dict(sorted(switches.items())))
    if mode == "perf":
        for line in open(out):
            parts = line.strip().split(",")
            if len(parts) > 2 and parts[0] and parts[0][0].isdigit():
                v = float(parts[0])
                print("%-18s %14.1f  %10.3f /service" % (parts[2], v, v / n))
    elif mode == "strace":
        # Per service started, should the deadline have cut the run short.
        report_strace(out, init, max(1, len(seen)))
    shutil.rmtree(tmp, ignore_errors=True)


LINE = re.compile(r"^(\d+)\s+(?:<\.\.\. )?([a-z0-9_]+)")


def report_strace(path, init, n):
    """Counts per call for three groups: PID 1's threads (the pids that
    never exec), children up to their exec (the spawn's child side), the
    probes after it."""
    execed = set()
    calls = {"pid1": collections.Counter(), "child": collections.Counter(),
             "probe": collections.Counter()}
    lines = []
    for line in open(path):
        m = LINE.match(line)
        if not m or "resumed>" in line and "<..." in line:
            continue
        lines.append((int(m.group(1)), m.group(2)))
        if m.group(2) == "execve" and int(m.group(1)) != init:
            execed.add(int(m.group(1)))
    # The init pid execs once (sh -> supervisor): what it does before that
    # is the shell's, not counted.
    seen_exec = set()
    init_started = False
    for pid, call in lines:
        if pid == init:
            if call == "execve":
                init_started = True
                continue
            if init_started:
                calls["pid1"][call] += 1
        elif pid in execed:
            if pid in seen_exec:
                calls["probe"][call] += 1
            else:
                calls["child"][call] += 1
                if call == "execve":
                    seen_exec.add(pid)
        elif init_started:
            calls["pid1"][call] += 1  # a thread of PID 1
    for group, c in calls.items():
        total = sum(c.values())
        print("%s: %.2f calls/service" % (group, total / n))
        for call, k in c.most_common(25):
            print("  %-22s %8d  %7.3f" % (call, k, k / n))


if __name__ == "__main__":
    main()
