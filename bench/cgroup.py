#!/usr/bin/env python3
"""Restart latency with and without a service cgroup (kill_mode "cgroup").

Usage: bench/cgroup.py [RESTARTS] [CGROUP2_DIR]   (needs root)

Runs two `zurg run`s (ZURG_BIN, default target/release/zurg) side by side,
each on RESTARTS units of `/bin/sleep 1000`: once as zurg runs where it manages no cgroup,
once with `--cgroup DIR/zurg-bench` and every cgroup key the host's
controllers allow, kill_mode "cgroup". Each service is SIGKILLed once
(a second kill would meet the crash-loop backoff), alternating between the
two zurgs so the machine's load falls on both alike, and
measures from just before the kill to the `started` event's time of the
next process (`zurg events --follow --json`): reap, exit handling (the
memory.events read, cgroup.kill), spawn (the child's write to
cgroup.procs) and exec. Prints p50/p90/p99 and the ratio.
"""
import json
import os
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import time

RESTARTS = int(sys.argv[1]) if len(sys.argv) > 1 else 200
CG_PARENT = sys.argv[2] if len(sys.argv) > 2 else "/sys/fs/cgroup/unified"
ZURG = os.environ.get("ZURG_BIN", os.path.join(os.getcwd(), "target/release/zurg"))

KEYS = {
    "memory": 'memory_max = "512M"\nmemory_high = "256M"\n',
    "cpu": 'cpu_max = "90%"\n',
    "pids": "pids_max = 100\n",
    "io": "io_weight = 200\n",
}


class Run:
    def __init__(self, label, extra_args, unit_extra):
        self.label = label
        d = self.d = tempfile.mkdtemp(prefix="zurg-cgbench-")
        os.makedirs(f"{d}/units")
        for i in range(RESTARTS):
            with open(f"{d}/units/svc{i}.toml", "w") as f:
                f.write('exec = "/bin/sleep"\nargs = ["1000"]\nstdout = "null"\nstderr = "null"\n' + unit_extra)
        sock = f"{d}/sock"
        self.z = subprocess.Popen(
            [ZURG, "run", "--units", f"{d}/units", "--socket", sock, "--state", f"{d}/state"] + extra_args,
            stderr=open(f"{d}/zurg.log", "w"),
        )
        deadline = time.time() + 10
        while not os.path.exists(sock):
            if time.time() > deadline:
                sys.exit(f"{label}: zurg did not start; see {d}/zurg.log")
            time.sleep(0.01)
        self.ev = subprocess.Popen(
            [ZURG, "events", "--follow", "--json", "--socket", sock], stdout=subprocess.PIPE, text=True
        )
        rows = []
        while len(rows) < RESTARTS or any(r["pid"] is None for r in rows):
            rows = json.loads(subprocess.check_output([ZURG, "status", "--json", "--socket", sock]))["result"]
            time.sleep(0.05)
        self.pids = {r["name"]: r["pid"] for r in rows}
        self.lat = []

    def kill(self, i):
        name = f"svc{i}"
        t0 = time.time_ns() // 1000
        os.kill(self.pids[name], signal.SIGKILL)
        for line in self.ev.stdout:
            rec = json.loads(line).get("event") or {}
            if rec.get("kind") == "started" and rec.get("service") == name:
                self.lat.append(rec["time_us"] - t0)
                return
        sys.exit(f"{self.label}: events ended; see {self.d}/zurg.log")

    def finish(self):
        self.ev.kill()
        self.z.send_signal(signal.SIGTERM)
        self.z.wait(timeout=30)
        self.log = open(f"{self.d}/zurg.log").read()
        shutil.rmtree(self.d, ignore_errors=True)
        lat = sorted(self.lat)
        q = lambda p: lat[min(len(lat) - 1, int(p * len(lat)))]
        self.p50, self.p90, self.p99 = q(0.5), q(0.9), q(0.99)


def main():
    base = os.path.join(CG_PARENT, "zurg-bench")
    os.makedirs(base, exist_ok=True)
    try:
        controllers = open(os.path.join(CG_PARENT, "cgroup.subtree_control")).read().split()
        unit = 'kill_mode = "cgroup"\n' + "".join(v for k, v in KEYS.items() if k in controllers)
        plain = Run("no cgroup (kill_mode group)", [], "")
        cg = Run("cgroup, kill_mode cgroup, keys: " + (" ".join(c for c in KEYS if c in controllers) or "none available"),
                 ["--cgroup", base], unit)
        time.sleep(0.5)
        # Interleaved, so the machine's load falls on both alike.
        for i in range(RESTARTS):
            for r in (plain, cg) if i % 2 == 0 else (cg, plain):
                r.kill(i)
                time.sleep(0.005)
        plain.finish()
        cg.finish()
    finally:
        for sub in [f"services/svc{i}" for i in range(RESTARTS)] + ["services", "zurg"]:
            try:
                os.rmdir(os.path.join(base, sub))
            except OSError:
                pass
        try:
            os.rmdir(base)
        except OSError:
            pass
    for line in cg.log.splitlines():
        if "cgroups:" in line:
            print("zurg:", line.split("zurg: ", 1)[-1])
    print(f"{'run':60} {'p50 µs':>8} {'p90 µs':>8} {'p99 µs':>8}")
    for r in (plain, cg):
        print(f"{r.label:60} {r.p50:8} {r.p90:8} {r.p99:8}")
    print(f"ratio cgroup/plain: p50 {cg.p50 / plain.p50:.2f}x  p90 {cg.p90 / plain.p90:.2f}x  p99 {cg.p99 / plain.p99:.2f}x")


main()
