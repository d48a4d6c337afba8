#!/usr/bin/env python3
"""`zurg history --publisher` on a full publisher journal (two 8 MiB
generations, bench/bootmem.py's records spread over many hosts and
services, a week of them ending now), against one or more zurg binaries,
alternating turns.

Per query (everything; one name with some 1/400 of the records; a rare
name with 10; one host; `--since 1h`): the client's wall time (best of the
rounds) and the publisher's CPU per query (utime+stime from /proc/PID/stat
over all rounds, divided by them); the publisher's peak RSS (VmHWM) listening
and after the queries; and how promptly the loop answers meanwhile:
`zurg resolve --all` (answered on the loop) timed idle, and back to back
while `history` for everything runs.

usage: bench/pubhist.py ZURG [ZURG...] [--rounds N] [--hosts N] [--services N]
"""

import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import bootmem  # noqa: E402  (the publisher's journal generator)

from history import cpu_ticks, deadline_wait, status  # noqa: E402

STEP_US = 4_000_000  # one record every 4 s: 150,000 records are a week
RARE_EVERY = 15_000  # `rare`: some 10 records in the two files


def journals(hosts, services):
    """The two files, the newest record now."""
    probe = len(bootmem.publisher_frame(10**6, hosts, services, time_us=10**15))
    total = 2 * (8 << 20) // probe
    base = int(time.time() * 1e6) - total * STEP_US

    def frame(i):
        rare = "rare" if i % RARE_EVERY == RARE_EVERY // 2 else None
        return bootmem.publisher_frame(i, hosts, services, base + i * STEP_US, rare)

    old, n = bootmem.publisher_journal(0, frame=frame)
    new, m = bootmem.publisher_journal(n, frame=frame)
    return old, new, m


def resolve_ms(zurg, addr):
    t0 = time.monotonic()
    subprocess.run(
        [zurg, "resolve", "--all", "--publisher", addr, "--json"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )  # exit 1: no host is connected, the answer is empty
    return (time.monotonic() - t0) * 1000


def run(zurg, work, files, rounds):
    p, addr = bootmem.start_publisher(zurg, work, files)
    out = {}
    try:
        with open(f"/proc/{p.pid}/clear_refs", "w") as f:
            f.write("5")
        out["hwm0"] = status(p.pid, "VmHWM")
        history = lambda *a: subprocess.run(
            [zurg, "history", *a, "--publisher", addr, "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
            check=True,
        ).stdout
        tick_ms = 1000 / os.sysconf("SC_CLK_TCK")
        for label, args in (
            ("all", ()),
            ("name", ("old7",)),
            ("rare", ("rare",)),
            ("host", ("--host", "10.1.2.7")),
            ("1h", ("--since", "1h")),
        ):
            walls = []
            c0 = cpu_ticks(p.pid)
            for _ in range(rounds):
                t0 = time.monotonic()
                doc = json.loads(history(*args))
                walls.append((time.monotonic() - t0) * 1000)
            cpu = (cpu_ticks(p.pid) - c0) * tick_ms / rounds
            out[label] = (min(walls), cpu, len(doc["result"]), doc.get("older", 0))
        out["hwm1"] = status(p.pid, "VmHWM")
        idle = sorted(resolve_ms(zurg, addr) for _ in range(10))
        busy = []
        for _ in range(rounds):
            q = subprocess.Popen(
                [zurg, "history", "--publisher", addr, "--json"],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            while q.poll() is None:
                busy.append(resolve_ms(zurg, addr))
            q.wait()
        busy.sort()
        pct = lambda p: busy[min(len(busy) - 1, int(len(busy) * p))] if busy else 0
        out["resolve"] = (idle[len(idle) // 2], max(idle), len(busy), pct(0.5), pct(0.99), pct(1))
    finally:
        p.send_signal(signal.SIGTERM)
        p.wait(timeout=60)
    return out


def main():
    args = sys.argv[1:]
    opts = {"--rounds": 5, "--hosts": 64, "--services": 400}
    for key in list(opts):
        if key in args:
            i = args.index(key)
            opts[key] = int(args[i + 1])
            del args[i : i + 2]
    work = tempfile.mkdtemp(prefix="zurg-pubhist-bench-")
    try:
        old, new, n = journals(opts["--hosts"], opts["--services"])
        print(
            f"journal: {len(old) + len(new)} bytes, {n} records, {opts['--hosts']} hosts, "
            f"{opts['--services']} services; load {os.getloadavg()[0]:.1f}"
        )
        for turn in range(2):
            for zurg in args:
                r = run(zurg, work, (old, new), opts["--rounds"])
                parts = [
                    f"{k} {r[k][2]}+{r[k][3]} older: {r[k][0]:.0f} ms, CPU {r[k][1]:.0f} ms"
                    for k in ("all", "name", "rare", "host", "1h")
                ]
                ri, rmax, nb, b50, b99, bmax = r["resolve"]
                print(
                    f"{zurg} (turn {turn}): " + "; ".join(parts)
                    + f"; VmHWM {r['hwm0']} -> {r['hwm1']} kB; resolve idle median {ri:.0f} "
                    f"max {rmax:.0f} ms, during history {nb}: median {b50:.0f} p99 {b99:.0f} "
                    f"max {bmax:.0f} ms; "
                    f"load {os.getloadavg()[0]:.1f}"
                )
    finally:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
