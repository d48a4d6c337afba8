#!/usr/bin/env python3
"""What depends_on costs: start of 200 services with and without a graph,
and the restart latency of a dependency that 199 services depend on.

    python3 bench/deps.py [ZURG_BINARY] [KILLS]

Runs `zurg run` (not as PID 1) on a temporary units directory, three ways:
  flat   200 sleepers, no depends_on
  chain  20 chains of depth 10 (each service depends on the one below)
  star   one `db` that the 199 others depend on
Start: from launching zurg to the last `started` event (wall clock, time_us).
Restart: SIGKILL to KILLS services one after the other (flat: s0, s1, ...;
chain: the middle of each chain, which has a dependency and a dependant;
star: the dependants s0, s1, ...), then to the dependency of all (star: db)
4 times; its `exited` event to its next `started` event, less the
crash-loop backoff's `delay_ms` (a service killed again within 10 s waits).
Prints one JSON line per layout.
"""
import json
import os
import signal
import statistics
import sys
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import zurgrun  # noqa: E402

ZURG = sys.argv[1] if len(sys.argv) > 1 else "target/debug/zurg"
KILLS = int(sys.argv[2]) if len(sys.argv) > 2 else 30
N = 200


def unit(deps):
    d = ", ".join(f'"{x}"' for x in deps)
    return f'exec = "/bin/sleep"\nargs = ["100000"]\ndepends_on = [{d}]\n'


def layout(kind):
    if kind == "flat":
        return {f"s{i}": unit([]) for i in range(N)}
    if kind == "chain":
        return zurgrun.chains(unit)
    units = {"db": unit([])}
    for i in range(N - 1):
        units[f"s{i}"] = unit(["db"])
    return units


def run(kind):
    t0_us = time.time_ns() // 1000
    with zurgrun.Zurg(ZURG, layout(kind), f"zurg-deps-{kind}-") as z:
        zurgrun.wait_until(
            lambda: sum(1 for r in z.cli("status", "--json") if r["state"] == "running") == N,
            30,
            f"{kind}: not all running",
        )
        started = [e["time_us"] for e in z.events() if e["kind"] == "started"]
        start_ms = (max(started) - t0_us) / 1000
        if kind == "chain":
            targets = [f"c{i % 20}l{5 + i // 20}" for i in range(KILLS)]
        else:
            targets = [f"s{i}" for i in range(KILLS)]
        hub = {"flat": [], "chain": [], "star": ["db"] * 4}[kind]
        lat, hub_lat = [], []
        for n, target in enumerate(targets + hub):
            row = z.cli("status", target, "--json")[0]
            old = row["pid"]
            os.kill(old, signal.SIGKILL)
            while True:
                row = z.cli("status", target, "--json")[0]
                if row["pid"] and row["pid"] != old:
                    break
                time.sleep(0.005)
            evs = [e for e in z.events() if e["service"] == target]
            exited = [e for e in evs if e["kind"] == "exited" and e.get("pid") == old]
            new = [e for e in evs if e["kind"] == "started" and e.get("pid") == row["pid"]]
            backoff = [e["delay_ms"] for e in evs if e["kind"] == "restarting"][-1]
            ms = (new[-1]["time_us"] - exited[-1]["time_us"]) / 1000 - backoff
            (lat if n < len(targets) else hub_lat).append(ms)
            time.sleep(0.02)
        lat.sort()
        return {
            "layout": kind,
            "start_ms": round(start_ms, 1),
            "restart_p50_ms": round(statistics.median(lat), 3),
            "restart_max_ms": round(lat[-1], 3),
            "kills": KILLS,
            "hub_restarts_ms": [round(x, 3) for x in hub_lat],
        }


for kind in ("flat", "chain", "star"):
    print(json.dumps(run(kind)), flush=True)
