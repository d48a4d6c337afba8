#!/usr/bin/env python3
"""Issue 17's targets for a stack: start through notify readiness along
dependency chains, and idle wake-ups with and without health checks.

    python3 bench/stack.py [ZURG_BINARY] [DELAY_MS] [IDLE_S]

Compiles bench/ready.c (sleeps DELAY_MS, then READY=1 on $NOTIFY_SOCKET)
with gcc and runs `zurg run` (not as PID 1) on a temporary units directory:
  raw     200 `ready 0` services, no depends_on, no readiness: the raw
          loop's start time (launch to the last `started` event)
  chain   20 chains of depth 10 (each depends on the one below), every
          service `ready = "notify"` after DELAY_MS: launch to the last
          `ready` event. Target: within 1.2x of 10 x DELAY_MS + raw.
  idle    the chain stack once ready: zurg's context switches (voluntary +
          nonvoluntary, all its threads) over IDLE_S seconds. Target: 0.
  checks  the same plus 10 services with a tcp health check every 1000 ms
          on a port this script listens on: wake-ups over IDLE_S seconds
          against the 10 x IDLE_S probes configured and the checks made
          (connections accepted).
Prints one JSON line per run.
"""
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zurgrun  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
ZURG = sys.argv[1] if len(sys.argv) > 1 else "target/release/zurg"
DELAY = int(sys.argv[2]) if len(sys.argv) > 2 else 100
IDLE = float(sys.argv[3]) if len(sys.argv) > 3 else 5
PROBE = os.path.join(tempfile.mkdtemp(prefix="zurg-ready-"), "ready")
subprocess.run(["gcc", "-O2", "-o", PROBE, os.path.join(HERE, "ready.c")], check=True)


def unit(delay, deps=(), ready=True, extra=""):
    d = ", ".join(f'"{x}"' for x in deps)
    r = 'ready = "notify"\n' if ready else ""
    return f'exec = "{PROBE}"\nargs = ["{delay}"]\ndepends_on = [{d}]\n{r}{extra}'


def layout(kind, port=None):
    if kind == "raw":
        return {f"s{i}": unit(0, ready=False) for i in range(200)}
    units = zurgrun.chains(lambda deps: unit(DELAY, deps))
    if kind == "checks":
        for i in range(10):
            units[f"h{i}"] = unit(
                0, ready=False, extra=f"health = {{ tcp = {port}, interval_ms = 1000 }}\n"
            )
    return units


def switches(pid):
    total = 0
    for t in os.listdir(f"/proc/{pid}/task"):
        with open(f"/proc/{pid}/task/{t}/status") as f:
            for line in f:
                if line.startswith(("voluntary_ctxt_switches", "nonvoluntary_ctxt_switches")):
                    total += int(line.split()[1])
    return total


def accepted(listener):
    """How many connections (tcp checks) wait on LISTENER; accepts them."""
    if listener is None:
        return 0
    listener.setblocking(False)
    n = 0
    while True:
        try:
            conn, _ = listener.accept()
        except BlockingIOError:
            return n
        conn.close()
        n += 1


def run(kind):
    listener = None
    port = None
    if kind == "checks":
        listener = socket.create_server(("127.0.0.1", 0), backlog=4096)
        port = listener.getsockname()[1]
    units = layout(kind, port)
    want = "started" if kind == "raw" else "ready"
    try:
        t0_us = time.time_ns() // 1000
        with zurgrun.Zurg(ZURG, units, f"zurg-stack-{kind}-", stop_timeout=60) as z:

            def all_there():
                evs = [
                    e
                    for e in z.events()
                    if e["kind"] == want and not e["service"].startswith("h")
                ]
                return evs if len({e["service"] for e in evs}) >= 200 else None

            evs = zurgrun.wait_until(all_there, 60, f"{kind}: not all {want}")
            out = {"run": kind, "start_ms": round((max(e["time_us"] for e in evs) - t0_us) / 1000, 1)}
            if kind != "raw":
                time.sleep(1)  # let the last client connections and probes settle
                accepted(listener)
                before = switches(z.pid)
                time.sleep(IDLE)
                out["idle_s"] = IDLE
                out["wakeups"] = switches(z.pid) - before
                out["probes_configured"] = int(10 * IDLE) if kind == "checks" else 0
                out["probes_made"] = accepted(listener)
            return out
    finally:
        if listener:
            listener.close()


raw = run("raw")
print(json.dumps(raw), flush=True)
chain = run("chain")
budget = 10 * DELAY + raw["start_ms"]
chain["budget_ms"] = budget
chain["ratio"] = round(chain["start_ms"] / budget, 2)
print(json.dumps(chain), flush=True)
print(json.dumps(run("checks")), flush=True)
